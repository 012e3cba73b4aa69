"""A small max-flow: demands on one side, pools of positions on the other.

The networks are tiny (a handful of demands and pools), so augmenting paths
found by breadth-first search are plenty.  Besides the flow value it returns the
minimum cut's demand and pool side: the demands that cannot all be met and the
pools they exhausted, which is what an infeasibility explanation names.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Protocol


class _Demand(Protocol):
    key: str
    amount: int
    pools: frozenset[str]


def max_flow(demands: Iterable[_Demand], pools: dict[str, int]) -> tuple[int, tuple[set[str], set[str]]]:
    """Route demand amounts into pool capacities; return (flow, (short demands, full pools))."""
    demands = list(demands)
    src, sink = "<src>", "<sink>"
    cap: dict[str, dict[str, int]] = {src: {}, sink: {}}

    def edge(a: str, b: str, c: int) -> None:
        cap.setdefault(a, {})
        cap.setdefault(b, {})
        cap[a][b] = cap[a].get(b, 0) + c
        cap[b].setdefault(a, 0)

    big = sum(d.amount for d in demands) + 1
    for d in demands:
        edge(src, "d:" + d.key, d.amount)
        for p in sorted(d.pools):
            if pools.get(p, 0) > 0:
                edge("d:" + d.key, "p:" + p, big)
    for p, c in pools.items():
        if c > 0:
            edge("p:" + p, sink, c)

    flow = 0
    while True:
        parent = {src: None}
        queue = deque([src])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, c in cap[u].items():
                if c > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            break
        # bottleneck along the path
        v, push = sink, big
        while parent[v] is not None:
            push = min(push, cap[parent[v]][v])
            v = parent[v]
        v = sink
        while parent[v] is not None:
            u = parent[v]
            cap[u][v] -= push
            cap[v][u] += push
            v = u
        flow += push
    # The source side of the residual graph is the min cut.
    reach = set(parent)
    short = {n[2:] for n in reach if n.startswith("d:")}
    full = {n[2:] for n in reach if n.startswith("p:")}
    if not short:
        full = set()
    return flow, (short, full)
