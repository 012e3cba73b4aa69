"""Devices libvirt adds to a domain XML at define time, shared by the families.

Each row names the device-table model libvirt adds, what in the XML stops it and
what triggers it (qemu_postparse.c qemuDomainDefAddDefaultDevices,
domain_conf.c virDomainDefAddImplicitDevices, qemu_domain_address.c
qemuDomainAssignVirtioSerialAddresses); measured with libvirt 9.0 by defining
a guest without them and reading ``virsh dumpxml``.
"""

from . import Default, Implicit
from .versions import Bound, Range

# libvirt NEWS v11.9.0: the USB controller model libvirt picks (for <controller type='usb'/> without a model and
# for the one it adds by itself) was reworked, "Intel USB only for x86"; what it picks since is not read here.
# So before 11.9 the models below hold (measured 9.0 and 11.3), and from 11.9 on the tables do not know.
USB_UNTIL_11_9 = Range(until=(Bound("libvirt", (11, 9), "libvirt NEWS.rst v11.9.0: USB controller model selection "
                                    "reworked (what it picks since is not known here)", unknown_from=True),))

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
    return Implicit(model, unless="usb", source="qemuDomainDefAddDefaultDevices (addDefaultUSB); measured 9.0",
                    versions=USB_UNTIL_11_9)


def usb_default(model: str) -> tuple[Default, ...]:
    """<controller type='usb'/> without a model: ``model`` before libvirt 11.9, not known from 11.9 on."""
    return (Default("usb @model", model, USB_UNTIL_11_9, "qemuDomainControllerDefPostParse; measured 9.0"),)


# The iTCO watchdog of the ICH9 chipset: libvirt 9.1 and later add <watchdog model='itco' action='reset'/> to
# every q35 guest that has no itco watchdog (another model does not stop it: measured 11.3 with an
# i6300esb).  It is a chipset function with no PCI address, so it takes no slot; the define-diff and audit
# checks must not count it as a change.  libvirt NEWS v9.1.0 ("iTCO watchdog made operational"); measured:
# 9.0 adds none (and refuses the model), 11.3 adds it, to pc-q35-7.2 guests too.
ITCO_WATCHDOG = Implicit("itco-watchdog", unless="watchdog", unless_match=("watchdog", "@model", "itco"),
                         source="qemuDomainDefAddDefaultDevices (addITCOWatchdog), libvirt NEWS.rst v9.1.0; "
                                "measured 9.0 and 11.3",
                         versions=Range(since=(Bound("libvirt", (9, 1), "libvirt NEWS.rst v9.1.0: iTCO watchdog "
                                                     "made operational; measured 9.0 (none) and 11.3 (added)"),)))
