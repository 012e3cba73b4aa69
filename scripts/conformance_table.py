"""Measure the conformance tables of docs/conformance.md on every judge there is.

    python scripts/conformance_table.py                     # print the tables
    python scripts/conformance_table.py --write docs/conformance.md

The judges are those of tests/libvirt_fixtures.py: libvirt 9.0 + QEMU 7.2 on the host
(qemu:///system; a libvirtd is started if none answers) and libvirt 11.3 + QEMU 10.0 in the
Debian 13 chroot (`.ci/judge-trixie up` first).  A judge that cannot be used is named with the
reason and left out; --judge picks some.

On each judge: every example spec and the generated specs of tests/test_conformance.py are
planned, defined (libvirt must add no controller and move no address) and hotplugged class by
class until refused (TCG); the reference layouts of tests/test_hypervisor.py are measured; the
version facts of tests/version_facts.py are checked.  --write replaces what follows the marker
line in the document (the text above it is written by hand) and keeps the file whole on failure.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import libvirt_fixtures as lf  # noqa: E402
from tests.test_conformance import SPECS, _generated, _plannable, _prepare  # noqa: E402
from tests.test_hypervisor import ROWS  # noqa: E402
from tests.test_judges import CASES  # noqa: E402
from tests.version_facts import FACTS  # noqa: E402
from topo_solve.domain.write import render_domain  # noqa: E402
from topo_solve.hypervisor import measure  # noqa: E402
from topo_solve.model import EndpointClass  # noqa: E402
from topo_solve.solve import solve  # noqa: E402
from topo_solve.spec import load_spec, parse_spec, to_problem  # noqa: E402

MARKER = "<!-- everything below is written by scripts/conformance_table.py -->"
FAMILIES = ("q35", "pc", "pseries", "virt")
CLASSES = ("pcie", "pci")
PACKAGES = ("libvirt-daemon", "qemu-system-x86")


@dataclass
class Result:
    """One judge's measurements."""

    judge: lf.Judge
    plans: dict[str, dict] = field(default_factory=dict)      # spec -> {"define": ok?, cls: (n, refusal)}
    rows: dict[str, bool] = field(default_factory=dict)       # reference row -> as expected?
    facts: dict[str, str] = field(default_factory=dict)       # fact -> "yes"/"no"/"unknown"/"DIFFERS: ..."
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)


def _plans() -> list[tuple[str, object]]:
    plans = [(p.stem, solve(load_spec(p))) for p in SPECS if _plannable(p)]
    for family in FAMILIES:
        for seed in range(3):
            spec, lines = parse_spec(_generated(family, seed))
            plans.append((f"gen-{family}-{seed}", solve(to_problem(spec, lines))))
    return plans


def _package_versions(root: Path) -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        r = subprocess.run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f", "${Version}", pkg],
                           capture_output=True, text=True)
        out[pkg] = r.stdout.strip() if r.returncode == 0 else "?"
    return out


def _measure_judge(judge: lf.Judge, plans, log) -> Result:
    virsh = judge.virsh()
    res = Result(judge, aliases=virsh.machine_aliases(), packages=_package_versions(judge.root))
    for name, plan in plans:
        log(f"  {judge.label}: {name}")
        xml = render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu")))
        hostdev = any(p.endpoint.cls == EndpointClass.HOSTDEV for p in plan.layout.placed)
        entry: dict = {}
        with virsh.scratch_dir() as files:
            m = measure(_prepare(xml, files, swap_hostdevs=False), [], virsh=virsh, max_per_class=0)
            entry["define"] = not m.errors and not m.added_controllers and not m.moved
            if not (hostdev and plan.layout.family == "pseries"):
                m = measure(_prepare(xml, files, swap_hostdevs=True), list(CLASSES), virsh=virsh,
                            max_per_class=max(plan.capacity.values()) + 2, deadline_s=400)
                for c in CLASSES:
                    entry[c] = (m.hotplugged.get(c), m.refusals.get(c) or "; ".join(m.errors))
        res.plans[name] = entry
    for row, (xml, expected, refusal, added) in ROWS.items():
        log(f"  {judge.label}: {row}")
        m = measure(xml, list(expected), virsh=virsh, max_per_class=max(expected.values()) + 2)
        res.rows[row] = (not m.errors and m.hotplugged == expected and m.added_controllers == added
                         and all(refusal in msg for msg in m.refusals.values()))
    for name, fact in FACTS.items():
        log(f"  {judge.label}: {name}")
        holds = fact.holds(judge.versions)
        if holds is None:
            res.facts[name] = "not known"
            continue
        try:
            with virsh.scratch_dir() as files:
                CASES[name](virsh, files, holds)
            res.facts[name] = "yes" if holds else "no"
        except Exception as exc:  # a failed expectation is a finding: say what
            res.facts[name] = f"DIFFERS ({'yes' if holds else 'no'} expected: {str(exc).splitlines()[0][:80]})"
    return res


def _family_of(name: str, plan) -> str:
    return plan.layout.family


