"""ML Metadata's schema, version 10 (what ml-metadata 1.15-1.17 create), written without ml-metadata, in SQLite,
PostgreSQL and MySQL (or MariaDB).

An mlmd file is ML Metadata's tables in SQLite; :func:`create` makes a new one with the same tables, columns,
keys and indexes, and ``MLMDEnv.schema_version`` 10, so that ml-metadata opens it as its own, without a
migration, and every reader of ML Metadata's files (the original cmflib, ``dvc``-side tools, our server)
reads it.  :func:`create_postgres` does the same in a PostgreSQL database, with the types, names and indexes
ml-metadata gives the schema there, and :func:`create_mysql` in a MySQL database.  :func:`describe`,
:func:`describe_postgres` and :func:`describe_mysql` give a database's schema as data, which the tests compare
with one that ml-metadata itself created.  This is the first piece of the store that works on every Python
(ml-metadata ships no wheel past 3.11).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

__all__ = ["SCHEMA_VERSION", "SIMPLE_TYPES", "TABLES", "create", "describe", "create_postgres", "describe_postgres",
           "create_mysql", "describe_mysql"]

SCHEMA_VERSION = 10
#: The types ml-metadata puts into every store it opens (name: type_kind, 1 for artifacts, 0 for executions),
#: and leaves out of its lists of types.  A store without them is one that ml-metadata must write to open: a
#: file opened read-only would be refused.
SIMPLE_TYPES = {"mlmd.Dataset": 1, "mlmd.Model": 1, "mlmd.Metrics": 1, "mlmd.Statistics": 1, "mlmd.Train": 0,
                "mlmd.Transform": 0, "mlmd.Process": 0, "mlmd.Evaluate": 0, "mlmd.Deploy": 0}

#: ML Metadata's tables, by their names: MySQL on Linux tells ``Type`` from ``type``.
TABLES = ("Type", "TypeProperty", "ParentType", "Artifact", "ArtifactProperty", "Execution", "ExecutionProperty",
          "Event", "EventPath", "MLMDEnv", "Context", "ContextProperty", "ParentContext", "Association", "Attribution")

#: The PostgreSQL advisory lock (of the transaction) that :func:`create_postgres` holds.
_POSTGRES_CREATE_LOCK = 0x6D6C6D64656E76  # "mlmdenv"
#: The MySQL lock (of the connection) that :func:`create_mysql` holds: one per database (a name is at most 64
#: characters, a database's name too, so it is hashed).
_MYSQL_CREATE_LOCK = "CONCAT('mlmdenv.', MD5(DATABASE()))"
#: Seconds :func:`create_mysql` waits for another creator of the same database.
_MYSQL_CREATE_WAIT = 60


@dataclass(frozen=True)
class _Dialect:
    """How ml-metadata spells its schema in one database: where the column types and keys differ."""

    serial: str  # an id the database numbers itself
    time: str  # milliseconds since the epoch
    flag: str  # is_custom_property, is_index_step
    kind: str  # Type.type_kind
    double: str
    blob: str
    long_text: str  # a property's string_value
    partial: bool  # the property indexes leave NULL values out
    named: bool  # the unique keys of Artifact, Execution and Event carry ml-metadata's constraint names
    text_key: str = ""  # how much of a TEXT column an index holds (MySQL indexes a prefix only)


_SQLITE = _Dialect(serial="INTEGER PRIMARY KEY AUTOINCREMENT", time="INT", flag="TINYINT(1)", kind="TINYINT(1)",
                   double="DOUBLE", blob="BLOB", long_text="TEXT", partial=True, named=False)
_POSTGRES = _Dialect(serial="SERIAL PRIMARY KEY", time="BIGINT", flag="BOOLEAN", kind="SMALLINT",
                     double="DOUBLE PRECISION", blob="BYTEA", long_text="TEXT", partial=False, named=True)
_MYSQL = _Dialect(serial="INTEGER PRIMARY KEY AUTO_INCREMENT", time="BIGINT", flag="TINYINT(1)", kind="TINYINT(1)",
                  double="DOUBLE", blob="MEDIUMBLOB", long_text="MEDIUMTEXT", partial=False, named=True,
                  text_key="(255)")


def _unique(d: _Dialect, name: str, columns: str) -> str:
    return f"CONSTRAINT {name} UNIQUE({columns})" if d.named else f"UNIQUE({columns})"


def _property_table(d: _Dialect, node: str) -> str:
    """The properties of artifacts, executions or contexts: one row per (node, name, custom or not)."""
    key = f"`{node.lower()}_id`"
    return (f"CREATE TABLE `{node}Property` ({key} INT NOT NULL, `name` VARCHAR(255) NOT NULL, "
            f"`is_custom_property` {d.flag} NOT NULL, `int_value` INT, `double_value` {d.double}, "
            f"`string_value` {d.long_text}, `byte_value` {d.blob}, `proto_value` {d.blob}, `bool_value` BOOLEAN, "
            f"PRIMARY KEY ({key}, `name`, `is_custom_property`))")


def _key(d: _Dialect, column: str) -> str:
    """A column of an index: a TEXT one (``uri``, ``string_value``) by as much of it as the database indexes."""
    return f"`{column}`{d.text_key}" if column in ("uri", "string_value") else f"`{column}`"


def _property_indexes(d: _Dialect, node: str) -> List[str]:
    """One index per kind of value (partial where ml-metadata makes it so): filters on a property's value use it."""
    return [f"CREATE INDEX `idx_{node.lower()}_property_{kind}` ON `{node}Property`"
            f"(`name`, `is_custom_property`, {_key(d, f'{kind}_value')})"
            + (f" WHERE `{kind}_value` IS NOT NULL" if d.partial else "") for kind in ("int", "double", "string")]


