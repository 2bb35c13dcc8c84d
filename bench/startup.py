"""Start-up time of the everyday commands, next to the original cmflib 0.1.0 and DVC's own start.

Each command runs as a fresh process, --rounds times (default 3), cmf and the original one after
the other in each round; the table gives the medians (wall time, seconds) and the speed-up:

  import cmflib.cmf                  python -I -c "import cmflib.cmf"
  cmf --help
  cmf artifact list -p P             a pipeline of two small datasets
  cmf artifact pull -p P (no-op)     the same pipeline, pushed before, every file in place
  log_dataset script                 Cmf(...), create_context, create_execution, log_dataset of one
                                     small file (a new one each round), finalize()

Each contender gets a workspace of its own, set up untimed: its own `cmf init local` (with a
bare git repository as the git remote), the pipeline P logged with the same script and pushed;
after the timing, both mlmd files must hold every file logged (the original exits 0 on failure).
The original runs from the venv of tests/compat (built by tests/compat/original_env.sh on first
use, about a minute); if it cannot be built its rows say so.  `dvc --version` and `dvc status`
run in cmf's workspace: what any DVC-based command pays to start.

    .venv/bin/python bench/startup.py [--rounds 3]

Results go to bench/results/startup.json.

``--stores`` measures instead what cmf's own ML Metadata store (issue 24) saves at start-up: ``import
cmflib.cmf`` in a fresh process (``python -I``) on cmf's store, the same with ml-metadata imported too (what
every process paid while cmf needed ml-metadata), and on each ``--python`` interpreter (another venv with cmf
installed, such as one of Python 3.13, which has no ml-metadata), alternating within each round (default 9
rounds).  For a contender over the 0.15 s target it lists what ``python -X importtime`` finds the biggest.
``--compare-with DIR`` adds the code of another commit, e.g. the one before issue 24 (``git archive COMMIT
cmf_core cmflib | tar -x -C DIR``).

    .venv/bin/python bench/startup.py --stores [--rounds 9] [--python /path/to/venv313/bin/python]
                                      [--compare-with DIR]

Results go to bench/results/startup-stores.json.
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
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.compat.harness import OriginalCmfError, original_env, original_python  # noqa: E402

#: The script timed as "log_dataset script" (and used, with two files, to set up pipeline P).
LOG_SCRIPT = """\
import sys
from cmflib import cmf

metawriter = cmf.Cmf(filepath="mlmd", pipeline_name=sys.argv[1])
metawriter.create_context(pipeline_stage="prepare")
metawriter.create_execution(execution_type="Prepare")
for path in sys.argv[2:]:
    metawriter.log_dataset(path, "input")
metawriter.finalize()
"""
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org"}


@dataclass
class Contender:
    """One cmf to time: its interpreter, its ``cmf`` script, its environment and its own workspace."""

    name: str
    python: Path
    env: Dict[str, str]
    workspace: Path

    @property
    def cmf(self) -> str:
        return str(self.python.parent / "cmf")


#: (command, its argv for a contender in a round, target in seconds)
COMMANDS: List[Tuple[str, Callable[[Contender, int], List[str]], float]] = [
    ("import cmflib.cmf", lambda c, r: [str(c.python), "-I", "-c", "import cmflib.cmf"], 0.5),
    ("cmf --help", lambda c, r: [c.cmf, "--help"], 0.3),
    ("cmf artifact list -p P", lambda c, r: [c.cmf, "artifact", "list", "-p", "P"], 0.8),
    ("cmf artifact pull -p P (no-op)", lambda c, r: [c.cmf, "artifact", "pull", "-p", "P"], 1.0),
    ("log_dataset script", lambda c, r: [str(c.python), "-I", str(c.workspace.parent / "log.py"), "L",
                                         f"data/log{r}.txt"], 1.5),
]


def run(argv: List[str], contender: Contender) -> float:
    """Run ``argv`` in the contender's workspace; its wall time in seconds. A failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=contender.workspace, env=contender.env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{contender.name}: {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def set_up(contender: Contender, rounds: int) -> None:
    """The data files, a bare git repository as the git remote, ``cmf init local`` (which makes the workspace a
    git and DVC repository: the original refuses a git repository it did not set up), pipeline P of two datasets
    logged and pushed."""
    ws = contender.workspace
    ws.mkdir(parents=True)
    (ws.parent / "log.py").write_text(LOG_SCRIPT)
    (ws / "data").mkdir()
    for name in ("a", "b", *(f"log{r}" for r in range(rounds))):
        (ws / "data" / f"{name}.txt").write_text(f"{name}\n" * 64)
    run(["git", "init", "-q", "--bare", str(ws.parent / "origin.git")], contender)
    run([contender.cmf, "init", "local", "--path", str(ws.parent / "store"),
         "--git-remote-url", str(ws.parent / "origin.git")], contender)
    run([str(contender.python), "-I", str(ws.parent / "log.py"), "P", "data/a.txt", "data/b.txt"], contender)
    run([contender.cmf, "artifact", "push", "-p", "P"], contender)


