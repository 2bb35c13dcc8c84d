"""ML Metadata records in the shape the original cmflib writes them, and the mlmd files that hold them.

Type names, property names and naming rules here are the contract with the
original (an mlmd file written by one is read by the other); see
:mod:`cmf_core.metadata.logger` for how records are combined.  :func:`open_store`
opens an mlmd file with cmf's own store (:class:`FileStore`, no ml-metadata
needed), or through ml-metadata when ``CMF_METADATA_STORE=ml-metadata``; the
database servers of ``is_server=True`` are :mod:`cmf_core.metadata.databases`'.

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
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple
from urllib.parse import quote

from cmf_core import locks
from cmf_core.errors import CmfError
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import schema
from cmf_core.metadata.sql import Session
from cmf_core.metadata.sqlstore import SqlStore

PARENT_CONTEXT = "Parent_Context"  # context type of a pipeline; property "Pipeline"
STAGE_CONTEXT = "Pipeline_Stage"  # context type of a stage "pipeline/stage"; property "Pipeline_Stage"

STRING, INT = mlmd.STRING, mlmd.INT
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
EVENTS = {"input": mlmd.Event.INPUT, "output": mlmd.Event.OUTPUT}


def value_item(value: Any) -> Tuple[str, Any]:
    """A Python value as the field of an MLMD value that holds it and what it holds, keeping its type (bool, int,
    float, else str): ``("int_value", 3)`` (what :meth:`~cmf_core.metadata.messages.Value.item` gives back).

    A NaN or infinite float (a diverged loss) is stored as the string ``"nan"``, ``"inf"`` or ``"-inf"``:
    ML Metadata writes doubles into its SQL as text, and those three make the insert fail."""
    if isinstance(value, bool):
        return "bool_value", value
    if isinstance(value, int):
        return "int_value", int(value)
    if isinstance(value, float):
        return ("double_value", float(value)) if math.isfinite(value) else ("string_value", repr(float(value)))
    return "string_value", "" if value is None else str(value)


def to_value(value: Any) -> mlmd.Value:
    """A Python value as an MLMD value (see :func:`value_item`)."""
    return mlmd.Value.of(*value_item(value))


def from_value(value: mlmd.Value) -> Any:
    """An MLMD value as a Python value."""
    return value.get()


def set_props(target: Any, values: Optional[Mapping[str, Any]]) -> None:
    """Write ``values`` into a property map (``artifact.custom_properties`` ...)."""
    for key, value in (values or {}).items():
        target[str(key)] = to_value(value)


def props(source: Any) -> Dict[str, Any]:
    """A property map as a plain dict."""
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


#: The environment variable that picks the store of mlmd files: ``ml-metadata`` for ml-metadata's own (the
#: ``cmf-ml[mlmd]`` extra, Python <= 3.11); anything else, or unset, for cmf's (:class:`FileStore`).
STORE_ENV = "CMF_METADATA_STORE"
#: Seconds a call waits for another process's write to the same file (SQLite's busy timeout).
BUSY_WAIT = 300


class FileStore(SqlStore):
    """An SQLite mlmd file through :class:`~cmf_core.metadata.sqlstore.SqlStore`, on a connection of its own in
    autocommit mode: each write call is one transaction, as in ML Metadata, and ``with store.unit():`` one for
    several."""

    def __init__(self, connection: sqlite3.Connection, path: Path, logged_times: bool = False) -> None:
        super().__init__(Session(connection.cursor(), postgres=False), logged_times=logged_times)
        self.connection = connection
        self.path = path

    def close(self) -> None:
        self.connection.close()


def open_store(path: os.PathLike, create: bool = True, check: bool = True, logged_times: bool = False) -> Any:
    """Open the SQLite mlmd file at ``path``; with ``create=False`` a missing file is an error, not created, and the
    file is opened read-only.

    A new (or empty) file gets ML Metadata's schema, version 10 (:mod:`cmf_core.metadata.schema`), in one
    transaction.  ``check=False`` skips :func:`check_sqlite`.  ``logged_times``: whether records keep the times
    they are put with, as a merge needs (see :mod:`cmf_core.metadata.sqlstore`).  With ``CMF_METADATA_STORE=
    ml-metadata`` the file is opened through ml-metadata instead (:mod:`cmf_core.metadata.ml_metadata_store`),
    unless ``logged_times``, which ml-metadata cannot keep: it stamps its own clock.
    """
    path = Path(path).absolute()
    if not create and not path.is_file():
        raise CmfError(f"mlmd file {path} does not exist")
    if not create and path.stat().st_size == 0:  # read-only: no schema can be made
        raise CmfError(f"mlmd file {path} is empty: not an mlmd file")
    if create and not path.parent.is_dir():
        raise CmfError(f"cannot create mlmd file {path}: {path.parent} is not a directory")
    if check:
        check_sqlite(path)
    if os.environ.get(STORE_ENV) == "ml-metadata" and not logged_times:
        from cmf_core.metadata.ml_metadata_store import open_file

        return open_file(path, create)
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode={'rwc' if create else 'ro'}", uri=True,
                                     timeout=BUSY_WAIT, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CmfError(f"cannot open mlmd file {path}: {exc}") from None
    try:
        if create:
            _ensure_schema(connection)
        version = connection.execute("SELECT schema_version FROM mlmdenv").fetchone()
    except sqlite3.Error as exc:
        connection.close()
        raise CmfError(f"cannot open mlmd file {path}: {exc}") from None
    if version is None or version[0] != schema.SCHEMA_VERSION:
        connection.close()
        raise CmfError(f"mlmd file {path} has ML Metadata schema version {version[0] if version else 'none'}; cmf "
                       f"reads and writes version {schema.SCHEMA_VERSION} (ml-metadata 1.15-1.17): open it once "
                       "with that ml-metadata to upgrade it")
    return FileStore(connection, path, logged_times=logged_times)


def _ensure_schema(connection: sqlite3.Connection) -> None:
    """Give a new file ML Metadata's schema, once even when two processes open it at once (:func:`schema.create`
    looks under SQLite's write lock, and refuses a file that another process has just made)."""
    if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        try:
            schema.create(connection)
        except ValueError:
            pass


