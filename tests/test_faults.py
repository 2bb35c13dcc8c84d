"""Real faults: the S3 server (``rclone serve s3``) and sshd killed with SIGKILL in the middle of a push or a
pull, restarted on the same port and data, then the same command run again.

What a user relies on: the interrupted run fails naming the server, leaves no half-written file in the
workspace or cache and no partial or duplicate object on the remote; the rerun moves only what is missing
and every object ends up present once with the right md5.  (``tests/test_minio_backend.py`` already stops
the minioS3 server with SIGTERM in the middle of a pull; here it is SIGKILL, for pushes and for the other
backends.)  Injected faults, for every backend, are in the conformance kit (``cmf_core.testing.faults``);
below are the wrapper's own guarantees and the one fault the kit cannot check remotely: a corrupted upload.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

import pytest

from cmf_core import api, config, layout, plugins, transfer
from cmf_core.errors import BackendError, ObjectNotFound, TransientError
from cmf_core.hookspecs import ObjectStore
from cmf_core.testing import PIPELINE, BackendConformance, Dataset, Sink
from cmf_core.testing.faults import Fault, FaultyStore
from cmf_core.testing.servers import S3Server, Server
from cmf_core.transfer import TransferResult

SSH_READY = os.geteuid() == 0 and os.path.exists("/usr/sbin/sshd")


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (read from /proc: sshd serves each connection from a child in its own session)."""
    children: Dict[int, List[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill(server: Server) -> None:
    """SIGKILL the server and every process it started, by PID: connections die mid-transfer."""
    for pid in [server.proc.pid, *descendants(server.proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(timeout=10)


@dataclass
class Target:
    """A remote on a server of this module: its ``cmf init`` options and the directory its objects are in."""

    type: str
    server: Server
    options: Dict[str, object]
    root: Path

    def objects(self) -> Dict[str, bytes]:
        """Every file under the remote's directory on the server's disk, by key."""
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in self.root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    """An S3 server of this module's own: tests here kill it, which must not disturb the session's server."""
    with S3Server(tmp_path_factory.mktemp("s3-killed")) as server:
        yield server


@pytest.fixture(scope="module")
def sshd() -> Iterator[Server]:
    """An sshd of this module's own (tests here kill it), removed with its directory at the end."""
    if not SSH_READY:
        pytest.skip("needs root and openssh-server to run a test sshd")
    from cmf_core.testing.sshd import SSHServer

    with SSHServer() as server:
        yield server


@pytest.fixture
def target(request, tmp_path) -> Target:
    """A fresh remote of the backend type ``request.param`` on this module's server."""
    kind = request.param
    if kind == "sshremote":
        server = request.getfixturevalue("sshd")
        folder = server.remote_dir()
        return Target(kind, server, {"path": f"ssh://127.0.0.1:{server.port}{folder}", "user": server.user,
                                     "key_file": str(server.client_key),
                                     "known_hosts": str(server.trust(tmp_path / "known_hosts"))}, Path(folder))
    server = request.getfixturevalue("s3")
    bucket = server.bucket(f"killed-{os.urandom(4).hex()}")
    options = {"url": f"s3://{bucket}/pre", "endpoint_url": server.endpoint,
               "access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY}
    if kind == "amazonS3":
        options["region"] = "us-east-1"
    return Target(kind, server, options, server.root / bucket / "pre")


def after_calls(count: int, action: Callable[[], None]) -> Callable[..., None]:
    """A ``before_*`` hook that runs ``action`` once, when call number ``count`` starts (from any thread)."""
    lock, calls = threading.Lock(), [0]

    def hook(*args: object) -> None:
        with lock:
            calls[0] += 1
            due = calls[0] == count
        if due:
            action()

    return hook


def content_key(key: str, data: bytes) -> str:
    """The key that ``data`` addresses (as a ``.dir`` manifest if ``key`` is one)."""
    return layout.key(layout.manifest_md5(data) if key.endswith(".dir") else hashlib.md5(data).hexdigest())


def run(direction: str, store: Optional[ObjectStore] = None) -> TransferResult:
    """Push or pull the whole pipeline (through ``store`` if given)."""
    return (api.artifact_push if direction == "push" else api.artifact_pull)(PIPELINE, jobs=4, store=store)


# -- real servers killed mid-transfer ----------------------------------------------------------------------


@pytest.mark.parametrize("target, direction", [
    ("amazonS3", "push"), ("amazonS3", "pull"), ("minioS3", "push"), ("sshremote", "push"), ("sshremote", "pull"),
], indirect=["target"])
def test_server_killed_mid_transfer_then_restarted_rerun_completes(ws, tmp_path, target, direction, monkeypatch):
    monkeypatch.setattr(transfer, "BACKOFF", 0.01)  # give up on the dead server quickly: every object
    monkeypatch.setattr(transfer, "RETRIES", 2)  # left fails in turn (botocore adds its own ~0.5 s retry)
    api.init(target.type, target.options, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)
    files = {f"data/file {i:02d}.bin": os.urandom(20_000 + 997 * i) for i in range(24)}
    ds = Dataset.write(ws, files, ["data"])
    BackendConformance.log("data")
    ds.logged()
    if direction == "pull":
        assert run("push").ok
        ds.forget()

    inner = plugins.open_store(config.load(ws).remote)
    try:
        hook = after_calls(18, lambda: kill(target.server))  # of 26 objects, with 3 more in flight
        first = run(direction, FaultyStore(inner, **{f"before_{'put' if direction == 'push' else 'get'}": hook}))
    finally:
        inner.close()
    try:
        assert not target.server.running
        assert not first.ok and first.failed
        files_failed = [error for _, error in first.failed if not error.startswith("directory not published")]
        assert files_failed and all(str(target.server.port) in error for error in files_failed), first.failed
        BackendConformance.assert_no_partial_files(ws)
    finally:
        target.server.start()  # the same port and the same data directory

    second = run(direction)
    assert second.ok, second.failed
    if direction == "push":
        assert second.skipped >= first.moved, "what the first run stored is not sent again"
        assert second.moved + second.skipped == len(ds.all_keys)
    else:
        assert second.moved == len(ds.data_keys) - first.moved, "only the missing files are downloaded again"
    stored = target.objects()
    # an upload killed mid-way may leave a hidden temp file that nobody is left to remove (rclone's
    # ".rclone_temp_put_*", sshremote's ".<name>.<uuid>.tmp"); no key is hidden, so it is never taken for an object
    visible = {key: data for key, data in stored.items() if not key.rsplit("/", 1)[-1].startswith(".")}
    assert sorted(visible) == sorted(ds.all_keys), "partial or duplicate objects are left on the remote"
    for key, data in visible.items():
        assert content_key(key, data) == key, f"{key} holds other bytes than its md5 says"
    if direction == "push":
        ds.forget()
        assert run("pull").ok
    ds.assert_in_place()
    BackendConformance.assert_no_partial_files(ws)


# -- what the kit cannot check on every backend: a corrupted upload -----------------------------------------


def test_a_corrupted_upload_is_refused_by_the_next_pull(workspace, tmp_path):
    ds = Dataset.write(workspace, {"data/a.csv": b"id,value\n1,2\n", "data/b.bin": os.urandom(50_000)},
                       ["data/a.csv", "data/b.bin"])
    ds.log()
    b_key = layout.key(hashlib.md5(ds.files["data/b.bin"]).hexdigest())
    inner = plugins.open_store(config.load(workspace).remote)
    faulty = FaultyStore(inner, Fault.corrupt(ops="put", keys=[b_key]), close_inner=True)
    assert api.artifact_push(PIPELINE, store=faulty).ok, "the remote took the bytes: nothing tells the pusher"
    assert faulty.injected == {"corrupt": 1}
    ds.forget()
    pulled = api.artifact_pull(PIPELINE)
    assert [what.split(":")[0] for what, _ in pulled.failed] == ["data/b.bin"]
    assert not (workspace / "data" / "b.bin").exists(), "a corrupted object must never be placed"
    ds.assert_in_place(["data/a.csv"])


@pytest.mark.parametrize("target", ["amazonS3", "minioS3", "sshremote"], indirect=True)
def test_a_corrupt_cache_file_is_healed_from_the_workspace_or_refused(ws, tmp_path, target):
    """A DVC cache file that rotted on disk never reaches the remote, where everyone who pulls would get it
    (S3 checks the Content-MD5 of a one-PUT upload; sshremote hashes what it sends before renaming its temp
    file over the key).  An intact workspace copy heals the cache and goes up instead; with none, the
    object is refused by name."""
    api.init(target.type, target.options, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)
    files = {"data/a.csv": b"id,value\n1,2\n", "data/b.bin": os.urandom(50_000), "folder/c.bin": os.urandom(30_000)}
    ds = Dataset.write(ws, files, ["data/a.csv", "data/b.bin", "folder"]).log()
    cache = config.load(ws).cache
    keys = {rel: layout.key(hashlib.md5(data).hexdigest()) for rel, data in files.items()}
    for rel in ("data/b.bin", "folder/c.bin"):
        os.chmod(cache / keys[rel], 0o644)
        (cache / keys[rel]).write_bytes(os.urandom(len(files[rel])))
    (ws / "data" / "b.bin").write_bytes(b"edited since it was logged")  # b.bin has no intact copy left
    pushed = run("push")
    [(what, error)] = pushed.failed
    assert what.split(":")[0] == "data/b.bin", pushed.failed
    assert f"{cache / keys['data/b.bin']} is corrupt" in error and "no intact copy" in error, error
    assert sorted(target.objects()) == sorted(k for k in ds.all_keys if k != keys["data/b.bin"])
    healed = cache / keys["folder/c.bin"]
    assert healed.read_bytes() == files["folder/c.bin"] and not os.stat(healed).st_mode & 0o222


# -- the wrapper itself ----------------------------------------------------------------------------------


class MemoryStore(ObjectStore):
    """A dict as a remote."""

    def __init__(self) -> None:
        self.objects: Dict[str, bytes] = {}

    def exists(self, keys) -> Set[str]:
        return {key for key in keys if key in self.objects}

    def put(self, src: Path, key: str) -> None:
        self.objects[key] = src.read_bytes()

    def get(self, key: str, dst) -> None:
        if key not in self.objects:
            raise ObjectNotFound(key)
        dst.write(self.objects[key])


def test_a_fault_plan_is_spent_exactly_under_concurrent_calls():
    inner = MemoryStore()
    inner.objects.update({f"k{i}": bytes(range(256)) * 4 for i in range(40)})
    faulty = FaultyStore(inner, Fault.fail_first(None, permanent=True, keys=["k7"]), Fault.drop(5, ops="get"),
                         Fault.corrupt(4, ops="get"))
    outcomes: Counter = Counter()

    def fetch(key: str) -> None:
        sink = Sink()
        try:
            faulty.get(key, sink)
        except TransientError:
            assert sink.size == 512, "a dropped get delivers half of the object first"
            outcomes["drop"] += 1
        except BackendError:
            outcomes["fail"] += 1
        else:
            outcomes["ok" if sink.value == inner.objects[key] else "corrupt"] += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fetch, [f"k{i}" for i in range(40)] * 2))
    assert faulty.injected == {"fail": 2, "drop": 5, "corrupt": 4}
    assert outcomes == {**faulty.injected, "ok": 80 - 11}
    assert faulty.count("get") == 80 and faulty.count("get", "k7") == 2
    assert len(faulty.got_keys) == 80 - 2 - 5, "a refused or dropped get is not recorded as done"
