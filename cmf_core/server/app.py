"""The metadata server: a FastAPI app over one :class:`~cmf_core.server.store.ServerStore`.

Wire format (the original cmf-server's, which the original client speaks):

=======================================  ==============================================================
``POST /mlmd_push``                      JSON ``{"exec_uuid", "json_payload", "pipeline_name"}``
                                         (``json_payload``: the export as a string) ->
                                         ``{"status": "success"|"exists", ...counts}``
``POST /mlmd_pull``                      JSON ``{"pipeline_name", "exec_uuid"}`` -> the export JSON;
                                         404 for an unknown pipeline; the body ``no_exec_uuid``
                                         (HTTP 200, as the original) for an unknown uuid.  Without a
                                         pipeline name: every pipeline (``last_sync_time`` filters)
``POST /python-env``, ``POST /label``    multipart ``file``: stored flat under ``env/`` / ``labels/``
``POST /tensorboard?pipeline_name=P``    multipart ``file``: stored under ``tensorboard/P/<name>``
``GET /pipelines``                       ``[{"id", "name", ...}]``
``GET /pipelines/{name}/executions``     execution rows; ``/artifacts`` artifact rows (404 if unknown)
``GET /health``                          ``{"status": "ok"}`` (never needs a token)
=======================================  ==============================================================

Every route is served at ``/`` and under ``/api`` (the original sits behind a proxy at ``/api``).

Safety, unlike the original: bearer-token auth when tokens are configured (401 with
``WWW-Authenticate: Bearer``, constant-time compare), a request-size limit (413),
file and pipeline names that could leave the data directory refused (400), CORS only
for origins given, and errors as HTTP codes with a JSON ``{"detail": reason}``:
400 bad name, 401, 404, 413, 422 malformed payload, 500 unexpected.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, FrozenSet, Iterable, Optional, Tuple

from fastapi import APIRouter, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from cmf_core.errors import CmfError
from cmf_core.metadata.merge import MergeError
from cmf_core.server.store import ExecutionNotFound, PipelineNotFound, ServerStore

__all__ = ["Settings", "create_app", "load_tokens", "check_name", "UnsafeName"]

log = logging.getLogger("cmf.server")
MB = 1024 * 1024
#: Paths answered without a token (liveness probes).
PUBLIC_PATHS = frozenset({"/health", "/api/health"})
#: How much of an oversized body is read and thrown away before the 413, so that the client (still
#: sending) reads the answer instead of a connection reset; beyond it the connection is just closed.
DRAIN_LIMIT = 64 * MB


class UnsafeName(CmfError):
    """A file or pipeline name that could escape the data directory (HTTP 400)."""


def check_name(name: Optional[str], what: str, nested: bool = False) -> str:
    """``name`` if it is safe as a path under the data directory, else :class:`UnsafeName`.

    Refused: empty, absolute, NUL or control characters, backslashes, ``.``/``..`` components
    and, unless ``nested`` (tensorboard files keep their relative paths), any ``/``.
    """
    if not name:
        raise UnsafeName(f"{what} is empty")
    if any(ord(c) < 32 for c in name) or "\\" in name:
        raise UnsafeName(f"{what} {name!r} has a control character or a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeName(f"{what} {name!r} is an absolute path")
    parts = name.split("/")
    if len(parts) > 1 and not nested:
        raise UnsafeName(f"{what} {name!r} has a '/'")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeName(f"{what} {name!r} has an empty, '.' or '..' component")
    return name


def load_tokens(token_file: Optional[os.PathLike] = None, environ: Optional[Dict[str, str]] = None) -> FrozenSet[str]:
    """Accepted bearer tokens: one per line of ``token_file`` (``#`` comments and blank lines skipped),
    plus the comma-separated ``CMF_SERVER_TOKENS``.  None at all means auth is off."""
    environ = os.environ if environ is None else environ
    tokens = {t.strip() for t in environ.get("CMF_SERVER_TOKENS", "").split(",") if t.strip()}
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CmfError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        tokens.update(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        if not tokens:
            raise CmfError(f"the token file {token_file} holds no token")
    return frozenset(tokens)


@dataclass
class Settings:
    """What ``cmf server`` was started with."""

    store: ServerStore
    data_dir: Path
    tokens: FrozenSet[str] = frozenset()
    max_body_bytes: int = 512 * MB
    cors_origins: Tuple[str, ...] = ()


# -- ASGI middleware -----------------------------------------------------------------------------------

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


async def _send_json(send: Send, status: int, detail: str, headers: Iterable[Tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """Refuse (401) every request without ``Authorization: Bearer <one of tokens>``; compared in constant time."""

    def __init__(self, app, tokens: FrozenSet[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in sorted(tokens)]

    def _allowed(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            return False
        ok = False
        for token in self.tokens:  # no early exit: the time taken does not tell which token came close
            ok |= hmac.compare_digest(given.strip(), token)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not self._allowed(header):
            detail = "a bearer token is required" if not header else "the bearer token is not valid"
            return await _send_json(send, 401, detail, [(b"www-authenticate", b'Bearer realm="cmf"')])
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a request body larger than ``limit`` bytes: at once by its Content-Length, or when a body
    without one grows past it (then the app sees an HTTPException(413) while reading)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"the request body is larger than the server's limit of {self.limit} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= self.limit + DRAIN_LIMIT:
                while (await receive()).get("more_body", False):
                    pass
            return await _send_json(send, 413, too_large)
        seen = 0

        async def counted() -> Dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, too_large)
            return message

        return await self.app(scope, counted, send)


# -- the app -------------------------------------------------------------------------------------------


def _json_body(raw: bytes) -> Dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MergeError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MergeError("the request body must be a JSON object")
    return body


def _optional_str(body: Dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MergeError(f"{key} must be a string or null")
    return value or None


def _save_upload(upload: UploadFile, root: Path, relative: str) -> Path:
    """Copy an upload (already spooled by the multipart parser) to ``root/relative`` through a temp file,
    after checking that the resolved target (symlinks followed) stays inside ``root``."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root not in target.parents:
        raise UnsafeName(f"{relative!r} resolves outside the data directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, MB)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def create_app(settings: Settings) -> FastAPI:
    """The server app: routes at ``/`` and ``/api``, wrapped in body-limit, auth and (if asked) CORS."""
    store, data = settings.store, settings.data_dir.absolute()
    app = FastAPI(title="cmf metadata server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    router = APIRouter()

    @router.get("/health")
    async def health() -> Dict[str, Any]:
        return {"status": "ok", "store": "sqlite" if store.sqlite else "postgresql",
                "max_body_bytes": settings.max_body_bytes}

    @router.post("/mlmd_push")
    async def mlmd_push(request: Request) -> Dict[str, Any]:
        body = _json_body(await request.body())
        if "json_payload" not in body:
            raise MergeError('the request has no "json_payload"')
        name = _optional_str(body, "pipeline_name")
        if name is not None:
            check_name(name, "pipeline name")
        exec_uuid = _optional_str(body, "exec_uuid")
        result = await run_in_threadpool(store.push, body["json_payload"], name, exec_uuid)
        log.info("push %s: %s (%d executions, %d artifacts, %d events created, %d updated)", result.pipeline,
                 result.status, result.executions, result.artifacts, result.events, result.updated)
        return {"status": result.status, "pipeline": result.pipeline, "executions": result.executions,
                "artifacts": result.artifacts, "events": result.events, "updated": result.updated}

    @router.post("/mlmd_pull")
    async def mlmd_pull(request: Request) -> Response:
        body = _json_body(await request.body())
        name = _optional_str(body, "pipeline_name")
        exec_uuid = _optional_str(body, "exec_uuid")
        if name is None:
            since = body.get("last_sync_time") or 0
            if not isinstance(since, int) or isinstance(since, bool):
                raise MergeError("last_sync_time must be an integer (ms since epoch)")
            return Response(await run_in_threadpool(store.pull_all, since), media_type="application/json")
        check_name(name, "pipeline name")
        try:
            text = await run_in_threadpool(store.pull, name, exec_uuid)
        except ExecutionNotFound:
            return PlainTextResponse("no_exec_uuid")
        return Response(text, media_type="application/json")

    async def _upload(file: UploadFile, relative: str) -> Dict[str, Any]:
        target = await run_in_threadpool(_save_upload, file, data, relative)
        log.info("stored upload %s", target.relative_to(data.resolve()))
        return {"message": f"File '{file.filename}' uploaded successfully", "stored": relative}

    @router.post("/python-env")
    async def python_env(file: UploadFile = File(...)) -> Dict[str, Any]:
        return await _upload(file, "env/" + check_name(file.filename, "file name"))

    @router.post("/label")
    async def label(file: UploadFile = File(...)) -> Dict[str, Any]:
        return await _upload(file, "labels/" + check_name(file.filename, "file name"))

    @router.post("/tensorboard")
    async def tensorboard(pipeline_name: str = Query(...), file: UploadFile = File(...)) -> Dict[str, Any]:
        check_name(pipeline_name, "pipeline name")
        name = check_name(file.filename, "file name", nested=True)
        return await _upload(file, f"tensorboard/{pipeline_name}/{name}")

    @router.get("/pipelines")
    async def pipelines() -> Any:
        return await run_in_threadpool(store.pipelines)

    @router.get("/pipelines/{name}/executions")
    async def executions(name: str) -> Any:
        return await run_in_threadpool(store.executions, check_name(name, "pipeline name"))

    @router.get("/pipelines/{name}/artifacts")
    async def artifacts(name: str) -> Any:
        return await run_in_threadpool(store.artifacts, check_name(name, "pipeline name"))

    app.include_router(router)
    app.include_router(router, prefix="/api")

    def handler(status: int):
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return handle

    app.add_exception_handler(UnsafeName, handler(400))
    app.add_exception_handler(PipelineNotFound, handler(404))
    app.add_exception_handler(MergeError, handler(422))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal server error: {type(exc).__name__}: {exc}"}, status_code=500)

    app.add_exception_handler(Exception, unexpected)

    # add_middleware puts the last added outermost: CORS answers preflights before auth, auth runs before a
    # body is read, and the size limit guards what is read
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(BearerAuth, tokens=settings.tokens)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
