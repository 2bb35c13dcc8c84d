"""ML Metadata records in the shape the original cmflib writes them.

Type names, property names and naming rules here are the contract with the
original (an mlmd file written by one is read by the other); see
:mod:`cmf_core.metadata.logger` for how records are combined.

Concurrent writers: :func:`write_lock` is the write lock of one mlmd file, an
exclusive ``fcntl.flock`` on ``<mlmd>.lock`` beside it (:mod:`cmf_core.locks`;
never on the SQLite file itself, whose own POSIX locks must stay SQLite's).  Every writer that
reads before it writes (``Cmf``: "does this context/artifact exist? else
create it"; git staging of the ``.dvc`` files) holds it for the whole unit, so
two processes logging into the same file never interleave a check with
another's create: no duplicates, no lost records, no ``database is locked``
between writers.  It is reentrant in the thread that holds it and serialises
threads of one process too.  The lock is advisory: only writers that take it
are serialised (``cmf`` itself, and the original cmflib is not one of them),
and ``flock`` is per host, so the file must not be shared over NFS by writers
on several machines.
"""
from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from cmf_core import locks
from cmf_core.errors import CmfError

PARENT_CONTEXT = "Parent_Context"  # context type of a pipeline; property "Pipeline"
STAGE_CONTEXT = "Pipeline_Stage"  # context type of a stage "pipeline/stage"; property "Pipeline_Stage"

STRING, INT = pb.STRING, pb.INT
#: Properties of every execution type, as the original declares them.
EXECUTION_PROPERTIES = {
    "Execution_uuid": STRING,
    "Context_Type": STRING,
    "Context_ID": INT,
    "Execution": STRING,
    "Execution_type_name": STRING,
    "Pipeline_Type": STRING,
    "Pipeline_id": INT,
    "Git_Repo": STRING,
    "Git_Start_Commit": STRING,
    "Git_End_Commit": STRING,
}
_VERSIONED = {"git_repo": STRING, "Commit": STRING, "url": STRING}
#: Artifact types and their properties, as the original declares them.
ARTIFACT_PROPERTIES: Dict[str, Dict[str, int]] = {
    "Dataset": _VERSIONED,
    "Environment": _VERSIONED,
    "Label": _VERSIONED,
    "Dataslice": _VERSIONED,
    "Model": {"model_framework": STRING, "model_type": STRING, "model_name": STRING, "Commit": STRING,
              "url": STRING},
    "Metrics": {"metrics_name": STRING},
    "Step_Metrics": {"Commit": STRING, "url": STRING},
}
EVENTS = {"input": pb.Event.INPUT, "output": pb.Event.OUTPUT}


def to_value(value: Any) -> pb.Value:
    """A Python value as an MLMD value, keeping its type (bool, int, float, else str).

    A NaN or infinite float (a diverged loss) is stored as the string ``"nan"``, ``"inf"`` or ``"-inf"``:
    ML Metadata writes doubles into its SQL as text, and those three make the insert fail."""
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(double_value=value) if math.isfinite(value) else pb.Value(string_value=repr(value))
    return pb.Value(string_value="" if value is None else str(value))


