"""Domain XML cases found by running scripts/corpus.py over libvirt's own test-suite domains.

Each case is written here anew, in the fewest lines that show it (no file of that corpus is
copied); the comment says what libvirt does and where its source says so.  Also: Ubuntu's
machine types plan as their family.
"""

from __future__ import annotations

import pytest
from lxml import etree

from topo_solve.domain.plan import plan_document
from topo_solve.domain.read import read_domain, read_layout
from topo_solve.errors import SpecError
from topo_solve.model import EndpointClass as K
from topo_solve.model import Headroom
from topo_solve.verify import verify

from .test_domain_plan import VIRT_INSTALL_Q35

PCIE1 = (Headroom(K.PCIE, 1, "pcie"),)
PCI1 = (Headroom(K.PCI, 1, "pci"),)


def _domain(machine: str, devices: str, arch: str = "x86_64", acpi: bool = True) -> str:
    features = "<features><acpi/></features>" if acpi else ""
    return (f"<domain type='qemu'><name>case</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
            f"<os><type arch='{arch}' machine='{machine}'>hvm</type></os>{features}<devices>{devices}"
            "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>")


def _kinds(text: str) -> list[str]:
    return [d.endpoint.kind for d in read_domain(text, "case.xml").devices if d.implicit is None]


def _on_bridge(bridge: str) -> str:
    ctrl = ("<controller type='pci' index='1' model='pcie-root-port'><address type='pci' bus='0x00' "
            "slot='0x02'/></controller><controller type='pci' index='2' model='pcie-to-pci-bridge'>"
            "<address type='pci' bus='0x01' slot='0x00'/></controller>") if bridge == "pcie-to-pci-bridge" else (
            "<controller type='pci' index='1' model='dmi-to-pci-bridge'><address type='pci' bus='0x00' "
            "slot='0x1e'/></controller><controller type='pci' index='2' model='pci-bridge'>"
            "<address type='pci' bus='0x01' slot='0x01'/></controller>")
    return _domain("q35", "<controller type='pci' index='0' model='pcie-root'/>" + ctrl
                   + "<interface type='user'><model type='virtio'/><address type='pci' bus='0x02' slot='0x03'/>"
                   "</interface>")


# The cases as XML and headroom; tests/test_libvirt_domain.py defines the plan of each that this
# libvirt + QEMU can run (``LIBVIRT_CASES``) and checks it keeps every address.
CASES = {
    "shmem-without-model": (_domain("q35", "<shmem name='shm0'><size unit='M'>4</size></shmem>"), PCIE1),
    "vhost-scsi-transitional": (_domain("q35", "<hostdev mode='subsystem' type='scsi_host' "
                                               "model='virtio-transitional'><source protocol='vhost' "
                                               "wwpn='naa.5123456789abcde0'/></hostdev>"), ()),
    "pcie-nic-on-pci-bridge": (_on_bridge("pci-bridge"), PCIE1),
    "pcie-nic-on-pcie-to-pci-bridge": (_on_bridge("pcie-to-pci-bridge"), PCIE1),
    "unindexed-scsi-controllers": (_domain("pseries", "<controller type='scsi' index='1' model='virtio-scsi'/>"
                                           + "<controller type='scsi' model='virtio-scsi'/>" * 33, arch="ppc64"),
                                   PCI1),
    "unindexed-usb2-sets": (_domain("q35", "".join(f"<controller type='usb' model='{m}'/>" for m in (
        "ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3") * 2)).replace(
        "<controller type='usb' model='none'/>", ""), ()),
    "unaddressed-dmi-to-pci-bridge": (_domain("q35", "<controller type='pci' index='0' model='pcie-root'/>"
                                                     "<controller type='pci' index='1' model='dmi-to-pci-bridge'/>"
                                                     "<controller type='pci' index='2' model='pci-bridge'/>"
                                                     "<sound model='ich6'/>"), PCIE1 + PCI1),
    "expander-bus-without-busnr": (_domain("pc", "<controller type='pci' index='0' model='pci-root'/>"
                                                 "<controller type='pci' index='1' model='pci-expander-bus'>"
                                                 "<target busNr='254'/></controller>"
                                                 "<controller type='pci' index='2' model='pci-expander-bus'/>"
                                                 "<interface type='user'><model type='e1000'/></interface>"), PCI1),
}
# QEMU 7.2 has no legacy ivshmem (libvirt refuses it at define), and a vhost-scsi device needs the
# host's vhost-scsi target: those two are read and planned, not defined
LIBVIRT_CASES = [k for k in CASES if k not in ("shmem-without-model", "vhost-scsi-transitional")]


