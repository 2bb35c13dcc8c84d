"""Read an MLMD file with the ORIGINAL cmflib 0.1.0 ``CmfQuery`` and print it as JSON.

Usage (with the python of the venv built by ``original_env.sh``, ideally ``python -I``)::

    orig_query.py MLMD_FILE PIPELINE

Prints exactly one JSON document to stdout (everything the original prints goes to stderr)::

    {
      "pipeline_names": [...],                 # get_pipeline_names()
      "stages": [...],                         # get_pipeline_stages(PIPELINE)
      "executions": {stage: [record, ...]},    # get_all_executions_in_stage(stage)
      "artifacts_by_context": [record, ...],   # get_all_artifacts_by_context(PIPELINE)
      "artifacts_for_execution": {"<execution id>": [record, ...]},
                                               # get_all_artifacts_for_execution(id)
      "artifact_types": [...],                 # get_all_artifact_types()
      "dumptojson": {...},                     # json.loads(dumptojson(PIPELINE))
      "mlmd_records": {...}                    # raw MLMD store contents (MessageToDict), see raw_records()
    }

Records are ``DataFrame.to_dict("records")``; NaN/NA become null, numpy scalars Python values.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything written to fd 1 to fd 2; yield a stream on the original stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real_stdout = os.fdopen(saved, "w", closefd=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real_stdout
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        real_stdout.flush()
        real_stdout.close()


def jsonable(value: Any) -> Any:
    """Convert pandas/numpy values (recursively) into plain JSON-serialisable Python values."""
    import numpy as np
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def records(df: Any) -> list[dict[str, Any]]:
    """``DataFrame.to_dict("records")`` made JSON-serialisable (an empty frame gives [])."""
    return jsonable(df.to_dict("records"))


def raw_records(store: Any) -> dict[str, Any]:
    """Dump the raw MLMD store: types, contexts, executions, artifacts, events, links."""
    from google.protobuf.json_format import MessageToDict

    def dump(messages: Any) -> list[dict[str, Any]]:
        return [MessageToDict(m, preserving_proto_field_name=True) for m in messages]

    contexts = store.get_contexts()
    executions = store.get_executions()
    artifacts = store.get_artifacts()
    return {
        "context_types": dump(store.get_context_types()),
        "execution_types": dump(store.get_execution_types()),
        "artifact_types": dump(store.get_artifact_types()),
        "contexts": dump(contexts),
        "executions": dump(executions),
        "artifacts": dump(artifacts),
        "events": dump(store.get_events_by_execution_ids([e.id for e in executions])),
        "parent_contexts": {str(c.id): [p.id for p in store.get_parent_contexts_by_context(c.id)] for c in contexts},
        "associations": {str(c.id): [e.id for e in store.get_executions_by_context(c.id)] for c in contexts},
        "attributions": {str(c.id): [a.id for a in store.get_artifacts_by_context(c.id)] for c in contexts},
    }


def query(mlmd_file: str, pipeline: str) -> dict[str, Any]:
    """Run the original CmfQuery calls and gather their results."""
    from cmflib.cmfquery import CmfQuery

    q = CmfQuery(mlmd_file)
    stages = list(q.get_pipeline_stages(pipeline))
    executions = {stage: records(q.get_all_executions_in_stage(stage)) for stage in stages}
    execution_ids = [rec["id"] for recs in executions.values() for rec in recs]
    dumped = q.dumptojson(pipeline)
    return {
        "pipeline_names": list(q.get_pipeline_names()),
        "stages": stages,
        "executions": executions,
        "artifacts_by_context": records(q.get_all_artifacts_by_context(pipeline)),
        "artifacts_for_execution": {
            str(eid): records(q.get_all_artifacts_for_execution(int(eid))) for eid in execution_ids
        },
        "artifact_types": list(q.get_all_artifact_types()),
        "dumptojson": None if dumped is None else json.loads(dumped),
        "mlmd_records": raw_records(q.store),
    }


def main(argv: list[str]) -> int:
    """Entry point: ``orig_query.py MLMD_FILE PIPELINE``."""
    if len(argv) != 2:
        print("usage: orig_query.py MLMD_FILE PIPELINE", file=sys.stderr)
        return 2
    mlmd_file, pipeline = argv
    if not os.path.isfile(mlmd_file):
        # SqlliteStore would silently create an empty database.
        print(f"orig_query.py: no such MLMD file: {mlmd_file}", file=sys.stderr)
        return 2
    with stdout_to_stderr() as out:
        result = jsonable(query(mlmd_file, pipeline))
        out.write(json.dumps(result, allow_nan=False, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
