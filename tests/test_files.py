"""Outputs and inputs through topo_solve.files, at the command line.

Every output goes through one writer: a regular file is replaced atomically (a hidden
temporary file, fsync, rename, fsync of the folder) and only with --force; a symbolic
link is followed (its target replaced, the link kept); a character device or a pipe is
written through as a shell redirect would; a folder, a missing folder or an unwritable
one is exit 2 "cannot write FILE: reason".  Every input is read as bytes, no further
than its size limit.  The disk-full, read-only and kill -9 cases are in test_faults.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from topo_solve.cli import main

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
WEB02 = SPECS / "domains" / "web-02.xml"


def run(argv: list[str], capfd) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return (info.value.code or 0), out, err


def _planned(capfd) -> str:
    code, out, _ = run([SPECS / "pc-legacy.yaml", "-q"], capfd)
    assert code == 0
    return out


# -- where -o may point ----------------------------------------------------------------------

def _dir(tmp: Path) -> str:
    (tmp / "adir").mkdir()
    return str(tmp / "adir")


def _missing_folder(tmp: Path) -> str:
    return str(tmp / "missing" / "out.xml")


def _dangling(tmp: Path) -> str:
    (tmp / "link").symlink_to(tmp / "target.xml")
    return str(tmp / "link")


def _link_to_file(tmp: Path) -> str:
    (tmp / "target.xml").write_text("old\n")
    os.chmod(tmp / "target.xml", 0o640)
    (tmp / "link").symlink_to(tmp / "target.xml")
    return str(tmp / "link")


def _existing(tmp: Path) -> str:
    (tmp / "out.xml").write_text("old\n")
    os.chmod(tmp / "out.xml", 0o640)
    return str(tmp / "out.xml")


def _link_to_dir(tmp: Path) -> str:
    (tmp / "adir").mkdir()
    (tmp / "link").symlink_to(tmp / "adir")
    return str(tmp / "link")


def _loop(tmp: Path) -> str:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return str(tmp / "a")


# (name, make the target, extra args, exit code, stderr substring, check afterwards)
OUTPUT_CASES = [
    ("a folder", _dir, [], 2, "cannot write {target}: it is a folder", lambda t, x: Path(t).is_dir()),
    ("a folder, --force", _dir, ["--force"], 2, "it is a folder", lambda t, x: Path(t).is_dir()),
    ("a missing folder", _missing_folder, [], 2, "cannot write {target}: No such file or directory",
     lambda t, x: not Path(t).parent.exists()),
    ("a dangling link", _dangling, [], 2, "{target} exists; pass --force",
     lambda t, x: os.path.islink(t) and not os.path.exists(t)),
    ("a dangling link, --force", _dangling, ["--force"], 0, "",
     lambda t, x: os.path.islink(t) and Path(t).read_text() == x),
    ("a link to a file", _link_to_file, [], 2, "exists; pass --force",
     lambda t, x: Path(t).read_text() == "old\n"),
    ("a link to a file, --force", _link_to_file, ["--force"], 0, "",
     lambda t, x: os.path.islink(t) and Path(t).read_text() == x
     and stat.S_IMODE(os.stat(t).st_mode) == 0o640),
    ("a link to a folder, --force", _link_to_dir, ["--force"], 2, "it is a folder",
     lambda t, x: os.path.islink(t) and os.path.isdir(t)),
    ("a symlink loop, --force", _loop, ["--force"], 2, "Too many levels of symbolic links",
     lambda t, x: os.path.islink(t)),
    ("an existing file", _existing, [], 2, "exists; pass --force", lambda t, x: Path(t).read_text() == "old\n"),
    ("an existing file, --force: its mode kept", _existing, ["--force"], 0, "",
     lambda t, x: Path(t).read_text() == x and stat.S_IMODE(os.stat(t).st_mode) == 0o640),
]


@pytest.mark.parametrize(("name", "make", "extra", "code", "message", "after"), OUTPUT_CASES,
                         ids=[c[0] for c in OUTPUT_CASES])
def test_output_targets(name, make, extra, code, message, after, tmp_path, capfd):
    expected = _planned(capfd)
    target = make(tmp_path)
    got, out, err = run([SPECS / "pc-legacy.yaml", "-q", "-o", target, *extra], capfd)
    assert got == code, err
    assert message.format(target=target) in err
    assert "Traceback" not in out + err and "internal error" not in err
    assert after(target, expected)
    assert not [p for p in tmp_path.rglob(".*.tmp")], "a temporary file was left"


def test_dev_null_stays_a_device(capfd):
    """-o /dev/null (with or without --force) writes through; the device is never replaced by a file."""
    for extra in ([], ["--force"]):
        code, out, err = run([SPECS / "pc-legacy.yaml", "-q", "-o", "/dev/null", *extra], capfd)
        assert code == 0, err
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_dev_stdout_is_standard_output(capfd):
    code, out, err = run([SPECS / "pc-legacy.yaml", "-q", "-o", "/dev/stdout"], capfd)
    assert code == 0, err
    assert out.startswith("<domain") and out == _planned(capfd)


def test_dev_stdout_appended_to_a_file_is_not_truncated(tmp_path):
    """`>> log` then -o /dev/stdout: written to the open descriptor, as bash does, not by reopening the file."""
    log = tmp_path / "log"
    log.write_text("before\n")
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "topo_solve", str(SPECS / "pc-legacy.yaml"), "-q", "-o",
                               "/dev/stdout"], stdout=f, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.startswith("before\n<domain") and text.count("<domain") == 1


def test_a_fifo_is_written_through(tmp_path, capfd):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, _, err = run([SPECS / "pc-legacy.yaml", "-q", "-o", fifo, "--force"], capfd)
    reader.join(timeout=30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "--force turned the FIFO into a file"
    assert got and got[0].decode().startswith("<domain")


def test_a_stale_temporary_file_of_a_killed_run_is_removed(tmp_path, capfd):
    """A temporary file whose process is gone (kill -9) is removed by the next write into that folder;
    one of a live process is left alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.xml.topo-{dead.stdout.strip()}-1.tmp"
    live = tmp_path / f".other.xml.topo-{os.getpid()}-99.tmp"
    stale.write_text("half")
    live.write_text("in use")
    code, _, err = run([SPECS / "pc-legacy.yaml", "-q", "-o", tmp_path / "out.xml"], capfd)
    assert code == 0, err
    assert not stale.exists() and live.exists()


