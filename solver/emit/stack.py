"""The plan in the syntax of the stack's own tools.

* ``virt_install``: a ``virt-install`` command line for a new guest (a spec's plan): every PCI
  controller as ``--controller type=pci,index=..,model=..,address.*,target.*``, every device with
  its ``address.*``, and virt-install's own default devices that would take planned slots switched
  off (``Guest.set_defaults`` in virtinst adds a USB controller, a qemu-ga channel, whose
  virtio-serial controller takes a PCIe slot, an rng, a balloon and, with graphics, a video card;
  ``--controller type=usb,model=none``, ``--channel none``, ``--rng none``, ``--memballoon none`` and
  ``--graphics none`` stop that; without a disk of the plan's, ``--disk none``, or it adds a virtio
  disk).  virt-install adds no root ports of its own once any PCI controller is given
  (``Guest._add_q35_pcie_controllers``).
* ``virt_xml``: one ``virt-xml NAME --add-device --controller ...`` line per controller an
  extension adds, for a defined guest (virt-xml changes the persistent definition).
* ``attach_files``: one ``<controller>`` document per added controller, for
  ``virsh attach-device NAME FILE --config``.

Option names are virtinst's (virtinst/cli.py: ``_add_common_device_args`` gives every device
``address.*`` and ``alias.name``; ``ParserController`` the ``target.*`` of PCI controllers).
"""

from __future__ import annotations

import shlex

from ..model import Address, Controller, Plan
from ..rules import rules_for
from ..rules.devices import kind as device_kind

__all__ = ["attach_files", "controller_options", "device_options", "virt_install", "virt_xml"]

IMAGE_DIR = "/var/lib/libvirt/images"  # as the domain writer's placeholder disks
HOST_PLACEHOLDER = "0000:00:00.0"  # a hostdev without a host address (the writer's placeholder too)


def _address(addr: Address, multifunction: bool = False) -> list[str]:
    out = ["address.type=pci", f"address.domain=0x{addr.domain:04x}", f"address.bus=0x{addr.bus:02x}",
           f"address.slot=0x{addr.slot:02x}", f"address.function=0x{addr.function:x}"]
    if multifunction:
        out.append("address.multifunction=on")
    return out


def controller_options(c: Controller) -> str:
    """``type=pci,index=N,model=M,address.*,target.*`` of one PCI controller."""
    parts = ["type=pci", f"index={c.index}", f"model={c.model}"]
    if c.address is not None:
        parts += _address(c.address, c.multifunction)
    for attr, value in c.target:
        parts.append(f"target.{attr}=" + (f"0x{value:x}" if attr == "port" else str(value)))
    if not c.hotplug:
        parts.append("target.hotplug=off")
    return ",".join(parts)


def device_options(kind_name: str, name: str, address: Address | None, *, index: int = 0, host: str | None = None,
                   guest: str = "guest", multifunction: bool = False) -> list[tuple[str, str]]:
    """The virt-install options of one device (``index`` numbers the devices of its element: controllers
    of one type, disks in the order of the command's ``--disk`` options), as
    ``(option, value)`` pairs: usually one, plus an ``--xml`` edit for what virt-install has no
    option for (a transitional virtio disk's model)."""
    k = device_kind(kind_name)
    transitional = k.xml_model == "virtio-transitional"
    common = ([f"alias.name=ua-{name}"] if name else []) + (_address(address, multifunction) if address else [])
    extra: list[tuple[str, str]] = []
    if k.element == "interface":
        opt, parts = "--network", ["type=user", f"model.type={k.xml_model}"]  # user-mode: no host setup
    elif k.element == "disk":
        opt, parts = "--disk", [f"path={IMAGE_DIR}/{guest}-{name}.img", "bus=virtio", "driver.name=qemu",
                                "driver.type=raw"]
        if transitional:  # virt-install has no option for a disk's model: set it in its XML, the index+1-th disk
            # (an XPath predicate on the alias cannot be written: virt-install splits the option at '=')
            extra.append(("--xml", f"./devices/disk[{index + 1}]/@model=virtio-transitional"))
    elif k.element in ("scsi", "virtio-serial", "usb", "sata"):
        opt, parts = "--controller", [f"type={k.element}", f"index={index}"]
        if k.xml_model and not (k.element == "virtio-serial" and k.xml_model == "virtio"):
            parts.append(f"model={k.xml_model}")
    elif k.element == "rng":
        opt, parts = "--rng", ["/dev/urandom", f"model={k.xml_model}"]
    elif k.element == "video":
        opt, parts = "--video", [f"model.type={k.xml_model}"]
    elif k.element == "input":
        opt, parts = "--input", ["type=keyboard", "bus=virtio"]
        if transitional:
            parts.append("model=virtio-transitional")
    elif k.element == "memballoon":
        opt, parts = "--memballoon", [f"model={k.xml_model}"]
    elif k.element == "sound":
        opt, parts = "--sound", [f"model={k.xml_model}"]
    elif k.element == "serial":
        opt, parts = "--serial", ["type=null", "target.type=pci-serial"]
    elif k.element == "hostdev":
        opt, parts = "--hostdev", [str(Address.parse(host)) if host else HOST_PLACEHOLDER]
    else:  # pragma: no cover - the device table and the writer go together
        raise AssertionError(f"no virt-install option for element {k.element}")
    return [(opt, ",".join(parts + common))] + extra