class Types:
    """Get-or-create of MLMD types by name, cached per store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._ids: Dict[tuple, int] = {}

    def _get(self, kind: str, name: str, properties: Mapping[str, int]) -> int:
        cached = self._ids.get((kind, name))
        if cached is not None:
            return cached
        getter = getattr(self.store, f"get_{kind}_type")
        try:
            type_id = getter(name).id
        except mlmd.NotFoundError:
            proto = {"artifact": mlmd.ArtifactType, "execution": mlmd.ExecutionType, "context": mlmd.ContextType}[kind]
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


def get_or_create_context(store: SqlStore, types: Types, type_name: str, name: str,
                          custom_properties: Optional[Mapping[str, Any]] = None) -> mlmd.Context:
    """The context ``name`` of ``type_name``, created if missing; new custom properties are merged in."""
    context = store.get_context_by_type_and_name(type_name, name)
    if context is None:
        context = mlmd.Context(type_id=types.context(type_name), name=name)
        context.properties["Pipeline" if type_name == PARENT_CONTEXT else type_name].string_value = name
    elif not custom_properties:
        return context
    set_props(context.custom_properties, custom_properties)
    context.id = store.put_contexts([context])[0]
    return context


def event(kind: str, name: Optional[str] = None, when: Optional[int] = None) -> mlmd.Event:
    """An INPUT/OUTPUT event; ``name`` goes in the event path as the original does when it links."""
    ev = mlmd.Event(type=EVENTS[kind])
    if name is not None:
        ev.path.steps.add().key = name
    if when is not None:
        ev.milliseconds_since_epoch = when
    return ev


def linked(store: SqlStore, execution_id: int, artifact_id: int) -> bool:
    """Whether the execution already has an event with the artifact."""
    return any(e.execution_id == execution_id for e in store.get_events_by_artifact_ids([artifact_id]))


def first(items: Iterable[Any]) -> Optional[Any]:
    return next(iter(items), None)
