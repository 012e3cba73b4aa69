"""Plan many specs: in worker processes, each result written atomically, one bad spec never stops the rest.

:func:`plan_many` is the Python API (``topo-solve batch`` is its command line):
it yields one :class:`BatchResult` per spec as the specs finish, in no particular
order.  Nothing here prints.

* **Work split.**  Specs go to a :class:`~concurrent.futures.ProcessPoolExecutor`
  in chunks of paths (not one at a time: the per-task round trip would cost more
  than planning a small spec); each worker reads, parses, plans, renders and
  writes its chunk and sends back the small result records.  With
  ``workers=1`` everything runs in this process.
* **Identical problems are solved once per process.**  The cache key is the
  frozen :class:`~topo_solve.model.Problem` with what only names the spec
  stripped: the guest name, the file and the spec line of each endpoint.  A
  cached plan is re-attached to the spec's own problem and rendered again, so
  each XML carries its own guest name (and the disk image paths derived from it).
  With N workers a problem met by several workers is solved at most once by each.
* **Specs that extend a guest** (``domain: FILE.xml``) are extended as
  ``topo-solve SPEC`` does it (fewest controllers added, nothing moved); their
  output is the edited domain XML.  They are not cached.
* **Outputs** are ``OUTDIR/<spec stem>.xml``, written to a temporary file in
  OUTDIR and then linked (or, with ``force``, renamed) into place, so a reader
  never sees half a file and an existing file is never replaced without
  ``force``.  Two specs with the same stem: the first in input order is
  planned, the other reported.
* **Status** of each spec: ``ok``, ``infeasible`` (no layout satisfies it) or
  ``error`` (bad input, an unwritable output, or a bug in topo-solve), with
  ``code`` the exit code ``topo-solve plan`` would have given it (0, 1, 2 or 3).
"""

from __future__ import annotations

import glob
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import Finding, InfeasibleError, ProgrammingError, SpecError, TopoSolveError

__all__ = ["BatchResult", "BatchOptions", "plan_many", "collect_specs", "exit_code", "STATUSES"]

STATUSES = ("ok", "infeasible", "error")
SPEC_SUFFIXES = (".yaml", ".yml", ".xml")  # specs, and domain XML templates
MAX_CHUNK = 32  # paths per task sent to a worker
MAX_DOMAIN_BYTES = 8 * 1024 * 1024  # the domain reader's own limit (topo_solve.domain.parse.MAX_BYTES)


@dataclass(frozen=True)
class BatchResult:
    """What became of one spec."""

    spec: str  # the spec's path, as given
    status: str  # "ok" | "infeasible" | "error"
    code: int  # the exit code `topo-solve plan` gives this spec: 0, 1, 2 (bad input) or 3 (a bug)
    message: str = ""  # why not ok (each line names the file), or the plan's warnings
    name: str | None = None  # the guest's name, once the spec was read
    machine: str | None = None
    added: dict[str, int] = field(default_factory=dict)  # controllers added, by model
    capacity: dict[str, int] = field(default_factory=dict)  # per class, alone
    requested: dict[str, int] = field(default_factory=dict)  # headroom asked per class
    output: str | None = None  # the XML file written
    cached: bool = False  # the plan (or the infeasibility) came from an identical problem solved before
    target: str | None = None  # the libvirt and QEMU it was planned for ("libvirt 11.3 + QEMU 10.0")
    xml: str | None = None  # the domain XML, only when plan_many was given no outdir

    def to_json(self) -> dict:
        """A JSON-ready dict of every field but ``xml``."""
        return {f: getattr(self, f) for f in _JSON_FIELDS}


_JSON_FIELDS = tuple(f.name for f in fields(BatchResult) if f.name != "xml")


@dataclass(frozen=True)
class BatchOptions:
    outdir: str | None = None  # None: do not write; each result carries its XML instead
    force: bool = False  # replace existing output files
    virt_type: str | None = None  # override every spec's domain type (kvm | qemu)
    hotplug: tuple = ()  # headroom (Headroom entries) every domain XML template is planned for
    right_size: bool = False  # domain XML templates: keep only the unaddressed controllers the plan needs
    target: object = None  # a Target every spec is planned for (--target); None: each spec's own, else the newest
    host_sysfs: str | None = None  # read host devices' facts under this sysfs root (--host-sysfs); None: nothing


