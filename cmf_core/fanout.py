"""Sharing one run's objects among forked processes, so that moving thousands of small files is not
held back by one interpreter's lock.

Per small object a transfer spends most of its time in Python (the HTTP request and its headers,
the signature, two files made and renamed), and threads of one process take turns at that.  On two
cores, 2000 objects of 4 KB from an S3 server on the same machine took 2.2-2.3 s with 8 threads in
one process, 1.46-1.59 s in two processes of 4 threads and 1.36-1.52 s in four of 2 (a process
whose threads wait for their turn leaves its CPU idle, so there are two per CPU).  So a run of at
least :data:`MIN_OBJECTS` objects is split among up to :data:`PER_CPU` processes per usable CPU,
``-j`` threads in all: the caller keeps one share, and each other share goes to a child made with
``fork`` that opens its own store, moves its objects with its own threads and reports each
outcome, as it happens, as one JSON line on a pipe.  The caller turns those lines back into
outcomes of its own run, so results, progress and failures read as if one process had done all.

Only on Linux (``fork`` is the fast way to a process with everything imported and the plan in
memory), and only from a process without other threads (``fork`` copies no thread, and a lock
that one of them held would stay locked in the child for good): in a notebook or a threaded
program, a run stays in one process.  A child that dies leaves its unreported objects failed,
by name; its temp files are removed by the next run, as after a kill.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from typing import Callable, List, Optional, Sequence, TypeVar

from cmf_core.errors import BackendError

MIN_OBJECTS = 256   # runs with fewer objects stay in one process: a child costs a store opened anew
PER_CPU = 2
MAX_PROCESSES = 8

T = TypeVar("T")
#: ``report(index, moved, error)``: one object of a child's share is done (``error`` describes a failure)
Report = Callable[[int, int, Optional[str]], None]


class WorkerError(BackendError):
    """The failure of an object that a child process moved (or did not, because the child died)."""


def processes(count: int, jobs: int) -> int:
    """How many processes should share a run of ``count`` objects moved ``jobs`` at a time."""
    if count < MIN_OBJECTS or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return 1
    return max(1, min(PER_CPU * cpus(), jobs, MAX_PROCESSES))


def cpus() -> int:
    """The CPUs this process may run on (the machine's, where the system cannot say: macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


BLOCK = 64  # neighbours dealt together at most (see shares)


def shares(items: Sequence[T], parts: int) -> List[List[T]]:
    """``items`` dealt out like cards into ``parts`` lists, a block of neighbours at a time: big and small
    objects spread evenly, and each child touches mostly its own pages of the parent's memory.

    A forked child shares the parent's pages until it writes to one, and merely reading an object
    writes its reference count.  Objects made one after the other sit side by side, so dealing them
    one by one had every child touch, and copy, nearly every page that holds the plan: pushing
    100,000 files of 1 KB to a local store, the four processes summed 525-540 MB (proportional set
    size: shared pages split among them; the caller alone 208 MB), and 364-383 MB in blocks of 64;
    pulling them, 409 and 329 MB.  Blocks shrink for smaller runs, so that each share still gets
    some 16 of them."""
    block = max(1, min(BLOCK, len(items) // (16 * parts)))
    out: List[List[T]] = [[] for _ in range(parts)]
    for number, start in enumerate(range(0, len(items), block)):
        out[number % parts].extend(items[start:start + block])
    return out


class Helper:
    """A child process that works on one share; the caller reads its outcomes with :meth:`reader`."""

    def __init__(self, share: Sequence[T], serve: Callable[[Sequence[T], Report], None]) -> None:
        """Fork; the child runs ``serve(share, report)`` and exits (status 0 only if it returned)."""
        self.share = share
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(read)
            _child(share, serve, write)
        os.close(write)
        self.fd = read
        self.status: Optional[int] = None

    def reader(self, finished, on_bytes: Callable[[int], None]) -> threading.Thread:
        """A thread that puts ``(item, moved, error)`` into ``finished`` for every item of the share:
        as the child reports it, or, for those it never reported, once it has ended."""

        def read() -> None:
            reported = set()
            try:
                with os.fdopen(self.fd, "r", encoding="utf-8") as pipe:
                    for line in pipe:
                        index, moved, error = json.loads(line)
                        reported.add(index)
                        on_bytes(moved)
                        finished.put((self.share[index], moved, None if error is None else WorkerError(error)))
            finally:  # whatever happened, every item gets an outcome: the caller waits for each
                self.status = os.waitpid(self.pid, 0)[1]
                for index, item in enumerate(self.share):
                    if index not in reported:
                        finished.put((item, 0, WorkerError(f"worker process {self.pid} {_ended(self.status)} "
                                                           "before reporting it; run again to move what is missing")))

        return threading.Thread(target=read, name=f"cmf-worker-{self.pid}", daemon=True)

    def interrupt(self) -> None:
        """Ask the child to stop as Ctrl-C would (it finishes the objects it holds) if it still runs."""
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass


def _child(share: Sequence[T], serve: Callable[[Sequence[T], Report], None], fd: int) -> None:
    code = 1
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as pipe:
            def report(index: int, moved: int, error: Optional[str]) -> None:
                pipe.write(json.dumps([index, moved, error]) + "\n")
                pipe.flush()

            serve(share, report)
        code = 0
    except KeyboardInterrupt:
        pass
    except BaseException:  # noqa: B036 -- a bug: shown, and the caller fails what was not reported
        traceback.print_exc()
    finally:
        os._exit(code)  # no atexit handlers, no flushing of buffers copied from the parent


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.WEXITSTATUS(status)}"

