"""The osdfremote backend against real servers on loopback.

* Debian's XRootD is the origin's data server (plain HTTP; it cannot check tokens: Debian
  ships no SciTokens plugin for it);
* the stand-ins of :mod:`cmf_core.testing.origin` check the bearer token on every request:
  an ``origin`` front proxying to XRootD (Pelican's origin = XRootD + token checks), a
  ``cache`` that fills itself from that front, and an HTTPS ``director`` for pelican:// URLs.
  They verify JWT signatures with the test's public key, the issuer, expiry and scope.

The conformance kit runs three times: through the token front and the cache with a token
file; against XRootD directly (its own PUT/GET/HEAD semantics, no proxy in between); and
through a pelican:// URL resolved by pelicanfs, with tokens minted from a key.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from cmf_core import api, config, layout, plugins
from cmf_core.errors import ObjectNotFound, TransientError
from cmf_core.testing import PIPELINE, BackendConformance, Dataset, Sink
from cmf_core.testing.origin import (PelicanStandIn, XRootDOrigin, ca_bundle, jwt_token, self_signed,
                                     signing_key)
from cmf_core.testing.servers import free_port
from tests.conftest import logged_sample as logged
from tests.conftest import one_error_line

ISSUER = "https://issuer.cmf.invalid"
NAMESPACE = "/ns"
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"


@dataclass
class Federation:
    """XRootD, the token-checking front before it, a cache filled from the front, and what tokens need."""

    home: Path
    xrootd: XRootDOrigin
    front: PelicanStandIn
    cache: PelicanStandIn
    key: Path  # the issuer's private key (the servers trust its public key)
    public_key: Path
    tokens: Path  # opaque tokens the servers accept

    def token(self, **kwargs) -> str:
        return jwt_token(self.key, ISSUER, **kwargs)

    def token_file(self, folder: Path, token: str = "", name: str = "token") -> Path:
        path = folder / name
        path.write_text((token or self.token(lifetime=3600)) + "\n")
        path.chmod(0o600)
        return path

    def origin_url(self, name: str) -> str:
        return f"{self.front.url}{NAMESPACE}/{name}"

    def cache_url(self, name: str) -> str:
        return f"{self.cache.url}{NAMESPACE}/{name}"

    def stored(self, name: str) -> List[str]:
        """The objects under ``/ns/<name>`` as XRootD keeps them on disk."""
        root = self.xrootd.data / NAMESPACE.strip("/") / name
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def xrootd() -> Iterator[XRootDOrigin]:
    with XRootDOrigin() as server:
        yield server


def stand_in(role: str, home: Path, **kwargs) -> PelicanStandIn:
    server = PelicanStandIn(role, home, **kwargs)
    server.start()
    return server


@pytest.fixture(scope="module")
def federation(xrootd, tmp_path_factory) -> Iterator[Federation]:
    home = tmp_path_factory.mktemp("federation")
    key, public = signing_key(home)
    tokens = home / "accepted-tokens"
    tokens.write_text("opaque-test-token-5b1e\n")
    trust = {"tokens": tokens, "public_key": public, "issuer": ISSUER, "namespace": NAMESPACE}
    servers: List[PelicanStandIn] = []
    try:
        servers.append(stand_in("origin", home / "front", upstream=xrootd.url, **trust))
        servers.append(stand_in("cache", home / "cache", upstream=servers[0].url, **trust))
        yield Federation(home, xrootd, servers[0], servers[1], key, public, tokens)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_tokens(monkeypatch):
    for name in ("CMF_OSDF_TOKEN", "BEARER_TOKEN", "BEARER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def fresh(request) -> str:
    """A directory name of its own for a test on the shared servers."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:40] + "-" + os.urandom(3).hex()


def init(ws: Path, tmp_path: Path, options: Dict[str, object]) -> None:
    api.init("osdfremote", options, git_remote_url=str(tmp_path / "origin.git"), workspace=ws)


def open_store(ws: Path):
    return plugins.open_store(config.load(ws).remote)


# -- the conformance kit, three ways ------------------------------------------------------------------


