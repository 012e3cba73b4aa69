"""The judges themselves, and where their versions differ, measured on both.

* Each judge reports its versions (``virsh version --daemon``), and its QEMU resolves the
  unversioned machine types to its own version's (pc-q35-X.Y for QEMU X.Y).
* One case per version-dependent row of the rule tables (``topo_solve.rules.version_facts``: a
  device model that exists from some version on, a hotplug libvirt learnt, a device libvirt adds
  at define, a default it fills in).  What a judge must do follows from the row's range and the
  judge's versions as read from it (``judge.target``), never from the judge's name; a judge
  where the range knows nothing skips the case with that reason, and a row that cannot be
  measured here says why (NOT_MEASURED).  A new versioned row without a case fails
  ``test_every_version_fact_has_a_case``.
* Where a row says the target cannot have something, topo-solve refuses to plan it for that
  judge's versions (one clear error, exit 2 at the command line), and the judge shows why:
  libvirt or QEMU refuses it, or drops it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from tests.libvirt_fixtures import BOTH, hv
from tests.test_conformance import _prepare
from topo_solve.domain.read import read_domain, read_layout
from topo_solve.domain.write import render_domain
from topo_solve.errors import SpecError
from topo_solve.model import EndpointClass
from topo_solve.rules import TABLES, rules_for, version_facts
from topo_solve.solve import solve
from topo_solve.spec import load_spec, parse_spec, to_problem
from topo_solve.verify import verify

pytestmark = [pytest.mark.libvirt, BOTH]

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
NO_SLOTS = "No more available PCI slots"
OFF = "<controller type='usb' model='none'/><memballoon model='none'/>"
IGB_NIC = "<interface type='user'><model type='igb'/></interface>"
FACTS = {f.key: f for f in version_facts()}

_GUEST = {  # a minimal guest of each family: arch, machine, features
    "q35": ("x86_64", "q35", "<features><acpi/></features>"),
    "pc": ("x86_64", "pc", "<features><acpi/></features>"),
    "pseries": ("ppc64le", "pseries", ""),
    "virt": ("aarch64", "virt", ""),
}


def _guest_xml(family: str, devices: str, arch: str | None = None) -> str:
    a, machine, features = _GUEST[family]
    return ("<domain type='qemu'><name>x</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
            f"<os><type arch='{arch or a}' machine='{machine}'>hvm</type></os>{features}"
            f"<devices>{devices}</devices></domain>")


def _q35(devices: str) -> str:
    return _guest_xml("q35", devices)


def _root_ports(n: int) -> str:
    return "<controller type='pci' index='0' model='pcie-root'/>" + "".join(
        f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, n + 1))


def _plan(text: str, target):
    spec, lines = parse_spec(text)
    plan = solve(to_problem(spec, lines, target=target))
    return plan, render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu")))


def _cli_plan(text: str, target_option: str, tmp: Path) -> subprocess.CompletedProcess:
    spec = tmp / f"v{uuid.uuid4().hex[:6]}.yaml"
    spec.write_text(text)
    return subprocess.run([sys.executable, "-m", "topo_solve", str(spec), "--target", target_option, "-q"],
                          capture_output=True, text=True, timeout=120)


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


def _refused(virsh, xml: str, message: str) -> None:
    with _guest(virsh, xml) as (_, text):
        with pytest.raises(hv.VirshError) as info:
            virsh.define(text)
        assert message in info.value.message, info.value.message


def _defined(virsh, xml: str) -> ET.Element:
    """Define, read back the stored XML, undefine."""
    with _guest(virsh, xml) as (name, text):
        virsh.define(text)
        return ET.fromstring(virsh.dumpxml(name, inactive=True))


# -- the judges' own versions -------------------------------------------------------------------

def test_judge_reports_its_versions_and_machine_types(judge, virsh):
    v = judge.versions
    assert re.fullmatch(r"libvirt \d+\.\d+ \+ QEMU \d+\.\d+", judge.label), judge.label
    assert v == virsh.versions()
    assert judge.target.label == judge.label  # what the tests plan for is what the judge runs
    # the client is the host's virsh, whichever daemon it talks to (`virsh --version` asks no daemon:
    # the host's own may not be running when only the other judge's tests run)
    host_virsh = subprocess.run(["virsh", "--version"], capture_output=True, text=True, check=True).stdout
    assert v.client == tuple(int(x) for x in host_virsh.strip().split("."))
    # QEMU X.Y's newest machine types are named X.Y: the alias resolves to the QEMU that answered
    qv = f"{v.qemu[0]}.{v.qemu[1]}"
    aliases = virsh.machine_aliases()
    assert aliases[("x86_64", "q35")] == f"pc-q35-{qv}"
    assert aliases[("x86_64", "pc")] == f"pc-i440fx-{qv}"
    assert aliases[("ppc64", "pseries")] == f"pseries-{qv}"
    assert aliases[("aarch64", "virt")] == f"virt-{qv}"


# -- device models that exist from some version on ----------------------------------------------

IGB_SPEC = ("name: igb\nmachine: q35\ndefaults: {usb: false, memballoon: false}\n"
            "devices:\n  - {name: nic, model: igb}\nhotplug:\n  - {model: igb, count: 2}\n")


def _device_igb(judge, virsh, files, holds: bool, tmp: Path) -> None:
    if not holds:
        # topo-solve refuses to plan it for this judge: one error with the reason, exit 2
        r = _cli_plan(IGB_SPEC, judge.target_option, tmp)
        assert r.returncode == 2, r.stderr
        assert re.search(r"\.yaml:5: devices\[0\]\.model: igb needs QEMU 8\.0 or later; the target is QEMU "
                         rf"{judge.qemu[0]}\.{judge.qemu[1]}$", r.stderr, re.M), r.stderr
        assert "hotplug[0].model: igb needs QEMU 8.0" in r.stderr, r.stderr
    # a plan for a target that has igb (this judge, or its libvirt with the QEMU the row names): libvirt
    # defines it whatever the QEMU (the model is passed through)
    first = FACTS["device igb"].versions.since[0].first
    plan, xml = _plan(IGB_SPEC, judge.target if holds else replace(judge.target, qemu=first))
    promised = plan.capacity[EndpointClass.PCIE]
    assert promised == 2
    with _guest(virsh, xml) as (name, text):
        virsh.define(text)
        stored = ET.fromstring(virsh.dumpxml(name, inactive=True))
        assert hv._added_pci_controllers(ET.fromstring(text), stored) == []
        assert hv._moved_devices(ET.fromstring(text), stored) == []
        if holds:
            virsh.start(name)
            n, refusal = _hotplug_until_refused(virsh, name, IGB_NIC, promised + 2)
            assert n == promised, (n, refusal)
            assert refusal is not None and NO_SLOTS in refusal, refusal
        else:  # ... but this QEMU cannot start it, nor take one live
            with pytest.raises(hv.VirshError) as info:
                virsh.start(name)
            assert "'igb' is not a valid device model name" in info.value.message
    if not holds:
        with _guest(virsh, _q35(OFF + _root_ports(2))) as (name, text):
            virsh.define(text)
            virsh.start(name)
            with pytest.raises(hv.VirshError) as info:
                virsh.attach_live(name, IGB_NIC)
            assert "'igb' is not a valid device model name" in info.value.message


def _device_virtio_sound(judge, virsh, files, holds: bool, tmp: Path) -> None:
    xml = _q35(OFF + "<sound model='virtio'/>")
    with pytest.raises(SpecError) if not holds else _nothing():
        read_domain(xml, "sound.xml", judge.target)  # the reader refuses it for a judge without it
    if not holds:
        _refused(virsh, xml, "Invalid value for attribute 'model' in element 'sound': 'virtio'")
        return
    planned_for(judge, virsh, xml, "sound")


def planned_for(judge, virsh, xml: str, tag: str, start: bool = True) -> None:
    """Plan a guest with the element for the judge's versions, define it: libvirt changes nothing,
    and the element sits where the plan put it; start it."""
    from topo_solve.domain.plan import plan_document

    planned = plan_document(xml, "case.xml", (), target=judge.target)
    text = planned.edit.data.decode()
    with _guest(virsh, text) as (name, renamed):
        virsh.define(renamed)
        stored = ET.fromstring(virsh.dumpxml(name, inactive=True))
        ours = ET.fromstring(renamed)
        assert hv._added_pci_controllers(ours, stored) == []
        assert hv._moved_devices(ours, stored) == []
        el = stored.find(f"devices/{tag}")
        assert el is not None and _pci_bus(el) is not None, ET.tostring(stored).decode()
        if start:
            virsh.start(name)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _device_nvme_disk(judge, virsh, files, holds: bool, tmp: Path) -> None:
    img, seen_as = files.path("nvme.img")
    img.write_bytes(b"\0" * 4096)
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{seen_as}'/>"
            "<target dev='nvme0n1' bus='nvme'/></disk>")
    with pytest.raises(SpecError) as info:
        read_domain(_q35(OFF + disk), "nvme.xml", judge.target)
    # for a judge without it, the reason; with it (11.5+, not measured here) topo-solve says it cannot plan it
    assert ("needs libvirt 11.5 or later" in str(info.value)) != holds, str(info.value)
    assert holds is False, "no judge here has libvirt 11.5: extend this case when one does"
    _refused(virsh, _q35(OFF + disk), "Invalid value for attribute 'bus' in element 'target': 'nvme'")


def _device_nvme(judge, virsh, files, holds: bool, tmp: Path) -> None:
    xml = _q35(OFF + "<controller type='nvme'/>")
    with pytest.raises(SpecError) as info:
        read_domain(xml, "nvme.xml", judge.target)
    assert ("needs libvirt 11.5 or later" in str(info.value)) != holds, str(info.value)
    assert holds is False, "no judge here has libvirt 11.5: extend this case when one does"
    _refused(virsh, xml, "Invalid value for attribute 'type' in element 'controller': 'nvme'")


def _device_itco_watchdog(judge, virsh, files, holds: bool, tmp: Path) -> None:
    xml = _q35(OFF + "<watchdog model='itco'/>")
    if not holds:
        with pytest.raises(SpecError, match="the itco watchdog needs libvirt 9.1 or later"):
            read_domain(xml, "itco.xml", judge.target)
        _refused(virsh, xml, "unknown watchdog model 'itco'")
        return
    assert read_domain(xml, "itco.xml", judge.target).added_by_libvirt == []
    stored = _defined(virsh, xml)
    (w,) = stored.findall("devices/watchdog")
    assert w.get("model") == "itco" and w.find("address") is None  # a chipset function: no PCI slot


def _device_acpi_erst(judge, virsh, files, holds: bool, tmp: Path) -> None:
    path, seen_as = files.path("erst.pstore")
    xml = _q35(OFF + f"<pstore backend='acpi-erst'><path>{seen_as}</path><size unit='KiB'>8</size></pstore>")
    if not holds:
        with pytest.raises(SpecError, match=r"acpi-erst\) device needs libvirt 10\.6 or later"):
            read_domain(xml, "erst.xml", judge.target)
        assert _defined(virsh, xml).find("devices/pstore") is None  # libvirt drops the element it does not know
        return
    planned_for(judge, virsh, xml, "pstore", start=False)


def _device_virtio_crypto(judge, virsh, files, holds: bool, tmp: Path) -> None:
    xml = _q35(OFF + "<crypto model='virtio' type='qemu'><backend model='builtin' queues='1'/></crypto>")
    if not holds:
        with pytest.raises(SpecError, match="a virtio-crypto device needs libvirt 9.1 or later"):
            read_domain(xml, "crypto.xml", judge.target)
        assert _defined(virsh, xml).find("devices/crypto") is None  # dropped without a word
        return
    planned_for(judge, virsh, xml, "crypto")


def _device_pvpanic_pci(judge, virsh, files, holds: bool, tmp: Path) -> None:
    xml = _q35(OFF + "<panic model='pvpanic'/>")
    if not holds:
        with pytest.raises(SpecError, match="a pvpanic-pci device needs libvirt 9.1 or later"):
            read_domain(xml, "panic.xml", judge.target)
        _refused(virsh, xml, "unknown panic model 'pvpanic'")
        return
    planned_for(judge, virsh, xml, "panic")
    stored = _defined(virsh, xml)
    assert _pci_bus(stored.find("devices/panic")) == 0  # integrated: on the root bus


# -- hotplug that depends on the version ---------------------------------------------------------

def _hotplug_virtio_serial(judge, virsh, files, holds: bool, tmp: Path, model: str = "virtio-serial") -> None:
    transitional = model.endswith("-transitional")
    text = ("name: vs\nmachine: q35\ndefaults: {usb: false, memballoon: false}\n"
            f"hotplug:\n  - {{model: {model}, count: 2}}\n")
    element = ("<controller type='virtio-serial' model='virtio-transitional'/>" if transitional
               else "<controller type='virtio-serial'/>")
    if not holds:
        r = _cli_plan(text, judge.target_option, tmp)
        assert r.returncode == 2, r.stderr
        assert (f"hotplug[0].model: hotplugging a {'transitional ' if transitional else ''}virtio-serial "
                "controller needs libvirt 11.3 or later") in r.stderr, r.stderr
        assert f"the target is libvirt {judge.libvirt[0]}.{judge.libvirt[1]}" in r.stderr
        # and the judge refuses it, on a guest with room for it
        with _guest(virsh, _q35(OFF + _root_ports(2))) as (name, xml):
            virsh.define(xml)
            virsh.start(name)
            with pytest.raises(hv.VirshError) as info:
                virsh.attach_live(name, element)
            assert "'virtio-serial' controller cannot be hot plugged" in info.value.message
        return
    plan, xml = _plan(text, judge.target)
    cls = EndpointClass.PCI if transitional else EndpointClass.PCIE
    promised = plan.capacity[cls]
    assert promised >= 2
    with _guest(virsh, xml) as (name, renamed):
        virsh.define(renamed)
        virsh.start(name)
        n, refusal = _hotplug_until_refused(virsh, name, element, promised + 2)
        assert n == promised, (n, refusal)
        assert refusal is not None and NO_SLOTS in refusal, refusal
        live = ET.fromstring(virsh.dumpxml(name))
        bus_model = "pcie-to-pci-bridge" if transitional else "pcie-root-port"
        for vs in (c for c in live.iter("controller") if c.get("type") == "virtio-serial"):
            assert _bus_models(live).get(_pci_bus(vs)) == bus_model, ET.tostring(vs)
        # never unplugged: libvirt refuses to detach it (the table's unplug column)
        vs = next(c for c in live.iter("controller") if c.get("type") == "virtio-serial")
        with pytest.raises(hv.VirshError) as info:
            virsh._with_file(ET.tostring(vs, encoding="unicode"), "detach-device", name, args_after=("--live",))
        assert "'virtio-serial' controller cannot be hot unplugged" in info.value.message


def _hotplug_virtio_serial_transitional(judge, virsh, files, holds: bool, tmp: Path) -> None:
    _hotplug_virtio_serial(judge, virsh, files, holds, tmp, model="virtio-serial-transitional")


# -- devices libvirt adds at define, and defaults it fills in -------------------------------------

# how each implicit device looks in libvirt's dump: (element path, attribute, value)
_SHOWN = {
    "qemu-xhci": ("devices/controller[@type='usb']", "model", "qemu-xhci"),
    "piix3-uhci": ("devices/controller[@type='usb']", "model", "piix3-uhci"),
    "itco-watchdog": ("devices/watchdog", "model", "itco"),
    "virtio-balloon": ("devices/memballoon", "model", "virtio"),
    "lsilogic": ("devices/controller[@type='scsi']", "model", "lsilogic"),
    "virtio-scsi": ("devices/controller[@type='scsi']", "model", "virtio-scsi"),
}
# what makes libvirt add a device that needs a trigger (Implicit.needs): a SCSI disk for its controller
_TRIGGER = {("disk", "target/@bus", "scsi"): "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                                             "<source file='/var/tmp/topo-solve-never-opened.img'/>"
                                             "<target dev='sda' bus='scsi'/></disk>"}
# what each default is about: the element that leaves the value out, and where libvirt writes it
_LEAVES_OUT = {
    "usb @model": ("<controller type='usb' index='0'/>", "devices/controller[@type='usb']", "model"),
    "scsi @model": ("<controller type='scsi' index='0'/>", "devices/controller[@type='scsi']", "model"),
    "panic @model": ("<panic/>", "devices/panic", "model"),
}
_NOT_PCI = {"usb": "<controller type='usb' model='none'/>", "memballoon": "<memballoon model='none'/>"}


def _arch_missing(virsh, arch: str) -> str | None:
    caps = ET.fromstring(virsh.run("capabilities"))
    if not any(a.get("name") == arch for a in caps.iter("arch")):
        return f"this judge's QEMU has no {arch} emulator"
    return None


def _implicit(fact, judge, virsh, holds: bool) -> None:
    """Define a guest without the device (and with what triggers it); libvirt adds it iff the row holds."""
    arch = fact.arches[0] if fact.arches else None
    if arch and (why := _arch_missing(virsh, arch)):
        pytest.skip(why)
    view = rules_for(fact.family, judge.target)
    row = next(i for i in TABLES[fact.family].added_at_define if i.kind == fact.name and i.arches == fact.arches)
    assert any(i.kind == row.kind and i.arches == row.arches for i in view.added_at_define) == holds
    others = "".join(x for k, x in _NOT_PCI.items() if k != row.unless)
    trigger = _TRIGGER[row.needs[0]] if row.needs else ""  # libvirt adds it for the first of its triggers
    xml = _guest_xml(fact.family, others + trigger, arch)
    # the reader predicts it too (what topo-solve writes out, or lets libvirt add)
    predicted = [d.endpoint.kind for d in read_domain(xml, "guest.xml", judge.target).devices if d.implicit]
    assert (fact.name in predicted) == holds, predicted
    path, attr, value = _SHOWN[fact.name]
    found = [el for el in _defined(virsh, xml).findall(path) if el.get(attr) == value]
    assert bool(found) == holds, (fact.key, holds, [ET.tostring(e) for e in found])


def _default(fact, judge, virsh, holds: bool) -> None:
    """Define an element that leaves the value out: libvirt fills in the view's default."""
    element, path, attr = _LEAVES_OUT[fact.name]
    view = rules_for(fact.family, judge.target)
    expected = view.element_defaults.get(fact.name)
    assert expected is not None, view.undecided.get(fact.name)
    assert (expected == fact.value) == holds
    tag = fact.name.split()[0]
    xml = _guest_xml(fact.family, "".join(x for k, x in _NOT_PCI.items() if k != tag) + element)
    if fact.name == "panic @model" and expected == "isa" and fact.family == "virt":
        # the ISA pvpanic libvirt 9.0 falls back to is not in aarch64 QEMU: it refuses the guest
        _refused(virsh, xml, "does not support the ISA panic device")
        return
    (el,) = _defined(virsh, xml).findall(path)
    assert el.get(attr) == expected, ET.tostring(el)


