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

EMITS = ("domain", "controllers", "json", "tree", "virt-install", "svg", "dot")
# what a domain XML (plan, extend) can be emitted as: the document, a report, the forms that add the
# extension's controllers to a defined guest (virt-xml lines, attach-device files), a picture
DOMAIN_EMITS = ("domain", "json", "virt-xml", "attach", "svg", "dot")


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
    topo-solve audit --connect URI --all
                                    the same for every guest of a libvirt host
    topo-solve extend DOMAIN.xml --hotplug MODEL=N
                                    add the fewest controllers, move nothing
    topo-solve attach GUEST --model MODEL --live
                                    hotplug a device at its planned position
    topo-solve nova FLAVORS.yaml    the smallest num_pcie_ports for a set of flavors
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


def _target_option(f):
    return click.option(
        "--target", "target_text", metavar="ALIAS|libvirt=X.Y,qemu=X.Y", default=None,
        help="The libvirt and QEMU to plan for: an alias (debian-12, debian-13, ubuntu-24.04, ubuntu-25.10, "
             "fedora-42, fedora-43) or libvirt=X.Y,qemu=X.Y.  Default: the spec's target, else the newest the "
             "tables know.")(f)


def _host_sysfs_option(f):
    return click.option(
        "--host-sysfs", "host_sysfs", metavar="[ROOT]", is_flag=False, flag_value="/sys", default=None,
        help="Read each host device's IOMMU group, NUMA node, functions and BAR sizes from the host's sysfs "
             "(ROOT, default /sys; write --host-sysfs=ROOT before the spec).  Without it nothing is read.")(f)


def _target(text: str | None):
    """``--target`` as a Target (None when not given); a bad one is a usage error."""
    if text is None:
        return None
    from .rules.versions import parse_target

    try:
        return parse_target(text)
    except ValueError as exc:
        raise _usage(f"--target {text}: {exc}") from None


def _default_target(target):
    from .rules.versions import NEWEST

    return target if target is not None else NEWEST


def _host_target(virsh):
    """The libvirt and QEMU a command talks to (``virsh version --daemon``): the default target of
    ``check`` and of anything with ``--connect``."""
    from .hypervisor import VirshError
    from .model import Target
    from .rules.versions import check_floor

    try:
        v = virsh.versions()
    except VirshError as exc:
        raise _usage(f"cannot read the versions of the libvirt at {virsh.uri}: {exc.message}") from None
    target = Target(tuple(v.libvirt[:2]), tuple(v.qemu[:2]), origin=f"default: the libvirt at {virsh.uri}")
    try:
        check_floor(target)
    except ValueError as exc:
        raise _usage(f"{virsh.uri}: {exc}") from None
    return target


def _json_devices(p, addr) -> list[dict]:
    """A placed device in the JSON plan: a multifunction group gives one entry per function."""
    ep, a = p.endpoint, p.address
    extra = {**({"acpi_index": ep.acpi_index} if ep.acpi_index is not None else {}),
             **({"host": ep.host, "iommu_group": ep.group, "host_numa_node": ep.host_node}
                if ep.host is not None and ep.kind == "hostdev" else {})}
    if not ep.parts or a is None:
        return [{"name": ep.name, "model": ep.kind, "address": addr(a), **extra}]
    from .model import Address

    return [{"name": name, "model": ep.kind, "address": addr(Address(a.bus, a.slot, a.function + f - ep.functions[0],
                                                                      a.domain)),
             **({"multifunction": True} if f == ep.functions[0] else {}),
             **({**extra, "host": host} if host is not None and "host" in extra else {})}
            for f, (name, host) in zip(ep.functions, ep.parts)]


def _plan_json(plan) -> dict:
    def addr(a):
        return None if a is None else str(a)

    return {
        "name": plan.problem.name,
        "machine": plan.problem.machine,
        "family": plan.layout.family,
        "controllers": [{"index": c.index, "model": c.model, "address": addr(c.address),
                         **({} if c.hotplug else {"hotplug": False})}  # a protected port
                        for c in plan.layout.controllers],
        "devices": [d for p in plan.layout.placed for d in _json_devices(p, addr)],
        "added": dict(sorted(plan.added.items())),
        "capacity": {str(k): v for k, v in plan.capacity.items()},
        "requested": {str(k): v for k, v in plan.requested.items()},
        "budgets": {k: {"used": u, "limit": lim} for k, (u, lim) in plan.budgets.items()},
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "target": _default_target(plan.problem.target).as_json(),
        **_windows_json(plan),
        **({"nodes": {str(n): {"capacity": {str(k): v for k, v in cap.items()},
                               "requested": {str(k): v for k, v in plan.problem.requested_by_node().get(
                                   n, dict.fromkeys(cap, 0)).items()}}
                      for n, cap in sorted(plan.node_capacity.items())}} if plan.node_capacity else {}),
    }


