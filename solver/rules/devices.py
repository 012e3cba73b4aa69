"""The device models: every element libvirt gives a PCI address, and the ones it does not.

One row per model libvirt tells apart (qemu_domain_address.c,
qemuDomainDeviceCalculatePCIConnectFlags).  Its class is the one libvirt
computes on a machine whose root is pcie-root; each family then maps the class
to what its buses see (on pc and pseries everything is conventional PCI).
``category`` is libvirt's placement order (qemuDomainAssignDevicePCISlots):
PCI controllers, filesystems, nets, sound, other controllers, virtio disks,
hostdevs, the balloon, rngs, watchdogs, videos, shared memory, inputs,
pci-serial, the IOMMU, vsock, memory devices, crypto, panic.

``mmio=True`` rows are the ones libvirt primes for virtio-mmio on ARM and RISC-V virt guests
(qemuDomainPrimeVirtioDeviceAddresses: virtio disks, virtio NICs, virtio video and inputs,
virtio-serial and every SCSI controller, vhost-scsi, the balloon, rngs, virtio-mem/pmem).

``spec=True`` rows are the models a spec may name (the writer renders them);
every row is known to the domain-XML reader.  Rows with ``cls=None`` are
elements of the same tags that take no PCI address (a USB controller of model
``none``, ``ramfb`` video, a ps2 input): the reader passes them through, and an
element of a PCI-taking tag that matches no row is an error, never a silent
skip.
"""

from __future__ import annotations

from types import MappingProxyType

from ..model import EndpointClass
from . import DeviceKind
from .versions import Bound, Range

E, P, H = EndpointClass.PCIE, EndpointClass.PCI, EndpointClass.HOSTDEV
_SRC = "qemuDomainDeviceCalculatePCIConnectFlags"
_HOT = "qemu_hotplug.c qemuDomainAttachDeviceLive"

# Category numbers follow qemuDomainAssignDevicePCISlots.
(FS, NET, SOUND, CONTROLLER, DISK, HOSTDEV, BALLOON, RNG, WATCHDOG, VIDEO, SHMEM, INPUT, SERIAL, IOMMU, VSOCK,
 MEMORY, CRYPTO_CAT, PANIC) = range(2, 20)
NONE = 0  # takes no PCI address

# -- version ranges (rules_for selects by them; tests/test_judges.py measures each on both judges)
_NEWS = "libvirt NEWS.rst"
# QEMU 8.0 added the igb device (qemu docs/system/devices/igb.rst @ 28ea66f6f985).  libvirt 9.3 added 'igb'
# to its NIC model list (NEWS v9.3.0); libvirt 9.0 keeps the string as an unknown model and places it like a
# PCIe device all the same (measured), so only QEMU's version decides.  Measured: QEMU 7.2 refuses "'igb' is
# not a valid device model name" at start and at hotplug; QEMU 10.0 starts and hotplugs it.
IGB = Range(since=(Bound("qemu", (8, 0), "QEMU 8.0: hw/net/igb.c, docs/system/devices/igb.rst @ 28ea66f6f985"),))
# libvirt NEWS v10.4.0: <sound model='virtio'/>, for QEMU 8.2's virtio-sound-pci.  Measured: libvirt 9.0
# refuses "Invalid value for attribute 'model' in element 'sound': 'virtio'"; 11.3 + QEMU 10.0 starts it.
VIRTIO_SOUND = Range(since=(Bound("libvirt", (10, 4), _NEWS + " v10.4.0: virtio sound"),
                            Bound("qemu", (8, 2), _NEWS + " v10.4.0: needs QEMU 8.2 (virtio-sound-pci)")))
# libvirt NEWS v9.1.0: virtio-crypto and <panic model='pvpanic'/> (pvpanic-pci).  Measured: 9.0 defines a
# <crypto> and drops it silently, and refuses "unknown panic model 'pvpanic'".
CRYPTO = Range(since=(Bound("libvirt", (9, 1), _NEWS + " v9.1.0: virtio-crypto; measured: 9.0 drops <crypto> "
                                                       "silently"),))