def _statements(d: _Dialect) -> List[str]:
    """Every statement that makes ML Metadata's schema (in the order of ml-metadata's own SQLite files), ending with
    its version row."""
    times = (f"`create_time_since_epoch` {d.time} NOT NULL DEFAULT 0, "
             f"`last_update_time_since_epoch` {d.time} NOT NULL DEFAULT 0")
    tables = [
        f"CREATE TABLE `Type` (`id` {d.serial}, `name` VARCHAR(255) NOT NULL, `version` VARCHAR(255), "
        f"`type_kind` {d.kind} NOT NULL, `description` TEXT, `input_type` TEXT, `output_type` TEXT, "
        "`external_id` VARCHAR(255) UNIQUE)",
        "CREATE TABLE `TypeProperty` (`type_id` INT NOT NULL, `name` VARCHAR(255) NOT NULL, `data_type` INT NULL, "
        "PRIMARY KEY (`type_id`, `name`))",
        "CREATE TABLE `ParentType` (`type_id` INT NOT NULL, `parent_type_id` INT NOT NULL, "
        "PRIMARY KEY (`type_id`, `parent_type_id`))",
        f"CREATE TABLE `Artifact` (`id` {d.serial}, `type_id` INT NOT NULL, `uri` TEXT, `state` INT, "
        f"`name` VARCHAR(255), `external_id` VARCHAR(255) UNIQUE, {times}, "
        f"{_unique(d, 'UniqueArtifactTypeName', '`type_id`, `name`')})",
        _property_table(d, "Artifact"),
        f"CREATE TABLE `Execution` (`id` {d.serial}, `type_id` INT NOT NULL, `last_known_state` INT, "
        f"`name` VARCHAR(255), `external_id` VARCHAR(255) UNIQUE, {times}, "
        f"{_unique(d, 'UniqueExecutionTypeName', '`type_id`, `name`')})",
        _property_table(d, "Execution"),
        f"CREATE TABLE `Event` (`id` {d.serial}, `artifact_id` INT NOT NULL, `execution_id` INT NOT NULL, "
        f"`type` INT NOT NULL, `milliseconds_since_epoch` {d.time}, "
        f"{_unique(d, 'UniqueEvent', '`artifact_id`, `execution_id`, `type`')})",
        f"CREATE TABLE `EventPath` (`event_id` INT NOT NULL, `is_index_step` {d.flag} NOT NULL, `step_index` INT, "
        "`step_key` TEXT)",
        "CREATE TABLE `MLMDEnv` (`schema_version` INTEGER PRIMARY KEY)",
        f"CREATE TABLE `Context` (`id` {d.serial}, `type_id` INT NOT NULL, `name` VARCHAR(255) NOT NULL, "
        f"`external_id` VARCHAR(255) UNIQUE, {times}, UNIQUE(`type_id`, `name`))",
        _property_table(d, "Context"),
        "CREATE TABLE `ParentContext` (`context_id` INT NOT NULL, `parent_context_id` INT NOT NULL, "
        "PRIMARY KEY (`context_id`, `parent_context_id`))",
        f"CREATE TABLE `Association` (`id` {d.serial}, `context_id` INT NOT NULL, `execution_id` INT NOT NULL, "
        "UNIQUE(`context_id`, `execution_id`))",
        f"CREATE TABLE `Attribution` (`id` {d.serial}, `context_id` INT NOT NULL, `artifact_id` INT NOT NULL, "
        "UNIQUE(`context_id`, `artifact_id`))",
    ]
    indexes = [
        *(f"CREATE INDEX `idx_{table.lower()}_{column}` ON `{table}`({_key(d, column)})" for table, column in (
            ("Artifact", "uri"), ("Artifact", "create_time_since_epoch"), ("Artifact", "last_update_time_since_epoch"),
            ("Event", "execution_id"), ("ParentContext", "parent_context_id"), ("Type", "name"),
            ("Execution", "create_time_since_epoch"), ("Execution", "last_update_time_since_epoch"),
            ("Context", "create_time_since_epoch"), ("Context", "last_update_time_since_epoch"),
            ("EventPath", "event_id"))),
        *(index for node in ("Artifact", "Execution", "Context") for index in _property_indexes(d, node)),
        *(f"CREATE INDEX `idx_{table.lower()}_external_id` ON `{table}`(`external_id`)"
          for table in ("Type", "Artifact", "Execution", "Context")),
    ]
    simple_types = [f"INSERT INTO `Type` (`name`, `type_kind`) VALUES ('{name}', {kind})"
                    for name, kind in SIMPLE_TYPES.items()]
    return [*tables, *indexes, f"INSERT INTO `MLMDEnv` (`schema_version`) VALUES ({SCHEMA_VERSION})", *simple_types]


