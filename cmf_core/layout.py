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
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

from cmf_core.errors import CmfError

CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")  # fullmatch: a "$" would also let a trailing newline through
_FILE_MD5 = re.compile(r"[0-9a-f]{32}")  # a file's md5, never a .dir one


class ManifestError(CmfError):
    """A ``.dir`` manifest that is not well-formed or tries to escape its directory."""


class Entry(NamedTuple):
    """One file of a directory: its md5 and its path relative to the directory (``/``-separated).

    A named tuple, not a dataclass: a manifest of 100,000 files makes 100,000 of them, and a tuple is
    made about five times faster and takes a third of the memory of a frozen dataclass."""

    md5: str
    relpath: str


def file_md5(path: os.PathLike) -> str:
    """md5 of a file's bytes, streamed."""
    return read_file(path)[0]


def read_file(path: os.PathLike, keep: int = 0) -> Tuple[str, int, Optional[bytes]]:
    """The md5 and size of a file, read once; and its bytes when there are at most ``keep`` of them (a small
    file then goes into the DVC cache from memory instead of being read again)."""
    digest, count, kept = hashlib.md5(), 0, []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for block in blocks(fd):
            digest.update(block)
            count += len(block)
            if count <= keep:
                kept.append(block)
    finally:
        os.close(fd)
    return digest.hexdigest(), count, b"".join(kept) if count <= keep else None


def blocks(fd: int) -> Iterator[bytes]:
    """The bytes of the open file ``fd`` in raw reads of :data:`CHUNK`, the first of the file's size: a read
    of 1 MiB allocates 1 MiB first, for each file, and a directory may hold 100,000 files of 1 KB."""
    want = min(os.fstat(fd).st_size + 1, CHUNK)
    while True:
        block = os.read(fd, want)
        if not block:
            return
        yield block
        want = CHUNK


def is_md5(value: str) -> bool:
    """Whether ``value`` is a DVC object id: 32 hex digits, optionally ending in ``.dir``."""
    return isinstance(value, str) and _MD5.fullmatch(value) is not None


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
    if type(relpath) is str and relpath and relpath[0] != "/" and relpath[-1] != "/" and relpath.isascii() \
            and "//" not in relpath and "/." not in "/" + relpath and "\\" not in relpath and "\0" not in relpath:
        # the usual name, checked without splitting it: no segment is empty or starts with "." (so none is
        # "." or ".." or one of SKIP_DIRS), and ASCII is always a file name; any other goes through the rest
        return relpath
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
    file_md5 = _FILE_MD5.fullmatch
    for row in rows:
        if not isinstance(row, dict):
            raise ManifestError(f"manifest row is not an object: {row!r}")
        md5 = row.get("md5")
        if not isinstance(md5, str) or not file_md5(md5):
            raise ManifestError(f"bad md5 {md5!r} in manifest")
        relpath = _safe_relpath(row.get("relpath"))
        if relpath in seen:
            raise ManifestError(f"relpath {relpath!r} appears twice")
        seen.add(relpath)
        entries.append(Entry(md5, relpath))
    clash = sorted(seen & _folders(seen))
    if clash:
        raise ManifestError(f"relpath {clash[0]!r} is both a file and a directory")
    return entries


def _folders(relpaths: Iterable[str]) -> Set[str]:
    """Every folder that holds one of ``relpaths`` (``a/b/c`` -> ``a/b``, ``a``), by slicing the strings:
    thousands of files share a few folders, so a folder met again ends the climb (its parents are in)."""
    folders: Set[str] = set()
    for relpath in relpaths:
        end = relpath.rfind("/")
        while end > 0:
            folder = relpath[:end]
            if folder in folders:
                break
            folders.add(folder)
            end = relpath.rfind("/", 0, end)
    return folders


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
    """Files under ``root`` as (posix relpath, path), sorted; symlinked directories are not followed.

    The relpath is made from strings, once per folder: ``relative_to`` and ``as_posix`` for each of
    100,000 files cost more than walking them."""
    top = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        folder = Path(dirpath)
        prefix = os.path.relpath(dirpath, top).replace(os.sep, "/") + "/" if dirpath != top else ""
        for name in sorted(filenames):
            yield prefix + name, folder / name
