"""Cross-check: topo-solve's model of libvirt's auto-placement against libvirt itself.

Give libvirt a spec's devices with no addresses and no PCI controllers, let it
place them at define time, and compare with the planner:

* libvirt adds controllers for the boot devices plus its own headroom rule: one
  spare root port on a new PCIe guest that needed any (qemuDomainAssignPCIAddresses),
  or one free slot kept on pci-root machines.  That is what topo-solve plans for
  the same devices with a headroom of one device of the class libvirt reserves
  for, so the controller counts by model must agree;
* every device must land behind a controller of the same model in both.

Both judges: auto-placement is the rule the planner models, it is what a newer
libvirt might change, and a define costs a tenth of a second.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from lxml import etree

from topo_solve.domain.write import render_domain
from topo_solve.model import EndpointClass, Headroom
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from tests.libvirt_fixtures import BOTH

pytestmark = [pytest.mark.libvirt, BOTH]

_MODELS = {
    "q35": ["virtio-net", "virtio-blk", "e1000e", "virtio-rng", "e1000", "virtio-net-transitional"],
    "virt": ["virtio-net", "virtio-blk", "virtio-rng", "virtio-net-transitional", "pci-serial"],
    "pc": ["virtio-net", "virtio-blk", "e1000", "rtl8139"],
    "pseries": ["virtio-net", "virtio-blk", "virtio-net-transitional"],
}
# The headroom libvirt keeps by itself (libvirt-pci-rules.md section 8.5).
_LIBVIRT_SPARE = {"q35": EndpointClass.PCIE, "virt": EndpointClass.PCIE,
                  "pc": EndpointClass.PCI, "pseries": EndpointClass.PCI}


def _spec(family: str, seed: int, big: bool) -> str:
    rnd = random.Random(f"placement-{family}-{seed}")
    lines = [f"name: auto-{family}-{seed}", f"machine: {family}"]
    if family == "virt":
        lines.append("arch: aarch64")
    lines.append("devices:")
    for i in range(rnd.randint(1, 4)):
        count = rnd.randint(20, 40) if big and i == 0 else rnd.randint(1, 4)
        lines.append(f"  - {{name: d{i}, model: {rnd.choice(_MODELS[family])}, count: {count}}}")
    return "\n".join(lines) + "\n"


def _parents(root: etree._Element) -> tuple[Counter, dict[str, str]]:
    ctrl = {}
    added = Counter()
    for c in root.iter("controller"):
        if c.get("type") == "pci":
            ctrl[int(c.get("index"))] = c.get("model")
            if int(c.get("index")) > 0:
                added[c.get("model")] += 1
    where = {}
    for el in root.find("devices"):
        alias = el.find("alias")
        addr = el.find("address")
        if alias is None or addr is None or addr.get("type") != "pci" or el.tag == "controller" and \
                el.get("type") == "pci":
            continue
        where[alias.get("name")] = ctrl.get(int(addr.get("bus"), 16))
    return added, where


@pytest.mark.parametrize("family,seed,big", [(f, s, b) for f in _MODELS for s in range(2) for b in (False, True)])
def test_libvirt_auto_placement_matches_the_model(family, seed, big, virsh):
    spec, lines = parse_spec(_spec(family, seed, big))
    problem = replace(to_problem(spec, lines), virt_type="qemu")
    # libvirt's auto-placement puts no device on the root complex or in a shared slot: the model is
    # asked the same, with no device never unplugged (the planner's own freedom, not libvirt's)
    problem = replace(problem, endpoints=tuple(replace(e, root_ok=False) for e in problem.endpoints))
    plan = solve(replace(problem, headroom=(Headroom(_LIBVIRT_SPARE[family], 1, "libvirt's spare"),)))
    ours = etree.fromstring(render_domain(plan).encode())
    # the same guest as a user would write it: no PCI controllers, no addresses
    bare = etree.fromstring(render_domain(plan).encode())
    devices = bare.find("devices")
    for c in list(devices.iter("controller")):
        if c.get("type") == "pci":
            devices.remove(c)
    for a in list(bare.iter("address")):
        if a.getparent().tag != "source":
            a.getparent().remove(a)
    for src in bare.iter("source"):
        if src.get("file"):
            src.set("file", "/tmp/topo-solve-placeholder.img")  # define does not open it
    name = virsh.define(etree.tostring(bare, encoding="unicode"))
    try:
        theirs = etree.fromstring(virsh.dumpxml(name, inactive=True).encode())
    finally:
        virsh.undefine(name)
    our_added, our_where = _parents(ours)
    their_added, their_where = _parents(theirs)
    assert their_added == our_added, f"libvirt added {dict(their_added)}, the model says {dict(our_added)}"
    assert their_where == our_where
