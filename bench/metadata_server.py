"""The metadata server under a large pipeline (1,000 executions, 10,000 artifacts), on SQLite and PostgreSQL
side by side in one run.

1. End to end, client -> a real ``cmf server`` process on loopback, per store (median of ``--rounds``):

     push        push_metadata of the whole pipeline into an empty store        (target < 10 s)
     pull        pull_metadata of it into an empty local mlmd                   (target < 10 s)
     incr-full   one new execution, pushed as the full re-export (no -e)        (target < 1 s)
     incr-e      one new execution, pushed with -e <its uuid>                   (target < 0.5 s)

2. The merge in-process, on the server's SQL store (one transaction) against the previous code path,
   ML Metadata's own API (one transaction per call), into an empty store, again (nothing new) and one
   execution (-e).
3. Push throughput with 1, 2 and 4 server processes (``--workers``) on PostgreSQL: 8 clients push
   16 pipelines of 100 executions / 1,000 artifacts at once; pushes per second, and the ratio to 1.
4. Growth: a one-execution push (-e) into a store that holds 10,000 executions, against the same push
   into an empty store, per store type.  It must not grow with the store.

The pipeline is generated as export JSON directly (10 stages x 100 executions; each execution reads
5 artifacts of the previous one and writes 10 datasets).  Results go to bench/results/metadata_server.json.

    .venv/bin/python bench/metadata_server.py [--rounds 3] [--quick]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_metadata.metadata_store import metadata_store  # noqa: E402

from cmf_core.metadata import store as records  # noqa: E402
from cmf_core.metadata.merge import merge_pipeline  # noqa: E402
from cmf_core.metadata.query import CmfQuery  # noqa: E402
from cmf_core.server.client import MetadataClient, pull_metadata, push_metadata  # noqa: E402
from cmf_core.server.store import PostgresConfig, ServerStore  # noqa: E402
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


def median(values: List[float]) -> float:
    return statistics.median(values)


def renamed(export: Dict, pipeline: str) -> str:
    """The export as the pipeline ``pipeline``, with artifact names of its own."""
    return json.dumps(export).replace(f'"{PIPELINE}', f'"{pipeline}').replace('"data/', f'"{pipeline}/')


def server(work: Path, name: str, pg: Optional[PostgresServer], *args: str) -> MetadataServer:
    srv = MetadataServer(work / name, postgres=pg, postgres_db=name, extra_args=args)
    srv.start()
    return srv


def end_to_end(work: Path, payload: str, pg: Optional[PostgresServer], round_no: int) -> Dict[str, float]:
    """A fresh server: push, pull, and the two incremental pushes; seconds for each."""
    kind = "pg" if pg else "sqlite"
    client_mlmd = work / f"client-{kind}-{round_no}.mlmd"
    merge_pipeline(records.open_store(client_mlmd), payload)
    srv = server(work, f"e2e_{kind}_{round_no}", pg)
    try:
        with MetadataClient(srv.url, retries=0) as client:
            result: Dict[str, float] = {}
            result["push"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd)))
            pulled = work / f"pulled-{kind}-{round_no}.mlmd"
            result["pull"] = timed(lambda: pull_metadata(client, PIPELINE, str(pulled)))
            add_execution(client_mlmd, f"full{round_no}")
            result["incr-full"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd)))
            new = add_execution(client_mlmd, f"e{round_no}")
            result["incr-e"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd), execution_uuid=new))
            return result
    finally:
        srv.stop()


def merges(work: Path, payload: str, pg: Optional[PostgresServer]) -> Dict[str, float]:
    """In-process: the merge on the server's SQL store and on ML Metadata's API (the previous code path)."""
    export = json.loads(payload)
    stage = export["Pipeline"][0]["stages"][-1]
    one = stage["executions"][-1]["properties"]["Execution_uuid"]
    small = json.dumps({"Pipeline": [{**export["Pipeline"][0], "stages": [
        {**stage, "executions": stage["executions"][-1:]}]}]})  # what a client sends with -e
    result = {}
    for path in ("sql", "mlmd"):
        config = PostgresConfig(pg.host, pg.port, pg.USER, f"merge_{path}") if pg else None
        if path == "sql":
            store = ServerStore(postgres=config) if pg else ServerStore(sqlite=work / "merge-sql.mlmd")
            merge: Callable[..., object] = store.push
        else:
            mlmd = metadata_store.MetadataStore(config.connection()) if pg else records.open_store(work / "mlmd.mlmd")

            def merge(text: str, name: Optional[str] = None, exec_uuid: Optional[str] = None) -> object:
                return merge_pipeline(mlmd, text, exec_uuid=exec_uuid)
        result[f"{path}: empty"] = timed(lambda: merge(payload))
        result[f"{path}: again"] = timed(lambda: merge(payload))
        result[f"{path}: one (-e)"] = timed(lambda: merge(small, PIPELINE, one))
    return result


def throughput(work: Path, pg: PostgresServer, workers: int, pipelines: List[str]) -> float:
    """Pushes per second of 8 clients pushing ``pipelines`` at once into ``cmf server --workers N``."""
    srv = server(work, f"tp_{workers}", pg, "--workers", str(workers))
    time.sleep(2 + workers)  # the workers' store processes start in the background: not part of the pushes
    try:
        todo = list(enumerate(pipelines))
        lock = threading.Lock()

        def client() -> None:
            with MetadataClient(srv.url, retries=0) as c:
                while True:
                    with lock:
                        if not todo:
                            return
                        n, text = todo.pop()
                    c.push(f"p{n}", text)
        threads = [threading.Thread(target=client) for _ in range(8)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(pipelines) / (time.perf_counter() - started)
    finally:
        srv.stop()


def growth(work: Path, pg: Optional[PostgresServer], big: str, rounds: int) -> Dict[str, float]:
    """Median seconds of a one-execution push (-e) into an empty store and into one holding ``big``."""
    kind = "pg" if pg else "sqlite"
    result = {}
    for label, preload in (("empty", None), ("10,000 executions", big)):
        srv = server(work, f"growth_{kind}_{len(label)}", pg)
        try:
            with MetadataClient(srv.url, retries=0) as client:
                if preload:
                    client.push(PIPELINE, preload)
                times = []
                for r in range(rounds + 1):
                    execution = _execution(PIPELINE, f"{PIPELINE}/stage9", [_artifact(PIPELINE, "data/in.csv")],
                                           [_artifact(PIPELINE, f"data/one/{r}.csv")], r)
                    one = json.dumps({"Pipeline": [{"name": PIPELINE, "stages": [
                        {"name": f"{PIPELINE}/stage9", "executions": [execution]}]}]})
                    uid = execution["properties"]["Execution_uuid"]
                    times.append(timed(lambda: client.push(PIPELINE, one, uid)))
                result[label] = median(times[1:])  # the first warms the server's processes up
        finally:
            srv.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of every size, one round: a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rounds = 1 if args.quick else args.rounds

    export = generate(1000 // scale, 10000 // scale)
    payload = json.dumps(export)
    print(f"pipeline: {1000 // scale} executions, {10000 // scale} artifacts, export {len(payload) / 1e6:.1f} MB")
    report: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="cmf-bench-server-") as tmp, PostgresServer(Path(tmp)) as pg:
        work = Path(tmp)
        stores = {"SQLite": None, "PostgreSQL": pg}
        e2e = {name: [end_to_end(work, payload, store, r) for r in range(rounds)] for name, store in stores.items()}
        report["end to end (median s)"] = {name: {k: median([r[k] for r in runs]) for k in runs[0]}
                                           for name, runs in e2e.items()}
        report["merge in-process (s)"] = {name: merges(work, payload, store) for name, store in stores.items()}
        pipelines = [renamed(generate(100 // scale, 1000 // scale), f"p{n}") for n in range(16)]
        report["throughput on PostgreSQL (pushes/s)"] = {
            f"{n} worker{'s' if n > 1 else ''}": throughput(work, pg, n, pipelines) for n in (1, 2, 4)}
        big = json.dumps(generate(10000 // scale, 20000 // scale))
        report["one-execution push (median s)"] = {name: growth(work, store, big, 5) for name, store in stores.items()}

    targets = {"push": 10.0, "pull": 10.0, "incr-full": 1.0, "incr-e": 0.5}
    for section, rows in report.items():
        print(f"\n{section}")
        for name, values in rows.items():
            print(f"  {name:<12}" + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                  if isinstance(values, dict) else f"  {name:<12}{values:.2f}")
    for name, values in report["end to end (median s)"].items():
        misses = [k for k, target in targets.items() if values[k] >= target]
        print(f"targets on {name}: {'all met' if not misses else 'MISSED ' + ', '.join(misses)}")
    merge = report["merge in-process (s)"]
    for name, values in merge.items():
        print(f"{name}: SQL store / ML Metadata API, into an empty store: "
              f"{values['sql: empty'] / values['mlmd: empty']:.2f}x")
    tp = report["throughput on PostgreSQL (pushes/s)"]
    print("throughput ratio to 1 worker: " + ", ".join(f"{k} {v / tp['1 worker']:.2f}x" for k, v in tp.items()))
    for name, values in report["one-execution push (median s)"].items():
        print(f"{name}: one-execution push into 10,000 executions / into an empty store: "
              f"{values['10,000 executions'] / values['empty']:.2f}x")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "metadata_server.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
