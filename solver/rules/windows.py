"""Memory windows and ACPI indexes: the rows behind ``bar:`` and ``acpi_index:``.

Memory windows.  A device hotplugged behind a port gets only the memory window the
firmware gave that port at boot.  libvirt 10.3 added ``<target memReserve='N'/>`` (KiB) on
pcie-root-port and pci-bridge controllers; libvirt passes it to QEMU as the port's
``mem-reserve`` property in bytes (measured on libvirt 11.3 + QEMU 10.0: memReserve='65536'
becomes "mem-reserve":67108864), which QEMU's generic root port and pci-bridge keep as the
*non-prefetchable* reservation (hw/pci-bridge/gen_pcie_root_port.c, pci_bridge_dev.c:
``res_reserve.mem_non_pref``) and hand to the firmware in the Red Hat resource-reserve
capability.  A bridge's non-prefetchable window has 32-bit base and limit registers (PCI-to-PCI
bridge spec), so what memReserve reserves lies below 4 GiB: the plan writes it for BARs that fit
there, and counts them in the "32-bit window" budget.

A BAR of 4 GiB or more can only be 64-bit; the firmware maps 64-bit BARs into the machine's
64-bit PCI hole, whose size QEMU sets with ``pcihole64`` (libvirt: ``<pcihole64 unit='KiB'>`` on
the pci-root or pcie-root controller).  libvirt has no attribute for QEMU's ``pref64-reserve``,
so such a BAR is counted in the "64-bit window" budget, the plan makes the hole large enough for
the sum, and it warns that the guest's kernel sizes the port's window at hotplug.

ACPI index.  ``<acpi index='N'/>`` in an ``<interface>`` names the NIC to the guest (systemd's
``enoN`` names): 1-16383, measured (libvirt 9.0's parser refuses 0, "Zero is not permitted";
QEMU 7.2 refuses 16384 at start, "acpi-index should be less or equal to 16383").  It needs QEMU's
acpi-index property (libvirt's QEMU_CAPS_ACPI_INDEX): i440fx from QEMU 6.1, q35 from QEMU 6.2 (ACPI
PCI hotplug on q35; QEMU's changelog), both older than the oldest target the tables plan for, so the
rows always hold there; pseries
and virt have no ACPI PCI hotplug and no row.
"""

from __future__ import annotations

from dataclasses import dataclass

from .versions import Bound, Range

__all__ = ["Windows", "AcpiIndex", "Q35_WINDOWS", "PC_WINDOWS", "X86_ACPI_INDEX", "KIB", "MIB", "GIB"]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MEM_RESERVE = Range(since=(Bound("libvirt", (10, 3), "libvirt NEWS 10.3.0 and formatdomain.rst: <target memReserve> "
                                 "on pci-bridge and pcie-root-port controllers (KiB); domaincommon.rng of 11.3 has "
                                 "it, 9.0's has not"),))


@dataclass(frozen=True)
class Windows:
    """One family's memory-window facts (sizes in bytes)."""

    mem_reserve: Range  # the versions that take <target memReserve='KiB'/>
    mem_reserve_models: frozenset[str]  # controller models that take it
    window32: int  # the 32-bit MMIO window: what memReserve reservations must share
    window32_source: str
    hole64_default: int  # QEMU's pcihole64 when the domain names none
    hole64_source: str
    phys_bits: int  # guest physical address bits: the 64-bit hole ends below 2**phys_bits
    phys_bits_source: str
    granule: int = MIB  # a bridge memory window is a multiple of 1 MiB (PCI-to-PCI bridge spec)
    # A reserved window starts wherever the firmware puts it, aligned to 1 MiB or a few, not to its size,
    # and a BAR must be aligned to its own size: a window as large as the BAR holds it only by luck.
    # Measured from the guest (tests/test_guest_windows.py, SeaBIOS, QEMU 7.2): a 256 MiB reservation
    # landed at 0xee800000 and the 256 MiB BAR found no place; twice the BAR's size (rounded up to a
    # power of two) holds it, and its small BARs beside it.
    reserve_factor: int = 2
    reserve_source: str = ("measured from the guest: mem-reserve of the BAR's size leaves a 256 MiB BAR unassigned "
                           "(\"can't assign; no space\"), twice its size maps it (tests/test_guest_windows.py)")
    # -- set by rules_for --
    mem_reserve_why: str = ""  # why the target takes no memReserve ("" when it does)


