"""libvirt domain XML -> a :class:`~topo_solve.model.Layout` the verifier can check.

The parser is hardened: it resolves no entities, loads no DTD and nothing from
the network or disk, and refuses files that are too large or too deep, so a
hostile file costs nothing (XXE, billion laughs).
"""

from __future__ import annotations

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


def parse_xml(text: str | bytes, file: str) -> etree._Element:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > MAX_BYTES:
        raise SpecError([Finding(file, None, "", f"file is larger than {MAX_BYTES // 1024 // 1024} MiB; "
                                 "a libvirt domain XML is far smaller")])
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if getattr(exc, "lineno", None) else None
        raise SpecError([Finding(file, line, "", f"not well-formed XML: {exc.msg}")]) from None
    if root.getroottree().docinfo.internalDTD is not None or any(
            isinstance(n, etree._Entity) for n in root.iter()):
        raise SpecError([Finding(file, 1, "", "the file declares a DTD or entities; libvirt domain XML has none")])
    for el in root.iter():
        depth = sum(1 for _ in el.iterancestors())
        if depth > MAX_DEPTH:
            raise SpecError([Finding(file, el.sourceline, "", f"elements nest deeper than {MAX_DEPTH} levels")])
    return root


def _addr(el: etree._Element) -> Address | None:
    a = el.find("address")
    if a is None or a.get("type") != "pci":
        return None
    return Address(bus=int(a.get("bus", "0"), 0), slot=int(a.get("slot", "0"), 0),
                   function=int(a.get("function", "0"), 0), domain=int(a.get("domain", "0"), 0))


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


def read_domain(text: str | bytes, file: str = "<domain>") -> tuple[Layout, RuleSet]:
    """Read a domain XML with addresses (as ``virsh dumpxml`` prints it)."""
    root = parse_xml(text, file)
    problems: list[Finding] = []
    if root.tag != "domain":
        raise SpecError([Finding(file, root.sourceline, "", f"the root element is <{root.tag}>, not <domain>: "
                                 "this is not a libvirt domain XML")])
    t = root.find("os/type")
    machine = t.get("machine") if t is not None else None
    if not machine:
        raise SpecError([Finding(file, t.sourceline if t is not None else root.sourceline, "os/type",
                                 "no machine type; audit needs <type machine='...'> as virsh dumpxml prints it")])
    rules = family_for(machine)
    if rules is None:
        guess = machine_suggestions(machine)
        raise SpecError([Finding(file, t.sourceline, "os/type@machine", f"unsupported machine '{machine}'"
                                 + (f"; did you mean {guess[0]!r}?" if guess else ""))])
    acpi = root.find("features/acpi") is not None
    devices = root.find("devices")
    controllers: list[Controller] = []
    placed: list[Placed] = []
    seen_alias: set[str] = set()
    counters: dict[str, int] = {}
    for el in (devices if devices is not None else []):
        if not isinstance(el.tag, str):
            continue
        if el.tag == "controller" and el.get("type") == "pci":
            try:
                index = int(el.get("index", "-1"))
            except ValueError:
                problems.append(Finding(file, el.sourceline, "controller@index", "index is not a number"))
                continue
            tgt = el.find("target")
            target = []
            if tgt is not None:
                for attr in ("chassisNr", "chassis", "port", "busNr", "index"):
                    if tgt.get(attr) is not None:
                        target.append((attr, int(tgt.get(attr), 0)))
            controllers.append(Controller(
                index=index, model=el.get("model", ""), address=_addr(el), target=tuple(target),
                hotplug=not (tgt is not None and tgt.get("hotplug") == "off")))
            continue
        addr = _addr(el)
        kind_name = _kind(el)
        alias = el.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        name = name[3:] if name.startswith("ua-") else name
        if not name:
            counters[el.tag] = counters.get(el.tag, 0) + 1
            name = f"{el.tag}{counters[el.tag]}"
        if name in seen_alias:
            problems.append(Finding(file, el.sourceline, f"{el.tag}/alias", f"alias '{name}' is used twice"))
        seen_alias.add(name)
        if kind_name is None and addr is None:
            continue  # not a PCI device (ps2 input, graphics, model='none' ...)
        kind = DEVICES.get(kind_name) or CHIPSET.get(kind_name)
        if addr is None:
            problems.append(Finding(file, el.sourceline, el.tag, f"device '{name}' has no PCI address; "
                                    "define the guest first (virsh define, then virsh dumpxml) so libvirt "
                                    "assigns one, or plan it from a spec"))
            continue
        cls = kind.cls if kind is not None else EndpointClass.PCIE if rules.family in ("q35", "virt") \
            else EndpointClass.PCI
        role = None
        for r, fx in rules.fixed.items():
            if fx.address == addr:
                role = r
        if kind is not None and kind.name == "piix3-uhci":
            cls = None
        group = None
        host = None
        if el.tag == "hostdev":
            src = el.find("source/address")
            if src is not None:
                host = str(Address(bus=int(src.get("bus", "0"), 0), slot=int(src.get("slot", "0"), 0),
                                   function=int(src.get("function", "0"), 0), domain=int(src.get("domain", "0"), 0)))
        placed.append(Placed(Endpoint(name=name, kind=kind_name or el.tag, cls=cls, pinned=addr, group=group,
                                      fixed_role=role, host=host, line=el.sourceline), addr))
    if problems:
        raise SpecError(problems)
    if not any(c.index == 0 for c in controllers):
        controllers.insert(0, Controller(0, rules.root, None,
                                         target=(("index", 0),) if "index" in rules.bus(rules.root).target else ()))
    controllers.sort(key=lambda c: c.index)
    return Layout(family=rules.family, controllers=tuple(controllers), placed=tuple(placed), acpi=acpi), rules


def audit_rules(family: str) -> RuleSet:
    return FAMILIES[family]
