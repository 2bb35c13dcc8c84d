"""A real OpenSSH server on loopback for tests and benchmarks: :class:`SSHServer`.

It runs ``/usr/sbin/sshd -D -e`` as root with its own config, host key and
port, and logs in a dedicated, unprivileged test user (made once with
``useradd`` and reused) with either a generated client key or a password.
Every file of one server lives in a fresh directory under ``/tmp`` (the test
user must be able to read ``authorized_keys`` and write remote directories,
which pytest's 0700 temp directories would forbid); :meth:`SSHServer.cleanup`
removes it.  Start and stop go by PID, never by process name.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

from cmf_core.testing.servers import Server, free_port

SSHD = "/usr/sbin/sshd"
USER = "cmftest"
PASSWORD = "cmf-Test-pw-4711"


def _run(*argv: str, stdin: Optional[str] = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def ensure_user(name: str = USER, password: str = PASSWORD) -> pwd.struct_passwd:
    """Create the login ``name`` unless it exists, and (re)set its password. Needs root."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        try:
            _run("useradd", "--create-home", "--shell", "/bin/sh", name)
        except RuntimeError:
            if name not in {entry.pw_name for entry in pwd.getpwall()}:
                raise
            # another test session made it meanwhile
    _run("chpasswd", stdin=f"{name}:{password}\n")  # also unlocks the account for key logins
    return pwd.getpwnam(name)


def keygen(path: Path, comment: str) -> None:
    """A fresh ed25519 key pair without passphrase at ``path`` and ``path.pub`` (replacing any)."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


class SSHServer(Server):
    """``sshd`` on a free loopback port (never 22), serving SFTP to :data:`USER`.

    * ``client_key`` -- private key that ``authorized_keys`` accepts;
    * ``password`` -- the user's password (password logins are on);
    * ``data`` -- a directory the user owns: put remote directories here (:meth:`remote_dir`);
    * :meth:`known_hosts_line` / :meth:`trust` -- the entry a client needs to accept the host key;
    * :meth:`swap_host_key` -- a new host key, restarting on the same port if running.
    """

    def __init__(self, user: str = USER, password: str = PASSWORD, sftp_only: bool = False) -> None:
        """``sftp_only``: logins run nothing but SFTP (``ForceCommand internal-sftp``), as on an SFTP-only account."""
        self.user, self.password, self.sftp_only = user, password, sftp_only
        self.base = Path(tempfile.mkdtemp(prefix="cmf-sshd-"))
        port = free_port()
        try:
            config = self._prepare(port)
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        super().__init__([SSHD, "-D", "-e", "-f", str(config)], port, self.base / "sshd.log")

    def _prepare(self, port: int) -> Path:
        """Make the user, the keys, ``authorized_keys``, the data directory and ``sshd_config``."""
        self.base.chmod(0o755)
        account = ensure_user(self.user, self.password)
        self.host_key = self.base / "host_ed25519"
        self.client_key = self.base / "client_ed25519"
        keygen(self.host_key, "cmf test host")
        keygen(self.client_key, "cmf test client")
        authorized = self.base / "authorized_keys"
        shutil.copyfile(self.client_key.with_name(self.client_key.name + ".pub"), authorized)
        authorized.chmod(0o644)
        self.data = self.base / "data"
        self.data.mkdir()
        os.chown(self.data, account.pw_uid, account.pw_gid)
        config = self.base / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.base / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "StrictModes no",  # the files live under /tmp, which is world-writable
            "UsePAM no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "UseDNS no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            *(["ForceCommand internal-sftp"] if self.sftp_only else []),
        ]) + "\n")
        return config

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        super().start()

    def restart(self) -> None:
        """Stop and start again on the same port (sessions already open stay with their old process)."""
        self.stop()
        self.start()

    def swap_host_key(self) -> None:
        """Replace the host key (clients that knew the old one must now refuse the server)."""
        keygen(self.host_key, "cmf test host (new)")
        if self.running:
            self.restart()

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` of the current host key."""
        kind, blob = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"{kind} {blob}"

    def known_hosts_line(self) -> str:
        """The ``known_hosts`` entry of this server: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        return f"[127.0.0.1]:{self.port} {self.host_public_key}\n"

    def trust(self, known_hosts: Path) -> Path:
        """Append :meth:`known_hosts_line` to ``known_hosts`` (created 0600 with its directory)."""
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as out:
            out.write(self.known_hosts_line())
        return known_hosts

    def remote_dir(self, name: str = "remote") -> str:
        """A fresh, not yet existing absolute path under :attr:`data` that the user may create."""
        return f"{self.data}/{name}-{uuid.uuid4().hex[:8]}"

    def read_only_dir(self, name: str = "locked") -> str:
        """A new directory owned by root (mode 0755) under :attr:`data`: the user cannot write in it."""
        path = self.data / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o755)
        return str(path)

    def cleanup(self) -> None:
        """Stop the server and remove its directory (keys, config, remote data)."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
