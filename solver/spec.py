"""The spec file: YAML in, a core :class:`~topo_solve.model.Problem` out.

Two layers, as in packaging's raw and validated metadata: pydantic models mirror
the YAML (and give ``topo-solve schema`` its JSON Schema), then
:func:`to_problem` checks what needs the rule tables and builds the frozen core
types.  Every problem in a file is reported at once, each with its line.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from .errors import Finding, SpecError
from .model import Address, EndpointClass, Endpoint, Headroom, NumaCell, Problem, Target
from .rules import MACHINE_WORDS, family_for, machine_suggestions
from .rules.devices import DEVICES
from .rules.firmware import of_kind

__all__ = ["Spec", "load_spec", "parse_spec", "to_problem", "json_schema"]

# Guest and device names: what libvirt's schema takes for a device alias (domaincommon.rng aliasName,
# [a-zA-Z0-9_\-.]+; the domain <name> takes any line without a newline), not starting with '.' or '-'.
# fullmatch: '$' would also match before a final newline.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# libvirt saves a guest as /etc/libvirt/qemu/NAME.xml.new, then renames it: NAME_MAX (255) less
# 8 characters (measured: virsh define of a 248-character name fails "File name too long").
MAX_NAME = 247

# Largest counts one entry may ask for: beyond any machine's limits, small enough to stay fast.
MAX_COUNT = 10_000
# QEMU's MAX_NODES (include/sysemu/numa.h): a guest has at most 128 NUMA nodes.
MAX_NUMA_NODES = 128
# Memory in MiB: libvirt's virDomainParseMemory caps a size at virMemoryMaxValue() = LLONG_MAX bytes
# (2^63 - 1) on 64-bit hosts, so 2^43 - 1 MiB is the largest <memory unit='MiB'> and <cell memory>
# it defines (measured: 8796093022208 MiB fails "numerical overflow: value too large").
MAX_MEMORY_MIB = 2**43 - 1
MIN_MEMORY_MIB = 16
# vCPUs: domain.rng's countCPU is an unsignedShort; no family's machine takes more than 4096
# (QEMU 7.2 pseries, domcapabilities <vcpu max='4096'/>); each family's own limit is in its rules.
MAX_VCPUS = 4096
# A host IOMMU group number: nodedev.rng's <iommuGroup number> is an unsignedInt.
MAX_IOMMU_GROUP = 2**32 - 1
# I/O windows: a 64 KiB I/O space holds at most 16 windows of 4 KiB; 64 leaves room for any policy.
MAX_IO_PORTS = 64


def whole_number(value: Any, lo: int, hi: int, what: str = "") -> int:
    """Every number of a spec and of --hotplug goes through here: an int, or a string of the ASCII
    digits 0-9 (YAML '4' quoted), from ``lo`` to ``hi``; anything else a ValueError that says what is
    accepted.  ``str.isdigit()`` is not the test: it takes superscripts and other digits int() refuses."""
    span = f"a whole number from {lo} to {hi}"
    tail = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        shown = str(value).lower() if isinstance(value, bool) else (
            f"a {type(value).__name__}" if isinstance(value, (list, dict)) else repr(value))
        raise ValueError(f"{shown} is not {span}{tail}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[0-9]+", text):
            shown = value if len(value) <= 24 else value[:20] + "..."
            hint = "; write it with the digits 0-9" if any(c.isdigit() or c.isnumeric() for c in text) else ""
            raise ValueError(f"'{shown}' is not {span}{tail}{hint}")
        if len(text.lstrip("0")) > len(str(hi)):  # no int() of thousands of digits
            raise ValueError(f"'{text[:20]}...' is more than {hi}; use {span}{tail}")
        value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{value if abs(value) < 10**30 else 'the number'} is out of range; use {span}{tail}")
    return value


def _number(lo: int, hi: int, what: str = ""):
    """An int field checked by :func:`whole_number`; the JSON Schema still shows the bounds."""
    return Annotated[int, BeforeValidator(partial(whole_number, lo=lo, hi=hi, what=what)), Field(ge=lo, le=hi)]


Count = _number(1, MAX_COUNT)
Headroom_ = _number(0, MAX_COUNT)
NodeId = _number(0, MAX_NUMA_NODES - 1, f"a guest has at most {MAX_NUMA_NODES} NUMA nodes")
Memory = _number(MIN_MEMORY_MIB, MAX_MEMORY_MIB, "MiB; libvirt takes at most 2^63 - 1 bytes")
CellMemory = _number(1, MAX_MEMORY_MIB, "MiB; libvirt takes at most 2^63 - 1 bytes")
Vcpus = _number(1, MAX_VCPUS)
IommuGroup = _number(0, MAX_IOMMU_GROUP)
Nodes = _number(1, MAX_NUMA_NODES, f"QEMU takes at most {MAX_NUMA_NODES} NUMA nodes")
IoLimit = _number(0, MAX_IO_PORTS)
# A PCI slot has 8 functions (0-7); a group of one function is no group.
MAX_FUNCTIONS = 8
Functions = _number(2, MAX_FUNCTIONS, "the functions of one PCI slot: 2 to 8")
# A host slot without a function ("DDDD:BB:SS" or "BB:SS"): every function of that host slot.
_HOST_SLOT = re.compile(r"^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})$")


def name_problem(name: str, what: str = "guest") -> str | None:
    """What is wrong with a guest or device name, or None."""
    if not _NAME.fullmatch(name):
        return "use letters, digits, '_', '.' and '-' only (not first: '.' and '-')"
    if len(name) > MAX_NAME:
        why = " (libvirt saves a guest as NAME.xml.new, within the 255 characters of a file name)" \
            if what == "guest" else ", as a guest name"
        return f"{len(name)} characters; a {what} name has at most {MAX_NAME}{why}"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Model):
    """The devices libvirt adds by itself; unset means what libvirt does on that machine."""

    usb: bool | None = Field(None, description="the default USB controller")
    memballoon: bool | None = Field(None, description="the virtio memory balloon")
    video: bool | None = Field(None, description="a primary video card")


class DeviceSpec(_Model):
    """Devices present when the guest boots."""

    name: str | None = Field(None, description="alias base; defaults to the model; count > 1 appends -0, -1, ...")
    model: str = Field(description="device model, e.g. virtio-net, e1000, hostdev")
    count: Count = 1
    address: str | None = Field(None, description="pin to this PCI address (DDDD:BB:SS.F), root bus only")
    hotunplug: bool = Field(True, description="false: never unplugged, so it may sit on the root complex")
    iommu_group: IommuGroup | None = Field(None, description="host IOMMU group of an assigned device")
    host: str | None = Field(None, description="host PCI address of an assigned device")
    numa_node: NodeId | None = Field(None, description="guest NUMA node: the device sits behind that node's "
                                  "expander bus (a PHB of the node on pseries)")
    functions: Functions | None = Field(None, description="a multifunction device: this many functions (2-8) on "
                                        "one guest slot, function 0 with multifunction='on' (a GPU with its audio "
                                        "function); a hostdev 'host' slot without a function takes functions 0..N-1")
    protect: Literal["port"] | None = Field(None, description="'port': never unplugged, behind a pcie-root-port "
                                            "of its own with <target hotplug='off'/> (libvirt 6.3)")
    acpi_index: Annotated[str | int | None, BeforeValidator(
        lambda v: _scalar(v, "an acpi index: 'auto' or a number 1-16383"))] = Field(
            None, description="a NIC's stable name in the guest: 'auto' or a number 1-16383, written as "
            "<acpi index='N'/>")


def _scalar(value: Any, what: str) -> Any:
    """A string or a whole number (not a bool, a float, a list): one message naming what is accepted."""
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    shown = str(value).lower() if isinstance(value, bool) else (
        f"a {type(value).__name__}" if isinstance(value, (list, dict)) else repr(value))
    raise ValueError(f"{shown} is not {what}")


class HotplugSpec(_Model):
    """Devices that must be attachable later, live, all at once."""

    model: str | None = None
    class_: Literal["pcie", "pci", "hostdev"] | None = Field(None, alias="class")
    count: Headroom_ = 1
    numa_node: NodeId | None = Field(None, description="the headroom must be on this guest NUMA node")
    functions: Functions | None = Field(None, description="devices of this many functions each: libvirt hotplugs "
                                        "function 0 of a slot only, so each function takes a port of its own")
    bar: Annotated[str | int | None, BeforeValidator(lambda v: _scalar(v, "a size such as 256M or 32G"))] = Field(
        None, description="the largest BAR of one such device, a power of two with K, M, G or "
                            "T (e.g. 32G): its ports reserve the memory window for it")
    host: str | None = Field(None, description="for model hostdev: the host device to hotplug later; with "
                             "--host-sysfs its BARs are read from the host")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NumaCellSpec(_Model):
    """One guest NUMA node: its vCPUs and memory."""

    cpus: str = Field(description="vCPU ids, libvirt's cpuset syntax: '0-1', '0,2', '4-7,9'")
    memory: CellMemory = Field(description="MiB")


class NumaSpec(_Model):
    """The guest's NUMA nodes: 'nodes: N' splits vcpus and memory evenly; 'cells' gives each node's."""

    nodes: Nodes | None = Field(None, description="this many nodes, vcpus and memory "
                              "split evenly")
    cells: list[NumaCellSpec] = Field([], max_length=MAX_NUMA_NODES, description="one entry per node, node i = "
                                      "cells[i]")


class IoPorts(_Model):
    """A hard limit on ports with I/O-BAR devices behind them (each takes a 4 KiB I/O window)."""

    limit: IoLimit


class TargetSpec(BaseModel):
    """The libvirt and QEMU versions the guest will run on, as "MAJOR.MINOR" strings."""

    # extra keys and missing ones are reported by rules.versions.target_from, in its words
    model_config = ConfigDict(extra="allow", frozen=True)

    libvirt: str | int | float | None = Field(None, description="libvirt version, e.g. \"9.0\" (quoted: YAML "
                                              "reads 10.10 as 10.1)")
    qemu: str | int | float | None = Field(None, description="QEMU version, e.g. \"7.2\"")


def _target_shape(value: Any) -> Any:
    if value is None or isinstance(value, (str, dict)):
        return value
    raise ValueError("a target is a distribution alias (debian-12, debian-13, ubuntu-24.04, ...) or "
                     "{libvirt: \"X.Y\", qemu: \"X.Y\"}")


class Spec(_Model):
    """A topo-solve spec (format v1)."""

    name: str | None = Field(None, description="the guest's name (required unless 'domain' is given)")
    machine: str | None = Field(None, description="q35 | pc | pseries | virt, or a libvirt machine type such as "
                                "pc-q35-7.2 (required unless 'domain' is given)")
    domain: str | None = Field(None, description="extend this existing guest (a libvirt domain XML as virsh "
                               "dumpxml prints it; relative to the spec) instead of planning 'devices'")
    arch: str | None = None
    type: Literal["kvm", "qemu"] = Field("kvm", description="libvirt domain type; qemu = TCG emulation")
    memory: Memory = Field(1024, description="MiB")
    vcpus: Vcpus = 1
    defaults: Defaults = Defaults()
    devices: list[DeviceSpec] = []
    hotplug: list[HotplugSpec] = []
    firmware: Literal["bios", "efi"] | None = Field(
        None, description="the guest firmware: bios (SeaBIOS, x86's default) or efi (UEFI: OVMF, AAVMF), "
        "written as <os firmware='efi'>; the I/O-window limits are measured per firmware")
    io_ports: str | IoPorts = Field("warn", description="ports whose devices have I/O BARs: 'warn' past what the "
                                    "firmware gives I/O windows (the default), or a hard limit: 'limit' (the "
                                    "firmware's, measured), 'limit N' or {limit: N}")
    numa: NumaSpec | None = Field(None, description="guest NUMA nodes; devices and hotplug entries name one with "
                                  "'numa_node'")
    layout: Literal["qemu-guidelines", "libvirt-accepts"] = Field(
        "qemu-guidelines", description="what the planner may build: QEMU's docs/pcie.txt guidelines (the default), "
        "or also what libvirt accepts where it costs fewer controllers (a pci-bridge on pcie-root)")
    target: Annotated[str | TargetSpec | None, BeforeValidator(_target_shape)] = Field(
        None, description="what the guest will run on: a distribution alias (debian-12, debian-13, ubuntu-24.04, "
        "...) or {libvirt: \"X.Y\", qemu: \"X.Y\"}; default: the newest versions topo-solve knows")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        problem = None if v is None else name_problem(v)
        if problem:
            raise ValueError(problem)
        return v


def json_schema() -> dict[str, Any]:
    return Spec.model_json_schema(by_alias=True)


# -- YAML with line numbers ------------------------------------------------

def _compose(text: str | bytes, file: str) -> tuple[Any, dict[tuple, int]]:
    """Load YAML (bounded in size, depth and alias expansion) and remember the line of every key and item."""
    from .yaml_read import YamlProblem, decode, load

    try:
        return load(decode(text) if isinstance(text, bytes) else text)
    except YamlProblem as exc:
        raise SpecError([Finding(file, exc.line, "", exc.message, exc.column)]) from None


def _line(lines: dict[tuple, int], path: tuple) -> int | None:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path)


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse_spec(text: str | bytes, file: str = "<spec>") -> tuple[Spec, dict[tuple, int]]:
    """A spec's text (or its bytes, UTF-8) -> the validated model and the line of every key and item."""
    data, lines = _compose(text, file)
    if not isinstance(data, dict):
        raise SpecError([Finding(file, 1, "", "a spec is a YAML mapping with at least 'name' and 'machine'")])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = tuple("class" if p == "class_" else p for p in e["loc"])
            msg = e["msg"]
            if e["type"] == "value_error":  # our validators' own words, without pydantic's "Value error, "
                msg = str(e.get("ctx", {}).get("error", msg))
            if e["type"] == "extra_forbidden":
                allowed = _allowed_fields(loc)
                guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                msg = f"unknown field; {'did you mean ' + repr(guess[0]) + '? ' if guess else ''}" \
                      f"allowed: {', '.join(allowed)}"
            elif e["type"] == "missing":
                msg = "required field is missing"
            problems.append(Finding(file, _line(lines, loc), _dotted(loc), msg))
        # A schema mistake must not hide a misspelt model or machine elsewhere in the file.
        seen = {p.path for p in problems}
        problems += [p for p in _name_findings(data, lines, file) if p.path not in seen]
        problems += [p for p in _required(data, lines, file) if p.path not in seen]
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise SpecError(problems) from None
    missing = _required(data, lines, file)
    if missing:
        raise SpecError(missing)
    return spec, lines


