"""Advisory file locks: exclusive across processes (``fcntl.flock``) and threads, reentrant in the holder.

Two users of them:

* the write lock of an mlmd file (:func:`cmf_core.metadata.store.write_lock`, ``<mlmd>.lock``),
  held by every ``Cmf`` call that writes, so processes logging into one file never interleave;
* the transfer lock of a DVC cache (``<cache>/cmf-transfer.lock``), held by every push and pull,
  so two of them never share the temp files they write beside the files they place.

A lock is a file of its own, never the file it guards (SQLite's own POSIX locks must stay
SQLite's).  ``flock`` is per host: a file shared over NFS by writers on several machines is not
protected.  Closing the only descriptor releases the lock, so a process that dies releases it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
import threading
from pathlib import Path
from typing import Dict, Optional

from cmf_core.errors import CmfError

__all__ = ["FileLock", "lock"]


class FileLock:
    """Exclusive across processes and threads, reentrant in the thread that holds it.

    ``with lock:`` blocks until no other process and no other thread holds it; when
    it has to wait and ``waiting`` is set, it says so once on stderr.  Obtain it with
    :func:`lock`, which gives every caller in a process the same object for a path.
    """

    def __init__(self, path: Path, waiting: Optional[str] = None) -> None:
        self.path = path
        self.waiting = waiting
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: Optional[int] = None

    def __enter__(self) -> "FileLock":
        self._thread.acquire()
        try:
            if self._depth == 0:
                self._fd = self._flock()
            self._depth += 1
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
        self._thread.release()

    def _flock(self) -> int:
        """A descriptor of the lock file (created if missing) holding an exclusive flock; blocks until granted."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:  # another user's lock file (a shared cache): flock needs only to read it
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise CmfError(f"cannot take the lock {self.path}: {exc.strerror}") from None
        except OSError as exc:
            raise CmfError(f"cannot take the lock {self.path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if self.waiting:
                    print(f"cmf: {self.waiting} (lock {self.path})", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd


_LOCKS: Dict[Path, FileLock] = {}
_GUARD = threading.Lock()


def lock(path: os.PathLike, waiting: Optional[str] = None) -> FileLock:
    """The lock whose file is ``path`` (its folder must exist), one object per process and path."""
    key = Path(path).absolute()
    with _GUARD:
        return _LOCKS.setdefault(key, FileLock(key, waiting))
