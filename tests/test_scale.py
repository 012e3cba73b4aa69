"""Switches, expander buses and NUMA nodes: the rules one case at a time.

Planning cases say what the planner adds and why (the count model's
arithmetic in the ``#``); verifier cases break one rule each in a hand-written
layout (busNr ranges, NUMA nodes, switch ports) and expect the verifier to
name it; spec cases expect one finding with its line for each mistake in a
``numa`` section.  What real libvirt does with these layouts is in
test_conformance.py (marker libvirt).
"""

from __future__ import annotations

import textwrap
import time

import pytest

from topo_solve.domain.read import read_layout
from topo_solve.domain.write import render_domain
from topo_solve.errors import InfeasibleError, SpecError
from topo_solve.model import EndpointClass
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from topo_solve.verify import verify

from .test_solve import Q35_OFF, Q35_ROOT, Q35_SATA, addr, domain, root_ports

PCIE, PCI, HOSTDEV = EndpointClass.PCIE, EndpointClass.PCI, EndpointClass.HOSTDEV


def problem_of(text: str, file: str = "case.yaml"):
    spec, lines = parse_spec(textwrap.dedent(text), file)
    return to_problem(spec, lines, file)


def plan_of(text: str):
    return solve(problem_of(text))


def targets(plan, model: str) -> list[dict]:
    return [dict(c.target) for c in plan.layout.controllers if c.model == model]


# -- switches ------------------------------------------------------------------------------

def test_root_ports_first_then_exactly_one_switch():
    """q35 without video has 30 free root slots: 240 functions.  usb and balloon, never unplugged,
    take two of them, so 238 root ports; 238 PCIe hotplugs fill them; the 239th needs a switch: its
    upstream port takes a root port, so 239 + 1 upstream = 240 ports, 238 root ports + 2 downstream."""
    at = plan_of("name: a\nmachine: q35\nhotplug: [{class: pcie, count: 238}]\n")
    assert at.added == {"pcie-root-port": 238}
    past = plan_of("name: a\nmachine: q35\nhotplug: [{class: pcie, count: 239}]\n")
    assert past.added == {"pcie-root-port": 238, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 2}
    assert past.capacity[PCIE] == 239


def test_the_bus_limit_on_q35():
    """253 PCIe hotplugs: usb and balloon share a root slot with root ports (never unplugged), 238
    root ports, one switch whose upstream port takes a root port, 16 downstream ports: 255
    controllers (indexes 1-255) and 256 bus numbers, both budgets full.  One more does not fit."""
    plan = plan_of("name: a\nmachine: q35\nhotplug: [{class: pcie, count: 253}]\n")
    assert plan.added == {"pcie-root-port": 238, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 16}
    assert max(c.index for c in plan.layout.controllers) == 255
    assert plan.budgets["bus numbers"] == (256, 256)
    with pytest.raises(InfeasibleError) as info:
        plan_of("name: a\nmachine: q35\nhotplug: [{class: pcie, count: 254}]\n")
    assert {c.what for c in info.value.causes} == {"controller indexes", "guest bus numbers"}


def test_switch_ports_follow_libvirt():
    """The upstream port sits on a root port (slot 0), its downstream ports on its bus from slot 0
    with port = slot and chassis = index (qemuDomainAssignPCIAddresses); each downstream port's
    index is above the upstream port's."""
    plan = plan_of("name: a\nmachine: q35\ndefaults: {usb: false, memballoon: false}\n"
                   "hotplug: [{class: pcie, count: 250}]\n")
    by_index = {c.index: c for c in plan.layout.controllers}
    up = [c for c in plan.layout.controllers if c.model == "pcie-switch-upstream-port"]
    assert len(up) == 1 and by_index[up[0].address.bus].model == "pcie-root-port" and up[0].address.slot == 0
    downs = [c for c in plan.layout.controllers if c.model == "pcie-switch-downstream-port"]
    assert [c.address.slot for c in downs] == list(range(len(downs)))
    for c in downs:
        assert c.address.bus == up[0].index < c.index
        assert dict(c.target) == {"chassis": c.index, "port": c.address.slot}


