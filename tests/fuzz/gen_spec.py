"""Hostile specs: valid documents, mutated in their data, their YAML and their bytes.

Independent of ``tests/property/strategies.py`` (which draws valid specs): this module
starts from real documents (``specs/*.yaml``, ``specs/infeasible/*.yaml``,
``benchmarks/samples/*.yaml`` and a few rich seeds below: NUMA nodes and cells, switches,
IOMMU groups, I/O policies, a spec that extends a guest) and breaks them in three layers:

1. **data**: a field gets a value of another type, a number at or past a bound (every
   bound of the spec format and of libvirt), a key is dropped, renamed, added or
   duplicated, an entry copied or moved, a machine, model, NUMA layout or pinned address
   changed, ``domain:`` pointed at other files (``/dev/zero``, a folder, a missing file);
   shared Python objects become YAML anchors and aliases when dumped, so billion laughs
   and self-reference come from here too;
2. **YAML text**: merge keys, duplicate keys, tags (``!!python/object``, ``!!binary``,
   ``!!set``, local tags), deep nesting, odd scalars (``yes``, ``0x1F``, ``1:30``,
   ``.nan``, timestamps, escapes such as ``"\\ud800"``), several documents, directives,
   complex keys, block scalars, long lines;
3. **bytes**: byte order marks, UTF-16, Latin-1, invalid UTF-8, NUL and control
   characters, CR LF, CR, NEL and LS line ends, tabs, truncation, random flips, a size
   past the 1 MiB limit.

:func:`spec_case` returns a :class:`SpecCase`: the bytes to write as the spec, the extra
files it refers to, and the list of mutations applied (for the failure report).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .choose import Chooser

REPO = Path(__file__).resolve().parents[2]

__all__ = ["SpecCase", "spec_case", "seed_specs", "DOMAIN_FILE"]

DOMAIN_FILE = "guest.xml"  # the name a seed domain is copied to in a case's folder

# -- seeds -----------------------------------------------------------------------------------

_RICH_SEEDS = [
    {"name": "numa-q35", "machine": "q35", "vcpus": 8, "memory": 8192, "numa": {"nodes": 2},
     "devices": [{"name": "nic", "model": "virtio-net", "count": 2, "numa_node": 0},
                 {"name": "gpu", "model": "hostdev", "host": "0000:41:00.0", "numa_node": 1},
                 {"name": "disk", "model": "virtio-blk"}],
     "hotplug": [{"model": "virtio-net", "count": 4, "numa_node": 1}, {"class": "pcie", "count": 2},
                 {"model": "hostdev", "count": 1, "numa_node": 0}]},
    {"name": "numa-cells", "machine": "pc", "numa": {"cells": [{"cpus": "0-1", "memory": 1024},
                                                               {"cpus": "2-3", "memory": 1024}]},
     "devices": [{"model": "e1000", "count": 3, "numa_node": 1}],
     "hotplug": [{"class": "pci", "count": 4, "numa_node": 0}, {"class": "pci", "count": 2}]},
    {"name": "numa-pseries", "machine": "pseries", "memory": 4096, "numa": {"nodes": 2},
     "devices": [{"name": "vf", "model": "hostdev", "iommu_group": 3, "host": "0001:01:00.0", "numa_node": 1}],
     "hotplug": [{"model": "hostdev", "count": 2, "numa_node": 1}, {"model": "virtio-net", "count": 3}]},
    {"name": "switches", "machine": "q35", "defaults": {"usb": False, "memballoon": False},
     "devices": [{"name": f"p{s:02x}", "model": "e1000e", "address": f"0000:00:{s:02x}.0", "hotunplug": False}
                 for s in range(0x03, 0x1c)],
     "hotplug": [{"class": "pcie", "count": 40}]},
    {"name": "io-limit", "machine": "q35", "io_ports": "limit 4",
     "devices": [{"model": "e1000", "count": 3}, {"model": "rtl8139"}], "hotplug": [{"model": "e1000e", "count": 3}]},
    {"name": "io-dict", "machine": "virt", "arch": "aarch64", "io_ports": {"limit": 2},
     "devices": [{"model": "virtio-net-transitional"}], "hotplug": [{"class": "pcie", "count": 3}]},
    {"name": "groups", "machine": "pseries", "type": "qemu",
     "devices": [{"name": f"vf{i}", "model": "hostdev", "iommu_group": i // 2, "host": f"0001:0{i}:00.0"}
                 for i in range(6)],
     "hotplug": [{"model": "hostdev", "count": 3}]},
    {"name": "riscv", "machine": "virt", "arch": "riscv64", "devices": [{"model": "virtio-blk", "count": 2}],
     "hotplug": [{"class": "pcie", "count": 2}]},
    {"name": "kitchen", "machine": "pc-i440fx-7.2", "vcpus": 4, "memory": 2048,
     "defaults": {"usb": True, "memballoon": True, "video": True},
     "devices": [{"model": "qxl"}, {"model": "ich9-hda"}, {"model": "pci-serial"}, {"model": "virtio-rng"},
                 {"model": "virtio-scsi"}, {"model": "virtio-serial"}, {"model": "virtio-input"},
                 {"name": "old", "model": "e1000", "address": "0000:00:05.0", "hotunplug": False}],
     "hotplug": [{"class": "pci", "count": 6}, {"model": "virtio-blk-transitional", "count": 2}]},
    {"name": "groups-q35", "machine": "q35", "target": "debian-13", "firmware": "efi",
     "devices": [{"name": "gpu", "model": "hostdev", "host": "0000:41:00", "functions": 2},
                 {"name": "nics", "model": "e1000e", "functions": 4, "address": "0000:00:05.0"},
                 {"name": "sys", "model": "virtio-blk", "protect": "port"},
                 {"name": "lan", "model": "virtio-net", "acpi_index": "auto"},
                 {"name": "wan", "model": "virtio-net", "acpi_index": 7}],
     "hotplug": [{"model": "hostdev", "functions": 2, "bar": "256M"}, {"model": "hostdev", "bar": "32G"},
                 {"model": "virtio-net", "count": 3}]},
    {"name": "groups-pc", "machine": "pc", "target": "debian-12",
     "devices": [{"name": "pair", "model": "virtio-net", "functions": 2}, {"model": "e1000", "acpi_index": 3}],
     "hotplug": [{"class": "pci", "count": 3, "functions": 2, "bar": "64M"}]},
    {"domain": DOMAIN_FILE, "hotplug": [{"model": "virtio-net", "count": 5}, {"class": "pci", "count": 2}]},
    {"domain": DOMAIN_FILE, "name": "renamed", "machine": "q35", "hotplug": [{"class": "hostdev", "count": 3}]},
]


@lru_cache(maxsize=1)
def seed_specs() -> tuple[tuple[str, Any], ...]:
    """(label, data) of every seed: the repository's specs, then the rich seeds above."""
    out = []
    for folder in (REPO / "specs", REPO / "specs" / "infeasible", REPO / "specs" / "gpu",
                   REPO / "benchmarks" / "samples"):
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("domain"):
                data["domain"] = DOMAIN_FILE  # the case folder holds a copy of a seed domain
            out.append((str(path.relative_to(REPO)), data))
    out += [(f"seed:{d.get('name', 'domain')}", d) for d in _RICH_SEEDS]
    return tuple(out)


