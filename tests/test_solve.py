"""Solve-level cases: what the planner adds, where things go, what it refuses.

The planning cases re-create libvirt's own test cases (libvirt-pci-rules.md
sections 15-17) as far as a spec can express them.  topo-solve keeps no spare
slot of its own (docs/design.md, "No spare headroom beyond the request"), so
where libvirt adds a spare root port, the case asks for one pcie hotplug to get
libvirt's layout, and a twin case without it expects one controller fewer.

The audit cases are rows of real-libvirt.md section 4 (hotplugs measured on
libvirt 9.0 + QEMU 7.2): a domain XML as ``virsh dumpxml`` prints it, read
back and verified; the capacity must be what the real guest took.

Each case is a dict: ``spec`` (YAML text), the expectations, and ``#`` saying
in words why the expectation holds.  ``xfail`` marks a known gap (strict: it
must keep failing until the gap is closed).
"""

from __future__ import annotations

import re

import textwrap

import pytest

from topo_solve.domain.read import read_layout
from topo_solve.errors import InfeasibleError, SpecError
from topo_solve.model import Address, EndpointClass
from topo_solve.solve import solve
from topo_solve.spec import parse_spec, to_problem
from topo_solve.verify import verify


def problem_of(text: str, file: str = "case.yaml"):
    spec, lines = parse_spec(textwrap.dedent(text), file)
    return to_problem(spec, lines, file)


def plan_of(text: str, file: str = "case.yaml"):
    return solve(problem_of(text, file))


def _params(cases: list[dict]):
    out = []
    for c in cases:
        marks = [pytest.mark.xfail(reason=c["xfail"], strict=True)] if "xfail" in c else []
        out.append(pytest.param(c, id=c["id"], marks=marks))
    return out


# -- planning cases ------------------------------------------------------------

