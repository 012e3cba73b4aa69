"""Seen from the guest: boot each plan with a tiny Linux and check what it enumerates.

libvirt accepting a hotplug proves libvirt's accounting; these tests check what
the guest gets.  For example specs and generated specs of q35 and pc, planned
with topo-solve, booted (direct kernel boot, tests/guest_image.py) with SeaBIOS
and, on a few, OVMF:

* every planned controller and device is where the plan put it: controller
  indexes map to guest bus numbers depth-first (expanders at their busNr), each
  bridge's secondary bus is the number the plan implies, each endpoint has the
  PCI vendor:device of its model, no BAR is left unassigned, and the guest shows
  no PCI device the plan does not have beyond the chipset's on bus 0;
* the promised capacity of each class, hotplugged all at once (virtio NICs:
  modern for ``pcie``, transitional for ``pci``) arrives in the guest at the
  address libvirt reports, with its BARs assigned and an interface;
* each of them unplugs again (``detach-device-alias --live``) and the guest sees
  it go.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from tests.guest_run import Guest, guest_address, guest_buses, hidden_bridges, isa_safe_io_slots
from topo_solve.domain.write import render_domain
from topo_solve.model import EndpointClass
from topo_solve.solve import solve
from topo_solve.spec import load_spec, parse_spec, to_problem

pytestmark = [pytest.mark.guest, pytest.mark.libvirt]

SPECS = Path(__file__).parent.parent / "specs"

# PCI vendor:device of each model as QEMU 7.2 presents it (QEMU's hw/ PCI ids;
# virtio ids from the virtio 1.x spec: 0x1040 + device type for modern devices,
# 0x1000-0x103f for transitional ones).
IDS = {
    "virtio-net": (0x1AF4, 0x1041), "virtio-blk": (0x1AF4, 0x1042), "virtio-serial": (0x1AF4, 0x1043),
    "virtio-rng": (0x1AF4, 0x1044), "virtio-balloon": (0x1AF4, 0x1045), "virtio-scsi": (0x1AF4, 0x1048),
    "virtio-gpu": (0x1AF4, 0x1050), "virtio-input": (0x1AF4, 0x1052),
    "virtio-net-transitional": (0x1AF4, 0x1000), "virtio-blk-transitional": (0x1AF4, 0x1001),
    "virtio-balloon-transitional": (0x1AF4, 0x1002), "virtio-serial-transitional": (0x1AF4, 0x1003),
    "virtio-scsi-transitional": (0x1AF4, 0x1004), "virtio-rng-transitional": (0x1AF4, 0x1005),
    "e1000": (0x8086, 0x100E), "e1000e": (0x8086, 0x10D3), "igb": (0x8086, 0x10C9),
    "rtl8139": (0x10EC, 0x8139), "qemu-xhci": (0x1B36, 0x000D), "ich9-hda": (0x8086, 0x293E),
    "qxl": (0x1B36, 0x0100), "vga": (0x1234, 0x1111), "pci-serial": (0x1B36, 0x0002),
    "piix3-uhci": (0x8086, 0x7020), "ich9-ahci": (0x8086, 0x2922),
    "hostdev": (0x1AF4, 0x1044),  # swapped for a virtio rng (tests/guest_run.py boot_xml)
    # controllers
    "pcie-root-port": (0x1B36, 0x000C), "pcie-to-pci-bridge": (0x1B36, 0x000E), "pci-bridge": (0x1B36, 0x0001),
    "dmi-to-pci-bridge": (0x8086, 0x244E), "pcie-switch-upstream-port": (0x104C, 0x8232),
    "pcie-switch-downstream-port": (0x104C, 0x8233), "pcie-expander-bus": (0x1B36, 0x000B),
    "pci-expander-bus": (0x1B36, 0x0009),
}
# QEMU's virtio-*-pci keeps its legacy interface (and the transitional id, and an I/O
# BAR) unless it sits on a PCI Express bus that is not a root bus (virtio_pci_realize:
# disable-legacy=auto); virtio-gpu and virtio-input have no legacy interface.
LEGACY = {"virtio-net": 0x1000, "virtio-blk": 0x1001, "virtio-balloon": 0x1002, "virtio-serial": 0x1003,
          "virtio-scsi": 0x1004, "virtio-rng": 0x1005, "hostdev": 0x1005}
EXPRESS_PORTS = {"pcie-root-port", "pcie-switch-downstream-port"}
# what is hotplugged to fill each class: a NIC, so the guest also names an interface
PROBE = {"pcie": "virtio", "pci": "virtio-transitional"}
# Without its 256 KiB boot ROM: the ROMs of hotplugged NICs fill a bridge's 2 MiB windows
# and 5 of 31 NICs behind one pcie-to-pci-bridge get no room for their BARs (measured in
# tests/test_guest_measure.py, test_nic_roms_fill_a_bridge_window).
ROM = "<rom enabled='no'/>"


def expected_id(kind: str, bus_model: str) -> tuple[int, int]:
    if kind in LEGACY and bus_model not in EXPRESS_PORTS:
        return (0x1AF4, LEGACY[kind])
    return IDS[kind]


def _fmt(ident) -> str:
    return f"{ident[0]:04x}:{ident[1]:04x}"


def check_enumeration(plan, xml: str, view) -> list[str]:
    """What differs between the plan and the guest's boot-time PCI view (empty: nothing)."""
    problems = []
    buses = guest_buses(xml)
    seen = view.devices
    planned: set[str] = set()
    ctrl_models = {c.index: c.model for c in plan.layout.controllers}
    root = etree.fromstring(xml.encode())
    for c in root.iter("controller"):
        if c.get("type") != "pci" or c.find("address") is None:
            continue
        idx = int(c.get("index"))
        at = guest_address(c.find("address"), buses)
        planned.add(at)
        d = seen.get(at)
        want = IDS[ctrl_models[idx]]
        if d is None:
            problems.append(f"controller {idx} ({ctrl_models[idx]}): nothing at {at}")
            continue
        if (d.vendor, d.device) != want:
            problems.append(f"controller {idx}: {at} is {_fmt((d.vendor, d.device))}, want {_fmt(want)}")
        if ctrl_models[idx] in ("pcie-expander-bus", "pci-expander-bus"):
            continue  # a host bridge: its bus is checked through its children
        if d.secondary != buses[idx]:
            problems.append(f"controller {idx} ({ctrl_models[idx]}) at {at}: guest bus {d.secondary}, "
                            f"the plan's numbering gives {buses[idx]}")
        if d.unassigned():
            problems.append(f"controller {idx} at {at}: unassigned {d.unassigned()}")
    for p in plan.layout.placed:
        if p.address is None:
            continue
        at = f"{p.address.domain:04x}:{buses[p.address.bus]:02x}:{p.address.slot:02x}.{p.address.function}"
        planned.add(at)
        d = seen.get(at)
        want = expected_id(p.endpoint.kind, ctrl_models[p.address.bus])
        if d is None:
            problems.append(f"{p.endpoint.name} ({p.endpoint.kind}): nothing at {at}")
        elif (d.vendor, d.device) != want:
            problems.append(f"{p.endpoint.name} ({p.endpoint.kind}) at {at}: guest sees {_fmt((d.vendor, d.device))}, "
                            f"want {_fmt(want)}")
        elif d.unassigned():
            problems.append(f"{p.endpoint.name} ({p.endpoint.kind}) at {at}: unassigned {d.unassigned()}")
    for at, sec in hidden_bridges(xml).items():
        planned.add(at)
        d = seen.get(at)
        if d is None or (d.vendor, d.device) != IDS["pci-bridge"] or d.secondary != sec:
            problems.append(f"no expander bridge (pci-bridge, bus {sec}) at {at}")
    for at, d in sorted(seen.items()):
        if at not in planned and d.bus != 0:
            problems.append(f"guest has {at} ({_fmt((d.vendor, d.device))}) that the plan does not")
    # each controller provides one bus (and QEMU's hidden expander bridges one more each),
    # which is what the plan's bus-number budget counts
    guest_bus_count = 1 + sum(1 for d in seen.values() if d.secondary is not None) + sum(
        1 for m in ctrl_models.values() if m in ("pcie-expander-bus", "pci-expander-bus"))
    want_buses = plan.budgets["bus numbers"][0] if "bus numbers" in plan.budgets else len(ctrl_models)
    if guest_bus_count != want_buses:
        problems.append(f"guest has {guest_bus_count} buses, the plan's budget counts {want_buses}")
    return problems