# -- values ----------------------------------------------------------------------------------

BOUNDARY_INTS = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 63, 64, 65, 127, 128, 129, 240, 241, 250, 251, 252, 254,
                 255, 256, 257, 288, 512, 513, 1024, 4095, 4096, 4097, 9999, 10_000, 10_001, 65_535, 65_536,
                 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**43 - 1, 2**43, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
                 10**30, -1, -2, -(2**63)]
ODD_STRINGS = ["", " ", "x", "\n", "a\n", "\t", "²", "٣", "３", "1e3", "0x10", "0o17", "017", "1_000", "limit 5",
               "limit", "limit -1", "limit ²", "limit 99", "warn", "-1", "1.5", "true", "null", "💥", "\u202eabc",
               "a" * 248, "a" * 247, "x" * 100_000, "0000:00:05.0", "0000:00:1f.7", "ffff:ff:1f.7", "00:05.0",
               "0000:00:20.0", "0000:00:05.8", "0000:00:05.0\n", " 0000:00:05.0 ", "0-3", "0-4095", "0-4096",
               "3-1", "0,,1", "0-3,^2", "٠-٣", "9" * 5000, "1:30", "../../etc/passwd", "/dev/zero", "/", ".",
               "nul\x00byte", "ctrl\x01char", "\ud800", "q35\n", "pc-q35-7.2", "pseries-rhel8.6.0"]
