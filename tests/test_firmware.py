"""The guest firmware: a spec's 'firmware', a domain's <os firmware> or <loader>, and the I/O-window
policy that rests on the firmware's measured row (solver/rules/firmware.py).

The rows are measured from inside a guest (tests/test_guest_measure.py); here the planner is held
to them: the warning and 'io_ports: limit' use the guest's firmware row, and say so.
"""

from __future__ import annotations

import pytest
from lxml import etree

from topo_solve.domain.plan import plan_document
from topo_solve.domain.read import read_domain
from topo_solve.domain.write import render_domain
from topo_solve.errors import InfeasibleError, SpecError
from topo_solve.rules import FAMILIES
from topo_solve.rules.firmware import of_kind
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem


def _plan(text: str):
    spec, lines = parse_spec(text, "f.yaml")
    return solve(to_problem(spec, lines, "f.yaml"))


def _q35(firmware: str | None, nics: int, io: str = "warn") -> str:
    fw = f"firmware: {firmware}\n" if firmware else ""
    return f"name: f\nmachine: q35\n{fw}io_ports: {io}\ndevices:\n  - {{model: e1000e, count: {nics}}}\n"


@pytest.mark.parametrize("firmware, kind", [(None, "bios"), ("bios", "bios"), ("efi", "efi")])
def test_the_warning_is_the_firmware_row(firmware, kind):
    """One port past the row warns, naming the firmware and what the guest measured; at the row, silence."""
    row = of_kind(kind, "q35")
    at = _plan(_q35(firmware, row.io_ports))
    assert at.budgets["ports with I/O windows"] == (row.io_ports, row.io_ports)
    assert not any("I/O-BAR" in w for w in at.warnings)
    past = _plan(_q35(firmware, row.io_ports + 1))
    (w,) = [w for w in past.warnings if "I/O-BAR" in w]
    assert f"{row.io_ports + 1} ports" in w and row.name in w and row.version in w and row.past_io_ports in w


@pytest.mark.parametrize("kind", ["bios", "efi"])
def test_io_ports_limit_is_the_measured_number(kind):
    row = of_kind(kind, "q35")
    assert _plan(_q35(kind, row.io_ports, "limit")).budgets["ports with I/O windows"] == (row.io_ports, row.io_ports)
    with pytest.raises(InfeasibleError) as err:
        _plan(_q35(kind, row.io_ports + 1, "limit"))
    (cause,) = err.value.causes
    assert (cause.needed, cause.limit) == (row.io_ports + 1, row.io_ports)
    assert row.name in cause.reason and "measured" in cause.reason


def test_io_ports_limit_without_a_measurement_is_bad_input():
    """aarch64 virt has ports but no measured row: 'limit' alone has no number to use."""
    with pytest.raises(SpecError) as err:
        _plan("name: f\nmachine: virt\narch: aarch64\nfirmware: efi\nio_ports: limit\ndevices: []\n")
    assert "f.yaml:5" in str(err.value) and "limit N" in str(err.value)


@pytest.mark.parametrize("machine, firmware, line", [("virt\narch: aarch64", "bios", 4), ("pseries", "efi", 3)])
def test_a_firmware_the_family_does_not_boot(machine, firmware, line):
    with pytest.raises(SpecError) as err:
        _plan(f"name: f\nmachine: {machine}\nfirmware: {firmware}\ndevices: []\n")
    assert f"f.yaml:{line}: firmware" in str(err.value)


@pytest.mark.parametrize("family, arch", [("q35", "x86_64"), ("pc", "x86_64"), ("virt", "aarch64")])
def test_efi_is_written_and_acpi_follows_the_rules(family, arch):
    plan = _plan(f"name: f\nmachine: {family}\narch: {arch}\nfirmware: efi\ndevices: []\n")
    root = etree.fromstring(render_domain(plan).encode())
    assert root.find("os").get("firmware") == "efi"
    # aarch64 takes <acpi/> only with UEFI; x86 always has it
    assert root.find("features/acpi") is not None
    no_fw = etree.fromstring(render_domain(_plan(f"name: f\nmachine: {family}\narch: {arch}\ndevices: []\n")).encode())
    assert no_fw.find("os").get("firmware") is None
    assert (no_fw.find("features/acpi") is not None) == FAMILIES[family].acpi


def test_virt_expander_warning_goes_with_efi():
    spec = ("name: f\nmachine: virt\narch: aarch64\nvcpus: 2\nnuma: {nodes: 2}\n"
            "devices:\n  - {name: far, model: virtio-net, numa_node: 1}\n")
    assert any("firmware: efi" in w for w in _plan(spec).warnings)
    assert not any("ACPI" in w for w in _plan(spec + "firmware: efi\n").warnings)


DOMAIN = """<domain type='kvm'>
  <name>d</name>
  <memory unit='MiB'>1024</memory>
  <os{attr}>
    <type arch='x86_64' machine='q35'>hvm</type>{loader}
  </os>
  <features><acpi/></features>
  <devices>
{nics}  </devices>
</domain>
"""


@pytest.mark.parametrize("attr, loader, kind", [
    ("", "", "bios"),
    (" firmware='efi'", "", "efi"),
    ("", "\n    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>", "efi"),
    ("", "\n    <loader readonly='yes'>/usr/share/edk2/ovmf/OVMF_CODE.fd</loader>", "efi"),
    ("", "\n    <loader type='rom'>/usr/share/seabios/bios-256k.bin</loader>", "bios"),
    (" firmware='bios'", "", "bios"),
])
def test_a_domain_says_its_firmware(attr, loader, kind):
    row = of_kind(kind, "q35")
    nics = "".join("    <interface type='user'><model type='e1000e'/></interface>\n" for _ in range(row.io_ports + 1))
    xml = DOMAIN.format(attr=attr, loader=loader, nics=nics).encode()
    assert read_domain(xml, "d.xml").firmware == kind
    planned = plan_document(xml, "d.xml", ())
    (w,) = [w for w in planned.extension.warnings if "I/O-BAR" in w]
    assert row.name in w and f"{row.io_ports + 1} ports" in w
    assert planned.extension.budgets["ports with I/O windows"] == (row.io_ports + 1, row.io_ports)
