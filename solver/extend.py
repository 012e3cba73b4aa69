"""Plan an existing guest: place what its XML leaves unplaced, and add the fewest controllers
that give it the asked headroom.

Nothing that has an address moves.  The guest's addressed controllers and
devices are the problem's ``base``; its devices without an address are the
endpoints to place and its controllers without one are kept (``keep``), or,
when the caller right-sizes, left to the search like any other.  The planner
(:func:`topo_solve.solve.solve`) does the rest.  Only when no addition is
enough does this module look for the fewest devices whose move would make
room, and it moves them only when asked.

Pure core: a problem in, an :class:`Extension` out; no XML here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import Finding, InfeasibleError, SpecError
from .model import Address, Controller, EndpointClass, Headroom, Layout, Placed, Plan, Problem
from .rules import RuleSet
from .verify import verify

__all__ = ["Extension", "Move", "MovesNeeded", "extend", "plan_existing"]


@dataclass(frozen=True)
class Move:
    """A device that changes address."""

    name: str
    old: Address
    new: Address


@dataclass(frozen=True)
class Extension:
    """The planned guest: what was added, filled in and moved, and the capacity before and after.

    ``added`` are new controllers; ``filled`` the XML's own controllers that had no
    address and now have one; ``placed`` the XML's devices that had no address, at
    theirs."""

    layout: Layout
    added: tuple[Controller, ...]
    moves: tuple[Move, ...]
    before: dict[EndpointClass, int]
    capacity: dict[EndpointClass, int]
    requested: dict[EndpointClass, int]
    warnings: tuple[str, ...] = ()
    filled: tuple[Controller, ...] = ()
    placed: tuple[Placed, ...] = ()
    plan: Plan | None = None
    budgets: dict[str, tuple[int, int]] | None = None
    requested_headroom: tuple[Headroom, ...] = ()  # the request as asked (per NUMA node too)

    @property
    def unchanged(self) -> bool:
        return not self.added and not self.moves and not self.filled and not self.placed


class MovesNeeded(InfeasibleError):
    """No addition alone reaches the headroom; moving these devices would."""

    def __init__(self, name: str, moves: tuple[Move, ...], causes):
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


def extend(layout: Layout, rules: RuleSet, headroom: tuple[Headroom, ...], *, name: str = "guest",
           allow_moves: bool = False) -> Extension:
    """Add the fewest controllers to ``layout`` so it can hotplug ``headroom`` all at once.

    Raises :class:`MovesNeeded` when only moving devices would make room (and
    ``allow_moves`` is false), :class:`InfeasibleError` when nothing would.
    """
    problem = Problem(name=name, family=rules.family, machine=rules.default_machine, arch=rules.arches[0],
                      endpoints=(), headroom=tuple(headroom), base=layout)
    return plan_existing(problem, rules, allow_moves=allow_moves)


def plan_existing(problem: Problem, rules: RuleSet, *, allow_moves: bool = False) -> Extension:
    """Plan ``problem``, whose ``base`` is an existing guest (see the module docstring)."""
    from .solve import fits, solve

    base = problem.base
    report = verify(base, rules, strict_auto=False)
    if report.errors:
        # libvirt would refuse this guest already: planning around it would promise nothing
        raise SpecError([Finding(problem.source, None, "", f"the guest breaks a libvirt rule: {e}; fix the XML "
                                 "first (topo-solve audit lists every such problem)") for e in report.errors])
    requested = problem.requested()
    before = dict(report.capacity)
    if not problem.endpoints and not problem.keep and report.fits(problem.request()):
        return Extension(base, (), (), before, before, requested, tuple(report.warnings),
                         budgets={k: (b.used, b.limit) for k, b in report.budgets.items()},
                         requested_headroom=problem.headroom)
    moves: tuple[Move, ...] = ()
    try:
        plan = solve(problem)
    except InfeasibleError as exc:
        plan = None
        movable = _move_candidates(base, rules)
        if movable and not fits(_without(problem, movable)):
            # Every set tried is part of this one, and a layout with some devices moved is one with
            # them gone too (drop the moved ones): so if the guest cannot reach the headroom even with
            # all of them gone, no move helps (a guest without ACPI where hotplug needs it, a budget).
            # One search instead of one per set (pc with 2,000 devices: 21 s, now well under one).
            raise
        for m in range(1, len(movable) + 1):
            moving = tuple(movable[:m])
            names = {e.name for e in moving}
            moved = replace(problem, endpoints=problem.endpoints + moving,
                            base=replace(base, placed=tuple(p for p in base.placed if p.endpoint.name not in names)))
            if fits(moved):
                plan = solve(moved)
                break
        if plan is None:
            raise
        moves = _moves(base, plan.layout)
        if moves and not allow_moves:
            raise MovesNeeded(problem.name, moves, exc.causes) from None
    old = {c.index for c in base.controllers}
    kept = {c.index for c in problem.keep}
    added = tuple(c for c in plan.layout.controllers if c.index not in old and c.index not in kept)
    filled = tuple(c for c in plan.layout.controllers if c.index in kept)
    mine = {e.name for e in problem.endpoints}
    placed = tuple(p for p in plan.layout.placed if p.endpoint.name in mine)
    return Extension(plan.layout, added, moves, before, dict(plan.capacity), requested, plan.warnings,
                     filled=filled, placed=placed, plan=plan, budgets=plan.budgets,
                     requested_headroom=problem.headroom)


def _without(problem: Problem, gone) -> Problem:
    """``problem`` with the devices ``gone`` dropped from its existing guest (not placed anywhere)."""
    names = {e.name for e in gone}
    base = problem.base
    return replace(problem, base=replace(base, placed=tuple(p for p in base.placed if p.endpoint.name not in names)))


def _move_candidates(layout: Layout, rules: RuleSet):
    from .existing import move_candidates

    return move_candidates(layout, rules)


def _moves(old: Layout, new: Layout) -> tuple[Move, ...]:
    where = {p.endpoint.name: p.address for p in old.placed}
    return tuple(Move(p.endpoint.name, where[p.endpoint.name], p.address) for p in new.placed
                 if p.address is not None and where.get(p.endpoint.name) not in (None, p.address))
