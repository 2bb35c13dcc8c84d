"""The read path: what the UI pages and the ``/api`` read routes show, asked of the database one page at a time.

Each public method of :class:`Reads` answers one page (and its JSON twin) with plain dicts and lists.
Lists are ``{"total", "page", "size", "items", ...}``: sorting, filtering and paging happen in SQL on
ML Metadata's schema (fixed for the pinned ml-metadata), so showing 25 of 1,000 executions reads
25 executions.  Nothing here writes.

Names used in the pages and in filters (``lr > 0.01 and stage = train``):

* executions: ``id``, ``stage``, ``type``, ``uuid``, ``created``; ``param.K`` a custom property;
  ``metric.K`` a value logged by ``log_execution_metrics``; ``prop.K`` a property (``Git_Repo``...);
* artifacts: ``id``, ``name``, ``type``, ``uri``, ``created``, ``updated``; ``custom.K``, ``prop.K``.

A bare name is looked up in that order.  Lineage is nodes and edges with a layered layout, for a whole
pipeline or around one node with a hop count.
"""
from __future__ import annotations

import math
import posixpath
import re
import shlex
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from cmf_core.errors import CmfError
from cmf_core.server import filters
from cmf_core.server.db import SCHEMA_VERSION, Database, Session
from cmf_core.server.files import Files

__all__ = ["Reads", "NotFound", "BadRequest", "ARTIFACT_TYPES", "SCHEMA_VERSION", "execution_label"]

ARTIFACT_TYPES = ("Dataset", "Model", "Metrics", "Step_Metrics", "Dataslice", "Environment", "Label")
INPUTS, OUTPUTS = (2, 3, 5), (1, 4, 6, 7)  # MLMD event types: DECLARED_/INTERNAL_INPUT, INPUT; ...OUTPUT, PENDING
MAX_PAGE_SIZE = 500
MAX_PAGE = 10 ** 9
MAX_ID = 2 ** 63 - 1  # MLMD ids are 64-bit; larger numbers are no record (and overflow SQLite)
MAX_COMPARE = 20
#: How many producers, consumers, inputs or outputs a record's page lists before linking to the whole list.
LIST_LIMIT = 20
#: How many custom-property columns the artifacts table shows.
SHOWN_COLUMNS = 10
#: How many step-metrics files' summaries (min, max, last per column) are kept.
STEP_CACHE = 4096
#: The shortest md5 or uuid prefix a search matches (shorter ones match too much to mean a hash).
HASH_PREFIX = 6
MAX_FIND = 100
_HEX = re.compile(r"[0-9a-f-]+")


class NotFound(CmfError):
    """No pipeline, execution or artifact of that name or id (HTTP 404)."""


class BadRequest(CmfError):
    """A query parameter that cannot be used: unknown column, bad sort, bad filter (HTTP 400)."""

    exit_code = 2


def _value(row: Sequence[Any]) -> Any:
    """A property's value from its (int_value, double_value, string_value, bool_value) columns."""
    integer, double, string, boolean = row
    if integer is not None:
        return integer
    if double is not None:
        return None if math.isnan(double) else double
    if string is not None:
        return string
    if boolean is not None:
        return bool(boolean)
    return None


def _ins(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values)) or "NULL"


#: Case folding of ASCII letters only, as SQLite's lower() (and PostgreSQL's under COLLATE "C") does.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _like(text: str) -> str:
    """A LIKE pattern: ``text`` anywhere, its wildcards literal, lower-cased as the column it is matched with."""
    return "%" + text.translate(_ASCII_LOWER).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _path(name: str) -> str:
    """The workspace path in an artifact name (``path:md5[:...]``)."""
    return name.split(":", 1)[0]


def _environment_md5(path: str, inputs: List[Dict[str, Any]]) -> str:
    """The md5 the metadata logs for an execution's python environment file ``path``: that of its Environment
    input of that path, else the one cmf puts in the file's name (``python_env_<md5>.txt``); "" if neither."""
    for artifact in inputs:
        if artifact["type"] == "Environment" and _path(artifact["name"]) == path:
            return str(artifact["uri"])
    match = re.fullmatch(r"python_env_([0-9a-f]{32})\.\w+", posixpath.basename(path))
    return match.group(1) if match else ""


def execution_label(type_name: str, uuid: str, execution_id: int) -> str:
    """How a run reads on every page, the same in ``cmf server`` and ``cmf ui``: its type and the first 8 characters
    of its uuid (``Train 1f0c9a2e``), which every store holding the run shares; store-local ids differ between
    stores, so they are the fallback only for a run logged without a uuid."""
    first = uuid.split(",", 1)[0].strip()
    return f"{_short(type_name)} {first[:8]}" if first else f"{_short(type_name)} #{execution_id}"


def is_hash(text: str) -> bool:
    """Whether a search text reads as (a prefix of) an md5 or a uuid: :data:`HASH_PREFIX` hex digits or more."""
    return len(text) >= HASH_PREFIX and _HEX.fullmatch(text.lower()) is not None


def plain_id(text: str, kind: str) -> str:
    """The number of a search for ``kind:ID`` (which names that record), or a text no id has."""
    prefix = kind + ":"
    return text[len(prefix):] if text.startswith(prefix) and text[len(prefix):].isdigit() else "-"


def _short(stage: str) -> str:
    return stage.split("/", 1)[1] if "/" in stage else stage


def _stage_name(pipeline: str, stage: str) -> str:
    """The full name of a stage given by its short name (what pages show and link) or in full (``<pipeline>/...``).
    A short name may hold a ``/`` of its own: only the pipeline's prefix makes a name full."""
    return stage if stage.startswith(pipeline + "/") else f"{pipeline}/{stage}"


# -- SQL fragments ----------------------------------------------------------------------------------

_PIPELINE_EXECUTIONS = ("SELECT asn.execution_id FROM association asn JOIN parentcontext pc "
                        "ON pc.context_id = asn.context_id AND pc.parent_context_id = ?")
_EXECUTIONS_FROM = ("FROM execution e JOIN association asn ON asn.execution_id = e.id "
                    "JOIN context st ON st.id = asn.context_id JOIN parentcontext pc ON pc.context_id = st.id "
                    "JOIN type t ON t.id = e.type_id")
_ARTIFACTS_FROM = "FROM artifact a JOIN type t ON t.id = a.type_id"
_VALUE_COLUMNS = "int_value, double_value, string_value, bool_value"


