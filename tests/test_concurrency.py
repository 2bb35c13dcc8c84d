"""Several real processes at once: logging into one mlmd file, pushing to one remote, pulling into one workspace.

Each process waits for a "go" file before it starts work, so that they really run at the same time.

* Logging: every ``Cmf`` method that writes holds the mlmd file's write lock (``flock`` on ``<mlmd>.lock``,
  :func:`cmf_core.metadata.store.write_lock`) for the whole unit, git staging included.  Afterwards every
  record of every process is there once, the pipeline and stage exist once, a dataset logged by all of them
  is one artifact, the file passes ``PRAGMA integrity_check``, and every ``.dvc`` file is committed.
* Pushing: the remote is content-addressed and every backend writes an object whole (temp name, then
  rename, or a single S3 PUT), so concurrent pushes of the same or overlapping data need no lock on the
  remote: all succeed, and the remote holds each object once, with the right bytes and nothing else.
* Pulling into one workspace: files are downloaded to temp files with fixed names beside them, so pushes
  and pulls through one workspace's cache hold its transfer lock (:func:`cmf_core.transfer.lock`) and run
  one after the other; the second pull then finds every file in place.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from cmf_core import api, config, layout, plugins
from cmf_core.metadata import store as records
from cmf_core.testing import PIPELINE, BackendConformance, Dataset
from cmf_core.testing.faults import FaultyStore
from cmf_core.testing.servers import S3Server
from cmf_core.transfer import TransferResult
from cmflib.cmf import Cmf

# after its imports, a process says it is ready (``<go>.<pid>``) and waits for the file ``<go>``
READY_THEN_WAIT = """
import os, pathlib, sys, time
pathlib.Path(f"{sys.argv[1]}.{os.getpid()}").touch()
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.005)
"""

LOGGER = "from pathlib import Path\nfrom cmflib.cmf import Cmf\n" + READY_THEN_WAIT + """
who, runs = sys.argv[2], int(sys.argv[3])
for run in range(runs):
    cmf = Cmf(filepath="mlmd", pipeline_name="shared")
    cmf.create_context(pipeline_stage="train")
    cmf.create_execution(execution_type="Train", custom_properties={"who": who, "run": run})
    own = Path("data", who, f"{run}.txt")
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(f"{who} {run}\\n")
    cmf.log_dataset(str(own), "output")
    cmf.log_dataset("data/shared.csv", "input")
    cmf.log_execution_metrics("score", {"who": who, "run": run})
    cmf.finalize()
