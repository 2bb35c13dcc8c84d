"""Federation: a metadata server pulls what its peer servers have and merges it, idempotently.

Design
------
* **Where things are kept.**  The peers and the log of sync runs live in the store's own database, beside
  ML Metadata's tables: ``cmf_peer`` (url, token, interval, the sync position, when the next scheduled run
  is due) and ``cmf_sync_run`` (one row a run).  Every process on that database sees the same peers and the
  same log: the CLI (``cmf server peers|sync|sync-log``), each worker of ``cmf server --workers N``, several
  hosts on one PostgreSQL.
* **A run** is the original wire protocol: ``POST <peer>/mlmd_pull`` with ``last_sync_time`` answers an
  export of every pipeline whose executions changed after it.  The answer is checked (HTTP 200, JSON, a
  ``"Pipeline"`` list) and merged by ``store.push_all``: every pipeline in ONE transaction, all or nothing.
  Success or failure, the run is then recorded in a transaction of its own, with a named error for each
  cause: the peer is unreachable, answered an HTTP error (401: our token; a redirect is not followed),
  something that is not JSON or not an export, or records our store refused (a clash); a failed run merged
  nothing and leaves the position where it was.  A process dying between the merge and the record costs
  a re-merge, which creates nothing.
* **What a peer can cost us.**  Its whole answer, from connecting to the last byte, must arrive within the
  deadline (:data:`DEADLINE`, or ``CMF_SYNC_DEADLINE`` seconds): a per-read timeout alone lets a peer that
  sends one byte now and then hold a run for ever.  The answer is read as it arrives and gzip (the one
  encoding we ask for) decompressed as it arrives, and the run stops as soon as more than the server's body
  limit (``--max-body-mb``: what a client may push us) came in or came out: a gzip bomb costs at most the
  limit in memory, never its decompressed size.
* **The position** (``last_sync_time``) is in the *peer's* clock, never ours: after a successful run it
  becomes the newest ``last_update_time_since_epoch`` of the pipelines, stages and executions the peer sent,
  less :data:`OVERLAP_MS` (one minute), and it only moves forward.  The peer compares it with its own
  timestamps, so the clocks of the two servers never meet.  The overlap covers what one snapshot of the
  peer can miss: a push in flight while it read (committed later, stamped the same millisecond or a moment
  earlier), several of the peer's processes on one database whose clocks differ a little.  Its price is
  that each run merges the peer's last minute again, which creates nothing.  An answer without timestamps
  leaves the position as it was; removing a peer and adding it again starts from the beginning.
* **Scheduling.**  A peer with an interval is due when ``next_sync_at`` (our clock) has passed.  Each server
  process runs a daemon thread (:meth:`Federation.start`, from the app's lifespan) that looks for due peers
  every :data:`TICK_SECONDS` in a read snapshot and claims them with one
  ``UPDATE cmf_peer SET next_sync_at = now + interval ... WHERE next_sync_at <= now RETURNING ...`` in a
  write transaction: only the process whose update changed a peer's row runs it.  The next run is due one
  interval after the claim; nothing is held while a run goes on, so a process that dies mid-run leaves the
  peer simply due again.  The scheduler thread only claims: each claimed peer runs in a pool of
  :data:`SYNC_WORKERS` threads, at most one run of a peer at a time in a process (a peer claimed while its
  last run still goes on skips that turn), so a peer that hangs (until the deadline) delays no other and no
  tick.  ``POST /api/sync`` of every peer runs them side by side in the same way.  Two runs of one peer at
  once (a manual one and a scheduled one) are harmless: the merges are idempotent and the position only
  moves forward.
* **Security.**  Peers are added from the CLI on the store, not over HTTP, so no request can make the server
  fetch an address of its choosing; ``POST /api/sync`` only runs known peers.  A peer's bearer token is kept
  in the database (the server sends it) and never shown: listings mask it as ``****``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cmf_core.config import seconds
from cmf_core.errors import CmfError
from cmf_core.metadata.merge import Clash, MergeError, MergeResult
from cmf_core.server.reads import BadRequest, NotFound
from cmf_core.server.store import StoreRefused
from cmf_core.server.ui import render

__all__ = ["Federation", "Peer", "SyncRun", "SyncFailed", "UnknownPeer", "BadPeerUrl", "mount_federation",
           "normalise_url", "sync_deadline", "OVERLAP_MS"]

log = logging.getLogger("cmf.server.federation")

#: How far behind the newest change a peer sent the next run starts (ms of the peer's clock; see the module doc).
OVERLAP_MS = 60_000
#: How often the scheduler looks for due peers.
TICK_SECONDS = 1.0
#: Seconds to connect to a peer.
CONNECT_SECONDS = 10.0
#: Seconds a peer has for its whole answer, unless ``CMF_SYNC_DEADLINE`` says otherwise: enough for a peer to
#: build a 512 MB export (the default body limit) and send it over a slow link (about 3 MB/s), not for ever.
DEADLINE = 300.0
#: The largest answer read from a peer (after decompression) when no limit is given: ``cmf server``'s default
#: ``--max-body-mb``.
MAX_ANSWER_BYTES = 512 * 1024 * 1024
#: How many peers a process syncs at once (the scheduler's pool; ``POST /api/sync`` of every peer).
SYNC_WORKERS = 4
GZIP = 31  # zlib's wbits for a gzip stream
MASK = "****"

_PEER_COLUMNS = "url, token, interval_s, last_sync_time, next_sync_at, added_at"
_RUN_COLUMNS = ("peer, cause, started_at, finished_at, status, since, pipelines, executions, artifacts, events, "
                "updated, error")


class BadPeerUrl(BadRequest):
    """A peer address that is not an http(s) base URL (HTTP 400)."""


class UnknownPeer(NotFound):
    """No peer of that URL is registered (HTTP 404)."""


class SyncFailed(CmfError):
    """A peer did not answer an export: unreachable, an HTTP error, not JSON, not an export."""


def normalise_url(url: str) -> str:
    """``url`` as a peer is known by: http or https, a host, no query, no credentials, no trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadPeerUrl(f"a peer's address is an http:// or https:// URL with a host, not {url!r}")
    if parts.username is not None or parts.password is not None:
        raise BadPeerUrl(f"a peer's address has no credentials in it ({parts.hostname}): give its token in a file")
    if parts.query or parts.fragment:
        raise BadPeerUrl(f"a peer's address is the server's base URL, without a query or fragment: {url!r}")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def sync_deadline(environ: Mapping[str, str] = os.environ) -> float:
    """The seconds a peer has to finish its answer: ``CMF_SYNC_DEADLINE`` if set, else :data:`DEADLINE`."""
    return seconds(environ.get("CMF_SYNC_DEADLINE"), "CMF_SYNC_DEADLINE", DEADLINE)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Peer:
    """A registered peer server.  ``last_sync_time`` is in the peer's clock, ``next_sync_at`` in ours (ms)."""

    url: str
    token: Optional[str] = field(repr=False)
    interval: Optional[int]  # seconds between scheduled runs; None: only on demand
    last_sync_time: int
    next_sync_at: Optional[int]
    added_at: int

    def public(self) -> Dict[str, Any]:
        """The peer for listings: its token masked."""
        return {**asdict(self), "token": MASK if self.token else None}


