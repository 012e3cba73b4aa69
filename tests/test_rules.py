"""Sanity of the rule tables, and a coverage meta-test over them.

The tables in solver/rules/ are data the planner, the placer and the verifier
all trust, so a wrong row is a wrong plan.  These tests check what a row must
satisfy on its own (slots in range, a connect type where the row needs one,
every class placeable somewhere), that every device model renders to XML
libvirt's schema accepts, and -- last in the session -- that the suite's plans
touched every row and every device model (virtinst's test_checkprops): a new
row without a test that plans with it fails here, by name.
"""

from __future__ import annotations

import re

import pytest
import yaml
from lxml import etree

from topo_solve.domain.write import controllers_element, device_element
from topo_solve.model import HOTPLUG_CLASSES, Address, Connect, Controller, EndpointClass, Layout, Plan, Problem
from topo_solve.rules import FAMILIES, MACHINE_WORDS, family_for
from topo_solve.rules.devices import CHIPSET, DEVICES, kind
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem

FAMILY_NAMES = sorted(FAMILIES)
ALL_KINDS = sorted(DEVICES) + sorted(CHIPSET)
TARGET_ATTRS = {"chassis", "port", "chassisNr", "index", "busNr", "node"}  # what place._target fills in


def rows(family: str):
    return list(FAMILIES[family].buses.items())


ROW_IDS = [(f, key) for f in FAMILY_NAMES for key, _ in rows(f)]


# -- every family ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILY_NAMES)
class TestFamily:
    def test_root_row_exists_and_is_a_root(self, family):
        rules = FAMILIES[family]
        assert rules.root in rules.buses, f"{family}: root model {rules.root!r} has no row"
        root = rules.bus(rules.root)
        assert root.root and not root.addable and root.connect is None
        assert rules.rule_for(root.model, 0) is root

    def test_machine_names_lead_back_to_the_family(self, family):
        rules = FAMILIES[family]
        assert re.fullmatch(rules.machine_pattern, rules.default_machine)
        assert family_for(rules.default_machine) is rules
        assert rules.arches, f"{family} lists no architecture"
        words = [w for w, f in MACHINE_WORDS.items() if f == family]
        assert words, f"no machine word leads to {family}"

    def test_every_class_has_a_bus_that_takes_it_at_boot_and_live(self, family):
        rules = FAMILIES[family]
        for cls in HOTPLUG_CLASSES:
            connect = rules.connect_of(cls)
            takers = [b.name for b in rules.buses.values()
                      if rules.accepts(b, connect, auto=True, endpoint=True)]
            live = [b.name for b in rules.buses.values()
                    if b.hotplug and rules.accepts(b, connect, auto=True, endpoint=True)]
            assert takers, f"{family}: no bus auto-places {cls} ({connect})"
            assert live, f"{family}: no bus hotplugs {cls} ({connect}), so no headroom of it can ever exist"
            if cls in rules.isolated:
                assert any(b.isolation == "group" and b.addable for b in rules.buses.values()
                           if b.name in live), f"{family}: isolated {cls} needs an addable bus per group"

    def test_reserved_and_fixed_addresses_are_on_the_root_bus(self, family):
        rules = FAMILIES[family]
        lo, hi = rules.bus(rules.root).slots
        for slot, why in rules.reserved_root_slots:
            assert lo <= slot <= hi and why
        for role, fixed in rules.fixed.items():
            assert fixed.role == role and fixed.source
            assert fixed.address.bus == 0 and lo <= fixed.address.slot <= hi, f"{family} {role}: {fixed.address}"

    def test_implicit_devices_and_defaults_name_known_models(self, family):
        rules = FAMILIES[family]
        for flag, name in rules.implicit.items():
            kind(name)  # raises KeyError for an unknown model
        assert set(rules.defaults) <= set(rules.implicit) | {"video"}
        assert DEVICES[rules.default_video].video

    def test_budgets_name_rows(self, family):
        rules = FAMILIES[family]
        assert set(rules.max_count) <= set(rules.buses)
        assert 0 < rules.max_index <= 255 and 0 < rules.bus_number_limit <= 256


# -- machine type names ---------------------------------------------------------