def _required(data: dict, lines: dict[tuple, int], file: str) -> list[Finding]:
    """'name' and 'machine' are required for a new guest; a 'domain' spec takes both from the XML."""
    if data.get("domain") is not None:
        return []
    return [Finding(file, 1, key, "required field is missing" + (" (or give 'domain' to extend an existing guest)"
                                                                 if key == "machine" else ""))
            for key in ("name", "machine") if key not in data]


def _unknown(word: str, known: list[str], what: str) -> str:
    guess = difflib.get_close_matches(word, known, n=2)
    return (f"unknown {what} '{word}'; " + (f"did you mean {' or '.join(repr(g) for g in guess)}? " if guess else "")
            + f"known: {', '.join(known)}")


def _name_findings(data: dict, lines: dict[tuple, int], file: str) -> list[Finding]:
    """Unknown machine and model names in raw YAML data (used when the schema check failed)."""
    out = []
    machine = data.get("machine")
    if isinstance(machine, str) and family_for(machine) is None:
        out.append(Finding(file, _line(lines, ("machine",)), "machine", _machine_message(machine)))
    for section in ("devices", "hotplug"):
        entries = data.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            model = entry.get("model") if isinstance(entry, dict) else None
            if isinstance(model, str) and model not in DEVICES:
                path = (section, i, "model")
                out.append(Finding(file, _line(lines, path), _dotted(path), _unknown(model, list(DEVICES),
                                                                                       "device model")))
    return out


