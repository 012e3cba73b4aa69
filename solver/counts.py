"""Choose how many controllers of each model a guest needs: the count model.

Addresses are never searched: every port of a model is interchangeable with
every other, so a model over addresses spends its time on permutations of the
same non-answer.  The model here works on counts:

* **pools** are the positions the buses of one controller model offer
  (``count x slots``; the root bus offers its free slots);
* **demands** are what needs a position: boot endpoints by connect type,
  hotplug headroom by class, and the added controllers themselves;
* a demand may use a pool when the rule table says that bus accepts it, and
  hotplug demands only pools whose bus hotplugs.

A count vector is feasible when a flow saturates every demand.  Ports (buses
with one slot, e.g. pcie-root-port) are never searched: every port holds
exactly one thing, so their number is *derived* as the demand only ports can
take.  What is searched are the few multi-slot bridges and extra root buses
plus, for endpoints the user never unplugs, how many go on the root complex;
python-constraint2 enumerates those small domains under the feasibility
constraint, and the cheapest solution wins.  Upper bounds on each domain are
the point past which another controller of that model cannot help, so the
enumeration is exhaustive and its minimum is the true minimum of the model
(docs/design.md has the argument).

With two port models (q35's root ports and switch downstream ports) the root
ports are derived first, as many as the root bus's free slots hold, and the
downstream ports from the rest; the number of switches (upstream ports) is
searched.  A guest with NUMA nodes is a forest: the tree of the root bus for
devices without a node, and one tree per node behind that node's expander bus
(or PHBs on pseries).  The trees share nothing but the budgets and the root
slots the expanders take, so each is solved on its own (docs/design.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import ceil

from .errors import Cause, ProgrammingError
from .flow import max_flow
from .model import Connect, EndpointClass, Problem
from .rules import BusRule, RuleSet

__all__ = ["CountModel", "Counts", "Existing", "build_model", "choose_counts"]

ROOT = "@root"  # pool key of the bus a tree hangs from (controller index 0, or a node's expander bus)
FUNCTIONS = 8  # functions of a PCI slot: devices never unplugged share a root slot as up to 8 of them
_ORDER: dict[str, dict[str, int]] = {}  # family -> table position of each row (the index order)


@dataclass(frozen=True)
class Demand:
    """Positions something needs, and the pools that may give them."""

    key: str
    amount: int
    pools: frozenset[str]
    label: str  # in the user's words, for explanations

    @property
    def text(self) -> str:
        """The demand in the user's words, with its number once ("3 PCIe endpoints present at
        boot", "9 pcie-root-ports (8 per slot)")."""
        return self.label if self.label[:1].isdigit() else f"{self.amount} {self.label}"


@dataclass
class Counts:
    """A solution of the count model."""

    controllers: dict[str, int]  # added controllers by table key (ports included)
    on_root: dict[Connect, int]  # endpoints the user never unplugs, put on the root complex
    whole_buses: int = 0  # isolating buses taken whole (pseries: one per IOMMU group / hostdev hotplug)
    nodes: dict[int, "Counts"] = field(default_factory=dict)  # the tree of each NUMA node, by node
    expanders: int = 0  # expander buses on the root bus, one per node in ``nodes`` (0 where nodes use PHBs)

    @property
    def total(self) -> int:
        return sum(self.controllers.values()) + self.expanders + sum(c.total for c in self.nodes.values())


@dataclass(frozen=True)
class Existing:
    """What an existing guest already offers when it is extended (``topo-solve extend``).

    Its controllers and devices stay where they are; the free positions on its
    buses join the pools of their controller model, and its controllers count
    against the budgets.  Positions on buses that take no hotplug
    (``hotplug='off'``) are left out: extend never relies on them.
    """

    root_free: int  # free slots on the root bus
    free: dict[str, int]  # table key -> free positions on existing hotplug-capable buses of that model
    empty_isolated: int  # existing empty buses an isolated class may take whole (their slots not in free)
    counts: dict[str, int]  # existing controllers by table key, the root excluded
    bus_numbers: int  # guest bus numbers already used, the root's included
    max_index: int  # highest controller index in use; new controllers are numbered after it
    acpi: bool
    # With expander buses: the lowest busNr, where the root bus's range of guest bus numbers ends,
    # and the numbers that range already holds; new controllers of the root bus's tree go there.
    bus_limit: int | None = None
    root_range_used: int = 0
    # Controllers the guest's XML has without an address (kept): by table key, the least the plan
    # has of each; their indexes are already counted in ``max_index``.
    kept: dict[str, int] = field(default_factory=dict)
    root_hotplug: bool = True  # False: the root bus has <target hotplug='off'/> (pci-root, libvirt 7.9)


