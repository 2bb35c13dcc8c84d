"""S3 objects moved over plain HTTP, signed by the SDKs: what both S3 backends do with their bytes.

Each backend's SDK only signs (its credentials, chain and region); the request
itself goes through one thread-safe urllib3 pool (:func:`cmf_core.s3.http_pool`).
An SDK call per object costs about 1.5 ms (boto3) or 0.5 ms (minio) of CPU on
event hooks, header building and signing; a signed request about 0.3 ms, and
moving thousands of small files is made of little else.  A GET is signed in its
headers, to a short URL that :class:`Addressing` builds: urllib3 re-encodes the
long query of a presigned URL one character at a time in Python, which cost
0.16 ms per request, more than the signature itself.  A PUT goes to a presigned
URL (its body is not hashed for the signature).

* :meth:`SignedHTTP.get` asks for the first :data:`DOWNLOAD_HEAD` bytes (all of
  most objects: one GET, no HEAD) and streams them into the engine's
  non-seekable writer; the size in that answer starts parallel ranged GETs of
  the rest at once (at most :data:`CONCURRENCY` per object and
  :data:`RANGE_BUDGET` in all, each holding at most :data:`DOWNLOAD_PART`
  bytes), and each range is written in order, piece by piece as it arrives, so
  that the engine's md5 keeps pace with the network;
* :meth:`SignedHTTP.names` lists keys with ListObjectsV2, read without an XML
  parser (what a push asks before it uploads anything);
* :meth:`SignedHTTP.put` is one PUT of a whole file (multipart stays with the SDKs),
  with a ``Content-MD5`` header: the key names the md5 of the bytes, so the
  server checks for free that what it stores is the object, and a corrupt DVC
  cache file is refused instead of poisoning the remote for everyone who pulls.

Error answers become cmf errors through :func:`cmf_core.s3.error`; a presigned
URL holds a signature, so no message ever shows one.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import html
import queue
import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Deque, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import parse_qs, quote, urlsplit

import urllib3

from cmf_core import layout, s3
from cmf_core.errors import BackendError, CmfError, CorruptSource, TransientError

MIB = 1 << 20
DOWNLOAD_HEAD = 8 * MIB    # objects up to this size come in one streamed GET
DOWNLOAD_PART = 8 * MIB    # then ranges of this size: CONCURRENCY of them (64 MiB) may wait in memory
CONCURRENCY = 8            # ranges in flight per object
RANGE_BUDGET = 12          # ranges in flight in all, for every object a store downloads at once (96 MiB)
RANGE_ATTEMPTS = 2         # a range whose body breaks off is asked once more for its missing bytes
PRESIGNED_SECONDS = 3600   # lifetime of a signed URL: the request must start within it

#: what a range's downloader hands the writer: bytes, then ``None`` (done) or the error that stopped it
Piece = Union[bytes, None, BaseException]

#: ``presign(method, name)``: a URL the SDK signed for ``method`` (GET or PUT) on the object ``name`` of
#: the bucket (no remote prefix added)
Presigner = Callable[[str, str], str]
#: ``sign_headers(method, url, region, headers)``: the SDK's SigV4 signature of that request, added to ``headers``
HeaderSigner = Callable[[str, str, str, Dict[str, str]], None]

PROBE = "cmf-address-probe"  # the object name an SDK presigns once to show its addressing; nothing is sent


@dataclass(frozen=True)
class Addressing:
    """Where a bucket's objects are, and the region their requests are signed for.

    Read once from a URL the SDK presigned for :data:`PROBE`: the SDK has chosen virtual-host or
    path addressing, the endpoint and the region, and the URL of any object differs only in its name."""

    base: str    # the URL of an object, up to its name
    region: str

    @classmethod
    def read(cls, presigned: str) -> "Addressing":
        url, _, query = presigned.partition("?")
        credential = parse_qs(query).get("X-Amz-Credential", [""])[0].split("/")  # key/date/region/s3/aws4_request
        if not url.endswith("/" + PROBE) or len(credential) != 5:  # the URL without its query: no signature shown
            raise BackendError(f"the S3 SDK presigned {url} in a way cmf cannot use (SigV4 only)")
        return cls(url[: -len(PROBE)], credential[2])

    def url(self, name: str) -> str:
        return self.base + quote(name, safe="/~")

    @property
    def bucket_url(self) -> str:
        """The URL of the bucket itself, for a listing (a path-style bucket without its trailing slash)."""
        return self.base if urlsplit(self.base).path == "/" else self.base.rstrip("/")


class SignedHTTP:
    """GETs and one-PUT uploads of the objects at ``where``: a PUT to the URL ``presign`` gives, a GET to
    the short URL of :attr:`addressing`, signed in its headers by ``sign_headers``."""

    def __init__(self, where: s3.Location, presign: Presigner, sign_headers: HeaderSigner,
                 verify: Union[bool, str], pool_size: int, connect_timeout: float, read_timeout: float) -> None:
        self.where = where
        self.presign = presign
        self.sign_headers = sign_headers
        self.pool = s3.http_pool(where.endpoint, verify, pool_size, connect_timeout, read_timeout)
        self.ranges = threading.BoundedSemaphore(RANGE_BUDGET)  # see _write_in_order

    @functools.cached_property
    def addressing(self) -> Addressing:
        return Addressing.read(self.presign("GET", PROBE))

    def put(self, src: Path, key: str, size: int) -> None:
        headers = {"Content-Length": str(size)}
        md5 = layout.content_md5(key)
        if md5:
            headers["Content-MD5"] = base64.b64encode(bytes.fromhex(md5)).decode()
        with open(src, "rb") as body:
            response = self._request("PUT", key, headers, body=body)
        if response.status == 200:
            s3.release(response)
            return
        code, message = _error_body(response)
        if code == "BadDigest" and md5:
            raise self._bad_digest(src, key, md5)
        raise s3.error(code, response.status, self.where, key, message or "")

    def get(self, key: str, dst: BinaryIO) -> None:
        head = self._ranged(key, 0, DOWNLOAD_HEAD - 1)
        if head is None:  # an empty object has no byte 0
            return
        received = int(head.headers.get("Content-Length", 0))
        size = head.headers.get("Content-Range", "").rpartition("/")[2]
        total = int(size) if size.isdigit() else received
        rest = [(first, min(first + DOWNLOAD_PART, total) - 1) for first in range(received, total, DOWNLOAD_PART)]
        try:
            self._write_in_order(key, head, rest, dst)
        finally:
            s3.release(head)

    def names(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a folder of keys ending in ``/``, or ``""``), a page at a time.

        A ListObjectsV2 request signed in its headers, its answer read with a regular expression: the
        SDKs build an object per key from a parsed XML tree, and listing 100,000 keys took 7.7 s of CPU
        through minio's ``list_objects``."""
        token: Optional[str] = None
        while True:
            query = {"list-type": "2", "max-keys": str(s3.PAGE), "prefix": self.where.name(prefix)}
            if token is not None:
                query["continuation-token"] = token
            url = self.addressing.bucket_url + "?" + "&".join(f"{name}={quote(value, safe='-_.~')}"
                                                              for name, value in sorted(query.items()))
            headers: Dict[str, str] = {}
            self.sign_headers("GET", url, self.addressing.region, headers)
            with self._unreachable():
                response = self.pool.request("GET", url, headers=headers)
            if response.status != 200:
                raise self._refused(response, prefix)
            body = response.data
            for found in _KEY.findall(body):
                key = self.where.key(html.unescape(found.decode("utf-8")))
                if key is not None:
                    yield key
            if _TRUNCATED not in body:
                return
            following = _TOKEN.search(body)
            if following is None:
                raise BackendError(f"{self.where} answered a listing of {prefix or 'the remote'} with a truncated "
                                   f"page and no continuation token")
            token = html.unescape(following.group(1).decode("utf-8"))

    def close(self) -> None:
        self.pool.clear()

    # -- helpers -----------------------------------------------------------------------------------

    def _request(self, method: str, key: str, headers: Dict[str, str], **request: object) -> urllib3.BaseHTTPResponse:
        """The open response to ``method`` on ``key``, signed."""
        name = self.where.name(key)
        if method == "PUT":  # its body is not hashed for a presigned URL's signature
            url = self.presign(method, name)
        else:
            url = self.addressing.url(name)
            self.sign_headers(method, url, self.addressing.region, headers)
        with self._unreachable():
            return self.pool.request(method, url, headers=headers, preload_content=False, decode_content=False,
                                     **request)

    def _bad_digest(self, src: Path, key: str, md5: str) -> CmfError:
        """The server found that the bytes it got are not ``md5``: a corrupt file stays here, for
        good; bytes garbled on the way are worth sending again."""
        if layout.file_md5(src) != md5:
            return CorruptSource(src, md5)
        return TransientError(f"{self.where.endpoint} got different bytes than were sent for "
                              f"{self.where.url(key)} (BadDigest); worth retrying")

    def _refused(self, response: urllib3.BaseHTTPResponse, key: str, fetching: bool = False) -> CmfError:
        """The cmf error for an S3 error answer."""
        code, message = _error_body(response)
        return s3.error(code, response.status, self.where, key, message or "", fetching=fetching)

    def _ranged(self, key: str, first: int, last: int) -> Optional[urllib3.BaseHTTPResponse]:
        """The open response to a GET of bytes ``first..last``, checked by its ``Content-Range`` (rclone
        answers a range with 200, not 206).  From byte 0 a server may send the whole object (it ignores
        ``Range``) or, for an empty object, answer 416 (then ``None``); further on, only the range will do."""
        response = self._request("GET", key, {"Range": f"bytes={first}-{last}"})
        if response.status not in (200, 206, 416):
            raise self._refused(response, key, fetching=True)
        answered = response.headers.get("Content-Range", "")
        if response.status != 416 and (answered.startswith(f"bytes {first}-") or not (first or answered)):
            return response
        s3.release(response)
        if first == 0 and response.status == 416:  # an empty object has no byte 0
            return None
        raise self._changed(key, first, last)

    def _changed(self, key: str, first: int, last: int) -> TransientError:
        return TransientError(f"{self.where.url(key)} on {self.where.endpoint}: bytes {first}-{last} are not "
                              f"there as they were a moment ago; did the object change?")

    def _write_in_order(self, key: str, head: urllib3.BaseHTTPResponse, rest: List[Tuple[int, int]],
                        dst: BinaryIO) -> None:
        """Stream ``head`` into ``dst`` while the ranges ``rest`` download, then each range in order.

        A range goes to ``dst`` piece by piece as it arrives, not once complete: the md5 that the engine
        computes in order can then keep pace with the network instead of waiting for whole ranges.

        Each range in flight holds up to :data:`DOWNLOAD_PART` bytes, and takes one of the store's
        :data:`RANGE_BUDGET` slots until it is written: 4 objects of 1 GiB pulled at once held 8 ranges
        each (a peak of 499 MB).  A download that holds no slot waits for one; one that holds some
        only takes a free one, so that two downloads never wait for each other's slots."""
        if not rest:
            self._stream(head, dst)
            return
        pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="cmf-s3-range")
        stop = threading.Event()
        todo: Deque[Tuple[int, int]] = deque(rest)
        ahead: Deque[queue.SimpleQueue] = deque()  # each holds a slot until written

        def start_more() -> None:
            while todo and len(ahead) < CONCURRENCY and self.ranges.acquire(blocking=not ahead):
                pieces: "queue.SimpleQueue[Piece]" = queue.SimpleQueue()
                ahead.append(pieces)
                pool.submit(self._range, key, *todo.popleft(), pieces, stop)

        try:
            start_more()
            self._stream(head, dst)
            while ahead:
                for piece in iter(ahead[0].get, None):
                    if isinstance(piece, BaseException):
                        raise piece
                    dst.write(piece)
                ahead.popleft()
                self.ranges.release()
                start_more()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for _ in ahead:
                self.ranges.release()

    def _stream(self, body: urllib3.BaseHTTPResponse, dst: BinaryIO) -> None:
        chunks = body.stream(MIB)
        while True:
            with self._unreachable():
                chunk = next(chunks, None)
            if chunk is None:
                return
            dst.write(chunk)  # errors of the destination are the caller's: not wrapped

    def _range(self, key: str, first: int, last: int, pieces: "queue.SimpleQueue[Piece]",
               stop: threading.Event) -> None:
        """Put bytes ``first..last`` of ``key`` into ``pieces`` as they arrive, then ``None`` (or the
        error that ended it).  A body that breaks off is asked again once, for the bytes still missing."""
        try:
            got = first
            for attempt in range(1, RANGE_ATTEMPTS + 1):
                response = self._ranged(key, got, last)
                try:
                    with self._unreachable():
                        while got <= last and not stop.is_set():
                            piece = response.read(min(MIB, last - got + 1), decode_content=False)
                            if not piece:
                                break
                            pieces.put(piece)
                            got += len(piece)
                    break
                except TransientError:
                    if attempt == RANGE_ATTEMPTS:
                        raise
                finally:
                    s3.release(response)
            if got <= last and not stop.is_set():
                raise self._changed(key, got, last)
            pieces.put(None)
        except BaseException as exc:  # noqa: B036 -- handed to the thread that writes, which raises it
            pieces.put(exc)

    @contextlib.contextmanager
    def _unreachable(self) -> Iterator[None]:
        """A connection that fails or breaks off is a transient cmf error (TLS trouble a permanent one)."""
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            raise s3.http_failure(self.where, exc) from None


def _error_body(response: urllib3.BaseHTTPResponse) -> Tuple[Optional[str], Optional[str]]:
    """``Code`` and ``Message`` of an S3 error answer (its XML body); the response is released."""
    body = response.data.decode("utf-8", "replace")
    s3.release(response)
    return s3.parse_error_body(body)


_KEY = re.compile(rb"<Key>([^<]*)</Key>")  # in a listing, only each object's <Contents> has a <Key>
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_TRUNCATED = b"<IsTruncated>true</IsTruncated>"
