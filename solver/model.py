"""Frozen core types: what the solver sees and what it returns.

Nothing here parses YAML or XML.  The words follow the README's glossary:

* an **endpoint** is a PCI device that is not a controller (a NIC, a disk, an
  assigned host device);
* a **controller** is a PCI controller; each one provides one **bus**,
  addressed in libvirt XML by the controller's ``index``;
* a bus has **slots** (0x00-0x1f), a slot has **functions** (0-7);
* a **port** is a controller whose bus has exactly one slot (pcie-root-port);
* **headroom** is what the spec asks to hotplug later; **capacity** is what a
  layout can take; a **plan** is a complete layout with its capacity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Address",
    "Connect",
    "EndpointClass",
    "Endpoint",
    "Headroom",
    "NumaCell",
    "Problem",
    "Controller",
    "Layout",
    "Plan",
    "Target",
    "HOTPLUG_CLASSES",
]


class EndpointClass(StrEnum):
    """The three classes a user asks headroom for."""

    PCIE = "pcie"  # PCI Express endpoint (virtio, e1000e, ...)
    PCI = "pci"  # conventional PCI endpoint (e1000, *-transitional, ...)
    HOSTDEV = "hostdev"  # a PCI device assigned from the host


HOTPLUG_CLASSES: tuple[EndpointClass, ...] = (EndpointClass.PCIE, EndpointClass.PCI, EndpointClass.HOSTDEV)


class Connect(StrEnum):
    """What a device is when it plugs into a bus (libvirt's connect types)."""

    PCIE_DEVICE = "pcie-device"
    PCI_DEVICE = "pci-device"
    ROOT_PORT = "pcie-root-port"
    SWITCH_UPSTREAM = "pcie-switch-upstream-port"
    SWITCH_DOWNSTREAM = "pcie-switch-downstream-port"
    DMI_TO_PCI_BRIDGE = "dmi-to-pci-bridge"
    PCIE_TO_PCI_BRIDGE = "pcie-to-pci-bridge"
    PCI_BRIDGE = "pci-bridge"
    PCI_EXPANDER_BUS = "pci-expander-bus"
    PCIE_EXPANDER_BUS = "pcie-expander-bus"


_ADDR_RE = re.compile(r"^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


@dataclass(frozen=True, order=True)
class Address:
    """A guest PCI address; ``bus`` is the index of the controller it sits on."""

    bus: int
    slot: int
    function: int = 0
    domain: int = 0

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``DDDD:BB:SS.F`` or ``BB:SS.F`` (hex); raise ValueError otherwise."""
        m = _ADDR_RE.match(text.strip())
        if not m:
            raise ValueError(f"'{text}' is not a PCI address; write it as DDDD:BB:SS.F, e.g. 0000:00:05.0")
        dom, bus, slot, fn = (int(g, 16) if g else 0 for g in m.groups())
        if slot > 0x1F:
            raise ValueError(f"slot 0x{slot:02x} of '{text}' is out of range; slots are 0x00-0x1f")
        return cls(bus=bus, slot=slot, function=fn, domain=dom)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"


@dataclass(frozen=True)
class Endpoint:
    """An endpoint present at boot.

    ``kind`` names the device model (a key of the device table); ``cls`` is its
    class on this machine.  ``pinned`` is an address the user fixed;
    ``root_ok`` means the user never unplugs it, so it may sit on the root
    complex; ``group`` is the host IOMMU group of an assigned device.
    """

    name: str
    kind: str
    cls: EndpointClass | None  # None: takes no PCI slot of its own (fixed chipset function)
    pinned: Address | None = None
    root_ok: bool = False
    group: int | None = None
    implicit: bool = False  # added by libvirt by itself (usb, balloon, sata)
    fixed_role: str | None = None  # e.g. "primary-video": goes to the rule table's fixed address
    host: str | None = None  # host PCI address of an assigned device
    line: int | None = None  # spec line, for messages
    node: int | None = None  # guest NUMA node it must sit on (behind that node's expander bus / PHB)
    # The functions it takes in its slot: a multifunction set (a USB2 controller with its companions)
    # takes one slot, function 0 first; its address is that of its lowest function.
    functions: tuple[int, ...] = (0,)
    integrated: bool = False  # libvirt puts it on the root bus only (virtio-iommu, pvpanic-pci)
    # A multifunction group of a spec (``functions: N``): one (alias name, host address) per function, in
    # ``functions`` order; the writer gives each its own element.  () for a single device (and the USB2
    # sets the domain reader builds, whose elements it keeps).
    parts: tuple[tuple[str, str | None], ...] = ()
    # It sits behind a port with <target hotplug='off'/> (``protect: port``): never unplugged, never replaced.
    protect: bool = False
    acpi_index: int | None = None  # <acpi index='N'/>: the NIC's stable name in the guest (1-16383)
    # Memory windows its BARs take, in bytes: (below 4 GiB, in the 64-bit hole); from the host's sysfs
    windows: tuple[int, int] = (0, 0)
    host_node: int | None = None  # the host NUMA node of an assigned device (sysfs), for the summary
    host_functions: tuple[int, ...] = ()  # the functions of its host slot (sysfs); (): not read


@dataclass(frozen=True)
class Headroom:
    """How many devices of one class the guest must be able to hotplug, all at once."""

    cls: EndpointClass
    count: int
    label: str  # what the user wrote: a model name or a class
    node: int | None = None  # only positions on this guest NUMA node count for it
    # Devices of this many functions each: libvirt hotplugs function 0 of a slot only, so each function
    # goes live on a port (or slot) of its own and ``count`` is devices x functions positions.
    functions: int = 1
    # The memory window one device of this entry needs, in bytes: (below 4 GiB, in the 64-bit hole);
    # from 'bar' or the host's sysfs (topo_solve.windows reserves it on the ports it will use)
    windows: tuple[int, int] = (0, 0)
    line: int | None = None  # spec line, for messages


@dataclass(frozen=True)
class NumaCell:
    """One guest NUMA node: its vCPUs (libvirt's cpuset syntax, e.g. ``0-1``) and memory."""

    cpus: str
    memory_mib: int


@dataclass(frozen=True)
class Target:
    """The libvirt and QEMU a plan is made for (major, minor of each).

    ``alias`` is the distribution name it was given by (``debian-12``); ``origin`` says where it
    came from (the spec, ``--target``, the default); neither takes part in comparisons, so two
    targets of the same versions select the same rules."""

    libvirt: tuple[int, int]
    qemu: tuple[int, int]
    alias: str | None = field(default=None, compare=False)
    origin: str = field(default="", compare=False)

    def version(self, component: str) -> tuple[int, int]:
        return self.libvirt if component == "libvirt" else self.qemu

    @property
    def label(self) -> str:
        """``libvirt 11.3 + QEMU 10.0``."""
        return f"libvirt {self.libvirt[0]}.{self.libvirt[1]} + QEMU {self.qemu[0]}.{self.qemu[1]}"

    def describe(self) -> str:
        """What a summary says: ``libvirt 9.0 + QEMU 7.2 (debian-12, --target)``."""
        how = ", ".join(x for x in (self.alias, self.origin) if x)
        return self.label + (f" ({how})" if how else "")

    def as_json(self) -> dict:
        return {"libvirt": f"{self.libvirt[0]}.{self.libvirt[1]}", "qemu": f"{self.qemu[0]}.{self.qemu[1]}",
                "alias": self.alias, "origin": self.origin}


@dataclass(frozen=True)
class Problem:
    """A planning problem: one guest, one machine family, devices and headroom."""

    name: str
    family: str  # key of the rule table
    machine: str  # libvirt machine type as written in the XML
    arch: str
    endpoints: tuple[Endpoint, ...]
    headroom: tuple[Headroom, ...]
    memory_mib: int = 1024
    vcpus: int = 1
    virt_type: str = "kvm"
    source: str = "<spec>"
    io_ports: int | None = None  # a hard limit on ports with I/O-BAR devices; None: warn past the firmware's
    io_ports_from: str | None = None  # why that limit, when the firmware's (None: the spec's own number)
    firmware: str | None = None  # rules.firmware.KINDS: bios, efi; None: none (a direct kernel boot)
    numa: tuple[NumaCell, ...] = ()  # guest NUMA nodes, node i = numa[i]; () without <cpu><numa>
    # An existing guest (a domain XML): its controllers and devices that have addresses stay where
    # they are; ``endpoints`` are then the devices still to place, and ``keep`` the controllers the
    # XML has without an address (kept, with their index, and placed like new ones).
    base: "Layout | None" = None
    keep: tuple["Controller", ...] = ()
    keep_minimum: bool = True  # False (right-size): only as many of ``keep`` as the plan needs stay
    # The libvirt and QEMU the plan is for: rules.rules_for(family, target) selects the rows that hold
    # there.  None: the newest versions the tables know (rules.versions.NEWEST).
    target: Target | None = None
    layout: str = "qemu-guidelines"  # the layout policy (topo_solve.rules.LAYOUTS)

    def requested(self) -> dict[EndpointClass, int]:
        """Total headroom per class that names no NUMA node (see :meth:`request` for all of it)."""
        out = {c: 0 for c in HOTPLUG_CLASSES}
        for h in self.headroom:
            if h.node is None:
                out[h.cls] += h.count
        return out

    def requested_by_node(self) -> dict[int, dict[EndpointClass, int]]:
        """Headroom per class for each NUMA node that has some."""
        out: dict[int, dict[EndpointClass, int]] = {}
        for h in self.headroom:
            if h.node is not None:
                out.setdefault(h.node, {c: 0 for c in HOTPLUG_CLASSES})[h.cls] += h.count
        return out

    def request(self) -> dict[tuple[EndpointClass, int | None], int]:
        """All of the headroom, keyed by (class, NUMA node or None): what ``Report.fits`` takes."""
        out: dict[tuple[EndpointClass, int | None], int] = {}
        for h in self.headroom:
            out[(h.cls, h.node)] = out.get((h.cls, h.node), 0) + h.count
        return out


@dataclass(frozen=True)
class Controller:
    """A PCI controller in a layout.  ``address`` is None for root buses."""

    index: int
    model: str
    address: Address | None
    target: tuple[tuple[str, int], ...] = ()  # chassis/port/chassisNr/busNr/index/node, in XML order
    hotplug: bool = True  # False: <target hotplug='off'/>
    multifunction: bool = False
    mem_reserve: int | None = None  # KiB: <target memReserve='N'/> (a memory window for a later hotplug)


@dataclass(frozen=True)
class Placed:
    """An endpoint at its address."""

    endpoint: Endpoint
    address: Address | None  # None only for endpoints with cls None and no fixed address
    multifunction: bool = False  # at function 0 of a slot it shares: written multifunction='on'


@dataclass(frozen=True)
class Layout:
    """Controllers and placed endpoints: what a domain XML describes."""

    family: str
    controllers: tuple[Controller, ...]
    placed: tuple[Placed, ...]
    acpi: bool = True
    numa_nodes: int = 0  # cells of <cpu><numa>: controllers may name nodes 0 .. numa_nodes - 1
    firmware: str | None = None  # rules.firmware.KINDS (bios, efi) the guest boots; None: none or unknown
    pcihole64: int | None = None  # KiB: <pcihole64 unit='KiB'> on the root controller; None: QEMU's default


@dataclass(frozen=True)
class Plan:
    """The answer: a layout plus what it can take, and notes for the user."""

    problem: Problem
    layout: Layout
    capacity: dict[EndpointClass, int]
    added: dict[str, int]  # controllers added, by model (the root excluded)
    warnings: tuple[str, ...] = field(default=())
    budgets: dict[str, tuple[int, int]] = field(default_factory=dict)  # what -> (used, limit)
    node_capacity: dict[int, dict[EndpointClass, int]] = field(default_factory=dict)  # NUMA node -> capacity
    notes: tuple[str, ...] = field(default=())  # what the user may want to know, not a problem (another layout)
    # The acpi index each future NIC hotplug gets, per hotplug entry (its label) in order
    acpi_hotplug: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())
    # Memory windows reserved for hotplugs: (controller index, KiB, the hotplug entry's label)
    reserved: tuple[tuple[int, int, str], ...] = field(default=())

    @property
    def requested(self) -> dict[EndpointClass, int]:
        return self.problem.requested()
