"""Connections to the server's store: one read transaction per request, one write transaction per push.

* SQLite: a read-only connection per request (``mode=ro``), so a file replaced on disk
  (``cmf metadata pull`` renames a new file into place) is seen at the next request, and
  nothing is ever written.  The request's queries run in one read transaction: one snapshot.
* PostgreSQL: a small psycopg pool of read-only REPEATABLE READ connections; readers never
  wait for writers (MVCC).

A write (:meth:`Database.transaction`) is one transaction that holds the store's write lock: on
SQLite ``BEGIN IMMEDIATE`` (the store is in WAL mode, so readers and the writer never block each
other), on PostgreSQL a transaction-scoped advisory lock.  Either is the database's, so several server
processes on one database serialise their pushes, and a writer that dies releases it with its
connection.  Nothing here goes through ML Metadata: it links its own copy of SQLite, whose file locks
this process's ``sqlite3`` would not see, and its calls hold the interpreter lock while they run.

Queries are written once with ``?`` placeholders and lower-case MLMD table names, which
both databases accept (``TRUE``/``FALSE`` too, SQLite >= 3.23).

When PostgreSQL does not answer (stopped, restarting, unreachable), every request fails at once with
:class:`StoreUnavailable` (HTTP 503) instead of waiting out the pool's timeout, and the first request after
it is back is served: a request that gets no pooled connection within :data:`QUICK_WAIT` checks with a
connection of its own whether the database is there; while it is not, each request only makes that check,
and the first that succeeds replaces the pool (the old one would keep backing off its reconnections).

ML Metadata's PostgreSQL schema indexes text of any length with btrees, whose rows hold about 2,700 bytes:
a longer property value (a command, a note, a JSON blob that does not compress) failed the whole push.
:func:`fit_postgres` gives our stores fixed-size indexes on ``md5(value)`` under the same names instead;
ML Metadata still opens, reads and writes such a database.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional
from urllib.parse import quote

from cmf_core.errors import CmfError
from cmf_core.metadata.sql import WRITE_LOCK, Session

__all__ = ["Database", "Session", "SCHEMA_VERSION", "StoreUnavailable", "check_schema", "connect_args", "fit_postgres"]

log = logging.getLogger("cmf.server")


#: The ML Metadata schema version that the read path's SQL and :mod:`cmf_core.server.sqlstore` are written for
#: (ml-metadata 1.15-1.17).
SCHEMA_VERSION = 10
#: Seconds libpq waits for PostgreSQL to accept a connection (its minimum): a stopped database refuses at once,
#: an unreachable host costs this long before the 503.
CONNECT_TIMEOUT = 2
#: Seconds a request waits for a pooled connection before checking that the database answers at all, and in all.
QUICK_WAIT, POOL_WAIT = 0.5, 10
#: ML Metadata's btree indexes on text of any length, and what our PostgreSQL stores index instead.
FITTED_INDEXES = {
    "idx_artifact_property_string": "artifactproperty (name, is_custom_property, md5(string_value))",
    "idx_execution_property_string": "executionproperty (name, is_custom_property, md5(string_value))",
    "idx_context_property_string": "contextproperty (name, is_custom_property, md5(string_value))",
    "idx_artifact_uri": "artifact (md5(uri))",
}


class StoreUnavailable(CmfError):
    """The database does not answer, or no connection to it came free in time (HTTP 503): nothing was read or
    written; the same request succeeds once it is back."""


class Database:
    """Where the read path reads: an SQLite mlmd file or a PostgreSQL database (see the module doc)."""

    def __init__(self, sqlite: Optional[Path] = None, postgres: Any = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("a store is either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self._pool = None
        self._connect: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._down = False  # the last check found the database not answering
        self._answered = 0.0  # monotonic time the database last answered a check
        self._idle_writer: queue.Queue = queue.Queue(maxsize=1)  # the connection the last write left, for the next
        if postgres is not None:
            self._connect = connect_args(postgres)
            self._pool = self._new_pool()

    def _new_pool(self) -> Any:
        from psycopg_pool import ConnectionPool

        def configure(connection: Any) -> None:
            connection.read_only = True
            connection.isolation_level = 3  # psycopg.IsolationLevel.REPEATABLE_READ: one snapshot a request

        return ConnectionPool(kwargs=self._connect, min_size=1, max_size=8, configure=configure,
                              check=ConnectionPool.check_connection, open=True, timeout=POOL_WAIT,
                              name="cmf-reads")  # checked when taken: a restarted database costs no failed request

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        try:
            self._idle_writer.get_nowait().close()
        except queue.Empty:
            pass

    def _unavailable(self, reason: str, answer: str = "the database is unavailable; try again when it is back"
                     ) -> StoreUnavailable:
        """The error to raise (``answer``: what the client is told), logged with the database's own ``reason``."""
        log.warning("the database %s:%s/%s is unavailable: %s", self._connect["host"], self._connect["port"],
                    self._connect["dbname"], reason)
        return StoreUnavailable(answer)

    def _check(self) -> None:
        """Raise :class:`StoreUnavailable` unless a new connection to the database can be made now (once a second
        at most while it answers, so a busy pool does not send every waiting request to connect).  The first
        success after a failure replaces the pool."""
        import psycopg

        with self._lock:
            if not self._down and time.monotonic() - self._answered < 1:
                return
            try:
                psycopg.connect(**self._connect).close()
            except psycopg.Error as exc:
                self._down = True
                raise self._unavailable(str(exc).strip()) from None
            self._answered = time.monotonic()
            if self._down:
                self._down = False
                stale, self._pool = self._pool, self._new_pool()
                stale.close(timeout=0)
                log.warning("the database %s:%s/%s answers again", self._connect["host"], self._connect["port"],
                            self._connect["dbname"])

    @contextmanager
    def _pooled(self) -> Iterator[Any]:
        """A pooled read-only connection, in a transaction that ends with the block; :class:`StoreUnavailable`
        at once when the database does not answer (see the module doc)."""
        from psycopg import OperationalError
        from psycopg_pool import PoolClosed, PoolTimeout

        if self._down:
            self._check()
        pool = self._pool
        try:
            connection = pool.getconn(timeout=QUICK_WAIT)
        except (PoolTimeout, PoolClosed):  # closed: replaced after an outage while this request waited
            self._check()  # it answers: the pool is busy, or reconnecting after a restart
            pool = self._pool
            try:
                connection = pool.getconn()
            except (PoolTimeout, PoolClosed):
                raise self._unavailable(f"no pooled connection came free in {POOL_WAIT} s") from None
        try:
            with connection:
                yield connection
        except OperationalError as exc:
            if not connection.broken:
                raise
            self._down = True
            raise self._unavailable(f"the connection was lost: {exc}") from None
        finally:
            pool.putconn(connection)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One request's queries over one snapshot of the store."""
        if self._pool is not None:
            with self._pooled() as connection:
                with connection.cursor() as cursor:
                    yield Session(cursor, postgres=True)
            return
        if not self.sqlite.is_file():
            raise CmfError(f"the mlmd file {self.sqlite} does not exist")
        connection = sqlite3.connect(f"file:{quote(str(self.sqlite))}?mode=ro", uri=True, timeout=30,
                                     isolation_level=None, check_same_thread=False)
        try:
            connection.execute("BEGIN")
            yield Session(connection.cursor(), postgres=False)
        finally:
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction holding the store's write lock: committed when the block ends, rolled back
        (and the lock released) if it raises or the process dies."""
        if self._pool is not None:
            import psycopg

            connection = self._write_connection()
            try:
                with connection.cursor() as cursor:
                    yield Session(cursor, postgres=True)
                connection.commit()
            except BaseException as exc:
                lost = isinstance(exc, psycopg.OperationalError) and connection.broken
                connection.close()  # the database rolls the transaction back and releases the lock
                if lost:
                    raise self._unavailable(f"the connection was lost: {exc}", "the connection to the database "
                                            "failed during the write; nothing was written: try again") from None
                raise
            try:
                self._idle_writer.put_nowait(connection)
            except queue.Full:  # another thread's write left one first
                connection.close()
            return
        connection = sqlite3.connect(self.sqlite, timeout=300, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield Session(connection.cursor(), postgres=False)
            except BaseException:
                # rolled back here, not left to close(): while the error's traceback keeps a statement of this
                # connection alive, close() only marks it for closing, and the write lock stays held until the
                # garbage collector finalizes that statement -- every later push waited for it (300 s)
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    def _write_connection(self) -> Any:
        """A PostgreSQL connection in a new transaction that holds the write lock: the one the last write left, if
        the database has not closed it since (a restart), else a new one (:class:`StoreUnavailable` when the
        database does not answer).

        Keeping it spares PostgreSQL a backend process and the filling of its catalog caches per push: 15-20 ms of
        the database's CPU each, three times what a one-execution push costs it otherwise, and the pages' queries
        waited for that CPU under a stream of pushes."""
        import psycopg

        try:
            kept = self._idle_writer.get_nowait()
            kept.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            return kept
        except queue.Empty:
            pass
        except psycopg.OperationalError:  # closed by the database since: nothing was done on it
            kept.close()
        try:
            connection = psycopg.connect(**self._connect)
            connection.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
        except psycopg.OperationalError as exc:
            raise self._unavailable(str(exc).strip()) from None
        return connection

    def schema_version(self) -> int:
        """The ML Metadata schema version of the store (raises if the database cannot be reached or read)."""
        with self.session() as s:
            return int(s.value("SELECT schema_version FROM mlmdenv"))


def connect_args(postgres: Any) -> Dict[str, Any]:
    """psycopg's connection arguments for a :class:`~cmf_core.server.store.PostgresConfig`."""
    return {"host": postgres.host, "port": postgres.port, "user": postgres.user, "dbname": postgres.dbname,
            "password": postgres.password or None, "connect_timeout": CONNECT_TIMEOUT}


