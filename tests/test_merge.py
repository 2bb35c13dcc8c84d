"""Merging pipeline exports into an mlmd store: exact round trip, idempotence, filters, bad payloads."""
from __future__ import annotations

import json
import re

import pytest

from cmf_core.metadata import store as records
from cmf_core.metadata.merge import Clash, MergeError, merge_pipeline
from cmflib.cmf import Cmf
from cmflib.cmfquery import CmfQuery
from tests.conftest import write

VOLATILE = {"id", "type_id", "create_time_since_epoch", "last_update_time_since_epoch"}


def stable(data):
    """The export without store-specific ids and times (Context_ID/Pipeline_id are ids too)."""
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE | {"Context_ID", "Pipeline_id"}}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


@pytest.fixture
def exported(workspace):
    write(workspace / "in.csv", "1\n")
    write(workspace / "out" / "a.txt", "a\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("prepare")
    cmf.create_execution("Prepare", {"seed": 1, "ratio": 0.5, "flag": True})
    cmf.log_dataset("in.csv", "input")
    cmf.log_dataset("out", "output")
    cmf.create_context("train")
    cmf.create_execution("Train")
    cmf.log_dataset("out", "input")
    cmf.log_execution_metrics("m", {"acc": 0.9})
    cmf.finalize()
    return workspace, CmfQuery("mlmd").dumptojson("p")


def test_merge_reproduces_the_pipeline_and_is_idempotent(exported, tmp_path):
    _, payload = exported
    target = records.open_store(tmp_path / "server.mlmd")
    first = merge_pipeline(target, payload)
    assert first.status == "success" and first.executions == 2 and first.artifacts == 4
    assert merge_pipeline(target, payload).status == "exists"
    merged = json.loads(CmfQuery(str(tmp_path / "server.mlmd")).dumptojson("p"))
    assert stable(merged) == stable(json.loads(payload))
    execution = merged["Pipeline"][0]["stages"][0]["executions"][0]
    assert execution["custom_properties"]["flag"] is True and execution["custom_properties"]["ratio"] == 0.5


def test_exec_uuid_filter_and_incremental_merge(exported, tmp_path):
    workspace, payload = exported
    data = json.loads(payload)
    train_uuid = data["Pipeline"][0]["stages"][1]["executions"][0]["properties"]["Execution_uuid"]
    target = records.open_store(tmp_path / "server.mlmd")
    only = merge_pipeline(target, payload, exec_uuid=train_uuid)
    assert only.executions == 1
    rest = merge_pipeline(target, payload)
    assert rest.executions == 1 and rest.status == "success"
    assert len(target.get_executions()) == 2


def test_execution_with_several_uuids_is_merged_once(workspace, tmp_path):
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("loop")
    cmf.create_execution("epoch", create_new_execution=False)
    target = records.open_store(tmp_path / "server.mlmd")
    merge_pipeline(target, CmfQuery("mlmd").dumptojson("p"))
    again = Cmf(filepath="mlmd", pipeline_name="p")
    again.create_context("loop")
    again.create_execution("epoch", {"step": 2}, create_new_execution=False)
    result = merge_pipeline(target, CmfQuery("mlmd").dumptojson("p"))
    assert result.executions == 0 and result.updated == 1
    (execution,) = target.get_executions()
    assert len(execution.properties["Execution_uuid"].string_value.split(",")) == 2
    assert execution.custom_properties["step"].int_value == 2


@pytest.mark.parametrize("payload,message", [
    ("not json", "not JSON"),
    ({"Pipeline": []}, 'no "Pipeline" list'),
    ({"Pipeline": [{"name": 3}]}, "pipeline name must be a str"),
    ({"Pipeline": [{"name": "../etc"}]}, "pipeline name '../etc' has a '/'"),
    ({"Pipeline": [{"name": ""}]}, "pipeline name is empty"),
    ({"Pipeline": [{"name": "é" * 128}]}, "longer than 255 bytes"),
    ({"Pipeline": [{"name": "p", "stages": [{"name": "s", "executions": [{"type": "T", "properties": {}, "events": [
        {"type": 7, "artifact": {}}]}]}]}]}, r"must be 3 \(input\) or 4 \(output\)"),
    ({"Pipeline": [{"name": "p", "stages": [{"name": "s", "executions": [{"type": "T", "properties": {
        "x": {"nested": 1}}}]}]}]}, "must be a string, number or boolean"),
])
def test_bad_payloads_are_refused_before_any_write(payload, message, tmp_path):
    target = records.open_store(tmp_path / "server.mlmd")
    with pytest.raises(MergeError, match=message):
        merge_pipeline(target, json.dumps(payload) if isinstance(payload, dict) else payload)
    assert target.get_contexts() == [] and target.get_executions() == []


# -- clashes: a merge that would change what a record holds ------------------------------------------------------


def _execution(export, stage):
    return export["Pipeline"][0]["stages"][stage]["executions"][0]


def _pipeline(path):
    return json.loads(CmfQuery(str(path)).dumptojson("p"))


def test_a_changed_value_is_a_clash_that_writes_nothing_unless_replaced(exported, tmp_path):
    """A re-merge that changes a stored value (the second stage's metrics) raises Clash naming the record, the key
    and both values before the first write: the first stage's new key is not merged either. ``replace`` stores
    the payload's values."""
    _, payload = exported
    path = tmp_path / "server.mlmd"
    target = records.open_store(path)
    merge_pipeline(target, payload)
    before = _pipeline(path)
    data = json.loads(payload)
    _execution(data, 0)["custom_properties"]["note"] = "new"
    metrics = next(ev["artifact"] for ev in _execution(data, 1)["events"] if ev["artifact"]["type"] == "Metrics")
    metrics["custom_properties"]["acc"] = 0.5
    expected = rf"Metrics artifact '{re.escape(metrics['name'])}': custom property 'acc' is 0.9 in the store but 0.5"
    with pytest.raises(Clash, match=expected):
        merge_pipeline(target, json.dumps(data))
    assert _pipeline(path) == before

    assert merge_pipeline(target, json.dumps(data), replace=True).updated == 2
    after = _pipeline(path)
    assert _execution(after, 0)["custom_properties"]["note"] == "new"
    assert [ev["artifact"]["custom_properties"]["acc"] for ev in _execution(after, 1)["events"]
            if ev["artifact"]["type"] == "Metrics"] == [0.5]


def test_a_changed_execution_property_is_a_clash(exported, tmp_path):
    _, payload = exported
    target = records.open_store(tmp_path / "server.mlmd")
    merge_pipeline(target, payload)
    data = json.loads(payload)
    prepare = _execution(data, 0)
    old = prepare["properties"]["Execution"]
    prepare["properties"]["Execution"] = "python other.py"
    with pytest.raises(Clash, match=rf"execution {prepare['properties']['Execution_uuid']}: property 'Execution' "
                                    rf"is {re.escape(repr(old))} in the store but 'python other.py'"):
        merge_pipeline(target, json.dumps(data))
    merge_pipeline(target, json.dumps(data), replace=True)
    assert _execution(_pipeline(tmp_path / "server.mlmd"), 0)["properties"]["Execution"] == "python other.py"


def test_what_is_never_a_clash(exported, tmp_path):
    """New keys are added; an execution's uuids and an artifact's urls are united; the ids inside an execution's
    properties are the receiving store's own; its end commit is the newer one."""
    _, payload = exported
    path = tmp_path / "server.mlmd"
    target = records.open_store(path)
    merge_pipeline(target, payload)
    data = json.loads(payload)
    prepare = _execution(data, 0)
    uuid = prepare["properties"]["Execution_uuid"]
    prepare["properties"].update(Execution_uuid=f"{uuid},another-uuid", Context_ID=999, Pipeline_id=999,
                                 Git_End_Commit="f" * 40)  # finalize ran after a push, or the run was reused
    prepare["custom_properties"]["epochs"] = 3
    dataset = next(ev["artifact"] for ev in prepare["events"] if ev["artifact"]["type"] == "Dataset")
    dataset["properties"]["url"] += ",mirror:/elsewhere"
    dataset["custom_properties"]["rows"] = 1

    result = merge_pipeline(target, json.dumps(data))
    assert (result.status, result.executions, result.updated) == ("success", 0, 2)
    stored = _execution(_pipeline(path), 0)
    assert stored["properties"]["Execution_uuid"] == f"{uuid},another-uuid"
    assert stored["properties"]["Git_End_Commit"] == "f" * 40
    assert {"seed": 1, "ratio": 0.5, "flag": True, "epochs": 3}.items() <= stored["custom_properties"].items()
    (merged,) = [ev["artifact"] for ev in stored["events"] if ev["artifact"]["name"] == dataset["name"]]
    assert merged["properties"]["url"] == dataset["properties"]["url"] and merged["custom_properties"]["rows"] == 1
