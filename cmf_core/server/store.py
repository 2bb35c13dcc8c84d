"""The metadata server's store: ML Metadata's tables in an SQLite file or a PostgreSQL database.

A push is ONE database transaction.  The merge (:func:`~cmf_core.metadata.merge.merge_pipeline`) runs on
:class:`~cmf_core.metadata.sqlstore.SqlStore`, ML Metadata's calls as SQL on one connection, inside a
transaction that holds the store's write lock (:meth:`~cmf_core.server.db.Database.transaction`).  So:

* a failure at any point (a refused record, a dropped connection, the server killed) leaves
  the store exactly as it was: the database rolls the transaction back, at once or when it next opens;
* a reader never sees part of a push: pulls and pages read one snapshot (one read transaction);
* several server processes on one database serialise their pushes on the database's lock, and a
  process that dies releases it with its connection;
* nothing is copied or undone by hand, so a push costs what it writes, not the size of the store.

Why SQL rather than ML Metadata's API with a journal to undo it: ML Metadata commits every call, so a
crash-proof undo needs a journal written before each call and replayed at start-up, and a lock across
processes; its PostgreSQL driver also makes a round trip per row (a 1,000-execution push took 14-24 s).
The schema is fixed per ml-metadata release (version 10 for 1.15-1.17), created in a new store as ml-metadata
creates it (:mod:`cmf_core.metadata.schema`) and checked at start-up.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from cmf_core.errors import CmfError
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import schema
from cmf_core.metadata.databases import ensure_postgres
from cmf_core.metadata.merge import MergeError, MergeResult, merge_pipeline, pipeline_of, pipelines_of
from cmf_core.metadata.query import CmfQuery
from cmf_core.metadata.sqlstore import SqlStore
from cmf_core.server.db import Database, check_schema, connect_args, fit_postgres

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


def describe(sqlite: Optional[Path], postgres: Optional[PostgresConfig]) -> str:
    """Where a store is, for logs (no password)."""
    if sqlite is not None:
        return f"sqlite:{sqlite}"
    return f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/{postgres.dbname}"


class _Query(CmfQuery):
    """``CmfQuery``'s reads over the server's store (one read transaction) instead of an mlmd file."""

    def __init__(self, store: SqlStore) -> None:  # noqa: D107 - no file to open
        self.filepath = ""
        self.is_server = True
        self.store = store
        self._type_names: Dict[str, Dict[int, str]] = {}


def _uuids(execution: Dict[str, Any]) -> List[str]:
    return [u for u in str((execution.get("properties") or {}).get("Execution_uuid", "")).split(",") if u]


def _create_sqlite(path: Path) -> None:
    """Make ``path`` an mlmd file in WAL mode (readers and the writer never block each other).

    The first connection is a writing one, so whatever a crash left (a hot journal or WAL) is rolled back
    or forward before anything reads.  A new store gets ML Metadata's schema from :mod:`cmf_core.metadata.schema`
    (the same tables and version that ml-metadata creates, in one transaction).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise CmfError(f"{path} is not an mlmd file (not an SQLite database)")
    try:
        with closing(sqlite3.connect(path, timeout=300)) as db:
            tables = {r[0].lower() for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise CmfError(f"{path} is corrupt: {exc}") from None
    if "mlmdenv" not in tables:
        if tables:
            raise CmfError(f"{path} is an SQLite database but not an mlmd file")
        with closing(sqlite3.connect(path, timeout=300)) as db:
            schema.create(db)
    with closing(sqlite3.connect(path, timeout=300)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _create_postgres(config: PostgresConfig) -> None:
    """Create the database and ML Metadata's schema in it when they are missing
    (:func:`~cmf_core.metadata.databases.ensure_postgres`), then give it our indexes that take values of any length
    (:func:`~cmf_core.server.db.fit_postgres`)."""
    ensure_postgres(connect_args(config))
    fit_postgres(config)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ServerStore:
    """The server's store, ``sqlite`` (a file path) or ``postgres``: pushes are transactions, pulls snapshots."""

    def __init__(self, sqlite: Optional[os.PathLike] = None, postgres: Optional[PostgresConfig] = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("the server store is either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self.postgres = postgres
        if self.sqlite is not None:
            _create_sqlite(self.sqlite)
        else:
            _create_postgres(postgres)
        self.db = Database(sqlite=self.sqlite, postgres=postgres)
        try:
            check_schema(self.db)
        except BaseException:
            self.db.close()
            raise

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        return describe(self.sqlite, self.postgres)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """The database's and ML Metadata's errors as ours: a refused payload (422) or a failed store."""
        import psycopg

        try:
            yield
        except (mlmd.StoreError, sqlite3.IntegrityError, psycopg.IntegrityError,
                psycopg.DataError) as exc:
            raise StoreRefused(f"the store refused the payload: {exc}") from None
        except (sqlite3.Error, psycopg.Error) as exc:
            raise CmfError(f"the store {self.describe()} failed: {type(exc).__name__}: {exc}") from None

    # -- writes ---------------------------------------------------------------------------------------

    def push(self, payload: Any, pipeline_name: Optional[str] = None, exec_uuid: Optional[str] = None,
             replace: bool = False) -> MergeResult:
        """Merge the pipeline ``pipeline_name`` of an export (only the execution ``exec_uuid`` if given), in one
        transaction; with ``replace`` the payload's values replace stored ones that differ.

        Raises :class:`MergeError` for a malformed payload, :class:`~cmf_core.metadata.merge.Clash` when it
        would change a stored value (without ``replace``) and :class:`StoreRefused` when the store refuses it;
        either way nothing is written.
        """
        pipeline = pipeline_of(payload, pipeline_name)  # validated before the write lock is taken
        if exec_uuid is not None:
            if not any(exec_uuid in _uuids(e) for s in pipeline.get("stages", []) for e in s.get("executions", [])):
                raise MergeError(f"the payload has no execution with uuid {exec_uuid}")
        with self._failures(), self.db.transaction() as session:
            return merge_pipeline(SqlStore(session, _now_ms()), pipeline, exec_uuid=exec_uuid, replace=replace)

    def push_all(self, payload: Any) -> List[MergeResult]:
        """Merge every pipeline of an export (``pull_all``'s, a peer's) in ONE transaction: all or nothing.

        A peer never replaces our values: a record of ours that it holds with other values is a
        :class:`~cmf_core.metadata.merge.Clash`, and nothing of the export is merged."""
        pipelines = pipelines_of(payload)
        names = [p.get("name") if isinstance(p, dict) else None for p in pipelines]
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise MergeError("every pipeline of the export needs a name of its own")
        checked = [pipeline_of({"Pipeline": [p]}) for p in pipelines]  # before the write lock is taken
        with self._failures(), self.db.transaction() as session:
            store = SqlStore(session, _now_ms())
            return [merge_pipeline(store, pipeline) for pipeline in checked]

    # -- reads ----------------------------------------------------------------------------------------

    @contextmanager
    def _query(self) -> Iterator[_Query]:
        with self._failures(), self.db.session() as session:
            yield _Query(SqlStore(session, 0))

    def pull(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> str:
        """The export JSON of the pipeline (only the execution ``exec_uuid`` if given)."""
        with self._query() as query:
            if query.get_pipeline_id(pipeline_name) == -1:
                raise PipelineNotFound(f"pipeline {pipeline_name!r} is not on the server")
            text = query.dumptojson(pipeline_name, exec_uuid)
        if exec_uuid is not None:
            stages = json.loads(text)["Pipeline"][0]["stages"]
            if not any(stage["executions"] for stage in stages):
                raise ExecutionNotFound(f"pipeline {pipeline_name!r} has no execution with uuid {exec_uuid}")
        return text

    def pipeline_names(self) -> List[str]:
        """The names of the store's pipelines."""
        with self._query() as query:
            return sorted(query.get_pipeline_names())

    def pull_all(self, last_sync_time: int = 0) -> str:
        """Every pipeline as export JSON; with ``last_sync_time`` (ms) only what changed after it."""
        with self._query() as query:
            return query.extract_to_json(last_sync_time)
