"""A push is one database transaction, on SQLite and on PostgreSQL: a failure after any write of a merge, a real
refusal, a dropped connection all leave the store exactly as it was, and the same push afterwards creates
everything once, as ML Metadata's own API would have; concurrent pushes, some refused, lose nothing; the SQL
store answers ML Metadata's reads exactly as ML Metadata does.

In-process :class:`ServerStore` instances on an SQLite file and on a real PostgreSQL server (one database per
test); killing real server processes is in ``test_server_crash.py``."""
from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import psycopg
import pytest

from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmf_core.metadata.merge import merge_pipeline
from cmf_core.metadata.query import CmfQuery
from cmf_core.server.db import Database, Session
from cmf_core.server.files import ServerFiles
from cmf_core.server.reads import Reads
from cmf_core.metadata.sqlstore import SqlStore
from cmf_core.server.store import PostgresConfig, ServerStore, StoreRefused
from tests.conftest import NEEDS_POSTGRES

VOLATILE = {"id", "type_id", "create_time_since_epoch", "last_update_time_since_epoch", "Context_ID", "Pipeline_id"}


class Injected(Exception):
    """The failure a test injects into a merge."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=NEEDS_POSTGRES)])
def make_store(request, tmp_path):
    """``make_store()``: a new :class:`ServerStore` on the test's own SQLite file or PostgreSQL database (the same
    one each call); closed at the end."""
    if request.param == "sqlite":
        where: Dict[str, Any] = {"sqlite": tmp_path / "server.mlmd"}
    else:
        pg = request.getfixturevalue("postgres")
        where = {"postgres": PostgresConfig(pg.host, pg.port, pg.USER, f"t_{uuid.uuid4().hex[:12]}")}
    opened: List[ServerStore] = []

    def make() -> ServerStore:
        opened.append(ServerStore(**where))
        return opened[-1]
    yield make
    for store in opened:
        store.close()


def dump(store: ServerStore) -> Dict[str, List[Any]]:
    """Every row of every ML Metadata table, sorted: the store's whole content."""
    tables = ("type", "typeproperty", "parenttype", "artifact", "artifactproperty", "execution", "executionproperty",
              "context", "contextproperty", "parentcontext", "event", "eventpath", "association", "attribution")
    with store.db.session() as s:
        return {t: sorted(map(repr, s.rows(f"SELECT * FROM {t}"))) for t in tables}


def assert_unchanged(store: ServerStore, before: Dict[str, List[Any]]) -> None:
    after = dump(store)
    counts = {t: (len(before[t]), len(after[t])) for t in before}
    assert after == before, f"rows (before, after): {counts}"


def canonical(data, drop=frozenset()):
    """An export with every list sorted and without the keys ``drop``. On PostgreSQL, ML Metadata lists rows
    in the order the table holds them, which its own updates change (a stage whose context a push updates
    moves to the end), so the order of stages, executions and events is no part of what is stored."""
    if isinstance(data, dict):
        return {k: canonical(v, drop) for k, v in data.items() if k not in drop}
    if isinstance(data, list):
        return sorted((canonical(v, drop) for v in data), key=lambda v: json.dumps(v, sort_keys=True))
    return data


# -- payloads ---------------------------------------------------------------------------------------------


def artifact(name: str, kind: str = "Dataset", url: str = "", **custom: Any) -> Dict[str, Any]:
    md5 = hashlib.md5(name.encode()).hexdigest()
    return {"name": f"{name}:{md5}", "type": kind, "uri": md5, "custom_properties": custom,
            "properties": {"Commit": md5, "url": url or f"remote:/{md5}", "git_repo": ""}}