def from_value(value: pb.Value) -> Any:
    """An MLMD value as a Python value."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("int_value", "double_value", "string_value", "bool_value") else None


def set_props(target: Any, values: Optional[Mapping[str, Any]]) -> None:
    """Write ``values`` into a protobuf property map (``artifact.custom_properties`` ...)."""
    for key, value in (values or {}).items():
        target[str(key)].CopyFrom(to_value(value))


def props(source: Any) -> Dict[str, Any]:
    """A protobuf property map as a plain dict."""
    return {key: from_value(value) for key, value in source.items()}


def check_sqlite(path: Path) -> None:
    """Refuse a file that is not an SQLite database before MLMD touches it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise CmfError(f"{path} is not an mlmd file (not an SQLite database)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.execute("PRAGMA schema_version").fetchone()
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise CmfError(f"{path} is corrupt: {exc}") from None
    if tables and "MLMDEnv" not in tables:
        raise CmfError(f"{path} is an SQLite database but not an mlmd file")


def write_lock(mlmd: os.PathLike) -> locks.FileLock:
    """The write lock of the mlmd file ``mlmd``: ``<mlmd>.lock`` beside the real file, one object per process."""
    real = Path(mlmd).resolve()
    return locks.lock(real.with_name(real.name + ".lock"))


def open_store(path: os.PathLike, create: bool = True, check: bool = True) -> metadata_store.MetadataStore:
    """Open the SQLite mlmd file at ``path``; with ``create=False`` a missing file is an error, not created.

    ``check=False`` skips :func:`check_sqlite`, which opens the file with Python's SQLite: a process that has the
    file open through ML Metadata already must not (see :mod:`cmf_core.server.db`).
    """
    path = Path(path).absolute()
    if not create and not path.is_file():
        raise CmfError(f"mlmd file {path} does not exist")
    if not create and path.stat().st_size == 0:  # read-only, MLMD would fail to create its tables
        raise CmfError(f"mlmd file {path} is empty: not an mlmd file")
    if create and not path.parent.is_dir():
        raise CmfError(f"cannot create mlmd file {path}: {path.parent} is not a directory")
    if check:
        check_sqlite(path)
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE if create
                                     else pb.SqliteMetadataSourceConfig.READONLY)
    try:
        return metadata_store.MetadataStore(config)
    except (mlmd_errors.StatusError, RuntimeError) as exc:  # RuntimeError: a damaged schema
        raise CmfError(f"cannot open mlmd file {path}: {exc}") from None


class Types:
    """Get-or-create of MLMD types by name, cached per store."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.store = store
        self._ids: Dict[tuple, int] = {}

    def _get(self, kind: str, name: str, properties: Mapping[str, int]) -> int:
        cached = self._ids.get((kind, name))
        if cached is not None:
            return cached
        getter = getattr(self.store, f"get_{kind}_type")
        try:
            type_id = getter(name).id
        except mlmd_errors.NotFoundError:
            proto = {"artifact": pb.ArtifactType, "execution": pb.ExecutionType, "context": pb.ContextType}[kind]
            type_id = getattr(self.store, f"put_{kind}_type")(proto(name=name, properties=dict(properties)),
                                                               can_add_fields=True)
        self._ids[(kind, name)] = type_id
        return type_id

    def artifact(self, name: str) -> int:
        return self._get("artifact", name, ARTIFACT_PROPERTIES.get(name, {}))

    def execution(self, name: str) -> int:
        return self._get("execution", name, EXECUTION_PROPERTIES)

    def context(self, name: str) -> int:
        return self._get("context", name, {"Pipeline": STRING} if name == PARENT_CONTEXT else {name: STRING})


def get_or_create_context(store: metadata_store.MetadataStore, types: Types, type_name: str, name: str,
                          custom_properties: Optional[Mapping[str, Any]] = None) -> pb.Context:
    """The context ``name`` of ``type_name``, created if missing; new custom properties are merged in."""
    context = store.get_context_by_type_and_name(type_name, name)
    if context is None:
        context = pb.Context(type_id=types.context(type_name), name=name)
        context.properties["Pipeline" if type_name == PARENT_CONTEXT else type_name].string_value = name
    elif not custom_properties:
        return context
    set_props(context.custom_properties, custom_properties)
    context.id = store.put_contexts([context])[0]
    return context


def event(kind: str, name: Optional[str] = None, when: Optional[int] = None) -> pb.Event:
    """An INPUT/OUTPUT event; ``name`` goes in the event path as the original does when it links."""
    ev = pb.Event(type=EVENTS[kind])
    if name is not None:
        ev.path.steps.add().key = name
    if when is not None:
        ev.milliseconds_since_epoch = when
    return ev


def linked(store: metadata_store.MetadataStore, execution_id: int, artifact_id: int) -> bool:
    """Whether the execution already has an event with the artifact."""
    return any(e.execution_id == execution_id for e in store.get_events_by_artifact_ids([artifact_id]))


def first(items: Iterable[Any]) -> Optional[Any]:
    return next(iter(items), None)
