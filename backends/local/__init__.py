"""``cmf init local``: an artifact repository in a directory of this machine or a mounted share."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from cmf_core.backend import Backend
from cmf_core.errors import ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, Remote

TYPE = "local"
SPEC = BackendSpec(
    type=TYPE,
    description="a directory on this machine or a mounted share (NFS, Lustre, ...)",
    options=(
        InitOption("path", "directory that holds the artifacts, e.g. /data/cmf-store", required=True,
                   metavar="DIR"),
    ),
)


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


plugin = LocalBackend()
