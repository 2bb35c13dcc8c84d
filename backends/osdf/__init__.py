"""``cmf init osdfremote``: an OSDF/Pelican origin over HTTPS, with bearer tokens."""
from __future__ import annotations

from typing import Dict

from cmf_core import checks
from cmf_core.backend import Backend
from cmf_core.errors import ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, Remote

TYPE = "osdfremote"
SPEC = BackendSpec(
    type=TYPE,
    description="an Open Science Data Federation / Pelican origin over HTTPS (bearer tokens)",
    options=(
        InitOption("path", "origin URL including namespace path, e.g. https://origin.example.org:8443/ns/dir",
                   required=True, metavar="URL"),
        InitOption("cache", "cache URL to read through, e.g. https://osdf-director.osg-htc.org/ns/dir",
                   metavar="URL"),
        InitOption("access_token", "file holding a bearer token", metavar="FILE"),
        InitOption("key_id", "id of the signing key, to mint a SciToken per run (with --key-path, --key-issuer)"),
        InitOption("key_path", "private key (PEM) that signs the tokens", metavar="FILE"),
        InitOption("key_issuer", "token issuer URL, e.g. https://issuer.example.org", metavar="URL"),
    ),
    requires=("requests",),
    install_hint="pip install 'cmf-ml[osdf]'",
)
_HTTP = ("http", "https")


class OSDFBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        origin = checks.url(str(options["path"]), "path", (*_HTTP, "pelican"), "https://origin.example.org/ns/dir")
        settings: Dict[str, str] = {}
        if options["cache"]:
            settings["cache"] = checks.url(str(options["cache"]), "cache", _HTTP, "https://cache.example.org/ns").geturl()
        keyed = checks.all_or_none({k: options[k] for k in ("key_id", "key_path", "key_issuer")})
        secrets: Dict[str, str] = {}
        if keyed and options["access_token"]:
            raise ConfigError("give either --access-token or --key-id/--key-path/--key-issuer, not both")
        if keyed:
            settings["key_id"] = str(options["key_id"])
            settings["key_path"] = str(checks.readable_file(str(options["key_path"]), "key_path"))
            settings["key_issuer"] = checks.url(str(options["key_issuer"]), "key_issuer", _HTTP,
                                                "https://issuer.example.org").geturl()
        if options["access_token"]:
            token_file = checks.readable_file(str(options["access_token"]), "access_token")
            token = token_file.read_text(encoding="utf-8").strip()
            if not token or any(c.isspace() for c in token):
                raise ConfigError(f"--access-token {options['access_token']!r} does not hold a single token")
            settings["access_token"] = str(token_file)
            secrets["password"] = f"Bearer {token}"  # lets plain `dvc push` authenticate until the token expires
        if origin.scheme == "pelican":  # DVC cannot address a federation URL: cmf keeps the whole config
            return Remote(type=TYPE, name="osdf", url=origin.geturl(), settings=settings, secrets=secrets, dvc=False)
        http_put = {"method": "PUT", "auth": "custom", "custom_auth_header": "Authorization"}
        return Remote(type=TYPE, name="osdf", url=origin.geturl().rstrip("/"), options=http_put,
                      settings=settings, secrets=secrets)


plugin = OSDFBackend()
