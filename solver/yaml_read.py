"""YAML text -> plain Python values (dicts, lists, scalars) at a bounded cost, with a line for every problem.

PyYAML's own ``compose``/``construct`` recurse once per nesting level and expand an alias
again at every use, so a deep or self-referring document ends in RecursionError and a
few hundred bytes of nested aliases ("billion laughs") cost minutes and gigabytes.  This
reader builds the values from the parser's *event stream* instead (libyaml's or PyYAML's
parser, both iterative), on an explicit stack:

* **depth** is limited (:data:`MAX_DEPTH`; a spec nests 5 levels), counting the depth an
  alias brings with it;
* **size** is limited (:data:`MAX_VALUES`): every value counts, and an alias counts the
  whole size of what it stands for at every use, as the values a spec reader walks
  afterwards; the value itself is built once and shared, so the check costs one pass;
* an alias to a node still being read (``&a [*a]``) is a clear error, not a cycle;
* a mapping or a list as a key, a key written twice (YAML keys are unique; both lines are
  named), a tag other than YAML's core scalar tags, a number of more than
  :data:`MAX_NUMBER_CHARS` characters (int() of a 5,000-digit string raises, a long
  sexagesimal costs quadratic time) and a scalar PyYAML cannot construct (``2001-99-99``)
  each end in one :class:`YamlProblem` with its line and column;
* before any YAML is read, the bytes are decoded as UTF-8 and searched for characters YAML
  does not allow (control characters, NUL), so those get a line and a column too, not a
  character offset.

Merge keys (``<<: *base``) work as in PyYAML: the mapping's own keys win, then the merged
mappings in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["YamlProblem", "load", "decode", "MAX_DEPTH", "MAX_VALUES", "MAX_NUMBER_CHARS"]

MAX_DEPTH = 32  # a spec nests 5 levels (spec > numa > cells > [i] > cpus); far more is not a spec
MAX_VALUES = 200_000  # values after alias expansion: 10,000 device entries of a dozen fields each fit
MAX_NUMBER_CHARS = 64  # no number in a spec needs more; int() refuses 4,300 digits and more anyway

# libyaml's parser (10-15x faster) when PyYAML was built with it; same events, same resolver.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Re-parsing a broken document with PyYAML's own parser gives a clearer message than libyaml's
# ("found character that cannot start any token"); only for small documents, to stay fast.
_REPARSE_LIMIT = 64 * 1024

_T = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_T + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_NUMBER_TAGS = {_T + "int", _T + "float"}
_MERGE = _T + "merge"
_COLLECTION_TAGS = {_T + "map", _T + "seq"}

# What YAML 1.1 lets a stream contain (its c-printable production): TAB, LF, CR, the printable
# ASCII, NEL and the Unicode planes without surrogates and the two non-characters U+FFFE/FFFF.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# YAML's line breaks (libyaml counts NEL, LS and PS as breaks too); CR LF is one break.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass
class YamlProblem(Exception):
    """One problem in a YAML document: its message and where (1-based line and column, when known)."""

    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return self.message


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset, counting YAML's line breaks."""
    line, start = 1, 0
    for m in _BREAK.finditer(text, 0, offset):
        line, start = line + 1, m.end()
    return line, offset - start + 1


def _char_name(ch: str) -> str:
    import unicodedata

    names = {"\0": "NUL", "\x7f": "DEL", "\ufeff": "a byte order mark"}
    return f"U+{ord(ch):04X}" + (f" ({names.get(ch) or unicodedata.name(ch, 'a control character')})")


