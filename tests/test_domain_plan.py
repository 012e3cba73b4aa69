"""Domain XML in, the same document planned out (topo_solve.domain), without a hypervisor.

* every PCI device and controller of the document gets its address; what libvirt adds by itself at
  define is written out; the result reads back as a defined guest that meets the request;
* the document keeps every byte the plan does not need: compared as trees with the PCI controllers
  and addresses taken out, and as text (CRLF, another encoding, namespaces, comments, one line);
* --right-size keeps only the controllers the plan needs, as many as the same guest written as a
  spec gets;
* what cannot be planned says so once, with its line.

The real libvirt judges these plans in tests/test_libvirt_domain.py.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from topo_solve.domain.plan import plan_document
from topo_solve.domain.read import read_domain, read_layout
from topo_solve.errors import SpecError
from topo_solve.model import EndpointClass as K
from topo_solve.model import Headroom
from topo_solve.spec import parse_hotplug_option
from topo_solve.verify import verify

ROOT = Path(__file__).resolve().parent.parent

# The shape virt-install 4.1 prints for `--machine q35 --osinfo linux2022 --disk bus=virtio --network
# user,model=virtio --graphics none` (written here by hand: a metadata namespace, double quotes, 14
# root ports without index or address, a qemu-ga channel that makes libvirt add virtio-serial).
VIRT_INSTALL_Q35 = """<domain type="kvm">
  <name>vi-q35</name>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://libosinfo.org/linux/2022"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory>1048576</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"/>
      <source file="/var/lib/libvirt/images/vi-q35.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <controller type="usb" model="qemu-xhci" ports="15"/>
    <controller type="pci" model="pcie-root"/>
""" + '    <controller type="pci" model="pcie-root-port"/>\n' * 14 + """    <interface type="user">
      <mac address="52:54:00:db:45:64"/>
      <model type="virtio"/>
    </interface>
    <console type="pty"/>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="org.qemu.guest_agent.0"/>
    </channel>
    <memballoon model="virtio"/>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
  </devices>
</domain>
"""

PCIE4 = (Headroom(K.PCIE, 4, "virtio-net"),)


def _run(*args: str, stdin: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topo_solve", *args], capture_output=True, input=stdin, cwd=cwd)


def without_pci(data: bytes | str) -> bytes:
    """The document with every PCI controller, every PCI address and every index taken out, and what
    libvirt adds at define (elements without a counterpart cannot be told apart here: see the callers)."""
    root = etree.fromstring(data.encode() if isinstance(data, str) else data)
    devices = root.find("devices")
    for el in list(devices if devices is not None else []):
        if not isinstance(el.tag, str):
            continue
        if el.tag == "controller" and el.get("type") == "pci":
            devices.remove(el)
            continue
        for a in el.findall("address"):
            if a.get("type") == "pci":
                el.remove(a)
    for el in root.iter():
        if isinstance(el.tag, str):
            el.tail = None
            if el.text is not None and not el.text.strip():
                el.text = None
    return etree.tostring(root)


def _request(capacity: dict, headroom) -> None:
    for h in headroom:
        assert capacity[h.cls] >= h.count, (capacity, headroom)


def test_a_never_defined_guest_is_planned_and_reads_back_defined():
    planned = plan_document(VIRT_INSTALL_Q35, "vi.xml", PCIE4)
    assert not planned.domain.defined
    layout, rules = read_layout(planned.edit.data, "out.xml")  # raises if anything lacks an address
    report = verify(layout, rules, strict_auto=False)
    assert not report.errors, report.errors
    _request(report.capacity, PCIE4)
    # the kept 14 root ports: 3 hold devices (disk, nic, rng); usb, balloon and the virtio-serial libvirt
    # adds, which libvirt never unplugs, share a root slot as functions
    assert report.capacity[K.PCIE] == 14 - 3
    assert planned.edit.added_by_libvirt == ("virtio-serial",)
    on_root = {p.endpoint.kind: p.address for p in layout.placed if p.endpoint.kind in (
        "qemu-xhci", "virtio-balloon", "virtio-serial")}
    assert {a.bus for a in on_root.values()} == {0}
    assert [s.extra for s in planned.surplus] == [7]  # 7 root ports would do: 3 devices, 4 hotplugs


def test_nothing_but_pci_parts_changes():
    planned = plan_document(VIRT_INSTALL_Q35, "vi.xml", PCIE4)
    out = planned.edit.text
    # libvirt's own addition is the one element the document did not have: the virtio-serial controller
    inserted = [ln for ln in difflib.ndiff(VIRT_INSTALL_Q35.splitlines(), out.splitlines()) if ln.startswith("+ ")]
    assert any("virtio-serial" in ln for ln in inserted)
    tree = etree.fromstring(out.encode())
    serial = [el for el in tree.find("devices") if el.tag == "controller" and el.get("type") == "virtio-serial"]
    assert len(serial) == 1
    serial[0].getparent().remove(serial[0])
    assert without_pci(etree.tostring(tree)) == without_pci(VIRT_INSTALL_Q35)
    # no line of the input was removed or rewritten but the elements that got an address
    removed = [ln for ln in difflib.ndiff(VIRT_INSTALL_Q35.splitlines(), out.splitlines()) if ln.startswith("- ")]
    assert all("/>" in ln and any(t in ln for t in ("<controller", "<memballoon")) for ln in removed), removed


def test_right_size_keeps_what_the_spec_form_gets():
    """--right-size: as many controllers as the same guest written as a YAML spec plans."""
    from topo_solve.solve import solve
    from topo_solve.spec import parse_spec, to_problem

    planned = plan_document(VIRT_INSTALL_Q35, "vi.xml", PCIE4, right_size=True)
    layout, rules = read_layout(planned.edit.data, "out.xml")
    spec, lines = parse_spec("""
