"""Guests of a libvirt host, read and changed through ``virsh``: the live side of topo-solve.

The running guest is the truth at hotplug time: its live XML (``virsh dumpxml``)
has every device hotplugged since it started, and its definition (``virsh dumpxml
--inactive``) what it will be at its next start.  This module reads both, and
defines a changed definition only when the one that was read is still the one
libvirt has (another tool may have changed the guest meanwhile).

``virsh`` is the only way in (:class:`topo_solve.hypervisor.Virsh`): no
libvirt-python, so topo-solve installs from PyPI without compiling anything.
Every failure of virsh becomes an :class:`~topo_solve.errors.EnvironmentFault`
carrying libvirt's own message (exit code 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EnvironmentFault
from .hypervisor import DEFAULT_URI, Virsh, VirshError

__all__ = ["Guest", "Host", "resolve_uri"]

# libvirt's own variable for the default connection (virsh, virt-install and virt-xml read it too)
URI_ENV = "LIBVIRT_DEFAULT_URI"

# `virsh domstate` words for a guest with no QEMU process: its live XML is its definition
_INACTIVE_STATES = ("shut off",)


def resolve_uri(given: str | None) -> str:
    """The connection to use: the one given, else LIBVIRT_DEFAULT_URI, else qemu:///system."""
    return given or os.environ.get(URI_ENV) or DEFAULT_URI


@dataclass(frozen=True)
class Guest:
    """One guest as libvirt has it now.

    ``xml`` is what ``virsh dumpxml`` prints: the live XML of a running guest, the
    definition of one that is shut off.  ``definition`` is the persistent definition
    (``--inactive``), what the guest becomes at its next start."""

    name: str
    uri: str
    state: str
    xml: str
    definition: str

    @property
    def running(self) -> bool:
        return self.state not in _INACTIVE_STATES

    def label(self) -> str:
        """How messages name it: ``web-01 on qemu:///system``."""
        return f"{self.name} on {self.uri}"


class Host:
    """The guests behind one libvirt connection URI."""

    def __init__(self, uri: str | None = None, *, timeout: float = 60):
        self.uri = resolve_uri(uri)
        self.virsh = Virsh(self.uri, timeout=timeout)

    def _run(self, *args: str, what: str) -> str:
        try:
            return self.virsh.run(*args)
        except VirshError as exc:
            raise EnvironmentFault(f"{self.uri}: {what}: {exc.message}") from None

    def names(self) -> list[str]:
        """Every guest, running or not, by name (sorted)."""
        out = self._run("list", "--all", "--name", what="cannot list the guests")
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    def guest(self, name: str, *, secure: bool = False) -> Guest:
        """Read ``name``: its state, live XML and definition.  ``secure`` keeps what libvirt
        hides by default (graphics passwords): needed for XML that will be defined again."""
        state = self._run("domstate", name, what=f"guest '{name}'").strip()
        flags = ["--security-info"] if secure else []
        definition = self._run("dumpxml", name, "--inactive", *flags, what=f"guest '{name}'")
        xml = definition if state in _INACTIVE_STATES else self._run("dumpxml", name, *flags,
                                                                     what=f"guest '{name}'")
        return Guest(name, self.uri, state, xml, definition)

    def define_unchanged(self, guest: Guest, new_xml: bytes) -> None:
        """Define ``new_xml`` as ``guest``'s new definition, but only if libvirt's definition is
        still the one ``guest`` was read with.  (libvirt has no compare-and-define: the check runs
        just before the define, which leaves a window of one virsh call.)"""
        now = self._run("dumpxml", guest.name, "--inactive", "--security-info", what=f"guest '{guest.name}'")
        if now != guest.definition:
            raise EnvironmentFault(f"{self.uri}: guest '{guest.name}' was changed since topo-solve read it "
                                   "(its definition is not the one the plan was made from); nothing was defined: "
                                   "run the command again")
        try:
            self.virsh.define(new_xml.decode("utf-8"))
        except VirshError as exc:
            raise EnvironmentFault(f"{self.uri}: libvirt refused the new definition of '{guest.name}': "
                                   f"{exc.message}") from None

    def attach(self, name: str, device_xml: str, *, live: bool, config: bool) -> None:
        """``virsh attach-device NAME FILE --live/--config``; VirshError (libvirt's reason) on refusal."""
        self.virsh.attach_device(name, device_xml, live=live, config=config)
