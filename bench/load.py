"""The metadata server under load: 8 pushers and 4 readers at once, on SQLite and PostgreSQL, in one run.

One real ``cmf server`` per store (token auth, ``--workers N`` processes), seeded with a pipeline of 200
executions, then three phases, the readers running through all of them:

  quiet    the 4 readers alone for ``--quiet-seconds``: the baseline
  load     the 8 pushers join them for ``--seconds`` (60)
  after    the readers alone again, over the store the pushes grew: a read slower here than in ``quiet``
           is slower because the store grew, not because of the pushes

pushers  push one small execution per request (its own uuid), each the next as soon as the last is answered:
         three in four go into the growing pipeline ``load`` with ``exec_uuid`` (an incremental push; the
         execution reads the pusher's previous output, so lineage grows), one in four is a new pipeline
readers  loop over the UI's reads, timed to the last byte: the executions page, its JSON twin with a filter
         and a sort, the artifacts page, an execution's page, lineage around an artifact (2 hops)

Reported per store: pushes ok and failed (by HTTP status or the client's error), pushes/s, 5xx answers,
records lost (every uuid whose push got a 200 must be in the store exactly once: ``POST /mlmd_pull`` of
every pipeline at the end); read p50 / p95 / max per route and overall, under load beside the quiet
baseline (the ratio); the CPU seconds that the clients, the server (its store processes included) and
PostgreSQL used during the load.

Every pusher and reader is a process of its own (forked): the machine has 2 cores, and 12 client threads
in one interpreter would queue on its lock, so that a reader's time would include waiting for a pusher's
Python, which is no time the server spent.  The clients' CPU is reported beside the server's to show that
they are not the bottleneck.

``--compare-with DIR`` runs each store a second time with the server's code taken from the checkout DIR
(say ``git worktree add /tmp/base HEAD``), under the same load right after: a before/after figure from one
run on the same machine.  ``--rounds N`` runs everything N times, alternating which code goes first, and pools
the samples, so that the machine's noise falls on both alike.  Results go to bench/results/load.json.

    .venv/bin/python bench/load.py [--seconds 60] [--quiet-seconds 15] [--stores sqlite,postgresql] [--workers 1]
                                   [--pushers 8] [--readers 4] [--rounds 1] [--compare-with DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from ui import code_version, percentile  # noqa: E402  (bench/ui.py)

from cmf_core.testing.metadata_server import MetadataServer, PostgresServer  # noqa: E402

TOKEN = "load-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml"}
GROWING = "load"  # the pipeline that the incremental pushes grow
STAGES = ("train", "eval")
SEED_EXECUTIONS = 200
NEW_PIPELINE_EVERY = 4  # one push in four is a new pipeline
PHASES = ("quiet", "load", "after")


# -- the records --------------------------------------------------------------------------------------

def artifact(path: str) -> Dict[str, Any]:
    """A dataset named ``path:md5`` as an export lists it."""
    md5 = hashlib.md5(path.encode()).hexdigest()
    return {"name": f"{path}:{md5}", "type": "Dataset", "uri": md5, "properties": {},
            "custom_properties": {"rows": 100}}


def execution(uid: str, stage: str, seed: int, inputs: List[Dict], outputs: List[Dict]) -> Dict[str, Any]:
    return {"type": stage, "name": "", "properties": {"Execution_uuid": uid, "Context_Type": stage},
            "custom_properties": {"seed": seed, "lr": round(0.001 * (seed % 100 + 1), 3)},
            "events": [{"type": 3, "artifact": a} for a in inputs] + [{"type": 4, "artifact": a} for a in outputs]}


def export(pipeline: str, executions: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The export of ``pipeline`` with ``executions`` as (stage, execution) pairs."""
    stages = {stage: [e for s, e in executions if s == stage] for stage, _ in executions}
    return {"Pipeline": [{"name": pipeline, "custom_properties": {}, "stages": [
        {"name": f"{pipeline}/{stage}", "custom_properties": {}, "executions": runs}
        for stage, runs in stages.items()]}]}


def seed_export() -> Dict[str, Any]:
    """The growing pipeline at the start: a chain of executions, each reading the previous one's output."""
    runs, previous = [], []
    for n in range(SEED_EXECUTIONS):
        stage = STAGES[n % 2]
        output = artifact(f"data/seed/{n}.csv")
        runs.append((stage, execution(str(uuid.uuid4()), stage, n, previous, [output])))
        previous = [output]
    return export(GROWING, runs)


def push_body(payload: Dict[str, Any], exec_uuid: Optional[str] = None) -> Dict[str, Any]:
    """The body of ``POST /mlmd_push`` for an export (only the execution ``exec_uuid`` if given)."""
    return {"exec_uuid": exec_uuid, "json_payload": json.dumps(payload),
            "pipeline_name": payload["Pipeline"][0]["name"]}


