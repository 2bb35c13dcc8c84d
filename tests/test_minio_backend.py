"""The minioS3 backend against a real S3 server: ``rclone serve s3`` on loopback, which checks SigV4 signatures.

The session's server (``s3_server``) serves a fresh bucket per test; tests that stop a server start their own.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import cmf_core.transfer
from cmf_core import api, config, fanout, layout, plugins, s3, s3_http
from cmf_core.errors import BackendError, ConfigError, ObjectNotFound, TransientError
from cmf_core.testing import PIPELINE, BackendConformance, Dataset, WrappedStore
from cmf_core.testing.conformance import Sink, random_bytes
from cmf_core.testing.servers import S3Server
from tests.conftest import clone_workspace, one_error_line
from tests.conftest import logged_sample as logged

import cmf_backends.minio_s3.store as minio_store

DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
MIB = 1 << 20
KEYS = {"access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY}


def options(server: S3Server, bucket: str, prefix: str = "some/prefix", **extra: object) -> Dict[str, object]:
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return {"url": url, "endpoint_url": server.endpoint, **KEYS, **extra}


def init(ws: Path, tmp_path: Path, opts: Dict[str, object]) -> None:
    api.init("minioS3", opts, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def on_disk(server: S3Server, bucket: str) -> List[Path]:
    """Objects of ``bucket`` as rclone stores them: files under the bucket's folder."""
    return [p for p in (server.root / bucket).rglob("*") if p.is_file()]


# -- the conformance kit ------------------------------------------------------------------------------


class MinioKit(BackendConformance):
    def plant(self, store, key, data, scratch):
        """Around the Content-MD5 check of cmf's puts: the SDK's own put sends none."""
        store.client.put_object(store.where.bucket, store.where.name(key), io.BytesIO(data), len(data))


class TestMinioConformance(MinioKit):
    large_file_mb = 40  # three 16 MiB parts: a multipart upload

    @pytest.fixture
    def backend(self, s3_server, s3_bucket):
        return "minioS3", options(s3_server, s3_bucket)


class TestMinioConformanceWithoutPrefix(MinioKit):
    large_file_mb = 8

    @pytest.fixture
    def backend(self, s3_server, s3_bucket):
        return "minioS3", options(s3_server, s3_bucket, prefix="")


# -- where objects go, and DVC reading and writing the same bucket ----------------------------------


def test_push_keeps_every_object_under_the_prefix(ws, tmp_path, s3_server, s3_bucket, cmf):
    init(ws, tmp_path, options(s3_server, s3_bucket))
    ds = logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code == 0, done.err
    base = s3_server.root / s3_bucket / "some" / "prefix" / "files" / "md5"
    stored = on_disk(s3_server, s3_bucket)
    assert sorted(p.relative_to(s3_server.root / s3_bucket).as_posix() for p in stored) == \
        sorted(f"some/prefix/{key}" for key in ds.all_keys)
    assert all(base in p.parents for p in stored)


def test_many_objects_are_shared_by_processes_each_with_a_store_of_its_own(ws, tmp_path, s3_server, s3_bucket,
                                                                           monkeypatch):
    monkeypatch.setattr(fanout, "MIN_OBJECTS", 20)
    monkeypatch.setattr(fanout, "cpus", lambda: 1)  # two processes per CPU
    init(ws, tmp_path, options(s3_server, s3_bucket))
    ds = logged(ws, count=40)
    pushed = api.artifact_push(PIPELINE)
    assert pushed.ok and pushed.processes == 2, pushed.failed
    ds.forget()
    pulled = api.artifact_pull(PIPELINE)
    assert pulled.ok and pulled.processes == 2 and pulled.moved + pulled.skipped == ds.pull_objects, pulled.failed
    ds.assert_in_place()


