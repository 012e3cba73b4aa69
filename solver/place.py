"""Deterministic placement: given controller counts, lay out the guest.

The order is libvirt's own (qemuDomainAssignDevicePCISlots and
virDomainPCIAddressGetNextAddr): chipset and user-written addresses first, then
the controllers in index order, then endpoints by libvirt's device category
and, within one, in the given order; each takes the first fitting slot,
scanning buses by index and slots upward.  Whatever is left empty is the
headroom.

An existing guest (``Problem.base``) is the starting point: its controllers and
devices stay where they are, new controllers are numbered after the highest
index in use, and new root ports share only new slots, so no existing
controller gains a function.  The controllers its XML has without an address
(``Problem.keep``) keep their index and are placed like new ones.

The count model promised that these counts fit; if first-fit disagrees, that is
a bug and is reported as one.

With NUMA nodes, the controllers of the root bus's tree come first, then each
node's tree in node order: its expander bus (on the root bus) and what hangs
from it.  Every controller and endpoint stays in its own tree, and devices
without a node fill the lower indexes, which libvirt's first-fit tries first.
The busNr of each expander is set last, when its subtree is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .counts import FUNCTIONS, Counts
from .errors import Cause, InfeasibleError, ProgrammingError
from .model import Address, Connect, Controller, Endpoint, Layout, Placed, Problem
from .rules import BusRule, RuleSet
from .rules.devices import KINDS

__all__ = ["place", "given_addresses", "category"]

_RESERVED = "<chipset>"
_EXISTING = "<existing>"  # an occupant of the existing guest: never shares a slot with new ports


@dataclass
class _Bus:
    index: int
    rule: BusRule
    slots: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # slot -> [(function, what)]
    group: object = None  # IOMMU group of the assigned devices on it (isolating buses)
    cursor: int = -1  # no slot below this is empty (slots only fill up while placing)
    full: bool = False
    tree: int | None = None  # the NUMA node whose tree its bus belongs to (None: the root bus's tree)
    home: int | None = None  # the tree it plugs into (an expander: the root bus's; else its own tree)
    node: int | None = None  # written as <target><node>: the expander or PHB of a node

    @property
    def empty(self) -> bool:
        return not self.slots

    def free_slot(self, *, packing: str | None = None, packs: int = 1) -> tuple[int, int] | None:
        lo, hi = self.rule.slots
        if not packing:
            # Whole empty slots only: start where the last search stopped.
            s = max(lo, self.cursor)
            while s <= hi and self.slots.get(s):
                s += 1
            self.cursor = s
            if s > hi:
                self.full = True
                return None
            return s, 0
        for s in range(lo, hi + 1):
            used = self.slots.get(s)
            if not used:
                return s, 0
            if packing and all(w == packing for _, w in used) and len(used) < packs:
                taken = {f for f, _ in used}
                return s, min(f for f in range(8) if f not in taken)
        return None

    def take(self, slot: int, function: int, what: str) -> None:
        self.slots.setdefault(slot, []).append((function, what))


def category(kind_name: str) -> int:
    """libvirt's placement category of a device model (an unknown one goes last)."""
    k = KINDS.get(kind_name)
    return k.category if k is not None else 99


def _start(problem: Problem, rules: RuleSet) -> tuple[list[_Bus], list[Controller], list[Placed], int]:
    """The buses, controllers and placed devices to start from, and the next free index."""
    base = problem.base
    if base is None:
        root = _Bus(0, rules.bus(rules.root))
        for slot, _why in rules.reserved_root_slots:
            root.take(slot, 0, _RESERVED)
        return [root], [Controller(0, root.rule.model, None, target=_target(root, 0, None, 0))], [], 1
    from .existing import node_buses

    on_nodes = node_buses(base)
    by_index: dict[int, _Bus] = {}
    for c in base.controllers:
        rule = rules.rule_for(c.model, c.index)
        if rule is None:
            raise ProgrammingError(f"controller {c.index} ({c.model}) has no rule; the reader lets none through")
        by_index[c.index] = _Bus(c.index, rule)
        if (not c.hotplug and rule.hotplug) or c.index in on_nodes:
            by_index[c.index].full = True  # hotplug='off' or a NUMA node's bus: the count model left it out
    root = by_index[0]
    for slot, _why in rules.reserved_root_slots:
        root.take(slot, 0, _RESERVED)
    for c in base.controllers:
        if c.address is not None and c.address.bus in by_index:
            by_index[c.address.bus].take(c.address.slot, c.address.function, _EXISTING)
    for p in base.placed:
        if p.address is None or p.address.bus not in by_index:
            continue
        bus = by_index[p.address.bus]
        for f in p.endpoint.functions:
            bus.take(p.address.slot, p.address.function + f - p.endpoint.functions[0], _EXISTING)
        if p.endpoint.cls is not None and p.endpoint.cls in rules.isolated:
            bus.group = p.endpoint.group if p.endpoint.group is not None else ("alone", p.endpoint.name)
    buses = [by_index[i] for i in sorted(by_index)]
    top = max([c.index for c in base.controllers] + [c.index for c in problem.keep])
    return buses, list(base.controllers), list(base.placed), top + 1


