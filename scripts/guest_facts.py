"""Print docs/conformance.md's "Seen from the guest" tables from the guest tests' facts.

    TOPO_SOLVE_GUEST_FACTS=/tmp/facts.json pytest -m guest
    python scripts/guest_facts.py /tmp/facts.json

The guest tests (tests/test_guest.py, tests/test_guest_measure.py) record what they
measured; this turns the JSON into the Markdown tables of the document.
"""

from __future__ import annotations

import json
import sys


def _hp(rec: dict | None) -> str:
    if not rec:
        return ""
    n = rec["hotplugged"]
    if not n:
        return "0"
    io = rec.get("io_bars") or {}
    io_txt = "; I/O BARs " + ", ".join(f"bus {b}: {v}" for b, v in sorted(io.items())) if io else ""
    return f"{n}/{n} arrive, BARs assigned{io_txt}; all unplugged ({rec['plug_s']} s / {rec['unplug_s']} s)"


def main(path: str) -> None:
    facts = json.load(open(path))
    virt = facts.get("virt", {})
    print(f"Guest: {facts.get('kernel', '?')} + busybox-static 1.35, under "
          f"{'KVM' if virt.get('type') == 'kvm' else 'TCG'} ({virt.get('why', '')}).\n")
    print("| spec | firmware | controllers | PCI functions seen | boot (s) | pcie hotplugs seen from the guest "
          "| pci hotplugs seen from the guest |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(k for k in facts if k.startswith("spec_")):
        r = facts[key]
        name, _, fw = key[len("spec_"):].rpartition("_")
        print(f"| {name} | {fw} | {r['controllers']} | {r['pci_devices_seen']} (all at the planned address) "
              f"| {r['boot_s']} | {_hp(r.get('pcie'))} | {_hp(r.get('pci'))} |")
    print()
    for key in sorted(k for k in facts if not k.startswith("spec_") and k not in ("virt", "kernel")):
        print(f"- `{key}`: `{json.dumps(facts[key], sort_keys=True)}`")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "guest-facts.json")