def test_dvc_pull_gets_what_cmf_pushed(ws, tmp_path, s3_server, s3_bucket, cmf):
    init(ws, tmp_path, options(s3_server, s3_bucket))
    ds = logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    clone = clone_workspace(ws, tmp_path / "clone")
    dvc("pull", cwd=clone)
    for rel, data in ds.files.items():
        assert (clone / rel).read_bytes() == data, rel


def test_cmf_pull_gets_what_dvc_pushed(ws, tmp_path, s3_server, s3_bucket, cmf):
    init(ws, tmp_path, options(s3_server, s3_bucket))
    ds = logged(ws)
    dvc("push", cwd=ws)
    assert {p.name for p in on_disk(s3_server, s3_bucket)} >= {k.rsplit("/", 1)[1] for k in ds.data_keys}
    ds.forget()
    done = cmf("artifact", "pull", "-p", PIPELINE)
    assert done.code == 0, done.err
    ds.assert_in_place()


# -- failures: one clear line and a non-zero exit ---------------------------------------------------


def test_wrong_secret_is_refused_credentials(ws, tmp_path, s3_server, s3_bucket, cmf):
    init(ws, tmp_path, options(s3_server, s3_bucket, secret_key="not-the-secret"))
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert s3_server.endpoint in line and "refused the credentials" in line and s3_bucket in line


def test_wrong_secret_fails_a_pull_too(ws, tmp_path, s3_server, s3_bucket, cmf):
    init(ws, tmp_path, options(s3_server, s3_bucket))
    ds = logged(ws, count=1)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    init(ws, tmp_path, options(s3_server, s3_bucket, secret_key="not-the-secret"))
    ds.forget()
    done = cmf("artifact", "pull", "-p", PIPELINE)
    assert done.code != 0
    assert "refused the credentials" in done.err and s3_server.endpoint in done.err


def test_missing_bucket_is_named(ws, tmp_path, s3_server, cmf):
    init(ws, tmp_path, options(s3_server, "no-such-bucket-here"))
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert f"bucket 'no-such-bucket-here' does not exist on {s3_server.endpoint}" in line
    assert "reach" not in line


def test_stopped_server_is_unreachable_after_retries(ws, tmp_path, cmf, monkeypatch):
    monkeypatch.setattr(cmf_core.transfer, "BACKOFF", 0.01)
    server = S3Server(tmp_path / "down")
    server.start()
    try:
        init(ws, tmp_path, options(server, server.bucket("soon-gone")))
        logged(ws)
    finally:
        server.stop()
    assert not server.running
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert f"cannot reach {server.endpoint}" in line and "gave up after" in line


# -- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", s3.ENV_CREDENTIALS, ids=lambda pair: pair[0].split("_")[0])
def test_credentials_from_the_environment(ws, tmp_path, s3_server, s3_bucket, cmf, monkeypatch, names):
    for var in (v for pair in s3.ENV_CREDENTIALS for v in pair):
        monkeypatch.delenv(var, raising=False)
    opts = options(s3_server, s3_bucket)
    del opts["access_key_id"], opts["secret_key"]
    init(ws, tmp_path, opts)
    assert not (ws / ".dvc" / "config.local").exists() or "secret" not in (ws / ".dvc" / "config.local").read_text()
    ds = logged(ws, count=1)
    monkeypatch.setenv(names[0], S3Server.ACCESS_KEY)
    monkeypatch.setenv(names[1], S3Server.SECRET_KEY)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    ds.forget()
    assert cmf("artifact", "pull", "-p", PIPELINE).code == 0
    ds.assert_in_place()


def test_stored_credentials_win_over_the_environment(ws, tmp_path, s3_server, s3_bucket, cmf, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "their-secret")
    init(ws, tmp_path, options(s3_server, s3_bucket))
    logged(ws, count=1)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0


