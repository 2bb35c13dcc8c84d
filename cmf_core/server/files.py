"""The files the UI shows beside the metadata: python environments, labels, step metrics, small artifacts.

Two places hold them:

* :class:`ServerFiles`, the server's data directory: ``env/<name>``, ``labels/<md5>``,
  ``step_metrics/<md5>`` and ``tensorboard/<pipeline>/...`` as the upload routes store them;
* :class:`WorkspaceFiles`, the workspace of ``cmf ui``: files at the paths the metadata names,
  shown only when their md5 is still the logged one (a file changed since is not that artifact).

Paths come from metadata, which anyone who can push writes (and ``cmf metadata pull`` brings into a
workspace): every path is resolved and refused unless it stays inside its root, md5 names must be 32 hex
digits, every file is shown only when its bytes have the md5 the metadata logs, and workspace configuration
(``.git/``, ``.dvc/``, ``.cmfconfig*``: tokens and keys live there) is never shown, whatever its md5.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from cmf_core import layout

__all__ = ["Files", "ServerFiles", "WorkspaceFiles", "PREVIEW_BYTES", "PREVIEW_ROWS"]

PREVIEW_BYTES = 2 * 1024 * 1024  # larger files are not previewed
PREVIEW_ROWS = 50  # rows of a CSV or table per page
TEXT_CHARS = 200_000


def _inside(root: Path, relative: str) -> Optional[Path]:
    """``root/relative`` if it is a regular file inside ``root`` (symlinks followed) and not workspace
    configuration (:func:`private`), else None."""
    if not relative or "\x00" in relative:
        return None
    base = root.resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError):
        return None
    if base not in target.parents or private(target.relative_to(base).as_posix()):
        return None
    return target if target.is_file() else None


def private(relative: str) -> bool:
    """Whether a path (relative to its root, symlinks resolved) is configuration that may hold secrets:
    anything under ``.git/``, under ``.dvc/`` but outside its cache (``config.local``: S3 keys, passwords), or a
    ``.cmfconfig*`` file (``.cmfconfig.local``: the server token)."""
    parts = relative.split("/")
    if parts[0] == ".dvc" and len(parts) > 2 and parts[1] == "cache":
        return False  # content-addressed data: what a symlink-type cache points the workspace's files at
    return any(p in (".git", ".dvc") for p in parts) or parts[-1].startswith(".cmfconfig")


def _logged(found: Optional[Path], md5: str) -> Optional[Path]:
    """``found`` if it is small enough to preview and its bytes have the logged ``md5``, else None."""
    if found is None or not layout.is_file_md5(md5) or found.stat().st_size > PREVIEW_BYTES:
        return None
    return found if layout.file_md5(found) == md5 else None


def _table(header: List[str], rows: List[List[Any]], page: int, kind: str) -> Dict[str, Any]:
    pages = max(1, -(-len(rows) // PREVIEW_ROWS))
    start = (page - 1) * PREVIEW_ROWS
    return {"kind": kind, "header": header, "rows": rows[start:start + PREVIEW_ROWS], "total": len(rows),
            "page": page, "pages": pages}


def render(path: Path, name: str, page: int = 1) -> Dict[str, Any]:
    """A preview of a file: a page of a CSV or parquet table, pretty JSON, or text; or why there is none."""
    size = path.stat().st_size
    if size > PREVIEW_BYTES:
        return {"kind": "none", "reason": f"the file is {size} bytes; only files up to {PREVIEW_BYTES} are previewed"}
    data = path.read_bytes()
    if data[:4] == b"PAR1":
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(data))
        index = [str(n or "index") for n in frame.index.names]
        rows = [[*(k if isinstance(k, tuple) else (k,)), *v] for k, v in zip(frame.index, frame.values.tolist())]
        return _table(index + [str(c) for c in frame.columns], json.loads(json.dumps(rows, default=str)), page,
                      "table")
    if b"\x00" in data[:8192]:
        return {"kind": "none", "reason": "a binary file"}
    text = data.decode("utf-8", errors="replace")
    if name.lower().endswith((".csv", ".tsv")) or (not name.lower().endswith(".json") and _looks_csv(text)):
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if name.lower().endswith(".tsv") else ","))
        if rows and not _has_header(text):
            rows.insert(0, [f"column {i + 1}" for i in range(len(rows[0]))])
        return _table(rows[0] if rows else [], rows[1:], page, "csv")
    if name.lower().endswith(".json"):
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return {"kind": "text", "text": text[:TEXT_CHARS], "truncated": len(text) > TEXT_CHARS}


def _has_header(text: str) -> bool:
    """Whether a CSV's first row names its columns (the csv module's heuristic; no header if it cannot tell)."""
    try:
        return csv.Sniffer().has_header(text[:8192])
    except csv.Error:
        return False


def _looks_csv(text: str) -> bool:
    """Label files are CSV whatever their name: several lines with the same number of commas."""
    lines = text.splitlines()[:20]
    return len(lines) > 1 and lines[0].count(",") > 0 and len({line.count(",") for line in lines}) == 1


def step_series(path: Path) -> Optional[Dict[str, Any]]:
    """A step-metrics parquet file as ``{"steps": [...], "series": {column: [...]}}`` (numeric columns only)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - a corrupt or foreign file is shown as "not available", not a 500
        return None
    series = {str(c): [None if v != v else float(v) for v in frame[c].tolist()]
              for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    steps = [int(s) if isinstance(s, (int,)) or str(s).isdigit() else str(s) for s in frame.index.tolist()]
    return {"steps": steps, "series": series}


class Files:
    """What the read path asks of the files beside the metadata; every method may answer None (not held)."""

    def environment(self, path: str, md5: str) -> Optional[str]:
        """The text of the python environment file the metadata names with ``md5``, if held with those bytes."""
        found = self.locate("Environment", path, md5)
        return found.read_text(encoding="utf-8", errors="replace")[:TEXT_CHARS] if found else None

    def step_metrics(self, path: str, md5: str) -> Optional[Dict[str, Any]]:
        """The steps of a Step_Metrics artifact (see :func:`step_series`)."""
        raise NotImplementedError

    def locate(self, kind: str, path: str, md5: str) -> Optional[Path]:
        """The held copy of an artifact of type ``kind`` logged at ``path`` with ``md5``."""
        raise NotImplementedError

    def tensorboard(self, pipeline: str) -> List[Dict[str, Any]]:
        """The tensorboard log files of a pipeline: ``{"path", "size", "modified"}``."""
        return []

    def tensorboard_file(self, pipeline: str, path: str) -> Optional[Path]:
        return None

    def size(self, path: str, md5: str) -> Optional[int]:
        return None

    def preview(self, kind: str, path: str, md5: str, page: int = 1) -> Dict[str, Any]:
        """A preview of the artifact's held copy, or ``{"kind": "none", "reason"}``."""
        found = self.locate(kind, path, md5)
        if found is None:
            return {"kind": "none", "reason": self.not_held}
        return render(found, path, page)

    not_held = "no copy of this file is held here"


class ServerFiles(Files):
    """The metadata server's data directory."""

    not_held = ("the server holds python environments, labels and step metrics, not the artifacts themselves; "
                "pull it with the command above")

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)

    def step_metrics(self, path: str, md5: str) -> Optional[Dict[str, Any]]:
        found = self.locate("Step_Metrics", path, md5)
        return step_series(found) if found else None

    def locate(self, kind: str, path: str, md5: str) -> Optional[Path]:
        if kind == "Environment":  # uploaded under its file name
            return _logged(_inside(self.root / "env", os.path.basename(path)), md5)
        folder = {"Label": "labels", "Step_Metrics": "step_metrics"}.get(kind)
        return _inside(self.root / folder, md5) if folder and layout.is_file_md5(md5) else None

    def tensorboard(self, pipeline: str) -> List[Dict[str, Any]]:
        base = self.root / "tensorboard"
        root = _inside_dir(base, pipeline)
        if root is None:
            return []
        items = []
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                file = Path(folder) / name
                stat = file.stat()
                items.append({"path": file.relative_to(root).as_posix(), "size": stat.st_size,
                              "modified": int(stat.st_mtime * 1000)})
        return items

    def tensorboard_file(self, pipeline: str, path: str) -> Optional[Path]:
        root = _inside_dir(self.root / "tensorboard", pipeline)
        return _inside(root, path) if root is not None else None


def _inside_dir(base: Path, name: str) -> Optional[Path]:
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        return None
    folder = base / name
    return folder if folder.is_dir() and base.resolve() in folder.resolve().parents else None


class WorkspaceFiles(Files):
    """The workspace of ``cmf ui``: files at the paths the metadata names, if still the logged version."""

    not_held = "the workspace has no copy of this version of the file (cmf artifact pull fetches it)"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def step_metrics(self, path: str, md5: str) -> Optional[Dict[str, Any]]:
        found = self.locate("Step_Metrics", path, md5)
        return step_series(found) if found else None

    def locate(self, kind: str, path: str, md5: str) -> Optional[Path]:
        return _logged(_inside(self.root, path), md5)

    def size(self, path: str, md5: str) -> Optional[int]:
        """The size DVC recorded in ``<path>.dvc``, for the logged md5."""
        found = _inside(self.root, path + ".dvc")
        if found is None:
            return None
        import yaml

        try:
            outs = (yaml.safe_load(found.read_text(encoding="utf-8")) or {}).get("outs") or []
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
            return None
        for out in outs:
            if isinstance(out, dict) and out.get("md5") == md5 and isinstance(out.get("size"), int):
                return out["size"]
        return None
