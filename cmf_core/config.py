"""The stored config of a cmf workspace, and where its secrets live.

=========================  =========  ==================================================
file                       in git?    holds
=========================  =========  ==================================================
``.cmfconfig``             tracked    ``[cmf]`` repository-type, remote, server-url;
                                      ``[neo4j]`` user, uri; ``[<remote>]`` backend
                                      settings DVC has no option for
``.cmfconfig.local``       ignored    secrets of cmf itself (``[neo4j] password``), 0600
``.dvc/config``            tracked    the DVC remote: url and public options, default remote
``.dvc/config.local``      ignored    the DVC remote's secrets (keys, tokens, passwords), 0600
=========================  =========  ==================================================

Environment variables override stored secrets: ``CMF_NEO4J_PASSWORD``.
``CONFIG_FILE`` renames ``.cmfconfig`` as in the original cmflib.

A workspace written by the original cmflib 0.1.0 has no ``repository-type``:
its type is read off the name of the default DVC remote (``local-storage``,
``minio``, ``amazons3``, ``ssh-storage``, ``osdf``), and its base64 neo4j
password in ``.cmfconfig`` is still read, with a warning to re-run ``cmf init``.
"""
from __future__ import annotations

import base64
import binascii
import configparser
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from cmf_core.errors import CmfError, ConfigError, NotInitialized
from cmf_core.hookspecs import Remote

SECRETS_FILE = ".cmfconfig.local"
DEFAULT_SERVER_URL = "http://127.0.0.1:80"
#: Default DVC remote names of the original cmflib, by repository type.
ORIGINAL_REMOTE_TYPES = {
    "local-storage": "local",
    "minio": "minioS3",
    "amazons3": "amazonS3",
    "ssh-storage": "sshremote",
    "osdf": "osdfremote",
}
#: DVC remote options that are secrets wherever they appear.
SECRET_DVC_OPTIONS = frozenset(
    {"password", "access_key_id", "secret_access_key", "session_token", "passphrase", "token", "sas_token",
     "account_key", "client_secret", "key_passphrase"}
)
MASK = "********"


def seconds(text: Optional[str], what: str, default: float) -> float:
    """A duration given as text by ``what`` (an option or an environment variable): ``default`` when it is empty,
    else a number of seconds above 0 (a CmfError naming ``what`` and the text otherwise)."""
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise CmfError(f"{what} is a number of seconds above 0, not {text.strip()!r}")
    return value


def config_file(root: Path) -> Path:
    """Path of ``.cmfconfig`` (or of ``$CONFIG_FILE``) in workspace ``root``."""
    return root / os.environ.get("CONFIG_FILE", ".cmfconfig")


def find_workspace(start: Path) -> Path:
    """The nearest directory at or above ``start`` that holds the cmf config."""
    start = start.absolute()
    for candidate in (start, *start.parents):
        if config_file(candidate).is_file():
            return candidate
    raise NotInitialized(f"{start} is not inside a cmf workspace; run 'cmf init <type>' there first")


def secrets_file(root: Path) -> Path:
    return root / SECRETS_FILE


def read_ini(path: Path) -> configparser.ConfigParser:
    """Parse an INI file; a missing file is empty, a malformed one a ConfigError naming it."""
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        except (configparser.Error, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"malformed {path.name}: {first}") from exc
    return parser


