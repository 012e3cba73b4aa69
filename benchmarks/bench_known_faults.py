#!/usr/bin/env python3
"""The open faults of issue 11 that are a matter of time, each reproduced and timed.

    python benchmarks/bench_known_faults.py

Cases marked "was" were slow once and are fast since main's infeasibility-from-bounds work; they
stay as a check that they remain so.  Every case runs the CLI in a forked child (tests/fuzz/runner.py) and reports its CPU time,
wall time, peak memory growth and exit code; the target is what the fuzzer asserts for every
input: at most 2 s of CPU and 200 MB.  Exit 1 while any case misses it.  The cases that are
not about time (exit 3, a missing line, bytes not kept) are strict xfail tests in
tests/test_known_faults.py; tests/fuzz/known.py lists both.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz.runner import run_cli  # noqa: E402

WEB02 = (REPO / "specs" / "domains" / "web-02.xml").read_text()


def _cases(tmp: Path) -> list[tuple[str, str, list[str]]]:
    """(fuzz id, what, argv)."""
    out = []
    many = tmp / "many.xml"
    many.write_text(WEB02.replace("</devices>", "</devices>\n  <metadata>" + "<a/>" * 1_900_000 + "</metadata>", 1))
    out.append(("was xml-cost", "audit of web-02 with 1.9 million empty elements (7.6 MB)", ["audit", str(many)]))
    out.append(("was xml-cost", "extend of the same", ["extend", str(many), "--hotplug", "pcie=3", "-o", os.devnull]))
    deep = tmp / "deep.xml"
    deep.write_text(WEB02.replace("</devices>", "</devices>\n  <metadata>" + ("<a>" * 28 + "</a>" * 28) * 38_000
                                  + "</metadata>", 1))
    out.append(("was xml-cost", "audit of web-02 with 38,000 trees 28 deep (7.4 MB)", ["audit", str(deep)]))
    q200 = tmp / "q200.xml"
    proc = run_cli(["plan", str(REPO / "benchmarks" / "samples" / "q35-200-pcie-40-legacy-30-hotplug.yaml"), "-q",
                    "-o", str(q200)])
    assert proc.code == 0, proc.stderr
    out.append(("was slow-explanation", "extend of the 200-device q35 sample past its limits (exit 1)",
                ["extend", str(q200), "-o", os.devnull, "--hotplug", "igb=16", "--hotplug", "e1000=31",
                 "--hotplug", "e1000e=64"]))
    slow = tmp / "q35-300-300.yaml"
    slow.write_text("name: slow\nmachine: q35\nhotplug:\n  - {class: pcie, count: 300}\n  - {class: pci, count: 300}\n")
    out.append(("was slow-explanation", "q35 with 300 PCIe and 300 PCI hotplugs (exit 1)", ["plan", str(slow), "-q"]))
    pinned = tmp / "pinned.yaml"
    pinned.write_text("name: switches\nmachine: q35\ndefaults: {usb: false, memballoon: false}\ndevices:\n"
                      + "".join(f"  - {{name: p{s:02x}, model: e1000e, address: '0000:00:{s:02x}.0', "
                                f"hotunplug: false}}\n" for s in range(0x03, 0x1c))
                      + "hotplug:\n  - {class: pcie, count: 40}\n  - {model: rtl8139, count: 1000}\n")
    out.append(("was slow-plan", "q35, root slots pinned, 40 PCIe + 1,000 PCI hotplugs (feasible, exit 0)",
                ["plan", str(pinned), "-q", "-o", os.devnull]))
    e1000 = tmp / "q35-2000-e1000.yaml"  # found by atheris: the pc-2000 sample with machine q35
    e1000.write_text("name: big\nmachine: q35\ndevices:\n  - {name: nic, model: e1000, count: 2000}\n"
                     "hotplug:\n  - {model: e1000, count: 100}\n")
    out.append(("was slow-plan", "q35 with 2,000 e1000 and 100 more to hotplug (feasible, exit 0)",
                ["plan", str(e1000), "-q", "-o", os.devnull]))
    web = (REPO / "specs" / "q35-web.yaml").read_text()
    for n in (4095, 9999):  # found by the long fuzz run: q35-web.yaml with its pinned-able e1000 counted up
        huge = tmp / f"q35-web-{n}.yaml"
        huge.write_text(web.replace("{name: old, model: e1000,", f"{{name: old, model: e1000, count: {n},"))
        assert f"count: {n}" in huge.read_text()
        out.append(("slow-explanation", f"q35-web.yaml with {n:,} e1000 that are never unplugged (infeasible, exit 1)",
                    ["plan", str(huge), "-q", "-o", os.devnull]))
    import re

    pc2000 = tmp / "pc-2000-no-acpi.xml"  # found by the second long fuzz run
    proc = run_cli(["plan", str(REPO / "benchmarks" / "samples" / "pc-2000-legacy-100-hotplug.yaml"), "-q", "-o",
                    str(pc2000)])
    assert proc.code == 0, proc.stderr
    pc2000.write_text(re.sub(r"\s*<features>.*?</features>", "", pc2000.read_text(), flags=re.S))
    out.append(("was slow-explanation", "the pc-2000 sample's XML without <acpi/>, extend by 32 rtl8139 (no bus "
                                        "takes a hotplug: exit 1)",
                ["extend", str(pc2000), "--hotplug", "rtl8139=32", "-o", os.devnull]))
    bare = tmp / "q35-4095.yaml"
    bare.write_text("name: x\nmachine: q35\ndevices:\n  - {model: e1000, count: 4095, hotunplug: false}\n")
    out.append(("slow-explanation", "q35 with 4,095 e1000, hotunplug: false (infeasible, exit 1)",
                ["plan", str(bare), "-q", "-o", os.devnull]))
    return out


def main() -> int:
    import topo_solve.cli  # noqa: F401 - loaded before the forks
    import topo_solve.domain.plan  # noqa: F401
    import topo_solve.solve  # noqa: F401

    missed = 0
    with tempfile.TemporaryDirectory(prefix="topo-known-") as tmp:
        print(f"{'fault':18} {'CPU s':>6} {'wall s':>7} {'MB':>6} exit  case")
        for fid, what, argv in _cases(Path(tmp)):
            r = run_cli(argv, cpu_limit=60, wall_limit=600, mem_limit_mb=4000)
            ok = r.died is None and r.cpu <= 2.0 and r.memory_mb <= 200
            missed += not ok
            print(f"{fid:18} {r.cpu:6.2f} {r.wall:7.2f} {r.memory_mb:6.0f} {str(r.code):>4}  {what}"
                  + ("" if ok else "  <- over 2 s / 200 MB" + (f" ({r.died})" if r.died else "")))
    print(f"load average {os.getloadavg()[0]:.1f}; {missed} of the cases over the target")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
