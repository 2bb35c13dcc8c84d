"""ML Metadata's store API, the part the server's merge and export call, as SQL inside ONE transaction.

ML Metadata makes each call its own transaction, so a push of many calls could not be undone when the
server died half-way (a kill left 25 of 250 executions on PostgreSQL).  :class:`SqlStore` answers the
same calls with the same protobufs on a :class:`~cmf_core.server.db.Session`, so
:func:`~cmf_core.metadata.merge.merge_pipeline` and :class:`~cmf_core.metadata.query.CmfQuery`'s export
run unchanged inside one database transaction, which a crash rolls back whole.  It also batches what
ML Metadata sends row by row: ids are taken from the table's sequence in one query, and rows go in as
one ``executemany`` on SQLite and one ``COPY`` on PostgreSQL.

The tables are ML Metadata's own, schema version 10 (``db.SCHEMA_VERSION``, checked at start-up),
created by ML Metadata when a store is new.  What ML Metadata checks on a write is checked here too
and raised as its errors: a property that the type does not declare, or declares with another value
type, and a type re-declared with a clashing property.  Writes cover what the merge does:
``put_lineage_subgraph`` creates executions and artifacts (it refuses existing ones), the
``put_<nodes>`` calls create or update, ``put_attributions_and_associations`` links new nodes, and events
carry no path.

Unlike ML Metadata, which stamps its own clock, a node keeps the times it is put with (a merge gives it the
logged ones), never later than the server's clock (:attr:`SqlStore.now`); a node put without them gets that
clock.  Since a record can then be older than its arrival, the store also keeps when it last wrote each
execution and context, by its own clock, in the table ``cmf_written``: the federation's "what changed since"
export (:meth:`SqlStore.written_at`) compares that, so a run logged long ago and pushed today still reaches
the peers that synced in between.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2 as pb

from cmf_core.server.db import Session

__all__ = ["SqlStore"]

_KINDS = {"execution": 0, "artifact": 1, "context": 2}  # type.type_kind
_TYPES = {"execution": pb.ExecutionType, "artifact": pb.ArtifactType, "context": pb.ContextType}
_NODES = {"execution": pb.Execution, "artifact": pb.Artifact, "context": pb.Context}
#: a property value's field and the data type a type declares for it
_VALUES = {"int_value": pb.INT, "double_value": pb.DOUBLE, "string_value": pb.STRING, "bool_value": pb.BOOLEAN}
_PROPERTY_COLUMNS = ("name", "is_custom_property", *_VALUES)
_TIMES = ("create_time_since_epoch", "last_update_time_since_epoch")
#: when the store last wrote each execution and context (its clock, ms since epoch): kind is the table's name
_WRITTEN = ("CREATE TABLE IF NOT EXISTS cmf_written (kind TEXT NOT NULL, id BIGINT NOT NULL, at BIGINT NOT NULL, "
            "PRIMARY KEY (kind, id))")


def _unchanged(node: Any, stored: Any) -> bool:
    """Whether writing ``node`` leaves ``stored`` as it is (then nothing is written): the same values, and the
    stored times or none."""
    mine, theirs = type(node)(), type(node)()
    mine.CopyFrom(node)
    theirs.CopyFrom(stored)
    for message in (mine, theirs):
        message.ClearField("type")
    for name in _TIMES:
        if not mine.HasField(name):
            theirs.ClearField(name)
    return mine == theirs


class SqlStore:
    """The calls of ML Metadata's ``MetadataStore`` that the merge and the export make, on one transaction.

    ``now`` (ms since epoch) is the server's clock: it stamps the records this transaction creates or changes
    without times of their own, and bounds the times they have.
    """

    def __init__(self, session: Session, now: int) -> None:
        self.db = session
        self.now = now
        self._written_table = False  # whether this transaction made sure cmf_written exists
        self._types: Dict[Tuple[str, str], Optional[Tuple[int, Dict[str, int]]]] = {}  # (kind, name) -> id, props
        self._declared: Dict[int, Tuple[str, Dict[str, int]]] = {}  # type id -> kind, props

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
            raise mlmd_errors.NotFoundError(f"no {kind} type named {name!r}")
        return _TYPES[kind](id=found[0], name=name, properties=found[1])

    def _put_type(self, kind: str, wanted: Any, can_add_fields: bool, can_omit_fields: bool) -> int:
        """Create the type, or check it against the stored one and add the properties it lacks (as ML Metadata)."""
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
                raise mlmd_errors.AlreadyExistsError(
                    f"{kind} type {wanted.name!r} exists with other properties (clashing: {clash}, "
                    f"new: {sorted(added)}, missing: {missing})")
        self.db.insert("typeproperty", ("type_id", "name", "data_type"), [(type_id, p, t) for p, t in added.items()])
        self._types[(kind, wanted.name)] = (type_id, {**(found[1] if found else {}), **added})
        self._declared.pop(type_id, None)
        return type_id

    def get_artifact_type(self, name: str) -> pb.ArtifactType:
        return self._get_type("artifact", name)

    def get_execution_type(self, name: str) -> pb.ExecutionType:
        return self._get_type("execution", name)

    def get_context_type(self, name: str) -> pb.ContextType:
        return self._get_type("context", name)

    def put_artifact_type(self, artifact_type: pb.ArtifactType, can_add_fields: bool = False,
                          can_omit_fields: bool = False) -> int:
        return self._put_type("artifact", artifact_type, can_add_fields, can_omit_fields)

    def put_execution_type(self, execution_type: pb.ExecutionType, can_add_fields: bool = False,
                           can_omit_fields: bool = False) -> int:
        return self._put_type("execution", execution_type, can_add_fields, can_omit_fields)

    def put_context_type(self, context_type: pb.ContextType, can_add_fields: bool = False,
                         can_omit_fields: bool = False) -> int:
        return self._put_type("context", context_type, can_add_fields, can_omit_fields)

    # -- reading nodes ----------------------------------------------------------------------------------

    def _nodes(self, kind: str, where: str, params: Sequence[Any] = (), order: str = "n.id") -> List[Any]:
        """The ``kind`` nodes matching ``where`` (on ``n``, the node, and ``t``, its type), in ``order``, with
        their type name and properties: two queries."""
        uri = ", n.uri" if kind == "artifact" else ""
        rows = self.db.rows(f"SELECT n.id, n.type_id, t.name, n.name, n.create_time_since_epoch, "
                            f"n.last_update_time_since_epoch{uri} FROM {kind} n JOIN type t ON t.id = n.type_id "
                            f"WHERE {where} ORDER BY {order}", params)
        nodes = {}
        for row in rows:
            node = _NODES[kind](id=row[0], type_id=row[1], type=row[2], create_time_since_epoch=row[4],
                                last_update_time_since_epoch=row[5])
            if row[3] is not None:
                node.name = row[3]
            if uri and row[6] is not None:
                node.uri = row[6]
            nodes[row[0]] = node
        if nodes:
            among, params = self.db.among(f"{kind}_id", list(nodes))
            for row in self.db.rows(f"SELECT {kind}_id, {', '.join(_PROPERTY_COLUMNS)} FROM {kind}property "
                                    f"WHERE {among}", params):
                node = nodes[row[0]]
                target = node.custom_properties if row[2] else node.properties
                for field, value in zip(_VALUES, row[3:]):
                    if value is not None:
                        setattr(target[row[1]], field, bool(value) if field == "bool_value" else value)
                        break
        return list(nodes.values())

    def _by_ids(self, kind: str, ids: Sequence[int]) -> List[Any]:
        among, params = self.db.among("n.id", list(ids))
        return self._nodes(kind, among, params)

    def get_contexts_by_type(self, type_name: str) -> List[pb.Context]:
        return self._nodes("context", "t.name = ? AND t.type_kind = 2", [type_name])

    def get_context_by_type_and_name(self, type_name: str, name: str) -> Optional[pb.Context]:
        found = self._nodes("context", "t.name = ? AND t.type_kind = 2 AND n.name = ?", [type_name, name])
        return found[0] if found else None

    def get_children_contexts_by_context(self, context_id: int) -> List[pb.Context]:
        return self._nodes("context", "n.id IN (SELECT context_id FROM parentcontext WHERE parent_context_id = ?)",
                           [context_id])

    def get_executions_by_context(self, context_id: int) -> List[pb.Execution]:
        """Newest first, as ML Metadata lists a context's nodes."""
        return self._nodes("execution", "n.id IN (SELECT execution_id FROM association WHERE context_id = ?)",
                           [context_id], order="n.create_time_since_epoch DESC, n.id DESC")

    def get_pipeline_executions_by_uuids(self, pipeline_id: int, uuids: Sequence[str]) -> List[pb.Execution]:
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

    def get_execution_by_type_and_name(self, type_name: str, name: str) -> Optional[pb.Execution]:
        found = self._nodes("execution", "t.name = ? AND t.type_kind = 0 AND n.name = ?", [type_name, name])
        return found[0] if found else None

    def get_artifact_by_type_and_name(self, type_name: str, name: str) -> Optional[pb.Artifact]:
        found = self._nodes("artifact", "t.name = ? AND t.type_kind = 1 AND n.name = ?", [type_name, name])
        return found[0] if found else None

    def get_artifacts_by_type(self, type_name: str) -> List[pb.Artifact]:
        return self._nodes("artifact", "t.name = ? AND t.type_kind = 1", [type_name])

    def get_artifacts_by_id(self, ids: Sequence[int]) -> List[pb.Artifact]:
        return self._by_ids("artifact", ids)

    def get_events_by_execution_ids(self, ids: Sequence[int]) -> List[pb.Event]:
        """By execution, then in the order they were made, as ML Metadata lists them."""
        among, params = self.db.among("execution_id", list(ids))
        return [pb.Event(artifact_id=a, execution_id=e, type=t, milliseconds_since_epoch=ms)
                for a, e, t, ms in self.db.rows("SELECT artifact_id, execution_id, type, milliseconds_since_epoch "
                                                f"FROM event WHERE {among} ORDER BY execution_id, id", params)]

    # -- writing ------------------------------------------------------------------------------------------

    def _new_ids(self, table: str, count: int) -> List[int]:
        """``count`` unused ids of ``table``, from its sequence (the transaction holds the write lock)."""
        if count == 0:
            return []
        if self.db.postgres:
            return [r[0] for r in self.db.rows("SELECT nextval(pg_get_serial_sequence(?, 'id')) "
                                               "FROM generate_series(1, ?)", [table, count])]
        last = self.db.value(f"SELECT max((SELECT coalesce(max(id), 0) FROM {table}), coalesce((SELECT seq FROM "
                             f"sqlite_sequence WHERE lower(name) = ?), 0))", [table])
        return list(range(last + 1, last + 1 + count))

    def _check(self, kind: str, node: Any) -> None:
        """Refuse, as ML Metadata does, a node whose type is not of its kind or whose properties the type does
        not declare with that value type."""
        if node.type_id not in self._declared:
            type_kind = self.db.value("SELECT type_kind FROM type WHERE id = ?", [node.type_id])
            self._declared[node.type_id] = (type_kind, self._properties(node.type_id))
        type_kind, declared = self._declared[node.type_id]
        if type_kind != _KINDS[kind]:
            raise mlmd_errors.InvalidArgumentError(f"type id {node.type_id} is not an {kind} type")
        for name, value in node.properties.items():
            if name not in declared:
                raise mlmd_errors.InvalidArgumentError(f"{kind} property {name!r} is not declared by its type")
            if _VALUES.get(value.WhichOneof("value")) != declared[name]:
                raise mlmd_errors.InvalidArgumentError(f"{kind} property {name!r} does not have the value type "
                                                       f"its type declares")

    def _property_rows(self, node_id: int, node: Any) -> List[Tuple]:
        rows = []
        for custom, properties in ((False, node.properties), (True, node.custom_properties)):
            for name, value in properties.items():
                field = value.WhichOneof("value")
                rows.append((node_id, name, custom, *(getattr(value, f) if f == field else None for f in _VALUES)))
        return rows

    def _times(self, node: Any, stored: Optional[Any]) -> Tuple[int, int]:
        """The (create, last update) times ``node`` is written with, which it then has: its own, never later
        than the server's clock; without them the stored create time (a new node's: now) and now."""
        created, updated = (min(getattr(node, t), self.now) if node.HasField(t) else 0 for t in _TIMES)
        node.create_time_since_epoch = created or (stored.create_time_since_epoch if stored is not None else self.now)
        node.last_update_time_since_epoch = updated or self.now
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
            raise mlmd_errors.NotFoundError(f"no {kind} with id {sorted(set(old) - set(stored))[0]}")
        changed = {i: n for i, n in old.items() if not _unchanged(n, stored[i])}
        written = [(i, n) for i, n in zip(ids, nodes) if not n.HasField("id")]
        uri = ("uri",) if kind == "artifact" else ()

        def columns(node: Any) -> Tuple:
            return (node.name if node.HasField("name") else None, *(node.uri if node.HasField("uri") else None
                                                                    for _ in uri))
        self.db.insert(kind, ("id", "type_id", "name", *uri, *_TIMES),
                       [(i, n.type_id, *columns(n), *self._times(n, None)) for i, n in written])
        if changed:
            self.db.execute_many(f"UPDATE {kind} SET name = ?, {''.join(c + ' = ?, ' for c in uri)}"
                                 "create_time_since_epoch = ?, last_update_time_since_epoch = ? WHERE id = ?",
                                 [(*columns(n), *self._times(n, stored[i]), i) for i, n in changed.items()])
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
        if not ids:
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
        exists = ("SELECT to_regclass('cmf_written') IS NOT NULL" if self.db.postgres else
                  "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'cmf_written'")
        if not self.db.value(exists):
            return {}
        return {(kind, node_id): at for kind, node_id, at in self.db.rows("SELECT kind, id, at FROM cmf_written")}

    def put_contexts(self, contexts: Sequence[pb.Context]) -> List[int]:
        return self._put("context", contexts)

    def put_executions(self, executions: Sequence[pb.Execution]) -> List[int]:
        return self._put("execution", executions)

    def put_artifacts(self, artifacts: Sequence[pb.Artifact]) -> List[int]:
        return self._put("artifact", artifacts)

    def put_parent_contexts(self, links: Sequence[pb.ParentContext]) -> None:
        """Link child contexts to parents; a link that exists already is refused (as ML Metadata) before any write."""
        for link in links:
            if self.db.value("SELECT 1 FROM parentcontext WHERE context_id = ? AND parent_context_id = ?",
                             [link.child_id, link.parent_id]):
                raise mlmd_errors.AlreadyExistsError(f"context {link.child_id} already has parent {link.parent_id}")
        self.db.insert("parentcontext", ("context_id", "parent_context_id"),
                       [(link.child_id, link.parent_id) for link in links])

    def put_attributions_and_associations(self, attributions: Sequence[pb.Attribution],
                                          associations: Sequence[pb.Association]) -> None:
        """Link artifacts and executions to contexts; the links must be new (the merge links only the nodes it
        creates)."""
        self.db.insert("attribution", ("context_id", "artifact_id"), [(a.context_id, a.artifact_id)
                                                                      for a in attributions])
        self.db.insert("association", ("context_id", "execution_id"), [(a.context_id, a.execution_id)
                                                                       for a in associations])

    def put_lineage_subgraph(self, executions: Sequence[pb.Execution], artifacts: Sequence[pb.Artifact],
                             contexts: Sequence[pb.Context],
                             event_edges: Sequence[Tuple[Optional[int], Optional[int], pb.Event]]
                             ) -> Tuple[List[int], List[int], List[int]]:
        """Create ``executions`` and ``artifacts``, put ``contexts``, associate and attribute every new node to
        every context, and add the events (edges name new nodes by index, existing ones by id in the event)."""
        if any(n.HasField("id") for n in (*executions, *artifacts)):
            raise mlmd_errors.InvalidArgumentError("put_lineage_subgraph here creates executions and artifacts only")
        execution_ids = self._put("execution", executions)
        artifact_ids = self._put("artifact", artifacts)
        context_ids = self._put("context", contexts)
        self.db.insert("association", ("context_id", "execution_id"),
                       [(c, e) for c in context_ids for e in execution_ids])
        self.db.insert("attribution", ("context_id", "artifact_id"),
                       [(c, a) for c in context_ids for a in artifact_ids])
        self.db.insert("event", ("artifact_id", "execution_id", "type", "milliseconds_since_epoch"), [
            (artifact_ids[a] if a is not None else event.artifact_id,
             execution_ids[e] if e is not None else event.execution_id, event.type,
             event.milliseconds_since_epoch if event.HasField("milliseconds_since_epoch") else self.now)
            for e, a, event in event_edges])
        return execution_ids, artifact_ids, context_ids
