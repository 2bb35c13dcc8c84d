"""A third-party cmf backend: every object in one flat folder, named by its key's md5 part."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Dict, Sequence, Set

from cmf_core.errors import ConfigError, ObjectNotFound
from cmf_core.backend import Backend
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "flatdir"
SPEC = BackendSpec(
    type=TYPE,
    description="one flat folder of objects named by md5 (example third-party backend)",
    options=(InitOption("root", "folder that holds the objects", required=True, metavar="DIR"),),
)


class FlatDirStore(ObjectStore):
    """Maps ``files/md5/ab/cdef...`` to ``<root>/abcdef...``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        *_, head, tail = key.split("/")
        return self.root / (head + tail)

    def exists(self, keys: Sequence[str]) -> Set[str]:
        present = set(os.listdir(self.root)) if self.root.is_dir() else set()
        return {k for k in keys if self._path(k).name in present}

    def put(self, src: Path, key: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
            os.replace(tmp, self._path(key))
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, key: str, dst: BinaryIO) -> None:
        try:
            with open(self._path(key), "rb") as inp:
                shutil.copyfileobj(inp, dst, 1 << 20)
        except FileNotFoundError:
            raise ObjectNotFound(key, str(self.root)) from None


class FlatDirBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        root = Path(str(options["root"])).expanduser().absolute()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"--root {options['root']!r} is not a directory")
        return Remote(type=TYPE, name="flatdir", url=str(root), dvc=False)

    def open(self, remote: Remote) -> ObjectStore:
        return FlatDirStore(Path(remote.url))


plugin = FlatDirBackend()
