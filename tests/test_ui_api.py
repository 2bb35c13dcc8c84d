"""The web UI and its read API against real processes: ``cmf server`` on SQLite (with tokens) and on PostgreSQL,
and ``cmf ui`` over a workspace.  One logged pipeline is pushed to both servers; every read test runs on the
three.  Then auth, hostile paths, escaping, read-only-ness, live reloading and reads during a big push."""
from __future__ import annotations

import hashlib
import html
import http.client
import json
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import quote, urlsplit

import pytest
import requests

from cmf_core.server.client import MetadataClient, push_metadata
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer, postgres_binaries
from cmf_core.testing.servers import Server, free_port
from cmflib.cmf import Cmf
from tests.conftest import write
from tests.test_server import init

P = "uip"  # the pipeline every read test looks at
XSS = "<img src=x onerror=alert(1)>"  # a pipeline, an artifact and properties are named so
LIVE = "live"  # a pipeline only in the workspace: cmf ui sees its new executions
WIDE, SWEEPS = "wide", 22  # a dataset read by more runs than a page lists (reads.LIST_LIMIT)
ENVCLIMB = "envclimb"  # its Python_Env climbs out of the workspace (pushed only by the test of that)
TOKEN = "ui-api-token-for-tests"
SECRET = "TOP-SECRET-never-served"
RUNS = [(0.1, 5, 0.8), (0.05, 10, 0.9), (0.01, 20, 0.95)]  # lr, epochs, accuracy of the train executions
EVAL_ACCURACY = 0.93
STEPS = 3


def loss(run: int, step: int) -> float:
    return round(1.0 / (step + 1) + run, 4)


# -- the workspace ----------------------------------------------------------------------------------------


@dataclass
class Workspace:
    root: Path
    mlmd: Path
    tensorboard: Path
    outside: Path


@contextmanager
def in_workspace(root: Path) -> Iterator[None]:
    """What conftest's autouse fixture gives a test, for module-scoped fixtures: isolated env, cwd ``root``."""
    home = root.parent / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("HOME", str(home))
        for key, value in {"DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
                           "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}.items():
            mp.setenv(key, value)
        for key in ("CMF_SERVER_TOKEN", "CMF_SERVER_TOKENS", "CONFIG_FILE"):
            mp.delenv(key, raising=False)
        yield


def module_workspace(tmp_path_factory, name: str) -> Path:
    """A fresh ``cmf init local`` workspace for a module's fixtures, ``<tmp>/ws``, with its store and git remote
    beside it (a server URL that nothing answers)."""
    base = tmp_path_factory.mktemp(name)
    root = base / "ws"
    root.mkdir()
    with in_workspace(root):
        init(root, base / "store", "http://127.0.0.1:9", base / "origin.git")
    return root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def log_main(root: Path) -> None:
    """prepare (raw.csv -> train.csv), three train runs (train.csv -> model, step metrics, metrics), evaluate
    (model2 -> metrics)."""
    write(root / "data" / "raw.csv", "a,b\n1,2\n")
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=P)
    cmf.create_context("prepare")
    cmf.create_execution("prepare", {"seed": 1, "note": "warm start"})
    cmf.log_dataset("data/raw.csv", "input")
    write(root / "data" / "train.csv", "x,y\n1,2\n3,4\n")
    cmf.log_dataset("data/train.csv", "output")
    cmf.create_context("train")
    for i, (lr, epochs, accuracy) in enumerate(RUNS):
        cmf.create_execution("train", {"lr": lr, "epochs": epochs})
        cmf.log_dataset("data/train.csv", "input")
        write(root / "models" / f"model{i}.pkl", f"model {i}\n")
        cmf.log_model(f"models/model{i}.pkl", "output", model_framework="sklearn", model_type="forest",
                      model_name=f"m{i}")
        for step in range(STEPS):
            cmf.log_metric("training", {"loss": loss(i, step)})
        cmf.commit_metrics("training")
        cmf.log_execution_metrics("metrics", {"accuracy": accuracy})
    cmf.create_context("evaluate")
    cmf.create_execution("evaluate", {"threshold": 0.5})
    cmf.log_model("models/model2.pkl", "input")
    cmf.log_execution_metrics("eval", {"accuracy": EVAL_ACCURACY})
    cmf.finalize()


def log_wide(root: Path) -> None:
    write(root / "data" / "wide.csv", "w\n1\n")
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=WIDE)
    cmf.create_context("sweep")
    for seed in range(SWEEPS):
        cmf.create_execution("sweep", {"seed": seed})
        cmf.log_dataset("data/wide.csv", "input")
    cmf.finalize()


def log_hostile(root: Path, outside: Path) -> None:
    """Pipeline XSS: names and properties with markup, and datasets whose logged paths leave the workspace
    (with the md5 of the file they point at, so that only the path check can refuse them)."""
    absolute = write(root.parent / "outside-abs.txt", f"{SECRET} abs\n")
    linked = write(root.parent / "outside-link.txt", f"{SECRET} link\n")
    (root / "link.txt").symlink_to(linked)
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=XSS)
    cmf.create_context("hostile")
    cmf.create_execution("hostile", {"note": XSS})
    cmf.log_dataset_with_version(XSS, md5(b"xss"), "input", custom_properties={"comment": XSS})
    cmf.log_dataset_with_version("../outside.txt", md5(outside.read_bytes()), "input")
    cmf.log_dataset_with_version(str(absolute), md5(absolute.read_bytes()), "input")
    cmf.log_dataset_with_version("link.txt", md5(linked.read_bytes()), "input")
    cmf.log_execution_metrics("m", {"score": 1})
    cmf.finalize()


def log_workspace_only(root: Path) -> None:
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=LIVE)
    cmf.create_context("run")
    cmf.create_execution("run", {"n": 1})
    cmf.finalize()
    cmf = Cmf(filepath=str(root / "mlmd"), pipeline_name=ENVCLIMB)
    cmf.create_context("run")
    execution = cmf.create_execution("run")
    cmf.update_execution(execution.id, {"Python_Env": "../outside.txt"})
    cmf.finalize()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = module_workspace(tmp_path_factory, "ui-api")
    base = root.parent
    outside = write(base / "outside.txt", f"{SECRET}\n")
    board = base / "tb"
    write(board / "events.out.tfevents.1", "tb-one")
    write(board / "sub" / "events.out.tfevents.2", "tb-two")
    with in_workspace(root):
        log_main(root)
        log_hostile(root, outside)
        log_wide(root)
        log_workspace_only(root)
    return Workspace(root, root / "mlmd", board, outside)


# -- the three targets ----------------------------------------------------------------------------------------


