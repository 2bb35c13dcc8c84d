"""The lineage drawing: where each node of the layered layout goes, and the SVG of it.

Used by the lineage page (inline, styled by ``ui/static/lineage.css``) and by its export
(``lineage.svg``, the same drawing with that stylesheet inside).  Written here rather than as a
template because a whole pipeline is 11,000 nodes: string formatting draws it in a tenth of the
time a template loop takes.  Every text that comes from metadata is escaped.

A node is a link to its page; beside it, a target (focus the lineage on it: ``.refocus``), a ``+`` in a
focused view (one hop more: ``.more``) and a badge for an artifact other pipelines use too (``.also``).
A cluster node links to its own view.  Edges between clusters are drawn one by one, as wide as the number
of edges they stand for, with that number; plain edges go into few paths (see :data:`EDGES_PER_PATH`).
An edge back (a cycle: a stage that reads what it wrote) loops under its nodes.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from markupsafe import Markup, escape

__all__ = ["draw", "render", "NODE_W", "NODE_H"]

# a node's box and the space around it
NODE_W, NODE_H, GAP_X, GAP_Y = 190, 34, 90, 16
#: Edges go into few <path> elements of many curves each: a browser lays out 15,000 edges as 30 elements far
#: faster than as 15,000.  The curves of a path start near each other (in :data:`EDGE_BLOCK` layers and ranks):
#: a browser paints only the paths that cross the screen, and a path across the whole drawing always does.
EDGES_PER_PATH = 500
EDGE_BLOCK = 4
#: Above this many nodes the hover titles and the targets are left out: thousands more elements for the
#: browser to lay out, and the labels cannot be read at the scale the whole drawing fits in anyway.
TITLES_UP_TO = 2000
LABEL_CHARS = 25
#: How far under its nodes an edge back loops.
LOOP = 36


def _curve(a: Dict[str, Any], b: Dict[str, Any]) -> Tuple[str, int, int]:
    """The path of an edge, and where its middle is.  An edge forward goes from the right side of a node to the
    left side of the next; one back (a stage that reads what it wrote, a cycle) loops under both nodes."""
    if b["x"] > a["x"]:
        x1, y1, x2, y2 = a["x"] + NODE_W, a["y"] + NODE_H // 2, b["x"], b["y"] + NODE_H // 2
        bend = max(30, (x2 - x1) // 2)
        return f"M{x1},{y1}C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}", (x1 + x2) // 2, (y1 + y2) // 2
    x1, y1, x2, y2 = a["x"] + NODE_W // 2 + 20, a["y"] + NODE_H, b["x"] + NODE_W // 2 - 20, b["y"] + NODE_H
    low = max(y1, y2) + LOOP
    return f"M{x1},{y1}C{x1},{low} {x2},{low} {x2},{y2}", (x1 + x2) // 2, low - LOOP // 4


def draw(lineage: Dict[str, Any]) -> Dict[str, Any]:
    """The lineage with drawing coordinates: nodes' x/y (columns left to right, each centred), the paths of
    plain edges and the counted edges between clusters (``counted``: path, count, where its number goes)."""
    sizes: Dict[int, int] = {}
    for node in lineage["nodes"]:
        sizes[node["layer"]] = max(sizes.get(node["layer"], 0), node["rank"] + 1)
    tallest = max(sizes.values(), default=1)
    where = {}
    for node in lineage["nodes"]:
        node["x"] = node["layer"] * (NODE_W + GAP_X) + 10
        node["y"] = int((node["rank"] + (tallest - sizes[node["layer"]]) / 2) * (NODE_H + GAP_Y)) + 10
        where[node["key"]] = node
    curves: Dict[Tuple[int, int], List[str]] = {}
    counted = []
    for edge in lineage["edges"]:
        a, b = where.get(edge["source"]), where.get(edge["target"])
        if a is None or b is None:
            continue
        d, x, y = _curve(a, b)
        if "count" in edge:
            counted.append({"d": d, "count": edge["count"], "source": a["label"], "target": b["label"], "x": x,
                            "y": y, "shown": a["kind"] == b["kind"] == "cluster"})
        else:
            curves.setdefault((a["layer"] // EDGE_BLOCK, a["rank"] // (EDGE_BLOCK * 8)), []).append(d)
    paths = [" ".join(block[i:i + EDGES_PER_PATH]) for block in curves.values()
             for i in range(0, len(block), EDGES_PER_PATH)]
    width = (max(sizes, default=0) + 1) * (NODE_W + GAP_X) + 20
    height = tallest * (NODE_H + GAP_Y) + 20 + LOOP  # room for the loops under the bottom row
    return {**lineage, "paths": paths, "counted": counted, "width": width, "height": height}


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def _also(node: Dict[str, Any], x: int, y: int) -> str:
    """The badge of an artifact that executions of other pipelines use or produce: a link to the first one's
    lineage focused on it; the title names them all."""
    others = node["also_in"]
    more = f" +{len(others) - 1}" if len(others) > 1 else ""
    href = f"/pipelines/{quote(others[0], safe='')}/lineage?focus={node['key']}"
    return (f'<a class="also" href="{escape(href)}"><title>also in {escape(", ".join(others))}</title>'
            f'<rect x="{x + NODE_W - 120}" y="{y - 9}" width="116" height="14" rx="7"/>'
            f'<text x="{x + NODE_W - 62}" y="{y + 2}">also in {escape(_label(others[0])[:14])}{more}</text></a>')


def render(drawing: Dict[str, Any], href: Callable[[str, str], str], css: Optional[str] = None) -> Markup:
    """The SVG of a :func:`draw` result.  ``href("go", key)`` is the address of the lineage focused on a node
    or opening a cluster, ``href("expand", key)`` the one that shows one hop more around a node (its ``+``);
    ``css`` is embedded for a standalone file.

    Each node's shapes are placed where it goes, not moved there by a ``transform`` of its group: a transform
    per node is one more piece for the browser to paint and composite apart, 11,000 of them a slow frame."""
    small = len(drawing["nodes"]) <= TITLES_UP_TO
    out: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" viewBox="0 0 {drawing["width"]} '
        f'{drawing["height"]}" width="{drawing["width"]}" height="{drawing["height"]}" role="group" '
        f'aria-label="lineage of {escape(drawing["pipeline"])}">']
    if css is not None:
        out.append(f"<style>{escape(css)}</style>")
    out.append('<g class="viewport"><g class="edges">')
    out += [f'<path d="{d}"/>' for d in drawing["paths"]]
    for e in drawing["counted"]:
        title = f"{e['count']:,} links from {e['source']} to {e['target']}"
        out.append(f'<path class="counted" d="{e["d"]}" stroke-width="{1.2 + 1.5 * math.log10(e["count"]):.1f}">'
                   f'<title>{escape(title)}</title></path>')
        if e["shown"]:  # between two clusters; many numbers around one node would be unreadable
            out.append(f'<text class="count" x="{e["x"]}" y="{e["y"] - 3}">{e["count"]:,}</text>')
    out.append("</g>")
    box = f'width="{NODE_W}" height="{NODE_H}"'
    for n in drawing["nodes"]:
        kind, key, x, y = n["kind"], escape(n["key"]), n["x"], n["y"]
        middle = y + NODE_H // 2
        if kind == "cluster":
            out.append(
                f'<g class="node cluster {n["of"]} t-{escape(n["type"])}" data-key="{key}" data-count="{n["count"]}">'
                f'<a href="{escape(href("go", n["key"]))}"><title>{escape(n["title"])}: {n["count"]:,} (open the '
                f'cluster)</title><rect class="stack" x="{x + 5}" y="{y - 5}" {box} rx="6"/>'
                f'<rect x="{x}" y="{y}" {box} rx="6"/><text x="{x + 10}" y="{y + 21}">{escape(_label(n["label"]))}'
                f'</text></a></g>')
            continue
        title = f"<title>{escape(n['type'])}: {escape(n['name'])}</title>" if small else ""
        classes = f"node {kind} t-{escape(n['type'])}{' focus' if n['focus'] else ''}{' member' if n['member'] else ''}"
        out.append(
            f'<g class="{classes}" data-key="{key}"><a href="/{kind}s/{n["id"]}">{title}'
            f'<rect x="{x}" y="{y}" {box} rx="{4 if kind == "execution" else 12}"/>'
            f'<text x="{x + 10}" y="{y + 21}">{escape(_label(n["label"]))}</text></a>')
        if small and not n["focus"]:
            out.append(f'<a class="refocus" href="{escape(href("go", n["key"]))}"><title>focus the lineage on '
                       f'{escape(n["label"])}</title><circle cx="{x}" cy="{middle}" r="8"/>'
                       f'<circle class="dot" cx="{x}" cy="{middle}" r="3"/></a>')
        if n["more"] and drawing["focus"]:
            out.append(
                f'<a class="more" href="{escape(href("expand", n["key"]))}"><title>show one hop more around '
                f'{escape(n["label"])}</title><circle cx="{x + NODE_W}" cy="{middle}" r="9"/>'
                f'<text x="{x + NODE_W}" y="{middle + 4}">+</text></a>')
        if n["also_in"]:
            out.append(_also(n, x, y))
        out.append("</g>")
    out.append("</g></svg>")
    return Markup("".join(out))
