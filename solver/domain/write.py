"""Plan -> libvirt domain XML.  No decisions are made here.

Everything libvirt would otherwise add or fill in is written out: every PCI
controller with its index, model name, target and address; every device with a
user alias (``ua-NAME``) and its address; the devices libvirt adds by itself
(USB, balloon, SATA) or ``model='none'`` where the spec switched them off.  So
``virsh define`` has nothing left to choose.  Element and attribute order is
fixed, so the same plan always gives the same bytes.
"""

from __future__ import annotations

from lxml import etree

from ..model import Address, Controller, Plan
from ..rules import rules_for
from ..rules.devices import kind as device_kind

__all__ = ["render_domain", "domain_element", "controllers_element", "device_element", "implicit_element"]

IMAGE_DIR = "/var/lib/libvirt/images"

_E = etree.Element
_S = etree.SubElement


def _address(parent: etree._Element, addr: Address, multifunction: bool = False) -> None:
    a = _S(parent, "address", type="pci", domain=f"0x{addr.domain:04x}", bus=f"0x{addr.bus:02x}",
           slot=f"0x{addr.slot:02x}", function=f"0x{addr.function:x}")
    if multifunction:
        a.set("multifunction", "on")


def _controller(c: Controller, family: str) -> etree._Element:
    rules = rules_for(family)  # a controller model's XML is the same in every version
    rule = rules.rule_for(c.model, c.index)
    el = _E("controller", type="pci", index=str(c.index), model=c.model)
    if rule is not None and rule.qemu_name:
        _S(el, "model", name=rule.qemu_name)
    if c.target or not c.hotplug or c.mem_reserve is not None:
        t = _S(el, "target")
        for attr, value in c.target:
            if attr != "node":
                t.set(attr, f"0x{value:x}" if attr == "port" else str(value))
        if not c.hotplug:
            t.set("hotplug", "off")
        if c.mem_reserve is not None:  # KiB, a memory window for a later hotplug (libvirt 10.3)
            t.set("memReserve", str(c.mem_reserve))
        for attr, value in c.target:
            if attr == "node":  # an element, not an attribute: <target busNr='254'><node>1</node></target>
                _S(t, "node").text = str(value)
    if c.address is not None:
        _address(el, c.address, c.multifunction)
    return el


def device_element(name: str, kind_name: str, address: Address | None, *, index: int = 0,
                   host: str | None = None, primary: bool = False, guest: str = "guest",
                   multifunction: bool = False, acpi_index: int | None = None) -> etree._Element:
    """The XML of one endpoint; ``index`` numbers controllers and disks of one kind."""
    k = device_kind(kind_name)
    transitional = k.xml_model == "virtio-transitional"
    if k.element == "interface":
        el = _E("interface", type="user")  # user-mode networking: no host bridge or tap needed
        _S(el, "model", type=k.xml_model)
    elif k.element == "disk":
        el = _E("disk", type="file", device="disk")
        if transitional:
            el.set("model", "virtio-transitional")
        _S(el, "driver", name="qemu", type="raw")
        # A disk needs an image; this path is a placeholder to point at the real one.
        _S(el, "source", file=f"{IMAGE_DIR}/{guest}-{name}.img")
        _S(el, "target", dev="vd" + _disk_letters(index), bus="virtio")
    elif k.element in ("scsi", "virtio-serial", "usb", "sata"):
        el = _E("controller", type=k.element, index=str(index))
        if k.xml_model and not (k.element == "virtio-serial" and k.xml_model == "virtio"):
            el.set("model", k.xml_model)
    elif k.element == "rng":
        el = _E("rng", model=k.xml_model)
        _S(el, "backend", model="random").text = "/dev/urandom"  # needs only an fd on the host
    elif k.element == "video":
        el = _E("video")
        m = _S(el, "model", type=k.xml_model)
        if primary:
            m.set("primary", "yes")
    elif k.element == "input":
        el = _E("input", type="keyboard", bus="virtio")
        if transitional:
            el.set("model", "virtio-transitional")
    elif k.element == "memballoon":
        el = _E("memballoon", model=k.xml_model)
    elif k.element == "sound":
        el = _E("sound", model=k.xml_model)
    elif k.element == "serial":
        el = _E("serial", type="null")
        _S(el, "target", type="pci-serial")
    elif k.element == "hostdev":
        el = _E("hostdev", mode="subsystem", type="pci", managed="yes")
        src = _S(el, "source")
        h = Address.parse(host or "0000:00:00.0")
        _S(src, "address", domain=f"0x{h.domain:04x}", bus=f"0x{h.bus:02x}", slot=f"0x{h.slot:02x}",
           function=f"0x{h.function:x}")
    else:  # pragma: no cover - the device table and this function go together
        raise AssertionError(f"no XML for element {k.element}")
    _S(el, "alias", name=f"ua-{name}")
    if acpi_index is not None:  # the NIC's stable name in the guest (systemd: enoN)
        _S(el, "acpi", index=str(acpi_index))
    if address is not None:
        _address(el, address, multifunction)
    return el


