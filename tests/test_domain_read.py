"""Reading a domain XML: hostile files cost nothing, inconsistent ones get one finding per problem.

Three tables:

* ``HOSTILE``: files that must never be parsed into anything (XXE, billion laughs, an external
  DTD, size and depth bombs) or are not a libvirt domain at all.  Each gives exactly one
  finding, fast, and nothing of what an entity points to shows up anywhere.
* ``INCONSISTENT``: domains libvirt would refuse (two things at one address, a bus no
  controller provides, a controller index used twice or not larger than its bus) or whose
  numbers are malformed.  Each row lists every finding expected, as (line, field path, words);
  nothing else may be reported.
* ``CONSISTENT``: the look-alikes that are fine (multifunction slots, the implicit root bus,
  numbers written the ways libvirt reads them).

Every row of the first two tables is also run through ``topo-solve audit FILE``: exit code 2,
one ``error:`` line per finding on stderr, nothing on stdout, no traceback.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lxml import etree

from topo_solve.domain import parse as domain_parse
from topo_solve.cli import main
from topo_solve.domain.parse import MAX_BYTES, MAX_DEPTH
from topo_solve.domain.read import read_layout
from topo_solve.errors import SpecError
from topo_solve.model import Address

GOLDEN = Path(__file__).resolve().parent / "golden"
# seconds: not a performance target but a guard against blow-ups (billion laughs expands to
# gigabytes and minutes when entities are resolved); generous, so a busy CI machine never trips it
FAST = 5.0


# -- building domains with known line numbers --------------------------------------

def dom(*devices: str, machine: str = "pc-q35-7.2", arch: str = "x86_64") -> str:
    """A domain whose <devices> children start on line 6, one element per line."""
    return (f"<domain type='kvm'>\n  <name>t</name>\n"
            f"  <os><type arch='{arch}' machine='{machine}'>hvm</type></os>\n"
            "  <features><acpi/></features>\n  <devices>\n"
            + "".join(f"    {d}\n" for d in devices)
            + "  </devices>\n</domain>\n")


def A(bus=0, slot=0, function=0, /, **raw: str) -> str:  # noqa: N802 - reads like the XML element
    """<address type='pci'>; ``raw`` overrides an attribute with the exact text given."""
    parts = {"domain": "0x0000", "bus": f"0x{bus:02x}", "slot": f"0x{slot:02x}", "function": f"0x{function:x}"}
    parts.update(raw)
    return "<address type='pci' " + " ".join(f"{k}='{v}'" for k, v in parts.items()) + "/>"


def ctrl(index, model: str, address: str = "", target: str = "") -> str:
    return f"<controller type='pci' index='{index}' model='{model}'>{target}{address}</controller>"


def port(index, slot=1, function=0) -> str:
    return ctrl(index, "pcie-root-port", A(0, slot, function), f"<target chassis='{index}' port='0x{index:x}'/>")


def nic(alias: str, address: str) -> str:
    return f"<interface type='user'><model type='virtio'/><alias name='ua-{alias}'/>{address}</interface>"


ROOT = "<controller type='pci' index='0' model='pcie-root'/>"
L = 6  # line of the first device


def findings(text: str | bytes, file: str = "d.xml") -> list:
    with pytest.raises(SpecError) as info:
        read_layout(text, file)
    assert info.value.exit_code == 2
    return info.value.problems


def audit(path: Path, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["audit", str(path)])
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def assert_cli_reports(path: Path, count: int, words: list[str], capsys) -> None:
    code, out, err = audit(path, capsys)
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == count == len(lines), err
    for w in words:
        assert w in err, f"{w!r} not in:\n{err}"


# -- hostile files and files that are not a domain -----------------------------------

def _laughs(levels: int = 10) -> str:
    ents = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)]
    return ('<?xml version="1.0"?>\n<!DOCTYPE domain [\n' + "\n".join(ents)
            + f"\n]>\n<domain type='kvm'><name>&lol{levels - 1};</name></domain>\n")


_QUAD = "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>"

# (id, file content, line of the one finding or None, words of its message)
HOSTILE = [
    ("xxe-etc-passwd",
     '<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
     f"<domain type='kvm'><name>&x;</name><os><type arch='x86_64' machine='&x;'>hvm</type></os></domain>\n",
     2, "document type declaration"),
    ("xxe-parameter-entity-over-http",
     '<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n'
     f"<domain type='kvm'><name>x</name>{_QUAD}</domain>\n",
     2, "document type declaration"),
    ("billion-laughs", _laughs(), 2, "document type declaration"),
    ("external-dtd",
     '<?xml version="1.0"?>\n<!-- dumped -->\n<!DOCTYPE domain SYSTEM "http://127.0.0.1:9/domain.dtd">\n'
     f"<domain type='kvm'><name>x</name>{_QUAD}</domain>\n",
     3, "delete the declaration"),
    ("too-big", "<domain>" + " " * MAX_BYTES + "</domain>", None, f"larger than {MAX_BYTES // 2**20} MiB"),
    ("too-deep", "<domain>\n" + "<a>" * MAX_DEPTH + "<b/>" + "</a>" * MAX_DEPTH + "\n</domain>",
     2, f"nest deeper than {MAX_DEPTH} levels"),
    ("deeper-than-libxml-allows", "<domain>" + "<a>" * 300 + "</a>" * 300 + "</domain>",
     1, f"nest deeper than {MAX_DEPTH} levels"),
    ("not-xml", "name: web-01\nmachine: q35\n", 1, "not well-formed XML"),
    ("empty", "", 1, "not well-formed XML"),
    ("unclosed", "<domain type='kvm'>\n  <name>x</name>\n", 3, "not well-formed XML"),
    ("root-not-domain", "<?xml version='1.0'?>\n<network>\n  <name>default</name>\n</network>\n",
     2, "the root element is <network>, not <domain>"),
    ("unknown-machine", dom(ROOT, machine="pc-q36-7.2"), 3, "did you mean 'pc-q35-7.2'"),
    ("no-machine", dom(ROOT).replace(" machine='pc-q35-7.2'", ""), 3, "no machine type"),
]


@pytest.mark.parametrize(("text", "line", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_file_gives_one_finding_fast(text, line, words):
    start = time.perf_counter()
    problems = findings(text)
    took = time.perf_counter() - start
    assert len(problems) == 1, "\n".join(map(str, problems))
    assert problems[0].line == line and words in problems[0].message, str(problems[0])
    assert "root:" not in str(problems[0])  # nothing of /etc/passwd
    assert took < FAST, f"took {took:.2f} s"


@pytest.mark.parametrize(("text", "words"), [(h[1], h[3]) for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_cli_refuses_hostile_file(text, words, tmp_path, capsys):
    path = tmp_path / "hostile.xml"
    path.write_text(text)
    assert_cli_reports(path, 1, [words], capsys)
    assert "root:" not in capsys.readouterr().err


def test_external_file_entity_never_leaks(tmp_path, capsys):
    """An entity naming a local file: its content appears in no message, in any encoding."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-4711\n")
    text = ('<?xml version="1.0"?>\n'
            f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>\n'
            "<domain type='kvm'><name>&x;</name>"
            "<os><type arch='x86_64' machine='&x;'>hvm</type></os><devices>&x;</devices></domain>\n")
    for data in (text, text.encode("utf-16")):  # UTF-16 passes the prolog check; the parser holds
        problems = findings(data)
        assert len(problems) == 1 and "document type declaration" in problems[0].message
        assert "TOPSECRET" not in str(problems[0])
    path = tmp_path / "xxe.xml"
    path.write_text(text)
    code, out, err = audit(path, capsys)
    assert code == 2 and "TOPSECRET" not in out + err and "Traceback" not in err


