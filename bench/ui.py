"""The web UI and its read API under a large pipeline: 1,000 executions and 10,000 artifacts.

One real ``cmf server`` process on loopback (SQLite, or PostgreSQL with ``--postgres``), the pipeline
of ``bench/metadata_server.py`` pushed into it, then, in the same run:

  server      time to the last byte of each route, measured by an httpx client (compressed bytes read
              off the socket, not decoded), ``--rounds`` requests each, the routes interleaved round by
              round so that the machine's noise falls on all of them alike; p50 and p95 in ms:
                executions page and JSON twin: default, ``sort=param.seed&order=desc``,
                ``filter=seed > 500 and stage = stage3``, ``page=30``           (target p95 < 200 ms)
                artifacts page and JSON: default, ``type=Dataset&sort=name&page=100``  (p95 < 200 ms)
                lineage around one artifact, 2 hops, page and JSON             (p95 < 300 ms)
                the whole pipeline's lineage (11,000 nodes), page and JSON
                baseline: ``POST /mlmd_pull`` of the pipeline, the full export the old whole-list
                routes were built from
  browser     headless Chromium (Playwright, /usr/bin/chromium), a fresh context (cold cache) per
              load: ``goto`` to the load event of the executions and artifacts pages (target < 1 s);
              the lineage pages until ``svg.lineage[data-ready]`` and the frame after it, from the
              start of the navigation: the default (aggregated) view of the whole pipeline, with a
              node label at least 10 px high on screen (target < 1 s), one artifact 2 hops around
              (< 300 ms) and ``detail=all`` (every node); bytes transferred (response bodies as sent,
              gzip) for the first load of ``/`` (< 500 KB), the executions page and the lineage page
  frames      requestAnimationFrame intervals while the default lineage view and ``detail=all`` are
              zoomed with the wheel (30 events, out then in) and dragged (40 moves): p50, p95, max ms
              and frames per second (target: p95 under 33.4 ms, 30 frames per second)
  push        the executions page of the pipeline, requested one after another while a second copy of
              the pipeline (other names, so all 11,000 records are new) is pushed from a thread; p50,
              p95 and max, beside the same requests with no push running

    .venv/bin/python bench/ui.py [--executions 1000] [--artifacts 10000] [--rounds 20] [--browser-rounds 5]
                                 [--postgres] [--profile [PATH ...]]

``--profile`` then builds the app in this process (``create_app`` over a copy of the server's SQLite
store, or over the same PostgreSQL database) and prints where the slowest routes spend their time.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import metadata_server  # noqa: E402  (bench/metadata_server.py: the pipeline generator)
from metadata_server import PIPELINE, generate  # noqa: E402

from cmf_core.server.client import MetadataClient  # noqa: E402
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer  # noqa: E402

COPY = PIPELINE + "-copy"  # the second pipeline, pushed while the first is read
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HTML = {"Accept": "text/html,application/xhtml+xml"}
LIST_TARGET_MS, FOCUS_TARGET_MS = 200.0, 300.0
LOAD_TARGET_S, HOME_TARGET_KB = 1.0, 500.0
#: ms from the start of the navigation to the first frame after the lineage is drawn (None: no target)
LINEAGE_TARGETS_MS = {"lineage": 1000.0, "lineage-focus": 300.0, "lineage-all": None}
READABLE_PX, FRAME_TARGET_MS = 10.0, 1000 / 30


def percentile(values: List[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def code_version() -> str:
    """The commit, and the tree of ``cmf_core`` that the server runs (the working tree is shared: it can move)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(BENCH.parent), *argv], capture_output=True, text=True).stdout.strip()
    dirty = " + uncommitted changes" if git("status", "--porcelain", "cmf_core") else ""
    tree = git("rev-parse", "--short", "HEAD:cmf_core")
    return f"{git('rev-parse', '--short', 'HEAD')} (cmf_core tree {tree}{dirty})"


