"""pytest fixtures for tests that talk to a real libvirt + QEMU: the judges.

Wired up in tests/conftest.py with ``pytest_plugins = ["tests.libvirt_fixtures"]``.
Test modules import ``hv`` (and the judge names) from here, never the fixtures.

(``tests/__init__.py`` makes ``tests`` a package; pytest's default "prepend"
import mode then puts the repository root on sys.path, so this import works
without any pythonpath setting.)

Two judges, each a real libvirtd with its QEMU:

* ``HOST`` ("libvirt 9.0 + QEMU 7.2"): the host's Debian 12 packages on
  qemu:///system.  If no libvirtd answers there, one is started (see
  topo_solve.hypervisor.ensure_daemon) and exactly that one is stopped at the
  end of the session; a daemon that was already running is left alone.
* ``TRIXIE`` ("libvirt 11.3 + QEMU 10.0"): Debian 13's packages in the chroot
  that ``.ci/judge-trixie up`` builds and starts (at $TOPO_SOLVE_TRIXIE_ROOT,
  by default .ci/trixie), reached with the host's virsh through its socket.
  These fixtures never start or stop it: ``.ci/run`` does.

The names in parentheses are what the judges are expected to be; what they
are is read from the daemon (``virsh version --daemon``) and is what the
summary line and ``judge.versions`` say.

A test asks for a judge through the ``judge`` fixture (``virsh``,
``libvirt_uri`` and ``daemon_files`` use it).  Which judges it runs on:

* by default only ``HOST``;
* ``@pytest.mark.judges(HOST, TRIXIE)`` (or ``BOTH``) on the test or module:
  once per judge, the test id ending in ``-libvirt9`` / ``-libvirt11``;
* for a choice per parameter, the test parametrizes ``judge`` itself with
  ``indirect=["judge"]`` (see ``on_judges``).

A judge that cannot be used skips its tests with the reason -- unless
TOPO_SOLVE_REQUIRE_LIBVIRT=1 (CI), which makes that a failure.

At the end pytest prints one line per judge that had tests, e.g.
``libvirt 9.0 + QEMU 7.2: 40 passed (190 s)`` (the seconds its tests took).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["libvirt_uri", "virsh", "judge", "daemon_files", "judge_registry"]  # what `import *` brings in

REPO = Path(__file__).resolve().parent.parent
REQUIRE_ENV = "TOPO_SOLVE_REQUIRE_LIBVIRT"
TRIXIE_ROOT_ENV = "TOPO_SOLVE_TRIXIE_ROOT"

HOST = "libvirt9"
TRIXIE = "libvirt11"
BOTH = pytest.mark.judges(HOST, TRIXIE)


def _load_hypervisor():
    try:
        from topo_solve import hypervisor  # the installed package

        return hypervisor
    except Exception:  # not installed, or the rest of the package is mid-edit
        path = REPO / "solver" / "hypervisor.py"
        modname = "_topo_solve_hypervisor_standalone"
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        return mod


hv = _load_hypervisor()


@dataclass(frozen=True)
class JudgeSpec:
    key: str       # the test-id suffix
    expected: str  # what it should be; the summary uses the measured versions once known
    where: str


SPECS = {
    HOST: JudgeSpec(HOST, "libvirt 9.0 + QEMU 7.2", "the host's libvirtd on qemu:///system (Debian 12 packages)"),
    TRIXIE: JudgeSpec(TRIXIE, "libvirt 11.3 + QEMU 10.0",
                      "the Debian 13 chroot's libvirtd (.ci/judge-trixie)"),
}


@dataclass
class Judge:
    """One real libvirtd + QEMU, ready to use."""

    key: str
    uri: str
    root: Path
    versions: "hv.Versions"
    daemon: object = None  # the Daemon this session started (host only), else None

    @property
    def label(self) -> str:
        return self.versions.label

    @property
    def libvirt(self) -> tuple[int, ...]:
        return self.versions.libvirt

    @property
    def qemu(self) -> tuple[int, ...]:
        return self.versions.qemu

    def virsh(self, timeout: float = 60) -> "hv.Virsh":
        return hv.Virsh(self.uri, timeout=timeout, root=self.root)

    def __str__(self) -> str:
        return f"{self.label} ({self.uri})"


def trixie_root() -> Path:
    return Path(os.environ.get(TRIXIE_ROOT_ENV) or REPO / ".ci" / "trixie").resolve()


def _connect_host() -> Judge:
    ok, reason = hv.libvirt_available()
    if not ok:
        raise RuntimeError(reason)
    daemon = hv.ensure_daemon(hv.DEFAULT_URI)
    virsh = hv.Virsh(hv.DEFAULT_URI)
    return Judge(HOST, virsh.uri, Path("/"), virsh.versions(), daemon)


def _connect_trixie() -> Judge:
    root = trixie_root()
    how = "build and start it with `.ci/judge-trixie up` (as root; ~1-3 min the first time)"
    if hv._find_exe("virsh") is None:
        raise RuntimeError(f"virsh is not installed on the host; {hv.INSTALL_HINT}")
    if not (root / ".debootstrap-done").exists():
        raise RuntimeError(f"no Debian 13 chroot at {root}; {how}")
    sock = root / "run" / "libvirt" / "libvirt-sock"
    if not sock.is_socket():
        raise RuntimeError(f"the chroot's libvirtd is not running (no socket {sock}); {how}")
    virsh = hv.Virsh(hv.socket_uri(sock), timeout=30, root=root)
    try:
        versions = virsh.versions()
    except hv.VirshError as exc:
        raise RuntimeError(f"the chroot's libvirtd does not answer on {virsh.uri}: {exc.message}; {how}") from None
    return Judge(TRIXIE, virsh.uri, root, versions)


_CONNECT = {HOST: _connect_host, TRIXIE: _connect_trixie}


@dataclass
class Registry:
    """Judges connected in this session (each once), or why not."""

    judges: dict[str, Judge] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Judge:
        if key not in self.judges and key not in self.problems:
            try:
                self.judges[key] = _CONNECT[key]()
            except Exception as exc:  # RuntimeError mostly; keep the message
                self.problems[key] = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
        if key in self.problems:
            _unavailable(SPECS[key], self.problems[key])
        return self.judges[key]

    def close(self) -> None:
        for j in self.judges.values():
            if j.daemon is not None:
                j.daemon.stop()


_REGISTRY = Registry()  # module level: the summary hook reads the labels


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def _unavailable(spec: JudgeSpec, reason: str):
    what = f"judge {spec.expected} ({spec.where})"
    if _required():
        pytest.fail(f"{REQUIRE_ENV}=1 but the {what} cannot be used: {reason}", pytrace=False)
    pytest.skip(f"{what} not usable: {reason} (set {REQUIRE_ENV}=1 to make this an error)")


def on_judges(params, judges=(HOST, TRIXIE)) -> list:
    """Parameter sets times judges, for ``parametrize("a,b,judge", ..., indirect=["judge"])``.

    ``params``: a list of tuples (or single values); each gets every judge in
    ``judges`` appended.
    """
    out = []
    for p in params:
        values = p if isinstance(p, tuple) else (p,)
        out.extend(pytest.param(*values, j, id="-".join([*map(str, values), j])) for j in judges)
    return out


# -- pytest hooks -------------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "judges(*names): run on these judges (libvirt9, libvirt11); default libvirt9")


def _parametrizes_judge(metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "judge" in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    if "judge" not in metafunc.fixturenames or _parametrizes_judge(metafunc):
        return
    mark = metafunc.definition.get_closest_marker("judges")
    keys = list(mark.args) if mark is not None else [HOST]
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown judge(s) {unknown}; known: {sorted(SPECS)}")
    metafunc.parametrize("judge", keys, indirect=True)


def pytest_collection_modifyitems(config, items):
    """Remember which judge each test runs on (for the summary)."""
    per_item = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        key = callspec.params.get("judge") if callspec is not None else None
        if key in SPECS:
            per_item[item.nodeid] = key
    config._judge_of = per_item  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per judge: how many of its tests passed (failed, skipped), so a CI log shows they ran."""
    judge_of = getattr(config, "_judge_of", {})
    counts: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    for outcome, reports in terminalreporter.stats.items():
        for rep in reports:
            key = judge_of.get(getattr(rep, "nodeid", None))
            if key is None:
                continue
            seconds[key] = seconds.get(key, 0.0) + getattr(rep, "duration", 0.0)  # setup + call + teardown
            if outcome in ("passed", "failed", "skipped", "error") and (
                    rep.when == "call" or outcome in ("skipped", "error")):
                c = counts.setdefault(key, {})
                c[outcome] = c.get(outcome, 0) + 1
    for key in SPECS:  # a fixed order: the old judge first
        if key not in counts:
            continue
        j = _REGISTRY.judges.get(key)
        label = j.label if j is not None else SPECS[key].expected
        text = ", ".join(f"{counts[key][k]} {k}" for k in ("passed", "failed", "error", "skipped") if counts[key].get(k))
        terminalreporter.write_line(f"{label}: {text} ({seconds.get(key, 0.0):.0f} s)")


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def judge_registry():
    try:
        yield _REGISTRY
    finally:
        _REGISTRY.close()


@pytest.fixture
def judge(request, judge_registry) -> Judge:
    """The judge this test runs on (parametrized: see the module docstring)."""
    key = getattr(request, "param", HOST)
    return judge_registry.get(key)


@pytest.fixture
def libvirt_uri(judge) -> str:
    return judge.uri


@pytest.fixture
def virsh(judge):
    return judge.virsh()


@pytest.fixture
def daemon_files(virsh):
    """A temporary directory the judge's daemon and QEMU can open files in (``hv.Scratch``)."""
    with virsh.scratch_dir() as scratch:
        yield scratch
