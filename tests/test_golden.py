"""Golden files: every example spec's domain XML, byte for byte.

``specs/NAME.yaml`` that plans -> ``tests/golden/NAME.xml``.  A difference
fails with a unified diff; ``pytest --regenerate-golden`` rewrites the files
after an intended change (review the diff before committing).  Every golden
document must also be valid libvirt XML.  A spec that cannot be planned
(specs/infeasible/q35-too-many.yaml) is checked through the CLI instead: exit 1, an explanation,
nothing on stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from topo_solve.domain.write import render_domain
from topo_solve.errors import InfeasibleError
from topo_solve.solve import solve
from topo_solve.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
ALL = sorted((REPO / "specs").glob("*.yaml"))
# Examples that extend an existing guest ('domain:') instead of planning a new one.
EXTENDS = [p for p in ALL if "domain" in (yaml.safe_load(p.read_text()) or {})]
SPECS = [p for p in ALL if p not in EXTENDS]
# Examples that cannot fit live in specs/infeasible/, so every specs/*.yaml plans.
INFEASIBLE = {p.name for p in (REPO / "specs" / "infeasible").glob("*.yaml")}
PLANNED = SPECS


def test_the_examples_are_all_here():
    """Both lists are found on disk: planned examples in specs/, infeasible ones in
    specs/infeasible/; a new example needs no test edit."""
    assert PLANNED and EXTENDS and INFEASIBLE and not INFEASIBLE & {p.name for p in ALL}


@pytest.mark.parametrize("spec", PLANNED, ids=[p.stem for p in PLANNED])
def test_domain_xml_matches_golden(spec, golden, schema_valid):
    plan = solve(load_spec(spec))
    xml = render_domain(plan)
    golden(f"{spec.stem}.xml", xml)
    schema_valid(xml, f"domain XML of {spec.name}")


@pytest.mark.parametrize("spec", EXTENDS, ids=[p.stem for p in EXTENDS])
def test_extension_matches_golden(spec, golden, schema_valid):
    """The extension examples through the CLI: the extended XML is golden and valid, and the
    original file is untouched."""
    source = (spec.parent / yaml.safe_load(spec.read_text())["domain"]).read_text()
    proc = subprocess.run([sys.executable, "-m", "topo_solve", str(spec), "-q"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    golden(f"{spec.stem}.xml", proc.stdout)
    schema_valid(proc.stdout, f"extended domain XML of {spec.name}")
    assert (spec.parent / yaml.safe_load(spec.read_text())["domain"]).read_text() == source


@pytest.mark.parametrize("spec", PLANNED, ids=[p.stem for p in PLANNED])
def test_plan_gives_what_the_example_asks(spec):
    plan = solve(load_spec(spec))
    for cls, n in plan.requested.items():
        assert plan.capacity[cls] >= n, f"{spec.name}: {cls} capacity {plan.capacity[cls]} < {n}"


@pytest.mark.parametrize("name", sorted(INFEASIBLE))
def test_infeasible_example_is_explained(name):
    with pytest.raises(InfeasibleError) as info:
        solve(load_spec(REPO / "specs" / "infeasible" / name))
    assert info.value.causes


@pytest.mark.parametrize("name", sorted(INFEASIBLE))
def test_infeasible_example_exits_1_through_the_cli(name):
    """The console script in a fresh process: exit 1, the explanation on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-c", "from topo_solve.cli import main; main()",
                           str(REPO / "specs" / "infeasible" / name)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "no PCI layout" in proc.stderr and "because" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_output_does_not_depend_on_the_hash_seed():
    """Sets of str-valued enums iterate in an order that changes with PYTHONHASHSEED; the XML must
    not.  Every example and every kitchen-sink spec of test_rules.py, in two processes."""
    from tests.test_rules import FAMILY_NAMES, kitchen_sink

    script = (
        "import sys, yaml\n"
        "from topo_solve.domain.write import render_domain\n"
        "from topo_solve.solve import solve\n"
        "from topo_solve.spec import load_spec, parse_spec, to_problem\n"
        "for path in sys.argv[1:]:\n"
        "    if path.endswith('.yaml'):\n"
        "        problem = load_spec(path)\n"
        "    else:\n"
        "        spec, lines = parse_spec(path)\n"
        "        problem = to_problem(spec, lines)\n"
        "    sys.stdout.write(render_domain(solve(problem)))\n"
    )
    args = [str(p) for p in PLANNED] + [kitchen_sink(f) for f in FAMILY_NAMES]
    outputs = []
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0].count("<domain ") == len(args)
    assert outputs[0] == outputs[1]