def _protect(fact, judge, virsh, holds: bool) -> None:
    """A port with <target hotplug='off'/> (a protected port, issue 14): libvirt keeps the attribute
    where the row holds (both judges are past libvirt 6.3 and QEMU 5.0, so no judge sees the old side)."""
    arch = _GUEST[fact.family][0]
    if why := _arch_missing(virsh, arch):
        pytest.skip(why)
    view = rules_for(fact.family, judge.target)
    assert (view.bus(fact.name).protect is not None) == holds
    upstream = "" if fact.name == "pcie-root-port" else (
        "<controller type='pci' index='2' model='pcie-switch-upstream-port'/>")
    locked = f"<controller type='pci' index='{1 if not upstream else 3}' model='{fact.name}'>" \
             "<target hotplug='off'/></controller>"
    xml = _guest_xml(fact.family, "<controller type='pci' index='0' model='pcie-root'/>"
                     + ("<controller type='pci' index='1' model='pcie-root-port'/>" if upstream else "")
                     + upstream + locked + OFF)
    found = [c for c in _defined(virsh, xml).iter("controller") if c.get("model") == fact.name
             and c.find("target") is not None and c.find("target").get("hotplug") == "off"]
    assert bool(found) == holds, fact.key


CASES = {
    "device igb": _device_igb,
    "device virtio-sound": _device_virtio_sound,
    "device nvme-disk": _device_nvme_disk,
    "device nvme": _device_nvme,
    "device itco-watchdog": _device_itco_watchdog,
    "device acpi-erst": _device_acpi_erst,
    "device virtio-crypto": _device_virtio_crypto,
    "device pvpanic-pci": _device_pvpanic_pci,
    "hotplug virtio-serial": _hotplug_virtio_serial,
    "hotplug virtio-serial-transitional": _hotplug_virtio_serial_transitional,
}
def _attribute(fact, judge, virsh, holds: bool) -> None:
    """An attribute a plan writes (rules/windows.py): the judge keeps it at define where the row holds,
    and drops it (libvirt 9.0 ignores memReserve, measured) where it does not."""
    if fact.name == "memReserve":
        model = "pcie-root-port" if fact.family == "q35" else "pci-bridge"
        root = "pcie-root" if fact.family == "q35" else "pci-root"
        target = "" if model == "pcie-root-port" else " chassisNr='1'"
        xml = _guest_xml(fact.family, f"<controller type='pci' index='0' model='{root}'/>"
                         f"<controller type='pci' index='1' model='{model}'><target{target} memReserve='65536'/>"
                         "<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></controller>"
                         + OFF)
        (t,) = _defined(virsh, xml).findall("devices/controller[@index='1']/target")
        assert (t.get("memReserve") == "65536") == holds, ET.tostring(t)
        return
    xml = _guest_xml(fact.family, "<interface type='user'><model type='virtio'/><acpi index='42'/></interface>" + OFF)
    (acpi,) = _defined(virsh, xml).findall("devices/interface/acpi") or [None]
    assert (acpi is not None and acpi.get("index") == "42") == holds


