"""The ``topo-solve`` command line.  The only module that prints.

Exit codes: 0 success, 1 the spec cannot be satisfied (or a check found the
plan wrong), 2 bad input or usage, 3 a bug in topo-solve.  No traceback unless
``--debug``.  Heavy modules (pydantic, lxml, the solver) are imported inside
the commands, so ``--help`` and start-up stay light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

EXIT_BUG = 3

EMITS = ("domain", "controllers", "json", "tree")


class _Main(click.Group):
    """``topo-solve [OPTIONS] SPEC.yaml`` means ``topo-solve plan [OPTIONS] SPEC.yaml``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = {o for p in self.get_params(ctx) for o in p.opts + p.secondary_opts}  # --version, --help, --debug
        start = 0
        while start < len(args) and args[start] in own:
            start += 1
        options = [p for p in self.commands["plan"].params if isinstance(p, click.Option)]
        known = {o for p in options for o in p.opts + p.secondary_opts}
        valued = {o for p in options if not p.is_flag and not p.count for o in p.opts}
        i, plan_options = start, False  # skip plan's options (and their values) before the spec
        while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
            plan_options |= args[i].split("=")[0] in known
            i += 2 if _takes_next(args[i], valued) else 1
        spec = i < len(args) and args[i] not in self.commands
        if spec or (plan_options and i >= len(args)):  # a spec, or plan options and the spec forgotten
            args = args[:start] + ["plan"] + args[start:]
        return super().parse_args(ctx, args)


