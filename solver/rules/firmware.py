"""What the guest firmware does with the layout: facts measured from inside a guest.

One row per firmware and machine family.  The numbers are measurements, not
estimates: tests/test_guest_measure.py boots a Linux guest (Debian 12's kernel
6.1) under libvirt 9.0 + QEMU 7.2 with each firmware and checks every number
here again (it fails when one changes).  docs/conformance.md, "Seen from the
guest", has the details.

``io_ports``: how many ports (root ports, switch downstream ports) with an
I/O-BAR device behind them the firmware gives an I/O window, with every BAR of
every device assigned.  ``past_io_ports`` says what one more does.
``io_ports_os``: how many such ports still leave every BAR of every device
(the chipset's included) assigned once Linux 6.1 has reassigned what the
firmware left (the same as ``io_ports`` where the firmware stops the boot).
``port_mem`` and ``port_pref``: the memory and prefetchable windows, in bytes,
the firmware gives an empty root port or pcie-to-pci-bridge at boot when it has
no resource reservation (QEMU's ``mem-reserve``/``pref64-reserve``, libvirt
10.3's ``memReserve``): the BARs of a device hotplugged later must fit in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Firmware", "FIRMWARES", "KINDS", "firmware", "of_kind"]

# What a domain says its firmware is (libvirt's <os firmware='...'>, or a <loader> of that kind)
KINDS = ("bios", "efi")

_MEASURED = "tests/test_guest_measure.py (libvirt 9.0, QEMU 7.2, Linux 6.1 guest)"


@dataclass(frozen=True)
class Firmware:
    name: str  # the firmware measured: seabios (x86's BIOS) or ovmf (x86's UEFI)
    kind: str  # the KINDS entry a spec or a domain gives for it
    family: str  # machine family the row was measured on
    version: str  # the package measured
    io_ports: int
    past_io_ports: str
    io_ports_os: int
    port_mem: int
    port_pref: int
    source: str


_rows = [
    Firmware(
        "seabios", "bios", "q35", "seabios 1.16.2-1 (Debian 12)",
        io_ports=14,
        past_io_ports="SeaBIOS stops with 'PCI: out of I/O address space': the guest does not boot",
        io_ports_os=14,
        port_mem=2 << 20,
        port_pref=2 << 20,
        source=_MEASURED + ": test_io_windows[seabios], test_bridge_window_sizes[seabios]",
    ),
    Firmware(
        "ovmf", "efi", "q35", "ovmf 2022.11-6+deb12u2 (Debian 12)",
        io_ports=9,
        past_io_ports="OVMF assigns no BAR of any device and leaves all of it to the OS "
                      "(Linux reassigns; at 15 ports the chipset's SATA and SMBus lose their I/O BARs, "
                      "at 16 a port's device too)",
        io_ports_os=14,
        port_mem=2 << 20,
        port_pref=512 << 20,
        source=_MEASURED + ": test_io_windows[ovmf], test_bridge_window_sizes[ovmf]",
    ),
]

FIRMWARES = MappingProxyType({(r.name, r.family): r for r in _rows})
_BY_KIND = MappingProxyType({(r.kind, r.family): r for r in _rows})


def firmware(name: str, family: str) -> Firmware | None:
    """The row of a firmware by its name (seabios, ovmf)."""
    return FIRMWARES.get((name, family))


def of_kind(kind: str | None, family: str) -> Firmware | None:
    """The row a guest of ``family`` with firmware ``kind`` (bios, efi) boots with; None where
    nothing was measured (another family, or no firmware at all)."""
    return _BY_KIND.get((kind, family)) if kind is not None else None
