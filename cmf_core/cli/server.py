"""``cmf server``, ``cmf metadata push|pull`` and ``cmf repo push|pull``.

Register with ``cli.add_command`` for each of :data:`COMMANDS` and
``add_metadata_commands(metadata_group)``.  ``python -m cmf_core.cli.server`` runs
the server alone (what :class:`cmf_core.testing.metadata_server.MetadataServer` starts).
"""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Optional, Tuple

import click

from cmf_core import api
from cmf_core.cli.metadata import MLMD, PIPELINE
from cmf_core.errors import CmfError

EXECUTION = click.option("-e", "--execution_uuid", "--execution-uuid", "execution_uuid", metavar="UUID",
                         help="only this execution")
TENSORBOARD = click.option("-t", "--tensorboard_path", "--tensorboard-path", "tensorboard", metavar="PATH",
                           help="tensorboard log file or directory to upload")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


POSTGRES_OPTIONS = (
    click.option("--postgres-port", type=click.IntRange(1, 65535), default=5432, show_default=True),
    click.option("--postgres-user", default="postgres", show_default=True),
    click.option("--postgres-db", default="mlmd", show_default=True, help="database (created if missing)"),
)


def _postgres_options(command):
    for option in reversed(POSTGRES_OPTIONS):
        command = option(command)
    return command


def _postgres(host: str, port: int, user: str, dbname: str):
    from cmf_core.server.store import PostgresConfig

    return PostgresConfig(host, port, user, dbname, os.environ.get("CMF_POSTGRES_PASSWORD", ""))


@click.group("server", invoke_without_command=True)
@click.pass_context
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("cmf-server-data"),
              show_default=True, help="where uploads (python-env, labels, tensorboard) and the default store go")
@click.option("--store", "store_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="SQLite store file (default: <data-dir>/mlmd)")
@click.option("--postgres-host", metavar="HOST", help="use a PostgreSQL store on this host instead of SQLite")
@_postgres_options
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="accepted bearer tokens, one per line (also: env CMF_SERVER_TOKENS=t1,t2)")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=512.0, show_default=True,
              help="largest request body accepted (413 beyond)")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="allow browser requests from this origin (repeatable; CORS is off without it)")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="server processes sharing the port (uvicorn workers); pushes queue on the database's write lock")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def server_command(ctx: click.Context, host: str, port: int, data_dir: Path, store_file: Optional[Path],
                   postgres_host: Optional[str], postgres_port: int, postgres_user: str, postgres_db: str,
                   token_file: Optional[Path], max_body_mb: float, cors_origins: Tuple[str, ...], workers: int,
                   log_level: str) -> None:
    """Run the metadata server and its web UI at http://HOST:PORT/ (PostgreSQL password: env
    CMF_POSTGRES_PASSWORD).  Each push is one database transaction: a crash leaves the store as it was."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from cmf_core.server.app import Settings, create_app, load_tokens, worker_environment
    from cmf_core.server.store import ServerStore

    if postgres_host and store_file:
        raise click.UsageError("give --store or --postgres-host, not both")
    tokens = load_tokens(token_file)  # bad input stops us before anything is created
    # force: opening a store loads ML Metadata, whose absl logging may have configured the root logger already
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = _postgres(postgres_host, postgres_port, postgres_user, postgres_db) if postgres_host else None
    sqlite = None if postgres else (store_file or data_dir / "mlmd").absolute()
    store = ServerStore(sqlite=sqlite, postgres=postgres)  # created and checked once, before any worker starts
    settings = Settings(store, data_dir, tokens, int(max_body_mb * 1024 * 1024), tuple(cors_origins))
    if not tokens and not _loopback(host):
        click.echo(f"cmf: warning: serving on {host} without authentication; give --token-file", err=True)
    click.echo(f"cmf server: store {store.describe()}, data {data_dir}, auth "
               f"{'on (%d tokens)' % len(tokens) if tokens else 'off'}, {workers} worker process"
               f"{'es' if workers > 1 else ''}, listening on http://{host}:{port}", err=True)
    options = {"host": host, "port": port, "log_level": log_level, "access_log": log_level == "debug",
               "timeout_keep_alive": 30}
    if workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()
        return
    store.close()
    os.environ.update(worker_environment(settings, token_file, log_level))
    uvicorn.run("cmf_core.server.app:worker_app", factory=True, workers=workers, **options)


@server_command.command("migrate")
@click.option("--store", "store_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              default=Path("cmf-server-data/mlmd"), show_default=True, help="the SQLite store to copy from")
@click.option("--to-postgres", is_flag=True, required=True, help="copy into a PostgreSQL store (the one target)")
@click.option("--postgres-host", metavar="HOST", required=True, help="the PostgreSQL server to copy into")
@_postgres_options
def migrate_command(store_file: Path, to_postgres: bool, postgres_host: str, postgres_port: int, postgres_user: str,
                    postgres_db: str) -> None:
    """Copy every pipeline of an SQLite store into a PostgreSQL store (password: env CMF_POSTGRES_PASSWORD).

    Pushed through the server's own merge, pipeline by pipeline: running it again creates nothing. Then start
    'cmf server --postgres-host ...' with the same --data-dir: the uploaded files stay where they are.
    """
    from cmf_core.server.migrate import migrate_to_postgres

    done = migrate_to_postgres(store_file.absolute(), _postgres(postgres_host, postgres_port, postgres_user,
                                                                postgres_db), progress=click.echo)
    click.echo(f"migrated {len(done)} pipelines from {store_file} to postgresql://{postgres_user}@{postgres_host}:"
               f"{postgres_port}/{postgres_db}")


@click.command("ui")
@click.option("--mlmd", "mlmd", type=click.Path(dir_okay=False, path_type=Path), default=Path("mlmd"),
              show_default=True, help="the mlmd file to show (read-only; new records appear as it changes)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def ui_command(mlmd: Path, host: str, port: int) -> None:
    """Browse a workspace's pipelines in the web UI, read-only, without pushing them anywhere.

    The same pages as 'cmf server': pipelines, executions, artifacts, lineage, compare, step-metric charts.
    Files (python environments, step metrics, small artifacts) are read from the workspace beside the mlmd file.
    """
    import uvicorn

    from cmf_core.metadata.store import check_sqlite
    from cmf_core.server.app import Settings, create_app

    mlmd = mlmd.absolute()
    if not mlmd.is_file():
        raise CmfError(f"no mlmd file at {mlmd}: run cmf ui in a workspace, or give --mlmd FILE")
    check_sqlite(mlmd)
    if not _loopback(host):
        click.echo(f"cmf: warning: serving {mlmd} on {host} to anyone who can reach it (no authentication)", err=True)
    click.echo(f"cmf ui: {mlmd} (read-only) on http://{host}:{port}", err=True)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(Settings(None, mlmd.parent, mlmd=mlmd))
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=30)).run()


# -- metadata push / pull --------------------------------------------------------------------------------


@click.command("push")
@PIPELINE
@MLMD
@EXECUTION
@TENSORBOARD
def metadata_push(pipeline: str, mlmd: str, execution_uuid: Optional[str], tensorboard: Optional[str]) -> None:
    """Push a pipeline's metadata (or one execution) to the metadata server."""
    result = api.metadata_push(pipeline, mlmd, execution_uuid, tensorboard)
    _report_push(result)


