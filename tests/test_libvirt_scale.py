"""Switches, expander buses and NUMA nodes, proven in a real libvirt + QEMU (TCG).

* a switch layout on q35 and on virt (most root slots pinned, so a switch is
  needed for a few ports): defined unchanged, then every class hotplugged until
  libvirt refuses, exactly the planned capacity;
* q35 at the bus limit (255 controllers, 256 bus numbers): defined unchanged,
  started, and hotplugged to refusal;
* expander layouts with NUMA nodes (q35, pseries): defined unchanged (libvirt
  checks every <node> against the cells), then hotplugged to refusal with
  libvirt's own auto-placement; each hotplugged device is traced in the live XML
  to the node above its bus, and the count per node must be the planned capacity
  of that node (the positions outside every node first: they have the lower
  indexes libvirt's first-fit tries first);
* pc with a NUMA node: libvirt auto-places on the pci-expander-bus's free slot,
  which QEMU 7.2 refuses, so the node's headroom is hotplugged at explicit
  addresses on the pci-bridge behind it, as the plan's warning says.

Hostdevs are swapped for emulated endpoints at the same address to start the
guest (test_conformance._prepare), which keeps the topology.
"""

from __future__ import annotations

import textwrap
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from topo_solve.domain.write import render_domain
from topo_solve.model import EndpointClass
from topo_solve.rules import rules_for
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from topo_solve.verify import verify

from .libvirt_fixtures import hv
from .test_conformance import REFUSAL, _prepare
from .test_scale import SWITCH_SPEC

pytestmark = pytest.mark.libvirt


def plan_of(text: str, target):
    """The plan of a spec for ``target`` (the judge's versions: ``judge.target``), as TCG."""
    spec, lines = parse_spec(textwrap.dedent(text), "case.yaml")
    plan = solve(to_problem(spec, lines, "case.yaml", target=target))
    return replace(plan, problem=replace(plan.problem, virt_type="qemu"))


def _define_unchanged(plan, virsh, files) -> None:
    m = hv.measure(_prepare(render_domain(plan), files, swap_hostdevs=False), [], virsh=virsh, max_per_class=0)
    assert not m.errors, m.errors
    assert m.added_controllers == [], f"libvirt added controllers: {m.added_controllers}"
    assert m.moved == [], f"libvirt moved or addressed devices: {m.moved}"


def _to_refusal(plan, virsh, files, classes=("pcie", "pci"), deadline_s: float = 300) -> None:
    promised = {str(c): n for c, n in plan.capacity.items()}
    m = hv.measure(_prepare(render_domain(plan), files, swap_hostdevs=True), list(classes), virsh=virsh,
                   max_per_class=max(promised[c] for c in classes) + 2, deadline_s=deadline_s)
    assert not m.errors, m.errors
    for c in classes:
        assert m.hotplugged.get(c) == promised[c], (c, promised[c], m.hotplugged.get(c), m.refusals.get(c))
        assert REFUSAL in m.refusals.get(c, ""), m.refusals.get(c)


# -- switches -----------------------------------------------------------------------------

def test_switch_layout_defines_unchanged_and_hotplugs_its_capacity(judge, virsh, daemon_files):
    """28 pinned devices leave 2 root slots (16 root ports); 20 PCIe + 3 PCI hotplugs need a switch
    with 6 downstream ports: libvirt takes exactly 20 PCIe and 31 PCI hotplugs, then refuses."""
    plan = plan_of(SWITCH_SPEC, judge.target)
    assert plan.added["pcie-switch-upstream-port"] == 1
    _define_unchanged(plan, virsh, daemon_files)
    _to_refusal(plan, virsh, daemon_files)


def test_virt_switch_layout_hotplugs_its_capacity(judge, virsh, daemon_files):
    """virt has no chipset: pinning 29 of pcie-root's 31 slots leaves 16 root ports; 18 PCIe
    hotplugs need a switch (17 + 1 ports past them)."""
    pins = "".join(f"  - {{name: pin{s:02x}, model: virtio-rng, address: \"0000:00:{s:02x}.0\", hotunplug: false}}\n"
                   for s in range(3, 0x20))
    plan = plan_of(f"name: vsw\nmachine: virt\ndevices:\n{pins}hotplug:\n  - {{class: pcie, count: 18}}\n",
                   judge.target)
    assert plan.added == {"pcie-root-port": 16, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 3}
    _define_unchanged(plan, virsh, daemon_files)
    _to_refusal(plan, virsh, daemon_files, classes=("pcie",))


