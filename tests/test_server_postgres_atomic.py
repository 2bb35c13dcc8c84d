"""A push into a PostgreSQL store is applied whole or not at all: a failure after any write of a merge, a real
refusal by ML Metadata, a dropped connection and an undo that has to wait all leave the database exactly as it
was, and the same push afterwards creates everything once; concurrent pushes, some refused, lose nothing.

In-process :class:`ServerStore` instances against a real PostgreSQL server (one database per test)."""
from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import psycopg
import pytest
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store

from cmf_core.errors import CmfError
from cmf_core.server import store as server_store
from cmf_core.server.db import Database
from cmf_core.server.files import ServerFiles
from cmf_core.server.reads import Reads
from cmf_core.server.store import PostgresConfig, ServerStore, StoreRefused
from cmf_core.testing.metadata_server import PostgresServer, postgres_binaries

pytestmark = pytest.mark.skipif(postgres_binaries() is None, reason="PostgreSQL is not installed")

VOLATILE = {"id", "type_id", "create_time_since_epoch", "last_update_time_since_epoch", "Context_ID", "Pipeline_id"}


class Injected(Exception):
    """The failure a test injects into a merge."""


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """One PostgreSQL server for the module, accepting connections; stopped by PID."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def config(postgres) -> PostgresConfig:
    """A database of the test's own (ML Metadata creates it on first open)."""
    return PostgresConfig(postgres.host, postgres.port, postgres.USER, f"t_{uuid.uuid4().hex[:12]}")


def psql(config: PostgresConfig, sql: str) -> Any:
    """The first value of ``sql``'s first row, through a connection of the test's own."""
    with psycopg.connect(host=config.host, port=config.port, user=config.user, dbname=config.dbname) as db:
        return db.execute(sql.encode()).fetchone()[0]


def dump(config: PostgresConfig) -> Dict[str, List[Any]]:
    """Every row of every table of the database, sorted: its whole content."""
    tables = psql(config, "SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.tables "
                          "WHERE table_schema = 'public'")
    assert {"artifact", "execution", "context", "event", "typeproperty", "parentcontext"} <= set(tables)
    parts = ", ".join(f"'{t}', (SELECT coalesce(json_agg(r ORDER BY r::text), '[]') FROM {t} r)" for t in tables)
    return psql(config, f"SELECT json_build_object({parts})")


def assert_unchanged(config: PostgresConfig, before: Dict[str, List[Any]]) -> None:
    after = dump(config)
    counts = {t: (len(before[t]), len(after.get(t, []))) for t in before}
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
    an execution (a second uuid, a custom property) and an artifact (a second url); it links an existing
    execution to an existing artifact, an existing stage context to the pipeline, extends the Dataset type
    by a property, and creates a stage, execution and artifact types, executions, artifacts and events."""
    mid = artifact("mid.csv", url=f"remote:/{hashlib.md5(b'mid.csv').hexdigest()},mirror:/mid")
    extra = artifact("extra.csv", rows=5)
    extra["properties"]["rows"] = 5
    return export("rich", [
        ("rich/prepare", {"note": "x"}, [
            execution("rich", "prepare", (U["prepare"], U["prepare2"]), [artifact("raw.csv"), artifact("o.csv")],
                      [mid], seed=2),
            execution("rich", "prepare", (U["new"],), [mid], [extra])]),
        ("rich/shared", {}, [execution("rich", "shared", (U["shared"],), outputs=[artifact("s.csv")])]),
        ("rich/evaluate", {}, [execution("rich", "evaluate", (U["evaluate"],), [extra],
                                         [artifact("metrics", "Metrics")])]),
    ], owner="b")


def pulls(store: ServerStore, drop=VOLATILE) -> Dict[str, Any]:
    """Both pipelines' exports, canonical; by default without the ids and times that differ between stores."""
    return {name: canonical(json.loads(store.pull(name)), drop) for name in ("other", "rich")}


