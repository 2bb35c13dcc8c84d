"""cmf's own ML Metadata store (``cmf_core/metadata/sqlstore.py``) against ml-metadata itself, the oracle.

Where ml-metadata installs (Python <= 3.11):

* a file written through cmf's store is read by ml-metadata's API with the same answers as cmf's store gives,
  and a file written through ml-metadata is read by cmf's store with ml-metadata's answers (records, properties,
  types, events with paths, links, in the same order, ids and times included);
* the same ``Cmf`` calls write the same rows through both stores, for a pipeline modelled on the original's
  example-get-started and for random sequences of calls (hypothesis);
* ``CMF_METADATA_STORE=ml-metadata`` is the ml-metadata path a user can ask for.

Without ml-metadata only the tests that need no oracle run (they check cmf's store on its own).
"""
from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from cmf_core.errors import CmfError
from cmf_core.metadata import databases
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import store as records
from cmf_core.metadata.store import STORE_ENV
from tests.conftest import NEEDS_POSTGRES, write

try:
    import ml_metadata  # noqa: F401 - the oracle
    ORACLE = True
except ImportError:
    ORACLE = False
needs_oracle = pytest.mark.skipif(not ORACLE, reason="the oracle, ml-metadata, installs on Python <= 3.11 only")

#: columns whose values are the clock's: they differ between any two runs
CLOCK = {"create_time_since_epoch", "last_update_time_since_epoch", "milliseconds_since_epoch"}
#: properties whose values are git commits (or none yet): a second run in the same workspace starts from the first's
COMMITS = ("Git_Start_Commit", "Git_End_Commit")


def rows(path: Path) -> Dict[str, List[tuple]]:
    """Every row of every ML Metadata table of the file, sorted, without the clock's columns."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                           "'sqlite_%' ORDER BY name")]
        found = {}
        for table in tables:
            columns = [c[1] for c in db.execute(f"PRAGMA table_info(`{table}`)") if c[1] not in CLOCK]
            values = ", ".join(f"CASE WHEN name IN {COMMITS} THEN 'a commit' ELSE {c} END"
                               if table == "ExecutionProperty" and c == "string_value" else c for c in columns)
            found[table] = sorted(db.execute(f"SELECT {values} FROM `{table}`").fetchall(), key=repr)
        return found


def answers(store: Any) -> List[Any]:
    """What the reads of ML Metadata's API that cmf and its users make answer on ``store``."""
    contexts = store.get_contexts()
    artifacts = store.get_artifacts()
    executions = store.get_executions()
    found = [store.get_artifact_types(), store.get_execution_types(), store.get_context_types(),
             contexts, artifacts, executions,
             store.get_events_by_execution_ids([e.id for e in executions]),
             store.get_events_by_artifact_ids([a.id for a in artifacts])]
    for context in contexts:
        found += [store.get_artifacts_by_context(context.id), store.get_executions_by_context(context.id),
                  store.get_parent_contexts_by_context(context.id), store.get_children_contexts_by_context(context.id),
                  store.get_contexts_by_type(context.type),
                  store.get_context_by_type_and_name(context.type, context.name)]
    for artifact in artifacts:
        found += [store.get_artifacts_by_uri(artifact.uri), store.get_contexts_by_artifact(artifact.id),
                  store.get_artifact_by_type_and_name(artifact.type, artifact.name),
                  store.get_artifacts_by_type(artifact.type)]
    for execution in executions:
        found += [store.get_contexts_by_execution(execution.id), store.get_executions_by_type(execution.type),
                  store.get_execution_types_by_id([execution.type_id])]
    found += [store.get_artifacts_by_id([a.id for a in reversed(artifacts)]),
              store.get_executions_by_id([e.id for e in executions]), store.get_artifacts_by_uri("no such uri"),
              store.get_context_by_type_and_name("Parent_Context", "no such pipeline")]
    return found


def oracle(path: Path) -> Any:
    from cmf_core.metadata.ml_metadata_store import open_file

    return open_file(path, create=False)


class Uuids:
    """``uuid.uuid1`` made a counter, so that two runs of the same calls log the same uuids."""

    def __init__(self, monkeypatch) -> None:
        self.counter = itertools.count()
        monkeypatch.setattr(uuid, "uuid1", lambda: uuid.UUID(int=next(self.counter)))

    def reset(self) -> None:
        self.counter = itertools.count()


