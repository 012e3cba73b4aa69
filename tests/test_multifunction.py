"""Multifunction groups (``functions: N``) and protected ports (``protect: port``), issue 14.

Unit tests of the spec reader, the placer, the verifier and the writers; property tests over
random specs; the command line's answers to bad input.  What real libvirt does with the same
plans is in tests/test_libvirt_multifunction.py.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, strategies as st
from lxml import etree

from topo_solve.cli import main
from topo_solve.domain.read import read_layout
from topo_solve.domain.write import render_domain
from topo_solve.emit.stack import virt_install
from topo_solve.errors import SpecError
from topo_solve.model import Address, EndpointClass
from topo_solve.rules import rules_for
from topo_solve.rules.devices import DEVICES
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from topo_solve.verify import verify

GROUPABLE = sorted(k for k, v in DEVICES.items() if v.multifunction and v.spec)


def plan_of(text: str):
    spec, lines = parse_spec(text)
    return solve(to_problem(spec, lines))


def problem_of(text: str):
    spec, lines = parse_spec(text)
    return to_problem(spec, lines)


def groups(plan) -> dict[str, list[tuple[Address, bool]]]:
    """Group name -> (address, multifunction) of each function, read from the plan's XML."""
    out: dict[str, list] = defaultdict(list)
    root = etree.fromstring(render_domain(plan).encode())
    for el in root.find("devices"):
        alias, a = el.find("alias"), el.find("address")
        if alias is None or a is None:
            continue
        name = alias.get("name")[3:]
        base = name.rsplit("-f", 1)[0] if "-f" in name else name
        out[base].append((Address(int(a.get("bus"), 16), int(a.get("slot"), 16), int(a.get("function"), 16)),
                          a.get("multifunction") == "on"))
    return out


# -- the spec -----------------------------------------------------------------------------------

def test_a_host_slot_without_a_function_takes_every_function_it_names():
    p = problem_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, host: '0000:0a:00', "
                   "functions: 3}\n")
    (gpu,) = [e for e in p.endpoints if e.name == "gpu"]
    assert gpu.functions == (0, 1, 2)
    assert gpu.parts == (("gpu", "0000:0a:00.0"), ("gpu-f1", "0000:0a:00.1"), ("gpu-f2", "0000:0a:00.2"))
    assert gpu.host == "0000:0a:00.0"


def test_groups_without_a_host_get_placeholders_and_counted_names():
    p = problem_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, functions: 2, count: 2}\n"
                   "  - {name: n, model: e1000e, functions: 2}\n")
    eps = {e.name: e for e in p.endpoints}
    assert [n for n, _ in eps["gpu-0"].parts] == ["gpu-0", "gpu-0-f1"]
    assert [n for n, _ in eps["gpu-1"].parts] == ["gpu-1", "gpu-1-f1"]
    hosts = [h for e in ("gpu-0", "gpu-1") for _, h in eps[e].parts]
    assert len(set(hosts)) == 4 and all(h.endswith(f".{i % 2}") for i, h in enumerate(hosts))
    assert [h for _, h in eps["n"].parts] == [None, None]  # an emulated stand-in has no host


def test_a_hotplug_entry_of_n_functions_asks_n_positions_per_device():
    p = problem_of("name: g\nmachine: q35\nhotplug:\n  - {model: hostdev, functions: 2, count: 3}\n")
    (h,) = p.headroom
    assert (h.cls, h.count, h.functions) == (EndpointClass.HOSTDEV, 6, 2)
    plan = solve(p)
    assert plan.capacity[EndpointClass.HOSTDEV] == 6
    assert plan.added == {"pcie-root-port": 6}
    assert any("function 0 of a slot only" in n for n in plan.notes)