def hotplug_and_unplug(g: Guest, cls: str, count: int, family: str, timeout: float) -> dict[str, object]:
    """Hotplug ``count`` probe NICs of ``cls`` at once, check the guest gets each, unplug them all."""
    if count == 0:
        return {"hotplugged": 0}
    t0 = time.monotonic()
    aliases = [f"ua-tsg-{cls}-{i}" for i in range(count)]
    for a in aliases:
        g.attach(f"<interface type='user'><model type='{PROBE[cls]}'/>{ROM}<alias name='{a}'/></interface>")
    live = g.live_xml()
    buses = guest_buses(etree.tostring(live, encoding="unicode"))
    models = {int(c.get("index")): c.get("model") for c in live.iter("controller") if c.get("type") == "pci"}
    where, ident = {}, {}
    for iface in live.iter("interface"):
        al = iface.find("alias")
        if al is not None and al.get("name") in aliases:
            a = iface.find("address")
            where[al.get("name")] = guest_address(a, buses)
            kind = "virtio-net" if cls == "pcie" else "virtio-net-transitional"
            ident[al.get("name")] = expected_id(kind, models[int(a.get("bus"), 0)])
    assert len(where) == count, f"live XML lists {len(where)} of {count} hotplugged NICs"
    want = set(where.values())
    v = g.wait(lambda v: want <= set(v.added) and want <= {n.pci for n in v.nets.values()}, timeout,
               f"{count} hotplugged {cls} NICs with interfaces")
    t_plug = time.monotonic() - t0
    bad = []
    for a, at in sorted(where.items()):
        d = v.added[at]
        if (d.vendor, d.device) != ident[a]:
            bad.append(f"{a} at {at}: {_fmt((d.vendor, d.device))}, want {_fmt(ident[a])}")
        if d.unassigned(io=False):
            bad.append(f"{a} at {at}: unassigned {d.unassigned(io=False)}")
    # I/O BARs: on the root bus every one; behind a bridge as many as its I/O window
    # holds (isa_safe_io_slots), the rest get none: Linux says "no space" and the
    # transitional device runs in modern mode (its memory BARs), which the NIC shows.
    io_seen: dict[int, tuple[int, int]] = {}
    for bus in sorted({v.added[at].bus for at in want}):
        on_bus = [v.added[at] for at in want if v.added[at].bus == bus
                  and (v.added[at].io_bar_regs() or "io" in v.added[at].failed.values())]
        if not on_bus:
            continue  # modern virtio: no I/O BAR
        with_io = sum(1 for d in on_bus if not d.unassigned())
        if bus == 0:
            expect = len(on_bus)
        else:
            bridge = next(d for d in v.devices.values() if d.secondary == bus)
            w = bridge.window("io")
            used = [r for d in v.devices.values() if d.bus == bus for r in d.io_ranges()]
            io_size = max((r.size for d in on_bus for r in d.bars if r.kind == "io"), default=0x20)
            expect = min(len(on_bus), isa_safe_io_slots((w.start, w.end), used, io_size) if w else 0)
        io_seen[bus] = (with_io, len(on_bus))
        if with_io != expect:
            bad.append(f"bus {bus:02x}: {with_io} of {len(on_bus)} hotplugged NICs got their I/O BAR, "
                       f"the bridge's I/O window predicts {expect}")
    assert not bad, f"{cls} hotplugs seen from the guest ({g.firmware}):\n  " + "\n  ".join(bad)
    t1 = time.monotonic()
    for a in aliases:
        g.detach_alias(a)
    v = g.wait(lambda v: want <= set(v.removed), timeout, f"the removal of {count} {cls} NICs")
    g.wait(lambda v: not any(n.pci in want for n in v.nets.values()), timeout, "their interfaces to go")
    left = {al.get("name") for al in g.live_xml().iter("alias")} & set(aliases)
    deadline = time.monotonic() + 30
    while left and time.monotonic() < deadline:  # libvirt drops them on QEMU's DEVICE_DELETED
        time.sleep(0.5)
        left = {al.get("name") for al in g.live_xml().iter("alias")} & set(aliases)
    assert not left, f"libvirt still lists {sorted(left)} after the guest let them go"
    return {"hotplugged": count, "plug_s": round(t_plug, 1), "unplug_s": round(time.monotonic() - t1, 1),
            "io_bars": {f"{b:02x}": f"{n}/{m}" for b, (n, m) in io_seen.items()}}


