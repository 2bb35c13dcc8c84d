"""The metadata server: a FastAPI app over one :class:`~cmf_core.server.store.ServerStore`.

Wire format (the original cmf-server's, which the original client speaks):

=======================================  ==============================================================
``POST /mlmd_push``                      JSON ``{"exec_uuid", "json_payload", "pipeline_name"}``
                                         (``json_payload``: the export as a string) ->
                                         ``{"status": "success"|"exists", ...counts}``; 409 when it
                                         would change a stored value, unless ``"force": true`` (ours)
``POST /mlmd_pull``                      JSON ``{"pipeline_name", "exec_uuid"}`` -> the export JSON;
                                         404 for an unknown pipeline; the body ``no_exec_uuid``
                                         (HTTP 200, as the original) for an unknown uuid.  Without a
                                         pipeline name: every pipeline (``last_sync_time`` filters)
``POST /python-env``, ``POST /label``    multipart ``file``: stored flat under ``env/`` / ``labels/``
``POST /step-metrics``                   multipart ``file`` named by the md5 of its bytes (else 400; 422 when the
                                         bytes do not match): stored as ``step_metrics/<md5>``
``POST /tensorboard?pipeline_name=P``    multipart ``file``: stored under ``tensorboard/P/<name>``
``GET /health``                          ``{"status": "ok", "database": "reachable", "schema_version"}``;
                                         503 when the database is unreachable (never needs a token)
=======================================  ==============================================================

Every route above is served at ``/`` and under ``/api`` (the original sits behind a proxy at ``/api``).
The web UI and its read API (``/``, ``/pipelines/...``, ``/api/pipelines/...``) are in
:mod:`cmf_core.server.ui`; ``cmf ui`` serves them alone, read-only, over a workspace's mlmd file.

Safety, unlike the original: bearer-token auth when tokens are configured (401 with
``WWW-Authenticate: Bearer``, constant-time compare), a request-size limit (413),
file and pipeline names that could leave the data directory refused (400), CORS only
for origins given, and errors as HTTP codes with a JSON ``{"detail": reason}``:
400 bad name, 401, 404, 409 clash with stored values, 413, 422 malformed payload, 500 unexpected.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import logging
import os
import tempfile
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, FrozenSet, Iterable, Optional, Tuple
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool

from cmf_core import layout
from cmf_core.metadata.merge import Clash, MergeError
from cmf_core.names import UnsafeName, check_name
from cmf_core.server.db import SCHEMA_VERSION, Database, StoreUnavailable, check_schema
from cmf_core.server.federation import mount_federation
from cmf_core.server.files import ServerFiles, WorkspaceFiles
from cmf_core.server.filters import FilterError
from cmf_core.server.reads import BadRequest, NotFound, Reads
from cmf_core.server.store import ExecutionNotFound, PipelineNotFound, ServerStore
from cmf_core.server.tokens import load_tokens
from cmf_core.server.ui import CSP, error_page, mount_ui, render, wants_html

__all__ = ["Settings", "create_app", "load_tokens", "check_name", "UnsafeName", "worker_app", "worker_environment"]

log = logging.getLogger("cmf.server")
MB = 1024 * 1024
#: Where ``cmf server`` answers MCP (streamable HTTP).
MCP_PATH = "/mcp"
#: Paths answered without a token (liveness probes).
PUBLIC_PATHS = frozenset({"/health", "/api/health", "/login", "/logout", "/favicon.ico"})
#: How much of an oversized body is read and thrown away before the 413, so that the client (still
#: sending) reads the answer instead of a connection reset; beyond it the connection is just closed.
DRAIN_LIMIT = 64 * MB


@dataclass
class Settings:
    """What ``cmf server`` (or ``cmf ui``: no ``store``, an ``mlmd`` file to read) was started with."""

    store: Optional[ServerStore]  # or a StoreProcess, as cmf server runs it
    data_dir: Path
    tokens: FrozenSet[str] = frozenset()
    max_body_bytes: int = 512 * MB
    cors_origins: Tuple[str, ...] = ()
    mlmd: Optional[Path] = None  # cmf ui: the workspace's mlmd file, read-only; the wire routes are off
    allowed_hosts: Tuple[str, ...] = ()  # answer only requests with one of these Host names (DNS rebinding)


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


SESSION_COOKIE = "cmf_session"


def session_value(token: str) -> str:
    """The UI's session cookie for ``token``: derived from it, so every server process with the same token file
    accepts it and the cookie never holds the token itself."""
    return hmac.new(token.encode(), b"cmf-ui-session", hashlib.sha256).hexdigest()


def _one_of(given: bytes, accepted: Iterable[bytes]) -> bool:
    ok = False
    for candidate in accepted:  # no early exit: the time taken does not tell which one came close
        ok |= hmac.compare_digest(given, candidate)
    return ok


#: Methods that only read: the session cookie authorises them, and nothing else.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The one write a page of the UI makes with the session cookie ("sync now" on /peers): accepted only when the
#: browser shows that this server's own page sent it (``same_origin`` is True), which no other page can fake.
COOKIE_WRITES = frozenset({"/peers/sync"})


def same_origin(headers: Dict[bytes, bytes]) -> Optional[bool]:
    """Whether a browser sent this request from one of this server's own pages: True when ``Origin`` names this
    server (the ``Host`` it was asked as) or ``Sec-Fetch-Site`` is ``same-origin``; False when either says
    another origin (another port of the same host is another origin; ``Origin: null`` is nobody's); None when
    neither is sent (not a browser: curl, the cmf client)."""
    origin = headers.get(b"origin")
    if origin is not None:
        host = headers.get(b"host", b"").lower()
        return bool(host) and origin.lower().partition(b"://")[2] == host
    site = headers.get(b"sec-fetch-site")
    return None if site is None else site in (b"same-origin", b"none")


class BearerAuth:
    """Refuse every request without ``Authorization: Bearer <one of tokens>`` or the UI's session cookie;
    compared in constant time.  A browser asking for a page is sent to the login form; the rest get 401.

    The cookie authorises reading (safe methods) and nothing else (the UI's forms, login and logout, need no
    credential): a page on another origin of the same site (another port of the host) gets the SameSite cookie
    sent along with its forms, so every write — pushes, uploads, syncs — needs the bearer header, which no other
    page can make a browser send (403 otherwise).  The one exception, :data:`COOKIE_WRITES`, is taken only with
    the browser's word that this server's own page sent it."""

    def __init__(self, app, tokens: FrozenSet[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in sorted(tokens)]
        self.sessions = [session_value(t).encode() for t in sorted(tokens)]

    def _credential(self, headers: Dict[bytes, bytes]) -> Optional[str]:
        """"bearer" or "cookie" when the request carries a valid one (the header is looked at first), else None."""
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and given and _one_of(given.strip(), self.tokens):
            return "bearer"
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
        except CookieError:
            return None
        session = cookies.get(SESSION_COOKIE)
        return "cookie" if session is not None and _one_of(session.value.encode("latin-1"), self.sessions) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.tokens or path in PUBLIC_PATHS or path.startswith("/static/"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        credential = self._credential(headers)
        method = scope["method"]
        if credential == "bearer" or (credential == "cookie" and method in SAFE_METHODS):
            return await self.app(scope, receive, send)
        if credential == "cookie" and path in COOKIE_WRITES and same_origin(headers) is True:
            return await self.app(scope, receive, send)
        if credential == "cookie":
            return await _send_json(send, 403, f"the session cookie only lets a browser read; {method} {path} "
                                               f"needs an Authorization: Bearer header")
        if (method == "GET" and not path.startswith("/api") and b"authorization" not in headers
                and b"text/html" in headers.get(b"accept", b"")):
            query = scope.get("query_string", b"").decode("latin-1")
            # the path as the browser sent it, encoded: a decoded '#', '?' or '%' in it would lead elsewhere
            target = "/login?" + urlencode({"next": quote(path) + ("?" + query if query else "")})
            return await send_redirect(send, target)
        detail = "the bearer token is not valid" if b"authorization" in headers else "a bearer token is required"
        return await _send_json(send, 401, detail, [(b"www-authenticate", b'Bearer realm="cmf"')])


class SameOrigin:
    """Refuse (403) every write a browser sends from a page of another origin, whatever it carries: a form on
    another port of this host, a page of another site (the origins given with ``--cors-origin`` excepted).
    On ``/mcp`` every method is refused so: no page is an MCP client.  Clients that are not browsers send
    neither ``Origin`` nor ``Sec-Fetch-Site`` and pass."""

    def __init__(self, app, allowed: Tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = {o.lower().rstrip("/").encode() for o in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] in SAFE_METHODS and scope.get("path") != MCP_PATH):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if same_origin(headers) is False and headers.get(b"origin", b"").lower() not in self.allowed:
            origin = headers.get(b"origin", headers.get(b"sec-fetch-site", b"")).decode("latin-1")
            return await _send_json(send, 403, f"a {scope['method']} from another origin ({origin}) is refused")
        return await self.app(scope, receive, send)


async def send_redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class SecurityHeaders:
    """Headers on every answer: a Content-Security-Policy without inline script, no sniffing, no framing."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class Failures:
    """Answer 500 for whatever a route raises, inside the other middleware, so the answer carries the security
    headers, and without letting the exception reach uvicorn, which would then drop the connection under the
    client's next request.  The answer names an incident that the server's log holds with the traceback; never
    the exception's text, which may hold SQL, paths or values."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("%s %s failed (incident %s)", scope["method"], scope.get("path", ""), incident)
            if started:  # part of the answer is out: closing the connection is all that is left
                raise
            message = f"the server failed to answer (incident {incident}; its log has the details)"
            request = Request(scope)
            response = error_page(500, message) if wants_html(request) else \
                JSONResponse({"detail": message}, status_code=500)
            await response(scope, receive, send)


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


def _only_json(request: Request) -> None:
    """Refuse (415) a body that is not declared JSON: a page of another origin can make a browser post
    ``text/plain`` or a form without asking first, but not ``application/json``."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, f"the body must be sent as application/json, not {media or 'without a type'!r}")


def _optional_str(body: Dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MergeError(f"{key} must be a string or null")
    return value or None


class ChecksumMismatch(MergeError):
    """An upload whose bytes do not have the md5 it was named by (HTTP 422, like every malformed payload)."""


def _save_upload(upload: UploadFile, root: Path, relative: str, expect_md5: Optional[str] = None) -> Path:
    """Copy an upload (already spooled by the multipart parser) to ``root/relative`` through a temp file,
    after checking that the resolved target (symlinks followed) stays inside ``root``.  With ``expect_md5``
    the bytes are hashed while copied and stored only if their md5 is that (else :class:`ChecksumMismatch`,
    and nothing is left behind)."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root not in target.parents:
        raise UnsafeName(f"{relative!r} resolves outside the data directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        digest = hashlib.md5() if expect_md5 is not None else None
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: upload.file.read(MB), b""):
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
        if digest is not None and digest.hexdigest() != expect_md5:
            raise ChecksumMismatch(f"the uploaded bytes have md5 {digest.hexdigest()}, not {expect_md5} "
                                   f"as the file is named; nothing stored")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _reads(settings: Settings) -> Reads:
    """The read path: the server store's connections (or ``cmf ui``'s read-only ones to its mlmd file)."""
    store = settings.store
    if store is None:
        return Reads(Database(sqlite=settings.mlmd), WorkspaceFiles(settings.mlmd.absolute().parent))
    return Reads(store.db, ServerFiles(settings.data_dir.absolute()))


def create_app(settings: Settings) -> FastAPI:
    """The server app: wire routes at ``/`` and ``/api`` (none for ``cmf ui``), the UI and its read API;
    wrapped in body-limit, auth, security headers, compression and (if asked) CORS."""
    store, data = settings.store, settings.data_dir.absolute()
    reads = _reads(settings)
    check_schema(reads.db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        federation = getattr(app.state, "federation", None)  # cmf server: scheduled syncs from its peers
        mcp = getattr(app.state, "mcp", None)  # cmf server: the MCP endpoint's session manager
        if federation is not None:
            federation.start()
        async with AsyncExitStack() as running:
            if mcp is not None:
                await running.enter_async_context(mcp.running())
            yield
        if federation is not None:
            federation.stop()
        (store or reads.db).close()  # a store's processes finish the calls in flight first

    app = FastAPI(title="cmf metadata server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    router = APIRouter()

    @router.get("/health")
    async def health() -> Response:
        """Liveness and the database: 200 when it answers with the schema this server reads, else 503."""
        kind = "mlmd file (read-only)" if store is None else "sqlite" if store.sqlite else "postgresql"
        answer: Dict[str, Any] = {"status": "ok", "store": kind, "max_body_bytes": settings.max_body_bytes}
        try:
            answer["schema_version"] = await run_in_threadpool(reads.db.schema_version)
            answer["database"] = "reachable"
        except Exception as exc:  # noqa: BLE001 - whatever failed, the probe says so instead of a 500
            answer.update(status="unavailable", database=f"unreachable: {type(exc).__name__}: {exc}")
        if answer.get("schema_version") not in (None, SCHEMA_VERSION):
            answer.update(status="unavailable", database=f"schema version {answer['schema_version']}, but this "
                                                          f"server reads version {SCHEMA_VERSION}")
        return JSONResponse(answer, status_code=200 if answer["status"] == "ok" else 503)

    if store is None:  # cmf ui: only the pages and the read API
        _finish(app, settings, router, reads, "read-only view of " + str(settings.mlmd))
        return app

    @router.post("/mlmd_push")
    async def mlmd_push(request: Request) -> Dict[str, Any]:
        _only_json(request)
        body = _json_body(await request.body())
        if "json_payload" not in body:
            raise MergeError('the request has no "json_payload"')
        name = _optional_str(body, "pipeline_name")
        if name is not None:
            check_name(name, "pipeline name")
        exec_uuid = _optional_str(body, "exec_uuid")
        force = body.get("force", False)  # ours: replace stored values that differ (else 409); the original ignores it
        if not isinstance(force, bool):
            raise MergeError("force must be true or false")
        started = time.monotonic()
        result = await run_in_threadpool(store.push, body["json_payload"], name, exec_uuid, force)
        log.info("push %s: %s in %.2f s (%d executions, %d artifacts, %d events created, %d updated)",
                 result.pipeline, result.status, time.monotonic() - started, result.executions, result.artifacts,
                 result.events, result.updated)
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

    async def _upload(file: UploadFile, relative: str, expect_md5: Optional[str] = None) -> Dict[str, Any]:
        target = await run_in_threadpool(_save_upload, file, data, relative, expect_md5)
        log.info("stored upload %s", target.relative_to(data.resolve()))
        return {"message": f"File '{file.filename}' uploaded successfully", "stored": relative}

    @router.post("/python-env")
    async def python_env(file: UploadFile = File(...)) -> Dict[str, Any]:
        return await _upload(file, "env/" + check_name(file.filename, "file name"))

    @router.post("/label")
    async def label(file: UploadFile = File(...)) -> Dict[str, Any]:
        return await _upload(file, "labels/" + check_name(file.filename, "file name"))

    @router.post("/step-metrics")
    async def step_metrics(file: UploadFile = File(...)) -> Dict[str, Any]:
        """A step-metrics parquet file, named by its md5 (the Step_Metrics artifact's uri), for the UI's charts."""
        if not layout.is_file_md5(file.filename or ""):
            raise UnsafeName(f"a step metrics file must be named by its md5 (32 lowercase hex digits), "
                             f"not {file.filename!r}")
        return await _upload(file, "step_metrics/" + file.filename, expect_md5=file.filename)

    @router.post("/tensorboard")
    async def tensorboard(pipeline_name: str = Query(...), file: UploadFile = File(...)) -> Dict[str, Any]:
        check_name(pipeline_name, "pipeline name")
        name = check_name(file.filename, "file name", nested=True)
        return await _upload(file, f"tensorboard/{pipeline_name}/{name}")

    mount_federation(app, store, settings.max_body_bytes)  # peers: /api/peers, /api/sync-runs, POST /api/sync, /peers
    app.state.mcp = _mount_mcp(app, reads, settings.max_body_bytes)
    _finish(app, settings, router, reads, "")
    return app


class McpEndpoint:
    """``/mcp``: the tools of ``cmf mcp`` over streamable HTTP (the SDK's app), on this server's reads.
    Stateless and answered as JSON, so that any worker process answers any request.

    The route sits inside the app's middleware: bearer auth, the Host check, the Origin check (for every method
    on ``/mcp``, see :class:`SameOrigin`) and the size limit are those of ``/api``; the SDK's own Host/Origin check
    is not switched on a second time with lists of its own.

    The SDK takes a second to import, which a server pays at its first ``/mcp`` request, not at its start (test
    suites and ``--workers`` start many).  Its session manager then runs in a task of the app's run (its lifespan),
    which ends it; the manager runs once, so each run of the app makes its own."""

    def __init__(self, reads: Reads, max_body_bytes: int) -> None:
        self.reads, self.max_body_bytes = reads, max_body_bytes
        self.http: Any = None
        self._group: Any = None
        self._starting: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        import anyio

        self._starting = anyio.Lock()
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None
                group.cancel_scope.cancel()

    async def _serve(self, *, task_status: Any) -> None:
        """Import the SDK (in a worker thread), build the tools, run the session manager until the app stops."""
        import anyio
        from anyio.to_thread import run_sync

        def create() -> Any:
            from cmf_core.mcp.sources import LocalSource
            from cmf_core.mcp.tools import create_server

            return create_server(LocalSource(self.reads, "this cmf server's store"))

        from mcp.server.transport_security import TransportSecuritySettings

        server = await run_sync(create)
        http = server.streamable_http_app(
            streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
            max_request_body_size=self.max_body_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        try:
            async with server.session_manager.run():
                self.http = http
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self.http = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.http is None:
            if self._group is None:
                return await _send_json(send, 503, "the MCP endpoint is not running")
            async with self._starting:
                if self.http is None:
                    await self._group.start(self._serve)
        await self.http(scope, receive, send)


def _mount_mcp(app: FastAPI, reads: Reads, max_body_bytes: int) -> Optional[McpEndpoint]:
    """Add ``/mcp`` (:class:`McpEndpoint`) to ``app``; None when the ``mcp`` extra is not installed."""
    if importlib.util.find_spec("mcp") is None:
        log.info("no /mcp endpoint: the MCP SDK is not installed (pip install 'cmf-ml[mcp]')")
        return None
    endpoint = McpEndpoint(reads, max_body_bytes)
    app.router.add_route(MCP_PATH, endpoint, include_in_schema=False)
    return endpoint


def _finish(app: FastAPI, settings: Settings, router: APIRouter, reads: Reads, note: str) -> None:
    """Routes common to ``cmf server`` and ``cmf ui`` (UI, login), error handlers and middleware."""
    app.include_router(router)
    app.include_router(router, prefix="/api")
    _login_routes(app, settings.tokens)
    mount_ui(app, reads, note=note)

    def handler(status: int):
        async def handle(request: Request, exc: Exception) -> Response:
            if wants_html(request):
                return error_page(status, str(exc))
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return handle

    for kind, status in ((UnsafeName, 400), (BadRequest, 400), (FilterError, 400), (PipelineNotFound, 404),
                         (NotFound, 404), (MergeError, 422), (Clash, 409), (StoreUnavailable, 503)):
        app.add_exception_handler(kind, handler(status))

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_html(request):
            return error_page(exc.status_code, "there is no such page" if exc.status_code == 404 else str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """A path that names no record (``/executions/abc``) is a 404; a bad query parameter (``hops=abc``) a
        400 that names it; a bad body keeps FastAPI's 422 and its list of errors."""
        errors = exc.errors()
        where = {str(e.get("loc", ("body",))[0]) for e in errors}
        if "query" in where:
            message = "; ".join(_query_error(e) for e in errors if e.get("loc", ("",))[0] == "query")
            if wants_html(request):
                return error_page(400, message)
            return JSONResponse({"detail": message}, status_code=400)
        if wants_html(request):
            return error_page(404, "there is no such page (a part of its address is not valid)")
        if where == {"path"}:
            return JSONResponse({"detail": "there is no such record (a part of the address is not valid)"},
                                status_code=404)
        return JSONResponse({"detail": jsonable(errors)}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)

    # add_middleware puts the last added outermost: every answer (the refusals of the middleware too) carries the
    # security headers; CORS answers preflights before auth; a cross-origin write is refused, and auth checked,
    # before a body is read; the size limit guards what is read; failures become 500s inside all of them
    app.add_middleware(Failures)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(BearerAuth, tokens=settings.tokens)
    app.add_middleware(SameOrigin, allowed=settings.cors_origins)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    if settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)


def _query_error(error: Dict[str, Any]) -> str:
    """One bad query parameter as a person reads it: ``hops: a whole number is expected, not 'abc'``."""
    name = ".".join(str(part) for part in error.get("loc", ())[1:]) or "a parameter"
    expected = {"int_parsing": "a whole number", "bool_parsing": "true or false", "float_parsing": "a number",
                "missing": "a value"}.get(str(error.get("type")), "")
    if expected:
        return f"{name}: {expected} is expected" + (f", not {error.get('input')!r}" if "input" in error
                                                   and error.get("type") != "missing" else "")
    return f"{name}: {error.get('msg', 'not valid')}"


def jsonable(errors: Any) -> Any:
    return json.loads(json.dumps(errors, default=str))


def _login_routes(app: FastAPI, tokens: FrozenSet[str]) -> None:
    """``/login`` (a form that sets the HttpOnly session cookie) and ``/logout``, when tokens are configured."""

    def safe_next(target: str) -> str:
        """``target`` if it is a path of this server, else ``/``: no scheme or host, no ``//`` or backslash a
        browser reads as another host, no control character (tab, newline) or trailing space it would drop first
        (``/<tab>/x`` is ``//x`` to it)."""
        clean = target.startswith("/") and not target.startswith("//") and "\\" not in target
        return target if clean and target == target.rstrip() and all(
            31 < ord(c) < 127 or ord(c) > 159 for c in target) else "/"

    @app.get("/login")
    async def login_form(next: str = "/") -> Response:
        if not tokens:
            return RedirectResponse(safe_next(next), status_code=303)
        return render("login.html", next=safe_next(next), error=None, title="cmf")

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        given, target = str(form.get("token", "")).strip(), safe_next(str(form.get("next", "/")))
        if not tokens or _one_of(given.encode(), [t.encode() for t in sorted(tokens)]):
            response = RedirectResponse(target, status_code=303)
            if tokens:
                response.set_cookie(SESSION_COOKIE, session_value(given), httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https", path="/")
            return response
        return render("login.html", 401, next=target, error="that token is not valid", title="cmf")

    @app.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login" if tokens else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


# -- several worker processes -----------------------------------------------------------------------------

#: How ``cmf server --workers N`` hands its settings to the worker processes uvicorn starts: JSON without secrets
#: (tokens are read again from the token file or ``CMF_SERVER_TOKENS``, the password from ``CMF_POSTGRES_PASSWORD``).
WORKER_SETTINGS = "CMF_SERVER_WORKER_SETTINGS"


def worker_environment(settings: Settings, token_file: Optional[Path], log_level: str) -> Dict[str, str]:
    """The environment entry that lets :func:`worker_app` rebuild ``settings`` in a worker process."""
    store = settings.store
    postgres = store.postgres
    return {WORKER_SETTINGS: json.dumps({
        "sqlite": str(store.sqlite) if store.sqlite else None,
        "postgres": None if postgres is None else {"host": postgres.host, "port": postgres.port,
                                                   "user": postgres.user, "dbname": postgres.dbname},
        "data_dir": str(settings.data_dir), "token_file": str(token_file) if token_file else None,
        "max_body_bytes": settings.max_body_bytes, "cors_origins": list(settings.cors_origins),
        "allowed_hosts": list(settings.allowed_hosts), "log_level": log_level})}


def worker_app() -> FastAPI:
    """The app of one worker process of ``cmf server --workers N`` (a uvicorn factory)."""
    from cmf_core.server.store import PostgresConfig
    from cmf_core.server.writer import StoreProcess

    config = json.loads(os.environ[WORKER_SETTINGS])
    logging.basicConfig(level=config["log_level"].upper(), force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    postgres = config["postgres"]
    store = StoreProcess(sqlite=config["sqlite"], postgres=postgres and PostgresConfig(
        **postgres, password=os.environ.get("CMF_POSTGRES_PASSWORD", "")))
    return create_app(Settings(store, Path(config["data_dir"]), load_tokens(config["token_file"]),
                               config["max_body_bytes"], tuple(config["cors_origins"]),
                               allowed_hosts=tuple(config["allowed_hosts"])))
