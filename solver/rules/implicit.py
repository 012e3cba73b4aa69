"""Devices libvirt adds to a domain XML at define time, shared by the families.

Each row names the device-table model libvirt adds, what in the XML stops it and
what triggers it (qemu_postparse.c qemuDomainDefAddDefaultDevices,
domain_conf.c virDomainDefAddImplicitDevices, qemu_domain_address.c
qemuDomainAssignVirtioSerialAddresses); measured with libvirt 9.0 by defining
a guest without them and reading ``virsh dumpxml``.
"""

from . import Implicit

# A virtio console or channel needs a virtio-serial controller; libvirt adds one (index 0) if the
# XML has none, and it takes a PCI slot like any virtio device.
VIRTIO_SERIAL = Implicit("virtio-serial", unless="virtio-serial",
                         needs=(("channel", "target/@type", "virtio"), ("console", "target/@type", "virtio")),
                         source="qemuDomainAssignVirtioSerialAddresses; measured 9.0: a virtio channel alone "
                                "gets controller virtio-serial index 0 with a PCI address")
# A disk on a bus whose controller the XML lacks gets that controller, index 0, of the family's default
# model (domain_conf.c virDomainDefAddImplicitControllers; qemuDomainGetSCSIControllerModel: lsilogic on x86
# and ARM up to libvirt 11.5).  Measured 9.0: a bus='scsi' disk alone on q35 gets an lsilogic on a
# pcie-to-pci-bridge, a bus='sata' disk on pc an AHCI controller at a slot of its own.
def disk_controller(model: str, bus: str, tag: str) -> Implicit:
    return Implicit(model, unless=tag, needs=(("disk", "target/@bus", bus),),
                    source="virDomainDefAddImplicitControllers (virDomainDefAddDiskControllersForType)")


BALLOON = Implicit("virtio-balloon", unless="memballoon",
                   source="qemuDomainDefAddDefaultDevices (addDefaultMemballoon); measured 9.0")


def video(model: str) -> Implicit:
    """A guest with graphics and no video gets the family's default video card."""
    return Implicit(model, unless="video", needs=(("graphics", "@type", "*"),),
                    source="virDomainDefAddImplicitVideo; measured 9.0: <graphics> alone gets a primary video")


def usb(model: str) -> Implicit:
    return Implicit(model, unless="usb", source="qemuDomainDefAddDefaultDevices (addDefaultUSB); measured 9.0")
