"""ML Metadata's SQLite schema, version 10 (what ml-metadata 1.15-1.17 create), written without ml-metadata.

An mlmd file is ML Metadata's tables in SQLite; :func:`create` makes a new one with the same tables, columns,
keys and indexes, and ``MLMDEnv.schema_version`` 10, so that ml-metadata opens it as its own, without a
migration, and every reader of ML Metadata's files (the original cmflib, ``dvc``-side tools, our server)
reads it.  :func:`describe` gives a file's schema as data, which the tests compare with a file that
ml-metadata itself created.  This is the first piece of the store that works on every Python
(ml-metadata ships no wheel past 3.11).
"""
from __future__ import annotations

import sqlite3
from typing import Any, Dict, List, Tuple

__all__ = ["SCHEMA_VERSION", "create", "describe"]

SCHEMA_VERSION = 10

_NODE_TIMES = ("`create_time_since_epoch` INT NOT NULL DEFAULT 0, "
               "`last_update_time_since_epoch` INT NOT NULL DEFAULT 0")
_PROPERTY_VALUES = ("`int_value` INT, `double_value` DOUBLE, `string_value` TEXT, `byte_value` BLOB, "
                    "`proto_value` BLOB, `bool_value` BOOLEAN")


def _property_table(node: str) -> str:
    """The properties of artifacts, executions or contexts: one row per (node, name, custom or not)."""
    key = f"`{node.lower()}_id`"
    return (f"CREATE TABLE `{node}Property` ({key} INT NOT NULL, `name` VARCHAR(255) NOT NULL, "
            f"`is_custom_property` TINYINT(1) NOT NULL, {_PROPERTY_VALUES}, "
            f"PRIMARY KEY ({key}, `name`, `is_custom_property`))")


def _property_indexes(node: str) -> List[str]:
    """One partial index per kind of value: filters on a property's value use it."""
    return [f"CREATE INDEX `idx_{node.lower()}_property_{kind}` ON `{node}Property`"
            f"(`name`, `is_custom_property`, `{kind}_value`) WHERE `{kind}_value` IS NOT NULL"
            for kind in ("int", "double", "string")]


_TABLES = [
    "CREATE TABLE `Type` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `name` VARCHAR(255) NOT NULL, "
    "`version` VARCHAR(255), `type_kind` TINYINT(1) NOT NULL, `description` TEXT, `input_type` TEXT, "
    "`output_type` TEXT, `external_id` VARCHAR(255) UNIQUE)",
    "CREATE TABLE `TypeProperty` (`type_id` INT NOT NULL, `name` VARCHAR(255) NOT NULL, `data_type` INT NULL, "
    "PRIMARY KEY (`type_id`, `name`))",
    "CREATE TABLE `ParentType` (`type_id` INT NOT NULL, `parent_type_id` INT NOT NULL, "
    "PRIMARY KEY (`type_id`, `parent_type_id`))",
    "CREATE TABLE `Artifact` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `type_id` INT NOT NULL, `uri` TEXT, "
    f"`state` INT, `name` VARCHAR(255), `external_id` VARCHAR(255) UNIQUE, {_NODE_TIMES}, "
    "UNIQUE(`type_id`, `name`))",
    _property_table("Artifact"),
    "CREATE TABLE `Execution` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `type_id` INT NOT NULL, "
    f"`last_known_state` INT, `name` VARCHAR(255), `external_id` VARCHAR(255) UNIQUE, {_NODE_TIMES}, "
    "UNIQUE(`type_id`, `name`))",
    _property_table("Execution"),
    "CREATE TABLE `Event` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `artifact_id` INT NOT NULL, "
    "`execution_id` INT NOT NULL, `type` INT NOT NULL, `milliseconds_since_epoch` INT, "
    "UNIQUE(`artifact_id`, `execution_id`, `type`))",
    "CREATE TABLE `EventPath` (`event_id` INT NOT NULL, `is_index_step` TINYINT(1) NOT NULL, `step_index` INT, "
    "`step_key` TEXT)",
    "CREATE TABLE `MLMDEnv` (`schema_version` INTEGER PRIMARY KEY)",
    "CREATE TABLE `Context` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `type_id` INT NOT NULL, "
    f"`name` VARCHAR(255) NOT NULL, `external_id` VARCHAR(255) UNIQUE, {_NODE_TIMES}, UNIQUE(`type_id`, `name`))",
    _property_table("Context"),
    "CREATE TABLE `ParentContext` (`context_id` INT NOT NULL, `parent_context_id` INT NOT NULL, "
    "PRIMARY KEY (`context_id`, `parent_context_id`))",
    "CREATE TABLE `Association` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `context_id` INT NOT NULL, "
    "`execution_id` INT NOT NULL, UNIQUE(`context_id`, `execution_id`))",
    "CREATE TABLE `Attribution` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `context_id` INT NOT NULL, "
    "`artifact_id` INT NOT NULL, UNIQUE(`context_id`, `artifact_id`))",
]
_INDEXES = [
    *(f"CREATE INDEX `idx_{table.lower()}_{column}` ON `{table}`(`{column}`)" for table, column in (
        ("Artifact", "uri"), ("Artifact", "create_time_since_epoch"), ("Artifact", "last_update_time_since_epoch"),
        ("Event", "execution_id"), ("ParentContext", "parent_context_id"), ("Type", "name"),
        ("Execution", "create_time_since_epoch"), ("Execution", "last_update_time_since_epoch"),
        ("Context", "create_time_since_epoch"), ("Context", "last_update_time_since_epoch"),
        ("EventPath", "event_id"))),
    *(index for node in ("Artifact", "Execution", "Context") for index in _property_indexes(node)),
    *(f"CREATE INDEX `idx_{table.lower()}_external_id` ON `{table}`(`external_id`)"
      for table in ("Type", "Artifact", "Execution", "Context")),
]


def create(db: sqlite3.Connection) -> None:
    """Create ML Metadata's schema, version 10, in the empty database ``db``, in one transaction (a crash
    leaves the file empty, never half a schema)."""
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise ValueError("the database is not empty: ML Metadata's schema goes into a new file only")
    with db:
        for statement in (*_TABLES, *_INDEXES):
            db.execute(statement)
        db.execute("INSERT INTO `MLMDEnv` (`schema_version`) VALUES (?)", (SCHEMA_VERSION,))


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