BAD = [
    # (spec devices/hotplug lines, line of the finding, words)
    ("devices:\n  - {model: hostdev, functions: 0}\n", 4, "devices[0].functions: 0 is out of range"),
    ("devices:\n  - {model: hostdev, functions: 9}\n", 4, "2 to 8"),
    ("devices:\n  - {model: vga, functions: 2}\n", 4, "vga cannot be a multifunction group"),
    ("devices:\n  - {model: hostdev, host: '0000:01:00'}\n", 4, "give 'functions: N'"),
    ("devices:\n  - {model: hostdev, host: '0000:01:00.1', functions: 2}\n", 4, "names one function"),
    ("devices:\n  - {model: e1000e, functions: 2, address: '0000:00:05.1'}\n", 4, "pin its function 0"),
    ("devices:\n  - {model: e1000e, functions: 2, address: '0000:00:05.0'}\n  - {model: virtio-net, address: "
     "'0000:00:05.3'}\n", 5, "taken whole by a multifunction group"),
    ("devices:\n  - {model: virtio-net, address: '0000:00:05.3'}\n  - {model: e1000e, functions: 2, address: "
     "'0000:00:05.0'}\n", 5, "taken whole by a multifunction group"),
    ("devices:\n  - {model: e1000, protect: port}\n", 4, "does not go behind a pcie-root-port"),
    ("devices:\n  - {model: virtio-net, protect: port, hotunplug: true}\n", 4, "drop 'hotunplug: true'"),
    ("devices:\n  - {model: virtio-net, protect: slot}\n", 4, "devices[0].protect"),
    ("hotplug:\n  - {model: virtio-rng, functions: 2}\n", 4, "virtio-rng cannot be a multifunction device"),
    ("devices:\n  - {name: a-f1, model: virtio-net}\n  - {name: a, model: e1000e, functions: 2}\n", 5,
     "the alias of function 1"),
]


@pytest.mark.parametrize(("body", "line", "words"), BAD, ids=[b[2] for b in BAD])
def test_bad_groups_and_protection_are_named_at_their_line(body, line, words):
    with pytest.raises(SpecError) as info:
        problem_of("name: g\nmachine: q35\n" + body)
    text = str(info.value)
    assert words in text and f":{line}:" in text, text


def test_protect_on_a_family_without_ports_names_the_line():
    with pytest.raises(SpecError) as info:
        problem_of("name: g\nmachine: pc\ndevices:\n  - {model: virtio-net}\n  - {model: e1000, protect: port}\n")
    assert ":5:" in str(info.value) and "has no ports" in str(info.value)


CLI_BAD = [
    ("name: g\nmachine: q35\ndevices:\n  - {model: hostdev, functions: 0}\n", "g.yaml:4: devices[0].functions"),
    ("name: g\nmachine: q35\ndevices:\n  - {model: hostdev, functions: 9}\n", "g.yaml:4: devices[0].functions"),
    ("name: g\nmachine: q35\ndevices:\n  - {model: virtio-rng, functions: 2}\n", "g.yaml:4: devices[0].functions"),
    ("name: g\nmachine: pseries\ndevices:\n  - {model: virtio-net, protect: port}\n", "g.yaml:4: devices[0].protect"),
    ("name: g\nmachine: pc\ndevices:\n  - {model: virtio-net, protect: port}\n", "g.yaml:4: devices[0].protect"),
    ("name: g\nmachine: q35\nhotplug:\n  - {class: pcie, functions: 1}\n", "g.yaml:4: hotplug[0].functions"),
]


@pytest.mark.parametrize(("text", "words"), CLI_BAD, ids=[f"{i}" for i in range(len(CLI_BAD))])
def test_cli_exits_2_naming_the_line(text, words, tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(text)
    with pytest.raises(SystemExit) as info:
        main([str(spec)])
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert words in err and "Traceback" not in out + err, err


# -- placement ------------------------------------------------------------------------------------

@pytest.mark.parametrize("machine,port", [("q35", "pcie-root-port"), ("virt", "pcie-root-port"),
                                          ("pc", None), ("pseries", None)])
def test_a_group_takes_one_slot_behind_one_port(machine, port, schema_valid):
    arch = "\narch: aarch64" if machine == "virt" else ""
    plan = plan_of(f"name: g\nmachine: {machine}{arch}\ndevices:\n  - {{name: gpu, model: hostdev, host: '0000:01:00', "
                   "functions: 4}\n  - {name: two, model: virtio-net, functions: 2}\n")
    schema_valid(render_domain(plan), machine)
    got = groups(plan)
    ctrls = {c.index: c for c in plan.layout.controllers}
    for name, n in (("gpu", 4), ("two", 2)):
        where = got[name]
        assert len({(a.bus, a.slot) for a, _ in where}) == 1
        assert [a.function for a, _ in where] == list(range(n))
        assert [m for _, m in where] == [True] + [False] * (n - 1)
        if port:
            assert ctrls[where[0][0].bus].model == port
    assert not verify(plan.layout, rules_for(plan.layout.family)).errors


def test_a_pinned_group_takes_its_root_slot():
    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, functions: 2, "
                   "address: '0000:00:10.0', hotunplug: false}\n")
    assert [a for a, _ in groups(plan)["gpu"]] == [Address(0, 0x10, 0), Address(0, 0x10, 1)]