def place(problem: Problem, rules: RuleSet, counts: Counts) -> Layout:
    """Lay out ``problem`` with the controllers of ``counts`` (kept ones first, by model)."""
    buses, controllers, placed, next_index = _start(problem, rules)
    root = buses[0]
    new: list[_Bus] = []  # the buses of controllers placed here, in index order
    kept = {}  # table key -> the XML's own unaddressed controllers of that model, by index
    for c in sorted(problem.keep, key=lambda c: c.index):
        rule = rules.rule_for(c.model, c.index)
        kept.setdefault(rule.name, []).append(c)
    keep_of: dict[int, Controller] = {}
    # the models the planner may add, and a kept controller of a model it never adds (a document's
    # unaddressed dmi-to-pci-bridge or expander bus, which libvirt places like any other)
    for b in [b for b in rules.buses.values() if b.addable or (b.name in kept and not b.root)]:
        own = kept.get(b.name, [])
        for i in range(counts.controllers.get(b.name, 0)):
            if i < len(own):
                bus = _Bus(own[i].index, b)
                keep_of[bus.index] = own[i]
            else:
                bus = _Bus(next_index, b)
                next_index += 1
            new.append(bus)
    if counts.nodes:
        numa_root = rules.bus(rules.numa_root)
        for node, sub in sorted(counts.nodes.items()):
            if not numa_root.root:  # the node's expander bus, on the root bus
                new.append(_Bus(next_index, numa_root, tree=node, home=None, node=node))
                next_index += 1
            for b in rules.addable:
                for _ in range(sub.controllers.get(b.name, 0)):
                    new.append(_Bus(next_index, b, tree=node, home=node,
                                    node=node if b.name == rules.numa_root else None))
                    next_index += 1
    if next_index - 1 > rules.max_index:
        raise ProgrammingError(f"controller index {next_index - 1} exceeds {rules.max_index}")
    new.sort(key=lambda b: b.index)

    # 1. addresses the user or the chipset fixes
    given = given_addresses(problem, rules)
    rest: list[Endpoint] = []
    for ep in problem.endpoints:
        if ep.name in given:
            addr = given[ep.name]
            if addr is not None and ep.cls is not None:
                for f in ep.functions:
                    root.take(addr.slot, addr.function + f - ep.functions[0], ep.name)
            placed.append(Placed(ep, addr))
        else:
            rest.append(ep)

    # 2. controllers, in index order; a controller may only sit on a lower index of the tree it plugs into.
    #    The root functions step 3 needs stay free: a controller that takes a whole root slot goes
    #    elsewhere (a pci-bridge on a pci-bridge) when the root would otherwise run out for them,
    #    as the count model's root:packed demand assumed.
    #    Later controllers that plug into the root bus only (a NUMA node's expander bus) need a whole root
    #    slot each, counted in the same way: the count model gave them their root slots (its fixed
    #    demand on the root pool), so a bridge of the root bus's tree nests rather than take one.
    root_needs = sum(1 for ep in rest if ep.integrated) + sum(counts.on_root.values())
    packers = {b.name for b in rules.addable if b.packs > 1}
    root_only = [not b.rule.root and _root_only(rules, b.rule, root.rule, problem.layout) for b in new]
    root_only_after = [sum(root_only[i + 1:]) for i in range(len(new))]
    all_buses = {b.index: b for b in buses}
    added: list[Controller] = []
    extra_roots = sum(1 for c in controllers if c.address is None and c.index != 0)
    used_targets = {v for c in controllers for a, v in c.target if a == "index"}
    for position, bus in enumerate(new):
        b = bus.rule
        all_buses[bus.index] = bus
        own = keep_of.get(bus.index)
        if b.root:
            extra_roots += 1
            t = extra_roots
            if "index" in b.target:  # a PHB's target index: the lowest unused (qemuDomainAddressFindNewTargetIndex)
                t = min(i for i in range(1, rules.max_index + 1) if i not in used_targets)
                used_targets.add(t)
            added.append(_keep_target(Controller(bus.index, b.model, None, target=_target(bus, 0, None, t)), own))
            continue
        parents = (p for i, p in sorted(all_buses.items()) if i < bus.index and p.tree == bus.home
                   and p.group is None)
        parents = list(parents)
        addr = None
        later = root_only_after[position]
        if b.packs == 1 and (root_needs or later) and parents and parents[0] is root and not root_only[position]:
            empty, room = _root_room(root, packers)
            # after this one takes a whole slot: an empty slot for each later root-only controller, and
            # the functions of the rest for the devices never unplugged
            if empty - 1 < later or room - FUNCTIONS * (1 + later) < root_needs:
                addr = _hang(rules, b, parents[1:], problem.layout)
        if addr is None:
            addr = _hang(rules, b, parents, problem.layout)
        if addr is None:
            if own is not None:
                raise InfeasibleError(problem.name, [Cause(
                    f"controller index {own.index} ({own.model})", 1, 0,
                    "no bus with a lower index takes it, and libvirt wants a controller's index above its "
                    "bus's", "drop its index (libvirt numbers it) or give it a higher one")])
            raise ProgrammingError(f"no slot for controller {bus.index} ({b.model}) though the counts said it fits")
        added.append(_keep_target(Controller(bus.index, b.model, addr,
                                             target=_target(bus, addr.slot, addr, addr.function)), own))
    added = _bus_numbers(added, new, rules)
    buses = [all_buses[i] for i in sorted(all_buses)]

    # 3. integrated devices and devices never unplugged go on the root bus, as many as the counts
    #    chose, as functions of slots they share with each other and with this plan's root ports
    on_root = dict(counts.on_root)
    auto: list[Endpoint] = []
    packable = {b.name for b in rules.addable if b.packs > 1}
    for ep in rest:
        connect = rules.connect_of(ep.cls)
        if ep.integrated or (ep.root_ok and ep.node is None and len(ep.functions) == 1
                             and ep.cls not in rules.isolated and on_root.get(connect, 0) > 0):
            packable.add(ep.name)
            addr = _pack(root, packable)
            if addr is None:
                raise ProgrammingError(f"no root slot left for {ep.name}")
            root.take(addr.slot, addr.function, ep.name)
            placed.append(Placed(ep, addr))
            if not ep.integrated:
                on_root[connect] -= 1
        else:
            auto.append(ep)

    # 4. everything else first-fit, in libvirt's category order, each in its own tree
    auto.sort(key=lambda e: category(e.kind))
    trees: dict[int | None, list[_Bus]] = {}
    for bus in buses:
        trees.setdefault(bus.tree, []).append(bus)
    start: dict[int | None, int] = {}  # per tree: buses before this one are full
    for ep in auto:
        tree = trees.get(ep.node, [])
        i = start.get(ep.node, 0)
        while i < len(tree) and tree[i].full:
            i += 1
        start[ep.node] = i
        addr = _first_fit(rules, tree[i:], ep)
        if addr is None:
            raise ProgrammingError(f"no slot for {ep.name} ({ep.kind}) though the counts said it fits")
        placed.append(Placed(ep, addr))

    added = [_multifunction(c, all_buses) for c in added]
    kept_where = {p.endpoint.name for p in (problem.base.placed if problem.base is not None else ())}
    placed = [p if p.endpoint.name in kept_where else _multifunction_endpoint(p, all_buses) for p in placed]
    if problem.base is None:
        order = {ep.name: i for i, ep in enumerate(problem.endpoints)}
    else:
        order = {p.endpoint.name: i for i, p in enumerate(problem.base.placed)}
        order.update({ep.name: len(order) + i for i, ep in enumerate(problem.endpoints)})
    placed.sort(key=lambda p: order.get(p.endpoint.name, len(order)))
    all_controllers = sorted(controllers + added, key=lambda c: c.index)
    acpi = problem.base.acpi if problem.base is not None else rules.acpi_for(problem.firmware)
    numa = problem.base.numa_nodes if problem.base is not None else len(problem.numa)
    firmware = problem.base.firmware if problem.base is not None else problem.firmware
    return Layout(family=rules.family, controllers=tuple(all_controllers), placed=tuple(placed), acpi=acpi,
                  numa_nodes=numa, firmware=firmware)


