"""The metadata server's client (what ``cmf metadata push|pull`` use), and push/pull built on it.

:class:`MetadataClient` speaks the original wire format (see :mod:`cmf_core.server.app`)
to ``<server-url>/api/...``.  It retries, with exponential backoff, what never reached
the server (connection refused, connect timeouts) and HTTP 503 ("try later": nothing was
done).  A push is never sent again once it was sent: the original server needs minutes
to merge a big pipeline (735 s for 1,000 executions) and a second copy would be merged
beside the first; a timeout or a lost connection then says that the push may still be
merging.  Pulls and uploads (a file stored under its name: a second copy replaces the
first with the same bytes) are repeated after any transient failure and any 5xx.  A 4xx
is never retried.  Every failure is one :class:`ServerError` line that says what to do:
401 (token), 404, 409 (``--force``), 413 (size limit), 422 (the payload's problem), 5xx.

The read timeout (how long to wait for an answer) is ``timeout`` seconds, else
``$CMF_SERVER_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`.

The token is read from ``CMF_SERVER_TOKEN`` or from ``[cmf] server-token`` in the
workspace's git-ignored ``.cmfconfig.local`` -- never from a tracked file.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import httpx

from cmf_core import config
from cmf_core.errors import CmfError
from cmf_core.layout import file_md5
from cmf_core.metadata.merge import MergeError, MergeResult, merge_pipeline, pipeline_of

__all__ = ["MetadataClient", "ServerError", "ServerUnavailable", "ServerNoAnswer", "ServerAuthError", "PushResult",
           "PullResult", "push_metadata", "pull_metadata", "server_token", "DEFAULT_TIMEOUT"]

TOKEN_ENV = "CMF_SERVER_TOKEN"
RETRIES_ENV = "CMF_SERVER_RETRIES"
TIMEOUT_ENV = "CMF_SERVER_TIMEOUT"
STEP_METRICS = "/step-metrics"
#: The one warning of a push to a server without ``/step-metrics`` (it answers 404 or 405).
OLD_SERVER = ("the server does not accept step metrics (an older cmf server); "
              "charts of step metrics will not show there")
#: Seconds to wait for an answer: the original server merges 1,000 executions in 735 s; an hour leaves room
#: for ~5,000 (ours merges them in seconds).
DEFAULT_TIMEOUT = 3600.0
CONNECT_TIMEOUT = 10.0
#: Failures before the request reached the server: any request may be sent again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Failures after (part of) the request was sent: its answer was late or lost.
NO_ANSWER = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
#: "Try later": the server (or a proxy before it) did not take the request.
UNAVAILABLE = 503
#: What a push that got no answer adds to its error.
MAY_BE_MERGING = ("the push may still be merging on the server: check with 'cmf metadata pull' or the UI "
                  "before pushing again")


class ServerError(CmfError):
    """The metadata server refused or failed a request (one line, for the user)."""

    def __init__(self, message: str, status: Optional[int] = None, detail: str = "") -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
        self.detail = detail  # the server's own reason, for a caller that words the error itself


class ServerUnavailable(ServerError):
    """The server could not be reached (connection refused, connect timeouts), retries exhausted."""


class ServerNoAnswer(ServerError):
    """A request was sent but its answer did not come: a read timeout or a lost connection."""


class ServerAuthError(ServerError):
    """HTTP 401/403: no token, or a token the server does not accept."""


def server_token(root: Optional[Path]) -> Optional[str]:
    """The bearer token: ``$CMF_SERVER_TOKEN``, else ``[cmf] server-token`` of the workspace's ``.cmfconfig.local``."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token or root is None:
        return token or None
    secrets = config.read_ini(config.secrets_file(root))
    return secrets.get("cmf", "server-token", fallback="").strip() or None


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                           for d in detail if isinstance(d, dict))
    return str(detail) if detail else response.text[:300]


def timeout_seconds(timeout: Optional[float] = None) -> float:
    """The read timeout: ``timeout`` if given, else ``$CMF_SERVER_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`;
    a CmfError naming the setting unless it is a number of seconds above 0."""
    if timeout is not None:
        return config.seconds(str(timeout), "timeout", DEFAULT_TIMEOUT)
    return config.seconds(os.environ.get(TIMEOUT_ENV), TIMEOUT_ENV, DEFAULT_TIMEOUT)


