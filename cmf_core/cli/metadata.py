"""``cmf pipeline list``, ``cmf execution list``, ``cmf artifact list``, ``cmf metadata export``, ``cmf dvc ingest``.

Tables are printed whole (no pager, no prompt); ``--json`` prints every field.
"""
from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple

import click

from cmf_core import api

PIPELINE = click.option("-p", "--pipeline_name", "--pipeline-name", "pipeline", required=True, metavar="NAME",
                        help="pipeline name")
MLMD = click.option("-f", "--file_name", "--file-name", "mlmd", default="mlmd", show_default=True,
                    metavar="FILE", help="mlmd file")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON with every field instead of a table")


def table(rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as a table of ``columns``; on a terminal, long cells are cut so a line fits."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    width = shutil.get_terminal_size().columns
    limit = max(12, (width - 2 * len(columns)) // len(columns)) if sys.stdout.isatty() else 10**6
    widths = [min(limit, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(columns)]

    def cut(text: str, size: int) -> str:
        return text if len(text) <= size else text[: size - 1] + "…"

    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(cut(v, w).ljust(w) for v, w in zip(row, widths)).rstrip())
    click.echo(f"({len(rows)} rows)")


def emit(rows: List[Dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        table(rows, columns)


@click.group("pipeline")
def pipeline_group() -> None:
    """Pipelines recorded in an mlmd file."""


@pipeline_group.command("list")
@MLMD
@AS_JSON
def pipeline_list(mlmd: str, as_json: bool) -> None:
    """List the pipelines in the mlmd file."""
    names = api.pipeline_list(mlmd)
    emit([{"pipeline": n} for n in names], ["pipeline"], as_json)


@click.group("execution")
def execution_group() -> None:
    """Executions recorded in an mlmd file."""


@execution_group.command("list")
@PIPELINE
@MLMD
@click.option("-e", "--execution_uuid", "--execution-uuid", "execution_uuid", metavar="UUID",
              help="show only this execution")
@AS_JSON
def execution_list(pipeline: str, mlmd: str, execution_uuid: str, as_json: bool) -> None:
    """List the executions of a pipeline."""
    rows = api.execution_list(pipeline, mlmd, execution_uuid)
    emit(rows, ["id", "Context_Type", "Execution_uuid", "Execution", "Git_Start_Commit"], as_json)


@click.group("artifact")
def artifact_group() -> None:
    """Artifacts recorded in an mlmd file."""


@artifact_group.command("list")
@PIPELINE
@MLMD
@click.option("-a", "--artifact_name", "--artifact-name", "artifact_name", metavar="NAME",
              help="show only this artifact (full name, path or file name)")
@AS_JSON
def artifact_list(pipeline: str, mlmd: str, artifact_name: str, as_json: bool) -> None:
    """List the artifacts of a pipeline with their md5 (uri) and url."""
    rows = api.artifact_list(pipeline, mlmd, artifact_name)
    emit(rows, ["id", "type", "name", "uri", "url"], as_json)


def _transfer_options(command):
    options = [
        PIPELINE, MLMD,
        click.option("-a", "--artifact_name", "--artifact-name", "artifact", metavar="NAME",
                     help="only this artifact (full name, path or file name)"),
        click.option("-e", "--execution_uuid", "--execution-uuid", "execution_uuid", metavar="UUID",
                     help="only the artifacts of this execution"),
        click.option("-j", "--jobs", type=click.IntRange(1, 256), metavar="N",
                     help="objects in flight (default: the backend's); many objects are shared by "
                          "two processes per CPU on Linux"),
        click.option("--dry-run", is_flag=True, help="show what would move; move nothing"),
        AS_JSON,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


SAME_ERROR_SHOWN = 5  # failures with one reason listed one by one; beyond, a count


def _report_failures(failed: Sequence[Tuple[str, str]]) -> None:
    """One line per failed object, except that an error shared by many (the objects not tried once the
    remote went down) is listed for the first few, then counted."""
    totals = Counter(error for _, error in failed)
    shown: Counter = Counter()
    for what, error in failed:
        shown[error] += 1
        if shown[error] <= SAME_ERROR_SHOWN:
            click.echo(f"cmf: error: {what}: {error}", err=True)
        elif shown[error] == SAME_ERROR_SHOWN + 1:
            click.echo(f"cmf: error: and {totals[error] - SAME_ERROR_SHOWN} more objects: {error}", err=True)


def _report(result, as_json: bool) -> None:
    verb = {"push": "pushed", "pull": "pulled"}[result.direction]
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    elif result.dry_run:
        click.echo(f"would {result.direction} {len(result.planned)} objects ({_size(result.bytes)}); "
                   f"{result.skipped} already in place")
        for item in result.planned:
            click.echo(f"  {item}")
    else:
        click.echo(f"{verb} {result.moved} objects ({_size(result.bytes)}) in {result.seconds:.1f} s; "
                   f"{result.skipped} already in place; {len(result.failed)} failed")
    if not as_json:
        for artifact, reason in result.not_files:
            click.echo(f"  not moved: {artifact} ({reason})")
    _report_failures(result.failed)
    if not result.ok:
        raise click.exceptions.Exit(1)


@artifact_group.command("push")
@_transfer_options
def artifact_push(pipeline, mlmd, artifact, execution_uuid, jobs, dry_run, as_json) -> None:
    """Push artifacts to the artifact repository (objects it has already are skipped)."""
    _report(api.artifact_push(pipeline, mlmd, artifact, execution_uuid, jobs, dry_run), as_json)


@artifact_group.command("pull")
@_transfer_options
def artifact_pull(pipeline, mlmd, artifact, execution_uuid, jobs, dry_run, as_json) -> None:
    """Pull artifacts into the workspace, md5-verified (files already in place are skipped)."""
    _report(api.artifact_pull(pipeline, mlmd, artifact, execution_uuid, jobs, dry_run), as_json)


@click.group("metadata")
def metadata_group() -> None:
    """Export (and, with a server, push and pull) pipeline metadata."""


@metadata_group.command("export")
@PIPELINE
@MLMD
@click.option("-j", "--json_file_name", "--json-file-name", "json_file", metavar="FILE",
              help="output file (default: <pipeline>.json)")
@click.option("--force", is_flag=True, help="replace the output file if it exists")
def metadata_export(pipeline: str, mlmd: str, json_file: str, force: bool) -> None:
    """Export a pipeline's metadata as JSON, in the original cmflib's format."""
    target = api.metadata_export(pipeline, mlmd, json_file, force)
    click.echo(f"Exported pipeline {pipeline!r} to {target}")


@click.group("dvc")
def dvc_group() -> None:
    """Bring DVC pipelines into cmf."""


@dvc_group.command("ingest")
@MLMD
@click.option("-p", "--pipeline_name", "--pipeline-name", "pipeline", metavar="NAME",
              help="pipeline to record into (default: the one in the mlmd file, else the directory name)")
@click.option("--lock", metavar="FILE", help="lock file (default: dvc.lock next to the mlmd file)")
def dvc_ingest(mlmd: str, pipeline: str, lock: str) -> None:
    """Record the stages, commands, deps and outs of dvc.lock as executions and datasets."""
    result = api.dvc_ingest(mlmd, lock, pipeline)
    click.echo(f"Ingested {len(result.stages)} stages into pipeline {result.pipeline!r}: "
               f"{result.created} executions created, {result.updated} updated, {result.artifacts} artifacts")


COMMANDS = (pipeline_group, execution_group, artifact_group, metadata_group, dvc_group)