@pytest.fixture
def failing_writes(monkeypatch):
    """``fail_after(n)``: every ML Metadata write is counted, and the n-th that succeeds raises Injected
    after it committed (the worst case: the caller never learns the ids it wrote). ``fail_after(0)`` stops."""
    state = {"n": 0, "count": 0}

    def wrap(name: str):
        real = getattr(metadata_store.MetadataStore, name)

        def write(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            state["count"] += 1
            if state["count"] == state["n"]:
                raise Injected(name)
            return result
        return write

    for name in dir(metadata_store.MetadataStore):
        if name.startswith("put_"):
            monkeypatch.setattr(metadata_store.MetadataStore, name, wrap(name))

    def fail_after(n: int) -> None:
        state.update(n=n, count=0)
    return fail_after


# -- tests ------------------------------------------------------------------------------------------------


def test_a_failure_after_any_write_leaves_the_database_as_it_was(config, tmp_path, failing_writes):
    """The same push fails after its 1st, 2nd, ... write until it gets through; after each failure every table
    holds exactly its rows from before and the exports are the same. Then it is applied once, like a push
    into SQLite that never failed, and again creates nothing."""
    store = ServerStore(postgres=config)
    reference = ServerStore(sqlite=tmp_path / "reference.mlmd")  # the same pushes, nothing failing
    for name, payload in base_pushes():
        assert store.push(payload, name).status == "success"
        reference.push(payload, name)
    before, pulled, full_sync = dump(config), pulls(store, drop=()), canonical(json.loads(store.pull_all()))

    failed: List[str] = []  # the writes after which the push failed, in order
    while True:
        failing_writes(len(failed) + 1)
        try:
            result = store.push(rich_push(), "rich")
        except Injected as exc:
            failed.append(exc.args[0])
            assert_unchanged(config, before)
            assert pulls(store, drop=()) == pulled and canonical(json.loads(store.pull_all())) == full_sync
            continue
        break
    failing_writes(0)
    assert len(failed) == 13 and set(failed) == {"put_contexts", "put_parent_contexts", "put_executions",
                                                 "put_artifacts", "put_artifact_type", "put_execution_type",
                                                 "put_lineage_subgraph"}
    assert result.status == "success" and result.updated == 2  # the execution and the artifact
    assert (result.executions, result.artifacts) == (3, 3)
    reference.push(rich_push(), "rich")
    assert pulls(store) == pulls(reference)
    after = dump(config)
    assert store.push(rich_push(), "rich").status == "exists"
    assert dump(config) == after
    executions, artifacts = listed(config, "rich")
    uuids = [e["uuid"] for e in executions]
    assert sorted(uuids) == sorted({f"{U['prepare']},{U['prepare2']}", U["train"], U["new"], U["shared"],
                                    U["evaluate"], U["other"]})  # "other" shares the stage context rich/shared
    names = [a["name"] for a in artifacts]
    assert len(names) == len(set(names)) == 7


def listed(config: PostgresConfig, pipeline: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The pipeline's executions and artifacts as the read path (the UI and /api) lists them."""
    reads = Reads(Database(postgres=config), ServerFiles(Path("/nonexistent")))
    try:
        return reads.executions(pipeline, size=500)["items"], reads.artifacts(pipeline, size=500)["items"]
    finally:
        reads.db.close()


def test_a_refusal_by_ml_metadata_is_undone(config):
    """Stage 1 is new and valid; stage 2 has an artifact whose property type clashes with the stored type."""
    store = ServerStore(postgres=config)
    for name, payload in base_pushes():
        store.push(payload, name)
    before = dump(config)
    clash = artifact("clash.csv")
    clash["properties"]["Commit"] = 5  # Commit is a string property of Dataset
    payload = export("rich", [("rich/new", {}, [execution("rich", "new", (U["new"],), outputs=[artifact("n.csv")])]),
                              ("rich/clash", {}, [execution("rich", "clash", (str(uuid.uuid4()),),
                                                            outputs=[clash])])])
    with pytest.raises(StoreRefused, match="refused"):
        store.push(payload, "rich")
    assert_unchanged(config, before)


def test_a_dropped_connection_is_undone_and_the_store_reconnects(config, monkeypatch):
    """MLMD's connection is killed after the first lineage write; MLMD never reconnects by itself."""
    store = ServerStore(postgres=config)
    for name, payload in base_pushes():
        store.push(payload, name)
    before = dump(config)
    real = metadata_store.MetadataStore.put_lineage_subgraph

    def then_drop(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        psql(config, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{config.dbname}' "
                     "AND pid <> pg_backend_pid()")
        return result

    monkeypatch.setattr(metadata_store.MetadataStore, "put_lineage_subgraph", then_drop)
    with pytest.raises(mlmd_errors.InternalError, match="PostgreSQL metadata source error"):
        store.push(rich_push(), "rich")
    assert_unchanged(config, before)
    monkeypatch.setattr(metadata_store.MetadataStore, "put_lineage_subgraph", real)
    assert store.push(rich_push(), "rich").executions == 3


def test_writes_the_undo_cannot_account_for_are_refused(config):
    guarded = server_store._Guarded(ServerStore(postgres=config)._store, server_store._Undo(config))
    for name in ("put_events", "put_attributions_and_associations", "put_execution"):
        with pytest.raises(AttributeError, match="undo"):
            getattr(guarded, name)


def test_an_undo_that_cannot_run_yet_runs_before_the_next_request(config, failing_writes, monkeypatch):
    store = ServerStore(postgres=config)
    for name, payload in base_pushes():
        store.push(payload, name)
    before = dump(config)
    real = server_store._Undo.rollback
    attempts: List[int] = []

    def unreachable_once(self) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise CmfError("PostgreSQL failed: could not connect to server")
        real(self)

    monkeypatch.setattr(server_store._Undo, "rollback", unreachable_once)
    failing_writes(5)
    with pytest.raises(CmfError, match="not undone yet") as failed:
        store.push(rich_push(), "rich")
    assert isinstance(failed.value.__cause__, Injected)
    failing_writes(0)
    assert dump(config) != before  # the partial push is still there ...
    assert pulls(store)  # ... until the next request, which undoes it first
    assert len(attempts) == 2
    assert_unchanged(config, before)


def test_concurrent_pushes_some_refused_lose_nothing(config):
    """8 threads x 5 pushes of one execution each, all reading one shared dataset; every third push of a
    thread also carries a stage whose artifact ML Metadata refuses (a property type clash), so those
    pushes are undone while the others go on."""
    store = ServerStore(postgres=config)
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
    executions, artifacts = listed(config, "crowd")
    assert sorted(e["uuid"] for e in executions) == accepted
    names = [a["name"] for a in artifacts]
    assert len(names) == 33 and sum(n.startswith("shared.csv:") for n in names) == 1
    assert not [n for n in names if n.startswith("clash/")]
    assert psql(config, "SELECT count(*) FROM artifact") == 33
