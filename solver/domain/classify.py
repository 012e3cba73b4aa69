"""Which device model an element of ``<devices>`` is, by the rows of the device table.

libvirt decides what needs a PCI address from the element and its model
(qemu_domain_address.c, qemuDomainDeviceCalculatePCIConnectFlags); the rows of
:mod:`topo_solve.rules.devices` say the same as data (``DeviceKind.match``).
This module only looks values up: the element's own attributes, or the
family's default for a value the element leaves out (libvirt fills it in at
define: an ``<interface>`` without ``<model>`` is rtl8139 on x86, virtio on
aarch64).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from ..rules import DeviceKind, RuleSet
from ..rules.devices import PCI_TAGS, ROWS

__all__ = ["Classified", "classify", "pseudo_tag", "NOT_PCI_ADDRESSES"]

# Address types that are not PCI: the element has its place elsewhere (formatdomain "Device Addresses").
# Any other type but pci libvirt refuses at define (measured 9.0: "unknown address type 'none'", and
# 's390' too; 'virtio-s390' is known).
NOT_PCI_ADDRESSES = frozenset({"virtio-mmio", "spapr-vio", "ccw", "isa", "usb", "drive", "virtio-serial", "ccid",
                               "dimm", "unassigned", "virtio-s390"})

# A disk without target/@bus takes the bus its device name implies (virDomainDiskDefParseXML).
_DISK_PREFIX = (("vd", "virtio"), ("xvd", "xen"), ("sd", "scsi"), ("hd", "ide"), ("fd", "fdc"), ("ubd", "uml"))

_BY_TAG: dict[str, list[DeviceKind]] = {}
for _row in ROWS:
    _BY_TAG.setdefault(_row.element, []).append(_row)


@dataclass(frozen=True)
class Classified:
    """An element's reading: its row (None when no row matches a PCI-taking tag), and why not."""

    kind: DeviceKind | None
    tag: str  # the pseudo tag the rows use: a <controller> goes by its type
    unknown: str = ""  # what the tables do not know, in the element's words ("<interface> model 'foo'")


def pseudo_tag(el: etree._Element) -> str:
    """The name the device table files an element under: ``<controller type='usb'>`` is ``usb``."""
    return el.get("type", "") if el.tag == "controller" else str(el.tag)


def _value(el: etree._Element, path: str) -> str | None:
    *steps, attr = path.split("/")
    node = el
    for step in steps:
        node = node.find(step)
        if node is None:
            return None
    return node.get(attr[1:]) if attr.startswith("@") else node.text


def _default(el: etree._Element, tag: str, path: str, rules: RuleSet) -> str:
    if tag == "disk" and path == "target/@bus":
        dev = _value(el, "target/@dev") or ""
        for prefix, bus in _DISK_PREFIX:
            if dev.startswith(prefix):
                return bus
        return ""
    return rules.element_defaults.get(f"{tag} {path}", "")


def classify(el: etree._Element, rules: RuleSet) -> Classified:
    """The device model of one child of ``<devices>`` on this family.

    ``kind`` None and ``unknown`` empty: the element takes no PCI address (a tag no row
    names, or an address of another type).  ``unknown`` set: a tag where libvirt gives
    some models a PCI address, with a model the table does not know."""
    tag = pseudo_tag(el)
    if tag not in PCI_TAGS:
        return Classified(None, tag)
    address = el.find("address")
    if address is not None and address.get("type") in NOT_PCI_ADDRESSES:
        return Classified(None, tag)
    for row in _BY_TAG[tag]:
        ok = True
        for path, values in row.match:
            actual = _value(el, path)
            if actual is None:
                actual = _default(el, tag, path, rules)
            if actual not in values and "*" not in values:
                ok = False
                break
        if ok:
            return Classified(row if row.cls is not None else None, tag)
    return Classified(None, tag, unknown=_describe(el, tag))


def _describe(el: etree._Element, tag: str) -> str:
    """The element as a user would name it, for 'unknown model' messages."""
    for path in ("model/@type", "@model", "target/@bus", "@type", "driver/@type"):
        v = _value(el, path)
        if v:
            what = path.rsplit("@", 1)[-1]
            return f"<{el.tag}{' type=' + repr(el.get('type')) if el.tag == 'controller' else ''}> {what} {v!r}"
    return f"<{el.tag}>"