def profile_lines(profiler: cProfile.Profile, cumulative: str, limit: int) -> List[str]:
    """A profile's top entries: by cumulative time (those matching ``cumulative``), then by own time; pstats'
    headers left out."""
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(cumulative, limit)
    stats.sort_stats("tottime").print_stats(limit)
    return [line for line in text.getvalue().splitlines() if line.strip()
            and not line.lstrip().startswith(("Ordered by", "List reduced"))]


def footer(load_before: Tuple[float, float, float], code_before: str,
           missed: List[str]) -> Tuple[Tuple[float, float, float], str]:
    """Print what a run's numbers stand on (the load average before and after, a warning if the code changed under
    the run) and the targets missed; return (load average after, code version after)."""
    load_after = os.getloadavg()
    code_after = code_version()
    if code_after.partition(" ")[2] != code_before.partition(" ")[2]:
        print(f"\nWARNING: cmf_core changed during the run, from {code_before} to {code_after}")
    print(f"\nload average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
          f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} ({os.cpu_count()} CPUs)")
    print("missed targets:" if missed else "every target met")
    for line in missed:
        print("  " + line)
    return load_after, code_after


def generate_named(name: str, executions: int, artifacts: int) -> Dict:
    """``generate`` for a pipeline called ``name`` (its stages and artifact paths carry the name)."""
    saved = metadata_server.PIPELINE
    metadata_server.PIPELINE = name
    try:
        return generate(executions, artifacts)
    finally:
        metadata_server.PIPELINE = saved


# -- the routes -----------------------------------------------------------------------------------------

class Route:
    """One request to time: GET ``path`` (as a browser page or as JSON) or a POST with a JSON body."""

    def __init__(self, label: str, path: str, *, html: bool = False, body: Optional[Dict] = None,
                 target_ms: Optional[float] = None, group: str = "") -> None:
        self.label, self.path, self.html, self.body = label, path, html, body
        self.target_ms, self.group = target_ms, group
        self.times: List[float] = []
        self.wire_bytes = 0
        self.body_bytes = 0
        self.detail = ""

    def send(self, client: httpx.Client) -> Tuple[float, int]:
        """Seconds to the last byte, and the bytes read off the socket."""
        started = time.perf_counter()
        if self.body is None:
            stream = client.stream("GET", self.path, headers=HTML if self.html else None)
        else:
            stream = client.stream("POST", self.path, json=self.body)
        with stream as response:
            for _ in response.iter_raw():
                pass
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{self.label}: HTTP {response.status_code} from {self.path}")
            return elapsed, response.num_bytes_downloaded

    def check(self, client: httpx.Client) -> None:
        """One untimed request: the status, the decoded size and what the answer holds."""
        if self.body is None:
            response = client.get(self.path, headers=HTML if self.html else None)
        else:
            response = client.post(self.path, json=self.body)
        if response.status_code != 200:
            raise RuntimeError(f"{self.label}: HTTP {response.status_code} from {self.path}: {response.text[:300]}")
        self.body_bytes = len(response.content)
        if not self.html and self.body is None:
            data = response.json()
            if "nodes" in data:
                self.detail = f"{len(data['nodes'])} nodes, {len(data['edges'])} edges"
            elif "total" in data:
                self.detail = f"{len(data['items'])} of {data['total']}"
        elif self.body is not None:
            self.detail = "export JSON"

    def summary(self) -> Dict[str, Any]:
        ms = [t * 1000 for t in self.times]
        p95 = percentile(ms, 95)
        return {"label": self.label, "path": self.path, "group": self.group, "html": self.html,
                "p50_ms": percentile(ms, 50), "p95_ms": p95, "max_ms": max(ms), "n": len(ms), "times_ms": ms,
                "wire_bytes": self.wire_bytes, "body_bytes": self.body_bytes, "detail": self.detail,
                "target_ms": self.target_ms, "ok": None if self.target_ms is None else p95 < self.target_ms}


