"""A layered (Sugiyama-style) layout of a lineage graph, left to right.

Layers are the longest path from a source, so every edge points right; within a layer, nodes are
ordered by the barycenter of their neighbours in a few sweeps, which removes most crossings.
Cycles (an execution that reads and writes the same artifact) are broken by leaving out the back
edges a depth-first search finds.  Linear in nodes and edges per sweep: a 10,000-node pipeline lays
out in well under a second, where a browser-side layout library (dagre's network simplex) takes
many seconds; that is why the layout is computed here, not in JavaScript.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Tuple

__all__ = ["layout"]

SWEEPS = 4


def _acyclic(nodes: Sequence[str], edges: Iterable[Tuple[str, str]]) -> Dict[str, List[str]]:
    """Successor lists without the back edges of an iterative depth-first search."""
    successors: Dict[str, List[str]] = defaultdict(list)
    for a, b in edges:
        if a != b:
            successors[a].append(b)
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    kept: Dict[str, List[str]] = defaultdict(list)
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(successors[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                continue  # a back edge: it would close a cycle
            else:
                kept[node].append(child)
                if child not in state:
                    state[child] = 1
                    stack.append((child, iter(successors[child])))
    return kept


def _barycenter(node: str, neighbours: Dict[str, List[str]], position: Dict[str, float]) -> float:
    """The mean position of a node's neighbours in the layer swept from (its own position if it has none)."""
    near = neighbours.get(node)
    return sum(position[m] for m in near) / len(near) if near else position[node]


def layout(nodes: Sequence[str], edges: Iterable[Tuple[str, str]]) -> Dict[str, Tuple[int, int]]:
    """``{node: (layer, rank)}``: the column (0 at the sources) and the position within it (0 at the top)."""
    successors = _acyclic(nodes, edges)
    indegree: Dict[str, int] = {n: 0 for n in nodes}
    for a in successors:
        for b in successors[a]:
            indegree[b] += 1
    layer = {n: 0 for n in nodes}
    ready = [n for n in nodes if indegree[n] == 0]
    while ready:  # Kahn's order: a node's layer is final when its last predecessor is placed
        node = ready.pop()
        for child in successors[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    columns: Dict[int, List[str]] = defaultdict(list)
    for n in nodes:
        columns[layer[n]].append(n)
    predecessors: Dict[str, List[str]] = defaultdict(list)
    for a in successors:
        for b in successors[a]:
            predecessors[b].append(a)
    position: Dict[str, float] = {}

    def place(column: List[str]) -> None:
        middle = (len(column) - 1) / 2
        for rank, n in enumerate(column):
            position[n] = rank - middle

    for column in columns.values():
        place(column)
    order = sorted(columns)
    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        neighbours = predecessors if forward else successors
        for index in order if forward else reversed(order):
            column = columns[index]
            column.sort(key=lambda n, near=neighbours: _barycenter(n, near, position))
            place(column)
    return {n: (layer[n], rank) for column in columns.values() for rank, n in enumerate(column)}
