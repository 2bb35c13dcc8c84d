"""The Neo4j mirror, against a fake driver that records every query (no Neo4j server here)."""
from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction
from typing import Any, Dict, List, Tuple

import pytest

from cmf_core.errors import CmfError
from cmf_core.metadata.graph import ARTIFACT_KINDS, ArtifactRef, GraphMirror

HOSTILE = "x'}) DETACH DELETE n //"
HOSTILE2 = '"; MATCH (n) DELETE n'
NODE_LABELS = {"Pipeline", "Stage", "Execution", *ARTIFACT_KINDS}
REL_TYPES = {"contains", "runs", "input", "output", "linked", "derived", "has_label"}


class FakeTx:
    def __init__(self, log: List[Tuple[str, Dict[str, Any]]]) -> None:
        self.log = log

    def run(self, query: str, parameters: Any = None, **kw: Any) -> None:
        self.log.append((query, {**(parameters or {}), **kw}))


class FakeSession:
    def __init__(self, driver: "FakeDriver") -> None:
        self.driver = driver

    def __enter__(self) -> "FakeSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.driver.open_sessions -= 1

    def execute_write(self, fn: Any, *args: Any, **kw: Any) -> Any:
        log: List[Tuple[str, Dict[str, Any]]] = []
        result = fn(FakeTx(log), *args, **kw)
        self.driver.transactions.append(log)
        return result


class FakeDriver:
    def __init__(self) -> None:
        self.transactions: List[List[Tuple[str, Dict[str, Any]]]] = []
        self.open_sessions = 0
        self.closed = False

    def session(self, **kw: Any) -> FakeSession:
        self.open_sessions += 1
        return FakeSession(self)

    def close(self) -> None:
        self.closed = True

    @property
    def statements(self) -> List[Tuple[str, Dict[str, Any]]]:
        return [statement for tx in self.transactions for statement in tx]


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def graph(driver: FakeDriver) -> GraphMirror:
    return GraphMirror("bolt://unused", "neo4j", "secret", driver=driver)


def _flatten(value: Any) -> List[Any]:
    if isinstance(value, dict):
        return [v for k, x in value.items() for v in (k, *_flatten(x))]
    if isinstance(value, (list, tuple)):
        return [v for x in value for v in _flatten(x)]
    return [value]


def assert_safe(driver: FakeDriver, *values: str) -> None:
    """Some query was sent; no value is in any query text, each is in some parameter; every
    write is a MERGE; labels and relationship types are all whitelisted."""
    assert driver.statements and driver.open_sessions == 0
    params = [str(v) for _, p in driver.statements for v in _flatten(p)]
    for query, _ in driver.statements:
        for value in values:
            assert value not in query, query
        assert "'" not in query and '"' not in query and "MERGE" in query and "CREATE" not in query
        assert set(re.findall(r"\(\w*:(\w+)", query)) <= NODE_LABELS, query
        assert set(re.findall(r"\[\w*:(\w+)", query)) <= REL_TYPES, query
    for value in values:
        assert any(value in p for p in params), value


