"""Seen from the guest: the memory window a plan reserves is what a large-BAR hotplug needs.

The guest tests run on the host's libvirt 9.0 + QEMU 7.2, which has no ``memReserve``; libvirt 11.3
turns ``memReserve='KiB'`` into the port's QEMU property ``mem-reserve`` in bytes (measured, see
tests/test_libvirt_windows.py).  So the guest here gets that same property from QEMU's command line,
with the plan's own number, on the one root port a plan for 11.3 reserves it on, and then
hotplugs an ivshmem-plain device whose shared-memory BAR (64-bit prefetchable) has the size of the
spec's ``bar``, at that port:

* with the reservation the guest maps every BAR of the hotplugged device;
* without it (the same guest, the property left out) it cannot: what "not enough MMIO" means.

Measured here first with a reservation of the BAR's own size: the firmware put the 256 MiB window at
0xee800000, not aligned to 256 MiB, and the kernel found no place for the BAR ("can't assign; no
space"); so the rule row reserves twice the size (rules/windows.py ``reserve_factor``), which this
test proves.
"""

from __future__ import annotations

import pytest
from lxml import etree

from tests.guest_run import Guest, guest_address, guest_buses
from topo_solve.domain.write import render_domain
from topo_solve.rules.versions import ALIASES
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem

pytestmark = [pytest.mark.guest, pytest.mark.libvirt]

SPEC = """name: tsg-window
machine: q35
defaults: {usb: false, memballoon: false}
hotplug:
  - {model: hostdev, bar: 256M}
"""
SIZE_M = 256


def _plan(target):
    spec, lines = parse_spec(SPEC, "w.yaml")
    return solve(to_problem(spec, lines, "w.yaml", target=target))


@pytest.mark.parametrize("reserve", [True, False], ids=["memReserve", "none"])
def test_a_large_bar_hotplug_is_mapped_only_with_the_reservation(reserve, judge, virsh, guest_image, guest_virt,
                                                                 guest_dir):
    planned = _plan(ALIASES["debian-13"].target)  # the plan that writes memReserve (libvirt 11.3)
    ((index, kib, _),) = planned.reserved
    assert kib == 2 * SIZE_M * 1024  # twice the BAR: a window is not aligned to its size
    here = _plan(judge.target)  # the same layout for the judge that boots it (no memReserve in its XML)
    assert [c.index for c in here.layout.controllers] == [c.index for c in planned.layout.controllers]
    assert [c.model for c in here.layout.controllers].count("pcie-root-port") == 1  # -global reaches only it
    args = ("-global", f"pcie-root-port.mem-reserve={kib * 1024}") if reserve else ()
    port = next(c for c in here.layout.controllers if c.index == index)
    with Guest(virsh, render_domain(here), guest_image, guest_dir, firmware="seabios", virt=guest_virt[0],
               qemu_args=args) as g:
        bus = f"0x{port.index:02x}"
        g.attach(f"<shmem name='tsg-shm'><model type='ivshmem-plain'/><size unit='M'>{SIZE_M}</size>"
                 f"<alias name='ua-tsg-shm'/><address type='pci' domain='0x0000' bus='{bus}' slot='0x00' "
                 "function='0x0'/></shmem>")
        live = g.live_xml()
        el = next(s for s in live.iter("shmem") if s.find("alias").get("name") == "ua-tsg-shm")
        at = guest_address(el.find("address"), guest_buses(etree.tostring(live, encoding="unicode")))
        v = g.wait(lambda v: at in v.added, 120, "the hotplugged ivshmem device")
        d = v.added[at]
        seen = "\n".join(ln for ln in g.text().splitlines() if at[5:] in ln)
        if reserve:
            assert [b.size for b in d.bars if b.size == SIZE_M << 20] and not d.unassigned(io=False), \
                f"with the plan's reservation, BARs of {at}: {[str(b) for b in d.bars]}\n{seen}"
        else:
            assert d.unassigned(io=False), f"without a reservation the BAR was mapped anyway:\n{seen}"
