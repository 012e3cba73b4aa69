"""The planner's entry point: a problem in, a verified plan out.

A problem is a new guest (a spec) or an existing one (``Problem.base``: a domain
XML whose addressed controllers and devices stay put); both go through the same
count model, placer and verifier.
"""

from __future__ import annotations

from dataclasses import replace

from .counts import Existing, build_model, choose_counts, explain
from .errors import Cause, InfeasibleError, ProgrammingError
from .model import EndpointClass, Headroom, Plan, Problem
from .place import given_addresses, place
from .rules import RuleSet, rules_for
from .verify import verify

__all__ = ["solve", "fits"]


def _existing(problem: Problem, rules: RuleSet, without: frozenset[str] = frozenset()) -> Existing | None:
    if problem.base is None:
        return None
    from .existing import existing_of

    return existing_of(problem.base, rules, without, problem.keep, problem.keep_minimum)


def _counts(problem: Problem, rules: RuleSet):
    model = build_model(problem, rules, given_addresses(problem, rules), _existing(problem, rules))
    return model, choose_counts(model)


def fits(problem: Problem) -> bool:
    """Whether any layout satisfies ``problem``."""
    return _counts(problem, rules_for(problem.family, problem.target))[1] is not None


def solve(problem: Problem) -> Plan:
    """Plan the fewest controllers that give ``problem`` its headroom.

    Raises :class:`InfeasibleError` with the binding limits when no layout can.
    """
    rules = rules_for(problem.family, problem.target)
    model, counts = _counts(problem, rules)
    moved_off: list[str] = []
    if counts is None:
        # A chipset address libvirt only prefers (sound at 00:1b.0, video at 00:01.0) is a
        # preference: when keeping it leaves no layout, those devices are placed like any other.
        given = given_addresses(problem, rules)
        preferred = {e.name for e in problem.endpoints if e.fixed_role in rules.fixed and e.cls is not None
                     and not rules.fixed[e.fixed_role].insist and e.pinned is None and e.name in given}
        if preferred:
            relaxed = replace(problem, endpoints=tuple(replace(e, fixed_role=None) if e.name in preferred else e
                                                       for e in problem.endpoints))
            relaxed_model, counts = _counts(relaxed, rules)
            if counts is not None:
                problem, moved_off = relaxed, sorted(preferred)
    if counts is None:
        raise InfeasibleError(problem.name, explain(model), largest=_largest(problem), hints=_hints(problem, rules))
    from .windows import finish  # memory windows and the acpi indexes of NIC hotplugs (issue 14)

    return finish(_finish(problem, rules, counts, moved_off), rules)


def _finish(problem: Problem, rules: RuleSet, counts, moved_off: list[str]) -> Plan:
    """Place the chosen counts, verify the layout, and make the plan."""
    layout = place(problem, rules, counts)
    report = verify(layout, rules, io_limit=problem.io_ports)
    requested = problem.requested()
    io = report.budgets.get("ports with I/O windows")
    if problem.io_ports is not None and io is not None and io.used > problem.io_ports:
        raise InfeasibleError(problem.name, [Cause(
            "ports with I/O windows", io.used, problem.io_ports,
            f"{io.used} ports hold devices with I/O BARs and "
            f"{problem.io_ports_from or f'the spec allows {problem.io_ports}'} (io_ports)",
            "use modern virtio models (no I/O BAR), mark such devices 'hotunplug: false' so they sit on the "
            "root complex, or raise the limit")])
    if report.errors or not report.fits(problem.request()):
        raise ProgrammingError(f"the plan for '{problem.name}' fails its own verification",
                               report.errors or [f"capacity {dict(report.capacity)} < request {requested}"])
    added: dict[str, int] = {}
    before = {c.index for c in problem.base.controllers} if problem.base is not None else {0}
    for c in layout.controllers:
        if c.index not in before:
            added[c.model] = added.get(c.model, 0) + 1
    warnings = list(report.warnings)
    saved = _other_layout_saves(problem, sum(added.values()))
    if moved_off:
        warnings.append(f"{', '.join(moved_off)} not at the chipset's preferred address: that root slot is "
                        "needed for ports")
    if rules.hotplug_needs_acpi and not layout.acpi:
        warnings.append(f"{rules.family} hotplug needs ACPI")
    return Plan(problem=problem, layout=layout, capacity=dict(report.capacity), added=added,
                warnings=tuple(warnings), budgets={k: (b.used, b.limit) for k, b in report.budgets.items()},
                node_capacity=report.node_capacity, notes=((saved,) if saved else ()) + _group_notes(problem, layout))


def _group_notes(problem: Problem, layout) -> tuple[str, ...]:
    """What the plan's multifunction headroom and protected ports mean (issue 14)."""
    out = []
    for h in problem.headroom:
        if h.functions > 1:
            # libvirt refuses a hotplug at any function but 0 (domain_addr.c virDomainPCIAddressEnsureAddr,
            # reached from qemuDomainAttachHostPCIDevice): a live multifunction device is one device per function
            out.append(f"hotplug {h.label}: {h.count // h.functions} device(s) of {h.functions} functions take "
                       f"{h.count} positions: libvirt hotplugs function 0 of a slot only, so each function goes "
                       "live at function 0 of a slot of its own (a port on a PCI Express machine, a PHB for a "
                       "pseries host device), not as one multifunction device")
    locked = [c.index for c in layout.controllers if not c.hotplug and c.address is not None]
    if locked:
        out.append(f"controller(s) {', '.join(map(str, locked))} with <target hotplug='off'/>: they hold devices "
                   "never to be unplugged and take no hotplug (no headroom)")
    return tuple(out)