ODD_VALUES: list[Any] = [None, True, False, 0.5, 1.0, -0.0, 1e308, float("inf"), float("nan"), [], {}, [1, 2],
                         {"a": 1}, [[[]]], {"limit": 3}, {"nodes": 2}]

NUMERIC_FIELDS = [("memory",), ("vcpus",), ("numa", "nodes"), ("io_ports", "limit"), ("io_ports",)]
ENTRY_NUMERIC = {"devices": ["count", "iommu_group", "numa_node", "functions", "acpi_index"],
                 "hotplug": ["count", "numa_node", "functions"]}
MACHINES = ["q35", "pc", "pseries", "virt", "i440fx", "pc-q35-7.2", "pc-i440fx-7.2", "pseries-7.2", "virt-7.2",
            "pc-q35-rhel8.6.0", "pc-q35-2.0", "virt-9.9", "q36", "", "Q35", "pc-q35-", "pseries-", "microvm", "isapc"]
ARCHES = ["x86_64", "i686", "ppc64le", "ppc64", "aarch64", "riscv64", "armv7l", "s390x", ""]
KEYS = ["name", "machine", "domain", "arch", "type", "memory", "vcpus", "defaults", "devices", "hotplug",
        "io_ports", "numa", "model", "class", "count", "address", "hotunplug", "iommu_group", "host", "numa_node",
        "cells", "cpus", "nodes", "limit", "usb", "memballoon", "video", "colour", "adress", "Name", "<<", "",
        "functions", "protect", "acpi_index", "bar", "target", "firmware",
        "devices ", "count\n"]
DOMAIN_TARGETS = [DOMAIN_FILE, "/dev/zero", "/dev/null", "missing.xml", ".", "/etc/passwd", "/proc/self/mem",
                  "sub/../" + DOMAIN_FILE, "nul\x00.xml", "x" * 300 + ".xml", "spec.yaml"]


@lru_cache(maxsize=1)
def _models() -> tuple[list[str], list[str]]:
    from topo_solve.rules.devices import DEVICES

    models = sorted(DEVICES)
    return models, [m for m in models if DEVICES[m].hotplug]


# -- data-level mutations ---------------------------------------------------------------------

def _paths(data: Any, limit: int = 2000) -> list[tuple]:
    """Paths to the values inside ``data`` (dict keys and list indexes); a shared or self-containing
    object is entered once, and at most ``limit`` paths are listed (aliases of aliases stay cheap)."""
    out: list[tuple] = []
    seen: set[int] = set()
    todo: list[tuple[Any, tuple]] = [(data, ())]
    while todo and len(out) < limit:
        node, prefix = todo.pop(0)
        out.append(prefix)
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            todo.extend((v, prefix + (k,)) for k, v in items)
    return out


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = _get(data, path[:-1])
    parent[path[-1]] = value
    return data


def _container_paths(data: Any, kind: type) -> list[tuple]:
    return [p for p in _paths(data) if isinstance(_get(data, p), kind)]


def _weird(c: Chooser) -> Any:
    kind = c.integer(0, 2)
    if kind == 0:
        return c.choice(BOUNDARY_INTS)
    if kind == 1:
        return c.choice(ODD_STRINGS)
    return copy.deepcopy(c.choice(ODD_VALUES))


def m_set_weird(data: Any, c: Chooser) -> Any:
    paths = _paths(data)
    return _set(data, c.choice(paths), _weird(c))


