"""Where libvirt or QEMU versions change what a PCI planner may promise: the table the
version-difference tests (tests/test_judges.py) read their expectations from.

Each fact names the component(s) whose version decides it and, for each, the first version
that has it with the source of that boundary.  When the first version is not known, the row
gives the versions measured without and with it instead, and a judge between the two has no
expectation (its test skips with that reason).

Measured here: "libvirt 9.0 + QEMU 7.2" (Debian 12) and "libvirt 11.3 + QEMU 10.0" (Debian 13),
the two judges of tests/libvirt_fixtures.py; the facts' "measured" notes are what those judges
did (../shared research notes: libvirt-11.md section 7).

When the rule tables carry version ranges (solver/rules, issue 13 part 1), these rows belong
there and the tests should read them from the tables instead of from here.
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, int]


@dataclass(frozen=True)
class Bound:
    """One component's version boundary of a fact."""

    component: str                 # "libvirt" or "qemu"
    since: Version | None = None   # the first version that has it
    without: Version | None = None  # when `since` is unknown: the newest version measured without it
    with_: Version | None = None   # ... and the oldest measured with it

    def holds(self, version: tuple[int, ...]) -> bool | None:
        v = tuple(version[:2])
        if self.since is not None:
            return v >= self.since
        if self.without is not None and v <= self.without:
            return False
        if self.with_ is not None and v >= self.with_:
            return True
        return None

    def __str__(self) -> str:
        name = "libvirt" if self.component == "libvirt" else "QEMU"
        if self.since is not None:
            return f"{name} >= {self.since[0]}.{self.since[1]}"
        parts = []
        if self.without is not None:
            parts.append(f"not in {name} {self.without[0]}.{self.without[1]}")
        if self.with_ is not None:
            parts.append(f"in {name} {self.with_[0]}.{self.with_[1]}")
        return f"{' and '.join(parts)} (first version unknown)"


@dataclass(frozen=True)
class Fact:
    what: str
    needs: tuple[Bound, ...]
    source: str

    def holds(self, versions) -> bool | None:
        """True/False for a judge's ``hv.Versions``; None when a needed bound is unknown there.

        False wins over None: one component known to be too old decides it.
        """
        results = [b.holds(versions.libvirt if b.component == "libvirt" else versions.qemu)
                   for b in self.needs]
        if False in results:
            return False
        if None in results:
            return None
        return True

    def requirement(self) -> str:
        return " and ".join(map(str, self.needs))


FACTS: dict[str, Fact] = {
    "igb": Fact(
        "the igb NIC (emulated Intel 82576, a PCIe endpoint): starts and hotplugs",
        (Bound("qemu", since=(8, 0)),),
        "QEMU 8.0 added the igb device (qemu docs/system/devices/igb.rst @ 28ea66f6f985); libvirt's NEWS "
        "v9.3.0 adds the igb model and names QEMU 8.0 as its origin. libvirt 9.0 passes the unknown model "
        "through to QEMU, so the QEMU version decides. Measured: QEMU 7.2 refuses \"'igb' is not a valid "
        "device model name\" at start and at hotplug; QEMU 10.0 starts and hotplugs it.",
    ),
    "virtio-serial-hotplug": Fact(
        "hotplug of a virtio-serial controller",
        (Bound("libvirt", without=(9, 0), with_=(11, 3)),),
        "Measured: libvirt 9.0 refuses \"'virtio-serial' controller cannot be hot plugged.\" "
        "(qemuDomainAttachControllerDevice took SCSI controllers only); libvirt 11.3 hotplugs it onto a "
        "free PCIe slot. libvirt's NEWS from 9.1 to 11.3 does not name the change, so the first version "
        "that accepts it is not known here.",
    ),
    "itco-watchdog": Fact(
        "q35 guests get `<watchdog model='itco'/>` at define (no PCI address)",
        (Bound("libvirt", since=(9, 1)),),
        "libvirt NEWS v9.1.0, 'QEMU: iTCO watchdog made operational': the ICH9 TCO watchdog of q35 is "
        "configured by default (that the <watchdog> element appears with it is an inference from the "
        "measurements). Measured: 9.0 writes no watchdog; 11.3 adds <watchdog model='itco' "
        "action='reset'/> to every q35 guest, pc-q35-7.2 ones included.",
    ),
    "virtio-sound": Fact(
        "`<sound model='virtio'/>` (a PCIe virtio device)",
        (Bound("libvirt", since=(10, 4)), Bound("qemu", since=(8, 2))),
        "libvirt NEWS v10.4.0: virtio sound model, needs QEMU 8.2 (virtio-sound-pci). Measured: "
        "libvirt 9.0 refuses \"Invalid value for attribute 'model' in element 'sound': 'virtio'\"; 11.3 "
        "places it behind a pcie-root-port and QEMU 10.0 starts it.",
    ),
    "nvme-disk": Fact(
        "NVMe disks (`<target bus='nvme'/>`)",
        (Bound("libvirt", since=(11, 5)),),
        "libvirt NEWS v11.5.0: NVMe disk bus. Neither judge has it: both refuse \"Invalid value for "
        "attribute 'bus' in element 'target': 'nvme'\".",
    ),
}