def _other_layout_saves(problem: Problem, total: int) -> str | None:
    """A note when layout 'libvirt-accepts' would plan fewer controllers than the default policy."""
    from .rules import LAYOUTS

    if problem.layout != LAYOUTS[0]:
        return None
    rules = rules_for(problem.family, problem.target)
    if not any(b.policy_accepts for b in rules.buses.values()):
        return None
    other = replace(problem, layout=LAYOUTS[1])
    model, counts = _counts(other, rules)
    if counts is None:
        return None
    fewer = total - counts.total
    if fewer <= 0:
        return None
    return (f"{fewer} fewer controller(s) with layout: libvirt-accepts (a pci-bridge on {rules.root}, which "
            "libvirt takes but QEMU's docs/pcie.txt advises against)")


def _largest(problem: Problem) -> dict[str, int]:
    """For each requested class (per NUMA node where asked per node), the most headroom of it
    that fits with the rest as asked; keys are the class, or ``"pcie on NUMA node 1"``."""
    groups: dict[tuple[EndpointClass, int | None], int] = {}
    for h in problem.headroom:
        groups[(h.cls, h.node)] = groups.get((h.cls, h.node), 0) + h.count
    out = {}
    # Only the headroom varies from search to search: the pinned addresses, the existing guest and
    # each tree's walk over the endpoints are computed once (a pc guest with 7,600 NICs: 20 searches).
    rules = rules_for(problem.family, problem.target)
    given, existing, memo = given_addresses(problem, rules), _existing(problem, rules), {}

    def fits(p: Problem) -> bool:
        return choose_counts(build_model(p, rules, given, existing, memo)) is not None

    def _may_fit(p: Problem) -> bool:
        from .counts import may_fit

        return may_fit(build_model(p, rules, given, existing, memo))

    for (cls, node), total in groups.items():
        if not total:
            continue
        others = tuple(h for h in problem.headroom if (h.cls, h.node) != (cls, node))

        def with_(count: int) -> Problem:
            extra = (Headroom(cls, count, str(cls), node=node),) if count else ()
            return replace(problem, headroom=others + extra)

        if not fits(with_(0)):
            continue
        # The bounds alone (no search, a few microseconds each) put a ceiling under ``total``; the
        # answer is usually just below it (a budget binds), so search down from the ceiling by
        # doubling steps, then halve the last step: a handful of searches instead of log2(total).
        lo, hi = 0, total  # lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _may_fit(with_(mid)) else (lo, mid)
        ceiling = lo
        if fits(with_(ceiling)):
            lo = ceiling
        else:
            hi, step = ceiling, 1
            lo = max(ceiling - step, 0)
            while lo > 0 and not fits(with_(lo)):
                hi, step = lo, step * 2
                lo = max(ceiling - step, 0)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(with_(mid)) else (lo, mid)
        out[str(cls) if node is None else f"{cls} on NUMA node {node}"] = lo
    return out


def _hints(problem: Problem, rules: RuleSet) -> list[str]:
    """What in this spec costs room it may not need, in the spec's own words."""
    out = []
    if rules.hotplug_needs_acpi and problem.base is not None and not problem.base.acpi and problem.headroom:
        out.append(f"{rules.family} guests hotplug through ACPI only: without <features><acpi/></features> no "
                   "bus takes a hotplug (QEMU: Bus 'pci.0' does not support hotplugging); add it to the XML")
    has_ports = any(b.is_port for b in rules.addable)
    legacy = sorted({e.kind for e in problem.endpoints
                     if e.cls is EndpointClass.PCI and not e.implicit and e.pinned is None})
    if has_ports and legacy and rules.connect_of(EndpointClass.PCI) != rules.connect_of(EndpointClass.PCIE):
        n = sum(1 for e in problem.endpoints if e.kind in legacy and e.pinned is None)
        out.append(f"{n} conventional PCI device(s) ({', '.join(legacy)}) need a pcie-to-pci-bridge and its root "
                   "port; virtio models (or e1000e for e1000) are PCI Express")
    implicit = [e for e in problem.endpoints if e.implicit and e.cls is not None and not e.fixed_role]
    if has_ports and implicit:
        flags = ", ".join(f"{f}: false" for f, k in rules.implicit.items()
                          if any(e.kind == k for e in implicit))
        out.append(f"devices libvirt adds by itself take room a port could use; switch off the ones the guest does "
                   f"not need (defaults: {{{flags}}})")
    video = [e for e in problem.endpoints if e.kind in rules.devices and rules.device(e.kind).video]
    if video and any(e.implicit for e in video):
        out.append("the video card takes a root slot; 'defaults: {video: false}' drops it on a headless guest")
    return out