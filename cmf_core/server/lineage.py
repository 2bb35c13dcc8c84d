"""Lineage: the graph of a pipeline's artifacts and executions, whole or around one node, laid out in layers.

:class:`Lineage` answers the lineage page and its JSON twin (``/api/pipelines/{p}/lineage``) from the events
of ML Metadata's schema; :mod:`cmf_core.server.dag` lays it out and :mod:`cmf_core.server.svg` draws it.
Every piece of the state is in :class:`LineageQuery`, read from and written to the page's URL.

Above :data:`AGGREGATE_ABOVE` nodes a drawing is unreadable, so the view is aggregated: the executions of a
stage become one cluster node ("train · 200 runs", id ``runs:STAGE``) and artifacts one per type and the stage
that wrote them (``made:STAGE:TYPE``), or, for sources, the first stage that read them (``read:STAGE:TYPE``);
an edge between two clusters counts the edges it stands for.  ``cluster=ID`` opens one as a view of its own
(its members and their neighbours, the neighbours aggregated in turn when still too many; a cluster of more
members than that is cut into parts ``ID@1``, ``ID@2``...): a view of its own, rather than opened in place,
because the place of a 1,000-member cluster inside the whole pipeline is again an unreadable drawing, and a
view of its own has an address to come back to.  ``detail=all`` draws every node.
"""
from __future__ import annotations

import math
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from cmf_core.server import dag
from cmf_core.server.db import Session
from cmf_core.server.reads import (INPUTS, MAX_ID, OUTPUTS, BadRequest, NotFound, Reads, _ins, _like, _short, is_hash,
                                   plain_id)

__all__ = ["Lineage", "LineageQuery", "LINEAGE_VIEWS", "DIRECTIONS", "AGGREGATE_ABOVE"]

LINEAGE_VIEWS = ("both", "artifacts", "executions")
DIRECTIONS = ("both", "up", "down")
DETAILS = ("auto", "all")
#: Left out unless asked for (``extras=1``), as the original does: every execution uses the environment;
#: labels hang off datasets.
EXTRA_TYPES = ("Environment", "Label")
MAX_HOPS = 10
#: More nodes than this in a view, and it is drawn aggregated (a cluster node per stage and artifact group).
AGGREGATE_ABOVE = 300
MAX_TRAIL = 12
SEARCH_LIMIT = 20

_CLUSTER = re.compile(r"(?:(runs):(\d{1,18})|(made|read):(\d{1,18}):([^@]+))(?:@(\d{1,9}))?")


class Event(NamedTuple):
    """One MLMD event of the pipeline, with what aggregation needs: the execution's stage, the artifact's type."""

    execution: int
    artifact: int
    kind: int
    stage: int
    type: str


