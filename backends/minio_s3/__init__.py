"""``cmf init minioS3``: an S3 bucket on a MinIO (or any S3-compatible) server, through the minio SDK."""
from __future__ import annotations

from typing import Dict

from cmf_core import checks, s3
from cmf_core.backend import Backend
from cmf_core.errors import ConfigError
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "minioS3"
SPEC = BackendSpec(
    type=TYPE,
    description="a bucket on a MinIO or other S3-compatible server (minio SDK)",
    options=(
        InitOption("url", "bucket and optional prefix, e.g. s3://bucket/prefix", required=True, metavar="S3_URL"),
        InitOption("endpoint_url", "server endpoint, e.g. https://minio.example.org:9000", required=True,
                   metavar="URL"),
        InitOption("access_key_id", "access key; without it AWS_ACCESS_KEY_ID (or MINIO_ACCESS_KEY) is used "
                   "at run time", secret=True),
        InitOption("secret_key", "secret key; without it AWS_SECRET_ACCESS_KEY (or MINIO_SECRET_KEY) is used "
                   "at run time", secret=True),
        *s3.TLS_OPTIONS,
    ),
    requires=("minio",),
    install_hint="pip install 'cmf-ml[s3]'",
    jobs=8,
)


class MinioBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        checks.s3_url(str(options["url"]))
        endpoint = checks.url(str(options["endpoint_url"]), "endpoint_url", ("http", "https"),
                              "https://minio.example.org:9000")
        if endpoint.path.strip("/") or endpoint.query or endpoint.fragment:
            raise ConfigError(f"--endpoint-url must be scheme://host[:port] only, not {endpoint.geturl()!r} "
                              "(put the bucket and prefix in --url)")
        tls = s3.tls_setting(options)
        if tls and endpoint.scheme != "https":
            raise ConfigError("--ca-bundle and --insecure apply to an https:// endpoint only")
        return Remote(type=TYPE, name="minio", url=str(options["url"]).rstrip("/"),
                      options={"endpointurl": f"{endpoint.scheme}://{endpoint.netloc}", **tls},
                      secrets=checks.s3_secrets(options))

    def open(self, remote: Remote) -> ObjectStore:
        from .store import MinioStore  # imports the SDK: only when transfers start

        endpoint = remote.options.get("endpointurl")
        if not endpoint:
            raise ConfigError(f"DVC remote {remote.name!r} has no endpointurl; re-run cmf init {TYPE}")
        access_key, secret_key = s3.env_credentials(remote.secrets, TYPE)
        return MinioStore(s3.Location.parse(remote.url, endpoint.rstrip("/")), access_key, secret_key,
                          session_token=remote.secrets.get("session_token"), verify=s3.tls_verify(remote.options),
                          region=remote.options.get("region"))


plugin = MinioBackend()