class TestOSDFConformance(BackendConformance):
    """Through the token-checking front (PUT/HEAD) and the cache (GET), with a token file."""

    large_file_mb = 32

    @pytest.fixture
    def backend(self, federation, tmp_path):
        name = tmp_path.name
        return "osdfremote", {"path": federation.origin_url(name), "cache": federation.cache_url(name),
                              "access_token": str(federation.token_file(tmp_path))}


class TestOSDFConformanceOnXRootD(BackendConformance):
    """Against XRootD itself, nothing in between (XRootD checks no token; an opaque one is sent anyway)."""

    large_file_mb = 32

    @pytest.fixture
    def backend(self, xrootd, tmp_path):
        token = tmp_path / "token"
        token.write_text("opaque-test-token-5b1e\n")
        return "osdfremote", {"path": f"{xrootd.url}/direct/{tmp_path.name}", "access_token": str(token)}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and a CA bundle (system CAs + it)."""
    home = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(home)
    return cert, key, ca_bundle(home, cert)


@pytest.fixture(scope="module")
def director(federation, tls, tmp_path_factory) -> Iterator[PelicanStandIn]:
    """An HTTPS director for namespace /ns: the origin is the token front, the cache is the federation's."""
    cert, key, _ = tls
    server = stand_in("director", tmp_path_factory.mktemp("director"), namespace=NAMESPACE,
                      origin=federation.front.url, caches=[federation.cache.url], tls=(cert, key))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def trust_test_ca(tls, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[2]))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[2]))


def key_options(federation: Federation, key: Path = None) -> Dict[str, object]:
    return {"key_id": "cmf-test-key", "key_path": str(key or federation.key), "key_issuer": ISSUER}


class TestOSDFConformancePelican(BackendConformance):
    """pelican://<director>/ns/<dir>: pelicanfs discovers the director, which names the origin and cache;
    every request carries a SciToken minted from the test key."""

    large_file_mb = 8

    @pytest.fixture
    def backend(self, federation, director, trust_test_ca, tmp_path):
        netloc = director.url.split("://", 1)[1]
        return "osdfremote", {"path": f"pelican://{netloc}{NAMESPACE}/{tmp_path.name}", **key_options(federation)}


# -- tokens: refused, expired, minted, where they come from ------------------------------------------


def test_a_wrong_token_is_refused_with_one_clear_line(ws, tmp_path, federation, request, cmf):
    stranger, _ = signing_key(tmp_path, name="stranger")
    forged = jwt_token(stranger, ISSUER)  # well-formed, right issuer, signed by a key the servers do not trust
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request)),
                        "access_token": str(federation.token_file(tmp_path, forged))})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert f"token refused by {federation.front.url}" in line and "401" in line
    assert forged not in done.err + done.out


def pushed_then_forgotten(ws: Path, tmp_path: Path, federation, request, cmf) -> Path:
    """A workspace on the origin and cache with a token file; its data pushed, then deleted locally.
    Returns the token file (re-read whenever the remote opens)."""
    name = fresh(request)
    token_file = federation.token_file(tmp_path)
    init(ws, tmp_path, {"path": federation.origin_url(name), "cache": federation.cache_url(name),
                        "access_token": str(token_file)})
    ds = logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    ds.forget()
    return token_file


def test_a_wrong_token_fails_a_pull_too(ws, tmp_path, federation, request, cmf):
    token_file = pushed_then_forgotten(ws, tmp_path, federation, request, cmf)
    token_file.write_text("not-a-token-the-servers-know\n")  # the file is re-read whenever the remote opens
    done = cmf("artifact", "pull", "-p", PIPELINE)
    assert done.code != 0
    assert f"token refused by {federation.front.url}" in done.err
    assert not (ws / "data" / "a.csv").exists()


def test_no_token_at_all_is_refused_with_a_hint(ws, tmp_path, federation, request, cmf):
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request))})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert "token refused" in line and "no token was sent" in line and "--access-token" in line


def test_an_expired_token_is_refused_before_any_request(ws, tmp_path, federation, request, cmf):
    token_file = pushed_then_forgotten(ws, tmp_path, federation, request, cmf)
    token_file.write_text(federation.token(lifetime=-120))
    seen = len(federation.front.requests()), len(federation.cache.requests())
    for command in ("push", "pull"):
        done = cmf("artifact", command, "-p", PIPELINE)
        assert done.code != 0
        line = one_error_line(done.err)
        assert "expired at" in line and str(token_file) in line and "nothing was transferred" in line
    assert (len(federation.front.requests()), len(federation.cache.requests())) == seen, "a request was sent"