def test_a_full_standard_output_is_exit_2(tmp_path):
    """stdout on /dev/full: 'cannot write standard output: No space left on device', exit 2, no traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "topo_solve", str(SPECS / "pc-legacy.yaml"), "-q"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write standard output: No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_closed_pipe_on_standard_output_is_exit_2():
    proc = subprocess.Popen([sys.executable, "-m", "topo_solve", str(SPECS / "pc-legacy.yaml"), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 2, err
    assert "Broken pipe" in err and "Traceback" not in err and "Exception ignored" not in err


def test_a_report_into_a_folder_names_it(tmp_path, capfd):
    (tmp_path / "report").mkdir()
    code, _, err = run(["batch", SPECS / "pc-legacy.yaml", "-o", tmp_path / "out", "-j", "1", "--report",
                        tmp_path / "report"], capfd)
    assert code == 2 and f"cannot write {tmp_path / 'report'}: it is a folder" in err


def test_batch_names_the_file_it_cannot_write(tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pc-legacy.xml").mkdir()  # the output's name is taken by a folder
    code, _, err = run(["batch", SPECS / "pc-legacy.yaml", SPECS / "q35-web.yaml", "-o", out, "-j", "1"], capfd)
    assert code == 2
    assert f"error: {SPECS / 'pc-legacy.yaml'}: cannot write {out / 'pc-legacy.xml'}: it is a folder" in err
    assert (out / "q35-web.xml").read_text().startswith("<domain"), "the other spec is written"


# -- inputs: bytes, bounded ------------------------------------------------------------------

INPUT_CASES = [
    (["audit", "/dev/zero"], 2, "/dev/zero: larger than 8 MiB"),
    (["extend", "/dev/zero", "--hotplug", "pcie=1"], 2, "/dev/zero: larger than 8 MiB"),
    (["/dev/zero"], 2, "/dev/zero: larger than 8 MiB; a spec or a libvirt domain XML"),
    (["audit", "{tmp}"], 2, "cannot read the file: Is a directory"),
    (["{tmp}/zero-domain.yaml"], 2, "zero-domain.yaml:1: domain: /dev/zero: larger than 8 MiB"),
    (["{tmp}/dir-domain.yaml"], 2, "dir-domain.yaml:1: domain: {tmp}: cannot read the file: Is a directory"),
    (["{tmp}/nul-domain.yaml"], 2, "its name has a NUL character"),
    (["audit", "{tmp}/latin1.xml"], 2, "latin1.xml:1: not well-formed XML"),
    (["extend", "{tmp}/latin1.xml", "--hotplug", "pcie=1"], 2, "latin1.xml:1: not well-formed XML"),
]


@pytest.mark.parametrize(("argv", "code", "message"), INPUT_CASES, ids=[" ".join(c[0]) for c in INPUT_CASES])
def test_inputs(argv, code, message, tmp_path, capfd):
    (tmp_path / "zero-domain.yaml").write_text("domain: /dev/zero\nhotplug: [{class: pcie, count: 1}]\n")
    (tmp_path / "dir-domain.yaml").write_text(f"domain: {tmp_path}\nhotplug: [{{class: pcie, count: 1}}]\n")
    (tmp_path / "nul-domain.yaml").write_text('domain: "a\\0b.xml"\nhotplug: [{class: pcie, count: 1}]\n')
    (tmp_path / "latin1.xml").write_bytes("<domain><name>caf\xe9</name></domain>\n".encode("latin-1"))
    got, out, err = run([a.format(tmp=tmp_path) for a in argv], capfd)
    assert got == code, err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in out + err


def test_a_spec_that_starts_with_a_merge_key_is_a_spec(tmp_path, capfd):
    """'<<:' starts a YAML merge key, not an XML tag: plan reads it as a spec, as batch does."""
    spec = tmp_path / "merged.yaml"
    spec.write_text("<<: {name: merged, machine: q35}\nhotplug: [{class: pcie, count: 2}]\n")
    code, out, err = run([spec, "-q"], capfd)
    assert code == 0, err
    assert "<name>merged</name>" in out


def test_a_utf16_domain_is_planned_as_xml(tmp_path, capfd):
    """plan tells a domain XML from a spec in UTF-16 too (with a byte order mark and its encoding declared)."""
    path = tmp_path / "u16.xml"
    path.write_bytes(('<?xml version="1.0" encoding="UTF-16"?>\n' + WEB02.read_text()).encode("utf-16"))
    code, _, err = run(["plan", path, "--hotplug", "virtio-net=4", "-o", tmp_path / "out.xml"], capfd)
    assert code == 0, err
    assert (tmp_path / "out.xml").read_bytes().startswith(b"\xff\xfe"), "the file's own encoding is kept"


def test_batch_bounds_a_specs_domain_file(tmp_path, capfd):
    """`domain: /dev/zero` in a batch: that spec's error, at its line, in a second; not a worker out of memory."""
    spec = tmp_path / "zero.yaml"
    spec.write_text("hotplug: [{class: pcie, count: 1}]\ndomain: /dev/zero\n")
    code, _, err = run(["batch", spec, SPECS / "pc-legacy.yaml", "-o", tmp_path / "out", "-j", "2"], capfd)
    assert code == 2
    assert f"error: {spec}:2: domain: /dev/zero: larger than 8 MiB" in err
    assert (tmp_path / "out" / "pc-legacy.xml").exists()