def _summary(plan) -> str:
    added = ", ".join(f"{n} {m}" for m, n in sorted(plan.added.items())) or "nothing"
    cap = "  ".join(f"{c} {plan.capacity[c]}/{plan.requested[c]}" for c in plan.capacity)
    lines = [f"{plan.problem.name} ({plan.problem.machine}): added {added}",
             f"  target: {_default_target(plan.problem.target).describe()}",
             f"  hotplug capacity/requested: {cap}"]
    for node, ncap in sorted(plan.node_capacity.items()):
        wanted = plan.problem.requested_by_node().get(node, {})
        lines.append(f"  NUMA node {node} capacity/requested: "
                     + "  ".join(f"{c} {ncap[c]}/{wanted.get(c, 0)}" for c in ncap))
    if plan.budgets:
        lines.append("  budgets used/limit: " + ", ".join(f"{k} {u}/{lim}" for k, (u, lim) in plan.budgets.items()))
    lines += _windows_lines(plan)
    lines += [f"  warning: {w}" for w in plan.warnings]
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _domain_acpi(data: bytes, file: str, headroom) -> tuple:
    """The acpi index each NIC hotplug of a domain XML's headroom gets: one above every index the
    document has (attach.next_acpi_index's rule), so no removed NIC's index comes back."""
    from .attach import acpi_indexes
    from .domain.parse import parse_document
    from .windows import acpi_for_hotplugs

    return acpi_for_hotplugs(tuple(headroom), acpi_indexes(parse_document(data, file).root))


def _windows_json(plan) -> dict:
    """Memory windows and acpi indexes of a plan (issue 14), for --emit json."""
    out: dict = {}
    addresses = {c.index: c.address for c in plan.layout.controllers}
    if plan.reserved:
        out["reserved"] = [{"controller": i, "address": str(addresses[i]) if addresses.get(i) else None,
                            "mem_reserve_kib": kib, "for": who} for i, kib, who in plan.reserved]
    if plan.layout.pcihole64 is not None:
        out["pcihole64_kib"] = plan.layout.pcihole64
    if plan.acpi_hotplug:
        out["acpi_index_hotplug"] = [{"hotplug": label, "indexes": list(ix)} for label, ix in plan.acpi_hotplug]
    return out


def _windows_lines(plan) -> list[str]:
    """Summary lines: host facts read from sysfs, reserved memory windows, acpi indexes of NIC hotplugs."""
    lines = []
    for p in plan.layout.placed:
        e = p.endpoint
        if e.windows != (0, 0) or e.host_node is not None:
            group = e.group if e.group is not None else "unknown"
            lines.append(f"  host device {e.name} ({e.host}): IOMMU group {group}"
                         f", host NUMA node {e.host_node if e.host_node is not None else 'none'}, BARs "
                         f"{e.windows[0] >> 20} MiB below 4 GiB + {e.windows[1] >> 20} MiB 64-bit")
    addresses = {c.index: c.address for c in plan.layout.controllers}
    for i, kib, who in plan.reserved:
        lines.append(f"  memory window: {who}: memReserve {kib} KiB on controller {i} ({addresses.get(i)}); "
                     "hotplug it behind that controller")
    if plan.layout.pcihole64 is not None:
        lines.append(f"  64-bit PCI hole: pcihole64 {plan.layout.pcihole64} KiB on the root controller")
    for label, ix in plan.acpi_hotplug:
        lines.append(f"  acpi index for {label} hotplugs: {', '.join(map(str, ix))}")
    return lines


def _tree(plan) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.tree import Tree

    layout = plan.layout
    nodes = {}
    children: dict[int, list] = {}
    for c in layout.controllers:
        if c.address is not None:
            off = "" if c.hotplug else " [dim](hotplug off)[/]"  # a protected port: never headroom
            children.setdefault(c.address.bus, []).append((c.address, f"[bold]{c.index}[/] {c.model}{off}", c.index))
    locked = {c.index for c in layout.controllers if not c.hotplug}
    for p in layout.placed:
        if p.address is not None:
            fns = len(p.endpoint.parts)  # a multifunction group: one line for its slot
            what = f"{p.endpoint.kind}, {fns} functions" if fns > 1 else p.endpoint.kind
            children.setdefault(p.address.bus, []).append(
                (p.address, f"{p.endpoint.name} [dim]({what})[/]", None))
    roots = [c for c in layout.controllers if c.address is None]
    top = Tree(f"{plan.problem.name} ({plan.problem.machine})")

    def grow(node, index: int) -> None:
        for addr, label, sub in sorted(children.get(index, []), key=lambda t: t[0]):
            n = node.add(f"{addr.slot:02x}.{addr.function} {label}")
            if sub is not None:
                nodes[sub] = n
                grow(n, sub)
        if not children.get(index) and index != 0:
            node.add("[green]free[/]" if index not in locked else "[dim]no hotplug[/]")

    for r in roots:
        n = top.add(f"[bold]{r.index}[/] {r.model}")
        grow(n, r.index)
    buf = StringIO()
    Console(file=buf, width=100, force_terminal=False, color_system=None).print(top)
    return buf.getvalue()


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--emit", type=click.Choice(EMITS + ("virt-xml", "attach")), default="domain", show_default=True,
              help="What to print: the domain XML, only its PCI controllers, JSON, a tree, virt-install options, "
                   "an SVG or dot picture; for a domain XML also virt-xml lines or attach-device files (-o DIR).")
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
@click.option("-c", "--connect", "uri", metavar="URI", default=None,
              help="SPEC is the name of a guest of this libvirt: plan its definition.")
