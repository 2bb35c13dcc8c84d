"""The ml-metadata path: an mlmd file opened through ml-metadata's own ``MetadataStore``, behind cmf's messages.

cmf reads and writes mlmd files itself (:mod:`cmf_core.metadata.sqlstore`), on every Python.  Where
ml-metadata is installed (the ``cmf-ml[mlmd]`` extra; it has wheels for Python 3.9-3.11 only) a user can ask
for it with ``CMF_METADATA_STORE=ml-metadata``, and the tests use it as the oracle that cmf's store must agree
with.  :class:`MlmdStore` passes every call to ml-metadata, converting cmf's messages
(:mod:`cmf_core.metadata.messages`) to its protobufs and back, and its errors to cmf's.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cmf_core.errors import CmfError
from cmf_core.metadata import messages as mlmd

__all__ = ["MlmdStore", "open_file", "open_postgres", "open_mysql", "to_ours", "to_theirs"]


def _pb() -> Any:
    try:
        from ml_metadata.proto import metadata_store_pb2
    except ImportError:
        raise CmfError("CMF_METADATA_STORE=ml-metadata needs ml-metadata: pip install 'cmf-ml[mlmd]' "
                       "(it installs on Python 3.9-3.11 only)") from None
    return metadata_store_pb2


def _fill_theirs(target: Any, message: mlmd.Message) -> Any:
    for name, value in message.ListFields():
        field = getattr(target, name)
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, mlmd.Message):
                    _fill_theirs(field[key], item)
                else:
                    field[key] = item
        elif isinstance(value, list):
            for item in value:
                _fill_theirs(field.add(), item)
        elif isinstance(value, mlmd.Message):
            _fill_theirs(field, value)
        else:
            setattr(target, name, value)
    return target


def to_theirs(value: Any) -> Any:
    """cmf's messages (alone, or in lists and tuples) as ml-metadata's protobufs; anything else as it is."""
    if isinstance(value, mlmd.Message):
        return _fill_theirs(getattr(_pb(), type(value).__name__)(), value)
    if isinstance(value, (list, tuple)):
        return type(value)(to_theirs(item) for item in value)
    return value


def _fill_ours(target: mlmd.Message, message: Any) -> mlmd.Message:
    """Copy the fields of the protobuf ``message`` that cmf's message has (struct and proto values have no place
    in cmf's records and are left out)."""
    for field, value in message.ListFields():
        name = field.name
        if name not in target._fields and name not in target._maps and name != "path":
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            mine = getattr(target, name)
            for key, item in value.items():
                if isinstance(item, (int, float, str, bool)):
                    mine[key] = item
                elif item.WhichOneof("value") in mlmd.Value._fields:
                    mine[key] = _fill_ours(mlmd.Value(), item)
        elif name == "path":
            for step in value.steps:
                target.path.steps.add(**{f.name: v for f, v in step.ListFields()})
        else:
            setattr(target, name, value)
    return target


def to_ours(value: Any) -> Any:
    """ml-metadata's protobufs (alone, or in lists and tuples) as cmf's messages; anything else as it is."""
    if hasattr(value, "DESCRIPTOR") and hasattr(mlmd, type(value).__name__):
        return _fill_ours(getattr(mlmd, type(value).__name__)(), value)
    if isinstance(value, (list, tuple)):
        return type(value)(to_ours(item) for item in value)
    return value


class MlmdStore:
    """ml-metadata's ``MetadataStore`` with cmf's messages and errors: every method of it, converted."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            from ml_metadata import errors

            try:
                return to_ours(method(*to_theirs(args), **{k: to_theirs(v) for k, v in kwargs.items()}))
            except errors.StatusError as exc:
                raise getattr(mlmd, type(exc).__name__, mlmd.StoreError)(str(exc)) from None

        return call

    @contextmanager
    def unit(self) -> Iterator["MlmdStore"]:
        """ml-metadata makes each call its own transaction: a unit of several calls is not one."""
        yield self

    def close(self) -> None:
        self._store = None


def _open(config: Any, where: str) -> MlmdStore:
    from ml_metadata import errors
    from ml_metadata.metadata_store import metadata_store

    try:
        return MlmdStore(metadata_store.MetadataStore(config))
    except (errors.StatusError, RuntimeError) as exc:  # RuntimeError: a damaged schema, a database not answering
        raise CmfError(f"cannot open {where}: {exc}") from None


def open_file(path: Path, create: bool) -> MlmdStore:
    """The SQLite mlmd file ``path`` through ml-metadata (created if ``create``, else opened read-only)."""
    pb = _pb()
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE if create
                                     else pb.SqliteMetadataSourceConfig.READONLY)
    return _open(config, f"mlmd file {path}")


def open_postgres(host: str, port: int, user: str, dbname: str, password: str = "") -> MlmdStore:
    """A PostgreSQL database through ml-metadata, which creates it and its schema when they are missing."""
    config = _pb().ConnectionConfig()
    config.postgresql.host, config.postgresql.port = host, str(port)
    config.postgresql.user, config.postgresql.dbname = user, dbname
    if password:
        config.postgresql.password = password
    return _open(config, f"the PostgreSQL database {user}@{host}:{port}/{dbname}")


def open_mysql(host: str, port: int, user: str, database: str, password: str = "") -> MlmdStore:
    """A MySQL (or MariaDB) database through ml-metadata, which creates it and its schema when they are missing."""
    config = _pb().ConnectionConfig()
    config.mysql.host, config.mysql.port = host, port
    config.mysql.user, config.mysql.database = user, database
    if password:
        config.mysql.password = password
    return _open(config, f"the MySQL database {user}@{host}:{port}/{database}")