def _machine_message(machine: str) -> str:
    guess = machine_suggestions(machine)
    return (f"unknown machine '{machine}'; " + (f"did you mean {' or '.join(repr(g) for g in guess)}? " if guess
                                                 else "") + "use q35, pc, pseries or virt (or a libvirt name such as "
            "pc-q35-7.2)")


def _allowed_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] = Spec
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        field = model.model_fields.get(p)
        if field is None:
            break
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return [f.alias or n for n, f in model.model_fields.items()]


def load_spec(path: str | Path, target: Target | None = None, host_sysfs: str | None = None) -> Problem:
    """Read a spec file and return its problem; raise SpecError listing every mistake.

    ``target``: plan for these versions instead of the spec's own target; ``host_sysfs``: read the
    host devices' facts under this sysfs root (``/sys``)."""
    request = load_request(path, target, host_sysfs=host_sysfs)
    if isinstance(request, DomainRequest):
        raise SpecError([Finding(request.source, request.line, "domain", "this spec extends an existing guest; "
                                 "run it with `topo-solve SPEC` or `topo-solve extend`, not as a new guest")])
    return request


@dataclass(frozen=True)
class DomainRequest:
    """A spec that extends an existing guest: the domain XML and the headroom it must reach."""

    domain: Path  # resolved against the spec's folder
    headroom: tuple[Headroom, ...]
    name: str | None
    machine: str | None
    source: str
    line: int | None  # of 'domain:'
    target: Target | None = None  # the spec's target (or --target); None: the default
    machine_line: int | None = None  # of 'machine:', for a message that it names another family


def load_request(path: str | Path, target: Target | None = None, data: bytes | None = None,
                 host_sysfs: str | None = None) -> Problem | DomainRequest:
    """Read a spec: a new guest (a :class:`Problem`) or an extension of an existing one.

    ``target`` (``--target``) replaces the spec's own.  ``data``: the file's bytes when the caller has
    read them already (standard input, a pipe)."""
    from .files import MAX_SPEC_BYTES, read_input, too_large

    path = Path(path)
    if data is None:
        data = read_input(str(path), MAX_SPEC_BYTES, "a spec")
    elif len(data) > MAX_SPEC_BYTES:
        raise too_large(str(path), MAX_SPEC_BYTES, "a spec")
    spec, lines = parse_spec(data, str(path))
    if spec.domain is not None:
        return to_request(spec, lines, str(path), path.parent, target=target)
    return to_problem(spec, lines, str(path), target=target, host_sysfs=host_sysfs)


# Fields that describe a new guest; a 'domain' spec takes all of this from the XML.
_NEW_GUEST_ONLY = ("arch", "type", "memory", "vcpus", "defaults", "devices", "io_ports", "numa", "firmware")


def to_request(spec: Spec, lines: dict[tuple, int], file: str, base: Path,
               target: Target | None = None) -> DomainRequest:
    problems: list[Finding] = []

    def bad(path: tuple, msg: str) -> None:
        problems.append(Finding(file, _line(lines, path), _dotted(path), msg))

    target = spec_target(spec, file, bad, target)

    for key in _NEW_GUEST_ONLY:
        if (key,) in lines:
            bad((key,), f"'{key}' describes a new guest; a spec with 'domain' takes it from the domain XML, "
                "so leave it out")
    if spec.machine is not None and family_for(spec.machine) is None:
        bad(("machine",), _machine_message(spec.machine))
    headroom = _headroom(spec, bad, lines)
    for i, h in enumerate(spec.hotplug):
        if h.numa_node is not None:
            bad(("hotplug", i, "numa_node"), "extending a guest does not place headroom on NUMA nodes; "
                "plan the guest from a spec with 'numa' instead")
        for key in ("bar", "host"):
            if getattr(h, key) is not None:
                bad(("hotplug", i, key), f"'{key}' reserves memory windows in a new guest's plan; extending a guest "
                    "does not write them yet, so leave it out (or plan the guest from a spec without 'domain')")
    rules = family_for(spec.machine, target) if spec.machine is not None else None
    if rules is not None and target is not None:
        check_versions(spec, rules, bad)
    if problems:
        raise SpecError(problems)
    domain = Path(spec.domain)
    return DomainRequest(domain=domain if domain.is_absolute() else base / domain, headroom=tuple(headroom),
                         name=spec.name, machine=spec.machine, source=file, line=_line(lines, ("domain",)),
                         target=target, machine_line=lines.get(("machine",)))


# -- from the YAML model to the core problem --------------------------------

