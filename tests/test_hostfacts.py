"""Issue 14: host facts from sysfs, memory windows (bar, memReserve, pcihole64) and NIC acpi indexes.

The sysfs trees are this machine's own (/sys/bus/pci/devices) and small trees built in tmp_path in
the kernel's documented layout (Documentation/ABI/testing/sysfs-bus-pci: a folder per function,
reached through bus/pci/devices/DDDD:BB:SS.F symbolic links into devices/pci..., with
``resource``, ``numa_node`` and an ``iommu_group`` link to kernel/iommu_groups/N).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from topo_solve.cli import main
from topo_solve.errors import InfeasibleError, SpecError
from topo_solve.host_sysfs import (IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH,
                                   HostSysfsError, parse_iommu_link, parse_numa_node, parse_resource, read_device)
from topo_solve.rules.versions import ALIASES
from topo_solve.solve import solve
from topo_solve.spec import parse_size, parse_spec, to_problem

from .property.strategies import SETTINGS

D12 = ALIASES["debian-12"].target
D13 = ALIASES["debian-13"].target
REAL = Path("/sys/bus/pci/devices")
M, G = 1 << 20, 1 << 30

# flags as the kernel prints them (include/linux/ioport.h, plus IORESOURCE_SIZEALIGN 0x40000)
MEM32 = IORESOURCE_MEM | 0x40000
PREF64 = IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64 | 0x40000
IO = IORESOURCE_IO | 0x40000


def _line(start: int, size: int, flags: int) -> str:
    end = start + size - 1 if size else 0
    return f"0x{start if size else 0:016x} 0x{end:016x} 0x{flags if size else 0:016x}"


def _resource(bars: list[tuple[int, int]], rom: int = 0) -> str:
    """A resource file: 6 BAR lines, the ROM line, then the unused bridge-window lines."""
    lines, addr = [], 0xF000_0000
    for size, flags in bars + [(0, 0)] * (6 - len(bars)):
        lines.append(_line(addr, size, flags))
        addr += max(size, 1 << 20)
    lines.append(_line(0xFE00_0000, rom, 0x46200 if rom else 0))  # the ROM line is not a BAR
    lines += [_line(0, 0, 0)] * 6
    return "\n".join(lines) + "\n"


GPU_BARS = [(16 * M, MEM32), (256 * M, PREF64), (0, 0), (32 * M, PREF64), (0, 0), (128, IO)]


def make_tree(root: Path, devices: dict[str, dict]) -> Path:
    """A sysfs tree: ``devices`` maps an address to {group, node, bars}; returns the root."""
    links = root / "bus" / "pci" / "devices"
    links.mkdir(parents=True)
    for addr, d in devices.items():
        real = root / "devices" / f"pci{addr[:4]}:00" / addr
        real.mkdir(parents=True)
        (real / "resource").write_text(_resource(d.get("bars", [])))
        (real / "numa_node").write_text(f"{d.get('node', -1)}\n")
        if d.get("group") is not None:
            group = root / "kernel" / "iommu_groups" / str(d["group"])
            (group / "devices").mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(group, real), real / "iommu_group")
        os.symlink(os.path.relpath(real, links), links / addr)
    return root


@pytest.fixture
def gpu_tree(tmp_path) -> Path:
    return make_tree(tmp_path / "sys", {
        "0000:41:00.0": {"group": 7, "node": 1, "bars": GPU_BARS},
        "0000:41:00.1": {"group": 7, "node": 1, "bars": [(16 * 1024, MEM32)]},
        "0000:42:00.0": {"node": -1, "bars": [(16 * 1024, IORESOURCE_MEM | IORESOURCE_MEM_64)]},
    })


# -- pure parsing ------------------------------------------------------------------------------

def test_resource_lines_give_the_bars_and_leave_out_the_rom_and_windows():
    bars = parse_resource(_resource(GPU_BARS, rom=512 * 1024))
    assert [(b.index, b.size, b.io, b.prefetch, b.mem64) for b in bars] == [
        (0, 16 * M, False, False, False), (1, 256 * M, False, True, True), (3, 32 * M, False, True, True),
        (5, 128, True, False, False)]


@pytest.mark.parametrize("text", ["0x1 0x2", "0x10 0x0f 0x200", "start end flags", "0x1 0x2 0x3 0x4"])
def test_a_broken_resource_line_is_an_error_naming_it(text):
    with pytest.raises(HostSysfsError, match="line 1"):
        parse_resource(text + "\n")


def test_numa_node_and_iommu_link():
    assert parse_numa_node("-1\n") is None and parse_numa_node("1\n") == 1
    with pytest.raises(HostSysfsError):
        parse_numa_node("one")
    assert parse_iommu_link("../../../../kernel/iommu_groups/12") == 12
    with pytest.raises(HostSysfsError):
        parse_iommu_link("../../../something/else")


@pytest.mark.parametrize(("text", "size"), [("4K", 4096), ("256M", 256 * M), ("32G", 32 * G), ("32GiB", 32 * G),
                                            ("1t", 1 << 40)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["32", "33G", "0G", "1X", "256T", "2K", 32, "G"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


# -- reading a tree ----------------------------------------------------------------------------

def test_a_built_tree_gives_group_node_functions_and_bars(gpu_tree):
    d = read_device("0000:41:00.0", gpu_tree)
    assert (d.iommu_group, d.numa_node, d.functions) == (7, 1, (0, 1))
    assert [b.size for b in d.mem_bars] == [16 * M, 256 * M, 32 * M]
    other = read_device("41:00.1", gpu_tree)  # the short spelling names the same device
    assert other.address == "0000:41:00.1" and other.functions == (0, 1)
    lone = read_device("0000:42:00.0", gpu_tree)
    assert (lone.iommu_group, lone.numa_node, lone.functions) == (None, None, (0,))


def test_a_missing_device_says_where_it_looked(gpu_tree):
    with pytest.raises(HostSysfsError, match=re.escape(str(gpu_tree / "bus/pci/devices/0000:43:00.0"))):
        read_device("0000:43:00.0", gpu_tree)
    with pytest.raises(HostSysfsError, match="is not a folder"):
        read_device("0000:41:00.0", gpu_tree / "nowhere")


def _real_devices() -> list[str]:
    return sorted(os.listdir(REAL))[:64] if REAL.is_dir() else []


def test_the_machines_own_devices_read_as_sysfs_says():
    names = _real_devices()
    if not names:
        pytest.skip("this machine shows no PCI devices in /sys/bus/pci/devices")
    for name in names:
        d = read_device(name)
        folder = REAL / name
        assert d.address == name and int(name[-1]) in d.functions
        assert d.functions == tuple(sorted(int(n[-1]) for n in os.listdir(REAL) if n[:-2] == name[:-2]))
        node = int((folder / "numa_node").read_text()) if (folder / "numa_node").exists() else -1
        assert d.numa_node == (None if node < 0 else node)
        link = folder / "iommu_group"
        assert d.iommu_group == (int(os.readlink(link).rsplit("/", 1)[1]) if link.is_symlink() else None)
        lines = (folder / "resource").read_text().splitlines()[:6]
        used = [ln.split() for ln in lines if int(ln.split()[1], 16)]
        assert len(d.bars) == sum(1 for _, _, f in used if int(f, 16) & (IORESOURCE_MEM | IORESOURCE_IO))
        for b in d.bars:
            start, end, _ = (int(x, 16) for x in lines[b.index].split())
            assert b.size == end - start + 1


# -- the spec with --host-sysfs -----------------------------------------------------------------

GPU_SPEC = """name: gpu-01
machine: q35
target: debian-13
devices:
  - {{name: gpu, model: hostdev, host: "0000:41:00.0"{group}}}
  - {{name: gpu-audio, model: hostdev, host: "0000:41:00.1"}}
