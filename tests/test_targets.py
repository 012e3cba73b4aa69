"""Targets: which libvirt and QEMU a plan is for, and how the rule tables select their rows.

No real libvirt here (tests/test_judges.py measures every versioned row on both judges): the
target's forms and their errors, the views rules_for gives, a spec's ``target`` and ``--target``
on every command that plans or audits, and the promises of issue 13 at the command line (a spec
with igb for QEMU 7.2 exits 2 with the reason; virtio-serial headroom plans for 11.3 and is
refused for 9.0, from a spec, a domain XML and --hotplug).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from topo_solve.domain.read import read_domain
from topo_solve.errors import SpecError
from topo_solve.model import Target
from topo_solve.rules import FAMILIES, TABLES, rules_for, version_facts
from topo_solve.rules.versions import ALIASES, NEWEST, OLDEST, parse_target, target_from
from topo_solve.solve import solve
from topo_solve.spec import json_schema, load_spec, parse_spec, to_problem

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
D12, D13 = parse_target("debian-12"), parse_target("debian-13")


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topo_solve", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


# -- the forms of a target -------------------------------------------------------------------------

def test_aliases_name_their_versions_and_a_source():
    assert ALIASES["debian-12"].target == Target((9, 0), (7, 2))
    assert ALIASES["debian-13"].target == Target((11, 3), (10, 0))
    for a in ALIASES.values():
        assert a.source.strip() and re.search(r"\d+\.\d+", a.source), a.name
        assert a.libvirt >= OLDEST.libvirt and a.qemu >= OLDEST.qemu, a.name
    # the two judges are the measured ones, and the default is the newest of them
    assert {a.name for a in ALIASES.values() if a.measured} == {"debian-12", "debian-13"}
    assert NEWEST == ALIASES["debian-13"].target and OLDEST == ALIASES["debian-12"].target


@pytest.mark.parametrize("text, versions", [
    ("debian-12", ((9, 0), (7, 2))), ("Ubuntu-24.04", ((10, 0), (8, 2))), ("libvirt=10.6,qemu=9.1", ((10, 6), (9, 1))),
    ("libvirt=11.3.0, qemu=10.0.13", ((11, 3), (10, 0))), ("qemu=8.0,libvirt=9.0", ((9, 0), (8, 0))),
])
def test_a_target_is_an_alias_or_two_versions(text, versions):
    t = parse_target(text)
    assert (t.libvirt, t.qemu) == versions


@pytest.mark.parametrize("text, message", [
    ("debain-12", "unknown target 'debain-12'; did you mean 'debian-12'?"),
    ("libvirt=9.0", "give both libvirt and qemu (missing: qemu)"),
    ("libvirt=nine,qemu=7.2", "'nine' is not a libvirt version; write MAJOR.MINOR"),
    ("libvirt=8.0,qemu=6.2", "the rule tables start at libvirt 9.0 + QEMU 7.2 (the oldest judge, measured); "
                             "libvirt 8.0 + QEMU 6.2 is older"),
    ("libvirt=9.0,qemu=7.2,xen=4", "unknown key(s) xen"),
])
def test_a_wrong_target_says_what_is_accepted(text, message):
    with pytest.raises(ValueError) as info:
        parse_target(text)
    assert message in str(info.value)


def test_a_version_written_as_a_yaml_number_is_refused():
    with pytest.raises(ValueError, match=r"drops a trailing zero \(10\.10 reads as 10\.1\)"):
        target_from({"libvirt": 10.1, "qemu": "9.1"})


# -- the views --------------------------------------------------------------------------------------

def test_the_views_of_the_two_judges_differ_where_the_judges_do():
    old, new = rules_for("q35", D12), rules_for("q35", D13)
    assert old.device("igb").missing == "igb needs QEMU 8.0 or later; the target is QEMU 7.2"
    assert new.device("igb").missing == ""
    assert not old.device("virtio-serial").hotplug and new.device("virtio-serial").hotplug
    assert not new.device("virtio-serial").detach  # never unplugged, on either
    assert "itco-watchdog" not in [i.kind for i in old.added_at_define]
    assert "itco-watchdog" in [i.kind for i in new.added_at_define]
    assert old.device("virtio-sound").missing.startswith("a virtio sound card needs libvirt 10.4 or later and QEMU "
                                                         "8.2 or later; the target is libvirt 9.0 + QEMU 7.2")
    for name in ("nvme-disk", "nvme"):
        assert "needs libvirt 11.5" in old.device(name).missing and "needs libvirt 11.5" in new.device(name).missing
    # from 11.5 on it exists, but where libvirt puts its controller was never measured: no plan
    assert "cannot plan around one" in rules_for("q35", parse_target("fedora-43")).device("nvme-disk").missing
    # the buses and the planner's own rows are the same in every version the tables know
    assert old.buses.keys() == new.buses.keys() == TABLES["q35"].buses.keys()


def test_a_version_between_two_measurements_is_not_promised():
    """virtio-serial hotplug: 9.0 refuses, 11.3 accepts, nothing between was measured."""
    between = rules_for("q35", parse_target("ubuntu-24.04"))
    assert not between.device("virtio-serial").hotplug
    assert "9.0 does not, 11.3 does; the versions between are not known" in between.device("virtio-serial").hotplug_why


def test_defaults_follow_the_version():
    assert rules_for("virt", D13).element_defaults["scsi @model"] == "lsilogic"
    assert rules_for("virt", parse_target("fedora-43")).element_defaults["scsi @model"] == "virtio-scsi"
    assert rules_for("virt", D12).element_defaults["panic @model"] == "isa"
    assert rules_for("virt", D13).element_defaults["panic @model"] == "pvpanic"
    between = rules_for("virt", parse_target("ubuntu-24.04"))
    assert "panic @model" not in between.element_defaults and "panic @model" in between.undecided
    later = rules_for("q35", parse_target("libvirt=12.0,qemu=10.1"))
    assert "usb @model" in later.undecided
    assert [i.kind for i in later.added_at_define if i.unknown] == ["qemu-xhci"]


def test_the_default_view_is_the_newest_known():
    for family in TABLES:
        assert FAMILIES[family] is rules_for(family) is rules_for(family, NEWEST)
        assert rules_for(family).target == NEWEST


def test_every_versioned_row_names_its_sources():
    facts = version_facts()
    assert len({f.key for f in facts}) == len(facts)
    kinds = {f.kind for f in facts}
    assert {"device", "hotplug", "implicit", "default"} <= kinds
    for f in facts:
        assert f.versions.sources(), f.key
        assert f.versions.describe() != "every version", f.key


def test_no_version_is_compared_outside_the_tables():
    """Rules as data: only the selection (rules.rules_for, rules/versions.py) compares versions; the
    solver, placer, verifier and domain code never look at one."""
    allowed = {"rules/versions.py", "rules/__init__.py", "model.py", "hypervisor.py"}
    pattern = re.compile(r"\.(libvirt|qemu)\b(?!\s*=)|\.version\(|\.holds\(|\bNEWEST\.|\bOLDEST\.")
    for path in sorted((REPO / "solver").rglob("*.py")):
        rel = path.relative_to(REPO / "solver").as_posix()
        if rel in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and not (rel == "cli.py" and "Target(tuple(v.libvirt" in code):
                pytest.fail(f"solver/{rel}:{n} looks at a version outside the tables: {line.strip()}")


# -- a spec's target ---------------------------------------------------------------------------------

IGB = ("name: igb\nmachine: q35\n{target}devices:\n  - {{name: nic, model: igb}}\nhotplug:\n"
       "  - {{model: igb, count: 2}}\n")


def _problem(text: str, target: Target | None = None):
    spec, lines = parse_spec(text, "t.yaml")
    return to_problem(spec, lines, "t.yaml", target=target)


def test_a_spec_names_its_target_and_the_default_is_the_newest():
    assert _problem(IGB.format(target="")).target == NEWEST
    p = _problem(IGB.format(target="target: {libvirt: \"11.3\", qemu: \"10.0\"}\n"))
    assert p.target == D13 and p.target.origin == "t.yaml"
    assert _problem(IGB.format(target="target: fedora-42\n")).target.alias == "fedora-42"


def test_igb_for_qemu_7_2_is_one_error_per_entry_with_its_line():
    with pytest.raises(SpecError) as info:
        _problem(IGB.format(target="target: debian-12\n"))
    assert [str(p) for p in info.value.problems] == [
        "t.yaml:5: devices[0].model: igb needs QEMU 8.0 or later; the target is QEMU 7.2",
        "t.yaml:7: hotplug[0].model: igb needs QEMU 8.0 or later; the target is QEMU 7.2"]
    # --target wins over the spec's own
    assert _problem(IGB.format(target="target: debian-12\n"), target=D13).target == D13
    with pytest.raises(SpecError):
        _problem(IGB.format(target="target: debian-13\n"), target=D12)


@pytest.mark.parametrize("target, line", [
    ("debian-11", "t.yaml:3: target: unknown target 'debian-11'"),
    ("{libvirt: 10.10, qemu: \"9.1\"}", "t.yaml:3: target: libvirt version 10.1 is written as a number"),
    ("[9, 7]", "t.yaml:3: target: "),
    ("{libvirt: \"8.0\", qemu: \"6.2\"}", "t.yaml:3: target: the rule tables start at libvirt 9.0 + QEMU 7.2"),
])
def test_a_wrong_target_in_a_spec_is_reported_at_its_line(target, line):
    with pytest.raises(SpecError) as info:
        _problem(IGB.format(target=f"target: {target}\n"))
    assert any(str(p).startswith(line) for p in info.value.problems), info.value.problems


def test_the_schema_documents_the_target():
    prop = json_schema()["properties"]["target"]
    assert "debian-12" in prop["description"]


def test_every_example_states_its_target_or_the_default():
    """Each example in specs/ says what it plans for: a 'target' line, or a comment that it uses
    the default (the newest versions the tables know)."""
    for path in sorted(SPECS.rglob("*.yaml")):
        text = path.read_text()
        if re.search(r"^flavors:", text, re.M):
            continue  # a flavors file of `topo-solve nova` (Nova's num_pcie_ports), not a spec
        assert re.search(r"^target: ", text, re.M) or re.search(r"^# target: .*default", text, re.M), path


# -- the command line -------------------------------------------------------------------------------

def test_cli_igb_for_qemu_7_2_exits_2_with_the_reason_and_plans_for_qemu_10(tmp_path):
    spec = tmp_path / "igb.yaml"
    spec.write_text(IGB.format(target="target: debian-12\n"))
    r = cli(str(spec))
    assert r.returncode == 2 and r.stdout == ""
    assert f"error: {spec}:5: devices[0].model: igb needs QEMU 8.0 or later; the target is QEMU 7.2" in \
        r.stderr.splitlines()
    r = cli(str(spec), "--target", "debian-13", "--emit", "json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["target"] == {"libvirt": "11.3", "qemu": "10.0", "alias": "debian-13", "origin": "--target"}
    assert plan["capacity"]["pcie"] >= 2
    assert "  target: libvirt 11.3 + QEMU 10.0 (debian-13, --target)" in r.stderr.splitlines()


def test_cli_virtio_serial_headroom_plans_for_11_3_and_is_refused_for_9_0(tmp_path):
    spec = tmp_path / "vs.yaml"
    spec.write_text("name: vs\nmachine: q35\nhotplug:\n  - {model: virtio-serial, count: 1}\n")
    r = cli(str(spec), "-q", "--target", "libvirt=11.3,qemu=10.0")
    assert r.returncode == 0, r.stderr
    r = cli(str(spec), "--target", "debian-12")
    assert r.returncode == 2
    assert (f"error: {spec}:4: hotplug[0].model: hotplugging a virtio-serial controller needs libvirt 11.3 or later "
            "(9.0 does not, 11.3 does; the versions between are not known); the target is libvirt 9.0") in r.stderr
    # the same for a domain XML and --hotplug: the option is named
    r = cli("plan", "specs/domains/web-03.xml", "--hotplug", "virtio-serial=1", "--target", "debian-12")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: topo-solve: --hotplug virtio-serial=1: hotplugging a virtio-serial "
                               "controller needs libvirt 11.3"), r.stderr
    r = cli("plan", "specs/domains/web-03.xml", "--hotplug", "virtio-serial=1", "-q", "--emit", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["target"]["origin"] == "default: newest known"


def test_a_domain_xml_element_the_target_lacks_is_reported_at_its_line():
    xml = ("<domain type='kvm'>\n<name>g</name>\n<os><type arch='x86_64' machine='q35'>hvm</type></os>\n"
           "<devices>\n<interface type='user'><model type='igb'/></interface>\n"
           "<crypto model='virtio' type='qemu'><backend model='builtin'/></crypto>\n</devices>\n</domain>\n")
    with pytest.raises(SpecError) as info:
        read_domain(xml, "g.xml", D12)
    assert [str(p) for p in info.value.problems] == [
        "g.xml:5: interface: igb needs QEMU 8.0 or later; the target is QEMU 7.2",
        "g.xml:6: crypto: a virtio-crypto device needs libvirt 9.1 or later; the target is libvirt 9.0"]
    # the newest known target has both: the crypto device takes a conventional PCI slot
    domain = read_domain(xml, "g.xml")
    assert {d.endpoint.kind for d in domain.devices if not d.implicit} == {"igb", "virtio-crypto"}


def test_a_default_the_tables_do_not_know_for_the_target_must_be_written_out():
    xml = ("<domain type='kvm'><name>g</name><os><type arch='aarch64' machine='virt'>hvm</type></os>\n"
           "<devices>\n<panic/>\n</devices></domain>\n")
    with pytest.raises(SpecError) as info:
        read_domain(xml, "g.xml", parse_target("ubuntu-24.04"))
    (p,) = info.value.problems
    assert str(p).startswith("g.xml:3: panic: <panic> without model: the tables do not know what libvirt 10.0 + "
                             "QEMU 8.2 fills in for it"), str(p)
    assert str(p).endswith("; write the model out")
    # 11.3 fills in pvpanic, the PCI one on the root bus
    (panic,) = [d for d in read_domain(xml, "g.xml", D13).devices if d.element is not None and d.element.tag == "panic"]
    assert panic.endpoint.kind == "pvpanic-pci" and panic.endpoint.integrated


@pytest.mark.parametrize("args", [
    ("specs/q35-web.yaml",),
    ("plan", "specs/domains/web-03.xml", "--hotplug", "pcie=1"),
    ("extend", "specs/domains/web-02.xml", "--hotplug", "pcie=2"),
    ("audit", "specs/domains/web-02.xml"),
])
def test_every_planning_command_takes_target_and_says_it(args, tmp_path):
    r = cli(*args, "--target", "ubuntu-24.04", "-o", str(tmp_path / "out.xml")) if args[0] != "audit" else \
        cli(*args, "--target", "ubuntu-24.04")
    assert r.returncode == 0, r.stderr
    assert "  target: libvirt 10.0 + QEMU 8.2 (ubuntu-24.04, --target)" in (r.stdout + r.stderr).splitlines()
    r = cli(*args, "--target", "debian-11")
    assert r.returncode == 2
    assert "error: topo-solve: --target debian-11: unknown target 'debian-11'" in r.stderr


def test_batch_takes_target_and_counts_the_specs_per_target(tmp_path):
    r = cli("batch", "specs/", "-o", str(tmp_path / "out"), "-j", "1", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("target"))
    stated = {"libvirt 9.0 + QEMU 7.2": 2, "libvirt 11.3 + QEMU 10.0": 3}  # see the specs' target lines
    assert line == "targets: " + ", ".join(f"{t} ({n} specs)" for t, n in sorted(stated.items(), key=lambda kv: -kv[1]))
    report = json.loads((tmp_path / "r.json").read_text())
    assert {r["spec"]: r["target"] for r in report["results"]}["specs/pc-legacy.yaml"] == "libvirt 9.0 + QEMU 7.2"
    r = cli("batch", "specs/", "-o", str(tmp_path / "out2"), "-j", "1", "--target", "debian-12")
    assert r.returncode == 0, r.stderr
    assert "target: libvirt 9.0 + QEMU 7.2 (5 specs)" in r.stdout.splitlines()


def test_the_examples_plan_the_same_for_both_judges():
    """No example uses a model or hotplug one judge lacks, so each plans to the same layout for both."""
    for path in sorted(SPECS.glob("*.yaml")):
        if "domain:" in path.read_text():
            continue
        a, b = solve(load_spec(path, D12)), solve(load_spec(path, D13))
        assert a.layout == b.layout and a.capacity == b.capacity, path


def test_a_versioned_machine_type_needs_its_qemu():
    with pytest.raises(SpecError) as info:
        _problem("name: a\nmachine: pc-q35-10.0\ntarget: debian-12\n")
    assert [str(p) for p in info.value.problems] == [
        "t.yaml:2: machine: machine type pc-q35-10.0 needs QEMU 10.0 or later; the target is QEMU 7.2"]
    assert _problem("name: a\nmachine: pc-q35-7.2\ntarget: debian-12\n").machine == "pc-q35-7.2"
    assert _problem("name: a\nmachine: pc-q35-10.0\ntarget: debian-13\n").machine == "pc-q35-10.0"
    # names that carry no upstream version (RHEL's, Ubuntu's, the aliases) are not checked
    for machine in ("pc-q35-rhel9.6.0", "pc-q35-noble", "q35", "ubuntu"):
        _problem(f"name: a\nmachine: {machine}\ntarget: debian-12\n")


def test_attach_takes_target_and_refuses_a_model_the_target_lacks():
    r = cli("attach", "specs/domains/web-02.xml", "--model", "igb", "--target", "debian-12")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: topo-solve: --model igb: igb needs QEMU 8.0 or later; the target is QEMU 7.2\n"
    r = cli("attach", "specs/domains/web-02.xml", "--model", "igb", "-q", "--target", "debian-13")
    assert r.returncode == 0 and "<model type=\"igb\"/>" in r.stdout, r.stderr
