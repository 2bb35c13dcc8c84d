"""Runs keep the times they were logged with, and their order, through ``cmf metadata push``, ``pull`` and a sync.

One workspace logs a pipeline with real ``Cmf`` calls, runs about a second apart and stages interleaved (train,
train, evaluate, train).  Pushed to ``cmf server`` on SQLite and on PostgreSQL, the server's read API shows for
every execution, artifact and the pipeline the create and update times of the local mlmd exactly, execution
and artifact ids ascend with those times, and a second push changes nothing.  A pull into a new mlmd file and
a sync to another server keep the times too, and a run pushed to the peer after a sync, logged before the
runs that sync brought, still reaches the next sync.  A later push with a newer update time moves it on, one
with an older time changes nothing, a payload without times gets the server's clock, and a time that is not
milliseconds is refused by name.

Each server is started once for the module and stopped by PID.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from click.testing import CliRunner

from cmf_core import api
from cmf_core.cli.server import server_command
from cmf_core.metadata.logger import Cmf
from cmf_core.metadata.query import CmfQuery
from cmf_core.server.client import MetadataClient, pull_metadata, push_metadata
from cmf_core.testing.metadata_server import MetadataServer
from tests.conftest import NEEDS_POSTGRES, write
from tests.test_server_transactions import artifact, execution, export

PIPELINE = "timed"
RUNS = ("train", "train", "evaluate", "train")  # the stages of the runs, in the order they are logged
Times = Dict[str, Tuple[int, int]]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """The mlmd file of a workspace that logged PIPELINE: the runs of RUNS, each starting a second after the
    one before; every train run writes a model, evaluate reads the first and writes metrics."""
    root = tmp_path_factory.mktemp("logged")
    ws = root / "ws"
    with pytest.MonkeyPatch.context() as env:  # the per-test isolation of conftest does not reach a module fixture
        env.setenv("HOME", str(root))
        env.setenv("DVC_NO_ANALYTICS", "1")
        for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
            env.setenv(key, "t")
        ws.mkdir()
        env.chdir(ws)
        api.init("local", {"path": str(root / "store")}, git_remote_url=str(root / "origin.git"), workspace=ws)
        cmf = Cmf(filepath="mlmd", pipeline_name=PIPELINE)
        start = time.time()
        for run, stage in enumerate(RUNS):
            time.sleep(max(0.0, start + run - time.time()))
            cmf.create_context(stage)
            cmf.create_execution(stage.capitalize(), {"run": run})
            if stage == "train":
                write(ws / "models" / f"model{run}.bin", f"weights of run {run}\n")
                cmf.log_dataset(f"models/model{run}.bin", "output")
            else:
                cmf.log_dataset("models/model0.bin", "input")
                cmf.log_execution_metrics("scores", {"acc": 0.5 + run / 10})
        cmf.finalize()  # sets every run's end commit: its update time moves past its create time
    return ws / "mlmd"


def times(text: str) -> Times:
    """(created, updated) of every record of an export, by what names it in every store: ``pipeline P``,
    ``stage S``, ``execution UUID``, ``artifact NAME``."""
    found: Times = {}

    def add(key: str, node: Dict[str, Any]) -> None:
        found[key] = (node["create_time_since_epoch"], node["last_update_time_since_epoch"])
    for pipeline in json.loads(text)["Pipeline"]:
        add(f"pipeline {pipeline['name']}", pipeline)
        for stage in pipeline["stages"]:
            add(f"stage {stage['name']}", stage)
            for e in stage["executions"]:
                add(f"execution {e['properties']['Execution_uuid']}", e)
                for event in e["events"]:
                    add(f"artifact {event['artifact']['name']}", event["artifact"])
    return found


def local_times(mlmd: Path, pipeline: str = PIPELINE) -> Times:
    return times(CmfQuery(str(mlmd)).dumptojson(pipeline))


def get(url: str, path: str, **params: Any) -> Any:
    answer = requests.get(url + path, params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def shown(url: str, pipeline: str = PIPELINE) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The pipeline's executions and artifacts as the server's read API lists them, by id."""
    executions = get(url, f"/api/pipelines/{pipeline}/executions", sort="id", size=100)["items"]
    artifacts = get(url, f"/api/pipelines/{pipeline}/artifacts", sort="id", size=100)["items"]
    return executions, artifacts