hotplug:
  - {{model: hostdev, host: "0000:41:00.0"{bar}}}
"""


def _problem(text: str, sysfs=None, target=None):
    spec, lines = parse_spec(text, "g.yaml")
    return to_problem(spec, lines, "g.yaml", target=target, host_sysfs=None if sysfs is None else str(sysfs))


def test_host_facts_fill_in_the_group_and_the_windows(gpu_tree):
    p = _problem(GPU_SPEC.format(group="", bar=""), gpu_tree)
    gpu = next(e for e in p.endpoints if e.name == "gpu")
    assert (gpu.group, gpu.host_node, gpu.windows) == (7, 1, (16 * M, 288 * M))
    (h,) = p.headroom
    assert h.windows == (16 * M, 288 * M)  # the non-prefetchable BAR below 4 GiB, the 64-bit ones above
    plan = solve(p)
    assert plan.budgets["64-bit window MiB"][0] == 1024  # boot GPU + the hotplug: 576 MiB, rounded up to 1 GiB
    assert [kib for _, kib, _ in plan.reserved] == [32 * 1024]  # twice the 16 MiB below 4 GiB (not aligned)
    assert plan.budgets["32-bit window MiB"][0] == 16 + 1 + 32  # the boot GPU, its audio (16K: 1 MiB), the hotplug


def test_without_the_flag_nothing_is_read(gpu_tree):
    p = _problem(GPU_SPEC.format(group=", iommu_group: 3", bar=""))
    assert next(e for e in p.endpoints if e.name == "gpu").group == 3
    assert p.headroom[0].windows == (0, 0)


def test_a_conflict_names_the_spec_line_and_the_sysfs_path(gpu_tree):
    with pytest.raises(SpecError) as info:
        _problem(GPU_SPEC.format(group=", iommu_group: 3", bar=", bar: 64M"), gpu_tree)
    text = str(info.value)
    assert "g.yaml:5: devices[0].iommu_group: the spec says iommu_group 3, but the host says 7" in text
    assert str(gpu_tree / "bus/pci/devices/0000:41:00.0/iommu_group") in text
    assert "g.yaml:8: hotplug[0].bar: the spec says bar 64M, but the host device's largest BAR is 256M" in text


# -- memory windows ---------------------------------------------------------------------------

WINDOWS = """name: win-01
machine: {machine}
devices:
  - {{name: nic, model: virtio-net}}