def _takes_next(arg: str, valued: set[str]) -> bool:
    """Whether the option word ``arg`` consumes the next word as its value (``-o FILE``, ``-qo FILE``)."""
    if arg.startswith("--"):
        return arg in valued
    for k, ch in enumerate(arg[1:], start=1):  # a cluster of short options: the first valued one ends it
        if f"-{ch}" in valued:
            return k == len(arg) - 1
    return False


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="topo-solve", prog_name="topo-solve")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan the PCI topology of libvirt guests.

    \b
    topo-solve SPEC.yaml            plan a guest, print its domain XML
    topo-solve batch DIR -o OUTDIR  plan many specs in parallel
    topo-solve audit DOMAIN.xml     what an existing guest can still hotplug
    topo-solve extend DOMAIN.xml --hotplug MODEL=N
                                    add the fewest controllers, move nothing
    topo-solve check DOMAIN.xml     prove a plan in a real libvirt
    topo-solve schema               the spec's JSON Schema
    """
    ctx.obj = {"debug": debug}


def _write(text: str | bytes, output: str | None, force: bool) -> None:
    """Print, or write through :func:`topo_solve.files.write_output` (atomic, never over a file without
    force).  Bytes are written as they are (a domain XML keeps its own encoding and line endings)."""
    if output is None or output == "-":
        if isinstance(text, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(text)
            sys.stdout.buffer.flush()
        else:
            click.echo(text, nl=False)
        return
    from .files import write_output

    write_output(output, text, force=force)


def _usage(msg: str):
    from .errors import Finding, SpecError

    return SpecError([Finding("topo-solve", None, "", msg)])


def _plan_json(plan) -> dict:
    def addr(a):
        return None if a is None else str(a)

    return {
        "name": plan.problem.name,
        "machine": plan.problem.machine,
        "family": plan.layout.family,
        "controllers": [{"index": c.index, "model": c.model, "address": addr(c.address)}
                        for c in plan.layout.controllers],
        "devices": [{"name": p.endpoint.name, "model": p.endpoint.kind, "address": addr(p.address)}
                    for p in plan.layout.placed],
        "added": dict(sorted(plan.added.items())),
        "capacity": {str(k): v for k, v in plan.capacity.items()},
        "requested": {str(k): v for k, v in plan.requested.items()},
        "budgets": {k: {"used": u, "limit": lim} for k, (u, lim) in plan.budgets.items()},
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        **({"nodes": {str(n): {"capacity": {str(k): v for k, v in cap.items()},
                               "requested": {str(k): v for k, v in plan.problem.requested_by_node().get(
                                   n, dict.fromkeys(cap, 0)).items()}}
                      for n, cap in sorted(plan.node_capacity.items())}} if plan.node_capacity else {}),
    }


def _summary(plan) -> str:
    added = ", ".join(f"{n} {m}" for m, n in sorted(plan.added.items())) or "nothing"
    cap = "  ".join(f"{c} {plan.capacity[c]}/{plan.requested[c]}" for c in plan.capacity)
    lines = [f"{plan.problem.name} ({plan.problem.machine}): added {added}",
             f"  hotplug capacity/requested: {cap}"]
    for node, ncap in sorted(plan.node_capacity.items()):
        wanted = plan.problem.requested_by_node().get(node, {})
        lines.append(f"  NUMA node {node} capacity/requested: "
                     + "  ".join(f"{c} {ncap[c]}/{wanted.get(c, 0)}" for c in ncap))
    if plan.budgets:
        lines.append("  budgets used/limit: " + ", ".join(f"{k} {u}/{lim}" for k, (u, lim) in plan.budgets.items()))
    lines += [f"  warning: {w}" for w in plan.warnings]
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _tree(plan) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.tree import Tree

    layout = plan.layout
    nodes = {}
    children: dict[int, list] = {}
    for c in layout.controllers:
        if c.address is not None:
            children.setdefault(c.address.bus, []).append((c.address, f"[bold]{c.index}[/] {c.model}", c.index))
    for p in layout.placed:
        if p.address is not None:
            children.setdefault(p.address.bus, []).append(
                (p.address, f"{p.endpoint.name} [dim]({p.endpoint.kind})[/]", None))
    roots = [c for c in layout.controllers if c.address is None]
    top = Tree(f"{plan.problem.name} ({plan.problem.machine})")

    def grow(node, index: int) -> None:
        for addr, label, sub in sorted(children.get(index, []), key=lambda t: t[0]):
            n = node.add(f"{addr.slot:02x}.{addr.function} {label}")
            if sub is not None:
                nodes[sub] = n
                grow(n, sub)
        if not children.get(index) and index != 0:
            node.add("[green]free[/]")

    for r in roots:
        n = top.add(f"[bold]{r.index}[/] {r.model}")
        grow(n, r.index)
    buf = StringIO()
    Console(file=buf, width=100, force_terminal=False, color_system=None).print(top)
    return buf.getvalue()


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--emit", type=click.Choice(EMITS), default="domain", show_default=True,
              help="What to print: the domain XML, only its PCI controllers, JSON, or a tree.")
@click.option("-o", "--output", metavar="FILE", help="Write here (atomically) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--virt-type", type=click.Choice(["kvm", "qemu"]), default=None,
              help="Override the spec's domain type (qemu = TCG, for hosts without KVM).")
@click.option("--hotplug", "hotplugs", multiple=True, metavar="MODEL=N[@NODE]",
              help="For a domain XML: headroom to reach (a device model or pcie, pci, hostdev); repeat it.")
@click.option("--right-size", is_flag=True,
              help="For a domain XML: keep only as many of its unaddressed controllers as the plan needs.")
@click.option("--in-place", is_flag=True, help="For a domain XML: replace it, keeping the original as FILE.bak.")
@click.option("--allow-moves", is_flag=True, help="For a domain XML: move devices when no addition is enough.")
@click.option("--layout", type=click.Choice(["qemu-guidelines", "libvirt-accepts"]), default=None,
              help="What the planner may build (overrides a spec's 'layout'): QEMU's guidelines, or also what "
                   "libvirt accepts where it is cheaper (a pci-bridge on pcie-root).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def plan(spec: str, emit: str, output: str | None, force: bool, virt_type: str | None, hotplugs: tuple[str, ...],
         right_size: bool, in_place: bool, allow_moves: bool, layout: str | None, quiet: bool) -> None:
    """Plan SPEC.yaml, or a libvirt domain XML (defined or not): the fewest controllers that give
    it its hotplug headroom, every device and controller with its address.

    A domain XML (a file, or - for standard input) comes back as the same document with the PCI
    controllers and addresses filled in; everything else stays byte for byte."""
    from dataclasses import replace

    with _domain_input(spec, in_place, "a spec or a libvirt domain XML") as data:  # read once: stdin, a pipe
        if _is_xml(data):
            if emit not in ("domain", "json"):
                raise _usage(f"--emit {emit} is for specs; a domain XML is planned as domain or json")
            _domain_run(spec, data, _headroom(hotplugs), output=output, in_place=in_place, force=force,
                        allow_moves=allow_moves, right_size=right_size, emit=emit, quiet=quiet, verb="plan",
                        layout=layout or "qemu-guidelines")
            return
    for flag, given in (("--hotplug", hotplugs), ("--right-size", right_size), ("--in-place", in_place),
                        ("--allow-moves", allow_moves)):
        if given:
            raise _usage(f"{flag} is for a domain XML; {spec} is a spec (write its headroom under 'hotplug:')")
    from .solve import solve
    from .spec import DomainRequest, load_request

    problem = load_request("<stdin>" if spec == "-" else spec, data=data)
    if isinstance(problem, DomainRequest):  # a spec with 'domain': plan that guest
        if emit not in ("domain", "json"):
            raise _usage(f"{spec} plans an existing guest; --emit {emit} is for new guests (use domain or json)")
        from .errors import Finding, SpecError

        domain = str(problem.domain)
        try:  # a fault of the domain file is reported at the spec's 'domain:' line too
            xml = _read_domain(domain)
        except SpecError as exc:
            raise SpecError([Finding(spec, problem.line, "domain", f"{domain}: {p.message}")
                             for p in exc.problems]) from None
        _domain_run(domain, xml, problem.headroom, output=output, in_place=False, force=force, allow_moves=False,
                    right_size=False, emit=emit, quiet=quiet, machine=problem.machine, spec=spec, verb="plan",
                    layout=layout or "qemu-guidelines")
        return
    if virt_type:
        problem = replace(problem, virt_type=virt_type)
    if layout:
        problem = replace(problem, layout=layout)
    result = solve(problem)
    if emit == "json":
        import json

        text = json.dumps(_plan_json(result), indent=2) + "\n"
    elif emit == "tree":
        text = _tree(result)
    else:
        from .domain.write import _tostring, controllers_element, render_domain

        text = render_domain(result) if emit == "domain" else _tostring(controllers_element(result))
    _write(text, output, force)
    if not quiet:
        click.echo(_summary(result), err=True)


def _is_xml(data: bytes) -> bool:
    """A domain XML starts with a tag, a declaration or a comment ('<d', '<?', '<!'), after a byte
    order mark and blanks, in UTF-8 or UTF-16 (the XML reader then says what it makes of the
    encoding); a YAML spec never does (it may start with a merge key, '<<:')."""
    import re

    head = data[:512]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "ignore")
    elif head[1:2] == b"\x00" and head[:1] != b"\x00":
        text = head.decode("utf-16-le", "ignore")
    elif head[:1] == b"\x00" and head[1:2] != b"\x00":
        text = head.decode("utf-16-be", "ignore")
    else:
        text = head.decode("utf-8", "ignore")
    return re.match(r"\ufeff?[ \t\r\n]*<[?!A-Za-z_:]", text) is not None


def _headroom(hotplugs: tuple[str, ...]):
    from .spec import parse_hotplug_option

    out = []
    for h in hotplugs:
        try:
            entry = parse_hotplug_option(h)
        except ValueError as exc:
            raise _usage(f"--hotplug {h}: {exc}") from None
        if entry is not None:
            out.append(entry)
    return tuple(out)


@cli.command()
@click.argument("specs", nargs=-1, required=True)
@click.option("-o", "--outdir", required=True, metavar="OUTDIR", help="Write OUTDIR/<spec stem>.xml (atomically).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: the number of CPUs]; 1 plans in this process.")
@click.option("--force", is_flag=True, help="Replace output files (and the report) that exist.")
@click.option("--report", metavar="FILE", help="Also write every spec's result as JSON.")
@click.option("--virt-type", type=click.Choice(["kvm", "qemu"]), default=None, help="Override every spec's domain type.")
@click.option("--hotplug", "hotplugs", multiple=True, metavar="MODEL=N[@NODE]",
              help="Headroom for every domain XML template (*.xml); repeat it.")
@click.option("--right-size", is_flag=True,
              help="Domain XML templates: keep only the unaddressed controllers the plan needs.")
@click.option("-q", "--quiet", is_flag=True, help="No summary table on stdout (errors still go to stderr).")
def batch(specs: tuple[str, ...], outdir: str, jobs: int | None, force: bool, report: str | None,
          virt_type: str | None, hotplugs: tuple[str, ...], right_size: bool, quiet: bool) -> None:
    """Plan many specs and domain XML templates in parallel, each to OUTDIR/<stem>.xml.

    SPECS are folders (their *.yaml, *.yml and *.xml files), glob patterns or files; a domain
    XML template is planned for the headroom --hotplug gives (defined or not, as `plan` does).
    One bad spec never stops the rest; each is reported on stderr, then a table
    of all of them goes to stdout.  Exit code: 0 all planned, 1 some spec has no
    layout, 2 some spec (or output) is bad, 3 a bug; the highest one wins."""
    import time

    from . import batch as b

    if report and report != "-":
        from .files import check_output

        check_output(report, force=force)  # before the batch runs, not after
    start = time.perf_counter()
    paths, results = b.collect_specs(specs)
    stream = b.plan_many(paths, workers=jobs, outdir=outdir, force=force, virt_type=virt_type,
                         hotplug=_headroom(hotplugs), right_size=right_size,
                         on_wait=lambda: click.echo(f"waiting for another topo-solve batch writing {outdir} ...",
                                                    err=True))
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("planning", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("", total=len(paths))
            for r in stream:
                results.append(r)
                bar.advance(task)
    else:
        results.extend(stream)
    order = {p: i for i, p in enumerate(paths)}
    results.sort(key=lambda r: order.get(r.spec, -1))  # input order; arguments that matched nothing first
    seconds = time.perf_counter() - start
    for r in results:
        for line in r.message.splitlines():
            click.echo(line if line[:1].isspace() or r.status == "ok" else f"error: {line}", err=True)
    if not quiet and report != "-":
        click.echo(b.summary_table(results) + b.totals_line(b.totals(results, seconds)))
    if report:
        _write(b.report_json(results, seconds), report, force)
    sys.exit(b.exit_code(results))


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec format."""
    import json

    from .spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.command()
