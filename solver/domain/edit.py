"""Write a plan into the user's own domain XML, changing nothing else.

The edit works on the document's text, never by re-serializing a parsed tree:
a small scanner finds the exact span of every element's start and end tag (in
the same document order lxml reports), and each change is a replacement of
one span: an ``<address>`` written into an element that had none (or replacing
``<address type='pci'/>``), an ``index`` attribute for a controller libvirt
would have numbered, whole new elements (controllers, and the devices libvirt
would add by itself) in the file's own indentation, quote style and line
ending, and, with right-sizing, the removal of surplus controllers the file
gave no address.  Comments, attribute order, quoting, whitespace, namespaces
and every element topo-solve does not know stay byte for byte.

The result is parsed again and compared with the input, element by element,
after undoing exactly the planned changes; any other difference is a bug.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from ..errors import ProgrammingError
from ..extend import Extension
from ..model import Address, Controller
from .parse import Document, parse_document
from .read import Domain, DomainController, DomainDevice
from .write import _controller, implicit_element

__all__ = ["Edit", "apply_plan", "moves_text"]


@dataclass(frozen=True)
class Edit:
    """What an edit did, for the summary: every change, in the user's words."""

    data: bytes  # the new document
    text: str
    new_controllers: tuple[Controller, ...] = ()  # written as new elements (libvirt's index gaps among them)
    gap_controllers: tuple[Controller, ...] = ()  # of those, the ones libvirt adds for an unused index
    added_by_libvirt: tuple[str, ...] = ()  # device models libvirt adds at define, written out
    filled_devices: int = 0  # the document's devices that got their address
    filled_controllers: int = 0  # the document's controllers that got their address (and index)
    removed_controllers: tuple[str, ...] = ()  # the models of the document's controllers dropped
    reused_controllers: tuple[str, ...] = ()  # the models of the document's controllers a right-sized plan kept


# -- the scanner: start/end tag spans in document order ----------------------------------

_TOKEN = re.compile(r"""<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|<!DOCTYPE[^>]*>|</[^>]*>"""
                    r"""|<(?:[^>"']|"[^"]*"|'[^']*')*>""", re.S)


@dataclass(slots=True)
class _Span:
    start: int  # of '<' of the start tag
    head_end: int  # just after the start tag's '>'
    end: int  # just after the end tag (== head_end for a self-closing element)
    closing: int  # where '</tag>' starts (== head_end - 2 for '/>')
    empty: bool  # self-closing


def _spans(text: str) -> list[_Span]:
    """Every element's spans, in document order (the order of ``root.iter()`` over elements)."""
    out: list[_Span] = []
    stack: list[_Span] = []
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok.startswith(("<!--", "<![CDATA[", "<?", "<!")):
            continue
        if tok.startswith("</"):
            span = stack.pop()
            span.closing, span.end = m.start(), m.end()
            continue
        span = _Span(m.start(), m.end(), m.end(), m.end() - 2, tok.endswith("/>"))
        out.append(span)
        if not span.empty:
            stack.append(span)
    return out