def assert_shows(url: str, expected: Times, pipeline: str = PIPELINE) -> None:
    """The server at ``url`` shows the times ``expected`` for every execution, artifact and the pipeline, on its
    lists and on each record's own page, and ids that ascend with the create times."""
    executions, artifacts = shown(url, pipeline)
    assert len(executions) == sum(k.startswith("execution ") for k in expected)
    assert len(artifacts) == sum(k.startswith("artifact ") for k in expected)
    for kind, items, key in (("execution", executions, "uuid"), ("artifact", artifacts, "name")):
        for item in items:
            record = get(url, f"/api/{kind}s/{item['id']}")
            assert (item["created"], item["updated"]) == (record["created"], record["updated"]) \
                == expected[f"{kind} {item[key]}"], (kind, item)
        created = [item["created"] for item in items]
        assert created == sorted(created), f"{kind} ids do not ascend with their logged create times: {items}"
    [listed] = [p for p in get(url, "/api/pipelines", size=100)["items"] if p["name"] == pipeline]
    assert listed["created"] == expected[f"pipeline {pipeline}"][0]


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory) -> Iterator[MetadataServer]:
    with MetadataServer(tmp_path_factory.mktemp("sqlite-server")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory, postgres) -> Iterator[MetadataServer]:
    with MetadataServer(tmp_path_factory.mktemp("pg-server"), postgres=postgres, postgres_db="logged_times") as server:
        yield server


@pytest.fixture(scope="module")
def pushed(logged, sqlite_server) -> MetadataServer:
    """The SQLite server, with PIPELINE pushed to it."""
    assert push(sqlite_server, logged) == "success"
    return sqlite_server


def push(server: MetadataServer, mlmd: Path) -> str:
    with MetadataClient(server.url) as client:
        return push_metadata(client, PIPELINE, str(mlmd)).status


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=NEEDS_POSTGRES)])
def test_a_push_keeps_the_logged_times_and_order(request, logged, store, page):
    server = request.getfixturevalue("pushed" if store == "sqlite" else "postgres_server")
    if store == "postgres":
        assert push(server, logged) == "success"
    expected = local_times(logged)
    assert any(created != updated for key, (created, updated) in expected.items() if key.startswith("execution "))
    assert_shows(server.url, expected)

    # the page a person reads: the runs in the order they were logged, each with its own logged time and name
    runs = sorted((created, key.split(" ", 1)[1]) for key, (created, _) in expected.items()
                  if key.startswith("execution "))
    page.goto(f"{server.url}/pipelines/{PIPELINE}/executions")
    rows = page.locator("table.list tbody tr")
    assert rows.locator("td:nth-child(5)").all_text_contents() == [
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created / 1000)) for created, _ in runs]
    assert rows.locator("a.execution").all_text_contents() == [
        f"{RUNS[i].capitalize()} {uuid_[:8]}" for i, (_, uuid_) in enumerate(runs)]

    before = shown(server.url)
    assert push(server, logged) == "exists"
    assert shown(server.url) == before


def test_a_pull_keeps_the_times(pushed, logged, tmp_path):
    other = tmp_path / "mlmd"
    with MetadataClient(pushed.url) as client:
        assert pull_metadata(client, PIPELINE, str(other)).created
    assert local_times(other) == local_times(logged)
    query = CmfQuery(str(other))
    runs = [e for stage in query.get_pipeline_stages(PIPELINE) for e in query.get_all_exe_in_stage(stage)]
    assert [e.create_time_since_epoch for e in sorted(runs, key=lambda e: e.id)] == \
        sorted(e.create_time_since_epoch for e in runs)


