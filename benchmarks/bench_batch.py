#!/usr/bin/env python3
"""Batch benchmark: 10,000 generated guest templates of all four families through ``topo-solve batch``.

Run from the repository root, with the package installed (``pip install -e .``)::

    python benchmarks/bench_batch.py                  # 10,000 fleet templates, 3 runs of the CLI
    python benchmarks/bench_batch.py --runs 1 --count 2000
    python benchmarks/bench_batch.py --distinct       # also: every template a different problem (no cache hits)
    python benchmarks/bench_batch.py --profile        # cProfile of plan_many(workers=1) over 1,000 templates
    python benchmarks/bench_batch.py --keep DIR       # write the specs (and outputs) to DIR and keep them
    python benchmarks/bench_batch.py --xml            # domain XML templates (never defined) instead of specs

The generator writes one YAML spec per template into a temporary folder.  A
fleet's templates repeat: each is drawn (seeded, so every run writes the same
files) from a limited set of *flavors* (machine family x device profile x
hotplug headroom x libvirt defaults) and gets a distinct guest name, as
``<flavor>-<n>`` templates of one flavor differ only by name.  ``--distinct``
adds a second measurement in which every template also gets a memory size of
its own, so no two problems are identical and every one is solved (the cache
never hits; the plans are those of the flavors).

The timing is wall clock around ``topo-solve batch DIR -o OUT -q --report
report.json`` in a new process (interpreter start-up, finding the files,
reading, parsing and validating YAML, planning, rendering and writing every
XML file, the report); the output folder is emptied between runs.  Afterwards
the script checks that every spec has its XML file with its own guest name.
With ``--xml`` the templates are domain XML as a tool writes it before
``virsh define`` (virt-install's shape: no PCI address anywhere, 14 pcie-root-ports
without index on q35 and virt, a <uuid> and MAC address of its own), one per
fleet template, and the batch plans every one for the same ``--hotplug``
headroom (XML_HOTPLUG), each written back as the user's document.
Exit status: 0 when the median run meets the target (500 templates/s), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_plan import machine  # noqa: E402 - the same machine description as the other benchmarks

TARGET_PER_S = 500.0
COUNT = 10_000

# -- the fleet ---------------------------------------------------------------
# Device profiles per family: lists of (name, model, count) at boot.  Models follow each family's usual devices.

PROFILES: dict[str, dict[str, list[tuple[str, str, int]]]] = {
    "q35": {
        "web": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 1)],
        "db": [("nic", "virtio-net", 2), ("disk", "virtio-blk", 4), ("rng", "virtio-rng", 1)],
        "gpu": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 1), ("gpu", "hostdev", 1)],
        "legacy": [("nic", "e1000", 2), ("disk", "virtio-blk-transitional", 1), ("serial", "pci-serial", 1)],
        "nfv": [("nic", "virtio-net", 4), ("vf", "hostdev", 2), ("disk", "virtio-blk", 1)],
        "desktop": [("nic", "e1000e", 1), ("disk", "virtio-blk", 1), ("usb3", "qemu-xhci", 1),
                    ("sound", "ich9-hda", 1), ("gpu", "virtio-gpu", 1), ("kbd", "virtio-input", 1)],
    },
    "pc": {
        "web": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 1)],
        "db": [("nic", "virtio-net", 2), ("disk", "virtio-blk", 4)],
        "legacy": [("nic", "e1000", 2), ("disk", "virtio-blk", 2), ("serial", "pci-serial", 1)],
        "old-win": [("nic", "rtl8139", 1), ("disk", "virtio-blk", 1), ("vga", "vga", 1)],
        "storage": [("nic", "virtio-net", 1), ("scsi", "virtio-scsi", 2), ("disk", "virtio-blk", 8)],
    },
    "pseries": {
        "web": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 1)],
        "db": [("nic", "virtio-net", 2), ("disk", "virtio-blk", 4)],
        "hpc": [("nic", "virtio-net", 1), ("vf0", "hostdev", 1), ("vf1", "hostdev", 1)],
        "scsi": [("nic", "virtio-net", 1), ("scsi", "virtio-scsi", 1), ("disk", "virtio-blk", 2)],
    },
    "virt": {
        "web": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 1)],
        "db": [("nic", "virtio-net", 2), ("disk", "virtio-blk", 3), ("rng", "virtio-rng", 1)],
        "edge": [("nic", "virtio-net", 2), ("vf", "hostdev", 1)],
        "build": [("nic", "virtio-net", 1), ("disk", "virtio-blk", 2), ("serial", "virtio-serial", 1)],
    },
}

# Hotplug headroom sizes: lists of (key, value, count); key "model" or "class".
HEADROOM: dict[str, dict[str, list[tuple[str, str, int]]]] = {
    "q35": {"small": [("class", "pcie", 2)],
            "medium": [("model", "virtio-net", 4), ("model", "virtio-blk", 4)],
            "large": [("class", "pcie", 16), ("model", "hostdev", 2), ("class", "pci", 2)],
            "legacy": [("model", "e1000", 4)]},
    "pc": {"small": [("class", "pci", 2)],
           "medium": [("model", "virtio-net", 4), ("model", "e1000", 4)],
           "large": [("class", "pci", 40)]},
    "pseries": {"small": [("model", "virtio-net", 2)],
                "medium": [("model", "virtio-net", 4), ("model", "hostdev", 2)],
                "large": [("class", "pci", 20), ("model", "hostdev", 4)]},
    "virt": {"small": [("class", "pcie", 2)],
             "medium": [("model", "virtio-net", 4), ("model", "virtio-blk", 2)],
             "large": [("class", "pcie", 24), ("model", "hostdev", 2)]},
}

DEFAULTS = ["", "defaults: {usb: false}\n", "defaults: {memballoon: false, video: true}\n"]
ARCH = {"q35": "", "pc": "", "pseries": "", "virt": "arch: aarch64\n"}


def flavors() -> list[tuple[str, str, str, int]]:
    """Every (family, profile, headroom, defaults index) a template may have."""
    return [(fam, prof, head, d) for fam in PROFILES for prof in PROFILES[fam] for head in HEADROOM[fam]
            for d in range(len(DEFAULTS))]


def spec_text(name: str, fam: str, prof: str, head: str, d: int, memory: int = 4096) -> str:
    """One template."""
    devices = []
    group = 10
    for dev, model, n in PROFILES[fam][prof]:
        if model == "hostdev":
            for i in range(n):  # one entry per host device, each in its own IOMMU group
                devices.append(f'  - {{name: {dev}{"-" + str(i) if n > 1 else ""}, model: hostdev, '
                               f'iommu_group: {group}, host: "0000:{group:02x}:00.0"}}\n')
                group += 1
        else:
            devices.append(f"  - {{name: {dev}, model: {model}" + (f", count: {n}" if n > 1 else "") + "}\n")
    hotplug = "".join(f"  - {{{key}: {value}, count: {n}}}\n" for key, value, n in HEADROOM[fam][head])
    return (f"# fleet template: {fam} {prof}, headroom {head}\n"
            f"name: {name}\nmachine: {fam}\n{ARCH[fam]}memory: {memory}\nvcpus: 2\n{DEFAULTS[d]}"
            f"devices:\n{''.join(devices)}hotplug:\n{hotplug}")


def generate(folder: Path, count: int, distinct: bool = False, seed: int = 6) -> int:
    """Write ``count`` specs into ``folder``; return how many different flavors they use."""
    rng = random.Random(seed)
    table = flavors()
    used = set()
    for i in range(count):
        fam, prof, head, d = flavor = rng.choice(table)
        used.add(flavor)
        name = f"{fam}-{prof}-{head}-{i:05d}"
        # distinct: a memory size of its own, so no two templates are the same problem (the plans are alike)
        memory = 1024 + i if distinct else 4096
        (folder / f"tpl-{i:05d}.yaml").write_text(spec_text(name, fam, prof, head, d, memory), encoding="utf-8")
    return len(used)


# -- domain XML templates (--xml) --------------------------------------------

XML_HOTPLUG = ["pcie=2", "hostdev=1"]  # every template of the XML fleet is planned for this headroom


def xml_template(fam: str, prof: str, head: str, d: int) -> str:
    """A flavor as a never-defined domain XML: the spec's plan with every PCI controller and address,
    alias and placeholder host address taken out, and virt-install's 14 root ports on PCIe machines."""
    import re

    from topo_solve.domain.write import render_domain
    from topo_solve.solve import solve
    from topo_solve.spec import parse_spec, to_problem

    spec, lines = parse_spec(spec_text("NAME", fam, prof, head, d), "flavor.yaml")
    xml = render_domain(solve(to_problem(spec, lines, "flavor.yaml")))
    xml = re.sub(r"\n *<address type=.pci.[^>]*/>", "", xml)
    xml = re.sub(r"\n *<alias name=[^>]*/>", "", xml)
    xml = re.sub(r"\n *<controller type=.pci.[^>]*/>", "", xml)
    xml = re.sub(r"\n *<controller type=.pci.[^>]*[^/]>.*?</controller>", "", xml, flags=re.S)
    root = {"q35": "pcie-root", "virt": "pcie-root", "pc": "pci-root", "pseries": "pci-root"}[fam]
    ports = "".join("\n    <controller type='pci' model='pcie-root-port'/>" for _ in range(14)) \
        if root == "pcie-root" else ""
    xml = xml.replace("<devices>", f"<devices>\n    <controller type='pci' model='{root}'/>{ports}", 1)
    xml = xml.replace("<name>NAME</name>", "<name>NAME</name>\n  <uuid>UUID</uuid>", 1)
    return xml.replace('<interface type="user">', '<interface type="user">\n      <mac address="MAC"/>')


