"""Helpers for the live-guest tests: run topo-solve, define throw-away guests, compare layouts."""

from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

from lxml import etree

from topo_solve.domain.read import read_domain

from .libvirt_fixtures import hv

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "topo-solve-live-"


def topo(*args: str, input: str | None = None, check: bool = True, env: dict | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``topo-solve ARGS`` as a user runs it (a real process)."""
    r = subprocess.run([sys.executable, "-m", "topo_solve", *map(str, args)], capture_output=True, text=True,
                       input=input, timeout=300, env=env, cwd=cwd or ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"topo-solve {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def command_words(text: str) -> list[str]:
    """The words of an emitted shell command (comment lines dropped, backslash-newlines joined)."""
    lines = [ln.rstrip().removesuffix("\\") for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return shlex.split(" ".join(lines))


def unique(what: str) -> str:
    return f"{PREFIX}{what}-{uuid.uuid4().hex[:6]}"


def renamed(xml: str, name: str) -> str:
    root = etree.fromstring(xml.encode())
    root.find("name").text = name
    for el in root.findall("uuid"):
        root.remove(el)
    return etree.tostring(root, encoding="unicode")


@contextmanager
def defined(virsh, xml: str, *, start: bool = False, prefix: bool = True):
    """Define ``xml`` (its own name, which must be unused), optionally start it; always remove it."""
    name = etree.fromstring(xml.encode()).findtext("name")
    assert name.startswith(PREFIX) or not prefix, name
    assert not virsh.exists(name), f"a guest named {name} exists already"
    try:
        virsh.define(xml)
        if start:
            virsh.start(name)
        yield name
    finally:
        problem = hv._cleanup(virsh, name)
        hv._remove_logs(name, virsh.root)
        assert problem is None, problem


def pci_layout(xml: str) -> tuple[tuple, tuple]:
    """What a layout says about PCI, comparable across writers: every controller (index, model, address,
    target, hotplug) and every addressed device (model, address)."""
    layout = read_domain(xml, "x.xml").layout()
    return pci_key(layout)


def pci_key(layout) -> tuple[tuple, tuple]:
    ctrls = tuple(sorted((c.index, c.model, str(c.address) if c.address else None, tuple(sorted(c.target)),
                          c.hotplug) for c in layout.controllers))
    devs = tuple(sorted((p.endpoint.kind, str(p.address)) for p in layout.placed if p.address is not None))
    return ctrls, devs


# -- the README's live workflow: the guests it shows ------------------------------------------------

README_NUMA = """\
name: numa-01
machine: q35
memory: 1024
vcpus: 2
numa: {nodes: 2}
defaults: {usb: false, memballoon: false}
devices:
  - {name: nic, model: virtio-net}
  - {name: gpu-nic, model: virtio-net, numa_node: 1}
hotplug:
  - {class: pcie, count: 2}
  - {class: pcie, count: 1, numa_node: 1}
"""


@contextmanager
def readme_guests(virsh, names: dict[str, str], tmp: Path):
    """The README's three guests under the names ``names`` maps them to: web-02 (specs/domains/web-02.xml,
    laid out by libvirt itself) running; db-01 (specs/domains/web-03.xml, virt-install's XML with its 14
    root ports) shut off; numa-01 (planned by topo-solve, two NUMA nodes) running.  Removed afterwards."""
    from contextlib import ExitStack

    web = (ROOT / "specs" / "domains" / "web-02.xml").read_text().replace("<domain type='kvm'>",
                                                                          "<domain type='qemu'>")
    db = (ROOT / "specs" / "domains" / "web-03.xml").read_text().replace('<domain type="kvm">', '<domain type="qemu">')
    spec = tmp / "numa-01.yaml"
    spec.write_text(README_NUMA)
    numa = topo(spec, "--virt-type", "qemu", "-q").stdout
    with ExitStack() as stack:
        stack.enter_context(defined(virsh, renamed(web, names["web-02"]), start=True, prefix=False))
        stack.enter_context(defined(virsh, renamed(db, names["db-01"]), prefix=False))
        stack.enter_context(defined(virsh, renamed(numa, names["numa-01"]), start=True, prefix=False))
        yield
