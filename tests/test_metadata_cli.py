"""``cmf pipeline|execution|artifact list``, ``cmf metadata export`` and ``cmf dvc ingest``, and their Python twins."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmflib import cmf as cmflib_cmf
from cmflib.cmf import Cmf
from tests.conftest import CMF, run_cmf, write


@pytest.fixture
def pipeline(workspace) -> Path:
    """A three-stage pipeline logged through cmflib.cmf.Cmf."""
    write(workspace / "data" / "raw.csv", "a,b\n1,2\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="demo")
    cmf.create_context("prepare")
    cmf.create_execution("Prepare", {"seed": 1})
    cmf.log_dataset("data/raw.csv", "input")
    write(workspace / "data" / "split" / "train.csv", "1\n")
    cmf.log_dataset("data/split", "output")
    cmf.create_context("train")
    cmf.create_execution("Train", {"lr": 0.01})
    cmf.log_dataset("data/split", "input")
    write(workspace / "model.pkl", "m")
    cmf.log_model("model.pkl", "output")
    cmf.log_execution_metrics("train_metrics", {"auc": 0.9})
    cmf.create_context("evaluate")
    cmf.create_execution("Evaluate")
    cmf.log_model("model.pkl", "input")
    cmf.finalize()
    return workspace


def test_pipeline_and_execution_lists(pipeline, cmf):
    listed = cmf("pipeline", "list", "--json")
    assert listed.code == 0 and json.loads(listed.out) == [{"pipeline": "demo"}]
    rows = json.loads(cmf("execution", "list", "-p", "demo", "--json").out)
    assert sorted(r["Context_Type"] for r in rows) == ["demo/evaluate", "demo/prepare", "demo/train"]
    uuid = rows[0]["Execution_uuid"]
    one = json.loads(cmf("execution", "list", "-p", "demo", "-e", uuid, "--json").out)
    assert [r["Execution_uuid"] for r in one] == [uuid]
    text = cmf("execution", "list", "--pipeline-name", "demo")
    assert text.code == 0 and "demo/train" in text.out and "(3 rows)" in text.out


def test_artifact_list_shows_md5_and_url_of_every_artifact(pipeline, tmp_path, cmf):
    rows = json.loads(cmf("artifact", "list", "-p", "demo", "--json").out)
    by_name = {r["name"].split(":")[0]: r for r in rows}
    assert {"data/raw.csv", "data/split", "model.pkl", "train_metrics"} <= set(by_name)
    for path in ("data/raw.csv", "data/split", "model.pkl"):
        row = by_name[path]
        assert row["url"] == f"demo:{tmp_path / 'store'}/files/md5/{row['uri'][:2]}/{row['uri'][2:]}"
    one = json.loads(cmf("artifact", "list", "-p", "demo", "-a", "raw.csv", "--json").out)
    assert [r["name"].split(":")[0] for r in one] == ["data/raw.csv"]
    missing = cmf("artifact", "list", "-p", "demo", "-a", "nope.csv")
    assert missing.code == 1 and "no artifact named 'nope.csv'" in missing.err


def test_unknown_pipeline_and_missing_mlmd_are_errors(pipeline, cmf):
    unknown = cmf("execution", "list", "-p", "other")
    assert unknown.code == 1 and "pipeline 'other' is not in mlmd; it has: demo" in unknown.err
    missing = cmf("pipeline", "list", "-f", "nothere")
    assert missing.code == 1 and "does not exist" in missing.err
    assert not (pipeline / "nothere").exists()


def test_export_writes_the_original_shape_and_refuses_to_overwrite(pipeline, cmf):
    done = cmf("metadata", "export", "-p", "demo")
    assert done.code == 0 and (pipeline / "demo.json").is_file()
    data = json.loads((pipeline / "demo.json").read_text())
    (pipe,) = data["Pipeline"]
    assert pipe["name"] == "demo" and len(pipe["stages"]) == 3
    events = [ev for st in pipe["stages"] for ex in st["executions"] for ev in ex["events"]]
    assert {ev["type"] for ev in events} == {3, 4}
    assert all("artifact" in ev and ev["artifact"]["name"] for ev in events)

    before = (pipeline / "demo.json").read_bytes()
    again = cmf("metadata", "export", "-p", "demo")
    assert again.code == 1 and "use --force" in again.err
    assert (pipeline / "demo.json").read_bytes() == before
    assert cmf("metadata", "export", "-p", "demo", "-j", "out/x", "--force").code == 2  # no such directory
    assert cmf("metadata", "export", "-p", "demo", "-j", "copy", "--force").code == 0
    assert json.loads((pipeline / "copy.json").read_text()) == data


def test_python_module_functions(pipeline):
    assert cmflib_cmf.pipeline_list("mlmd") == ["demo"]
    assert len(cmflib_cmf.execution_list("demo", "mlmd")) == 3
    assert any(a["type"] == "Model" for a in cmflib_cmf.artifact_list("demo", "mlmd"))
    target = cmflib_cmf.metadata_export("demo", "exported.json", "mlmd")
    assert target.name == "exported.json" and json.loads(target.read_text())["Pipeline"]
    with pytest.raises(CmfError, match="use --force"):
        cmflib_cmf.metadata_export("demo", "exported.json", "mlmd")


DVC_LOCK = """schema: '2.0'
stages:
  prepare:
    cmd: python prepare.py data/raw.csv
    deps:
    - path: data/raw.csv
      hash: md5
      md5: {raw}
      size: 8
    params:
      params.yaml:
        prepare.split: 0.2
        prepare.seed: 7
    outs:
    - path: data/prepared
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
      size: 10
      nfiles: 2
  train:
    cmd:
    - python train.py
    - python report.py
    deps:
    - path: data/prepared
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
    outs:
    - path: model.pkl
      hash: md5
      md5: fedcba9876543210fedcba9876543210