def test_shmem_without_model_is_ivshmem():
    # domain_conf.c virDomainShmemDefParseXML: no <model> leaves the enum at its first value, 'ivshmem';
    # qemuDomainDeviceCalculatePCIConnectFlags gives every shmem pciFlags
    text, _ = CASES["shmem-without-model"]
    assert _kinds(text) == ["ivshmem"]
    planned = plan_document(text, "case.xml", PCIE1)
    layout, rules = read_layout(planned.edit.data, "case.xml")
    assert not verify(layout, rules, strict_auto=False).errors


def test_transitional_vhost_scsi_is_conventional_pci():
    # qemuDomainDeviceCalculatePCIConnectFlags: a scsi_host hostdev of model virtio-transitional takes
    # pciFlags ("Transitional devices only work in conventional PCI slots")
    text, _ = CASES["vhost-scsi-transitional"]
    assert _kinds(text) == ["vhost-scsi-transitional"]
    planned = plan_document(text, "case.xml", ())
    layout, _ = read_layout(planned.edit.data, "case.xml")
    bridges = {c.index for c in layout.controllers if c.model == "pcie-to-pci-bridge"}
    (placed,) = [p for p in layout.placed if p.endpoint.kind == "vhost-scsi-transitional"]
    assert placed.address.bus in bridges  # a conventional slot, behind a pcie-to-pci-bridge


@pytest.mark.parametrize("bridge", ["pci-bridge", "pcie-to-pci-bridge"])
def test_a_pcie_device_the_user_placed_on_a_conventional_bridge_is_no_broken_rule(bridge):
    # virDomainPCIAddressFlagsCompatible: at an address from the config, a bus that takes PCI endpoints
    # takes PCIe ones as well ("allow a PCI device to connect to a PCIe slot, or vice versa"); the real
    # libvirt defines it too (tests/test_libvirt_domain.py)
    text = _on_bridge(bridge)
    layout, rules = read_layout(text, "case.xml")
    assert verify(layout, rules, strict_auto=False).errors == []
    planned = plan_document(text, "case.xml", PCIE1)
    assert planned.extension.capacity[K.PCIE] >= 1


def test_controllers_without_an_index_are_told_apart():
    # domain_postparse.c: a controller without an index gets the lowest one its type does not use,
    # in order; many unindexed virtio-scsi controllers are many devices, each placed once
    text, headroom = CASES["unindexed-scsi-controllers"]
    domain = read_domain(text, "case.xml")
    names = [d.endpoint.name for d in domain.devices if d.endpoint.kind == "virtio-scsi"]
    assert names == [f"scsi controller {i}" for i in [1, 0] + list(range(2, 34))]
    planned = plan_document(text, "case.xml", headroom)
    root = etree.fromstring(planned.edit.data)
    addrs = [(a.get("bus"), a.get("slot")) for el in root.iter("controller") if el.get("type") == "scsi"
             for a in el.iter("address")]
    assert len(addrs) == 34 and len(set(addrs)) == 34  # 34 controllers, 34 slots (a second PHB)
    layout, rules = read_layout(planned.edit.data, "case.xml")
    assert not verify(layout, rules, strict_auto=False).errors


def test_usb2_companions_without_an_index_join_the_set_before_them():
    # domain_postparse.c: an unindexed USB2 companion right after another USB2 controller takes its
    # index, unless that index has its model already: two sets written without any index
    text, headroom = CASES["unindexed-usb2-sets"]
    planned = plan_document(text, "case.xml", headroom)
    root = etree.fromstring(planned.edit.data)
    slots = [el.find("address").get("slot") for el in root.iter("controller") if el.get("type") == "usb"]
    assert slots == ["0x1d"] * 4 + ["0x1a"] * 4  # the ICH9 sets' own slots, one set each


def test_an_unaddressed_controller_of_a_model_the_planner_never_adds_is_placed():
    # libvirt places every PCI controller without an address, in index order, before the devices
    # (qemuDomainAssignDevicePCISlots): a dmi-to-pci-bridge first, then a pci-bridge on it
    text, headroom = CASES["unaddressed-dmi-to-pci-bridge"]
    planned = plan_document(text, "case.xml", headroom)
    layout, rules = read_layout(planned.edit.data, "case.xml")
    at = {c.index: c.address for c in layout.controllers}
    assert at[1].bus == 0 and at[2].bus == 1  # the pci-bridge hangs on the dmi-to-pci-bridge
    report = verify(layout, rules, strict_auto=False)
    assert not report.errors and report.capacity[K.PCI] >= 1 and report.capacity[K.PCIE] >= 1


