"""What both S3 backends (minioS3, amazonS3) share, whatever SDK signs their requests.

* :class:`Location` -- a bucket, a prefix and an endpoint: object names from
  keys and back, and how messages name the remote;
* :func:`error` / :func:`unreachable` -- an S3 error code or HTTP status, or a
  failed connection, as the cmf error the engine understands (retry or not);
* :data:`TLS_OPTIONS` / :func:`tls_setting` / :func:`tls_verify` -- ``--ca-bundle``
  and ``--insecure``, stored as DVC's ``ssl_verify``;
* :func:`env_credentials` -- stored keys, else the first pair set in the environment;
* :func:`existing` -- which keys a bucket holds, by listing prefixes, never one HEAD per key;
* :class:`CheckedSource` -- the file of a multipart upload, whose md5 is checked against its key as the
  SDK reads it;
* :func:`http_pool` / :func:`release` -- the urllib3 connection pool that :mod:`cmf_core.s3_http`
  sends both backends' presigned requests through.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import urlsplit

from cmf_core import checks, layout
from cmf_core.errors import BackendError, ConfigError, CorruptSource, ObjectNotFound, TransientError
from cmf_core.hookspecs import InitOption

if TYPE_CHECKING:
    import urllib3

__all__ = ["Location", "error", "parse_error_body", "unreachable", "http_failure", "TLS_OPTIONS", "tls_setting",
           "tls_verify", "http_pool", "release", "ENV_CREDENTIALS", "env_credentials", "existing", "CheckedSource"]

# -- where objects live ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """``s3://bucket/prefix`` on ``endpoint``; keys map to ``prefix/key``."""

    bucket: str
    prefix: str
    endpoint: str

    @classmethod
    def parse(cls, url: str, endpoint: str) -> "Location":
        bucket, prefix = checks.s3_url(url)
        return cls(bucket, prefix, endpoint)

    def name(self, key: str) -> str:
        """The object name of ``key`` in the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def key(self, name: str) -> Optional[str]:
        """The key of an object name, or ``None`` if the name is not under the prefix."""
        if not self.prefix:
            return name
        head = self.prefix + "/"
        return name[len(head):] if name.startswith(head) else None

    def url(self, key: str = "") -> str:
        path = "/".join(part for part in (self.bucket, self.prefix, key) if part)
        return f"s3://{path}"

    def __str__(self) -> str:
        return f"{self.url()} on {self.endpoint}"


# -- errors ---------------------------------------------------------------------------------------

#: Error codes that mean the server refused who we are (or what we may do).
CREDENTIAL_CODES = frozenset({
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken",
    "InvalidClientTokenId", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
})
#: Error codes worth retrying whatever their HTTP status.  A part of a multipart upload refused as
#: ``BadDigest`` was garbled on the way (its Content-MD5 is computed from the very bytes sent), and
#: some servers (rclone) then drop the whole upload, so that the other parts get ``NoSuchUpload``:
#: a new upload may well succeed.
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted", "BadDigest", "NoSuchUpload",
})
MISSING_KEY_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def error(code: Optional[str], status: Optional[int], where: Location, key: Optional[str] = None,
          detail: str = "", fetching: bool = False) -> BackendError:
    """The cmf error for an S3 error response (``code`` as in the XML body, ``status`` the HTTP status).

    ``key`` names the object concerned: a ``NoSuchKey`` is :class:`ObjectNotFound`
    for it, and so is a bare 404 (no error code) when ``fetching`` (a download).
    """
    what = f"{code or 'HTTP ' + str(status)}" + (f": {detail}" if detail and detail != code else "")
    if code == "NoSuchBucket":
        return BackendError(f"bucket '{where.bucket}' does not exist on {where.endpoint}")
    if key is not None and (code in MISSING_KEY_CODES or (fetching and code is None and status == 404)):
        return ObjectNotFound(key, str(where))
    if code in CREDENTIAL_CODES or status in (401, 403):
        return BackendError(f"{where.endpoint} refused the credentials for bucket '{where.bucket}' ({what}); "
                            "check the access key and secret key")
    if code in TRANSIENT_CODES or status in (408, 429) or (status or 0) >= 500:
        return TransientError(f"{where.endpoint} failed for {where.url(key or '')} ({what}); worth retrying")
    return BackendError(f"{where.endpoint} refused the request for {where.url(key or '')} ({what})")


def parse_error_body(body: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``Code`` and ``Message`` of an S3 XML error body (``(None, None)`` when it is not one)."""
    if not body:
        return None, None
    found = [re.search(rf"<{tag}>([^<]*)</{tag}>", body) for tag in ("Code", "Message")]
    return tuple(m.group(1).strip() if m else None for m in found)  # type: ignore[return-value]


