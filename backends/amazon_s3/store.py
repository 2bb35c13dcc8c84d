"""The amazonS3 object store: one boto3 client, shared by every transfer thread.

* ``exists`` lists prefixes (:func:`cmf_core.s3.existing`), never one HEAD per key;
* ``put`` is one PUT below :data:`MULTIPART_THRESHOLD` (``upload_file`` would
  build a transfer manager, its threads and futures for every small file: twice
  the CPU per object), and ``upload_fileobj`` with parallel multipart parts
  from there on, sized by :func:`part_size` so that even objects of terabytes
  stay under S3's 10,000 parts.  A multipart upload is verified as a single PUT
  is: s3transfer reads the file in order through :class:`cmf_core.s3.CheckedSource`,
  which refuses a file whose bytes are not the md5 its key names before the last
  part leaves, and every part carries a Content-MD5 (:func:`_part_md5`), so the
  server refuses a part garbled on the way;
* ``get``, and ``put`` below the threshold, go through :class:`cmf_core.s3_http.SignedHTTP`:
  a ``get_object`` call spends about 1.5 ms of CPU per request on botocore's
  event hooks, header parsing and signing.  A PUT goes to a URL the client
  presigns (0.16 ms); a GET is signed in its headers by botocore's own SigV4
  signer with the session's credentials (0.07 ms), at the URL and for the
  region that the client presigned once (:class:`cmf_core.s3_http.Addressing`).

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

Why Content-MD5 on parts, not ``ChecksumAlgorithm``: the keys name md5s, S3 knows
no md5 checksum, and a CRC is one more trailer those servers refuse.  Why not
compare the completed upload's ETag with the md5 of its parts: with SSE-KMS or
SSE-C a bucket's ETags are no md5s, and every big upload to it would be refused.
Why ``upload_fileobj`` of a stream, not ``upload_file``: ``upload_file`` reads
the parts in parallel, out of order, where no md5 of the whole file can be
computed; from a stream s3transfer reads one part after the other into memory
(at most :data:`UPLOAD_THREADS` of them), and the Content-MD5 of a part is
computed there, in the thread that uploads it.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Optional, Sequence, Set, Union

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError, HTTPClientError,
                                 IncompleteReadError, NoCredentialsError, PartialCredentialsError, SSLError)

from cmf_core import s3, s3_http
from cmf_core.errors import BackendError, CmfError, TransientError
from cmf_core.hookspecs import ObjectStore, Remote

MIB = 1 << 20
MULTIPART_THRESHOLD = 64 * MIB  # files from this size on are uploaded in parallel parts
MIN_PART = 8 * MIB
TARGET_PARTS = 9_000            # aim below S3's limit of 10,000 parts per upload
UPLOAD_THREADS = 10             # parts of one object uploaded at once, as s3transfer's default
POOL = 128                      # connections of the client and of the HTTP pool: jobs x parts, opened lazily
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


_data_loader = None  # botocore's parsed JSON (S3's model, the endpoints): read once per process


def _botocore_session():
    """A new botocore session that shares the process's data loader: a fresh one parses megabytes of
    JSON on every open (0.1-0.2 s here), which a program that pushes after each stage pays each time."""
    import botocore.session

    global _data_loader
    session = botocore.session.get_session()
    if _data_loader is None:
        _data_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _data_loader)
    return session


def part_size(size: int) -> int:
    """The multipart part size for a file of ``size`` bytes: at least 8 MiB, whole MiB, <= 9,000 parts."""
    return max(MIN_PART, -(-size // (TARGET_PARTS * MIB)) * MIB)


def _part_md5(params: Dict[str, Any], **_: object) -> None:
    """Give an UploadPart request the Content-MD5 of its body (a part s3transfer holds in memory), so that
    the server refuses the part if its bytes arrive garbled; registered on the client's UploadPart calls."""
    body = params["Body"]
    params["ContentMD5"] = base64.b64encode(hashlib.md5(body.read()).digest()).decode()
    body.seek(0)


