"""The typed Python API of cmf. The CLI and the ``cmflib`` facade are thin layers over it.

Functions here return results and raise :class:`cmf_core.errors.CmfError`
subclasses; they never print, exit, or change the working directory.
"""
from __future__ import annotations

import contextlib

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from cmf_core import config, plugins
from cmf_core.errors import CmfError, ConfigError, PluginError
from cmf_core.hookspecs import BackendSpec
from cmf_core.plugins import BackendInfo
from cmf_core.workspace import GIT_REMOTE, InitRequest, InitResult, initialize

__all__ = ["init", "show", "backends", "backend_spec", "resolve_options", "InitResult", "BackendInfo",
           "pipeline_list", "execution_list", "artifact_list", "metadata_export", "dvc_ingest"]


def _root(workspace: Optional[os.PathLike]) -> Path:
    root = Path(workspace or os.getcwd()).resolve()
    if not root.is_dir():
        raise ConfigError(f"workspace {root} is not a directory")
    return root


def backend_spec(repo_type: str) -> BackendSpec:
    """The spec (options, requirements) of one installed backend; loads only that backend."""
    return plugins.load_backend(repo_type)[1]


def resolve_options(spec: BackendSpec, given: Mapping[str, Any]) -> Dict[str, Any]:
    """Check ``given`` against the options ``spec`` declares: defaults, env vars, types, required.

    Empty strings count as not given, as in the original ``cmf_init``.
    """
    known = {opt.name: opt for opt in spec.options}
    unknown = sorted(k for k, v in given.items() if k not in known and v not in (None, "", False, 0))
    if unknown:
        takes = ", ".join(opt.flag for opt in spec.options) or "no options"
        raise ConfigError(
            f"cmf init {spec.type} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}; "
            f"it takes {takes}"
        )
    values: Dict[str, Any] = {}
    for opt in spec.options:
        value = given.get(opt.name)
        if value in (None, "") and opt.envvar:
            value = os.environ.get(opt.envvar) or None
        if value in (None, ""):
            value = opt.default
        if opt.is_flag:
            value = bool(value)
        elif value is not None and opt.type is not str:
            try:
                value = opt.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{opt.flag} must be {opt.type.__name__}, not {value!r}") from None
        if opt.required and value in (None, ""):
            env = f" (or set {opt.envvar})" if opt.envvar else ""
            raise ConfigError(f"missing option {opt.flag}{env} for cmf init {spec.type}")
        values[opt.name] = value
    return values


def init(
    repo_type: str,
    options: Optional[Mapping[str, Any]] = None,
    *,
    git_remote_url: str = "",
    cmf_server_url: Optional[str] = None,
    neo4j_user: Optional[str] = None,
    neo4j_password: Optional[str] = None,
    neo4j_uri: Optional[str] = None,
    workspace: Optional[os.PathLike] = None,
) -> InitResult:
    """Initialise (or re-initialise) a workspace for an artifact repository of ``repo_type``.

    ``options`` are the backend's own options (see ``cmf init <type> --help``).
    All input is validated before anything is written; on any failure the
    workspace is left as it was and a :class:`ConfigError` (bad input) or
    :class:`CmfError` is raised.
    """
    root = _root(workspace)
    pm, spec = plugins.load_backend(repo_type)
    values = resolve_options(spec, options or {})
    request = InitRequest(git_remote_url, cmf_server_url, neo4j_user, neo4j_password, neo4j_uri)
    request.validate()
    remote = pm.hook.cmf_backend_configure(repo_type=repo_type, options=values)
    if remote is None:
        raise PluginError(f"backend {repo_type!r} returned no remote for its options")
    remote.type = repo_type
    return initialize(root, remote, request)