@dataclass
class CountModel:
    """Everything the count search needs, computed once from a problem."""

    problem: Problem
    rules: RuleSet
    root_free: int  # free root slots after chipset, fixed and pinned addresses
    endpoint_demand: Counter  # (connect, root_ok) -> count of boot endpoints to place
    hotplug: dict[EndpointClass, int]
    groups: dict[int, int]  # IOMMU group -> boot devices of an isolated class
    searched: list[str] = field(default_factory=list)  # table keys of searched models
    ports: list[str] = field(default_factory=list)  # table keys of derived (port) models
    hubs: list[str] = field(default_factory=list)  # derived too: buses of ports only (switch upstream ports)
    bounds: dict[str, int] = field(default_factory=dict)
    root_ok_max: dict[Connect, int] = field(default_factory=dict)
    existing: Existing | None = None  # set when extending a guest
    root_rule: BusRule | None = None  # the bus this tree hangs from; None: the machine's root bus
    node: int | None = None  # the NUMA node of this tree (None: the root bus's tree)
    fixed: dict[str, int] = field(default_factory=dict)  # controllers of other trees that plug in here
    nodes: dict[int, "CountModel"] = field(default_factory=dict)  # the trees of the NUMA nodes
    outside: Counter = field(default_factory=Counter)  # controllers of the other trees, for the budgets
    integrated: int = 0  # endpoints libvirt puts on the root bus only (virtio-iommu, pvpanic-pci)
    _pools_memo: dict = field(default_factory=dict, repr=False)
    _ctrl_memo: dict = field(default_factory=dict, repr=False)

    @property
    def root(self) -> BusRule:
        return self.root_rule or self.rules.bus(self.rules.root)

    @property
    def acpi(self) -> bool:
        return self.existing.acpi if self.existing else self.rules.acpi

    def _free(self, key: str) -> int:
        return self.existing.free.get(key, 0) if self.existing else 0

    def kept(self, key: str) -> int:
        """The least number of ``key`` controllers: the ones the guest's XML has without an address."""
        return self.existing.kept.get(key, 0) if self.existing and self.node is None else 0

    @property
    def pool_rules(self) -> tuple[BusRule, ...]:
        """Models whose buses give positions: the addable ones, and those an existing guest has free.

        A NUMA node's expander bus is never a pool here: what sits behind it is local to its node."""
        extra = tuple(b for b in self.rules.buses.values()
                      if not b.addable and not b.root and self._free(b.name) and b.name != self.rules.numa_root)
        return self.rules.addable + extra

    @property
    def port_pools(self) -> frozenset[str]:
        return frozenset(b.name for b in self.pool_rules if b.is_port)

    # -- the pieces of the flow network ---------------------------------
    def _bus_pools(self, connect: Connect, *, endpoint: bool, hotplug: bool,
                   unpluggable: bool = False) -> frozenset[str]:
        """Pools whose bus auto-accepts ``connect`` (and hotplugs, if asked).  ``unpluggable``: a
        boot device that must stay unpluggable, so not on a bus where QEMU refuses every hotplug
        and unplug (``hotplug_trap``: the pc expander bus's own slots).  A function of the model
        alone: asked thousands of times per search, answered once."""
        key = (connect, endpoint, hotplug, unpluggable)
        if key not in self._pools_memo:
            self._pools_memo[key] = self._bus_pools_of(connect, endpoint, hotplug, unpluggable)
        return self._pools_memo[key]

    def _bus_pools_of(self, connect: Connect, endpoint: bool, hotplug: bool, unpluggable: bool) -> frozenset[str]:
        out = set()
        if hotplug and self.rules.hotplug_needs_acpi and not self.acpi:
            return frozenset()  # no bus takes a hotplug without ACPI (i440fx)
        root = self.root
        root_live = root.hotplug and (self.existing is None or self.existing.root_hotplug or self.node is not None)
        policy = self.problem.layout
        if self.rules.accepts(root, connect, auto=True, endpoint=endpoint, policy=policy) and (
                root_live or not hotplug) and not (unpluggable and root.hotplug_trap):
            out.add(ROOT)
        for b in self.pool_rules:
            if self.rules.accepts(b, connect, auto=True, endpoint=endpoint, policy=policy) and (
                    b.hotplug or not hotplug) and not (unpluggable and b.hotplug_trap):
                out.add(b.name)
        return frozenset(out)

    def packed(self, on_root: dict[Connect, int]) -> int:
        """Functions taken on the root bus by devices that are never unplugged: the ones the search
        puts there and the ones libvirt keeps there (integrated).  Such devices share root slots as
        functions of one multifunction slot (8 to a slot, with root ports when there are any): no
        device of the slot can be unplugged then, which is what never unplugged means."""
        return self.integrated + sum(on_root.get(c, 0) for (c, ok) in self.endpoint_demand if ok)

    def _packs_with(self, b: BusRule) -> bool:
        """Whether controllers of ``b`` share root slots with the packed devices (root ports)."""
        return b.packs > 1 and self._ctrl_pools(b) == frozenset({ROOT})

    def demands(self, n: dict[str, int], on_root: dict[Connect, int]) -> list[Demand]:
        """Every demand for the controller counts ``n`` (ports excluded)."""
        rules = self.rules
        out: list[Demand] = []
        packed = self.packed(on_root)
        shared = next((key for key, count in n.items() if count and self._packs_with(rules.bus(key))), None)
        if packed and shared is None:
            out.append(Demand("root:packed", ceil(packed / FUNCTIONS), frozenset({ROOT}),
                              f"{packed} devices never unplugged on {self.root.model} ({FUNCTIONS} per slot)"))
        for (connect, root_ok), count in sorted(self.endpoint_demand.items()):
            if root_ok:
                count -= on_root.get(connect, 0)
            if count:
                out.append(Demand(f"boot:{connect}" + (":fixed" if root_ok else ""), count,
                                  self._bus_pools(connect, endpoint=True, hotplug=False, unpluggable=not root_ok),
                                  f"{_words(connect)} present at boot"))
        for cls, count in self.hotplug.items():
            if count and cls not in rules.isolated:
                connect = rules.connect_of(cls)
                out.append(Demand(f"hotplug:{cls}", count, self._bus_pools(connect, endpoint=True, hotplug=True),
                                  f"{cls} hotplug headroom"))
        for key, count in list(n.items()) + list(self.fixed.items()):
            b = rules.bus(key)
            if not count or b.root:
                continue
            pools = self._ctrl_pools(b)
            if b.name in pools and not self._free(b.name):
                # A model that nests in itself needs one of them hung elsewhere,
                # or the chain never reaches the root.  A free slot on an existing
                # bus of the model is such an anchor already: whatever the flow
                # puts there can swap with a new bridge.
                anchor = pools - {b.name}
                out.append(Demand(f"anchor:{key}", 1, anchor, f"{b.model} (the first one, outside the others)"))
                count -= 1
                if not count:
                    continue
            amount = ceil(count / b.packs)  # e.g. 8 root ports share one slot
            label = f"{count} {b.model}s" + (f" ({b.packs} per slot)" if b.packs > 1 else "")
            if key == shared and packed:  # the slots of root ports take the packed devices too
                amount = ceil((count + packed) / b.packs)
                label = f"{count} {b.model}s and {packed} devices never unplugged ({b.packs} per slot)"
            out.append(Demand(f"ctrl:{key}", amount, pools, label))
        return out

    def _ctrl_pools(self, b: BusRule) -> frozenset[str]:
        if b.name not in self._ctrl_memo:
            self._ctrl_memo[b.name] = self._ctrl_pools_of(b)
        return self._ctrl_memo[b.name]

    def _ctrl_pools_of(self, b: BusRule) -> frozenset[str]:
        """Pools a controller of model ``b`` may plug into: buses that accept it and can have a lower
        index.  Controllers are numbered in table order, and libvirt wants a controller's index above
        its bus's, so a later row's pool never holds an earlier row's controller (an upstream port goes
        on a root port, never on a downstream port: docs/design.md says why that loses nothing)."""
        pools = self._bus_pools(b.connect, endpoint=False, hotplug=False)
        order = _ORDER.setdefault(self.rules.family, {k: i for i, k in enumerate(self.rules.buses)})
        new = {a.name for a in self.rules.addable}
        here = order.get(b.name, len(order))
        return frozenset(p for p in pools if p == ROOT or p not in new or order[p] <= here)

    def pools(self, n: dict[str, int], whole: dict[str, int]) -> dict[str, int]:
        out = {ROOT: self.root_free}
        for b in self.pool_rules:
            out[b.name] = (n.get(b.name, 0) - whole.get(b.name, 0)) * b.nslots + self._free(b.name)
        return out

    def whole_bus_need(self) -> int:
        """Buses isolated classes take whole: one per IOMMU group (per 31 devices) and per hotplug."""
        slots = self._isolating().nslots if self._isolating() else 1
        need = sum(ceil(c / slots) for c in self.groups.values())
        need += sum(c for cls, c in self.hotplug.items() if cls in self.rules.isolated)
        return need

    def new_whole_bus_need(self) -> tuple[int, int]:
        """(new buses to take whole, existing empty ones left over for other devices)."""
        need = self.whole_bus_need()
        have = self.existing.empty_isolated if self.existing else 0
        return max(need - have, 0), max(have - need, 0)

    def _isolating(self) -> BusRule | None:
        for b in self.rules.addable:
            if b.isolation == "group":
                return b
        return None

    # -- evaluating one candidate ---------------------------------------
    def derive(self, searched: dict[str, int], on_root: dict[Connect, int]) -> tuple[dict[str, int], list[Demand]]:
        """Fill in the port and switch counts: each port holds exactly one demand unit that only
        ports take.

        Free ports of an existing guest hold some of those units first.  With several port
        models (root ports, switch downstream ports) the earlier one in the table takes as many
        units as its parent buses have room for (root ports: 8 per free root slot, after what
        only the root slots can hold), the later one the rest: any other split has the same
        number of ports and only less room for them.  Switches (``hubs``, buses of ports) are
        the fewest whose ports hold the rest, each taking a port itself: every switch costs
        two controllers (itself and its port) for ``slots - 1`` more ports, so fewer is cheaper
        and more only adds room nothing needs (docs/design.md)."""
        n = dict(searched)
        for p in self.ports + self.hubs:
            n[p] = 0
        demands = self.demands(n, on_root)
        ports = self.port_pools
        for d in demands:
            if d.pools & ports and not d.pools <= ports:
                raise ProgrammingError(f"{d.label} may use a port or another pool; the count model needs a "
                                       "searched variable for that choice")
        need = sum(d.amount for d in demands if d.pools and d.pools <= ports)
        need = max(need - sum(self._free(q) for q in ports), 0)
        pools = self.pools(n, {})
        caps: dict[str, int] = {}
        packed = self.packed(on_root)
        for p in self.ports:
            b = self.rules.bus(p)
            parents = self._ctrl_pools(b)
            if parents & set(self.hubs):
                continue  # downstream ports: as many as the switches hold
            # root ports and the packed devices share the root slots by function
            shares = self._packs_with(b)
            room = sum(pools.get(q, 0) for q in parents) - sum(
                d.amount for d in demands if d.pools <= parents and not (shares and d.key == "root:packed"))
            caps[p] = max(max(room, 0) * b.packs - (packed if shares else 0), 0)
        for h in self.hubs:
            b = self.rules.bus(h)
            excess = need - sum(caps.values()) - self._free(h)
            if excess > 0:
                n[h] = ceil(excess / max(b.nslots - 1, 1))  # each holds nslots ports and takes one
            n[h] = max(n[h], self.kept(h))
            need += n[h]  # each switch's upstream port takes a port
        capped = [p for p in self.ports if p in caps]
        for p in capped:
            n[p] = min(need, caps[p])
            need -= n[p]
        rest = [p for p in self.ports if p not in caps] or capped[-1:]
        if rest:
            n[rest[0]] += need  # past every cap: the flow says what does not fit
        for p in self.ports:
            n[p] = max(n[p], self.kept(p))  # the XML's own ports stay, even where fewer would do
        return n, self.demands(n, on_root)

    def feasible(self, n: dict[str, int], demands: list[Demand]) -> tuple[bool, dict]:
        whole = {}
        iso = self._isolating()
        need, spare = self.new_whole_bus_need()
        if need:
            if iso is None or n.get(iso.name, 0) < need:
                return False, {"whole": self.whole_bus_need()}
            whole[iso.name] = need
        pools = self.pools(n, whole)
        if spare and iso is not None:
            pools[iso.name] += spare * iso.nslots  # existing empty buses no assigned device needs
        flow, cut = max_flow(demands, pools)
        return flow == sum(d.amount for d in demands), {"flow": flow, "cut": cut, "pools": pools}

    def works(self, n: dict[str, int], on_root: dict[Connect, int]) -> bool:
        full, demands = self.derive(n, on_root)
        return not self.budget_causes(full) and self.feasible(full, demands)[0]

    def on_root_for(self, n: dict[str, int]) -> dict[Connect, int] | None:
        """How many devices never unplugged go on the root bus, for the searched counts ``n``; None
        when no choice is feasible.  Derived, not searched (docs/design.md, "Devices never unplugged"):

        * where the root bus takes the device anyway (pc, pseries), all of them: packed 8 to a slot
          they never take more room than one each elsewhere;
        * where only ports take it otherwise (PCIe devices on q35 and virt), as many as fit: each one
          on the root bus is one port fewer and takes the root function that port would have taken;
          one fewer when the root functions run out and a root port must stay to carry a switch;
        * where only bridges take it otherwise (conventional devices on q35 and virt), the fewest that
          make the bridges' slots suffice: each takes a root function a root port could use, and saves
          nothing once the bridges hold the rest."""
        if not self.root_ok_max:
            return {} if self.works(n, {}) else None
        cap = self.root_free * FUNCTIONS
        fixed: dict[Connect, int] = {}
        ports: list[Connect] = []
        bridges: list[Connect] = []
        for c, k in sorted(self.root_ok_max.items()):
            pools = self._bus_pools(c, endpoint=True, hotplug=False)
            if ROOT in pools:
                fixed[c] = min(k, cap)
            elif pools and pools <= self.port_pools:
                ports.append(c)
            else:
                bridges.append(c)

        def with_ports(base: dict[Connect, int]) -> dict[Connect, int] | None:
            """``base`` plus the port-taking devices, as many on the root bus as work."""
            left = cap - sum(base.values())
            best = dict(base)
            for c in ports:  # (one connect type takes ports on q35 and virt)
                top = max(min(self.root_ok_max[c], left), 0)
                for x in (top, top - 1):
                    if x >= 0 and self.works(n, {**best, c: x}):
                        best[c] = x
                        break
                else:
                    return None
            return best if ports or self.works(n, best) else None

        if not bridges:
            return with_ports(fixed)
        c = bridges[0]  # (one connect type takes bridges on q35 and virt)
        lo, hi = 0, min(self.root_ok_max[c], cap - sum(fixed.values()))
        if hi < 0:
            return None
        none = with_ports({**fixed, c: 0})
        if none is not None:
            return none  # the bridges hold them all: none needs the root bus
        # The root functions these devices may take are those the ports and the controllers only
        # the root bus holds leave (4,095 e1000 never unplugged on q35: filling all 240 functions
        # left none for the root port the pcie-to-pci-bridge needs, and the search gave up).  A
        # port-taking device on the root bus takes one function and saves one port's: the sum stays.
        if with_ports({**fixed, c: hi}) is None:
            capped = min(hi, self.root_functions_left(n, fixed))
            if capped <= 0 or capped >= hi or with_ports({**fixed, c: capped}) is None:
                return None  # even the most the root bus has room for leaves the bridges short
            hi = capped
        while lo < hi:  # the fewest that work: below ``hi`` more on the root bus only helps the bridges
            mid = (lo + hi) // 2
            if with_ports({**fixed, c: mid}) is not None:
                hi = mid
            else:
                lo = mid + 1
        return with_ports({**fixed, c: lo})

    def root_functions_left(self, n: dict[str, int], on_root: dict[Connect, int]) -> int:
        """The root functions left for more devices never unplugged, for the searched counts ``n`` with
        ``on_root`` already there: what the ports (packed with them) and the controllers only the root
        bus holds (whole slots) leave.  A port-taking device on the root bus takes one function and
        saves one port's, so those are counted as ports."""
        full, demands = self.derive(n, dict(on_root))
        port_functions = sum(full.get(p, 0) for p in self.ports if self._packs_with(self.rules.bus(p)))
        whole = sum(d.amount for d in demands
                    if d.pools == frozenset({ROOT}) and d.key.startswith(("ctrl:", "anchor:"))
                    and not self._packs_with(self.rules.bus(d.key.partition(":")[2])))
        return (self.root_free - whole) * FUNCTIONS - port_functions - sum(on_root.values())

    def cost(self, n: dict[str, int], on_root: dict[Connect, int]) -> tuple:
        bus_numbers = sum(c * self.rules.bus(k).bus_numbers for k, c in n.items())
        order = tuple(n.get(b.name, 0) for b in self.rules.addable)
        # fewest controllers, then fewest bus numbers, then fewest devices moved to
        # the root complex (closer to what libvirt itself does), then table order.
        return (sum(n.values()), bus_numbers, sum(on_root.values()), order)

    def budget_causes(self, n: dict[str, int]) -> list[Cause]:
        """The budgets ``n`` breaks, counted with the controllers of the other trees (``outside``)."""
        causes = []
        ex = self.existing
        n = Counter(n) + Counter(self.fixed) + self.outside
        # new indexes follow the highest in use; the kept controllers have theirs already
        total = sum(n.values()) + (ex.max_index - sum(ex.kept.values()) if ex else 0)
        if total > self.rules.max_index:
            causes.append(Cause("controller indexes", total + 1, self.rules.max_index + 1,
                                f"libvirt numbers PCI controllers 0-{self.rules.max_index}",
                                "drop devices or headroom, or use fewer, larger buses"))
        buses = (ex.bus_numbers if ex else 1) + sum(c * self.rules.bus(k).bus_numbers for k, c in n.items())
        if buses > self.rules.bus_number_limit:
            causes.append(Cause("guest bus numbers", buses, self.rules.bus_number_limit,
                                "one PCI domain has 256 bus numbers", "drop devices or headroom"))
        if ex is not None and ex.bus_limit is not None:
            used = ex.root_range_used + sum(c * self.rules.bus(k).bus_numbers for k, c in n.items())
            if used > ex.bus_limit:
                causes.append(Cause(f"guest bus numbers below busNr {ex.bus_limit}", used, ex.bus_limit,
                                    f"the lowest expander bus starts at busNr {ex.bus_limit}, and everything "
                                    f"behind {self.rules.root} must number below it",
                                    "raise that busNr (and the ones above it) in the domain XML"))
        for key, limit in self.rules.max_count.items():
            have = n.get(key, 0) + (ex.counts.get(key, 0) if ex else 0)
            if have > limit:
                b = self.rules.bus(key)
                causes.append(Cause(f"{b.model} controllers", have + (1 if b.root else 0),
                                    limit + (1 if b.root else 0), f"{self.rules.family} allows no more",
                                    "ask for less headroom of the class that needs them"))
        return causes