PLANS = [
    {
        "id": "q35-defaults-no-hotplug",
        "#": "libvirt's q35-default-devices-only without its spare: libvirt gives the default qemu-xhci and "
             "balloon a root port each, but it can unplug neither, so they are never unplugged by nature "
             "and sit on pcie-root as two functions of one slot: no controller at all",
        "spec": """
            name: q35-defaults
            machine: q35
        """,
        "added": {},
        "capacity": {"pcie": 0, "pci": 0, "hostdev": 0},
        "at": {"usb": "0000:00:01.0", "balloon": "0000:00:01.1", "sata": "0000:00:1f.2"},
    },
    {
        "id": "q35-default-devices-only",
        "#": "libvirt case B (3 root ports: usb, balloon, a spare) with one hotplug asked: the one root port "
             "the hotplug needs takes 00:01.0 (no video, so slot 1 is free), and usb and balloon, never "
             "unplugged, take the next functions of that slot",
        "spec": """
            name: q35-defaults
            machine: q35
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 1},
        "capacity": {"pcie": 1, "pci": 0},
        "controllers_at": {"pcie-root-port": ["0000:00:01.0"]},
        "at": {"usb": "0000:00:01.1", "balloon": "0000:00:01.2"},
    },
    {
        "id": "q35-pcie-autoadd",
        "#": "libvirt case A: 13 PCIe endpoints and one free port make libvirt's 14 root ports; three of the "
             "devices libvirt can never unplug (virtio-serial, qemu-xhci, the balloon), so they sit on "
             "pcie-root as the free functions of the second root-port slot: 11 root ports, eight to a slot "
             "from 00:01.0 (no video). The others take ports in libvirt's category order: nets, "
             "controllers, disks, rng, inputs. A second virtio-blk stands in for the 9p filesystem",
        "spec": """
            name: autoadd
            machine: q35
            defaults: {usb: false, memballoon: false}
            devices:
              - {name: vserial, model: virtio-serial}
              - {name: scsi, model: virtio-scsi}
              - {name: xhci, model: qemu-xhci}
              - {name: disk, model: virtio-blk}
              - {name: fs, model: virtio-blk}
              - {name: nic, model: virtio-net}
              - {name: nic2, model: e1000e}
              - {name: balloon0, model: virtio-balloon}
              - {name: rng, model: virtio-rng}
              - {name: input, model: virtio-input, count: 4}
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 11},
        "capacity": {"pcie": 1, "pci": 0, "hostdev": 1},
        "controllers_at": {"pcie-root-port": [f"0000:00:01.{f}" for f in range(8)]
                           + [f"0000:00:02.{f}" for f in range(3)]},
        "at": {"nic": "0000:01:00.0", "nic2": "0000:02:00.0", "vserial": "0000:00:02.3", "scsi": "0000:03:00.0",
               "xhci": "0000:00:02.4", "disk": "0000:04:00.0", "fs": "0000:05:00.0", "balloon0": "0000:00:02.5",
               "rng": "0000:06:00.0", "input-0": "0000:07:00.0", "input-3": "0000:0a:00.0"},
    },
    {
        "id": "q35-virt-manager-basic",
        "#": "libvirt case C: qxl is the primary video at 00:01.0 and ich9 sound sits at 00:1b.0, so the "
             "root ports start at 00:02.0; NIC bus 1, disk 2, the spare 3; usb, balloon and virtio-serial, "
             "which libvirt cannot unplug, share that slot as functions 3-5 (libvirt: 6 root ports)",
        "spec": """
            name: vmm
            machine: q35
            devices:
              - {name: disk, model: virtio-blk}
              - {name: vserial, model: virtio-serial}
              - {name: nic, model: virtio-net}
              - {name: sound, model: ich9-hda}
              - {name: video0, model: qxl}
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 3},
        "capacity": {"pcie": 1},
        "controllers_at": {"pcie-root-port": [f"0000:00:02.{f}" for f in range(3)]},
        "at": {"video0": "0000:00:01.0", "sound": "0000:00:1b.0", "nic": "0000:01:00.0", "usb": "0000:00:02.3",
               "vserial": "0000:00:02.5", "disk": "0000:02:00.0", "balloon": "0000:00:02.4"},
    },
    {
        "id": "virtio-transitional",
        "#": "libvirt case D without its spare port: transitional virtio is conventional PCI, which no "
             "root port auto-accepts, so one root port carries a pcie-to-pci-bridge and all six devices "
             "sit on its slots 1-6 in category order",
        "spec": """
            name: transitional
            machine: q35
            defaults: {usb: false}
            devices:
              - {name: disk, model: virtio-blk-transitional}
              - {name: vserial, model: virtio-serial-transitional}
              - {name: scsi, model: virtio-scsi-transitional}
              - {name: nic, model: virtio-net-transitional}
              - {name: balloon0, model: virtio-balloon-transitional}
              - {name: rng, model: virtio-rng-transitional}
        """,
        "added": {"pcie-root-port": 1, "pcie-to-pci-bridge": 1},
        "capacity": {"pcie": 0, "pci": 31 - 6},
        "controllers_at": {"pcie-root-port": ["0000:00:01.0"], "pcie-to-pci-bridge": ["0000:01:00.0"]},
        "at": {"nic": "0000:02:01.0", "vserial": "0000:02:02.0", "scsi": "0000:02:03.0", "disk": "0000:02:04.0",
               "balloon0": "0000:02:05.0", "rng": "0000:02:06.0"},
    },
    {
        "id": "virtio-transitional-with-spare",
        "#": "libvirt case D as libvirt lays it out: 2 root ports + 1 bridge once a pcie hotplug is asked",
        "spec": """
            name: transitional
            machine: q35
            defaults: {usb: false}
            devices:
              - {name: disk, model: virtio-blk-transitional}
              - {name: nic, model: virtio-net-transitional}
              - {name: balloon0, model: virtio-balloon-transitional}
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 2, "pcie-to-pci-bridge": 1},
        "capacity": {"pcie": 1, "pci": 31 - 3},
    },
    {
        "id": "q35-never-unplugged-legacy-on-root",
        "#": "an e1000 marked hotunplug: false may sit on pcie-root itself at an address the plan writes; "
             "that saves the root port and the pcie-to-pci-bridge it would need",
        "spec": """
            name: legacy-root
            machine: q35
            defaults: {usb: false, memballoon: false}
            devices:
              - {name: old, model: e1000, hotunplug: false}
        """,
        "added": {},
        "capacity": {"pcie": 0, "pci": 0},
        "at": {"old": "0000:00:01.0"},
    },
    {
        "id": "q35-pinned-endpoint",
        "#": "a device the spec pins keeps its root-bus address and needs no port; the default usb and "
             "balloon, never unplugged, share the first free slot as two functions",
        "spec": """
            name: pinned
            machine: q35
            devices:
              - {name: nic, model: e1000e, address: "0000:00:05.0"}
        """,
        "added": {},
        "at": {"nic": "0000:00:05.0", "usb": "0000:00:01.0", "balloon": "0000:00:01.1"},
    },
    {
        "id": "q35-many-legacy-needs-pci-bridge",
        "#": "40 conventional PCI hotplugs: a pcie-to-pci-bridge has 31 slots; the cheapest way to 9 more "
             "is one pci-bridge nested on it (1 controller, +30 slots), not another root port + bridge (2)",
        "spec": """
            name: legacy-many
            machine: q35
            defaults: {usb: false, memballoon: false}
            hotplug: [{class: pci, count: 40}]
        """,
        "added": {"pcie-root-port": 1, "pcie-to-pci-bridge": 1, "pci-bridge": 1},
        "capacity": {"pci": 31 - 1 + 31, "pcie": 0},
    },
    {
        "id": "pci-bridge-many-disks",
        "#": "libvirt case G: 105 virtio disks on pc without balloon. pci-root has 30 free slots (2-31); "
             "the bridges are placed first (00:02-00:04), disks fill 00:05-00:1f (27), then 31, 31 and 16 on "
             "the bridges: ceil((105 - 30) / 30) = 3 bridges. libvirt's own spare slot is not kept, so 15 are "
             "left free (bridge 3, slots 0x11-0x1f)",
        "spec": """
            name: many-disks
            machine: pc
            defaults: {memballoon: false}
            devices:
              - {name: disk, model: virtio-blk, count: 105}
        """,
        "added": {"pci-bridge": 3},
        "capacity": {"pci": 15, "pcie": 15},
        "controllers_at": {"pci-bridge": ["0000:00:02.0", "0000:00:03.0", "0000:00:04.0"]},
        "at": {"disk-0": "0000:00:05.0", "disk-26": "0000:00:1f.0", "disk-27": "0000:01:01.0",
               "disk-58": "0000:02:01.0", "disk-104": "0000:03:10.0"},
    },
    {
        "id": "pc-30-devices-full",
        "#": "real-libvirt row 20 without the bridge libvirt adds for its spare: 30 devices fill pci-root "
             "(slots 2-31) exactly, and none is asked to hotplug",
        "spec": """
            name: pc-full
            machine: pc
            defaults: {usb: false, memballoon: false}
            devices: [{model: e1000, count: 30}]
        """,
        "added": {},
        "capacity": {"pci": 0},
    },
    {
        "id": "pc-30-devices-plus-one-hotplug",
        "#": "real-libvirt row 20 (libvirt added one pci-bridge and then took 30 hotplugs): one hotplug on "
             "top of 30 devices needs a bridge, which takes a root slot and gives 31",
        "spec": """
            name: pc-full
            machine: pc
            defaults: {usb: false, memballoon: false}
            devices: [{model: e1000, count: 30}]
            hotplug: [{model: e1000, count: 1}]
        """,
        "added": {"pci-bridge": 1},
        "capacity": {"pci": 30},
    },
    {
        "id": "pc-29-devices-plus-one-hotplug",
        "#": "real-libvirt row 19: 29 devices leave one root slot, enough for one hotplug",
        "spec": """
            name: pc-29
            machine: pc
            defaults: {usb: false, memballoon: false}
            devices: [{model: e1000, count: 29}]
            hotplug: [{class: pci, count: 1}]
        """,
        "added": {},
        "capacity": {"pci": 1},
    },
    {
        "id": "pseries-many-devices",
        "#": "libvirt's pseries-many-devices: 32 virtio-scsi controllers, PHB 0 has 31 slots, so one more PHB "
             "(no slot upstream: PHBs are root buses) takes the 32nd",
        "spec": """
            name: many-scsi
            machine: pseries
            defaults: {usb: false, memballoon: false}
            devices: [{name: scsi, model: virtio-scsi, count: 32}]
        """,
        "added": {"pci-root": 1},
        "capacity": {"pci": 30, "pcie": 30, "hostdev": 0},
        "at": {"scsi-0": "0000:00:01.0", "scsi-30": "0000:00:1f.0", "scsi-31": "0000:01:01.0"},
    },
    {
        "id": "pseries-hostdevs-1",
        "#": "libvirt case H: assigned devices never go on the default PHB, and each IOMMU group gets a PHB "
             "of its own: group 1 on PHB 1, both functions of group 0 on PHB 2",
        "spec": """
            name: hostdevs
            machine: pseries
            defaults: {usb: false}
            devices:
              - {name: ifhd, model: hostdev, iommu_group: 1, host: "0005:90:01.0"}
              - {name: hd0, model: hostdev, iommu_group: 0, host: "0001:01:00.0"}
              - {name: hd1, model: hostdev, iommu_group: 0, host: "0001:01:00.1"}
        """,
        "added": {"pci-root": 2},
        "capacity": {"hostdev": 0, "pcie": 30},
        "at": {"balloon": "0000:00:01.0", "ifhd": "0000:01:01.0", "hd0": "0000:02:01.0", "hd1": "0000:02:02.0"},
    },
    {
        "id": "pseries-hostdev-hotplug",
        "#": "a hostdev to hotplug needs an empty PHB of its own (libvirt's pci-hotplug guide)",
        "spec": """
            name: hostdev-hp
            machine: pseries
            devices: [{name: hd, model: hostdev, iommu_group: 3}]
            hotplug: [{model: hostdev, count: 2}]
        """,
        "added": {"pci-root": 3},
        # per class alone: emulated devices could use the two empty PHBs; the default usb and balloon share
        # one slot of PHB 0 as functions (libvirt unplugs neither), so PHB 0 has 30 free slots
        "capacity": {"hostdev": 2, "pcie": 30 + 2 * 31},
    },
    {
        "id": "aarch64-traditional-pci",
        "#": "libvirt's aarch64-pci-serial / aarch64-traditional-pci without the spare: a pci-serial is "
             "conventional PCI, so a root port at 00:01.0 carries a pcie-to-pci-bridge, the serial at 02:01.0",
        "spec": """
            name: arm-serial
            machine: virt
            devices: [{name: serial0, model: pci-serial}]
        """,
        "added": {"pcie-root-port": 1, "pcie-to-pci-bridge": 1},
        "capacity": {"pcie": 0, "pci": 30},
        "controllers_at": {"pcie-root-port": ["0000:00:01.0"], "pcie-to-pci-bridge": ["0000:01:00.0"]},
        "at": {"serial0": "0000:02:01.0"},
    },
    {
        "id": "aarch64-traditional-pci-with-spare",
        "#": "the same with libvirt's spare port: root ports 00:01.0 and 00:01.1, the bridge behind the first",
        "spec": """
            name: arm-serial
            machine: virt
            devices: [{name: serial0, model: pci-serial}]
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 2, "pcie-to-pci-bridge": 1},
        "capacity": {"pcie": 1, "pci": 30},
        "controllers_at": {"pcie-root-port": ["0000:00:01.0", "0000:00:01.1"]},
    },
    {
        "id": "aarch64-virtio-pci-default",
        "#": "libvirt's aarch64-virtio-pci-default: virt adds no usb and no balloon by itself; libvirt "
             "gives NIC, virtio-serial, disk, balloon, rng and a spare 6 root ports. virtio-serial and the "
             "balloon it cannot unplug: they take functions 4 and 5 of slot 1 after the 4 root ports of "
             "the NIC, the disk, the rng and the spare (virt has no chipset, so slot 1 is free)",
        "spec": """
            name: arm-virtio
            machine: virt
            devices:
              - {name: disk, model: virtio-blk}
              - {name: nic, model: virtio-net}
              - {name: vserial, model: virtio-serial}
              - {name: balloon0, model: virtio-balloon}
              - {name: rng, model: virtio-rng}
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 4},
        "capacity": {"pcie": 1, "pci": 0},
        "controllers_at": {"pcie-root-port": [f"0000:00:01.{f}" for f in range(4)]},
        "at": {"nic": "0000:01:00.0", "vserial": "0000:00:01.4", "disk": "0000:02:00.0",
               "balloon0": "0000:00:01.5", "rng": "0000:03:00.0"},
    },
    {
        "id": "aarch64-virt-default-nic",
        "#": "libvirt's aarch64-virt-default-nic: one NIC on port 1, the spare port 2",
        "spec": """
            name: arm-nic
            machine: virt
            devices: [{name: nic, model: virtio-net}]
            hotplug: [{class: pcie, count: 1}]
        """,
        "added": {"pcie-root-port": 2},
        "capacity": {"pcie": 1},
        "at": {"nic": "0000:01:00.0"},
    },
    {
        "id": "pc-900-nics-nest-a-bridge-to-keep-the-balloons-slot",
        "#": "900 e1000 need 30 pci-bridges (29 free root slots, 31 slots a bridge); the balloon, never "
             "unplugged, needs a root slot, so the 30th bridge nests in the first and the balloon keeps "
             "the last root slot (found by the fuzzer: 'no root slot left for balloon', exit 3)",
        "spec": """
            name: big
            machine: pc
            devices:
              - {name: nic, model: e1000, count: 900}
        """,
        "added": {"pci-bridge": 30},
        "at": {"balloon": "0000:00:1f.0"},
    },
    {
        "id": "q35-240-e1000-never-unplugged-leave-a-root-function-for-the-bridges-port",
        "#": "240 e1000 that are never unplugged: 238 root functions are free (usb and balloon take two), so "
             "the rest need a pcie-to-pci-bridge, whose root port needs a root function too; the search once "
             "tried only 'all 238 on pcie-root' and called the spec infeasible (found by the long fuzz run)",
        "spec": """
            name: many
            machine: q35
            devices:
              - {name: nic, model: e1000, count: 240, hotunplug: false}
        """,
        "added": {"pcie-root-port": 1, "pcie-to-pci-bridge": 1},
    },
    {
        "id": "q35-sound-takes-a-function-of-the-ports-slot",
        "#": "every root slot pinned but 00:1b, which ich9 sound prefers: the root ports take that slot and "
             "the sound card, never unplugged, a function of it, not a pcie-to-pci-bridge of its own (the "
             "first fix of the 240-e1000 case capped the root bus by the ports a bridge-less candidate "
             "derives, and planned 13 controllers here)",
        "spec": """
            name: sound
            machine: q35
            devices:
              - {name: pin01, model: e1000, address: '0000:00:01.0', hotunplug: false}
              - {name: pin02, model: e1000, address: '0000:00:02.0', hotunplug: false}
              - {name: pin03, model: e1000, address: '0000:00:03.0', hotunplug: false}
              - {name: pin04, model: e1000, address: '0000:00:04.0', hotunplug: false}
              - {name: pin05, model: e1000, address: '0000:00:05.0', hotunplug: false}
              - {name: pin06, model: e1000, address: '0000:00:06.0', hotunplug: false}
              - {name: pin07, model: e1000, address: '0000:00:07.0', hotunplug: false}
              - {name: pin08, model: e1000, address: '0000:00:08.0', hotunplug: false}
              - {name: pin09, model: e1000, address: '0000:00:09.0', hotunplug: false}
              - {name: pin0a, model: e1000, address: '0000:00:0a.0', hotunplug: false}
              - {name: pin0b, model: e1000, address: '0000:00:0b.0', hotunplug: false}
              - {name: pin0c, model: e1000, address: '0000:00:0c.0', hotunplug: false}
              - {name: pin0d, model: e1000, address: '0000:00:0d.0', hotunplug: false}
              - {name: pin0e, model: e1000, address: '0000:00:0e.0', hotunplug: false}
              - {name: pin0f, model: e1000, address: '0000:00:0f.0', hotunplug: false}
              - {name: pin10, model: e1000, address: '0000:00:10.0', hotunplug: false}
              - {name: pin11, model: e1000, address: '0000:00:11.0', hotunplug: false}
              - {name: pin12, model: e1000, address: '0000:00:12.0', hotunplug: false}
              - {name: pin13, model: e1000, address: '0000:00:13.0', hotunplug: false}
              - {name: pin14, model: e1000, address: '0000:00:14.0', hotunplug: false}
              - {name: pin15, model: e1000, address: '0000:00:15.0', hotunplug: false}
              - {name: pin16, model: e1000, address: '0000:00:16.0', hotunplug: false}
              - {name: pin17, model: e1000, address: '0000:00:17.0', hotunplug: false}
              - {name: pin18, model: e1000, address: '0000:00:18.0', hotunplug: false}
              - {name: pin19, model: e1000, address: '0000:00:19.0', hotunplug: false}
              - {name: pin1a, model: e1000, address: '0000:00:1a.0', hotunplug: false}
              - {name: pin1c, model: e1000, address: '0000:00:1c.0', hotunplug: false}
              - {name: pin1d, model: e1000, address: '0000:00:1d.0', hotunplug: false}
              - {name: pin1e, model: e1000, address: '0000:00:1e.0', hotunplug: false}
              - {name: snd, model: ich9-hda}
            hotplug:
              - {class: pcie, count: 9}
        """,
        "added": {"pcie-root-port": 5, "pcie-switch-upstream-port": 1, "pcie-switch-downstream-port": 5},
        "at": {"snd": "0000:00:1b.7"},
    },
    {
        "id": "pseries-numa-node-takes-one-phb",
        "#": "31 hotplugs on NUMA node 0 take one PHB of their own (31 slots), the hostdev another: the "
             "count search once took a PHB for a controller that sits in a slot (31 - 1 = 30 positions) and "
             "planned 3 (found by the property test against the brute-force minimum)",
        "spec": """
            name: prop-pseries
            machine: pseries
            numa: {nodes: 1}
            devices:
              - {model: e1000, count: 3, name: d}
              - {model: hostdev, name: h}
            hotplug:
              - {class: pcie, count: 31, numa_node: 0}
        """,
        "added": {"pci-root": 2},
    },
]


