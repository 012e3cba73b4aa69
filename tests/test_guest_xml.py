"""The guest-eye machinery itself, without booting anything: the boot XML validates against
libvirt's schema, guest bus numbers follow the firmware's depth-first numbering, the console
report parses, and the I/O-window arithmetic matches what the guests showed."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.guest_image import INIT, GuestImage, _Cpio
from tests.guest_run import boot_xml, guest_buses, hidden_bridges, isa_safe_io_slots, parse
from topo_solve.domain.write import render_domain
from topo_solve.solve import solve
from topo_solve.spec import load_spec, parse_spec, to_problem

SPECS = Path(__file__).parent.parent / "specs"


def _image(arch: str) -> GuestImage:
    return GuestImage(arch=arch, kernel=Path(f"/cache/{arch}/vmlinuz"), initrd=Path(f"/cache/{arch}/initrd.gz"),
                      version="6.1.0-57", package="linux-image", console="ttyS0" if arch == "x86_64" else "ttyAMA0")


def _plan_text(text: str):
    spec, lines = parse_spec(text)
    return solve(to_problem(spec, lines))


@pytest.mark.parametrize("firmware,fwlog,args", [("seabios", False, ()), ("ovmf", True, ()),
                                                 ("seabios", True, ("-global", "pcie-root-port.pref64-reserve=512M"))])
def test_boot_xml_validates(firmware, fwlog, args, schema_valid, tmp_path):
    xml = render_domain(solve(load_spec(SPECS / "q35-web.yaml")))
    out = boot_xml(xml, _image("x86_64"), tmp_path / "c.log", firmware=firmware, virt="qemu", workdir=tmp_path,
                   name="tsg-x", firmware_log=tmp_path / "fw.log" if fwlog else None, qemu_args=args)
    schema_valid(out, f"boot XML ({firmware})")
    root = etree.fromstring(out.encode())
    assert root.findtext("os/kernel") == "/cache/x86_64/vmlinuz"
    assert root.find("devices/serial/target").get("type") == "isa-serial"
    assert not list(root.iter("hostdev")), "host devices are swapped for emulated stand-ins"
    assert (root.find("os/loader") is not None) == (firmware == "ovmf")


def test_boot_xml_aarch64_validates(schema_valid, tmp_path):
    plan = _plan_text("name: a\nmachine: virt\narch: aarch64\nvcpus: 2\nnuma: {nodes: 2}\n"
                      "devices:\n  - {name: far, model: virtio-net, numa_node: 1}\n")
    out = boot_xml(render_domain(plan), _image("aarch64"), tmp_path / "c.log", firmware="none", virt="qemu",
                   workdir=tmp_path, name="tsg-a")
    schema_valid(out, "aarch64 boot XML")
    root = etree.fromstring(out.encode())
    assert root.findtext("cpu/model") == "cortex-a57"
    assert root.find("cpu/numa") is not None, "the plan's NUMA cells stay"


def test_guest_buses_depth_first_and_expanders():
    # q35-web: root ports 1..N in slot order, a pcie-to-pci-bridge behind root port 1
    xml = render_domain(solve(load_spec(SPECS / "q35-web.yaml")))
    root = etree.fromstring(xml.encode())
    bridge = next(int(c.get("index")) for c in root.iter("controller") if c.get("model") == "pcie-to-pci-bridge")
    ports = [int(c.get("index")) for c in root.iter("controller") if c.get("model") == "pcie-root-port"]
    assert ports == list(range(1, len(ports) + 1))
    buses = guest_buses(xml)
    assert buses[1] == 1 and buses[bridge] == 2
    assert [buses[p] for p in ports[1:]] == list(range(3, len(ports) + 2))
    # an expander: its bus is its busNr, its subtree numbered from there
    plan = _plan_text("name: n\nmachine: q35\nvcpus: 2\nnuma: {nodes: 2}\n"
                      "devices:\n  - {name: far, model: virtio-net, numa_node: 1}\n")
    xml = render_domain(plan)
    root = etree.fromstring(xml.encode())
    pxb = next(c for c in root.iter("controller") if c.get("model") == "pcie-expander-bus")
    nr = int(pxb.find("target").get("busNr"))
    buses = guest_buses(xml)
    assert buses[int(pxb.get("index"))] == nr
    behind = [int(c.get("index")) for c in root.iter("controller")
              if c.find("address") is not None and int(c.find("address").get("bus"), 0) == int(pxb.get("index"))]
    assert [buses[i] for i in behind] == list(range(nr + 1, nr + 1 + len(behind)))
    # pc: QEMU's pxb hides a pci-bridge at busNr:00.0; the pxb's devices sit on busNr + 1
    plan = _plan_text("name: p\nmachine: pc\nvcpus: 2\nnuma: {nodes: 2}\n"
                      "devices:\n  - {name: far, model: virtio-net, numa_node: 1, count: 33}\n")
    xml = render_domain(plan)
    root = etree.fromstring(xml.encode())
    pxb = next(c for c in root.iter("controller") if c.get("model") == "pci-expander-bus")
    bridge = next(c for c in root.iter("controller") if c.get("model") == "pci-bridge")
    nr = int(pxb.find("target").get("busNr"))
    buses = guest_buses(xml)
    assert buses[int(pxb.get("index"))] == nr + 1 and buses[int(bridge.get("index"))] == nr + 2
    assert hidden_bridges(xml) == {f"0000:{nr:02x}:00.0": nr + 1}


def test_parse_console_report():
    text = "\n".join([
        "[    1.0] some kernel line",
        "TSG boot arch=x86_64 kernel=6.1 efi=0",
        "TSG pci 0000:00:01.0 class=0x060400 id=1b36:000c sec=1 sub=1 drv=pcieport",
        "TSG cfg 0000:00:01.0  fe000000 00000000 00010100 0000c0c0 fc00fc00 fe01fe01",
        "TSG res 0000:00:01.0 13 0x000000000000c000 0x000000000000cfff 0x0000000000000100",
        "TSG end 0000:00:01.0",
        "TSG ready pci=1 net=0",
        "TSG add 0000:01:00.0 class=0x020000 id=1af4:1000 sec=- sub=- drv=virtio-pci",
        "TSG cfg 0000:01:00.0  00000001 fe841000 00000000 00000000 0000000c 00000001",
        "TSG klog pci 0000:01:00.0: BAR 0 [io  size 0x0020]: failed to assign",
        "TSG end 0000:01:00.0",
        "TSG add 0000:01:01.0 class=0x020000 id=1af4:1000 sec=- sub=- drv=-",  # its end not yet printed
        "TSG net eth0 pci=0000:01:00.0 acpi_index=7 label=-",
    ])
    v = parse(text)
    assert v.ready and v.boot["efi"] == "0"
    port = v.devices["0000:00:01.0"]
    assert port.secondary == 1 and port.window("io").size == 0x1000
    assert port.io_bar_regs() == {}, "a bridge's window registers are not BARs"
    assert port.unassigned() == []
    nic = v.added["0000:01:00.0"]
    assert nic.io_bar_regs() == {0: 0}, "BAR 5 is BAR 4's upper half, not an I/O BAR"
    assert nic.unassigned(io=False) == [] and len(nic.unassigned()) == 2
    assert "0000:01:01.0" not in v.added, "a device counts once its report is complete"
    assert v.nets["eth0"].acpi_index == 7


def test_isa_safe_io_slots_match_the_guests():
    """The counts the guests showed: 23 transitional NICs after four rtl8139 and one virtio at
    boot (guest-q35-0), 30 after one e1000 (q35-web)."""
    boot = [(0xC000, 0xC0FF), (0xC100, 0xC1FF), (0xC200, 0xC2FF), (0xC300, 0xC3FF), (0xC400, 0xC41F)]
    assert isa_safe_io_slots((0xC000, 0xCFFF), boot, 0x20) == 23
    assert isa_safe_io_slots((0xC000, 0xCFFF), [(0xC000, 0xC03F)], 0x20) == 30
    assert isa_safe_io_slots((0xC000, 0xCFFF), [], 0x100) == 4


def test_initramfs_archive_is_newc_and_deterministic():
    a, b = _Cpio(), _Cpio()
    for c in (a, b):
        c.dir("bin")
        c.file("init", INIT.encode(), 0o755)
    data = a.finish()
    assert data == b.finish() and data.startswith(b"070701") and b"TRAILER!!!" in data
    assert len(data) % 4 == 0