hotplug:
{hotplug}"""


def _plan(hotplug: str, target=D13, machine="q35"):
    return solve(_problem(WINDOWS.format(machine=machine, hotplug=hotplug), target=target))


def test_memreserve_on_the_port_the_hotplug_takes_on_libvirt_11():
    from topo_solve.domain.write import render_domain

    plan = _plan("  - {model: hostdev, bar: 256M}\n  - {model: virtio-net, count: 2}\n")
    ((index, kib, who),) = plan.reserved
    assert kib == 512 * 1024 and "hostdev (line 6)" in who  # twice the BAR: the window is not aligned to it
    c = next(c for c in plan.layout.controllers if c.index == index)
    assert c.model == "pcie-root-port" and c.mem_reserve == kib
    root = etree.fromstring(render_domain(plan).encode())
    (t,) = root.findall(".//controller[@memReserve]/target") or root.xpath(".//target[@memReserve]")
    assert t.get("memReserve") == str(kib)
    assert plan.budgets["32-bit window MiB"] == (512, 1004)
    assert not any("memReserve" in w for w in plan.warnings)


def test_memreserve_is_a_warning_naming_the_version_on_libvirt_9(schema_valid):
    from topo_solve.domain.write import render_domain

    plan = _plan("  - {model: hostdev, bar: 256M}\n", target=D12)
    assert not plan.reserved
    assert any(w.startswith("memReserve needs libvirt 10.3 or later; the target is libvirt 9.0") for w in plan.warnings)
    xml = render_domain(plan)
    assert "memReserve" not in xml
    schema_valid(xml, "a libvirt 9.0 plan with a bar")


def test_pcihole64_only_when_the_64bit_bars_need_more_than_qemus_default(schema_valid):
    from topo_solve.domain.write import render_domain

    small = _plan("  - {model: hostdev, bar: 4G}\n", target=D12)
    assert small.layout.pcihole64 is None and small.budgets["64-bit window MiB"][0] == 8 * 1024
    big = _plan("  - {model: hostdev, count: 2, bar: 32G}\n", target=D12)
    assert big.layout.pcihole64 == 96 * 1024 * 1024  # 64 GiB of BARs + 32 GiB of alignment slack, in KiB
    xml = render_domain(big)
    assert '<pcihole64 unit="KiB">100663296</pcihole64>' in xml
    schema_valid(xml, "a plan with pcihole64")
    pc = _plan("  - {model: hostdev, bar: 4G}\n", target=D12, machine="pc")
    assert pc.layout.pcihole64 == 8 * 1024 * 1024  # past i440fx's 2 GiB default


def test_windows_that_cannot_fit_are_infeasible_naming_the_number():
    with pytest.raises(InfeasibleError) as info:
        _plan("  - {model: hostdev, count: 4, bar: 512M}\n")
    assert "32-bit memory window: needs 4096" in str(info.value) and "(limit 1004)" in str(info.value)
    with pytest.raises(InfeasibleError) as info:
        _plan("  - {model: hostdev, count: 2, bar: 64T}\n")
    assert "64-bit memory window: needs" in str(info.value) and "2^40" in str(info.value)


# -- acpi indexes ------------------------------------------------------------------------------

NICS = """name: nics-01
machine: {machine}
devices:
  - {{name: a, model: virtio-net, count: 2, acpi_index: auto}}
  - {{name: b, model: e1000e, acpi_index: {b}}}
  - {{name: c, model: virtio-net}}