"""


def test_dvc_ingest_records_the_lock_file(workspace, cmf):
    import hashlib

    (workspace / "dvc.lock").write_text(DVC_LOCK.format(raw=hashlib.md5(b"a,b\n1,2\n").hexdigest()))
    result = cmf("dvc", "ingest", "-p", "dvcpipe")
    assert result.code == 0, result.err
    assert "2 stages" in result.out and "2 executions created" in result.out and "4 artifacts" in result.out
    store = records.open_store(workspace / "mlmd", create=False)
    executions = {e.properties["Execution"].string_value: e for e in store.get_executions()}
    prepare = executions["python prepare.py data/raw.csv"]
    assert prepare.custom_properties["params.yaml.prepare.split"].double_value == 0.2
    assert "python train.py && python report.py" in executions
    names = sorted(a.name for a in store.get_artifacts_by_type("Dataset"))
    assert "data/prepared:0123456789abcdef0123456789abcdef.dir" in names and "model.pkl:" + "fedcba9876543210" * 2 in names

    again = cmf("dvc", "ingest")  # the same commands are matched, not duplicated
    assert again.code == 0 and "0 executions created, 2 updated" in again.out
    assert len(records.open_store(workspace / "mlmd", create=False).get_executions()) == len(store.get_executions())


def test_dvc_ingest_bad_lock_files(workspace, cmf):
    missing = cmf("dvc", "ingest")
    assert missing.code == 1 and "dvc.lock not found" in missing.err
    (workspace / "dvc.lock").write_text("stages:\n  s:\n    deps: []\n")
    assert "has no cmd" in cmf("dvc", "ingest").err
    (workspace / "dvc.lock").write_text("stages: [\n")
    assert "malformed dvc.lock" in cmf("dvc", "ingest").err
    assert not (workspace / "mlmd").exists()


def test_list_commands_never_page_or_prompt(pipeline):
    result = run_cmf(["artifact", "list", "-p", "demo"], cwd=pipeline, env={"PAGER": "false"})
    assert result.code == 0 and "model.pkl" in result.out
    export = [CMF, "metadata", "export", "-p", "demo"]
    first = subprocess.run(export, cwd=pipeline, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    second = subprocess.run(export, cwd=pipeline, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert first.returncode == 0 and second.returncode == 1  # refused at once: no prompt waiting on stdin
