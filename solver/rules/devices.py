"""The device models a spec may name, shared by every machine family.

The class is the one libvirt computes on a machine whose root is pcie-root
(qemu_domain_address.c, qemuDomainDeviceCalculatePCIConnectFlags); each family
then maps the class to what its buses see (on pc and pseries everything is
conventional PCI).  ``category`` is libvirt's placement order
(qemuDomainAssignDevicePCISlots): nets before sound before controllers before
disks before hostdevs before the balloon before rngs before videos before
inputs before pci-serial.
"""

from __future__ import annotations

from types import MappingProxyType

from ..model import EndpointClass
from . import DeviceKind

E, P, H = EndpointClass.PCIE, EndpointClass.PCI, EndpointClass.HOSTDEV
_SRC = "qemuDomainDeviceCalculatePCIConnectFlags"

# Category numbers follow qemuDomainAssignDevicePCISlots.
NET, SOUND, CONTROLLER, DISK, HOSTDEV, BALLOON, RNG, VIDEO, INPUT, SERIAL = 3, 4, 5, 6, 7, 8, 9, 11, 13, 14

_rows: list[DeviceKind] = [
    # virtio devices are PCI Express when QEMU has modern virtio (any current QEMU).
    DeviceKind("virtio-net", E, "interface", "virtio", NET, True, _SRC + ": virtio net"),
    DeviceKind("virtio-blk", E, "disk", "virtio", DISK, True, _SRC + ": virtio disk"),
    DeviceKind("virtio-scsi", E, "scsi", "virtio-scsi", CONTROLLER, True, _SRC + ": virtio-scsi controller"),
    DeviceKind("virtio-serial", E, "virtio-serial", "virtio", CONTROLLER, False,
               _SRC + "; real libvirt: 'virtio-serial' controller cannot be hot plugged"),
    DeviceKind("virtio-rng", E, "rng", "virtio", RNG, True, _SRC + ": virtio rng"),
    DeviceKind("virtio-gpu", E, "video", "virtio", VIDEO, False, _SRC + ": virtio video", video=True),
    DeviceKind("virtio-input", E, "input", "virtio", INPUT, True, _SRC + ": virtio input"),
    DeviceKind("virtio-balloon", E, "memballoon", "virtio", BALLOON, False, _SRC + ": virtio memballoon",
               max_count=1),
    # Transitional virtio is conventional PCI everywhere (libvirt 5.2.0).
    DeviceKind("virtio-net-transitional", P, "interface", "virtio-transitional", NET, True, _SRC),
    DeviceKind("virtio-blk-transitional", P, "disk", "virtio-transitional", DISK, True, _SRC),
    DeviceKind("virtio-scsi-transitional", P, "scsi", "virtio-transitional", CONTROLLER, True, _SRC),
    DeviceKind("virtio-serial-transitional", P, "virtio-serial", "virtio-transitional", CONTROLLER, False, _SRC),
    DeviceKind("virtio-rng-transitional", P, "rng", "virtio-transitional", RNG, True, _SRC),
    DeviceKind("virtio-input-transitional", P, "input", "virtio-transitional", INPUT, True, _SRC),
    DeviceKind("virtio-balloon-transitional", P, "memballoon", "virtio-transitional", BALLOON, False, _SRC,
               max_count=1),
    # NICs: e1000e and igb are Express, every other emulated NIC conventional.
    DeviceKind("e1000", P, "interface", "e1000", NET, True, _SRC + ": non-virtio NIC"),
    DeviceKind("e1000e", E, "interface", "e1000e", NET, True, _SRC + ": e1000e"),
    DeviceKind("igb", E, "interface", "igb", NET, True, _SRC + ": igb (QEMU >= 8.0 has the device)"),
    DeviceKind("rtl8139", P, "interface", "rtl8139", NET, True, _SRC + ": non-virtio NIC"),
    DeviceKind("qemu-xhci", E, "usb", "qemu-xhci", CONTROLLER, False, _SRC + ": USB qemu-xhci"),
    DeviceKind("ich9-hda", P, "sound", "ich9", SOUND, False, _SRC + ": sound ich9"),
    DeviceKind("qxl", P, "video", "qxl", VIDEO, False, _SRC + ": video qxl", video=True),
    DeviceKind("vga", P, "video", "vga", VIDEO, False, _SRC + ": video vga", video=True),
    DeviceKind("pci-serial", P, "serial", "pci-serial", SERIAL, False, _SRC + ": pci-serial"),
    # An assigned host device: Express when the host device is (the usual case, and
    # libvirt's assumption once the device has a guest address).
    DeviceKind("hostdev", H, "hostdev", "pci", HOSTDEV, True, _SRC + ": PCI hostdev"),
]

DEVICES = MappingProxyType({d.name: d for d in _rows})

# Devices libvirt adds by itself that take no slot of their own (a chipset function).
CHIPSET = MappingProxyType(
    {
        "piix3-uhci": DeviceKind("piix3-uhci", P, "usb", "piix3-uhci", CONTROLLER, False,
                                 "qemuDomainValidateDevicePCISlotsPIIX3: USB at 00:01.2"),
        "ich9-ahci": DeviceKind("ich9-ahci", E, "sata", "", CONTROLLER, False,
                                "qemuDomainValidateDevicePCISlotsQ35: SATA at 00:1f.2"),
    }
)


def kind(name: str) -> DeviceKind:
    return DEVICES[name] if name in DEVICES else CHIPSET[name]

# Models with an I/O-space BAR.  The firmware gives a port (root or downstream)
# a 4 KiB I/O window only when a device behind it has one (QEMU docs/pcie.txt,
# "IO space issues"), and the 64 KiB I/O space holds about 10-14 such windows
# after the chipset's share.  Modern virtio, xHCI and HDA use MMIO only; legacy
# (transitional) virtio keeps its I/O BAR 0; e1000, e1000e, igb, rtl8139, qxl
# and pci-serial have one.  An assigned device's BARs are the host device's:
# unknown here, so it is not counted.
IO_BAR = frozenset({
    "virtio-net-transitional", "virtio-blk-transitional", "virtio-scsi-transitional",
    "virtio-serial-transitional", "virtio-rng-transitional", "virtio-input-transitional",
    "virtio-balloon-transitional", "e1000", "e1000e", "igb", "rtl8139", "qxl", "pci-serial",
})
