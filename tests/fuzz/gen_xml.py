"""Hostile domain XML: valid guests, mutated in their elements, their XML and their bytes.

Seeds are real documents: ``specs/domains/*.xml`` (laid out by libvirt itself),
``tests/golden/*.xml`` and XML the planner emits for the seed specs of
:mod:`tests.fuzz.gen_spec` (NUMA expanders, switches, PHBs, bridges), planned in this
process the first time they are needed.  Three layers of mutation:

1. **elements** (lxml): PCI addresses with odd numbers (octal, hex, out of range, empty,
   huge, Unicode digits), controllers with other or unknown models, indexes, targets
   (chassis, port, busNr, NUMA node), ``hotplug='off'``; elements deleted, duplicated,
   moved under another parent (``<devices>`` itself, ``<os>``, ``<name>``); machine
   and arch changed to another family or to garbage; NUMA cells; many devices; unknown
   elements and attributes;
2. **XML**: internal DTDs with entities (billion laughs, external ``file:///etc/passwd``,
   parameter entities), external DTDs, XInclude, namespaces (default and prefixed),
   CDATA, comments, processing instructions, XML declarations (other encodings,
   standalone, 1.1), character references, huge attributes, deep nesting, 10^5 - 10^6
   elements, U+2028 and NEL in text;
3. **bytes**: byte order marks, UTF-16, CR LF, CR, invalid UTF-8, NUL, truncation,
   flips, a size past the 8 MiB limit.

:func:`xml_case` returns an :class:`XmlCase` with the bytes and the command lines to
run on them (``audit``, ``plan`` and ``extend`` with a random request, ``extend --in-place``
on a copy, a spec with ``domain:``, a batch of it as a template).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lxml import etree

from .choose import Chooser

REPO = Path(__file__).resolve().parents[2]

__all__ = ["XmlCase", "xml_case", "seed_domains", "request_options"]


@lru_cache(maxsize=1)
def seed_domains() -> tuple[tuple[str, bytes], ...]:
    """(label, bytes): the repository's domains and golden files, then planner output for the spec seeds."""
    out = []
    for folder in (REPO / "specs" / "domains", REPO / "tests" / "golden"):
        for path in sorted(folder.glob("*.xml")):
            out.append((str(path.relative_to(REPO)), path.read_bytes()))
    from topo_solve.domain.write import render_domain
    from topo_solve.errors import ProgrammingError, TopoSolveError
    from topo_solve.solve import solve
    from topo_solve.spec import DomainRequest, parse_spec, to_problem

    import yaml

    from .gen_spec import seed_specs

    for label, data in seed_specs():
        if not isinstance(data, dict) or data.get("domain"):
            continue
        try:
            spec, lines = parse_spec(yaml.safe_dump(data), label)
            problem = to_problem(spec, lines, label)
            if isinstance(problem, DomainRequest):
                continue
            out.append((f"plan:{label}", render_domain(solve(problem)).encode()))
        except (TopoSolveError, ProgrammingError):  # a seed the planner cannot plan is the spec fuzzer's finding
            continue
    return tuple(out)


# -- element mutations ------------------------------------------------------------------------

NUMBERS = ["0", "0x0", "00", "0x00", "1", "0x1", "01", "0x1f", "0x1F", "31", "037", "0x20", "32", "0x7", "7", "8",
           "0x8", "0xff", "255", "0377", "0x100", "256", "0xffff", "0x10000", "-1", "", " ", "0x", "x", " 0x1",
           "0x1 ", "1.0", "1e1", "٣", "0x" + "f" * 200, "9" * 400, "0b1", "+1", "0X1A", "08", "09"]
CONTROLLER_MODELS = ["pci-root", "pcie-root", "pcie-root-port", "pcie-switch-upstream-port",
                     "pcie-switch-downstream-port", "pci-bridge", "dmi-to-pci-bridge", "pcie-to-pci-bridge",
                     "pci-expander-bus", "pcie-expander-bus", "ioh3420", "x3130-upstream", "pcie-frobnicator", ""]