def m_numeric_bound(data: Any, c: Chooser) -> Any:
    if not isinstance(data, dict):
        return data
    section = c.choice(["top", "devices", "hotplug", "cells"])
    value = c.choice(BOUNDARY_INTS) if c.boolean(0.8) else str(c.choice(BOUNDARY_INTS))
    if section == "top":
        path = c.choice(NUMERIC_FIELDS)
        if path[0] in ("numa", "io_ports") and len(path) == 2 and not isinstance(data.get(path[0]), dict):
            data[path[0]] = {}
        if path == ("io_ports",):
            value = f"limit {value}"
        return _set(data, path, value)
    if section == "cells":
        numa = data.setdefault("numa", {}) if isinstance(data.get("numa", {}), dict) else {}
        cells = numa.setdefault("cells", [{"cpus": "0", "memory": 512}]) if isinstance(numa, dict) else []
        if isinstance(cells, list) and cells and isinstance(cells[0], dict):
            cell = c.choice(cells)
            if isinstance(cell, dict):
                cell[c.choice(["memory", "cpus"])] = value if c.boolean() else f"0-{value}"
        return data
    entries = data.get(section)
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        entry = c.choice(entries)
        if isinstance(entry, dict):
            entry[c.choice(ENTRY_NUMERIC[section])] = value
    return data


def m_delete_key(data: Any, c: Chooser) -> Any:
    dicts = [p for p in _container_paths(data, dict) if _get(data, p)]
    if dicts:
        d = _get(data, c.choice(dicts))
        del d[c.choice(list(d))]
    return data


def m_add_key(data: Any, c: Chooser) -> Any:
    dicts = _container_paths(data, dict)
    if dicts:
        _get(data, c.choice(dicts))[c.choice(KEYS)] = _weird(c) if c.boolean(0.5) else 1
    return data


def m_list_edit(data: Any, c: Chooser) -> Any:
    lists = [p for p in _container_paths(data, list) if _get(data, p)]
    if not lists:
        return data
    items = _get(data, c.choice(lists))
    op = c.integer(0, 4)
    i = c.integer(0, len(items) - 1)
    if op == 0:
        items.append(copy.deepcopy(items[i]))  # a duplicate entry (same names)
    elif op == 1:
        del items[i]
    elif op == 2:
        items.insert(0, items.pop(i))
    elif op == 3:
        items[i] = [items[i]]  # one level too deep
    else:
        items.extend(copy.deepcopy(items) * c.integer(1, 40))  # many entries
    return data


def m_machine(data: Any, c: Chooser) -> Any:
    if isinstance(data, dict):
        data["machine"] = c.choice(MACHINES)
        if c.boolean(0.3):
            data["arch"] = c.choice(ARCHES)
    return data


def m_models(data: Any, c: Chooser) -> Any:
    if not isinstance(data, dict):
        return data
    models, hot = _models()
    section = c.choice(["devices", "hotplug"])
    entries = data.get(section)
    if not isinstance(entries, list):
        entries = data[section] = []
    entry: dict = {"model": c.choice(models if section == "devices" else hot + models[:2])}
    if section == "hotplug" and c.boolean(0.3):
        entry = {"class": c.choice(["pcie", "pci", "hostdev", "pcie-ish", "PCI"])}
    entry["count"] = c.choice([0, 1, 2, 3, 8, 31, 32, 100, 240, 251, 300, 1000])
    if section == "devices":
        if c.boolean(0.3):
            entry["address"] = f"0000:00:{c.integer(0, 0x1f):02x}.{c.integer(0, 7)}"
            entry["count"] = 1
        if c.boolean(0.2):
            entry["hotunplug"] = False
        if entry["model"] == "hostdev":
            if c.boolean(0.5):
                entry["iommu_group"] = c.integer(0, 40)
            if c.boolean(0.5):
                entry["host"] = f"{c.integer(0, 3):04x}:{c.integer(0, 255):02x}:{c.integer(0, 31):02x}.0"
                entry["count"] = 1
        if c.boolean(0.2):
            entry["name"] = c.choice(["nic", "gpu", "usb", "balloon", "video", "a.b-c_d", "-x", ".x", "é"])
    if c.boolean(0.2):
        entry["numa_node"] = c.integer(0, 3)
    entries.append(entry)
    return data