@click.argument("domain", type=click.Path(dir_okay=False))
@click.option("--uri", default="qemu:///system", show_default=True, help="libvirt connection URI.")
@click.option("--max", "max_per_class", type=int, default=300, show_default=True,
              help="Stop hotplugging a class after this many more than promised.")
def check(domain: str, uri: str, max_per_class: int) -> None:
    """Prove DOMAIN.xml in a real libvirt: define it under a temporary name, hotplug
    each class to capacity, compare with the promise, clean up.  A guest never defined
    promises its predicted capacity, and libvirt must add exactly the predicted controllers."""
    from .hypervisor import Virsh, measure
    from .model import EndpointClass
    from .verify import verify

    data = _read_domain(domain)
    text = data.decode("utf-8", errors="replace")
    layout, rules, predicted = _audited(domain, data)
    report = verify(layout, rules, strict_auto=False)
    classes = [str(c) for c in report.capacity if str(c) != "hostdev"]
    m = measure(text, classes, virsh=Virsh(uri), max_per_class=max_per_class)
    rows = []
    if predicted is None:
        bad = bool(m.added_controllers or m.moved or m.errors)
    else:
        # a guest never defined: libvirt adds controllers and gives addresses; they must be the predicted ones
        expected = {str(c) for c in predicted.controllers if c.element is None}
        surprise = sorted(set(m.added_controllers) - expected)
        missing = sorted(expected - set(m.added_controllers))
        changed = [x for x in m.moved if ": unaddressed -> " not in x]
        bad = bool(surprise or missing or changed or m.errors)
        m.added_controllers, m.moved = surprise, changed
        click.echo(f"not defined yet: the promise is the prediction (at define libvirt {_define_summary(predicted)})")
        for item in missing:
            click.echo(f"predicted, not added by libvirt: {item}")
    for c in classes:
        # A hotplug without an address may land on any NUMA node's ports too: count them all.
        promised = report.capacity[EndpointClass(c)] + sum(cap[EndpointClass(c)]
                                                           for cap in report.node_capacity.values())
        measured = m.hotplugged.get(c, 0)
        rows.append((c, promised, measured, "ok" if promised == measured else "DIFFERS"))
        bad |= promised != measured
    click.echo(f"{'class':8} {'promised':>8} {'measured':>8}  verdict")
    for c, p, meas, v in rows:
        click.echo(f"{c:8} {p:8} {meas:8}  {v}")
    unpredicted = ", not predicted" if predicted is not None else ""
    for what, items in ((f"added by libvirt{unpredicted}", m.added_controllers), ("moved by libvirt", m.moved),
                        ("errors", m.errors)):
        for item in items:
            click.echo(f"{what}: {item}")
    sys.exit(1 if bad else 0)


