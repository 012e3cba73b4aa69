"""The hotplug itself: where in a running guest the next device goes, and its XML.

libvirt places a hotplugged device without an address on the first free slot it
finds, in bus-index order, and knows nothing of NUMA nodes: a node's reserved
port goes to whichever device comes first.  So topo-solve gives every hotplug
its address:

* the free positions are the verifier's (:func:`topo_solve.verify.verify` over
  the running guest's live XML): the slots whose bus hotplugs and takes the
  device's class, plus, for a class that needs a bus of its own (pseries host
  devices), the empty buses;
* a device for NUMA node N takes a position behind node N's expander bus or PHB;
  a device without a node never takes a node's position;
* among those, the first in libvirt's own order (lowest bus index, then slot);
* with ``--config`` as well, only a position free in the definition too;
* a NIC of a guest that names its NICs with ``<acpi index>`` gets the next index:
  one above the highest in the live XML *and* the definition, so it never takes
  the index of a NIC removed from either (CloudStack's fix for reused names took
  the same rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from .errors import Finding, NoRoom, SpecError
from .model import Address, EndpointClass, Layout
from .rules import DeviceKind, RuleSet
from .verify import Report, verify

__all__ = ["Position", "acpi_indexes", "choose", "device_kind", "free_alias", "free_anywhere", "free_positions",
           "is_nic", "landed", "model_device", "next_acpi_index", "user_device", "with_address"]

# libvirt takes <acpi index='N'/> from 1 to 16383 (domain_validate.c; KubeVirt's acpiIndex says the same)
ACPI_INDEX_MAX = 16383


@dataclass(frozen=True)
class Position:
    """A free hotplug position: a slot on a bus, or an empty bus of its own."""

    address: Address
    bus_model: str
    node: int | None


def free_positions(layout: Layout, rules: RuleSet, cls: EndpointClass, node: int | None,
                   report: Report | None = None) -> list[Position]:
    """The free positions of ``layout`` a device of ``cls`` on NUMA node ``node`` (None: no node)
    may take, in libvirt's order."""
    report = report or verify(layout, rules, strict_auto=False)
    model = {c.index: c.model for c in layout.controllers}
    if cls in rules.isolated:  # a bus of its own: the lowest slot of an empty one
        out = []
        for bus in sorted(report.empty_isolated):
            if report.node_of.get(bus) == node:
                rule = rules.rule_for(model[bus], bus)
                out.append(Position(Address(bus, rule.slots[0]), model[bus], node))
        return out
    return [Position(Address(bus, slot), model[bus], node) for (bus, slot), classes in sorted(report.positions.items())
            if cls in classes and report.node_of.get(bus) == node]


def free_anywhere(layout: Layout, rules: RuleSet, cls: EndpointClass) -> int:
    """Free positions for ``cls`` on any NUMA node or none."""
    return sum(_positions_by_node(layout, rules, cls).values())


def landed(root: etree._Element, tag: str, address: Address) -> bool:
    """Whether the domain XML ``root`` has a ``<tag>`` device at ``address``."""
    from .domain.parse import read_address

    for el in root.iterfind(f"devices/{tag}"):
        a = el.find("address")
        if a is not None and a.get("type") == "pci":
            got, bad = read_address(a, "", "")
            if not bad and got == address:
                return True
    return False


def _positions_by_node(layout: Layout, rules: RuleSet, cls: EndpointClass) -> dict[int | None, int]:
    report = verify(layout, rules, strict_auto=False)
    nodes = sorted({n for n in report.node_of.values() if n is not None})
    return {n: len(free_positions(layout, rules, cls, n, report)) for n in [None, *nodes]}


def choose(name: str, layout: Layout, rules: RuleSet, kind: DeviceKind, node: int | None, *,
           also: Layout | None = None) -> Position:
    """The position for a ``kind`` device on ``node`` in the guest ``name`` (``layout``: its live XML, or
    its definition); ``also``: a second layout where the position must be free too (the definition, for
    ``--live --config``).  :class:`NoRoom` when none is left, saying where room remains."""
    cls = kind.cls
    if node is not None:
        if layout.numa_nodes == 0:
            raise SpecError([Finding("topo-solve", None, "--node", f"{name} has no NUMA nodes (no <cpu><numa> "
                                     "cells); attach without --node")])
        if node >= layout.numa_nodes:
            raise SpecError([Finding("topo-solve", None, "--node", f"{name} has NUMA nodes 0-{layout.numa_nodes - 1}"
                                     f", not {node}")])
    mine = free_positions(layout, rules, cls, node)
    if also is not None:
        theirs = {(p.address, p.bus_model) for p in free_positions(also, rules, cls, node)}
        mine = [p for p in mine if (p.address, p.bus_model) in theirs]
    if mine:
        return mine[0]
    where = "on NUMA node %d" % node if node is not None else "outside its NUMA nodes" if layout.numa_nodes else ""
    left = {n: k for n, k in _positions_by_node(layout, rules, cls).items() if k and n != node}
    hint = ""
    if left:
        parts = [f"{k} {'outside the NUMA nodes' if n is None else f'on NUMA node {n}'}" for n, k in left.items()]
        hint = (f"; {', '.join(parts)} left for {cls} devices"
                + (" (--node N for a device local to that node)" if any(n is not None for n in left) else
                   " (for a device not tied to a node: attach it without --node)"))
    elif also is not None and free_positions(layout, rules, cls, node):
        hint = "; the live guest has room, but the definition does not (attach with --live only)"
    raise NoRoom(f"{name} has no free position left for {kind.name} ({cls}) {where}".rstrip()
                 + f": its {cls} hotplug capacity is used up{hint}")


