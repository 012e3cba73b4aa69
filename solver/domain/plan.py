"""The front door for domain XML: a document in, the same document planned out.

::

    bytes --parse--> Document --read--> Domain --problem--> Problem
          --solve (topo_solve.extend.plan_existing)--> Extension --edit--> bytes

Whatever has an address stays where it is; devices and controllers without one
are placed by the same minimal search as a spec; the headroom asked for is
added with the fewest controllers; the devices libvirt would add by itself at
define are written out at their planned place.  With ``right_size`` the
controllers the document gives no address and nothing uses (virt-install's 14
root ports, a template's spare bridges) are a guess the plan may replace:
only as many stay as the plan needs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import Finding, SpecError
from ..extend import Extension, plan_existing
from ..model import Controller, Headroom, Target
from ..rules import RuleSet, family_for
from .edit import Edit, apply_plan
from .read import Domain, read_domain

__all__ = ["Planned", "plan_document", "Surplus"]

# QEMU's resident memory per pcie-root-port before the guest runs (measured by a KubeVirt maintainer,
# kubevirt/kubevirt pull 14754: about 700 KB each, 32 ports about 20 MB).
PORT_MEMORY_KB = 700


@dataclass(frozen=True)
class Surplus:
    """Controllers a document gives no address that the plan would not need."""

    model: str
    have: int
    needed: int

    @property
    def extra(self) -> int:
        return self.have - self.needed

    def __str__(self) -> str:
        cost = f" (about {self.extra * PORT_MEMORY_KB / 1000:.1f} MB of QEMU memory)" \
            if self.model == "pcie-root-port" else ""
        return f"{self.have} {self.model}, {self.needed} would do: {self.extra} surplus{cost}"


@dataclass(frozen=True)
class Planned:
    """A planned document: the reading, the plan, the edit, and what the document over-provides."""

    domain: Domain
    extension: Extension
    edit: Edit
    surplus: tuple[Surplus, ...] = ()
    removed: tuple[str, ...] = ()  # the document's controllers the right-sized plan dropped
    cached: bool = False  # the plan came from the cache (an identical problem planned before)

    @property
    def name(self) -> str:
        return self.domain.name

    @property
    def rules(self) -> RuleSet:
        return self.domain.rules

    @property
    def unchanged(self) -> bool:
        return self.edit.data == self.domain.document.data


def plan_document(data: str | bytes, file: str, headroom: tuple[Headroom, ...] = (), *, right_size: bool = False,
                  allow_moves: bool = False, machine: str | None = None, spec: str | None = None,
                  surplus: bool = True, cache: dict | None = None, layout: str = "qemu-guidelines",
                  target: Target | None = None, machine_line: int | None = None) -> Planned:
    """Read a domain XML, plan it (see the module docstring) and write the plan into its text.

    ``machine`` (from a spec with ``domain:``, written at ``machine_line`` of ``spec``) must name the
    guest's own family.  ``surplus``:
    also say how many of the document's unaddressed controllers a right-sized plan would not
    need (a second plan).  ``cache``: plans by problem, so documents that differ only in what
    the plan does not read (names, MAC addresses, disk paths: a fleet of templates) are planned
    once.  ``target``: the libvirt and QEMU to plan for (None: the newest the tables know)."""
    domain = read_domain(data, file, target)
    wanted = family_for(machine) if machine is not None else None
    if wanted is not None and wanted.family != domain.rules.family:
        raise SpecError([Finding(spec or file, machine_line if spec else None, "machine",
                                 f"machine '{machine}' is {wanted.family}, but {file} is a {domain.rules.family} "
                                 "guest; drop 'machine' or fix it")])
    _check_nodes(domain, headroom)
    _check_versions(domain.rules, headroom, spec)
    prefilled = _place_parents(domain)
    problem = domain.problem(headroom, right_size=right_size, layout=layout)
    key = (replace(problem, name="", source=""), allow_moves) if cache is not None else None
    ext = cache.get(key) if cache is not None else None
    cached = ext is not None
    if ext is None:
        ext = plan_existing(problem, domain.rules, allow_moves=allow_moves)
        if cache is not None:
            if len(cache) >= 4096:
                del cache[next(iter(cache))]
            cache[key] = ext
    reuse = [c for c in domain.unplaced_controllers if right_size and not c.index_given]
    edit = apply_plan(domain, ext, reuse=reuse, prefilled=prefilled)
    if right_size or not problem.keep or not surplus:
        surplus = ()
    elif cache is not None:
        # the lean plan is a second search: as cacheable as the first (it reads the same problem)
        skey = ("surplus", key)
        if skey not in cache:
            cache[skey] = _surplus(domain, ext)
        surplus = cache[skey]
    else:
        surplus = _surplus(domain, ext)
    return Planned(domain, ext, edit, surplus, edit.removed_controllers, cached)


def _surplus(domain: Domain, ext: Extension) -> tuple[Surplus, ...]:
    """How many of the document's unaddressed controllers a right-sized plan would keep."""
    try:
        lean = plan_existing(domain.problem(ext.requested_headroom, right_size=True,
                                            layout=ext.plan.problem.layout if ext.plan else "qemu-guidelines"),
                             domain.rules)
    except Exception:  # noqa: BLE001 - a comparison only; the plan itself stands
        return ()
    base = {c.controller.index for c in domain.controllers if c.placed} | {0}
    out = []
    for model in sorted({c.controller.model for c in domain.unplaced_controllers}):
        mine = sum(1 for c in ext.layout.controllers if c.model == model and c.index not in base)
        lean_n = sum(1 for c in lean.layout.controllers if c.model == model and c.index not in base)
        if lean_n < mine:
            out.append(Surplus(model, mine, lean_n))
    return tuple(out)