def _audited(path: str, data: bytes):
    """(layout, rules, prediction or None) of a domain XML: a defined guest as it is; one libvirt would
    still change at define (addresses to give, devices or controllers to add) as libvirt will store it."""
    from .domain.read import read_domain

    domain = read_domain(data, path)
    if domain.defined and not domain.added_by_libvirt:
        return domain.layout(), domain.rules, None
    from .domain.host import host_facts
    from .domain.predict import prediction

    p = prediction(domain, host_facts(domain))
    return p.layout, domain.rules, p


def _define_summary(p) -> str:
    """What libvirt does at define, as the prediction has it: 'adds 3 pcie-root-port (index 1-3) and a
    memballoon, and gives 6 devices their addresses'."""
    by_model: dict[str, list[int]] = {}
    for c in p.added:
        by_model.setdefault(c.model, []).append(c.index)
    chipset = {f.address for f in p.domain.rules.fixed.values() if f.insist}  # q35 SATA, PIIX3's: no slot
    parts = [f"{len(ix)} {m} (index {_ranges(ix)})" for m, ix in by_model.items()]
    parts += [f"a {d}" for d in sorted({d.tag if d.ctype is None else f"{d.ctype} controller" for d in p.filled
                                        if d.implicit is not None and d.address not in chipset})]
    own = len([d for d in p.filled if d.implicit is None])
    added = (", ".join(parts[:-1]) + " and " + parts[-1]) if len(parts) > 1 else "".join(parts)
    given = f"gives {own} device{'s' if own != 1 else ''} {'their addresses' if own != 1 else 'its address'}"
    return (f"adds {added}, and {given}" if added else given)


