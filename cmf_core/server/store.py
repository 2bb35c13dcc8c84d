"""The metadata server's store: ONE ML Metadata store behind ONE lock.

The store is an SQLite file by default (embedded, nothing to set up) or a
PostgreSQL database reached natively by ML Metadata (``ConnectionConfig().postgresql``).

Every call goes through :class:`ServerStore`, which holds a lock: MLMD store
objects are not thread-safe, and merges must not interleave (two pushes that
both create the same artifact would otherwise race on MLMD's unique names).

A push is applied whole or not at all.  The payload is validated completely
before the first write (``merge_pipeline`` does that, and a pushed ``exec_uuid``
must name an execution of the payload).  The merge then makes many MLMD calls,
each its own transaction, so a failure after the first write (MLMD refusing a
property whose type clashes with the stored one, a dropped connection, any
exception) is undone:

* SQLite (in WAL mode, so that the read path's connections and the merge never block
  each other): the database is copied (SQLite's backup API) before the merge and
  copied back if the merge raises.
* PostgreSQL: compensation in ONE SQL transaction (:class:`_Undo`), run through
  psycopg on a connection of its own.  Before the merge, one query reads the highest id of every table with ids
  (types, artifacts, executions, contexts, events, attributions, associations)
  and an image of ``typeproperty``.  The merge writes through :class:`_Guarded`,
  which, before a call that changes an existing artifact, execution or context,
  saves that record's row and property rows (as the SQL that puts them back),
  and notes a parent-context link it adds between existing contexts; writes it
  cannot account for are refused.  If the merge raises, one transaction deletes
  every row above the marks (with their properties, event paths and links) and
  the noted links, and puts the saved rows and ``typeproperty`` back as they
  were, update times included (``pull_all(last_sync_time)`` does not see them
  as changed).  Only the order PostgreSQL lists rows in may differ, as after
  any update MLMD makes.  MLMD's connection is then reopened (it never
  reconnects by itself, and may be what failed).  If the undo cannot run (the
  database is unreachable), it is retried before every later call, which fails
  until it succeeds: nothing reads the partial push meanwhile.

  The marks are right because this server is the database's only writer and
  writes under the lock.  Why compensation rather than the alternatives:
  ``put_lineage_subgraph`` is one transaction, but it associates every execution
  and attributes every artifact it is given to every context it is given, and
  creates neither types nor parent-context links, so a push of several stages
  (or one that adds a url to an existing artifact, which must not gain an
  attribution to this pipeline) cannot be one call without changing the shape
  of the records.  A dry run into a scratch store would find MLMD's refusals
  only, never an infrastructure failure, and the undo covers refusals too.

  Not covered (as on SQLite): the server process dying in the middle of a merge.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmf_core.metadata.merge import MergeError, MergeResult, merge_pipeline, pipeline_of
from cmf_core.metadata.query import CmfQuery

__all__ = ["PostgresConfig", "ServerStore", "PipelineNotFound", "ExecutionNotFound", "StoreRefused"]


class PipelineNotFound(CmfError):
    """No pipeline of that name in the server's store (HTTP 404)."""


class ExecutionNotFound(CmfError):
    """The pipeline has no execution with that uuid (the original answers the body ``no_exec_uuid``)."""


class StoreRefused(MergeError):
    """ML Metadata refused a validated payload (e.g. a property whose type clashes with the stored type);
    the merge was rolled back where the backend allows it (HTTP 422)."""


@dataclass(frozen=True)
class PostgresConfig:
    """Where the PostgreSQL database is; the password comes from ``CMF_POSTGRES_PASSWORD`` (or libpq's own
    ``PGPASSWORD``/``.pgpass``), never from the command line."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "mlmd"
    password: str = field(default="", repr=False)

    def connection(self) -> pb.ConnectionConfig:
        config = pb.ConnectionConfig()
        config.postgresql.host = self.host
        config.postgresql.port = str(self.port)
        config.postgresql.user = self.user
        config.postgresql.dbname = self.dbname
        if self.password:
            config.postgresql.password = self.password
        return config


def describe(sqlite: Optional[Path], postgres: Optional[PostgresConfig]) -> str:
    """Where a store is, for logs (no password)."""
    if sqlite is not None:
        return f"sqlite:{sqlite}"
    return f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/{postgres.dbname}"


class _Query(CmfQuery):
    """``CmfQuery``'s reads over an already open store (the server's) instead of an mlmd file."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:  # noqa: D107 - no file to open
        self.filepath = ""
        self.is_server = True
        self.store = store
        self._type_names: Dict[str, Dict[int, str]] = {}