def test_q35_at_the_bus_limit(judge, virsh, daemon_files):
    """253 PCIe hotplugs: usb and balloon as two functions of a root-port slot, 238 root ports, a
    switch of 16 downstream ports: 255 controllers, 256 bus numbers.  libvirt defines it unchanged,
    QEMU starts it, and it takes 253 hotplugs before libvirt refuses."""
    plan = plan_of("name: limit\nmachine: q35\nhotplug: [{class: pcie, count: 253}]\n", judge.target)
    assert max(c.index for c in plan.layout.controllers) == 255 and plan.budgets["bus numbers"] == (256, 256)
    _define_unchanged(plan, virsh, daemon_files)
    _to_refusal(plan, virsh, daemon_files, classes=("pcie",), deadline_s=600)


# -- NUMA ------------------------------------------------------------------------------------

def _per_node(plan, virsh, files, cls: str) -> tuple[dict, str]:
    """Hotplug ``cls`` with libvirt's auto-placement until refused; count the hotplugged devices by
    the NUMA node above their bus (from the plan's own layout, checked by the verifier)."""
    report = verify(plan.layout, rules_for(plan.layout.family, plan.problem.target))
    xml = _prepare(render_domain(plan), files, swap_hostdevs=True)
    name = f"{hv.CHECK_PREFIX}{uuid.uuid4().hex[:8]}"
    _, text = hv._rename(xml, name)
    per: dict = {}
    refusal = ""
    try:
        virsh.define(text)
        virsh.start(name)
        for _ in range(300):
            try:
                virsh.attach_live(name, hv.probe_device_xml(cls))
            except hv.VirshError as exc:
                refusal = exc.message
                break
        live = ET.fromstring(virsh.dumpxml(name))
        for rng in live.find("devices").findall("rng"):
            alias = rng.find("alias")
            if alias is not None and alias.get("name", "").startswith("ua-"):
                continue  # a boot device (or a swapped hostdev), not a probe
            bus = int(rng.find("address").get("bus"), 16)
            node = report.node_of.get(bus)
            per[node] = per.get(node, 0) + 1
    finally:
        problem = hv._cleanup(virsh, name)
        hv._remove_logs(name, virsh.root)
        assert problem is None, problem
    return per, refusal


def _expected(plan, cls: EndpointClass) -> dict:
    out = {None: plan.capacity[cls]} if plan.capacity[cls] else {}
    out.update({n: c[cls] for n, c in plan.node_capacity.items() if c[cls]})
    return out


NUMA_Q35 = """
    name: numa-q35
    machine: q35
    vcpus: 4
    memory: 2048
    numa: {nodes: 3}
    devices:
      - {name: gpu0, model: hostdev, numa_node: 0}
      - {name: gpu1, model: hostdev, numa_node: 2}
      - {name: nic2, model: virtio-net, numa_node: 2}
      - {name: old, model: e1000, numa_node: 1}
      - {name: nic, model: virtio-net}
    hotplug:
      - {class: pcie, count: 2}
      - {class: pcie, count: 3, numa_node: 0}
      - {model: hostdev, count: 1, numa_node: 2}
      - {class: pci, count: 2, numa_node: 1}
"""


def test_q35_numa_expanders_define_unchanged_and_hotplug_per_node(judge, virsh, daemon_files):
    plan = plan_of(NUMA_Q35, judge.target)
    assert plan.added["pcie-expander-bus"] == 3
    _define_unchanged(plan, virsh, daemon_files)
    for cls in (EndpointClass.PCIE, EndpointClass.PCI):
        per, refusal = _per_node(plan, virsh, daemon_files, str(cls))
        assert per == _expected(plan, cls), (cls, per, plan.capacity, plan.node_capacity)
        assert REFUSAL in refusal, refusal


def test_pseries_numa_phbs_define_unchanged_and_hotplug_per_node(judge, virsh, daemon_files):
    """PHBs of a node: node 1's holds its NIC and its headroom, node 0's is an empty PHB for an
    assigned device to hotplug (emulated devices may use it too: libvirt puts them on any PHB of
    isolation group 0, empty ones included, in index order).  No boot hostdev here: swapping it
    for an emulated device would change its PHB's isolation group."""
    plan = plan_of("""
        name: numa-ppc
        machine: pseries
        numa: {nodes: 2}
        devices:
          - {name: nic1, model: virtio-net, numa_node: 1}
        hotplug:
          - {class: pci, count: 3, numa_node: 1}
          - {class: pci, count: 2}
          - {model: hostdev, count: 1, numa_node: 0}
    """, judge.target)
    assert [dict(c.target).get("node") for c in plan.layout.controllers] == [None, 0, 1]
    assert plan.node_capacity[0][EndpointClass.HOSTDEV] == 1
    _define_unchanged(plan, virsh, daemon_files)
    per, refusal = _per_node(plan, virsh, daemon_files, "pci")
    assert per == _expected(plan, EndpointClass.PCI), (per, plan.capacity, plan.node_capacity)
    assert REFUSAL in refusal, refusal


