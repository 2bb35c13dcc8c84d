"""The server's pushes and pulls in processes of their own, so that pages never wait for them.

A push parses a payload of tens of MB and merges it in Python; a pull builds and serialises an export of
the same size.  Both hold the interpreter lock for long stretches (``json.loads`` of a 20 MB export holds it
for its whole 150 ms), and in the server's process every page waited for them: reads measured up to 190 ms
during a large push.  :class:`StoreProcess` sends these calls to a small pool of spawned child processes,
each with its own :class:`~cmf_core.server.store.ServerStore`; the database's write lock serialises their
pushes, as it does those of other server processes.  The pages and the federation bookkeeping read and
write through :attr:`StoreProcess.db`, on connections of the server's own process.

A child that dies (killed, out of memory) fails the call in flight by name and is replaced for the next
one; the transaction it had open is rolled back by the database.  A child whose server has died exits
within 0.1 s, so nothing is written on behalf of a server that is gone.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, List, Optional, Tuple

from cmf_core.errors import CmfError
from cmf_core.metadata.merge import MergeResult
from cmf_core.server.db import StoreUnavailable
from cmf_core.server.store import PostgresConfig, ServerStore

__all__ = ["StoreProcess"]

CHILDREN = 2  # a long pull does not hold up a push
_STORE: Any = None  # in a child: its ServerStore, or the CmfError that kept it from opening
_WHERE: Tuple[Optional[Path], Optional[PostgresConfig]] = (None, None)  # in a child: the store it opens


def _open_store() -> None:
    """Open the child's store; a failure is kept, and the store opened again at the next call."""
    global _STORE
    try:
        _STORE = ServerStore(sqlite=_WHERE[0], postgres=_WHERE[1])
    except CmfError as exc:
        _STORE = exc


def _open(sqlite: Optional[Path], postgres: Optional[PostgresConfig], parent: int) -> None:
    """A child's initializer: open the store and watch the parent."""
    global _WHERE
    _WHERE = (sqlite, postgres)
    _open_store()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(1)  # an open transaction dies with the process: the database rolls it back

    threading.Thread(target=orphaned, daemon=True).start()


def _call(method: str, *args: Any) -> Any:
    """Run ``ServerStore.<method>(*args)`` in a child; every error comes back as a CmfError, which pickles.

    A child that could not open its store (started while the database was away: its parent opened the
    same store) tries again, and answers :class:`StoreUnavailable` until it can."""
    if isinstance(_STORE, CmfError):
        _open_store()
        if isinstance(_STORE, CmfError):
            logging.getLogger("cmf.server").warning("the store's process cannot open it: %s", _STORE)
            raise StoreUnavailable("the database is unavailable; try again when it is back")
    try:
        return getattr(_STORE, method)(*args)
    except CmfError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever else failed must still reach the request
        raise CmfError(f"the store failed: {type(exc).__name__}: {exc}") from None


class StoreProcess:
    """A :class:`~cmf_core.server.store.ServerStore` whose pushes and pulls run in child processes.

    Opening it creates and checks the store in this process first, so a store that cannot be used stops
    the server at start; :attr:`db` is that store's connections, for the pages.
    """

    def __init__(self, sqlite: Optional[os.PathLike] = None, postgres: Optional[PostgresConfig] = None) -> None:
        self._local = ServerStore(sqlite=sqlite, postgres=postgres)
        self.sqlite, self.postgres, self.db = self._local.sqlite, self._local.postgres, self._local.db
        self._lock = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool whose children start now, in the background, rather than on the first request."""
        executor = ProcessPoolExecutor(CHILDREN, mp_context=multiprocessing.get_context("spawn"), initializer=_open,
                                       initargs=(self.sqlite, self.postgres, os.getpid()))
        for _ in range(CHILDREN):
            executor.submit(_call, "describe")
        return executor

    def _run(self, method: str, *args: Any) -> Any:
        executor = self._executor
        try:
            return executor.submit(_call, method, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    executor.shutdown(wait=False)
                    self._executor = self._start()
            raise StoreUnavailable(f"the store's process died during {method}; a new one serves the next request "
                                   "(a push is all or nothing: run it again)") from None

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        return self._local.describe()

    def push(self, payload: Any, pipeline_name: Optional[str] = None, exec_uuid: Optional[str] = None,
             replace: bool = False) -> MergeResult:
        return self._run("push", payload, pipeline_name, exec_uuid, replace)

    def push_all(self, payload: Any) -> List[MergeResult]:
        return self._run("push_all", payload)

    def pull(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> str:
        return self._run("pull", pipeline_name, exec_uuid)

    def pull_all(self, last_sync_time: int = 0) -> str:
        return self._run("pull_all", last_sync_time)

    def close(self) -> None:
        """Let the calls in flight finish, then stop the children and close the connections."""
        self._executor.shutdown(wait=True)
        self._local.close()
