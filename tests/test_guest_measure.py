"""Measure, from inside a booted guest, what the rules only estimated.

Each test records its numbers (``guest_facts``: printed in the terminal summary,
written as JSON with TOPO_SOLVE_GUEST_FACTS=FILE) and fails when a stated
expectation breaks, in particular when a row of solver/rules/firmware.py no
longer matches what the guest shows.

* I/O windows per firmware on q35: N root ports, each with an e1000e (a PCIe
  NIC with an I/O BAR).  At the row's ``io_ports`` every BAR is assigned by the
  firmware; one more breaks it (SeaBIOS: no boot; OVMF: it assigns nothing and
  leaves it to Linux), and Linux itself fits ``io_ports_os``.
* The windows a firmware gives an empty root port and a bridge (what a later
  hotplug must fit in), and how many NICs with their 256 KiB boot ROM fit
  behind one pcie-to-pci-bridge.
* A large-BAR device (ivshmem-plain, 256 MiB) hotplugged into an empty root
  port: without a reservation, and with QEMU's pcie-root-port.pref64-reserve
  (libvirt 9.0 has no <target memReserve>; libvirt 10.3 writes the same property).
* <acpi index='N'/> on a NIC: the kernel's acpi_index, which udev turns into the
  name ``enoN``.
* aarch64 virt: whether the guest sees the devices behind a pcie-expander-bus
  with the kernel booted directly (device tree), with UEFI, and with UEFI and ACPI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from tests.guest_run import Guest, GuestError, guest_address, guest_buses
from topo_solve.rules.firmware import firmware

pytestmark = [pytest.mark.guest, pytest.mark.libvirt]

E1000E = (0x8086, 0x10D3)


def _plan_xml(tmp_path: Path, name: str, body: str, virt: str) -> str:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\n{body}")
    res = subprocess.run([sys.executable, "-m", "topo_solve", str(spec), "-q", "--virt-type", virt],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _e1000e_ports(n: int) -> str:
    return (f"machine: q35\ndefaults: {{usb: false, memballoon: false}}\nio_ports: limit 64\n"
            f"devices:\n  - {{name: n, model: e1000e, count: {n}}}\n")


def _io_state(view) -> dict[str, int]:
    nics = [d for d in view.devices.values() if (d.vendor, d.device) == E1000E]
    io_ok = [d for d in nics if d.io_bar_regs() and not d.unassigned()]
    # Linux says "can't claim" for every BAR the firmware left at a place it cannot use
    firmware_left = {k.split()[1] for k in view.klog if "can't claim" in k and ": BAR " in k}
    short = sorted(d.address for d in view.devices.values() if d.unassigned())
    return {"nics": len(nics), "io_assigned": len(io_ok), "firmware_left": len(firmware_left),
            "devices_short": len(short)}


@pytest.mark.parametrize("fw", ["seabios", "ovmf"])
def test_io_windows(fw, virsh, guest_image, guest_virt, guest_dir, guest_facts, tmp_path):
    row = firmware(fw, "q35")
    virt = guest_virt[0]
    facts = {"firmware_version": row.version}

    def boot(n: int, **kw):
        xml = _plan_xml(tmp_path, f"io{n}", _e1000e_ports(n), virt)
        g = Guest(virsh, xml, guest_image, guest_dir, firmware=fw, virt=virt, **kw)
        with g:
            st = _io_state(g.view())
        facts[f"{n}_ports"] = st
        return st

    # at the limit: the firmware assigns every BAR, the guest boots
    n = row.io_ports
    st = boot(n)
    assert st == {"nics": n, "io_assigned": n, "firmware_left": 0, "devices_short": 0}, (
        f"{fw}: {n} root ports with an e1000e each: {st}")

    # one more
    n = row.io_ports + 1
    if row.io_ports_os == row.io_ports:  # the firmware stops the boot
        g = Guest(virsh, _plan_xml(tmp_path, f"io{n}", _e1000e_ports(n), virt), guest_image, guest_dir,
                  firmware=fw, virt=virt, firmware_log=True, abort_on="out of I/O address space")
        with pytest.raises(GuestError):
            with g:
                facts[f"{n}_ports"] = _io_state(g.view())  # reached only if it boots: the test fails
        assert "out of I/O address space" in g.fwlog(), f"{fw}: {n} ports: {g.fwlog()[-500:]}"
        facts[f"{n}_ports"] = "no boot: " + g.fwlog().strip().splitlines()[-1]
    else:
        st = boot(n)
        assert st["firmware_left"] == n and st["devices_short"] == 0, (
            f"{fw}: {n} ports: expected the firmware to leave every device to the OS ({row.past_io_ports}): {st}")
        # how far the OS gets on its own: every BAR at io_ports_os, not one more
        n = row.io_ports_os
        st = boot(n)
        assert st["devices_short"] == 0 and st["io_assigned"] == n, f"{fw}: {n} ports: {st}"
        st = boot(n + 1)
        assert st["devices_short"] > 0, f"{fw}: {n + 1} ports: every BAR assigned, the row says {n} is the most"
    guest_facts[f"io_windows_{fw}_q35"] = facts


@pytest.mark.parametrize("fw", ["seabios", "ovmf"])
def test_bridge_window_sizes(fw, virsh, guest_image, guest_virt, guest_dir, guest_facts, tmp_path):
    """The windows an empty root port and a pcie-to-pci-bridge get at boot."""
    row = firmware(fw, "q35")
    virt = guest_virt[0]
    xml = _plan_xml(tmp_path, "win", "machine: q35\ndefaults: {usb: false, memballoon: false}\n"
                    "hotplug:\n  - {class: pcie, count: 1}\n  - {class: pci, count: 1}\n", virt)
    buses = guest_buses(xml)
    root = etree.fromstring(xml.encode())
    with Guest(virsh, xml, guest_image, guest_dir, firmware=fw, virt=virt) as g:
        v = g.view()
    seen = {}
    for c in root.iter("controller"):
        if c.get("type") == "pci" and c.find("address") is not None:
            d = v.devices[guest_address(c.find("address"), buses)]
            empty = not any(x.bus == d.secondary for x in v.devices.values())
            seen[f"{c.get('model')} {c.get('index')}{'' if empty else ' (not empty)'}"] = w = {
                k: (d.window(k).size if d.window(k) else 0) for k in ("io", "mem", "pref")}
            if empty:
                assert (w["mem"], w["pref"]) == (row.port_mem, row.port_pref), (
                    f"{fw}: empty {c.get('model')} has windows {w}; firmware.py says mem {row.port_mem:#x}, "
                    f"pref {row.port_pref:#x}")
    # who gave the I/O windows: Linux says "assigned" for each it placed itself
    kernel_io = sorted({k.split()[1] for k in v.klog if "[io" in k and "assigned" in k and "can't" not in k})
    seen["io windows the kernel assigned"] = kernel_io
    guest_facts[f"bridge_windows_{fw}_q35"] = seen


def test_nic_roms_fill_a_bridge_window(virsh, guest_image, guest_virt, guest_dir, guest_facts, tmp_path):
    """NICs with their boot ROM, hotplugged behind one pcie-to-pci-bridge: how many get every BAR."""
    virt = guest_virt[0]
    xml = _plan_xml(tmp_path, "roms", "machine: q35\ndefaults: {usb: false, memballoon: false}\n"
                    "hotplug:\n  - {class: pci, count: 31}\n", virt)
    with Guest(virsh, xml, guest_image, guest_dir, firmware="seabios", virt=virt) as g:
        live = g.live_xml()
        bridge = next(int(c.get("index")) for c in live.iter("controller") if c.get("model") == "pcie-to-pci-bridge")
        bus = guest_buses(etree.tostring(live, encoding="unicode"))[bridge]
        want = {f"0000:{bus:02x}:{s:02x}.0" for s in range(1, 32)}
        # one at a time, slot by slot: the kernel places each before the next arrives,
        # so the count does not depend on how the guest batches the events
        for i in range(31):
            g.attach(f"<interface type='user'><model type='virtio-transitional'/><alias name='ua-rom-{i}'/>"
                     f"<address type='pci' domain='0' bus='{bridge}' slot='{i + 1}' function='0'/></interface>")
            at = f"0000:{bus:02x}:{i + 1:02x}.0"
            v = g.wait(lambda v: at in v.added, 60, f"NIC {i} at {at}")
        v = g.wait(lambda v: want <= set(v.added), 60, "31 hotplugged NICs")
    ok = [a for a in sorted(want) if not v.added[a].unassigned()]
    first_bad = next((a for a in sorted(want) if v.added[a].unassigned()), None)
    rom_failed = sum(1 for k in v.klog if "ROM" in k and "failed to assign" in k)
    guest_facts["nic_roms_behind_a_bridge_seabios"] = {
        "hotplugged": 31, "all_bars_assigned": len(ok), "roms_unassigned": rom_failed, "first_short": first_bad}
    # Stated: the bridge's two 2 MiB windows (firmware.py port_mem, port_pref) hold 16 ROMs of
    # 256 KiB; the BARs of the NICs after those squeeze into what the ROMs leave, and fewer
    # NICs than the bridge has slots get every BAR.  The exact count depends on the order the
    # kernel meets the ROMs in (measured 25-27 of 31).  If this ever holds 31, the ROM advice
    # in tests/test_guest.py can go.
    assert 16 <= len(ok) < 31, f"{len(ok)} of 31 NICs with ROMs got every BAR"


def _shmem(alias: str, bus: int, size_mib: int) -> str:
    return (f"<shmem name='{alias}'><model type='ivshmem-plain'/><size unit='M'>{size_mib}</size>"
            f"<alias name='{alias}'/><address type='pci' domain='0' bus='{bus}' slot='0' function='0'/></shmem>")


LARGE_BAR_MIB = 256


@pytest.mark.parametrize("fw", ["seabios", "ovmf"])
@pytest.mark.parametrize("reserve", [False, True], ids=["no-reserve", "pref64-reserve"])
def test_large_bar_hotplug(fw, reserve, virsh, guest_image, guest_virt, guest_dir, guest_facts, tmp_path):
    """ivshmem-plain with 256 MiB of shared memory (a 256 MiB 64-bit prefetchable BAR 2)
    hotplugged into an empty root port."""
    virt = guest_virt[0]
    xml = _plan_xml(tmp_path, "bigbar", "machine: q35\ndefaults: {usb: false, memballoon: false}\n"
                    "hotplug:\n  - {class: pcie, count: 1}\n", virt)
    port = next(int(c.get("index")) for c in etree.fromstring(xml.encode()).iter("controller")
                if c.get("model") == "pcie-root-port")
    args = ("-global", f"pcie-root-port.pref64-reserve={2 * LARGE_BAR_MIB}M") if reserve else ()
    with Guest(virsh, xml, guest_image, guest_dir, firmware=fw, virt=virt, qemu_args=args) as g:
        bus = guest_buses(xml)[port]
        port_dev = next(d for d in g.view().devices.values() if d.secondary == bus)
        pref = port_dev.window("pref")
        g.attach(_shmem("ua-big", port, LARGE_BAR_MIB))
        at = f"0000:{bus:02x}:00.0"
        v = g.wait(lambda v: at in v.added, 120, "the ivshmem device")
        d = v.added[at]
    big = [r for r in d.bars if r.row == 2]
    assigned = not d.unassigned() and bool(big) and big[0].size == LARGE_BAR_MIB << 20
    guest_facts[f"large_bar_{fw}_{'reserve' if reserve else 'none'}"] = {
        "port_pref_window_at_boot": pref.size if pref else 0, "bar2_assigned": assigned,
        "unassigned": d.unassigned(), "klog": [k for k in v.klog if at in k][:4]}
    # Stated: a 256 MiB BAR fits only where the empty port's prefetchable window (firmware.py
    # port_pref) or the reservation holds it.
    row = firmware(fw, "q35")
    expect = reserve or row.port_pref >= LARGE_BAR_MIB << 20
    assert assigned == expect, f"{fw}, reserve={reserve}: BAR 2 assigned={assigned}: {d.unassigned()}"


@pytest.mark.parametrize("family", ["q35", "pc"])
def test_acpi_index_names_the_nic(family, virsh, guest_image, guest_virt, guest_dir, guest_facts, tmp_path):
    """<acpi index='N'/> on a NIC at boot and on a hotplugged one: the guest kernel's acpi_index."""
    virt = guest_virt[0]
    xml = _plan_xml(tmp_path, "acpi", f"machine: {family}\ndefaults: {{usb: false, memballoon: false}}\n"
                    "devices:\n  - {name: nic, model: virtio-net}\nhotplug:\n  - {class: pcie, count: 1}\n", virt)
    root = etree.fromstring(xml.encode())
    iface = next(root.iter("interface"))
    etree.SubElement(iface, "acpi", index="7")
    xml = etree.tostring(root, encoding="unicode")
    with Guest(virsh, xml, guest_image, guest_dir, firmware="seabios", virt=virt) as g:
        at_boot = {n.acpi_index for n in g.view().nets.values()}
        g.attach("<interface type='user'><model type='virtio'/><acpi index='8'/><alias name='ua-hp'/></interface>")
        v = g.wait(lambda v: len(v.nets) == 2, 120, "the hotplugged NIC's interface")
        hot = {n.acpi_index for n in v.nets.values()} - at_boot
    names = {"boot": f"eno{min(at_boot)}" if at_boot != {None} else None,
             "hotplug": f"eno{min(hot)}" if hot and hot != {None} else None}
    guest_facts[f"acpi_index_{family}"] = {"boot_acpi_index": sorted(map(str, at_boot)),
                                           "hotplug_acpi_index": sorted(map(str, hot)), "udev_names": names}
    assert at_boot == {7}, f"{family}: the boot NIC's acpi_index is {at_boot}, want 7"
    assert hot == {8}, f"{family}: the hotplugged NIC's acpi_index is {hot}, want 8"