@click.option("--apply", is_flag=True, help="With --connect: define the planned guest after showing what changes.")
@_target_option
@_host_sysfs_option
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def plan(spec: str, emit: str, output: str | None, force: bool, virt_type: str | None, hotplugs: tuple[str, ...],
         right_size: bool, in_place: bool, allow_moves: bool, layout: str | None, uri: str | None, apply: bool,
         target_text: str | None, host_sysfs: str | None, quiet: bool) -> None:
    """Plan SPEC.yaml, or a libvirt domain XML (defined or not): the fewest controllers that give
    it its hotplug headroom, every device and controller with its address.

    A domain XML (a file, or - for standard input) comes back as the same document with the PCI
    controllers and addresses filled in; everything else stays byte for byte."""
    from dataclasses import replace

    target = _target(target_text)
    live = _live_guest(spec, uri, apply, in_place)
    if live is not None and target is None:
        target = _host_target(live.host.virsh)
    # read once (stdin, a pipe), and with --in-place under the file's lock until it is replaced
    with _domain_input(spec, in_place, "a spec or a libvirt domain XML", live=live) as data:
        if _is_xml(data) and host_sysfs is not None:
            raise _usage("--host-sysfs reads the host devices of a spec's 'devices' and 'hotplug' entries; a domain "
                         "XML's host devices are not read (leave the option out)")
        if _is_xml(data):
            if emit not in DOMAIN_EMITS:
                raise _usage(f"--emit {emit} is for specs; a domain XML is planned as {', '.join(DOMAIN_EMITS)}")
            _domain_run(spec, data, _headroom(hotplugs), output=output, in_place=in_place, force=force,
                        allow_moves=allow_moves, right_size=right_size, emit=emit, quiet=quiet, verb="plan",
                        layout=layout or "qemu-guidelines", live=live, target=_default_target(target))
            return
    if emit in ("virt-xml", "attach"):
        raise _usage(f"--emit {emit} adds an extension's controllers to a defined guest; {spec} is a spec "
                     "(use --emit virt-install for a new guest)")
    for flag, given in (("--hotplug", hotplugs), ("--right-size", right_size), ("--in-place", in_place),
                        ("--allow-moves", allow_moves)):
        if given:
            raise _usage(f"{flag} is for a domain XML; {spec} is a spec (write its headroom under 'hotplug:')")
    from .solve import solve
    from .spec import DomainRequest, load_request

    problem = load_request("<stdin>" if spec == "-" else spec, target, data=data, host_sysfs=host_sysfs)
    if isinstance(problem, DomainRequest):  # a spec with 'domain': plan that guest
        if emit not in DOMAIN_EMITS:
            raise _usage(f"{spec} plans an existing guest; --emit {emit} is for new guests (use "
                         f"{', '.join(DOMAIN_EMITS)})")
        from .errors import Finding, SpecError

        domain = str(problem.domain)
        try:  # a fault of the domain file is reported at the spec's 'domain:' line too
            xml = _read_domain(domain)
        except SpecError as exc:
            raise SpecError([Finding(spec, problem.line, "domain", f"{domain}: {p.message}")
                             for p in exc.problems]) from None
        _domain_run(domain, xml, problem.headroom, output=output, in_place=False, force=force, allow_moves=False,
                    right_size=False, emit=emit, quiet=quiet, machine=problem.machine, spec=spec, verb="plan",
                    machine_line=problem.machine_line,
                    layout=layout or "qemu-guidelines", target=_default_target(problem.target))
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
    elif emit == "virt-install":
        from .emit.stack import virt_install

        text = virt_install(result)
    elif emit in ("svg", "dot"):
        from .emit import picture
        from .rules import rules_for

        draw = picture.svg if emit == "svg" else picture.dot
        text = draw(result.layout, rules_for(result.layout.family, result.problem.target),
                    f"{result.problem.name} ({result.problem.machine})")
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
@click.option("--virt-type", type=click.Choice(["kvm", "qemu"]), default=None,
              help="Override every spec's domain type.")
@click.option("--hotplug", "hotplugs", multiple=True, metavar="MODEL=N[@NODE]",
              help="Headroom for every domain XML template (*.xml); repeat it.")
@click.option("--right-size", is_flag=True,
              help="Domain XML templates: keep only the unaddressed controllers the plan needs.")