# (machine type as libvirt writes it, family or None for a name no family may claim).  libvirt tells
# the family by the prefix alone (qemuDomainIsQ35, qemuDomainIsI440FX, qemuDomainIsPSeries,
# qemuDomainIsARMVirt), so every vendor's names follow: RHEL's, Ubuntu's (pc-q35-jammy,
# pc-q35-noble-v2, pc-i440fx-focal-hpb; 'ubuntu' and 'ubuntu-q35' are its aliases).
MACHINES = [
    ("q35", "q35"), ("pc-q35-7.2", "q35"), ("pc-q35-rhel8.6.0", "q35"), ("pc-q35-rhel7.6.0", "q35"),
    ("pc-q35-jammy", "q35"), ("pc-q35-noble-v2", "q35"), ("pc-q35-jammy-hpb-maxcpus", "q35"), ("ubuntu-q35", "q35"),
    ("pc", "pc"), ("i440fx", "pc"), ("pc-i440fx-7.2", "pc"), ("pc-i440fx-rhel7.6.0", "pc"), ("rhel6.6.0", "pc"),
    ("pc-1.3", "pc"), ("pc-i440fx-focal-hpb", "pc"), ("ubuntu", "pc"),
    ("pseries", "pseries"), ("pseries-7.2", "pseries"), ("pseries-rhel8.2.0", "pseries"),
    ("pseries-rhel7.6.0-sxxm", "pseries"), ("pseries-2.12-sxxm", "pseries"),
    ("virt", "virt"), ("virt-7.2", "virt"), ("virt-rhel9.2.0", "virt"),
    # other machines have no PCI topology topo-solve plans
    ("s390-ccw-virtio-rhel9.2.0", None), ("microvm", None), ("isapc", None), ("q35-pc", None), ("virtio", None),
    ("pc-q35", None), ("pseriesx", None), ("", None),
]


@pytest.mark.parametrize(("machine", "family"), MACHINES, ids=[m for m, _ in MACHINES])
def test_machine_type_leads_to_its_family(machine, family):
    rules = family_for(machine)
    assert (rules.family if rules else None) == family
    claimed = [f for f, r in FAMILIES.items() if re.fullmatch(r.machine_pattern, machine)]
    assert len(claimed) <= 1, f"{machine} is claimed by {claimed}"


@pytest.mark.parametrize("machine", ["pc-q35-rhel8.6.0", "pc-i440fx-rhel7.6.0", "pseries-rhel8.2.0", "virt-rhel9.2.0"])
def test_a_spec_with_a_rhel_machine_plans_for_its_family_and_keeps_the_name(machine):
    """The machine name goes into the domain XML as written; arch and rules follow the family."""
    from topo_solve.domain.write import render_domain

    text = f"name: rhel\nmachine: {machine}\nhotplug: [{{class: pci, count: 1}}]\n"
    spec, lines = parse_spec(text, "rhel.yaml")
    problem = to_problem(spec, lines, "rhel.yaml")
    rules = family_for(machine)
    assert problem.family == rules.family and problem.arch == rules.arches[0]
    plan = solve(problem)
    assert plan.capacity[EndpointClass.PCI] >= 1
    assert f'machine="{machine}"' in render_domain(plan)


# -- every row ---------------------------------------------------------------

@pytest.mark.parametrize(("family", "key"), ROW_IDS, ids=[f"{f}-{k}" for f, k in ROW_IDS])
class TestRow:
    def test_slots_are_a_sane_range(self, family, key):
        b = FAMILIES[family].bus(key)
        lo, hi = b.slots
        assert 0 <= lo <= hi <= 0x1F, b.slots
        assert 1 <= b.packs <= 8
        assert b.packs == 1 or b.is_port, "only single-slot ports share a parent slot as functions"
        assert b.bus_numbers >= 0

    def test_addable_rows_say_how_they_plug_in(self, family, key):
        rules = FAMILIES[family]
        b = rules.bus(key)
        if not b.addable:
            return
        if b.root:
            assert b.connect is None, "a root bus needs no slot upstream"
            return
        assert b.connect is not None, f"{family} {key}: addable but no connect type"
        parents = [p.name for p in rules.buses.values()
                   if p.name != b.name and rules.accepts(p, b.connect, auto=True, endpoint=False)]
        assert parents, f"{family} {key}: no other bus auto-accepts {b.connect}, so it can never be placed"

    def test_what_it_accepts_are_connect_types(self, family, key):
        b = FAMILIES[family].bus(key)
        assert b.accepts <= set(Connect) and b.manual <= set(Connect)
        assert b.accepts or b.manual, f"{family} {key} accepts nothing"

    def test_targets_are_known_and_a_source_is_named(self, family, key):
        b = FAMILIES[family].bus(key)
        assert set(b.target) <= TARGET_ATTRS, b.target
        assert b.source.strip(), f"{family} {key} names no source"

    def test_rule_for_finds_the_row_again(self, family, key):
        rules = FAMILIES[family]
        b = rules.bus(key)
        index = 0 if b.root and not b.addable else 1
        assert rules.rule_for(b.model, index) is b