def create(db: sqlite3.Connection) -> None:
    """Create ML Metadata's schema, version 10, in the empty database ``db``, in one transaction (a crash
    leaves the file empty, never half a schema).  The transaction takes the write lock before it looks, so
    that a file another connection is writing into is never taken for an empty one."""
    with db:
        db.execute("BEGIN IMMEDIATE")  # sqlite3 opens no transaction for CREATE by itself
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise ValueError("the database is not empty: ML Metadata's schema goes into a new file only")
        for statement in _statements(_SQLITE):
            db.execute(statement)


def create_postgres(connection: Any) -> None:
    """Create ML Metadata's schema, version 10, as ml-metadata creates it on PostgreSQL, in the current schema of
    the psycopg 3 ``connection``, which must hold no relation yet.

    All in one transaction: committed on return, or a part of the caller's own when one is open; an error leaves
    nothing behind.  A lock keeps two creators apart: the second waits for the first to finish, then finds the
    schema there and is refused.  Identifiers are unquoted, so folded to lower case as ml-metadata's are."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", [_POSTGRES_CREATE_LOCK])
        if connection.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                              "current_schema()::regnamespace").fetchone()[0]:
            raise ValueError("the database is not empty: ML Metadata's schema goes into a new database only")
        for statement in _statements(_POSTGRES):
            connection.execute(statement.replace("`", ""))


def create_mysql(connection: Any) -> None:
    """Create ML Metadata's schema, version 10, as ml-metadata creates it on MySQL and MariaDB, in the current
    database of the PyMySQL ``connection``, which must hold no table yet.

    MySQL commits each ``CREATE`` by itself, so a transaction cannot make this all or nothing: a create that fails
    drops the tables it made, and the database is empty again for the next.  A lock of the database keeps two
    creators apart: the second waits for the first to finish, then finds the schema there and is refused."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT GET_LOCK({_MYSQL_CREATE_LOCK}, %s)", [_MYSQL_CREATE_WAIT])
        if cursor.fetchone()[0] != 1:
            raise TimeoutError(f"another process has been creating ML Metadata's schema for {_MYSQL_CREATE_WAIT} s")
        try:
            cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()")
            if cursor.fetchone()[0]:
                raise ValueError("the database is not empty: ML Metadata's schema goes into a new database only")
            made: List[str] = []  # the tables this call created, which a failure drops
            try:
                for statement in _statements(_MYSQL):
                    cursor.execute(statement)
                    if statement.startswith("CREATE TABLE"):
                        made.append(statement.split("`")[1])
                connection.commit()
            except BaseException:
                if made:
                    cursor.execute(f"DROP TABLE {', '.join(f'`{table}`' for table in made)}")
                raise
        finally:
            cursor.execute(f"DO RELEASE_LOCK({_MYSQL_CREATE_LOCK})")


