"""ML Metadata's schema written without ml-metadata (``cmf_core/metadata/schema.py``), in SQLite, PostgreSQL
and MySQL (a real MariaDB), checked against ml-metadata itself where it installs (Python <= 3.11): the same
tables, columns, keys and indexes as a database ml-metadata creates, and ml-metadata opens ours as its own and
reads back what it wrote there.  The refusals and the all-or-nothing creation are checked everywhere."""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any, List

import pytest

from cmf_core.metadata import schema

try:
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb
except ImportError:  # no wheel past Python 3.11
    metadata_store = pb = None

NEEDS_MLMD = pytest.mark.skipif(pb is None, reason="the oracle, ml-metadata, installs on Python <= 3.11 only")


class Database:
    """A database reached the ways the tests need: by ``schema``, by ml-metadata and by plain SQL."""

    def connect(self) -> Any:
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        with self.connect() as connection:
            connection.cursor().execute(sql)


class SQLiteDatabase(Database):
    """An SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> Any:
        return closing(sqlite3.connect(self.path, timeout=30))

    def create(self) -> None:
        with self.connect() as db:
            schema.create(db)

    def describe(self) -> dict:
        with self.connect() as db:
            return schema.describe(db)

    def relations(self) -> List[str]:
        with self.connect() as db:
            return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master"))

    def mlmd_config(self) -> Any:
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(self.path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config


class PostgresDatabase(Database):
    """A new, empty database on the test module's PostgreSQL server."""

    def __init__(self, server: Any) -> None:  # noqa: D107 - no file
        self.server = server
        self.dbname = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect("postgres") as admin:
            admin.execute(f"CREATE DATABASE {self.dbname}")

    def connect(self, dbname: str = "") -> Any:
        import psycopg

        return psycopg.connect(host=self.server.host, port=self.server.port, user=self.server.USER,
                               dbname=dbname or self.dbname, autocommit=True)

    def create(self) -> None:
        with self.connect() as connection:
            schema.create_postgres(connection)

    def describe(self) -> dict:
        with self.connect() as connection:
            return schema.describe_postgres(connection)

    def relations(self) -> List[str]:
        with self.connect() as connection:
            return [r[0] for r in connection.execute("SELECT relname FROM pg_class WHERE relnamespace = "
                                                     "current_schema()::regnamespace ORDER BY relname")]

    def mlmd_config(self) -> Any:
        config = pb.ConnectionConfig()
        config.postgresql.host = self.server.host
        config.postgresql.port = str(self.server.port)
        config.postgresql.user = self.server.USER
        config.postgresql.dbname = self.dbname
        return config


