"""Smoke test of the compatibility harness: the ORIGINAL cmflib 0.1.0 writes a pipeline and reads it back.

Builds ``.venv-original`` on first use (about a minute).  Set ``CMF_SKIP_ORIGINAL=1`` to skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compat import harness
from tests.compat.orig_writer import FILES, GIT_REMOTE_URL

pytestmark = [
    pytest.mark.timeout(1800),  # the first test may build the original venv
    pytest.mark.skipif(os.environ.get("CMF_SKIP_ORIGINAL") == "1", reason="CMF_SKIP_ORIGINAL=1"),
]

PIPELINE = "compat-demo"
MD5 = r"[0-9a-f]{32}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ARTIFACT_TYPES = {"Environment", "Dataset", "Model", "Metrics", "Step_Metrics", "Dataslice"}


def md5_of(rel: str) -> str:
    """MD5 of one of the writer's deterministic files (what DVC 3 records for a file)."""
    return hashlib.md5(FILES[rel].encode()).hexdigest()


def store_url(store: Path, md5: str) -> str:
    """The ``url`` property the original records: ``<pipeline>:<dvc remote>/files/md5/ab/cdef...``."""
    return f"{PIPELINE}:{store}/files/md5/{md5[:2]}/{md5[2:]}"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workspace, mlmd) after the original logged the demo pipeline once."""
    workspace = tmp_path_factory.mktemp("orig") / "ws"
    mlmd = harness.original_write(workspace, PIPELINE)
    return workspace, mlmd


@pytest.fixture(scope="module")
def queried(written: tuple[Path, Path]) -> dict[str, Any]:
    """What the original CmfQuery reads back from that MLMD file."""
    return harness.original_query(written[1], PIPELINE)


def by_type(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group artifact records by their ``type`` column."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        grouped.setdefault(rec["type"], []).append(rec)
    return grouped


def exec_id(queried: dict[str, Any], stage: str) -> int:
    """Id of the single execution of ``stage`` (short name)."""
    (rec,) = queried["executions"][f"{PIPELINE}/{stage}"]
    return int(rec["id"])


def test_workspace_is_initialised_the_original_way(written: tuple[Path, Path]) -> None:
    workspace, mlmd = written
    assert mlmd == workspace / "mlmd" and mlmd.read_bytes()[:16] == b"SQLite format 3\x00"
    assert "server-url" in (workspace / ".cmfconfig").read_text()
    dvc_config = (workspace / ".dvc" / "config").read_text()
    assert "local-storage" in dvc_config and str(workspace.parent / "store") in dvc_config

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True).stdout.strip()

    assert git("rev-parse", "--abbrev-ref", "HEAD") == "mlmd"  # the original's `git checkout -B mlmd`
    assert git("remote", "get-url", "cmf_origin") == GIT_REMOTE_URL
    assert git("log", "-1", "--format=%s").endswith(",Train")  # finalize() commits "commiting <id>,<type>"
    assert "artifacts/data.xml.dvc" in git("ls-files")


def test_the_original_logs_into_a_private_home(written: tuple[Path, Path]) -> None:
    log = harness.original_home() / ".cache" / "cmflib" / "cmflib.log"
    assert log.is_file() and log.stat().st_size > 0


def test_pipeline_stages_and_types(queried: dict[str, Any]) -> None:
    assert queried["pipeline_names"] == [PIPELINE]
    assert queried["stages"] == [f"{PIPELINE}/prepare", f"{PIPELINE}/train"]
    assert set(queried["artifact_types"]) == ARTIFACT_TYPES
    raw = queried["mlmd_records"]
    assert {t["name"] for t in raw["context_types"]} == {"Parent_Context", "Pipeline_Stage"}
    assert {t["name"] for t in raw["execution_types"]} == {"Prepare", "Train"}


def test_executions(queried: dict[str, Any]) -> None:
    for stage, command in (("prepare", "python src/prepare.py"), ("train", "python src/train.py")):
        (rec,) = queried["executions"][f"{PIPELINE}/{stage}"]
        assert rec["Execution"] == command
        assert rec["Context_Type"] == rec["Execution_type_name"] == f"{PIPELINE}/{stage}"
        assert rec["Pipeline_Type"] == PIPELINE
        assert rec["Git_Repo"] == GIT_REMOTE_URL
        assert re.fullmatch(r"[0-9a-f]{40}", rec["Git_Start_Commit"])
        assert re.fullmatch(UUID, rec["Execution_uuid"])
        assert re.fullmatch(r"cmf_artifacts/python_env_[0-9a-f]{32}\.txt", rec["custom_properties_Python_Env"])
    (prepare,) = queried["executions"][f"{PIPELINE}/prepare"]
    assert prepare["custom_properties_seed"] == 42
    assert prepare["custom_properties_mode"] == "fast"
    assert prepare["custom_properties_split"] == "0.2"  # the original turns float custom properties into strings


def test_artifact_names_uris_and_urls(written: tuple[Path, Path], queried: dict[str, Any]) -> None:
    workspace, _ = written
    store = workspace.parent / "store"
    arts = by_type(queried["artifacts_by_context"])
    assert set(arts) == ARTIFACT_TYPES
    train_id = exec_id(queried, "train")

    datasets = {rec["name"].split(":")[0]: rec for rec in arts["Dataset"]}
    assert set(datasets) == {"artifacts/data.xml", "artifacts/prepared"}
    data = datasets["artifacts/data.xml"]
    assert data["name"] == f"artifacts/data.xml:{md5_of('artifacts/data.xml')}"
    assert data["uri"] == data["Commit"] == md5_of("artifacts/data.xml")
    assert data["url"] == store_url(store, data["uri"])
    assert data["git_repo"] == GIT_REMOTE_URL
    assert data["custom_properties_source"] == "synthetic"
    prepared = datasets["artifacts/prepared"]
    assert re.fullmatch(rf"artifacts/prepared:{MD5}\.dir", prepared["name"])  # a DVC directory hash
    assert prepared["uri"] == prepared["name"].split(":", 1)[1]
    assert prepared["url"] == store_url(store, prepared["uri"])

    (model,) = arts["Model"]
    model_md5 = md5_of("artifacts/model/model.pkl")
    assert model["name"] == f"artifacts/model/model.pkl:{model_md5}:{train_id}"  # note the execution id suffix
    assert model["uri"] == model["Commit"] == model_md5
    assert model["url"] == store_url(store, model_md5)
    assert (model["model_framework"], model["model_type"], model["model_name"]) == (
        "SKlearn",
        "RandomForestClassifier",
        "RandomForestClassifier:default",
    )

    (metrics,) = arts["Metrics"]
    assert re.fullmatch(rf"training_metrics:({UUID}):{train_id}", metrics["name"])
    assert metrics["uri"] == metrics["name"].split(":")[1]
    assert metrics["metrics_name"] == metrics["name"]
    assert (metrics["custom_properties_auc"], metrics["custom_properties_name"]) == (0.9, "rf")

    train_uuid = queried["executions"][f"{PIPELINE}/train"][0]["Execution_uuid"]
    (step,) = arts["Step_Metrics"]
    match = re.fullmatch(rf"(cmf_artifacts/{train_uuid}/metrics/training_loss):({MD5}):{train_id}:{UUID}", step["name"])
    assert match, step["name"]
    assert step["uri"] == step["Commit"] == match.group(2)
    assert (workspace / match.group(1)).is_file()

    (dataslice,) = arts["Dataslice"]
    match = re.fullmatch(rf"(cmf_artifacts/{train_uuid}/dataslice/slice-a):({MD5})", dataslice["name"])
    assert match, dataslice["name"]
    assert dataslice["uri"] == hashlib.md5((workspace / match.group(1)).read_bytes()).hexdigest()

    (env,) = arts["Environment"]  # one Environment artifact, shared by both executions
    assert re.fullmatch(rf"cmf_artifacts/python_env_{MD5}\.txt:({MD5})", env["name"])


def test_artifacts_for_execution(queried: dict[str, Any]) -> None:
    def events(stage: str) -> set[tuple[str, str, str]]:
        recs = queried["artifacts_for_execution"][str(exec_id(queried, stage))]
        return {(rec["event"], rec["type"], rec["name"].split(":")[0]) for rec in recs}

    env_in = (
        "INPUT",
        "Environment",
        next(iter(by_type(queried["artifacts_by_context"])["Environment"]))["name"].split(":")[0],
    )
    assert events("prepare") == {
        env_in,
        ("INPUT", "Dataset", "artifacts/data.xml"),
        ("OUTPUT", "Dataset", "artifacts/prepared"),
    }
    train = events("train")
    assert {e for e in train if e[1] in ("Environment", "Dataset", "Model")} == {
        env_in,
        ("INPUT", "Dataset", "artifacts/prepared"),
        ("OUTPUT", "Model", "artifacts/model/model.pkl"),
    }
    assert {(e[0], e[1]) for e in train} >= {("OUTPUT", "Metrics"), ("OUTPUT", "Step_Metrics"), ("OUTPUT", "Dataslice")}


def test_dumptojson(queried: dict[str, Any]) -> None:
    (pipeline,) = queried["dumptojson"]["Pipeline"]
    assert pipeline["name"] == PIPELINE and pipeline["type"] == "Parent_Context"
    assert pipeline["properties"] == {"Pipeline": PIPELINE}
    assert pipeline["custom_properties"] == {"owner": "compat"}
    stages = {stage["name"]: stage for stage in pipeline["stages"]}
    assert list(stages) == [f"{PIPELINE}/prepare", f"{PIPELINE}/train"]
    assert stages[f"{PIPELINE}/prepare"]["custom_properties"] == {"user-metadata1": "metadata_value"}
    (train,) = stages[f"{PIPELINE}/train"]["executions"]
    assert train["type"] == "Train"
    metrics = [ev["artifact"] for ev in train["events"] if ev["artifact"]["type"] == "Metrics"]
    assert metrics[0]["custom_properties"] == {"auc": 0.9, "epochs": 3, "name": "rf"}
    assert {ev["type"] for ev in train["events"]} == {3, 4}  # MLMD Event.Type INPUT / OUTPUT


def test_second_run_reuses_pipeline_and_init(written: tuple[Path, Path], tmp_path: Path) -> None:
    """Logging again in an initialised workspace adds executions to the same pipeline and stages."""
    workspace, _ = written
    shutil.copytree(workspace.parent, tmp_path / "copy", symlinks=True)
    copy_ws = tmp_path / "copy" / workspace.name
    # The copied DVC remote still points at the original store: fine, nothing is pushed.
    mlmd = harness.original_write(copy_ws, PIPELINE)
    result = harness.original_query(mlmd, PIPELINE)
    assert result["pipeline_names"] == [PIPELINE]
    assert result["stages"] == [f"{PIPELINE}/prepare", f"{PIPELINE}/train"]
    assert [len(result["executions"][s]) for s in result["stages"]] == [2, 2]
    # Unchanged content: the same Dataset/Model artifacts are reused, Metrics are new each time.
    arts = by_type(result["mlmd_records"]["artifacts"])
    assert (len(arts["Dataset"]), len(arts["Model"]), len(arts["Metrics"])) == (2, 1, 2)


def test_query_of_a_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        harness.original_query(tmp_path / "nope", PIPELINE)
    bogus = tmp_path / "mlmd"
    bogus.write_text("not a database")
    with pytest.raises(harness.OriginalCmfError, match="not a database"):
        harness.original_query(bogus, PIPELINE)