"""

CMF = "from cmf_core.cli import main\n" + READY_THEN_WAIT + "sys.exit(main(sys.argv[2:]))\n"


def at_once(script: str, runs: Sequence[Sequence[str]], cwds: Sequence[Path], go: Path) -> List[subprocess.CompletedProcess]:
    """Run ``python -c script go *args`` for each entry of ``runs`` (in the matching ``cwds``), all starting
    their work at the same moment, once every one has imported what it needs."""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(go), *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args, cwd in zip(runs, cwds)]
    deadline = time.monotonic() + 60
    while len(list(go.parent.glob(f"{go.name}.*"))) < len(procs) and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            break  # one died before it was ready: its output says why
        time.sleep(0.01)
    go.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        outcomes.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return outcomes


def init(ws: Path, tmp_path: Path, repo_type: str, options: Dict[str, object]) -> Path:
    ws.mkdir()
    api.init(repo_type, options, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)
    return ws


# -- logging into one mlmd file ----------------------------------------------------------------------------


def test_processes_logging_into_one_mlmd_file_lose_nothing(workspace, tmp_path, record_property):
    writers, runs = ("A", "B"), 12
    (workspace / "data").mkdir()
    (workspace / "data" / "shared.csv").write_text("x,y\n1,2\n")
    done = at_once(LOGGER, [(who, str(runs)) for who in writers], [workspace] * len(writers), tmp_path / "go")
    assert [p.returncode for p in done] == [0] * len(writers), [p.stderr[-2000:] for p in done]

    with sqlite3.connect(workspace / "mlmd") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = records.open_store(workspace / "mlmd", create=False)
    expected = sorted((who, run) for who in writers for run in range(runs))
    logged = sorted((e.custom_properties["who"].string_value, e.custom_properties["run"].int_value)
                    for e in store.get_executions())
    record_property("records_expected", len(expected))
    record_property("records_lost", len(set(expected) - set(logged)))
    assert logged == expected, "an execution was lost or written twice"
    assert [c.name for c in store.get_contexts()] == ["shared", "shared/train"], "a context was created twice"
    stage = store.get_context_by_type_and_name(records.STAGE_CONTEXT, "shared/train")
    assert len(store.get_executions_by_context(stage.id)) == len(expected)
    datasets = sorted(a.name.split(":")[0] for a in store.get_artifacts_by_type("Dataset"))
    assert datasets == sorted(["data/shared.csv"] + [f"data/{who}/{run}.txt" for who, run in expected])
    shared = store.get_artifacts_by_uri(layout.file_md5(workspace / "data" / "shared.csv"))
    assert len(shared) == 1 and len(store.get_events_by_artifact_ids([shared[0].id])) == len(expected)
    assert len(store.get_artifacts_by_type("Metrics")) == len(expected)

    committed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "data"], cwd=workspace,
                               capture_output=True, text=True, check=True).stdout.split()
    assert {f"data/{who}/{run}.txt.dvc" for who, run in expected} <= set(committed), "a .dvc file is not committed"
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=workspace, capture_output=True,
                            text=True, check=True).stdout
    assert staged == "", "a .dvc file is left staged"


HOLD_LOCK = """
import fcntl, os, pathlib, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
pathlib.Path(sys.argv[2]).touch()
time.sleep(1)
"""


def test_a_write_waits_while_another_process_holds_the_mlmd_lock(workspace, tmp_path):
    """The lock is a plain ``flock`` on ``<mlmd>.lock``: any tool can hold it, e.g. to copy the file consistently."""
    (workspace / "data.csv").write_text("a\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="locked")
    cmf.create_context("stage")
    cmf.create_execution("Run")
    held = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workspace / "mlmd.lock"), str(held)])
    try:
        while not held.exists():
            assert holder.poll() is None, "the lock holder died"
            time.sleep(0.005)
        started = time.monotonic()
        cmf.log_dataset("data.csv", "input")
        waited = time.monotonic() - started
        assert holder.poll() is not None, "the write went ahead while another process held the lock"
    finally:
        holder.wait(timeout=10)
    assert waited > 0.5
    assert [a.name.split(":")[0] for a in cmf.store.get_artifacts_by_type("Dataset")] == ["data.csv"]


# -- pushing to one remote, pulling into one workspace -----------------------------------------------------


@pytest.fixture(params=["local", "minioS3"])
def remote(request, tmp_path):
    """``(repo_type, cmf init options, directory of the objects on disk)`` of a fresh, shared remote."""
    if request.param == "local":
        return "local", {"path": str(tmp_path / "store")}, tmp_path / "store"
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return "minioS3", {"url": f"s3://{bucket}/pre", "endpoint_url": server.endpoint,
                       "access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY}, \
        server.root / bucket / "pre"


def logged(ws: Path, own: str) -> Dataset:
    """A folder that every workspace shares byte for byte, and one of its own, logged in ``ws``."""
    files = {f"shared/part {i}.bin": hashlib.sha512(f"shared {i}".encode()).digest() * 2000 for i in range(12)}
    files.update({f"{own}/part {i}.bin": hashlib.sha512(f"{own} {i}".encode()).digest() * 2000 for i in range(4)})
    ds = Dataset.write(ws, files, ["shared", own])
    return ds.log(mlmd=str(ws / "mlmd"))


def test_concurrent_pushes_to_one_remote_store_every_object_once(tmp_path, remote, record_property):
    repo_type, options, on_disk = remote
    one = init(tmp_path / "one", tmp_path, repo_type, options)
    two = init(tmp_path / "two", tmp_path, repo_type, options)
    expected = set(logged(one, "mine").all_keys) | set(logged(two, "yours").all_keys)
    push = ("artifact", "push", "-p", PIPELINE)
    pushed = at_once(CMF, [push] * 3, [one, one, two], tmp_path / "go")  # the same data twice, and overlapping
    assert [p.returncode for p in pushed] == [0, 0, 0], [p.stderr for p in pushed]
    stored = {p.relative_to(on_disk).as_posix(): p.read_bytes() for p in on_disk.rglob("*") if p.is_file()}
    record_property("objects_lost", len(expected - set(stored)))
    assert sorted(stored) == sorted(expected), "an object is missing, or a temp or duplicate object is visible"
    for key, data in stored.items():
        md5 = layout.manifest_md5(data) if key.endswith(".dir") else hashlib.md5(data).hexdigest()
        assert layout.key(md5) == key, f"{key} does not hold its bytes"


def test_concurrent_pulls_into_one_workspace_place_every_file(tmp_path, monkeypatch):
    """Two pulls into one workspace, each downloading every object at the same moment as the other.

    Real processes collide only sometimes; here two threads, each with its own engine and store (the
    engine keeps no state between runs, so they are two pulls), meet before every download: the worst
    interleaving, every time."""
    ws = init(tmp_path / "ws", tmp_path, "local", {"path": str(tmp_path / "store")})
    ds = logged(ws, "mine")
    monkeypatch.chdir(ws)
    assert api.artifact_push(PIPELINE).ok
    ds.forget()
    meetings: Dict[str, threading.Barrier] = defaultdict(lambda: threading.Barrier(2, timeout=2))
    lock, apart = threading.Lock(), threading.Event()

    def meet(key: str, dst: object) -> None:
        """Wait for the other pull to start downloading ``key`` too (unless it stopped meeting: it failed)."""
        with lock:
            barrier = meetings[key]
        if not apart.is_set():
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                apart.set()

    def pull() -> TransferResult:
        inner = plugins.open_store(config.load(ws).remote)
        try:
            return api.artifact_pull(PIPELINE, jobs=1, store=FaultyStore(inner, before_get=meet))
        finally:
            inner.close()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: pull(), range(2)))
    assert all(result.ok for result in results), [result.failed for result in results]
    first, second = sorted(results, key=lambda result: -result.moved)
    assert first.moved and not second.moved and second.skipped, "one pulled, the other waited and found all in place"
    ds.assert_in_place()
    BackendConformance.assert_no_partial_files(ws)


def test_a_writer_keeps_logging_into_an_mlmd_file_that_a_metadata_pull_replaced(tmp_path, monkeypatch):
    """``cmf metadata pull`` renames a merged copy over the mlmd file (under its write lock); a ``Cmf`` opened
    before goes on logging into the new file, not into the replaced one, where its records would be lost."""
    ws = init(tmp_path / "ws", tmp_path, "local", {"path": str(tmp_path / "store")})
    monkeypatch.chdir(ws)
    writer = Cmf(filepath="mlmd", pipeline_name="shared")
    writer.create_context(pipeline_stage="train")
    writer.create_execution(execution_type="Before")
    with records.write_lock("mlmd"):  # what the pull does: a merged copy, renamed over the file
        shutil.copyfile("mlmd", ".mlmd.pull")
        os.replace(".mlmd.pull", "mlmd")
    writer.create_execution(execution_type="After")
    store = records.open_store("mlmd", create=False)
    assert sorted(t.name for t in store.get_execution_types()) == ["After", "Before"]
    assert len(store.get_executions()) == 2 and len(store.get_contexts()) == 2, "the ids carried over"