class MysqlDatabase(Database):
    """A new, empty database on the test module's MariaDB server."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect(None) as admin:
            admin.cursor().execute(f"CREATE DATABASE {self.name}")

    def connect(self, database: Any = "") -> Any:
        import pymysql

        return pymysql.connect(host=self.server.host, port=self.server.port, user=self.server.USER,
                               password=self.server.PASSWORD, database=self.name if database == "" else database,
                               autocommit=True)

    def create(self) -> None:
        with self.connect() as connection:
            schema.create_mysql(connection)

    def describe(self) -> dict:
        with self.connect() as connection:
            return schema.describe_mysql(connection)

    def relations(self) -> List[str]:
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                           "ORDER BY table_name")
            return [r[0] for r in cursor.fetchall()]

    def mlmd_config(self) -> Any:
        config = pb.ConnectionConfig()
        config.mysql.host = self.server.host
        config.mysql.port = self.server.port
        config.mysql.user = self.server.USER
        config.mysql.password = self.server.PASSWORD
        config.mysql.database = self.name
        return config


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def new_database(request, tmp_path):
    """Makes new, empty databases of one kind: SQLite files, or databases on one real PostgreSQL or MariaDB
    server."""
    if request.param == "sqlite":
        return lambda: SQLiteDatabase(tmp_path / f"{uuid.uuid4().hex}.db")
    server = request.getfixturevalue(request.param)  # skips where the server is not installed
    return lambda: (PostgresDatabase if request.param == "postgres" else MysqlDatabase)(server)


@NEEDS_MLMD
def test_the_schema_is_the_one_ml_metadata_creates(new_database):
    theirs, ours = new_database(), new_database()
    created = metadata_store.MetadataStore(theirs.mlmd_config())  # ml-metadata creates its schema
    del created  # and lets the database go
    ours.create()
    expected = theirs.describe()
    assert expected["schema_version"] == [schema.SCHEMA_VERSION]
    assert ours.describe() == expected
    assert {table.lower() for table in expected["tables"]} == {table.lower() for table in schema.TABLES}


@NEEDS_MLMD
def test_ml_metadata_opens_ours_and_reads_back_what_it_writes(new_database):
    ours = new_database()
    ours.create()
    created = ours.describe()
    store = metadata_store.MetadataStore(ours.mlmd_config())
    dataset = store.put_artifact_type(pb.ArtifactType(name="Dataset", properties={"Commit": pb.STRING}))
    run = store.put_execution_type(pb.ExecutionType(name="Train"))
    stage = store.put_context_type(pb.ContextType(name="Pipeline"))
    [artifact] = store.put_artifacts([pb.Artifact(type_id=dataset, uri="d41d8cd98f00b204e9800998ecf8427e",
                                                  name="data.csv:1", properties={"Commit": pb.Value(string_value="a")},
                                                  custom_properties={"rows": pb.Value(int_value=3)})])
    [execution] = store.put_executions([pb.Execution(type_id=run, name="run-1")])
    context, parent = store.put_contexts([pb.Context(type_id=stage, name="p/train"),
                                          pb.Context(type_id=stage, name="p")])
    event = pb.Event(artifact_id=artifact, execution_id=execution, type=pb.Event.INPUT)
    event.path.steps.add().key = "data"
    store.put_events([event])
    store.put_attributions_and_associations([pb.Attribution(context_id=context, artifact_id=artifact)],
                                            [pb.Association(context_id=context, execution_id=execution)])
    store.put_parent_contexts([pb.ParentContext(child_id=context, parent_id=parent)])
    del store

    again = metadata_store.MetadataStore(ours.mlmd_config())  # opened again: the records are there
    [read] = again.get_artifacts_by_id([artifact])
    assert (read.uri, read.properties["Commit"].string_value, read.custom_properties["rows"].int_value) == \
        ("d41d8cd98f00b204e9800998ecf8427e", "a", 3)
    [read_event] = again.get_events_by_execution_ids([execution])
    assert read_event.path.steps[0].key == "data"
    assert [c.id for c in again.get_contexts_by_artifact(artifact)] == [context]
    assert [c.id for c in again.get_parent_contexts_by_context(context)] == [parent]
    del again
    assert ours.describe() == created  # ml-metadata migrated nothing


def test_create_refuses_a_database_that_holds_anything(new_database):
    used = new_database()
    used.execute("CREATE TABLE t (x INT)")
    with pytest.raises(ValueError, match="not empty"):
        used.create()
    assert used.relations() == ["t"]


def test_a_create_that_fails_leaves_the_database_empty_for_the_next(new_database, monkeypatch):
    """All or nothing: half a schema would be refused by every later create."""
    statements = schema._statements
    monkeypatch.setattr(schema, "_statements", lambda dialect: [*statements(dialect), "SELECT x FROM no_such_table"])
    database = new_database()
    with pytest.raises(Exception, match="no_such_table"):
        database.create()
    assert database.relations() == []
    monkeypatch.undo()
    database.create()
    assert database.describe()["schema_version"] == [schema.SCHEMA_VERSION]


def attempt_in_thread(create: Any) -> tuple:
    """Start ``create()`` in a thread; its outcome ("created", "refused" or the error) lands in the list."""
    outcome: List[str] = []

    def run() -> None:
        try:
            create()
            outcome.append("created")
        except ValueError:
            outcome.append("refused")
        except Exception as exc:  # noqa: BLE001 - any other outcome fails the test, by name
            outcome.append(repr(exc))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_create_waits_for_a_writer_of_the_same_file_and_is_refused_after_it(tmp_path):
    database = SQLiteDatabase(tmp_path / "mlmd")
    with closing(sqlite3.connect(database.path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("CREATE TABLE t (x INT)")
        thread, outcome = attempt_in_thread(database.create)
        time.sleep(0.5)
        assert thread.is_alive()  # waiting for the write lock, not taking the file for an empty one
        writer.execute("COMMIT")
        thread.join(30)
    assert outcome == ["refused"]
    assert database.relations() == ["t"]


def test_two_creates_at_once_on_postgresql_make_one_schema(postgres):
    """Two servers that start at once on one new database: the second waits, then is refused."""
    database = PostgresDatabase(postgres)
    with database.connect() as first:
        with first.transaction():
            schema.create_postgres(first)  # a part of the caller's transaction: not committed yet
            thread, outcome = attempt_in_thread(database.create)
            time.sleep(0.5)
            assert thread.is_alive()
        thread.join(30)
    assert outcome == ["refused"]
    assert database.describe()["schema_version"] == [schema.SCHEMA_VERSION]


def test_two_creates_at_once_on_mysql_make_one_schema(mysql, monkeypatch):
    """MySQL commits each CREATE by itself, so no transaction keeps a second creator out: while the first is still
    busy (its first statement takes a second), the second waits for it, then is refused."""
    statements = schema._statements
    monkeypatch.setattr(schema, "_statements", lambda dialect: ["DO SLEEP(1)", *statements(dialect)])
    database = MysqlDatabase(mysql)
    first, first_outcome = attempt_in_thread(database.create)
    time.sleep(0.3)
    second, second_outcome = attempt_in_thread(database.create)
    time.sleep(0.3)
    assert first.is_alive() and second.is_alive()  # the second waits (unlocked, it would create alongside the first
    # and fail on a table that the first made)
    first.join(30)
    second.join(30)
    assert (first_outcome, second_outcome) == (["created"], ["refused"])
    assert database.describe()["schema_version"] == [schema.SCHEMA_VERSION]