name: vi-q35
machine: q35
defaults: {usb: true, memballoon: true}
devices:
  - {model: virtio-blk}
  - {model: virtio-net}
  - {model: virtio-serial}
  - {model: virtio-rng}
hotplug:
  - {model: virtio-net, count: 4}
""")
    plan = solve(to_problem(spec, lines))
    assert len(layout.controllers) == len(plan.layout.controllers)
    assert planned.edit.removed_controllers == ("pcie-root-port",) * (14 - 7)
    assert verify(layout, rules, strict_auto=False).capacity[K.PCIE] == 4


def test_crlf_and_another_encoding_survive_byte_for_byte():
    text = VIRT_INSTALL_Q35.replace('<domain type="kvm">', '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
                                    '<domain type="kvm">\n  <description>caf\xe9 \xfc</description>', 1)
    data = text.replace("\n", "\r\n").encode("iso-8859-1")
    planned = plan_document(data, "crlf.xml", PCIE4)
    out = planned.edit.data
    assert out.decode("iso-8859-1").count("\r\n") == out.count(b"\n"), "a line ending lost its CR"
    assert "caf\xe9 \xfc".encode("iso-8859-1") in out
    # every input line is still there, in order
    a, b = data.split(b"\r\n"), out.split(b"\r\n")
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    for tag, i1, i2, _j1, _j2 in ops:
        if tag in ("delete", "replace"):
            assert all(b"/>" in ln for ln in a[i1:i2]), a[i1:i2]  # only self-closing elements that got a child


@pytest.mark.parametrize("codec, bom, declared", [
    ("utf-16-le", b"", "UTF-16"), ("utf-16-be", b"", "UTF-16"), ("utf-16-le", b"\xff\xfe", "UTF-16"),
    ("utf-16-be", b"\xfe\xff", "UTF-16"), ("utf-16-le", b"", None),  # told by its first bytes alone
    ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32"), ("utf-32-be", b"", "UTF-32"),
])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_utf16_and_utf32_keep_their_byte_order_and_mark(codec, bom, declared, newline):
    """The fuzzer's UTF-16 without a byte order mark was read as the wrong text (exit 3); every
    form XML tells by its first bytes comes back in its own byte order, mark and line endings."""
    decl = f'<?xml version="1.0" encoding="{declared}"?>' if declared else '<?xml version="1.0"?>'
    text = (decl + "\n" + VIRT_INSTALL_Q35).replace("\n", newline)
    data = bom + text.encode(codec)
    out = plan_document(data, "wide.xml", PCIE4).edit.data
    assert out.startswith(bom + (decl + newline + "<domain").encode(codec))
    decoded = out[len(bom):].decode(codec)
    plain = '<?xml version="1.0"?>'  # the same document in UTF-8 is planned to the same text
    same = plan_document(text.replace(decl, plain, 1).encode(), "plain.xml", PCIE4).edit.text
    assert decoded == same.replace(plain, decl, 1)
    assert newline == "\n" or decoded.count("\r\n") == decoded.count("\n")
    layout, rules = read_layout(out, "wide.xml")
    assert verify(layout, rules, strict_auto=False).capacity[K.PCIE] >= 4


def test_one_line_document_and_namespaces():
    text = ("<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>one</name>"
            "<memory>262144</memory><os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>"
            "<features><acpi/></features><devices><!-- keep me --><interface type='user'/>"
            "<controller type='usb' model='none'/><memballoon model='none'/></devices>"
            "<qemu:commandline><qemu:arg value='-no-reboot'/></qemu:commandline></domain>")
    planned = plan_document(text, "one.xml", (Headroom(K.PCI, 2, "e1000"),))
    out = planned.edit.text
    assert "<!-- keep me -->" in out and "<qemu:commandline><qemu:arg value='-no-reboot'/></qemu:commandline>" in out
    layout, rules = read_layout(out, "one.xml")
    assert verify(layout, rules, strict_auto=False).capacity[K.PCI] >= 2
    assert without_pci(out) == without_pci(text)


def test_an_already_met_defined_guest_is_unchanged():
    data = (ROOT / "specs/domains/web-02.xml").read_bytes()
    planned = plan_document(data, "web-02.xml", (Headroom(K.PCIE, 1, "virtio-net"),))
    assert planned.unchanged and planned.edit.data == data


LIVE = """<domain type='kvm' id='7'>
  <name>live</name>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <controller type='usb' index='0' model='ich9-ehci1'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1d' function='0x7'/>
    </controller>
    <controller type='usb' index='0' model='ich9-uhci1'>
      <alias name='usb'/>
      <master startport='0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1d' function='0x0' multifunction='on'/>
    </controller>
    <controller type='usb' index='0' model='ich9-uhci2'>
      <alias name='usb'/>
      <master startport='2'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1d' function='0x1'/>
    </controller>
    <controller type='sata' index='0'>
      <alias name='ide'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'>
      <alias name='pcie.0'/>
    </controller>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='1' port='0x10'/>
      <alias name='pci.1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </controller>
    <serial type='pty'>
      <target type='pci-serial' port='0'>
        <model name='pci-serial'/>
      </target>
      <alias name='serial0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def test_live_xml_reads_like_its_inactive_form():
    """A running guest's dump: the console mirrors serial 0 (same alias and address), the USB2
    companions share the alias 'usb', SATA is aliased 'ide'."""
    layout, rules = read_layout(LIVE, "live.xml")
    report = verify(layout, rules, strict_auto=False)
    assert not report.errors, report.errors
    assert report.capacity[K.PCIE] == 1
    planned = plan_document(LIVE, "live.xml", (Headroom(K.PCIE, 3, "virtio-net"),))
    assert len(planned.extension.added) == 2 and not planned.extension.moves