def test_pinned_root_slots_make_a_small_switch_layout():
    """The conformance layout: 28 devices pinned on the root bus (never unplugged) leave slots 0x01
    and 0x1e, so 16 root ports; 20 PCIe hotplugs + a pcie-to-pci-bridge for the PCI ones need 21
    ports + 1 for the switch: 16 root ports and 6 downstream ports."""
    plan = plan_of(SWITCH_SPEC)
    assert plan.added == {"pcie-root-port": 16, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 6,
                          "pcie-to-pci-bridge": 1}
    assert plan.capacity[PCIE] == 20 and plan.capacity[PCI] == 31


SWITCH_SPEC = ("name: switch\nmachine: q35\ndefaults: {usb: false, memballoon: false}\ndevices:\n"
               + "".join(f"  - {{name: pin{s:02x}, model: virtio-rng, address: \"0000:00:{s:02x}.0\", "
                         "hotunplug: false}\n" for s in range(2, 0x1E))
               + "hotplug:\n  - {class: pcie, count: 20}\n  - {class: pci, count: 3}\n")


def test_devices_never_unplugged_trade_root_slots_for_a_switch():
    """40 virtio devices never unplugged and 200 PCIe hotplugs (+ usb, balloon): 242 endpoints want a
    port or a root function, and pcie-root's 30 slots have 240 functions.  Devices never unplugged
    share root slots as functions, so each one on the root complex takes the function its root port
    would have taken and saves that port: all 42 go there, 198 root ports fill the other functions,
    and one switch (its upstream port on a root port) adds the 3 ports still missing: 202 controllers
    (227 when each device on the root complex took a whole slot)."""
    plan = plan_of("name: a\nmachine: q35\ndevices:\n  - {model: virtio-net, count: 40, hotunplug: false}\n"
                   "hotplug: [{class: pcie, count: 200}]\n")
    assert plan.added == {"pcie-root-port": 198, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 3}


# -- NUMA ----------------------------------------------------------------------------------

NUMA_SPEC = """
    name: numa
    machine: q35
    numa: {nodes: 2}
    devices:
      - {name: gpu, model: hostdev, numa_node: 1}
      - {name: nic, model: virtio-net}
    hotplug:
      - {class: pcie, count: 2, numa_node: 0}
      - {class: pcie, count: 1}
"""


def test_numa_devices_go_behind_their_nodes_expander():
    """One pcie-expander-bus per node that has devices or headroom, on pcie-root after the root
    ports of the devices without a node; root ports for the node's devices and headroom on it.
    busNr: node 0's subtree is 3 buses (pxb + 2 root ports) at the top, 253-255; node 1's 2 buses,
    251-252; the root bus keeps 0-250."""
    plan = plan_of(NUMA_SPEC)
    assert plan.added == {"pcie-root-port": 5, "pcie-expander-bus": 2}  # usb, balloon on pcie-root
    assert targets(plan, "pcie-expander-bus") == [{"busNr": 253, "node": 0}, {"busNr": 251, "node": 1}]
    assert plan.capacity == {PCIE: 1, PCI: 0, HOSTDEV: 1}
    assert plan.node_capacity[0][PCIE] == 2 and plan.node_capacity[1][PCIE] == 0
    xml = render_domain(plan)
    assert "<target busNr=\"253\">\n        <node>0</node>\n      </target>" in xml
    assert "<cell id=\"0\" cpus=\"0\" memory=\"512\" unit=\"MiB\"/>" in xml
    assert "<vcpu>2</vcpu>" in xml and "<memory unit=\"MiB\">1024</memory>" in xml