@dataclass
class Target:
    kind: str  # "sqlite", "postgres", "ui"
    url: str
    headers: Dict[str, str] = field(default_factory=dict)
    data_dir: Optional[Path] = None
    _index: Optional[Dict[str, Any]] = None

    def get(self, path: str, headers: Optional[Dict[str, str]] = None, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers={**self.headers, **(headers or {})}, timeout=60,
                            allow_redirects=False, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers, timeout=60, allow_redirects=False, **kwargs)

    def api(self, path: str, **params: Any) -> Dict[str, Any]:
        response = self.get("/api" + path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def page(self, path: str, **params: Any) -> requests.Response:
        return self.get(path, headers={"Accept": "text/html"}, params=params)

    def raw(self, path: str, accept: str = "*/*") -> tuple:
        """GET ``path`` byte for byte (requests would normalise ``..`` away): (status, body)."""
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            connection.request("GET", path, headers={**self.headers, "Accept": accept})
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    @property
    def index(self) -> Dict[str, Any]:
        """Ids on this target: executions by role, artifacts by path (lists by type for the rest)."""
        if self._index is None:
            executions = self.api(f"/pipelines/{P}/executions", size=500)["items"]
            artifacts = self.api(f"/pipelines/{P}/artifacts", size=500)["items"]
            trains = sorted((e for e in executions if e["stage"] == "train"), key=lambda e: -e["params"]["lr"])
            by_path = {a["name"].split(":")[0]: a for a in artifacts if a["type"] in ("Dataset", "Model")}
            self._index = {
                "prepare": next(e for e in executions if e["stage"] == "prepare"),
                "train": trains, "evaluate": next(e for e in executions if e["stage"] == "evaluate"),
                "artifacts": by_path, "all_artifacts": artifacts,
                "step_metrics": [a for a in artifacts if a["type"] == "Step_Metrics"],
            }
        return self._index


def push_all(url: str, workspace: Workspace, token: Optional[str] = None) -> None:
    with in_workspace(workspace.root), MetadataClient(url, token, retries=0) as client:
        first = push_metadata(client, P, str(workspace.mlmd), tensorboard=str(workspace.tensorboard))
        assert first.status == "success" and not first.warnings, first.warnings
        assert push_metadata(client, XSS, str(workspace.mlmd)).status == "success"
        assert push_metadata(client, WIDE, str(workspace.mlmd)).status == "success"


def _secrets(data_dir: Path) -> None:
    """Files a path climbing out of data/tensorboard/<p> could reach."""
    write(data_dir / "secret.txt", SECRET)
    write(data_dir.parent / "secret.txt", SECRET)
    (data_dir / "tensorboard" / P / "escape").symlink_to(data_dir / "secret.txt")


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory, workspace) -> Iterator[MetadataServer]:
    """A SQLite ``cmf server`` with a token: the read tests go through its bearer auth."""
    server = MetadataServer(tmp_path_factory.mktemp("sqlite-server"), tokens=[TOKEN])
    server.start()
    try:
        push_all(server.url, workspace, TOKEN)
        _secrets(server.data_dir)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sqlite_target(sqlite_server) -> Target:
    return Target("sqlite", sqlite_server.url, {"Authorization": f"Bearer {TOKEN}"}, sqlite_server.data_dir)


@pytest.fixture(scope="module")
def postgres_target(tmp_path_factory, workspace) -> Iterator[Target]:
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed")
    base = tmp_path_factory.mktemp("pg-server")
    postgres = PostgresServer(base)
    postgres.start()
    try:
        server = MetadataServer(base / "server", postgres=postgres, postgres_db="cmf_ui")
        server.start()
        try:
            push_all(server.url, workspace)
            _secrets(server.data_dir)
            yield Target("postgres", server.url, {}, server.data_dir)
        finally:
            server.stop()
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def ui_target(tmp_path_factory, workspace) -> Iterator[Target]:
    """``cmf ui --mlmd <workspace>/mlmd`` as a process of its own."""
    port = free_port()
    argv = [sys.executable, "-c", "from cmf_core.cli import main; main()", "ui", "--mlmd", str(workspace.mlmd),
            "--port", str(port)]
    server = Server(argv, port, tmp_path_factory.mktemp("cmf-ui") / "ui.log")
    server.start()
    try:
        yield Target("ui", f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres", "ui"])
def target(request) -> Target:
    return request.getfixturevalue(f"{request.param}_target")


def ids(items: List[Dict[str, Any]]) -> List[int]:
    return [item["id"] for item in items]


def csp_script_src(response: requests.Response) -> str:
    policy = response.headers.get("content-security-policy", "")
    assert policy, f"no CSP on {response.url}"
    directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";") if d.strip()}
    return directives.get("script-src", directives.get("default-src", ""))


# -- pipelines and executions ------------------------------------------------------------------------------


def test_pipelines_are_listed_with_counts(target):
    data = target.api("/pipelines")
    assert set(data) >= {"total", "items"} and data["total"] >= len(data["items"]) >= 2
    by_name = {p["name"]: p for p in data["items"]}
    assert {P, XSS} <= set(by_name)
    # 3 stages, 5 executions; raw, train, environment, 3 models, 3 step metrics, 4 metrics
    assert {k: by_name[P][k] for k in ("stages", "executions", "artifacts")} == \
        {"stages": 3, "executions": 5, "artifacts": 13}
    assert target.api(f"/pipelines/{P}/artifacts", size=500)["total"] == 13
    pipeline = target.api(f"/pipelines/{P}")
    assert [s["short"] for s in pipeline["stages"]] == ["prepare", "train", "evaluate"]
    assert pipeline["artifact_types"]["Model"] == 3


def test_executions_paging(target):
    first = target.api(f"/pipelines/{P}/executions", size=2)
    assert first["total"] == 5 and len(first["items"]) == 2
    third = target.api(f"/pipelines/{P}/executions", size=2, page=3)
    assert third["total"] == 5 and len(third["items"]) == 1
    past = target.get(f"/api/pipelines/{P}/executions", params={"size": 2, "page": 9})  # not an empty page: says why
    assert past.status_code == 400 and "past the end" in past.json()["detail"] and "page 3" in past.json()["detail"]
    page = target.page(f"/pipelines/{P}/executions", size=2, page=9)
    assert page.status_code == 400 and "the last is page 3" in page.text
    everything = ids(target.api(f"/pipelines/{P}/executions", size=500)["items"])
    paged = [i for page in (1, 2, 3) for i in ids(target.api(f"/pipelines/{P}/executions", size=2, page=page)["items"])]
    assert paged == everything == sorted(everything)


def test_executions_sorting(target):
    def values(sort: str, order: str, column: str, key: str) -> List[Any]:
        items = target.api(f"/pipelines/{P}/executions", sort=sort, order=order)["items"]
        return [item[column].get(key) for item in items]

    assert values("param.lr", "desc", "params", "lr") == [0.1, 0.05, 0.01, None, None]  # missing last
    assert values("lr", "asc", "params", "lr") == [0.01, 0.05, 0.1, None, None]
    assert values("metric.accuracy", "asc", "metrics", "accuracy") == [0.8, 0.9, EVAL_ACCURACY, 0.95, None]
    assert values("metric.accuracy", "desc", "metrics", "accuracy") == [0.95, EVAL_ACCURACY, 0.9, 0.8, None]
    assert values("epochs", "desc", "params", "epochs") == [20, 10, 5, None, None]
    stages = [e["stage"] for e in target.api(f"/pipelines/{P}/executions", sort="stage")["items"]]
    assert stages == sorted(stages)