def unreachable(where: Location, exc: BaseException, tls: bool = False) -> BackendError:
    """A failed connection: TLS trouble is permanent, anything else (refused, reset, timeout) transient."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if tls:
        return BackendError(f"TLS to {where.endpoint} failed: {reason} "
                            "(give the server's CA with --ca-bundle, or --insecure to skip verification)")
    return TransientError(f"cannot reach {where.endpoint} (bucket '{where.bucket}'): {reason}")


def http_failure(where: Location, exc: BaseException) -> BackendError:
    """:func:`unreachable` for a urllib3 error of the :func:`http_pool`: judged by the error of its last
    try (a ``MaxRetryError`` names the URL, and a presigned URL holds a signature: never shown)."""
    import urllib3

    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return unreachable(where, exc, tls=isinstance(exc, urllib3.exceptions.SSLError))


# -- TLS --------------------------------------------------------------------------------------------

TLS_OPTIONS: Tuple[InitOption, ...] = (
    InitOption("ca_bundle", "CA certificates (PEM) to verify the endpoint with, instead of the system's",
               metavar="FILE"),
    InitOption("insecure", "do not verify the endpoint's TLS certificate (only for testing)", is_flag=True),
)
_FALSE = {"false", "0", "no", "off"}
_TRUE = {"true", "1", "yes", "on"}


def tls_setting(options: Mapping[str, object]) -> Dict[str, str]:
    """The DVC option ``ssl_verify`` for ``--ca-bundle``/``--insecure`` (empty when neither is given)."""
    bundle, insecure = options.get("ca_bundle"), bool(options.get("insecure"))
    if bundle and insecure:
        raise ConfigError("--ca-bundle and --insecure contradict each other; give one")
    if bundle:
        return {"ssl_verify": str(checks.readable_file(str(bundle), "ca_bundle"))}
    return {"ssl_verify": "false"} if insecure else {}


def tls_verify(options: Mapping[str, str]) -> Union[bool, str]:
    """The stored ``ssl_verify``: ``True`` (system CAs), ``False`` (no check) or a CA bundle file."""
    value = str(options.get("ssl_verify", "true")).strip()
    if value.lower() in _TRUE or not value:
        return True
    if value.lower() in _FALSE:
        return False
    if not os.access(value, os.R_OK) or not os.path.isfile(value):
        raise ConfigError(f"the CA bundle {value} (ssl_verify) is not a readable file; re-run cmf init")
    return value


def http_pool(endpoint: str, verify: Union[bool, str], size: int, connect_timeout: float,
              read_timeout: float) -> "urllib3.PoolManager":
    """A thread-safe urllib3 pool for ``endpoint``: TLS as :func:`tls_verify` says, through the proxy
    that ``HTTP(S)_PROXY`` names unless ``NO_PROXY`` exempts the host (as boto3 and DVC do).

    A request whose connection fails or breaks off, or that is answered 500/502/503/504, is sent once
    more (a kept-alive connection the server has closed meanwhile, a busy server; S3 GETs and PUTs may
    be repeated, and urllib3 rewinds a file body), as botocore does; what fails again goes to the
    engine, which retries with backoff what :func:`error` calls transient."""
    import urllib3

    keep_debug_off("urllib3.connectionpool")  # its request lines show a presigned URL's access key id
    once = urllib3.Retry(total=1, connect=1, read=1, status=1, other=0, redirect=False,
                         status_forcelist=(500, 502, 503, 504), raise_on_status=False)
    settings = dict(maxsize=size, timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                    retries=once, cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                    ca_certs=verify if isinstance(verify, str) else None)  # None: the system's CAs
    url = urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        return urllib3.ProxyManager(proxy, **settings)
    return urllib3.PoolManager(**settings)


def keep_debug_off(*loggers: str) -> None:
    """Loggers whose DEBUG records would show credentials stay at INFO, unless a level was set for one
    by name: a program that turns on DEBUG for everything does not get the keys in its logs."""
    for name in loggers:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)


DRAIN_LIMIT = 64 << 10  # unread bytes of an answer read off so that its connection serves the next request


def release(response: "urllib3.BaseHTTPResponse") -> None:
    """Done with ``response``: its connection goes back to the pool, once what is left of the body (none
    after a PUT, or a download read to its end) is read off; with more than :data:`DRAIN_LIMIT` left (a
    download cut short) the connection is closed instead, so no unread bytes reach the next request.

    Closing every connection made each PUT of a push open a new one: 10,000 uploads left 10,000
    sockets in TIME-WAIT, and connecting cost a sixth of the push's CPU."""
    left = getattr(response, "length_remaining", None)
    if left is not None and left <= DRAIN_LIMIT:
        response.drain_conn()  # a failure here closes the connection: the pool then opens another
    else:
        response.close()
    response.release_conn()


