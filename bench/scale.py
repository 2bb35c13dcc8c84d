"""Scale: cmf against DVC as the number of files grows, time and peak memory of every step, side by side.

Shapes (selectable):
  --files 10000,100000   a directory ``data/`` of N files of --file-size bytes (folders of 1000 files),
                         logged as ONE directory artifact;
  --big 4x1G             a directory ``data/`` of 4 files of 1 GiB, logged as one directory artifact
                         ("none" to skip); also run, last, with ``dvc config cache.type hardlink`` set
                         in the workspace (log and pull), beside two floors: md5 of the bytes already in
                         memory (hashlib only) and read+md5 of the files (page cache warm, as for the tools).
Backends: --backends local,minioS3 (minioS3 against a `rclone serve s3` started on loopback, stopped by PID).

Per backend, shape and round, each contender (cmf, then dvc; the order swaps every round) runs in a
workspace of its own (`cmf init <backend>`, which also writes the DVC remote; its own store or bucket):
  log        cmf: a Python script, Cmf(...).log_dataset("data", "input")      dvc: `dvc add data`
  push       `cmf artifact push -p P`                                       `dvc push`
  noop push  the same again (everything is on the remote)
  pull       data and .dvc/cache moved aside, then `cmf artifact pull -p P` `dvc pull`
  status     after cmf's pull: `dvc status` and `dvc status -c` must both be clean (--json: {})
Every step is one subprocess, measured from the outside: wall time; "RSS", the peak resident set of
the biggest process of the step's tree (wait4's ru_maxrss, what /usr/bin/time reports); "tree", the
peak sum of PSS over the process and all its children (sampled every 100 ms from /proc; cmf's push and
pull fork helper processes that share pages with it, which RSS would count twice).

Trees of many files are moved aside between contenders, never deleted during the run (see README:
ext4 without a journal, recently deleted inodes); big files are deleted. Free space and inodes are
checked before anything starts and before each contender (refused with a message when short).

    .venv/bin/python bench/scale.py [--files 10000,100000] [--big 4x1G|none] [--backends local,minioS3]
                                    [--rounds 1] [--workdir DIR] [--file-size 1024] [--plot-only]

Writes bench/results/scale.json (every round of every step) and bench/scale.png (time and memory
against the number of files, cmf against dvc, per step).  Needs the `bench` extra (matplotlib, psutil).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from cmf_core import api  # noqa: E402
from transfer import LocalTarget, S3Target, clear, warm_memory  # noqa: E402  (bench/transfer.py)

BIN = Path(sys.executable).parent
DVC, CMF = str(BIN / "dvc"), str(BIN / "cmf")
TIME = "/usr/bin/time"  # GNU time (Debian package "time")
RESULTS = HERE / "results" / "scale.json"
PLOT = HERE / "scale.png"
PER_FOLDER = 1000
GiB = 1 << 30
MARGIN = 2 * GiB  # kept free beyond the estimate
BLOCK = 4096  # a small file takes one block of the file system, whatever its size below that

LOG_SCRIPT = """\
from cmflib import cmf
c = cmf.Cmf(filepath="mlmd", pipeline_name="P")
c.create_context("s")
c.create_execution("e")
c.log_dataset("data", "input")
c.finalize()
"""
STEPS = ("log", "push", "noop_push", "pull")
LABELS = {"log": "log (cmf log_dataset / dvc add)", "push": "push", "noop_push": "no-op re-push", "pull": "pull"}


# -- measuring one step ---------------------------------------------------------------------------


def _pss_kb(pid: int) -> int:
    """The proportional set size of one process (shared pages split among the processes that map them)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """The CPU time (user + system) a running process has used so far (the S3 server's, beside a step)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def measure(argv: List[str], cwd: Path, env: Dict[str, str], log: Path,
            stdout: Optional[Path] = None, server: Optional[int] = None) -> Dict[str, object]:
    """Run ``argv`` as one subprocess; its wall time, the peak RSS of its biggest process, the peak PSS
    of its whole tree (sampled), its CPU time and exit status, and the CPU time the process ``server``
    used meanwhile.  Output goes to ``log`` (appended), or its standard output alone to ``stdout``."""
    import psutil

    peak_tree = [0]
    done = threading.Event()
    usage_file = log.with_name("time.out")
    with open(log, "ab") as out, open(stdout or os.devnull, "wb") as own:
        out.write(f"\n$ (cd {cwd} && {' '.join(argv)})\n".encode())
        out.flush()
        server_before = _cpu_seconds(server)
        start = time.perf_counter()
        # started by /usr/bin/time, a small C program: a child's peak RSS (ru_maxrss) starts from the RSS of the
        # process that forked it (Linux keeps the old hiwater mark across execve), which would be this one's
        proc = subprocess.Popen([TIME, "-f", "%M %x", "-o", str(usage_file), *argv], cwd=cwd, env=env,
                                stdout=own if stdout else out, stderr=out)

        def sample() -> None:
            try:
                top = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not done.is_set():
                try:
                    pids = [proc.pid] + [c.pid for c in top.children(recursive=True)]
                except psutil.Error:
                    pids = [proc.pid]
                peak_tree[0] = max(peak_tree[0], sum(_pss_kb(p) for p in pids))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        done.set()
        sampler.join()
    maxrss_kb, code = (int(v) for v in usage_file.read_text().split()[-2:])
    step = {"seconds": seconds, "rss_mb": maxrss_kb / 1024, "tree_mb": peak_tree[0] / 1024,
            "cpu": usage.ru_utime + usage.ru_stime, "code": code}
    server_after = _cpu_seconds(server)
    if server_before is not None and server_after is not None:
        step["server_cpu"] = server_after - server_before
    return step


def check(step: Dict[str, object], what: str, log: Path) -> Dict[str, object]:
    if step["code"] != 0:
        raise SystemExit(f"{what} failed with status {step['code']}; see {log} (copied to {RESULTS.with_suffix('.log')})")
    return step


# -- data and space --------------------------------------------------------------------------------


def parse_big(text: str) -> Optional[Tuple[int, int]]:
    """``4x1G`` -> (4, 1 GiB); ``none`` -> None."""
    if text.lower() in ("", "none", "0"):
        return None
    count, _, size = text.lower().partition("x")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(count), int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


def make_small(data: Path, count: int, size: int) -> None:
    for i in range(count):
        if i % PER_FOLDER == 0:
            folder = data / f"d{i // PER_FOLDER:04d}"
            folder.mkdir(parents=True)
        with open(folder / f"f{i:07d}.bin", "wb") as fh:
            fh.write(os.urandom(size))


def make_big(data: Path, count: int, size: int) -> None:
    data.mkdir(parents=True)
    chunk = 64 << 20
    for i in range(count):
        block = os.urandom(min(chunk, size))  # one random block per file, repeated: every file differs
        with open(data / f"big{i}.bin", "wb") as fh:
            left = size
            while left:
                fh.write(block[:left])
                left -= min(left, len(block))


def need(shape: Dict[str, object]) -> Tuple[int, int]:
    """Bytes and inodes one contender of ``shape`` leaves behind at most: the data, the DVC cache, the
    store, and after the pull the data and cache again (the first two moved aside, not deleted)."""
    if shape["kind"] == "big":
        return 5 * shape["count"] * shape["size"], 64
    per_file = max(shape["size"], BLOCK) if shape["size"] else 0
    return 5 * shape["count"] * (per_file + BLOCK), 5 * shape["count"] + 4 * shape["count"] // PER_FOLDER + 1000


def space(folder: Path) -> Tuple[int, int]:
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize, info.f_favail


def refuse_if_short(folder: Path, bytes_needed: int, inodes_needed: int, what: str) -> None:
    free, inodes = space(folder)
    if free < bytes_needed + MARGIN or inodes < inodes_needed:
        raise SystemExit(
            f"not enough room in {folder} for {what}: it needs about {(bytes_needed + MARGIN) / GiB:.1f} GiB and "
            f"{inodes_needed:,} inodes, and {free / GiB:.1f} GiB and {inodes:,} inodes are free. Choose fewer or "
            f"smaller shapes (--files, --big, --rounds) or a --workdir on a bigger file system.")


def remove(path: Path) -> None:
    """A tree of many files is moved aside (see transfer.clear); anything else, big files too, is deleted."""
    if path.is_dir():
        clear(path)
    elif path.exists():
        path.unlink()


def md5_floors(data: Path) -> Dict[str, float]:
    """``md5``: hashlib over the bytes already in memory (the reads not counted); ``read_md5``: reading
    the files (page cache as the tools find it) and hashing them, one after the other, 1 MiB at a time;
    ``copy``: copying the files once into a new folder beside them (``shutil.copyfile``: ``sendfile`` in the
    kernel, nothing hashed), which a pull into a DVC cache must do at least, whatever its link type."""
    files = sorted(p for p in data.rglob("*") if p.is_file())
    hashing = 0.0
    for path in files:
        with open(path, "rb") as fh:
            digest = hashlib.md5()
            for block in iter(lambda: fh.read(64 << 20), b""):
                start = time.perf_counter()
                digest.update(block)
                hashing += time.perf_counter() - start
    start = time.perf_counter()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path in files:
        digest = hashlib.md5()
        with open(path, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buffer)
                if not n:
                    break
                digest.update(view[:n])
    read_md5 = time.perf_counter() - start
    copies = data.parent / "floor-copies"
    copies.mkdir()
    start = time.perf_counter()
    for i, path in enumerate(files):
        shutil.copyfile(path, copies / str(i))
    copy = time.perf_counter() - start
    remove(copies)
    return {"md5": hashing, "read_md5": read_md5, "copy": copy}


# -- one contender -----------------------------------------------------------------------------------


class Run:
    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
                    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
        self.seq = 0

    def step(self, argv: List[str], cwd: Path, what: str, server: Optional[int] = None) -> Dict[str, object]:
        return check(measure(argv, cwd, self.env, self.log, server=server), what, self.log)

    def contender(self, tool: str, target, backend: str, shape: Dict[str, object], hardlink: bool = False,
                  floors: bool = False) -> Dict[str, object]:
        """One contender's log, push, no-op push, pull (and, for cmf, dvc status) in a workspace of its own."""
        self.seq += 1
        name = f"{shape['name']}-{tool}{'-hl' if hardlink else ''}-{self.seq}"
        bytes_needed, inodes_needed = need(shape)
        refuse_if_short(self.root, bytes_needed, inodes_needed, f"{backend} {name}")
        ws = self.root / f"{backend}-{name}"
        ws.mkdir()
        options, store = target.options(name.lower())
        api.init(target.name, options, git_remote_url="/dev/null", workspace=ws)
        if hardlink:
            subprocess.run([DVC, "config", "cache.type", "hardlink"], cwd=ws, env=self.env, check=True)
        data = ws / "data"
        if shape["kind"] == "big":
            make_big(data, shape["count"], shape["size"])
        else:
            make_small(data, shape["count"], shape["size"])
        out: Dict[str, object] = {}
        if floors:
            out["floors"] = md5_floors(data)
        env_dvc = {**self.env, **getattr(target, "dvc_env", {})}
        if tool == "cmf":
            commands = {"log": [sys.executable, "-c", LOG_SCRIPT], "push": [CMF, "artifact", "push", "-p", "P"],
                        "pull": [CMF, "artifact", "pull", "-p", "P"]}
        else:
            commands = {"log": [DVC, "add", "-q", "data"], "push": [DVC, "push", "-q"], "pull": [DVC, "pull", "-q"]}
        server = getattr(getattr(getattr(target, "server", None), "proc", None), "pid", None)  # rclone's, for S3
        self.env, saved = env_dvc, self.env
        try:
            out["log"] = self.step(commands["log"], ws, f"{tool} log")
            out["push"] = self.step(commands["push"], ws, f"{tool} push", server)
            target.settle(store)  # untimed: rclone works out a big object's md5 when first asked (a listing too)
            out["noop_push"] = self.step(commands["push"], ws, f"{tool} no-op push", server)
            remove(data)
            remove(ws / ".dvc" / "cache")
            out["pull"] = self.step(commands["pull"], ws, f"{tool} pull", server)
            files = sum(1 for p in data.rglob("*") if p.is_file())
            if files != shape["count"]:
                raise SystemExit(f"{tool} pull left {files} files in {data}, not {shape['count']}")
            if tool == "cmf":
                for key, argv in (("status", [DVC, "status", "--json"]), ("status_c", [DVC, "status", "-c", "--json"])):
                    answer = self.root / "status.json"
                    step = measure(argv, ws, self.env, self.log, stdout=answer)
                    text = answer.read_text(errors="replace").strip()
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = text[-2000:]
                    step["clean"] = step["code"] == 0 and parsed == {}
                    step["output"] = None if step["clean"] else parsed
                    out[key] = step
        finally:
            self.env = saved
        # leave nothing big behind; trees of many files go aside (removed with the temp folder at the end)
        if shape["kind"] == "big":
            shutil.rmtree(ws)
            if target.name == "local":
                shutil.rmtree(store, ignore_errors=True)
            else:
                target.empty(store)
        else:
            remove(ws)
        return out


