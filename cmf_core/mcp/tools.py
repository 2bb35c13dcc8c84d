"""The tools, resources and prompt of ``cmf mcp``, on the official ``mcp`` SDK (``MCPServer``).

Every tool only reads (each is annotated read-only) and answers structured content that follows its declared
output schema (:mod:`cmf_core.mcp.schemas`), with a one-line summary and, for clients that pass only text to the
model, the same JSON as text.  Answers are sized for a model's context: pages of at most :data:`MAX_PAGE` items,
text longer than :data:`MAX_TEXT` characters cut, a lineage of at most ``max_nodes`` nodes; ``notes`` says what
was cut.  A failure (an unknown pipeline, a bad filter, a server that cannot be reached) is a tool error that
says what exists or what to do, never a traceback.

Records are named as a person has them at hand: an execution by its id (``12``, ``execution:12``) or its uuid
(a prefix of 6 characters or more); an artifact by its id, its md5 (or a prefix) or its path or file name.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections import deque
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Tuple
from urllib.parse import quote

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from cmf_core.errors import CmfError
from cmf_core.mcp import schemas
from cmf_core.mcp.sources import Source, pairs
from cmf_core.server.reads import NotFound, is_hash

__all__ = ["create_server", "Tools", "MAX_PAGE", "MAX_TEXT", "MAX_NODES"]

MAX_PAGE = 50
MAX_TEXT = 500
MAX_NODES = 300
#: How many candidates an ambiguous name lists in its error.
CANDIDATES = 10

INSTRUCTIONS = """\
cmf tracks the metadata of ML pipelines: pipelines have stages, stages have executions (runs), and executions
read and write artifacts (datasets, models, metrics, step metrics).  Start with list_pipelines or search.
Name an execution by its id or uuid, an artifact by its id, md5 or path.  Every answer is read-only and cites
records with cmf:// URIs (cmf://pipeline/NAME, cmf://execution/UUID, cmf://artifact/MD5) that can be read as
resources.  Filters use the UI's grammar: lr > 0.01 and stage = train, metric.accuracy >= 0.9, name ~ csv."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Page = Annotated[int, Field(ge=1, description="page number, from 1")]
Size = Annotated[int, Field(ge=1, le=MAX_PAGE, description=f"items per page, at most {MAX_PAGE}")]
Pipeline = Annotated[str, Field(description="the pipeline's name (list_pipelines gives them)")]
ExecutionName = Annotated[str, Field(description="an execution's id (12 or execution:12) or uuid (or a prefix of "
                                                 "6 characters or more)")]
ArtifactName = Annotated[str, Field(description="an artifact's id (7 or artifact:7), md5 (or a prefix of 6 "
                                                "characters or more), path or file name")]


def _time(ms: Optional[int]) -> Optional[str]:
    """Milliseconds since the epoch as ISO 8601 in UTC (``2026-12-07T04:18:27.123Z``)."""
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def _pages(total: int, size: int) -> int:
    return max(1, math.ceil(total / size))


def execution_uri(uuid: str, execution_id: int) -> str:
    first = uuid.split(",", 1)[0].strip()
    return f"cmf://execution/{first or execution_id}"


def artifact_uri(md5: str, artifact_id: int) -> str:
    return f"cmf://artifact/{md5 if is_hash(md5) else artifact_id}"


def pipeline_uri(name: str) -> str:
    return f"cmf://pipeline/{quote(name, safe='')}"


def _execution_ref(e: Dict[str, Any]) -> Dict[str, Any]:
    """An execution as other records list it (the read path's summary)."""
    uuid = str(e.get("uuid") or "")
    return {"id": e["id"], "uuid": uuid, "label": e["label"], "stage": e.get("stage", ""),
            "pipeline": e.get("pipeline", ""), "uri": execution_uri(uuid, e["id"])}


