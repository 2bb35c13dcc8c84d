"""Batched SSH transfers (issue 27) against the suite's real OpenSSH server.

Where the account may run commands, a pull streams many objects through one ``tar -cf -`` and a push sends
many through one ``tar -xf -`` into a ``.cmf-batch-*`` folder, renamed into place: a few round trips a batch
instead of four or more an object.  An SFTP-only login (``ForceCommand internal-sftp``) runs no command: its
batches go as pipelined SFTP requests, and the result says so once; ``CMF_SSH_BATCH=0`` moves one object at a
time over SFTP.  Whatever the route, every object is verified by its md5 and placed through temp files,
failures are named, and a killed pull resumes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from cmf_backends.ssh.store import BATCH_PREFIX, TEMP_NAME
from cmf_core import layout
from cmf_core.errors import BackendError
from cmf_core.testing import PIPELINE, Dataset
from cmf_core.testing.sshd import SSHServer
from cmf_core.transfer import PARTIAL
from tests.conftest import CMF
from tests.test_ssh_backend import (host_fingerprint, init, key_options, pytestmark, sftp_only_sshd,  # noqa: F401
                                    sshd, store_of, url)

SFTP_ONLY = "the server runs no commands for this account: an SFTP-only login"
SINGLES = ["single/a.txt", "single/b.csv", "single/c.bin"]


# -- helpers ----------------------------------------------------------------------------------------


def small_files(folder: str, count: int, seed: int) -> Dict[str, bytes]:
    """``count`` files of random bytes, a few bytes to 4 KB each, in ``folder`` (the same for the same seed)."""
    rng = random.Random(seed)
    return {f"{folder}/part {i:04d}.bin": rng.randbytes(rng.randint(3, 4096)) for i in range(count)}


def logged_on(ws: Path, tmp_path: Path, server: SSHServer, files: Dict[str, bytes],
              artifacts: Sequence[str]) -> Tuple[Dataset, Path]:
    """A workspace whose remote is a fresh folder of ``server`` (trusted, key login), with ``files`` logged as
    ``artifacts``; returns the dataset and the remote folder (a local path: the server is on this machine)."""
    remote = server.remote_dir()
    known_hosts = server.trust(tmp_path / "known_hosts")
    init(ws, tmp_path, key_options(server, path=url(server, remote), known_hosts=str(known_hosts)))
    return Dataset.write(ws, files, artifacts).log(), Path(remote)


def transfer(cmf, direction: str, *args: str) -> Tuple[int, Dict[str, object], str]:
    """``cmf artifact <direction> --json``: (exit code, the JSON result, stderr)."""
    done = cmf("artifact", direction, "-p", PIPELINE, "--json", *args)
    return done.code, json.loads(done.out), done.err


def push_and_pull(cmf, ds: Dataset) -> Tuple[Dict[str, object], Dict[str, object]]:
    """Push, delete the workspace copies and the DVC cache, pull: every byte back.  The two JSON results."""
    code, pushed, err = transfer(cmf, "push")
    assert code == 0, err
    ds.forget()
    code, pulled, err = transfer(cmf, "pull")
    assert code == 0, err
    ds.assert_in_place()
    return pushed, pulled


def per_object(result: Dict[str, object]) -> float:
    """Round trips waited for per object moved."""
    return result["transport"]["round_trips"] / result["moved"]


def remote_leftovers(remote: Path) -> List[str]:
    """Batch folders and upload temp files anywhere under the remote folder."""
    return [str(p) for p in remote.rglob("*") if p.name.startswith(BATCH_PREFIX) or TEMP_NAME.fullmatch(p.name)]


def partial_files(ws: Path) -> List[str]:
    """Download temp files anywhere in the workspace, its DVC cache included."""
    return [str(p) for p in ws.rglob(f"*{PARTIAL}")]


def cache_files(ws: Path) -> Dict[str, Path]:
    """The DVC cache's files by md5 (``.dir`` manifests left out)."""
    found = {p.parent.name + p.name: p for p in (ws / ".dvc" / "cache" / "files" / "md5").glob("*/*")}
    return {md5: path for md5, path in found.items() if layout.is_file_md5(md5) and path.is_file()}


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the exec route, SFTP-only logins, CMF_SSH_BATCH=0 ----------------------------------------------------


