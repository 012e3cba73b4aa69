"""Write an extension into the user's own domain XML, changing nothing else.

The edit is made on the text, not by re-serializing a parsed tree: new
controllers are inserted as whole lines after the last PCI controller, in the
file's own indentation and quote style, and a moved device gets new values in
its ``<address>`` only.  Comments, attribute order and quoting, whitespace and
every element topo-solve does not know stay byte for byte as they were.  The
result is parsed again and compared with the input, element by element; if the
text edit cannot be made safely (say, a file on one line), the tree is edited
and serialized instead, which keeps every element, attribute and comment but
may change whitespace and quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from .domain_read import _addr, _number, parse_xml
from .domain_xml import _controller
from .errors import Finding, ProgrammingError, SpecError
from .extend import Extension, Move, extend
from .model import Address, Headroom
from .rules import RuleSet, family_for

__all__ = ["apply_extension", "extend_text", "Edited"]


@dataclass(frozen=True)
class Edited:
    """A domain XML extended: the guest's name and rules, the extension, and the new text."""

    name: str
    rules: RuleSet
    extension: Extension
    text: str
    exact: bool  # the edit kept every byte around the inserted lines


def extend_text(text: str, file: str, headroom: tuple[Headroom, ...], *, allow_moves: bool = False,
                machine: str | None = None, spec: str | None = None) -> Edited:
    """Read a domain XML, extend it to ``headroom`` and write the extension into its text.

    ``machine`` (from a spec with ``domain:``) must name the guest's own family."""
    from .domain_read import read_domain

    layout, rules = read_domain(text, file)
    wanted = family_for(machine) if machine is not None else None
    if wanted is not None and wanted.family != rules.family:
        raise SpecError([Finding(spec or file, None, "machine", f"machine '{machine}' is {wanted.family}, but "
                                 f"{file} is a {rules.family} guest; drop 'machine' or fix it")])
    name_el = parse_xml(text, file).find("name")
    name = (name_el.text or "").strip() if name_el is not None and name_el.text else Path(file).stem
    ext = extend(layout, rules, tuple(headroom), name=name, allow_moves=allow_moves)
    new_text, exact = apply_extension(text, file, ext)
    return Edited(name, rules, ext, new_text, exact)


def apply_extension(text: str, file: str, ext: Extension) -> tuple[str, bool]:
    """The domain XML with ``ext`` applied, and whether the text edit kept the bytes around it."""
    if ext.unchanged:
        return text, True
    try:
        out = _text_edit(text, file, ext)
        exact = True
    except _CannotEdit:
        out = _tree_edit(text, file, ext)
        exact = False
    _check(text, out, file, ext)
    return out, exact


class _CannotEdit(Exception):
    pass


