"""Hostile specs, one row per class of issue 11: exit 2, one message naming the file and the line.

Each row is a spec text (or bytes) and the message expected on stderr, ``{f}`` standing
for the file's path; the spec is run by ``topo_solve.cli.main`` in a forked child
(tests/fuzz/runner.py), which also measures what it cost: a hostile spec is answered
with at most 100 MB of memory growth (a billion-laughs spec used to take 480 MB and
13 s).  Times are not asserted here (benchmarks/ has the speed targets); memory does
not depend on the machine's speed.

Then the bounds themselves: every number goes through one parser with libvirt's limits,
and a spec at the limits plans to XML that domain.rng accepts (and, marked libvirt, that
virsh define takes), one past them is refused at its line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fuzz.runner import run_cli
from topo_solve.errors import SpecError
from topo_solve.spec import MAX_MEMORY_MIB, MAX_NAME, parse_hotplug_option, parse_spec, to_problem, whole_number

HEAD = "name: g\nmachine: q35\n"


def _laughs(levels: int) -> str:
    text = HEAD + "l0: &l0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return text


# (id, spec text or bytes, message on stderr)
CASES = [
    # YAML that costs without limit, or recurses
    ("billion laughs", _laughs(9), "{f}:8: the document holds more than 200,000 values"),
    ("billion laughs, deeper", _laughs(12), "{f}:8: the document holds more than 200,000 values"),
    ("a self-referring alias", HEAD + "devices: &a [*a]\n", "{f}:3: alias *a refers to the value that contains it"),
    ("a self-referring mapping", HEAD + "numa: &n {cells: *n}\n", "{f}:3: alias *n refers to the value that "
                                                                   "contains it"),
    ("1,000-deep list", HEAD + "devices: " + "[" * 1000 + "]" * 1000 + "\n",
     "{f}:3: values nest deeper than 32 levels"),
    ("1,000-deep mapping", HEAD + "numa: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
     "{f}:3: values nest deeper than 32 levels"),
    ("100,000-deep list", HEAD + "x: " + "[" * 100_000 + "]" * 100_000 + "\n", "{f}:3:"),
    ("an alias to an alias nesting past the limit",
     HEAD + "a: &a " + "[" * 20 + "]" * 20 + "\nb: &b " + "[" * 10 + "*a" + "]" * 10 + "\nc: [[[*b]]]\n",
     "{f}:5: values nest deeper than 32 levels"),
    ("an undefined alias", HEAD + "devices: *nowhere\n", "{f}:3: alias *nowhere names no anchor"),
    ("a list as a key", HEAD + "? [a, b]\n: 1\n", "{f}:3: a key is a list here"),
    ("a mapping as a key", HEAD + "{a: 1}: 2\n", "{f}:3: a key is a mapping here"),
    ("an alias of a list as a key", HEAD + "x: &k [1]\n*k : 2\n", "{f}:4: a key is a mapping or a list here"),
    ("a duplicate key", HEAD + "memory: 1024\nmemory: 2048\n",
     "{f}:4: key 'memory' appears twice, on lines 3 and 4; YAML keys are unique"),
    ("a duplicate key in a flow mapping", HEAD + "devices:\n  - {model: e1000, model: e1000e}\n",
     "{f}:4: key 'model' appears twice, on line 4"),
    ("a duplicate top-level name", "name: a\nmachine: q35\nname: b\n", "{f}:3: key 'name' appears twice, on lines 1 "
                                                                       "and 3"),
    ("a second document", HEAD + "---\nname: h\n", "{f}:3: a second YAML document (---)"),
    ("a python tag", "name: !!python/object/apply:os.system [ls]\nmachine: q35\n",
     "{f}:1:7: not a plain YAML value: the tag !!python/object/apply:os.system is not allowed"),
    ("a local tag", HEAD + "memory: !mib 1024\n", "{f}:3:9: not a plain YAML value: the tag !mib is not allowed"),
    ("a set", HEAD + "x: !!set {a, b}\n", "{f}:3:4: not a plain YAML value: the tag !!set"),
    ("an invalid timestamp", HEAD + "x: 2001-99-99\n", "{f}:3:4: '2001-99-99' is not a valid timestamp"),
    ("a value that does not fit its tag: timestamp", HEAD + "x: !!timestamp x\n",
     "{f}:3:4: 'x' is not a valid timestamp"),
    ("a value that does not fit its tag: bool", HEAD + "x: !!bool maybe\n", "{f}:3:4: 'maybe' is not a valid bool"),
    ("a value that does not fit its tag: int", HEAD + "memory: !!int x\n", "{f}:3:9: 'x' is not a valid int"),
    ("an escaped lone surrogate", HEAD + 'devices: [{name: "\\ud800", model: e1000}]\n',
     "{f}:3:18: '\\ud800' holds a lone surrogate"),
    ("a 5,000-digit number", HEAD + "memory: " + "9" * 5000 + "\n", "{f}:3:9: a number of 5,000 characters"),
    ("a long sexagesimal", HEAD + "memory: " + "1:" * 40 + "1\n", "{f}:3:9: a number of 81 characters"),
    # numbers: one parser, libvirt's bounds
    ("a superscript count", HEAD + "hotplug: [{model: virtio-net, count: '²'}]\n",
     "{f}:3: hotplug[0].count: '²' is not a whole number from 0 to 10000; write it with the digits 0-9"),
    ("a superscript I/O limit", HEAD + "io_ports: 'limit ²'\n",
     "{f}:3: io_ports: 'limit ²' is not an I/O policy ('²' is not a whole number from 0 to 64; write it with the "
     "digits 0-9)"),
    ("Arabic-Indic digits", HEAD + "vcpus: '٣'\n", "{f}:3: vcpus: '٣' is not a whole number from 1 to 4096; write it"),
    ("fullwidth digits in a cpuset", HEAD + "numa: {cells: [{cpus: '０-1', memory: 512}]}\n",
     "{f}:3: numa.cells[0].cpus: '０-1' is not a list of vCPU ids"),
    ("a float count", HEAD + "hotplug: [{class: pcie, count: 2.5}]\n", "{f}:3: hotplug[0].count: 2.5 is not a whole"),
    ("a boolean count", HEAD + "hotplug: [{class: pcie, count: true}]\n", "{f}:3: hotplug[0].count: true is not a "
                                                                          "whole number"),
    ("memory past libvirt's limit", HEAD + f"memory: {MAX_MEMORY_MIB + 1}\n",
     f"{{f}}:3: memory: {MAX_MEMORY_MIB + 1} is out of range; use a whole number from 16 to {MAX_MEMORY_MIB}"),
    ("memory far past it", HEAD + "memory: 99999999999999999999999\n", "{f}:3: memory: 99999999999999999999999 is "
                                                                       "out of range"),
    ("cells past libvirt's limit", HEAD + f"numa: {{cells: [{{cpus: '0', memory: {MAX_MEMORY_MIB}}}, "
                                          "{cpus: '1', memory: 1}]}\n",
     f"{{f}}:3: numa.cells: the cells hold {MAX_MEMORY_MIB + 1} MiB together"),
    ("vcpus past the family's limit", HEAD + "vcpus: 256\n", "{f}:3: vcpus: 256 vCPUs; libvirt defines a q35 guest "
                                                             "with at most 255"),
    ("an IOMMU group past unsignedInt", HEAD + "devices: [{model: hostdev, iommu_group: 4294967296}]\n",
     "{f}:3: devices[0].iommu_group: 4294967296 is out of range"),
    ("a NUMA node past QEMU's", HEAD + "numa: {nodes: 129}\n", "{f}:3: numa.nodes: 129 is out of range; use a whole "
                                                               "number from 1 to 128"),
    ("a cpuset past the vCPU ids", HEAD + "numa: {cells: [{cpus: '0-99999999999999999999', memory: 512}]}\n",
     "{f}:3: numa.cells[0].cpus: in '0-99999999999999999999': '99999999999999999999...' is more than 4095"),
    # names: what libvirt's schema takes
    ("a name ending in a newline", 'name: "web-01\\n"\nmachine: q35\n', "{f}:1: name: use letters, digits"),
    ("a name past NAME_MAX", f"name: {'a' * (MAX_NAME + 1)}\nmachine: q35\n",
     f"{{f}}:1: name: {MAX_NAME + 1} characters; a guest name has at most {MAX_NAME}"),
    ("a device name with a newline", HEAD + 'devices: [{name: "nic\\n", model: e1000}]\n',
     "{f}:3: devices[0].name: 'nic\\n' cannot be a libvirt alias"),
    # bytes: a line and a column
    ("a NUL", b"name: g\x00\nmachine: q35\n", "{f}:1:8: character U+0000 (NUL) is not allowed in YAML"),
    ("a control character", b"name: g\nmachine: q35\x07\n", "{f}:2:13: character U+0007"),
    ("a C1 control character", "name: g\nmachine: q35\n# \x9b\n".encode(), "{f}:3:3: character U+009B"),
    ("a non-UTF-8 byte", b"name: g\nmachine: q3\xe95\n", "{f}:2:12: byte 0xe9 is not UTF-8"),
    ("UTF-16", HEAD.encode("utf-16"), "{f}:1:1: the file is UTF-16"),
    ("an escaped surrogate", HEAD + 'x: "\\ud800"\n', "{f}:3:"),
    ("an escaped NUL in the name", 'name: "a\\0b"\nmachine: q35\n', "{f}:1: name: use letters"),
    ("an escaped NUL in the domain path", 'domain: "a\\0b.xml"\nhotplug: [{class: pcie, count: 1}]\n',
     "{f}:1: domain: {f.parent}/a\\x00b.xml: cannot read the file: its name has a NUL character"),
    ("a spec past 1 MiB", HEAD + "# " + "x" * (1024 * 1024) + "\n", "{f}: larger than 1 MiB"),
]


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(("name", "content", "message"), CASES, ids=[c[0] for c in CASES])
def test_hostile_spec(name, content, message, tmp_path):
    path = _write(tmp_path, content)
    outcome = run_cli(["plan", str(path), "-q"], cpu_limit=30, wall_limit=120)
    assert outcome.died is None, outcome.died
    assert outcome.code == 2, f"exit {outcome.code}\n{outcome.stderr}"
    assert message.format(f=path) in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.output and "internal error" not in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) <= 3, "one message per root cause"
    assert outcome.memory_mb < 100, f"{outcome.memory_mb:.0f} MB for a hostile spec"


# -- what is accepted ----------------------------------------------------------------------------

def _problem(text: str):
    spec, lines = parse_spec(text, "t.yaml")
    return to_problem(spec, lines, "t.yaml")


def test_aliases_and_merge_keys_still_work():
    problem = _problem("name: g\nmachine: q35\ndevices:\n  - &nic {name: a, model: virtio-net}\n"
                       "  - {<<: *nic, name: b}\nhotplug:\n  - &h {class: pcie, count: 2}\n")
    assert [e.name for e in problem.endpoints if not e.implicit] == ["a", "b"]
    assert sum(h.count for h in problem.headroom) == 2


def test_a_shared_list_is_read_once_and_counted_at_every_use():
    """An alias is not copied: what it stands for is built once (and counted at every use)."""
    from topo_solve.yaml_read import load

    data, _ = load("a: &a [1, 2, 3]\nb: *a\nc: [*a, *a]\n")
    assert data["b"] is data["a"] and data["c"][1] is data["a"]


def test_quoted_numbers_and_yaml_integers_are_numbers():
    problem = _problem("name: g\nmachine: q35\nmemory: '2048'\nvcpus: 0x4\nhotplug: [{class: pcie, count: '3'}]\n")
    assert problem.memory_mib == 2048 and problem.vcpus == 4 and problem.headroom[0].count == 3


@pytest.mark.parametrize(("value", "lo", "hi", "ok"), [
    (5, 0, 10, 5), ("5", 0, 10, 5), (" 7 ", 0, 10, 7), ("0010", 0, 10, 10), (10, 0, 10, 10),
    (11, 0, 10, None), (-1, 0, 10, None), ("²", 0, 10, None), ("٣", 0, 10, None), ("1e3", 0, 10, None),
    (True, 0, 10, None), (1.0, 0, 10, None), ("9" * 5000, 0, 10, None), ([1], 0, 10, None), (None, 0, 10, None),
    ("", 0, 10, None), ("-3", 0, 10, None),
])
def test_whole_number(value, lo, hi, ok):
    if ok is None:
        with pytest.raises(ValueError) as err:
            whole_number(value, lo, hi)
        assert f"from {lo} to {hi}" in str(err.value) or "more than" in str(err.value)
    else:
        assert whole_number(value, lo, hi) == ok


@pytest.mark.parametrize("option", ["virtio-net=²", "pcie=٣", "pcie=" + "9" * 5000, "pcie=-1", "pcie=1.5", "=3",
                                    "pcie=10001"])
def test_hotplug_option_numbers(option):
    with pytest.raises(ValueError) as err:
        parse_hotplug_option(option)
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 300


# -- at the bounds: the XML is what libvirt takes -------------------------------------------------

AT_THE_BOUNDS = [
    ("q35", f"name: {'q' * MAX_NAME}\nmachine: q35\nmemory: {MAX_MEMORY_MIB}\nvcpus: 255\n"),
    ("pc", f"name: {'p' * MAX_NAME}\nmachine: pc\nmemory: {MAX_MEMORY_MIB}\nvcpus: 255\n"),
    ("pseries", f"name: pseries-bound\nmachine: pseries\ntype: qemu\nmemory: {MAX_MEMORY_MIB}\nvcpus: 4096\n"),
    ("virt", f"name: virt-bound\nmachine: virt\ntype: qemu\nmemory: {MAX_MEMORY_MIB}\nvcpus: 512\n"),
    ("q35 NUMA", "name: numa-bound\nmachine: q35\nvcpus: 255\nnuma: {nodes: 128}\nmemory: 131072\n"
                 "hotplug: [{class: pcie, count: 1, numa_node: 127}]\n"),
]


@pytest.mark.parametrize(("family", "text"), AT_THE_BOUNDS, ids=[f for f, _ in AT_THE_BOUNDS])
def test_specs_at_the_bounds_give_schema_valid_xml(family, text, schema_valid):
    from topo_solve.domain.write import render_domain
    from topo_solve.solve import solve

    schema_valid(render_domain(solve(_problem(text))), f"{family} at the bounds")


@pytest.mark.parametrize(("family", "vcpus"), [("q35", 256), ("pc", 256), ("pseries", 4097), ("virt", 513)])
def test_one_vcpu_past_the_family_limit_is_refused(family, vcpus):
    with pytest.raises(SpecError) as err:
        _problem(f"name: g\nmachine: {family}\nvcpus: {vcpus}\n")
    assert re.search(r"t\.yaml:3: vcpus: .*(at most|from 1 to 4096)", str(err.value)), str(err.value)


@pytest.mark.libvirt
@pytest.mark.parametrize(("family", "text"), AT_THE_BOUNDS, ids=[f for f, _ in AT_THE_BOUNDS])
def test_libvirt_defines_specs_at_the_bounds(family, text, virsh):
    """libvirt takes the largest name, memory and vCPU count the spec accepts (defined, never started)."""
    from topo_solve.domain.write import render_domain
    from topo_solve.solve import solve

    import uuid

    problem = _problem(text)
    suffix = uuid.uuid4().hex[:8]
    name = problem.name[: MAX_NAME - len(suffix) - 1] + "-" + suffix  # unique, and still at the bound if it was
    assert len(problem.name) < MAX_NAME or len(name) == MAX_NAME
    xml = render_domain(solve(problem)).replace(f"<name>{problem.name}</name>", f"<name>{name}</name>", 1)
    try:
        virsh.define(xml)
    finally:
        if virsh.exists(name):
            virsh.undefine(name)