def to_problem(spec: Spec, lines: dict[tuple, int] | None = None, file: str = "<spec>",
               target: Target | None = None, host_sysfs: str | None = None) -> Problem:
    """The core problem of a spec; ``target`` (``--target``) replaces the spec's own; ``host_sysfs``:
    read each host device's IOMMU group, NUMA node and BARs under this sysfs root (nothing is read
    without it)."""
    lines = lines or {}
    problems: list[Finding] = []

    def bad(path: tuple, msg: str) -> None:
        problems.append(Finding(file, _line(lines, path), _dotted(path), msg))

    target = spec_target(spec, file, bad, target)

    if spec.name is None or spec.machine is None:
        raise SpecError([Finding(file, 1, key, "required field is missing") for key in ("name", "machine")
                         if getattr(spec, key) is None])
    rules = family_for(spec.machine)
    if rules is None:
        bad(("machine",), _machine_message(spec.machine))
        problems += [p for p in _name_findings(spec.model_dump(by_alias=True), lines, file) if p.path != "machine"]
        raise SpecError(problems)
    arch = spec.arch or rules.arches[0]
    if arch not in rules.arches:
        bad(("arch",), f"{rules.family} machines run {' or '.join(rules.arches)}, not '{arch}'")
    # A family word (q35, i440fx, ...) becomes libvirt's alias for the newest machine of it.
    machine = rules.default_machine if spec.machine in MACHINE_WORDS else spec.machine

    cells, vcpus, memory = _numa(spec, rules, bad)
    if vcpus > rules.max_vcpus:
        bad(("vcpus",) if "vcpus" in spec.model_fields_set else ("numa",),
            f"{vcpus} vCPUs; libvirt defines a {rules.family} guest with at most {rules.max_vcpus} "
            f"({rules.max_vcpus_why})")
    flags = {k: (getattr(spec.defaults, k) if getattr(spec.defaults, k) is not None else v)
             for k, v in rules.defaults.items()}
    endpoints: list[Endpoint] = []
    names: dict[str, tuple] = {}
    pinned: dict[Address, tuple] = {}
    group_slots: dict[int, tuple] = {}  # root slots a pinned multifunction group takes whole
    user_balloon = any(d.model.startswith("virtio-balloon") for d in spec.devices)
    have_video = any(d.model in DEVICES and DEVICES[d.model].video for d in spec.devices)
    placeholder = 0
    limited: dict[str, int] = {}

    for i, d in enumerate(spec.devices):
        path = ("devices", i)
        kind = DEVICES.get(d.model)
        if kind is None:
            bad(path + ("model",), _unknown(d.model, list(DEVICES), "device model"))
            continue
        if kind.families is not None and rules.family not in kind.families:
            bad(path + ("model",), f"{d.model} does not exist on {rules.family} guests (QEMU has no such device "
                f"there); it does on {', '.join(sorted(kind.families))}")
            continue
        if kind.video and d.model == "vga" and any(
                DEVICES.get(e.model) is not None and DEVICES[e.model].video for e in spec.devices[:i]):
            bad(path + ("model",), "libvirt takes vga as the primary video device only (qemu_validate.c): "
                "list it first among the videos, or use another model")
        if kind.max_count is not None:
            # counted per element: virtio-balloon and its transitional twin are both <memballoon>
            limited[kind.element] = limited.get(kind.element, 0) + d.count
            if limited[kind.element] > kind.max_count:
                bad(path + ("count",) if d.count > kind.max_count else path + ("model",),
                    f"a guest has at most {kind.max_count} <{kind.element}> device")
        if d.iommu_group is not None and kind.cls != EndpointClass.HOSTDEV:
            bad(path + ("iommu_group",), "only assigned host devices (model: hostdev) have an IOMMU group")
        if d.host is not None and kind.cls != EndpointClass.HOSTDEV:
            bad(path + ("host",), "only assigned host devices (model: hostdev) have a host address")
        if d.host is not None and d.count > 1:
            bad(path + ("host",), "one host address names one device; write one entry per host device")
        nfn = d.functions or 1
        host_slot = None  # a host slot without a function: every function of it
        if d.functions is not None and not kind.multifunction:
            ok = ", ".join(k for k, v in DEVICES.items() if v.multifunction)
            bad(path + ("functions",), f"{d.model} cannot be a multifunction group; models that can: {ok}")
            nfn = 1
        if d.host is not None and kind.cls == EndpointClass.HOSTDEV:
            m = _HOST_SLOT.match(d.host.strip())
            if m is not None:
                dom, bus, slot = (int(g, 16) if g else 0 for g in m.groups())
                if slot > 0x1F:
                    bad(path + ("host",), f"slot 0x{slot:02x} of '{d.host}' is out of range; slots are 0x00-0x1f")
                else:
                    host_slot = f"{dom:04x}:{bus:02x}:{slot:02x}"
                    nfn = _slot_functions(host_slot, d.functions, nfn, path, host_sysfs, bad)
            else:
                try:
                    Address.parse(d.host)
                except ValueError as exc:
                    bad(path + ("host",), str(exc) + "; or DDDD:BB:SS for every function of a host slot")
                else:
                    if nfn > 1:
                        bad(path + ("host",), f"'{d.host}' names one function of a host slot; for a group of {nfn} "
                            "functions write the slot without a function (DDDD:BB:SS)")
        elif d.host is not None:
            try:
                Address.parse(d.host)
            except ValueError as exc:
                bad(path + ("host",), str(exc))
        if d.protect is not None:
            _check_protect(d, i, kind, rules.family, family_for(spec.machine, target), bad)
        pin = None
        if d.address is not None:
            if d.count > 1:
                bad(path + ("address",), "an address pins one device; write one entry per pinned device")
            try:
                pin = Address.parse(d.address)
            except ValueError as exc:
                bad(path + ("address",), str(exc))
            else:
                lo, hi = rules.bus(rules.root).slots
                reserved = dict(rules.reserved_root_slots)
                if pin.bus != 0 or pin.domain != 0:
                    bad(path + ("address",), "spec addresses pin devices to the root bus (0000:00:SS.F) only; "
                        "devices behind other controllers cannot be pinned yet")
                elif not lo <= pin.slot <= hi:
                    bad(path + ("address",), f"slot {pin.slot:#04x} is outside {rules.root}'s slots "
                        f"{lo:#04x}-{hi:#04x}")
                elif pin.slot in reserved:
                    bad(path + ("address",), f"slot {pin.slot:#04x} belongs to the chipset ({reserved[pin.slot]})")
                elif pin in pinned:
                    bad(path + ("address",), f"{pin} is already pinned by devices[{pinned[pin][1]}]")
                elif nfn > 1 and pin.function != 0:
                    bad(path + ("address",), f"a group of {nfn} functions takes functions 0-{nfn - 1} of its slot; "
                        f"pin its function 0 ({Address(0, pin.slot, 0)})")
                elif nfn > 1 and any(a.slot == pin.slot for a in pinned) or pin.slot in group_slots:
                    other = group_slots.get(pin.slot) or next(p for a, p in pinned.items() if a.slot == pin.slot)
                    bad(path + ("address",), f"slot {pin.slot:#04x} is taken whole by a multifunction group and "
                        f"cannot hold devices[{other[1]}] too; pin one of them elsewhere")
                else:
                    pinned[pin] = path
                    if nfn > 1:
                        group_slots[pin.slot] = path
        if d.numa_node is not None:
            if pin is not None or d.address is not None:
                bad(path + ("numa_node",), "a pinned device sits on the root bus, which belongs to no NUMA node; "
                    "drop 'address' or 'numa_node'")
            _check_node(d.numa_node, path + ("numa_node",), cells, spec.numa is not None, bad)
        facts = _host_facts(f"{host_slot}.0" if host_slot else d.host, path, host_sysfs, bad) \
            if kind.cls == EndpointClass.HOSTDEV else None
        group = _merged_group(d.iommu_group, facts, path, bad)
        base = d.name or d.model
        for n in range(d.count):
            name = base if d.count == 1 else f"{base}-{n}"
            problem = name_problem(name, "device")
            if problem:
                bad(path + ("name",), f"'{_cut(name)}' cannot be a libvirt alias: {problem}")
                break
            if name in names:
                bad(path + ("name",), f"device name '{name}' is used twice (also devices[{names[name][1]}]); "
                    "give one of them a 'name'")
                break
            names[name] = path
            host = d.host
            if kind.cls == EndpointClass.HOSTDEV and host is None:
                host_of = f"0000:{0x80 + placeholder // 32:02x}:{placeholder % 32:02x}"
                host = host_of + ".0"
                placeholder += 1
            else:
                host_of = host_slot
            parts: tuple = ()
            if nfn > 1:
                # function f of the group: alias NAME-fF (function 0 keeps NAME), function f of the host slot
                parts = tuple((name if f == 0 else f"{name}-f{f}",
                               f"{host_of}.{f}" if host_of is not None else None) for f in range(nfn))
                host = parts[0][1]
                for part, _ in parts[1:]:
                    problem = name_problem(part, "device")
                    if problem or part in names:
                        why = problem or f"used twice (also devices[{names[part][1]}])"
                        bad(path + ("name",), f"'{_cut(part)}', the alias of function {part.rsplit('-f', 1)[1]}, "
                            f"cannot be used: {why}; give the device another 'name'")
                        break
                    names[part] = path
            role = None
            if kind.video and not any(e.fixed_role == "primary-video" for e in endpoints):
                role = "primary-video"
            elif kind.name == "ich9-hda" and not any(e.fixed_role == "ich9-sound" for e in endpoints):
                role = "ich9-sound"
            endpoints.append(Endpoint(
                # libvirt cannot unplug some models at all (a USB controller, the balloon, video, sound):
                # they are never unplugged by nature, like a device marked 'hotunplug: false'.  A protected
                # device is never unplugged too, but it sits behind a port of its own, not on the root complex.
                name=name, kind=kind.name, cls=kind.cls, pinned=pin,
                root_ok=(not d.hotunplug or not kind.detach) and d.protect is None,
                group=group, fixed_role=role if role in rules.fixed or role == "primary-video" else None,
                host=host, line=_line(lines, path), node=d.numa_node,
                functions=tuple(range(nfn)), parts=parts, protect=d.protect is not None,
                windows=_windows_of(facts) if facts is not None else (0, 0),
                host_node=facts.numa_node if facts is not None else None,
                host_functions=facts.functions if facts is not None else (),
            ))

    # What libvirt adds by itself, written out so libvirt adds nothing.
    implicit: list[Endpoint] = []
    for flag, kind_name in rules.implicit.items():
        if flag == "memballoon" and user_balloon:
            continue
        if flags.get(flag, True):
            implicit.append(_implicit(flag, kind_name, rules))
    if flags.get("video") and not have_video:
        implicit.append(Endpoint(name="video", kind=rules.default_video, cls=DEVICES[rules.default_video].cls,
                                 implicit=True, fixed_role="primary-video",
                                 root_ok=not DEVICES[rules.default_video].detach))
    for e in implicit:
        if e.name in names:
            bad(names[e.name] + ("name",), f"'{e.name}' names the implicit {e.kind}; choose another name")

    headroom = _headroom(spec, bad, lines, host_sysfs)
    for i, h in enumerate(spec.hotplug):
        if h.numa_node is not None:
            _check_node(h.numa_node, ("hotplug", i, "numa_node"), cells, spec.numa is not None, bad)
    endpoints = _acpi_indexes(spec, endpoints, family_for(spec.machine, target), bad)
    firmware = spec.firmware if spec.firmware is not None else rules.firmware_default
    if spec.firmware is not None and spec.firmware not in rules.firmware_kinds:
        kinds = " or ".join(sorted(rules.firmware_kinds))
        bad(("firmware",), f"a {rules.family} guest boots {kinds or 'its own firmware'}"
            + (f", not {spec.firmware}" if kinds else "; leave 'firmware' out"))
    io_ports, io_from = None, None
    if isinstance(spec.io_ports, IoPorts):
        io_ports = spec.io_ports.limit
    elif spec.io_ports == "limit":
        row = of_kind(firmware, rules.family)
        if row is not None:
            io_ports = row.io_ports
            io_from = f"{row.name} gives I/O windows to {row.io_ports} (measured, {row.version})"
        elif any(b.is_port for b in rules.buses.values()):
            bad(("io_ports",), f"no firmware measurement for a {rules.family} guest with firmware "
                f"{firmware or 'none'}; write 'limit N'")
    elif spec.io_ports != "warn":
        word, _, n = spec.io_ports.strip().partition(" ")
        why = ""
        try:
            io_ports = whole_number(n, 0, MAX_IO_PORTS) if word == "limit" else None
        except ValueError as exc:
            why = f" ({exc})"
        if io_ports is None:
            bad(("io_ports",), f"'{_cut(spec.io_ports)}' is not an I/O policy{why}; write 'warn', 'limit' (the "
                f"firmware's) or 'limit N' (N up to {MAX_IO_PORTS}; a 64 KiB I/O space has room for 16 windows of "
                "4 KiB)")
    check_versions(spec, family_for(spec.machine, target), bad)

    if problems:
        raise SpecError(problems)
    return Problem(
        name=spec.name, family=rules.family, machine=machine, arch=arch, endpoints=tuple(implicit + endpoints),
        headroom=tuple(headroom),
        memory_mib=memory, vcpus=vcpus, virt_type=spec.type, source=file, io_ports=io_ports, numa=cells,
        layout=spec.layout, io_ports_from=io_from, firmware=firmware, target=target,
    )


