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


def median_of(times: List[float]) -> Optional[float]:
    return statistics.median(times) if times else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

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

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(
        {"commands": rows, "dvc": dvc_medians, "original": theirs is not None}, indent=2))


if __name__ == "__main__":
    main()
