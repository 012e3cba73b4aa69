"""x86_64 q35: a PCI Express machine with the ICH9 chipset.

Sources: libvirt src/conf/domain_addr.c virDomainPCIAddressBusSetModel (what
each bus accepts), src/qemu/qemu_domain_address.c
qemuDomainValidateDevicePCISlotsQ35 (chipset addresses), qemu_postparse.c
qemuDomainDefAddDefaultDevices (implicit devices), and the measurements of
libvirt 9.0 + QEMU 7.2 (shared docs, real-libvirt.md section 4).
"""

from ..model import Address, Connect as C, EndpointClass as K
from . import BusRule, Fixed, Implicit, RuleSet, _freeze
from .versions import Bound, Range
from .windows import Q35_WINDOWS, X86_ACPI_INDEX
from .implicit import BALLOON, ITCO_WATCHDOG, VIRTIO_SERIAL, disk_controller, usb, usb_default, video

_BAS = "domain_addr.c virDomainPCIAddressBusSetModel"

# A protected port: <target hotplug='off'/> on a pcie-root-port or a pcie-switch-downstream-port turns
# off hotplug and unplug on it (QEMU's PCIESlot property 'hotplug', hw/pci/pcie_port.c).  libvirt reads
# it from 6.3.0 on (NEWS v6.3.0: "support disabling hotplug/unplug of PCIe devices", for
# pcie-root-ports and pcie-switch-downstream-ports); QEMU has had the property since 5.0.  Measured on
# both judges (tests/test_libvirt_multifunction.py): the port defines unchanged and libvirt refuses an
# attach into it ("requires hotplug capability").
HOTPLUG_OFF = Range(since=(
    Bound("libvirt", (6, 3), "libvirt NEWS v6.3.0: hotplug='off' for pcie-root-port and pcie-switch-downstream-port"),
    Bound("qemu", (5, 0), "QEMU 5.0: hw/pci/pcie_port.c PCIESlot property 'hotplug'"),
))