def test_the_parser_alone_expands_no_entity(tmp_path):
    """Defence in depth: even past the prolog check, lxml is told to resolve nothing."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-4711\n")
    data = (f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>\n'
            "<domain><name>&x;</name></domain>").encode()
    root = etree.fromstring(data, domain_parse._parser())
    assert "TOPSECRET" not in etree.tostring(root, encoding="unicode") + "".join(root.itertext())


@pytest.fixture
def listener():
    """A TCP socket on localhost that records whether anyone connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.3)
    yield sock
    sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize("doctype", ['<!DOCTYPE domain SYSTEM "http://127.0.0.1:{port}/domain.dtd">',
                                     '<!DOCTYPE domain [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;]>'])
def test_an_external_dtd_is_never_fetched(doctype, listener):
    port = listener.getsockname()[1]
    text = doctype.format(port=port) + f"\n<domain type='kvm'><name>x</name>{_QUAD}</domain>\n"
    problems = findings(text)
    assert len(problems) == 1 and "document type declaration" in problems[0].message
    assert not _connected(listener), "the reader opened a connection to the DTD's address"
    root = etree.fromstring(text.encode(), domain_parse._parser())  # past the prolog check: ignored
    assert root.tag == "domain"
    assert not _connected(listener), "the bare parser opened a connection to the DTD's address"


