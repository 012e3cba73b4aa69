"""The fixed faults of issue 11 (tests/test_known_faults.py) that are about what libvirt accepts,
checked in the real libvirt: what topo-solve now refuses, libvirt refuses (or QEMU does not start);
what it now plans, libvirt defines unchanged.

* a pcie-root-port with ``<target><node>``, and an expander whose node is no cell: libvirt refuses
  both at define;
* a PCI controller whose ``<address>`` is not PCI: libvirt refuses 'ccw' at define; 'isa',
  'virtio-mmio' and the like it defines unchanged, reserving no PCI slot, and QEMU does not start the
  guest (the same guest with a PCI address starts: the address is the cause);
* pc guests with NUMA nodes whose root bus fills up (exit 3 before): the plans define unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .libvirt_fixtures import BOTH, hv

pytestmark = [pytest.mark.libvirt, BOTH]

REPO = Path(__file__).resolve().parent.parent
WEB03 = (REPO / "specs" / "domains" / "web-03.xml").read_text()


def _named(xml: str, name: str) -> str:
    """``xml`` as guest ``name`` (no uuid), under TCG: a judge without KVM refuses type 'kvm' first."""
    xml = xml.replace('<domain type="kvm">', '<domain type="qemu">', 1)
    xml = re.sub(r"\s*<uuid>[^<]*</uuid>", "", xml, count=1)
    return re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)


def _refusal(virsh, xml: str) -> str:
    """libvirt's define refuses ``xml``: its message."""
    with pytest.raises(hv.VirshError) as err:
        name = virsh.define(xml)
        virsh.undefine(name)  # only reached if libvirt took it: the test fails after cleaning up
    return err.value.message


def _web03_with(element: str, name: str) -> str:
    marker = '<controller type="pci" model="pcie-root-port"/>'
    assert marker in WEB03
    return _named(WEB03.replace(marker, element, 1), name)


CELLS = ('<cpu mode="host-passthrough"><numa><cell id="0" cpus="0" memory="1048576"/>'
         '<cell id="1" cpus="1" memory="1048576"/></numa></cpu>')


def _with_cells(xml: str) -> str:
    assert '<cpu mode="host-passthrough"/>' in xml
    return xml.replace('<cpu mode="host-passthrough"/>', CELLS, 1)


def test_libvirt_refuses_a_root_port_with_a_numa_node(judge, virsh):
    """What tests/test_known_faults.py::test_a_root_port_with_a_numa_node gives topo-solve: web-03 with
    a root port tied to node 3 (it has no cells), and the same with two cells and node 1, where only the
    root port's <node> is wrong.  Without the <node> the guest defines (the control)."""
    message = _refusal(virsh, _web03_with('<controller type="pci" model="pcie-root-port"><target><node>3</node>'
                                          '</target></controller>', "ts-faults-rp-node"))
    assert "NUMA node (3)" in message and "pcie-root-port" in message, message
    message = _refusal(virsh, _with_cells(_web03_with('<controller type="pci" model="pcie-root-port"><target>'
                                                      '<node>1</node></target></controller>', "ts-faults-rp-node")))
    assert "numaNode" in message and "pcie-root-port" in message, message
    name = virsh.define(_with_cells(_web03_with('<controller type="pci" model="pcie-root-port"/>',
                                                "ts-faults-rp-node")))
    virsh.undefine(name)


def test_libvirt_refuses_an_expander_on_a_node_that_is_no_cell(judge, virsh):
    message = _refusal(virsh, _web03_with('<controller type="pci" model="pcie-expander-bus"><target><node>0</node>'
                                          '</target></controller>', "ts-faults-pxb-node"))
    assert "NUMA node (0)" in message and "pcie-expander-bus" in message, message


def _small_q35(address: str, name: str) -> str:
    """A q35 guest with a root port at ``address`` and one without an address, which libvirt gives the
    first free root slot, 00:01.0 (no disk, so it starts under TCG)."""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
            "<controller type='usb' model='none'/><memballoon model='none'/>"
            "<controller type='pci' model='pcie-root'/>"
            f"<controller type='pci' index='1' model='pcie-root-port'>{address}</controller>"
            "<controller type='pci' index='2' model='pcie-root-port'/>"
            "</devices></domain>")


@pytest.mark.parametrize("address", [
    "<address type='isa' iobase='0x505'/>",
    "<address type='virtio-mmio'/>",
    "<address type='usb' bus='0' port='1'/>",
], ids=["isa", "virtio-mmio", "usb"])
def test_a_pci_controller_with_another_address_type_does_not_start(address, judge, virsh):
    """libvirt defines the root port with the address as given and reserves no PCI slot for it; QEMU
    then refuses the guest (an option a root port does not have, or, for virtio-mmio, the root slot
    QEMU picks for it is the one libvirt gave the other root port).  With a PCI address of its own the
    same guest starts: the address is the cause."""
    name = "ts-faults-addr"
    pci = "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>"
    for given, starts in ((address, False), (pci, True)):
        defined = virsh.define(_small_q35(given, name))
        try:
            kept = virsh.dumpxml(defined, inactive=True)
            a_type = re.search(r"type='([^']+)'", given).group(1)
            assert re.search(rf"index='1' model='pcie-root-port'>.*?<address type='{a_type}'", kept, re.S), kept
            if starts:
                virsh.start(defined)
            else:
                with pytest.raises(hv.VirshError):
                    virsh.start(defined)
        finally:
            assert hv._cleanup(virsh, defined) is None


def test_libvirt_refuses_a_ccw_address_on_a_pci_controller(judge, virsh):
    message = _refusal(virsh, _small_q35("<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>",
                                         "ts-faults-ccw"))
    assert "CCW" in message, message


@pytest.mark.parametrize("spec", ["PC_NUMA_FULL_ROOT", "PC_NUMA_1000"], ids=["full-root-bus", "thousand-nics"])
def test_pc_numa_with_a_full_root_bus_defines_unchanged(spec, judge, virsh, daemon_files):
    """The plans of tests/test_known_faults.py::test_pc_numa_with_a_full_root_bus (exit 3 before):
    libvirt defines them as planned, adding no controller and moving no address (every <node> checked
    against the cells, every bridge in its place)."""
    from . import test_known_faults as known
    from .test_libvirt_scale import _define_unchanged, plan_of

    plan = plan_of(getattr(known, spec), judge.target)
    assert plan.added["pci-expander-bus"] >= 1 and plan.added["pci-bridge"] >= 30
    _define_unchanged(plan, virsh, daemon_files)
