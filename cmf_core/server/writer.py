"""The server's store in a process of its own: the write path (push, and the exports of pull) apart from reads.

ML Metadata's Python binding holds the interpreter lock for the whole of each call, and a merge makes
calls that take seconds on a large push (measured: a 30,000-artifact ``put_artifacts`` stopped every
other thread of the process for 0.94 s).  In the server's process that froze every page for the length
of a push.  :class:`StoreProcess` runs the :class:`~cmf_core.server.store.ServerStore` in one child process
(spawned, so no lock held by a thread of ours is copied into it) and sends it each call; the pages read
on their own connections in the server's process (:mod:`cmf_core.server.db`) and never wait for it.
Calls are served one at a time, as the store's own lock serialises them anyway.

A child that dies (killed, out of memory) fails the call in flight by name and is replaced for the next
one; the store it left behind is what the next one opens.  A child whose parent has died exits.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Optional

from cmf_core.errors import CmfError
from cmf_core.metadata.merge import MergeResult

__all__ = ["StoreProcess"]

_STORE: Any = None  # in the child: the ServerStore, or the CmfError that kept it from opening


def _open(sqlite: Optional[Path], postgres: Any, parent: int) -> None:
    """The child's initializer: open the store (a failure is kept and raised by every call) and watch the parent."""
    global _STORE
    from cmf_core.server.store import ServerStore

    try:
        _STORE = ServerStore(sqlite=sqlite, postgres=postgres)
    except CmfError as exc:
        _STORE = exc

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()


def _call(method: str, *args: Any) -> Any:
    """Run ``ServerStore.<method>(*args)`` in the child; every error comes back as a CmfError, which pickles."""
    if isinstance(_STORE, CmfError):
        raise _STORE
    try:
        return getattr(_STORE, method)(*args)
    except CmfError:
        raise
    except Exception as exc:  # noqa: BLE001 - ML Metadata's own errors do not pickle
        raise CmfError(f"the store failed: {type(exc).__name__}: {exc}") from None


class StoreProcess:
    """A :class:`~cmf_core.server.store.ServerStore` (SQLite file or PostgreSQL) served by a child process."""

    def __init__(self, sqlite: Optional[os.PathLike] = None, postgres: Any = None) -> None:
        if (sqlite is None) == (postgres is None):
            raise CmfError("the server store is either an SQLite file or a PostgreSQL database")
        self.sqlite = Path(sqlite).absolute() if sqlite is not None else None
        self.postgres = postgres
        self._lock = threading.Lock()
        self._executor: Optional[ProcessPoolExecutor] = None
        self._start()
        self._run("describe")  # opens the store now: a store that cannot be opened stops the server at start

    def _start(self) -> None:
        self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_open,
                                             initargs=(self.sqlite, self.postgres, os.getpid()))

    def _run(self, method: str, *args: Any) -> Any:
        executor = self._executor
        try:
            return executor.submit(_call, method, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    executor.shutdown(wait=False)
                    self._start()
            raise CmfError(f"the store's process died during {method}; a new one serves the next request "
                           "(a push is all or nothing: run it again)") from None

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        from cmf_core.server.store import describe

        return describe(self.sqlite, self.postgres)

    def push(self, payload: Any, pipeline_name: Optional[str] = None, exec_uuid: Optional[str] = None) -> MergeResult:
        return self._run("push", payload, pipeline_name, exec_uuid)

    def pull(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> str:
        return self._run("pull", pipeline_name, exec_uuid)

    def pull_all(self, last_sync_time: int = 0) -> str:
        return self._run("pull_all", last_sync_time)

    def close(self) -> None:
        """Let the call in flight finish, then stop the child."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
