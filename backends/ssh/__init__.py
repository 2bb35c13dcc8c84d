"""``cmf init sshremote``: a directory on an SSH host, through paramiko's SFTP."""
from __future__ import annotations

from typing import Dict

from cmf_core import checks
from cmf_core.backend import Backend
from cmf_core.errors import ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, Remote

TYPE = "sshremote"
SPEC = BackendSpec(
    type=TYPE,
    description="a directory on an SSH host (paramiko SFTP)",
    options=(
        InitOption("path", "remote directory, e.g. ssh://host[:port]/abs/dir", required=True, metavar="SSH_URL"),
        InitOption("user", "login name on the host (or give it as ssh://user@host/...)"),
        InitOption("port", "SSH port (default: the one in --path, else 22)", type=int),
        InitOption("password", "password; prefer --key-file or an ssh-agent key", secret=True),
        InitOption("key_file", "private key file, e.g. ~/.ssh/id_ed25519", metavar="FILE"),
    ),
    requires=("paramiko",),
    install_hint="pip install 'cmf-ml[ssh]'",
)


class SSHBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
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
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
        return Remote(type=TYPE, name="ssh-storage", url=f"ssh://{host}{parts.path.rstrip('/')}",
                      options=public, secrets=secrets)


plugin = SSHBackend()
