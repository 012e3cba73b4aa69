"""Properties of the planner over generated specs of every machine family.

Each class quotes the rule it checks.  Specs come from
``strategies.from_machine``: small, valid by construction.  Settings are the
shared ``SETTINGS`` profile (50 examples per test in CI, no deadline).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from topo_solve.counts import Counts, build_model, choose_counts
from topo_solve.domain.read import read_layout
from topo_solve.domain.write import render_domain
from topo_solve.errors import ProgrammingError
from topo_solve.model import Problem
from topo_solve.place import given_addresses, place
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.verify import verify

from .strategies import FAMILY_NAMES, SETTINGS, from_machine, problem_of, problems, switch_specs

family = pytest.mark.parametrize("family", FAMILY_NAMES)

# Hotplug counts up to 40 an entry reach every addable row: pci-bridges on pc
# (30 free root slots), extra PHBs on pseries, a pci-bridge nested on the
# pcie-to-pci-bridge on q35 and virt.
SIZES = {"max_hotplug": 40}
# The brute force enumerates every count vector of up to three models, so it
# keeps q35 and virt small; pc and pseries have one addable model each.
BRUTE = {"q35": {"max_entries": 3, "max_count": 2, "max_hotplug": 4},
         "virt": {"max_entries": 3, "max_count": 2, "max_hotplug": 4},
         "pc": {"max_hotplug": 40}, "pseries": {"max_hotplug": 40}}


def _counts(problem: Problem) -> Counts:
    rules = FAMILIES[problem.family]
    counts = choose_counts(build_model(problem, rules, given_addresses(problem, rules)))
    assert counts is not None
    return counts


def _works(problem: Problem, counts: Counts) -> bool:
    """Whether first-fit placement with these counts gives a layout that verifies and fits."""
    rules = FAMILIES[problem.family]
    try:
        layout = place(problem, rules, counts)
    except ProgrammingError:  # placement found no slot for something
        return False
    report = verify(layout, rules)
    return not report.errors and report.fits(problem.request())


@family
class TestEveryPlanVerifies:
    """README: "topo-solve ... computes the layout with the fewest controllers that guarantees
    that headroom under the machine type's rules".  So: the independent verifier finds no broken
    rule in any plan, the capacity of each class is at least what was asked, and the whole request
    fits at once (report.fits)."""

    @SETTINGS
    @given(data=st.data())
    def test_plan_verifies_and_fits(self, family, data):
        problem = data.draw(problems(family, **SIZES))
        plan = solve(problem)
        rules = FAMILIES[family]
        report = verify(plan.layout, rules)
        assert report.errors == []
        for cls, n in problem.requested().items():
            assert report.capacity[cls] >= n, cls
        assert report.fits(problem.requested())
        assert report.capacity == plan.capacity


@family
class TestMinimal:
    """docs/design.md, "Why it is minimal": "for a fixed vector of searched counts, fewer ports than
    the derived number cannot be feasible", and the enumeration is exhaustive, "so the cheapest
    feasible candidate is the minimum of the model; by (1) no layout with fewer controllers
    exists".  Checked two ways against placement + verification, which share no code with the
    count model: one controller fewer of any model fails, and a brute-force search over all
    count vectors finds no smaller total."""

    @SETTINGS
    @given(data=st.data())
    def test_one_fewer_of_any_model_fails(self, family, data):
        problem = data.draw(problems(family, **SIZES))
        rules = FAMILIES[family]
        counts = _counts(problem)
        assert place(problem, rules, counts) == solve(problem).layout  # the counts solve() used
        for key, n in counts.controllers.items():
            if n == 0:
                continue
            fewer = Counts({**counts.controllers, key: n - 1}, dict(counts.on_root), counts.whole_buses)
            note(f"{key}: {n} -> {n - 1}")
            assert not _works(problem, fewer), f"the plan has {n} {key} but {n - 1} work too"

    @SETTINGS
    @given(data=st.data())
    def test_total_equals_brute_force_minimum(self, family, data):
        problem = data.draw(problems(family, **BRUTE[family]))
        rules = FAMILIES[family]
        counts = _counts(problem)
        total = counts.total
        assert _works(problem, counts)
        keys = [b.name for b in rules.addable]
        # every vector with a smaller total, each model up to two more than the plan has
        ranges = [range(counts.controllers.get(k, 0) + 3) for k in keys]
        model = build_model(problem, rules, given_addresses(problem, rules))
        root_options = [[(c, j) for j in range(min(k, model.root_free * 8) + 1)] for c, k in model.root_ok_max.items()]
        for vector in itertools.product(*ranges):
            if sum(vector) >= total:
                continue
            for on_root in itertools.product(*root_options):
                candidate = Counts(dict(zip(keys, vector)), dict(on_root), counts.whole_buses)
                assert not _works(problem, candidate), \
                    f"{dict(zip(keys, vector))} (total {sum(vector)}, on root {dict(on_root)}) " \
                    f"works; the planner used {counts.controllers} (total {total})"


@family
class TestDeterministic:
    """style.md lesson 9: "Deterministic output by construction ... so the same plan always gives
    the same bytes" -- two solves of the same spec render byte-identical XML."""

    @SETTINGS
    @given(data=st.data())
    def test_two_solves_render_the_same_bytes(self, family, data):
        spec = data.draw(from_machine(family, **SIZES))
        first = render_domain(solve(problem_of(spec)))
        second = render_domain(solve(problem_of(spec)))
        assert first == second