def decode(data: bytes) -> str:
    """UTF-8 bytes (an initial byte order mark allowed) -> text; else a YamlProblem with the place."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlProblem("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8", 1, 1)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise YamlProblem(f"byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason}); save the file as UTF-8",
                          line, column) from None
    return text


def _check_characters(text: str) -> None:
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, column = _position(text, bad.start())
        raise YamlProblem(f"character {_char_name(bad.group())} is not allowed in YAML; delete it", line, column)


@dataclass
class _Frame:
    """A mapping or sequence being read."""

    kind: str  # "map" | "seq"
    path: tuple
    line: int
    anchor: str | None
    size: int = 1  # values after expansion, this one included
    depth: int = 1  # levels after expansion, this one included
    items: list = field(default_factory=list)  # seq: values; map: (key, value, line, merge)
    key: Any = None  # map: the key waiting for its value
    key_line: int = 0
    have_key: bool = False
    merge: bool = False


@dataclass
class _Anchored:
    value: Any = None
    size: int = 0
    depth: int = 0
    done: bool = False
    line: int = 0


class _Reader:
    def __init__(self, text: str, loader) -> None:
        self.text = text
        self.loader = loader  # a resolver and constructor for scalars
        self.lines: dict[tuple, int] = {}
        self.anchors: dict[str, _Anchored] = {}
        self.stack: list[_Frame] = []
        self.total = 0
        self.result: Any = None
        self.documents = 0

    # -- what goes into the frame on top -----------------------------------

    def _count(self, size: int, depth: int, line: int) -> None:
        self.total += size
        if self.total > MAX_VALUES:
            raise YamlProblem(f"the document holds more than {MAX_VALUES:,} values, an alias counting what it "
                              "stands for at every use; a spec is far smaller: look for aliases of aliases", line)
        if len(self.stack) + depth > MAX_DEPTH:
            raise YamlProblem(f"values nest deeper than {MAX_DEPTH} levels (aliases included); a spec nests "
                              "5 levels", line)

    def _child_path(self) -> tuple:
        top = self.stack[-1]
        return top.path + ((len(top.items),) if top.kind == "seq" else (top.key,))

    def _add(self, value: Any, size: int, depth: int, line: int, *, is_key_ok: bool) -> None:
        """Hand a finished value to the frame on top (or make it the document's value)."""
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        top.size += size
        top.depth = max(top.depth, depth + 1)
        if top.kind == "seq":
            top.items.append(value)
            return
        if not top.have_key:
            if not is_key_ok:
                raise YamlProblem(f"a key is a mapping or a list here; keys are plain words such as 'name'", line)
            top.key, top.key_line, top.have_key, top.merge = value, line, True, False
            return
        top.items.append((top.key, value, top.key_line, top.merge))
        top.have_key = False

    def _start_collection(self, kind: str, event) -> None:
        line = event.start_mark.line + 1
        tag = event.tag
        if tag not in (None, "!") and tag not in _COLLECTION_TAGS:
            raise YamlProblem(f"not a plain YAML value: the tag {_tag(tag)} is not allowed; a spec uses no YAML tags",
                              line, event.start_mark.column + 1)
        if self.stack and self.stack[-1].kind == "map" and not self.stack[-1].have_key:
            raise YamlProblem(f"a key is a {'mapping' if kind == 'map' else 'list'} here; keys are plain words "
                              "such as 'name'", line)
        self._count(1, 1, line)
        path = self._child_path() if self.stack else ()
        self.lines[path] = line
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(line=line)
        self.stack.append(_Frame(kind, path, line, event.anchor))

    def _end_collection(self) -> None:
        frame = self.stack.pop()
        if frame.kind == "seq":
            value: Any = frame.items
        else:
            value = self._mapping(frame)
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchored(value, frame.size, frame.depth, True, frame.line)
        self._add(value, frame.size, frame.depth, frame.line, is_key_ok=False)

    def _mapping(self, frame: _Frame) -> dict:
        out: dict = {}
        first: dict = {}
        merges = []
        for key, value, line, merge in frame.items:
            if merge:
                merges.append((value, line))
                continue
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key from an alias (a list or mapping)
                raise YamlProblem("a key is a mapping or a list here; keys are plain words such as 'name'",
                                  line) from None
            if seen is not None:
                where = f"on lines {seen} and {line}" if seen != line else f"on line {line}"
                raise YamlProblem(f"key {_shown(key)} appears twice, {where}; YAML keys are unique: keep one", line)
            first[key] = line
            out[key] = value
            self.lines[frame.path + (key,)] = line
        for value, line in merges:
            for source in (value if isinstance(value, list) else [value]):
                if not isinstance(source, dict):
                    raise YamlProblem("a merge key (<<) takes a mapping or a list of mappings", line)
                for key, v in source.items():
                    if key not in out:
                        out[key] = v
                        self.lines[frame.path + (key,)] = line
        return out

    # -- events ------------------------------------------------------------

    def feed(self, event) -> None:
        if isinstance(event, yaml.ScalarEvent):
            self._scalar(event)
        elif isinstance(event, yaml.MappingStartEvent):
            self._start_collection("map", event)
        elif isinstance(event, yaml.SequenceStartEvent):
            self._start_collection("seq", event)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self._end_collection()
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlProblem("a second YAML document (---) in the file; a spec is one document",
                                  event.start_mark.line + 1)

    def _alias(self, event) -> None:
        line = event.start_mark.line + 1
        target = self.anchors.get(event.anchor)
        if target is None:
            raise YamlProblem(f"alias *{event.anchor} names no anchor (&{event.anchor}) before it", line)
        if not target.done:
            raise YamlProblem(f"alias *{event.anchor} refers to the value that contains it (anchored on line "
                              f"{target.line}); a spec cannot contain itself", line)
        self._count(target.size, target.depth, line)
        if self.stack and (self.stack[-1].kind == "seq" or self.stack[-1].have_key):
            self.lines[self._child_path()] = line  # what the alias stands for is reported here
        self._add(target.value, target.size, target.depth, line,
                  is_key_ok=not isinstance(target.value, (list, dict)))

    def _scalar(self, event) -> None:
        line, column = event.start_mark.line + 1, event.start_mark.column + 1
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag not in _SCALAR_TAGS and tag != _MERGE:
            raise YamlProblem(f"not a plain YAML value: the tag {_tag(tag)} is not allowed; a spec uses no YAML tags",
                              line, column)
        if tag in _NUMBER_TAGS and len(event.value) > MAX_NUMBER_CHARS:
            raise YamlProblem(f"a number of {len(event.value):,} characters; numbers in a spec have at most "
                              f"{MAX_NUMBER_CHARS}", line, column)
        self._count(1, 1 if self.stack else 0, line)
        is_merge_key = tag == _MERGE and self.stack and self.stack[-1].kind == "map" and not self.stack[-1].have_key
        if is_merge_key:
            value: Any = "<<"
        elif tag == _MERGE:
            value = event.value  # '<<' anywhere but a key is the plain text
        else:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            try:
                value = self.loader.yaml_constructors[tag](self.loader, node)
            except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise what they meet: a value
                # that does not fit its explicit tag (!!bool maybe: KeyError; !!timestamp x: AttributeError)
                why = getattr(exc, "problem", None) or (str(exc) if isinstance(exc, (ValueError, OverflowError))
                                                        else "it does not have that form")
                raise YamlProblem(f"{_shown(event.value)} is not a valid {tag.rsplit(':', 1)[-1]}: {why}",
                                  line, column) from None
            if isinstance(value, str) and not _encodable(value):
                raise YamlProblem(f"{_shown(event.value)} holds a lone surrogate (an escape such as \\ud800), "
                                  "which is no character; write the character itself", line, column)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(value, 1, 1, True, line)
        if self.stack and (self.stack[-1].kind == "seq" or self.stack[-1].have_key):
            self.lines[self._child_path()] = line
        self._add(value, 1, 1, line, is_key_ok=True)
        if is_merge_key:
            self.stack[-1].merge = True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _tag(tag: str) -> str:
    """A tag as it is usually written: !!python/object rather than tag:yaml.org,2002:python/object."""
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def load(text: str) -> tuple[Any, dict[tuple, int]]:
    """The document's value and the line of every key and item (by path); YamlProblem on any fault."""
    _check_characters(text)
    try:
        return _load(text, _FAST_LOADER)
    except yaml.YAMLError as exc:
        if _FAST_LOADER is yaml.SafeLoader or len(text) > _REPARSE_LIMIT:
            raise _problem(exc) from None
    try:  # the same document through PyYAML's own parser, for its clearer message
        return _load(text, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _problem(exc) from None


def _problem(exc: yaml.YAMLError) -> YamlProblem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
    return YamlProblem(text, mark.line + 1 if mark else None, mark.column + 1 if mark else None)


def _load(text: str, loader_class) -> tuple[Any, dict[tuple, int]]:
    reader = _Reader(text, yaml.SafeLoader(""))
    for event in yaml.parse(text, Loader=loader_class):
        reader.feed(event)
    return reader.result, reader.lines
