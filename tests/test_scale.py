"""Scale, CI-sized: a directory of 20,000 small files logged, pushed to a local store and pulled into a
fresh clone, as real processes, with the peak memory of each (the benchmark is bench/scale.py).

Each step runs through a small Python launcher that reports the peak resident set of the biggest process
it waited for (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).  Not from this process: Linux keeps a process's
high-water mark across ``execve``, so a child forked by pytest would start from pytest's own size.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from tests.conftest import CMF, clone_workspace

FILES = 20_000
PER_FOLDER = 200
MAX_RSS_MB = 300
DVC = os.path.join(os.path.dirname(sys.executable), "dvc")

LAUNCHER = """\
import resource, subprocess, sys
done = subprocess.run(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(done.returncode)
"""
LOG = """\
from cmflib import cmf
c = cmf.Cmf(filepath="mlmd", pipeline_name="P")
c.create_context("s")
c.create_execution("e")
c.log_dataset("data", "input")
c.finalize()
"""


def measured(argv: List[str], cwd: Path) -> Tuple[subprocess.CompletedProcess, float]:
    """Run ``argv`` in ``cwd`` through the launcher: its outcome and its peak RSS in MB."""
    report = cwd.parent / f".maxrss-{os.getpid()}"
    done = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    peak = int(report.read_text()) / 1024
    report.unlink()
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done, peak


def tree(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_20000_files_log_push_pull_with_bounded_memory(workspace, tmp_path):
    data = workspace / "data"
    for i in range(FILES):
        if i % PER_FOLDER == 0:
            folder = data / f"d{i // PER_FOLDER:03d}"
            folder.mkdir(parents=True)
        (folder / f"f{i:05d}.txt").write_bytes(b"%d %s\n" % (i, os.urandom(8).hex().encode()))
    peaks: Dict[str, float] = {}

    _, peaks["log"] = measured([sys.executable, "-c", LOG], workspace)
    pushed, peaks["push"] = measured([CMF, "artifact", "push", "-p", "P", "--json"], workspace)
    first = json.loads(pushed.stdout)
    assert first["ok"] and first["moved"] >= FILES + 1, first  # every file and the .dir manifest
    again, peaks["no-op push"] = measured([CMF, "artifact", "push", "-p", "P", "--json"], workspace)
    noop = json.loads(again.stdout)
    assert noop["ok"] and noop["moved"] == 0 and noop["bytes"] == 0, noop
    assert noop["skipped"] == first["moved"] + first["skipped"], noop

    clone = clone_workspace(workspace, tmp_path / "clone")
    assert not (clone / "data").exists()
    pulled, peaks["pull"] = measured([CMF, "artifact", "pull", "-p", "P", "--json"], clone)
    outcome = json.loads(pulled.stdout)
    assert outcome["ok"] and outcome["moved"] >= FILES, outcome
    original, copy = tree(data), tree(clone / "data")
    assert len(copy) == FILES and copy == original, "the pulled tree differs from the logged one"

    for argv in ([DVC, "status", "--json"], [DVC, "status", "-c", "--json"]):
        status = subprocess.run(argv, cwd=clone, capture_output=True, text=True, timeout=240)
        assert status.returncode == 0 and json.loads(status.stdout) == {}, \
            f"{' '.join(argv[1:])} after cmf's pull:\n{status.stdout}\n{status.stderr}"

    over = {step: round(mb) for step, mb in peaks.items() if mb >= MAX_RSS_MB}
    assert not over, f"peak RSS over {MAX_RSS_MB} MB: {over} (all: { {k: round(v) for k, v in peaks.items()} })"