def generate_xml(folder: Path, count: int, seed: int = 6) -> int:
    import uuid

    rng = random.Random(seed)
    table = flavors()
    cache: dict = {}
    used = set()
    for i in range(count):
        flavor = rng.choice(table)
        used.add(flavor)
        if flavor not in cache:
            cache[flavor] = xml_template(*flavor)
        text = (cache[flavor].replace("NAME", f"{flavor[0]}-{flavor[1]}-{i:05d}")
                .replace("UUID", str(uuid.UUID(int=rng.getrandbits(128))))
                .replace("MAC", "52:54:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)))
        (folder / f"tpl-{i:05d}.xml").write_text(text, encoding="utf-8")
    return len(used)


# -- the runs ----------------------------------------------------------------

def run_cli(specs: Path, out: Path, report: Path, jobs: int | None, extra: list[str] = ()) -> float:
    if out.exists():
        shutil.rmtree(out)
    argv = [sys.executable, "-m", "topo_solve", "batch", str(specs), "-o", str(out), "-q", "--report", str(report),
            "--force"] + (["-j", str(jobs)] if jobs else []) + list(extra)
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"topo-solve batch exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds


def check_outputs(specs: Path, out: Path, report: Path) -> dict:
    data = json.loads(report.read_text())
    results = data["results"]
    names = {Path(r["spec"]).stem: r["name"] for r in results}
    for spec in [*specs.glob("*.yaml"), *specs.glob("*.xml")]:
        xml = (out / f"{spec.stem}.xml").read_text()
        if f"<name>{names[spec.stem]}</name>" not in xml:
            sys.exit(f"{out / spec.stem}.xml does not carry its guest name {names[spec.stem]}")
    return data


def measure(label: str, count: int, distinct: bool, runs: int, jobs: int | None, keep: Path | None,
            xml: bool = False) -> float:
    root = Path(tempfile.mkdtemp(prefix="bench-batch-")) if keep is None else keep
    specs = root / ("specs-distinct" if distinct else "specs")
    if specs.exists():
        shutil.rmtree(specs)
    specs.mkdir(parents=True)
    t = time.perf_counter()
    used = generate_xml(specs, count) if xml else generate(specs, count, distinct)
    extra = [a for h in XML_HOTPLUG for a in ("--hotplug", h)] if xml else []
    print(f"{label}: {count} specs written in {time.perf_counter() - t:.1f} s to {specs} "
          f"({used} flavors{', every template a different problem' if distinct else ''})")
    out, report = root / "out", root / "report.json"
    times = []
    try:
        for i in range(runs):
            s = run_cli(specs, out, report, jobs, extra)
            data = check_outputs(specs, out, report)
            times.append(s)
            print(f"  run {i + 1}: {s:6.2f} s  {count / s:7.0f} templates/s   "
                  f"planned {data['ok']}, infeasible {data['infeasible']}, errors {data['error']}; "
                  f"solved {data['solved']}, from cache {data['cached']} (in-command {data['seconds']:.2f} s)")
    finally:
        if keep is None:
            shutil.rmtree(root)
    median = statistics.median(times)
    print(f"  median {median:.2f} s = {count / median:.0f} templates/s, best {count / min(times):.0f}/s")
    return count / median


def profile(count: int, xml: bool = False) -> None:
    import cProfile
    import pstats

    from topo_solve.batch import plan_many
    from topo_solve.spec import parse_hotplug_option

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        specs = Path(tmp) / "specs"
        specs.mkdir()
        (generate_xml if xml else generate)(specs, count)
        paths = sorted(specs.glob("*.xml" if xml else "*.yaml"))
        hotplug = tuple(parse_hotplug_option(h) for h in XML_HOTPLUG) if xml else ()
        prof = cProfile.Profile()
        prof.enable()
        for _ in plan_many(paths, workers=1, outdir=Path(tmp) / "out", hotplug=hotplug):
            pass
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=COUNT)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-j", "--jobs", type=int, default=None, help="passed to topo-solve batch (default: its own)")
    ap.add_argument("--distinct", action="store_true", help="also measure templates that are all different problems")
    ap.add_argument("--profile", action="store_true", help="cProfile plan_many(workers=1) over 1,000 templates")
    ap.add_argument("--keep", type=Path, help="write specs and outputs here and keep them")
    ap.add_argument("--xml", action="store_true", help="domain XML templates (never defined) instead of specs")
    args = ap.parse_args()
    if args.profile:
        profile(min(args.count, 1000), args.xml)
        return 0
    for k, v in machine().items():
        print(f"{k:7} {v}")
    print(f"target  >= {TARGET_PER_S:.0f} templates/s, end to end (new process, XML written), median of "
          f"{args.runs} runs\n")
    rate = measure("xml fleet" if args.xml else "fleet", args.count, False, args.runs, args.jobs, args.keep,
                   xml=args.xml)
    if args.distinct:
        measure("distinct", args.count, True, args.runs, args.jobs, args.keep)
    ok = rate >= TARGET_PER_S
    print(f"\n{'met' if ok else 'MISSED'}: fleet batch {rate:.0f} templates/s (target {TARGET_PER_S:.0f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