def _words(connect: Connect) -> str:
    return {Connect.PCIE_DEVICE: "PCIe endpoints", Connect.PCI_DEVICE: "conventional PCI endpoints"}.get(
        connect, str(connect))


def build_model(problem: Problem, rules: RuleSet, given: dict, existing: Existing | None = None,
                memo: dict | None = None) -> CountModel:
    """Classify the problem's endpoints into demands (see module docstring).

    ``given`` maps the endpoints whose address is already decided (pinned or
    chipset-fixed) to it; they take no position from the pools.  With
    ``existing``, the problem's endpoints are the ones still to place (devices
    being moved) next to an existing guest.

    Endpoints and headroom without a NUMA node make the root bus's tree; those
    of each node a tree of their own in ``model.nodes``, hung from the family's
    ``numa_root`` row: one expander bus on the root bus (its 32 slots are that
    tree's root pool), or, where that row is itself a root bus (pseries PHBs),
    as many of those as the node needs.

    ``memo``: a dict kept across calls that differ in their headroom only (the same endpoints,
    ``given`` and ``existing``): each tree's walk over the endpoints is done once, not per call.
    """
    root_taken = {a.slot for n, a in given.items() if a is not None and a.bus == 0}
    root_free = existing.root_free if existing else len(rules.free_root_slots(root_taken))
    model = _tree(problem, rules, given, existing, None, None, root_free, memo)
    if memo is not None and "nodes" in memo:
        placed_nodes = memo["nodes"]
    else:
        placed_nodes = {ep.node for ep in problem.endpoints if ep.node is not None and ep.name not in given}
        if memo is not None:
            memo["nodes"] = placed_nodes
    nodes = sorted(placed_nodes | set(problem.requested_by_node()))
    if nodes:
        numa_root = rules.bus(rules.numa_root)
        for node in nodes:
            # An expander's bus is the root pool of its node; a node on PHBs has no bus but its own PHBs.
            model.nodes[node] = _tree(problem, rules, given, None, node, numa_root,
                                      0 if numa_root.root else numa_root.nslots, memo)
        if not numa_root.root:
            model.fixed[numa_root.name] = len(nodes)  # each expander takes a slot of the root bus
        _set_bounds(model)
    return model