# -- XML of every row and every device model ----------------------------------

def _minimal_domain(family: str, devices: list[etree._Element]) -> bytes:
    rules = FAMILIES[family]
    dom = etree.Element("domain", type="kvm")
    etree.SubElement(dom, "name").text = "rules-test"
    etree.SubElement(dom, "memory", unit="MiB").text = "1024"
    os_ = etree.SubElement(dom, "os")
    etree.SubElement(os_, "type", arch=rules.arches[0], machine=rules.default_machine).text = "hvm"
    devs = etree.SubElement(dom, "devices")
    for d in devices:
        devs.append(d)
    return etree.tostring(dom)


@pytest.mark.parametrize("name", ALL_KINDS)
def test_every_device_model_renders_to_valid_xml(name, schema_valid):
    """device_element of each model, at a root-bus address, inside a minimal q35 domain."""
    el = device_element(name, name, Address(0, 5, 0), host="0000:41:00.0")
    schema_valid(_minimal_domain("q35", [el]), f"device {name}")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_row_renders_to_a_valid_controller(family, schema_valid):
    """One controller per row, each on the root bus; the schema checks names and targets."""
    rules = FAMILIES[family]
    controllers = [Controller(0, rules.root, None, target=(("index", 0),) if "index" in rules.bus(rules.root).target
                              else ())]
    rows = [b for b in rules.buses.values() if b.addable or b.name == rules.numa_root]
    for n, b in enumerate(rows, start=1):
        addr = None if b.root else Address(0, n, 0)
        values = {"chassis": n, "port": 8 * n, "chassisNr": n, "index": n, "busNr": 250 - n, "node": 0}
        controllers.append(Controller(n, b.model, addr, target=tuple((a, values[a]) for a in b.target)))
    problem = Problem("rules-test", family, rules.default_machine, rules.arches[0], (), ())
    plan = Plan(problem, Layout(family, tuple(controllers), ()), capacity={}, added={})
    schema_valid(_minimal_domain(family, list(controllers_element(plan))), f"{family} controllers")


# -- plans that exercise every row and every model -----------------------------

# One spec per family: every device model (one balloon model each: a guest has
# one balloon) and enough conventional-PCI headroom that one bridge is not
# enough, so the self-nesting pci-bridge row is needed too.  On pseries the
# hostdev (boot and hotplug) needs the extra-PHB row.
_BALLOON = {"q35": "virtio-balloon", "pc": "virtio-balloon-transitional",
            "pseries": "virtio-balloon", "virt": "virtio-balloon-transitional"}


def kitchen_sink(family: str) -> str:
    """Every model the family has: vga first (libvirt takes it as the primary video only)."""
    models = [m for m, k in DEVICES.items() if not m.startswith("virtio-balloon")
              and (k.families is None or family in k.families)]
    models.sort(key=lambda m: m != "vga")
    devices = [{"model": m} for m in models] + [{"model": _BALLOON[family]}]
    spec = {"name": f"all-{family}", "machine": family, "devices": devices,
            "hotplug": [{"class": "pci", "count": 40}, {"class": "pcie", "count": 2},
                        {"class": "hostdev", "count": 1}]}
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_kitchen_sink_plans_and_validates(family, schema_valid):
    from topo_solve.domain.write import render_domain

    spec, lines = parse_spec(kitchen_sink(family), f"all-{family}.yaml")
    plan = solve(to_problem(spec, lines, f"all-{family}.yaml"))
    for cls, n in plan.requested.items():
        assert plan.capacity[cls] >= n
    schema_valid(render_domain(plan), f"kitchen sink plan of {family}")


