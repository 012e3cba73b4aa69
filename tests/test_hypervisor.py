"""Tests of topo_solve.hypervisor against the real libvirt + QEMU.

The expected counts are rows of docs section 4 of real-libvirt.md (libvirt
9.0 + QEMU 7.2, Debian 12), which libvirt 11.3 + QEMU 10.0 gives as well
(libvirt-11.md section 4): the reference rows and the define-time reports run
on both judges, as they are the ground truth the rule tables encode; the
checks of the measuring machinery itself run once.  Tests marked ``libvirt``
skip when libvirt is not installed, unless TOPO_SOLVE_REQUIRE_LIBVIRT=1.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.libvirt_fixtures import BOTH, hv  # fixtures judge, virsh, ...: via conftest (pytest_plugins)

NO_SLOTS = "internal error: No more available PCI slots"


def domain(arch: str, machine: str, devices: str, *, acpi: bool = True) -> str:
    features = "<features><acpi/></features>" if acpi else ""
    return f"""<domain type='qemu'>
  <name>test</name>
  <uuid>0b9e6c4e-0000-4000-8000-000000000001</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  {features}
  <os><type arch='{arch}' machine='{machine}'>hvm</type></os>
  <devices>
{devices}
  </devices>
</domain>"""


OFF = "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n"
ROOT = "    <controller type='pci' index='0' model='pcie-root'/>\n"


def root_ports(n: int, first_index: int = 1) -> str:
    return "".join(f"    <controller type='pci' index='{i}' model='pcie-root-port'/>\n"
                   for i in range(first_index, first_index + n))


# The implicit root bus libvirt adds when the input names no PCI controller at all.
ROOT_ADDED = ["pci-root index=0"]

# row -> (domain xml, expected counts by class (measured in this order),
#         expected refusal (substring), expected added_controllers)
ROWS = {
    "row0-q35-4rp-nousb": (
        domain("x86_64", "q35", OFF + ROOT + root_ports(4)),
        {"pcie": 4}, NO_SLOTS, []),
    "row8-q35-3rp-pcie2pci": (
        domain("x86_64", "q35", OFF + ROOT + root_ports(3)
               + "    <controller type='pci' index='4' model='pcie-to-pci-bridge'/>\n"),
        {"pcie": 2, "pci": 31}, NO_SLOTS, []),
    "row15-pc-defaults-acpi": (
        domain("x86_64", "pc", ""),
        {"pci": 29}, NO_SLOTS, ROOT_ADDED),
    "row16-pc-defaults-noacpi": (
        domain("x86_64", "pc", "", acpi=False),
        {"pci": 0},
        "unable to execute QEMU command 'device_add': Bus 'pci.0' does not support hotplugging",
        ROOT_ADDED),
    "row21-pseries-defaults": (
        domain("ppc64", "pseries", "", acpi=False),
        {"pci": 29, "pcie": 29}, NO_SLOTS, ROOT_ADDED),
    "row24-virt-3rp": (
        domain("aarch64", "virt", ROOT + root_ports(3), acpi=False),
        {"pcie": 3}, NO_SLOTS, []),
}


def leftovers(virsh) -> list[str]:
    return [n for n in virsh.list_all() if n.startswith(hv.CHECK_PREFIX)]


@pytest.mark.libvirt
@BOTH
@pytest.mark.parametrize("row", list(ROWS))
def test_measured_hotplug_counts(virsh, row):
    xml, expected, refusal, added = ROWS[row]
    m = hv.measure(xml, list(expected), virsh=virsh, max_per_class=max(expected.values()) + 2)
    assert m.errors == []
    assert m.hotplugged == expected
    assert set(m.refusals) == set(expected)
    for cls, msg in m.refusals.items():
        assert refusal in msg, (cls, msg)
    assert m.added_controllers == added
    assert re.fullmatch(r"topo-solve-check-[0-9a-f]{8}", m.name)
    assert not virsh.exists(m.name)


@pytest.mark.libvirt
@BOTH
def test_row2_default_usb_and_balloon_take_root_ports_and_are_reported_moved(virsh):
    ports = "".join(
        f"    <controller type='pci' index='{i}' model='pcie-root-port'>"
        f"<address type='pci' domain='0x0000' bus='0x00' slot='{i + 1:#04x}' function='0x0'/>"
        "</controller>\n" for i in range(1, 5))
    devices = ("    <controller type='usb' index='0' model='qemu-xhci'><alias name='ua-usb'/></controller>\n"
               "    <memballoon model='virtio'><alias name='ua-balloon'/></memballoon>\n"
               + ROOT + ports)
    m = hv.measure(domain("x86_64", "q35", devices), ["pcie"], virsh=virsh, max_per_class=6)
    assert m.errors == []
    assert m.hotplugged == {"pcie": 2}
    assert m.refusals == {"pcie": NO_SLOTS}
    assert m.added_controllers == []
    # the root ports kept their addresses; usb and balloon got one root port each
    assert len(m.moved) == 2, m.moved
    usb, balloon = sorted(m.moved, key=lambda s: "memballoon" in s)
    assert usb.startswith("controller usb index=0 model=qemu-xhci") and "unaddressed -> 0000:" in usb
    assert balloon.startswith("memballoon model=virtio alias=ua-balloon: unaddressed -> 0000:")
    assert usb.split(" -> ")[1] != balloon.split(" -> ")[1]


@pytest.mark.libvirt
@BOTH
def test_added_spare_root_port_is_reported(virsh):
    # row 3: one root port, default usb + balloon -> libvirt adds a root port, 0 hotplugs
    m = hv.measure(domain("x86_64", "q35", ROOT + root_ports(1)), ["pcie"], virsh=virsh,
                   max_per_class=3)
    assert m.errors == []
    assert m.hotplugged == {"pcie": 0}
    assert len(m.added_controllers) == 1 and m.added_controllers[0].startswith("pcie-root-port index=2")


@pytest.mark.libvirt
def test_measure_caps_at_max_per_class_plus_one(virsh):
    m = hv.measure(domain("x86_64", "q35", OFF + ROOT + root_ports(4)), ["pcie"], virsh=virsh,
                   max_per_class=1)
    assert m.errors == []
    assert m.hotplugged == {"pcie": 2}
    assert m.refusals == {}


@pytest.mark.libvirt
@BOTH
def test_measure_leaves_nothing_behind(virsh):
    ok = hv.measure(domain("x86_64", "q35", OFF + ROOT + root_ports(1)), ["pcie"], virsh=virsh,
                    max_per_class=2)
    # 241 root ports pass the schema but libvirt refuses to define them
    bad = hv.measure(domain("x86_64", "q35", OFF + ROOT + root_ports(241)), ["pcie"], virsh=virsh,
                     max_per_class=2)
    assert ok.errors == [] and ok.hotplugged == {"pcie": 1}
    assert len(bad.errors) == 1 and bad.errors[0].startswith("define: ")
    assert "a PCI slot is needed to connect a PCI controller" in bad.errors[0]
    assert bad.hotplugged == {}
    names = virsh.run("list", "--all", "--name").split()
    assert ok.name not in names and bad.name not in names
    for m in (ok, bad):
        assert not (virsh.daemon_path(hv.QEMU_LOG_DIR) / f"{m.name}.log").exists()
    # No check domain at all may stay.  Another process sharing this libvirt (a developer
    # running the CLI) may be measuring right now: its domain lives seconds, a leaked one
    # forever.  So wait for strays to go, up to a minute (no wait at all in CI).
    end = time.monotonic() + 60
    while leftovers(virsh) and time.monotonic() < end:
        time.sleep(1)
    assert leftovers(virsh) == []


@pytest.mark.libvirt
def test_hostdev_class_is_refused_before_anything_is_defined(libvirt_uri):
    calls = []

    class Spy(hv.Virsh):
        def run(self, *args, **kw):
            calls.append(args[0])
            return super().run(*args, **kw)

    with pytest.raises(ValueError, match="hostdev"):
        hv.measure(domain("x86_64", "q35", OFF + ROOT), ["pcie", "hostdev"],
                   virsh=Spy(libvirt_uri), max_per_class=1)
    assert calls == []


@pytest.mark.libvirt
def test_virsh_error_carries_libvirts_message(virsh):
    with pytest.raises(hv.VirshError) as info:
        virsh.start("topo-solve-no-such-domain")
    assert not info.value.message.startswith("error:")
    assert "topo-solve-no-such-domain" in info.value.message
    assert info.value.returncode not in (0, None)


# ---- pure helpers: no libvirt needed ------------------------------------------------


def test_probe_device_xml():
    assert hv.probe_device_xml("pcie") == (
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>")
    assert hv.probe_device_xml("pci") == (
        "<rng model='virtio-transitional'><backend model='random'>/dev/urandom</backend></rng>")
    with pytest.raises(ValueError):
        hv.probe_device_xml("hostdev")
    with pytest.raises(ValueError):
        hv.probe_device_xml("nvme")


def test_parse_virsh_error_keeps_the_libvirt_line():
    msg, ctx = hv._parse_virsh_error(
        "error: Failed to attach device from /tmp/x.xml\n"
        "error: internal error: No more available PCI slots\n\n")
    assert msg == NO_SLOTS
    assert ctx == ["Failed to attach device from /tmp/x.xml"]


def test_moved_and_added_from_xml_alone():
    import xml.etree.ElementTree as ET

    before = ET.fromstring(
        "<domain><devices>"
        "<controller type='pci' model='pcie-root'/>"
        "<controller type='pci' model='pcie-root-port'>"
        "<address type='pci' domain='0' bus='0' slot='2' function='0'/></controller>"
        "<rng model='virtio'><alias name='ua-rng'/>"
        "<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></rng>"
        "<memballoon model='virtio'/>"
        "</devices></domain>")
    after = ET.fromstring(
        "<domain><devices>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<controller type='pci' index='1' model='pcie-root-port'>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></controller>"
        "<controller type='pci' index='2' model='pcie-root-port'>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></controller>"
        "<rng model='virtio'><alias name='ua-rng'/>"
        "<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></rng>"
        "<memballoon model='virtio'>"
        "<address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></memballoon>"
        "</devices></domain>")
    assert hv._added_pci_controllers(before, after) == ["pcie-root-port index=2 at 0000:00:03.0"]
    assert hv._moved_devices(before, after) == [
        "memballoon model=virtio: unaddressed -> 0000:02:00.0"]


def test_added_devices_names_the_watchdog_and_what_took_a_slot():
    import xml.etree.ElementTree as ET

    before = ET.fromstring(
        "<domain><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<interface type='user'><model type='virtio'/></interface></devices></domain>")
    after = ET.fromstring(
        "<domain><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<controller type='pci' index='1' model='pcie-root-port'/>"
        "<interface type='user'><model type='virtio'/></interface>"
        "<controller type='usb' index='0' model='qemu-xhci'>"
        "<address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></controller>"
        "<watchdog model='itco' action='reset'/>"
        "<audio id='1' type='none'/></devices></domain>")
    assert hv._added_devices(before, after) == [
        "controller type=usb model=qemu-xhci at 0000:02:00.0",
        "watchdog model=itco (no PCI address)",
        "audio type=none (no PCI address)",
    ]
    # neither an added PCI controller nor a moved address
    assert hv._moved_devices(before, after) == []


def test_versions_and_socket_uri():
    text = ("Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n"
            "Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 10.0.13\nRunning against daemon: 11.3.0\n")
    v = hv.parse_versions(text)
    assert (v.libvirt, v.qemu, v.client) == ((11, 3, 0), (10, 0, 13), (9, 0, 0))
    assert v.label == "libvirt 11.3 + QEMU 10.0"
    # without --daemon virsh prints no daemon line: the library's version stands in
    assert hv.parse_versions(text.rsplit("Running against", 1)[0]).libvirt == (9, 0, 0)
    with pytest.raises(ValueError, match="versions"):
        hv.parse_versions("error: failed to connect to the hypervisor\n")
    assert hv.socket_uri("/srv/a b/run/libvirt/libvirt-sock") == \
        "qemu:///system?socket=/srv/a%20b/run/libvirt/libvirt-sock"
    with pytest.raises(ValueError, match="absolute"):
        hv.socket_uri("run/libvirt/libvirt-sock")


def test_scratch_dir_is_seen_by_the_daemon_under_its_root(tmp_path):
    virsh = hv.Virsh("qemu:///system?socket=/nowhere", root=tmp_path)
    assert virsh.daemon_path("/var/log/libvirt/qemu") == tmp_path / "var/log/libvirt/qemu"
    with virsh.scratch_dir() as s:
        host, seen_as = s.path("disk.img")
        assert host.parent.is_dir() and host.parent.parent == tmp_path / "var" / "tmp"
        assert seen_as == f"/var/tmp/{host.parent.name}/disk.img"
        with pytest.raises(ValueError):
            s.path("../escape.img")
    assert not host.parent.exists()
