"""``cmf mcp`` (issue 25): the latency of its tools and its start-up, on the 1,000-execution pipeline of bench/ui.py.

One real ``cmf server`` process on loopback (SQLite), the pipeline of ``bench/metadata_server.py`` pushed into it,
then, in the same run, each tool call timed from an MCP client of the SDK (the ``call_tool`` round trip, which
includes the client's check of the answer against the tool's output schema, listed once after ``initialize`` as
clients do), ``--rounds`` calls each, the calls interleaved round by round so that the machine's noise falls on
all of them alike; p50 and p95 in ms, over three paths, each beside its baseline, the same read without MCP:

  mlmd      ``cmf mcp --mlmd FILE`` over stdio, FILE the server's SQLite store (read-only)
            baseline: the same read in this process (``LocalSource`` over FILE: ``ReadApi`` and ``Reads``)
  server    ``cmf mcp --server URL`` over stdio
            baseline: the same GET of the server's read API (``/api/...``; httpx, through ``RemoteSource``)
  http      the server's own ``/mcp`` endpoint, streamable HTTP            baseline: as for server

The calls: list_pipelines; list_executions, the default page and one with a filter and a sort; list_artifacts,
the default page and ``type=Dataset`` page 100; search for an md5 prefix (target p95 < 100 ms each); lineage 3
hops around an artifact in the middle of the pipeline (< 300 ms); get_execution and get_artifact (no target), and
model_card when the pipeline has a Model.  The ratio is the tool's p95 over its baseline's p95: the cost of MCP.

  start-up  spawning ``cmf mcp --mlmd FILE`` to its answer to ``initialize`` (target < 0.5 s), ``--start-rounds``
            times, interleaved with its floors, each timed to the moment its import is done (not its exit):
            ``python -c pass`` and the SDK's import (``import mcp.server.mcpserver``); what cmf adds to the SDK,
            its steps before it serves timed in one process, the SDK imported first; and where the imports'
            time goes (``python -X importtime``, self time summed by top-level package).

    .venv/bin/python bench/mcp_tools.py [--executions 1000] [--artifacts 10000] [--rounds 20] [--start-rounds 5]
                                  [--quick] [--profile [LABEL ...]]

``--quick`` (100 executions, 1,000 artifacts, 3 rounds, 3 starts) runs in under a minute.

``--profile`` then runs the tool calls named by label (default: those that missed a target, else the slowest)
in this process, ``Tools(LocalSource.of_file(FILE))`` awaited with anyio, its reads made inline rather than in
a worker thread (cProfile sees one thread), and prints where they spend their time.  Results:
bench/results/mcp.json.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import httpx  # noqa: E402
from mcp.client import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from cmf_core.mcp.sources import LocalSource, RemoteSource, Source, pairs  # noqa: E402
from cmf_core.mcp.tools import MAX_PAGE, Tools  # noqa: E402
from cmf_core.metadata.sql import Session  # noqa: E402
from cmf_core.server.client import MetadataClient  # noqa: E402
from cmf_core.testing.metadata_server import MetadataServer  # noqa: E402

from metadata_server import PIPELINE, generate  # noqa: E402  (bench/metadata_server.py: the pipeline)
from ui import code_version, footer, percentile, profile_lines  # noqa: E402  (bench/ui.py)

LIST_TARGET_MS, LINEAGE_TARGET_MS, START_TARGET_S = 100.0, 300.0, 0.5
CMF = str(Path(sys.executable).with_name("cmf"))  # the console script, as an assistant starts it
SIZE = 20  # the tools' default page size
#: the MCP paths: key -> (what is timed, its baseline's key)
PATHS = {"mlmd": ("cmf mcp --mlmd (stdio)", "local"), "server": ("cmf mcp --server (stdio)", "api"),
         "http": ("cmf server /mcp (HTTP)", "api")}
BASELINES = {"local": "in-process read", "api": "GET /api (httpx)"}
FULL = {"executions": 1000, "artifacts": 10000, "rounds": 20, "start_rounds": 5}
QUICK = {"executions": 100, "artifacts": 1000, "rounds": 3, "start_rounds": 3}


@dataclass
class Call:
    """One tool call to time, and the read the tool makes for it (a :class:`Source` method and its arguments): the
    call's baseline."""

    label: str
    tool: str
    args: Dict[str, Any]
    read: str
    read_args: Tuple[Any, ...]
    target_ms: Optional[float]

    def read_with(self, source: Source) -> Any:
        return getattr(source, self.read)(*self.read_args)