def test_missing_credentials_are_a_clear_error_at_open(ws, tmp_path, s3_server, s3_bucket, cmf, monkeypatch):
    for var in (v for pair in s3.ENV_CREDENTIALS for v in pair):
        monkeypatch.delenv(var, raising=False)
    init(ws, tmp_path, {"url": f"s3://{s3_bucket}", "endpoint_url": s3_server.endpoint})
    logged(ws, count=1)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code == ConfigError.exit_code
    line = one_error_line(done.err)
    assert "no S3 credentials" in line and "AWS_ACCESS_KEY_ID" in line and "MINIO_ACCESS_KEY" in line


# -- cmf init minioS3: options checked before anything is written (no network) ----------------------


@pytest.mark.parametrize("extra, message", [
    ({"endpoint_url": "https://minio.example.org:9000/some/path"}, "scheme://host[:port] only"),
    ({"endpoint_url": "ftp://minio.example.org"}, "--endpoint-url must look like"),
    ({"url": "s3://Bad_Bucket"}, "not a valid bucket name"),
    ({"endpoint_url": "https://minio.example.org", "ca_bundle": "/no/such/ca.pem"},
     "--ca-bundle '/no/such/ca.pem' is not a file"),
    ({"endpoint_url": "https://minio.example.org", "ca_bundle": __file__, "insecure": True}, "contradict"),
    ({"endpoint_url": "http://minio.example.org", "insecure": True}, "https:// endpoint only"),
    ({"secret_key": None}, "--access-key-id, --secret-key go together"),
])
def test_init_rejects_bad_options(ws, tmp_path, extra, message):
    opts = {"url": "s3://bucket/prefix", "endpoint_url": "https://minio.example.org", **KEYS, **extra}
    with pytest.raises(ConfigError, match=re.escape(message)):
        init(ws, tmp_path, opts)
    assert not (ws / ".cmfconfig").exists()


@pytest.mark.parametrize("extra, stored", [({}, None), ({"insecure": True}, "false"), ({"ca_bundle": "CA"}, "CA")])
def test_init_stores_the_tls_choice_as_dvc_ssl_verify(ws, tmp_path, extra, stored):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    extra = {k: str(bundle) if v == "CA" else v for k, v in extra.items()}
    init(ws, tmp_path, {"url": "s3://bucket/prefix", "endpoint_url": "https://minio.example.org:9000", **extra})
    tracked = config.read_dvc_levels(ws)["repo"]["remote"]["minio"]
    assert tracked.get("ssl_verify") == (str(bundle) if stored == "CA" else stored)
    assert tracked["endpointurl"] == "https://minio.example.org:9000"


def test_cli_init_with_insecure_and_a_vanished_ca_bundle(ws, tmp_path, cmf):
    done = cmf("init", "minioS3", "--url", "s3://bucket", "--endpoint-url", "https://minio.example.org",
               "--insecure", "--git-remote-url", str(tmp_path / "origin.git"))
    assert done.code == 0, done.err
    assert config.read_dvc_levels(ws)["repo"]["remote"]["minio"]["ssl_verify"] == "false"
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    init(ws, tmp_path, {"url": "s3://bucket", "endpoint_url": "https://minio.example.org", **KEYS,
                        "ca_bundle": str(bundle)})
    logged(ws, count=1)
    bundle.unlink()
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code == ConfigError.exit_code
    assert f"the CA bundle {bundle} (ssl_verify) is not a readable file" in one_error_line(done.err)


# -- TLS against a real https server ----------------------------------------------------------------


def test_https_with_the_servers_ca_bundle(ws, tmp_path, tls_s3_server, tls_bucket):
    init(ws, tmp_path, options(tls_s3_server, tls_bucket, ca_bundle=str(tls_s3_server.pem["cert"])))
    ds = logged(ws, count=2)
    assert api.artifact_push(PIPELINE).ok
    ds.forget()
    pulled = api.artifact_pull(PIPELINE)
    assert pulled.ok, pulled.failed
    ds.assert_in_place()