def _quote_lines(command: str, options: list[tuple[str, str]]) -> str:
    lines = [command + " \\"]
    for i, (opt, value) in enumerate(options):
        tail = "" if i == len(options) - 1 else " \\"
        lines.append(f"  {opt}" + (f" {shlex.quote(value)}" if value else "") + tail)
    return "\n".join(lines) + "\n"


def virt_install(plan: Plan) -> str:
    """The ``virt-install`` command of a spec's plan (see the module docstring)."""
    p = plan.problem
    rules = rules_for(p.family, p.target)
    opts: list[tuple[str, str]] = [("--name", p.name), ("--memory", str(p.memory_mib)), ("--vcpus", str(p.vcpus)),
                                   ("--arch", p.arch), ("--machine", p.machine), ("--virt-type", p.virt_type)]
    if p.numa:
        opts.append(("--cpu", ",".join(f"numa.cell{i}.id={i},numa.cell{i}.cpus={c.cpus},"
                                       f"numa.cell{i}.memory={c.memory_mib * 1024}"  # KiB, libvirt's default unit
                                       for i, c in enumerate(p.numa))))
    if plan.layout.acpi:
        opts.append(("--features", "acpi=on"))
    for c in plan.layout.controllers:
        opts.append(("--controller", controller_options(c)))
    opts += _window_edits(plan)
    counters: dict[str, int] = {}
    present: set[str] = set()
    hostdevs = False
    for placed in plan.layout.placed:
        ep = placed.endpoint
        k = device_kind(ep.kind)
        present.add(k.element)
        index = counters.get(k.element, 0)
        counters[k.element] = index + 1
        hostdevs |= k.element == "hostdev"
        if ep.parts and placed.address is not None:  # a multifunction group: one option per function
            a = placed.address
            for f, (name, host) in zip(ep.functions, ep.parts):
                if f != ep.functions[0]:
                    index = counters[k.element]
                    counters[k.element] = index + 1
                opts += device_options(ep.kind, name, Address(a.bus, a.slot, a.function + f - ep.functions[0],
                                                              a.domain), index=index, host=host, guest=p.name,
                                       multifunction=placed.multifunction and f == 0)
            continue
        opts += device_options(ep.kind, ep.name, placed.address, index=index, host=ep.host, guest=p.name,
                               multifunction=placed.multifunction)
        if ep.acpi_index is not None:  # virt-install 4.1 has no acpi.index: set it in the index+1-th interface
            opts.append(("--xml", f"./devices/{k.element}[{index + 1}]/acpi/@index={ep.acpi_index}"))
    # virt-install's own defaults (virtinst Guest.set_defaults): off where the plan has none of its own
    if "usb" not in present and "usb" in rules.implicit:
        opts.append(("--controller", "type=usb,model=none"))
    if "memballoon" not in present:
        opts.append(("--memballoon", "none"))
    if "rng" not in present:
        opts.append(("--rng", "none"))
    if "disk" not in present:
        opts.append(("--disk", "none"))  # else virt-install adds a disk of its own (a virtio disk: a PCIe slot)
    opts.append(("--channel", "none"))  # the qemu-ga channel needs a virtio-serial controller: a PCIe slot
    opts.append(("--graphics", "none"))  # graphics bring a default video card (a PCI device on pseries)
    head = [f"# {p.name} ({p.family}) as topo-solve planned it: every PCI controller and device at its address,",
            "# and virt-install's own default devices that would take planned slots switched off.",
            "# Add the install source (--import, --cdrom or --location) and --osinfo; point the disks"
            + (" and host devices" if hostdevs else "") + " at real ones."]
    return "\n".join(head) + "\n" + _quote_lines("virt-install", opts)


def _window_edits(plan: Plan) -> list[tuple[str, str]]:
    """``--xml`` edits for memReserve and pcihole64, which virt-install 4.1 has no option for.  The PCI
    controllers are the first ``--controller`` options, in layout order, and virt-install writes them in
    that order, so the K-th is ``controller[K]`` (measured with --print-xml)."""
    out = []
    for k, c in enumerate(plan.layout.controllers, start=1):
        if c.mem_reserve is not None:
            out.append(("--xml", f"./devices/controller[{k}]/target/@memReserve={c.mem_reserve}"))
        if c.index == 0 and plan.layout.pcihole64 is not None:
            out.append(("--xml", f"./devices/controller[{k}]/pcihole64={plan.layout.pcihole64}"))
            out.append(("--xml", f"./devices/controller[{k}]/pcihole64/@unit=KiB"))
    return out


def virt_xml(name: str, added: tuple[Controller, ...], uri: str | None = None) -> str:
    """One ``virt-xml`` line per added controller, in index order (a controller's bus comes first)."""
    conn = f" --connect {shlex.quote(uri)}" if uri else ""
    lines = [f"virt-xml {shlex.quote(name)}{conn} --add-device --controller {shlex.quote(controller_options(c))}"
             for c in sorted(added, key=lambda c: c.index)]
    return "\n".join(lines) + ("\n" if lines else "")


def attach_files(added: tuple[Controller, ...], family: str) -> list[tuple[str, str]]:
    """``(file name, XML)`` per added controller, in index order: ``controller-009-pcie-root-port.xml``."""
    from lxml import etree

    from ..domain.write import _controller

    out = []
    for c in sorted(added, key=lambda c: c.index):
        el = _controller(c, family)
        etree.indent(el, space="  ")
        out.append((f"controller-{c.index:03d}-{c.model}.xml", etree.tostring(el, encoding="unicode") + "\n"))
    return out
