"""Issue 15 without a libvirt: the forms of a plan, the picture, attach on a file, the Nova helper.

What libvirt, virt-install and virt-xml make of these forms is tests/test_libvirt_live.py's;
here: each form says exactly what the plan says (every controller with its index, address and
target; every device with its address), the positions attach picks follow its rules (libvirt's
order, a NUMA node's positions for that node's devices only, the next acpi index), and bad
input is one clear message with exit code 2.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest
from lxml import etree

from topo_solve.attach import next_acpi_index
from topo_solve.cli import main
from topo_solve.domain.read import read_layout
from topo_solve.emit.picture import dot, rows, svg
from topo_solve.emit.stack import controller_options, virt_install
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.spec import load_request
from topo_solve.verify import verify

from .live_support import command_words

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "domain:" not in p.read_text())
WEB02 = ROOT / "specs" / "domains" / "web-02.xml"
WEB03 = ROOT / "specs" / "domains" / "web-03.xml"

NUMA = """\
name: numa
machine: q35
vcpus: 2
memory: 512
numa: {nodes: 2}
defaults: {usb: false, memballoon: false}
devices:
  - {name: nic, model: virtio-net}
  - {name: nic1, model: virtio-net, numa_node: 1}
hotplug:
  - {class: pcie, count: 2}
  - {class: pcie, count: 2, numa_node: 0}
  - {class: pci, count: 1, numa_node: 1}
