"""Probes of the files the UI shows beside the metadata: metadata that names workspace secrets (as metadata pulled
from any shared server can), path tricks on every route that serves a file, and ``cmf ui`` asked under another
host name (DNS rebinding).  ``cmf ui`` and ``cmf server`` run as real processes."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import requests

from cmf_core.metadata import store as records
from cmf_core.metadata.merge import merge_pipeline
from cmf_core.testing.servers import free_port, wait_for_port
from tests.security.conftest import AUTH, unique

CMF = Path(sys.executable).parent / "cmf"
SECRET = "SECRET-d5c0e1f4"
#: Workspace files that hold secrets: never shown, whatever the metadata says about them.
PRIVATE = {".cmfconfig.local": f"[cmf]\nserver-token = {SECRET}\n",
           ".dvc/config.local": f"['remote \"minio\"']\n    secret_access_key = {SECRET}\n",
           ".git/config": f"[remote \"cmf_origin\"]\n    url = https://x:{SECRET}@git.example/p.git\n",
           ".cmfconfig": f"[cmf]\nnote = {SECRET}\n"}
ENV_TEXT = "numpy==2.1.0\npandas==2.2.3\n"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def artifact(path: str, digest: str, kind: str) -> Dict:
    return {"name": f"{path}:{digest}", "type": kind, "uri": digest, "properties": {}, "custom_properties": {}}


def run_of(uuid_: str, env_path: str, inputs: List[Dict]) -> Dict:
    return {"type": "train", "name": "", "custom_properties": {"Python_Env": env_path},
            "properties": {"Execution_uuid": uuid_, "Context_Type": "train"},
            "events": [{"type": 3, "artifact": a} for a in inputs]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A workspace holding secrets, and an mlmd (as if pulled from a server) whose executions and artifacts name
    them: as python environments, Environment inputs and labels, each with the md5 of the secret file itself,
    directly and through a symlink; beside them an honest environment file, and one changed since it was logged."""
    root = tmp_path_factory.mktemp("secrets-ws")
    for rel, text in {**PRIVATE, "cmf_artifacts/python_env_ok.txt": ENV_TEXT,
                      "cmf_artifacts/changed.txt": "edited afterwards\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink(".git/config", root / "notes.txt")
    runs = [run_of(f"secret-{i}", rel, [artifact(rel, md5(text), "Environment"), artifact(rel, md5(text), "Label")])
            for i, (rel, text) in enumerate(PRIVATE.items())]
    git_config = md5(PRIVATE[".git/config"])
    runs.append(run_of("link", "notes.txt", [artifact("notes.txt", git_config, "Environment"),
                                              artifact("notes.txt", git_config, "Dataset")]))
    runs.append(run_of("honest", "cmf_artifacts/python_env_ok.txt",
                       [artifact("cmf_artifacts/python_env_ok.txt", md5(ENV_TEXT), "Environment")]))
    runs.append(run_of("stale", "cmf_artifacts/changed.txt",
                       [artifact("cmf_artifacts/changed.txt", md5("as logged\n"), "Environment")]))
    export = {"Pipeline": [{"name": "secrets", "stages": [{"name": "secrets/train", "executions": runs}]}]}
    merge_pipeline(records.open_store(root / "mlmd"), export)
    return root


@pytest.fixture(scope="module")
def ui(workspace) -> Iterator[str]:
    """``cmf ui`` over the workspace, as a process; stopped by PID."""
    port = free_port()
    with open(workspace / "ui.log", "ab") as log:
        proc = subprocess.Popen([str(CMF), "ui", "--mlmd", str(workspace / "mlmd"), "--port", str(port)],
                                cwd=workspace, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def executions(url: str) -> Dict[str, Dict]:
    """Every execution of the pipeline, by uuid, as ``/api/executions/{id}`` answers it."""
    rows = requests.get(f"{url}/api/pipelines/secrets/executions", params={"size": 100}).json()["items"]
    return {row["uuid"]: requests.get(f"{url}/api/executions/{row['id']}").json() for row in rows}


def test_cmf_ui_never_shows_workspace_secrets(ui):
    runs = executions(ui)
    assert len(runs) == len(PRIVATE) + 3
    seen: List[str] = []
    for uuid_, run in runs.items():
        for route in (f"/executions/{run['id']}", f"/api/executions/{run['id']}"):
            seen.append(requests.get(ui + route, headers={"Accept": "text/html"}).text)
        for item in run["inputs"]:
            for route in (f"/artifacts/{item['id']}", f"/api/artifacts/{item['id']}"):
                seen.append(requests.get(ui + route, headers={"Accept": "text/html"}).text)
        if uuid_ != "honest":
            assert run["environment"]["text"] is None, uuid_
    assert not [page for page in seen if SECRET in page]


def test_cmf_ui_shows_an_environment_only_as_logged(ui):
    runs = executions(ui)
    assert runs["honest"]["environment"]["text"] == ENV_TEXT  # the md5 of its Environment input matches
    assert runs["stale"]["environment"]["text"] is None  # edited since it was logged: not that environment
    page = requests.get(f"{ui}/executions/{runs['honest']['id']}").text
    assert "pandas==2.2.3" in page


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil.example"])
def test_cmf_ui_answers_only_its_own_host_names(ui, host):
    port = ui.rsplit(":", 1)[1]
    answer = requests.get(f"{ui}/api/pipelines", headers={"Host": f"{host}:{port}" if ":" not in host else host})
    assert answer.status_code == 400
    assert answer.headers.get("x-content-type-options") == "nosniff"
    for own in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert requests.get(f"{ui}/api/pipelines", headers={"Host": own}).status_code == 200


# -- path tricks on every route of the server that serves a file --------------------------------------------


@pytest.fixture(scope="module")
def served(sqlite_server) -> Dict[str, str]:
    """A pipeline with a tensorboard file, a label, step metrics and an environment uploaded, and records whose
    names are path tricks; the data directory also holds a symlink that leads out of it."""
    url, name = sqlite_server.url, unique("files")
    tb = requests.post(f"{url}/tensorboard", params={"pipeline_name": name}, headers=AUTH,
                       files={"file": ("run1/events.out", b"tb-bytes")})
    assert tb.status_code == 200
    outside = sqlite_server.data_dir.parent / "outside.txt"
    outside.write_text(SECRET)
    os.symlink(outside, sqlite_server.data_dir / "tensorboard" / name / "escape")
    (sqlite_server.data_dir / "env").mkdir(exist_ok=True)
    os.symlink(outside, sqlite_server.data_dir / "env" / "linked.txt")
    tricks = ["../../etc/passwd", "/etc/passwd", "..\\..\\outside.txt", "../outside.txt", "env/linked.txt",
              "linked.txt"]
    inputs = [artifact(t, md5(SECRET), kind) for t in tricks for kind in ("Label", "Environment", "Step_Metrics",
                                                                          "Dataset")]
    runs = [run_of(str(i), t, inputs if i == 0 else []) for i, t in enumerate(tricks)]
    export = {"Pipeline": [{"name": name, "stages": [{"name": f"{name}/s", "executions": runs}]}]}
    body = {"exec_uuid": None, "pipeline_name": name, "json_payload": json.dumps(export)}
    pushed = requests.post(f"{url}/mlmd_push", json=body, headers=AUTH)
    assert pushed.status_code == 200, pushed.text
    return {"url": url, "name": name}


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/outside.txt",
                                  "run1/../../../outside.txt", "escape", "/etc/passwd", "run1%00/events.out",
                                  "..\\..\\outside.txt", "%2fetc%2fpasswd"])
