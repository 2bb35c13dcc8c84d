"""The lineage page in a real browser (Debian's Chromium driven by Playwright): a generated pipeline of 1,000
executions readable at once, level of detail with ``detail=all``, search, breadcrumbs and reset, direction,
opening a cluster, a drag that is no click, and the badge of an artifact another pipeline uses.

Screenshots go to the module's tmp dir (and the README's one, ``lineage-aggregated``, to ``$CMF_UI_SCREENSHOTS``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser import need_chromium, new_page, shoot

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402 (after the skip)

from cmf_core.testing.metadata_server import MetadataServer
from tests.test_lineage import TUNE_RUNS, artifact, chain, export, ids, other, push, run, sweep

BIG_STAGES, BIG_RUNS = 10, 100  # 1,000 executions, 2,000 datasets
LABEL = "#graph g.node > a:not([class]) > text"  # a node's own label (not its +, not its badge)
# the on-screen height of every label drawn inside the graph's box, and how many labels there are
LABELS_JS = """() => {
  const box = document.getElementById("graph").getBoundingClientRect();
  const shown = [], all = document.querySelectorAll("#graph g.node > a:not([class]) > text");
  for (const t of all) {
    const r = t.getBoundingClientRect();
    if (r.height > 0 && r.bottom > box.top && r.top < box.bottom && r.right > box.left && r.left < box.right) {
      shown.push(r.height);
    }
  }
  return {shown: shown, total: all.length};
}"""


def big() -> Dict[str, Any]:
    """``BIG_STAGES`` stages of ``BIG_RUNS`` runs, each reading the two datasets the run before it wrote."""
    stages, previous = [], []
    for s in range(BIG_STAGES):
        runs = []
        for r in range(BIG_RUNS):
            outputs = [artifact(f"data/s{s}/{r}/part{k}.csv") for k in range(2)]
            runs.append(run(previous, outputs))
            previous = outputs
        stages.append((f"stage{s}", runs))
    return export("big", stages)


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with MetadataServer(tmp_path_factory.mktemp("lineage-browser")) as server:
        for data in (chain(), sweep(), other(), big()):
            push(server.url, data)
        yield server.url


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lineage-shots")


@pytest.fixture
def page(browser) -> Iterator[Page]:
    """A fresh 1280x800 page that must end with no console or page error."""
    for tab in new_page(browser):
        yield tab
        assert not tab.errors, "console or page errors:\n" + "\n".join(tab.errors)  # type: ignore[attr-defined]


def open_lineage(page: Page, url: str, pipeline: str, query: str = "") -> None:
    page.goto(f"{url}/pipelines/{pipeline}/lineage{query}")
    expect(page.locator("#graph svg.lineage")).to_have_attribute("data-ready", "1")


def query_of(page: Page) -> Dict[str, List[str]]:
    return parse_qs(urlsplit(page.url).query)


def node(page: Page, label: str) -> Any:
    """The node whose label starts with ``label``."""
    return page.locator("#graph g.node", has=page.locator("a:not([class]) > text",
                                                          has_text=re.compile("^" + re.escape(label))))


# -- big pipelines -------------------------------------------------------------------------------------------


def test_the_lineage_of_1000_executions_is_readable_at_once(page, url, shots):
    open_lineage(page, url, "big")
    labels = page.evaluate(LABELS_JS)
    assert labels["total"] == BIG_STAGES * 2  # a cluster per stage and one per stage's datasets
    assert len(labels["shown"]) >= 4 and min(labels["shown"]) >= 10, labels  # read without zooming
    expect(node(page, f"stage0 · {BIG_RUNS} runs")).to_be_visible()
    expect(node(page, f"Dataset ×{BIG_RUNS * 2} · stage0")).to_be_visible()
    shoot(page, shots, "lineage-aggregated")


def test_detail_all_shows_labels_only_zoomed_in(page, url, shots):
    open_lineage(page, url, "big", "?detail=all")
    assert page.evaluate(LABELS_JS)["total"] == BIG_STAGES * BIG_RUNS * 3
    assert min(page.evaluate(LABELS_JS)["shown"]) >= 10  # it starts readable, at the sources
    page.locator("#zoom-fit").click()  # the whole drawing: far too small to read
    expect(page.locator("#graph svg.lineage")).to_have_class(re.compile(r"\bfar\b"))
    assert page.evaluate(LABELS_JS)["shown"] == []
    shoot(page, shots, "lineage-detail-all-fit")
    for _ in range(18):  # x1.4 each about the middle of the chain: from the fit of 2,000 layers (x0.002) to x1
        page.locator("#zoom-in").click()
    expect(page.locator("#graph svg.lineage")).not_to_have_class(re.compile(r"\bfar\b"))
    expect(page.locator("#graph g.node.near > a > text").first).to_be_visible()
    shoot(page, shots, "lineage-detail-all-zoomed")
    assert len(page.evaluate(LABELS_JS)["shown"]) >= 1


# -- navigation -------------------------------------------------------------------------------------------


def test_search_finds_a_node_and_focuses_it(page, url, shots):
    open_lineage(page, url, "chain")
    page.get_by_role("searchbox").fill("a2.csv")
    page.get_by_role("searchbox").press("Enter")
    page.wait_for_url(re.compile(r"focus=artifact"))
    expect(page.locator("#graph svg.lineage")).to_have_attribute("data-ready", "1")
    focus = page.locator("#graph g.node.focus")
    expect(focus).to_have_count(1)
    expect(focus.locator("text").first).to_have_text("a2.csv")
    assert query_of(page)["trail"] == query_of(page)["focus"]
    expect(page.locator("nav.trail .current")).to_have_text("a2.csv")
    shoot(page, shots, "lineage-search-focus")

    page.get_by_role("searchbox").fill("data/a")  # three files: a list to choose from
    page.get_by_role("searchbox").press("Enter")
    page.wait_for_url(re.compile(r"q=data"))
    expect(page.locator(".search-results a.match")).to_have_count(3)
    shoot(page, shots, "lineage-search-several")
    page.locator(".search-results a.match", has_text="a3.csv").click()
    page.wait_for_url(re.compile(r"focus=artifact"))
    expect(page.locator("#graph g.node.focus text").first).to_have_text("a3.csv")
    assert len(query_of(page)["trail"]) == 2  # a2.csv, then a3.csv


def test_breadcrumbs_go_back_and_reset_shows_the_whole_pipeline(page, url, shots):
    open_lineage(page, url, "chain", "?q=a1.csv&hops=1")
    first = page.url
    s2 = node(page, "s2")
    s2.locator("a.refocus").click()
    page.wait_for_url(re.compile(r"focus=execution"))
    expect(page.locator("nav.trail a, nav.trail .current")).to_have_count(3)  # a1.csv › s2 and Reset
    node(page, "a2.csv").locator("a.refocus").click()
    page.wait_for_url(lambda u: len(parse_qs(urlsplit(u).query)["trail"]) == 3)
    expect(page.locator("nav.trail .current")).to_have_text("a2.csv")
    shoot(page, shots, "lineage-trail")
    page.locator("nav.trail a", has_text="a1.csv").click()
    page.wait_for_url(first)
    expect(page.locator("#graph g.node.focus text").first).to_have_text("a1.csv")
    page.locator("nav.trail a.reset").click()
    page.wait_for_url(f"{url}/pipelines/chain/lineage")
    expect(page.locator("#graph g.node")).to_have_count(9)
    expect(page.locator("#graph g.node.focus")).to_have_count(0)


def test_the_plus_of_a_node_adds_nodes_and_drops_none(page, url):
    # raw -> s1 -> a1 -> s2 -> a2 -> s3 -> a3 (and score): 4 hops up from a3 reach a1, through s3, whose + shows
    # the score; expanding s3 must keep what the focus reaches through it
    a3 = ids(url, "chain", "artifacts")["data/a3.csv"]
    open_lineage(page, url, "chain", f"?focus=artifact:{a3}&hops=4")

    def drawn() -> Set[str]:
        return set(page.eval_on_selector_all("#graph g.node", "nodes => nodes.map(n => n.dataset.key)"))

    before = drawn()
    node(page, "s3").locator("a.more").click()
    page.wait_for_url("**expand=**")
    expect(page.locator("#graph svg.lineage")).to_have_attribute("data-ready", "1")
    after = drawn()
    assert before < after and len(after - before) == 1  # the score; nothing upstream of s3 lost


def test_direction_shows_only_upstream_or_downstream(page, url, shots):
    open_lineage(page, url, "chain", "?q=a2.csv")
    page.get_by_label("Direction").select_option("up")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"direction=up"))
    labels = page.locator(LABEL).all_text_contents()
    assert {label.split(" ")[0] for label in labels} == {"a2.csv", "a1.csv", "s2"}
    shoot(page, shots, "lineage-upstream")
    page.get_by_label("Direction").select_option("down")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"direction=down"))
    labels = page.locator(LABEL).all_text_contents()
    assert {label.split(" ")[0] for label in labels} == {"a2.csv", "a3.csv", "score", "s3"}


def test_a_cluster_opens_on_click_and_a_drag_is_no_click(page, url, shots):
    open_lineage(page, url, "sweep")
    cluster = node(page, f"tune · {TUNE_RUNS} runs")
    box = cluster.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 60, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)
    assert "cluster=" not in page.url  # the drag moved the drawing, it did not open the cluster
    assert cluster.bounding_box()["x"] == pytest.approx(box["x"] + 100, abs=2)
    cluster.locator("a").first.click()
    page.wait_for_url(re.compile(r"cluster=runs"))
    expect(page.locator("#graph g.node.member")).to_have_count(TUNE_RUNS)
    expect(page.locator("h1")).to_have_text("Lineage of the executions of tune")
    shoot(page, shots, "lineage-cluster")


def test_a_badge_leads_to_the_other_pipeline_using_the_artifact(page, url, shots):
    open_lineage(page, url, "chain")
    badge = node(page, "a1.csv").locator("a.also")
    expect(badge).to_contain_text("also in other")
    shoot(page, shots, "lineage-badge")
    badge.click()
    page.wait_for_url(re.compile(r"/pipelines/other/lineage\?focus=artifact"))
    expect(page.locator("#graph g.node.focus text").first).to_have_text("a1.csv")
    expect(node(page, "a1.csv").locator("a.also")).to_contain_text("also in chain")