def test_exec_route_moves_small_files_in_batches_with_few_round_trips(ws, tmp_path, sshd, cmf):
    files = {**small_files("many", 600, seed=1), **{name: os.urandom(200 + i) for i, name in enumerate(SINGLES)}}
    ds, remote = logged_on(ws, tmp_path, sshd, files, ["many", *SINGLES])
    file_objects = len(ds.data_keys) + len(ds.extra)  # all small: every one goes in a batch

    pushed, pulled = push_and_pull(cmf, ds)

    assert pushed["transport"]["route"] == "exec (tar)" and pulled["transport"]["route"] == "exec (tar)"
    assert pushed["batched"] == file_objects and pushed["moved"] == file_objects + len(ds.manifests)
    assert pulled["batched"] == pulled["moved"] == len(ds.data_keys)  # the environment file stayed in place
    for result in (pushed, pulled):
        assert result["notes"] == [] and result["failed"] == []
        assert result["transport"]["round_trips"] < 0.2 * len(ds.data_keys), result["transport"]
    stored = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    assert stored == sorted(ds.all_keys), "the remote holds exactly the objects, each at its key"
    assert remote_leftovers(remote) == []
    assert partial_files(ws) == []


def test_an_sftp_only_login_batches_over_sftp_and_says_so_once(ws, tmp_path, sftp_only_sshd, cmf):
    """No command runs there: the probe finds that once, the notes say it once (not once per batch), and the
    batches go as pipelined SFTP requests, still a few round trips each."""
    ds, remote = logged_on(ws, tmp_path, sftp_only_sshd, small_files("many", 600, seed=2), ["many"])

    pushed, pulled = push_and_pull(cmf, ds)

    where = f"{sftp_only_sshd.user}@127.0.0.1:{sftp_only_sshd.port}: {SFTP_ONLY}"
    for result in (pushed, pulled):
        assert result["transport"]["route"] == f"sftp ({SFTP_ONLY})"
        assert result["failed"] == []
        assert len(result["notes"]) == 1 and result["notes"][0].startswith(where), result["notes"]
        assert result["transport"]["round_trips"] < 0.2 * len(ds.data_keys), result["transport"]
    assert pushed["batched"] == len(ds.data_keys) + len(ds.extra)
    assert pulled["batched"] == pulled["moved"] == len(ds.data_keys)
    assert remote_leftovers(remote) == []

    ds.forget(["many"])
    human = cmf("artifact", "pull", "-p", PIPELINE)
    assert human.code == 0, human.err
    notes = [line for line in human.err.splitlines() if line.startswith("cmf: note:")]
    assert notes == [f"cmf: note: {pulled['notes'][0]}"], human.err
    ds.assert_in_place()


def test_batches_off_go_over_sftp_with_many_more_round_trips(ws, tmp_path, sshd, cmf, monkeypatch):
    ds, remote = logged_on(ws, tmp_path, sshd, small_files("many", 300, seed=3), ["many"])
    exec_push, exec_pull = push_and_pull(cmf, ds)
    shutil.rmtree(remote)  # an empty remote again, for the same push over SFTP

    monkeypatch.setenv("CMF_SSH_BATCH", "0")
    sftp_push, sftp_pull = push_and_pull(cmf, ds)

    for result in (sftp_push, sftp_pull):
        assert result["transport"]["route"] == "sftp (CMF_SSH_BATCH=0)"
        assert result["batched"] == 0 and result["failed"] == []
        assert not [note for note in result["notes"] if "pipelined" in note], "batches off: nothing is pipelined"
    assert (exec_push["moved"], exec_pull["moved"]) == (sftp_push["moved"], sftp_pull["moved"])
    rates = {"exec push": per_object(exec_push), "sftp push": per_object(sftp_push),
             "exec pull": per_object(exec_pull), "sftp pull": per_object(sftp_pull)}
    assert rates["exec push"] < rates["sftp push"] / 5 and rates["exec pull"] < rates["sftp pull"] / 5, rates
    assert remote_leftovers(remote) == []


