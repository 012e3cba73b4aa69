"""libvirt domain XML -> a :class:`Domain`: what has an address, what libvirt would still place.

Any domain XML of a supported family is read, defined or not: a device or PCI
controller with an address is part of the guest's existing layout (kept where
it is); one without is what libvirt would place at define time, and so what the
planner places; devices libvirt adds by itself at define (a balloon, a USB
controller, the virtio-serial controller a virtio channel needs) are listed too.
Every element keeps a reference to its place in the document, so the edit
(:mod:`topo_solve.domain.edit`) can fill in exactly what the plan decided.

Problems are reported all at once, one finding per problem with its line: a
file that is not a domain, an unknown machine, malformed addresses, a PCI
controller model the family does not have, an element of a PCI-taking kind
with a model the tables do not know, and what libvirt would refuse (two things
at one address, a bus no controller provides, a controller index used twice or
not larger than its bus).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from lxml import etree

from ..errors import Finding, SpecError
from ..model import Address, Controller, Endpoint, EndpointClass, Layout, Placed, Problem, Target
from ..rules import DeviceKind, Implicit, RuleSet, family_for, machine_missing, machine_suggestions
from ..rules.devices import KINDS
from ..rules.firmware import KINDS as FIRMWARE_KINDS
from .classify import NOT_PCI_ADDRESSES, classify
from .parse import Document, number, parse_document, read_address, shown

__all__ = ["Domain", "DomainController", "DomainDevice", "read_domain", "read_layout"]


@dataclass
class DomainController:
    """A ``<controller type='pci'>`` of the document."""

    element: etree._Element | None  # None: libvirt adds it at define (an index gap)
    controller: Controller  # its index is the one given, or the one libvirt will give it
    index_given: bool
    line: int | None
    root: bool = False  # a root bus (pcie-root, a PHB): it has no address to give

    @property
    def implicit(self) -> bool:
        return self.element is None

    @property
    def placed(self) -> bool:
        return self.controller.address is not None or self.root


@dataclass
class DomainDevice:
    """A PCI device of the document (or several elements that share one slot as functions)."""

    endpoint: Endpoint
    members: list[tuple[etree._Element, int]]  # (element, its function in the slot)
    address: Address | None  # None: libvirt would place it
    implicit: Implicit | None = None  # not in the document: libvirt adds it at define

    @property
    def element(self) -> etree._Element | None:
        return self.members[0][0] if self.members else None


@dataclass
class Domain:
    """A domain XML as the planner sees it."""

    document: Document
    rules: RuleSet
    name: str
    machine: str
    arch: str
    acpi: bool
    numa_cells: int
    controllers: list[DomainController]
    devices: list[DomainDevice]  # in document order, then what libvirt adds
    findings: list[Finding] = field(default_factory=list)
    firmware: str | None = None  # rules.firmware.KINDS the guest boots (see firmware_of)

    @property
    def file(self) -> str:
        return self.document.file

    @property
    def unplaced(self) -> list[DomainDevice]:
        return [d for d in self.devices if d.address is None and d.endpoint.cls is not None
                or d.address is None and d.endpoint.fixed_role is not None and d.implicit is None]

    @property
    def unplaced_controllers(self) -> list[DomainController]:
        return [c for c in self.controllers if not c.placed]

    @property
    def defined(self) -> bool:
        """Every device and controller of the document has its address, and no controller index is
        left unused (what libvirt would still add by itself, a balloon say, is not the document's:
        see ``added_by_libvirt``)."""
        return not [d for d in self.unplaced if d.implicit is None] and not self.unplaced_controllers

    @property
    def added_by_libvirt(self) -> list[DomainDevice]:
        """Devices libvirt adds at define that take a PCI slot."""
        return [d for d in self.devices if d.implicit is not None and d.endpoint.cls is not None]

    def layout(self) -> Layout:
        """The part of the guest that has addresses."""
        ctrls = [c.controller for c in self.controllers if c.placed]
        if not any(c.index == 0 for c in ctrls):
            root = self.rules.bus(self.rules.root)
            ctrls.append(Controller(0, self.rules.root, None,
                                    target=(("index", 0),) if "index" in root.target else ()))
        ctrls.sort(key=lambda c: c.index)
        placed = []
        for d in self.devices:
            if d.address is not None:
                placed.append(Placed(replace(d.endpoint, pinned=d.address), d.address))
            elif d.endpoint.cls is None and d.implicit is None and d.endpoint.fixed_role is None:
                placed.append(Placed(d.endpoint, None))
        return Layout(family=self.rules.family, controllers=tuple(ctrls), placed=tuple(placed), acpi=self.acpi,
                      numa_nodes=self.numa_cells, firmware=self.firmware)

    def problem(self, headroom=(), *, right_size: bool = False, io_ports: int | None = None,
                layout: str = "qemu-guidelines") -> Problem:
        """The planning problem: keep what has an address, place the rest, reach ``headroom``."""
        endpoints = tuple(d.endpoint for d in self.devices if d.address is None and (
            d.endpoint.cls is not None or d.endpoint.fixed_role is not None) and not (
            d.implicit is not None and d.endpoint.cls is None))
        # right-sizing: an unaddressed controller the XML gave no index is the plan's to use or drop
        # (the edit reuses its element for a new controller of its model); one with an index stays
        keep = tuple(c.controller for c in self.controllers if not c.placed and (c.index_given or not right_size))
        return Problem(name=self.name, family=self.rules.family, machine=self.machine, arch=self.arch,
                       endpoints=endpoints, headroom=tuple(headroom), source=self.file, io_ports=io_ports,
                       base=self.layout(), keep=keep, layout=layout, firmware=self.firmware,
                       target=self.rules.target)


def _machine(root: etree._Element, file: str, problems: list[Finding],
             target: Target | None = None) -> tuple[RuleSet | None, str]:
    t = root.find("os/type")
    machine = t.get("machine") if t is not None else None
    if not machine:
        problems.append(Finding(file, t.sourceline if t is not None else root.sourceline, "os/type",
                                "no machine type; write <type arch='...' machine='...'>hvm</type> (q35, pc, "
                                "pseries or virt) as virt-install and virsh dumpxml do"))
        return None, ""
    rules = family_for(machine, target)
    if rules is None:
        guess = machine_suggestions(machine)
        problems.append(Finding(file, t.sourceline, "os/type@machine",
                                f"unsupported machine '{shown(machine)}'"
                                + (f"; did you mean {guess[0]!r}?" if guess else ";")
                                + " topo-solve plans the PCI topology of the q35, pc (i440fx), pseries and "
                                "virt families (s390x, microvm and other machines have none to plan)"))
        return None, machine
    why = machine_missing(rules, machine)
    if why:  # a machine type newer than the target's QEMU (a dump of a newer libvirt, say)
        problems.append(Finding(file, t.sourceline, "os/type@machine", f"{why}; write the family's alias "
                                f"('{rules.default_machine}') or a machine type of that QEMU"))
    arch = t.get("arch")
    if arch is not None and arch not in rules.arches:
        problems.append(Finding(file, t.sourceline, "os/type@arch",
                                f"machine '{shown(machine)}' is {rules.family}, which runs "
                                f"{' or '.join(rules.arches)}, not '{shown(arch)}'"))
    return rules, machine


@dataclass
class _Seen:
    """A controller or device with a PCI address, for the consistency checks."""

    who: str  # "controller 3 (pcie-root-port)", "<interface> 'net0'"
    path: str  # the element, as a finding's field path
    line: int | None  # of its <address>
    address: Address
    index: int | None = None  # a controller's own index


def _consistency(controllers: list[DomainController], seen: list[_Seen], file: str,
                 problems: list[Finding]) -> None:
    """What libvirt would refuse: reused indexes and addresses, buses nobody provides, controllers
    plugged into a bus that is not lower than their own index."""
    first_at: dict[int, int | None] = {}
    for c in controllers:
        index = c.controller.index
        if index in first_at and c.index_given:
            problems.append(Finding(file, c.line, "controller@index",
                                    f"controller index {index} is used twice (also at line {first_at[index]}); "
                                    "every PCI controller needs an index of its own: renumber one of them, and "
                                    "the bus= of the addresses behind it"))
        else:
            first_at.setdefault(index, c.line)
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


def _address(el: etree._Element, file: str, problems: list[Finding]) -> tuple[Address | None, bool]:
    """(address, malformed) of ``el``'s own PCI address.  libvirt reads an address whose domain,
    bus and slot are all 0 (``<address type='pci'/>``, say) as "give it one" (device_conf.h,
    virDeviceInfoPCIAddressIsWanted): no address yet."""
    a = el.find("address")
    if a is None or a.get("type") != "pci":
        return None, False
    address, bad = read_address(a, file, f"{el.tag}/address")
    problems.extend(bad)
    if address is not None and address.domain == 0 and address.bus == 0 and address.slot == 0:
        return None, False
    return address, bool(bad)


def _unknown_address_type(el: etree._Element, file: str, problems: list[Finding]) -> bool:
    """Whether ``el``'s <address> has a type libvirt does not know (reported): libvirt refuses it at
    define ("unknown address type"), so guessing a place for the element would hide that."""
    a = el.find("address")
    a_type = a.get("type") if a is not None else None
    if a_type is None or a_type == "pci" or a_type in NOT_PCI_ADDRESSES:
        return False
    problems.append(Finding(file, a.sourceline, f"{el.tag}/address@type",
                            f"address type '{shown(a_type)}' is not one libvirt knows; write type='pci' "
                            f"(or one of {', '.join(sorted(NOT_PCI_ADDRESSES))}), or drop the address"))
    return True


def _not_on_a_pci_bus(el: etree._Element, index: int, model: str, rule, file: str,
                      problems: list[Finding]) -> bool:
    """Whether a PCI controller that plugs into a bus has an address of a type other than PCI (reported).

    Every PCI controller but a root bus is a PCI device of its parent bus.  libvirt refuses 'ccw' at
    define on every machine but s390-ccw (qemu_validate.c, qemuValidateDomainDeviceDefAddress: "cannot
    use CCW address type for device"), and defines a root port with an 'isa', 'virtio-mmio', 'usb' or
    'drive' address unchanged, but QEMU then does not start the guest (both measured with libvirt 9.0 +
    QEMU 7.2, tests/test_libvirt_known_faults.py).  Reading it as "no address yet" would plan a PCI
    address over the user's element."""
    a = el.find("address")
    a_type = a.get("type") if a is not None else None
    if rule.root or a_type is None or a_type == "pci":
        return False
    problems.append(Finding(file, a.sourceline, "controller/address@type",
                            f"controller {index} ({shown(model)}) has an address of type '{shown(a_type)}', but a "
                            f"PCI controller plugs into a PCI bus (libvirt refuses 'ccw' outside s390; with any other "
                            f"type QEMU does not start the guest): write type='pci' with its bus, "
                            f"slot and function, or drop the <address> and the plan places the controller"))
    return True


def _node_refused(el: etree._Element, index: int, model: str, rule, rules: RuleSet, target: dict[str, int],
                  cells: int, file: str, problems: list[Finding]) -> bool:
    """Whether a controller the plan is to place names a NUMA node libvirt refuses (reported).

    libvirt takes ``<target><node>`` only on the rows whose ``target`` names it (an expander bus, a
    pSeries PHB other than the default: qemu_validate.c, "Option 'numaNode' is not valid for PCI
    controller"), and only a node of ``<cpu><numa>`` ("configured for a NUMA node ... not present in
    the domain's <cpu><numa> array").  A controller with an address is the existing guest's and the
    verifier lists what it breaks (audit; extend refuses it); one without would be placed by the
    plan, which must not write out an element libvirt refuses."""
    if "node" not in target:
        return False
    node_el = el.find("target/node")
    line = node_el.sourceline if node_el is not None else el.sourceline
    if "node" not in rule.target:
        takers = sorted({b.model for b in rules.buses.values() if "node" in b.target})
        problems.append(Finding(file, line, "controller/target/node",
                                f"controller {index} ({shown(model)}) cannot be tied to a NUMA node: libvirt takes "
                                f"<node> only on {', '.join(takers) or 'no controller of this machine'}; drop the "
                                f"<node> element (a device is local to a node behind that node's expander)"))
        return True
    if target["node"] >= cells:
        problems.append(Finding(file, line, "controller/target/node",
                                f"controller {index} ({shown(model)}) names NUMA node {target['node']}, but "
                                f"<cpu><numa> has {cells} cell(s); name a cell's id, or add the cell"))
        return True
    return False


def _index(el: etree._Element, file: str, problems: list[Finding]) -> int | None:
    raw = el.get("index")
    if raw is None:
        return None
    try:
        value = number(raw) if raw.strip().startswith("0x") else int(raw.strip())
        if not 0 <= value <= 255:
            raise ValueError
        return value
    except ValueError:
        problems.append(Finding(file, el.sourceline, "controller@index",
                                f"index='{shown(raw)}' is not a number from 0 to 255; write the index in decimal, "
                                "or leave it out and libvirt numbers the controller"))
        return -1


def _target(el: etree._Element, file: str, problems: list[Finding]) -> tuple[tuple[tuple[str, int], ...], bool]:
    tgt = el.find("target")
    target = []
    for attr in ("chassisNr", "chassis", "port", "busNr", "index"):
        raw = tgt.get(attr) if tgt is not None else None
        if raw is None:
            continue
        try:
            target.append((attr, number(raw)))
        except ValueError:
            problems.append(Finding(file, tgt.sourceline, f"controller/target@{attr}",
                                    f"{attr}='{shown(raw)}' is not a number; write it as virsh dumpxml "
                                    "does, e.g. port='0x10' or chassis='1'"))
    node = tgt.find("node") if tgt is not None else None
    if node is not None:
        try:
            target.append(("node", number((node.text or "").strip())))
        except ValueError:
            problems.append(Finding(file, node.sourceline, "controller/target/node",
                                    f"<node>{shown(node.text or '')}</node> is not a number; write the "
                                    "id of a <cell> of <cpu><numa>"))
    return tuple(target), not (tgt is not None and tgt.get("hotplug") == "off")


def read_domain(data: str | bytes, file: str = "<domain>", target: Target | None = None) -> Domain:
    """Read a domain XML, defined or not (see the module docstring), for the libvirt and QEMU of
    ``target`` (None: the newest the tables know).

    Raise :class:`SpecError` with one finding per problem, all at once."""
    doc = parse_document(data, file)
    root = doc.root
    if root.tag != "domain":
        raise SpecError([Finding(file, root.sourceline, "", f"the root element is <{shown(str(root.tag))}>, "
                                 "not <domain>: this is not a libvirt domain XML; give it what "
                                 "'virsh dumpxml GUEST' or 'virt-install --print-xml' prints")])
    problems: list[Finding] = []
    rules, machine = _machine(root, file, problems, target)
    devices_el = root.find("devices")
    if rules is None:
        # without a family the devices cannot be read, but their addresses can be checked
        for el in (devices_el if devices_el is not None else []):
            if isinstance(el.tag, str):
                _address(el, file, problems)
        raise SpecError(sorted(problems, key=lambda p: p.line or 0))
    name_el = root.find("name")
    name = (name_el.text or "").strip() if name_el is not None and name_el.text else ""
    arch = (root.find("os/type").get("arch") or rules.arches[0])
    acpi = root.find("features/acpi") is not None
    firmware = firmware_of(root, rules)
    numa_cells = len(root.findall("cpu/numa/cell"))

    controllers: list[DomainController] = []
    devices: list[DomainDevice] = []
    seen: list[_Seen] = []
    seen_alias: dict[str, int | None] = {}
    counters: dict[str, int] = {}
    usb_sets: dict[int, DomainDevice] = {}  # USB2 companion sets by controller index
    children = [el for el in (devices_el if devices_el is not None else []) if isinstance(el.tag, str)]

    # PCI controllers first: an index left out is the lowest one no other PCI controller uses, in
    # document order (what libvirt gives it)
    given = {i for el in children if el.tag == "controller" and el.get("type") == "pci"
             for i in [_index(el, file, [])] if i is not None and i >= 0}
    pci_els = [el for el in children if el.tag == "controller" and el.get("type") == "pci"]
    unindexed = [el for el in pci_els if el.get("index") is None]
    root_el = next((el for el in unindexed if el.get("model") == rules.root), None)
    if 0 not in given and root_el is not None:
        # libvirt numbers in document order, so a controller before the root would take index 0 and
        # be refused; say it once, then read the rest as if the root came first
        early = unindexed[:unindexed.index(root_el)]
        if early:
            problems.append(Finding(file, early[0].sourceline, "controller@model",
                                    f"this controller gets index 0, which must be the root bus (model="
                                    f"'{rules.root}'): libvirt numbers a controller without an index with the "
                                    "lowest free one, in document order, so put the "
                                    f"<controller type='pci' model='{rules.root}'/> line first"))
        given.add(0)
    next_free = 0
    for el in children:
        if el.tag != "controller" or el.get("type") != "pci":
            continue
        index = _index(el, file, problems)
        if index == -1:
            continue
        model = el.get("model")
        if model is None:
            problems.append(Finding(file, el.sourceline, "controller@model",
                                    "a PCI controller needs a model (libvirt's schema requires it): e.g. "
                                    f"model='{rules.root}' or model='{rules.addable[0].model}'"))
            continue
        index_given = index is not None
        if index is None and el is root_el and 0 not in {c.controller.index for c in controllers}:
            index = 0
        if index is None:
            # libvirt gives it the lowest index no controller of the document has, in document order
            while next_free in given:
                next_free += 1
            index = next_free
            given.add(index)
        rule = rules.rule_for(model, index) if index <= 255 else None
        if rule is None:
            known = sorted({b.model for b in rules.buses.values()})
            if index == 0:
                what = (f"this controller gets index 0, which must be the root bus (model='{rules.root}'): "
                        f"libvirt numbers a controller without an index with the lowest free one, so put "
                        f"<controller type='pci' model='{rules.root}'/> first")
            elif index > 255:
                what = "more than 256 PCI controllers: libvirt numbers them 0-255"
            else:
                what = (f"'{shown(model)}' is not a PCI controller model of {rules.family} guests; known: "
                        f"{', '.join(known)}")
            problems.append(Finding(file, el.sourceline, "controller@model", what))
            continue
        if _unknown_address_type(el, file, problems) or _not_on_a_pci_bus(el, index, model, rule, file, problems):
            continue
        address, malformed = _address(el, file, problems)
        target, hotplug = _target(el, file, problems)
        if address is None and not rule.root and _node_refused(el, index, model, rule, rules, dict(target),
                                                                numa_cells, file, problems):
            continue
        c = DomainController(el, Controller(index=index, model=model, address=address, target=target,
                                            hotplug=hotplug), index_given, el.sourceline, rule.root)
        controllers.append(c)
        if address is not None:
            seen.append(_Seen(f"controller {index} ({shown(model)})", "controller",
                              el.find("address").sourceline, address, index))

    # no root bus in the XML: libvirt adds it (index 0, qemuDomainDefAddDefaultDevices)
    used = {c.controller.index for c in controllers}
    if 0 not in used:
        root_rule = rules.bus(rules.root)
        controllers.insert(0, DomainController(None, Controller(0, rules.root, None, target=(
            ("index", 0),) if "index" in root_rule.target else ()), True, None, True))
    # an index nobody has below the highest in use: libvirt adds a controller of the family's gap model
    for index in range(1, max(used | {0})):
        if index not in used:
            rule = rules.rule_for(rules.gap_model, index)
            controllers.append(DomainController(None, Controller(index, rules.gap_model, None,
                               target=(("index", index),) if "index" in rule.target else ()),
                               True, None, rule.root))

    roles_taken: set[str] = set()
    indexes = _controller_indexes(children)
    for el in children:
        if el.tag == "controller" and el.get("type") == "pci":
            continue
        found = classify(el, rules)
        address, malformed = _address(el, file, problems)
        if _unknown_address_type(el, file, problems):
            continue
        if found.missing:  # the target's libvirt or QEMU lacks it (or its default is not known there)
            problems.append(Finding(file, el.sourceline, el.tag, found.missing))
            continue
        if found.unknown:
            problems.append(Finding(file, el.sourceline, el.tag,
                                    f"{found.unknown}: topo-solve does not know whether this model takes a PCI "
                                    "slot, so it cannot plan around it; use a model it knows (topo-solve "
                                    "models lists them) or report the model"))
            continue
        kind = found.kind
        if kind is None or malformed:
            continue  # reported above, or not a PCI device (ps2 input, graphics, model='none' ...)
        if kind.families is not None and rules.family not in kind.families:
            problems.append(Finding(file, el.sourceline, el.tag, f"{kind.name} does not exist on "
                                    f"{rules.family} guests (QEMU or libvirt has no such device there)"))
            continue
        dev = _name(el, found.tag, counters, seen_alias, file, problems, indexes.get(id(el)))
        cls = kind.cls
        if kind.companions is not None:
            index = indexes[id(el)]
            member = usb_sets.get(index)
            if member is not None:
                member.members.append((el, kind.function))
                if (member.address is None) != (address is None):
                    problems.append(Finding(file, el.sourceline, el.tag, f"USB controller index {index} has an "
                                            "address on some of its companion functions and none on others; "
                                            "give all of them one (same slot) or none"))
                if address is not None:
                    seen.append(_Seen(f"<{el.tag}> '{shown(dev)}'", el.tag, el.find("address").sourceline,
                                      address))
                    devices.append(DomainDevice(Endpoint(name=dev, kind=kind.name, cls=cls,
                                                         pinned=address, line=el.sourceline), [(el, kind.function)],
                                                address))
                continue
        role = _role(kind, rules, roles_taken, address)
        fixed = rules.fixed.get(role) if role else None
        if fixed is not None and fixed.address.slot in {s for s, _ in rules.reserved_root_slots}:
            cls = None  # a function of a chipset slot (PIIX3 USB and IDE, ICH9 SATA): takes no slot of its own
        if fixed is not None and fixed.insist:
            # libvirt reserves the chipset's address for it whatever else the XML put there
            # (qemuDomainValidateDevicePCISlotsPIIX3/Q35): a device written at that address collides
            seen.append(_Seen(f"<{el.tag}> '{shown(dev)}' (always at the chipset's address)", el.tag,
                              el.sourceline, fixed.address))
        endpoint = Endpoint(name=dev, kind=kind.name, cls=cls, pinned=address, fixed_role=role,
                            line=el.sourceline, integrated=kind.integrated, root_ok=not kind.detach,
                            functions=(kind.function,) if kind.function is not None else (0,))
        device = DomainDevice(endpoint, [(el, kind.function or 0)], address)
        if kind.companions is not None:
            usb_sets[indexes[id(el)]] = device
        if kind.name in ("hostdev", "hostdev-net"):
            src = el.find("source/address")
            if src is not None:
                host, bad = read_address(src, file, f"{el.tag}/source/address")
                problems.extend(bad)
                device.endpoint = replace(endpoint, host=str(host) if host else None)
        devices.append(device)
        if address is not None:
            seen.append(_Seen(f"<{el.tag}> '{shown(dev)}'", el.tag, el.find("address").sourceline, address))
    for d in devices:  # a USB2 set takes the functions of all its members, in one slot
        if len(d.members) > 1 and d.address is None:
            d.endpoint = replace(d.endpoint, functions=tuple(sorted(f for _, f in d.members)))
    _consistency(controllers, seen, file, problems)
    if problems:
        raise SpecError(sorted(problems, key=lambda p: p.line or 0))
    added, unknown = _added_at_define(children, rules, roles_taken, arch)
    if unknown:
        raise SpecError([Finding(file, devices_el.sourceline if devices_el is not None else root.sourceline,
                                 "devices", why) for why in unknown])
    devices += added
    return Domain(document=doc, rules=rules, name=name or _stem(file), machine=machine, arch=arch, acpi=acpi,
                  firmware=firmware, numa_cells=numa_cells, controllers=controllers, devices=devices)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _stem(file: str) -> str:
    from pathlib import Path

    return Path(file).stem if file not in ("-", "<domain>") else "guest"


def _controller_indexes(children: list[etree._Element]) -> dict[int, int]:
    """The index libvirt gives each non-PCI controller (by ``id()`` of its element): its own, else
    the lowest its type does not use yet, in document order; a USB2 companion (ich9-ehci1,
    ich9-uhci1-3) right after another USB2 controller joins that one's index unless its model is
    there already (domain_postparse.c, virDomainDefPostParseControllers... FindUnusedIndex)."""
    used: dict[str, set[int]] = {}
    for el in children:
        if el.tag == "controller" and el.get("type") != "pci":
            i = _int(el.get("index"), -1)
            if i >= 0:
                used.setdefault(el.get("type", ""), set()).add(i)
    out: dict[int, int] = {}
    model_at: dict[tuple[int, str], bool] = {}  # (usb index, model) taken
    prev_usb: etree._Element | None = None
    for el in children:
        if el.tag != "controller" or el.get("type") == "pci":
            continue
        kind = el.get("type", "")
        i = _int(el.get("index"), -1)
        if i < 0:
            taken = used.setdefault(kind, set())
            if (kind == "usb" and _usb2(el) and prev_usb is not None and _usb2(prev_usb)
                    and not model_at.get((out[id(prev_usb)], el.get("model", "")))):
                i = out[id(prev_usb)]
            else:
                i = min(n for n in range(len(taken) + 1) if n not in taken)
            taken.add(i)
        out[id(el)] = i
        if kind == "usb":
            prev_usb = el
            model_at[(i, el.get("model", ""))] = True
    return out


# the models of the device rows that form USB2 companion sets (ich9-ehci1 with ich9-uhci1-3)
_USB2 = frozenset(m for row in KINDS.values() if row.companions is not None
                  for path, values in row.match if path == "@model" for m in values)


def _usb2(el: etree._Element) -> bool:
    return el.get("model", "") in _USB2


def _name(el: etree._Element, tag: str, counters: dict[str, int], seen_alias: dict[str, int | None], file: str,
          problems: list[Finding], index: int | None = None) -> str:
    """The device's alias (without libvirt's ``ua-`` prefix), or a name the way the XML reads."""
    alias = el.find("alias")
    raw = alias.get("name", "") if alias is not None else ""
    if raw:
        name = raw[3:] if raw.startswith("ua-") else raw
        if name not in seen_alias:
            seen_alias[name] = el.sourceline
            return name
        if raw.startswith("ua-"):
            problems.append(Finding(file, el.sourceline, f"{el.tag}/alias",
                                    f"alias '{shown(name)}' is used twice (also at line {seen_alias[name]}); "
                                    "libvirt refuses two user aliases alike: give each device its own"))
            return name
        # libvirt's own aliases repeat in live XML (the companions of a USB2 set share 'usb')
        n = 2
        while f"{name}#{n}" in seen_alias:
            n += 1
        seen_alias[f"{name}#{n}"] = el.sourceline
        return f"{name}#{n}"
    what = f"{tag} controller" if el.tag == "controller" else str(el.tag)
    counters[what] = counters.get(what, 0) + 1
    return f"{what} {index if index is not None else el.get('index', '0')}" if el.tag == "controller" \
        else f"{what} {counters[what]}"


def _role(kind: DeviceKind, rules: RuleSet, taken: set[str], address: Address | None) -> str | None:
    """The chipset role (fixed or preferred address) an element takes: the row's own, the first
    video card's primary slot, the first ich9 sound's 00:1b.0, the USB2 sets' 00:1d and 00:1a."""
    candidates: list[str] = []
    if kind.role:
        candidates = [kind.role]
    elif kind.video:
        candidates = ["primary-video"]
    elif kind.name == "ich9-hda":
        candidates = ["ich9-sound"]
    elif kind.companions is not None:
        candidates = ["usb2-1", "usb2-2"]
    for role in candidates:
        if role in taken:
            continue
        taken.add(role)  # the first of its kind takes the role, addressed or not
        return role if role in rules.fixed and address is None else None
    return None


# Words in a <loader> path that name a UEFI build (Debian's OVMF/AAVMF, Fedora's edk2, QEMU_EFI)
_EFI_LOADER = re.compile(r"ovmf|aavmf|edk2|qemu_efi|uefi", re.IGNORECASE)


def firmware_of(root: etree._Element, rules: RuleSet) -> str | None:
    """The firmware the domain boots: <os firmware='...'> (libvirt 5.2's autoselection), else a
    <loader> whose path names a UEFI build (a pflash loader is UEFI too), else the family's default."""
    os_ = root.find("os")
    named = os_.get("firmware") if os_ is not None else None
    if named in FIRMWARE_KINDS:
        return named
    loader = os_.find("loader") if os_ is not None else None
    if loader is not None:
        if loader.get("type") == "pflash" or _EFI_LOADER.search(loader.text or ""):
            return "efi"
        if "bios" in rules.firmware_kinds:
            return "bios"
    return rules.firmware_default


def _present(by_tag: dict[str, list[etree._Element]], tag: str, path: str, value: str) -> bool:
    from .classify import _value

    for el in by_tag.get(tag, ()):
        if not path:
            return True
        v = _value(el, path)
        if v is not None and (value == "*" or v == value):
            return True
    return False


def _by_tag(children: list[etree._Element]) -> dict[str, list[etree._Element]]:
    """The children by tag and by pseudo tag (a <controller> by its type as well)."""
    from .classify import pseudo_tag

    out: dict[str, list[etree._Element]] = {}
    for el in children:
        out.setdefault(str(el.tag), []).append(el)
        tag = pseudo_tag(el)
        if tag != el.tag:
            out.setdefault(tag, []).append(el)
    return out


def _added_at_define(children: list[etree._Element], rules: RuleSet, roles_taken: set[str],
                     arch: str) -> tuple[list[DomainDevice], list[str]]:
    """The devices libvirt adds at define (``RuleSet.added_at_define``), as devices without an element;
    and, where the target's version leaves it open whether libvirt adds one, what to write instead."""
    out, unknown = [], []
    by_tag = _by_tag(children)
    for imp in rules.added_at_define:
        if imp.arches is not None and arch not in imp.arches:
            continue
        if _present(by_tag, *(imp.unless_match or (imp.unless, "", ""))):
            continue
        if imp.needs and not any(_present(by_tag, tag, path, value) for tag, path, value in imp.needs):
            continue
        kind = rules.device(imp.kind)
        if imp.unknown:
            unknown.append(f"{imp.unknown}; write that device into the XML (or switch it off with model='none')")
            continue
        role = _role(kind, rules, roles_taken, None)
        cls = kind.cls
        fixed = rules.fixed.get(role) if role else None
        if fixed is not None and fixed.address.slot in {s for s, _ in rules.reserved_root_slots}:
            cls = None
        endpoint = Endpoint(name=f"{kind.element} (libvirt adds it)", kind=kind.name, cls=cls, fixed_role=role,
                            implicit=True, root_ok=not kind.detach)
        out.append(DomainDevice(endpoint, [], None, implicit=imp))
    return out, unknown


def read_layout(data: str | bytes, file: str = "<domain>", target: Target | None = None) -> tuple[Layout, RuleSet]:
    """The layout of a guest libvirt has defined (``virsh dumpxml``): every device has its address.

    A document that was never defined is one finding saying so (``topo-solve plan`` places what
    it lacks, and ``audit`` predicts it)."""
    domain = read_domain(data, file, target)
    if not domain.defined:
        devices = len([d for d in domain.unplaced if d.implicit is None])
        ctrls = len([c for c in domain.unplaced_controllers if not c.implicit])
        gaps = len([c for c in domain.unplaced_controllers if c.implicit])
        what = [f"{devices} device(s) and {ctrls} PCI controller(s) have no PCI address yet"] if devices or ctrls \
            else []
        what += [f"{gaps} PCI controller index(es) below the highest are unused (libvirt adds a controller for "
                 "each)"] if gaps else []
        raise SpecError([Finding(file, None, "", f"the guest was never defined: {'; '.join(what)}; "
                                 "`topo-solve plan FILE` places them, or define it first (virsh define, then "
                                 "virsh dumpxml)")])
    return domain.layout(), domain.rules
