"""log_dataset ms/call next to the `dvc add` CLI that the original cmflib runs per call.

Shapes: N small files logged one by one, and one directory of M files.
The `dvc add` baseline runs on a twin workspace with the same data; per-file
`dvc add` is slow, so it runs on the first K files only (its median is what counts).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmf_core import api  # noqa: E402
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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dir-files", type=int, default=2000)
    parser.add_argument("--dvc-files", type=int, default=20, help="how many small files the dvc add baseline adds")
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    for key, value in {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
                       "GIT_COMMITTER_EMAIL": "b@x"}.items():
        os.environ.setdefault(key, value)

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
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "log_dataset.json").write_text(json.dumps(
        {name: {"cmf_ms": a, "dvc_add_ms": b, "speedup": b / a} for name, (a, b) in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
