"""Bytes in, an lxml tree out, with every door shut and the cost bounded.

The parser resolves no entities, loads no DTD and nothing from the network or
disk, and refuses files that are too large, too deep or that hold too many
elements, so a hostile file costs little (XXE, billion laughs, a flood of
small elements).  The bytes are kept exactly as read: edits later work on them
(:mod:`topo_solve.domain.edit`), so line endings, the encoding and every byte
no change needs survive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from ..errors import Finding, SpecError
from ..model import Address

__all__ = ["Document", "parse_document", "parse_xml", "number", "read_address", "shown",
           "MAX_BYTES", "MAX_DEPTH", "MAX_ELEMENTS"]

MAX_BYTES = 8 * 1024 * 1024  # a domain with thousands of devices is well under 1 MiB
MAX_DEPTH = 32  # libvirt's domain XML nests about 6 deep
MAX_ELEMENTS = 200_000  # a guest with 4,000 devices of 10 elements each has 40,000

# What comes before the root element and is harmless: whitespace, the XML declaration and other
# processing instructions, comments.  A <!DOCTYPE> there is refused before the parser sees it.
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.S)
_DTD_MESSAGE = ("the file has a document type declaration (<!DOCTYPE ...>), which libvirt domain XML never "
                "has; topo-solve loads no DTD and expands no entity: delete the declaration")


@dataclass
class Document:
    """A parsed domain XML with the bytes it came from.

    ``text`` is the file decoded without newline translation (``\\r\\n`` stays),
    so ``text.encode(encoding)`` gives back ``data`` exactly; line numbers of
    elements (``sourceline``) count ``\\n`` in it.
    """

    file: str
    data: bytes
    root: etree._Element
    encoding: str  # a codec that gives back ``data`` (after ``bom``): UTF-16/32 with their byte order
    bom: bytes = b""  # a UTF-16/32 byte order mark, written back before the text

    @property
    def text(self) -> str:
        return self.data[len(self.bom):].decode(self.encoding)

    def encode(self, text: str) -> bytes:
        """``text`` (this document's, edited) as bytes of this file: its encoding, its byte order mark."""
        return self.bom + text.encode(self.encoding)

    @property
    def newline(self) -> str:
        """The file's own line ending (the first one in it)."""
        text = self.text
        i = text.find("\n")
        return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


def _doctype_line(data: bytes) -> int | None:
    """The line of a ``<!DOCTYPE`` in the prolog, or None if there is none."""
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while (m := _PROLOG_ITEM.match(data, pos)) is not None:
        pos = m.end()
    return data.count(b"\n", 0, pos) + 1 if data.startswith(b"<!DOCTYPE", pos) else None


def _parser() -> etree.XMLParser:
    """lxml's parser with every door shut: no entities, no DTD, no network, no huge trees."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_pis=True)


def _fail(file: str, line: int | None, message: str) -> SpecError:
    return SpecError([Finding(file, line, "", message)])


def parse_document(data: str | bytes, file: str) -> Document:
    """Parse a domain XML file's bytes; raise :class:`SpecError` with one finding when it cannot be."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise _fail(file, None, f"file is larger than {MAX_BYTES // 1024 // 1024} MiB; a libvirt domain XML is "
                    "far smaller: check that this is the file virsh dumpxml wrote")
    line = _doctype_line(data)
    if line is not None:
        raise _fail(file, line, _DTD_MESSAGE)
    _check_tag_count(data, file)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if getattr(exc, "lineno", None) else None
        msg = str(exc.msg)
        # libxml's own limits, in our words (its messages name parser flags, not fixes)
        if "amplification" in msg or "external entity" in msg:
            raise _fail(file, line, _DTD_MESSAGE) from None
        if "Excessive depth" in msg:
            raise _fail(file, line, f"elements nest deeper than {MAX_DEPTH} levels; libvirt domain XML nests "
                        "about 6 deep") from None
        raise _fail(file, line, f"not well-formed XML: {msg}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        # Not reached for UTF-8 input (the prolog check refuses first); other encodings end here.
        raise _fail(file, 1, _DTD_MESSAGE)
    _check_shape(root, file)
    # the encoding the edit writes back in: the document's own.  UTF-16 and UTF-32 are told by their
    # first bytes (a byte order mark, or '<' in that byte order: XML 1.0 appendix F), which name the
    # byte order the declaration does not; otherwise lxml's reading of the declaration.
    bom = b""
    for signature, codec, mark in _SIGNATURES:
        if data.startswith(signature):
            encoding, bom = codec, data[:mark]
            break
    else:
        encoding = (root.getroottree().docinfo.encoding or "utf-8").lower()
    try:
        data[len(bom):].decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        where = data.count(b"\n", 0, exc.start) + 1 if isinstance(exc, UnicodeDecodeError) else 1
        raise _fail(file, where, f"the file is not {encoding} text, as its XML declaration says; save it as "
                    "UTF-8") from None
    return Document(file=file, data=data, root=root, encoding=encoding, bom=bom)


# (first bytes, codec, length of the byte order mark) for the encodings XML tells by their first bytes;
# UTF-32 before UTF-16, whose marks begin theirs
_SIGNATURES = ((b"\xff\xfe\x00\x00", "utf-32-le", 4), (b"\x00\x00\xfe\xff", "utf-32-be", 4),
               (b"<\x00\x00\x00", "utf-32-le", 0), (b"\x00\x00\x00<", "utf-32-be", 0),
               (b"\xff\xfe", "utf-16-le", 2), (b"\xfe\xff", "utf-16-be", 2),
               (b"<\x00", "utf-16-le", 0), (b"\x00<", "utf-16-be", 0))

_START = re.compile(rb"<(?![/!?])")  # a start tag (not an end tag, comment, CDATA or declaration)


def _check_tag_count(data: bytes, file: str) -> None:
    """Refuse a document with more than MAX_ELEMENTS start tags before lxml builds its tree: a tree
    costs about a hundred bytes per element, so an 8 MiB file of empty elements would take hundreds
    of MB before _check_shape could count them.  A '<' before a name inside a comment or CDATA section
    counts too (one in an attribute value is not well-formed), so this may refuse a document of fewer
    elements whose comments hold tens of thousands of tags: no domain XML comes near."""
    if data.count(b"<") <= MAX_ELEMENTS:
        return
    for n, m in enumerate(_START.finditer(data), 1):
        if n > MAX_ELEMENTS:
            raise _fail(file, data.count(b"\n", 0, m.start()) + 1, f"more than {MAX_ELEMENTS:,} elements; a "
                        "libvirt domain XML has a few hundred, a guest with thousands of devices some tens of "
                        "thousands")


_TOO_DEEP = etree.XPath("/*" + "/*" * (MAX_DEPTH + 1))  # elements below MAX_DEPTH levels of nesting


def _check_shape(root: etree._Element, file: str) -> None:
    """Element count, entities and depth, each by one pass in lxml's C code (linear in the size)."""
    count = 0
    for el in root.iter():
        count += 1
        if count > MAX_ELEMENTS:
            raise _fail(file, el.sourceline, f"more than {MAX_ELEMENTS:,} elements; a libvirt domain XML has a "
                        "few hundred, a guest with thousands of devices some tens of thousands")
    for el in root.iter(etree.Entity):
        raise _fail(file, el.sourceline, _DTD_MESSAGE)
    deep = _TOO_DEEP(root)
    if deep:
        raise _fail(file, deep[0].sourceline, f"elements nest deeper than {MAX_DEPTH} levels; libvirt domain "
                    "XML nests about 6 deep")


def parse_xml(text: str | bytes, file: str) -> etree._Element:
    """Just the tree of :func:`parse_document`."""
    return parse_document(text, file).root


# -- numbers and addresses, read the way libvirt reads them ---------------------------

# (attribute, largest value, how the range is written, what to do about it)
_ADDRESS_PARTS = (
    ("domain", 0xFFFF, "0x0000-0xffff", "libvirt guests use domain 0x0000"),
    ("bus", 0xFF, "0x00-0xff", "the bus is the index of the PCI controller the device plugs into"),
    ("slot", 0x1F, "0x00-0x1f", "move the device to a free slot in that range"),
    ("function", 7, "0-7", "use a function in that range, or another slot"),
)


def number(text: str) -> int:
    """An unsigned number as libvirt reads one (strtoul, base 0): 0x1f hex, 017 octal, 31 decimal."""
    s = text.lstrip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}", s):
        return int(s, 16)
    if re.fullmatch(r"0[0-7]{0,22}", s):
        return int(s, 8)
    if re.fullmatch(r"[1-9][0-9]{0,19}", s):
        return int(s)
    raise ValueError(f"'{shown(text)}' is not a number")


def shown(value: str) -> str:
    """An attribute value quoted in a message, cut short if it is long."""
    return value if len(value) <= 24 else value[:20] + "..."


def read_address(a: etree._Element, file: str, path: str) -> tuple[Address | None, list[Finding]]:
    """A ``<address type='pci'>`` (or a hostdev's source address) and what is wrong with it."""
    values: dict[str, int] = {}
    problems: list[Finding] = []
    for attr, top, span, fix in _ADDRESS_PARTS:
        raw = a.get(attr)
        if raw is None:
            values[attr] = 0  # libvirt reads a missing part as 0
            continue
        try:
            value = number(raw)
        except ValueError:
            problems.append(Finding(file, a.sourceline, f"{path}@{attr}",
                                    f"{attr}='{shown(raw)}' is not a number; write it in hex as virsh dumpxml "
                                    f"does, e.g. {attr}='0x{min(top, 5):02x}'"))
            continue
        if value > top:
            problems.append(Finding(file, a.sourceline, f"{path}@{attr}",
                                    f"{attr}='{shown(raw)}' is out of range: a PCI {attr} is {span}; {fix}"))
            continue
        values[attr] = value
    return (None, problems) if problems else (Address(**values), [])
