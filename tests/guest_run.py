"""Boot a planned domain with the probe guest (tests/guest_image.py) and read what it sees.

* :func:`boot_xml` turns a domain XML (as topo-solve writes it) into one that
  boots the probe kernel directly (``<os><kernel/><initrd/><cmdline/>``), with
  its serial console written to a file, SeaBIOS or OVMF, KVM or TCG.
* :class:`Guest` defines and starts it under a unique name, parses the
  console's ``TSG`` lines into a :class:`View`, hotplugs and unplugs devices,
  and always destroys and undefines the domain again.
* :func:`guest_buses` computes, from the domain XML alone, the bus number the
  guest gives each controller's bus: firmware numbers buses depth-first from
  bus 0, and an expander bus's tree from its ``busNr``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from tests.guest_image import PREFIX, GuestImage

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
NAME_PREFIX = "topo-solve-guest-"
VIRT_ENV = "TOPO_SOLVE_GUEST_VIRT"  # force 'qemu' (TCG) or 'kvm'

# IORESOURCE_* bits of the sysfs resource file's flags (include/linux/ioport.h)
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_UNSET = 0x20000000
IORESOURCE_DISABLED = 0x10000000
ROM_ROW = 6
WINDOW_ROWS = {13: "io", 14: "mem", 15: "pref"}


# --------------------------------------------------------------------------
# what the guest reports
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    row: int  # 0-5 BARs, 6 ROM, 13-15 bridge windows
    start: int
    end: int
    flags: int

    @property
    def kind(self) -> str:
        if self.flags & IORESOURCE_IO:
            return "io"
        return "pref" if self.flags & IORESOURCE_PREFETCH else "mem"

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def assigned(self) -> bool:
        # An unassigned BAR keeps its size but has start 0 (and IORESOURCE_UNSET in the kernel).
        return self.start != 0 and not self.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED)

    def __str__(self) -> str:
        state = "" if self.assigned else " UNASSIGNED"
        return f"row{self.row} {self.kind} 0x{self.start:x}+0x{self.size:x}{state}"


@dataclass
class PciDev:
    address: str  # dddd:bb:ss.f
    cls: int
    vendor: int
    device: int
    secondary: int | None
    subordinate: int | None
    driver: str
    resources: list[Resource] = field(default_factory=list)
    bar_regs: list[int] = field(default_factory=list)  # config space 0x10-0x27
    failed: dict[int, str] = field(default_factory=dict)  # BAR row -> io|mem: the kernel could not assign it

    @property
    def bus(self) -> int:
        return int(self.address.split(":")[1], 16)

    @property
    def bars(self) -> list[Resource]:
        """BARs (not the ROM, not bridge windows)."""
        return [r for r in self.resources if r.row < ROM_ROW]

    def io_bar_regs(self) -> dict[int, int]:
        """BAR number -> I/O address from config space, for the I/O BARs (bit 0 set)."""
        out, i = {}, 0
        regs = self.bar_regs[:2] if self.secondary is not None else self.bar_regs  # a bridge has 2 BARs
        while i < len(regs):
            v = regs[i]
            if v & 1:
                out[i] = v & ~0x3
            elif (v >> 1) & 0x3 == 0x2:  # a 64-bit memory BAR: the next register is its upper half
                i += 1
            i += 1
        return out

    def unassigned(self, io: bool = True) -> list[str]:
        """BARs without an address: from the resource file, the kernel's own failure
        messages, and I/O BAR registers left at 0 (what firmware and kernel both skipped).
        ``io=False``: memory BARs only."""
        out = [str(r) for r in self.bars if not r.assigned and (io or r.kind != "io")]
        out += [f"BAR {i} ({k}): kernel failed to assign" for i, k in sorted(self.failed.items())
                if i < ROM_ROW and (io or k != "io")]
        if io:
            # 0: never assigned; past 64 KiB: the sizing pattern the firmware left behind
            out += [f"BAR {i}: I/O BAR at {a:#x}" for i, a in self.io_bar_regs().items() if a == 0 or a > 0xFFFF]
        return out

    def io_ranges(self) -> list[tuple[int, int]]:
        """The assigned I/O BARs as (start, end)."""
        return [(r.start, r.end) for r in self.bars if r.kind == "io" and r.assigned]

    def window(self, kind: str) -> Resource | None:
        for r in self.resources:
            if WINDOW_ROWS.get(r.row) == kind and r.start and r.end > r.start:
                return r
        return None


@dataclass
class Net:
    name: str
    pci: str | None
    acpi_index: int | None
    label: str | None


@dataclass
class View:
    """The guest's report: devices at boot, then the hotplug events seen so far."""

    boot: dict[str, str] = field(default_factory=dict)
    devices: dict[str, PciDev] = field(default_factory=dict)  # at boot
    nets: dict[str, Net] = field(default_factory=dict)  # all interfaces seen, name -> Net
    added: dict[str, PciDev] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    removed_nets: list[str] = field(default_factory=list)
    klog: list[str] = field(default_factory=list)
    ready: bool = False

    def present(self) -> dict[str, PciDev]:
        out = dict(self.devices)
        out.update(self.added)
        for a in self.removed:
            out.pop(a, None)
        return out


