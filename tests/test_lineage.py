"""The lineage page and its JSON twin against a real ``cmf server`` process: aggregation of a big pipeline
into clusters (and their counts against the real numbers), opening a cluster, ``detail=all``, search,
the trail, hops and direction, the environment toggle, ``+`` never dropping a node, 404s and 400s, and
artifacts other pipelines use too.

The pipelines are pushed as export JSON built here (what ``cmf metadata push`` sends): a run is a few lines.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import uuid
from html.parser import HTMLParser
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from cmf_core.server.client import MetadataClient
from cmf_core.server.lineage import AGGREGATE_ABOVE
from cmf_core.testing.metadata_server import MetadataServer

SWEEP_RUNS = 320  # more than AGGREGATE_ABOVE: the runs of train open in parts
TUNE_RUNS = 120  # fewer: the runs of tune open one by one, their 240 outputs (and train.csv) around them


# -- export JSON --------------------------------------------------------------------------------------------


def artifact(path: str, type_name: str = "Dataset") -> Dict[str, Any]:
    md5 = hashlib.md5(path.encode()).hexdigest()
    return {"name": f"{path}:{md5}", "type": type_name, "uri": md5, "properties": {}, "custom_properties": {}}


def run(inputs: Sequence[Dict], outputs: Sequence[Dict]) -> Dict[str, Any]:
    """An execution reading ``inputs`` and writing ``outputs``."""
    return {"name": "", "custom_properties": {}, "properties": {"Execution_uuid": str(uuid.uuid4())},
            "events": [{"type": 3, "artifact": a} for a in inputs] + [{"type": 4, "artifact": a} for a in outputs]}


def export(pipeline: str, stages: Sequence[Tuple[str, List[Dict[str, Any]]]]) -> Dict[str, Any]:
    """The export of ``pipeline`` with its stages (short name, runs) in order."""
    out = []
    for stage, runs in stages:
        name = f"{pipeline}/{stage}"
        for r in runs:
            r["type"] = stage
            r["properties"].update(Context_Type=name, Execution_type_name=name)
        out.append({"name": name, "properties": {}, "custom_properties": {}, "executions": runs})
    return {"Pipeline": [{"name": pipeline, "properties": {}, "custom_properties": {}, "stages": out}]}


def push(url: str, data: Dict[str, Any]) -> None:
    with MetadataClient(url, retries=0) as client:
        assert client.push(data["Pipeline"][0]["name"], json.dumps(data))["status"] == "success"


ENV = artifact("python_env_0123.txt", "Environment")
RAW, A1, A2, A3 = artifact("data/raw.csv"), artifact("data/a1.csv"), artifact("data/a2.csv"), artifact("data/a3.csv")
SIDE, SCORE = artifact("data/side.csv"), artifact("metrics/score", "Metrics")


def chain() -> Dict[str, Any]:
    """raw -> s1 -> a1 (+ side) -> s2 -> a2 -> s3 -> a3, score; every run also reads the environment."""
    return export("chain", [("s1", [run([RAW, ENV], [A1, SIDE])]), ("s2", [run([A1, ENV], [A2])]),
                            ("s3", [run([A2, ENV], [A3, SCORE])])])


def sweep() -> Dict[str, Any]:
    """prepare (raw -> train.csv); train and tune, each run many times (train.csv -> a model and its metrics);
    evaluate (the last model -> a score)."""
    train = artifact("data/train.csv")

    def runs(stage: str, count: int) -> List[Dict[str, Any]]:
        return [run([train], [artifact(f"models/{stage}{i}.pkl", "Model"), artifact(f"metrics/{stage}{i}", "Metrics")])
                for i in range(count)]

    return export("sweep", [("prepare", [run([artifact("data/sweep-raw.csv")], [train])]),
                            ("train", runs("train", SWEEP_RUNS)), ("tune", runs("tune", TUNE_RUNS)),
                            ("evaluate", [run([artifact(f"models/train{SWEEP_RUNS - 1}.pkl", "Model")],
                                              [artifact("metrics/eval", "Metrics")])])])


def other() -> Dict[str, Any]:
    """Another pipeline that reads chain's a1.csv (the same file: the same artifact)."""
    return export("other", [("use", [run([A1], [artifact("data/other-out.csv")])])])


