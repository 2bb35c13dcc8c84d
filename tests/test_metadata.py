"""The Cmf logging API: the records it writes, DVC-compatible versioning, and refusing bad input."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from cmf_core import layout, versioning
from cmf_core.errors import CmfError, NotInitialized
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import store as records
from cmflib.cmf import Cmf
from tests.conftest import write


def counts(mlmd: Path):
    store = records.open_store(mlmd, create=False)
    return (len(store.get_artifacts()), len(store.get_executions()), len(store.get_contexts()),
            len(store.get_events_by_execution_ids([e.id for e in store.get_executions()])))


def by_type(store, type_name):
    return store.get_artifacts_by_type(type_name)


def git(ws, *args) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout


def test_three_stage_pipeline_has_the_original_record_shape(workspace, tmp_path):
    write(workspace / "data" / "raw.csv", "a,b\n1,2\n")
    branch = git(workspace, "symbolic-ref", "--short", "HEAD").strip()
    cmf = Cmf(filepath="mlmd", pipeline_name="demo", custom_properties={"owner": "team-a"})
    cmf.create_context("prepare", {"uses_network": True})
    prep = cmf.create_execution("Prepare", {"split": 0.2, "seed": 42, "shuffle": True, "note": "x"})
    raw = cmf.log_dataset("data/raw.csv", "input", {"source": "kaggle"})
    write(workspace / "data" / "split" / "train.csv", "1\n")
    write(workspace / "data" / "split" / "deep" / "test.csv", "2\n")
    split = cmf.log_dataset("data/split", "output")
    cmf.create_context("train")
    train = cmf.create_execution("Train", cmd="python train.py --epochs 3")
    cmf.log_dataset("data/split", "input")
    write(workspace / "model.pkl", "weights")
    model = cmf.log_model("model.pkl", "output", model_framework="sklearn", model_type="rf")
    cmf.log_execution_metrics("metrics", {"auc": 0.91, "epochs": 3})
    cmf.create_context("evaluate")
    cmf.create_execution("Evaluate")
    cmf.log_model("model.pkl", "input")
    head = cmf.finalize()

    store = records.open_store(workspace / "mlmd", create=False)
    pipeline = store.get_context_by_type_and_name("Parent_Context", "demo")
    assert pipeline.properties["Pipeline"].string_value == "demo"
    assert pipeline.custom_properties["owner"].string_value == "team-a"
    stages = store.get_children_contexts_by_context(pipeline.id)
    assert sorted(s.name for s in stages) == ["demo/evaluate", "demo/prepare", "demo/train"]
    prepare = store.get_context_by_type_and_name("Pipeline_Stage", "demo/prepare")
    assert prepare.custom_properties["uses_network"].bool_value is True

    prep = store.get_executions_by_id([prep.id])[0]
    assert store.get_execution_types_by_id([prep.type_id])[0].name == "Prepare"
    p = records.props(prep.properties)
    assert p["Context_Type"] == "demo/prepare" and p["Execution_type_name"] == "demo/prepare"
    assert p["Context_ID"] == prepare.id and p["Pipeline_id"] == pipeline.id and p["Pipeline_Type"] == "demo"
    assert p["Git_Repo"] == str(tmp_path / "origin.git") and p["Git_End_Commit"] == head != ""
    assert len(p["Execution_uuid"]) == 36
    custom = records.props(prep.custom_properties)
    assert custom["split"] == 0.2 and custom["seed"] == 42 and custom["shuffle"] is True and custom["note"] == "x"
    assert custom["Python_Env"].startswith("cmf_artifacts/python_env_")
    assert records.props(store.get_executions_by_id([train.id])[0].properties)["Execution"] == "python train.py --epochs 3"

    md5 = raw.uri
    assert raw.name == f"data/raw.csv:{md5}" and len(md5) == 32
    assert raw.properties["url"].string_value == f"demo:{tmp_path / 'store'}/files/md5/{md5[:2]}/{md5[2:]}"
    assert raw.properties["Commit"].string_value == md5
    assert split.uri.endswith(".dir") and split.name == f"data/split:{split.uri}"
    assert model.name == f"model.pkl:{model.uri}:{train.id}"
    assert model.properties["model_framework"].string_value == "sklearn"
    metrics = by_type(store, "Metrics")[0]
    assert metrics.name.startswith("metrics:") and metrics.name.endswith(f":{train.id}")
    assert metrics.custom_properties["auc"].double_value == 0.91
    assert {t.name for t in store.get_artifact_types()} >= {"Dataset", "Model", "Metrics", "Environment"}

    # the directory logged twice is one artifact: output of prepare, input of train
    assert len([a for a in by_type(store, "Dataset") if a.uri == split.uri]) == 1
    events = store.get_events_by_artifact_ids([split.id])
    assert sorted((e.execution_id, e.type) for e in events) == [(prep.id, mlmd.Event.OUTPUT), (train.id, mlmd.Event.INPUT)]

    # exactly what `dvc add` + a commit leave: dvc sees a clean workspace, git has nothing of ours pending
    status = subprocess.run(["dvc", "status"], cwd=workspace, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status
    assert git(workspace, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(workspace, "symbolic-ref", "--short", "HEAD").strip() == branch
    assert Path.cwd() == workspace


def test_versioning_is_byte_identical_to_dvc_add(tmp_path, monkeypatch):
    from cmf_core import api
    from cmf_core.versioning import Versioner

    def make(root: Path) -> Path:
        root.mkdir()
        api.init("local", {"path": str(tmp_path / "store")}, git_remote_url="u", workspace=root)
        write(root / "data.csv", "x,y\n")
        write(root / "dir" / "a.txt", "alpha\n")
        write(root / "dir" / "sub" / "b.bin", "beta")
        write(root / "dir" / "sub" / "empty", "")
        write(root / "dir" / "ünïcode name.txt", "u")
        for i in range(200):  # versioned in several threads; equal contents go into the cache at once
            write(root / "dir" / "many" / f"f{i:03d}", f"{i % 7}\n")
        (root / "dir" / "edge.bin").write_bytes(b"e" * versioning.SMALL)  # read once, copied from memory
        (root / "dir" / "big.bin").write_bytes(b"b" * (versioning.SMALL + 1))  # copied from the file
        return root

    ours, theirs = make(tmp_path / "ours"), make(tmp_path / "theirs")
    versioner = Versioner(ours)
    versioner.add(ours / "data.csv")
    versioner.add(ours / "dir")
    subprocess.run(["dvc", "add", "-q", "data.csv", "dir"], cwd=theirs, check=True)

    for name in ("data.csv.dvc", "dir.dvc", ".gitignore"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    cache = lambda root: {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
                          for p in (root / ".dvc" / "cache").rglob("*") if p.is_file()}
    assert cache(ours) == cache(theirs) and len(cache(ours)) == 15
    status = subprocess.run(["dvc", "status"], cwd=ours, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status


@pytest.mark.parametrize("size", [0, 1, 1023, layout.CHUNK, layout.CHUNK + 3, 3 * layout.CHUNK])
def test_read_file_hashes_every_byte_and_keeps_only_small_files(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert layout.read_file(path, keep=size) == (hashlib.md5(data).hexdigest(), size, data)
    if size:
        assert layout.read_file(path, keep=size - 1) == (hashlib.md5(data).hexdigest(), size, None)


def test_logged_data_round_trips_through_plain_dvc(workspace, tmp_path):
    write(workspace / "data" / "x.csv", "1,2\n")
    cmf = Cmf(pipeline_name="p")
    cmf.log_dataset("data/x.csv", "output")
    cmf.finalize()
    subprocess.run(["dvc", "push", "-q"], cwd=workspace, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    subprocess.run(["dvc", "pull", "-q"], cwd=clone, check=True)
    assert (clone / "data" / "x.csv").read_text() == "1,2\n"


def test_bad_input_is_refused_without_partial_records(workspace):
    write(workspace / "ok.csv", "1\n")
    cmf = Cmf(pipeline_name="p")
    before = counts(workspace / "mlmd")
    with pytest.raises(CmfError, match="no such file or directory"):
        cmf.log_dataset("missing.csv", "input")
    with pytest.raises(CmfError, match="unknown event type 'sideways'"):
        cmf.log_dataset("ok.csv", "sideways")
    with pytest.raises(CmfError, match="cannot log label"):
        cmf.log_dataset("ok.csv", "input", label="nolabels.csv")
    with pytest.raises(CmfError, match="outside the workspace"):
        cmf.log_dataset("/etc/hostname", "input")
    with pytest.raises(CmfError, match="no metrics logged"):
        cmf.commit_metrics("never")
    with pytest.raises(CmfError, match="no execution with id 999"):
        cmf.update_execution(999, {"a": 1})
    assert counts(workspace / "mlmd") == before  # not even an auto-created execution
    assert not (workspace / "missing.csv.dvc").exists() and not (workspace / "ok.csv.dvc").exists()


def test_corrupt_mlmd_file_is_a_clear_error(workspace):
    (workspace / "mlmd").write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(CmfError, match="not an mlmd file"):
        Cmf(filepath="mlmd", pipeline_name="p")
    truncated = workspace / "cut"
    Cmf(filepath="cut", pipeline_name="p")
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(CmfError, match="corrupt|not an mlmd|cannot open"):
        Cmf(filepath="cut", pipeline_name="p")


def test_workspace_never_initialised_is_a_clear_error(ws):
    with pytest.raises(NotInitialized, match="run 'cmf init <type>'"):
        Cmf(filepath="mlmd", pipeline_name="p")
    assert not (ws / "mlmd").exists()


def test_reused_execution_gets_a_new_uuid_and_merged_properties(workspace):
    cmf = Cmf(pipeline_name="p")
    cmf.create_context("train")
    first = cmf.create_execution("epoch-loop", {"lr": 0.1}, create_new_execution=False)
    again = Cmf(pipeline_name="p")
    again.create_context("train")
    second = again.create_execution("epoch-loop", {"step": 2}, create_new_execution=False)
    assert second.id == first.id and second.name == "epoch-loop"
    uuids = second.properties["Execution_uuid"].string_value.split(",")
    assert len(uuids) == 2 and uuids[0] == first.properties["Execution_uuid"].string_value
    updated = again.update_execution(first.id, {"final": True})
    assert {"lr": 0.1, "step": 2, "final": True}.items() <= records.props(updated.custom_properties).items()


def test_relogging_links_the_existing_artifact(workspace):
    write(workspace / "d.csv", "1\n")
    cmf = Cmf(pipeline_name="p")
    cmf.create_context("a")
    cmf.create_execution("A")
    one = cmf.log_dataset("d.csv", "output", {"rows": 1})
    cmf.log_dataset("d.csv", "output", {"rows": 2})
    cmf.create_context("b")
    cmf.create_execution("B")
    two = cmf.log_dataset("d.csv", "input")
    store = records.open_store(workspace / "mlmd", create=False)
    datasets = by_type(store, "Dataset")
    assert [a.id for a in datasets] == [one.id] == [two.id]
    assert datasets[0].custom_properties["rows"].int_value == 2
    assert datasets[0].properties["url"].string_value.count(",") == 0
    assert len(store.get_events_by_artifact_ids([one.id])) == 2


def test_external_url_is_recorded_by_reference(workspace):
    cmf = Cmf(pipeline_name="p")
    ref = cmf.log_dataset("s3://bucket/raw/data.parquet", "input", {"rows": 10})
    assert ref.uri == "s3://bucket/raw/data.parquet" and ref.custom_properties["external"].bool_value
    assert ref.properties["url"].string_value == "p:s3://bucket/raw/data.parquet"
    write(workspace / "local.csv", "1\n")
    explicit = cmf.log_dataset("local.csv", "input", external=True)
    assert explicit.properties["Commit"].string_value == "" and not (workspace / "local.csv.dvc").exists()


def test_label_csv_becomes_a_label_artifact(workspace):
    write(workspace / "data.csv", "img1\nimg2\n")
    write(workspace / "labels.csv", "img1,cat\nimg2,dog\n")
    cmf = Cmf(pipeline_name="p")
    dataset = cmf.log_dataset("data.csv", "input", label="labels.csv", label_properties={"annotator": "ron"})
    store = records.open_store(workspace / "mlmd", create=False)
    label = by_type(store, "Label")[0]
    assert label.name == f"labels.csv:{label.uri}" and label.properties["url"].string_value == label.name
    assert label.custom_properties["dataset_uri"].string_value == dataset.uri
    assert label.custom_properties["annotator"].string_value == "ron"
    stored = store.get_artifacts_by_id([dataset.id])[0]
    assert stored.custom_properties["labels_uri"].string_value == label.name


def test_step_metrics_and_dataslices_are_versioned(workspace):
    import pandas as pd

    for i in range(3):
        write(workspace / "data" / f"{i}.xml", f"<x>{i}</x>")
    cmf = Cmf(pipeline_name="p")
    cmf.create_context("train")
    cmf.create_execution("Train")
    for step in range(4):
        cmf.log_metric("loss", {"loss": 1.0 / (step + 1), "step": step})
    step_metrics = cmf.commit_metrics("loss")
    frame = pd.read_parquet(workspace / step_metrics.name.split(":")[0])
    assert list(frame["loss"]) == [1.0, 0.5, 1 / 3, 0.25] and list(frame.index) == [1, 2, 3, 4]

    dataslice = cmf.create_dataslice("slice-a")
    dataslice.add_data("data/0.xml", {"label": "cat"})
    dataslice.add_data("data/1.xml")
    first = dataslice.commit({"mean": 2.5})
    assert cmf.read_dataslice("slice-a").loc["data/0.xml", "label"] == "cat"
    second = cmf.update_dataslice("slice-a", "data/0.xml", {"label": "dog"})
    assert second.uri != first.uri  # the new version is recorded
    assert cmf.read_dataslice("slice-a").loc["data/0.xml", "label"] == "dog"
    with pytest.raises(CmfError, match="no such file"):
        dataslice.add_data("data/nope.xml")
    store = records.open_store(workspace / "mlmd", create=False)
    assert len(by_type(store, "Dataslice")) == 2 and len(by_type(store, "Step_Metrics")) == 1
    cmf.finalize()
    assert "up to date" in subprocess.run(["dvc", "status"], cwd=workspace, capture_output=True, text=True).stdout


def test_mlmd_in_a_subdirectory_resolves_paths_there(workspace):
    write(workspace / "exp" / "in.csv", "1\n")
    cmf = Cmf(filepath="exp/mlmd", pipeline_name="p")
    art = cmf.log_dataset("in.csv", "input")
    assert art.name.startswith("in.csv:") and (workspace / "exp" / "in.csv.dvc").is_file()
    assert os.getcwd() == str(workspace)


def test_file_inside_a_tracked_directory_is_hashed_not_re_added(workspace):
    write(workspace / "d" / "x.txt", "x")
    cmf = Cmf(pipeline_name="p")
    cmf.log_dataset("d", "output")
    member = cmf.log_dataset("d/x.txt", "input")
    assert len(member.uri) == 32 and not (workspace / "d" / "x.txt.dvc").exists()


def test_non_finite_floats_are_kept_as_text(workspace):
    """A diverged run logs loss=nan: ML Metadata cannot store it as a double, so it is kept as "nan"."""
    write(workspace / "data.csv", "x\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("train")
    cmf.create_execution("train", custom_properties={"lr": float("inf")})
    cmf.log_dataset("data.csv", "input", custom_properties={"loss": float("nan"), "low": float("-inf"), "ok": 0.5})
    cmf.log_execution_metrics("m", {"loss": float("nan")})
    cmf.finalize()
    store = records.open_store("mlmd", create=False)
    [data] = [a for a in store.get_artifacts() if a.name.startswith("data.csv")]
    props = {k: records.from_value(v) for k, v in data.custom_properties.items()}
    assert (props["loss"], props["low"], props["ok"]) == ("nan", "-inf", 0.5)
    [execution] = store.get_executions()
    assert records.from_value(execution.custom_properties["lr"]) == "inf"