@pytest.mark.parametrize("text, where, message", [
    ("<domain><name>z</name><os><type arch='s390x' machine='s390-ccw-virtio'>hvm</type></os><devices/></domain>",
     "os/type@machine", "unsupported machine 's390-ccw-virtio'"),
    ("<domain><name>u</name><os><type machine='q35'>hvm</type></os><devices>"
     "<sound model='gus'/></devices></domain>", "sound", "<sound> model 'gus': topo-solve does not know"),
    ("<domain><name>r</name><os><type machine='q35'>hvm</type></os><devices>"
     "<controller type='pci' model='pcie-root-port'/><controller type='pci' model='pcie-root'/></devices></domain>",
     "controller@model", "which must be the root bus"),
    ("<domain><name>q</name><os><type machine='pseries'>hvm</type></os><devices>"
     "<video><model type='qxl'/></video></devices></domain>", "video", "qxl does not exist on pseries"),
    ("<domain><name>m</name><os><type machine='q35'>hvm</type></os><devices>"
     "<controller type='pci' index='1' model='pci-root'/></devices></domain>",
     "controller@model", "'pci-root' is not a PCI controller model of q35 guests"),
])
def test_what_cannot_be_planned_is_one_clear_finding(text, where, message):
    with pytest.raises(SpecError) as err:
        plan_document(text, "bad.xml", PCIE4)
    assert len(err.value.problems) == 1, err.value.problems
    p = err.value.problems[0]
    assert p.path == where and message in p.message and p.line == 1, p