def test_a_huge_file_is_not_read_whole(tmp_path, capsys):
    """The CLI reads at most MAX_BYTES + 1 of a file before refusing it (a sparse 1 GiB file)."""
    path = tmp_path / "huge.xml"
    with open(path, "wb") as f:
        f.write(b"<domain>")
        f.truncate(2**30)
    start = time.perf_counter()
    assert_cli_reports(path, 1, ["larger than"], capsys)
    assert time.perf_counter() - start < 5


# -- inconsistent domains: every problem, each once, with its line ------------------

BRIDGE_5_ON_BUS_2 = ctrl(5, "pci-bridge", A(2, 1), "<target chassisNr='5'/>")

# (id, devices, [(line, path, words)]) -- the devices start on line L (6), one per line
INCONSISTENT = [
    ("two-devices-one-address", [ROOT, port(1), nic("a", A(1, 0)), nic("b", A(1, 0))],
     [(L + 3, "interface/address", "<interface> 'b' and <interface> 'a' at line 8 both use PCI address "
       "0000:01:00.0; move one of them")]),
    ("device-and-controller-one-address", [ROOT, port(1, slot=2), nic("a", A(0, 2))],
     [(L + 2, "interface/address", "and controller 1 (pcie-root-port) at line 7 both use PCI address 0000:00:02.0")]),
    ("two-controllers-one-address", [ROOT, port(1, slot=2), port(2, slot=2)],
     [(L + 2, "controller/address", "controller 2 (pcie-root-port) and controller 1 (pcie-root-port)")]),
    ("device-on-a-missing-bus", [ROOT, port(1), nic("a", A(3, 0))],
     [(L + 2, "interface/address@bus", "<interface> 'a' sits on bus 3, but no PCI controller has index 3")]),
    # indexes 1-4 are unused: libvirt fills them with controllers at define, so bus 2 will exist
    ("controller-on-a-missing-bus", [ROOT, BRIDGE_5_ON_BUS_2],
     [(None, "", "4 PCI controller index(es) below the highest are unused")]),
    ("index-used-twice", [ROOT, port(1, slot=1), port(1, slot=2)],
     [(L + 2, "controller@index", "controller index 1 is used twice (also at line 7)")]),
    ("root-index-used-twice", [ROOT, ROOT],
     [(L + 1, "controller@index", "controller index 0 is used twice")]),
    ("index-not-larger-than-its-bus",
     [ROOT, port(3), ctrl(2, "pcie-to-pci-bridge", A(3, 0))],
     [(L + 2, "controller/address@bus", "controller 2 (pcie-to-pci-bridge) sits on bus 3; libvirt requires a "
       "controller's index to be larger than the bus it plugs into: renumber it above 3")]),
    ("controller-on-its-own-bus", [ROOT, port(1), ctrl(2, "pcie-to-pci-bridge", A(2, 0))],
     [(L + 2, "controller/address@bus", "renumber it above 2")]),
    ("slot-out-of-range", [ROOT, nic("a", A(0, 0x20))],
     [(L + 1, "interface/address@slot", "slot='0x20' is out of range: a PCI slot is 0x00-0x1f")]),
    ("function-out-of-range", [ROOT, port(1), nic("a", A(1, 0, 8))],
     [(L + 2, "interface/address@function", "function='0x8' is out of range: a PCI function is 0-7")]),
    ("bus-out-of-range", [ROOT, nic("a", A(0, 1, bus="0x100"))],
     [(L + 1, "interface/address@bus", "bus='0x100' is out of range")]),
    ("domain-out-of-range", [ROOT, nic("a", A(0, 1, domain="0x10000"))],
     [(L + 1, "interface/address@domain", "domain='0x10000' is out of range")]),
    ("slot-not-a-number", [ROOT, nic("a", A(0, 1, slot="0xzz"))],
     [(L + 1, "interface/address@slot", "slot='0xzz' is not a number")]),
    ("function-negative", [ROOT, nic("a", A(0, 1, function="-1"))],
     [(L + 1, "interface/address@function", "function='-1' is not a number")]),
    ("leading-zero-is-octal-so-08-is-no-number", [ROOT, nic("a", A(0, 1, slot="08"))],
     [(L + 1, "interface/address@slot", "slot='08' is not a number")]),
    ("several-bad-parts-of-one-address", [ROOT, nic("a", A(0, 1, slot="0x40", function="x"))],
     [(L + 1, "interface/address@slot", "out of range"), (L + 1, "interface/address@function", "not a number")]),
    ("controller-address-out-of-range", [ROOT, ctrl(1, "pcie-root-port", A(0, 0x21))],
     [(L + 1, "controller/address@slot", "slot='0x21' is out of range")]),
    ("index-not-a-number", [ROOT, ctrl("one", "pcie-root-port", A(0, 1))],
     [(L + 1, "controller@index", "index='one' is not a number")]),
    # a controller without index and address is what libvirt would number and place: `plan` places it;
    # reading the guest as defined is one finding for the whole file
    ("index-missing", [ROOT, "<controller type='pci' model='pcie-root-port'/>"],
     [(None, "", "the guest was never defined: 0 device(s) and 1 PCI controller(s) have no PCI address")]),
    ("target-not-a-number", [ROOT, ctrl(1, "pcie-root-port", A(0, 1), "<target chassis='1' port='ten'/>")],
     [(L + 1, "controller/target@port", "port='ten' is not a number")]),
    ("hostdev-source-not-a-number",
     [ROOT, port(1), "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
      f"{A(0, 0, bus='0xgg')}</source>{A(1, 0)}</hostdev>"],
     [(L + 2, "hostdev/source/address@bus", "bus='0xgg' is not a number")]),
    ("alias-used-twice", [ROOT, port(1), port(2, function=1), nic("a", A(1, 0)), nic("a", A(2, 0))],
     [(L + 4, "interface/alias", "alias 'a' is used twice (also at line 9)")]),
    ("every-problem-at-once-in-file-order",
     [ROOT, port(1), port(1, function=1), nic("a", A(1, 0)), nic("b", A(1, 0)), nic("c", A(7, 0)),
      nic("d", A(0, 0x20))],
     [(L + 2, "controller@index", "used twice"), (L + 4, "interface/address", "both use"),
      (L + 5, "interface/address@bus", "no PCI controller has index 7"),
      (L + 6, "interface/address@slot", "out of range")]),
]


