"""Step 3 of the prediction: libvirt's two assignment passes (qemuDomainAssignPCIAddresses).

Both passes build an address set from the controller list, collect the
addresses the definition already has, apply the chipset's fixed and preferred
addresses, and place every device without one in libvirt's category order
(:func:`place_devices`).  They differ in what they keep:

* the **dry run** may grow the set when a device finds no room, and only
  counts: it writes no address it found (virDomainPCIAddressReserveNextAddr
  leaves a dry run's device alone), but the addresses the chipset step and the
  USB2 companions write into the definition stay.  On a machine whose root bus
  is pci-root (pc, pSeries) one conventional slot is taken before the devices,
  so that a guest whose devices fill the root bus gets a bridge (or PHB) for
  later; on a pcie-root machine whose XML has no PCI controller but the root,
  one PCI Express slot is taken after the devices when any bus was added: the
  one spare root port.  Every bus index no controller has then gets one,
  appended to the controller list (gaps too), placed like any controller.
* the **real pass** rebuilds the set from the now complete controller list (a
  root port grown for a pcie-to-pci-bridge is an ordinary one now), places
  controllers first, then the devices, and writes every address; no growth.

Finally libvirt fills in what the controllers' ``<target>`` lacks: chassisNr
and chassis = the index, a root port's port = slot * 8 + function, a
downstream port's = its slot, an expander's busNr = the lowest busNr so far
minus 2 (254 for the first), a PHB's target index = 0 for index 0, else the
lowest unused from 1.
"""

from __future__ import annotations

from ...model import Address, Connect
from ...rules import BusRule
from .addresses import AddressSet, DefineError
from .definition import PCI_CATEGORY, Definition, Item

__all__ = ["assign"]

# The preferred slots of the first two USB2 sets (the q35 table's rows; none on other machines).
USB2_ROLES = ("usb2-1", "usb2-2")


def assign(defn: Definition) -> None:
    """Run both passes over ``defn``: afterwards every item that takes a PCI address has one, and every
    bus index has a controller.  Raise :class:`DefineError` where libvirt refuses the guest."""
    dry = _pass(defn, dry=True, nbuses=defn.max_index + 1)
    _add_controllers(defn, dry)
    _pass(defn, dry=False, nbuses=dry.nbuses)
    _targets(defn)


def _pass(defn: Definition, *, dry: bool, nbuses: int) -> AddressSet:
    rules = defn.rules
    aset = AddressSet(rules, dry)
    for c in defn.pci_controllers:
        aset.set_bus(c.index, c.rule, locked=c.rule.isolation == "locked")
    for i in range(nbuses):
        if i >= aset.nbuses or aset.buses[i] is None:
            aset.set_bus(i, aset.default_rule())  # a gap: the family's default model
    _collect(defn, aset)
    _chipset(defn, aset)
    root = rules.bus(rules.root)
    if dry and root.auto_endpoints and not aset.fully_reserved():
        # a pci-root machine keeps one conventional slot for a later bridge (a dummy, never written)
        aset.next(Connect.PCI_DEVICE)
    place_devices(defn, aset)
    if dry and Connect.ROOT_PORT in root.accepts and defn.max_index <= 0 and aset.nbuses > defn.max_index + 1:
        # the one spare root port: only when the XML had no PCI controller but the root and buses were added
        aset.next(Connect.PCIE_DEVICE)
    return aset


def _collect(defn: Definition, aset: AddressSet) -> None:
    """Take every address the definition has (qemuDomainCollectPCIAddress), in libvirt's iteration
    order; in the dry run an address on a bus nobody provides grows the set (and may move)."""
    fixed = defn.rules.fixed
    for it in defn.iterate:
        if it.address is None:
            continue
        role = it.kind.role if it.kind is not None else None
        if role in ("ide", "piix3-usb") and role in fixed and it.index == 0 and it.address == fixed[role].address:
            continue  # PIIX3's own functions: the chipset step takes them
        connect = it.connect or Connect.PCI_DEVICE  # an address on a device libvirt gives none: kept as PCI
        it.address = aset.reserve(it.address, connect, group=it.group, aggregate=it.aggregate)


def _write(it: Item, address: Address, aset: AddressSet) -> None:
    if not aset.dry:
        it.address = address