def m_numa(data: Any, c: Chooser) -> Any:
    if not isinstance(data, dict):
        return data
    if c.boolean(0.5):
        data["numa"] = {"nodes": c.choice([1, 2, 3, 4, 8, 64, 128, 129, 0])}
    else:
        n = c.integer(1, 5)
        cells, cpu = [], 0
        for _ in range(n):
            width = c.integer(1, 4)
            cpus = c.choice([f"{cpu}-{cpu + width - 1}", f"{cpu}", f"{cpu},{cpu + 1}", "0-3", "", "a", "0-4096",
                             f"{cpu + width}-{cpu}"])
            cells.append({"cpus": cpus, "memory": c.choice([256, 512, 1000, 1024, 0, 2**43 - 1])})
            cpu += width
        data["numa"] = {"cells": cells}
    if c.boolean(0.5):
        data.pop("vcpus", None) if c.boolean() else data.__setitem__("vcpus", c.choice([1, 2, 4, 8, 16]))
    for section in ("devices", "hotplug"):
        for entry in data.get(section) or []:
            if isinstance(entry, dict) and c.boolean(0.4):
                entry["numa_node"] = c.integer(0, 4)
    return data


def m_domain(data: Any, c: Chooser) -> Any:
    if not isinstance(data, dict):
        return data
    data["domain"] = c.choice(DOMAIN_TARGETS) if c.boolean(0.6) else DOMAIN_FILE
    for key in ("devices", "numa", "memory", "vcpus", "arch", "io_ports", "defaults", "type"):
        if c.boolean(0.9):
            data.pop(key, None)
    if c.boolean(0.5):
        data.pop("name", None)
    if c.boolean(0.5):
        data.pop("machine", None)
    if not data.get("hotplug"):
        data["hotplug"] = [{"class": "pcie", "count": c.integer(0, 20)}]
    return data


def m_names(data: Any, c: Chooser) -> Any:
    if isinstance(data, dict):
        data["name"] = c.choice(["g", "a" * 247, "a" * 248, "web-01\n", "web 01", ".hidden", "-x", "_x", "é",
                                 "a/b", "", "x\x00", "ok.name-1_2", 12, None, ["a"]])
    return data


def m_share(data: Any, c: Chooser) -> Any:
    """Reuse one object in two places: yaml.safe_dump writes an anchor and an alias."""
    containers = [p for p in _paths(data) if p and isinstance(_get(data, p), (dict, list))]
    if len(containers) >= 1:
        src = _get(data, c.choice(containers))
        targets = _paths(data)
        dst = c.choice(targets)
        if dst and src is not _get(data, dst):
            try:
                _set(data, dst, src)
            except (TypeError, IndexError, KeyError):
                pass
    return data


def m_laughs(data: Any, c: Chooser) -> Any:
    """Nested shared lists: a few hundred bytes of YAML that expand to 10^k values."""
    width, depth = c.integer(2, 10), c.integer(2, 12)
    node: Any = ["lol"] * width
    for _ in range(depth):
        node = [node] * width
    key = c.choice(["devices", "hotplug", "x-laughs", "name"])
    if isinstance(data, dict):
        data[key] = node
    return data


def m_self(data: Any, c: Chooser) -> Any:
    """A list or mapping that contains itself: '&id001 [*id001]'."""
    if isinstance(data, dict):
        if c.boolean():
            loop: Any = []
            loop.append(loop)
        else:
            loop = {}
            loop["a"] = loop
        data[c.choice(["devices", "numa", "x"])] = loop
    return data


def m_deep(data: Any, c: Chooser) -> Any:
    depth = c.choice([30, 31, 32, 33, 50, 200])
    node: Any = 1
    for _ in range(depth):
        node = [node] if c.boolean() else {"a": node}
    if isinstance(data, dict):
        data[c.choice(["devices", "hotplug", "numa", "x"])] = node
    return data


def m_merge_marker(data: Any, c: Chooser) -> Any:
    """Put a shared mapping under '__merge__' in two entries; the text pass turns it into '<<: *id'."""
    entries = [e for s in ("devices", "hotplug") for e in (data.get(s) or []) if isinstance(data, dict)
               and isinstance(e, dict)] if isinstance(data, dict) else []
    if len(entries) >= 1:
        base = {"model": c.choice(_models()[1]), "count": c.integer(0, 5)}
        for e in c.sample(entries, c.integer(1, 3)):
            e["__merge__"] = base
            if c.boolean(0.5):
                e.pop("model", None)
    return data


DATA_MUTATIONS = [m_set_weird, m_numeric_bound, m_delete_key, m_add_key, m_list_edit, m_machine, m_models, m_numa,
                  m_domain, m_names, m_share, m_laughs, m_self, m_deep, m_merge_marker]