@cli.command()
@click.argument("domains", nargs=-1, required=True)
@click.option("--emit", type=click.Choice(["table", "json"]), default="table", show_default=True)
def audit(domains: tuple[str, ...], emit: str) -> None:
    """Report the live hotplug capacity of libvirt domain XMLs (as virsh dumpxml prints them).

    A domain XML that was never defined (devices or controllers without an address, devices
    libvirt adds by itself) is audited as libvirt will store it after `virsh define`: the
    numbers are then predicted, and say so.  DOMAINS are files, or - for standard input."""
    import json

    from .model import HOTPLUG_CLASSES
    from .verify import verify

    results = []
    for path in domains:
        layout, rules, predicted = _audited("<stdin>" if path == "-" else path, _read_domain(path))
        report = verify(layout, rules, strict_auto=False)
        warnings = list(report.warnings)
        if rules.hotplug_needs_acpi and not layout.acpi:
            warnings.append(f"no <acpi/>: {rules.bus(rules.root).model} of a {rules.family} guest takes no hotplug "
                            "at all (QEMU: Bus 'pci.0' does not support hotplugging)")
        off = [c.index for c in layout.controllers if not c.hotplug]
        if off:
            warnings.append(f"hotplug='off' on controller(s) {', '.join(map(str, off))}: they take no hotplug")
        ports = {c.index for c in layout.controllers
                 if (r := rules.rule_for(c.model, c.index)) is not None and r.is_port}
        implicit = [p.endpoint.name for p in layout.placed
                    if p.endpoint.kind in ("qemu-xhci", "virtio-balloon") and p.address and p.address.bus in ports]
        if implicit:
            warnings.append(f"devices libvirt adds by itself take ports: {', '.join(implicit)} "
                            "(switch them off in the spec if the guest does not need them)")
        results.append({
            "file": path, "machine": rules.family, "predicted": predicted is not None,
            "capacity": {str(k): v for k, v in report.capacity.items()},
            **({"nodes": {str(n): {"capacity": {str(k): v for k, v in cap.items()}}
                          for n, cap in sorted(report.node_capacity.items())}} if report.node_capacity else {}),
            "giving": {str(k): report.giving[k] for k in HOTPLUG_CLASSES if k in report.giving},
            "budgets": {k: {"used": b.used, "limit": b.limit} for k, b in report.budgets.items()},
            **({"define": {
                "summary": _define_summary(predicted),
                "added": [{"index": c.index, "model": c.model,
                           "address": None if c.address is None else str(c.address)} for c in predicted.added],
                "addresses": [{"element": d.tag if d.ctype is None else f"controller type={d.ctype}",
                               "model": d.kind, "address": str(d.address), "added_by_libvirt": d.implicit is not None}
                              for d in predicted.filled]}} if predicted is not None else {}),
            "errors": report.errors, "warnings": warnings,
        })
    if emit == "json":
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for r in results:
            cap = "  ".join(f"{k} {v}" for k, v in r["capacity"].items())
            when = "predicted after virsh define: " if r["predicted"] else ""
            click.echo(f"{r['file']} ({r['machine']}): {when}hotplug capacity {cap}"
                       + (" (devices without a NUMA node)" if r.get("nodes") else ""))
            if r["predicted"]:
                click.echo(f"  at define libvirt {r['define']['summary']}")
            for n, node in r.get("nodes", {}).items():
                click.echo(f"  NUMA node {n}: hotplug capacity "
                           + "  ".join(f"{k} {v}" for k, v in node["capacity"].items()))
            for k, buses in r["giving"].items():
                if buses:
                    click.echo(f"  {k} room on controller(s) {', '.join(map(str, buses))}")
            click.echo("  budgets used/limit: " + ", ".join(f"{k} {b['used']}/{b['limit']}"
                                                          for k, b in r["budgets"].items()))
            for e in r["errors"]:
                click.echo(f"  rule broken: {e}")
            for w in r["warnings"]:
                click.echo(f"  warning: {w}")