def _endpoints_of(problem: Problem, rules: RuleSet, given: dict, node: int | None,
                  root: BusRule) -> tuple[Counter, Counter, int]:
    """The endpoints of one tree still to place: demand per (connect, may sit on the root), IOMMU
    groups, and the integrated endpoints."""
    endpoint_demand: Counter = Counter()
    groups: Counter = Counter()
    kinds: Counter = Counter()  # (class, never unplugged) -> endpoints: the rules are asked once per kind
    integrated = 0
    for ep in problem.endpoints:
        if ep.cls is None or ep.node != node or ep.name in given:
            continue
        if ep.cls in rules.isolated:
            groups[ep.group if ep.group is not None else -1 - len(groups)] += 1
            continue
        if ep.integrated:
            integrated += 1
            continue
        kinds[(ep.cls, ep.root_ok and len(ep.functions) == 1)] += 1
    for (cls, never_unplugged), count in kinds.items():
        connect = rules.connect_of(cls)
        # A device never unplugged may sit on the root bus (at an address the plan writes, where
        # libvirt's auto-placement would not put it) and share a slot there with others as functions.
        root_ok = never_unplugged and rules.accepts(root, connect, auto=False, endpoint=True)
        endpoint_demand[(connect, root_ok)] += count
    return endpoint_demand, groups, integrated