def test_init_refuses_an_expired_token_file(ws, tmp_path, federation, cmf):
    token_file = federation.token_file(tmp_path, federation.token(lifetime=-60))
    done = cmf("init", "osdfremote", "--path", federation.origin_url("x"), "--access-token", str(token_file),
               "--git-remote-url", str(tmp_path / "origin.git"))
    assert done.code == 2
    assert "expired at" in done.err


def test_an_opaque_token_is_sent_as_it_is(ws, tmp_path, federation, request, cmf):
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request)),
                        "access_token": str(federation.token_file(tmp_path, "opaque-test-token-5b1e"))})
    logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_token_minted_from_the_key_is_verified_by_the_servers(ws, tmp_path, federation, request, cmf, kind):
    """The servers check the signature with the public key, the issuer, the expiry and the scope."""
    import jwt

    name = fresh(request)
    key, public = (federation.key, federation.public_key) if kind == "ec" else signing_key(tmp_path, "rsa")
    if kind == "rsa":  # a front that trusts this RSA key, before the same XRootD
        front = stand_in("origin", tmp_path / "front", upstream=federation.xrootd.url, public_key=public,
                         issuer=ISSUER, namespace=NAMESPACE)
    else:
        front = federation.front
    try:
        init(ws, tmp_path, {"path": f"{front.url}{NAMESPACE}/{name}", **key_options(federation, key)})
        ds = logged(ws)
        assert cmf("artifact", "push", "-p", PIPELINE).code == 0
        ds.forget()
        assert cmf("artifact", "pull", "-p", PIPELINE).code == 0
        ds.assert_in_place()
        mine = [r for r in front.requests() if name in str(r["path"])]
        assert mine and {r["auth"] for r in mine} == {"jwt"}
        store = open_store(ws)
        try:
            token = store.tokens.headers()["Authorization"].split(" ", 1)[1]
        finally:
            store.close()
        claims = jwt.decode(token, public.read_bytes(), algorithms=["ES256", "RS256"], issuer=ISSUER,
                            options={"verify_aud": False})
        assert claims["scope"] == "read:/ create:/ modify:/"
        assert 14 * 60 <= claims["exp"] - time.time() <= 15 * 60
        assert jwt.get_unverified_header(token)["kid"] == "cmf-test-key"
    finally:
        if kind == "rsa":
            front.stop()


def test_a_token_minted_from_an_untrusted_key_is_refused(ws, tmp_path, federation, request, cmf):
    stranger, _ = signing_key(tmp_path, name="stranger")
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request)), **key_options(federation, stranger)})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0 and "token refused by" in one_error_line(done.err)


def test_a_token_scoped_elsewhere_is_refused(ws, tmp_path, federation, request, cmf):
    token = federation.token(scope="read:/elsewhere create:/elsewhere")
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request)),
                        "access_token": str(federation.token_file(tmp_path, token))})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0 and "403" in one_error_line(done.err)


def test_the_environment_token_overrides_the_token_file(ws, tmp_path, federation, request, cmf, monkeypatch):
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request)),
                        "access_token": str(federation.token_file(tmp_path))})
    logged(ws)
    monkeypatch.setenv("CMF_OSDF_TOKEN", "not-a-token-the-servers-know")
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0 and "$CMF_OSDF_TOKEN" in done.err
    monkeypatch.setenv("CMF_OSDF_TOKEN", federation.token())
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0


def test_bearer_token_is_used_when_nothing_is_stored(ws, tmp_path, federation, request, cmf, monkeypatch):
    init(ws, tmp_path, {"path": federation.origin_url(fresh(request))})
    logged(ws)
    monkeypatch.setenv("BEARER_TOKEN", federation.token())
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0