# -- the clients (each in a process of its own) -------------------------------------------------------

def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def pusher(url: str, index: int, start: float, end: float) -> List[Tuple[str, str, Any, float]]:
    """Push from ``start`` to ``end`` (wall clock): [(pipeline, uuid, status, seconds)], status an HTTP code or
    the name of the client's error."""
    pushes: List[Tuple[str, str, Any, float]] = []
    previous = artifact(f"data/seed/{index}.csv")
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        _sleep_until(start)
        n = 0
        while time.time() < end:
            n += 1
            uid = str(uuid.uuid4())
            if n % NEW_PIPELINE_EVERY == 0:  # a new pipeline of one execution, pushed whole
                pipeline, stage, exec_uuid, output = f"new-{index}-{n}", "train", None, None
                run = execution(uid, stage, n, [], [artifact(f"{pipeline}/out.csv")])
            else:  # the growing pipeline's next execution, pushed alone
                pipeline, stage, exec_uuid = GROWING, STAGES[n % 2], uid
                output = artifact(f"data/p{index}/{n}.csv")
                run = execution(uid, stage, 1000 + n, [previous], [output])
            body = push_body(export(pipeline, [(stage, run)]), exec_uuid)
            started = time.perf_counter()
            try:
                status: Any = client.post("/mlmd_push", json=body).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            pushes.append((pipeline, uid, status, time.perf_counter() - started))
            if status == 200 and output is not None:
                previous = output
    return pushes


def reader(url: str, index: int, routes: List[Tuple[str, str, bool]], start: float,
           end: float) -> List[Tuple[str, float, float, Any]]:
    """Loop over ``routes`` (label, path, as a page?) from ``start`` to ``end``, starting at route ``index``:
    [(label, wall-clock start, seconds to the last byte, status)]."""
    reads: List[Tuple[str, float, float, Any]] = []
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        _sleep_until(start)
        n = index
        while time.time() < end:
            label, path, html = routes[n % len(routes)]
            n += 1
            began, started = time.time(), time.perf_counter()
            try:
                with client.stream("GET", path, headers=HTML if html else None) as response:
                    for _ in response.iter_raw():
                        pass
                status: Any = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            reads.append((label, began, time.perf_counter() - started, status))
    return reads


# -- one run ------------------------------------------------------------------------------------------

def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants: the live ones, and those it has reaped."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def seed(url: str) -> List[Tuple[str, str, bool]]:
    """Push the growing pipeline's first executions; the reads to time, on records it holds."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=300) as client:
        response = client.post("/mlmd_push", json=push_body(seed_export()))
        response.raise_for_status()
        listing = f"/api/pipelines/{GROWING}"
        execution_id = client.get(listing + "/executions", params={"page": 4}).json()["items"][0]["id"]
        artifact_id = client.get(listing + "/artifacts", params={"page": 6}).json()["items"][0]["id"]
    page = f"/pipelines/{GROWING}"
    return [("executions page", page + "/executions", True),
            ("executions JSON filter+sort", f"/api{page}/executions?filter=" + quote("seed > 50 and stage = train")
             + "&sort=param.lr&order=desc", False),
            ("artifacts page", page + "/artifacts", True),
            ("execution page", f"/executions/{execution_id}", True),
            ("lineage page, 2 hops", f"{page}/lineage?focus=artifact:{artifact_id}&hops=2", True)]


def stored_uuids(url: str) -> Counter:
    """How many times each execution uuid is in the store: every pipeline, pulled in one request."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=600) as client:
        response = client.post("/mlmd_pull", json={})
        response.raise_for_status()
    found: Counter = Counter()
    for pipeline in response.json()["Pipeline"]:
        for stage in pipeline["stages"]:
            for run in stage["executions"]:
                found.update(u for u in str(run["properties"].get("Execution_uuid", "")).split(",") if u)
    return found


def summarise(ms: List[float]) -> Dict[str, Any]:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}