# -- choosing the specs ------------------------------------------------------

def collect_specs(args: Iterable[str]) -> tuple[list[str], list[BatchResult]]:
    """Expand DIR, GLOB and FILE arguments into spec paths, in a stable order.

    A folder gives its ``*.yaml``, ``*.yml`` and ``*.xml`` files (not its subfolders'); a
    pattern (``*``, ``?``, ``[``; ``**`` recurses) gives the files it matches, sorted;
    a plain path is taken as it is (a missing one is then reported as that
    spec's error).  A file met twice is planned once.  Returns the paths, and an
    error result for each argument that matched nothing.
    """
    paths: list[str] = []
    seen: set[str] = set()
    unmatched: list[BatchResult] = []

    def add(p: str) -> None:
        key = os.path.abspath(p)  # spelt differently (./a.yaml, a.yaml), still one file
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for arg in args:
        if os.path.isdir(arg):
            with os.scandir(arg) as entries:
                found = sorted(os.path.join(arg, e.name) for e in entries
                               if e.name.endswith(SPEC_SUFFIXES) and e.is_file())
            if not found:
                unmatched.append(_error(arg, None, 2, f"{arg}: no *.yaml, *.yml or *.xml file in this folder"))
        elif glob.has_magic(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not found:
                unmatched.append(_error(arg, None, 2, f"{arg}: no file matches this pattern"))
        else:
            found = [arg]
        for p in found:
            add(p)
    return paths, unmatched


def exit_code(results: Iterable[BatchResult]) -> int:
    """The batch's exit code: the worst of its specs' (3 a bug > 2 bad input > 1 infeasible > 0)."""
    return max((r.code for r in results), default=0)


# -- one spec ----------------------------------------------------------------

_OPTIONS = BatchOptions()  # a worker's options, set by _init_worker
_CACHE: dict = {}  # a worker's cache: problem key -> Plan | InfeasibleError
CACHE_SIZE = 4096  # entries kept per process; the oldest go first


def _key(problem):
    """The problem with what only names the spec stripped: identical guests share it."""
    endpoints = tuple(replace(e, line=None) if e.line is not None else e for e in problem.endpoints)
    # a hotplug entry's line shows only in what its memory window says (windows.finish): keep it there
    headroom = tuple(replace(h, line=None) if h.windows == (0, 0) else h for h in problem.headroom)
    return replace(problem, name="", source="", endpoints=endpoints, headroom=headroom)


def _init_worker(options: BatchOptions, parent: int | None = None) -> None:
    global _OPTIONS, _CACHE
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; no traceback from every worker
    if parent is not None:
        _die_with(parent)
    _OPTIONS, _CACHE = options, {}


def _die_with(parent: int) -> None:
    """End this worker when the batch process ends, even by kill -9 (a pool's own cleanup never runs then).

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), through ctypes; the parent may have died before the call, so
    the parent's pid is checked after it.  Elsewhere a thread polls the parent's pid once a second."""
    import signal

    armed = False
    if sys.platform == "linux":
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)  # the batch is already gone
    if not armed:
        import threading

        def watch() -> None:
            import time

            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="topo-solve-parent-watch").start()


def _run_chunk(paths: list[str]) -> list[BatchResult]:
    return [_plan_one(p, _OPTIONS, _CACHE) for p in paths]