def describe(db: sqlite3.Connection) -> Dict[str, Any]:
    """A database's schema as data, whatever the text that created it: per table its columns (name, declared
    type, not null, default, place in the primary key), whether its key is AUTOINCREMENT, and its indexes
    (columns, unique, partial, the condition of a partial one); and the rows of ``MLMDEnv``."""
    tables: Dict[str, Any] = {}
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                      "name NOT LIKE 'sqlite_%' ORDER BY name")]
    for table in names:
        columns = [tuple(r[1:]) for r in db.execute(f"PRAGMA table_info(`{table}`)")]
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        indexes: List[Tuple] = []
        for _, index, unique, origin, partial in db.execute(f"PRAGMA index_list(`{table}`)"):
            keys = tuple(r[2] for r in db.execute(f"PRAGMA index_info(`{index}`)"))
            text = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()[0] or ""
            condition = " ".join(text.partition(" WHERE ")[2].replace("`", "").split())
            indexes.append((index if origin == "c" else origin, keys, bool(unique), bool(partial), condition))
        tables[table] = {"columns": columns, "autoincrement": "AUTOINCREMENT" in sql.upper(),
                         "indexes": sorted(indexes)}
    version = [r[0] for r in db.execute("SELECT schema_version FROM MLMDEnv")] if "MLMDEnv" in names else []
    return {"tables": tables, "schema_version": version}


def describe_postgres(connection: Any) -> Dict[str, Any]:
    """The current schema of a PostgreSQL database as data, whatever the text that created it: per table its
    columns (name, type, not null, default), constraints (primary and unique keys among them, with their names
    and definitions) and indexes (name and definition); the sequences and the columns that own them; and the
    rows of ``mlmdenv``."""
    def rows(query: str, *args: Any) -> List[Tuple]:
        return [tuple(row) for row in connection.execute(query, args).fetchall()]

    tables: Dict[str, Any] = {}
    for oid, table in rows("SELECT oid, relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                           "AND relkind IN ('r', 'p') ORDER BY relname"):
        tables[table] = {
            "columns": rows("SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid) "
                            "FROM pg_attribute LEFT JOIN pg_attrdef ON (adrelid, adnum) = (attrelid, attnum) "
                            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", oid),
            "constraints": rows("SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE conrelid = %s ORDER BY conname", oid),
            "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                            "AND tablename = %s ORDER BY indexname", table),
        }
    sequences = rows(
        "SELECT s.relname, t.relname, attname, format_type(seqtypid, NULL), seqstart, seqincrement, seqmin, seqmax, "
        "seqcache, seqcycle FROM pg_sequence JOIN pg_class s ON s.oid = seqrelid "
        "LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i') "
        "LEFT JOIN pg_class t ON t.oid = d.refobjid "
        "LEFT JOIN pg_attribute ON (attrelid, attnum) = (d.refobjid, d.refobjsubid) "
        "WHERE s.relnamespace = current_schema()::regnamespace ORDER BY s.relname")
    version = [r[0] for r in rows("SELECT schema_version FROM mlmdenv")] if "mlmdenv" in tables else []
    return {"tables": tables, "sequences": sequences, "schema_version": version}


def describe_mysql(connection: Any) -> Dict[str, Any]:
    """The current database of a MySQL (or MariaDB) connection as data, whatever the text that created it: per table
    its engine and collation, columns (name, type, nullable, default, extra such as ``auto_increment``, collation)
    and indexes (name, unique, and per column its name and indexed prefix); and the rows of ``MLMDEnv``."""
    def rows(query: str, *args: Any) -> List[Tuple]:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return [tuple(row) for row in cursor.fetchall()]

    tables: Dict[str, Any] = {}
    for table, engine, collation in rows("SELECT table_name, engine, table_collation FROM information_schema.tables "
                                         "WHERE table_schema = DATABASE() ORDER BY table_name"):
        indexes: Dict[str, Any] = {}
        for name, non_unique, column, prefix in rows(
                "SELECT index_name, non_unique, column_name, sub_part FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY index_name, seq_in_index", table):
            indexes.setdefault(name, {"unique": not non_unique, "columns": []})["columns"].append((column, prefix))
        tables[table] = {
            "engine": engine, "collation": collation,
            "columns": rows("SELECT column_name, column_type, is_nullable, column_default, extra, collation_name "
                            "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s "
                            "ORDER BY ordinal_position", table),
            "indexes": indexes,
        }
    version = [r[0] for r in rows("SELECT schema_version FROM MLMDEnv")] if "MLMDEnv" in tables else []
    return {"tables": tables, "schema_version": version}