def run_load(server: MetadataServer, pg: Optional[PostgresServer], args: argparse.Namespace) -> Dict[str, Any]:
    """Seed the server, then the three phases: every push and read as measured, the records lost, the CPU used."""
    routes = seed(server.url)
    quiet_start = time.time() + 3  # the clients fork and connect before it
    load_start = quiet_start + args.quiet_seconds
    load_end = load_start + args.seconds
    after_end = load_end + args.quiet_seconds
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(args.pushers + args.readers, mp_context=context) as pool:
        readers = [pool.submit(reader, server.url, i, routes, quiet_start, after_end) for i in range(args.readers)]
        pushers = [pool.submit(pusher, server.url, i, load_start, load_end) for i in range(args.pushers)]
        _sleep_until(load_start)
        servers = {"server": server.proc.pid, **({"postgresql": pg.proc.pid} if pg else {})}
        roots = {"clients": [c.pid for c in psutil.Process().children() if c.pid not in servers.values()],
                 **{name: [pid] for name, pid in servers.items()}}
        cpu_before = {name: sum(map(tree_cpu, pids)) for name, pids in roots.items()}
        _sleep_until(load_end)
        cpu = {name: sum(map(tree_cpu, pids)) - cpu_before[name] for name, pids in roots.items()}
        reads = [r for f in readers for r in f.result()]
        pushes = [p for f in pushers for p in f.result()]

    found = stored_uuids(server.url)
    ok = [uid for _, uid, status, _ in pushes if status == 200]
    phase = lambda began: "quiet" if began < load_start else "load" if began < load_end else "after"  # noqa: E731
    return {"pushes": pushes,
            "reads": [(label, phase(began), seconds, status) for label, began, seconds, status in reads],
            "lost": sum(1 for uid in ok if found[uid] == 0), "duplicated": sum(1 for uid in ok if found[uid] > 1),
            "failed_but_stored": sum(1 for _, uid, status, _ in pushes if status != 200 and found[uid]), "cpu": cpu}


def summary(runs: List[Dict[str, Any]], seconds: int) -> Dict[str, Any]:
    """The figures of one store and code over its rounds (``run_load``'s answers), their samples pooled."""
    pushes = [p for run in runs for p in run["pushes"]]
    reads = [r for run in runs for r in run["reads"]]
    ok = sum(1 for *_, status, _ in pushes if status == 200)
    failed = Counter(str(status) for *_, status, _ in pushes if status != 200)
    by_route: Dict[str, Dict[str, List[float]]] = {}
    for label, phase, elapsed, status in reads:
        if status == 200:
            by_route.setdefault(label, {p: [] for p in PHASES})[phase].append(elapsed * 1000)
    overall = {p: [ms for times in by_route.values() for ms in times[p]] for p in PHASES}
    statuses = [status for *_, status, _ in pushes] + [status for *_, status in reads]
    return {
        "rounds": len(runs),
        "pushes": {"ok": ok, "failed": sum(failed.values()), "failed_by_status": dict(failed),
                   "per_second": ok / (seconds * len(runs)),
                   "new_pipelines": sum(1 for pipeline, *_ in pushes if pipeline != GROWING),
                   "latency": summarise([elapsed * 1000 for *_, elapsed in pushes])},
        **{key: sum(run[key] for run in runs) for key in ("lost", "duplicated", "failed_but_stored")},
        "http_5xx": sum(1 for s in statuses if isinstance(s, int) and s >= 500),
        "read_errors": dict(Counter(f"{label}: {status}" for label, _, _, status in reads if status != 200)),
        "reads": {label: {p: summarise(times[p]) for p in PHASES} for label, times in by_route.items()},
        "reads_overall": {p: summarise(overall[p]) for p in PHASES},
        "cpu_seconds_during_load": {name: sum(run["cpu"][name] for run in runs) / len(runs) for name in runs[0]["cpu"]},
    }


@contextmanager
def code_from(checkout: Optional[Path]) -> Iterator[None]:
    """Servers started inside the block run the ``cmf_core`` of ``checkout`` (None: this tree's): it goes first
    on their path, and the current directory is left off it (``PYTHONSAFEPATH``)."""
    if checkout is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ.update(PYTHONPATH=str(checkout), PYTHONSAFEPATH="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_run(work: Path, store: str, checkout: Optional[Path], pg: Optional[PostgresServer], args: argparse.Namespace,
            name: str) -> Dict[str, Any]:
    """A new server for ``store`` (its database ``name``), running the code of ``checkout``, under the load."""
    extra = ["--workers", str(args.workers)] if args.workers > 1 else []
    server = MetadataServer(work / name, tokens=[TOKEN], postgres=pg if store == "postgresql" else None,
                            postgres_db=name, extra_args=extra)
    try:
        with code_from(checkout):
            server.start()
        time.sleep(2 + args.workers)  # the store processes start in the background: not part of the load
        return run_load(server, pg if store == "postgresql" else None, args)
    finally:
        server.stop()


# -- the report ---------------------------------------------------------------------------------------

def _ms(entry: Dict[str, Any], key: str) -> str:
    return f"{entry[key]:.0f}" if entry.get("n") else "-"