def device_kind(model: str) -> DeviceKind:
    """The device model a ``--model`` names: one a spec may name, and one libvirt can hotplug."""
    from .rules.devices import DEVICES

    kind = DEVICES.get(model)
    if kind is None:
        import difflib

        guess = difflib.get_close_matches(model, list(DEVICES), n=1)
        raise SpecError([Finding("topo-solve", None, "--model", f"unknown device model '{model}'"
                                 + (f"; did you mean '{guess[0]}'?" if guess else "")
                                 + f" known: {', '.join(sorted(DEVICES))}")])
    if not kind.hotplug:
        raise SpecError([Finding("topo-solve", None, "--model", f"libvirt cannot hotplug a {model} "
                                 "(qemu_hotplug.c refuses it); add it to the definition and restart the guest")])
    return kind


def acpi_indexes(*roots: etree._Element) -> set[int]:
    """Every ``<acpi index>`` of the devices of these domain XMLs."""
    out = set()
    for root in roots:
        for acpi in root.iterfind("devices/*/acpi"):
            raw = acpi.get("index", "")
            if re.fullmatch(r"\d{1,5}", raw.strip()):
                out.add(int(raw))
    return out


def next_acpi_index(*roots: etree._Element) -> int | None:
    """One above the highest acpi index in any of ``roots`` (the live XML and the definition), or None
    when the guest names no device by acpi index."""
    from .windows import next_index

    seen = acpi_indexes(*roots)
    nxt = next_index(seen)
    if nxt is not None and nxt > ACPI_INDEX_MAX:
        raise SpecError([Finding("topo-solve", None, "acpi index", f"the guest's acpi indexes reach {max(seen)}; "
                                 f"libvirt takes 1-{ACPI_INDEX_MAX}: give the NIC one with --device")])
    return nxt


def _is_nic(kind: DeviceKind) -> bool:
    return kind.element == "interface"


def with_address(el: etree._Element, address: Address | None, acpi_index: int | None) -> etree._Element:
    """``el`` with its PCI address set (an existing ``<address>`` is replaced; None: left for libvirt to
    choose) and, when given and it has none, an ``<acpi index>``.  The address goes last, where libvirt
    writes it."""
    for old in el.findall("address"):
        el.remove(old)
    if acpi_index is not None and el.find("acpi") is None:
        etree.SubElement(el, "acpi", index=str(acpi_index))
    if address is None:
        return el
    etree.SubElement(el, "address", type="pci", domain=f"0x{address.domain:04x}", bus=f"0x{address.bus:02x}",
                     slot=f"0x{address.slot:02x}", function=f"0x{address.function:x}")
    return el


def model_device(kind: DeviceKind, name: str, address: Address | None, *, host: str | None, guest: str,
                 acpi_index: int | None) -> etree._Element:
    """The XML of a ``--model`` device, as a spec's plan writes it (a NIC on user-mode networking, an rng
    on /dev/urandom, a disk on a placeholder image: ``--device FILE`` gives a device of your own)."""
    from .domain.write import device_element

    el = device_element(name, kind.name, None, host=host, guest=guest)
    return with_address(el, address, acpi_index if _is_nic(kind) else None)


def user_device(data: bytes, file: str, rules: RuleSet) -> tuple[etree._Element, DeviceKind]:
    """A device XML the user wrote (``--device FILE``): its element and its model."""
    from .domain.classify import classify
    from .domain.parse import parse_document

    el = parse_document(data, file).root
    found = classify(el, rules)
    if found.unknown or found.kind is None:
        what = found.unknown or f"<{el.tag}> takes no PCI slot"
        raise SpecError([Finding(file, el.sourceline, str(el.tag), f"{what}: topo-solve attaches devices that "
                                 "take a PCI slot (a NIC, a disk, an rng, a host device...)")])
    if not found.kind.hotplug:
        raise SpecError([Finding(file, el.sourceline, str(el.tag), f"libvirt cannot hotplug a {found.kind.name} "
                                 "(qemu_hotplug.c refuses it)")])
    return el, found.kind


def is_nic(kind: DeviceKind) -> bool:
    return _is_nic(kind)


def free_alias(stem: str, *roots: etree._Element) -> str:
    """``stem-N`` with the lowest N whose user alias ``ua-stem-N`` no device of ``roots`` has."""
    taken = {a.get("name", "") for root in roots for a in root.iterfind("devices/*/alias")}
    n = 1
    while f"ua-{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"
