"""`topo-solve extend` and the audit round trip, without a hypervisor.

* audit(plan XML) equals the plan's own capacity, for every example spec;
* extend gives the requested headroom, keeps every original address, and adds
  no controller it could do without (removing any added controller breaks the
  request);
* the edit keeps the file's bytes: the output is the input plus inserted lines
  (and, with --allow-moves, the address lines of the moved devices);
* a request the guest already meets changes nothing; devices that would have to
  move are named and not moved unless asked.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from topo_solve.domain.plan import plan_document
from topo_solve.domain.read import read_layout
from topo_solve.domain.write import render_domain
from topo_solve.errors import InfeasibleError
from topo_solve.extend import MovesNeeded, extend
from topo_solve.model import EndpointClass as K
from topo_solve.model import Headroom, Layout
from topo_solve.solve import solve
from topo_solve.spec import load_spec, parse_hotplug_option
from topo_solve.verify import verify

from .property.strategies import FAMILY_NAMES, SETTINGS, from_machine, problem_of

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "domain:" not in p.read_text())


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topo_solve", *args], capture_output=True, text=True,
                          input=stdin, cwd=ROOT)


def _audit(text: str) -> dict[K, int]:
    layout, rules = read_layout(text)
    return dict(verify(layout, rules, strict_auto=False).capacity)


def _addresses(layout: Layout) -> dict[str, object]:
    out = {f"controller {c.index}": c.address for c in layout.controllers}
    out.update({p.endpoint.name: p.address for p in layout.placed})
    return out


# -- round trip: audit(plan) == plan ------------------------------------------

@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_audit_of_a_plan_is_its_capacity(spec):
    plan = solve(load_spec(spec))
    assert _audit(render_domain(plan)) == plan.capacity


# -- extend on the examples ------------------------------------------------------

REQUESTS = [
    (Headroom(K.PCIE, 12, "virtio-net"),),
    (Headroom(K.PCI, 45, "e1000"),),
    (Headroom(K.HOSTDEV, 3, "hostdev"), Headroom(K.PCIE, 5, "virtio-blk")),
]


def _check_extension(text: str, headroom: tuple[Headroom, ...]) -> None:
    layout, rules = read_layout(text)
    planned = plan_document(text, "<test>", headroom)
    ext, out = planned.extension, planned.edit.text
    new_layout, _ = read_layout(out)
    report = verify(new_layout, rules, strict_auto=False)
    requested = {c: 0 for c in K}
    for h in headroom:
        requested[h.cls] += h.count
    assert report.fits(requested), (report.capacity, requested)
    assert not [e for e in report.errors if e not in verify(layout, rules, strict_auto=False).errors]
    old, new = _addresses(layout), _addresses(new_layout)
    assert {k: new[k] for k in old} == old  # nothing moved
    assert len(new) - len(old) == len(ext.added)
    # every original line is still there, in order; only whole lines were inserted
    diff = [d for d in difflib.ndiff(text.splitlines(), out.splitlines()) if d[:1] in "-+?"]
    assert not [d for d in diff if not d.startswith("+")]
    # minimal, locally: without any one added controller the request no longer fits
    for c in ext.added:
        if any(p.address and p.address.bus == c.index for p in new_layout.placed) or any(
                o.address and o.address.bus == c.index for o in ext.added):
            continue  # something hangs on it
        less = replace(new_layout, controllers=tuple(x for x in new_layout.controllers if x.index != c.index))
        assert not verify(less, rules, strict_auto=False).fits(requested), f"controller {c.index} is not needed"


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("headroom", REQUESTS, ids=["pcie12", "pci45", "hostdev3+pcie5"])
def test_extend_examples(spec, headroom):
    _check_extension(render_domain(solve(load_spec(spec))), headroom)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@SETTINGS
@given(data=st.data())
def test_extend_random_guests(family, data):
    """Property: any planned guest, any request that fits the machine: extend reaches it, moves nothing."""
    problem = problem_of(data.draw(from_machine(family)))
    text = render_domain(solve(problem))
    headroom = tuple(Headroom(cls, data.draw(st.integers(0, 12 if cls is not K.HOSTDEV else 3), label=str(cls)),
                              str(cls)) for cls in K)
    note(text)
    try:
        _check_extension(text, headroom)
    except InfeasibleError as exc:
        # only a request beyond the machine's limits may fail (pseries: 30 extra PHBs)
        assert family == "pseries", exc.render()


def test_already_met_changes_nothing(tmp_path):
    text = render_domain(solve(load_spec(ROOT / "specs/q35-web.yaml")))
    path = tmp_path / "web.xml"
    path.write_text(text)
    r = _run("extend", str(path), "--hotplug", "virtio-net=1", "--in-place")
    assert r.returncode == 0, r.stderr
    assert "already meets the request; nothing changed" in r.stderr
    assert path.read_text() == text and not (tmp_path / "web.xml.bak").exists()
    r = _run("extend", str(path), "--hotplug", "pcie=1")
    assert r.stdout == text


# -- byte preservation on a hand-written file -------------------------------------

HAND = """<!-- kept: a comment before the root -->
<domain type='kvm'>
  <name>hand</name>
  <memory unit='KiB'>1048576</memory>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <!-- the root complex -->
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='1' port='0x10'/>
      <alias name='pci.1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' multifunction='on'/>
    </controller>
    <controller type='pci' index='2' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='2' port='0x11'/>
      <alias name='pci.2'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x1'/>
    </controller>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/>
    </controller>
    <interface type='user'>
      <mac address='52:54:00:00:00:01'/>
      <model   type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <controller type='usb' index='0' model='none'/>
    <memballoon model='none'/>
    <unknown-to-topo-solve flavour='x'/>
  </devices>
  <seclabel type='none'/>
