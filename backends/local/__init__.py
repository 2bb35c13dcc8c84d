"""``cmf init local``: an artifact repository in a directory of this machine or a mounted share."""
from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path
from typing import BinaryIO, Dict, List, Sequence, Set

from cmf_core import layout
from cmf_core.backend import Backend
from cmf_core.errors import ConfigError, ObjectNotFound
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "local"
SPEC = BackendSpec(
    type=TYPE,
    description="a directory on this machine or a mounted share (NFS, Lustre, ...)",
    options=(
        InitOption("path", "directory that holds the artifacts, e.g. /data/cmf-store", required=True,
                   metavar="DIR"),
    ),
    jobs=4,
)


class LocalStore(ObjectStore):
    """Objects as files under ``root`` (``root/files/md5/xx/yyyy``), written to a temp name then renamed.

    A push of many small files spends its time per file, so :meth:`put` makes each folder once per
    store (not one ``mkdir`` per file), names its temp file without a system call and copies with
    ``sendfile`` straight away (``shutil.copyfile`` first stats both files four times): 10,000 puts of
    1 KB took 1.2-2.8 s that way and 0.35-1.1 s this way.  :meth:`get` reads a small file in one read
    of its size (10,000 gets of 1 KB: 0.18 s through ``shutil.copyfileobj``, 0.07 s so)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: Set[str] = set()  # folders this store has made or found (adding to a set is thread-safe)

    def exists(self, keys: Sequence[str]) -> Set[str]:
        def list_folder(folder: str) -> List[str]:
            try:
                return os.listdir(self.root / folder)
            except FileNotFoundError:
                return []

        return layout.listed(keys, list_folder)

    def put(self, src: Path, key: str) -> None:
        target = f"{self.root}/{key}"
        folder, _, name = target.rpartition("/")
        # a fresh name, not a truncated mkstemp file: ext4 flushes files truncated and rewritten on close
        tmp = f"{folder}/.{name}.{_token()}.tmp"
        with open(src, "rb") as source:
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            try:
                out = os.open(tmp, _NEW_FILE, 0o666)
            except FileNotFoundError:  # the folder went away since this store made it (the store was emptied)
                os.makedirs(folder, exist_ok=True)
                out = os.open(tmp, _NEW_FILE, 0o666)
            try:
                try:
                    _copy(source, out)
                finally:
                    os.close(out)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise

    def get(self, key: str, dst: BinaryIO) -> None:
        try:
            fd = os.open(f"{self.root}/{key}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(key, str(self.root)) from None
        try:
            for block in layout.blocks(fd):
                dst.write(block)
        finally:
            os.close(fd)


_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOTSOCK}
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_process = f"{os.getpid()}-{os.urandom(4).hex()}"
_count = itertools.count()


def _new_process() -> None:
    global _process
    _process = f"{os.getpid()}-{os.urandom(4).hex()}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)  # a forked helper names its temp files apart from its parent's


def _token() -> str:
    """A name no other writer uses: this process (pid and random bits, for stores shared between hosts) and a
    counter (``next`` on a count is atomic under the GIL)."""
    return f"{_process}-{next(_count)}"


def _copy(source: BinaryIO, out: int) -> None:
    """Copy the open file ``source`` into the descriptor ``out`` in the kernel (``sendfile``), or through
    a buffer where the file systems refuse that."""
    offset = 0
    try:
        while True:
            sent = os.sendfile(out, source.fileno(), offset, 1 << 30)
            if not sent:
                return
            offset += sent
    except (OSError, AttributeError) as exc:  # AttributeError: no os.sendfile on this system
        if offset or isinstance(exc, OSError) and exc.errno not in _NO_SENDFILE:
            raise
    while True:  # nothing was written yet
        block = source.read(layout.CHUNK)
        if not block:
            return
        view = memoryview(block)
        while view:
            view = view[os.write(out, view):]


class LocalBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        value = str(options["path"])
        if "://" in value:
            raise ConfigError(f"--path must be a local directory, not the URL {value!r}")
        path = Path(value).expanduser().absolute()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--path {value!r} exists and is not a directory")
        return Remote(type=TYPE, name="local-storage", url=str(path))

    def open(self, remote: Remote) -> ObjectStore:
        root = Path(remote.url)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"local repository {root} is not a directory")
        return LocalStore(root)


plugin = LocalBackend()
