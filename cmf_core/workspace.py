"""Setting up a workspace: git, DVC and the cmf config, all or nothing.

:func:`initialize` validates every input first, then writes. The writes run
under :class:`Undo`, which restores every file it touched (and removes the
``.git``/``.dvc`` it created) if anything fails, so a failed ``cmf init`` leaves
the workspace as it found it.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from cmf_core import config
from cmf_core.errors import CmfError, ConfigError
from cmf_core.hookspecs import Remote

GIT_REMOTE = "cmf_origin"


class Undo:
    """Remembers files and directories before they change; :meth:`restore` puts them back."""

    def __init__(self) -> None:
        self._files: Dict[Path, Optional[bytes]] = {}
        self._created: List[Path] = []

    def watch(self, *paths: Path) -> None:
        for path in paths:
            if path not in self._files:
                self._files[path] = path.read_bytes() if path.is_file() else None

    def created(self, directory: Path) -> None:
        self._created.append(directory)

    def restore(self) -> None:
        for directory in reversed(self._created):
            shutil.rmtree(directory, ignore_errors=True)
        for path, content in self._files.items():
            if content is None:
                if path.is_file():
                    path.unlink()
            elif path.parent.is_dir():
                path.write_bytes(content)


@dataclass
class InitResult:
    """What ``cmf init`` did."""

    root: Path
    type: str
    remote: Remote
    created_git: bool = False
    created_dvc: bool = False
    staged: List[str] = field(default_factory=list)


@dataclass
class InitRequest:
    """Validated inputs of ``cmf init`` that are common to every repository type."""

    git_remote_url: str
    cmf_server_url: Optional[str] = None
    neo4j_user: Optional[str] = None
    neo4j_password: Optional[str] = None
    neo4j_uri: Optional[str] = None

    def validate(self) -> None:
        if not self.git_remote_url:
            raise ConfigError("missing option --git-remote-url (the git repository that receives 'cmf repo push')")
        if self.cmf_server_url and not self.cmf_server_url.startswith(("http://", "https://")):
            raise ConfigError(f"--cmf-server-url must be an http:// or https:// URL, not {self.cmf_server_url!r}")
        given = [bool(v) for v in (self.neo4j_user, self.neo4j_password, self.neo4j_uri)]
        if any(given) and not all(given):
            raise ConfigError("give all of --neo4j-user, --neo4j-password and --neo4j-uri, or none of them")


def _validate_dvc_remote(remote: Remote) -> None:
    if not remote.dvc:
        return
    from dvc.config import Config
    from dvc.config import ConfigError as DvcConfigError

    entry = {"url": remote.url, **remote.options, **remote.secrets}
    try:
        Config.validate({"remote": {remote.name: entry}})
    except DvcConfigError as exc:
        raise ConfigError(f"invalid settings for DVC remote {remote.name!r}: {exc}") from exc


@contextlib.contextmanager
def _quiet_dvc():
    """Keep DVC's progress chatter ("Initialized DVC repository") out of our output."""
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _find_git(root: Path):
    import git

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def _set_git_remote(repo, url: str) -> None:
    if GIT_REMOTE in [r.name for r in repo.remotes]:
        if repo.remotes[GIT_REMOTE].url != url:
            repo.remotes[GIT_REMOTE].set_url(url)
    else:
        repo.create_remote(GIT_REMOTE, url)


def _write_dvc_remote(root: Path, remote: Remote) -> None:
    from dvc.config import Config

    conf = Config(dvc_dir=str(root / ".dvc"))
    with conf.edit("repo") as repo_level:
        repo_level["remote"][remote.name] = {"url": remote.url, **remote.options}
        repo_level["core"]["remote"] = remote.name
    with conf.edit("local") as local_level:
        local_level["remote"].pop(remote.name, None)
        if remote.secrets:
            local_level["remote"][remote.name] = dict(remote.secrets)
    local = root / ".dvc" / "config.local"
    if local.exists():
        local.chmod(0o600)