def test_dvc_uses_the_stored_ca_bundle(ws, tmp_path, tls_s3_server, tls_bucket):
    init(ws, tmp_path, options(tls_s3_server, tls_bucket, ca_bundle=str(tls_s3_server.pem["cert"])))
    ds = logged(ws, count=1)
    assert api.artifact_push(PIPELINE).ok
    ds.forget()
    # dvc pull, not push: botocore's default upload checksums (aws-chunked, no Content-Length) over https
    # are refused by rclone's S3 server (MissingContentLength); downloads show DVC verifies with the bundle
    dvc("pull", cwd=ws)
    ds.assert_in_place()


def test_https_unknown_ca_fails_at_once_and_says_what_to_do(ws, tmp_path, tls_s3_server, tls_bucket, cmf):
    init(ws, tmp_path, options(tls_s3_server, tls_bucket))  # verified against the system CAs
    logged(ws, count=1)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert f"TLS to {tls_s3_server.endpoint} failed" in line and "--ca-bundle" in line
    assert "gave up after" not in line, "a certificate that does not verify is not retried"


def test_https_insecure_when_asked(ws, tmp_path, tls_s3_server, tls_bucket):
    init(ws, tmp_path, options(tls_s3_server, tls_bucket, insecure=True))
    logged(ws, count=1)
    with pytest.warns(Warning, match="(?i)unverified|insecure"):
        assert api.artifact_push(PIPELINE).ok


# -- exists lists, never one request per key ---------------------------------------------------------


@pytest.fixture
def store(ws, tmp_path, s3_server, s3_bucket):
    init(ws, tmp_path, options(s3_server, s3_bucket))
    opened = plugins.open_store(config.load(ws).remote)
    yield opened
    opened.close()


def test_exists_lists_prefixes(store, tmp_path, monkeypatch):
    listed: List[str] = []
    real = store.http.names

    def counting(prefix):
        listed.append(prefix)
        return real(prefix)

    def no_sdk(*args, **kwargs):
        raise AssertionError("exists must list through the signed HTTP pool, never per key or through the SDK")

    monkeypatch.setattr(store.http, "names", counting)
    monkeypatch.setattr(store.client, "stat_object", no_sdk)
    monkeypatch.setattr(store.client, "list_objects", no_sdk)
    md5s = [hashlib.md5(str(i).encode()).hexdigest() for i in range(300)]
    for i, md5 in enumerate(md5s[:5]):
        src = tmp_path / str(i)
        src.write_bytes(str(i).encode())
        store.put(src, layout.key(md5))
    keys = [layout.key(m) for m in md5s]
    assert store.exists(keys) == set(keys[:5])
    assert listed == [min(keys).rsplit("/", 1)[0] + "/", "files/md5/"], \
        "a small remote and many folders: one folder to estimate, then the common parent once"
    listed.clear()
    assert store.exists(keys[:3]) == set(keys[:3])
    assert sorted(listed) == sorted({k.rsplit("/", 1)[0] + "/" for k in keys[:3]})


def test_a_listing_reads_every_page_and_unescapes_names(store, tmp_path, monkeypatch):
    """ListObjectsV2 pages are read without an XML parser: continuation tokens are followed, XML entities
    in names are undone, and objects outside the remote's prefix are not reported."""
    monkeypatch.setattr(s3, "PAGE", 2)
    names = sorted(f"files/md5/ab/{n}" for n in ("a&b", "c<d>e", "f'g\"h", "plain", "plain2"))
    src = tmp_path / "obj"
    src.write_bytes(b"x")
    for name in names:
        store.put(src, name)
    store.client.put_object(store.where.bucket, "some/prefixed-not/files/md5/ab/outside", io.BytesIO(b"x"), 1)
    requests: List[str] = []
    send = store.http.pool.request
    monkeypatch.setattr(store.http.pool, "request", lambda method, url, **kw: requests.append(url) or send(
        method, url, **kw))
    assert sorted(store.http.names("files/md5/ab/")) == names
    assert len(requests) == 3 and all("max-keys=2" in url for url in requests)
    assert sorted(store.http.names("")) == names