@pytest.mark.parametrize("scheme", ["http", "pelican"])
def test_the_token_stays_out_of_git_tracked_files(ws, tmp_path, federation, request, scheme):
    token = federation.token(lifetime=3600)
    url = federation.origin_url(fresh(request))
    init(ws, tmp_path, {"path": url.replace("http://", "pelican://") if scheme == "pelican" else url,
                        "access_token": str(federation.token_file(tmp_path, token))})
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ws, capture_output=True,
                             text=True, check=True).stdout.split()
    assert ".cmfconfig" in tracked and ".dvc/config" in tracked
    for rel in tracked:
        assert token not in (ws / rel).read_text(errors="replace"), f"the token is in the tracked {rel}"
    if scheme == "http":  # the copy that lets plain `dvc push` authenticate, in a git-ignored 0600 file
        local = ws / ".dvc" / "config.local"
        assert token in local.read_text() and (local.stat().st_mode & 0o077) == 0
    else:  # DVC cannot address pelican:// at all: no copy anywhere
        assert not [p for p in ws.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert str(tmp_path / "token") in (ws / ".cmfconfig").read_text()


# -- reads through the cache ---------------------------------------------------------------------------


def test_the_cache_fills_from_the_origin_then_serves_alone(ws, tmp_path, federation, request, cmf):
    name = fresh(request)
    init(ws, tmp_path, {"path": federation.origin_url(name), "cache": federation.cache_url(name),
                        "access_token": str(federation.token_file(tmp_path))})
    ds = logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    for expected in ("miss", "hit"):
        ds.forget()
        federation.cache.clear_log()
        federation.front.clear_log()
        done = cmf("artifact", "pull", "-p", PIPELINE)
        assert done.code == 0, done.err
        ds.assert_in_place()
        gets = [r for r in federation.cache.requests() if r["method"] == "GET"]
        assert {r["cache"] for r in gets} == {expected}
        assert {str(r["path"]).split(f"/{name}/", 1)[1] for r in gets} >= set(ds.data_keys)
        origin_gets = [r for r in federation.front.requests() if r["method"] == "GET"]
        assert len(origin_gets) == (len(gets) if expected == "miss" else 0)  # the cache's own fills only


def test_a_cache_miss_falls_back_to_the_origin(ws, tmp_path, federation, request, cmf):
    """A cache that does not have the object (and cannot fetch it) answers 404: cmf reads the origin."""
    name = fresh(request)
    lonely = stand_in("cache", tmp_path / "lonely-cache", tokens=federation.tokens, public_key=federation.public_key,
                      issuer=ISSUER, namespace=NAMESPACE)
    try:
        init(ws, tmp_path, {"path": federation.origin_url(name), "cache": f"{lonely.url}{NAMESPACE}/{name}",
                            "access_token": str(federation.token_file(tmp_path))})
        ds = logged(ws)
        assert cmf("artifact", "push", "-p", PIPELINE).code == 0
        ds.forget()
        federation.front.clear_log()
        done = cmf("artifact", "pull", "-p", PIPELINE)
        assert done.code == 0, done.err
        ds.assert_in_place()
        assert {(r["cache"], r["status"]) for r in lonely.requests()} == {("miss", 404)}
        missed = sorted(r["path"] for r in lonely.requests())
        served = sorted(r["path"] for r in federation.front.requests() if r["method"] == "GET" and r["status"] == 200)
        assert served == missed and len(served) >= len(ds.data_keys)
    finally:
        lonely.stop()


@pytest.mark.parametrize("failure", ["unreachable", 503, 500])
def test_a_failing_cache_falls_back_to_the_origin(ws, tmp_path, federation, request, cmf, failure):
    name = fresh(request)
    cache_url = f"http://127.0.0.1:{free_port()}{NAMESPACE}/{name}" if failure == "unreachable" \
        else federation.cache_url(name)
    init(ws, tmp_path, {"path": federation.origin_url(name), "cache": cache_url,
                        "access_token": str(federation.token_file(tmp_path))})
    ds = logged(ws)
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    ds.forget()
    if failure != "unreachable":
        federation.cache.fail_with(failure)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            done = cmf("artifact", "pull", "-p", PIPELINE)
    finally:
        federation.cache.fail_with(None)
    assert done.code == 0, done.err
    ds.assert_in_place()
    unreachable = [str(w.message) for w in warned if "unreachable" in str(w.message)]
    assert len(unreachable) == (1 if failure == "unreachable" else 0), unreachable


# -- errors the engine retries, or not ------------------------------------------------------------------


def test_server_errors_are_transient_and_missing_keys_are_not_found(tmp_path, federation):
    from cmf_backends.osdf.store import OSDFStore
    from cmf_backends.osdf.tokens import TokenSource

    key = layout.key("0" * 32)
    broken = OSDFStore(federation.cache.url + NAMESPACE, [], TokenSource(federation.token(), "test"))
    down = OSDFStore(f"http://127.0.0.1:{free_port()}", [], TokenSource(None, "no token"))
    origin = OSDFStore(federation.origin_url("errors"), [], TokenSource(federation.token(), "test"))
    try:
        federation.cache.fail_with(503)
        with pytest.raises(TransientError, match="503"):
            broken.exists([key])
        with pytest.raises(TransientError, match="503"):
            broken.get(key, Sink())
        with pytest.raises(TransientError, match="127.0.0.1"):
            down.exists([key])
        with pytest.raises(ObjectNotFound, match=key):
            origin.get(key, Sink())
        assert origin.exists([key]) == set()
    finally:
        federation.cache.fail_with(None)
        for store in (broken, down, origin):
            store.close()


def test_an_upload_cut_short_leaves_no_object(federation):
    """XRootD's POSC (persist on successful close) drops a PUT whose body stopped short."""
    from cmf_backends.osdf.store import OSDFStore
    from cmf_backends.osdf.tokens import TokenSource

    key = layout.key("1" * 32)
    path = f"/cut/{key}"
    with socket.create_connection(("127.0.0.1", federation.xrootd.port)) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".encode() + b"x" * 50_000)
        time.sleep(0.3)
    store = OSDFStore(f"{federation.xrootd.url}/cut", [], TokenSource(None, "no token"))
    try:
        deadline = time.monotonic() + 5
        while store.exists([key]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.exists([key]) == set()
    finally:
        store.close()


# -- TLS, pelican://, DVC --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_front(federation, tls, tmp_path_factory) -> Iterator[PelicanStandIn]:
    cert, key, _ = tls
    server = stand_in("origin", tmp_path_factory.mktemp("https-front"), upstream=federation.xrootd.url,
                      tokens=federation.tokens, namespace=NAMESPACE, tls=(cert, key))
    try:
        yield server
    finally:
        server.stop()


def test_tls_is_verified_against_requests_ca_bundle(ws, tmp_path, federation, https_front, tls, request, cmf,
                                                    monkeypatch):
    init(ws, tmp_path, {"path": f"{https_front.url}{NAMESPACE}/{fresh(request)}",
                        "access_token": str(federation.token_file(tmp_path, "opaque-test-token-5b1e"))})
    ds = logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)  # the machine's bundle does not hold the test certificate
    assert done.code != 0
    line = one_error_line(done.err)
    assert f"TLS verification of {https_front.url} failed" in line and "REQUESTS_CA_BUNDLE" in line
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[2]))
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    ds.forget()
    assert cmf("artifact", "pull", "-p", PIPELINE).code == 0
    ds.assert_in_place()


