"""Issue 15 in the real libvirt + QEMU (TCG): live guests by name, the hotplug itself, the stack's forms.

* ``audit --connect URI NAME...`` (and ``--all``) says of each guest what ``audit`` says of its
  ``virsh dumpxml``, a running NUMA guest among them;
* ``extend --connect URI NAME --apply`` shows the change, defines it, and says the running guest
  takes it at its next start; after a restart the guest takes the request all at once and exactly
  its promised capacity, then libvirt refuses (one line); a definition changed meanwhile is never
  overwritten;
* ``attach`` on a NUMA guest planned by topo-solve: each node's positions are filled with that
  node's devices, each attach at the address it printed, exactly up to the promised capacity per
  node and outside the nodes, then libvirt's refusal in one line; a NIC gets the next acpi index of
  the live XML and the definition together;
* the forms, applied by the real tools: virt-install's ``--print-xml --dry-run`` with the emitted
  options gives the planned PCI layout, and libvirt defines it unchanged with the planned capacity;
  the virt-xml lines and the attach-device files turn a defined guest into the planned extension;
  Nova-like guests with the ``num_pcie_ports`` the helper computes have the headroom, one port fewer
  does not; the KubeVirt ``onDefineDomain`` hook, run as KubeVirt's shim runs it, prints a domain
  libvirt defines unchanged.

On both judges (libvirt 9.0 + QEMU 7.2, libvirt 11.3 + QEMU 10.0), but virt-install's form: virt-install
looks the disks and host devices up on this host, where the second judge's daemon does not run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lxml import etree

from topo_solve.domain.read import read_layout
from topo_solve.model import EndpointClass
from topo_solve.spec import load_request
from topo_solve.solve import solve
from topo_solve.verify import verify

from .libvirt_fixtures import BOTH, HOST, hv
from .live_support import PREFIX, ROOT, command_words, defined, pci_key, pci_layout, topo, unique

pytestmark = [pytest.mark.libvirt, BOTH]

REFUSAL = "No more available PCI slots"

_NIC = "<interface type='user'><model type='{m}'/></interface>"
_RNG = "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (Debian package virtinst)"
        if os.environ.get("TOPO_SOLVE_REQUIRE_LIBVIRT", "") not in ("", "0"):
            pytest.fail(f"TOPO_SOLVE_REQUIRE_LIBVIRT=1 but {message}", pytrace=False)
        pytest.skip(message)


def _plain(name: str, family: str = "q35", devices: tuple[str, ...] = (_NIC.format(m="virtio"), _RNG),
           extra: str = "") -> str:
    """A guest as a user writes it, without addresses: libvirt lays it out at define."""
    os_type = {"q35": "<type arch='x86_64' machine='q35'>hvm</type>",
               "pc": "<type arch='x86_64' machine='pc'>hvm</type>",
               "pseries": "<type arch='ppc64' machine='pseries'>hvm</type>"}[family]
    features = "<features><acpi/></features>" if family in ("q35", "pc") else ""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>{extra}"
            f"<os>{os_type}</os>{features}<devices>{''.join(devices)}</devices></domain>")


def _spec_xml(tmp_path: Path, name: str, body: str) -> tuple[str, dict]:
    """A guest planned from a spec (TCG), and the plan's JSON."""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\n" + textwrap.dedent(body))
    xml = topo(spec, "--virt-type", "qemu", "-q").stdout
    return xml, json.loads(topo(spec, "--virt-type", "qemu", "-q", "--emit", "json").stdout)


NUMA = """\
    machine: q35
    memory: 512
    vcpus: 2
    numa: {nodes: 2}
    defaults: {usb: false, memballoon: false}
    devices:
      - {name: nic, model: virtio-net}
      - {name: nic1, model: virtio-net, numa_node: 1}
    hotplug:
      - {class: pcie, count: 2}
      - {class: pcie, count: 2, numa_node: 0}
      - {class: pcie, count: 1, numa_node: 1}
"""


# -- audit a host --------------------------------------------------------------------------------

