"""``cmf init minioS3``: an S3 bucket on a MinIO (or any S3-compatible) server, through the minio SDK."""
from __future__ import annotations

from typing import Dict

from cmf_core import checks
from cmf_core.backend import Backend
from cmf_core.hookspecs import BackendSpec, InitOption, Remote

TYPE = "minioS3"
SPEC = BackendSpec(
    type=TYPE,
    description="a bucket on a MinIO or other S3-compatible server (minio SDK)",
    options=(
        InitOption("url", "bucket and optional prefix, e.g. s3://bucket/prefix", required=True, metavar="S3_URL"),
        InitOption("endpoint_url", "server endpoint, e.g. https://minio.example.org:9000", required=True,
                   metavar="URL"),
        InitOption("access_key_id", "access key; without it AWS_ACCESS_KEY_ID is used at run time", secret=True),
        InitOption("secret_key", "secret key; without it AWS_SECRET_ACCESS_KEY is used at run time",
                   secret=True),
    ),
    requires=("minio",),
    install_hint="pip install 'cmf-ml[s3]'",
)


class MinioBackend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        checks.s3_url(str(options["url"]))
        endpoint = checks.url(str(options["endpoint_url"]), "endpoint_url", ("http", "https"),
                              "https://minio.example.org:9000")
        return Remote(type=TYPE, name="minio", url=str(options["url"]).rstrip("/"),
                      options={"endpointurl": endpoint.geturl()}, secrets=checks.s3_secrets(options))


plugin = MinioBackend()
