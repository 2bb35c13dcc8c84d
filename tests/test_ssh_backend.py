"""The sshremote backend against a real OpenSSH server (``sshd`` on a free loopback port, never 22).

The module's server (``sshd``) serves a fresh remote directory per test; tests that change the host key or
stop the server start their own.  ``tests/conftest.py`` gives every test its own HOME, so each test writes
the known_hosts entry it needs (``sshd.trust(...)``).
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, Set

import pytest

from cmf_core import api, config, layout, plugins
from cmf_core.errors import BackendError, ConfigError, ObjectNotFound, TransientError
from cmf_core.testing import PIPELINE, BackendConformance, Dataset
from cmf_core.testing.servers import free_port
from cmf_core.testing.sshd import SSHServer
from tests.conftest import clone_workspace, run_cmf

paramiko = pytest.importorskip("paramiko")
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or shutil.which("ssh-keygen") is None,
        reason="needs root and openssh-server (/usr/sbin/sshd, ssh-keygen) to run a test sshd"),
]


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    """One sshd for the module, stopped by PID (and its directory removed) at the end."""
    with SSHServer() as server:
        yield server


@pytest.fixture(scope="module")
def sftp_only_sshd() -> Iterator[SSHServer]:
    """An sshd whose logins run nothing but SFTP (``ForceCommand internal-sftp``)."""
    with SSHServer(sftp_only=True) as server:
        yield server


@pytest.fixture
def own_sshd() -> Iterator[SSHServer]:
    """A server of the test's own, for tests that change its host key or stop it."""
    with SSHServer() as server:
        yield server


@pytest.fixture(scope="module")
def known_hosts(sshd) -> Path:
    """A known_hosts file that trusts the module's server (passed as ``--known-hosts``)."""
    return sshd.trust(sshd.base / "known_hosts")


def user_known_hosts() -> Path:
    """``~/.ssh/known_hosts`` of the current (per-test) HOME."""
    return Path(os.environ["HOME"]) / ".ssh" / "known_hosts"


def url(server: SSHServer, remote: str = "") -> str:
    return f"ssh://127.0.0.1:{server.port}{remote or server.remote_dir()}"


def key_options(server: SSHServer, **extra: object) -> Dict[str, object]:
    """``cmf init sshremote`` options for a fresh remote directory, logging in with the client key."""
    return {"path": url(server), "user": server.user, "key_file": str(server.client_key), **extra}


def password_options(server: SSHServer, **extra: object) -> Dict[str, object]:
    """``cmf init sshremote`` options for a fresh remote directory, logging in with the password."""
    return {"path": url(server), "user": server.user, "password": server.password, **extra}


def init(ws: Path, tmp_path: Path, options: Dict[str, object]) -> None:
    api.init("sshremote", options, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)


def logged(ws: Path) -> Dataset:
    ds = Dataset.write(ws, {"data/a.csv": b"id,value\n1,2\n", "data/set/x.bin": os.urandom(70_000),
                            "data/set/y.txt": b"y\n"}, ["data/a.csv", "data/set"])
    return ds.log()


def store_of(ws: Path):
    return plugins.open_store(config.load(ws).remote)


def probe(ws: Path) -> Set[str]:
    """Open the workspace's store, ask whether it holds one key, and close it."""
    store = store_of(ws)
    try:
        return store.exists(["files/md5/00/0"])
    finally:
        store.close()