def one_run(pipeline: str, created: Optional[int] = None, updated: Optional[int] = None) -> Dict[str, Any]:
    """An export of a pipeline of one run (one output), every record logged at ``created`` and last updated at
    ``updated`` (ms); without times, as an old client sends it."""
    data = json.loads(export(pipeline, [(f"{pipeline}/train", {}, [
        execution(pipeline, "train", (f"{pipeline}-run",), outputs=[artifact(f"{pipeline}.csv")])])]))
    top = data["Pipeline"][0]
    run = top["stages"][0]["executions"][0]
    if created is not None:
        for node in (top, top["stages"][0], run, run["events"][0]["artifact"]):
            node.update(create_time_since_epoch=created, last_update_time_since_epoch=updated or created)
    return data


def send(server: MetadataServer, data: Dict[str, Any]) -> requests.Response:
    """``POST /mlmd_push`` of the export ``data``."""
    return requests.post(server.url + "/mlmd_push", timeout=60, json={
        "pipeline_name": data["Pipeline"][0]["name"], "exec_uuid": None, "json_payload": json.dumps(data)})


def test_a_later_update_time_is_taken_an_earlier_one_is_not_and_no_time_is_the_servers_clock(pushed):
    pipeline, logged_at = f"updated-{uuid.uuid4().hex[:8]}", int(time.time() * 1000) - 600_000
    assert send(pushed, one_run(pipeline, logged_at)).json()["status"] == "success"
    later = one_run(pipeline, logged_at, logged_at + 5000)
    assert send(pushed, later).json()["status"] == "success"  # the run's update time moved on: it is updated
    assert_shows(pushed.url, times(json.dumps(later)), pipeline)
    assert send(pushed, one_run(pipeline, logged_at, logged_at + 2000)).json()["status"] == "exists"
    assert_shows(pushed.url, times(json.dumps(later)), pipeline)

    old_client = f"untimed-{uuid.uuid4().hex[:8]}"
    before = int(time.time() * 1000)
    assert send(pushed, one_run(old_client)).status_code == 200
    [run], _ = shown(pushed.url, old_client)
    assert before <= run["created"] == run["updated"] <= time.time() * 1000

    bad = one_run(f"bad-{uuid.uuid4().hex[:8]}", logged_at)
    bad["Pipeline"][0]["stages"][0]["executions"][0]["create_time_since_epoch"] = "yesterday"
    answer = send(pushed, bad)
    assert answer.status_code == 422 and "stages[0].executions[0].create_time_since_epoch must be a time in " \
        "milliseconds since the epoch" in answer.text, answer.text


def test_a_sync_keeps_the_times_and_brings_a_run_logged_before_the_last_sync(pushed, logged, tmp_path_factory):
    with MetadataServer(tmp_path_factory.mktemp("peer")) as peer:
        added = CliRunner().invoke(server_command, ["peers", "add", pushed.url, "--store", str(peer.store_file)])
        assert added.exit_code == 0, added.output

        def sync() -> List[str]:
            """Sync from the pushed server now: the pipelines it brought."""
            answer = requests.post(peer.url + "/api/sync", json={"peer": pushed.url}, timeout=120)
            assert answer.status_code == 200, answer.text
            [run] = answer.json()["runs"]
            assert run["status"] == "ok", run
            return run["pipelines"]

        assert PIPELINE in sync()
        assert_shows(peer.url, local_times(logged))

        late = one_run(f"late-{uuid.uuid4().hex[:8]}", int(time.time() * 1000) - 3_600_000)  # logged an hour ago
        assert send(pushed, late).status_code == 200
        assert late["Pipeline"][0]["name"] in sync()
        assert_shows(peer.url, times(json.dumps(late)), late["Pipeline"][0]["name"])
