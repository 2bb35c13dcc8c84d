"""The transfer engine beyond the conformance kit: hostile input, retries, selection, DVC interop, the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cmf_core import api, config, plugins, transfer
from cmf_core.errors import CmfError
from cmf_core.hookspecs import ObjectStore
from cmf_core.testing.faults import Fault, FaultyStore
from cmflib import cmf as cmflib_cmf
from cmflib.cmf import Cmf
from tests.conftest import write


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(transfer, "BACKOFF", 0.001)


@pytest.fixture
def logged(workspace) -> Path:
    """A pipeline with a file and a nested directory, logged and committed."""
    write(workspace / "data" / "a.csv", "a\n")
    write(workspace / "data" / "dir" / "x.txt", "x\n")
    write(workspace / "data" / "dir" / "sub" / "y.txt", "y\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.create_context("s")
    cmf.create_execution("E")
    cmf.log_dataset("data/a.csv", "output")
    cmf.log_dataset("data/dir", "output")
    cmf.log_execution_metrics("m", {"acc": 1.0})
    cmf.finalize()
    return workspace


def store_of(ws: Path) -> ObjectStore:
    return plugins.open_store(config.load(ws).remote)


def test_transient_errors_are_retried_and_permanent_ones_fail_fast(logged):
    flaky = FaultyStore(store_of(logged), Fault.fail_first(2, ops="put"))
    result = api.artifact_push("p", store=flaky, jobs=1)
    assert result.ok and result.moved == 5 and flaky.count("put") == 7  # 5 objects + 2 retried attempts

    shutil.rmtree(logged / "data")
    shutil.rmtree(logged / ".dvc" / "cache")
    denied = FaultyStore(store_of(logged), Fault.fail_first(None, permanent=True, ops="get"))
    result = api.artifact_pull("p", store=denied, jobs=1)
    assert not result.ok and denied.count("get") == 2  # the .dir manifest and a.csv: each tried once, not retried
    assert any("permanent failure" in error for _, error in result.failed)


def test_pull_places_verified_files_and_fills_the_cache(logged):
    assert api.artifact_push("p").ok
    shutil.rmtree(logged / "data")
    shutil.rmtree(logged / ".dvc" / "cache")
    result = api.artifact_pull("p")
    assert result.ok and result.moved == 3 and result.skipped == 1  # the environment file is still in place
    assert (logged / "data" / "dir" / "sub" / "y.txt").read_text() == "y\n"
    status = subprocess.run(["dvc", "status"], cwd=logged, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status
    before = (logged / "data" / "a.csv").stat().st_mtime_ns
    again = api.artifact_pull("p")
    assert again.ok and again.moved == 0 and (logged / "data" / "a.csv").stat().st_mtime_ns == before
    assert not list(logged.rglob(f"*{transfer.PARTIAL}"))


def test_corrupt_cache_object_is_replaced_from_the_remote(logged):
    assert api.artifact_push("p").ok
    md5 = hashlib.md5(b"a\n").hexdigest()
    cached = logged / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    os.chmod(cached, 0o644)
    cached.write_text("garbage")
    (logged / "data" / "a.csv").unlink()
    assert api.artifact_pull("p", artifact="a.csv").ok
    assert (logged / "data" / "a.csv").read_text() == "a\n" and cached.read_text() == "a\n"


def test_push_needs_local_copies_only_of_what_the_remote_lacks(logged):
    """A re-push after the data and the DVC cache were cleaned up (a common way to free a disk) finds
    everything on the remote: nothing fails, nothing is read."""
    assert api.artifact_push("p").ok
    shutil.rmtree(logged / "data")
    shutil.rmtree(logged / ".dvc" / "cache")
    again = api.artifact_push("p")
    # a.csv, the environment file and the directory, whose manifest on the remote stands for its files
    assert again.ok and again.moved == 0 and again.skipped == 3


def test_a_directory_with_a_file_nowhere_to_be_read_is_not_published(logged):
    y = hashlib.md5(b"y\n").hexdigest()
    cached = logged / ".dvc" / "cache" / "files" / "md5" / y[:2] / y[2:]
    os.chmod(cached, 0o644)
    cached.unlink()
    write(logged / "data" / "dir" / "sub" / "y.txt", "edited since it was logged\n")
    for dry_run in (True, False):
        result = api.artifact_push("p", dry_run=dry_run)
        reasons = dict(result.failed)
        assert not result.ok and set(reasons) == {"data/dir/sub/y.txt", next(n for n in reasons if "data/dir:" in n)}
        assert "not on the remote, not in the DVC cache, and not in the workspace with that md5" \
            in reasons["data/dir/sub/y.txt"]
        assert "directory not published: 1 of its 2 files are missing" in next(
            reason for name, reason in reasons.items() if name.startswith("data/dir:"))
    store = store_of(logged)
    dir_md5 = next(a.md5 for a in transfer.select(str(logged / "mlmd"), "p")[0] if a.md5.endswith(".dir"))
    x = hashlib.md5(b"x\n").hexdigest()
    assert store.exists([layout_key(x), layout_key(dir_md5), layout_key(y)]) == {layout_key(x)}


def layout_key(md5: str) -> str:
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def test_artifact_paths_that_escape_the_workspace_are_refused(workspace, tmp_path):
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.log_dataset_with_version("../outside.txt", "0" * 32, "output")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, workspace / "link")
    cmf.log_dataset_with_version("link/inside.txt", "1" * 32, "output")
    result = api.artifact_pull("p")
    reasons = dict(result.failed)
    assert "climbs out" in reasons["../outside.txt:" + "0" * 32]
    assert "through a symlink" in reasons["link/inside.txt:" + "1" * 32]
    assert list(outside.iterdir()) == []


def test_selection_by_artifact_and_execution(logged):
    with pytest.raises(CmfError, match="no artifact named 'nope'"):
        api.artifact_push("p", artifact="nope")
    with pytest.raises(CmfError, match="pipeline 'q' is not in mlmd; it has: p"):
        api.artifact_push("q")
    only = api.artifact_push("p", artifact="a.csv")
    assert only.ok and only.moved == 1
    write(logged / "data" / "a.csv", "changed\n")
    cmf = Cmf(filepath="mlmd", pipeline_name="p")
    cmf.log_dataset("data/a.csv", "output")
    with pytest.raises(CmfError, match="matches several artifacts") as err:
        api.artifact_push("p", artifact="data/a.csv")
    assert str(err.value).count("data/a.csv:") == 2
    uuid = cmf.execution.properties["Execution_uuid"].string_value
    one = api.artifact_push("p", execution_uuid=uuid)
    assert one.ok and one.moved == 2  # the new a.csv version and that execution's environment file
    with pytest.raises(CmfError, match="no execution with uuid"):
        api.artifact_push("p", execution_uuid="nope")


def test_dvc_clone_pulls_what_cmf_pushed(logged, tmp_path):
    assert cmflib_cmf.artifact_push("p", "mlmd").ok
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(logged), str(clone)], check=True)
    subprocess.run(["dvc", "pull", "-q"], cwd=clone, check=True)
    assert (clone / "data" / "dir" / "sub" / "y.txt").read_text() == "y\n"
    assert (clone / "data" / "a.csv").read_text() == "a\n"


def test_cmf_pulls_what_dvc_pushed(logged):
    subprocess.run(["dvc", "push", "-q"], cwd=logged, check=True)
    shutil.rmtree(logged / "data")
    shutil.rmtree(logged / ".dvc" / "cache")
    result = cmflib_cmf.artifact_pull("p", "mlmd")
    assert result.ok and (logged / "data" / "dir" / "x.txt").read_text() == "x\n"
    single = cmflib_cmf.artifact_pull_single("p", "mlmd", "a.csv")
    assert single.ok and single.moved == 0


def test_cli_exit_status_and_failures_named(logged, cmf):
    pushed = cmf("artifact", "push", "-p", "p", "-a", "a.csv")
    assert pushed.code == 0 and "pushed 1 objects" in pushed.out
    shutil.rmtree(logged / "data")
    shutil.rmtree(logged / ".dvc" / "cache")
    pulled = cmf("artifact", "pull", "-p", "p", "--json")
    data = json.loads(pulled.out)
    assert pulled.code == 1 and not data["ok"] and data["moved"] == 1
    assert any(f["what"].startswith("data/dir:") for f in data["failed"])
    assert "cmf: error: data/dir:" in pulled.err
    dry = cmf("artifact", "push", "-p", "p", "--dry-run")
    assert dry.code == 1  # the deleted dir is not in the cache: named, not silently skipped


def test_a_remote_that_went_down_fails_the_rest_fast_and_says_so_once(workspace, cmf, monkeypatch):
    """After GIVE_UP_IN_A_ROW objects in a row exhausted their retries, the others are not tried (a pull of
    thousands of files must not retry each against a dead server for hours), and the CLI counts them."""
    for i in range(12):
        write(workspace / "data" / f"f{i:02d}.txt", f"file {i}\n")
    logger = Cmf(filepath="mlmd", pipeline_name="p")
    logger.create_execution("E")
    for i in range(12):
        logger.log_dataset(f"data/f{i:02d}.txt", "output")
    logger.finalize()
    assert api.artifact_push("p").ok
    shutil.rmtree(workspace / "data")
    shutil.rmtree(workspace / ".dvc" / "cache")
    open_store = plugins.open_store
    stores = []

    def dead(remote, loaded=None):
        stores.append(FaultyStore(open_store(remote, loaded), Fault.drop(None, ops="get")))
        return stores[-1]

    monkeypatch.setattr(plugins, "open_store", dead)
    done = cmf("artifact", "pull", "-p", "p", "-j", "1")
    assert done.code == 1
    assert stores[0].count("get") == transfer.GIVE_UP_IN_A_ROW * transfer.RETRIES, "the rest were never tried"
    lines = done.err.splitlines()
    assert sum("gave up after" in line and "not tried" not in line for line in lines) == transfer.GIVE_UP_IN_A_ROW
    assert sum("not tried" in line for line in lines) == 6, "5 listed, then one line counting the others"
    assert lines[-1].startswith("cmf: error: and 4 more objects: not tried: 3 objects in a row failed")
    assert "12 failed" in done.out and not [p for p in (workspace / "data").rglob("*") if p.is_file()]


def test_hashing_writer_hashes_big_streams_in_a_thread_and_stops_it(tmp_path):
    """Past its inline part the md5 is computed by a thread while bytes still arrive; the digest is the
    same, the files get every byte, and the thread ends with the digest, or when a failed stream closes it."""
    import threading

    data = os.urandom(transfer.HashingWriter.INLINE + 3 * (1 << 20) + 12345)
    with open(tmp_path / "out", "wb") as out:
        writer = transfer.HashingWriter([out.fileno()], lambda n: None)
        for start in range(0, len(data), 700_001):  # chunks that straddle the inline limit
            writer.write(data[start:start + 700_001])
        assert [t for t in threading.enumerate() if t.name == "cmf-md5"], "big streams are hashed by a thread"
        assert writer.hexdigest() == hashlib.md5(data).hexdigest()
    assert (tmp_path / "out").read_bytes() == data
    assert not [t for t in threading.enumerate() if t.name == "cmf-md5"]
    broken = transfer.HashingWriter([], lambda n: None)
    broken.write(data)
    broken.close()  # what the engine does when a download fails half-way
    assert not [t for t in threading.enumerate() if t.name == "cmf-md5"]
