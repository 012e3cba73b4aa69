"""A picture of a topology: SVG written directly (no new dependency), or Graphviz dot.

One row per controller, device and group of free positions, indented under the bus it plugs
into (the root complex first, then what hangs from each slot in slot order), so a guest of 255
controllers is a tall picture, never an unreadable one.  Colours tell the controller kinds apart
(root buses, ports, switches, expander buses, bridges); free hotplug positions are dashed boxes
saying which classes they take; the subtree of each NUMA node's expander bus (or PHB) sits on a
band of its own.  Controllers the plan added are drawn with a thick border.

Every number comes from the layout and the verifier's report (:func:`topo_solve.verify.verify`):
nothing is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from ..model import HOTPLUG_CLASSES, Address, Connect, EndpointClass, Layout
from ..rules import RuleSet
from ..verify import Report, verify

__all__ = ["Row", "rows", "svg", "dot"]

# (stroke, fill) per kind of box
_STYLE = {
    "root": ("#263238", "#cfd8dc"),
    "port": ("#1565c0", "#e3f2fd"),
    "switch": ("#6a1b9a", "#f3e5f5"),
    "expander": ("#e65100", "#fff3e0"),
    "bridge": ("#00695c", "#e0f2f1"),
    "device": ("#424242", "#fafafa"),
    "free-pcie": ("#2e7d32", "#f1f8e9"),
    "free-pci": ("#b28704", "#fffde7"),
    "free-hostdev": ("#ad1457", "#fce4ec"),
}
_LEGEND = (("root", "root bus"), ("port", "port"), ("switch", "switch"), ("expander", "expander bus"),
           ("bridge", "bridge"), ("device", "device"), ("free-pcie", "free: pcie"), ("free-pci", "free: pci"),
           ("free-hostdev", "free: hostdev only"))
_NUMA_FILL = ("#fff8e1", "#e8f5e9", "#e1f5fe", "#fce4ec", "#ede7f6", "#f9fbe7", "#e0f7fa", "#efebe9")

ROW = 24  # px per row
BOX = 18  # px box height
INDENT = 26  # px per tree level
CHAR = 7.3  # px per character of 12 px DejaVu Sans Mono
LEFT = 16
TOP = 78  # below the title, the capacity line and the legend


@dataclass(frozen=True)
class Row:
    """One box of the picture."""

    depth: int
    kind: str  # a key of _STYLE
    label: str
    address: str  # "00:01.0", or "" for a root bus or free positions
    key: str  # a stable id: c<index>, d<n>, f<bus>
    parent: str | None
    node: int | None  # the NUMA node it belongs to
    added: bool = False
    index: int | None = None  # a controller's index


def _short(a: Address) -> str:
    return f"{a.bus:02x}:{a.slot:02x}.{a.function}"


def _kind(rules: RuleSet, model: str, index: int) -> str:
    rule = rules.rule_for(model, index)
    if rule is None or rule.root:
        return "root"
    if "busNr" in rule.target:
        return "expander"
    if rule.is_port:
        return "port"
    if Connect.SWITCH_DOWNSTREAM in rule.accepts:
        return "switch"
    return "bridge"


def _free_label(classes: frozenset[EndpointClass], n: int, port: bool) -> tuple[str, str]:
    names = ", ".join(str(c) for c in HOTPLUG_CLASSES if c in classes)
    style = ("free-pcie" if EndpointClass.PCIE in classes else "free-pci" if EndpointClass.PCI in classes
             else "free-hostdev")
    if port:
        return f"free: {names}", style
    return f"{n} free slot{'s' if n != 1 else ''}: {names}", style


def rows(layout: Layout, rules: RuleSet, report: Report | None = None,
         added: frozenset[int] = frozenset()) -> list[Row]:
    """The picture's rows, top to bottom (depth-first from each root bus, children in slot order)."""
    report = report or verify(layout, rules, strict_auto=False)
    children: dict[int, list[tuple[Address, str, object]]] = {}
    for c in layout.controllers:
        if c.address is not None:
            children.setdefault(c.address.bus, []).append((c.address, "c", c))
    for n, p in enumerate(layout.placed):
        if p.address is not None:
            children.setdefault(p.address.bus, []).append((p.address, "d", (n, p)))
    free: dict[int, dict[frozenset, int]] = {}
    for (bus, _), classes in report.positions.items():
        free.setdefault(bus, {})
        free[bus][classes] = free[bus].get(classes, 0) + 1
    isolated = set(report.empty_isolated)
    out: list[Row] = []

    def grow(index: int, depth: int, key: str) -> None:
        node = report.node_of.get(index)
        for addr, what, item in sorted(children.get(index, []), key=lambda t: (t[0].slot, t[0].function, t[1])):
            if what == "c":
                c = item
                k = f"c{c.index}"
                off = "" if c.hotplug else " (hotplug off)"  # a protected port: no headroom
                out.append(Row(depth, _kind(rules, c.model, c.index), f"{c.index} {c.model}{off}", _short(addr), k, key,
                               report.node_of.get(c.index), c.index in added, c.index))
                grow(c.index, depth + 1, k)
            else:
                n, p = item
                fns = len(p.endpoint.parts)  # a multifunction group of a spec: one row for its slot
                what = f"{p.endpoint.kind}, {fns} functions" if fns > 1 else p.endpoint.kind
                out.append(Row(depth, "device", f"{p.endpoint.name} ({what})", _short(addr), f"d{n}",
                               key, node))
        rule = rules.rule_for(model[index], index)
        for classes, n in sorted(free.get(index, {}).items(), key=lambda t: sorted(map(str, t[0]))):
            label, style = _free_label(classes, n, rule is not None and rule.is_port)
            out.append(Row(depth, style, label, "", f"f{index}-{len(out)}", key, node))
        if index in isolated:
            cls = ", ".join(str(c) for c in HOTPLUG_CLASSES if c in rules.isolated)
            out.append(Row(depth, "free-hostdev", f"empty bus: {cls}", "", f"f{index}-iso", key, node))

    model = {c.index: c.model for c in layout.controllers}
    for c in sorted((c for c in layout.controllers if c.address is None), key=lambda c: c.index):
        k = f"c{c.index}"
        out.append(Row(0, "root", f"{c.index} {c.model}", "", k, None, report.node_of.get(c.index),
                       c.index in added, c.index))
        grow(c.index, 1, k)
    return out