@_target_option
@_host_sysfs_option
@click.option("-q", "--quiet", is_flag=True, help="No summary table on stdout (errors still go to stderr).")
def batch(specs: tuple[str, ...], outdir: str, jobs: int | None, force: bool, report: str | None,
          virt_type: str | None, hotplugs: tuple[str, ...], right_size: bool, target_text: str | None,
          host_sysfs: str | None, quiet: bool) -> None:
    """Plan many specs and domain XML templates in parallel, each to OUTDIR/<stem>.xml.

    SPECS are folders (their *.yaml, *.yml and *.xml files), glob patterns or files; a domain
    XML template is planned for the headroom --hotplug gives (defined or not, as `plan` does).
    One bad spec never stops the rest; each is reported on stderr, then a table
    of all of them goes to stdout.  Exit code: 0 all planned, 1 some spec has no
    layout, 2 some spec (or output) is bad, 3 a bug; the highest one wins."""
    import time

    from . import batch as b

    target = _target(target_text)
    if report and report != "-":
        from .files import check_output

        check_output(report, force=force)  # before the batch runs, not after
    start = time.perf_counter()
    paths, results = b.collect_specs(specs)
    stream = b.plan_many(paths, workers=jobs, outdir=outdir, force=force, virt_type=virt_type,
                         hotplug=_headroom(hotplugs), right_size=right_size, target=target, host_sysfs=host_sysfs,
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
        click.echo(b.summary_table(results) + b.targets_line(results) + b.totals_line(b.totals(results, seconds)))
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
@_target_option
def check(domain: str, uri: str, max_per_class: int, target_text: str | None) -> None:
    """Prove DOMAIN.xml in a real libvirt: define it under a temporary name, hotplug
    each class to capacity, compare with the promise, clean up.  A guest never defined
    promises its predicted capacity, and libvirt must add exactly the predicted controllers.  The
    promise is made for the versions of that libvirt (--target to name others)."""
    from .hypervisor import Virsh, measure
    from .model import EndpointClass
    from .verify import verify

    target = _target(target_text)
    virsh = Virsh(uri)
    data = _read_domain(domain)
    if target is None:
        target = _host_target(virsh)
    text = data.decode("utf-8", errors="replace")
    layout, rules, predicted = _audited(domain, data, target)
    report = verify(layout, rules, strict_auto=False)
    classes = [str(c) for c in report.capacity if str(c) != "hostdev"]
    click.echo(f"target: {target.describe()}")
    m = measure(text, classes, virsh=virsh, max_per_class=max_per_class)
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


def _audited(path: str, data: bytes, target=None):
    """(layout, rules, prediction or None) of a domain XML: a defined guest as it is; one libvirt would
    still change at define (addresses to give, devices or controllers to add) as libvirt will store it.
    ``target``: the libvirt and QEMU it runs on (None: the newest known)."""
    from .domain.read import read_domain

    domain = read_domain(data, path, target)
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
@click.argument("domains", nargs=-1)
@click.option("--emit", type=click.Choice(["table", "json", "svg", "dot"]), default="table", show_default=True,
              help="A table, JSON, or a picture of one guest (SVG or Graphviz dot).")
@click.option("-c", "--connect", "uri", metavar="URI", default=None,
              help="DOMAINS are names of guests of this libvirt (their live XML when running).")
@click.option("--all", "every", is_flag=True,
              help="Every guest of the libvirt host (--connect, else LIBVIRT_DEFAULT_URI or qemu:///system).")
@_target_option
def audit(domains: tuple[str, ...], emit: str, uri: str | None, every: bool, target_text: str | None) -> None:
    """Report the live hotplug capacity of libvirt domain XMLs (as virsh dumpxml prints them).

    A domain XML that was never defined (devices or controllers without an address, devices
    libvirt adds by itself) is audited as libvirt will store it after `virsh define`: the
    numbers are then predicted, and say so.  DOMAINS are files, or - for standard input.  With
    --connect URI they are guests of that libvirt, and --all audits every guest of the host: one
    row per guest, with the empty ports and what they cost, and what a changed definition gives at
    the guest's next start."""
    import json

    target = _target(target_text)
    if every and domains:
        raise _usage("--all audits every guest of the host; give either --all or guest names")
    if uri is not None or every:
        if not domains and not every:
            raise _usage("name the guests to audit, or pass --all")
        _live_audit(domains, uri, every, emit, target)
        return
    target = _default_target(target)
    if not domains:
        raise _usage("give domain XML files to audit (- for standard input), or --connect URI with guest names, "
                     "or --all")
    if emit in ("svg", "dot"):
        if len(domains) != 1:
            raise _usage(f"--emit {emit} draws one guest; give exactly one domain XML")
        from .emit import picture

        layout, rules, _ = _audited(domains[0], _read_domain(domains[0]), target)
        draw = picture.svg if emit == "svg" else picture.dot
        _write(draw(layout, rules, f"{domains[0]} ({rules.family})"), None, False)
        return
    results = [_audit_record("<stdin>" if path == "-" else path, _read_domain(path), target) for path in domains]
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
            click.echo(f"  target: {target.describe()}")
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
@click.option("--emit", type=click.Choice(DOMAIN_EMITS), default="domain", show_default=True,
              help="The extended domain XML, a JSON report of what was added and moved, the virt-xml lines or "
                   "attach-device files (-o DIR) that add the new controllers, or an SVG or dot picture.")
@click.option("-c", "--connect", "uri", metavar="URI", default=None,
              help="DOMAIN is the name of a guest of this libvirt: extend its definition.")
@click.option("--apply", is_flag=True,
              help="With --connect: define the extended guest after showing what changes (a running guest takes "
                   "the new controllers at its next start).")
@_target_option
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def extend(domain: str, hotplugs: tuple[str, ...], output: str | None, in_place: bool, force: bool,
           allow_moves: bool, emit: str, uri: str | None, apply: bool, target_text: str | None, quiet: bool) -> None:
    """Add the fewest controllers to an existing guest so it can hotplug what --hotplug asks,
    without moving a device; every index, address, alias, attribute and comment stays as it was.

    DOMAIN is a libvirt domain XML as `virsh dumpxml` prints it, or - for standard input; with
    --connect URI, the name of a guest of that libvirt."""
    if not hotplugs:
        raise _usage("extend needs at least one --hotplug MODEL=N (e.g. --hotplug virtio-net=4)")
    target = _target(target_text)
    live = _live_guest(domain, uri, apply, in_place)
    if live is not None and target is None:
        target = _host_target(live.host.virsh)
    headroom = _headroom(hotplugs)
    with _domain_input(domain, in_place, live=live) as data:
        _domain_run(domain, data, headroom, output=output, in_place=in_place, force=force, allow_moves=allow_moves,
                    right_size=False, emit=emit, quiet=quiet, verb="extend", live=live,
                    target=_default_target(target))


@cli.command()
@click.argument("guest")
@click.option("--model", metavar="MODEL", help="The device to hotplug: a model a spec may name (virtio-net, e1000, "
                                               "virtio-blk, hostdev ...).")
@click.option("--device", "device_file", metavar="FILE",
              help="A device XML of your own (a NIC on your network, a real disk) instead of --model; its address "
                   "is set to the planned one.")
@click.option("--node", type=click.IntRange(min=0), default=None,
              help="The guest NUMA node the device belongs to: a position behind that node's expander bus or PHB.")
@click.option("--host", "host_address", metavar="ADDRESS", help="For --model hostdev: the host's PCI address.")
@click.option("--name", metavar="NAME", help="The device's alias (ua-NAME) for --model; default MODEL-N.")
@click.option("-c", "--connect", "uri", metavar="URI", default=None,
              help="The libvirt of GUEST [default: LIBVIRT_DEFAULT_URI, else qemu:///system].")
@click.option("--live", is_flag=True, help="Hotplug it into the running guest (virsh attach-device --live).")
@click.option("--config", is_flag=True, help="Add it to the guest's definition too (--config; alone: only there).")
@click.option("-o", "--output", metavar="FILE", help="Write the device XML here (atomically) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_target_option
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def attach(guest: str, model: str | None, device_file: str | None, node: int | None, host_address: str | None,
           name: str | None, uri: str | None, live: bool, config: bool, output: str | None, force: bool,
           target_text: str | None, quiet: bool) -> None:
    """Give a device its planned position in a running guest: the first free position of its class (on
    its NUMA node with --node; never a node's position without), the next acpi index for a NIC of a
    guest that names NICs by index.  Prints the device XML; with --live (and --config) attaches it
    through virsh and reports libvirt's answer in one line.

    GUEST is a guest's name, or a domain XML file (virsh dumpxml output): then it only prints.
    Exit codes: 0 attached (or printed), 1 no free position left, 2 bad input or libvirt refused."""
    from lxml import etree

    import re

    from . import attach as at
    from .domain.parse import parse_xml
    from .domain.read import read_layout
    from .errors import EnvironmentFault, NoRoom, ProgrammingError
    from .hypervisor import VirshError

    if (model is None) == (device_file is None):
        raise _usage("give the device: --model MODEL or --device FILE (one of them)")
    versions = _target(target_text)  # the libvirt and QEMU: --target, else the guest's libvirt's
    is_file = uri is None and (guest == "-" or os.path.isfile(guest))
    host = g = None
    if is_file:
        if live or config:
            raise _usage(f"{guest} is a file: --live and --config attach to a guest of a libvirt; give the guest's "
                         "name (and --connect URI)")
        target = _read_domain(guest)
        roots = [parse_xml(target, guest)]
        label = guest
    else:
        from .live import Host

        host = Host(uri)
        g = host.guest(guest)
        if live and not g.running:
            raise EnvironmentFault(f"{g.label()} is {g.state}: --live needs a running guest (--config alone adds "
                                   "the device to its definition)")
        target = (g.definition if config and not live else g.xml).encode("utf-8")
        roots = [parse_xml(x.encode("utf-8"), g.name) for x in dict.fromkeys((g.xml, g.definition))]
        label = g.name
        if versions is None:
            versions = _host_target(host.virsh)
    versions = _default_target(versions)
    layout, rules = read_layout(target, label, versions)
    also = read_layout(g.definition.encode("utf-8"), label, versions)[0] if live and config else None
    if name is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", name):
        raise _usage(f"--name {name!r}: an alias is a letter, then letters, digits, '_', '.' or '-' "
                     "(QEMU's device ids)")
    if model is not None:
        kind = at.device_kind(model)
        if kind.element == "hostdev" and not host_address:
            raise _usage("--model hostdev needs --host ADDRESS: the host PCI device to assign (e.g. 0000:41:00.0)")
        if host_address is not None:
            if kind.element != "hostdev":
                raise _usage(f"--host names the host device of a hostdev; {kind.name} devices have none")
            from .model import Address

            try:
                Address.parse(host_address)
            except ValueError as exc:
                raise _usage(f"--host: {exc}") from None
        user_el = None
    else:
        user_el, kind = at.user_device(_read_domain(device_file, "a device XML"), device_file, rules)
    row = rules.devices.get(kind.name)
    why = (row.missing or (row.hotplug_why if live and not row.hotplug else "")) if row is not None else ""
    if why:  # what the target's libvirt or QEMU cannot take
        raise _usage(f"{'--model ' + model if model else '--device ' + device_file}: {why}")
    acpi = at.next_acpi_index(*roots) if at.is_nic(kind) else None
    alias = name or at.free_alias(kind.name, *roots)
    try:
        position = at.choose(label, layout, rules, kind, node, also=also)
    except NoRoom as exc:
        if not live or node is not None or at.free_anywhere(layout, rules, kind.cls):
            raise
        # a device of no NUMA node, and topo-solve sees no free position of its class anywhere (no
        # node's either): ask libvirt itself, without an address; its answer is the running guest's truth
        el = at.model_device(kind, alias, None, host=host_address, guest=g.name, acpi_index=acpi) \
            if user_el is None else at.with_address(user_el, None, acpi)
        try:
            host.attach(g.name, etree.tostring(el, encoding="unicode"), live=True, config=config)
        except VirshError as refused:
            raise NoRoom(f"{exc.message}; libvirt refuses it too: {refused.message}") from None
        raise ProgrammingError(f"libvirt attached the {kind.name} to {g.label()} although topo-solve counted no "
                               "free position for it: topo-solve's audit of this guest is wrong") from None
    el = at.model_device(kind, alias, position.address, host=host_address, guest=label, acpi_index=acpi) \
        if user_el is None else at.with_address(user_el, position.address, acpi)
    etree.indent(el, space="  ")
    text = etree.tostring(el, encoding="unicode") + "\n"
    _write(text, output, force)
    where = f" on NUMA node {position.node}" if position.node is not None else ""
    what = (f"{label}: {kind.name} ({kind.cls}) at {position.address}, controller {position.address.bus} "
            f"({position.bus_model}){where}" + (f", acpi index {acpi}" if acpi is not None else ""))
    if not live and not config:
        if not quiet:
            click.echo(what, err=True)
            if not is_file:
                click.echo(f"  attach it with --live (and --config), or: virsh attach-device {g.name} FILE --live",
                           err=True)
        return
    try:
        host.attach(g.name, text, live=live, config=config)
    except VirshError as exc:
        raise EnvironmentFault(f"libvirt refused to attach the {kind.name} to {g.label()}: {exc.message}") from None
    after = host.guest(g.name)
    landed = at.landed(parse_xml((after.xml if live else after.definition).encode("utf-8"), g.name), el.tag,
                       position.address)
    if not landed:
        raise ProgrammingError(f"libvirt attached the {kind.name} to {g.label()}, but not at {position.address}")
    if not quiet:
        how = " and ".join(w for w, on in (("live", live), ("to the definition", config)) if on)
        click.echo(f"{what}: attached {how}", err=True)


@cli.command()
@click.argument("flavors", type=click.Path(dir_okay=False))
@click.option("--emit", type=click.Choice(["table", "json"]), default="table", show_default=True)
def nova(flavors: str, emit: str) -> None:
    """The smallest [libvirt] num_pcie_ports (nova.conf, 0-28) that gives every flavor in FLAVORS.yaml
    its hotplug headroom.

    FLAVORS.yaml names the machine (q35 or virt) and each flavor's devices at boot and headroom:
    `flavors: {m1.small: {devices: {virtio-blk: 1, virtio-net: 1}, headroom: {virtio-net: 2}}}`.
    Exit code 1 when no value gives some flavor its headroom."""
    import json

    from .nova import load_flavors, solve_flavors

    machine, found = load_flavors(flavors)
    answer = solve_flavors(machine, found, flavors)
    if emit == "json":
        click.echo(json.dumps({
            "machine": answer.machine, "num_pcie_ports": answer.ports,
            "flavors": [{"flavor": n.flavor, "ports": n.ports, "on_ports": n.on_ports, "bridges": n.bridges,
                         "port_headroom": n.port_headroom, "pci_headroom": n.pci_headroom, "pci_room": n.pci_room,
                         "problem": n.problem} for n in answer.flavors],
            "warnings": list(answer.warnings)}, indent=2))
    else:
        head = ("flavor", "devices on ports", "bridges", "pcie+hostdev headroom", "pci headroom/room", "ports")
        rows = [(n.flavor, str(n.on_ports), str(n.bridges), str(n.port_headroom), f"{n.pci_headroom}/{n.pci_room}",
                 str(n.ports) if n.problem is None else "-") for n in answer.flavors]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            click.echo("  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
        if answer.ports is not None:
            click.echo(f"num_pcie_ports = {answer.ports}   ([libvirt] in nova.conf, {answer.machine} guests: every "
                       "flavor gets its headroom)")
        for n in answer.flavors:
            if n.problem:
                click.echo(f"error: flavor {n.flavor}: {n.problem}", err=True)
        for w in answer.warnings:
            click.echo(f"warning: {w}", err=True)
    sys.exit(0 if answer.ports is not None else 1)


def _domain_run(domain: str, data: bytes, headroom, *, output, in_place, force, allow_moves, right_size, emit,
                quiet, verb: str, machine: str | None = None, spec: str | None = None,
                machine_line: int | None = None, layout: str = "qemu-guidelines", live: "_Live | None" = None,
                target=None) -> None:
    """Plan a domain XML and write the result (plan, extend, and specs with 'domain')."""
    import json

    from .domain.plan import plan_document

    if in_place and (output or domain == "-"):
        raise _usage("--in-place replaces the file itself; it cannot be combined with -o or standard input")
    if live is not None and live.apply and emit in ("virt-xml", "attach"):
        raise _usage(f"--apply defines the guest itself; --emit {emit} is the form for applying it with other tools")
    target = _default_target(target)
    planned = plan_document(data, domain, tuple(headroom), allow_moves=allow_moves, right_size=right_size,
                            machine=machine, spec=spec, layout=layout, target=target, machine_line=machine_line)
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
            "target": target.as_json(),
        }
        acpi = _domain_acpi(edit.data, domain, headroom)
        if acpi:
            report["acpi_index_hotplug"] = [{"hotplug": label, "indexes": list(ix)} for label, ix in acpi]
        click.echo(json.dumps(report, indent=2))
    elif emit in ("virt-xml", "attach", "svg", "dot"):
        _emit_extension(planned, emit, output, force, live)
    if live is not None and live.apply:
        _apply(planned, live, output, force)
    elif emit in ("virt-xml", "attach", "svg", "dot"):
        pass
    elif in_place:
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
        click.echo(f"  target: {target.describe()}", err=True)
        click.echo("  hotplug capacity/requested: " + "  ".join(
            f"{c} {ext.capacity[c]}/{ext.requested[c]}" for c in ext.capacity), err=True)
        for label, ix in _domain_acpi(edit.data, domain, headroom):
            click.echo(f"  acpi index for {label} hotplugs: {', '.join(map(str, ix))}", err=True)
        return
    gaps = {c.index for c in edit.gap_controllers}
    by_model: dict[str, list[int]] = {}
    for c in edit.new_controllers:
        if c.index not in gaps:
            by_model.setdefault(c.model, []).append(c.index)
    added = ", ".join(f"{len(ix)} {m} (index {_ranges(ix)})" for m, ix in by_model.items()) or "nothing"
    click.echo(f"{name} ({rules.family}): added {added}", err=True)
    click.echo(f"  target: {target.describe()}", err=True)
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
            f"{edit.reused_controllers.count(m)} of the "
            f"{edit.reused_controllers.count(m) + edit.removed_controllers.count(m)} "
            f"{m} without an address kept, {edit.removed_controllers.count(m)} removed" for m in models), err=True)
    for m in ext.moves:
        click.echo(f"  moved {m.name}: {m.old} -> {m.new}", err=True)
    if in_place:
        click.echo(f"  {domain} replaced; the original is {domain}.bak", err=True)
    for label, ix in _domain_acpi(edit.data, domain, headroom):
        click.echo(f"  acpi index for {label} hotplugs: {', '.join(map(str, ix))}", err=True)
    for w in ext.warnings:
        click.echo(f"  warning: {w}", err=True)


