"""The firmware rows (solver/rules/firmware.py) against the rules that rest on them.

The rows themselves are checked from inside a guest by tests/test_guest_measure.py;
these tests need no guest: they tie the planner's I/O-space numbers to the rows and
keep each row's source pointing at a test that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from topo_solve.rules.firmware import FIRMWARES, firmware
from topo_solve.verify import IO_PORT_WARN

MEASURE = Path(__file__).with_name("test_guest_measure.py").read_text()


def test_io_port_warning_is_the_measured_seabios_limit():
    """The planner warns past IO_PORT_WARN ports with I/O-BAR devices: exactly where SeaBIOS,
    the default firmware, stops booting (15 ports: 'PCI: out of I/O address space')."""
    assert IO_PORT_WARN == firmware("seabios", "q35").io_ports


def test_ovmf_assigns_fewer_io_windows_than_seabios():
    """With OVMF the firmware's own limit is lower than SeaBIOS's (past it OVMF leaves every BAR to
    the OS, and Linux gets as far as SeaBIOS did): a guest that says 'firmware: efi' is warned, and
    limited by 'io_ports: limit', at the OVMF number (tests/test_firmware.py)."""
    assert firmware("ovmf", "q35").io_ports < IO_PORT_WARN
    assert firmware("ovmf", "q35").io_ports_os == IO_PORT_WARN


def test_rows_are_consistent_and_cite_existing_tests():
    for (name, family), row in FIRMWARES.items():
        assert row.io_ports <= row.io_ports_os, name
        assert row.port_mem > 0 and row.port_pref > 0, name
        cited = re.findall(r"(test_\w+)\[", row.source)
        assert cited, f"{name}: the source names no test"
        for t in cited:
            assert f"def {t}(" in MEASURE, f"{name}: {t} is not in tests/test_guest_measure.py"