def test_host_audit_equals_the_audit_of_each_dump(virsh, tmp_path):
    """Three guests (q35 and pc as libvirt lays them out, shut off; a NUMA q35 from a plan, running):
    the host audit's record of each is the file audit's record of its virsh dumpxml."""
    names = [unique("audit-q35"), unique("audit-pc"), unique("audit-numa")]
    numa_xml, _ = _spec_xml(tmp_path, names[2], NUMA)
    with defined(virsh, _plain(names[0])), defined(virsh, _plain(names[1], "pc")), \
            defined(virsh, numa_xml, start=True):
        live = json.loads(topo("audit", "--connect", virsh.uri, "--emit", "json", *names).stdout)
        assert [r["guest"] for r in live] == names
        assert [r["state"] for r in live] == ["shut off", "shut off", "running"]
        for name, record in zip(names, live):
            dump = tmp_path / f"{name}.xml"
            dump.write_text(virsh.dumpxml(name))
            (file_record,) = [json.loads(topo("audit", "--emit", "json", dump).stdout)]
            del file_record["file"]
            mine = {k: v for k, v in record.items() if k not in ("guest", "uri", "state")}
            assert mine == file_record, name
        assert live[2]["nodes"] == {"0": {"capacity": {"pcie": 2, "pci": 0, "hostdev": 2}},
                                    "1": {"capacity": {"pcie": 1, "pci": 0, "hostdev": 1}}}
        # --all: the same records among the host's guests (other guests may come and go meanwhile)
        every = {r["guest"]: r for r in json.loads(topo("audit", "--connect", virsh.uri, "--all", "--emit",
                                                          "json").stdout)}
        assert [every[n] for n in names] == live
        # the table: one row per guest, then the notes
        table = topo("audit", "--connect", virsh.uri, *names).stdout.splitlines()
        assert table[0].split() == ["guest", "state", "machine", "hotplug", "capacity", "empty", "ports", "warnings"]
        for name, record, row in zip(names, live, table[1:4]):
            assert row.split()[0] == name and f"pcie {record['capacity']['pcie']}" in row
        assert table[4].startswith(f"3 guest(s) on {virsh.uri}; ")
        assert f"{names[2]}: NUMA node 0: hotplug capacity pcie 2  pci 0  hostdev 2" in table


def test_a_missing_guest_is_one_line(virsh):
    missing = f"{PREFIX}no-such-guest"
    for argv in (["audit", "--connect", virsh.uri, missing], ["attach", missing, "-c", virsh.uri, "--model", "e1000"],
                 ["extend", "-c", virsh.uri, missing, "--hotplug", "pcie=1"]):
        r = topo(*argv, check=False)
        assert r.returncode == 2, (argv, r.stderr)
        (line,) = r.stderr.splitlines()
        assert line.startswith("error: ") and missing in line, line


# -- extend a guest by name, and apply it -----------------------------------------------------------

