"""The runs views in a real browser (Debian's Chromium driven by Playwright), on the pipeline of
``test_ui_runs.py``: the cross-run charts drawn from every matching run and a point or a line opening its run,
the column chooser and the chart choices kept in the URL, the step-chart controls changing the drawing, and the
compare page's reference run, environment diff and artifact compare.  No console error or CSP violation."""
from __future__ import annotations

import re
from typing import Dict, List, Tuple


from tests.browser import assert_clean, need_chromium, shoot

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402 (after the skip)

from tests.test_ui_browser import query_of  # noqa: E402
from tests.test_ui_runs import P, STEPS, TRAINS, accuracy, loss, lr, runs  # noqa: E402,F401 (runs: the fixture)


def marks(page: Page, selector: str) -> List[Tuple[str, str]]:
    """(href, title) of every run link in an SVG chart."""
    return page.eval_on_selector_all(selector + " a.run", "links => links.map(a => "
                                     "[a.getAttribute('href'), a.querySelector('title').textContent])")


def show(value: float) -> str:
    return str(float(f"{value:.4g}")).removesuffix(".0")


def test_cross_run_charts_draw_every_matching_run_and_a_point_opens_it(page, runs, tmp_path):
    page.goto(runs.url + f"/pipelines/{P}/executions?stage=train&chart=1&x=param.lr&y=metric.accuracy")
    section = page.locator("#runs-charts")
    expect(section).to_have_attribute("data-runs", str(TRAINS))  # all of them, not the 25 of the page
    expect(page.locator("#runs-note")).to_have_text(f"{TRAINS} runs match.")
    with_both = [i for i in range(TRAINS) if lr(i) is not None and accuracy(i) is not None]
    expect(page.locator("#scatter")).to_have_attribute("data-points", str(len(with_both)))
    expect(page.locator("#scatter-note")).to_have_text("Left out: 3 runs without lr, 2 runs without accuracy.")
    shown = marks(page, "#scatter")
    expected = {(f"/executions/{runs.trains[i]}", f"lr {show(lr(i))} · accuracy {show(accuracy(i))}")
                for i in with_both}
    assert {(href, title.split(" · ", 1)[1]) for href, title in shown} == expected
    # where the points are: more lr further right, more accuracy higher up (SVG y grows downwards)
    centres = dict(page.eval_on_selector_all("#scatter a.run", "links => links.map(a => [a.getAttribute('href'), "
                                             "[+a.firstChild.nextSibling.getAttribute('cx'), "
                                             "+a.firstChild.nextSibling.getAttribute('cy')]])"))
    by_lr = [centres[f"/executions/{runs.trains[i]}"] for i in sorted(with_both, key=lr)]
    assert by_lr == sorted(by_lr) and [y for _, y in by_lr] == sorted((y for _, y in by_lr), reverse=True)
    shoot(page, tmp_path, "charts", full_page=True)
    # the highest-accuracy point, clicked where it is drawn, opens its run
    best = max(with_both, key=lambda i: accuracy(i))
    page.locator(f'#scatter a[href="/executions/{runs.trains[best]}"] circle').click()
    page.wait_for_url(f"**/executions/{runs.trains[best]}")
    expect(page.locator("table.props").first).to_contain_text(show(lr(best)))
    assert_clean(page)


