"""Rules as data: one table per machine family.

Each family module (``q35``, ``pc``, ``pseries``, ``virt``) builds one
:class:`RuleSet` from rows of :class:`BusRule`; the device models are shared
(:mod:`topo_solve.rules.devices`).  The solver, the placer and the verifier
look rules up here and never test a machine name: a new machine type or
controller model is new rows, not new code.

Every row names the libvirt (or QEMU) source it mirrors, so a reader can check
it; the facts were read there, and the measured behaviour of the judges
(libvirt 9.0 + QEMU 7.2, libvirt 11.3 + QEMU 10.0) wins where the two disagree.

Rows that hold only for some versions carry a :class:`~topo_solve.rules.versions.Range`
(``versions``; a device's ``hotplug_versions``; a default's or an implicit device's
range).  :func:`rules_for` is the one place that selects the rows for a target: it
returns the family's :class:`RuleSet` as that libvirt and QEMU see it, and the
solver, placer, verifier and domain-XML code only ever look at such a view.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from ..model import Address, Connect, EndpointClass, Target
from .versions import ALWAYS, NEWEST, Bound, Range

__all__ = [
    "BusRule",
    "DeviceKind",
    "LAYOUTS",
    "Implicit",
    "Fixed",
    "RuleSet",
    "family_for",
    "rules_for",
    "machine_missing",
    "version_facts",
    "VersionFact",
    "Default",
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
    versions: Range = ALWAYS  # the libvirt and QEMU that have this controller model
    # Connect types the plan may put on this bus (at an address it writes) only under a layout
    # policy: (policy, types).  'libvirt-accepts' allows what libvirt takes but QEMU's
    # docs/pcie.txt advises against (a pci-bridge on pcie-root).
    policy_accepts: tuple[tuple[str, frozenset[Connect]], ...] = ()
    # The libvirt and QEMU that take <target hotplug='off'/> on this port (a protected port: its
    # device can be neither unplugged nor replaced live); None: never.  In a target's view (rules_for)
    # it is None where the range does not hold, and ``protect_why`` says why.
    protect: Range | None = None
    protect_why: str = ""

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
    versions: Range = ALWAYS  # the libvirt and QEMU that have it (outside: ``missing`` in a target's view)
    # where ``hotplug`` holds when it depends on the version (hotplug then says: in these versions)
    hotplug_versions: Range | None = None
    what: str = ""  # how messages name it ("an NVMe disk"); the row name when empty
    # topo-solve cannot plan around it even where it exists (what libvirt does with it is not known)
    unplanned: str = ""
    # Set by rules_for, never in the tables: why the target lacks the model ("" = it has it), and
    # why it cannot hotplug it when ``hotplug_versions`` says so.
    missing: str = ""
    hotplug_why: str = ""
    # libvirt gives it a virtio-mmio address instead of a PCI one on an ARM or RISC-V virt guest
    # whose XML already has a virtio-mmio device and gives this one no address
    # (qemu_domain_address.c qemuDomainAssignVirtioMMIOAddresses, qemuDomainPrimeVirtioDeviceAddresses)
    mmio: bool = False
    # A spec may give it ``functions: N``: N of it as the functions of one guest slot, function 0
    # with multifunction='on' (an assigned GPU with its audio function; emulated models as stand-ins).
    multifunction: bool = False

    @property
    def detach(self) -> bool:
        return self.hotplug if self.unplug is None else self.unplug

    @property
    def called(self) -> str:
        return self.what or self.name


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
    versions: Range = ALWAYS  # the libvirt versions that add it
    # (tag, path, value): an element like this stops it too, where ``unless`` names the tag of
    # several models (only an itco <watchdog> stops libvirt adding the iTCO one)
    unless_match: tuple[str, str, str] | None = None
    # Set by rules_for: the target lies where the tables do not know whether libvirt adds it (why).
    unknown: str = ""


@dataclass(frozen=True)
class Default:
    """A value libvirt fills in for an element that leaves it out, where it depends on the version.

    ``key`` as in ``RuleSet.element_defaults`` ("scsi @model"); the entries of one key have
    disjoint ranges."""

    key: str
    value: str | None  # None: the tables do not know what libvirt fills in there
    versions: Range
    source: str


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
    # Defaults that depend on the version; in a target's view they are merged into element_defaults.
    versioned_defaults: tuple[Default, ...] = ()
    # Upstream's versioned machine names, major and minor as groups: QEMU X.Y brings the machine types
    # named X.Y (and keeps the older ones for years: QEMU 10.0 runs pc-q35-7.2, measured).
    machine_versions: str = ""
    # -- set by rules_for, never in the tables --
    target: Target | None = None  # the versions this view is for (None: the raw table)
    devices: Mapping[str, DeviceKind] = field(default_factory=dict)  # every device row, in match order
    # element_defaults keys the tables do not know for this target -> why (the element must say it)
    undecided: Mapping[str, str] = field(default_factory=dict)

    def device(self, name: str) -> DeviceKind:
        """A device row as the target sees it."""
        return self.devices[name]

    @functools.cached_property
    def by_tag(self) -> Mapping[str, tuple[DeviceKind, ...]]:
        """The device rows of each element tag, in match order."""
        out: dict[str, list[DeviceKind]] = {}
        for row in self.devices.values():
            out.setdefault(row.element, []).append(row)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})
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
    # Memory windows for hotplugs (memReserve, pcihole64) and NIC names by <acpi index>
    # (rules/windows.py); None: the family has none.  rules_for resolves their ranges for the target.
    windows: "Windows | None" = None
    acpi_index: "AcpiIndex | None" = None

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


from .windows import AcpiIndex, Windows  # noqa: E402  (no import of this module's classes)

# Imported late: the family modules use the classes above.
from . import pc, pseries, q35, virt  # noqa: E402

# The raw tables: every row of every version.  Code that plans or reads uses rules_for's views.
TABLES: Mapping[str, RuleSet] = _freeze({r.family: r for r in (q35.RULES, pc.RULES, pseries.RULES, virt.RULES)})


def rules_for(family: str, target: Target | None = None) -> RuleSet:
    """The family's rules as ``target``'s libvirt and QEMU see them (None: the newest known).

    The one place where versions are compared: every row whose range holds is kept; a device
    model the target lacks stays in the view (so its elements are still recognised) with
    ``missing`` saying why; a hotplug that depends on the version is resolved; the devices
    libvirt adds at define and the defaults it fills in are those of the target's version."""
    t = target if target is not None else NEWEST
    return _view(family, Target(t.libvirt, t.qemu))  # the versions only: one view whatever the alias


