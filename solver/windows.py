"""After placement: memory windows for large-BAR hotplugs, and acpi indexes for future NICs.

Both are decided once the layout is known, and change no controller count:

* **Memory windows.**  A hotplug entry with a BAR size (``bar:`` or the host's sysfs,
  ``Headroom.windows``) takes free positions of its class in libvirt's own first-fit order
  (bus index, then slot), one per device; the plan says which, so the user hotplugs the device
  there.  The part of its need below 4 GiB is reserved on the controller of that position with
  ``memReserve`` where the target's libvirt takes it on that model (rules/windows.py), twice its
  size rounded up to a power of two (a window is not aligned to its size; measured); a
  pci-bridge's slots share the bridge's one window, so its reservation is the sum.  The
  reservations share the machine's 32-bit window ("32-bit window" budget) with the boot devices'
  BARs below 4 GiB that the host's sysfs gave.  64-bit BARs (of the
  hotplugs and of the boot devices whose BARs the host's sysfs gave) share the 64-bit hole
  ("64-bit window" budget); when they need more than QEMU's default hole, the plan sizes it with
  ``pcihole64``.  Over either limit the plan is infeasible, naming the number.
* **acpi indexes.**  When the guest names its NICs by ``<acpi index>``, each NIC hotplug entry
  gets the next indexes above every index the guest has, in the order of the entries: the same
  rule as ``topo-solve attach`` (``attach.next_acpi_index``), so a removed NIC's index is never
  given again.

Core code: no XML, no YAML; the rows come from the rules view, so no version is compared here.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import Cause, InfeasibleError
from .model import Address, Controller, EndpointClass, Headroom, Plan
from .rules import RuleSet
from .verify import verify

__all__ = ["finish", "acpi_for_hotplugs", "next_index", "GIB", "MIB"]

MIB = 1 << 20
GIB = 1 << 30
BUDGET32 = "32-bit window MiB"
BUDGET64 = "64-bit window MiB"


def _is_nic(label: str) -> bool:
    from .rules.devices import DEVICES

    kind = DEVICES.get(label)
    return kind is not None and kind.element == "interface"


def next_index(used: set[int]) -> int | None:
    """The next acpi index: one above the highest in use (never a gap's: a removed NIC's index stays
    unused, the rule CloudStack's fix for reused NIC names took); None when none is in use."""
    return max(used) + 1 if used else None


def acpi_for_hotplugs(headroom: tuple[Headroom, ...], used: set[int], high: int = 16383
                      ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The acpi index each future NIC hotplug gets: from :func:`next_index` on, entry by entry
    (empty when the guest names no NIC by index)."""
    nxt = next_index(used)
    if nxt is None:
        return ()
    out = []
    for h in headroom:
        if _is_nic(h.label) and h.count:
            last = min(nxt + h.count - 1, high)
            if last >= nxt:  # none left past the highest index libvirt takes: the plan warns
                out.append((h.label, tuple(range(nxt, last + 1))))
            nxt = last + 1
    return tuple(out)


def _positions(plan: Plan, rules: RuleSet, cls: EndpointClass, node: int | None) -> list[Address]:
    report = verify(plan.layout, rules, strict_auto=False)
    return [Address(bus, slot) for (bus, slot), classes in sorted(report.positions.items())
            if cls in classes and report.node_of.get(bus) == node]


def finish(plan: Plan, rules: RuleSet) -> Plan:
    """``plan`` with its memory windows reserved and its NIC hotplugs' acpi indexes; InfeasibleError
    when the windows do not fit."""
    problem = plan.problem
    used = {e.acpi_index for e in problem.endpoints if e.acpi_index is not None}
    acpi = acpi_for_hotplugs(problem.headroom, used, rules.acpi_index.high if rules.acpi_index else 16383)
    if used:
        plan = replace(plan, acpi_hotplug=acpi)
        wanted = sum(h.count for h in problem.headroom if _is_nic(h.label))
        given = sum(len(ix) for _, ix in acpi)
        if given < wanted:
            plan = replace(plan, warnings=plan.warnings + (
                f"only {given} acpi index(es) are left above the guest's for its {wanted} NIC hotplugs (libvirt "
                "takes 1-16383): the rest get none, so the guest names them by slot",))
    plan = _companions(plan)
    barred = [h for h in problem.headroom if h.windows != (0, 0)]
    boot64 = sum(e.windows[1] for e in problem.endpoints)
    if (not barred and not any(e.windows != (0, 0) for e in problem.endpoints)) or rules.windows is None:
        if barred:
            return replace(plan, warnings=plan.warnings + (
                f"{rules.family} guests have no memory-window rows: the BAR sizes of the hotplug entries are "
                "not reserved",))
        return plan
    w = rules.windows
    controllers = {c.index: c for c in plan.layout.controllers}
    need32: dict[int, int] = {}  # bus index -> bytes below 4 GiB its window must hold
    owners: dict[int, list[str]] = {}
    reserved: list[tuple[int, int, str]] = []
    sum64, largest64 = boot64, max((e.windows[1] for e in problem.endpoints), default=0)
    taken: set[Address] = set()
    warnings = list(plan.warnings)
    notes = list(plan.notes)
    free_cache: dict[tuple[EndpointClass, int | None], list[Address]] = {}
    for h in barred:
        key = (h.cls, h.node)
        if key not in free_cache:
            free_cache[key] = _positions(plan, rules, h.cls, h.node)
        free = [a for a in free_cache[key] if a not in taken]
        label = _label(h)
        # 'bar' is the device's largest BAR, that of function 0 (a GPU's; its audio function's are a few
        # KiB): a device of N functions takes N ports (one per function), and only one holds the window.
        for addr in free[:h.count // max(h.functions, 1)]:
            taken.add(addr)
            low, high = h.windows
            sum64 += high
            largest64 = max(largest64, high)
            if low:  # the window that surely holds it: rules/windows.py reserve_factor
                need32[addr.bus] = need32.get(addr.bus, 0) + _pow2(low) * w.reserve_factor
                owners.setdefault(addr.bus, []).append(label)
            elif high:
                c = controllers[addr.bus]
                notes.append(f"{label}: its {high >> 30} GiB BAR goes to the 64-bit hole; hotplug it behind "
                             f"controller {addr.bus} ({c.address if c.address is not None else c.model})")
    used32 = sum(e.windows[0] for e in problem.endpoints)  # boot devices whose BARs sysfs gave share it too
    new: dict[int, Controller] = {}
    for bus, need in sorted(need32.items()):
        c = controllers[bus]
        used32 += need
        kib = need // 1024
        if c.model not in w.mem_reserve_models:
            warnings.append(f"{', '.join(dict.fromkeys(owners[bus]))}: controller {bus} ({c.model}) takes no "
                            f"memReserve; the hotplugged device gets what the firmware leaves there")
            continue
        if w.mem_reserve_why:
            warnings.append(f"{w.mem_reserve_why}: controller {bus} ({c.model}) keeps the firmware's default "
                            f"window, not the {_mib(need)} {', '.join(dict.fromkeys(owners[bus]))} needs; a "
                            "hotplugged device with larger BARs fails to map them")
            continue
        new[bus] = replace(c, mem_reserve=kib)
        reserved.append((bus, kib, ", ".join(dict.fromkeys(owners[bus]))))
    budgets = dict(plan.budgets)
    limit32 = w.window32 // MIB
    budgets[BUDGET32] = (-(-used32 // MIB), limit32)
    if used32 > w.window32:
        raise InfeasibleError(problem.name, [Cause(
            "32-bit memory window", -(-used32 // MIB), limit32,
            f"memReserve reserves below 4 GiB, where the {rules.family} machine's PCI window holds {limit32} MiB "
            f"({w.window32_source})", "give the large BARs as 64-bit ones (bar: 4G or more) or fewer hotplugs")])
    # The 64-bit hole: the BARs aligned to their own size need at most their sum plus the largest (the
    # hole starts 1 GiB-aligned, not aligned to the largest BAR), rounded to whole GiB.
    hole = -(-(sum64 + (largest64 if largest64 > GIB else 0)) // GIB) * GIB if sum64 else 0
    limit64 = (1 << w.phys_bits) - (4 * GIB + problem.memory_mib * MIB)  # the hole starts above the RAM
    budgets[BUDGET64] = (hole // MIB, max(limit64, 0) // MIB)
    layout = plan.layout
    if hole > limit64:
        raise InfeasibleError(problem.name, [Cause(
            "64-bit memory window", hole // MIB, max(limit64, 0) // MIB,
            f"the 64-bit PCI hole starts above the guest's RAM and ends below 2^{w.phys_bits} "
            f"({w.phys_bits_source}); the limit is in MiB",
            "fewer or smaller large-BAR hotplugs, or less guest memory")])
    if hole > w.hole64_default:
        layout = replace(layout, pcihole64=hole // 1024)
    if sum64 - boot64 > 0:
        warnings.append("libvirt has no attribute for QEMU's pref64-reserve: the ports keep the firmware's "
                        "64-bit window; a Linux guest sizes it at hotplug with pci=realloc (or hpmmioprefsize=)")
    if new:
        layout = replace(layout, controllers=tuple(new.get(c.index, c) for c in layout.controllers))
    return replace(plan, layout=layout, budgets=budgets, warnings=tuple(warnings), reserved=tuple(reserved),
                   notes=tuple(notes))


def _companions(plan: Plan) -> Plan:
    """A warning for each host slot whose other functions (read from sysfs) the guest does not get:
    a GPU's HDMI audio shares its IOMMU group, and VFIO assigns a group whole."""
    # every function a device takes: its own, or each of its group's (functions: N)
    assigned = {h for e in plan.problem.endpoints for h in ([h for _, h in e.parts] if e.parts else [e.host]) if h}
    out = []
    for e in plan.problem.endpoints:
        if not e.host_functions or not e.host:
            continue
        slot = e.host[:-1]
        missing = [f"{slot}{f}" for f in e.host_functions if f"{slot}{f}" not in assigned]
        if missing and e.host == min(f"{slot}{f}" for f in e.host_functions if f"{slot}{f}" in assigned):
            out.append(f"{e.name} ({e.host}): the host's slot also has {', '.join(missing)}, which the guest "
                       "does not get; the functions of a slot usually share an IOMMU group, which VFIO assigns "
                       "whole (add them as devices, or the slot as one device: DDDD:BB:SS)")
    return replace(plan, warnings=plan.warnings + tuple(out)) if out else plan


def _pow2(n: int) -> int:
    """The smallest power of two at least ``n``."""
    return 1 << (n - 1).bit_length()


def _label(h: Headroom) -> str:
    where = f" (line {h.line})" if h.line else ""
    return f"{h.label}{where}"


def _mib(n: int) -> str:
    return f"{-(-n // MIB)} MiB"
