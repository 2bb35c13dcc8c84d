"""Records side by side: the compare page (``/pipelines/{p}/compare``) and its JSON twin.

* Executions (``ids=ID,ID``): one row per property, parameter and metric, each cell marked when it differs from
  the pinned reference run (``ref=ID``, the first by default); the step metrics chosen (``metric=`` repeated,
  ``<step metrics name>.<column>``) overlaid one chart each; the python environments of the reference and one
  other run (``env=ID``, the second by default) diffed package by package.
* Artifacts (``artifacts=ID,ID``): name, type, uri, properties and custom properties side by side, marked the same.

A step-metrics file that holds a wall-clock column (one of :data:`TIME_COLUMNS`, as ``log_metric`` writes
whatever a user logs) gives each overlaid run its times too, so the charts can be drawn against time
(``static/charts.js`` knows the same names).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from cmf_core.server.reads import MAX_COMPARE, BadRequest, Reads

__all__ = ["Compare", "TIME_COLUMNS", "environment_diff"]

#: Step-metric columns read as wall-clock time (seconds or milliseconds since the epoch).
TIME_COLUMNS = ("time", "timestamp", "wall_time", "walltime", "_timestamp")
#: Step metrics overlaid at once (one chart each).
MAX_CHARTS = 8
_SPEC = re.compile(r"\s*(===|==|~=|!=|>=|<=|>|<|@)\s*")


class Compare:
    """The compare reads over one :class:`Reads`."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads

    def executions(self, ids: Sequence[int], diff: bool = False, metrics: Sequence[str] = (),
                   ref: Optional[int] = None, env: Optional[int] = None) -> Dict[str, Any]:
        """Executions side by side against the reference ``ref``; the step metrics ``metrics`` (the first there
        is when none is asked) one chart each; the environments of ``ref`` and ``env`` diffed."""
        ids = _chosen(ids, "executions")
        ref = _member(ref, ids, "ref")
        if env == ref:
            raise BadRequest(f"env={ref} is the reference itself: choose another run to diff its environment with")
        env = _member(env, [i for i in ids if i != ref], "env")
        runs = {i: self.reads.execution(i) for i in ids}
        table = _Table([runs[i] for i in ids], ids.index(ref), diff)
        for key in ("stage", "type", "command"):
            table.add("execution", key, lambda r, k=key: r[k])
        table.add("execution", "git end commit", lambda r: r["git"]["end"])
        for key in sorted({k for r in runs.values() for k in r["params"] if k != "Python_Env"}):
            table.add("param", key, lambda r, k=key: r["params"].get(k))
        values = {r["id"]: {k: v for m in r["metrics"] for k, v in m["values"].items()} for r in runs.values()}
        for key in sorted({k for m in values.values() for k in m}):
            table.add("metric", key, lambda r, k=key: values[r["id"]].get(k))
        choices = sorted({f"{sm['name']}.{col}" for r in runs.values() for sm in r["step_metrics"] if sm["data"]
                          for col in sm["data"]["series"] if col not in TIME_COLUMNS})
        unknown = [m for m in metrics if m and m not in choices]
        if unknown:
            raise BadRequest(f"no step metric {unknown[0]!r} in these executions; they have: "
                             f"{', '.join(choices) or 'none'}")
        chosen = list(dict.fromkeys(m for m in metrics if m))[:MAX_CHARTS] or choices[:1]
        charts = [{"metric": m, **_overlay([runs[i] for i in ids], m)} for m in chosen]
        return {"kind": "executions", "executions": [_summary(runs[i]) for i in ids], "ref": ref,
                "rows": table.rows, "diff": diff, "metric": chosen[0] if chosen else None, "metrics": chosen,
                "metric_choices": choices, "chart": charts[0] if charts else {"steps": [], "series": {}},
                "charts": charts, "environment": _environments(runs[ref], runs[env])}

    def artifacts(self, ids: Sequence[int], diff: bool = False, ref: Optional[int] = None) -> Dict[str, Any]:
        """Artifacts side by side against the reference ``ref``: what they are, properties, custom properties."""
        ids = _chosen(ids, "artifacts")
        ref = _member(ref, ids, "ref")
        records = [self.reads.artifact(i) for i in ids]
        table = _Table(records, ids.index(ref), diff)
        for key in ("name", "type", "uri"):
            table.add("artifact", key, lambda r, k=key: r[k])
        for group, field in (("property", "properties"), ("custom", "custom_properties")):
            for key in sorted({k for r in records for k in r[field]}):
                table.add(group, key, lambda r, f=field, k=key: r[f].get(k))
        items = [{k: r[k] for k in ("id", "label", "name", "type", "pipelines")} for r in records]
        return {"kind": "artifacts", "artifacts": items, "ref": ref, "rows": table.rows, "diff": diff}


