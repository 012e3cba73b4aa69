"""Faults as tests: kill -9 at random moments, a full and a read-only file system.

* ``-o`` of a large plan, ``extend --in-place`` of a large guest and a batch are killed
  with SIGKILL at random moments (seeded, spread over the run and weighted towards its
  end, where the writes are).  Afterwards the target is absent or complete (byte for
  byte what an uninterrupted run writes), the ``.bak`` is the original, nothing but
  hidden ``.NAME.topo-PID-N.tmp`` files can be left (and the next run removes those),
  the batch's worker processes are gone with it, and the batch run again finishes the
  rest with exit 0.
* A 64 KiB tmpfs in a mount namespace of the test's own (``unshare --mount``, as root):
  full, then read-only.  Every write fails with exit 2 "cannot write FILE: reason", the
  old file stays as it was, no temporary file is left.  Where the machine does not allow
  it (not root, no unshare, no tmpfs) the tests skip and say why;
  TOPO_SOLVE_REQUIRE_LIBVIRT does not turn these skips into failures (they are not
  libvirt's).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
BIG_SPEC = REPO / "benchmarks" / "samples" / "q35-200-pcie-40-legacy-30-hotplug.yaml"  # 100 KB of XML
TOPO = [sys.executable, "-m", "topo_solve"]
SEED = int(os.environ.get("TOPO_SOLVE_FAULT_SEED", "20261206"))  # another seed: other moments


def _visible(folder: Path, expected: set[str]) -> list[str]:
    """Files in ``folder`` a user would see (not hidden) besides the expected ones."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in expected)


def _hidden_temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300)
    return time.monotonic() - start, proc


def _kill_at(cmd: list[str], cwd: Path, delay: float) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.kill()  # SIGKILL
    proc.wait(timeout=60)
    return proc


def _moments(rng: random.Random, full: float, n: int) -> list[float]:
    """Kill moments over the whole run, most of them in its last part (where it writes)."""
    return sorted(rng.uniform(0.05, 1.0) * full if i % 3 == 0 else rng.uniform(0.6, 1.15) * full for i in range(n))


