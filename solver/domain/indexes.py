"""The order and the indexes libvirt gives the ``<controller>`` elements of a domain XML.

libvirt keeps the controllers in one list: each element goes next to those of
its type, sorted by index, a USB2 master before its companions of the same
index, one without an index after the last of its type
(domain_conf.c virDomainControllerInsertPreAlloced).  Then those without an
index are numbered in list order: the lowest index their type does not use,
except that a USB2 companion (ich9-uhci1-3, ich9-ehci1) joins the USB2
controller just before it in the list when no controller of its own model has
that index yet (domain_postparse.c virDomainAssignControllerIndexes).  So
virt-install's ``--controller usb2`` twice, eight elements without an index,
are the sets 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Iterable, TypeVar

__all__ = ["Ctl", "controller_list", "number"]

T = TypeVar("T")

# libvirt's IS_USB2_CONTROLLER: the ICH9 companions and their EHCI master
USB2_MODELS = frozenset({"ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3"})


@dataclass(eq=False)
class Ctl(Generic[T]):
    """One controller as the list sees it; ``ref`` is whatever the caller keeps for it."""

    ref: T
    ctype: str
    index: int | None
    model: str | None
    master: bool = True  # not a companion that names its master (<master startport=...>)

    @property
    def usb2(self) -> bool:
        return self.ctype == "usb" and self.model in USB2_MODELS


def _insert(out: list[Ctl], new: Ctl) -> None:
    at = -1
    for i in range(len(out) - 1, -1, -1):
        cur = out[i]
        if cur.ctype != new.ctype:
            continue
        if new.index is None:
            at = i + 1
            break
        cur_index = -1 if cur.index is None else cur.index
        if cur_index > new.index:
            at = i
        elif new.master and not cur.master and cur_index == new.index:
            at = i
        elif at == -1:
            at = i + 1
    if at == -1:
        out.append(new)
    else:
        out.insert(at, new)


def number(controllers: list[Ctl]) -> None:
    """Give every controller of the list without an index libvirt's (in place)."""
    for pos, c in enumerate(controllers):
        if c.index is not None:
            continue
        prev = None
        if pos > 0 and c.usb2:
            before = [x for x in controllers[:pos] if x.ctype == "usb"]
            prev = before[-1] if before and before[-1].usb2 else None
            if prev is not None and any(x.ctype == "usb" and x.index == prev.index and x.model == c.model
                                        for x in controllers):
                prev = None
        if prev is not None:
            c.index = prev.index
        else:
            used = {x.index for x in controllers if x.ctype == c.ctype and x.index is not None}
            c.index = min(i for i in range(len(used) + 1) if i not in used)


def controller_list(items: Iterable[Ctl]) -> list[Ctl]:
    """The items in libvirt's list order, each with its index."""
    out: list[Ctl] = []
    for c in items:
        _insert(out, c)
    number(out)
    return out