class AmazonS3Store(ObjectStore):
    """Objects at ``prefix/key`` in one bucket, through a thread-safe boto3 client."""

    def __init__(self, client, where: s3.Location, verify: Union[bool, str] = True, credentials=None) -> None:
        self.client = client
        self.where = where
        self.credentials = credentials  # botocore's (refreshable) credentials of the session
        client.meta.events.register("before-parameter-build.s3.UploadPart", _part_md5)
        self.http = s3_http.SignedHTTP(where, self._presign, self._sign_headers, verify, POOL,
                                       CLIENT_CONFIG.connect_timeout, CLIENT_CONFIG.read_timeout)

    @classmethod
    def open(cls, remote: Remote) -> "AmazonS3Store":
        """Resolve credentials (stored keys, else the AWS chain), make the client, check the bucket once."""
        options, secrets = remote.options, remote.secrets
        endpoint = options.get("endpointurl") or None
        placeholder = s3.Location.parse(remote.url, endpoint or "AWS S3")
        try:
            session = boto3.session.Session(botocore_session=_botocore_session(),
                                            aws_access_key_id=secrets.get("access_key_id") or None,
                                            aws_secret_access_key=secrets.get("secret_access_key") or None,
                                            aws_session_token=secrets.get("session_token") or None,
                                            region_name=options.get("region") or None)
            credentials = session.get_credentials()
            if credentials is None:
                raise BackendError(NO_CREDENTIALS.format(where=placeholder))
            verify = s3.tls_verify(options)
            client = session.client("s3", endpoint_url=endpoint, verify=verify, config=CLIENT_CONFIG)
        except BotoCoreError as exc:  # an unknown AWS_PROFILE, a malformed config file, a bad region
            raise BackendError(f"cannot set up the S3 client for {placeholder}: {exc}") from None
        where = s3.Location(placeholder.bucket, placeholder.prefix, client.meta.endpoint_url)
        store = cls(client, where, verify, credentials)
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
        return s3.existing(keys, self.http.names)

    def put(self, src: Path, key: str) -> None:
        size = src.stat().st_size
        if size < MULTIPART_THRESHOLD:  # one PUT: upload_file would set up a transfer manager per file
            self.http.put(src, key, size)
            return
        part = part_size(size)  # also the threshold: s3transfer reads that much of a stream to decide
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=UPLOAD_THREADS,
                                preferred_transfer_client="classic")
        config.max_in_memory_upload_chunks = UPLOAD_THREADS  # parts in memory; not an argument in boto3
        with s3.CheckedSource(src, key, size) as body, self._translated(key):
            self.client.upload_fileobj(body, self.where.bucket, self.where.name(key), Config=config)

    def get(self, key: str, dst: BinaryIO) -> None:
        self.http.get(key, dst)

    def close(self) -> None:
        self.client.close()
        self.http.close()

    # -- helpers -----------------------------------------------------------------------------------

    def _presign(self, method: str, name: str) -> str:
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        with self._translated():
            return self.client.generate_presigned_url(operation, Params={"Bucket": self.where.bucket, "Key": name},
                                                      ExpiresIn=s3_http.PRESIGNED_SECONDS)

    def _sign_headers(self, method: str, url: str, region: str, headers: Dict[str, str]) -> None:
        request = AWSRequest(method=method, url=url, headers=headers)
        with self._translated():
            S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", region).add_auth(request)
        headers.update(request.headers.items())

    @contextlib.contextmanager
    def _translated(self, key: Optional[str] = None, fetching: bool = False) -> Iterator[None]:
        """Turn boto3/botocore exceptions into cmf errors; anything else (the writer's) passes."""
        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, key, fetching) from None

    def _error(self, exc: BaseException, key: Optional[str] = None, fetching: bool = False) -> CmfError:
        """The cmf error for an SDK exception; with ``fetching`` a 404 means the key is missing."""
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
