"""Versions as data: the libvirt and QEMU a row of the tables holds for, and the targets.

A row of the rule tables (a device model, its hotplug, a device libvirt adds at define, a
default it fills in, a controller) carries a :class:`Range`: from which version of each
component on it holds (``since``) and from which on it no longer does (``until``).  Each
boundary is a :class:`Bound` naming its source.  When the first version is not known, the
bound gives the newest version known to behave the old way and the oldest known to behave
the new way instead (what was measured); a target between the two gets no answer (None),
and each use of the row says what that means (a device is then not offered, a default must
be written out).

:func:`topo_solve.rules.rules_for` selects the rows for a :class:`~topo_solve.model.Target`;
nothing else in topo-solve compares version numbers.

Standard library only: the CLI parses ``--target`` with it before anything heavy is loaded.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..model import Target

__all__ = ["Bound", "Range", "ALWAYS", "Alias", "ALIASES", "NEWEST", "OLDEST", "parse_version", "parse_target",
           "target_from", "check_floor", "COMPONENTS"]

Version = tuple[int, int]
COMPONENTS = ("libvirt", "qemu")
_NAMES = {"libvirt": "libvirt", "qemu": "QEMU"}


def _v(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


@dataclass(frozen=True)
class Bound:
    """One component's boundary: from ``first`` on, the new behaviour.

    ``first`` None: the first version is not known; ``old`` is the newest version known to
    behave the old way, ``new`` the oldest known to behave the new way (either may be None:
    nothing known on that side)."""

    component: str  # "libvirt" or "qemu"
    first: Version | None
    source: str
    old: Version | None = None
    new: Version | None = None
    # ``first`` is known to change it, but what the new behaviour is was not read: from it on, not known
    unknown_from: bool = False

    def side(self, target: Target) -> bool | None:
        """True: the target behaves the new way; False: the old way; None: not known."""
        v = target.version(self.component)
        if self.first is not None:
            if self.unknown_from and v >= self.first:
                return None
            return v >= self.first
        if self.old is not None and v <= self.old:
            return False
        if self.new is not None and v >= self.new:
            return True
        return None

    @property
    def name(self) -> str:
        return _NAMES[self.component]

    def after(self) -> str:
        """'QEMU 8.0 or later', or what was measured when the first version is not known."""
        if self.first is not None:
            return f"{self.name} {_v(self.first)} or later"
        if self.new is None:
            return f"{self.name} later than {_v(self.old)} (the first version is not known)"
        known = f"{_v(self.old)} does not, {_v(self.new)} does" if self.old else f"{_v(self.new)} does"
        return f"{self.name} {_v(self.new)} or later ({known}; the versions between are not known)"

    def before(self) -> str:
        if self.first is not None and self.unknown_from:
            return f"{self.name} before {_v(self.first)} ({_v(self.first)} changed it, to what is not known here)"
        if self.first is not None:
            return f"{self.name} before {_v(self.first)}"
        if self.old is None:
            return f"{self.name} before {_v(self.new)} (the last version is not known)"
        known = f"{_v(self.old)} does, {_v(self.new)} does not" if self.new else f"{_v(self.old)} does"
        return (f"{self.name} {_v(self.old)} or earlier ({known}; the versions after {_v(self.old)} are not "
                "known)")


@dataclass(frozen=True)
class Range:
    """Where a row holds: every ``since`` bound on its new side, every ``until`` bound on its old side."""

    since: tuple[Bound, ...] = ()
    until: tuple[Bound, ...] = ()

    @property
    def always(self) -> bool:
        return not self.since and not self.until

    def holds(self, target: Target) -> bool | None:
        """True or False for the target; None when a bound is not known there (a False wins)."""
        results = [b.side(target) for b in self.since]
        results += [None if s is None else not s for s in (b.side(target) for b in self.until)]
        if False in results:
            return False
        if None in results:
            return None
        return True

    def unmet(self, target: Target) -> list[Bound]:
        """The bounds the target is not known to meet."""
        return [b for b in self.since if b.side(target) is not True] + \
            [b for b in self.until if b.side(target) is not False]

    def needs(self, target: Target) -> str:
        """What the target lacks, in words: 'QEMU 8.0 or later'."""
        out = [b.after() for b in self.since if b.side(target) is not True]
        out += [b.before() for b in self.until if b.side(target) is not False]
        return " and ".join(out)

    def explain(self, what: str, target: Target) -> str:
        """One clear sentence: 'igb needs QEMU 8.0 or later; the target is QEMU 7.2'."""
        unmet = self.unmet(target)
        components = [c for c in COMPONENTS if any(b.component == c for b in unmet)]
        has = " + ".join(f"{_NAMES[c]} {_v(target.version(c))}" for c in components)
        return f"{what} needs {self.needs(target)}; the target is {has}"

    def sources(self) -> list[str]:
        return [b.source for b in self.since + self.until]

    def describe(self) -> str:
        """The range in words, for tables: 'QEMU 8.0 or later'."""
        parts = [b.after() for b in self.since] + [b.before() for b in self.until]
        return " and ".join(parts) or "every version"


ALWAYS = Range()


def since(component: str, first: Version, source: str) -> Bound:
    return Bound(component, first, source)


# -- targets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alias:
    """A distribution's libvirt and QEMU, with where the versions were read."""

    name: str
    libvirt: Version
    qemu: Version
    source: str
    measured: bool = False  # one of the judges: the tests run against exactly these versions

    @property
    def target(self) -> Target:
        return Target(self.libvirt, self.qemu, alias=self.name)


