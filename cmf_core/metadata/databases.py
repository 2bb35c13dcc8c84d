"""ML Metadata's store in a database server, for ``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)``:
PostgreSQL, as the original (``POSTGRES_*``), or MySQL/MariaDB (``MYSQL_*``).

Each is :class:`~cmf_core.metadata.sqlstore.SqlStore` on a connection of its own in autocommit mode: each write
call, or ``with store.unit():`` block, is one transaction that holds the store's write lock.  A missing database and
schema are created as ml-metadata creates them (:mod:`cmf_core.metadata.schema`).  The mlmd files of a workspace
are :mod:`cmf_core.metadata.store`'s.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

from cmf_core.errors import CmfError
from cmf_core.metadata import schema
from cmf_core.metadata.sql import Session
from cmf_core.metadata.sqlstore import SqlStore

__all__ = ["DatabaseStore", "PostgresStore", "MysqlStore", "ensure_postgres", "ensure_mysql", "open_postgres_store",
           "open_mysql_store", "open_server_store", "postgres_settings", "mysql_settings"]


def _settings(product: str, prefix: str, database: str, default_port: int) -> Dict[str, Any]:
    """The host, port, user, password and database of ``Cmf(is_server=True)``'s store on ``product``, from the
    environment variables ``<prefix>_HOST``, ``_PORT`` (``default_port``), ``_USER``, ``_PASSWORD`` and
    ``<prefix>_<database>``."""
    required = [f"{prefix}_HOST", f"{prefix}_USER", f"{prefix}_{database}"]
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        raise CmfError(f"is_server=True reads the {product} store that {', '.join(missing)} name: set them (and "
                       f"{prefix}_PORT, {prefix}_PASSWORD if needed)")
    port = os.environ.get(f"{prefix}_PORT") or str(default_port)
    if not port.isdigit():
        raise CmfError(f"{prefix}_PORT must be a port number, not {port!r}")
    host, user, name = (os.environ[variable] for variable in required)
    return {"host": host, "port": int(port), "user": user, "database": name,
            "password": os.environ.get(f"{prefix}_PASSWORD") or None}


def postgres_settings() -> Dict[str, Any]:
    """The PostgreSQL database that ``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)`` write and read, as
    psycopg's connection arguments, from the environment variables the original cmflib reads: ``POSTGRES_HOST``,
    ``POSTGRES_PORT`` (5432), ``POSTGRES_USER``, ``POSTGRES_PASSWORD`` (or libpq's own ``PGPASSWORD``/``.pgpass``)
    and ``POSTGRES_DB``."""
    args = _settings("PostgreSQL", "POSTGRES", "DB", 5432)
    args["dbname"] = args.pop("database")
    return {**args, "connect_timeout": 5}


def mysql_settings() -> Dict[str, Any]:
    """The MySQL (or MariaDB) database that ``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)`` write and read,
    as PyMySQL's connection arguments, from the variables that MySQL's and MariaDB's own images read:
    ``MYSQL_HOST``, ``MYSQL_PORT`` (3306), ``MYSQL_USER``, ``MYSQL_PASSWORD`` and ``MYSQL_DATABASE``."""
    return {**_settings("MySQL", "MYSQL", "DATABASE", 3306), "connect_timeout": 5}


def _reason(exc: Exception) -> str:
    """A driver's error as its message (PyMySQL's is a (code, message) pair)."""
    return str(exc.args[-1] if exc.args else exc).strip()


def ensure_postgres(args: Mapping[str, Any]) -> None:
    """Create the PostgreSQL database of psycopg's connection ``args`` and ML Metadata's schema in it when they are
    missing (:func:`schema.create_postgres`, what ml-metadata creates); a database that holds other tables is left
    as it is, for the reader of its schema version to refuse."""
    import psycopg
    from psycopg import sql

    try:
        try:
            connection = psycopg.connect(**args)
        except psycopg.OperationalError as exc:
            if f'database "{args["dbname"]}" does not exist' not in str(exc):
                raise
            with psycopg.connect(**{**args, "dbname": "postgres"}, autocommit=True) as admin:
                try:
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args["dbname"])))
                except psycopg.errors.DuplicateDatabase:  # another process made it meanwhile
                    pass
            connection = psycopg.connect(**args)
        with connection:
            if connection.execute("SELECT to_regclass('mlmdenv')").fetchone()[0] is None:
                try:
                    schema.create_postgres(connection)
                except ValueError:  # not empty: another process made the schema meanwhile, or other tables
                    pass
    except psycopg.OperationalError as exc:
        raise CmfError(f"cannot open the PostgreSQL store {PostgresStore.where(args)}: {_reason(exc)}") from None


def ensure_mysql(args: Mapping[str, Any]) -> None:
    """Create the MySQL database of PyMySQL's connection ``args`` and ML Metadata's schema in it when they are
    missing (:func:`schema.create_mysql`, what ml-metadata creates); a database that holds other tables is left as
    it is, for the reader of its schema version to refuse."""
    import pymysql
    from pymysql.constants import ER

    try:
        try:
            connection = pymysql.connect(**args)
        except pymysql.OperationalError as exc:
            if exc.args[0] != ER.BAD_DB_ERROR:
                raise
            with pymysql.connect(**{**args, "database": None}) as admin, admin.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{args['database'].replace('`', '``')}`")
            connection = pymysql.connect(**args)
        with connection:
            if not Session(connection.cursor(), "mysql").value(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND "
                    "table_name = 'MLMDEnv'"):
                try:
                    schema.create_mysql(connection)
                except ValueError:  # not empty: another process made the schema meanwhile, or other tables
                    pass
    except pymysql.OperationalError as exc:
        raise CmfError(f"cannot open the MySQL store {MysqlStore.where(args)}: {_reason(exc)}") from None


class DatabaseStore(SqlStore):
    """ML Metadata's store in a database server through :class:`~cmf_core.metadata.sqlstore.SqlStore`, on a
    connection of its own in autocommit mode: each write call, or ``with store.unit():`` block, is one transaction
    that holds the store's write lock.  A subclass says how to reach one kind of server: its names below, its
    ``DRIVER`` (a DB-API module), ``settings()``, the driver's connection arguments from the environment, and
    ``ensure(args)``, which creates the database and its schema when missing."""

    PRODUCT = ""  # the server, as messages name it
    DIALECT = ""  # of the Session
    SCHEME = ""  # of the address that messages show
    DATABASE = ""  # the connection argument that names the database
    DRIVER = ""  # the DB-API module that connects

    def __init__(self, connection: Any) -> None:
        super().__init__(Session(connection.cursor(), self.DIALECT), logged_times=False)
        self.connection = connection

    def close(self) -> None:
        self.connection.close()

    @classmethod
    def connect(cls, args: Mapping[str, Any]) -> Any:
        """A connection in autocommit mode (both drivers take ``autocommit=True``)."""
        return importlib.import_module(cls.DRIVER).connect(**args, autocommit=True)

    @classmethod
    def errors(cls) -> type:
        """The driver's base exception (DB-API's ``Error``)."""
        return importlib.import_module(cls.DRIVER).Error

    @classmethod
    def where(cls, args: Mapping[str, Any]) -> str:
        return f"{cls.SCHEME}://{args['user']}@{args['host']}:{args['port']}/{args[cls.DATABASE]}"


class PostgresStore(DatabaseStore):
    """A PostgreSQL store; its write lock is the one the server's pushes hold."""

    PRODUCT, DIALECT, SCHEME, DATABASE, DRIVER = "PostgreSQL", "postgres", "postgresql", "dbname", "psycopg"
    settings = staticmethod(postgres_settings)
    ensure = staticmethod(ensure_postgres)


