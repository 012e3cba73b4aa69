#!/usr/bin/env python3
"""In-process planning benchmarks for topo-solve.

Run from the repository root, with the package installed (``pip install -e .``)::

    python benchmarks/bench_plan.py                 # every case, default budget
    python benchmarks/bench_plan.py --quick         # fewer repetitions
    python benchmarks/bench_plan.py --only q35-mixed --only pc-2000
    python benchmarks/bench_plan.py --profile pc-2000   # cProfile of solve(), top 15
    python benchmarks/bench_plan.py --write-samples # refresh benchmarks/samples/*.yaml

Every problem is a real spec: YAML text generated here, parsed with
``topo_solve.spec.parse_spec`` and turned into a problem with ``to_problem``.
The same texts are checked in under ``benchmarks/samples/`` (the script says
so when they drift).  Two timings per case, both with ``time.perf_counter``:

* ``solve``: ``topo_solve.solve.solve(problem)`` only; the spec is loaded once;
* ``end-to-end``: ``parse_spec`` + ``to_problem`` + ``solve`` + ``render_domain``
  from the YAML text (for an infeasible spec: until ``InfeasibleError`` is raised).

Each case is warmed up, then repeated until both a minimum number of
repetitions and a time budget are reached (or a maximum count is hit); the
median and the 90th percentile are reported in milliseconds.  The garbage
collector stays on (the CLI runs with it on) and is emptied before each case.
Exit status: 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import os
import platform
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from topo_solve.domain.write import render_domain
from topo_solve.errors import InfeasibleError
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
TARGET_MS = 50.0  # median of solve() and of end-to-end, per case


# -- the specs ---------------------------------------------------------------

def q35_mixed(pcie: int = 200, legacy: int = 40, hotplug: int = 30) -> str:
    return f"""\
# Benchmark (a): a large q35 guest.  {pcie} virtio-net (PCIe) and {legacy} e1000
# (conventional PCI) at boot, {hotplug} more PCIe devices hotpluggable later.
name: bench-q35-{pcie}
machine: q35
devices:
  - {{name: nic, model: virtio-net, count: {pcie}}}
  - {{name: old, model: e1000, count: {legacy}}}
hotplug:
  - {{class: pcie, count: {hotplug}}}
"""


def pc_legacy(devices: int = 2000, hotplug: int = 100) -> str:
    return f"""\
# Benchmark (b): a very large i440fx (pc) guest.  {devices} e1000 at boot and
# {hotplug} more hotpluggable; needs about {-(-(devices + hotplug) // 30)} pci-bridges.
name: bench-pc-{devices}
machine: pc
devices:
  - {{name: nic, model: e1000, count: {devices}}}
hotplug:
  - {{model: e1000, count: {hotplug}}}
"""


def pseries_hostdev(groups: int = 20, hotplug: int = 8) -> str:
    rows = "".join(
        f'  - {{name: vf{g}, model: hostdev, iommu_group: {g}, host: "0001:{g + 1:02x}:00.0"}}\n'
        for g in range(groups)
    )
    return f"""\
# Benchmark (c): a POWER guest with {groups} assigned devices in {groups} IOMMU groups
# and {hotplug} more assigned devices hotpluggable: every group and every hotplug
# needs an empty PHB of its own ({groups} + {hotplug} = {groups + hotplug} extra PHBs; pseries allows 31).
name: bench-pseries-{groups}
machine: pseries
devices:
{rows}hotplug:
  - {{model: hostdev, count: {hotplug}}}
"""


def q35_impossible(hotplug: int = 300) -> str:
    return f"""\
# Benchmark (d): cannot fit.  {hotplug} PCIe hotplug slots need {hotplug} root ports and
# pcie-root holds at most 240; timed until InfeasibleError is raised.
name: bench-q35-impossible
machine: q35
hotplug:
  - {{class: pcie, count: {hotplug}}}
"""


@dataclass
class Case:
    key: str
    what: str
    text: str
    sample: str | None = None  # file name under samples/, None: not checked in
    infeasible: bool = False
    target: bool = True  # has the 50 ms target (the growth series points do not)


def main_cases() -> list[Case]:
    return [
        Case("q35-mixed", "(a) q35: 200 virtio-net + 40 e1000, 30 PCIe hotplug", q35_mixed(),
             "q35-200-pcie-40-legacy-30-hotplug.yaml"),
        Case("pc-2000", "(b) pc: 2000 e1000, 100 hotplug", pc_legacy(), "pc-2000-legacy-100-hotplug.yaml"),
        Case("pseries-hostdev", "(c) pseries: 20 hostdev in 20 groups, 8 hostdev hotplug", pseries_hostdev(),
             "pseries-20-hostdev-8-hotplug.yaml"),
        Case("q35-impossible", "(d) q35: 300 PCIe hotplug (infeasible)", q35_impossible(),
             "q35-impossible-300-hotplug.yaml", infeasible=True),
    ]


GROWTH = {
    # The other parts of each spec stay as in (a) and (b), so the last point is that case.
    "q35 PCIe devices (+40 e1000, 30 hotplug)": [(n, q35_mixed(pcie=n)) for n in (50, 100, 200)],
    "pc e1000 devices (+100 hotplug)": [(n, pc_legacy(devices=n)) for n in (500, 1000, 2000)],
}


# -- timing ----------------------------------------------------------------

@dataclass
class Stats:
    reps: int
    median: float
    p90: float
    best: float
    cpu: float  # median process CPU time: what is left when other processes take the CPUs

    def fmt(self) -> str:
        return f"{self.median:8.2f} {self.p90:8.2f} {self.best:8.2f} {self.cpu:8.2f} {self.reps:6d}"


def measure(fn: Callable[[], object], *, min_reps: int, max_reps: int, budget: float, warmup: int = 3) -> Stats:
    for _ in range(warmup):
        fn()
    gc.collect()
    times: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    p90 = statistics.quantiles(times, n=10, method="inclusive")[8] if len(times) > 1 else times[0]
    return Stats(len(times), statistics.median(times), p90, min(times), statistics.median(cpu))


def load(text: str, name: str):
    spec, lines = parse_spec(text, name)
    return to_problem(spec, lines, name)


def solve_fn(case: Case) -> Callable[[], object]:
    problem = load(case.text, case.key)  # loaded once, outside the timing
    if not case.infeasible:
        solve(problem)  # fails loudly here, not inside the loop
        return lambda: solve(problem)

    def run():
        try:
            solve(problem)
        except InfeasibleError:
            return
        raise AssertionError(f"{case.key} was expected to be infeasible")

    run()
    return run


def e2e_fn(case: Case) -> Callable[[], object]:
    text, name = case.text, case.key

    def run():
        problem = load(text, name)
        try:
            plan = solve(problem)
        except InfeasibleError:
            if case.infeasible:
                return None
            raise
        if case.infeasible:
            raise AssertionError(f"{case.key} was expected to be infeasible")
        return render_domain(plan)

    run()
    return run


# -- the machine -------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(nproc),
        "cpu": cpu,
        "ram": ram,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "commit": commit(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min, at start)",
    }


def commit() -> str:
    """The checkout's commit, and whether solver/ has changes not committed yet."""
    import subprocess

    root = HERE.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "solver"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" (solver/ has uncommitted changes)" if dirty else "")


