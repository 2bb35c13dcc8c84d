"""``cmf init sshremote``: a directory on an SSH host, through paramiko's SFTP.

Host keys are always verified, against ``~/.ssh/known_hosts`` or the file of
``--known-hosts``; an unknown or changed key is refused (see :mod:`.store`).
The password is a secret (``.dvc/config.local``); ``--key-file`` is DVC's
``keyfile``; with neither, an ssh-agent key or a default key (``~/.ssh/id_*``)
is used, as ``ssh`` and DVC do.

Plain ``dvc push``/``dvc pull`` use the same remote (url, ``user``, ``port``,
``keyfile``, ``password``) but check no host key: dvc-ssh goes through sshfs,
which connects with asyncssh's ``known_hosts=None``, and no DVC option changes that.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import urlsplit

from cmf_core import checks
from cmf_core.backend import Backend
from cmf_core.errors import BackendError, ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "sshremote"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SPEC = BackendSpec(
    type=TYPE,
    description="a directory on an SSH host (paramiko SFTP)",
    options=(
        InitOption("path", "remote directory, e.g. ssh://host[:port]/abs/dir", required=True, metavar="SSH_URL"),
        InitOption("user", "login name on the host (or give it as ssh://user@host/...)"),
        InitOption("port", "SSH port (default: the one in --path, else 22)", type=int),
        InitOption("password", "password; prefer --key-file or an ssh-agent key", secret=True),
        InitOption("key_file", "private key file, e.g. ~/.ssh/id_ed25519", metavar="FILE"),
        InitOption("known_hosts", f"known_hosts file that verifies the host key (default {DEFAULT_KNOWN_HOSTS})",
                   metavar="FILE"),
        InitOption("trust_host_key", "connect now and add the host's key to the known_hosts file "
                   "(check the fingerprint it prints!)", is_flag=True),
    ),
    requires=("paramiko",),
    install_hint="pip install 'cmf-ml[ssh]'",
    jobs=4,
)


def known_hosts_file(value: Optional[str]) -> Path:
    """The known_hosts file in use: the stored setting, else ``~/.ssh/known_hosts`` of the current HOME."""
    return Path(os.path.expanduser(value or DEFAULT_KNOWN_HOSTS))


def _expand(path: Optional[str]) -> Optional[str]:
    return os.path.expanduser(path) if path else None


class SSHBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        """Validate the options; contacts the host only for ``--trust-host-key``.

        That flag is the one exception to "configure must not contact the
        network": the user asked for it explicitly.  It connects (no login),
        reads the host key, appends it to the known_hosts file in use (created
        0600) and returns a note naming the key's SHA256 fingerprint, which
        ``cmf init`` prints.  A changed key is refused.
        """
        parts = checks.url(str(options["path"]), "path", ("ssh",), "ssh://host[:port]/abs/dir")
        if not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError("--path needs an absolute remote directory after the host, e.g. ssh://host/data/cmf")
        user = options["user"] or parts.username
        if not user:
            raise ConfigError("missing option --user (or give it as ssh://user@host/...)")
        if options["port"] and parts.port and options["port"] != parts.port:
            raise ConfigError(f"--port {options['port']} contradicts the port {parts.port} in --path")
        port = options["port"] or parts.port or 22
        if not 0 < port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, not {port}")
        public = {"user": str(user), "port": str(port)}
        if options["key_file"]:
            public["keyfile"] = str(checks.readable_file(str(options["key_file"]), "key_file"))
        secrets = {"password": str(options["password"])} if options["password"] else {}
        settings: Dict[str, str] = {}
        notes = []
        known_hosts = known_hosts_file(str(options["known_hosts"]) if options["known_hosts"] else None)
        if options["known_hosts"]:
            known_hosts = known_hosts.absolute()
            if not options["trust_host_key"]:
                known_hosts = checks.readable_file(str(known_hosts), "known_hosts")
            settings["known_hosts"] = str(known_hosts)
        if options["trust_host_key"]:
            from .hostkeys import trust_host_key

            try:
                notice = trust_host_key(parts.hostname, port, known_hosts)
            except BackendError as exc:
                raise ConfigError(f"--trust-host-key: {exc}") from None
            notes.append(notice)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
        return Remote(type=TYPE, name="ssh-storage", url=f"ssh://{host}{parts.path.rstrip('/')}",
                      options=public, secrets=secrets, settings=settings, notes=notes)

    def open(self, remote: Remote) -> ObjectStore:
        from .store import SFTPStore  # imports paramiko: only when transfers start

        parts = urlsplit(remote.url)
        if parts.scheme != "ssh" or not parts.hostname or not parts.path.startswith("/"):
            raise ConfigError(f"stored sshremote url {remote.url!r} is not ssh://host/abs/dir; re-run cmf init")
        user = remote.options.get("user") or parts.username
        if not user:
            raise ConfigError("the stored sshremote config has no user; re-run cmf init sshremote --user ...")
        try:
            port = int(remote.options.get("port") or parts.port or 22)
        except ValueError:
            raise ConfigError(f"stored sshremote port {remote.options.get('port')!r} is not a number") from None
        return SFTPStore(parts.hostname, port, str(user), parts.path,
                         known_hosts_file(remote.settings.get("known_hosts")),
                         password=remote.secrets.get("password"), key_file=_expand(remote.options.get("keyfile")),
                         passphrase=remote.secrets.get("passphrase"))


plugin = SSHBackend()