@dataclass
class SyncRun:
    """One run from one peer, as the log keeps it (times in ms since epoch; ``since`` in the peer's clock)."""

    peer: str
    cause: str  # "manual" or "scheduled"
    started_at: int
    finished_at: int
    status: str  # "ok" or "failed"
    since: int
    pipelines: List[str]
    executions: int = 0  # created
    artifacts: int = 0  # created
    events: int = 0  # created
    updated: int = 0  # existing records that changed
    error: Optional[str] = None
    id: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        """What the run did, in one line."""
        if not self.ok:
            return f"failed: {self.error}"
        return (f"ok: {len(self.pipelines)} pipelines, {self.executions} executions, {self.artifacts} artifacts, "
                f"{self.events} events created, {self.updated} updated")

    def row(self) -> List[Any]:
        return [self.peer, self.cause, self.started_at, self.finished_at, self.status, self.since,
                json.dumps(self.pipelines), self.executions, self.artifacts, self.events, self.updated, self.error]

    @classmethod
    def from_row(cls, row: Any) -> "SyncRun":
        *head, pipelines, executions, artifacts, events, updated, error, run_id = row
        return cls(*head, json.loads(pipelines), executions, artifacts, events, updated, error, run_id)


def _schema(postgres: bool) -> List[str]:
    run_id = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY"
    return [
        "CREATE TABLE IF NOT EXISTS cmf_peer (url TEXT PRIMARY KEY, token TEXT, interval_s BIGINT, "
        "last_sync_time BIGINT NOT NULL DEFAULT 0, next_sync_at BIGINT, added_at BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS cmf_sync_run (id {run_id}, peer TEXT NOT NULL, cause TEXT NOT NULL, "
        "started_at BIGINT NOT NULL, finished_at BIGINT NOT NULL, status TEXT NOT NULL, since BIGINT NOT NULL, "
        "pipelines TEXT NOT NULL, executions BIGINT NOT NULL, artifacts BIGINT NOT NULL, events BIGINT NOT NULL, "
        "updated BIGINT NOT NULL, error TEXT)",
    ]