def _keep_target(c: Controller, own: Controller | None) -> Controller:
    """A kept controller keeps what its XML says of its target (chassis, port, hotplug='off')."""
    if own is None:
        return c
    mine = dict(own.target)
    target = tuple((a, mine.get(a, v)) for a, v in c.target) + tuple(
        (a, v) for a, v in own.target if a not in dict(c.target))
    return Controller(c.index, c.model, c.address, target, own.hotplug, c.multifunction)


def _bus_numbers(controllers: list[Controller], buses: list[_Bus], rules: RuleSet) -> list[Controller]:
    """Give each new expander bus its busNr: the guest bus numbers are split into ranges, the root
    bus's from 0, each expander's from its busNr up to the next one's (QEMU docs/pcie.txt section
    4), and each range must hold the buses of its subtree.  The expanders take the top of the 256,
    exactly as much as their subtrees need, the first expander highest (as libvirt counts busNr
    down from 254); every spare number stays with the root bus's tree, where a later extension adds
    controllers."""
    top = rules.bus_number_limit
    out = list(controllers)
    where = {c.index: i for i, c in enumerate(out)}
    for bus in buses:
        if "busNr" not in bus.rule.target or bus.home is not None:
            continue
        size = sum(other.rule.bus_numbers for other in buses if other.tree == bus.tree)
        top -= size
        c = out[where[bus.index]]
        target = tuple(("busNr", top) if attr == "busNr" else (attr, value) for attr, value in c.target)
        out[where[bus.index]] = Controller(c.index, c.model, c.address, target, c.hotplug, c.multifunction)
    return out


