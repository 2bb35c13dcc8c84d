"""The web UI and the read API: one function per page answers both ``/api/...`` (JSON) and the page.

==================================  =====================================================================
page (HTML; JSON twin under /api)   query
==================================  =====================================================================
``/``                               (``/api/pipelines``)
``/pipelines/{p}/executions``       stage q filter sort order page size; cols (columns shown, in order);
                                    chart x y axes (the cross-run charts)
``/pipelines/{p}/artifacts``        type stage q filter sort order page size
``/pipelines/{p}/lineage``          view focus cluster hops direction expand trail detail extras q
                                    (``/pipelines/{p}/lineage.svg``: the file)
``/pipelines/{p}/compare``          ids (repeated) diff metric (repeated) ref env; or artifacts ref diff;
                                    smooth logy xaxis (the step-metric charts, as on an execution's page)
``/pipelines/{p}/tensorboard``      the files under ``.../tensorboard/{path}``
``/executions/{id}``                smooth logy xaxis (its step-metric charts)
``/artifacts/{id}``                 page (of a preview); ``/api/artifacts/{id}/model_card`` [download=1],
                                    ``/api/artifacts/{id}/step_metrics``
==================================  =====================================================================

Every piece of a page's state is in its URL; every record is a link to its own page.  Pages are
Jinja2 templates (``ui/templates``, autoescaped; the lineage drawing comes from :mod:`cmf_core.server.svg`);
the little JavaScript there is (charts, pan and zoom) is in ``ui/static`` with the vendored libraries,
and the Content-Security-Policy forbids inline script.  Nothing here writes.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from cmf_core.server import svg
from cmf_core.server.filters import FilterError
from cmf_core.server.lineage import LineageQuery
from cmf_core.server.read_api import ReadApi
from cmf_core.server.reads import ARTIFACT_TYPES, BadRequest, NotFound, Reads

__all__ = ["mount_ui", "CSP", "wants_html", "error_page"]

UI = Path(__file__).parent / "ui"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

_env = Environment(loader=FileSystemLoader(str(UI / "templates")), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _time(ms: Optional[int]) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(value: Any) -> str:
    """A property value as a person reads it: floats without noise, booleans and missing values spelled out."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _link(path: str, params: Dict[str, Any], **changes: Any) -> str:
    """``path`` with the page's query ``params`` changed by ``changes`` (None or "" drops a parameter)."""
    merged = {**params, **changes}
    pairs = []
    for key, value in merged.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item not in (None, "", False):
                pairs.append((key, "1" if item is True else str(item)))
    return path + ("?" + urlencode(pairs) if pairs else "")


_env.filters.update(time=_time, show=_show)
_env.globals.update(link=_link, artifact_types=ARTIFACT_TYPES)


def wants_html(request: Request) -> bool:
    """Whether an error on this request is shown as a page (not under /api, and a browser asking for HTML)."""
    path = request.url.path
    return not path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def page_path(request: Request) -> str:
    """The page's own path as its links need it: percent-encoded as the links to it were (a pipeline named
    ``a#b?c`` is ``a%23b%3Fc``), not decoded as the request holds it."""
    return quote(request.scope["path"])  # the decoded path (request.url.path is re-encoded only in part)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status)


def error_page(status: int, message: str) -> HTMLResponse:
    """The page of a 4xx/5xx: what went wrong and a way home, never a traceback."""
    titles = {400: "Bad request", 401: "Sign in needed", 404: "Not found", 500: "Server error"}
    return render("error.html", status, title=titles.get(status, f"Error {status}"), code=status, message=message)


class _Pages:
    """The routes of the UI and read API over one :class:`Reads`."""

    def __init__(self, reads: Reads, title: str, read_only_note: str) -> None:
        self.reads = reads
        self.title = title
        self.note = read_only_note

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(function, *args, **kwargs)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render(template, status, request=request, params=_params(request), path=page_path(request),
                      title=self.title, note=self.note, **context)


def _params(request: Request) -> Dict[str, Any]:
    """The page's query; a repeated parameter (ids, expand) stays a list, so links made from it keep it whole."""
    query = request.query_params
    return {k: query.getlist(k) if len(query.getlist(k)) > 1 else query[k] for k in query.keys()}


