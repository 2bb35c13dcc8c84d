"""The sshremote backend removes what killed uploads left behind, against a real OpenSSH server.

An upload goes to ``.<name>.<uuid>.tmp`` beside its object and is renamed over it; a killed one leaves that
temp file.  The next push into the folder removes it once it is an hour old, and leaves a fresh one alone:
another client may be uploading it right now.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from cmf_core import api, layout
from cmf_core.testing import PIPELINE, Dataset
from cmf_core.testing.sshd import SSHServer

paramiko = pytest.importorskip("paramiko")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or shutil.which("ssh-keygen") is None,
    reason="needs root and openssh-server (/usr/sbin/sshd, ssh-keygen) to run a test sshd")


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with SSHServer() as server:
        yield server


@pytest.fixture
def known_hosts(sshd, tmp_path) -> Path:
    return sshd.trust(tmp_path / "known_hosts")


@pytest.fixture
def sftp(sshd, known_hosts) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session of the test user's own, as another client of the remote would have."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.connect("127.0.0.1", sshd.port, username=sshd.user, key_filename=str(sshd.client_key),
                   allow_agent=False, look_for_keys=False)
    with client, client.open_sftp() as session:
        yield session


def test_a_push_removes_the_temp_files_of_killed_uploads_and_leaves_fresh_ones(ws, tmp_path, sshd, known_hosts,
                                                                                 sftp):
    remote = sshd.remote_dir()
    api.init("sshremote", {"path": f"ssh://127.0.0.1:{sshd.port}{remote}", "user": sshd.user,
                           "key_file": str(sshd.client_key), "known_hosts": str(known_hosts)},
             git_remote_url=str(tmp_path / "origin.git"), workspace=ws)
    data = os.urandom(100_000)
    Dataset.write(ws, {"data/a.bin": data}, ["data/a.bin"]).log()
    key = layout.key(hashlib.md5(data).hexdigest())
    folder, name = f"{remote}/{key}".rsplit("/", 1)
    sftp.mkdir(remote)
    for part in ("files", "files/md5", key.rsplit("/", 1)[0]):
        sftp.mkdir(f"{remote}/{part}")
    old, fresh = (f"{folder}/.{name}.{uuid.uuid4().hex}.tmp" for _ in range(2))
    for path in (old, fresh):
        with sftp.open(path, "wb") as partial:
            partial.write(data[:1000])
    two_hours_ago = time.time() - 2 * 3600
    sftp.utime(old, (two_hours_ago, two_hours_ago))

    pushed = api.artifact_push(PIPELINE)

    assert pushed.ok, pushed.failed
    assert sorted(sftp.listdir(folder)) == sorted([name, fresh.rsplit("/", 1)[1]])
    assert Path(folder, name).read_bytes() == data