def run_on(kind: str, monkeypatch, uuids: Uuids, calls: Callable[[str], None], mlmd_file: str) -> None:
    """Run ``calls(mlmd_file)`` with the store ``kind`` ("cmf" or "ml-metadata") and fresh uuids."""
    if kind == "ml-metadata":
        monkeypatch.setenv(STORE_ENV, "ml-metadata")
    else:
        monkeypatch.delenv(STORE_ENV, raising=False)
    uuids.reset()
    try:
        calls(mlmd_file)
    finally:
        monkeypatch.delenv(STORE_ENV, raising=False)


def get_started(mlmd_file: str) -> None:
    """The original's example-get-started, its four stages (parse, featurize, train, test) in one process:
    the same calls, the same kinds of records (a dataset directory, a data slice, a model, metrics of each
    kind, a reused execution)."""
    from cmflib.cmf import Cmf

    def stage(name: str, execution: str, params: Dict[str, Any]) -> Cmf:
        cmf = Cmf(filepath=mlmd_file, pipeline_name="Test-env")
        cmf.create_context(pipeline_stage=name, custom_properties={"user-metadata1": "metadata_value"})
        cmf.create_execution(execution_type=execution, custom_properties=params)
        return cmf

    cmf = stage("Prepare", "Prepare", {"split": 0.2, "seed": 20170428})
    cmf.log_dataset("artifacts/data.xml.gz", "input", custom_properties={"user-metadata1": "metadata_value"})
    cmf.log_dataset("artifacts/parsed/train.tsv", "output", custom_properties={"user-metadata1": "metadata_value"})
    cmf.log_dataset("artifacts/parsed/test.tsv", "output")
    cmf.finalize()

    cmf = stage("Featurize", "Featurize-execution", {"max_features": 3000, "ngrams": 2})
    cmf.log_dataset("artifacts/parsed/train.tsv", "input")
    cmf.log_dataset("artifacts/features", "output")
    dataslice = cmf.create_dataslice("slice-a")
    for i in range(3):
        dataslice.add_data(f"artifacts/features/part-{i}.pkl", {"key1": i})
    dataslice.commit()
    cmf.finalize()

    cmf = stage("Train", "Train-execution", {"seed": 20170428, "n_est": 100, "min_split": 64})
    cmf.log_dataset("artifacts/features", "input")
    for step in range(3):
        cmf.log_metric("training_metrics", {"loss": 1.0 / (step + 1), "step": step})
    cmf.commit_metrics("training_metrics")
    cmf.log_model("artifacts/model/model.pkl", event="output", model_framework="SKlearn",
                  model_type="RandomForestClassifier", model_name="RandomForestClassifier:default")
    cmf.update_execution(cmf.execution.id, {"trained": True})
    cmf.finalize()

    cmf = stage("Evaluate", "Evaluate-execution", {})
    cmf.log_model("artifacts/model/model.pkl", event="input")
    cmf.log_dataset("artifacts/parsed/test.tsv", "input")
    cmf.log_execution_metrics("metrics", {"avg_prec": 0.72, "roc_auc": 0.91, "nan": float("nan")})
    cmf.create_execution("Evaluate-execution", {"again": 1}, create_new_execution=False)
    cmf.create_execution("Evaluate-execution", {"again": 2}, create_new_execution=False)
    cmf.finalize()


@pytest.fixture
def started(workspace: Path) -> Path:
    """A workspace with the files example-get-started logs."""
    write(workspace / "artifacts" / "data.xml.gz", "<posts/>\n")
    write(workspace / "artifacts" / "parsed" / "train.tsv", "id\ttext\n1\ta\n")
    write(workspace / "artifacts" / "parsed" / "test.tsv", "id\ttext\n2\tb\n")
    for i in range(3):
        write(workspace / "artifacts" / "features" / f"part-{i}.pkl", f"features {i}\n")
    write(workspace / "artifacts" / "model" / "model.pkl", "a model\n")
    return workspace


