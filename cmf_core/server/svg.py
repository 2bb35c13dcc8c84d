"""The lineage drawing: where each node of the layered layout goes, and the SVG of it.

Used by the lineage page (inline, styled by ``ui/static/lineage.css``) and by its export
(``lineage.svg``, the same drawing with that stylesheet inside).  Written here rather than as a
template because a whole pipeline is 11,000 nodes: string formatting draws it in a tenth of the
time a template loop takes.  Every text that comes from metadata is escaped.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from markupsafe import Markup, escape

__all__ = ["draw", "render", "NODE_W", "NODE_H"]

# a node's box and the space around it
NODE_W, NODE_H, GAP_X, GAP_Y = 190, 34, 90, 16
#: Edges go into few <path> elements of many curves each: a browser lays out 15,000 edges as 30 elements far
#: faster than as 15,000.
EDGES_PER_PATH = 500
#: Above this many nodes the hover titles are left out: thousands more elements for the browser to lay out.
TITLES_UP_TO = 2000
LABEL_CHARS = 25


def draw(lineage: Dict[str, Any]) -> Dict[str, Any]:
    """The lineage with drawing coordinates: nodes' x/y (columns left to right, each centred) and edge paths."""
    sizes: Dict[int, int] = {}
    for node in lineage["nodes"]:
        sizes[node["layer"]] = max(sizes.get(node["layer"], 0), node["rank"] + 1)
    tallest = max(sizes.values(), default=1)
    where = {}
    for node in lineage["nodes"]:
        node["x"] = node["layer"] * (NODE_W + GAP_X) + 10
        node["y"] = int((node["rank"] + (tallest - sizes[node["layer"]]) / 2) * (NODE_H + GAP_Y)) + 10
        where[node["key"]] = node
    curves = []
    for edge in lineage["edges"]:
        a, b = where.get(edge["source"]), where.get(edge["target"])
        if a is None or b is None:
            continue
        x1, y1, x2, y2 = a["x"] + NODE_W, a["y"] + NODE_H // 2, b["x"], b["y"] + NODE_H // 2
        bend = max(30, (x2 - x1) // 2)
        curves.append(f"M{x1},{y1}C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}")
    paths = [" ".join(curves[i:i + EDGES_PER_PATH]) for i in range(0, len(curves), EDGES_PER_PATH)]
    width = (max(sizes, default=0) + 1) * (NODE_W + GAP_X) + 20
    height = tallest * (NODE_H + GAP_Y) + 20
    return {**lineage, "paths": paths, "width": width, "height": height}


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def render(drawing: Dict[str, Any], expand_link: Callable[[str], str], css: Optional[str] = None) -> Markup:
    """The SVG of a :func:`draw` result.  ``expand_link(key)`` is the address that shows one hop more around a
    node (its ``+``); ``css`` is embedded for a standalone file."""
    titles = len(drawing["nodes"]) <= TITLES_UP_TO
    out: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" viewBox="0 0 {drawing["width"]} '
        f'{drawing["height"]}" width="{drawing["width"]}" height="{drawing["height"]}" role="img" '
        f'aria-label="lineage of {escape(drawing["pipeline"])}">']
    if css is not None:
        out.append(f"<style>{escape(css)}</style>")
    out.append('<g class="viewport"><g class="edges">')
    out += [f'<path d="{d}"/>' for d in drawing["paths"]]
    out.append("</g>")
    for n in drawing["nodes"]:
        kind, key = n["kind"], escape(n["key"])
        title = f"<title>{escape(n['type'])}: {escape(n['name'])}</title>" if titles else ""
        out.append(
            f'<g class="node {kind} t-{escape(n["type"])}{" focus" if n["focus"] else ""}" '
            f'transform="translate({n["x"]},{n["y"]})" data-key="{key}">'
            f'<a href="/{kind}s/{n["id"]}">{title}<rect width="{NODE_W}" height="{NODE_H}" '
            f'rx="{4 if kind == "execution" else 12}"/><text x="10" y="21">{escape(_label(n["label"]))}</text></a>')
        if n["more"]:
            out.append(
                f'<a class="more" href="{escape(expand_link(n["key"]))}"><title>show one hop more around '
                f'{escape(n["label"])}</title><circle cx="{NODE_W}" cy="{NODE_H // 2}" r="9"/>'
                f'<text x="{NODE_W}" y="{NODE_H // 2 + 4}">+</text></a>')
        out.append("</g>")
    out.append("</g></svg>")
    return Markup("".join(out))
