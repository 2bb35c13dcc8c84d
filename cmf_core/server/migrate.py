"""Moving a team's server from SQLite to PostgreSQL: every pipeline of an SQLite store merged into a
PostgreSQL store through the server's own push path (validated whole, rolled back if it fails).

Merging is idempotent, so running it again creates nothing, and an interrupted run is simply run again.
The uploaded files (python environments, labels, step metrics, tensorboard logs) stay in the data
directory, which the PostgreSQL server is started with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Tuple

from cmf_core.errors import CmfError
from cmf_core.metadata.merge import MergeResult
from cmf_core.server.store import PostgresConfig, ServerStore

__all__ = ["migrate_to_postgres"]


def migrate_to_postgres(sqlite: Path, postgres: PostgresConfig,
                        progress: Optional[Callable[[str], None]] = None) -> List[Tuple[str, MergeResult]]:
    """Merge every pipeline of the SQLite store ``sqlite`` into the PostgreSQL store; (pipeline, result) each."""
    if not Path(sqlite).is_file():
        raise CmfError(f"no SQLite store at {sqlite}")
    source = ServerStore(sqlite=sqlite)
    target = ServerStore(postgres=postgres)
    done = []
    for name in source.pipeline_names():
        result = target.push(source.pull(name), name)
        done.append((name, result))
        if progress is not None:
            progress(f"{name}: {result.status} ({result.executions} executions, {result.artifacts} artifacts, "
                     f"{result.events} events created, {result.updated} updated)")
    return done