_ALIASES = (
    Alias("debian-12", (9, 0), (7, 2), "Debian 12 bookworm: libvirt 9.0.0-4+deb12u2, qemu 1:7.2+dfsg-7+deb12u18 "
          "(the first judge; `virsh version --daemon`)", measured=True),
    Alias("debian-13", (11, 3), (10, 0), "Debian 13 trixie: libvirt 11.3.0-3+deb13u3, qemu 1:10.0.13+ds-0+deb13u1 "
          "(the second judge; `virsh version --daemon`)", measured=True),
    Alias("ubuntu-24.04", (10, 0), (8, 2), "packages.ubuntu.com, noble: libvirt-daemon-driver-qemu "
          "10.0.0-2ubuntu8, qemu-system-misc 1:8.2.2+ds-0ubuntu1"),
    Alias("ubuntu-25.10", (11, 6), (10, 1), "packages.ubuntu.com, questing: libvirt-daemon 11.6.0-1ubuntu3, "
          "qemu-system-x86 1:10.1.0+ds-5ubuntu2"),
    Alias("fedora-42", (11, 0), (9, 2), "packages.fedoraproject.org, Fedora 42: libvirt-daemon-driver-qemu "
          "11.0.0-1.fc42, qemu 9.2.4-2.fc42"),
    Alias("fedora-43", (11, 6), (10, 1), "packages.fedoraproject.org, Fedora 43: libvirt-daemon-driver-qemu "
          "11.6.0-1.fc43, qemu 10.1.0-7.fc43"),
)
ALIASES: Mapping[str, Alias] = MappingProxyType({a.name: a for a in _ALIASES})

# The default target: the newest versions the tables were measured on (the second judge).
NEWEST = Target((11, 3), (10, 0), origin="default: newest known")
# The oldest versions the tables describe (the first judge): every row was measured there or
# later, and nothing older is planned for.
OLDEST = Target((9, 0), (7, 2), alias="debian-12")


def parse_version(raw: object, component: str) -> Version:
    """'9.0', '11.3.0' or '10' -> (major, minor); ValueError says what is accepted."""
    name = _NAMES.get(component, component)
    if isinstance(raw, float):
        raise ValueError(f"{name} version {raw!r} is written as a number, and YAML drops a trailing zero (10.10 "
                         f"reads as 10.1); write the version in quotes, e.g. \"{raw}\"")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ValueError(f"{name} version must be a string like \"9.0\", not {type(raw).__name__}")
    text = str(raw).strip()
    m = re.fullmatch(r"([0-9]{1,3})(?:\.([0-9]{1,3}))?(?:\.[0-9]{1,4})?", text)
    if not m:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise ValueError(f"'{shown}' is not a {name} version; write MAJOR.MINOR, e.g. \"9.0\"")
    return int(m.group(1)), int(m.group(2) or 0)


def check_floor(target: Target) -> None:
    """ValueError when the target is older than the tables go."""
    old = [c for c in COMPONENTS if target.version(c) < OLDEST.version(c)]
    if old:
        has = " + ".join(f"{_NAMES[c]} {_v(target.version(c))}" for c in old)
        raise ValueError(f"the rule tables start at {OLDEST.label} (the oldest judge, measured); {has} is older, "
                         "and topo-solve does not plan for it")


def target_from(value: object, origin: str = "") -> Target:
    """A target from an alias name, ``libvirt=X.Y,qemu=X.Y``, or a mapping {libvirt:, qemu:}."""
    if isinstance(value, Target):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in COMPONENTS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; a target names libvirt and qemu")
        missing = [c for c in COMPONENTS if c not in value]
        if missing:
            raise ValueError(f"give both libvirt and qemu (missing: {', '.join(missing)}), e.g. "
                             "{libvirt: \"9.0\", qemu: \"7.2\"}, or an alias: " + ", ".join(ALIASES))
        t = Target(parse_version(value["libvirt"], "libvirt"), parse_version(value["qemu"], "qemu"), origin=origin)
    elif isinstance(value, str):
        text = value.strip()
        if "=" in text:
            parts = {}
            for part in text.split(","):
                key, sep, v = part.partition("=")
                if not sep:
                    raise ValueError(f"'{part.strip()}' is not COMPONENT=VERSION; write libvirt=X.Y,qemu=X.Y")
                parts[key.strip()] = v.strip()
            return target_from(parts, origin)
        alias = ALIASES.get(text.lower())
        if alias is None:
            guess = difflib.get_close_matches(text.lower(), list(ALIASES), n=1)
            raise ValueError(f"unknown target '{text[:40]}'; " + (f"did you mean '{guess[0]}'? " if guess else "")
                             + f"known: {', '.join(ALIASES)}, or libvirt=X.Y,qemu=X.Y")
        t = Target(alias.libvirt, alias.qemu, alias=alias.name, origin=origin)
    else:
        raise ValueError("a target is an alias (" + ", ".join(ALIASES) + ") or {libvirt: \"X.Y\", qemu: \"X.Y\"}")
    check_floor(t)
    return t


def parse_target(text: str, origin: str = "--target") -> Target:
    """``--target``: an alias or ``libvirt=X.Y,qemu=X.Y``."""
    return target_from(text, origin)
