"""Step 2 of the prediction: libvirt's PCI address set, its first-fit search and its growth.

One :class:`AddressSet` is what domain_addr.c calls a virDomainPCIAddressSet:
one bus per PCI controller index, each with the slots its controller model
offers (the family's :class:`~topo_solve.rules.BusRule` rows) and, per slot,
which of the eight functions are taken.  What a bus takes follows libvirt's
connect flags (virDomainPCIAddressFlagsCompatible): a controller plugs into any
bus that accepts its kind; an endpoint only into buses that take auto-placed
endpoints (never pcie-root, a dmi-to-pci-bridge or a switch's upstream port);
an integrated device (virtio-iommu) only into bus 0.

First fit (virDomainPCIAddressGetNextAddr): buses in index order, slots from
the lowest; a slot is free only when all its functions are, except that a
pcie-root-port takes a free function of a slot whose first user was also a
root port; so an empty lower slot wins over the free functions of a higher
one.  On pSeries a device first looks only at buses of its own isolation group,
then at empty buses that are not locked.

In the dry run only, a device with no room grows the set
(virDomainPCIAddressSetGrow): a pcie-root-port for a PCI Express device; for a
conventional one a pci-bridge, or on pSeries a new PHB, or on a pure PCI Express
guest a pcie-root-port that takes nothing but a pcie-to-pci-bridge, plus that
bridge.  In the real pass a device with no room is libvirt's "No more
available PCI slots".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...model import Address, Connect
from ...rules import BusRule, RuleSet

__all__ = ["AddressSet", "Bus", "DefineError"]

ENDPOINTS = frozenset({Connect.PCI_DEVICE, Connect.PCIE_DEVICE})


class DefineError(Exception):
    """What libvirt would answer ``virsh define`` with: the guest cannot be defined as written."""


@dataclass(eq=False)
class Bus:
    """One bus of the set: its controller's row, the functions used per slot."""

    rule: BusRule
    only: frozenset[Connect] | None = None  # a grown root port that takes nothing but a pcie-to-pci-bridge
    group: int = 0  # isolation group: set by the first device on an empty bus
    locked: bool = False  # the default PHB keeps group 0 (qemuDomainSetupIsolationGroups)
    used: dict[int, int] = field(default_factory=dict)  # slot -> bitmask of functions taken
    aggregate: set[int] = field(default_factory=set)  # slots whose first user was a root port
    # slots are only ever taken: the lowest empty one only moves up (keeps first fit linear)
    lowest_empty: int = -1
    slots_used: int = 0

    def __post_init__(self) -> None:
        self.lowest_empty = self.rule.slots[0]

    @property
    def accepts(self) -> frozenset[Connect]:
        return self.only if self.only is not None else self.rule.accepts

    def empty(self) -> bool:
        return self.slots_used == 0

    def full(self) -> bool:
        return self.lowest_empty > self.rule.slots[1]

    def take(self, slot: int, function: int) -> None:
        lo, hi = self.rule.slots
        if not self.used.get(slot) and lo <= slot <= hi:
            self.slots_used += 1
        self.used[slot] = self.used.get(slot, 0) | (1 << function)
        while self.lowest_empty <= hi and self.used.get(self.lowest_empty):
            self.lowest_empty += 1


