"""ML Metadata's schema written without ml-metadata (``cmf_core/metadata/schema.py``), checked against
ml-metadata itself where it installs (Python <= 3.11): the same tables, columns, keys and indexes as a file
ml-metadata creates, and ml-metadata opens ours as its own and reads back what it wrote there."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from cmf_core.metadata import schema

pytest.importorskip("ml_metadata", reason="the oracle, ml-metadata, installs on Python <= 3.11 only")
from ml_metadata.metadata_store import metadata_store  # noqa: E402
from ml_metadata.proto import metadata_store_pb2 as pb  # noqa: E402


def ml_metadata_store(path: Path) -> metadata_store.MetadataStore:
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def ours(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as db:
        schema.create(db)
    return path


def describe(path: Path) -> dict:
    with closing(sqlite3.connect(path)) as db:
        return schema.describe(db)


def test_the_schema_is_the_one_ml_metadata_creates(tmp_path):
    created = ml_metadata_store(tmp_path / "theirs.db")  # ml-metadata creates the file
    del created  # and closes it
    theirs = describe(tmp_path / "theirs.db")
    assert theirs["schema_version"] == [schema.SCHEMA_VERSION]
    assert describe(ours(tmp_path / "ours.db")) == theirs


def test_ml_metadata_opens_our_file_and_reads_back_what_it_writes(tmp_path):
    store = ml_metadata_store(ours(tmp_path / "mlmd"))
    dataset = store.put_artifact_type(pb.ArtifactType(name="Dataset", properties={"Commit": pb.STRING}))
    run = store.put_execution_type(pb.ExecutionType(name="Train"))
    stage = store.put_context_type(pb.ContextType(name="Pipeline"))
    [artifact] = store.put_artifacts([pb.Artifact(type_id=dataset, uri="d41d8cd98f00b204e9800998ecf8427e",
                                                  name="data.csv:1", properties={"Commit": pb.Value(string_value="a")},
                                                  custom_properties={"rows": pb.Value(int_value=3)})])
    [execution] = store.put_executions([pb.Execution(type_id=run, name="run-1")])
    context, parent = store.put_contexts([pb.Context(type_id=stage, name="p/train"), pb.Context(type_id=stage, name="p")])
    event = pb.Event(artifact_id=artifact, execution_id=execution, type=pb.Event.INPUT)
    event.path.steps.add().key = "data"
    store.put_events([event])
    store.put_attributions_and_associations([pb.Attribution(context_id=context, artifact_id=artifact)],
                                            [pb.Association(context_id=context, execution_id=execution)])
    store.put_parent_contexts([pb.ParentContext(child_id=context, parent_id=parent)])
    del store

    again = ml_metadata_store(tmp_path / "mlmd")  # opened again: no migration, the records are there
    [read] = again.get_artifacts_by_id([artifact])
    assert (read.uri, read.properties["Commit"].string_value, read.custom_properties["rows"].int_value) == \
        ("d41d8cd98f00b204e9800998ecf8427e", "a", 3)
    [read_event] = again.get_events_by_execution_ids([execution])
    assert read_event.path.steps[0].key == "data"
    assert [c.id for c in again.get_contexts_by_artifact(artifact)] == [context]
    assert [c.id for c in again.get_parent_contexts_by_context(context)] == [parent]


def test_create_refuses_a_database_that_holds_anything(tmp_path):
    with closing(sqlite3.connect(tmp_path / "used.db")) as db:
        db.execute("CREATE TABLE t (x)")
        with pytest.raises(ValueError, match="not empty"):
            schema.create(db)
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["t"]