def check(contender: Contender, rounds: int) -> None:
    """Stop unless the contender logged every file it was asked to: the original exits 0 when it fails."""
    from cmf_core.metadata.query import CmfQuery

    query = CmfQuery(str(contender.workspace / "mlmd"))
    logged = {row["name"].split(":")[0] for pipeline in ("P", "L") for row in query.artifact_rows(pipeline)}
    missing = {"data/a.txt", "data/b.txt", *(f"data/log{r}.txt" for r in range(rounds))} - logged
    if missing:
        sys.exit(f"{contender.name} did not log {', '.join(sorted(missing))}")


def original(root: Path) -> Optional[Contender]:
    """The original cmflib 0.1.0 from the venv of tests/compat (built if missing); None if it cannot be built."""
    try:
        python = original_python()
    except (OriginalCmfError, OSError) as exc:
        print(f"original cmflib 0.1.0: cannot build its venv, its rows are skipped: {str(exc).splitlines()[0]}")
        return None
    return Contender("cmflib 0.1.0", python, original_env(python.parent.parent), root / "original" / "ws")


#: What ``--stores`` imports: cmf on its own store, and with ml-metadata imported too (as before issue 24).
STORE_IMPORTS = {"cmf's store": "import cmflib.cmf",
                 "+ ml-metadata": "import ml_metadata.metadata_store.metadata_store, cmflib.cmf"}
IMPORT_TARGET = 0.15