# -- live guests (issue 15) -------------------------------------------------------------------------

class _Live:
    """A guest read through virsh for plan/extend (``--connect``); ``apply``: define the result."""

    def __init__(self, host, guest, apply: bool):
        self.host, self.guest, self.apply = host, guest, apply

    @property
    def data(self) -> bytes:
        return self.guest.definition.encode("utf-8")


def _live_guest(name: str, uri: str | None, apply: bool, in_place: bool) -> _Live | None:
    """The guest ``name`` of libvirt ``uri`` (its persistent definition: what plan and extend change), or
    None without ``--connect``."""
    if uri is None:
        if apply:
            raise _usage("--apply defines a guest of a libvirt: name the guest and give --connect URI")
        return None
    if in_place:
        raise _usage("--in-place replaces a file; with --connect, --apply defines the guest instead")
    if name == "-":
        raise _usage("with --connect, give the guest's name (not - for standard input)")
    from .live import Host

    host = Host(uri)
    # --security-info: the definition is defined again, and must keep what libvirt hides by default
    return _Live(host, host.guest(name, secure=apply), apply)


def _extension_only(planned, emit: str) -> None:
    """virt-xml lines and attach-device files add controllers to a defined guest, nothing else."""
    ext, edit = planned.extension, planned.edit
    if not planned.domain.defined or ext.filled or ext.placed or edit.gap_controllers or edit.added_by_libvirt:
        raise _usage(f"--emit {emit} adds controllers to a defined guest, but {planned.domain.file} still has devices "
                     "or controllers without an address (or devices libvirt adds at define): define it first, or "
                     "write the planned document (--emit domain)")
    if ext.moves:
        raise _usage(f"--emit {emit} only adds controllers; this extension moves devices too (write the document "
                     "with --emit domain)")


