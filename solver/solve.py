"""The planner's entry point: a problem in, a verified plan out."""

from __future__ import annotations

from dataclasses import replace

from .counts import build_model, choose_counts, explain
from .errors import Cause, InfeasibleError, ProgrammingError
from .model import EndpointClass, Headroom, Plan, Problem
from .place import given_addresses, place
from .rules import FAMILIES, RuleSet
from .verify import verify

__all__ = ["solve", "fits"]


def _counts(problem: Problem, rules: RuleSet):
    model = build_model(problem, rules, given_addresses(problem, rules))
    return model, choose_counts(model)


def fits(problem: Problem) -> bool:
    """Whether any layout satisfies ``problem``."""
    return _counts(problem, FAMILIES[problem.family])[1] is not None


def solve(problem: Problem) -> Plan:
    """Plan the fewest controllers that give ``problem`` its headroom.

    Raises :class:`InfeasibleError` with the binding limits when no layout can.
    """
    rules = FAMILIES[problem.family]
    model, counts = _counts(problem, rules)
    if counts is None:
        raise InfeasibleError(problem.name, explain(model), largest=_largest(problem))
    layout = place(problem, rules, counts)
    report = verify(layout, rules, io_limit=problem.io_ports)
    requested = problem.requested()
    io = report.budgets.get("ports with I/O windows")
    if problem.io_ports is not None and io is not None and io.used > problem.io_ports:
        raise InfeasibleError(problem.name, [Cause(
            "ports with I/O windows", io.used, problem.io_ports,
            f"{io.used} ports hold devices with I/O BARs and the spec allows {problem.io_ports} (io_ports)",
            "use modern virtio models (no I/O BAR), mark such devices 'hotunplug: false' so they sit on the "
            "root complex, or raise the limit")])
    if report.errors or not report.fits(requested):
        raise ProgrammingError(f"the plan for '{problem.name}' fails its own verification",
                               report.errors or [f"capacity {dict(report.capacity)} < request {requested}"])
    added: dict[str, int] = {}
    for c in layout.controllers[1:]:
        added[c.model] = added.get(c.model, 0) + 1
    warnings = list(report.warnings)
    if rules.root_hotplug_needs_acpi and not layout.acpi:
        warnings.append(f"{rules.family} hotplug needs ACPI")
    return Plan(problem=problem, layout=layout, capacity=dict(report.capacity), added=added,
                warnings=tuple(warnings), budgets={k: (b.used, b.limit) for k, b in report.budgets.items()})


def _largest(problem: Problem) -> dict[str, int]:
    """For each requested class, the most headroom of it that fits with the rest as asked."""
    out = {}
    requested = problem.requested()
    for cls in (c for c, n in requested.items() if n):
        lo, hi = 0, requested[cls]  # lo fits (or nothing does), hi does not
        if not fits(_with(problem, cls, 0)):
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(_with(problem, cls, mid)):
                lo = mid
            else:
                hi = mid
        out[str(cls)] = lo
    return out


def _with(problem: Problem, cls: EndpointClass, count: int) -> Problem:
    others = tuple(h for h in problem.headroom if h.cls != cls)
    return replace(problem, headroom=others + ((Headroom(cls, count, str(cls)),) if count else ()))
