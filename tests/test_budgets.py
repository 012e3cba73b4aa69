"""Budgets reported with every plan (used/limit), and the I/O-space policy.

The budgets come from the verifier; here they are recounted from the layout by
hand, so a wrong count in either place fails.
"""

from __future__ import annotations

import pytest

from topo_solve.errors import InfeasibleError, SpecError
from topo_solve.rules import FAMILIES
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from topo_solve.rules.devices import IO_BAR


def _plan(text: str):
    spec, lines = parse_spec(text, "t.yaml")
    return solve(to_problem(spec, lines, "t.yaml"))


def _spec(machine: str, devices: str, hotplug: str = "[]", extra: str = "") -> str:
    return f"name: b\nmachine: {machine}\n{extra}devices: {devices}\nhotplug: {hotplug}\n"


@pytest.mark.parametrize("machine", ["q35", "pc", "pseries", "virt"])
def test_budgets_recounted_by_hand(machine):
    plan = _plan(_spec(machine, "[{model: virtio-net, count: 3}, {model: e1000, count: 2}]",
                       "[{class: pcie, count: 9}, {class: pci, count: 35}]"))
    rules = FAMILIES[plan.layout.family]
    b = plan.budgets
    assert b["controller indexes"] == (max(c.index for c in plan.layout.controllers), 255)
    used_root = {p.address.slot for p in plan.layout.placed if p.address and p.address.bus == 0}
    used_root |= {c.address.slot for c in plan.layout.controllers if c.address and c.address.bus == 0}
    used_root |= {s for s, _ in rules.reserved_root_slots}
    assert b[f"{rules.root} slots"][0] == len(used_root)
    if machine == "pseries":
        assert "bus numbers" not in b  # every PHB is a PCI domain of its own
        assert b["pci-root buses"][0] == sum(1 for c in plan.layout.controllers if c.model == "pci-root")
    else:
        assert b["bus numbers"] == (len(plan.layout.controllers), 256)  # every bus here takes one number
    assert ("ports with I/O windows" in b) == (machine in ("q35", "virt"))


def test_io_windows_count_ports_with_io_bar_devices():
    plan = _plan(_spec("q35", "[{model: e1000e, count: 3}, {model: virtio-net, count: 4}, {model: e1000}]"))
    # three e1000e in three root ports, and the e1000 behind the pcie-to-pci-bridge's root port
    assert plan.budgets["ports with I/O windows"] == (4, 14)
    assert "e1000e" in IO_BAR and "virtio-net" not in IO_BAR


def test_io_windows_warn_past_fourteen():
    plan = _plan(_spec("q35", "[{model: e1000e, count: 16}]"))
    assert plan.budgets["ports with I/O windows"] == (16, 14)
    assert any("16 ports have I/O-BAR devices" in w for w in plan.warnings)


@pytest.mark.parametrize("policy", ["'limit 12'", "{limit: 12}"])
def test_io_limit_makes_it_infeasible(policy):
    with pytest.raises(InfeasibleError) as err:
        _plan(_spec("q35", "[{model: e1000e, count: 16}]", extra=f"io_ports: {policy}\n"))
    (cause,) = err.value.causes
    assert (cause.needed, cause.limit) == (16, 12) and "virtio" in cause.hint


def test_io_limit_met_by_devices_on_the_root_complex():
    plan = _plan(_spec("q35", "[{model: e1000e, count: 16, hotunplug: false}]", extra="io_ports: limit 2\n"))
    assert plan.budgets["ports with I/O windows"][0] == 0


@pytest.mark.parametrize("policy, message", [
    ("lots", "is not an I/O policy"),
    ("'limit 99'", "is not an I/O policy"),
    ("{limit: 100}", "a whole number from 0 to 64"),
])
def test_io_policy_errors(policy, message):
    with pytest.raises(SpecError) as err:
        _plan(_spec("q35", "[]", extra=f"io_ports: {policy}\n"))
    assert message in str(err.value) and "t.yaml:3" in str(err.value)