class _Text:
    """The document's text with replacements queued by span and applied at once."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.text = doc.text
        self.nl = doc.newline
        spans = _spans(self.text)
        elements = [el for el in doc.root.iter() if isinstance(el.tag, str)]
        if len(spans) != len(elements):
            raise ProgrammingError(f"{doc.file}: the scanner found {len(spans)} elements, lxml {len(elements)}")
        self.span = {id(el): sp for el, sp in zip(elements, spans)}
        self.keep = elements  # keeps the ids above alive
        self.edits: list[tuple[int, int, str]] = []
        self._steps: dict[int, str] = {}
        self._quotes: dict[int, str] = {}
        self._indents: dict[int, str] = {}
        self.quote = "'" if self.text.count("='") >= self.text.count('="') else '"'

    def line_start(self, pos: int) -> int:
        return self.text.rfind("\n", 0, pos) + 1

    def indent_of(self, el: etree._Element) -> str:
        key = id(el)
        if key not in self._indents:
            sp = self.span[key]
            head = self.text[self.line_start(sp.start):sp.start]
            self._indents[key] = head if not head.strip() else ""
        return self._indents[key]

    def step(self, el: etree._Element) -> str:
        """One indentation step, from the element's children (or its parent's), else two spaces."""
        key = id(el)
        if key not in self._steps:
            self._steps[key] = self._step(el)
        return self._steps[key]

    def _step(self, el: etree._Element) -> str:
        for parent in (el, el.getparent()):
            if parent is None:
                continue
            kids = [c for c in parent if isinstance(c.tag, str)]
            if kids:
                inner, outer = self.indent_of(kids[0]), self.indent_of(parent)
                if inner.startswith(outer) and len(inner) > len(outer):
                    return inner[len(outer):]
        return "  "

    def quote_of(self, el: etree._Element) -> str:
        key = id(el)
        if key not in self._quotes:
            self._quotes[key] = self._quote_of(el)
        return self._quotes[key]

    def _quote_of(self, el: etree._Element) -> str:
        sp = self.span[id(el)]
        head = self.text[sp.start:sp.head_end]
        m = re.search(r"""=\s*(["'])""", head)
        return m.group(1) if m else self.quote

    def replace(self, start: int, end: int, new: str) -> None:
        self.edits.append((start, end, new))

    def render(self) -> str:
        out, last = [], 0
        for start, end, new in sorted(self.edits, key=lambda e: (e[0], e[1])):
            if start < last:
                raise ProgrammingError(f"{self.doc.file}: two edits overlap at offset {start}")
            out.append(self.text[last:start])
            out.append(new)
            last = end
        out.append(self.text[last:])
        return "".join(out)

    # -- operations on one element --------------------------------------------------------
    def set_attribute(self, el: etree._Element, name: str, value: str, after: str | None = None) -> None:
        """Add an attribute (the element has none of that name): right after attribute ``after``
        when the start tag has it (libvirt writes a controller's index after its type), else last."""
        sp = self.span[id(el)]
        q = self.quote_of(el)
        head = self.text[sp.start:sp.head_end]
        m = re.search(rf"""\s{after}\s*=\s*("[^"]*"|'[^']*')""", head) if after else None
        at = sp.start + m.end() if m else sp.head_end - (2 if sp.empty else 1)
        self.replace(at, at, f" {name}={q}{value}{q}")

    def append_child(self, el: etree._Element, xml: str | list[str]) -> None:
        """Insert ``xml`` (one line, no indentation; or several, each on its own line) as the element's
        last child(ren)."""
        sp = self.span[id(el)]
        indent = self.indent_of(el)
        inner = indent + self.step(el)
        if not isinstance(xml, str):
            xml = f"{self.nl}{inner}".join(xml)
        if sp.empty:
            tail = self.text[sp.head_end - 2:sp.head_end]
            self.replace(sp.head_end - len(tail), sp.head_end,
                         f">{self.nl}{inner}{xml}{self.nl}{indent}</{el.tag}>")
            return
        ls = self.line_start(sp.closing)
        if not self.text[ls:sp.closing].strip() and ls > sp.head_end:
            self.replace(ls, ls, f"{inner}{xml}{self.nl}")  # before the line of </tag>
        else:
            self.replace(sp.closing, sp.closing, f"{self.nl}{inner}{xml}{self.nl}{indent}")

    def replace_element(self, el: etree._Element, xml: str) -> None:
        sp = self.span[id(el)]
        self.replace(sp.start, sp.end, xml)

    def remove_element(self, el: etree._Element) -> None:
        """Drop the element, and its line when it has one to itself."""
        sp = self.span[id(el)]
        ls = self.line_start(sp.start)
        le = self.text.find("\n", sp.end)
        le = len(self.text) if le < 0 else le + 1
        if not self.text[ls:sp.start].strip() and not self.text[sp.end:le].strip():
            self.replace(ls, le, "")
        else:
            self.replace(sp.start, sp.end, "")

    def insert_after(self, el: etree._Element, xmls: list[str]) -> None:
        """Whole lines after ``el``'s line (at its indentation)."""
        sp = self.span[id(el)]
        le = self.text.find("\n", sp.end)
        indent = self.indent_of(el)
        block = "".join(f"{indent}{x}{self.nl}" for x in xmls)
        if le >= 0 and not self.text[sp.end:le].strip():
            self.replace(le + 1, le + 1, block)
        else:
            self.replace(sp.end, sp.end, self.nl + block.rstrip("\r\n"))


def _xml(el: etree._Element, q: str) -> str:
    """One element on one line, attributes in their order, in quote style ``q``."""
    attrs = "".join(f" {k}={q}{v}{q}" for k, v in el.attrib.items())
    kids = [c for c in el if isinstance(c.tag, str)]
    text = (el.text or "").strip()
    if not kids and not text:
        return f"<{el.tag}{attrs}/>"
    inner = text + "".join(_xml(c, q) for c in kids)
    return f"<{el.tag}{attrs}>{inner}</{el.tag}>"


def _lines(el: etree._Element, indent: str, step: str, q: str) -> list[str]:
    """An element as indented lines (children on lines of their own), for whole-element inserts."""
    attrs = "".join(f" {k}={q}{v}{q}" for k, v in el.attrib.items())
    kids = [c for c in el if isinstance(c.tag, str)]
    text = (el.text or "").strip()
    if not kids:
        return [f"{indent}<{el.tag}{attrs}>{text}</{el.tag}>" if text else f"{indent}<{el.tag}{attrs}/>"]
    out = [f"{indent}<{el.tag}{attrs}>"]
    for c in kids:
        out += _lines(c, indent + step, step, q)
    out.append(f"{indent}</{el.tag}>")
    return out


def _address_xml(a: Address, q: str, multifunction: bool = False) -> str:
    mf = f" multifunction={q}on{q}" if multifunction else ""
    return (f"<address type={q}pci{q} domain={q}0x{a.domain:04x}{q} bus={q}0x{a.bus:02x}{q} "
            f"slot={q}0x{a.slot:02x}{q} function={q}0x{a.function:x}{q}{mf}/>")


def _set_address(t: _Text, el: etree._Element, a: Address, multifunction: bool = False,
                 first: str | None = None) -> None:
    """Write the element's PCI address (and ``first``, a new child before it, when given)."""
    old = el.find("address")
    q = t.quote_of(el)
    if old is not None:
        t.replace_element(old, _address_xml(a, t.quote_of(old), multifunction))
        if first is not None:
            t.append_child(el, first)
    else:
        t.append_child(el, ([first] if first is not None else []) + [_address_xml(a, q, multifunction)])


def _bus_nr(t: _Text, dc: DomainController, c: Controller, written: dict[int, bool]) -> str | None:
    """An expander bus the document gives no busNr gets the one libvirt would pick (the plan's):
    an attribute of its <target>, or a new <target> child (returned, to go before the address).
    ``written`` records which, by index, for the check."""
    number = dict(c.target).get("busNr")
    tgt = dc.element.find("target")
    if number is None or (tgt is not None and tgt.get("busNr") is not None):
        return None
    written[c.index] = tgt is None
    if tgt is not None:
        t.set_attribute(tgt, "busNr", str(number))
        return None
    q = t.quote_of(dc.element)
    return f"<target busNr={q}{number}{q}/>"


def apply_plan(domain: Domain, ext: Extension, *, reuse: list[DomainController] = (),
               prefilled: list[DomainController] = ()) -> Edit:
    """The document with ``ext`` written in.

    ``reuse``: the document's controllers without index or address that a right-sized plan may
    use: each new controller of their model takes one (index and address written into it), and
    the ones left over are removed."""
    doc = domain.document
    if ext.unchanged and not reuse and not prefilled and not any(dc.implicit for dc in domain.controllers):
        return Edit(doc.data, doc.text)
    t = _Text(doc)
    inserted: list[str] = []
    filled: list[str] = []
    removed: list[str] = []
    by_index = {c.controller.index: c for c in domain.controllers}

    # the document's own controllers that get an address (and an index, if libvirt would give it one);
    # the ones libvirt would add for an index gap are written out
    gap = [dc.controller for dc in domain.controllers if dc.implicit and dc.root]
    bus_nrs: dict[int, bool] = {}
    for dc in prefilled:
        c = dc.controller
        if dc.implicit:
            gap.append(c)
            continue
        if not dc.index_given:
            t.set_attribute(dc.element, "index", str(c.index), after="type")
        _set_address(t, dc.element, c.address, c.multifunction, first=_bus_nr(t, dc, c, bus_nrs))
        filled.append(f"controller {c.index} ({c.model}) at {c.address}")
    for c in ext.filled:
        dc = by_index[c.index]
        if dc.implicit:
            gap.append(c)
            continue
        if not dc.index_given:
            t.set_attribute(dc.element, "index", str(c.index), after="type")
        _set_address(t, dc.element, c.address, c.multifunction)
        filled.append(f"controller {c.index} ({c.model}) at {c.address}")
    spare: dict[str, list[DomainController]] = {}
    for dc in reuse:
        spare.setdefault(dc.controller.model, []).append(dc)
    new_controllers = []
    reused: list[tuple[DomainController, Controller]] = []
    for c in ext.added:
        if spare.get(c.model):
            dc = spare[c.model].pop(0)
            t.set_attribute(dc.element, "index", str(c.index), after="type")
            _set_address(t, dc.element, c.address, c.multifunction)
            filled.append(f"controller {c.index} ({c.model}) at {c.address}")
            reused.append((dc, c))
        else:
            new_controllers.append(c)
    left = [dc for dcs in spare.values() for dc in dcs]
    for dc in left:
        t.remove_element(dc.element)
        removed.append(f"{dc.controller.model}")

    # devices: the document's own get their address; the ones libvirt would add are written out
    devices = {d.endpoint.name: d for d in domain.devices}
    new_devices: list[tuple[DomainDevice, Address]] = []
    for p in ext.placed:
        d = devices[p.endpoint.name]
        if p.address is None:
            continue
        if d.implicit is not None:
            new_devices.append((d, p.address))
            continue
        first = p.endpoint.functions[0]
        for el, f in d.members:
            a = Address(p.address.bus, p.address.slot, p.address.function + f - first, p.address.domain)
            _set_address(t, el, a, multifunction=f == 0 and (len(d.members) > 1 or p.multifunction))
        filled.append(f"{_who(d)} at {p.address}")
    moved = {m.old: m.new for m in ext.moves}
    for d in domain.devices:
        if d.address in moved:
            for el, _f in d.members:
                old = el.find("address")
                q = t.quote_of(old)
                new = moved[d.address]
                t.replace_element(old, _address_xml(new, q, old.get("multifunction") == "on"))

    # new controllers go after the document's last PCI controller (or first in <devices>)
    devices_el = doc.root.find("devices")
    new_controllers = sorted(new_controllers + gap, key=lambda c: c.index)
    new_ctrl = [_controller(c, ext.layout.family) for c in new_controllers]
    pci = [c.element for c in domain.controllers if c.element is not None]
    if (new_ctrl or new_devices) and devices_el is None:
        # a domain without <devices> (libvirt adds what it needs): the plan writes one, last in <domain>
        root = doc.root
        step = t.step(root)
        els = new_ctrl + [implicit_element(d.endpoint.kind, a, ext.layout.family,
                                           primary=d.endpoint.fixed_role == "primary-video") for d, a in new_devices]
        lines = [ln for e in els for ln in _lines(e, step * 2, step, t.quote)]
        block = t.nl.join([f"{step}<devices>", *lines, f"{step}</devices>"])
        sp = t.span[id(root)]
        ls = t.line_start(sp.closing)
        if not t.text[ls:sp.closing].strip() and ls > sp.head_end:
            t.replace(ls, ls, block + t.nl)
        else:
            t.replace(sp.closing, sp.closing, t.nl + block + t.nl)
        inserted += [f"controller {c.index} ({c.model})" for c in new_controllers]
        written_devices = list(new_devices)
        new_ctrl, new_devices = [], []
    else:
        written_devices = list(new_devices)
    if new_ctrl or new_devices:
        indent = t.indent_of(devices_el) + t.step(devices_el)
        step = t.step(devices_el)
        q = t.quote

        def block(els: list[etree._Element]) -> list[str]:
            return [ln for e in els for ln in _lines(e, "", step, q)]

        if new_ctrl:
            anchor = pci[-1] if pci else None
            lines = block(new_ctrl)
            if anchor is not None:
                t.insert_after(anchor, lines)
            else:
                _insert_first(t, devices_el, lines, indent)
            inserted += [f"controller {c.index} ({c.model})" for c in new_controllers]
        if new_devices:
            els = []
            for d, a in new_devices:
                els.append(implicit_element(d.endpoint.kind, a, ext.layout.family,
                                            primary=d.endpoint.fixed_role == "primary-video"))
                inserted.append(f"{d.endpoint.name.replace(' (libvirt adds it)', '')} at {a} (libvirt adds it "
                                "at define; written so its place is the planned one)")
            kids = [c for c in devices_el if isinstance(c.tag, str)]
            if kids:
                t.insert_after(kids[-1], block(els))
            else:
                _insert_first(t, devices_el, block(els), indent)
    text = t.render()
    data = doc.encode(text)
    _check(domain, data, new_controllers, [dc for dc, _ in reused], left, ext, bus_nrs)
    return Edit(data, text, new_controllers=tuple(new_controllers), gap_controllers=tuple(gap),
                added_by_libvirt=tuple(d.endpoint.kind for d, _ in written_devices),
                filled_devices=sum(1 for f in filled if not f.startswith("controller ")),
                filled_controllers=sum(1 for f in filled if f.startswith("controller ")),
                removed_controllers=tuple(removed), reused_controllers=tuple(c.model for _, c in reused))


def _insert_first(t: _Text, parent: etree._Element, lines: list[str], indent: str) -> None:
    """Lines as the parent's first children: after its start tag, or after the rest of that line when
    it holds text of the user's (``<devices>some text``), which then stays where it was."""
    sp = t.span[id(parent)]
    block = "".join(f"{t.nl}{indent}{ln}" for ln in lines)
    if sp.empty:
        t.replace(sp.head_end - 2, sp.head_end, f">{block}{t.nl}{t.indent_of(parent)}</{parent.tag}>")
        return
    at = sp.head_end
    eol = t.text.find("\n", at)
    rest = t.text[at:eol] if eol >= 0 else ""
    if rest.strip() and "<" not in rest:
        at = eol - 1 if rest.endswith("\r") else eol
    t.replace(at, at, block)


def _who(d: DomainDevice) -> str:
    el = d.element
    return f"<{el.tag}> '{d.endpoint.name}'" if el is not None else d.endpoint.name


# -- the check: nothing changed but what the plan says ------------------------------------

def _text_between(el, kept) -> list[tuple[int, list[str]]]:
    """An element's own character data (its text and its children's tails) as the words between its
    ``kept`` children: a skipped child (the plan's, or one it removed) joins the text around it.  A
    new element goes between the user's text and a line's whitespace, never into a word, so the words
    of each gap stay as they were wherever the plan's elements went (stray text in <devices> may end
    up in a new element's tail).  Only the gaps that hold words are listed, by their number: an
    element with a million children and no text between them costs no list per gap."""
    kept_ids = {id(c) for c in kept}
    gaps: list[tuple[int, list[str]]] = []
    gap, words = 0, (el.text or "").split()
    for c in el:
        if id(c) in kept_ids:
            if words:
                gaps.append((gap, words))
                words = []
            gap += 1
        tail = c.tail
        if tail and not tail.isspace():
            words += tail.split()
    return gaps + [(gap, words)] if words else gaps


def _same(a, b, skip_a, skip_b, device: bool = False) -> bool:
    """Whether two elements have the same shape: tag, attributes, children (comments and processing
    instructions included) and the text between them (``_text_between``), the children in
    ``skip_a``/``skip_b`` (by identity) left out.  A PCI controller's index and a device's own PCI
    address (``device``: the elements are children of ``<devices>``) are what a plan writes, so
    neither is compared."""
    if a.tag != b.tag:
        return False
    tag = a.tag
    if not isinstance(tag, str):
        return (a.text or "").strip() == (b.text or "").strip() and \
            isinstance(a, etree._Comment) == isinstance(b, etree._Comment)
    if device and tag == "controller" and a.get("type") == "pci":
        if {k: v for k, v in a.items() if k != "index"} != {k: v for k, v in b.items() if k != "index"}:
            return False
    elif dict(a.attrib) != dict(b.attrib):
        return False
    inner = tag == "devices"

    def kids(el, skip):
        return [c for c in el if id(c) not in skip
                and not (device and c.tag == "address" and c.get("type") == "pci")]

    ka, kb = kids(a, skip_a), kids(b, skip_b)
    return len(ka) == len(kb) and _text_between(a, ka) == _text_between(b, kb) and \
        all(_same(x, y, skip_a, skip_b, inner) for x, y in zip(ka, kb))


def _check(domain: Domain, data: bytes, new_controllers: list[Controller], reused: list[DomainController],
           left: list[DomainController], ext: Extension, bus_nrs: dict[int, bool] | None = None) -> None:
    """The edited file is the input plus exactly the planned changes, nothing else: both trees,
    without what the plan writes (new elements, PCI addresses, controller indexes, an expander's
    busNr) and without what it removes, have the same shape."""
    file = domain.file
    new = parse_document(data, file).root
    devices = new.find("devices")
    kids = [el for el in (devices if devices is not None else []) if isinstance(el.tag, str)]
    added = {str(c.index) for c in new_controllers}
    skip_new = set()
    for el in kids:
        if el.tag == "controller" and el.get("type") == "pci" and el.get("index") in added:
            added.discard(el.get("index"))
            skip_new.add(id(el))
    if added:
        raise ProgrammingError(f"{file}: controllers {sorted(added)} were not written")
    devs = domain_devices(domain)
    implicit = sum(1 for p in ext.placed if devs.get(p.endpoint.name) is not None
                   and devs[p.endpoint.name].implicit is not None and p.address is not None)
    skip_new |= {id(el) for el in kids[len(kids) - implicit:]} if implicit else set()
    for el in kids:  # an expander's busNr the plan wrote (and the <target> it wrote for it)
        if el.tag == "controller" and el.get("type") == "pci" and bus_nrs and int(el.get("index", -1)) in bus_nrs:
            tgt = el.find("target")
            del tgt.attrib["busNr"]
            if bus_nrs[int(el.get("index"))]:
                skip_new.add(id(tgt))
    skip_old = {id(dc.element) for dc in left}
    if domain.document.root.find("devices") is None and devices is not None:
        skip_new.add(id(devices))  # the plan wrote <devices> itself: everything in it is the plan's
    if not _same(domain.document.root, new, skip_old, skip_new):
        raise ProgrammingError(f"{file}: the edit changed more than the plan")


def domain_devices(domain: Domain) -> dict:
    return {d.endpoint.name: d for d in domain.devices}


def moves_text(moves) -> list[str]:
    return [f"{m.name}: {m.old} -> {m.new}" for m in moves]