def routes(focus_id: int) -> List[Route]:
    p = f"/pipelines/{PIPELINE}"
    out: List[Route] = []

    def both(group: str, label: str, query: str, target: Optional[float]) -> None:
        out.append(Route(f"{label} page", p + f"/{group}" + query, html=True, target_ms=target, group=group))
        out.append(Route(f"{label} JSON", "/api" + p + f"/{group}" + query, target_ms=target, group=group))

    both("executions", "executions", "", LIST_TARGET_MS)
    both("executions", "executions sort=param.seed desc", "?sort=param.seed&order=desc", LIST_TARGET_MS)
    both("executions", "executions filter", "?filter=" + quote("seed > 500 and stage = stage3"), LIST_TARGET_MS)
    both("executions", "executions page=30", "?page=30", LIST_TARGET_MS)
    both("artifacts", "artifacts", "", LIST_TARGET_MS)
    both("artifacts", "artifacts Dataset by name p100", "?type=Dataset&sort=name&page=100", LIST_TARGET_MS)
    both("lineage", f"lineage artifact:{focus_id} 2 hops", f"?focus=artifact:{focus_id}&hops=2", FOCUS_TARGET_MS)
    both("lineage", "lineage whole pipeline (aggregated)", "", None)
    both("lineage", "lineage whole pipeline detail=all", "?detail=all", None)
    out.append(Route("baseline POST /mlmd_pull", "/mlmd_pull", body={"pipeline_name": PIPELINE}, group="baseline"))
    return out


