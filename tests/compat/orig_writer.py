"""Log a small, deterministic pipeline with the ORIGINAL cmflib 0.1.0.

Usage (with the python of the venv built by ``original_env.sh``, ideally ``python -I``)::

    orig_writer.py WORKSPACE PIPELINE

The workspace is initialised the original way (``cmf init local --path WORKSPACE/../store
--git-remote-url ...`` through the original CLI) unless it already is, then two stages are
logged with ``cmflib.cmf.Cmf`` into ``WORKSPACE/mlmd``:

* ``prepare``: input dataset file ``artifacts/data.xml``, output dataset directory
  ``artifacts/prepared`` (two files in its subdirectory ``split``);
* ``train``: input ``artifacts/prepared``, output model ``artifacts/model/model.pkl``,
  execution metrics, three step metrics committed as ``training_loss`` and a dataslice
  ``slice-a`` made of the two files of ``artifacts/prepared/split``;

then ``finalize()`` is called.  Everything the original prints goes to stderr; stdout gets
exactly one JSON document: ``{"mlmd": ..., "pipeline": ..., "execution_ids": {...}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")

GIT_REMOTE_URL = "https://example.com/cmf-compat/experiment-repo.git"
"""Git remote given to ``cmf init``; the original stores it as ``git_repo`` properties."""

MLMD_FILE = "mlmd"
"""MLMD file name, relative to the workspace (also the git branch the original checks out)."""

FILES: dict[str, str] = {
    "artifacts/data.xml": "<rows>\n  <row id='1' label='a'/>\n  <row id='2' label='b'/>\n</rows>\n",
    "artifacts/prepared/split/train.csv": "id,label\n1,a\n",
    "artifacts/prepared/split/test.csv": "id,label\n2,b\n",
    "artifacts/model/model.pkl": "not really a pickle: deterministic model bytes v1\n",
}
"""Deterministic workspace data: relative path -> content."""

ENV_DEFAULTS: dict[str, str] = {
    "GIT_AUTHOR_NAME": "cmf-compat",
    "GIT_AUTHOR_EMAIL": "cmf-compat@example.com",
    "GIT_COMMITTER_NAME": "cmf-compat",
    "GIT_COMMITTER_EMAIL": "cmf-compat@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def prepare_environment() -> Path:
    """Set what the original's ``git``/``dvc``/``pip`` subprocesses need; return the venv bin dir.

    The venv's bin goes first on PATH (the original shells out to ``dvc``, ``git`` and
    ``pip freeze``).  ``sys.executable`` is deliberately not resolved: it is a symlink into
    the base interpreter, and the venv is its parent directory.
    """
    bin_dir = Path(sys.executable).parent
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["PATH"] = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    os.environ.pop("CONDA_PREFIX", None)  # else the original runs `conda list` for Environment
    return bin_dir


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything written to fd 1 (Python and child processes) to fd 2.

    Yields a text stream on the original stdout, for the one JSON result.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real_stdout = os.fdopen(saved, "w", closefd=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real_stdout
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        real_stdout.flush()
        real_stdout.close()


def is_initialised(workspace: Path) -> bool:
    """Whether ``cmf init`` already ran here (git repo, dvc repo and cmf config present)."""
    return all((workspace / name).exists() for name in (".git", ".dvc", ".cmfconfig"))


def cmf_init(workspace: Path, bin_dir: Path) -> None:
    """Run the original ``cmf init local`` CLI in ``workspace``; raise if it fails."""
    store = workspace.parent / "store"
    cmd = [str(bin_dir / "cmf"), "init", "local", "--path", str(store), "--git-remote-url", GIT_REMOTE_URL]
    proc = subprocess.run(cmd, cwd=workspace, stdout=sys.stderr, stderr=sys.stderr, timeout=300, check=False)
    if proc.returncode != 0 or not is_initialised(workspace):
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode})")


def write_data(workspace: Path) -> None:
    """Write the deterministic input files (idempotent)."""
    for rel, content in FILES.items():
        path = workspace / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _require(value: T | None, what: str) -> T:
    """Fail loudly where the original only logs an error and returns None."""
    if value is None:
        raise RuntimeError(f"the original cmflib failed to {what} (see its log above)")
    return value


def log_pipeline(pipeline: str) -> dict[str, int]:
    """Log the two stages with the original ``Cmf``; return execution ids by stage.

    Must run with cwd = workspace: the original resolves artifact paths relative to it.
    """
    from cmflib.cmf import Cmf  # imported late: the class body reads ./.cmfconfig

    cmf = Cmf(filepath=MLMD_FILE, pipeline_name=pipeline, custom_properties={"owner": "compat"})

    cmf.create_context(pipeline_stage="prepare", custom_properties={"user-metadata1": "metadata_value"})
    prepare = cmf.create_execution(
        execution_type="Prepare",
        custom_properties={"seed": 42, "split": 0.2, "mode": "fast"},
        cmd="python src/prepare.py",
    )
    _require(cmf.log_dataset("artifacts/data.xml", "input", custom_properties={"source": "synthetic"}), "log data.xml")
    _require(cmf.log_dataset("artifacts/prepared", "output"), "log prepared (output)")

    cmf.create_context(pipeline_stage="train")
    train = cmf.create_execution(
        execution_type="Train", custom_properties={"n_estimators": 10}, cmd="python src/train.py"
    )
    _require(cmf.log_dataset("artifacts/prepared", "input"), "log prepared (input)")
    model = cmf.log_model(
        "artifacts/model/model.pkl",
        "output",
        model_framework="SKlearn",
        model_type="RandomForestClassifier",
        model_name="RandomForestClassifier:default",
    )
    _require(model, "log the model")
    _require(cmf.log_execution_metrics("training_metrics", {"auc": 0.9, "epochs": 3, "name": "rf"}), "log metrics")
    for step in (1, 2, 3):
        cmf.log_metric("training_loss", {"loss": round(1.0 / step, 4), "step": step})
    _require(cmf.commit_metrics("training_loss"), "commit step metrics")
    dataslice = cmf.create_dataslice("slice-a")
    dataslice.add_data("artifacts/prepared/split/train.csv", {"split": "train"})
    dataslice.add_data("artifacts/prepared/split/test.csv", {"split": "test"})
    _require(dataslice.commit(), "commit the dataslice")
    cmf.finalize()
    return {"prepare": int(prepare.id), "train": int(train.id)}


def main(argv: list[str]) -> int:
    """Entry point: ``orig_writer.py WORKSPACE PIPELINE``."""
    if len(argv) != 2:
        print("usage: orig_writer.py WORKSPACE PIPELINE", file=sys.stderr)
        return 2
    workspace = Path(argv[0]).resolve()
    pipeline = argv[1]
    workspace.mkdir(parents=True, exist_ok=True)
    os.chdir(workspace)
    bin_dir = prepare_environment()
    with stdout_to_stderr() as out:
        if not is_initialised(workspace):
            cmf_init(workspace, bin_dir)
        write_data(workspace)
        execution_ids = log_pipeline(pipeline)
        mlmd = workspace / MLMD_FILE
        if not mlmd.is_file():
            raise RuntimeError(f"the original wrote no {mlmd}")
        out.write(json.dumps({"mlmd": str(mlmd), "pipeline": pipeline, "execution_ids": execution_ids}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
