"""Properties of the planner over generated specs of every machine family.

Each class quotes the rule it checks.  Specs come from
``strategies.from_machine``: small, valid by construction.  Settings are the
shared ``SETTINGS`` profile (50 examples per test in CI, no deadline).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from topo_solve.counts import Counts, build_model, choose_counts
from topo_solve.domain_read import read_domain
from topo_solve.domain_xml import render_domain
from topo_solve.errors import ProgrammingError
from topo_solve.model import Problem
from topo_solve.place import given_addresses, place
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.verify import verify

from .strategies import FAMILY_NAMES, SETTINGS, from_machine, problem_of, problems

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
    return not report.errors and report.fits(problem.requested())


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
        root_options = [[(c, j) for j in range(min(k, model.root_free) + 1)] for c, k in model.root_ok_max.items()]
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
        layout, rules = read_domain(xml, "plan.xml")
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
