"""OSDF/Pelican test servers on loopback, started and stopped by PID.

No Pelican origin, cache or director is obtainable here, so tests assemble one from parts:

* :class:`XRootDOrigin` -- Debian's ``xrootd`` (the data server under real Pelican origins)
  serving a directory over plain HTTP (XrdHttp: GET, HEAD, PUT creating folders, PROPFIND).
  POSC is on (``ofs.persist auto``): an upload cut short leaves no object behind, and a file
  still being written is refused to readers (423).  Debian's build has no token plugin
  (``libXrdAccSciTokens``), so XRootD itself accepts any request;
* :class:`PelicanStandIn` -- a small stdlib HTTP server (this module, run as a script) in one of
  three roles, every data request of which needs ``Authorization: Bearer <token>``:

  - ``origin``: the token-checking front of an XRootD origin (what Pelican's origin adds to
    XRootD), proxying GET/HEAD/PUT/PROPFIND to it, streamed;
  - ``cache``: answers GET/HEAD from its own directory; on a miss it fetches the object from
    its upstream (forwarding the client's token), keeps it, and serves it; without an
    upstream a miss is a 404.  A file ``.fail`` in its directory holding a status code makes
    it answer every data request with that status;
  - ``director``: federation discovery (``/.well-known/pelican-configuration``), the origin
    redirect (``/api/v1.0/director/origin/<path>``) and object redirects (``/<path>`` -> 307
    to the first cache, ``Link`` listing the caches) with ``X-Pelican-Namespace``.

  A token is accepted if it is listed in the ``tokens`` file (re-read per request), or if it
  is a JWT whose signature verifies with the ``public_key`` (ES256/RS256), issued by
  ``issuer``, not expired, and whose ``scope`` grants ``read`` (GET/HEAD/PROPFIND) or
  ``create``/``modify`` (PUT) on the path relative to the namespace.  401 otherwise (403 for
  a valid token whose scope does not cover the path).  Every request is appended to a
  JSON-lines log (:meth:`PelicanStandIn.requests`).

Helpers make a self-signed TLS certificate, a CA bundle that trusts it, and signing keys.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import pwd
import shutil
import ssl
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from cmf_core.testing.servers import Server, free_port

CHUNK = 1 << 20

# -- XRootD ---------------------------------------------------------------------------------------


class XRootDOrigin(Server):
    """``xrootd`` serving ``self.data`` over HTTP on a free loopback port, in the foreground, stopped by PID.

    XRootD refuses to run as root: as root it drops to the ``xrootd`` user (``-R``), so its
    files live in a directory of their own under the system temp dir (pytest's are 0700
    root), removed by :meth:`cleanup`.
    """

    def __init__(self, log_dir: Optional[Path] = None) -> None:
        binary = shutil.which("xrootd") or "/usr/sbin/xrootd"
        if not os.path.exists(binary):
            raise RuntimeError("xrootd not found: apt-get install xrootd-server (Debian)")
        self.home = Path(tempfile.mkdtemp(prefix="cmf-xrootd-"))
        self.data = self.home / "data"
        for sub in ("data", "admin", "run"):
            (self.home / sub).mkdir()
        port, xroot_port = free_port(), free_port()
        config = self.home / "xrootd.cfg"
        config.write_text("\n".join([
            "all.export /",
            f"oss.localroot {self.data}",
            f"all.adminpath {self.home / 'admin'}",
            f"all.pidpath {self.home / 'run'}",
            f"xrd.port {xroot_port}",
            f"xrd.protocol XrdHttp:{port} libXrdHttp.so",
            "ofs.persist auto hold 0",
            "",
        ]))
        argv = [binary, "-c", str(config), "-n", "cmf"]
        if os.geteuid() == 0:
            user = "xrootd" if _user_exists("xrootd") else "nobody"
            argv += ["-R", user]
            entry = pwd.getpwnam(user)
            for path in [self.home, *self.home.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        super().__init__(argv, port, (log_dir or self.home) / "xrootd.log")
        self.url = f"http://127.0.0.1:{port}"

    def cleanup(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# -- the stand-in: origin front, cache, director -------------------------------------------------------


class PelicanStandIn(Server):
    """This module run as a server in one ``role`` (``origin``, ``cache`` or ``director``); see the module doc."""

    def __init__(self, role: str, home: Path, *, upstream: Optional[str] = None, tokens: Optional[Path] = None,
                 public_key: Optional[Path] = None, issuer: Optional[str] = None, namespace: str = "/",
                 origin: Optional[str] = None, caches: Sequence[str] = (), require_token: bool = True,
                 tls: Optional[Tuple[Path, Path]] = None) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.data = home / "data"
        self.data.mkdir(exist_ok=True)
        self.log_file = home / "requests.jsonl"
        port = free_port()
        argv = [sys.executable, __file__, role, "--port", str(port), "--data", str(self.data),
                "--log", str(self.log_file), "--namespace", namespace]
        for flag, value in (("--upstream", upstream), ("--tokens", tokens), ("--public-key", public_key),
                            ("--issuer", issuer), ("--origin", origin)):
            if value is not None:
                argv += [flag, str(value)]
        for cache in caches:
            argv += ["--cache", cache]
        if not require_token:
            argv.append("--no-token")
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        super().__init__(argv, port, home / "server.log")
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def requests(self) -> List[Dict[str, object]]:
        """Every request served so far: ``{"method", "path", "status", "auth", "cache"}``."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def clear_log(self) -> None:
        self.log_file.write_text("")

    def fail_with(self, status: Optional[int]) -> None:
        """Make a cache answer every data request with ``status`` (``None``: serve again)."""
        marker = self.data / ".fail"
        if status is None:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(str(status))