def _git_remote_url(root: Path) -> Optional[str]:
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
        return repo.remotes[GIT_REMOTE].url if GIT_REMOTE in [r.name for r in repo.remotes] else None
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def show(workspace: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """The workspace's stored config with every secret masked, as a JSON-ready dict."""
    cfg = config.load(_root(workspace))
    remote = None
    if cfg.remote:
        r = cfg.remote
        remote = {
            "name": r.name,
            "url": config.mask_url(r.url),
            "default": cfg.default_remote,
            "stored_in": ".dvc/config" if r.dvc else config.config_file(cfg.root).name,
            "options": {k: config.masked(v, k in config.SECRET_DVC_OPTIONS) for k, v in sorted(r.options.items())},
            "secrets": {k: config.masked(v, secret=True) for k, v in sorted(r.secrets.items())},
            "settings": {k: config.masked(v) for k, v in sorted(r.settings.items())},
        }
    git_url = _git_remote_url(cfg.root)
    return {
        "workspace": str(cfg.root),
        "repository_type": cfg.type,
        "remote": remote,
        "cmf_server_url": config.mask_url(cfg.server_url),
        "git_remote": {"name": GIT_REMOTE, "url": config.mask_url(git_url)} if git_url else None,
        "neo4j": {k: config.masked(v, k == "password") for k, v in sorted(cfg.neo4j.items())} or None,
        "warnings": list(cfg.warnings),
    }


def backends(strict: Optional[bool] = None) -> List[BackendInfo]:
    """Every installed backend with its distribution, version and status (broken ones included)."""
    return plugins.load_all(strict)[1]


# -- metadata: lists, export, dvc ingest --------------------------------------------------------


def _query(mlmd: str):
    from cmf_core.metadata.query import CmfQuery

    return CmfQuery(mlmd)


def _rows(frame) -> List[Dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python)."""
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def _pipeline(query, pipeline: str, mlmd: str) -> None:
    names = query.get_pipeline_names()
    if pipeline not in names:
        raise CmfError(f"pipeline {pipeline!r} is not in {mlmd}; it has: {', '.join(names) or 'no pipelines'}")


def pipeline_list(mlmd: str = "mlmd") -> List[str]:
    """Names of the pipelines recorded in ``mlmd``."""
    return list(_query(mlmd).get_pipeline_names())


def execution_list(pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None) -> List[Dict[str, Any]]:
    """Executions of ``pipeline`` (all properties), optionally only the one with ``execution_uuid``."""
    query = _query(mlmd)
    _pipeline(query, pipeline, mlmd)
    rows = _rows(query.get_all_executions_in_pipeline(pipeline))
    if execution_uuid:
        rows = [r for r in rows if execution_uuid in str(r.get("Execution_uuid", "")).split(",")]
        if not rows:
            raise CmfError(f"no execution with uuid {execution_uuid} in pipeline {pipeline!r}")
    return rows


def artifact_list(pipeline: str, mlmd: str = "mlmd", artifact_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """Artifacts of ``pipeline``; ``artifact_name`` matches a full name, a path or a file name."""
    query = _query(mlmd)
    _pipeline(query, pipeline, mlmd)
    rows = query.artifact_rows(pipeline)
    if artifact_name:
        def matches(row: Dict[str, Any]) -> bool:
            name = str(row.get("name", ""))
            path = name.split(":", 1)[0]
            return artifact_name in (name, path, os.path.basename(path))

        rows = [r for r in rows if matches(r)]
        if not rows:
            raise CmfError(f"no artifact named {artifact_name!r} in pipeline {pipeline!r}")
    return rows


def metadata_export(pipeline: str, mlmd: str = "mlmd", json_file: Optional[str] = None,
                    force: bool = False) -> Path:
    """Write the pipeline's export JSON (the original's format) to ``json_file`` (default ``<pipeline>.json``).

    An existing file is replaced only with ``force``; the file is written whole or not at all.
    """
    query = _query(mlmd)
    _pipeline(query, pipeline, mlmd)
    target = Path(json_file or f"{pipeline}.json")
    if target.suffix != ".json":
        target = target.with_name(target.name + ".json")
    if target.is_dir():
        raise ConfigError(f"{target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ConfigError(f"directory {target.parent} does not exist")
    if target.exists() and not force:
        raise CmfError(f"{target} exists; use --force to replace it")
    text = json.dumps(json.loads(query.dumptojson(pipeline, None)), indent=2)
    config.write_public(target, text + "\n")
    return target


def dvc_ingest(mlmd: str = "mlmd", lock: Optional[str] = None, pipeline: Optional[str] = None):
    """Record the pipeline of ``dvc.lock`` in ``mlmd`` (see :mod:`cmf_core.metadata.ingest`)."""
    from cmf_core.metadata.ingest import ingest_dvc_lock

    return ingest_dvc_lock(mlmd, lock, pipeline)


# -- artifacts: push and pull ---------------------------------------------------------------------


def _transfer(direction: str, pipeline: str, mlmd: str, artifact: Optional[str], execution_uuid: Optional[str],
              jobs: Optional[int], dry_run: bool, store, progress: Optional[bool]):
    import time

    from cmf_core import transfer

    started = time.monotonic()
    base = Path(mlmd).absolute().parent
    workspace = config.load(config.find_workspace(base))
    if workspace.remote is None:
        raise ConfigError("no artifact repository configured: run 'cmf init <type>'")
    selected, not_files = transfer.select(mlmd, pipeline, artifact, execution_uuid)
    result = transfer.TransferResult(direction, dry_run=dry_run, not_files=not_files)
    loaded = plugins.load_backend(workspace.remote.type)
    own = store is None
    if own:
        store = plugins.open_store(workspace.remote, loaded)
    try:
        cache = workspace.cache_settings
        reopen = (lambda: plugins.open_store(workspace.remote, loaded)) if own else None
        engine = transfer.Engine(transfer.Workspace(base, cache), store, jobs or loaded[1].jobs, progress, reopen)
        with contextlib.nullcontext() if dry_run else transfer.lock(cache):
            getattr(engine, direction)(selected, result)
    finally:
        if own:
            store.close()
    result.seconds = time.monotonic() - started
    return result


def artifact_push(pipeline: str, mlmd: str = "mlmd", artifact: Optional[str] = None,
                  execution_uuid: Optional[str] = None, jobs: Optional[int] = None, dry_run: bool = False,
                  store=None, progress: Optional[bool] = None):
    """Push the objects of a pipeline's artifacts (or one artifact / one execution) to the artifact repository.

    Returns a :class:`cmf_core.transfer.TransferResult`; ``result.ok`` is False when anything failed.
    ``store`` replaces the configured backend's store (tests wrap it to inject faults).
    """
    return _transfer("push", pipeline, mlmd, artifact, execution_uuid, jobs, dry_run, store, progress)


def artifact_pull(pipeline: str, mlmd: str = "mlmd", artifact: Optional[str] = None,
                  execution_uuid: Optional[str] = None, jobs: Optional[int] = None, dry_run: bool = False,
                  store=None, progress: Optional[bool] = None):
    """Pull the artifacts of a pipeline (or one artifact / one execution) into the workspace, md5-verified."""
    return _transfer("pull", pipeline, mlmd, artifact, execution_uuid, jobs, dry_run, store, progress)


# -- the metadata server: metadata push/pull, repo push/pull --------------------------------------------

__all__ += ["metadata_push", "metadata_pull", "repo_push", "repo_pull", "RepoResult"]


def _server_client(mlmd: str, timeout: Optional[float] = None):
    """The metadata server client of the workspace holding ``mlmd`` (its ``[cmf] server-url`` and token),
    waiting ``timeout`` seconds for an answer (default: ``$CMF_SERVER_TIMEOUT``, else an hour)."""
    from cmf_core.server.client import MetadataClient

    return MetadataClient.for_workspace(config.find_workspace(Path(mlmd).absolute().parent), timeout)


def metadata_push(pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None,
                  tensorboard: Optional[str] = None, client=None, *, force: bool = False,
                  timeout: Optional[float] = None):
    """Push the pipeline's metadata (only ``execution_uuid``'s execution if given) to the workspace's metadata
    server, then the python-env files and label CSVs it references and the ``tensorboard`` logs.

    ``force``: replace the values the server holds of executions and artifacts this push changes (without it
    such a push is refused, HTTP 409).  ``timeout``: seconds to wait for the server's answer; the push is never
    sent twice, so when they run out it may still be merging on the server.
    Returns a :class:`cmf_core.server.client.PushResult` (``status`` "success" or "exists").
    """
    from cmf_core.server.client import push_metadata

    own = client is None
    client = client or _server_client(mlmd, timeout)
    try:
        return push_metadata(client, pipeline, mlmd, execution_uuid or None, tensorboard or None, force=force)
    finally:
        if own:
            client.close()


def metadata_pull(pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None, client=None, *,
                  timeout: Optional[float] = None):
    """Pull the pipeline (only ``execution_uuid``'s execution if given) from the metadata server into ``mlmd``,
    created if missing; a failed pull leaves ``mlmd`` as it was. ``timeout``: seconds to wait for the server's
    answer (a pull that times out is tried again). Returns a ``PullResult``."""
    from cmf_core.server.client import pull_metadata

    own = client is None
    client = client or _server_client(mlmd, timeout)
    try:
        return pull_metadata(client, pipeline, mlmd, execution_uuid or None)
    finally:
        if own:
            client.close()


class RepoResult:
    """What ``cmf repo push|pull`` did, step by step."""

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self.steps: List[tuple] = []  # (step name, its result)

    def summary(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text, _ in self.steps)


def _git(cwd: Path, *args: str) -> str:
    """Run git non-interactively (a credential prompt would hang); its output, or CmfError with its message."""
    import subprocess

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise CmfError(f"git {args[0]} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return proc.stdout.strip()


def _git_branch(cwd: Path) -> str:
    from cmf_core.workspace import GIT_REMOTE

    try:
        branch = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
    except CmfError:
        raise CmfError("HEAD is detached or this is not a git repository; check out a branch first") from None
    try:
        _git(cwd, "remote", "get-url", GIT_REMOTE)
    except CmfError:
        raise CmfError(f"no git remote {GIT_REMOTE}; run 'cmf init <type> --git-remote-url URL'") from None
    return branch


def _step(result: RepoResult, number: int, name: str, run, progress) -> None:
    """Run one step of a repo push/pull; any failure stops the rest with the step named."""
    total = 3
    try:
        text, value = run()
    except CmfError as exc:
        raise CmfError(f"repo {result.direction} stopped at step {number}/{total} ({name}): {exc}") from None
    result.steps.append((name, text, value))
    if progress:
        progress(f"[{number}/{total}] {name}: {text}")


def _transfer_text(transfer) -> str:
    if not transfer.ok:
        first = transfer.failed[0] if transfer.failed else ("", "failed")
        raise CmfError(f"{len(transfer.failed)} objects failed, first: {first[0]}: {first[1]}")
    return f"{transfer.moved} objects moved, {transfer.skipped} already in place"


def repo_push(pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None,
              tensorboard: Optional[str] = None, jobs: Optional[int] = None, progress=None, *,
              timeout: Optional[float] = None) -> RepoResult:
    """Artifacts to the artifact repository, metadata to the server, then ``git push cmf_origin <branch>``.

    The first failing step raises a CmfError naming it; the later steps do not run.
    ``progress`` (optional) is called with one line per finished step; ``timeout`` is the metadata push's
    (see :func:`metadata_push`).
    """
    from cmf_core.workspace import GIT_REMOTE

    cwd = Path(mlmd).absolute().parent
    branch = _git_branch(cwd)  # checked first: a push that cannot reach git should not start
    result = RepoResult("push")

    def artifacts():
        transfer = artifact_push(pipeline, mlmd, execution_uuid=execution_uuid, jobs=jobs)
        return _transfer_text(transfer), transfer

    def metadata():
        pushed = metadata_push(pipeline, mlmd, execution_uuid, tensorboard, timeout=timeout)
        return f"{pushed.status}, {len(pushed.uploaded)} files uploaded", pushed

    def git_push():
        _git(cwd, "push", GIT_REMOTE, branch)
        return f"pushed {branch} to {GIT_REMOTE}", branch

    _step(result, 1, "artifact push", artifacts, progress)
    _step(result, 2, "metadata push", metadata, progress)
    _step(result, 3, "git push", git_push, progress)
    return result


def repo_pull(pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None,
              jobs: Optional[int] = None, progress=None, *, timeout: Optional[float] = None) -> RepoResult:
    """Metadata from the server, then the artifacts (of ``execution_uuid`` only, if given), then
    ``git pull cmf_origin <branch>``; the first failing step raises a CmfError naming it. ``timeout`` is the
    metadata pull's (see :func:`metadata_pull`)."""
    from cmf_core.workspace import GIT_REMOTE

    cwd = Path(mlmd).absolute().parent
    branch = _git_branch(cwd)
    result = RepoResult("pull")

    def metadata():
        pulled = metadata_pull(pipeline, mlmd, execution_uuid, timeout=timeout)
        return pulled.status, pulled

    def artifacts():
        transfer = artifact_pull(pipeline, mlmd, execution_uuid=execution_uuid, jobs=jobs)
        return _transfer_text(transfer), transfer

    def git_pull():
        _git(cwd, "pull", "--no-rebase", "--no-edit", GIT_REMOTE, branch)
        return f"pulled {branch} from {GIT_REMOTE}", branch

    _step(result, 1, "metadata pull", metadata, progress)
    _step(result, 2, "artifact pull", artifacts, progress)
    _step(result, 3, "git pull", git_pull, progress)
    return result