GENERIC = {"implicit": _implicit, "default": _default, "protect": _protect, "attribute": _attribute}
# rows that cannot be measured here, and why
NOT_MEASURED: dict[str, str] = {}


@pytest.mark.parametrize("key", sorted(FACTS))
def test_version_fact(key, judge, virsh, daemon_files, tmp_path):
    fact = FACTS[key]
    if key in NOT_MEASURED:
        pytest.skip(NOT_MEASURED[key])
    holds = fact.versions.holds(judge.target)
    if holds is None:
        pytest.skip(f"{judge.label}: {key}: the table knows only {fact.versions.describe()}")
    if key in CASES:
        CASES[key](judge, virsh, daemon_files, holds, tmp_path)
    else:
        GENERIC[fact.kind](fact, judge, virsh, holds)


def test_every_version_fact_has_a_case_and_a_source():
    for key, fact in FACTS.items():
        assert key in CASES or fact.kind in GENERIC or key in NOT_MEASURED, key
        assert fact.versions.sources() and all(s.strip() for s in fact.versions.sources()), key
        for b in fact.versions.since + fact.versions.until:
            assert b.component in ("libvirt", "qemu"), key
            assert b.first is not None or b.old is not None or b.new is not None, key
    for fact in FACTS.values():
        if fact.kind == "implicit":
            assert fact.name in _SHOWN, fact.key
            row = next(i for i in TABLES[fact.family].added_at_define if i.kind == fact.name)
            assert not row.needs or row.needs[0] in _TRIGGER, fact.key
        if fact.kind == "default":
            assert fact.name in _LEAVES_OUT, fact.key


