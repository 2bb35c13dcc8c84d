"""Running the metadata server, as an operator sees it: /health tells whether the database answers and with
which schema, SIGTERM lets the push in flight finish, each push is logged with its pipeline, counts and time,
and a store of another ML Metadata schema is refused by name.  Real server processes, real PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict

import requests

from cmf_core.server.client import MetadataClient
from cmf_core.server.db import SCHEMA_VERSION
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer
from tests.conftest import NEEDS_POSTGRES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from metadata_server import generate  # noqa: E402  - the benchmark's pipeline generator



def test_health_reports_the_database_and_its_schema(tmp_path):
    with MetadataServer(tmp_path / "srv", tokens=["t0ken"]) as srv:
        health = requests.get(f"{srv.url}/health", timeout=10)  # no token needed
        assert health.status_code == 200
        assert health.json() | {"max_body_bytes": 0} == {"status": "ok", "store": "sqlite", "max_body_bytes": 0,
                                                          "database": "reachable", "schema_version": SCHEMA_VERSION}


@NEEDS_POSTGRES
def test_health_is_503_while_postgresql_is_down(tmp_path):
    postgres = PostgresServer(tmp_path)
    postgres.start()
    try:
        with MetadataServer(tmp_path / "srv", postgres=postgres, postgres_db="ops") as srv:
            assert requests.get(f"{srv.url}/api/health", timeout=10).json()["database"] == "reachable"
            postgres.stop()
            down = requests.get(f"{srv.url}/api/health", timeout=60)
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable" and down.json()["database"].startswith("unreachable")
    finally:
        postgres.stop()


def test_sigterm_lets_the_push_in_flight_finish(tmp_path):
    """SIGTERM during a long push: the push is answered (success), the server exits, and a server started on
    the same store has the whole pipeline."""
    payload = json.dumps(generate(1000, 10000))
    srv = MetadataServer(tmp_path / "srv", extra_args=["--log-level", "info"])
    srv.start()
    answer: Dict[str, requests.Response] = {}
    try:
        def push() -> None:
            answer["r"] = requests.post(f"{srv.url}/mlmd_push", timeout=300, json={
                "exec_uuid": None, "json_payload": payload, "pipeline_name": "bench"})

        thread = threading.Thread(target=push)
        thread.start()
        time.sleep(0.8)  # the push is being merged (it takes seconds)
        assert thread.is_alive(), "the push ended before the signal: the test would not test anything"
        os.kill(srv.proc.pid, signal.SIGTERM)
        thread.join()
        assert srv.proc.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    finally:
        srv.stop()
    assert answer["r"].status_code == 200 and answer["r"].json()["executions"] == 1000
    log = srv.log.read_text()
    assert "push bench: success in " in log and "(1000 executions, 10000 artifacts" in log
    with MetadataServer(tmp_path / "srv") as again:
        pulled = json.loads(MetadataClient(again.url).pull("bench"))
        assert sum(len(stage["executions"]) for stage in pulled["Pipeline"][0]["stages"]) == 1000


def test_a_store_of_another_schema_version_is_refused_by_name(tmp_path):
    with MetadataServer(tmp_path / "srv") as srv:
        requests.post(f"{srv.url}/mlmd_push", timeout=60, json={
            "exec_uuid": None, "json_payload": json.dumps(generate(10, 20)), "pipeline_name": "bench"})
    older = tmp_path / "older.mlmd"
    with sqlite3.connect(srv.store_file) as live, sqlite3.connect(older) as db:
        live.backup(db)
        db.execute("UPDATE mlmdenv SET schema_version = ?", (SCHEMA_VERSION - 1,))
    ui = subprocess.run([sys.executable, "-c", "from cmf_core.cli import main; raise SystemExit(main())", "ui",
                         "--mlmd", str(older)],
                        capture_output=True, text=True, timeout=120)
    assert ui.returncode == 1
    assert f"schema version {SCHEMA_VERSION - 1}; this cmf reads version {SCHEMA_VERSION}" in ui.stderr


def cmf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from cmf_core.cli import main; raise SystemExit(main())", *args],
                          capture_output=True, text=True, timeout=300)


@NEEDS_POSTGRES
def test_migrate_to_postgres_gives_the_same_pulls(tmp_path):
    """Every pipeline of an SQLite store copied into PostgreSQL: pulls from both give the same export (ids, times
    and the order of rows apart); a second run creates nothing."""
    from tests.test_server import _payload
    from tests.test_server_transactions import VOLATILE, canonical  # the order of rows is no part of a store

    pipelines = {"bench": generate(30, 300), "second": json.loads(_payload("second", "0" * 32, 1))}
    sqlite_root = tmp_path / "sqlite"
    with MetadataServer(sqlite_root) as srv:
        for name, export in pipelines.items():
            client = MetadataClient(srv.url)
            assert client.push(name, json.dumps(export))["status"] == "success"
    postgres = PostgresServer(tmp_path)
    postgres.start()
    try:
        target = ["--to-postgres", "--postgres-host", postgres.host, "--postgres-port", str(postgres.port),
                  "--postgres-db", "migrated"]
        first = cmf("server", "migrate", "--store", str(srv.store_file), *target)
        assert first.returncode == 0, first.stderr
        assert "bench: success" in first.stdout and "migrated 2 pipelines" in first.stdout
        again = cmf("server", "migrate", "--store", str(srv.store_file), *target)
        assert again.returncode == 0 and again.stdout.count(": exists") == 2, again.stdout
        with MetadataServer(sqlite_root) as before, \
                MetadataServer(tmp_path / "pg", postgres=postgres, postgres_db="migrated") as after:
            for name in pipelines:
                old, new = (json.loads(MetadataClient(s.url).pull(name)) for s in (before, after))
                assert canonical(new, VOLATILE) == canonical(old, VOLATILE)
    finally:
        postgres.stop()
    missing = cmf("server", "migrate", "--store", str(tmp_path / "none"), "--to-postgres", "--postgres-host", "h")
    assert missing.returncode == 1 and "no SQLite store at" in missing.stderr