MACHINES = ["pc-q35-7.2", "q35", "pc-i440fx-7.2", "pc", "pseries-7.2", "pseries", "virt-7.2", "virt",
            "pc-q35-rhel8.6.0", "microvm", "isapc", "", "q35 ", "virt-9.9"]
ARCHES = ["x86_64", "i686", "ppc64le", "ppc64", "aarch64", "riscv64", "armv7l", "s390x", ""]
HOTPLUG = ["pcie", "pci", "hostdev", "virtio-net", "e1000", "e1000e", "virtio-blk-transitional", "igb", "virtio-input",
           "rtl8139", "virtio-scsi"]


def _elements(root: etree._Element, tag: str | None = None) -> list[etree._Element]:
    return [e for e in root.iter(tag) if isinstance(e.tag, str)]


def x_address(root: etree._Element, c: Chooser) -> None:
    addrs = [a for a in _elements(root, "address") if a.get("type") == "pci"]
    if addrs:
        a = c.choice(addrs)
        attr = c.choice(["domain", "bus", "slot", "function", "multifunction", "type"])
        value = c.choice(NUMBERS) if attr not in ("multifunction", "type") else c.choice(
            ["on", "off", "yes", "", "pci", "drive", "ccw"])
        a.set(attr, value)


def x_controller(root: etree._Element, c: Chooser) -> None:
    ctrls = [e for e in _elements(root, "controller") if e.get("type") == "pci"]
    if not ctrls:
        return
    e = c.choice(ctrls)
    kind = c.integer(0, 6)
    if kind == 0:
        e.set("model", c.choice(CONTROLLER_MODELS))
    elif kind == 1:
        e.set("index", c.choice(NUMBERS + [c.choice(ctrls).get("index", "0")]))
    elif kind == 2:
        for a in e.findall("address"):
            e.remove(a)
    elif kind == 3:
        target = e.find("target")
        if target is None:
            target = etree.SubElement(e, "target")
        attr = c.choice(["chassis", "port", "busNr", "index"])
        target.set(attr, c.choice(NUMBERS))
        if c.boolean(0.4):
            node = target.find("node")
            if node is None:
                node = etree.SubElement(target, "node")
            node.text = c.choice(["0", "1", "3", "127", "128", "-1", "x", ""])
    elif kind == 4:
        e.set("hotplug", c.choice(["off", "on", "no", ""]))
    elif kind == 5:
        model = e.find("model")
        if model is not None:
            model.set("name", c.choice(["pcie-root-port", "ioh3420", "spapr-pci-host-bridge", "x", ""]))
    else:
        e.set("type", c.choice(["usb", "scsi", "virtio-serial", "sata", "ide", "pci"]))


def x_delete(root: etree._Element, c: Chooser) -> None:
    els = [e for e in _elements(root) if e is not root]
    if els:
        e = c.choice(els)
        e.getparent().remove(e)


def x_delete_named(root: etree._Element, c: Chooser) -> None:
    tag = c.choice(["devices", "os", "name", "memory", "vcpu", "features", "cpu", "controller", "interface"])
    for e in _elements(root, tag)[: c.integer(1, 3)]:
        e.getparent().remove(e)


def x_duplicate(root: etree._Element, c: Chooser) -> None:
    devices = root.find("devices")
    if devices is not None and len(devices):
        e = c.choice([d for d in devices if isinstance(d.tag, str)] or [devices[0]])
        for _ in range(c.choice([1, 1, 2, 10, 300])):
            devices.append(copy.deepcopy(e))


def x_move(root: etree._Element, c: Chooser) -> None:
    els = [e for e in _elements(root) if e is not root]
    parents = _elements(root)
    if len(els) >= 2:
        e, p = c.choice(els), c.choice(parents)
        if e is not p and p not in e.iter():
            e.getparent().remove(e)
            p.insert(c.integer(0, len(p)), e)


