"""Start-up stays fast: ``import cmflib.cmf``, ``cmf --help``, ``cmf artifact list``, a no-op ``cmf artifact pull``
and logging a dataset load none of the heavy libraries that only some commands need (pandas for DataFrames, DVC,
the server's FastAPI).  Checked by what a fresh interpreter has loaded after running the real command, not by
timing, which is bench/startup.py's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

HEAVY = ("pandas", "pyarrow", "dvc", "fastapi", "uvicorn")


def loaded_after(code: str, cwd: Optional[Path] = None) -> List[str]:
    """The HEAVY modules a fresh interpreter has loaded after running ``code`` (in ``cwd``)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_cmflib_cmf_loads_no_heavy_library():
    assert loaded_after("import cmflib.cmf") == []


@pytest.mark.parametrize("args", [["--help"], ["artifact", "--help"], ["metadata", "push", "--help"]])
def test_cmf_help_loads_no_heavy_library(args):
    code = ("import sys, contextlib, io\n"
            f"sys.argv = ['cmf', *{args!r}]\n"
            "from cmf_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main()\n    except SystemExit:\n        pass")
    assert loaded_after(code) == []


@pytest.fixture
def pushed(workspace) -> Path:
    """A workspace with pipeline "p" of two small datasets with different custom properties, logged and pushed:
    a pull has nothing to do."""
    from cmf_core import api
    from cmflib import cmf

    metawriter = cmf.Cmf(filepath="mlmd", pipeline_name="p")
    metawriter.create_context(pipeline_stage="s")
    metawriter.create_execution(execution_type="e")
    for name, event, properties in (("a.txt", "input", {"n": 1, "ratio": 0.25}),
                                    ("b.txt", "output", {"label": "x"})):
        (workspace / name).write_text(name)
        metawriter.log_dataset(name, event, custom_properties=properties)
    assert api.artifact_push("p").ok
    return workspace


@pytest.mark.parametrize("args", [["artifact", "list", "-p", "p"], ["artifact", "pull", "-p", "p"]])
def test_listing_artifacts_and_a_noop_pull_load_no_heavy_library(pushed, args):
    """The real command, run to its end: listing needs no DataFrame, and neither reads the DVC config with DVC."""
    code = f"from cmf_core.cli import main\nassert main({args!r}) == 0"
    assert loaded_after(code, cwd=pushed) == []


def test_the_listing_without_pandas_has_the_rows_the_dataframe_has(pushed):
    """Every column in every row, None where an artifact lacks a property, as pandas' JSON has them."""
    from cmf_core.metadata.query import CmfQuery

    query = CmfQuery("mlmd")
    rows = query.artifact_rows("p")
    assert rows == json.loads(query.get_all_artifacts_by_context("p").to_json(orient="records"))
    assert [(r["custom_properties_n"], r["custom_properties_ratio"], r["custom_properties_label"])
            for r in rows if r["type"] == "Dataset"] == [(1, 0.25, None), (None, None, "x")]
    assert query.artifact_rows("nope") == []


def test_logging_a_dataset_loads_no_heavy_library(workspace):
    (workspace / "a.txt").write_text("a")
    code = ("from cmflib import cmf\n"
            "metawriter = cmf.Cmf(filepath='mlmd', pipeline_name='p')\n"
            "metawriter.create_context(pipeline_stage='s')\n"
            "metawriter.create_execution(execution_type='e')\n"
            "metawriter.log_dataset('a.txt', 'input')\n"
            "metawriter.finalize()")
    assert loaded_after(code, cwd=workspace) == []


def test_a_data_slice_still_writes_and_reads_its_table(workspace):
    """pandas comes in when a table is written or read (here: a data slice), and the table is right."""
    from cmflib import cmf

    metawriter = cmf.Cmf(filepath=str(workspace / "mlmd"), pipeline_name="p")
    metawriter.create_context(pipeline_stage="s")
    metawriter.create_execution(execution_type="e")
    data = workspace / "slice.txt"
    data.write_text("x")
    dataslice = metawriter.create_dataslice("slice1")
    dataslice.add_data(str(data), {"label": 1})
    dataslice.commit()
    frame = metawriter.read_dataslice("slice1")
    assert list(frame.index.names) == ["Path"] and frame["label"].tolist() == [1]