def test_extend_apply_then_restart_gives_the_headroom(virsh, tmp_path):
    name = unique("extend")
    xml, _ = _spec_xml(tmp_path, name, """\
        machine: q35
        memory: 256
        devices:
          - {name: nic, model: virtio-net}
          - {name: old, model: e1000}
        hotplug:
          - {class: pcie, count: 1}
    """)
    with defined(virsh, xml, start=True):
        before = json.loads(topo("audit", "-c", virsh.uri, "--emit", "json", name).stdout)[0]
        plan = json.loads(topo("extend", "-c", virsh.uri, name, "--hotplug", "virtio-net=4", "--hotplug", "e1000=2",
                               "--emit", "json", "-q").stdout)
        assert plan["added"], "the request needs more controllers"
        r = topo("extend", "-c", virsh.uri, name, "--hotplug", "virtio-net=4", "--hotplug", "e1000=2", "--apply")
        added = [ln for ln in r.stdout.splitlines() if ln.startswith("+") and "<controller type='pci'" in ln]
        assert len(added) == len(plan["added"]), r.stdout
        assert "next start" in r.stderr and "defined" in r.stderr
        # running: the live guest is as it was; its definition has the headroom from its next start
        after = json.loads(topo("audit", "-c", virsh.uri, "--emit", "json", name).stdout)[0]
        assert after["capacity"] == before["capacity"]
        assert after["next_start"]["capacity"] == plan["capacity"]
        # the same request again: already met, nothing defined
        again = topo("extend", "-c", virsh.uri, name, "--hotplug", "virtio-net=4", "--hotplug", "e1000=2", "--apply")
        assert "nothing to define" in again.stderr and again.stdout == ""
        virsh.destroy(name)
        virsh.start(name)
        live = json.loads(topo("audit", "-c", virsh.uri, "--emit", "json", name).stdout)[0]
        assert live["capacity"] == plan["capacity"] and "next_start" not in live
        # the request, all at once, then PCIe devices up to the capacity, then libvirt's refusal
        for model in ["e1000"] * 2 + ["virtio-net"] * plan["capacity"]["pcie"]:
            topo("attach", name, "-c", virsh.uri, "--model", model, "--live", "-q")
        r = topo("attach", name, "-c", virsh.uri, "--model", "virtio-net", "--live", check=False)
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and REFUSAL in r.stderr, r.stderr


def test_apply_never_overwrites_a_definition_changed_meanwhile(virsh):
    from topo_solve.errors import EnvironmentFault
    from topo_solve.live import Host

    name = unique("race")
    with defined(virsh, _plain(name)):
        host = Host(virsh.uri)
        read = host.guest(name, secure=True)
        changed = read.definition.replace("<devices>", "<devices><rng model='virtio'><backend model='random'>"
                                          "/dev/urandom</backend></rng>", 1)
        virsh.define(changed)  # another tool changes the guest between topo-solve's read and its define
        mine = read.definition.replace("<memory", "<description>the plan</description><memory", 1).encode()
        with pytest.raises(EnvironmentFault, match="was changed since topo-solve read it"):
            host.define_unchanged(read, mine)
        assert "the plan" not in virsh.dumpxml(name, inactive=True)
        assert virsh.dumpxml(name, inactive=True).count("<rng") == 2


# -- attach: a NUMA guest, filled node by node ----------------------------------------------------

# 28 conventional devices at boot fill node 1's pcie-to-pci-bridge but for the 3 slots asked, so the
# conventional class is hotplugged to its end too without 31 hotplugs
NUMA_FULL = NUMA.replace("""      - {name: nic1, model: virtio-net, numa_node: 1}
""", """      - {name: nic1, model: virtio-net, numa_node: 1}
      - {name: old, model: virtio-rng-transitional, count: 28, numa_node: 1}
""") + "      - {class: pci, count: 3, numa_node: 1}\n"