def test_a_new_file_is_ml_metadatas_schema_and_cmfs_store_writes_and_reads_it(started):
    get_started("mlmd")
    assert rows(started / "mlmd")["MLMDEnv"] == [(10,)]
    store = records.open_store(started / "mlmd", create=False)
    executions = store.get_executions()
    assert [e.type for e in executions] == ["Prepare", "Featurize-execution", "Train-execution",
                                            "Evaluate-execution", "Test-env/Evaluate"]  # reused: the stage's type
    train = executions[2]
    assert train.custom_properties["n_est"].int_value == 100 and train.custom_properties["trained"].bool_value
    model = store.get_artifacts_by_type("Model")[0]
    events = store.get_events_by_artifact_ids([model.id])
    assert [(e.execution_id, e.type) for e in events] == [(train.id, mlmd.Event.OUTPUT),
                                                          (executions[3].id, mlmd.Event.INPUT)]
    assert events[1].path.steps[0].key == model.name.rsplit(":", 1)[0]  # an existing artifact is linked by name
    reused = executions[4]
    assert len(reused.properties["Execution_uuid"].string_value.split(",")) == 2
    assert reused.custom_properties["again"].int_value == 2


def test_the_store_refuses_what_ml_metadata_refuses(started):
    store = records.open_store(started / "mlmd")
    dataset = store.put_artifact_type(mlmd.ArtifactType(name="Dataset", properties={"Commit": mlmd.STRING}))
    with pytest.raises(mlmd.AlreadyExistsError):  # a clashing re-declaration
        store.put_artifact_type(mlmd.ArtifactType(name="Dataset", properties={"Commit": mlmd.INT}))
    with pytest.raises(mlmd.InvalidArgumentError, match="not declared"):
        store.put_artifacts([mlmd.Artifact(type_id=dataset, properties={"Size": mlmd.Value(int_value=1)})])
    with pytest.raises(mlmd.InvalidArgumentError, match="value type"):
        store.put_artifacts([mlmd.Artifact(type_id=dataset, properties={"Commit": mlmd.Value(int_value=1)})])
    with pytest.raises(mlmd.NotFoundError):
        store.put_artifacts([mlmd.Artifact(id=99, type_id=dataset)])
    with pytest.raises(mlmd.NotFoundError):
        store.get_execution_type("Train")
    assert store.get_artifacts() == []  # nothing of the refused calls was written


def a_failed_unit_leaves_nothing(store: Any, reader: Any) -> int:
    """Put an artifact in a unit of ``store`` that then fails: ``reader`` finds no artifact.  The type's id."""
    dataset = store.put_artifact_type(mlmd.ArtifactType(name="Dataset"))
    with pytest.raises(RuntimeError):
        with store.unit():
            store.put_artifacts([mlmd.Artifact(type_id=dataset, name="a", uri="u")])
            raise RuntimeError("the logging call failed half-way")
    assert reader.get_artifacts() == []
    return dataset


def test_a_unit_is_all_or_nothing(started):
    store = records.open_store(started / "mlmd")
    dataset = a_failed_unit_leaves_nothing(store, store)
    with store.unit():
        store.put_artifacts([mlmd.Artifact(type_id=dataset, name="a", uri="u")])
    assert [a.name for a in records.open_store(started / "mlmd", create=False).get_artifacts()] == ["a"]


def test_files_of_another_schema_version_or_no_mlmd_are_refused_by_name(tmp_path):
    old = tmp_path / "old.mlmd"
    records.open_store(old).close()
    with closing(sqlite3.connect(old)) as db, db:
        db.execute("UPDATE MLMDEnv SET schema_version = 8")
    with pytest.raises(CmfError, match="schema version 8; cmf reads and writes version 10"):
        records.open_store(old)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(CmfError, match="not an mlmd file"):
        records.open_store(other)


@needs_oracle
@pytest.mark.parametrize("writer", ["cmf", "ml-metadata"])
def test_both_stores_read_a_file_either_wrote_with_the_same_answers(started, monkeypatch, writer):
    run_on(writer, monkeypatch, Uuids(monkeypatch), get_started, "mlmd")
    theirs = answers(oracle(started / "mlmd"))
    ours = answers(records.open_store(started / "mlmd", create=False))
    assert len(ours) > 80 and ours == theirs


@needs_oracle
def test_example_get_started_writes_the_same_rows_through_both_stores(started, monkeypatch):
    uuids = Uuids(monkeypatch)
    run_on("ml-metadata", monkeypatch, uuids, get_started, "theirs.mlmd")
    run_on("cmf", monkeypatch, uuids, get_started, "ours.mlmd")
    theirs, ours = rows(started / "theirs.mlmd"), rows(started / "ours.mlmd")
    assert len(theirs["Execution"]) == 5 and len(theirs["Event"]) > 15
    assert ours == theirs