def test_a_parallel_coordinates_line_opens_its_run_and_choices_go_to_the_url(page, runs):
    page.goto(runs.url + f"/pipelines/{P}/executions?stage=train&chart=1")
    expect(page.locator("#runs-charts")).to_have_attribute("data-runs", str(TRAINS))
    form = page.locator("#runs-chart-form")
    for box in form.locator("input[name=axes]").all():
        box.uncheck() if box.get_attribute("value") not in ("param.optimizer", "metric.accuracy") else box.check()
    assert query_of(page)["axes"] == ["param.optimizer,metric.accuracy"]
    with_accuracy = [i for i in range(TRAINS) if accuracy(i) is not None]
    expect(page.locator("#parallel")).to_have_attribute("data-lines", str(len(with_accuracy)))
    expect(page.locator("#parallel-note")).to_have_text("Left out: 2 runs without accuracy.")
    form.locator("select[name=y]").select_option("metric.f1")
    assert query_of(page)["y"] == ["metric.f1"]
    expect(page.locator("#scatter-title")).to_have_text("metric.f1 against param.epochs")
    # the filter form keeps the charts and their choices
    page.locator("input[name=filter]").fill("optimizer = adam")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**filter=**")
    query = query_of(page)
    assert (query["chart"], query["y"], query["axes"]) == (["1"], ["metric.f1"], ["param.optimizer,metric.accuracy"])
    adam = [i for i in with_accuracy if i % 2]
    expect(page.locator("#parallel")).to_have_attribute("data-lines", str(len(adam)))
    # the last line drawn, clicked on its first point (on the optimizer axis), opens its run
    href = page.locator("#parallel a.run").last.get_attribute("href")
    point = page.eval_on_selector_all("#parallel polyline", "ls => ls[ls.length - 1].getAttribute('points')").split()[0]
    page.locator("#parallel").scroll_into_view_if_needed()
    box = page.locator("#parallel").bounding_box()
    x, y = (float(v) for v in point.split(","))
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_url(f"**{href}")
    assert_clean(page)


def test_the_column_chooser_keeps_its_choice_in_the_url(page, runs, tmp_path):
    page.goto(runs.url + f"/pipelines/{P}/executions?stage=train")
    headers = page.locator("table.list thead th")
    expect(headers).to_have_count(5 + 6)
    page.locator("#column-chooser summary").click()
    for column in ("param.epochs", "param.optimizer", "param.seed", "metric.f1"):
        page.locator(f"#columns input[value='{column}']").uncheck()
    page.get_by_role("button", name="Show columns").click()
    page.wait_for_url("**cols=**")
    assert query_of(page)["cols"] == ["param.lr,metric.accuracy"] and query_of(page)["stage"] == ["train"]
    expect(headers).to_have_text(["⇆", "Execution ▲", "Stage", "Type", "Created", "lr", "accuracy"])
    page.locator("#column-chooser summary").click()
    page.get_by_label("move metric.accuracy left").click()
    page.wait_for_url("**cols=metric.accuracy%2Cparam.lr**")
    expect(headers.nth(5)).to_have_text("accuracy")
    headers.nth(6).locator("a").click()  # sorting by lr keeps the columns
    page.wait_for_url("**sort=param.lr**")
    assert query_of(page)["cols"] == ["metric.accuracy,param.lr"]
    first = min((i for i in range(TRAINS) if lr(i) is not None), key=lr)
    expect(page.locator("table.list tbody tr").first.locator("td").nth(6)).to_have_text(show(lr(first)))
    shoot(page, tmp_path, "columns")
    assert_clean(page)


def drawing(page: Page, selector: str) -> Dict[str, str]:
    box = page.locator(selector)
    return {"x": box.get_attribute("data-x"), "y": box.get_attribute("data-y"), "last": box.get_attribute("data-last"),
            "png": box.locator("canvas").screenshot()}