def _write_cmfconfig(root: Path, remote: Remote, request: InitRequest) -> None:
    public = config.read_ini(config.config_file(root))
    private = config.read_ini(config.secrets_file(root))
    if not public.has_section("cmf"):
        public.add_section("cmf")
    cmf = public["cmf"]
    cmf["repository-type"] = remote.type
    cmf["remote"] = remote.name
    if request.cmf_server_url:
        cmf["server-url"] = request.cmf_server_url
    cmf.setdefault("server-url", config.DEFAULT_SERVER_URL)

    if request.neo4j_user:
        public.remove_section("neo4j")
        public["neo4j"] = {"user": request.neo4j_user, "uri": request.neo4j_uri or ""}
        private.remove_section("neo4j")
        private["neo4j"] = {"password": request.neo4j_password or ""}
    elif public.has_option("neo4j", "password"):  # the original's base64 password: move it out of git
        legacy = config.decode_legacy_password(public.get("neo4j", "password"))
        public.remove_option("neo4j", "password")
        if not private.has_option("neo4j", "password"):
            private["neo4j"] = {"password": legacy}

    for parser in (public, private):
        parser.remove_section(remote.name)
    section = dict(remote.settings)
    if not remote.dvc:
        section["url"] = remote.url
        section.update(remote.options)
        if remote.secrets:
            private[remote.name] = dict(remote.secrets)
    if section:
        public[remote.name] = section

    config.write_public(config.config_file(root), config.ini_text(public))
    if private.sections():
        config.write_private(config.secrets_file(root), config.ini_text(private))


def _check_ignored(repo, root: Path, paths: List[Path]) -> None:
    """Refuse to finish if git would track a file that holds secrets."""
    import git

    for path in paths:
        if not path.exists():
            continue
        rel = str(path.relative_to(repo.working_tree_dir))
        if rel in repo.git.ls_files(rel).splitlines():
            raise CmfError(f"{rel} holds secrets but is tracked by git; run 'git rm --cached {rel}' and re-run")
        try:
            repo.git.check_ignore("-q", "--no-index", rel)
        except git.GitCommandError:
            raise CmfError(f"{rel} holds secrets but git does not ignore it; fix .gitignore and re-run") from None


def initialize(root: Path, remote: Remote, request: InitRequest) -> InitResult:
    """Write git, DVC and cmf config for ``remote`` into ``root``; undo everything on failure."""
    import git
    from dvc.repo import Repo as DvcRepo

    request.validate()
    _validate_dvc_remote(remote)
    config.read_ini(config.config_file(root))  # a malformed existing config stops us before any write
    config.read_ini(config.secrets_file(root))
    config.read_dvc_levels(root)

    result = InitResult(root=root, type=remote.type, remote=remote)
    undo = Undo()
    secret_files = [config.secrets_file(root), root / ".dvc" / "config.local"]
    undo.watch(config.config_file(root), root / ".gitignore", root / ".dvc" / "config", root / ".dvcignore",
               *secret_files)
    try:
        repo = _find_git(root)
        if repo is None:
            undo.created(root / ".git")
            repo = git.Repo.init(root)
            result.created_git = True
        undo.watch(Path(repo.git_dir) / "config", Path(repo.git_dir) / "index")
        _set_git_remote(repo, request.git_remote_url)

        if not (root / ".dvc").is_dir():
            undo.created(root / ".dvc")
            subdir = Path(repo.working_tree_dir).resolve() != root
            with _quiet_dvc():
                DvcRepo.init(root_dir=str(root), subdir=subdir).close()
            result.created_dvc = True
        if remote.dvc:
            _write_dvc_remote(root, remote)
        _write_cmfconfig(root, remote, request)
        config.ensure_line(root / ".gitignore", f"/{config.SECRETS_FILE}")
        _check_ignored(repo, root, secret_files)

        staged = [p for p in (config.config_file(root), root / ".gitignore", root / ".dvc" / "config",
                              root / ".dvc" / ".gitignore", root / ".dvcignore") if p.exists()]
        repo.index.add([str(p.relative_to(repo.working_tree_dir)) for p in staged])
        repo.index.write()
        result.staged = [str(p.relative_to(root)) for p in staged]
    except BaseException as exc:
        undo.restore()
        if isinstance(exc, CmfError) or not isinstance(exc, Exception):
            raise
        raise CmfError(f"cmf init failed, workspace left unchanged: {type(exc).__name__}: {exc}") from exc
    return result