#: What a property or metric holds, by name: some of "number", "text", "bool".
_Holds = Dict[str, Set[str]]
_KINDS = {"number": "numbers", "text": "text", "bool": "true/false"}
#: The SELECT list that tells, per property name, which kinds of value its rows hold (see :func:`_holds`).
_HOLDS_SQL = ("name, is_custom_property, max(CASE WHEN int_value IS NOT NULL OR double_value IS NOT NULL THEN 1 "
              "ELSE 0 END), max(CASE WHEN string_value IS NOT NULL THEN 1 ELSE 0 END), "
              "max(CASE WHEN bool_value IS NOT NULL THEN 1 ELSE 0 END)")


def _holds(rows: Iterable[Sequence[Any]], custom: bool) -> _Holds:
    """``{name: kinds}`` of the rows of a ``SELECT _HOLDS_SQL ... GROUP BY name, is_custom_property`` that are
    (or are not) custom properties: a filter compares a column with a value of a kind it holds, or says so."""
    return {r[0]: {k for k, flag in zip(("number", "text", "bool"), r[2:]) if flag} or {"text"}
            for r in rows if bool(r[1]) == custom}


@dataclass(frozen=True)
class _Entity:
    """How the SQL of one kind of record (execution ``e`` or artifact ``a``) is written."""

    alias: str
    table: str
    builtins: Dict[str, Tuple[str, str]]  # name -> (SQL expression, "number" | "text")
    custom: str  # column prefix of custom properties: "param" or "custom"
    #: Filter-only names: ``used = 12`` (the executions that read artifact 12), ``produced_by = 3`` (the artifacts
    #: execution 3 wrote): name -> (this record's event column, the other's, event types).  The pages link a long
    #: "used by" or "inputs" list to the list filtered so.
    events: Dict[str, Tuple[str, str, Tuple[int, ...]]]


EXECUTION = _Entity("e", "execution", {
    "id": ("e.id", "number"), "stage": ("st.name", "text"), "type": ("t.name", "text"),
    "created": ("e.create_time_since_epoch", "number"), "updated": ("e.last_update_time_since_epoch", "number")},
    "param", {"used": ("execution_id", "artifact_id", INPUTS), "produced": ("execution_id", "artifact_id", OUTPUTS)})
ARTIFACT = _Entity("a", "artifact", {
    "id": ("a.id", "number"), "name": ("a.name", "text"), "type": ("t.name", "text"), "uri": ("a.uri", "text"),
    "created": ("a.create_time_since_epoch", "number"), "updated": ("a.last_update_time_since_epoch", "number")},
    "custom", {"used_by": ("artifact_id", "execution_id", INPUTS),
               "produced_by": ("artifact_id", "execution_id", OUTPUTS)})


