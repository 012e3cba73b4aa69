"""A tiny Linux guest for the guest-eye tests: Debian's kernel + a busybox initramfs.

No disk image and no network inside the guest.  The kernel comes from Debian's
``linux-image-<arch>`` package, taken apart with ``dpkg-deb`` (nothing is
installed on the host); busybox from ``busybox-static``.  The initramfs is a
gzip'd newc cpio written here: ``/init`` (the shell script below), busybox and
the few driver modules a NIC needs (so the guest names its interfaces).

The init script prints one line per fact, each starting with ``TSG `` so the
test finds them among kernel messages on the serial console:

    TSG boot arch=x86_64 kernel=6.1.0-57-amd64 efi=0
    TSG pci 0000:01:00.0 class=0x020000 id=1af4:1041 sec=- sub=- drv=virtio-pci
    TSG res 0000:01:00.0 4 0x00000000fe000000 0x00000000fe003fff 0x000000000014220c
    TSG net eth0 pci=0000:01:00.0 acpi_index=- label=-
    TSG klog pci 0000:02:00.0: BAR 0: no space for [io  size 0x0020]
    TSG ready pci=12 net=1
    TSG add 0000:05:00.0 ...   (then its cfg and res lines and "TSG end 0000:05:00.0"; a hotplugged device)
    TSG del 0000:05:00.0
    TSG netdel eth3

``cfg`` lines are the six BAR registers of the device's config space (an
unassigned I/O BAR reads 0x00000001: the kernel drops a BAR it could not place
from ``resource``, so that file alone does not show it).
``res`` lines are the device's sysfs ``resource`` file, one per non-empty row
(row 0-5 BARs, 6 ROM, 13-15 a bridge's I/O, memory and prefetchable windows).

Run as a script it fetches what the tests need into the cache (CI's
.ci/guest-image does that): ``python -m tests.guest_image fetch [--arch aarch64]``.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GuestImage", "cache_dir", "ensure_image", "ImageUnavailable"]

#: Debian architecture names and the kernel meta-package for each guest arch.
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
KERNEL_META = {"x86_64": "linux-image-amd64", "aarch64": "linux-image-arm64"}
#: The serial console device of each arch's default UART.
CONSOLE = {"x86_64": "ttyS0", "aarch64": "ttyAMA0"}
#: Modules whose drivers name a NIC (and what they need), loaded by /init in
#: dependency order.  Nothing else needs a driver: BARs are assigned by the PCI
#: core, which is built in (CONFIG_PCI, CONFIG_HOTPLUG_PCI_PCIE/_ACPI/_SHPC=y).
MODULES = ("virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "8139cp", "8139too")

CACHE_ENV = "TOPO_SOLVE_GUEST_CACHE"
DEFAULT_CACHE = Path("/var/tmp/topo-solve-guest")
PREFIX = "TSG "


class ImageUnavailable(RuntimeError):
    """The kernel or busybox cannot be had here (not fetched and no apt)."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass(frozen=True)
class GuestImage:
    arch: str
    kernel: Path
    initrd: Path
    version: str  # the kernel release, e.g. 6.1.0-57-amd64
    package: str  # the Debian package and version it came from
    console: str  # the console device for the kernel command line

    def cmdline(self, extra: str = "") -> str:
        # loglevel=2: only errors and worse reach the console; /init reads the PCI
        # messages from dmesg itself and prints them as TSG klog lines.
        return f"console={self.console} loglevel=2 panic=-1 {extra}".strip()


# --------------------------------------------------------------------------
# fetching (apt-get download + dpkg-deb -x; nothing is installed)
# --------------------------------------------------------------------------


def _run(cmd: list[str], **kw) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kw)
    except FileNotFoundError:
        raise ImageUnavailable(f"{cmd[0]} is not installed") from None
    if p.returncode != 0:
        raise ImageUnavailable(f"{' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")
    return p.stdout


def _native(arch: str) -> bool:
    return DEB_ARCH[arch] == _run(["dpkg", "--print-architecture"]).strip()


def _apt_opts(arch: str) -> list[str]:
    """apt options for ``arch``: none for the host's own; for another, private package
    lists in the cache (the host's dpkg architectures and lists stay as they are)."""
    if _native(arch):
        return []
    base = cache_dir() / f"apt-{DEB_ARCH[arch]}"
    lists = base / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    opts = ["-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={base / 'cache'}",
            "-o", f"APT::Architecture={DEB_ARCH[arch]}", "-o", f"APT::Architectures::={DEB_ARCH[arch]}"]
    if not any(lists.glob("*Packages*")):
        _run(["apt-get", *opts, "update", "-q"])
    return opts


