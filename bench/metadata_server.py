"""The metadata server under a large pipeline: 1,000 executions and 10,000 artifacts.

Measured end to end, client -> real ``cmf server`` process on loopback -> merge:

  push        push_metadata of the whole pipeline into an empty server store    (target < 10 s)
  pull        pull_metadata of it into an empty local mlmd                      (target < 10 s)
  incr-full   one new execution, pushed as the full re-export (no -e)           (target < 1 s)
  incr-e      the same kind of new execution, pushed with -e <its uuid>         (target < 1 s)

plus, in this process, the parts they are made of: the export (dumptojson) of the
pipeline, merge_pipeline into an empty store, and merge_pipeline of the same export
again (nothing new) and of one execution (-e), which are what the server spends.
The pipeline is generated as export JSON directly (10 stages x 100 executions; each
execution reads 5 artifacts of the previous one and writes 10 datasets) and merged
into the client's mlmd before timing starts.

    .venv/bin/python bench/metadata_server.py [--rounds 3] [--executions 1000] [--artifacts 10000] [--postgres]
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmf_core.metadata import store as records  # noqa: E402
from cmf_core.metadata.merge import merge_pipeline  # noqa: E402
from cmf_core.metadata.query import CmfQuery  # noqa: E402
from cmf_core.server.client import MetadataClient, pull_metadata, push_metadata  # noqa: E402
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer  # noqa: E402

PIPELINE = "bench"


def _artifact(pipeline: str, name: str) -> Dict:
    md5 = hashlib.md5(name.encode()).hexdigest()
    return {"name": f"{name}:{md5}", "type": "Dataset", "uri": md5,
            "properties": {"git_repo": "/repo.git", "Commit": md5, "url": f"{pipeline}:/store/files/md5/{md5[:2]}/{md5[2:]}"},
            "custom_properties": {"rows": 100, "source": "bench"}}


def _execution(pipeline: str, stage: str, inputs: List[Dict], outputs: List[Dict], n: int) -> Dict:
    return {"type": stage.split("/")[1], "name": "", "custom_properties": {"seed": n, "lr": 0.01},
            "properties": {"Execution_uuid": str(uuid.uuid4()), "Context_Type": stage, "Context_ID": 2,
                           "Execution": "['train.py', '--seed', '%d']" % n, "Execution_type_name": stage,
                           "Pipeline_Type": pipeline, "Pipeline_id": 1, "Git_Repo": "/repo.git",
                           "Git_Start_Commit": "0" * 40, "Git_End_Commit": "1" * 40},
            "events": [{"type": 3, "artifact": a} for a in inputs] + [{"type": 4, "artifact": a} for a in outputs]}


def generate(executions: int, artifacts: int, stages: int = 10, inputs: int = 5) -> Dict:
    """The export of a pipeline with ``executions`` executions writing ``artifacts`` datasets in all."""
    per = max(1, artifacts // executions)
    previous: List[Dict] = []
    out, n = [], 0
    for s in range(stages):
        stage = f"{PIPELINE}/stage{s}"
        runs = []
        for _ in range(executions // stages):
            outputs = [_artifact(PIPELINE, f"data/{stage}/{n}/part{k}.csv") for k in range(per)]
            runs.append(_execution(PIPELINE, stage, previous[:inputs], outputs, n))
            previous, n = outputs, n + 1
        out.append({"name": stage, "properties": {"Pipeline_Stage": stage}, "custom_properties": {}, "executions": runs})
    return {"Pipeline": [{"name": PIPELINE, "properties": {"Pipeline": PIPELINE}, "custom_properties": {},
                          "stages": out}]}


def add_execution(mlmd: Path, tag: str) -> str:
    """Record one new execution (reading 5 existing datasets, writing one new) in ``mlmd``; its uuid."""
    export = json.loads(CmfQuery(str(mlmd)).dumptojson(PIPELINE, None))
    stage = export["Pipeline"][0]["stages"][-1]
    inputs = [ev["artifact"] for ev in stage["executions"][-1]["events"] if ev["type"] == 4][:5]
    new = _execution(PIPELINE, stage["name"], inputs, [_artifact(PIPELINE, f"data/new/{tag}.csv")], 0)
    stage["executions"] = [new]
    merge_pipeline(records.open_store(mlmd), export)
    return new["properties"]["Execution_uuid"]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def profile_top(fn: Callable[[], object], limit: int = 6) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    lines = [line for line in out.getvalue().splitlines() if line.strip() and ("{" in line or ".py:" in line)]
    return "\n".join(lines[:limit])


def one_round(work: Path, payload: str, postgres: bool, round_no: int) -> Dict[str, float]:
    """Start a fresh server, then push, pull, and the two incremental pushes; seconds for each."""
    client_mlmd = work / f"client-{round_no}.mlmd"
    merge_pipeline(records.open_store(client_mlmd), payload)
    pg = PostgresServer(work) if postgres else None
    if pg:
        pg.start()
    srv = MetadataServer(work / f"server-{round_no}", postgres=pg, postgres_db=f"bench{round_no}")
    srv.start()
    try:
        with MetadataClient(srv.url, retries=0) as client:
            result: Dict[str, float] = {}
            result["push"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd)))
            pulled = work / f"pulled-{round_no}.mlmd"
            result["pull"] = timed(lambda: pull_metadata(client, PIPELINE, str(pulled)))
            add_execution(client_mlmd, f"full{round_no}")
            result["incr-full"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd)))
            new = add_execution(client_mlmd, f"e{round_no}")
            result["incr-e"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd), execution_uuid=new))
            return result
    finally:
        srv.stop()
        if pg:
            pg.stop()


def parts(work: Path, payload: str) -> Dict[str, float]:
    """In-process: what the end-to-end numbers are made of."""
    store_file = work / "parts.mlmd"
    store = records.open_store(store_file)
    result = {"merge-empty": timed(lambda: merge_pipeline(store, payload))}
    result["dumptojson"] = timed(lambda: CmfQuery(str(store_file)).dumptojson(PIPELINE, None))
    result["merge-again"] = timed(lambda: merge_pipeline(store, payload))
    one = json.loads(payload)["Pipeline"][0]["stages"][-1]["executions"][-1]["properties"]["Execution_uuid"]
    small = CmfQuery(str(store_file)).dumptojson(PIPELINE, one)
    result["merge-one(-e)"] = timed(lambda: merge_pipeline(store, small, exec_uuid=one))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--artifacts", type=int, default=10000)
    parser.add_argument("--postgres", action="store_true", help="the server on PostgreSQL instead of SQLite")
    parser.add_argument("--profile", action="store_true", help="print where merge_pipeline spends its time")
    args = parser.parse_args()

    started = time.perf_counter()
    export = generate(args.executions, args.artifacts)
    payload = json.dumps(export)
    generated = time.perf_counter() - started
    executions = sum(len(s["executions"]) for s in export["Pipeline"][0]["stages"])
    artifacts = len({ev["artifact"]["name"] for s in export["Pipeline"][0]["stages"] for e in s["executions"]
                     for ev in e["events"]})
    print(f"pipeline: {executions} executions, {artifacts} artifacts, export {len(payload) / 1e6:.1f} MB "
          f"(generated in {generated:.2f} s); server store: {'PostgreSQL' if args.postgres else 'SQLite'}")

    rounds: List[Dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cmf-bench-server-") as tmp:
        work = Path(tmp)
        inner = parts(work, payload)
        for r in range(args.rounds):
            rounds.append(one_round(work, payload, args.postgres, r))
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1].items()), flush=True)
        if args.profile:
            store = records.open_store(work / "profile.mlmd")
            print("\nmerge_pipeline into an empty store, top functions by own time:")
            print(profile_top(lambda: merge_pipeline(store, payload)))
            print("\nmerge_pipeline of the same export again (nothing new):")
            print(profile_top(lambda: merge_pipeline(store, payload)))

    targets = {"push": 10.0, "pull": 10.0, "incr-full": 1.0, "incr-e": 1.0}
    print(f"\n{'measure':<14}{'median s':>10}{'min s':>9}{'target s':>10}  ok")
    summary = {}
    for key, target in targets.items():
        values = [r[key] for r in rounds]
        median = statistics.median(values)
        summary[key] = {"median": median, "min": min(values), "target": target, "ok": median < target}
        print(f"{key:<14}{median:>10.2f}{min(values):>9.2f}{target:>10.1f}  {'yes' if median < target else 'NO'}")
    print("\nin-process parts (one run):")
    for key, value in inner.items():
        print(f"  {key:<16}{value:>8.2f} s")

    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    name = "metadata_server_postgres.json" if args.postgres else "metadata_server.json"
    (results / name).write_text(json.dumps({"executions": executions, "artifacts": artifacts, "rounds": rounds,
                                            "summary": summary, "parts": inner}, indent=2))


if __name__ == "__main__":
    main()