# -- the run ------------------------------------------------------------------------------------------


def median(rounds: List[Dict[str, object]], key: str) -> Optional[float]:
    values = [r[key] for r in rounds if isinstance(r, dict) and key in r]
    return statistics.median(values) if values else None


def summarise(results: Dict[str, object]) -> None:
    """Add medians over the rounds to every step of every contender."""
    for backend in results["backends"].values():
        for shape in backend.values():
            shape["median"] = {}
            for tool, rounds in shape["rounds"].items():
                med = {}
                for step in (*STEPS, "status", "status_c"):
                    steps = [r[step] for r in rounds if step in r]
                    if steps:
                        med[step] = {k: median(steps, k) for k in ("seconds", "rss_mb", "tree_mb", "cpu", "server_cpu")
                                     if any(k in s for s in steps)}
                        if "clean" in steps[0]:
                            med[step]["clean"] = all(s["clean"] for s in steps)
                floors = [r["floors"] for r in rounds if "floors" in r]
                if floors:
                    med["floors"] = {k: statistics.median(f[k] for f in floors) for k in floors[0]}
                shape["median"][tool] = med


def targets(results: Dict[str, object]) -> List[Tuple[str, str, str, Optional[bool]]]:
    """(backend, target, measured, met) for each target the run has the shapes for."""
    rows = []
    for backend, shapes in results["backends"].items():
        small = sorted((s for s in shapes.values() if s["kind"] == "files"), key=lambda s: s["count"])

        def m(shape, tool, step, key="seconds"):
            return shape["median"].get(tool, {}).get(step, {}).get(key)

        if len(small) >= 2:
            lo, hi = small[0], small[-1]
            for step in STEPS:
                a, b = m(lo, "cmf", step), m(hi, "cmf", step)
                if a and b:
                    growth = (b / hi["count"]) / (a / lo["count"])
                    rows.append((backend, f"cmf {step}: time per file, {lo['count']:,} -> {hi['count']:,} files, "
                                          "within 1.5x", f"{growth:.2f}x", growth <= 1.5))
        if small:
            top = small[-1]
            n = f"{top['count']:,}"
            for step in ("log", "push", "pull"):
                rss, tree = m(top, "cmf", step, "rss_mb"), m(top, "cmf", step, "tree_mb")
                if rss is not None:
                    rows.append((backend, f"cmf {step}: peak RSS at {n} files < 300 MB",
                                 f"{rss:.0f} MB (tree PSS {tree:.0f} MB)", rss < 300))
            for step, limit in (("log", 0.5), ("push", 0.5), ("pull", 0.5)):
                c, d = m(top, "cmf", step), m(top, "dvc", step)
                if c and d:
                    rows.append((backend, f"cmf {step} <= {limit}x dvc at {n} files", f"{c / d:.2f}x", c / d <= limit))
            noop = m(top, "cmf", "noop_push")
            if noop is not None:
                rows.append((backend, f"cmf no-op re-push of {n} files < 3 s", f"{noop:.2f} s", noop < 3))
            for step in ("status", "status_c"):
                clean = top["median"].get("cmf", {}).get(step, {}).get("clean")
                if clean is not None:
                    rows.append((backend, f"`dvc {step.replace('_c', ' -c')}` clean after cmf pull ({n} files)",
                                 "clean" if clean else "NOT clean", clean))
        for key, shape in shapes.items():
            if shape["kind"] != "big":
                continue
            floors = shape["median"].get("cmf", {}).get("floors")
            label = shape["label"]
            if key.endswith("-hardlink") and floors:
                log, pull = m(shape, "cmf", "log"), m(shape, "cmf", "pull")
                rows.append((backend, f"{label}: cmf log <= 1.2x md5 of the bytes",
                             f"{log / floors['md5']:.2f}x ({log:.1f} s / {floors['md5']:.1f} s)", log <= 1.2 * floors["md5"]))
                rows.append((backend, f"{label}: cmf pull <= 1.3x read+md5",
                             f"{pull / floors['read_md5']:.2f}x ({pull:.1f} s / {floors['read_md5']:.1f} s)",
                             pull <= 1.3 * floors["read_md5"]))
            rss, tree = m(shape, "cmf", "pull", "rss_mb"), m(shape, "cmf", "pull", "tree_mb")
            if rss is not None:
                rows.append((backend, f"{label}: cmf pull peak RSS < 300 MB", f"{rss:.0f} MB (tree PSS {tree:.0f} MB)",
                             rss < 300))
    return rows


