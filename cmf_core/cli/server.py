"""``cmf server``, ``cmf metadata push|pull`` and ``cmf repo push|pull``.

Register with ``cli.add_command`` for each of :data:`COMMANDS` and
``add_metadata_commands(metadata_group)``.  ``python -m cmf_core.cli.server`` runs
the server alone (what :class:`cmf_core.testing.metadata_server.MetadataServer` starts).
"""
from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import time
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
SERVER_TIMEOUT = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
    help="how long to wait for the metadata server's answer (default: env CMF_SERVER_TIMEOUT, else 3600); "
         "a push is never sent twice, so one that runs out of time may still be merging on the server")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_names(host: str, allowed: Tuple[str, ...]) -> Tuple[str, ...]:
    """The Host names a server on ``host`` answers to: the loopback names, ``host`` itself and ``allowed``."""
    names = {"localhost", "127.0.0.1", "::1", *allowed}
    if host not in ("0.0.0.0", "::"):  # a wildcard address is no name a browser asks for
        names.add(host)
    return tuple(sorted(names))


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
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="a host name clients may use to reach the server (repeatable).  On a loopback address, requests "
                   "naming any host but localhost, the address and these are refused, so that a web page cannot "
                   "reach the server through a DNS name of its own that points at this machine; on another "
                   "address, only when this is given")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="server processes sharing the port (uvicorn workers); pushes queue on the database's write lock")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def server_command(ctx: click.Context, host: str, port: int, data_dir: Path, store_file: Optional[Path],
                   postgres_host: Optional[str], postgres_port: int, postgres_user: str, postgres_db: str,
                   token_file: Optional[Path], max_body_mb: float, cors_origins: Tuple[str, ...],
                   allowed_hosts: Tuple[str, ...], workers: int, log_level: str) -> None:
    """Run the metadata server and its web UI at http://HOST:PORT/ (PostgreSQL password: env
    CMF_POSTGRES_PASSWORD).  Each push is one database transaction: a crash leaves the store as it was.
    Pushes and pulls run in processes of their own, so pages never wait for them.  With the mcp extra, coding
    assistants reach the same reads at http://HOST:PORT/mcp (see 'cmf mcp')."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from cmf_core.server.app import Settings, create_app, load_tokens, worker_environment
    from cmf_core.server.writer import StoreProcess

    if postgres_host and store_file:
        raise click.UsageError("give --store or --postgres-host, not both")
    tokens = load_tokens(token_file)  # bad input stops us before anything is created
    # force: opening a store loads ML Metadata, whose absl logging may have configured the root logger already
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = _postgres(postgres_host, postgres_port, postgres_user, postgres_db) if postgres_host else None
    sqlite = None if postgres else (store_file or data_dir / "mlmd").absolute()
    store = StoreProcess(sqlite=sqlite, postgres=postgres)  # created and checked once, before any worker starts
    names = host_names(host, allowed_hosts) if _loopback(host) or allowed_hosts else ()
    settings = Settings(store, data_dir, tokens, int(max_body_mb * 1024 * 1024), tuple(cors_origins),
                        allowed_hosts=names)
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


# -- federation: peers and syncs, on a server's store directly ---------------------------------------------

DEFAULT_STORE = Path("cmf-server-data/mlmd")


def _on_store(command):
    """Give ``command`` the options that choose a server's store (``--store FILE``, or ``--postgres-host`` and the
    PostgreSQL options, as ``cmf server``) and call it with a ``Federation`` over that store as first argument."""

    @functools.wraps(command)
    def run(store_file: Optional[Path], postgres_host: Optional[str], postgres_port: int, postgres_user: str,
            postgres_db: str, **kwargs):
        from cmf_core.server.federation import Federation
        from cmf_core.server.store import ServerStore

        if postgres_host and store_file:
            raise click.UsageError("give --store or --postgres-host, not both")
        if postgres_host:
            store = ServerStore(postgres=_postgres(postgres_host, postgres_port, postgres_user, postgres_db))
        else:
            path = (store_file or DEFAULT_STORE).absolute()
            if not path.is_file():
                raise CmfError(f"no server store at {path}: give the server's --store FILE (or --postgres-host)")
            store = ServerStore(sqlite=path)
        try:
            return command(Federation(store), **kwargs)
        finally:
            store.close()

    run = _postgres_options(run)
    run = click.option("--postgres-host", metavar="HOST",
                       help="the server's store is this PostgreSQL server's (password: env CMF_POSTGRES_PASSWORD)")(run)
    return click.option("--store", "store_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                        help=f"the server's SQLite store  [default: {DEFAULT_STORE}]")(run)


def _when(ms: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else "never"


@server_command.group("peers")
def peers_group() -> None:
    """The peer servers this server pulls pipelines from (kept in its store; see 'cmf server sync').

    A running server syncs from a peer added with --interval by itself; the others on demand."""


@peers_group.command("add")
@click.argument("url")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="a file holding the bearer token the peer accepts (one line); tokens never go on the command line")
@click.option("--interval", type=click.IntRange(min=1), metavar="SECONDS",
              help="sync from it every SECONDS in the running server (default: only on demand)")
@_on_store
def peers_add(federation, url: str, token_file: Optional[Path], interval: Optional[int]) -> None:
    """Add the peer server at URL (http:// or https://, its base address), or replace the token and interval of
    a known one: adding it again keeps how far it was synced.  With --interval it is due at once."""
    from cmf_core.server.tokens import load_tokens

    token = None
    if token_file is not None:
        tokens = load_tokens(token_file, environ={})
        if len(tokens) != 1:
            raise CmfError(f"{token_file} holds {len(tokens)} tokens; a peer's token file holds one")
        token = next(iter(tokens))
    peer = federation.add_peer(url, token, interval)
    click.echo(f"peer {peer.url}: token {'****' if token else 'none'}, "
               f"{f'synced every {interval} s' if interval else 'synced on demand'}")


@peers_group.command("list")
@_on_store
def peers_list(federation) -> None:
    """The peers, their tokens masked, their schedule and their last run."""
    peers = federation.peers()
    if not peers:
        click.echo("no peers: add one with 'cmf server peers add URL'", err=True)
    for p in peers:
        every = f"every {p['interval']} s" if p["interval"] else "on demand"
        last = f"{p['last_status']} at {_when(p['last_run_at'])}" if p["last_status"] else "never run"
        click.echo(f"{p['url']}  token {p['token'] or 'none'}  {every}  last run: {last}")


@peers_group.command("remove")
@click.argument("url")
@_on_store
def peers_remove(federation, url: str) -> None:
    """Forget the peer at URL (its runs stay in the log).  Adding it again syncs it from the start."""
    federation.remove_peer(url)
    click.echo(f"removed peer {url}")


@server_command.command("sync")
@click.option("--from", "peer", metavar="URL", help="only this peer (default: every peer, one after the other)")
@_on_store
def sync_command(federation, peer: Optional[str]) -> None:
    """Pull from the peers what changed since their last sync and merge it, now.

    Each peer's run merges all of its pipelines in one transaction, or nothing, and is logged (see
    'cmf server sync-log').  Exits with status 1 when a run failed."""
    runs = federation.sync(peer)
    if not runs:
        click.echo("no peers: add one with 'cmf server peers add URL'", err=True)
    for run in runs:
        click.echo(f"{run.peer}: {run.summary()}")
    if not all(run.ok for run in runs):
        raise click.exceptions.Exit(1)


@server_command.command("sync-log")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, metavar="N",
              help="how many runs")
@_on_store
def sync_log_command(federation, limit: int) -> None:
    """The last sync runs, newest first: when, from which peer, why (manual or scheduled), what they created
    and updated, or why they failed."""
    for run in federation.runs(limit):
        click.echo(f"{_when(run.started_at)}  {run.peer}  {run.cause}  {run.summary()}")


@click.command("ui")
@click.option("--mlmd", "mlmd", type=click.Path(dir_okay=False, path_type=Path), default=Path("mlmd"),
              show_default=True, help="the mlmd file to show (read-only; new records appear as it changes)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="a host name the browser may use to reach the UI besides localhost and the --host address "
                   "(repeatable); requests naming any other host are refused, so that a web page cannot reach "
                   "the UI through a DNS name of its own that points at this machine")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ask for one of these tokens (one per line) before showing anything: a browser signs in once "
                   "(a session cookie), scripts send 'Authorization: Bearer TOKEN'; for a UI that others on the "
                   "network can reach")
def ui_command(mlmd: Path, host: str, port: int, allowed_hosts: Tuple[str, ...], token_file: Optional[Path]) -> None:
    """Browse a workspace's pipelines in the web UI, read-only, without pushing them anywhere.

    The same pages as 'cmf server': pipelines, executions, artifacts, lineage, compare, step-metric charts.
    Files (python environments, step metrics, small artifacts) are read from the workspace beside the mlmd file,
    and only while their bytes have the md5 the metadata logs; workspace configuration (.git/, .dvc/,
    .cmfconfig*) is never shown.
    """
    import uvicorn

    from cmf_core.metadata.store import check_sqlite
    from cmf_core.server.app import Settings, create_app, load_tokens

    tokens = load_tokens(token_file, environ={}) if token_file else frozenset()
    mlmd = mlmd.absolute()
    if not mlmd.is_file():
        raise CmfError(f"no mlmd file at {mlmd}: run cmf ui in a workspace, or give --mlmd FILE")
    check_sqlite(mlmd)
    if not _loopback(host) and not tokens:
        click.echo(f"cmf: warning: serving {mlmd} on {host} to anyone who can reach it (no authentication; "
                   "--token-file asks for a token)", err=True)
    click.echo(f"cmf ui: {mlmd} (read-only) on http://{host}:{port}", err=True)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(Settings(None, mlmd.parent, tokens, mlmd=mlmd, allowed_hosts=host_names(host, allowed_hosts)))
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=30)).run()


# -- metadata push / pull --------------------------------------------------------------------------------


@click.command("push")
@PIPELINE
@MLMD
@EXECUTION
@TENSORBOARD
@click.option("--force", is_flag=True,
              help="replace the server's values of executions and artifacts this push changes (without it the "
                   "server refuses such a push)")
@SERVER_TIMEOUT
@click.option("--json", "as_json", is_flag=True,
              help="print the result as JSON (counts is null when the server does not report them)")
def metadata_push(pipeline: str, mlmd: str, execution_uuid: Optional[str], tensorboard: Optional[str], force: bool,
                  timeout: Optional[float], as_json: bool) -> None:
    """Push a pipeline's metadata (or one execution) to the metadata server."""
    result = api.metadata_push(pipeline, mlmd, execution_uuid, tensorboard, force=force, timeout=timeout)
    _report_push(result, as_json)