_DATA_WEIGHTS = [6, 10, 3, 3, 4, 3, 8, 5, 3, 2, 2, 1, 1, 1, 2]


# -- YAML text -------------------------------------------------------------------------------

ODD_SCALARS = ["~", "null", "Null", "yes", "No", "on", "OFF", "y", "n", "0x1F", "0o17", "017", "0b101", "1_000",
               "1:30", "190:20:30", ".inf", "-.Inf", ".NaN", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
               "2001-99-99", "'quoted'", '"\\u0000"', '"\\x85"', '"\\ud800"', '"\\x01"', '"\\e"', "|\n  block",
               ">-\n  folded", "!!python/object:os.system x", "!!python/name:os.system", "!!binary aGVsbG8=",
               "!!int 12", "!!int x", "!!str 12", "!!float 1", "!!bool maybe", "!!null ''", "!!timestamp x",
               "!custom x", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!map {a: 1}", "!!seq [1]",
               "&a 1", "*nowhere", "&x [*x]", "? [a]", "[a, b", "{a: 1, a: 2}", "@x", "`x", "%x", "- - -",
               "1e400", "-0", "+12", "0x" + "f" * 70, "1" * 70, ":", "' '", '"\\N\\_\\L\\P"']


def _text_mutation(text: str, c: Chooser) -> tuple[str, str]:
    lines = text.split("\n")
    kind = c.integer(0, 11)
    if kind == 0:  # a value replaced by an odd scalar
        candidates = [i for i, ln in enumerate(lines) if ": " in ln]
        if candidates:
            i = c.choice(candidates)
            head = lines[i].split(": ", 1)[0]
            lines[i] = f"{head}: {c.choice(ODD_SCALARS)}"
        return "\n".join(lines), "odd-scalar"
    if kind == 1:  # a key line written twice
        candidates = [i for i, ln in enumerate(lines) if ":" in ln and not ln.lstrip().startswith("-")]
        if candidates:
            i = c.choice(candidates)
            lines.insert(i + 1, lines[i])
        return "\n".join(lines), "duplicate-key"
    if kind == 2:  # a second document
        return text + "\n---\nname: second\nmachine: q35\n", "two-documents"
    if kind == 3:  # directives
        return c.choice(["%YAML 1.1\n---\n", "%YAML 1.3\n---\n", "%YAML 2.0\n---\n",
                         "%TAG ! tag:example.com,2000:\n---\n", "%FOO bar\n---\n", "--- !!map\n",
                         "--- !local\n"]) + text, "directive"
    if kind == 4:  # a complex key
        return "? [a, b]\n: 1\n" + text if c.boolean() else "? {a: 1}\n: 1\n" + text, "complex-key"
    if kind == 5:  # deep flow nesting in a value
        n = c.choice([31, 32, 33, 64, 999, 1000, 1001, 5000])
        opener = c.choice(["[", "{a: "])
        closer = "]" if opener == "[" else "}"
        return text + f"\nx-deep: {opener * n}1{closer * n}\n", "deep-nesting"
    if kind == 6:  # a very long line
        return text + "\nx-long: " + "a" * c.choice([10_000, 200_000, 1_100_000]) + "\n", "long-line"
    if kind == 7:  # comments everywhere
        return "\n".join(ln + "  # c" if ln.strip() and c.boolean(0.5) else ln for ln in lines), "comments"
    if kind == 8:  # merge keys from the marker
        return text.replace("__merge__:", "<<:"), "merge-key"
    if kind == 9:  # an anchor on one key, its alias elsewhere
        candidates = [i for i, ln in enumerate(lines) if ": " in ln]
        if len(candidates) >= 2:
            a, b = c.sample(candidates, 2)
            head_a, val_a = lines[a].split(": ", 1)
            lines[a] = f"{head_a}: &anc {val_a}"
            head_b = lines[b].split(": ", 1)[0]
            lines[b] = f"{head_b}: *anc"
        return "\n".join(lines), "anchor-alias"
    if kind == 10:  # tabs for indentation
        return "\n".join(ln.replace("  ", "\t", 1) if c.boolean(0.3) else ln for ln in lines), "tabs"
    # a merge key at the top level, with an anchored base mapping
    return ("base: &b {machine: q35, vcpus: 2}\n<<: *b\n" + text if c.boolean()
            else "<<: [{name: merged}, {machine: pc}]\n" + text), "top-merge"