</domain>
"""


def test_edit_keeps_every_byte(tmp_path):
    path = tmp_path / "hand.xml"
    path.write_text(HAND)
    r = _run("extend", str(path), "--hotplug", "virtio-net=3", "-o", str(tmp_path / "out.xml"))
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "out.xml").read_text()
    added = [d[2:] for d in difflib.ndiff(HAND.splitlines(), out.splitlines()) if d.startswith("+ ")]
    assert not [d for d in difflib.ndiff(HAND.splitlines(), out.splitlines()) if d.startswith("- ")]
    assert "".join(added).count("<controller type='pci'") == 2  # one port free, 3 asked: two more, in '' quotes
    assert out.index("index='3'") > out.index("index='2'") and out.index("index='4'") < out.index("type='sata'")
    assert _audit(out)[K.PCIE] == 3
    assert "added 2 pcie-root-port (index 3-4)" in r.stderr


def test_in_place_keeps_a_backup_and_refuses_to_overwrite_it(tmp_path):
    path = tmp_path / "hand.xml"
    path.write_text(HAND)
    r = _run("extend", str(path), "--hotplug", "pcie=2", "--in-place")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hand.xml.bak").read_text() == HAND
    assert _audit(path.read_text())[K.PCIE] == 2
    edited = HAND + "<!-- edited since -->\n"  # a .bak that is not this file's bytes is never replaced
    path.write_text(edited)
    r = _run("extend", str(path), "--hotplug", "pcie=2", "--in-place")
    assert r.returncode == 2 and "hand.xml.bak exists; pass --force" in r.stderr
    assert path.read_text() == edited and (tmp_path / "hand.xml.bak").read_text() == HAND  # nothing half-done
    path.write_text(HAND)  # one that holds exactly them (left by a run killed before the rename) is kept
    r = _run("extend", str(path), "--hotplug", "pcie=2", "--in-place")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hand.xml.bak").read_text() == HAND and _audit(path.read_text())[K.PCIE] == 2


# -- moves ---------------------------------------------------------------------------

def _pc_full() -> str:
    """pc with every root slot taken: a bridge needs a slot, so one device must move."""
    from topo_solve.spec import Spec, to_problem

    spec = Spec.model_validate({"name": "full", "machine": "pc", "defaults": {"usb": False, "memballoon": False},
                                "devices": [{"model": "e1000", "count": 30}]})
    return render_domain(solve(to_problem(spec)))


def test_moves_are_named_not_made(tmp_path):
    text = _pc_full()
    layout, rules = read_layout(text)
    with pytest.raises(MovesNeeded) as err:
        extend(layout, rules, (Headroom(K.PCI, 3, "e1000"),))
    assert len(err.value.moves) == 1
    path = tmp_path / "full.xml"
    path.write_text(text)
    r = _run("extend", str(path), "--hotplug", "e1000=3")
    assert r.returncode == 1 and r.stdout == ""
    assert f"{err.value.moves[0].name}: {err.value.moves[0].old} -> " in r.stderr and "--allow-moves" in r.stderr


def test_allow_moves_lists_every_move():
    text = _pc_full()
    layout, rules = read_layout(text)
    planned = plan_document(text, "<test>", (Headroom(K.PCI, 3, "e1000"),), allow_moves=True)
    ext, out = planned.extension, planned.edit.text
    assert len(ext.moves) == 1
    new_layout, _ = read_layout(out)
    old, new = _addresses(layout), _addresses(new_layout)
    changed = {k for k in old if old[k] != new[k]}
    assert changed == {m.name for m in ext.moves}
    assert verify(new_layout, rules, strict_auto=False).fits({K.PCIE: 0, K.PCI: 3, K.HOSTDEV: 0})


def test_moves_are_not_tried_one_set_at_a_time_when_none_can_help(monkeypatch):
    """pc without ACPI takes no hotplug at all, whatever moves: extend used to try every growing set of
    its movable devices (one search each: 21 s for the pc-2000 sample, found by the fuzzer).  A layout
    with some devices moved is one with them gone too, so one search with all of them gone answers for
    every set; the explanation is the same as before.  (Counted in searches: times live in
    benchmarks/bench_known_faults.py.)"""
    import re

    import topo_solve.solve as solve_module

    text = re.sub(r"\s*<features>.*?</features>", "", _pc_full(), flags=re.S)
    assert "<acpi" not in text
    layout, rules = read_layout(text)
    assert len(layout.placed) >= 30
    searches = []
    real_fits = solve_module.fits
    monkeypatch.setattr(solve_module, "fits", lambda problem: searches.append(1) or real_fits(problem))
    with pytest.raises(InfeasibleError) as err:
        extend(layout, rules, (Headroom(K.PCI, 3, "e1000"),))
    assert not isinstance(err.value, MovesNeeded)
    assert err.value.largest == {"pci": 0} and "hotplug through ACPI only" in " ".join(err.value.hints)
    # the explanation's own few (the largest headroom that fits) and one with every movable device gone;
    # not one per set of devices to move (there are as many sets as movable devices)
    assert len(searches) <= 5 < len(layout.placed), len(searches)


def test_infeasible_extension_says_what_fits():
    text = render_domain(solve(load_spec(ROOT / "specs/q35-web.yaml")))
    layout, rules = read_layout(text)
    with pytest.raises(InfeasibleError) as err:
        extend(layout, rules, (Headroom(K.PCIE, 500, "virtio-net"),))
    assert not isinstance(err.value, MovesNeeded)
    largest = err.value.largest["pcie"]
    assert 0 < largest < 500
    extend(layout, rules, (Headroom(K.PCIE, largest, "virtio-net"),))  # the figure it names does fit
    with pytest.raises(InfeasibleError):
        extend(layout, rules, (Headroom(K.PCIE, largest + 1, "virtio-net"),))


# -- the spec form and the command line -----------------------------------------------

def test_spec_with_domain(tmp_path):
    (tmp_path / "guest.xml").write_text(HAND)
    spec = tmp_path / "more.yaml"
    spec.write_text("domain: guest.xml\nhotplug:\n  - {model: virtio-net, count: 4}\n")
    r = _run(str(spec), "--emit", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["changed"] and report["capacity"]["pcie"] >= 4 and report["before"]["pcie"] == 1
    assert [a["model"] for a in report["added"]] == ["pcie-root-port"] * 3


@pytest.mark.parametrize("body, message", [
    ("domain: guest.xml\ndevices:\n  - {model: e1000}\nhotplug: []\n", "devices: 'devices' describes a new guest"),
    ("domain: guest.xml\nmemory: 2048\n", "memory: 'memory' describes a new guest"),
    ("domain: guest.xml\nmachine: pseries\n", "machine 'pseries' is pseries, but"),
    ("hotplug: []\n", "name: required field is missing"),
])
def test_spec_with_domain_errors(tmp_path, body, message):
    (tmp_path / "guest.xml").write_text(HAND)
    spec = tmp_path / "s.yaml"
    spec.write_text(body)
    r = _run(str(spec))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, code, message", [
    (["extend", "{xml}"], 2, "extend needs at least one --hotplug"),
    (["extend", "{xml}", "--hotplug", "virtio-net"], 2, "is not MODEL=COUNT"),
    (["extend", "{xml}", "--hotplug", "virtio-nett=2"], 2, "did you mean 'virtio-net'"),
    (["extend", "{xml}", "--hotplug", "vga=2"], 2, "libvirt cannot hotplug a vga"),
    (["extend", "{xml}", "--hotplug", "pcie=1", "--in-place", "-o", "x.xml"], 2, "cannot be combined"),
    (["extend", "{xml}", "--hotplug", "pcie=1", "-o", "{xml}"], 2, "exists; pass --force"),
    (["extend", "{xml}", "--hotplug", "pcie=999"], 1, "pcie hotplug slots fit next to these devices"),
    (["extend", "{xml}", "--hotplug", "pcie=2", "--emit", "json", "-q"], 0, ""),
])
def test_extend_cli(tmp_path, args, code, message):
    path = tmp_path / "hand.xml"
    path.write_text(HAND)
    r = _run(*[a.format(xml=path) for a in args])
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert path.read_text() == HAND


def test_extend_reads_stdin():
    r = _run("extend", "-", "--hotplug", "pcie=2", stdin=HAND)
    assert r.returncode == 0, r.stderr
    assert _audit(r.stdout)[K.PCIE] == 2


def test_hotplug_option_parses_models_and_classes():
    assert parse_hotplug_option("virtio-net=4") == Headroom(K.PCIE, 4, "virtio-net")
    assert parse_hotplug_option("e1000=2") == Headroom(K.PCI, 2, "e1000")
    assert parse_hotplug_option("hostdev=1").cls is K.HOSTDEV
    assert parse_hotplug_option("pci=0") is None
    with pytest.raises(ValueError):
        parse_hotplug_option("pcie=-1")
    with pytest.raises(ValueError):
        parse_hotplug_option("=3")


def test_numbers_are_read_as_libvirt_reads_them():
    """'02' and '0x02' are one slot (libvirt reads base 0: a leading 0 is octal); extend reads them alike."""
    text = HAND.replace("slot='0x02' function='0x1'/>", "slot='02' function='01'/>")
    assert text != HAND
    layout, rules = read_layout(text)
    out = plan_document(text, "<test>", (Headroom(K.PCIE, 3, "virtio-net"),)).edit.text
    assert "slot='02' function='01'/>" in out and _audit(out)[K.PCIE] == 3