def _report_push(result, as_json: bool) -> None:
    for warning in result.warnings:
        click.echo(f"cmf: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    if result.status == "exists":
        click.echo(f"metadata of {result.pipeline!r} is already on {result.server}: nothing new")
    elif result.counts is None:  # the original server answers {"status": "success"} only
        click.echo(f"pushed metadata of {result.pipeline!r} to {result.server}: {result.status} "
                   f"(the server did not report counts)")
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
@SERVER_TIMEOUT
def metadata_pull(pipeline: str, mlmd: str, execution_uuid: Optional[str], timeout: Optional[float]) -> None:
    """Pull a pipeline's metadata (or one execution) from the metadata server into the mlmd file."""
    _report_pull(api.metadata_pull(pipeline, mlmd, execution_uuid, timeout=timeout))


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
@SERVER_TIMEOUT
def repo_push(pipeline: str, mlmd: str, execution_uuid: Optional[str], tensorboard: Optional[str],
              jobs: Optional[int], timeout: Optional[float]) -> None:
    """Push artifacts, then metadata, then 'git push cmf_origin <current branch>'; stops at the first failure."""
    result = api.repo_push(pipeline, mlmd, execution_uuid, tensorboard, jobs, progress=click.echo, timeout=timeout)
    click.echo(f"repo push of {pipeline!r} done: {result.summary()}")


@repo_group.command("pull")
@PIPELINE
@MLMD
@EXECUTION
@click.option("-j", "--jobs", type=click.IntRange(1, 256), metavar="N", help="artifact transfers at once")
@SERVER_TIMEOUT
def repo_pull(pipeline: str, mlmd: str, execution_uuid: Optional[str], jobs: Optional[int],
              timeout: Optional[float]) -> None:
    """Pull metadata, then artifacts, then 'git pull cmf_origin <current branch>'; stops at the first failure."""
    result = api.repo_pull(pipeline, mlmd, execution_uuid, jobs, progress=click.echo, timeout=timeout)
    click.echo(f"repo pull of {pipeline!r} done: {result.summary()}")


COMMANDS = (server_command, ui_command, repo_group)


if __name__ == "__main__":  # ``python -m cmf_core.cli.server``: the server alone
    try:
        server_command.main(prog_name="cmf server")
    except CmfError as exc:
        click.echo(f"cmf server: error: {exc}", err=True)
        raise SystemExit(exc.exit_code)
