"""Step 1 of the prediction: the guest as libvirt holds it when it starts assigning PCI addresses.

``virsh define`` parses the XML into arrays, one per kind of device, and
post-parses it before any address is assigned.  What matters for PCI
addresses, and what this module reproduces:

* the controller list, in libvirt's order and with libvirt's indexes
  (:mod:`topo_solve.domain.indexes`);
* what post-parse appends: the default USB controller, SATA on q35, the root
  bus, the balloon (qemuDomainDefAddDefaultDevices), the controllers disks and
  channels need, the video a ``<graphics>`` needs (virDomainDefAddImplicitDevices):
  the ``RuleSet.added_at_define`` rows, as :func:`~topo_solve.domain.read.read_domain`
  lists them;
* the arrays' own orders: virtio disks sorted by name (virDomainDiskInsert),
  ``<interface type='hostdev'>`` first among host devices, a ``primary='yes'``
  video first;
* what each device plugs in as (qemuDomainDeviceCalculatePCIConnectFlags: the
  device table's class, mapped by the family; a host device by what the host
  says of it), and its placement category (qemuDomainAssignDevicePCISlots);
* the virtio-mmio choice of ARM and RISC-V virt guests, and the pSeries
  isolation groups of host devices (qemuDomainSetupIsolationGroups).

Pure: no I/O.  What libvirt reads from the host (is an assigned device PCI
Express, its IOMMU group) comes in as :class:`HostFacts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from lxml import etree

from ...model import Address, Connect, EndpointClass
from ...rules import BusRule, DeviceKind, Implicit, RuleSet
from ...rules.devices import KINDS
from ..classify import classify
from ..indexes import Ctl, controller_list
from ..parse import read_address
from ..read import Domain, DomainController, DomainDevice

__all__ = ["HostFacts", "Item", "Definition", "definition", "PCI_CATEGORY", "LAST_CATEGORY"]

PCI_CATEGORY = 1  # PCI controllers come first (qemuDomainAssignDevicePCISlots)
# libvirt 9.0 assigns categories 1-17 (PCI controllers ... virtio-pmem/mem); crypto (18, 9.1), pvpanic-pci
# (19, 9.1) and pstore (20, 10.6) came later: 9.0 drops <crypto> at parse and refuses model='pvpanic'
LAST_CATEGORY = 17

# The element names of <controller type=...> the device table files under their type.
CONTROLLER_TYPES = frozenset({"usb", "scsi", "sata", "ide", "virtio-serial", "fdc", "ccid", "xenbus", "isa",
                              "pci"})


@dataclass(frozen=True)
class HostFacts:
    """What libvirt reads from the host's sysfs when it places an assigned PCI device.

    ``express``: host address (``0000:03:00.0``) -> the device has a PCI Express capability.  libvirt
    treats a device it cannot find on the host as Express (qemuDomainDeviceCalculatePCIConnectFlags:
    "the overwhelming majority of assignable host devices are PCIe").  ``iommu_group``: host address ->
    its IOMMU group; a device without one is not isolated (qemuDomainFillDeviceIsolationGroup)."""

    express: Mapping[str, bool] = field(default_factory=dict)
    iommu_group: Mapping[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Item:
    """One device of libvirt's definition that may take a PCI address (or a controller that orders them).

    Mutable on purpose: the two assignment passes write addresses into it as libvirt writes them into
    its definition (:mod:`.passes`)."""

    tag: str  # the element as libvirt writes it: controller, interface, disk, memballoon, video ...
    kind: DeviceKind | None  # device-table row; None for PCI controllers and elements without a PCI part
    element: etree._Element | None  # None: libvirt adds it at define
    category: int  # qemuDomainAssignDevicePCISlots order; 0: never placed
    connect: Connect | None  # what it plugs in as; None: no PCI address (or one of another type)
    address: Address | None = None  # an address it has: written in the XML, or by a pass
    untyped: bool = True  # no <address> element at all (libvirt's address type "none")
    aggregate: bool = False  # shares a slot with its own kind as functions (pcie-root-port)
    integrated: bool = False  # root bus only (virtio-iommu)
    group: int = 0  # isolation group (pSeries host devices: IOMMU group + 1)
    implicit: Implicit | None = None
    source: DomainDevice | DomainController | None = None
    # controllers
    ctype: str | None = None  # <controller type=...>
    index: int | None = None
    model: str | None = None
    master: bool = True  # not a USB2 companion with a <master> element
    rule: BusRule | None = None  # PCI controllers: the family's row
    target: dict[str, int] = field(default_factory=dict)
    hotplug: bool = True
    added: str | None = None  # PCI controllers libvirt adds: "root", "bus"
    given: Address | None = None  # the address the XML gave

    def __post_init__(self) -> None:
        self.given = self.address

    @property
    def function(self) -> int | None:
        """The function a USB2 companion takes in its set's slot."""
        return self.kind.function if self.kind is not None and self.kind.companions else None

    def __repr__(self) -> str:  # for test failures
        what = f"{self.ctype} {self.index} {self.model}" if self.ctype else (self.kind.name if self.kind else "?")
        return f"<{self.tag} {what} at {self.address}>"


