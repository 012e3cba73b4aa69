"""The independent verifier: check a layout against the rule tables.

It shares the rule tables with the planner but none of its code: it takes any
layout (a plan, or a domain XML read back from libvirt), checks every rule it
knows, and counts the free hotplug positions per class.  Every plan the
planner makes passes through here before it is returned.

A bus belongs to a NUMA node when an expander bus or PHB with that
``<node>`` is above it; ``capacity`` counts the positions outside every
node's tree (what devices without a node get), ``node_capacity`` those of
each node.  Each expander's busNr starts a range of guest bus numbers that
must hold its whole subtree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from .model import HOTPLUG_CLASSES, Address, EndpointClass, Layout
from .rules import BusRule, RuleSet
from .rules.firmware import of_kind

__all__ = ["Budget", "Report", "verify", "IO_PORT_WARN"]

# Firmware IO space: each port with an IO window costs 4 KiB of 64 KiB.  Where the guest's
# firmware was measured (rules/firmware.py: SeaBIOS 14, OVMF 9) its row gives the number; else
# this estimate: QEMU 6.1 failed to boot with 15 or more root ports and virt-manager caps itself
# at 14 (peers.md pain point 4; QEMU docs/pcie.txt).  SeaBIOS and OVMF give a window only to a
# port with an I/O-BAR device behind it, so those are what count.
IO_PORT_WARN = 14


@dataclass(frozen=True)
class Budget:
    """One finite resource of the layout: how much is used of how much there is."""

    used: int
    limit: int

    def __str__(self) -> str:
        return f"{self.used}/{self.limit}"


@dataclass
class Report:
    """What the verifier found: rule violations, capacity, and the free positions."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    capacity: dict[EndpointClass, int] = field(default_factory=dict)
    # free hotplug positions: (bus index, slot) -> classes that may take it
    positions: dict[tuple[int, int], frozenset[EndpointClass]] = field(default_factory=dict)
    empty_isolated: list[int] = field(default_factory=list)  # empty buses an isolated class may take whole
    isolated: frozenset[EndpointClass] = frozenset()
    bus_numbers: int = 0
    giving: dict[EndpointClass, list[int]] = field(default_factory=dict)  # class -> bus indexes with room
    budgets: dict[str, Budget] = field(default_factory=dict)  # name in the user's words -> used/limit
    io_ports: list[int] = field(default_factory=list)  # ports with an I/O-BAR device behind them at boot
    node_capacity: dict[int, dict[EndpointClass, int]] = field(default_factory=dict)  # NUMA node -> capacity
    node_of: dict[int, int | None] = field(default_factory=dict)  # bus index -> its NUMA node (None: none)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fits(self, request: dict) -> bool:
        """Whether all of ``request`` can be hotplugged at once, in any order.

        Keys are classes (headroom without a node) or (class, NUMA node or None) pairs; each
        node's request must fit in that node's positions, the rest outside every node's."""
        by_node: dict[int | None, dict[EndpointClass, int]] = {}
        for key, n in request.items():
            cls, node = key if isinstance(key, tuple) else (key, None)
            wanted = by_node.setdefault(node, {})
            wanted[cls] = wanted.get(cls, 0) + n
        return all(self._fits_on(node, wanted) for node, wanted in by_node.items())

    def _fits_on(self, node: int | None, request: dict[EndpointClass, int]) -> bool:
        empty = [b for b in self.empty_isolated if self.node_of.get(b) == node]
        iso = sum(n for c, n in request.items() if c in self.isolated)
        if iso > len(empty):
            return False
        taken = set(empty[len(empty) - iso:]) if iso else set()
        positions = {p: cs for p, cs in self.positions.items()
                     if p[0] not in taken and self.node_of.get(p[0]) == node}
        wanted = [c for c, n in request.items() if n and c not in self.isolated]
        for size in range(1, len(wanted) + 1):
            for subset in combinations(wanted, size):
                room = sum(1 for cs in positions.values() if cs & set(subset))
                if sum(request[c] for c in subset) > room:
                    return False
        return True