# -- PostgreSQL undo -----------------------------------------------------------------------------------

_NODES = ("artifact", "execution", "context")  # tables of records; ``<table>property`` keyed by ``<table>_id``
_MARKED = ("type", *_NODES, "event", "attribution", "association")  # tables whose ids the merge extends


def _image(table: str, where: str) -> str:
    """A query for the SQL that puts the rows of ``table`` matching ``where`` back as they are now.

    PostgreSQL writes that SQL itself (``format``'s ``%L`` quotes the rows' JSON), so every column
    (bytea, doubles, NULLs) comes back exactly as stored.
    """
    return (f"(SELECT format('DELETE FROM {table} WHERE {where}; INSERT INTO {table} SELECT * FROM "
            f"json_populate_recordset(NULL::{table}, %L)', coalesce(json_agg(t), '[]')) FROM {table} t WHERE {where})")


_BEGIN = ("SELECT json_build_object('marks', json_build_object("
          + ", ".join(f"'{t}', (SELECT coalesce(max(id), 0) FROM {t})" for t in _MARKED)
          + "), 'typeproperty', " + _image("typeproperty", "TRUE") + ")")


def _sql(config: PostgresConfig, sql: str) -> Any:
    """Run ``sql`` (statements joined by ``;``) in ONE transaction on a connection of its own (psycopg);
    return the first value of the first statement's first row, if it has one.

    Without parameters psycopg sends the text as it is (``%L`` stays ``format``'s); libpq takes the
    password from the config, else ``PGPASSWORD``/``.pgpass``.
    """
    import psycopg

    try:
        with psycopg.connect(host=config.host, port=config.port, user=config.user, dbname=config.dbname,
                             password=config.password or None, connect_timeout=10) as connection:
            cursor = connection.execute(sql.encode())  # committed when the block ends, rolled back if it raises
            row = cursor.fetchone() if cursor.description else None
    except psycopg.Error as exc:
        raise CmfError(f"PostgreSQL at {config.host}:{config.port} failed: {exc}") from None
    return row[0] if row else None


def _unchanged(node: Any, stored: Any) -> bool:
    """Whether writing ``node`` leaves ``stored`` as it is (MLMD then writes nothing, not even the update time)."""
    mine, theirs = type(node)(), type(node)()
    mine.CopyFrom(node)
    theirs.CopyFrom(stored)
    for message in (mine, theirs):
        for name in ("type", "create_time_since_epoch", "last_update_time_since_epoch"):
            message.ClearField(name)
    return mine == theirs