@pytest.mark.parametrize("case", _params(PLANS))
def test_plan(case):
    plan = plan_of(case["spec"], f"{case['id']}.yaml")
    assert plan.added == case["added"], case["#"]
    for cls, n in case.get("capacity", {}).items():
        assert plan.capacity[EndpointClass(cls)] == n, f"{cls} capacity; {case['#']}"
    for model, addresses in case.get("controllers_at", {}).items():
        got = [str(c.address) for c in plan.layout.controllers if c.model == model]
        assert got == addresses, f"{model} addresses; {case['#']}"
    where = {p.endpoint.name: str(p.address) for p in plan.layout.placed}
    for name, address in case.get("at", {}).items():
        assert where.get(name) == address, f"{name}; {case['#']}"
    assert verify(plan.layout, _rules(plan)).errors == []


def _rules(plan):
    from topo_solve.rules import FAMILIES

    return FAMILIES[plan.layout.family]


def test_root_port_targets_follow_libvirt():
    """libvirt's final pass: chassis = the controller's index, port = slot x 8 + function,
    multifunction='on' at function 0 of a slot shared by several ports."""
    plan = plan_of(PLANS[2]["spec"])
    for c in plan.layout.controllers[1:]:
        target = dict(c.target)
        assert target == {"chassis": c.index, "port": c.address.slot * 8 + c.address.function}
        assert c.multifunction == (c.address.function == 0)