def test_devices_without_a_node_stay_off_the_nodes():
    """A node's expander has free room for conventional PCI (a pcie-to-pci-bridge of 31 slots), but
    the PCI headroom without a node gets its own root port and bridge: a position behind node 1's
    expander would tell the guest the device is local to node 1."""
    plan = plan_of("""
        name: a
        machine: q35
        defaults: {usb: false, memballoon: false}
        numa: {nodes: 2}
        devices: [{model: e1000, numa_node: 1}]
        hotplug: [{class: pci, count: 1}]
    """)
    assert plan.added == {"pcie-root-port": 2, "pcie-to-pci-bridge": 2, "pcie-expander-bus": 1}
    assert plan.capacity[PCI] == 31 and plan.node_capacity[1][PCI] == 30


def test_pc_numa_uses_a_pci_expander_bus_and_a_bridge_for_hotplug():
    """On pc the pxb's own slots take no hotplug and no unplug under QEMU 7.2, so the node's
    headroom, and its devices that may be unplugged, sit behind a pci-bridge on the pxb (only a
    device never unplugged may sit on the pxb itself).  pxb's busNr range holds 3 buses: its own,
    its built-in bridge's and the pci-bridge's.  The pxb's free slots are a trap for libvirt's
    auto-placement: the plan warns."""
    plan = plan_of("""
        name: a
        machine: pc
        numa: {nodes: 2}
        devices: [{model: virtio-net, numa_node: 1}]
        hotplug: [{class: pci, count: 2, numa_node: 1}]
    """)
    assert plan.added == {"pci-expander-bus": 1, "pci-bridge": 1}
    assert targets(plan, "pci-expander-bus") == [{"busNr": 253, "node": 1}]
    assert plan.node_capacity[1][PCI] == 30  # the bridge's 31 slots, one taken by the NIC
    nic = next(p for p in plan.layout.placed if p.endpoint.kind == "virtio-net")
    assert dict((c.index, c.model) for c in plan.layout.controllers)[nic.address.bus] == "pci-bridge"
    assert any("pci-expander-bus" in w and "explicit address" in w for w in plan.warnings)


def test_pseries_numa_uses_phbs_of_the_node():
    """pseries: a node's devices go on PHBs whose <target> names the node (never the default PHB);
    an assigned device of its own IOMMU group takes a PHB, each hostdev to hotplug an empty one."""
    plan = plan_of("""
        name: a
        machine: pseries
        numa: {nodes: 2}
        devices:
          - {model: virtio-net, numa_node: 0}
          - {model: hostdev, iommu_group: 3, numa_node: 1}
        hotplug: [{model: hostdev, count: 1, numa_node: 1}]
    """)
    assert plan.added == {"pci-root": 3}
    assert [dict(c.target) for c in plan.layout.controllers] == [
        {"index": 0}, {"index": 1, "node": 0}, {"index": 2, "node": 1}, {"index": 3, "node": 1}]
    assert plan.node_capacity[1][HOSTDEV] == 1
    assert "<cell id=\"1\" cpus=\"1\" memory=\"512\" unit=\"MiB\"/>" in render_domain(plan)


def test_virt_numa_warns_that_the_guest_needs_uefi():
    plan = plan_of("name: a\nmachine: virt\nnuma: {nodes: 2}\nhotplug: [{class: pcie, count: 1, numa_node: 1}]\n")
    assert plan.added == {"pcie-expander-bus": 1, "pcie-root-port": 1}
    assert any("UEFI" in w for w in plan.warnings)


def test_a_node_that_cannot_fit_is_named():
    """pseries: 31 hostdevs to hotplug on node 1 need 31 empty PHBs of that node; 30 exist."""
    with pytest.raises(InfeasibleError) as info:
        plan_of("name: a\nmachine: pseries\nnuma: {nodes: 2}\nhotplug: [{model: hostdev, count: 31, numa_node: 1}]\n")
    assert info.value.causes[0].what.startswith("NUMA node 1: ")


