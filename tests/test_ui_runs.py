"""The runs views over HTTP against a real ``cmf server``: the executions page's column chooser and cross-run
chart controls, the compare page's reference run, several step metrics, python environment diff and artifact
compare, each with its JSON twin.  The browser walks them in ``test_ui_runs_browser.py`` (same pipeline)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from cmf_core.metadata import logger
from cmf_core.server.client import MetadataClient, push_metadata
from cmf_core.server.compare import environment_diff
from cmf_core.testing.metadata_server import MetadataServer
from tests.conftest import write
from tests.test_server import init
from tests.test_ui_api import in_workspace

P = "runs"
TRAINS = 30  # more than a page of 25: the cross-run charts read them all
ENV_A = "numpy==1.26.4\npandas==2.2.0\nrequests==2.31.0\nscikit_learn==1.4.0\n"
ENV_B = "numpy==2.0.1\npandas==2.2.0\nscipy==1.13.0\nScikit-Learn==1.4.0\n"  # same sklearn, spelt otherwise
T0 = 1_700_000_000.0  # the wall time of the first step
STEPS = 4


def lr(i: int) -> Optional[float]:
    """Run i's learning rate; every tenth run has none."""
    return None if i % 10 == 9 else round(0.001 * (i + 1), 4)


def accuracy(i: int) -> Optional[float]:
    """Run i's accuracy; runs 7 and 17 log none."""
    return None if i in (7, 17) else round(0.5 + 0.01 * i, 4)


def loss(run: int, step: int) -> float:
    return round(10.0 / (step + 1) / (run + 1), 4)


@dataclass
class Runs:
    """What the tests look at: the server, the train executions' ids by run number, two datasets' ids by name."""

    server: MetadataServer
    trains: List[int]
    datasets: Dict[str, int]

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.server.url + path, params=params, headers={"Accept": "text/html"}, timeout=60)

    def api(self, path: str, **params: Any) -> Dict[str, Any]:
        response = requests.get(self.server.url + "/api" + path, params=params, timeout=60)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()


def log_runs(root: Path) -> List[str]:
    """prepare (two datasets with properties), TRAINS train runs (lr, optimizer, epochs; accuracy), the first
    three with step metrics (loss, lr and wall time) and the first two in python environments of their own;
    the train runs' uuids."""
    cmf = logger.Cmf(filepath=str(root / "mlmd"), pipeline_name=P)
    cmf.create_context("prepare")
    cmf.create_execution("prepare", {"seed": 1})
    write(root / "data" / "a.csv", "x\n1\n")
    write(root / "data" / "b.csv", "x\n2\n")
    cmf.log_dataset("data/a.csv", "output", custom_properties={"rows": 100, "source": "web"})
    cmf.log_dataset("data/b.csv", "output", custom_properties={"rows": 250, "source": "web"})
    cmf.create_context("train")
    uuids = []
    for i in range(TRAINS):
        logger._ENVIRONMENT = ENV_A if i == 0 else ENV_B if i == 1 else logger._ENVIRONMENT
        params = {"optimizer": "adam" if i % 2 else "sgd", "epochs": 5 + i % 3}
        if lr(i) is not None:
            params["lr"] = lr(i)
        uuids.append(cmf.create_execution("train", params).properties["Execution_uuid"].string_value)
        if i < 3:
            for step in range(STEPS):
                cmf.log_metric("training", {"loss": loss(i, step), "time": T0 + 3600 * i + 10 * step * (i + 1),
                                            "lr": 0.1 / (step + 1)})
            cmf.commit_metrics("training")
        if accuracy(i) is not None:
            cmf.log_execution_metrics("metrics", {"accuracy": accuracy(i), "f1": accuracy(i) - 0.1})
    cmf.finalize()
    return uuids


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[Runs]:
    """``cmf server`` (SQLite) with pipeline ``runs`` pushed; stopped by PID."""
    base = tmp_path_factory.mktemp("ui-runs")
    root = base / "ws"
    root.mkdir()
    environment = logger._ENVIRONMENT
    with MetadataServer(base / "server") as server:
        try:
            with in_workspace(root):
                init(root, base / "store", server.url, base / "origin.git")
                with pytest.MonkeyPatch.context() as mp:  # the command a run records, as a user's would read
                    mp.setattr(sys, "argv", ["train.py", "--config", "sweep.yaml"])
                    uuids = log_runs(root)
                with MetadataClient(server.url, None, retries=0) as client:
                    assert push_metadata(client, P, str(root / "mlmd")).status == "success"
        finally:
            logger._ENVIRONMENT = environment
        items = requests.get(f"{server.url}/api/pipelines/{P}/executions", params={"size": 500}, timeout=60).json()
        by_uuid = {e["uuid"]: e["id"] for e in items["items"]}
        artifacts = requests.get(f"{server.url}/api/pipelines/{P}/artifacts", params={"type": "Dataset"},
                                 timeout=60).json()
        yield Runs(server, [by_uuid[u] for u in uuids], {a["label"]: a["id"] for a in artifacts["items"]})