# The same conventional bridge on every x86 and ARM machine (pc shares the row).
PCI_BRIDGE = BusRule(
    "pci-bridge", "pci-bridge", C.PCI_BRIDGE,
    accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
    # At an address the user wrote, a bus that takes one kind of endpoint takes the other too
    # (virDomainPCIAddressFlagsCompatible, fromConfig: "allow a PCI device to connect to a PCIe
    # slot, or vice versa"); real libvirt 9.0 defines a virtio NIC written on a pci-bridge.
    manual=frozenset({C.PCIE_DEVICE}),
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
        # a pci-bridge may be put on any bus that takes a PCI endpoint at an address from the config
        # (virDomainPCIAddressFlagsCompatible), pcie-root included: measured, it defines and its 31
        # slots hotplug.  QEMU's docs/pcie.txt keeps pcie.0 for endpoints and ports, so the planner
        # builds it only under layout 'libvirt-accepts'.
        manual=frozenset({C.PCIE_DEVICE, C.PCI_DEVICE, C.PCI_BRIDGE}),
        policy_accepts=(("libvirt-accepts", frozenset({C.PCI_BRIDGE})),),
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
        protect=HOTPLUG_OFF,
        source=_BAS + ": pcie-root-port; qemuDomainPCIControllerSetDefaultModelName (generic model)",
    ),
    # A switch: its upstream port takes a port (root or downstream) and its bus holds
    # up to 32 downstream ports, each a port like a root port.  The planner adds one
    # only where root ports alone do not fit (QEMU docs/pcie.txt 2.2: "Only use PCI
    # Express Switches if there is no more room for PCI Express Root Ports").  These
    # rows come before pcie-to-pci-bridge: a controller hangs only on a bus of a lower
    # index, and the table order is the index order.
    BusRule(
        "pcie-switch-upstream-port", "x3130-upstream", C.SWITCH_UPSTREAM,
        accepts=frozenset({C.SWITCH_DOWNSTREAM}),
        slots=(0, 31),  # up to 32 downstream ports, slots 0-31 (minSlot 0, maxSlot VIR_PCI_ADDRESS_SLOT_LAST)
        auto_endpoints=False, hotplug=False,  # its own slots take downstream ports only, never live
        source=_BAS + ": pcie-switch-upstream-port; real-libvirt row 9 (a switch of 4 takes 5 hotplugs with a "
               "root port), measured 32 downstream ports on one upstream port",
    ),
    BusRule(
        "pcie-switch-downstream-port", "xio3130-downstream", C.SWITCH_DOWNSTREAM,
        accepts=frozenset({C.PCIE_DEVICE, C.SWITCH_UPSTREAM, C.PCIE_TO_PCI_BRIDGE}),
        manual=frozenset({C.PCI_DEVICE}),
        slots=(0, 0),  # a port: one slot
        target=("chassis", "port"),  # libvirt: chassis = index, port = its slot on the upstream bus
        protect=HOTPLUG_OFF,
        source=_BAS + ": pcie-switch-downstream-port; qemuDomainAssignPCIAddresses (port = slot)",
    ),
    BusRule(
        "pcie-to-pci-bridge", "pcie-pci-bridge", C.PCIE_TO_PCI_BRIDGE,
        accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
        manual=frozenset({C.PCIE_DEVICE}),  # as pci-bridge: fromConfig takes either kind of endpoint
        slots=(1, 31),  # slot 0 is the bridge's SHPC
        source=_BAS + ": pcie-to-pci-bridge (libvirt 4.3.0); QEMU docs/pcie_pci_bridge.txt",
    ),
    # Read-only row: the planner does not add it (docs/design.md says why), but audit and verify know it.
    BusRule(
        "dmi-to-pci-bridge", "i82801b11-bridge", C.DMI_TO_PCI_BRIDGE,
        accepts=frozenset({C.PCI_BRIDGE}),
        manual=frozenset({C.PCI_DEVICE, C.PCIE_DEVICE}),
        slots=(0, 31),
        auto_endpoints=False, hotplug=False, addable=False,  # its own slots take no hotplug (real-libvirt row 12)
        source=_BAS + ": dmi-to-pci-bridge",
    ),
    PCI_BRIDGE,
    # An extra PCI Express root bus (pxb-pcie) tied to a guest NUMA node: it plugs into
    # pcie-root and its bus takes root ports (and dmi-to-pci-bridges), which hotplug;
    # the bus itself takes no endpoint and no hotplug.  libvirt never adds one by itself
    # ("intended for NUMA usage", virDomainPCIAddressSetGrow), and neither does the
    # planner except for a node's devices and headroom.
    BusRule(
        "pcie-expander-bus", "pxb-pcie", C.PCIE_EXPANDER_BUS,
        accepts=frozenset({C.ROOT_PORT, C.DMI_TO_PCI_BRIDGE}),
        slots=(0, 31),  # 32 slots, so up to 256 root ports as functions (libvirt 2.4.0: 32 slots)
        auto_endpoints=False, hotplug=False, addable=False,
        target=("busNr", "node"),
        bus_numbers=1,  # its root bus; its root ports take one each (QEMU docs/pcie.txt section 4)
        source=_BAS + ": pcie-expander-bus; qemuDomainAddressFindNewBusNr; QEMU docs/pcie.txt 2.1.2 and 4; "
               "measured: 9 root ports packed on it from slot 0 take 9 hotplugs",
    ),
)