def given_addresses(problem: Problem, rules: RuleSet) -> dict[str, Address | None]:
    """Endpoints whose address is not the placer's choice: pinned by the user, or
    fixed by the chipset (when the chipset insists, or the slot is still free)."""
    out: dict[str, Address | None] = {}
    taken: set[int] = {s for s, _ in rules.reserved_root_slots}
    if problem.base is not None:
        taken |= {c.address.slot for c in problem.base.controllers if c.address is not None and c.address.bus == 0}
        taken |= {p.address.slot for p in problem.base.placed if p.address is not None and p.address.bus == 0}
    for ep in problem.endpoints:
        if ep.pinned is not None:
            out[ep.name] = ep.pinned
            taken.add(ep.pinned.slot)
    for ep in problem.endpoints:
        if ep.name in out:
            continue
        fixed = rules.fixed.get(ep.fixed_role) if ep.fixed_role else None
        if fixed is not None and ep.node is not None and not fixed.insist:
            fixed = None  # a preferred root-bus slot, but the device belongs behind its node's expander
        if fixed is not None and (fixed.insist or fixed.address.slot not in taken or ep.cls is None):
            # a multifunction set's address is that of its lowest function
            out[ep.name] = fixed.address if ep.functions == (0,) else Address(
                fixed.address.bus, fixed.address.slot, ep.functions[0], fixed.address.domain)
            taken.add(fixed.address.slot)
        elif ep.cls is None:
            out[ep.name] = None
    return out


def _first_fit(rules: RuleSet, buses: list[_Bus], ep: Endpoint) -> Address | None:
    connect: Connect = rules.connect_of(ep.cls)
    isolated = ep.cls in rules.isolated
    group = ep.group if ep.group is not None else ("alone", ep.name)  # no group given: a group of its own

    def candidates():
        for bus in buses:
            if bus.full:
                continue
            if not rules.accepts(bus.rule, connect, auto=True, endpoint=True):
                continue
            if bus.rule.hotplug_trap and not ep.root_ok and not ep.integrated:
                continue  # QEMU could never unplug it there (the pc expander bus's own slots)
            if isolated:
                if bus.rule.isolation == "locked":
                    continue
                if bus.group == group or (bus.empty and bus.rule.isolation == "group"):
                    yield bus
            elif bus.group is None:
                yield bus

    for bus in candidates():
        if isolated and bus.group != group and not bus.empty:
            continue
        spot = bus.free_slot()
        if spot:
            for f in ep.functions:
                bus.take(spot[0], f, ep.name)
            if isolated:
                bus.group = group
            return Address(bus.index, spot[0], ep.functions[0])
    return None


