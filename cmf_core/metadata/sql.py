"""SQL on ML Metadata's tables, written once for SQLite and PostgreSQL: :class:`Session`, the queries of one
connection or transaction.

Queries use ``?`` placeholders and lower-case table names, which both databases accept (``TRUE``/``FALSE`` too,
SQLite >= 3.23).  The client's mlmd files, the server's store and its read path all go through it.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence, Tuple

__all__ = ["Session", "WRITE_LOCK"]

#: The PostgreSQL advisory lock (of a transaction) that every writer of a PostgreSQL store holds: the server's
#: pushes and a ``Cmf(is_server=True)``'s calls ("cmf" in ASCII).
WRITE_LOCK = 0x636D66


class Session:
    """The queries of one transaction (a server request's reads, a push) or of one SQLite connection in
    autocommit mode (a client's mlmd file, whose writes :meth:`atomic` groups)."""

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

    def bytewise(self, text: str) -> str:
        """The SQL text expression ``text`` compared, sorted and lower-cased as SQLite does it (by UTF-8 bytes,
        ASCII letters only): PostgreSQL otherwise follows the database's locale (``en_US``: 'a' < 'B'), and the
        two stores would order and match the same rows differently."""
        return f'({text}) COLLATE "C"' if self.postgres else text

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
        if connection.in_transaction:
            yield
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