hotplug:
  - {{model: virtio-net, count: 3}}
  - {{model: hostdev}}
  - {{model: e1000e}}
"""


def test_acpi_indexes_auto_and_numbers(schema_valid):
    from topo_solve.domain.write import render_domain

    plan = solve(_problem(NICS.format(machine="q35", b=7)))
    got = {e.name: e.acpi_index for e in plan.problem.endpoints if e.kind in ("virtio-net", "e1000e")}
    assert got == {"a-0": 8, "a-1": 9, "b": 7, "c": None}
    assert plan.acpi_hotplug == (("virtio-net", (10, 11, 12)), ("e1000e", (13,)))
    xml = render_domain(plan)
    schema_valid(xml, "a plan with acpi indexes")
    root = etree.fromstring(xml.encode())
    assert {i.getparent().find("alias").get("name"): i.get("index") for i in root.iter("acpi") if i.get("index")} \
        == {"ua-a-0": "8", "ua-a-1": "9", "ua-b": "7"}


# -- the command line: bad input is exit 2 at its line, no traceback ----------------------------

BAD = [
    (NICS.format(machine="q35", b=0), 5, "devices[1].acpi_index: 0 is out of range; use a whole number from 1 to "
     "16383 (an acpi index), or 'auto'"),
    (NICS.format(machine="q35", b=16384), 5, "16384 is out of range"),
    (NICS.format(machine="q35", b="seven"), 5, "'seven' is not a whole number from 1 to 16383"),
    (NICS.format(machine="pseries", b=7), 4, "pseries guests have no ACPI PCI hotplug"),
    (NICS.replace("acpi_index: auto", "acpi_index: 7").format(machine="q35", b=7).replace("count: 2, ", ""), 5,
     "acpi index 7 is already devices[0]'s"),
    (NICS.format(machine="q35", b=7).replace("count: 2, acpi_index: auto", "count: 2, acpi_index: 3"), 4,
     "one number names one NIC, and this entry has 2; write acpi_index: auto"),
    ("name: x\nmachine: q35\ndevices:\n  - {model: virtio-blk, acpi_index: 2}\n", 4,
     "acpi_index names NICs (<interface>); virtio-blk is not one"),
    ("name: x\nmachine: q35\nhotplug:\n  - {model: hostdev, bar: 33G}\n", 4, "hotplug[0].bar: 33G is not a power of two"),
    ("name: x\nmachine: q35\nhotplug:\n  - {model: hostdev, bar: 32}\n", 4, "hotplug[0].bar: 32 is not a size"),
    ("name: x\nmachine: q35\nhotplug:\n  - {model: virtio-net, host: '0000:41:00.0'}\n", 4,
     "hotplug[0].host: only assigned host devices"),
    ("name: x\nmachine: q35\ndevices:\n  - {model: virtio-net, acpi_index: true}\n", 4,
     "devices[0].acpi_index: true is not an acpi index: 'auto' or a number 1-16383"),
    ("name: x\nmachine: q35\nhotplug:\n  - {model: hostdev, bar: 1.5}\n", 4,
     "hotplug[0].bar: 1.5 is not a size such as 256M or 32G"),
    ("name: x\nmachine: q35\ndevices:\n  - {model: hostdev, host: '0000:43:00.0'}\n", 4,
     "devices[0].host: --host-sysfs: no PCI device 0000:43:00.0 on this host"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_input_is_exit_2_at_its_line(text, line, message, tmp_path, gpu_tree, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(SystemExit) as info:
        main([str(spec), "-q", f"--host-sysfs={gpu_tree}"])
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert f"{spec}:{line}: " in err and message in err, err
    assert "Traceback" not in out + err


def test_the_flag_alone_reads_slash_sys(tmp_path, capsys):
    names = _real_devices()
    if not names:
        pytest.skip("this machine shows no PCI devices in /sys/bus/pci/devices")
    spec = tmp_path / "real.yaml"
    spec.write_text(f"name: real\nmachine: q35\ndevices:\n  - {{name: d, model: hostdev, host: '{names[-1]}'}}\n")
    with pytest.raises(SystemExit) as info:
        main([str(spec), "--emit", "json", "--host-sysfs"])
    out, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    assert f"host device d ({names[-1]})" in err


def test_infeasible_windows_are_exit_1(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text("name: x\nmachine: q35\nhotplug:\n  - {model: hostdev, count: 4, bar: 512M}\n")
    with pytest.raises(SystemExit) as info:
        main([str(spec), "-q"])
    assert info.value.code == 1
    assert "32-bit memory window: needs 4096" in capsys.readouterr().err


# -- properties -----------------------------------------------------------------------------------

@st.composite
def nic_specs(draw):
    entries = []
    numbers = draw(st.lists(st.integers(1, 16383), max_size=4, unique=True))
    for i, n in enumerate(numbers):
        entries.append(f"  - {{name: fixed{i}, model: virtio-net, acpi_index: {n}}}")
    for i in range(draw(st.integers(0, 3))):
        count = draw(st.integers(1, 3))
        entries.append(f"  - {{name: auto{i}, model: e1000e, count: {count}, acpi_index: auto}}")
    entries.append("  - {name: plain, model: virtio-net}")
    hot = draw(st.integers(0, 4))
    return ("name: p\nmachine: q35\ndevices:\n" + "\n".join(entries) + "\n"
            + (f"hotplug:\n  - {{model: virtio-net, count: {hot}}}\n" if hot else ""))


@SETTINGS
@given(nic_specs(), st.integers(1, 4))
def test_acpi_indexes_are_unique_and_stable_under_extend(text, more):
    from topo_solve.attach import acpi_indexes
    from topo_solve.domain.plan import plan_document
    from topo_solve.domain.write import render_domain
    from topo_solve.spec import headroom_entry
    from topo_solve.windows import acpi_for_hotplugs

    try:
        plan = solve(_problem(text))
    except SpecError as exc:  # autos past 16383 after a high fixed number: refused, at a line
        assert "no acpi index is left" in str(exc)
        return
    given_ = [e.acpi_index for e in plan.problem.endpoints if e.acpi_index is not None]
    future = [i for _, ix in plan.acpi_hotplug for i in ix]
    wanted = sum(h.count for h in plan.problem.headroom)
    assert (len(future) < wanted) == any("acpi index(es) are left" in w for w in plan.warnings) or not given_
    assert len(set(given_ + future)) == len(given_ + future)
    assert all(i > max(given_) for i in future) if given_ else not future
    xml = render_domain(plan).encode()
    before = acpi_indexes(etree.fromstring(xml))
    extended = plan_document(xml, "p.xml", (headroom_entry("virtio-net", None, more),), target=None)
    after_root = etree.fromstring(extended.edit.data)
    assert acpi_indexes(after_root) == before  # extend keeps every index
    got = acpi_for_hotplugs((headroom_entry("virtio-net", None, more),), before)
    if not before or max(before) == 16383:  # no NIC named by index, or no index left: none for the hotplugs
        assert got == ()
        return
    ((_, nxt),) = got
    assert len(nxt) == min(more, 16383 - max(before)) and min(nxt) > max(before)  # never a used (or removed) one


def _unit(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20)):
        if size >= 1 << shift:
            return f"{size >> shift}{unit}"
    return f"{size >> 10}K"


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([1 << k for k in range(20, 42)]), st.integers(1, 3)), min_size=1,
                max_size=4), st.sampled_from([D12, D13]), st.sampled_from(["q35", "pc"]))
def test_a_feasible_plan_never_exceeds_its_windows(bars, target, machine):
    hotplug = "".join(f"  - {{model: hostdev, count: {n}, bar: {_unit(size)}}}\n" for size, n in bars)
    try:
        plan = _plan(hotplug, target=target, machine=machine)
    except InfeasibleError as exc:
        assert "memory window" in str(exc) or "hotplug" in str(exc)
        return
    for key in ("32-bit window MiB", "64-bit window MiB"):
        used, limit = plan.budgets[key]
        assert used <= limit, (key, used, limit)
    high = sum(size * n for size, n in bars if size >= 1 << 32)
    assert plan.budgets["64-bit window MiB"][0] * M >= high
    if plan.layout.pcihole64 is not None:
        assert plan.layout.pcihole64 * 1024 >= high
    reserved = sum(kib for _, kib, _ in plan.reserved) * 1024
    low = sum(2 * size * n for size, n in bars if size < 1 << 32)  # the sizes are powers of two, reserved twice
    assert reserved == (low if target == D13 else 0) or machine == "pc"


def test_windows_and_host_facts_are_for_new_guests(tmp_path, capsys):
    """A spec with 'domain' does not write memory windows, and a domain XML's host devices are not read:
    both are refused with the reason, not ignored."""
    plan = solve(_problem(NICS.format(machine="q35", b=7)))
    from topo_solve.domain.write import render_domain

    xml = tmp_path / "g.xml"
    xml.write_text(render_domain(plan))
    spec = tmp_path / "ext.yaml"
    spec.write_text(f"domain: {xml}\nhotplug:\n  - {{model: hostdev, bar: 1G}}\n")
    with pytest.raises(SystemExit) as info:
        main([str(spec), "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{spec}:3: hotplug[0].bar: 'bar' reserves memory windows" in err, err
    with pytest.raises(SystemExit) as info:
        main(["plan", str(xml), "--hotplug", "virtio-net=1", "--host-sysfs", "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "a domain XML's host devices are not read" in err, err
    with pytest.raises(SystemExit) as info:  # and the plan of it says the NIC hotplug's next index
        main(["plan", str(xml), "--hotplug", "virtio-net=2", "-o", str(tmp_path / "out.xml")])
    err = capsys.readouterr().err
    assert info.value.code in (0, None) and "acpi index for virtio-net hotplugs: 10, 11" in err, err  # above 7, 8, 9


def test_batch_reads_the_hosts_sysfs_too(tmp_path, gpu_tree):
    from topo_solve.batch import plan_many

    good = tmp_path / "good.yaml"
    good.write_text(GPU_SPEC.format(group="", bar=""))
    bad = tmp_path / "bad.yaml"
    bad.write_text(GPU_SPEC.format(group="", bar="").replace("41:00.1", "41:00.2"))
    results = {Path(r.spec).name: r for r in plan_many([good, bad], workers=1, host_sysfs=str(gpu_tree))}
    assert results["good.yaml"].status == "ok" and 'memReserve="32768"' in results["good.yaml"].xml
    assert results["bad.yaml"].code == 2 and "no PCI device 0000:41:00.2 on this host" in results["bad.yaml"].message
    plain = {Path(r.spec).name: r for r in plan_many([bad], workers=1)}  # without it, nothing is read
    assert plain["bad.yaml"].status == "ok"


def test_a_slot_function_left_out_is_a_warning(gpu_tree):
    alone = solve(_problem(GPU_SPEC.format(group="", bar="").replace(
        '  - {name: gpu-audio, model: hostdev, host: "0000:41:00.1"}\n', ""), gpu_tree))
    (w,) = [w for w in alone.warnings if "the host's slot also has" in w]
    assert w.startswith("gpu (0000:41:00.0): the host's slot also has 0000:41:00.1")
    both = solve(_problem(GPU_SPEC.format(group="", bar=""), gpu_tree))
    assert not any("the host's slot also has" in w for w in both.warnings)


SLOT_SPEC = """name: gpu-02
machine: q35
devices:
  - {{name: gpu, model: hostdev, host: "0000:41:00"{functions}}}