def table(results: Dict[str, object]) -> str:
    lines = [f"median of {results['rounds']} round(s); seconds; RSS = peak of the biggest process, "
             "tree = peak PSS summed over the process tree (MB); ratio = cmf / dvc; CPU = seconds of the "
             "process tree (+ the S3 server's meanwhile)"]
    head = (f"{'backend':8} {'shape':22} {'step':14} {'cmf s':>8} {'dvc s':>8} {'cmf/dvc':>7} {'cmf ms/file':>11} "
            f"{'dvc ms/file':>11} {'cmf RSS/tree':>13} {'dvc RSS/tree':>13} {'cmf CPU':>9} {'dvc CPU':>9}")
    lines += [head, "-" * len(head)]
    for backend, shapes in results["backends"].items():
        for shape in shapes.values():
            cmf, dvc = shape["median"].get("cmf", {}), shape["median"].get("dvc", {})
            for step in STEPS:
                c, d = cmf.get(step), dvc.get(step)
                if not c or not d:
                    continue
                n = shape["count"] if shape["kind"] == "files" else 0
                per = (lambda s: f"{1000 * s / n:11.3f}") if n else (lambda s: f"{'':11}")
                cpu = (lambda m: f"{m['cpu']:.0f}" + (f"+{m['server_cpu']:.0f}" if m.get("server_cpu") is not None
                                                         else "")) if "cpu" in c else (lambda m: "")
                lines.append(f"{backend:8} {shape['label']:22} {step:14} {c['seconds']:8.2f} {d['seconds']:8.2f} "
                             f"{c['seconds'] / d['seconds']:7.2f} {per(c['seconds'])} {per(d['seconds'])} "
                             f"{c['rss_mb']:6.0f}/{c['tree_mb']:<6.0f} {d['rss_mb']:6.0f}/{d['tree_mb']:<6.0f} "
                             f"{cpu(c):>9} {cpu(d):>9}")
            for step in ("status", "status_c"):
                if step in cmf:
                    s = cmf[step]
                    lines.append(f"{backend:8} {shape['label']:22} {'dvc ' + step.replace('_c', ' -c'):14} "
                                 f"{s['seconds']:8.2f} {'':8} {'':7} {'clean' if s['clean'] else 'NOT CLEAN':>11}")
            if "floors" in cmf:
                f = cmf["floors"]
                lines.append(f"{backend:8} {shape['label']:22} {'floor md5':14} {f['md5']:8.2f}")
                lines.append(f"{backend:8} {shape['label']:22} {'floor read+md5':14} {f['read_md5']:8.2f}")
                if "copy" in f:
                    lines.append(f"{backend:8} {shape['label']:22} {'floor copy':14} {f['copy']:8.2f}")
    lines += ["", "targets"]
    for backend, what, measured, met in targets(results):
        lines.append(f"  {backend:8} {what:70} {measured:32} {'ok' if met else 'MISSED'}")
    return "\n".join(lines)


