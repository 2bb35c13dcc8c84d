"""Putting DVC cache files in the workspace, and workspace files in the cache, as ``cache.type`` asks.

DVC places a cache file at a workspace path by the first of its configured
link types that the file system allows: ``reflink`` (a copy-on-write clone:
XFS, Btrfs, APFS), ``hardlink`` (one inode for both), ``symlink`` or ``copy``;
its default is ``reflink,copy``.  A hardlinked or symlinked workspace file *is*
the cache file, so it is read-only (DVC "protects" it), and nothing here ever
opens a workspace path for writing: every placement builds a temp file beside
the target and renames it over what was there, so an old link into the cache is
replaced, never written through.

A type the file system refuses (a hardlink across devices, a reflink on ext4)
is dropped for the rest of the run, and the next one is used, with one note
when the user chose the types (``cache.type`` set), none for DVC's default.

The Linux clone is the ``FICLONE`` ioctl, written here rather than imported
from ``dvc_objects.fs.system`` (which has the same ten lines): importing that
module loads fsspec and asyncio, about 0.2 s that every pull would pay.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

from cmf_core import layout
from cmf_core.config import CacheSettings
from cmf_core.errors import CmfError

READ_ONLY = 0o444
PROTECTED = ("hardlink", "symlink")  # types whose workspace file is the cache file
SHARED_FOLDER = 0o2775  # cache.shared = group: group-writable folders that keep their group (DVC's mode)


def reflink(source: str, target: str) -> None:
    """A copy-on-write clone of ``source`` at ``target`` (a new file), or ``OSError`` where there is none."""
    if sys.platform != "linux":
        raise OSError(errno.ENOTSUP, "reflink is supported here on Linux only")
    import fcntl

    ficlone = 0x40049409
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.ioctl(dst, ficlone, src)
        except OSError:
            os.close(dst)
            os.unlink(target)
            raise
        os.close(dst)
    finally:
        os.close(src)


def _hardlink(source: str, target: str) -> None:
    os.link(source, target, follow_symlinks=True)


def _symlink(source: str, target: str) -> None:
    os.symlink(os.path.abspath(source), target)


def _copy(source: str, target: str) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    with open(fd, "wb") as out, open(source, "rb") as inp:
        shutil.copyfileobj(inp, out, layout.CHUNK)


def _write_new(target: str, content: bytes, mode: int) -> None:
    """A new file at ``target`` holding ``content`` (``mode`` 0o444 still lets this descriptor write)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        write_all(fd, content)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """Write all of ``data`` to the raw descriptor ``fd`` (``os.write`` may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


MAKERS: Dict[str, Callable[[str, str], None]] = {
    "reflink": reflink, "hardlink": _hardlink, "symlink": _symlink, "copy": _copy}


def temp_beside(path: Path) -> str:
    """A fresh temp name beside ``path`` (unique: two processes may place the same file at once)."""
    folder, name = os.path.split(path)
    return f"{folder}/.{name}.{secrets.token_hex(4)}.cmf-tmp"


def same_file(target: Path, cached: Path) -> bool:
    """Whether ``target`` already is ``cached``: a hardlink of it, or a symlink to it."""
    try:
        mine = os.lstat(target)
        if stat.S_ISLNK(mine.st_mode):  # the link as placed first (one call), else resolved (one per component)
            return os.readlink(target) == str(cached) or os.path.realpath(target) == os.path.realpath(cached)
        theirs = os.stat(cached)
    except OSError:
        return False
    return (mine.st_ino, mine.st_dev) == (theirs.st_ino, theirs.st_dev)


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Linker:
    """Places files by the first link type that works, for one run (a type refused once is not tried again)."""

    def __init__(self, settings: Optional[CacheSettings] = None, note: Optional[Callable[[str], None]] = None):
        self.settings = settings
        self.types: List[str] = list(settings.types) if settings else ["reflink", "copy"]
        self.configured = bool(settings and settings.configured)
        # how a workspace file goes into the cache (DVC's commit): a hardlink only when that is the first type
        self.fill: List[str] = ["reflink", "hardlink", "copy"] if self.kind == "hardlink" else ["reflink", "copy"]
        self.notes: List[str] = []
        self._note = note or (lambda text: print(f"cmf: {text}", file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._folders: Set[Path] = set()  # cache folders made or found in this run: one mkdir each

    @property
    def kind(self) -> str:
        """The type the next placement tries first."""
        return self.types[0] if self.types else "copy"

    def _refused(self, kind: str, exc: OSError, types: List[str]) -> None:
        with self._lock:
            if kind not in types:
                return  # another thread dropped it already
            types.remove(kind)
            if self.configured and types is self.types and types:
                text = f"cache.type {kind} is not possible here ({exc.strerror or exc}): using {types[0]} instead"
                self.notes.append(text)
                self._note(text)

    def _make(self, source: Path, target: Path, types: List[str]) -> str:
        """A new file at ``target`` (which must not exist) from ``source`` by the first type of ``types`` that works."""
        for kind in list(types):
            try:
                MAKERS[kind](str(source), str(target))
                return kind
            except FileExistsError:
                raise
            except OSError as exc:
                if kind == "copy":
                    raise
                _discard(str(target))
                if all(t == kind for t in types):  # nothing left to fall back to
                    raise CmfError(f"cache.type {kind} is not possible between the DVC cache and "
                                   f"{target.parent} ({exc.strerror or exc}); add copy to cache.type "
                                   f"('dvc config cache.type {kind},copy')") from None
                self._refused(kind, exc, types)
        raise AssertionError("unreachable: copy raises or works")

    def place(self, cached: Path, target: Path) -> str:
        """Make ``target`` a link or copy of the cache file ``cached``, replacing whatever is at ``target``
        by a rename (never writing through it).  Returns the type used."""
        tmp = temp_beside(target)
        try:
            kind = self._make(cached, Path(tmp), self.types)  # a clone or copy is a new file: writable, not 0o444
            os.replace(tmp, target)
        except BaseException:
            _discard(tmp)
            raise
        return kind

    def to_cache(self, source: Path, cached: Path, content: Optional[bytes] = None) -> None:
        """Put the workspace file ``source`` into the cache at ``cached`` (read-only), as ``dvc add`` does: a
        hardlink when ``hardlink`` is the first type (the workspace file becomes read-only with it), else a
        clone or a copy (``content``, the file's bytes if the caller read them already, is then written
        from memory).  Then, for ``hardlink``/``symlink``, the workspace file becomes a link to it."""
        if not os.path.exists(cached):
            self.make_folder(cached.parent)
            tmp = temp_beside(cached)
            try:
                if content is not None and self.fill[0] == "copy":
                    _write_new(tmp, content, READ_ONLY)
                else:
                    self._make(source, Path(tmp), self.fill)
                    os.chmod(tmp, READ_ONLY)
                os.replace(tmp, cached)
            except BaseException:
                _discard(tmp)
                raise
        if self.kind in PROTECTED and not same_file(source, cached):
            self.place(cached, source)

    def probe(self, cache: Path, workspace: Path) -> None:
        """Find the type that works between these two folders once, before a run shares its files out among
        processes (each would otherwise find a refusal, and note it, on its own)."""
        self.make_folder(cache)
        source = temp_beside(cache / "probe")
        target = temp_beside(workspace / "probe")
        try:
            with open(source, "xb"):
                pass
            self._make(Path(source), Path(target), self.types)
        finally:
            _discard(source)
            _discard(target)

    def make_folder(self, folder: Path) -> None:
        """:func:`make_folder`, once per folder and run."""
        if folder not in self._folders:
            make_folder(folder, bool(self.settings and self.settings.shared))
            self._folders.add(folder)


def make_folder(folder: Path, shared: bool = False) -> None:
    """Create a cache folder (and its parents); group-writable with the setgid bit in a shared cache."""
    if not shared:
        os.makedirs(folder, exist_ok=True)
        return
    missing, parent = [], folder
    while not parent.is_dir():
        missing.append(parent)
        parent = parent.parent
    for created in reversed(missing):
        try:
            os.mkdir(created)
        except FileExistsError:
            continue
        os.chmod(created, SHARED_FOLDER)


def check_writable(cache: Path, shared: bool = False) -> None:
    """Refuse a cache that this user cannot write, naming it and the fix, before anything is written."""
    probe = cache
    while not probe.exists():
        probe = probe.parent
    for folder in (probe, cache / "files", cache / "files" / "md5"):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            info = folder.stat()
            fix = (f"'chgrp -R <group> {cache} && chmod -R g+w {cache}' and add yourself to that group"
                   if shared else f"'chmod -R u+w {cache}' (or set cache.dir to a folder of yours)")
            raise CmfError(f"the DVC cache {folder} is not writable by you (mode {stat.filemode(info.st_mode)}, "
                           f"owner uid {info.st_uid}, group gid {info.st_gid}); fix it with {fix}")
