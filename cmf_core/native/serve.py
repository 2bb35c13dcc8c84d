"""The helper process of cmf's C library: it answers frames on stdin/stdout with ``Cmf`` calls.

A frame is a 4-byte little-endian length and fields separated by NUL (see ``src/log_metric.c``)::

    init mlmd pipeline stage execution argv...
                                          Cmf(mlmd, pipeline); create_context(stage); create_execution(execution),
                                          its command the C program's argv (as Python's is str(sys.argv))
    commit name (n k1..kn v1..vn)*        log_metric(name, {k: value}) per step, then commit_metrics(name)
    finalize                              finalize()

Each is answered ``ok`` or ``error`` NUL and one line saying why.  Values keep their type (:func:`value`).  The
protocol's descriptors are moved off 0 and 1 first, so that what Python or a git/dvc subprocess prints goes to
stderr and never into a frame.
"""
from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

__all__ = ["value", "steps", "main"]

def _number(text: str) -> Optional[Union[int, float]]:
    """An int or float written as Python reads one (``nan``, ``inf`` and exponents too), not ``1_000``."""
    if "_" in text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def value(text: str) -> Any:
    """A logged value with its type: ``"10"`` an int, ``"10.12"`` a float, ``"[10,10.00,12]"`` a list of numbers
    (``"[]"`` an empty one), anything else the text itself (a list of other things too)."""
    number = _number(text)
    if number is not None:
        return number
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        if not inner[1:-1].strip():
            return []
        numbers = [_number(part) for part in inner[1:-1].split(",")]
        if all(n is not None for n in numbers):
            return numbers
    return text


def steps(fields: List[str]) -> List[Dict[str, Any]]:
    """The steps of a commit frame's fields after the name: ``n``, n keys, n values, again and again."""
    out, i = [], 0
    while i < len(fields):
        n = int(fields[i])
        keys, values = fields[i + 1:i + 1 + n], fields[i + 1 + n:i + 1 + 2 * n]
        if len(values) != n:
            raise ValueError("a step of the frame is cut short")
        out.append({k: value(v) for k, v in zip(keys, values)})
        i += 1 + 2 * n
    return out


class Helper:
    """The Cmf of one C process: one execution at a time."""

    def __init__(self) -> None:
        self.cmf: Any = None

    def handle(self, op: str, fields: List[str]) -> None:
        if op == "init":
            from cmflib.cmf import Cmf

            mlmd, pipeline, stage, execution, *command = fields
            cmf = Cmf(filepath=mlmd, pipeline_name=pipeline)
            cmf.create_context(stage)
            cmf.create_execution(execution, cmd=str(command) if command else None)  # the C program's argv
            self.cmf = cmf
        elif self.cmf is None:
            raise RuntimeError(f"{op} before init")
        elif op == "commit":
            name, *rest = fields
            for step in steps(rest):
                self.cmf.log_metric(name, step)
            self.cmf.commit_metrics(name)
        elif op == "finalize":
            self.cmf.finalize()
            self.cmf = None
        else:
            raise ValueError(f"unknown request {op!r}")


def _read(stream: BinaryIO) -> Optional[Tuple[str, List[str]]]:
    """The next frame as (op, fields); None at the end of the input."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack("<I", head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    op, *fields = payload.decode("utf-8", "surrogateescape").split("\0")[:-1]
    return op, fields


def _write(stream: BinaryIO, answer: str) -> None:
    data = answer.encode("utf-8", "replace")[:65536]
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def _reason(exc: BaseException) -> str:
    """One line: a cmf error's own message, else the kind of error and its message."""
    from cmf_core.errors import CmfError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, CmfError) and text else f"{type(exc).__name__}: {text}"


def main() -> int:
    """Serve frames until the C side closes its end: 0."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # prints, and subprocesses' output, go to stderr
    helper = Helper()
    while True:
        frame = _read(requests)
        if frame is None:
            return 0
        try:
            helper.handle(*frame)
        except Exception as exc:  # noqa: BLE001 - every failure is an answer; the C side decides
            _write(answers, "error\0" + _reason(exc))
        else:
            _write(answers, "ok")
