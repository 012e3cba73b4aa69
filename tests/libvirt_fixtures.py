"""pytest fixtures for tests that talk to a real libvirt + QEMU.

Wired up in tests/conftest.py with ``pytest_plugins = ["tests.libvirt_fixtures"]``
(``from tests.libvirt_fixtures import *`` works as well: it brings in only the
two fixtures).  Test modules import ``hv`` from here, never the fixtures
themselves, or a second session fixture would be registered.

(``tests/__init__.py`` makes ``tests`` a package; pytest's default "prepend"
import mode then puts the repository root on sys.path, so this import works
without any pythonpath setting.)

``libvirt_uri`` (session): skips every test that uses it when virsh/libvirtd
are not installed or no daemon can be had -- unless TOPO_SOLVE_REQUIRE_LIBVIRT=1,
which turns the skip into a failure (CI sets it).  If no libvirtd answers on
qemu:///system it starts one (see topo_solve.hypervisor.ensure_daemon) and
stops exactly that one at the end of the session; a daemon that was already
running is used and left alone.

``virsh``: a ``Virsh`` bound to that URI.

``hv``: the hypervisor module itself.  It is ``topo_solve.hypervisor`` when
the package imports; otherwise solver/hypervisor.py is loaded on its own, so
these tests do not depend on the rest of the package.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

__all__ = ["libvirt_uri", "virsh"]  # what `import *` brings into conftest

LIBVIRT_URI = "qemu:///system"
REQUIRE_ENV = "TOPO_SOLVE_REQUIRE_LIBVIRT"


def _load_hypervisor():
    try:
        from topo_solve import hypervisor  # the installed package

        return hypervisor
    except Exception:  # not installed, or the rest of the package is mid-edit
        path = Path(__file__).resolve().parent.parent / "solver" / "hypervisor.py"
        modname = "_topo_solve_hypervisor_standalone"
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        return mod


hv = _load_hypervisor()


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def _unavailable(reason: str):
    if _required():
        pytest.fail(f"{REQUIRE_ENV}=1 but libvirt cannot be used: {reason}", pytrace=False)
    pytest.skip(f"real libvirt not usable: {reason} (set {REQUIRE_ENV}=1 to make this an error)")


@pytest.fixture(scope="session")
def libvirt_uri():
    ok, reason = hv.libvirt_available()
    if not ok:
        _unavailable(reason)
    try:
        daemon = hv.ensure_daemon(LIBVIRT_URI)
    except Exception as exc:  # RuntimeError mostly; keep the message
        _unavailable(f"{type(exc).__name__}: {exc}")
    try:
        yield LIBVIRT_URI
    finally:
        if daemon is not None:
            daemon.stop()


@pytest.fixture
def virsh(libvirt_uri):
    return hv.Virsh(libvirt_uri)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many tests ran against the real libvirt, so a CI log shows they did run."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if "libvirt" in getattr(rep, "keywords", {}) and (rep.when == "call" or outcome in ("skipped", "error")):
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        terminalreporter.write_line(f"real libvirt + QEMU tests: {text}")
