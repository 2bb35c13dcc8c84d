"""log_dataset ms/call next to the `dvc add` CLI that the original cmflib runs per call.

Shapes: N small files logged one by one, and one directory of M files.
The `dvc add` baseline runs on a twin workspace with the same data; per-file
`dvc add` is slow, so it runs on the first K files only (its median is what counts).

``--stores`` measures instead cmf's own ML Metadata store (issue 24) against ml-metadata's
(``CMF_METADATA_STORE=ml-metadata``): ``import cmflib.cmf``, ``Cmf(...)`` and ``--calls`` calls alternating
``create_execution`` and ``log_dataset`` of a new small file, in a fresh process and workspace
for each contender, the contenders alternating, ``--rounds`` rounds; medians.  ``--compare-with DIR``
adds the code of another commit, e.g. the one before issue 24 (``git archive COMMIT cmf_core cmflib |
tar -x -C DIR``), which always logged through ml-metadata.

    .venv/bin/python bench/log_dataset.py --stores [--calls 100] [--rounds 5] [--compare-with DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmf_core import api  # noqa: E402
from cmf_core.metadata.query import CmfQuery  # noqa: E402
from cmflib.cmf import Cmf  # noqa: E402


def workspace(root: Path, files: int, dir_files: int) -> Path:
    root.mkdir(parents=True)
    api.init("local", {"path": str(root.parent / f"{root.name}-store")}, git_remote_url="/dev/null", workspace=root)
    for i in range(files):
        (root / "small").mkdir(exist_ok=True)
        (root / "small" / f"f{i:04d}.csv").write_text(f"{i},{i * i}\n" * 32)
    big = root / "tree"
    for i in range(dir_files):
        sub = big / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"x{i:05d}.txt").write_text(f"sample {i}\n" * 8)
    return root


#: The process that ``--stores`` times, in a workspace with ``small/f0000.csv`` ...: ``import cmflib.cmf`` and
#: ``Cmf(...)`` (ml-metadata is imported in one or the other: the code before issue 24 imported it with cmflib.cmf,
#: CMF_METADATA_STORE=ml-metadata where the file is opened), then sys.argv[1] calls alternating create_execution
#: and log_dataset, with the code in sys.argv[2] if given.  A clock around the store's methods (the outermost
#: calls, and the start and end of each unit) tells the store's share of the calls' time from the rest (git,
#: DVC's files, the environment file).
STORES_SCRIPT = """\
import contextlib, json, sys, time
sys.path[:0] = sys.argv[2:]
started = time.perf_counter()
from cmflib.cmf import Cmf


class StoreClock:
    def __init__(self, store):
        self.seconds, self.depth = 0.0, 0
        inner = getattr(store, "_store", None)  # ml-metadata's, behind cmf's adapter
        names = {n for n in dir(store) + dir(inner) if n.startswith(("get_", "put_"))}
        for name in names:
            setattr(store, name, self.timed(getattr(store, name)))
        if hasattr(store, "unit"):
            store.unit = lambda unit=store.unit: self.timed_unit(unit())

    @contextlib.contextmanager
    def running(self):
        self.depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth:
                self.seconds += time.perf_counter() - started

    def timed(self, method):
        def call(*args, **kwargs):
            with self.running():
                return method(*args, **kwargs)
        return call

    @contextlib.contextmanager
    def timed_unit(self, unit):
        with self.running():
            entered = unit.__enter__()
        try:
            yield entered
        except BaseException:
            with self.running():
                if not unit.__exit__(*sys.exc_info()):
                    raise
        else:
            with self.running():
                unit.__exit__(None, None, None)


