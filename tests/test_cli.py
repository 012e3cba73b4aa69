"""The command line as one table: arguments, exit code, a substring of the output.

Each row runs ``topo_solve.cli.main(argv)`` in this process (it ends with
``sys.exit``; stdout and stderr are captured).  The exit code is asserted
first, then the substring in stdout or stderr, then that nothing printed a
traceback: only ``--debug`` shows one (checked in a real subprocess at the
end, with the console script's entry point).

Placeholders in argv: ``{specs}`` the example specs folder, ``{golden}`` the
golden XML folder, ``{tmp}`` a fresh folder holding ``broken.yaml`` (a YAML
syntax error on line 4), ``bad.yaml`` (an unknown model on line 4) and
``existing.xml`` (a file ``-o`` must not overwrite without ``--force``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from topo_solve.cli import main

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"

OUT, ERR = "stdout", "stderr"

# (argv, exit code, where, substring)
CASES = [
    # planning
    (["{specs}/q35-web.yaml"], 0, OUT, '<controller type="pci" index="13" model="pcie-to-pci-bridge">'),
    (["{specs}/q35-web.yaml"], 0, ERR, "web-01 (q35): added 12 pcie-root-port, 1 pcie-to-pci-bridge"),
    (["plan", "{specs}/q35-web.yaml", "-q"], 0, OUT, "<domain"),
    (["{specs}/q35-web.yaml", "--emit", "json"], 0, OUT, '"pcie-root-port": 12'),
    (["{specs}/q35-web.yaml", "--emit", "controllers"], 0, OUT, '<controller type="pci" index="0" model="pcie-root"/>'),
    (["{specs}/q35-web.yaml", "--emit", "tree"], 0, OUT, "00.0 13 pcie-to-pci-bridge"),
    (["{specs}/virt-arm.yaml", "--virt-type", "qemu"], 0, OUT, '<domain type="qemu">'),
    (["{specs}/pseries-hpc.yaml", "--emit", "json"], 0, OUT, '"hostdev": 2'),
    (["{specs}/q35-web.yaml", "--emit", "xml"], 2, ERR, "'xml' is not one of"),
    # plan's options before the spec, values and all
    (["--emit", "json", "{specs}/q35-web.yaml"], 0, OUT, '"pcie-root-port": 12'),
    (["--emit=tree", "{specs}/q35-web.yaml"], 0, OUT, "00.0 13 pcie-to-pci-bridge"),
    (["--virt-type", "qemu", "{specs}/virt-arm.yaml"], 0, OUT, '<domain type="qemu">'),
    (["--emit", "json", "-q", "--", "{specs}/pseries-hpc.yaml"], 0, OUT, '"hostdev": 2'),
    (["-o", "{tmp}/existing.xml", "{specs}/pc-legacy.yaml"], 2, ERR, "existing.xml exists; pass --force"),
    (["-o", "{tmp}/existing.xml", "--force", "{specs}/pc-legacy.yaml"], 0, ERR, "added 1 pci-bridge"),
    (["--emit", "xml", "{specs}/q35-web.yaml"], 2, ERR, "'xml' is not one of"),
    (["--emit", "json"], 2, ERR, "Missing argument 'SPEC'"),
    (["--emit", "json", "--help"], 0, OUT, "--emit [domain|controllers|json|tree|virt-install|svg|dot|virt-xml|attach]"),
    (["--bogus", "{specs}/q35-web.yaml"], 2, ERR, "No such option '--bogus'"),
    (["--emit", "json", "schema"], 2, ERR, "No such option '--emit'"),  # a command is never taken for a spec
    # host facts, memory windows, acpi indexes (issue 14)
    (["{specs}/gpu/gpu-passthrough.yaml", "--emit", "json", "-q"], 0, OUT, '"acpi_index_hotplug"'),
    (["{specs}/gpu/gpu-passthrough.yaml", "--host-sysfs={tmp}", "-q"], 2, ERR, "bus/pci/devices is not a folder"),
    (["{specs}/gpu/gpu-passthrough.yaml", "--target", "debian-12", "-o", "{tmp}/gpu.xml"], 0, ERR,
     "warning: memReserve needs libvirt 10.3 or later; the target is libvirt 9.0"),
    # writing a file
    (["{specs}/pc-legacy.yaml", "-o", "{tmp}/new.xml"], 0, ERR, "legacy-01 (pc): added 1 pci-bridge"),
    (["{specs}/pc-legacy.yaml", "-o", "{tmp}/existing.xml"], 2, ERR, "existing.xml exists; pass --force"),
    (["{specs}/pc-legacy.yaml", "-o", "{tmp}/existing.xml", "--force"], 0, ERR, "added 1 pci-bridge"),
    # bad input
    (["{tmp}/missing.yaml"], 2, ERR, "missing.yaml: cannot read the file"),
    (["{tmp}/broken.yaml"], 2, ERR, "broken.yaml:4:18: not valid YAML"),
    (["{tmp}/bad.yaml"], 2, ERR, "bad.yaml:4: devices[0].model: unknown device model 'virtio-nett'"),
    (["{specs}"], 2, ERR, "Error: Invalid value for 'SPEC'"),
    (["{tmp}/tagged.yaml"], 2, ERR, "tagged.yaml:1:7: not a plain YAML value"),
    # no layout fits
    (["{specs}/infeasible/q35-too-many.yaml"], 1, ERR, "no PCI layout of guest 'too-many' satisfies the spec"),
    (["{specs}/infeasible/q35-too-many.yaml"], 1, ERR, "253 pcie"),
    # other commands
    (["schema"], 0, OUT, '"title": "Spec"'),
    (["audit", "{golden}/q35-web.xml"], 0, OUT, "hotplug capacity pcie 6  pci 30  hostdev 6"),
    (["audit", "--emit", "json", "{golden}/pc-legacy.xml"], 0, OUT, '"machine": "pc"'),
    (["audit", "{tmp}/missing.xml"], 2, ERR, "cannot read"),
    (["audit", "{specs}/q35-web.yaml"], 2, ERR, "not well-formed XML"),
    (["check", "{tmp}/missing.xml"], 2, ERR, "cannot read"),
    # usage
    (["--help"], 0, OUT, "Plan the PCI topology of libvirt guests."),
    (["--help"], 0, OUT, "topo-solve extend DOMAIN.xml --hotplug MODEL=N"),
    (["plan", "--help"], 0, OUT, "--emit [domain|controllers|json|tree|virt-install|svg|dot|virt-xml|attach]"),
    (["--version"], 0, OUT, "topo-solve, version"),
    (["-h"], 0, OUT, "Plan the PCI topology of libvirt guests."),
    (["--bogus"], 2, ERR, "No such option '--bogus'"),
    (["{specs}/q35-web.yaml", "--bogus"], 2, ERR, "No such option '--bogus'"),
    (["plan"], 2, ERR, "Missing argument 'SPEC'"),
]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "broken.yaml").write_text("name: broken\nmachine: q35\ndevices:\n  - {model: e1000]\nhotplug: []\n")
    (tmp_path / "bad.yaml").write_text("name: bad\nmachine: q35\ndevices:\n  - {model: virtio-nett}\n")
    (tmp_path / "existing.xml").write_text("old\n")
    (tmp_path / "tagged.yaml").write_text("name: !!python/object:os.system x\nmachine: q35\n")
    return tmp_path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def _expand(argv: list[str], tmp: Path) -> list[str]:
    return [a.format(specs=SPECS, golden=GOLDEN, tmp=tmp) for a in argv]


@pytest.mark.parametrize(("argv", "code", "where", "text"), CASES,
                         ids=[f"{' '.join(a)}->{c}" for a, c, _, _ in CASES])
def test_cli(argv, code, where, text, tmp, capsys):
    got, out, err = run(_expand(argv, tmp), capsys)
    assert got == code, f"exit {got}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert text in (out if where == OUT else err), f"{text!r} not in {where}:\n{out if where == OUT else err}"
    assert "Traceback" not in out + err


# -- what the table cannot say ---------------------------------------------------

def test_output_file_is_written_and_stdout_stays_empty(tmp, capsys):
    code, out, _ = run(_expand(["{specs}/pc-legacy.yaml", "-o", "{tmp}/new.xml"], tmp), capsys)
    assert code == 0 and out == ""
    assert (tmp / "new.xml").read_text().startswith('<domain type="kvm">')
    assert sorted(p.name for p in tmp.iterdir()) == ["bad.yaml", "broken.yaml", "existing.xml", "new.xml",
                                                        "tagged.yaml"], \
        "the atomic write left a temporary file behind"


def test_short_options_clustered_before_the_spec(tmp, capsys):
    """-qo FILE SPEC: -o takes FILE even at the end of a cluster, so SPEC is still the spec."""
    code, out, err = run(_expand(["-qo", "{tmp}/new.xml", "{specs}/pc-legacy.yaml"], tmp), capsys)
    assert code == 0 and out == "" and err == "", err
    assert (tmp / "new.xml").read_text().startswith('<domain type="kvm">')


def test_refused_overwrite_leaves_the_file_alone(tmp, capsys):
    code, out, _ = run(_expand(["{specs}/pc-legacy.yaml", "-o", "{tmp}/existing.xml"], tmp), capsys)
    assert code == 2 and out == ""
    assert (tmp / "existing.xml").read_text() == "old\n"
    code, _, _ = run(_expand(["{specs}/pc-legacy.yaml", "-o", "{tmp}/existing.xml", "--force"], tmp), capsys)
    assert code == 0 and (tmp / "existing.xml").read_text().startswith("<domain")
    assert len(list(tmp.iterdir())) == 4  # the fixture's four files, no temporary left


def test_json_has_the_documented_keys(capsys):
    code, out, _ = run([str(SPECS / "q35-web.yaml"), "--emit", "json", "-q"], capsys)
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"name", "machine", "controllers", "devices", "added", "capacity", "requested", "warnings"}
    assert data["requested"] == {"pcie": 4, "pci": 1, "hostdev": 2}
    assert all(data["capacity"][k] >= v for k, v in data["requested"].items())


def test_schema_is_json_schema(capsys):
    code, out, _ = run(["schema"], capsys)
    data = json.loads(out)
    assert code == 0 and {"name", "machine", "devices", "hotplug"} <= set(data["properties"])


def test_quiet_prints_no_summary(capsys):
    code, _, err = run([str(SPECS / "virt-arm.yaml"), "-q"], capsys)
    assert code == 0 and err == ""


def _console(*argv: str) -> subprocess.CompletedProcess:
    """The console script's entry point (topo_solve.cli:main) in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", "from topo_solve.cli import main; main()", *argv],
                          capture_output=True, text=True, timeout=60)