"""


def test_a_host_slot_without_a_function_takes_its_functions_from_sysfs(gpu_tree):
    """The slot form means every function of the slot: --host-sysfs says how many (the GPU and its audio),
    and the group goes on one guest slot with the host's IOMMU group."""
    plan = solve(_problem(SLOT_SPEC.format(functions=""), gpu_tree))
    (gpu,) = [p for p in plan.layout.placed if p.endpoint.name == "gpu"]
    assert gpu.endpoint.functions == (0, 1) and gpu.endpoint.group == 7
    assert [h for _, h in gpu.endpoint.parts] == ["0000:41:00.0", "0000:41:00.1"]
    assert not any("the host's slot also has" in w for w in plan.warnings)


def test_functions_the_host_slot_does_not_have_are_a_conflict(gpu_tree):
    with pytest.raises(SpecError) as err:
        _problem(SLOT_SPEC.format(functions=", functions: 3"), gpu_tree)
    (p,) = err.value.problems
    assert p.line == 4 and p.path.endswith("functions")
    assert "the spec says functions 3, but the host's slot 0000:41:00 has 2 (--host-sysfs)" in p.message


def test_a_host_slot_without_a_function_and_without_sysfs_asks_for_either():
    with pytest.raises(SpecError) as err:
        _problem(SLOT_SPEC.format(functions=""))
    (p,) = err.value.problems
    assert p.line == 4 and "give 'functions: N'" in p.message and "--host-sysfs" in p.message