class _Columns:
    """Resolves column names of one list (builtins, custom properties, metrics, properties) into SQL."""

    def __init__(self, s: Session, entity: _Entity, pipeline: str, custom: _Holds, props: _Holds,
                 metrics: Optional[_Holds] = None) -> None:
        self.bytewise = s.bytewise
        self.entity = entity
        self.pipeline = pipeline
        self.custom, self.props, self.metrics = custom, props, metrics or {}

    def resolve(self, name: str) -> Tuple[str, str]:
        """``(kind, key)``: kind is "builtin", "custom", "metric" or "prop"; BadRequest for an unknown name."""
        prefix, _, key = name.partition(".")
        if name in self.entity.builtins or (name == "uuid" and self.entity is EXECUTION):
            return ("prop", "Execution_uuid") if name == "uuid" else ("builtin", name)
        if name in self.entity.events:
            return "event", name
        for kind, prefixed, known in (("custom", self.entity.custom, self.custom), ("metric", "metric", self.metrics),
                                      ("prop", "prop", self.props)):
            if key and prefix == prefixed and key in known:
                return kind, key
        for kind, known in (("custom", self.custom), ("metric", self.metrics), ("prop", self.props)):
            if name in known:
                return kind, name
        known = sorted(self.entity.builtins) + sorted(self.entity.events) + sorted(
            f"{self.entity.custom}.{k}" for k in self.custom) + sorted(
            f"metric.{k}" for k in self.metrics)
        raise BadRequest(f"unknown column {name!r}; the columns are: {', '.join(known)}")

    def value_sql(self, kind: str, key: str) -> Tuple[str, List[Any], str]:
        """``(subquery, params, alias)``: the row holding ``key``'s value for the current record, its columns
        left as ``{col}`` and named through ``alias`` (a metric's newest value, or a property row)."""
        a = self.entity.alias
        if kind == "metric":
            return ("SELECT {col} FROM event mev JOIN artifact ma ON ma.id = mev.artifact_id "
                    "JOIN type mt ON mt.id = ma.type_id AND mt.name = 'Metrics' "
                    "JOIN artifactproperty mp ON mp.artifact_id = ma.id AND mp.name = ? "
                    f"AND mp.is_custom_property = TRUE WHERE mev.execution_id = {a}.id "
                    f"AND mev.type IN ({_ins(OUTPUTS)})"), [key, *OUTPUTS], "mp"
        table = self.entity.table
        return (f"SELECT {{col}} FROM {table}property sp WHERE sp.{table}_id = {a}.id AND sp.name = ? "
                f"AND sp.is_custom_property = {'TRUE' if kind == 'custom' else 'FALSE'}"), [key], "sp"

    def sort(self, name: str, descending: bool) -> Tuple[str, List[Any], str, List[Any]]:
        """``(join, its params, ORDER BY, its params)`` for ``name``: rows without a value last, numbers by value,
        then text; ties by id.

        A property is joined once, on its table's primary key (record, name, custom), so each row costs one index
        lookup.  Three correlated subqueries per row (missing, number, text) were planned by PostgreSQL on the
        (name, custom, value) index while its statistics lagged behind a stream of pushes: every row scanned every
        row of that name, 40-200 ms a page at 1,000 executions.  A metric (the newest of an execution's outputs)
        stays a subquery."""
        direction = "DESC" if descending else "ASC"
        a = self.entity.alias
        kind, key = self.resolve(name)
        if kind == "event":
            raise BadRequest(f"{name} can filter ({name} = ID), not sort")
        if kind == "builtin":
            expression, sort = self.entity.builtins[key]
            expression = self.bytewise(expression) if sort == "text" else expression
            return "", [], f"{expression} {direction} NULLS LAST, {a}.id {direction}", []
        if kind == "metric":
            sql, params, p = self.value_sql(kind, key)
            join, join_params, order_params = "", [], params * 3
            missing = f"NOT EXISTS ({sql.format(col='1')})"
            number = f"({sql.format(col=f'coalesce({p}.double_value, {p}.int_value)')} ORDER BY ma.id DESC LIMIT 1)"
            text = f"({sql.format(col=f'{p}.string_value')} ORDER BY ma.id DESC LIMIT 1)"
        else:
            table = self.entity.table
            join = (f"LEFT JOIN {table}property so ON so.{table}_id = {a}.id AND so.name = ? "
                    f"AND so.is_custom_property = {'TRUE' if kind == 'custom' else 'FALSE'}")
            join_params, order_params = [key], []
            missing = f"so.{table}_id IS NULL"
            number, text = "coalesce(so.double_value, so.int_value)", "so.string_value"
        # NULLS LAST: the databases put NULLs at opposite ends; numbers come before text either way
        order = f"{missing}, {number} {direction} NULLS LAST, {self.bytewise(text)} {direction} NULLS LAST, " \
                f"{a}.id {direction}"
        return join, join_params, order, order_params

    def where(self, tree: filters.Node) -> Tuple[str, List[Any]]:
        """A WHERE fragment for a parsed filter."""
        if isinstance(tree, filters.Logical):
            parts = [self.where(part) for part in tree.parts]
            return "(" + f" {tree.op.upper()} ".join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
        if isinstance(tree, filters.Not):
            sql, params = self.where(tree.part)
            return f"NOT {sql}", params
        kind, key = self.resolve(tree.column)
        if kind == "event":
            mine, other, types = self.entity.events[key]
            if tree.op != "=" or type(tree.value) is not int:
                raise BadRequest(f"{key} takes an id: {key} = ID, not {key} {tree.op} {tree.text}")
            return (f"EXISTS (SELECT 1 FROM event fe WHERE fe.{mine} = {self.entity.alias}.id AND fe.{other} = ? "
                    f"AND fe.type IN ({_ins(types)}))", [tree.value, *types])
        if kind == "builtin":
            expression, sort = self.entity.builtins[key]
            text = tree.text
            if key == "stage" and tree.op in ("=", "!="):
                text = _stage_name(self.pipeline, text)
            return self._compare(tree, expression, sort, text)
        sql, params, p = self.value_sql(kind, key)
        holds = {"custom": self.custom, "metric": self.metrics, "prop": self.props}[kind][key]
        wanted = "text" if tree.op == "~" or isinstance(tree.value, str) else \
            "bool" if isinstance(tree.value, bool) else "number"
        if wanted == "number" and wanted not in holds and "text" in holds:
            wanted = "text"  # version = 2 on a column of text compares with the text "2"
        if wanted not in holds:
            values = " and ".join(_KINDS[k] for k in sorted(holds))
            how = "~ (contains) looks into text" if tree.op == "~" else f"compare it with {_KINDS[sorted(holds)[0]]}"
            raise BadRequest(f"{tree.column} holds {values}: {how}, not {tree.text!r}")
        column = {"text": f"{p}.string_value", "bool": f"{p}.bool_value",
                  "number": f"coalesce({p}.double_value, {p}.int_value)"}[wanted]
        condition, values = self._compare(tree, column, wanted, tree.text)
        return f"EXISTS ({sql.format(col='1')} AND {condition})", [*params, *values]

    def _compare(self, tree: filters.Compare, column: str, sort: str, text: str) -> Tuple[str, List[Any]]:
        """SQL comparing ``column``, which holds ``sort`` values ("number", "text" or "bool"), with the filter's
        value; checked here, so that both databases answer the same 400 instead of comparing across types
        (PostgreSQL refuses ``integer = boolean`` with an error, SQLite reads true as 1).  A text column is
        compared with the value as typed, ``~`` (contains) with any column as text."""
        op = "<>" if tree.op == "!=" else tree.op
        if tree.op == "~":
            return f"lower({self.bytewise(f'CAST({column} AS TEXT)')}) LIKE ? ESCAPE '\\'", [_like(text)]
        if sort == "text":
            return f"{self.bytewise(column)} {op} ?", [text]
        if sort == "bool" and tree.op not in ("=", "!="):
            raise BadRequest(f"true/false can only be compared with = or != (in {tree.column} {tree.op} {text})")
        if sort == "number" and type(tree.value) not in (int, float):
            raise BadRequest(f"{tree.column} holds numbers: compare it with a number, not {text!r}")
        return f"{column} {op} ?", [tree.value]