def test_an_empty_pci_address_asks_for_one():
    text = VIRT_INSTALL_Q35.replace('<model type="virtio"/>\n    </interface>',
                                    '<model type="virtio"/>\n      <address type="pci"/>\n    </interface>')
    planned = plan_document(text, "x.xml", PCIE4)
    nic = [p for p in planned.extension.placed if p.endpoint.kind == "virtio-net"]
    assert nic and nic[0].address is not None and nic[0].address.bus != 0
    assert planned.edit.text.count("<address ") == text.count("<address ") - 1 + planned.edit.filled_devices \
        + planned.edit.filled_controllers + len(planned.edit.added_by_libvirt) + len(planned.edit.new_controllers)


def test_a_controller_with_devices_on_it_is_placed_first():
    text = ("<domain><name>p</name><memory>262144</memory><os><type machine='pc'>hvm</type></os>"
            "<features><acpi/></features><devices>"
            "<controller type='pci' index='1' model='pci-bridge'/>"
            "<interface type='user'><model type='e1000'/><address type='pci' bus='0x01' slot='0x03'/></interface>"
            "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>")
    planned = plan_document(text, "p.xml", (Headroom(K.PCI, 40, "e1000"),))
    layout, rules = read_layout(planned.edit.data, "p.xml")
    bridge = [c for c in layout.controllers if c.index == 1][0]
    assert bridge.address is not None and bridge.address.bus == 0
    assert verify(layout, rules, strict_auto=False).capacity[K.PCI] >= 40


def test_index_gaps_are_written_out():
    text = ("<domain><name>g</name><memory>262144</memory><os><type machine='q35'>hvm</type></os><devices>"
            "<controller type='pci' index='0' model='pcie-root'/><controller type='pci' index='3' "
            "model='pcie-root-port'/><controller type='usb' model='none'/><memballoon model='none'/>"
            "</devices></domain>")
    planned = plan_document(text, "g.xml", ())
    assert [c.index for c in planned.edit.gap_controllers] == [1, 2]
    layout, _ = read_layout(planned.edit.data, "g.xml")
    assert [c.index for c in layout.controllers] == [0, 1, 2, 3]


def test_usb2_set_shares_one_slot_on_q35():
    text = ("<domain><name>u</name><memory>262144</memory><os><type machine='q35'>hvm</type></os><devices>"
            + "".join(f"<controller type='usb' index='0' model='{m}'/>" for m in
                      ("ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3"))
            + "<memballoon model='none'/></devices></domain>")
    planned = plan_document(text, "u.xml", ())
    root = etree.fromstring(planned.edit.data)
    addrs = {el.get("model"): el.find("address") for el in root.iter("controller") if el.get("type") == "usb"}
    assert {a.get("slot") for a in addrs.values()} == {"0x1d"}
    assert {m: a.get("function") for m, a in addrs.items()} == {"ich9-ehci1": "0x7", "ich9-uhci1": "0x0",
                                                                 "ich9-uhci2": "0x1", "ich9-uhci3": "0x2"}
    assert addrs["ich9-uhci1"].get("multifunction") == "on"