def _byte_mutation(data: bytes, c: Chooser) -> tuple[bytes, str]:
    kind = c.integer(0, 12)
    pos = c.integer(0, max(0, len(data) - 1)) if data else 0
    if kind == 0:
        return b"\xef\xbb\xbf" + data, "utf8-bom"
    if kind == 1:
        text = data.decode("utf-8", "replace")
        return (text.encode("utf-16") if c.boolean() else text.encode("utf-16-be")), "utf-16"
    if kind == 2:
        return data.replace(b"web", "wéb".encode("latin-1")) + "# é\n".encode("latin-1"), "latin-1"
    if kind == 3:
        return data[:pos] + c.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]) + data[pos:], \
            "invalid-utf8"
    if kind == 4:
        return data[:pos] + b"\x00" + data[pos:], "nul"
    if kind == 5:
        ch = c.choice(["\x01", "\x07", "\x0b", "\x0c", "\x1b", "\x7f", "\x80", "\x9f", "\ufffe", "\uffff"])
        return data[:pos] + ch.encode("utf-8", "surrogatepass") + data[pos:], "control-char"
    if kind == 6:
        return data.replace(b"\n", b"\r\n"), "crlf"
    if kind == 7:
        return data.replace(b"\n", b"\r"), "cr"
    if kind == 8:
        return data.replace(b"\n", c.choice(["\x85", "\u2028", "\u2029"]).encode()), "unicode-line-end"
    if kind == 9:
        return data[:pos], "truncated"
    if kind == 10:
        out = bytearray(data)
        for _ in range(c.integer(1, 4)):
            if out:
                out[c.integer(0, len(out) - 1)] = c.integer(0, 255)
        return bytes(out), "byte-flips"
    if kind == 11:
        return data + b"#" + b"x" * (1024 * 1024) + b"\n", "over-1MiB"
    return data.replace(b": ", b":\t", 1), "tab-after-colon"


# -- a case ----------------------------------------------------------------------------------

@dataclass
class SpecCase:
    data: bytes  # the spec file's bytes
    seed: str
    mutations: list[str] = field(default_factory=list)
    domain_seed: str | None = None  # which seed domain to copy to DOMAIN_FILE (the generator of XML chooses)
    parsed: Any = None  # the data before serializing (None when the bytes were mutated past YAML)
    batch: bool = False  # also run it through `topo-solve batch` (same answer, same bytes)

    def describe(self) -> str:
        return f"seed {self.seed}; mutations: {', '.join(self.mutations) or 'none'}"


def _dump(data: Any, c: Chooser) -> str:
    style = c.choice([None, True, False])
    try:
        return yaml.safe_dump(data, default_flow_style=style, sort_keys=False, allow_unicode=c.boolean(),
                              width=c.choice([80, 10_000]))
    except (yaml.YAMLError, RecursionError, ValueError):
        return yaml.safe_dump({"name": "fallback", "machine": "q35"})


def spec_case(c: Chooser) -> SpecCase:
    label, seed = c.choice(seed_specs())
    data = copy.deepcopy(seed)
    case = SpecCase(b"", label)
    for _ in range(c.weighted([(3, 0), (6, 1), (4, 2), (2, 3), (1, 5)])):
        mutation = c.weighted(list(zip(_DATA_WEIGHTS, DATA_MUTATIONS)))
        try:
            data = mutation(data, c)
        except (TypeError, KeyError, IndexError, AttributeError, RecursionError):
            pass
        case.mutations.append(mutation.__name__[2:])
    text = _dump(data, c)
    if "__merge__" in text and c.boolean(0.8):
        text = text.replace("__merge__:", "<<:")
    for _ in range(c.weighted([(6, 0), (3, 1), (1, 2)])):
        text, name = _text_mutation(text, c)
        case.mutations.append(name)
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(c.weighted([(7, 0), (3, 1)])):
        raw, name = _byte_mutation(raw, c)
        case.mutations.append(name)
    case.data = raw
    case.parsed = data
    case.batch = c.boolean(0.15)
    return case
