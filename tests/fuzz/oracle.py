"""What must hold for every input, checked through the CLI (``topo_solve.cli.main``, forked per run).

For every run: exit 0, 1 or 2 (3 is a bug; a child that died or escaped ``main`` is worse);
no traceback; at most :data:`MAX_CPU_S` seconds of CPU and :data:`MAX_MEMORY_MB` of resident
memory growth; on exit 2, stderr names the input file.  For every spec that plans (exit 0):
the XML validates against libvirt's RelaxNG schema, ``audit`` of it exits 0 and its capacity
meets the request (per class, and per NUMA node).  For domain XML: ``audit``, ``extend`` with a
request (``-o``), ``plan`` of it (sometimes ``--right-size``), ``extend --in-place`` on a copy (the ``.bak`` is the original byte for byte;
a run that fails leaves the file as it was) and, sometimes, a spec with ``domain:``; an extended
XML is audited again, and when the input validated against the schema the output must too.

Each problem found becomes a :class:`Problem`; :func:`tests.fuzz.known.classify` marks those
that belong to a known, open fault (their reproductions are strict xfail tests), so a run
reports them without failing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .gen_spec import DOMAIN_FILE, SpecCase
from .gen_xml import XmlCase, seed_domains
from .known import classify
from .runner import Outcome, run_cli

__all__ = ["Problem", "Stats", "check_spec", "check_xml", "MAX_CPU_S", "MAX_MEMORY_MB"]

MAX_CPU_S = 2.0
MAX_MEMORY_MB = 200.0


@dataclass
class Problem:
    kind: str  # exit3, traceback, slow, memory, unnamed, schema, unmet, backup, ...
    detail: str
    argv: list[str]
    known: str | None = None  # the id of the known fault it matches

    def __str__(self) -> str:
        tag = f" [known: {self.known}]" if self.known else ""
        return f"{self.kind}{tag}: {' '.join(self.argv)}\n    {self.detail}"


@dataclass
class Stats:
    """What a fuzz run saw, for the report (docs/conformance.md) and the terminal summary."""

    inputs: Counter = field(default_factory=Counter)  # "spec" / "xml" -> count
    runs: int = 0
    codes: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)  # kind -> count (new ones)
    known: Counter = field(default_factory=Counter)  # known id -> count
    max_cpu: float = 0.0
    max_memory: float = 0.0
    max_cpu_argv: list[str] = field(default_factory=list)
    max_memory_argv: list[str] = field(default_factory=list)
    schema_checked: int = 0
    audited: int = 0
    examples: list[str] = field(default_factory=list)  # the first problems, for the report

    def record(self, outcome: Outcome) -> None:
        self.runs += 1
        self.codes[outcome.code if outcome.died is None else outcome.died] += 1
        if outcome.cpu > self.max_cpu:
            self.max_cpu, self.max_cpu_argv = outcome.cpu, outcome.argv
        if outcome.memory_mb > self.max_memory:
            self.max_memory, self.max_memory_argv = outcome.memory_mb, outcome.argv

    def add(self, problems: list[Problem]) -> None:
        for p in problems:
            if p.known:
                self.known[p.known] += 1
            else:
                self.problems[p.kind] += 1
                if len(self.examples) < 50:
                    self.examples.append(str(p))

    def to_json(self) -> dict:
        return {"inputs": dict(self.inputs), "runs": self.runs, "codes": {str(k): v for k, v in self.codes.items()},
                "problems": dict(self.problems), "known": dict(self.known), "max_cpu_s": round(self.max_cpu, 3),
                "max_cpu_argv": self.max_cpu_argv, "max_memory_mb": round(self.max_memory, 1),
                "max_memory_argv": self.max_memory_argv, "schema_checked": self.schema_checked,
                "audited": self.audited, "examples": self.examples}


# A run is stopped (SIGXCPU) past this much CPU: enough to tell one over MAX_CPU_S, and a
# pathological input costs the fuzz run seconds, not minutes.
CPU_CAP_S = 3


def _run(argv: list[str], stats: Stats | None, **kw) -> Outcome:
    kw.setdefault("cpu_limit", CPU_CAP_S)
    kw.setdefault("wall_limit", 30)
    outcome = run_cli(argv, **kw)
    if outcome.died == "signal 24":  # stopped at the cap: run it once more, longer, to learn its answer and cost
        again = run_cli(argv, **{**kw, "cpu_limit": 20, "wall_limit": 120})
        again.extra["capped"] = True
        outcome = again
    if stats is not None:
        stats.record(outcome)
    return outcome


def _basic(outcome: Outcome, names: list[str]) -> list[Problem]:
    """The checks every run must pass."""
    out: list[Problem] = []
    argv = outcome.argv
    if outcome.died is not None:
        kind = "slow" if outcome.died in ("wall timeout", "signal 24") else "died"
        out.append(Problem(kind, f"the run ended by {outcome.died}", argv))
    elif outcome.code not in (0, 1, 2):
        out.append(Problem("exit3", f"exit {outcome.code}: {_tail(outcome.stderr)}", argv))
    if "Traceback (most recent call last)" in outcome.output:
        out.append(Problem("traceback", _tail(outcome.stderr, 600), argv))
    if outcome.cpu > MAX_CPU_S:
        out.append(Problem("slow", f"{outcome.cpu:.2f} s of CPU (wall {outcome.wall:.2f} s), exit {outcome.code}",
                           argv))
    if outcome.memory_mb > MAX_MEMORY_MB:
        out.append(Problem("memory", f"{outcome.memory_mb:.0f} MB ({outcome.memory_method})", argv))
    if outcome.code == 2 and names and not any(n in outcome.stderr for n in names):
        out.append(Problem("unnamed", f"exit 2 without naming {' or '.join(names)}: {_tail(outcome.stderr)}", argv))
    return out


def _tail(text: str, n: int = 300) -> str:
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= n else text[:n] + " ..."


def _capacity_problems(audit: Outcome, requested: dict[str, int], nodes: dict[str, dict[str, int]],
                       what: str) -> list[Problem]:
    if audit.code != 0:
        return [Problem("unreadable", f"audit of {what} exited {audit.code}: {_tail(audit.stderr)}", audit.argv)]
    try:
        report = json.loads(audit.stdout)
    except ValueError:
        return [Problem("unreadable", f"audit --emit json of {what} printed no JSON", audit.argv)]
    out = []
    if report.get("errors"):
        out.append(Problem("broken", f"audit of {what} finds broken rules: {report['errors'][:3]}", audit.argv))
    capacity = report.get("capacity", {})
    node_capacity = {n: v.get("capacity", {}) for n, v in report.get("nodes", {}).items()}
    for cls, n in requested.items():
        # hotplugs without a node may land on any node's ports too (as `check` counts them)
        have = capacity.get(cls, 0) + sum(c.get(cls, 0) for c in node_capacity.values())
        if have < n:
            out.append(Problem("unmet", f"{what}: {cls} capacity {have} < requested {n}", audit.argv))
    for node, wanted in nodes.items():
        for cls, n in wanted.items():
            if node_capacity.get(node, {}).get(cls, 0) < n:
                out.append(Problem("unmet", f"{what}: node {node} {cls} capacity "
                                            f"{node_capacity.get(node, {}).get(cls, 0)} < requested {n}", audit.argv))
    return out


_NEWER: list = []  # the newer judge's schema (libvirt 11.3 in the Debian 13 chroot), loaded once; [None]: absent
# Attributes a plan writes for targets after libvirt 9.0 only (rules/windows.py: memReserve, libvirt 10.3):
# the host's 9.0 schema does not know them, and a spec's target is the newest known unless it says otherwise.
_NEWER_ONLY = (b"memReserve=",)


def _newer_schema():
    if not _NEWER:
        from lxml import etree

        root = os.environ.get("TOPO_SOLVE_TRIXIE_ROOT") or str(Path(__file__).resolve().parents[2] / ".ci" / "trixie")
        path = Path(root) / "usr" / "share" / "libvirt" / "schemas" / "domain.rng"
        _NEWER.append(etree.RelaxNG(etree.parse(str(path))) if path.is_file() else None)
    return _NEWER[0]


def _schema_problems(path: str, relaxng, argv: list[str]) -> list[Problem]:
    """The output against the host's libvirt 9.0 schema; a plan made for a newer libvirt (the default
    target) may use what 9.0 lacks, so it must then validate against the newer judge's schema, or, where
    that judge is not built, carry nothing but the attributes known to be newer."""
    from lxml import etree

    try:
        doc = etree.parse(path)
    except etree.XMLSyntaxError as exc:
        return [Problem("schema", f"{path} is not well-formed: {exc}", argv)]
    if relaxng.validate(doc):
        return []
    errors = "; ".join(f"line {e.line}: {e.message}" for e in list(relaxng.error_log)[:3])
    newer = _newer_schema()
    if newer is not None:
        if newer.validate(doc):
            return []
        errors += "; the newer judge's schema: " + "; ".join(f"line {e.line}: {e.message}"
                                                              for e in list(newer.error_log)[:3])
    else:
        with open(path, "rb") as f:
            if any(attr in f.read() for attr in _NEWER_ONLY):
                return []  # not checkable here: no schema of a libvirt that has the attribute
    return [Problem("schema", f"{path} fails domain.rng: {errors}", argv)]


def _valid(data: bytes, relaxng) -> bool:
    """Whether an input validates; inputs past 1 MiB are not checked (validation would cost more than the run)."""
    from lxml import etree

    if len(data) > 1024 * 1024:
        return False

    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        return bool(relaxng.validate(etree.fromstring(data, parser)))
    except (etree.XMLSyntaxError, ValueError):
        return False


def _request_of_spec(path: str) -> tuple[dict[str, int], dict[str, dict[str, int]]] | None:
    """What the spec asks for, per class and per NUMA node (read with the spec reader, which accepted it)."""
    from topo_solve.spec import DomainRequest, load_request

    request = load_request(path)
    if isinstance(request, DomainRequest):
        per: dict[str, int] = {}
        for h in request.headroom:
            per[str(h.cls)] = per.get(str(h.cls), 0) + h.count
        return per, {}
    requested = {str(k): v for k, v in request.requested().items()}
    nodes = {str(n): {str(k): v for k, v in per.items()} for n, per in request.requested_by_node().items()}
    return requested, nodes


def check_spec(case: SpecCase, relaxng, stats: Stats | None = None, domain: bytes | None = None) -> list[Problem]:
    """Plan the spec through the CLI and check every promise; the problems found (known ones marked)."""
    work = tempfile.mkdtemp(prefix="topo-fuzz-spec-")
    try:
        spec = os.path.join(work, "spec.yaml")
        with open(spec, "wb") as f:
            f.write(case.data)
        with open(os.path.join(work, DOMAIN_FILE), "wb") as f:
            f.write(domain if domain is not None else seed_domains()[0][1])
        out = os.path.join(work, "out.xml")
        outcome = _run(["plan", spec, "-o", out, "-q"], stats)
        names = [spec, os.path.join(work, DOMAIN_FILE)]
        target = case.parsed.get("domain") if isinstance(case.parsed, dict) else None
        if isinstance(target, str) and target:
            names.append(target)  # a fault of the domain file names that file
        problems = _basic(outcome, names)
        if outcome.code == 0 and not problems:
            if not os.path.exists(out):
                problems.append(Problem("missing-output", "exit 0 but no output file", outcome.argv))
            else:
                problems += _accepted(out, spec, relaxng, stats, is_extension=b"domain" in case.data)
        elif outcome.code != 0 and os.path.exists(out):
            problems.append(Problem("partial-output", f"exit {outcome.code} but {out} was written", outcome.argv))
        expected = {"spec.yaml", DOMAIN_FILE, "out.xml"}
        if case.batch:
            expected.add("batch")
            problems += _batch_agrees(work, spec, out, outcome, stats, names)
        problems += _leftovers(work, expected, outcome.argv)
        return classify(problems, case.data, "spec")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _batch_agrees(work: str, spec: str, out: str, plan: Outcome, stats: Stats | None,
                  names: list[str]) -> list[Problem]:
    """`topo-solve batch` on the same spec: the exit code `plan` gave, and on success the same bytes."""
    outdir = os.path.join(work, "batch")
    outcome = _run(["batch", spec, "-o", outdir, "-j", "1", "-q"], stats)
    problems = _basic(outcome, names)
    if plan.code is None or outcome.code is None or problems:
        return problems
    if outcome.code != plan.code:
        problems.append(Problem("batch-differs", f"batch exit {outcome.code}, plan exit {plan.code}: "
                                                 f"{_tail(outcome.stderr)}", outcome.argv))
    elif plan.code == 0:
        written = os.path.join(outdir, "spec.xml")
        with open(out, "rb") as a:
            mine = a.read()
        same = os.path.exists(written) and open(written, "rb").read() == mine
        if not same:
            problems.append(Problem("batch-differs", "batch wrote other bytes than plan", outcome.argv))
    extra = [n for n in os.listdir(outdir) if n != "spec.xml"] if os.path.isdir(outdir) else []
    if extra:
        problems.append(Problem("leftover", f"files left in the batch folder: {extra}", outcome.argv))
    return problems


def _accepted(out: str, spec: str, relaxng, stats: Stats | None, *, is_extension: bool) -> list[Problem]:
    problems: list[Problem] = []
    argv = ["plan", spec]
    if relaxng is not None:
        if stats is not None:
            stats.schema_checked += 1
        with open(out, "rb") as f:
            planned = f.read()
        # an extension keeps the user's XML, which need not be valid itself: only new guests are checked
        if not is_extension or _valid(planned, relaxng):
            problems += _schema_problems(out, relaxng, argv)
    audit = _run(["audit", "--emit", "json", out], stats)
    if stats is not None:
        stats.audited += 1
    problems += _basic(audit, [out])
    request = _request_of_spec(spec)
    if request is not None:
        problems += _capacity_problems(audit, request[0], request[1], "the planned XML")
    if is_extension:  # the guest's own broken rules are not the plan's
        problems = [p for p in problems if p.kind != "broken"]
    return problems


def _leftovers(work: str, expected: set[str], argv: list[str]) -> list[Problem]:
    extra = [n for n in os.listdir(work) if n not in expected]
    return [Problem("leftover", f"files left in the folder: {extra}", argv)] if extra else []


def check_xml(case: XmlCase, relaxng, stats: Stats | None = None) -> list[Problem]:
    """audit, extend, extend --in-place and a domain spec on one XML; the problems found."""
    work = tempfile.mkdtemp(prefix="topo-fuzz-xml-")
    problems: list[Problem] = []
    try:
        path = os.path.join(work, "guest.xml")
        with open(path, "wb") as f:
            f.write(case.data)
        names = [path]
        audit = _run(["audit", path] if len(case.hotplug) % 2 else ["audit", "--emit", "json", path], stats)
        problems += _basic(audit, names)

        hotplug = [x for h in case.hotplug for x in ("--hotplug", h)]
        requested: dict[str, int] = {}
        from topo_solve.spec import parse_hotplug_option

        for h in case.hotplug:
            entry = parse_hotplug_option(h)
            if entry is not None:
                requested[str(entry.cls)] = requested.get(str(entry.cls), 0) + entry.count
        valid = relaxng is not None and _valid(case.data, relaxng)
        expected = {"guest.xml"}
        for verb, name in (("extend", "out.xml"), ("plan", "plan-out.xml")):
            out = os.path.join(work, name)
            expected.add(name)
            argv = [verb, path, "-o", out, "-q"] + hotplug
            if case.allow_moves:
                argv.append("--allow-moves")
            if verb == "plan" and case.right_size:
                argv.append("--right-size")
            ran = _run(argv, stats)
            found = _basic(ran, names)
            if ran.code == 0 and not found:
                if not os.path.exists(out):
                    found.append(Problem("missing-output", "exit 0 but no output", argv))
                else:
                    again = _run(["audit", "--emit", "json", out], stats)
                    if stats is not None:
                        stats.audited += 1
                    found += _basic(again, [out])
                    found += [p for p in _capacity_problems(again, requested, {}, f"the XML {verb} wrote")
                              if p.kind != "broken"]
                    if valid:
                        if stats is not None:
                            stats.schema_checked += 1
                        found += _schema_problems(out, relaxng, argv)
            elif ran.code != 0 and os.path.exists(out):
                found.append(Problem("partial-output", f"exit {ran.code} but {out} was written", argv))
            problems += found

        if case.as_batch:
            outdir = os.path.join(work, "batch")
            expected.add("batch")
            ran = _run(["batch", path, "-o", outdir, "-j", "1", "-q"] + hotplug, stats)
            problems += _basic(ran, names)
            extra = [n for n in os.listdir(outdir) if n != "guest.xml"] if os.path.isdir(outdir) else []
            if extra:
                problems.append(Problem("leftover", f"files left in the batch folder: {extra}", ran.argv))
        if case.in_place:
            copy_path = os.path.join(work, "copy.xml")
            with open(copy_path, "wb") as f:
                f.write(case.data)
            expected |= {"copy.xml", "copy.xml.bak"}
            argv = ["extend", copy_path, "--in-place", "-q"] + [x for h in case.hotplug for x in ("--hotplug", h)]
            inplace = _run(argv, stats)
            problems += _basic(inplace, [copy_path])
            with open(copy_path, "rb") as f:
                now = f.read()
            bak = copy_path + ".bak"
            if os.path.exists(bak):
                with open(bak, "rb") as f:
                    if f.read() != case.data:
                        problems.append(Problem("backup", ".bak is not the original byte for byte", argv))
                if inplace.code != 0:
                    problems.append(Problem("backup", f"exit {inplace.code} but a .bak was written", argv))
            elif now != case.data:
                problems.append(Problem("backup", "the file changed but no .bak was kept", argv))
            if inplace.code != 0 and now != case.data:
                problems.append(Problem("backup", f"exit {inplace.code} but the file changed", argv))

        if case.as_spec:
            spec = os.path.join(work, "spec.yaml")
            with open(spec, "w") as f:
                f.write("domain: guest.xml\nhotplug:\n" + "".join(
                    f"  - {{{'class' if h.split('=')[0] in ('pcie', 'pci', 'hostdev') else 'model'}: "
                    f"{h.split('=')[0]}, count: {h.split('=')[1]}}}\n" for h in case.hotplug))
            expected |= {"spec.yaml", "spec-out.xml"}
            outcome = _run(["plan", spec, "-o", os.path.join(work, "spec-out.xml"), "-q"], stats)
            problems += _basic(outcome, [spec, path])
        problems += _leftovers(work, expected, ["(xml case)"])
        return classify(problems, case.data, "xml")
    finally:
        shutil.rmtree(work, ignore_errors=True)