def _emit_extension(planned, emit: str, output: str | None, force: bool, live: _Live | None) -> None:
    """The forms of a planned domain XML besides the document: a picture, virt-xml lines, attach files."""
    ext = planned.extension
    rules = planned.rules
    if emit in ("svg", "dot"):
        from .emit import picture

        draw = picture.svg if emit == "svg" else picture.dot
        _write(draw(ext.layout, rules, f"{planned.name} ({rules.family})",
                    added=frozenset(c.index for c in ext.added)), output, force)
        return
    _extension_only(planned, emit)
    from .emit.stack import attach_files, virt_xml

    uri = live.host.uri if live is not None else None
    if emit == "virt-xml":
        _write(virt_xml(planned.name, ext.added, uri), output, force)
        return
    if not output or output == "-":
        raise _usage("--emit attach writes one file per new controller: give the folder with -o DIR")
    folder = Path(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _usage(f"cannot make the folder {output}: {exc.strerror or exc}") from None
    import shlex

    conn = f" -c {shlex.quote(uri)}" if uri else ""
    for name, text in attach_files(ext.added, rules.family):
        _write(text, str(folder / name), force)
        click.echo(f"virsh{conn} attach-device {shlex.quote(planned.name)} {shlex.quote(str(folder / name))} --config")


def _apply(planned, live: _Live, output: str | None, force: bool) -> None:
    """Show what changes in the guest's definition (a diff), then define it, but only if libvirt's
    definition is still the one that was read."""
    import difflib

    guest = live.guest
    if output:
        _write(planned.edit.data, output, force)
    if planned.unchanged:
        click.echo(f"{guest.label()}: nothing to define; the definition already meets the request", err=True)
        return
    new = planned.edit.data.decode("utf-8")
    diff = difflib.unified_diff(guest.definition.splitlines(keepends=True), new.splitlines(keepends=True),
                                f"{guest.name} (defined)", f"{guest.name} (planned)", n=1)
    click.echo("".join(diff), nl=False)
    live.host.define_unchanged(guest, planned.edit.data)
    if guest.running:
        click.echo(f"{guest.label()}: defined. The running guest has the new controllers from its next start: shut "
                   "it down and start it (a reboot inside the guest keeps the running QEMU); until then its "
                   "hotplug capacity is what it was.", err=True)
    else:
        click.echo(f"{guest.label()}: defined; it has the new controllers when it starts.", err=True)


def _audit_record(label: str, data: bytes, target=None) -> dict:
    """What audit says of one domain XML (as virsh dumpxml prints it), for ``target``'s versions."""
    from .domain.plan import PORT_MEMORY_KB
    from .model import HOTPLUG_CLASSES
    from .verify import verify

    target = _default_target(target)
    layout, rules, predicted = _audited(label, data, target)
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
    used = {c.address.bus for c in layout.controllers if c.address is not None}
    used |= {p.address.bus for p in layout.placed if p.address is not None}
    empty = sorted(ports - used)
    return {
        "file": label, "machine": rules.family, "predicted": predicted is not None,
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
        # an empty port costs QEMU memory whether or not anything is ever hotplugged into it
        "empty_ports": len(empty), "empty_port_memory_kb": len(empty) * PORT_MEMORY_KB,
        "errors": report.errors, "warnings": warnings, "target": target.as_json(),
    }


def _cap_text(cap: dict) -> str:
    return "  ".join(f"{k} {v}" for k, v in cap.items())


def _live_audit(names: tuple[str, ...], uri: str | None, every: bool, emit: str, target=None) -> None:
    """Audit guests of a libvirt host: one row each (the running guest's live XML; a guest that is shut off,
    its definition), what the definition gives at the next start when it differs, warnings.  The target
    is that libvirt's versions unless ``target`` names others."""
    import json

    from .errors import EnvironmentFault, SpecError
    from .live import Host

    host = Host(uri)
    present = host.names()  # a connection that fails, fails here, once
    target = target if target is not None else _host_target(host.virsh)
    listed = present if every else list(names)
    if emit in ("svg", "dot"):
        if len(listed) != 1:
            raise _usage(f"--emit {emit} draws one guest; name exactly one")
        if listed[0] not in present:
            raise EnvironmentFault(f"{host.uri}: no guest named '{listed[0]}' (virsh list --all names them)")
    records, failed = [], False
    for name in listed:
        if name not in present:
            records.append({"guest": name, "uri": host.uri, "state": "-",
                            "error": f"no guest named '{name}' on {host.uri} (virsh list --all names them)"})
            failed = True
            continue
        try:
            guest = host.guest(name)
        except EnvironmentFault as exc:
            if every and name not in host.names():
                continue  # gone since the list was read (a guest that was being removed)
            records.append({"guest": name, "uri": host.uri, "state": "-", "error": exc.message})
            failed = True
            continue
        if emit in ("svg", "dot"):
            _draw_guest(guest, emit, target)
            return
        try:
            rec = _audit_record(name, guest.xml.encode("utf-8"), target)
        except SpecError as exc:
            records.append({"guest": name, "uri": host.uri, "state": guest.state,
                            "error": "; ".join(p.message for p in exc.problems)})
            failed = True
            continue
        del rec["file"]
        rec = {"guest": name, "uri": host.uri, "state": guest.state, **rec}
        if guest.running and guest.definition != guest.xml:
            try:
                nxt = _audit_record(name, guest.definition.encode("utf-8"), target)
            except SpecError:
                nxt = None
            if nxt is not None and (nxt["capacity"] != rec["capacity"] or nxt.get("nodes") != rec.get("nodes")):
                rec["next_start"] = {k: nxt[k] for k in ("capacity", "nodes", "empty_ports") if k in nxt}
        records.append(rec)
    if emit == "json":
        click.echo(json.dumps(records, indent=2))
    else:
        click.echo(_host_table(records, host.uri, target), nl=False)
    for r in records:
        if "error" in r:
            click.echo(f"error: {r['guest']}: {r['error']}", err=True)
    if failed:
        sys.exit(2)


def _host_table(records: list[dict], uri: str, target=None) -> str:
    """One row per guest, then what each row's notes say in full."""
    from .domain.plan import PORT_MEMORY_KB

    head = ("guest", "state", "machine", "hotplug capacity", "empty ports", "warnings")
    rows, notes = [], []
    for r in records:
        if "error" in r:
            rows.append((r["guest"], r["state"], "-", "-", "-", "-"))  # the error itself goes to stderr
            continue
        empty = r["empty_ports"]
        cost = f" (~{empty * PORT_MEMORY_KB / 1000:.1f} MB)" if empty else ""
        rows.append((r["guest"], r["state"], r["machine"], _cap_text(r["capacity"]), f"{empty}{cost}",
                     str(len(r["warnings"]) + len(r["errors"]))))
        for n, node in r.get("nodes", {}).items():
            notes.append(f"{r['guest']}: NUMA node {n}: hotplug capacity {_cap_text(node['capacity'])}")
        if "next_start" in r:
            notes.append(f"{r['guest']}: its definition differs from the running guest: at its next start "
                         f"hotplug capacity {_cap_text(r['next_start']['capacity'])}")
        notes += [f"{r['guest']}: rule broken: {e}" for e in r["errors"]]
        notes += [f"{r['guest']}: warning: {w}" for w in r["warnings"]]
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in [head, *rows]]
    total = sum(r.get("empty_ports", 0) for r in records)
    lines.append(f"{len(records)} guest(s) on {uri}; {total} empty port(s) in all"
                 + (f", about {total * PORT_MEMORY_KB / 1000:.1f} MB of QEMU memory" if total else ""))
    if target is not None:
        lines.append(f"target: {target.describe()}")
    return "\n".join(lines + notes) + "\n"


def _draw_guest(guest, emit: str, target=None) -> None:
    from .domain.read import read_layout
    from .emit import picture

    layout, rules = read_layout(guest.xml.encode("utf-8"), guest.name, target)
    draw = picture.svg if emit == "svg" else picture.dot
    _write(draw(layout, rules, f"{guest.name} ({rules.family}, {guest.state})"), None, False)


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
def _domain_input(path: str, in_place: bool, what: str = "a libvirt domain XML", live=None) -> Iterator[bytes]:
    """The bytes of a domain XML (a live guest's definition with ``live``); with ``in_place``, read
    and held under the file's lock until the body has replaced it: a second run on the same file
    waits, then plans this run's result, so no change is lost."""
    if live is not None:
        yield live.data
        return
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
