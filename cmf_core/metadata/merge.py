"""Merge a pipeline export (the JSON of ``CmfQuery.dumptojson``) into an ML Metadata store.

The metadata server merges what clients push; ``cmf metadata pull`` merges what
the server sends into the local mlmd file.  Records are matched by what stays
the same across stores, never by the sender's ids:

* pipelines and stages by context name;
* executions by any of their ``Execution_uuid`` values (an execution reused
  with ``create_new_execution=False`` carries several; it is merged once and its
  uuids united), or by name for named executions;
* artifacts by type and name (MLMD keeps that pair unique);
* events by (execution, artifact, type).

Merging the same payload twice creates nothing (the result says ``exists``).

Records keep the times they were logged with (``create_time_since_epoch``, ``last_update_time_since_epoch``
of executions, artifacts and contexts in the export; a record without them gets the store's clock), and new
executions and artifacts are created in the order of their logged create times across stages, so ids ascend
with time in every store.  The export carries no times of events: a new event gets the store's clock.

The whole payload is validated before the first write, the pipeline's name
with the rule of :func:`cmf_core.names.check_name` (it becomes a folder name on
the server), whether it comes from a push, a pull or a peer.  Stored records
are updated first, then every new execution, artifact and event is created in
one call (the server runs the whole merge in one database transaction).  Ids
inside properties (``Context_ID``, ``Pipeline_id``) are rewritten to the
receiving store's ids.

What an existing record gets from a payload:

* new keys of an execution's properties and custom properties, and of an
  artifact's custom properties, are added;
* a key whose stored value differs from the payload's is a CLASH: without
  ``replace`` the merge raises :class:`Clash`, naming the record, the key and
  both values, before its first write (so nothing of the payload is written);
  with ``replace`` the payload's value replaces the stored one.  The metadata
  server answers a clash with 409 unless the push says ``"force": true``;
  federation never replaces; ``cmf metadata pull`` always does (the server's
  values win in the local mlmd);
* never a clash: an execution's ``Execution_uuid`` (the uuids are united), its
  ``Context_ID``/``Pipeline_id`` (the receiving store's ids), its
  ``Git_End_Commit`` (the payload's is taken: ``finalize`` sets it after a push
  made before it, and a reused execution moves it on), an artifact's
  ``url`` property (the urls are united), an artifact's other properties (kept
  as stored), the custom properties of pipeline and stage contexts (the
  payload's values are set);
* its last update time becomes the payload's when that is newer (it never moves back); a record the payload
  changes without giving a time gets the store's clock.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple


from cmf_core.errors import CmfError
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import store as records
from cmf_core.names import UnsafeName, check_name

EVENT_TYPES = {mlmd.Event.INPUT, mlmd.Event.OUTPUT}
#: Execution properties that are never a clash: the uuids are united, the ids are the receiving store's own.
NOT_CLASHING = ("Execution_uuid", "Context_ID", "Pipeline_id")
#: Execution properties whose newer value is taken without a clash: a run's end commit is recorded by
#: ``finalize`` (after a push made before it) and moves on each time a reused execution runs again.
LATEST = ("Git_End_Commit",)
BULK_LOOKUP = 200  # from this many artifacts of one type in a payload on, read the type whole
#: ML Metadata's columns for the names of records, types and properties are VARCHAR(255): PostgreSQL refuses a
#: longer name (SQLite would keep it), so every store refuses it before anything is written.
MAX_NAME = 255
_SCALARS = {str, int, float, bool}  # exact types: JSON gives no subclasses
#: A record's times (ms since epoch) in an export, as it was logged.
TIMES = ("create_time_since_epoch", "last_update_time_since_epoch")

class MergeError(CmfError):
    """A payload that is not a well-formed pipeline export (the server answers 422)."""


class Clash(MergeError):
    """A payload that would change a value an existing record holds, merged without ``replace`` (the server
    answers 409): nothing of the payload was written."""


@dataclass
class MergeResult:
    pipeline: str
    executions: int = 0  # created
    artifacts: int = 0  # created
    events: int = 0  # created
    updated: int = 0  # existing records that changed

    @property
    def status(self) -> str:
        return "success" if (self.executions or self.artifacts or self.events or self.updated) else "exists"


# -- validation ------------------------------------------------------------------------------------


def _storable(value: Any, where: str) -> Any:
    """``value`` if every store can keep it: valid UTF-8 without NUL (PostgreSQL's text cannot hold one, SQLite's
    can: both refuse it), a 64-bit integer, a finite number."""
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (a \ud800 escape in the JSON)
            raise MergeError(f"{where} is not valid UTF-8") from None
        if "\x00" in value:
            raise MergeError(f"{where} has a NUL character, which PostgreSQL cannot store")
    elif kind is float and not math.isfinite(value):
        raise MergeError(f"{where} must be a finite number")
    elif kind is int and not -2 ** 63 <= value < 2 ** 63:
        raise MergeError(f"{where} is out of the 64-bit integer range")
    return value


def _require(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MergeError(f"{where} must be a {kind.__name__}")
    return _storable(value, where)


def _long_name(name: str, where: str) -> MergeError:
    return MergeError(f"{where} {name[:40]!r}... is longer than {MAX_NAME} characters, ML Metadata's limit for a name")


def _name(value: Any, where: str) -> str:
    """``value`` if ML Metadata can store it as the name of a record or a type."""
    name = _require(value, str, where)
    if len(name) > MAX_NAME:
        raise _long_name(name, where)
    return name


def _props(value: Any, where: str) -> Dict[str, Any]:
    props = _require(value if value is not None else {}, dict, where)
    for key, item in props.items():
        if type(key) is not str or type(item) not in _SCALARS:
            raise MergeError(f"{where}[{key!r}] must be a string, number or boolean")
        if len(key) > MAX_NAME:
            raise _long_name(key, f"{where} key")
        try:
            _storable(key, "")
            _storable(item, "")
        except MergeError:  # again, to say where (the label costs more than the check)
            _storable(key, f"{where} key {key!r}")
            _storable(item, f"{where}[{key!r}]")
            raise
    return props


def _times(node: Dict[str, Any], where: str) -> None:
    """Refuse a record's time that is not milliseconds since the epoch; a record may have none."""
    for key in TIMES:
        value = node.get(key)
        if value is not None and (type(value) is not int or not 0 <= value < 2 ** 63):
            raise MergeError(f"{where}.{key} must be a time in milliseconds since the epoch (a non-negative "
                             f"integer), not {value!r:.40}")


