"""The ``cmf`` command line: a thin layer over :mod:`cmf_core.api`.

Exit status: 0 success, 1 failure, 2 bad usage or bad input, 130 interrupted.
Errors are one line on stderr, prefixed with the command.
"""
from __future__ import annotations

import sqlite3
import sys
import warnings
from typing import List, Optional

import click

from cmf_core.cli.backends import backends_command
from cmf_core.cli.init import init_group
from cmf_core.cli.mcp import mcp_command
from cmf_core.cli.metadata import COMMANDS as METADATA_COMMANDS
from cmf_core.cli.server import COMMANDS as SERVER_COMMANDS, add_metadata_commands
from cmf_core.errors import CmfError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="cmf-ml", prog_name="cmf")
def cli() -> None:
    """cmf - track the metadata of ML pipelines and move their artifacts.

    Start with 'cmf init <type>' in your project directory ('cmf backends'
    lists the repository types installed).
    """


for command in (init_group, backends_command, *METADATA_COMMANDS, *SERVER_COMMANDS, mcp_command):
    cli.add_command(command)
add_metadata_commands(cli.commands["metadata"])


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"cmf: warning: {message}\n"


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI and return its exit status (the console script exits with it)."""
    warnings.formatwarning = _one_line_warning
    try:
        status = cli.main(args=argv, prog_name="cmf", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "cmf"
        hint = f" (see '{where} --help')" if exc.ctx else ""
        click.echo(f"{where}: error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"cmf: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("cmf: interrupted", err=True)
        return 130
    except CmfError as exc:
        click.echo(f"cmf: error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:  # the store's errors (a damaged page met in a query, a refused record): one line too
        if not isinstance(exc, sqlite3.DatabaseError) and not type(exc).__module__.startswith(
                ("ml_metadata", "cmf_core.metadata.messages")):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"cmf: error: the metadata store failed: {reason}", err=True)
        return 1
    return status if isinstance(status, int) else 0  # click returns the code of a raised Exit


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