class _Table:
    """The rows of a comparison: a value per record, each marked where it differs from the reference's."""

    def __init__(self, records: List[Dict[str, Any]], ref: int, diff: bool) -> None:
        self.records, self.ref, self.diff = records, ref, diff
        self.rows: List[Dict[str, Any]] = []

    def add(self, group: str, key: str, value: Callable[[Dict[str, Any]], Any]) -> None:
        values = [value(r) for r in self.records]
        marks = [repr(v) != repr(values[self.ref]) for v in values]
        if any(marks) or not self.diff:
            self.rows.append({"group": group, "key": key, "values": values, "differs": any(marks),
                              "differs_from_ref": marks})


def _chosen(ids: Sequence[int], what: str) -> List[int]:
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        raise BadRequest(f"choose at least two {what} to compare")
    if len(ids) > MAX_COMPARE:
        raise BadRequest(f"compare at most {MAX_COMPARE} {what} at once")
    return ids


def _member(value: Optional[int], ids: List[int], name: str) -> int:
    """``value`` if it is one of ``ids``, the first of them if None; a 400 otherwise."""
    if value is None:
        return ids[0]
    if value not in ids:
        raise BadRequest(f"{name}={value} is not one of the records compared ({', '.join(map(str, ids))})")
    return value


def _summary(run: Dict[str, Any]) -> Dict[str, Any]:
    return {k: run[k] for k in ("id", "uuid", "label", "stage", "pipeline")}


def _overlay(runs: List[Dict[str, Any]], metric: str) -> Dict[str, Any]:
    """``{"steps", "series": {run label: values by step}, "times": {run label: wall time by step}}``."""
    name, _, column = metric.rpartition(".")
    values: Dict[str, Dict[Any, Any]] = {}
    times: Dict[str, Dict[Any, Any]] = {}
    for run in runs:
        for sm in run["step_metrics"]:
            data = sm["data"]
            if sm["name"] == name and data and column in data["series"]:
                values[run["label"]] = dict(zip(data["steps"], data["series"][column]))
                clock = next((c for c in TIME_COLUMNS if c in data["series"]), None)
                if clock:
                    times[run["label"]] = dict(zip(data["steps"], data["series"][clock]))
    steps = sorted({step for by_step in values.values() for step in by_step}, key=lambda x: (str(type(x)), x))
    return {"steps": steps,
            "series": {label: [by_step.get(s) for s in steps] for label, by_step in values.items()},
            "times": {label: [by_step.get(s) for s in steps] for label, by_step in times.items()}}


def _packages(text: str) -> Dict[str, Tuple[str, str]]:
    """A pip freeze-like list as ``{normalised name: (name as written, version or requirement)}``."""
    out: Dict[str, Tuple[str, str]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):  # -e path, --index-url ...: the whole line names it
            out[line] = (line, "")
            continue
        name, op, rest = (_SPEC.split(line, maxsplit=1) + ["", ""])[:3]
        name = name.split("[", 1)[0].strip()
        out[re.sub(r"[-_.]+", "-", name.lower())] = (name, rest if op in ("==", "===", "@") else op + rest)
    return out


def environment_diff(before: str, after: str) -> Dict[str, Any]:
    """Which packages' versions changed between two pip freeze-like lists, which were added and removed."""
    a, b = _packages(before), _packages(after)
    return {"changed": [{"package": b[k][0], "ref": a[k][1], "other": b[k][1]}
                        for k in sorted(a.keys() & b.keys()) if a[k][1] != b[k][1]],
            "added": [{"package": b[k][0], "version": b[k][1]} for k in sorted(b.keys() - a.keys())],
            "removed": [{"package": a[k][0], "version": a[k][1]} for k in sorted(a.keys() - b.keys())],
            "unchanged": sum(1 for k in a.keys() & b.keys() if a[k][1] == b[k][1])}


def _environments(ref: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, Any]:
    """The environments of two runs and their diff (None when either file is not held here)."""
    sides = {side: {**_summary(run), "path": run["environment"]["path"], "held": run["environment"]["text"] is not None}
             for side, run in (("ref", ref), ("other", other))}
    texts = [ref["environment"]["text"], other["environment"]["text"]]
    return {**sides, "diff": environment_diff(*texts) if None not in texts else None}
