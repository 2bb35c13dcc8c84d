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
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote

from cmf_core.errors import CmfError

__all__ = ["Database", "Session", "SCHEMA_VERSION", "check_schema"]


#: The ML Metadata schema version that the read path's SQL and :mod:`cmf_core.server.sqlstore` are written for
#: (ml-metadata 1.15-1.17).
SCHEMA_VERSION = 10
#: PostgreSQL advisory lock key of the write lock ("cmf" in ASCII)
WRITE_LOCK = 0x636D66


class Session:
    """The queries of one transaction: a request's reads, or a push."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self._cursor = cursor
        self.postgres = postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._sql(sql), tuple(params))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(self._sql(sql), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in one batch: ``COPY`` on PostgreSQL, ``executemany`` on SQLite."""
        if not rows:
            return
        if self.postgres:
            with self._cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        self._cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * len(columns))})", rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple]:
        self.execute(sql, params)
        return list(self._cursor.fetchall())

    def among(self, column: str, ids: Sequence[int]) -> Tuple[str, List[Any]]:
        """``column`` is one of ``ids``, as SQL and its one parameter: an array on PostgreSQL, a JSON list on
        SQLite (thousands of ``?`` placeholders cost more to parse than the query takes)."""
        if self.postgres:
            return f"{column} = ANY(?)", [list(ids)]
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None


class Database:
    """Where the read path reads: an SQLite mlmd file or a PostgreSQL database (see the module doc)."""

    def __init__(self, sqlite: Optional[Path] = None, postgres: Any = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("a store is either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self._pool = None
        self._connect: Dict[str, Any] = {}
        if postgres is not None:
            self._connect = {"host": postgres.host, "port": postgres.port, "user": postgres.user,
                             "dbname": postgres.dbname, "password": postgres.password or None, "connect_timeout": 10}
            from psycopg_pool import ConnectionPool

            def configure(connection: Any) -> None:
                connection.read_only = True
                connection.isolation_level = 3  # psycopg.IsolationLevel.REPEATABLE_READ: one snapshot a request

            self._pool = ConnectionPool(
                kwargs=self._connect,
                min_size=1, max_size=8, configure=configure, check=ConnectionPool.check_connection, open=True,
                timeout=10, name="cmf-reads")  # checked when taken: a restarted database costs no failed request

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One request's queries over one snapshot of the store."""
        if self._pool is not None:
            with self._pool.connection() as connection:
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

            with psycopg.connect(**self._connect) as connection:  # commits at the end, rolls back on error
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                    yield Session(cursor, postgres=True)
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

    def schema_version(self) -> int:
        """The ML Metadata schema version of the store (raises if the database cannot be reached or read)."""
        with self.session() as s:
            return int(s.value("SELECT schema_version FROM mlmdenv"))


def check_schema(db: Database) -> None:
    """Refuse, by name, a store whose ML Metadata schema is not the one this cmf's SQL is written for."""
    try:
        version = db.schema_version()
    except Exception as exc:  # noqa: BLE001 - sqlite3 and psycopg errors alike
        raise CmfError(f"cannot read the store's ML Metadata schema version: {type(exc).__name__}: {exc}") from None
    if version != SCHEMA_VERSION:
        raise CmfError(f"the store has ML Metadata schema version {version}; this cmf reads version "
                       f"{SCHEMA_VERSION} (ml-metadata 1.15-1.17): open it with a matching cmf")