def render(results: list[Result], plans) -> str:
    out: list[str] = []
    w = out.append
    labels = [r.judge.label for r in results]
    head = "| | " + " | ".join(labels) + " |"
    sep = "|---" * (len(results) + 1) + "|"
    w(f"Measured on {datetime.date.today().isoformat()} under TCG.")
    w("")
    w("### The judges")
    w("")
    w(head)
    w(sep)
    w("| where | " + " | ".join(lf.SPECS[r.judge.key].where for r in results) + " |")
    w("| libvirt (daemon) | " + " | ".join(
        f"{'.'.join(map(str, r.judge.libvirt))} (Debian {r.packages['libvirt-daemon']})" for r in results) + " |")
    w("| QEMU | " + " | ".join(
        f"{'.'.join(map(str, r.judge.qemu))} (Debian {r.packages['qemu-system-x86']})" for r in results) + " |")
    for arch, alias in (("x86_64", "q35"), ("x86_64", "pc"), ("ppc64", "pseries"), ("aarch64", "virt")):
        w(f"| `{alias}` ({arch}) resolves to | " + " | ".join(
            f"`{r.aliases.get((arch, alias), '?')}`" for r in results) + " |")
    w("")
    w("### Agreement per machine family")
    w("")
    w("Plans: the example specs and 3 generated specs per family (tests/test_conformance.py). "
      "Reference layouts: rows of real-libvirt.md §4 (tests/test_hypervisor.py).")
    w("")
    w("| family | measured | " + " | ".join(labels) + " |")
    w("|---|---" + "|---" * len(results) + "|")
    fam = {name: _family_of(name, plan) for name, plan in plans}
    promised = {name: {c: plan.capacity[EndpointClass(c)] for c in CLASSES} for name, plan in plans}
    for family in FAMILIES:
        names = [n for n in fam if fam[n] == family]
        cells_def, cells_hot, cells_rows = [], [], []
        for r in results:
            d = [r.plans[n]["define"] for n in names]
            cells_def.append(f"{sum(d)}/{len(d)}")
            hot = [r.plans[n][c][0] == promised[n][c] for n in names for c in CLASSES if c in r.plans[n]]
            cells_hot.append(f"{sum(hot)}/{len(hot)}")
            rows = [ok for row, ok in r.rows.items() if ROWS[row][0].find(f"machine='{family}'") >= 0]
            cells_rows.append(f"{sum(rows)}/{len(rows)}")
        w(f"| {family} | plans defined unchanged | " + " | ".join(cells_def) + " |")
        w(f"| {family} | hotplug count = promise (plan × class) | " + " | ".join(cells_hot) + " |")
        w(f"| {family} | reference layouts as measured on 9.0 | " + " | ".join(cells_rows) + " |")
    w("")
    w("### Where the versions differ (tests/version_facts.py)")
    w("")
    w("Each row states the version range with its source; the cells say what the judge did, and "
      "`DIFFERS` where that is not what the range predicts.")
    w("")
    w("| what | needs | " + " | ".join(labels) + " |")
    w("|---|---" + "|---" * len(results) + "|")
    for name, fact in FACTS.items():
        w(f"| {fact.what} | {fact.requirement()} | " + " | ".join(r.facts[name] for r in results) + " |")
    w("")
    w("### Every plan")
    w("")
    w("`promised`: the plan's capacity; one column per judge with the hotplugs it took before its first "
      "refusal (the refusal was libvirt's \"No more available PCI slots\" unless noted).")
    w("")
    w("| spec | family | controllers added by the plan | class | promised | " + " | ".join(labels) + " |")
    w("|---|---|---|---|---" + "|---" * len(results) + "|")
    for name, plan in plans:
        added = sum(plan.added.values())
        first = results[0].plans[name] if results else {}
        if not any(c in first for c in CLASSES):
            w(f"| {name} | {fam[name]} | {added} | (define only: boot-time hostdevs) | | " +
              " | ".join("defined unchanged" if r.plans[name]["define"] else "CHANGED at define" for r in results)
              + " |")
            continue
        for c in CLASSES:
            cells = []
            for r in results:
                n, refusal = r.plans[name][c]
                note = "" if "No more available PCI slots" in (refusal or "") else f" ({(refusal or '').replace('|', '/')[:60]})"
                flag = "" if r.plans[name]["define"] else " (changed at define)"
                cells.append(f"{n}{note}{flag}")
            w(f"| {name} | {fam[name]} | {added} | {c} | {promised[name][c]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", action="append", choices=sorted(lf.SPECS),
                    help="measure on this judge only (repeatable); default: every judge that can be used")
    ap.add_argument("--write", type=Path, help="replace the generated part of this document (after its marker)")
    args = ap.parse_args()
    keys = args.judge or list(lf.SPECS)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    judges = []
    for key in keys:
        try:
            judges.append(lf._CONNECT[key]())
        except Exception as exc:
            log(f"judge {lf.SPECS[key].expected} left out: {exc}")
    if not judges:
        log("no judge can be used")
        return 2
    plans = _plans()
    try:
        results = [_measure_judge(j, plans, log) for j in judges]
    finally:
        for j in judges:
            if j.daemon is not None:
                j.daemon.stop()
    text = render(results, plans)
    if args.write is None:
        sys.stdout.write(text)
        return 0
    doc = args.write.read_text(encoding="utf-8")
    if MARKER not in doc:
        log(f"{args.write}: no marker line {MARKER!r}; add it where the generated part starts")
        return 2
    new = doc.split(MARKER, 1)[0] + MARKER + "\n\n" + text
    fd, tmp = tempfile.mkstemp(dir=args.write.parent, prefix=f".{args.write.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.write)
    log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