class Checked(dict):
    """A pipeline element that :func:`pipeline_of` has validated: :func:`merge_pipeline` does not check it again."""


def pipelines_of(payload: Any) -> List[Any]:
    """The ``"Pipeline"`` list of an export (JSON text or parsed), its elements not checked yet; a MergeError
    when there is none."""
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise MergeError(f"payload is not JSON: {exc}") from None
    pipelines = payload.get("Pipeline") if isinstance(payload, dict) else None
    if not isinstance(pipelines, list):
        raise MergeError('payload has no "Pipeline" list')
    return pipelines


def pipeline_of(payload: Any, pipeline_name: Optional[str] = None) -> Checked:
    """The pipeline element of an export (``{"Pipeline": [...]}``), validated; a MergeError otherwise."""
    pipelines = pipelines_of(payload)
    if not pipelines:
        raise MergeError('payload has no "Pipeline" list')
    if pipeline_name is not None:
        pipelines = [p for p in pipelines if isinstance(p, dict) and p.get("name") == pipeline_name]
        if not pipelines:
            raise MergeError(f"payload holds no pipeline named {pipeline_name!r}")
    pipeline = _require(pipelines[0], dict, "Pipeline[0]")
    try:
        check_name(_require(pipeline.get("name"), str, "pipeline name"), "pipeline name")
    except UnsafeName as exc:
        raise MergeError(str(exc)) from None
    _props(pipeline.get("custom_properties"), "pipeline custom_properties")
    _times(pipeline, "pipeline")
    for s, stage in enumerate(_require(pipeline.get("stages", []), list, "stages")):
        where = f"stages[{s}]"
        _require(stage, dict, where)
        _name(stage.get("name"), f"{where}.name")
        _props(stage.get("custom_properties"), f"{where}.custom_properties")
        _times(stage, where)
        for e, execution in enumerate(_require(stage.get("executions", []), list, f"{where}.executions")):
            at = f"{where}.executions[{e}]"
            _require(execution, dict, at)
            _name(execution.get("type"), f"{at}.type")
            _name(execution.get("name") or "", f"{at}.name")
            properties = _props(execution.get("properties"), f"{at}.properties")
            _require(properties.get("Execution_uuid", ""), str, f"{at}.properties.Execution_uuid")
            _props(execution.get("custom_properties"), f"{at}.custom_properties")
            _times(execution, at)
            for v, event in enumerate(_require(execution.get("events", []), list, f"{at}.events")):
                ev = f"{at}.events[{v}]"
                _require(event, dict, ev)
                kind = event.get("type")
                if not isinstance(kind, int) or kind not in EVENT_TYPES:  # a list or dict is not hashable
                    raise MergeError(f"{ev}.type must be 3 (input) or 4 (output)")
                artifact = _require(event.get("artifact"), dict, f"{ev}.artifact")
                for key in ("name", "type"):
                    _name(artifact.get(key), f"{ev}.artifact.{key}")
                _require(artifact.get("uri", ""), str, f"{ev}.artifact.uri")
                _props(artifact.get("properties"), f"{ev}.artifact.properties")
                _props(artifact.get("custom_properties"), f"{ev}.artifact.custom_properties")
                _times(artifact, f"{ev}.artifact")
    return Checked(pipeline)