def test_executions_by_stage_text_and_filter(target):
    index = target.index
    train = ids(index["train"])

    def found(**params: Any) -> List[int]:
        data = target.api(f"/pipelines/{P}/executions", size=500, **params)
        assert data["total"] == len(data["items"])
        return sorted(ids(data["items"]))

    assert found(stage="train") == sorted(train)
    assert found(stage=f"{P}/prepare") == [index["prepare"]["id"]]
    assert found(q="warm") == [index["prepare"]["id"]]  # a text property
    assert found(q="EVALUATE") == [index["evaluate"]["id"]]  # the stage, case-insensitive
    assert found(q="no-such-text") == []
    assert found(filter="lr > 0.01 and stage = train") == sorted(train[:2])
    assert found(filter="param.lr >= 0.05 or metric.accuracy > 0.92") == sorted(
        train + [index["evaluate"]["id"]])
    assert found(filter="not stage = train") == sorted([index["prepare"]["id"], index["evaluate"]["id"]])
    assert found(filter="(epochs = 10 or epochs = 20) and accuracy < 0.95") == [train[1]]
    assert found(filter="stage ~ RAI") == sorted(train)
    assert found(filter="`note` ~ 'WARM s'") == [index["prepare"]["id"]]
    assert found(filter="lr > 0.01", stage="train", q="train") == sorted(train[:2])


@pytest.mark.parametrize("page, name", [("/pipelines/{P}/lineage?hops=abc", "hops"), ("/?page=x", "page"),
                                        ("/artifacts/1?page=1.5", "page")])
def test_typed_query_parameters_are_400_naming_them(target, page, name):
    api = "/api" + page.replace("/?", "/pipelines?")
    for path, accept in ((api, "application/json"), (page, "text/html")):
        response = target.get(path.format(P=P), headers={"Accept": accept})
        assert response.status_code == 400, (path, response.status_code)
        message = response.json()["detail"] if path == api else html.unescape(response.text)
        assert name in message and "whole number" in message and "'" in message, message
    assert target.get("/api/executions/abc").status_code == 404  # a path naming no record: not found


@pytest.mark.parametrize("q", [None, "model", "train"])
def test_artifact_type_counts_follow_the_search(target, q):
    everything = target.api(f"/pipelines/{P}/artifacts", size=500, q=q)
    assert sum(everything["type_counts"].values()) == everything["total"]
    for kind, count in everything["type_counts"].items():
        assert target.api(f"/pipelines/{P}/artifacts", type=kind, q=q)["total"] == count
    tabs = target.page(f"/pipelines/{P}/artifacts", q=q).text
    assert f'<span class="count">{everything["total"]}</span>' in tabs


def test_artifact_columns_are_those_of_the_type_shown(target):
    """A type's tab shows the custom properties its artifacts hold; "All" only those most artifacts hold."""
    everything = target.api(f"/pipelines/{XSS}/artifacts", size=500)
    for kind in everything["type_counts"]:
        data = target.api(f"/pipelines/{XSS}/artifacts", size=500, type=kind)
        held = {key for a in data["items"] for key in a["custom_properties"]}
        assert set(data["columns"]["shown"]) == held
    for column in everything["columns"]["shown"]:
        assert 2 * sum(column in a["custom_properties"] for a in everything["items"]) >= everything["total"]
    assert set(everything["columns"]["shown"]) < set(everything["columns"]["custom"])  # some left to the tabs


def test_step_metric_columns_show_min_max_and_last(target):
    plain = target.api(f"/pipelines/{P}/executions", size=500)
    assert plain["columns"]["steps"] == ["training.loss"] and "steps" not in plain["items"][0]  # not read unasked
    cols = "step.training.loss.min,step.training.loss.last,param.lr"
    data = target.api(f"/pipelines/{P}/executions", size=500, cols=cols)
    by_lr = {e["params"].get("lr"): e["steps"] for e in data["items"]}
    for run, (lr, _, _) in enumerate(RUNS):
        losses = [loss(run, step) for step in range(STEPS)]
        assert by_lr[lr] == {"training.loss": {"min": min(losses), "max": max(losses), "last": losses[-1]}}
    assert by_lr[None] == {}  # prepare and evaluate wrote none
    page = target.page(f"/pipelines/{P}/executions", cols=cols, sort="param.lr").text
    header = page.index(">training.loss.min<")
    assert header < page.index(">training.loss.last<") < page.index(">lr", header)  # the chosen order
    assert f">{loss(2, STEPS - 1):.6g}<" in page


def test_a_run_reads_the_same_on_every_store(target):
    """A run's label is its type and short uuid, which every store holding it shares (ids are store-local)."""
    for execution in target.api(f"/pipelines/{P}/executions", size=500)["items"]:
        assert execution["label"] == f"{execution['type']} {execution['uuid'][:8]}"
        assert target.api(f"/executions/{execution['id']}")["label"] == execution["label"]
        assert f">{execution['label']}</h1>" in target.page(f"/executions/{execution['id']}").text


def test_long_lists_are_bounded_and_link_to_the_filtered_list(target):
    wide = target.api(f"/pipelines/{WIDE}/artifacts", q="wide.csv")["items"][0]
    data = target.api(f"/artifacts/{wide['id']}")
    assert (len(data["consumers"]), data["consumers_total"], data["producers_total"]) == (20, SWEEPS, 0)
    page = target.page(f"/artifacts/{wide['id']}").text
    href = f"/pipelines/{WIDE}/executions?filter=used+%3D+{wide['id']}"
    assert f'href="{href}"' in page and f"all {SWEEPS}" in page
    listed = target.api(f"/pipelines/{WIDE}/executions", size=500, filter=f"used = {wide['id']}")
    assert listed["total"] == SWEEPS and {e["stage"] for e in listed["items"]} == {"sweep"}
    train0 = target.index["train"][0]
    made = target.api(f"/pipelines/{P}/artifacts", size=500, filter=f"produced_by = {train0['id']}")["items"]
    assert {a["type"] for a in made} == {"Model", "Step_Metrics", "Metrics"}
    read = target.api(f"/pipelines/{P}/artifacts", size=500, filter=f"used_by = {train0['id']}")["items"]
    assert {a["name"].split(":")[0] for a in read if a["type"] == "Dataset"} == {"data/train.csv"}


E, A = ("executions",), ("artifacts",)


