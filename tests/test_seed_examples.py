"""The code examples of the original cmflib documentation, run as written.

Sources: the docstrings of cmflib 0.1.0's ``cmflib/cmf.py`` and its ``docs/cmflib/index.md``.
Each example's code is kept verbatim; the lines around it only create the files
it names and the values it uses.  Three adaptations, all marked: the docs' ``while
True:`` training loop gets a finite loop, the docstring's absolute ``/repo/data.xml``
is served by a ``/repo`` symlink to the test workspace, and the examples' imports of
ml-metadata (for annotations only, never evaluated) are left out: it installs on
Python <= 3.11 only.  Every example runs on cmf's store and, where ml-metadata
installs, through it (``CMF_METADATA_STORE=ml-metadata``).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cmf_core.metadata.store import STORE_ENV
from tests.conftest import write


@pytest.fixture(autouse=True, params=["cmf", "ml-metadata"])
def store(request, monkeypatch) -> str:
    """Which store the example's ``Cmf`` writes through."""
    if request.param == "ml-metadata":
        pytest.importorskip("ml_metadata", reason="ml-metadata installs on Python <= 3.11 only")
        monkeypatch.setenv(STORE_ENV, "ml-metadata")
    return request.param


@pytest.fixture
def seed_ws(workspace) -> Path:
    for name in ("artifacts/test_dataset.csv", "artifacts/model.pkl", "data/mnist.gz", "data/train.csv",
                 "data/test.csv", "model/rf.pkl", "artifacts/labels.csv", "path/to/model.pkl"):
        write(workspace / name, f"content of {name}\n")
    for j in range(100):
        write(workspace / "data" / "raw_data" / f"{j}.xml", f"<x>{j}</x>\n")
    return workspace


def test_docs_index_walkthrough(seed_ws):
    from cmflib.cmf import Cmf

    metawriter = Cmf(
        filepath="mlmd",
        pipeline_name="test_pipeline",
    )
    context: mlmd.proto.Context = metawriter.create_context(
        pipeline_stage="train"
    )
    execution: mlmd.proto.Execution = metawriter.create_execution(
        execution_type="train",
        custom_properties = {"num_epochs": 100, "learning_rate": 0.01}
    )
    metawriter.log_dataset(
        'artifacts/test_dataset.csv',   # Dataset path
        "input"                         # This is INPUT artifact
    )
    metawriter.log_model(
        "artifacts/model.pkl",          # Model path
        event="output"                  # This is OUTPUT artifact
    )
    assert context.name == "test_pipeline/train" and execution.id > 0


def test_docs_api_overview(seed_ws):
    from cmflib.cmf import Cmf

    metawriter = Cmf(
       filepath="mlmd",                # Path to ML Metadata file.
       pipeline_name="mnist"           # Name of an ML pipeline.
    )
    context = metawriter.create_context(
        pipeline_stage="download",     # Stage name
        custom_properties={            # Optional properties
            "uses_network": True,      #  Downloads from the Internet
            "disk_space": "10GB"       #  Needs this much space
        }
    )
    execution = metawriter.create_execution(
        execution_type="download",            # Execution name.
        custom_properties = {                 # Execution parameters
            "url": "https://a.com/mnist.gz"   #  Data URL.
        }
    )
    metawriter.log_dataset('data/mnist.gz', "input", custom_properties={"name": "mnist", "type": 'raw'})
    metawriter.log_dataset('data/train.csv', "output", custom_properties={"name": "mnist", "type": "train_split"})
    metawriter.log_dataset('data/test.csv', "output", custom_properties={"name": "mnist", "type": "test_split"})
    # In train stage
    metawriter.log_model(
       path="model/rf.pkl", event="output", model_framework="scikit-learn", model_type="RandomForestClassifier",
       model_name="RandomForestClassifier:default"
    )

    # In test stage
    metawriter.log_model(
       path="model/rf.pkl", event="input"
    )
    # Inside training loop  -- adapted: the docs loop `while True:` forever
    for loss in (0.9, 0.5, 0.2):
         metawriter.log_metric("training_metrics", {"loss": loss})
    metawriter.commit_metrics("training_metrics")
    avg_prec, roc_auc = 0.8, 0.9
    metawriter.log_execution_metrics("metrics", {"avg_prec": avg_prec, "roc_auc": roc_auc})
    dataslice = metawriter.create_dataslice("slice-a")
    for i in range(1, 20, 1):
        j = random.randrange(100)
        dataslice.add_data("data/raw_data/"+str(j)+".xml")
    dataslice.commit()
    metawriter.log_metrics(metrics_name="accuracy", custom_properties={"value": 0.95})  # the docs' table
    assert context.custom_properties["uses_network"].bool_value and execution.id


def test_docstring_examples(seed_ws):
    from cmflib.cmf import Cmf

    split, seed = 0.2, 42
    metawriter = Cmf(
        filepath="mlmd",
        pipeline_name="test_pipeline",
        custom_properties={"owner": "user_a"},
        graph=False
    )
    context: mlmd.proto.Context = metawriter.create_context(
        pipeline_stage="prepare",
        custom_properties ={"user-metadata1": "metadata_value"}
    )
    execution: mlmd.proto.Execution = metawriter.create_execution(
        execution_type="Prepare",
        custom_properties = {"split": split, "seed": seed}
    )
    while execution.id < 8:  # the update example names execution 8: make it exist
        execution = metawriter.create_execution(execution_type="Prepare")
    execution: mlmd.proto.Execution = metawriter.update_execution(
        execution_id=8,
        custom_properties = {"split": split, "seed": seed}
    )
    artifact: mlmd.proto.Artifact= metawriter.log_model(
        path="path/to/model.pkl",
        event="output",
        model_framework="SKlearn",
        model_type="RandomForestClassifier",
        model_name="RandomForestClassifier:default"
    )
    auc, loss = 0.7, 0.3
    exec_metrics: mlpb.Artifact = metawriter.log_execution_metrics(
        metrics_name="Training_Metrics",
        custom_properties={"auc": auc, "loss": loss},
    )
    train_loss = 0.1
    metawriter.log_metric("training_metrics", {"train_loss": train_loss})
    metawriter.commit_metrics("training_metrics")
    dataslice = metawriter.create_dataslice("slice-a")
    j = 3
    dataslice.add_data(f"data/raw_data/{j}.xml")
    dataslice.commit()
    dataslice=metawriter.update_dataslice("slice-a", f"data/raw_data/{j}.xml",
    {"key1": "updated_value"})
    assert execution.id == 8 and artifact.name.startswith("path/to/model.pkl:") and exec_metrics.id


def test_docstring_log_dataset_with_absolute_repo_path(seed_ws):
    from cmflib.cmf import Cmf

    repo = Path("/repo")
    if repo.exists() or repo.is_symlink():
        pytest.skip("/repo exists on this machine; the example needs it to be the workspace")
    write(seed_ws / "data.xml", "<data/>\n")
    os.symlink(seed_ws, repo)
    try:
        metawriter = Cmf(filepath="mlmd", pipeline_name="test_pipeline")
        artifact: mlmd.proto.Artifact = metawriter.log_dataset(
            url="/repo/data.xml",
            event="input",
            custom_properties={"source":"kaggle"},
            label="artifacts/labels.csv",
            label_properties={"user":"Ron"}
        )
    finally:
        os.unlink(repo)
    assert artifact.name.startswith("/repo/data.xml:") and (seed_ws / "data.xml.dvc").is_file()
