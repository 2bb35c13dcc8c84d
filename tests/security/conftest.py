"""Fixtures of the security probe suite: real ``cmf server`` processes with tokens, on SQLite and PostgreSQL,
started once per test session and stopped by PID, and the payloads the probes push.

Every probe attacks a server from outside, as a stranger (or a token holder gone wrong) would: through HTTP to a
real process.  Tests name their pipelines uniquely, so the session's servers can be shared by every module.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Iterator, List, Optional

import pytest

from cmf_core.testing.metadata_server import MetadataServer, PostgresServer, postgres_binaries

#: The bearer token every probe server accepts.
TOKEN = "probe-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    postgres_binaries() is None, reason="PostgreSQL is not installed"))]


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory) -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session (stopped by PID)."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed")
    with PostgresServer(tmp_path_factory.mktemp("probe-postgres")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory) -> Iterator[MetadataServer]:
    """``cmf server`` on SQLite with token auth, for the whole session."""
    with MetadataServer(tmp_path_factory.mktemp("probe-sqlite"), tokens=[TOKEN], max_body_mb=8) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory, pg_cluster) -> Iterator[MetadataServer]:
    """``cmf server`` on PostgreSQL with token auth, for the whole session."""
    with MetadataServer(tmp_path_factory.mktemp("probe-pg"), tokens=[TOKEN], max_body_mb=8, postgres=pg_cluster,
                        postgres_db="probe") as server:
        yield server


@pytest.fixture(params=STORES)
def any_server(request) -> MetadataServer:
    """Each probe server in turn: the test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue({"sqlite": "sqlite_server", "postgresql": "postgres_server"}[request.param])


def unique(prefix: str = "probe") -> str:
    """A pipeline name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def export(pipeline: str, executions: Optional[List[Dict[str, Any]]] = None, stage: str = "train") -> Dict[str, Any]:
    """A minimal export (the wire's ``json_payload``) of ``pipeline``: one stage, the executions given (default:
    one execution with a uuid, ``lr`` 0.01 and one output dataset)."""
    if executions is None:
        executions = [execution()]
    return {"Pipeline": [{"name": pipeline, "custom_properties": {}, "stages": [
        {"name": f"{pipeline}/{stage}", "custom_properties": {}, "executions": executions}]}]}


def execution(uuid_: Optional[str] = None, custom: Optional[Dict[str, Any]] = None,
              artifact: str = "data/x.csv:0123456789abcdef0123456789abcdef") -> Dict[str, Any]:
    """One execution of an export, with one output Dataset."""
    return {"type": "train", "name": "", "properties": {"Execution_uuid": uuid_ or str(uuid.uuid4()),
                                                        "Context_Type": "train"},
            "custom_properties": {"lr": 0.01} if custom is None else custom,
            "events": [{"type": 4, "artifact": {"name": artifact, "type": "Dataset", "uri": artifact.split(":")[1],
                                                "properties": {}, "custom_properties": {}}}]}


def push_body(payload: Dict[str, Any], pipeline: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """The body of ``POST /mlmd_push`` for an export."""
    name = payload["Pipeline"][0]["name"] if pipeline is None else pipeline
    return {"exec_uuid": None, "json_payload": json.dumps(payload), "pipeline_name": name, **extra}
