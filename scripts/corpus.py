"""Run `plan` and `audit` over folders of domain XML other people wrote, and count the outcomes.

    python scripts/corpus.py DIR [DIR ...] [--libvirt-tests TESTS] [--top 15] [--json FILE] [--show BUCKET]

Made for libvirt's own test-suite domains (tests/qemuxml2argvdata, tests/qemuxml2xmloutdata,
... of a libvirt source tree, e.g. `apt-get source libvirt` in a scratch folder), read as
research: the files stay where they are; nothing is copied into the project.

Every ``*.xml`` file of each folder (not recursive) is planned in process, the way ``topo-solve
plan FILE --hotplug pcie=1 --hotplug pci=1`` does (``pci=1`` only on families without PCI
Express: pc, pseries), and audited the way ``topo-solve audit FILE`` does.  Each outcome goes
into one bucket, named for the exit code the command would give:

* ``planned`` (0; its output must read back as a defined guest that keeps every rule and has
  the headroom, else it counts as ``exit 3``), ``infeasible`` (1, with the first cause; planned again without headroom, to tell
  a headroom the guest cannot have, e.g. a pc guest without ACPI, from devices that do not fit),
  ``bad input`` (2, with the first
  finding's message), ``machine not supported`` (2, the one-line refusal of s390x, microvm,
  other hypervisors' machines...), ``not domain XML`` (2: another root element), ``exit 3`` (a bug: the exception),
  ``timeout`` (the file took longer than --timeout seconds: a bug as well);
* for audit: ``audited`` (0; those whose verification reports broken rules are counted apart),
  ``never defined`` (the one finding for XML libvirt has not laid out yet), and the same
  ``bad input`` / ``machine not supported`` / ``exit 3`` buckets.

With ``--libvirt-tests`` (the tests folder of the libvirt source), the files libvirt's own test
programs expect it to refuse (qemuxml2argvtest.c and qemuxml2xmltest.c name them in their
``*PARSE_ERROR*`` and ``*FAILURE*`` cases) are counted apart: refusing those is right.

The counts, the files per family, the top messages of each bucket (values in quotes and numbers
folded, so one root cause is one line) and the conformance checks of issue 10 are printed:
no file of a supported family exits 3, none is refused for lack of addresses, and no element
that takes a PCI address is unknown to the device table.  The exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topo_solve.domain.plan import plan_document  # noqa: E402
from topo_solve.domain.read import read_domain, read_layout  # noqa: E402
from topo_solve.errors import InfeasibleError, SpecError  # noqa: E402
from topo_solve.model import EndpointClass, Headroom  # noqa: E402
from topo_solve.verify import verify  # noqa: E402

# Phrases of the findings that name a root cause the checks look for.
UNSUPPORTED = ("unsupported machine", "no machine type", ", which runs ")
NOT_DOMAIN = "not a libvirt domain XML"
UNKNOWN_MODEL = "topo-solve does not know whether this model takes a PCI slot"
NO_ADDRESS = ("has no PCI address", "never defined", "has no index")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Timeout


@dataclass
class Outcome:
    file: str
    family: str  # q35, pc, pseries, virt, or "-" when the file names none the tables know
    plan: str  # bucket
    plan_detail: str = ""
    audit: str = ""
    audit_detail: str = ""
    unknown: list[str] = field(default_factory=list)  # the unknown-model findings, in the element's words
    seconds: float = 0.0
    negative: bool = False  # libvirt's own tests expect libvirt to refuse this file


def fold(message: str) -> str:
    """A message with its values folded ('virtio' -> '…', 12 -> N), so one root cause is one line."""
    text = re.sub(r"'[^']*'", "'…'", message)
    text = re.sub(r"\b0x[0-9a-fA-F]+\b", "N", text)
    text = re.sub(r"\b\d+(\.\d+)*\b", "N", text)
    return text


def _first(err: SpecError) -> str:
    return err.problems[0].message if err.problems else str(err)


def _unsupported(err: SpecError) -> bool:
    return any(any(p in f.message for p in UNSUPPORTED) for f in err.problems)


def _family(data: bytes):
    """The rule table of the file's machine, read without the rest of the file (for files the reader refuses)."""
    from lxml import etree

    from topo_solve.rules import family_for

    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    t = root.find("os/type")
    machine = t.get("machine") if t is not None else None
    return family_for(machine) if machine else None


