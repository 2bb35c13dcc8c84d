"""Host keys of sshremote: fingerprints, the refusal messages, and ``--trust-host-key``.

Connections verify the server against a ``known_hosts`` file with paramiko's
:class:`~paramiko.RejectPolicy` (extended to keep the offered key, so the
message can show it) and :class:`~paramiko.BadHostKeyException` for a changed
key.  Entries for a port other than 22 are named ``[host]:port``, as OpenSSH
writes them.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path
from typing import Optional

import paramiko

from cmf_core.errors import BackendError, TransientError

TIMEOUT = 30.0  # seconds to connect and read the host key


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...``: the fingerprint ``ssh-keygen -l`` and ``ssh`` print."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How ``known_hosts`` names a host: ``host``, or ``[host]:port`` when the port is not 22."""
    return host if port == 22 else f"[{host}]:{port}"


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in the known_hosts file; carries the key."""

    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(f"{name} is not a known host")
        self.name, self.key = name, key


class RefusePolicy(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising an error that keeps the key so the message can show it."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


def unknown_host_message(name: str, host: str, port: int, key: paramiko.PKey, known_hosts: Path) -> str:
    scan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
    return (f"host key of {name} is not known: {key.get_name()} {fingerprint(key)} is not in {known_hosts}; "
            f"if that fingerprint is right, trust it with '{scan} >> {known_hosts}' "
            f"or 'cmf init sshremote ... --trust-host-key'")


def changed_host_key_message(name: str, got: paramiko.PKey, expected: paramiko.PKey, known_hosts: Path) -> str:
    return (f"REFUSED: the host key of {name} has CHANGED (it may be an attack, or the server was reinstalled): "
            f"the server offers {got.get_name()} {fingerprint(got)} but {known_hosts} has "
            f"{expected.get_name()} {fingerprint(expected)}; if the change is expected, remove the old line with "
            f"'ssh-keygen -R \"{name}\" -f {known_hosts}' and trust the new key")


def fetch_host_key(host: str, port: int, prefer: Optional[str] = None) -> paramiko.PKey:
    """Connect to ``host:port`` only to read the key it offers (no login): for ``--trust-host-key``.

    ``prefer`` is a key type to ask for first (the one already in known_hosts), as paramiko's client does.
    """
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            transport = paramiko.Transport(sock)
            try:
                if prefer:
                    wanted = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if prefer == "ssh-rsa" else (prefer,)
                    options = transport.get_security_options()
                    options.key_types = sorted(options.key_types, key=lambda kind: kind not in wanted)
                transport.start_client(timeout=TIMEOUT)
                return transport.get_remote_server_key()
            finally:
                transport.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransientError(f"cannot read the host key of {host}:{port}: {exc or type(exc).__name__}") from None


def trust_host_key(host: str, port: int, known_hosts: Path) -> str:
    """Add the key ``host:port`` offers to ``known_hosts`` (created 0600) unless it is there; say what was done.

    A known host that now offers a different key of the same type is refused.
    """
    name = known_hosts_name(host, port)
    known = paramiko.HostKeys()
    if known_hosts.is_file():
        known.load(str(known_hosts))
    entry = known.lookup(name) or {}
    key = fetch_host_key(host, port, prefer=next(iter(entry.keys()), None))
    old = entry.get(key.get_name())
    if old is not None and old == key:
        return f"the {key.get_name()} host key of {name} ({fingerprint(key)}) is already trusted in {known_hosts}"
    if old is not None:
        raise BackendError(changed_host_key_message(name, key, old, known_hosts))
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = known_hosts.read_bytes() if known_hosts.is_file() else b""
    separator = "\n" if text and not text.endswith(b"\n") else ""
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="ascii") as out:
        out.write(f"{separator}{name} {key.get_name()} {key.get_base64()}\n")
    return f"trusted the {key.get_name()} host key of {name} ({fingerprint(key)}): added it to {known_hosts}"