def _plan_one(path: str, options: BatchOptions, cache: dict) -> BatchResult:
    from .spec import DomainRequest, load_request

    request = None
    try:
        if path.endswith(".xml"):  # a domain XML template, planned for the batch's shared --hotplug
            result, text = _xml_template(path, options)
        else:
            request = load_request(path, options.target, host_sysfs=options.host_sysfs)
        if request is None:
            pass
        elif isinstance(request, DomainRequest):
            result, text = _extend_one(path, request, options)
        else:
            result, text = _new_guest(path, request, options, cache)
        if text is None:
            return result
        if options.outdir is None:
            return replace(result, xml=text if isinstance(text, str) else text.decode("utf-8", "replace"))
        output = os.path.join(options.outdir, Path(path).stem + ".xml")
        _write_new(output, text, options.force)
        return replace(result, output=output)
    except TopoSolveError as exc:  # bad input (SpecError), or an extension that needs moves
        status = "infeasible" if isinstance(exc, InfeasibleError) else "error"
        message = "\n".join(str(p) for p in exc.problems) if isinstance(exc, SpecError) else f"{path}: {exc.render()}"
        return replace(_error(path, request, exc.exit_code, message), status=status)
    except OSError as exc:  # not one the writer named (it turns its own into FileError)
        return _error(path, request, 2, f"{path}: {exc.filename or 'cannot read or write'}: {exc.strerror or exc}")
    except ProgrammingError as exc:
        return _error(path, request, 3, f"{path}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one spec's bug must not stop the batch
        return _error(path, request, 3, f"{path}: internal error (a bug in topo-solve, please report it): "
                                        f"{type(exc).__name__}: {exc}")


def _new_guest(path: str, problem, options: BatchOptions, cache: dict) -> tuple[BatchResult, str | None]:
    """Plan a new guest, or take the plan of an identical problem; the XML is always rendered for this spec."""
    from .domain.write import render_domain
    from .solve import solve

    if options.virt_type:
        problem = replace(problem, virt_type=options.virt_type)
    key = _key(problem)
    hit = cache.get(key)
    cached = hit is not None
    if hit is None:
        try:
            hit = solve(problem)
        except InfeasibleError as exc:
            hit = exc
        if len(cache) >= CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = hit
    base = dict(spec=path, name=problem.name, machine=problem.machine, cached=cached, target=_label(problem.target),
                requested={str(k): v for k, v in problem.requested().items()})
    if isinstance(hit, InfeasibleError):
        exc = _renamed(hit, problem.name)
        return BatchResult(status="infeasible", code=exc.exit_code, message=f"{path}: {exc.render()}", **base), None
    plan = replace(hit, problem=problem)
    return BatchResult(status="ok", code=0, message="\n".join(f"{path}: warning: {w}" for w in plan.warnings),
                       added=dict(sorted(plan.added.items())),
                       capacity={str(k): v for k, v in plan.capacity.items()}, **base), render_domain(plan)


def _renamed(exc: InfeasibleError, name: str) -> InfeasibleError:
    """The same explanation (causes, largest, hints, whatever the class carries) for another guest's name."""
    out = type(exc).__new__(type(exc))
    out.__dict__.update(exc.__dict__)
    out.name = name
    out.args = (out.render(),)
    return out


def _label(target) -> str:
    from .rules.versions import NEWEST

    return (target or NEWEST).label


def _extend_one(path: str, request, options: BatchOptions) -> tuple[BatchResult, str]:
    """A spec with 'domain': plan that guest with the spec's headroom, moving nothing (as `topo-solve SPEC`)."""
    from .files import read_input

    domain = str(request.domain)
    try:  # bounded like every input: `domain: /dev/zero` is refused, not read until memory runs out
        data = read_input(domain, MAX_DOMAIN_BYTES, "a libvirt domain XML")
    except SpecError as exc:
        raise SpecError([Finding(path, request.line, "domain", f"{domain}: {p.message}")
                         for p in exc.problems]) from None
    return _domain_result(path, domain, data, tuple(request.headroom), machine=request.machine,
                          machine_line=request.machine_line, target=request.target)


def _xml_template(path: str, options: BatchOptions) -> tuple[BatchResult, str]:
    from .files import read_input

    data = read_input(path, MAX_DOMAIN_BYTES, "a libvirt domain XML")
    return _domain_result(path, path, data, options.hotplug, right_size=options.right_size, cache=_CACHE,
                          target=options.target)


def _domain_result(path: str, domain: str, data: bytes, headroom, *, machine: str | None = None,
                   machine_line: int | None = None, right_size: bool = False, cache: dict | None = None,
                   target=None) -> tuple[BatchResult, str]:
    from .domain.plan import plan_document

    planned = plan_document(data, domain, headroom, machine=machine, spec=path, right_size=right_size,
                            surplus=False, cache=cache, target=target, machine_line=machine_line)
    ext = planned.extension
    added: dict[str, int] = {}
    for c in ext.added:
        added[c.model] = added.get(c.model, 0) + 1
    return BatchResult(spec=path, status="ok", code=0, name=planned.name, machine=planned.rules.family,
                       cached=planned.cached, target=_label(target),
                       added=dict(sorted(added.items())),
                       capacity={str(k): v for k, v in ext.capacity.items()},
                       requested={str(k): v for k, v in ext.requested.items()},
                       message="\n".join(f"{path}: warning: {w}" for w in ext.warnings)), planned.edit.data


def _error(path: str, request, code: int, message: str) -> BatchResult:
    """A spec that did not plan; ``request`` is what was read of it (a Problem, a DomainRequest or None)."""
    return BatchResult(spec=path, status="error", code=code, message=message,
                       name=getattr(request, "name", None), machine=getattr(request, "machine", None))


def _write_new(path: str, text: str, force: bool) -> None:
    """Write atomically; an existing file only with ``force`` (see :func:`topo_solve.files.write_output`),
    unless it holds exactly this text already: a batch killed and run again goes on where it stopped."""
    from .files import write_output

    write_output(path, text, force=force, identical_ok=True)


# -- many specs --------------------------------------------------------------

def plan_many(specs: Iterable[str | os.PathLike], workers: int | None = None, *,
              outdir: str | os.PathLike | None = None,
              force: bool = False, virt_type: str | None = None, hotplug: tuple = (),
              right_size: bool = False, target=None, on_wait=None,
              host_sysfs: str | None = None) -> Iterator[BatchResult]:
    """Plan every spec; yield a :class:`BatchResult` for each as it finishes.

    ``workers``: processes to use (default ``os.cpu_count()``; 1 plans in this
    process).  ``outdir``: write ``OUTDIR/<stem>.xml`` for each planned spec
    (created if missing); without it, each result carries its XML text instead.
    ``force``: replace existing output files.  ``virt_type``: override each
    spec's domain type.  ``hotplug`` (Headroom entries) and ``right_size``: how the
    domain XML templates among ``specs`` (``*.xml``) are planned.  ``target``: the libvirt and QEMU
    every spec is planned for (a :class:`~topo_solve.model.Target`; None: each spec's own target, the
    newest known for the XML templates).  ``host_sysfs``: read host devices' facts under this sysfs root
    (``--host-sysfs``).  Never raises for one
    spec's fault; it becomes that
    spec's result.  Raises :class:`SpecError` when OUTDIR cannot be created.

    With ``outdir``, the batch holds an advisory lock on OUTDIR until the last
    result is yielded: a second batch into the same folder waits for it (and
    calls ``on_wait()`` once when it has to), then finds the files written.

    The worker processes start in this call, not at the first ``next()``, so
    that the caller may start threads (a progress bar) after it; iterate the
    result to the end (or close it) to stop them.
    """
    paths = [os.fspath(p) for p in specs]
    out = None
    if outdir is not None:
        out = os.fspath(outdir)
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as exc:  # the whole batch's fault, not one spec's
            raise SpecError([Finding(out, None, "", f"cannot create the output folder: {exc.strerror}")]) from None
    options = BatchOptions(outdir=out, force=force, virt_type=virt_type, hotplug=tuple(hotplug),
                           right_size=right_size, target=target, host_sysfs=host_sysfs)
    todo: list[str] = []
    owner: dict[str, str] = {}
    duplicates: list[BatchResult] = []
    for p in paths:
        stem = Path(p).stem
        if out is not None and stem in owner:
            duplicates.append(_error(p, None, 2, f"{p}: its output {os.path.join(out, stem + '.xml')} is already "
                                                 f"that of {owner[stem]}; rename one of the specs"))
        else:
            owner[stem] = p
            todo.append(p)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    lock = None
    if out is not None:
        from .files import locked_folder

        lock = locked_folder(out, on_wait)
        lock.__enter__()
    try:
        results = _in_process(duplicates, todo, options) if workers == 1 else \
            _in_pool(duplicates, todo, workers, options)
    except BaseException:
        if lock is not None:
            lock.__exit__(None, None, None)
        raise
    return results if lock is None else _holding(lock, results)


def _holding(lock, results: Iterator[BatchResult]) -> Iterator[BatchResult]:
    """``results``, with ``lock`` released after the last one (or when the caller closes the iterator)."""
    try:
        yield from results
    finally:
        lock.__exit__(None, None, None)


def _in_process(first: list[BatchResult], paths: list[str], options: BatchOptions) -> Iterator[BatchResult]:
    yield from first
    cache: dict = {}
    for p in paths:
        yield _plan_one(p, options, cache)


def _chunks(paths: list[str], workers: int) -> list[list[str]]:
    # Small enough that the workers finish together and progress moves; large enough to amortise the round trip.
    size = max(1, min(MAX_CHUNK, math.ceil(len(paths) / (workers * 8))))
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def _in_pool(first: list[BatchResult], paths: list[str], workers: int,
             options: BatchOptions) -> Iterator[BatchResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers inherit the modules imported here instead of importing them again.  Safe because the
    # pool starts all its processes at the first submit, which happens here, before the caller starts any thread.
    ctx = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    if ctx is not None:
        from . import solve, spec  # noqa: F401 - imported for the workers to inherit
        from .domain import plan, write  # noqa: F401
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(options, os.getpid()))
    pending = {pool.submit(_run_chunk, chunk): chunk for chunk in _chunks(paths, workers)}
    return _collect(first, pool, pending)


def _collect(first: list[BatchResult], pool, pending: dict) -> Iterator[BatchResult]:
    from concurrent.futures import FIRST_COMPLETED, wait

    try:
        yield from first
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                chunk = pending.pop(fut)
                try:
                    results = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory)
                    results = [_error(p, None, 3, f"{p}: internal error (a bug in topo-solve, please report it): "
                                                  f"the worker process failed: {type(exc).__name__}: {exc}")
                               for p in chunk]
                yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- what the command line shows ---------------------------------------------

