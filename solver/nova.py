"""OpenStack Nova's one knob: ``[libvirt] num_pcie_ports``, the smallest value for a set of flavors.

Nova gives a q35 (x86_64) or virt (aarch64) instance ``pcie-root`` and ``num_pcie_ports``
``pcie-root-port`` controllers without index or address (``_guest_add_pcie_root_ports``), writes
its devices without addresses, and libvirt places them at define: one port per PCI Express device
(the first video card keeps its chipset slot), more ports only when the given ones run out, and no
spare port once any port was given (libvirt adds its one spare only to guests without PCI
controllers).  Conventional PCI devices get a pcie-to-pci-bridge (31 slots), which libvirt adds
together with a root port of its own (measured, libvirt 9.0: with 4 ports given, a bridge and three
PCI Express devices, libvirt adds a fifth port and one port stays free), so a bridge costs none of
the given ports.  A flavor with ``P`` PCI Express devices at boot and a headroom of ``H`` PCI Express
and host devices needs ``N = P + H`` ports; its conventional headroom is the free slots of the
``b = ceil(L / 31)`` bridges its ``L`` conventional devices bring, ``31 b - L`` (none without a
conventional device at boot: nothing adds a bridge then).  Nova takes ``N`` from 0 to 28
(0 means libvirt's own default), one value per host, so the answer is the largest ``N`` of the set.

The flavors file (YAML)::

    machine: q35                 # q35 (x86_64) or virt (aarch64)
    flavors:
      m1.small:
        devices: {virtio-blk: 1, virtio-net: 1, virtio-balloon: 1}   # what Nova writes at boot
        headroom: {virtio-net: 2, virtio-blk: 1}                      # to hotplug later (models or classes)
        defaults: {usb: false}   # optional: devices libvirt adds by itself (usb, memballoon), as in a spec

Every number here is checked against the real libvirt in tests/test_libvirt_live.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Finding, SpecError
from .model import EndpointClass
from .rules import RuleSet, family_for

__all__ = ["Flavor", "FlavorNeed", "Answer", "load_flavors", "solve_flavors", "NOVA_MAX_PORTS"]

# nova/conf/libvirt.py: num_pcie_ports is an integer 0-28 ("due to QEMU limitations for aarch64/virt");
# 0 leaves the number of ports to libvirt
NOVA_MAX_PORTS = 28
# Nova's own CI (nova-next) runs q35 with num_pcie_ports 12, cut from 24: past about 12-14 ports the
# firmware's 64 KiB I/O space (4 KiB per port that gets an I/O window) runs out (QEMU docs/pcie.txt)
NOVA_IO_WARN = 12


@dataclass(frozen=True)
class Flavor:
    name: str
    devices: dict[str, int]
    headroom: dict[str, int]  # model or class -> count
    defaults: dict[str, bool] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class FlavorNeed:
    """What one flavor needs, and why."""

    flavor: str
    on_ports: int  # PCI Express devices at boot that libvirt puts on ports
    conventional: int  # conventional PCI devices at boot
    bridges: int  # pcie-to-pci-bridges libvirt adds for them (each with a root port of its own)
    port_headroom: int  # PCI Express and host-device hotplugs asked: one free port each
    pci_headroom: int  # conventional hotplugs asked
    pci_room: int  # free bridge slots
    ports: int  # num_pcie_ports this flavor needs
    problem: str | None = None  # why no value gives this flavor its headroom


@dataclass(frozen=True)
class Answer:
    machine: str
    flavors: tuple[FlavorNeed, ...]
    ports: int | None  # None: no value works for every flavor
    warnings: tuple[str, ...] = ()


def load_flavors(path: str) -> tuple[str, list[Flavor]]:
    """Read the flavors file; every problem at once, each with its line."""
    from .rules.devices import DEVICES
    from .spec import _compose, _line, _unknown

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Finding(path, None, "", f"cannot read the file: {getattr(exc, 'strerror', None) or exc}")]) \
            from None
    data, lines = _compose(text, path)
    bad: list[Finding] = []

    def fail(where: tuple, msg: str) -> None:
        bad.append(Finding(path, _line(lines, where), ".".join(map(str, where)), msg))

    if not isinstance(data, dict):
        raise SpecError([Finding(path, 1, "", "a flavors file is a mapping with 'machine' and 'flavors'")])
    for key in data:
        if key not in ("machine", "flavors"):
            fail((key,), f"unknown field '{key}'; a flavors file has 'machine' and 'flavors'")
    machine = data.get("machine", "q35")
    if not isinstance(machine, str) or family_for(machine) is None:
        fail(("machine",), f"'{machine}' is not a machine type; Nova's num_pcie_ports applies to q35 and virt")
        machine = "q35"
    flavors_raw = data.get("flavors")
    if not isinstance(flavors_raw, dict) or not flavors_raw:
        fail(("flavors",), "give the flavors as a mapping: NAME: {devices: {MODEL: N}, headroom: {MODEL: N}}")
        raise SpecError(bad)
    classes = {str(c) for c in EndpointClass}
    out = []
    for name, body in flavors_raw.items():
        where = ("flavors", name)
        if not isinstance(body, dict):
            fail(where, "a flavor is a mapping with 'devices' and 'headroom'")
            continue
        for key in body:
            if key not in ("devices", "headroom", "defaults"):
                fail(where + (key,), f"unknown field '{key}'; a flavor has devices, headroom and defaults")
        parsed: dict[str, dict] = {}
        for part, known in (("devices", DEVICES), ("headroom", None)):
            raw = body.get(part, {}) or {}
            if not isinstance(raw, dict):
                fail(where + (part,), f"'{part}' is a mapping MODEL: COUNT, e.g. {{virtio-net: 2}}")
                continue
            parsed[part] = {}
            for model, count in raw.items():
                if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 10_000:
                    fail(where + (part, model), f"count {count!r} is not a whole number from 0 to 10000")
                    continue
                ok = model in DEVICES if known is not None else (model in DEVICES or model in classes)
                if not ok:
                    fail(where + (part, model), _unknown(str(model), list(DEVICES) + ([] if known else sorted(classes)),
                                                         "device model" if known else "device model or class"))
                    continue
                if part == "headroom" and model in DEVICES and not DEVICES[model].hotplug:
                    fail(where + (part, model), f"libvirt cannot hotplug a {model}")
                    continue
                parsed[part][model] = count
        defaults = body.get("defaults", {}) or {}
        if not isinstance(defaults, dict) or not all(isinstance(v, bool) for v in defaults.values()):
            fail(where + ("defaults",), "'defaults' is a mapping like {usb: false, memballoon: false}")
            defaults = {}
        out.append(Flavor(str(name), parsed.get("devices", {}), parsed.get("headroom", {}), dict(defaults),
                          _line(lines, where)))
    rules = family_for(machine)
    for f in out:
        unknown = [k for k in f.defaults if k not in rules.implicit]
        for k in unknown:
            fail(("flavors", f.name, "defaults", k), f"'{k}' is not a device libvirt adds by itself on "
                 f"{rules.family}; known: {', '.join(sorted(rules.implicit))}")
    if bad:
        raise SpecError(bad)
    return machine, out


def _root_port(rules: RuleSet):
    root = rules.bus(rules.root)
    for b in rules.addable:
        if b.is_port and b.packs > 1 and b.connect in root.accepts:
            return b
    return None


def solve_flavors(machine: str, flavors: list[Flavor], file: str = "flavors") -> Answer:
    """The smallest num_pcie_ports that gives every flavor its headroom (see the module docstring)."""
    from .rules.devices import DEVICES

    rules = family_for(machine)
    port = _root_port(rules)
    if port is None:
        raise SpecError([Finding(file, None, "machine", f"{machine} guests have no PCI Express root ports; Nova's "
                                 "num_pcie_ports applies to q35 and virt")])
    bridge = next((b for b in rules.addable if b.connect is not None and b.connect in port.accepts
                   and not b.is_port and rules.connect_of(EndpointClass.PCI) in b.accepts), None)
    bridge_slots = bridge.nslots if bridge is not None else 0
    needs = []
    for f in flavors:
        devices = dict(f.devices)
        for flag, kind_name in rules.implicit.items():  # what libvirt adds at define unless the XML has one
            k = DEVICES.get(kind_name)
            on = f.defaults.get(flag, rules.defaults.get(flag, False))
            if k is not None and on and not any(DEVICES[m].element == k.element for m in devices):
                devices[kind_name] = 1
        on_ports = conventional = 0
        video_fixed = "primary-video" in rules.fixed
        for model, n in devices.items():
            k = DEVICES[model]
            if k.cls is None or k.role in rules.fixed:
                continue  # a chipset function (q35's SATA): no slot of its own
            if k.video and video_fixed:
                n -= 1  # the first video card keeps its chipset slot
                video_fixed = False
            connect = rules.connect_of(k.cls)
            if rules.accepts(port, connect, auto=True, endpoint=True):
                on_ports += max(n, 0)
            else:
                conventional += max(n, 0)
        port_headroom = pci_headroom = 0
        for what, n in f.headroom.items():
            cls = EndpointClass(what) if what in {str(c) for c in EndpointClass} else DEVICES[what].cls
            if rules.accepts(port, rules.connect_of(cls), auto=True, endpoint=True):
                port_headroom += n
            else:
                pci_headroom += n
        bridges = math.ceil(conventional / bridge_slots) if conventional and bridge_slots else 0
        room = bridges * bridge_slots - conventional
        ports = max(1, on_ports + port_headroom)  # 0 would mean libvirt's default, not "none"
        problem = None
        if pci_headroom > room:
            problem = (f"{pci_headroom} conventional PCI hotplug(s) need free slots of a pcie-to-pci-bridge, which "
                       "Nova never adds and libvirt adds only for conventional devices at boot"
                       + (f" ({room} free)" if bridges else "") + ": hotplug PCI Express (virtio) models instead")
        elif ports > NOVA_MAX_PORTS:
            problem = f"needs {ports} ports, more than Nova's limit of {NOVA_MAX_PORTS}"
        needs.append(FlavorNeed(f.name, on_ports, conventional, bridges, port_headroom, pci_headroom, room, ports,
                                problem))
    ok = all(n.problem is None for n in needs)
    value = max(n.ports for n in needs) if ok else None
    warnings = []
    if value is not None and value > NOVA_IO_WARN:
        warnings.append(f"num_pcie_ports {value} is past {NOVA_IO_WARN}: each port with an I/O-BAR device behind it "
                        "(e1000, rtl8139, transitional virtio) takes a 4 KiB window of the firmware's 64 KiB I/O "
                        "space, which holds about 12-14 (Nova's CI cut 24 ports to 12 for this); modern virtio "
                        "devices need none")
    return Answer(machine, tuple(needs), value, tuple(warnings))