# -- the iTCO watchdog: no slot, and no change the define-diff or audit counts -----------------

def test_itco_watchdog_is_no_change_to_a_plan(judge, virsh, daemon_files):
    """A q35 plan defines unchanged (no controller added, no address moved) whether or not the judge
    adds the iTCO watchdog; the define-diff names it as an added device without a PCI address, and
    audit reads libvirt's own dump to the plan's capacity."""
    holds = FACTS["implicit q35 itco-watchdog"].versions.holds(judge.target)
    for spec, q35 in ((SPECS / "q35-web.yaml", True), (SPECS / "pc-legacy.yaml", False)):
        plan = solve(load_spec(spec, judge.target))
        xml = _prepare(render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu"))), daemon_files,
                       swap_hostdevs=False)
        with _guest(virsh, xml) as (name, text):
            virsh.define(text)
            dump = virsh.dumpxml(name, inactive=True)
        ours, theirs = ET.fromstring(text), ET.fromstring(dump)
        watchdogs = theirs.find("devices").findall("watchdog")
        assert [w.get("model") for w in watchdogs] == (["itco"] if holds and q35 else []), dump
        assert hv._added_pci_controllers(ours, theirs) == [], spec.name
        assert hv._moved_devices(ours, theirs) == [], spec.name
        added = hv._added_devices(ours, theirs)
        assert all(a.endswith("(no PCI address)") for a in added), added
        expected = ["watchdog model=itco (no PCI address)"] if holds and q35 else []
        assert [a for a in added if a.startswith("watchdog")] == expected, (spec.name, added)
        layout, rules = read_layout(dump, "dump.xml", judge.target)
        assert verify(layout, rules, strict_auto=False).capacity == plan.capacity, spec.name