class MetadataClient:
    """Requests to one metadata server at ``url`` (``http(s)://host:port[/prefix]``)."""

    def __init__(self, url: str, token: Optional[str] = None, *, retries: int = 3, backoff: float = 0.5,
                 timeout: Union[float, httpx.Timeout] = DEFAULT_TIMEOUT,
                 transport: Optional[httpx.BaseTransport] = None) -> None:
        """``timeout``: seconds to wait for an answer (and at most 10 s to connect), or an httpx Timeout."""
        if not url.startswith(("http://", "https://")):
            raise CmfError(f"the metadata server url must start with http:// or https://, not {url!r}")
        base = url.rstrip("/")
        self.url = base
        self.api = base if base.endswith("/api") else base + "/api"
        self.retries, self.backoff = max(0, retries), backoff
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def for_workspace(cls, root: Path, timeout: Optional[float] = None) -> "MetadataClient":
        """The client of the server ``cmf init --cmf-server-url`` configured for the workspace at ``root``;
        ``timeout`` seconds to wait for an answer (default: :func:`timeout_seconds`)."""
        cfg = config.load(root)
        retries = os.environ.get(RETRIES_ENV, "3")
        if not retries.isdigit():
            raise CmfError(f"{RETRIES_ENV} must be a whole number, not {retries!r}")
        return cls(cfg.server_url, server_token(cfg.root), retries=int(retries), timeout=timeout_seconds(timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MetadataClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, what: str, method: str, path: str, *, repeatable: bool = True,
              upload: Optional[Tuple[str, Path]] = None, **kwargs: Any) -> httpx.Response:
        """One request with retries; ``upload`` = (file name, local path) is reopened, and streamed, per attempt.

        A request that is not ``repeatable`` is sent again only when it never reached the server (connection
        refused, connect timeout) or the server answered 503; a repeatable one also after a timeout, a lost
        connection or any 5xx."""
        url = self.api + path
        for attempt in range(self.retries + 1):
            tries = "tried once" if attempt == 0 else f"tried {attempt + 1} times"
            last = attempt == self.retries
            try:
                if upload is None:
                    response = self._http.request(method, url, **kwargs)
                else:
                    with open(upload[1], "rb") as fh:
                        response = self._http.request(method, url, files={"file": (upload[0], fh)}, **kwargs)
            except NOT_SENT as exc:
                if last:
                    raise ServerUnavailable(f"{what}: cannot reach the metadata server at {self.url}: "
                                            f"{exc or type(exc).__name__} ({tries})") from None
            except NO_ANSWER as exc:
                if last or not repeatable:
                    raise ServerNoAnswer(f"{what}: {self._no_answer(exc, tries)}") from None
            except httpx.HTTPError as exc:
                raise ServerError(f"{what}: request to {self.url} failed: {exc}") from None
            else:
                code = response.status_code
                if last or code < 500 or (code != UNAVAILABLE and not repeatable):
                    return self._check(what, response, attempt + 1)
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _no_answer(self, exc: httpx.HTTPError, tries: str) -> str:
        """Why a sent request got no answer, and what to do about a timeout."""
        if isinstance(exc, httpx.TimeoutException):
            seconds = self._http.timeout.read if isinstance(exc, httpx.ReadTimeout) else self._http.timeout.write
            return (f"the metadata server at {self.url} did not answer within {seconds:g} s ({tries}); give it "
                    f"longer with --timeout SECONDS or {TIMEOUT_ENV}")
        reason = str(exc).rstrip(".") or type(exc).__name__
        return f"the connection to the metadata server at {self.url} was lost: {reason} ({tries})"

    def _check(self, what: str, response: httpx.Response, attempts: int) -> httpx.Response:
        code = response.status_code
        if code < 400:
            return response
        reason = _reason(response)
        if code in (401, 403):
            raise ServerAuthError(f"{what}: the metadata server at {self.url} refused the token (HTTP {code}: "
                                  f"{reason}); set {TOKEN_ENV} or [cmf] server-token in {config.SECRETS_FILE}", code,
                                  reason)
        if code == 409:
            raise ServerError(f"{what}: the metadata server holds other values (HTTP 409: {reason}); push again "
                              f"with --force to replace the server's values", code)
        if code == 413:
            raise ServerError(f"{what}: too large for the metadata server (HTTP 413: {reason})", code)
        if code == 422:
            raise ServerError(f"{what}: the metadata server rejected the payload (HTTP 422: {reason})", code)
        if code >= 500:
            raise ServerError(f"{what}: the metadata server at {self.url} failed (HTTP {code} after {attempts} "
                              f"attempt{'s' if attempts > 1 else ''}: {reason})", code)
        raise ServerError(f"{what}: HTTP {code} from the metadata server at {self.url}: {reason}", code, reason)

    # -- the endpoints --------------------------------------------------------------------------------

    def read(self, path: str, params: Sequence[Tuple[str, str]] = ()) -> Any:
        """``GET /api<path>`` of the read API (the UI's JSON twins), with retries: its JSON answer."""
        response = self._send(f"reading {path}", "GET", path, params=list(params))
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"reading {path}: {self.url} answered something other than JSON; is it a cmf "
                              f"server?") from None

    def push(self, pipeline: str, payload: str, exec_uuid: Optional[str] = None, *,
             force: bool = False) -> Dict[str, Any]:
        """``POST /mlmd_push``, sent at most once (see the module's docstring); the server's answer (``status``
        is "success" or "exists").  ``force`` asks the server to replace the values it holds of executions and
        artifacts that this push changes (else it answers 409); without it the body is the original client's."""
        body: Dict[str, Any] = {"exec_uuid": exec_uuid, "json_payload": payload, "pipeline_name": pipeline}
        if force:
            body["force"] = True
        try:
            response = self._send(f"metadata push of {pipeline!r}", "POST", "/mlmd_push", repeatable=False,
                                  json=body)
        except ServerError as exc:  # no answer, or a proxy's "gateway timeout": the server may be merging it
            if isinstance(exc, ServerNoAnswer) or exc.status == 504:
                raise type(exc)(f"{exc}; {MAY_BE_MERGING}", exc.status) from None
            raise
        try:
            answer = response.json()
            answer["status"]
        except (ValueError, TypeError, KeyError):
            raise ServerError(f"metadata push of {pipeline!r}: {self.url} is not a cmf metadata server "
                              f"(unexpected answer {response.text[:100]!r})") from None
        return answer

    def pull(self, pipeline: str, exec_uuid: Optional[str] = None) -> str:
        """``POST /mlmd_pull``: the pipeline's export JSON (not yet validated)."""
        what = f"metadata pull of {pipeline!r}"
        try:
            response = self._send(what, "POST", "/mlmd_pull", json={"pipeline_name": pipeline, "exec_uuid": exec_uuid})
        except ServerError as exc:
            if exc.status == 404:
                raise ServerError(f"{what}: the metadata server at {self.url} has no pipeline {pipeline!r}", 404) \
                    from None
            raise
        if response.text.strip() == "no_exec_uuid":
            raise ServerError(f"{what}: the metadata server has no execution with uuid {exec_uuid} in that pipeline")
        return response.text

    def upload(self, endpoint: str, name: str, path: Path, pipeline: Optional[str] = None) -> Dict[str, Any]:
        """Stream one file as multipart ``file`` named ``name`` to ``/python-env``, ``/label``, ``/step-metrics``
        or ``/tensorboard``."""
        params = {"pipeline_name": pipeline} if pipeline is not None else None
        return self._send(f"upload of {path}", "POST", endpoint, upload=(name, path), params=params).json()