def text(fragment: str) -> str:
    """What a piece of HTML reads as: tags dropped, entities decoded, blanks collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def cells(html: str, table: str) -> List[List[str]]:
    """The rows of the first ``<table class="TABLE">`` of a page as text cells."""
    body = html.split(f'<table class="{table}', 1)[1].split("</table>", 1)[0]
    return [[text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def page_of(runs: Runs, path: str, **params: Any) -> str:
    response = runs.get(path, **params)
    assert response.status_code == 200, (path, params, response.status_code, response.text[:500])
    assert "text/html" in response.headers["content-type"]
    return response.text


def selected(html: str, name: str) -> str:
    """The selected option of the select ``name``."""
    select = html.split(f'<select name="{name}">', 1)[1].split("</select>", 1)[0]
    return unescape(re.search(r"<option[^>]*selected[^>]*>([^<]*)</option>", select).group(1))


def checked(html: str, name: str) -> List[str]:
    """The values of the checked checkboxes ``name``, in page order."""
    return [unescape(v) for v in re.findall(rf'<input type="checkbox" name="{name}" value="([^"]*)" checked>', html)]


# -- the executions page: columns and cross-run charts -----------------------------------------------------------


def test_columns_are_all_params_and_metrics_by_default_or_those_chosen_in_order(runs):
    default = cells(page_of(runs, f"/pipelines/{P}/executions", stage="train"), "list")
    assert default[0][5:] == ["epochs", "lr", "optimizer", "seed", "accuracy", "f1"]  # Python_Env never shown
    for query in ({"cols": "metric.accuracy,param.lr"}, {"cols": ["metric.accuracy", "param.lr"]}):  # link or form
        html = page_of(runs, f"/pipelines/{P}/executions", stage="train", sort="param.lr", **query)
        table = cells(html, "list")
        assert table[0][5:] == ["accuracy", "lr ▲"]
        shown = [(row[5], row[6]) for row in table[1:]]
        expected = sorted(((accuracy(i), lr(i)) for i in range(TRAINS)), key=lambda r: (r[1] is None, r[1] or 0))
        assert shown == [("" if a is None else f"{a:g}", "" if r is None else f"{r:g}") for a, r in expected[:25]]
        assert checked(html, "cols") == ["metric.accuracy", "param.lr"]
        assert "Columns (2 of 15)" in html  # 6 params and metrics; min, max, last of 3 step columns (time too)
        # the chooser's arrows: lr moved left swaps the two; the sort and the stage stay
        move = re.search(r'<a class="move" href="([^"]+)"[^>]*aria-label="move param.lr left"', html).group(1)
        moved = parse_qs(urlsplit(unescape(move)).query)
        assert moved["cols"] == ["param.lr,metric.accuracy"] and moved["sort"] == ["param.lr"]
        assert moved["stage"] == ["train"]


def test_an_unknown_column_is_named_and_the_others_shown(runs):
    html = page_of(runs, f"/pipelines/{P}/executions", cols="param.nope,metric.f1")
    assert cells(html, "list")[0][5:] == ["f1"]
    assert "No column param.nope here" in unescape(html)


def test_cross_run_chart_choices_live_in_the_url(runs):
    base = f"/pipelines/{P}/executions"
    assert 'id="runs-charts"' not in page_of(runs, base)
    html = page_of(runs, base, stage="train", filter="epochs > 5", chart=1, x="param.lr", y="metric.f1",
                   axes="metric.f1,param.optimizer")
    assert selected(html, "x") == "param.lr" and selected(html, "y") == "metric.f1"
    assert checked(html, "axes") == ["metric.f1", "param.optimizer"]  # in the order asked, first
    section = re.search(r'<section class="runs-charts" id="runs-charts" data-api="([^"]+)" data-query="([^"]*)"', html)
    assert section.group(1) == f"/api/pipelines/{P}/executions"
    assert parse_qs(urlsplit(unescape(section.group(2))).query) == {"stage": ["train"], "filter": ["epochs > 5"]}
    # the JSON twin the charts read, with the page's query: every run it selects, pages of 500
    data = runs.api(base, stage="train", filter="epochs > 5", size=500)
    assert data["total"] == sum(1 for i in range(TRAINS) if 5 + i % 3 > 5)
    # repeated axes= (the form without JavaScript) is read the same; an unknown x falls back to the first column
    html = page_of(runs, base, chart=1, x="param.nope", axes=["param.lr", "metric.accuracy"])
    assert selected(html, "x") == "param.epochs" and checked(html, "axes") == ["param.lr", "metric.accuracy"]
    hide = re.search(r'<a id="toggle-chart" href="([^"]+)">Hide charts</a>', html).group(1)
    assert "chart" not in parse_qs(urlsplit(unescape(hide)).query)


# -- step-metric chart controls ----------------------------------------------------------------------------------


def test_chart_controls_are_read_from_the_url(runs):
    html = page_of(runs, f"/executions/{runs.trains[0]}", smooth="0.6", logy="1", xaxis="wall")
    form = html.split('<form class="toolbar chart-controls"', 1)[1].split("</form>", 1)[0]
    assert re.search(r'name="smooth"[^>]*value="0.6"', form) and 'name="logy" value="1" checked' in form
    assert selected(form, "xaxis") == "wall time"
    clamped = page_of(runs, f"/executions/{runs.trains[0]}", smooth="7").split('name="smooth"', 1)[1]
    assert re.match(r'[^>]*value="0.99"', clamped)
    garbage = page_of(runs, f"/executions/{runs.trains[0]}", smooth="x").split('name="smooth"', 1)[1]
    assert re.match(r'[^>]*value="0"', garbage)


# -- compare -----------------------------------------------------------------------------------------------------


def test_compare_marks_each_cell_that_differs_from_the_reference(runs):
    ids = runs.trains[:3]
    data = runs.api(f"/pipelines/{P}/compare", ids=ids, ref=ids[1])
    assert data["ref"] == ids[1]
    rows = {(r["group"], r["key"]): r for r in data["rows"]}
    assert rows[("param", "optimizer")]["values"] == ["sgd", "adam", "sgd"]
    assert rows[("param", "optimizer")]["differs_from_ref"] == [True, False, True]
    assert rows[("param", "epochs")]["differs_from_ref"] == [True, False, True]
    assert rows[("execution", "stage")]["differs_from_ref"] == [False, False, False]
    assert runs.api(f"/pipelines/{P}/compare", ids=ids)["ref"] == ids[0]  # the first by default
    html = page_of(runs, f"/pipelines/{P}/compare", ids=ids, ref=ids[1])
    table = html.split('<table class="compare">', 1)[1].split("</table>", 1)[0]
    marked = re.findall(r"<tr class=[^>]*>(.*?)</tr>", table, re.S)
    by_key = {text(re.search(r"<th[^>]*>(.*?)</th>", r, re.S).group(1)): r for r in marked}
    assert re.findall(r"<td( class=\"\w+\")?", by_key["param optimizer"]) == [' class="changed"', ' class="ref"',
                                                                              ' class="changed"']
    assert 'class="changed"' not in by_key["execution stage"]
    pins = re.findall(r'<a class="pin-ref" href="([^"]+)"', html)
    assert [parse_qs(urlsplit(unescape(p)).query)["ref"] for p in pins] == [[str(ids[0])], [str(ids[2])]]


@pytest.mark.parametrize("query, message", [
    ({"ref": "12345"}, "ref=12345 is not one of the records compared"),
    ({"ref": "x"}, "ref is the id of one of the records compared"),
    ({"env": "FIRST"}, "is the reference itself"),
    ({"metric": "training.nope"}, "no step metric 'training.nope'"),
])
def test_compare_refuses_what_it_cannot_show_with_a_400_that_says_why(runs, query, message):
    query = {k: str(runs.trains[0]) if v == "FIRST" else v for k, v in query.items()}
    response = requests.get(f"{runs.url}/api/pipelines/{P}/compare", params={"ids": runs.trains[:2], **query},
                            timeout=60)
    assert response.status_code == 400 and message in response.json()["detail"], response.text
    page = runs.get(f"/pipelines/{P}/compare", ids=runs.trains[:2], **query)
    assert page.status_code == 400 and message in unescape(page.text)


def test_compare_overlays_several_step_metrics_each_with_its_wall_times(runs):
    ids = runs.trains[:3]
    data = runs.api(f"/pipelines/{P}/compare", ids=ids, metric=["training.loss", "training.lr"])
    assert data["metric_choices"] == ["training.loss", "training.lr"]  # the time column is an x axis, not a metric
    assert [c["metric"] for c in data["charts"]] == ["training.loss", "training.lr"]
    assert data["metric"] == "training.loss"  # the first, as before several could be chosen
    labels = {e["id"]: e["label"] for e in data["executions"]}
    loss_chart = data["charts"][0]
    assert loss_chart["steps"] == list(range(1, STEPS + 1))
    for i, execution in enumerate(ids):
        assert loss_chart["series"][labels[execution]] == [loss(i, s) for s in range(STEPS)]
        assert loss_chart["times"][labels[execution]] == [T0 + 3600 * i + 10 * s * (i + 1) for s in range(STEPS)]
    html = page_of(runs, f"/pipelines/{P}/compare", ids=ids, metric=["training.loss", "training.lr"])
    assert 'data-chart="overlay"' in html and 'data-chart="overlay-2"' in html and 'id="overlay-2-times"' in html
    assert checked(html, "metric") == ["training.loss", "training.lr"]
    assert 'class="toolbar chart-controls"' in html


def test_python_environments_are_diffed_package_by_package(runs):
    ids = runs.trains[:3]
    env = runs.api(f"/pipelines/{P}/compare", ids=ids)["environment"]
    assert (env["ref"]["id"], env["other"]["id"]) == (ids[0], ids[1])
    assert env["diff"] == {"changed": [{"package": "numpy", "ref": "1.26.4", "other": "2.0.1"}],
                           "added": [{"package": "scipy", "version": "1.13.0"}],
                           "removed": [{"package": "requests", "version": "2.31.0"}],
                           "unchanged": 2}  # pandas, and scikit-learn however spelt
    html = page_of(runs, f"/pipelines/{P}/compare", ids=ids, env=ids[2], ref=ids[1])
    assert 'id="envdiff"' not in html  # runs 1 and 2 share their environment: no table
    assert "The same 4 packages, at the same versions." in html
    table = cells(page_of(runs, f"/pipelines/{P}/compare", ids=ids, ref=ids[2], env=ids[0]), "envdiff")
    assert table[1:] == [["numpy", "2.0.1", "1.26.4"], ["requests", "—", "2.31.0"], ["scipy", "1.13.0", "—"]]


def test_environment_diff_reads_pip_freeze_lines():
    before = "# comment\nA_b==1.0\n-e git+https://x/y.git#egg=y\nc @ file:///c.whl\nd>=2\n\n"
    after = "a-B==1.1  # upgraded\n-e git+https://x/y.git#egg=y\nc @ file:///c2.whl\nD>=2\nnew[extra]==3\n"
    assert environment_diff(before, after) == {
        "changed": [{"package": "a-B", "ref": "1.0", "other": "1.1"},
                    {"package": "c", "ref": "file:///c.whl", "other": "file:///c2.whl"}],
        "added": [{"package": "new", "version": "3"}], "removed": [], "unchanged": 2}


def test_artifacts_are_compared_from_a_checkbox_column_of_the_artifacts_page(runs):
    listing = page_of(runs, f"/pipelines/{P}/artifacts", type="Dataset")
    boxes = re.findall(r'<input type="checkbox" name="artifacts" value="(\d+)" form="compare"', listing)
    assert sorted(map(int, boxes)) == sorted(runs.datasets.values())
    assert f'<form id="compare" method="get" action="/pipelines/{P}/compare">' in listing
    a, b = runs.datasets["a.csv"], runs.datasets["b.csv"]
    data = runs.api(f"/pipelines/{P}/compare", artifacts=f"{a},{b}", ref=b)
    assert data["kind"] == "artifacts" and [x["id"] for x in data["artifacts"]] == [a, b] and data["ref"] == b
    rows = {(r["group"], r["key"]): r for r in data["rows"]}
    assert rows[("custom", "rows")]["values"] == [100, 250]
    assert rows[("custom", "rows")]["differs_from_ref"] == [True, False]
    assert rows[("custom", "source")]["differs_from_ref"] == [False, False]
    assert rows[("artifact", "type")]["values"] == ["Dataset", "Dataset"]
    only = runs.api(f"/pipelines/{P}/compare", artifacts=[str(a), str(b)], diff=1)["rows"]
    assert ("custom", "rows") in {(r["group"], r["key"]) for r in only} and all(r["differs"] for r in only)
    html = page_of(runs, f"/pipelines/{P}/compare", artifacts=f"{a},{b}")
    assert "Compare artifacts" in html and f'href="/artifacts/{b}"' in html
    assert re.search(r'custom</span> rows</th>\s*<td class="ref">100</td>\s*<td class="changed"[^>]*>250</td>', html)
    for params, message in (({"artifacts": str(a)}, "at least two artifacts"),
                            ({"artifacts": f"{a},{b}", "ids": f"{a},{b}"}, "not both"),
                            ({"artifacts": "1,x"}, "artifact ids are numbers")):
        response = requests.get(f"{runs.url}/api/pipelines/{P}/compare", params=params, timeout=60)
        assert response.status_code == 400 and message in response.json()["detail"], response.text