# -- keys, certificates, tokens for tests -------------------------------------------------------------


def signing_key(folder: Path, kind: str = "ec", name: str = "signing") -> Tuple[Path, Path]:
    """A new unencrypted private key (``ec``: P-256, ``rsa``: 2048 bits) and its public key, as PEM files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def jwt_token(private_key: Path, issuer: str, scope: str = "read:/ create:/ modify:/", lifetime: int = 900,
              **claims: object) -> str:
    """A JWT signed with ``private_key``; a negative ``lifetime`` gives an already expired token."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_key.read_bytes(), password=None)
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    payload = {"iss": issuer, "scope": scope, "sub": "test", "iat": now - 60 if lifetime < 0 else now,
               "exp": now + lifetime, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, key, algorithm="ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256")


def self_signed(folder: Path, names: Sequence[str] = ("127.0.0.1", "localhost")) -> Tuple[Path, Path]:
    """A self-signed TLS certificate (and its key) valid for ``names`` (IP addresses or host names)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cmf test server")])
    alt: List[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def ca_bundle(folder: Path, cert: Path) -> Path:
    """The system CA bundle plus ``cert``: what REQUESTS_CA_BUNDLE / SSL_CERT_FILE should point at."""
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    bundle = folder / "ca-bundle.pem"
    text = Path(system).read_text() if os.path.exists(system) else ""
    bundle.write_text(text + "\n" + cert.read_text())
    return bundle


# -- the server side (runs in its own process) ----------------------------------------------------------


class _StandIn(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", args.port), _Handler)
        self.args = args
        self.data = Path(args.data)
        self.namespace = "/" + args.namespace.strip("/")
        self.log_lock = threading.Lock()
        self.public_key = Path(args.public_key).read_bytes() if args.public_key else None
        if args.tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args.tls_cert, args.tls_key)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.base = f"{'https' if args.tls_cert else 'http'}://127.0.0.1:{args.port}"

    def record(self, **entry: object) -> None:
        line = json.dumps({"role": self.args.role, **entry}) + "\n"
        with self.log_lock, open(self.args.log, "a") as out:
            out.write(line)

    def verdict(self, header: Optional[str], method: str, path: str) -> Tuple[int, str]:
        """``(0, how)`` if the bearer token allows ``method`` on ``path``, else ``(status, why)``."""
        if self.args.no_token:
            return 0, "none needed"
        if not header or not header.lower().startswith("bearer "):
            return 401, "no bearer token"
        token = header[len("bearer "):].strip()
        if self.args.tokens and token in Path(self.args.tokens).read_text().split():
            return 0, "listed"
        if self.public_key is None:
            return 401, "unknown token"
        import jwt

        try:
            claims = jwt.decode(token, self.public_key, algorithms=["ES256", "RS256"], issuer=self.args.issuer,
                                options={"verify_aud": False, "require": ["exp", "iss"]})
        except jwt.ExpiredSignatureError:
            return 401, "token expired"
        except jwt.PyJWTError as exc:
            return 401, f"token rejected: {exc}"
        wanted = {"read"} if method in ("GET", "HEAD", "PROPFIND") else {"create", "modify"}
        relative = "/" + path[len(self.namespace):].lstrip("/") if path.startswith(self.namespace) else None
        if relative is None:
            return 403, f"{path} is outside the namespace {self.namespace}"
        for scope in str(claims.get("scope", "")).split():
            operation, _, allowed = scope.partition(":")
            allowed = "/" + allowed.strip("/")
            if operation in wanted and (allowed == "/" or relative == allowed or relative.startswith(allowed + "/")):
                return 0, "jwt"
        return 403, f"scope {claims.get('scope')!r} does not allow {method} on {relative}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as real origins set it: else each small answer waits ~40 ms
    server: _StandIn
    upstream: Optional[http.client.HTTPConnection] = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the JSON log replaces it
        pass

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_HEAD(self) -> None:
        self.dispatch("HEAD")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PROPFIND(self) -> None:
        self.dispatch("PROPFIND")

    # -- plumbing --------------------------------------------------------------------------------

    def dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        entry: Dict[str, object] = {"method": method, "path": path}
        try:
            status = getattr(self, f"as_{self.server.args.role}")(method, path, entry)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            status = 499
        entry["status"] = status
        self.server.record(**entry)

    def reply(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> int:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        return status

    def body(self) -> Iterator[bytes]:
        """The request body in pieces, from a Content-Length or chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return
                yield from self._read(size)
                self.rfile.readline()
        yield from self._read(int(self.headers.get("Content-Length") or 0))

    def _read(self, size: int) -> Iterator[bytes]:
        while size > 0:
            chunk = self.rfile.read(min(CHUNK, size))
            if not chunk:
                raise ConnectionResetError("the client closed the connection in the middle of the body")
            size -= len(chunk)
            yield chunk

    def drain(self) -> None:
        """Read and drop a request body we do not use, so the connection stays usable."""
        for _ in self.body():
            pass

    def refused(self, method: str, path: str, entry: Dict[str, object]) -> int:
        """0 if the request's bearer token allows it; else the status of the refusal, already sent."""
        status, why = self.server.verdict(self.headers.get("Authorization"), method, path)
        entry["auth"] = why
        if status:
            self.drain()
            self.reply(status, why.encode(), {"WWW-Authenticate": 'Bearer realm="cmf-test"'})
        return status

    def local_path(self, path: str) -> Optional[Path]:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None
        return self.server.data.joinpath(*parts) if parts else None

    def connection_to(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, parts.port, timeout=60, context=ssl.create_default_context())
        return http.client.HTTPConnection(host, parts.port, timeout=60)

    def send_stream(self, status: int, response: http.client.HTTPResponse, method: str) -> int:
        """Relay an upstream response (status, size, type) and stream its body."""
        self.send_response(status)
        for name in ("Content-Length", "Content-Type", "Content-Range", "Last-Modified", "ETag"):
            value = response.getheader(name)
            if value:
                self.send_header(name, value)
        if response.getheader("Content-Length") is None:
            self.send_header("Content-Length", "0")
            self.close_connection = True
        self.end_headers()
        if method != "HEAD":
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
        else:
            response.read()
        return status

    # -- role: origin (token-checking front of XRootD) ------------------------------------------------

    def as_origin(self, method: str, path: str, entry: Dict[str, object]) -> int:
        refused = self.refused(method, path, entry)
        if refused:
            return refused
        if self.upstream is None:
            self.upstream = self.connection_to(self.server.args.upstream)
        try:
            response = self.forward(method)
        except (OSError, http.client.HTTPException) as exc:
            self.upstream.close()
            self.upstream = None
            self.close_connection = True
            return self.reply(502, f"upstream failed: {exc}".encode())
        return self.send_stream(response.status, response, method)

    def forward(self, method: str) -> http.client.HTTPResponse:
        conn = self.upstream
        assert conn is not None
        headers = {name: self.headers[name] for name in ("Content-Length", "Content-Type", "Depth", "Range")
                   if self.headers.get(name) is not None}
        pieces: Iterable[bytes] = self.body()  # raises if the client goes away: the upstream upload is then dropped
        spool = None
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # XRootD 5.5 fails chunked uploads whose last chunk arrives in a later read (400 "Invalid chunked
            # encoding", or a reset): spool the body to disk and send it with its length
            spool = tempfile.TemporaryFile()
            for piece in pieces:
                spool.write(piece)
            headers["Content-Length"] = str(spool.tell())
            spool.seek(0)
            pieces = iter(lambda: spool.read(CHUNK), b"")
        conn.putrequest(method, self.path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for piece in pieces:
                conn.send(piece)
        finally:
            if spool is not None:
                spool.close()
        return conn.getresponse()

    # -- role: cache -----------------------------------------------------------------------------------

    def as_cache(self, method: str, path: str, entry: Dict[str, object]) -> int:
        if method not in ("GET", "HEAD"):
            self.drain()
            return self.reply(405, b"a cache is read-only")
        failing = self.server.data / ".fail"
        if failing.exists():
            return self.reply(int(failing.read_text()), b"injected cache failure")
        refused = self.refused(method, path, entry)
        if refused:
            return refused
        local = self.local_path(path)
        if local is None:
            return self.reply(400, b"bad path")
        if local.is_file():
            entry["cache"] = "hit"
            return self.send_file(local, method)
        entry["cache"] = "miss"
        if not self.server.args.upstream:
            return self.reply(404, b"not cached and no upstream")
        conn = self.connection_to(self.server.args.upstream)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.fill")
        try:
            headers = {"Authorization": self.headers.get("Authorization", "")}
            conn.request(method, self.path, headers=headers)
            response = conn.getresponse()
            if method == "HEAD" or response.status != 200:  # HEADs and failures are passed on, not cached
                return self.send_stream(response.status, response, method)
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
            os.replace(tmp, local)
        except (OSError, http.client.HTTPException) as exc:
            tmp.unlink(missing_ok=True)
            return self.reply(502, f"upstream failed: {exc}".encode())
        finally:
            conn.close()
        return self.send_file(local, method)

    def send_file(self, local: Path, method: str) -> int:
        size = local.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if method == "GET":
            with open(local, "rb") as src:
                shutil.copyfileobj(src, self.wfile, CHUNK)
        return 200

    # -- role: director ----------------------------------------------------------------------------------

    def as_director(self, method: str, path: str, entry: Dict[str, object]) -> int:
        args = self.server.args
        if path == "/.well-known/pelican-configuration":
            body = {"director_endpoint": self.server.base, "namespace_registration_endpoint": self.server.base,
                    "jwks_uri": f"{self.server.base}/.well-known/issuer.jwks"}
            return self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        prefix = "/api/v1.0/director/origin"
        to_origin = path.startswith(prefix + "/")
        wanted = path[len(prefix):] if to_origin else path
        namespace = self.server.namespace
        if not (wanted == namespace or wanted.startswith(namespace.rstrip("/") + "/")):
            return self.reply(404, f"no namespace serves {wanted}".encode())
        servers = [args.origin] if to_origin or not args.cache else args.cache
        located = [s.rstrip("/") + wanted for s in servers]
        links = ", ".join(f'<{url}>; rel="duplicate"; pri={i + 1}; depth=1' for i, url in enumerate(located))
        namespace_header = (f"namespace={namespace}, require-token={'false' if args.no_token else 'true'}, "
                            f"collections-url={args.origin}")
        return self.reply(307, b"", {"Location": located[0], "Link": links, "X-Pelican-Namespace": namespace_header})


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run one stand-in server until it is killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("origin", "cache", "director"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--namespace", default="/")
    parser.add_argument("--upstream")
    parser.add_argument("--tokens")
    parser.add_argument("--public-key")
    parser.add_argument("--issuer")
    parser.add_argument("--origin")
    parser.add_argument("--cache", action="append", default=[])
    parser.add_argument("--no-token", action="store_true")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    server = _StandIn(parser.parse_args(argv))
    server.serve_forever()


if __name__ == "__main__":
    main()
