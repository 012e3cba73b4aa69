"""The fuzzer, driven by hypothesis: hostile specs and domain XML through the CLI.

Generators: tests/fuzz/gen_spec.py and tests/fuzz/gen_xml.py (mutations of real
documents; independent of tests/property/strategies.py).  Checks: tests/fuzz/oracle.py
(no exit 3, no traceback, at most 2 s of CPU and 200 MB, exit 2 names the file, an
accepted spec's XML validates against domain.rng and its audit meets the request; for
XML: audit, extend, extend --in-place, a domain spec).  Known open faults
(tests/fuzz/known.py) are counted, not failed; their reproductions are strict xfails in
tests/test_known_faults.py.

Profiles: the normal test run makes a short, derandomized pass (a few seconds, the same
inputs every time, so CI is stable); ``pytest -m fuzz --hypothesis-profile=long`` runs
10,000 specs and 10,000 domain XMLs with fresh random inputs (an hour or two on 2 cores);
``TOPO_SOLVE_FUZZ_EXAMPLES=N`` sets the number of each.  ``benchmarks/fuzz_long.py``
runs the same checks without hypothesis and writes the figures docs/conformance.md
quotes; ``benchmarks/fuzz_atheris.py`` drives the same generators coverage-guided.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.choose import HypothesisChooser
from tests.fuzz.gen_spec import spec_case
from tests.fuzz.gen_xml import seed_domains, xml_case
from tests.fuzz.oracle import Stats, check_spec, check_xml

pytestmark = pytest.mark.fuzz

SHORT = {"spec": 30, "xml": 12}
LONG = {"spec": 10_000, "xml": 10_000}


def _examples(config: pytest.Config, kind: str) -> tuple[int, bool]:
    """(examples, derandomize) for this run."""
    env = os.environ.get("TOPO_SOLVE_FUZZ_EXAMPLES")
    if env:
        return int(env), False
    if config.getoption("hypothesis_profile", None) == "long":
        return LONG[kind], False
    return SHORT[kind], True


def _settings(n: int, derandomize: bool) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=derandomize, print_blob=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def stats(request) -> Stats:
    s = Stats()
    request.config._fuzz_stats = s  # printed in the terminal summary (tests/conftest.py)
    return s


@pytest.fixture(scope="module", autouse=True)
def _preloaded():
    """Import what the CLI runs before the first fork, so each forked run starts warm."""
    import topo_solve.batch  # noqa: F401
    import topo_solve.cli  # noqa: F401
    import topo_solve.domain.plan  # noqa: F401
    import topo_solve.solve  # noqa: F401
    import topo_solve.spec  # noqa: F401
    import topo_solve.verify  # noqa: F401

    seed_domains()


def _fail(problems, describe: str) -> None:
    new = [p for p in problems if not p.known]
    if new:
        pytest.fail(f"{describe}\n" + "\n".join(str(p) for p in new), pytrace=False)


def test_fuzz_specs(request, relaxng, stats):
    n, derandomize = _examples(request.config, "spec")

    @_settings(n, derandomize)
    @given(st.data())
    def check(data):
        case = spec_case(HypothesisChooser(data))
        stats.inputs["spec"] += 1
        problems = check_spec(case, relaxng, stats)
        stats.add(problems)
        _fail(problems, case.describe())

    check()


def test_fuzz_domain_xml(request, relaxng, stats):
    n, derandomize = _examples(request.config, "xml")

    @_settings(n, derandomize)
    @given(st.data())
    def check(data):
        case = xml_case(HypothesisChooser(data))
        stats.inputs["xml"] += 1
        problems = check_xml(case, relaxng, stats)
        stats.add(problems)
        _fail(problems, case.describe())

    check()