def implicit_element(kind_name: str, address: Address, family: str, *, primary: bool = False) -> etree._Element:
    """A device libvirt would add at define (a balloon, a USB controller...), written out at ``address``."""
    el = device_element("implicit", kind_name, address, primary=primary)
    alias = el.find("alias")
    if alias is not None:
        el.remove(alias)
    return el


def _disk_letters(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def controllers_element(plan: Plan) -> etree._Element:
    devices = _E("devices")
    for c in plan.layout.controllers:
        devices.append(_controller(c, plan.layout.family))
    return devices


def domain_element(plan: Plan) -> etree._Element:
    p = plan.problem
    rules = rules_for(p.family, p.target)
    dom = _E("domain", type=p.virt_type)
    _S(dom, "name").text = p.name
    _S(dom, "memory", unit="MiB").text = str(p.memory_mib)
    _S(dom, "vcpu").text = str(p.vcpus)
    # UEFI by libvirt's own choice of loader (firmware autoselection, libvirt 5.2); the BIOS is the default
    os_ = _S(dom, "os", firmware="efi") if plan.layout.firmware == "efi" else _S(dom, "os")
    _S(os_, "type", arch=p.arch, machine=p.machine).text = "hvm"
    if plan.layout.acpi:
        _S(_S(dom, "features"), "acpi")
    if p.numa:
        # libvirt wants every controller's <node> to be a cell here; the cells' vCPUs and
        # memory were checked against <vcpu> and <memory> when the spec was read.
        numa = _S(_S(dom, "cpu"), "numa")
        for i, cell in enumerate(p.numa):
            _S(numa, "cell", id=str(i), cpus=cell.cpus, memory=str(cell.memory_mib), unit="MiB")
    devices = controllers_element(plan)
    _pcihole64(devices, plan.layout.pcihole64)
    dom.append(devices)
    counters: dict[str, int] = {}
    present = set()
    for placed in plan.layout.placed:
        ep = placed.endpoint
        k = device_kind(ep.kind)
        group = "disk" if k.element == "disk" else k.element
        index = counters.get(group, 0)
        counters[group] = index + 1
        present.add(k.element)
        if ep.parts and placed.address is not None:
            # a multifunction group: one element per function of its slot, function 0 first and marked
            a = placed.address
            for f, (name, host) in zip(ep.functions, ep.parts):
                if f != ep.functions[0]:
                    index = counters[group]
                    counters[group] = index + 1
                devices.append(device_element(name, ep.kind, Address(a.bus, a.slot, a.function + f - ep.functions[0],
                                                                     a.domain), index=index, host=host,
                                              guest=p.name, multifunction=placed.multifunction and f == 0))
            continue
        devices.append(device_element(ep.name, ep.kind, placed.address, index=index, host=ep.host, guest=p.name,
                                      primary=ep.fixed_role == "primary-video"
                                      or (k.video and counters[group] == 1),
                                      multifunction=placed.multifunction, acpi_index=ep.acpi_index))
    # Switched off in the spec: say so, or libvirt adds them again.
    if "usb" in rules.implicit and "usb" not in present:
        _S(devices, "controller", type="usb", model="none")
    if "memballoon" not in present:
        _S(devices, "memballoon", model="none")
    return dom


def _pcihole64(devices: etree._Element, kib: int | None) -> None:
    """The 64-bit PCI hole the plan sized, on the root controller (pci-root, pcie-root)."""
    if kib is None:
        return
    for el in devices.iterfind("controller[@type='pci']"):
        if el.get("index") == "0":
            _S(el, "pcihole64", unit="KiB").text = str(kib)
            return


def render_domain(plan: Plan) -> str:
    """The complete domain XML of a plan, as text."""
    return _tostring(domain_element(plan))


def _tostring(el: etree._Element) -> str:
    etree.indent(el, space="  ")
    return etree.tostring(el, encoding="unicode") + "\n"
