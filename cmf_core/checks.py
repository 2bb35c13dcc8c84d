"""Input checks that backends share when they validate ``cmf init`` options.

Each raises :class:`ConfigError` with a one-line message that names the option.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple
from urllib.parse import SplitResult, urlsplit

from cmf_core.errors import ConfigError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def url(value: str, option: str, schemes: Sequence[str], example: str) -> SplitResult:
    """Parse ``value`` as a URL with one of ``schemes`` and a host."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{flag(option)} {value!r} is not a valid URL ({exc}); expected e.g. {example}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{flag(option)} must look like {example}, not {value!r}")
    return parts


def s3_url(value: str, option: str = "url") -> Tuple[str, str]:
    """Split ``s3://bucket[/prefix]`` into bucket and prefix (without slashes at the ends)."""
    example = "s3://bucket/optional/prefix"
    if not value.startswith("s3://"):
        raise ConfigError(f"{flag(option)} must look like {example}, not {value!r}")
    bucket, _, prefix = value[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{flag(option)}: {bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"{flag(option)}: prefix {prefix!r} has an empty, '.' or '..' segment")
    if not prefix.isascii():  # DVC's config file (configobj) is written as ASCII and refuses it
        raise ConfigError(f"{flag(option)}: prefix {prefix!r} is not ASCII, which DVC's config cannot hold")
    return bucket, prefix


def readable_file(value: str, option: str) -> Path:
    """An existing, readable regular file; ``~`` is expanded."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{flag(option)} {value!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag(option)} {value!r} is not readable")
    return path.resolve()


def all_or_none(values: Dict[str, Optional[object]]) -> bool:
    """True when every value is given, False when none is; a ConfigError for a partial set."""
    given = {k: v not in (None, "") for k, v in values.items()}
    if any(given.values()) and not all(given.values()):
        missing = ", ".join(flag(k) for k, ok in given.items() if not ok)
        together = ", ".join(flag(k) for k in values)
        raise ConfigError(f"{together} go together; missing {missing}")
    return all(given.values())


def s3_secrets(options: Dict[str, Optional[object]]) -> Dict[str, str]:
    """DVC's S3 secret options from the ``cmf init`` options of either S3 backend.

    The access key and secret go together; a session token needs both.
    """
    secrets: Dict[str, str] = {}
    if all_or_none({"access_key_id": options.get("access_key_id"), "secret_key": options.get("secret_key")}):
        secrets = {"access_key_id": str(options["access_key_id"]), "secret_access_key": str(options["secret_key"])}
    if options.get("session_token"):
        if not secrets:
            raise ConfigError("--session-token needs --access-key-id and --secret-key")
        secrets["session_token"] = str(options["session_token"])
    return secrets
