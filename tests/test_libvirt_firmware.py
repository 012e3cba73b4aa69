"""The guest firmware in the real libvirt, on both judges: a plan for 'firmware: efi' defines
unchanged with <os firmware='efi'> (libvirt picks the UEFI build from the firmware descriptors
that Debian's ovmf and qemu-efi-aarch64 install), starts, and reads back as UEFI; on aarch64 the
plan's <acpi/> (which libvirt takes only with UEFI) is what lets the guest see an expander bus.
"""

from __future__ import annotations

import pytest

from topo_solve.domain.read import read_domain
from topo_solve.domain.write import render_domain

from .libvirt_fixtures import BOTH
from .test_conformance import _prepare
from .test_libvirt_scale import _define_unchanged, plan_of

pytestmark = [pytest.mark.libvirt, BOTH]

SPECS = {
    "q35": """
        name: ts-efi-q35
        machine: q35
        firmware: efi
        devices:
          - {name: nic, model: e1000e}
          - {name: disk, model: virtio-blk}
        hotplug: [{class: pcie, count: 2}]
    """,
    "virt": """
        name: ts-efi-virt
        machine: virt
        arch: aarch64
        firmware: efi
        vcpus: 2
        numa: {nodes: 2}
        devices:
          - {name: near, model: virtio-net}
          - {name: far, model: virtio-net, numa_node: 1}
    """,
}


@pytest.mark.parametrize("family", list(SPECS))
def test_efi_plan_defines_unchanged_and_starts(family, virsh, daemon_files):
    plan = plan_of(SPECS[family])
    assert plan.layout.firmware == "efi" and plan.layout.acpi
    assert not any("ACPI" in w for w in plan.warnings)
    _define_unchanged(plan, virsh, daemon_files)
    name = virsh.define(_prepare(render_domain(plan), daemon_files, swap_hostdevs=False))
    try:
        virsh.start(name)
        live = virsh.dumpxml(name)
        virsh.destroy(name)
    finally:
        virsh.undefine(name)
    domain = read_domain(live.encode(), "live.xml")
    assert domain.firmware == "efi" and domain.acpi
