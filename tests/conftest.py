"""Shared fixtures: isolated workspaces and ways to run ``cmf`` in-process or as a real process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from cmf_core.cli import main
from cmf_core.testing import Dataset
from cmf_core.testing.metadata_server import MysqlServer, PostgresServer, mariadb_binaries, postgres_binaries

#: Marks a test (or a parameter) that needs Debian's PostgreSQL.
NEEDS_POSTGRES = pytest.mark.skipif(postgres_binaries() is None, reason="PostgreSQL is not installed")

CMF = shutil.which("cmf", path=str(Path(sys.executable).parent)) or "cmf"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No user config leaks in (a private HOME, git identity, no DVC analytics), and no test
    runs in the source tree: each starts in an empty directory of its own."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@x"}.items():
        monkeypatch.setenv(key, value)
    for key in ("CONFIG_FILE", "CMF_STRICT_PLUGINS", "CMF_NEO4J_PASSWORD", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """An empty directory that is the current directory of the test."""
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cmf(capsys):
    """Run the CLI in-process: ``cmf("init", "show")`` -> Result(code, out, err)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_cmf(args: List[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> Result:
    """Run the installed ``cmf`` console script as a real process."""
    proc = subprocess.run([CMF, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def snapshot(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` (``.git`` included) with its bytes, to prove nothing changed.

    Empty ``*.lock`` files are left out: they are the files cmf takes its locks on (``<mlmd>.lock``, the
    cache's ``cmf-transfer.lock``), created by the first command that locks, with no content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not (p.suffix == ".lock" and p.stat().st_size == 0)}


@pytest.fixture
def workspace(ws, tmp_path) -> Path:
    """``ws`` after ``cmf init local`` with a store in ``tmp_path/store``."""
    from cmf_core import api

    api.init("local", {"path": str(tmp_path / "store")}, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)
    return ws


def write(path: Path, text: str) -> Path:
    """Create a file (and its directories) with ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One ``rclone serve s3`` for the whole test session, stopped by PID at the end."""
    from cmf_core.testing.servers import S3Server

    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def tls_s3_server(tmp_path_factory):
    """``rclone serve s3`` over https with a self-signed certificate (``.pem["cert"]`` is its CA bundle)."""
    from cmf_core.testing.servers import S3Server

    with S3Server(tmp_path_factory.mktemp("s3-tls"), tls=True) as server:
        yield server


@pytest.fixture
def tls_bucket(tls_s3_server) -> str:
    """A fresh, empty bucket on the https S3 server."""
    return tls_s3_server.bucket(f"tls-{os.urandom(4).hex()}")


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return s3_server.bucket(f"b-{name}-{os.urandom(3).hex()}")


def clone_workspace(ws: Path, clone: Path, copy_secrets: bool = True) -> Path:
    """Commit the workspace and ``git clone`` it, as a colleague would get it.

    ``.dvc/config.local`` holds the remote's secrets and is git-ignored, so a clone
    has none: that is the point of keeping them out of git.  A colleague brings
    their own; with ``copy_secrets`` we copy ours.
    """
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "workspace"], cwd=ws, check=True)
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True, capture_output=True)
    secrets = ws / ".dvc" / "config.local"
    if copy_secrets and secrets.exists():
        assert not (clone / ".dvc" / "config.local").exists()
        shutil.copy(secrets, clone / ".dvc" / "config.local")
    return clone


def one_error_line(err: str) -> str:
    """The single ``cmf: error:`` line of a failed command (warnings aside)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("cmf: warning")]
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith("cmf: error:"), lines[0]
    return lines[0]


def logged_sample(ws: Path, count: int = 3) -> Dataset:
    """A file and a folder of ``count`` files (random bytes), logged in ``ws`` as outputs of PIPELINE."""
    files = {"data/a.csv": b"id,value\n1,2\n"}
    files.update({f"folder/part {i}.bin": os.urandom(1000 + i) for i in range(count)})
    return Dataset.write(ws, files, ["data/a.csv", "folder"]).log()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """One real PostgreSQL server for the test module, accepting connections; stopped by PID.  Skipped without
    PostgreSQL."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed")
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def mysql(tmp_path_factory):
    """One real MariaDB server for the test module, accepting connections as ``MysqlServer.USER``; stopped by PID.
    Skipped without MariaDB (or PyMySQL)."""
    if mariadb_binaries() is None:
        pytest.skip("MariaDB is not installed")
    pytest.importorskip("pymysql")
    with MysqlServer(tmp_path_factory.mktemp("mysql")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the test module (``tests/browser.py``), closed at its end: Playwright's sync API
    keeps an event loop and threads in this process while it is open, so that a later module's
    ``asyncio.run`` (a sync) or fork (a shared pull) would be refused."""
    from tests.browser import CHROMIUM, launch

    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests need Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)")
    yield from launch()


@pytest.fixture
def page(browser):
    """A fresh 1280x800 page; ``page.errors`` collects console and page errors (CSP violations among them)."""
    from tests.browser import new_page

    yield from new_page(browser)