@dataclass(frozen=True)
class AcpiIndex:
    """Where ``<acpi index>`` on a NIC is taken, and its range."""

    versions: Range
    low: int
    high: int
    source: str
    why: str = ""  # set by rules_for: why the target takes none ("" when it does)


_PHYS = ("QEMU target/i386/cpu.c: a CPU model without host-phys-bits gets 40 physical address bits "
         "(TCG_PHYS_ADDR_BITS); the 64-bit hole must end below 2^40 = 1 TiB")

Q35_WINDOWS = Windows(
    mem_reserve=MEM_RESERVE,
    mem_reserve_models=frozenset({"pcie-root-port", "pci-bridge"}),
    # q35 keeps RAM below 0xB0000000 at most and the MMCONFIG window takes 0xB0000000-0xBFFFFFFF
    # (hw/i386/pc_q35.c lowmem, MCH_HOST_BRIDGE_PCIEXBAR_DEFAULT), the IO-APIC starts at 0xFEC00000:
    # 0xC0000000-0xFEC00000 is the smallest 32-bit PCI window a q35 guest has, 1004 MiB
    window32=0xFEC00000 - 0xC0000000,
    window32_source="QEMU hw/i386/pc_q35.c (lowmem 0xB0000000), MCH PCIEXBAR at 0xB0000000 (256 MiB), IO-APIC at "
                    "0xFEC00000",
    hole64_default=1 << 35,  # Q35_PCI_HOST_HOLE64_SIZE_DEFAULT, hw/pci-host/q35.c: 32 GiB
    hole64_source="QEMU hw/pci-host/q35.c Q35_PCI_HOST_HOLE64_SIZE_DEFAULT (1ULL << 35)",
    phys_bits=40,
    phys_bits_source=_PHYS,
)

PC_WINDOWS = Windows(
    mem_reserve=MEM_RESERVE,
    mem_reserve_models=frozenset({"pci-bridge"}),
    # i440fx machines since pc-i440fx-1.7 keep RAM below 0xC0000000 once it reaches 0xE0000000
    # (hw/i386/pc_piix.c lowmem, gigabyte_align); the IO-APIC at 0xFEC00000: 1004 MiB, as q35
    window32=0xFEC00000 - 0xC0000000,
    window32_source="QEMU hw/i386/pc_piix.c (lowmem 0xC0000000 with gigabyte_align), IO-APIC at 0xFEC00000",
    hole64_default=1 << 31,  # I440FX_PCI_HOST_HOLE64_SIZE_DEFAULT, hw/pci-host/i440fx.c: 2 GiB
    hole64_source="QEMU hw/pci-host/i440fx.c I440FX_PCI_HOST_HOLE64_SIZE_DEFAULT (1ULL << 31)",
    phys_bits=40,
    phys_bits_source=_PHYS,
)

X86_ACPI_INDEX = AcpiIndex(
    versions=Range(since=(Bound("qemu", (6, 2), "QEMU 6.2 changelog: acpi-index on q35 (6.1 on i440fx); libvirt "
                                "qemuValidateDomainDeviceDefNetwork needs QEMU_CAPS_ACPI_INDEX"),)),
    low=1, high=16383,
    source="libvirt's parser refuses 0 (measured 9.0: \"Zero is not permitted\"); QEMU refuses more than 16383 "
           "at start (measured 7.2: \"acpi-index should be less or equal to 16383\")",
)
