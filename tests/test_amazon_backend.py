"""The amazonS3 backend against a real S3 server: ``rclone serve s3`` on loopback, which checks SigV4.

The conformance kit, then what is particular to S3: the bucket prefix, multipart transfers,
credentials from the AWS chain, interoperation with plain ``dvc push``/``dvc pull``, and one
clear error line (and a non-zero exit) for each way the remote can be wrong.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import urllib3

import cmf_core.transfer
from cmf_core import api, config, layout, plugins, s3, s3_http
from cmf_core.errors import BackendError, TransientError
from cmf_core.testing import BackendConformance
from cmf_core.testing.conformance import Sink, random_bytes
from cmf_core.testing.servers import S3Server, free_port
from tests.conftest import clone_workspace

import cmf_backends.amazon_s3.store as amazon_store

PIPELINE = "amazon"
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _no_aws_setup(monkeypatch):
    """Nothing of the developer's AWS setup leaks in, and boto3 never waits for EC2 instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def options(server: S3Server, bucket: str, prefix: str = "team/prefix", **extra) -> Dict[str, object]:
    """``cmf init amazonS3`` options for ``bucket`` on the test server, with its keys unless overridden."""
    opts: Dict[str, object] = {"url": f"s3://{bucket}/{prefix}".rstrip("/"), "endpoint_url": server.endpoint,
                               "access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY,
                               "region": "us-east-1"}
    opts.update(extra)
    return {k: v for k, v in opts.items() if v is not None}


def init(ws: Path, opts: Dict[str, object]) -> Path:
    api.init("amazonS3", opts, git_remote_url=str(ws.parent / "origin.git"), workspace=ws)
    return ws


def log(ws: Path, files: Dict[str, bytes]) -> None:
    """Write ``files`` into the workspace and log them as outputs of one execution of PIPELINE."""
    from cmflib.cmf import Cmf

    for rel, data in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(data)
    cmf = Cmf(filepath=str(ws / "mlmd"), pipeline_name=PIPELINE)
    cmf.create_context("produce")
    cmf.create_execution("Produce")
    for rel in files:
        cmf.log_dataset(rel, "output")
    cmf.finalize()


def forget(ws: Path, files: Dict[str, bytes]) -> None:
    """Delete the files and the DVC cache, so a pull must download."""
    for rel in files:
        (ws / rel).unlink()
    shutil.rmtree(ws / ".dvc" / "cache", ignore_errors=True)