@family
class TestIdempotent:
    """README: the XML is complete, "so libvirt adds and moves nothing", and audit reads it back:
    the domain XML of a plan, read back and verified as any domain would be, has exactly the
    capacity the plan promised, and breaks no rule."""

    @SETTINGS
    @given(data=st.data())
    def test_read_back_has_the_planned_capacity(self, family, data):
        plan = solve(data.draw(problems(family, **SIZES)))
        xml = render_domain(plan)
        layout, rules = read_layout(xml, "plan.xml")
        assert rules.family == family
        report = verify(layout, rules, strict_auto=False)
        assert report.errors == []
        assert report.capacity == plan.capacity
        assert len(layout.controllers) == len(plan.layout.controllers)


@family
class TestValidXml:
    """README: "It writes a complete domain XML that virsh define takes unchanged" -- at the least,
    every plan's XML is valid against libvirt's own RelaxNG schema (domain.rng)."""

    @SETTINGS
    @given(data=st.data())
    def test_plan_xml_validates(self, family, data, relaxng):
        from lxml import etree

        plan = solve(data.draw(problems(family, **SIZES)))
        doc = etree.fromstring(render_domain(plan).encode())
        assert relaxng.validate(doc), str(relaxng.error_log)


# -- switches, expander buses and NUMA nodes ------------------------------------------------

switch_family = pytest.mark.parametrize("family", ["q35", "virt"])
# NUMA specs: up to four nodes, entries and hotplug entries drawn onto them.
NUMA = {"max_hotplug": 40, "numa": 4}
NUMA_BRUTE = {"q35": {"max_entries": 3, "max_count": 2, "max_hotplug": 4, "numa": 2},
              "virt": {"max_entries": 3, "max_count": 2, "max_hotplug": 4, "numa": 2},
              "pc": {"max_hotplug": 40, "numa": 2}, "pseries": {"max_hotplug": 40, "numa": 2}}


def _busnr_ranges_hold(layout, rules) -> list[str]:
    """The busNr rule, computed here from the addresses alone: each expander's busNr starts a
    range of guest bus numbers up to the next busNr (QEMU docs/pcie.txt section 4), the root
    bus's from 0; each range holds its expander and every bus behind it; busNr is 1-254."""
    by_index = {c.index: c for c in layout.controllers}
    rule = {c.index: rules.rule_for(c.model, c.index) for c in layout.controllers}
    starts = {0: 0}
    for c in layout.controllers:
        if "busNr" in dict(c.target):
            starts[c.index] = dict(c.target)["busNr"]

    def head(i: int) -> int:
        while i not in starts and by_index[i].address is not None:
            i = by_index[i].address.bus
        return i  # an expander, the root bus, or a PHB (a PCI domain of its own, no bus numbers)

    size = {h: 0 for h in starts}
    for c in layout.controllers:
        if head(c.index) in size:
            size[head(c.index)] += rule[c.index].bus_numbers
    out = []
    order = sorted(starts, key=starts.get)
    for k, h in enumerate(order):
        end = starts[order[k + 1]] if k + 1 < len(order) else 256
        if h and not 1 <= starts[h] <= 254:
            out.append(f"controller {h}: busNr {starts[h]}")
        if size[h] > end - starts[h]:
            out.append(f"controller {h}: {size[h]} buses in range {starts[h]}-{end - 1}")
    return out