def _artifact_ref(a: Dict[str, Any]) -> Dict[str, Any]:
    md5 = str(a.get("uri") or "")
    return {"id": a["id"], "name": a["name"], "label": a["label"], "type": a["type"], "md5": md5,
            "uri": artifact_uri(md5, a["id"])}


def fit(value: Any, cut: List[int]) -> Any:
    """``value`` with every text longer than :data:`MAX_TEXT` characters cut (and counted in ``cut``)."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            cut[0] += 1
            return value[:MAX_TEXT] + f"… [cut: {len(value):,} characters]"
        return value
    if isinstance(value, dict):
        return {k: fit(v, cut) for k, v in value.items()}
    if isinstance(value, list):
        return [fit(v, cut) for v in value]
    return value


def answer(out: Dict[str, Any], summary: str) -> CallToolResult:
    """The tool result: ``out`` (its long texts cut, said in its notes) as structured content, and as text after
    the one-line ``summary``."""
    cut = [0]
    out = fit(out, cut)
    if cut[0]:
        out.setdefault("notes", []).append(
            f"{cut[0]} value{'s were' if cut[0] > 1 else ' was'} longer than {MAX_TEXT} characters and cut; the UI "
            "and the read API (/api) show them whole")
    text = json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)
    return CallToolResult(content=[TextContent(type="text", text=summary), TextContent(type="text", text=text)],
                          structured_content=out)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 'es' if word.endswith(('s', 'ch')) else 's'}"


class Tools:
    """The tools over one :class:`Source`; each method is one tool (its docstring is the tool's description)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    async def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in a worker thread (the reads block); a CmfError becomes a tool error."""
        try:
            return await anyio.to_thread.run_sync(functools.partial(function, *args))
        except NotFound as exc:
            raise ToolError(await self._with_pipelines(str(exc))) from None
        except CmfError as exc:
            raise ToolError(str(exc)) from None

    async def _with_pipelines(self, message: str) -> str:
        """An unknown pipeline's error, with the names that exist."""
        if not message.startswith("there is no pipeline"):
            return message
        try:
            known = await anyio.to_thread.run_sync(self.source.pipelines, 1, CANDIDATES)
        except CmfError:
            return message
        names = ", ".join(repr(p["name"]) for p in known["items"]) or "none"
        more = f" (and {known['total'] - len(known['items'])} more: list_pipelines)" \
            if known["total"] > len(known["items"]) else ""
        return f"{message}; the pipelines are: {names}{more}"

    async def _find(self, text: str, kind: str) -> Dict[str, Any]:
        """The one ``kind`` ("execution" or "artifact") record that ``text`` names: an id, ``kind:ID``, or what
        the search finds exactly once (or finds once exactly); a tool error listing the candidates otherwise."""
        text = text.strip()
        if text.startswith(kind + ":") and text[len(kind) + 1:].isdigit():
            return {"id": int(text[len(kind) + 1:])}
        if text.isdigit() and not is_hash(text):
            return {"id": int(text)}
        found = await self._read(self.source.search, pairs(q=text, limit=CANDIDATES * 2))
        hits = [m for m in found["items"] if m["kind"] == kind]
        exact = [m for m in hits if m["exact"]]
        if len(hits) == 1 or len(exact) == 1:
            return (exact or hits)[0]
        if not hits and text.isdigit():  # 6 digits or more, and no md5 or uuid begins so: an id after all
            return {"id": int(text)}
        if not hits:
            how = "uuid" if kind == "execution" else "md5, path or file name"
            raise ToolError(f"no {kind} has the id or {how} {text!r}; search finds records by any part of "
                            f"their name")
        listed = "; ".join(f"{m['kind']}:{m['id']} {m['label']} ({', '.join(m['pipelines'])})"
                           for m in hits[:CANDIDATES])
        raise ToolError(f"{text!r} names {len(hits)} {kind}s: {listed}; give one of their ids")

    # -- the tools ---------------------------------------------------------------------------------------

    async def list_pipelines(self, page: Page = 1) -> Annotated[CallToolResult, schemas.PipelineList]:
        """The pipelines, with how many stages, executions and artifacts each has and when it last changed."""
        data = await self._read(self.source.pipelines, page, MAX_PAGE)
        items = [{"name": p["name"], "stages": p["stages"], "executions": p["executions"],
                  "artifacts": p["artifacts"], "created": _time(p["created"]), "updated": _time(p["updated"]),
                  "uri": pipeline_uri(p["name"])} for p in data["items"]]
        out = {"total": data["total"], "page": page, "pages": _pages(data["total"], MAX_PAGE), "size": MAX_PAGE,
               "items": items, "notes": []}
        names = ", ".join(p["name"] for p in items[:10]) + (", ..." if len(items) > 10 else "")
        return answer(out, f"{_plural(data['total'], 'pipeline')}: {names}" if items else "no pipelines")

    async def list_executions(
            self, pipeline: Pipeline,
            stage: Annotated[Optional[str], Field(description="only this stage's executions")] = None,
            filter: Annotated[Optional[str], Field(description="the UI's filter: lr > 0.01 and stage = train, "
                                                               "metric.accuracy >= 0.9, command ~ train.py")] = None,
            sort: Annotated[str, Field(description="id, created, stage, a parameter or metric.NAME")] = "id",
            order: Literal["asc", "desc"] = "asc", page: Page = 1, size: Size = 20,
    ) -> Annotated[CallToolResult, schemas.ExecutionList]:
        """A pipeline's executions, a page at a time: parameters, metrics, command; filtered and sorted as on the
        UI's executions page."""
        data = await self._read(self.source.executions, pipeline,
                                pairs(stage=stage, filter=filter, sort=sort, order=order, page=page, size=size))
        items = [{**_execution_ref({**e, "pipeline": pipeline}), "created": _time(e["created"]),
                  "command": e["command"], "params": e["params"], "metrics": e["metrics"]} for e in data["items"]]
        out = {"pipeline": pipeline, "total": data["total"], "page": page, "pages": _pages(data["total"], size),
               "size": size, "sort": sort, "order": order, "filter": filter, "params": data["columns"]["params"],
               "metrics": data["columns"]["metrics"], "items": items, "notes": []}
        if data["total"] > page * size:
            out["notes"].append(f"page {page} of {out['pages']}: ask for page {page + 1} for more")
        return answer(out, f"{_plural(data['total'], 'execution')} in {pipeline!r}"
                           f"{' matching ' + repr(filter) if filter else ''}; page {page} of {out['pages']}")

    async def get_execution(self, execution: ExecutionName) -> Annotated[CallToolResult, schemas.Execution]:
        """One execution: stage, command, git commits, parameters, metrics, the artifacts it read and wrote, and
        the min, max and last value of each step metric it logged."""
        found = await self._find(execution, "execution")
        out = await self._read(self._execution, found["id"])
        return answer(out, f"execution {out['label']} of stage {out['stage']!r} in {out['pipeline']!r}: "
                           f"{_plural(out['inputs_total'], 'input')}, {_plural(out['outputs_total'], 'output')}")

    def _execution(self, execution_id: int) -> Dict[str, Any]:
        e = self.source.execution(execution_id)
        steps = []
        for sm in e["step_metrics"]:
            data = sm["data"]
            columns = {}
            for column, values in (data or {}).get("series", {}).items():
                numbers = [v for v in values if isinstance(v, (int, float))]
                if numbers:
                    columns[column] = {"min": min(numbers), "max": max(numbers), "last": values[-1]}
            steps.append({"name": sm["name"], "artifact_id": sm["artifact"]["id"],
                          "steps": len(data["steps"]) if data else None, "columns": columns})
        metrics = {k: v for m in e["metrics"] for k, v in m["values"].items()}
        notes = [f"{e[k + '_total'] - len(e[k])} more {k} are not listed"
                 for k in ("inputs", "outputs") if e[k + "_total"] > len(e[k])]
        if any(s["steps"] is None for s in steps):
            notes.append("a step-metrics file is not held where this reads, so its values are not summarised")
        return {**_execution_ref(e), "type": e["type"], "created": _time(e["created"]),
                "updated": _time(e["updated"]), "command": e["command"], "git": e["git"],
                "params": e["params"], "metrics": metrics, "inputs": [_artifact_ref(a) for a in e["inputs"]],
                "inputs_total": e["inputs_total"], "outputs": [_artifact_ref(a) for a in e["outputs"]],
                "outputs_total": e["outputs_total"], "step_metrics": steps, "notes": notes}

    async def list_artifacts(
            self, pipeline: Pipeline,
            type: Annotated[Optional[str], Field(description="Dataset, Model, Metrics, Step_Metrics, Dataslice, "
                                                             "Environment or Label")] = None,
            search: Annotated[Optional[str], Field(description="text in the name, md5 or a property")] = None,
            page: Page = 1, size: Size = 20,
    ) -> Annotated[CallToolResult, schemas.ArtifactList]:
        """The artifacts a pipeline's executions read or wrote, a page at a time, by type and text."""
        data = await self._read(self.source.artifacts, pipeline,
                                pairs(type=type, q=search, page=page, size=size, columns=0))
        items = [{**_artifact_ref(a), "created": _time(a["created"]), "custom_properties": a["custom_properties"]}
                 for a in data["items"]]
        out = {"pipeline": pipeline, "type": type, "search": search, "total": data["total"], "page": page,
               "pages": _pages(data["total"], size), "size": size, "type_counts": data["type_counts"],
               "items": items, "notes": []}
        if data["total"] > page * size:
            out["notes"].append(f"page {page} of {out['pages']}: ask for page {page + 1} for more")
        counts = ", ".join(f"{n} {t}" for t, n in sorted(data["type_counts"].items()))
        return answer(out, f"{_plural(data['total'], (type or '') + ' artifact' if type else 'artifact')} in "
                           f"{pipeline!r} ({counts or 'none'}); page {page} of {out['pages']}")

    async def get_artifact(self, artifact: ArtifactName) -> Annotated[CallToolResult, schemas.Artifact]:
        """One artifact: md5, size, where it was pushed, the executions that produced and used it, and the command
        that pulls it into a workspace."""
        found = await self._find(artifact, "artifact")
        out = await self._read(self._artifact, found["id"])
        return answer(out, f"{out['type']} {out['path']!r} (md5 {out['md5']}): produced by "
                           f"{_plural(out['producers_total'], 'execution')}, used by "
                           f"{_plural(out['consumers_total'], 'execution')}")

    def _artifact(self, artifact_id: int, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        a = data or self.source.artifact(artifact_id)
        notes = [f"{a[k + '_total'] - len(a[k])} more {k} are not listed"
                 for k in ("producers", "consumers") if a[k + "_total"] > len(a[k])]
        return {**_artifact_ref(a), "md5": a["md5"], "path": a["path"], "size": a.get("size"),
                "remote_urls": [r["url"] for r in a["remotes"]], "pipelines": a["pipelines"],
                "producers": [_execution_ref(e) for e in a["producers"]], "producers_total": a["producers_total"],
                "consumers": [_execution_ref(e) for e in a["consumers"]], "consumers_total": a["consumers_total"],
                "pull_command": a["pull_command"], "created": _time(a["created"]), "updated": _time(a["updated"]),
                "properties": a["properties"], "custom_properties": a["custom_properties"], "notes": notes}

    async def lineage(
            self, pipeline: Pipeline,
            focus: Annotated[Optional[str], Field(description="the node to centre on: artifact:ID, execution:ID, a "
                                                              "file name, path, md5 or uuid; none: the whole "
                                                              "pipeline")] = None,
            hops: Annotated[int, Field(ge=0, le=10, description="edges from the focus")] = 2,
            direction: Annotated[Literal["both", "up", "down"],
                                 Field(description="up: what it was made from; down: what was made from it")] = "both",
            max_nodes: Annotated[int, Field(ge=1, le=MAX_NODES, description="the most nodes answered")] = 100,
    ) -> Annotated[CallToolResult, schemas.Lineage]:
        """The lineage graph: artifacts and executions joined by what read and wrote what; around one node (hops,
        direction) or the whole pipeline (large stages drawn as clusters).  At most max_nodes nodes, the nearest
        to the focus first."""
        out = await self._read(self._lineage, pipeline, focus, hops, direction, max_nodes)
        what = f"around {out['focus_label']}" if out["focus_label"] else "of the whole pipeline"
        out.pop("focus_label")
        return answer(out, f"lineage of {pipeline!r} {what}: {_plural(out['shown'], 'node')}"
                           f"{' of ' + format(out['nodes_in_view'], ',') if out['cut'] else ''}, "
                           f"{_plural(len(out['edges']), 'edge')}")

    def _lineage(self, pipeline: str, focus: Optional[str], hops: int, direction: str,
                 max_nodes: int) -> Dict[str, Any]:
        query = pairs(hops=hops, direction=direction)
        focus = (focus or "").strip() or None
        if focus:
            kind, _, number = focus.strip().partition(":")
            named = kind in ("artifact", "execution") and number.isdigit()
            query += pairs(focus=focus.strip(), detail="all") if named else pairs(q=focus, detail="all")
        data = self.source.lineage(pipeline, query)
        search = data.get("search")
        if search is not None and search["chosen"] is None:
            if not search["matches"]:
                raise NotFound(f"nothing in pipeline {pipeline!r} is named {focus!r}")
            listed = "; ".join(f"{m['key']} {m['label']}" for m in search["matches"][:CANDIDATES])
            raise NotFound(f"{focus!r} names {search['total']} nodes of {pipeline!r}: {listed}; give one of "
                           "their keys as the focus")
        nodes, edges = data["nodes"], data["edges"]
        distance = _distances(data["focus"], edges) if data["focus"] else {}
        nodes = sorted(nodes, key=lambda n: (distance.get(n["key"], math.inf), n["layer"], n["rank"]))
        kept = nodes[:max_nodes]
        keys = {n["key"] for n in kept}
        out_nodes = [{"key": n["key"], "kind": n["kind"], "label": n["label"], "type": n["type"],
                      "name": n.get("name", ""), "hops": distance.get(n["key"]),
                      "count": n.get("count")} for n in kept]
        notes = []
        if len(nodes) > max_nodes:
            notes.append(f"{len(nodes) - max_nodes:,} of {len(nodes):,} nodes were left out, the farthest from "
                         f"the focus (or the last layers) first: ask with fewer hops, one direction, or max_nodes "
                         f"up to {MAX_NODES}")
        if data["aggregated"]:
            notes.append("clusters (kind cluster) stand for many executions or artifacts of a stage; focus on "
                         "one node to see its neighbours alone")
        label = next((n["label"] for n in nodes if n["key"] == (data["focus"] or data["cluster"])), focus)
        return {"pipeline": pipeline, "focus": data["focus"], "focus_label": label, "hops": data["hops"],
                "direction": data["direction"], "nodes_in_view": len(nodes), "shown": len(kept),
                "cut": len(nodes) > max_nodes, "nodes": out_nodes,
                "edges": [{"source": e["source"], "target": e["target"], "count": e.get("count", 1)}
                          for e in edges if e["source"] in keys and e["target"] in keys], "notes": notes}

    async def model_card(self, model: ArtifactName) -> Annotated[CallToolResult, schemas.ModelCard]:
        """A model's card: the model, the executions that produced it with their parameters and metrics, the
        data they read, what else they wrote, and the executions that used the model."""
        found = await self._find(model, "artifact")
        out = await self._read(self._model_card, found["id"])
        m = out["model"]
        return answer(out, f"model {m['path']!r}: produced by {_plural(len(out['producers']), 'execution')} "
                           f"from {_plural(len(out['inputs']), 'input')}, used by "
                           f"{_plural(len(out['consumers']), 'execution')}")

    def _model_card(self, artifact_id: int) -> Dict[str, Any]:
        a = self.source.artifact(artifact_id)
        card = a["model_card"]
        if card is None:
            raise NotFound(f"artifact {a['label']!r} (artifact:{artifact_id}) is a {a['type']}, not a model")
        return {"model": self._artifact(artifact_id, a),
                "producers": [{**_execution_ref(p), "params": p["params"], "metrics": p["metrics"]}
                              for p in card["producers"]],
                "consumers": [_execution_ref(e) for e in card["consumers"]],
                "inputs": [_artifact_ref(x) for x in card["inputs"]],
                "outputs": [_artifact_ref(x) for x in card["outputs"]], "notes": []}

    async def compare_executions(
            self, executions: Annotated[List[str], Field(min_length=2, max_length=20, description=
                                                         "2 to 20 executions, by id or uuid")],
    ) -> Annotated[CallToolResult, schemas.Comparison]:
        """What differs between executions: stage, command, git commit, parameters, metrics and python packages,
        each against the first execution given.  Values that are the same in all are only counted."""
        ids = [(await self._find(e, "execution"))["id"] for e in executions]
        out = await self._read(self._compare, ids)
        return answer(out, f"{_plural(len(out['differences']), 'difference')} between "
                           f"{_plural(len(ids), 'execution')} ({out['same']} values the same)")

    def _compare(self, ids: List[int]) -> Dict[str, Any]:
        pipeline = self.source.execution(ids[0])["pipeline"]
        data = self.source.compare(pipeline, pairs(ids=ids))
        rows = data["rows"]
        diff = (data["environment"] or {}).get("diff")
        return {"executions": [_execution_ref(e) for e in data["executions"]],
                "reference": data["ref"],
                "differences": [{"group": r["group"], "key": r["key"], "values": r["values"]}
                                for r in rows if r["differs"]],
                "same": sum(1 for r in rows if not r["differs"]),
                "packages": {k: diff[k] for k in ("changed", "added", "removed")} if diff else None,
                "notes": [] if diff else ["the python environments are not held where this reads, so packages "
                                          "are not compared"]}

    async def search(
            self, text: Annotated[str, Field(min_length=1, description="part of a pipeline, stage, file name or "
                                                                      "path, or an md5 or uuid (6+ characters)")],
            limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 20,
    ) -> Annotated[CallToolResult, schemas.SearchResult]:
        """Find pipelines, stages, executions and artifacts by any part of a name, or by an md5 or uuid, across
        every pipeline; exact matches first."""
        data = await self._read(self.source.search, pairs(q=text, limit=limit))
        items = [{"kind": m["kind"], "id": m["id"], "name": m["name"], "label": m["label"], "type": m["type"],
                  "pipelines": m["pipelines"], "exact": m["exact"], "uri": _hit_uri(m)} for m in data["items"]]
        notes = [f"{data['total'] - len(items):,} more matches: ask with a longer text or a larger limit"] \
            if data["total"] > len(items) else []
        return answer({"q": data["q"], "total": data["total"], "items": items, "notes": notes},
                      f"{_plural(data['total'], 'match')} for {text!r}")

    # -- resources and the prompt -----------------------------------------------------------------------

    async def pipeline_resource(self, name: str) -> str:
        """A pipeline: its stages with their executions counted, and its artifacts counted by type."""
        try:
            data = await self._read(self.source.pipeline, name)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps({**data, "uri": pipeline_uri(name)}, ensure_ascii=False)

    async def artifact_resource(self, md5: str) -> str:
        """An artifact, as get_artifact answers it."""
        return await self._resource(self.get_artifact, md5)

    async def execution_resource(self, uuid: str) -> str:
        """An execution, as get_execution answers it."""
        return await self._resource(self.get_execution, uuid)

    @staticmethod
    async def _resource(tool: Callable[[str], Any], name: str) -> str:
        try:
            result = await tool(name)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(result.structured_content, ensure_ascii=False)

    async def explain_model(self, model: str) -> str:
        """Explain how a model was made: its card and the lineage it came from, with what to tell."""
        try:
            card = (await self.model_card(model)).structured_content
            path = card["model"]
            pipeline = path["pipelines"][0] if path["pipelines"] else None
            upstream = (await self.lineage(pipeline, f"artifact:{path['id']}", 6, "up", 80)).structured_content \
                if pipeline else None
        except ToolError as exc:
            return f"cmf could not read the model {model!r}: {exc}. Say so, and suggest the search tool."
        return (f"Explain how the model {path['path']!r} ({path['uri']}) was made, from the raw data to the model: "
                "which stages ran, in which order, what each execution read, its parameters and command, what it "
                "wrote, and the metrics that describe the result.  Cite every record by its cmf:// URI, and say "
                "what the metadata does not tell.  Here is what cmf holds.\n\n"
                f"Model card:\n{json.dumps(card, ensure_ascii=False, indent=1)}\n\n"
                f"Lineage upstream of the model (up to 6 hops):\n"
                f"{json.dumps(upstream, ensure_ascii=False, indent=1) if upstream else 'none recorded'}")


def _distances(focus: str, edges: List[Dict[str, Any]]) -> Dict[str, int]:
    """Hops from ``focus`` to every node joined to it by ``edges``, either way."""
    neighbours: Dict[str, List[str]] = {}
    for e in edges:
        neighbours.setdefault(e["source"], []).append(e["target"])
        neighbours.setdefault(e["target"], []).append(e["source"])
    distance, queue = {focus: 0}, deque([focus])
    while queue:
        node = queue.popleft()
        for other in neighbours.get(node, ()):
            if other not in distance:
                distance[other] = distance[node] + 1
                queue.append(other)
    return distance


def _hit_uri(m: Dict[str, Any]) -> Optional[str]:
    if m["kind"] in ("pipeline", "stage"):
        return pipeline_uri(m["pipelines"][0]) if m["pipelines"] else None
    if m["kind"] == "execution":
        return execution_uri(m.get("uuid", ""), m["id"])
    return artifact_uri(m.get("md5", ""), m["id"])


def _version() -> str:
    try:
        return version("cmf-ml")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0"


TOOLS: Tuple[Tuple[str, str], ...] = (
    ("list_pipelines", "List pipelines"), ("list_executions", "List a pipeline's executions"),
    ("get_execution", "Get an execution"), ("list_artifacts", "List a pipeline's artifacts"),
    ("get_artifact", "Get an artifact"), ("lineage", "Lineage graph"), ("model_card", "Model card"),
    ("compare_executions", "Compare executions"), ("search", "Search cmf metadata"))


def create_server(source: Source) -> MCPServer:
    """The MCP server of ``source``'s metadata: nine read-only tools, three resource templates, one prompt."""
    server = MCPServer("cmf", title="cmf metadata", instructions=INSTRUCTIONS, version=_version(),
                       log_level="WARNING")
    tools = Tools(source)
    for name, title in TOOLS:
        server.add_tool(getattr(tools, name), name=name, title=title, annotations=READ_ONLY, structured_output=True)
    server.resource("cmf://pipeline/{name}", name="pipeline", mime_type="application/json")(tools.pipeline_resource)
    server.resource("cmf://artifact/{md5}", name="artifact", mime_type="application/json")(tools.artifact_resource)
    server.resource("cmf://execution/{uuid}", name="execution",
                    mime_type="application/json")(tools.execution_resource)
    server.prompt(name="explain_model", title="Explain how this model was made")(tools.explain_model)
    return server
