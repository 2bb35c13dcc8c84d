"""Names that become file or folder names: pipeline names and upload file names.

The metadata server stores a pipeline's tensorboard logs under ``tensorboard/<pipeline>/`` and uploads under
their file names in its data directory, and the merge stores pipeline names that other stores pull and sync.
One rule for all of them, here, so that the server's wire fields and the names inside a payload (checked by
:mod:`cmf_core.metadata.merge` on push, pull and sync) can never disagree.
"""
from __future__ import annotations

import unicodedata
from typing import Optional

from cmf_core.errors import CmfError

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "UnsafeName", "check_name"]

#: The longest file or folder name most file systems (ext4, XFS, APFS, NTFS) accept, in UTF-8 bytes.
MAX_NAME_BYTES = 255
#: The longest nested name (a tensorboard file's relative path): well inside PATH_MAX (4096) with the data
#: directory in front of it.
MAX_PATH_BYTES = 1024


class UnsafeName(CmfError):
    """A file or pipeline name that could escape the data directory or not be storable as a file name."""


def check_name(name: Optional[str], what: str, nested: bool = False) -> str:
    """``name`` if it is safe as a path under the data directory, else :class:`UnsafeName` naming ``what``.

    Refused: empty, not valid UTF-8 (a lone surrogate), control characters (C0, DEL, C1), backslashes,
    absolute paths, ``.``/``..``/empty components, a component over :data:`MAX_NAME_BYTES` UTF-8 bytes (a whole
    nested name over :data:`MAX_PATH_BYTES`) and, unless ``nested`` (tensorboard files keep their relative
    paths), any ``/``.
    """
    if not name:
        raise UnsafeName(f"{what} is empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeName(f"{what} {name!r} is not valid UTF-8") from None
    if "\\" in name or any(unicodedata.category(c) == "Cc" for c in name):
        raise UnsafeName(f"{what} {name!r} has a control character or a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeName(f"{what} {name!r} is an absolute path")
    parts = name.split("/")
    if len(parts) > 1 and not nested:
        raise UnsafeName(f"{what} {name!r} has a '/'")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeName(f"{what} {name!r} has an empty, '.' or '..' component")
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        too_long = "is" if len(parts) == 1 else "has a part"
        raise UnsafeName(f"{what} {name[:40]!r}... {too_long} longer than {MAX_NAME_BYTES} bytes (UTF-8)")
    if len(name.encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafeName(f"{what} {name[:40]!r}... is longer than {MAX_PATH_BYTES} bytes (UTF-8)")
    return name