def verify(layout: Layout, rules: RuleSet, *, strict_auto: bool = True, io_limit: int | None = None) -> Report:
    """Check ``layout``; with ``strict_auto`` endpoints not pinned by the user must sit
    where libvirt's auto-placement would accept them (the planner's promise).

    ``io_limit`` makes the I/O-space budget a rule (more ports with I/O-BAR
    devices is an error); without it, more than the firmware gives I/O windows (its measured row,
    else ``IO_PORT_WARN``) is a warning."""
    rep = Report(isolated=rules.isolated)
    err = rep.errors.append
    by_index: dict[int, tuple[BusRule, object]] = {}
    for c in layout.controllers:
        rule = rules.rule_for(c.model, c.index)
        if rule is None:
            err(f"controller {c.index}: model '{c.model}' is not allowed on {rules.family}" +
                (f" (index 0 must be {rules.root})" if c.index == 0 else ""))
            continue
        if c.index in by_index:
            err(f"controller index {c.index} is used twice")
        by_index[c.index] = (rule, c)
        if not 0 <= c.index <= rules.max_index:
            err(f"controller {c.index}: index out of range 0-{rules.max_index}")
    if 0 not in by_index:
        err(f"no root controller (index 0, {rules.root})")
        return rep
    counts: dict[str, int] = {}
    for rule, _ in by_index.values():
        counts[rule.name] = counts.get(rule.name, 0) + 1
    for key, limit in rules.max_count.items():
        if counts.get(key, 0) > limit:
            err(f"{counts[key]} {rules.bus(key).model} controllers besides the root; at most {limit}")

    # who occupies which (bus, slot, function)
    occupant: dict[tuple[int, int, int], str] = {}
    shares: set[tuple[int, int, str]] = set()  # endpoints that may share their slot as a function
    chipset = {why for _, why in rules.reserved_root_slots}
    slot_users: dict[tuple[int, int], list[tuple[int, str, BusRule | None]]] = {}
    for slot, why in rules.reserved_root_slots:
        occupant[(0, slot, 0)] = why
        slot_users.setdefault((0, slot), []).append((0, why, None))

    def occupy(addr: Address, who: str, as_rule: BusRule | None) -> None:
        key = (addr.bus, addr.slot, addr.function)
        if addr.domain != 0:
            err(f"{who}: PCI domain {addr.domain:#x}; libvirt accepts domain 0 only")
        if key in occupant:
            err(f"{who} and {occupant[key]} both use PCI address {addr}")
        occupant[key] = who
        slot_users.setdefault((addr.bus, addr.slot), []).append((addr.function, who, as_rule))

    def check_slot(addr: Address, who: str) -> BusRule | None:
        if addr.bus not in by_index:
            err(f"{who} sits on bus {addr.bus}, but no controller has index {addr.bus}")
            return None
        prule = by_index[addr.bus][0]
        lo, hi = prule.slots
        if not lo <= addr.slot <= hi:
            err(f"{who} at {addr}: slot must be {lo:#x}-{hi:#x} on a {prule.model}")
        return prule

    for index, (rule, c) in sorted(by_index.items()):
        who = f"controller {index} ({c.model})"
        if rule.root:
            if c.address is not None:
                err(f"{who} is a root bus and takes no address")
            continue
        if c.address is None:
            err(f"{who} has no address")
            continue
        prule = check_slot(c.address, who)
        if prule and not rules.accepts(prule, rule.connect, auto=False, endpoint=False):
            err(f"{who} cannot plug into controller {c.address.bus} ({prule.model})")
        if c.address.bus >= index:
            err(f"{who} sits on bus {c.address.bus}; a controller's index must be larger than its bus")
        occupy(c.address, who, rule)

    rep.node_of = _numa_checks(layout, rules, rep, by_index, slot_users)

    groups: dict[int, set] = {}
    emulated_on: set[int] = set()
    for p in layout.placed:
        ep = p.endpoint
        if p.address is None:
            if ep.cls is not None:
                err(f"device {ep.name} has no PCI address")
            continue
        fixed = rules.fixed.get(ep.fixed_role) if ep.fixed_role else None
        if ep.cls is None:
            if fixed is not None and p.address != fixed.address:
                err(f"device {ep.name} must be at {fixed.address}")
            continue
        who = f"device {ep.name}"
        prule = check_slot(p.address, who)
        for f in ep.functions:  # a multifunction set takes each of its functions
            occupy(Address(p.address.bus, p.address.slot, p.address.function + f - ep.functions[0],
                           p.address.domain), who, None)
        if ep.root_ok or ep.integrated or ep.pinned is not None or len(ep.functions) > 1:
            shares.add((p.address.bus, p.address.slot, who))  # may share its slot as a function
        if prule is None:
            continue
        if ep.protect and not (prule.is_port and not by_index[p.address.bus][1].hotplug):
            err(f"{who} is protected but sits on controller {p.address.bus} ({prule.model}), not on a port with "
                "hotplug='off'")
        connect = rules.connect_of(ep.cls)
        node = rep.node_of.get(p.address.bus)
        if strict_auto and node != ep.node and ep.pinned is None:
            err(f"{who} (NUMA node {ep.node if ep.node is not None else 'none'}) sits on bus {p.address.bus}, "
                + (f"which is NUMA node {node}'s" if node is not None else "which belongs to no NUMA node"))
        user_placed = ep.pinned is not None or ep.root_ok or ep.integrated or fixed is not None or not strict_auto
        if not rules.accepts(prule, connect, auto=not user_placed, endpoint=True):
            how = "at all" if user_placed else "by libvirt's auto-placement"
            err(f"{who} ({ep.cls}) cannot sit on controller {p.address.bus} ({prule.model}) {how}")
        if ep.cls in rules.isolated and ep.pinned is not None and strict_auto:
            # A user-written address overrides isolation: libvirt resets that bus to group 0.
            emulated_on.add(p.address.bus)
        elif ep.cls in rules.isolated and prule.isolation == "locked":
            if strict_auto:
                err(f"{who}: assigned devices never go on the default {prule.model}")
            # the default PHB's group is locked at 0 (qemuDomainSetupIsolationGroups): emulated
            # devices still go there whatever sits on it
            emulated_on.add(p.address.bus)
        elif ep.cls in rules.isolated:
            groups.setdefault(p.address.bus, set()).add(ep.group if ep.group is not None else ("alone", ep.name))
        else:
            emulated_on.add(p.address.bus)
    if strict_auto:
        for bus, gs in groups.items():
            if len(gs) > 1 or bus in emulated_on:
                err(f"bus {bus} mixes IOMMU groups or emulated devices; each group needs a bus of its own")

    # functions: a slot is shared only by controllers of one packing model (root ports, 8 to a
    # slot), joined by devices that are never unplugged (a device that shares its slot cannot be
    # unplugged: qemu_hotplug.c refuses it), and a shared slot has a function 0
    for (bus, slot), users in slot_users.items():
        if len(users) < 2:
            continue
        where = f"slot {bus:02x}:{slot:02x}"
        ctrl = [r for _, _, r in users if r is not None]
        others = [w for _, w, r in users if r is None]
        if not any(f == 0 for f, _, _ in users) and bus in by_index and not by_index[bus][0].root:
            err(f"{where} has no function 0")
        if not ctrl:
            continue  # chipset functions and multifunction endpoints: clashes were caught above
        unpluggable = [w for w in others if (bus, slot, w) not in shares and w not in chipset]
        if len({r.name for r in ctrl}) != 1 or ctrl[0].packs < 2 or unpluggable:
            err(f"{where} mixes " + ", ".join(sorted(w for _, w, _ in users)))
        elif len(users) > ctrl[0].packs:
            err(f"{where} holds {len(users)} functions; at most {ctrl[0].packs}")
        elif not any(f == 0 for f, _, _ in users):
            err(f"{where} has no function 0")

    # ports hold one thing on slot 0: one device, or one multifunction group (its functions share the
    # slot, function 0 first, as checked above), never a controller beside anything
    for (bus, slot), users in slot_users.items():
        if bus in by_index and by_index[bus][0].is_port and len(users) > 1 and (
                any(r is not None for _, _, r in users)
                or strict_auto and not all((bus, slot, w) in shares for _, w, _ in users)):
            err(f"port {bus} holds {len(users)} devices; a port holds one (or the functions of one "
                "multifunction device)")

    rep.bus_numbers = sum(r.bus_numbers for r, _ in by_index.values())
    if rep.bus_numbers > rules.bus_number_limit:
        err(f"{rep.bus_numbers} guest bus numbers; one PCI domain has {rules.bus_number_limit}")
    _budgets(layout, rules, rep, by_index, slot_users, io_limit)

    _capacity(layout, rules, rep, by_index, slot_users, groups, emulated_on)
    for i, (rule, c) in sorted(by_index.items()):
        if rule.hotplug_trap:  # counted now that every device has taken its slot
            lo, hi = rule.slots
            free = [s for s in range(lo, hi + 1) if (i, s) not in slot_users]
            if free:
                rep.warnings.append(
                    f"controller {i} ({c.model}) has {len(free)} free slots: libvirt places a hotplugged device "
                    "there and QEMU refuses it; hotplug with an explicit address on the pci-bridges behind it")
    return rep


