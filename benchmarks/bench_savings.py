#!/usr/bin/env python3
"""Controllers a fleet saves: the planner now against the planner of an earlier revision.

Run from the repository root, with the package installed (``pip install -e .``)::

    python benchmarks/bench_savings.py                 # against 684cc35 (before issue 12)
    python benchmarks/bench_savings.py --before REV

Every flavor of the batch benchmark's fleet (benchmarks/bench_batch.py: machine family x
device profile x hotplug headroom x libvirt defaults, 189 flavors) is planned by this checkout and
by the topo-solve of ``--before`` (checked out with ``git worktree`` into a temporary folder and
imported from there in a second process).  For each family it prints the controllers per guest
before and after, the root ports saved per guest (each about 700 KB of QEMU memory before the guest
runs: a KubeVirt maintainer's measurement, kubevirt/kubevirt pull 14754), and the median and
slowest plan time now (each flavor's own time is the median of 5 runs), which must stay under the
50 ms target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_batch import flavors, spec_text  # noqa: E402
from bench_plan import machine  # noqa: E402

PORT_KB = 700
TARGET_MS = 50.0

_COUNT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
out = {}
for name, text in json.loads(sys.stdin.read()).items():
    spec, lines = parse_spec(text, name)
    problem = to_problem(spec, lines, name)
    times = []
    for _ in range(5):  # the median of 5: one slow run on a busy machine is not the plan's time
        t = time.perf_counter()
        plan = solve(problem)
        times.append((time.perf_counter() - t) * 1000)
    ms = sorted(times)[2]
    out[name] = {"controllers": sum(plan.added.values()), "ports": plan.added.get("pcie-root-port", 0)
                 + plan.added.get("pcie-switch-downstream-port", 0), "ms": ms}
print(json.dumps(out))
"""


def count(pythonpath: Path, specs: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _COUNT, str(pythonpath)], input=json.dumps(specs),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="684cc35", help="the revision to compare with")
    args = ap.parse_args()
    specs = {f"{fam}-{prof}-{head}-{d}": spec_text("fleet", fam, prof, head, d)
             for fam, prof, head, d in flavors()}
    for k, v in machine().items():
        print(f"{k:7} {v}")
    with tempfile.TemporaryDirectory(prefix="bench-savings-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before],
                       check=True, capture_output=True)
        try:
            (old / "topo_solve").symlink_to(old / "solver")
            before = count(old, specs)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    now_root = Path(tempfile.mkdtemp(prefix="bench-savings-now-"))
    (now_root / "topo_solve").symlink_to(REPO / "solver")
    t = time.perf_counter()
    after = count(now_root, specs)
    print(f"\n{len(specs)} flavors planned by {args.before} and by this checkout "
          f"({time.perf_counter() - t:.1f} s now)\n")
    print(f"{'family':8} {'flavors':>7} {'ctrl before':>11} {'ctrl now':>9} {'ports saved':>11} "
          f"{'MB saved':>8} {'median ms':>9} {'max ms':>7}")
    families = sorted({k.split("-")[0] for k in specs})
    worst = 0.0
    for fam in families:
        names = [k for k in specs if k.startswith(fam + "-")]
        b = sum(before[n]["controllers"] for n in names) / len(names)
        a = sum(after[n]["controllers"] for n in names) / len(names)
        saved = sum(before[n]["ports"] - after[n]["ports"] for n in names) / len(names)
        times = [after[n]["ms"] for n in names]
        worst = max(worst, max(times))
        print(f"{fam:8} {len(names):7} {b:11.2f} {a:9.2f} {saved:11.2f} {saved * PORT_KB / 1000:8.2f} "
              f"{statistics.median(times):9.2f} {max(times):7.2f}")
    more = [n for n in specs if after[n]["controllers"] > before[n]["controllers"]]
    print(f"\nflavors with more controllers now: {len(more)} {more[:5]}")
    print(f"{'met' if worst < TARGET_MS else 'MISSED'}: slowest plan {worst:.1f} ms (target {TARGET_MS:.0f})")
    return 0 if worst < TARGET_MS and not more else 1


if __name__ == "__main__":
    sys.exit(main())