# -- push and pull of a pipeline -------------------------------------------------------------------------


@dataclass
class PushResult:
    """What ``cmf metadata push`` did."""

    pipeline: str
    server: str
    status: str  # "success" (something new was merged) or "exists"
    counts: Optional[Dict[str, int]]  # None: the server did not report counts (the original server does not)
    uploaded: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """Every field, for ``--json``."""
        return asdict(self)


@dataclass
class PullResult:
    """What ``cmf metadata pull`` did."""

    pipeline: str
    mlmd: Path
    status: str
    merged: MergeResult
    created: bool  # the mlmd file did not exist before


def _referenced_files(export: Dict[str, Any], base: Path) -> Tuple[List[Tuple[str, str, Path]], List[str]]:
    """(endpoint, upload name, local file) of the python-env files, label CSVs and step-metrics files the
    export names, once per upload name, and warnings for those not found next to the mlmd file (or in the
    current directory).  A step-metrics file is uploaded under its artifact's uri (its md5), and only while
    its bytes still have that md5: a later ``commit_metrics`` of the same name rewrites the file."""
    found: Dict[Tuple[str, str], Path] = {}
    warnings: List[str] = []

    def add(endpoint: str, name: str, rel: str, what: str) -> None:
        if not rel or not name or (endpoint, name) in found:
            return
        roots = [r.resolve() for r in (base, Path.cwd())]
        candidates = [p for p in (base / rel, Path(rel)) if p.is_file()]
        path = next((p for p in candidates if any(r in p.resolve().parents for r in roots)), None)
        if path is None and candidates:
            warnings.append(f"{what} {rel} is outside the workspace; not uploaded")
        elif path is None:
            warnings.append(f"{what} {rel} not found; not uploaded")
        elif endpoint == STEP_METRICS and file_md5(path) != name:
            warnings.append(f"{what} {rel} has changed since it was logged (md5 {name}); not uploaded")
        else:
            found[(endpoint, name)] = path

    for pipeline in export.get("Pipeline", []):
        for stage in pipeline.get("stages", []):
            for execution in stage.get("executions", []):
                env = (execution.get("custom_properties") or {}).get("Python_Env")
                if isinstance(env, str):
                    add("/python-env", os.path.basename(env), env, "python environment file")
                for event in execution.get("events", []):
                    artifact = event.get("artifact") or {}
                    labels = (artifact.get("custom_properties") or {}).get("labels_uri")
                    for label in str(labels or "").split(","):
                        rel, _, md5 = label.strip().rpartition(":")
                        add("/label", md5, rel, "label file")
                    if artifact.get("type") == "Step_Metrics":
                        add(STEP_METRICS, str(artifact.get("uri") or ""), str(artifact.get("name") or "").split(":")[0],
                            "step metrics file")
    return [(endpoint, name, path) for (endpoint, name), path in found.items()], list(dict.fromkeys(warnings))


