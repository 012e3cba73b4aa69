"""audit and extend on guests libvirt itself laid out, in a real libvirt + QEMU (TCG).

For each machine family a plain guest XML without addresses (as a user would
write it) is defined, and ``virsh dumpxml`` gives the guest as libvirt laid it
out.  Then:

* ``topo-solve audit`` of that dump must equal the hotplug count measured by
  hotplugging each class until libvirt refuses;
* ``topo-solve extend`` of the dump to a larger request must be defined
  unchanged (no controller added, no address moved) and must hotplug exactly
  the capacity it reports, which covers the request.

Both judges: what libvirt writes into its own dump differs by version (11.3
resolves the machine to ``*-10.0`` and adds an iTCO watchdog on q35), and
audit must read either.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from topo_solve.domain.read import read_layout
from topo_solve.model import EndpointClass
from topo_solve.verify import verify

from tests.libvirt_fixtures import BOTH

pytestmark = [pytest.mark.libvirt, BOTH]

ROOT = Path(__file__).resolve().parent.parent

_NIC = "<interface type='user'><model type='{m}'/></interface>"
_RNG = "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"

# family -> (os/type line, devices, extend request, classes to measure)
GUESTS = {
    "q35": ("<type arch='x86_64' machine='q35'>hvm</type>",
            [_NIC.format(m="virtio"), _NIC.format(m="virtio"), _NIC.format(m="e1000"), _RNG],
            ["virtio-net=5", "e1000=3"], ["pcie", "pci"]),
    "pc": ("<type arch='x86_64' machine='pc'>hvm</type>",
           [_NIC.format(m="virtio"), _NIC.format(m="e1000"), _RNG],
           ["e1000=34"], ["pci"]),
    "pseries": ("<type arch='ppc64' machine='pseries'>hvm</type>",
                [_NIC.format(m="virtio"), _RNG],
                ["virtio-net=33"], ["pci"]),
    "virt": ("<type arch='aarch64' machine='virt'>hvm</type>",
             [_NIC.format(m="virtio"), _NIC.format(m="virtio"), _RNG],
             ["virtio-net=4", "virtio-net-transitional=2"], ["pcie", "pci"]),
}


def _plain(family: str, name: str) -> str:
    os_type, devices, _, _ = GUESTS[family]
    features = "<features><acpi/></features>" if family in ("q35", "pc") else ""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
            f"<os>{os_type}</os>{features}<devices>{''.join(devices)}</devices></domain>")


def _dump(virsh, family: str) -> str:
    """Define the plain guest, return libvirt's layout of it, undefine it."""
    name = f"topo-solve-test-{family}-{uuid.uuid4().hex[:6]}"
    virsh.define(_plain(family, name))
    try:
        return virsh.dumpxml(name, inactive=True)
    finally:
        virsh.undefine(name)


def _capacity(text: str) -> dict[str, int]:
    layout, rules = read_layout(text)
    return {str(c): n for c, n in verify(layout, rules, strict_auto=False).capacity.items()}


@pytest.mark.parametrize("family", list(GUESTS))
def test_audit_and_extend_libvirts_own_layout(family, virsh, tmp_path):
    from topo_solve.hypervisor import measure

    dump = _dump(virsh, family)
    classes = GUESTS[family][3]
    promised = _capacity(dump)
    # the audit command says the same as the library
    path = tmp_path / "dump.xml"
    path.write_text(dump)
    r = subprocess.run([sys.executable, "-m", "topo_solve", "audit", str(path)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for c in classes:
        assert f"{c} {promised[c]}" in r.stdout

    m = measure(dump, classes, virsh=virsh, max_per_class=max(promised[c] for c in classes) + 2, deadline_s=300)
    assert not m.errors, m.errors
    for c in classes:
        assert m.hotplugged[c] == promised[c], (family, c, m.hotplugged, promised, m.refusals)

    # extend, then prove the extended guest
    r = subprocess.run([sys.executable, "-m", "topo_solve", "extend", str(path), "--emit", "json", "-q"]
                       + [a for h in GUESTS[family][2] for a in ("--hotplug", h)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "topo_solve", "extend", str(path), "-q", "-o",
                        str(tmp_path / "more.xml")] + [a for h in GUESTS[family][2] for a in ("--hotplug", h)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    extended = (tmp_path / "more.xml").read_text()
    after = _capacity(extended)
    assert any(after[c] > promised[c] for c in classes), "the request should need more controllers"
    m = measure(extended, classes, virsh=virsh, max_per_class=max(after[c] for c in classes) + 2, deadline_s=400)
    assert not m.errors, m.errors
    assert m.added_controllers == [] and m.moved == [], (m.added_controllers, m.moved)
    for c in classes:
        assert m.hotplugged[c] == after[c], (family, c, m.hotplugged, after, m.refusals)
    # what was asked is covered
    layout, rules = read_layout(extended)
    asked = {EndpointClass.PCIE: 0, EndpointClass.PCI: 0, EndpointClass.HOSTDEV: 0}
    from topo_solve.spec import parse_hotplug_option

    for h in GUESTS[family][2]:
        e = parse_hotplug_option(h)
        asked[e.cls] += e.count
    assert verify(layout, rules, strict_auto=False).fits(asked)


EXTENDS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "domain:" in p.read_text())


@pytest.mark.parametrize("spec", EXTENDS, ids=lambda p: p.stem)
def test_extension_examples_in_real_libvirt(spec, virsh):
    """Each extension example in specs/: the extended guest defines unchanged and hotplugs
    exactly what audit says, which covers the request."""
    from topo_solve.hypervisor import measure

    r = subprocess.run([sys.executable, "-m", "topo_solve", str(spec), "-q"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    extended = r.stdout.replace("<domain type='kvm'>", "<domain type='qemu'>", 1)  # TCG: no KVM needed
    promised = _capacity(extended)
    classes = ["pcie", "pci"]
    m = measure(extended, classes, virsh=virsh, max_per_class=max(promised[c] for c in classes) + 2,
                deadline_s=400)
    assert not m.errors, m.errors
    assert m.added_controllers == [] and m.moved == [], (m.added_controllers, m.moved)
    for c in classes:
        assert m.hotplugged[c] == promised[c], (c, m.hotplugged, promised, m.refusals)