def test_virt_install_gives_every_function_its_option():
    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, host: '0000:01:00', "
                   "functions: 2}\n")
    text = virt_install(plan)
    assert "0000:01:00.0,alias.name=ua-gpu," in text and "address.multifunction=on" in text
    assert "0000:01:00.1,alias.name=ua-gpu-f1," in text


def test_a_plan_read_back_keeps_its_groups_and_its_capacity():
    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, host: '0000:01:00', "
                   "functions: 2}\n  - {name: sys, model: virtio-blk, protect: port}\nhotplug:\n  - {class: pcie, "
                   "count: 3}\n")
    layout, rules = read_layout(render_domain(plan))
    report = verify(layout, rules, strict_auto=False)
    assert not report.errors
    assert report.capacity[EndpointClass.PCIE] == plan.capacity[EndpointClass.PCIE] == 3


def test_protected_and_never_unplugged_groups_sit_behind_ports_with_hotplug_off(schema_valid):
    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: sys, model: virtio-blk, protect: port}\n"
                   "  - {name: gpu, model: hostdev, functions: 2, hotunplug: false}\n"
                   "  - {name: free, model: virtio-net}\nhotplug:\n  - {class: pcie, count: 1}\n")
    xml = render_domain(plan)
    schema_valid(xml, "protected ports")
    placed = {p.endpoint.name: p.address for p in plan.layout.placed}
    ctrls = {c.index: c for c in plan.layout.controllers}
    assert not ctrls[placed["sys"].bus].hotplug and not ctrls[placed["gpu"].bus].hotplug
    assert ctrls[placed["free"].bus].hotplug  # a device that may be unplugged keeps a hotplug port
    assert xml.count('hotplug="off"') == 2
    assert plan.capacity[EndpointClass.PCIE] == 1
    assert any("hotplug='off'" in n for n in plan.notes)


# -- properties -----------------------------------------------------------------------------------

_device = st.fixed_dictionaries({
    "model": st.sampled_from(GROUPABLE), "functions": st.integers(1, 8), "count": st.integers(1, 2),
    "protect": st.booleans(), "keep": st.booleans()})


@given(family=st.sampled_from(["q35", "virt", "pc", "pseries"]), devices=st.lists(_device, min_size=1, max_size=5),
       hot=st.integers(0, 3), hot_functions=st.integers(1, 4))
def test_groups_share_one_slot_and_protected_ports_give_no_headroom(family, devices, hot, hot_functions):
    lines = [f"name: p\nmachine: {family}" + ("\narch: aarch64" if family == "virt" else ""), "devices:"]
    for i, d in enumerate(devices):
        fields = [f"name: d{i}", f"model: {d['model']}", f"count: {d['count']}"]
        if d["functions"] > 1:
            fields.append(f"functions: {d['functions']}")
        if d["protect"] and family in ("q35", "virt") and DEVICES[d["model"]].cls != EndpointClass.PCI:
            fields.append("protect: port")
        elif d["keep"]:
            fields.append("hotunplug: false")
        lines.append("  - {" + ", ".join(fields) + "}")
    if hot:
        lines.append(f"hotplug:\n  - {{class: pcie, count: {hot}, functions: {hot_functions}}}"
                     if hot_functions > 1 else f"hotplug:\n  - {{class: pcie, count: {hot}}}")
    problem = problem_of("\n".join(lines) + "\n")
    plan = solve(problem)
    rules = rules_for(plan.layout.family)
    report = verify(plan.layout, rules)
    assert not report.errors
    ctrls = {c.index: c for c in plan.layout.controllers}
    seen: set[tuple[int, int, int]] = set()
    for p in plan.layout.placed:
        ep = p.endpoint
        if p.address is None:
            continue
        for f in ep.functions:
            key = (p.address.bus, p.address.slot, p.address.function + f - ep.functions[0])
            assert key not in seen  # functions unique
            seen.add(key)
        if ep.parts:
            assert p.address.function == 0 and p.multifunction  # function 0 first, marked
            assert ep.functions == tuple(range(len(ep.parts)))
        if ep.protect:
            bus = ctrls[p.address.bus]
            assert not bus.hotplug and rules.rule_for(bus.model, bus.index).is_port
    locked = {c.index for c in plan.layout.controllers if not c.hotplug}
    assert not any(bus in locked for bus, _ in report.positions)  # never headroom
    assert report.capacity[EndpointClass.PCIE] >= hot * hot_functions
    # the XML says the same: every group on one slot, function 0 with multifunction='on'
    for name, where in groups(plan).items():
        if len(where) > 1:
            assert len({(a.bus, a.slot) for a, _ in where}) == 1, name
            assert where[0][0].function == 0 and where[0][1] and not any(m for _, m in where[1:])