def test_plans_are_deterministic_across_spec_order_of_keys():
    """The same spec with its mappings written in another key order plans the same domain."""
    a = plan_of("""
        name: k
        machine: q35
        devices: [{name: n, model: virtio-net, count: 2}]
        hotplug: [{class: pci, count: 1}]
    """)
    b = plan_of("""
        hotplug: [{count: 1, class: pci}]
        devices: [{count: 2, model: virtio-net, name: n}]
        machine: q35
        name: k
    """)
    from topo_solve.domain.write import render_domain

    assert render_domain(a) == render_domain(b)


# -- audits: capacity of hand-written domains, measured on real libvirt -----------

def domain(machine: str, arch: str, devices: str, *, acpi: bool = True) -> str:
    features = "<features><acpi/></features>" if acpi else ""
    return f"""<domain type='qemu'>
  <name>audit</name>
  <memory unit='MiB'>256</memory>
  <os><type arch='{arch}' machine='{machine}'>hvm</type></os>
  {features}
  <devices>
{devices}
  </devices>
</domain>"""


def addr(bus: int, slot: int, function: int = 0, multifunction: bool = False) -> str:
    mf = " multifunction='on'" if multifunction else ""
    return (f"<address type='pci' domain='0x0000' bus='0x{bus:02x}' slot='0x{slot:02x}' "
            f"function='0x{function:x}'{mf}/>")


