"""CmfQuery over a real 3-stage pipeline logged with our Cmf: what users read back, the export JSON,
read-only behaviour, and that store calls do not grow with the number of rows."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict

import pytest

from cmf_core import api
from cmf_core.errors import CmfError
from cmf_core.metadata.query import CmfQuery
from cmflib.cmf import Cmf

ENV = {"DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
ARTIFACT_KEYS = {"type", "create_time_since_epoch", "custom_properties", "id", "last_update_time_since_epoch",
                 "name", "properties", "type_id", "uri"}
EXECUTION_KEYS = {"type", "name", "events", "create_time_since_epoch", "custom_properties", "id",
                  "last_update_time_since_epoch", "properties", "type_id"}
CONTEXT_KEYS = {"create_time_since_epoch", "custom_properties", "id", "last_update_time_since_epoch", "name",
                "properties", "type", "type_id"}
EXECUTION_PROPERTIES = {"Context_ID", "Context_Type", "Execution", "Execution_type_name", "Execution_uuid",
                        "Git_End_Commit", "Git_Repo", "Git_Start_Commit", "Pipeline_Type", "Pipeline_id"}


def _workspace(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(root / "home"))
    (root / "ws").mkdir(parents=True)
    monkeypatch.chdir(root / "ws")
    api.init("local", {"path": str(root / "store")}, git_remote_url="/tmp/x.git", workspace=root / "ws")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> SimpleNamespace:
    """prepare: data/in.csv -> data/out (dir); train: data/out -> model.pkl + metrics + step metrics "loss";
    evaluate: model.pkl -> metrics."""
    root = tmp_path_factory.mktemp("query")
    with pytest.MonkeyPatch.context() as mp:
        _workspace(root, mp)
        ws = root / "ws"
        (ws / "data" / "out").mkdir(parents=True)
        (ws / "data" / "in.csv").write_text("a,b\n1,2\n3,4\n")
        (ws / "data" / "out" / "part-0.csv").write_text("a\n1\n")
        (ws / "model.pkl").write_bytes(b"model-bytes")
        cmf = Cmf(filepath="mlmd", pipeline_name="pipe", custom_properties={"owner": "me"})
        cmf.create_context("prepare")
        prepare = cmf.create_execution("Prepare", {"seed": 1, "ratio": 0.5, "flag": True, "note": "x", "type": "t"})
        data_in = cmf.log_dataset("data/in.csv", "input", {"kind": "raw"})
        data_out = cmf.log_dataset("data/out", "output")
        cmf.create_context("train")
        train = cmf.create_execution("Train", {"epochs": 3})
        cmf.log_dataset("data/out", "input")
        model = cmf.log_model("model.pkl", "output", model_framework="sklearn", model_name="rf")
        train_metrics = cmf.log_execution_metrics("train_metrics", {"acc": 0.9})
        cmf.log_metric("loss", {"loss": 0.5, "step": 1})
        cmf.log_metric("loss", {"loss": 0.25, "step": 2})
        loss = cmf.commit_metrics("loss")
        cmf.create_context("evaluate")
        evaluate = cmf.create_execution("Evaluate")
        cmf.log_model("model.pkl", "input")
        eval_metrics = cmf.log_execution_metrics("eval", {"auc": 0.8})
        cmf.finalize()
    return SimpleNamespace(mlmd=str(ws / "mlmd"), prepare=prepare, train=train, evaluate=evaluate, data_in=data_in,
                           data_out=data_out, model=model, train_metrics=train_metrics, loss=loss,
                           eval_metrics=eval_metrics)


@pytest.fixture
def q(pipe) -> CmfQuery:
    return CmfQuery(pipe.mlmd)


def test_facade_exports_cmfquery():
    import cmflib.cmfquery as facade

    assert facade.CmfQuery is CmfQuery and facade.__all__ == ["CmfQuery"]


def test_pipeline_names_ids_and_stages(q):
    assert q.get_pipeline_names() == ["pipe"]
    assert q.get_pipeline_id("pipe") > 0 and q.get_pipeline_id("nope") == -1
    assert q.get_pipeline_stages("pipe") == ["pipe/prepare", "pipe/train", "pipe/evaluate"]
    assert q.get_pipeline_stages("nope") == []


def test_executions_per_stage_keep_properties_and_custom_property_types(q, pipe):
    df = q.get_all_executions_in_stage("pipe/prepare")
    assert len(df) == 1
    assert EXECUTION_PROPERTIES | {"id", "name"} <= set(df.columns)
    assert list(df.columns) == sorted(df.columns)
    row = df.iloc[0]
    assert row["id"] == pipe.prepare.id and row["Execution_type_name"] == "pipe/prepare"
    assert row["Pipeline_Type"] == "pipe" and row["Context_Type"] == "pipe/prepare"
    assert row["Git_End_Commit"]  # finalize() recorded the commit
    custom = {k: row[f"custom_properties_{k}"] for k in ("seed", "ratio", "flag", "note", "type")}
    assert custom == {"seed": 1, "ratio": 0.5, "flag": True, "note": "x", "type": "t"}
    assert df["custom_properties_seed"].dtype == "int64" and df["custom_properties_ratio"].dtype == "float64"
    assert df["custom_properties_flag"].dtype == bool
    assert isinstance(row["custom_properties_Python_Env"], str)

    protos = q.get_all_exe_in_stage("pipe/train")
    assert [e.id for e in protos] == [pipe.train.id]
    assert q.get_all_exe_in_stage("pipe/nope") == [] and q.get_all_executions_in_stage("pipe/nope").empty

    everything = q.get_all_executions_in_pipeline("pipe")
    assert list(everything["id"]) == [pipe.prepare.id, pipe.train.id, pipe.evaluate.id]
    assert list(everything["custom_properties_epochs"].isna()) == [True, False, True]
    assert q.get_all_executions_in_pipeline("nope").empty

    by_ids = q.get_all_executions_by_ids_list([pipe.train.id, pipe.evaluate.id])
    assert len(by_ids) == 2 and "id" not in by_ids.columns  # as the original: properties only
    with_ids = q.get_executions_with_execution_ids([pipe.prepare.id, pipe.evaluate.id])
    assert list(with_ids.columns) == ["id", "Execution_type_name", "Execution_uuid"]
    assert list(with_ids["Execution_type_name"]) == ["pipe/prepare", "pipe/evaluate"]
    assert list(q.get_executions_with_execution_ids([]).columns) == ["id", "Execution_type_name", "Execution_uuid"]

    stage_id = q.store.get_context_by_type_and_name("Pipeline_Stage", "pipe/train").id
    uuid = pipe.train.properties["Execution_uuid"].string_value
    assert [e.id for e in q.get_all_executions_by_stage(stage_id)] == [pipe.train.id]
    assert [e.id for e in q.get_all_executions_by_stage(stage_id, uuid)] == [pipe.train.id]
    assert q.get_all_executions_by_stage(stage_id, "not-a-uuid") == []


def test_artifacts_per_execution_and_per_pipeline(q, pipe):
    df = q.get_all_artifacts_for_execution(pipe.train.id)
    events = dict(zip(df["name"], df["event"]))
    assert events[pipe.data_out.name] == "INPUT"
    assert events[pipe.model.name] == events[pipe.train_metrics.name] == events[pipe.loss.name] == "OUTPUT"
    assert {"id", "type", "uri", "name", "url", "Commit", "create_time_since_epoch",
            "last_update_time_since_epoch", "event"} <= set(df.columns)
    model = df[df["name"] == pipe.model.name].iloc[0]
    assert model["type"] == "Model" and model["model_framework"] == "sklearn" and model["model_name"] == "rf"
    assert model["uri"] == model["Commit"] == pipe.model.uri
    assert model["url"].startswith("pipe:") and model["url"].endswith(pipe.model.uri[2:])
    out_dir = df[df["name"] == pipe.data_out.name].iloc[0]
    assert out_dir["uri"].endswith(".dir") and out_dir["name"] == f"data/out:{out_dir['uri']}"
    metrics = df[df["name"] == pipe.train_metrics.name].iloc[0]
    assert metrics["custom_properties_acc"] == 0.9 and metrics["type"] == "Metrics"

    prepare = q.get_all_artifacts_for_execution(pipe.prepare.id)
    data_in = prepare[prepare["name"] == pipe.data_in.name].iloc[0]
    assert data_in["custom_properties_kind"] == "raw" and data_in["name"].startswith("data/in.csv:")

    both = q.get_all_artifacts_for_executions([pipe.prepare.id, pipe.train.id])
    assert both["id"].is_unique and {pipe.data_in.id, pipe.data_out.id, pipe.model.id} <= set(both["id"])
    by_context = q.get_all_artifacts_by_context("pipe")
    assert {pipe.data_in.name, pipe.model.name, pipe.loss.name, pipe.eval_metrics.name} <= set(by_context["name"])
    assert q.get_all_artifacts_by_context("nope").empty
    by_ids = q.get_all_artifacts_by_ids_list([pipe.model.id, pipe.data_in.id])
    assert list(by_ids["id"]) == sorted([pipe.model.id, pipe.data_in.id])

    one = q.get_artifact(pipe.model.name)
    assert len(one) == 1 and list(one.columns[:6]) == ["id", "type", "uri", "name", "create_time_since_epoch",
                                                       "last_update_time_since_epoch"]
    assert q.get_artifact("nope") is None
    assert pipe.model.name in q.get_all_artifacts() and q.get_artifact_names() == q.get_all_artifacts()
    assert {"Dataset", "Model", "Metrics", "Step_Metrics", "Environment"} <= set(q.get_all_artifact_types())


def test_lineage(q, pipe):
    parents = set(q.get_one_hop_parent_artifacts(pipe.model.name)["name"])
    assert pipe.data_out.name in parents and pipe.data_in.name not in parents
    all_parents = set(q.get_all_parent_artifacts(pipe.model.name)["name"])
    assert {pipe.data_out.name, pipe.data_in.name} <= all_parents
    with_id = q.get_one_hop_parent_artifacts_with_id(pipe.model.id)
    assert set(with_id["name"]) == {pipe.data_out.name}  # the Environment input is left out

    children = list(q.get_one_hop_child_artifacts(pipe.data_in.name)["name"])
    assert children == [pipe.data_out.name]
    all_children = list(q.get_all_child_artifacts(pipe.data_in.name)["name"])
    assert all_children[0] == pipe.data_out.name
    assert {pipe.model.name, pipe.train_metrics.name, pipe.loss.name, pipe.eval_metrics.name} <= set(all_children)
    assert len(all_children) == len(set(all_children))
    assert q.get_one_hop_child_artifacts(pipe.data_in.name, pipeline_id=9999).empty

    assert q.find_producer_execution(pipe.data_out.name).id == pipe.prepare.id
    assert q.get_producer_execution(pipe.model.name).id == pipe.train.id
    assert q.find_producer_execution(pipe.data_in.name) is None and q.find_producer_execution("nope") is None
    assert set(q.get_all_parent_executions(pipe.model.name)["id"]) == {pipe.prepare.id}
    assert set(q.get_all_parent_executions(pipe.eval_metrics.name)["id"]) == {pipe.prepare.id, pipe.train.id}

    linked = q.get_all_executions_for_artifact(pipe.model.name)
    assert list(linked.columns) == ["Type", "execution_id", "execution_name", "execution_type_name", "pipeline",
                                    "stage"]
    assert linked.to_dict("records") == [
        {"Type": "OUTPUT", "execution_id": pipe.train.id, "execution_name": "", "execution_type_name": "pipe/train",
         "pipeline": "pipe", "stage": "pipe/train"},
        {"Type": "INPUT", "execution_id": pipe.evaluate.id, "execution_name": "",
         "execution_type_name": "pipe/evaluate", "pipeline": "pipe", "stage": "pipe/evaluate"}]
    assert q.get_all_executions_for_artifact_id(pipe.model.id).equals(linked)
    assert q.get_all_executions_for_artifact("nope").empty

    assert q.get_one_hop_parent_executions_ids([pipe.evaluate.id]) == [pipe.train.id]
    assert [e.id for e in q.get_one_hop_parent_executions([pipe.evaluate.id])] == [pipe.train.id]
    pipeline_id = q.get_pipeline_id("pipe")
    assert q.get_one_hop_parent_executions_ids([pipe.evaluate.id], pipeline_id + 100) == []
    found, links = q.get_all_parent_executions_by_id([pipe.evaluate.id], pipeline_id)
    assert [row[:2] for row in found] == [[pipe.train.id, "pipe/train"], [pipe.prepare.id, "pipe/prepare"]]
    assert found[0][2] == pipe.train.properties["Execution_uuid"].string_value
    assert links == [{"source": pipe.train.id, "target": pipe.evaluate.id},
                     {"source": pipe.prepare.id, "target": pipe.train.id}]


def test_get_metrics_returns_the_logged_steps(q, pipe):
    df = q.get_metrics(pipe.loss.name)
    assert df.index.name == "SequenceNumber"
    assert df.to_dict("records") == [{"loss": 0.5, "step": 1}, {"loss": 0.25, "step": 2}]
    assert q.get_metrics("nope") is None
    assert q.get_metrics(pipe.train_metrics.name) is None  # coarse metrics have no steps


def test_dumptojson_has_the_original_export_shape(q, pipe):
    doc = json.loads(q.dumptojson("pipe"))
    assert list(doc) == ["Pipeline"] and len(doc["Pipeline"]) == 1
    pipeline = doc["Pipeline"][0]
    assert set(pipeline) == CONTEXT_KEYS | {"stages"}
    assert pipeline["type"] == "Parent_Context" and pipeline["name"] == "pipe"
    assert pipeline["properties"] == {"Pipeline": "pipe"} and pipeline["custom_properties"] == {"owner": "me"}
    assert [s["name"] for s in pipeline["stages"]] == ["pipe/prepare", "pipe/train", "pipe/evaluate"]
    for stage in pipeline["stages"]:
        assert set(stage) == CONTEXT_KEYS | {"executions"}
        assert stage["type"] == "Pipeline_Stage" and stage["properties"] == {"Pipeline_Stage": stage["name"]}
        assert len(stage["executions"]) == 1
        execution = stage["executions"][0]
        assert set(execution) == EXECUTION_KEYS and set(execution["properties"]) == EXECUTION_PROPERTIES
        for event in execution["events"]:
            assert set(event) == {"type", "artifact"} and event["type"] in (3, 4)
            artifact = event["artifact"]
            assert set(artifact) == ARTIFACT_KEYS
            assert isinstance(artifact["properties"], dict) and isinstance(artifact["custom_properties"], dict)

    prepare = pipeline["stages"][0]["executions"][0]
    assert prepare["type"] == "Prepare" and prepare["id"] == pipe.prepare.id
    # custom property "type" is renamed user_type; values keep their types
    assert {k: v for k, v in prepare["custom_properties"].items() if k != "Python_Env"} == \
        {"seed": 1, "ratio": 0.5, "flag": True, "note": "x", "user_type": "t"}
    kinds = {e["artifact"]["name"]: (e["type"], e["artifact"]["type"]) for e in prepare["events"]}
    assert kinds[pipe.data_in.name] == (3, "Dataset") and kinds[pipe.data_out.name] == (4, "Dataset")
    data_in = next(e["artifact"] for e in prepare["events"] if e["artifact"]["name"] == pipe.data_in.name)
    assert data_in["uri"] == pipe.data_in.uri and data_in["custom_properties"] == {"kind": "raw"}
    assert set(data_in["properties"]) == {"git_repo", "Commit", "url"}
    train = pipeline["stages"][1]["executions"][0]
    outputs = {e["artifact"]["type"] for e in train["events"] if e["type"] == 4}
    assert outputs == {"Model", "Metrics", "Step_Metrics"}

    assert json.loads(q.dumptojson("nope")) == {"Pipeline": []}


def test_dumptojson_exec_uuid_keeps_only_that_execution(q, pipe):
    uuid = pipe.train.properties["Execution_uuid"].string_value
    doc = json.loads(q.dumptojson("pipe", exec_uuid=uuid))
    stages = doc["Pipeline"][0]["stages"]
    # every stage stays (with no executions), as in the original
    assert [s["name"] for s in stages] == ["pipe/prepare", "pipe/train", "pipe/evaluate"]
    assert [[e["id"] for e in s["executions"]] for s in stages] == [[], [pipe.train.id], []]
    assert all(not s["executions"] for s in json.loads(q.dumptojson("pipe", exec_uuid="nope"))["Pipeline"][0]["stages"])


def test_exec_uuid_matches_any_of_a_reused_executions_uuids(ws):
    api.init("local", {"path": str(ws.parent / "store")}, git_remote_url="/tmp/x.git", workspace=ws)
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("s")
    first = cmf.create_execution("run", create_new_execution=False)
    cmf.create_execution("other")
    again = cmf.create_execution("run", create_new_execution=False)
    uuids = again.properties["Execution_uuid"].string_value.split(",")
    assert again.id == first.id and len(uuids) == 2
    q = CmfQuery("mlmd")
    for uuid in uuids:
        executions = json.loads(q.dumptojson("p", exec_uuid=uuid))["Pipeline"][0]["stages"][0]["executions"]
        assert [(e["id"], e["name"]) for e in executions] == [(first.id, "run")]


def test_extract_to_json(q, pipe):
    everything = json.loads(q.extract_to_json(0))
    assert [p["name"] for p in everything["Pipeline"]] == ["pipe"]
    assert everything == json.loads(q.dumptojson("pipe"))
    assert json.loads(q.extract_to_json(10 ** 15)) == {"Pipeline": []}


def test_missing_or_corrupt_mlmd_file_is_an_error_and_never_created(ws):
    with pytest.raises(CmfError, match="does not exist"):
        CmfQuery("mlmd")
    assert not (ws / "mlmd").exists() and list(ws.iterdir()) == []
    (ws / "bad").write_text("not a database")
    with pytest.raises(CmfError, match="not an mlmd file"):
        CmfQuery(str(ws / "bad"))


def test_reading_does_not_modify_the_file(pipe):
    path = Path(pipe.mlmd)
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent)))
    q = CmfQuery(pipe.mlmd)
    q.dumptojson("pipe")
    q.extract_to_json(0)
    q.get_all_executions_in_pipeline("pipe")
    q.get_all_child_artifacts(pipe.data_in.name)
    q.get_all_parent_executions(pipe.eval_metrics.name)
    q.get_all_artifacts_by_context("pipe")
    q.get_metrics(pipe.loss.name)
    del q
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))) == before


class CountingStore:
    """Forwards to an MLMD store and counts the calls per method."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter = Counter()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def _log_pipeline(name: str, executions: int) -> None:
    cmf = Cmf(filepath="mlmd", pipeline_name=name)
    for i in range(executions):
        cmf.create_context(f"stage{i % 3}")
        cmf.create_execution(f"Step{i}", {"i": i})
        cmf.log_dataset("in.csv", "input")
        cmf.log_execution_metrics("m", {"value": i})
    cmf.finalize()