# -- failures are named, nothing wrong is placed ------------------------------------------------------


def test_a_corrupt_and_a_missing_object_fail_by_name_and_the_rest_is_pulled(ws, tmp_path, sshd, cmf):
    ds, remote = logged_on(ws, tmp_path, sshd, small_files("many", 60, seed=4), ["many"])
    assert transfer(cmf, "push")[0] == 0
    corrupt, missing = "many/part 0007.bin", "many/part 0011.bin"
    corrupt_md5, missing_md5 = md5_of(ds.files[corrupt]), md5_of(ds.files[missing])
    on_server = remote / layout.key(corrupt_md5)
    on_server.write_bytes(bytes(b ^ 0xFF for b in on_server.read_bytes()))  # same size, other bytes
    (remote / layout.key(missing_md5)).unlink()
    ds.forget()

    code, pulled, err = transfer(cmf, "pull")

    assert code == 1
    failed = {entry["what"]: entry["error"] for entry in pulled["failed"]}
    assert failed.keys() == {corrupt, missing}, failed
    assert "corrupt object on the remote, nothing placed: md5 mismatch" in failed[corrupt]
    assert failed[missing] == f"not on the remote ({layout.key(missing_md5)})"
    assert f"cmf: error: {corrupt}: corrupt object on the remote" in err
    assert not (ws / corrupt).exists() and not (ws / missing).exists()
    cached = cache_files(ws)
    assert corrupt_md5 not in cached and missing_md5 not in cached
    assert all(layout.file_md5(path) == md5 for md5, path in cached.items()), "a cache file is not its md5"
    for rel, data in ds.files.items():
        if rel not in (corrupt, missing):
            assert (ws / rel).read_bytes() == data, rel
    assert pulled["moved"] == len(ds.data_keys) - 2
    assert partial_files(ws) == []