def test_doubles_are_kept_exactly(started):
    """ml-metadata writes a double into its SQL with 6 decimals (0.123456789 came back 0.123457, 1e-300 as 0):
    cmf's store keeps every digit, and NaN and the infinities as their names (``Cmf``'s rule)."""
    from cmflib.cmf import Cmf

    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("s")
    execution = cmf.create_execution("E", {"lr": 0.123456789012345, "tiny": 1e-300, "loss": float("inf")})
    stored = records.open_store(started / "mlmd", create=False).get_executions_by_id([execution.id])[0]
    assert records.props(stored.custom_properties)["lr"] == 0.123456789012345
    assert records.props(stored.custom_properties)["tiny"] == 1e-300
    assert records.props(stored.custom_properties)["loss"] == "inf"


@needs_oracle
def test_random_cmf_calls_write_the_same_rows_through_both_stores(started, monkeypatch):
    """Random sequences of ``Cmf`` calls (stages, new and reused executions, datasets, models, both kinds of
    metrics, data slices, updates, finalize; properties of every kind) write the same rows, ids included, through
    cmf's store and through ml-metadata; doubles compared at the 6 decimals ml-metadata keeps."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from cmflib.cmf import Cmf

    files = ["data/a.csv", "data/b.csv", "model.pkl"]
    for i, name in enumerate(files):
        write(started / name, f"file {i}\n")
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
    value = st.one_of(st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), text,
                      st.floats(allow_subnormal=False, width=64))
    props = st.dictionaries(st.sampled_from(["lr", "epochs", "note", "flag", "type"]), value, max_size=3)
    event = st.sampled_from(["input", "output"])
    call = st.one_of(
        st.tuples(st.just("stage"), st.sampled_from(["prep", "train"]), props),
        st.tuples(st.just("execution"), st.sampled_from(["Prep", "Train"]), props, st.booleans()),
        st.tuples(st.just("dataset"), st.sampled_from(files), event, props),
        st.tuples(st.just("model"), st.sampled_from(files), event),
        st.tuples(st.just("version"), st.sampled_from(["s3://bucket/x", "data/y"]),
                  st.sampled_from(["0" * 32, "f" * 32]), event),
        st.tuples(st.just("metrics"), st.sampled_from(["m1", "m2"]), props),
        st.tuples(st.just("steps"), st.lists(props, min_size=1, max_size=3)),
        st.tuples(st.just("slice"), st.sampled_from(["s1", "s2"]), props),
        st.tuples(st.just("update"), props),
        st.tuples(st.just("finalize")))
    uuids, names = Uuids(monkeypatch), itertools.count()

    def play(calls: List[tuple]) -> Callable[[str], None]:
        def run(mlmd_file: str) -> None:
            cmf = Cmf(filepath=mlmd_file, pipeline_name="p")
            for kind, *args in calls:
                if kind == "stage":
                    cmf.create_context(args[0], args[1])
                elif kind == "execution":
                    cmf.create_execution(args[0], args[1], cmd="train.py", create_new_execution=args[2])
                elif kind == "dataset":
                    cmf.log_dataset(*args)
                elif kind == "model":
                    cmf.log_model(*args)
                elif kind == "version":
                    cmf.log_dataset_with_version(*args)
                elif kind == "metrics":
                    cmf.log_execution_metrics(*args)
                elif kind == "steps":
                    for step in args[0]:
                        cmf.log_metric("loss", step)
                    cmf.commit_metrics("loss")
                elif kind == "slice":
                    dataslice = cmf.create_dataslice(args[0])
                    dataslice.add_data(files[0], args[1])
                    dataslice.commit()
                elif kind == "update" and cmf.execution is not None:
                    cmf.update_execution(cmf.execution.id, args[0])
                elif kind == "finalize":
                    cmf.finalize()
        return run

    def at_six_decimals(found: Dict[str, List[tuple]]) -> Dict[str, List[tuple]]:
        return {table: sorted((tuple(float(f"{v:.6f}") if isinstance(v, float) else v for v in row)
                               for row in table_rows), key=repr) for table, table_rows in found.items()}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(call, min_size=1, max_size=10))
    def same_rows(calls: List[tuple]) -> None:
        n = next(names)
        run_on("ml-metadata", monkeypatch, uuids, play(calls), f"theirs-{n}.mlmd")
        run_on("cmf", monkeypatch, uuids, play(calls), f"ours-{n}.mlmd")
        theirs, ours = rows(started / f"theirs-{n}.mlmd"), rows(started / f"ours-{n}.mlmd")
        assert at_six_decimals(ours) == at_six_decimals(theirs)

    same_rows()


@NEEDS_POSTGRES
def test_is_server_logs_into_the_postgresql_store_that_the_environment_names(postgres, monkeypatch, tmp_path):
    """``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)`` use PostgreSQL from ``POSTGRES_*`` (the original's
    variables), created when missing; the server reads what they wrote, and so does ml-metadata where it installs."""
    from cmflib.cmf import Cmf
    from cmflib.cmfquery import CmfQuery
    from cmf_core.server.store import PostgresConfig, ServerStore

    dbname = f"client_{uuid.uuid4().hex[:10]}"
    for name, value in {"HOST": postgres.host, "PORT": str(postgres.port), "USER": postgres.USER,
                        "DB": dbname}.items():
        monkeypatch.setenv(f"POSTGRES_{name}", value)
    monkeypatch.chdir(tmp_path)
    cmf = Cmf(filepath="mlmd", pipeline_name="team", is_server=True)
    cmf.create_context("train")
    execution = cmf.create_execution("Train", {"lr": 0.1, "note": "<b>html</b>"})
    cmf.log_dataset_with_version("data/train.csv", "a" * 32, "input")
    cmf.log_execution_metrics("metrics", {"accuracy": 0.93})
    assert not (tmp_path / "mlmd").exists()  # nothing went into a file

    query = CmfQuery(is_server=True)
    assert query.get_pipeline_names() == ["team"]
    [row] = query.get_all_executions_in_stage("team/train").to_dict("records")
    assert row["id"] == execution.id and row["custom_properties_lr"] == 0.1
    assert sorted(query.get_all_artifacts_for_execution(execution.id)["type"]) == ["Dataset", "Metrics"]

    server = ServerStore(postgres=PostgresConfig(postgres.host, postgres.port, postgres.USER, dbname))
    try:
        [pipeline] = json.loads(server.pull("team"))["Pipeline"]
    finally:
        server.close()
    [exported] = pipeline["stages"][0]["executions"]
    assert exported["custom_properties"] == {"lr": 0.1, "note": "<b>html</b>"}
    if ORACLE:
        from cmf_core.metadata.ml_metadata_store import open_postgres

        theirs = open_postgres(postgres.host, postgres.port, postgres.USER, dbname)
        assert answers(theirs) == answers(databases.open_postgres_store(create=False))


def test_is_server_without_the_postgresql_settings_names_what_is_missing(monkeypatch, tmp_path):
    from cmflib.cmf import Cmf

    for name in ("HOST", "PORT", "USER", "DB", "PASSWORD"):
        monkeypatch.delenv(f"POSTGRES_{name}", raising=False)
    monkeypatch.setenv("POSTGRES_USER", "cmf")
    with pytest.raises(CmfError, match="POSTGRES_HOST, POSTGRES_DB"):
        Cmf(filepath=str(tmp_path / "mlmd"), is_server=True)


def mysql_environment(monkeypatch, server: Any, database: str) -> Dict[str, Any]:
    """Point ``is_server=True`` at ``database`` on the MariaDB ``server`` through ``MYSQL_*`` (no PostgreSQL named);
    PyMySQL's connection arguments for it."""
    monkeypatch.delenv("POSTGRES_HOST", raising=False)
    for name, value in {"HOST": server.host, "PORT": str(server.port), "USER": server.USER,
                        "PASSWORD": server.PASSWORD, "DATABASE": database}.items():
        monkeypatch.setenv(f"MYSQL_{name}", value)
    return {"host": server.host, "port": server.port, "user": server.USER, "password": server.PASSWORD,
            "database": database}


