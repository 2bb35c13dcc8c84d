"""The minioS3 object store: one ``Minio`` client, and its urllib3 pool, shared by every transfer thread.

GETs, and PUTs of files up to :data:`PART_SIZE`, go through
:class:`cmf_core.s3_http.SignedHTTP` as for amazonS3: a big object comes in
parallel ranges (``get_object`` is one stream, and a 200 MB pull took 1.7x
``fget_object``'s time), a small one costs less CPU than a ``get_object`` call.
A PUT goes to a URL the client presigns; a GET is signed in its headers by the
SDK's own SigV4 signer (``minio.signer``), at the URL and for the region that
the client presigned once.  Bigger files are multipart uploads by the SDK,
:data:`PARALLEL_PARTS` parts at a time, verified as well as a single PUT is:

* the SDK reads the file through :class:`cmf_core.s3.CheckedSource`, which checks the md5 of the bytes
  read against the key before the last part leaves, so a corrupt file is never stored;
* every part carries a Content-MD5 of its bytes (:class:`PartCheckedMinio`), so the server refuses a
  part garbled on the way.  The SDK sends one itself only over https; over http it signs each part's
  sha256 instead, which S3 and MinIO check, but other servers do not (rclone).

Why not compare the ETag of the completed upload with the md5 of its parts: with SSE-KMS or SSE-C
encryption a server's ETags are no md5s, and every big upload to such a bucket would be refused."""
from __future__ import annotations

import contextlib
import hashlib
import math
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, Optional, Sequence, Set, Union
from urllib.parse import urlsplit

from minio import Minio
from minio.credentials import Credentials
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import md5sum_hash
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow
from urllib3.exceptions import HTTPError

from cmf_core import s3, s3_http
from cmf_core.hookspecs import ObjectStore

POOL_SIZE = 128          # connections kept per host: -j 64 with 2 parts each; opened only when needed
CONNECT_TIMEOUT = 10.0   # seconds
READ_TIMEOUT = 120.0     # seconds without a byte before a read fails (and the engine retries)
PART_SIZE = 16 << 20     # multipart upload part; files up to this size go in one PUT
PARALLEL_PARTS = 2       # parts of one file uploaded at once (the engine already runs -j files at once)
MAX_PARTS = 10_000       # S3's limit per multipart upload
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the payload hash of a GET


def part_size(size: int) -> int:
    """``PART_SIZE``, or larger (whole MiB) when a file would otherwise need more than ``MAX_PARTS`` parts."""
    mib = 1 << 20
    return max(PART_SIZE, math.ceil(size / MAX_PARTS / mib) * mib)


class PartCheckedMinio(Minio):
    """The minio client, with a Content-MD5 of its bytes on every part of a multipart upload.

    The SDK has no option for it, so this overrides its (private) ``_upload_part``, the one method that
    uploads a part; the SDK keeps a Content-MD5 that is already there (``Minio._build_headers``), and the
    md5 is computed in its upload threads, beside the other parts' transfers.  tests/test_s3_multipart.py
    fails if an SDK release stops calling it."""

    def _upload_part(self, bucket_name: str, object_name: str, data: bytes, headers: Optional[Dict[str, str]],
                     upload_id: str, part_number: int) -> str:
        headers = {**(headers or {}), "Content-MD5": md5sum_hash(data)}
        return super()._upload_part(bucket_name, object_name, data, headers, upload_id, part_number)


class MinioStore(ObjectStore):
    """Objects at ``prefix/<key>`` in a bucket: requests signed by the minio SDK, multipart uploads made by it.

    The pool (:func:`cmf_core.s3.http_pool`) sends a request once more when its connection breaks;
    the engine retries what :mod:`cmf_core.s3` calls transient.
    """

    def __init__(self, where: s3.Location, access_key: str, secret_key: str, *,
                 session_token: Optional[str] = None, verify: Union[bool, str] = True,
                 region: Optional[str] = None) -> None:
        self.where = where
        endpoint = urlsplit(where.endpoint)
        self.credentials = Credentials(access_key, secret_key, session_token)
        self.http = s3_http.SignedHTTP(where, self._presign, self._sign_headers, verify, POOL_SIZE, CONNECT_TIMEOUT,
                                       READ_TIMEOUT)
        self.client = PartCheckedMinio(endpoint.netloc, access_key=access_key, secret_key=secret_key,
                                       session_token=session_token, secure=endpoint.scheme == "https",
                                       region=region, http_client=self.http.pool)

    @contextlib.contextmanager
    def _errors(self, key: Optional[str] = None, fetching: bool = False) -> Iterator[None]:
        """Turn SDK and connection errors into cmf errors that name the bucket and endpoint."""
        try:
            yield
        except S3Error as exc:
            status = getattr(exc.response, "status", None)
            raise s3.error(exc.code, status, self.where, key, exc.message or "", fetching) from None
        except ServerError as exc:
            raise s3.error(None, exc.status_code, self.where, key, "", fetching) from None
        except InvalidResponseError as exc:
            # the SDK parses only "application/xml" errors; rclone and others answer "text/xml"
            code, message = s3.parse_error_body(getattr(exc, "_body", None))
            raise s3.error(code, getattr(exc, "_code", None), self.where, key, message or "", fetching) from None
        except HTTPError as exc:
            raise s3.http_failure(self.where, exc) from None

    def exists(self, keys: Sequence[str]) -> Set[str]:
        return s3.existing(keys, self.http.names)

    def put(self, src: Path, key: str) -> None:
        size = src.stat().st_size
        if size <= PART_SIZE:
            self.http.put(src, key, size)
            return
        with s3.CheckedSource(src, key, size) as body, self._errors(key):
            self.client.put_object(self.where.bucket, self.where.name(key), body, size, part_size=part_size(size),
                                   num_parallel_uploads=PARALLEL_PARTS)

    def get(self, key: str, dst: BinaryIO) -> None:
        self.http.get(key, dst)

    def close(self) -> None:
        self.http.close()

    def _presign(self, method: str, name: str) -> str:
        with self._errors():
            return self.client.get_presigned_url(method, self.where.bucket, name,
                                                 expires=timedelta(seconds=s3_http.PRESIGNED_SECONDS))

    def _sign_headers(self, method: str, url: str, region: str, headers: Dict[str, str]) -> None:
        parts, date = urlsplit(url), utcnow()
        headers.update({"Host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": to_amz_date(date)})
        if self.credentials.session_token:
            headers["X-Amz-Security-Token"] = self.credentials.session_token
        sign_v4_s3(method=method, url=parts, region=region, headers=headers, credentials=self.credentials,
                   content_sha256=EMPTY_SHA256, date=date)
