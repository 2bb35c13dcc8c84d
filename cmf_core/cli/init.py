"""``cmf init <type>`` and ``cmf init show``.

The subcommands of ``cmf init`` are the installed backends: each one's options
come from its :class:`~cmf_core.hookspecs.BackendSpec`, so a third-party
backend gets ``cmf init <its type> --help`` without any change here.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import click

from cmf_core import api, plugins
from cmf_core.errors import CmfError, PluginError
from cmf_core.hookspecs import BackendSpec, InitOption

COMMON = (
    InitOption("git_remote_url", "git repository that 'cmf repo push' pushes to (remote cmf_origin)",
               required=True, metavar="URL"),
    InitOption("cmf_server_url", "metadata server URL (default: keep the stored one, else http://127.0.0.1:80)",
               metavar="URL"),
    InitOption("neo4j_user", "Neo4j user (with --neo4j-password and --neo4j-uri)"),
    InitOption("neo4j_password", "Neo4j password, kept in the git-ignored .cmfconfig.local "
               "(CMF_NEO4J_PASSWORD overrides it at run time)", secret=True),
    InitOption("neo4j_uri", "Neo4j URI, e.g. bolt://localhost:7687", metavar="URI"),
)


def _click_option(opt: InitOption) -> click.Option:
    notes = []
    if opt.required:
        notes.append("required")
    if opt.secret:
        notes.append("secret: kept out of git")
    if opt.envvar:
        notes.append(f"env: {opt.envvar}")
    text = opt.help + (f"  [{'; '.join(notes)}]" if notes else "")
    kind = None if opt.is_flag or opt.type is str else opt.type
    return click.Option([opt.flag, opt.name], help=text, is_flag=opt.is_flag, type=kind, default=None,
                        metavar=opt.metavar or opt.name.upper())


def _init_command(spec: BackendSpec) -> click.Command:
    def run(**values: Any) -> None:
        common = {opt.name: values.pop(opt.name) for opt in COMMON}
        result = api.init(spec.type, values, **common)
        _report(result)

    return click.Command(
        spec.type,
        callback=run,
        params=[_click_option(o) for o in (*spec.options, *COMMON)],
        help=f"Use {spec.description} as the artifact repository.\n\n"
        "Sets up git (remote cmf_origin), DVC (a default remote that plain 'dvc push' also uses) "
        "and .cmfconfig. Secrets go to git-ignored files only. Re-running it is safe.",
        short_help=spec.description,
    )


def _broken_command(name: str, error: str) -> click.Command:
    def run() -> None:
        raise PluginError(error)

    return click.Command(name, callback=run, help=f"(broken) {error}", short_help=f"(broken) {error}")


def _report(result: api.InitResult) -> None:
    remote = result.remote
    click.echo(f"Initialised {result.type} repository '{remote.name}' at {remote.url} in {result.root}")
    if result.created_git:
        click.echo("  git: created a repository")
    if result.created_dvc:
        click.echo("  dvc: created .dvc")
    if remote.dvc:
        click.echo(f"  dvc: default remote '{remote.name}'")
    if remote.secrets:
        where = ".dvc/config.local" if remote.dvc else ".cmfconfig.local"
        click.echo(f"  secrets: {', '.join(sorted(remote.secrets))} kept in {where} (git-ignored)")
    for note in remote.notes:
        click.echo(f"  {note}")
    if result.staged:
        click.echo(f"  staged in git: {' '.join(result.staged)} (commit them when ready)")


class InitGroup(click.Group):
    """``cmf init``: one subcommand per installed backend, plus ``show``."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return ["show", *plugins.available_types()]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name == "show":
            return show_command
        if name not in plugins.available_types():
            raise click.UsageError(
                f"unknown repository type {name!r}; available: {', '.join(plugins.available_types())}", ctx
            )
        try:
            return _init_command(api.backend_spec(name))
        except CmfError as exc:
            return _broken_command(name, str(exc))


@click.group("init", cls=InitGroup)
def init_group() -> None:
    """Set up this directory as a cmf workspace with an artifact repository.

    Run 'cmf init <type> --help' for the options of a repository type.
    """


def _show_text(data: Dict[str, Any]) -> None:
    click.echo(f"workspace:        {data['workspace']}")
    click.echo(f"repository type:  {data['repository_type'] or '(none)'}")
    remote = data["remote"]
    if remote:
        default = " (default DVC remote)" if remote["default"] and remote["stored_in"] == ".dvc/config" else ""
        click.echo(f"remote:           {remote['name']}{default}, in {remote['stored_in']}")
        click.echo(f"  url = {remote['url']}")
        for section in ("options", "settings"):
            for key, value in remote[section].items():
                click.echo(f"  {key} = {value}")
        for key, value in remote["secrets"].items():
            click.echo(f"  {key} = {value}  (secret)")
    click.echo(f"cmf server url:   {data['cmf_server_url']}")
    git = data["git_remote"]
    click.echo(f"git remote:       {git['name'] + ' -> ' + git['url'] if git else '(none)'}")
    if data["neo4j"]:
        click.echo("neo4j:            " + ", ".join(f"{k}={v}" for k, v in data["neo4j"].items()))
    for warning in data["warnings"]:
        click.echo(f"cmf: warning: {warning}", err=True)


@click.command("show")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def show_command(as_json: bool) -> None:
    """Show the workspace's stored config, secrets masked."""
    data = api.show()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _show_text(data)
