"""Probe: HTML in every name, checked in Chromium for execution.

A pipeline whose every user-controlled string is a payload that would run if a page put it in unescaped (stage,
execution type and name, property keys and values, artifact names, uris, types and properties, model fields, the
python environment, a label file, step-metric columns, tensorboard file names, a peer's address) is pushed to a
real ``cmf server`` (token auth, signed in through ``/login``) and merged into a workspace mlmd that a real
``cmf ui`` process shows.  Every page of both is opened in Debian's Chromium, and each must:

* run nothing: no dialog, ``window.pwned`` (which every payload sets) never defined, no element with an ``on*``
  attribute, no script but ours, no ``javascript:``/``data:`` link, no console error (a CSP violation is one);
* show the data: names in tables, headings and titles are the pushed strings, literally.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Set, Tuple
from urllib.parse import quote, urlencode

import pandas as pd
import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from cmf_core.metadata.merge import merge_pipeline
from cmf_core.metadata.store import open_store
from cmf_core.server.federation import Federation
from cmf_core.server.store import ServerStore
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.servers import Server, free_port
from tests.security.conftest import AUTH, TOKEN, export, push_body, unique
from tests.browser import TIMEOUT_MS, assert_clean
from tests.test_ui_browser import wait_for_chart, wait_for_graph

CMF = Path(sys.executable).parent / "cmf"

# -- the payloads: each sets window.pwned (or opens a dialog) if it ever runs -------------------------------

IMG = "<img src=x onerror=pwned=1>"
ALERT = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>pwned=1</script>"
SVG = '"><svg onload=pwned=1>'
SINGLE = "' onmouseover='pwned=1' x='"  # attribute breakouts, single and double quoted
DOUBLE = '" onmouseover="pwned=1" x="'
TITLE = "</title><img src=x onerror=pwned=1>"
TEMPLATE = "{{7*7}}"  # template injection: must show as typed, never 49
JS_URL = "javascript:pwned=1//"
JSON_BREAK = "</script><script>pwned=1</script>"  # out of the JSON a page embeds in <script type=application/json>

#: The server refuses a "/" (and "." components) in pipeline names: this one holds neither.
PIPELINE = unique("'\"><img src=x onerror=pwned=1>{{7*7}}")
PIPE = "/pipelines/" + quote(PIPELINE, safe="")


def _csv(rows: List[List[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _parquet(columns: Dict[str, List[float]]) -> bytes:
    out = io.BytesIO()
    pd.DataFrame(columns).to_parquet(out)
    return out.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the hostile pipeline: files (workspace path -> bytes), artifacts, two executions ----------------------

DATASET, LABELS, ENV, STEPS = f"data/{IMG}.csv", f"labels/{SVG}.csv", f"envs/{IMG}{TEMPLATE}.txt", f"steps/{SVG}"
FILES = {
    DATASET: _csv([["name", "note"], [SCRIPT, TEMPLATE], [SVG, JSON_BREAK]]),
    LABELS: _csv([["id", "label"], ["1", IMG], ["2", ALERT]]),
    ENV: f"numpy==1.26\n{SCRIPT}\n".encode(),
    STEPS: _parquet({JSON_BREAK: [0.9, 0.5, 0.3], IMG: [1.0, 2.0, 3.0]}),
}
REMOTE = {"url": f"{PIPELINE}:{JS_URL}"}  # "<pipeline>:<remote url>": the page shows the url, never as a link


def _artifact(type_: str, name: str, properties: Dict[str, Any], custom: Dict[str, Any]) -> Dict[str, Any]:
    return {"name": name, "type": type_, "uri": name.split(":")[1], "properties": properties,
            "custom_properties": custom}


def _file(type_: str, path: str, custom: Dict[str, Any]) -> Dict[str, Any]:
    """An artifact of one of FILES, named ``path:md5`` as cmf names it."""
    md5 = _md5(FILES[path])
    return _artifact(type_, f"{path}:{md5}", {"Commit": md5, "git_repo": JS_URL, **REMOTE}, custom)


ARTIFACTS = {
    "dataset": _file("Dataset", DATASET, {IMG: SVG, TEMPLATE: JSON_BREAK}),
    "labels": _file("Label", LABELS, {SINGLE: IMG}),
    "env": _file("Environment", ENV, {}),
    "steps": _file("Step_Metrics", STEPS, {JSON_BREAK: SCRIPT}),
    "model": _artifact("Model", f"models/{DOUBLE}.pkl:{'a' * 32}",
                       {"model_framework": IMG, "model_type": TEMPLATE, "model_name": JSON_BREAK, **REMOTE},
                       {SINGLE: DOUBLE}),
    "metrics": _artifact("Metrics", f"metrics_{IMG}:{uuid.uuid4()}", {"metrics_name": SVG},
                         {TITLE: 0.9, "acc": 0.5}),
    "slice": _artifact("Dataslice", f"slices/{ALERT}:{'b' * 32}", REMOTE, {SINGLE: JS_URL}),
    "odd": _artifact(f"Dataset{SINGLE}", f"odd/{TEMPLATE}{DOUBLE}:{'c' * 32}", {}, {DOUBLE: TITLE}),
}
INPUT, OUTPUT = 3, 4


@dataclass(frozen=True)
class Run:
    """One execution of the hostile pipeline, and how pages label it (``type`` after its first "/", then id)."""

    stage: str  # the part after "<pipeline>/"
    type: str
    name: str
    command: str
    params: Dict[str, Any]
    events: List[Tuple[int, str]]  # (INPUT or OUTPUT, key of ARTIFACTS)

    @property
    def short_type(self) -> str:
        return self.type.split("/", 1)[1]

    def exported(self) -> Dict[str, Any]:
        """The execution as the export (the wire's json_payload) holds it."""
        properties = {"Execution_uuid": str(uuid.uuid4()), "Context_Type": f"{PIPELINE}/{self.stage}",
                      "Execution": self.command, "Git_Repo": JS_URL, "Git_Start_Commit": SVG,
                      "Git_End_Commit": JSON_BREAK}
        return {"type": self.type, "name": self.name, "properties": properties, "custom_properties": self.params,
                "events": [{"type": kind, "artifact": ARTIFACTS[key]} for kind, key in self.events]}


RUNS = [
    Run(SCRIPT, f"T/{TITLE}", SINGLE, f"python train.py {IMG} {TEMPLATE}",
        {IMG: SVG, JSON_BREAK: TEMPLATE, DOUBLE: ALERT, "lr": 0.01, "Python_Env": ENV},
        [(INPUT, "dataset"), (INPUT, "labels"), (INPUT, "env"), (OUTPUT, "model"), (OUTPUT, "metrics"),
         (OUTPUT, "steps")]),
    Run(f"{TEMPLATE}{SINGLE}", f"T/{JSON_BREAK}", DOUBLE, f"python eval.py {SVG}",
        {IMG: ALERT, JSON_BREAK: JS_URL, DOUBLE: SCRIPT, "lr": 0.02},
        [(INPUT, "model"), (OUTPUT, "slice"), (OUTPUT, "steps"), (OUTPUT, "odd")]),
]
EXPORT = {"Pipeline": [{"name": PIPELINE, "custom_properties": {IMG: SVG, TITLE: TEMPLATE}, "stages": [
    {"name": f"{PIPELINE}/{run.stage}", "custom_properties": {SINGLE: JSON_BREAK}, "executions": [run.exported()]}
    for run in RUNS]}]}
TENSORBOARD = {f"run-{IMG}/events-{TEMPLATE}": b"tb-1", f"{SINGLE}.txt": b"tb-2"}
#: A peer whose address is a payload (nothing listens there: its run fails, and the error names it).
HOSTILE_PEER = f"http://127.0.0.1:{free_port()}/{IMG}{SINGLE}{TEMPLATE}"


def label_of(key: str) -> str:
    """How pages label an artifact: the file name of its path."""
    return posixpath.basename(ARTIFACTS[key]["name"].split(":")[0])


def shown(value: Any) -> str:
    """A property value as the pages print it."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# -- the two sites: cmf server (signed in) and cmf ui ---------------------------------------------------------


@dataclass
class Site:
    """Where the hostile pipeline is shown, and the ids its records got there."""

    kind: str  # "server" or "ui"
    url: str
    executions: List[int]  # ids of RUNS, in order
    uuids: List[str]  # their uuids (exported() makes new ones each time: read back from the site)
    artifacts: Dict[str, int]  # key of ARTIFACTS -> id
    note: str  # what the header says of the site ("" for the server)

    def label(self, run: int) -> str:
        """How every page names a run: its type (after the first "/") and the start of its uuid."""
        return f"{RUNS[run].short_type} {self.uuids[run][:8]}"

    def by_id(self, keys: Iterable[str]) -> List[str]:
        """Keys of ARTIFACTS in the order of their ids here (the order pages list them in)."""
        return sorted(keys, key=self.artifacts.__getitem__)


def _site(kind: str, url: str, note: str = "") -> Site:
    """The ids of the hostile records at ``url``, read from its JSON API."""
    def get(path: str) -> Dict[str, Any]:
        answer = requests.get(url + path, headers=AUTH, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    by_type = {e["type"]: e for e in get(f"/api{PIPE}/executions")["items"]}
    by_name = {a["name"]: a["id"] for a in get(f"/api{PIPE}/artifacts?size=100")["items"]}
    return Site(kind, url, [by_type[run.type]["id"] for run in RUNS], [by_type[run.type]["uuid"] for run in RUNS],
                {key: by_name[a["name"]] for key, a in ARTIFACTS.items()}, note)


@pytest.fixture(scope="module")
def server_site(sqlite_server) -> Site:
    """The hostile pipeline pushed to the probe server, with its python environment, label file, step metrics
    and tensorboard files uploaded."""
    def post(path: str, **kwargs: Any) -> None:
        answer = requests.post(sqlite_server.url + path, headers=AUTH, timeout=60, **kwargs)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"

    post("/mlmd_push", json=push_body(EXPORT))
    post("/python-env", files={"file": (posixpath.basename(ENV), FILES[ENV])})
    post("/label", files={"file": (_md5(FILES[LABELS]), FILES[LABELS])})
    post("/step-metrics", files={"file": (_md5(FILES[STEPS]), FILES[STEPS])})
    for name, data in TENSORBOARD.items():
        post("/tensorboard", params={"pipeline_name": PIPELINE}, files={"file": (name, data)})
    return _site("server", sqlite_server.url)


@pytest.fixture(scope="module")
def ui_site(tmp_path_factory) -> Iterator[Site]:
    """``cmf ui`` over a workspace (its folder named by a payload: the page header shows the mlmd's path) whose
    mlmd holds the hostile pipeline, merged from the same export, and whose files are the logged versions (so
    they are previewed); stopped by PID."""
    root = tmp_path_factory.mktemp("html-ui") / f"ws{IMG}"
    for path, data in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    merge_pipeline(open_store(root / "mlmd"), EXPORT)
    port = free_port()
    with Server([str(CMF), "ui", "--mlmd", str(root / "mlmd"), "--port", str(port)], port, root / "ui.log"):
        yield _site("ui", f"http://127.0.0.1:{port}", note=f"read-only view of {root / 'mlmd'}")


@pytest.fixture(params=["server", "ui"])
def site(request) -> Site:
    return request.getfixturevalue(f"{request.param}_site")


@pytest.fixture(scope="module")
def peer_server(tmp_path_factory, sqlite_server, server_site) -> Iterator[MetadataServer]:
    """A server of its own (the probe servers' peers stay untouched) with two peers: the probe server, and
    HOSTILE_PEER; both synced once, so its peers page lists a run that merged the hostile pipeline and one
    that failed on the hostile address."""
    with MetadataServer(tmp_path_factory.mktemp("html-peers"), tokens=[TOKEN]) as server:
        store = ServerStore(sqlite=server.store_file)  # as 'cmf server peers add --store' does
        try:
            federation = Federation(store)
            federation.add_peer(sqlite_server.url, TOKEN)
            federation.add_peer(HOSTILE_PEER)
        finally:
            store.close()
        runs = requests.post(server.url + "/api/sync", json={"peer": None}, headers=AUTH, timeout=120).json()["runs"]
        assert sorted(r["status"] for r in runs) == ["failed", "ok"], runs
        yield server


# -- the browser: one signed-in context for the module, a page per test watching for anything that runs -----


@pytest.fixture(scope="module")
def context(browser: Browser, sqlite_server):
    """Signed in to the probe servers through the login form.  The session cookie is per host, not port, so
    it also opens the peer server (same token); ``cmf ui`` has no sign-in."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    tab = ctx.new_page()
    tab.goto(sqlite_server.url + "/login")
    tab.locator("#token").fill(TOKEN)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(sqlite_server.url + "/")
    tab.close()
    try:
        yield ctx
    finally:
        ctx.close()


def watched(tab: Page) -> Page:
    """``tab`` with ``tab.errors`` collecting its console and page errors (as tests/test_ui_browser.py's pages,
    for its assert_clean) and ``tab.dialogs`` every dialog it opened (dismissed).

    The browser's own request for /favicon.ico, which it makes for a JSON answer (the pages name theirs), is
    not the page's: its 404 is left out."""
    def console(message: Any) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            tab.errors.append(f"{tab.url}: {message.text}")

    tab.errors, tab.dialogs = [], []  # type: ignore[attr-defined]
    tab.on("console", console)
    tab.on("pageerror", lambda e: tab.errors.append(f"{tab.url}: uncaught {e}"))
    tab.on("dialog", lambda d: (tab.dialogs.append(f"{tab.url}: {d.type} {d.message}"), d.dismiss()))
    return tab


@pytest.fixture
def page(context) -> Iterator[Page]:
    """A watched page of the signed-in context."""
    tab = watched(context.new_page())
    try:
        yield tab
    finally:
        tab.close()


#: What a page may hold: no element with an event-handler attribute, no script but ours (files under /static/
#: and JSON data), no link to a javascript:/data: address, no frame, object or meta refresh.
FOREIGN_ELEMENTS = """() => {
  const bad = [], scheme = /^\\s*(javascript|data|vbscript):/i;
  for (const el of document.querySelectorAll("*")) {
    const tag = el.tagName.toLowerCase(), where = el.outerHTML.slice(0, 120);
    for (const attr of el.attributes) {
      if (attr.name.startsWith("on")) bad.push("event handler: " + where);
      if (["href", "src", "action", "formaction", "xlink:href"].includes(attr.name) && scheme.test(attr.value))
        bad.push("dangerous address: " + where);
    }
    if (tag === "script" && !(el.getAttribute("src") || "").startsWith("/static/") && el.type !== "application/json")
      bad.push("foreign script: " + where);
    if (["iframe", "frame", "object", "embed", "base"].includes(tag) || (tag === "meta" && el.httpEquiv))
      bad.push("foreign element: " + where);
  }
  return bad;
}"""


def assert_harmless(page: Page, *statuses: int) -> None:
    """Nothing of the payloads ran or became markup on the page (``statuses``: the document's expected error
    status, which the browser logs)."""
    assert not page.dialogs, page.dialogs  # type: ignore[attr-defined]
    assert page.evaluate("typeof window.pwned") == "undefined", f"a payload ran on {page.url}"
    assert page.evaluate(FOREIGN_ELEMENTS) == [], page.url
    assert_clean(page, *statuses)


def visit(page: Page, url: str, status: int = 200) -> Any:
    """Open ``url``, expect ``status``, check that nothing ran; the response."""
    page.errors.clear()  # type: ignore[attr-defined] - the previous page's were checked
    response = page.goto(url)
    assert response.status == status, f"{url}: HTTP {response.status}"
    assert_harmless(page, *([status] if status != 200 else []))
    return response


def texts(page: Page, selector: str) -> List[str]:
    return [t.strip() for t in page.locator(selector).all_text_contents()]


def props_tables(page: Page) -> Dict[str, Dict[str, str]]:
    """Every property table of the page: caption -> {key: value as shown}."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("table.props")].map(t =>
        [t.caption.textContent, Object.fromEntries([...t.rows].map(r => [r.cells[0].textContent,
                                                                          r.cells[1].textContent]))]))""")


def embedded_json(page: Page, element_id: str) -> Any:
    return json.loads(page.locator(f"script#{element_id}").text_content())


# -- the walks ------------------------------------------------------------------------------------------------


def test_pipeline_lists_show_every_hostile_name_as_text(page, site):
    visit(page, site.url + "/")
    assert PIPELINE in texts(page, "a.pipeline")
    assert texts(page, "header .note") == ([site.note] if site.note else [])

    visit(page, site.url + PIPE + "/executions")
    assert page.title() == f"Executions · {PIPELINE} · cmf"
    assert texts(page, "nav.crumbs a")[-1] == PIPELINE
    assert texts(page, "a.execution") == [site.label(i) for i in range(len(RUNS))]
    assert texts(page, "table.list tbody td:nth-child(3)") == [run.stage for run in RUNS]
    assert texts(page, "nav.stages li:not(:first-child) a") == [f"{run.stage} 1" for run in RUNS]
    headers = texts(page, "table.list thead th a")
    for key in (IMG, JSON_BREAK, DOUBLE, TITLE):  # parameters, then the Metrics artifact's values
        assert key in headers, headers
    cells = texts(page, "table.list tbody td.num")
    for run in RUNS:
        assert {shown(v) for k, v in run.params.items() if k != "Python_Env"} <= set(cells), cells

    visit(page, site.url + PIPE + "/artifacts")
    links = page.locator("table.list a.artifact")
    names = site.by_id(ARTIFACTS)
    assert links.all_text_contents() == [label_of(k) for k in names]
    assert [links.nth(i).get_attribute("title") for i in range(links.count())] == [ARTIFACTS[k]["name"] for k in names]
    assert texts(page, "table.list div.sub") == [ARTIFACTS[k]["name"] for k in names]
    assert texts(page, "table.list tbody code") == [ARTIFACTS[k]["uri"] for k in names]
    assert texts(page, "table.list tbody td:nth-child(3) a") == [ARTIFACTS[k]["type"] for k in names]


def test_searches_filters_and_sorts_echo_hostile_text_as_text(page, site):
    executions = site.url + PIPE + "/executions?"
    visit(page, executions + urlencode({"stage": RUNS[1].stage}))
    assert texts(page, "h1") == [f"Executions of stage {RUNS[1].stage}"]
    assert texts(page, "a.execution") == [site.label(1)]

    visit(page, executions + urlencode({"q": RUNS[0].command}))
    expect(page.locator("form.toolbar input[name=q]")).to_have_value(RUNS[0].command)
    assert texts(page, "a.execution") == [site.label(0)]

    matching = f"`{IMG}` = '{ALERT}'"  # a parameter named by a payload, compared with another
    visit(page, executions + urlencode({"filter": matching, "sort": f"param.{JSON_BREAK}", "order": "desc"}))
    expect(page.locator("form.toolbar input[name=filter]")).to_have_value(matching)
    assert texts(page, "a.execution") == [site.label(1)]
    assert texts(page, "th[aria-sort=descending] a") == [f"{JSON_BREAK} ▼"]

    malformed = f"lr > {IMG}"
    visit(page, executions + urlencode({"filter": malformed}), 400)
    expect(page.locator("form.toolbar input[name=filter]")).to_have_value(malformed)
    expect(page.locator("p.error[role=alert]")).to_be_visible()

    visit(page, site.url + PIPE + "/artifacts?" + urlencode({"type": ARTIFACTS["odd"]["type"]}))
    assert texts(page, "h1") == [f"Artifacts of type {ARTIFACTS['odd']['type']}"]
    expect(page.locator("form.toolbar input[name=type]")).to_have_value(ARTIFACTS["odd"]["type"])
    assert texts(page, "table.list a.artifact") == [label_of("odd")]


def test_execution_pages_show_the_logged_strings(page, site):
    for index, run in enumerate(RUNS):
        visit(page, f"{site.url}/executions/{site.executions[index]}")
        assert page.title() == f"{site.label(index)} · cmf"
        assert texts(page, "h1") == [site.label(index)]
        assert texts(page, "p.links a")[0] == run.stage
        assert texts(page, "dl.facts dd")[:4] == [run.command, SVG, JSON_BREAK, JS_URL]
        tables = props_tables(page)
        assert tables["Parameters"] == {k: shown(v) for k, v in run.params.items() if k != "Python_Env"}
        assert texts(page, "ul.nodes a.artifact") == [label_of(key) for kind in (INPUT, OUTPUT)
                                                      for key in site.by_id(k for d, k in run.events if d == kind)]
        box = page.locator("div.chart-box").first  # the step metrics, drawn from the JSON in the page
        wait_for_chart(page)
        assert texts(page, "figure.chart figcaption") == [label_of("steps")]
        assert set(embedded_json(page, box.get_attribute("data-chart"))["series"]) == {JSON_BREAK, IMG}
        assert_harmless(page)

    visit(page, f"{site.url}/executions/{site.executions[0]}")
    assert props_tables(page)[f"Metrics: {label_of('metrics')}"] == {TITLE: "0.9", "acc": "0.5"}
    assert texts(page, "details summary") == [ENV]
    assert page.locator("pre.file").text_content() == FILES[ENV].decode()


def test_artifact_pages_and_model_card_show_the_logged_strings(page, site):
    for key, artifact in ARTIFACTS.items():
        visit(page, f"{site.url}/artifacts/{site.artifacts[key]}")
        assert page.title() == f"{label_of(key)} · cmf"
        assert texts(page, "h1 span.type") == [artifact["type"]]
        facts = texts(page, "dl.facts code")
        assert facts[0] == artifact["name"] and artifact["uri"] in facts
        if "url" in artifact["properties"]:
            assert JS_URL in facts and texts(page, "dl.facts dd div span") == [f"({PIPELINE})"]
        tables = props_tables(page)
        assert tables.get("Custom properties", {}) == {k: shown(v) for k, v in artifact["custom_properties"].items()}
        assert tables.get("Properties", {}) == {k: shown(v) for k, v in artifact["properties"].items()}
        users = [site.label(i) for i, run in enumerate(RUNS) if key in (k for _, k in run.events)]
        assert texts(page, "div.columns > section a.execution") == users  # produced by, used by

    visit(page, f"{site.url}/artifacts/{site.artifacts['model']}")
    card = page.locator("section.card")
    assert card.locator("h3 + ul a.artifact").all_text_contents() == [
        label_of(k) for k in [*site.by_id(["dataset", "labels", "env"]), *site.by_id(["metrics", "steps"])]]
    assert card.locator("a.execution").all_text_contents() == [site.label(0)]  # made by; used by is the page's
    assert texts(page, "section.card h3 a.execution") == [site.label(0)]


def csv_cells(data: bytes) -> Set[str]:
    return {cell for row in csv.reader(io.StringIO(data.decode())) for cell in row}


def test_file_previews_show_hostile_contents_as_text(page, site):
    tables = {"labels": LABELS, "dataset": DATASET} if site.kind == "ui" else {"labels": LABELS}  # the server
    for key, path in tables.items():  # holds no datasets, only what cmf uploads beside the metadata
        visit(page, f"{site.url}/artifacts/{site.artifacts[key]}")
        assert csv_cells(FILES[path]) <= set(texts(page, "table.data th, table.data td"))
    visit(page, f"{site.url}/artifacts/{site.artifacts['env']}")
    assert page.locator("pre.file").text_content() == FILES[ENV].decode()


NODE_TITLES = "svg.lineage g.node > a:not(.more, .refocus) > title"


def test_lineage_pages_name_every_node_by_its_logged_name(page, site, tmp_path):
    expected = {f"{run.type}: {site.label(i)}" for i, run in enumerate(RUNS)} | {
        f"{a['type']}: {a['name']}" for k, a in ARTIFACTS.items() if a["type"] not in ("Environment", "Label")}
    lineage = site.url + PIPE + "/lineage"
    visit(page, lineage)
    wait_for_graph(page)
    assert set(texts(page, NODE_TITLES)) == expected
    assert page.title() == f"Lineage · {PIPELINE} · cmf"

    focus = f"execution:{site.executions[1]}"
    visit(page, lineage + "?" + urlencode({"focus": focus, "hops": 1, "expand": f"artifact:{site.artifacts['model']}"}))
    wait_for_graph(page)
    assert texts(page, "svg.lineage g.node.focus > a:not(.more, .refocus) > title") == [
        f"{RUNS[1].type}: {site.label(1)}"]
    assert_harmless(page)

    drawing = requests.get(lineage + ".svg", headers=AUTH, timeout=30)  # the export: a file, opened from disk,
    assert drawing.status_code == 200 and "attachment" in drawing.headers["content-disposition"]  # no CSP there
    (tmp_path / "lineage.svg").write_bytes(drawing.content)
    visit(page, (tmp_path / "lineage.svg").as_uri())
    assert set(texts(page, NODE_TITLES)) == expected


def test_compare_page_and_its_chart_data_keep_hostile_names(page, site):
    compare = site.url + PIPE + "/compare?"
    ids = [("ids", i) for i in site.executions]
    visit(page, compare + urlencode(ids))
    assert texts(page, "table.compare thead a.execution") == [site.label(0), site.label(1)]
    rows = {r.locator("th").text_content(): r.locator("td").all_text_contents()
            for r in page.locator("table.compare tbody tr").all()}
    for key in (IMG, JSON_BREAK, DOUBLE):
        assert rows[f"param {key}"] == [shown(run.params[key]) for run in RUNS]
    wait_for_chart(page, "div.chart-box[data-chart=overlay]")
    assert set(embedded_json(page, "overlay")["series"]) == {site.label(0), site.label(1)}

    metric = f"{label_of('steps')}.{JSON_BREAK}"
    visit(page, compare + urlencode([*ids, ("diff", 1), ("metric", metric)]))
    expect(page.locator("input[name=metric]:checked")).to_have_value(metric)

    visit(page, compare + urlencode({"ids": IMG}), 400)
    expect(page.locator("p.error[role=alert]")).to_contain_text(IMG)


def test_error_pages_echo_hostile_addresses_as_text(page, site):
    visit(page, site.url + PIPE + "-missing/executions", 404)
    expect(page.locator("p.error")).to_contain_text("-missing")
    visit(page, site.url + "/no/such/" + quote(IMG + TEMPLATE), 404)
    visit(page, site.url + "/executions/" + quote(SVG), 404)
    visit(page, site.url + PIPE + "/lineage?" + urlencode({"focus": IMG}), 400)
    expect(page.locator("p.error")).to_contain_text(IMG)
    visit(page, site.url + PIPE + "/tensorboard/" + quote(SCRIPT), 404)


def test_json_twins_opened_in_the_browser_run_nothing(page, site):
    answers = {}
    for path in ["/api/pipelines?size=500", f"/api{PIPE}", f"/api{PIPE}/executions", f"/api{PIPE}/artifacts",
                 f"/api{PIPE}/lineage", f"/api{PIPE}/compare?ids={site.executions[0]}&ids={site.executions[1]}",
                 f"/api/executions/{site.executions[0]}", f"/api/artifacts/{site.artifacts['model']}/model_card",
                 f"/api/artifacts/{site.artifacts['dataset']}", f"/api{PIPE}/tensorboard"]:
        response = visit(page, site.url + path)
        assert response.headers["content-type"] == "application/json"
        answers[path] = response.json()
    assert PIPELINE in [p["name"] for p in answers["/api/pipelines?size=500"]["items"]]
    assert [e["type"] for e in answers[f"/api{PIPE}/executions"]["items"]] == [run.type for run in RUNS]
    assert answers[f"/api/executions/{site.executions[0]}"]["params"] == RUNS[0].params
    card = answers[f"/api/artifacts/{site.artifacts['model']}/model_card"]["model"]
    assert {k: card["properties"][k] for k in ("model_framework", "model_type", "model_name")} == {
        "model_framework": IMG, "model_type": TEMPLATE, "model_name": JSON_BREAK}


def test_tensorboard_list_names_the_uploaded_files(page, server_site):
    visit(page, server_site.url + PIPE + "/tensorboard")
    links = page.locator("table.list a[download]")
    assert sorted(links.all_text_contents()) == sorted(TENSORBOARD)
    for i in range(links.count()):  # each link downloads the file it names
        answer = page.request.get(server_site.url + links.nth(i).get_attribute("href"))
        assert answer.body() == TENSORBOARD[links.nth(i).text_content()]


def test_peers_page_shows_hostile_addresses_and_pipeline_names_as_text(page, peer_server):
    visit(page, peer_server.url + "/peers")
    assert HOSTILE_PEER in page.locator("table.list").first.locator("tbody td:first-child").all_text_contents()
    runs = page.locator("table.list").last.locator("tbody tr")
    failed = runs.filter(has=page.locator("td:nth-child(2)", has_text=HOSTILE_PEER))
    expect(failed.locator("div.error")).to_contain_text(f"peer {HOSTILE_PEER} is unreachable")
    merged = runs.filter(has_not=page.locator("div.error"))
    assert PIPELINE in merged.locator("td:nth-child(5)").text_content().split(", ")
    twin = visit(page, peer_server.url + "/api/peers").json()
    assert HOSTILE_PEER in [p["url"] for p in twin["peers"]]


def test_login_form_keeps_a_hostile_next_address_as_text(browser, sqlite_server, server_site):
    ctx = browser.new_context()  # not signed in
    tab = watched(ctx.new_page())
    try:
        target = f"{PIPE}/executions?q={SVG}"  # its quotes and brackets as they are, in an attribute
        visit(tab, sqlite_server.url + "/login?" + urlencode({"next": target}))
        expect(tab.locator("input[name=next]")).to_have_value(target)
        visit(tab, sqlite_server.url + "/login?" + urlencode({"next": JS_URL}))
        expect(tab.locator("input[name=next]")).to_have_value("/")  # only addresses of this server

        visit(tab, sqlite_server.url + "/login?" + urlencode({"next": target}))
        tab.locator("#token").fill(SVG)  # wrong: the form comes back with the same address
        with tab.expect_navigation() as answer:
            tab.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        assert_harmless(tab, 401)
        expect(tab.locator("input[name=next]")).to_have_value(target)
        tab.locator("#token").fill(TOKEN)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url("**/executions?**")
        assert_harmless(tab, 401)
        expect(tab.locator("form.toolbar input[name=q]")).to_have_value(SVG)
    finally:
        ctx.close()


# -- display bugs the probe found (reported): what a user clicks leads elsewhere -----------------------------


def test_the_stage_link_of_a_stage_named_with_a_slash_lists_its_execution(page, server_site):
    visit(page, server_site.url + PIPE + "/executions")
    page.locator("nav.stages li:nth-child(2) a").click()  # the first run's stage: SCRIPT has a "/"
    page.wait_for_url("**stage=**")
    assert texts(page, "a.execution") == [server_site.label(0)]


def test_links_on_the_page_of_a_pipeline_named_with_url_characters_stay_on_it(page, sqlite_server):
    name = unique("odd#name?%41")
    pushed = requests.post(sqlite_server.url + "/mlmd_push", json=push_body(export(name)), headers=AUTH, timeout=60)
    if pushed.status_code == 400:
        pytest.skip(f"the server refuses such names: {pushed.text}")
    visit(page, f"{sqlite_server.url}/pipelines/{quote(name, safe='')}/executions")
    page.locator("table.list thead a", has_text="Stage").click()  # sort by stage: the same pipeline's page
    page.wait_for_url("**sort=stage**")
    assert texts(page, "h1") == ["Executions"]
    assert texts(page, "nav.crumbs a")[-1] == name
    assert texts(page, "nav.tabs a.active") == ["Executions"]