def calls(api: Source, executions: int) -> Tuple[List[Call], List[str]]:
    """The tool calls to time, chosen from what the server holds; and notes on what was left out."""
    p = PIPELINE
    artifacts = api.artifacts(p, pairs(page=1, size=25))
    middle = max(1, -(-artifacts["total"] // 25) // 2)  # the page of the middle artifact, as bench/ui.py's focus
    focus = api.artifacts(p, pairs(page=middle, size=25))["items"][0]
    runs = api.executions(p, pairs(page=max(1, -(-executions // 25) // 2), size=25))["items"][0]
    datasets = artifacts["type_counts"].get("Dataset", 0)
    page = min(100, max(1, -(-datasets // SIZE)))  # a small --artifacts has fewer than 100 pages
    # stage3 holds the seeds from 30% to 40% of the executions: this keeps the upper half of them
    where = f"seed >= {executions * 35 // 100} and stage = stage3"
    prefix = focus["uri"][:8]  # an artifact's uri is its md5
    lineage = pairs(hops=3, direction="both", focus=f"artifact:{focus['id']}", detail="all")
    out = [
        Call("list_pipelines", "list_pipelines", {}, "pipelines", (1, MAX_PAGE), LIST_TARGET_MS),
        Call("list_executions", "list_executions", {"pipeline": p}, "executions",
             (p, pairs(sort="id", order="asc", page=1, size=SIZE)), LIST_TARGET_MS),
        Call("list_executions filter, sort", "list_executions",
             {"pipeline": p, "filter": where, "sort": "param.seed", "order": "desc"}, "executions",
             (p, pairs(filter=where, sort="param.seed", order="desc", page=1, size=SIZE)), LIST_TARGET_MS),
        Call("list_artifacts", "list_artifacts", {"pipeline": p}, "artifacts", (p, pairs(page=1, size=SIZE)),
             LIST_TARGET_MS),
        Call(f"list_artifacts type=Dataset page={page}", "list_artifacts", {"pipeline": p, "type": "Dataset",
             "page": page}, "artifacts", (p, pairs(type="Dataset", page=page, size=SIZE)), LIST_TARGET_MS),
        Call(f"search {prefix} (md5 prefix)", "search", {"text": prefix}, "search", (pairs(q=prefix, limit=20),),
             LIST_TARGET_MS),
        Call(f"lineage artifact:{focus['id']} 3 hops", "lineage",
             {"pipeline": p, "focus": f"artifact:{focus['id']}", "hops": 3}, "lineage", (p, lineage),
             LINEAGE_TARGET_MS),
        Call(f"get_execution {runs['id']}", "get_execution", {"execution": str(runs["id"])}, "execution",
             (runs["id"],), None),
        Call(f"get_artifact {focus['id']}", "get_artifact", {"artifact": str(focus["id"])}, "artifact",
             (focus["id"],), None),
    ]
    notes = []
    models = api.artifacts(p, pairs(type="Model", page=1, size=1))["items"]
    if models:
        out.append(Call(f"model_card {models[0]['id']}", "model_card", {"model": str(models[0]["id"])}, "artifact",
                        (models[0]["id"],), None))
    else:
        notes.append("model_card not measured: the generated pipeline has no Model artifact")
    return out, notes


def agrees(structured: Dict[str, Any], read: Dict[str, Any]) -> bool:
    """Whether a tool's answer is of the same records as its baseline's read (so both time the same work)."""
    if "nodes_in_view" in structured:
        return structured["nodes_in_view"] == len(read["nodes"])
    if "total" in structured:
        return structured["total"] == read["total"]
    return (structured["model"] if "model" in structured else structured)["id"] == read["id"]


def stats(seconds: List[float]) -> Dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms),
            "times_ms": ms}


# -- tool latency --------------------------------------------------------------------------------------------

async def open_sessions(stack: AsyncExitStack, url: str, mlmd: Path, errlog: TextIO) -> Dict[str, ClientSession]:
    """An initialized client session per MCP path, its tools listed (the client checks answers against them)."""
    transports = {
        "mlmd": stdio_client(StdioServerParameters(command=CMF, args=["mcp", "--mlmd", str(mlmd)], cwd=mlmd.parent),
                             errlog=errlog),
        "server": stdio_client(StdioServerParameters(command=CMF, args=["mcp", "--server", url]), errlog=errlog),
        "http": streamable_http_client(url + "/mcp")}
    sessions = {}
    for key, transport in transports.items():
        read, write = await stack.enter_async_context(transport)
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        await session.list_tools()
        sessions[key] = session
    return sessions


async def call_tool(session: ClientSession, call: Call) -> Tuple[float, Any]:
    started = time.perf_counter()
    result = await session.call_tool(call.tool, call.args)
    elapsed = time.perf_counter() - started
    if result.is_error:
        raise RuntimeError(f"{call.label}: the tool answered an error: {result.content[0].text}")
    return elapsed, result


def read(source: Source, call: Call) -> Tuple[float, Any]:
    started = time.perf_counter()
    data = call.read_with(source)
    return time.perf_counter() - started, data


async def measure_tools(url: str, mlmd: Path, todo: List[Call], rounds: int,
                        errlog: TextIO) -> List[Dict[str, Any]]:
    """Each call over each path and each baseline, ``rounds`` times, interleaved; a summary per call."""
    baselines: Dict[str, Source] = {"local": LocalSource.of_file(mlmd), "api": RemoteSource(url)}
    times: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    sizes: Dict[Tuple[str, str], int] = {}
    try:
        async with AsyncExitStack() as stack:
            sessions = await open_sessions(stack, url, mlmd, errlog)
            for call in todo:  # warm-up, sizes and checks, untimed
                reads = {key: call.read_with(source) for key, source in baselines.items()}
                for key, data in reads.items():
                    sizes[call.label, key] = len(json.dumps(data, separators=(",", ":")))
                for key, session in sessions.items():
                    _, result = await call_tool(session, call)
                    sizes[call.label, key] = len(result.model_dump_json(by_alias=True, exclude_none=True))
                    if not all(agrees(result.structured_content, data) for data in reads.values()):
                        raise RuntimeError(f"{call.label}: the tool over {key} and its baseline reads differ")
            for r in range(rounds):
                for call in todo:
                    for key, session in sessions.items():
                        times[call.label, key].append((await call_tool(session, call))[0])
                    for key, source in baselines.items():
                        times[call.label, key].append(read(source, call)[0])
                print(f"\r  tool round {r + 1}/{rounds}", end="", flush=True)
            print()
    finally:
        for source in baselines.values():
            source.close()
    out = []
    for call in todo:
        row: Dict[str, Any] = {"label": call.label, "tool": call.tool, "args": call.args, "target_ms": call.target_ms,
                               "baselines": {}, "paths": {}}
        for key in BASELINES:
            row["baselines"][key] = {**stats(times[call.label, key]), "bytes": sizes[call.label, key]}
        for key, (_, base) in PATHS.items():
            entry = {**stats(times[call.label, key]), "bytes": sizes[call.label, key]}
            entry["ratio_p95"] = entry["p95_ms"] / row["baselines"][base]["p95_ms"]
            entry["ok"] = None if call.target_ms is None else entry["p95_ms"] < call.target_ms
            row["paths"][key] = entry
        out.append(row)
    return out


# -- start-up ------------------------------------------------------------------------------------------------

async def time_initialize(mlmd: Path, errlog: TextIO) -> float:
    """Seconds from spawning ``cmf mcp --mlmd FILE`` to its answer to ``initialize``."""
    params = StdioServerParameters(command=CMF, args=["mcp", "--mlmd", str(mlmd)], cwd=mlmd.parent)
    started = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read_stream, write_stream):
        async with ClientSession(read_stream, write_stream) as session:
            await session.initialize()
            return time.perf_counter() - started


def time_python(code: str) -> float:
    """Seconds from spawning ``python -c code`` to the line it prints when ``code`` has run: as the start-up is
    timed, without the interpreter's exit (its teardown of the SDK's modules takes 0.3 s more)."""
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, "-c", f"{code}; print('ready', flush=True)"],
                          stdout=subprocess.PIPE, text=True) as process:
        ready = process.stdout.readline()
        elapsed = time.perf_counter() - started
    if process.returncode or ready.strip() != "ready":
        raise RuntimeError(f"python -c {code!r} failed ({process.returncode})")
    return elapsed


FLOORS = {"python -c pass": "pass", "import mcp.server.mcpserver (the SDK)": "import mcp.server.mcpserver"}
STARTED = "cmf mcp --mlmd: spawn to initialize answered"
#: the steps of ``cmf mcp --mlmd FILE`` before it serves, timed in one process, the SDK's import first: what cmf
#: adds to the SDK, free of the noise between processes
PHASES = """\
import json, sys, time
from pathlib import Path
marks = [time.perf_counter()]
import mcp.server.mcpserver
marks.append(time.perf_counter())
import cmf_core.cli
marks.append(time.perf_counter())
from cmf_core.mcp.sources import LocalSource
from cmf_core.mcp.tools import create_server
marks.append(time.perf_counter())
create_server(LocalSource.of_file(Path(sys.argv[1])))
marks.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
"""
PHASE_NAMES = ("the SDK's import", "import cmf_core.cli", "import of cmf's MCP modules",
               "create_server (the tools' schemas, the SDK's logging set-up)")


def measure_startup(mlmd: Path, rounds: int, errlog: TextIO) -> Dict[str, Any]:
    """The start-up and its floors, interleaved round by round; its steps in one process; the imports' time by
    top-level package."""
    seconds: Dict[str, List[float]] = defaultdict(list)
    for r in range(rounds):
        for label, code in FLOORS.items():
            seconds[label].append(time_python(code))
        seconds[STARTED].append(anyio.run(time_initialize, mlmd, errlog))
        done = subprocess.run([sys.executable, "-c", PHASES, str(mlmd)], capture_output=True, text=True, check=True)
        for name, spent in zip(PHASE_NAMES, json.loads(done.stdout)):
            seconds[name].append(spent)
        print(f"\r  start-up round {r + 1}/{rounds}", end="", flush=True)
    print()
    rows = {label: {"median_s": statistics.median(s), "max_s": max(s), "seconds": s} for label, s in seconds.items()
            if label not in PHASE_NAMES}
    rows[STARTED]["ok"] = rows[STARTED]["median_s"] < START_TARGET_S
    phases = {name: {"median_ms": statistics.median(seconds[name]) * 1000, "ms": [t * 1000 for t in seconds[name]]}
              for name in PHASE_NAMES}
    return {"rows": rows, "phases": phases, "imports_ms": import_times("import cmf_core.cli, cmf_core.mcp.tools")}


def import_times(code: str, top: int = 10) -> Dict[str, float]:
    """``python -X importtime -c code``: the self time of the modules, summed by top-level package, ms, the
    largest first (the rest summed as "other")."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    by_package: Dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            by_package[fields[2].strip().split(".")[0]] += int(fields[0]) / 1000
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    out = dict(ranked[:top])
    out["other"] = sum(ms for _, ms in ranked[top:])
    return out


# -- profile in-process --------------------------------------------------------------------------------------

CUMULATIVE = r"cmf_core/|pydantic|json"


def profile_calls(mlmd: Path, todo: List[Call], limit: int = 16) -> Dict[str, str]:
    """cProfile of each call of ``todo`` on ``Tools(LocalSource.of_file(mlmd))`` in this process, the reads inline
    (``anyio.to_thread.run_sync`` made a plain call for the run: cProfile sees this thread only); and, since
    cProfile sees an SQL statement as one call of ``execute``, each statement's time and the line that ran it."""
    source = LocalSource.of_file(mlmd)
    tools = Tools(source)
    statements: List[Tuple[float, str, str]] = []
    rows = Session.rows

    def timed_rows(session: Session, sql: str, params: Any = ()) -> List[Tuple]:
        caller = sys._getframe(1)
        while caller.f_back is not None and caller.f_code.co_filename == rows.__code__.co_filename:
            caller = caller.f_back  # Session.value calls rows: name the line that asked for the value
        started = time.perf_counter()
        try:
            return rows(session, sql, params)
        finally:
            where = f"{Path(caller.f_code.co_filename).relative_to(BENCH.parent)}:{caller.f_lineno}"
            statements.append((time.perf_counter() - started, where, " ".join(sql.split())))

    async def inline(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args)

    async def timed(call: Call) -> float:
        started = time.perf_counter()
        await getattr(tools, call.tool)(**call.args)
        return time.perf_counter() - started

    async def run() -> Dict[str, str]:
        out = {}
        for call in todo:
            plain = min([await timed(call) for _ in range(3)])
            profiler = cProfile.Profile()
            profiler.enable()
            profiled = await timed(call)
            profiler.disable()
            lines = profile_lines(profiler, CUMULATIVE, limit)
            statements.clear()
            Session.rows = timed_rows  # type: ignore[method-assign]
            try:
                await timed(call)
            finally:
                Session.rows = rows  # type: ignore[method-assign]
            sql = [f"  {spent * 1000:7.1f} ms  {where}  {text[:110]}" for spent, where, text in
                   sorted(statements, reverse=True)]
            out[call.label] = "\n".join([f"{plain * 1000:.1f} ms in process (best of 3), {profiled * 1000:.1f} ms "
                                         "under cProfile", *lines, "SQL statements, the slowest first:", *sql])
        return out

    saved = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = inline
    try:
        return anyio.run(run)
    finally:
        anyio.to_thread.run_sync = saved
        source.close()


# -- the report ----------------------------------------------------------------------------------------------

def report(tools: List[Dict[str, Any]], startup: Dict[str, Any]) -> List[str]:
    """Print the tables; the list of what missed a target."""
    missed = []
    print(f"\n{'tool call (call_tool round trip)':<44}{'path':<26}{'p50 ms':>8}{'p95 ms':>8}   "
          f"{'baseline':<18}{'p50 ms':>8}{'p95 ms':>8}{'p95 ratio':>10}{'KB':>7}{'read KB':>8}{'target':>8}  ok")
    for row in tools:
        for i, (key, (name, base)) in enumerate(PATHS.items()):
            entry, baseline = row["paths"][key], row["baselines"][base]
            target = f"<{row['target_ms']:.0f}" if row["target_ms"] else ""
            ok = "" if entry["ok"] is None else ("yes" if entry["ok"] else "NO")
            if entry["ok"] is False:
                missed.append(f"{row['label']} over {name}: p95 {entry['p95_ms']:.0f} ms "
                              f"(target {row['target_ms']:.0f} ms)")
            print(f"{row['label'] if i == 0 else '':<44}{name:<26}{entry['p50_ms']:>8.1f}{entry['p95_ms']:>8.1f}   "
                  f"{BASELINES[base]:<18}{baseline['p50_ms']:>8.1f}{baseline['p95_ms']:>8.1f}"
                  f"{entry['ratio_p95']:>9.1f}x{entry['bytes'] / 1024:>7.1f}{baseline['bytes'] / 1024:>8.1f}"
                  f"{target:>8}  {ok}")
    rows = startup["rows"]
    print(f"\n{'start-up (a process each)':<52}{'median s':>10}{'max s':>8}{'target':>8}  ok")
    for label, row in rows.items():
        ok = "yes" if row.get("ok") else "NO" if "ok" in row else ""
        target = f"<{START_TARGET_S}" if "ok" in row else ""
        print(f"{label:<52}{row['median_s']:>10.3f}{row['max_s']:>8.3f}{target:>8}  {ok}")
    sdk = rows["import mcp.server.mcpserver (the SDK)"]["median_s"]
    print(f"  the SDK's import alone: {sdk - rows['python -c pass']['median_s']:.3f} s over python's start")
    phases = startup["phases"]
    added = {name: phases[name]["median_ms"] for name in PHASE_NAMES[1:]}
    print(f"  cmf mcp's steps in one process, the SDK first (median ms): {PHASE_NAMES[0]} "
          f"{phases[PHASE_NAMES[0]]['median_ms']:.0f}; then what cmf adds: " +
          ", ".join(f"{name} {ms:.0f}" for name, ms in added.items()) + f" (total {sum(added.values()):.0f})")
    if not rows[STARTED]["ok"]:
        missed.append(f"start-up: median {rows[STARTED]['median_s']:.3f} s (target {START_TARGET_S} s)")
    print("  import time of cmf mcp's modules by top-level package (python -X importtime, self ms): " +
          ", ".join(f"{name} {ms:.0f}" for name, ms in startup["imports_ms"].items()))
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=None, help="1000 (--quick: 100)")
    parser.add_argument("--artifacts", type=int, default=None, help="10000 (--quick: 1000)")
    parser.add_argument("--rounds", type=int, default=None, help="calls per tool call and path: 20 (--quick: 3)")
    parser.add_argument("--start-rounds", type=int, default=None,
                        help="starts of cmf mcp, and of each floor: 5 (--quick: 3)")
    parser.add_argument("--quick", action="store_true", help="a small pipeline and few rounds: under a minute")
    parser.add_argument("--profile", nargs="*", metavar="LABEL", default=None,
                        help="profile these tool calls, by label (default: those that missed a target, else the "
                             "slowest) in this process")
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    export = generate(args.executions, args.artifacts)
    payload = json.dumps(export)
    load_before = os.getloadavg()
    code_before = code_version()
    print(f"pipeline {PIPELINE!r}: {args.executions} executions, {args.artifacts} artifacts, export "
          f"{len(payload) / 1e6:.1f} MB; server store: SQLite; code at {code_before}")

    with tempfile.TemporaryDirectory(prefix="cmf-bench-mcp-") as tmp:
        work = Path(tmp)
        server = MetadataServer(work / "server")
        try:
            server.start()
            with MetadataClient(server.url, retries=0, timeout=httpx.Timeout(600)) as client:
                started = time.perf_counter()
                answer = client.push(PIPELINE, payload)
                push_seconds = time.perf_counter() - started
            print(f"  pushed {PIPELINE!r} in {push_seconds:.1f} s: {answer['status']}, {answer['executions']} "
                  f"executions, {answer['artifacts']} artifacts")
            mlmd = server.store_file
            api = RemoteSource(server.url)
            try:
                todo, notes = calls(api, args.executions)
            finally:
                api.close()
            with open(work / "cmf-mcp.log", "w") as errlog:  # the stderr of the cmf mcp processes
                tools = anyio.run(measure_tools, server.url, mlmd, todo, args.rounds, errlog)
                startup = measure_startup(mlmd, args.start_rounds, errlog)
            missed = report(tools, startup)
            for note in notes:
                print(note)
            profiles: Dict[str, str] = {}
            if args.profile is not None:
                slow = set(args.profile) or {r["label"] for r in tools if any(e["ok"] is False
                                                                              for e in r["paths"].values())} or \
                    {max(tools, key=lambda r: r["paths"]["mlmd"]["p95_ms"])["label"]}
                for label in slow - {c.label for c in todo}:
                    print(f"--profile: no tool call is labelled {label!r}")
                profiles = profile_calls(mlmd, [c for c in todo if c.label in slow])
                for label, text in profiles.items():
                    print(f"\nprofile of {label}:\n{text}")
        finally:
            server.stop()

    load_after, code_after = footer(load_before, code_before, missed)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "mcp.json").write_text(json.dumps({
        "store": "SQLite", "executions": args.executions, "artifacts": args.artifacts, "export_bytes": len(payload),
        "push_seconds": push_seconds, "rounds": args.rounds, "start_rounds": args.start_rounds,
        "load_average_before": load_before, "load_average_after": load_after, "code_before": code_before,
        "code_after": code_after, "tools": tools, "startup": startup, "notes": notes, "missed": missed,
        "profiles": profiles}, indent=2))
    print(f"written to {results / 'mcp.json'}")


if __name__ == "__main__":
    main()