def _capacity_text(r: BatchResult) -> str:
    return " ".join(f"{c} {r.capacity[c]}/{r.requested.get(c, 0)}" for c in r.capacity)


def summary_table(results: list[BatchResult]) -> str:
    """One row per spec: spec, machine, controllers added, capacity/requested, status."""
    rows = [("spec", "machine", "added", "capacity/requested", "status")]
    for r in results:
        added = ", ".join(f"{n} {m}" for m, n in r.added.items()) or ("nothing" if r.status == "ok" else "-")
        status = r.status + (" (cached)" if r.cached else "")
        rows.append((r.spec, r.machine or "-", added, _capacity_text(r) or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4] for row in rows) + "\n"


def targets_line(results: list[BatchResult]) -> str:
    """Which libvirt and QEMU the specs were planned for: 'target: libvirt 11.3 + QEMU 10.0 (5 specs)'."""
    count: dict[str, int] = {}
    for r in results:
        if r.target is not None:
            count[r.target] = count.get(r.target, 0) + 1
    if not count:
        return ""
    parts = [f"{t} ({n} spec{'' if n == 1 else 's'})" for t, n in sorted(count.items(), key=lambda kv: -kv[1])]
    return f"target{'s' if len(parts) > 1 else ''}: {', '.join(parts)}\n"