def test_console_script_plans_and_fails_cleanly(tmp_path):
    ok = _console(str(SPECS / "virt-arm.yaml"))
    assert ok.returncode == 0 and ok.stdout.startswith('<domain type="kvm">') and "arm-01 (virt)" in ok.stderr
    missing = _console(str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = _console("--debug", str(tmp_path / "missing.yaml"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "SpecError" in proc.stderr


def test_written_files_get_the_usual_mode(tmp_path, capsys):
    """-o writes through a private temp file, but the result has the mode any new file gets
    (0666 less the umask), and a replaced file keeps its own mode."""
    import os

    out = tmp_path / "new.xml"
    old = os.umask(0o022)
    try:
        code, _, _ = run([str(SPECS / "pc-legacy.yaml"), "-q", "-o", str(out)], capsys)
        assert code == 0 and (out.stat().st_mode & 0o777) == 0o644
        out.chmod(0o600)
        code, _, _ = run([str(SPECS / "pc-legacy.yaml"), "-q", "-o", str(out), "--force"], capsys)
        assert code == 0 and (out.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)


def test_audit_does_not_depend_on_the_hash_seed():
    """Classes live in frozensets, whose order changes with PYTHONHASHSEED; the audit's lines must not."""
    import os
    import subprocess
    import sys

    outs = set()
    for seed in ("1", "2", "3"):
        proc = subprocess.run([sys.executable, "-m", "topo_solve", "audit", str(REPO / "specs/domains/web-02.xml"),
                               str(GOLDEN / "pseries-hpc.xml")], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout)
    assert len(outs) == 1