def test_pipeline(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.pipeline(HOSTILE, 7, {HOSTILE2: HOSTILE2, "uri": "spoofed"})
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert query.startswith("MERGE (p:Pipeline {uri: $uri})") and "SET p += $props" in query
    assert params["uri"] == "7"
    assert params["props"]["Name"] == HOSTILE and params["props"]["uri"] == "7"  # fixed keys win
    assert params["props"]["pipeline_id"] == "7" and params["props"]["pipeline_name"] == HOSTILE


def test_stage(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.stage(HOSTILE, 3, HOSTILE2, 1, {"note": HOSTILE2})
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert "MERGE (s:Stage {uri: $uri})" in query and "MERGE (p)-[:contains]->(s)" in query
    assert params["uri"] == "3" and params["pipeline_uri"] == "1"
    assert params["props"] == {"note": HOSTILE2, "Name": HOSTILE, "uri": "3", "pipeline_id": "1",
                               "pipeline_name": HOSTILE2}


def test_execution(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.execution(HOSTILE, 11, 3, "pipe", 1, HOSTILE2, {"seed": 42})
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert "MERGE (e:Execution {uri: $uri})" in query and "MERGE (s)-[:runs]->(e)" in query
    assert params["uri"] == "11" and params["stage_uri"] == "3"
    assert params["props"]["Command"] == HOSTILE2 and params["props"]["seed"] == 42


@pytest.mark.parametrize("event, edge", [("input", "MERGE (a)-[:input]->(e)"), ("output", "MERGE (e)-[:output]->(a)"),
                                         ("OUTPUT", "MERGE (e)-[:output]->(a)")])
def test_artifact_edges(graph: GraphMirror, driver: FakeDriver, event: str, edge: str) -> None:
    graph.artifact("Dataset", HOSTILE, HOSTILE2, event, 11, "pipe", 1, {"k": HOSTILE}, path="data/" + HOSTILE)
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert query.startswith("MERGE (a:Dataset {uri: $uri})") and edge in query
    assert params["uri"] == HOSTILE2 and params["execution_uri"] == "11"
    # Name and Path accumulate as lists of distinct values, as in the original
    assert "a.Name = coalesce([x IN a.Name WHERE x <> $acc_Name], []) + $acc_Name" in query
    assert params["acc_Name"] == HOSTILE and params["acc_Path"] == "data/" + HOSTILE
    assert params["acc_pipeline_name"] == "pipe" and params["acc_pipeline_id"] == "1"
    assert params["props"] == {"k": HOSTILE, "uri": HOSTILE2}


@pytest.mark.parametrize("kind", sorted(ARTIFACT_KINDS))
def test_every_kind_is_accepted(graph: GraphMirror, driver: FakeDriver, kind: str) -> None:
    graph.artifact(kind, HOSTILE, HOSTILE2, "output", 1, "pipe", 1, {})
    assert_safe(driver, HOSTILE, HOSTILE2)
    assert driver.statements[0][0].startswith(f"MERGE (a:{kind} {{uri: $uri}})")


def test_metrics_keep_plain_name_and_no_path(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.artifact("Metrics", "m1", "uuid-1", "output", 5, "pipe", 1, {"Name": "ignored", "acc": 0.9})
    (query, params), = driver.statements
    assert "coalesce" not in query
    assert params["props"] == {"acc": 0.9, "Name": "m1", "pipeline_id": "1", "pipeline_name": "pipe",
                               "uri": "uuid-1"}


def test_user_props_cannot_clobber_accumulated_keys(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.artifact("Model", "m", "h", "output", 5, "pipe", 1, {"Name": "x", "uri": "y", "Path": "z", "ok": 1})
    (query, params), = driver.statements
    assert params["props"] == {"ok": 1, "uri": "h"} and "acc_Path" not in params and "a.Path" not in query


@pytest.mark.parametrize("kind", ["dataset", "Pipeline", "Execution", "Dataset) DETACH DELETE (n", ""])
def test_unknown_kind_sends_nothing(graph: GraphMirror, driver: FakeDriver, kind: str) -> None:
    with pytest.raises(ValueError):
        graph.artifact(kind, "n", "u", "input", 1, "p", 1, {})
    with pytest.raises(ValueError):
        graph.execution_links("u", "n", kind, 1)
    with pytest.raises(ValueError):
        graph.lineage([ArtifactRef("Dataset", "d", "u")], ArtifactRef(kind, "o", "v"), {})
    with pytest.raises(ValueError):
        graph.lineage([ArtifactRef("Dataset", "d", "u"), ArtifactRef(kind, "e", "w")],
                      ArtifactRef("Model", "o", "v"), {})
    assert driver.transactions == [] and driver.open_sessions == 0


def test_unknown_event_sends_nothing(graph: GraphMirror, driver: FakeDriver) -> None:
    with pytest.raises(ValueError):
        graph.artifact("Dataset", "n", "u", "sideways", 1, "p", 1, {})
    assert driver.transactions == []


def test_execution_links(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.execution_links(HOSTILE, HOSTILE2, "Model", 12)
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert "MATCH (:Model {uri: $uri})<-[:output]-(producer:Execution)" in query
    assert "MERGE (producer)-[r:linked {uri: $uri}]->(consumer)" in query and "producer <> consumer" in query
    assert params == {"uri": HOSTILE, "name": HOSTILE2, "execution_uri": "12"}


def test_lineage_one_transaction_per_output(graph: GraphMirror, driver: FakeDriver) -> None:
    inputs = [ArtifactRef("Dataset", HOSTILE, HOSTILE2), ArtifactRef("Model", "m", HOSTILE)]
    graph.lineage(inputs, ArtifactRef("Metrics", "out", "out-uri"),
                  {"Execution_Name": "Train-2:9", "lr": 0.01, "git-repo": HOSTILE2})
    assert_safe(driver, HOSTILE, HOSTILE2)
    assert len(driver.transactions) == 1 and len(driver.statements) == 2
    (q1, p1), (q2, p2) = driver.statements
    assert q1.startswith("MATCH (a:Dataset {uri: $source_uri}), (b:Metrics {uri: $target_uri})")
    assert q2.startswith("MATCH (a:Model {uri: $source_uri}), (b:Metrics {uri: $target_uri})")
    assert "MERGE (a)-[r:derived {Execution_Name: $execution_name}]->(b) SET r += $props" in q1
    assert (p1["source_uri"], p2["source_uri"]) == (HOSTILE2, HOSTILE)
    assert p1["execution_name"] == "Train-2:9"
    assert p1["props"] == {"Execution_Name": "Train-2:9", "lr": 0.01, "git_repo": HOSTILE2, "stage": "Train2"}


def test_lineage_without_inputs_sends_nothing(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.lineage([], ArtifactRef("Model", "m", "u"), {})
    assert driver.transactions == []


def test_label_attached_to_dataset(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.label(HOSTILE, HOSTILE2, 4, "ds-" + HOSTILE, "pipe", 1, {"rows": 10}, path="labels.csv")
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert query.startswith("MERGE (a:Label {uri: $uri})")
    assert "MATCH (d:Dataset {uri: $dataset_uri}) MERGE (d)-[:has_label]->(a)" in query
    assert ":input]" not in query and ":output]" not in query
    assert params["dataset_uri"] == "ds-" + HOSTILE and params["acc_Path"] == "labels.csv"


def test_label_without_dataset(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.label("l", "u", 4, "", "pipe", 1, {})
    (query, params), = driver.statements
    assert "has_label" not in query and "dataset_uri" not in params


def test_dataslice(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.dataslice(HOSTILE, HOSTILE2, "raw-" + HOSTILE, {"n": 3}, path="slice:" + HOSTILE2)
    assert_safe(driver, HOSTILE, HOSTILE2)
    (query, params), = driver.statements
    assert query.startswith("MERGE (a:Dataslice {uri: $uri})")
    assert "MATCH (d:Dataset) WHERE $parent IN d.Name MERGE (d)-[:contains]->(a)" in query
    assert params["parent"] == "raw-" + HOSTILE and "acc_pipeline_id" not in params


def test_property_conversion(graph: GraphMirror, driver: FakeDriver) -> None:
    np = pytest.importorskip("numpy")
    graph.pipeline("p", 1, {
        "cfg": {"a": 1}, "lst": [1, 2], "lr": 0.5, "epochs": 3, "flag": True, "name": "s", "none": None,
        "learning-rate": 0.1, "a b.c": 1, "!!": 1, "big": 2**70, "frac": Fraction(1, 4),
        "np_int": np.int64(5), "np_float": np.float32(0.25), 7: "seven",
    })
    props = driver.statements[0][1]["props"]
    expected = {"cfg": "{'a': 1}", "lst": "[1, 2]", "lr": 0.5, "epochs": 3, "flag": True, "name": "s",
                "learning_rate": 0.1, "abc": 1, "big": str(2**70), "frac": 0.25, "np_int": 5, "np_float": 0.25,
                "7": "seven"}
    assert {k: v for k, v in props.items() if k in expected} == expected
    assert "none" not in props and "" not in props
    assert all(type(v) in (str, int, float, bool) for v in props.values())
    assert type(props["flag"]) is bool and type(props["lr"]) is float and type(props["np_int"]) is int


def test_one_session_per_call_and_close(graph: GraphMirror, driver: FakeDriver) -> None:
    graph.pipeline("p", 1, {})
    graph.stage("s", 2, "p", 1, {})
    assert len(driver.transactions) == 2 and driver.open_sessions == 0
    graph.close()
    assert driver.closed


def test_uses_neo4j_driver_when_none_injected(monkeypatch) -> None:
    neo4j = pytest.importorskip("neo4j")
    calls = []
    fake = FakeDriver()
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", lambda uri, auth: calls.append((uri, auth)) or fake)
    mirror = GraphMirror("bolt://h:7687", "u", "pw")
    assert calls == [("bolt://h:7687", ("u", "pw"))]
    mirror.close()
    assert fake.closed


def test_missing_neo4j_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "neo4j", None)
    with pytest.raises(CmfError, match=re.escape("pip install 'cmf-ml[graph]'")):
        GraphMirror("bolt://h:7687", "u", "pw")
    GraphMirror("bolt://h:7687", "u", "pw", driver=FakeDriver())  # an injected driver needs no neo4j


def test_module_imports_without_neo4j() -> None:
    code = "import sys; sys.modules['neo4j'] = None; import cmf_core.metadata.graph"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_cmf_with_graph_mirrors_what_it_logs(workspace, monkeypatch) -> None:
    """Cmf(graph=True) reads the Neo4j settings of `cmf init` and mirrors every record."""
    import neo4j

    from cmf_core import api
    from cmflib.cmf import Cmf
    from tests.conftest import write

    fake = FakeDriver()
    seen = {}
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", lambda uri, auth: seen.update(uri=uri, auth=auth) or fake)
    api.init("local", {"path": str(workspace.parent / "store")}, git_remote_url="u", neo4j_user="neo",
             neo4j_password="pw", neo4j_uri="bolt://127.0.0.1:7687", workspace=workspace)
    write(workspace / "in.csv", "1\n")
    write(workspace / "model.pkl", "m")
    cmf = Cmf(filepath="mlmd", pipeline_name="p", graph=True)
    cmf.create_context("train")
    cmf.create_execution("Train")
    cmf.log_dataset("in.csv", "input")
    cmf.log_model("model.pkl", "output")
    cmf.finalize()
    assert seen == {"uri": "bolt://127.0.0.1:7687", "auth": ("neo", "pw")} and fake.closed
    queries = " ".join(q for q, _ in fake.statements)
    for label in (":Pipeline", ":Stage", ":Execution", ":Dataset", ":Model", ":Environment", ":derived"):
        assert label in queries


def test_graph_without_neo4j_settings_is_a_clear_error(workspace) -> None:
    from cmflib.cmf import Cmf

    with pytest.raises(CmfError, match="needs Neo4j settings"):
        Cmf(filepath="mlmd", pipeline_name="p", graph=True)


def test_unreachable_server_is_a_clear_error() -> None:
    from neo4j.exceptions import ServiceUnavailable

    class DownDriver(FakeDriver):
        def session(self, **kw: Any) -> FakeSession:
            raise ServiceUnavailable("Couldn't connect to 127.0.0.1:7687")

    mirror = GraphMirror("bolt://127.0.0.1:7687", "neo", "pw", driver=DownDriver())
    with pytest.raises(CmfError, match="Neo4j at bolt://127.0.0.1:7687 refused.*ServiceUnavailable"):
        mirror.pipeline("p", 1, {})