def _tree(problem: Problem, rules: RuleSet, given: dict, existing: Existing | None, node: int | None,
          root_rule: BusRule | None, root_free: int, memo: dict | None = None) -> CountModel:
    root = root_rule or rules.bus(rules.root)
    if memo is None:
        endpoint_demand, groups, integrated = _endpoints_of(problem, rules, given, node, root)
    else:
        if node not in memo:
            memo[node] = _endpoints_of(problem, rules, given, node, root)
        endpoint_demand, groups, integrated = memo[node]
    hotplug = problem.requested() if node is None else problem.requested_by_node().get(node, {})
    model = CountModel(problem=problem, rules=rules, root_free=root_free, endpoint_demand=Counter(endpoint_demand),
                       hotplug=dict(hotplug), groups=dict(groups), existing=existing,
                       root_rule=root_rule, node=node, integrated=integrated)
    model.ports = [b.name for b in rules.addable if b.is_port]
    model.hubs = [b.name for b in rules.addable if not b.is_port and _is_hub(model, b)]
    model.searched = [b.name for b in rules.addable if not b.is_port and b.name not in model.hubs]
    # packed on the root bus: the machine's root bus only (a node's tree keeps whole slots, but a device
    # never unplugged may still take a slot of its expander's own bus, where QEMU unplugs nothing)
    model.root_ok_max = {c: k for (c, ok), k in endpoint_demand.items() if ok} if node is None else {}
    _set_bounds(model)
    return model