@pytest.mark.parametrize("kinds, params, words", [
    (E + A, {"filter": "x >"}, ["value"]),
    (E + A, {"filter": "x > 0.1 and"}, ["ends"]),
    (E + A, {"filter": "(x > 0.1"}, ["')'"]),
    (E + A, {"filter": "x = 'open"}, ["position"]),
    (E + A, {"filter": "x > 0.1 epochs"}, ["'epochs'"]),
    (E, {"filter": "nosuch > 1"}, ["'nosuch'", "param.lr", "metric.accuracy", "stage"]),
    (E, {"sort": "nosuch"}, ["'nosuch'", "param.lr"]),
    (A, {"filter": "nosuch > 1"}, ["'nosuch'", "name", "uri"]),
    (A, {"sort": "metric.accuracy"}, ["'metric.accuracy'", "name"]),
    (E + A, {"filter": "id > abc"}, ["number"]),
    (E, {"filter": "lr < true"}, ["lr holds numbers", "'true'"]),
    (E, {"filter": "lr > abc"}, ["lr holds numbers", "'abc'"]),  # not silently nothing
    (E, {"filter": "metric.accuracy ~ 0.9"}, ["holds numbers", "contains"]),
    (E, {"filter": "lr >> 1"}, ["'>>'", "not an operator"]),
    (E, {"sort": "metric.nope"}, ["'metric.nope'", "metric.accuracy"]),  # not an unsorted 200
    (E, {"filter": "param.nope = 1"}, ["'param.nope'", "param.lr"]),
    (E, {"filter": "used > 3"}, ["used = ID"]),
    (E, {"sort": "used"}, ["not sort"]),
    (A, {"sort": "custom.nope"}, ["'custom.nope'"]),
    (E + A, {"order": "sideways"}, ["asc"]),
    (E + A, {"page": 0}, ["page"]),
    (E + A, {"size": 100000}, ["size"]),
    (E + A, {"size": "many"}, ["number"]),
])
def test_bad_list_parameters_are_400_naming_the_problem(target, kinds, params, words):
    for kind in kinds:
        response = target.get(f"/api/pipelines/{P}/{kind}", params=params)
        assert response.status_code == 400, (kind, params, response.status_code, response.text)
        detail = response.json()["detail"]
        for word in words:
            assert word in detail, (params, detail)
        page = target.page(f"/pipelines/{P}/{kind}", **params)  # the page stays, with the error shown
        assert page.status_code == 400 and "text/html" in page.headers["content-type"], (kind, params)