def test_nodes_share_the_budgets():
    """Two nodes with 120 PCIe hotplugs each: 242 root ports + 2 expanders = 244 controllers fit the
    255 indexes, but with 12 more on the root bus's tree the total is past them."""
    ok = plan_of("name: a\nmachine: q35\ndefaults: {usb: false, memballoon: false}\nnuma: {nodes: 2}\nhotplug:\n"
                 "  - {class: pcie, count: 120, numa_node: 0}\n  - {class: pcie, count: 120, numa_node: 1}\n")
    assert sum(ok.added.values()) == 242
    with pytest.raises(InfeasibleError) as info:
        plan_of("name: a\nmachine: q35\ndefaults: {usb: false, memballoon: false}\nnuma: {nodes: 2}\nhotplug:\n"
                "  - {class: pcie, count: 120, numa_node: 0}\n  - {class: pcie, count: 120, numa_node: 1}\n"
                "  - {class: pcie, count: 14}\n")
    assert "controller indexes" in {c.what for c in info.value.causes}


# -- the verifier, one broken rule at a time ----------------------------------------------------

def pxb(index: int, slot: int, busnr: int, node: int | None = 0) -> str:
    n = f"<node>{node}</node>" if node is not None else ""
    return (f"    <controller type='pci' index='{index}' model='pcie-expander-bus'><model name='pxb-pcie'/>"
            f"<target busNr='{busnr}'>{n}</target>{addr(0, slot)}</controller>")


def rp(index: int, bus: int, slot: int, function: int = 0) -> str:
    return (f"    <controller type='pci' index='{index}' model='pcie-root-port'><model name='pcie-root-port'/>"
            f"<target chassis='{index}' port='0x{slot * 8 + function:x}'/>{addr(bus, slot, function)}</controller>")


CELLS = "<cpu><numa><cell id='0' cpus='0' memory='128' unit='MiB'/><cell id='1' cpus='1' memory='128' " \
        "unit='MiB'/></numa></cpu>"


def q35_numa(devices: str) -> str:
    return domain("pc-q35-7.2", "x86_64", f"{Q35_ROOT}\n{Q35_SATA}\n{devices}\n{Q35_OFF}").replace(
        "<devices>", CELLS + "\n  <devices>", 1)


def errors_of(xml: str) -> list[str]:
    layout, rules = read_layout(xml, "case.xml")
    return verify(layout, rules, strict_auto=False).errors


def test_an_expander_layout_verifies_with_capacity_per_node():
    """Root port 1 on pcie-root; pxb 2 (node 1, busNr 252) with root ports 3-5: 1 hotplug outside the
    nodes, 3 on node 1.  busNr 252: buses 252-255 hold the pxb and its 3 root ports exactly."""
    layout, rules = read_layout(q35_numa(f"{root_ports(1)}\n{pxb(2, 2, 252, 1)}\n{rp(3, 2, 0)}\n{rp(4, 2, 1)}\n"
                                         f"{rp(5, 2, 2)}"), "a.xml")
    report = verify(layout, rules, strict_auto=False)
    assert report.errors == []
    assert report.capacity[PCIE] == 1 and report.node_capacity == {1: {PCIE: 3, PCI: 0, HOSTDEV: 3}}
    assert report.budgets["busNr range of controller 2 (pcie-expander-bus)"].used == 4
    assert report.fits({(PCIE, 1): 3, PCIE: 1}) and not report.fits({(PCIE, 1): 4})
    assert not report.fits({PCIE: 2})  # the node's ports are not for devices without a node