def _is_hub(model: CountModel, b: BusRule) -> bool:
    """A bus that takes ports only (a switch's upstream port)."""
    port_connects = {model.rules.bus(p).connect for p in model.ports}
    return bool(b.accepts) and b.accepts <= port_connects


def _set_bounds(model: CountModel) -> None:
    model.bounds = {key: _upper_bound(model, model.rules.bus(key)) for key in model.searched}


def _upper_bound(model: CountModel, b: BusRule) -> int:
    """Past this many, another controller of this model cannot lower any shortfall."""
    rules = model.rules
    reach = 0  # positions everything this bus could take would need
    for (connect, _), count in model.endpoint_demand.items():
        if rules.accepts(b, connect, auto=True, endpoint=True):
            reach += count
    for cls, count in model.hotplug.items():
        if cls not in rules.isolated and rules.accepts(b, rules.connect_of(cls), auto=True, endpoint=True):
            reach += count
    if b.isolation == "group":
        extra = model.new_whole_bus_need()[0]
    else:
        extra = 0
    net = b.nslots - (0 if b.root else 1)  # a non-root bus takes a slot itself
    bound = extra + ceil((reach + 1) / max(net, 1))
    if b.name in rules.max_count:
        have = model.existing.counts.get(b.name, 0) if model.existing else 0
        bound = min(bound, max(rules.max_count[b.name] - have, 0) + 1)  # one past the limit: lets the budget explain
    return max(bound, model.kept(b.name))


def choose_counts(model: CountModel) -> Counts | None:
    """The cheapest feasible counts, or None.  Exhaustive over the bounded domains.

    The NUMA nodes' trees first, each on its own; then the root bus's tree, whose
    budgets count the nodes' controllers too (``outside``)."""
    if not may_fit(model):
        return None
    nodes: dict[int, Counts] = {}
    for node, sub in sorted(model.nodes.items()):
        counts = _choose(sub)
        if counts is None:
            return None
        nodes[node] = counts
    model.outside = _outside(model, nodes)
    counts = _choose(model)
    if counts is not None and nodes:
        counts.nodes = nodes
        counts.expanders = sum(model.fixed.values())
    return counts


def least_controllers(model: CountModel) -> int:
    """No layout of this tree has fewer new controllers: every unit of demand only a port may take
    needs a port of its own (a new one, or a free one of the existing guest), with the devices never
    unplugged on the root bus as many as can be, plus the searched controllers' lower bound."""
    if model.nodes:
        return sum(least_controllers(sub) for sub in model.nodes.values()) + sum(model.fixed.values()) \
            + _least(model)
    return _least(model)


def _port_units(model: CountModel) -> int:
    """Ports any layout of this tree needs beyond the existing free ones (see ``least_controllers``)."""
    zero = {k: 0 for k in model.searched}
    for p in model.ports + model.hubs:
        zero[p] = 0
    most = {c: min(k, model.root_free * FUNCTIONS) for c, k in model.root_ok_max.items()}
    ports = model.port_pools
    units = sum(d.amount for d in model.demands(zero, most) if d.pools and d.pools <= ports)
    return max(units - sum(model._free(q) for q in ports), 0)


def _least(model: CountModel) -> int:
    return _port_units(model) + (_searched_lower_bound(model) if model.searched else 0)