PVPANIC_PCI = Range(since=(Bound("libvirt", (9, 1), _NEWS + " v9.1.0: pvpanic-pci; measured: 9.0 refuses "
                                                            "\"unknown panic model 'pvpanic'\""),))
# libvirt NEWS v9.1.0, 'QEMU: iTCO watchdog made operational'; measured: 9.0 refuses "unknown watchdog model
# 'itco'", 11.3 takes it (and adds one to every q35 guest, rules/q35.py).
ITCO = Range(since=(Bound("libvirt", (9, 1), _NEWS + " v9.1.0: iTCO watchdog; measured: 9.0 refuses \"unknown "
                                                     "watchdog model 'itco'\""),))
# libvirt NEWS v10.6.0: pstore device (acpi-erst; QEMU 7.1, older than the oldest target).
PSTORE = Range(since=(Bound("libvirt", (10, 6), _NEWS + " v10.6.0: pstore (acpi-erst)"),))
# libvirt NEWS v11.5.0: NVMe disks (<target bus='nvme'/>, on an NVMe controller libvirt adds).  Neither judge
# has them: both refuse "Invalid value for attribute 'bus' in element 'target': 'nvme'" (measured).
NVME = Range(since=(Bound("libvirt", (11, 5), _NEWS + " v11.5.0: NVMe disks"),))
_NVME_UNPLANNED = ("an NVMe disk hangs on an NVMe controller that libvirt 11.5 and later add and place; topo-solve "
                   "has not measured where (no judge has libvirt 11.5), so it cannot plan around one yet")
# Hotplug of a virtio-serial controller: qemuDomainAttachControllerDevice took SCSI controllers only in 9.0
# (measured: "'virtio-serial' controller cannot be hot plugged."); 11.3 attaches one like any endpoint of its
# class (measured; qemu_hotplug.c 11.3 takes SCSI and VIRTIO_SERIAL).  libvirt's NEWS from 9.1 to 11.3 does
# not name the change, so the first version that accepts it is not known.  Detach: refused in both.
VIRTIO_SERIAL_HOTPLUG = Range(since=(Bound("libvirt", None, "measured: 9.0 refuses, 11.3 accepts "
                                           "(attach-device --live); the first version is not in NEWS",
                                           old=(9, 0), new=(11, 3)),))

# The model values libvirt reads as modern (PCI Express) virtio, and as transitional.
MODERN = ("", "virtio", "virtio-non-transitional")
TRANSITIONAL = ("virtio-transitional",)
ANY = ("*",)

