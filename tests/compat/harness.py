"""Run the ORIGINAL cmflib 0.1.0 (in its own venv) from tests running in our venv.

Typical use in a compatibility test::

    from tests.compat.harness import original_write, original_query

    mlmd = original_write(tmp_path / "ws", "demo")      # the original logs a pipeline
    result = original_query(mlmd, "demo")               # the original reads an MLMD file

The original venv is built on first use by ``original_env.sh`` (about a minute the first
time, instant afterwards).  Its location is ``$CMF_ORIGINAL_VENV`` or ``<repo>/.venv-original``.
The original's processes get a clean environment: no PYTHONPATH or VIRTUAL_ENV of ours,
``python -I`` (so a ``cmflib`` package in the working directory is never imported), and a
per-process temporary HOME, so its ``~/.cache/cmflib`` log and DVC's caches stay out of the
real home directory.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV_SCRIPT = HERE / "original_env.sh"
WRITER = HERE / "orig_writer.py"
QUERY = HERE / "orig_query.py"

ENV_BUILD_TIMEOUT = 1800.0
"""Seconds allowed for building the original venv (about 60-80 s on a 2-core machine)."""
WRITE_TIMEOUT = 600.0
QUERY_TIMEOUT = 300.0

_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
"""Variables of our environment that the original's processes may see (besides PATH)."""


class OriginalCmfError(RuntimeError):
    """A process of the original cmflib failed; the message carries its output."""


def original_venv() -> Path:
    """Directory of the original cmflib venv (``$CMF_ORIGINAL_VENV`` or ``<repo>/.venv-original``)."""
    return Path(os.environ.get("CMF_ORIGINAL_VENV") or REPO / ".venv-original")


@functools.cache
def original_home() -> Path:
    """A temporary HOME shared by the original's processes of this Python process."""
    home = Path(tempfile.mkdtemp(prefix="cmf-original-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def _tail(text: str, limit: int = 8000) -> str:
    """The last ``limit`` characters of ``text``."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``cmd``; return its stdout, or raise OriginalCmfError with its output."""
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise OriginalCmfError(
            f"timed out after {timeout:.0f}s: {' '.join(cmd)}\n--- stderr ---\n{_tail(stderr)}"
        ) from exc
    if proc.returncode != 0:
        raise OriginalCmfError(
            f"exit {proc.returncode}: {' '.join(cmd)} (cwd {cwd})\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
        )
    return proc.stdout


def _clean_path(extra_first: Path | None = None) -> str:
    """Our PATH without our own venv's directories, optionally with ``extra_first`` in front."""
    ours = {Path(sys.prefix).resolve()}
    if os.environ.get("VIRTUAL_ENV"):
        ours.add(Path(os.environ["VIRTUAL_ENV"]).resolve())
    entries = [
        p
        for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if p and not any(Path(p).resolve().is_relative_to(v) for v in ours)
    ]
    if extra_first is not None:
        entries.insert(0, str(extra_first))
    return os.pathsep.join(entries)


def original_env(venv: Path | None = None) -> dict[str, str]:
    """The environment for the original's processes (see module docstring)."""
    home = original_home()
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env.update(
        PATH=_clean_path(None if venv is None else venv / "bin"),
        HOME=str(home),
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(home / "dvc-site-cache"),
        GIT_AUTHOR_NAME="cmf-compat",
        GIT_AUTHOR_EMAIL="cmf-compat@example.com",
        GIT_COMMITTER_NAME="cmf-compat",
        GIT_COMMITTER_EMAIL="cmf-compat@example.com",
        GIT_TERMINAL_PROMPT="0",
    )
    return env


@functools.cache
def original_python() -> Path:
    """Build the original venv if needed (once per process) and return its python."""
    venv = original_venv()
    # The build keeps our environment (pip settings, pyenv) but not our venv.
    # HOME is the user's real one even when a test fixture replaced it, so pip's cache is reused.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = _clean_path()
    env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    _run(["bash", str(ENV_SCRIPT), str(venv)], cwd=HERE, env=env, timeout=ENV_BUILD_TIMEOUT)
    python = venv / "bin" / "python"
    if not python.exists():
        raise OriginalCmfError(f"{ENV_SCRIPT} succeeded but {python} is missing")
    return python


def _run_original_script(script: Path, args: Sequence[str], *, cwd: Path, timeout: float) -> dict[str, Any]:
    """Run one of our scripts with the original's python (``-I``); parse its JSON stdout."""
    python = original_python()
    cmd = [str(python), "-I", str(script), *args]
    stdout = _run(cmd, cwd=cwd, env=original_env(python.parent.parent), timeout=timeout)
    try:
        result = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise OriginalCmfError(f"{script.name} printed no JSON document:\n{_tail(stdout)}") from exc
    if not isinstance(result, dict):
        raise OriginalCmfError(f"{script.name} printed a JSON {type(result).__name__}, not an object")
    return result


def original_write(workspace: Path, pipeline: str) -> Path:
    """Let the original cmflib init ``workspace`` (if needed) and log the demo pipeline there.

    The artifact store of ``cmf init local`` is ``workspace/../store``.  Returns the path of
    the MLMD file written (``workspace/mlmd``).  See ``orig_writer.py`` for what is logged.
    """
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    result = _run_original_script(WRITER, [str(workspace), pipeline], cwd=workspace, timeout=WRITE_TIMEOUT)
    mlmd = Path(result["mlmd"])
    if not mlmd.is_file():
        raise OriginalCmfError(f"orig_writer.py reported {mlmd}, which does not exist")
    return mlmd


def original_query(mlmd: Path, pipeline: str) -> dict[str, Any]:
    """Read ``mlmd`` with the original ``CmfQuery``; return the document of ``orig_query.py``."""
    mlmd = Path(mlmd).resolve()
    if not mlmd.is_file():
        raise FileNotFoundError(mlmd)
    return _run_original_script(QUERY, [str(mlmd), pipeline], cwd=mlmd.parent, timeout=QUERY_TIMEOUT)
