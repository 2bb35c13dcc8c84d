"""ML Metadata's store API as SQL on its own tables: the one writer and reader of mlmd records in cmf.

:class:`SqlStore` answers the calls of ml-metadata's ``MetadataStore`` that cmf makes (and the common reads a
user of the original cmflib makes on ``cmf.store``) with the records of :mod:`cmf_core.metadata.messages`, on a
:class:`~cmf_core.metadata.sql.Session`.  The same class serves

* the client: an mlmd file (:func:`cmf_core.metadata.store.open_store`), on a connection in autocommit mode,
  where each write call is its own transaction as in ML Metadata, and ``with store.unit():`` makes several calls
  one (``Cmf`` runs each of its methods as one unit);
* the server: a push is one database transaction, on SQLite or PostgreSQL, which a crash rolls back whole
  (:mod:`cmf_core.server.store`); rows go in as one ``executemany`` on SQLite and one ``COPY`` on PostgreSQL, and
  ids are taken from the table's sequence in one query.

It needs no ml-metadata (no wheel past Python 3.11), never holds the interpreter lock in a C call, and the
tables are ML Metadata's own, schema version 10 (what ml-metadata 1.15-1.17 read and write; a new file gets it
from :mod:`cmf_core.metadata.schema`).  What ML Metadata checks on a write is checked here too and raised as
its errors (:mod:`cmf_core.metadata.messages`): a property that the type does not declare, or declares with
another value type, and a type re-declared with a clashing property.

Times: with ``logged_times=False`` (the client's logging) a node is stamped as ML Metadata does, created now and
updated now when it changes.  With ``logged_times=True`` (a merge: the server's push and sync, the client's
pull) a node keeps the times it is put with (the logged ones), never later than :attr:`SqlStore.now`; a node
put without them gets that clock.  Since a record can then be older than its arrival, the store also keeps when
it last wrote each execution and context, by its own clock, in the table ``cmf_written``: the federation's
"what changed since" export (:meth:`SqlStore.written_at`) compares that, so a run logged long ago and pushed
today still reaches the peers that synced in between.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from cmf_core.metadata import messages as mlmd
from cmf_core.metadata.schema import SIMPLE_TYPES
from cmf_core.metadata.sql import Session

__all__ = ["SqlStore"]

_KINDS = {"execution": 0, "artifact": 1, "context": 2}  # type.type_kind
_TYPES = {"execution": mlmd.ExecutionType, "artifact": mlmd.ArtifactType, "context": mlmd.ContextType}
_NODES = {"execution": mlmd.Execution, "artifact": mlmd.Artifact, "context": mlmd.Context}
#: each kind's columns besides id, type_id and the times (fields of the same names)
_COLUMNS = {"execution": ("name", "external_id", "last_known_state"),
            "artifact": ("name", "external_id", "uri", "state"),
            "context": ("name", "external_id")}
#: a property value's field and the data type a type declares for it
_VALUES = {"int_value": mlmd.INT, "double_value": mlmd.DOUBLE, "string_value": mlmd.STRING, "bool_value": mlmd.BOOLEAN}
_PROPERTY_COLUMNS = ("name", "is_custom_property", *_VALUES)
_COLUMN_OF = {field: 3 + i for i, field in enumerate(_VALUES)}  # a value's place in a row of _property_rows
_TIMES = ("create_time_since_epoch", "last_update_time_since_epoch")
#: when the store last wrote each execution and context (its clock, ms since epoch): kind is the table's name
_WRITTEN = ("CREATE TABLE IF NOT EXISTS cmf_written (kind TEXT NOT NULL, id BIGINT NOT NULL, at BIGINT NOT NULL, "
            "PRIMARY KEY (kind, id))")
#: which nodes a link table links: (table, node column, context column)
_LINKS = {"artifact": ("attribution", "artifact_id"), "execution": ("association", "execution_id")}


def _unchanged(node: Any, stored: Any) -> bool:
    """Whether writing ``node`` leaves ``stored`` as it is (then nothing is written): the same values, and the
    stored times or none."""
    mine = {name: value for name, value in node.set_fields().items() if name != "type"}
    theirs = {name: value for name, value in stored.set_fields().items()
              if name != "type" and (name not in _TIMES or name in mine)}
    return mine == theirs


class SqlStore:
    """ML Metadata's ``MetadataStore`` calls on one :class:`~cmf_core.metadata.sql.Session`.

    ``now`` (ms since epoch) is the clock that stamps records, fixed for a server's transaction; ``None`` reads
    the system clock at each write.  ``logged_times``: whether nodes keep the times they are put with (see the
    module doc).
    """

    def __init__(self, session: Session, now: Optional[int] = None, logged_times: bool = True) -> None:
        self.db = session
        self._now = now
        self.logged_times = logged_times
        self._written_table = False  # whether this transaction made sure cmf_written exists
        self._types: Dict[Tuple[str, str], Optional[Tuple[int, Dict[str, int]]]] = {}  # (kind, name) -> id, props
        self._declared: Dict[int, Tuple[str, Dict[str, int]]] = {}  # type id -> kind, props

    @property
    def now(self) -> int:
        return self._now if self._now is not None else int(time.time() * 1000)

    @contextmanager
    def unit(self) -> Iterator["SqlStore"]:
        """Make the calls of the block one transaction (see :meth:`~cmf_core.metadata.sql.Session.atomic`); the
        cached types are read again after a rollback."""
        try:
            with self.db.atomic():
                yield self
        except BaseException:
            self._types.clear()
            self._declared.clear()
            raise

    # -- types ------------------------------------------------------------------------------------------

    def _type(self, kind: str, name: str) -> Optional[Tuple[int, Dict[str, int]]]:
        key = (kind, name)
        if key not in self._types:
            type_id = self.db.value("SELECT id FROM type WHERE name = ? AND type_kind = ? AND version IS NULL",
                                    [name, _KINDS[kind]])
            self._types[key] = None if type_id is None else (type_id, self._properties(type_id))
        return self._types[key]

    def _properties(self, type_id: int) -> Dict[str, int]:
        return dict(self.db.rows("SELECT name, data_type FROM typeproperty WHERE type_id = ?", [type_id]))

    def _get_type(self, kind: str, name: str) -> Any:
        found = self._type(kind, name)
        if found is None:
            raise mlmd.NotFoundError(f"no {kind} type named {name!r}")
        return _TYPES[kind](id=found[0], name=name, properties=found[1])

    def _list_types(self, kind: str, where: str = "TRUE", params: Sequence[Any] = ()) -> List[Any]:
        """The types of ``kind`` matching ``where``, without ML Metadata's simple types (as it lists them)."""
        simple, simple_params = self.db.among("name", list(SIMPLE_TYPES))
        rows = self.db.rows(f"SELECT id, name, version, description, external_id FROM type WHERE type_kind = ? AND "
                            f"NOT {simple} AND {where} ORDER BY id", [_KINDS[kind], *simple_params, *params])
        found = []
        for row in rows:
            found.append(_TYPES[kind](id=row[0], name=row[1], properties=self._properties(row[0]),
                                      **{f: v for f, v in zip(("version", "description", "external_id"), row[2:])
                                         if v is not None}))
        return found

    def _put_type(self, kind: str, wanted: Any, can_add_fields: bool, can_omit_fields: bool) -> int:
        """Create the type, or check it against the stored one and add the properties it lacks (as ML Metadata)."""
        with self.db.atomic():
            found = self._type(kind, wanted.name)
            declared = dict(wanted.properties)
            if found is None:
                type_id = self._new_ids("type", 1)[0]
                self.db.insert("type", ("id", "name", "type_kind"), [(type_id, wanted.name, _KINDS[kind])])
                added = declared
            else:
                type_id, stored = found
                clash = [p for p in declared if p in stored and stored[p] != declared[p]]
                missing = [p for p in stored if p not in declared]
                added = {p: t for p, t in declared.items() if p not in stored}
                if clash or (added and not can_add_fields) or (missing and not can_omit_fields):
                    raise mlmd.AlreadyExistsError(
                        f"{kind} type {wanted.name!r} exists with other properties (clashing: {clash}, "
                        f"new: {sorted(added)}, missing: {missing})")
            self.db.insert("typeproperty", ("type_id", "name", "data_type"),
                           [(type_id, p, t) for p, t in added.items()])
        self._types[(kind, wanted.name)] = (type_id, {**(found[1] if found else {}), **added})
        self._declared.pop(type_id, None)
        return type_id

    def get_artifact_type(self, name: str) -> mlmd.ArtifactType:
        return self._get_type("artifact", name)

    def get_execution_type(self, name: str) -> mlmd.ExecutionType:
        return self._get_type("execution", name)

    def get_context_type(self, name: str) -> mlmd.ContextType:
        return self._get_type("context", name)

    def get_artifact_types(self) -> List[mlmd.ArtifactType]:
        return self._list_types("artifact")

    def get_execution_types(self) -> List[mlmd.ExecutionType]:
        return self._list_types("execution")

    def get_context_types(self) -> List[mlmd.ContextType]:
        return self._list_types("context")

    def get_artifact_types_by_id(self, ids: Sequence[int]) -> List[mlmd.ArtifactType]:
        return self._list_types("artifact", *self.db.among("id", list(ids)))

    def get_execution_types_by_id(self, ids: Sequence[int]) -> List[mlmd.ExecutionType]:
        return self._list_types("execution", *self.db.among("id", list(ids)))

    def get_context_types_by_id(self, ids: Sequence[int]) -> List[mlmd.ContextType]:
        return self._list_types("context", *self.db.among("id", list(ids)))

    def put_artifact_type(self, artifact_type: mlmd.ArtifactType, can_add_fields: bool = False,
                          can_omit_fields: bool = False) -> int:
        return self._put_type("artifact", artifact_type, can_add_fields, can_omit_fields)

    def put_execution_type(self, execution_type: mlmd.ExecutionType, can_add_fields: bool = False,
                           can_omit_fields: bool = False) -> int:
        return self._put_type("execution", execution_type, can_add_fields, can_omit_fields)

    def put_context_type(self, context_type: mlmd.ContextType, can_add_fields: bool = False,
                         can_omit_fields: bool = False) -> int:
        return self._put_type("context", context_type, can_add_fields, can_omit_fields)

    # -- reading nodes ----------------------------------------------------------------------------------

    def _read(self, kind: str, where: str, params: Sequence[Any], order: str) -> Tuple[Dict[int, Dict[str, Any]],
                                                                                        List[Tuple]]:
        """The ``kind`` nodes matching ``where`` (on ``n``, the node, and ``t``, its type), in ``order``: their
        fields by id (their type's name among them), and their properties as (node id, name, custom, value field,
        value) rows.  Two queries."""
        columns = _COLUMNS[kind]
        rows = self.db.rows(f"SELECT n.id, n.type_id, t.name, n.create_time_since_epoch, "
                            f"n.last_update_time_since_epoch, {', '.join('n.' + c for c in columns)} FROM {kind} n "
                            f"JOIN type t ON t.id = n.type_id WHERE {where} ORDER BY {order}", params)
        nodes = {}
        for row in rows:
            fields = {"id": row[0], "type_id": row[1], "type": row[2], "create_time_since_epoch": row[3],
                      "last_update_time_since_epoch": row[4]}
            fields.update((column, value) for column, value in zip(columns, row[5:]) if value is not None)
            nodes[row[0]] = fields
        properties = []
        if nodes:
            among, params = self.db.among(f"{kind}_id", list(nodes))
            for node_id, name, custom, int_value, double_value, string_value, bool_value in self.db.rows(
                    f"SELECT {kind}_id, {', '.join(_PROPERTY_COLUMNS)} FROM {kind}property WHERE {among}", params):
                if int_value is not None:
                    properties.append((node_id, name, custom, "int_value", int_value))
                elif double_value is not None:
                    properties.append((node_id, name, custom, "double_value", double_value))
                elif string_value is not None:
                    properties.append((node_id, name, custom, "string_value", string_value))
                elif bool_value is not None:
                    properties.append((node_id, name, custom, "bool_value", bool(bool_value)))
        return nodes, properties

    def _nodes(self, kind: str, where: str, params: Sequence[Any] = (), order: str = "n.id") -> List[Any]:
        """The ``kind`` nodes matching ``where``, in ``order``, as messages (:meth:`_read`)."""
        fields, properties = self._read(kind, where, params, order)
        nodes = {node_id: _NODES[kind].of_row(node) for node_id, node in fields.items()}
        for node_id, name, custom, field, value in properties:
            node = nodes[node_id]
            # dict's own __setitem__: the value is one (PropertyMap's check cost a tenth of a merge)
            dict.__setitem__(node.custom_properties if custom else node.properties, name,
                             mlmd.Value.of(field, value))
        return list(nodes.values())

    def plain_lineage(self, execution_ids: Sequence[int]) -> Tuple[List[Tuple[int, int, int]], List[Dict[str, Any]]]:
        """The events of the executions as (execution id, artifact id, type), by execution then in the order they
        were made, and their artifacts as :meth:`~cmf_core.metadata.messages.Message.plain` gives them: made
        straight from the rows, for an export, which names 10,000 artifacts and needs no messages of them."""
        among, params = self.db.among("execution_id", list(execution_ids))
        events = self.db.rows(f"SELECT execution_id, artifact_id, type FROM event WHERE {among} "
                              "ORDER BY execution_id, id", params)
        fields, properties = self._read("artifact", f"n.id IN (SELECT artifact_id FROM event WHERE {among})",
                                        params, "n.id")
        for node in fields.values():
            node["properties"], node["custom_properties"] = {}, {}
        for node_id, name, custom, _, value in properties:
            fields[node_id]["custom_properties" if custom else "properties"][name] = value
        return events, list(fields.values())

    def _by_ids(self, kind: str, ids: Sequence[int]) -> List[Any]:
        among, params = self.db.among("n.id", list(ids))
        return self._nodes(kind, among, params)

    def _of_type(self, kind: str, type_name: str, name: Optional[str] = None) -> List[Any]:
        if name is None:
            return self._nodes(kind, f"t.name = ? AND t.type_kind = {_KINDS[kind]}", [type_name])
        return self._nodes(kind, f"t.name = ? AND t.type_kind = {_KINDS[kind]} AND n.name = ?", [type_name, name])

    def _in_context(self, kind: str, context_id: int) -> List[Any]:
        """A context's artifacts or executions, as ML Metadata lists them: artifacts by id, executions newest
        first."""
        table, column = _LINKS[kind]
        return self._nodes(kind, f"n.id IN (SELECT {column} FROM {table} WHERE context_id = ?)", [context_id],
                           order="n.create_time_since_epoch DESC, n.id DESC" if kind == "execution" else "n.id")

    def get_artifacts(self) -> List[mlmd.Artifact]:
        return self._nodes("artifact", "TRUE")

    def get_executions(self) -> List[mlmd.Execution]:
        return self._nodes("execution", "TRUE")

    def get_contexts(self) -> List[mlmd.Context]:
        return self._nodes("context", "TRUE")

    def get_artifacts_by_id(self, ids: Sequence[int]) -> List[mlmd.Artifact]:
        return self._by_ids("artifact", ids)

    def get_executions_by_id(self, ids: Sequence[int]) -> List[mlmd.Execution]:
        return self._by_ids("execution", ids)

    def get_contexts_by_id(self, ids: Sequence[int]) -> List[mlmd.Context]:
        return self._by_ids("context", ids)

    def get_artifacts_by_type(self, type_name: str) -> List[mlmd.Artifact]:
        return self._of_type("artifact", type_name)

    def get_executions_by_type(self, type_name: str) -> List[mlmd.Execution]:
        return self._of_type("execution", type_name)

    def get_contexts_by_type(self, type_name: str) -> List[mlmd.Context]:
        return self._of_type("context", type_name)

    def get_artifact_by_type_and_name(self, type_name: str, name: str) -> Optional[mlmd.Artifact]:
        return next(iter(self._of_type("artifact", type_name, name)), None)

    def get_execution_by_type_and_name(self, type_name: str, name: str) -> Optional[mlmd.Execution]:
        return next(iter(self._of_type("execution", type_name, name)), None)

    def get_context_by_type_and_name(self, type_name: str, name: str) -> Optional[mlmd.Context]:
        return next(iter(self._of_type("context", type_name, name)), None)

    def get_artifacts_by_uri(self, uri: str) -> List[mlmd.Artifact]:
        return self._nodes("artifact", "n.uri = ?", [uri])

    def get_artifacts_by_context(self, context_id: int) -> List[mlmd.Artifact]:
        return self._in_context("artifact", context_id)

    def get_executions_by_context(self, context_id: int) -> List[mlmd.Execution]:
        return self._in_context("execution", context_id)

    def get_contexts_by_artifact(self, artifact_id: int) -> List[mlmd.Context]:
        return self._nodes("context", "n.id IN (SELECT context_id FROM attribution WHERE artifact_id = ?)",
                           [artifact_id])

    def get_contexts_by_execution(self, execution_id: int) -> List[mlmd.Context]:
        return self._nodes("context", "n.id IN (SELECT context_id FROM association WHERE execution_id = ?)",
                           [execution_id])

    def get_parent_contexts_by_context(self, context_id: int) -> List[mlmd.Context]:
        return self._nodes("context", "n.id IN (SELECT parent_context_id FROM parentcontext WHERE context_id = ?)",
                           [context_id])

    def get_children_contexts_by_context(self, context_id: int) -> List[mlmd.Context]:
        return self._nodes("context", "n.id IN (SELECT context_id FROM parentcontext WHERE parent_context_id = ?)",
                           [context_id])

    def get_pipeline_executions_by_uuids(self, pipeline_id: int, uuids: Sequence[str]) -> List[mlmd.Execution]:
        """The executions of the pipeline's stages whose ``Execution_uuid`` is one of ``uuids`` or holds several
        (a reused execution's comma-joined uuids, which the merge splits).  Found through the property index,
        so a push of one execution does not read the whole pipeline."""
        among, params = self.db.among("string_value", list(uuids))
        if self.db.postgres:  # what our PostgreSQL stores index is md5(string_value) (db.fit_postgres)
            among += " AND md5(string_value) = ANY(?)"
            params.append([hashlib.md5(u.encode("utf-8")).hexdigest() for u in uuids])
        uuid_rows = ("SELECT execution_id FROM executionproperty WHERE name = 'Execution_uuid' AND "
                     "is_custom_property = FALSE AND string_value IS NOT NULL")  # NOT NULL: SQLite's index has it
        return self._nodes("execution", f"n.id IN ({uuid_rows} AND {among} UNION {uuid_rows} AND string_value LIKE ?) "
                           "AND EXISTS (SELECT 1 FROM association a JOIN parentcontext c ON c.context_id = "
                           "a.context_id WHERE a.execution_id = n.id AND c.parent_context_id = ?)",
                           [*params, "%,%", pipeline_id])

    def _events(self, column: str, ids: Sequence[int]) -> List[mlmd.Event]:
        """The events of the executions or artifacts ``ids`` (``column`` says which), by that id then in the order
        they were made, as ML Metadata lists them, with their paths."""
        among, params = self.db.among(column, list(ids))
        rows = self.db.rows("SELECT id, artifact_id, execution_id, type, milliseconds_since_epoch FROM event "
                            f"WHERE {among} ORDER BY {column}, id", params)
        events = {}
        for event_id, artifact_id, execution_id, kind, ms in rows:
            fields = {"artifact_id": artifact_id, "execution_id": execution_id, "type": kind}
            if ms is not None:
                fields["milliseconds_since_epoch"] = ms
            events[event_id] = mlmd.Event.of_row(fields)
        if events:
            among, params = self.db.among("event_id", list(events))
            order = "event_id, rowid" if self.db.dialect == "sqlite" else "event_id"  # steps in the order written
            for event_id, is_index, index, key in self.db.rows(
                    f"SELECT event_id, is_index_step, step_index, step_key FROM eventpath WHERE {among} "
                    f"ORDER BY {order}", params):
                events[event_id].path.steps.add(**({"index": index} if is_index else {"key": key}))
        return list(events.values())

    def get_events_by_execution_ids(self, ids: Sequence[int]) -> List[mlmd.Event]:
        return self._events("execution_id", ids)

    def get_events_by_artifact_ids(self, ids: Sequence[int]) -> List[mlmd.Event]:
        return self._events("artifact_id", ids)

    # -- writing ------------------------------------------------------------------------------------------

    def _new_ids(self, table: str, count: int) -> List[int]:
        """``count`` unused ids of ``table``, from its sequence (the transaction holds the write lock).  MySQL has
        no sequences: the ids after the largest, which AUTO_INCREMENT then moves past."""
        if count == 0:
            return []
        if self.db.postgres:
            return [row[0] for row in self.db.rows("SELECT nextval(pg_get_serial_sequence(?, 'id')) "
                                                   "FROM generate_series(1, ?)", [table, count])]
        if self.db.dialect == "mysql":
            last = self.db.value(f"SELECT coalesce(max(id), 0) FROM {table}")
        else:
            last = self.db.value(f"SELECT max((SELECT coalesce(max(id), 0) FROM {table}), coalesce((SELECT seq FROM "
                                 f"sqlite_sequence WHERE lower(name) = ?), 0))", [table])
        return list(range(last + 1, last + 1 + count))

    def _check(self, kind: str, node: Any) -> None:
        """Refuse, as ML Metadata does, a node whose type is not of its kind or whose properties the type does
        not declare with that value type."""
        if node.type_id not in self._declared:
            type_kind = self.db.value("SELECT type_kind FROM type WHERE id = ?", [node.type_id])
            if type_kind is None:
                raise mlmd.NotFoundError(f"no {kind} type with id {node.type_id}")
            self._declared[node.type_id] = (type_kind, self._properties(node.type_id))
        type_kind, declared = self._declared[node.type_id]
        if type_kind != _KINDS[kind]:
            raise mlmd.InvalidArgumentError(f"type id {node.type_id} is not an {kind} type")
        for name, value in node.properties.items():
            if name not in declared:
                raise mlmd.InvalidArgumentError(f"{kind} property {name!r} is not declared by its type")
            if _VALUES.get(value.item()[0]) != declared[name]:
                raise mlmd.InvalidArgumentError(f"{kind} property {name!r} does not have the value type its type "
                                             "declares")

    @staticmethod
    def _property_rows(node_id: int, node: Any) -> List[List[Any]]:
        rows = []
        for custom, properties in ((False, node.properties), (True, node.custom_properties)):
            for name, value in properties.items():
                field, held = value.item()
                row = [node_id, name, custom, None, None, None, None]
                if field is not None:  # a value read but never set is a row of NULLs
                    row[_COLUMN_OF[field]] = held
                rows.append(row)
        return rows

    def _times(self, node: Any, stored: Optional[Any]) -> Tuple[int, int]:
        """The (create, last update) times ``node`` is written with, which it then has.  Logged times: its own,
        never later than the clock; without them the stored create time (a new node's: now) and now.  Else as
        ML Metadata: the stored create time (a new node's: now), and now."""
        now = self.now
        created, updated = ((min(getattr(node, t), now) if node.HasField(t) else 0 for t in _TIMES)
                            if self.logged_times else (0, 0))
        node.create_time_since_epoch = created or (stored.create_time_since_epoch if stored is not None else now)
        node.last_update_time_since_epoch = updated or now
        return node.create_time_since_epoch, node.last_update_time_since_epoch

    def _put(self, kind: str, nodes: Sequence[Any]) -> List[int]:
        """Create the nodes without an id and update those with one (when they changed); their ids, in order."""
        for node in nodes:
            self._check(kind, node)
        new = [n for n in nodes if not n.HasField("id")]
        new_ids = iter(self._new_ids(kind, len(new)))
        ids = [n.id if n.HasField("id") else next(new_ids) for n in nodes]
        old = {n.id: n for n in nodes if n.HasField("id")}
        stored = {s.id: s for s in self._by_ids(kind, list(old))} if old else {}
        if set(old) - set(stored):
            raise mlmd.NotFoundError(f"no {kind} with id {sorted(set(old) - set(stored))[0]}")
        changed = {i: n for i, n in old.items() if not _unchanged(n, stored[i])}
        written = [(i, n) for i, n in zip(ids, nodes) if not n.HasField("id")]
        columns = _COLUMNS[kind]

        def values(node: Any) -> Tuple:
            return tuple(getattr(node, c) if node.HasField(c) else None for c in columns)
        self.db.insert(kind, ("id", "type_id", *columns, *_TIMES),
                       [(i, n.type_id, *values(n), *self._times(n, None)) for i, n in written])
        if changed:
            self.db.execute_many(f"UPDATE {kind} SET {''.join(c + ' = ?, ' for c in columns)}"
                                 "create_time_since_epoch = ?, last_update_time_since_epoch = ? WHERE id = ?",
                                 [(*values(n), *self._times(n, stored[i]), i) for i, n in changed.items()])
            among, params = self.db.among(f"{kind}_id", list(changed))
            self.db.execute(f"DELETE FROM {kind}property WHERE {among}", params)
            written += list(changed.items())
        self.db.insert(f"{kind}property", (f"{kind}_id", *_PROPERTY_COLUMNS),
                       [row for i, n in written for row in self._property_rows(i, n)])
        if kind != "artifact":
            self._mark_written(kind, [i for i, _ in written], list(changed))
        return ids

    def _mark_written(self, kind: str, ids: List[int], rewritten: List[int]) -> None:
        """Note that this transaction wrote the nodes ``ids`` (``rewritten``: those that were stored already)."""
        if not ids or not self.logged_times:  # the client's logging: its update times are when it wrote
            return
        if not self._written_table:
            self.db.execute(_WRITTEN)
            self._written_table = True
        if rewritten:
            among, params = self.db.among("id", rewritten)
            self.db.execute(f"DELETE FROM cmf_written WHERE kind = ? AND {among}", [kind, *params])
        self.db.insert("cmf_written", ("kind", "id", "at"), [(kind, i, self.now) for i in ids])

    def written_at(self) -> Dict[Tuple[str, int], int]:
        """When the store last wrote each execution and context, by ("execution" or "context", id); a record
        written before the store kept these (its update time is when it was written) is not among them."""
        exists = {"postgres": "SELECT to_regclass('cmf_written') IS NOT NULL",
                  "mysql": "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND "
                           "table_name = 'cmf_written'",
                  "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'cmf_written'"}
        if not self.db.value(exists[self.db.dialect]):
            return {}
        return {(kind, node_id): at for kind, node_id, at in self.db.rows("SELECT kind, id, at FROM cmf_written")}

    def _write(self, kind: str, nodes: Sequence[Any]) -> List[int]:
        with self.db.atomic():
            return self._put(kind, nodes)

    def put_contexts(self, contexts: Sequence[mlmd.Context]) -> List[int]:
        return self._write("context", contexts)

    def put_executions(self, executions: Sequence[mlmd.Execution]) -> List[int]:
        return self._write("execution", executions)

    def put_artifacts(self, artifacts: Sequence[mlmd.Artifact]) -> List[int]:
        return self._write("artifact", artifacts)

    def put_parent_contexts(self, links: Sequence[mlmd.ParentContext]) -> None:
        """Link child contexts to parents; a link that exists already is refused (as ML Metadata) before any write."""
        with self.db.atomic():
            for link in links:
                if self.db.value("SELECT 1 FROM parentcontext WHERE context_id = ? AND parent_context_id = ?",
                                 [link.child_id, link.parent_id]):
                    raise mlmd.AlreadyExistsError(f"context {link.child_id} already has parent {link.parent_id}")
            self.db.insert("parentcontext", ("context_id", "parent_context_id"),
                           [(link.child_id, link.parent_id) for link in links])

    def _link(self, kind: str, pairs: Sequence[Tuple[int, int]]) -> None:
        """Add the (context id, node id) links of artifacts or executions that are not there yet."""
        table, column = _LINKS[kind]
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return
        among, params = self.db.among("context_id", sorted({c for c, _ in pairs}))
        nodes, node_params = self.db.among(column, sorted({n for _, n in pairs}))
        there = set(self.db.rows(f"SELECT context_id, {column} FROM {table} WHERE {among} AND {nodes}",
                                 [*params, *node_params]))
        self.db.insert(table, ("context_id", column), [p for p in pairs if p not in there])

    def put_attributions_and_associations(self, attributions: Sequence[mlmd.Attribution],
                                          associations: Sequence[mlmd.Association]) -> None:
        """Link artifacts and executions to contexts; a link that exists is left as it is (as ML Metadata)."""
        with self.db.atomic():
            self._link("artifact", [(a.context_id, a.artifact_id) for a in attributions])
            self._link("execution", [(a.context_id, a.execution_id) for a in associations])

    def _put_events(self, events: Sequence[Tuple[int, int, mlmd.Event]]) -> None:
        """Add the events, each with its (artifact id, execution id), and their paths; one that exists already is
        refused (as ML Metadata)."""
        ids = self._new_ids("event", len(events))
        self.db.insert("event", ("id", "artifact_id", "execution_id", "type", "milliseconds_since_epoch"), [
            (i, artifact_id, execution_id, e.type,
             e.milliseconds_since_epoch if e.HasField("milliseconds_since_epoch") else self.now)
            for i, (artifact_id, execution_id, e) in zip(ids, events)])
        self.db.insert("eventpath", ("event_id", "is_index_step", "step_index", "step_key"), [
            (i, step.HasField("index"), step.index if step.HasField("index") else None,
             step.key if step.HasField("key") else None)
            for i, (_, _, e) in zip(ids, events) for step in e.path.steps])

    def put_events(self, events: Sequence[mlmd.Event]) -> None:
        with self.db.atomic():
            self._put_events([(e.artifact_id, e.execution_id, e) for e in events])

    def put_execution(self, execution: mlmd.Execution, artifact_and_events: Sequence[Tuple[mlmd.Artifact, Any]],
                      contexts: Sequence[mlmd.Context], reuse_context_if_already_exist: bool = False
                      ) -> Tuple[int, List[int], List[int]]:
        """Put the execution, its artifacts (each with an event or ``None``) and contexts; link them all."""
        edges = [(0, i, event) for i, (_, event) in enumerate(artifact_and_events) if event is not None]
        with self.db.atomic():
            if reuse_context_if_already_exist:
                for context in contexts:
                    if not context.HasField("id"):
                        stored = self.get_context_by_type_and_name(
                            self.db.value("SELECT name FROM type WHERE id = ?", [context.type_id]), context.name)
                        if stored is not None:
                            context.id = stored.id
            [execution_id], artifact_ids, context_ids = self.put_lineage_subgraph(
                [execution], [a for a, _ in artifact_and_events], contexts, edges)
        return execution_id, artifact_ids, context_ids

    def put_lineage_subgraph(self, executions: Sequence[mlmd.Execution], artifacts: Sequence[mlmd.Artifact],
                             contexts: Sequence[mlmd.Context],
                             event_edges: Sequence[Tuple[Optional[int], Optional[int], mlmd.Event]]
                             ) -> Tuple[List[int], List[int], List[int]]:
        """Put ``executions``, ``artifacts`` and ``contexts`` (create or update), link every node to every context,
        and add the events (edges name nodes of this call by index, other ones by id in the event)."""
        with self.db.atomic():
            execution_ids = self._put("execution", executions)
            artifact_ids = self._put("artifact", artifacts)
            context_ids = self._put("context", contexts)
            self._link("execution", [(c, e) for c in context_ids for e in execution_ids])
            self._link("artifact", [(c, a) for c in context_ids for a in artifact_ids])
            events = [(artifact_ids[a] if a is not None else event.artifact_id,
                       execution_ids[e] if e is not None else event.execution_id, event) for e, a, event in event_edges]
            self._put_events(events)
        return execution_ids, artifact_ids, context_ids