_LINE = re.compile(r"TSG (\w+) ?(.*)")
_FAILED = re.compile(r"pci (\S+): BAR (\d+)(?: \[(io|mem)[^]]*\])?: failed to assign")


def parse(text: str) -> View:
    v = View()
    current: dict[str, PciDev] = {}
    pending: dict[str, PciDev] = {}
    for raw in text.splitlines():
        i = raw.find(PREFIX)
        if i < 0:
            continue
        m = _LINE.match(raw[i:].strip())
        if not m:
            continue
        word, rest = m.groups()
        f = rest.split()
        if word == "boot":
            v.boot = dict(kv.split("=", 1) for kv in f if "=" in kv)
        elif word in ("pci", "add") and f:
            kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
            ven, _, dev = kv.get("id", "0:0").partition(":")

            def num(s):
                return None if s in (None, "-") else int(s, 0)

            d = PciDev(f[0], int(kv.get("class", "0"), 16), int(ven, 16), int(dev, 16),
                       num(kv.get("sec")), num(kv.get("sub")), kv.get("drv", "-"))
            current[d.address] = d
            if word == "pci" and not v.ready:
                v.devices[d.address] = d
            else:
                pending[d.address] = d  # in `added` once its last line ("end") is there
        elif word == "end" and f and f[0] in pending:
            d = pending.pop(f[0])
            v.added[d.address] = d
            if d.address in v.removed:
                v.removed.remove(d.address)
        elif word == "res" and len(f) == 5 and f[0] in current:
            try:
                current[f[0]].resources.append(Resource(int(f[1]), int(f[2], 16), int(f[3], 16), int(f[4], 16)))
            except ValueError:
                pass  # a line cut by a kernel message on the console
        elif word == "cfg" and f and f[0] in current:
            try:
                current[f[0]].bar_regs = [int(x, 16) for x in f[1:7]]
            except ValueError:
                pass
        elif word == "net" and f:
            kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
            pci = kv.get("pci")
            ai = kv.get("acpi_index")
            v.nets[f[0]] = Net(f[0], None if pci in (None, "-") else pci,
                               None if ai in (None, "-") else int(ai), None if kv.get("label") in (None, "-")
                               else kv["label"])
        elif word == "netdel" and f:
            v.removed_nets.append(f[0])
            v.nets.pop(f[0], None)
        elif word == "del" and f:
            v.removed.append(f[0])
            v.added.pop(f[0], None)
            pending.pop(f[0], None)
        elif word == "klog":
            v.klog.append(rest)
            km = _FAILED.search(rest)
            if km and km.group(1) in current:
                current[km.group(1)].failed[int(km.group(2))] = km.group(3) or "mem"
        elif word == "ready":
            v.ready = True
    return v


def isa_safe_io_slots(window: tuple[int, int], used: list[tuple[int, int]], size: int) -> int:
    """How many more I/O BARs of ``size`` bytes Linux can place in a bridge's I/O window.

    On x86 Linux places an I/O BAR only at offsets 0x000-0x0ff of each 1 KiB
    block (arch/x86/pci/i386.c pcibios_align_resource: it avoids the ISA alias
    ranges), so a 4 KiB window holds 4 x 256 bytes of hotplugged I/O BARs; what
    boot devices already use (the firmware may have placed them anywhere) is taken out.
    """
    free = 0
    for block in range(window[0], window[1] + 1, 0x400):
        for start in range(block, min(block + 0x100, window[1] + 1), size):
            end = start + size - 1
            if not any(a <= end and start <= b for a, b in used):
                free += 1
    return free


# --------------------------------------------------------------------------
# the domain XML
# --------------------------------------------------------------------------


MINIMAL_Q35 = """<domain type='kvm'><name>probe</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
<devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"""

_VIRT: dict[str, tuple[str, str]] = {}