class MysqlStore(DatabaseStore):
    """A MySQL (or MariaDB) store; its write lock is the row of ``MLMDEnv`` (see :mod:`cmf_core.metadata.sql`)."""

    PRODUCT, DIALECT, SCHEME, DATABASE, DRIVER = "MySQL", "mysql", "mysql", "database", "pymysql"
    settings = staticmethod(mysql_settings)
    ensure = staticmethod(ensure_mysql)


Store = TypeVar("Store", bound=DatabaseStore)


def open_database_store(kind: Type[Store], args: Optional[Mapping[str, Any]] = None, create: bool = True) -> Store:
    """The store of ``kind`` (:class:`PostgresStore`, :class:`MysqlStore`) at the driver's connection ``args``
    (default: ``kind.settings()``, from the environment), created when missing if ``create``."""
    args = dict(args or kind.settings())
    if create:
        kind.ensure(args)
    try:
        store = kind(kind.connect(args))
    except kind.errors() as exc:
        raise CmfError(f"cannot open the {kind.PRODUCT} store {kind.where(args)}: {_reason(exc)}") from None
    try:
        version = store.db.value("SELECT schema_version FROM mlmdenv")
    except kind.errors() as exc:
        store.close()
        raise CmfError(f"cannot open the {kind.PRODUCT} store {kind.where(args)}: {_reason(exc)}") from None
    if version != schema.SCHEMA_VERSION:
        store.close()
        raise CmfError(f"the {kind.PRODUCT} store {kind.where(args)} has ML Metadata schema version "
                       f"{version or 'none'}; cmf reads and writes version {schema.SCHEMA_VERSION}")
    return store


def open_postgres_store(args: Optional[Mapping[str, Any]] = None, create: bool = True) -> PostgresStore:
    """The PostgreSQL store of psycopg's connection ``args`` (default: :func:`postgres_settings`), created when
    missing if ``create``."""
    return open_database_store(PostgresStore, args, create)


def open_mysql_store(args: Optional[Mapping[str, Any]] = None, create: bool = True) -> MysqlStore:
    """The MySQL store of PyMySQL's connection ``args`` (default: :func:`mysql_settings`), created when missing if
    ``create``."""
    return open_database_store(MysqlStore, args, create)


def open_server_store(create: bool = True) -> DatabaseStore:
    """The store of ``Cmf(is_server=True)`` and ``CmfQuery(is_server=True)``: MySQL where ``MYSQL_HOST`` is set,
    else PostgreSQL (``POSTGRES_*``, the original's); with both set, which one is meant is not known."""
    if os.environ.get("MYSQL_HOST"):
        if os.environ.get("POSTGRES_HOST"):
            raise CmfError("is_server=True uses one store, but both MYSQL_HOST and POSTGRES_HOST are set: unset the "
                           "one not meant")
        return open_mysql_store(create=create)
    return open_postgres_store(create=create)