def _text_of(devices: list[str], machine: str = "pc-q35-7.2") -> str:
    return dom(*devices, machine=machine)


@pytest.mark.parametrize(("devices", "expected"), [r[1:] for r in INCONSISTENT], ids=[r[0] for r in INCONSISTENT])
def test_inconsistent_domain_reports_every_problem(devices, expected):
    problems = findings(_text_of(devices))
    got = [(p.line, p.path, p.message) for p in problems]
    assert len(got) == len(expected), "\n".join(map(str, problems))
    for (line, path, words), (gline, gpath, gmsg) in zip(expected, got):
        assert (gline, gpath) == (line, path) and words in gmsg, f"expected {line} {path} {words!r}, got {got}"
    assert all(p.file == "d.xml" for p in problems)


# read_layout refuses a guest that was never defined; audit predicts what libvirt will store instead
NEVER_DEFINED = [r for r in INCONSISTENT if "never defined" in r[2][0][2]]


@pytest.mark.parametrize(("devices", "expected"), [r[1:] for r in INCONSISTENT if r not in NEVER_DEFINED],
                         ids=[r[0] for r in INCONSISTENT if r not in NEVER_DEFINED])
def test_cli_reports_each_problem_once(devices, expected, tmp_path, capsys):
    path = tmp_path / "guest.xml"
    path.write_text(_text_of(devices))
    assert_cli_reports(path, len(expected), [f"{path}:{line}: {p}: " if line else f"{path}: "
                                             for line, p, _ in expected], capsys)


