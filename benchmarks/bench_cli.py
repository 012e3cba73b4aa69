#!/usr/bin/env python3
"""CLI start-up benchmarks for topo-solve.

Run from the repository root, with the package installed (``pip install -e .``)::

    python benchmarks/bench_cli.py              # 20 runs of each command
    python benchmarks/bench_cli.py --runs 50 --top 20

1. Wall-clock time of ``topo-solve specs/q35-web.yaml`` end to end (a new
   process each time: interpreter start, imports, load, solve, render, write),
   ``--runs`` times; median and p90.  Target: median under 0.5 s.  For
   comparison, the same for ``topo-solve --help`` (imports click only) and for a
   bare ``python -c pass``.
2. ``python -X importtime -c 'import topo_solve.cli'``: the modules that
   importing the CLI pays for, largest cumulative first, to show that pydantic,
   lxml, PyYAML and the solver are not among them.  Then the same for
   everything ``plan`` imports, which is where the rest of the start-up goes.

Exit status: 0 when the target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "specs/q35-web.yaml"
TARGET_S = 0.5


def cli_cmd() -> list[str]:
    exe = shutil.which("topo-solve")
    if exe:
        return [exe]
    return [sys.executable, "-c", "from topo_solve.cli import main; main()"]


def env_as_is() -> dict[str, str]:
    return dict(os.environ)


def env_cached(prefix: str) -> dict[str, str]:
    """Bytecode written and read under ``prefix`` (never in the source tree)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = prefix
    return env


def wall(cmd: list[str], runs: int, envs: dict[str, dict[str, str]]) -> dict[str, tuple[float, float, float]]:
    """Median, p90 and best wall-clock seconds per environment; runs alternate between them."""
    times: dict[str, list[float]] = {m: [] for m in envs}
    for i in range(runs + 1):  # the first round warms the page cache (and the bytecode cache) and is dropped
        for mode, env in envs.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()}")
            if i:
                times[mode].append(dt)
    return {m: (statistics.median(t), statistics.quantiles(t, n=10, method="inclusive")[8], min(t))
            for m, t in times.items()}


def importtime(code: str, env: dict[str, str]) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) from ``-X importtime``, one row per imported module."""
    env = dict(env)
    env.pop("PYTHONIMPORTTIME", None)
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((int(self_us), int(cum_us), name.rstrip()))
    return rows


def show_imports(code: str, top: int, env: dict[str, str], repeat: int = 5) -> None:
    """The median over ``repeat`` runs of each module's self and cumulative time."""
    importtime(code, env)  # warm
    samples: dict[str, list[tuple[int, int]]] = {}
    for _ in range(repeat):
        for s, c, n in importtime(code, env):
            samples.setdefault(n.strip(), []).append((s, c))
    rows = [(statistics.median(s for s, _ in v), statistics.median(c for _, c in v), n) for n, v in samples.items()]
    total = sum(s for s, _, _ in rows)
    print(f"\n$ python -X importtime -c '{code}'   (median of {repeat} runs)")
    print(f"  {len(rows)} modules, {total / 1000:.1f} ms of import time in all")
    heavy = [p for p in ("pydantic", "lxml", "yaml", "constraint", "rich", "topo_solve.solve", "topo_solve.spec")
             if any(n.strip() == p for _, _, n in rows)]
    print(f"  heavy modules imported: {', '.join(heavy) if heavy else 'none'}")
    print(f"  top {top} by cumulative time:")
    print(f"  {'cumul ms':>9} {'self ms':>8}  module")
    for s, c, n in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"  {c / 1000:9.2f} {s / 1000:8.2f}  {n.strip()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)

    cmd = cli_cmd()
    print(f"CLI: {' '.join(cmd)}   python: {sys.executable} {sys.version.split()[0]}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min, at start)")
    dont = os.environ.get("PYTHONDONTWRITEBYTECODE")
    print(f"PYTHONDONTWRITEBYTECODE={dont or '(unset)'}"
          + ("  -> 'as is': modules without a .pyc (an editable checkout) are compiled on every start" if dont else ""))
    print(f"wall clock, {args.runs} runs each (s); 'cached': bytecode kept under a temporary PYTHONPYCACHEPREFIX")
    print(f"  {'command':32} {'bytecode':8} {'median':>7} {'p90':>7} {'best':>7}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="topo-solve-pyc-") as prefix:
        cached = env_cached(prefix)
        for label, c in ((f"topo-solve {SPEC}", cmd + [SPEC]),
                         ("topo-solve --help", cmd + ["--help"]),
                         ("python -c pass", [sys.executable, "-c", "pass"])):
            modes = {"as is": env_as_is(), "cached": cached}
            stats = wall(c, args.runs, modes)
            for mode, (med, p90, best) in stats.items():
                results[(label, mode)] = med
                print(f"  {label:32} {mode:8} {med:7.3f} {p90:7.3f} {best:7.3f}", flush=True)

        show_imports("import topo_solve.cli", args.top, cached)
        # what `plan` imports by the time it has solved and rendered (constraint: inside choose_counts)
        show_imports("import topo_solve.cli, topo_solve.spec, topo_solve.solve, topo_solve.domain.write, constraint",
                     args.top, cached)

    med = max(results[(f"topo-solve {SPEC}", m)] for m in ("as is", "cached"))
    print()
    if med < TARGET_S:
        print(f"target met: topo-solve {SPEC} median {med:.3f} s < {TARGET_S} s")
        return 0
    print(f"MISSED: topo-solve {SPEC} median {med:.3f} s >= {TARGET_S} s")
    return 1


if __name__ == "__main__":
    sys.exit(main())
