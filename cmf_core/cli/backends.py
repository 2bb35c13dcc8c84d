"""``cmf backends``: the installed storage backends and whether they can run."""
from __future__ import annotations

import json
import warnings

import click

from cmf_core import api


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--strict", is_flag=True, help="exit 1 if any backend is broken or misses a dependency (for CI)")
def backends_command(as_json: bool, strict: bool) -> None:
    """List installed backends: type, distribution, version and status."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # broken backends are rows of the table
        infos = api.backends(strict=False)
    rows = [
        {
            "type": i.type,
            "distribution": i.distribution,
            "version": i.version,
            "module": i.module,
            "status": i.status,
            "description": i.spec.description if i.spec else "",
        }
        for i in infos
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        header = {"type": "TYPE", "distribution": "DISTRIBUTION", "version": "VERSION", "status": "STATUS"}
        widths = {k: max(len(str(r[k])) for r in [header, *rows]) for k in ("type", "distribution", "version")}
        for row in [header, *rows]:
            click.echo("  ".join(str(row[k]).ljust(widths[k]) for k in widths) + "  " + row["status"])
    if strict and any(r["status"] != "ok" for r in rows):
        raise click.exceptions.Exit(1)