def measure_server(url: str, rounds: int) -> Tuple[List[Route], int]:
    with httpx.Client(base_url=url, timeout=300) as client:
        listing = f"/api/pipelines/{PIPELINE}/artifacts"
        last_page = -(-client.get(listing).json()["total"] // 25)  # a small --artifacts has fewer than 200 pages
        focus_id = client.get(listing, params={"page": min(200, last_page)}).json()["items"][0]["id"]
        todo = routes(focus_id)
        for route in todo:  # warm-up and checks, untimed
            route.check(client)
            route.send(client)
        for r in range(rounds):
            for route in todo:
                elapsed, wire = route.send(client)
                route.times.append(elapsed)
                route.wire_bytes = wire
            print(f"\r  server round {r + 1}/{rounds}", end="", flush=True)
        print()
    return todo, focus_id


# -- the browser --------------------------------------------------------------------------------------

# the page's own navigation timing, ms from the start of the navigation
TIMING_JS = """() => { const n = performance.getEntriesByType("navigation")[0];
  const out = {response_start: n.responseStart, response_end: n.responseEnd, dom_interactive: n.domInteractive,
               dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd};
  if (window.__cmfReady !== undefined) { out.script_ready = window.__cmfReady; out.painted = window.__cmfPainted; }
  return out; }"""
NOW_JS = "() => performance.now()"
# the tallest label drawn inside the graph's box, px on screen (0: none is readable there)
LABEL_JS = """() => { const box = document.getElementById("graph").getBoundingClientRect(); let tallest = 0;
  for (const t of document.querySelectorAll("#graph g.node > a > text")) { const r = t.getBoundingClientRect();
    if (r.height > 0 && r.bottom > box.top && r.top < box.bottom && r.right > box.left && r.left < box.right) {
      tallest = Math.max(tallest, r.height); } }
  return tallest; }"""
# requestAnimationFrame intervals until window.__frameStop is set
FRAMES_JS = """() => { window.__frames = []; window.__frameStop = false; let last = performance.now();
  const tick = (now) => { window.__frames.push(now - last); last = now;
    if (!window.__frameStop) { requestAnimationFrame(tick); } };
  requestAnimationFrame(tick); }"""
# when lineage.js marks the drawing ready, and the first frame after it (the drawing painted)
READY_INIT = """(() => {
  new MutationObserver(() => {
    if (window.__cmfReady === undefined && document.querySelector("svg.lineage[data-ready]")) {
      window.__cmfReady = performance.now();
      requestAnimationFrame(() => setTimeout(() => { window.__cmfPainted = performance.now(); }, 0));
    }
  }).observe(document, {attributes: true, attributeFilter: ["data-ready"], subtree: true});
})();"""


def lineage_pages(focus_id: int) -> Dict[str, str]:
    base = f"/pipelines/{PIPELINE}/lineage"
    return {"lineage": base, "lineage-focus": f"{base}?focus=artifact:{focus_id}&hops=2",
            "lineage-all": f"{base}?detail=all"}


def measure_browser(url: str, rounds: int, focus_id: int) -> Dict[str, Any]:
    from playwright.sync_api import sync_playwright

    pages = {"executions": f"/pipelines/{PIPELINE}/executions", "artifacts": f"/pipelines/{PIPELINE}/artifacts",
             **lineage_pages(focus_id), "home": "/"}
    result: Dict[str, Any] = {name: {"path": path, "seconds": [], "bytes": [], "requests": [], "timing_ms": []}
                              for name, path in pages.items()}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for r in range(rounds):
                for name, path in pages.items():
                    context = browser.new_context(viewport={"width": 1400, "height": 900})  # a cold cache
                    try:
                        drawing = name.startswith("lineage")
                        if drawing:
                            context.add_init_script(READY_INIT)
                        page = context.new_page()
                        finished: List[Any] = []
                        page.on("requestfinished", lambda request: finished.append(request))
                        started = time.perf_counter()
                        if drawing:
                            page.goto(url + path, wait_until="commit", timeout=300_000)
                            page.wait_for_selector("svg.lineage[data-ready]", state="attached", timeout=300_000)
                        else:
                            response = page.goto(url + path, wait_until="load", timeout=300_000)
                            if response is None or response.status != 200:
                                raise RuntimeError(f"browser: {path} answered {response and response.status}")
                        elapsed = time.perf_counter() - started
                        at_ready = page.evaluate(NOW_JS) if drawing else None
                        label_px = page.evaluate(LABEL_JS) if drawing else None
                        page.wait_for_load_state("networkidle", timeout=300_000)  # the icon and late requests too
                        timing = page.evaluate(TIMING_JS)
                        if at_ready is not None:
                            timing["ready_seen"] = at_ready
                            timing["label_px"] = label_px
                        result[name]["timing_ms"].append(timing)
                        sizes = [(req.url, req.sizes()) for req in finished]
                        transferred = sum(s["responseBodySize"] for _, s in sizes)
                        result[name]["seconds"].append(elapsed)
                        result[name]["bytes"].append(transferred)
                        result[name]["requests"] = [{"url": u.replace(url, ""), "body": s["responseBodySize"],
                                                     "headers": s["responseHeadersSize"]} for u, s in sizes]
                    finally:
                        context.close()
                print(f"\r  browser round {r + 1}/{rounds}", end="", flush=True)
            print()
        finally:
            browser.close()
    for name, entry in result.items():
        entry["median_s"] = statistics.median(entry["seconds"])
        entry["max_s"] = max(entry["seconds"])
        entry["first_bytes"] = entry["bytes"][0]
        entry["timing_median_ms"] = {key: statistics.median(t[key] for t in entry["timing_ms"])
                                     for key in entry["timing_ms"][0]}
    result["executions"]["target_s"] = result["artifacts"]["target_s"] = LOAD_TARGET_S
    result["home"]["target_kb"] = HOME_TARGET_KB
    for name in ("executions", "artifacts"):
        result[name]["ok"] = result[name]["median_s"] < result[name]["target_s"]
    for name, target in LINEAGE_TARGETS_MS.items():
        entry = result[name]
        entry["painted_ms"] = [t["painted"] for t in entry["timing_ms"]]
        entry["label_px"] = min(t["label_px"] for t in entry["timing_ms"])
        entry["target_ms"] = target
        readable = entry["label_px"] >= READABLE_PX if name == "lineage" else True
        entry["ok"] = None if target is None else readable and statistics.median(entry["painted_ms"]) < target
    result["home"]["ok"] = result["home"]["first_bytes"] / 1024 < HOME_TARGET_KB
    return result


def frame_stats(frames: List[float], seconds: float) -> Dict[str, Any]:
    return {"n": len(frames), "p50_ms": percentile(frames, 50), "p95_ms": percentile(frames, 95),
            "max_ms": max(frames, default=float("nan")), "fps": len(frames) / seconds if seconds else 0.0,
            "ok": percentile(frames, 95) <= FRAME_TARGET_MS}


def wheel(page: Any, x: float, y: float) -> None:
    for i in range(30):
        page.mouse.wheel(0, 120 if i < 15 else -120)
        page.wait_for_timeout(16)


def drag(page: Any, x: float, y: float) -> None:
    page.mouse.down()
    for i in range(40):
        page.mouse.move(x - i * 10, y - i * 3)
        page.wait_for_timeout(16)
    page.mouse.up()


GESTURES = {"wheel": wheel, "drag": drag}


def measure_frames(url: str, paths: Dict[str, str]) -> Dict[str, Any]:
    """Frame times while each lineage view is zoomed with the wheel (30 events 16 ms apart, out then back in,
    around the middle of the graph) and then dragged (40 moves of 10 px), in a fresh context each."""
    from playwright.sync_api import sync_playwright

    out: Dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, path in paths.items():
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                try:
                    page = context.new_page()
                    page.goto(url + path, timeout=300_000)
                    page.wait_for_selector("svg.lineage[data-ready]", state="attached", timeout=300_000)
                    box = page.locator("#graph").bounding_box()
                    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                    page.mouse.move(x, y)
                    page.wait_for_timeout(500)
                    for gesture, run in GESTURES.items():
                        page.evaluate(FRAMES_JS)
                        started = time.perf_counter()
                        run(page, x, y)
                        seconds = time.perf_counter() - started
                        frames = page.evaluate("() => { window.__frameStop = true; return window.__frames.slice(1); }")
                        out[f"{name} {gesture}"] = frame_stats(frames, seconds)
                        page.wait_for_timeout(400)  # the drawing settles: labels, sharp repaint
                finally:
                    context.close()
        finally:
            browser.close()
    return out


# -- reads during a push ------------------------------------------------------------------------------

def measure_during_push(url: str, payload: str, quiet_requests: int) -> Dict[str, Any]:
    """The executions page of the first pipeline, with no push and then while the copy is pushed."""
    page = Route("executions page", f"/pipelines/{PIPELINE}/executions", html=True)
    # the request body is encoded here, not in the pushing thread: a 30 MB json.dumps there would hold
    # this process's interpreter lock and show up as read latency that the server did not cause
    body = json.dumps({"exec_uuid": None, "json_payload": payload, "pipeline_name": COPY}).encode()
    with httpx.Client(base_url=url, timeout=300) as client:
        page.send(client)
        quiet = [page.send(client)[0] for _ in range(quiet_requests)]
        pushed: Dict[str, Any] = {}

        def push() -> None:
            started = time.perf_counter()
            try:
                with httpx.Client(base_url=url, timeout=600) as pusher:
                    response = pusher.post("/mlmd_push", content=body, headers={"Content-Type": "application/json"})
                pushed["status"] = response.status_code
                pushed["answer"] = response.json() if response.status_code == 200 else response.text[:300]
            except Exception as exc:  # reported below; the reads stop with the thread
                pushed["error"] = repr(exc)
            pushed["seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=push, name="push")
        thread.start()
        busy: List[float] = []
        while thread.is_alive():
            busy.append(page.send(client)[0])
        thread.join()
        after = [page.send(client)[0] for _ in range(quiet_requests)]  # brackets the push: the machine's noise
    if pushed.get("status") != 200:
        raise RuntimeError(f"the push of {COPY!r} failed: {pushed}")

    def stats(values: List[float]) -> Dict[str, Any]:
        ms = [v * 1000 for v in values]
        return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms),
                "times_ms": ms}

    return {"path": page.path, "quiet": stats(quiet), "during_push": stats(busy), "quiet_after": stats(after),
            "push_seconds": pushed["seconds"], "push_answer": pushed["answer"]}


