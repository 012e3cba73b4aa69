"""What libvirt reads from this host's sysfs when it places an assigned PCI device.

libvirt decides whether a ``<hostdev>`` is a PCI Express device by reading its
config space (qemuDomainDeviceCalculatePCIConnectFlags: a device it cannot find
counts as Express) and, on pSeries, which IOMMU group it is in
(qemuDomainFillDeviceIsolationGroup).  The prediction itself does no I/O; the
CLI reads these facts here, for the host devices the XML names, so a
prediction made on the libvirt host sees what libvirt sees.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..host_sysfs import parse_iommu_link
from .predict import HostFacts
from .read import Domain

__all__ = ["host_facts", "SYSFS"]

SYSFS = Path("/sys/bus/pci/devices")
_CAP_LIST = 0x34  # capabilities pointer in the PCI config header
_CAP_EXPRESS = 0x10  # PCI Express capability id


def _express(config: bytes, size: int) -> bool:
    """Whether a config space has a PCI Express capability (virPCIDeviceInit).  Without root only its
    first 64 bytes can be read; libvirt then guesses from the file's size: 256 bytes is conventional."""
    if len(config) <= 64:
        return size != 256
    if not config[6] & 0x10:  # status register: no capability list
        return False
    pos, seen = config[_CAP_LIST] & ~3, set()
    while pos and pos not in seen and pos + 1 < len(config):
        seen.add(pos)
        if config[pos] == _CAP_EXPRESS:
            return True
        pos = config[pos + 1] & ~3
    return False


def host_facts(domain: Domain, sysfs: Path = SYSFS) -> HostFacts:
    """The facts libvirt would read for the host devices ``domain`` assigns; a device this host does
    not have is left out (libvirt then counts it as PCI Express, in no IOMMU group)."""
    express: dict[str, bool] = {}
    groups: dict[str, int] = {}
    for d in domain.devices:
        host = d.endpoint.host
        if not host:
            continue
        dev = sysfs / host
        try:
            with open(dev / "config", "rb") as f:
                config = f.read(4096)
        except OSError:
            continue
        express[host] = _express(config, os.path.getsize(dev / "config"))
        try:
            groups[host] = parse_iommu_link(os.readlink(dev / "iommu_group"))
        except (OSError, ValueError):  # HostSysfsError is a ValueError
            pass
    return HostFacts(express=express, iommu_group=groups)