@dataclass
class Definition:
    """libvirt's definition, as far as PCI addresses are concerned."""

    domain: Domain
    rules: RuleSet
    controllers: list[Item]  # def->controllers, in libvirt's order (every type)
    categories: dict[int, list[Item]]  # placement category -> its devices, in libvirt's order
    iterate: list[Item]  # every item, in virDomainDeviceInfoIterate order (how existing addresses are collected)
    max_index: int  # the highest PCI controller index before assignment
    videos: list[Item] = field(default_factory=list)  # def->videos: every <video>, the primary first

    @property
    def pci_controllers(self) -> list[Item]:
        return [c for c in self.controllers if c.ctype == "pci"]


# -- small readers -------------------------------------------------------------------------------------

def _own_address(el: etree._Element) -> tuple[Address | None, bool]:
    """(address, untyped): the element's PCI address, None when libvirt would assign one (no address, or
    domain, bus and slot all 0: virDeviceInfoPCIAddressIsWanted); untyped when it has no <address> at all."""
    a = el.find("address")
    if a is None:
        return None, True
    if a.get("type") != "pci":
        return None, False
    address, _ = read_address(a, "", "")  # read_domain refused malformed ones already
    if address is None or (address.domain == 0 and address.bus == 0 and address.slot == 0):
        return None, False
    return address, False


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.strip(), 0) if raw.strip().lower().startswith("0x") else int(raw.strip())
    except ValueError:
        return None


def _disk_index(name: str) -> int:
    """libvirt's virDiskNameToIndex: vda 0, vdz 25, vdaa 26 (the letters after the bus prefix)."""
    m = re.match(r"^(?:fd|hd|vd|sd|xvd|ubd)([a-z]+)", name or "")
    if not m:
        return -1
    n = 0
    for ch in m.group(1):
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


# -- building it --------------------------------------------------------------------------------------------

