"""Read connections of the read path, apart from the write path's ML Metadata store.

* SQLite: a read-only connection per request (``mode=ro``), so a file replaced on disk
  (``cmf metadata pull`` renames a new file into place) is seen at the next request, and
  nothing is ever written.  The request's queries run in one read transaction: one snapshot.
* PostgreSQL: a small psycopg pool of read-only REPEATABLE READ connections; readers never
  wait for writers (MVCC).

A read never waits for a push: ``cmf server`` runs its write path in a process of its own
(:mod:`cmf_core.server.writer`), and its SQLite store is in WAL mode, where readers and the writer
do not block each other.  Reads are never made through ML Metadata in the same process as its
writes: it links its own copy of SQLite, whose file locks this process's ``sqlite3`` would not see.

Queries are written once with ``?`` placeholders and lower-case MLMD table names, which
both databases accept (``TRUE``/``FALSE`` too, SQLite >= 3.23).
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote

from cmf_core.errors import CmfError

__all__ = ["Database", "Session"]


class Session:
    """The queries of one request, in one read transaction."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self._cursor = cursor
        self._postgres = postgres

    def rows(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple]:
        if self._postgres:
            sql = sql.replace("?", "%s")
        self._cursor.execute(sql, tuple(params))
        return list(self._cursor.fetchall())

    def among(self, column: str, ids: Sequence[int]) -> Tuple[str, List[Any]]:
        """``column`` is one of ``ids``, as SQL and its one parameter: an array on PostgreSQL, a JSON list on
        SQLite (thousands of ``?`` placeholders cost more to parse than the query takes)."""
        if self._postgres:
            return f"{column} = ANY(?)", [list(ids)]
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None


class Database:
    """Where the read path reads: an SQLite mlmd file or a PostgreSQL database (see the module doc)."""

    def __init__(self, sqlite: Optional[Path] = None, postgres: Any = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("the read path reads either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self._pool = None
        if postgres is not None:
            from psycopg_pool import ConnectionPool

            def configure(connection: Any) -> None:
                connection.read_only = True
                connection.isolation_level = 3  # psycopg.IsolationLevel.REPEATABLE_READ: one snapshot a request

            self._pool = ConnectionPool(
                kwargs={"host": postgres.host, "port": postgres.port, "user": postgres.user,
                        "dbname": postgres.dbname, "password": postgres.password or None, "connect_timeout": 10},
                min_size=1, max_size=8, configure=configure, open=True, name="cmf-reads")

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