HUGE = "99999999999999999999"  # beyond 64 bits
ODD = {
    "filter-huge-int": ("/api/pipelines/{P}/executions", {"filter": f"lr > {HUGE}000"}),
    "filter-huge-id": ("/api/pipelines/{P}/executions", {"filter": f"id = {HUGE}"}),
    "filter-inf": ("/api/pipelines/{P}/executions", {"filter": "lr > 1e999"}),
    "filter-nul": ("/api/pipelines/{P}/executions", {"filter": "note = 'a\x00b'"}),
    "q-nul": ("/api/pipelines/{P}/artifacts", {"q": "a\x00b"}),
    "q-wildcards": ("/api/pipelines/{P}/artifacts", {"q": "%_\\"}),
    "filter-backticks": ("/api/pipelines/{P}/executions", {"filter": "```"}),
    "filter-open-parens": ("/api/pipelines/{P}/executions", {"filter": "((((((((((lr > 1"}),
    "filter-deep-parens": ("/api/pipelines/{P}/executions", {"filter": "(" * 600 + "lr > 0" + ")" * 600}),
    "filter-deep-not": ("/api/pipelines/{P}/executions", {"filter": "not " * 450 + "lr > 0"}),
    "filter-long": ("/api/pipelines/{P}/executions", {"filter": " or ".join(["lr > 0"] * 300)}),
    "stage-nul": ("/api/pipelines/{P}/executions", {"stage": "a\x00b"}),
    "type-nul": ("/api/pipelines/{P}/artifacts", {"type": "a\x00b"}),
    "sort-nul": ("/api/pipelines/{P}/executions", {"sort": "param.a\x00b"}),
    "pipeline-nul": ("/api/pipelines/a%00b/artifacts", {}),
    "page-huge": ("/api/pipelines/{P}/executions", {"page": HUGE}),
    "size-negative": ("/api/pipelines/{P}/artifacts", {"size": -1}),
    "sort-empty-key": ("/api/pipelines/{P}/executions", {"sort": "param."}),
    "sort-empty-metric": ("/api/pipelines/{P}/executions", {"sort": "metric."}),
    "execution-huge-id": ("/api/executions/" + HUGE, {}),
    "artifact-huge-id": ("/api/artifacts/" + HUGE, {}),
    "focus-huge-id": ("/api/pipelines/{P}/lineage", {"focus": "artifact:" + HUGE}),
    "compare-huge-id": ("/api/pipelines/{P}/compare", {"ids": ["1", HUGE]}),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_parameters_are_never_500(target, case):
    path, params = ODD[case]
    path = path.replace("{P}", P)
    answers = [target.get(path, params=params), target.page(path[len("/api"):], **params)]
    statuses = [a.status_code for a in answers]
    assert all(s in (200, 400, 404) for s in statuses), (case, statuses, answers[0].text[:300])
    assert "Traceback" not in answers[1].text


# -- artifacts -----------------------------------------------------------------------------------------------


def test_artifacts_by_type_stage_sort_and_search(target):
    def names(**params: Any) -> List[str]:
        data = target.api(f"/pipelines/{P}/artifacts", size=500, **params)
        assert data["total"] == len(data["items"])
        return [a["name"].split(":")[0] for a in data["items"]]

    models = [f"models/model{i}.pkl" for i in range(3)]
    assert sorted(names(type="Model")) == models
    assert names(type="Model", sort="name") == models
    assert names(type="Model", sort="name", order="desc") == models[::-1]
    prepare = names(stage="prepare")
    assert {"data/raw.csv", "data/train.csv"} <= set(prepare) and not set(models) & set(prepare)
    assert set(models) <= set(names(stage="train"))
    assert names(q="model1") == ["models/model1.pkl"]
    assert sorted(names(q="MODEL", type="Model")) == models
    assert names(filter="model_name = m1") == ["models/model1.pkl"]  # a property, by its bare name
    assert names(filter="prop.model_framework = sklearn and name ~ model2") == ["models/model2.pkl"]
    assert len(names(type="Step_Metrics")) == 3 and len(names(type="Metrics")) == 4
    assert names(type="Label") == []


# -- one execution, one artifact -----------------------------------------------------------------------------


def test_execution_detail(target):
    index = target.index
    artifacts = index["artifacts"]
    for run, summary in enumerate(index["train"]):
        data = target.api(f"/executions/{summary['id']}")
        lr, epochs, accuracy = RUNS[run]
        assert data["pipeline"] == P and data["stage"] == "train"
        assert {k: data["params"][k] for k in ("lr", "epochs")} == {"lr": lr, "epochs": epochs}
        assert artifacts["data/train.csv"]["id"] in ids(data["inputs"])
        outputs = {a["type"]: a for a in data["outputs"]}
        assert outputs["Model"]["id"] == artifacts[f"models/model{run}.pkl"]["id"]
        assert [m["values"] for m in data["metrics"]] == [{"accuracy": accuracy}]
        (steps,) = data["step_metrics"]
        assert steps["name"] == "training" and steps["artifact"]["id"] == outputs["Step_Metrics"]["id"]
        assert steps["data"] is not None, f"{target.kind}: no step metrics data"
        assert steps["data"]["steps"] == list(range(1, STEPS + 1))
        assert steps["data"]["series"]["loss"] == [loss(run, s) for s in range(STEPS)]
        alone = target.api(f"/artifacts/{steps['artifact']['id']}/step_metrics")
        assert alone["data"] == steps["data"]
        page = target.page(f"/executions/{summary['id']}")
        assert page.status_code == 200 and "training" in page.text
    evaluate = target.api(f"/executions/{index['evaluate']['id']}")
    assert ids(evaluate["inputs"]) and artifacts["models/model2.pkl"]["id"] in ids(evaluate["inputs"])
    assert evaluate["step_metrics"] == []


def test_artifact_detail(target):
    index = target.index
    train_csv = index["artifacts"]["data/train.csv"]
    data = target.api(f"/artifacts/{train_csv['id']}")
    assert ids(data["producers"]) == [index["prepare"]["id"]]
    assert sorted(ids(data["consumers"])) == sorted(ids(index["train"]))
    assert data["pull_command"] == f"cmf artifact pull -p {P} -a {train_csv['name']}"
    assert data["pipelines"] == [P]
    assert data["remotes"] and all(r["pipeline"] == P and r["url"] for r in data["remotes"])
    assert data["md5"] == train_csv["uri"]
    if target.kind == "ui":  # the workspace holds this version: a preview
        assert data["preview"]["kind"] == "csv" and data["preview"]["rows"] == [["1", "2"], ["3", "4"]]
    else:
        assert data["preview"]["kind"] == "none"
    model = index["artifacts"]["models/model2.pkl"]
    data = target.api(f"/artifacts/{model['id']}")
    assert ids(data["producers"]) == [index["train"][2]["id"]]
    assert ids(data["consumers"]) == [index["evaluate"]["id"]]
    assert data["properties"]["model_name"] == "m2"
    assert target.page(f"/artifacts/{model['id']}").status_code == 200


def test_model_card(target):
    index = target.index
    model = index["artifacts"]["models/model0.pkl"]
    card = target.api(f"/artifacts/{model['id']}/model_card")
    assert card["model"]["id"] == model["id"] and card["model"]["properties"]["model_framework"] == "sklearn"
    assert ids(card["producers"]) == [index["train"][0]["id"]] and card["consumers"] == []
    made_by = card["producers"][0]["params"]  # the run that made it
    assert (made_by["lr"], made_by["epochs"]) == RUNS[0][:2]
    assert card["producers"][0]["metrics"] == {"accuracy": RUNS[0][2]}
    page = target.api(f"/artifacts/{model['id']}")  # the page and its card say the same, from one function
    assert (ids(page["producers"]), ids(page["consumers"])) == (ids(card["producers"]), ids(card["consumers"]))
    used = target.api(f"/artifacts/{index['artifacts']['models/model2.pkl']['id']}/model_card")
    assert ids(used["producers"]) == [index["train"][2]["id"]] and ids(used["consumers"]) == [index["evaluate"]["id"]]
    assert index["artifacts"]["data/train.csv"]["id"] in ids(card["inputs"])
    assert {a["type"] for a in card["outputs"]} == {"Step_Metrics", "Metrics"}
    download = target.get(f"/api/artifacts/{model['id']}/model_card", params={"download": 1})
    assert download.status_code == 200 and download.json() == card
    disposition = download.headers.get("content-disposition", "")
    assert disposition.startswith("attachment") and f"model-card-{model['id']}.json" in disposition
    assert "content-disposition" not in target.get(f"/api/artifacts/{model['id']}/model_card").headers
    not_a_model = target.get(f"/api/artifacts/{index['artifacts']['data/train.csv']['id']}/model_card")
    assert not_a_model.status_code == 404


# -- lineage ---------------------------------------------------------------------------------------------------


def test_artifacts_without_columns_answer_the_same_page(target):
    """``columns=0`` (``cmf mcp``: no table to lay out) leaves out the column lists, and nothing else."""
    for params in ({}, {"type": "Model", "sort": "name", "order": "desc"}, {"filter": "custom.accuracy > 0.5"}):
        full = target.api(f"/pipelines/{P}/artifacts", **params)
        lean = target.api(f"/pipelines/{P}/artifacts", columns="0", **params)
        assert lean["columns"] is None and full["columns"]["custom"]
        assert {**lean, "columns": full["columns"]} == full


def test_search_across_pipelines(target):
    """``/api/search`` (what ``cmf mcp``'s search and its names of records use): a stage, a file name, a uuid or md5
    prefix, an id; exact matches first; the pipelines of each match."""
    index = target.index
    train = index["train"][0]
    found = target.api("/search", q="train")
    kinds = [(m["kind"], m["label"]) for m in found["items"]]
    assert kinds[0] == ("stage", "train") and found["items"][0]["exact"] and found["items"][0]["pipelines"] == [P]
    assert ("artifact", "train.csv") in kinds and found["total"] == len(found["items"])
    by_uuid = target.api("/search", q=train["uuid"][:8])["items"]  # and its step metrics, stored under its uuid
    assert [(m["id"], m["pipelines"], m["exact"]) for m in by_uuid if m["kind"] == "execution"] == [
        (train["id"], [P], False)]
    assert target.api("/search", q=train["uuid"])["items"][0]["exact"]
    model = index["artifacts"]["models/model1.pkl"]
    (hit,) = target.api("/search", q=model["uri"][:10])["items"]
    assert (hit["id"], hit["md5"], hit["pipelines"], hit["type"]) == (model["id"], model["uri"], [P], "Model")
    assert target.api("/search", q=f"artifact:{model['id']}")["items"][0]["id"] == model["id"]
    shared = target.api("/search", q="wide.csv")["items"]
    assert [m["pipelines"] for m in shared] == [[WIDE]]
    assert target.api("/search", q=XSS[:4])["items"][0]["name"].startswith(XSS)  # markup is data, never escaped
    short = target.api("/search", q="a", limit=3)
    assert len(short["items"]) == 3 and short["total"] > 3
    for params in ({"q": ""}, {"q": "x", "limit": "0"}, {"q": "x", "limit": "101"}):
        assert target.get("/api/search", params=params).status_code == 400
    assert target.api("/search", q="no-such-thing-anywhere") == {"q": "no-such-thing-anywhere", "total": 0,
                                                                 "limit": 20, "items": []}


def lineage(target: Target, **params: Any) -> Dict[str, Any]:
    data = target.api(f"/pipelines/{P}/lineage", **params)
    keys = [n["key"] for n in data["nodes"]]
    assert len(keys) == len(set(keys)) == data["total"]
    for edge in data["edges"]:
        assert edge["source"] in keys and edge["target"] in keys, edge
    return data


def test_lineage_of_the_whole_pipeline(target):
    both = lineage(target)
    kinds = [n["kind"] for n in both["nodes"]]
    assert kinds.count("execution") == 5 and kinds.count("artifact") == 12  # no environment
    assert len(both["edges"]) == 16
    assert not any(n["focus"] for n in both["nodes"])
    for edge in both["edges"]:  # artifact -> execution -> artifact
        assert edge["source"].split(":")[0] != edge["target"].split(":")[0]
    artifacts = lineage(target, view="artifacts")
    assert {n["kind"] for n in artifacts["nodes"]} == {"artifact"} and len(artifacts["nodes"]) == 12
    assert len(artifacts["edges"]) == 11  # raw -> train.csv, train.csv -> 9 outputs, model2 -> eval metrics
    executions = lineage(target, view="executions")
    assert {n["kind"] for n in executions["nodes"]} == {"execution"} and len(executions["nodes"]) == 5
    index = target.index
    assert {(e["source"], e["target"]) for e in executions["edges"]} == (
        {(f"execution:{index['prepare']['id']}", f"execution:{t['id']}") for t in index["train"]}
        | {(f"execution:{index['train'][2]['id']}", f"execution:{index['evaluate']['id']}")})
    layers = {n["key"]: n["layer"] for n in executions["nodes"]}
    assert layers[f"execution:{index['prepare']['id']}"] < layers[f"execution:{index['evaluate']['id']}"]
    page = target.page(f"/pipelines/{P}/lineage")
    assert page.status_code == 200 and "<svg" in page.text
    svg = target.get(f"/pipelines/{P}/lineage.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-disposition"].startswith("attachment")


def test_focused_lineage(target):
    index = target.index
    train_csv = f"artifact:{index['artifacts']['data/train.csv']['id']}"
    near = lineage(target, focus=train_csv, hops=1)
    expected = {train_csv, f"execution:{index['prepare']['id']}"} | {f"execution:{t['id']}" for t in index["train"]}
    assert {n["key"] for n in near["nodes"]} == expected
    assert [n["key"] for n in near["nodes"] if n["focus"]] == [train_csv]
    assert all(n["more"] for n in near["nodes"] if n["kind"] == "execution")  # each has neighbours not shown
    first_train = f"execution:{index['train'][0]['id']}"
    wider = lineage(target, focus=train_csv, hops=1, expand=first_train)
    added = {n["key"] for n in wider["nodes"]} - expected
    assert added == {f"artifact:{a['id']}" for a in target.api(f"/executions/{index['train'][0]['id']}")["outputs"]}
    assert [n["key"] for n in wider["nodes"] if n["focus"]] == [train_csv]
    whole = lineage(target, focus=train_csv, hops=10)
    assert whole["total"] == 17
    focused_page = target.page(f"/pipelines/{P}/lineage", focus=train_csv, hops=1)
    assert focused_page.status_code == 200


@pytest.mark.parametrize("params", [{"focus": "artifact:abc"}, {"focus": "dataset:1"}, {"focus": "artifact:"},
                                    {"focus": "artifact:1", "expand": "execution:x"}, {"view": "sideways"},
                                    {"hops": 99}, {"hops": -1}])
def test_bad_lineage_parameters_are_400(target, params):
    response = target.get(f"/api/pipelines/{P}/lineage", params=params)
    assert response.status_code == 400, (params, response.status_code, response.text)
    assert response.json()["detail"]


# -- compare ------------------------------------------------------------------------------------------------------


def test_compare(target):
    train = ids(target.index["train"])
    data = target.api(f"/pipelines/{P}/compare", ids=train)
    rows = {(r["group"], r["key"]): r for r in data["rows"]}
    assert rows[("param", "lr")]["values"] == [lr for lr, _, _ in RUNS] and rows[("param", "lr")]["differs"]
    assert rows[("metric", "accuracy")]["values"] == [acc for _, _, acc in RUNS]
    assert rows[("execution", "stage")] == {"group": "execution", "key": "stage", "values": ["train"] * 3,
                                             "differs": False, "differs_from_ref": [False, False, False]}
    assert ids(data["executions"]) == train
    assert "training.loss" in data["metric_choices"] and data["metric"] in data["metric_choices"]
    chart = target.api(f"/pipelines/{P}/compare", ids=",".join(map(str, train)), metric="training.loss")["chart"]
    assert chart["steps"] == list(range(1, STEPS + 1))
    assert sorted(chart["series"].values()) == [[loss(run, s) for s in range(STEPS)] for run in range(3)]
    diff = target.api(f"/pipelines/{P}/compare", ids=train, diff=1)
    assert diff["rows"] and all(r["differs"] for r in diff["rows"])
    assert {(r["group"], r["key"]) for r in diff["rows"]} == {k for k, r in rows.items() if r["differs"]}
    assert ("execution", "stage") not in {(r["group"], r["key"]) for r in diff["rows"]}
    assert target.page(f"/pipelines/{P}/compare", ids=train).status_code == 200


@pytest.mark.parametrize("params", [{}, {"ids": "1"}, {"ids": ["5", "5"]}, {"ids": "abc,1"}])
def test_compare_needs_two_executions(target, params):
    response = target.get(f"/api/pipelines/{P}/compare", params=params)
    assert response.status_code == 400 and response.json()["detail"]
    page = target.page(f"/pipelines/{P}/compare", **params)
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]