def test_tensorboard_files_stay_in_their_folder(served, path):
    base = f"{served['url']}/pipelines/{served['name']}/tensorboard/"
    answer = requests.get(base + path, headers=AUTH)
    assert answer.status_code in (400, 404) and SECRET not in answer.text and "root:" not in answer.text
    assert requests.get(base + "run1/events.out", headers=AUTH).content == b"tb-bytes"


@pytest.mark.parametrize("pipeline", ["..", "%2e%2e", "..%2f..", "x%00"])
def test_tensorboard_pipeline_names_stay_in_the_data_directory(served, pipeline):
    answer = requests.get(f"{served['url']}/pipelines/{pipeline}/tensorboard/outside.txt", headers=AUTH)
    assert answer.status_code in (400, 404) and SECRET not in answer.text


def test_records_named_by_path_tricks_show_no_file(served):
    url = served["url"]
    rows = requests.get(f"{url}/api/pipelines/{served['name']}/executions", params={"size": 100},
                        headers=AUTH).json()["items"]
    for row in rows:
        run = requests.get(f"{url}/api/executions/{row['id']}", headers=AUTH).json()
        assert run["environment"]["text"] is None and SECRET not in json.dumps(run)
        for item in run["inputs"]:
            for route in (f"/api/artifacts/{item['id']}", f"/artifacts/{item['id']}",
                          f"/api/artifacts/{item['id']}/step_metrics"):
                answer = requests.get(url + route, headers=AUTH)
                assert SECRET not in answer.text and "root:" not in answer.text, route


@pytest.mark.parametrize("route, name", [("/python-env", "../escape.txt"), ("/python-env", "/tmp/abs.txt"),
                                         ("/label", "a\\b.csv"), ("/label", ".."), ("/python-env", "x\x01.txt"),
                                         ("/tensorboard", "../../escape"), ("/tensorboard", "run/../../x"),
                                         ("/step-metrics", "../0123456789abcdef0123456789abcdef")])
def test_uploads_cannot_leave_the_data_directory(served, sqlite_server, route, name):
    params = {"pipeline_name": served["name"]} if route == "/tensorboard" else None
    answer = requests.post(served["url"] + route, params=params, headers=AUTH, files={"file": (name, b"x")})
    assert answer.status_code == 400, answer.text
    assert not list(sqlite_server.data_dir.parent.glob("escape*"))


def test_static_files_stay_in_their_folder(served):
    port = int(served["url"].rsplit(":", 1)[1])
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/vendored/../../ui.py",
                 "/static/../../server/app.py"):
        raw = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # sent as written: no dot segments removed
        raw.request("GET", path)
        answer = raw.getresponse()
        body = answer.read().decode(errors="replace")
        raw.close()
        assert answer.status in (401, 404) and "create_app" not in body and "def " not in body, path