@cli.command()
@click.argument("domain", type=click.Path(dir_okay=False))
@click.option("--hotplug", "hotplugs", multiple=True, metavar="MODEL=N",
              help="Headroom to reach: a device model or a class (pcie, pci, hostdev) and a count; repeat it.")
@click.option("-o", "--output", metavar="FILE", help="Write the extended XML here (atomically) instead of stdout.")
@click.option("--in-place", is_flag=True, help="Replace DOMAIN itself, keeping the original as DOMAIN.bak.")
@click.option("--force", is_flag=True, help="Replace FILE (or DOMAIN.bak) if it exists.")
@click.option("--allow-moves", is_flag=True,
              help="Move devices when no addition alone is enough (every move is listed).")
@click.option("--emit", type=click.Choice(["domain", "json"]), default="domain", show_default=True,
              help="The extended domain XML, or a JSON report of what was added and moved.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def extend(domain: str, hotplugs: tuple[str, ...], output: str | None, in_place: bool, force: bool,
           allow_moves: bool, emit: str, quiet: bool) -> None:
    """Add the fewest controllers to an existing guest so it can hotplug what --hotplug asks,
    without moving a device; every index, address, alias, attribute and comment stays as it was.

    DOMAIN is a libvirt domain XML as `virsh dumpxml` prints it, or - for standard input."""
    if not hotplugs:
        raise _usage("extend needs at least one --hotplug MODEL=N (e.g. --hotplug virtio-net=4)")
    headroom = _headroom(hotplugs)
    with _domain_input(domain, in_place) as data:
        _domain_run(domain, data, headroom, output=output, in_place=in_place, force=force,
                    allow_moves=allow_moves, right_size=False, emit=emit, quiet=quiet, verb="extend")