@pytest.mark.parametrize(("devices", "words"), [
    (f"{pxb(1, 2, 254)}\n{rp(2, 1, 0)}\n{rp(3, 1, 1)}", "need 3 bus numbers, but its range is 254-255"),
    (f"{root_ports(3)}\n{pxb(4, 2, 3)}\n{rp(5, 4, 0)}", "need 4 bus numbers, but its range is 0-2"),
    (f"{pxb(1, 2, 250)}\n{pxb(2, 3, 250, 1)}", "both start at bus number 250"),
    (f"{pxb(1, 2, 255)}", "busNr 255 is out of range 1-254"),
    (f"{pxb(1, 2, 250, 2)}", "NUMA node 2 is not a cell of <cpu><numa> (2 cells)"),
    (f"{root_ports(1)}\n    <controller type='pci' index='2' model='pcie-to-pci-bridge'>"
     f"<model name='pcie-pci-bridge'/><target><node>0</node></target>{addr(1, 0)}</controller>",
     "cannot be tied to a NUMA node"),
    (f"    <controller type='pci' index='1' model='pcie-switch-downstream-port'>"
     f"<model name='xio3130-downstream'/><target chassis='1' port='0x2'/>{addr(0, 2)}</controller>",
     "cannot plug into controller 0 (pcie-root)"),
    (f"{root_ports(1)}\n    <controller type='pci' index='2' model='pcie-switch-upstream-port'>"
     f"<model name='x3130-upstream'/>{addr(0, 3)}</controller>", "cannot plug into controller 0 (pcie-root)"),
], ids=["pxb-range-too-small", "root-range-too-small", "ranges-overlap", "busnr-out-of-range", "node-not-a-cell",
        "node-on-a-bridge", "downstream-port-on-root", "upstream-port-on-root"])
def test_the_verifier_names_the_broken_rule(devices, words):
    errors = errors_of(q35_numa(devices))
    assert any(words in e for e in errors), errors


def test_a_device_outside_its_node_is_an_error_in_a_plan():
    from dataclasses import replace

    plan = plan_of(NUMA_SPEC)
    gpu = next(p for p in plan.layout.placed if p.endpoint.name == "gpu")
    nic = next(p for p in plan.layout.placed if p.endpoint.name == "nic")
    swapped = tuple(replace(p, address=nic.address) if p is gpu else replace(p, address=gpu.address) if p is nic
                    else p for p in plan.layout.placed)
    errors = verify(replace(plan.layout, placed=swapped), FAMILIES["q35"]).errors
    assert any("gpu (NUMA node 1) sits on bus 1, which belongs to no NUMA node" in e for e in errors), errors
    assert any("nic (NUMA node none)" in e and "NUMA node 1's" in e for e in errors), errors


# -- the spec ----------------------------------------------------------------------------------

