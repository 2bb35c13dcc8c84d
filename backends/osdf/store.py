"""The osdfremote object store: HTTP(S) PUT/GET/HEAD against a Pelican origin, reads through a cache.

* ``put`` streams the file in one ``PUT <origin>/<key>`` (Content-Length known; never read whole);
* ``get`` asks the cache(s) first and falls back to the origin when a cache answers
  anything but 200 or cannot be reached (an unreachable cache is skipped for the rest of
  the run, with a warning); the body is streamed to the engine's writer in 1 MiB chunks;
* ``exists`` sends one ``HEAD`` per key to the origin, 16 at a time over the pooled
  session: plain HTTP has no cheap listing.  XRootD answers WebDAV ``PROPFIND`` (one per
  ``xx/`` folder, at most 256), but its answer is the whole folder, ~460 bytes of XML
  per object STORED, and namespaces may disable listings; per-key HEADs cost O(keys
  asked) whatever the size of the remote.  Measured on loopback against XRootD 5.5:
  ~1 ms per key (300 keys 0.3 s, 3000 keys 3.3 s) vs PROPFIND 0.2-0.4 s for the same
  keys on a remote of 20,000 objects (9 MB of XML), growing with the remote.

One ``requests.Session`` serves every thread; its pool keeps up to :data:`POOL`
connections per host.  Every request has a timeout, TLS is verified against the
default bundle or ``REQUESTS_CA_BUNDLE``, and nothing is retried here: connection
errors, timeouts, 408/423/425/429 and 5xx are :class:`TransientError` for the engine
to retry; 401/403 are "token refused by <host>"; 404 to GET/HEAD is :class:`ObjectNotFound`.
Redirects are followed, but requests drops ``Authorization`` when one leads to another host.
"""
from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Dict, List, Sequence, Set, Tuple
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .tokens import TokenSource
from cmf_core.errors import BackendError, ObjectNotFound, TransientError
from cmf_core.hookspecs import ObjectStore

CHUNK = 1 << 20
TIMEOUT = (10.0, 120.0)  # seconds to connect, and between two reads of the response
EXISTS_WORKERS = 16  # HEAD requests in flight during one exists()
POOL = 32  # connections kept per host: the engine's -j is not known when the remote opens
RETRYABLE = frozenset({408, 423, 425, 429})  # 423: XRootD refuses reads of a file still being written
HINT = "give a token with --access-token, CMF_OSDF_TOKEN or --key-id/--key-path/--key-issuer"


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class OSDFStore(ObjectStore):
    """Objects at ``<origin>/<key>``; reads try ``caches`` in order, then the origin."""

    def __init__(self, origin: str, caches: Sequence[str], tokens: TokenSource, pool: int = POOL) -> None:
        self.origin = origin.rstrip("/")
        self.caches: List[str] = [c.rstrip("/") for c in caches if c.rstrip("/") != self.origin]
        self.tokens = tokens
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": "cmf-osdfremote", "Accept-Encoding": "identity"})
        self._bad_caches: Set[str] = set()
        self._lock = threading.Lock()

    # -- requests and their failures -----------------------------------------------------------

    @staticmethod
    def url(base: str, key: str) -> str:
        return f"{base}/{quote(key)}"

    def request(self, method: str, base: str, key: str, **kwargs) -> requests.Response:
        """Send one request for ``key`` under ``base``; connection failures become cmf errors."""
        url = self.url(base, key)
        headers = {**kwargs.pop("headers", {}), **self.tokens.headers()}
        try:
            return self.session.request(method, url, headers=headers, timeout=TIMEOUT, allow_redirects=True,
                                        **kwargs)
        except requests.exceptions.SSLError as exc:
            raise BackendError(f"TLS verification of {host_of(url)} failed ({exc.__context__ or exc}); point "
                               "REQUESTS_CA_BUNDLE at a bundle that holds its CA") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(f"{method} {key} at {host_of(url)}: {type(exc).__name__}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise BackendError(f"{method} {key} at {host_of(url)}: {exc}") from None

    def check(self, resp: requests.Response, key: str) -> None:
        """Raise the cmf error for a response that is not a success."""
        status = resp.status_code
        if status < 300:
            return
        method, host = resp.request.method, host_of(resp.url)
        what = f"{status} {resp.reason} to {method} {key}"
        if status in (401, 403):
            hint = "" if self.tokens.present else f"; no token was sent: {HINT}"
            raise BackendError(f"token refused by {host} ({what}; token from {self.tokens.source}){hint}")
        if status == 404 and method in ("GET", "HEAD"):
            raise ObjectNotFound(key, self.origin)
        if status in RETRYABLE or status >= 500:
            raise TransientError(f"{host} answered {what}")
        raise BackendError(f"{host} answered {what}")

    # -- the ObjectStore interface ----------------------------------------------------------------

    def exists(self, keys: Sequence[str]) -> Set[str]:
        """One HEAD per key against the origin, :data:`EXISTS_WORKERS` at a time."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()

        def present(key: str) -> bool:
            with self.request("HEAD", self.origin, key) as resp:
                if resp.status_code == 404:
                    return False
                self.check(resp, key)
                return True

        with ThreadPoolExecutor(min(EXISTS_WORKERS, len(keys))) as pool:
            return {key for key, found in zip(keys, pool.map(present, keys)) if found}

    def put(self, src: Path, key: str) -> None:
        """PUT the file's bytes to the origin, streamed from disk with its Content-Length."""
        size = src.stat().st_size
        with open(src, "rb") as body:
            # requests sends an empty file as chunked; a zero-length body needs plain bytes
            with self.request("PUT", self.origin, key, data=body if size else b"",
                              headers={"Content-Type": "application/octet-stream"}) as resp:
                self.check(resp, key)

    def get(self, key: str, dst: BinaryIO) -> None:
        """Stream ``key`` from the first cache that has it, else from the origin."""
        for cache in self.caches:
            if cache in self._bad_caches:
                continue
            try:
                resp = self.request("GET", cache, key, stream=True)
            except BackendError as exc:  # unreachable, timed out, TLS refused: skip it from now on
                self._give_up_on(cache, "unreachable" if isinstance(exc, TransientError) else str(exc))
                continue
            with resp:
                if resp.status_code == 200:
                    self._copy(resp, key, dst)
                    return
        with self.request("GET", self.origin, key, stream=True) as resp:
            self.check(resp, key)
            self._copy(resp, key, dst)

    def _give_up_on(self, cache: str, reason: str) -> None:
        with self._lock:
            first = cache not in self._bad_caches
            self._bad_caches.add(cache)
        if first:
            warnings.warn(f"cache {host_of(cache)} {reason}; reading from the origin for the rest of this run",
                          stacklevel=3)

    def _copy(self, resp: requests.Response, key: str, dst: BinaryIO) -> None:
        try:
            for chunk in resp.iter_content(CHUNK):
                dst.write(chunk)
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout) as exc:
            raise TransientError(f"GET {key} from {host_of(resp.url)} broke off: {exc}") from None

    def close(self) -> None:
        self.session.close()