def test_an_expander_bus_without_a_bus_number_gets_libvirts():
    # qemuDomainAddressFindNewBusNr: the lowest busNr of the guest's controllers minus 2, 254 for the
    # first; two expander buses, the second without busNr, do not share a range
    text, headroom = CASES["expander-bus-without-busnr"]
    planned = plan_document(text, "case.xml", headroom)
    layout, rules = read_layout(planned.edit.data, "case.xml")
    assert dict(next(c for c in planned.extension.layout.controllers if c.index == 2).target)["busNr"] == 252
    assert not verify(layout, rules, strict_auto=False).errors
    # written out, as libvirt would pick it at define, so the output says what the guest will be
    written = etree.fromstring(planned.edit.data).find("devices/controller[@index='2']/target")
    assert written is not None and written.get("busNr") == "252"


# -- Ubuntu's machine types plan as their family -----------------------------------------------------

PC_OF_Q35 = VIRT_INSTALL_Q35.replace('machine="q35"', 'machine="pc"').replace(
    '    <controller type="pci" model="pcie-root"/>\n', "").replace(
    '    <controller type="pci" model="pcie-root-port"/>\n', "")


@pytest.mark.parametrize("family, text, machine", [
    ("q35", VIRT_INSTALL_Q35, m) for m in ("pc-q35-jammy", "pc-q35-noble-v2", "pc-q35-jammy-hpb-maxcpus", "ubuntu-q35")
] + [
    ("pc", PC_OF_Q35, m) for m in ("pc-i440fx-focal-hpb", "pc-i440fx-jammy", "pc-i440fx-noble-v2", "ubuntu")
])
@pytest.mark.parametrize("right_size", [False, True])
def test_an_ubuntu_machine_type_plans_as_its_family(family, text, machine, right_size):
    # libvirt tells the family by prefix (qemuDomainMachineIsQ35: pc-q35-*; IsI440FX: pc-i440fx-*), and
    # 'ubuntu' / 'ubuntu-q35' are Ubuntu QEMU's aliases; this libvirt's QEMU has none of these names, so
    # the plan is compared with the plan of the same XML on the upstream family word
    headroom = (Headroom(K.PCIE, 3, "pcie"), Headroom(K.PCI, 2, "pci")) if family == "q35" else PCI1
    ubuntu = text.replace(f'machine="{family}"', f'machine="{machine}"')
    assert ubuntu != text
    theirs = plan_document(ubuntu, "ubuntu.xml", headroom, right_size=right_size)
    ours = plan_document(text, "upstream.xml", headroom, right_size=right_size)
    assert theirs.rules.family == family
    assert theirs.edit.text == ours.edit.text.replace(f'machine="{family}"', f'machine="{machine}"')


def test_a_device_written_at_the_chipsets_own_address_is_refused():
    # qemuDomainValidateDevicePCISlotsPIIX3 reserves 00:01.1 for the IDE controller whatever else the
    # XML put there, and libvirt then refuses the double use; the plan must not write both there
    text = _domain("pc", "<controller type='ide' index='0'/><memballoon model='virtio'><address type='pci' "
                   "slot='1' function='1'/></memballoon>").replace("<memballoon model='none'/>", "")
    with pytest.raises(SpecError) as err:
        plan_document(text, "case.xml", ())
    (finding,) = err.value.problems
    assert "both use PCI address 0000:00:01.1" in finding.message and "chipset" in finding.message


@pytest.mark.parametrize("a_type, refused", [
    ("off", True), ("none", True), ("s390", True),  # libvirt 9.0: "unknown address type '...'"
    ("virtio-mmio", False), ("unassigned", False),  # not PCI: the element is left where it is
])
def test_an_address_type_libvirt_does_not_know_is_refused_at_its_line(a_type, refused):
    text = _domain("q35", f"<memballoon model='virtio'>\n<address type='{a_type}'/></memballoon>").replace(
        "<memballoon model='none'/>", "")
    if not refused:
        planned = plan_document(text, "case.xml", PCIE1)
        assert not any(p.endpoint.kind == "virtio-balloon" for p in planned.extension.placed)
        assert f"<address type='{a_type}'/>" in planned.edit.text
        return
    with pytest.raises(SpecError) as err:
        plan_document(text, "case.xml", PCIE1)
    assert f"case.xml:2: memballoon/address@type: address type '{a_type}'" in str(err.value)