def test_pelican_url_is_resolved_through_the_director(ws, tmp_path, federation, director, trust_test_ca, request,
                                                     cmf):
    name = fresh(request)
    netloc = director.url.split("://", 1)[1]
    init(ws, tmp_path, {"path": f"pelican://{netloc}{NAMESPACE}/{name}",
                        "access_token": str(federation.token_file(tmp_path))})
    assert not (ws / ".dvc" / "config").read_text().count("pelican://"), "DVC cannot address pelican:// URLs"
    ds = logged(ws)
    director.clear_log()
    federation.cache.clear_log()
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    ds.forget()
    assert cmf("artifact", "pull", "-p", PIPELINE).code == 0
    ds.assert_in_place()
    asked = [r["path"] for r in director.requests()]
    assert "/.well-known/pelican-configuration" in asked
    assert f"/api/v1.0/director/origin{NAMESPACE}/{name}" in asked and f"{NAMESPACE}/{name}" in asked
    assert federation.stored(name) == sorted(ds.all_keys)
    deadline = time.monotonic() + 10  # the stand-in logs a request after answering it: wait for the last lines
    while True:
        reads = {str(r["path"]).split(f"/{name}/", 1)[1] for r in federation.cache.requests() if r["method"] == "GET"}
        if reads >= set(ds.data_keys) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reads >= set(ds.data_keys), "reads go through the cache the director names"