def test_a_killed_pull_resumes_where_it_stopped(ws, tmp_path, sshd, cmf):
    """SIGKILL once 50 objects are in the DVC cache (``-j 1``: one batch at a time, slow enough to catch):
    what it placed is whole, and the next pull moves only the rest."""
    ds, _ = logged_on(ws, tmp_path, sshd, small_files("many", 2000, seed=5), ["many"])
    assert transfer(cmf, "push")[0] == 0
    ds.forget()

    first = subprocess.Popen([CMF, "artifact", "pull", "-p", PIPELINE, "-j", "1"], cwd=ws,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(cache_files(ws)) < 50 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        running = first.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # its own session: the pull and anything it started
        first.wait()
    assert running, "the pull ended before it could be killed half-way"
    arrived = {md5: path for md5, path in cache_files(ws).items() if layout.key(md5) in ds.data_keys}
    assert 50 <= len(arrived) < len(ds.data_keys)
    assert all(layout.file_md5(path) == md5 for md5, path in arrived.items()), "a killed pull placed a broken file"
    for rel, data in ds.files.items():
        assert not (ws / rel).exists() or (ws / rel).read_bytes() == data, rel

    code, resumed, err = transfer(cmf, "pull")

    assert code == 0, err
    ds.assert_in_place()
    assert resumed["moved"] + resumed["skipped"] == ds.pull_objects
    assert resumed["moved"] < len(ds.data_keys), "the second pull started over"
    assert resumed["batched"] <= len(ds.data_keys) - len(arrived), "objects already cached were fetched again"
    assert partial_files(ws) == []


def test_an_unknown_host_key_is_refused_before_any_batch(ws, tmp_path, sshd):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    remote = sshd.remote_dir()
    init(ws, tmp_path, key_options(sshd, path=url(sshd, remote), known_hosts=str(empty)))
    store = store_of(ws)
    key = layout.key(md5_of(b"never sent"))
    try:
        with pytest.raises(BackendError, match=re.escape(host_fingerprint(sshd))):
            list(store.get_many([key]))
        with pytest.raises(BackendError, match=re.escape(host_fingerprint(sshd))):
            store.put_many([(b"never sent", key)])
        assert store.report() == {"route": "sftp", "round_trips": 0}, "no command ran, not even the probe"
    finally:
        store.close()
    assert not Path(remote).exists()


@pytest.mark.parametrize("locked", ["", "files/md5"], ids=["root", "md5-folder"])
def test_a_batch_that_cannot_be_stored_fails_per_object_and_leaves_no_batch_folder(ws, tmp_path, sshd, cmf,
                                                                                    locked):
    """The remote root (no batch folder can be made) or ``files/md5`` (the batch unpacks, then its folders
    cannot be made) belongs to root: every object fails by name, and no ``.cmf-batch-*`` folder stays."""
    remote = Path(sshd.read_only_dir())
    if locked:
        account = pwd.getpwnam(sshd.user)
        os.chown(remote, account.pw_uid, account.pw_gid)
        (remote / locked).mkdir(parents=True)
        os.chown(remote / locked.split("/")[0], account.pw_uid, account.pw_gid)
    known_hosts = sshd.trust(tmp_path / "known_hosts")
    init(ws, tmp_path, key_options(sshd, path=url(sshd, str(remote)), known_hosts=str(known_hosts)))
    ds = Dataset.write(ws, small_files("many", 20, seed=6), ["many"]).log()

    code, pushed, _ = transfer(cmf, "push")

    assert code == 1
    failed = {entry["what"]: entry["error"] for entry in pushed["failed"]}
    for rel in ds.files:
        assert "permission denied" in failed.get(rel, ""), (rel, failed)
    assert "directory not published" in failed[f"many:{layout.manifest_md5(ds.manifest('many'))}"], failed
    assert len(failed) == len(ds.all_keys), "every object, the environment file too, failed by name"
    assert pushed["batched"] == 0 and pushed["moved"] == 0
    assert remote_leftovers(remote) == []
    assert [p for p in remote.rglob("*") if p.is_file()] == [], "no object was stored"


def test_hostile_keys_are_never_run_by_the_shell(ws, tmp_path, sshd):
    """Keys reach ``tar`` and ``mv`` on a shell's command line: quoted, they are names, never commands (the
    server runs on this machine, so a command that ran would leave its marker in this /tmp)."""
    remote = sshd.remote_dir()
    init(ws, tmp_path, key_options(sshd, path=url(sshd, remote), known_hosts=str(sshd.trust(tmp_path / "known_hosts"))))
    tag = uuid.uuid4().hex
    markers = [Path(f"/tmp/pwned-{tag}-{i}") for i in range(4)]
    hostile = [f"files/md5/ab/$(touch {markers[0]})", f"files/md5/ab/`touch {markers[1]}`",
               f"files/md5/ab/';touch {markers[2]};'", f"files/md5/ab/;touch {markers[3]}"]
    good = layout.key(md5_of(b"a real object"))
    store = store_of(ws)
    try:
        store.put_many([(b"a real object", good)])
        got = {key: b"".join(chunks) for key, chunks in store.get_many([good, *hostile])}
        assert got == {good: b"a real object"}, "only the real object is found"
        store.put_many([(b"x", key) for key in hostile])
        assert store.report()["route"] == "exec (tar)"
    finally:
        store.close()
        ran = [str(marker) for marker in markers if marker.exists()]
        for marker in markers:
            marker.unlink(missing_ok=True)
    assert ran == [], f"a key ran as a command: {ran}"
    for key in hostile:
        assert (Path(remote) / key).read_bytes() == b"x", f"{key!r} was not stored under the root by its name"
