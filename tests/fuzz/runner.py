"""Run ``topo_solve.cli.main(argv)`` in a forked child and measure what it cost.

A fork per input keeps the speed of an in-process call (the modules are already
imported) and isolates each input: a memory bomb, an endless loop or a crash of
one input cannot take the test process down, and every measurement is the
input's own:

* **CPU**: ``time.process_time()`` around ``main()`` in the child (user + system
  time of that call only; the wall clock is recorded as well, but the machine is
  shared, so the 2 s bound is on CPU time).
* **Memory**: the child resets its peak resident set (``/proc/self/clear_refs``,
  value 5) after the fork, then reports ``VmHWM - VmRSS`` at the start: the
  largest growth of its resident memory while it ran, C allocations (libxml2,
  libyaml) included, which ``tracemalloc`` would not see.  Where
  ``clear_refs`` cannot be written, the peak of ``tracemalloc`` is used instead
  (and ``Outcome.memory_method`` says so).
* **Limits**: the child has ``RLIMIT_CPU`` (a runaway input ends with SIGXCPU)
  and ``RLIMIT_AS`` (its address space at start plus ``mem_limit_mb``); the
  parent kills it after ``wall_limit`` seconds.

stdout and stderr of the child go to files (fd 1 and 2 themselves, so what is
written to ``/dev/stdout`` is caught too), read back into the :class:`Outcome`.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["Outcome", "run_cli"]

MAX_CAPTURE = 256 * 1024  # of each stream, kept in the Outcome


@dataclass
class Outcome:
    argv: list[str]
    code: int | None  # the exit code main() gave; None if the child died
    stdout: str = ""
    stderr: str = ""
    cpu: float = 0.0  # seconds of CPU in main()
    wall: float = 0.0
    memory_mb: float = 0.0  # peak growth of the resident set while main() ran
    memory_method: str = "rss"
    died: str | None = None  # "signal 9", "wall timeout", ...
    extra: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _child(argv: list[str], stdin_path: str | None, out_path: str, err_path: str, result_fd: int,
           cpu_limit: float, mem_limit_mb: int, cwd: str | None) -> None:
    # stdio: fds 1 and 2 to files, fd 0 from a file or /dev/null; Python's streams on top of them
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    in_fd = os.open(stdin_path or os.devnull, os.O_RDONLY)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.dup2(in_fd, 0)
    for fd in (out_fd, err_fd, in_fd):
        os.close(fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    if cwd:
        os.chdir(cwd)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    method = "rss"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
    except OSError:
        method = "tracemalloc"
    rss0 = _status_kb("VmRSS") or 0
    vsize = _status_kb("VmSize")
    soft_cpu = max(1, int(cpu_limit))
    resource.setrlimit(resource.RLIMIT_CPU, (soft_cpu, soft_cpu + 5))
    if vsize is not None:
        limit = (vsize + mem_limit_mb * 1024) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if method == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
    from topo_solve.cli import main

    code: int | None
    t0, w0 = time.process_time(), time.perf_counter()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - escaped main(): the worst kind of bug; show it
        import traceback

        traceback.print_exc()
        code = 99
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    if method == "tracemalloc":
        import tracemalloc

        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    else:
        peak_mb = max(0, (_status_kb("VmHWM") or rss0) - rss0) / 1024
    os.write(result_fd, json.dumps({"code": code, "cpu": cpu, "wall": wall, "memory_mb": peak_mb,
                                    "memory_method": method}).encode())
    os.close(result_fd)
    os._exit(0)


def run_cli(argv: list[str], *, stdin_path: str | None = None, cwd: str | None = None, cpu_limit: float = 20,
            wall_limit: float = 60, mem_limit_mb: int = 2048) -> Outcome:
    """Run the CLI on ``argv`` in a forked child; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="topo-fuzz-io-") as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        r, w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        pid = os.fork()
        if pid == 0:  # the child never returns
            try:
                os.close(r)
                _child(argv, stdin_path, out_path, err_path, w, cpu_limit, mem_limit_mb, cwd)
            finally:
                os._exit(97)
        os.close(w)
        start = time.monotonic()
        died = None
        status = 0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > wall_limit:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                died = "wall timeout"
                break
            time.sleep(0.002)
        wall = time.monotonic() - start
        with os.fdopen(r, "rb") as f:
            raw = f.read()
        if died is None and os.WIFSIGNALED(status):
            died = f"signal {os.WTERMSIG(status)}"
        elif died is None and os.WEXITSTATUS(status) != 0:
            died = f"child exit {os.WEXITSTATUS(status)}"

        def read(path: str) -> str:
            try:
                with open(path, "rb") as f:
                    return f.read(MAX_CAPTURE).decode("utf-8", "backslashreplace")
            except OSError:
                return ""

        out = Outcome(argv=list(argv), code=None, stdout=read(out_path), stderr=read(err_path), wall=wall, died=died)
        if raw:
            info = json.loads(raw)
            out.code, out.cpu, out.wall = info["code"], info["cpu"], info["wall"]
            out.memory_mb, out.memory_method = info["memory_mb"], info["memory_method"]
        return out