cmf = Cmf(filepath="mlmd", pipeline_name="bench")
cmf.create_context("stage")
opened = time.perf_counter()
clock = StoreClock(cmf.store)
calls = {"create_execution": [], "log_dataset": []}
for i in range(int(sys.argv[1]) // 2):
    before = time.perf_counter()
    cmf.create_execution("Bench", {"i": i})
    between = time.perf_counter()
    cmf.log_dataset(f"small/f{i:04d}.csv", "input")
    calls["create_execution"].append(between - before)
    calls["log_dataset"].append(time.perf_counter() - between)
done = time.perf_counter()
print(json.dumps({"total": done - started, "opened": opened - started, "store": clock.seconds, **calls}))
"""


@dataclass
class StoreContender:
    """A way to log for ``--stores``: the value of CMF_METADATA_STORE (None: unset), and another checkout's code
    (``--compare-with``) or this one's (None)."""

    name: str
    store_env: Optional[str] = None
    code: Optional[Path] = None


def stores_round(root: Path, contender: StoreContender, calls: int) -> Dict[str, Any]:
    """One contender's fresh workspace and process: its timings, after checking it logged every call."""
    ws = workspace(root, calls // 2, 0)
    env = {k: v for k, v in os.environ.items() if k != "CMF_METADATA_STORE"}
    if contender.store_env:
        env["CMF_METADATA_STORE"] = contender.store_env
    code = [str(contender.code)] if contender.code else []
    done = subprocess.run([sys.executable, "-I", "-c", STORES_SCRIPT, str(calls), *code], cwd=ws, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{contender.name}: the logging process failed:\n{done.stderr[-3000:]}")
    export = json.loads(CmfQuery(str(ws / "mlmd")).dumptojson("bench"))
    executions = [e for stage in export["Pipeline"][0]["stages"] for e in stage["executions"]]
    datasets = sum(1 for e in executions for event in e["events"] if event["artifact"]["type"] == "Dataset")
    if (len(executions), datasets) != (calls // 2, calls // 2):
        sys.exit(f"{contender.name}: logged {len(executions)} executions and {datasets} datasets, "
                 f"not {calls // 2} of each")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stores(calls: int, rounds: int, compare_with: Optional[Path]) -> Dict[str, Dict[str, float]]:
    """``--stores``: medians over the rounds of each contender's total, import and Cmf(...), ms per call, and ms
    per call in the store."""
    contenders = [StoreContender("cmf's store"), StoreContender("ml-metadata", "ml-metadata")]
    if compare_with:
        contenders.append(StoreContender(compare_with.name, code=compare_with))
    runs: Dict[str, List[Dict[str, Any]]] = {c.name: [] for c in contenders}
    with tempfile.TemporaryDirectory(prefix="cmf-bench-stores-") as tmp:
        for r in range(rounds):
            for n, contender in enumerate(contenders if r % 2 == 0 else reversed(contenders)):
                runs[contender.name].append(stores_round(Path(tmp) / f"{r}-{n}", contender, calls))
    rows = {}
    for name, results in runs.items():
        rows[name] = {"total_s": statistics.median(r["total"] for r in results),
                      "opened_ms": statistics.median(r["opened"] for r in results) * 1000,
                      **{f"{call}_ms": statistics.median(statistics.median(r[call]) for r in results) * 1000
                         for call in ("create_execution", "log_dataset")},
                      "store_ms_per_call": statistics.median(r["store"] for r in results) * 1000 / calls,
                      "totals_s": [r["total"] for r in results]}
    base = rows["ml-metadata"]["total_s"]
    print(f"import cmflib.cmf, Cmf(...) and {calls} calls (create_execution / log_dataset alternating), "
          f"fresh process each, median of {rounds}")
    print(f"{'contender':14} {'total s':>8} {'ratio':>6} {'import+Cmf ms':>14} {'create_execution ms':>20} "
          f"{'log_dataset ms':>15} {'ms/call':>8} {'in the store':>13}")
    for name, row in rows.items():
        row["ratio"], row["ms_per_call"] = row["total_s"] / base, (row["total_s"] * 1000 - row["opened_ms"]) / calls
        print(f"{name:14} {row['total_s']:8.3f} {row['ratio']:5.2f}x {row['opened_ms']:14.1f} "
              f"{row['create_execution_ms']:20.2f} {row['log_dataset_ms']:15.2f} {row['ms_per_call']:8.2f} "
              f"{row['store_ms_per_call']:13.2f}")
    ratio = rows["cmf's store"]["ratio"]
    print(f"target: cmf's store <= 0.5x the ml-metadata path: {'met' if ratio <= 0.5 else 'MISSED'} ({ratio:.2f}x)")
    return rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dir-files", type=int, default=2000)
    parser.add_argument("--dvc-files", type=int, default=20, help="how many small files the dvc add baseline adds")
    parser.add_argument("--stores", action="store_true",
                        help="cmf's own ML Metadata store against ml-metadata's (issue 24) instead")
    parser.add_argument("--calls", type=int, default=100, help="with --stores: calls per process")
    parser.add_argument("--rounds", type=int, default=5, help="with --stores: processes per store")
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="with --stores: also the cmf_core and cmflib in DIR (another commit's), by DIR's name")
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    for key, value in {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
                       "GIT_COMMITTER_EMAIL": "b@x"}.items():
        os.environ.setdefault(key, value)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    if args.stores:
        rows = stores(args.calls, args.rounds, args.compare_with)
        (out / "log_dataset-stores.json").write_text(json.dumps(rows, indent=2))
        return

    with tempfile.TemporaryDirectory() as tmp:
        ours = workspace(Path(tmp) / "ours", args.files, args.dir_files)
        theirs = workspace(Path(tmp) / "theirs", args.dvc_files, args.dir_files)
        cwd = os.getcwd()
        os.chdir(ours)
        try:
            cmf = Cmf(filepath="mlmd", pipeline_name="bench")
            cmf.create_context("stage")
            cmf.create_execution("Bench")
            small = [timed(lambda i=i: cmf.log_dataset(f"small/f{i:04d}.csv", "input")) for i in range(args.files)]
            tree = timed(lambda: cmf.log_dataset("tree", "output"))
        finally:
            os.chdir(cwd)
        dvc = os.path.join(os.path.dirname(sys.executable), "dvc")
        dvc_small = [timed(lambda i=i: subprocess.run([dvc, "add", "-q", f"small/f{i:04d}.csv"], cwd=theirs,
                                                      check=True)) for i in range(args.dvc_files)]
        dvc_tree = timed(lambda: subprocess.run([dvc, "add", "-q", "tree"], cwd=theirs, check=True))

    rows = {
        "small file, ms/call (median)": (statistics.median(small), statistics.median(dvc_small)),
        "small file, ms/call (p90)": (sorted(small)[int(len(small) * 0.9)], sorted(dvc_small)[int(len(dvc_small) * 0.9)]),
        f"{args.dir_files}-file directory, ms": (tree, dvc_tree),
    }
    print(f"{'shape':38} {'cmf log_dataset':>16} {'dvc add CLI':>12} {'speed-up':>9}")
    for name, (ours_ms, dvc_ms) in rows.items():
        print(f"{name:38} {ours_ms:16.1f} {dvc_ms:12.1f} {dvc_ms / ours_ms:8.1f}x")
    (out / "log_dataset.json").write_text(json.dumps(
        {name: {"cmf_ms": a, "dvc_add_ms": b, "speedup": b / a} for name, (a, b) in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
