"""Extend an existing guest: the fewest controllers that give it the asked headroom.

Nothing that is already there moves.  The existing layout's free positions
join the count model's pools (:class:`~topo_solve.counts.Existing`), the same
search picks the cheapest set of controllers to add, and the placer hangs them
on free positions.  Only when no addition is enough does it look for the fewest
devices whose move would make room, and it moves them only when asked.

Pure core: a layout in, an :class:`Extension` out; no XML here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .counts import Existing, build_model, choose_counts, explain
from .errors import Cause, InfeasibleError, ProgrammingError
from .model import Address, Controller, Endpoint, EndpointClass, Headroom, Layout, Problem
from .place import place_extension
from .rules import RuleSet
from .verify import verify

__all__ = ["Extension", "Move", "MovesNeeded", "extend", "existing_of"]


@dataclass(frozen=True)
class Move:
    """A device that changes address."""

    name: str
    old: Address
    new: Address


@dataclass(frozen=True)
class Extension:
    """The extended layout, what was added and moved, and the capacity before and after."""

    layout: Layout
    added: tuple[Controller, ...]
    moves: tuple[Move, ...]
    before: dict[EndpointClass, int]
    capacity: dict[EndpointClass, int]
    requested: dict[EndpointClass, int]
    warnings: tuple[str, ...] = ()

    @property
    def unchanged(self) -> bool:
        return not self.added and not self.moves


class MovesNeeded(InfeasibleError):
    """No addition alone reaches the headroom; moving these devices would."""

    def __init__(self, name: str, moves: tuple[Move, ...], causes: list[Cause]):
        self.moves = moves
        super().__init__(name, causes)

    def render(self) -> str:
        lines = [f"guest '{self.name}' cannot reach the requested headroom without moving a device"]
        for i, cause in enumerate(self.causes, 1):
            lines.append(f"  {i}. because {cause}")
        lines.append(f"  these {len(self.moves)} device(s) would have to move (pass --allow-moves to move them; "
                     "a guest OS may rename a NIC or take a disk offline when its address changes):")
        lines += [f"    {m.name}: {m.old} -> {m.new}" for m in self.moves]
        return "\n".join(lines)


def existing_of(layout: Layout, rules: RuleSet, without: frozenset[str] = frozenset()) -> Existing:
    """What ``layout`` offers for new controllers and hotplugs, ignoring the devices in ``without``."""
    occupied: dict[int, set[int]] = {}
    isolated_buses: set[int] = set()
    for c in layout.controllers:
        if c.address is not None:
            occupied.setdefault(c.address.bus, set()).add(c.address.slot)
    for p in layout.placed:
        if p.address is None or p.endpoint.name in without:
            continue
        occupied.setdefault(p.address.bus, set()).add(p.address.slot)
        if p.endpoint.cls is not None and p.endpoint.cls in rules.isolated:
            isolated_buses.add(p.address.bus)
    free: dict[str, int] = {}
    counts: dict[str, int] = {}
    empty_isolated = 0
    root_free = 0
    by_index = {c.index: c for c in layout.controllers}

    def on_a_node(c: Controller) -> bool:
        """Behind an expander bus or PHB tied to a NUMA node: not a place for headroom without one."""
        seen = set()
        while c.index not in seen:
            seen.add(c.index)
            if "node" in dict(c.target):
                return True
            if c.address is None or c.address.bus not in by_index:
                return False
            c = by_index[c.address.bus]
        return False

    for c in layout.controllers:
        rule = rules.rule_for(c.model, c.index)
        if rule is None:
            raise ProgrammingError(f"controller {c.index} ({c.model}) has no rule; extend needs a verified layout")
        taken = occupied.get(c.index, set())
        lo, hi = rule.slots
        n_free = sum(1 for s in range(lo, hi + 1) if s not in taken)
        if c.index == 0:
            root_free = len(rules.free_root_slots(taken))
            continue
        counts[rule.name] = counts.get(rule.name, 0) + 1
        if c.index in isolated_buses or (rule.hotplug and not c.hotplug) or on_a_node(c):
            continue  # a bus of one IOMMU group, hotplug='off', or a NUMA node's: extend never counts on it
        if rule.isolation == "group" and not taken:
            empty_isolated += 1
            continue
        free[rule.name] = free.get(rule.name, 0) + n_free
    bus_numbers = sum(r.bus_numbers for c in layout.controllers if (r := rules.rule_for(c.model, c.index)))
    # Expander buses split the bus numbers: new controllers of the root bus's tree must number
    # below the lowest busNr (QEMU docs/pcie.txt section 4).
    starts = [dict(c.target)["busNr"] for c in layout.controllers if "busNr" in dict(c.target)]

    def in_root_range(c: Controller) -> bool:
        seen = set()
        while c.address is not None and "busNr" not in dict(c.target) and c.index not in seen:
            seen.add(c.index)
            c = by_index.get(c.address.bus, c)
        return c.index == 0
    root_range = sum(r.bus_numbers for c in layout.controllers
                     if in_root_range(c) and (r := rules.rule_for(c.model, c.index)))
    return Existing(root_free=root_free, free=free, empty_isolated=empty_isolated, counts=counts,
                    bus_numbers=bus_numbers, max_index=max(c.index for c in layout.controllers), acpi=layout.acpi,
                    bus_limit=min(starts) if starts else None, root_range_used=root_range)


def extend(layout: Layout, rules: RuleSet, headroom: tuple[Headroom, ...], *, name: str = "guest",
           allow_moves: bool = False) -> Extension:
    """Add the fewest controllers to ``layout`` so it can hotplug ``headroom`` all at once.

    Raises :class:`MovesNeeded` when only moving devices would make room (and
    ``allow_moves`` is false), :class:`InfeasibleError` when nothing would.
    """
    report = verify(layout, rules, strict_auto=False)
    problem = Problem(name=name, family=rules.family, machine=rules.default_machine, arch=rules.arches[0],
                      endpoints=(), headroom=tuple(headroom))
    requested = problem.requested()
    before = dict(report.capacity)
    if report.fits(requested):
        return Extension(layout, (), (), before, before, requested, tuple(report.warnings))

    model = build_model(problem, rules, {}, existing_of(layout, rules))
    counts = choose_counts(model)
    moving: tuple[Endpoint, ...] = ()
    causes: list[Cause] = []
    if counts is None:
        causes = explain(model)
        for moving in _move_candidates(layout, rules):
            existing = existing_of(layout, rules, frozenset(e.name for e in moving))
            counts = choose_counts(build_model(replace(problem, endpoints=moving), rules, {}, existing))
            if counts is not None:
                break
        if counts is None:
            raise InfeasibleError(name, causes, largest=_largest(layout, rules, problem))
    new_layout, added = place_extension(layout, rules, counts, moving)
    moves = _moves(layout, new_layout)
    if moves and not allow_moves:
        raise MovesNeeded(name, moves, causes)
    after = verify(new_layout, rules, strict_auto=False)
    if len(after.errors) > len(report.errors) or not after.fits(requested):
        raise ProgrammingError(f"the extension of '{name}' fails its own verification",
                               [e for e in after.errors if e not in report.errors]
                               or [f"capacity {dict(after.capacity)} < request {requested}"])
    return Extension(new_layout, added, moves, before, dict(after.capacity), requested, tuple(after.warnings))


def _move_candidates(layout: Layout, rules: RuleSet):
    """Growing sets of devices to move, the likeliest to help first.

    Devices on the root bus come first (their slots are what new ports and
    bridges need), the highest slot first; then devices on other buses, the
    highest bus first (emptying a bus frees it for an isolated class).  The
    chipset's fixed devices never move.
    """
    movable = [p for p in layout.placed
               if p.address is not None and p.endpoint.cls is not None and p.endpoint.fixed_role is None]
    movable.sort(key=lambda p: (p.address.bus != 0, -p.address.bus, -p.address.slot, -p.address.function))
    for m in range(1, len(movable) + 1):
        yield tuple(replace(p.endpoint, pinned=None, root_ok=False) for p in movable[:m])


def _moves(old: Layout, new: Layout) -> tuple[Move, ...]:
    where = {p.endpoint.name: p.address for p in old.placed}
    return tuple(Move(p.endpoint.name, where[p.endpoint.name], p.address) for p in new.placed
                 if p.address is not None and where.get(p.endpoint.name) not in (None, p.address))


def _largest(layout: Layout, rules: RuleSet, problem: Problem) -> dict[str, int]:
    """For each requested class, the most headroom of it an extension could give, the rest as asked."""
    existing = existing_of(layout, rules)

    def fits(p: Problem) -> bool:
        return choose_counts(build_model(p, rules, {}, existing)) is not None

    out = {}
    requested = problem.requested()
    for cls in (c for c, n in requested.items() if n):
        others = tuple(h for h in problem.headroom if h.cls != cls)

        def with_(k: int) -> Problem:
            return replace(problem, headroom=others + ((Headroom(cls, k, str(cls)),) if k else ()))

        if not fits(with_(0)):
            continue
        lo, hi = 0, requested[cls]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(with_(mid)) else (lo, mid)
        out[str(cls)] = lo
    return out