class CountingSlots(threading.BoundedSemaphore):
    """A semaphore that remembers how many slots were held at most (and refuses a release too many)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.held = self.peak = 0
        self.count_lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout=None) -> bool:
        got = super().acquire(blocking, timeout) if timeout is not None else super().acquire(blocking)
        if got:
            with self.count_lock:
                self.held += 1
                self.peak = max(self.peak, self.held)
        return got

    def release(self, n: int = 1) -> None:
        with self.count_lock:
            self.held -= 1
        super().release()


def test_downloads_at_once_share_one_range_budget(store, tmp_path, monkeypatch):
    """Big objects pulled at once hold at most RANGE_BUDGET ranges in memory between them (4 objects of
    1 GiB held 8 each: 499 MB), never wait for each other for good, and give every slot back, also
    when a download fails half-way."""
    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", MIB)
    slots = store.http.ranges = CountingSlots(3)
    objects = {}
    for i in range(4):
        data = random_bytes(6 * MIB + i, f"object {i}")
        src = tmp_path / f"o{i}"
        src.write_bytes(data)
        key = layout.key(hashlib.md5(data).hexdigest())
        store.put(src, key)
        objects[key] = hashlib.md5(data).hexdigest()
    sinks = {key: Sink(keep=False) for key in objects}
    threads = [threading.Thread(target=store.get, args=(key, sinks[key])) for key in objects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "downloads waited for each other's slots"
    assert {key: sink.md5 for key, sink in sinks.items()} == objects
    assert slots.peak == 3 and slots.held == 0

    class Breaking(Sink):
        def write(self, data) -> int:
            if self.size > 3 * MIB:
                raise OSError("disk full")
            return super().write(data)

    first = next(iter(objects))
    with pytest.raises(OSError, match="disk full"):
        store.get(first, Breaking(keep=False))
    assert slots.held == 0
    again = Sink(keep=False)
    store.get(first, again)  # the connections left with unread bytes were closed, not reused
    assert again.md5 == objects[first]


def test_connections_are_kept_alive_between_requests(store, tmp_path, monkeypatch):
    """Uploads, downloads and listings one after the other share one connection (closing it after each
    PUT left a socket in TIME-WAIT per object and cost a sixth of a push's CPU)."""
    import urllib3.connection

    connects = []
    connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect",
                        lambda self: connects.append(1) or connect(self))
    keys = []
    for i in range(10):
        src = tmp_path / f"small{i}"
        src.write_bytes(b"%d" % i)
        keys.append(layout.key(hashlib.md5(b"%d" % i).hexdigest()))
        store.put(src, keys[-1])
        sink = Sink()
        store.get(keys[-1], sink)
        assert sink.value == b"%d" % i
    assert store.exists(keys) == set(keys)
    pool = store.http.pool.connection_from_url(store.where.endpoint)
    assert len(connects) <= 1 and pool.num_requests >= 21, f"{len(connects)} connections for {pool.num_requests}"


def test_small_objects_are_one_signed_request_and_big_ones_come_in_ranges(store, tmp_path, monkeypatch):
    """A small file is one PUT to a presigned URL and one GET signed in its headers (no SDK call per
    object; a short URL); a big one goes up as the SDK's multipart upload and comes down in parallel
    ranged GETs, written in order."""
    monkeypatch.setattr(minio_store, "PART_SIZE", 5 * MIB)  # S3's smallest part
    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", MIB)
    presigned: List[str] = []
    send = store.http.pool.request  # the SDK's own calls go to urlopen, not here

    def recorded(method, url, headers=None, **kwargs):
        signed_in_headers = "?" not in url and headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
        assert signed_in_headers if method == "GET" else "X-Amz-Signature=" in url
        presigned.append(f"{method} {(headers or {}).get('Range')}")
        return send(method, url, headers=headers, **kwargs)

    monkeypatch.setattr(store.http.pool, "request", recorded)
    big = 12 * MIB + 5
    ranges = [f"GET bytes={i * MIB}-{min(i * MIB + MIB, big) - 1}" for i in range(13)]
    for data, puts, gets in ((b"small", ["PUT None"], ["GET bytes=0-1048575"]),
                             (random_bytes(big, "big"), [], ranges)):
        src = tmp_path / "obj"
        src.write_bytes(data)
        key = layout.key(hashlib.md5(data).hexdigest())
        store.put(src, key)
        assert presigned == puts
        presigned.clear()
        sink = Sink(keep=False)
        store.get(key, sink)
        assert (sink.size, sink.md5) == (len(data), hashlib.md5(data).hexdigest())
        assert sorted(presigned) == sorted(gets)
        presigned.clear()