def execution(pipeline: str, stage: str, uuids: Tuple[str, ...], inputs=(), outputs=(), **custom: Any) -> Dict:
    return {"type": stage, "name": "", "custom_properties": custom, "properties": {
        "Execution_uuid": ",".join(uuids), "Context_Type": f"{pipeline}/{stage}", "Execution": "run",
        "Execution_type_name": f"{pipeline}/{stage}", "Pipeline_Type": pipeline, "Git_Repo": "",
        "Git_Start_Commit": "", "Git_End_Commit": "", "Context_ID": 1, "Pipeline_id": 1},
        "events": [{"type": 3, "artifact": a} for a in inputs] + [{"type": 4, "artifact": a} for a in outputs]}


def export(pipeline: str, stages: List[Tuple[str, Dict[str, Any], List[Dict]]], **custom: Any) -> str:
    return json.dumps({"Pipeline": [{"name": pipeline, "custom_properties": custom, "stages": [
        {"name": name, "custom_properties": props, "executions": executions}
        for name, props, executions in stages]}]})


U = {name: str(uuid.uuid4()) for name in ("other", "prepare", "prepare2", "train", "new", "shared", "evaluate")}


def base_pushes() -> List[Tuple[str, str]]:
    """What the store holds before the push under test: (pipeline, payload)."""
    other = export("other", [("rich/shared", {}, [execution("other", "shared", (U["other"],),
                                                            outputs=[artifact("o.csv")])])])
    rich = export("rich", [
        ("rich/prepare", {}, [execution("rich", "prepare", (U["prepare"],), [artifact("raw.csv")],
                                        [artifact("mid.csv")], seed=1)]),
        ("rich/train", {}, [execution("rich", "train", (U["train"],), [artifact("mid.csv")],
                                      [artifact("model.pkl", "Model")])]),
    ], owner="a")
    return [("other", other), ("rich", rich)]


def rich_push() -> str:
    """A push that makes every kind of write a merge makes: it updates the pipeline's and a stage's context,
    an execution (a second uuid, a new custom property) and an artifact (a second url); it links an existing
    execution to an existing artifact, an existing stage context to the pipeline, extends the Dataset type
    by a property, and creates a stage, execution and artifact types, executions, artifacts and events."""
    mid = artifact("mid.csv", url=f"remote:/{hashlib.md5(b'mid.csv').hexdigest()},mirror:/mid")
    extra = artifact("extra.csv", rows=5)
    extra["properties"]["rows"] = 5
    return export("rich", [
        ("rich/prepare", {"note": "x"}, [
            execution("rich", "prepare", (U["prepare"], U["prepare2"]), [artifact("raw.csv"), artifact("o.csv")],
                      [mid], seed=1, epochs=2),
            execution("rich", "prepare", (U["new"],), [mid], [extra])]),
        ("rich/shared", {}, [execution("rich", "shared", (U["shared"],), outputs=[artifact("s.csv")])]),
        ("rich/evaluate", {}, [execution("rich", "evaluate", (U["evaluate"],), [extra],
                                         [artifact("metrics", "Metrics")])]),
    ], owner="b")


def pulls(store: Any, drop=VOLATILE) -> Dict[str, Any]:
    """Both pipelines' exports, canonical; by default without the ids and times that differ between stores."""
    return {name: canonical(json.loads(store.pull(name)), drop) for name in ("other", "rich")}


class Reference:
    """The same pushes merged through ml-metadata's own API into an mlmd file (the oracle; skipped without it)."""

    def __init__(self, path: Path) -> None:
        pytest.importorskip("ml_metadata", reason="the oracle, ml-metadata, installs on Python <= 3.11 only")
        from cmf_core.metadata.ml_metadata_store import open_file

        self.path = path
        self.store = open_file(path, create=True)

    def push(self, payload: str, name: str) -> Any:
        return merge_pipeline(self.store, json.loads(payload), pipeline_name=name)

    def pull(self, name: str) -> str:
        return CmfQuery(str(self.path)).dumptojson(name)