# -- merging -------------------------------------------------------------------------------------


def _uuids(value: str) -> List[str]:
    return [u for u in value.split(",") if u]


def _exec_props(execution: Dict[str, Any]) -> Dict[str, Any]:
    """An incoming execution's properties; validation lets them be absent or null."""
    return execution.get("properties") or {}


def _merged_props(execution: Dict[str, Any], skip: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """An incoming execution's properties that are merged into a stored execution's (less ``skip``)."""
    return {k: v for k, v in _exec_props(execution).items() if k not in NOT_CLASHING and k not in skip}


def _changed(target: Any, values: Mapping[str, Any]) -> bool:
    """Set ``values`` into a property map; whether anything changed."""
    changed = False
    for key, value in values.items():
        new = records.value_item(value)
        if key not in target or target[key].item() != new:
            target[key] = mlmd.Value.of(*new)
            changed = True
    return changed


def _logged(spec: Mapping[str, Any], key: str) -> Optional[int]:
    """A time of a payload's record (ms since epoch), None when it has none (0 is ML Metadata's "not set")."""
    return spec.get(key) or None


def _new_times(node: Any, spec: Mapping[str, Any]) -> bool:
    """Give a record the merge creates the payload's times; whether it had any."""
    given = False
    for key in TIMES:
        value = _logged(spec, key)
        if value is not None:
            setattr(node, key, value)
            given = True
    return given


def _newer_update(node: Any, spec: Mapping[str, Any]) -> bool:
    """Give a stored record the payload's last update time when it is newer (the time never moves back);
    whether it did."""
    updated = _logged(spec, "last_update_time_since_epoch")
    if updated is None or updated <= node.last_update_time_since_epoch:
        return False
    node.last_update_time_since_epoch = updated
    return True


def _touched(node: Any, spec: Mapping[str, Any], changed: bool) -> bool:
    """Whether a stored record whose values the merge ``changed`` (or not) is to be written: its last update
    time becomes the payload's when that is newer; a change from a payload without times is stamped with the
    store's clock."""
    newer = _newer_update(node, spec)
    if changed and _logged(spec, "last_update_time_since_epoch") is None:
        node.ClearField("last_update_time_since_epoch")
    return changed or newer


def _order(node: Any, seq: int) -> Tuple[float, int]:
    """Where a new record goes among those a merge creates: by its logged create time (records without one
    last), then in the sender's order."""
    return (node.create_time_since_epoch or math.inf, seq)


@dataclass
class _Unit:
    """An execution of the payload and what the merge creates for it: the execution itself when it is new,
    and its new events, to stored artifacts or to artifacts new in the payload."""

    execution: mlmd.Execution
    stage: mlmd.Context
    order: Tuple[float, int]
    events: List[Tuple[mlmd.Artifact, int]] = field(default_factory=list)


class _Merger:
    def __init__(self, store) -> None:
        self.store = store
        self.types = records.Types(store)
        self._artifact_types: Dict[str, int] = {}
        self._artifacts: Dict[str, Dict[str, mlmd.Artifact]] = {}
        self.wanted: Dict[str, int] = {}  # artifact names per type in the payload
        self.new_artifacts: Dict[Tuple[str, str], mlmd.Artifact] = {}  # by (type, name), in the payload's order
        self.stage_of: Dict[int, mlmd.Context] = {}  # by id() of a new artifact: the stage that first names it
        self.new_named: Dict[Tuple[str, str], mlmd.Execution] = {}  # new executions with a name, by (type, name)
        self.changed_artifacts: Dict[int, mlmd.Artifact] = {}  # stored artifacts the payload changed, by id
        self.units: Dict[int, _Unit] = {}  # by id() of the execution

    def artifact(self, type_name: str, name: str) -> Optional[mlmd.Artifact]:
        """The stored artifact of that type and name.

        A payload with many artifacts of a type reads the whole type once; one with
        few (an incremental push) looks each name up instead.
        """
        if type_name not in self._artifacts and self.wanted.get(type_name, 0) < BULK_LOOKUP:
            cache = self._artifacts.setdefault(f"?{type_name}", {})
            if name not in cache:
                cache[name] = self.store.get_artifact_by_type_and_name(type_name, name)
            return cache[name]
        if type_name not in self._artifacts:
            try:
                found = self.store.get_artifacts_by_type(type_name)
            except Exception as exc:  # NotFoundError: no such type yet
                if "NotFound" not in type(exc).__name__:
                    raise
                found = []
            self._artifacts[type_name] = {a.name: a for a in found}
        return self._artifacts[type_name].get(name)

    def artifact_type(self, name: str, properties: Mapping[str, Any]) -> int:
        """The artifact type, created with (or extended by) the payload's property names."""
        if name not in self._artifact_types:
            schema = dict(records.ARTIFACT_PROPERTIES.get(name, {}))
            for key, value in properties.items():
                schema.setdefault(key, mlmd.INT if isinstance(value, int) and not isinstance(value, bool)
                                  else mlmd.DOUBLE if isinstance(value, float) else mlmd.STRING)
            self._artifact_types[name] = self.store.put_artifact_type(
                mlmd.ArtifactType(name=name, properties=schema), can_add_fields=True, can_omit_fields=True)
        return self._artifact_types[name]

    def context(self, type_name: str, spec: Mapping[str, Any]) -> mlmd.Context:
        """The context of the pipeline or a stage, created with the payload's times, or given its newer last
        update time."""
        new = self.store.get_context_by_type_and_name(type_name, spec["name"]) is None
        context = records.get_or_create_context(self.store, self.types, type_name, spec["name"],
                                                spec.get("custom_properties"))
        timed = _new_times(context, spec) if new else _newer_update(context, spec)
        if timed:
            self.store.put_contexts([context])
        return context


def merge_pipeline(store, payload: Any, exec_uuid: Optional[str] = None, pipeline_name: Optional[str] = None,
                   replace: bool = False) -> MergeResult:
    """Merge one pipeline of ``payload`` (an export, or its pipeline as :func:`pipeline_of` checked it) into
    ``store``; only executions with ``exec_uuid`` if given.

    A stored value that the payload would change is a :class:`Clash`, raised before the first write, unless
    ``replace``: then the payload's value is stored.

    Records keep the payload's times: the merge gives them to the records it writes, which a store opened for
    logged times writes (:mod:`cmf_core.metadata.sqlstore`).  New executions, and new artifacts, are created in the order of their logged create
    times across stages (so ids ascend with time), ties in the payload's order.
    """
    pipeline = payload if isinstance(payload, Checked) else pipeline_of(payload, pipeline_name)
    stages = [(stage, [e for e in stage.get("executions", [])
                       if exec_uuid is None or exec_uuid in _uuids(_exec_props(e).get("Execution_uuid", ""))])
              for stage in pipeline.get("stages", [])]
    executions = [e for _, chosen in stages for e in chosen]
    merger = _Merger(store)
    for execution in executions:
        for event in execution.get("events", []):
            kind = event["artifact"]["type"]
            merger.wanted[kind] = merger.wanted.get(kind, 0) + 1
    known = store.get_context_by_type_and_name(records.PARENT_CONTEXT, pipeline["name"])
    wanted = {u for e in executions for u in _uuids(_exec_props(e).get("Execution_uuid", ""))}
    by_uuid = {} if known is None else _known_executions(store, known.id, wanted)
    if not replace:
        _refuse_clashes(store, merger, pipeline["name"], executions, by_uuid)

    result = MergeResult(pipeline["name"])
    parent = merger.context(records.PARENT_CONTEXT, pipeline)
    for stage, chosen in stages:
        if not chosen:
            continue
        stage_ctx = merger.context(records.STAGE_CONTEXT, stage)
        try:
            store.put_parent_contexts([mlmd.ParentContext(child_id=stage_ctx.id, parent_id=parent.id)])
        except Exception as exc:
            if "AlreadyExists" not in type(exc).__name__:
                raise
        _plan_stage(store, merger, result, parent, stage_ctx, chosen, by_uuid)
    if merger.changed_artifacts:
        store.put_artifacts(list(merger.changed_artifacts.values()))
        result.updated += len(merger.changed_artifacts)
    _create(store, merger)
    return result


def _refuse_clashes(store, merger: _Merger, pipeline: str, executions: List[Dict[str, Any]],
                    by_uuid: Dict[str, mlmd.Execution]) -> None:
    """Raise :class:`Clash` at the first value of an existing execution or artifact that ``executions`` (and
    the artifacts of their events) would change."""
    for incoming in executions:
        execution = _find_execution(store, merger, incoming, by_uuid)
        if execution is not None:
            uuids = _exec_props(incoming).get("Execution_uuid")
            record = f"pipeline {pipeline!r}, execution {uuids or incoming['name']}"
            _clash(execution.properties, _merged_props(incoming, skip=LATEST), f"{record}: property")
            _clash(execution.custom_properties, incoming.get("custom_properties"), f"{record}: custom property")
        for event in incoming.get("events", []):
            spec = event["artifact"]
            artifact = merger.artifact(spec["type"], spec["name"])
            if artifact is not None:
                _clash(artifact.custom_properties, spec.get("custom_properties"),
                       f"pipeline {pipeline!r}, {spec['type']} artifact {spec['name']!r}: custom property")


def _clash(stored: Any, incoming: Optional[Mapping[str, Any]], what: str) -> None:
    """Raise :class:`Clash` if a key of ``incoming`` holds another value in the property map ``stored``."""
    for key, value in (incoming or {}).items():
        if key in stored and stored[key].item() != records.value_item(value):
            raise Clash(f"clash at {what} {key!r} is {records.from_value(stored[key])!r} in the store but "
                        f"{value!r} in the payload; nothing was merged")


def _known_executions(store, pipeline_id: int, uuids: Set[str]) -> Dict[str, mlmd.Execution]:
    """The pipeline's stored executions that have any of ``uuids``, by each of their uuids.

    A store that can look executions up by uuid (cmf's SQL store) is asked for just those, so a push of one
    execution costs the same into a pipeline of 10,000; through ml-metadata's API every execution of the
    pipeline is read.
    """
    lookup = getattr(store, "get_pipeline_executions_by_uuids", None)
    executions = lookup(pipeline_id, sorted(uuids)) if lookup else [
        e for stage in store.get_children_contexts_by_context(pipeline_id)
        for e in store.get_executions_by_context(stage.id)]
    return {u: e for e in executions for u in _uuids(e.properties["Execution_uuid"].string_value)}


def _find_execution(store, merger: _Merger, incoming: Dict[str, Any],
                    by_uuid: Dict[str, mlmd.Execution]) -> Optional[mlmd.Execution]:
    """The stored execution, or the one this merge creates, that ``incoming`` is: by uuid, else by name."""
    for u in _uuids(_exec_props(incoming).get("Execution_uuid", "")):
        if u in by_uuid:
            return by_uuid[u]
    if incoming.get("name"):
        key = (incoming["type"], incoming["name"])
        return merger.new_named[key] if key in merger.new_named else store.get_execution_by_type_and_name(*key)
    return None


def _plan_stage(store, merger: _Merger, result: MergeResult, parent: mlmd.Context, stage_ctx: mlmd.Context,
                executions: List[Dict[str, Any]], by_uuid: Dict[str, mlmd.Execution]) -> None:
    """Match a stage's executions of the payload, update the stored ones it changes, and plan what is created
    (:class:`_Unit`, written by :func:`_create`)."""
    planned: List[Tuple[Dict[str, Any], _Unit]] = []
    for incoming in executions:
        execution = _find_execution(store, merger, incoming, by_uuid)
        if execution is None:
            execution = mlmd.Execution(type_id=merger.types.execution(incoming["type"]))
            if incoming.get("name"):
                execution.name = incoming["name"]
                merger.new_named[(incoming["type"], incoming["name"])] = execution
            props = dict(_exec_props(incoming))
            props.update({"Context_ID": stage_ctx.id, "Pipeline_id": parent.id})
            records.set_props(execution.properties, props)
            records.set_props(execution.custom_properties, incoming.get("custom_properties"))
            _new_times(execution, incoming)
            result.executions += 1
        elif execution.HasField("id"):  # stored (one the merge creates is planned as its payload has it)
            mine = _uuids(execution.properties["Execution_uuid"].string_value)
            union = mine + [u for u in _uuids(_exec_props(incoming).get("Execution_uuid", "")) if u not in mine]
            changed = _changed(execution.properties, {**_merged_props(incoming), "Execution_uuid": ",".join(union)})
            changed |= _changed(execution.custom_properties, incoming.get("custom_properties") or {})
            if _touched(execution, incoming, changed):
                store.put_executions([execution])
                result.updated += 1
        for u in _uuids(execution.properties["Execution_uuid"].string_value):
            by_uuid[u] = execution
        unit = merger.units.get(id(execution))
        if unit is None:
            unit = merger.units[id(execution)] = _Unit(execution, stage_ctx, _order(execution, len(merger.units)))
        planned.append((incoming, unit))
    matched = [unit.execution.id for _, unit in planned if unit.execution.HasField("id")]
    existing_events = {(e.execution_id, e.artifact_id, e.type) for e in store.get_events_by_execution_ids(matched)} \
        if matched else set()

    for incoming, unit in planned:
        for event in incoming.get("events", []):
            spec = event["artifact"]
            key = (spec["type"], spec["name"])
            artifact = merger.new_artifacts[key] if key in merger.new_artifacts else merger.artifact(*key)
            if artifact is None:
                artifact = mlmd.Artifact(type_id=merger.artifact_type(spec["type"], spec.get("properties") or {}),
                                       name=spec["name"], uri=spec.get("uri", ""))
                records.set_props(artifact.properties, spec.get("properties"))
                records.set_props(artifact.custom_properties, spec.get("custom_properties"))
                _new_times(artifact, spec)
                merger.new_artifacts[key] = artifact
                merger.stage_of[id(artifact)] = stage_ctx
                result.artifacts += 1
            elif not artifact.HasField("id"):  # new in the payload, named again: it gets the newest update time
                _newer_update(artifact, spec)
            else:
                if _touched(artifact, spec, _merge_artifact(artifact, spec)):
                    merger.changed_artifacts[artifact.id] = artifact
                if unit.execution.HasField("id") and \
                        (unit.execution.id, artifact.id, event["type"]) in existing_events:
                    continue
            unit.events.append((artifact, event["type"]))
            result.events += 1


def _create(store, merger: _Merger) -> None:
    """Create the planned executions and artifacts, each in the order of their logged create times (ties in the
    payload's order), with their events, in one write; then link each to its stage."""
    units = sorted(merger.units.values(), key=lambda unit: unit.order)
    executions = [unit.execution for unit in units if not unit.execution.HasField("id")]
    artifacts = [a for _, a in sorted((_order(a, seq), a) for seq, a in enumerate(merger.new_artifacts.values()))]
    execution_index = {id(e): i for i, e in enumerate(executions)}
    artifact_index = {id(a): i for i, a in enumerate(artifacts)}
    edges: List[Tuple[Optional[int], Optional[int], mlmd.Event]] = []
    for unit in units:
        for artifact, kind in unit.events:
            edge = mlmd.Event.of_row({"type": kind})
            e, a = execution_index.get(id(unit.execution)), artifact_index.get(id(artifact))
            if e is None:
                edge.execution_id = unit.execution.id
            if a is None:
                edge.artifact_id = artifact.id
            edges.append((e, a, edge))
    if not (executions or artifacts or edges):
        return
    execution_ids, artifact_ids, _ = store.put_lineage_subgraph(executions, artifacts, [], edges)
    for node, node_id in zip(executions + artifacts, execution_ids + artifact_ids):
        node.id = node_id
    store.put_attributions_and_associations(
        [mlmd.Attribution(context_id=merger.stage_of[id(a)].id, artifact_id=a.id) for a in artifacts],
        [mlmd.Association(context_id=merger.units[id(e)].stage.id, execution_id=e.id) for e in executions])


def _merge_artifact(artifact: mlmd.Artifact, spec: Dict[str, Any]) -> bool:
    """Merge an incoming artifact's custom properties and url into an existing one; whether it changed."""
    changed = _changed(artifact.custom_properties, spec.get("custom_properties") or {})
    url = (spec.get("properties") or {}).get("url")
    if isinstance(url, str) and url:
        old = artifact.properties["url"].string_value if "url" in artifact.properties else ""
        parts = [p for p in old.split(",") if p]
        new = [p for p in url.split(",") if p and p not in parts]
        if new:
            artifact.properties["url"].string_value = ",".join(parts + new)
            changed = True
    return changed
