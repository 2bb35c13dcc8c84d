"""Where ``cmf mcp`` reads: an mlmd file in-process, or a ``cmf server`` through its read API (``/api``).

Both answer the same methods with the same JSON, because both are the UI's read path: :class:`LocalSource`
calls :class:`~cmf_core.server.read_api.ReadApi` and :class:`~cmf_core.server.reads.Reads` directly, and
:class:`RemoteSource` asks the server's routes, which call the same.  A query is a list of (name, value) pairs,
as in a URL.  A record or pipeline that does not exist is :class:`~cmf_core.server.reads.NotFound` from both,
a query that cannot be used :class:`~cmf_core.server.reads.BadRequest`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple
from urllib.parse import quote

from starlette.datastructures import QueryParams

from cmf_core.errors import CmfError
from cmf_core.names import UnsafeName, check_name
from cmf_core.server.db import Database
from cmf_core.server.files import WorkspaceFiles
from cmf_core.server.lineage import LineageQuery
from cmf_core.server.read_api import ReadApi
from cmf_core.server.reads import BadRequest, NotFound, Reads

__all__ = ["Source", "LocalSource", "RemoteSource", "Query", "pairs"]

Query = Sequence[Tuple[str, str]]


class Source(Protocol):
    """The reads the MCP tools make, each answering what its ``/api`` route answers; ``where`` names what is
    read, for messages."""

    where: str

    def pipelines(self, page: int, size: int) -> Dict[str, Any]: ...
    def pipeline(self, name: str) -> Dict[str, Any]: ...
    def executions(self, pipeline: str, query: Query) -> Dict[str, Any]: ...
    def artifacts(self, pipeline: str, query: Query) -> Dict[str, Any]: ...
    def execution(self, execution_id: int) -> Dict[str, Any]: ...
    def artifact(self, artifact_id: int) -> Dict[str, Any]: ...
    def lineage(self, pipeline: str, query: Query) -> Dict[str, Any]: ...
    def compare(self, pipeline: str, query: Query) -> Dict[str, Any]: ...
    def search(self, query: Query) -> Dict[str, Any]: ...
    def close(self) -> None: ...


class LocalSource:
    """Reads in this process: of an mlmd file (``cmf mcp --mlmd``), or of the store of the ``cmf server`` that
    serves ``/mcp``."""

    def __init__(self, reads: Reads, where: str) -> None:
        self.reads, self.api, self.where = reads, ReadApi(reads), where

    @classmethod
    def of_file(cls, mlmd: Path) -> "LocalSource":
        """Read-only reads of a workspace's mlmd file, its files (step metrics) read beside it, as ``cmf ui``."""
        mlmd = mlmd.absolute()
        return cls(Reads(Database(sqlite=mlmd), WorkspaceFiles(mlmd.parent)), f"the mlmd file {mlmd}")

    def pipelines(self, page: int, size: int) -> Dict[str, Any]:
        return self.reads.pipelines(page, size)

    def pipeline(self, name: str) -> Dict[str, Any]:
        return self.reads.pipeline(name)

    def executions(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self.api.executions(pipeline, QueryParams(list(query)))

    def artifacts(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self.api.artifacts(pipeline, QueryParams(list(query)))

    def execution(self, execution_id: int) -> Dict[str, Any]:
        return self.reads.execution(execution_id)

    def artifact(self, artifact_id: int) -> Dict[str, Any]:
        return self.reads.artifact(artifact_id)

    def lineage(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self.api.lineage(pipeline, LineageQuery.parse(query))

    def compare(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self.api.compare(pipeline, QueryParams(list(query)))

    def search(self, query: Query) -> Dict[str, Any]:
        return self.api.search(QueryParams(list(query)))

    def close(self) -> None:
        self.reads.db.close()


class RemoteSource:
    """Reads of a ``cmf server``, over HTTP: the routes of its read API, with its bearer token."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0) -> None:
        from cmf_core.server.client import MetadataClient  # httpx: only this source needs it

        self.client = MetadataClient(url, token, retries=2, timeout=timeout)
        self.where = f"the cmf server at {self.client.url}"

    def _get(self, path: str, query: Query = ()) -> Dict[str, Any]:
        from cmf_core.server.client import ServerAuthError, ServerError

        try:
            return self.client.read(path, query)
        except ServerAuthError as exc:
            raise CmfError(f"{self.where} refused the token (HTTP {exc.status}: {exc.detail or 'no reason'}); give "
                           "cmf mcp --token-file FILE, or set CMF_SERVER_TOKEN") from None
        except ServerError as exc:
            if exc.status == 404:
                raise NotFound(exc.detail) from None
            if exc.status == 400:
                raise BadRequest(exc.detail) from None
            raise

    def pipelines(self, page: int, size: int) -> Dict[str, Any]:
        return self._get("/pipelines", [("page", str(page)), ("size", str(size))])

    def pipeline(self, name: str) -> Dict[str, Any]:
        return self._get(f"/pipelines/{_segment(name)}")

    def executions(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self._get(f"/pipelines/{_segment(pipeline)}/executions", query)

    def artifacts(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self._get(f"/pipelines/{_segment(pipeline)}/artifacts", query)

    def execution(self, execution_id: int) -> Dict[str, Any]:
        return self._get(f"/executions/{execution_id}")

    def artifact(self, artifact_id: int) -> Dict[str, Any]:
        return self._get(f"/artifacts/{artifact_id}")

    def lineage(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self._get(f"/pipelines/{_segment(pipeline)}/lineage", query)

    def compare(self, pipeline: str, query: Query) -> Dict[str, Any]:
        return self._get(f"/pipelines/{_segment(pipeline)}/compare", query)

    def search(self, query: Query) -> Dict[str, Any]:
        return self._get("/search", query)

    def close(self) -> None:
        self.client.close()


def _segment(name: str) -> str:
    """A pipeline name as one segment of a path: every character that could end or change it encoded.  A name
    that no server holds (one with ``/``, ``..``, a control character: the server refuses such names at push) is
    not sent, as the server would decode its ``%2F`` before routing and answer a bare 404."""
    try:
        check_name(name, "pipeline name")
    except UnsafeName:
        raise NotFound(f"there is no pipeline named {name!r}") from None
    return quote(name, safe="")


def pairs(**params: Any) -> List[Tuple[str, str]]:
    """A query of keyword arguments, None left out and lists repeated: ``pairs(ids=[1, 2])``."""
    out: List[Tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                out.append((key, str(item)))
    return out