def test_kill_during_output_of_a_large_plan(tmp_path):
    rng = random.Random(SEED)
    full, proc = _timed(TOPO + [str(BIG_SPEC), "-q", "-o", "ref.xml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    reference = (tmp_path / "ref.xml").read_bytes()
    seen = {"absent": 0, "complete": 0}
    for i, delay in enumerate(_moments(rng, full, 8)):
        work = tmp_path / f"run{i}"
        work.mkdir()
        _kill_at(TOPO + [str(BIG_SPEC), "-q", "-o", "out.xml"], work, delay)
        out = work / "out.xml"
        if out.exists():
            assert out.read_bytes() == reference, f"a partial output after a kill at {delay:.2f} s"
            seen["complete"] += 1
        else:
            seen["absent"] += 1
        assert _visible(work, {"out.xml"}) == [], "a temporary file where the user sees it"
        temps = _hidden_temps(work)
        if temps:  # a run killed mid-write: the next write into the folder removes its temp
            proc = subprocess.run(TOPO + [str(BIG_SPEC), "-q", "-o", "out.xml", "--force"], cwd=work,
                                  capture_output=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            assert _hidden_temps(work) == [], "a stale temporary file was not removed"
            assert (work / "out.xml").read_bytes() == reference
    assert sum(seen.values()) == 8


def test_kill_during_extend_in_place(tmp_path):
    rng = random.Random(SEED + 1)
    proc = subprocess.run(TOPO + [str(BIG_SPEC), "-q", "-o", "guest.xml"], cwd=tmp_path, capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    original = (tmp_path / "guest.xml").read_bytes()
    request = ["--hotplug", "e1000=200", "--hotplug", "virtio-net=20"]
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(tmp_path / "guest.xml", ref / "guest.xml")
    full, proc = _timed(TOPO + ["extend", "guest.xml", "--in-place", "-q", *request], ref)
    assert proc.returncode == 0, proc.stderr
    extended = (ref / "guest.xml").read_bytes()
    assert extended != original
    for i, delay in enumerate(_moments(rng, full, 8)):
        work = tmp_path / f"run{i}"
        work.mkdir()
        (work / "guest.xml").write_bytes(original)
        _kill_at(TOPO + ["extend", "guest.xml", "--in-place", "-q", *request], work, delay)
        now = (work / "guest.xml").read_bytes()
        assert now in (original, extended), f"a partial domain after a kill at {delay:.2f} s"
        bak = work / "guest.xml.bak"
        if bak.exists():
            assert bak.read_bytes() == original, "the backup is not the original"
        else:
            assert now == original, "the domain was replaced without a backup"
        assert _visible(work, {"guest.xml", "guest.xml.bak"}) == []
        # run again: it finishes the job (a backup left by the killed run is the original, so it is kept)
        proc = subprocess.run(TOPO + ["extend", "guest.xml", "--in-place", "-q", *request], cwd=work,
                              capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert (work / "guest.xml").read_bytes() == extended
        assert (work / "guest.xml.bak").read_bytes() == (original if now == original else extended) or \
            now == extended
        assert _hidden_temps(work) == []


def _batch_specs(folder: Path, n: int) -> None:
    """n small specs of all four families, each its own guest name."""
    templates = sorted(SPECS.glob("*.yaml"))
    templates = [t for t in templates if "domain:" not in t.read_text()]
    folder.mkdir()
    for i in range(n):
        text = templates[i % len(templates)].read_text()
        lines = [f"name: guest-{i:04d}" if ln.startswith("name:") else ln for ln in text.splitlines()]
        (folder / f"g{i:04d}.yaml").write_text("\n".join(lines) + "\n")


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker processes")
def test_kill_a_batch_then_run_it_again(tmp_path):
    rng = random.Random(SEED + 2)
    specs = tmp_path / "specs"
    _batch_specs(specs, 400)
    full, proc = _timed(TOPO + ["batch", str(specs), "-o", "ref", "-j", "2", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    reference = {p.name: p.read_bytes() for p in (tmp_path / "ref").iterdir()}
    assert len(reference) == 400
    for i, delay in enumerate(_moments(rng, full, 4)):
        out = tmp_path / f"out{i}"
        batch = subprocess.Popen(TOPO + ["batch", str(specs), "-o", str(out), "-j", "2", "-q"], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        workers = _children(batch.pid)
        batch.kill()
        batch.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived the killed batch"
        if out.exists():
            for p in out.iterdir():
                if not p.name.startswith("."):
                    assert p.read_bytes() == reference[p.name], f"{p.name} is partial after a kill at {delay:.2f} s"
            assert _visible(out, set(reference)) == []
        proc = subprocess.run(TOPO + ["batch", str(specs), "-o", str(out), "-j", "2", "-q"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == reference, "the re-run did not finish the rest"


# -- a full and a read-only file system, in a mount namespace of our own ------------------------

_DRIVER = textwrap.dedent('''
    import json, os, subprocess, sys
    mnt, spec, big, domain = sys.argv[1:5]
    topo = [sys.executable, "-m", "topo_solve"]
    results = {}

    def run(name, args):
        p = subprocess.run(topo + args, capture_output=True, text=True, timeout=300)
        results[name] = {"code": p.returncode, "err": p.stderr, "files": sorted(os.listdir(mnt))}

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", mnt], check=True)
    # full: the plan (100 KB) cannot fit, an existing file stays, a batch names each file
    with open(os.path.join(mnt, "old.xml"), "w") as f:
        f.write("old\\n")
    run("new-file", [big, "-q", "-o", os.path.join(mnt, "new.xml")])
    run("replace", [big, "-q", "-o", os.path.join(mnt, "old.xml"), "--force"])
    results["old-content"] = open(os.path.join(mnt, "old.xml")).read()
    os.makedirs(os.path.join(mnt, "specs"))
    for i in range(3):
        with open(os.path.join(mnt, "specs", f"s{i}.yaml"), "w") as f:
            f.write(open(spec).read().replace("name: legacy-01", f"name: s{i}"))
    # fill what is left, then plan into it
    try:
        with open(os.path.join(mnt, "filler"), "wb") as f:
            while True:
                f.write(b"x" * 1024)
                f.flush()
    except OSError:
        pass
    run("batch", ["batch", os.path.join(mnt, "specs"), "-o", os.path.join(mnt, "out"), "-j", "1", "-q"])
    results["batch-out"] = sorted(os.listdir(os.path.join(mnt, "out"))) if os.path.isdir(os.path.join(mnt, "out")) else None
    os.unlink(os.path.join(mnt, "filler"))
    # extend --in-place on a full file system: the domain as it was, no backup, no temp
    with open(os.path.join(mnt, "guest.xml"), "wb") as f:
        f.write(open(domain, "rb").read())
    try:
        with open(os.path.join(mnt, "filler"), "wb") as f:
            while True:
                f.write(b"x" * 512)
                f.flush()
    except OSError:
        pass
    run("in-place-full", ["extend", os.path.join(mnt, "guest.xml"), "--hotplug", "virtio-net=6", "--in-place"])
    results["in-place-full-same"] = open(os.path.join(mnt, "guest.xml"), "rb").read() == open(domain, "rb").read()
    os.unlink(os.path.join(mnt, "filler"))
    # read-only
    subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
    run("ro-new", [spec, "-q", "-o", os.path.join(mnt, "ro.xml")])
    run("ro-in-place", ["extend", os.path.join(mnt, "guest.xml"), "--hotplug", "virtio-net=6", "--in-place"])
    results["ro-same"] = open(os.path.join(mnt, "guest.xml"), "rb").read() == open(domain, "rb").read()
    run("ro-report", ["batch", spec, "-o", os.path.join(mnt, "ro-out"), "-j", "1", "-q"])
    print(json.dumps(results))
''')


def _namespace_or_skip(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs in a private mount namespace (unshare --mount)")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) (util-linux)")
    probe = tmp_path / "probe"
    probe.mkdir()
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=64k",
                        "tmpfs", str(probe)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"this machine does not allow a tmpfs in a private mount namespace: {p.stderr.strip()}")


@pytest.fixture(scope="module")
def fs_faults(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsfaults")
    _namespace_or_skip(tmp)
    mnt = tmp / "mnt"
    mnt.mkdir()
    driver = tmp / "driver.py"
    driver.write_text(_DRIVER)
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, str(driver), str(mnt),
                        str(SPECS / "pc-legacy.yaml"), str(BIG_SPEC), str(SPECS / "domains" / "web-02.xml")],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert os.listdir(mnt) == [], "the tmpfs leaked out of the namespace"
    return mnt, json.loads(p.stdout)


def test_full_file_system(fs_faults):
    mnt, r = fs_faults
    new = r["new-file"]
    assert new["code"] == 2 and f"cannot write {mnt}/new.xml: No space left on device" in new["err"], new
    assert "new.xml" not in new["files"] and not [f for f in new["files"] if f.endswith(".tmp")]
    replace = r["replace"]
    assert replace["code"] == 2 and "No space left on device" in replace["err"]
    assert r["old-content"] == "old\n", "the file --force was to replace was damaged"
    batch = r["batch"]
    assert batch["code"] == 2
    for i in range(3):
        assert f"cannot write {mnt}/out/s{i}.xml: No space left on device" in batch["err"], batch["err"]
    assert r["batch-out"] == [], "a partial or temporary file in the batch's folder"
    for name in ("new-file", "replace", "batch"):
        assert "Traceback" not in r[name]["err"] and "internal error" not in r[name]["err"]


def test_full_file_system_in_place(fs_faults):
    mnt, r = fs_faults
    res = r["in-place-full"]
    assert res["code"] == 2 and "No space left on device" in res["err"], res
    assert r["in-place-full-same"], "the domain changed though the write failed"
    assert "guest.xml.bak" not in res["files"] and not [f for f in res["files"] if f.endswith(".tmp")]


def test_read_only_file_system(fs_faults):
    mnt, r = fs_faults
    for name in ("ro-new", "ro-in-place"):
        assert r[name]["code"] == 2 and "Read-only file system" in r[name]["err"], r[name]
        assert "Traceback" not in r[name]["err"]
    assert f"cannot write {mnt}/ro.xml: Read-only file system" in r["ro-new"]["err"]
    assert r["ro-same"]
    assert r["ro-report"]["code"] == 2 and f"{mnt}/ro-out" in r["ro-report"]["err"], r["ro-report"]