def x_machine(root: etree._Element, c: Chooser) -> None:
    t = root.find("os/type")
    if t is not None:
        if c.boolean(0.7):
            t.set("machine", c.choice(MACHINES))
        else:
            t.set("arch", c.choice(ARCHES))
    if c.boolean(0.2):
        root.set("type", c.choice(["kvm", "qemu", "xen", "", "lxc"]))


def x_numa(root: etree._Element, c: Chooser) -> None:
    cpu = root.find("cpu")
    if cpu is None:
        cpu = etree.SubElement(root, "cpu")
    numa = cpu.find("numa")
    if numa is None:
        numa = etree.SubElement(cpu, "numa")
    for i in range(c.integer(0, 4)):
        etree.SubElement(numa, "cell", id=c.choice([str(i), str(i), "x", "99"]), cpus=c.choice([str(i), "0-1", ""]),
                         memory=c.choice(["512", "0", "x"]), unit="MiB")


def x_many(root: etree._Element, c: Chooser) -> None:
    devices = root.find("devices")
    if devices is None:
        return
    for i in range(c.choice([10, 100, 1000])):
        nic = etree.SubElement(devices, "interface", type="user")
        etree.SubElement(nic, "model", type=c.choice(["virtio", "e1000", "e1000e", "rtl8139"]))
        if c.boolean(0.3):
            etree.SubElement(nic, "address", type="pci", domain="0x0000", bus=f"0x{c.integer(0, 40):02x}",
                             slot=f"0x{c.integer(0, 31):02x}", function=f"0x{c.integer(0, 7)}")


def x_unknown(root: etree._Element, c: Chooser) -> None:
    parents = _elements(root)
    p = c.choice(parents)
    if c.boolean():
        etree.SubElement(p, c.choice(["frob", "controller", "address", "hostdev", "model", "target"]),
                         x=c.choice(NUMBERS))
    else:
        p.set(c.choice(["bogus", "index", "model", "slot"]), c.choice(NUMBERS))


