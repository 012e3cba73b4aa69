"""The judges themselves, and where their versions differ, measured on both.

* Each judge reports its versions (``virsh version --daemon``), and its QEMU resolves the
  unversioned machine types to its own version's (pc-q35-X.Y for QEMU X.Y).
* One case per row of tests/version_facts.py (igb, virtio-serial hotplug, the iTCO watchdog,
  virtio-sound, NVMe disks): what the judge must do follows from the row's version range and the
  judge's versions as read from it, never from the judge's name.  A judge whose version lies
  where the row knows nothing skips that case with the reason.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from tests.libvirt_fixtures import BOTH, hv
from tests.test_conformance import _prepare
from tests.version_facts import FACTS
from topo_solve.domain.read import read_layout
from topo_solve.domain.write import render_domain
from topo_solve.model import EndpointClass
from topo_solve.solve import solve
from topo_solve.spec import load_spec, parse_spec, to_problem
from topo_solve.verify import verify

pytestmark = [pytest.mark.libvirt, BOTH]

SPECS = Path(__file__).resolve().parent.parent / "specs"
NO_SLOTS = "No more available PCI slots"
OFF = "<controller type='usb' model='none'/><memballoon model='none'/>"
ROOT = "<controller type='pci' index='0' model='pcie-root'/>"
IGB_NIC = "<interface type='user'><model type='igb'/></interface>"


def _q35(devices: str) -> str:
    return ("<domain type='qemu'><name>x</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>"
            f"<devices>{devices}</devices></domain>")


def _root_ports(n: int) -> str:
    return "".join(f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, n + 1))


def _plan(text: str):
    spec, lines = parse_spec(text)
    plan = solve(to_problem(spec, lines))
    return plan, render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu")))


@contextmanager
def _guest(virsh, xml: str):
    """Define ``xml`` under a throw-away name; always undefine it (and remove its log) again."""
    name = f"{hv.CHECK_PREFIX}{uuid.uuid4().hex[:8]}"
    _, text = hv._rename(xml, name)
    try:
        yield name, text
    finally:
        problem = hv._cleanup(virsh, name)
        hv._remove_logs(name, virsh.root)
        if problem:
            raise RuntimeError(problem)


def _hotplug_until_refused(virsh, name: str, device_xml: str, limit: int) -> tuple[int, str | None]:
    count = 0
    while count <= limit:
        try:
            virsh.attach_live(name, device_xml)
        except hv.VirshError as exc:
            return count, exc.message
        count += 1
    return count, None


def _bus_models(root: ET.Element) -> dict[int, str]:
    return {int(c.get("index")): c.get("model") for c in root.iter("controller") if c.get("type") == "pci"}


def _pci_bus(el: ET.Element) -> int | None:
    a = el.find("address")
    return int(a.get("bus"), 0) if a is not None and a.get("type") == "pci" else None


# -- the judges' own versions -------------------------------------------------------------------

def test_judge_reports_its_versions_and_machine_types(judge, virsh):
    v = judge.versions
    assert re.fullmatch(r"libvirt \d+\.\d+ \+ QEMU \d+\.\d+", judge.label), judge.label
    assert v == virsh.versions()
    # the client is the host's virsh, whichever daemon it talks to
    assert v.client == hv.Virsh().versions().client
    # QEMU X.Y's newest machine types are named X.Y: the alias resolves to the QEMU that answered
    qv = f"{v.qemu[0]}.{v.qemu[1]}"
    aliases = virsh.machine_aliases()
    assert aliases[("x86_64", "q35")] == f"pc-q35-{qv}"
    assert aliases[("x86_64", "pc")] == f"pc-i440fx-{qv}"
    assert aliases[("ppc64", "pseries")] == f"pseries-{qv}"
    assert aliases[("aarch64", "virt")] == f"virt-{qv}"


# -- the version facts: one case per row of tests/version_facts.py ------------------------------

def _case_igb(virsh, files, holds: bool) -> None:
    plan, xml = _plan("name: igb\nmachine: q35\ndefaults: {usb: false, memballoon: false}\n"
                      "devices:\n  - {name: nic, model: igb}\nhotplug:\n  - {model: igb, count: 2}\n")
    promised = plan.capacity[EndpointClass.PCIE]
    assert promised >= 2
    with _guest(virsh, xml) as (name, text):
        virsh.define(text)  # libvirt defines it whatever the QEMU: the model is passed through
        stored = ET.fromstring(virsh.dumpxml(name, inactive=True))
        assert hv._added_pci_controllers(ET.fromstring(text), stored) == []
        assert hv._moved_devices(ET.fromstring(text), stored) == []
        if holds:
            virsh.start(name)
            n, refusal = _hotplug_until_refused(virsh, name, IGB_NIC, promised + 2)
            assert n == promised, (n, refusal)
            assert refusal is not None and NO_SLOTS in refusal, refusal
        else:
            with pytest.raises(hv.VirshError) as info:
                virsh.start(name)
            assert "'igb' is not a valid device model name" in info.value.message
    if not holds:  # and a running guest without igb refuses it live
        with _guest(virsh, _q35(OFF + ROOT + _root_ports(2))) as (name, text):
            virsh.define(text)
            virsh.start(name)
            with pytest.raises(hv.VirshError) as info:
                virsh.attach_live(name, IGB_NIC)
            assert "'igb' is not a valid device model name" in info.value.message


def _case_virtio_serial_hotplug(virsh, files, holds: bool) -> None:
    with _guest(virsh, _q35(OFF + ROOT + _root_ports(2))) as (name, text):
        virsh.define(text)
        virsh.start(name)
        if holds:
            virsh.attach_live(name, "<controller type='virtio-serial'/>")
            live = ET.fromstring(virsh.dumpxml(name))
            vs = [c for c in live.iter("controller") if c.get("type") == "virtio-serial"]
            assert len(vs) == 1
            bus = _pci_bus(vs[0])
            assert bus is not None and _bus_models(live).get(bus) == "pcie-root-port", ET.tostring(vs[0])
        else:
            with pytest.raises(hv.VirshError) as info:
                virsh.attach_live(name, "<controller type='virtio-serial'/>")
            assert "'virtio-serial' controller cannot be hot plugged" in info.value.message


def _case_itco_watchdog(virsh, files, holds: bool) -> None:
    for spec, q35 in ((SPECS / "q35-web.yaml", True), (SPECS / "pc-legacy.yaml", False)):
        plan = solve(load_spec(spec))
        xml = _prepare(render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu"))), files,
                       swap_hostdevs=False)
        with _guest(virsh, xml) as (name, text):
            virsh.define(text)
            dump = virsh.dumpxml(name, inactive=True)
        ours, theirs = ET.fromstring(text), ET.fromstring(dump)
        watchdogs = theirs.find("devices").findall("watchdog")
        if holds and q35:
            assert [w.get("model") for w in watchdogs] == ["itco"], dump
            assert watchdogs[0].find("address") is None, "the iTCO watchdog takes no PCI slot"
        else:
            assert watchdogs == [], (spec.name, dump)
        # the define-diff: not an added controller, not a moved address; named as an added device,
        # like the PS/2 inputs and the audio backend both versions add, none with a PCI address
        assert hv._added_pci_controllers(ours, theirs) == [], spec.name
        assert hv._moved_devices(ours, theirs) == [], spec.name
        added = hv._added_devices(ours, theirs)
        assert all(a.endswith("(no PCI address)") for a in added), added
        expected = ["watchdog model=itco (no PCI address)"] if holds and q35 else []
        assert [a for a in added if a.startswith("watchdog")] == expected, (spec.name, added)
        # and audit reads libvirt's own dump to the plan's capacity
        layout, rules = read_layout(dump)
        assert verify(layout, rules, strict_auto=False).capacity == plan.capacity, spec.name


def _case_virtio_sound(virsh, files, holds: bool) -> None:
    with _guest(virsh, _q35(OFF + "<sound model='virtio'/>")) as (name, text):
        if not holds:
            with pytest.raises(hv.VirshError) as info:
                virsh.define(text)
            assert "Invalid value for attribute 'model' in element 'sound': 'virtio'" in info.value.message
            return
        virsh.define(text)
        stored = ET.fromstring(virsh.dumpxml(name, inactive=True))
        sound = stored.find("devices/sound")
        assert sound is not None and sound.get("model") == "virtio"
        bus = _pci_bus(sound)
        assert bus is not None and _bus_models(stored).get(bus) == "pcie-root-port", ET.tostring(sound)
        virsh.start(name)


def _case_nvme_disk(virsh, files, holds: bool) -> None:
    img, seen_as = files.path("nvme.img")
    img.write_bytes(b"\0" * 4096)
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{seen_as}'/>"
            "<target dev='nvme0n1' bus='nvme'/></disk>")
    with _guest(virsh, _q35(OFF + disk)) as (name, text):
        if not holds:
            with pytest.raises(hv.VirshError) as info:
                virsh.define(text)
            assert "Invalid value for attribute 'bus' in element 'target': 'nvme'" in info.value.message
            return
        virsh.define(text)
        virsh.start(name)


CASES = {
    "igb": _case_igb,
    "virtio-serial-hotplug": _case_virtio_serial_hotplug,
    "itco-watchdog": _case_itco_watchdog,
    "virtio-sound": _case_virtio_sound,
    "nvme-disk": _case_nvme_disk,
}


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_version_fact(fact, judge, virsh, daemon_files):
    row = FACTS[fact]
    holds = row.holds(judge.versions)
    if holds is None:
        pytest.skip(f"{judge.label}: {row.what}: the table knows only {row.requirement()}")
    CASES[fact](virsh, daemon_files, holds)


def test_every_fact_has_a_case_and_a_source():
    assert set(CASES) == set(FACTS)
    for name, row in FACTS.items():
        assert row.needs and row.source.strip(), name
        for b in row.needs:
            assert b.component in ("libvirt", "qemu"), name
            assert b.since is not None or (b.without is not None and b.with_ is not None), name