def test_compare_in_an_unknown_pipeline_is_404(target):
    train = ids(target.index["train"])
    assert target.page("/pipelines/none-such/compare", ids=train).status_code == 404
    assert target.get("/api/pipelines/none-such/compare", params={"ids": train}).status_code == 404


# -- not found -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/pipelines/none-such", "/api/pipelines/none-such/executions",
                                  "/api/pipelines/none-such/artifacts", "/api/pipelines/none-such/lineage",
                                  "/api/executions/999999", "/api/artifacts/999999",
                                  "/api/artifacts/999999/model_card", "/api/artifacts/999999/step_metrics"])
def test_unknown_records_are_404_json(target, path):
    response = target.get(path)
    assert response.status_code == 404 and response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


@pytest.mark.parametrize("path", ["/pipelines/none-such/executions", "/pipelines/none-such/lineage",
                                  "/executions/999999", "/artifacts/999999", "/executions/abc", "/no/such/page",
                                  f"/pipelines/{quote('<script>alert(1)</script>', safe='')}/artifacts"])
def test_unknown_pages_are_a_404_page(target, path):
    response = target.page(path)
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert 'href="/"' in response.text
    assert "Traceback" not in response.text and "File \"" not in response.text
    assert "<script>alert" not in response.text
    assert "default-src" in response.headers.get("content-security-policy", "")


# -- security ----------------------------------------------------------------------------------------------------


def test_every_page_has_a_csp_without_inline_script(target):
    index = target.index
    execution, artifact = index["train"][0]["id"], index["artifacts"]["data/train.csv"]["id"]
    model = index["artifacts"]["models/model0.pkl"]["id"]
    paths = ["/", f"/pipelines/{P}/executions", f"/pipelines/{P}/executions?filter=lr+%3E",
             f"/pipelines/{P}/artifacts", f"/pipelines/{P}/lineage", f"/pipelines/{P}/tensorboard",
             f"/pipelines/{P}/compare?ids={execution}&ids={index['train'][1]['id']}", f"/executions/{execution}",
             f"/artifacts/{artifact}", f"/artifacts/{model}", "/none-such"]
    if target.kind == "sqlite":  # the only one with tokens: elsewhere /login just redirects
        paths.append("/login")
    for path in paths:
        response = target.get(path, headers={"Accept": "text/html"})
        assert response.headers["content-type"].startswith("text/html"), path
        script_src = csp_script_src(response)
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, (path, script_src)
        assert "<script>" not in response.text.replace('<script type="application/json"', "")
        assert response.headers.get("x-content-type-options") == "nosniff"