def report(run: Dict[str, Any], args: argparse.Namespace) -> None:
    p = run["pushes"]
    failed = ", ".join(f"{k}: {v}" for k, v in p["failed_by_status"].items()) or "none"
    rounds = f" x {run['rounds']} rounds" if run["rounds"] > 1 else ""
    print(f"\n{run['store']}, {run['code']}: {args.pushers} pushers, {args.readers} readers, {args.seconds} s{rounds}, "
          f"{args.workers} server process{'es' if args.workers > 1 else ''}")
    print(f"  pushes ok {p['ok']:,} ({p['per_second']:.1f}/s, {p['new_pipelines']:,} of them new pipelines; "
          f"p50 {_ms(p['latency'], 'p50_ms')} ms, p95 {_ms(p['latency'], 'p95_ms')} ms), failed {p['failed']} "
          f"({failed}); lost {run['lost']}, duplicated {run['duplicated']}, failed but stored "
          f"{run['failed_but_stored']}; 5xx answers {run['http_5xx']}")
    if run["read_errors"]:
        print(f"  reads that failed: {run['read_errors']}")
    print(f"  {'read (ms)':<30}{'quiet p95':>10}{'n':>7}{'load p50':>10}{'p95':>7}{'max':>7}{'p95 ratio':>11}"
          f"{'after p95':>11}")
    for label, phases in [*run["reads"].items(), ("overall", run["reads_overall"])]:
        quiet, load, after = (phases[ph] for ph in PHASES)
        ratio = f"{load['p95_ms'] / quiet['p95_ms']:.2f}x" if load.get("n") and quiet.get("n") else "-"
        print(f"  {label:<30}{_ms(quiet, 'p95_ms'):>10}{load.get('n', 0):>7}{_ms(load, 'p50_ms'):>10}"
              f"{_ms(load, 'p95_ms'):>7}{_ms(load, 'max_ms'):>7}{ratio:>11}{_ms(after, 'p95_ms'):>11}")
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_seconds_during_load"].items())
    print(f"  CPU seconds during the load{' (mean of the rounds)' if rounds else ''}: {cpu} (of "
          f"{args.seconds * (os.cpu_count() or 1)} on {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long the pushers push")
    parser.add_argument("--quiet-seconds", type=int, default=15, help="the readers alone, before and after")
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--workers", type=int, default=1, help="server processes (cmf server --workers)")
    parser.add_argument("--pushers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="also run each store with the server's code from this checkout (the baseline)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each store and code, alternating which goes first; their samples pooled")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not set(stores) <= {"sqlite", "postgresql"} or not stores:
        parser.error("--stores is a comma-separated list of sqlite and postgresql")
    codes: List[Tuple[str, Optional[Path]]] = [("this tree", None)]
    if args.compare_with:
        checkout = args.compare_with.resolve()
        if not (checkout / "cmf_core" / "server").is_dir():
            parser.error(f"--compare-with {checkout}: no cmf_core/server there")
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        codes.insert(0, (f"baseline {head or checkout}", checkout))
    load_before, code_before = os.getloadavg(), code_version()
    print(f"code at {code_before}; {args.pushers} pushers, {args.readers} readers, {args.seconds} s per store")

    measured: Dict[Tuple[str, str], List[Dict[str, Any]]] = {(s, c): [] for s in stores for c, _ in codes}
    with tempfile.TemporaryDirectory(prefix="cmf-bench-load-") as tmp:
        work = Path(tmp)
        pg = PostgresServer(work) if "postgresql" in stores else None
        try:
            if pg:
                pg.start()
            for round_no in range(args.rounds):
                for store in stores:
                    for n, (code, checkout) in enumerate(codes[::-1] if round_no % 2 else codes):
                        print(f"  round {round_no + 1}, {store}, {code}: {args.quiet_seconds} s quiet, "
                              f"{args.seconds} s load, {args.quiet_seconds} s after", flush=True)
                        measured[store, code].append(one_run(work, store, checkout, pg, args,
                                                             f"{store}_{round_no}_{n}"))
        finally:
            if pg:
                pg.stop()

    runs = [{"store": store, "code": code, **summary(found, args.seconds)} for (store, code), found in measured.items()]
    for run in runs:
        report(run, args)
    load_after, code_after = os.getloadavg(), code_version()
    if code_after.partition(" ")[2] != code_before.partition(" ")[2]:
        print(f"\nWARNING: cmf_core changed during the run, from {code_before} to {code_after}")
    print(f"\nload average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
          f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} ({os.cpu_count()} CPUs)")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "load.json").write_text(json.dumps({
        "seconds": args.seconds, "quiet_seconds": args.quiet_seconds, "rounds": args.rounds, "pushers": args.pushers,
        "readers": args.readers, "workers": args.workers, "load_average_before": load_before,
        "load_average_after": load_after, "code_before": code_before, "code_after": code_after, "runs": runs},
        indent=2))
    print(f"written to {results / 'load.json'}")


if __name__ == "__main__":
    main()