def root_ports(n: int, first_index: int = 1, first_slot: int = 1, hotplug_off: set[int] = frozenset()) -> str:
    """n pcie-root-ports as dumpxml shows them: eight per slot from first_slot."""
    out = []
    for k in range(n):
        index, slot, fn = first_index + k, first_slot + k // 8, k % 8
        off = " hotplug='off'" if index in hotplug_off else ""
        out.append(f"    <controller type='pci' index='{index}' model='pcie-root-port'>"
                   f"<model name='pcie-root-port'/><target chassis='{index}' port='0x{slot * 8 + fn:x}'{off}/>"
                   f"{addr(0, slot, fn, multifunction=fn == 0 and n - k > 1)}</controller>")
    return "\n".join(out)


Q35_ROOT = "    <controller type='pci' index='0' model='pcie-root'/>"
Q35_SATA = f"    <controller type='sata' index='0'>{addr(0, 0x1f, 2)}</controller>"
Q35_OFF = "    <controller type='usb' index='0' model='none'/>\n    <memballoon model='none'/>"
PC_ROOT = "    <controller type='pci' index='0' model='pci-root'/>"
PC_USB = f"    <controller type='usb' index='0' model='piix3-uhci'>{addr(0, 1, 2)}</controller>"
VIRT_ROOT = Q35_ROOT


def phb(index: int) -> str:
    return (f"    <controller type='pci' index='{index}' model='pci-root'><model name='spapr-pci-host-bridge'/>"
            f"<target index='{index}'/></controller>")


# An upstream port on root port 1 (bus 1) with 4 downstream ports (indexes 4-7).
SWITCH = ("    <controller type='pci' index='3' model='pcie-switch-upstream-port'>"
          f"<model name='x3130-upstream'/>{addr(1, 0)}</controller>\n"
          + "\n".join(f"    <controller type='pci' index='{4 + k}' model='pcie-switch-downstream-port'>"
                      f"<model name='xio3130-downstream'/><target chassis='{4 + k}' port='0x{k:x}'/>"
                      f"{addr(3, k)}</controller>" for k in range(4)))
# A dmi-to-pci-bridge at 00:1e.0 with a pci-bridge behind it.
DMI = ("    <controller type='pci' index='1' model='dmi-to-pci-bridge'><model name='i82801b11-bridge'/>"
       f"{addr(0, 0x1e)}</controller>\n"
       "    <controller type='pci' index='2' model='pci-bridge'><model name='pci-bridge'/>"
       f"<target chassisNr='2'/>{addr(1, 0)}</controller>")


def q35(devices: str, **kw) -> str:
    return domain("pc-q35-7.2", "x86_64", f"{Q35_ROOT}\n{Q35_SATA}\n{devices}", **kw)