def test_standard_input_is_bounded():
    proc = subprocess.run([sys.executable, "-m", "topo_solve", "audit", "-"], stdin=open("/dev/zero", "rb"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "<stdin>: larger than 8 MiB" in proc.stderr, proc.stderr


# -- extend --in-place: the bytes, the backup, the lock ---------------------------------------

def test_in_place_keeps_crlf_and_the_backup_is_the_original(tmp_path, capfd):
    original = WEB02.read_bytes().replace(b"\n", b"\r\n")
    domain = tmp_path / "web.xml"
    domain.write_bytes(original)
    code, _, err = run(["extend", domain, "--hotplug", "virtio-net=4", "--in-place", "-q"], capfd)
    assert code == 0, err
    assert (tmp_path / "web.xml.bak").read_bytes() == original
    new = domain.read_bytes()
    assert new != original and new.count(b"\n") == new.count(b"\r\n"), "a line lost its CR"
    import difflib

    ops = difflib.SequenceMatcher(None, original.split(b"\r\n"), new.split(b"\r\n"), autojunk=False).get_opcodes()
    assert {op for op, *_ in ops} == {"equal", "insert"}, "an original line changed"


def test_in_place_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, capfd):
    (tmp_path / "real.xml").write_bytes(WEB02.read_bytes())
    (tmp_path / "link.xml").symlink_to(tmp_path / "real.xml")
    code, _, err = run(["extend", tmp_path / "link.xml", "--hotplug", "virtio-net=4", "--in-place", "-q"], capfd)
    assert code == 0, err
    assert (tmp_path / "link.xml").is_symlink()
    assert (tmp_path / "real.xml").read_bytes() != WEB02.read_bytes()
    assert (tmp_path / "link.xml.bak").read_bytes() == WEB02.read_bytes()


def test_in_place_refuses_what_is_not_a_regular_file(tmp_path, capfd):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(WEB02.read_bytes()))
    writer.start()
    code, _, err = run(["extend", fifo, "--hotplug", "virtio-net=4", "--in-place"], capfd)
    writer.join(timeout=30)
    assert code == 2 and "--in-place replaces a regular file; this is a pipe" in err