def fit_postgres(postgres: Any) -> None:
    """Replace ML Metadata's btree indexes on unbounded text in a PostgreSQL store of schema
    :data:`SCHEMA_VERSION` by those of :data:`FITTED_INDEXES`, so that property values and uris of any length
    are stored.  Done once, under the write lock (several servers may start at once); a store already fitted
    is only looked at.  :class:`StoreUnavailable` when the database does not answer."""
    import psycopg

    find = ("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY(%s) "
            "AND indexdef NOT LIKE '%%md5(%%'")
    try:
        with psycopg.connect(**connect_args(postgres)) as connection:
            version = connection.execute("SELECT schema_version FROM mlmdenv").fetchone()
            if version is None or version[0] != SCHEMA_VERSION or not connection.execute(
                    find, [list(FITTED_INDEXES)]).fetchall():
                return  # check_schema refuses another schema by name
            connection.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            for (name,) in connection.execute(find, [list(FITTED_INDEXES)]).fetchall():
                log.info("replacing ML Metadata's index %s by one that takes values of any length", name)
                connection.execute(f"DROP INDEX {name}")
                connection.execute(f"CREATE INDEX {name} ON {FITTED_INDEXES[name]}")
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"the database {postgres.host}:{postgres.port}/{postgres.dbname} is unavailable: "
                               f"{str(exc).strip()}") from None


def check_schema(db: Database) -> None:
    """Refuse, by name, a store whose ML Metadata schema is not the one this cmf's SQL is written for."""
    try:
        version = db.schema_version()
    except Exception as exc:  # noqa: BLE001 - sqlite3 and psycopg errors alike
        raise CmfError(f"cannot read the store's ML Metadata schema version: {type(exc).__name__}: {exc}") from None
    if version != SCHEMA_VERSION:
        raise CmfError(f"the store has ML Metadata schema version {version}; this cmf reads version "
                       f"{SCHEMA_VERSION} (ml-metadata 1.15-1.17): open it with a matching cmf")
