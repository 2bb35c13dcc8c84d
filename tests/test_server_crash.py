"""A team's server as real processes: killed with SIGKILL in the middle of pushes, run as several processes on
one PostgreSQL, and read while it writes.

* kill -9 of ``cmf server`` at random points of a push, 10 rounds per store type: after a restart the pipeline
  is exactly as before the push or complete, and pushing the lost ones again creates everything once;
* two ``cmf server`` processes (one of them with ``--workers 2``) on one PostgreSQL database, 8 clients pushing
  at once, to pipelines of their own and to executions of one shared pipeline: afterwards every execution and
  artifact is there exactly once;
* a reader polling during a long push never sees part of it and never waits longer than 200 ms.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest
import requests

from cmf_core.testing.metadata_server import MetadataServer, PostgresServer
from tests.conftest import NEEDS_POSTGRES
from tests.test_server_transactions import artifact, execution, export

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from metadata_server import generate  # noqa: E402

ROUNDS = 10


def payload(tag: str, executions: int, artifacts: int) -> Tuple[str, Set[str], Set[str]]:
    """A pipeline export of its own (every uuid and artifact name new): the JSON, its uuids and artifact names."""
    data = json.loads(json.dumps(generate(executions, artifacts)).replace('"data/', f'"{tag}/'))
    stages = data["Pipeline"][0]["stages"]
    uuids = {e["properties"]["Execution_uuid"] for s in stages for e in s["executions"]}
    names = {ev["artifact"]["name"] for s in stages for e in s["executions"] for ev in e["events"]}
    return json.dumps(data), uuids, names


def push(url: str, text: str, pipeline: str = "bench") -> requests.Response:
    return requests.post(f"{url}/mlmd_push", json={"exec_uuid": None, "json_payload": text,
                                                   "pipeline_name": pipeline}, timeout=300)


def stored(url: str, pipeline: str = "bench") -> Tuple[List[str], List[str]]:
    """The pipeline's execution uuids and artifact names as a pull gives them (with repeats, if any)."""
    r = requests.post(f"{url}/mlmd_pull", json={"pipeline_name": pipeline, "exec_uuid": None}, timeout=300)
    if r.status_code == 404:
        return [], []
    r.raise_for_status()
    executions = [e for s in r.json()["Pipeline"][0]["stages"] for e in s["executions"]]
    artifacts = {(ev["artifact"]["name"], ev["artifact"]["id"]) for e in executions for ev in e["events"]}
    return [e["properties"]["Execution_uuid"] for e in executions], sorted(name for name, _ in artifacts)


def server(root: Path, pg: Optional[PostgresServer], *args: str) -> MetadataServer:
    """``cmf server`` on ``root/data/mlmd``, or on the PostgreSQL database of the test (named after its tmp dir)."""
    srv = MetadataServer(root, postgres=pg, postgres_db=root.parent.name.lower()[-60:], extra_args=args)
    srv.start()
    return srv


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=NEEDS_POSTGRES)])
def test_a_server_killed_mid_push_leaves_the_pipeline_as_before_or_complete(kind, tmp_path, request):
    pg = request.getfixturevalue("postgres") if kind == "postgres" else None
    seed = random.randrange(2 ** 32)
    rng = random.Random(seed)
    rounds = [payload(f"r{i}", 300, 3000) for i in range(ROUNDS)]
    srv = server(tmp_path / "srv", pg)
    try:
        warm, expected, names = payload("warm", 300, 3000)
        started = time.monotonic()
        assert push(srv.url, warm).status_code == 200
        length = time.monotonic() - started  # how long such a push takes: the kills land inside it
        lost = []
        for i, (text, uuids, artifacts) in enumerate(rounds):
            answer: Dict[str, requests.Response] = {}

            def send() -> None:
                try:
                    answer["r"] = push(srv.url, text)
                except requests.ConnectionError:
                    pass
            thread = threading.Thread(target=send)
            thread.start()
            time.sleep(rng.uniform(0.05, length))
            os.kill(srv.proc.pid, signal.SIGKILL)
            thread.join()
            srv.proc.wait(timeout=30)
            srv = server(tmp_path / "srv", pg)  # starts on whatever the kill left
            got, got_names = stored(srv.url)
            assert len(got) == len(set(got)), f"seed {seed}, round {i}: an execution is there twice"
            if set(got) == expected:
                assert "r" not in answer, f"seed {seed}, round {i}: an answered push is missing"
                assert set(got_names) == names
                lost.append(i)
            else:
                assert set(got) == expected | uuids, f"seed {seed}, round {i}: part of a push is there"
                assert set(got_names) == names | artifacts
                expected, names = expected | uuids, names | artifacts
        assert len(lost) >= 3, f"seed {seed}: only {len(lost)} of {ROUNDS} kills landed before the push ended"
        for i in lost:  # pushed again, each lost push is applied once
            answer = push(srv.url, rounds[i][0])
            assert answer.status_code == 200 and answer.json()["executions"] == 300
            expected, names = expected | rounds[i][1], names | rounds[i][2]
        got, got_names = stored(srv.url)
        assert sorted(got) == sorted(expected) and got_names == sorted(names)
        assert push(srv.url, rounds[0][0]).json()["status"] == "exists"
        total = requests.get(f"{srv.url}/api/pipelines/bench/executions", params={"size": 1}, timeout=30).json()
        assert total["total"] == len(expected) == (ROUNDS + 1) * 300
    finally:
        srv.stop()