def test_existing_lists_folders_of_a_big_remote_one_by_one():
    keys = [layout.key(hashlib.md5(str(i).encode()).hexdigest()) for i in range(400)]
    folders = sorted({k.rsplit("/", 1)[0] for k in keys})
    asked: List[str] = []
    lock = threading.Lock()

    def names(prefix: str) -> Iterator[str]:
        with lock:
            asked.append(prefix)
        yield from (f"{prefix}{i:030x}" for i in range(5000))  # 5000 objects per folder: ~1.3 M in all
        yield from (k for k in keys[::7] if k.startswith(prefix))

    assert s3.existing(keys, names) == set(keys[::7])
    assert sorted(asked) == [f + "/" for f in folders], "a big remote: each folder once, never the whole remote"


# -- errors as the engine needs them ------------------------------------------------------------------

WHERE = s3.Location("bkt", "pre/fix", "http://s3.example:9000")


@pytest.mark.parametrize("code, status, fetching, kind, words", [
    ("NoSuchBucket", 404, False, BackendError, "bucket 'bkt' does not exist on http://s3.example:9000"),
    ("NoSuchKey", 404, True, ObjectNotFound, "files/md5/aa/bb"),
    ("NoSuchKey", 404, False, ObjectNotFound, "files/md5/aa/bb"),
    (None, 404, True, ObjectNotFound, "files/md5/aa/bb"),
    (None, 404, False, BackendError, "HTTP 404"),
    ("SignatureDoesNotMatch", 403, False, BackendError, "refused the credentials"),
    ("InvalidAccessKeyId", 403, False, BackendError, "refused the credentials"),
    ("AccessDenied", 403, True, BackendError, "refused the credentials"),
    ("SlowDown", 503, False, TransientError, "SlowDown"),
    ("InternalError", 500, False, TransientError, "InternalError"),
    (None, 502, False, TransientError, "HTTP 502"),
    (None, 429, False, TransientError, "HTTP 429"),
    ("InvalidArgument", 400, False, BackendError, "InvalidArgument"),
])
def test_error_classification(code, status, fetching, kind, words):
    exc = s3.error(code, status, WHERE, "files/md5/aa/bb", fetching=fetching)
    assert type(exc) is kind
    assert words in str(exc)
    assert "http://s3.example:9000" in str(exc) or kind is ObjectNotFound


def test_unreachable_is_transient_but_tls_is_not():
    assert type(s3.unreachable(WHERE, OSError("Connection refused"))) is TransientError
    tls = s3.unreachable(WHERE, OSError("certificate verify failed"), tls=True)
    assert type(tls) is BackendError and "--ca-bundle" in str(tls)


def test_error_body_and_location_helpers():
    body = "<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>"
    assert s3.parse_error_body(body) == ("NoSuchBucket", "gone")
    assert s3.parse_error_body("not xml") == (None, None)
    assert WHERE.name("files/md5/aa/bb") == "pre/fix/files/md5/aa/bb"
    assert WHERE.key("pre/fix/files/md5/aa/bb") == "files/md5/aa/bb"
    assert WHERE.key("pre/fixed/x") is None
    assert s3.Location("bkt", "", "e").name("k") == "k"


