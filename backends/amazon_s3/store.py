"""The amazonS3 object store: one boto3 client, shared by every transfer thread.

* ``exists`` lists prefixes (:func:`cmf_core.s3.existing`), never one HEAD per key;
* ``put`` is one PUT below :data:`MULTIPART_THRESHOLD` (``upload_file`` would
  build a transfer manager, its threads and futures for every small file: twice
  the CPU per object), and ``upload_file`` with parallel multipart parts
  from there on, sized by :func:`part_size` so that even objects of terabytes
  stay under S3's 10,000 parts;
* ``get`` asks for the first :data:`DOWNLOAD_HEAD` bytes (all of most objects:
  one GET, no HEAD) and streams them into the engine's non-seekable writer;
  the size in that answer starts parallel ranged GETs of the rest at once,
  written in order after the head, at most ``CONCURRENCY`` ranges in memory.
  Each GET (and each one-PUT upload) goes to a URL presigned by the boto3 client
  (its credentials, chain and region) through a urllib3 pool
  (:func:`cmf_core.s3.http_pool`): a ``get_object`` call spends about 1.5 ms of
  CPU per request on botocore's event hooks, header parsing and signing,
  presigning and urllib3 about 0.6 ms, which is what moving thousands of small
  files is made of.

Why not ``download_fileobj``: response checksums must stay off, because some
servers (rclone) send the whole object's CRC with every range, which botocore
then rejects, and ``dvc push`` stores a CRC with every object; with them off,
s3transfer 0.17 fetches the first part and schedules the others from that
part's callback while holding one of its 10 in-memory slots, so a download to
a non-seekable stream deadlocks as soon as an object has more than 10 parts.

The engine owns retries and verifies every md5, so botocore retries once at
most and no CRC is computed or checked (many S3-compatible servers refuse
aws-chunked CRC trailers anyway); every SDK error leaves here as a cmf error
that names the bucket and the endpoint.
"""
from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Deque, Iterator, List, Optional, Sequence, Set, Tuple, Union

import boto3
from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
import urllib3
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError, HTTPClientError,
                                 IncompleteReadError, NoCredentialsError, PartialCredentialsError, SSLError)

from cmf_core import s3
from cmf_core.errors import BackendError, CmfError, TransientError
from cmf_core.hookspecs import ObjectStore, Remote

MIB = 1 << 20
MULTIPART_THRESHOLD = 64 * MIB  # files from this size on are uploaded in parallel parts
MIN_PART = 8 * MIB
TARGET_PARTS = 9_000            # aim below S3's limit of 10,000 parts per upload
DOWNLOAD_HEAD = 8 * MIB         # objects up to this size come in one streamed GET
DOWNLOAD_PART = 8 * MIB         # then ranges of this size: CONCURRENCY of them (64 MiB) may wait in memory
CONCURRENCY = 8                 # ranges in flight per object
UPLOAD_THREADS = 10             # parts of one object uploaded at once, as s3transfer's default
RANGE_ATTEMPTS = 2              # a range whose body breaks off is fetched again once, not the whole object
POOL = 128                      # connections of the client and of the GET pool: jobs x parts, opened lazily
PRESIGNED_SECONDS = 3600        # lifetime of the signed URL of one GET: the request must start within it
CLIENT_CONFIG = Config(
    max_pool_connections=POOL,
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=10,
    read_timeout=60,
    tcp_keepalive=True,
    signature_version="s3v4",  # also for presigned URLs, which botocore would otherwise sign with SigV2
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)
NO_CREDENTIALS = ("no AWS credentials found for {where}: re-run 'cmf init amazonS3' with --access-key-id and "
                  "--secret-key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a "
                  "profile of ~/.aws/credentials")