def test_step_chart_controls_change_the_drawing_and_stay_in_the_url(page, runs, tmp_path):
    execution = runs.trains[0]
    page.goto(runs.url + f"/executions/{execution}")
    chart = "div.chart-box[data-chart]"
    expect(page.locator(chart)).to_have_attribute("data-drawn", "2")  # loss and lr; the time column is no line
    raw = drawing(page, chart)
    assert (raw["x"], raw["y"], float(raw["last"])) == ("step", "linear", loss(0, STEPS - 1))
    page.eval_on_selector("input[name=smooth]",  # a slider: set, and the event it fires as it is dragged
                          "r => { r.value = '0.9'; r.dispatchEvent(new Event('input', {bubbles: true})); }")
    expect(page.locator(chart)).not_to_have_attribute("data-last", raw["last"])
    smooth = drawing(page, chart)
    assert float(smooth["last"]) > loss(0, STEPS - 1) and smooth["png"] != raw["png"]  # the average lags behind
    assert query_of(page)["smooth"] == ["0.9"]
    page.get_by_label("log y").check()
    expect(page.locator(chart)).to_have_attribute("data-y", "log")
    page.locator("select[name=xaxis]").select_option("relative")
    expect(page.locator(chart)).to_have_attribute("data-x", "relative")
    assert drawing(page, chart)["png"] != smooth["png"]
    shoot(page, tmp_path, "execution-controls", full_page=True)
    query = query_of(page)
    assert query["logy"] == ["1"] and query["xaxis"] == ["relative"]
    page.reload()  # the URL holds it all
    expect(page.locator(chart)).to_have_attribute("data-x", "relative")
    expect(page.locator(chart)).to_have_attribute("data-y", "log")
    expect(page.locator("input[name=smooth]")).to_have_value("0.9")
    assert_clean(page)


def test_compare_marks_cells_against_the_pinned_reference_and_diffs_environments(page, runs, tmp_path):
    ids = runs.trains[:3]
    ids_query = ",".join(map(str, ids))
    page.goto(runs.url + f"/pipelines/{P}/compare?ids={ids_query}&metric=training.loss&metric=training.lr")
    optimizer = page.locator("table.compare tr", has=page.locator("th", has_text="optimizer")).locator("td")
    expect(optimizer).to_have_text(["sgd", "adam", "sgd"])
    expect(optimizer.nth(0)).to_have_class("ref")
    expect(optimizer.nth(1)).to_have_class("changed")
    expect(optimizer.nth(2)).not_to_have_class("changed")
    for selector in ("div.chart-box[data-chart=overlay]", "div.chart-box[data-chart=overlay-2]"):
        expect(page.locator(selector)).to_have_attribute("data-drawn", "3")
    expect(page.locator("#envdiff tbody tr")).to_have_text([re.compile(r"numpy\s*1.26.4\s*2.0.1"),
                                                            re.compile(r"scipy\s*—\s*1.13.0"),
                                                            re.compile(r"requests\s*2.31.0\s*—")])
    shoot(page, tmp_path, "compare", full_page=True)
    page.locator("thead th").nth(2).get_by_text("pin as reference").click()
    page.wait_for_url(f"**ref={ids[1]}**")
    expect(optimizer.nth(1)).to_have_class("ref")
    expect(optimizer.nth(0)).to_have_class("changed")
    expect(optimizer.nth(2)).to_have_class("changed")
    assert query_of(page)["metric"] == ["training.loss", "training.lr"]
    expect(page.locator("#env-form select[name=env] option")).to_have_count(2)  # the runs but the reference
    assert_clean(page)


def test_artifacts_are_compared_from_the_artifacts_page(page, runs, tmp_path):
    page.goto(runs.url + f"/pipelines/{P}/artifacts?type=Dataset")
    page.get_by_label(f"compare artifact {runs.datasets['a.csv']}").check()
    page.get_by_label(f"compare artifact {runs.datasets['b.csv']}").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/compare?**")
    assert sorted(map(int, query_of(page)["artifacts"])) == sorted(runs.datasets.values())
    expect(page.locator("h1")).to_have_text("Compare artifacts")
    row = page.locator("table.compare tr", has=page.locator("th", has_text=re.compile(r"^custom\s+rows$")))
    rows = row.locator("td")
    expect(rows).to_have_text(["100", "250"])
    expect(rows.nth(1)).to_have_class("changed")
    shoot(page, tmp_path, "compare-artifacts", full_page=True)
    assert_clean(page)