def _headroom(spec: Spec, bad, lines: dict[tuple, int] | None = None, host_sysfs: str | None = None) -> list[Headroom]:
    from dataclasses import replace

    headroom: list[Headroom] = []
    for i, h in enumerate(spec.hotplug):
        path = ("hotplug", i)
        if (h.model is None) == (h.class_ is None):
            bad(path, "give either 'model' (e.g. virtio-net) or 'class' (pcie, pci or hostdev)")
            continue
        try:
            entry = headroom_entry(h.model, h.class_, h.count, h.numa_node, h.functions or 1)
        except ValueError as exc:
            bad(path + ("functions",) if "multifunction" in str(exc) else path + ("model",), str(exc))
            continue
        windows = _hotplug_windows(h, path, host_sysfs, bad)
        if entry is not None:
            headroom.append(replace(entry, windows=windows, line=_line(lines or {}, path)))
    return headroom


def headroom_entry(model: str | None, class_: str | None, count: int, node: int | None = None,
                   functions: int = 1) -> Headroom | None:
    """One hotplug request by model or class; ValueError says what is wrong.

    ``functions``: devices of that many functions each.  libvirt hotplugs only function 0 of a slot
    (domain_addr.c virDomainPCIAddressEnsureAddr, which qemuDomainAttachHostPCIDevice reaches through
    qemuDomainEnsurePCIAddress: "Only PCI device addresses with function=0 are supported"), so each
    function goes live at function 0 of a port of its own: the entry asks for count x functions."""
    if model is not None:
        from .rules.devices import KINDS

        pci = {k: v for k, v in KINDS.items() if v.cls is not None}
        kind = pci.get(model)
        if kind is None:
            raise ValueError(_unknown(model, list(DEVICES), "device model"))
        if not kind.hotplug:
            ok = ", ".join(k for k, v in DEVICES.items() if v.hotplug)
            raise ValueError(f"libvirt cannot hotplug a {model}; hotpluggable models: {ok}")
        if functions > 1 and not kind.multifunction:
            ok = ", ".join(k for k, v in DEVICES.items() if v.multifunction)
            raise ValueError(f"{model} cannot be a multifunction device; models that can: {ok} (or a class)")
        cls = kind.cls
    else:
        cls = EndpointClass(class_)
    return Headroom(cls=cls, count=count * functions, label=model or class_, node=node,
                    functions=functions) if count else None