def _capacity(cap: dict) -> str:
    return "  ".join(f"{c} {cap.get(c, 0)}" for c in HOTPLUG_CLASSES)


def _capacity_line(report: Report) -> str:
    where = " (outside the NUMA nodes)" if report.node_capacity else ""
    return f"hotplug capacity{where}: {_capacity(report.capacity)}"


def _node_label(report: Report, node: int) -> str:
    return f"NUMA node {node}: {_capacity(report.node_capacity.get(node, {}))}"


def svg(layout: Layout, rules: RuleSet, title: str, *, report: Report | None = None,
        added: frozenset[int] = frozenset()) -> str:
    """The topology as an SVG document (see the module docstring)."""
    report = report or verify(layout, rules, strict_auto=False)
    rs = rows(layout, rules, report, added)
    caption = _capacity_line(report)
    width_of = {r.key: len(r.label) * CHAR + 16 for r in rs}
    x_of = {r.key: LEFT + r.depth * INDENT for r in rs}
    y_of = {r.key: TOP + i * ROW for i, r in enumerate(rs)}
    addr_x = max((x_of[r.key] + width_of[r.key] for r in rs), default=LEFT) + 12
    band_x = addr_x + 8 * CHAR + 16
    bands = max((len(_node_label(report, n)) * CHAR for n in report.node_capacity), default=0)
    legend = LEFT + sum(30 + int(len(text) * 6.7) for _, text in _LEGEND)
    width = int(max(band_x + bands + 16, LEFT + max(len(title), len(caption)) * CHAR, legend))
    height = TOP + len(rs) * ROW + 16
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, monospace" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    # NUMA bands: one per run of consecutive rows on one node
    run_start = None
    for i, r in enumerate(rs + [None]):
        node = r.node if r is not None else None
        prev = rs[i - 1].node if i > 0 else None
        if run_start is not None and (r is None or node != prev):
            y0, y1 = TOP + run_start * ROW - 3, TOP + i * ROW - 3
            fill = _NUMA_FILL[prev % len(_NUMA_FILL)]
            out.append(f'<rect class="numa" x="4" y="{y0}" width="{width - 8}" height="{y1 - y0}" rx="6" '
                       f'fill="{fill}" stroke="#bdbdbd" stroke-dasharray="3 3"/>')
            out.append(f'<text class="numa-label" x="{band_x}" y="{y0 + 15}" font-weight="bold" '
                       f'fill="#5d4037">{escape(_node_label(report, prev))}</text>')
            run_start = None
        if r is not None and node is not None and run_start is None:
            run_start = i
    out.append(f'<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{escape(title)}</text>')
    out.append(f'<text x="{LEFT}" y="44">{escape(caption)}</text>')
    lx = LEFT
    for key, text in _LEGEND:
        stroke, fill = _STYLE[key]
        dash = ' stroke-dasharray="4 2"' if key.startswith("free") else ""
        out.append(f'<rect x="{lx}" y="54" width="12" height="12" rx="2" fill="{fill}" stroke="{stroke}"{dash}/>')
        out.append(f'<text x="{lx + 16}" y="64" font-size="11">{escape(text)}</text>')
        lx += 16 + int(len(text) * 6.7) + 14
    # connectors: from the parent's left edge down, then across
    for r in rs:
        if r.parent is None:
            continue
        px, py = x_of[r.parent] + 10, y_of[r.parent] + BOX
        cy = y_of[r.key] + BOX // 2
        out.append(f'<path d="M{px} {py} V{cy} H{x_of[r.key]}" fill="none" stroke="#9e9e9e"/>')
    for r in rs:
        stroke, fill = _STYLE[r.kind]
        x, y, w = x_of[r.key], y_of[r.key], width_of[r.key]
        dash = ' stroke-dasharray="4 2"' if r.kind.startswith("free") else ""
        thick = 3 if r.added else 1.2
        ident = f' id="{r.key}"' if r.index is not None else ""
        out.append(f'<g class="{r.kind}"{ident}>')
        out.append(f'<rect x="{x}" y="{y}" width="{w:.0f}" height="{BOX}" rx="4" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="{thick}"{dash}/>')
        colour = "#000000" if not r.kind.startswith("free") else stroke
        out.append(f'<text x="{x + 8}" y="{y + 13}" fill="{colour}">{escape(r.label)}</text>')
        if r.address:
            out.append(f'<text x="{addr_x:.0f}" y="{y + 13}" fill="#757575">{escape(r.address)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def dot(layout: Layout, rules: RuleSet, title: str, *, report: Report | None = None,
        added: frozenset[int] = frozenset()) -> str:
    """The topology as a Graphviz digraph: the same rows as the SVG, one cluster per NUMA node."""
    report = report or verify(layout, rules, strict_auto=False)
    rs = rows(layout, rules, report, added)

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = [f"digraph {q(title)} {{",
           '  graph [rankdir=LR, labelloc=t, fontname="DejaVu Sans Mono", '
           f"label={q(title + chr(10) + _capacity_line(report))}];",
           '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans Mono", fontsize=10];',
           '  edge [color="#9e9e9e", arrowhead=none];']
    by_node: dict[int, list[str]] = {}
    for r in rs:
        stroke, fill = _STYLE[r.kind]
        label = r.label + (f"\\n{r.address}" if r.address else "")
        style = '"rounded,filled,dashed"' if r.kind.startswith("free") else '"rounded,filled"'
        width = 3 if r.added else 1
        out.append(f'  {q(r.key)} [label="{escape_dot(label)}", color="{stroke}", fillcolor="{fill}", style={style}, '
                   f"penwidth={width}];")
        if r.node is not None:
            by_node.setdefault(r.node, []).append(r.key)
    for r in rs:
        if r.parent is not None:
            out.append(f"  {q(r.parent)} -> {q(r.key)};")
    for node, keys in sorted(by_node.items()):
        out.append(f"  subgraph cluster_numa{node} {{")
        fill = _NUMA_FILL[node % len(_NUMA_FILL)]
        out.append(f'    label="{_node_label(report, node)}"; style="dashed,filled"; fillcolor="{fill}";')
        out.append("    " + " ".join(q(k) + ";" for k in keys))
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def escape_dot(label: str) -> str:
    """A label inside double quotes: backslash-n stays a line break, quotes are escaped."""
    return label.replace('"', '\\"')