def test_markup_in_names_and_properties_is_escaped(target):
    name = quote(XSS, safe="")
    executions = target.api(f"/pipelines/{name}/executions")["items"]
    assert [e["params"]["note"] for e in executions] == [XSS]
    artifacts = target.api(f"/pipelines/{name}/artifacts", size=500)["items"]
    marked = next(a for a in artifacts if a["name"].startswith(XSS))
    assert marked["custom_properties"]["comment"] == XSS
    pages = ["/", f"/pipelines/{name}/executions", f"/pipelines/{name}/artifacts", f"/pipelines/{name}/lineage",
             f"/pipelines/{name}/lineage.svg", f"/pipelines/{name}/tensorboard", f"/executions/{executions[0]['id']}",
             f"/artifacts/{marked['id']}", f"/pipelines/{P}/executions?filter={quote(XSS)}",
             f"/pipelines/{P}/executions?q={quote(XSS)}"]
    if target.kind == "sqlite":  # the only one with tokens: elsewhere /login just redirects
        pages.append(f"/login?next={quote('/' + XSS)}")
    for path in pages:
        response = target.get(path, headers={"Accept": "text/html"})
        assert response.status_code in (200, 400), (path, response.status_code)
        assert "<img" not in response.text, path
        assert "&lt;img" in response.text or "&#60;img" in response.text, path


def test_the_ui_is_read_only(target):
    execution = target.index["train"][0]["id"]
    for path in ["/", f"/pipelines/{P}/executions", f"/api/pipelines/{P}/executions", "/api/pipelines",
                 f"/executions/{execution}", f"/api/executions/{execution}", f"/pipelines/{P}/compare"]:
        assert target.post(path, data={"x": "1"}).status_code == 405, path
    if target.kind == "ui":
        for path in ["/mlmd_push", "/api/mlmd_push", "/mlmd_pull", "/python-env", "/label", "/step-metrics",
                     "/tensorboard"]:
            response = target.post(path, json={"exec_uuid": None, "json_payload": "{}", "pipeline_name": "x"})
            assert response.status_code in (404, 405), (path, response.status_code)


def test_only_login_logout_and_the_wire_routes_take_post(workspace, tmp_path):
    from cmf_core.server.app import Settings, create_app
    from cmf_core.server.store import ServerStore

    def posts(app, routes=None, prefix: str = "") -> set:
        """The paths of the POST routes, included routers walked into (FastAPI >= 0.165 keeps them apart)."""
        found = set()
        for route in app.routes if routes is None else routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                found |= posts(app, inner.routes, prefix + route.include_context.prefix)
            elif "POST" in (getattr(route, "methods", None) or ()):
                found.add(prefix + route.path)
        return found

    ui = create_app(Settings(None, workspace.root, mlmd=workspace.mlmd))
    assert posts(ui) == {"/login", "/logout"}
    wire = {"/mlmd_push", "/mlmd_pull", "/python-env", "/label", "/step-metrics", "/tensorboard"}
    server = create_app(Settings(ServerStore(sqlite=tmp_path / "mlmd"), tmp_path / "data"))
    assert posts(server) == {"/login", "/logout", "/api/sync", "/peers/sync"} | wire | {"/api" + w for w in wire}


# -- auth --------------------------------------------------------------------------------------------------------


def test_cmf_ui_with_a_token_file_asks_for_the_token(tmp_path, workspace):
    """``cmf ui --token-file``, for a UI others on the network can reach: nothing without the token; a browser
    signs in once and has a Sign out button."""
    tokens = write(tmp_path / "tokens", "# who may look\nui-token-1\n")
    port = free_port()
    argv = [sys.executable, "-c", "from cmf_core.cli import main; main()", "ui", "--mlmd", str(workspace.mlmd),
            "--port", str(port), "--token-file", str(tokens)]
    with Server(argv, port, tmp_path / "ui.log"):
        url = f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/api/pipelines", timeout=30).status_code == 401
        assert requests.get(f"{url}/api/pipelines", headers={"Authorization": "Bearer ui-token-1"},
                            timeout=30).status_code == 200
        page = requests.get(f"{url}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        signed = requests.post(f"{url}/login", data={"token": "ui-token-1", "next": "/"}, allow_redirects=False,
                               timeout=30)
        home = requests.get(f"{url}/", cookies=signed.cookies, headers={"Accept": "text/html"}, timeout=30)
        assert home.status_code == 200 and P in home.text and "Sign out" in home.text