# -- pelican:// : ask the federation's director where the namespace lives ----------------------------


def resolve_pelican(url: str) -> Tuple[str, List[str], Dict[str, object]]:
    """The origin URL and cache URLs that serve ``pelican://<federation>/<path>``, and the namespace info.

    Uses pelicanfs for federation discovery (``https://<federation>/.well-known/pelican-configuration``)
    and for the director's answers: the 307 of ``/api/v1.0/director/origin/<path>`` names the origin,
    the ``Link`` header of ``<director>/<path>`` lists the caches by priority.  Directors preserve the
    path in their redirects, so the URLs returned for the remote's directory are bases for its keys.
    """
    from fsspec.asyn import sync
    from pelicanfs.core import PelicanFileSystem
    from pelicanfs.dir_header_parser import parse_director_response

    parts = urlsplit(url)
    path = parts.path.rstrip("/") or "/"
    fs = PelicanFileSystem(f"pelican://{parts.netloc}/", skip_instance_cache=True, get_client=_aiohttp_client)
    try:
        origin, answer = sync(fs.loop, fs.get_origin_url, path)
        listed = parse_director_response(sync(fs.loop, fs.get_director_headers, path))
    except Exception as exc:  # pelicanfs and aiohttp raise many types; all mean "cannot resolve"
        raise BackendError(f"the pelican federation {parts.netloc} did not resolve {path}: "
                           f"{type(exc).__name__}: {exc or 'no origin or director answer'}") from None
    finally:  # fsspec keeps the inner HTTP filesystem cached: close its session, leave it able to open another
        http = fs.http_file_system
        session, http._session = getattr(http, "_session", None), None
        if session is not None:
            sync(fs.loop, session.close)
    namespace = answer.x_pel_ns_hdr
    info: Dict[str, object] = {"namespace": namespace.namespace if namespace else "",
                               "require_token": bool(namespace and namespace.require_token)}
    return origin, [c for c in listed.object_servers if c], info


async def _aiohttp_client(**kwargs):
    """An aiohttp session for pelicanfs that verifies TLS against REQUESTS_CA_BUNDLE/SSL_CERT_FILE.

    aiohttp builds its default SSL context when it is imported, so environment changes made
    later would not count; and a director must answer within 30 s.
    """
    import os
    import ssl

    import aiohttp

    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None
    context = ssl.create_default_context(cafile=cafile)
    kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=30))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), **kwargs)