def test_a_backup_left_by_a_killed_run_is_reused(tmp_path, capfd):
    """A .bak that already holds the original (a run killed after writing it) does not stop the next run."""
    domain = tmp_path / "web.xml"
    domain.write_bytes(WEB02.read_bytes())
    (tmp_path / "web.xml.bak").write_bytes(WEB02.read_bytes())
    code, _, err = run(["extend", domain, "--hotplug", "virtio-net=4", "--in-place", "-q"], capfd)
    assert code == 0, err
    (tmp_path / "web.xml.bak").write_bytes(b"something else\n")
    code, _, err = run(["extend", domain, "--hotplug", "virtio-net=6", "--in-place", "-q"], capfd)
    assert code == 2 and "web.xml.bak exists; pass --force" in err


def _audit(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "topo_solve", "audit", "--emit", "json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["capacity"]


@pytest.mark.parametrize("trial", range(3))
def test_two_in_place_runs_on_one_file_both_apply(trial, tmp_path):
    """Two `extend --in-place --force` at once on one file: the lock makes them take turns, the second
    extends the first's result, so the file ends with both requests met."""
    domain = tmp_path / "web.xml"
    domain.write_bytes(WEB02.read_bytes())
    cmd = [sys.executable, "-m", "topo_solve", "extend", str(domain), "--in-place", "--force", "-q"]
    procs = [subprocess.Popen(cmd + ["--hotplug", "virtio-net=6"], stderr=subprocess.PIPE, text=True),
             subprocess.Popen(cmd + ["--hotplug", "e1000=40"], stderr=subprocess.PIPE, text=True)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    capacity = _audit(domain)
    assert capacity["pcie"] >= 6 and capacity["pci"] >= 40, f"an extension was lost: {capacity}"


def test_two_in_place_runs_without_force_one_refuses_clearly(tmp_path):
    domain = tmp_path / "web.xml"
    domain.write_bytes(WEB02.read_bytes())
    cmd = [sys.executable, "-m", "topo_solve", "extend", str(domain), "--in-place", "-q"]
    procs = [subprocess.Popen(cmd + ["--hotplug", "virtio-net=6"], stderr=subprocess.PIPE, text=True),
             subprocess.Popen(cmd + ["--hotplug", "e1000=40"], stderr=subprocess.PIPE, text=True)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    assert "web.xml.bak exists; pass --force" in [e for c, e in results if c == 2][0]
    assert (tmp_path / "web.xml.bak").read_bytes() == WEB02.read_bytes()
    capacity = _audit(domain)
    winner = [i for i, (c, _) in enumerate(results) if c == 0][0]
    assert capacity["pcie"] >= 6 if winner == 0 else capacity["pci"] >= 40


def test_two_batches_into_one_folder_take_turns(tmp_path):
    """Both finish with exit 0: the second waits for the lock on OUTDIR, then finds the files written."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "topo_solve", "batch", str(SPECS), "-o", str(out), "-j", "2", "-q"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.stem}.xml" for s in SPECS.glob("*.yaml"))