# -- samples -------------------------------------------------------------------

def check_samples(cases: list[Case], write: bool) -> None:
    for c in cases:
        if c.sample is None:
            continue
        path = SAMPLES / c.sample
        if write:
            SAMPLES.mkdir(exist_ok=True)
            path.write_text(c.text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
        elif not path.exists() or path.read_text(encoding="utf-8") != c.text:
            print(f"note: {path.relative_to(HERE.parent)} differs from the generated spec; "
                  "run with --write-samples", file=sys.stderr)


def profile(case: Case, what: str, top: int) -> None:
    fn = solve_fn(case) if what == "solve" else e2e_fn(case)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        fn()
    prof.disable()
    st = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
    print(f"cProfile of {what} for {case.key}, 5 runs; top {top} by cumulative time", flush=True)
    st.sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time (tottime)", flush=True)
    st.sort_stats("tottime").print_stats(top)


# -- main ----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (min 10, budget 1 s per timing)")
    ap.add_argument("--only", action="append", metavar="CASE", help="run only this case (repeatable)")
    ap.add_argument("--no-growth", action="store_true", help="skip the growth series")
    ap.add_argument("--profile", metavar="CASE", help="cProfile this case instead of timing")
    ap.add_argument("--profile-what", choices=["solve", "e2e"], default="solve")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--write-samples", action="store_true", help="write benchmarks/samples/*.yaml and exit")
    args = ap.parse_args(argv)

    cases = main_cases()
    if args.write_samples:
        check_samples(cases, write=True)
        return 0
    check_samples(cases, write=False)
    if args.profile:
        by_key = {c.key: c for c in cases}
        for label, series in GROWTH.items():
            for n, text in series:
                key = f"{'q35' if label.startswith('q35') else 'pc'}-{n}"
                by_key.setdefault(key, Case(key, key, text))
        if args.profile not in by_key:
            ap.error(f"unknown case {args.profile}; choose from {', '.join(by_key)}")
        profile(by_key[args.profile], args.profile_what, args.top)
        return 0

    reps = dict(min_reps=10, max_reps=200, budget=1.0) if args.quick else dict(min_reps=30, max_reps=1000, budget=3.0)
    if args.only:
        unknown = set(args.only) - {c.key for c in cases}
        if unknown:
            ap.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(c.key for c in cases)}")
        cases = [c for c in cases if c.key in args.only]

    for k, v in machine().items():
        print(f"{k:7} {v}")
    print(f"target  median < {TARGET_MS:.0f} ms per case, for solve() and end-to-end\n")

    print(f"{'case':17} {'timing':11} {'median':>8} {'p90':>8} {'best':>8} {'cpu':>8} {'reps':>6}"
          "  (ms; cpu = median CPU time)")
    missed: list[str] = []
    for c in cases:
        for label, make in (("solve", solve_fn), ("end-to-end", e2e_fn)):
            s = measure(make(c), **reps)
            verdict = ""
            if c.target:
                ok = s.median < TARGET_MS
                verdict = "ok" if ok else "MISSED"
                if not ok:
                    missed.append(f"{c.key} {label}")
            print(f"{c.key:17} {label:11} {s.fmt()}  {verdict}", flush=True)

    if not args.no_growth and not args.only:
        print("\ngrowth series: solve() in ms, and the ratio to the previous point (each point doubles)")
        for label, series in GROWTH.items():
            print(f"  {label}")
            prev = None
            for n, text in series:
                s = measure(solve_fn(Case(f"{n}", label, text)), **reps)
                ratio = f"x{s.median / prev.median:.2f} (best x{s.best / prev.best:.2f})" if prev else ""
                print(f"    {n:6d}  median {s.median:8.2f}  p90 {s.p90:8.2f}  best {s.best:8.2f}  {ratio}", flush=True)
                prev = s

    print()
    if missed:
        print(f"MISSED the {TARGET_MS:.0f} ms target: {', '.join(missed)}")
        return 1
    print(f"every case met the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
