"""The web UI in a real browser (Debian's Chromium driven by Playwright), walked by clicking as a person would:
``cmf server`` with the README demo pipeline pushed and a pipeline full of an XSS payload, a token-protected
server (login form, HttpOnly session cookie), and ``cmf ui`` over the workspace itself.

Every page's console errors and page errors are collected: a Content-Security-Policy violation shows up there,
so the main pages must have none.  ``CMF_UI_SCREENSHOTS=DIR`` also writes the README's screenshots to DIR.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterator, List
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.browser import assert_clean, need_chromium, new_page, opened, shoot

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402 (after the skip)

from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
CMF = Path(sys.executable).parent / "cmf"
XSS = "<img src=x onerror=window.__xss=1>"
TOKEN = "browser-test-token"

# the pipeline whose every name and value it can carry is the payload: a stage name, an execution type,
# an artifact's file name, custom properties of the pipeline, the execution and the artifacts
XSS_PIPELINE = f'''
from pathlib import Path
from cmflib.cmf import Cmf
X = {XSS!r}
Path("data").mkdir(exist_ok=True)
Path(f"data/{{X}}.csv").write_text("a,b\\n1,2\\n")
Path("out.txt").write_text("x\\n")
cmf = Cmf(filepath="mlmd", pipeline_name="xss", custom_properties={{"note": X}})
cmf.create_context(f"stage{{X}}")
cmf.create_execution(f"Exec{{X}}", {{"payload": X}})
cmf.log_dataset(f"data/{{X}}.csv", "input", {{"payload": X}})
cmf.log_dataset("out.txt", "output", {{"payload": X}})
cmf.log_execution_metrics("m", {{"acc": 0.5}})
cmf.finalize()
'''


# -- servers, workspace, browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Dict[str, str]:
    """The environment of the module's processes: a private HOME, a git identity, no tokens, no analytics."""
    home = tmp_path_factory.mktemp("ui-home")
    drop = {"CMF_SERVER_TOKEN", "CMF_SERVER_TOKENS", "CONFIG_FILE", "CMF_STRICT_PLUGINS"}
    out = {k: v for k, v in os.environ.items() if k not in drop}
    out.update(HOME=str(home), DVC_NO_ANALYTICS="1", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x", CMF_SERVER_RETRIES="1")
    return out


def run(argv: List[str], cwd: Path, env: Dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MetadataServer]:
    """``cmf server`` (SQLite), stopped by PID."""
    with MetadataServer(tmp_path_factory.mktemp("ui-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, server, env) -> Path:
    """A workspace with the README demo pipeline (pushed to ``server``) and the XSS pipeline logged.

    The git remote is a URL never contacted (nothing here pushes git): the screenshots show it, not a tmp path."""
    root = tmp_path_factory.mktemp("ui-ws") / "project"
    root.mkdir()
    run([str(CMF), "init", "local", "--path", str(root.parent / "store"), "--git-remote-url",
         "https://github.com/example/cmf-demo.git", "--cmf-server-url", server.url], root, env)
    shutil.copy(ROOT / "examples" / "demo_pipeline.py", root)  # run as a user would: its command is the file name
    run([sys.executable, "demo_pipeline.py"], root, env)
    run([sys.executable, "-c", XSS_PIPELINE], root, env)
    run([str(CMF), "metadata", "push", "-p", "demo"], root, env)
    return root


@pytest.fixture(scope="module")
def xss_pushed(workspace, env) -> str:
    """The XSS pipeline pushed too; pushed only for the tests that want it (after the README screenshots of
    the pipelines table, which then shows the demo alone, as the tests run in file order)."""
    run([str(CMF), "metadata", "push", "-p", "xss"], workspace, env)
    return "xss"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory) -> Iterator[MetadataServer]:
    """A server that needs a token; nothing pushed to it."""
    with MetadataServer(tmp_path_factory.mktemp("ui-token-server"), tokens=[TOKEN]) as srv:
        yield srv


@pytest.fixture(scope="module")
def ui_url(workspace, env) -> Iterator[str]:
    """``cmf ui`` over the workspace's mlmd file (nothing pushed from there): its URL; stopped by PID."""
    port = free_port()
    with open(workspace.parent / "cmf-ui.log", "ab") as log:
        proc = subprocess.Popen([str(CMF), "ui", "--mlmd", str(workspace / "mlmd"), "--port", str(port)],
                                cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture
def page(browser) -> Iterator[Page]:
    """A fresh page (1280x800, downloads on); ``page.errors`` collects its console errors and page errors."""
    yield from new_page(browser, accept_downloads=True)


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def query_of(page: Page) -> Dict[str, List[str]]:
    return parse_qs(urlsplit(page.url).query)


def open_execution(page: Page, label: str) -> str:
    """Click the execution link whose text starts with ``label`` (the executions page); its id."""
    link = page.locator("a.execution", has_text=re.compile("^" + re.escape(label))).first
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url(f"**{href}")
    return href.rsplit("/", 1)[1]


def wait_for_chart(page: Page, selector: str = "div.chart-box[data-chart]") -> None:
    """The first chart of the page drawn by uPlot: at least one line, on a canvas."""
    box = page.locator(selector).first
    expect(box).to_have_attribute("data-drawn", re.compile(r"^[1-9]\d*$"))
    expect(box.locator("canvas").first).to_be_attached()


def wait_for_graph(page: Page) -> None:
    expect(page.locator("#graph svg.lineage")).to_have_attribute("data-ready", "1")


# -- the walks ---------------------------------------------------------------------------------------------


def test_walk_pipelines_execution_model_lineage_back_and_forward(page, server, workspace, shots):
    page.goto(server.url + "/")
    expect(page.locator("h1")).to_have_text("Pipelines")
    shoot(page, shots, "pipelines")
    page.locator("a.pipeline", has_text="demo").click()
    page.wait_for_url("**/pipelines/demo/executions")
    expect(page.locator("a.execution")).to_have_count(2)
    shoot(page, shots, "executions")

    open_execution(page, "Train")
    wait_for_chart(page)
    model = page.locator("section", has=page.locator("h2", has_text="Outputs")).locator("a.artifact.t-Model")
    expect(model).to_have_text("model.pkl")
    model.click()
    page.wait_for_url(re.compile(r"/artifacts/\d+$"))
    artifact_url, artifact_id = page.url, path_of(page).rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text("model.pkl")
    card = page.locator("section.card")
    expect(card.locator("h2")).to_have_text("Model card")
    expect(card.locator("a[download]")).to_have_attribute("href", f"/api/artifacts/{artifact_id}/model_card?download=1")
    # the page's "Produced by" / "Used by" and the card's "Made by" say the same as the data, and never contradict
    truth = page.request.get(f"{server.url}/api/artifacts/{artifact_id}").json()

    def hrefs(where) -> List[str]:
        return [link.get_attribute("href") for link in where.locator("a.execution").all()]

    def section(title: str):
        return page.locator("section", has=page.locator("h2", has_text=title))

    assert hrefs(section("Produced by")) == [f"/executions/{e['id']}" for e in truth["producers"]] != []
    assert hrefs(section("Used by")) == [f"/executions/{e['id']}" for e in truth["consumers"]]
    assert hrefs(card.locator("h3", has_text="Made by")) == hrefs(section("Produced by"))
    expect(card).not_to_contain_text("used it")

    page.get_by_role("link", name="lineage around it").click()
    page.wait_for_url(re.compile(r"/pipelines/demo/lineage\?"))
    assert query_of(page)["focus"] == [f"artifact:{artifact_id}"]
    wait_for_graph(page)
    focused = page.locator("svg.lineage g.node.focus")
    expect(focused).to_have_count(1)
    expect(focused).to_have_attribute("data-key", f"artifact:{artifact_id}")
    lineage_url = page.url

    page.go_back()
    page.wait_for_url(artifact_url)
    expect(page.locator("h1")).to_contain_text("model.pkl")
    page.go_forward()
    page.wait_for_url(lineage_url)
    wait_for_graph(page)
    expect(page.locator("svg.lineage g.node.focus")).to_have_attribute("data-key", f"artifact:{artifact_id}")
    more = page.locator("svg.lineage a.more")  # "+" shows one hop more around a node: its key joins expand=
    assert more.count() >= 1
    key = more.first.locator("xpath=..").get_attribute("data-key")
    more.first.click()
    page.wait_for_url(re.compile(r"expand="))
    assert query_of(page)["expand"] == [key]
    wait_for_graph(page)
    assert_clean(page)


def test_train_execution_draws_its_step_metric_chart(page, server, workspace, shots):
    page.goto(server.url + "/pipelines/demo/executions")
    open_execution(page, "Train")
    expect(page.locator("h1")).to_contain_text("Train")
    box = page.locator("div.chart-box[data-chart]").first
    wait_for_chart(page)
    assert int(box.get_attribute("data-drawn")) >= 1
    expect(page.locator("figure.chart figcaption").first).to_have_text("training_loss")
    shoot(page, shots, "execution", full_page=True)
    assert_clean(page)


def test_compare_two_executions_differences_only(page, server, workspace, shots):
    page.goto(server.url + "/pipelines/demo/executions")
    boxes = page.locator("input[name=ids]")
    expect(boxes).to_have_count(2)
    ids = [boxes.nth(i).get_attribute("value") for i in range(2)]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_label("differences only").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/pipelines/demo/compare?**")
    query = query_of(page)
    assert sorted(query["ids"]) == sorted(ids) and query["diff"] == ["1"]

    table = page.locator("table.compare")
    expect(table.locator("thead a.execution")).to_have_count(2)
    rows = table.locator("tbody tr")
    differing = rows.count()
    assert differing >= 1
    for i in range(differing):  # Prepare's split and seed against Train's epochs and lr: every row shown differs
        assert "differs" in (rows.nth(i).get_attribute("class") or ""), rows.nth(i).inner_text()
    wait_for_chart(page, "div.chart-box[data-chart=overlay]")
    shoot(page, shots, "compare")

    expect(page.locator("#toggle-diff")).to_have_text("show all rows")
    assert_clean(page)


def test_compare_diff_toggle_keeps_the_chosen_executions(page, server, workspace):
    page.goto(server.url + "/pipelines/demo/executions")
    ids = [page.locator("input[name=ids]").nth(i).get_attribute("value") for i in range(2)]
    page.goto(server.url + f"/pipelines/demo/compare?ids={ids[0]}&ids={ids[1]}&diff=1")
    differing = page.locator("table.compare tbody tr").count()
    page.locator("#toggle-diff").click()
    page.wait_for_url(lambda url: "diff" not in parse_qs(urlsplit(url).query))
    assert sorted(query_of(page)["ids"]) == sorted(ids)
    expect(page.locator("#toggle-diff")).to_have_text("differences only")
    expect(page.locator("table.compare thead a.execution")).to_have_count(2)
    assert page.locator("table.compare tbody tr").count() > differing  # the python environment is the same
    page.locator("#toggle-diff").click()
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("diff") == ["1"])
    assert sorted(query_of(page)["ids"]) == sorted(ids)
    expect(page.locator("#toggle-diff")).to_have_text("show all rows")
    assert_clean(page)


def test_xss_payload_is_shown_as_text_never_run(page, server, xss_pushed):
    def harmless(where: str) -> None:
        assert page.evaluate("typeof window.__xss") == "undefined", f"the payload ran on the {where} page"
        assert page.locator('img[src="x"]').count() == 0, f"the payload became an element on the {where} page"

    page.goto(server.url + "/")
    page.locator("a.pipeline", has_text="xss").click()
    page.wait_for_url("**/pipelines/xss/executions")
    expect(page.locator("a.execution")).to_have_text(re.compile(re.escape(f"Exec{XSS} ") + r"[0-9a-f]{8}"))
    expect(page.locator("nav.stages a", has_text=f"stage{XSS}")).to_be_visible()
    expect(page.get_by_text(XSS, exact=True).first).to_be_visible()  # the parameter "payload"
    harmless("executions")

    open_execution(page, f"Exec{XSS}")
    expect(page.locator("h1")).to_contain_text(f"Exec{XSS}")
    expect(page.locator("table.props td", has_text=XSS).first).to_be_visible()
    harmless("execution")

    dataset = page.locator("a.artifact", has_text=f"{XSS}.csv")
    expect(dataset).to_be_visible()
    dataset.click()
    page.wait_for_url(re.compile(r"/artifacts/\d+$"))
    expect(page.locator("h1")).to_contain_text(f"{XSS}.csv")
    expect(page.locator("dl.facts code", has_text=f"data/{XSS}.csv").first).to_be_visible()
    expect(page.locator("table.props td", has_text=XSS).first).to_be_visible()
    harmless("artifact")

    page.get_by_role("link", name="lineage around it").click()
    page.wait_for_url(re.compile(r"/pipelines/xss/lineage\?"))
    wait_for_graph(page)
    labels = page.locator("svg.lineage g.node text").all_text_contents()
    assert any(label.startswith("<img src=x") for label in labels), labels  # the file name, cut short
    titles = page.locator("svg.lineage g.node title").all_text_contents()
    assert any(f"Exec{XSS}" in t for t in titles) and any(f"{XSS}.csv" in t for t in titles), titles
    harmless("lineage")

    page.goto(server.url + "/pipelines/xss/lineage")  # the whole pipeline, the execution's node among them
    wait_for_graph(page)
    harmless("lineage")
    assert_clean(page)


def test_login_redirects_refuses_a_wrong_token_and_returns_with_the_right_one(page, token_server):
    asked = "/?page=1"
    page.goto(token_server.url + asked)
    page.wait_for_url("**/login?**")
    assert query_of(page)["next"] == [asked]
    expect(page.locator("h1")).to_have_text("Sign in")

    page.locator("#token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("p.error[role=alert]")).to_contain_text("Sign-in failed")
    assert path_of(page) == "/login"
    assert not [c for c in page.context.cookies() if c["name"] == "cmf_session"]

    page.locator("#token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(token_server.url + asked)
    expect(page.get_by_text("No pipelines yet.")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "cmf_session"]
    assert cookie["httpOnly"] and TOKEN not in cookie["value"]
    assert "cmf_session" not in page.evaluate("document.cookie")  # out of reach of scripts

    assert requests.get(token_server.url + "/api/pipelines", timeout=30).status_code == 401
    with_bearer = requests.get(token_server.url + "/api/pipelines", headers={"Authorization": f"Bearer {TOKEN}"},
                               timeout=30)
    assert with_bearer.status_code == 200 and with_bearer.json()["items"] == []
    assert_clean(page, 401)


@pytest.mark.parametrize("path", ["/pipelines/no-such-pipeline/executions", "/artifacts/987654", "/no/such/page"])
def test_not_found_pages_lead_home(page, server, workspace, path):
    response = page.goto(server.url + path)
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    page.get_by_role("link", name="Back to the pipelines").click()
    page.wait_for_url(server.url + "/")
    expect(page.locator("a.pipeline", has_text="demo")).to_be_visible()
    assert_clean(page, 404)


def test_a_malformed_filter_shows_the_message_and_the_page_stays_usable(page, server, workspace):
    page.goto(server.url + "/pipelines/demo/executions")
    filter_box = page.locator("form.toolbar input[name=filter]")
    filter_box.fill("lr >")
    with page.expect_response(lambda r: "/pipelines/demo/executions?" in r.url) as answer:
        page.get_by_role("button", name="Apply").click()
    assert answer.value.status == 400
    expect(page.locator("p.error[role=alert]")).to_be_visible()
    expect(filter_box).to_have_value("lr >")  # what was typed stays, to be corrected
    expect(page.get_by_text("No executions match.")).to_be_visible()

    filter_box.fill("lr > 0.001")
    with page.expect_response(lambda r: "/pipelines/demo/executions?" in r.url) as answer:
        page.get_by_role("button", name="Apply").click()
    assert answer.value.status == 200
    expect(page.locator("p.error[role=alert]")).to_have_count(0)
    expect(page.locator("a.execution")).to_have_count(1)
    expect(page.locator("a.execution")).to_contain_text("Train")

    page.locator("nav.stages a", has_text="prepare").click()  # the stages beside the list narrow it, filter kept
    page.wait_for_url(re.compile(r"stage=prepare"))
    assert query_of(page)["filter"] == ["lr > 0.001"]
    expect(page.locator("a.execution")).to_have_count(0)
    filter_box.fill("")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"stage=prepare"))
    expect(page.locator("a.execution")).to_have_count(1)
    expect(page.locator("a.execution")).to_contain_text("Prepare")
    page.locator("table.list thead a", has_text="Stage").click()  # a sortable header is a link
    page.wait_for_url(re.compile(r"sort=stage"))
    assert query_of(page)["stage"] == ["prepare"]
    assert_clean(page, 400)


def test_lineage_node_opens_its_page_and_the_drawing_exports_as_svg(page, server, workspace, shots):
    page.goto(server.url + "/pipelines/demo/lineage")
    wait_for_graph(page)
    expect(page.locator("svg.lineage g.node")).not_to_have_count(0)
    shoot(page, shots, "lineage")
    node = page.locator('svg.lineage g.node[data-key^="execution:"]').first
    execution_id = node.get_attribute("data-key").split(":")[1]
    node.locator("a:not(.more, .refocus)").click()  # the node itself, not its + or its focus target
    page.wait_for_url(f"**/executions/{execution_id}")
    run = page.request.get(f"{server.url}/api/executions/{execution_id}").json()
    expect(page.locator("h1")).to_have_text(f"{run['type']} {run['uuid'][:8]}")  # as the node was labelled
    page.go_back()
    wait_for_graph(page)

    with page.expect_download() as info:
        page.locator("a.export").click()
    download = info.value
    assert download.suggested_filename.endswith(".svg")
    root = ET.parse(download.path()).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.findall(".//{http://www.w3.org/2000/svg}g[@class]")
    assert_clean(page)


def test_cmf_ui_walk_over_the_workspace(page, ui_url, shots):
    page.goto(ui_url + "/")
    page.locator("a.pipeline", has_text="demo").click()
    page.wait_for_url("**/pipelines/demo/executions")
    open_execution(page, "Train")
    wait_for_chart(page)
    shoot(page, shots, "ui-execution", full_page=True)
    page.locator("a.artifact.t-Model").first.click()
    page.wait_for_url(re.compile(r"/artifacts/\d+$"))
    expect(page.locator("h1")).to_contain_text("model.pkl")
    expect(page.locator("section.card h2")).to_have_text("Model card")
    shoot(page, shots, "ui-artifact")
    assert_clean(page)


def test_the_csp_refuses_inline_script_and_the_error_collector_sees_it(page, server, workspace):
    """The collector the other tests rely on does see a CSP violation, and the policy refuses inline script."""
    page.goto(server.url + "/")
    assert_clean(page)
    page.evaluate("""() => { const s = document.createElement("script");
                             s.textContent = "window.__inline = 1"; document.body.appendChild(s); }""")
    assert page.evaluate("typeof window.__inline") == "undefined"
    for _ in range(100):  # console messages arrive on their own
        if any("Content Security Policy" in e for e in page.errors):  # type: ignore[attr-defined]
            break
        page.wait_for_timeout(50)
    else:
        pytest.fail(f"no CSP violation reported: {page.errors}")  # type: ignore[attr-defined]


# -- accessibility and small screens ------------------------------------------------------------------------------

AXE = ROOT / "tests" / "vendored" / "axe-core" / "axe.min.js"  # from the npm registry, for the tests only


def every_page(url: str) -> Dict[str, str]:
    """One address of every kind of page, by name, on the demo pipeline."""
    api = lambda path: requests.get(url + "/api" + path, timeout=30).json()  # noqa: E731
    runs = api("/pipelines/demo/executions")["items"]
    artifacts = {a["type"]: a for a in api("/pipelines/demo/artifacts?size=500")["items"]}
    return {"pipelines": "/", "executions": "/pipelines/demo/executions", "charts": "/pipelines/demo/executions?chart=1",
            "artifacts": "/pipelines/demo/artifacts", "datasets": "/pipelines/demo/artifacts?type=Dataset",
            "lineage": "/pipelines/demo/lineage",
            "lineage-focus": f"/pipelines/demo/lineage?focus=artifact:{artifacts['Model']['id']}&hops=1",
            "execution": f"/executions/{runs[-1]['id']}", "dataset": f"/artifacts/{artifacts['Dataset']['id']}",
            "model": f"/artifacts/{artifacts['Model']['id']}",
            "compare": "/pipelines/demo/compare?" + "&".join(f"ids={r['id']}" for r in runs),
            "tensorboard": "/pipelines/demo/tensorboard", "peers": "/peers", "missing": "/executions/999999"}


def axe_violations(page: Page) -> List[str]:
    """What axe-core finds on the page once drawn (charts are drawn from the JSON twin, after the load event)."""
    if "chart=1" in page.url:
        expect(page.locator("#scatter")).to_have_attribute("data-points", re.compile(r"^\d+$"))
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
                          "v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')))")
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_no_accessibility_violations(browser, server, workspace, shots, scheme):
    """axe-core finds nothing on any page, in the light and the dark colour scheme (contrast included)."""
    problems = {}
    # bypass_csp: to inject axe; the pages' own CSP is tested elsewhere
    with opened(browser, color_scheme=scheme, bypass_csp=True) as page:
        for name, path in every_page(server.url).items():
            page.goto(server.url + path)
            page.wait_for_load_state("load")
            found = axe_violations(page)
            shoot(page, shots, f"{scheme}-{name}", full_page=True)
            if found:
                problems[name] = found
    assert not problems, "\n".join(f"{name}: {v}" for name, vs in problems.items() for v in vs)


def test_pages_fit_a_phone_and_tables_scroll_inside(browser, server, workspace, shots):
    """At 390 px wide no page scrolls sideways (a wide table scrolls inside its own box), and the focused
    lineage is fitted into the screen."""
    wide = {}
    with opened(browser, viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True) as page:
        for name, path in every_page(server.url).items():
            page.goto(server.url + path)
            page.wait_for_load_state("load")
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 390:  # which elements stick out, to say what to fix
                wide[name] = (width, page.evaluate(
                    "Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > 391"
                    " && !e.closest('.scroll')).slice(0, 4).map(e => e.tagName + '.' + e.className)"))
            shoot(page, shots, f"phone-{name}", full_page=True)
        page.goto(server.url + every_page(server.url)["lineage-focus"])
        wait_for_graph(page)
        box = page.locator("#graph").bounding_box()
        drawn = page.locator("#graph svg .viewport").bounding_box()
        assert box and drawn and drawn["x"] >= box["x"] - 1 and drawn["x"] + drawn["width"] <= box["x"] + box["width"] + 1
    assert not wide, f"pages wider than the screen: {wide}"