def _lines_of(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _pci_address(el: etree._Element) -> Address | None:
    return _addr(el)  # numbers read as libvirt reads them (017 is octal); the reader checked them already


def _text_edit(text: str, file: str, ext: Extension) -> str:
    root = parse_xml(text, file)
    devices = root.find("devices")
    if devices is None:
        raise _CannotEdit
    lines = _lines_of(text)
    children = [el for el in devices if isinstance(el.tag, str)]
    pci = [el for el in children if el.tag == "controller" and el.get("type") == "pci"]
    anchor = pci[-1] if pci else None
    # the line before which the new controllers go: the start of the element after the anchor
    after = children[children.index(anchor) + 1] if anchor is not None and anchor is not children[-1] else None
    if anchor is None:
        after = children[0] if children else None
    if after is not None:
        at = after.sourceline - 1
        if lines[at][: len(lines[at]) - len(lines[at].lstrip())].strip() or not lines[at].lstrip().startswith(
                f"<{after.tag}"):
            raise _CannotEdit  # the next element does not start its own line
        if anchor is not None and anchor.sourceline - 1 == at:
            raise _CannotEdit
    else:
        at = _closing_line(lines, devices)
    indent = _indent(lines[(anchor.sourceline if anchor is not None else after.sourceline
                            if after is not None else at + 1) - 1])
    step = _step(lines, devices, indent)
    quote = "'" if "='" in "".join(lines[devices.sourceline - 1: at + 1]) else '"'
    nl = "\r\n" if lines[0].endswith("\r\n") else "\n"
    block = "".join(_serialize(_controller(c, ext.layout.family), indent, step, quote, nl) for c in ext.added)

    # moves: rewrite the numbers of one <address> line per moved device
    moved = {m.old: m for m in ext.moves}
    for el in children:
        addr = _pci_address(el)
        if addr is None or addr not in moved or el.tag == "controller" and el.get("type") == "pci":
            continue
        a = el.find("address")
        i = a.sourceline - 1
        lines[i] = _retarget(lines[i], moved.pop(addr).new)
    if moved:
        raise _CannotEdit
    lines.insert(at, block)
    return "".join(lines)


def _closing_line(lines: list[str], devices: etree._Element) -> int:
    """The line of ``</devices>``; it must start its own line."""
    start = devices.sourceline - 1
    for i in range(start, len(lines)):
        if lines[i].strip().startswith("</devices>"):
            return i
    raise _CannotEdit


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _step(lines: list[str], devices: etree._Element, indent: str) -> str:
    """One indentation step of the file (two spaces in virsh dumpxml)."""
    base = _indent(lines[devices.sourceline - 1])
    if indent.startswith(base) and len(indent) > len(base):
        return indent[len(base):]
    return "  "


def _serialize(el: etree._Element, indent: str, step: str, quote: str, nl: str) -> str:
    attrs = "".join(f" {k}={quote}{v}{quote}" for k, v in el.attrib.items())
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        return f"{indent}<{el.tag}{attrs}/>{nl}"
    inner = "".join(_serialize(c, indent + step, step, quote, nl) for c in kids)
    return f"{indent}<{el.tag}{attrs}>{nl}{inner}{indent}</{el.tag}>{nl}"


_ADDR_ATTR = re.compile(r"""\b(bus|slot|function)=(['"])[^'"]*\2""")


def _retarget(line: str, new: Address) -> str:
    if line.count("<address") != 1:
        raise _CannotEdit
    values = {"bus": f"0x{new.bus:02x}", "slot": f"0x{new.slot:02x}", "function": f"0x{new.function:x}"}
    return _ADDR_ATTR.sub(lambda m: f"{m.group(1)}={m.group(2)}{values[m.group(1)]}{m.group(2)}", line)


def _tree_edit(text: str, file: str, ext: Extension) -> str:
    root = parse_xml(text, file)
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    children = [el for el in devices if isinstance(el.tag, str)]
    pci = [el for el in children if el.tag == "controller" and el.get("type") == "pci"]
    pos = devices.index(pci[-1]) + 1 if pci else 0
    for i, c in enumerate(ext.added):
        devices.insert(pos + i, _controller(c, ext.layout.family))
    moved = {m.old: m.new for m in ext.moves}
    for el in children:
        addr = _pci_address(el)
        if addr in moved and not (el.tag == "controller" and el.get("type") == "pci"):
            new = moved[addr]
            a = el.find("address")
            a.set("bus", f"0x{new.bus:02x}")
            a.set("slot", f"0x{new.slot:02x}")
            a.set("function", f"0x{new.function:x}")
    return etree.tostring(root, encoding="unicode") + ("\n" if text.endswith("\n") else "")


def _shape(el, moved: dict[Address, Address] | None = None) -> tuple:
    """An element as nested tuples: tag, attributes, non-blank text, children (comments included)."""
    if not isinstance(el.tag, str):
        return ("#comment" if isinstance(el, etree._Comment) else "#pi", (el.text or "").strip())
    attrib = tuple(sorted(el.attrib.items()))
    return (el.tag, attrib, (el.text or "").strip(), tuple(_shape(c) for c in el))


def _check(before: str, after: str, file: str, ext: Extension) -> None:
    """The edited file is the input plus the new controllers and the moved addresses, nothing else."""
    old = parse_xml(before, file)
    new = parse_xml(after, file)
    added = {str(c.index) for c in ext.added}
    new_devices = new.find("devices")
    for el in list(new_devices):
        if (isinstance(el.tag, str) and el.tag == "controller" and el.get("type") == "pci"
                and el.get("index") in added):
            added.discard(el.get("index"))
            new_devices.remove(el)
    if added:
        raise ProgrammingError(f"{file}: controllers {sorted(added)} were not written")
    moved = {m.new: m.old for m in ext.moves}
    for el in new_devices:
        addr = _pci_address(el) if isinstance(el.tag, str) else None
        if addr in moved:
            back = moved.pop(addr)
            a = el.find("address")
            a.set("bus", f"0x{back.bus:02x}")
            a.set("slot", f"0x{back.slot:02x}")
            a.set("function", f"0x{back.function:x}")
    if _normalized(old) != _normalized(new):
        raise ProgrammingError(f"{file}: the edit changed more than the extension")


def _normalized(root) -> tuple:
    # address numbers compare by value (0x05 == 0x5), everything else as written
    for a in root.iter("address"):
        for k in ("bus", "slot", "function", "domain"):
            if a.get(k) is not None:
                try:
                    a.set(k, str(_number(a.get(k))))
                except ValueError:
                    pass
    return _shape(root)


def moves_text(moves: tuple[Move, ...]) -> list[str]:
    return [f"{m.name}: {m.old} -> {m.new}" for m in moves]