def _node_of(layout) -> dict[int, int | None]:
    """The NUMA node above each bus, from the <node> targets and the addresses alone."""
    by_index = {c.index: c for c in layout.controllers}
    out: dict[int, int | None] = {}
    for c in layout.controllers:
        i = c.index
        while "node" not in dict(by_index[i].target) and by_index[i].address is not None:
            i = by_index[i].address.bus
        out[c.index] = dict(by_index[i].target).get("node")
    return out


def _with(counts: Counts, node: int | None, key: str, n: int) -> Counts:
    """``counts`` with ``key`` of one tree (the root bus's, or a NUMA node's) set to ``n``."""
    if node is None:
        return Counts({**counts.controllers, key: n}, dict(counts.on_root), counts.whole_buses,
                      dict(counts.nodes), counts.expanders)
    sub = counts.nodes[node]
    nodes = {**counts.nodes, node: Counts({**sub.controllers, key: n}, dict(sub.on_root), sub.whole_buses)}
    return Counts(dict(counts.controllers), dict(counts.on_root), counts.whole_buses, nodes, counts.expanders)


@family
class TestNuma:
    """README, numa: "devices of a node sit behind an expander bus tied to that node ... hotplug
    headroom given per node is met per node".  Plans of specs with NUMA nodes verify (busNr
    ranges hold their subtrees, every <node> is a cell), every device sits in its node's tree
    (or in no node's), each node's capacity covers its request, and the plan is minimal tree by
    tree: the trees share nothing but the budgets, so the fewest controllers overall is the
    fewest in each tree (docs/design.md)."""

    @SETTINGS
    @given(data=st.data())
    def test_plan_verifies_and_each_node_gets_its_headroom(self, family, data):
        problem = data.draw(problems(family, **NUMA))
        plan = solve(problem)
        rules = FAMILIES[family]
        report = verify(plan.layout, rules)
        assert report.errors == []
        assert report.fits(problem.request())
        for cls, n in problem.requested().items():
            assert report.capacity[cls] >= n, cls
        for node, wanted in problem.requested_by_node().items():
            for cls, n in wanted.items():
                assert report.node_capacity[node][cls] >= n, (node, cls)
        assert _busnr_ranges_hold(plan.layout, rules) == []
        node_of = _node_of(plan.layout)
        for p in plan.layout.placed:
            if p.address is not None and p.endpoint.cls is not None:
                assert node_of[p.address.bus] == p.endpoint.node, p.endpoint.name
        assert {dict(c.target).get("node") for c in plan.layout.controllers} - {None} <= set(range(len(problem.numa)))
        assert set(plan.node_capacity) == set(counts_nodes := _counts(problem).nodes), counts_nodes

    @SETTINGS
    @given(data=st.data())
    def test_one_fewer_in_any_tree_fails(self, family, data):
        problem = data.draw(problems(family, **NUMA))
        counts = _counts(problem)
        trees = [(None, counts)] + sorted(counts.nodes.items())
        for node, tree in trees:
            for key, n in tree.controllers.items():
                if n:
                    note(f"node {node}: {key}: {n} -> {n - 1}")
                    assert not _works(problem, _with(counts, node, key, n - 1)), f"node {node} works with {n - 1} {key}"

    @settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 25))
    @given(data=st.data())
    def test_each_tree_equals_its_brute_force_minimum(self, family, data):
        problem = data.draw(problems(family, **NUMA_BRUTE[family]))
        rules = FAMILIES[family]
        counts = _counts(problem)
        assert _works(problem, counts)
        keys = [b.name for b in rules.addable]
        for node, tree in [(None, counts)] + sorted(counts.nodes.items()):
            total = sum(tree.controllers.values())
            ranges = [range(tree.controllers.get(k, 0) + 2) for k in keys]
            for vector in itertools.product(*ranges):
                if sum(vector) >= total:
                    continue
                candidate = counts
                for k, v in zip(keys, vector):
                    candidate = _with(candidate, node, k, v)
                assert not _works(problem, candidate), f"node {node}: {dict(zip(keys, vector))} works; the planner " \
                                                        f"used {tree.controllers}"

    @SETTINGS
    @given(data=st.data())
    def test_read_back_has_the_planned_capacity_per_node(self, family, data, relaxng):
        from lxml import etree

        plan = solve(data.draw(problems(family, **NUMA)))
        xml = render_domain(plan)
        assert relaxng.validate(etree.fromstring(xml.encode())), str(relaxng.error_log)
        layout, rules = read_layout(xml, "plan.xml")
        report = verify(layout, rules, strict_auto=False)
        assert report.errors == []
        assert report.capacity == plan.capacity
        assert report.node_capacity == plan.node_capacity
        assert layout.numa_nodes == len(plan.problem.numa)


