"""Start-up stays fast: ``import cmflib.cmf`` and ``cmf --help`` load none of the heavy libraries that only some
commands need (pandas for tables, DVC, the server's FastAPI).  Checked by what a fresh interpreter has loaded, not
by timing, which is for benchmarks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "pyarrow", "dvc", "fastapi", "uvicorn")


def loaded_after(code: str) -> list:
    """The HEAVY modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
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