def events_unordered(found: List[Any]) -> List[Any]:
    """``answers`` with its lists of events in one order: ml-metadata asks for events with no ORDER BY, and MySQL
    gives them in its plan's order (a small table's: by event id), where cmf's are by the ids asked for, then as
    made (ml-metadata's order on SQLite)."""
    return [sorted(item, key=lambda e: (e.artifact_id, e.execution_id, e.type))
            if isinstance(item, list) and item and isinstance(item[0], mlmd.Event) else item for item in found]


def test_is_server_logs_into_the_mysql_store_that_the_environment_names(mysql, monkeypatch, tmp_path):
    """``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)`` use MySQL (here MariaDB) from ``MYSQL_*``, created
    when missing; ml-metadata reads what they wrote with the same answers, where it installs.  Text is utf8mb4, as
    MySQL's own clients write it (ml-metadata 1.17 talks latin1 on the wire: it reads others' non-ASCII text, and
    writes its own, mangled; so the text compared with it is ASCII)."""
    from cmflib.cmf import Cmf
    from cmflib.cmfquery import CmfQuery

    database = f"client_{uuid.uuid4().hex[:10]}"
    mysql_environment(monkeypatch, mysql, database)
    monkeypatch.chdir(tmp_path)
    cmf = Cmf(filepath="mlmd", pipeline_name="team", is_server=True)
    cmf.create_context("train")
    execution = cmf.create_execution("Train", {"lr": 0.1, "note": "<b>html</b>"})
    cmf.log_dataset_with_version("data/train.csv", "a" * 32, "input")
    cmf.log_execution_metrics("metrics", {"accuracy": 0.93})
    cmf.create_context("evaluate")
    cmf.create_execution("Evaluate", {"threshold": 0.5})
    cmf.log_dataset_with_version("data/train.csv", "a" * 32, "input")
    cmf.create_execution("Evaluate", {"again": True}, create_new_execution=False)
    assert not (tmp_path / "mlmd").exists()  # nothing went into a file

    query = CmfQuery(is_server=True)
    assert query.get_pipeline_names() == ["team"]
    [row] = query.get_all_executions_in_stage("team/train").to_dict("records")
    assert row["id"] == execution.id and row["custom_properties_lr"] == 0.1
    assert sorted(query.get_all_artifacts_for_execution(execution.id)["type"]) == ["Dataset", "Metrics"]
    if ORACLE:
        from cmf_core.metadata.ml_metadata_store import open_mysql

        theirs = open_mysql(mysql.host, mysql.port, mysql.USER, database, mysql.PASSWORD)
        found = events_unordered(answers(databases.open_mysql_store(create=False)))
        assert len(found) > 40 and events_unordered(answers(theirs)) == found

    cmf.update_execution(execution.id, {"user": "Zoë 🙂"})
    [row] = CmfQuery(is_server=True).get_all_executions_in_stage("team/train").to_dict("records")
    assert row["custom_properties_user"] == "Zoë 🙂"