def test_hostdev_interface_and_integrated_iommu():
    text = ("<domain><name>h</name><memory>262144</memory><os><type machine='q35'>hvm</type></os>"
            "<features><acpi/></features><devices><controller type='pci' index='0' model='pcie-root'/>"
            "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' bus='0x3b' "
            "slot='0x00' function='0x1'/></source></interface><iommu model='virtio'/>"
            "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>")
    planned = plan_document(text, "h.xml", (Headroom(K.HOSTDEV, 1, "hostdev"),))
    placed = {p.endpoint.kind: p.address for p in planned.extension.placed}
    assert placed["virtio-iommu"].bus == 0  # the root bus only
    assert placed["hostdev-net"].bus != 0  # behind a root port


# -- the command line ----------------------------------------------------------------------

def test_plan_without_the_word_reads_stdin_and_writes_bytes(tmp_path):
    r = _run("-", "--hotplug", "virtio-net=4", stdin=VIRT_INSTALL_Q35.encode())
    assert r.returncode == 0, r.stderr
    layout, rules = read_layout(r.stdout, "out.xml")
    assert verify(layout, rules, strict_auto=False).capacity[K.PCIE] >= 4
    assert b"surplus: 14 pcie-root-port, 7 would do" in r.stderr


def test_in_place_and_json(tmp_path):
    path = tmp_path / "vi.xml"
    path.write_text(VIRT_INSTALL_Q35)
    r = _run("plan", str(path), "--hotplug", "pcie=2", "--right-size", "--in-place", "--emit", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["defined"] is False and report["capacity"]["pcie"] == 2
    assert report["removed"] == ["pcie-root-port"] * (14 - 5)  # 3 devices and 2 hotplugs
    assert (tmp_path / "vi.xml.bak").read_text() == VIRT_INSTALL_Q35
    assert read_domain(path.read_bytes(), "vi.xml").defined


@pytest.mark.parametrize("args, code, message", [
    (["plan", "{xml}", "--hotplug", "pcie=1@0"], 2, "the domain has no <cpu><numa> cells"),
    (["plan", "{xml}", "--emit", "tree"], 2, "--emit tree is for specs"),
    (["plan", "{spec}", "--hotplug", "pcie=1"], 2, "--hotplug is for a domain XML"),
    (["plan", "{xml}", "--hotplug", "pcie=2000"], 1, "pcie hotplug slots fit next to these devices"),
    (["{xml}", "--hotplug", "vga=1"], 2, "libvirt cannot hotplug a vga"),
])
def test_plan_cli_errors(tmp_path, args, code, message):
    xml = tmp_path / "vi.xml"
    xml.write_text(VIRT_INSTALL_Q35)
    r = _run(*[a.format(xml=xml, spec=ROOT / "specs/q35-web.yaml") for a in args])
    assert r.returncode == code, r.stderr
    assert message in r.stderr.decode() and b"Traceback" not in r.stderr
    assert xml.read_text() == VIRT_INSTALL_Q35


def test_batch_plans_xml_templates_with_a_shared_hotplug(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.xml").write_text(VIRT_INSTALL_Q35)
    (tmp_path / "in" / "b.xml").write_text(VIRT_INSTALL_Q35.replace("vi-q35", "vi-b"))
    r = _run("batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--hotplug", "pcie=3", "--right-size",
             "-j", "1", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["status"] for s in report["results"]] == ["ok", "ok"]
    for name in ("a", "b"):
        layout, rules = read_layout((tmp_path / "out" / f"{name}.xml").read_bytes(), name)
        assert verify(layout, rules, strict_auto=False).capacity[K.PCIE] == 3


def test_hotplug_option_takes_a_node():
    assert parse_hotplug_option("hostdev=2@1") == Headroom(K.HOSTDEV, 2, "hostdev", node=1)
    with pytest.raises(ValueError):
        parse_hotplug_option("pcie=2@x")