@functools.lru_cache(maxsize=128)
def _view(family: str, t: Target) -> RuleSet:
    from .devices import ROWS

    base = TABLES[family]
    devices: dict[str, DeviceKind] = {}
    for row in ROWS:
        ok = row.versions.holds(t)
        missing = "" if ok else row.versions.explain(row.called, t)
        if ok and row.unplanned:
            missing = row.unplanned
        hot, why = row.hotplug, ""
        if row.hotplug_versions is not None and row.hotplug:
            h = row.hotplug_versions.holds(t)
            hot = bool(h)
            why = "" if h else row.hotplug_versions.explain(f"hotplugging {row.called}", t)
        devices[row.name] = replace(row, missing=missing, hotplug=hot, hotplug_why=why)
    buses = {k: _protect_view(b, t) for k, b in base.buses.items() if b.versions.holds(t)}
    added = []
    for imp in base.added_at_define:
        h = imp.versions.holds(t)
        if h is None:
            added.append(replace(imp, unknown=f"the tables do not know whether {t.label} adds "
                                              f"{imp.kind} here ({imp.versions.describe()})"))
        elif h:
            added.append(imp)
    defaults = dict(base.element_defaults)
    undecided: dict[str, str] = {}
    for key in dict.fromkeys(d.key for d in base.versioned_defaults):
        entries = [d for d in base.versioned_defaults if d.key == key]
        chosen = [d for d in entries if d.versions.holds(t)]
        defaults.pop(key, None)
        if chosen and chosen[0].value is not None:
            defaults[key] = chosen[0].value
        elif chosen or any(d.versions.holds(t) is None for d in entries):
            known = "; ".join(f"{d.value} for {d.versions.describe()}" for d in entries if d.value is not None)
            undecided[key] = f"the tables do not know what {t.label} fills in for it ({known})"
    windows, acpi_index = _attributes(base, t)
    return replace(base, buses=_freeze(buses), added_at_define=tuple(added), element_defaults=_freeze(defaults),
                   target=t, devices=_freeze(devices), undecided=_freeze(undecided), windows=windows,
                   acpi_index=acpi_index)


def _attributes(base: "RuleSet", t: Target):
    """The memory-window and acpi-index rows as the target sees them: each says why not, when not."""
    windows, acpi_index = base.windows, base.acpi_index
    if windows is not None and not windows.mem_reserve.holds(t):
        windows = replace(windows, mem_reserve_why=windows.mem_reserve.explain("memReserve", t))
    if acpi_index is not None and not acpi_index.versions.holds(t):
        acpi_index = replace(acpi_index, why=acpi_index.versions.explain("<acpi index>", t))
    return windows, acpi_index


def _protect_view(b: BusRule, t: Target) -> BusRule:
    """A port row as ``t`` sees it: ``protect`` kept only where <target hotplug='off'/> is taken."""
    if b.protect is None or b.protect.holds(t):
        return b
    return replace(b, protect=None, protect_why=b.protect.explain(f"<target hotplug='off'/> on a {b.model}", t))