AUDITS = [
    {"id": "row0-q35-4-ports-no-defaults", "#": "4 empty root ports take 4 PCIe hotplugs",
     "xml": q35(f"{root_ports(4)}\n{Q35_OFF}"), "capacity": {"pcie": 4, "pci": 0}},
    {"id": "row1-q35-without-acpi", "#": "q35 hotplugs natively; ACPI does not matter",
     "xml": q35(f"{root_ports(4)}\n{Q35_OFF}", acpi=False), "capacity": {"pcie": 4}},
    {"id": "row2-q35-4-ports-defaults",
     "#": "the default usb and balloon sit on two of the 4 ports, leaving 2",
     "xml": q35(f"{root_ports(4)}\n"
                f"    <controller type='usb' index='0' model='qemu-xhci'>{addr(1, 0)}</controller>\n"
                f"    <memballoon model='virtio'>{addr(2, 0)}</memballoon>"),
     "capacity": {"pcie": 2, "pci": 0}},
    {"id": "row6-q35-pcie-root-only", "#": "pcie-root itself takes no hotplug",
     "xml": q35(Q35_OFF), "capacity": {"pcie": 0, "pci": 0}},
    {"id": "row7-q35-ports-take-no-conventional-pci",
     "#": "conventional PCI is never auto-placed in a root port",
     "xml": q35(f"{root_ports(4)}\n{Q35_OFF}"), "capacity": {"pci": 0}},
    {"id": "row8-q35-pcie-to-pci-bridge",
     "#": "3 root ports, one holding a pcie-to-pci-bridge: 2 PCIe, and the bridge's 31 slots for PCI",
     "xml": q35(f"{root_ports(3)}\n    <controller type='pci' index='4' model='pcie-to-pci-bridge'>"
                f"<model name='pcie-pci-bridge'/>{addr(1, 0)}</controller>\n{Q35_OFF}"),
     "capacity": {"pcie": 2, "pci": 31}},
    {"id": "row9-q35-switch", "#": "2 root ports, one holding a switch with 4 downstream ports: 5 PCIe",
     "xml": q35(f"{root_ports(2)}\n{SWITCH}\n{Q35_OFF}"),
     "capacity": {"pcie": 5}},
    {"id": "row10-q35-30-ports", "#": "30 root ports, 30 PCIe hotplugs",
     "xml": q35(f"{root_ports(30)}\n{Q35_OFF}"), "capacity": {"pcie": 30}},
    {"id": "row11-q35-port-hotplug-off", "#": "a root port with hotplug='off' takes no hotplug",
     "xml": q35(f"{root_ports(3, hotplug_off={2})}\n{Q35_OFF}"), "capacity": {"pcie": 2, "pci": 0}},
    {"id": "row12-q35-dmi-to-pci-bridge",
     "#": "a dmi-to-pci-bridge (no hotplug on its own slots) with a pci-bridge: 31 PCI, 0 PCIe",
     "xml": q35(f"{DMI}\n{Q35_OFF}"),
     "capacity": {"pcie": 0, "pci": 31}},
    {"id": "row14-q35-240-ports", "#": "240 root ports (30 slots x 8), the most pcie-root holds",
     "xml": q35(f"{root_ports(240)}\n{Q35_OFF}".replace(addr(0, 0x1f, 0), "")), "capacity": {"pcie": 240}},
    {"id": "row15-pc-defaults", "#": "PIIX3 has slot 1 (usb 01.2), the balloon slot 2: 29 slots, 3-31",
     "xml": domain("pc-i440fx-7.2", "x86_64", f"{PC_ROOT}\n{PC_USB}\n"
                   f"    <memballoon model='virtio'>{addr(0, 2)}</memballoon>"),
     "capacity": {"pci": 29, "pcie": 29}},
    {"id": "row16-pc-without-acpi", "#": "i440fx hotplug is ACPI-based: without <acpi/> nothing hotplugs",
     "xml": domain("pc-i440fx-7.2", "x86_64", f"{PC_ROOT}\n{PC_USB}\n"
                   f"    <memballoon model='virtio'>{addr(0, 2)}</memballoon>", acpi=False),
     "capacity": {"pci": 0, "pcie": 0}},
    {"id": "row17-pc-no-defaults", "#": "no usb/balloon: slots 2-31",
     "xml": domain("pc-i440fx-7.2", "x86_64", f"{PC_ROOT}\n{Q35_OFF}"), "capacity": {"pci": 30}},
    {"id": "row18-pc-pci-bridge", "#": "a pci-bridge at 00:02 (no balloon): 29 root slots + 31 bridge slots",
     "xml": domain("pc-i440fx-7.2", "x86_64", f"{PC_ROOT}\n{PC_USB}\n"
                   "    <controller type='pci' index='1' model='pci-bridge'><model name='pci-bridge'/>"
                   f"<target chassisNr='1'/>{addr(0, 2)}</controller>\n    <memballoon model='none'/>"),
     "capacity": {"pci": 60}},
    {"id": "row21-pseries-defaults", "#": "usb and balloon take PHB 0 slots 1-2: 29",
     "xml": domain("pseries-7.2", "ppc64le", f"{phb(0)}\n"
                   f"    <controller type='usb' index='0' model='qemu-xhci'>{addr(0, 1)}</controller>\n"
                   f"    <memballoon model='virtio'>{addr(0, 2)}</memballoon>", acpi=False),
     "capacity": {"pci": 29, "pcie": 29}},
    {"id": "row22-pseries-no-defaults", "#": "PHB slots 1-31",
     "xml": domain("pseries-7.2", "ppc64le", f"{phb(0)}\n{Q35_OFF}", acpi=False), "capacity": {"pci": 31}},
    {"id": "row23-pseries-extra-phb", "#": "31 per PHB", "capacity": {"pci": 62},
     "xml": domain("pseries-7.2", "ppc64le", f"{phb(0)}\n{phb(1)}\n{Q35_OFF}", acpi=False)},
    {"id": "row24-virt-3-ports", "#": "K root ports, K hotplugs (no chipset, ports from 00:01.0)",
     "xml": domain("virt-7.2", "aarch64", f"{VIRT_ROOT}\n{root_ports(3)}", acpi=False), "capacity": {"pcie": 3}},
    {"id": "row25-virt-pcie-root-only", "#": "pcie-root takes no hotplug",
     "xml": domain("virt-7.2", "aarch64", VIRT_ROOT, acpi=False), "capacity": {"pcie": 0, "pci": 0}},
    {"id": "virt-switch", "#": "not measured; virt shares q35's PCIe controllers, so row 9 holds: a switch "
     "with 4 downstream ports behind one of 2 root ports gives 5 PCIe",
     "xml": domain("virt-7.2", "aarch64", f"{VIRT_ROOT}\n{root_ports(2)}\n{SWITCH}", acpi=False),
     "capacity": {"pcie": 5, "pci": 0}},
    {"id": "virt-dmi-to-pci-bridge", "#": "not measured; as row 12 (libvirt's aarch64-virtio-pci-manual-addresses "
     "uses a dmi-to-pci-bridge on ARM): only the pci-bridge behind it hotplugs",
     "xml": domain("virt-7.2", "aarch64", f"{VIRT_ROOT}\n{DMI}", acpi=False),
     "capacity": {"pcie": 0, "pci": 31}},
    {"id": "row26-virt-bridge", "#": "2 root ports, one with a pcie-to-pci-bridge: 1 PCIe, 31 PCI",
     "xml": domain("virt-7.2", "aarch64", f"{VIRT_ROOT}\n{root_ports(2)}\n"
                   "    <controller type='pci' index='3' model='pcie-to-pci-bridge'><model name='pcie-pci-bridge'/>"
                   f"{addr(1, 0)}</controller>", acpi=False),
     "capacity": {"pcie": 1, "pci": 31}},
]


@pytest.mark.parametrize("case", _params(AUDITS))
def test_audit_capacity_matches_real_libvirt(case):
    layout, rules = read_layout(case["xml"], f"{case['id']}.xml")
    report = verify(layout, rules, strict_auto=False)
    assert report.errors == [], case["#"]
    for cls, n in case["capacity"].items():
        assert report.capacity[EndpointClass(cls)] == n, f"{cls}: {case['#']}"