def host_fingerprint(server: SSHServer) -> str:
    """The SHA256 fingerprint of the server's host key, as ``ssh-keygen -l`` prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{server.host_key}.pub"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


# -- the conformance kit, with a key and with a password --------------------------------------------


class SSHKit(BackendConformance):
    def plant(self, store, key, data, scratch):
        """Around the md5 check of cmf's puts: the bytes written over one of the store's SFTP sessions."""
        target = f"{store.root}/{key}"
        with store._session() as sftp:
            store._ensure_dir(sftp, posixpath.dirname(target))
            sftp.putfo(io.BytesIO(data), target)


class TestSSHKeyAuth(SSHKit):
    large_file_mb = 32

    @pytest.fixture
    def backend(self, sshd, known_hosts):
        return "sshremote", key_options(sshd, known_hosts=str(known_hosts))


class TestSSHPasswordAuth(SSHKit):
    large_file_mb = 16

    @pytest.fixture
    def backend(self, sshd, known_hosts):
        return "sshremote", password_options(sshd, known_hosts=str(known_hosts))


# -- credentials and host keys ------------------------------------------------------------------------


def test_wrong_password_is_refused_with_a_clear_error(ws, tmp_path, sshd, known_hosts, cmf):
    init(ws, tmp_path, password_options(sshd, password="not-the-password", known_hosts=str(known_hosts)))
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    assert f"authentication as {sshd.user}@127.0.0.1:{sshd.port} failed" in done.err, done.err
    assert "not-the-password" not in done.out + done.err
    with pytest.raises(BackendError, match="authentication") as raised:
        probe(ws)
    assert not isinstance(raised.value, TransientError), "a wrong password is not worth retrying"


def test_refused_key_is_a_backend_error(ws, tmp_path, sshd, known_hosts):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    init(ws, tmp_path, key_options(sshd, key_file=str(other), known_hosts=str(known_hosts)))
    with pytest.raises(BackendError, match=f"{sshd.user}@127.0.0.1:{sshd.port}") as raised:
        probe(ws)
    assert not isinstance(raised.value, TransientError)


def test_a_key_file_that_is_no_key_is_a_backend_error(ws, tmp_path, sshd, known_hosts):
    junk = tmp_path / "junk_key"
    junk.write_text("this is not a private key\n")
    init(ws, tmp_path, key_options(sshd, key_file=str(junk), known_hosts=str(known_hosts)))
    with pytest.raises(BackendError, match=f"authentication as {sshd.user}@127.0.0.1:{sshd.port}") as raised:
        probe(ws)
    assert not isinstance(raised.value, TransientError)


def test_unknown_host_key_is_refused_with_its_fingerprint(ws, tmp_path, sshd, cmf):
    assert not user_known_hosts().exists()
    init(ws, tmp_path, key_options(sshd))  # default known_hosts: ~/.ssh/known_hosts, which does not exist
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    for text in ("ssh-ed25519", host_fingerprint(sshd), f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> ",
                 "--trust-host-key", f"[127.0.0.1]:{sshd.port}"):
        assert text in done.err, f"{text!r} missing from: {done.err}"
    assert not user_known_hosts().exists(), "an unknown key must never be added silently"


def test_trust_host_key_at_init_adds_it_and_push_works(ws, tmp_path, sshd, cmf):
    args = ["init", "sshremote", "--path", url(sshd), "--user", sshd.user, "--key-file", str(sshd.client_key),
            "--git-remote-url", str(tmp_path / "origin.git")]
    first = cmf(*args, "--trust-host-key")
    assert first.code == 0, first.err
    assert host_fingerprint(sshd) in first.out
    entry = user_known_hosts().read_text()
    assert entry == sshd.known_hosts_line()  # written as [127.0.0.1]:PORT for a port that is not 22
    assert stat.S_IMODE(user_known_hosts().stat().st_mode) == 0o600
    again = run_cmf([*args, "--trust-host-key"], ws)  # a real process: the note is printed by cmf init
    assert again.code == 0, again.err
    assert f"the ssh-ed25519 host key of [127.0.0.1]:{sshd.port} ({host_fingerprint(sshd)}) " \
           "is already trusted" in again.out
    assert user_known_hosts().read_text() == entry, "trusting twice must not add a second line"

    ds = logged(ws)
    pushed = cmf("artifact", "push", "-p", PIPELINE)
    assert pushed.code == 0, pushed.err
    ds.forget()
    pulled = cmf("artifact", "pull", "-p", PIPELINE)
    assert pulled.code == 0, pulled.err
    ds.assert_in_place()


def test_trust_host_key_writes_the_known_hosts_option_file(ws, tmp_path, sshd):
    chosen = tmp_path / "keys" / "hosts"
    init(ws, tmp_path, key_options(sshd, known_hosts=str(chosen), trust_host_key=True))
    assert chosen.read_text() == sshd.known_hosts_line()
    assert not user_known_hosts().exists()
    assert config.load(ws).remote.settings["known_hosts"] == str(chosen)
    assert probe(ws) == set()


def test_changed_host_key_is_refused_even_with_trust_host_key(ws, tmp_path, own_sshd, cmf):
    init(ws, tmp_path, key_options(own_sshd, trust_host_key=True))
    logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    old = host_fingerprint(own_sshd)
    own_sshd.swap_host_key()
    new = host_fingerprint(own_sshd)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    assert "CHANGED" in done.err and new in done.err and old in done.err, done.err
    again = cmf("init", "sshremote", "--path", url(own_sshd), "--user", own_sshd.user, "--key-file",
                str(own_sshd.client_key), "--git-remote-url", str(tmp_path / "origin.git"), "--trust-host-key")
    assert again.code != 0
    assert "CHANGED" in again.err and "ssh-keygen -R" in again.err, again.err
    assert new not in user_known_hosts().read_text().split()[2:], "the new key must not be trusted"


def test_known_hosts_option_must_name_a_file(ws, tmp_path, sshd):
    with pytest.raises(ConfigError, match="--known-hosts"):
        init(ws, tmp_path, key_options(sshd, known_hosts=str(tmp_path / "missing")))


# -- ports, connections, permissions -------------------------------------------------------------------


def test_the_port_is_honoured_and_stored_for_dvc(ws, tmp_path, sshd, known_hosts):
    assert sshd.port != 22
    folder = sshd.remote_dir()
    init(ws, tmp_path, key_options(sshd, path=url(sshd, folder), known_hosts=str(known_hosts)))
    remote = config.load(ws).remote
    assert remote.url == f"ssh://127.0.0.1{folder}" and remote.options["port"] == str(sshd.port)  # as DVC wants it
    src = tmp_path / "obj"
    src.write_bytes(b"on the right port")
    key = layout.key(hashlib.md5(b"on the right port").hexdigest())
    store = store_of(ws)
    try:
        store.put(src, key)
        assert store.exists([key]) == {key}
    finally:
        store.close()
    assert (Path(folder) / key).is_file()


def test_nothing_listening_is_a_transient_error_naming_host_and_port(ws, tmp_path, known_hosts):
    port = free_port()
    init(ws, tmp_path, {"path": f"ssh://127.0.0.1:{port}/srv/x", "user": "nobody", "password": "pw",
                        "known_hosts": str(known_hosts)})
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        probe(ws)


def test_a_stopped_server_is_transient_and_a_restart_recovers(ws, tmp_path, own_sshd):
    init(ws, tmp_path, key_options(own_sshd, trust_host_key=True))
    store = store_of(ws)
    src = tmp_path / "obj"
    src.write_bytes(b"survives a restart")
    key = layout.key(hashlib.md5(b"survives a restart").hexdigest())
    try:
        store.put(src, key)
        store.close()  # drop the idle session: the old sshd child would keep serving it
        own_sshd.stop()
        with pytest.raises(TransientError, match=f"127.0.0.1:{own_sshd.port}"):
            store.exists([key])
        own_sshd.start()
        assert store.exists([key]) == {key}
    finally:
        store.close()


def test_permission_denied_on_the_remote_dir_is_a_backend_error(ws, tmp_path, sshd, known_hosts):
    locked = sshd.read_only_dir()
    opts = key_options(sshd, known_hosts=str(known_hosts))
    opts["path"] = url(sshd, f"{locked}/store")
    init(ws, tmp_path, opts)
    src = tmp_path / "obj"
    src.write_bytes(b"nowhere to go")
    store = store_of(ws)
    try:
        with pytest.raises(BackendError, match="permission denied") as raised:
            store.put(src, layout.key(hashlib.md5(b"nowhere to go").hexdigest()))
        assert not isinstance(raised.value, TransientError)
        assert f"{sshd.user}@127.0.0.1:{sshd.port}" in str(raised.value)
    finally:
        store.close()


def test_missing_object_is_object_not_found(ws, tmp_path, sshd, known_hosts):
    init(ws, tmp_path, key_options(sshd, known_hosts=str(known_hosts)))
    key = layout.key(hashlib.md5(b"absent").hexdigest())
    store = store_of(ws)
    try:
        with pytest.raises(ObjectNotFound, match=key), open(os.devnull, "wb") as sink:
            store.get(key, sink)
    finally:
        store.close()


# -- how objects move ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["exec", "sftp-only", "no-batches"])
def test_exists_lists_each_folder_once_and_never_stats_keys(ws, tmp_path, sshd, sftp_only_sshd, route,
                                                            monkeypatch):
    """Where commands run, one ``find`` of the folders; on an SFTP-only login, the folders' listings with their
    requests pipelined; with batches off (``CMF_SSH_BATCH=0``), one ``listdir`` per folder."""
    server = sftp_only_sshd if route == "sftp-only" else sshd
    if route == "no-batches":
        monkeypatch.setenv("CMF_SSH_BATCH", "0")
    init(ws, tmp_path, key_options(server, known_hosts=str(server.trust(tmp_path / "known_hosts"))))
    store = store_of(ws)
    keys = [layout.key(hashlib.md5(str(i).encode()).hexdigest()) for i in range(400)]
    try:
        for i, key in enumerate(keys[:5]):
            src = tmp_path / str(i)
            src.write_bytes(str(i).encode())
            store.put(src, key)
        calls = {"listdir": 0, "stat": 0, "lstat": 0}
        for name in calls:
            original = getattr(paramiko.SFTPClient, name)

            def counted(self, *args, _name=name, _original=original):
                calls[_name] += 1
                return _original(self, *args)

            monkeypatch.setattr(paramiko.SFTPClient, name, counted)
        before = store.report()["round_trips"]
        assert store.exists(keys) == set(keys[:5])
        folders = {key.rsplit("/", 1)[0] for key in keys}
        assert calls == {"listdir": len(folders) if route == "no-batches" else 0, "stat": 0, "lstat": 0}
        report = store.report()
        assert report["route"] == {"exec": "exec (tar)", "no-batches": "sftp (CMF_SSH_BATCH=0)",
                                   "sftp-only": "sftp (the server runs no commands for this account: an SFTP-only "
                                                "login)"}[route]
        waited = report["round_trips"] - before
        assert waited >= len(folders) if route == "no-batches" else waited <= 10, waited
    finally:
        store.close()


def test_pool_stays_capped_under_many_threads(ws, tmp_path, sshd, known_hosts):
    from cmf_backends.ssh import store as sftp_store

    init(ws, tmp_path, key_options(sshd, known_hosts=str(known_hosts)))
    store = store_of(ws)
    made = []
    original = store._connect

    def counting():
        made.append(1)
        return original()

    store._connect = counting
    objects = {}
    for i in range(48):
        data = os.urandom(2_000 + i)
        src = tmp_path / f"o{i}"
        src.write_bytes(data)
        objects[layout.key(hashlib.md5(data).hexdigest())] = src
    try:
        with ThreadPoolExecutor(24) as pool:
            list(pool.map(lambda item: store.put(item[1], item[0]), objects.items()))
        assert store.exists(list(objects)) == set(objects)
        assert 1 <= len(made) <= sftp_store.SESSIONS
    finally:
        store.close()


def test_uploads_leave_no_temp_files(ws, tmp_path, sshd, known_hosts):
    remote = sshd.remote_dir()
    opts = key_options(sshd, known_hosts=str(known_hosts))
    opts["path"] = url(sshd, remote)
    init(ws, tmp_path, opts)
    logged(ws)
    assert api.artifact_push(PIPELINE).ok
    names = [p.name for p in Path(remote).rglob("*")]
    assert names and not [n for n in names if n.endswith(".tmp")], names


# -- DVC reads what cmf wrote ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["key", "password"])
def test_dvc_pull_gets_what_cmf_pushed(auth, ws, tmp_path, sshd, cmf):
    # dvc-ssh 4.3 connects through sshfs, which passes known_hosts=None to asyncssh: DVC checks no host key
    # at all and no DVC option turns it on. Trust the server where asyncssh would look if it did check.
    sshd.trust(user_known_hosts())
    init(ws, tmp_path, key_options(sshd) if auth == "key" else password_options(sshd))
    ds = logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    clone = clone_workspace(ws, tmp_path / "clone", copy_secrets=auth == "password")
    env = {**os.environ, "SSH_AUTH_SOCK": ""}
    done = subprocess.run([DVC, "pull", "-q"], cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for rel, data in ds.files.items():
        assert (clone / rel).read_bytes() == data, rel


def test_cmf_pull_gets_what_dvc_pushed(ws, tmp_path, sshd, cmf):
    sshd.trust(user_known_hosts())
    init(ws, tmp_path, key_options(sshd))
    ds = logged(ws)
    done = subprocess.run([DVC, "push", "-q"], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "SSH_AUTH_SOCK": ""}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ds.forget()
    pulled = cmf("artifact", "pull", "-p", PIPELINE)
    assert pulled.code == 0, pulled.err
    ds.assert_in_place()