def test_part_size_keeps_huge_files_under_10000_parts():
    from cmf_backends.minio_s3.store import MAX_PARTS, PART_SIZE, part_size

    assert part_size(0) == part_size(PART_SIZE * 3) == PART_SIZE
    for size in (10 ** 12, 5 * 2 ** 40):
        assert -(-size // part_size(size)) <= MAX_PARTS


# -- a server that stops in the middle of a pull --------------------------------------------------------


def test_server_stopped_mid_pull_then_rerun_completes(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(cmf_core.transfer, "BACKOFF", 0.01)
    server = S3Server(tmp_path / "flaky")  # its own port and data directory, kept across the restart
    server.start()
    try:
        init(ws, tmp_path, options(server, server.bucket("flaky")))
        files = {f"data/file {i:02d}.bin": os.urandom(20_000 + 997 * i) for i in range(40)}
        ds = Dataset.write(ws, files, ["data"])
        BackendConformance.log("data")
        ds.logged()
        assert api.artifact_push(PIPELINE, jobs=4).ok
        ds.forget()

        inner = plugins.open_store(config.load(ws).remote)
        lock, gets = threading.Lock(), [0]

        def stop_after_ten(key, dst) -> None:
            with lock:
                gets[0] += 1
                if gets[0] == 10:
                    server.stop()

        outcome = {}
        puller = threading.Thread(target=lambda: outcome.setdefault(
            "result", api.artifact_pull(PIPELINE, jobs=4, store=WrappedStore(inner, before_get=stop_after_ten))))
        puller.start()
        puller.join(timeout=120)
        inner.close()
        assert not puller.is_alive()
        first = outcome["result"]
        assert not server.running
        assert not first.ok and first.failed
        assert all(server.endpoint in error for _, error in first.failed), first.failed

        server.start()  # the same port and the same data directory
        second = api.artifact_pull(PIPELINE, jobs=4)
        assert second.ok, second.failed
        assert second.moved == len(first.failed)
    finally:
        server.stop()
    ds.assert_in_place()
    for rel, data in files.items():
        assert layout.file_md5(ws / rel) == hashlib.md5(data).hexdigest(), rel
    assert not list(ws.rglob(f"*{cmf_core.transfer.PARTIAL}")), "partial files left behind"


def test_http_pool_goes_through_the_proxy_the_environment_names(monkeypatch):
    """As boto3 and DVC do: HTTPS_PROXY/HTTP_PROXY are used unless NO_PROXY exempts the endpoint."""
    import urllib3

    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not isinstance(s3.http_pool("https://s3.example.org", True, 2, 1, 1), urllib3.ProxyManager)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    monkeypatch.setenv("NO_PROXY", "minio.internal")
    pool = s3.http_pool("https://s3.example.org", True, 2, 1, 1)
    assert isinstance(pool, urllib3.ProxyManager) and pool.proxy.host == "proxy.example.org"
    assert not isinstance(s3.http_pool("https://minio.internal:9000", True, 2, 1, 1), urllib3.ProxyManager)
    assert not isinstance(s3.http_pool("http://s3.example.org", True, 2, 1, 1), urllib3.ProxyManager), \
        "an http endpoint uses HTTP_PROXY, which is not set"


def test_http_pool_sends_a_request_once_more_after_a_busy_answer():
    """A 503 (or a dropped connection) is retried once inside the pool, as botocore does; a second one is
    the answer, for the engine's own retries with backoff."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers: List[int] = [503, 200]

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers.pop(0) if answers else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/bucket/key"
    try:
        pool = s3.http_pool(url, True, 2, 5, 5)
        assert pool.request("GET", url).status == 200 and not answers
        answers.extend([503, 503])
        assert pool.request("GET", url).status == 503 and not answers, "busy twice: the answer is returned"
    finally:
        server.shutdown()
        server.server_close()