def test_pc_numa_node_headroom_takes_explicit_addresses(judge, virsh, daemon_files):
    """pc: libvirt auto-places after pci-root's slots on the pxb's free slots, which QEMU refuses
    (the plan warns); the node's headroom on the pci-bridge behind the pxb takes a hotplug at every
    free slot when the address is given."""
    plan = plan_of("""
        name: numa-pc
        machine: pc
        defaults: {usb: false, memballoon: false}
        numa: {nodes: 2}
        devices:
          - {name: nic1, model: virtio-net, numa_node: 1}
        hotplug:
          - {class: pci, count: 2, numa_node: 1}
    """, judge.target)
    assert plan.added == {"pci-expander-bus": 1, "pci-bridge": 1}
    assert any("explicit address" in w for w in plan.warnings)
    _define_unchanged(plan, virsh, daemon_files)
    report = verify(plan.layout, rules_for("pc", judge.target))
    node_slots = sorted(p for p in report.positions if report.node_of.get(p[0]) == 1)
    # The bridge's 31 slots less nic1's: a device that may be unplugged never sits on the pxb's own
    # slots (QEMU refuses its unplug there), so nic1 is behind the bridge too.
    bridge = next(c.index for c in plan.layout.controllers if c.model == "pci-bridge")
    assert [p.address.bus for p in plan.layout.placed if p.endpoint.name == "nic1"] == [bridge]
    assert len(node_slots) == plan.node_capacity[1][EndpointClass.PCI] == 31 - 1
    pxb = next(c.index for c in plan.layout.controllers if c.model == "pci-expander-bus")
    xml = _prepare(render_domain(plan), daemon_files, swap_hostdevs=True)
    name = f"{hv.CHECK_PREFIX}{uuid.uuid4().hex[:8]}"
    _, text = hv._rename(xml, name)
    try:
        virsh.define(text)
        virsh.start(name)
        auto = 0
        while auto < 40:
            try:
                virsh.attach_live(name, hv.probe_device_xml("pci"))
            except hv.VirshError as exc:
                assert f"Bus 'pci.{pxb}' does not support hotplugging" in exc.message, exc.message
                break
            auto += 1
        assert auto == plan.capacity[EndpointClass.PCI]
        for bus, slot in node_slots:
            virsh.attach_live(name, "<rng model='virtio-transitional'><backend model='random'>/dev/urandom"
                              f"</backend><address type='pci' domain='0x0000' bus='0x{bus:02x}' "
                              f"slot='0x{slot:02x}' function='0x0'/></rng>")
    finally:
        problem = hv._cleanup(virsh, name)
        hv._remove_logs(name, virsh.root)
        assert problem is None, problem


def test_sound_moves_off_its_preferred_slot_when_ports_need_it(judge, virsh, daemon_files):
    """Regression (found by the long property run): every root slot pinned but 00:1b.0, which
    ich9 sound prefers.  Keeping the preference leaves no slot for root ports; the plan gives the
    slot to the root ports, and the sound card, which libvirt never unplugs, takes a free function
    of it; libvirt takes it unchanged and hotplugs into the root ports as promised."""
    pins = "".join(f"  - {{name: pin{s:02x}, model: e1000, address: '0000:00:{s:02x}.0', hotunplug: false}}\n"
                   for s in range(1, 0x1F) if s != 0x1B)
    plan = plan_of("name: sound\nmachine: q35\ndevices:\n" + pins + "  - {name: snd, model: ich9-hda}\n"
                   "hotplug:\n  - {class: pcie, count: 9}\n", judge.target)
    snd = next(p for p in plan.layout.placed if p.endpoint.name == "snd")
    ports = [c for c in plan.layout.controllers if c.model == "pcie-root-port"]
    assert snd.address.bus == 0 and snd.address.slot == 0x1B and snd.address.function != 0
    assert {c.address.slot for c in ports} == {0x1B} and plan.capacity[EndpointClass.PCIE] >= 9
    assert any("snd not at the chipset's preferred address" in w for w in plan.warnings)
    _define_unchanged(plan, virsh, daemon_files)
    _to_refusal(plan, virsh, daemon_files, classes=("pcie",))


def test_pc_nested_bridge_keeps_the_balloons_root_slot(judge, virsh, daemon_files):
    """900 e1000 on pc: 30 pci-bridges, the 30th nested in the first so that the balloon keeps a root
    slot (the placer once hung every bridge on the root and had none left: exit 3).  libvirt defines
    the layout unchanged, and the 29 free bridge slots hotplug."""
    plan = plan_of("name: ts-pc-900\nmachine: pc\ndevices:\n  - {name: nic, model: e1000, count: 900}\n",
                   judge.target)
    assert plan.added == {"pci-bridge": 30}
    assert any(c.address is not None and c.address.bus != 0 for c in plan.layout.controllers)
    _define_unchanged(plan, virsh, daemon_files)
    _to_refusal(plan, virsh, daemon_files, classes=("pci",))
