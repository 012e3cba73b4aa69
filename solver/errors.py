"""Exceptions of topo-solve.

Every error a user can cause is a :class:`TopoSolveError` whose class knows the
process exit code (the way click's exceptions do): 2 for bad input or usage, 1
for a spec that no layout can satisfy.  A :class:`ProgrammingError` is a bug in
topo-solve itself (a rule table that contradicts itself, a plan that fails its
own verification) and says so, so users know to report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "TopoSolveError",
    "SpecError",
    "Finding",
    "InfeasibleError",
    "Cause",
    "ProgrammingError",
    "FileError",
    "OutputExists",
    "EnvironmentFault",
    "NoRoom",
]


class TopoSolveError(Exception):
    """Base class of every error topo-solve reports to a user."""

    exit_code: ClassVar[int] = 2

    def render(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Finding:
    """One problem in an input file: where it is and what to do about it."""

    file: str
    line: int | None
    path: str  # field path such as "devices[2].model"; "" for the whole file
    message: str
    column: int | None = None  # 1-based, when the reader knows it (YAML syntax, a bad character)

    def __str__(self) -> str:
        where = _printable(self.file) if self.line is None else f"{_printable(self.file)}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"  # FILE:LINE:COLUMN, as compilers write it and editors read it
        field_ = f" {_printable(self.path)}:" if self.path else ""
        return f"{where}:{field_} {_printable(self.message)}"


def _printable(text: str) -> str:
    """Control characters from the input (a newline in a name, a NUL in a path) written as escapes: one
    problem stays one line, and nothing reaches the terminal that it would act on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class SpecError(TopoSolveError):
    """A spec or domain file is wrong; carries every problem found, not just the first."""

    exit_code: ClassVar[int] = 2

    def __init__(self, problems: list[Finding]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FileError(TopoSolveError):
    """A file cannot be written (or read): a fault of the environment, not of the input (exit 2)."""

    exit_code: ClassVar[int] = 2

    def __init__(self, path: str, reason: str, verb: str = "write"):
        self.path, self.reason, self.verb = path, reason, verb
        super().__init__(self.render())

    def render(self) -> str:
        return f"cannot {self.verb} {self.path}: {self.reason}"


class OutputExists(FileError):
    """The output exists and replacing it was not asked for."""

    def __init__(self, path: str):
        super().__init__(path, "it exists")

    def render(self) -> str:
        return f"{self.path} exists; pass --force to replace it"


@dataclass(frozen=True)
class Cause:
    """Why a spec cannot be satisfied: the binding limit, in the user's words.

    ``needed`` and ``limit`` are the two numbers that collide; ``hint`` says what
    to change.
    """

    what: str
    needed: int
    limit: int
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.what}: needs {self.needed}, but {self.reason} (limit {self.limit})"
        return text + (f"; {self.hint}" if self.hint else "")


class InfeasibleError(TopoSolveError):
    """No layout satisfies the spec; ``causes`` say which limits bind."""

    exit_code: ClassVar[int] = 1

    def __init__(self, name: str, causes: list[Cause], largest: dict[str, int] | None = None,
                 hints: list[str] | None = None):
        self.name = name
        self.causes = list(causes)
        self.largest = dict(largest or {})
        self.hints = list(hints or [])
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"no PCI layout of guest '{self.name}' satisfies the spec"]
        for i, cause in enumerate(self.causes, 1):
            lines.append(f"  {i}. because {cause}")
        others = len(self.largest) > 1
        for key, n in self.largest.items():
            cls, _, node = key.partition(" on ")
            lines.append(f"  at most {n} {cls} hotplug slots fit" + (f" on {node}" if node else "")
                         + " next to these devices" + (" (the rest as asked)" if others else ""))
        lines += [f"  hint: {h}" for h in self.hints]
        return "\n".join(lines)


class EnvironmentFault(TopoSolveError):
    """The environment failed: libvirt cannot be reached, a guest does not exist, libvirt refused
    a change.  One line, with libvirt's own reason."""

    exit_code: ClassVar[int] = 2

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class NoRoom(TopoSolveError):
    """A running guest has no free position left for a device (its hotplug capacity is used up)."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


@dataclass
class ProgrammingError(Exception):
    """A bug in topo-solve, never the user's fault."""

    message: str
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        extra = "".join(f"\n  - {d}" for d in self.details)
        return f"programming error (please report it): {self.message}{extra}"
