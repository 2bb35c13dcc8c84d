"""``cmf init osdfremote``: an OSDF/Pelican origin over HTTP(S), with bearer tokens.

``--path`` is either the origin's URL for the remote's directory (``https://origin:8443/ns/dir``)
or a federation URL (``pelican://federation.example.org/ns/dir``), which is resolved when the
remote opens: pelicanfs discovers the federation's director, which names the origin and the
caches of the namespace.  Objects are PUT to the origin; reads go through ``--cache`` (or the
director's caches) and fall back to the origin.  See :mod:`.store` and :mod:`.tokens`.
"""
from __future__ import annotations

from typing import Dict

from cmf_core import checks
from cmf_core.backend import Backend
from cmf_core.errors import BackendError, ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "osdfremote"
SPEC = BackendSpec(
    type=TYPE,
    description="an Open Science Data Federation / Pelican origin over HTTPS (bearer tokens)",
    options=(
        InitOption("path", "origin URL including namespace path, e.g. https://origin.example.org:8443/ns/dir",
                   required=True, metavar="URL"),
        InitOption("cache", "cache URL to read through, e.g. https://osdf-director.osg-htc.org/ns/dir",
                   metavar="URL"),
        InitOption("access_token", "file holding a bearer token (re-read at every push/pull; "
                   "CMF_OSDF_TOKEN overrides it)", metavar="FILE"),
        InitOption("key_id", "id of the signing key, to mint a SciToken per run (with --key-path, --key-issuer)"),
        InitOption("key_path", "private key (PEM) that signs the tokens", metavar="FILE"),
        InitOption("key_issuer", "token issuer URL, e.g. https://issuer.example.org", metavar="URL"),
    ),
    requires=("requests",),
    install_hint="pip install 'cmf-ml[osdf]'",
    jobs=8,
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
            from .tokens import expired, read_token_file

            token_file = checks.readable_file(str(options["access_token"]), "access_token")
            try:
                token = read_token_file(str(token_file), "--access-token")
            except BackendError as exc:
                raise ConfigError(str(exc)) from None
            ended = expired(token)
            if ended:
                raise ConfigError(f"--access-token {options['access_token']!r} holds a token that {ended}")
            settings["access_token"] = str(token_file)
            if origin.scheme != "pelican":  # a git-ignored copy lets plain `dvc push` authenticate until it expires
                secrets["password"] = f"Bearer {token}"
        if origin.scheme == "pelican":  # DVC cannot address a federation URL: cmf keeps the whole config
            return Remote(type=TYPE, name="osdf", url=origin.geturl(), settings=settings, secrets=secrets, dvc=False)
        http_put = {"method": "PUT", "auth": "custom", "custom_auth_header": "Authorization"}
        return Remote(type=TYPE, name="osdf", url=origin.geturl().rstrip("/"), options=http_put,
                      settings=settings, secrets=secrets)

    def open(self, remote: Remote) -> ObjectStore:
        """Resolve a pelican:// remote through its director, read the token, open the HTTP session.

        The token is read (and an expired one refused) before any request is sent.
        """
        from .store import OSDFStore, resolve_pelican
        from .tokens import TokenSource

        tokens = TokenSource.for_settings(remote.settings)
        caches = [remote.settings["cache"]] if remote.settings.get("cache") else []
        origin = remote.url
        if remote.url.startswith("pelican://"):
            origin, listed, namespace = resolve_pelican(remote.url)
            if namespace["require_token"] and not tokens.present:
                raise BackendError(f"namespace {namespace['namespace']} of {remote.url} requires a token; "
                                   "give one with --access-token, CMF_OSDF_TOKEN or --key-id/--key-path/--key-issuer")
            caches = caches or listed
        return OSDFStore(origin, caches, tokens)


plugin = OSDFBackend()