class Reads:
    """Every read of the UI and the read API over one :class:`Database` and the files beside it."""

    def __init__(self, db: Database, files: Files) -> None:
        self.db = db
        self.files = files
        self._step_cache: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]] = {}
        self._step_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _pipeline_id(s: Session, name: str) -> int:
        found = s.value("SELECT c.id FROM context c JOIN type t ON t.id = c.type_id "
                        "WHERE t.name = 'Parent_Context' AND c.name = ?", [name])
        if found is None:
            raise NotFound(f"there is no pipeline named {name!r}")
        return int(found)

    @staticmethod
    def _props(s: Session, table: str, ids: Sequence[int]) -> Dict[int, Tuple[Dict[str, Any], Dict[str, Any]]]:
        """``{id: (properties, custom properties)}`` of artifacts/executions/contexts, one query."""
        out: Dict[int, Tuple[Dict[str, Any], Dict[str, Any]]] = {i: ({}, {}) for i in ids}
        if not ids:
            return out
        among, args = s.among(f"{table}_id", ids)
        for row in s.rows(f"SELECT {table}_id, name, is_custom_property, {_VALUE_COLUMNS} FROM {table}property "
                          f"WHERE {among} ORDER BY {s.bytewise('name')}", args):
            out[row[0]][1 if row[2] else 0][row[1]] = _value(row[3:])
        return out

    def _artifact_summaries(self, s: Session, ids: Sequence[int]) -> Dict[int, Dict[str, Any]]:
        if not ids:
            return {}
        among, args = s.among("a.id", ids)
        rows = s.rows(f"SELECT a.id, a.name, t.name, a.uri {_ARTIFACTS_FROM} WHERE {among}", args)
        return {r[0]: {"id": r[0], "name": r[1] or "", "type": r[2], "uri": r[3] or "",
                       "label": posixpath.basename(_path(r[1] or "")) or r[1] or f"artifact {r[0]}"} for r in rows}

    def _execution_summaries(self, s: Session, ids: Sequence[int]) -> Dict[int, Dict[str, Any]]:
        if not ids:
            return {}
        among, args = s.among("e.id", ids)
        rows = s.rows("SELECT e.id, t.name, st.name, p.name, u.string_value FROM execution e "
                      "JOIN type t ON t.id = e.type_id "
                      "LEFT JOIN executionproperty u ON u.execution_id = e.id AND u.name = 'Execution_uuid' "
                      "AND u.is_custom_property = FALSE "
                      "LEFT JOIN association asn ON asn.execution_id = e.id "
                      "LEFT JOIN context st ON st.id = asn.context_id "
                      "LEFT JOIN parentcontext pc ON pc.context_id = st.id "
                      "LEFT JOIN context p ON p.id = pc.parent_context_id "
                      f"WHERE {among}", args)
        return {r[0]: {"id": r[0], "type": r[1], "stage": _short(r[2] or ""), "pipeline": r[3] or "",
                       "uuid": r[4] or "", "label": execution_label(r[1], r[4] or "", r[0])} for r in rows}

    @staticmethod
    def _page(page: int, size: int) -> Tuple[int, int]:
        if not 1 <= page <= MAX_PAGE:
            raise BadRequest(f"page numbers are between 1 and {MAX_PAGE}")
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise BadRequest(f"the page size must be between 1 and {MAX_PAGE_SIZE}")
        return page, size

    @staticmethod
    def _search(s: Session, alias: str, table: str, extra: Sequence[str], q: str) -> Tuple[str, List[Any]]:
        """Free text: any of the ``extra`` columns or any text property contains ``q`` (ASCII case-insensitive)."""
        pattern = _like(q)
        columns = " OR ".join(f"lower({s.bytewise(c)}) LIKE ? ESCAPE '\\'" for c in extra)
        return (f"({columns} OR CAST({alias}.id AS TEXT) = ? OR EXISTS (SELECT 1 FROM {table}property qp "
                f"WHERE qp.{table}_id = {alias}.id AND lower({s.bytewise('qp.string_value')}) LIKE ? ESCAPE '\\'))",
                [*([pattern] * len(extra)), q.strip(), pattern])

    # -- the database ------------------------------------------------------------------------------------

    # -- pipelines ---------------------------------------------------------------------------------------

    def pipelines(self, page: int = 1, size: int = 100) -> Dict[str, Any]:
        """Every pipeline: its stages, executions and artifacts counted, and when it last changed."""
        page, size = self._page(page, size)
        with self.db.session() as s:
            total = s.value("SELECT count(*) FROM context c JOIN type t ON t.id = c.type_id "
                            "WHERE t.name = 'Parent_Context'")
            rows = s.rows(
                "SELECT c.id, c.name, c.create_time_since_epoch, c.last_update_time_since_epoch, "
                "(SELECT count(*) FROM parentcontext pc WHERE pc.parent_context_id = c.id), "
                f"(SELECT count(*) FROM ({_PIPELINE_EXECUTIONS.replace('?', 'c.id')}) x), "
                f"(SELECT count(DISTINCT ev.artifact_id) FROM event ev WHERE ev.execution_id IN "
                f"({_PIPELINE_EXECUTIONS.replace('?', 'c.id')})), "
                "(SELECT max(e.last_update_time_since_epoch) FROM execution e WHERE e.id IN "
                f"({_PIPELINE_EXECUTIONS.replace('?', 'c.id')})) "
                "FROM context c JOIN type t ON t.id = c.type_id WHERE t.name = 'Parent_Context' "
                f"ORDER BY {s.bytewise('c.name')} LIMIT ? OFFSET ?", [size, (page - 1) * size])
        items = [{"id": r[0], "name": r[1], "created": r[2], "stages": r[4], "executions": r[5], "artifacts": r[6],
                  "updated": max(x for x in (r[3], r[7]) if x is not None)} for r in rows]
        return {"total": total, "page": page, "size": size, "items": items}

    def pipeline(self, name: str) -> Dict[str, Any]:
        """A pipeline's stages (with their execution counts) and the artifact types it has."""
        with self.db.session() as s:
            pipeline_id = self._pipeline_id(s, name)
            stages = s.rows("SELECT st.id, st.name, "
                            "(SELECT count(*) FROM association asn WHERE asn.context_id = st.id) "
                            "FROM parentcontext pc JOIN context st ON st.id = pc.context_id "
                            "WHERE pc.parent_context_id = ? ORDER BY st.id", [pipeline_id])
            types = s.rows("SELECT t.name, count(DISTINCT a.id) FROM artifact a JOIN type t ON t.id = a.type_id "
                           f"WHERE a.id IN (SELECT ev.artifact_id FROM event ev WHERE ev.execution_id IN "
                           f"({_PIPELINE_EXECUTIONS})) GROUP BY t.name ORDER BY {s.bytewise('t.name')}", [pipeline_id])
            props, custom = self._props(s, "context", [pipeline_id])[pipeline_id]
        return {"id": pipeline_id, "name": name, "properties": props, "custom_properties": custom,
                "stages": [{"id": r[0], "name": r[1], "short": _short(r[1]), "executions": r[2]} for r in stages],
                "artifact_types": {t: n for t, n in types}}

    def find(self, q: str, limit: int = 20) -> Dict[str, Any]:
        """What ``q`` names across every pipeline: a pipeline or a stage by (part of) its name, an artifact by
        (part of) its path or by its md5 (a prefix of at least :data:`HASH_PREFIX` hex digits), an execution by
        its uuid (a prefix as long); ``artifact:ID`` and ``execution:ID`` name one record.  Exact matches (a
        whole name, path, file name, md5 or uuid) first, then pipelines, stages, executions and artifacts by id;
        the first ``limit``, and ``total`` of them all."""
        text = q.strip()
        if not text:
            raise BadRequest("search for part of a pipeline, stage or file name, or an md5 or uuid of at least "
                             f"{HASH_PREFIX} characters")
        if not 1 <= limit <= MAX_FIND:
            raise BadRequest(f"limit is between 1 and {MAX_FIND}")
        lower, hashed = text.lower(), is_hash(text)
        pattern, prefix = _like(text), _like(text)[1:] if hashed else "\x01"
        found: List[Dict[str, Any]] = []
        with self.db.session() as s:
            name = f"lower({s.bytewise('c.name')}) LIKE ? ESCAPE '\\'"
            where = f"FROM context c JOIN type t ON t.id = c.type_id WHERE t.name = 'Parent_Context' AND {name}"
            total = s.value(f"SELECT count(*) {where}", [pattern])
            for pipeline_id, pipeline in s.rows(f"SELECT c.id, c.name {where} ORDER BY c.id LIMIT ?", [pattern, limit]):
                found.append({"kind": "pipeline", "id": pipeline_id, "name": pipeline, "label": pipeline,
                              "type": "pipeline", "pipelines": [pipeline], "exact": lower == pipeline.lower()})
            short = "substr(c.name, length(p.name) + 2)"
            where = (f"FROM parentcontext pc JOIN context c ON c.id = pc.context_id JOIN context p ON p.id = "
                     f"pc.parent_context_id WHERE lower({s.bytewise(short)}) LIKE ? ESCAPE '\\'")
            total += s.value(f"SELECT count(*) {where}", [pattern])
            for stage_id, stage, pipeline in s.rows(f"SELECT c.id, {short}, p.name {where} ORDER BY c.id LIMIT ?",
                                                    [pattern, limit]):
                found.append({"kind": "stage", "id": stage_id, "name": stage, "label": stage, "type": "stage",
                              "pipelines": [pipeline], "exact": lower == stage.lower()})
            uuid = "lower(u.string_value)"
            where = ("FROM execution e LEFT JOIN executionproperty u ON u.execution_id = e.id AND u.name = "
                     f"'Execution_uuid' AND u.is_custom_property = FALSE WHERE {uuid} LIKE ? OR {uuid} LIKE ? "
                     "OR CAST(e.id AS TEXT) = ?")
            args = [lower + "%" if hashed else "\x01", "%," + lower + "%" if hashed else "\x01",
                    plain_id(lower, "execution")]
            total += s.value(f"SELECT count(*) {where}", args)
            rows = s.rows(f"SELECT e.id, coalesce(u.string_value, '') {where} ORDER BY e.id LIMIT ?", [*args, limit])
            executions = self._execution_summaries(s, [r[0] for r in rows])
            for execution_id, uuids in rows:
                ids = [u.strip().lower() for u in uuids.split(",")]
                found.append({**executions[execution_id], "kind": "execution", "name": uuids,
                              "pipelines": [executions[execution_id]["pipeline"]],
                              "exact": lower in (*ids, f"execution:{execution_id}")})
            where = (f"{_ARTIFACTS_FROM} WHERE lower({s.bytewise('a.name')}) LIKE ? ESCAPE '\\' OR a.uri LIKE ? "
                     "ESCAPE '\\' OR CAST(a.id AS TEXT) = ?")
            args = [pattern, prefix, plain_id(lower, "artifact")]
            total += s.value(f"SELECT count(*) {where}", args)
            rows = s.rows(f"SELECT a.id {where} ORDER BY a.id LIMIT ?", [*args, limit])
            artifacts = self._artifact_summaries(s, [r[0] for r in rows])
            pipelines = self._artifact_pipelines(s, list(artifacts))
            for (artifact_id,) in rows:
                artifact = artifacts[artifact_id]
                path = _path(artifact["name"]).lower()
                found.append({**artifact, "kind": "artifact", "md5": artifact["uri"],
                              "pipelines": pipelines.get(artifact_id, []),
                              "exact": lower in (path, posixpath.basename(path), artifact["name"].lower(),
                                                 artifact["uri"].lower(), f"artifact:{artifact_id}")})
        kinds = ("pipeline", "stage", "execution", "artifact")
        found.sort(key=lambda m: (not m["exact"], kinds.index(m["kind"]), m["id"]))
        return {"q": text, "total": total, "limit": limit, "items": found[:limit]}

    @staticmethod
    def _artifact_pipelines(s: Session, ids: Sequence[int]) -> Dict[int, List[str]]:
        """``{artifact id: the pipelines whose executions used or produced it}``."""
        out: Dict[int, List[str]] = defaultdict(list)
        if ids:
            among, args = s.among("ev.artifact_id", ids)
            for artifact_id, pipeline in s.rows(
                    "SELECT DISTINCT ev.artifact_id, p.name FROM event ev JOIN association asn ON asn.execution_id = "
                    "ev.execution_id JOIN parentcontext pc ON pc.context_id = asn.context_id JOIN context p ON "
                    f"p.id = pc.parent_context_id WHERE {among} ORDER BY p.name", args):
                out[artifact_id].append(pipeline)
        return out

    # -- lists -------------------------------------------------------------------------------------------

    def executions(self, pipeline: str, *, stage: Optional[str] = None, q: Optional[str] = None,
                   filter: Optional[str] = None, sort: str = "id", order: str = "asc", page: int = 1,
                   size: int = 25, steps: bool = False) -> Dict[str, Any]:
        """One page of a pipeline's executions, one column per parameter and per metric; with ``steps``, also the
        min, max and last value of each step metric column (read from the files, so asked for, not by default)."""
        page, size = self._page(page, size)
        if order not in ("asc", "desc"):
            raise BadRequest("order is asc or desc")
        with self.db.session() as s:
            pipeline_id = self._pipeline_id(s, pipeline)
            in_pipeline = f"IN ({_PIPELINE_EXECUTIONS})"
            names = s.rows(f"SELECT {_HOLDS_SQL} FROM executionproperty WHERE execution_id {in_pipeline} "
                           "GROUP BY name, is_custom_property", [pipeline_id])
            metric_names = _holds(s.rows(
                f"SELECT {_HOLDS_SQL} FROM artifactproperty WHERE is_custom_property = TRUE AND artifact_id IN "
                "(SELECT ev.artifact_id FROM event ev JOIN artifact a ON a.id = ev.artifact_id JOIN type t ON "
                f"t.id = a.type_id AND t.name = 'Metrics' WHERE ev.execution_id {in_pipeline}) "
                "GROUP BY name, is_custom_property", [pipeline_id]), custom=True)
            params, metrics = sorted(_holds(names, custom=True)), sorted(metric_names)
            columns = _Columns(s, EXECUTION, pipeline, _holds(names, custom=True), _holds(names, custom=False),
                               metric_names)
            where, args = ["pc.parent_context_id = ?"], [pipeline_id]
            if stage:
                where.append("st.name = ?")
                args.append(_stage_name(pipeline, stage))
            where, args = self._narrow(s, columns, where, args, ["st.name", "t.name", "coalesce(e.name, '')"], q,
                                       filter)
            total, rows = self._list(
                s, columns, f"SELECT {{}} {_EXECUTIONS_FROM}", where, args,
                "e.id, st.name, t.name, e.create_time_since_epoch, e.last_update_time_since_epoch",
                sort, order, page, size, bool(q or filter))
            ids = [r[0] for r in rows]
            props = self._props(s, "execution", ids)
            values = self._metric_values(s, ids)
            step_files = self._step_files(s, ids, pipeline_id)
        summaries: Dict[int, Dict[str, Any]] = defaultdict(dict)
        step_columns: Dict[str, None] = {}
        for execution, name, uri in step_files:
            summary = self._step_summary(name, uri)
            step_columns.update(dict.fromkeys(summary))
            if steps and execution in ids:
                summaries[execution].update(summary)
        items = [{"id": r[0], "stage": _short(r[1]), "type": r[2], "created": r[3], "updated": r[4],
                  "label": execution_label(r[2], props[r[0]][0].get("Execution_uuid", ""), r[0]),
                  "uuid": props[r[0]][0].get("Execution_uuid", ""), "command": props[r[0]][0].get("Execution", ""),
                  "params": props[r[0]][1], "metrics": values.get(r[0], {}),
                  **({"steps": summaries.get(r[0], {})} if steps else {})} for r in rows]
        return {"pipeline": pipeline, "total": total, "page": page, "size": size, "sort": sort, "order": order,
                "stage": stage, "q": q, "filter": filter,
                "columns": {"params": params, "metrics": metrics, "steps": sorted(step_columns)}, "items": items}

    def _step_files(self, s: Session, ids: Sequence[int], pipeline_id: int) -> List[Tuple[int, str, str]]:
        """(execution, name, md5) of the step metrics written by the executions ``ids``, and of the newest one of
        each name in the pipeline (whose columns the column chooser offers)."""
        step = ("SELECT ev.execution_id, a.name, a.uri FROM event ev JOIN artifact a ON a.id = ev.artifact_id "
                "JOIN type t ON t.id = a.type_id AND t.name = 'Step_Metrics' "
                f"WHERE ev.type IN ({_ins(OUTPUTS)}) AND ")
        newest: Dict[str, Tuple[int, str, str]] = {}
        for row in s.rows(step + f"ev.execution_id IN ({_PIPELINE_EXECUTIONS}) ORDER BY a.id DESC",
                          [*OUTPUTS, pipeline_id]):
            newest.setdefault(posixpath.basename(_path(row[1])), row)
        mine = s.rows(step + f"ev.execution_id IN ({_ins(ids)}) ORDER BY a.id", [*OUTPUTS, *ids]) if ids else []
        return list(newest.values()) + mine

    def _step_summary(self, name: str, md5: str) -> Dict[str, Dict[str, Any]]:
        """``{"<step metrics name>.<column>": {"min", "max", "last"}}`` of one Step_Metrics file held here ({} if
        not held).  Kept by md5 (the same md5 is the same bytes), so that pages read each file once; a file not
        held is asked for again next time (cmf ui's workspace may get it)."""
        with self._step_lock:
            if (name, md5) in self._step_cache:
                return self._step_cache[(name, md5)]
        data = self.files.step_metrics(_path(name), md5)
        if data is None:
            return {}
        out: Dict[str, Dict[str, Any]] = {}
        for column, values in data["series"].items():
            numbers = [v for v in values if v is not None]
            if numbers:
                out[f"{posixpath.basename(_path(name))}.{column}"] = {"min": min(numbers), "max": max(numbers),
                                                                      "last": values[-1]}
        with self._step_lock:
            if len(self._step_cache) >= STEP_CACHE:
                self._step_cache.pop(next(iter(self._step_cache)))
            self._step_cache[(name, md5)] = out
        return out

    def _narrow(self, s: Session, columns: _Columns, where: List[str], args: List[Any], searched: Sequence[str],
                q: Optional[str], filter: Optional[str]) -> Tuple[List[str], List[Any]]:
        """``where`` and its ``args`` narrowed by free text ``q`` (in ``searched`` columns or any text property) and
        a structured ``filter``."""
        where, args = list(where), list(args)
        entity = columns.entity
        narrowed = [self._search(s, entity.alias, entity.table, searched, q)] if q else []
        narrowed += [columns.where(filters.parse(filter))] if filter else []
        for sql, values in narrowed:
            where.append(sql)
            args += values
        return where, args

    def _list(self, s: Session, columns: _Columns, select: str, where: List[str], args: List[Any], shown: str,
              sort: str, order: str, page: int, size: int, narrowed: bool,
              total: Optional[int] = None) -> Tuple[int, List[Tuple]]:
        """(total, the rows of one page) of a list: the records ``where`` selects, sorted by any column; ``shown``
        columns selected.  ``select`` has no parameters: the sort's join, and its parameters, go right after it.
        A page past the end is a BadRequest naming the last page (``narrowed``: by a search or filter).
        ``total``: how many records ``where`` selects, when the caller counted them already."""
        join, join_args, order_sql, order_args = columns.sort(sort, order == "desc")
        condition = " AND ".join(where)
        if total is None:
            total = s.value(f"{select.format('count(*)')} WHERE {condition}", args)
        if page > 1 and (page - 1) * size >= total:
            last = max(1, -(-total // size))
            raise BadRequest(f"page {page} is past the end: {total} {columns.entity.table}s"
                             f"{' match' if narrowed else ''} make {last} page{'s' if last > 1 else ''} of {size}; "
                             f"the last is page {last}")
        rows = s.rows(f"{select.format(shown)} {join} WHERE {condition} ORDER BY {order_sql} LIMIT ? OFFSET ?",
                      [*join_args, *args, *order_args, size, (page - 1) * size])
        return total, rows

    def _metric_values(self, s: Session, execution_ids: Sequence[int]) -> Dict[int, Dict[str, Any]]:
        """``{execution id: {metric: value}}`` from the Metrics artifacts the executions output (newest wins)."""
        out: Dict[int, Dict[str, Any]] = defaultdict(dict)
        if execution_ids:
            values = ", ".join("ap." + c for c in _VALUE_COLUMNS.split(", "))
            for row in s.rows(f"SELECT ev.execution_id, ap.name, {values} "
                              "FROM event ev JOIN artifact a ON a.id = ev.artifact_id JOIN type t ON t.id = a.type_id "
                              "AND t.name = 'Metrics' JOIN artifactproperty ap ON ap.artifact_id = a.id AND "
                              f"ap.is_custom_property = TRUE WHERE ev.execution_id IN ({_ins(execution_ids)}) "
                              f"AND ev.type IN ({_ins(OUTPUTS)}) ORDER BY a.id", [*execution_ids, *OUTPUTS]):
                out[row[0]][row[1]] = _value(row[2:])
        return out

    def artifacts(self, pipeline: str, *, type: Optional[str] = None, stage: Optional[str] = None,
                  q: Optional[str] = None, filter: Optional[str] = None, sort: str = "id", order: str = "asc",
                  page: int = 1, size: int = 25, columns: bool = True) -> Dict[str, Any]:
        """One page of the artifacts the pipeline's executions used or produced, by type and stage.  Without
        ``columns`` (a reader that shows no table: ``cmf mcp``), ``columns`` is None, and the scans of which
        custom properties there are (a third of the time at 10,000 artifacts) run only if a filter or sort needs
        them."""
        page, size = self._page(page, size)
        if order not in ("asc", "desc"):
            raise BadRequest("order is asc or desc")
        with self.db.session() as s:
            pipeline_id = self._pipeline_id(s, pipeline)
            executions, args = _PIPELINE_EXECUTIONS, [pipeline_id]
            if stage:
                executions += " AND asn.context_id = (SELECT id FROM context WHERE name = ? AND id IN " \
                              "(SELECT context_id FROM parentcontext WHERE parent_context_id = ?))"
                args += [_stage_name(pipeline, stage), pipeline_id]
            linked = f"a.id IN (SELECT ev.artifact_id FROM event ev WHERE ev.execution_id IN ({executions}))"
            names = s.rows(f"SELECT {_HOLDS_SQL} FROM artifactproperty WHERE artifact_id IN (SELECT ev.artifact_id "
                           f"FROM event ev WHERE ev.execution_id IN ({_PIPELINE_EXECUTIONS})) "
                           "GROUP BY name, is_custom_property", [pipeline_id]) \
                if columns or filter or sort not in ARTIFACT.builtins else []
            known = _Columns(s, ARTIFACT, pipeline, _holds(names, custom=True), _holds(names, custom=False))
            linked_args = list(args)
            where, args = self._narrow(s, known, [linked], args,
                                       ["coalesce(a.name, '')", "coalesce(a.uri, '')", "t.name"], q, filter)
            condition = " AND ".join(where)
            counts = dict(s.rows(f"SELECT t.name, count(*) {_ARTIFACTS_FROM} WHERE {condition} GROUP BY t.name",
                                 args))
            if type:
                where, args = [*where, "t.name = ?"], [*args, type]
            total, rows = self._list(
                s, known, f"SELECT {{}} {_ARTIFACTS_FROM}", where, args,
                "a.id, a.name, t.name, a.uri, a.create_time_since_epoch, a.last_update_time_since_epoch",
                sort, order, page, size, bool(q or filter),
                total=counts.get(type, 0) if type else sum(counts.values()))  # the tabs' counts sum to it
            props = self._props(s, "artifact", [r[0] for r in rows])
            shown = self._common_custom(s, linked, linked_args, type, counts) if columns else None
        items = [{"id": r[0], "name": r[1] or "", "label": posixpath.basename(_path(r[1] or "")), "type": r[2],
                  "uri": r[3] or "", "created": r[4], "updated": r[5], "properties": props[r[0]][0],
                  "custom_properties": props[r[0]][1]} for r in rows]
        return {"pipeline": pipeline, "total": total, "page": page, "size": size, "sort": sort, "order": order,
                "type": type, "stage": stage, "q": q, "filter": filter,
                "columns": {"custom": sorted(known.custom), "shown": shown} if columns else None,
                "type_counts": counts, "items": items}

    @staticmethod
    def _common_custom(s: Session, linked: str, args: List[Any], type: Optional[str],
                       counts: Dict[str, int]) -> List[str]:
        """The custom properties worth a column: of one type's artifacts, those that at least one holds; of all
        types, those that at least half of the artifacts hold (a column of mostly empty cells helps nobody);
        the most held first, at most :data:`SHOWN_COLUMNS`."""
        scope, values = (f"{linked} AND t.name = ?", [*args, type]) if type else (linked, args)
        held = s.rows(f"SELECT ap.name, count(*) FROM artifactproperty ap JOIN artifact a ON a.id = ap.artifact_id "
                      f"JOIN type t ON t.id = a.type_id WHERE ap.is_custom_property = TRUE AND {scope} "
                      "GROUP BY ap.name", values)
        least = 1 if type else (sum(counts.values()) + 1) // 2
        return [name for name, n in sorted(held, key=lambda r: (-r[1], r[0])) if n >= least][:SHOWN_COLUMNS]

    # -- one execution, one artifact ---------------------------------------------------------------------

    def _events(self, s: Session, column: str, node_id: int) -> Tuple[List[int], List[int]]:
        """(ids linked as inputs, ids linked as outputs) of an execution's artifacts or an artifact's executions."""
        other = "artifact_id" if column == "execution_id" else "execution_id"
        ins, outs = [], []
        for other_id, kind in s.rows(f"SELECT {other}, type FROM event WHERE {column} = ? ORDER BY {other}", [node_id]):
            (ins if kind in INPUTS else outs if kind in OUTPUTS else []).append(other_id)
        return ins, outs

    def _record(self, s: Session, table: str, record_id: int) -> Tuple[Dict[str, Any], int, int, Dict, Dict]:
        """(summary, created, updated, properties, custom properties) of one artifact or execution; NotFound."""
        _known_id(table, record_id)
        summaries = self._execution_summaries if table == "execution" else self._artifact_summaries
        summary = summaries(s, [record_id]).get(record_id)
        if summary is None:
            raise NotFound(f"there is no {table} with id {record_id}")
        created, updated = s.rows(f"SELECT create_time_since_epoch, last_update_time_since_epoch FROM {table} "
                                  "WHERE id = ?", [record_id])[0]
        props, custom = self._props(s, table, [record_id])[record_id]
        return summary, created, updated, props, custom

    def execution(self, execution_id: int) -> Dict[str, Any]:
        """An execution: properties, parameters, command, git commits, environment, inputs, outputs, metrics."""
        with self.db.session() as s:
            summary, created, updated, props, custom = self._record(s, "execution", execution_id)
            ins, outs = self._events(s, "execution_id", execution_id)
            artifacts = self._artifact_summaries(s, ins + outs)
            metrics_ids = [i for i in outs if artifacts[i]["type"] == "Metrics"]
            metric_props = self._props(s, "artifact", metrics_ids)
        env = str(custom.get("Python_Env") or "")
        env_md5 = _environment_md5(env, [artifacts[i] for i in ins])
        steps = [self._step_metrics(artifacts[i]) for i in outs if artifacts[i]["type"] == "Step_Metrics"]
        return {**summary, "created": created, "updated": updated, "uuid": props.get("Execution_uuid", ""),
                "command": props.get("Execution", ""), "properties": props, "params": custom,
                "git": {"repo": props.get("Git_Repo", ""), "start": props.get("Git_Start_Commit", ""),
                        "end": props.get("Git_End_Commit", "")},
                "environment": {"path": env, "text": self.files.environment(env, env_md5) if env else None},
                **_bounded("inputs", [artifacts[i] for i in ins]), **_bounded("outputs", [artifacts[i] for i in outs]),
                "metrics": [{"artifact": artifacts[i], "values": metric_props[i][1]} for i in metrics_ids],
                "step_metrics": steps}

    def _step_metrics(self, artifact: Dict[str, Any]) -> Dict[str, Any]:
        """A Step_Metrics artifact's steps as ``{"steps": [...], "series": {column: [...]}}`` if its file is held."""
        name = posixpath.basename(_path(artifact["name"]))
        data = self.files.step_metrics(_path(artifact["name"]), artifact["uri"])
        return {"artifact": artifact, "name": name, "data": data}

    def step_metrics(self, artifact_id: int) -> Dict[str, Any]:
        _known_id("step-metrics artifact", artifact_id)
        with self.db.session() as s:
            artifact = self._artifact_summaries(s, [artifact_id]).get(artifact_id)
        if artifact is None or artifact["type"] != "Step_Metrics":
            raise NotFound(f"there is no step-metrics artifact with id {artifact_id}")
        return self._step_metrics(artifact)

    def _roles(self, s: Session, artifact_id: int) -> Tuple[List[int], List[int]]:
        """(producers, consumers): the executions that wrote the artifact and those that read it, by id.  The one
        answer that the artifact's page, its JSON and its model card all show."""
        consumers, producers = self._events(s, "artifact_id", artifact_id)
        return producers, consumers

    def artifact(self, artifact_id: int, page: int = 1) -> Dict[str, Any]:
        """An artifact: properties, md5, size, where it lives, who produced and used it (the first
        :data:`LIST_LIMIT` of each, and how many), how to pull it, a preview of its file when it is held (``page``
        of a CSV), and for a model its model card."""
        with self.db.session() as s:
            summary, created, updated, props, custom = self._record(s, "artifact", artifact_id)
            producers, consumers = self._roles(s, artifact_id)
            executions = self._execution_summaries(s, producers + consumers)
            card = self._model_card(s, summary, props, custom, producers, consumers, executions) \
                if summary["type"] == "Model" else None
        remotes = []
        for entry in str(props.get("url") or "").split(","):
            pipeline, sep, url = entry.strip().partition(":")
            if entry.strip():
                remotes.append({"pipeline": pipeline if sep else "", "url": url if sep else pipeline})
        pipelines = [executions[i]["pipeline"] for i in producers + consumers if i in executions] or \
            [r["pipeline"] for r in remotes if r["pipeline"]]
        path = _path(summary["name"])
        md5 = str(props.get("Commit") or summary["uri"])
        pull = None
        if pipelines and summary["type"] != "Metrics":  # metrics have no file
            pull = f"cmf artifact pull -p {shlex.quote(pipelines[0])} -a {shlex.quote(summary['name'])}"
        return {**summary, "created": created, "updated": updated, "path": path, "md5": md5,
                "size": custom.get("size", self.files.size(path, md5)), "properties": props,
                "custom_properties": custom, "remotes": remotes, "pipelines": list(dict.fromkeys(pipelines)),
                **_bounded("producers", [executions[i] for i in producers if i in executions]),
                **_bounded("consumers", [executions[i] for i in consumers if i in executions]),
                "pull_command": pull, "preview": self.files.preview(summary["type"], path, md5, page),
                "model_card": card}

    def _model_card(self, s: Session, model: Dict[str, Any], props: Dict[str, Any], custom: Dict[str, Any],
                    producers: List[int], consumers: List[int],
                    executions: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
        """The original's model card: the model, the executions that produced it (with their parameters and
        metrics) and those that used it, and the producers' inputs and other outputs."""
        ins: List[int] = []
        outs: List[int] = []
        for execution_id in producers:
            i, o = self._events(s, "execution_id", execution_id)
            ins += i
            outs += [x for x in o if x != model["id"]]
        artifacts = self._artifact_summaries(s, list(dict.fromkeys(ins + outs)))
        params = self._props(s, "execution", producers)
        metrics = self._metric_values(s, producers)
        return {"model": {**model, "properties": props, "custom_properties": custom},
                **_bounded("producers", [{**executions[i], "params": params[i][1], "metrics": metrics.get(i, {})}
                                         for i in producers if i in executions]),
                **_bounded("consumers", [executions[i] for i in consumers if i in executions]),
                "inputs": [artifacts[i] for i in dict.fromkeys(ins)],
                "outputs": [artifacts[i] for i in dict.fromkeys(outs)]}

    def model_card(self, artifact_id: int) -> Dict[str, Any]:
        card = self.artifact(artifact_id)["model_card"]
        if card is None:
            raise NotFound(f"artifact {artifact_id} is not a model")
        return card

    # -- files -------------------------------------------------------------------------------------------

    def tensorboard(self, pipeline: str) -> Dict[str, Any]:
        with self.db.session() as s:
            self._pipeline_id(s, pipeline)
        items = self.files.tensorboard(pipeline)
        return {"pipeline": pipeline, "total": len(items), "items": items}


def _bounded(key: str, items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``{key: the first LIST_LIMIT items, key_total: how many}``: a page lists the first few of a long list (the
    python environment every run used) and links to the whole of it, filtered."""
    return {key: items[:LIST_LIMIT], f"{key}_total": len(items)}


def _known_id(kind: str, record_id: int) -> None:
    """NotFound for an id no record can have (MLMD ids are positive 64-bit; larger ones overflow SQLite)."""
    if not 0 < record_id <= MAX_ID:
        raise NotFound(f"there is no {kind} with id {record_id}")