def _boot_and_check(plan, virsh, guest_image, guest_virt, guest_dir, firmware: str, facts: dict, *,
                    hotplug: bool = True):
    virt = guest_virt[0]
    xml = render_domain(replace(plan, problem=replace(plan.problem, virt_type=virt)))
    timeout = 120 if virt == "kvm" else 300
    with Guest(virsh, xml, guest_image, guest_dir, firmware=firmware, virt=virt) as g:
        v = g.view()
        problems = check_enumeration(plan, xml, v)
        assert not problems, (f"{plan.problem.name} ({firmware}, {virt}): the guest's PCI view differs from "
                              f"the plan:\n  " + "\n  ".join(problems))
        want_efi = "1" if firmware == "ovmf" else "0"
        assert v.boot.get("efi") == want_efi, v.boot
        rec = {"family": plan.layout.family, "controllers": len(plan.layout.controllers),
               "pci_devices_seen": len(v.devices), "boot_s": round(g.boot_seconds, 1)}
        facts[f"spec_{plan.problem.name}_{firmware}"] = rec
        if not hotplug:
            return
        classes = ["pci"] if plan.layout.family == "pc" else ["pcie", "pci"]  # pc: one kind of slot
        for cls in classes:
            rec[cls] = hotplug_and_unplug(g, cls, plan.capacity[EndpointClass(cls)], plan.layout.family, timeout)


def _plan(path: Path):
    return solve(load_spec(path))