def test_pelican_namespace_that_needs_a_token_is_refused_without_one(ws, tmp_path, director, trust_test_ca, cmf):
    netloc = director.url.split("://", 1)[1]
    init(ws, tmp_path, {"path": f"pelican://{netloc}{NAMESPACE}/x"})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0 and "requires a token" in one_error_line(done.err)


def test_pelican_path_outside_every_namespace_is_named(ws, tmp_path, federation, director, trust_test_ca, cmf):
    netloc = director.url.split("://", 1)[1]
    init(ws, tmp_path, {"path": f"pelican://{netloc}/nowhere/x",
                        "access_token": str(federation.token_file(tmp_path))})
    logged(ws)
    done = cmf("artifact", "push", "-p", PIPELINE)
    assert done.code != 0
    line = one_error_line(done.err)
    assert netloc in line and "/nowhere/x" in line


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_dvc_and_cmf_share_the_origin(ws, tmp_path, federation, request, cmf):
    """`dvc push` authenticates with the token copy in .dvc/config.local; cmf pulls what it pushed, and back."""
    name = fresh(request)
    init(ws, tmp_path, {"path": federation.origin_url(name), "access_token": str(federation.token_file(tmp_path))})
    ds = logged(ws)
    dvc("push", cwd=ws)
    assert set(ds.data_keys) <= set(federation.stored(name))
    ds.forget()
    done = cmf("artifact", "pull", "-p", PIPELINE)
    assert done.code == 0, done.err
    ds.assert_in_place()
    extra = Dataset.write(ws, {"more/x.bin": os.urandom(5000)}, ["more/x.bin"])
    BackendConformance.log("more/x.bin")
    assert cmf("artifact", "push", "-p", PIPELINE).code == 0
    (ws / "more" / "x.bin").unlink()
    shutil.rmtree(ws / ".dvc" / "cache")
    dvc("pull", cwd=ws)
    assert (ws / "more" / "x.bin").read_bytes() == extra.files["more/x.bin"]


# -- memory: a large pull streams --------------------------------------------------------------------


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, time
    from cmf_core import api
    started = time.monotonic()
    result = api.artifact_pull("conformance", progress=False)
    seconds = time.monotonic() - started
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ok": result.ok, "failed": result.failed, "bytes": result.bytes, "seconds": seconds,
                      "vmhwm_mb": hwm / 1024, "ru_maxrss_mb": maxrss / 1024}))
""")


def test_a_large_pull_streams_in_bounded_memory(ws, tmp_path, xrootd, request):
    """Pull an object of CMF_OSDF_RSS_MB MiB (default 256) from XRootD in a fresh process: peak RSS < 200 MB.

    The peak is the child's VmHWM: Linux carries ``ru_maxrss`` over from the parent at fork and
    exec, so in a child of this (large) pytest process getrusage reports at least pytest's size.
    """
    size_mb = int(os.environ.get("CMF_OSDF_RSS_MB", "256"))
    name = fresh(request)
    init(ws, tmp_path, {"path": f"{xrootd.url}/rss/{name}"})
    big = ws / "big.bin"
    with open(big, "wb") as out:
        block = os.urandom(1 << 20)
        for i in range(size_mb):
            out.write(block[:-8] + i.to_bytes(8, "big"))
    BackendConformance.log("big.bin")
    assert api.artifact_push(PIPELINE).ok
    big.unlink()
    shutil.rmtree(ws / ".dvc" / "cache")
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT], cwd=ws, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"pulled {size_mb} MiB in {report['seconds']:.2f} s, peak RSS (VmHWM) {report['vmhwm_mb']:.0f} MB")
    assert report["ok"], report["failed"]
    assert report["bytes"] == size_mb << 20
    assert report["vmhwm_mb"] < 200
    assert big.stat().st_size == size_mb << 20
