#!/usr/bin/env python3
"""The long fuzz run: N mutated specs and N mutated domain XMLs through the CLI, every check of
tests/fuzz/oracle.py, the figures docs/conformance.md quotes.

    python benchmarks/fuzz_long.py --specs 10000 --xml 10000 --jobs 2 --save fuzz-findings/

Unlike ``pytest -m fuzz --hypothesis-profile=long`` (which stops at the first new failure and
shrinks it), this goes on after a failure and counts everything.  Inputs come from seeded
``random.Random`` choosers (seed S+i for input i), so any finding is reproduced by its seed:
``--only spec:1234``.  With ``--save DIR`` every input that showed a problem is written there
(``spec-SEED.yaml`` / ``xml-SEED.xml`` with a ``.txt`` saying what went wrong).  Exit 1 when a
problem that is not a known open fault (tests/fuzz/known.py) was found.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz.choose import RandomChooser  # noqa: E402
from tests.fuzz.gen_spec import spec_case  # noqa: E402
from tests.fuzz.gen_xml import seed_domains, xml_case  # noqa: E402
from tests.fuzz.oracle import MAX_CPU_S, MAX_MEMORY_MB, Stats, check_spec, check_xml  # noqa: E402

SCHEMA = "/usr/share/libvirt/schemas/domain.rng"


def _schema():
    from lxml import etree

    return etree.RelaxNG(etree.parse(SCHEMA)) if os.path.exists(SCHEMA) else None


def _preload() -> None:
    import topo_solve.batch  # noqa: F401
    import topo_solve.cli  # noqa: F401
    import topo_solve.domain.plan  # noqa: F401
    import topo_solve.solve  # noqa: F401
    import topo_solve.spec  # noqa: F401
    import topo_solve.verify  # noqa: F401

    seed_domains()


def _work(args: tuple[str, list[int], str | None]) -> dict:
    kind, seeds, save = args
    _preload()
    relaxng = _schema()
    stats = Stats()
    for seed in seeds:
        c = RandomChooser(seed)
        if kind == "spec":
            case = spec_case(c)
            problems = check_spec(case, relaxng, stats)
        else:
            case = xml_case(c)
            problems = check_xml(case, relaxng, stats)
        stats.inputs[kind] += 1
        stats.add(problems)
        if problems and save:
            folder = Path(save)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{kind}-{seed}.{'yaml' if kind == 'spec' else 'xml'}").write_bytes(case.data)
            (folder / f"{kind}-{seed}.txt").write_text(case.describe() + "\n" + "\n".join(str(p) for p in problems)
                                                       + "\n")
        for p in problems:
            if not p.known:
                print(f"{kind}:{seed} {case.describe()}\n  {p}", flush=True)
    return stats.to_json()


def _merge(parts: list[dict]) -> dict:
    out: dict = {"inputs": Counter(), "runs": 0, "codes": Counter(), "problems": Counter(), "known": Counter(),
                 "max_cpu_s": 0.0, "max_cpu_argv": [], "max_memory_mb": 0.0, "max_memory_argv": [],
                 "schema_checked": 0, "audited": 0, "examples": []}
    for p in parts:
        for key in ("inputs", "codes", "problems", "known"):
            out[key].update(p[key])
        for key in ("runs", "schema_checked", "audited"):
            out[key] += p[key]
        for key, argv in (("max_cpu_s", "max_cpu_argv"), ("max_memory_mb", "max_memory_argv")):
            if p[key] > out[key]:
                out[key], out[argv] = p[key], p[argv]
        out["examples"] += p["examples"][: max(0, 50 - len(out["examples"]))]
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in out.items()}


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    import lxml.etree
    import yaml

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
            "lxml": lxml.etree.__version__, "libxml2": ".".join(map(str, lxml.etree.LIBXML_VERSION)),
            "pyyaml": yaml.__version__, "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "commit": os.popen(f"git -C {REPO} rev-parse --short HEAD 2>/dev/null").read().strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", type=int, default=10_000)
    ap.add_argument("--xml", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1, help="first seed (input i has seed SEED+i)")
    ap.add_argument("--jobs", type=int, default=1, help="driver processes (each forks one CLI run at a time)")
    ap.add_argument("--save", metavar="DIR", help="write every input that showed a problem here")
    ap.add_argument("--report", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--only", metavar="KIND:SEED", help="run one input (spec:123 or xml:45) and print it")
    args = ap.parse_args()
    if args.only:
        kind, seed = args.only.split(":")
        case = spec_case(RandomChooser(int(seed))) if kind == "spec" else xml_case(RandomChooser(int(seed)))
        print(case.describe())
        sys.stdout.buffer.write(case.data[:4000] + b"\n")
        print(json.dumps(_work((kind, [int(seed)], args.save)), indent=2))
        return 0
    jobs = []
    for kind, n in (("spec", args.specs), ("xml", args.xml)):
        seeds = list(range(args.seed, args.seed + n))
        step = 50  # small chunks: the slow inputs spread over the drivers
        jobs += [(kind, seeds[i:i + step], args.save) for i in range(0, len(seeds), step)]
    start = time.monotonic()
    parts = []
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for i, part in enumerate(pool.imap_unordered(_work, jobs)):
                parts.append(part)
                if i % 20 == 19:
                    print(f"... {sum(sum(p['inputs'].values()) for p in parts)} inputs, "
                          f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    else:
        for job in jobs:
            parts.append(_work(job))
    figures = _merge(parts)
    figures["seconds"] = round(time.monotonic() - start, 1)
    figures["limits"] = {"cpu_s": MAX_CPU_S, "memory_mb": MAX_MEMORY_MB}
    figures["seed"] = args.seed
    figures["machine"] = _machine()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