def _place_parents(domain: Domain) -> list:
    """Give an address first to the document's controllers that have none but have something
    plugged into them (a device written with bus='0x03' while controller 3 has no address), and to
    those of a model the planner never adds (a dmi-to-pci-bridge, an expander bus: the solve only
    counts models it may add), the way libvirt places controllers before devices: first fit, in
    index order.  They are then part of the existing layout the plan keeps."""
    from ..counts import Counts
    from ..model import Problem
    from ..place import place

    rules = domain.rules
    out = []
    while True:
        used = {d.address.bus for d in domain.devices if d.address is not None}
        used |= {c.controller.address.bus for c in domain.controllers if c.controller.address is not None}
        waiting = sorted((c for c in domain.controllers if not c.placed and (
            c.controller.index in used or not rules.rule_for(c.controller.model, c.controller.index).addable)),
            key=lambda c: c.controller.index)
        if not waiting:
            return out
        dc = waiting[0]
        base = domain.layout()
        rule = rules.rule_for(dc.controller.model, dc.controller.index)
        problem = Problem(name=domain.name, family=rules.family, machine=domain.machine, arch=domain.arch,
                          endpoints=(), headroom=(), source=domain.file, base=base, keep=(dc.controller,),
                          target=rules.target)
        layout = place(problem, rules, Counts({rule.name: 1}, {}))
        placed = next(c for c in layout.controllers if c.index == dc.controller.index)
        if "busNr" in rule.target and "busNr" not in dict(dc.controller.target):
            placed = replace(placed, target=tuple(("busNr", _new_bus_nr(domain)) if a == "busNr" else (a, v)
                                                  for a, v in placed.target))
        dc.controller = placed
        out.append(dc)


# An expander bus written without a busNr gets the lowest busNr of the guest's controllers minus 2
# ("one for the pxb, one for the integrated pci-bridge"), 254 for the first one
# (qemu_domain_address.c, qemuDomainAddressFindNewBusNr).
BUS_NR_STEP = 2
BUS_NR_CEILING = 256


def _new_bus_nr(domain: Domain) -> int:
    given = [dict(c.controller.target)["busNr"] for c in domain.controllers if "busNr" in dict(c.controller.target)]
    return min(given + [BUS_NR_CEILING]) - BUS_NR_STEP


def _check_versions(rules: RuleSet, headroom: tuple[Headroom, ...], spec: str | None) -> None:
    """Headroom of a model the target's libvirt or QEMU lacks, or cannot hotplug: one finding each,
    naming the option (or the spec's hotplug entry)."""
    problems = []
    for h in headroom:
        row = rules.devices.get(h.label)
        why = row.missing or (row.hotplug_why if not row.hotplug else "") if row is not None else ""
        if why:
            problems.append(Finding(spec or "topo-solve", None, f"hotplug {h.label}" if spec else
                                    f"--hotplug {h.label}={h.count}", why))
    if problems:
        raise SpecError(problems)


def _check_nodes(domain: Domain, headroom: tuple[Headroom, ...]) -> None:
    nodes = [h.node for h in headroom if h.node is not None]
    if not nodes:
        return
    problems = []
    if domain.numa_cells == 0:
        problems.append(Finding(domain.file, None, "", "headroom on a NUMA node (@NODE) needs the guest's NUMA "
                                "nodes: the domain has no <cpu><numa> cells"))
    for n in sorted(set(nodes)):
        if domain.numa_cells and n >= domain.numa_cells:
            problems.append(Finding(domain.file, None, "", f"NUMA node {n} is not a cell of the guest "
                                    f"(<cpu><numa> has cells 0-{domain.numa_cells - 1})"))
    if any("busNr" in dict(c.controller.target) for c in domain.controllers):
        problems.append(Finding(domain.file, None, "", "the guest already has expander buses; topo-solve does "
                                "not yet add headroom on NUMA nodes next to them (plan it from a spec with "
                                "'numa' instead)"))
    if problems:
        raise SpecError(problems)