def test_audit_xml_is_what_libvirt_accepts(schema_valid):
    """The hand-written audit domains are valid libvirt XML (so the audit cases test real input)."""
    for case in AUDITS:
        schema_valid(case["xml"], case["id"])


# -- infeasible specs -------------------------------------------------------------

INFEASIBLE = [
    {
        "id": "q35-300-pcie-hotplug",
        "#": "300 PCIe hotplugs need 300 ports: the default usb and balloon, never unplugged, take two "
             "functions of pcie-root's 30 free slots, which leaves 238 root ports; 62 more downstream ports "
             "on 2 switches (each on a root port) make 304 controllers, but libvirt numbers them 0-255. The "
             "largest pcie headroom that fits is 253: 238 root ports and one switch of 16 downstream ports, "
             "255 controllers and 256 bus numbers",
        "spec": "name: too-many\nmachine: q35\nhotplug: [{class: pcie, count: 300}]\n",
        "limit": 256, "needed_at_least": 300, "words": ["controller indexes", "0-255"], "largest": {"pcie": 253},
    },
    {
        "id": "pseries-31-hostdev-hotplug",
        "#": "every hostdev to hotplug needs an empty PHB; PHB target indexes are 0-30, so 30 besides the "
             "default one",
        "spec": "name: hd\nmachine: pseries\nhotplug: [{model: hostdev, count: 31}]\n",
        "limit": 31, "needed_at_least": 32, "words": ["pci-root", "31"], "largest": {"hostdev": 30},
    },
    {
        "id": "pseries-boot-groups-and-hotplug",
        "#": "20 IOMMU groups at boot and 11 hostdevs to hotplug need 31 extra PHBs; 30 exist",
        "spec": "name: hd\nmachine: pseries\ndevices:\n"
                + "".join(f"  - {{name: g{g}, model: hostdev, iommu_group: {g}}}\n" for g in range(20))
                + "hotplug: [{model: hostdev, count: 11}]\n",
        "limit": 31, "needed_at_least": 32, "words": ["31"], "largest": {"hostdev": 10},
    },
    {
        "id": "pc-index-budget",
        "#": "10000 PCI hotplugs on pc need 333 pci-bridges; libvirt numbers controllers 0-255",
        "spec": "name: huge\nmachine: pc\nhotplug: [{class: pci, count: 10000}]\n",
        "limit": 256, "needed_at_least": 300, "words": ["0-255"],
    },
]


@pytest.mark.parametrize("case", _params(INFEASIBLE))
def test_infeasible_names_the_binding_limit(case):
    with pytest.raises(InfeasibleError) as info:
        plan_of(case["spec"])
    err = info.value
    assert err.exit_code == 1
    binding = [c for c in err.causes if c.limit == case["limit"]]
    assert binding, f"no cause with limit {case['limit']}: {err.render()}"
    assert binding[0].needed >= case["needed_at_least"] > binding[0].limit
    text = err.render()
    for w in case["words"]:
        assert w in text
    if "largest" in case:
        assert err.largest == case["largest"], case["#"]
    assert not re.search(r"\b(\d+) \1 ", text), f"a number said twice: {text}"


def test_a_switch_that_does_not_fit_is_counted_once():
    """Every root slot pinned: the PCIe headroom needs root ports and switches that have no room.
    The explanation says how many upstream ports once ("because 2 pcie-switch-upstream-ports"),
    not "2 2 pcie-switch-upstream-ports" (found by the differential run of issue 12)."""
    pins = "".join(f'  - {{name: p{s:02x}, model: virtio-rng, address: "0000:00:{s:02x}.0"}}\n'
                   for s in range(1, 0x1F))
    with pytest.raises(InfeasibleError) as info:
        plan_of(f"name: pinned\nmachine: q35\ndevices:\n{pins}hotplug:\n  - {{class: pcie, count: 40}}\n")
    text = info.value.render()
    assert "pcie-switch-upstream-ports" in text and not re.search(r"\b(\d+) \1 ", text), text


# -- spec errors ---------------------------------------------------------------------

def spec_errors(text: str, file: str = "bad.yaml") -> list[str]:
    with pytest.raises(SpecError) as info:
        problem_of(text, file)
    assert info.value.exit_code == 2
    return [str(p) for p in info.value.problems]


def assert_reported(problems: list[str], expected: list[tuple[int, str, str]]) -> None:
    """Each (line, field path, words) is reported as 'bad.yaml:LINE: PATH: ...WORDS...'."""
    for line, path, words in expected:
        prefix = f"bad.yaml:{line}: {path}:"
        hits = [p for p in problems if p.startswith(prefix) and words in p]
        assert hits, f"expected {prefix} ... {words!r} among:\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)


def test_every_semantic_problem_is_reported_at_once():
    problems = spec_errors("""\
        name: bad
        machine: q35
        devices:
          - {name: nic, model: virtio-nett}
          - {name: x, model: e1000e, address: "0000:00:zz.0"}
          - {name: y, model: e1000e, address: "0000:00:1f.0"}
          - {name: z, model: e1000e, address: "0000:01:05.0"}
          - {name: a, model: e1000e, address: "0000:00:05.0"}
          - {name: b, model: e1000e, address: "0000:00:05.0"}
          - {name: twice, model: virtio-net}
          - {name: twice, model: e1000}
          - {name: usb, model: virtio-net}
          - {name: d, model: virtio-net, iommu_group: 3}
        hotplug:
          - {model: virtio-gpu, count: 1}
          - {model: e100}
    """)
    assert_reported(problems, [
        (4, "devices[0].model", "did you mean 'virtio-net'"),
        (5, "devices[1].address", "not a PCI address"),
        (6, "devices[2].address", "belongs to the chipset"),
        (7, "devices[3].address", "root bus"),
        (9, "devices[5].address", "already pinned"),
        (11, "devices[7].name", "used twice"),
        (12, "devices[8].name", "implicit"),
        (13, "devices[9].iommu_group", "only assigned host devices"),
        (15, "hotplug[0].model", "cannot hotplug a virtio-gpu"),
        (16, "hotplug[1].model", "did you mean 'e1000'"),
    ])