def python_version(python: str) -> str:
    """``major.minor`` of the interpreter ``python``."""
    return subprocess.run([python, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def has_ml_metadata(python: str) -> bool:
    """Whether the interpreter ``python`` can import ml-metadata (it has no wheels past Python 3.11)."""
    return subprocess.run([python, "-I", "-c", "import importlib.util, sys; "
                           "sys.exit(importlib.util.find_spec('ml_metadata') is None)"]).returncode == 0


def biggest_imports(argv: List[str], top: int = 8) -> List[Tuple[str, float]]:
    """The top-level packages that ``argv`` (run with ``-X importtime``) spends most import time in: seconds of
    their modules' own import time, summed per package."""
    report = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True).stderr
    per_package: Dict[str, float] = {}
    for line in report.splitlines():
        fields = line.split("|")
        if not line.startswith("import time:") or not fields[1].strip().isdigit():
            continue  # the header
        package = fields[2].strip().split(".")[0]
        per_package[package] = per_package.get(package, 0.0) + int(fields[0].split(":")[1]) / 1e6
    return sorted(per_package.items(), key=lambda item: -item[1])[:top]


def store_imports(pythons: List[str], rounds: int, compare_with: Optional[Path]) -> Dict[str, Dict]:
    """``import cmflib.cmf`` on cmf's store and with ml-metadata imported too, on each interpreter, and of the
    code in ``compare_with`` (another commit's) on this one, alternating within each round: medians, ratios to the
    first contender, and the biggest imports of those over target."""
    contenders: Dict[str, List[str]] = {}
    for python in pythons:
        for label, code in STORE_IMPORTS.items():
            if label == "cmf's store" or has_ml_metadata(python):
                contenders[f"{label}, Python {python_version(python)}"] = [python, "-I", "-c", code]
    if compare_with:
        code = f"import sys; sys.path.insert(0, {str(compare_with)!r}); import cmflib.cmf"
        contenders[f"{compare_with.name}, Python {python_version(sys.executable)}"] = [sys.executable, "-I", "-c",
                                                                                       code]
    here = Contender("imports", Path(sys.executable), dict(os.environ), Path(tempfile.gettempdir()))
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, argv in contenders.items():
            times[name].append(run(argv, here))
    first = statistics.median(next(iter(times.values())))
    rows = {}
    for name, argv in contenders.items():
        median = statistics.median(times[name])
        missed = name.startswith("cmf's store") and median >= IMPORT_TARGET  # the target is cmf's store's
        rows[name] = {"median_s": median, "ratio": median / first, "rounds": times[name],
                      "met": None if not name.startswith("cmf's store") else not missed,
                      "biggest": biggest_imports(argv) if missed else []}
    return rows


def print_store_imports(rows: Dict[str, Dict], rounds: int) -> None:
    print(f"import cmflib.cmf, fresh process, median of {rounds} (s); target < {IMPORT_TARGET} s on cmf's store")
    print(f"{'contender':34} {'median':>7} {'min':>6} {'max':>6} {'ratio':>6}  met?")
    for name, row in rows.items():
        print(f"{name:34} {row['median_s']:7.3f} {min(row['rounds']):6.3f} {max(row['rounds']):6.3f} "
              f"{row['ratio']:5.2f}x  {'-' if row['met'] is None else 'yes' if row['met'] else 'NO'}")
        if row["biggest"]:
            print("    biggest imports (own time per package): "
                  + ", ".join(f"{package} {s * 1000:.0f} ms" for package, s in row["biggest"]))


def median_of(times: List[float]) -> Optional[float]:
    return statistics.median(times) if times else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds of each command (default 3; 9 with --stores)")
    parser.add_argument("--stores", action="store_true",
                        help="import cmflib.cmf on cmf's store against ml-metadata's (issue 24) instead")
    parser.add_argument("--python", action="append", default=[], metavar="PATH",
                        help="with --stores: also this interpreter (a venv with cmf installed); repeatable")
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="with --stores: also the cmflib in DIR (another commit's), by DIR's name")
    args = parser.parse_args()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    if args.stores:
        rounds = args.rounds or 9
        rows = store_imports([sys.executable, *args.python], rounds, args.compare_with)
        print_store_imports(rows, rounds)
        (out / "startup-stores.json").write_text(json.dumps(rows, indent=2))
        return
    args.rounds = args.rounds or 3

    with tempfile.TemporaryDirectory(prefix="cmf-startup-") as tmp:
        root = Path(tmp)
        ours_env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1",
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        ours = Contender("cmf", Path(sys.executable), ours_env, root / "cmf" / "ws")
        theirs = original(root)
        contenders = [c for c in (ours, theirs) if c]
        for contender in contenders:
            set_up(contender, args.rounds)

        times: Dict[str, Dict[str, List[float]]] = {}
        for command, argv, _ in COMMANDS:
            times[command] = {c.name: [] for c in contenders}
            for r in range(args.rounds):
                for contender in contenders:
                    times[command][contender.name].append(run(argv(contender, r), contender))
        for contender in contenders:
            check(contender, args.rounds)
        dvc = str(Path(sys.executable).parent / "dvc")
        dvc_times = {" ".join(cmd): [run([dvc, *cmd], ours) for _ in range(args.rounds)]
                     for cmd in (["--version"], ["status"])}

    rows = {}
    for command, _, target in COMMANDS:
        cmf_s = median_of(times[command]["cmf"])
        base_s = median_of(times[command].get("cmflib 0.1.0", []))
        rows[command] = {"cmf_s": cmf_s, "original_s": base_s, "speedup": base_s / cmf_s if base_s else None,
                         "target_s": target, "met": cmf_s < target, "rounds": times[command]}
    print(f"{'command':32} {'cmf (s)':>8} {'cmflib 0.1.0 (s)':>17} {'speed-up':>9} {'target':>7}  met?")
    for command, row in rows.items():
        base = f"{row['original_s']:17.2f}" if row["original_s"] else f"{'skipped':>17}"
        ratio = f"{row['speedup']:8.1f}x" if row["speedup"] else f"{'-':>9}"
        print(f"{command:32} {row['cmf_s']:8.2f} {base} {ratio} {'< ' + str(row['target_s']):>7}  "
              f"{'yes' if row['met'] else 'NO'}")
    dvc_medians = {f"dvc {cmd}": statistics.median(t) for cmd, t in dvc_times.items()}
    print("\nDVC, in cmf's workspace:" + "".join(f"  {cmd} {s:.2f} s;" for cmd, s in dvc_medians.items()))

    (out / "startup.json").write_text(json.dumps(
        {"commands": rows, "dvc": dvc_medians, "original": theirs is not None}, indent=2))


if __name__ == "__main__":
    main()