# -- credentials ----------------------------------------------------------------------------------

ENV_CREDENTIALS: Tuple[Tuple[str, str], ...] = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
)


def env_credentials(secrets: Mapping[str, str], repo_type: str,
                    env: Sequence[Tuple[str, str]] = ENV_CREDENTIALS) -> Tuple[str, str]:
    """The stored access key and secret, else the first pair of variables set in the environment."""
    key, secret = secrets.get("access_key_id"), secrets.get("secret_access_key")
    if key and secret:
        return key, secret
    for key_var, secret_var in env:
        if os.environ.get(key_var) and os.environ.get(secret_var):
            return os.environ[key_var], os.environ[secret_var]
    names = " or ".join(f"{k}/{s}" for k, s in env)
    raise ConfigError(f"no S3 credentials: re-run 'cmf init {repo_type}' with --access-key-id and --secret-key, "
                      f"or set {names}")


# -- which keys exist -----------------------------------------------------------------------------

FEW_FOLDERS = 8        # up to this many folders: list each, no estimate needed
PAGE = 1000            # names per page of a listing (ListObjectsV2's maximum)
SPREAD = 256           # md5 keys fall evenly into the 256 folders files/md5/00 .. ff
LIST_THREADS = 8


def existing(keys: Sequence[str], list_names: Callable[[str], Iterable[str]],
             threads: int = LIST_THREADS) -> Set[str]:
    """The subset of ``keys`` found by listing; ``list_names(prefix)`` yields every key under ``prefix``.

    Keys in few folders: each folder is listed.  Keys in many folders: one
    folder is listed first to estimate the size of the remote, then either the
    folders' common parent is listed once (a small remote: fewer pages) or the
    folders one by one, in parallel (a big remote).
    """
    wanted = set(keys)
    folders = sorted({k.rpartition("/")[0] for k in wanted})
    if not folders:
        return set()

    def scan(folder: str) -> Tuple[Set[str], int]:
        names = list_names(folder + "/" if folder else "")
        seen, count = set(), 0
        for name in names:
            count += 1
            if name in wanted:
                seen.add(name)
        return seen, count

    found, first_count = scan(folders[0])
    rest = folders[1:]
    whole_listing_pages = first_count * SPREAD / PAGE  # vs. at least one request per remaining folder
    if len(folders) > FEW_FOLDERS and whole_listing_pages < len(rest):
        common = os.path.commonpath(folders) if all(folders) else ""
        return scan(common)[0]
    with ThreadPoolExecutor(max(1, min(threads, len(rest)))) as pool:
        for seen, _ in pool.map(scan, rest):
            found |= seen
    return found


# -- multipart uploads ------------------------------------------------------------------------------


class CheckedSource:
    """The file ``src`` that a multipart upload to ``key`` sends: a stream that both SDKs read once, in
    order, a part at a time (``put_object``, ``upload_fileobj``), hashing what it hands them.

    The read that hands over the file's last byte first compares the md5 of all the bytes read with the
    one ``key`` names (:func:`cmf_core.layout.content_md5`) and, when they differ, raises
    :class:`CorruptSource` instead: the SDK then aborts the upload before completing it, so the wrong
    bytes never become an object.  So is a file that ends early; reads stop at ``size`` (the size the
    file had when the upload started), so bytes appended meanwhile are not sent either.  This checks
    what was read, whether the file was rotten from the start or changed during the upload, at the
    cost of one md5 of the bytes, and no second read of the file.
    """

    def __init__(self, src: Path, key: str, size: int) -> None:
        self.src = src
        self.md5 = layout.content_md5(key)
        self._left = size
        self._digest = hashlib.md5()
        self._file = open(src, "rb")

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._file.read(wanted)
        self._digest.update(data)
        self._left -= len(data)
        at_end = wanted > 0 and (not data or not self._left)
        if at_end and self.md5 and self._digest.hexdigest() != self.md5:
            raise CorruptSource(self.src, self.md5)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CheckedSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