def _domain_run(domain: str, data: bytes, headroom, *, output, in_place, force, allow_moves, right_size, emit,
                quiet, verb: str, machine: str | None = None, spec: str | None = None,
                layout: str = "qemu-guidelines") -> None:
    """Plan a domain XML and write the result (plan, extend, and specs with 'domain')."""
    import json

    from .domain.plan import plan_document

    if in_place and (output or domain == "-"):
        raise _usage("--in-place replaces the file itself; it cannot be combined with -o or standard input")
    planned = plan_document(data, domain, tuple(headroom), allow_moves=allow_moves, right_size=right_size,
                            machine=machine, spec=spec, layout=layout)
    name, rules, ext, edit = planned.name, planned.rules, planned.extension, planned.edit
    defined = planned.domain.defined
    if emit == "json":
        report = {
            "file": domain, "name": name, "machine": rules.family, "changed": not planned.unchanged,
            "defined": defined,
            "added": [{"index": c.index, "model": c.model, "address": None if c.address is None else str(c.address)}
                      for c in ext.added],
            "filled": [{"index": c.index, "model": c.model, "address": str(c.address)} for c in ext.filled],
            "placed": [{"name": p.endpoint.name, "model": p.endpoint.kind,
                        "address": None if p.address is None else str(p.address),
                        "added_by_libvirt": p.endpoint.implicit} for p in ext.placed],
            "removed": list(planned.removed),
            "surplus": [{"model": x.model, "have": x.have, "needed": x.needed} for x in planned.surplus],
            "moves": [{"name": m.name, "from": str(m.old), "to": str(m.new)} for m in ext.moves],
            "before": {str(k): v for k, v in ext.before.items()},
            "capacity": {str(k): v for k, v in ext.capacity.items()},
            "requested": {str(k): v for k, v in ext.requested.items()},
            "budgets": {k: {"used": u, "limit": lim} for k, (u, lim) in (ext.budgets or {}).items()},
            "warnings": list(ext.warnings),
        }
        click.echo(json.dumps(report, indent=2))
    if in_place:
        if not planned.unchanged:
            from .files import write_output

            # the bytes as read: the backup is the original (one that holds them already, left by a run
            # killed before it replaced the file, is kept as it is)
            write_output(domain + ".bak", data, force=force, identical_ok=True)
            write_output(domain, edit.data, force=True)
    elif emit == "domain" or output:
        _write(edit.data, output, force)
    if quiet:
        return
    if planned.unchanged:
        click.echo(f"{name} ({rules.family}): already meets the request; nothing changed", err=True)
        click.echo("  hotplug capacity/requested: " + "  ".join(
            f"{c} {ext.capacity[c]}/{ext.requested[c]}" for c in ext.capacity), err=True)
        return
    gaps = {c.index for c in edit.gap_controllers}
    by_model: dict[str, list[int]] = {}
    for c in edit.new_controllers:
        if c.index not in gaps:
            by_model.setdefault(c.model, []).append(c.index)
    added = ", ".join(f"{len(ix)} {m} (index {_ranges(ix)})" for m, ix in by_model.items()) or "nothing"
    click.echo(f"{name} ({rules.family}): added {added}", err=True)
    if defined and not edit.filled_controllers and not edit.added_by_libvirt and not edit.gap_controllers:
        cap = "  ".join(f"{c} {ext.before[c]} -> {ext.capacity[c]}/{ext.requested[c]}" for c in ext.capacity)
        click.echo(f"  hotplug capacity before -> after/requested: {cap}", err=True)
    else:
        what = [f"{n} {w}" for n, w in ((edit.filled_devices, "device(s)"),
                                         (edit.filled_controllers, "controller(s)")) if n]
        libvirt = list(edit.added_by_libvirt) + [f"{c.model} (the root bus)" if c.index == 0 else
                                                 f"{c.model} {c.index} (an unused index)"
                                                 for c in edit.gap_controllers]
        if what:
            click.echo(f"  addresses written: {', '.join(what)}", err=True)
        if libvirt:
            click.echo(f"  written out as libvirt adds them at define: {', '.join(libvirt)}", err=True)
        cap = "  ".join(f"{c} {ext.capacity[c]}/{ext.requested[c]}" for c in ext.capacity)
        click.echo(f"  hotplug capacity/requested: {cap}", err=True)
    if ext.budgets:
        click.echo("  budgets used/limit: " + ", ".join(f"{k} {u}/{lim}" for k, (u, lim) in ext.budgets.items()),
                   err=True)
    for x in planned.surplus:
        click.echo(f"  surplus: {x} (--right-size keeps only what the plan needs)", err=True)
    if right_size and (edit.reused_controllers or edit.removed_controllers):
        models = sorted(set(edit.reused_controllers) | set(edit.removed_controllers))
        click.echo("  right-sized: " + ", ".join(
            f"{edit.reused_controllers.count(m)} of the {edit.reused_controllers.count(m) + edit.removed_controllers.count(m)} "
            f"{m} without an address kept, {edit.removed_controllers.count(m)} removed" for m in models), err=True)
    for m in ext.moves:
        click.echo(f"  moved {m.name}: {m.old} -> {m.new}", err=True)
    if in_place:
        click.echo(f"  {domain} replaced; the original is {domain}.bak", err=True)
    for w in ext.warnings:
        click.echo(f"  warning: {w}", err=True)