def spec_errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        problem_of(text, "bad.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("text", "expected"), [
    ("""
        name: a
        machine: q35
        devices: [{model: virtio-net, numa_node: 0}]
     """, ["bad.yaml:4: devices[0].numa_node: numa_node needs the guest's NUMA nodes"]),
    ("""
        name: a
        machine: q35
        numa: {nodes: 2}
        devices:
          - {model: virtio-net, numa_node: 2}
        hotplug:
          - {class: pcie, count: 1, numa_node: 5}
     """, ["bad.yaml:6: devices[0].numa_node: numa_node 2 is not a node of this guest: 'numa' declares nodes 0-1",
           "bad.yaml:8: hotplug[0].numa_node: numa_node 5 is not a node"]),
    ("""
        name: a
        machine: q35
        numa: {nodes: 2, cells: [{cpus: "0", memory: 512}]}
     """, ["bad.yaml:4: numa: give either 'nodes: N'"]),
    ("""
        name: a
        machine: q35
        vcpus: 1
        numa: {nodes: 2}
     """, ["bad.yaml:4: vcpus: each of the 2 NUMA nodes needs a vCPU of its own; vcpus is 1"]),
    ("""
        name: a
        machine: q35
        numa:
          cells:
            - {cpus: "0-1", memory: 512}
            - {cpus: "1-x", memory: 512}
     """, ["bad.yaml:7: numa.cells[1].cpus: '1-x' is not a list of vCPU ids"]),
    ("""
        name: a
        machine: q35
        numa:
          cells:
            - {cpus: "0-1", memory: 512}
            - {cpus: "1-2", memory: 512}
     """, ["bad.yaml:7: numa.cells[1].cpus: vCPU 1 is already in cells[0]"]),
    ("""
        name: a
        machine: q35
        vcpus: 4
        numa:
          cells:
            - {cpus: "0", memory: 512}
            - {cpus: "2", memory: 512}
     """, ["bad.yaml:6: numa.cells: vCPUs 1,3 belong to no cell"]),
    ("""
        name: a
        machine: q35
        vcpus: 2
        numa:
          cells:
            - {cpus: "0", memory: 512}
            - {cpus: "2", memory: 512}
     """, ["bad.yaml:8: numa.cells[1].cpus: vCPU 2 is not a vCPU of this guest (vcpus: 2, ids 0-1)"]),
    ("""
        name: a
        machine: q35
        memory: 1024
        numa: {cells: [{cpus: "0", memory: 512}, {cpus: "1", memory: 1024}]}
     """, ["bad.yaml:4: memory: memory is 1024 MiB but the NUMA cells hold 1536"]),
    ("""
        name: a
        machine: pseries
        numa: {cells: [{cpus: "0", memory: 300}]}
     """, ["bad.yaml:4: numa.cells[0].memory: pseries NUMA cells are multiples of 256 MiB; 300 is not"]),
    ("""
        name: a
        machine: q35
        numa: {nodes: 2}
        devices: [{model: e1000, address: "0000:00:05.0", numa_node: 1}]
     """, ["bad.yaml:5: devices[0].numa_node: a pinned device sits on the root bus"]),
    ("""
        name: a
        machine: q35
        numa: {nodes: 2, sockets: 2}
     """, ["bad.yaml:4: numa.sockets: unknown field; allowed: nodes, cells"]),
], ids=["numa-node-without-numa", "node-out-of-range", "nodes-and-cells", "fewer-vcpus-than-nodes", "bad-cpuset",
        "cells-overlap", "vcpus-in-no-cell", "cell-cpu-past-vcpus", "memory-disagrees", "pseries-alignment",
        "pinned-device-on-a-node", "unknown-field"])
def test_numa_spec_mistakes_are_named_with_their_line(text, expected):
    problems = spec_errors(text)
    for want in expected:
        assert any(p.startswith(want[:want.index(": ") + 2]) and want.split(": ", 2)[-1] in p for p in problems), \
            (want, problems)
    assert len(problems) == len(expected), problems


def test_numa_defaults_split_vcpus_and_memory():
    """nodes: 3 with 8 vCPUs and 1000 MiB: vCPU runs 0-1, 2-4, 5-7; 333, 333, 334 MiB.  On pseries
    the memory goes in 256 MiB steps: 1024 in 3 nodes is 256, 256, 512."""
    p = problem_of("name: a\nmachine: q35\nvcpus: 8\nmemory: 1000\nnuma: {nodes: 3}\n")
    assert [(c.cpus, c.memory_mib) for c in p.numa] == [("0-1", 333), ("2-4", 333), ("5-7", 334)]
    p = problem_of("name: a\nmachine: pseries\nnuma: {nodes: 3}\n")
    assert [(c.cpus, c.memory_mib) for c in p.numa] == [("0", 256), ("1", 256), ("2", 512)]
    assert p.vcpus == 3 and p.memory_mib == 1024
    p = problem_of("name: a\nmachine: q35\nnuma: {cells: [{cpus: '0-3', memory: 2048}, {cpus: '4-5', memory: 512}]}\n")
    assert p.vcpus == 6 and p.memory_mib == 2560


def test_extend_spec_refuses_numa():
    with pytest.raises(SpecError) as info:
        from topo_solve.spec import to_request
        from pathlib import Path

        spec, lines = parse_spec("domain: g.xml\nnuma: {nodes: 2}\nhotplug: [{class: pcie, count: 1, numa_node: 0}]\n",
                                 "bad.yaml")
        to_request(spec, lines, "bad.yaml", Path("."))
    text = "\n".join(str(p) for p in info.value.problems)
    assert "bad.yaml:2: numa: 'numa' describes a new guest" in text
    assert "bad.yaml:3: hotplug[0].numa_node: extending a guest does not place headroom on NUMA nodes" in text