def negative_tests(tests: Path) -> set[str]:
    """The test names libvirt's own test programs expect to fail (parse errors, start failures)."""
    names: set[str] = set()
    for prog in ("qemuxml2argvtest.c", "qemuxml2xmltest.c"):
        path = tests / prog
        if path.exists():
            text = path.read_text(errors="replace")
            names |= set(re.findall(r"DO_TEST\w*(?:PARSE_ERROR|FAILURE)\w*\(\s*\"([^\"]+)\"", text))
    return names


def _headroom(rules) -> tuple[Headroom, ...]:
    # families whose root is PCI Express have both classes; on the others a pcie device is plain PCI
    pcie = rules.connect_of(EndpointClass.PCIE) != rules.connect_of(EndpointClass.PCI)
    return ((Headroom(EndpointClass.PCIE, 1, "pcie"),) if pcie else ()) + (Headroom(EndpointClass.PCI, 1, "pci"),)


def run_one(path: Path) -> Outcome:
    data = path.read_bytes()
    file = str(path)
    t0 = time.perf_counter()
    try:
        domain = read_domain(data, file)
        family, rules = domain.rules.family, domain.rules
    except SpecError as err:
        rules = _family(data)
        family = rules.family if rules is not None else "-"
        unknown = [f.message.split(":")[0] for f in err.problems if UNKNOWN_MODEL in f.message]
        if any(NOT_DOMAIN in f.message for f in err.problems):
            return Outcome(file, "-", "not domain XML", "", "not domain XML", "", [], time.perf_counter() - t0)
        if _unsupported(err):
            return Outcome(file, "-", "machine not supported", fold(_first(err)), "machine not supported",
                           fold(_first(err)), unknown, time.perf_counter() - t0)
    except _Timeout:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug, counted
        return Outcome(file, "-", "exit 3", f"{type(exc).__name__}: {exc}", "exit 3",
                       f"{type(exc).__name__}: {exc}", [], time.perf_counter() - t0)
    out = Outcome(file, family, "")
    # plan
    try:
        headroom = _headroom(rules) if rules is not None else (Headroom(EndpointClass.PCI, 1, "pci"),)
        planned = plan_document(data, file, headroom)
        out.plan = "planned"
        # the output must read back as a defined guest that keeps every rule and meets the request
        layout, prules = read_layout(planned.edit.data, file)
        report = verify(layout, prules, strict_auto=False)
        short = [f"{h.cls} {report.capacity[h.cls]} < {h.count}" for h in headroom if report.capacity[h.cls] < h.count]
        if report.errors or short:
            out.plan, out.plan_detail = "exit 3", f"the plan fails its own audit: {(report.errors + short)[0]}"
    except InfeasibleError as err:
        out.plan, out.plan_detail = "infeasible", fold(str(err.causes[0]) if err.causes else err.render())
        # the headroom may be what cannot be had (a pc guest without ACPI hotplugs nothing): are the
        # document's own devices placed?
        try:
            planned = plan_document(data, file, ())
            out.plan += ", planned without headroom"
            layout, prules = read_layout(planned.edit.data, file)
            errors = verify(layout, prules, strict_auto=False).errors
            if errors:
                out.plan, out.plan_detail = "exit 3", f"the plan fails its own audit: {errors[0]}"
        except InfeasibleError:
            pass
        except _Timeout:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug, counted
            out.plan, out.plan_detail = "exit 3", f"{type(exc).__name__}: {exc}"
    except SpecError as err:
        out.unknown = [f.message.split(":")[0] for f in err.problems if UNKNOWN_MODEL in f.message]
        out.plan = "machine not supported" if _unsupported(err) else "bad input"
        out.plan_detail = fold(_first(err))
    except _Timeout:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug, counted
        out.plan, out.plan_detail = "exit 3", f"{type(exc).__name__}: {exc}"
    # audit
    try:
        layout, arules = read_layout(data, file)
        report = verify(layout, arules, strict_auto=False)
        out.audit = "audited, rule broken" if report.errors else "audited"
        out.audit_detail = fold(report.errors[0]) if report.errors else ""
    except SpecError as err:
        if any("never defined" in f.message for f in err.problems):
            out.audit = "never defined"
        else:
            out.audit = "machine not supported" if _unsupported(err) else "bad input"
            out.audit_detail = fold(_first(err))
    except _Timeout:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug, counted
        out.audit, out.audit_detail = "exit 3", f"{type(exc).__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    return out