def test_a_group_read_back_never_has_its_function_0_moved_alone():
    from topo_solve.existing import move_candidates

    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, functions: 2, "
                   "address: '0000:00:1e.0', hotunplug: false}\n  - {name: n, model: virtio-net, "
                   "address: '0000:00:1d.0', hotunplug: false}\n")
    layout, rules = read_layout(render_domain(plan))
    moved = {e.name for e in move_candidates(layout, rules)}
    assert "n" in moved and not moved & {"gpu", "gpu-f1"}


def test_the_forms_show_groups_and_protected_ports(tmp_path, capsys):
    import json

    spec = tmp_path / "g.yaml"
    spec.write_text("name: g\nmachine: q35\ndevices:\n  - {name: gpu, model: hostdev, functions: 2}\n"
                    "  - {name: sys, model: virtio-net, protect: port}\n")
    outs = {}
    for emit in ("json", "tree"):
        with pytest.raises(SystemExit) as info:
            main([str(spec), "--emit", emit, "-q"])
        assert info.value.code in (0, None)
        outs[emit] = capsys.readouterr().out
    data = json.loads(outs["json"])
    gpu = [d for d in data["devices"] if d["name"].startswith("gpu")]
    assert [(d["name"], d["address"][-1], d.get("multifunction")) for d in gpu] == [("gpu", "0", True),
                                                                                    ("gpu-f1", "1", None)]
    sys_bus = int(next(d for d in data["devices"] if d["name"] == "sys")["address"].split(":")[1], 16)
    assert next(c for c in data["controllers"] if c["index"] == sys_bus)["hotplug"] is False
    assert "gpu (hostdev, 2 functions)" in outs["tree"] and "(hotplug off)" in outs["tree"]


def test_the_verifier_refuses_a_protected_device_on_a_port_that_hotplugs():
    from dataclasses import replace

    plan = plan_of("name: g\nmachine: q35\ndevices:\n  - {name: sys, model: virtio-net, protect: port}\n")
    rules = rules_for("q35")
    assert not verify(plan.layout, rules).errors
    opened = tuple(replace(c, hotplug=True) for c in plan.layout.controllers)
    errors = verify(replace(plan.layout, controllers=opened), rules).errors
    assert any("sys is protected" in e for e in errors), errors


def test_the_readme_gpu_example_prints_what_the_readme_shows(tmp_path, capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    part = text[text.index("A GPU passthrough guest, step by step."):]
    spec_text, summary, tree = re.findall(r"```(?:yaml)?\n(.*?)```", part, re.S)[:3]
    spec = tmp_path / "gpu-vm.yaml"
    spec.write_text(spec_text)
    with pytest.raises(SystemExit) as info:
        main([str(spec), "-o", str(tmp_path / "gpu-vm.xml")])
    assert info.value.code in (0, None)
    out, err = capsys.readouterr()
    assert (out + err).strip().splitlines() == summary.strip().splitlines()
    with pytest.raises(SystemExit):
        main([str(spec), "--emit", "tree", "-q"])
    assert capsys.readouterr().out.strip() == tree.strip()
    xml = (tmp_path / "gpu-vm.xml").read_text()
    assert 'alias name="ua-gpu-f1"' in xml and 'multifunction="on"' in xml