ARM_SPEC = ("machine: virt\narch: aarch64\nvcpus: 2\nnuma: {nodes: 2}\ndefaults: {usb: false, memballoon: false}\n"
            "devices:\n  - {name: near, model: virtio-net}\n  - {name: far, model: virtio-net, numa_node: 1}\n")
ARM_VARIANTS = {"direct": ("none", False), "uefi": ("ovmf", False), "uefi-acpi": ("ovmf", True)}


@pytest.mark.parametrize("variant", list(ARM_VARIANTS))
def test_aarch64_expander_seen(variant, virsh, guest_image_aarch64, guest_dir, guest_facts, tmp_path):
    """A NIC behind a pcie-expander-bus (NUMA node 1) and one on the main root port, aarch64 virt, TCG.

    Stated: the guest finds an expander's buses only through ACPI (the device tree
    describes the main host bridge alone), and libvirt allows ACPI on aarch64 only with UEFI."""
    fw, acpi = ARM_VARIANTS[variant]
    xml = _plan_xml(tmp_path, "armx", ARM_SPEC, "qemu")
    root = etree.fromstring(xml.encode())
    if acpi:
        feats = root.find("features")
        if feats is None:
            feats = etree.Element("features")
            root.insert(list(root).index(root.find("os")) + 1, feats)
        if feats.find("acpi") is None:
            etree.SubElement(feats, "acpi")
    xml = etree.tostring(root, encoding="unicode")
    buses = guest_buses(xml)
    where = {i.find("alias").get("name"): guest_address(i.find("address"), buses) for i in root.iter("interface")}
    with Guest(virsh, xml, guest_image_aarch64, guest_dir, firmware=fw, virt="qemu", boot_timeout=400) as g:
        v = g.view()
    far, near = where["ua-far"], where["ua-near"]
    seen_far = far in v.devices and not v.devices[far].unassigned()
    guest_facts[f"aarch64_expander_{variant}"] = {
        "efi": v.boot.get("efi"), "near": near in v.devices, "far_at": far, "far_seen_with_bars": seen_far,
        "boot_s": round(g.boot_seconds, 1)}
    assert near in v.devices and not v.devices[near].unassigned(), f"{variant}: the NIC at {near} is missing"
    assert seen_far == acpi, f"{variant}: the NIC behind the expander at {far}: seen={seen_far}"