# -- the server ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    """One ``cmf server`` (SQLite) with the three pipelines; stopped by PID."""
    with MetadataServer(tmp_path_factory.mktemp("lineage-server")) as server:
        for data in (chain(), sweep(), other()):
            push(server.url, data)
        yield server.url


def api(url: str, pipeline: str, **params: Any) -> Dict[str, Any]:
    response = requests.get(f"{url}/api/pipelines/{pipeline}/lineage", params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def page(url: str, pipeline: str, **params: Any) -> requests.Response:
    return requests.get(f"{url}/pipelines/{pipeline}/lineage", params=params, headers={"Accept": "text/html"},
                        timeout=60, allow_redirects=False)


class _Drawing(HTMLParser):
    """What a lineage page draws: each node's key and label, and the links of the page by class."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: Dict[str, str] = {}
        self.links: Dict[str, List[str]] = {}
        self._node: Optional[str] = None
        self._in_text = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "g" and "node" in (a.get("class") or "").split():
            self._node = a["data-key"]
            self.nodes[self._node] = ""
        elif tag == "text" and self._node is not None and not self.nodes[self._node]:
            self._in_text = True
        elif tag == "a":
            for name in (a.get("class") or "node-link").split():
                self.links.setdefault(name, []).append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._in_text = False

    def handle_data(self, data: str) -> None:
        if self._in_text and self._node is not None:
            self.nodes[self._node] += data


def drawing(response: requests.Response) -> _Drawing:
    assert response.status_code == 200, response.text[:500]
    parsed = _Drawing()
    parsed.feed(response.text)
    return parsed


def keys(data: Dict[str, Any]) -> Set[str]:
    return {n["key"] for n in data["nodes"]}


def ids(url: str, pipeline: str, kind: str, **params: Any) -> Dict[str, int]:
    """Path (artifacts) or stage-and-number (executions) -> id, from the list API."""
    items = requests.get(f"{url}/api/pipelines/{pipeline}/{kind}", params={"size": 500, **params},
                         timeout=60).json()["items"]
    if kind == "artifacts":
        return {i["name"].split(":")[0]: i["id"] for i in items}
    return {f"{i['stage']}{n}": i["id"] for n, i in enumerate(sorted(items, key=lambda i: i["id"]))}


def query(href: str) -> Dict[str, List[str]]:
    return parse_qs(urlsplit(href).query)


# -- aggregation --------------------------------------------------------------------------------------------


def test_a_big_pipeline_is_drawn_as_clusters_that_count_what_they_stand_for(url):
    data = api(url, "sweep")
    assert data["aggregated"] and data["nodes_in_view"] > AGGREGATE_ABOVE >= data["total"]
    train = requests.get(f"{url}/api/pipelines/sweep/executions", params={"stage": "train"}, timeout=60).json()
    models = requests.get(f"{url}/api/pipelines/sweep/artifacts", params={"type": "Model"}, timeout=60).json()
    metrics = requests.get(f"{url}/api/pipelines/sweep/artifacts", params={"type": "Metrics"}, timeout=60).json()
    clusters = {n["label"]: n["count"] for n in data["nodes"] if n["kind"] == "cluster"}
    assert clusters == {f"train · {train['total']} runs": SWEEP_RUNS, f"tune · {TUNE_RUNS} runs": TUNE_RUNS,
                        f"Model ×{SWEEP_RUNS} · train": SWEEP_RUNS, f"Metrics ×{SWEEP_RUNS} · train": SWEEP_RUNS,
                        f"Model ×{TUNE_RUNS} · tune": TUNE_RUNS, f"Metrics ×{TUNE_RUNS} · tune": TUNE_RUNS}
    assert models["total"] == SWEEP_RUNS + TUNE_RUNS  # the real numbers, per stage
    assert metrics["total"] == SWEEP_RUNS + TUNE_RUNS + 1  # and evaluate's score
    # prepare, evaluate, raw, train.csv and the evaluate's score are alone in their cluster: drawn as themselves
    singles = {n["label"] for n in data["nodes"] if n["kind"] != "cluster"}
    assert {"sweep-raw.csv", "train.csv", "eval"} <= singles and len(singles) == 5
    by_key = {n["key"]: n for n in data["nodes"]}
    edges = {(by_key[e["source"]]["label"], by_key[e["target"]]["label"]): e.get("count", 1) for e in data["edges"]}
    runs = f"train · {SWEEP_RUNS} runs"
    assert edges[("train.csv", runs)] == SWEEP_RUNS  # every run read train.csv
    assert edges[("train.csv", f"tune · {TUNE_RUNS} runs")] == TUNE_RUNS
    assert edges[(runs, f"Model ×{SWEEP_RUNS} · train")] == SWEEP_RUNS
    assert edges[(f"Model ×{SWEEP_RUNS} · train", [n for n in singles if n.startswith("evaluate")][0])] == 1
    assert data["legend"] == {"execution": True, "types": ["Dataset", "Metrics", "Model"]}

    html = drawing(page(url, "sweep"))
    assert {label for label in html.nodes.values()} == {n["label"] for n in data["nodes"]}
    assert any("detail=all" in href for href in html.links["detail"])  # "draw every node"


def test_a_small_pipeline_is_drawn_node_by_node(url):
    data = api(url, "chain")
    assert not data["aggregated"] and data["total"] == data["nodes_in_view"] == 9
    assert all(n["kind"] != "cluster" for n in data["nodes"])


def test_detail_all_draws_every_node(url):
    data = api(url, "sweep", detail="all")
    assert not data["aggregated"] and data["total"] == data["nodes_in_view"] == 5 + (SWEEP_RUNS + TUNE_RUNS) * 3
    html = drawing(page(url, "sweep", detail="all"))
    assert len(html.nodes) == data["total"]
    assert any("detail=all" not in href for href in html.links["detail"])  # back to "aggregate"


def test_a_cluster_opens_as_its_members_and_their_neighbours(url):
    whole = {n["label"]: n for n in api(url, "sweep")["nodes"]}
    tune = whole[f"tune · {TUNE_RUNS} runs"]
    link = next(h for h in drawing(page(url, "sweep")).links["node-link"] if query(h).get("cluster") == [tune["key"]])
    opened = api(url, "sweep", **query(link))
    members = {n["id"] for n in opened["nodes"] if n["kind"] == "execution" and n["member"]}
    assert members == set(ids(url, "sweep", "executions", stage="tune").values())  # each run drawn as itself
    clusters = {n["label"] for n in opened["nodes"] if n["kind"] == "cluster"}
    assert clusters == {f"Model ×{TUNE_RUNS} · tune", f"Metrics ×{TUNE_RUNS} · tune"}  # what they wrote
    assert {n["label"] for n in opened["nodes"]} - clusters - {n["label"] for n in opened["nodes"] if n.get("member")} \
        == {"train.csv"}  # what they read
    assert opened["trail"] == [{"key": tune["key"], "label": "the executions of tune"}]

    train = whole[f"train · {SWEEP_RUNS} runs"]  # more members than the threshold: in parts
    parts = api(url, "sweep", cluster=train["key"])
    counts = {n["key"]: n["count"] for n in parts["nodes"] if n["kind"] == "cluster" and n["part"]}
    assert sorted(counts.values()) == [SWEEP_RUNS // 2] * 2
    one = api(url, "sweep", cluster=f"{train['key']}@1")
    assert len([n for n in one["nodes"] if n.get("member")]) == SWEEP_RUNS // 2


# -- truth ------------------------------------------------------------------------------------------------


def test_expanding_adds_nodes_and_never_drops_any(url):
    artifacts = ids(url, "chain", "artifacts")
    focus = f"artifact:{artifacts['data/a1.csv']}"  # in the middle of raw -> s1 -> a1 -> s2 -> a2 -> s3 -> a3
    before = api(url, "chain", focus=focus, hops=3)
    s3 = next(n["key"] for n in before["nodes"] if n["label"].startswith("s3"))
    assert next(n for n in before["nodes"] if n["key"] == s3)["more"]
    after = api(url, "chain", focus=focus, hops=3, expand=s3)
    assert keys(before) < keys(after)  # the + of s3 adds a3 and the score
    assert {n["label"] for n in after["nodes"]} - {n["label"] for n in before["nodes"]} == {"a3.csv", "score"}

    html_before = drawing(page(url, "chain", focus=focus, hops=3))
    plus = next(h for h in html_before.links["more"] if s3 in query(h)["expand"])
    html_after = drawing(requests.get(url + plus, headers={"Accept": "text/html"}, timeout=60))
    assert set(html_before.nodes) == keys(before) and set(html_after.nodes) == keys(after)


def test_direction_up_down_and_both(url):
    artifacts = ids(url, "chain", "artifacts")
    focus = f"artifact:{artifacts['data/a2.csv']}"
    labels = {d: {n["label"] for n in api(url, "chain", focus=focus, hops=2, direction=d)["nodes"]}
              for d in ("up", "down", "both")}
    up = {"a2.csv", "a1.csv"} | {n for n in labels["up"] if n.startswith("s2")}
    down = {"a2.csv", "a3.csv", "score"} | {n for n in labels["down"] if n.startswith("s3")}
    assert labels["up"] == up and len(up) == 3  # what made a2: s2, and what s2 read
    assert labels["down"] == down and len(down) == 4  # what read a2: s3, and what s3 wrote
    assert labels["both"] == up | down


def test_environment_and_labels_are_drawn_only_when_asked(url):
    plain, extras = api(url, "chain"), api(url, "chain", extras=1)
    assert "python_env_0123.txt" not in {n["label"] for n in plain["nodes"]}
    assert "Environment" not in plain["legend"]["types"]
    assert {n["label"] for n in extras["nodes"]} - {n["label"] for n in plain["nodes"]} == {"python_env_0123.txt"}
    assert "Environment" in extras["legend"]["types"]
    assert ">Environment</span>" not in page(url, "chain").text
    assert ">Environment</span>" in page(url, "chain", extras=1).text


@pytest.mark.parametrize("focus", ["artifact:999999", "execution:999999"])
def test_a_focus_not_in_the_pipeline_is_404(url, focus):
    kind, number = focus.split(":")
    for response in (requests.get(f"{url}/api/pipelines/chain/lineage", params={"focus": focus}, timeout=60),
                     page(url, "chain", focus=focus)):
        assert response.status_code == 404
        assert f"there is no {kind} {number} in pipeline 'chain'" in html.unescape(response.text)


def test_a_node_of_another_pipeline_is_404(url):
    out = ids(url, "other", "artifacts")["data/other-out.csv"]
    response = requests.get(f"{url}/api/pipelines/chain/lineage", params={"focus": f"artifact:{out}"}, timeout=60)
    assert response.status_code == 404
    assert response.json()["detail"] == f"there is no artifact {out} in pipeline 'chain'"
    missing = requests.get(f"{url}/api/pipelines/chain/lineage", params={"cluster": "runs:999999"}, timeout=60)
    assert missing.status_code == 404 and "cluster runs:999999" in missing.json()["detail"]


@pytest.mark.parametrize("params, allowed", [
    ({"hops": "abc"}, "from 0 to 10"), ({"hops": "11"}, "from 0 to 10"), ({"hops": "-1"}, "from 0 to 10"),
    ({"view": "sideways"}, "both, artifacts, executions"), ({"direction": "left"}, "both, up, down"),
    ({"detail": "some"}, "auto, all"), ({"cluster": "stage:1"}, "runs:STAGE"), ({"trail": "x:1"}, "artifact:ID"),
    ({"focus": "artifact:1", "cluster": "runs:1"}, "not both")])
def test_bad_parameters_are_400_with_what_is_allowed(url, params, allowed):
    response = requests.get(f"{url}/api/pipelines/chain/lineage", params=params, timeout=60)
    assert response.status_code == 400 and allowed in response.json()["detail"], response.text
    assert page(url, "chain", **params).status_code == 400


# -- search and the trail ------------------------------------------------------------------------------------


def test_search_by_file_name_goes_to_the_node(url):
    a2 = ids(url, "chain", "artifacts")["data/a2.csv"]
    found = page(url, "chain", q="a2.csv")
    assert found.status_code == 303
    assert query(found.headers["location"]) == {"focus": [f"artifact:{a2}"], "trail": [f"artifact:{a2}"]}
    twin = api(url, "chain", q="a2.csv")  # the JSON twin answers the view it found
    assert twin["focus"] == f"artifact:{a2}" and twin["search"]["chosen"]["key"] == f"artifact:{a2}"


def test_search_by_md5_prefix_of_six_characters_or_more(url):
    a3 = ids(url, "chain", "artifacts")["data/a3.csv"]
    md5 = A3["uri"]
    assert api(url, "chain", q=md5[:6])["search"]["chosen"]["key"] == f"artifact:{a3}"
    assert api(url, "chain", q=md5[:5])["search"]["matches"] == []  # too short to be a hash


def test_search_with_several_or_no_matches_lists_or_says_so(url):
    several = page(url, "chain", q="data/a")
    assert several.status_code == 200
    matches = drawing(several).links["match"]
    assert len(matches) == 3 and all("focus=artifact" in m for m in matches)  # a1, a2, a3
    assert "3 nodes match" in several.text
    none = page(url, "chain", q="no-such-file")
    assert none.status_code == 200 and "Nothing in pipeline chain matches" in none.text
    assert api(url, "chain", q="no-such-file")["search"] == {"q": "no-such-file", "total": 0, "matches": [],
                                                             "chosen": None}


def test_search_by_stage_opens_its_cluster(url):
    found = page(url, "sweep", q="train")  # the stage; train.csv only contains the word
    assert found.status_code == 303 and query(found.headers["location"])["cluster"][0].startswith("runs:")


def test_the_trail_grows_with_each_focus_and_cuts_back_to_a_crumb(url):
    artifacts = ids(url, "chain", "artifacts")
    a1, a2 = f"artifact:{artifacts['data/a1.csv']}", f"artifact:{artifacts['data/a2.csv']}"
    s2 = next(n["key"] for n in api(url, "chain", focus=a1, hops=1)["nodes"] if n["label"].startswith("s2"))
    first = drawing(page(url, "chain", focus=a1, hops=1))
    to_s2 = next(h for h in first.links["refocus"] if query(h)["focus"] == [s2])
    second = drawing(requests.get(url + to_s2, headers={"Accept": "text/html"}, timeout=60))
    assert query(to_s2)["trail"] == [a1, s2] and query(to_s2)["hops"] == ["1"]
    to_a2 = next(h for h in second.links["refocus"] if query(h)["focus"] == [a2])
    assert query(to_a2)["trail"] == [a1, s2, a2]
    data = api(url, "chain", **query(to_a2))
    assert [c["label"] for c in data["trail"]] == ["a1.csv", data["trail"][1]["label"], "a2.csv"]
    html = page(url, "chain", **query(to_a2)).text
    crumbs = re.findall(r'<nav class="trail".*?</nav>', html, re.S)[0]
    back = re.findall(r'href="([^"]+)" data-key="' + a1, crumbs)[0].replace("&amp;", "&")
    assert query(back)["trail"] == [a1] and query(back)["focus"] == [a1]  # back to the first crumb
    assert 'class="reset" href="/pipelines/chain/lineage"' in crumbs


# -- across pipelines ------------------------------------------------------------------------------------------


def test_an_artifact_other_pipelines_use_links_to_their_lineage(url):
    a1 = ids(url, "chain", "artifacts")["data/a1.csv"]
    data = api(url, "chain")
    also = {n["label"]: n["also_in"] for n in data["nodes"] if n["kind"] == "artifact"}
    assert also["a1.csv"] == ["other"] and all(v == [] for k, v in also.items() if k != "a1.csv")
    badge = drawing(page(url, "chain")).links["also"]
    assert badge == [f"/pipelines/other/lineage?focus=artifact:{a1}"]
    there = api(url, "other", focus=f"artifact:{a1}")
    assert [n["key"] for n in there["nodes"] if n["focus"]] == [f"artifact:{a1}"]
    assert next(n for n in there["nodes"] if n["focus"])["also_in"] == ["chain"]