@pytest.mark.parametrize("devices", [r[1] for r in NEVER_DEFINED], ids=[r[0] for r in NEVER_DEFINED])
def test_cli_audits_a_guest_never_defined_as_predicted(devices, tmp_path, capsys):
    path = tmp_path / "guest.xml"
    path.write_text(_text_of(devices))
    code, out, err = audit(path, capsys)
    assert code == 0 and err == "", err
    assert out.startswith(f"{path} (q35): predicted after virsh define: hotplug capacity ")


def test_machine_and_device_problems_come_together():
    problems = findings(_text_of([ROOT, nic("a", A(0, 0x20))], machine="pc-q36-7.2"))
    assert [(p.line, p.path) for p in problems] == [(3, "os/type@machine"), (L + 1, "interface/address@slot")]


# -- look-alikes that are fine ----------------------------------------------------

# (id, machine, devices, {alias or controller index: address})
CONSISTENT = [
    ("multifunction-slot", "pc-i440fx-7.2",
     ["<controller type='pci' index='0' model='pci-root'/>",
      nic("f0", A(0, 5, 0, multifunction="on")), nic("f1", A(0, 5, 1)), nic("f7", A(0, 5, 7))],
     {"f0": Address(0, 5, 0), "f1": Address(0, 5, 1), "f7": Address(0, 5, 7)}),
    ("root-ports-share-a-slot", "pc-q35-7.2", [ROOT] + [port(i, 1, i - 1) for i in range(1, 9)],
     {8: Address(0, 1, 7)}),
    ("implicit-root-bus", "pc-q35-7.2", [port(1, slot=2), nic("a", A(1, 0)), nic("b", A(0, 3))],
     {"a": Address(1, 0), "b": Address(0, 3), 1: Address(0, 2)}),
    ("numbers-as-libvirt-reads-them", "pc-q35-7.2",
     [ROOT, nic("dec", A(0, 1, slot="10")), nic("hex", A(0, 1, slot="0x0B")), nic("oct", A(0, 1, slot="014")),
      nic("none", "<address type='pci' slot='0x0d'/>")],
     {"dec": Address(0, 10), "hex": Address(0, 11), "oct": Address(0, 12), "none": Address(0, 13)}),
    ("rhel-machine", "pc-q35-rhel8.6.0", [ROOT, port(1), nic("a", A(1, 0))], {"a": Address(1, 0)}),
]


@pytest.mark.parametrize(("machine", "devices", "where"), [c[1:] for c in CONSISTENT], ids=[c[0] for c in CONSISTENT])
def test_consistent_domain_reads(machine, devices, where):
    layout, _ = read_layout(_text_of(devices, machine=machine), "ok.xml")
    at = {p.endpoint.name: p.address for p in layout.placed} | {c.index: c.address for c in layout.controllers}
    assert at[0] is None and layout.controllers[0].index == 0
    for key, address in where.items():
        assert at[key] == address, f"{key}: {at[key]}"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.xml")), ids=lambda p: p.name)
def test_every_golden_domain_reads_cleanly(path):
    """What topo-solve writes, it reads back without a finding (no false positives)."""
    layout, rules = read_layout(path.read_text(), path.name)
    assert layout.controllers and rules.family
