"""Real servers for the metadata-server tests and benchmarks, started on loopback and stopped by PID.

* :class:`MetadataServer`: the ``cmf server`` command in its own process
  (``python -m cmf_core.cli.server``, the same click command), SQLite or PostgreSQL store.
* :class:`PostgresServer`: a throw-away PostgreSQL cluster (Debian's ``postgresql`` package):
  ``initdb -A trust`` into a temp dir, ``postgres -D DIR -p PORT -k DIR``; run as the ``postgres``
  user when we are root (PostgreSQL refuses to run as root).
* :class:`MysqlServer`: a throw-away MariaDB server (Debian's ``mariadb-server`` package):
  ``mariadb-install-db`` into a temp dir, ``mariadbd`` on a loopback port with its own socket; run as the
  ``mysql`` user when we are root.
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
from typing import Any, Callable, Dict, List, Optional, Sequence

from cmf_core.testing.servers import Server, free_port, wait_for_port

__all__ = ["MetadataServer", "PostgresServer", "postgres_binaries", "MysqlServer", "mariadb_binaries"]


def postgres_binaries() -> Optional[Path]:
    """The directory holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(candidates[-1]).parent if candidates else None


class _DatabaseServer(Server):
    """A database server of its own: its data in a temp dir ``root`` (not under pytest's tmp dirs: those are 0700
    root-only, and the server runs as the user ``run_as`` when we are root), made by an init command, started as
    that user, stopped by PID and removed."""

    PRODUCT = ""  # as errors name it

    def __init__(self, argv: List[str], port: int, log: Path, root: Path, user: str) -> None:
        super().__init__(argv, port, log)
        self.root = root
        self.run_as = user if os.geteuid() == 0 else None
        self.host = "127.0.0.1"

    def _start(self, init: List[str], accepting: Callable[[], Any]) -> Any:
        """Run ``init``, start the server, and wait until ``accepting()`` answers (truthy): what it answers."""
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        with open(self.log, "ab") as out:
            subprocess.run(init, stdout=out, stderr=subprocess.STDOUT, check=True, user=self.run_as)
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         user=self.run_as)
        wait_for_port(self.port, timeout=60, proc=self.proc)
        deadline = time.monotonic() + 60
        while True:  # listening is not yet accepting: it may still start up
            answer = accepting()
            if answer:
                return answer
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.PRODUCT} on port {self.port} does not accept connections; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop by PID, then remove the data."""
        try:
            super().stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer(_DatabaseServer):
    """A PostgreSQL cluster of its own on a free loopback port, trust auth, user ``postgres``; removed on stop."""

    USER, PRODUCT = "postgres", "PostgreSQL"

    def __init__(self, log_dir: Path) -> None:
        bindir = postgres_binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bindir = bindir
        root = Path(tempfile.mkdtemp(prefix="cmf-pg-"))
        self.data = root / "data"
        port = free_port()
        super().__init__([str(bindir / "postgres"), "-D", str(self.data), "-p", str(port), "-k", str(root),
                          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
                         port, log_dir / "postgres.log", root, self.USER)

    def start(self) -> None:
        ready = [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        self._start([str(self.bindir / "initdb"), "-A", "trust", "-U", self.USER, "--no-sync", "-D", str(self.data)],
                    lambda: subprocess.run(ready).returncode == 0)

    STOP_SIGNAL = signal.SIGINT  # fast shutdown: clients are disconnected, unlike SIGTERM's wait for them


def mariadb_binaries() -> Optional[Dict[str, str]]:
    """The paths of ``mariadbd`` and ``mariadb-install-db``, or None when MariaDB is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])  # mariadbd is in sbin
    found = {name: shutil.which(name, path=path) for name in ("mariadbd", "mariadb-install-db")}
    return found if all(found.values()) else None  # type: ignore[return-value]


class MysqlServer(_DatabaseServer):
    """A MariaDB server of its own on a free loopback port, removed on stop.  ``USER`` (password ``PASSWORD``) may
    do anything; the character set is utf8mb4, as MySQL 8 and Debian's MariaDB have it."""

    USER, PASSWORD, PRODUCT = "cmf", "cmf-test-password", "MariaDB"

    def __init__(self, log_dir: Path) -> None:
        programs = mariadb_binaries()
        if programs is None:
            raise RuntimeError("MariaDB is not installed (apt-get install -y mariadb-server)")
        self.install_db = programs["mariadb-install-db"]
        root = Path(tempfile.mkdtemp(prefix="cmf-mariadb-"))
        self.options = ["--no-defaults", f"--datadir={root / 'data'}", "--skip-name-resolve",
                        "--innodb-log-file-size=8M", "--character-set-server=utf8mb4"]
        port = free_port()
        super().__init__([programs["mariadbd"], *self.options, f"--port={port}", "--bind-address=127.0.0.1",
                          f"--socket={root / 'socket'}", "--innodb-flush-log-at-trx-commit=0"],
                         port, log_dir / "mariadb.log", root, "mysql")

    def start(self) -> None:
        import pymysql

        def root_connection() -> Any:
            try:
                return pymysql.connect(host=self.host, port=self.port, user="root")  # no password, loopback only
            except pymysql.OperationalError:
                return None

        root = self._start([self.install_db, *self.options, "--auth-root-authentication-method=normal",
                            "--skip-test-db"], root_connection)
        with root, root.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", [self.USER, self.PASSWORD])
            cursor.execute("GRANT ALL ON *.* TO %s@'%%'", [self.USER])


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
