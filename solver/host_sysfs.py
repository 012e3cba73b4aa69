"""Host facts from the host: what Linux says about a PCI device in sysfs.

``--host-sysfs [ROOT]`` reads, for each assigned host device with a ``host`` address,
``ROOT/bus/pci/devices/DDDD:BB:SS.F/`` (the layout of the kernel's
Documentation/ABI/testing/sysfs-bus-pci):

* ``iommu_group``: a symbolic link to ``.../kernel/iommu_groups/N``; absent where the host
  has no IOMMU (then the group is not known);
* ``numa_node``: the host NUMA node, ``-1`` when the platform names none;
* the functions present in the same slot: the sibling entries ``DDDD:BB:SS.*``;
* ``resource``: one line per resource, ``start end flags`` in hex; lines 0-5 are the BARs
  (PCI_STD_RESOURCES), line 6 the expansion ROM, the rest bridge windows.  A BAR is used
  when ``end`` is not 0; its size is ``end - start + 1``.

The flag bits are the kernel's (include/linux/ioport.h): IORESOURCE_IO 0x100,
IORESOURCE_MEM 0x200, IORESOURCE_PREFETCH 0x2000, IORESOURCE_MEM_64 0x00100000.

Parsing (``parse_*``) is pure and takes text; :func:`read_device` does the file access.
Nothing here is read unless the user asks (``--host-sysfs``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Bar", "HostDevice", "HostSysfsError", "parse_resource", "parse_numa_node", "parse_iommu_link",
           "functions_of", "read_device", "DEFAULT_ROOT"]

DEFAULT_ROOT = "/sys"

# include/linux/ioport.h (the kernel's resource flags, as sysfs `resource` prints them)
IORESOURCE_IO = 0x00000100
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_MEM_64 = 0x00100000
# include/linux/pci.h: PCI_STD_NUM_BARS; the lines after them are the ROM and bridge windows
STD_BARS = 6

# A sysfs file of this reader is a line or a few: the resource file of a bridge is about 17 lines
# of 57 bytes.  Read no more than this of any file (a fake or broken tree stays bounded).
_MAX_READ = 64 * 1024
_SLOT_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")


class HostSysfsError(ValueError):
    """A host device that cannot be read: what and where (the caller adds the spec's line)."""


@dataclass(frozen=True)
class Bar:
    """One memory or I/O BAR of a host device."""

    index: int
    size: int  # bytes
    io: bool  # an I/O-port BAR
    prefetch: bool
    mem64: bool  # a 64-bit memory BAR


@dataclass(frozen=True)
class HostDevice:
    """What sysfs says about one host PCI function."""

    address: str  # DDDD:BB:SS.F, lower case
    path: str  # the sysfs folder read
    iommu_group: int | None  # None: no iommu_group link (no IOMMU on the host)
    numa_node: int | None  # None: -1 (the platform names no node)
    functions: tuple[int, ...]  # the functions present in its slot, ascending
    bars: tuple[Bar, ...]

    @property
    def mem_bars(self) -> tuple[Bar, ...]:
        return tuple(b for b in self.bars if not b.io)


def canonical(address: str) -> str:
    """``0000:41:00.0`` in the spelling sysfs uses (four-digit domain, lower-case hex)."""
    from .model import Address

    a = Address.parse(address)
    return str(a)


def parse_resource(text: str, where: str = "resource") -> tuple[Bar, ...]:
    """The BARs of a sysfs ``resource`` file (lines 0-5; unused ones, with end 0, left out)."""
    bars = []
    for i, line in enumerate(text.splitlines()[:STD_BARS]):
        parts = line.split()
        if len(parts) != 3 or not all(re.fullmatch(r"0x[0-9a-fA-F]{1,16}", p) for p in parts):
            raise HostSysfsError(f"{where}: line {i + 1} is not 'start end flags' in hex: {line[:60]!r}")
        start, end, flags = (int(p, 16) for p in parts)
        if end == 0:
            continue
        if end < start:
            raise HostSysfsError(f"{where}: line {i + 1} ends before it starts ({parts[0]} > {parts[1]})")
        if not flags & (IORESOURCE_MEM | IORESOURCE_IO):
            continue
        bars.append(Bar(i, end - start + 1, io=bool(flags & IORESOURCE_IO) and not flags & IORESOURCE_MEM,
                        prefetch=bool(flags & IORESOURCE_PREFETCH), mem64=bool(flags & IORESOURCE_MEM_64)))
    return tuple(bars)


def parse_numa_node(text: str, where: str = "numa_node") -> int | None:
    """A ``numa_node`` file: the node, or None for -1."""
    raw = text.strip()
    if not re.fullmatch(r"-1|[0-9]{1,4}", raw):
        raise HostSysfsError(f"{where}: {raw[:20]!r} is not a NUMA node (a number, or -1 for none)")
    n = int(raw)
    return None if n < 0 else n


def parse_iommu_link(target: str, where: str = "iommu_group") -> int:
    """The group number of an ``iommu_group`` link target (``../../../kernel/iommu_groups/N``)."""
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if not re.fullmatch(r"[0-9]{1,10}", name) or "iommu_groups" not in target:
        raise HostSysfsError(f"{where}: links to {target[:80]!r}, not to .../iommu_groups/N")
    return int(name)


def functions_of(address: str, entries: list[str]) -> tuple[int, ...]:
    """The functions of ``address``'s slot among the names of ``bus/pci/devices``."""
    m = _SLOT_RE.match(address)
    if m is None:
        return ()
    slot = address[:-2]
    return tuple(sorted(int(e[-1]) for e in entries if _SLOT_RE.match(e) and e[:-2] == slot))


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(_MAX_READ)
    return data.decode("ascii", "replace")


def read_device(address: str, root: str | os.PathLike = DEFAULT_ROOT) -> HostDevice:
    """Read one host device's facts under ``root`` (``/sys``); :class:`HostSysfsError` when it is
    not there or a file cannot be read."""
    addr = canonical(address)
    devices = Path(root) / "bus" / "pci" / "devices"
    folder = devices / addr
    if not devices.is_dir():
        raise HostSysfsError(f"{devices} is not a folder: is {root} a sysfs (mounted at /sys)?")
    if not folder.is_dir():
        raise HostSysfsError(f"no PCI device {addr} on this host ({folder} does not exist); check the address "
                             "with lspci -D")
    try:
        link = folder / "iommu_group"
        group = parse_iommu_link(os.readlink(link), str(link)) if link.is_symlink() else None
        numa_file = folder / "numa_node"
        numa = parse_numa_node(_read(numa_file), str(numa_file)) if numa_file.exists() else None
        res_file = folder / "resource"
        bars = parse_resource(_read(res_file), str(res_file)) if res_file.exists() else ()
        functions = functions_of(addr, sorted(os.listdir(devices)))
    except OSError as exc:
        raise HostSysfsError(f"cannot read {exc.filename or folder}: {exc.strerror or exc}") from None
    return HostDevice(address=addr, path=str(folder), iommu_group=group, numa_node=numa, functions=functions,
                      bars=bars)
