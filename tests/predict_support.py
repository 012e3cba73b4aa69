"""Helpers for the prediction tests: the PCI address map of a domain XML, predicted or stored by libvirt.

The map is what the tests compare whole: every PCI controller (index -> model, address, ``<target>``
values) and every other element with a PCI address, keyed by what identifies it in both documents --
its user alias (``ua-...``, which :func:`with_aliases` gives every device that may take a PCI address
before the XML is defined), a non-PCI controller by type, index and model, and the few devices libvirt
adds itself (a balloon, a video) by their tag.
"""

from __future__ import annotations

import difflib
from collections import Counter

from lxml import etree

from topo_solve.domain.predict import HostFacts, Prediction, prediction
from topo_solve.domain.read import read_domain

__all__ = ["address_map", "predicted_map", "with_aliases", "diff", "predict_text", "host_facts_here", "dump_golden",
           "load_golden"]


def _num(raw: str | None) -> int:
    raw = (raw or "0").strip()
    return int(raw, 16) if raw.lower().startswith("0x") else int(raw)


def _pci(el: etree._Element) -> str | None:
    a = el.find("address")
    if a is None or a.get("type") != "pci":
        return None
    return (f"{_num(a.get('domain')):04x}:{_num(a.get('bus')):02x}:{_num(a.get('slot')):02x}."
            f"{_num(a.get('function'))}")


def _key(el: etree._Element, counts: Counter) -> tuple:
    alias = el.find("alias")
    name = alias.get("name", "") if alias is not None else ""
    if name.startswith("ua-"):
        return ("alias", name)
    if el.tag == "controller":
        return ("controller", el.get("type"), _num(el.get("index")), el.get("model") or "")
    counts[el.tag] += 1
    return (el.tag, counts[el.tag])


def address_map(xml: str | bytes) -> dict:
    """The PCI address map of a domain XML as libvirt wrote it (``virsh dumpxml --inactive``)."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    out: dict = {}
    counts: Counter = Counter()
    for el in root.find("devices"):
        if not isinstance(el.tag, str):
            continue
        if el.tag == "controller" and el.get("type") == "pci":
            tgt = el.find("target")
            target = {}
            if tgt is not None:
                target = {k: _num(v) for k, v in tgt.attrib.items() if k in ("chassisNr", "chassis", "port", "busNr",
                                                                            "index")}
                node = tgt.find("node")
                if node is not None:
                    target["node"] = _num(node.text)
            out[("pci", _num(el.get("index")))] = (el.get("model"), _pci(el), tuple(sorted(target.items())))
            continue
        address = _pci(el)
        if address is not None:
            out[_key(el, counts)] = address
    return out


def predicted_map(p: Prediction) -> dict:
    """The same map, from a prediction."""
    out: dict = {}
    for c in p.controllers:
        out[("pci", c.index)] = (c.model, str(c.address) if c.address else None, tuple(sorted(c.target)))
    counts: Counter = Counter()
    for d in p.devices:
        if d.element is not None and d.ctype is None:
            key = _key(d.element, counts)
        elif d.ctype is not None:
            key = ("controller", d.ctype, d.index, _model(d))
        else:
            counts[d.tag] += 1
            key = (d.tag, counts[d.tag])
        out[key] = str(d.address)
    return out


def _model(d) -> str:
    """The model attribute libvirt writes on a controller it added (or whose model it filled in)."""
    from topo_solve.rules.devices import KINDS

    if d.element is not None and d.element.get("model"):
        return d.element.get("model")
    return KINDS[d.kind].xml_model if d.ctype in ("usb", "scsi") else ""


def with_aliases(xml: str) -> str:
    """The XML with a user alias on every element that may take a PCI address (not the PCI controllers,
    which their index identifies), so the stored document's devices can be matched one to one."""
    domain = read_domain(xml, "alias.xml")
    root = etree.fromstring(xml.encode())
    elements = list(domain.document.root.find("devices"))
    mine = list(root.find("devices"))
    positions = {id(el): i for i, el in enumerate(elements)}
    n = 0
    for d in domain.devices:
        for el, _ in d.members:
            target = mine[positions[id(el)]]
            if target.tag == "controller" or target.find("alias") is not None:
                continue
            n += 1
            alias = etree.SubElement(target, "alias")
            alias.set("name", f"ua-p{n}")
    return etree.tostring(root, encoding="unicode")


def diff(predicted: dict, stored: dict) -> str:
    """A readable difference of two maps: one line per key, the prediction's and libvirt's values."""
    def show(m: dict) -> list[str]:
        return [f"{k!r}: {m[k]!r}" for k in sorted(m, key=repr)]

    return "\n".join(difflib.unified_diff(show(predicted), show(stored), "predicted", "libvirt 9.0 stored",
                                          lineterm="", n=0))


def host_facts_here(xml: str) -> HostFacts:
    from topo_solve.domain.host import host_facts

    return host_facts(read_domain(xml, "host.xml"))


def predict_text(xml: str, host: HostFacts | None = None) -> Prediction:
    return prediction(read_domain(xml, "guest.xml"), host)


def dump_golden(stored: dict, host: HostFacts) -> str:
    """A stored map and the host facts of its run as JSON (tests/golden/predict/CASE.json)."""
    import json

    entries = [json.dumps([k, v]) for k, v in sorted(stored.items(), key=repr)]
    host_json = json.dumps({"express": dict(sorted(host.express.items())),
                            "iommu_group": dict(sorted(host.iommu_group.items()))})
    return '{"host": ' + host_json + ',\n "stored": [\n  ' + ",\n  ".join(entries) + "\n ]}\n"


def load_golden(text: str) -> tuple[dict, HostFacts]:
    import json

    data = json.loads(text)

    def tup(x):
        return tuple(tup(y) for y in x) if isinstance(x, list) else x

    stored = {tup(k): tup(v) for k, v in data["stored"]}
    return stored, HostFacts(express=data["host"]["express"], iommu_group=data["host"]["iommu_group"])