def plot(results: Dict[str, object], path: Path) -> None:
    """Time and peak RSS against the number of files, cmf against dvc, one column per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 10 else f"{value:g}")

    fig, axes = plt.subplots(2, len(STEPS), figsize=(4.2 * len(STEPS), 7.5), squeeze=False)
    styles = {"local": "-", "minioS3": "--", "amazonS3": ":"}
    colors = {"cmf": "tab:blue", "dvc": "tab:orange"}
    for col, step in enumerate(STEPS):
        for row, (key, unit) in enumerate((("seconds", "seconds"), ("rss_mb", "peak RSS, MB"))):
            ax = axes[row][col]
            for backend, shapes in results["backends"].items():
                small = sorted((s for s in shapes.values() if s["kind"] == "files"), key=lambda s: s["count"])
                for tool in ("cmf", "dvc"):
                    for measure, marker, alpha, note in ((key, "o", 1.0, ""), ("tree_mb", "x", 0.45, ", tree PSS")):
                        if measure == "tree_mb" and key != "rss_mb":
                            continue
                        points = [(s["count"], s["median"][tool][step][measure]) for s in small
                                  if step in s["median"].get(tool, {})]
                        if points:
                            xs, ys = zip(*points)
                            ax.plot(xs, ys, styles.get(backend, "-."), color=colors[tool], marker=marker, alpha=alpha,
                                    label=f"{tool} {backend}{note}")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
            if key == "seconds":
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(FuncFormatter(  # 2 and 5 of each decade labelled too
                    lambda value, _: plain(value) if f"{value:.0e}"[0] in "25" else ""))
            else:
                ax.set_ylim(0, max(350, ax.get_ylim()[1]))
            ax.set_xlabel("files of 1 KB in one directory")
            ax.set_ylabel(unit if key == "seconds" else "peak RSS (o) / tree PSS (x), MB")
            ax.set_title(f"{LABELS[step]}: {'time' if row == 0 else 'memory'}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if key == "rss_mb":
                ax.axhline(300, color="grey", lw=0.8, ls=":")
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(f"cmf vs dvc as the number of files grows ({results['date'][:10]}, {results['commit'][:7]}, "
                 f"median of {results['rounds']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def code_tree() -> str:
    """A fingerprint of the code measured (cmf_core, backends, cmflib as they are on disk, edits included):
    the working tree can change under a run that takes an hour."""
    digest = hashlib.sha1()
    for folder in ("cmf_core", "backends", "cmflib"):
        for path in sorted((HERE.parent / folder).rglob("*.py")):
            digest.update(str(path.relative_to(HERE.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="10000,100000", help="sizes of the many-files shape, comma-separated "
                                                                  "('' for none)")
    parser.add_argument("--file-size", type=int, default=1024, help="bytes per file of the many-files shape")
    parser.add_argument("--big", default="4x1G", help="COUNTxSIZE of the big-files shape, e.g. 4x1G, or none")
    parser.add_argument("--backends", default="local,minioS3")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-hardlink", action="store_true", help="skip the big shape's cache.type hardlink part")
    parser.add_argument("--workdir", default=None, help="folder for the temporary workspaces and stores "
                                                        "(default: the system's temp folder); see bench/README.md")
    parser.add_argument("--plot-only", action="store_true", help="redraw bench/scale.png from bench/results/scale.json")
    args = parser.parse_args()
    if args.plot_only:
        results = json.loads(RESULTS.read_text())
        print(table(results))
        plot(results, PLOT)
        return
    import psutil  # noqa: F401 -- fail now, not after the first shape: pip install -c constraints.txt -e '.[bench]'

    shapes = [{"kind": "files", "count": int(n), "size": args.file_size, "name": f"s{int(n)}",
               "label": f"{int(n):,} x {args.file_size} B"} for n in args.files.split(",") if n.strip()]
    big = parse_big(args.big)
    if big:
        count, size = big
        label = f"{count} x {size / GiB:g} GiB" if size >= GiB else f"{count} x {size >> 20} MiB"
        shapes.append({"kind": "big", "count": count, "size": size, "name": f"b{count}", "label": label})
    backends = [b for b in args.backends.split(",") if b]
    workdir = Path(args.workdir or tempfile.gettempdir())
    # trees of many files stay (moved aside) until the end: they add up; big files are deleted after each contender
    small_total = [sum(x) for x in zip(*(need(s) for s in shapes if s["kind"] == "files"))] or [0, 0]
    big_peak = max((need(s)[0] for s in shapes if s["kind"] == "big"), default=0)
    runs = 2 * args.rounds * len(backends)
    refuse_if_short(workdir, runs * small_total[0] + big_peak + 2 * GiB, runs * small_total[1],
                    "the whole run (warming 2 GiB of memory included)")
    for key, value in {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}.items():
        os.environ.setdefault(key, value)
    results: Dict[str, object] = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit(),
                                  "code": code_tree(), "rounds": args.rounds, "args": vars(args), "backends": {}}
    print(f"commit {results['commit'][:10]}, code tree {results['code']} (cmf_core, backends, cmflib as on disk)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="cmf-scale-") as tmp:
        root = Path(tmp)
        log = root / "commands.log"
        run = Run(root, log)
        warm_memory(root)
        targets_ = {}
        try:
            for backend in backends:
                targets_[backend] = LocalTarget(root) if backend == "local" else S3Target(root, backend)
            parts = [(b, s, False) for b in backends for s in shapes]
            if big and not args.no_hardlink:  # last: cmf's support of cache.type is being written as this runs
                parts += [(b, s, True) for b in backends for s in shapes if s["kind"] == "big"]
            for backend, shape, hardlink in parts:
                key = shape["name"] + ("-hardlink" if hardlink else "")
                entry = results["backends"].setdefault(backend, {}).setdefault(key, {
                    "kind": shape["kind"], "count": shape["count"], "size": shape["size"],
                    "label": shape["label"] + (" hardlink" if hardlink else ""), "rounds": {"cmf": [], "dvc": []}})
                for r in range(args.rounds):
                    order = ("cmf", "dvc") if r % 2 == 0 else ("dvc", "cmf")
                    for i, tool in enumerate(order):
                        t0 = time.monotonic()
                        outcome = run.contender(tool, targets_[backend], backend, shape, hardlink,
                                                floors=shape["kind"] == "big" and tool == "cmf")
                        entry["rounds"][tool].append(outcome)
                        print(f"[{time.monotonic() - started:7.0f} s] {backend} {entry['label']} round {r + 1} {tool}: "
                              + ", ".join(f"{k} {v['seconds']:.2f} s / {v['rss_mb']:.0f} MB"
                                          for k, v in outcome.items() if k in STEPS)
                              + f" ({time.monotonic() - t0:.0f} s in all)", flush=True)
                summarise(results)
                RESULTS.parent.mkdir(exist_ok=True)
                RESULTS.write_text(json.dumps(results, indent=1))  # after every shape: a long run keeps what it has
        finally:
            for target in targets_.values():
                target.close()
            if log.exists():
                shutil.copy(log, RESULTS.with_suffix(".log"))
    results["seconds"] = time.monotonic() - started
    results["code_at_end"] = code_tree()
    if results["code_at_end"] != results["code"]:
        print(f"warning: the code changed during the run (code tree {results['code']} -> {results['code_at_end']})")
    summarise(results)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(table(results))
    try:
        plot(results, PLOT)
        print(f"plot: {PLOT}")
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -c constraints.txt -e '.[bench]')")


if __name__ == "__main__":
    main()