def log_stage(store: Any, step: int) -> None:
    """One stage of a pipeline through ML Metadata's API, as ``Cmf`` logs it: the stage's context under the
    pipeline's, an execution with properties of each kind that reads the stage before's output and writes a new one
    (events with paths of keys and indexes), linked to both contexts."""
    types = records.Types(store)
    pipeline = records.get_or_create_context(store, types, records.PARENT_CONTEXT, "team")
    stage = records.get_or_create_context(store, types, records.STAGE_CONTEXT, f"team/stage-{step}", {"step": step})
    store.put_parent_contexts([mlmd.ParentContext(child_id=stage.id, parent_id=pipeline.id)])
    execution = mlmd.Execution(type_id=types.execution(f"team/stage-{step}"), name=f"run-{step}")
    execution.properties["Execution_uuid"].string_value = f"uuid-{step}"
    records.set_props(execution.custom_properties, {"lr": 0.5 / (step + 1), "epochs": step, "deep": step % 2 == 0,
                                                    "note": f"stage {step}"})
    before = sorted(store.get_artifacts_by_type("Dataset"), key=lambda a: a.id)[-1:]
    output = mlmd.Artifact(type_id=types.artifact("Dataset"), uri=f"{step:032d}", name=f"data/{step}.csv:{step}")
    output.properties["Commit"].string_value = f"commit {step}"
    written = records.event("output", "data")
    written.path.steps.add().index = step
    store.put_execution(execution, [*((a, records.event("input", a.name)) for a in before), (output, written)],
                        [pipeline, stage])