def _tensorboard_files(path: Path) -> Iterator[Tuple[str, Path]]:
    """(name to upload as, file) for a tensorboard file, or for every file under a directory (relative path)."""
    if path.is_file():
        yield path.name, path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            yield file.relative_to(path).as_posix(), file


def push_metadata(client: MetadataClient, pipeline: str, mlmd: str = "mlmd", execution_uuid: Optional[str] = None,
                  tensorboard: Optional[str] = None, *, force: bool = False) -> PushResult:
    """Send the pipeline's export (only ``execution_uuid``'s execution if given) to the server, then upload the
    python-env files, label CSVs and step-metrics files it references, then the tensorboard file or directory
    (if given).  ``force``: replace the server's values of executions and artifacts the push changes.  A server
    without ``/step-metrics`` (404/405: an older cmf server) costs one warning, not the push: its UI cannot
    chart step metrics anyway."""
    from cmf_core.metadata.query import CmfQuery

    query = CmfQuery(mlmd)
    names = query.get_pipeline_names()
    if pipeline not in names:
        raise CmfError(f"pipeline {pipeline!r} is not in {mlmd}; it has: {', '.join(names) or 'no pipelines'}")
    board = Path(tensorboard) if tensorboard else None
    if board is not None and not board.exists():
        raise CmfError(f"tensorboard path {tensorboard} does not exist")
    export = query.export(pipeline, execution_uuid)
    payload = json.dumps(export)
    if execution_uuid and not any(s["executions"] for p in export["Pipeline"] for s in p["stages"]):
        raise CmfError(f"no execution with uuid {execution_uuid} in pipeline {pipeline!r}")

    answer = client.push(pipeline, payload, execution_uuid, force=force)
    counts = {k: v for k, v in answer.items() if isinstance(v, int) and not isinstance(v, bool)}
    result = PushResult(pipeline, client.url, answer["status"], counts or None)
    files, result.warnings = _referenced_files(export, Path(mlmd).absolute().parent)
    step_metrics = True  # until the server shows it has no such route
    for endpoint, name, path in files:
        if endpoint == STEP_METRICS and not step_metrics:
            continue
        try:
            client.upload(endpoint, name, path)
        except ServerError as exc:
            if endpoint != STEP_METRICS or exc.status not in (404, 405):
                raise
            result.warnings.append(OLD_SERVER)
            step_metrics = False
            continue
        result.uploaded.append(str(path))
    if board is not None:
        for name, path in _tensorboard_files(board):
            client.upload("/tensorboard", name, path, pipeline=pipeline)
            result.uploaded.append(str(path))
    return result


def pull_metadata(client: MetadataClient, pipeline: str, mlmd: str = "mlmd",
                  execution_uuid: Optional[str] = None) -> PullResult:
    """Download the pipeline (only ``execution_uuid``'s execution if given), validate it, and only then merge it
    into ``mlmd``: into a copy that replaces the file when the merge succeeded, so a failed pull leaves the
    mlmd file as it was (or absent)."""
    from cmf_core.metadata import store as records

    target = Path(mlmd).absolute()
    text = client.pull(pipeline, execution_uuid)
    try:
        checked = pipeline_of(text, pipeline)
    except MergeError as exc:
        raise ServerError(f"metadata pull of {pipeline!r}: the server sent an invalid export: {exc}") from None
    with records.write_lock(target):  # no Cmf writes into the file between the copy and the replace
        created = not target.exists()
        if not created:
            records.open_store(target, create=False).close()  # refuse a file that is not an mlmd before copying it
        work = target.with_name(f".{target.name}.pull-{os.getpid()}")
        try:
            if not created:
                shutil.copyfile(target, work)
            store = records.open_store(work, logged_times=True)  # the server's (logged) times
            try:
                # the server's values win: a pull brings the shared record of the pipeline into this workspace
                with store.unit():
                    merged = merge_pipeline(store, checked, exec_uuid=execution_uuid, replace=True)
            except MergeError:
                raise
            except Exception as exc:  # the store refused a record: nothing replaced
                raise CmfError(f"metadata pull of {pipeline!r}: merging into {mlmd} failed: {exc}") from None
            finally:
                store.close()
            os.replace(work, target)
        finally:
            work.unlink(missing_ok=True)
    return PullResult(pipeline, target, merged.status, merged, created)
