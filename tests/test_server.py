"""The metadata server as a real process: the original client's requests, push/pull round trips, filters,
concurrency, auth, path traversal, size limit, bad payloads, PostgreSQL, CLI errors, repo push/pull."""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest
import requests

from cmf_core import api
from cmf_core.cli import cli
from cmf_core.cli.metadata import metadata_group
from cmf_core.cli.server import COMMANDS, add_metadata_commands
from cmf_core.server.client import MetadataClient, ServerError, ServerUnavailable
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer, postgres_binaries
from cmf_core.testing.servers import free_port
from cmflib import cmf as cmflib_cmf
from cmflib.cmf import Cmf
from cmflib.cmfquery import CmfQuery
from tests.conftest import write

# the commands are registered in cmf_core/cli/__init__.py; registering again here is a no-op then
for _command in COMMANDS:
    if _command.name not in cli.commands:
        cli.add_command(_command)
add_metadata_commands(metadata_group)

TOKEN = "s3cret-token-for-tests"
VOLATILE = {"id", "type_id", "create_time_since_epoch", "last_update_time_since_epoch", "Context_ID", "Pipeline_id"}


def stable(data):
    """An export without the ids and times that differ between stores. The python environment artifact is
    the same in every test's pipeline, so on the shared server it has every pipeline's url and git repo."""
    if isinstance(data, dict):
        if data.get("type") == "Environment":
            data = {**data, "properties": {}}
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


def by_stage(data: Dict) -> Dict:
    """:func:`stable`, with the stages in name order."""
    data = stable(data)
    for pipeline in data["Pipeline"]:
        pipeline["stages"].sort(key=lambda stage: stage["name"])
    return data