def test_store_calls_do_not_grow_with_rows(ws):
    api.init("local", {"path": str(ws.parent / "store")}, git_remote_url="/tmp/x.git", workspace=ws)
    (ws / "in.csv").write_text("a\n1\n")
    _log_pipeline("small", 3)
    _log_pipeline("big", 21)
    q = CmfQuery("mlmd")

    def calls(fn: Callable[[], Any]) -> Dict[str, int]:
        q.store = counting = CountingStore(q.store._store if isinstance(q.store, CountingStore) else q.store)
        fn()
        return dict(counting.calls)

    small_ids = list(q.get_all_executions_in_pipeline("small")["id"])
    big_ids = list(q.get_all_executions_in_pipeline("big")["id"])
    assert len(big_ids) == 21
    for small, big in [
        (lambda: q.get_all_artifacts_for_executions(small_ids), lambda: q.get_all_artifacts_for_executions(big_ids)),
        (lambda: q.dumptojson("small"), lambda: q.dumptojson("big")),
        (lambda: q.get_all_executions_in_pipeline("small"), lambda: q.get_all_executions_in_pipeline("big")),
        (lambda: q.get_all_artifacts_by_context("small"), lambda: q.get_all_artifacts_by_context("big")),
    ]:
        assert calls(small) == calls(big)
    artifacts_calls = calls(lambda: q.get_all_artifacts_for_executions(big_ids))
    assert artifacts_calls == {"get_events_by_execution_ids": 1, "get_artifacts_by_id": 1}
    dump_calls = calls(lambda: q.dumptojson("big"))
    assert dump_calls == {"get_contexts_by_type": 1, "get_children_contexts_by_context": 1,
                          "get_executions_by_context": 3, "plain_lineage": 1}
    doc = json.loads(q.dumptojson("big"))
    assert sum(len(s["executions"]) for s in doc["Pipeline"][0]["stages"]) == 21
    assert sum(len(e["events"]) for s in doc["Pipeline"][0]["stages"] for e in s["executions"]) == 21 * 3