@needs_oracle
@pytest.mark.parametrize("first", ["cmf", "ml-metadata"])
def test_cmf_and_ml_metadata_take_turns_on_one_mysql_database_and_read_it_alike(mysql, first):
    """The two stores write one MySQL database in turns (ids from ml-metadata's AUTO_INCREMENT and from cmf's
    max(id) + 1, each past the other's) and read it with the same answers, whichever created it."""
    from cmf_core.metadata.ml_metadata_store import open_mysql

    database = f"turns_{uuid.uuid4().hex[:10]}"
    args = {"host": mysql.host, "port": mysql.port, "user": mysql.USER, "password": mysql.PASSWORD,
            "database": database}
    stores = {"cmf": lambda: databases.open_mysql_store(args),
              "ml-metadata": lambda: open_mysql(mysql.host, mysql.port, mysql.USER, database, mysql.PASSWORD)}
    writers = [stores[first](), stores[{"cmf": "ml-metadata", "ml-metadata": "cmf"}[first]]()]
    for step in range(4):
        log_stage(writers[step % 2], step)
    ours, theirs = (writers if first == "cmf" else writers[::-1])
    found = events_unordered(answers(ours))
    assert [e.name for e in ours.get_executions()] == [f"run-{step}" for step in range(4)]
    assert len(ours.get_events_by_execution_ids([e.id for e in ours.get_executions()])) == 7
    assert found == events_unordered(answers(theirs))


def test_is_server_with_both_mysql_and_postgresql_named_is_refused(monkeypatch):
    from cmflib.cmf import Cmf

    monkeypatch.setenv("MYSQL_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    with pytest.raises(CmfError, match="both MYSQL_HOST and POSTGRES_HOST are set"):
        Cmf(filepath="mlmd", is_server=True)


def test_a_unit_on_mysql_is_one_transaction_that_other_writers_wait_for(mysql):
    """A ``store.unit()`` (each ``Cmf`` call) on MySQL is all or nothing, and holds the store's write lock from its
    start: a writer in another process waits, then takes the next ids, never one already taken."""
    import threading
    import time

    args = {"host": mysql.host, "port": mysql.port, "user": mysql.USER, "password": mysql.PASSWORD,
            "database": f"unit_{uuid.uuid4().hex[:10]}"}
    first, second = databases.open_mysql_store(args), databases.open_mysql_store(args)
    dataset = a_failed_unit_leaves_nothing(first, second)
    with first.unit():
        [made] = first.put_artifacts([mlmd.Artifact(type_id=dataset, name="b", uri="u")])
        other = threading.Thread(target=second.put_artifacts, args=([mlmd.Artifact(type_id=dataset, name="c")],))
        other.start()
        time.sleep(0.5)
        assert other.is_alive()  # waiting for the write lock
    other.join(30)
    assert [(a.id, a.name) for a in second.get_artifacts()] == [(made, "b"), (made + 1, "c")]


def test_messages_behave_as_the_protobufs_users_of_the_original_touch():
    """What code written for ml-metadata's protobufs does with a record works on cmf's messages."""
    artifact = mlmd.Artifact(type_id=1, uri="md5", name="data.csv:md5")
    assert not artifact.HasField("id") and artifact.id == 0 and artifact.HasField("name")
    artifact.properties["Commit"].string_value = "md5"  # reading a missing property makes it
    artifact.custom_properties["rows"].int_value = 3
    artifact.custom_properties["rows"].double_value = 3.5  # a value holds one kind at a time
    assert artifact.custom_properties["rows"].WhichOneof("value") == "double_value"
    assert "missing" not in artifact.properties and artifact.properties.get("missing") is None
    copy = mlmd.Artifact(name="other", custom_properties={"stale": mlmd.Value(int_value=1)})
    copy.CopyFrom(artifact)
    assert copy == artifact and "stale" not in copy.custom_properties
    copy.custom_properties["rows"].double_value = 4.0
    assert copy != artifact and artifact.custom_properties["rows"].double_value == 3.5  # a copy, not a view
    event = mlmd.Event(type=mlmd.Event.INPUT)
    event.path.steps.add().key = "data.csv"
    other = mlmd.Event(type=mlmd.Event.OUTPUT)
    other.path.steps.add().key = "old"
    other.CopyFrom(event)
    assert other == event and [s.key for s in other.path.steps] == ["data.csv"]
    with pytest.raises(AttributeError):
        artifact.no_such_field = 1