def x_hostdev(root: etree._Element, c: Chooser) -> None:
    devices = root.find("devices")
    if devices is None:
        return
    h = etree.SubElement(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
    src = etree.SubElement(h, "source")
    etree.SubElement(src, "address", domain=c.choice(["0x0000", "0x1", "x"]), bus=c.choice(NUMBERS),
                     slot=c.choice(NUMBERS), function=c.choice(NUMBERS))
    if c.boolean():
        etree.SubElement(h, "address", type="pci", domain="0x0000", bus=c.choice(NUMBERS), slot=c.choice(NUMBERS),
                         function="0x0")


TREE_MUTATIONS = [x_address, x_controller, x_delete, x_delete_named, x_duplicate, x_move, x_machine, x_numa, x_many,
                  x_unknown, x_hostdev]
_TREE_WEIGHTS = [10, 10, 4, 2, 3, 2, 3, 2, 1, 3, 2]


# -- XML text ----------------------------------------------------------------------------------

def _split_root(text: str) -> tuple[str, str]:
    """(prolog, the rest from the root element's start tag)."""
    i = text.find("<domain")
    return (text[:i], text[i:]) if i >= 0 else ("", text)


def _text_mutation(text: str, c: Chooser) -> tuple[str, str]:
    prolog, body = _split_root(text)
    kind = c.integer(0, 15)
    if kind == 0:  # an internal DTD with an entity used in <name>
        dtd = c.choice([
            '<!DOCTYPE domain [<!ENTITY x "expanded">]>\n',
            '<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n',
            '<!DOCTYPE domain [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>\n',
            '<!DOCTYPE domain SYSTEM "http://127.0.0.1:9/x.dtd">\n',
            '<!DOCTYPE domain [' + "".join(f'<!ENTITY x{i} "{"&x%d;" % (i - 1) * 10 if i else "lol"}">'
                                           for i in range(10)).replace('"&x-1;', '"') + ']>\n',
        ])
        entity = "&x9;" if "x9" in dtd else "&x;"
        return prolog + dtd + body.replace("<name>", f"<name>{entity}", 1), "dtd-entity"
    if kind == 1:  # XInclude
        body = body.replace("<domain", '<domain xmlns:xi="http://www.w3.org/2001/XInclude"', 1)
        return prolog + body.replace("</name>", '<xi:include href="/etc/passwd" parse="text"/></name>', 1), "xinclude"
    if kind == 2:  # namespaces
        ns = c.choice(['<domain xmlns="http://example.com/x"', '<domain xmlns:q="http://libvirt.org/schemas/domain/qemu/1.0"',
                       '<domain xmlns:p="urn:x" p:attr="1"'])
        out = body.replace("<domain", ns, 1)
        if c.boolean(0.3):
            out = out.replace("<controller ", '<p:controller xmlns:p="urn:p" ', 1)
            out = out.replace("</controller>", "</p:controller>", 1) if "<p:controller" in out else out
        return prolog + out, "namespace"
    if kind == 3:  # CDATA
        return prolog + body.replace("<name>", "<name><![CDATA[", 1).replace("</name>", "]]></name>", 1), "cdata"
    if kind == 4:  # comments and processing instructions between elements
        return prolog + body.replace("><", c.choice(["><!-- c --><", "><?pi x?><", ">\n<!---->\n<"]),
                                     c.integer(1, 50)), "comments-pi"
    if kind == 5:  # XML declarations
        decl = c.choice(['<?xml version="1.0" encoding="ISO-8859-1"?>\n', '<?xml version="1.0" encoding="UTF-16"?>\n',
                         '<?xml version="1.1"?>\n', '<?xml version="1.0" standalone="yes"?>\n',
                         '<?xml version="1.0" encoding="EBCDIC"?>\n', '<?xml version="2.0"?>\n', ' <?xml version="1.0"?>\n'])
        return decl + body, "xml-declaration"
    if kind == 6:  # character references in addresses and names
        out = body.replace("slot='0x", "slot='&#x30;x", 1).replace('slot="0x', 'slot="&#x30;x', 1)
        return prolog + out.replace("<name>", c.choice(["<name>&#0;", "<name>&#xD800;", "<name>&#x41;", "<name>&amp;",
                                                        "<name>&lt;", "<name>&bogus;"]), 1), "char-refs"
    if kind == 7:  # a huge attribute
        return prolog + body.replace("<domain", f'<domain x="{"a" * c.choice([1000, 1_000_000, 9_000_000])}"', 1), \
            "huge-attribute"
    if kind == 8:  # deep nesting
        n = c.choice([30, 31, 32, 33, 100, 255, 256, 10_000])
        return prolog + body.replace("</devices>", "<metadata>" + "<a>" * n + "</a>" * n + "</metadata></devices>", 1) \
            if c.boolean() else prolog + body.replace("</name>", "</name><metadata>" + "<a>" * n + "</a>" * n
                                                      + "</metadata>", 1), "deep-nesting"
    if kind == 9:  # many elements
        n = c.choice([10_000, 100_000, 500_000, 1_000_000, 1_900_000])
        where = c.choice(["<metadata>" + "<a/>" * n + "</metadata>", "<x/>" * n])
        anchor = c.choice(["</devices>", "</name>"])
        return prolog + body.replace(anchor, anchor + where if anchor == "</name>" else where + anchor, 1), \
            "many-elements"
    if kind == 10:  # line separators inside text
        return prolog + body.replace("<name>", "<description>a\u2028b\x85c\u2029</description><name>", 1), \
            "unicode-line-separators"
    if kind == 11:  # text where elements are expected
        return prolog + body.replace("<devices>", "<devices>stray text", 1), "stray-text"
    if kind == 12:  # unbalanced or truncated markup
        return prolog + body.replace("</devices>", c.choice(["", "</device>", "</devices></devices>"]), 1), \
            "unbalanced"
    if kind == 13:  # attributes with odd quoting and whitespace
        return prolog + body.replace("='", "= '", c.integer(1, 20)).replace("'/>", "'   />", 3), "attr-whitespace"
    if kind == 14:  # everything on one line
        return prolog + body.replace("\n", ""), "one-line"
    return text + c.choice(["<!-- trailing -->", "<domain/>", "garbage", "\x00"]), "trailing"


def _byte_mutation(data: bytes, c: Chooser) -> tuple[bytes, str]:
    kind = c.integer(0, 9)
    pos = c.integer(0, max(0, len(data) - 1)) if data else 0
    if kind == 0:
        return b"\xef\xbb\xbf" + data, "utf8-bom"
    if kind == 1:
        text = data.decode("utf-8", "replace")
        return (text.encode("utf-16") if c.boolean() else text.encode("utf-16-le")), "utf-16"
    if kind == 2:
        return data.replace(b"\n", b"\r\n"), "crlf"
    if kind == 3:
        return data.replace(b"\n", b"\r"), "cr"
    if kind == 4:
        return data[:pos] + c.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + data[pos:], "invalid-utf8"
    if kind == 5:
        return data[:pos] + b"\x00" + data[pos:], "nul"
    if kind == 6:
        return data[:pos], "truncated"
    if kind == 7:
        out = bytearray(data)
        for _ in range(c.integer(1, 4)):
            if out:
                out[c.integer(0, len(out) - 1)] = c.integer(0, 255)
        return bytes(out), "byte-flips"
    if kind == 8:
        return data + b"<!--" + b"x" * (8 * 1024 * 1024) + b"-->", "over-8MiB"
    return data.replace(b"\n", b"\n\r\n", 3), "mixed-line-ends"


# -- a case -----------------------------------------------------------------------------------

@dataclass
class XmlCase:
    data: bytes
    seed: str
    mutations: list[str] = field(default_factory=list)
    hotplug: list[str] = field(default_factory=list)  # --hotplug MODEL=N options for extend
    allow_moves: bool = False
    in_place: bool = False
    as_spec: bool = False  # also run it as `domain:` of a spec
    right_size: bool = False  # `plan --right-size`
    as_batch: bool = False  # also run it as a batch template

    def describe(self) -> str:
        return f"seed {self.seed}; mutations: {', '.join(self.mutations) or 'none'}; hotplug {' '.join(self.hotplug)}"


def request_options(c: Chooser) -> list[str]:
    return [f"{c.choice(HOTPLUG)}={c.choice([0, 1, 2, 3, 5, 8, 16, 31, 32, 64, 250, 300])}"
            for _ in range(c.integer(1, 3))]


def xml_case(c: Chooser) -> XmlCase:
    label, seed = c.choice(seed_domains())
    case = XmlCase(seed, label)
    data = seed
    if c.boolean(0.6):  # element mutations (the tree is written again: lxml's quoting and layout)
        root = etree.fromstring(seed)
        for _ in range(c.weighted([(5, 1), (3, 2), (1, 4)])):
            mutation = c.weighted(list(zip(_TREE_WEIGHTS, TREE_MUTATIONS)))
            mutation(root, c)
            case.mutations.append(mutation.__name__[2:])
        data = etree.tostring(root, encoding="utf-8", xml_declaration=c.boolean(0.3))
        if c.boolean(0.5):
            data += b"\n"
    text = data.decode("utf-8")
    for _ in range(c.weighted([(5, 0), (4, 1), (1, 2)])):
        text, name = _text_mutation(text, c)
        case.mutations.append(name)
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(c.weighted([(7, 0), (3, 1)])):
        raw, name = _byte_mutation(raw, c)
        case.mutations.append(name)
    case.data = raw
    case.hotplug = request_options(c)
    case.allow_moves = c.boolean(0.2)
    case.in_place = c.boolean(0.3)
    case.as_spec = c.boolean(0.2)
    case.right_size = c.boolean(0.3)
    case.as_batch = c.boolean(0.15)
    return case
