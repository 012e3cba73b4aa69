"""x86_64 ``pc`` (i440fx): a conventional PCI machine whose root bus hotplugs.

Sources: domain_addr.c virDomainPCIAddressBusSetModel (pci-root, pci-bridge),
qemu_domain_address.c qemuDomainValidateDevicePCISlotsPIIX3 (chipset
addresses), real-libvirt.md rows 15-20 (29 hotplugs with the defaults, 31 per
pci-bridge, none at all without ACPI).
"""

from ..model import Address, Connect as C, EndpointClass as K
from . import BusRule, Fixed, Implicit, RuleSet, _freeze
from .windows import PC_WINDOWS, X86_ACPI_INDEX
from .implicit import BALLOON, VIRTIO_SERIAL, disk_controller, usb, usb_default, video
from .q35 import PCI_BRIDGE

_BAS = "domain_addr.c virDomainPCIAddressBusSetModel"

_buses = (
    BusRule(
        "pci-root", None, None,
        accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE, C.PCI_EXPANDER_BUS}),
        slots=(1, 31),  # slot 0 is the host bridge
        root=True, addable=False,
        source=_BAS + ": pci-root",
    ),
    PCI_BRIDGE,
    # An extra PCI root bus (pxb) tied to a guest NUMA node; it plugs into pci-root only.
    # Its bus is behind a pci-bridge built into the pxb (so it costs two bus numbers).
    # libvirt auto-places endpoints there and believes it hotplugs, but QEMU 7.2 refuses:
    # "Bus 'pci.N' does not support hotplugging" (measured; the built-in bridge has no
    # SHPC and the ACPI hotplug of i440fx covers only bus 0's tree).  A pci-bridge
    # plugged into it does hotplug (measured, at an explicit address).
    BusRule(
        "pci-expander-bus", "pxb", C.PCI_EXPANDER_BUS,
        accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
        slots=(0, 31),  # minSlot 0: 32 slots
        hotplug=False, hotplug_trap=True, addable=False,
        target=("busNr", "node"),
        bus_numbers=2,  # the pxb's root bus and its built-in bridge (qemuDomainAddressFindNewBusNr)
        source=_BAS + ": pci-expander-bus; qemuDomainAddressFindNewBusNr; QEMU docs/pci_expander_bridge.txt; "
               "measured (QEMU 7.2): no hotplug on its own bus, a pci-bridge on it hotplugs",
    ),
)

RULES = RuleSet(
    family="pc",
    summary="x86_64 pc (i440fx, conventional PCI)",
    default_machine="pc",
    # libvirt's prefixes for i440fx (qemuDomainIsI440FX): pc, pc-i440fx-*, pc-0.*, pc-1.*, rhel*; Ubuntu's
    # 'ubuntu' is its alias for the newest pc-i440fx-<release>
    machine_pattern=r"pc|pc-i440fx-.+|i440fx|pc-[01]\..+|rhel.+|ubuntu",
    machine_versions=r"pc-i440fx-([0-9]+)\.([0-9]+)",  # QEMU X.Y brings pc-i440fx-X.Y (rules.machine_missing)
    arches=("x86_64", "i686"),
    root="pci-root",
    buses=_freeze({b.model: b for b in _buses}),
    # No pcie-root, so libvirt computes every class as conventional PCI.
    class_connect=_freeze({K.PCIE: C.PCI_DEVICE, K.PCI: C.PCI_DEVICE, K.HOSTDEV: C.PCI_DEVICE}),
    isolated=frozenset(),
    # 00:01 is PIIX3: ISA 01.0, IDE 01.1, USB 01.2, PM/ACPI 01.3.
    reserved_root_slots=((1, "PIIX3 ISA/IDE/USB/PM (qemuDomainValidateDevicePCISlotsPIIX3)"),),
    fixed=_freeze({
        "primary-video": Fixed("primary-video", Address(0, 2, 0), False,
                               "qemuDomainValidateDevicePCISlotsPIIX3: primary video 00:02.0"),
        "piix3-usb": Fixed("piix3-usb", Address(0, 1, 2), True,
                           "qemuDomainValidateDevicePCISlotsPIIX3: USB 00:01.2"),
        "ide": Fixed("ide", Address(0, 1, 1), True, "qemuDomainValidateDevicePCISlotsPIIX3: IDE 00:01.1"),
    }),
    implicit=_freeze({"usb": "piix3-uhci", "memballoon": "virtio-balloon"}),
    defaults=_freeze({"usb": True, "memballoon": True, "video": False}),
    default_video="vga",
    acpi=True,  # i440fx hotplug is ACPI-based: without <acpi/> QEMU refuses every hotplug
    # x86 boots SeaBIOS unless the domain asks for UEFI (OVMF); both measured from the guest
    # (rules/firmware.py)
    windows=PC_WINDOWS,  # memReserve and pcihole64 (rules/windows.py)
    acpi_index=X86_ACPI_INDEX,  # <acpi index> on NICs (rules/windows.py)
    firmware_kinds=frozenset({"bios", "efi"}),
    firmware_default="bios",
    hotplug_needs_acpi=True,
    sources=("real-libvirt.md rows 15-20",),
    numa_root="pci-expander-bus",
    # QEMU's i440fx machines take 255 CPUs (domcapabilities <vcpu max='255'/>); measured: 256 fails
    # "Maximum CPUs greater than specified machine type limit 255".
    max_vcpus=255,
    max_vcpus_why="the i440fx machine type's limit",
    element_defaults=_freeze({"interface model/@type": "rtl8139", "scsi @model": "lsilogic",
                              "video model/@type": "cirrus", "panic @model": "isa"}),
    versioned_defaults=usb_default("piix3-uhci"),
    added_at_define=(usb("piix3-uhci"), BALLOON,
                     # the chipset's IDE function, as a controller element only when an IDE disk needs it
                     Implicit("piix3-ide", unless="ide", needs=(("disk", "target/@bus", "ide"),),
                              source="virDomainDefAddImplicitControllers: IDE 0 for IDE disks, at 00:01.1"),
                     disk_controller("lsilogic", "scsi", "scsi"), disk_controller("ich9-ahci", "sata", "sata"),
                     VIRTIO_SERIAL, video("cirrus")),
)
