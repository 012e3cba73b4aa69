"""Known, open faults the fuzzer meets: each with its reason, the code it lives in and how to recognise it.

A problem that matches one of these is reported by a fuzz run but does not fail it.  Every
entry has a deterministic reproduction: in ``tests/test_known_faults.py`` marked
``xfail(strict=True)`` (when the fault is fixed that test passes unexpectedly, fails the
suite, and both the mark and the entry here are removed), or, for the faults that are a
matter of time (the project keeps timings out of unit tests), in
``benchmarks/bench_known_faults.py``, which exits 1 while any of them takes more than 2 s
of CPU.  Keep this list short: a new kind of failure is a bug to fix, not an entry to add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["Known", "KNOWN", "classify"]


@dataclass(frozen=True)
class Known:
    id: str
    reason: str
    where: str  # the module that has to change
    matches: Callable[[object, bytes, str], bool]  # (problem, input bytes, "spec" | "xml")


def _exit3(text: str) -> Callable[[object, bytes, str], bool]:
    return lambda p, data, kind: p.kind == "exit3" and text in p.detail


def _element_count(data: bytes) -> int:
    return len(re.findall(rb"<[A-Za-z_]", data))


KNOWN: list[Known] = [
    Known("slow-explanation",
          "explaining why a large request is infeasible (extend of a big guest, several classes at their limits) "
          "takes seconds where the bounds would say it at once",
          "solver/solve.py, solver/extend.py (_largest)",
          lambda p, data, kind: p.kind == "slow" and p.detail.endswith("exit 1")),
]


def classify(problems: list, data: bytes, kind: str) -> list:
    """Mark each problem that matches a known fault (``problem.known = id``); returns the list."""
    for p in problems:
        for k in KNOWN:
            if k.matches(p, data, kind):
                p.known = k.id
                break
    return problems