@dataclass(frozen=True)
class LineageQuery:
    """What a lineage view shows, as its URL says it.

    ``focus`` ("artifact:ID" / "execution:ID"): only what is within ``hops`` hops of it, up, down or both ways
    (``direction``), plus one hop around each node of ``expand``.  ``cluster``: one cluster's members and their
    neighbours.  ``trail``: the nodes and clusters focused on so far (the breadcrumbs).  ``q``: a search.
    """

    view: str = "both"
    focus: Optional[str] = None
    hops: int = 2
    direction: str = "both"
    expand: Tuple[str, ...] = ()
    cluster: Optional[str] = None
    detail: str = "auto"
    extras: bool = False
    trail: Tuple[str, ...] = ()
    q: str = ""

    @classmethod
    def parse(cls, pairs: Iterable[Tuple[str, str]]) -> "LineageQuery":
        """The query of a URL's (name, value) pairs; BadRequest naming the allowed values of a bad one."""
        single: Dict[str, str] = {}
        lists: Dict[str, List[str]] = defaultdict(list)
        for name, value in pairs:
            if name in ("expand", "trail"):
                lists[name] += [v for v in value.split(",") if v.strip()]
            else:
                single[name] = value.strip()
        view = single.get("view") or "both"
        if view not in LINEAGE_VIEWS:
            raise BadRequest(f"view is one of {', '.join(LINEAGE_VIEWS)}, not {view!r}")
        direction = single.get("direction") or "both"
        if direction not in DIRECTIONS:
            raise BadRequest(f"direction is one of {', '.join(DIRECTIONS)}, not {direction!r}")
        detail = single.get("detail") or "auto"
        if detail not in DETAILS:
            raise BadRequest(f"detail is one of {', '.join(DETAILS)}, not {detail!r}")
        hops_text = single.get("hops") or "2"
        if not hops_text.isdigit() or int(hops_text) > MAX_HOPS:
            raise BadRequest(f"hops is a whole number from 0 to {MAX_HOPS}, not {hops_text!r}")
        extras_text = single.get("extras", "").lower()
        if extras_text not in ("", "0", "1", "false", "true", "on", "off"):
            raise BadRequest(f"extras is 1 or 0, not {extras_text!r}")
        focus = single.get("focus") or None
        cluster = single.get("cluster") or None
        if focus is not None:
            _node_key(focus)
        if cluster is not None:
            _cluster_parts(cluster)
        if focus is not None and cluster is not None:
            raise BadRequest("a lineage view has a focus or a cluster, not both")
        for key in lists["expand"]:
            _node_key(key)
        for key in lists["trail"]:
            _target_kind(key)
        return cls(view, focus, int(hops_text), direction, tuple(dict.fromkeys(lists["expand"])), cluster, detail,
                   extras_text in ("1", "true", "on"), tuple(lists["trail"][-MAX_TRAIL:]), single.get("q", ""))

    def params(self) -> Dict[str, Any]:
        """The URL query of this view (defaults left out)."""
        out: Dict[str, Any] = {"view": self.view if self.view != "both" else None, "focus": self.focus,
                               "cluster": self.cluster, "hops": self.hops if self.hops != 2 else None,
                               "direction": self.direction if self.direction != "both" else None,
                               "detail": self.detail if self.detail != "auto" else None,
                               "extras": 1 if self.extras else None, "expand": list(self.expand),
                               "trail": list(self.trail), "q": self.q or None}
        return {k: v for k, v in out.items() if v not in (None, [])}

    def retarget(self, target: str) -> "LineageQuery":
        """The view focused on ``target`` (a node key or a cluster id), appended to the trail; the view, hops,
        direction and extras kept.  A target already on the trail cuts the trail back to it."""
        trail = list(self.trail) or [t for t in (self.focus or self.cluster,) if t]
        trail = trail[:trail.index(target)] if target in trail else trail
        cluster = _target_kind(target) == "cluster"
        return replace(self, focus=None if cluster else target, cluster=target if cluster else None, expand=(),
                       detail="auto", trail=tuple([*trail, target][-MAX_TRAIL:]), q="")

    def expanded(self, key: str) -> "LineageQuery":
        """The view with one hop more around ``key`` (its ``+``)."""
        return replace(self, expand=(*self.expand, key), q="")