_fixed = {
    # The primary video card sits on the root complex at 00:01.0 when that is free.
    "primary-video": Fixed("primary-video", Address(0, 1, 0), False,
                           "qemuDomainValidateDevicePCISlotsQ35: primary video 00:01.0"),
    # SATA controller 0 is part of the chipset at 00:1f.2.
    "sata": Fixed("sata", Address(0, 0x1F, 2), True, "qemuDomainValidateDevicePCISlotsQ35: SATA 00:1f.2"),
    # Unaddressed USB2 sets (ich9-uhci1..3 with ich9-ehci1, one controller index) prefer 00:1d, then
    # 00:1a, one slot each with the companions as functions .0 .1 .2 and .7 (measured 9.0).
    "usb2-1": Fixed("usb2-1", Address(0, 0x1D, 0), False, "qemuDomainValidateDevicePCISlotsQ35: USB2 set 00:1d"),
    "usb2-2": Fixed("usb2-2", Address(0, 0x1A, 0), False, "qemuDomainValidateDevicePCISlotsQ35: USB2 set 00:1a"),
    # The first ich9 sound card prefers 00:1b.0.
    "ich9-sound": Fixed("ich9-sound", Address(0, 0x1B, 0), False,
                        "qemuDomainValidateDevicePCISlotsQ35: ich9 sound 00:1b.0"),
    # A dmi-to-pci-bridge without an address prefers 00:1e.0 (the planner never adds one; libvirt's
    # define does place one a user wrote without an address there)
    "dmi-to-pci-bridge": Fixed("dmi-to-pci-bridge", Address(0, 0x1E, 0), False,
                               "qemuDomainValidateDevicePCISlotsQ35: dmi-to-pci-bridge 00:1e.0"),
}

RULES = RuleSet(
    family="q35",
    summary="x86_64 q35 (PCI Express, ICH9)",
    default_machine="q35",
    # libvirt tells the family by the prefix alone (qemuDomainIsQ35): upstream pc-q35-7.2, RHEL's
    # pc-q35-rhel9.6.0, Ubuntu's pc-q35-jammy, pc-q35-noble-v2, pc-q35-jammy-hpb-maxcpus ...
    machine_pattern=r"pc-q35-.+|q35|ubuntu-q35",
    machine_versions=r"pc-q35-([0-9]+)\.([0-9]+)",  # QEMU X.Y brings pc-q35-X.Y (rules.machine_missing)
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
    # x86 boots SeaBIOS unless the domain asks for UEFI (OVMF); both measured from the guest
    # (rules/firmware.py)
    windows=Q35_WINDOWS,  # memReserve and pcihole64 (rules/windows.py)
    acpi_index=X86_ACPI_INDEX,  # <acpi index> on NICs (rules/windows.py)
    firmware_kinds=frozenset({"bios", "efi"}),
    firmware_default="bios",
    hotplug_needs_acpi=False,
    sources=("real-libvirt.md section 4 rows 0-14",),
    numa_root="pcie-expander-bus",
    # qemu_validate.c: over 255 vCPUs an x86 guest needs an IOMMU with extended interrupt mode, which
    # a plan does not write (QEMU 7.2's pc-q35 takes 288); measured: virsh define of 256 on q35 fails.
    max_vcpus=255,
    max_vcpus_why="more need an IOMMU with extended interrupt mode (eim)",
    gap_model="pcie-root-port",
    # measured, libvirt 9.0: <interface/> is rtl8139, an explicit <controller type='usb'/> piix3-uhci (the
    # implicit one is qemu-xhci), <controller type='scsi'/> lsilogic, <video/> cirrus, <panic/> isa (an ISA
    # pvpanic: qemuDomainDefaultPanicModel)
    element_defaults=_freeze({"interface model/@type": "rtl8139", "scsi @model": "lsilogic",
                              "video model/@type": "cirrus", "panic @model": "isa"}),
    versioned_defaults=usb_default("piix3-uhci"),
    added_at_define=(usb("qemu-xhci"), BALLOON,
                     Implicit("ich9-ahci", unless="sata", source="qemuDomainDefAddDefaultDevices: SATA 0 on q35"),
                     disk_controller("lsilogic", "scsi", "scsi"), VIRTIO_SERIAL, video("cirrus"), ITCO_WATCHDOG),
)