# -- versioned machine types: QEMU X.Y brings the ones named X.Y ---------------------------------

@pytest.mark.parametrize("family", sorted(_GUEST))
def test_a_machine_type_newer_than_the_judges_qemu(family, judge, virsh):
    """The machine types of the newest QEMU the tables know (10.0): the judge that has that QEMU
    defines them; an older one refuses, and topo-solve refuses to plan them for its versions."""
    from topo_solve.rules import machine_missing
    from topo_solve.rules.versions import NEWEST

    view = rules_for(family, judge.target)
    prefix = view.machine_versions.split("(")[0]
    machine = f"{prefix}{NEWEST.qemu[0]}.{NEWEST.qemu[1]}"
    xml = _guest_xml(family, "".join(_NOT_PCI.values())).replace(f"machine='{_GUEST[family][1]}'",
                                                                  f"machine='{machine}'")
    why = machine_missing(view, machine)
    assert (why == "") == (tuple(judge.qemu[:2]) >= NEWEST.qemu)
    if why:
        assert why == (f"machine type {machine} needs QEMU {NEWEST.qemu[0]}.{NEWEST.qemu[1]} or later; the target is "
                       f"QEMU {judge.qemu[0]}.{judge.qemu[1]}")
        with pytest.raises(SpecError, match=re.escape(why)):
            read_domain(xml, "m.xml", judge.target)
        _refused(virsh, xml, f"does not support machine type '{machine}'")
    else:
        read_domain(xml, "m.xml", judge.target)
        assert _defined(virsh, xml).find("os/type").get("machine") == machine