# One spec per family for the rows the planner adds only at scale or for NUMA: more PCIe
# headroom than pcie-root's root ports hold (a switch on q35 and virt), and devices and
# headroom on two NUMA nodes (an expander bus each; PHBs tied to the node on pseries).
def scale_sink(family: str) -> str:
    spec = {"name": f"scale-{family}", "machine": family, "numa": {"nodes": 2},
            "devices": [{"model": "virtio-net", "numa_node": 1},
                        {"model": "hostdev", "numa_node": 0, "iommu_group": 1}],
            # past the root ports 28 free root slots hold: 224 with q35's usb and balloon, 232 on virt
            "hotplug": [{"class": "pcie", "count": 240 if family == "virt" else 230},
                        {"class": "pci", "count": 2, "numa_node": 1},
                        {"class": "hostdev", "count": 1, "numa_node": 0}]}
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scale_sink_plans_and_validates(family, schema_valid):
    from topo_solve.domain.write import render_domain

    spec, lines = parse_spec(scale_sink(family), f"scale-{family}.yaml")
    plan = solve(to_problem(spec, lines, f"scale-{family}.yaml"))
    for cls, n in plan.requested.items():
        assert plan.capacity[cls] >= n
    for node, wanted in plan.problem.requested_by_node().items():
        for cls, n in wanted.items():
            assert plan.node_capacity[node][cls] >= n, (node, cls)
    rules = FAMILIES[family]
    assert plan.added.get(rules.bus(rules.numa_root).model), "no controller tied to a NUMA node"
    if "pcie-switch-upstream-port" in rules.buses:
        assert plan.added.get("pcie-switch-upstream-port") == 1
    schema_valid(render_domain(plan), f"scale plan of {family}")


def _exercisers(module: str) -> set[str]:
    """Node ids of the tests that make the plans and reads the coverage check counts on."""
    from tests.test_solve import AUDITS

    solve_module = module.rsplit("/", 1)[0] + "/test_solve.py" if "/" in module else "test_solve.py"
    return ({f"{module}::test_kitchen_sink_plans_and_validates[{f}]" for f in FAMILY_NAMES}
            | {f"{module}::test_scale_sink_plans_and_validates[{f}]" for f in FAMILY_NAMES}
            | {f"{solve_module}::test_audit_capacity_matches_real_libvirt[{c['id']}]" for c in AUDITS})


@pytest.mark.coverage_meta
def test_every_row_and_device_model_is_exercised(recorded_plans, recorded_reads, request):
    """Every BusRule row of every family, and every device model, is exercised in this session:
    rows the planner may add (and roots) by a plan, rows it never adds (switch ports,
    dmi-to-pci-bridge: audit only) by a domain XML read back and verified.  Runs last (see
    conftest); skips when the tests that exercise the rows were not all selected."""
    selected = {item.nodeid for item in request.session.items}
    if not _exercisers(request.node.nodeid.split("::")[0]) <= selected:
        pytest.skip("only part of the suite was selected; the coverage check needs test_rules.py and "
                    "test_solve.py whole")
    planned: set[tuple[str, str]] = set()
    read: set[tuple[str, str]] = set()
    kinds_seen: set[str] = set()
    families_seen: set[str] = set()
    for layouts, seen in (([p.layout for p in recorded_plans], planned), (recorded_reads, read)):
        for layout in layouts:
            rules = FAMILIES[layout.family]
            for c in layout.controllers:
                rule = rules.rule_for(c.model, c.index)
                if rule is not None:
                    seen.add((rules.family, rule.name))
    for plan in recorded_plans:
        families_seen.add(plan.layout.family)
        kinds_seen.update(p.endpoint.kind for p in plan.layout.placed)
    plannable = {(f, k) for f, k in ROW_IDS
                 if FAMILIES[f].bus(k).addable or FAMILIES[f].bus(k).root or k == FAMILIES[f].numa_root}
    read_only = set(ROW_IDS) - plannable
    message = []
    if missing := sorted(set(FAMILY_NAMES) - families_seen):
        message.append(f"families never planned: {', '.join(missing)}")
    if missing := sorted(plannable - planned):
        message.append("rule rows no plan used: " + ", ".join(f"{f}:{k}" for f, k in missing))
    if missing := sorted(read_only - read):
        message.append("read-only rule rows no audit read: " + ", ".join(f"{f}:{k}" for f, k in missing))
    if missing := sorted(set(ALL_KINDS) - kinds_seen):
        message.append("device models no plan placed: " + ", ".join(missing))
    assert not message, "; ".join(message) + " (add a spec or an audit case that needs them)"