def _resolve_kernel_package(arch: str, opts: list[str]) -> str:
    """The versioned image package the meta-package depends on (e.g. linux-image-6.1.0-57-amd64)."""
    out = _run(["apt-cache", *opts, "depends", KERNEL_META[arch]])
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1).split(":")[0]
    raise ImageUnavailable(f"apt-cache knows no {KERNEL_META[arch]} (apt-get update first)")


def _download(package: str, arch: str, opts: list[str], into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}_*_{DEB_ARCH[arch]}.deb"
    have = sorted(into.glob(pattern))
    if have:
        return have[-1]
    # apt's sandbox user cannot write into a root-owned cache; it falls back to
    # root with a warning, which is fine here.
    _run(["apt-get", *opts, "download", "-q", f"{package}:{DEB_ARCH[arch]}"], cwd=into)
    have = sorted(into.glob(pattern))
    if not have:
        raise ImageUnavailable(f"apt-get download {package}:{DEB_ARCH[arch]} left no .deb in {into}")
    return have[-1]


def fetch(arch: str = "x86_64") -> Path:
    """Kernel tree (boot/ + lib/modules/) and busybox for ``arch`` in the cache; returns its folder."""
    if arch not in DEB_ARCH:
        raise ImageUnavailable(f"no guest image for arch {arch}; have {sorted(DEB_ARCH)}")
    root = cache_dir() / arch
    done = root / "fetched"
    if done.exists():
        return root
    debs = cache_dir() / "debs"
    opts = _apt_opts(arch)
    kdeb = _download(_resolve_kernel_package(arch, opts), arch, opts, debs)
    bdeb = _download("busybox-static", arch, opts, debs)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in (kdeb, bdeb):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    (tmp / "fetched").write_text(f"{kdeb.name}\n{bdeb.name}\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


# --------------------------------------------------------------------------
# the initramfs
# --------------------------------------------------------------------------

INIT = r"""#!/bin/busybox sh
# topo-solve guest probe: report what the kernel sees on the PCI bus, then every hotplug.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
exec >/dev/console 2>&1 </dev/null
P="TSG"
efi=0; [ -d /sys/firmware/efi ] && efi=1
echo "$P boot arch=$(uname -m) kernel=$(uname -r) efi=$efi"
for m in @MODULES@; do insmod /lib/modules/$m.ko 2>/dev/null; done

val() { if [ -r "$1" ]; then v=$(cat "$1" 2>/dev/null); echo "${v:--}"; else echo -; fi; }

pci_report() {  # $1 = word (pci|add), $2 = address
    d=/sys/bus/pci/devices/$2
    drv=-; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
    echo "$P $1 $2 class=$(val $d/class) id=$(val $d/vendor | sed s/0x//):$(val $d/device | sed s/0x//) sec=$(val $d/secondary_bus_number) sub=$(val $d/subordinate_bus_number) drv=$drv"
    echo "$P cfg $2 $(od -A n -t x4 -j 16 -N 24 $d/config 2>/dev/null | tr -s ' \n' '  ')"
    i=0
    while read s e f; do
        [ "$f" != "0x0000000000000000" ] && echo "$P res $2 $i $s $e $f"
        i=$((i+1))
    done < $d/resource
    echo "$P end $2"
}

net_report() {  # $1 = interface
    n=/sys/class/net/$1
    dev=$(readlink -f $n/device 2>/dev/null)
    pci=-
    while [ -n "$dev" ] && [ "$dev" != "/" ]; do
        b=$(basename $dev)
        case "$b" in [0-9a-f][0-9a-f][0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7]) pci=$b; break;; esac
        dev=$(dirname $dev)
    done
    ai=-; lb=-
    if [ "$pci" != "-" ]; then ai=$(val /sys/bus/pci/devices/$pci/acpi_index); lb=$(val /sys/bus/pci/devices/$pci/label); fi
    echo "$P net $1 pci=$pci acpi_index=$ai label=$(echo $lb | tr ' ' '_')"
}

klog() {  # PCI resource trouble, from the kernel ring buffer (consumed)
    dmesg -c 2>/dev/null | grep -E "no space for|failed to assign|can't assign|not enough|no compatible bridge window|assigned \\[io|window \\[io .*: assigned" | sed "s/^\[[^]]*\] //; s/^/$P klog /"
}

# let the drivers bind before the first report
sleep 1
for a in $(ls /sys/bus/pci/devices); do pci_report pci $a; done
nets=""
for n in $(ls /sys/class/net); do [ "$n" = lo ] && continue; net_report $n; nets="$nets $n"; done
klog
echo "$P ready pci=$(ls /sys/bus/pci/devices | wc -l) net=$(echo $nets | wc -w)"

old=" $(ls /sys/bus/pci/devices | tr '\n' ' ') "
oldn=" $nets "
while true; do
    sleep 0.2
    new=" $(ls /sys/bus/pci/devices | tr '\n' ' ') "
    if [ "$new" != "$old" ]; then
        for a in $new; do case "$old" in *" $a "*) ;; *) pci_report add $a;; esac; done
        for a in $old; do case "$new" in *" $a "*) ;; *) echo "$P del $a";; esac; done
        old="$new"
        klog
    fi
    newn=" $(ls /sys/class/net | grep -v '^lo$' | tr '\n' ' ') "
    if [ "$newn" != "$oldn" ]; then
        for n in $newn; do case "$oldn" in *" $n "*) ;; *) net_report $n;; esac; done
        for n in $oldn; do case "$newn" in *" $n "*) ;; *) echo "$P netdel $n";; esac; done
        oldn="$newn"
    fi
    echo "$P tick" > /dev/null
done
"""


def _modinfo_depends(ko: Path) -> list[str]:
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def _module_order(modroot: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``wanted`` and everything they depend on, dependencies first; names use '_'."""
    index: dict[str, Path] = {}
    for ko in modroot.rglob("*.ko"):
        index[ko.stem.replace("-", "_")] = ko
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        ko = index.get(name)
        if ko is None:
            return  # built in
        for dep in _modinfo_depends(ko):
            visit(dep)
        order.append((name, ko))

    for w in wanted:
        visit(w)
    return order


class _Cpio:
    """A newc cpio archive writer (what the kernel's initramfs unpacker reads)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        nb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\x00" * (-(110 + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(tree: Path, out: Path) -> str:
    """Write the gzip'd initramfs for the kernel in ``tree``; returns the kernel release."""
    mods = sorted((tree / "lib" / "modules").iterdir())
    if not mods:
        raise ImageUnavailable(f"no kernel modules under {tree}/lib/modules")
    release = mods[-1].name
    order = _module_order(mods[-1], MODULES)
    busybox = tree / "bin" / "busybox"
    if not busybox.exists():
        raise ImageUnavailable(f"no busybox in {tree} (package busybox-static)")
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        c.dir(d)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for name, ko in order:
        c.file(f"lib/modules/{name}.ko", ko.read_bytes())
    c.file("init", INIT.replace("@MODULES@", " ".join(n for n, _ in order)).encode(), 0o755)
    tmp = out.with_suffix(".tmp")
    # mtime=0: the same inputs give the same bytes
    tmp.write_bytes(gzip.compress(c.finish(), compresslevel=6, mtime=0))
    tmp.rename(out)
    return release


def ensure_image(arch: str = "x86_64", *, allow_fetch: bool = True) -> GuestImage:
    """The kernel and initramfs for ``arch``, fetched and built into the cache when missing."""
    root = cache_dir() / arch
    if not (root / "fetched").exists():
        if not allow_fetch:
            raise ImageUnavailable(f"no guest kernel for {arch} in {root}; run .ci/guest-image")
        fetch(arch)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageUnavailable(f"no vmlinuz in {root}/boot")
    initrd = root / "initrd.gz"
    stamp = root / "initrd.stamp"
    want = f"{INIT}\n{MODULES}"
    if not initrd.exists() or not stamp.exists() or stamp.read_text() != want:
        build_initramfs(root, initrd)
        stamp.write_text(want)
    release = kernels[-1].name.removeprefix("vmlinuz-")
    package = (root / "fetched").read_text().split()[0]
    return GuestImage(arch=arch, kernel=kernels[-1], initrd=initrd, version=release, package=package,
                      console=CONSOLE[arch])


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.guest_image")
    ap.add_argument("command", choices=["fetch"])
    ap.add_argument("--arch", action="append", choices=sorted(DEB_ARCH))
    args = ap.parse_args(argv)
    status = 0
    for arch in args.arch or ["x86_64"]:
        try:
            img = ensure_image(arch)
        except ImageUnavailable as exc:
            print(f"guest image {arch}: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"guest image {arch}: {img.kernel} ({img.package}), {img.initrd} "
              f"({img.initrd.stat().st_size // 1024} KiB)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