def may_fit(model: CountModel) -> bool:
    """A necessary condition, from bounds alone: the fewest controllers any layout needs fit the index
    and bus-number budgets (every controller takes an index and at least... one bus number, but a PHB
    none).  A problem past it is infeasible without a search."""
    ex = model.existing
    least = least_controllers(model)
    used = (ex.max_index - sum(ex.kept.values())) if ex else 0
    if least + used > model.rules.max_index:
        return False
    numbers = min((b.bus_numbers for b in model.rules.addable), default=1)
    return (ex.bus_numbers if ex else 1) + least * numbers <= model.rules.bus_number_limit


def _outside(model: CountModel, nodes: dict[int, Counts]) -> Counter:
    out: Counter = Counter()
    for c in nodes.values():
        out.update(c.controllers)
    return out


def _choose(model: CountModel) -> Counts | None:
    """The cheapest feasible candidate, by iterative deepening on the searched controllers.

    A candidate whose searched controllers add up to ``s`` costs at least ``s`` (the
    derived ports only add), so the layers ``s = lower bound, lower bound + 1, ...``
    are searched in turn, each exhaustively (python-constraint2, with an exact-sum
    constraint), and the search stops once ``s`` passes the cheapest total found: no
    later layer can beat it.  The answer is the one the whole bounded domain would
    give, without visiting the layers that cannot win (pc with 5,000 devices: a
    handful of candidates instead of 260)."""
    from constraint import BacktrackingSolver, ExactSumConstraint, FunctionConstraint, Problem as CSP

    names = list(model.searched)
    chosen: dict[tuple, dict[Connect, int] | None] = {}  # searched counts -> devices on the root bus

    def on_root(n: dict[str, int]) -> dict[Connect, int] | None:
        key = tuple(sorted(n.items()))
        if key not in chosen:
            chosen[key] = model.on_root_for(n)
        return chosen[key]

    def ok(*values: int) -> bool:
        return on_root(dict(zip(names, values))) is not None

    # a cheap necessary condition first: the searched buses' slots, with what the root bus and the
    # existing guest have free, must hold what no port may take (as _searched_lower_bound counts it)
    need, have = _positions_needed(model)
    slots = [_net_slots(model, k) for k in names]

    def roomy(*values: int) -> bool:
        return have + sum(v * s for v, s in zip(values, slots)) >= need

    def layer(total: int | None) -> list[dict]:
        if not names:
            return [{}] if ok() else []
        csp = CSP(BacktrackingSolver())
        for key in model.searched:
            csp.addVariable(key, list(range(model.kept(key), model.bounds[key] + 1)))
        if total is not None:
            csp.addConstraint(ExactSumConstraint(total), list(model.searched))
        csp.addConstraint(FunctionConstraint(roomy), names)
        csp.addConstraint(FunctionConstraint(ok), names)
        return csp.getSolutions()

    best = None
    if model.searched:
        top = sum(model.bounds[k] for k in model.searched)
        layers = range(min(_searched_lower_bound(model), top), top + 1)
    else:
        layers = [None]
    # a layer's candidates have at least its searched controllers plus the ports only ports can
    # hold: once that passes the index budget, no later layer fits either (a necessary condition)
    ex = model.existing
    floor = _port_units(model) + sum(model.fixed.values()) + sum(model.outside.values()) + (
        (ex.max_index - sum(ex.kept.values())) if ex else 0)
    ports_floor = _port_units(model)  # the ports every candidate needs beside its searched controllers
    for total in layers:
        if best is not None and total is not None and total + ports_floor > best[0][0]:
            break  # every later candidate costs at least `total` and those ports
        if total is not None and total + floor > model.rules.max_index:
            break
        for assignment in layer(total):
            n = {k: assignment[k] for k in model.searched}
            placed_on_root = on_root(n)
            full, _ = model.derive(n, placed_on_root)
            key = model.cost(full, placed_on_root)
            if best is None or key < best[0]:
                best = (key, Counts(full, placed_on_root, model.whole_bus_need()))
    return best[1] if best else None


def _positions_needed(model: CountModel) -> tuple[int, int]:
    """(positions no port may give that the devices and headroom need, positions the root bus and
    the existing guest give them): devices never unplugged packed on the root bus as tightly as
    possible, an isolating bus taken whole giving none to anyone else."""
    zero = {k: 0 for k in model.searched}
    most = {c: min(k, model.root_free * FUNCTIONS) for c, k in model.root_ok_max.items()}
    ports = model.port_pools
    need = sum(d.amount for d in model.demands(zero, most)
               if d.key.startswith(("boot:", "hotplug:", "root:packed")) and not d.pools & ports)
    have = model.root_free + sum(model._free(b.name) for b in model.pool_rules if not b.is_port)
    iso = model._isolating()
    spare = model.new_whole_bus_need()[1] * iso.nslots if iso is not None else 0
    return need, have + spare


def _net_slots(model: CountModel, key: str) -> int:
    """The positions a searched controller adds to those no port gives: its bus's slots, less the
    one it takes itself when no port may hold it (a pci-bridge on q35 sits in another bridge)."""
    b = model.rules.bus(key)
    pools = set() if b.root else model._ctrl_pools(b)  # a PHB is a bus of its own: it sits in no slot
    return b.nslots - (1 if pools and not pools & model.port_pools else 0)


def _searched_lower_bound(model: CountModel) -> int:
    """No feasible candidate has fewer searched controllers than this.

    Endpoints and headroom that no port may take need positions on the root bus, on
    existing buses, or on searched buses; a searched controller gives at most its
    bus's slots, and an isolating bus taken whole gives none to anyone else."""
    need, have = _positions_needed(model)
    room = max((_net_slots(model, k) for k in model.searched), default=0)
    whole = model.new_whole_bus_need()[0]
    kept = sum(model.kept(k) for k in model.searched)
    if need <= have or room == 0:
        return max(whole, kept)
    return max(whole + ceil((need - have) / room), kept)


