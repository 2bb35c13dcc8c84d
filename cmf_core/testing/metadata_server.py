"""Real servers for the metadata-server tests and benchmarks, started on loopback and stopped by PID.

* :class:`MetadataServer`: the ``cmf server`` command in its own process
  (``python -m cmf_core.cli.server``, the same click command), SQLite or PostgreSQL store.
* :class:`PostgresServer`: a throw-away PostgreSQL cluster (Debian's ``postgresql`` package):
  ``initdb -A trust`` into a temp dir, ``postgres -D DIR -p PORT -k DIR``; run as the ``postgres``
  user when we are root (PostgreSQL refuses to run as root).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from cmf_core.testing.servers import Server, free_port, wait_for_port

__all__ = ["MetadataServer", "PostgresServer", "postgres_binaries"]


def postgres_binaries() -> Optional[Path]:
    """The directory holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer(Server):
    """A PostgreSQL cluster of its own on a free loopback port, trust auth, user ``postgres``; removed on stop."""

    USER = "postgres"

    def __init__(self, log_dir: Path) -> None:
        bindir = postgres_binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bindir = bindir
        self.run_as = self.USER if os.geteuid() == 0 else None
        # not under pytest's tmp dirs: those are 0700 root-only, and the server runs as another user
        self.root = Path(tempfile.mkdtemp(prefix="cmf-pg-"))
        self.data = self.root / "data"
        port = free_port()
        super().__init__([str(bindir / "postgres"), "-D", str(self.data), "-p", str(port), "-k", str(self.root),
                          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
                         port, log_dir / "postgres.log")
        self.host = "127.0.0.1"

    def start(self) -> None:
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        with open(self.log, "ab") as out:
            subprocess.run([str(self.bindir / "initdb"), "-A", "trust", "-U", self.USER, "--no-sync", "-D",
                            str(self.data)], stdout=out, stderr=subprocess.STDOUT, check=True, user=self.run_as)
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         user=self.run_as)
        wait_for_port(self.port, proc=self.proc)
        ready = [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        deadline = time.monotonic() + 60
        while subprocess.run(ready).returncode != 0:  # listening is not yet accepting: it may still start up
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL on port {self.port} does not accept connections; see {self.log}")
            time.sleep(0.1)

    STOP_SIGNAL = signal.SIGINT  # fast shutdown: clients are disconnected, unlike SIGTERM's wait for them

    def stop(self) -> None:
        """Stop by PID, then remove the data."""
        try:
            super().stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class MetadataServer(Server):
    """``cmf server`` on a free loopback port with its data under ``root/data``.

    ``tokens`` turns auth on (written to a token file); ``postgres`` uses that server's database
    ``postgres_db`` instead of the SQLite file; ``max_body_mb`` sets the request-size limit.
    """

    def __init__(self, root: Path, *, tokens: Sequence[str] = (), max_body_mb: Optional[float] = None,
                 postgres: Optional[PostgresServer] = None, postgres_db: str = "mlmd",
                 extra_args: Sequence[str] = ()) -> None:
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.data_dir = root / "data"
        argv: List[str] = [sys.executable, "-m", "cmf_core.cli.server", "--host", "127.0.0.1", "--port", str(port),
                           "--data-dir", str(self.data_dir), "--log-level", "warning"]
        if tokens:
            token_file = root / "tokens"
            token_file.write_text("".join(t + "\n" for t in tokens))
            argv += ["--token-file", str(token_file)]
        if max_body_mb is not None:
            argv += ["--max-body-mb", str(max_body_mb)]
        if postgres is not None:
            argv += ["--postgres-host", postgres.host, "--postgres-port", str(postgres.port), "--postgres-user",
                     postgres.USER, "--postgres-db", postgres_db]
        super().__init__([*argv, *extra_args], port, root / "server.log")
        self.url = f"http://127.0.0.1:{port}"
        self.store_file = None if postgres is not None else self.data_dir / "mlmd"

    def start(self) -> None:
        # tokens come from the token file only: the caller's CMF_SERVER_TOKENS stays out
        env = {k: v for k, v in os.environ.items() if k != "CMF_SERVER_TOKENS"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=env)
        wait_for_port(self.port, timeout=60, proc=self.proc)