def test_login_and_session_cookie(sqlite_target):
    url = sqlite_target.url
    bare = requests.get(f"{url}/pipelines/{P}/executions?sort=id", headers={"Accept": "text/html"},
                        allow_redirects=False, timeout=30)
    assert bare.status_code == 303
    assert bare.headers["location"] == "/login?next=" + quote(f"/pipelines/{P}/executions?sort=id", safe="")
    assert requests.get(f"{url}/api/pipelines", timeout=30).status_code == 401
    assert requests.get(f"{url}/", timeout=30).status_code == 401  # not a browser: no redirect
    form = requests.get(f"{url}/login", params={"next": "/"}, timeout=30)
    assert form.status_code == 200 and 'name="token"' in form.text

    target = f"/pipelines/{P}/executions?sort=id"
    wrong = requests.post(f"{url}/login", data={"token": "wrong", "next": target}, allow_redirects=False, timeout=30)
    assert wrong.status_code == 401 and wrong.headers["content-type"].startswith("text/html")
    assert "not valid" in wrong.text and "cmf_session" not in wrong.headers.get("set-cookie", "")

    right = requests.post(f"{url}/login", data={"token": TOKEN, "next": target}, allow_redirects=False, timeout=30)
    assert right.status_code == 303 and right.headers["location"] == target
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("cmf_session=")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    value = right.cookies["cmf_session"]
    assert value and value != TOKEN and TOKEN not in cookie

    jar = {"cmf_session": value}
    page = requests.get(url + target, cookies=jar, headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 200 and "uip" in page.text
    assert requests.get(f"{url}/api/pipelines", cookies=jar, timeout=30).status_code == 200
    assert requests.get(f"{url}/api/pipelines", cookies={"cmf_session": TOKEN}, timeout=30).status_code == 401
    forged = value[:-1] + ("1" if value.endswith("0") else "0")
    assert requests.get(f"{url}/api/pipelines", cookies={"cmf_session": forged}, timeout=30).status_code == 401
    logout = requests.post(f"{url}/logout", cookies=jar, allow_redirects=False, timeout=30)
    assert logout.status_code == 303 and "cmf_session=" in logout.headers.get("set-cookie", "")


@pytest.mark.parametrize("next_url", ["//evil.example", "//evil.example/x", "https://evil.example", "/\\evil.example",
                                      "evil.example", "\\\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(sqlite_target, next_url):
    answer = requests.post(f"{sqlite_target.url}/login", data={"token": TOKEN, "next": next_url},
                           allow_redirects=False, timeout=30)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    form = requests.get(f"{sqlite_target.url}/login", params={"next": next_url}, timeout=30)
    assert 'name="next" value="/"' in form.text


def test_bearer_header_opens_the_api(sqlite_target):
    url = sqlite_target.url
    assert requests.get(f"{url}/api/pipelines", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=30).status_code == 200
    assert requests.get(f"{url}/api/pipelines", headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    wrong = requests.get(f"{url}/pipelines/{P}/executions", headers={"Authorization": "Bearer nope",
                                                                     "Accept": "text/html"},
                         allow_redirects=False, timeout=30)
    assert wrong.status_code == 401  # a client with a token is told, not sent to a form
    assert requests.get(f"{url}/static/style.css", timeout=30).status_code == 200
    assert requests.get(f"{url}/health", timeout=30).status_code == 200


# -- hostile paths -----------------------------------------------------------------------------------------------


TENSORBOARD_ESCAPES = [
    "../../mlmd", "../../secret.txt", "../../../secret.txt", "..%2F..%2Fsecret.txt", "%2e%2e/%2e%2e/secret.txt",
    "%2E%2E%2F%2E%2E%2Fsecret.txt", "..%252F..%252Fsecret.txt", "sub/../../../secret.txt", "/etc/passwd",
    "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt", "escape", "%00", "....//....//secret.txt",
]


def test_tensorboard_files_never_leave_their_folder(target):
    base = f"/pipelines/{P}/tensorboard/"
    if target.kind != "ui":
        assert target.raw(base + "events.out.tfevents.1") == (200, b"tb-one")
        assert target.raw(base + "sub/events.out.tfevents.2") == (200, b"tb-two")
        listing = target.api(f"/pipelines/{P}/tensorboard")
        assert {"events.out.tfevents.1", "sub/events.out.tfevents.2"} <= {i["path"] for i in listing["items"]}
    paths = [base + tail for tail in TENSORBOARD_ESCAPES] + [
        "/pipelines/../tensorboard/secret.txt", "/pipelines/%2e%2e/tensorboard/secret.txt",
        "/pipelines/..%2Fdata/tensorboard/secret.txt", "/pipelines/./tensorboard/../secret.txt"]
    for path in paths:
        status, body = target.raw(path)
        assert SECRET.encode() not in body and b"root:" not in body, path
        assert status in (400, 404), (path, status)


def test_artifact_paths_outside_the_workspace_get_no_preview(target, workspace):
    artifacts = target.api(f"/pipelines/{quote(XSS, safe='')}/artifacts", size=500)["items"]
    climbing = [a for a in artifacts if a["type"] == "Dataset" and not a["name"].startswith(XSS)]
    assert len(climbing) == 3
    for artifact in climbing:
        data = target.get(f"/api/artifacts/{artifact['id']}")
        assert data.status_code == 200 and data.json()["preview"]["kind"] == "none"
        assert SECRET not in data.text
        page = target.page(f"/artifacts/{artifact['id']}")
        assert page.status_code == 200 and SECRET not in page.text
        for n in (1, 2):
            assert SECRET not in target.get(f"/api/artifacts/{artifact['id']}", params={"page": n}).text


def test_an_environment_path_outside_the_workspace_is_not_shown(ui_target, workspace):
    (execution,) = ui_target.api(f"/pipelines/{ENVCLIMB}/executions")["items"]
    data = ui_target.api(f"/executions/{execution['id']}")
    assert data["environment"]["path"] == "../outside.txt" and data["environment"]["text"] is None
    assert SECRET not in ui_target.page(f"/executions/{execution['id']}").text
    normal = ui_target.api(f"/executions/{ui_target.index['prepare']['id']}")["environment"]
    assert normal["text"]  # the workspace's own environment file is shown


def test_a_push_never_uploads_files_outside_the_workspace(sqlite_target, workspace):
    with in_workspace(workspace.root), MetadataClient(sqlite_target.url, TOKEN, retries=0) as client:
        assert push_metadata(client, ENVCLIMB, str(workspace.mlmd)).status == "success"
    (execution,) = sqlite_target.api(f"/pipelines/{ENVCLIMB}/executions")["items"]
    shown = sqlite_target.get(f"/api/executions/{execution['id']}")
    assert shown.status_code == 200 and SECRET not in shown.text
    assert not (sqlite_target.data_dir / "env" / "outside.txt").exists()


# -- cmf ui follows the file; reads do not wait for pushes ---------------------------------------------------------


def test_cmf_ui_shows_new_records(ui_target, workspace, monkeypatch):
    before = ui_target.api(f"/pipelines/{LIVE}/executions")
    assert before["total"] == 1
    monkeypatch.chdir(workspace.root)
    cmf = Cmf(filepath=str(workspace.mlmd), pipeline_name=LIVE)
    cmf.create_context("run")
    execution = cmf.create_execution("run", {"n": 2})
    cmf.finalize()
    after = ui_target.api(f"/pipelines/{LIVE}/executions", sort="id", order="desc")
    assert after["total"] == 2
    assert after["items"][0]["uuid"] == execution.properties["Execution_uuid"].string_value
    assert after["items"][0]["params"]["n"] == 2
    home = ui_target.page("/")
    assert home.status_code == 200 and LIVE in home.text


def test_reads_do_not_wait_for_a_push(sqlite_target, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from metadata_server import PIPELINE, generate

    payload = json.dumps(generate(600, 6000))
    headers = sqlite_target.headers
    done = threading.Event()
    outcome: Dict[str, Any] = {}

    def push() -> None:
        started = time.perf_counter()
        try:
            with MetadataClient(sqlite_target.url, TOKEN, retries=0) as client:
                outcome["answer"] = client.push(PIPELINE, payload, None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc
        finally:
            outcome["seconds"] = time.perf_counter() - started
            done.set()

    with requests.Session() as session:
        session.get(f"{sqlite_target.url}/api/pipelines", headers=headers, timeout=60)  # a warm connection
        thread = threading.Thread(target=push)
        thread.start()
        latencies = []
        try:
            while not done.is_set():
                started = time.perf_counter()
                answer = session.get(f"{sqlite_target.url}/api/pipelines", headers=headers, timeout=60)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200
                done.wait(0.05)
        finally:
            thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["answer"]["status"] == "success"
    pushed = {p["name"]: p for p in sqlite_target.api("/pipelines")["items"]}[PIPELINE]
    assert pushed["executions"] == 600
    print(f"push {outcome['seconds']:.2f} s; {len(latencies)} reads: {[round(x, 3) for x in latencies]}")
    assert len(latencies) >= 3, latencies
    assert max(latencies) < outcome["seconds"] / 2, (outcome["seconds"], sorted(latencies)[-5:])