@pytest.fixture
def failing_writes(monkeypatch):
    """``fail_after(n)``: every write of a transaction is counted, and the n-th raises Injected after it ran.
    ``fail_after(0)`` stops."""
    state = {"n": 0, "count": 0}

    def wrap(name: str):
        real = getattr(Session, name)

        def write(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            state["count"] += 1
            if state["count"] == state["n"]:
                raise Injected(name)
            return result
        return write

    for name in ("insert", "execute", "execute_many"):
        monkeypatch.setattr(Session, name, wrap(name))

    def fail_after(n: int) -> None:
        state.update(n=n, count=0)
    return fail_after


# -- tests ------------------------------------------------------------------------------------------------


def test_a_failure_after_any_write_leaves_the_store_as_it_was(make_store, tmp_path, failing_writes):
    """The same push fails after its 1st, 2nd, ... write until it gets through; after each failure every table
    holds exactly its rows from before and the exports are the same. Then it is applied once, exactly as ML
    Metadata's own API applies it, and again creates nothing."""
    store = make_store()
    reference = Reference(tmp_path / "reference.mlmd")
    for name, payload in base_pushes():
        assert store.push(payload, name).status == "success"
        reference.push(payload, name)
    before, pulled, full_sync = dump(store), pulls(store, drop=()), canonical(json.loads(store.pull_all()))

    failed: List[str] = []
    while True:
        failing_writes(len(failed) + 1)
        try:
            result = store.push(rich_push(), "rich")
        except Injected as exc:
            failed.append(exc.args[0])
            assert_unchanged(store, before)
            assert pulls(store, drop=()) == pulled and canonical(json.loads(store.pull_all())) == full_sync
            continue
        break
    failing_writes(0)
    assert len(failed) >= 10 and set(failed) == {"insert", "execute", "execute_many"}
    assert result.status == "success" and result.updated == 2  # the execution and the artifact
    assert (result.executions, result.artifacts) == (3, 3)
    assert result == reference.push(rich_push(), "rich")
    assert pulls(store) == pulls(reference)
    after = dump(store)
    assert store.push(rich_push(), "rich").status == "exists"
    assert dump(store) == after
    executions, artifacts = listed(store, "rich")
    assert sorted(e["uuid"] for e in executions) == sorted({f"{U['prepare']},{U['prepare2']}", U["train"], U["new"],
                                                           U["shared"], U["evaluate"], U["other"]})
    names = [a["name"] for a in artifacts]
    assert len(names) == len(set(names)) == 7


def listed(store: ServerStore, pipeline: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The pipeline's executions and artifacts as the read path (the UI and /api) lists them."""
    reads = Reads(store.db, ServerFiles(Path("/nonexistent")))
    return reads.executions(pipeline, size=500)["items"], reads.artifacts(pipeline, size=500)["items"]


def test_a_refusal_leaves_the_store_as_it_was(make_store):
    """Stage 1 is new and valid; stage 2 has an artifact whose property type clashes with the stored type."""
    store = make_store()
    for name, payload in base_pushes():
        store.push(payload, name)
    before = dump(store)
    clash = artifact("clash.csv")
    clash["properties"]["Commit"] = 5  # Commit is a string property of Dataset
    payload = export("rich", [("rich/new", {}, [execution("rich", "new", (U["new"],), outputs=[artifact("n.csv")])]),
                              ("rich/clash", {}, [execution("rich", "clash", (str(uuid.uuid4()),),
                                                            outputs=[clash])])])
    with pytest.raises(StoreRefused, match="refused"):
        store.push(payload, "rich")
    assert_unchanged(store, before)


def test_properties_the_type_does_not_declare_are_refused_as_ml_metadata_refuses_them(make_store, tmp_path):
    store, reference = make_store(), Reference(tmp_path / "reference.mlmd")
    bad = json.loads(export("p", [("p/s", {}, [execution("p", "s", (str(uuid.uuid4()),))])]))
    bad["Pipeline"][0]["stages"][0]["executions"][0]["properties"]["Undeclared"] = "x"
    with pytest.raises(Exception, match="not declared|unknown|Found"):
        reference.push(json.dumps(bad), "p")
    with pytest.raises(StoreRefused, match="'Undeclared' is not declared"):
        store.push(json.dumps(bad), "p")


@NEEDS_POSTGRES
def test_a_dropped_connection_leaves_the_store_as_it_was(postgres, monkeypatch):
    """The push's connection is killed after its events are written; the next push opens a new one."""
    config = PostgresConfig(postgres.host, postgres.port, postgres.USER, f"t_{uuid.uuid4().hex[:12]}")
    store = ServerStore(postgres=config)
    for name, payload in base_pushes():
        store.push(payload, name)
    before = dump(store)
    real = Session.insert

    def then_drop(self, table, columns, rows):
        real(self, table, columns, rows)
        if table == "event":
            with psycopg.connect(host=config.host, port=config.port, user=config.user, dbname="postgres",
                                 autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                              "AND pid <> pg_backend_pid()", [config.dbname])

    monkeypatch.setattr(Session, "insert", then_drop)
    with pytest.raises(CmfError, match="failed"):
        store.push(rich_push(), "rich")
    monkeypatch.setattr(Session, "insert", real)
    assert_unchanged(store, before)
    assert store.push(rich_push(), "rich").executions == 3
    store.close()


def test_the_sql_store_reads_what_ml_metadata_reads(tmp_path):
    """ML Metadata's answers and SqlStore's, on a store that ML Metadata wrote: the same protobufs, in the same
    order, times and ids included."""
    path = tmp_path / "mlmd"
    reference = Reference(path)
    for name, payload in [*base_pushes(), ("rich", rich_push())]:
        reference.push(payload, name)
    mlmd = reference.store

    def calls(store: Any) -> List[Any]:
        pipeline = store.get_context_by_type_and_name(records.PARENT_CONTEXT, "rich")
        stages = store.get_children_contexts_by_context(pipeline.id)
        executions = [e for s in stages for e in store.get_executions_by_context(s.id)]
        events = store.get_events_by_execution_ids([e.id for e in executions])
        datasets = store.get_artifacts_by_type("Dataset")
        return [store.get_contexts_by_type(records.PARENT_CONTEXT), pipeline, stages, executions, events,
                store.get_artifacts_by_id(sorted({e.artifact_id for e in events})), datasets,
                store.get_artifact_by_type_and_name("Dataset", datasets[-1].name),
                store.get_artifact_by_type_and_name("Dataset", "missing"), store.get_artifacts_by_type("Nothing"),
                store.get_artifact_type("Dataset"), store.get_execution_type("prepare"),
                store.get_context_type(records.STAGE_CONTEXT)]

    expected = calls(mlmd)
    del mlmd, reference  # ML Metadata's SQLite connection closes before ours opens
    with Database(sqlite=path).session() as session:
        assert calls(SqlStore(session, 0)) == expected


def test_concurrent_pushes_some_refused_lose_nothing(make_store):
    """8 threads x 5 pushes of one execution each, all reading one shared dataset; every third push of a
    thread also carries a stage whose artifact ML Metadata refuses (a property type clash), so those
    pushes are undone while the others go on."""
    store = make_store()
    shared = artifact("shared.csv")

    def payload(n: int, refused: bool) -> Tuple[str, str, str]:
        mine = str(uuid.uuid4())
        stages = [("crowd/work", {}, [execution("crowd", "work", (mine,), [shared], [artifact(f"out/{n}.csv")],
                                                n=n)])]
        if refused:
            clash = artifact(f"clash/{n}.csv")
            clash["properties"]["Commit"] = n
            stages.append(("crowd/bad", {}, [execution("crowd", "bad", (str(uuid.uuid4()),), outputs=[clash])]))
        return mine, export("crowd", stages), "refused" if refused else "success"

    payloads = [[payload(t * 10 + i, i % 3 == 2) for i in range(5)] for t in range(8)]
    start = threading.Barrier(8)
    outcomes: List[Tuple[str, str, str]] = []

    def hammer(mine: List[Tuple[str, str, str]]) -> None:
        start.wait()
        for execution_uuid, text, expected in mine:
            try:
                outcomes.append((execution_uuid, expected, store.push(text, "crowd").status))
            except StoreRefused:
                outcomes.append((execution_uuid, expected, "refused"))

    threads = [threading.Thread(target=hammer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 40 and all(expected == status for _, expected, status in outcomes)
    accepted = sorted(u for u, _, status in outcomes if status == "success")
    assert len(accepted) == 32
    executions, artifacts = listed(store, "crowd")
    assert sorted(e["uuid"] for e in executions) == accepted
    names = [a["name"] for a in artifacts]
    assert len(names) == 33 and sum(n.startswith("shared.csv:") for n in names) == 1
    assert not [n for n in names if n.startswith("clash/")]
    assert len(dump(store)["artifact"]) == 33


def test_an_integer_past_the_column_is_refused_whole_on_postgresql(make_store):
    """ML Metadata's PostgreSQL schema keeps integer properties in 32 bits; SQLite in 64. A larger value is stored
    where it fits and refused (nothing written) where it does not, never truncated."""
    store = make_store()
    big = json.loads(export("p", [("p/s", {}, [execution("p", "s", (str(uuid.uuid4()),), outputs=[artifact("a")],
                                                         rows=2 ** 40)])]))
    before = dump(store)
    if store.postgres is None:
        assert store.push(json.dumps(big), "p").executions == 1
        stage = json.loads(store.pull("p"))["Pipeline"][0]["stages"][0]
        assert stage["executions"][0]["custom_properties"]["rows"] == 2 ** 40
    else:
        with pytest.raises(StoreRefused, match="out of range"):
            store.push(json.dumps(big), "p")
        assert_unchanged(store, before)


def test_an_execution_is_found_by_any_of_its_joined_uuids(make_store, tmp_path):
    """A reused execution carries comma-joined uuids; a later push that names it by one of them (the second
    here) matches it, on the SQL store's indexed lookup as through ML Metadata's API: nothing new is created."""
    store, reference = make_store(), Reference(tmp_path / "reference.mlmd")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    both = export("p", [("p/s", {}, [execution("p", "s", (first, second), outputs=[artifact("a")])])])
    alone = export("p", [("p/s", {}, [execution("p", "s", (second,), outputs=[artifact("a")], tag=1)])])
    for target in (store, reference):
        assert target.push(both, "p").executions == 1
        again = target.push(alone, "p")
        assert (again.executions, again.updated) == (0, 1)  # the custom property "tag" is merged in
    assert canonical(json.loads(store.pull("p")), VOLATILE) == canonical(json.loads(reference.pull("p")), VOLATILE)


def test_a_failed_transaction_lets_go_of_the_write_lock_at_once(tmp_path):
    """A refused push leaves its error (and the traceback holding the session's statements) alive for a while;
    the SQLite write lock must not wait for the garbage collector: the next push took 300 s when it did."""
    import gc
    import sqlite3

    path = tmp_path / "store.db"
    sqlite3.connect(path).executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);").close()
    kept = []
    gc.disable()
    try:
        try:
            with Database(sqlite=path).transaction() as session:
                session.execute("INSERT INTO t VALUES (3)")
                session._cursor.execute("SELECT x FROM t").fetchone()  # a statement still stepping
                raise ValueError("refused half-way through a read")
        except ValueError as exc:
            kept.append(exc)  # as a worker keeps the exception it reports
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # "database is locked" while the failed transaction still holds it
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2  # and its insert was rolled back
        other.execute("ROLLBACK")
        other.close()
    finally:
        gc.enable()