def test_attach_fills_each_numa_node_with_its_own_devices(virsh, tmp_path):
    """Per class, per node: each attach at the position it printed, on its node's subtree (or on no
    node's), exactly as many as promised; a node that is full says where room is left, and when no
    position of the class is left anywhere libvirt itself refuses, in one line."""
    name = unique("numa")
    xml, plan = _spec_xml(tmp_path, name, NUMA_FULL)
    layout, rules = read_layout(xml)
    node_of = verify(layout, rules, strict_auto=False).node_of
    promised = {(c, None): n for c, n in plan["capacity"].items() if c != "hostdev"}
    promised.update({(c, int(node)): n for node, cap in plan["nodes"].items() for c, n in cap["capacity"].items()
                     if c != "hostdev"})
    assert promised == {("pcie", None): 2, ("pci", None): 0, ("pcie", 0): 2, ("pci", 0): 0, ("pcie", 1): 1,
                        ("pci", 1): 3}
    with defined(virsh, xml, start=True):
        placed: dict = {}
        for cls, model, node in (("pcie", "virtio-net", 0), ("pcie", "virtio-net", 1), ("pcie", "virtio-net", None),
                                 ("pci", "e1000", 1), ("pci", "e1000", None)):
            where = ["--node", str(node)] if node is not None else []
            placed[(cls, node)] = []
            while True:
                r = topo("attach", name, "-c", virsh.uri, "--model", model, *where, "--live", check=False)
                if r.returncode != 0:
                    break
                addr = etree.fromstring(r.stdout.encode()).find("address")
                bus = int(addr.get("bus"), 16)
                assert node_of.get(bus) == node, (model, node, bus)
                assert r.stderr.strip().endswith("attached live"), r.stderr
                placed[(cls, node)].append((bus, int(addr.get("slot"), 16)))
            assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
            if node is not None:
                assert "NUMA node" in r.stderr and "libvirt" not in r.stderr, r.stderr  # room left elsewhere
            else:  # nothing of the class free anywhere: libvirt itself refuses
                assert "libvirt refuses it too" in r.stderr and REFUSAL in r.stderr, r.stderr
        assert {k: len(v) for k, v in placed.items() if v or promised.get(k)} == \
            {k: n for k, n in promised.items() if n}
        # the live XML has each device where its attach said
        live = etree.fromstring(virsh.dumpxml(name).encode())
        got = sorted((int(a.get("bus"), 16), int(a.get("slot"), 16)) for nic in live.iterfind("devices/interface")
                     if nic.find("alias").get("name", "").startswith(("ua-virtio-net-", "ua-e1000-"))
                     for a in [nic.find("address")])
        assert got == sorted(p for v in placed.values() for p in v)


def _file(folder: Path, text: str) -> str:
    path = folder / "device.xml"
    path.write_text(text)
    return str(path)


def test_attach_gives_a_nic_the_next_acpi_index_of_live_and_definition(virsh, tmp_path):
    name = unique("acpi")
    nics = "".join(f"<interface type='user'><model type='virtio'/><acpi index='{i}'/><alias name='ua-n{i}'/>"
                   "</interface>" for i in (1, 2))
    ports = "<controller type='pci' model='pcie-root'/>" + "<controller type='pci' model='pcie-root-port'/>" * 8
    with defined(virsh, _plain(name, devices=(ports, nics)), start=True):
        # a NIC removed from the definition only: the running guest still has its index 2
        n2 = "<interface type='user'><model type='virtio'/><acpi index='2'/><alias name='ua-n2'/></interface>"
        virsh.run("detach-device", name, _file(tmp_path, n2), "--config")
        r = topo("attach", name, "-c", virsh.uri, "--model", "virtio-net", "--live", "--config")
        assert etree.fromstring(r.stdout.encode()).find("acpi").get("index") == "3"
        # a NIC in the definition only, with a high index: the next one goes above it
        n9 = "<interface type='user'><model type='virtio'/><acpi index='9'/><alias name='ua-n9'/></interface>"
        virsh.attach_device(name, n9, live=False, config=True)
        r = topo("attach", name, "-c", virsh.uri, "--model", "e1000e", "--live")
        assert etree.fromstring(r.stdout.encode()).find("acpi").get("index") == "10"
        live = etree.fromstring(virsh.dumpxml(name).encode())
        assert sorted(int(a.get("index")) for a in live.iterfind("devices/interface/acpi")) == [1, 2, 3, 10]
        config = etree.fromstring(virsh.dumpxml(name, inactive=True).encode())
        assert sorted(int(a.get("index")) for a in config.iterfind("devices/interface/acpi")) == [1, 3, 9]


# -- the forms, applied by the real tools ---------------------------------------------------------

def _host_pci_addresses(virsh) -> list[str]:
    """This host's PCI devices (virt-install looks a --hostdev up; libvirt refuses one twice in a guest)."""
    names = [ln.strip() for ln in virsh.run("nodedev-list", "--cap", "pci").splitlines() if ln.strip()]
    assert names, "this host has no PCI node device for --hostdev"
    return [":".join(n.split("_")[1:4]) + "." + n.split("_")[4] for n in names]


VI_SPECS = [ROOT / "specs" / f"{n}.yaml" for n in ("q35-web", "pc-legacy", "pseries-hpc", "virt-arm")]


