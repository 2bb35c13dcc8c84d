"""``cmf init local``: an artifact repository in a directory of this machine or a mounted share."""
from __future__ import annotations

import os
import shutil
import uuid
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
    """Objects as files under ``root`` (``root/files/md5/xx/yyyy``), written to a temp name then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, keys: Sequence[str]) -> Set[str]:
        def list_folder(folder: str) -> List[str]:
            try:
                return os.listdir(self.root / folder)
            except FileNotFoundError:
                return []

        return layout.listed(keys, list_folder)

    def put(self, src: Path, key: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        # a fresh name, not a truncated mkstemp file: ext4 flushes files truncated and rewritten on close
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, key: str, dst: BinaryIO) -> None:
        try:
            with open(self.root / key, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        except FileNotFoundError:
            raise ObjectNotFound(key, str(self.root)) from None


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
