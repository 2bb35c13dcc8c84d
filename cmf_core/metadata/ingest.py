"""``cmf dvc ingest``: record a DVC pipeline (``dvc.lock``) as cmf metadata.

Each ``dvc.lock`` stage becomes a stage of the pipeline with one execution
whose command is the stage's ``cmd``; an execution already logged with the
same command (e.g. by a script that logged its metrics) is reused and
updated instead.  ``deps`` are logged as input datasets and ``outs`` as output
datasets with the md5 DVC recorded (no file is read or copied); ``params`` go
into the execution's custom properties.  No Neo4j is involved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from cmf_core import layout
from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmf_core.metadata.logger import Cmf


@dataclass
class IngestResult:
    pipeline: str
    stages: List[str] = field(default_factory=list)
    created: int = 0  # executions created
    updated: int = 0  # executions matched by command and reused
    artifacts: int = 0


def _load_lock(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise CmfError(f"{path} not found: run 'dvc repro' first, or give the lock file with --lock")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CmfError(f"malformed {path.name}: {' '.join(str(exc).split())}") from None
    stages = document.get("stages") if isinstance(document, dict) else None
    if not isinstance(stages, dict):
        raise CmfError(f"malformed {path.name}: no 'stages' mapping")
    for name, stage in stages.items():  # all checked before the first write
        if not isinstance(name, str) or not isinstance(stage, dict) or "cmd" not in stage:
            raise CmfError(f"malformed {path.name}: stage {name!r} has no cmd")
        for key in ("deps", "outs"):
            entries = stage.get(key) or []
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and e.get("path") and layout.is_md5(str(e.get("md5"))) for e in entries):
                raise CmfError(f"malformed {path.name}: an entry of {name}.{key} lacks a path or a valid md5")
    return stages


def _command(cmd: Any) -> str:
    return " && ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)


def _flat_params(params: Any) -> Dict[str, Any]:
    flat: Dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value if isinstance(value, (bool, int, float, str)) else str(value)

    walk("", params or {})
    return flat


def ingest_dvc_lock(mlmd: str = "mlmd", lock: Optional[str] = None, pipeline_name: Optional[str] = None) -> IngestResult:
    """Record the stages of ``lock`` (default: ``dvc.lock`` beside the mlmd file) in ``mlmd``."""
    base = Path(mlmd).absolute().parent
    stages = _load_lock(base / (lock or "dvc.lock"))
    if not pipeline_name and Path(mlmd).is_file():
        store = records.open_store(mlmd, create=False)
        names = [c.name for c in store.get_contexts_by_type(records.PARENT_CONTEXT)]
        if len(names) > 1:
            raise CmfError(f"{mlmd} holds several pipelines ({', '.join(names)}); choose one with -p")
        pipeline_name = names[0] if names else None
    cmf = Cmf(filepath=mlmd, pipeline_name=pipeline_name or "")
    known = {e.properties["Execution"].string_value: e.id for e in sorted(_pipeline_executions(cmf),
                                                                           key=lambda e: e.id)}
    result = IngestResult(cmf.pipeline_name)
    for stage_name, stage in stages.items():
        cmf.create_context(stage_name)
        command = _command(stage["cmd"])
        params = _flat_params(stage.get("params"))
        if command in known:
            cmf.update_execution(known[command], params)
            result.updated += 1
        else:
            cmf.create_execution(stage_name, params, cmd=command)
            known[command] = cmf.execution.id
            result.created += 1
        for event, key in (("input", "deps"), ("output", "outs")):
            for entry in stage.get(key) or []:
                cmf.log_dataset_with_version(str(entry["path"]), str(entry["md5"]), event)
                result.artifacts += 1
        result.stages.append(stage_name)
    cmf.finalize()
    return result


def _pipeline_executions(cmf: Cmf) -> List[Any]:
    """Executions of every stage of the pipeline (they are associated with stages, not the pipeline)."""
    return [e for stage in cmf.store.get_children_contexts_by_context(cmf.parent_context.id)
            for e in cmf.store.get_executions_by_context(stage.id)]
