"""Runs of many objects shared with forked processes (:mod:`cmf_core.fanout`): the same results as one
process, failures named whichever process met them, a worker killed mid-run fails only what it had
not reported, and a rerun completes."""
from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from cmf_core import api, fanout, plugins, transfer
from cmf_core.errors import BackendError
from cmf_core.testing.conformance import Dataset

FILES = 60


@pytest.fixture
def dataset(workspace, monkeypatch) -> Dataset:
    """A directory of FILES small files and a single file, logged and pushed by two processes."""
    monkeypatch.setattr(fanout, "MIN_OBJECTS", 20)
    monkeypatch.setattr(fanout, "cpus", lambda: 1)  # two processes per CPU
    monkeypatch.setattr(transfer, "BACKOFF", 0.001)
    files = {f"tree/d{i % 7}/f{i:03d}.bin": os.urandom(500 + i) for i in range(FILES)}
    files["model.bin"] = os.urandom(3000)
    ds = Dataset.write(workspace, files, ["tree", "model.bin"]).log(pipeline="p")
    pushed = api.artifact_push("p", jobs=4)
    assert pushed.ok and pushed.processes == 2, pushed.failed
    return ds


def store_dir(ws: Path) -> Path:
    return ws.parent / "store"


def test_a_shared_pull_places_every_file_verified_and_fills_the_cache(dataset, workspace):
    dataset.forget()
    result = api.artifact_pull("p", jobs=4)
    assert result.ok and result.processes == 2, result.failed
    assert result.moved + result.skipped == dataset.pull_objects and result.bytes > 0
    dataset.assert_in_place()
    assert not list(workspace.rglob(f"*{transfer.PARTIAL}"))


def test_failures_are_named_whichever_process_met_them(dataset, workspace):
    missing = sorted(dataset.files_under(["tree"]))[:6]  # whichever process each is dealt to
    for rel in missing:
        key = next(k for k in dataset.data_keys if os.path.basename(k) == _md5_tail(dataset, rel))
        (store_dir(workspace) / key).unlink()
    dataset.forget()
    result = api.artifact_pull("p", jobs=4)
    assert not result.ok and result.processes == 2
    assert sorted(name for name, _ in result.failed) == missing
    assert all("not on the remote" in error for _, error in result.failed)


def test_a_worker_killed_mid_pull_fails_what_it_had_not_reported_and_a_rerun_completes(dataset, workspace,
                                                                                        monkeypatch):
    parent, get = os.getpid(), transfer.Engine._get
    done = []

    def dies_after_five(self, obj, progress):
        if os.getpid() != parent and len(done) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        done.append(obj)
        return get(self, obj, progress)

    monkeypatch.setattr(transfer.Engine, "_get", dies_after_five)
    dataset.forget()
    result = api.artifact_pull("p", jobs=2)
    assert not result.ok and result.processes == 2
    died = [error for _, error in result.failed]
    assert died and all("was killed by signal 9 before reporting it" in error for error in died), died
    assert result.moved + result.skipped + len(died) == dataset.pull_objects

    monkeypatch.setattr(transfer.Engine, "_get", get)
    again = api.artifact_pull("p", jobs=2)  # files placed but not yet reported when it died are skipped
    assert again.ok and 0 < again.moved <= len(died), again.failed
    dataset.assert_in_place()
    assert not list(workspace.rglob(f"*{transfer.PARTIAL}"))


def test_a_worker_that_cannot_open_the_remote_fails_its_share_by_name(dataset, monkeypatch):
    parent, open_store = os.getpid(), plugins.open_store

    def refused_in_a_child(*args, **kwargs):
        if os.getpid() != parent:
            raise BackendError("cannot reach the remote (refused)")
        return open_store(*args, **kwargs)

    monkeypatch.setattr(plugins, "open_store", refused_in_a_child)
    dataset.forget()
    result = api.artifact_pull("p", jobs=2)
    assert not result.ok and result.processes == 2 and result.moved > 0
    assert {error for _, error in result.failed} == {"cannot reach the remote (refused)"}
    assert result.moved + result.skipped + len(result.failed) == dataset.pull_objects


def test_ctrl_c_in_the_caller_stops_the_workers_leaves_no_temp_file_and_a_rerun_completes(dataset, workspace,
                                                                                          monkeypatch):
    parent, get = os.getpid(), transfer.Engine._get
    helpers = []
    monkeypatch.setattr(fanout, "Helper", _Recorded.with_list(helpers))

    mine = []

    def interrupted(self, obj, progress):
        if os.getpid() == parent:
            mine.append(obj)
            if len(mine) == 5:  # the caller's fifth object: Ctrl-C, while the worker is busy with its share
                raise KeyboardInterrupt
        return get(self, obj, progress)

    monkeypatch.setattr(transfer.Engine, "_get", interrupted)
    dataset.forget()
    with pytest.raises(KeyboardInterrupt):
        api.artifact_pull("p", jobs=2)
    assert helpers and all(h.status is not None for h in helpers), "every worker process was waited for"
    assert not list(workspace.rglob(f"*{transfer.PARTIAL}"))
    monkeypatch.setattr(transfer.Engine, "_get", get)
    assert api.artifact_pull("p", jobs=2).ok
    dataset.assert_in_place()


class _Recorded(fanout.Helper):
    """A Helper that notes itself in a list, to look at it once the run is over."""

    made: list = []

    @classmethod
    def with_list(cls, made: list):
        return type("Recorded", (cls,), {"made": made})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(self)


def test_a_process_with_other_threads_does_not_fork(dataset):
    """``fork`` copies only the calling thread: a lock another thread held would stay locked in the child."""
    waiting = threading.Event()
    other = threading.Thread(target=waiting.wait)
    other.start()
    try:
        dataset.forget()
        result = api.artifact_pull("p", jobs=4)
    finally:
        waiting.set()
        other.join()
    assert result.ok and result.processes == 1
    dataset.assert_in_place()


def test_small_runs_and_one_job_stay_in_one_process(dataset, monkeypatch):
    dataset.forget()
    assert api.artifact_pull("p", jobs=1).processes == 1
    shutil.rmtree(dataset.root / "tree")
    monkeypatch.setattr(fanout, "MIN_OBJECTS", 1000)
    result = api.artifact_pull("p", jobs=4)
    assert result.ok and result.processes == 1 and result.moved == FILES


def _md5_tail(dataset: Dataset, rel: str) -> str:
    import hashlib

    return hashlib.md5(dataset.files[rel]).hexdigest()[2:]


def test_cpus_falls_back_to_the_machine_where_affinity_is_unknown(monkeypatch):
    """macOS has no sched_getaffinity: logging a directory (which hashes big files in one thread per CPU)
    must not fail there."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert fanout.cpus() == (os.cpu_count() or 1)
