"""Content addressing as DVC 3 does it: md5 of files, ``.dir`` manifests, ``files/md5/xx/yyyy`` keys.

A file with md5 ``d41d8cd98f00b204e9800998ecf8427e`` lives at
``files/md5/d4/1d8cd98f00b204e9800998ecf8427e`` in the DVC cache and on every
remote.  A directory is a ``.dir`` object: the JSON list of
``{"md5": ..., "relpath": ...}`` of its files sorted by relpath; its md5 is the
md5 of those bytes and its key ends in ``.dir``.  Manifests downloaded from a
remote are untrusted: :func:`parse_manifest` accepts JSON only and refuses
relpaths that are absolute, climb out with ``..`` or repeat.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from cmf_core.errors import CmfError

CHUNK = 1 << 20
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


class ManifestError(CmfError):
    """A ``.dir`` manifest that is not well-formed or tries to escape its directory."""


@dataclass(frozen=True)
class Entry:
    """One file of a directory: its md5 and its path relative to the directory (``/``-separated)."""

    md5: str
    relpath: str


def file_md5(path: os.PathLike) -> str:
    """md5 of a file's bytes, streamed."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_md5(value: str) -> bool:
    """Whether ``value`` is a DVC object id: 32 hex digits, optionally ending in ``.dir``."""
    return bool(_MD5.match(value))


def key(md5: str) -> str:
    """The object key of an md5 (``files/md5/xx/yyyy`` or ``.../yyyy.dir``)."""
    if not is_md5(md5):
        raise CmfError(f"not an md5 object id: {md5!r}")
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def content_md5(key: str) -> Optional[str]:
    """The md5 of the bytes stored at ``key`` (a ``.dir`` object's too: its id is the md5 of its
    bytes), or ``None`` when ``key`` is not an object key of the layout."""
    head, _, name = key.rpartition("/")
    if not head.startswith("files/md5/") or len(head) != len("files/md5/xx"):
        return None
    md5 = head[-2:] + name
    return md5.removesuffix(".dir") if is_md5(md5) else None


def is_dir_md5(md5: str) -> bool:
    return md5.endswith(".dir")


def is_file_md5(value: str) -> bool:
    """Whether ``value`` is the md5 of a file's bytes: 32 hex digits, no ``.dir``."""
    return is_md5(value) and not is_dir_md5(value)


def manifest_bytes(entries: List[Entry]) -> bytes:
    """The ``.dir`` object for ``entries``, byte for byte as DVC writes it."""
    rows = [{"md5": e.md5, "relpath": e.relpath} for e in sorted(entries, key=lambda e: e.relpath)]
    return json.dumps(rows, sort_keys=True).encode("utf-8")


def manifest_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest() + ".dir"


def _safe_relpath(relpath: object) -> str:
    if not isinstance(relpath, str) or not relpath or "\\" in relpath or "\0" in relpath:
        raise ManifestError(f"bad relpath {relpath!r}")
    parts = relpath.split("/")
    if relpath.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ManifestError(f"relpath {relpath!r} escapes its directory")
    if "" in parts:  # "a//b" or "a/" would name the same file as "a/b" or "a"
        raise ManifestError(f"relpath {relpath!r} has an empty segment")
    if SKIP_DIRS & set(parts):
        raise ManifestError(f"relpath {relpath!r} is inside {', '.join(sorted(SKIP_DIRS))}")
    try:
        os.fsencode(relpath)
    except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape
        raise ManifestError(f"relpath {relpath!r} cannot be a file name") from None
    return relpath


def parse_manifest(data: bytes) -> List[Entry]:
    """Parse an untrusted ``.dir`` manifest: JSON only, valid md5s, relpaths that stay inside the directory,
    are normalised and unique, and never name a file that another relpath uses as a folder."""
    try:
        rows = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise ManifestError("manifest is not a JSON list")
    entries, seen = [], set()
    for row in rows:
        if not isinstance(row, dict):
            raise ManifestError(f"manifest row is not an object: {row!r}")
        md5 = row.get("md5")
        if not isinstance(md5, str) or not _MD5.match(md5) or is_dir_md5(md5):
            raise ManifestError(f"bad md5 {md5!r} in manifest")
        relpath = _safe_relpath(row.get("relpath"))
        if relpath in seen:
            raise ManifestError(f"relpath {relpath!r} appears twice")
        seen.add(relpath)
        entries.append(Entry(md5, relpath))
    folders = {str(parent) for relpath in seen for parent in PurePosixPath(relpath).parents}
    clash = sorted(seen & folders)
    if clash:
        raise ManifestError(f"relpath {clash[0]!r} is both a file and a directory")
    return entries


def listed(keys: Iterable[str], list_folder: Callable[[str], Iterable[str]]) -> Set[str]:
    """The keys found by listing each of their folders once (``files/md5/xx``), not one lookup per key.

    ``list_folder(folder)`` returns the names in a folder; a missing folder is empty.
    """
    wanted: Dict[str, Set[str]] = {}
    for k in keys:
        folder, _, name = k.rpartition("/")
        wanted.setdefault(folder, set()).add(name)
    return {f"{folder}/{name}" if folder else name
            for folder, names in wanted.items() for name in names & set(list_folder(folder))}


#: Directories DVC never descends into when it hashes a directory.
SKIP_DIRS = frozenset({".git", ".dvc", ".hg"})


def walk_files(root: Path) -> Iterator[Tuple[str, Path]]:
    """Files under ``root`` as (posix relpath, path), sorted; symlinked directories are not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path.relative_to(root).as_posix(), path