@dataclass(frozen=True)
class VersionFact:
    """A row of the tables that holds only for some versions (for the tests and the docs).

    ``kind``: "device" (the model exists), "hotplug" (libvirt hotplugs it), "implicit" (libvirt adds it at
    define), "default" (libvirt fills in ``value`` for ``name``), "controller" (a PCI controller model), "protect"
    (the port takes <target hotplug='off'/>), "attribute" (an attribute the plan writes: memReserve, acpi
    index)."""

    kind: str
    family: str | None  # None: every family (device rows)
    name: str  # the device row, the implicit device's row, the default's key, the controller model
    versions: Range
    value: str | None = None  # a default's value
    arches: tuple[str, ...] | None = None  # an implicit device's architectures

    @property
    def key(self) -> str:
        where = f" {self.family}" if self.family else ""
        what = f"{self.name}={self.value}" if self.kind == "default" else self.name
        return f"{self.kind}{where} {what}" + (f" ({'/'.join(self.arches)})" if self.arches else "")


def version_facts() -> list[VersionFact]:
    """Every row of the tables that depends on the libvirt or QEMU version, in a stable order."""
    from .devices import ROWS

    out = []
    for row in ROWS:
        if not row.versions.always:
            out.append(VersionFact("device", None, row.name, row.versions))
        if row.hotplug_versions is not None:
            out.append(VersionFact("hotplug", None, row.name, row.hotplug_versions))
    for family, base in TABLES.items():
        for b in base.buses.values():
            if not b.versions.always:
                out.append(VersionFact("controller", family, b.name, b.versions))
            if b.protect is not None and not b.protect.always:
                out.append(VersionFact("protect", family, b.name, b.protect))
        for imp in base.added_at_define:
            if not imp.versions.always:
                out.append(VersionFact("implicit", family, imp.kind, imp.versions, arches=imp.arches))
        for d in base.versioned_defaults:
            out.append(VersionFact("default", family, d.key, d.versions, value=d.value))
        if base.windows is not None:
            out.append(VersionFact("attribute", family, "memReserve", base.windows.mem_reserve))
        if base.acpi_index is not None:
            out.append(VersionFact("attribute", family, "acpi index", base.acpi_index.versions))
    return out


MACHINE_SOURCE = ("QEMU X.Y adds the machine types named X.Y (hw/i386/pc_q35.c, pc_piix.c, hw/ppc/spapr.c, "
                  "hw/arm/virt.c); measured: libvirt 9.0 + QEMU 7.2 refuses pc-q35-10.0")


def machine_missing(rules: RuleSet, machine: str) -> str:
    """Why the target's QEMU has no such machine type ("" when it has it, or the name is not versioned)."""
    m = re.fullmatch(rules.machine_versions, machine) if rules.machine_versions else None
    if m is None or rules.target is None:
        return ""
    needs = Range(since=(Bound("qemu", (int(m.group(1)), int(m.group(2))), MACHINE_SOURCE),))
    return "" if needs.holds(rules.target) else needs.explain(f"machine type {machine}", rules.target)


class _Views(Mapping):
    """FAMILIES: each family's rules for the newest known versions (``rules_for(family)``)."""

    def __getitem__(self, family: str) -> RuleSet:
        if family not in TABLES:
            raise KeyError(family)
        return rules_for(family)

    def __iter__(self):
        return iter(TABLES)

    def __len__(self) -> int:
        return len(TABLES)


FAMILIES: Mapping[str, RuleSet] = _Views()

# Words a spec may use for a family besides libvirt's versioned machine names.
MACHINE_WORDS: Mapping[str, str] = _freeze(
    {"q35": "q35", "pc": "pc", "i440fx": "pc", "pseries": "pseries", "virt": "virt"}
)
# Machine names libvirt keeps as written that are not versioned names of a family (Ubuntu's
# aliases for its newest machines: libvirt resolves them at define).


def family_for(machine: str, target: Target | None = None) -> RuleSet | None:
    """The rules for a machine type (``q35``, ``pc-i440fx-7.2``, ``virt-7.2`` ...), as ``target``
    sees them (None: the newest known versions)."""
    if machine in MACHINE_WORDS:
        return rules_for(MACHINE_WORDS[machine], target)
    for rules in TABLES.values():
        if re.fullmatch(rules.machine_pattern, machine):
            return rules_for(rules.family, target)
    return None


def machine_suggestions(machine: str) -> list[str]:
    words = list(MACHINE_WORDS) + ["pc-q35-7.2", "pc-i440fx-7.2", "pseries-7.2", "virt-7.2"]
    return difflib.get_close_matches(machine, words, n=3, cutoff=0.5)