class AddressSet:
    """The PCI buses of one assignment pass (see the module docstring)."""

    def __init__(self, rules: RuleSet, dry: bool):
        self.rules = rules
        self.dry = dry
        self.buses: list[Bus | None] = []
        by_connect = {b.connect: b for b in rules.buses.values() if b.addable and not b.root}
        # what growth adds (virDomainPCIAddressSetGrow): a PHB where a guest may have several root
        # buses (pSeries), else pci-bridges; root ports for PCI Express devices; on a pure PCI
        # Express guest a root port with a pcie-to-pci-bridge for the first conventional device
        extra_roots = [b for b in rules.buses.values() if b.root and b.addable]
        self.extra_root: BusRule | None = extra_roots[0] if extra_roots else None
        self.root_port = by_connect.get(Connect.ROOT_PORT)
        self.pci_bridge = by_connect.get(Connect.PCI_BRIDGE)
        self.pcie_to_pci = by_connect.get(Connect.PCIE_TO_PCI_BRIDGE)

    # -- buses ------------------------------------------------------------------------------------------

    @property
    def nbuses(self) -> int:
        return len(self.buses)

    def set_bus(self, index: int, rule: BusRule, *, locked: bool = False) -> None:
        while len(self.buses) <= index:
            self.buses.append(None)
        self.buses[index] = Bus(rule, locked=locked)

    def default_rule(self) -> BusRule:
        """The model of a bus index no controller has (qemuDomainPCIAddressSetCreate): a PHB on pSeries,
        a pcie-root-port under pcie-root, else a pci-bridge."""
        if self.extra_root is not None:
            return self.extra_root
        if self.root_port is not None and Connect.ROOT_PORT in self.rules.bus(self.rules.root).accepts:
            return self.root_port
        return self.pci_bridge

    def bus(self, index: int) -> Bus:
        b = self.buses[index]
        assert b is not None
        return b

    # -- compatibility --------------------------------------------------------------------------------------

    def _fits(self, index: int, bus: Bus, connect: Connect, *, integrated: bool) -> bool:
        """Whether an auto-placed ``connect`` may go on ``bus`` (virDomainPCIAddressFlagsCompatible,
        not fromConfig).  Endpoints carry libvirt's AUTOASSIGN flag, controllers do not."""
        accepts = bus.accepts
        auto = bus.only is None and bus.rule.auto_endpoints
        if integrated:
            if index != 0:
                return False
            # on bus 0 an integrated device is auto-placed even on pcie-root, whose own type (a PCI
            # Express endpoint) it has: the row's manual set holds it
            auto, accepts = True, accepts | bus.rule.manual
        if connect in ENDPOINTS and not auto:
            return False
        return connect in accepts

    # -- reserving --------------------------------------------------------------------------------------

    def reserve(self, address: Address, connect: Connect, *, group: int = 0, aggregate: bool = False,
                from_config: bool = True) -> Address:
        """Take one function (virDomainPCIAddressReserveAddrInternal); in the dry run an address on a
        bus beyond the set first grows it, which may move the address one bus up (see :meth:`grow`).
        Returns the address taken."""
        if self.dry:
            address = self.grow(address, connect)
        if address.bus >= self.nbuses or self.buses[address.bus] is None:
            raise DefineError(f"Invalid PCI address {address}. Only PCI buses up to {self.nbuses - 1} "
                              "are available")
        bus = self.bus(address.bus)
        lo, hi = bus.rule.slots
        if not lo <= address.slot <= hi:
            raise DefineError(f"Invalid PCI address {address}. slot must be >= {lo}" if address.slot < lo
                              else f"Invalid PCI address {address}. slot must be <= {hi}")
        used = bus.used.get(address.slot, 0)
        if used & (1 << address.function):
            raise DefineError(f"Attempted double use of PCI Address {address}")
        if not used and aggregate:
            bus.aggregate.add(address.slot)
        if bus.empty() and not bus.locked:
            bus.group = group  # the first device decides the bus's isolation group
        elif bus.group != group and from_config:
            bus.group = 0  # a written address overrides isolation
        bus.take(address.slot, address.function)
        return address

    def next(self, connect: Connect, *, group: int = 0, aggregate: bool = False, integrated: bool = False,
             function: int = -1) -> Address:
        """Find and take the first free address (virDomainPCIAddressReserveNextAddr)."""
        address = self.find(connect, group=group, aggregate=aggregate, integrated=integrated, function=function)
        return self.reserve(address, connect, group=group, aggregate=aggregate, from_config=False)

    def find(self, connect: Connect, *, group: int, aggregate: bool, integrated: bool, function: int) -> Address:
        fn = 0 if function == -1 else function
        for strict in (True, False):
            for index, bus in enumerate(self.buses):
                if bus is None:
                    continue
                if strict and bus.group != group:
                    continue
                if not strict and (not bus.empty() or bus.locked):
                    continue
                if not self._fits(index, bus, connect, integrated=integrated):
                    continue
                found = self._free_on(bus, fn, function, aggregate)
                if found is not None:
                    return Address(index, found[0], found[1])
        if not self.dry:
            raise DefineError("No more available PCI slots")
        address = self.grow(Address(self.nbuses, 0, fn), connect)
        return Address(address.bus, self.bus(address.bus).rule.slots[0], fn)

    @staticmethod
    def _free_on(bus: Bus, fn: int, function: int, aggregate: bool) -> tuple[int, int] | None:
        """virDomainPCIAddressFindUnusedFunctionOnBus."""
        lo, hi = bus.rule.slots
        if not aggregate or not bus.aggregate:
            return (bus.lowest_empty, fn) if bus.lowest_empty <= hi else None  # the first empty slot
        for slot in range(lo, hi + 1):
            used = bus.used.get(slot, 0)
            if not used:
                return slot, fn
            if aggregate and slot in bus.aggregate:
                if not used & (1 << fn):
                    return slot, fn
                if function == -1:
                    for f in range(fn, 8):
                        if not used & (1 << f):
                            return slot, f
        return None

    def fully_reserved(self) -> bool:
        return all(b.full() for b in self.buses if b is not None)

    # -- growth (dry run) --------------------------------------------------------------------------------------

    def grow(self, address: Address, connect: Connect) -> Address:
        """Add the buses ``address`` needs (virDomainPCIAddressSetGrow); returns the address, one bus up
        when a pure PCI Express guest first needs a conventional slot (root port + pcie-to-pci-bridge)."""
        add = address.bus - self.nbuses + 1
        if add <= 0:
            return address
        added: list[tuple[BusRule, frozenset[Connect] | None]]
        if connect == Connect.PCI_DEVICE:
            if self.extra_root is not None:
                added = [(self.extra_root, None)] * add
            else:
                need = self.pcie_to_pci is not None and not any(
                    b is not None and Connect.PCI_BRIDGE in b.accepts for b in self.buses)
                if need and add == 1:
                    add += 1
                    address = Address(address.bus + 1, address.slot, address.function, address.domain)
                if need:
                    added = [(self.root_port, frozenset({Connect.PCIE_TO_PCI_BRIDGE})), (self.pcie_to_pci, None)]
                    added += [(self.pci_bridge, None)] * (add - 2)
                else:
                    added = [(self.pci_bridge, None)] * add
        elif connect in (Connect.PCIE_DEVICE, Connect.SWITCH_UPSTREAM) and self.root_port is not None:
            added = [(self.root_port, None)] * add
        else:
            model = next((b.model for b in self.rules.buses.values() if b.connect == connect), None)
            if model is not None:
                raise DefineError(f"a PCI slot is needed to connect a PCI controller model='{model}', but none "
                                  "is available, and it cannot be automatically added")
            raise DefineError(f"Cannot automatically add a new PCI bus for a device that plugs in as {connect}")
        for rule, only in added:
            if rule is None:
                raise DefineError(f"no controller model of {self.rules.family} can give a {connect} a slot")
            self.buses.append(Bus(rule, only=only))
        return address
