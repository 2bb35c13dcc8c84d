"""SQL on ML Metadata's tables, written once for SQLite, PostgreSQL and MySQL: :class:`Session`, the queries of
one connection or transaction.

Queries use ``?`` placeholders and lower-case table names, which SQLite and PostgreSQL accept (``TRUE``/``FALSE``
too, SQLite >= 3.23); on MySQL, which tells ``Type`` from ``type`` on Linux, the session gives ML Metadata's tables
their own names.  The client's mlmd files, the server's store and its read path all go through it.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence, Tuple

from cmf_core.metadata.schema import TABLES

__all__ = ["Session", "WRITE_LOCK", "DIALECTS"]

#: The PostgreSQL advisory lock (of a transaction) that every writer of a PostgreSQL store holds: the server's
#: pushes and a ``Cmf(is_server=True)``'s calls ("cmf" in ASCII).
WRITE_LOCK = 0x636D66
#: The databases a session speaks to.
DIALECTS = ("sqlite", "postgres", "mysql")
#: A table of ML Metadata where a query names one (after FROM, JOIN, INTO or UPDATE), in lower case.
_TABLE = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)(\s+)(" + "|".join(t.lower() for t in TABLES) + r")\b", re.IGNORECASE)
_TABLES = {t.lower(): t for t in TABLES}
#: What starts a transaction that holds the store's write lock, where the session begins it itself.  On MySQL
#: the lock is the row of ``MLMDEnv``, locked for update: the lock of this one database (a ``GET_LOCK`` name is
#: the whole server's), released with the transaction, a lost connection included (a ``GET_LOCK`` outlives the
#: transaction until released), waited for as any row lock; the reads after it see what the writer before
#: committed.
_BEGIN = {"sqlite": ["BEGIN IMMEDIATE"],
          "mysql": ["START TRANSACTION", "SELECT schema_version FROM mlmdenv FOR UPDATE"]}


class Session:
    """The queries of one transaction (a server request's reads, a push) or of one connection in autocommit mode
    (a client's mlmd file, a ``Cmf(is_server=True)``'s store, whose writes :meth:`atomic` groups).

    ``dialect`` is one of :data:`DIALECTS`; ``postgres=True`` (the server's spelling) is ``"postgres"``."""

    def __init__(self, cursor: Any, dialect: str = "sqlite", *, postgres: bool = False) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"no SQL dialect {dialect!r}: one of {', '.join(DIALECTS)}")
        self._cursor = cursor
        self.dialect = "postgres" if postgres else dialect

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgres"

    def _sql(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        sql = sql.replace("?", "%s")
        return _TABLE.sub(lambda m: m[1] + m[2] + _TABLES[m[3].lower()], sql) if self.dialect == "mysql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._sql(sql), tuple(params))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(self._sql(sql), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in one batch: ``COPY`` on PostgreSQL, ``executemany`` elsewhere (PyMySQL sends it as
        multi-row ``INSERT``s)."""
        if not rows:
            return
        if self.postgres:
            with self._cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        self.execute_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple]:
        self.execute(sql, params)
        return list(self._cursor.fetchall())

    def among(self, column: str, ids: Sequence[Any]) -> Tuple[str, List[Any]]:
        """``column`` is one of ``ids``, as SQL and its parameters: an array on PostgreSQL, a JSON list on SQLite
        (thousands of ``?`` placeholders cost more to parse than the query takes), a list of values on MySQL (whose
        driver writes the values into the query's text anyway; ``FALSE`` for none, as ``IN ()`` is no SQL)."""
        if self.postgres:
            return f"{column} = ANY(?)", [list(ids)]
        if self.dialect == "mysql":
            return (f"{column} IN ({', '.join('?' * len(ids))})", list(ids)) if ids else ("FALSE", [])
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def bytewise(self, text: str) -> str:
        """The SQL text expression ``text`` compared, sorted and lower-cased as SQLite does it (by UTF-8 bytes,
        ASCII letters only): PostgreSQL otherwise follows the database's locale (``en_US``: 'a' < 'B'), and the
        two stores would order and match the same rows differently."""
        return f'({text}) COLLATE "C"' if self.postgres else text

    def _in_transaction(self) -> bool:
        connection = self._cursor.connection
        if self.dialect == "mysql":
            from pymysql.constants import SERVER_STATUS

            return bool(connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)
        return connection.in_transaction

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Make the block one transaction, holding the store's write lock from its start, unless one is open already
        (a server's transaction, or an outer block): then the block is part of it."""
        connection = self._cursor.connection
        if self.postgres:
            if connection.autocommit and connection.info.transaction_status == 0:  # idle: no transaction open
                with connection.transaction():
                    self.execute("SELECT pg_advisory_xact_lock(?)", [WRITE_LOCK])
                    yield
            else:
                yield
            return
        if self._in_transaction():
            yield
            return
        for statement in _BEGIN[self.dialect]:
            self.execute(statement)
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")