def _newest_change(export: Dict[str, Any]) -> Optional[int]:
    """The newest ``last_update_time_since_epoch`` of an export's pipelines, stages and executions (the peer's
    clock), or None when it has none."""
    stamps = []
    for pipeline in export["Pipeline"]:
        stages = [s for s in pipeline.get("stages") or [] if isinstance(s, dict)]
        executions = [e for s in stages for e in s.get("executions") or [] if isinstance(e, dict)]
        stamps += [node.get("last_update_time_since_epoch") for node in (pipeline, *stages, *executions)]
    return max((t for t in stamps if isinstance(t, int) and not isinstance(t, bool)), default=None)


def _snippet(data: bytes) -> str:
    return repr(data[:120].decode("utf-8", "replace"))


def _gzipped(response: httpx.Response) -> bool:
    return response.headers.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip")


async def _head(response: httpx.Response) -> bytes:
    """The first bytes of an answer, to quote in an error (nothing more is read)."""
    async for chunk in response.aiter_raw():
        if _gzipped(response):
            try:
                return zlib.decompressobj(GZIP).decompress(chunk, 120)
            except zlib.error:
                pass
        return chunk[:120]
    return b""


async def _body(where: str, response: httpx.Response, limit: int) -> bytes:
    """The body of an answer, gzip decompressed as it arrives; a :class:`SyncFailed` as soon as more than
    ``limit`` bytes came in or came out (so a gzip bomb stops at the limit), or when the gzip is corrupt, ends
    early, or the encoding is not one we asked for."""
    compressed, encoding = _gzipped(response), response.headers.get("Content-Encoding", "identity").strip().lower()
    if not compressed and encoding != "identity":
        raise SyncFailed(f"{where} answered in Content-Encoding {encoding!r}; we ask for gzip or none")

    def too_much(what: str) -> SyncFailed:
        return SyncFailed(f"{where} answered more than {limit} bytes{what}, our limit (the server's --max-body-mb)")

    inflate = zlib.decompressobj(GZIP)
    body, received = bytearray(), 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise too_much(" (compressed)" if compressed else "")
        if not compressed:
            body += chunk
        while compressed and chunk and len(body) <= limit:
            if inflate.eof:  # a gzip member ended and another follows (RFC 1952 allows several)
                inflate = zlib.decompressobj(GZIP)
            try:
                body += inflate.decompress(chunk, limit - len(body) + 1)  # at most one byte past the limit
            except zlib.error as exc:
                raise SyncFailed(f"{where} answered gzip that does not decompress: {exc}") from None
            chunk = inflate.unconsumed_tail or inflate.unused_data
        if len(body) > limit:
            raise too_much("")
    if compressed and not inflate.eof:
        raise SyncFailed(f"{where} answered a gzip stream that ends early")
    return bytes(body)


