"""Our mlmd files read by the ORIGINAL cmflib 0.1.0, and the original's read by ours: the same answers.

Each side's ``CmfQuery`` is asked the same questions about the same file; the
answers must agree (pipeline names, stages, executions, artifacts with their
names/uris/urls, artifact types, and the export JSON).  Set ``CMF_SKIP_ORIGINAL=1``
to skip (the first run builds the original's venv, about a minute).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cmf_core import api
from cmflib.cmf import Cmf
from cmflib.cmfquery import CmfQuery
from tests.compat import harness
from tests.conftest import write

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("CMF_SKIP_ORIGINAL") == "1", reason="CMF_SKIP_ORIGINAL=1"),
]
PIPELINE = "cross"
EXECUTION_COLUMNS = ("id", "Context_Type", "Execution", "Execution_uuid", "Pipeline_Type", "Git_Start_Commit")
ARTIFACT_COLUMNS = ("id", "name", "type", "uri", "url", "Commit")


def ours(mlmd: Path) -> Dict[str, Any]:
    """Our CmfQuery's answers, in the shape of tests/compat/orig_query.py's output."""
    query = CmfQuery(str(mlmd))
    stages = query.get_pipeline_stages(PIPELINE)
    executions = {s: _records(query.get_all_executions_in_stage(s)) for s in stages}
    ids = [r["id"] for rows in executions.values() for r in rows]
    return {
        "pipeline_names": query.get_pipeline_names(),
        "stages": stages,
        "executions": executions,
        "artifacts_by_context": _records(query.get_all_artifacts_by_context(PIPELINE)),
        "artifacts_for_execution": {str(i): _records(query.get_all_artifacts_for_execution(i)) for i in ids},
        "artifact_types": query.get_all_artifact_types(),
        "dumptojson": json.loads(query.dumptojson(PIPELINE)),
    }


def _records(frame) -> List[Dict[str, Any]]:
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def pick(rows: List[Dict[str, Any]], columns) -> List[Dict[str, Any]]:
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    return sorted(({c: clean(r.get(c)) for c in columns} for r in rows), key=lambda r: r["id"])


def assert_same_answers(original: Dict[str, Any], mine: Dict[str, Any]) -> None:
    assert len(original["artifacts_by_context"]) >= 6 and len(original["stages"]) >= 2
    assert {a["type"] for a in original["artifacts_by_context"]} >= {"Dataset", "Model", "Metrics", "Step_Metrics"}
    assert mine["pipeline_names"] == original["pipeline_names"] == [PIPELINE]
    assert mine["stages"] == original["stages"]
    for stage in original["stages"]:
        assert pick(mine["executions"][stage], EXECUTION_COLUMNS) == \
            pick(original["executions"][stage], EXECUTION_COLUMNS)
    assert pick(mine["artifacts_by_context"], ARTIFACT_COLUMNS) == \
        pick(original["artifacts_by_context"], ARTIFACT_COLUMNS)
    for execution, rows in original["artifacts_for_execution"].items():
        assert pick(mine["artifacts_for_execution"][execution], ARTIFACT_COLUMNS) == pick(rows, ARTIFACT_COLUMNS)
    assert sorted(mine["artifact_types"]) == sorted(original["artifact_types"])
    assert mine["dumptojson"] == original["dumptojson"]


@pytest.fixture
def our_pipeline(workspace, tmp_path) -> Path:
    """A pipeline logged by OUR Cmf: files, a directory, a model, metrics, step metrics and a data slice."""
    write(workspace / "artifacts" / "data.xml", "<rows>1</rows>\n")
    cmf = Cmf(filepath="mlmd", pipeline_name=PIPELINE, custom_properties={"owner": "ours"})
    cmf.create_context("prepare", {"user-metadata1": "metadata_value"})
    cmf.create_execution("Prepare", {"split": 0.2, "seed": 42, "mode": "fast"}, cmd="python src/prepare.py")
    cmf.log_dataset("artifacts/data.xml", "input", {"source": "synthetic"})
    write(workspace / "artifacts" / "prepared" / "train" / "a.csv", "1,2\n")
    write(workspace / "artifacts" / "prepared" / "test" / "b.csv", "3,4\n")
    cmf.log_dataset("artifacts/prepared", "output")
    cmf.create_context("train")
    cmf.create_execution("Train", {"n_estimators": 10}, cmd="python src/train.py")
    cmf.log_dataset("artifacts/prepared", "input")
    write(workspace / "artifacts" / "model" / "model.pkl", "weights\n")
    cmf.log_model("artifacts/model/model.pkl", "output", model_framework="SKlearn",
                  model_type="RandomForestClassifier", model_name="RandomForestClassifier:default")
    cmf.log_execution_metrics("training_metrics", {"auc": 0.9, "epochs": 3, "name": "rf"})
    for step in range(3):
        cmf.log_metric("training_loss", {"loss": 1.0 / (step + 1)})
    cmf.commit_metrics("training_loss")
    dataslice = cmf.create_dataslice("slice-a")
    dataslice.add_data("artifacts/prepared/train/a.csv")
    dataslice.add_data("artifacts/prepared/test/b.csv")
    dataslice.commit()
    cmf.finalize()
    return workspace / "mlmd"


def test_the_original_reads_what_we_write(our_pipeline):
    original = harness.original_query(our_pipeline, PIPELINE)
    assert_same_answers(original, ours(our_pipeline))
    model = [a for a in original["artifacts_by_context"] if a["type"] == "Model"][0]
    assert model["model_framework"] == "SKlearn"
    metrics = [a for a in original["artifacts_by_context"] if a["type"] == "Metrics"][0]
    assert metrics["custom_properties_auc"] == 0.9  # a float stays a float through the original too


def test_we_read_what_the_original_writes(tmp_path, monkeypatch):
    workspace = tmp_path / "orig" / "ws"
    mlmd = harness.original_write(workspace, PIPELINE)
    assert_same_answers(harness.original_query(mlmd, PIPELINE), ours(mlmd))

    # and we keep logging into it: a new stage in the original's workspace and mlmd file
    monkeypatch.chdir(workspace)
    write(workspace / "eval.csv", "ok\n")
    cmf = Cmf(filepath="mlmd", pipeline_name=PIPELINE)
    cmf.create_context("evaluate")
    cmf.create_execution("Evaluate")
    cmf.log_dataset("eval.csv", "output")
    cmf.finalize()
    again = harness.original_query(mlmd, PIPELINE)
    assert f"{PIPELINE}/evaluate" in again["stages"]
    assert_same_answers(again, ours(mlmd))
    assert api.show(workspace)["repository_type"] == "local"  # the original's workspace config is recognised