def _budgets(layout, rules: RuleSet, rep: Report, by_index, slot_users, io_limit: int | None) -> None:
    from .rules.devices import IO_BAR

    if rules.bus(rules.root).bus_numbers:  # pseries: every PHB is a PCI domain of its own
        rep.budgets["bus numbers"] = Budget(rep.bus_numbers, rules.bus_number_limit)
    rep.budgets["controller indexes"] = Budget(max(by_index, default=0), rules.max_index)
    lo, hi = rules.bus(rules.root).slots
    rep.budgets[f"{rules.root} slots"] = Budget(sum(1 for b, s in slot_users if b == 0 and lo <= s <= hi),
                                               hi - lo + 1)
    for key, limit in rules.max_count.items():
        b = rules.bus(key)
        n = sum(1 for r, _ in by_index.values() if r.name == key)
        rep.budgets[f"{b.model} controllers" if not b.root else f"{b.model} buses"] = Budget(
            n + (1 if b.root else 0), limit + (1 if b.root else 0))
    # ports with an I/O-BAR device anywhere behind them get an I/O window from the firmware
    parent = {c.index: c.address.bus for _, c in by_index.values() if c.address is not None}

    def port_above(bus: int) -> int | None:
        seen = set()
        while bus in by_index and bus not in seen:
            seen.add(bus)
            if by_index[bus][0].is_port:
                return bus
            if bus not in parent:
                return None
            bus = parent[bus]
        return None

    if not any(b.is_port for b in rules.buses.values()):
        return  # no ports, no per-port I/O windows (pc, pseries)
    io = set()
    for p in layout.placed:
        if p.address is not None and p.endpoint.kind in IO_BAR:
            port = port_above(p.address.bus)
            if port is not None:
                io.add(port)
    rep.io_ports = sorted(io)
    row = of_kind(layout.firmware, rules.family)
    limit = io_limit if io_limit is not None else row.io_ports if row is not None else IO_PORT_WARN
    rep.budgets["ports with I/O windows"] = Budget(len(io), limit)
    if len(io) > limit:
        if io_limit is not None:
            held = f"the limit is {limit} (io_ports)"
        elif row is not None:
            held = (f"{row.name} gives I/O windows to {row.io_ports} (measured, {row.version}); past that: "
                    f"{row.past_io_ports}")
        else:
            held = f"the firmware's 64 KiB I/O space holds about {limit} such windows (an estimate)"
        msg = (f"{len(io)} ports have I/O-BAR devices behind them; {held}. Use modern virtio models, which need "
               "no I/O window, or 'hotunplug: false' so such devices sit on the root complex")
        (rep.errors if io_limit is not None else rep.warnings).append(msg)