def _target(bus: _Bus, slot: int, addr: Address | None, function: int) -> tuple[tuple[str, int], ...]:
    """libvirt's own choices for <target> (qemuDomainAssignPCIAddresses, final pass)."""
    out = []
    for attr in bus.rule.target:
        if attr == "chassis":
            out.append(("chassis", bus.index))  # chassis = controller index
        elif attr == "port":
            # root port: slot x 8 + function; switch downstream port: its slot.  Both are
            # slot x packs + function, since downstream ports do not share a slot.
            out.append(("port", slot * bus.rule.packs + function))
        elif attr == "chassisNr":
            out.append(("chassisNr", bus.index))
        elif attr == "index":
            out.append(("index", function))  # PHB target index: 0 for the default, then 1, 2, ...
        elif attr == "busNr":
            out.append(("busNr", 0))  # set by _bus_numbers once the subtree is placed
        elif attr == "node" and bus.node is not None:
            out.append(("node", bus.node))
    return tuple(out)


def _hang(rules: RuleSet, b: BusRule, parents, policy: str = "qemu-guidelines") -> Address | None:
    """Take the first free slot for a controller of model ``b`` on the first of ``parents`` that accepts it."""
    for parent in parents:
        if parent.full or not rules.accepts(parent.rule, b.connect, auto=True, endpoint=False, policy=policy):
            continue  # a full bus stays full: skipping it keeps this cheap past hundreds of bridges
        spot = parent.free_slot(packing=b.name if b.packs > 1 else None, packs=b.packs)
        if spot:
            parent.take(spot[0], spot[1], b.name)
            return Address(parent.index, spot[0], spot[1])
    return None


def _root_room(root: _Bus, packers: set[str]) -> tuple[int, int]:
    """(empty root slots, root functions still free for devices never unplugged: every function of an
    empty slot, and the free functions of slots only packing controllers (root ports) hold)."""
    lo, hi = root.rule.slots
    empty = room = 0
    for s in range(lo, hi + 1):
        used = root.slots.get(s)
        if not used:
            empty += 1
            room += FUNCTIONS
        elif all(w in packers for _, w in used):
            room += FUNCTIONS - len(used)
    return empty, room


def _root_only(rules: RuleSet, b: BusRule, root: BusRule, policy: str) -> bool:
    """Whether a controller of ``b`` plugs into the root bus and into no other bus the rules know (an
    expander bus: libvirt puts it on pci-root or pcie-root only)."""
    if not rules.accepts(root, b.connect, auto=True, endpoint=False, policy=policy):
        return False
    return not any(rules.accepts(other, b.connect, auto=True, endpoint=False, policy=policy)
                   for other in rules.buses.values() if other is not root and not other.root)


def _pack(root: _Bus, packable: set[str]) -> Address | None:
    """A function of a root slot whose occupants all may share it (this plan's root ports and
    devices never unplugged), else function 0 of the first empty slot."""
    lo, hi = root.rule.slots
    for s in range(lo, hi + 1):
        used = root.slots.get(s)
        if used and len(used) < 8 and all(w in packable for _, w in used):
            taken = {f for f, _ in used}
            return Address(0, s, min(f for f in range(8) if f not in taken))
    spot = root.free_slot()
    return Address(0, spot[0], 0) if spot else None


def _multifunction_endpoint(p: Placed, buses) -> Placed:
    """An endpoint at function 0 of a slot it shares gets multifunction='on' (libvirt sets it too)."""
    a = p.address
    if a is None or a.function != 0 or p.multifunction or a.bus not in buses:
        return p
    if len(buses[a.bus].slots.get(a.slot, [])) > len(p.endpoint.functions):
        return Placed(p.endpoint, a, multifunction=True)
    return p


def _multifunction(c: Controller, buses) -> Controller:
    """Mark function 0 of a shared slot multifunction; ``buses`` maps a bus index to its _Bus."""
    if c.address is None or c.address.function != 0:
        return c
    used = buses[c.address.bus].slots.get(c.address.slot, [])
    if len(used) > 1:
        return Controller(c.index, c.model, c.address, c.target, c.hotplug, multifunction=True)
    return c