def definition(domain: Domain, host: HostFacts | None = None) -> Definition:
    """libvirt's definition of ``domain`` after parse and post-parse (see the module docstring)."""
    rules = domain.rules
    host = host or HostFacts()
    children = [el for el in (domain.document.root.find("devices") if domain.document.root.find("devices")
                              is not None else []) if isinstance(el.tag, str)]
    by_element: dict[etree._Element, DomainDevice] = {}
    for d in domain.devices:
        for el, _ in d.members:
            by_element.setdefault(el, d)
    pci_by_element = {c.element: c for c in domain.controllers}

    # libvirt primes unaddressed virtio devices for virtio-mmio when the XML already has one there
    mmio = rules.virtio_mmio and any(el.find("address") is not None and el.find("address").get("type") ==
                                     "virtio-mmio" for el in children)
    isolating = bool(rules.isolated)  # qemuDomainSetupIsolationGroups: only pSeries isolates

    def connect_of(kind: DeviceKind, el: etree._Element | None, untyped: bool, dd: DomainDevice | None
                   ) -> Connect | None:
        if kind.cls is None or kind.category > LAST_CATEGORY:
            return None
        if mmio and kind.mmio and untyped:
            return None  # a virtio-mmio address, not a PCI one
        if kind.cls == EndpointClass.HOSTDEV and kind.name in ("hostdev", "hostdev-net"):
            pcie = rules.connect_of(EndpointClass.PCIE)
            host_address = dd.endpoint.host if dd is not None else None
            if pcie != rules.connect_of(EndpointClass.PCI) and host_address is not None \
                    and not host.express.get(host_address, True):
                return rules.connect_of(EndpointClass.PCI)  # conventional PCI on the host
            return pcie
        return rules.connect_of(kind.cls)

    def group_of(kind: DeviceKind | None, dd: DomainDevice | None) -> int:
        if not isolating or kind is None or kind.name not in ("hostdev", "hostdev-net") or dd is None:
            return 0
        g = host.iommu_group.get(dd.endpoint.host or "")
        return 0 if g is None else g + 1  # IOMMU group + 1: group 0 is the emulated devices'

    def item(el: etree._Element, tag: str) -> Item:
        dd = by_element.get(el)
        kind = classify(el, rules).kind  # None: takes no PCI address (model='none', a ps2 input, virtio-mmio)
        address, untyped = _own_address(el)
        if kind is None:
            return Item(tag, None, el, 0, None, address, untyped)
        return Item(tag, kind, el, kind.category, connect_of(kind, el, untyped, dd), address, untyped,
                    integrated=kind.integrated, group=group_of(kind, dd), source=dd)

    # controllers: in libvirt's list order, then numbered
    controllers: list[Item] = []
    for el in children:
        if el.tag != "controller":
            continue
        ctype = el.get("type", "")
        if ctype == "pci":
            dc = pci_by_element.get(el)
            if dc is None:
                continue  # refused by the reader
            rule = rules.rule_for(dc.controller.model, dc.controller.index)
            it = Item("controller", None, el, PCI_CATEGORY, rule.connect, dc.controller.address,
                      _own_address(el)[1], aggregate=rule.packs > 1, ctype="pci",
                      index=dc.controller.index if dc.index_given else None, model=dc.controller.model, rule=rule,
                      target=dict(dc.controller.target), hotplug=dc.controller.hotplug, source=dc)
        else:
            it = item(el, "controller")
            it.ctype, it.index = ctype, _int(el.get("index"))
            it.model = it.kind.xml_model if it.kind is not None else el.get("model")
            it.master = el.find("master") is None
        controllers.append(it)
    ordered = controller_list(Ctl(it, it.ctype, it.index, it.element.get("model"), it.master)
                              for it in controllers)
    controllers = [c.ref for c in ordered]
    for c in ordered:
        c.ref.index = c.index

    # what post-parse adds: the family's rows, as the reader found them missing
    implicit: dict[str, list[Item]] = {}
    for dd in domain.devices:
        if dd.implicit is None:
            continue
        kind = KINDS[dd.endpoint.kind]
        it = Item(kind.element if kind.element not in CONTROLLER_TYPES else "controller", kind, None,
                  kind.category, connect_of(kind, None, True, dd), implicit=dd.implicit, source=dd,
                  integrated=kind.integrated)
        if kind.element in CONTROLLER_TYPES:
            it.ctype, it.index, it.model = kind.element, 0, kind.xml_model
            controllers.append(it)  # virDomainDefAddController appends
        else:
            implicit.setdefault(kind.element, []).append(it)
    if not any(c.ctype == "pci" and c.index == 0 for c in controllers):
        root = rules.bus(rules.root)
        controllers.append(Item("controller", None, None, PCI_CATEGORY, None, ctype="pci", index=0,
                                model=root.model, rule=root, added="root"))
    max_index = max(c.index for c in controllers if c.ctype == "pci")

    # the device arrays, in libvirt's order
    arrays: dict[str, list[Item]] = {}
    hostdev_nets: list[Item] = []
    for el in children:
        if el.tag == "controller" or el.tag not in _ARRAYS:
            continue
        it = item(el, el.tag)
        if el.tag == "interface" and it.kind is not None and it.kind.name == "hostdev-net":
            hostdev_nets.append(it)
            continue
        arrays.setdefault(el.tag, []).append(it)
    for tag, items in implicit.items():
        arrays.setdefault(tag, []).extend(items)
    disks = arrays.get("disk", [])
    arrays["disk"] = _sorted_disks(disks)
    arrays["hostdev"] = hostdev_nets + arrays.get("hostdev", [])
    videos = arrays.get("video", [])
    primary = [v for v in videos if v.element is not None and v.element.find("model") is not None
               and v.element.find("model").get("primary") == "yes"]
    if primary:
        arrays["video"] = [primary[-1]] + [v for v in videos if v is not primary[-1]]

    categories: dict[int, list[Item]] = {PCI_CATEGORY: [c for c in controllers if c.ctype == "pci"]}
    for c in controllers:
        if c.ctype != "pci" and c.kind is not None:
            categories.setdefault(c.kind.category, []).append(c)
    for tag in _ARRAYS:
        for it in arrays.get(tag, []):
            if it.kind is not None and it.kind.category:
                categories.setdefault(it.kind.category, []).append(it)

    # virDomainDeviceInfoIterate: disks, nets, sounds, hostdevs, videos, controllers, serials, inputs,
    # filesystems, watchdog, balloon, rngs, shmems, memories, iommu, vsock
    order = ("disk", "interface", "sound", "hostdev", "video", "controller", "serial", "input", "filesystem",
             "watchdog", "memballoon", "rng", "shmem", "memory", "iommu", "vsock")
    iterate: list[Item] = []
    for tag in order:
        if tag == "controller":
            iterate += controllers
        elif tag == "interface":
            iterate += [x for x in arrays.get("interface", [])] + hostdev_nets
        elif tag == "hostdev":
            iterate += [x for x in arrays.get("hostdev", []) if x not in hostdev_nets]
        else:
            iterate += arrays.get(tag, [])
    return Definition(domain, rules, controllers, categories, iterate, max_index, arrays.get("video", []))


# The arrays of libvirt's definition whose devices may take PCI addresses (controllers aside).
_ARRAYS = ("filesystem", "interface", "sound", "disk", "hostdev", "memballoon", "rng", "watchdog", "video",
           "shmem", "input", "serial", "iommu", "vsock", "memory", "crypto", "panic", "pstore")


def _sorted_disks(disks: list[Item]) -> list[Item]:
    """virDomainDiskInsert puts each disk before the first disk of its bus with a higher name index, so
    the disks of one bus are sorted by name index, in document order among equals: a stable sort."""
    def key(d: Item) -> tuple[str, int]:
        target = d.element.find("target") if d.element is not None else None
        bus = (target.get("bus") if target is not None else "") or ""
        return bus, _disk_index((target.get("dev") if target is not None else "") or "")

    return sorted(disks, key=key)
