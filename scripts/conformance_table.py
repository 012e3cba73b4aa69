"""Print the measured conformance table (docs/conformance.md) from a real libvirt.

    python scripts/conformance_table.py > docs/conformance-table.md

Plans every example spec and the generated specs of tests/test_conformance.py,
defines each in libvirt (qemu:///system, TCG), hotplugs each class until refused
and prints one row per spec and class: promised capacity, measured hotplugs.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_conformance import SPECS, _generated, _plannable, _prepare  # noqa: E402
from topo_solve.domain.write import render_domain  # noqa: E402
from topo_solve.hypervisor import Virsh, ensure_daemon, measure  # noqa: E402
from topo_solve.model import EndpointClass  # noqa: E402
from topo_solve.solve import solve  # noqa: E402
from topo_solve.spec import load_spec, parse_spec, to_problem  # noqa: E402


def main() -> None:
    daemon = ensure_daemon("qemu:///system")
    virsh = Virsh()
    plans = [(p.stem, solve(load_spec(p))) for p in SPECS if _plannable(p)]
    for family in ("q35", "pc", "pseries", "virt"):
        for seed in range(3):
            spec, lines = parse_spec(_generated(family, seed))
            plans.append((f"gen-{family}-{seed}", solve(to_problem(spec, lines))))
    print(f"libvirt: {virsh.version()}\n")
    print("| spec | family | added controllers | class | promised | measured | refusal |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, plan in plans:
            hostdev = any(p.endpoint.cls == EndpointClass.HOSTDEV for p in plan.layout.placed)
            if hostdev and plan.layout.family == "pseries":
                print(f"| {name} | pseries | {sum(plan.added.values())} | (define only: boot-time hostdevs) "
                      "| | | |")
                continue
            xml = render_domain(replace(plan, problem=replace(plan.problem, virt_type="qemu")))
            with tempfile.TemporaryDirectory() as tmp:
                m = measure(_prepare(xml, Path(tmp), swap_hostdevs=True), ["pcie", "pci"], virsh=virsh,
                            max_per_class=max(plan.capacity.values()) + 2)
            for c in ("pcie", "pci"):
                refusal = (m.refusals.get(c) or "").replace("|", "/")[:60]
                print(f"| {name} | {plan.layout.family} | {sum(plan.added.values())} | {c} | "
                      f"{plan.capacity[EndpointClass(c)]} | {m.hotplugged.get(c)} | {refusal} |", flush=True)
    finally:
        if daemon is not None:
            daemon.stop()


if __name__ == "__main__":
    main()
