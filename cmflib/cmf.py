"""``cmflib.cmf``: the original module functions, with the original parameter names.

Unlike the original they raise :class:`cmf_core.errors.CmfError` on failure
instead of printing and returning ``None``, and they return results.
"""
from __future__ import annotations

from typing import Any, Dict

from cmf_core import api
from cmf_core.metadata.logger import Cmf, DataSlice
from cmf_core.workspace import InitResult

__all__ = ["Cmf", "DataSlice", "cmf_init", "cmf_init_show"]


def cmf_init(
    type: str = "",
    path: str = "",
    git_remote_url: str = "",
    cmf_server_url: str = "",
    neo4j_user: str = "",
    neo4j_password: str = "",
    neo4j_uri: str = "",
    url: str = "",
    endpoint_url: str = "",
    access_key_id: str = "",
    secret_key: str = "",
    session_token: str = "",
    user: str = "",
    password: str = "",
    port: int = 0,
    osdf_path: str = "",
    osdf_cache: str = "",
    key_id: str = "",
    key_path: str = "",
    key_issuer: str = "",
    **backend_options: Any,
) -> InitResult:
    """Initialise the current directory for an artifact repository of ``type``.

    Takes the original parameters; options of other (third-party) backends
    may be passed as keyword arguments.  ``osdf_path``/``osdf_cache`` are the
    original names of the osdfremote ``--path``/``--cache``.
    """
    options = dict(
        path=osdf_path or path, url=url, endpoint_url=endpoint_url, access_key_id=access_key_id,
        secret_key=secret_key, session_token=session_token, user=user, password=password, port=port or None,
        cache=osdf_cache, key_id=key_id, key_path=key_path, key_issuer=key_issuer, **backend_options,
    )
    return api.init(
        type, options, git_remote_url=git_remote_url, cmf_server_url=cmf_server_url or None,
        neo4j_user=neo4j_user or None, neo4j_password=neo4j_password or None, neo4j_uri=neo4j_uri or None,
    )


def cmf_init_show() -> Dict[str, Any]:
    """The current workspace's config with secrets masked (see ``cmf init show --json``)."""
    return api.show()
