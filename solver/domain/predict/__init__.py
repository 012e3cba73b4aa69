"""What libvirt will store after ``virsh define``: every PCI controller and every PCI address.

An independent model of libvirt's define-time address assignment (libvirt 9.0,
src/qemu/qemu_domain_address.c qemuDomainAssignPCIAddresses and
src/conf/domain_addr.c), not a reuse of the planner's placer: where the two
disagree, one of them is wrong, and the real libvirt tells which
(tests/test_libvirt_predict.py).  The steps, one module each:

1. :mod:`.definition` -- the guest as libvirt holds it after parse and
   post-parse: controller order and indexes, the devices it adds, each device's
   connect type, category, isolation group, the virtio-mmio choice;
2. :mod:`.addresses` -- the address set: buses, first fit, growth;
3. :mod:`.passes` -- the dry run that decides which controllers to add (with
   the pc/pSeries reserved slot and the one spare root port), the real pass
   (controllers first, then devices in category order), the chipset's fixed and
   preferred addresses, and the ``<target>`` values libvirt fills in.

Where libvirt 11.3 differs (source: device-facts.md and libvirt-11.md; measured by
running the comparisons of tests/test_libvirt_predict.py against 11.3 + QEMU 10.0 once):

* the controllers libvirt adds for an index gap go into its list in index order, so
  they are placed before the XML's own higher-indexed ones (and, on pSeries, take
  the lower target indexes); 9.0 appends them and places them after.  The three
  gap cases differ only there; the other 75 comparable cases store the same map;
* it also places ``<crypto>`` (category 18, conventional PCI; 9.0 drops the
  element), ``<panic model='pvpanic'>`` on the root bus and pstore acpi-erst
  (9.0 refuses both), and adds an iTCO watchdog on q35 (no PCI address).

Pure and deterministic: no I/O; what libvirt reads from the host about assigned
devices comes in as :class:`HostFacts` (:func:`topo_solve.domain.host.host_facts`
reads it from this machine's sysfs).  Linear in the number of devices except the
first-fit scans, which are bounded by the 32 slots of the buses before a free one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lxml import etree

from ...errors import Finding, SpecError
from ...model import Address, Controller, Layout, Placed
from ...rules import Implicit
from ..read import Domain, DomainDevice
from .addresses import DefineError
from .definition import HostFacts, Item, definition
from .passes import assign

__all__ = ["predict", "prediction", "Prediction", "PredictedController", "PredictedDevice", "HostFacts",
           "DefineError"]


@dataclass(frozen=True)
class PredictedController:
    """A PCI controller as libvirt stores it."""

    index: int
    model: str
    address: Address | None  # None: a root bus
    target: tuple[tuple[str, int], ...]  # chassisNr, chassis, port, busNr, index (PHB), node: in XML order
    element: etree._Element | None  # None: libvirt adds it
    added: str | None = None  # why libvirt adds it: "root" (the root bus), "bus" (a bus a device or gap needed)

    def __str__(self) -> str:
        at = f" at {self.address}" if self.address is not None else ""
        return f"{self.model} index={self.index}{at}"


@dataclass(frozen=True)
class PredictedDevice:
    """A device (or non-PCI controller) with the PCI address libvirt stores for it."""

    tag: str  # the element: controller, interface, disk, memballoon, video ...
    kind: str  # device-table row
    address: Address
    element: etree._Element | None  # None: libvirt adds it
    ctype: str | None = None  # <controller type=...>
    index: int | None = None  # a controller's index
    implicit: Implicit | None = None
    given: bool = False  # the XML gave this address

    def __str__(self) -> str:
        what = f"controller type={self.ctype} index={self.index} ({self.kind})" if self.ctype else \
            f"{self.tag} ({self.kind})"
        return f"{what} at {self.address}"


@dataclass(frozen=True)
class Prediction:
    """What ``virsh define`` of a domain XML stores, as far as PCI goes."""

    domain: Domain
    controllers: tuple[PredictedController, ...]  # by index
    devices: tuple[PredictedDevice, ...]  # in libvirt's placement order
    layout: Layout

    @property
    def added(self) -> tuple[PredictedController, ...]:
        """The PCI controllers libvirt adds (the root bus aside)."""
        return tuple(c for c in self.controllers if c.element is None and c.added != "root")

    @property
    def filled(self) -> tuple[PredictedDevice, ...]:
        """Devices whose address libvirt gives (the XML gave none)."""
        return tuple(d for d in self.devices if not d.given)


def predict(domain: Domain, host: HostFacts | None = None) -> Layout:
    """The layout libvirt stores after ``virsh define`` of ``domain`` (see the module docstring).

    Raise :class:`SpecError` with one finding when libvirt would refuse to define it."""
    return prediction(domain, host).layout


def prediction(domain: Domain, host: HostFacts | None = None) -> Prediction:
    """:func:`predict` with every controller and device as libvirt stores it."""
    defn = definition(domain, host)
    try:
        assign(defn)
    except DefineError as exc:
        raise SpecError([Finding(domain.file, None, "", f"libvirt would refuse to define this guest: {exc}")]) \
            from None
    return _result(domain, defn.controllers, _placed_items(defn), host or HostFacts())


def _placed_items(defn) -> list[Item]:
    out: list[Item] = []
    seen: set[int] = set()
    # the chipset's functions (PIIX3 IDE and USB, q35 SATA) are among the controllers
    for it in [it for c in sorted(defn.categories) for it in defn.categories[c]] + defn.controllers:
        if it.ctype != "pci" and it.address is not None and id(it) not in seen:
            seen.add(id(it))
            out.append(it)
    return out


def _target(item: Item) -> tuple[tuple[str, int], ...]:
    order = [k for k in item.rule.target if k in item.target]
    order += [k for k in item.target if k not in order]
    return tuple((k, item.target[k]) for k in order)


def _result(domain: Domain, controllers: list[Item], items: list[Item], host: HostFacts) -> Prediction:
    pcs = sorted((c for c in controllers if c.ctype == "pci"), key=lambda c: c.index)
    predicted_controllers = tuple(
        PredictedController(c.index, c.model, c.address, _target(c), c.element, c.added) for c in pcs)
    layout_controllers = tuple(
        Controller(c.index, c.model, c.address, _target(c), hotplug=c.hotplug) for c in pcs)
    devices = []
    placed = []
    seen_names: dict[str, int] = {}
    for it in items:
        given = it.given is not None and it.address == it.given
        devices.append(PredictedDevice(it.tag, it.kind.name if it.kind else "", it.address, it.element, it.ctype,
                                       it.index, it.implicit, given))
        placed.append(Placed(_endpoint(it, given, host, seen_names), it.address))
    # elements the reader knows that take no PCI address here (virtio-mmio ones have none at all)
    layout = Layout(family=domain.rules.family, controllers=layout_controllers, placed=tuple(placed),
                    acpi=domain.acpi, numa_nodes=domain.numa_cells, firmware=domain.firmware)
    return Prediction(domain, predicted_controllers, tuple(devices), layout)


def _endpoint(it: Item, given: bool, host: HostFacts, seen: dict[str, int]):
    dd = it.source
    ep = dd.endpoint if isinstance(dd, DomainDevice) else None
    if ep is None:  # cannot happen for a placed device; keep the layout whole anyway
        from ...model import Endpoint

        ep = Endpoint(name=f"{it.tag} {it.index}", kind=it.kind.name if it.kind else "", cls=None)
    name = ep.name
    if isinstance(dd, DomainDevice) and len(dd.members) > 1:
        name = f"{ep.name} {it.model or it.kind.name}"  # a USB2 set: one entry per companion
    n = seen.get(name, 0)
    seen[name] = n + 1
    if n:
        name = f"{name}#{n + 1}"
    group = host.iommu_group.get(ep.host or "") if ep.host else None
    return replace(ep, name=name, kind=it.kind.name if it.kind else ep.kind, pinned=it.address if given else None,
                   functions=(0,), group=group if group is not None else ep.group)
