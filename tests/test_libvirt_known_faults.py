"""The fixed faults of issue 11 (tests/test_known_faults.py) that are about what libvirt accepts,
checked in the real libvirt: what topo-solve now refuses, libvirt refuses (or QEMU does not start);
what it now plans, libvirt defines unchanged.

* a pcie-root-port with ``<target><node>``, and an expander whose node is no cell: libvirt refuses
  both at define;
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