EXAMPLES = [("q35-web", "seabios"), ("q35-web", "ovmf"), ("pc-legacy", "seabios")]


@pytest.mark.parametrize("stem,firmware", EXAMPLES, ids=[f"{s}-{f}" for s, f in EXAMPLES])
def test_example_spec_seen_from_the_guest(stem, firmware, virsh, guest_image, guest_virt, guest_dir, guest_facts):
    _boot_and_check(_plan(SPECS / f"{stem}.yaml"), virsh, guest_image, guest_virt, guest_dir, firmware,
                    guest_facts, hotplug=firmware == "seabios")


def test_every_x86_example_is_covered():
    """The list above is every q35 and pc example spec (a new example must be added there)."""
    stems = set()
    for p in SPECS.glob("*.yaml"):
        text = p.read_text()
        if "domain:" in text:
            continue
        if any(f"machine: {m}" in text for m in ("q35", "pc")):
            stems.add(p.stem)
    assert stems == {s for s, _ in EXAMPLES}


# -- generated specs: like tests/test_conformance.py's, q35 and pc only --

_MODELS = {
    "q35": (["virtio-net", "virtio-blk", "e1000e", "virtio-rng"], ["e1000", "virtio-net-transitional", "rtl8139"]),
    "pc": (["virtio-net", "virtio-blk"], ["e1000", "rtl8139"]),
}


def _generated(family: str, seed: int) -> str:
    rnd = random.Random(f"guest-{family}-{seed}")
    pcie, pci = _MODELS[family]
    lines = [f"name: guest-{family}-{seed}", f"machine: {family}",
             f"defaults: {{usb: {str(rnd.random() < 0.5).lower()}, memballoon: {str(rnd.random() < 0.5).lower()}}}",
             "devices:"]
    for n in range(rnd.randint(1, 4)):
        lines.append(f"  - {{name: d{n}, model: {rnd.choice(pcie + pci)}, count: {rnd.randint(1, 3)}}}")
    if family == "q35" and rnd.random() < 0.5:
        lines.append(f"  - {{name: fixed, model: {rnd.choice(pcie)}, hotunplug: false}}")
    lines.append("hotplug:")
    lines.append(f"  - {{class: pcie, count: {rnd.randint(1, 5)}}}")
    if rnd.random() < 0.5:
        lines.append(f"  - {{model: {rnd.choice(pci)}, count: {rnd.randint(1, 3)}}}")
    return "\n".join(lines) + "\n"


GENERATED = [("q35", 0), ("q35", 1), ("pc", 0)]  # a few: each boots under TCG in CI


@pytest.mark.parametrize("family,seed", GENERATED, ids=[f"{f}-{s}" for f, s in GENERATED])
def test_generated_spec_seen_from_the_guest(family, seed, virsh, guest_image, guest_virt, guest_dir, guest_facts):
    spec, lines = parse_spec(_generated(family, seed), f"guest-{family}-{seed}")
    plan = solve(to_problem(spec, lines))
    _boot_and_check(plan, virsh, guest_image, guest_virt, guest_dir, "seabios", guest_facts)


NUMA = {
    "q35": "name: guest-numa-q35\nmachine: q35\nvcpus: 2\nnuma: {nodes: 2}\ndefaults: {usb: false}\n"
           "devices:\n  - {name: near, model: virtio-net}\n  - {name: far, model: virtio-net, numa_node: 1}\n"
           "  - {name: old, model: e1000, numa_node: 1}\n"
           "hotplug:\n  - {class: pcie, count: 2}\n  - {class: pcie, count: 2, numa_node: 1}\n",
    # 33 NICs on node 1: more than the pxb's slots, so a pci-bridge hangs behind it
    "pc": "name: guest-numa-pc\nmachine: pc\nvcpus: 2\nnuma: {nodes: 2}\ndefaults: {usb: false}\n"
          "devices:\n  - {name: near, model: virtio-net}\n  - {name: far, model: virtio-net, numa_node: 1, count: 33}\n",
}


@pytest.mark.parametrize("family", list(NUMA))
def test_expander_buses_seen_from_the_guest(family, virsh, guest_image, guest_virt, guest_dir, guest_facts):
    """Expander buses (pcie-expander-bus, pci-expander-bus) at their busNr, their subtree numbered
    from there, with SeaBIOS.  Only the enumeration: libvirt puts unaddressed hotplugs anywhere,
    and on pc QEMU refuses a hotplug onto the pxb itself (the plan warns)."""
    spec, lines = parse_spec(NUMA[family], f"numa-{family}")
    plan = solve(to_problem(spec, lines))
    assert any(c.model.endswith("expander-bus") for c in plan.layout.controllers)
    _boot_and_check(plan, virsh, guest_image, guest_virt, guest_dir, "seabios", guest_facts, hotplug=False)