def mount_ui(app: FastAPI, reads: Reads, title: str = "cmf", note: str = "") -> None:
    """Add the read API (``/api/...``), the pages and ``/static`` to ``app``."""
    pages = _Pages(reads, title, note)
    api_reads = ReadApi(reads)
    api = APIRouter(prefix="/api", dependencies=[Depends(_no_nul)])
    ui = APIRouter(dependencies=[Depends(_no_nul)])
    app.mount("/static", StaticFiles(directory=str(UI / "static")), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """What browsers ask for beside every page they open, a JSON twin too."""
        return FileResponse(UI / "static" / "favicon.svg", media_type="image/svg+xml")

    # -- pipelines
    @api.get("/pipelines")
    async def api_pipelines(page: int = 1, size: int = 100) -> Any:
        return await pages.call(reads.pipelines, page, size)

    @api.get("/search")
    async def api_search(request: Request) -> Any:
        return await pages.call(api_reads.search, request.query_params)

    @ui.get("/", response_class=HTMLResponse)
    async def home(request: Request, page: int = 1) -> Response:
        data = await pages.call(reads.pipelines, page, 100)
        return pages.page(request, "pipelines.html", data=data)

    @ui.get("/pipelines")
    async def pipelines_redirect() -> Response:
        return RedirectResponse("/", status_code=308)

    @api.get("/pipelines/{name}")
    async def api_pipeline(name: str) -> Any:
        return await pages.call(reads.pipeline, name)

    @ui.get("/pipelines/{name}")
    async def pipeline_redirect(name: str, request: Request) -> Response:
        return RedirectResponse(request.url_for("executions_page", name=name).path, status_code=307)

    # -- executions and artifacts
    async def executions(name: str, q: Mapping[str, str]) -> Dict[str, Any]:
        return await pages.call(api_reads.executions, name, q)

    async def artifacts(name: str, q: Mapping[str, str]) -> Dict[str, Any]:
        return await pages.call(api_reads.artifacts, name, q)

    async def listing(request: Request, name: str, template: str, reader: Callable) -> Response:
        pipeline = await pages.call(reads.pipeline, name)
        try:
            data, error = await reader(name, request.query_params), None
        except (BadRequest, FilterError) as exc:  # the page stays usable: the form keeps what was typed
            plain = {k: v for k, v in request.query_params.items() if k in ("stage", "type")}
            data, error = {**await reader(name, plain), "items": [], "total": 0}, str(exc)
        return pages.page(request, template, 400 if error else 200, pipeline=pipeline, data=data, error=error)

    @api.get("/pipelines/{name}/executions")
    async def api_executions(name: str, request: Request) -> Any:
        return await executions(name, request.query_params)

    @ui.get("/pipelines/{name}/executions", name="executions_page")
    async def executions_page(name: str, request: Request) -> Response:
        return await listing(request, name, "executions.html", executions)

    @api.get("/pipelines/{name}/artifacts")
    async def api_artifacts(name: str, request: Request) -> Any:
        return await artifacts(name, request.query_params)

    @ui.get("/pipelines/{name}/artifacts")
    async def artifacts_page(name: str, request: Request) -> Response:
        return await listing(request, name, "artifacts.html", artifacts)

    # -- lineage
    async def lineage(name: str, query: LineageQuery) -> Dict[str, Any]:
        return await pages.call(api_reads.lineage, name, query)

    def lineage_drawing(data: Dict[str, Any], page: str, query: LineageQuery,
                        css: Optional[str] = None) -> Any:
        def href(action: str, key: str) -> str:
            return _link(page, (query.expanded(key) if action == "expand" else query.retarget(key)).params())
        return svg.render(data, href, css)

    @api.get("/pipelines/{name}/lineage")
    async def api_lineage(name: str, request: Request) -> Any:
        return await lineage(name, LineageQuery.parse(request.query_params.multi_items()))

    @ui.get("/pipelines/{name}/lineage")
    async def lineage_page(request: Request, name: str) -> Response:
        pipeline = await pages.call(reads.pipeline, name)
        query = LineageQuery.parse(request.query_params.multi_items())
        path = page_path(request)
        data = await lineage(name, query)
        chosen = data.get("search", {}).get("chosen")
        if chosen is not None:  # the address of the view found, not of the search
            return RedirectResponse(_link(path, query.retarget(chosen["key"]).params()), status_code=303)
        data = svg.draw(data)
        query = replace(query, q="")
        return pages.page(request, "lineage.html", pipeline=pipeline, data=data, query=query,
                          svg=lineage_drawing(data, path, query))

    @ui.get("/pipelines/{name}/lineage.svg")
    async def lineage_svg(request: Request, name: str) -> Response:
        query = replace(LineageQuery.parse(request.query_params.multi_items()), q="")
        data = svg.draw(await lineage(name, query))
        css = (UI / "static" / "lineage.css").read_text(encoding="utf-8")
        drawing = lineage_drawing(data, f"/pipelines/{quote(name, safe='')}/lineage", query, css)
        return Response(str(drawing), media_type="image/svg+xml",
                        headers={"Content-Disposition": f'attachment; filename="lineage-{_safe(name)}.svg"'})

    # -- compare
    @api.get("/pipelines/{name}/compare")
    async def api_compare(name: str, request: Request) -> Any:
        return await pages.call(api_reads.compare, name, request.query_params)

    @ui.get("/pipelines/{name}/compare")
    async def compare_page(name: str, request: Request) -> Response:
        pipeline = await pages.call(reads.pipeline, name)
        try:
            data, error = await pages.call(api_reads.compare, name, request.query_params), None
        except BadRequest as exc:
            data, error = None, str(exc)
        return pages.page(request, "compare.html", 400 if error else 200, pipeline=pipeline, data=data, error=error)

    # -- tensorboard
    @api.get("/pipelines/{name}/tensorboard")
    async def api_tensorboard(name: str) -> Any:
        return await pages.call(reads.tensorboard, name)

    @ui.get("/pipelines/{name}/tensorboard")
    async def tensorboard_page(name: str, request: Request) -> Response:
        pipeline = await pages.call(reads.pipeline, name)
        data = await pages.call(reads.tensorboard, name)
        return pages.page(request, "tensorboard.html", pipeline=pipeline, data=data)

    @ui.get("/pipelines/{name}/tensorboard/{path:path}")
    async def tensorboard_file(name: str, path: str) -> Response:
        found = reads.files.tensorboard_file(name, path)
        if found is None:
            raise NotFound(f"pipeline {name!r} has no tensorboard file {path!r}")
        return FileResponse(found, filename=Path(path).name, media_type="application/octet-stream")

    # -- one execution, one artifact
    @api.get("/executions/{execution_id}")
    async def api_execution(execution_id: int) -> Any:
        return await pages.call(reads.execution, execution_id)

    @ui.get("/executions/{execution_id}")
    async def execution_page(execution_id: int, request: Request) -> Response:
        data = await pages.call(reads.execution, execution_id)
        pipeline = await pages.call(reads.pipeline, data["pipeline"]) if data["pipeline"] else None
        return pages.page(request, "execution.html", pipeline=pipeline, data=data)

    @api.get("/artifacts/{artifact_id}")
    async def api_artifact(artifact_id: int, page: int = 1) -> Any:
        return await pages.call(reads.artifact, artifact_id, page)

    @api.get("/artifacts/{artifact_id}/model_card")
    async def api_model_card(artifact_id: int, download: bool = False) -> Any:
        card = await pages.call(reads.model_card, artifact_id)
        headers = {"Content-Disposition": f'attachment; filename="model-card-{artifact_id}.json"'} if download else {}
        return JSONResponse(card, headers=headers)

    @api.get("/artifacts/{artifact_id}/step_metrics")
    async def api_step_metrics(artifact_id: int) -> Any:
        return await pages.call(reads.step_metrics, artifact_id)

    @ui.get("/artifacts/{artifact_id}")
    async def artifact_page(artifact_id: int, request: Request, page: int = 1) -> Response:
        data = await pages.call(reads.artifact, artifact_id, page)
        names = data["pipelines"]
        pipeline = await pages.call(reads.pipeline, names[0]) if names else None
        return pages.page(request, "artifact.html", pipeline=pipeline, data=data)

    app.include_router(api)
    app.include_router(ui)


def _no_nul(request: Request) -> None:
    """No NUL character in the path or the query: no record has one, and PostgreSQL refuses them in text (a 500)."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise BadRequest("the address has a NUL character")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
