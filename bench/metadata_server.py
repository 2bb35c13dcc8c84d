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
5. The client's export, what ``cmf metadata push`` serialises (``CmfQuery(mlmd).dumptojson(pipeline)``), of
   the pipeline plus a Metrics artifact per execution, read with cmf's own store against ml-metadata
   (``CMF_METADATA_STORE=ml-metadata``, through cmf's adapter), alternating, median of ``--rounds``
   (target < 0.3 s on cmf's store), each in a process of its own; all must give the same export.
   ``--compare-with DIR`` adds the code in DIR, e.g. the commit before issue 24 (``git archive COMMIT
   cmf_core cmflib | tar -x -C DIR``).  Section 1's full re-export push is timed with each client store too.

The pipeline is generated as export JSON directly (10 stages x 100 executions; each execution reads
5 artifacts of the previous one and writes 10 datasets).  Results go to bench/results/metadata_server.json.

    .venv/bin/python bench/metadata_server.py [--rounds 3] [--quick] [--parts e2e,merge,throughput,growth,export]
                                              [--compare-with DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmf_core.metadata import ml_metadata_store  # noqa: E402
from cmf_core.metadata import store as records  # noqa: E402
from cmf_core.metadata.merge import merge_pipeline  # noqa: E402
from cmf_core.metadata.query import CmfQuery  # noqa: E402
from cmf_core.server.client import MetadataClient, pull_metadata, push_metadata  # noqa: E402
from cmf_core.server.store import PostgresConfig, ServerStore  # noqa: E402
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer  # noqa: E402

PIPELINE = "bench"
#: The client's two ways of reading an mlmd file: the value of CMF_METADATA_STORE (None: unset, cmf's store).
CLIENT_STORES = {"cmf's store": None, "ml-metadata": "ml-metadata"}


def _artifact(pipeline: str, name: str) -> Dict:
    md5 = hashlib.md5(name.encode()).hexdigest()
    return {"name": f"{name}:{md5}", "type": "Dataset", "uri": md5,
            "properties": {"git_repo": "/repo.git", "Commit": md5, "url": f"{pipeline}:/store/files/md5/{md5[:2]}/{md5[2:]}"},
            "custom_properties": {"rows": 100, "source": "bench"}}


def _metrics(name: str, n: int) -> Dict:
    """A Metrics artifact as the original's ``log_execution_metrics`` writes it: the values as custom properties."""
    md5 = hashlib.md5(name.encode()).hexdigest()
    return {"name": f"{name}:{md5}", "type": "Metrics", "uri": md5, "properties": {"metrics_name": name},
            "custom_properties": {"accuracy": 0.5 + n / 4000, "loss": 1.0 / (n + 1), "epoch": n % 10}}


def _execution(pipeline: str, stage: str, inputs: List[Dict], outputs: List[Dict], n: int) -> Dict:
    return {"type": stage.split("/")[1], "name": "", "custom_properties": {"seed": n, "lr": 0.01},
            "properties": {"Execution_uuid": str(uuid.uuid4()), "Context_Type": stage, "Context_ID": 2,
                           "Execution": "['train.py', '--seed', '%d']" % n, "Execution_type_name": stage,
                           "Pipeline_Type": pipeline, "Pipeline_id": 1, "Git_Repo": "/repo.git",
                           "Git_Start_Commit": "0" * 40, "Git_End_Commit": "1" * 40},
            "events": [{"type": 3, "artifact": a} for a in inputs] + [{"type": 4, "artifact": a} for a in outputs]}


def generate(executions: int, artifacts: int, stages: int = 10, inputs: int = 5, metrics: bool = False) -> Dict:
    """The export of a pipeline with ``executions`` executions writing ``artifacts`` datasets in all, and with
    ``metrics`` a Metrics artifact each too."""
    per = max(1, artifacts // executions)
    previous: List[Dict] = []
    out, n = [], 0
    for s in range(stages):
        stage = f"{PIPELINE}/stage{s}"
        runs = []
        for _ in range(executions // stages):
            outputs = [_artifact(PIPELINE, f"data/{stage}/{n}/part{k}.csv") for k in range(per)]
            extra = [_metrics(f"{stage}/metrics_{n}", n)] if metrics else []
            runs.append(_execution(PIPELINE, stage, previous[:inputs], outputs + extra, n))
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


@contextmanager
def client_store(name: str) -> Iterator[None]:
    """Let this process read mlmd files with the client store ``name`` of CLIENT_STORES for the block (only around
    client calls: a server started meanwhile would inherit it)."""
    saved = os.environ.pop(records.STORE_ENV, None)
    if CLIENT_STORES[name]:
        os.environ[records.STORE_ENV] = CLIENT_STORES[name]
    try:
        yield
    finally:
        os.environ.pop(records.STORE_ENV, None)
        if saved is not None:
            os.environ[records.STORE_ENV] = saved


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
            stores = list(CLIENT_STORES) if round_no % 2 == 0 else list(reversed(CLIENT_STORES))
            for name in stores:  # the full re-export, read with each client store
                add_execution(client_mlmd, f"full{round_no}-{name[:3]}")
                with client_store(name):
                    result[f"incr-full, {name}"] = timed(lambda: push_metadata(client, PIPELINE, str(client_mlmd)))
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
            mlmd = (ml_metadata_store.open_postgres(config.host, config.port, config.user, config.dbname) if pg
                    else ml_metadata_store.open_file(work / "mlmd.mlmd", create=True))

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


#: Times one export as ``cmf metadata push`` makes it, with the code in sys.argv[4] if given: a first, untimed
#: (imports, the file into the page cache), then the one timed; writes the export to sys.argv[3].
EXPORT_SCRIPT = """\
import sys, time
sys.path[:0] = sys.argv[4:]
from cmf_core.metadata.query import CmfQuery

CmfQuery(sys.argv[1]).dumptojson(sys.argv[2])
started = time.perf_counter()
text = CmfQuery(sys.argv[1]).dumptojson(sys.argv[2])
print(time.perf_counter() - started)
open(sys.argv[3], "w").write(text)
"""


def exports(work: Path, executions: int, artifacts: int, rounds: int,
            compare_with: Optional[Path]) -> Dict[str, Dict]:
    """Seconds of ``CmfQuery(mlmd).dumptojson(PIPELINE)`` (what a push serialises) of the pipeline with metrics,
    read with each client store, and with the code in ``compare_with``; a process each, alternating.  Stops if
    an export differs from cmf's store's (doubles compared to 15 significant digits: ml-metadata reads a double
    back with 15, cmf's store with all 17)."""
    mlmd = work / "export.mlmd"
    merge_pipeline(records.open_store(mlmd), json.dumps(generate(executions, artifacts, metrics=True)))
    contenders = {name: (value, []) for name, value in CLIENT_STORES.items()}
    if compare_with:
        contenders[compare_with.name] = (None, [str(compare_with)])
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    exported: Dict[str, Dict] = {}
    for r in range(rounds):
        for name in (list(contenders) if r % 2 == 0 else reversed(contenders)):
            value, code = contenders[name]
            env = {k: v for k, v in os.environ.items() if k != records.STORE_ENV}
            env.update({records.STORE_ENV: value} if value else {})
            out = work / "export.json"
            done = subprocess.run([sys.executable, "-I", "-c", EXPORT_SCRIPT, str(mlmd), PIPELINE, str(out), *code],
                                  env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"export with {name} failed:\n{done.stderr[-3000:]}")
            times[name].append(float(done.stdout))
            exported[name] = json.loads(out.read_text(), parse_float=lambda digits: float(f"{float(digits):.15g}"))
    for name, export in exported.items():
        if export != exported["cmf's store"]:
            sys.exit(f"the export read with {name} differs from the one read with cmf's store")
    base = median(times["ml-metadata"])
    return {name: {"median_s": median(t), "ratio": median(t) / base, "rounds": t} for name, t in times.items()}


PARTS = ("e2e", "merge", "throughput", "growth", "export")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of every size, one round: a smoke run")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which sections to run (default {','.join(PARTS)})")
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="the export also with the cmf_core in DIR (another commit's), by DIR's name")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    scale = 10 if args.quick else 1
    rounds = 1 if args.quick else args.rounds

    export = generate(1000 // scale, 10000 // scale)
    payload = json.dumps(export)
    print(f"pipeline: {1000 // scale} executions, {10000 // scale} artifacts, export {len(payload) / 1e6:.1f} MB")
    report: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="cmf-bench-server-") as tmp, PostgresServer(Path(tmp)) as pg:
        work = Path(tmp)
        stores = {"SQLite": None, "PostgreSQL": pg}
        if "e2e" in parts:
            e2e = {name: [end_to_end(work, payload, store, r) for r in range(rounds)] for name, store in stores.items()}
            report["end to end (median s)"] = {name: {k: median([r[k] for r in runs]) for k in runs[0]}
                                               for name, runs in e2e.items()}
        if "merge" in parts:
            report["merge in-process (s)"] = {name: merges(work, payload, store) for name, store in stores.items()}
        if "throughput" in parts:
            pipelines = [renamed(generate(100 // scale, 1000 // scale), f"p{n}") for n in range(16)]
            report["throughput on PostgreSQL (pushes/s)"] = {
                f"{n} worker{'s' if n > 1 else ''}": throughput(work, pg, n, pipelines) for n in (1, 2, 4)}
        if "growth" in parts:
            big = json.dumps(generate(10000 // scale, 20000 // scale))
            report["one-execution push (median s)"] = {name: growth(work, store, big, 5)
                                                       for name, store in stores.items()}
        if "export" in parts:
            report["client export of the pipeline with metrics (s)"] = exports(
                work, 1000 // scale, 10000 // scale, max(rounds, 3), args.compare_with)

    for section, rows in report.items():
        print(f"\n{section}")
        for name, values in rows.items():
            print(f"  {name:<12}" + ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != "rounds")
                  if isinstance(values, dict) else f"  {name:<12}{values:.2f}")
    targets = {"push": 10.0, "pull": 10.0, "incr-full, cmf's store": 1.0, "incr-e": 0.5}
    for name, values in report.get("end to end (median s)", {}).items():
        misses = [k for k, target in targets.items() if values[k] >= target]
        print(f"targets on {name}: {'all met' if not misses else 'MISSED ' + ', '.join(misses)}")
        ratio = values["incr-full, cmf's store"] / values["incr-full, ml-metadata"]
        print(f"  full re-export push, cmf's store / ml-metadata on the client: {ratio:.2f}x")
    for name, values in report.get("merge in-process (s)", {}).items():
        print(f"{name}: SQL store / ML Metadata API, into an empty store: "
              f"{values['sql: empty'] / values['mlmd: empty']:.2f}x")
    tp = report.get("throughput on PostgreSQL (pushes/s)")
    if tp:
        print("throughput ratio to 1 worker: " + ", ".join(f"{k} {v / tp['1 worker']:.2f}x" for k, v in tp.items()))
    for name, values in report.get("one-execution push (median s)", {}).items():
        print(f"{name}: one-execution push into 10,000 executions / into an empty store: "
              f"{values['10,000 executions'] / values['empty']:.2f}x")
    export_times = report.get("client export of the pipeline with metrics (s)")
    if export_times:
        ours = export_times["cmf's store"]
        print(f"client export: cmf's store {ours['median_s']:.3f} s, {ours['ratio']:.2f}x ml-metadata's; "
              f"target < 0.3 s: {'met' if ours['median_s'] < 0.3 else 'MISSED'}")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "metadata_server.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