def _ranges(ix: list[int]) -> str:
    out, start = [], None
    for i, v in enumerate(ix):
        if start is None:
            start = v
        if i + 1 == len(ix) or ix[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _read_domain(path: str, what: str = "a libvirt domain XML") -> bytes:
    """A domain XML file (or stdin, ``-``) as bytes, no more than the size limit (topo_solve.files)."""
    from .files import MAX_DOMAIN_BYTES, read_input

    return read_input(path, MAX_DOMAIN_BYTES, what)


@contextmanager
def _domain_input(path: str, in_place: bool, what: str = "a libvirt domain XML") -> Iterator[bytes]:
    """The bytes of a domain XML; with ``in_place``, read and held under the file's lock until the
    body has replaced it: a second run on the same file waits, then plans this run's result, so no
    change is lost."""
    if not in_place:
        yield _read_domain(path, what)
        return
    if path == "-":
        raise _usage("--in-place replaces the file itself; it cannot be combined with standard input")
    from .files import MAX_DOMAIN_BYTES, locked_input

    with locked_input(path, MAX_DOMAIN_BYTES, what) as data:
        yield data


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn errors into messages and exit codes."""
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # accepted anywhere on the line, not only first
    try:
        cli.main(args=args, prog_name="topo-solve", standalone_mode=False)
    except SystemExit as exc:
        # click ends a write to a closed pipe with a silent exit 1, which here means "infeasible":
        # it is an output fault (exit 2), and says so
        if exc.code == 1 and type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # click's EPIPE wrapper
            import errno

            _os_fault(OSError(errno.EPIPE, os.strerror(errno.EPIPE)))
        raise
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:  # what the readers and writers did not name: standard output, mostly
        if debug:
            raise
        _os_fault(exc)
    except Exception as exc:  # noqa: BLE001 - the one place that turns faults into exit codes
        from .errors import ProgrammingError, SpecError, TopoSolveError

        if debug:
            raise
        if isinstance(exc, SpecError):
            for p in exc.problems:
                click.echo(f"error: {p}", err=True)
        elif isinstance(exc, TopoSolveError):
            click.echo(f"error: {exc.render()}", err=True)
        elif isinstance(exc, ProgrammingError):
            click.echo(str(exc), err=True)
            sys.exit(EXIT_BUG)
        else:
            click.echo(f"internal error (a bug in topo-solve, please report it): {type(exc).__name__}: {exc}\n"
                       "run again with --debug for the traceback", err=True)
            sys.exit(EXIT_BUG)
        sys.exit(exc.exit_code)
    try:
        sys.stdout.flush()
    except OSError as exc:  # a full disk or a closed pipe behind standard output
        _os_fault(exc)
    sys.exit(0)


def _os_fault(exc: OSError) -> None:
    """An OSError no reader or writer named: an environment fault (exit 2), never a bug."""
    what = f"{exc.filename}" if exc.filename is not None else "cannot write standard output"
    try:  # standard output may be what failed: nothing more goes there, not even at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    try:
        click.echo(f"error: {what}: {exc.strerror or exc}", err=True)
    except OSError:
        pass
    sys.exit(2)
