"""x86_64 q35: a PCI Express machine with the ICH9 chipset.

Sources: libvirt src/conf/domain_addr.c virDomainPCIAddressBusSetModel (what
each bus accepts), src/qemu/qemu_domain_address.c
qemuDomainValidateDevicePCISlotsQ35 (chipset addresses), qemu_postparse.c
qemuDomainDefAddDefaultDevices (implicit devices), and the measurements of
libvirt 9.0 + QEMU 7.2 (shared docs, real-libvirt.md section 4).
"""

from ..model import Address, Connect as C, EndpointClass as K
from . import MACHINE_VERSION, BusRule, Fixed, RuleSet, _freeze

_BAS = "domain_addr.c virDomainPCIAddressBusSetModel"

# The same conventional bridge on every x86 and ARM machine (pc shares the row).
PCI_BRIDGE = BusRule(
    "pci-bridge", "pci-bridge", C.PCI_BRIDGE,
    accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
    slots=(1, 31),  # slot 0 is the bridge's SHPC
    target=("chassisNr",),
    source=_BAS + ": pci-bridge",
)

# Shared with the aarch64/riscv64 virt table, which has the same controllers.
PCIE_BUSES = (
    BusRule(
        "pcie-root", None, None,
        accepts=frozenset({C.ROOT_PORT, C.DMI_TO_PCI_BRIDGE, C.PCIE_EXPANDER_BUS}),
        # Endpoints go on the root complex only at an address the user wrote
        # (virDomainPCIAddressFlagsCompatible, fromConfig): both kinds then fit.
        manual=frozenset({C.PCIE_DEVICE, C.PCI_DEVICE}),
        slots=(1, 31),  # slot 0 is the host bridge
        auto_endpoints=False, hotplug=False, root=True, addable=False, bus_numbers=1,
        source=_BAS + ": pcie-root",
    ),
    BusRule(
        "pcie-root-port", "pcie-root-port", C.ROOT_PORT,
        accepts=frozenset({C.PCIE_DEVICE, C.SWITCH_UPSTREAM, C.PCIE_TO_PCI_BRIDGE}),
        manual=frozenset({C.PCI_DEVICE}),  # real libvirt accepts a PCI device at an explicit address
        slots=(0, 0),  # a port: one slot
        packs=8,  # AGGREGATE_SLOT: eight root ports share a pcie-root slot as functions 0-7
        target=("chassis", "port"),
        source=_BAS + ": pcie-root-port; qemuDomainPCIControllerSetDefaultModelName (generic model)",
    ),
    BusRule(
        "pcie-to-pci-bridge", "pcie-pci-bridge", C.PCIE_TO_PCI_BRIDGE,
        accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
        slots=(1, 31),  # slot 0 is the bridge's SHPC
        source=_BAS + ": pcie-to-pci-bridge (libvirt 4.3.0); QEMU docs/pcie_pci_bridge.txt",
    ),
    # Read-only rows: the planner does not add these yet, but audit and verify know them.
    BusRule(
        "pcie-switch-upstream-port", "x3130-upstream", C.SWITCH_UPSTREAM,
        accepts=frozenset({C.SWITCH_DOWNSTREAM}),
        slots=(0, 31),  # up to 32 downstream ports
        auto_endpoints=False, hotplug=False, addable=False,
        source=_BAS + ": pcie-switch-upstream-port",
    ),
    BusRule(
        "pcie-switch-downstream-port", "xio3130-downstream", C.SWITCH_DOWNSTREAM,
        accepts=frozenset({C.PCIE_DEVICE, C.SWITCH_UPSTREAM, C.PCIE_TO_PCI_BRIDGE}),
        manual=frozenset({C.PCI_DEVICE}),
        slots=(0, 0),  # a port: one slot
        target=("chassis", "port"), addable=False,
        source=_BAS + ": pcie-switch-downstream-port",
    ),
    BusRule(
        "dmi-to-pci-bridge", "i82801b11-bridge", C.DMI_TO_PCI_BRIDGE,
        accepts=frozenset({C.PCI_BRIDGE}),
        manual=frozenset({C.PCI_DEVICE, C.PCIE_DEVICE}),
        slots=(0, 31),
        auto_endpoints=False, hotplug=False, addable=False,  # its own slots take no hotplug (real-libvirt row 12)
        source=_BAS + ": dmi-to-pci-bridge",
    ),
    PCI_BRIDGE,
)

_fixed = {
    # The primary video card sits on the root complex at 00:01.0 when that is free.
    "primary-video": Fixed("primary-video", Address(0, 1, 0), False,
                           "qemuDomainValidateDevicePCISlotsQ35: primary video 00:01.0"),
    # SATA controller 0 is part of the chipset at 00:1f.2.
    "sata": Fixed("sata", Address(0, 0x1F, 2), True, "qemuDomainValidateDevicePCISlotsQ35: SATA 00:1f.2"),
    # The first ich9 sound card prefers 00:1b.0.
    "ich9-sound": Fixed("ich9-sound", Address(0, 0x1B, 0), False,
                        "qemuDomainValidateDevicePCISlotsQ35: ich9 sound 00:1b.0"),
}

RULES = RuleSet(
    family="q35",
    summary="x86_64 q35 (PCI Express, ICH9)",
    default_machine="q35",
    machine_pattern=rf"pc-q35-{MACHINE_VERSION}|q35",
    arches=("x86_64", "i686"),
    root="pcie-root",
    buses=_freeze({b.model: b for b in PCIE_BUSES}),
    class_connect=_freeze({K.PCIE: C.PCIE_DEVICE, K.PCI: C.PCI_DEVICE,
                           # libvirt treats an assigned device with a guest address as Express
                           K.HOSTDEV: C.PCIE_DEVICE}),
    isolated=frozenset(),
    # Slot 0x1f holds LPC (1f.0), SATA (1f.2) and SMBus (1f.3): a non-aggregate
    # reservation, so no root port can use its free functions.
    reserved_root_slots=((0x1F, "ICH9 LPC/SATA/SMBus (qemuDomainValidateDevicePCISlotsQ35)"),),
    fixed=_freeze(_fixed),
    implicit=_freeze({"usb": "qemu-xhci", "memballoon": "virtio-balloon", "sata": "ich9-ahci"}),
    defaults=_freeze({"usb": True, "memballoon": True, "video": False}),
    default_video="vga",
    # q35 hotplugs natively without ACPI (real-libvirt.md row 1), but ACPI is what
    # every x86 guest wants; libvirt passes -no-acpi without it.
    acpi=True,
    root_hotplug_needs_acpi=False,
    sources=("real-libvirt.md section 4 rows 0-14",),
)