def run(paths: list[Path], timeout: float, negative: set[str] = frozenset()) -> list[Outcome]:
    out = []
    signal.signal(signal.SIGALRM, _alarm)
    for p in paths:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            out.append(run_one(p))
        except _Timeout:
            out.append(Outcome(str(p), "-", "timeout", f"more than {timeout} s", "timeout"))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        o = out[-1]
        name = re.sub(r"\.(x86_64|aarch64|ppc64|s390x|arm|riscv64|i386|ppc)-(latest|[0-9.]+)$", "", p.stem)
        o.negative = p.stem in negative or name in negative
        if o.negative:
            for what in ("plan", "audit"):
                if getattr(o, what).startswith(("bad input", "infeasible")):
                    setattr(o, what, getattr(o, what) + " (libvirt refuses it too)")
    return out


def report(outcomes: list[Outcome], top: int, show: str | None) -> int:
    n = len(outcomes)
    print(f"{n} files")
    fam = Counter(o.family for o in outcomes)
    print("per family: " + ", ".join(f"{k} {v}" for k, v in sorted(fam.items())))
    folders: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        folders[Path(o.file).parent.name][o.family] += 1
    if len(folders) > 1:
        for name, per in sorted(folders.items(), key=lambda kv: -sum(kv[1].values())):
            print(f"  {name}: {sum(per.values())} ({', '.join(f'{k} {v}' for k, v in sorted(per.items()))})")
    for what in ("plan", "audit"):
        print(f"\n== {what}")
        buckets = Counter(getattr(o, what) for o in outcomes)
        for bucket, count in buckets.most_common():
            per = Counter(o.family for o in outcomes if getattr(o, what) == bucket)
            print(f"  {bucket:24} {count:5}   ({', '.join(f'{k} {v}' for k, v in sorted(per.items()))})")
        details: dict[str, Counter] = defaultdict(Counter)
        for o in outcomes:
            d = getattr(o, f"{what}_detail")
            if d:
                details[getattr(o, what)][d] += 1
        for bucket, msgs in details.items():
            print(f"  -- top {bucket} messages")
            for msg, count in msgs.most_common(top):
                print(f"    {count:5}  {msg[:200]}")
    unknown = Counter(u for o in outcomes for u in o.unknown)
    if unknown:
        print("\n== unknown models (elements that may take a PCI address)")
        for u, count in unknown.most_common():
            print(f"  {count:5}  {u}")
    if show:
        print(f"\n== files in bucket {show!r}")
        for o in outcomes:
            if show in (o.plan, o.audit):
                print(f"  {o.file}: {o.plan_detail or o.audit_detail}")
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:3]
    print("\nslowest: " + ", ".join(f"{Path(o.file).name} {o.seconds * 1000:.0f} ms" for o in slow))
    supported = [o for o in outcomes if o.family != "-"]
    checks = {
        "no file exits 3 or times out": [o for o in outcomes if "exit 3" in (o.plan, o.audit)
                                         or "timeout" in (o.plan, o.audit)],
        "no plan is refused for lack of addresses": [o for o in supported if o.plan == "bad input"
                                                     and any(x in o.plan_detail for x in NO_ADDRESS)],
        "every PCI-taking element is known": [o for o in outcomes if o.unknown],
    }
    print()
    failed = 0
    for name, bad in checks.items():
        print(f"{'ok  ' if not bad else 'FAIL'} {name}" + (f": {len(bad)} files, e.g. {bad[0].file}" if bad else ""))
        failed += bool(bad)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=12, help="messages shown per bucket")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per file before it counts as a bug")
    ap.add_argument("--libvirt-tests", type=Path, help="libvirt's tests folder: count its negative cases apart")
    ap.add_argument("--json", type=Path, help="also write every file's outcome here")
    ap.add_argument("--show", help="list the files of one bucket (e.g. 'exit 3')")
    args = ap.parse_args(argv)
    paths = sorted(p for d in args.dirs for p in d.glob("*.xml"))
    t0 = time.perf_counter()
    negative = negative_tests(args.libvirt_tests) if args.libvirt_tests else set()
    outcomes = run(paths, args.timeout, negative)
    elapsed = time.perf_counter() - t0
    code = report(outcomes, args.top, args.show)
    print(f"\n{len(paths)} files in {elapsed:.1f} s")
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
