"""aarch64 (and riscv64) ``virt``: PCI Express like q35, without the chipset.

Sources: libvirt-pci-rules.md section 11 (qemuDomainDefAddDefaultDevices adds
no USB and no balloon on ARM virt; no chipset reservations; virtio devices are
PCI when the domain has pcie-root), real-libvirt.md rows 24-26 and pitfall 11
(ACPI on aarch64 requires UEFI, so the planner writes none).
"""

from dataclasses import replace

from ..model import Connect as C, EndpointClass as K
from . import Default, RuleSet, _freeze
from .implicit import BALLOON, VIRTIO_SERIAL, disk_controller, usb_default, video
from .q35 import PCIE_BUSES
from .versions import Bound, Range

# <controller type='scsi'/> without a model (and the controller libvirt adds for a SCSI disk): lsilogic, a
# conventional PCI HBA (a root port and a pcie-to-pci-bridge), up to libvirt 11.5; virtio-scsi from 11.6 on
# (libvirt NEWS.rst v11.6.0).  Measured: lsilogic on 9.0 and 11.3 (aarch64).
_SCSI_11_6 = Bound("libvirt", (11, 6), "libvirt NEWS.rst v11.6.0: virtio-scsi is the default SCSI controller on "
                   "ARM and RISC-V virt; measured lsilogic on 9.0 and 11.3")
# <panic/> without a model: 9.0 falls back to an ISA pvpanic (which aarch64 QEMU lacks; qemuDomainDevicePanic-
# DefPostParse), 11.3 gives pvpanic, the PCI one on the root bus (qemuDomainDefaultPanicModel).  When it
# changed is not known.
_PANIC = Bound("libvirt", None, "qemu_domain.c qemuDomainDefaultPanicModel (11.3: pvpanic on ARM virt); 9.0: isa",
               old=(9, 0), new=(11, 3))
# riscv64 virt guests get a balloon in 9.0 and 11.3 (qemuDomainDefAddDefaultDevices); a later libvirt (a copy of
# qemu_postparse.c after 11.9) adds none; the version that stopped is not known.
_RISCV_BALLOON = Range(until=(Bound("libvirt", None, "qemu_postparse.c: riscv virt gets a memballoon in 9.0 and "
                                   "11.3, none in a copy after 11.9", old=(11, 3)),))

RULES = RuleSet(
    family="virt",
    summary="aarch64/riscv64 virt (PCI Express, no chipset)",
    default_machine="virt",
    machine_pattern=r"virt(-.+)?",  # libvirt: the virt prefix (qemuDomainIsARMVirt, qemuDomainIsRISCVVirt)
    machine_versions=r"virt-([0-9]+)\.([0-9]+)",  # QEMU X.Y brings virt-X.Y (rules.machine_missing)
    arches=("aarch64", "riscv64"),
    root="pcie-root",
    buses=_freeze({b.model: b for b in PCIE_BUSES}),
    class_connect=_freeze({K.PCIE: C.PCIE_DEVICE, K.PCI: C.PCI_DEVICE, K.HOSTDEV: C.PCIE_DEVICE}),
    isolated=frozenset(),
    reserved_root_slots=(),  # no chipset: root ports start at 00:01.0
    fixed=_freeze({}),  # video gets no special slot: virtio-gpu sits behind a root port
    implicit=_freeze({"usb": "qemu-xhci", "memballoon": "virtio-balloon"}),
    defaults=_freeze({"usb": False, "memballoon": False, "video": False}),  # libvirt adds neither on virt
    default_video="virtio-gpu",
    acpi=False,  # "ACPI requires UEFI on this architecture" without a UEFI loader
    hotplug_needs_acpi=False,
    # aarch64 boots UEFI (AAVMF) or, without a loader, a kernel directly; measured (tests/test_guest_measure.py,
    # test_aarch64_expander_seen): a pcie-expander-bus's devices are seen only with UEFI and
    # <acpi/> both
    firmware_kinds=frozenset({"efi"}),
    acpi_needs_efi=True,
    sources=("real-libvirt.md rows 24-26",),
    # pcie-expander-bus is allowed on aarch64 virt (libvirt test pcie-expander-bus-aarch64); measured:
    # virt-7.2 defines and hotplugs into a root port behind one.  The guest sees that root bus only
    # through ACPI, which needs UEFI here (the plan warns).
    numa_root="pcie-expander-bus",
    # QEMU 7.2's aarch64 virt takes 512 CPUs (domcapabilities <vcpu max='512'/>; measured: 513 fails),
    # riscv64 virt 512 as well (VIRT_CPUS_MAX in QEMU's hw/riscv/virt.h).
    max_vcpus=512,
    max_vcpus_why="the virt machine type's limit",
    gap_model="pcie-root-port",
    # measured, libvirt 9.0 (aarch64): <interface/> is virtio, <controller type='scsi'/> lsilogic, <video/>
    # virtio; libvirt adds no USB and no balloon on virt
    element_defaults=_freeze({"interface model/@type": "virtio", "video model/@type": "virtio"}),
    versioned_defaults=usb_default("qemu-xhci") + (
        Default("scsi @model", "lsilogic", Range(until=(_SCSI_11_6,)), "qemuDomainGetSCSIControllerModel"),
        Default("scsi @model", "virtio-scsi", Range(since=(_SCSI_11_6,)), "qemuDomainGetSCSIControllerModel"),
        Default("panic @model", "isa", Range(until=(_PANIC,)), "qemuDomainDevicePanicDefPostParse (9.0)"),
        Default("panic @model", "pvpanic", Range(since=(_PANIC,)), "qemuDomainDefaultPanicModel (11.3)"),
    ),
    # riscv64 gets a balloon, aarch64 none (qemuDomainDefAddDefaultDevices in 9.0 and 11.3)
    # measured 9.0 (aarch64): with one rng at a virtio-mmio address, an unaddressed virtio NIC got one too,
    # while a twin rng written <address type='pci'/> and a 9p filesystem got root ports
    virtio_mmio=True,
    # the SCSI controller libvirt adds for a bus='scsi' disk is the default SCSI model: lsilogic, then
    # virtio-scsi from libvirt 11.6 (as the 'scsi @model' default above)
    added_at_define=(replace(BALLOON, arches=("riscv64",), versions=_RISCV_BALLOON),
                     replace(disk_controller("lsilogic", "scsi", "scsi"), versions=Range(until=(_SCSI_11_6,))),
                     replace(disk_controller("virtio-scsi", "scsi", "scsi"), versions=Range(since=(_SCSI_11_6,))),
                     disk_controller("ich9-ahci", "sata", "sata"), VIRTIO_SERIAL, video("virtio-gpu")),
)
