"""The metadata server's store: ONE ML Metadata store behind ONE lock.

The store is an SQLite file by default (embedded, nothing to set up) or a
PostgreSQL database reached natively by ML Metadata (``ConnectionConfig().postgresql``).

Every call goes through :class:`ServerStore`, which holds a lock: MLMD store
objects are not thread-safe, and merges must not interleave (two pushes that
both create the same artifact would otherwise race on MLMD's unique names).

A push is applied whole or not at all:

* the payload is validated completely before the first write (``merge_pipeline``
  does that, and a pushed ``exec_uuid`` must name an execution of the payload);
* SQLite: the database file is copied before the merge and put back if the merge
  raises, so a merge that fails half-way (MLMD commits one transaction per call)
  leaves the store exactly as it was;
* PostgreSQL: ML Metadata opens its own connection and offers no transaction that
  spans several calls, so there is no snapshot to restore.  What is relied on there
  is validate-first (bad payloads never reach the database) and idempotence: the
  merge matches records by uuid/name, so pushing the same payload again completes
  a merge that an infrastructure failure interrupted, without duplicating anything.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

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


class _Query(CmfQuery):
    """``CmfQuery``'s reads over an already open store (the server's) instead of an mlmd file."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:  # noqa: D107 - no file to open
        self.filepath = ""
        self.is_server = True
        self.store = store
        self._type_names: Dict[str, Dict[int, str]] = {}


def _rows(frame) -> List[Dict[str, Any]]:
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


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
        self._store = self._open()

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        if self.sqlite is not None:
            return f"sqlite:{self.sqlite}"
        p = self.postgres
        return f"postgresql://{p.user}@{p.host}:{p.port}/{p.dbname}"

    def _open(self) -> metadata_store.MetadataStore:
        if self.sqlite is not None:
            self.sqlite.parent.mkdir(parents=True, exist_ok=True)
            return records.open_store(self.sqlite)
        try:
            return metadata_store.MetadataStore(self.postgres.connection())
        except mlmd_errors.StatusError as exc:
            raise CmfError(f"cannot open the PostgreSQL store {self.describe()}: {exc}") from None

    # -- writes ---------------------------------------------------------------------------------------

    def push(self, payload: Any, pipeline_name: Optional[str] = None, exec_uuid: Optional[str] = None) -> MergeResult:
        """Merge the pipeline ``pipeline_name`` of an export (only the execution ``exec_uuid`` if given).

        Raises :class:`MergeError` for a malformed payload (nothing written) and
        :class:`StoreRefused` when MLMD refuses it (rolled back on SQLite).
        """
        if isinstance(payload, (str, bytes)):
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise MergeError(f"json_payload is not JSON: {exc}") from None
        if exec_uuid is not None:
            pipeline = pipeline_of(payload, pipeline_name)
            if not any(exec_uuid in _uuids(e) for s in pipeline.get("stages", []) for e in s.get("executions", [])):
                raise MergeError(f"the payload has no execution with uuid {exec_uuid}")
        with self._lock:
            if self.sqlite is None:
                return self._merge(payload, pipeline_name, exec_uuid)
            return self._merge_with_snapshot(payload, pipeline_name, exec_uuid)

    def _merge(self, payload: Any, pipeline_name: Optional[str], exec_uuid: Optional[str]) -> MergeResult:
        try:
            return merge_pipeline(self._store, payload, exec_uuid=exec_uuid, pipeline_name=pipeline_name)
        except (mlmd_errors.InvalidArgumentError, mlmd_errors.AlreadyExistsError,
                mlmd_errors.FailedPreconditionError) as exc:
            raise StoreRefused(f"the store refused the payload: {exc}") from None

    def _merge_with_snapshot(self, payload: Any, pipeline_name: Optional[str],
                             exec_uuid: Optional[str]) -> MergeResult:
        """Copy the database file, merge, and put the copy back if the merge raised (caller holds the lock).

        No transaction is open between MLMD calls, so the file is consistent whenever the lock is held.
        """
        snapshot = self.sqlite.with_name(self.sqlite.name + ".snapshot")
        shutil.copyfile(self.sqlite, snapshot)
        try:
            result = self._merge(payload, pipeline_name, exec_uuid)
        except BaseException:
            self._store = None  # drop MLMD's connection to the file before it is replaced
            os.replace(snapshot, self.sqlite)
            self._store = self._open()
            raise
        snapshot.unlink()
        return result

    # -- reads ----------------------------------------------------------------------------------------

    def _pipeline_id(self, query: _Query, name: str) -> int:
        pipeline_id = query.get_pipeline_id(name)
        if pipeline_id == -1:
            raise PipelineNotFound(f"pipeline {name!r} is not on the server")
        return pipeline_id

    def pull(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> str:
        """The export JSON of the pipeline (only the execution ``exec_uuid`` if given)."""
        with self._lock:
            query = _Query(self._store)
            self._pipeline_id(query, pipeline_name)
            text = query.dumptojson(pipeline_name, exec_uuid)
        if exec_uuid is not None:
            stages = json.loads(text)["Pipeline"][0]["stages"]
            if not any(stage["executions"] for stage in stages):
                raise ExecutionNotFound(f"pipeline {pipeline_name!r} has no execution with uuid {exec_uuid}")
        return text

    def pull_all(self, last_sync_time: int = 0) -> str:
        """Every pipeline as export JSON; with ``last_sync_time`` (ms) only what changed after it."""
        with self._lock:
            return _Query(self._store).extract_to_json(last_sync_time)

    def pipelines(self) -> List[Dict[str, Any]]:
        with self._lock:
            contexts = self._store.get_contexts_by_type(records.PARENT_CONTEXT)
        return [{"id": c.id, "name": c.name, "create_time_since_epoch": c.create_time_since_epoch,
                 "custom_properties": records.props(c.custom_properties)} for c in contexts]

    def executions(self, pipeline_name: str) -> List[Dict[str, Any]]:
        with self._lock:
            query = _Query(self._store)
            self._pipeline_id(query, pipeline_name)
            return _rows(query.get_all_executions_in_pipeline(pipeline_name))

    def artifacts(self, pipeline_name: str) -> List[Dict[str, Any]]:
        """Every artifact an execution of the pipeline used or produced, once each.

        Found through events rather than context attribution: an artifact first created by another
        pipeline is linked to this one's executions by events only.
        """
        with self._lock:
            query = _Query(self._store)
            pipeline_id = self._pipeline_id(query, pipeline_name)
            execution_ids = [e.id for stage in self._store.get_children_contexts_by_context(pipeline_id)
                             for e in self._store.get_executions_by_context(stage.id)]
            events = self._store.get_events_by_execution_ids(execution_ids) if execution_ids else []
            ids = sorted({ev.artifact_id for ev in events})
            return _rows(query.get_all_artifacts_by_ids_list(ids))