_rows: list[DeviceKind] = [
    # -- NICs.  <interface type='hostdev'> is an assigned device, addressed with the hostdevs.
    DeviceKind("hostdev-net", H, "interface", "hostdev", HOSTDEV, True, _SRC + ": interface type=hostdev",
               match=(("@type", ("hostdev",)),)),
    DeviceKind("virtio-net", E, "interface", "virtio", NET, True, _SRC + ": virtio net", spec=True,
               mmio=True, multifunction=True, match=(("model/@type", ("virtio", "virtio-non-transitional")),)),
    DeviceKind("virtio-net-transitional", P, "interface", "virtio-transitional", NET, True,
               _SRC + ": transitional virtio is conventional PCI (libvirt 5.2.0)", spec=True, io_bar=True,
               mmio=True, match=(("model/@type", TRANSITIONAL),)),
    DeviceKind("e1000", P, "interface", "e1000", NET, True, _SRC + ": non-virtio NIC", spec=True, io_bar=True,
               match=(("model/@type", ("e1000",)),)),
    # virtio-net, e1000e and virtio-blk may be grouped too (multifunction=True): QEMU takes any PCI device at an
    # explicit function of a slot whose function 0 says multifunction=on; the real-libvirt tests use them as
    # stand-ins for a multifunction host device where no VFIO device exists
    DeviceKind("e1000e", E, "interface", "e1000e", NET, True, _SRC + ": e1000e", spec=True, io_bar=True,
               multifunction=True,
               match=(("model/@type", ("e1000e",)),)),
    DeviceKind("igb", E, "interface", "igb", NET, True, _SRC + ": igb (libvirt 9.3 names it; QEMU 8.0 has the "
               "device)", spec=True, io_bar=True, versions=IGB, match=(("model/@type", ("igb",)),)),
    DeviceKind("rtl8139", P, "interface", "rtl8139", NET, True, _SRC + ": non-virtio NIC", spec=True, io_bar=True,
               match=(("model/@type", ("rtl8139",)),)),
    # the other NIC models of libvirt's own list (virDomainNetModel) are conventional PCI
    DeviceKind("vmxnet3", P, "interface", "vmxnet3", NET, True, _SRC + ": non-virtio NIC", io_bar=True,
               match=(("model/@type", ("vmxnet3", "vmxnet", "vmxnet2", "vlance", "netfront", "Am79C970A",
                                        "Am79C973", "82540EM", "82545EM", "82543GC")),)),
    # spapr-vlan is a spapr-vio device on pseries; usb-net a USB device; neither takes a PCI slot
    DeviceKind("spapr-vlan", None, "interface", "spapr-vlan", NONE, False, _SRC + ": spapr-vio, not PCI",
               match=(("model/@type", ("spapr-vlan", "usb-net", "lan9118", "smc91c111")),)),
    # Any other model string (ne2k_pci, pcnet, i82559er...) is outside libvirt's list: libvirt keeps it
    # as "unknown" and places it like a PCI Express device (the branch meant for hostdev networks);
    # measured 9.0: an ne2k_pci NIC on q35 got a root port.  igb is one of these on libvirt 9.0.
    DeviceKind("nic-other", E, "interface", "", NET, True, _SRC + ": NET_MODEL_UNKNOWN takes pcieFlags",
               match=(("model/@type", ANY),)),

    # -- disks: only virtio disks take a slot of their own (SATA, SCSI, IDE disks hang on a controller)
    DeviceKind("virtio-blk", E, "disk", "virtio", DISK, True, _SRC + ": virtio disk", spec=True,
               mmio=True, multifunction=True, match=(("target/@bus", ("virtio",)), ("@model", MODERN))),
    DeviceKind("virtio-blk-transitional", P, "disk", "virtio-transitional", DISK, True, _SRC, spec=True, io_bar=True,
               mmio=True, match=(("target/@bus", ("virtio",)), ("@model", TRANSITIONAL))),
    DeviceKind("nvme-disk", None, "disk", "", NONE, False, _NEWS + " v11.5.0: a namespace of an NVMe controller",
               versions=NVME, what="an NVMe disk", unplanned=_NVME_UNPLANNED, match=(("target/@bus", ("nvme",)),)),
    DeviceKind("disk", None, "disk", "", NONE, False, _SRC + ": a disk on a controller's bus",
               match=(("target/@bus", ANY),)),

    # -- controllers (not PCI ones).  USB2 companions share one slot: ehci at .7, uhci 1-3 at .0-.2.
    DeviceKind("virtio-scsi", E, "scsi", "virtio-scsi", CONTROLLER, True, _SRC + ": virtio-scsi controller",
               spec=True, mmio=True,
               match=(("@type", ("scsi",)), ("@model", ("virtio-scsi", "virtio-non-transitional")))),
    DeviceKind("virtio-scsi-transitional", P, "scsi", "virtio-transitional", CONTROLLER, True, _SRC, spec=True,
               io_bar=True, mmio=True, match=(("@type", ("scsi",)), ("@model", TRANSITIONAL))),
    DeviceKind("lsilogic", P, "scsi", "lsilogic", CONTROLLER, True, _SRC + ": emulated SCSI HBA", io_bar=True,
               mmio=True, match=(("@type", ("scsi",)), ("@model", ("lsilogic", "lsisas1068", "lsisas1078", "mptsas1068",
                                                       "megasas", "buslogic", "vmpvscsi", "am53c974", "dc390")))),
    DeviceKind("ibmvscsi", None, "scsi", "ibmvscsi", NONE, False, _SRC + ": spapr-vio, not PCI",
               match=(("@type", ("scsi",)), ("@model", ("ibmvscsi", "ncr53c90", "virtio-mmio")))),
    DeviceKind("virtio-serial", E, "virtio-serial", "virtio", CONTROLLER, True,
               _SRC + "; hotplug: see VIRTIO_SERIAL_HOTPLUG; never unplugged ('virtio-serial' controller cannot "
               "be hot unplugged, 9.0 and 11.3)", spec=True, unplug=False, hotplug_versions=VIRTIO_SERIAL_HOTPLUG,
               what="a virtio-serial controller", mmio=True,
               match=(("@type", ("virtio-serial",)), ("@model", MODERN))),
    DeviceKind("virtio-serial-transitional", P, "virtio-serial", "virtio-transitional", CONTROLLER, True,
               _SRC + "; hotplug as virtio-serial (measured 11.3: on a pcie-to-pci-bridge slot)", spec=True,
               io_bar=True, unplug=False, hotplug_versions=VIRTIO_SERIAL_HOTPLUG, mmio=True,
               what="a transitional virtio-serial controller",
               match=(("@type", ("virtio-serial",)), ("@model", TRANSITIONAL))),
    # <controller type='nvme'> (libvirt 11.5): a PCIe endpoint (QEMU's nvme device); not measured
    DeviceKind("nvme", E, "nvme", "", CONTROLLER, False, _NEWS + " v11.5.0: NVMe controller", versions=NVME,
               what="an NVMe controller", unplanned=_NVME_UNPLANNED, match=(("@type", ("nvme",)),)),
    DeviceKind("qemu-xhci", E, "usb", "qemu-xhci", CONTROLLER, False, _SRC + ": USB qemu-xhci; "
               "'usb' controller cannot be hot plugged", spec=True,
               match=(("@type", ("usb",)), ("@model", ("qemu-xhci", "nec-xhci")))),
    DeviceKind("piix3-uhci", P, "usb", "piix3-uhci", CONTROLLER, False,
               "qemuDomainValidateDevicePCISlotsPIIX3: USB at 00:01.2", role="piix3-usb", io_bar=True,
               match=(("@type", ("usb",)), ("@model", ("piix3-uhci",)))),
    DeviceKind("piix4-uhci", P, "usb", "piix4-uhci", CONTROLLER, False, _SRC + ": USB uhci", io_bar=True,
               match=(("@type", ("usb",)), ("@model", ("piix4-uhci", "vt82c686b-uhci")))),
    DeviceKind("ich9-ehci1", P, "usb", "ich9-ehci1", CONTROLLER, False, _SRC + ": USB2 set; "
               "qemuDomainPCIAddressReserveNextAddr keeps a set on one slot", companions="usb2", function=7,
               match=(("@type", ("usb",)), ("@model", ("ich9-ehci1",)))),
    DeviceKind("ich9-uhci1", P, "usb", "ich9-uhci1", CONTROLLER, False, _SRC + ": USB2 companion", io_bar=True,
               companions="usb2", function=0, match=(("@type", ("usb",)), ("@model", ("ich9-uhci1",)))),
    DeviceKind("ich9-uhci2", P, "usb", "ich9-uhci2", CONTROLLER, False, _SRC + ": USB2 companion", io_bar=True,
               companions="usb2", function=1, match=(("@type", ("usb",)), ("@model", ("ich9-uhci2",)))),
    DeviceKind("ich9-uhci3", P, "usb", "ich9-uhci3", CONTROLLER, False, _SRC + ": USB2 companion", io_bar=True,
               companions="usb2", function=2, match=(("@type", ("usb",)), ("@model", ("ich9-uhci3",)))),
    DeviceKind("ehci", P, "usb", "ehci", CONTROLLER, False, _SRC + ": USB ehci/ohci",
               match=(("@type", ("usb",)), ("@model", ("ehci", "pci-ohci")))),
    DeviceKind("usb-none", None, "usb", "none", NONE, False, "model='none': no USB controller",
               match=(("@type", ("usb",)), ("@model", ("none", "qusb1", "qusb2")))),
    # SATA controller 0 is the ICH9 chipset's own function on q35 (a fixed address where the family has
    # the role); any other SATA controller is an AHCI card of its own
    DeviceKind("ich9-ahci", E, "sata", "", CONTROLLER, False, "qemuDomainValidateDevicePCISlotsQ35: SATA at "
               "00:1f.2", role="sata", match=(("@type", ("sata",)), ("@index", ("", "0")))),
    DeviceKind("ahci", P, "sata", "", CONTROLLER, False, _SRC + ": an extra SATA (AHCI) controller",
               io_bar=True, match=(("@type", ("sata",)),)),
    DeviceKind("piix3-ide", P, "ide", "", CONTROLLER, False, "qemuDomainValidateDevicePCISlotsPIIX3: IDE at "
               "00:01.1", role="ide", families=frozenset({"pc"}), io_bar=True, match=(("@type", ("ide",)),)),

    # -- sound
    DeviceKind("ich9-hda", P, "sound", "ich9", SOUND, False, _SRC + ": sound ich9", spec=True,
               match=(("@model", ("ich9",)),)),
    DeviceKind("ich6-hda", P, "sound", "ich6", SOUND, False, _SRC + ": sound ich6",
               match=(("@model", ("ich6",)),)),
    DeviceKind("ac97", P, "sound", "ac97", SOUND, False, _SRC + ": sound ac97/es1370 (I/O BARs, measured)",
               io_bar=True, match=(("@model", ("ac97", "es1370")),)),
    DeviceKind("virtio-sound", E, "sound", "virtio", SOUND, False, _SRC + ": virtio sound (libvirt 10.4, QEMU 8.2)",
               versions=VIRTIO_SOUND, what="a virtio sound card", match=(("@model", ("virtio",)),)),
    DeviceKind("sound-isa", None, "sound", "", NONE, False, _SRC + ": sb16, pcspk, usb, ich7: not PCI",
               match=(("@model", ("sb16", "pcspk", "usb", "ich7")),)),

    # -- assigned devices
    # multifunction: a host device's functions go to one guest slot, function 0 with multifunction='on'
    # (libvirt keeps an explicit address and its multifunction attribute: virDomainDeviceInfo, as Proxmox
    # and Unraid assign a GPU with its audio function)
    DeviceKind("hostdev", H, "hostdev", "pci", HOSTDEV, True, _SRC + ": PCI hostdev", spec=True,
               multifunction=True, match=(("@type", ("pci",)),)),
    DeviceKind("mdev", E, "hostdev", "mdev", HOSTDEV, True, _SRC + ": vfio-pci mdev",
               match=(("@type", ("mdev",)), ("@model", ("vfio-pci",)))),
    DeviceKind("vhost-scsi", E, "hostdev", "scsi_host", HOSTDEV, True, _SRC + ": vhost-scsi follows virtio",
               mmio=True, match=(("@type", ("scsi_host",)), ("@model", MODERN))),
    DeviceKind("vhost-scsi-transitional", P, "hostdev", "scsi_host", HOSTDEV, True,
               _SRC + ": transitional vhost-scsi is conventional PCI", io_bar=True,
               mmio=True, match=(("@type", ("scsi_host",)), ("@model", TRANSITIONAL))),
    DeviceKind("hostdev-other", None, "hostdev", "", NONE, False, "USB and SCSI hostdevs, ccw/ap mdevs: not PCI",
               match=(("@type", ("usb", "scsi", "mdev")),)),

    DeviceKind("virtio-balloon", E, "memballoon", "virtio", BALLOON, False, _SRC + ": virtio memballoon",
               spec=True, max_count=1, mmio=True, match=(("@model", ("virtio", "virtio-non-transitional")),)),
    DeviceKind("virtio-balloon-transitional", P, "memballoon", "virtio-transitional", BALLOON, False, _SRC,
               spec=True, max_count=1, io_bar=True, mmio=True, match=(("@model", TRANSITIONAL),)),
    DeviceKind("memballoon-none", None, "memballoon", "none", NONE, False, "model='none' or xen: not PCI",
               match=(("@model", ("none", "xen")),)),

    DeviceKind("virtio-rng", E, "rng", "virtio", RNG, True, _SRC + ": virtio rng", spec=True,
               mmio=True, match=(("@model", ("virtio", "virtio-non-transitional")),)),
    DeviceKind("virtio-rng-transitional", P, "rng", "virtio-transitional", RNG, True, _SRC, spec=True, io_bar=True,
               mmio=True, match=(("@model", TRANSITIONAL),)),

    DeviceKind("i6300esb", P, "watchdog", "i6300esb", WATCHDOG, True, _SRC + ": i6300esb watchdog",
               match=(("@model", ("i6300esb",)),)),
    DeviceKind("itco-watchdog", None, "watchdog", "itco", NONE, False, "the ICH9 TCO watchdog: a chipset "
               "function, not a PCI slot (libvirt 9.1)", versions=ITCO, what="the itco watchdog",
               match=(("@model", ("itco",)),)),
    DeviceKind("watchdog", None, "watchdog", "", NONE, False, "ib700, diag288: not PCI",
               match=(("@model", ("ib700", "diag288")),)),

    # -- video: the primary one prefers a chipset address (q35 00:01.0, pc 00:02.0)
    DeviceKind("virtio-gpu", E, "video", "virtio", VIDEO, False, _SRC + ": virtio video", spec=True, video=True,
               mmio=True, match=(("model/@type", ("virtio",)),)),
    DeviceKind("qxl", P, "video", "qxl", VIDEO, False, _SRC + ": video qxl", spec=True, video=True, io_bar=True,
               families=frozenset({"q35", "pc"}), match=(("model/@type", ("qxl",)),)),
    DeviceKind("vga", P, "video", "vga", VIDEO, False, _SRC + ": video vga", spec=True, video=True,
               match=(("model/@type", ("vga",)),)),
    DeviceKind("cirrus", P, "video", "cirrus", VIDEO, False, _SRC + ": video cirrus", video=True,
               match=(("model/@type", ("cirrus",)),)),
    DeviceKind("vmvga", P, "video", "vmvga", VIDEO, False, _SRC + ": video vmvga (an I/O BAR, measured)", video=True,
               io_bar=True, match=(("model/@type", ("vmvga",)),)),
    DeviceKind("bochs", E, "video", "bochs", VIDEO, False, _SRC + ": video bochs", video=True,
               match=(("model/@type", ("bochs",)),)),
    DeviceKind("video-none", None, "video", "none", NONE, False, "ramfb and none take no PCI slot",
               match=(("model/@type", ("none", "ramfb", "gop", "xen", "vbox", "parallels")),)),

    # <shmem> without <model> is model 'ivshmem', the enum's first value (domain_conf.c
    # virDomainShmemDefParseXML); every model takes pciFlags
    DeviceKind("ivshmem", P, "shmem", "ivshmem-plain", SHMEM, True, _SRC + ": ivshmem (shmem)",
               match=(("model/@type", ("", "ivshmem", "ivshmem-plain", "ivshmem-doorbell")),)),
    DeviceKind("acpi-erst", P, "pstore", "acpi-erst", PANIC + 1, False, _SRC + ": pstore acpi-erst (libvirt 10.6)",
               versions=PSTORE, what="a pstore (acpi-erst) device", match=(("@backend", ("acpi-erst",)),)),

    DeviceKind("virtio-input", E, "input", "virtio", INPUT, True, _SRC + ": virtio input", spec=True,
               mmio=True, match=(("@bus", ("virtio",)), ("@model", MODERN))),
    # libvirt refuses the transitional models on every virtio input ("virtio (non-)transitional models are
    # not supported for input type=..."; measured 9.0), so a spec cannot ask for one
    DeviceKind("virtio-input-transitional", P, "input", "virtio-transitional", INPUT, True,
               _SRC + "; qemu_validate.c refuses it", io_bar=True,
               mmio=True, match=(("@bus", ("virtio",)), ("@model", TRANSITIONAL))),
    DeviceKind("input", None, "input", "", NONE, False, "ps2, usb, xen inputs: not PCI",
               match=(("@bus", ANY),)),

    DeviceKind("pci-serial", P, "serial", "pci-serial", SERIAL, True, _SRC + ": pci-serial; measured 9.0: "
               "attach-device --live takes it and detach removes it", spec=True,
               io_bar=True, match=(("target/@type", ("pci-serial",)),)),
    DeviceKind("serial", None, "serial", "", NONE, False, "isa, usb, spapr-vty, system serials: not PCI",
               match=(("target/@type", ANY),)),

    DeviceKind("virtiofs", E, "filesystem", "virtiofs", FS, True, _SRC + ": virtiofs (vhost-user-fs)",
               match=(("driver/@type", ("virtiofs",)),)),
    DeviceKind("virtio-9p", E, "filesystem", "9p", FS, False, _SRC + ": 9p filesystem follows virtio",
               match=(("driver/@type", ANY), ("@model", MODERN))),
    DeviceKind("virtio-9p-transitional", P, "filesystem", "9p", FS, False, _SRC, io_bar=True,
               match=(("driver/@type", ANY), ("@model", TRANSITIONAL))),

    DeviceKind("virtio-iommu", E, "iommu", "virtio", IOMMU, False, _SRC + ": virtio-iommu is integrated",
               integrated=True, match=(("@model", ("virtio",)),)),
    DeviceKind("iommu", None, "iommu", "", NONE, False, "intel, smmuv3: not PCI endpoints",
               match=(("@model", ANY),)),
    DeviceKind("vhost-vsock", E, "vsock", "virtio", VSOCK, True, _SRC + ": vsock follows virtio",
               match=(("@model", MODERN),)),
    DeviceKind("vhost-vsock-transitional", P, "vsock", "virtio-transitional", VSOCK, True, _SRC, io_bar=True,
               match=(("@model", TRANSITIONAL),)),
    DeviceKind("virtio-mem", E, "memory", "virtio-mem", MEMORY, True, _SRC + ": virtio-mem / virtio-pmem",
               mmio=True, match=(("@model", ("virtio-mem", "virtio-pmem")),)),
    DeviceKind("memory", None, "memory", "", NONE, False, "dimm, nvdimm: not PCI", match=(("@model", ANY),)),
    DeviceKind("virtio-crypto", P, "crypto", "virtio", CRYPTO_CAT, False, _SRC + ": crypto takes pciFlags",
               versions=CRYPTO, what="a virtio-crypto device", match=(("@model", ANY),)),
    # model 'pvpanic' is the PCI one (an ISA pvpanic is model 'isa', x86's default); an isa address makes it
    # no PCI device at all (NOT_PCI_ADDRESSES)
    DeviceKind("pvpanic-pci", P, "panic", "pvpanic", PANIC, False, _SRC + ": pvpanic-pci is integrated",
               integrated=True, versions=PVPANIC_PCI, what="a pvpanic-pci device", match=(("@model", ("pvpanic",)),)),
    DeviceKind("panic", None, "panic", "", NONE, False, "isa pvpanic, pseries, hyperv, s390: not PCI",
               match=(("@model", ANY),)),
]