def part_size(size: int) -> int:
    """The multipart part size for a file of ``size`` bytes: at least 8 MiB, whole MiB, <= 9,000 parts."""
    return max(MIN_PART, -(-size // (TARGET_PARTS * MIB)) * MIB)


class AmazonS3Store(ObjectStore):
    """Objects at ``prefix/key`` in one bucket, through a thread-safe boto3 client."""

    def __init__(self, client, where: s3.Location, verify: Union[bool, str] = True) -> None:
        self.client = client
        self.where = where
        self.http = s3.http_pool(where.endpoint, verify, POOL, CLIENT_CONFIG.connect_timeout,
                                 CLIENT_CONFIG.read_timeout)

    @classmethod
    def open(cls, remote: Remote) -> "AmazonS3Store":
        """Resolve credentials (stored keys, else the AWS chain), make the client, check the bucket once."""
        options, secrets = remote.options, remote.secrets
        endpoint = options.get("endpointurl") or None
        placeholder = s3.Location.parse(remote.url, endpoint or "AWS S3")
        try:
            session = boto3.session.Session(aws_access_key_id=secrets.get("access_key_id") or None,
                                            aws_secret_access_key=secrets.get("secret_access_key") or None,
                                            aws_session_token=secrets.get("session_token") or None,
                                            region_name=options.get("region") or None)
            if session.get_credentials() is None:
                raise BackendError(NO_CREDENTIALS.format(where=placeholder))
            verify = s3.tls_verify(options)
            client = session.client("s3", endpoint_url=endpoint, verify=verify, config=CLIENT_CONFIG)
        except BotoCoreError as exc:  # an unknown AWS_PROFILE, a malformed config file, a bad region
            raise BackendError(f"cannot set up the S3 client for {placeholder}: {exc}") from None
        store = cls(client, s3.Location(placeholder.bucket, placeholder.prefix, client.meta.endpoint_url), verify)
        store._check()
        return store

    def _check(self) -> None:
        """One tiny listing, so that a missing bucket, refused credentials or a dead endpoint fail the
        command once, up front, instead of once per object.  Throttling and 5xx are left to the
        engine's retries, and AccessDenied to the transfers (a role may get and put yet not list)."""
        try:
            self.client.list_objects_v2(Bucket=self.where.bucket, Prefix=self.where.name(""), MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc)
            connect_failed = isinstance(exc, ConnectionError)
            if _code(exc) != "AccessDenied" and (connect_failed or not isinstance(error, TransientError)):
                raise error from None

    # -- the ObjectStore methods ------------------------------------------------------------------

    def exists(self, keys: Sequence[str]) -> Set[str]:
        return s3.existing(keys, self._list)

    def put(self, src: Path, key: str) -> None:
        size = src.stat().st_size
        if size < MULTIPART_THRESHOLD:  # one PUT: upload_file would set up a transfer manager per file
            with open(src, "rb") as body:
                response = self._presigned("PUT", key, body=body, headers={"Content-Length": str(size)})
            if response.status != 200:
                raise self._refused(response, key)
            s3.release(response)
            return
        with self._translated(key):
            config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=part_size(size),
                                    max_concurrency=UPLOAD_THREADS, preferred_transfer_client="classic")
            self.client.upload_file(str(src), self.where.bucket, self.where.name(key), Config=config)

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

    def close(self) -> None:
        self.client.close()
        self.http.clear()

    # -- helpers -----------------------------------------------------------------------------------

    def _presigned(self, method: str, key: str, **request: object) -> urllib3.BaseHTTPResponse:
        """The open response to ``method`` (GET or PUT) on the URL the client presigns for ``key``."""
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        with self._translated(key):
            url = self.client.generate_presigned_url(
                operation, Params={"Bucket": self.where.bucket, "Key": self.where.name(key)},
                ExpiresIn=PRESIGNED_SECONDS)
        with self._unreachable():
            return self.http.request(method, url, preload_content=False, decode_content=False, **request)

    def _refused(self, response: urllib3.BaseHTTPResponse, key: str, fetching: bool = False) -> CmfError:
        """The cmf error for an S3 error answer (its XML body names the code)."""
        body = response.data.decode("utf-8", "replace")
        s3.release(response)
        code, message = s3.parse_error_body(body)
        return s3.error(code, response.status, self.where, key, message or "", fetching=fetching)

    def _ranged(self, key: str, first: int, last: int) -> Optional[urllib3.BaseHTTPResponse]:
        """The open response to a presigned GET of bytes ``first..last`` (``None`` if the object is empty)."""
        response = self._presigned("GET", key, headers={"Range": f"bytes={first}-{last}"})
        if response.status in (200, 206):
            return response
        if response.status == 416:
            s3.release(response)
            return None
        raise self._refused(response, key, fetching=True)

    def _write_in_order(self, key: str, head: urllib3.BaseHTTPResponse, rest: List[Tuple[int, int]],
                        dst: BinaryIO) -> None:
        """Stream ``head`` into ``dst`` while the ranges ``rest`` download, then write them in order."""
        if not rest:
            self._stream(head, dst)
            return
        pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="cmf-s3-range")
        try:
            todo = iter(rest)
            ahead: Deque[Future] = deque(pool.submit(self._range, key, *r) for r in islice(todo, CONCURRENCY))
            self._stream(head, dst)
            while ahead:
                data = ahead.popleft().result()
                following = next(todo, None)
                if following:
                    ahead.append(pool.submit(self._range, key, *following))
                dst.write(data)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stream(self, body: urllib3.BaseHTTPResponse, dst: BinaryIO) -> None:
        chunks = body.stream(MIB)
        while True:
            with self._unreachable():
                chunk = next(chunks, None)
            if chunk is None:
                return
            dst.write(chunk)  # errors of the destination are the caller's: not wrapped

    def _range(self, key: str, first: int, last: int) -> bytes:
        """Bytes ``first..last`` of ``key``; a body that breaks off is asked for again."""
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            response = self._ranged(key, first, last)
            try:
                with self._unreachable():
                    data = response.read() if response is not None else b""
                break
            except TransientError:
                if attempt == RANGE_ATTEMPTS:
                    raise
            finally:
                if response is not None:
                    s3.release(response)
        if len(data) != last - first + 1:
            raise TransientError(f"{self.where.url(key)} on {self.where.endpoint}: got {len(data)} "
                                 f"bytes for bytes {first}-{last}; did the object change?")
        return data

    @contextlib.contextmanager
    def _unreachable(self) -> Iterator[None]:
        """A connection that fails or breaks off is a transient cmf error (TLS trouble a permanent one)."""
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            raise s3.http_failure(self.where, exc) from None

    def _list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (relative to the remote's prefix), page by page."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.where.bucket, Prefix=self.where.name(prefix), PaginationConfig={"PageSize": 1000})
        with self._translated():
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = self.where.key(obj["Key"])
                    if key is not None:
                        yield key

    @contextlib.contextmanager
    def _translated(self, key: Optional[str] = None, fetching: bool = False) -> Iterator[None]:
        """Turn boto3/botocore exceptions into cmf errors; anything else (the writer's) passes."""
        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, key, fetching) from None

    def _error(self, exc: BaseException, key: Optional[str] = None, fetching: bool = False) -> CmfError:
        """The cmf error for an SDK exception; with ``fetching`` a 404 means the key is missing."""
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
            exc = exc.__context__  # boto3 wraps the ClientError of an upload in a plain message
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = exc.response.get("Error", {}).get("Message", "")
            return s3.error(_code(exc), status, self.where, key, message, fetching=fetching)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return BackendError(NO_CREDENTIALS.format(where=self.where))
        if isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError)):
            return s3.unreachable(self.where, exc, tls=isinstance(exc, SSLError))
        return BackendError(f"{self.where.url(key or '')} on {self.where.endpoint}: {exc}")


def _code(exc: BaseException) -> Optional[str]:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