def _capacity(layout, rules: RuleSet, rep: Report, by_index, slot_users, groups, emulated_on) -> None:
    used_buses = {b for b, _ in slot_users}
    for index, (rule, c) in sorted(by_index.items()):
        hotplug = rule.hotplug and getattr(c, "hotplug", True)
        if rules.hotplug_needs_acpi and not layout.acpi:
            # i440fx hotplug is ACPI-based, on pci-root and on the bridges behind it (measured 9.0:
            # a pc guest without <acpi/> takes no hotplug at all, a pci-bridge's slots included)
            hotplug = False
        if not hotplug or not rule.auto_endpoints:
            continue
        empty = index not in used_buses
        if groups.get(index) and index not in emulated_on:
            continue  # a bus of one IOMMU group: assigned devices of that group only
        classes = frozenset(cls for cls in HOTPLUG_CLASSES if cls not in rules.isolated
                            and rules.accepts(rule, rules.connect_of(cls), auto=True, endpoint=True))
        lo, hi = rule.slots
        free = [s for s in range(lo, hi + 1) if (index, s) not in slot_users]
        if classes and rep.node_of.get(index) is not None:
            for s in free:
                rep.positions[(index, s)] = classes
        elif classes:
            for s in free:
                rep.positions[(index, s)] = classes
                for cls in (c for c in HOTPLUG_CLASSES if c in classes):  # in a fixed order, not a set's
                    rep.giving.setdefault(cls, [])
                    if index not in rep.giving[cls]:
                        rep.giving[cls].append(index)
        if empty and rule.isolation == "group" and any(
                rules.accepts(rule, rules.connect_of(cls), auto=True, endpoint=True) for cls in rules.isolated):
            rep.empty_isolated.append(index)
            if rep.node_of.get(index) is None:
                for cls in (c for c in HOTPLUG_CLASSES if c in rules.isolated):
                    rep.giving.setdefault(cls, []).append(index)
    nodes = sorted({n for n in rep.node_of.values() if n is not None})
    for node in [None, *nodes]:
        out = rep.capacity if node is None else rep.node_capacity.setdefault(node, {})
        for cls in HOTPLUG_CLASSES:
            if cls in rules.isolated:
                out[cls] = sum(1 for b in rep.empty_isolated if rep.node_of.get(b) == node)
            else:
                out[cls] = sum(1 for (b, _), cs in rep.positions.items() if cls in cs and rep.node_of.get(b) == node)


