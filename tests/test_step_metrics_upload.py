"""Step-metrics files travel with ``cmf metadata push``: the server keeps them by md5 (refusing bytes that do not
match their name, and names that are not an md5), and a push to an older server without the route only warns."""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import requests
import uvicorn
from fastapi import FastAPI, Request

from cmf_core import api
from cmf_core.server.client import OLD_SERVER
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.servers import free_port
from cmflib.cmf import Cmf
from tests.test_server import init, write


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MetadataServer]:
    """One open server for the module, stopped by PID."""
    with MetadataServer(tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    for key in ("CMF_SERVER_TOKEN", "CMF_SERVER_TOKENS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CMF_SERVER_RETRIES", "0")


def workspace(tmp_path: Path, url: str, monkeypatch) -> Path:
    """A workspace pointing at ``url``; the current directory."""
    root = init(tmp_path / "ws", tmp_path / "store", url, tmp_path / "origin.git")
    monkeypatch.chdir(root)
    return root


def log_step_metrics(root: Path, pipeline: str, names: Tuple[str, ...] = ("training",)) -> List[Tuple[Path, str]]:
    """A one-execution pipeline with three steps of each metrics in ``names`` committed: (parquet file, md5)
    of each.  The values depend on ``pipeline`` and the name: no two files (on the server) are the same."""
    metawriter = Cmf(filepath=str(root / "mlmd"), pipeline_name=pipeline)
    metawriter.create_context("train")
    metawriter.create_execution("train")
    files = []
    for name in names:
        for step in range(3):
            metawriter.log_metric(name, {"value": 1.0 / (step + 1), "step": step, "run": f"{pipeline}/{name}"})
        artifact = metawriter.commit_metrics(name)
        files.append((root / artifact.name.split(":")[0], artifact.uri))
    metawriter.finalize()
    return files


def step_metrics_warnings(warnings: List[str]) -> List[str]:
    return [w for w in warnings if "step metrics" in w]


# -- the server's copy -------------------------------------------------------------------------------------


def test_push_uploads_the_step_metrics_file(tmp_path, server, monkeypatch):
    root = workspace(tmp_path, server.url, monkeypatch)
    ((parquet, md5),) = log_step_metrics(root, "charts")
    assert md5 == hashlib.md5(parquet.read_bytes()).hexdigest()
    result = api.metadata_push("charts")
    assert result.status == "success" and not step_metrics_warnings(result.warnings)
    assert (server.data_dir / "step_metrics" / md5).read_bytes() == parquet.read_bytes()
    assert str(parquet) in result.uploaded


def test_bytes_that_do_not_match_their_md5_name_are_refused(server):
    wrong = hashlib.md5(b"other bytes").hexdigest()
    r = requests.post(f"{server.url}/api/step-metrics", files={"file": (wrong, b"the real bytes")})
    assert r.status_code == 422, r.text
    assert wrong in r.json()["detail"] and hashlib.md5(b"the real bytes").hexdigest() in r.json()["detail"]
    stored = server.data_dir / "step_metrics"
    assert not (stored / wrong).exists()
    assert not list(stored.glob(".upload-*"))  # the temp file went too


@pytest.mark.parametrize("name", ["../x", "abc", "z" * 32, "A" * 32, "0" * 31 + "/", "0" * 33])
def test_a_name_that_is_not_an_md5_is_400(server, name):
    for prefix in ("", "/api"):
        r = requests.post(f"{server.url}{prefix}/step-metrics", files={"file": (name, b"x")})
        assert r.status_code == 400 and "md5" in r.json()["detail"], (prefix, name, r.text)
    assert not (server.data_dir.parent / "x").exists()


# -- the client --------------------------------------------------------------------------------------------


def test_a_missing_or_rewritten_local_file_is_a_warning(tmp_path, server, monkeypatch, cmf):
    root = workspace(tmp_path, server.url, monkeypatch)
    (gone, gone_md5), (changed, changed_md5) = log_step_metrics(root, "lost", ("gone", "changed"))
    gone.unlink()
    write(changed, "rewritten by a later commit_metrics")
    pushed = cmf("metadata", "push", "-p", "lost")
    assert pushed.code == 0, pushed.err
    assert f"cmf: warning: step metrics file {gone.relative_to(root)} not found; not uploaded" in pushed.err
    assert f"step metrics file {changed.relative_to(root)} has changed since it was logged" in pushed.err
    assert not (server.data_dir / "step_metrics" / gone_md5).exists()
    assert not (server.data_dir / "step_metrics" / changed_md5).exists()


class OldServer:
    """A cmf server from before ``/step-metrics``, in a thread: push, python-env and label are accepted, and
    step-metrics is answered ``status`` (404: no such route; 405: a route for GET only).  ``paths``: the
    paths of the requests it got."""

    def __init__(self, status: int) -> None:
        self.paths: List[str] = []
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next):
            self.paths.append(request.url.path)
            return await call_next(request)

        @app.post("/api/mlmd_push")
        async def push():
            return {"status": "success"}

        @app.post("/api/python-env")
        @app.post("/api/label")
        async def upload(request: Request):
            await request.body()
            return {}

        if status == 405:
            app.get("/api/step-metrics")(lambda: {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "OldServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the old server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.mark.parametrize("status", [404, 405])
def test_an_old_server_costs_one_warning_not_the_push(tmp_path, monkeypatch, status):
    with OldServer(status) as old:
        root = workspace(tmp_path, old.url, monkeypatch)
        log_step_metrics(root, "old", ("loss", "accuracy"))
        result = api.metadata_push("old")
    assert result.status == "success"
    assert step_metrics_warnings(result.warnings) == [OLD_SERVER]
    assert old.paths.count("/api/step-metrics") == 1  # two files, tried once: no more for this push
    assert "/api/python-env" in old.paths and not [u for u in result.uploaded if "/metrics/" in u]