def ini_text(parser: configparser.ConfigParser) -> str:
    from io import StringIO

    out = StringIO()
    parser.write(out)
    return out.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def write_public(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def ensure_line(path: Path, line: str) -> None:
    """Append ``line`` to a text file (a ``.gitignore``) unless it is already there."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if line not in text.splitlines():
        sep = "" if not text or text.endswith("\n") else "\n"
        write_public(path, f"{text}{sep}{line}\n")


def mask_url(url: str) -> str:
    """Hide the password of a URL with credentials (``https://user:token@host/...``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))


@dataclass
class WorkspaceConfig:
    """Everything ``cmf init`` stored for a workspace, secrets included (never print it raw)."""

    root: Path
    type: Optional[str]
    remote: Optional[Remote]
    server_url: str = DEFAULT_SERVER_URL
    neo4j: Dict[str, str] = field(default_factory=dict)
    default_remote: bool = True
    warnings: List[str] = field(default_factory=list)
    cache: Optional[Path] = None  # the DVC cache directory
    cache_settings: Optional[CacheSettings] = None


#: A section that names an entry, as DVC writes it: ``['remote "name"']`` is ``{"remote": {"name": {...}}}``.
DVC_NAMED_SECTION = re.compile(r'^\s*(remote|machine|db)\s*"(.*)"\s*$')
#: The options that DVC reads as paths relative to the config file's folder, by section.
DVC_PATH_OPTIONS = {
    "cache": ("dir",),
    "remote": ("url", "gdrive_user_credentials_file", "gdrive_service_account_json_file_path", "credentialpath",
               "configpath", "keyfile", "cert_path", "key_path"),
    "machine": ("startup_script", "setup_script"),
}


def _dvc_path(folder: str, value: object) -> object:
    """A path option as DVC reads it: a URL or an absolute path as it is, ``~`` expanded, else made absolute
    against ``folder``."""
    if not isinstance(value, str) or re.match(r"\w+://", value) or os.path.isabs(value):
        return value
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.abspath(os.path.join(folder, value))


def _lower_keys(data: dict) -> dict:
    return {key.lower(): _lower_keys(value) if isinstance(value, dict) else value for key, value in data.items()}


def read_dvc_file(path: Path) -> Dict[str, dict]:
    """One DVC config file as DVC's ``Config.load_one`` reads it, without importing DVC: that import costs
    every command that reads the workspace config (push, pull, logging) 0.1-0.2 s.

    The file is configobj INI, as DVC parses it: keys lower-cased, ``remote``/``machine``/``db`` entries
    by name, path options (``cache.dir``, a remote's ``url`` ...) absolute, ``a,b`` values as lists. The
    result always has ``core``, ``cache``, ``remote``, ``machine`` and ``db``; a missing file is empty, a
    malformed one a ConfigError naming it.
    """
    from configobj import ConfigObj, ConfigObjError

    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        sections = _lower_keys(ConfigObj(text.splitlines()).dict())
    except (ConfigObjError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"malformed DVC config {path}: {exc}") from exc
    conf: Dict[str, dict] = {"core": {}, "cache": {}, "remote": {}, "machine": {}, "db": {}}
    for section, values in sections.items():
        named = DVC_NAMED_SECTION.match(section)
        if not isinstance(values, dict):
            raise ConfigError(f"malformed DVC config {path}: {section!r} is outside any section")
        if named:
            conf[named[1]][named[2]] = values
        else:
            conf[section] = values
    folder = os.path.abspath(path.parent)
    entries = [("cache", conf["cache"])]
    entries += [(kind, entry) for kind in ("remote", "machine") for entry in conf[kind].values()]
    for kind, entry in entries:
        for option in DVC_PATH_OPTIONS[kind]:
            if option in entry:
                entry[option] = _dvc_path(folder, entry[option])
    return conf


def read_dvc_levels(root: Path) -> Dict[str, dict]:
    """The repo and local levels of the workspace's DVC config (not the user's global one)."""
    return {"repo": read_dvc_file(root / ".dvc" / "config"),
            "local": read_dvc_file(root / ".dvc" / "config.local")}


def cache_dir(root: Path, levels: Optional[Dict[str, dict]] = None) -> Path:
    """The DVC cache directory of the workspace at ``root`` (``.dvc/cache`` unless ``cache.dir`` says otherwise)."""
    return cache_settings(root, levels).dir


#: How DVC may place a cache file in the workspace, in its names (``cache.type``).
LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")


@dataclass(frozen=True)
class CacheSettings:
    """The DVC cache of a workspace as its ``[cache]`` section sets it up."""

    dir: Path
    types: Tuple[str, ...] = ("reflink", "copy")  # DVC's default: copy-on-write clones where the file system can
    configured: bool = False  # cache.type was set: a type the file system refuses is worth a note
    shared: bool = False  # cache.shared = group: folders group-writable (2775), as DVC makes them


def cache_settings(root: Path, levels: Optional[Dict[str, dict]] = None) -> CacheSettings:
    """``cache.dir``, ``cache.type`` and ``cache.shared`` of the workspace at ``root`` (the local level first)."""
    levels = read_dvc_levels(root) if levels is None else levels
    section = {**levels["repo"].get("cache", {}), **levels["local"].get("cache", {})}
    folder = section.get("dir")
    raw = section.get("type")
    types = [t.strip() for t in (raw.split(",") if isinstance(raw, str) else raw or []) if t.strip()]
    unknown = [t for t in types if t not in LINK_TYPES]
    if unknown:
        raise ConfigError(f"cache.type {raw!r} in the DVC config: {unknown[0]!r} is not one of {', '.join(LINK_TYPES)}")
    shared = str(section.get("shared", "")).strip().lower()
    if shared not in ("", "group"):
        raise ConfigError(f"cache.shared {section['shared']!r} in the DVC config: the only value is 'group'")
    return CacheSettings(dir=(root / ".dvc" / folder).resolve() if folder else root / ".dvc" / "cache",
                         types=tuple(dict.fromkeys(types)) or CacheSettings.types, configured=bool(types),
                         shared=shared == "group")


def _remote_from_dvc(repo_type: str, name: str, levels: Dict[str, dict], warnings: List[str]) -> Remote:
    tracked = dict(levels["repo"].get("remote", {}).get(name, {}))
    local = dict(levels["local"].get("remote", {}).get(name, {}))
    if not tracked and not local:
        raise ConfigError(f"DVC remote {name!r} is missing from .dvc/config; re-run cmf init {repo_type}")
    for key in sorted(SECRET_DVC_OPTIONS & set(tracked)):
        warnings.append(
            f"secret {key!r} of DVC remote {name!r} is in the git-tracked .dvc/config; "
            f"re-run 'cmf init {repo_type}' to move it to .dvc/config.local"
        )
    secrets = {k: str(v) for k, v in tracked.items() if k in SECRET_DVC_OPTIONS}
    secrets.update({k: str(v) for k, v in local.items()})
    public = {k: str(v) for k, v in tracked.items() if k not in secrets}
    url = public.pop("url", "")
    if not url:
        raise ConfigError(f"DVC remote {name!r} has no url; re-run cmf init {repo_type}")
    return Remote(type=repo_type, name=name, url=url, options=public, secrets=secrets)


def decode_legacy_password(value: str) -> str:
    """The original cmflib stores the neo4j password base64-encoded in ``.cmfconfig``."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return value


def load(root: Optional[Path] = None) -> WorkspaceConfig:
    """Read the stored config of the workspace at ``root`` (default: the current directory)."""
    root = Path(root or os.getcwd()).resolve()
    path = config_file(root)
    if not path.exists():
        raise NotInitialized(f"{root} is not a cmf workspace (no {path.name}); run 'cmf init <type>' first")
    public = read_ini(path)
    private = read_ini(secrets_file(root))
    levels = read_dvc_levels(root)
    warnings: List[str] = []

    cmf = public["cmf"] if public.has_section("cmf") else {}
    default_name = levels["repo"].get("core", {}).get("remote") or levels["local"].get("core", {}).get("remote")
    name = cmf.get("remote") or default_name
    repo_type = cmf.get("repository-type") or ORIGINAL_REMOTE_TYPES.get(name or "")

    remote = None
    if repo_type and name:
        if public.has_section(name) and public[name].get("url") and name not in levels["repo"].get("remote", {}):
            settings = dict(public[name])
            secrets = dict(private[name]) if private.has_section(name) else {}
            remote = Remote(repo_type, name, settings.pop("url"), settings=settings, secrets=secrets, dvc=False)
        else:
            remote = _remote_from_dvc(repo_type, name, levels, warnings)
            if public.has_section(name):
                remote.settings = dict(public[name])
    elif not repo_type:
        warnings.append("no artifact repository configured; run 'cmf init <type>'")

    cache = cache_settings(root, levels)
    neo4j = dict(public["neo4j"]) if public.has_section("neo4j") else {}
    stored_password = private.get("neo4j", "password", fallback=None)
    if "password" in neo4j:
        legacy = neo4j.pop("password")
        warnings.append("the neo4j password is in the git-tracked .cmfconfig; re-run cmf init to move it")
        if stored_password is None:
            stored_password = decode_legacy_password(legacy)
    password = os.environ.get("CMF_NEO4J_PASSWORD", stored_password)
    if password is not None:
        neo4j["password"] = password

    return WorkspaceConfig(
        root=root,
        type=repo_type,
        remote=remote,
        server_url=cmf.get("server-url", DEFAULT_SERVER_URL),
        neo4j=neo4j,
        default_remote=name == default_name,
        warnings=warnings,
        cache=cache.dir,
        cache_settings=cache,
    )


def masked(value: str, secret: bool = False) -> str:
    """``value`` as it may be printed: a secret replaced, the password of a URL hidden."""
    if secret:
        return MASK if value else ""
    return mask_url(value)
