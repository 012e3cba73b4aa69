"""Shared test machinery: golden files, the libvirt RelaxNG schema, the plan recorder.

* ``--regenerate-golden`` rewrites every golden file a test compares against.
  A golden file that does not exist yet is written on the first run and the
  test passes; the terminal summary lists what was written, so it gets
  reviewed and committed.
* ``golden(name, text)`` compares ``text`` with ``tests/golden/NAME`` and fails
  with a unified diff.
* ``relaxng``: libvirt's domain schema (package libvirt0). Tests that use it
  skip when it is not installed, unless TOPO_SOLVE_REQUIRE_LIBVIRT=1 (CI), then
  they fail.
* Every plan made in this process by ``topo_solve.solve.solve`` is recorded in
  ``PLANS``, every layout ``read_domain`` returns in ``READS``; test_rules.py's
  coverage meta-test checks that the suite touched every rule-table row and
  every device model (virtinst's test_checkprops idea).

The libvirt fixtures (``libvirt_uri``, ``virsh``) come from
tests/libvirt_fixtures.py; ``tests/__init__.py`` makes ``tests`` a package, so
pytest's default import mode puts the repository root on ``sys.path`` and the
plugin imports without any ``pythonpath`` setting.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.libvirt_fixtures", "tests.guest_fixtures"]

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GOLDEN = TESTS / "golden"
SPECS = REPO / "specs"
SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
REQUIRE_ENV = "TOPO_SOLVE_REQUIRE_LIBVIRT"


# -- the plan recorder ------------------------------------------------------

PLANS: list = []  # every Plan solve() returned in this session
READS: list = []  # every Layout read_domain() returned (audits of hand-written XML)


def _record(module_name: str, function: str, sink: list, pick) -> None:
    """Wrap ``topo_solve.<module_name>.<function>`` so what it returns is kept in ``sink``.

    Done at import time of this conftest, before any test module is imported,
    so ``from topo_solve.solve import solve`` in a test, the lazy
    ``topo_solve.solve`` attribute and the CLI's own import all get the wrapper.
    """
    from importlib import import_module

    try:
        module = import_module(f"topo_solve.{module_name}")
    except Exception:  # the package is broken mid-edit: its own tests will say so
        return
    original = getattr(module, function)
    if getattr(original, "_recording", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        sink.append(pick(result))
        return result

    wrapper._recording = True
    setattr(module, function, wrapper)


_record("solve", "solve", PLANS, lambda plan: plan)
_record("domain.read", "read_domain", READS, lambda domain: domain.layout())


# -- options and markers ----------------------------------------------------

# The hypothesis profiles, registered before hypothesis' plugin reads --hypothesis-profile (a profile
# registered only by a test module would not exist yet).  tests/property/strategies.py registers the
# same two; tests/test_fuzz.py reads the option to size its own runs.
def _register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=50, deadline=None, database=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=1000)


_register_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "coverage_meta: runs after every other test; checks what the suite touched")
    config._golden_written = []  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the coverage meta-tests last, after every plan of the session was made."""
    items.sort(key=lambda item: item.get_closest_marker("coverage_meta") is not None)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    stats = getattr(config, "_fuzz_stats", None)
    if stats is not None and stats.runs:
        terminalreporter.section("fuzz")
        s = stats.to_json()
        terminalreporter.write_line(
            f"inputs {s['inputs']}, CLI runs {s['runs']}, exit codes {s['codes']}; new problems {s['problems'] or 0}; "
            f"known faults {s['known'] or 0}; max CPU {s['max_cpu_s']} s, max memory {s['max_memory_mb']} MB; "
            f"schema checks {s['schema_checked']}, audits {s['audited']}")
    written = getattr(config, "_golden_written", [])
    if written:
        terminalreporter.section("golden files written")
        for path, why in written:
            terminalreporter.write_line(f"{why}: {path.relative_to(REPO)} (review and commit it)")


# -- fixtures ---------------------------------------------------------------

def _require_libvirt() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """``golden(name, text)``: compare text with tests/golden/NAME, or write it.

    A mismatch fails with a unified diff (expected = the golden file).
    """
    config = request.config
    regenerate = config.getoption("--regenerate-golden")

    def compare(name: str, text: str) -> None:
        path = GOLDEN / name
        if regenerate or not path.exists():
            why = "regenerated" if path.exists() else "written (was missing)"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            config._golden_written.append((path, why))
            return
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            diff = "".join(difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"tests/golden/{name} (expected)", tofile=f"{name} (got)"))
            pytest.fail(f"output differs from tests/golden/{name}; if the change is intended, "
                        f"run pytest --regenerate-golden and review the diff:\n{diff}", pytrace=False)

    return compare


@pytest.fixture(scope="session")
def relaxng():
    """lxml RelaxNG of libvirt's domain.rng (the schema virt-xml-validate uses)."""
    if not SCHEMA.exists():
        reason = f"{SCHEMA} is missing (Debian package libvirt0 ships it)"
        if _require_libvirt():
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(f"{reason}; set {REQUIRE_ENV}=1 to make this an error")
    from lxml import etree

    return etree.RelaxNG(etree.parse(str(SCHEMA)))


@pytest.fixture
def schema_valid(relaxng):
    """``schema_valid(xml, what)``: fail with the schema's messages unless ``xml`` validates."""
    from lxml import etree

    def check(xml: str | bytes, what: str = "document") -> None:
        doc = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
        if not relaxng.validate(doc):
            errors = "\n".join(f"  line {e.line}: {e.message}" for e in relaxng.error_log)
            pytest.fail(f"{what} does not validate against domain.rng:\n{errors}", pytrace=False)

    return check


@pytest.fixture(scope="session")
def recorded_plans() -> list:
    """Every plan solve() returned so far in this session (see the module docstring)."""
    return PLANS


@pytest.fixture(scope="session")
def recorded_reads() -> list:
    """Every layout read_domain() returned so far in this session."""
    return READS