@NEEDS_POSTGRES
def test_several_server_processes_on_one_postgresql_lose_nothing(postgres, tmp_path):
    """Server A runs 2 uvicorn workers, server B is a process of its own; 8 clients push at once, half to each:
    3 pushes each to a pipeline of their own and 3 executions each to one shared pipeline, all reading one
    shared dataset and writing datasets of their own."""
    shared = artifact("shared.csv")
    a = server(tmp_path / "a", postgres, "--workers", "2")
    b = server(tmp_path / "b", postgres)
    try:
        start = threading.Barrier(8)
        failures: List[str] = []
        mine: Dict[str, List[str]] = {}

        def client(n: int) -> None:
            url = (a, b)[n % 2].url
            start.wait()
            for k in range(3):
                for pipeline in (f"own{n}", "shared"):
                    u = str(uuid.uuid4())
                    mine.setdefault(pipeline, []).append(u)
                    text = export(pipeline, [(f"{pipeline}/s{k}", {}, [execution(pipeline, f"s{k}", (u,), [shared], [
                        artifact(f"{pipeline}/{n}/{k}.csv")])])])
                    r = push(url, text, pipeline)
                    if r.status_code != 200 or r.json()["status"] != "success":
                        failures.append(f"{pipeline} {n}/{k}: {r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures
        for pipeline, uuids in mine.items():
            got, names = stored(b.url, pipeline)
            assert sorted(got) == sorted(uuids)
            assert len(names) == len(set(names)) == len(uuids) + 1  # its own outputs and the shared dataset
        every = requests.get(f"{a.url}/api/artifacts", params={"size": 500}, timeout=30)
        if every.status_code == 200:  # the read API lists the store's artifacts once each
            listed = [x["name"] for x in every.json()["items"]]
            assert len(listed) == len(set(listed))
        assert len(mine["shared"]) == 24 and sum(len(v) for v in mine.values()) == 48
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=NEEDS_POSTGRES)])
def test_a_reader_during_a_long_push_sees_all_or_nothing_and_never_waits(kind, tmp_path, request):
    pg = request.getfixturevalue("postgres") if kind == "postgres" else None
    text, uuids, _ = payload("long", 1000, 10000)
    srv = server(tmp_path / "srv", pg)
    try:
        requests.get(f"{srv.url}/api/pipelines", timeout=30)  # warm: first connections made
        answer: Dict[str, requests.Response] = {}
        thread = threading.Thread(target=lambda: answer.setdefault("r", push(srv.url, text)))
        thread.start()
        waits, totals = [], set()
        while thread.is_alive():
            started = time.monotonic()
            r = requests.get(f"{srv.url}/api/pipelines/bench/executions", params={"size": 1}, timeout=30)
            waits.append(time.monotonic() - started)
            totals.add(r.json()["total"] if r.status_code == 200 else 0)
            time.sleep(0.02)
        thread.join()
        assert answer["r"].status_code == 200
        assert len(waits) >= 10, "the push ended before the reader could poll: the test would test nothing"
        assert totals <= {0, 1000}, f"a reader saw part of a push: {sorted(totals)}"
        assert max(waits) < 0.2, f"a read waited {max(waits) * 1000:.0f} ms (p50 {sorted(waits)[len(waits) // 2]:.3f})"
        assert sorted(stored(srv.url)[0]) == sorted(uuids)
    finally:
        srv.stop()


def test_a_store_process_killed_mid_push_fails_that_push_only(tmp_path):
    """Pushes run in child processes of the server; killed in the middle of one, that push fails by name, none of
    it is stored, the server stays up and the next push is served."""
    with MetadataServer(tmp_path / "srv") as srv:
        text = payload("big", 2000, 20000)[0]  # seconds of merging: the kill lands in the middle
        answer: Dict[str, requests.Response] = {}
        thread = threading.Thread(target=lambda: answer.setdefault("r", push(srv.url, text)))
        thread.start()
        time.sleep(1.5)
        children = [int(c) for task in Path(f"/proc/{srv.proc.pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        stores = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert stores, "no store process to kill"
        for child in stores:
            os.kill(child, signal.SIGKILL)
        thread.join()
        assert answer["r"].status_code == 503 and "process died" in answer["r"].json()["detail"]
        assert stored(srv.url) == ([], [])
        assert push(srv.url, text).json()["executions"] == 2000
        assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200
