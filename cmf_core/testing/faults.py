"""Fault injection: :class:`FaultyStore` wraps any backend's ObjectStore and breaks it on purpose.

A test gives the wrapper a small, declarative fault plan and hands it to the
engine (``api.artifact_push(..., store=faulty)``)::

    faulty = FaultyStore(inner, Fault.drop(2, ops="get"), Fault.fail_first(1, permanent=True, keys=[key]))
    result = api.artifact_pull(pipeline, store=faulty)
    faulty.injected        # Counter({"drop": 2, "fail": 1}): faults that happened
    faulty.count("get")    # every get the engine attempted, retries included

Each :class:`Fault` says what goes wrong (its kind), on which calls (``ops``:
put, get, exists; optionally only ``keys``) and how often (the first
``times`` matching calls; ``None``: all of them).  On each call the wrapper
applies every matching ``delay`` and then the first other matching rule that
has calls left.  The kinds are what networks and servers really do:

* ``drop`` -- the connection drops: a get delivers the first half of the
  object, then raises :class:`TransientError`; a put or exists raises it before
  anything is stored (as a backend whose puts are atomic leaves nothing);
* ``fail`` -- the call is refused: :class:`TransientError` (HTTP 503,
  throttling) or, ``permanent``, :class:`BackendError` (access denied);
* ``truncate`` -- the bytes end early without an error: a get delivers only the
  first half, a put stores only the first half of the source;
* ``corrupt`` -- the byte in the middle is flipped, in what a get delivers or
  in what a put stores;
* ``delay`` -- the call waits ``seconds`` first (a slow or congested link).

Truncating or corrupting an empty object changes nothing and is not counted.
Besides the plan, ``before_put``/``before_get``/``before_exists`` hooks run
first on every call (to time a server kill, or raise); calls that succeeded are
recorded in ``put_keys``, ``got_keys`` and ``exists_calls``.  Everything is
thread-safe: the engine calls from its whole pool at once.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

from cmf_core import layout
from cmf_core.errors import BackendError, TransientError
from cmf_core.hookspecs import ObjectStore

__all__ = ["Fault", "FaultyStore"]

OPS = ("put", "get", "exists")
Ops = Union[str, Iterable[str]]


def _ops(ops: Ops, allowed: Sequence[str] = OPS) -> FrozenSet[str]:
    chosen = frozenset([ops] if isinstance(ops, str) else ops)
    if not chosen or not chosen <= set(allowed):
        raise ValueError(f"ops must be among {', '.join(allowed)}, not {sorted(chosen)}")
    return chosen


@dataclass(frozen=True)
class Fault:
    """One rule of a fault plan.  Build it with the class methods, e.g. ``Fault.drop(2, ops="get")``."""

    kind: str
    times: Optional[int] = None  # the first `times` matching calls; None: every one
    ops: FrozenSet[str] = frozenset(OPS)
    keys: Optional[FrozenSet[str]] = None  # only calls on (an exists asking for) one of these keys
    seconds: float = 0.0
    permanent: bool = False

    @classmethod
    def drop(cls, times: Optional[int] = 1, ops: Ops = OPS, keys: Optional[Iterable[str]] = None) -> "Fault":
        """The connection drops (mid-stream for a get): a :class:`TransientError` the engine must retry."""
        return cls("drop", times, _ops(ops), _keys(keys))

    @classmethod
    def fail_first(cls, times: Optional[int], permanent: bool = False, ops: Ops = OPS,
                   keys: Optional[Iterable[str]] = None) -> "Fault":
        """The first ``times`` calls are refused: transient (retried), or permanent (must fail at once)."""
        return cls("fail", times, _ops(ops), _keys(keys), permanent=permanent)

    @classmethod
    def truncate(cls, times: Optional[int] = None, ops: Ops = "get", keys: Optional[Iterable[str]] = None) -> "Fault":
        """Only the first half of the bytes arrives (get) or is stored (put), and no error says so."""
        return cls("truncate", times, _ops(ops, ("put", "get")), _keys(keys))

    @classmethod
    def corrupt(cls, times: Optional[int] = None, ops: Ops = "get", keys: Optional[Iterable[str]] = None) -> "Fault":
        """The middle byte arrives (get) or is stored (put) flipped, and no error says so."""
        return cls("corrupt", times, _ops(ops, ("put", "get")), _keys(keys))

    @classmethod
    def delay(cls, seconds: float, times: Optional[int] = None, ops: Ops = OPS,
              keys: Optional[Iterable[str]] = None) -> "Fault":
        """The call waits ``seconds`` before it starts."""
        return cls("delay", times, _ops(ops), _keys(keys), seconds=seconds)

    def matches(self, op: str, keys: Sequence[str]) -> bool:
        return op in self.ops and (self.keys is None or any(key in self.keys for key in keys))


def _keys(keys: Optional[Iterable[str]]) -> Optional[FrozenSet[str]]:
    return None if keys is None else frozenset(keys)


class FaultyStore(ObjectStore):
    """An :class:`ObjectStore` that delegates to ``inner`` and breaks as its fault ``plan`` says.

    ``close()`` is recorded in ``closed`` but closes ``inner`` only with
    ``close_inner=True``: the test that opened ``inner`` usually still needs it.
    """

    def __init__(self, inner: ObjectStore, *plan: Fault,
                 before_put: Optional[Callable[[Path, str], None]] = None,
                 before_get: Optional[Callable[[str, BinaryIO], None]] = None,
                 before_exists: Optional[Callable[[Sequence[str]], None]] = None,
                 close_inner: bool = False) -> None:
        self.inner = inner
        self.plan = list(plan)
        self.before_put = before_put
        self.before_get = before_get
        self.before_exists = before_exists
        self.close_inner = close_inner
        self.put_keys: List[str] = []
        self.got_keys: List[str] = []
        self.exists_calls: List[List[str]] = []
        self.closed = 0
        self.injected: Counter[str] = Counter()  # fault kind -> how many happened
        self.calls: Counter[Tuple[str, str]] = Counter()  # (op, key) -> calls, retries included; exists: key "*"
        self._left = [fault.times for fault in self.plan]
        self._lock = threading.Lock()

    def count(self, op: str, key: Optional[str] = None) -> int:
        """How many times ``op`` was called (on ``key``), whatever the outcome."""
        with self._lock:
            return sum(n for (o, k), n in self.calls.items() if o == op and (key is None or k == key))

    # -- the plan ---------------------------------------------------------------------------------

    def _take(self, op: str, keys: Sequence[str]) -> Tuple[List[Fault], Optional[Fault]]:
        """Count the call; the delays that apply to it and the one other fault it gets (if any)."""
        delays: List[Fault] = []
        other: Optional[Fault] = None
        with self._lock:
            self.calls[(op, keys[0] if op != "exists" else "*")] += 1
            for index, fault in enumerate(self.plan):
                wanted = fault.kind == "delay" or other is None
                if not wanted or self._left[index] == 0 or not fault.matches(op, keys):
                    continue
                if self._left[index] is not None:
                    self._left[index] -= 1
                if fault.kind == "delay":
                    delays.append(fault)
                else:
                    other = fault
        return delays, other

    def _injected(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _enter(self, op: str, keys: Sequence[str]) -> Optional[Fault]:
        """Apply delays and refusals to a call; return the fault that must change its bytes, if any."""
        delays, fault = self._take(op, keys)
        for delay in delays:
            self._injected("delay")
            time.sleep(delay.seconds)
        what = f"{op} of {keys[0]}" if op != "exists" else f"exists of {len(keys)} keys"
        if fault is not None and fault.kind == "fail":
            self._injected("fail")
            if fault.permanent:
                raise BackendError(f"injected permanent failure: {what} refused")
            raise TransientError(f"injected transient failure: {what} refused, try again")
        if fault is not None and fault.kind == "drop" and op != "get":
            self._injected("drop")
            raise TransientError(f"injected: connection dropped during {what}")
        return fault

    # -- the store --------------------------------------------------------------------------------

    def exists(self, keys: Sequence[str]) -> Set[str]:
        keys = list(keys)
        if self.before_exists:
            self.before_exists(keys)
        self._enter("exists", keys)
        found = self.inner.exists(keys)
        with self._lock:
            self.exists_calls.append(keys)
        return found

    def put(self, src: Path, key: str) -> None:
        if self.before_put:
            self.before_put(src, key)
        fault = self._enter("put", [key])
        if fault is None:
            self.inner.put(src, key)
        else:
            with tempfile.TemporaryDirectory(prefix="cmf-fault-") as tmp:
                changed = Path(tmp) / "object"
                with open(src, "rb") as source, open(changed, "wb") as out:
                    if self._replay(source, src.stat().st_size, out, fault):
                        self._injected(fault.kind)
                self.inner.put(changed, key)
        with self._lock:
            self.put_keys.append(key)

    def get(self, key: str, dst: BinaryIO) -> None:
        if self.before_get:
            self.before_get(key, dst)
        fault = self._enter("get", [key])
        if fault is None:
            self.inner.get(key, dst)
        else:
            with tempfile.TemporaryFile(prefix="cmf-fault-") as spool:
                self.inner.get(key, spool)
                size = spool.tell()
                spool.seek(0)
                changed = self._replay(spool, size, dst, fault)
                if fault.kind == "drop":
                    self._injected("drop")
                    raise TransientError(f"injected: connection dropped after {size // 2} of {size} bytes "
                                         f"of {key}")
                if changed:
                    self._injected(fault.kind)
        with self._lock:
            self.got_keys.append(key)

    @staticmethod
    def _replay(source: BinaryIO, size: int, out: BinaryIO, fault: Fault) -> bool:
        """Copy ``source`` to ``out`` as ``fault`` changes it: half of it, or its middle byte flipped."""
        if fault.kind in ("drop", "truncate"):
            _copy(source, out, size // 2)
            return size > 0
        middle = size // 2
        _copy(source, out, middle)
        byte = source.read(1)
        if byte:
            out.write(bytes([byte[0] ^ 0xFF]))
        shutil.copyfileobj(source, out, layout.CHUNK)
        return bool(byte)

    def close(self) -> None:
        with self._lock:
            self.closed += 1
        if self.close_inner:
            self.inner.close()


def _copy(source: BinaryIO, out: BinaryIO, count: int) -> None:
    """Copy exactly ``count`` bytes (the source has at least that many)."""
    while count > 0:
        block = source.read(min(count, layout.CHUNK))
        out.write(block)
        count -= len(block)