def _report_push(result) -> None:
    for warning in result.warnings:
        click.echo(f"cmf: warning: {warning}", err=True)
    if result.status == "exists":
        click.echo(f"metadata of {result.pipeline!r} is already on {result.server}: nothing new")
    else:
        counts = result.counts
        click.echo(f"pushed metadata of {result.pipeline!r} to {result.server}: {counts.get('executions', 0)} "
                   f"executions, {counts.get('artifacts', 0)} artifacts, {counts.get('events', 0)} events created, "
                   f"{counts.get('updated', 0)} updated")
    if result.uploaded:
        click.echo(f"uploaded {len(result.uploaded)} files (python-env, labels, step metrics, tensorboard)")


@click.command("pull")
@PIPELINE
@MLMD
@EXECUTION
def metadata_pull(pipeline: str, mlmd: str, execution_uuid: Optional[str]) -> None:
    """Pull a pipeline's metadata (or one execution) from the metadata server into the mlmd file."""
    _report_pull(api.metadata_pull(pipeline, mlmd, execution_uuid))


def _report_pull(result) -> None:
    merged = result.merged
    if result.status == "exists":
        click.echo(f"{result.mlmd} already holds pipeline {result.pipeline!r}: nothing new")
    else:
        click.echo(f"pulled pipeline {result.pipeline!r} into {result.mlmd}: {merged.executions} executions, "
                   f"{merged.artifacts} artifacts, {merged.events} events created, {merged.updated} updated")


def add_metadata_commands(metadata_group: click.Group) -> None:
    """Add ``push`` and ``pull`` to the existing ``cmf metadata`` group (again is a no-op)."""
    for command in (metadata_push, metadata_pull):
        if command.name not in metadata_group.commands:
            metadata_group.add_command(command)


# -- repo push / pull -------------------------------------------------------------------------------------


@click.group("repo")
def repo_group() -> None:
    """Artifacts, metadata and git together."""


@repo_group.command("push")
@PIPELINE
@MLMD
@EXECUTION
@TENSORBOARD
@click.option("-j", "--jobs", type=click.IntRange(1, 256), metavar="N", help="artifact transfers at once")
def repo_push(pipeline: str, mlmd: str, execution_uuid: Optional[str], tensorboard: Optional[str],
              jobs: Optional[int]) -> None:
    """Push artifacts, then metadata, then 'git push cmf_origin <current branch>'; stops at the first failure."""
    result = api.repo_push(pipeline, mlmd, execution_uuid, tensorboard, jobs, progress=click.echo)
    click.echo(f"repo push of {pipeline!r} done: {result.summary()}")


@repo_group.command("pull")
@PIPELINE
@MLMD
@EXECUTION
@click.option("-j", "--jobs", type=click.IntRange(1, 256), metavar="N", help="artifact transfers at once")
def repo_pull(pipeline: str, mlmd: str, execution_uuid: Optional[str], jobs: Optional[int]) -> None:
    """Pull metadata, then artifacts, then 'git pull cmf_origin <current branch>'; stops at the first failure."""
    result = api.repo_pull(pipeline, mlmd, execution_uuid, jobs, progress=click.echo)
    click.echo(f"repo pull of {pipeline!r} done: {result.summary()}")


COMMANDS = (server_command, ui_command, repo_group)


if __name__ == "__main__":  # ``python -m cmf_core.cli.server``: the server alone
    try:
        server_command.main(prog_name="cmf server")
    except CmfError as exc:
        click.echo(f"cmf server: error: {exc}", err=True)
        raise SystemExit(exc.exit_code)