def _numa_checks(layout: Layout, rules: RuleSet, rep: Report, by_index, slot_users) -> dict[int, int | None]:
    """NUMA nodes and busNr ranges; returns the NUMA node of every bus.

    * ``<node>`` only on rows that take one, and only a cell of ``<cpu><numa>``;
    * each expander's busNr within libvirt's range, and the guest bus numbers split
      into ranges (the root bus's from 0, each expander's from its busNr up to the next
      busNr; QEMU docs/pcie.txt section 4) that each hold their whole subtree;
    * warnings for a bus where libvirt's auto-placement meets a QEMU refusal, and for
      expanders a guest without ACPI cannot find."""
    err = rep.errors.append
    head: dict[int, tuple[int | None, int]] = {}  # bus -> (NUMA node, the bus heading its busNr range)

    def walk(i: int, seen: frozenset) -> tuple[int | None, int]:
        if i in head:
            return head[i]
        rule, c = by_index[i]
        node = dict(c.target).get("node")
        parent = c.address.bus if c.address is not None else None
        if rule.root or "busNr" in rule.target or parent not in by_index or parent in seen or parent >= i:
            out = (node, i)  # a root bus or an expander heads its own range (or a broken chain stops here)
        else:
            out = walk(parent, seen | {i})
        head[i] = out
        return out

    for i in sorted(by_index):
        walk(i, frozenset())
    for i, (rule, c) in sorted(by_index.items()):
        target = dict(c.target)
        who = f"controller {i} ({c.model})"
        if "node" in target:
            if "node" not in rule.target:
                err(f"{who} cannot be tied to a NUMA node" + (" (the default PHB never is)" if i == 0 else ""))
            elif target["node"] >= layout.numa_nodes:
                err(f"{who}: NUMA node {target['node']} is not a cell of <cpu><numa> ({layout.numa_nodes} cells)")
        if "busNr" in rule.target:
            lo, hi = rules.busnr_range
            if "busNr" not in target:
                err(f"{who} has no busNr; libvirt would pick one that need not hold its subtree")
            elif not lo <= target["busNr"] <= hi:
                err(f"{who}: busNr {target['busNr']} is out of range {lo}-{hi}")
        if "busNr" in rule.target and not layout.acpi:
            # measured from the guest (tests/test_guest_measure.py, test_aarch64_expander_seen): with UEFI
            # alone the expander's devices stay unseen; <acpi/> is needed as well
            rep.warnings.append(f"the guest finds {who}'s devices only through ACPI, which needs UEFI on this "
                                "machine: 'firmware: efi' in the spec (the plan then writes <acpi/> too), or a UEFI "
                                "loader and <features><acpi/> in the domain")
    starts = {0: 0}
    for i, (rule, c) in by_index.items():
        if "busNr" in rule.target and "busNr" in dict(c.target):
            starts[i] = dict(c.target)["busNr"]
    if len(starts) > 1 and rules.bus(rules.root).bus_numbers:
        size = {h: 0 for h in starts}
        for i, (rule, _) in by_index.items():
            h = head[i][1]
            if h in size:
                size[h] += rule.bus_numbers
        order = sorted(starts, key=lambda h: (starts[h], h))
        for k, h in enumerate(order):
            start = starts[h]
            if k + 1 < len(order) and starts[order[k + 1]] == start:
                err(f"controllers {h} and {order[k + 1]} both start at bus number {start}: busNr ranges overlap")
                continue
            end = starts[order[k + 1]] - 1 if k + 1 < len(order) else rules.bus_number_limit - 1
            what = f"controller {h} ({by_index[h][1].model})"
            rep.budgets[f"busNr range of {what}"] = Budget(size[h], end - start + 1)
            if size[h] > end - start + 1:
                err(f"{what} and the buses behind it need {size[h]} bus numbers, but its range is "
                    f"{start}-{end} ({end - start + 1}); the next busNr must move up")
    return {i: node for i, (node, _) in head.items()}