class _Undo:
    """How to take one merge into PostgreSQL back: the ids before it, and the existing rows it changes."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        begin = _sql(config, _BEGIN)  # psycopg turns the json into a dict
        self.marks: Dict[str, int] = begin["marks"]
        self.restore: List[str] = [begin["typeproperty"]]  # SQL that puts changed rows back
        self.saved: Dict[str, Set[int]] = {table: set() for table in _NODES}
        self.links: List[Tuple[int, int]] = []  # parent-context links added between existing contexts

    def before_update(self, store: metadata_store.MetadataStore, table: str, nodes: Sequence[Any]) -> None:
        """Save the rows of the existing ``nodes`` (artifacts, executions or contexts) that writing them changes.

        A record is saved once, before its first change, so what is saved is its state before the merge.
        """
        ids = [n.id for n in nodes if n.HasField("id") and n.id <= self.marks[table] and n.id not in self.saved[table]]
        if not ids:
            return
        stored = {s.id: s for s in getattr(store, f"get_{table}s_by_id")(ids)}
        ids = sorted({n.id for n in nodes if n.id in stored and not _unchanged(n, stored[n.id])})
        if ids:
            listed = ",".join(map(str, ids))
            self.restore.append(_sql(self.config, f"SELECT {_image(table, f'id IN ({listed})')} || ';' || "
                                                   f"{_image(table + 'property', f'{table}_id IN ({listed})')}"))
            self.saved[table].update(ids)

    def rollback(self) -> None:
        """Delete what the merge inserted and put back what it changed, in one transaction (repeatable)."""
        m = self.marks
        statements = [
            f"DELETE FROM eventpath WHERE event_id > {m['event']}",
            f"DELETE FROM event WHERE id > {m['event']}",
            f"DELETE FROM attribution WHERE id > {m['attribution']}",
            f"DELETE FROM association WHERE id > {m['association']}",
            f"DELETE FROM parentcontext WHERE context_id > {m['context']} OR parent_context_id > {m['context']}",
            *(f"DELETE FROM parentcontext WHERE context_id = {child} AND parent_context_id = {parent}"
              for child, parent in self.links),
            *(f"DELETE FROM {t}property WHERE {t}_id > {m[t]}; DELETE FROM {t} WHERE id > {m[t]}" for t in _NODES),
            f"DELETE FROM parenttype WHERE type_id > {m['type']} OR parent_type_id > {m['type']}",
            f"DELETE FROM type WHERE id > {m['type']}",
            *self.restore,
        ]
        _sql(self.config, ";\n".join(statements) + ";")


class _Guarded:
    """The MLMD store as a merge into PostgreSQL sees it: writes that may change existing records tell
    :class:`_Undo` first; type writes only insert (``typeproperty`` is imaged whole); other writes are refused."""

    _PASSED = {"put_artifact_type", "put_execution_type", "put_context_type"}

    def __init__(self, store: metadata_store.MetadataStore, undo: _Undo) -> None:
        self._store = store
        self._undo = undo

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("get_") or name in self._PASSED:
            return getattr(self._store, name)
        raise AttributeError(f"{name} is not a write the PostgreSQL undo accounts for")

    def put_artifacts(self, artifacts: Sequence[pb.Artifact]) -> List[int]:
        self._undo.before_update(self._store, "artifact", artifacts)
        return self._store.put_artifacts(artifacts)

    def put_executions(self, executions: Sequence[pb.Execution]) -> List[int]:
        self._undo.before_update(self._store, "execution", executions)
        return self._store.put_executions(executions)

    def put_contexts(self, contexts: Sequence[pb.Context]) -> List[int]:
        self._undo.before_update(self._store, "context", contexts)
        return self._store.put_contexts(contexts)

    def put_lineage_subgraph(self, executions: Sequence[pb.Execution], artifacts: Sequence[pb.Artifact],
                             contexts: Sequence[pb.Context], event_edges: Sequence[Tuple], **options: Any) -> Tuple:
        for table, nodes in (("execution", executions), ("artifact", artifacts), ("context", contexts)):
            self._undo.before_update(self._store, table, nodes)
        return self._store.put_lineage_subgraph(executions, artifacts, contexts, event_edges, **options)

    def put_parent_contexts(self, links: Sequence[pb.ParentContext]) -> None:
        mark = self._undo.marks["context"]
        for link in links:
            if link.child_id <= mark and link.parent_id <= mark and link.parent_id not in {
                    c.id for c in self._store.get_parent_contexts_by_context(link.child_id)}:
                self._undo.links.append((link.child_id, link.parent_id))
        self._store.put_parent_contexts(links)


_BACKUP = ("import sqlite3, sys\n"
           "src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])\n"
           "src.backup(dst)\n")


def _backup(source: Path, target: Path) -> None:
    """Copy an SQLite database onto another through the backup API (one transaction on ``target``), from a
    process of its own (see :meth:`ServerStore._merge_with_snapshot`)."""
    done = subprocess.run([sys.executable, "-c", _BACKUP, str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise CmfError(f"cannot copy the store {source} to {target}: {reason}")


def _uuids(execution: Dict[str, Any]) -> List[str]:
    return [u for u in str((execution.get("properties") or {}).get("Execution_uuid", "")).split(",") if u]


class ServerStore:
    """The server's single MLMD store: ``sqlite`` (a file path) or ``postgres``; every call is serialised."""

    def __init__(self, sqlite: Optional[os.PathLike] = None, postgres: Optional[PostgresConfig] = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("the server store is either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self.postgres = postgres
        self._lock = threading.Lock()
        self._pending: Optional[_Undo] = None  # a failed push not undone yet
        if self.sqlite is not None:  # checked and set to WAL before ML Metadata opens it, never after
            self.sqlite.parent.mkdir(parents=True, exist_ok=True)
            records.check_sqlite(self.sqlite)
            with closing(sqlite3.connect(self.sqlite)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers and the writer never block each other
        self._store = self._open()

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        return describe(self.sqlite, self.postgres)

    def _open(self) -> metadata_store.MetadataStore:
        if self.sqlite is not None:
            return records.open_store(self.sqlite, check=False)
        try:
            return metadata_store.MetadataStore(self.postgres.connection())
        except mlmd_errors.StatusError as exc:
            raise CmfError(f"cannot open the PostgreSQL store {self.describe()}: {exc}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock, with a failed push that could not be undone yet undone first."""
        with self._lock:
            self._settle()
            yield

    def _settle(self) -> None:
        """Undo the pending failed push, then reopen MLMD (its connection may be what failed); raises if it cannot.

        The undo stays pending until both succeed, and running it again is harmless.
        """
        if self._pending is not None:
            self._pending.rollback()
            self._store = self._open()
            self._pending = None

    # -- writes ---------------------------------------------------------------------------------------

    def push(self, payload: Any, pipeline_name: Optional[str] = None, exec_uuid: Optional[str] = None) -> MergeResult:
        """Merge the pipeline ``pipeline_name`` of an export (only the execution ``exec_uuid`` if given).

        Raises :class:`MergeError` for a malformed payload (nothing written) and
        :class:`StoreRefused` when MLMD refuses it (rolled back).
        """
        if isinstance(payload, (str, bytes)):
            try:
                payload = json.loads(payload)
            except (ValueError, RecursionError) as exc:
                raise MergeError(f"json_payload is not JSON: {exc}") from None
        if exec_uuid is not None:
            pipeline = pipeline_of(payload, pipeline_name)
            if not any(exec_uuid in _uuids(e) for s in pipeline.get("stages", []) for e in s.get("executions", [])):
                raise MergeError(f"the payload has no execution with uuid {exec_uuid}")
        with self._locked():
            if self.sqlite is None:
                return self._merge_with_undo(payload, pipeline_name, exec_uuid)
            return self._merge_with_snapshot(payload, pipeline_name, exec_uuid)

    @staticmethod
    def _merge(store: Any, payload: Any, pipeline_name: Optional[str], exec_uuid: Optional[str]) -> MergeResult:
        try:
            return merge_pipeline(store, payload, exec_uuid=exec_uuid, pipeline_name=pipeline_name)
        except (mlmd_errors.InvalidArgumentError, mlmd_errors.AlreadyExistsError,
                mlmd_errors.FailedPreconditionError) as exc:
            raise StoreRefused(f"the store refused the payload: {exc}") from None

    def _merge_with_snapshot(self, payload: Any, pipeline_name: Optional[str],
                             exec_uuid: Optional[str]) -> MergeResult:
        """Copy the database, merge, and copy it back if the merge raised (caller holds the lock).

        The copies go through SQLite's backup API, so they are consistent in WAL mode and the copy back is one
        transaction that readers see whole.  They run in a process of their own: ML Metadata links its own
        SQLite, whose file locks Python's ``sqlite3`` in this process would not see.
        """
        snapshot = self.sqlite.with_name(self.sqlite.name + ".snapshot")
        try:
            _backup(self.sqlite, snapshot)
            try:
                return self._merge(self._store, payload, pipeline_name, exec_uuid)
            except BaseException:
                _backup(snapshot, self.sqlite)
                raise
        finally:
            snapshot.unlink(missing_ok=True)

    def _merge_with_undo(self, payload: Any, pipeline_name: Optional[str], exec_uuid: Optional[str]) -> MergeResult:
        """Merge into PostgreSQL through :class:`_Guarded`; undo it all if the merge raised (caller holds the lock)."""
        undo = _Undo(self.postgres)
        try:
            return self._merge(_Guarded(self._store, undo), payload, pipeline_name, exec_uuid)
        except BaseException as exc:
            self._pending = undo
            try:
                self._settle()
            except CmfError as failure:
                raise CmfError(f"the push failed ({exc}) and is not undone yet; it will be before the next "
                               f"request: {failure}") from exc
            raise

    # -- reads ----------------------------------------------------------------------------------------

    def _pipeline_id(self, query: _Query, name: str) -> int:
        pipeline_id = query.get_pipeline_id(name)
        if pipeline_id == -1:
            raise PipelineNotFound(f"pipeline {name!r} is not on the server")
        return pipeline_id

    def pull(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> str:
        """The export JSON of the pipeline (only the execution ``exec_uuid`` if given)."""
        with self._locked():
            query = _Query(self._store)
            self._pipeline_id(query, pipeline_name)
            text = query.dumptojson(pipeline_name, exec_uuid)
        if exec_uuid is not None:
            stages = json.loads(text)["Pipeline"][0]["stages"]
            if not any(stage["executions"] for stage in stages):
                raise ExecutionNotFound(f"pipeline {pipeline_name!r} has no execution with uuid {exec_uuid}")
        return text

    def pipeline_names(self) -> List[str]:
        """The names of the store's pipelines."""
        with self._locked():
            return sorted(c.name for c in self._store.get_contexts_by_type(records.PARENT_CONTEXT))

    def pull_all(self, last_sync_time: int = 0) -> str:
        """Every pipeline as export JSON; with ``last_sync_time`` (ms) only what changed after it."""
        with self._locked():
            return _Query(self._store).extract_to_json(last_sync_time)