"""


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def numa_xml(tmp_path, capsys) -> Path:
    spec = tmp_path / "numa.yaml"
    spec.write_text(NUMA)
    code, out, _ = run([spec, "-q"], capsys)
    assert code == 0
    path = tmp_path / "numa.xml"
    path.write_text(out)
    return path


# -- virt-install ----------------------------------------------------------------------------------

def _options(words: list[str]) -> list[tuple[str, str]]:
    out, i = [], 1
    while i < len(words):
        out.append((words[i], words[i + 1]))
        i += 2
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_virt_install_options_say_what_the_plan_says(spec):
    plan = solve(load_request(spec))
    text = virt_install(plan)
    assert text.startswith("# ")
    words = command_words(text)
    assert words[0] == "virt-install"
    opts = _options(words)
    controllers = [v for o, v in opts if o == "--controller" and v.startswith("type=pci,")]
    assert controllers == [controller_options(c) for c in plan.layout.controllers]
    for c in plan.layout.controllers:
        own = dict(kv.split("=", 1) for kv in controller_options(c).split(","))
        assert own["index"] == str(c.index) and own["model"] == c.model
        if c.address is not None:
            assert int(own["address.bus"], 16) == c.address.bus and int(own["address.slot"], 16) == c.address.slot
        for attr, value in c.target:
            assert int(own[f"target.{attr}"], 0) == value
    for p in plan.layout.placed:  # every device once, at its address, by its alias
        (value,) = [v for _, v in opts if f"alias.name=ua-{p.endpoint.name}," in v + ","]
        fields = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
        assert (int(fields["address.bus"], 16), int(fields["address.slot"], 16),
                int(fields["address.function"], 16)) == (p.address.bus, p.address.slot, p.address.function)
    present = {device_element for device_element in (o for o, _ in opts)}
    assert ("--channel", "none") in opts and ("--graphics", "none") in opts
    assert (("--memballoon", "none") in opts) == (not any(p.endpoint.kind.startswith("virtio-balloon")
                                                          for p in plan.layout.placed))
    assert (("--disk", "none") in opts) == ("--disk" not in {o for o, v in opts if v != "none"})
    assert "--name" in present and dict(opts)["--name"] == plan.problem.name


def test_virt_install_spells_numa_cells_and_expanders(tmp_path):
    spec = tmp_path / "numa.yaml"
    spec.write_text(NUMA)
    plan = solve(load_request(spec))
    opts = _options(command_words(virt_install(plan)))
    cpu = dict(opts)["--cpu"]
    assert cpu == ("numa.cell0.id=0,numa.cell0.cpus=0,numa.cell0.memory=262144,"
                   "numa.cell1.id=1,numa.cell1.cpus=1,numa.cell1.memory=262144")
    pxb = [v for o, v in opts if "model=pcie-expander-bus" in v]
    assert len(pxb) == 2 and all("target.busNr=" in v and "target.node=" in v for v in pxb)


def test_a_transitional_disk_gets_its_model_through_an_xml_edit(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\nmachine: q35\ndevices:\n  - {name: a, model: virtio-blk}\n"
                    "  - {name: b, model: virtio-blk-transitional}\n")
    opts = _options(command_words(virt_install(solve(load_request(spec)))))
    assert ("--xml", "./devices/disk[2]/@model=virtio-transitional") in opts


# -- virt-xml and attach-device files for an extension --------------------------------------------

def test_virt_xml_lines_add_each_new_controller(capsys, tmp_path):
    code, out, _ = run(["extend", WEB02, "--hotplug", "virtio-net=5", "--hotplug", "e1000=3", "--emit", "json", "-q"],
                       capsys)
    report = json.loads(out)
    code, out, err = run(["extend", WEB02, "--hotplug", "virtio-net=5", "--hotplug", "e1000=3", "--emit", "virt-xml"],
                         capsys)
    assert code == 0 and "added 4 pcie-root-port" in err
    lines = out.splitlines()
    assert len(lines) == len(report["added"]) == 4
    for line, added in zip(lines, report["added"]):
        words = shlex.split(line)
        assert words[:4] == ["virt-xml", "web-02", "--add-device", "--controller"]
        fields = dict(kv.split("=", 1) for kv in words[4].split(","))
        assert (fields["index"], fields["model"]) == (str(added["index"]), added["model"])
        assert "0000:{:02x}:{:02x}.{}".format(int(fields["address.bus"], 16), int(fields["address.slot"], 16),
                                               int(fields["address.function"], 16)) == added["address"]


def test_virt_xml_quotes_a_guest_name_for_the_shell(tmp_path, capsys):
    doc = tmp_path / "spaced.xml"
    doc.write_text(WEB02.read_text().replace("<name>web-02</name>", "<name>web 02's</name>"))
    code, out, _ = run(["extend", doc, "--hotplug", "virtio-net=2", "--emit", "virt-xml", "-q"], capsys)
    assert code == 0
    assert shlex.split(out.splitlines()[0])[1] == "web 02's"


def test_attach_files_one_per_controller(tmp_path, capsys):
    folder = tmp_path / "ctl"
    argv = ["extend", WEB02, "--hotplug", "virtio-net=3", "--emit", "attach", "-o", folder, "-q"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["controller-009-pcie-root-port.xml", "controller-010-pcie-root-port.xml"]
    assert out.splitlines() == [f"virsh attach-device web-02 {f} --config" for f in files]
    el = etree.parse(str(files[0])).getroot()
    assert (el.tag, el.get("index"), el.find("address").get("slot")) == ("controller", "9", "0x02")
    code, _, err = run(argv, capsys)  # never overwritten without --force
    assert code == 2 and "exists; pass --force" in err
    code, _, err = run(argv[:-3] + ["-q"], capsys)
    assert code == 2 and "-o DIR" in err


@pytest.mark.parametrize("emit", ["virt-xml", "attach"])
def test_forms_of_an_extension_need_a_defined_guest(emit, capsys, tmp_path):
    code, _, err = run(["plan", WEB03, "--hotplug", "virtio-net=2", "--emit", emit, "-o", tmp_path / "x"], capsys)
    assert code == 2
    (line,) = err.splitlines()
    assert "without an address" in line and "--emit domain" in line


def test_spec_forms_and_domain_forms_are_not_mixed(capsys):
    code, _, err = run([ROOT / "specs" / "q35-web.yaml", "--emit", "virt-xml"], capsys)
    assert code == 2 and "--emit virt-install for a new guest" in err
    code, _, err = run(["plan", WEB02, "--emit", "virt-install"], capsys)
    assert code == 2 and "is for specs" in err


# -- the picture -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS + ["numa"], ids=lambda p: getattr(p, "stem", p))
def test_svg_draws_every_controller_device_and_free_position(spec, tmp_path):
    if spec == "numa":
        spec = tmp_path / "numa.yaml"
        spec.write_text(NUMA)
    plan = solve(load_request(spec))
    rules = FAMILIES[plan.layout.family]
    report = verify(plan.layout, rules, strict_auto=False)
    root = etree.fromstring(svg(plan.layout, rules, plan.problem.name).encode())
    ns = {"s": "http://www.w3.org/2000/svg"}
    texts = ["".join(t.itertext()) for t in root.iterfind(".//s:text", ns)]
    for c in plan.layout.controllers:
        (g,) = root.findall(f".//s:g[@id='c{c.index}']", ns)
        assert "".join(g.find("s:text", ns).itertext()) == f"{c.index} {c.model}"
    for p in plan.layout.placed:
        assert f"{p.endpoint.name} ({p.endpoint.kind})" in texts
    drawn = 0  # every free position: a port's as "free: CLASSES", a bus's as "N free slots: CLASSES"
    for g in root.iterfind(".//s:g", ns):
        if g.get("class", "").startswith("free"):
            label = "".join(g.find("s:text", ns).itertext())
            m = re.fullmatch(r"(?:(\d+) free slots?|free|empty bus): [a-z, ]+", label)
            drawn += (int(m.group(1)) if m.group(1) else 0 if "empty bus" in m.group(0) else 1)
    assert drawn == len(report.positions)
    assert sum(t.startswith("empty bus: ") for t in texts) == len(report.empty_isolated)
    for node, cap in report.node_capacity.items():
        assert any(t.startswith(f"NUMA node {node}: pcie {cap[list(cap)[0]]}") for t in texts)


def test_dot_has_a_node_per_row_and_an_edge_per_child(tmp_path):
    spec = tmp_path / "numa.yaml"
    spec.write_text(NUMA)
    plan = solve(load_request(spec))
    rules = FAMILIES["q35"]
    text = dot(plan.layout, rules, "numa")
    rs = rows(plan.layout, rules)
    assert text.count("{") == text.count("}")
    assert len(re.findall(r'^  "[^"]+" \[label=', text, re.M)) == len(rs)
    assert len(re.findall(r'^  "[^"]+" -> "[^"]+";$', text, re.M)) == sum(1 for r in rs if r.parent is not None)
    assert text.count("subgraph cluster_numa") == 2


def test_emit_svg_on_every_command(tmp_path, capsys):
    for argv in ([ROOT / "specs" / "q35-web.yaml", "--emit", "svg", "-q"], ["audit", WEB02, "--emit", "svg"],
                 ["extend", WEB02, "--hotplug", "virtio-net=3", "--emit", "svg", "-q"]):
        code, out, _ = run(argv, capsys)
        assert code == 0 and out.startswith("<svg ")
        etree.fromstring(out.encode())
    code, out, _ = run(["extend", WEB02, "--hotplug", "virtio-net=3", "--emit", "svg", "-q"], capsys)
    root = etree.fromstring(out.encode())
    added = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("id") in ("c9", "c10")]
    assert [g.find("{http://www.w3.org/2000/svg}rect").get("stroke-width") for g in added] == ["3", "3"]


# -- attach on a domain XML file -----------------------------------------------------------------------

def _xml_of(out: str) -> etree._Element:
    return etree.fromstring(out.encode())


def test_attach_takes_a_node_position_only_for_the_nodes_device(numa_xml, capsys):
    layout, rules = read_layout(numa_xml.read_bytes())
    report = verify(layout, rules, strict_auto=False)
    for node in (None, 0, 1):
        for model in ("virtio-net", "e1000"):
            argv = ["attach", numa_xml, "--model", model] + (["--node", str(node)] if node is not None else [])
            code, out, err = run(argv, capsys)
            cls = "pcie" if model == "virtio-net" else "pci"
            wanted = sorted((b, s) for (b, s), cs in report.positions.items()
                            if cls in map(str, cs) and report.node_of.get(b) == node)
            if not wanted:
                assert code == 1 and "no free position left" in err, (node, model, err)
                continue
            assert code == 0, err
            a = _xml_of(out).find("address")
            assert (int(a.get("bus"), 16), int(a.get("slot"), 16)) == wanted[0]  # libvirt's order: the first
            assert report.node_of.get(int(a.get("bus"), 16)) == node


def test_attach_refuses_what_it_cannot_do(numa_xml, capsys):
    for argv, words in (
            (["attach", numa_xml, "--model", "virtio-net", "--node", "5"], "NUMA nodes 0-1, not 5"),
            (["attach", WEB02, "--model", "virtio-net", "--node", "0"], "has no NUMA nodes"),
            (["attach", numa_xml, "--model", "hostdev"], "--host ADDRESS"),
            (["attach", numa_xml, "--model", "qemu-xhci"], "cannot hotplug a qemu-xhci"),
            (["attach", numa_xml, "--model", "virtio-nett"], "did you mean 'virtio-net'"),
            (["attach", numa_xml], "--model MODEL or --device FILE"),
            (["attach", numa_xml, "--model", "virtio-net", "--live"], "is a file"),
            (["audit"], "give domain XML files"),
            (["audit", WEB02, "--all"], "either --all or guest names"),
            (["extend", WEB02, "--hotplug", "pcie=1", "--apply"], "--apply defines a guest of a libvirt")):
        code, _, err = run(argv, capsys)
        assert code == 2, (argv, err)
        (line,) = err.splitlines()
        assert line.startswith("error: ") and words in line, (argv, line)


def test_attach_with_a_device_of_your_own(numa_xml, tmp_path, capsys):
    dev = tmp_path / "nic.xml"
    dev.write_text("<interface type='network'><source network='default'/><model type='virtio'/>"
                   "<address type='pci' domain='0' bus='9' slot='9' function='0'/></interface>")
    code, out, err = run(["attach", numa_xml, "--device", dev, "--node", "0"], capsys)
    assert code == 0, err
    el = _xml_of(out)
    assert el.find("source").get("network") == "default"  # the user's device, with the planned address
    assert len(el.findall("address")) == 1 and el.find("address").get("bus") != "9"
    dev.write_text("<input type='tablet' bus='usb'/>")
    code, _, err = run(["attach", numa_xml, "--device", dev], capsys)
    assert code == 2 and "takes no PCI slot" in err


def test_the_next_acpi_index_counts_live_and_definition():
    live = etree.fromstring(b"<domain><devices><interface><acpi index='1'/></interface>"
                            b"<interface><acpi index='4'/></interface></devices></domain>")
    config = etree.fromstring(b"<domain><devices><interface><acpi index='7'/></interface></devices></domain>")
    plain = etree.fromstring(b"<domain><devices><interface/></devices></domain>")
    assert next_acpi_index(live, config) == 8
    assert next_acpi_index(live) == 5
    assert next_acpi_index(plain) is None


def test_a_full_guest_is_exit_1_in_one_line(tmp_path, capsys):
    full = tmp_path / "full.xml"
    code, out, _ = run([ROOT / "specs" / "domains" / "web-02.xml", "--hotplug", "pcie=1", "-q"], capsys)
    text = WEB02.read_text()
    full.write_text(text.replace("</devices>", "<interface type='user'><model type='virtio'/><address type='pci' "
                                 "domain='0x0000' bus='0x08' slot='0x00' function='0x0'/></interface></devices>"))
    code, _, err = run(["attach", full, "--model", "virtio-net"], capsys)
    assert code == 1
    (line,) = err.splitlines()
    assert line == ("error: " + str(full) + " has no free position left for virtio-net (pcie): its pcie hotplug "
                    "capacity is used up")


# -- audit's empty ports ---------------------------------------------------------------------------------

def test_audit_counts_empty_ports_and_their_memory(capsys):
    code, out, _ = run(["audit", WEB02, "--emit", "json"], capsys)
    record = json.loads(out)
    assert (record["empty_ports"], record["empty_port_memory_kb"]) == (1, 700)


# -- Nova --------------------------------------------------------------------------------------------------

def test_nova_takes_the_largest_need(tmp_path, capsys):
    f = tmp_path / "flavors.yaml"
    f.write_text(textwrap.dedent("""\
        machine: q35
        flavors:
          small: {devices: {virtio-blk: 1, virtio-net: 1}, headroom: {virtio-net: 2}}
          big:
            devices: {virtio-blk: 2, virtio-net: 3, hostdev: 1}
            headroom: {hostdev: 2, pcie: 3}
            defaults: {usb: false, memballoon: false}
          old: {devices: {e1000: 2, virtio-blk: 1}, headroom: {pci: 5}}
    """))
    code, out, err = run(["nova", f, "--emit", "json"], capsys)
    assert code == 0, err
    answer = json.loads(out)
    ports = {x["flavor"]: x["ports"] for x in answer["flavors"]}
    # small: disk, NIC, usb and balloon (libvirt's own) + 2; big: 6 devices + 5; old: disk, usb, balloon + 0
    assert ports == {"small": 6, "big": 11, "old": 3}
    assert answer["num_pcie_ports"] == 11 and answer["warnings"] == []
    old = next(x for x in answer["flavors"] if x["flavor"] == "old")
    assert (old["bridges"], old["pci_room"]) == (1, 29)


def test_nova_says_what_no_value_can_do(tmp_path, capsys):
    f = tmp_path / "flavors.yaml"
    f.write_text("flavors:\n  a: {devices: {virtio-net: 1}, headroom: {e1000: 1}}\n"
                 "  b: {devices: {virtio-net: 1}, headroom: {virtio-net: 20}}\n")
    code, out, err = run(["nova", f], capsys)
    assert code == 1
    assert "error: flavor a: 1 conventional PCI hotplug(s) need free slots of a pcie-to-pci-bridge" in err
    assert "num_pcie_ports =" not in out
    f.write_text("flavors:\n  b: {devices: {virtio-net: 1}, headroom: {virtio-net: 20}}\n")
    code, out, err = run(["nova", f], capsys)
    assert code == 0 and "num_pcie_ports = 23" in out
    assert "warning: num_pcie_ports 23 is past 12" in err


def test_nova_file_errors_name_the_line(tmp_path, capsys):
    f = tmp_path / "flavors.yaml"
    f.write_text("machine: q35\nflavors:\n  a:\n    devices: {virtio-nett: 1}\n    headroom: {pcie: two}\n")
    code, _, err = run(["nova", f], capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {f}:4: flavors.a.devices.virtio-nett:") and "virtio-net" in lines[0]
    assert lines[1].startswith(f"error: {f}:5: flavors.a.headroom.pcie: count 'two'")
    f.write_text("machine: pc\nflavors: {a: {devices: {virtio-net: 1}}}\n")
    code, _, err = run(["nova", f], capsys)
    assert code == 2 and "num_pcie_ports applies to q35 and virt" in err


def test_a_pseries_host_device_takes_an_empty_phb_of_its_own(tmp_path, capsys):
    code, out, _ = run([ROOT / "specs" / "pseries-hpc.yaml", "-q"], capsys)
    guest = tmp_path / "ppc.xml"
    guest.write_text(out)
    layout, rules = read_layout(out.encode())
    report = verify(layout, rules, strict_auto=False)
    code, out, err = run(["attach", guest, "--model", "hostdev", "--host", "0000:41:00.0"], capsys)
    assert code == 0, err
    a = _xml_of(out).find("address")
    bus = int(a.get("bus"), 16)
    assert bus == min(report.empty_isolated) and int(a.get("slot"), 16) == 1  # slot 0 of a PHB is never used
    code, out, _ = run(["attach", guest, "--model", "virtio-net"], capsys)
    assert int(_xml_of(out).find("address").get("bus"), 16) == 0  # emulated devices: the default PHB first


def test_attach_checks_what_it_is_given(capsys):
    for argv, words in (
            (["attach", WEB02, "--model", "hostdev", "--host", "0000:zz:00.0"], "is not a PCI address"),
            (["attach", WEB02, "--model", "e1000", "--host", "0000:01:00.0"], "e1000 devices have none"),
            (["attach", WEB02, "--model", "e1000", "--name", "9lives"], "an alias is a letter")):
        code, _, err = run(argv, capsys)
        assert code == 2 and words in err, (argv, err)