def parse_hotplug_option(text: str) -> Headroom | None:
    """``MODEL=N``, ``CLASS=N`` or either ``=N@NODE`` from the command line (``--hotplug virtio-net=4@1``)."""
    what, sep, rest = text.partition("=")
    what = what.strip()
    n, at, node = rest.partition("@")
    usage = "write MODEL=COUNT or CLASS=COUNT (optionally @NODE), e.g. virtio-net=4, pcie=2 or hostdev=2@1"
    if not sep or not what:
        raise ValueError(f"'{_cut(text)}' is not MODEL=COUNT or CLASS=COUNT; {usage[6:]}")
    try:
        count = whole_number(n, 0, MAX_COUNT)
        numa = whole_number(node, 0, MAX_NUMA_NODES - 1, "a guest NUMA node") if at else None
    except ValueError as exc:
        raise ValueError(f"{exc}; {usage}") from None
    if what in ("pcie", "pci", "hostdev"):
        return headroom_entry(None, what, count, numa)
    return headroom_entry(what, None, count, numa)


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:36] + "..."


def _numa(spec: Spec, rules, bad) -> tuple[tuple[NumaCell, ...], int, int]:
    """The guest's NUMA cells, vcpus and memory, consistent as libvirt wants them.

    libvirt refuses a cell whose vCPUs are not vCPUs of the guest ("Number of CPUs in <numa>
    exceeds the <vcpu> count"); every vCPU in exactly one cell and <memory> equal to the
    cells' sum keep the file as written (libvirt sets <memory> to that sum).  ``nodes: N``
    splits the vCPUs into N contiguous runs and the memory evenly, in multiples of the
    family's alignment (256 MiB on pseries), the remainder to the last node.  A value the
    spec leaves out follows from the cells."""
    numa = spec.numa
    vcpus, memory = spec.vcpus, spec.memory
    if numa is None:
        return (), vcpus, memory
    given = spec.model_fields_set
    align = rules.numa_memory_align
    if (numa.nodes is None) == (not numa.cells):
        bad(("numa",), "give either 'nodes: N' (vCPUs and memory split evenly) or 'cells: [{cpus: \"0-1\", "
            "memory: 512}, ...]', one of the two")
        return (), vcpus, memory
    if numa.nodes is not None:
        n = numa.nodes
        if "vcpus" not in given:
            vcpus = max(vcpus, n)
        elif vcpus < n:
            bad(("vcpus",), f"each of the {n} NUMA nodes needs a vCPU of its own; vcpus is {vcpus}")
            return (), vcpus, memory
        if memory % align:
            bad(("memory",), f"{rules.family} NUMA cells are multiples of {align} MiB, so memory must be too; "
                f"{memory} is not")
            return (), vcpus, memory
        per = memory // n // align * align
        if per < align:
            bad(("memory",), f"{memory} MiB cannot give {n} NUMA nodes {align} MiB each")
            return (), vcpus, memory
        cells = []
        for i in range(n):
            lo, hi = i * vcpus // n, (i + 1) * vcpus // n - 1
            size = per if i < n - 1 else memory - per * (n - 1)
            cells.append(NumaCell(f"{lo}" if lo == hi else f"{lo}-{hi}", size))
        return tuple(cells), vcpus, memory
    owner: dict[int, int] = {}
    ok = True
    for i, c in enumerate(numa.cells):
        path = ("numa", "cells", i)
        try:
            ids = _cpuset(c.cpus)
        except ValueError as exc:
            bad(path + ("cpus",), str(exc))
            ok = False
            continue
        for cpu in sorted(ids):
            if cpu in owner:
                bad(path + ("cpus",), f"vCPU {cpu} is already in cells[{owner[cpu]}]; a vCPU belongs to one cell")
                ok = False
                break
            owner[cpu] = i
        if c.memory % align:
            bad(path + ("memory",), f"{rules.family} NUMA cells are multiples of {align} MiB; {c.memory} is not")
            ok = False
    if not ok:
        return (), vcpus, memory
    if "vcpus" not in given:
        vcpus = max(owner) + 1
    elif max(owner) >= vcpus:
        cpu = max(owner)
        bad(("numa", "cells", owner[cpu], "cpus"), f"vCPU {cpu} is not a vCPU of this guest (vcpus: {vcpus}, "
            f"ids 0-{vcpus - 1}); libvirt refuses a cell with more CPUs than <vcpu>")
        return (), vcpus, memory
    missing = [cpu for cpu in range(vcpus) if cpu not in owner]
    if missing:
        bad(("numa", "cells"), f"vCPUs {_cpus_text(missing)} belong to no cell; put each vCPU in one cell")
        return (), vcpus, memory
    total = sum(c.memory for c in numa.cells)
    if total > MAX_MEMORY_MIB:
        bad(("numa", "cells"), f"the cells hold {total} MiB together; libvirt takes at most {MAX_MEMORY_MIB} MiB "
            "(2^63 - 1 bytes)")
        return (), vcpus, memory
    if "memory" in given and memory != total:
        bad(("memory",), f"memory is {memory} MiB but the NUMA cells hold {total}; leave 'memory' out or make "
            "them agree (libvirt takes the cells' sum)")
        return (), vcpus, memory
    return tuple(NumaCell(c.cpus, c.memory) for c in numa.cells), vcpus, total