# -- extending a guest with NUMA nodes -------------------------------------------------------

def test_extend_keeps_new_controllers_off_the_nodes_and_below_the_lowest_busnr():
    """Extending a planned NUMA guest: the free root ports of node 0 are not headroom for devices
    without a node, so 5 PCIe hotplugs need 4 new root ports next to the 1 free one; and the new
    controllers must number below the lowest busNr (a plan leaves every spare number there, so
    that binds only in a guest whose expanders start lower)."""
    from topo_solve.extend import extend
    from topo_solve.model import Headroom

    plan = plan_of(NUMA_SPEC)
    layout, rules = read_layout(render_domain(plan), "numa.xml")
    ext = extend(layout, rules, (Headroom(PCIE, 5, "pcie"),))
    assert [c.model for c in ext.added] == ["pcie-root-port"] * 4 and ext.capacity[PCIE] == 5

    # A hand-written guest whose pxb starts low, at busNr 10: pcie-root's range 0-9 holds the root
    # bus, its root port and 8 more; the 9 hotplugs that fit are the free root port and 8 new ones.
    xml = q35_numa(f"{root_ports(1)}\n{pxb(2, 2, 10, 1)}\n{rp(3, 2, 0)}")
    layout, rules = read_layout(xml, "low.xml")
    assert len(extend(layout, rules, (Headroom(PCIE, 9, "pcie"),)).added) == 8
    with pytest.raises(InfeasibleError) as info:
        extend(layout, rules, (Headroom(PCIE, 10, "pcie"),))
    assert [c.what for c in info.value.causes] == ["guest bus numbers below busNr 10"]


def test_infeasible_numa_names_the_largest_per_node():
    """The largest headroom that fits is reported per NUMA node, and that much does fit."""
    from dataclasses import replace

    from topo_solve.errors import InfeasibleError
    from topo_solve.model import EndpointClass, Headroom
    from topo_solve.solve import fits
    from topo_solve.spec import Spec, to_problem

    spec = {"name": "numa-inf", "machine": "q35", "vcpus": 2, "numa": {"nodes": 2},
            "devices": [{"model": "virtio-net", "count": 2, "numa_node": 1}],
            "hotplug": [{"class": "pcie", "count": 4, "numa_node": 0}, {"class": "pcie", "count": 300, "numa_node": 1}]}
    problem = to_problem(Spec.model_validate(spec))
    with pytest.raises(InfeasibleError) as err:
        solve(problem)
    largest = err.value.largest["pcie on NUMA node 1"]
    assert 0 < largest < 300 and "fit on NUMA node 1" in err.value.render()
    keep = tuple(h for h in problem.headroom if h.node != 1)
    assert fits(replace(problem, headroom=keep + (Headroom(EndpointClass.PCIE, largest, "pcie", node=1),)))
    assert not fits(replace(problem, headroom=keep + (Headroom(EndpointClass.PCIE, largest + 1, "pcie", node=1),)))


def test_audit_reports_capacity_per_node(tmp_path):
    import json
    import subprocess
    import sys

    from topo_solve.domain.write import render_domain
    from topo_solve.spec import Spec, to_problem

    spec = {"name": "numa-ok", "machine": "q35", "vcpus": 2, "numa": {"nodes": 2},
            "hotplug": [{"class": "pcie", "count": 4, "numa_node": 0}, {"class": "pcie", "count": 3, "numa_node": 1},
                        {"class": "pcie", "count": 2}]}
    plan = solve(to_problem(Spec.model_validate(spec)))
    path = tmp_path / "g.xml"
    path.write_text(render_domain(plan))
    r = subprocess.run([sys.executable, "-m", "topo_solve", "audit", "--emit", "json", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)["nodes"]
    assert {int(n): v["capacity"]["pcie"] for n, v in nodes.items()} == {
        n: cap[EndpointClass.PCIE] for n, cap in plan.node_capacity.items()}