class Lineage:
    """The lineage reads over the database of one :class:`~cmf_core.server.reads.Reads`."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads

    def read(self, pipeline: str, query: LineageQuery = LineageQuery()) -> Dict[str, Any]:
        """The view ``query`` of the pipeline's lineage: nodes (artifacts, executions, clusters) and edges, with
        a left-to-right layered layout.  Nodes with neighbours not drawn are marked ``more``; artifacts that
        executions of other pipelines also use list those pipelines in ``also_in``.  A hop is one edge of the
        view drawn.  NotFound for a focus, expanded node or cluster that is not in the pipeline."""
        with self.reads.db.session() as s:
            pipeline_id = self.reads._pipeline_id(s, pipeline)
            query = self._check_targets(s, pipeline, pipeline_id, query)
            excluded = () if query.extras else EXTRA_TYPES
            if query.focus is None:
                events = self._pipeline_events(s, pipeline_id, excluded)
                graph = _project(events, query.view)
                nodes = set(graph.nodes)
            else:
                start = [_node_key(query.focus)] + [_node_key(x) for x in query.expand]
                events, shown = self._neighbourhood(s, pipeline_id, query, start, excluded)
                graph = _project(events, query.view)
                nodes = {n for n in graph.nodes if n in shown}
            groups, times = _groups(events)
            members: Set[str] = set()
            if query.cluster is not None:
                members = _members(graph.nodes, groups, query.cluster)
                if not members:
                    raise NotFound(f"there is no cluster {query.cluster} in pipeline {pipeline!r}")
                nodes = members | {m for n in members for m in graph.neighbours[n]}
            unit = _units(nodes, groups, query, members)
            shown_nodes, edges = _aggregate(nodes, graph, unit)
            individual = [k for k in shown_nodes if k in nodes]
            artifacts = self.reads._artifact_summaries(s, [int(n[2:]) for n in individual if n[0] == "a"])
            executions = self.reads._execution_summaries(s, [int(n[2:]) for n in individual if n[0] == "e"])
            also = self._also_in(s, pipeline_id, [int(n[2:]) for n in individual if n[0] == "a"])
            stage_names = self._stage_names(s, {int(_cluster_parts(g)[1]) for g in set(groups.values())})
            trail = self._trail_labels(s, query.trail or tuple(t for t in (query.focus or query.cluster,) if t))
        counts: Dict[str, int] = defaultdict(int)
        first: Dict[str, float] = {}
        for n in nodes:  # a cluster of one is drawn as its node: both have a time
            u, first[n] = unit.get(n, n), times.get(n, math.inf)
            counts[u] += 1
            first[u] = min(first.get(u, math.inf), first[n])
        chronological = sorted(shown_nodes, key=lambda k: (first.get(k, math.inf), _order(k)))
        positions = dag.layout(chronological, [(a, b) for a, b, _ in edges])
        out_nodes = []
        for key in shown_nodes:
            layer, rank = positions[key]
            if key in nodes:
                info = artifacts.get(int(key[2:])) if key[0] == "a" else executions.get(int(key[2:]))
                if info is None:
                    continue
                out_nodes.append({
                    "key": _public_key(key), "kind": "artifact" if key[0] == "a" else "execution", "id": info["id"],
                    "label": info["label"], "type": info["type"], "name": info.get("name", info["label"]),
                    "layer": layer, "rank": rank, "more": any(m not in nodes for m in graph.neighbours[key]),
                    "focus": query.focus is not None and _public_key(key) == query.focus,
                    "member": key in members, "also_in": also.get(int(key[2:]), []) if key[0] == "a" else []})
            else:
                out_nodes.append({"key": key, "kind": "cluster", "layer": layer, "rank": rank,
                                  **_cluster_info(key, counts[key], stage_names)})
        kept = {n["key"] for n in out_nodes}
        out_edges = [{"source": _public_key(a), "target": _public_key(b), **({"count": c} if c > 1 else {})}
                     for a, b, c in edges if _public_key(a) in kept and _public_key(b) in kept]
        legend = sorted({n["type"] for n in out_nodes if n["kind"] == "artifact" or n.get("of") == "artifact"})
        return {"pipeline": pipeline, "view": query.view, "focus": query.focus, "cluster": query.cluster,
                "hops": query.hops, "direction": query.direction, "detail": query.detail, "extras": query.extras,
                "expand": list(query.expand), "trail": trail, "aggregated": any(k not in nodes for k in shown_nodes),
                "threshold": AGGREGATE_ABOVE, "nodes_in_view": len(nodes), "total": len(out_nodes),
                "legend": {"execution": any("execution" in (n["kind"], n.get("of")) for n in out_nodes),
                           "types": legend},
                "nodes": out_nodes, "edges": out_edges}

    def search(self, pipeline: str, q: str, extras: bool = False) -> Dict[str, Any]:
        """The nodes of the pipeline that ``q`` names: an artifact by its file name or path (any part of it) or
        by its md5 (a prefix that :func:`~cmf_core.server.reads.is_hash`), an execution by its uuid (a prefix as
        long) or as ``execution:ID``, a stage by its name (its cluster; its execution if it ran once).

        ``chosen`` is the match to go to: the only one, or the only exact one (a whole file name, path, md5,
        uuid or stage name); else the first :data:`SEARCH_LIMIT` matches are listed to choose from."""
        text = q.strip()
        if not text:
            raise BadRequest("type part of a file name, a stage, or an md5 or uuid of at least 6 characters")
        lower = text.lower()
        hashed = is_hash(lower)
        matches: List[Dict[str, Any]] = []
        with self.reads.db.session() as s:
            pipeline_id = self.reads._pipeline_id(s, pipeline)
            types, type_args = _type_filter(() if extras else EXTRA_TYPES)
            rows = s.rows("SELECT DISTINCT a.id, a.name, a.uri, t.name FROM artifact a JOIN type t ON t.id = a.type_id "
                          "JOIN event ev ON ev.artifact_id = a.id JOIN association asn ON asn.execution_id = "
                          "ev.execution_id JOIN parentcontext pc ON pc.context_id = asn.context_id AND "
                          f"pc.parent_context_id = ? WHERE (lower({s.bytewise('a.name')}) LIKE ? ESCAPE '\\' "
                          f"OR a.uri LIKE ? ESCAPE '\\' OR CAST(a.id AS TEXT) = ?) {types}ORDER BY a.id",
                          [pipeline_id, _like(text), _like(text)[1:], plain_id(lower, "artifact"), *type_args])
            for artifact_id, name, uri, type_name in rows:
                path = (name or "").split(":", 1)[0]
                exact = lower in (path.lower(), posixpath.basename(path).lower(), (uri or "").lower(),
                                  f"artifact:{artifact_id}")
                if exact or lower in path.lower() or (hashed and (uri or "").lower().startswith(lower)):
                    matches.append({"kind": "artifact", "key": f"artifact:{artifact_id}", "type": type_name,
                                    "label": posixpath.basename(path) or name, "name": name, "exact": exact})
            rows = s.rows("SELECT e.id, t.name, p.string_value FROM execution e JOIN type t ON t.id = e.type_id "
                          "JOIN association asn ON asn.execution_id = e.id JOIN parentcontext pc ON pc.context_id = "
                          "asn.context_id AND pc.parent_context_id = ? LEFT JOIN executionproperty p ON "
                          "p.execution_id = e.id AND p.name = 'Execution_uuid' "
                          "WHERE lower(p.string_value) LIKE ? OR CAST(e.id AS TEXT) = ? ORDER BY e.id",
                          [pipeline_id, lower + "%" if hashed else "\x01", plain_id(lower, "execution")])
            for execution_id, type_name, uuid in rows:
                matches.append({"kind": "execution", "key": f"execution:{execution_id}", "type": type_name,
                                "label": f"{_short(type_name)} #{execution_id}", "name": uuid or "",
                                "exact": lower in ((uuid or "").lower(), f"execution:{execution_id}")})
            stages = s.rows("SELECT st.id, st.name, (SELECT min(asn.execution_id) FROM association asn WHERE "
                            "asn.context_id = st.id), (SELECT count(*) FROM association asn WHERE asn.context_id = "
                            "st.id) FROM parentcontext pc JOIN context st ON st.id = pc.context_id "
                            "WHERE pc.parent_context_id = ? ORDER BY st.id", [pipeline_id])
        for stage_id, stage, first, runs in stages:
            short = _short(stage)
            if runs and lower in short.lower():
                if runs == 1:
                    key, label = f"execution:{first}", f"{short} #{first}"
                else:
                    key, label = f"runs:{stage_id}", f"{short} · {runs} runs"
                matches.append({"kind": "stage" if runs > 1 else "execution", "key": key, "type": "stage",
                                "label": label, "name": short, "exact": lower == short.lower()})
        matches = list({m["key"]: m for m in matches}.values())
        exact = [m for m in matches if m["exact"]]
        chosen = matches[0] if len(matches) == 1 else exact[0] if len(exact) == 1 else None
        return {"q": text, "total": len(matches), "matches": matches[:SEARCH_LIMIT], "chosen": chosen}

    # -- reads -----------------------------------------------------------------------------------------------

    def _check_targets(self, s: Session, pipeline: str, pipeline_id: int, query: LineageQuery) -> LineageQuery:
        """NotFound unless the focus and the expanded nodes are in the pipeline; the query with ``extras`` on
        when the focus is itself an Environment or Label (it is drawn, so what it is linked to is too)."""
        keys = [_node_key(k) for k in ([query.focus] if query.focus else []) + list(query.expand)]
        artifacts = [int(k[2:]) for k in keys if k[0] == "a"]
        executions = [int(k[2:]) for k in keys if k[0] == "e"]
        found: Dict[str, str] = {}
        if artifacts:
            among, args = s.among("ev.artifact_id", artifacts)
            for artifact_id, type_name in s.rows(
                    "SELECT DISTINCT ev.artifact_id, t.name FROM event ev JOIN artifact a ON a.id = ev.artifact_id "
                    "JOIN type t ON t.id = a.type_id JOIN association asn ON asn.execution_id = ev.execution_id "
                    "JOIN parentcontext pc ON pc.context_id = asn.context_id AND pc.parent_context_id = ? "
                    f"WHERE {among}", [pipeline_id, *args]):
                found[f"a:{artifact_id}"] = type_name
        if executions:
            among, args = s.among("asn.execution_id", executions)
            for (execution_id,) in s.rows(
                    "SELECT asn.execution_id FROM association asn JOIN parentcontext pc ON pc.context_id = "
                    f"asn.context_id AND pc.parent_context_id = ? WHERE {among}", [pipeline_id, *args]):
                found[f"e:{execution_id}"] = ""
        for key in keys:
            if key not in found:
                kind = "artifact" if key[0] == "a" else "execution"
                raise NotFound(f"there is no {kind} {key[2:]} in pipeline {pipeline!r}")
        if query.focus and found[_node_key(query.focus)] in EXTRA_TYPES:
            return replace(query, extras=True)
        return query

    def _pipeline_events(self, s: Session, pipeline_id: int, excluded: Sequence[str]) -> List[Event]:
        """Every event of the pipeline, but those of the ``excluded`` artifact types."""
        types, args = _type_filter(excluded)
        return [Event(*r) for r in s.rows(f"{_EVENTS} WHERE 1 = 1 {types}", [pipeline_id, *args])]

    def _neighbourhood(self, s: Session, pipeline_id: int, query: LineageQuery, start: List[str],
                       excluded: Sequence[str]) -> Tuple[List[Event], Set[str]]:
        """The nodes within ``hops`` of ``start[0]`` in the query's direction (one hop both ways around the
        others), and every event touching them, which gives the edges among them, tells which have neighbours
        left out and which cluster each belongs to.

        A hop is one event in the "both" view and two (artifact -> execution -> artifact) in the others.
        """
        per_hop = 1 if query.view == "both" else 2
        ways = {"both": (True, False), "up": (True,), "down": (False,)}
        shown: Set[str] = set(start)
        for index, origin in enumerate(start):
            for up in ways[query.direction] if index == 0 else (True, False):
                # each walk keeps its own visited set: a node another walk reached (an expanded node, say) is
                # walked through, not stopped at, so expanding never drops what the focus alone shows
                frontier, seen = {origin}, {origin}
                for _ in range((query.hops if index == 0 else 1) * per_hop):
                    reached = _ends(self._step(s, pipeline_id, frontier, up, excluded))
                    frontier = reached - seen
                    seen |= reached
                    if not frontier:
                        break
                shown |= seen
        events: Set[Event] = set()
        frontier = set(shown)
        for _ in range(per_hop):
            found = self._step(s, pipeline_id, frontier, None, excluded)
            events.update(found)
            frontier = _ends(found) - frontier
        return list(events), shown

    def _step(self, s: Session, pipeline_id: int, frontier: Set[str], up: Optional[bool],
              excluded: Sequence[str]) -> List[Event]:
        """Events one step up from the frontier (what produced an artifact, what an execution read), down (what
        read an artifact, what an execution wrote), or both ways (``up=None``)."""
        artifacts = [int(n[2:]) for n in frontier if n[0] == "a"]
        executions = [int(n[2:]) for n in frontier if n[0] == "e"]
        types, type_args = _type_filter(excluded)
        found: List[Event] = []
        for column, ids, kinds in (("artifact_id", artifacts, OUTPUTS if up else INPUTS),
                                   ("execution_id", executions, INPUTS if up else OUTPUTS)):
            if ids:
                kinds = INPUTS + OUTPUTS if up is None else kinds
                among, args = s.among(f"ev.{column}", ids)
                found += [Event(*r) for r in s.rows(
                    f"{_EVENTS} WHERE {among} AND ev.type IN ({_ins(kinds)}) {types}",
                    [pipeline_id, *args, *kinds, *type_args])]
        return found

    def _also_in(self, s: Session, pipeline_id: int, artifacts: List[int]) -> Dict[int, List[str]]:
        """The other pipelines whose executions used or produced each of ``artifacts``, by name."""
        if not artifacts:
            return {}
        among, args = s.among("ev.artifact_id", artifacts)
        out: Dict[int, List[str]] = defaultdict(list)
        for artifact_id, name in s.rows(
                "SELECT DISTINCT ev.artifact_id, p.name FROM event ev JOIN association asn ON asn.execution_id = "
                "ev.execution_id JOIN parentcontext pc ON pc.context_id = asn.context_id JOIN context p ON p.id = "
                f"pc.parent_context_id WHERE {among} AND pc.parent_context_id <> ? ORDER BY p.name",
                [*args, pipeline_id]):
            out[artifact_id].append(name)
        return out

    @staticmethod
    def _stage_names(s: Session, ids: Set[int]) -> Dict[int, str]:
        if not ids:
            return {}
        among, args = s.among("id", sorted(ids))
        return {i: _short(name) for i, name in s.rows(f"SELECT id, name FROM context WHERE {among}", args)}

    def _trail_labels(self, s: Session, trail: Sequence[str]) -> List[Dict[str, str]]:
        """The breadcrumbs: each target of the trail with what to call it."""
        keys = {t: _node_key(t) for t in trail if _target_kind(t) != "cluster"}
        artifacts = self.reads._artifact_summaries(s, [int(k[2:]) for k in keys.values() if k[0] == "a"])
        executions = self.reads._execution_summaries(s, [int(k[2:]) for k in keys.values() if k[0] == "e"])
        stages = self._stage_names(s, {int(_cluster_parts(t)[1]) for t in trail if t not in keys})
        out = []
        for target in trail:
            if target in keys:
                key = keys[target]
                info = (artifacts if key[0] == "a" else executions).get(int(key[2:]))
                out.append({"key": target, "label": info["label"] if info else target})
            else:
                out.append({"key": target, "label": _cluster_info(target, 0, stages)["title"]})
        return out


# -- SQL --------------------------------------------------------------------------------------------------

#: The events of one pipeline (its id the first parameter), with each execution's stage and artifact's type.
_EVENTS = ("SELECT ev.execution_id, ev.artifact_id, ev.type, asn.context_id, t.name FROM event ev "
           "JOIN association asn ON asn.execution_id = ev.execution_id "
           "JOIN parentcontext pc ON pc.context_id = asn.context_id AND pc.parent_context_id = ? "
           "JOIN artifact a ON a.id = ev.artifact_id JOIN type t ON t.id = a.type_id")


def _type_filter(excluded: Sequence[str]) -> Tuple[str, List[Any]]:
    """``AND`` the artifact type is not one of ``excluded`` (nothing when none is: ``NOT IN (NULL)`` is never
    true), as SQL and its parameters."""
    if not excluded:
        return "", []
    return f"AND t.name NOT IN ({_ins(excluded)}) ", list(excluded)


# -- keys and clusters -------------------------------------------------------------------------------------

def _node_key(public: str) -> str:
    """"artifact:12" -> "a:12"; BadRequest for anything else."""
    kind, _, number = public.partition(":")
    if kind not in ("artifact", "execution") or not number.isdigit() or int(number) > MAX_ID:
        raise BadRequest(f"a lineage node is artifact:ID or execution:ID, not {public!r}")
    return f"{kind[0]}:{int(number)}"


def _public_key(key: str) -> str:
    """"a:12" -> "artifact:12"; a cluster id is its own public key."""
    if key[:2] == "a:":
        return "artifact:" + key[2:]
    return "execution:" + key[2:] if key[:2] == "e:" else key


def _cluster_parts(cluster: str) -> Tuple[str, str, str, int]:
    """"made:4:Model@2" -> ("made", "4", "Model", 2) (part 0: the whole cluster); BadRequest for a bad id."""
    match = _CLUSTER.fullmatch(cluster)
    if match is None:
        raise BadRequest(f"a cluster is runs:STAGE, made:STAGE:TYPE or read:STAGE:TYPE (with @PART), not {cluster!r}")
    what, stage, type_name = match.group(1) or match.group(3), match.group(2) or match.group(4), match.group(5) or ""
    return what, stage, type_name, int(match.group(6) or 0)


def _target_kind(target: str) -> str:
    """"node" or "cluster": what a trail entry is; BadRequest for neither."""
    if _CLUSTER.fullmatch(target):
        return "cluster"
    _node_key(target)
    return "node"


def _order(key: str) -> Tuple[str, int, str]:
    """Nodes by kind and id, clusters after them by id."""
    if key[:2] in ("a:", "e:"):
        return key[0], int(key[2:]), ""
    return "z", 0, key


def _groups(events: Iterable[Event]) -> Tuple[Dict[str, str], Dict[str, float]]:
    """The cluster id of each node of ``events`` (an execution's stage; an artifact's type and the stage of its
    first producer, by execution id, or of its first consumer if no execution of the pipeline produced it),
    and when it came: an execution's id, an artifact just after its first producer or before its first
    consumer.  The layout breaks cycles (a stage reading what it wrote) against that order."""
    stage_of: Dict[int, int] = {}
    producer: Dict[int, Tuple[int, int, str]] = {}
    consumer: Dict[int, Tuple[int, int, str]] = {}
    for ev in events:
        stage_of[ev.execution] = min(stage_of.get(ev.execution, ev.stage), ev.stage)
        into = producer if ev.kind in OUTPUTS else consumer if ev.kind in INPUTS else None
        if into is not None and (ev.artifact not in into or ev.execution < into[ev.artifact][0]):
            into[ev.artifact] = (ev.execution, ev.stage, ev.type)
    groups = {f"e:{e}": f"runs:{stage}" for e, stage in stage_of.items()}
    times: Dict[str, float] = {f"e:{e}": float(e) for e in stage_of}
    for what, found, offset in (("read", consumer, -0.5), ("made", producer, 0.5)):
        for artifact, (execution, stage, type_name) in found.items():
            groups[f"a:{artifact}"] = f"{what}:{stage}:{type_name}"
            times[f"a:{artifact}"] = execution + offset
    return groups, times


def _parts(members: Iterable[str]) -> List[List[str]]:
    """``members`` in id order, cut into parts of at most :data:`AGGREGATE_ABOVE`, as even as can be."""
    ordered = sorted(members, key=_order)
    count = max(1, math.ceil(len(ordered) / AGGREGATE_ABOVE))
    size = math.ceil(len(ordered) / count) if ordered else 1
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _members(nodes: Iterable[str], groups: Dict[str, str], cluster: str) -> Set[str]:
    """The nodes of a cluster (of one part of it for ``ID@PART``)."""
    whole_id, _, part_text = cluster.partition("@")
    part = int(part_text or 0)
    whole = {n for n in nodes if groups.get(n) == whole_id}
    if not part:
        return whole
    parts = _parts(whole)
    return set(parts[part - 1]) if part <= len(parts) else set()


def _units(nodes: Set[str], groups: Dict[str, str], query: LineageQuery, members: Set[str]) -> Dict[str, str]:
    """The cluster each node is drawn in (a node not in the mapping is drawn as itself).

    Nothing is aggregated with ``detail=all`` or up to :data:`AGGREGATE_ABOVE` nodes.  Above, every node is
    drawn in its cluster but the focus and the expanded nodes, and an opened cluster's members, which are cut
    into parts when they are more than that themselves."""
    if query.detail == "all" or len(nodes) <= AGGREGATE_ABOVE:
        return {}
    kept = {_node_key(k) for k in ([query.focus] if query.focus else []) + list(query.expand)} | members
    unit = {n: groups[n] for n in nodes - kept if n in groups}
    if len(members) > AGGREGATE_ABOVE:
        base = query.cluster.split("@")[0] if query.cluster else ""
        for index, part in enumerate(_parts(members), 1):
            unit.update((n, f"{base}@{index}") for n in part)
    return unit


def _aggregate(nodes: Set[str], graph: "_Graph",
               unit: Dict[str, str]) -> Tuple[List[str], List[Tuple[str, str, int]]]:
    """The drawn nodes (a node, or a cluster of more than one node) and edges between them with the number of
    edges of the graph each stands for; edges inside a cluster are left out."""
    sizes: Dict[str, int] = defaultdict(int)
    for n in nodes:
        sizes[unit.get(n, n)] += 1

    def drawn(n: str) -> str:
        u = unit.get(n, n)
        return u if sizes[u] > 1 else n

    counts: Dict[Tuple[str, str], int] = defaultdict(int)
    for a, b in graph.edges:
        if a in nodes and b in nodes:
            pair = (drawn(a), drawn(b))
            if pair[0] != pair[1]:
                counts[pair] += 1
    shown = sorted({drawn(n) for n in nodes}, key=_order)
    rank = {key: i for i, key in enumerate(shown)}
    return shown, sorted(((a, b, c) for (a, b), c in counts.items()), key=lambda e: (rank[e[0]], rank[e[1]]))


def _cluster_info(cluster: str, count: int, stage_names: Dict[int, str]) -> Dict[str, Any]:
    """What a cluster node shows: its label ("train · 200 runs"), title, what its members are."""
    what, stage_id, type_name, part = _cluster_parts(cluster)
    stage = stage_names.get(int(stage_id), f"stage {stage_id}")
    of, mark = (f" (part {part})", f" ({part})") if part else ("", "")
    if what == "runs":
        label, title = f"{stage} · {count:,} runs{mark}", f"the executions of {stage}{of}"
    elif what == "made":
        label, title = f"{type_name} ×{count:,} · {stage}{mark}", f"the {type_name} artifacts written by {stage}{of}"
    else:
        label, title = f"{type_name} ×{count:,} → {stage}{mark}", f"the {type_name} artifacts read by {stage}{of}"
    return {"label": label, "title": title, "of": "execution" if what == "runs" else "artifact",
            "type": "execution" if what == "runs" else type_name, "stage": stage, "count": count, "part": part}


# -- graphs ------------------------------------------------------------------------------------------------

@dataclass
class _Graph:
    nodes: Set[str]
    edges: List[Tuple[str, str]]  # in no order
    neighbours: Dict[str, Set[str]]


def _ends(events: Iterable[Event]) -> Set[str]:
    """The artifact and execution keys of some events."""
    return {f"a:{ev.artifact}" for ev in events} | {f"e:{ev.execution}" for ev in events}


def _project(events: Iterable[Event], view: str) -> _Graph:
    """The events as the view's graph: artifact -> execution (input), execution -> artifact (output); or only
    artifacts (a -> b when an execution read a and wrote b), or only executions (e -> f when f read what e wrote)."""
    inputs: Dict[int, Set[int]] = defaultdict(set)  # execution -> artifacts read
    outputs: Dict[int, Set[int]] = defaultdict(set)  # execution -> artifacts written
    for ev in events:
        if ev.kind in INPUTS:
            inputs[ev.execution].add(ev.artifact)
        elif ev.kind in OUTPUTS:
            outputs[ev.execution].add(ev.artifact)
    edges: Set[Tuple[str, str]] = set()
    nodes: Set[str] = set()
    if view == "both":
        for e, arts in inputs.items():
            edges.update((f"a:{a}", f"e:{e}") for a in arts)
        for e, arts in outputs.items():
            edges.update((f"e:{e}", f"a:{a}") for a in arts)
        nodes = {n for edge in edges for n in edge}
    elif view == "artifacts":
        for e in set(inputs) | set(outputs):
            edges.update((f"a:{a}", f"a:{b}") for a in inputs[e] for b in outputs[e] if a != b)
            nodes.update(f"a:{a}" for a in inputs[e] | outputs[e])
    else:
        producers: Dict[int, Set[int]] = defaultdict(set)
        for e, arts in outputs.items():
            for a in arts:
                producers[a].add(e)
        for f, arts in inputs.items():
            edges.update((f"e:{e}", f"e:{f}") for a in arts for e in producers[a] if e != f)
        nodes = {f"e:{e}" for e in set(inputs) | set(outputs)}
    neighbours: Dict[str, Set[str]] = defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    return _Graph(nodes, list(edges), neighbours)
