"""ppc64 ``pseries``: PCI host bridges (PHBs), and one PHB per IOMMU group.

Sources: libvirt-pci-rules.md section 10 (qemuDomainSetupIsolationGroups locks
the default PHB to emulated devices; qemuDomainFillDeviceIsolationGroup keeps
assigned devices of different IOMMU groups on different PHBs; growth adds PHBs,
never bridges), domain_validate.c (PHB target index 0-30), libvirt's
pci-hotplug guide (one empty pci-root per assigned device to hotplug), and
real-libvirt.md rows 21-23 (31 hotplugs per PHB, 29 with the defaults).
"""

from ..model import Connect as C, EndpointClass as K
from . import BusRule, RuleSet, _freeze
from .implicit import BALLOON, VIRTIO_SERIAL, disk_controller, usb, usb_default, video

_phb = dict(
    accepts=frozenset({C.PCI_DEVICE, C.PCI_BRIDGE}),
    slots=(1, 31),  # slot 0 of a PHB is never used
    source="domain_addr.c virDomainPCIAddressBusSetModel: pci-root; spapr-pci-host-bridge",
    bus_numbers=0,  # every PHB is a PCI domain of its own
)

_buses = (
    # The default PHB: emulated devices only (isolation group 0, locked).
    BusRule("pci-root", "spapr-pci-host-bridge", None, root=True, addable=False, isolation="locked",
            target=("index",), **_phb),
)
# Extra PHBs are pci-root controllers with index > 0; each a root bus that needs no slot.
# One tied to a guest NUMA node writes <target index='N'><node>M</node></target> (pseries-phb-numa-node;
# the default PHB may not have a node: domain_validate.c).
_extra = BusRule("pci-root", "spapr-pci-host-bridge", None, root=True, isolation="group", key="pci-root+",
                 target=("index", "node"), **_phb)

RULES = RuleSet(
    family="pseries",
    summary="ppc64 pseries (PHBs, IOMMU-group isolation)",
    default_machine="pseries",
    machine_pattern=r"pseries(-.+)?",  # libvirt: the pseries prefix (qemuDomainIsPSeries); -sxxm, -rhel8.2.0 ...
    machine_versions=r"pseries-([0-9]+)\.([0-9]+)",  # QEMU X.Y brings pseries-X.Y (rules.machine_missing)
    arches=("ppc64le", "ppc64"),
    root="pci-root",
    # The extra PHB row is stored under its own key; both write model='pci-root'.
    buses=_freeze({"pci-root": _buses[0], "pci-root+": _extra}),
    class_connect=_freeze({K.PCIE: C.PCI_DEVICE, K.PCI: C.PCI_DEVICE, K.HOSTDEV: C.PCI_DEVICE}),
    isolated=frozenset({K.HOSTDEV}),
    reserved_root_slots=(),
    fixed=_freeze({}),
    implicit=_freeze({"usb": "qemu-xhci", "memballoon": "virtio-balloon"}),
    defaults=_freeze({"usb": True, "memballoon": True, "video": False}),
    default_video="vga",
    acpi=False,  # no ACPI on POWER
    hotplug_needs_acpi=False,
    # PHB target indexes 0-30 (domain_validate.c), so at most 31 PHBs.
    max_count=_freeze({"pci-root+": 30}),  # measured: target index 31 is refused ("must be 0-30")
    sources=("real-libvirt.md rows 21-23",),
    numa_root="pci-root+",
    gap_model="pci-root",
    # qemuDomainGetMemorySizeAlignment: ppc64 memory (and each NUMA cell) is rounded up to 256 MiB at
    # start (QEMU's spapr needs node memory in 256 MiB blocks); cells written aligned stay as written.
    numa_memory_align=256,
    # QEMU 7.2's pseries takes 4096 CPUs (domcapabilities <vcpu max='4096'/>); measured: 4097 fails.
    max_vcpus=4096,
    max_vcpus_why="the pseries machine type's limit",
    # measured, libvirt 9.0: <interface/> is rtl8139, <controller type='scsi'/> ibmvscsi (spapr-vio),
    # <video/> vga
    element_defaults=_freeze({"interface model/@type": "rtl8139", "scsi @model": "ibmvscsi",
                              "video model/@type": "vga", "panic @model": "pseries"}),
    versioned_defaults=usb_default("qemu-xhci"),
    # a bus='scsi' disk gets an ibmvscsi (spapr-vio, no PCI slot), so no row for it
    added_at_define=(usb("qemu-xhci"), BALLOON, disk_controller("ich9-ahci", "sata", "sata"), VIRTIO_SERIAL,
                     video("vga")),
)
