"""``cmf mcp``: serve a workspace's mlmd, or a ``cmf server``, to a coding assistant over MCP (stdio)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import click

from cmf_core.errors import CmfError

#: What to install when the SDK is missing.
NEEDS = "cmf mcp needs the MCP SDK: pip install 'cmf-ml[mcp]' (Python 3.10 or later)"


@click.command("mcp")
@click.option("--mlmd", type=click.Path(dir_okay=False, path_type=Path), default=Path("mlmd"), show_default=True,
              help="the mlmd file to read (read-only); step metrics and environments are read beside it")
@click.option("--server", "server_url", metavar="URL",
              help="read a cmf server instead (http(s)://host:port), through its read API")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="the server's bearer token, one line (else env CMF_SERVER_TOKEN); never on the command line")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="how long to wait for the server's answer to one read")
@click.pass_context
def mcp_command(ctx: click.Context, mlmd: Path, server_url: Optional[str], token_file: Optional[Path],
                timeout: float) -> None:
    """Let a coding assistant (Claude, Copilot, Cursor...) read pipelines, executions, artifacts, lineage and
    model cards: a Model Context Protocol server on stdin and stdout, started by the assistant.

    It only reads.  Tools: list_pipelines, list_executions, get_execution, list_artifacts, get_artifact,
    lineage, model_card, compare_executions, search; resources cmf://pipeline/NAME, cmf://execution/UUID,
    cmf://artifact/MD5; the prompt explain_model.  'cmf server' serves the same over HTTP at /mcp.
    """
    if server_url and ctx.get_parameter_source("mlmd") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give --mlmd or --server, not both")
    if token_file and not server_url:
        raise click.UsageError("--token-file goes with --server")
    token = _token(token_file) if server_url else None
    if not server_url:  # checked before the SDK's import, which takes a second
        from cmf_core.metadata.store import check_sqlite

        if not mlmd.is_file():
            raise CmfError(f"no mlmd file at {mlmd.absolute()}: run cmf mcp in a workspace, or give --mlmd FILE")
        check_sqlite(mlmd)
    try:
        from cmf_core.mcp.tools import create_server
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "mcp":
            raise
        raise CmfError(NEEDS) from None
    from cmf_core.mcp.sources import LocalSource, RemoteSource

    source = RemoteSource(server_url, token, timeout) if server_url else LocalSource.of_file(mlmd)
    logging.basicConfig(level="WARNING", format="cmf mcp: %(levelname)s %(name)s: %(message)s")  # stderr
    try:
        create_server(source).run("stdio")
    finally:
        source.close()


def _token(token_file: Optional[Path]) -> Optional[str]:
    """The bearer token: the file's one line, else ``$CMF_SERVER_TOKEN``."""
    if token_file is None:
        return os.environ.get("CMF_SERVER_TOKEN", "").strip() or None
    from cmf_core.server.tokens import load_tokens

    tokens = load_tokens(token_file, environ={})
    if len(tokens) != 1:
        raise CmfError(f"{token_file} holds {len(tokens)} tokens; give a file with the one token to send")
    return next(iter(tokens))