@switch_family
class TestSwitches:
    """QEMU docs/pcie.txt 2.2: "Only use PCI Express Switches (x3130-upstream, xio3130-downstream)
    if there is no more room for PCI Express Root Ports" -- and the brief's "fewest controllers".
    With most root slots pinned, more PCIe headroom than the root ports of the rest hold needs a
    switch: the plan verifies, hotplugs all of it at once, has one, and no vector of fewer
    controllers (switches, downstream ports and root ports included) places and verifies."""

    @SETTINGS
    @given(data=st.data())
    def test_plan_verifies_with_a_switch(self, family, data):
        problem = problem_of(data.draw(switch_specs(family)))
        plan = solve(problem)
        report = verify(plan.layout, FAMILIES[family])
        assert report.errors == []
        assert report.fits(problem.request())
        assert plan.added.get("pcie-switch-upstream-port", 0) >= 1
        ups = [c.index for c in plan.layout.controllers if c.model == "pcie-switch-upstream-port"]
        for c in plan.layout.controllers:
            if c.model == "pcie-switch-downstream-port":
                assert c.address.bus in ups and dict(c.target)["port"] == c.address.slot

    @SETTINGS
    @given(data=st.data())
    def test_one_fewer_of_any_model_fails(self, family, data):
        problem = problem_of(data.draw(switch_specs(family)))
        counts = _counts(problem)
        for key, n in counts.controllers.items():
            if n:
                note(f"{key}: {n} -> {n - 1}")
                assert not _works(problem, _with(counts, None, key, n - 1)), f"{n - 1} {key} work too"

    @settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 20))
    @given(data=st.data())
    def test_total_equals_brute_force_minimum(self, family, data):
        problem = problem_of(data.draw(switch_specs(family, max_free=1, max_extra=10)))
        rules = FAMILIES[family]
        counts = _counts(problem)
        keys = [b.name for b in rules.addable]
        ranges = [range(counts.controllers.get(k, 0) + 2) for k in keys]
        for vector in itertools.product(*ranges):
            if sum(vector) >= counts.total:
                continue
            candidate = Counts(dict(zip(keys, vector)), dict(counts.on_root), counts.whole_buses)
            assert not _works(problem, candidate), f"{dict(zip(keys, vector))} works; the planner used " \
                                                    f"{counts.controllers}"


def _budget_plans(family: str):
    """Plans of every kind the strategies draw: plain, with NUMA nodes, and (q35, virt) with switches."""
    kinds = [problems(family, **SIZES), problems(family, **NUMA)]
    if family in ("q35", "virt"):
        kinds.append(switch_specs(family).map(problem_of))
    return st.one_of(*kinds)


@family
class TestBudgets:
    """Issue #6, "budgets as first-class constraints, each reported in the plan (used/limit)".
    Every plan reports each budget within its limit, and the figures agree with a count made
    here from the layout alone: the highest controller index, the root slots in use (chipset
    reservations included), at least one bus number per bus outside pseries, and the ports
    with an I/O-BAR device behind them."""

    @SETTINGS
    @given(data=st.data())
    def test_budgets_hold_and_match_the_layout(self, family, data):
        from topo_solve.rules.devices import IO_BAR

        problem = data.draw(_budget_plans(family))
        plan = solve(problem)
        rules = FAMILIES[family]
        layout = plan.layout
        for what, (used, limit) in plan.budgets.items():
            assert 0 <= used <= limit or what == "ports with I/O windows", (what, used, limit)
        assert plan.budgets["controller indexes"][0] == max(c.index for c in layout.controllers)
        root_slots = {s for s, _ in rules.reserved_root_slots}
        root_slots |= {x.address.slot for x in [*layout.controllers, *layout.placed]
                       if x.address is not None and x.address.bus == 0}
        assert plan.budgets[f"{rules.root} slots"][0] == len(root_slots)
        if family != "pseries":
            assert plan.budgets["bus numbers"][0] >= len(layout.controllers)
        if "ports with I/O windows" in plan.budgets:
            parent = {c.index: c.address.bus for c in layout.controllers if c.address is not None}
            ports = {c.index for c in layout.controllers if c.model in ("pcie-root-port", "pcie-switch-downstream-port")}

            def port_of(bus):
                while bus is not None and bus not in ports:
                    bus = parent.get(bus)
                return bus

            io = {port_of(p.address.bus) for p in layout.placed if p.address and p.endpoint.kind in IO_BAR}
            assert plan.budgets["ports with I/O windows"][0] == len(io - {None})