def _chipset(defn: Definition, aset: AddressSet) -> None:
    """qemuDomainValidateDevicePCISlotsQ35 / ...PIIX3, as the family's fixed roles: the controllers'
    forced and preferred addresses in list order, the chipset's reserved slots, the primary video, the
    first ich9 sound.  These addresses are written into the definition in both passes."""
    rules = defn.rules
    fixed = rules.fixed
    if not fixed and not rules.reserved_root_slots:
        return
    usb2 = [fixed[r].address for r in USB2_ROLES if r in fixed]
    for c in defn.controllers:
        role = c.kind.role if c.kind is not None else None
        if c.ctype == "pci" and c.model in fixed and c.address is None and c.untyped:
            pref = fixed[c.model].address  # dmi-to-pci-bridge: 00:1e.0 if free
            if not aset.bus(0).used.get(pref.slot):
                c.address = aset.reserve(pref, c.connect)
        elif role in fixed and c.index == 0:
            want = fixed[role].address  # SATA 0 at 00:1f.2, IDE 0 at 00:01.1, PIIX3 USB 0 at 00:01.2
            if c.address is not None and c.address != want:
                raise DefineError(f"{c.ctype} controller {c.index} must have PCI address {want}")
            if role == "sata":
                c.address = want  # written, not reserved: the slot is the chipset's anyway (1f.0 below)
            else:
                c.address = aset.reserve(want, Connect.PCI_DEVICE)  # PIIX3's functions (not collected)
        elif usb2 and c.function == 0 and c.address is None and c.untyped:
            for pref in usb2:  # the first USB2 sets: 00:1d, then 00:1a, if free; not insisted on
                if not aset.bus(0).used.get(pref.slot):
                    c.address = aset.reserve(pref, c.connect)
                    break
    for slot, _ in rules.reserved_root_slots:
        aset.reserve(Address(0, slot, 0), Connect.PCI_DEVICE)  # LPC / ISA bridge: the slot is in use
    primary = fixed.get("primary-video")
    videos = defn.videos  # every <video>, the first is the primary one (even model='none', which takes none)
    if primary is not None and videos and videos[0].connect is not None and videos[0].address is None:
        video = videos[0]
        if aset.bus(0).used.get(primary.address.slot):
            _write(video, aset.next(video.connect, group=video.group), aset)
        else:
            video.address = aset.reserve(primary.address, video.connect)
    sound = fixed.get("ich9-sound")
    if sound is not None and not aset.bus(0).used.get(sound.address.slot):
        for s in defn.categories.get(_category("ich9-hda"), []):
            if s.kind is not None and s.kind.name == "ich9-hda" and s.address is None and s.connect is not None:
                s.address = aset.reserve(sound.address, s.connect)
                break


def _category(kind: str) -> int:
    from ...rules.devices import KINDS

    return KINDS[kind].category


def place_devices(defn: Definition, aset: AddressSet) -> None:
    """qemuDomainAssignDevicePCISlots: PCI controllers (not the roots), then every category in order,
    each in libvirt's order; a USB2 companion joins the slot of an addressed member of its set."""
    for category in sorted(defn.categories):
        for it in defn.categories[category]:
            if it.address is not None or it.connect is None:
                continue
            if category == PCI_CATEGORY:
                if it.rule is None or it.rule.root:
                    continue
                _write(it, aset.next(it.connect, aggregate=it.aggregate), aset)
            elif it.ctype == "ide" and it.index == 0:
                continue  # the first IDE controller is the chipset's (pc); libvirt never places it
            elif it.function is not None:
                _usb2(defn, it, aset)
            else:
                _write(it, aset.next(it.connect, group=it.group, integrated=it.integrated), aset)


def _usb2(defn: Definition, it: Item, aset: AddressSet) -> None:
    for other in defn.controllers:
        if other.function is not None and other.index == it.index and other.address is not None:
            address = Address(other.address.bus, other.address.slot, it.function)
            it.address = aset.reserve(address, it.connect, group=it.group)  # written in both passes
            return
    _write(it, aset.next(it.connect, group=it.group, function=it.function), aset)


def _add_controllers(defn: Definition, dry: AddressSet) -> None:
    """The end of the dry run: a controller for every bus index the definition lacks (gaps and grown
    buses), appended to the controller list, each given an address in the dry set (which may grow it)."""
    have = {c.index for c in defn.pci_controllers}
    i = 1
    while i < dry.nbuses:
        if i not in have:
            bus = dry.bus(i)
            rule: BusRule = bus.rule
            c = Item("controller", None, None, PCI_CATEGORY, rule.connect, ctype="pci", index=i, model=rule.model,
                     rule=rule, aggregate=rule.packs > 1, added="bus")
            defn.controllers.append(c)
            defn.categories[PCI_CATEGORY].append(c)
            have.add(i)
            if not rule.root:
                dry.next(rule.connect, aggregate=c.aggregate)
        i += 1


def _targets(defn: Definition) -> None:
    """What libvirt fills in after the real pass (qemuDomainAssignPCIAddresses), and its last check."""
    phb_targets = {c.target["index"] for c in defn.pci_controllers if "index" in c.target}
    for c in defn.pci_controllers:
        rule, t, a = c.rule, c.target, c.address
        if "chassisNr" in rule.target:
            t.setdefault("chassisNr", c.index)
        if "chassis" in rule.target:
            t.setdefault("chassis", c.index)
        if "port" in rule.target and a is not None:
            # a root port (it packs functions): slot * 8 + function; a downstream port: its slot
            t.setdefault("port", a.slot * 8 + a.function if rule.packs > 1 else a.slot)
        if "busNr" in rule.target and "busNr" not in t:
            lowest = min([x.target["busNr"] for x in defn.pci_controllers if "busNr" in x.target] + [256])
            if lowest <= 2:
                raise DefineError(f"No free busNr lower than current lowest busNr is available to auto-assign to "
                                  f"bus {a.bus if a else 0}. Must be manually assigned")
            t["busNr"] = lowest - 2
        if "index" in rule.target and "index" not in t:
            if c.index == 0:
                t["index"] = 0
            else:
                free = next((n for n in range(1, 32) if n not in phb_targets), None)
                if free is None:
                    raise DefineError(f"No usable target index found for {a.bus if a else 0}")
                t["index"] = free
                phb_targets.add(free)
        if rule.connect == Connect.PCI_BRIDGE and a is not None and c.index <= a.bus:
            raise DefineError(f"PCI controller at index {c.index} (0x{c.index:02x}) has bus='0x{a.bus:02x}', "
                              "but index must be larger than bus")