def test_every_schema_problem_is_reported_at_once():
    problems = spec_errors("""\
        name: bad guest
        machine: q35
        colour: red
        devices:
          - {name: z, model: e1000e, adress: "0000:00:05.0"}
          - {model: e1000e, count: 0}
        hotplug:
          - {class: pcie-ish, count: 1}
    """)
    assert_reported(problems, [
        (1, "name", "letters, digits"),
        (3, "colour", "unknown field"),
        (5, "devices[0].adress", "did you mean 'address'"),
        (6, "devices[1].count", "a whole number from 1 to 10000"),
        (8, "hotplug[0].class", "'pcie'"),
    ])


def test_schema_and_semantic_problems_are_reported_together():
    """README: 'Every problem in a spec is reported at once'. A misspelt field must not hide an
    unknown model elsewhere in the same file."""
    problems = spec_errors("""\
        name: bad
        machine: q35
        devices:
          - {name: a, model: virtio-nett}
          - {name: b, model: e1000, hotunplgu: false}
    """)
    assert_reported(problems, [
        (4, "devices[0].model", "did you mean 'virtio-net'"),
        (5, "devices[1].hotunplgu", "did you mean 'hotunplug'"),
    ])


def test_unknown_machine_suggests_one():
    problems = spec_errors("name: bad\nmachine: q36\n")
    assert_reported(problems, [(2, "machine", "did you mean 'q35'")])


def test_missing_required_fields():
    problems = spec_errors("devices: []\n")
    assert any("name: required field is missing" in p for p in problems)
    assert any("machine: required field is missing" in p for p in problems)


def test_yaml_syntax_error_has_its_line():
    problems = spec_errors("name: bad\nmachine: q35\ndevices:\n  - {model: e1000\n")
    assert len(problems) == 1 and problems[0].startswith("bad.yaml:") and "not valid YAML" in problems[0]


def test_wrong_arch_for_the_machine():
    problems = spec_errors("name: bad\nmachine: pseries\narch: x86_64\n")
    assert_reported(problems, [(3, "arch", "ppc64le")])


def test_a_guest_has_one_balloon():
    """libvirt's schema allows one <memballoon>; two balloon models in one spec must be refused,
    not rendered as a domain libvirt cannot define."""
    problems = spec_errors("""\
        name: bad
        machine: q35
        devices:
          - {model: virtio-balloon}
          - {model: virtio-balloon-transitional}
    """)
    assert len(problems) == 1 and "balloon" in problems[0]


def test_pinned_hostdev_on_the_default_phb_is_not_a_programming_error():
    """A spec may pin devices to the root bus; on pseries that is the default PHB, which never
    takes assigned devices.  The user gets a spec error (exit 2) or a plan that verifies -- not a
    'programming error (please report it)' (exit 3)."""
    text = """\
        name: pinned-hd
        machine: pseries
        devices:
          - {name: hd, model: hostdev, address: "0000:00:05.0"}
    """
    try:
        plan = plan_of(text)
    except SpecError as exc:
        assert any("devices[0].address" in str(p) for p in exc.problems)
    else:
        assert verify(plan.layout, _rules(plan)).errors == []


def test_address_parsing():
    assert Address.parse("0000:00:05.0") == Address(0, 5, 0)
    assert Address.parse("01:1f.7") == Address(1, 0x1F, 7)
    for bad in ("0000:00:20.0", "00:05", "0000:00:05.8", "zz"):
        with pytest.raises(ValueError):
            Address.parse(bad)


def test_infeasible_hints_name_what_the_spec_spends():
    """Hints appear only for what the spec has: legacy devices, implicit devices, a video card."""
    from topo_solve.spec import Spec, to_problem

    def err(spec: dict):
        with pytest.raises(InfeasibleError) as e:
            solve(to_problem(Spec.model_validate(spec)))
        return e.value

    # 260 PCIe ports need 240 root ports and a switch: 262 controllers, past the 255 indexes
    base = {"name": "h", "machine": "q35", "hotplug": [{"class": "pcie", "count": 260}]}
    lean = err({**base, "defaults": {"usb": False, "memballoon": False},
                "devices": [{"model": "virtio-net"}]})
    assert lean.hints == []
    full = err({**base, "defaults": {"video": True}, "devices": [{"model": "e1000", "count": 2}]})
    text = "\n".join(full.hints)
    assert "2 conventional PCI device(s) (e1000)" in text
    assert "usb: false, memballoon: false" in text and "video: false" in text
    assert "hint: " in full.render()


# -- layout policies -------------------------------------------------------------------------

LEGACY = "name: legacy\nmachine: q35\ndevices:\n  - {name: nic, model: e1000, count: 2}\nhotplug:\n  - {model: e1000, count: 4}\n"


def test_layout_qemu_guidelines_keeps_pcie_root_for_ports_and_notes_the_cheaper_one():
    """QEMU's docs/pcie.txt: legacy PCI behind a pcie-to-pci-bridge in a root port (2 controllers);
    libvirt also takes a pci-bridge on pcie-root (1): the default layout plans the first and says
    what the other would save."""
    plan = plan_of(LEGACY)
    assert plan.added == {"pcie-root-port": 1, "pcie-to-pci-bridge": 1}
    assert plan.notes == ("1 fewer controller(s) with layout: libvirt-accepts (a pci-bridge on pcie-root, which "
                          "libvirt takes but QEMU's docs/pcie.txt advises against)",)


def test_layout_libvirt_accepts_puts_a_pci_bridge_on_pcie_root():
    plan = plan_of("layout: libvirt-accepts\n" + LEGACY)
    assert plan.added == {"pci-bridge": 1} and not plan.notes
    bridge = next(c for c in plan.layout.controllers if c.model == "pci-bridge")
    assert bridge.address.bus == 0
    assert plan.capacity[EndpointClass.PCI] == 31 - 2


def test_a_layout_without_legacy_devices_has_no_note():
    assert not plan_of("name: p\nmachine: q35\nhotplug: [{class: pcie, count: 3}]\n").notes