def explain(model: CountModel) -> list[Cause]:
    """Why no counts work, told from the candidate that comes closest.

    A NUMA node's tree that fails alone is explained first, in its node's
    words.  Otherwise every candidate of the (bounded) search of the root bus's
    tree is tried again; the one whose flow falls shortest of the demand names
    the binding limit.  A candidate whose positions all fit but that breaks a
    budget (indexes, bus numbers, PHBs, counted with the nodes' controllers) is
    explained by that budget.
    """
    nodes: dict[int, Counts] = {}
    for node, sub in sorted(model.nodes.items()):
        counts = _choose(sub)
        if counts is None:
            return [Cause(f"NUMA node {node}: {c.what}", c.needed, c.limit, c.reason, c.hint) for c in _explain(sub)]
        nodes[node] = counts
    model.outside = _outside(model, nodes)
    return _explain(model)


def _explain(model: CountModel) -> list[Cause]:
    import itertools

    best = None  # (shortfall, cost, full counts, demands, info)
    ranges = [range(model.kept(k), model.bounds[k] + 1) for k in model.searched]
    # Below the lower bound every candidate falls short; from it upwards, fewest controllers
    # first, so a budget that binds is named by the first candidate whose positions all fit.
    low = _searched_lower_bound(model) if model.searched else 0
    # devices that save a port on the root bus go there first (each takes the function its port would)
    ports_first = {c for c in model.root_ok_max if (p := model._bus_pools(c, endpoint=True, hotplug=False))
                   and p <= model.port_pools}
    candidates = sorted((v for v in itertools.product(*ranges) if sum(v) >= low), key=sum) or [
        tuple(r[-1] for r in ranges)]
    for values in candidates:
        n = dict(zip(model.searched, values))
        # as many devices never unplugged on the root bus as leave room for the ports there
        on_root: dict[Connect, int] = {}
        for c, k in sorted(model.root_ok_max.items(), key=lambda item: item[0] not in ports_first):
            # a device that takes a port otherwise swaps that port's function for its own: as many as fit
            room = model.root_free * FUNCTIONS if c in ports_first else model.root_functions_left(n, on_root)
            on_root[c] = max(min(k, room), 0)
        full, demands = model.derive(n, on_root)
        ok, info = model.feasible(full, demands)
        if ok:
            causes = model.budget_causes(full)
            if causes:
                return causes
            continue
        short = info["whole"] if "whole" in info else sum(d.amount for d in demands) - info["flow"]
        key = (short, sum(full.values()))
        if best is None or key < best[0]:
            best = (key, full, demands, info)
    if best is None:
        return []
    _, full, demands, info = best
    if "whole" in info:
        iso = model._isolating()
        limit = model.rules.max_count.get(iso.name, 0) if iso else 0
        return [Cause("host bridges (PHBs) for assigned devices", info["whole"], limit,
                      f"every IOMMU group at boot and every assigned device to hotplug needs an empty PHB, and "
                      f"{model.rules.family} has {limit} besides the default one",
                      "hotplug fewer assigned devices, or share IOMMU groups")]
    return _flow_causes(model, full, demands, info)


def _flow_causes(model: CountModel, full: dict[str, int], demands: list[Demand], info: dict) -> list[Cause]:
    cut_demands, cut_pools = info["cut"]
    pools = info["pools"]
    short = [d for d in demands if d.key in cut_demands]
    root = model.root.model
    for d in short:
        key = d.key.partition(":")[2]
        if d.key.startswith("ctrl:") and model.rules.bus(key).packs > 1 and cut_pools <= {ROOT}:
            # Ports packed on the root complex: count in ports, the user's unit.
            b = model.rules.bus(key)
            other = sum(x.amount for x in short if x is not d)
            limit = max(model.root_free - other, 0) * b.packs
            users = [x.text for x in model.derive({k: full[k] for k in model.searched},
                                                                    {})[1] if x.pools == frozenset({key})]
            taken = f", {other} taken by devices on it" if other else ""
            return [Cause(f"{b.model}s", full[key], limit,
                          f"{root} has {model.root_free} free slots{taken}, {b.packs} {b.model}s each",
                          f"they hold {', '.join(users)}; ask for at most {full[key] - (full[key] - limit)} "
                          "in all, or mark devices you never unplug 'hotunplug: false' so they sit on "
                          f"{root} itself")]
    if not cut_pools:  # the pools these demands may use are all empty: name them
        cut_pools = frozenset().union(*(d.pools for d in short)) if short else frozenset()
    room = sum(pools[p] for p in cut_pools)
    need = sum(d.amount for d in short)
    names = []
    for p in sorted(cut_pools):
        if p == ROOT:
            names.append(f"{root} has {model.root_free} free slots")
        elif model.existing and not full.get(p, 0):
            names.append(f"the existing {model.rules.bus(p).model}s have {pools[p]} free slots")
        else:
            names.append(f"{full.get(p, 0)} {model.rules.bus(p).model}s give {pools[p]} slots")
    what = " + ".join(d.text for d in short)
    return [Cause(what or "the spec", need, room, ", ".join(names) or "no bus on this machine accepts them",
                  "ask for less headroom, or use device models of a class with room")]
