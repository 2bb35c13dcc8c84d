"""cmf's C API (issue 26): what ``log_metric`` and ``commit_metrics`` cost from C, beside the same calls from Python.

The C library is built with CMake (``cmf_core/native``) and its ``cmf-c-bench`` run in a fresh cmf workspace:
``STEPS`` steps of three values (loss, accuracy, step), each formatted with ``snprintf`` and logged with
``cmf_try_log_metric`` in a tight loop, then one ``commit_metrics`` and ``cmf_finalize``.  Beside it, in the same
run and workspace, a Python process does the same with ``Cmf.log_metric`` and ``commit_metrics`` (values made with
the same formatting).  Each side is a fresh process per round, the two interleaved; medians of ``--rounds``.

  log_metric   calls per second and microseconds a call (C: buffered in this process; Python: a dict per step)
  commit       seconds of commit_metrics (C: the frame to the helper, parsed there, then the same Python work:
               the parquet file, its DVC entry, the Step_Metrics artifact)
  finalize     seconds of finalize (C: also the helper process's exit)
  init         seconds of cmf_init (C: starting the helper, which imports cmf) and of Python's imports and Cmf()

    .venv/bin/python bench/native.py [--steps 1000 10000 100000] [--rounds 3]

Results: bench/results/native.json.
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
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from cmf_core import api  # noqa: E402
from cmf_core.native import source_dir  # noqa: E402

PYTHON_SIDE = """
import json, sys, time
started = time.perf_counter()
from cmflib.cmf import Cmf
cmf = Cmf(filepath=sys.argv[1], pipeline_name="bench")
cmf.create_context("python")
cmf.create_execution("bench")
initialised = time.perf_counter()
for i in range(int(sys.argv[2])):
    cmf.log_metric("training", {"loss": float("%.6f" % (1.0 / (i + 1))),
                                "accuracy": float("%.6f" % (1.0 - 1.0 / (i + 2))), "step": i})
logged = time.perf_counter()
cmf.commit_metrics("training")
committed = time.perf_counter()
cmf.finalize()
finalized = time.perf_counter()
print(json.dumps({"init_s": initialised - started, "log_metric_s": logged - initialised,
                  "commit_s": committed - logged, "finalize_s": finalized - committed}))
"""


def build(where: Path) -> Path:
    """The CMake build of cmf_core/native for this Python: its directory."""
    for argv in (["cmake", "-S", str(source_dir()), "-B", str(where), f"-DPython3_EXECUTABLE={sys.executable}",
                  "-DCMAKE_BUILD_TYPE=Release"], ["cmake", "--build", str(where)]):
        subprocess.run(argv, check=True, capture_output=True)
    return where


def run(argv: List[str], cwd: Path) -> Dict[str, float]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="cmf-native-") as tmp:
        base = Path(tmp)
        built = build(base / "build")
        root = base / "ws"
        root.mkdir()
        api.init("local", {"path": str(base / "store")}, git_remote_url=str(base / "origin.git"), workspace=root)
        for steps in args.steps:
            sides: Dict[str, List[Dict[str, float]]] = {"c": [], "python": []}
            for _ in range(args.rounds):
                sides["c"].append(run([str(built / "cmf-c-bench"), str(root / "mlmd"), str(steps)], root))
                sides["python"].append(run([sys.executable, "-c", PYTHON_SIDE, str(root / "mlmd"), str(steps)], root))
            row = {"steps": steps}
            for side, rounds in sides.items():
                for key in ("init_s", "log_metric_s", "commit_s", "finalize_s"):
                    row[f"{side}_{key}"] = statistics.median(r[key] for r in rounds)
            results.append(row)
            print(f"{steps:>7} steps  log_metric: C {steps / row['c_log_metric_s']:>12,.0f} calls/s "
                  f"({row['c_log_metric_s'] / steps * 1e6:.2f} us), Python {steps / row['python_log_metric_s']:>10,.0f} "
                  f"calls/s ({row['python_log_metric_s'] / steps * 1e6:.2f} us), "
                  f"{row['python_log_metric_s'] / row['c_log_metric_s']:.1f}x;  commit: C {row['c_commit_s']:.3f} s, "
                  f"Python {row['python_commit_s']:.3f} s;  finalize: C {row['c_finalize_s']:.3f} s (the helper's "
                  f"exit too), Python {row['python_finalize_s']:.3f} s;  init: C {row['c_init_s']:.2f} s, Python "
                  f"{row['python_init_s']:.2f} s", flush=True)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "native.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": args.rounds,
                                                 "results": results}, indent=2))
    print(f"written to {out / 'native.json'}")


if __name__ == "__main__":
    main()
