"""Multipart uploads of both S3 backends are verified as their one-PUT uploads are, against a real S3 server
(``rclone serve s3``, which checks a Content-MD5 but not a signed payload's sha256).

A part garbled on the way is refused by its Content-MD5; a file whose bytes are not the md5 its key names
(rotten in the DVC cache, or changed during the upload) is refused before the upload completes.  Either way
no object appears at the key.  Garbling and file changes happen in :class:`PartProxy`, a TCP proxy in front
of the server that sees each request as the SDK sent it.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from cmf_core import api, config, layout, plugins, s3
from cmf_core.errors import CorruptSource, TransientError
from cmf_core.hookspecs import ObjectStore
from cmf_core.testing import PIPELINE, Dataset
from cmf_core.testing.servers import S3Server

import cmf_backends.amazon_s3.store as amazon_store
import cmf_backends.minio_s3.store as minio_store

MIB = 1 << 20
SIZE = 11 * MIB  # three parts of 5 MiB, S3's smallest part
BACKENDS = ["minioS3", "amazonS3"]


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    """Multipart uploads from 5 MiB on, in 5 MiB parts, so that a few MiB make several parts."""
    monkeypatch.setattr(minio_store, "PART_SIZE", 5 * MIB)
    monkeypatch.setattr(amazon_store, "MULTIPART_THRESHOLD", 5 * MIB)
    monkeypatch.setattr(amazon_store, "MIN_PART", 5 * MIB)


class PartProxy:
    """A TCP proxy to the S3 server on ``port`` that reads each HTTP request the SDK sends and passes it on.

    It keeps the headers and body of every UploadPart request in ``parts``; ``garble`` parts from the first
    get their middle byte flipped on the way, after the SDK hashed them; ``on_part`` runs when the headers
    of a part arrive, before its body is read.  Answers go back untouched."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.garble = 0
        self.on_part: Optional[Callable[[], None]] = None
        self.parts: List[Tuple[Dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def close(self) -> None:
        """Stop accepting before the listener's file descriptor is closed (and maybe reused by the next one)."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() that waits
        self.accepting.join()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # shut down
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _answers(upstream: socket.socket, client: socket.socket) -> None:
        with upstream, client:
            for data in iter(lambda: upstream.recv(1 << 16), b""):
                client.sendall(data)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Request by request: the head is passed on at once (the SDK may wait for ``100 Continue``), then
        the body, whose length ``Content-Length`` gives."""
        with contextlib.closing(client.makefile("rb")) as reader:
            try:
                while True:
                    lines = [reader.readline()]
                    if not lines[0]:
                        break
                    while lines[-1] not in (b"\r\n", b""):
                        lines.append(reader.readline())
                    upstream.sendall(b"".join(lines))
                    fields = (line.decode("latin-1").partition(":") for line in lines[1:-1])
                    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                    is_part = b"partNumber=" in lines[0]
                    if is_part and self.on_part:
                        self.on_part()
                    body = reader.read(int(headers.get("content-length", 0)))
                    upstream.sendall(self._part(headers, body) if is_part else body)
            except OSError:  # a connection closed
                pass
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _part(self, headers: Dict[str, str], body: bytes) -> bytes:
        with self.lock:
            self.parts.append((headers, body))
            if not self.garble:
                return body
            self.garble -= 1
        middle = len(body) // 2
        return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]


@pytest.fixture
def proxy(s3_server) -> Iterator[PartProxy]:
    server = PartProxy(s3_server.port)
    yield server
    server.close()


def init(ws: Path, repo_type: str, endpoint: str, bucket: str) -> None:
    """``cmf init`` of ``repo_type`` in ``ws`` for ``s3://bucket/pre`` at ``endpoint``."""
    options = {"url": f"s3://{bucket}/pre", "endpoint_url": endpoint, "access_key_id": S3Server.ACCESS_KEY,
               "secret_key": S3Server.SECRET_KEY}
    if repo_type == "amazonS3":
        options["region"] = "us-east-1"
    api.init(repo_type, options, git_remote_url=str(ws.parent / "origin.git"), workspace=ws)


def open_store(ws: Path, repo_type: str, endpoint: str, bucket: str) -> ObjectStore:
    init(ws, repo_type, endpoint, bucket)
    return plugins.open_store(config.load(ws).remote)


def big_file(tmp_path: Path, size: int = SIZE) -> Tuple[Path, str, bytes]:
    data = os.urandom(size)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    return src, layout.key(hashlib.md5(data).hexdigest()), data


def stored(s3_server: S3Server, bucket: str) -> Dict[str, bytes]:
    """Every file rclone keeps in the bucket's folder (its objects, and any partial upload)."""
    root = s3_server.root / bucket
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("repo_type", BACKENDS)
def test_every_part_carries_the_content_md5_of_its_bytes(repo_type, ws, tmp_path, s3_server, s3_bucket, proxy):
    store = open_store(ws, repo_type, proxy.endpoint, s3_bucket)
    src, key, data = big_file(tmp_path)
    try:
        store.put(src, key)
    finally:
        store.close()
    assert sorted(len(body) for _, body in proxy.parts) == [MIB, 5 * MIB, 5 * MIB]
    for headers, body in proxy.parts:
        assert headers.get("content-md5") == base64.b64encode(hashlib.md5(body).digest()).decode()
    assert stored(s3_server, s3_bucket) == {f"pre/{key}": data}


@pytest.mark.parametrize("repo_type", BACKENDS)
def test_a_part_garbled_on_the_way_is_refused_and_the_next_attempt_stores_it(repo_type, ws, tmp_path, s3_server,
                                                                              s3_bucket, proxy):
    store = open_store(ws, repo_type, proxy.endpoint, s3_bucket)
    src, key, data = big_file(tmp_path)
    proxy.garble = 1
    try:
        with pytest.raises(TransientError, match=s3_bucket):  # the engine sends it again
            store.put(src, key)
        assert store.exists([key]) == set() and stored(s3_server, s3_bucket) == {}
        store.put(src, key)
        assert stored(s3_server, s3_bucket) == {f"pre/{key}": data}
    finally:
        store.close()


@pytest.mark.parametrize("repo_type", BACKENDS)
def test_a_file_that_changes_during_the_upload_is_refused_and_stores_nothing(repo_type, ws, tmp_path, s3_server,
                                                                             s3_bucket, proxy, monkeypatch):
    """The md5 checked is that of the bytes the SDK read and sent, not of the file before the upload: its last
    byte changes once the first part is on its way.  Both SDKs read at most three parts ahead of the uploads
    that are done (minio reads one part while two upload; s3transfer, here with two threads, too), so a file
    of four parts is read to its end only after the change."""
    monkeypatch.setattr(amazon_store, "UPLOAD_THREADS", 2)
    store = open_store(ws, repo_type, proxy.endpoint, s3_bucket)
    src, key, data = big_file(tmp_path, 16 * MIB)

    def change_the_last_byte() -> None:
        with open(src, "r+b") as file:
            file.seek(-1, os.SEEK_END)
            file.write(bytes([data[-1] ^ 0xFF]))

    proxy.on_part = change_the_last_byte
    try:
        with pytest.raises(CorruptSource, match="is corrupt"):
            store.put(src, key)
        assert store.exists([key]) == set()
    finally:
        store.close()
    assert stored(s3_server, s3_bucket) == {}
    assert len(proxy.parts) < 4, "the last part never left"


@pytest.mark.parametrize("repo_type", BACKENDS)
def test_a_rotten_cache_file_of_a_big_artifact_is_healed_before_it_reaches_the_remote(repo_type, ws, s3_server,
                                                                                      s3_bucket):
    init(ws, repo_type, s3_server.endpoint, s3_bucket)
    data = os.urandom(SIZE)
    Dataset.write(ws, {"data/big.bin": data}, ["data/big.bin"]).log()
    key = layout.key(hashlib.md5(data).hexdigest())
    cached = config.load(ws).cache / key
    os.chmod(cached, 0o644)
    cached.write_bytes(os.urandom(SIZE))
    pushed = api.artifact_push(PIPELINE)
    assert pushed.ok, pushed.failed
    assert stored(s3_server, s3_bucket)[f"pre/{key}"] == data
    assert cached.read_bytes() == data


# -- the stream the SDKs read ------------------------------------------------------------------------------


def test_the_checked_source_refuses_bytes_that_are_not_the_keys_md5_at_their_end(tmp_path):
    data = os.urandom(1000)
    src = tmp_path / "f"
    src.write_bytes(data + b"appended meanwhile")
    key = layout.key(hashlib.md5(data).hexdigest())
    with s3.CheckedSource(src, key, len(data)) as body:
        assert body.read(600) + body.read() == data and body.read(10) == b"", "reads stop at the size"
    src.write_bytes(data[:-1] + b"x")
    with s3.CheckedSource(src, key, len(data)) as body:
        assert body.read(999) == data[:999]
        with pytest.raises(CorruptSource, match=str(src)):
            body.read(1)
    src.write_bytes(data[:500])
    with s3.CheckedSource(src, key, len(data)) as body, pytest.raises(CorruptSource):
        while body.read(100):
            pass