# Every model, by name, in match order.
KINDS = MappingProxyType({d.name: d for d in _rows})
# The models a spec may name.
DEVICES = MappingProxyType({d.name: d for d in _rows if d.spec})
# Devices libvirt adds by itself that take no slot of their own (a chipset function).
CHIPSET = MappingProxyType({n: KINDS[n] for n in ("piix3-uhci", "ich9-ahci")})
# Element tags where some model takes a PCI address: an unknown model there is an error.
# (A <controller> is looked up by its type: 'scsi', 'usb', 'virtio-serial', 'sata', 'ide'.)
PCI_TAGS = frozenset(d.element for d in _rows if d.cls is not None)
ROWS = tuple(_rows)


def kind(name: str) -> DeviceKind:
    return KINDS[name]


# Models with an I/O-space BAR.  The firmware gives a port (root or downstream) a 4 KiB
# I/O window only when a device behind it has one (QEMU docs/pcie.txt, "IO space issues"),
# and the 64 KiB I/O space holds about 10-14 such windows after the chipset's share.
# Modern virtio, xHCI and HDA use MMIO only; legacy (transitional) virtio keeps its I/O
# BAR 0.  An assigned device's BARs are the host device's: unknown here, so not counted.
IO_BAR = frozenset(d.name for d in _rows if d.io_bar)
