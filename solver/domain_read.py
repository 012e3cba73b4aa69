"""libvirt domain XML -> a :class:`~topo_solve.model.Layout` the verifier can check.

The parser is hardened: it resolves no entities, loads no DTD and nothing from
the network or disk, and refuses files that are too large or too deep, so a
hostile file costs nothing (XXE, billion laughs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from .errors import Finding, SpecError
from .model import Address, Controller, Endpoint, EndpointClass, Layout, Placed
from .rules import FAMILIES, RuleSet, family_for, machine_suggestions
from .rules.devices import CHIPSET, DEVICES

__all__ = ["read_domain", "parse_xml", "MAX_BYTES", "MAX_DEPTH"]

MAX_BYTES = 8 * 1024 * 1024  # a domain with thousands of devices is well under 1 MiB
MAX_DEPTH = 32  # libvirt's domain XML nests about 6 deep

# (element, model) -> device table key; the model is the element's model/type attribute.
_BY_XML = {(k.element, k.xml_model): k.name for k in list(DEVICES.values()) + list(CHIPSET.values())}

# What comes before the root element and is harmless: whitespace, the XML declaration and other
# processing instructions, comments.  A <!DOCTYPE> there is refused before the parser sees it.
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.S)
_DTD_MESSAGE = ("the file has a document type declaration (<!DOCTYPE ...>), which libvirt domain XML never "
                "has; topo-solve loads no DTD and expands no entity: delete the declaration")


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


def parse_xml(text: str | bytes, file: str) -> etree._Element:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > MAX_BYTES:
        raise SpecError([Finding(file, None, "", f"file is larger than {MAX_BYTES // 1024 // 1024} MiB; a libvirt "
                                 "domain XML is far smaller: check that this is the file virsh dumpxml wrote")])
    line = _doctype_line(data)
    if line is not None:
        raise SpecError([Finding(file, line, "", _DTD_MESSAGE)])
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if getattr(exc, "lineno", None) else None
        msg = str(exc.msg)
        # libxml's own limits, in our words (its messages name parser flags, not fixes)
        if "amplification" in msg or "external entity" in msg:
            raise SpecError([Finding(file, line, "", _DTD_MESSAGE)]) from None
        if "Excessive depth" in msg:
            raise SpecError([Finding(file, line, "", f"elements nest deeper than {MAX_DEPTH} levels; "
                                     "libvirt domain XML nests about 6 deep")]) from None
        raise SpecError([Finding(file, line, "", f"not well-formed XML: {msg}")]) from None
    if root.getroottree().docinfo.internalDTD is not None or any(
            isinstance(n, etree._Entity) for n in root.iter()):
        # Not reached for UTF-8 input (the prolog check refuses first); other encodings end here.
        raise SpecError([Finding(file, 1, "", _DTD_MESSAGE)])
    for el in root.iter():
        depth = sum(1 for _ in el.iterancestors())
        if depth > MAX_DEPTH:
            raise SpecError([Finding(file, el.sourceline, "", f"elements nest deeper than {MAX_DEPTH} levels; "
                                     "libvirt domain XML nests about 6 deep")])
    return root


# -- numbers and addresses, read the way libvirt reads them ---------------------------

# (attribute, largest value, how the range is written, what to do about it)
_ADDRESS_PARTS = (
    ("domain", 0xFFFF, "0x0000-0xffff", "libvirt guests use domain 0x0000"),
    ("bus", 0xFF, "0x00-0xff", "the bus is the index of the PCI controller the device plugs into"),
    ("slot", 0x1F, "0x00-0x1f", "move the device to a free slot in that range"),
    ("function", 7, "0-7", "use a function in that range, or another slot"),
)


def _number(text: str) -> int:
    """An unsigned number as libvirt reads one (strtoul, base 0): 0x1f hex, 017 octal, 31 decimal."""
    s = text.lstrip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        return int(s, 16)
    if re.fullmatch(r"0[0-7]*", s):
        return int(s, 8)
    if re.fullmatch(r"[1-9][0-9]*", s):
        return int(s)
    raise ValueError(f"'{text}' is not a number")


def _shown(value: str) -> str:
    """An attribute value quoted in a message, cut short if it is long."""
    return value if len(value) <= 24 else value[:20] + "..."


def _read_address(a: etree._Element, file: str, path: str) -> tuple[Address | None, list[Finding]]:
    """A ``<address type='pci'>`` (or a hostdev's source address) and what is wrong with it."""
    values: dict[str, int] = {}
    problems: list[Finding] = []
    for attr, top, span, fix in _ADDRESS_PARTS:
        raw = a.get(attr)
        if raw is None:
            values[attr] = 0  # libvirt reads a missing part as 0
            continue
        try:
            value = _number(raw)
        except ValueError:
            problems.append(Finding(file, a.sourceline, f"{path}@{attr}",
                                    f"{attr}='{_shown(raw)}' is not a number; write it in hex as virsh dumpxml "
                                    f"does, e.g. {attr}='0x{min(top, 5):02x}'"))
            continue
        if value > top:
            problems.append(Finding(file, a.sourceline, f"{path}@{attr}",
                                    f"{attr}='{_shown(raw)}' is out of range: a PCI {attr} is {span}; {fix}"))
            continue
        values[attr] = value
    return (None, problems) if problems else (Address(**values), [])


def _addr(el: etree._Element) -> Address | None:
    """The PCI address of ``el``; raise ValueError if it is malformed."""
    a = el.find("address")
    if a is None or a.get("type") != "pci":
        return None
    address, problems = _read_address(a, "", "address")
    if problems:
        raise ValueError(problems[0].message)
    return address


def _kind(el: etree._Element) -> str | None:
    tag = el.tag
    if tag == "interface":
        m = el.find("model")
        model = m.get("type") if m is not None else "virtio"
        if el.get("type") == "hostdev":
            return "hostdev"
        return _BY_XML.get(("interface", model))
    if tag == "disk":
        if (el.find("target") is None) or el.find("target").get("bus") != "virtio":
            return None
        return "virtio-blk-transitional" if el.get("model") == "virtio-transitional" else "virtio-blk"
    if tag == "controller":
        t = el.get("type")
        if t == "scsi":
            return _BY_XML.get(("scsi", el.get("model", "virtio-scsi")))
        if t == "virtio-serial":
            return "virtio-serial-transitional" if el.get("model") == "virtio-transitional" else "virtio-serial"
        if t == "usb":
            return _BY_XML.get(("usb", el.get("model", "")))
        if t == "sata":
            return "ich9-ahci"
        return None
    if tag in ("rng", "memballoon", "sound"):
        return _BY_XML.get((tag, el.get("model", "")))
    if tag == "video":
        m = el.find("model")
        return _BY_XML.get(("video", m.get("type") if m is not None else ""))
    if tag == "input":
        if el.get("bus") != "virtio":
            return None
        return "virtio-input-transitional" if el.get("model") == "virtio-transitional" else "virtio-input"
    if tag == "serial":
        t = el.find("target")
        return "pci-serial" if t is not None and t.get("type") == "pci-serial" else None
    if tag == "hostdev":
        return "hostdev" if el.get("type") == "pci" else None
    return None


@dataclass
class _Seen:
    """A controller or device with a PCI address, for the consistency checks."""

    who: str  # "controller 3 (pcie-root-port)", "<interface> 'net0'"
    path: str  # the element, as a finding's field path
    line: int | None  # of its <address>
    address: Address
    index: int | None = None  # a controller's own index


def _machine(root: etree._Element, file: str, problems: list[Finding]) -> RuleSet | None:
    t = root.find("os/type")
    machine = t.get("machine") if t is not None else None
    if not machine:
        problems.append(Finding(file, t.sourceline if t is not None else root.sourceline, "os/type",
                                "no machine type; topo-solve needs <type machine='...'> as virsh dumpxml prints it"))
        return None
    rules = family_for(machine)
    if rules is None:
        guess = machine_suggestions(machine)
        problems.append(Finding(file, t.sourceline, "os/type@machine",
                                f"unsupported machine '{_shown(machine)}'"
                                + (f"; did you mean {guess[0]!r}?" if guess else ";")
                                + " topo-solve knows the q35, pc (i440fx), pseries and virt families"))
    return rules


def _consistency(controllers: list[tuple[Controller, int | None]], seen: list[_Seen], file: str,
                 problems: list[Finding]) -> None:
    """What libvirt would refuse: reused indexes and addresses, buses nobody provides, controllers
    plugged into a bus that is not lower than their own index."""
    first_at: dict[int, int | None] = {}
    for c, line in controllers:
        if c.index in first_at:
            problems.append(Finding(file, line, "controller@index",
                                    f"controller index {c.index} is used twice (also at line {first_at[c.index]}); "
                                    "every PCI controller needs an index of its own: renumber one of them, and "
                                    "the bus= of the addresses behind it"))
        else:
            first_at[c.index] = line
    buses = set(first_at) | {0}  # without a controller index 0 the reader adds the root bus itself
    taken: dict[Address, _Seen] = {}
    for s in seen:
        a = s.address
        if a.bus not in buses:
            problems.append(Finding(file, s.line, f"{s.path}/address@bus",
                                    f"{s.who} sits on bus {a.bus}, but no PCI controller has index {a.bus}; "
                                    f"add that controller, or set bus= to the index of one that exists"))
        if s.index is not None and a.bus >= s.index:
            problems.append(Finding(file, s.line, f"{s.path}/address@bus",
                                    f"{s.who} sits on bus {a.bus}; libvirt requires a controller's index to be "
                                    f"larger than the bus it plugs into: renumber it above {a.bus}, or plug it "
                                    "into a bus with a lower index"))
        other = taken.get(a)
        if other is not None:
            problems.append(Finding(file, s.line, f"{s.path}/address",
                                    f"{s.who} and {other.who} at line {other.line} both use PCI address {a}; "
                                    "move one of them to a free slot or function"))
        else:
            taken[a] = s


def read_domain(text: str | bytes, file: str = "<domain>") -> tuple[Layout, RuleSet]:
    """Read a domain XML with addresses (as ``virsh dumpxml`` prints it).

    Raise :class:`SpecError` with one finding per problem, all at once: a file that is not a
    domain, an unknown machine, malformed addresses, and what libvirt would refuse (two
    things at one address, a bus no controller provides, a controller index used twice or not
    larger than its bus).
    """
    root = parse_xml(text, file)
    if root.tag != "domain":
        raise SpecError([Finding(file, root.sourceline, "", f"the root element is <{_shown(str(root.tag))}>, "
                                 "not <domain>: this is not a libvirt domain XML; give it what "
                                 "'virsh dumpxml GUEST' prints")])
    problems: list[Finding] = []
    rules = _machine(root, file, problems)
    acpi = root.find("features/acpi") is not None
    devices = root.find("devices")
    controllers: list[tuple[Controller, int | None]] = []
    seen: list[_Seen] = []
    found: list[tuple[etree._Element, str, str | None, Address]] = []  # endpoints: element, name, kind, address
    seen_alias: dict[str, int | None] = {}
    counters: dict[str, int] = {}

    def address_of(el: etree._Element) -> tuple[Address | None, bool]:
        """(address, malformed) of ``el``'s PCI address; malformed ones are reported here."""
        a = el.find("address")
        if a is None or a.get("type") != "pci":
            return None, False
        address, bad = _read_address(a, file, f"{el.tag}/address")
        problems.extend(bad)
        return address, bool(bad)

    for el in (devices if devices is not None else []):
        if not isinstance(el.tag, str):
            continue
        if el.tag == "controller" and el.get("type") == "pci":
            raw = el.get("index")
            try:
                index = int(raw if raw is not None else "")
                if index < 0:
                    raise ValueError
            except ValueError:
                what = "has no index" if raw is None else f"index='{_shown(raw)}' is not a number"
                problems.append(Finding(file, el.sourceline, "controller@index",
                                        f"PCI controller {what}; write the index libvirt gave it (0-255, "
                                        "decimal), as virsh dumpxml prints it"))
                continue
            model = el.get("model", "")
            tgt = el.find("target")
            target = []
            for attr in ("chassisNr", "chassis", "port", "busNr", "index"):
                raw_t = tgt.get(attr) if tgt is not None else None
                if raw_t is None:
                    continue
                try:
                    target.append((attr, _number(raw_t)))
                except ValueError:
                    problems.append(Finding(file, tgt.sourceline, f"controller/target@{attr}",
                                            f"{attr}='{_shown(raw_t)}' is not a number; write it as virsh dumpxml "
                                            "does, e.g. port='0x10' or chassis='1'"))
            node = tgt.find("node") if tgt is not None else None
            if node is not None:
                try:
                    target.append(("node", _number((node.text or "").strip())))
                except ValueError:
                    problems.append(Finding(file, node.sourceline, "controller/target/node",
                                            f"<node>{_shown(node.text or '')}</node> is not a number; write the "
                                            "id of a <cell> of <cpu><numa>"))
            address, _ = address_of(el)
            c = Controller(index=index, model=model, address=address, target=tuple(target),
                           hotplug=not (tgt is not None and tgt.get("hotplug") == "off"))
            controllers.append((c, el.sourceline))
            if address is not None:
                seen.append(_Seen(f"controller {index} ({_shown(model)})", "controller",
                                  el.find("address").sourceline, address, index))
            continue
        addr, malformed = address_of(el)
        kind_name = _kind(el)
        alias = el.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        name = name[3:] if name.startswith("ua-") else name
        named = bool(name)
        if named:
            if name in seen_alias:
                problems.append(Finding(file, el.sourceline, f"{el.tag}/alias",
                                        f"alias '{_shown(name)}' is used twice (also at line {seen_alias[name]}); "
                                        "give each device its own"))
            seen_alias.setdefault(name, el.sourceline)
        else:
            # no alias (a guest never started): name it the way the XML does
            what = f"{el.get('type')} controller" if el.tag == "controller" else el.tag
            counters[what] = counters.get(what, 0) + 1
            name = (f"{what} {el.get('index', '0')}" if el.tag == "controller"
                    else f"{what} {counters[what]}")
        if el.tag == "hostdev":
            src = el.find("source/address")
            if src is not None:
                problems.extend(_read_address(src, file, "hostdev/source/address")[1])
        if malformed or (kind_name is None and addr is None):
            continue  # reported above, or not a PCI device (ps2 input, graphics, model='none' ...)
        if addr is None:
            problems.append(Finding(file, el.sourceline, el.tag, f"device '{name}' has no PCI address; "
                                    "define the guest first (virsh define, then virsh dumpxml) so libvirt "
                                    "assigns one, or plan it from a spec"))
            continue
        who = f"<{el.tag}> '{_shown(name)}'" if named else f"<{el.tag}>"
        seen.append(_Seen(who, el.tag, el.find("address").sourceline, addr))
        found.append((el, name, kind_name, addr))
    _consistency(controllers, seen, file, problems)
    if problems or rules is None:
        raise SpecError(sorted(problems, key=lambda p: p.line or 0))

    placed: list[Placed] = []
    for el, name, kind_name, addr in found:
        kind = DEVICES.get(kind_name) or CHIPSET.get(kind_name)
        cls = kind.cls if kind is not None else EndpointClass.PCIE if rules.family in ("q35", "virt") \
            else EndpointClass.PCI
        role = None
        for r, fx in rules.fixed.items():
            if fx.address == addr:
                role = r
        if kind is not None and kind.name == "piix3-uhci":
            cls = None
        host = None
        if el.tag == "hostdev":
            src = el.find("source/address")
            if src is not None:
                host = str(_read_address(src, file, "hostdev/source/address")[0])
        placed.append(Placed(Endpoint(name=name, kind=kind_name or el.tag, cls=cls, pinned=addr, group=None,
                                      fixed_role=role, host=host, line=el.sourceline), addr))
    ctrls = [c for c, _ in controllers]
    if not any(c.index == 0 for c in ctrls):
        ctrls.insert(0, Controller(0, rules.root, None,
                                   target=(("index", 0),) if "index" in rules.bus(rules.root).target else ()))
    ctrls.sort(key=lambda c: c.index)
    numa_nodes = len(root.findall("cpu/numa/cell"))
    return Layout(family=rules.family, controllers=tuple(ctrls), placed=tuple(placed), acpi=acpi,
                  numa_nodes=numa_nodes), rules


def audit_rules(family: str) -> RuleSet:
    return FAMILIES[family]
