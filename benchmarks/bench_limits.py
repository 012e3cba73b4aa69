#!/usr/bin/env python3
"""Planning at the limits of each machine family, and how plan time grows.

Run from the repository root with the package installed::

    python benchmarks/bench_limits.py            # every case, the growth series, the plot
    python benchmarks/bench_limits.py --quick    # fewer repetitions
    python benchmarks/bench_limits.py --virsh    # also time `virsh define` of each feasible case

Cases (each a real spec, YAML text generated here):

* one feasible spec at each family's limit, and one just past it (infeasible);
* growth: plan time of pc and q35 guests as the device count doubles; the ratio
  per doubling must stay under 2.3 (no worse than linear, with noise);
* ``--virsh``: where libvirt is installed, ``virsh define`` of the planned XML
  (TCG domain type) timed beside the plan, as a ratio.

Targets: median ``solve()`` under 100 ms for every single spec, infeasible ones
included; growth ratio under 2.3.  Exit status 1 when a target is missed.
The plot of plan time against size is written to benchmarks/plan-time.svg.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan import load, machine, measure  # noqa: E402

from topo_solve.domain.write import render_domain  # noqa: E402
from topo_solve.errors import InfeasibleError  # noqa: E402
from topo_solve.solve import solve  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGET_MS = 100.0
GROWTH_LIMIT = 2.3


def pc(devices: int, hotplug: int = 100) -> str:
    return (f"name: lim-pc-{devices}\nmachine: pc\ndefaults: {{usb: false, memballoon: false}}\n"
            f"devices:\n  - {{name: nic, model: e1000, count: {devices}}}\n"
            f"hotplug:\n  - {{model: e1000, count: {hotplug}}}\n")


def q35(pcie: int, hotplug: int = 30, legacy: int = 40) -> str:
    return (f"name: lim-q35-{pcie}\nmachine: q35\n"
            f"devices:\n  - {{name: nic, model: virtio-net, count: {pcie}}}\n"
            f"  - {{name: old, model: e1000, count: {legacy}}}\n"
            f"hotplug:\n  - {{class: pcie, count: {hotplug}}}\n")


def q35_ports(hotplug: int) -> str:
    """Only PCIe hotplug: root ports first, then switches, up to the 256 bus numbers."""
    return (f"name: lim-q35-ports-{hotplug}\nmachine: q35\ndefaults: {{usb: false, memballoon: false}}\n"
            f"hotplug:\n  - {{class: pcie, count: {hotplug}}}\n")


def pseries(groups: int, hotplug: int) -> str:
    rows = "".join(f'  - {{name: vf{g}, model: hostdev, iommu_group: {g}, host: "0001:{g + 1:02x}:00.0"}}\n'
                   for g in range(groups))
    return (f"name: lim-pseries-{groups}-{hotplug}\nmachine: pseries\ndevices:\n{rows}"
            f"hotplug:\n  - {{model: hostdev, count: {hotplug}}}\n")


def numa_gpus(nodes: int) -> str:
    """Two assigned GPUs and a NIC per node, 4 PCIe hotplugs per node and 8 without a node."""
    devices = "".join(f"  - {{name: gpu{n}, model: hostdev, count: 2, numa_node: {n}}}\n"
                      f"  - {{name: nic{n}, model: virtio-net, numa_node: {n}}}\n" for n in range(nodes))
    hotplug = "".join(f"  - {{class: pcie, count: 4, numa_node: {n}}}\n" for n in range(nodes))
    return (f"name: lim-numa-gpus-{nodes}\nmachine: q35\nvcpus: {2 * nodes}\nmemory: {2048 * nodes}\n"
            f"numa: {{nodes: {nodes}}}\ndevices:\n{devices}hotplug:\n{hotplug}  - {{class: pcie, count: 8}}\n")


def packed(fixed: int, hotplug: int) -> str:
    """Devices never unplugged (packed as functions of root slots, issue 12) beside PCIe hotplug."""
    return (f"name: lim-packed-{fixed}-{hotplug}\nmachine: q35\n"
            f"devices:\n  - {{name: d, model: virtio-net, count: {fixed}, hotunplug: false}}\n"
            f"hotplug:\n  - {{class: pcie, count: {hotplug}}}\n")


def numa(nodes: int, per_node: int) -> str:
    devices = "".join(f"  - {{name: n{n}nic, model: virtio-net, count: {per_node}, numa_node: {n}}}\n"
                      for n in range(nodes))
    hotplug = "".join(f"  - {{class: pcie, count: {per_node}, numa_node: {n}}}\n" for n in range(nodes))
    return (f"name: lim-numa-{nodes}\nmachine: q35\nvcpus: {2 * nodes}\nmemory: {1024 * nodes}\n"
            f"numa: {{nodes: {nodes}}}\ndevices:\n{devices}hotplug:\n{hotplug}")


# (key, what, spec text, feasible?)
CASES = [
    ("pc-5000", "pc, 5,000 e1000 + 100 hotplug (index limit near)", pc(5000), True),
    ("pc-past", "pc, 7,600 e1000: more than 255 controller indexes", pc(7600), False),
    ("pseries-31", "pseries, 22 IOMMU groups + 8 hostdev hotplug: 31 PHBs", pseries(22, 8), True),
    ("pseries-past", "pseries, 23 groups + 8 hotplug: 32 PHBs", pseries(23, 8), False),
    ("q35-240", "q35, 240 PCIe hotplug: every root port pcie-root holds", q35_ports(240), True),
    ("q35-switch", "q35, 250 PCIe hotplug: switches past 240 root ports", q35_ports(250), True),
    ("q35-past", "q35, 300 PCIe hotplug: past the 256 bus numbers", q35_ports(300), False),
    ("q35-packed", "q35, 27 never unplugged + 209 PCIe hotplug: packed root functions", packed(27, 209), True),
    ("packed-past", "q35, 100 never unplugged + 260 PCIe hotplug", packed(100, 260), False),
    ("numa-4", "q35, 4 NUMA nodes, 8 NICs + 8 hotplug per node", numa(4, 8), True),
    ("numa-4-gpus", "q35, 4 NUMA nodes, 2 GPUs + NIC + 4 hotplug per node", numa_gpus(4), True),
    ("numa-past", "q35, 4 NUMA nodes, 70 NICs + 70 hotplug per node: past the indexes", numa(4, 70), False),
]

GROWTH = {
    "pc e1000 devices": (pc, [625, 1250, 2500, 5000]),
    "q35 virtio-net devices": (q35, [25, 50, 100, 200]),
}


def _solve_fn(text: str, key: str) -> Callable[[], object]:
    problem = load(text, key)

    def run():
        try:
            return solve(problem)
        except InfeasibleError as exc:
            return exc

    return run


def _svg(series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """A small line plot, no plotting library: plan time (ms) against devices, one line per series."""
    w, h, m = 640, 360, 50
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    xmax = max(x for pts in series.values() for x, _ in pts)
    ymax = max(y for pts in series.values() for _, y in pts) * 1.1
    sx = lambda x: m + (w - 2 * m) * x / xmax  # noqa: E731
    sy = lambda y: h - m - (h - 2 * m) * y / ymax  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">devices at boot</text>',
           f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">solve() median, ms'
           '</text>']
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<text x="{m - 6}" y="{sy(y) + 4}" text-anchor="end">{y:.0f}</text>')
        x = xmax * i / 4
        out.append(f'<text x="{sx(x)}" y="{h - m + 16}" text-anchor="middle">{x:.0f}</text>')
    for (name, pts), color in zip(series.items(), colors):
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in pts]
        ly = m + 16 * (list(series).index(name))
        out.append(f'<text x="{m + 10}" y="{ly}" fill="{color}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def _virsh_define_ms(xml: str) -> float | None:
    import uuid

    from topo_solve.hypervisor import Virsh, VirshError, ensure_daemon, libvirt_available

    ok, _ = libvirt_available()
    if not ok:
        return None
    daemon = ensure_daemon()
    virsh = Virsh()
    name = f"topo-solve-bench-{uuid.uuid4().hex[:6]}"
    xml = xml.replace("<domain type=\"kvm\">", "<domain type=\"qemu\">", 1)
    xml = xml.replace("<name>", f"<name>{name}", 1).replace(f"<name>{name}", "<name>", 1)
    from lxml import etree

    root = etree.fromstring(xml.encode())
    root.find("name").text = name
    text = etree.tostring(root, encoding="unicode")
    try:
        t = time.perf_counter()
        virsh.define(text)
        return (time.perf_counter() - t) * 1000
    except VirshError as exc:
        print(f"    virsh define failed: {exc}")
        return None
    finally:
        try:
            virsh.undefine(name)
        except VirshError:
            pass
        if daemon is not None:
            daemon.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--virsh", action="store_true", help="time virsh define of each feasible case")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args(argv)
    reps = dict(min_reps=5, max_reps=30, budget=1.0) if args.quick else dict(min_reps=15, max_reps=200, budget=3.0)
    for k, v in machine().items():
        print(f"{k:7} {v}")
    print(f"target  median solve() < {TARGET_MS:.0f} ms per spec; growth per doubling < {GROWTH_LIMIT}\n")
    missed = []
    print(f"{'case':14} {'median':>8} {'p90':>8}  result")
    for key, what, text, feasible in CASES:
        if args.only and key not in args.only:
            continue
        try:
            fn = _solve_fn(text, key)
        except Exception as exc:  # a spec feature this version does not have yet
            print(f"{key:14} {'-':>8} {'-':>8}  skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            missed.append(f"{key} (not run)")
            continue
        result = fn()
        got = not isinstance(result, InfeasibleError)
        stats = measure(fn, **reps)
        verdict = "ok" if stats.median < TARGET_MS and got == feasible else "MISSED"
        if got != feasible:
            verdict += f" (expected {'a plan' if feasible else 'infeasible'})"
        if verdict != "ok":
            missed.append(key)
        summary = (f"{sum(result.added.values())} controllers" if got
                   else result.causes[0].what if result.causes else "infeasible")
        extra = ""
        if args.virsh and got:
            ms = _virsh_define_ms(render_domain(result))
            if ms is not None:
                extra = f"; virsh define {ms:.0f} ms, {ms / stats.median:.1f}x the plan"
        print(f"{key:14} {stats.median:8.2f} {stats.p90:8.2f}  {verdict}: {what} -> {summary}{extra}")

    series: dict[str, list[tuple[int, float]]] = {}
    if not args.only:
        print("\ngrowth: solve() median in ms per size, and the ratio per doubling")
        for name, (gen, sizes) in GROWTH.items():
            pts = []
            for n in sizes:  # a ratio of two medians needs many repetitions, quick or not
                pts.append((n, measure(_solve_fn(gen(n), f"{name}-{n}"), min_reps=40, max_reps=200,
                                       budget=3.0).median))
            ratios = [b / a for (_, a), (_, b) in zip(pts, pts[1:])]
            print(f"  {name}: " + "  ".join(f"{n}: {ms:.2f}" for n, ms in pts)
                  + "   ratios " + " ".join(f"x{r:.2f}" for r in ratios))
            if max(ratios) >= GROWTH_LIMIT:
                missed.append(f"growth {name}")
            series[name] = pts
        _svg(series, HERE / "plan-time.svg")
        print("plot: benchmarks/plan-time.svg")
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
        return 1
    print("\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