# -- profile in-process -------------------------------------------------------------------------------

# what the cumulative list shows: the read path, the page and its template, serialisation (not the middleware)
CUMULATIVE = (r"cmf_core/server/(reads|ui|dag|db|filters)\.py|templates/|jinja2/environment\.py:\d+\(render\)"
              r"|encoders|json")


def profile_routes(server: MetadataServer, pg: Optional[PostgresServer], work: Path, paths: List[str],
                   limit: int = 16) -> Dict[str, str]:
    """cProfile of ``paths`` on the app built in this process over the server's data (``--profile``).

    Starlette's TestClient runs the app in a thread of its own and the reads in a thread pool, where
    cProfile of the caller sees only lock waits; so the app is called here through httpx's ASGI transport
    on an event loop in this thread, with the UI's ``run_in_threadpool`` made a plain call for the run.
    """
    import asyncio

    import cmf_core.server.ui as ui_module
    from cmf_core.server.app import Settings, create_app
    from cmf_core.server.store import PostgresConfig, ServerStore

    if pg is None:
        copy = work / "profile" / "mlmd"
        copy.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{server.store_file}?mode=ro", uri=True)  # through SQLite: the WAL too
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        store = ServerStore(sqlite=copy)
    else:
        store = ServerStore(postgres=PostgresConfig(pg.host, pg.port, pg.USER, PIPELINE))
    app = create_app(Settings(store, work / "profile"))

    async def inline(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    async def get(client: httpx.AsyncClient, path: str) -> float:
        started = time.perf_counter()
        response = await client.get(path, headers=None if path.startswith("/api") else HTML)
        if response.status_code != 200:
            raise RuntimeError(f"profile: HTTP {response.status_code} from {path}")
        return time.perf_counter() - started

    async def run() -> Dict[str, str]:
        out = {}
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://bench") as client:  # lifespan: closes reads
            for path in paths:
                plain = min([await get(client, path) for _ in range(3)])
                profiler = cProfile.Profile()
                profiler.enable()
                profiled = await get(client, path)
                profiler.disable()
                lines = profile_lines(profiler, CUMULATIVE, limit)
                out[path] = "\n".join([f"{plain * 1000:.0f} ms in process (best of 3), "
                                       f"{profiled * 1000:.0f} ms under cProfile", *lines])
        return out

    saved = ui_module.run_in_threadpool
    ui_module.run_in_threadpool = inline
    try:
        return asyncio.run(run())
    finally:
        ui_module.run_in_threadpool = saved


# -- the report ---------------------------------------------------------------------------------------

def _kb(n: float) -> str:
    return f"{n / 1024:,.0f} KB" if n >= 10 * 1024 else f"{n / 1024:,.1f} KB"


def report(server: List[Dict[str, Any]], browser: Dict[str, Any], frames: Dict[str, Any],
           push: Dict[str, Any]) -> List[str]:
    """Print the tables; the list of what missed a target."""
    missed = []
    print(f"\n{'server: route (time to last byte)':<44}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'wire':>11}"
          f"{'decoded':>11}  {'answer':<24}{'target':>8}  ok")
    for s in server:
        target = f"<{s['target_ms']:.0f}" if s["target_ms"] else ""
        ok = "" if s["ok"] is None else ("yes" if s["ok"] else "NO")
        if s["ok"] is False:
            missed.append(f"server {s['label']}: p95 {s['p95_ms']:.0f} ms (target {s['target_ms']:.0f} ms)")
        print(f"{s['label']:<44}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['max_ms']:>9.1f}{_kb(s['wire_bytes']):>11}"
              f"{_kb(s['body_bytes']):>11}  {s['detail']:<24}{target:>8}  {ok}")
    print(f"\n{'browser (cold cache, fresh context)':<36}{'median s':>10}{'max s':>8}{'first load':>12}"
          f"{'requests':>10}{'target':>10}  ok")
    rows = [("executions page: goto -> load", "executions"), ("artifacts page: goto -> load", "artifacts"),
            ("home page /: bytes", "home")]
    for label, key in rows:
        entry = browser[key]
        if key == "home":
            target, ok = f"<{HOME_TARGET_KB:.0f} KB", entry["ok"]
            if not ok:
                missed.append(f"browser {label}: {_kb(entry['first_bytes'])} (target {HOME_TARGET_KB:.0f} KB)")
        else:
            target, ok = f"<{entry['target_s']:.0f} s", entry["ok"]
            if not ok:
                missed.append(f"browser {label}: median {entry['median_s']:.2f} s (target {entry['target_s']:.0f} s)")
        print(f"{label:<36}{entry['median_s']:>10.2f}{entry['max_s']:>8.2f}{_kb(entry['first_bytes']):>12}"
              f"{len(entry['requests']):>10}{target:>10}  {'yes' if ok else 'NO'}")
    print(f"\n{'lineage (navigation -> drawn, painted)':<40}{'median ms':>10}{'max ms':>8}{'label px':>10}"
          f"{'first load':>12}{'target':>10}  ok")
    for key in LINEAGE_TARGETS_MS:
        entry = browser[key]
        painted = entry["painted_ms"]
        target = f"<{entry['target_ms']:.0f} ms" if entry["target_ms"] else ""
        ok = "" if entry["ok"] is None else ("yes" if entry["ok"] else "NO")
        if entry["ok"] is False:
            missed.append(f"browser {entry['path']}: painted after {statistics.median(painted):.0f} ms, label "
                          f"{entry['label_px']:.1f} px (target {entry['target_ms']:.0f} ms"
                          f"{', labels >= 10 px' if key == 'lineage' else ''})")
        print(f"{entry['path'].replace('/pipelines/' + PIPELINE, ''):<40}{statistics.median(painted):>10.0f}"
              f"{max(painted):>8.0f}{entry['label_px']:>10.1f}{_kb(entry['first_bytes']):>12}{target:>10}  {ok}")
    print("  where the page's time goes (navigation timing, median ms from the start of navigation):")
    for key in ("executions", "artifacts", *LINEAGE_TARGETS_MS):
        t = browser[key]["timing_median_ms"]
        ready = (f", data-ready set {t['script_ready']:.0f}, painted {t['painted']:.0f}, seen by Playwright "
                 f"{t['ready_seen']:.0f}") if "ready_seen" in t else ""
        print(f"    {key:<13} last byte of HTML {t['response_end']:.0f}, DOM parsed {t['dom_interactive']:.0f}, "
              f"DOMContentLoaded {t['dom_content_loaded']:.0f}, load {t['load']:.0f}{ready}")
    print(f"\n{'frames while zoomed and dragged':<40}{'frames':>8}{'fps':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
          f"{'target':>9}  ok")
    for label, entry in frames.items():
        if not entry["ok"]:
            missed.append(f"frames {label}: p95 {entry['p95_ms']:.0f} ms (target {FRAME_TARGET_MS:.1f} ms)")
        print(f"{label:<40}{entry['n']:>8}{entry['fps']:>7.0f}{entry['p50_ms']:>9.1f}{entry['p95_ms']:>9.1f}"
              f"{entry['max_ms']:>9.1f}{'<33.4':>9}  {'yes' if entry['ok'] else 'NO'}")
    print(f"\nreads of {push['path']} while {COPY!r} is pushed (push took {push['push_seconds']:.1f} s):")
    print(f"{'':<18}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for label, key in (("no push, before", "quiet"), ("during push", "during_push"),
                       ("no push, after", "quiet_after")):
        entry = push[key]
        print(f"{label:<18}{entry['n']:>9}{entry['p50_ms']:>9.1f}{entry['p95_ms']:>9.1f}{entry['max_ms']:>9.1f}")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--artifacts", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=20, help="requests per route (server times)")
    parser.add_argument("--browser-rounds", type=int, default=5, help="cold loads per page in Chromium")
    parser.add_argument("--quiet-requests", type=int, default=40, help="executions-page reads with no push running")
    parser.add_argument("--postgres", action="store_true", help="the server on PostgreSQL instead of SQLite")
    parser.add_argument("--profile", nargs="*", metavar="PATH", default=None,
                        help="profile these paths (default: the routes that missed a target, else the slowest) "
                             "in this process")
    args = parser.parse_args()

    export = generate(args.executions, args.artifacts)
    payload = json.dumps(export)
    copy_payload = json.dumps(generate_named(COPY, args.executions, args.artifacts))
    executions = sum(len(s["executions"]) for s in export["Pipeline"][0]["stages"])
    artifacts = len({ev["artifact"]["name"] for s in export["Pipeline"][0]["stages"] for e in s["executions"]
                     for ev in e["events"]})
    kind = "PostgreSQL" if args.postgres else "SQLite"
    load_before = os.getloadavg()
    code_before = code_version()
    print(f"pipeline {PIPELINE!r}: {executions} executions, {artifacts} artifacts, export {len(payload) / 1e6:.1f} MB;"
          f" server store: {kind}; code at {code_before}")

    with tempfile.TemporaryDirectory(prefix="cmf-bench-ui-") as tmp:
        work = Path(tmp)
        pg = PostgresServer(work) if args.postgres else None
        server = MetadataServer(work / "server", postgres=pg, postgres_db=PIPELINE)
        try:
            if pg:
                pg.start()
            server.start()
            with MetadataClient(server.url, retries=0, timeout=httpx.Timeout(600)) as client:
                started = time.perf_counter()
                answer = client.push(PIPELINE, payload)
                push_seconds = time.perf_counter() - started
            print(f"  pushed {PIPELINE!r} in {push_seconds:.1f} s: {answer['status']}, {answer['executions']} "
                  f"executions, {answer['artifacts']} artifacts")
            measured, focus_id = measure_server(server.url, args.rounds)
            server_rows = [route.summary() for route in measured]
            browser = measure_browser(server.url, args.browser_rounds, focus_id)
            paths = lineage_pages(focus_id)
            frames = measure_frames(server.url, {"aggregated": paths["lineage"], "detail=all": paths["lineage-all"]})
            during = measure_during_push(server.url, copy_payload, args.quiet_requests)
            missed = report(server_rows, browser, frames, during)
            profiles: Dict[str, str] = {}
            if args.profile is not None:
                slow = args.profile or [s["path"] for s in server_rows if s["ok"] is False] or \
                       [max(server_rows, key=lambda s: s["p95_ms"] if s["group"] != "baseline" else 0)["path"]]
                profiles = profile_routes(server, pg, work, slow)
                for path, text in profiles.items():
                    print(f"\nprofile of {path}:\n{text}")
        finally:
            server.stop()
            if pg:
                pg.stop()

    load_after, code_after = footer(load_before, code_before, missed)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    name = "ui-postgres.json" if args.postgres else "ui.json"
    (results / name).write_text(json.dumps({
        "store": kind, "executions": executions, "artifacts": artifacts, "export_bytes": len(payload),
        "initial_push_seconds": push_seconds, "load_average_before": load_before, "load_average_after": load_after,
        "code_before": code_before, "code_after": code_after, "focus": f"artifact:{focus_id}", "rounds": args.rounds,
        "server": server_rows, "browser": browser, "frames": frames, "reads_during_push": during, "missed": missed,
        "profiles": profiles}, indent=2))
    print(f"written to {results / name}")


if __name__ == "__main__":
    main()
