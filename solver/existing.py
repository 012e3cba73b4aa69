"""What an existing guest brings to a plan: its free positions and what it already spends.

A domain XML is planned around what it already has (``Problem.base``): every
controller and device with an address stays where it is, and the count model
(:mod:`topo_solve.counts`) starts from an :class:`~topo_solve.counts.Existing`
made here: the free positions on the existing buses, by controller model, and
the indexes, bus numbers and busNr room already used.  Controllers the XML has
without an address (``Problem.keep``) are counted as controllers the plan must
have at least that many of.

When nothing added is enough, :func:`move_candidates` proposes devices to move.
"""

from __future__ import annotations

from dataclasses import replace

from .counts import Existing
from .errors import ProgrammingError
from .model import Controller, Endpoint, Layout
from .rules import RuleSet

__all__ = ["existing_of", "move_candidates", "node_buses"]


def node_buses(layout: Layout) -> set[int]:
    """Buses behind an expander bus or PHB tied to a NUMA node (the node's own bus included)."""
    by_index = {c.index: c for c in layout.controllers}
    out = set()
    for c in layout.controllers:
        seen = set()
        d = c
        while d.index not in seen:
            seen.add(d.index)
            if "node" in dict(d.target):
                out.add(c.index)
                break
            if d.address is None or d.address.bus not in by_index:
                break
            d = by_index[d.address.bus]
    return out


def existing_of(layout: Layout, rules: RuleSet, without: frozenset[str] = frozenset(),
                keep: tuple[Controller, ...] = (), minimum: bool = True) -> Existing:
    """What ``layout`` offers for new controllers and hotplugs, ignoring the devices in ``without``.

    ``keep``: controllers without an address; new indexes follow theirs, and with ``minimum``
    the plan has at least as many of each model."""
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
    on_nodes = node_buses(layout)
    by_index = {c.index: c for c in layout.controllers}

    for c in layout.controllers:
        rule = rules.rule_for(c.model, c.index)
        if rule is None:
            raise ProgrammingError(f"controller {c.index} ({c.model}) has no rule; the reader lets none through")
        taken = occupied.get(c.index, set())
        lo, hi = rule.slots
        n_free = sum(1 for s in range(lo, hi + 1) if s not in taken)
        if c.index == 0:
            root_free = len(rules.free_root_slots(taken))
            continue
        counts[rule.name] = counts.get(rule.name, 0) + 1
        if c.index in isolated_buses or (rule.hotplug and not c.hotplug) or c.index in on_nodes:
            continue  # a bus of one IOMMU group, hotplug='off', or a NUMA node's: never counted on
        if rule.isolation == "group" and not taken:
            empty_isolated += 1
            continue
        free[rule.name] = free.get(rule.name, 0) + n_free
    kept: dict[str, int] = {}
    for c in keep if minimum else ():
        rule = rules.rule_for(c.model, c.index)
        if rule is None:
            raise ProgrammingError(f"kept controller {c.index} ({c.model}) has no rule")
        kept[rule.name] = kept.get(rule.name, 0) + 1
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
                    bus_numbers=bus_numbers,
                    max_index=max([c.index for c in layout.controllers] + [c.index for c in keep]),
                    acpi=layout.acpi, bus_limit=min(starts) if starts else None, root_range_used=root_range,
                    kept=kept, root_hotplug=by_index[0].hotplug if 0 in by_index else True)


def move_candidates(layout: Layout, rules: RuleSet) -> list[Endpoint]:
    """The devices that may move, the likeliest to help first: the sets to try are the growing
    prefixes of this list (each a set of devices to move).

    Devices on the root bus come first (their slots are what new ports and
    bridges need), the highest slot first; then devices on other buses, the
    highest bus first (emptying a bus frees it for an isolated class).  The
    chipset's fixed devices, integrated devices and multifunction sets never move.
    """
    movable = [p for p in layout.placed
               if p.address is not None and p.endpoint.cls is not None and p.endpoint.fixed_role is None
               and not p.endpoint.integrated and len(p.endpoint.functions) == 1 and p.address.function == 0]
    movable.sort(key=lambda p: (p.address.bus != 0, -p.address.bus, -p.address.slot, -p.address.function))
    return [replace(p.endpoint, pinned=None, root_ok=False) for p in movable]