def virt_type(virsh, image: GuestImage, workdir: Path) -> tuple[str, str]:
    """('kvm' or 'qemu', why): KVM when a probe guest boots under it, else TCG.

    /dev/kvm existing is not enough: a KVM that runs only paravirtualized guests
    (kvm_pvm, as on this project's machines) starts QEMU fine and then never
    runs the stock kernel.  So a minimal guest must print its boot line under
    KVM within 20 s (it takes about 1 s where KVM works).  TOPO_SOLVE_GUEST_VIRT
    forces one ('kvm' or 'qemu').  The answer is kept for the session.
    """
    forced = os.environ.get(VIRT_ENV)
    if forced in ("kvm", "qemu"):
        return forced, f"forced by {VIRT_ENV}"
    if image.arch in _VIRT:
        return _VIRT[image.arch]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        ans = ("qemu", "no usable /dev/kvm")
    else:
        caps = virsh.run("domcapabilities", "--virttype", "kvm", "--arch", image.arch, check=False)
        if "<domain>kvm</domain>" not in caps:
            ans = ("qemu", "libvirt offers no kvm domain")
        else:
            try:
                with Guest(virsh, MINIMAL_Q35, image, workdir, virt="kvm", boot_timeout=20,
                           wait_for=lambda v: bool(v.boot)) as g:
                    ans = ("kvm", f"probe guest booted under KVM in {g.boot_seconds:.1f} s")
            except GuestError:
                pvm = " (the host's KVM is kvm_pvm, for PVM guest kernels only)" if Path(
                    "/sys/module/kvm_pvm").exists() else ""
                ans = ("qemu", f"/dev/kvm exists but the stock kernel does not boot under it{pvm}")
    _VIRT[image.arch] = ans
    return ans


QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def boot_xml(domain_xml: str, image: GuestImage, console: Path, *, firmware: str, virt: str,
             workdir: Path, name: str, extra_cmdline: str = "", firmware_log: Path | None = None,
             qemu_args: tuple[str, ...] = ()) -> str:
    """The domain, renamed, booting the probe guest; disks become sparse files in ``workdir``,
    assigned host devices emulated stand-ins at the same address (a virtio rng: a PCIe endpoint
    on q35, conventional PCI on pc), exactly as tests/test_conformance.py does."""
    root = etree.fromstring(domain_xml.encode())
    root.set("type", virt)
    root.find("name").text = name
    for u in root.findall("uuid"):
        root.remove(u)
    os_ = root.find("os")
    for tag in ("kernel", "initrd", "cmdline", "loader", "nvram", "boot"):
        for el in os_.findall(tag):
            os_.remove(el)
    if firmware == "ovmf":
        code, vars_ = (AAVMF_CODE, AAVMF_VARS) if image.arch == "aarch64" else (OVMF_CODE, OVMF_VARS)
        etree.SubElement(os_, "loader", readonly="yes", type="pflash").text = str(code)
        etree.SubElement(os_, "nvram", template=str(vars_)).text = str(workdir / f"{name}_VARS.fd")
    elif firmware != "seabios" and not (firmware == "none" and image.arch == "aarch64"):
        raise ValueError(f"unknown firmware {firmware}")
    etree.SubElement(os_, "kernel").text = str(image.kernel)
    etree.SubElement(os_, "initrd").text = str(image.initrd)
    etree.SubElement(os_, "cmdline").text = image.cmdline(extra_cmdline)
    devices = root.find("devices")
    for src in devices.iter("source"):
        fpath = src.get("file")
        if fpath and src.getparent().tag == "disk":
            img = workdir / Path(fpath).name
            with open(img, "wb") as fh:
                fh.truncate(1 << 20)
            src.set("file", str(img))
    for hd in list(devices.iter("hostdev")):
        rng = etree.Element("rng", model="virtio")
        etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
        for tag in ("alias", "address"):
            if hd.find(tag) is not None:
                rng.append(hd.find(tag))
        devices.replace(hd, rng)
    if image.arch == "aarch64":
        # QEMU's default CPU for virt is a 32-bit cortex-a15; the arm64 kernel needs a 64-bit one
        cpu = root.find("cpu")
        if cpu is None:
            cpu = etree.SubElement(root, "cpu")
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        for el in cpu.findall("model"):
            cpu.remove(el)
        model = etree.Element("model", fallback="forbid")
        model.text = "cortex-a57"
        cpu.insert(0, model)
    serial = etree.Element("serial", type="file")
    etree.SubElement(serial, "source", path=str(console), append="off")
    if image.arch == "aarch64":
        etree.SubElement(serial, "target", type="system-serial", port="0")
    else:
        etree.SubElement(serial, "target", type="isa-serial", port="0")
    # first among the devices of its kind, so it is ttyS0 / ttyAMA0 and port 0
    first = next((i for i, el in enumerate(devices) if el.tag in ("serial", "console")), len(devices))
    devices.insert(first, serial)
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        for el in root.findall(tag):
            root.remove(el)
    # a panic or reboot ends the guest: the test then sees no "ready"
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        etree.SubElement(root, tag).text = "destroy"
    args = list(qemu_args)
    if firmware_log is not None and image.arch == "x86_64":
        # SeaBIOS (and a debug OVMF) write their log to I/O port 0x402: QEMU's debugcon
        args += ["-chardev", f"file,id=fwlog,path={firmware_log}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]
    if args:
        new = etree.Element(root.tag, nsmap={"qemu": QEMU_NS}, attrib=dict(root.attrib))
        for el in list(root):
            new.append(el)
        root = new
        cl = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for a in args:
            etree.SubElement(cl, f"{{{QEMU_NS}}}arg", value=a)
    _order(root)
    return etree.tostring(root, encoding="unicode")


_ORDER = ["name", "uuid", "memory", "currentMemory", "vcpu", "os", "features", "cpu",
          "on_poweroff", "on_reboot", "on_crash", "devices"]


def _order(root) -> None:
    """Top-level elements in the schema's usual order (libvirt does not care, readers do)."""
    kids = list(root)
    rank = {t: i for i, t in enumerate(_ORDER)}
    kids.sort(key=lambda el: rank.get(el.tag if isinstance(el.tag, str) else "", len(_ORDER)))
    for el in kids:
        root.remove(el)
    for el in kids:
        root.append(el)


# --------------------------------------------------------------------------
# guest bus numbers from the plan
# --------------------------------------------------------------------------


# QEMU's conventional pxb (pci-expander-bus) puts a pci-bridge of its own at slot 0 of its root
# bus, and the devices libvirt places "on the pxb" sit behind that bridge (QEMU
# hw/pci-bridge/pci_expander_bridge.c); pxb-pcie has none.  Measured: a pc guest shows the
# bridge (1b36:0001) at busNr:00.0 and the pxb's devices on busNr + 1.
EXPANDER_HIDDEN_BRIDGE = {"pcie-expander-bus": 0, "pci-expander-bus": 1}


def _int(v: str | None) -> int:
    return int(v, 0) if v else 0


def guest_buses(domain_xml: str) -> dict[int, int]:
    """Controller index -> the guest bus number of the bus it provides.

    Firmware (SeaBIOS, OVMF) and Linux number bridges depth-first: walking bus
    0's slots and functions in order, each bridge takes the next number, then
    its own subtree is numbered before the next sibling.  An expander bus is a
    host bridge, not a PCI-PCI bridge: its bus is its ``busNr`` and its subtree
    is numbered from there; it takes no number from its parent's walk (on pc
    its devices sit one bus further, behind QEMU's hidden bridge).
    """
    root = etree.fromstring(domain_xml.encode())
    ctrls = [c for c in root.iter("controller") if c.get("type") == "pci"]
    hidden = {}  # expander index -> its busNr, where a hidden bridge sits
    children: dict[int, list[tuple[int, int, int, str]]] = {}
    bus_nr: dict[int, int] = {}
    for c in ctrls:
        idx = int(c.get("index"))
        a = c.find("address")
        t = c.find("target")
        if c.get("model") in EXPANDER_HIDDEN_BRIDGE:
            bus_nr[idx] = _int(t.get("busNr"))
        if a is not None:
            children.setdefault(_int(a.get("bus")), []).append(
                (_int(a.get("slot")), _int(a.get("function")), idx, c.get("model")))
    out: dict[int, int] = {0: 0}

    def walk(index: int, nxt: int) -> int:
        for _, _, child, model in sorted(children.get(index, [])):
            if child in bus_nr:
                continue  # numbered from its busNr below
            out[child] = nxt
            nxt = walk(child, nxt + 1)
        return nxt

    walk(0, 1)
    model = {int(c.get("index")): c.get("model") for c in ctrls}
    for idx, nr in sorted(bus_nr.items()):
        extra = EXPANDER_HIDDEN_BRIDGE[model[idx]]
        out[idx] = nr + extra
        walk(idx, nr + 1 + extra)
    return out


def hidden_bridges(domain_xml: str) -> dict[str, int]:
    """Guest address -> secondary bus of the bridges QEMU adds by itself (see EXPANDER_HIDDEN_BRIDGE)."""
    root = etree.fromstring(domain_xml.encode())
    out = {}
    for c in root.iter("controller"):
        if c.get("type") == "pci" and EXPANDER_HIDDEN_BRIDGE.get(c.get("model")):
            nr = _int(c.find("target").get("busNr"))
            out[f"0000:{nr:02x}:00.0"] = nr + 1
    return out


def guest_address(address_el, buses: dict[int, int]) -> str:
    """A libvirt ``<address type='pci'>`` (bus = controller index) as the guest's dddd:bb:ss.f."""
    return (f"{_int(address_el.get('domain')):04x}:{buses[_int(address_el.get('bus'))]:02x}:"
            f"{_int(address_el.get('slot')):02x}.{_int(address_el.get('function'))}")


# --------------------------------------------------------------------------
# a running guest
# --------------------------------------------------------------------------


class GuestError(AssertionError):
    pass


class Guest:
    """A probe guest in libvirt; use as a context manager (it is always removed)."""

    def __init__(self, virsh, domain_xml: str, image: GuestImage, workdir: Path, *, firmware: str = "seabios",
                 virt: str = "kvm", boot_timeout: float | None = None, extra_cmdline: str = "",
                 wait_for=None, firmware_log: bool = False, qemu_args: tuple[str, ...] = (),
                 abort_on: str | None = None):
        self.virsh = virsh
        self.name = f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.console = workdir / f"{self.name}.console"
        self.firmware = firmware
        self.virt = virt
        self.firmware_log = workdir / f"{self.name}.fwlog" if firmware_log else None
        self.xml = boot_xml(domain_xml, image, self.console, firmware=firmware, virt=virt, workdir=workdir,
                            name=self.name, extra_cmdline=extra_cmdline, firmware_log=self.firmware_log,
                            qemu_args=qemu_args)
        # TCG boots the kernel far slower than KVM
        self.boot_timeout = boot_timeout or (60 if virt == "kvm" else 300)
        self.boot_seconds: float | None = None
        self.wait_for = wait_for or (lambda v: v.ready)
        self.abort_on = abort_on  # a firmware log text that means the boot is over

    def __enter__(self) -> "Guest":
        self.virsh.define(self.xml)
        try:
            t0 = time.monotonic()
            self.virsh.start(self.name)
            self.wait(self.wait_for, self.boot_timeout, "the boot report")
            self.boot_seconds = time.monotonic() - t0
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        from tests.libvirt_fixtures import hv

        problem = None
        for attempt in range(3):
            try:
                if not self.virsh.exists(self.name):
                    break
                if self.virsh.is_active(self.name):
                    self.virsh.run("destroy", self.name, check=False)
                self.virsh.run("undefine", "--nvram", self.name)  # OVMF guests have an nvram file
                break
            except hv.VirshError as err:
                problem = f"could not remove domain {self.name}: {err.message}"
                time.sleep(0.5 * (attempt + 1))
        else:
            raise RuntimeError(problem)
        hv._remove_logs(self.name)
        for p in self.workdir.glob(f"{self.name}*"):
            if p not in (self.console, self.firmware_log):
                p.unlink(missing_ok=True)

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def fwlog(self) -> str:
        if self.firmware_log is None:
            return ""
        try:
            return self.firmware_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def view(self) -> View:
        return parse(self.text())

    def wait(self, cond, timeout: float, what: str) -> View:
        end = time.monotonic() + timeout
        while True:
            v = self.view()
            if cond(v):
                return v
            if time.monotonic() > end:
                tail = "\n".join(self.text().splitlines()[-25:])
                raise GuestError(f"guest {self.name} ({self.firmware}, {self.virt}): no {what} within "
                                 f"{timeout:.0f} s; console ends:\n{tail}")
            if self.abort_on and self.abort_on in self.fwlog():
                raise GuestError(f"guest {self.name}: the firmware log says {self.abort_on!r}")
            if not self.virsh.is_active(self.name):
                tail = "\n".join(self.text().splitlines()[-25:])
                raise GuestError(f"guest {self.name} stopped while waiting for {what}; console ends:\n{tail}")
            time.sleep(0.2)

    def live_xml(self):
        return etree.fromstring(self.virsh.dumpxml(self.name).encode())

    def attach(self, device_xml: str) -> None:
        self.virsh.attach_live(self.name, device_xml)

    def detach_alias(self, alias: str) -> None:
        self.virsh.run("detach-device-alias", self.name, alias, "--live")