# -- servers and workspaces -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One open server (no auth, 2 MB body limit) for the module, stopped by PID."""
    with MetadataServer(tmp_path_factory.mktemp("server"), max_body_mb=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    srv = MetadataServer(tmp_path_factory.mktemp("auth-server"), tokens=["other-token", TOKEN],
                         extra_args=["--cors-origin", "https://ui.example"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    for key in ("CMF_SERVER_TOKEN", "CMF_SERVER_TOKENS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CMF_SERVER_RETRIES", "1")


def init(root: Path, store: Path, url: str, git_remote: Path) -> Path:
    """``cmf init local`` in ``root`` pointing at ``url``."""
    root.mkdir(parents=True, exist_ok=True)
    api.init("local", {"path": str(store)}, git_remote_url=str(git_remote), cmf_server_url=url, workspace=root)
    return root


def log_pipeline(root: Path, name: str = "p", stages=("prepare", "train"), tag: str = "") -> List[str]:
    """A small pipeline in ``root/mlmd`` (a dataset with a label, outputs, metrics); the execution uuids.
    The files' content depends on ``name``: pipelines of different tests share no artifact on the server."""
    write(root / "data" / "raw.csv", f"a,b\n1,{name}\n")
    write(root / "labels.csv", f"id,label\n1,{name}\n")
    metawriter = Cmf(filepath=str(root / "mlmd"), pipeline_name=name)
    uuids = []
    for i, stage in enumerate(stages):
        metawriter.create_context(stage)
        execution = metawriter.create_execution(f"{stage}{tag}", {"step": i, "ratio": 0.5})
        uuids.append(execution.properties["Execution_uuid"].string_value)
        if i == 0:
            metawriter.log_dataset("data/raw.csv", "input", label="labels.csv")
        write(root / "out" / f"{stage}{tag}.txt", f"{name}/{stage}{tag}\n")
        metawriter.log_dataset(f"out/{stage}{tag}.txt", "output")
    metawriter.log_execution_metrics("m", {"acc": 0.9})
    metawriter.finalize()
    return uuids


@pytest.fixture
def client_ws(tmp_path, monkeypatch, server) -> Path:
    """A workspace with a logged pipeline "p", pointing at the module's server; the current directory."""
    root = init(tmp_path / "a", tmp_path / "store", server.url, tmp_path / "origin.git")
    monkeypatch.chdir(root)
    return root


def export(mlmd: Path, pipeline: str = "p", exec_uuid=None) -> Dict:
    return json.loads(CmfQuery(str(mlmd)).dumptojson(pipeline, exec_uuid))


def server_executions(srv: MetadataServer, pipeline: str) -> List[Dict]:
    """The pipeline's executions on the server, through the read API (``Execution_uuid`` as the export has it)."""
    response = requests.get(f"{srv.url}/api/pipelines/{pipeline}/executions", params={"size": 500}, timeout=30)
    items = response.json()["items"] if response.status_code == 200 else []
    return [{**e, "Execution_uuid": e["uuid"]} for e in items]


def server_pipelines(srv: MetadataServer, **headers: str) -> List[str]:
    return [p["name"] for p in requests.get(f"{srv.url}/api/pipelines", headers=headers, timeout=30).json()["items"]]


# -- the original client's requests ---------------------------------------------------------------------


def test_original_client_requests_are_accepted(client_ws, server, tmp_path):
    """The requests of cmflib 0.1.0's server_interface.py, byte for byte, at /api/... (and at /)."""
    log_pipeline(client_ws, "orig")
    payload = CmfQuery("mlmd").dumptojson("orig", None)
    url = server.url + "/api"
    first = requests.post(f"{url}/mlmd_push", json={"exec_uuid": None, "json_payload": payload,
                                                    "pipeline_name": "orig"})
    assert first.status_code == 200 and first.json()["status"] == "success"
    again = requests.post(f"{server.url}/mlmd_push", json={"exec_uuid": None, "json_payload": payload,
                                                          "pipeline_name": "orig"})
    assert again.status_code == 200 and again.json()["status"] == "exists"

    pulled = requests.post(f"{url}/mlmd_pull", json={"pipeline_name": "orig", "exec_uuid": None})
    assert pulled.status_code == 200 and stable(json.loads(pulled.content)) == stable(json.loads(payload))
    missing = requests.post(f"{url}/mlmd_pull", json={"pipeline_name": "nope", "exec_uuid": None})
    assert missing.status_code == 404
    unknown = requests.post(f"{url}/mlmd_pull", json={"pipeline_name": "orig", "exec_uuid": str(uuid.uuid4())})
    assert unknown.status_code == 200 and unknown.content.decode() == "no_exec_uuid"

    board = write(tmp_path / "tb" / "events.out.tfevents.1", "tb-data")
    env = next((client_ws / "cmf_artifacts").glob("python_env_*.txt"))
    answers = [
        requests.post(f"{url}/tensorboard", files={"file": ("events.out.tfevents.1", open(board, "rb"))},
                      params={"pipeline_name": "orig"}),
        requests.post(f"{url}/python-env", files={"file": (env.name, open(env, "rb"))}),
        requests.post(f"{url}/label", files={"file": ("0123abcd", open(client_ws / "labels.csv", "rb"))}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    data = server.data_dir
    assert (data / "tensorboard" / "orig" / "events.out.tfevents.1").read_text() == "tb-data"
    assert (data / "env" / env.name).read_bytes() == env.read_bytes()
    assert (data / "labels" / "0123abcd").read_text() == "id,label\n1,orig\n"


def test_read_endpoints(client_ws, server):
    log_pipeline(client_ws, "reads")
    assert api.metadata_push("reads").status == "success"
    assert "reads" in server_pipelines(server)
    executions = requests.get(f"{server.url}/api/pipelines/reads/executions").json()["items"]
    assert sorted(e["stage"] for e in executions) == ["prepare", "train"]
    artifacts = requests.get(f"{server.url}/api/pipelines/reads/artifacts").json()["items"]
    assert {"Dataset", "Metrics"} <= {a["type"] for a in artifacts}
    assert requests.get(f"{server.url}/api/pipelines/none-such/artifacts").status_code == 404


def test_a_pushed_label_is_previewed_page_by_page(client_ws, server):
    """The label CSV uploaded by metadata push is what the server's artifact page shows, 50 rows a page."""
    log_pipeline(client_ws, "labelled")
    write(client_ws / "labels.csv", "id,label\n" + "".join(f"{i},row{i}\n" for i in range(120)))
    metawriter = Cmf(filepath=str(client_ws / "mlmd"), pipeline_name="labelled")
    metawriter.create_context("prepare")
    metawriter.create_execution("prepare-more", {"step": 9})
    metawriter.log_dataset("data/raw.csv", "input", label="labels.csv")
    metawriter.finalize()
    assert api.metadata_push("labelled").status == "success"
    labels = requests.get(f"{server.url}/api/pipelines/labelled/artifacts", params={"type": "Label"}).json()["items"]
    big = next(a for a in labels if a["uri"] == hashlib.md5((client_ws / "labels.csv").read_bytes()).hexdigest())
    second = requests.get(f"{server.url}/api/artifacts/{big['id']}", params={"page": 2}).json()["preview"]
    assert second["kind"] == "csv" and second["header"] == ["id", "label"]
    assert (second["total"], second["page"], second["pages"]) == (120, 2, 3)
    assert second["rows"][0] == ["50", "row50"] and len(second["rows"]) == 50
    page = requests.get(f"{server.url}/artifacts/{big['id']}", params={"page": 3}, headers={"Accept": "text/html"})
    assert "row119" in page.text and "row49" not in page.text and "page 3 of 3" in page.text


# -- push and pull round trips ----------------------------------------------------------------------------


def test_push_twice_then_pull_into_empty_mlmd_reproduces_the_pipeline(client_ws, server, tmp_path, cmf):
    log_pipeline(client_ws, "round")
    pushed = cmf("metadata", "push", "-p", "round")
    assert pushed.code == 0, pushed.err
    assert "pushed metadata of 'round'" in pushed.out and "uploaded 2 files" in pushed.out  # python-env + label
    again = cmf("metadata", "push", "-p", "round")
    assert again.code == 0 and "nothing new" in again.out
    label_md5 = hashlib.md5((client_ws / "labels.csv").read_bytes()).hexdigest()
    assert (server.data_dir / "labels" / label_md5).read_bytes() == (client_ws / "labels.csv").read_bytes()
    env = next((client_ws / "cmf_artifacts").glob("python_env_*.txt"))
    assert (server.data_dir / "env" / env.name).read_bytes() == env.read_bytes()

    other = init(tmp_path / "b", tmp_path / "store", server.url, tmp_path / "origin.git")
    pulled = cmflib_cmf.metadata_pull("round", file_name=str(other / "mlmd"))
    assert pulled.created and pulled.status == "success"
    assert stable(export(other / "mlmd", "round")) == stable(export(client_ws / "mlmd", "round"))
    assert cmflib_cmf.metadata_pull("round", file_name=str(other / "mlmd")).status == "exists"


def test_exec_uuid_filters_push_and_pull(client_ws, server, tmp_path, cmf):
    prepare, train = log_pipeline(client_ws, "filtered")
    assert cmf("metadata", "push", "-p", "filtered", "-e", train).code == 0
    assert [e["Execution_uuid"] for e in server_executions(server, "filtered")] == [train]
    assert cmflib_cmf.metadata_push("filtered", "./mlmd", execution_uuid=prepare).status == "success"
    assert sorted(e["Execution_uuid"] for e in server_executions(server, "filtered")) == sorted([prepare, train])

    unknown = cmf("metadata", "push", "-p", "filtered", "-e", "no-such-uuid")
    assert unknown.code == 1 and "no execution with uuid no-such-uuid" in unknown.err

    other = init(tmp_path / "b", tmp_path / "store", server.url, tmp_path / "origin.git")
    assert cmf("metadata", "pull", "-p", "filtered", "-f", str(other / "mlmd"), "-e", prepare).code == 0
    stages = export(other / "mlmd", "filtered")["Pipeline"][0]["stages"]
    assert [e["properties"]["Execution_uuid"] for s in stages for e in s["executions"]] == [prepare]
    missing = cmf("metadata", "pull", "-p", "filtered", "-f", str(other / "mlmd"), "-e", "no-such-uuid")
    assert missing.code == 1 and "no execution with uuid no-such-uuid" in missing.err


def _payload(pipeline: str, shared_md5: str, n: int) -> str:
    """An export of one new execution that reads a shared dataset and writes an artifact of its own."""
    def artifact(name: str, md5: str) -> Dict:
        return {"name": f"{name}:{md5}", "type": "Dataset", "uri": md5,
                "properties": {"Commit": md5, "url": f"{pipeline}:/store/{md5}", "git_repo": ""},
                "custom_properties": {}}

    execution = {"type": "work", "name": "", "custom_properties": {"n": n}, "properties": {
        "Execution_uuid": str(uuid.uuid4()), "Context_Type": f"{pipeline}/work", "Execution": "run",
        "Execution_type_name": f"{pipeline}/work", "Pipeline_Type": pipeline, "Git_Repo": "",
        "Git_Start_Commit": "", "Git_End_Commit": "", "Context_ID": 1, "Pipeline_id": 1},
        "events": [{"type": 3, "artifact": artifact("shared.csv", shared_md5)},
                   {"type": 4, "artifact": artifact(f"out/{n}.csv", uuid.uuid4().hex)}]}
    return json.dumps({"Pipeline": [{"name": pipeline, "stages": [{"name": f"{pipeline}/work",
                                                                   "executions": [execution]}]}]})


def test_concurrent_pushes_lose_nothing(tmp_path, server):
    """Two workspaces pushing the same pipeline at once, then 8 threads x 5 pushes of one execution each."""
    roots = [init(tmp_path / name, tmp_path / "store", server.url, tmp_path / "origin.git") for name in "ab"]
    uuids = [log_pipeline(root, "together", tag=root.name) for root in roots]
    barrier = threading.Barrier(len(roots))
    errors: List[BaseException] = []

    def push(root: Path) -> None:
        try:
            barrier.wait()
            api.metadata_push("together", str(root / "mlmd"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(root,)) for root in roots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    on_server = sorted(e["Execution_uuid"] for e in server_executions(server, "together"))
    assert on_server == sorted(u for pair in uuids for u in pair)

    shared = uuid.uuid4().hex
    payloads = [[_payload("crowd", shared, t * 10 + i) for i in range(5)] for t in range(8)]
    start = threading.Barrier(8)
    statuses: List[int] = []

    def hammer(mine: List[str]) -> None:
        start.wait()
        with requests.Session() as session:
            for payload in mine:
                r = session.post(f"{server.url}/api/mlmd_push", timeout=60,
                                 json={"exec_uuid": None, "json_payload": payload, "pipeline_name": "crowd"})
                statuses.append(r.status_code)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    assert len(server_executions(server, "crowd")) == 40
    artifacts = requests.get(f"{server.url}/api/pipelines/crowd/artifacts", params={"size": 500}).json()["items"]
    assert len(artifacts) == 41 and sum(a["name"].startswith("shared.csv:") for a in artifacts) == 1


# -- safety ------------------------------------------------------------------------------------------------


def test_auth_tokens(auth_server, tmp_path, monkeypatch, cmf):
    url = f"{auth_server.url}/api/mlmd_pull"
    body = {"pipeline_name": "p", "exec_uuid": None}
    none = requests.post(url, json=body)
    assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in none.json()
    wrong = requests.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    basic = requests.post(url, json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    right = requests.get(f"{auth_server.url}/api/pipelines", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert requests.get(f"{auth_server.url}/health").status_code == 200  # liveness needs no token

    root = init(tmp_path / "a", tmp_path / "store", auth_server.url, tmp_path / "origin.git")
    monkeypatch.chdir(root)
    log_pipeline(root, "authed")
    refused = cmf("metadata", "push", "-p", "authed")
    assert refused.code == 1 and "HTTP 401" in refused.err and "CMF_SERVER_TOKEN" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    monkeypatch.setenv("CMF_SERVER_TOKEN", "wrong")
    assert cmf("metadata", "push", "-p", "authed").code == 1
    monkeypatch.delenv("CMF_SERVER_TOKEN")
    (root / ".cmfconfig.local").write_text(f"[cmf]\nserver-token = {TOKEN}\n")
    assert "cmfconfig.local" not in subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                                   text=True).stdout  # ignored by git
    pushed = cmf("metadata", "push", "-p", "authed")
    assert pushed.code == 0, pushed.err
    monkeypatch.setenv("CMF_SERVER_TOKEN", TOKEN)
    assert cmf("metadata", "pull", "-p", "authed", "-f", str(tmp_path / "a" / "pulled")).code == 0


def test_cors_only_for_the_origins_given(server, auth_server):
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = requests.options(f"{auth_server.url}/api/mlmd_pull", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ui.example"
    other = requests.options(f"{auth_server.url}/api/mlmd_pull", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    off = requests.get(f"{server.url}/api/pipelines", headers={"Origin": "https://ui.example"})
    assert off.status_code == 200 and "access-control-allow-origin" not in off.headers


def _upload(url: str, name: str, pipeline: Optional[str] = None):
    params = {"pipeline_name": pipeline} if pipeline is not None else None
    endpoint = "/api/tensorboard" if pipeline is not None else "/api/python-env"
    return requests.post(url + endpoint, files={"file": (name, b"evil")}, params=params)


def test_path_traversal_is_refused(server, tmp_path):
    before = {p for p in server.data_dir.parent.parent.rglob("*")}
    for name in ("../evil.txt", "../../evil.txt", "/tmp/evil.txt", "sub/evil.txt", "..", ".", "a\\..\\evil",
                 "evil\x00.txt"):
        for endpoint in ("/api/python-env", "/api/label", "/python-env"):
            r = requests.post(server.url + endpoint, files={"file": (name, b"evil")})
            assert r.status_code == 400 and "file name" in r.json()["detail"], (endpoint, name, r.text)
    for name in ("../evil", "a/../../evil", "/abs/evil", "a//b", "./x"):
        assert _upload(server.url, name, "p").status_code == 400, name
    for pipeline in ("..", "../p", "a/b", "/etc", "x\x00"):
        assert _upload(server.url, "ok.txt", pipeline).status_code == 400, pipeline
        push = requests.post(f"{server.url}/api/mlmd_push",
                             json={"exec_uuid": None, "json_payload": '{"Pipeline": []}', "pipeline_name": pipeline})
        assert push.status_code == 400 and "pipeline name" in push.json()["detail"]

    # a symlink planted inside the data directory does not lead out of it either
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.data_dir / "tensorboard").mkdir(exist_ok=True)
    (server.data_dir / "tensorboard" / "linked").symlink_to(outside, target_is_directory=True)
    assert _upload(server.url, "x.txt", "linked").status_code == 400
    assert list(outside.iterdir()) == []
    created = {p for p in server.data_dir.parent.parent.rglob("*")} - before
    assert not [p for p in created if "evil" in p.name]
    assert not list(Path("/tmp").glob("evil*"))


def test_oversized_body_is_413(server):
    big = "x" * (3 * 1024 * 1024)
    r = requests.post(f"{server.url}/api/mlmd_push", json={"exec_uuid": None, "json_payload": big,
                                                          "pipeline_name": "p"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = requests.post(f"{server.url}/api/python-env", files={"file": ("big.txt", big.encode())})
    assert r.status_code == 413
    chunked = requests.post(f"{server.url}/api/mlmd_push", data=(b"x" * 65536 for _ in range(64)),
                            headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert not (server.data_dir / "env" / "big.txt").exists()


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"pipeline_name": "p"}).encode(), "json_payload"),
    (json.dumps({"json_payload": "{oops", "pipeline_name": "p"}).encode(), "not JSON"),
    (json.dumps({"json_payload": '{"Pipeline": []}', "pipeline_name": "p"}).encode(), "Pipeline"),
    (json.dumps({"json_payload": '{"Pipeline": [{"name": "q"}]}', "pipeline_name": "p"}).encode(), "named 'p'"),
    (json.dumps({"json_payload": json.dumps({"Pipeline": [{"name": "p", "stages": [{"name": "p/s", "executions": [
        {"type": "t", "properties": {}, "events": [{"type": 7, "artifact": {"name": "a", "type": "Dataset"}}]}]}]}]}),
        "pipeline_name": "p"}).encode(), "3 (input) or 4 (output)"),
    (json.dumps({"json_payload": '{"Pipeline": [{"name": "p"}]}', "pipeline_name": "p",
                 "exec_uuid": "nope"}).encode(), "no execution with uuid nope"),
    (json.dumps({"json_payload": '{"Pipeline": [{"name": "p"}]}', "pipeline_name": 5}).encode(), "pipeline_name"),
])
def test_malformed_payload_is_422_with_a_reason(server, body, reason):
    r = requests.post(f"{server.url}/api/mlmd_push", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and reason in r.json()["detail"], r.text
    assert "p" not in server_pipelines(server)


def test_a_merge_that_fails_half_way_is_rolled_back(server):
    """Stage 1 is new and valid; stage 2 has an artifact whose property type clashes with the stored type:
    MLMD refuses it after stage 1 was written. The SQLite snapshot puts everything back."""
    first = json.loads(_payload("rollback", uuid.uuid4().hex, 1))
    assert requests.post(f"{server.url}/api/mlmd_push", json={"exec_uuid": None, "json_payload": json.dumps(first),
                                                             "pipeline_name": "rollback"}).status_code == 200
    payload = json.loads(_payload("rollback", uuid.uuid4().hex, 2))
    clash = json.loads(_payload("rollback", uuid.uuid4().hex, 3))["Pipeline"][0]["stages"][0]
    clash["name"] = "rollback/second"
    clash["executions"][0]["events"][1]["artifact"]["properties"]["Commit"] = 5  # Commit is a string property
    payload["Pipeline"][0]["stages"].append(clash)
    r = requests.post(f"{server.url}/api/mlmd_push", json={"exec_uuid": None, "json_payload": json.dumps(payload),
                                                          "pipeline_name": "rollback"})
    assert r.status_code == 422 and "refused" in r.json()["detail"]
    assert len(server_executions(server, "rollback")) == 1  # stage 1 of the failed push was undone


# -- PostgreSQL --------------------------------------------------------------------------------------------


@pytest.mark.skipif(postgres_binaries() is None, reason="PostgreSQL is not installed")
def test_postgresql_store_round_trip(tmp_path, monkeypatch):
    postgres = PostgresServer(tmp_path)
    postgres.start()
    try:
        srv = MetadataServer(tmp_path / "server", postgres=postgres, postgres_db="cmf_test")
        srv.start()
        try:
            root = init(tmp_path / "a", tmp_path / "store", srv.url, tmp_path / "origin.git")
            monkeypatch.chdir(root)
            first, second = log_pipeline(root, "pg")
            assert api.metadata_push("pg", execution_uuid=second).status == "success"
            assert api.metadata_push("pg").status == "success"
            assert api.metadata_push("pg").status == "exists"
            other = init(tmp_path / "b", tmp_path / "store", srv.url, tmp_path / "origin.git")
            assert api.metadata_pull("pg", str(other / "mlmd")).created
            # the server made the second stage first (its execution was pushed first), so it lists it first
            assert by_stage(export(other / "mlmd", "pg")) == by_stage(export(root / "mlmd", "pg"))
            assert not list((srv.data_dir).glob("mlmd*"))  # nothing went to an SQLite file
        finally:
            srv.stop()
    finally:
        postgres.stop()


# -- the CLI's errors --------------------------------------------------------------------------------------


def test_cli_errors_for_404_422_and_an_unreachable_server(client_ws, server, tmp_path, cmf, monkeypatch):
    log_pipeline(client_ws, "errors")
    missing = cmf("metadata", "pull", "-p", "not-there", "-f", "new-mlmd")
    assert missing.code == 1 and "has no pipeline 'not-there'" in missing.err
    assert len(missing.err.strip().splitlines()) == 1
    assert not (client_ws / "new-mlmd").exists()

    local = cmf("metadata", "push", "-p", "not-logged")
    assert local.code == 1 and "is not in mlmd" in local.err

    from cmf_core.metadata import query

    with monkeypatch.context() as patched:  # a client that sends what the server cannot take
        patched.setattr(query.CmfQuery, "export", lambda self, name, exec_uuid=None: {"Pipeline": [{}]})
        rejected = cmf("metadata", "push", "-p", "errors")
    assert rejected.code == 1 and "HTTP 422" in rejected.err and "no pipeline named 'errors'" in rejected.err

    dead = f"http://127.0.0.1:{free_port()}"
    other = init(tmp_path / "b", tmp_path / "store", dead, tmp_path / "origin.git")
    monkeypatch.chdir(other)
    log_pipeline(other, "errors")
    unreachable = cmf("metadata", "push", "-p", "errors")
    assert unreachable.code == 1 and "cannot reach the metadata server" in unreachable.err
    before = (other / "mlmd").read_bytes()
    assert cmf("metadata", "pull", "-p", "errors").code == 1
    assert (other / "mlmd").read_bytes() == before  # a failed pull leaves the mlmd as it was
    assert cmf("metadata", "pull", "-p", "errors", "-f", "fresh").code == 1
    assert not (other / "fresh").exists()  # ... and creates none
    assert not list(other.glob(".*pull-*"))


def test_client_resends_a_push_only_when_nothing_was_done_but_repeats_reads():
    calls: List[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if request.url.path.endswith("/mlmd_push"):
            return httpx.Response(503 if len(calls) < 3 else 200, json={"status": "success"})
        return httpx.Response(404, json={"detail": "pipeline 'p' is not on the server"})

    client = MetadataClient("http://cmf.test", retries=3, backoff=0.01, transport=httpx.MockTransport(answer))
    assert client.push("p", "{}")["status"] == "success" and len(calls) == 3  # 503: "try later"
    calls.clear()
    with pytest.raises(ServerError, match="has no pipeline 'p'"):
        client.pull("p")
    assert len(calls) == 1  # a 4xx is never repeated

    def late_or_failing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if request.url.path.endswith("/mlmd_pull"):
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(500, json={"detail": "merge failed"})

    calls.clear()
    client = MetadataClient("http://cmf.test", retries=2, backoff=0.01, transport=httpx.MockTransport(late_or_failing))
    with pytest.raises(ServerError, match="HTTP 500 after 1 attempt: merge failed"):
        client.push("p", "{}")  # it may have merged part of it: never sent twice
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ServerError, match="did not answer within 3600 s .tried 3 times"):
        client.pull("p")  # a read changes nothing: repeated
    assert len(calls) == 3

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    calls.clear()
    client = MetadataClient("http://cmf.test/api/", retries=2, backoff=0.01, transport=httpx.MockTransport(refuse))
    with pytest.raises(ServerUnavailable, match="tried 3 times"):
        client.pull("p")
    assert len(calls) == 3 and client.api == "http://cmf.test/api"


def test_tensorboard_directory_upload(client_ws, server, tmp_path, cmf):
    log_pipeline(client_ws, "boards")
    write(tmp_path / "logs" / "run1" / "events.1", "one")
    write(tmp_path / "logs" / "run2" / "events.2", "two")
    result = cmf("metadata", "push", "-p", "boards", "-t", str(tmp_path / "logs"))
    assert result.code == 0, result.err
    board = server.data_dir / "tensorboard" / "boards"
    assert (board / "run1" / "events.1").read_text() == "one" and (board / "run2" / "events.2").read_text() == "two"
    gone = cmf("metadata", "push", "-p", "boards", "-t", str(tmp_path / "nope"))
    assert gone.code == 1 and "does not exist" in gone.err


# -- repo push / pull --------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_repo_push_and_pull_end_to_end(tmp_path, server, monkeypatch, cmf):
    bare = tmp_path / "origin.git"
    _git(tmp_path, "init", "--bare", "-q", str(bare))
    root = init(tmp_path / "a", tmp_path / "store", server.url, bare)
    monkeypatch.chdir(root)
    uuids = log_pipeline(root, "repo")
    pushed = cmf("repo", "push", "-p", "repo")
    assert pushed.code == 0, pushed.err
    assert "[1/3] artifact push" in pushed.out and "[3/3] git push" in pushed.out
    branch = _git(root, "symbolic-ref", "--short", "HEAD")
    assert _git(bare, "rev-parse", branch) == _git(root, "rev-parse", "HEAD")
    assert sorted(e["Execution_uuid"] for e in server_executions(server, "repo")) == sorted(uuids)

    clone = tmp_path / "b"
    _git(tmp_path, "clone", "-q", str(bare), str(clone))
    init(clone, tmp_path / "store", server.url, bare)
    monkeypatch.chdir(clone)
    assert not (clone / "data" / "raw.csv").exists()  # git has the .dvc file, not the data
    pulled = cmf("repo", "pull", "-p", "repo")
    assert pulled.code == 0, pulled.err
    assert (clone / "data" / "raw.csv").read_text() == "a,b\n1,repo\n"
    assert (clone / "out" / "train.txt").read_text() == "repo/train\n"
    assert stable(export(clone / "mlmd", "repo")) == stable(export(root / "mlmd", "repo"))

    assert cmflib_cmf.repo_pull("repo", "./mlmd").steps[0][1] == "exists"


def test_repo_push_stops_at_the_failing_step(tmp_path, server, monkeypatch, cmf):
    bare = tmp_path / "origin.git"
    _git(tmp_path, "init", "--bare", "-q", str(bare))
    dead = f"http://127.0.0.1:{free_port()}"
    root = init(tmp_path / "a", tmp_path / "store", dead, bare)
    monkeypatch.chdir(root)
    log_pipeline(root, "steps")
    failed = cmf("repo", "push", "-p", "steps")
    assert failed.code == 1 and "stopped at step 2/3 (metadata push)" in failed.err
    assert _git(bare, "for-each-ref") == ""  # git push did not run

    init(root, tmp_path / "store", server.url, tmp_path / "no-such-remote.git")
    failed = cmf("repo", "push", "-p", "steps")
    assert failed.code == 1 and "stopped at step 3/3 (git push)" in failed.err
    assert server_executions(server, "steps")  # the steps before it did their work

    missing = cmf("repo", "pull", "-p", "not-on-server", "-f", "other-mlmd")
    assert missing.code == 1 and "step 1/3 (metadata pull)" in missing.err
    assert not (root / "other-mlmd").exists()
