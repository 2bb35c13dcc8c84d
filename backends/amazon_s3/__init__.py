"""``cmf init amazonS3``: an Amazon S3 bucket (or any S3-compatible endpoint), through boto3.

The store itself is in :mod:`.store`, imported only when a transfer opens the remote.
"""
from __future__ import annotations

from typing import Dict

from cmf_core import checks, s3
from cmf_core.backend import Backend
from cmf_core.hookspecs import BackendSpec, InitOption, ObjectStore, Remote

TYPE = "amazonS3"
SPEC = BackendSpec(
    type=TYPE,
    description="an Amazon S3 bucket or any S3-compatible endpoint (boto3)",
    options=(
        InitOption("url", "bucket and optional prefix, e.g. s3://bucket/prefix", required=True, metavar="S3_URL"),
        InitOption("access_key_id", "access key; without it the AWS chain (env, AWS_PROFILE, "
                   "~/.aws/credentials) is used at run time", secret=True),
        InitOption("secret_key", "secret key that goes with --access-key-id", secret=True),
        InitOption("session_token", "session token of temporary credentials", secret=True),
        InitOption("region", "bucket region, e.g. eu-west-1"),
        InitOption("endpoint_url", "endpoint of an S3-compatible server instead of AWS", metavar="URL"),
        *s3.TLS_OPTIONS,
    ),
    requires=("boto3",),
    install_hint="pip install 'cmf-ml[s3]'",
    jobs=8,
)
#: loggers whose DEBUG records hold the access key id and the session token: botocore's request dumps and
#: canonical requests (urllib3's request lines are kept quiet by :func:`cmf_core.s3.http_pool`)
CREDENTIAL_LOGGERS = ("botocore.endpoint", "botocore.auth")


class AmazonS3Backend(Backend):
    spec = SPEC

    def configure(self, options: Dict[str, object]) -> Remote:
        checks.s3_url(str(options["url"]))
        public = s3.tls_setting(options)
        if options["region"]:
            public["region"] = str(options["region"])
        if options["endpoint_url"]:
            endpoint = checks.url(str(options["endpoint_url"]), "endpoint_url", ("http", "https"),
                                  "https://s3.example.org")
            public["endpointurl"] = endpoint.geturl()
        return Remote(type=TYPE, name="amazons3", url=str(options["url"]).rstrip("/"), options=public,
                      secrets=checks.s3_secrets(options))

    def open(self, remote: Remote) -> ObjectStore:
        from .store import AmazonS3Store  # boto3 is imported here, not when `cmf backends` lists us

        s3.keep_debug_off(*CREDENTIAL_LOGGERS)
        return AmazonS3Store.open(remote)


plugin = AmazonS3Backend()
