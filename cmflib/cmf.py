"""``cmflib.cmf``: the original module functions, with the original parameter names.

Unlike the original they raise :class:`cmf_core.errors.CmfError` on failure
instead of printing and returning ``None``, and they return results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from cmf_core import api
from cmf_core.metadata.logger import Cmf, DataSlice
from cmf_core.workspace import InitResult

__all__ = ["Cmf", "DataSlice", "cmf_init", "cmf_init_show", "pipeline_list", "execution_list", "artifact_list",
           "metadata_export", "dvc_ingest", "artifact_push", "artifact_pull", "artifact_pull_single"]


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


def pipeline_list(file_name: str = "./mlmd") -> List[str]:
    """Names of the pipelines in the mlmd file."""
    return api.pipeline_list(file_name)


def execution_list(pipeline_name: str, file_name: str = "./mlmd", execution_uuid: str = "") -> List[Dict[str, Any]]:
    """Executions of a pipeline as dicts (all properties), optionally one execution by uuid."""
    return api.execution_list(pipeline_name, file_name, execution_uuid or None)


def artifact_list(pipeline_name: str, file_name: str = "./mlmd", artifact_name: str = "") -> List[Dict[str, Any]]:
    """Artifacts of a pipeline as dicts (name, type, uri = md5, url, properties)."""
    return api.artifact_list(pipeline_name, file_name, artifact_name or None)


def metadata_export(pipeline_name: str, json_file_name: Optional[str] = None, file_name: str = "./mlmd",
                    force: bool = False) -> Path:
    """Export a pipeline to JSON (the original's format); returns the file written. No prompt: see ``force``."""
    return api.metadata_export(pipeline_name, file_name, json_file_name, force)


def dvc_ingest(file_name: str = "./mlmd"):
    """Record the pipeline of ``dvc.lock`` in the mlmd file; returns counts of what was recorded."""
    return api.dvc_ingest(file_name)


def artifact_push(pipeline_name: str, filepath: str = "./mlmd", jobs: int = 32):
    """Push the pipeline's artifacts; returns a TransferResult (``.ok``, ``.moved``, ``.failed`` ...)."""
    return api.artifact_push(pipeline_name, filepath, jobs=jobs)


def artifact_pull(pipeline_name: str, file_name: str = "./mlmd", artifact_name: Optional[str] = None):
    """Pull the pipeline's artifacts (or one artifact) into the workspace; returns a TransferResult."""
    return api.artifact_pull(pipeline_name, file_name, artifact=artifact_name or None)


def artifact_pull_single(pipeline_name: str, file_name: str, artifact_name: str):
    """Pull one artifact (full name, path or file name); returns a TransferResult."""
    return api.artifact_pull(pipeline_name, file_name, artifact=artifact_name)


def metadata_push(pipeline_name: str, file_name: str = "./mlmd", tensorboard_path: Optional[str] = None,
                  execution_uuid: Optional[str] = None):
    """Push the pipeline's metadata (or one execution's) to the cmf server; returns a PushResult (``.status``)."""
    return api.metadata_push(pipeline_name, file_name, execution_uuid or None, tensorboard_path or None)


def metadata_pull(pipeline_name: str, file_name: str = "./mlmd", execution_uuid: Optional[str] = None):
    """Pull the pipeline's metadata (or one execution's) from the cmf server into the mlmd file; returns a PullResult."""
    return api.metadata_pull(pipeline_name, file_name, execution_uuid or None)


def repo_push(pipeline_name: str, filepath: str = "./mlmd", tensorboard_path: str = "", execution_uuid: str = "",
              jobs: int = 32):
    """Push artifacts, metadata and git commits (``cmf repo push``); returns a RepoResult, raises on the first failure."""
    return api.repo_push(pipeline_name, filepath, execution_uuid or None, tensorboard_path or None, jobs)


def repo_pull(pipeline_name: str, file_name: str = "./mlmd", execution_uuid: str = ""):
    """Pull metadata, artifacts and git commits (``cmf repo pull``); returns a RepoResult, raises on the first failure."""
    return api.repo_pull(pipeline_name, file_name, execution_uuid or None)


__all__ += ["metadata_push", "metadata_pull", "repo_push", "repo_pull"]