def _cpuset(text: str) -> set[int]:
    """libvirt's cpuset syntax without exclusions: '0-3', '0,2', '4-7,9'."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)  # ASCII digits: libvirt's cpuset syntax
        if not m:
            raise ValueError(f"'{_cut(text)}' is not a list of vCPU ids; write ranges and ids like '0-3' or "
                             "'0,2,4-5'")
        try:  # ids are vCPU numbers: below the spec's vcpus limit
            lo = whole_number(m.group(1), 0, MAX_VCPUS - 1, "a vCPU id")
            hi = whole_number(m.group(2), 0, MAX_VCPUS - 1, "a vCPU id") if m.group(2) is not None else lo
        except ValueError as exc:
            raise ValueError(f"in '{_cut(text)}': {exc}") from None
        if hi < lo:
            raise ValueError(f"'{_cut(text)}' is not a list of vCPU ids: the range {lo}-{hi} runs backwards")
        out.update(range(lo, hi + 1))
    return out


def _cpus_text(ids: list[int]) -> str:
    runs, start = [], None
    for i, cpu in enumerate(ids):
        if start is None:
            start = cpu
        if i + 1 == len(ids) or ids[i + 1] != cpu + 1:
            runs.append(f"{start}" if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(runs)


def _check_node(node: int, path: tuple, cells: tuple[NumaCell, ...], declared: bool, bad) -> None:
    if declared and not cells:
        return  # 'numa' itself is wrong, and said so
    if not cells:
        bad(path, "numa_node needs the guest's NUMA nodes: add 'numa: {nodes: N}' (or 'numa: {cells: [...]}')")
    elif node >= len(cells):
        bad(path, f"numa_node {node} is not a node of this guest: 'numa' declares nodes 0-{len(cells) - 1}")


def _check_protect(d: DeviceSpec, i: int, kind, family: str, rules, bad) -> None:
    """``protect: port`` needs a port of the family that takes the device by itself and can be made
    hotplug='off' in the target's libvirt and QEMU (rules: the family's rules for the target)."""
    path = ("devices", i, "protect")
    if "hotunplug" in d.model_fields_set and d.hotunplug:
        bad(path, "'protect: port' means never unplugged; drop 'hotunplug: true'")
    if d.address is not None:
        bad(path, "a pinned device sits on the root bus, not behind a port; drop 'address' or 'protect'")
        return
    if kind.cls is None:
        return
    ports = [b for b in rules.addable if b.is_port]
    lockable = [b for b in ports if b.protect is not None]
    takes = [b for b in lockable if rules.accepts(b, rules.connect_of(kind.cls), auto=True, endpoint=True)]
    if takes:
        return
    if not ports:
        bad(path, f"a {family} guest has no ports (a bus of one slot, such as q35's pcie-root-port), so no port "
            "can be protected; use 'hotunplug: false' (the device then sits where it is never unplugged)")
    elif not lockable:
        why = "; ".join(dict.fromkeys(b.protect_why for b in ports if b.protect_why)) or \
            f"no port of a {family} guest takes <target hotplug='off'/>"
        bad(path, f"{why}; use 'hotunplug: false' instead, or a newer target")
    else:
        bad(path, f"a {d.model} ({kind.cls} class) does not go behind a {lockable[0].model} on a {family} guest, "
            "so no port of its own can protect it; use 'hotunplug: false', or a PCI Express model")


IMPLICIT_NAMES = {"usb": "usb", "memballoon": "balloon", "sata": "sata"}


def _implicit(flag: str, kind_name: str, rules) -> Endpoint:
    from .rules.devices import kind

    k = kind(kind_name)
    role = {"sata": "sata", "usb": "piix3-usb"}.get(flag)
    role = role if role in rules.fixed else None
    cls = None if (role and rules.fixed[role].address.function != 0 and role != "sata") else k.cls
    return Endpoint(name=IMPLICIT_NAMES[flag], kind=kind_name, cls=cls, implicit=True, fixed_role=role,
                    root_ok=not k.detach)


# -- the target: which libvirt and QEMU the plan is for --------------------------------------

def spec_target(spec: Spec, file: str, bad, override: Target | None = None) -> Target | None:
    """The versions a spec plans for: ``override`` (--target), else the spec's ``target``, else None
    (the newest the tables know).  A target that is wrong is reported at its line."""
    from .rules.versions import NEWEST, target_from

    if override is not None:
        return override
    if spec.target is None:
        return NEWEST
    raw = spec.target if isinstance(spec.target, str) else spec.target.model_dump(exclude_none=True)
    try:
        return target_from(raw, origin=file)
    except ValueError as exc:
        bad(("target",), str(exc))
        return NEWEST


def check_versions(spec: Spec, rules, bad) -> None:
    """What the target's libvirt and QEMU cannot do: a model they lack, a hotplug they refuse
    (``rules``: the family's rules for the target, from rules_for)."""
    from .rules import machine_missing

    why = machine_missing(rules, spec.machine) if spec.machine else ""
    if why:
        bad(("machine",), why)
    for section in ("devices", "hotplug"):
        for i, entry in enumerate(getattr(spec, section)):
            row = rules.devices.get(entry.model) if entry.model is not None else None
            if row is None:
                continue  # not a model name: said elsewhere
            if row.missing:
                bad((section, i, "model"), row.missing)
            elif section == "hotplug" and not row.hotplug and row.hotplug_why:
                bad((section, i, "model"), row.hotplug_why)


# -- host facts, memory windows and acpi indexes (issue 14) -----------------------------------

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# A BAR is at least 4 KiB here (a smaller one still takes a page of the window) and at most 2^47
# bytes (128 TiB: beyond any guest's physical address space, QEMU's phys-bits are at most 52).
MIN_BAR, MAX_BAR = 1 << 12, 1 << 47
FOUR_GIB = 1 << 32
MIB_ = 1 << 20


def parse_size(text: object) -> int:
    """A BAR size: a power of two written with a unit, K, M, G or T (binary: 32G = 2^35 bytes), with
    an optional trailing B or iB (32GiB); ValueError says what is accepted."""
    usage = "write a power of two with a unit, e.g. 256M or 32G (K, M, G, T: powers of 1024)"
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} is not a size; {usage}")
    m = re.fullmatch(r"\s*([0-9]{1,6})\s*([KMGT])(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"'{_cut(text)}' is not a size; {usage}")
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if size & (size - 1):
        raise ValueError(f"{text.strip()} is not a power of two; a PCI BAR's size always is ({usage})")
    if not MIN_BAR <= size <= MAX_BAR:
        raise ValueError(f"{text.strip()} is outside 4K-128T, the BAR sizes a guest can map")
    return size


def _round_mib(n: int) -> int:
    return -(-n // MIB_) * MIB_


def _windows_of(facts) -> tuple[int, int]:
    """The windows a host device's memory BARs take: 64-bit prefetchable BARs go to the 64-bit hole;
    every other memory BAR (32-bit, or 64-bit non-prefetchable: a bridge's non-prefetchable window
    is 32-bit) below 4 GiB.  Rounded up to the 1 MiB granule of a bridge window."""
    low = sum(b.size for b in facts.mem_bars if not (b.mem64 and b.prefetch))
    high = sum(b.size for b in facts.mem_bars if b.mem64 and b.prefetch)
    return _round_mib(low), _round_mib(high)


def _bar_windows(size: int) -> tuple[int, int]:
    """A 'bar' from the spec: below 4 GiB when it can be (memReserve reserves there), else 64-bit."""
    return (0, size) if size >= FOUR_GIB else (_round_mib(size), 0)


def _host_facts(host: str | None, path: tuple, root: str | None, bad):
    """The sysfs facts of a host device, when --host-sysfs asked for them (None: not read)."""
    if root is None or host is None:
        return None
    from .host_sysfs import HostSysfsError, read_device

    try:
        Address.parse(host)
    except ValueError:
        return None  # said at the 'host' line
    try:
        return read_device(host, root)
    except HostSysfsError as exc:
        bad(path + ("host",), f"--host-sysfs: {exc}")
        return None


def _slot_functions(slot: str, functions: int | None, nfn: int, path: tuple, root: str | None, bad) -> int:
    """How many functions a host slot written without a function has: the spec's 'functions', or the
    host's (--host-sysfs: the slot's functions); both and different is a conflict."""
    if root is None:
        if functions is None:
            bad(path + ("host",), f"'{slot}' names a host slot without a function, meaning every function of it; "
                "give 'functions: N' with how many functions that slot has (or --host-sysfs to read them from the "
                "host), or name one function (DDDD:BB:SS.F)")
        return nfn
    from .host_sysfs import HostSysfsError, read_device

    try:
        found = read_device(f"{slot}.0", root).functions
    except HostSysfsError:
        return nfn  # said at the 'host' line by _host_facts
    if found != tuple(range(len(found))) or not 1 < len(found) <= 8:
        bad(path + ("host",), f"the host's slot {slot} has functions {', '.join(map(str, found))} (--host-sysfs); a "
            "group is functions 0..N-1 (2-8) of one slot: name the functions to assign one by one (DDDD:BB:SS.F)")
        return nfn
    if functions is not None and functions != len(found):
        bad(path + ("functions",), f"the spec says functions {functions}, but the host's slot {slot} has "
            f"{len(found)} (--host-sysfs); fix the spec or leave 'functions' out")
        return nfn
    return len(found)


def _merged_group(group: int | None, facts, path: tuple, bad) -> int | None:
    """The IOMMU group: the spec's, else the host's; both and different is a conflict."""
    if facts is None or facts.iommu_group is None:
        return group
    if group is not None and group != facts.iommu_group:
        bad(path + ("iommu_group",), f"the spec says iommu_group {group}, but the host says "
            f"{facts.iommu_group} ({facts.path}/iommu_group); fix the spec or leave iommu_group out")
        return group
    return facts.iommu_group


def _hotplug_windows(h: HotplugSpec, path: tuple, root: str | None, bad) -> tuple[int, int]:
    """The memory window one device of a hotplug entry needs: from 'bar', or from the host device's
    BARs (--host-sysfs); both must agree on the largest BAR."""
    if h.host is not None and h.model != "hostdev":
        bad(path + ("host",), "only assigned host devices (model: hostdev) have a host address")
        return (0, 0)
    if h.host is not None:
        try:
            Address.parse(h.host)
        except ValueError as exc:
            bad(path + ("host",), str(exc))
            return (0, 0)
    size = None
    if h.bar is not None:
        try:
            size = parse_size(h.bar)
        except ValueError as exc:
            bad(path + ("bar",), str(exc))
            return (0, 0)
    facts = _host_facts(h.host, path, root, bad)
    if facts is not None and facts.mem_bars:
        largest = max(b.size for b in facts.mem_bars)
        if size is not None and size != largest:
            bad(path + ("bar",), f"the spec says bar {h.bar}, but the host device's largest BAR is "
                f"{_size_text(largest)} ({facts.path}/resource); fix the spec or leave bar out")
            return (0, 0)
        return _windows_of(facts)
    return _bar_windows(size) if size is not None else (0, 0)


def _size_text(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return f"{n} bytes"


def _acpi_indexes(spec: Spec, endpoints: list[Endpoint], rules, bad) -> list[Endpoint]:
    """Each NIC with 'acpi_index' gets its index: a number as written, 'auto' the next above every
    index of the spec, in the order of the devices (never a gap's, so no index is taken twice)."""
    from dataclasses import replace

    wanted: list[tuple[list[str], object, tuple]] = []  # (endpoint names, value, path)
    for i, d in enumerate(spec.devices):
        if d.acpi_index is None:
            continue
        path = ("devices", i, "acpi_index")
        kind = DEVICES.get(d.model)
        if kind is None:
            continue  # said at the model
        if kind.element != "interface":
            bad(path, f"acpi_index names NICs (<interface>); {d.model} is not one")
            continue
        row = rules.acpi_index if rules is not None else None
        if row is None:
            bad(path, f"{rules.family if rules else 'this'} guests have no ACPI PCI hotplug, so an acpi index "
                "names nothing there; leave acpi_index out")
            continue
        if row.why:
            bad(path, row.why)
            continue
        base = d.name or d.model
        names = [base] if d.count == 1 else [f"{base}-{n}" for n in range(d.count)]
        value: object = d.acpi_index
        if value != "auto":
            try:
                value = whole_number(value, row.low, row.high, "an acpi index")
            except ValueError as exc:
                bad(path, f"{exc}, or 'auto'")
                continue
            if d.count > 1:
                bad(path, f"one number names one NIC, and this entry has {d.count}; write acpi_index: auto")
                continue
        wanted.append((names, value, path))
    taken: dict[int, tuple] = {}
    for _, value, path in wanted:
        if value != "auto":
            if value in taken:
                bad(path, f"acpi index {value} is already devices[{taken[value][1]}]'s; each NIC needs its own")
                continue
            taken[value] = path
    index: dict[str, int] = {}
    nxt = max(taken, default=0) + 1
    for names, value, path in wanted:
        if value != "auto":
            index[names[0]] = value
            continue
        for name in names:
            if nxt > (rules.acpi_index.high if rules and rules.acpi_index else 16383):
                bad(path, f"no acpi index is left for {name}: they run from 1 to 16383")
                break
            index[name] = nxt
            nxt += 1
    return [replace(e, acpi_index=index[e.name]) if e.name in index else e for e in endpoints]
