"""Rules as data: one table per machine family.

Each family module (``q35``, ``pc``, ``pseries``, ``virt``) builds one
:class:`RuleSet` from rows of :class:`BusRule`; the device models are shared
(:mod:`topo_solve.rules.devices`).  The solver, the placer and the verifier
look rules up here and never test a machine name: a new machine type or
controller model is new rows, not new code.

Every row names the libvirt (or QEMU) source it mirrors, so a reader can check
it; the facts were read there, and the measured behaviour of libvirt 9.0 +
QEMU 7.2 wins where the two disagree.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ..model import Address, Connect, EndpointClass

__all__ = [
    "BusRule",
    "DeviceKind",
    "LAYOUTS",
    "Implicit",
    "Fixed",
    "RuleSet",
    "family_for",
    "FAMILIES",
    "MACHINE_WORDS",
]


@dataclass(frozen=True)
class BusRule:
    """One controller model: what it plugs into, and what its bus accepts.

    ``accepts`` holds the connect types libvirt may auto-place on the bus
    (endpoints only where ``auto_endpoints``); ``manual`` the ones it accepts
    only at an address the user wrote.  ``packs`` is how many of this
    controller share one slot of its parent (root ports use the 8 functions).
    ``target`` may name ``node``: written as ``<target ...><node>N</node></target>``
    when the controller is tied to a guest NUMA node.
    """

    model: str
    qemu_name: str | None  # <model name='...'/>; None where libvirt writes none
    connect: Connect | None  # what it is as a device; None for a root bus
    accepts: frozenset[Connect]
    slots: tuple[int, int]  # lowest and highest usable slot of its bus
    source: str
    manual: frozenset[Connect] = frozenset()
    auto_endpoints: bool = True
    hotplug: bool = True  # its slots take live-attached devices
    packs: int = 1
    target: tuple[str, ...] = ()  # <target> attributes libvirt requires, in XML order
    root: bool = False  # a root bus: needs no slot upstream (pcie-root, pci-root, a PHB)
    isolation: str | None = None  # "locked": never hosts assigned devices; "group": one IOMMU group per bus
    addable: bool = True  # the planner may add it
    bus_numbers: int = 1  # guest bus numbers its bus consumes
    key: str = ""  # table key when two rows write the same model (pseries default and extra PHBs)
    # libvirt auto-places a hotplugged device on its free slots, but QEMU refuses it there
    # (a free slot of such a bus ends libvirt's search with QEMU's error, not libvirt's)
    hotplug_trap: bool = False
    # Connect types the plan may put on this bus (at an address it writes) only under a layout
    # policy: (policy, types).  'libvirt-accepts' allows what libvirt takes but QEMU's
    # docs/pcie.txt advises against (a pci-bridge on pcie-root).
    policy_accepts: tuple[tuple[str, frozenset[Connect]], ...] = ()

    @property
    def name(self) -> str:
        return self.key or self.model

    @property
    def nslots(self) -> int:
        return self.slots[1] - self.slots[0] + 1

    @property
    def is_port(self) -> bool:
        """A port: a bus with a single slot (one endpoint, or one bridge/switch)."""
        return self.nslots == 1


@dataclass(frozen=True)
class DeviceKind:
    """A device model: how libvirt recognises it in domain XML and how it treats it.

    ``match`` says which elements are this model: ``(path, values)`` pairs over the
    element (``@model``, ``model/@type``, ``target/@bus``...), all of which must hold;
    an absent value is the family's default for that path (``RuleSet.element_defaults``)
    or ``""``, and ``"*"`` matches anything.  Rows are tried in table order, so a
    specific row comes before a catch-all one.  ``cls`` None: the element takes no PCI
    address at all (a USB keyboard, ``model='none'``); the reader passes it through.
    """

    name: str
    cls: EndpointClass | None  # as seen on a PCI Express machine; a family maps it to a connect type
    element: str  # which XML element renders it
    xml_model: str  # the model attribute (or bus) written in that element
    category: int  # libvirt's placement category (qemuDomainAssignDevicePCISlots order)
    hotplug: bool  # libvirt can attach it to a running guest
    source: str
    video: bool = False
    max_count: int | None = None  # e.g. one memballoon per guest
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unplug: bool | None = None  # libvirt can detach it from a running guest; None: as ``hotplug``
    integrated: bool = False  # libvirt puts it on the root bus only (virtio-iommu, pvpanic-pci)
    io_bar: bool = False  # has an I/O-space BAR: its port needs an I/O window from the firmware
    families: frozenset[str] | None = None  # the families where QEMU and libvirt have it; None: all
    spec: bool = False  # a spec may name it (the writer renders it)
    role: str | None = None  # the chipset role whose fixed address it takes (RuleSet.fixed)
    companions: str | None = None  # key of the multifunction set it belongs to (USB2 companions)
    function: int | None = None  # its function inside that set
    # libvirt gives it a virtio-mmio address instead of a PCI one on an ARM or RISC-V virt guest
    # whose XML already has a virtio-mmio device and gives this one no address
    # (qemu_domain_address.c qemuDomainAssignVirtioMMIOAddresses, qemuDomainPrimeVirtioDeviceAddresses)
    mmio: bool = False

    @property
    def detach(self) -> bool:
        return self.hotplug if self.unplug is None else self.unplug


@dataclass(frozen=True)
class Fixed:
    """An address the chipset gives a device role (primary video, PIIX3 USB)."""

    role: str
    address: Address
    insist: bool  # libvirt errors if the device sits elsewhere (True) or only prefers it
    source: str


@dataclass(frozen=True)
class Implicit:
    """A device libvirt adds to a domain at define time unless the XML has one.

    ``unless``: the device-table tag whose presence stops it (``usb``: any USB
    controller, ``memballoon`` even with model='none'); ``needs``: what must be in
    the XML for libvirt to add it (``graphics``, a virtio ``channel`` or
    ``console``), None for always."""

    kind: str  # device table row of what is added
    unless: str
    source: str
    needs: tuple[tuple[str, str, str], ...] = ()  # (tag, path, value): any one present triggers it
    arches: tuple[str, ...] | None = None  # only on these architectures of the family


@dataclass(frozen=True)
class RuleSet:
    """All rules of one machine family."""

    family: str
    summary: str
    default_machine: str
    machine_pattern: str  # regex over libvirt machine type names of this family
    arches: tuple[str, ...]  # the first is the default
    root: str  # model of controller index 0
    buses: Mapping[str, BusRule]
    class_connect: Mapping[EndpointClass, Connect]  # how each class plugs in here
    isolated: frozenset[EndpointClass]  # classes that need buses of their own (pseries hostdev)
    reserved_root_slots: tuple[tuple[int, str], ...]  # (slot, why) never free on the root bus
    fixed: Mapping[str, Fixed]
    implicit: Mapping[str, str]  # defaults flag -> device kind libvirt adds by itself
    defaults: Mapping[str, bool]  # defaults flag -> on unless the spec says otherwise
    default_video: str
    acpi: bool  # emit <features><acpi/></features>
    hotplug_needs_acpi: bool  # no bus takes a hotplug without <acpi/> (i440fx: ACPI PCI hotplug)
    max_count: Mapping[str, int] = field(default_factory=dict)  # per controller model, root included
    max_index: int = 255  # domain_validate.c: PCI controller index <= 255
    bus_number_limit: int = 256  # one PCI domain has 256 bus numbers (QEMU docs/pcie.txt)
    sources: tuple[str, ...] = ()
    # The row that ties a subtree to a guest NUMA node: an expander bus that plugs into the root
    # (its subtree gets a busNr range of its own), or an extra root bus (pseries PHB); None: no NUMA.
    numa_root: str | None = None
    numa_memory_align: int = 1  # MiB: every <cell> memory a multiple of this (libvirt rounds up at start)
    busnr_range: tuple[int, int] = (1, 254)  # <target busNr>: domain_validate.c, 0 is the root bus, 255 the top
    # The most vCPUs libvirt defines a guest of this family with, and why (the spec refuses more).
    max_vcpus: int = 255
    max_vcpus_why: str = ""
    # What libvirt fills in when an element leaves a value out, keyed "TAG PATH" (a <controller> goes
    # by its type): an <interface> without <model> is rtl8139 on x86.  Measured in libvirt 9.0.
    element_defaults: Mapping[str, str] = field(default_factory=dict)
    # Devices libvirt adds to a domain XML at define time (qemuDomainDefAddDefaultDevices,
    # virDomainDefAddImplicitDevices), in the order it adds them.
    added_at_define: tuple["Implicit", ...] = ()
    # The controller libvirt adds for an index nobody uses below the highest one in use
    # (qemuDomainPCIAddressSetCreate fills the gaps: "PCI controller index N is missing")
    gap_model: str = "pci-bridge"
    # libvirt gives unaddressed virtio devices (DeviceKind.mmio) virtio-mmio addresses instead of PCI ones
    # when the XML already has a device at a virtio-mmio address (qemuDomainAssignVirtioMMIOAddresses:
    # ARM and RISC-V virt machines)
    virtio_mmio: bool = False
    # The guest firmware (rules.firmware.KINDS): the kinds a domain of this family may name, and
    # the one it boots when it names none (libvirt: BIOS on x86; None: no firmware, e.g. a direct
    # kernel boot).  ``acpi_needs_efi``: <acpi/> only with UEFI (aarch64: "ACPI requires UEFI on
    # this architecture"), so the planner writes it exactly when the firmware is efi.
    firmware_kinds: frozenset[str] = frozenset()
    firmware_default: str | None = None
    acpi_needs_efi: bool = False

    def acpi_for(self, firmware: str | None) -> bool:
        """Whether a planned guest with this firmware gets <acpi/>."""
        return self.acpi or (self.acpi_needs_efi and firmware == "efi")

    def bus(self, model: str) -> BusRule:
        return self.buses[model]

    @property
    def addable(self) -> tuple[BusRule, ...]:
        """Controller models the planner may add, in table order (also index order)."""
        return tuple(b for b in self.buses.values() if b.addable)

    def rule_for(self, model: str, index: int) -> BusRule | None:
        """The row of a controller seen in a layout: index 0 is the root bus."""
        if index == 0:
            root = self.bus(self.root)
            return root if root.model == model else None
        for b in self.buses.values():
            if b.model == model and not (b.root and not b.addable):
                return b
        return None

    def connect_of(self, cls: EndpointClass) -> Connect:
        return self.class_connect[cls]

    def free_root_slots(self, taken: set[int] = frozenset()) -> list[int]:
        """Root-bus slots not reserved by the chipset nor in ``taken``."""
        lo, hi = self.bus(self.root).slots
        reserved = {s for s, _ in self.reserved_root_slots}
        return [s for s in range(lo, hi + 1) if s not in reserved and s not in taken]

    def accepts(self, bus: BusRule, what: Connect, *, auto: bool, endpoint: bool,
                policy: str = "qemu-guidelines") -> bool:
        """Whether ``bus`` takes ``what``: auto-placed or at a user-written address; ``policy``
        (a layout policy, see ``LAYOUTS``) may allow more at an address the plan writes."""
        if what in bus.accepts and (not endpoint or bus.auto_endpoints or not auto):
            return True
        if any(p == policy and what in types for p, types in bus.policy_accepts):
            return True
        return not auto and what in bus.manual


# Layout policies: what the planner may build.  'qemu-guidelines' (the default) follows QEMU's
# docs/pcie.txt: on pcie.0 only endpoints and PCIe ports; legacy PCI behind a pcie-to-pci-bridge.
# 'libvirt-accepts' also builds what libvirt takes at an address the plan writes where it costs
# fewer controllers (rows say which in ``policy_accepts``).
LAYOUTS = ("qemu-guidelines", "libvirt-accepts")


def _freeze(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


# Imported late: the family modules use the classes above.
from . import pc, pseries, q35, virt  # noqa: E402

FAMILIES: Mapping[str, RuleSet] = _freeze({r.family: r for r in (q35.RULES, pc.RULES, pseries.RULES, virt.RULES)})

# Words a spec may use for a family besides libvirt's versioned machine names.
MACHINE_WORDS: Mapping[str, str] = _freeze(
    {"q35": "q35", "pc": "pc", "i440fx": "pc", "pseries": "pseries", "virt": "virt"}
)
# Machine names libvirt keeps as written that are not versioned names of a family (Ubuntu's
# aliases for its newest machines: libvirt resolves them at define).


def family_for(machine: str) -> RuleSet | None:
    """The rule table for a machine type (``q35``, ``pc-i440fx-7.2``, ``virt-7.2`` ...)."""
    if machine in MACHINE_WORDS:
        return FAMILIES[MACHINE_WORDS[machine]]
    for rules in FAMILIES.values():
        if re.fullmatch(rules.machine_pattern, machine):
            return rules
    return None


def machine_suggestions(machine: str) -> list[str]:
    words = list(MACHINE_WORDS) + ["pc-q35-7.2", "pc-i440fx-7.2", "pseries-7.2", "virt-7.2"]
    return difflib.get_close_matches(machine, words, n=3, cutoff=0.5)
