"""Exceptions of cmf. Library code raises these; only the CLI turns them into exit codes."""
from __future__ import annotations


class CmfError(Exception):
    """Base class of every error cmf reports to the user. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(CmfError):
    """Bad input to ``cmf init`` or a malformed stored config (exit status 2)."""

    exit_code = 2


class NotInitialized(CmfError):
    """The workspace has no cmf config: ``cmf init <type>`` has not been run."""


class PluginError(CmfError):
    """A backend plugin is missing, failed to import, or broke the hook contract."""


class BackendError(CmfError):
    """A permanent failure of the artifact repository (credentials, missing bucket, permissions)."""


class TransientError(BackendError):
    """A failure worth retrying: connection reset, timeout, throttling, HTTP 5xx."""


class ObjectNotFound(BackendError):
    """The repository does not hold the requested key."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"object {key} not found" + (f" in {where}" if where else ""))


class CorruptSource(BackendError):
    """A local file to upload whose bytes are not the md5 its key names (a rotted DVC cache file): it is
    never stored, since everyone who pulls the key would get it."""

    def __init__(self, src: object, md5: str) -> None:
        super().__init__(f"{src} is corrupt: its md5 is not {md5}, the object it should be; not uploaded")
