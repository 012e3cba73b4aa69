"""Golden files: every example spec's domain XML, byte for byte.

``specs/NAME.yaml`` that plans -> ``tests/golden/NAME.xml``.  A difference
fails with a unified diff; ``pytest --regenerate-golden`` rewrites the files
after an intended change (review the diff before committing).  Every golden
document must also be valid libvirt XML.  A spec that cannot be planned
(q35-too-many.yaml) is checked through the CLI instead: exit 1, an explanation,
nothing on stdout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from topo_solve.domain_xml import render_domain
from topo_solve.errors import InfeasibleError
from topo_solve.solve import solve
from topo_solve.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted((REPO / "specs").glob("*.yaml"))
INFEASIBLE = {"q35-too-many.yaml"}
PLANNED = [p for p in SPECS if p.name not in INFEASIBLE]


def test_the_examples_are_all_here():
    """The lists below cover every example; a new example spec needs no test edit, but an
    infeasible one must be named in INFEASIBLE."""
    assert PLANNED and INFEASIBLE <= {p.name for p in SPECS}


@pytest.mark.parametrize("spec", PLANNED, ids=[p.stem for p in PLANNED])
def test_domain_xml_matches_golden(spec, golden, schema_valid):
    plan = solve(load_spec(spec))
    xml = render_domain(plan)
    golden(f"{spec.stem}.xml", xml)
    schema_valid(xml, f"domain XML of {spec.name}")


@pytest.mark.parametrize("spec", PLANNED, ids=[p.stem for p in PLANNED])
def test_plan_gives_what_the_example_asks(spec):
    plan = solve(load_spec(spec))
    for cls, n in plan.requested.items():
        assert plan.capacity[cls] >= n, f"{spec.name}: {cls} capacity {plan.capacity[cls]} < {n}"


@pytest.mark.parametrize("name", sorted(INFEASIBLE))
def test_infeasible_example_is_explained(name):
    with pytest.raises(InfeasibleError) as info:
        solve(load_spec(REPO / "specs" / name))
    assert info.value.causes


@pytest.mark.parametrize("name", sorted(INFEASIBLE))
def test_infeasible_example_exits_1_through_the_cli(name):
    """The console script in a fresh process: exit 1, the explanation on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-c", "from topo_solve.cli import main; main()",
                           str(REPO / "specs" / name)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "no PCI layout" in proc.stderr and "because" in proc.stderr
    assert "Traceback" not in proc.stderr
