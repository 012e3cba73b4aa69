"""aarch64 (and riscv64) ``virt``: PCI Express like q35, without the chipset.

Sources: libvirt-pci-rules.md section 11 (qemuDomainDefAddDefaultDevices adds
no USB and no balloon on ARM virt; no chipset reservations; virtio devices are
PCI when the domain has pcie-root), real-libvirt.md rows 24-26 and pitfall 11
(ACPI on aarch64 requires UEFI, so the planner writes none).
"""

from dataclasses import replace

from ..model import Connect as C, EndpointClass as K
from . import RuleSet, _freeze
from .implicit import BALLOON, VIRTIO_SERIAL, disk_controller, video
from .q35 import PCIE_BUSES

RULES = RuleSet(
    family="virt",
    summary="aarch64/riscv64 virt (PCI Express, no chipset)",
    default_machine="virt",
    machine_pattern=r"virt(-.+)?",  # libvirt: the virt prefix (qemuDomainIsARMVirt, qemuDomainIsRISCVVirt)
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
    element_defaults=_freeze({"interface model/@type": "virtio", "usb @model": "qemu-xhci",
                              "scsi @model": "lsilogic", "video model/@type": "virtio", "panic @model": "pvpanic",
                              "panic address/@type": "pci"}),
    # riscv64 gets a balloon, aarch64 none (qemuDomainDefAddDefaultDevices in 9.0 and 11.3)
    # measured 9.0 (aarch64): with one rng at a virtio-mmio address, an unaddressed virtio NIC got one too,
    # while a twin rng written <address type='pci'/> and a 9p filesystem got root ports
    virtio_mmio=True,
    added_at_define=(replace(BALLOON, arches=("riscv64",)), disk_controller("lsilogic", "scsi", "scsi"),
                     disk_controller("ich9-ahci", "sata", "sata"), VIRTIO_SERIAL, video("virtio-gpu")),
)