@pytest.mark.judges(HOST)  # virt-install checks disk paths and host devices on this host
@pytest.mark.parametrize("spec", VI_SPECS + ["numa"], ids=lambda p: getattr(p, "stem", p))
def test_virt_install_form_gives_the_planned_guest(spec, virsh, tmp_path):
    _require("virt-install")
    if spec == "numa":
        spec = tmp_path / "numa.yaml"
        spec.write_text("name: numa\n" + textwrap.dedent(NUMA))
    plan = solve(load_request(spec))
    words = command_words(topo(spec, "--emit", "virt-install", "--virt-type", "qemu", "-q").stdout)
    assert words[0] == "virt-install"
    hosts = iter(_host_pci_addresses(virsh))
    name = unique("vi")
    args, prev = [], None
    for w in words[1:]:  # what this host needs: real paths, a host device it has, a name of its own
        if prev == "--name":
            w = name
        elif prev == "--hostdev":
            w = next(hosts) + "," + w.split(",", 1)[1]
        elif prev == "--disk" and w.startswith("path="):
            w = "path=/dev/null," + w.split(",", 1)[1]  # no storage pool: virt-install defines none for /dev
        args.append(w)
        prev = w
    if plan.layout.family == "virt":
        args += ["--features", "acpi=off"]  # no UEFI firmware on this host: libvirt refuses ACPI without it
    r = subprocess.run(["virt-install", "--connect", virsh.uri, "--print-xml", "--dry-run", "--osinfo", "linux2022",
                        "--install", "no_install=yes", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert pci_layout(r.stdout) == pci_key(plan.layout)
    with defined(virsh, r.stdout):
        dump = virsh.dumpxml(name, inactive=True)
        assert pci_layout(dump) == pci_key(plan.layout)  # libvirt added and moved nothing
        (tmp_path / "dump.xml").write_text(dump)
        audit = json.loads(topo("audit", "--emit", "json", tmp_path / "dump.xml").stdout)
        assert audit["capacity"] == {str(c): n for c, n in plan.capacity.items()}
        assert audit.get("nodes", {}) == {str(n): {"capacity": {str(c): k for c, k in cap.items()}}
                                          for n, cap in plan.node_capacity.items()}


@pytest.mark.parametrize("form", ["virt-xml", "attach"])
def test_extension_forms_give_the_planned_guest(form, virsh, tmp_path):
    """A guest as libvirt laid it out, extended by the emitted virt-xml lines or attach-device files: its
    definition is the planned extension, PCI part for PCI part, with the planned capacity."""
    if form == "virt-xml":
        _require("virt-xml")
    name = unique(form)
    devices = (_NIC.format(m="virtio"), _NIC.format(m="virtio"), _NIC.format(m="e1000"), _RNG)
    with defined(virsh, _plain(name, devices=devices)):
        request = ["--hotplug", "virtio-net=5", "--hotplug", "hostdev=2", "--hotplug", "e1000=3"]
        planned = topo("extend", "-c", virsh.uri, name, *request, "-q").stdout
        report = json.loads(topo("extend", "-c", virsh.uri, name, *request, "--emit", "json", "-q").stdout)
        assert len(report["added"]) >= 3
        if form == "virt-xml":
            lines = topo("extend", "-c", virsh.uri, name, *request, "--emit", form, "-q").stdout.splitlines()
            assert len(lines) == len(report["added"])
        else:
            lines = topo("extend", "-c", virsh.uri, name, *request, "--emit", form, "-o", tmp_path / "ctl",
                         "-q").stdout.splitlines()
            assert len(lines) == len(report["added"]) == len(list((tmp_path / "ctl").iterdir()))
        for line in lines:
            words = shlex.split(line)
            assert words[0] == ("virt-xml" if form == "virt-xml" else "virsh")
            r = subprocess.run(words, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        dump = virsh.dumpxml(name, inactive=True)
        assert pci_layout(dump) == pci_layout(planned)
        (tmp_path / "dump.xml").write_text(dump)
        audit = json.loads(topo("audit", "--emit", "json", tmp_path / "dump.xml").stdout)
        assert audit["capacity"] == report["capacity"]


# -- Nova: num_pcie_ports ---------------------------------------------------------------------------

FLAVORS = """\
    machine: q35
    flavors:
      m1.small:
        devices: {virtio-blk: 1, virtio-net: 1}
        headroom: {virtio-net: 2, virtio-blk: 1}
      gpu.large:
        devices: {virtio-blk: 2, virtio-net: 2, hostdev: 1}
        headroom: {hostdev: 1, pcie: 2}
        defaults: {usb: false}
      legacy:
        devices: {virtio-blk: 1, e1000: 1, vga: 1}
        headroom: {pci: 2, virtio-net: 1}
"""


def _nova_guest(name: str, flavor: dict, ports: int, host: str) -> str:
    """What Nova writes for a flavor: pcie-root, PORTS root ports and the devices, none with an index or
    an address (libvirt places them at define); a device libvirt would add by itself only as asked."""
    from topo_solve.domain.write import device_element

    devices = ["<controller type='pci' model='pcie-root'/>"]
    devices += ["<controller type='pci' model='pcie-root-port'/>"] * ports
    for model, n in flavor["devices"].items():
        for i in range(n):
            el = device_element(f"{model}-{i}", model, None, index=i, host=host, guest=name)
            if el.tag == "disk":
                el.find("source").set("file", "/dev/null")
            devices.append(etree.tostring(el, encoding="unicode"))
    for flag, on in flavor.get("defaults", {}).items():
        if not on:
            devices.append({"usb": "<controller type='usb' model='none'/>",
                            "memballoon": "<memballoon model='none'/>"}[flag])
    return _plain(name, devices=tuple(devices))


def test_nova_num_pcie_ports_gives_every_flavor_its_headroom(virsh, tmp_path):
    import yaml

    flavors_file = tmp_path / "flavors.yaml"
    flavors_file.write_text(textwrap.dedent(FLAVORS))
    answer = json.loads(topo("nova", flavors_file, "--emit", "json").stdout)
    flavors = yaml.safe_load(textwrap.dedent(FLAVORS))["flavors"]
    need = {f["flavor"]: f for f in answer["flavors"]}
    assert answer["num_pcie_ports"] == max(f["ports"] for f in answer["flavors"])
    host = "0000:41:00.0"  # libvirt defines a host device it does not have; only starting needs one
    for fname, flavor in flavors.items():
        for ports in sorted({need[fname]["ports"], need[fname]["ports"] - 1, answer["num_pcie_ports"]}):
            name = unique("nova")
            with defined(virsh, _nova_guest(name, flavor, ports, host)):
                (tmp_path / "dump.xml").write_text(virsh.dumpxml(name, inactive=True))
            cap = json.loads(topo("audit", "--emit", "json", tmp_path / "dump.xml").stdout)["capacity"]
            # libvirt adds no spare port once ports are given: the free ports are the given ones left over
            fits = cap["pcie"] >= need[fname]["port_headroom"] and cap["pci"] >= need[fname]["pci_headroom"]
            assert fits == (ports >= need[fname]["ports"]), (fname, ports, cap, need[fname])
            if ports == need[fname]["ports"]:
                assert cap["pcie"] == need[fname]["port_headroom"] and cap["pci"] == need[fname]["pci_room"]


# -- KubeVirt: the onDefineDomain hook ---------------------------------------------------------------

KUBEVIRT_DOMAIN = """\
<domain type="qemu" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
  <name>{name}</name>
  <memory unit="b">268435456</memory>
  <os><type arch="x86_64" machine="q35">hvm</type></os>
  <metadata><kubevirt xmlns="http://kubevirt.io"><uid>7d1f0c9e</uid></kubevirt></metadata>
  <features><acpi></acpi></features>
  <devices>
    <interface type="user"><model type="virtio"></model><alias name="ua-default"></alias></interface>
    <controller type="usb" index="0" model="none"></controller>
    <controller type="virtio-serial" index="0" model="virtio-non-transitional"></controller>
    <disk device="disk" type="file"><source file="/dev/null"></source><target bus="virtio" dev="vda"></target>
      <driver name="qemu" type="raw"></driver><alias name="ua-containerdisk"></alias></disk>
    <memballoon model="virtio-non-transitional"></memballoon>
  </devices>
</domain>
"""


def test_kubevirt_hook_as_the_shim_runs_it(virsh, tmp_path):
    """KubeVirt's sidecar shim runs `onDefineDomain --vmi VMI_JSON --domain DOMAIN_XML` and takes its
    stdout as the new domain (cmd/sidecars/sidecar_shim.go, runOnDefineDomain)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    hook = bindir / "onDefineDomain"
    hook.write_text(textwrap.dedent("""\
        #!/bin/sh
        # a KubeVirt onDefineDomain hook: the domain XML in --domain, the planned one on stdout
        while [ $# -gt 0 ]; do
            case "$1" in --domain) domain="$2"; shift 2 ;; *) shift ;; esac
        done
        printf '%s' "$domain" | exec topo-solve plan - --hotplug virtio-net=3 --hotplug virtio-blk=1 --right-size -q
    """))
    hook.chmod(0o755)
    name = unique("kubevirt")
    domain = KUBEVIRT_DOMAIN.format(name=name)
    env = dict(os.environ, PATH=f"{bindir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    r = subprocess.run(["onDefineDomain", "--vmi", json.dumps({"metadata": {"name": name}}), "--domain", domain],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'xmlns="http://kubevirt.io"' in out and "<uid>7d1f0c9e</uid>" in out  # the rest kept as it was
    layout, rules = read_layout(out)
    assert verify(layout, rules, strict_auto=False).fits({EndpointClass.PCIE: 4})
    m = hv.measure(out, [], virsh=virsh, max_per_class=0)
    assert not m.errors and m.added_controllers == [] and m.moved == [], (m.errors, m.added_controllers, m.moved)


# -- the README's live workflow -------------------------------------------------------------------

def _readme_text_examples() -> list[tuple[str, list[str]]]:
    """The ```text blocks of the README: each `$ command` and the lines it shows."""
    import re

    out: list = []
    for block in re.findall(r"```text\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out:
                out[-1][1].append(line)
    return out


def _shape(line: str) -> str:
    """A line with what differs between runs masked: addresses, numbers, column widths."""
    import re

    line = re.sub(r"\b[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b", "ADDR", line)
    line = re.sub(r"0x[0-9a-f]+", "HEX", line)
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    return " ".join(line.split())


def test_readme_live_workflow_has_the_shape_shown(virsh, tmp_path):
    """The README's live examples (```text blocks, shown from a real run on this host) run again on
    guests of their own: every command gives the lines the README shows, up to names, numbers and
    column widths."""
    from .live_support import readme_guests

    examples = _readme_text_examples()
    assert len([c for c, _ in examples if c.startswith("topo-solve")]) >= 5
    names = {n: unique(n) for n in ("web-02", "db-01", "numa-01")}
    env = dict(os.environ, LIBVIRT_DEFAULT_URI=virsh.uri)
    with readme_guests(virsh, names, tmp_path):
        for command, shown in examples:
            words = shlex.split(command)
            words = [names.get(w, w).replace("qemu:///system", virsh.uri) for w in words]
            if words[0] == "virsh":  # virsh destroy NAME && virsh start NAME
                for part in " ".join(words).split("&&"):
                    virsh.run(*shlex.split(part)[1:])
                continue
            assert words[0] == "topo-solve", command
            r = topo(*words[1:], check=False, env=env)
            got = (r.stdout + r.stderr).replace(virsh.uri, "qemu:///system")
            for readme_name, mine in names.items():
                got = got.replace(mine, readme_name)
            assert [_shape(x) for x in got.splitlines()] == [_shape(x) for x in shown], (command, got)
