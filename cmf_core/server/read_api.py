"""The read API's answers that take a query: one method per ``/api`` read route, from its query to the read.

The routes of :mod:`cmf_core.server.ui` answer with these, and ``cmf mcp`` calls them in-process over an mlmd
file, or through the routes themselves over HTTP on a ``cmf server``: one read path, the same JSON either way.
A query is a mapping with ``getlist`` and ``multi_items`` (Starlette's ``QueryParams``), as a URL gives it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional

from cmf_core.server.compare import Compare
from cmf_core.server.lineage import Lineage, LineageQuery
from cmf_core.server.reads import BadRequest, Reads

__all__ = ["ReadApi"]


class ReadApi:
    """Executions, artifacts, lineage, compare and search of one :class:`Reads`, as their routes' queries ask."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads
        self.lineages = Lineage(reads)
        self.comparer = Compare(reads)

    def executions(self, name: str, q: Mapping[str, str]) -> Dict[str, Any]:
        """``/api/pipelines/{name}/executions``: stage q filter sort order page size; cols (step columns)."""
        return self.reads.executions(name, stage=q.get("stage") or None, q=q.get("q") or None,
                                     filter=q.get("filter") or None, sort=q.get("sort") or "id",
                                     order=q.get("order") or "asc", page=_number(q.get("page"), 1),
                                     size=_number(q.get("size"), 25), steps=_asks_steps(q))

    def artifacts(self, name: str, q: Mapping[str, str]) -> Dict[str, Any]:
        """``/api/pipelines/{name}/artifacts``: type stage q filter sort order page size; ``columns=0`` leaves out
        the table's columns (which custom properties there are), for a reader that shows no table."""
        return self.reads.artifacts(name, type=q.get("type") or None, stage=q.get("stage") or None,
                                    q=q.get("q") or None, filter=q.get("filter") or None, sort=q.get("sort") or "id",
                                    order=q.get("order") or "asc", page=_number(q.get("page"), 1),
                                    size=_number(q.get("size"), 25), columns=q.get("columns") != "0")

    def lineage(self, name: str, query: LineageQuery) -> Dict[str, Any]:
        """``/api/pipelines/{name}/lineage`` (its query parsed by :meth:`LineageQuery.parse`): the view; with a
        search (``q``), the view of the node it found (or the view as it was, when it found none or several) and
        what it found under ``search``."""
        if not query.q:
            return self.lineages.read(name, query)
        found = self.lineages.search(name, query.q, query.extras)
        target = replace(query, q="") if found["chosen"] is None else query.retarget(found["chosen"]["key"])
        return {**self.lineages.read(name, target), "search": found}

    def compare(self, name: str, q: Any) -> Dict[str, Any]:
        """``/api/pipelines/{name}/compare``: executions (``ids``) or artifacts (``artifacts``) side by side; see
        :mod:`cmf_core.server.compare`.  NotFound for an unknown pipeline, as its page."""
        self.reads.pipeline(name)
        diff, ref = q.get("diff") in ("1", "true", "on"), _one_id(q.get("ref"), "ref")
        if q.getlist("artifacts") and q.getlist("ids"):
            raise BadRequest("compare executions (ids=) or artifacts (artifacts=), not both at once")
        if q.getlist("artifacts"):
            return self.comparer.artifacts(_ids(q.getlist("artifacts"), "artifact"), diff, ref)
        return self.comparer.executions(_ids(q.getlist("ids")), diff, q.getlist("metric"), ref,
                                        _one_id(q.get("env"), "env"))

    def search(self, q: Mapping[str, str]) -> Dict[str, Any]:
        """``/api/search``: pipelines, stages, artifacts (by name, path or md5) and executions (by uuid) that
        ``q`` names, across every pipeline; ``limit`` matches at most."""
        return self.reads.find(q.get("q") or "", _number(q.get("limit"), 20))


def _asks_steps(query: Mapping[str, str]) -> bool:
    """Whether the executions page shows a step-metric column (``cols=step.training.loss.min``): only then are
    the runs' step-metric files read."""
    values = query.getlist("cols") if hasattr(query, "getlist") else [query.get("cols") or ""]
    return any(c.strip().startswith("step.") for value in values for c in value.split(","))


def _number(value: Optional[str], default: int) -> int:
    """A whole-number query parameter; ``default`` when it is missing or empty."""
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{value!r} is not a number") from None


def _ids(values: List[str], kind: str = "execution") -> List[int]:
    out = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                if not part.strip().isdigit():
                    raise BadRequest(f"{kind} ids are numbers, not {part!r}")
                out.append(int(part))
    return out


def _one_id(value: Optional[str], name: str) -> Optional[int]:
    """The id a compare parameter (``ref``, ``env``) names, None if it is not given."""
    if not value:
        return None
    if not value.strip().isdigit():
        raise BadRequest(f"{name} is the id of one of the records compared, not {value!r}")
    return int(value)