class Federation:
    """The peers of one store, their sync runs and the scheduler that runs due peers (see the module doc).

    ``store`` needs ``push_all``, ``db`` and ``describe`` only (a :class:`~cmf_core.server.store.ServerStore`
    or the server's wrapper of one).  A peer's answer may hold ``max_answer_bytes`` (the server's body limit)
    and must arrive within :func:`sync_deadline`."""

    def __init__(self, store: Any, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.store = store
        self.max_answer_bytes = max_answer_bytes
        self.deadline = sync_deadline()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._running: Set[str] = set()  # the peers whose scheduled run goes on in this process
        self._running_lock = threading.Lock()
        self._ensure_tables()

    def _ensure_tables(self) -> None:
        """Create ``cmf_peer`` and ``cmf_sync_run`` unless they exist (looked for first: creating takes the
        store's write lock, which a long push may hold)."""
        with self.store.db.session() as s:
            found = s.value("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                            "AND table_name IN ('cmf_peer', 'cmf_sync_run')" if s.postgres else
                            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                            "AND name IN ('cmf_peer', 'cmf_sync_run')")
        if found != 2:
            with self.store.db.transaction() as s:
                for statement in _schema(s.postgres):
                    s.execute(statement)

    # -- peers ----------------------------------------------------------------------------------------

    def add_peer(self, url: str, token: Optional[str] = None, interval: Optional[int] = None) -> Peer:
        """Register the peer at ``url``, or replace the token and interval of a known one (its position stays).
        With an ``interval`` (seconds, >= 1) it is due at once, then every interval."""
        url = normalise_url(url)
        if interval is not None and interval < 1:
            raise BadRequest(f"a peer's interval is at least 1 second, not {interval}")
        now = _now_ms()
        next_at = now if interval is not None else None
        with self.store.db.transaction() as s:
            if s.value("SELECT COUNT(*) FROM cmf_peer WHERE url = ?", [url]):
                s.execute("UPDATE cmf_peer SET token = ?, interval_s = ?, next_sync_at = ? WHERE url = ?",
                          [token, interval, next_at, url])
            else:
                s.execute(f"INSERT INTO cmf_peer ({_PEER_COLUMNS}) VALUES (?, ?, ?, 0, ?, ?)",
                          [url, token, interval, next_at, now])
        return self.peer(url)

    def remove_peer(self, url: str) -> None:
        """Forget the peer at ``url`` (its runs stay in the log)."""
        url = normalise_url(url)
        with self.store.db.transaction() as s:
            if not s.rows("DELETE FROM cmf_peer WHERE url = ? RETURNING url", [url]):
                raise UnknownPeer(f"there is no peer {url}")

    def peer(self, url: str) -> Peer:
        """The peer at ``url`` (token included: for this process's own use)."""
        url = normalise_url(url)
        with self.store.db.session() as s:
            rows = s.rows(f"SELECT {_PEER_COLUMNS} FROM cmf_peer WHERE url = ?", [url])
        if not rows:
            raise UnknownPeer(f"there is no peer {url}: add it with 'cmf server peers add {url}'")
        return Peer(*rows[0])

    def peers(self) -> List[Dict[str, Any]]:
        """Every peer, by URL, token masked, with its last run's time, status and error."""
        with self.store.db.session() as s:
            rows = s.rows(f"SELECT {', '.join('p.' + c for c in _PEER_COLUMNS.split(', '))}, r.finished_at, "
                          "r.status, r.error FROM cmf_peer p LEFT JOIN cmf_sync_run r "
                          "ON r.id = (SELECT MAX(id) FROM cmf_sync_run WHERE peer = p.url) ORDER BY p.url")
        return [{**Peer(*row[:6]).public(), "last_run_at": row[6], "last_status": row[7], "last_error": row[8]}
                for row in rows]

    def runs(self, limit: int = 50) -> List[SyncRun]:
        """The log: the last ``limit`` runs (1 to 1000), newest first."""
        if not 1 <= limit <= 1000:
            raise BadRequest(f"limit is 1 to 1000, not {limit}")
        with self.store.db.session() as s:
            rows = s.rows(f"SELECT {_RUN_COLUMNS}, id FROM cmf_sync_run ORDER BY id DESC LIMIT ?", [limit])
        return [SyncRun.from_row(row) for row in rows]

    def overview(self, limit: int = 20) -> Dict[str, Any]:
        """The peers page and its JSON twin: every peer and the last ``limit`` runs."""
        return {"peers": self.peers(), "runs": [asdict(run) for run in self.runs(limit)]}

    # -- runs -----------------------------------------------------------------------------------------

    def sync(self, url: Optional[str] = None, cause: str = "manual") -> List[SyncRun]:
        """Run the peer at ``url`` now, or every peer side by side (:data:`SYNC_WORKERS` at a time, so a peer
        that hangs holds the others no longer than the deadline); the recorded runs, by peer URL."""
        if url is not None:
            return [self._run(self.peer(url), cause)]
        with self.store.db.session() as s:
            peers = [Peer(*row) for row in s.rows(f"SELECT {_PEER_COLUMNS} FROM cmf_peer ORDER BY url")]
        if not peers:
            return []
        with ThreadPoolExecutor(min(SYNC_WORKERS, len(peers)), thread_name_prefix="cmf-sync") as pool:
            return list(pool.map(self._run, peers, [cause] * len(peers)))

    def _fetch(self, peer: Peer) -> Tuple[bytes, Dict[str, Any]]:
        """The peer's export of what changed after its position, checked to be one: as sent and as parsed (the
        merge is sent the bytes: a store that merges in another process is sent them faster than the objects).
        Else :class:`SyncFailed`."""
        where = f"peer {peer.url}"
        try:
            raw = asyncio.run(asyncio.wait_for(self._download(peer, where), self.deadline))
        except asyncio.TimeoutError:
            raise SyncFailed(f"{where} did not finish its answer within {self.deadline:g} s; nothing merged") \
                from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise SyncFailed(f"{where} is unreachable: {exc}") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise SyncFailed(f"{where} broke off its answer: {exc}") from None
        except httpx.HTTPError as exc:
            raise SyncFailed(f"{where}: the request failed: {type(exc).__name__}: {exc}") from None
        try:
            export = json.loads(raw)
        except (ValueError, RecursionError):
            raise SyncFailed(f"{where} answered something that is not JSON: {_snippet(raw)}") from None
        if not isinstance(export, dict) or not isinstance(export.get("Pipeline"), list):
            raise SyncFailed(f"{where} answered JSON that is not an export (no \"Pipeline\" list): "
                             f"{_snippet(raw)}")
        return raw, export

    async def _download(self, peer: Peer, where: str) -> bytes:
        """``POST <peer>/mlmd_pull``: the body of its answer (:func:`_body`), or a :class:`SyncFailed` for any
        other status than 200.  Redirects are not followed: the token goes to the peer's own address only."""
        headers = {"Accept-Encoding": "gzip", **({"Authorization": f"Bearer {peer.token}"} if peer.token else {})}
        request = {"pipeline_name": None, "exec_uuid": None, "last_sync_time": peer.last_sync_time}
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_SECONDS)) as client:
            async with client.stream("POST", f"{peer.url}/mlmd_pull", json=request, headers=headers) as response:
                status = response.status_code
                if status == 200:
                    return await _body(where, response, self.max_answer_bytes)
                hint = (" (it refused our token: give the right one with 'cmf server peers add --token-file')"
                        if status in (401, 403) else
                        " (redirects are not followed: add the peer by its own address)" if 300 <= status < 400
                        else "")
                raise SyncFailed(f"{where} answered HTTP {status}{hint}: {_snippet(await _head(response))}")

    def _run(self, peer: Peer, cause: str) -> SyncRun:
        """One run: fetch, merge in one transaction, then record it (and the new position) in another."""
        started = _now_ms()
        results: List[MergeResult] = []
        position, error = None, None
        try:
            raw, export = self._fetch(peer)
            results = self.store.push_all(raw)
            newest = _newest_change(export)
            position = None if newest is None else newest - OVERLAP_MS
        except SyncFailed as exc:
            error = str(exc)
        except StoreRefused as exc:
            error = f"peer {peer.url}: our store refused its records, nothing merged: {exc}"
        except Clash as exc:
            error = f"peer {peer.url} answered records that differ from ours: {exc}"  # it says nothing was merged
        except MergeError as exc:
            error = f"peer {peer.url} answered an export that is not valid, nothing merged: {exc}"
        except CmfError as exc:
            error = f"peer {peer.url}: our store failed, nothing merged: {exc}"
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run is logged as failed
            log.exception("sync from %s failed", peer.url)
            error = f"peer {peer.url}: unexpected {type(exc).__name__}: {exc}"
        totals = {k: sum(getattr(r, k) for r in results) for k in ("executions", "artifacts", "events", "updated")}
        run = SyncRun(peer.url, cause, started, _now_ms(), "failed" if error else "ok", peer.last_sync_time,
                      [r.pipeline for r in results], error=error, **totals)
        # a failed scheduled run is a warning: nobody else is told; a manual run's caller gets the record
        level = logging.WARNING if error and cause == "scheduled" else logging.INFO
        log.log(level, "%s sync from %s: %s", cause, peer.url, run.summary())
        return self._record(run, position)

    def _record(self, run: SyncRun, position: Optional[int]) -> SyncRun:
        """Log ``run`` and move its peer's position forward to ``position`` (if given), in one transaction."""
        with self.store.db.transaction() as s:
            if position is not None:
                s.execute("UPDATE cmf_peer SET last_sync_time = ? WHERE url = ? AND last_sync_time < ?",
                          [position, run.peer, position])
            run.id = s.rows(f"INSERT INTO cmf_sync_run ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 12)}) "
                            "RETURNING id", run.row())[0][0]
        return run

    # -- the scheduler --------------------------------------------------------------------------------

    def claim_due(self) -> List[Peer]:
        """The peers whose scheduled run is due, claimed for this process: their next run is set one interval
        ahead in the same UPDATE that finds them, so no other process gets them too."""
        now = _now_ms()
        due = "interval_s IS NOT NULL AND next_sync_at <= ?"
        with self.store.db.session() as s:
            if not s.value(f"SELECT COUNT(*) FROM cmf_peer WHERE {due}", [now]):
                return []  # the usual case, without taking the write lock
        with self.store.db.transaction() as s:
            rows = s.rows(f"UPDATE cmf_peer SET next_sync_at = ? + interval_s * 1000 WHERE {due} "
                          f"RETURNING {_PEER_COLUMNS}", [now, now])
        return [Peer(*row) for row in rows]

    def start(self) -> None:
        """Start the scheduler thread and its pool of runs (once)."""
        if self._thread is None:
            self._stop.clear()
            self._running = set()
            self._pool = ThreadPoolExecutor(SYNC_WORKERS, thread_name_prefix="cmf-sync")
            self._thread = threading.Thread(target=self._schedule, name="cmf-federation", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the scheduler; runs not started yet are dropped, those in progress finish (within the deadline)
        or die with the process (a merge rolls back)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _schedule(self) -> None:
        """Every tick: claim the due peers and hand each to the pool; never wait for a run."""
        while not self._stop.wait(TICK_SECONDS):
            try:
                for peer in self.claim_due():
                    self._launch(peer)
            except Exception:  # noqa: BLE001 - the database away for a moment must not end the scheduler
                log.exception("scheduled syncs of %s failed", self.store.describe())

    def _launch(self, peer: Peer) -> None:
        """Run a claimed peer in the pool, unless its last run still goes on in this process: then it skips
        this turn (its next one is an interval away, as for any claim)."""
        with self._running_lock:
            if peer.url in self._running:
                log.info("scheduled sync from %s skipped: its last run still goes on", peer.url)
                return
            self._running.add(peer.url)
        self._pool.submit(self._scheduled_run, peer)

    def _scheduled_run(self, peer: Peer) -> None:
        try:
            self._run(peer, "scheduled")
        except Exception:  # noqa: BLE001 - recording the run failed (the database away): logged, not lost silently
            log.exception("scheduled sync from %s failed", peer.url)
        finally:
            with self._running_lock:
                self._running.discard(peer.url)


def mount_federation(app: FastAPI, store: Any, max_answer_bytes: int = MAX_ANSWER_BYTES) -> Federation:
    """Add ``GET /api/peers`` (the JSON twin of the page ``/peers``), ``GET /api/sync-runs?limit=N`` and
    ``POST /api/sync`` (``{"peer": URL or null}``: run now, answer the runs) to ``app``; the Federation, whose
    scheduler the app's lifespan starts and stops.  A peer's answer may hold ``max_answer_bytes`` (give the
    server's body limit: what a client may push)."""
    federation = Federation(store, max_answer_bytes)
    app.state.federation = federation
    api = APIRouter(prefix="/api")

    @api.get("/peers")
    async def api_peers(limit: int = 20) -> Dict[str, Any]:
        return await run_in_threadpool(federation.overview, limit)

    @api.get("/sync-runs")
    async def api_sync_runs(limit: int = 50) -> Dict[str, Any]:
        return {"runs": [asdict(run) for run in await run_in_threadpool(federation.runs, limit)]}

    @api.post("/sync")
    async def api_sync(request: Request) -> Dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("peer"), (str, type(None))):
            raise BadRequest('the body is JSON {"peer": URL or null (every peer)}')
        runs = await run_in_threadpool(federation.sync, body.get("peer"))
        return {"runs": [asdict(run) for run in runs]}

    @app.get("/peers")
    async def peers_page(request: Request, limit: int = 20, started: Optional[str] = None) -> Response:
        data = await run_in_threadpool(federation.overview, limit)
        # the notice names a peer this server has, never text the address brings (a link could make it say anything)
        known = started if started in {peer["url"] for peer in data["peers"]} else None
        return render("peers.html", request=request, path=request.url.path, title="cmf", data=data, started=known)

    @app.post("/peers/sync")
    async def peers_sync(request: Request) -> Response:
        """The page's "sync now" of one configured peer: started in the background, then back to the page, whose
        log refreshes itself.  Only a peer already configured runs (adding one stays in the CLI), so no request
        makes the server fetch an address of its choosing.  A browser signed in with the session cookie may send
        it from this server's own page only (``app.COOKIE_WRITES``)."""
        url = str((await request.form()).get("peer", ""))
        peer = await run_in_threadpool(federation.peer, url)  # UnknownPeer: 404
        asyncio.get_running_loop().run_in_executor(None, federation.sync, peer.url, "manual")
        return RedirectResponse("/peers?" + urlencode({"started": peer.url}), status_code=303)

    app.include_router(api)
    return federation
