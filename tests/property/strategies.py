"""Hypothesis strategies for topo-solve specs, valid by construction.

``from_machine(family)`` draws a spec dict (the YAML's shape) that the spec
loader accepts: bounded lists, unique names assigned after drawing, pinned
addresses drawn from the free root-bus slots without repeats, at most one
balloon.  Nothing is filtered, so every draw is used and failures shrink to
small specs (hypothesis guides/strategies-that-shrink.rst).

``problems(family)`` maps the same through the spec loader to a core
``Problem``.  ``from_machine(family, numa=True)`` also declares guest NUMA
nodes and puts some devices and hotplug entries on them;
``switch_specs(family)`` (q35, virt) pins devices on most root slots and asks
for more PCIe headroom than the root ports of the rest hold, so a switch is
needed.  ``SETTINGS`` is the shared settings profile: ``ci`` (the
default, 50 examples) or ``long`` (set TOPO_SOLVE_HYPOTHESIS_PROFILE=long).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from topo_solve.model import EndpointClass, Problem
from topo_solve.rules import FAMILIES
from topo_solve.rules.devices import DEVICES
from topo_solve.spec import Spec, to_problem

__all__ = ["FAMILY_NAMES", "SETTINGS", "from_machine", "problems", "problem_of", "switch_specs"]

FAMILY_NAMES = ("q35", "pc", "pseries", "virt")

settings.register_profile(
    "ci", max_examples=50, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=1000)
SETTINGS = settings.get_profile(os.environ.get("TOPO_SOLVE_HYPOTHESIS_PROFILE", "ci"))

# Boot devices: every model but the balloons (one per guest, drawn on their own),
# hostdev (drawn with its IOMMU group) and vga (libvirt allows it as the primary video only).
BOOT_MODELS = sorted(m for m, k in DEVICES.items()
                     if k.max_count is None and k.cls is not EndpointClass.HOSTDEV and m != "vga")


def boot_models(family: str) -> list[str]:
    """The boot models that exist on ``family`` (QEMU has no qxl on aarch64 or ppc64)."""
    return [m for m in BOOT_MODELS if DEVICES[m].families is None or family in DEVICES[m].families]
BALLOONS = sorted(m for m, k in DEVICES.items() if k.max_count == 1)
EMULATED_HOTPLUG_MODELS = sorted(m for m, k in DEVICES.items() if k.hotplug and k.cls is not EndpointClass.HOSTDEV)
EMULATED_CLASSES = [str(c) for c in EndpointClass if c is not EndpointClass.HOSTDEV]
MAX_HOSTDEV_HOTPLUG = 4
# Models a spec may pin to the root bus: any boot model, assigned devices too (on
# pseries that is the default PHB, which libvirt allows at a user address).
def pin_models(family: str) -> list[str]:
    return boot_models(family) + ["hostdev"]


def _pin_slots(family: str) -> list[int]:
    """Root slots a pin may take: free of the chipset, and not a slot the chipset insists on."""
    rules = FAMILIES[family]
    insisted = {f.address.slot for f in rules.fixed.values() if f.insist}
    return [s for s in rules.free_root_slots() if s not in insisted]


def _boot_entry(family: str, max_count: int) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"model": st.sampled_from(boot_models(family)), "count": st.integers(1, max_count)},
        optional={"hotunplug": st.booleans()},
    )


def _hostdev_entry(max_count: int) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"model": st.just("hostdev"), "count": st.integers(1, max_count)},
        optional={"iommu_group": st.integers(0, 3), "hotunplug": st.booleans()},
    )


def _hotplug_entry(max_hotplug: int) -> st.SearchStrategy[dict]:
    """A hotplug entry by class or by model.  Assigned devices stay few (at most
    MAX_HOSTDEV_HOTPLUG an entry): on pseries each takes a PHB of its own, and
    there are 30."""
    count = st.integers(0, max_hotplug)
    few = st.integers(0, min(max_hotplug, MAX_HOSTDEV_HOTPLUG))
    return st.one_of(
        st.fixed_dictionaries({"class": st.sampled_from(EMULATED_CLASSES), "count": count}),
        st.fixed_dictionaries({"model": st.sampled_from(EMULATED_HOTPLUG_MODELS), "count": count}),
        st.fixed_dictionaries({"class": st.just("hostdev"), "count": few}),
        st.fixed_dictionaries({"model": st.just("hostdev"), "count": few}),
    )


@st.composite
def _spec(draw, family: str, max_entries: int, max_count: int, max_hotplug: int, max_pins: int,
          numa: int = 0) -> dict:
    devices = draw(st.lists(st.one_of(_boot_entry(family, max_count), _hostdev_entry(max_count)),
                            max_size=max_entries))
    pins = draw(st.lists(st.tuples(st.sampled_from(_pin_slots(family)), st.sampled_from(pin_models(family))),
                         unique_by=lambda t: t[0], max_size=max_pins))
    devices = devices + [{"model": m, "address": f"0000:00:{slot:02x}.0"} for slot, m in pins]
    balloon = draw(st.sampled_from([None, *BALLOONS]))
    if balloon is not None:
        devices.append({"model": balloon})
    for i, d in enumerate(devices):
        d["name"] = f"d{i}"  # unique by construction; count > 1 appends -0, -1, ...
    spec = {
        "name": f"prop-{family}",
        "machine": family,
        "defaults": draw(st.fixed_dictionaries(
            {}, optional={"usb": st.booleans(), "memballoon": st.booleans(), "video": st.booleans()})),
        "devices": devices,
        "hotplug": draw(st.lists(_hotplug_entry(max_hotplug), max_size=3)),
    }
    if numa:
        nodes = draw(st.integers(1, numa))
        spec["numa"] = {"nodes": nodes}
        node = st.one_of(st.none(), st.integers(0, nodes - 1))  # None: the entry stays off the nodes
        for entry in spec["devices"] + spec["hotplug"]:
            if "address" not in entry and (n := draw(node)) is not None:
                entry["numa_node"] = n
    return spec


@st.composite
def _switch_spec(draw, family: str, max_free: int, max_extra: int) -> dict:
    """Pinned devices on all root slots but ``free`` of them, and more PCIe headroom than the
    root ports of those slots hold (8 each): root ports alone cannot, a switch can."""
    slots = _pin_slots(family)
    free = draw(st.integers(1, max_free))
    kept = set(draw(st.lists(st.sampled_from(slots), min_size=free, max_size=free, unique=True)))
    devices = [{"name": f"pin{s:02x}", "model": draw(st.sampled_from(boot_models(family))),
                "address": f"0000:00:{s:02x}.0", "hotunplug": False} for s in slots if s not in kept]
    devices += draw(st.lists(_boot_entry(family, 2), max_size=2))
    for i, d in enumerate(devices):
        d.setdefault("name", f"d{i}")
    hotplug = [{"class": "pcie", "count": 8 * free + draw(st.integers(1, max_extra))}]
    hotplug += draw(st.lists(st.fixed_dictionaries({"class": st.just("pci"), "count": st.integers(0, 3)}),
                             max_size=1))
    return {"name": f"switch-{family}", "machine": family,
            "defaults": draw(st.fixed_dictionaries({}, optional={"usb": st.booleans(), "memballoon": st.booleans()})),
            "devices": devices, "hotplug": hotplug}


def switch_specs(family: str, *, max_free: int = 2, max_extra: int = 40) -> st.SearchStrategy[dict]:
    """Spec dicts for q35 or virt that need a switch (see ``_switch_spec``)."""
    if family not in ("q35", "virt"):
        raise InvalidArgument(f"switches exist on q35 and virt, not {family!r}")
    return _switch_spec(family, max_free, max_extra)


def from_machine(family: str, *, max_entries: int = 4, max_count: int = 3, max_hotplug: int = 4,
                 max_pins: int = 2, numa: int = 0) -> st.SearchStrategy[dict]:
    """Spec dicts for ``family`` (q35, pc, pseries or virt) that load without a SpecError.

    ``max_entries`` device entries of up to ``max_count`` devices each, up to
    ``max_pins`` devices pinned to the root bus, up to three hotplug entries of
    up to ``max_hotplug`` each (assigned devices: up to 4): small enough that
    every draw has a plan.  Raise ``max_hotplug`` to reach bridges on pc (30
    free root slots) or extra PHBs on pseries.  ``numa=N`` declares 1 to N
    guest NUMA nodes and puts some unpinned entries on them.
    """
    if family not in FAMILIES:
        raise InvalidArgument(f"Expected one of {', '.join(FAMILY_NAMES)} but got family={family!r} "
                              f"(type={type(family).__name__})")
    for name, value in (("max_entries", max_entries), ("max_count", max_count), ("max_hotplug", max_hotplug),
                        ("max_pins", max_pins)):
        if not isinstance(value, int) or value < (1 if name == "max_count" else 0):
            raise InvalidArgument(f"Expected a small non-negative int but got {name}={value!r}")
    return _spec(family, max_entries, max_count, max_hotplug, max_pins, numa)


def problem_of(spec: dict) -> Problem:
    return to_problem(Spec.model_validate(spec), None, f"<{spec['name']}>")


def problems(family: str, **bounds) -> st.SearchStrategy[Problem]:
    """Core problems for ``family``: ``from_machine`` through the spec loader."""
    return from_machine(family, **bounds).map(problem_of)