def totals(results: list[BatchResult], seconds: float) -> dict:
    count = {s: sum(r.status == s for r in results) for s in STATUSES}
    solved = sum(r.status in ("ok", "infeasible") and not r.cached for r in results)
    return {"specs": len(results), **count, "solved": solved,
            "cached": sum(r.cached for r in results), "seconds": round(seconds, 3),
            "exit_code": exit_code(results)}


def totals_line(t: dict) -> str:
    rate = f" ({t['specs'] / t['seconds']:.0f} specs/s)" if t["seconds"] > 0 and t["specs"] else ""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return (f"{n(t['specs'], 'spec')}: {t['ok']} planned, {t['infeasible']} infeasible, {n(t['error'], 'error')}; "
            f"{n(t['solved'], 'problem')} solved, {t['cached']} from cache; {t['seconds']:.1f} s{rate}")


def report_json(results: list[BatchResult], seconds: float) -> str:
    """The ``--report`` file: the totals, then every spec's result in input order, one per line."""
    import json

    head = json.dumps(totals(results, seconds), indent=2)[:-2]  # without the closing brace
    rows = ",\n".join("    " + json.dumps(r.to_json()) for r in results)  # the C encoder: no indent
    return f'{head},\n  "results": [\n{rows}\n  ]\n}}\n' if rows else f'{head},\n  "results": []\n}}\n'
