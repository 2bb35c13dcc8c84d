"""Pages under a stream of pushes: the two causes of slow pages on PostgreSQL that bench/load.py found.

* Every push opened a connection of its own: PostgreSQL forked a backend and filled its catalog caches each
  time, 15-20 ms of its CPU per push, which the pages' queries waited for.
* A list sorted by a parameter looked the value up in three correlated subqueries per row, which PostgreSQL
  planned on the (name, custom, value) index while its statistics lagged behind the pushes: each row read every
  row of that name, and the page grew with the square of the pipeline.
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List

import httpx
import psycopg

from cmf_core.server.db import Session
from cmf_core.server.files import ServerFiles
from cmf_core.server.reads import Reads
from cmf_core.server.store import PostgresConfig, ServerStore
from cmf_core.testing.metadata_server import MetadataServer
from tests.conftest import NEEDS_POSTGRES

pytestmark = NEEDS_POSTGRES
P = "load"


def export(executions: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"Pipeline": [{"name": P, "custom_properties": {}, "stages": [
        {"name": f"{P}/train", "custom_properties": {}, "executions": executions}]}]}


def execution(n: int) -> Dict[str, Any]:
    """One execution with the parameters ``seed`` and ``lr`` and one output dataset of its own."""
    md5 = uuid.uuid4().hex
    return {"type": "train", "name": "", "properties": {"Execution_uuid": str(uuid.uuid4()), "Context_Type": "train"},
            "custom_properties": {"seed": n, "lr": 0.001 * (n % 100 + 1)},
            "events": [{"type": 4, "artifact": {"name": f"data/{n}.csv:{md5}", "type": "Dataset", "uri": md5,
                                                "properties": {}, "custom_properties": {}}}]}


def push_one(client: httpx.Client) -> None:
    """Push one new execution into ``P`` with its uuid, as ``cmf metadata push -e`` does."""
    one = execution(0)
    body = {"exec_uuid": one["properties"]["Execution_uuid"], "json_payload": json.dumps(export([one])),
            "pipeline_name": P}
    assert client.post("/mlmd_push", json=body).status_code == 200


def settled(count: Callable[[], int]) -> int:
    """``count()`` once it has stayed the same for half a second (at most 10 s): a PostgreSQL backend reports its
    session to the statistics up to a second late, so what a store process connected while it started (in the
    background) may be counted in the middle of the test."""
    last, deadline = count(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now == last:
            break
        last = now
    return last


def test_pushes_keep_their_database_connection(postgres, tmp_path):
    """30 pushes through a real server open (almost) no connection: each store process keeps the one it has."""
    def sessions() -> int:
        with psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.USER, dbname="postgres") as admin:
            return admin.execute("SELECT sessions FROM pg_stat_database WHERE datname = 'reuse'").fetchone()[0]

    with MetadataServer(tmp_path, postgres=postgres, postgres_db="reuse") as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(4):  # each store process connects once
            push_one(client)
        before = settled(sessions)
        for _ in range(30):
            push_one(client)
        assert settled(sessions) - before <= 4


class _OneConnection:
    """The read path's database on one connection of the test's, whose transaction counts what the reads read."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.connection.cursor() as cursor:
            yield Session(cursor, postgres=True)


def test_a_list_sorted_by_a_parameter_reads_each_value_once(postgres, tmp_path):
    """A page of 400 executions sorted by a parameter, in a store the planner has no statistics of yet (as while
    pushes stream in): the rows it reads stay in proportion to the pipeline, not its square."""
    config = PostgresConfig(postgres.host, postgres.port, postgres.USER, "sorted")
    store = ServerStore(postgres=config)
    try:
        store.push(json.dumps(export([execution(n) for n in range(400)])))
    finally:
        store.close()
    with psycopg.connect(host=config.host, port=config.port, user=config.user, dbname=config.dbname) as connection:
        properties = connection.execute("SELECT count(*) FROM executionproperty").fetchone()[0]
        page = Reads(_OneConnection(connection), ServerFiles(tmp_path)).executions(P, sort="param.lr", order="desc")
        read = connection.execute("SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
                                  "WHERE relname = 'executionproperty'").fetchone()[0]
    assert [item["params"]["lr"] for item in page["items"]][:2] == [0.1, 0.1]
    assert read < 5 * properties, f"{read} property rows read for a page, {properties} in the store"