def assert_in_place(ws: Path, files: Dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (ws / rel).read_bytes() == data, f"{rel} did not arrive intact"


def error_lines(err: str) -> List[str]:
    return [line for line in err.splitlines() if line.startswith("cmf: error:")]


def sh(*argv: str, cwd: Path) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def amazon_ws(ws, s3_server, s3_bucket) -> Path:
    """A workspace initialised for ``s3://<fresh bucket>/team/prefix`` with the server's keys."""
    return init(ws, options(s3_server, s3_bucket))


@pytest.fixture
def store(amazon_ws):
    opened = plugins.open_store(config.load(amazon_ws).remote)
    yield opened
    opened.close()


# -- the kit ---------------------------------------------------------------------------------------


class TestAmazonS3Conformance(BackendConformance):
    jobs = 8
    large_file_mb = 96  # uploaded in multipart parts; downloaded as a 64 MiB head and parallel ranges

    @pytest.fixture
    def backend(self, s3_server, s3_bucket):
        return "amazonS3", {"url": f"s3://{s3_bucket}/team/prefix", "endpoint_url": s3_server.endpoint,
                            "access_key_id": S3Server.ACCESS_KEY, "secret_key": S3Server.SECRET_KEY,
                            "region": "us-east-1"}

    def plant(self, store, key, data, scratch):
        """Around the Content-MD5 check of cmf's puts: the SDK's own put sends none."""
        store.client.put_object(Bucket=store.where.bucket, Key=store.where.name(key), Body=data)


# -- layout and transfers ----------------------------------------------------------------------------


def test_objects_live_under_the_bucket_prefix(amazon_ws, s3_server, s3_bucket, cmf):
    files = {"data/a.csv": b"x,y\n1,2\n", "data/b.bin": random_bytes(10_000, "prefix")}
    log(amazon_ws, files)
    result = cmf("artifact", "push", "-p", PIPELINE)
    assert result.code == 0, result.err
    prefix_root = s3_server.root / s3_bucket / "team" / "prefix"
    for data in files.values():
        md5 = hashlib.md5(data).hexdigest()
        assert (prefix_root / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == data
    outside = [p for p in (s3_server.root / s3_bucket).rglob("*") if p.is_file() and prefix_root not in p.parents]
    assert outside == [], "nothing may be written outside the prefix"


def test_part_size_keeps_huge_files_under_10000_parts():
    for size in (0, 1, 100 * MIB, 80 * 10**9, 500 * 10**9, 5 * 2**40):  # up to S3's 5 TiB object limit
        part = amazon_store.part_size(size)
        assert part >= 8 * MIB and part % MIB == 0
        assert part <= 5 * 2**30, "S3 parts are at most 5 GiB"
        assert -(-size // part) <= 10_000, f"{size} bytes would need {-(-size // part)} parts"
    assert amazon_store.part_size(100 * MIB) == 8 * MIB
    assert -(-500 * 10**9 // amazon_store.part_size(500 * 10**9)) <= 9_000


def http_requests(store, monkeypatch) -> List[str]:
    """Record the method and Range header of every request the store sends through its urllib3 pool."""
    ranges: List[str] = []
    send = store.http.pool.request

    def recorded(method, url, headers=None, **kwargs):
        ranges.append(f"{method} {(headers or {}).get('Range')}")
        return send(method, url, headers=headers, **kwargs)

    monkeypatch.setattr(store.http.pool, "request", recorded)
    return ranges


@pytest.mark.timeout(120)
def test_big_objects_move_in_parallel_parts(store, tmp_path, monkeypatch):
    monkeypatch.setattr(amazon_store, "MULTIPART_THRESHOLD", 8 * MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", 2 * MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", MIB)  # 20 GETs: more than the 10 parts that deadlock s3transfer
    operations: List[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: operations.append(model.name))
    ranges = http_requests(store, monkeypatch)
    src = tmp_path / "big"
    data = random_bytes(20 * MIB + 123, "multipart")
    src.write_bytes(data)
    key = layout.key(hashlib.md5(data).hexdigest())
    store.put(src, key)
    assert operations.count("UploadPart") == 3 and "PutObject" not in operations, "20 MiB in 8 MiB parts is 3"
    operations.clear()
    sink = Sink(keep=False)
    store.get(key, sink)
    assert (sink.size, sink.md5) == (len(data), hashlib.md5(data).hexdigest())
    assert not operations, "GETs go to presigned URLs; the first ranged GET tells the size: no HEAD"
    assert len(ranges) == 20, ranges
    assert ranges[0] == f"GET bytes=0-{2 * MIB - 1}" and ranges[1] == f"GET bytes={2 * MIB}-{3 * MIB - 1}"
    assert ranges[-1] == f"GET bytes={20 * MIB}-{20 * MIB + 122}"


def test_a_failing_writer_stops_the_download_and_its_threads(store, tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", MIB)
    data = random_bytes(12 * MIB, "writer fails")
    src = tmp_path / "obj"
    src.write_bytes(data)
    key = layout.key(hashlib.md5(data).hexdigest())
    store.put(src, key)

    class DiskFull(Sink):
        def write(self, chunk) -> int:
            if self.size >= 3 * MIB:
                raise OSError(28, "No space left on device")
            return super().write(chunk)

    with pytest.raises(OSError, match="No space left"):  # the engine's own error, not a BackendError
        store.get(key, DiskFull(keep=False))
    assert not [t for t in threading.enumerate() if t.name.startswith("cmf-s3-range")]


def test_a_range_that_breaks_off_is_asked_again_for_what_is_missing(store, tmp_path, monkeypatch):
    """Ranges reach the writer piece by piece as they arrive; a body that breaks off after some pieces
    is resumed from the first byte that did not come, so nothing is written twice or left out."""
    import urllib3

    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", 4 * MIB)
    data = random_bytes(9 * MIB + 7, "breaks off")
    src = tmp_path / "obj"
    src.write_bytes(data)
    key = layout.key(hashlib.md5(data).hexdigest())
    store.put(src, key)
    send = store.http.pool.request
    asked: List[str] = []

    class BreaksOff:
        """The first range's answer: one piece of its body, then the connection is gone."""

        def __init__(self, response) -> None:
            self.response, self.reads = response, 0

        def __getattr__(self, name: str):
            return getattr(self.response, name)

        def read(self, amt=None, **kwargs) -> bytes:
            self.reads += 1
            if self.reads == 2:
                raise urllib3.exceptions.ProtocolError("Connection broken: peer closed")
            return self.response.read(amt, **kwargs)

    def request(method, url, headers=None, **kwargs):
        asked.append(headers["Range"])
        response = send(method, url, headers=headers, **kwargs)
        return BreaksOff(response) if headers["Range"] == f"bytes={MIB}-{5 * MIB - 1}" else response

    monkeypatch.setattr(store.http.pool, "request", request)
    sink = Sink()
    store.get(key, sink)
    assert sink.value == data
    assert sorted(asked) == sorted([f"bytes=0-{MIB - 1}", f"bytes={MIB}-{5 * MIB - 1}",
                                    f"bytes={2 * MIB}-{5 * MIB - 1}",  # the rest of the range that broke off
                                    f"bytes={5 * MIB}-{9 * MIB - 1}", f"bytes={9 * MIB}-{9 * MIB + 6}"])


def test_small_object_is_one_get(store, tmp_path, monkeypatch):
    src = tmp_path / "small"
    src.write_bytes(b"small object")
    key = layout.key(hashlib.md5(b"small object").hexdigest())
    store.put(src, key)
    requests = http_requests(store, monkeypatch)
    sink = Sink()
    store.get(key, sink)
    assert sink.value == b"small object" and requests == [f"GET bytes=0-{s3_http.DOWNLOAD_HEAD - 1}"]


def test_big_object_pushed_by_dvc_is_pulled_by_cmf(amazon_ws, cmf, monkeypatch):
    """DVC stores a CRC32 with each object, which rclone sends back with every range: cmf must not trip on it."""
    monkeypatch.setattr(s3_http, "DOWNLOAD_HEAD", MIB)
    monkeypatch.setattr(s3_http, "DOWNLOAD_PART", MIB)
    files = {"data/model.bin": random_bytes(12 * MIB + 5, "dvc big")}
    log(amazon_ws, files)
    sh(DVC, "push", cwd=amazon_ws)
    forget(amazon_ws, files)
    result = cmf("artifact", "pull", "-p", PIPELINE)
    assert result.code == 0, result.err
    assert_in_place(amazon_ws, files)


def test_opening_again_parses_no_botocore_data_again(amazon_ws, monkeypatch):
    """A program that pushes after every stage opens the store each time: botocore's JSON (S3's model,
    the endpoints) is parsed once per process, and each store still gets its own credentials."""
    from botocore.loaders import JSONFileLoader

    plugins.open_store(config.load(amazon_ws).remote).close()
    parsed: List[str] = []
    load = JSONFileLoader.load_file
    monkeypatch.setattr(JSONFileLoader, "load_file", lambda self, path: parsed.append(path) or load(self, path))
    again = plugins.open_store(config.load(amazon_ws).remote)
    try:
        assert again.client.list_objects_v2(Bucket=again.where.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        again.close()
    assert parsed == []
    remote = config.load(amazon_ws).remote
    remote.secrets["secret_access_key"] = "not-the-secret"
    with pytest.raises(BackendError, match="refused the credentials"):
        plugins.open_store(remote)


def test_small_objects_are_one_put(store, tmp_path, monkeypatch):
    seen: List[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: seen.append(model.name))
    requests = http_requests(store, monkeypatch)
    src = tmp_path / "small"
    src.write_bytes(b"small")
    store.put(src, layout.key(hashlib.md5(b"small").hexdigest()))
    assert requests == ["PUT None"] and not seen, "one PUT to a presigned URL, no SDK call"
    sink = Sink()
    store.get(layout.key(hashlib.md5(b"small").hexdigest()), sink)
    assert sink.value == b"small"


def test_exists_lists_instead_of_asking_per_key(store, tmp_path, monkeypatch):
    """Listings go through the signed HTTP pool (ListObjectsV2 signed by botocore), not the SDK's calls."""
    seen: List[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: seen.append(model.name))
    keys = [layout.key(hashlib.md5(str(i).encode()).hexdigest()) for i in range(500)]
    for i, key in enumerate(keys[:7]):
        src = tmp_path / str(i)
        src.write_bytes(str(i).encode())
        store.put(src, key)
    requests = http_requests(store, monkeypatch)
    assert store.exists(keys) == set(keys[:7])
    assert not seen and set(requests) == {"GET None"} and len(requests) < 20, (seen, requests)


# -- interoperation with DVC -------------------------------------------------------------------------


def test_dvc_pull_gets_what_cmf_pushed(amazon_ws, tmp_path, cmf):
    files = {"data/a.csv": b"id,v\n1,2\n", "data/weights.bin": random_bytes(3 * MIB, "dvc pull")}
    log(amazon_ws, files)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    clone = clone_workspace(amazon_ws, tmp_path / "clone")
    sh(DVC, "pull", cwd=clone)
    assert_in_place(clone, files)


def test_cmf_pull_gets_what_dvc_pushed(amazon_ws, cmf):
    files = {"data/a.csv": b"id,v\n3,4\n", "data/weights.bin": random_bytes(2 * MIB, "dvc push")}
    log(amazon_ws, files)
    sh(DVC, "push", cwd=amazon_ws)
    forget(amazon_ws, files)
    result = cmf("artifact", "pull", "-p", PIPELINE)
    assert result.code == 0, result.err
    assert "pulled 2 objects" in result.out
    assert_in_place(amazon_ws, files)


# -- credentials from the AWS chain ------------------------------------------------------------------


def round_trip(ws: Path, cmf) -> None:
    files = {"data/chain.txt": b"credentials from the AWS chain\n"}
    log(ws, files)
    pushed = cmf("artifact", "push", "-p", PIPELINE)
    assert pushed.code == 0, pushed.err
    forget(ws, files)
    pulled = cmf("artifact", "pull", "-p", PIPELINE)
    assert pulled.code == 0, pulled.err
    assert_in_place(ws, files)


def test_keys_from_the_environment(ws, s3_server, s3_bucket, monkeypatch, cmf):
    init(ws, options(s3_server, s3_bucket, access_key_id=None, secret_key=None))
    assert "secret_access_key" not in config.load(ws).remote.secrets
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3Server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3Server.SECRET_KEY)
    round_trip(ws, cmf)


def test_keys_from_a_profile_of_the_shared_credentials_file(ws, s3_server, s3_bucket, monkeypatch, cmf):
    init(ws, options(s3_server, s3_bucket, access_key_id=None, secret_key=None))
    credentials = Path(os.environ["HOME"]) / ".aws" / "credentials"  # HOME is private to the test
    credentials.parent.mkdir()
    credentials.write_text(f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
                           f"[cmf-test]\naws_access_key_id = {S3Server.ACCESS_KEY}\n"
                           f"aws_secret_access_key = {S3Server.SECRET_KEY}\n")
    monkeypatch.setenv("AWS_PROFILE", "cmf-test")
    round_trip(ws, cmf)


def test_no_credentials_anywhere_says_how_to_give_them(ws, s3_server, s3_bucket, cmf):
    init(ws, options(s3_server, s3_bucket, access_key_id=None, secret_key=None))
    log(ws, {"data/x.txt": b"x"})
    result = cmf("artifact", "push", "-p", PIPELINE)
    assert result.code == 1
    [line] = error_lines(result.err)
    assert "no AWS credentials" in line and "--access-key-id" in line and "AWS_PROFILE" in line


def test_unknown_profile_is_one_clear_error(ws, s3_server, s3_bucket, monkeypatch, cmf):
    init(ws, options(s3_server, s3_bucket, access_key_id=None, secret_key=None))
    log(ws, {"data/x.txt": b"x"})
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    result = cmf("artifact", "push", "-p", PIPELINE)
    assert result.code == 1
    [line] = error_lines(result.err)
    assert "nobody" in line and s3_bucket in line


# -- one clear error and a non-zero exit for each way the remote can be wrong ------------------------


def failing_workspace(ws: Path, opts: Dict[str, object]) -> Path:
    init(ws, opts)
    log(ws, {"data/x.txt": b"x", "data/y.txt": b"y"})
    return ws


def assert_one_error(cmf, *needles: str) -> None:
    for command in ("push", "pull"):
        result = cmf("artifact", command, "-p", PIPELINE)
        assert result.code == 1, f"{command}: {result}"
        lines = error_lines(result.err)
        assert len(lines) == 1, f"{command} should say it once:\n{result.err}"
        for needle in needles:
            assert needle in lines[0], f"{command}: {needle!r} not in {lines[0]!r}"


# -- TLS: the SDK's calls and the presigned GETs both verify the server ---------------------------


def test_https_with_the_servers_ca_bundle(ws, tls_s3_server, tls_bucket):
    init(ws, options(tls_s3_server, tls_bucket, ca_bundle=str(tls_s3_server.pem["cert"])))
    files = {"data/a.bin": random_bytes(3 * MIB, "tls a"), "data/b.bin": b"small"}
    log(ws, files)
    assert api.artifact_push(PIPELINE).ok
    forget(ws, files)
    pulled = api.artifact_pull(PIPELINE)
    assert pulled.ok, pulled.failed
    assert_in_place(ws, files)


def test_https_unknown_ca_is_refused_with_what_to_do(ws, tls_s3_server, tls_bucket, cmf):
    init(ws, options(tls_s3_server, tls_bucket))  # verified against the system CAs
    log(ws, {"a.bin": b"a"})
    done = cmf("artifact", "pull", "-p", PIPELINE)
    assert done.code != 0
    [line] = error_lines(done.err)
    assert f"TLS to {tls_s3_server.endpoint}" in line or "SSL" in line, line
    assert "gave up after" not in line, "a certificate that does not verify is not retried"


def test_presigned_gets_verify_tls_too(ws, tls_s3_server, tls_bucket):
    """The bundle opens the store; a GET against a pool without it must still be refused."""
    init(ws, options(tls_s3_server, tls_bucket, ca_bundle=str(tls_s3_server.pem["cert"])))
    log(ws, {"a.bin": b"verified"})
    assert api.artifact_push(PIPELINE).ok
    opened = plugins.open_store(config.load(ws).remote)
    try:
        opened.http.pool = s3.http_pool(tls_s3_server.endpoint, True, 2, 5, 5)  # the system's CAs only
        with pytest.raises(BackendError, match="TLS to") as refused:
            opened.get(layout.key(hashlib.md5(b"verified").hexdigest()), Sink())
        assert "X-Amz-" not in str(refused.value), "the presigned URL (its signature) is never shown"
    finally:
        opened.close()


def test_wrong_secret(ws, s3_server, s3_bucket, cmf):
    failing_workspace(ws, options(s3_server, s3_bucket, secret_key="not-the-secret"))
    assert_one_error(cmf, s3_server.endpoint, "refused the credentials", s3_bucket)


def test_unknown_access_key(ws, s3_server, s3_bucket, cmf):
    failing_workspace(ws, options(s3_server, s3_bucket, access_key_id="nobody-has-this-key"))
    assert_one_error(cmf, s3_server.endpoint, "refused the credentials", "InvalidAccessKeyId")


def test_missing_bucket(ws, s3_server, cmf):
    failing_workspace(ws, options(s3_server, "no-such-bucket-here"))
    assert_one_error(cmf, "bucket 'no-such-bucket-here' does not exist", s3_server.endpoint)


def test_unreachable_endpoint(ws, s3_bucket, monkeypatch, cmf):
    monkeypatch.setattr(cmf_core.transfer, "BACKOFF", 0.01)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    opts = {"url": f"s3://{s3_bucket}", "endpoint_url": dead, "access_key_id": "k", "secret_key": "s"}
    failing_workspace(ws, opts)
    assert_one_error(cmf, f"cannot reach {dead}", s3_bucket)


def answering(store, monkeypatch, status: int, code: str, message: str) -> None:
    """Every request of the store's HTTP pool gets this S3 error answer."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    monkeypatch.setattr(store.http.pool, "request", lambda *a, **k: urllib3.HTTPResponse(
        body=io.BytesIO(body), status=status, preload_content=k.get("preload_content", True)))


def test_throttling_and_5xx_are_transient(store, monkeypatch):
    key = layout.key(hashlib.md5(b"busy").hexdigest())
    answering(store, monkeypatch, 503, "SlowDown", "Please reduce your request rate.")
    with pytest.raises(TransientError, match="SlowDown"):
        store.exists([key])
    answering(store, monkeypatch, 500, "InternalError", "We encountered an internal error.")
    with pytest.raises(TransientError, match="InternalError"):
        store.get(key, Sink())


def test_a_refused_put_names_the_bucket_and_retries_only_when_transient(store, tmp_path, monkeypatch, s3_bucket):
    src = tmp_path / "obj"
    src.write_bytes(b"refused")
    key = layout.key(hashlib.md5(b"refused").hexdigest())
    # BadDigest of a file that does match its md5: the bytes were garbled on the way, worth sending again
    for status, code, kind in ((403, "AccessDenied", BackendError), (503, "SlowDown", TransientError),
                               (400, "BadDigest", TransientError)):
        answering(store, monkeypatch, status, code, "no")
        with pytest.raises(kind) as raised:
            store.put(src, key)
        assert s3_bucket in str(raised.value) and (kind is TransientError) == isinstance(raised.value, TransientError)


def test_errors_name_the_bucket_and_endpoint(store, s3_server, s3_bucket, monkeypatch):
    answering(store, monkeypatch, 403, "AccessDenied", "Access Denied")
    with pytest.raises(BackendError) as raised:
        store.exists([layout.key(hashlib.md5(b"denied").hexdigest())])
    assert not isinstance(raised.value, TransientError)
    assert s3_bucket in str(raised.value) and s3_server.endpoint in str(raised.value)


@pytest.mark.parametrize("repo_type", ["amazonS3", "minioS3"])
def test_gets_signed_in_headers_reach_objects_under_an_odd_prefix(repo_type, ws, s3_server, s3_bucket, tmp_path):
    """A GET's short URL is built from the address the SDK presigned once, with the remote's prefix quoted
    by cmf: a prefix with a space, '+', '~' and '=' must still name the SDK's own objects, and be listed."""
    import boto3

    prefix = "odd prefix/a+~x=y"
    opts = options(s3_server, s3_bucket, prefix=prefix, region=None if repo_type == "minioS3" else "us-east-1")
    api.init(repo_type, opts, git_remote_url=str(ws.parent / "origin.git"), workspace=ws)
    opened = plugins.open_store(config.load(ws).remote)
    try:
        data = random_bytes(3 * MIB + 1, "odd prefix")
        key = layout.key(hashlib.md5(data).hexdigest())
        src = tmp_path / "obj"
        src.write_bytes(data)
        opened.put(src, key)
        raw = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                           aws_access_key_id=S3Server.ACCESS_KEY, aws_secret_access_key=S3Server.SECRET_KEY)
        assert [o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [f"{prefix}/{key}"]
        sink = Sink()
        opened.get(key, sink)
        assert sink.value == data
        assert opened.exists([key, layout.key("0" * 32)]) == {key}  # a listing's query signed as sent
    finally:
        opened.close()


def test_the_address_of_objects_is_read_from_a_presigned_url():
    """Virtual-host or path addressing and the signing region come from the SDK's presigned URL; a URL
    that is not SigV4 (or not for the probe name) is refused with a message that shows no signature."""
    scope = "X-Amz-Credential=AKIDEXAMPLE%2F20261127%2Feu-west-3%2Fs3%2Faws4_request&X-Amz-Signature=abc123"
    hosted = s3_http.Addressing.read(f"https://bkt.s3.eu-west-3.amazonaws.com/{s3_http.PROBE}?{scope}")
    assert (hosted.base, hosted.region) == ("https://bkt.s3.eu-west-3.amazonaws.com/", "eu-west-3")
    assert hosted.url("team/md5/ab/cd ef+") == "https://bkt.s3.eu-west-3.amazonaws.com/team/md5/ab/cd%20ef%2B"
    path_style = s3_http.Addressing.read(f"http://127.0.0.1:9000/bkt/{s3_http.PROBE}?{scope}")
    assert path_style.base == "http://127.0.0.1:9000/bkt/"
    for refused in (f"https://bkt.s3.amazonaws.com/{s3_http.PROBE}?AWSAccessKeyId=AKIDEXAMPLE&Signature=abc123",
                    f"https://bkt.s3.amazonaws.com/other?{scope}"):
        with pytest.raises(BackendError, match="SigV4 only") as error:
            s3_http.Addressing.read(refused)
        assert "abc123" not in str(error.value) and "AKIDEXAMPLE" not in str(error.value)
