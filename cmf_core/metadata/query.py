"""``CmfQuery``: read pipelines, stages, executions, artifacts and lineage from an mlmd file.

The public methods, their parameters and their results (pandas DataFrames, lists,
MLMD protos, the export JSON of :meth:`CmfQuery.dumptojson`) are those of the
original cmflib's ``cmfquery``:

* a DataFrame row of an execution or artifact has the entity's properties as plain
  columns and its custom properties as ``custom_properties_<key>`` columns (with
  ``_1``, ``_2``... appended when that clashes), plus ``id``/``name`` (executions)
  or ``id``/``type``/``uri``/``name``/``create_time_since_epoch``/
  ``last_update_time_since_epoch`` (artifacts); frames of several rows have their
  columns sorted by name, as the original's ``pd.concat(..., sort=True)`` leaves them;
* unknown names give an empty DataFrame, an empty list, ``-1`` or ``None``.

Unlike the original it never creates the mlmd file (a missing or corrupt file is a
:class:`~cmf_core.errors.CmfError`), keeps custom property types (bool, int, float,
str), reads with a few batched store calls instead of one per row, and walks lineage
level by level.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple


from cmf_core.errors import CmfError
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata.databases import open_server_store
from cmf_core.metadata.store import PARENT_CONTEXT, STAGE_CONTEXT, from_value, open_store

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made: it costs half a second that listings need not pay
    import pandas as pd

__all__ = ["CmfQuery", "EXCLUDED_ARTIFACT_TYPES"]

#: Artifact types left out of :meth:`CmfQuery.get_one_hop_parent_artifacts_with_id` (lineage views).
EXCLUDED_ARTIFACT_TYPES = ["Environment", "Label"]

INPUT, OUTPUT = mlmd.Event.INPUT, mlmd.Event.OUTPUT
#: Node attributes the export JSON keeps, in the order the original adds them.
_EXPORT_ATTRS = ("create_time_since_epoch", "custom_properties", "id", "last_update_time_since_epoch", "name",
                 "properties", "type", "type_id", "uri")


def _row(node: Any, initial: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """One DataFrame row: ``initial``, then properties as plain columns, then prefixed custom properties."""
    row = dict(initial or {})
    for key, value in node.properties.items():
        row[key] = from_value(value)
    for key, value in node.custom_properties.items():
        column = base = f"custom_properties_{key}"
        index = 0
        while column in row:
            index += 1
            column = f"{base}_{index}"
        row[column] = from_value(value)
    return row


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with columns sorted by name; no rows give an empty DataFrame."""
    import pandas as pd

    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(list(rows))
    return frame[sorted(frame.columns)]


def _records(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The rows of ``_frame(rows)`` as JSON-ready dicts, without pandas: every column in every row (None where
    a row has no value), sorted by name."""
    columns = sorted(set().union(*rows))
    return [{column: row.get(column) for column in columns} for row in rows]


def _export_attrs(node: Any, initial: Mapping[str, Any]) -> Dict[str, Any]:
    """A node's attributes for the export JSON (the node, or its :meth:`~cmf_core.metadata.messages.Message.plain`
    fields); a custom property ``type`` becomes ``user_type``."""
    attrs = dict(initial)
    fields = node if isinstance(node, dict) else node.plain()
    for name in _EXPORT_ATTRS:
        value = fields.get(name)
        if value is None or value == "":
            continue
        if name == "custom_properties":
            value = {("user_type" if key == "type" else key): v for key, v in value.items()}
        attrs[name] = value
    return attrs


def _uuids(execution: mlmd.Execution) -> List[str]:
    return execution.properties["Execution_uuid"].string_value.split(",")


def _in_pipeline(execution: mlmd.Execution, pipeline_id: Optional[int]) -> bool:
    return pipeline_id is None or str(from_value(execution.properties["Pipeline_id"])) == str(pipeline_id)


class CmfQuery:
    """Read access to the mlmd file ``filepath`` (never created, never written), or with ``is_server=True`` to
    the PostgreSQL store that the ``POSTGRES_*`` environment variables name, as the original (or the MySQL store
    that ``MYSQL_*`` name).
    Names are fully qualified as stored: stages ``<pipeline>/<stage>``, artifacts
    ``<path>:<md5>...``.
    """

    def __init__(self, filepath: str = "mlmd", is_server: bool = False) -> None:
        self.filepath = filepath
        self.is_server = is_server
        self.store = open_server_store(create=False) if is_server else open_store(filepath, create=False)
        self._type_names: Dict[str, Dict[int, str]] = {}

    # -- store helpers (each one or two batched store calls) ----------------------------------------

    def _type_name(self, node: Any, kind: str) -> str:
        """The type name of an artifact or execution; the stores fill ``node.type``, else the types are read once."""
        return node.type or self._type_names_of(kind).get(node.type_id, "")

    def _type_names_of(self, kind: str) -> Dict[int, str]:
        """The names of the artifact or execution types, by id (read once)."""
        if kind not in self._type_names:
            types = self.store.get_artifact_types() if kind == "artifact" else self.store.get_execution_types()
            self._type_names[kind] = {t.id: t.name for t in types}
        return self._type_names[kind]

    def _pipelines(self, name: Optional[str] = None) -> List[mlmd.Context]:
        return [c for c in self.store.get_contexts_by_type(PARENT_CONTEXT) if name is None or c.name == name]

    def _stage(self, stage_name: str) -> Optional[mlmd.Context]:
        return self.store.get_context_by_type_and_name(STAGE_CONTEXT, stage_name)

    def _stage_executions(self, stage_name: str) -> List[mlmd.Execution]:
        stage = self._stage(stage_name)
        return list(self.store.get_executions_by_context(stage.id)) if stage else []

    def _artifact(self, name: str) -> Optional[mlmd.Artifact]:
        name = name.strip()
        return next((a for a in self.store.get_artifacts() if a.name == name), None)

    def _artifacts(self, ids: Iterable[int]) -> List[mlmd.Artifact]:
        ids = sorted(set(ids))
        return list(self.store.get_artifacts_by_id(ids)) if ids else []

    def _executions(self, ids: Iterable[int]) -> List[mlmd.Execution]:
        ids = sorted(set(ids))
        return list(self.store.get_executions_by_id(ids)) if ids else []

    def _events_of_executions(self, ids: Iterable[int]) -> List[mlmd.Event]:
        ids = sorted(set(ids))
        return list(self.store.get_events_by_execution_ids(ids)) if ids else []

    def _events_of_artifacts(self, ids: Iterable[int]) -> List[mlmd.Event]:
        ids = sorted(set(ids))
        return list(self.store.get_events_by_artifact_ids(ids)) if ids else []

    def _pipeline_filter(self, execution_ids: Iterable[int], pipeline_id: Optional[int]) -> Set[int]:
        """The executions among ``execution_ids`` of pipeline ``pipeline_id`` (all when it is None)."""
        ids = set(execution_ids)
        if pipeline_id is None or not ids:
            return ids
        return {e.id for e in self._executions(ids) if _in_pipeline(e, pipeline_id)}

    def _hop(self, artifact_ids: Iterable[int], up: bool, pipeline_id: Optional[int] = None) -> Dict[int, List[int]]:
        """One lineage hop for each artifact: its parents (inputs of its producers) or its children
        (outputs of its consumers), sorted by id. Two or three store calls for all the artifacts."""
        link, follow = (OUTPUT, INPUT) if up else (INPUT, OUTPUT)
        executions: Dict[int, Set[int]] = {a: set() for a in artifact_ids}
        for ev in self._events_of_artifacts(executions):
            if ev.type == link:
                executions[ev.artifact_id].add(ev.execution_id)
        wanted = self._pipeline_filter(set().union(*executions.values()), pipeline_id)
        reached: Dict[int, Set[int]] = {}
        for ev in self._events_of_executions(wanted):
            if ev.type == follow:
                reached.setdefault(ev.execution_id, set()).add(ev.artifact_id)
        return {a: sorted(set().union(*(reached.get(e, set()) for e in execs if e in wanted)))
                for a, execs in executions.items()}

    def _lineage(self, artifact_id: int, up: bool) -> List[int]:
        """All ancestors (``up``) or descendants of an artifact, in the order the original's recursion lists
        them (one hop, then each of those expanded in turn); the graph is read one level per batch."""
        graph: Dict[int, List[int]] = {}
        frontier = [artifact_id]
        while frontier:
            graph.update(self._hop(frontier, up))
            frontier = sorted({n for hops in graph.values() for n in hops} - graph.keys())
        order: Dict[int, None] = {}
        expanded: Set[int] = set()
        stack = [artifact_id]
        while stack:  # depth-first: a node's hop list, then each of its members expanded, left to right
            node = stack.pop()
            if node in expanded:
                continue
            expanded.add(node)
            order.update(dict.fromkeys(graph.get(node, [])))
            stack.extend(reversed(graph.get(node, [])))
        return list(order)

    # -- DataFrame rows ---------------------------------------------------------------------------

    def _artifact_row(self, artifact: mlmd.Artifact, initial: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        return _row(artifact, {**(initial or {}), "id": artifact.id, "type": self._type_name(artifact, "artifact"),
                               "uri": artifact.uri, "name": artifact.name,
                               "create_time_since_epoch": artifact.create_time_since_epoch,
                               "last_update_time_since_epoch": artifact.last_update_time_since_epoch})

    def _artifacts_frame(self, artifacts: Iterable[mlmd.Artifact]) -> pd.DataFrame:
        return _frame([self._artifact_row(a) for a in artifacts])

    @staticmethod
    def _executions_frame(executions: Iterable[mlmd.Execution], with_id: bool = True) -> pd.DataFrame:
        return _frame([_row(e, {"id": e.id, "name": e.name} if with_id else None) for e in executions])

    def _linked_executions(self, artifact_id: int) -> pd.DataFrame:
        """Executions with an event on the artifact: Type, execution_id/name/type_name, stage, pipeline."""
        events = self._events_of_artifacts([artifact_id])
        executions = {e.id: e for e in self._executions(ev.execution_id for ev in events)}
        context_ids = {from_value(e.properties[p]) for e in executions.values() for p in ("Context_ID", "Pipeline_id")}
        context_ids = sorted(i for i in context_ids if i)
        contexts = {c.id: c.name for c in self.store.get_contexts_by_id(context_ids)} if context_ids else {}
        rows = []
        for ev in events:
            execution = executions.get(ev.execution_id)
            if execution is None:
                continue
            stage = contexts.get(from_value(execution.properties["Context_ID"]))
            pipeline = contexts.get(from_value(execution.properties["Pipeline_id"]))
            if stage is None or pipeline is None:  # not written by cmf: ask the store for its contexts
                stage_ctx = next(iter(self.store.get_contexts_by_execution(execution.id)), None)
                parents = self.store.get_parent_contexts_by_context(stage_ctx.id) if stage_ctx else []
                stage = stage_ctx.name if stage_ctx else ""
                pipeline = parents[0].name if parents else ""
            rows.append({"Type": "INPUT" if ev.type == INPUT else "OUTPUT", "execution_id": ev.execution_id,
                         "execution_name": execution.name,
                         "execution_type_name": execution.properties["Execution_type_name"].string_value,
                         "stage": stage, "pipeline": pipeline})
        return _frame(rows)

    # -- pipelines and stages ---------------------------------------------------------------------

    def get_pipeline_names(self) -> List[str]:
        """Names of all pipelines."""
        return [p.name for p in self._pipelines()]

    def get_pipeline_id(self, pipeline_name: str) -> int:
        """The id of pipeline ``pipeline_name``, or -1 when there is none."""
        pipelines = self._pipelines(pipeline_name)
        return pipelines[0].id if pipelines else -1

    def get_pipeline_stages(self, pipeline_name: str) -> List[str]:
        """Names (``<pipeline>/<stage>``) of the stages of a pipeline."""
        return [stage.name for p in self._pipelines(pipeline_name)
                for stage in self.store.get_children_contexts_by_context(p.id)]

    # -- executions -------------------------------------------------------------------------------

    def get_all_exe_in_stage(self, stage_name: str) -> List[mlmd.Execution]:
        """The executions (MLMD protos) of stage ``stage_name``."""
        return self._stage_executions(stage_name)

    def get_all_executions_in_stage(self, stage_name: str) -> pd.DataFrame:
        """The executions of stage ``stage_name``, one row each (``id``, ``name``, properties)."""
        return self._executions_frame(self._stage_executions(stage_name))

    def get_all_executions_by_ids_list(self, exe_ids: List[int]) -> pd.DataFrame:
        """The executions with these ids: properties and custom properties only (no id column, as the original)."""
        return self._executions_frame(self.store.get_executions_by_id(list(exe_ids)) if exe_ids else [],
                                      with_id=False)

    def get_all_executions_in_pipeline(self, pipeline_name: str) -> pd.DataFrame:
        """The executions of every stage of a pipeline, one row each."""
        pipeline_id = self.get_pipeline_id(pipeline_name)
        if pipeline_id == -1:
            return _frame([])
        stages = self.store.get_children_contexts_by_context(pipeline_id)
        return self._executions_frame([e for s in stages for e in self.store.get_executions_by_context(s.id)])

    def get_executions_with_execution_ids(self, exe_ids: List[int]) -> pd.DataFrame:
        """``id``, ``Execution_type_name`` and ``Execution_uuid`` of the executions with these ids."""
        frame = self._executions_frame(self.store.get_executions_by_id(list(exe_ids)) if exe_ids else [])
        columns = ["id", "Execution_type_name", "Execution_uuid"]
        return frame.reindex(columns=columns) if frame.empty else frame[columns]

    def get_all_executions_by_stage(self, stage_id: int, execution_uuid: Optional[str] = None) -> List[mlmd.Execution]:
        """Executions of the stage with id ``stage_id``; with ``execution_uuid``, those having that uuid."""
        executions = self.store.get_executions_by_context(stage_id)
        return [e for e in executions if execution_uuid is None or execution_uuid in _uuids(e)]

    def get_all_executions_for_artifact(self, artifact_name: str) -> pd.DataFrame:
        """Executions that consumed or produced the artifact (columns ``Type``, ``execution_id``,
        ``execution_name``, ``execution_type_name``, ``stage``, ``pipeline``)."""
        artifact = self._artifact(artifact_name)
        return self._linked_executions(artifact.id) if artifact else _frame([])

    def get_all_executions_for_artifact_id(self, artifact_id: int) -> pd.DataFrame:
        """As :meth:`get_all_executions_for_artifact`, by artifact id."""
        return self._linked_executions(artifact_id)

    def find_producer_execution(self, artifact_name: str) -> Optional[mlmd.Execution]:
        """The (first) execution that produced the artifact, or None."""
        artifact = self._artifact(artifact_name)
        if artifact is None:
            return None
        producers = {ev.execution_id for ev in self._events_of_artifacts([artifact.id]) if ev.type == OUTPUT}
        return next(iter(self._executions(producers)), None)

    get_producer_execution = find_producer_execution

    def get_one_hop_parent_executions(self, execution_id: List[int],
                                      pipeline_id: Optional[int] = None) -> List[mlmd.Execution]:
        """Executions (protos) that produced the inputs of the given executions."""
        return self._executions(self.get_one_hop_parent_executions_ids(execution_id, pipeline_id))

    def get_one_hop_parent_executions_ids(self, execution_ids: List[int],
                                          pipeline_id: Optional[int] = None) -> List[int]:
        """Ids of the executions that produced the inputs of the given executions."""
        inputs = {ev.artifact_id for ev in self._events_of_executions(execution_ids) if ev.type == INPUT}
        producers = {ev.execution_id for ev in self._events_of_artifacts(inputs) if ev.type == OUTPUT}
        return sorted(self._pipeline_filter(producers, pipeline_id))

    def get_all_parent_executions_by_id(self, execution_id: List[int],
                                        pipeline_id: Optional[int] = None) -> List[List[Any]]:
        """All ancestor executions of the given ones: ``[[[id, Execution_type_name, Execution_uuid], ...],
        [{"source": parent id, "target": child id}, ...]]``, found level by level."""
        found: List[List[Any]] = []
        links: List[Dict[str, int]] = []
        seen: Set[int] = set(execution_id)
        frontier = sorted(seen)
        while frontier:
            input_of: Dict[int, Set[int]] = {}
            for ev in self._events_of_executions(frontier):
                if ev.type == INPUT:
                    input_of.setdefault(ev.artifact_id, set()).add(ev.execution_id)
            edges = sorted({(ev.execution_id, child) for ev in self._events_of_artifacts(input_of)
                            if ev.type == OUTPUT for child in input_of[ev.artifact_id]
                            if ev.execution_id != child})
            parents = {e.id: e for e in self._executions(p for p, _ in edges) if _in_pipeline(e, pipeline_id)}
            frontier = []
            for parent, child in edges:
                if parent not in parents:
                    continue
                links.append({"source": parent, "target": child})
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
                    p = parents[parent]
                    found.append([parent, p.properties["Execution_type_name"].string_value,
                                  p.properties["Execution_uuid"].string_value])
        return [found, links]

    # -- artifacts --------------------------------------------------------------------------------

    def get_artifact_df(self, artifact: mlmd.Artifact, d: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
        """One artifact as a one-row DataFrame (``d`` adds columns in front)."""
        import pandas as pd

        return pd.DataFrame(self._artifact_row(artifact, d), index=[0])

    def get_all_artifacts(self) -> List[str]:
        """Names of all artifacts."""
        return [a.name for a in self.store.get_artifacts()]

    get_artifact_names = get_all_artifacts

    def get_artifact(self, name: str) -> Optional[pd.DataFrame]:
        """The artifact named ``name`` as a one-row DataFrame, or None."""
        artifact = self._artifact(name)
        return self.get_artifact_df(artifact) if artifact else None

    def get_all_artifact_types(self) -> List[str]:
        """Names of all artifact types."""
        return [t.name for t in self.store.get_artifact_types()]

    def _pipeline_artifacts(self, pipeline_name: str) -> List[mlmd.Artifact]:
        """Artifacts attributed to the stages of a pipeline, once per stage."""
        pipeline_id = self.get_pipeline_id(pipeline_name)
        if pipeline_id == -1:
            return []
        stages = self.store.get_children_contexts_by_context(pipeline_id)
        return [a for s in stages for a in self.store.get_artifacts_by_context(s.id)]

    def get_all_artifacts_by_context(self, pipeline_name: str) -> pd.DataFrame:
        """Artifacts attributed to the stages of a pipeline (one row per stage and artifact)."""
        return self._artifacts_frame(self._pipeline_artifacts(pipeline_name))

    def artifact_rows(self, pipeline_name: str) -> List[Dict[str, Any]]:
        """The rows of :meth:`get_all_artifacts_by_context` as JSON-ready dicts, without loading pandas
        (``cmf artifact list`` has no use for a DataFrame)."""
        return _records([self._artifact_row(a) for a in self._pipeline_artifacts(pipeline_name)])

    def get_all_artifacts_by_ids_list(self, artifact_ids: List[int]) -> pd.DataFrame:
        """The artifacts with these ids."""
        return self._artifacts_frame(self.store.get_artifacts_by_id(list(artifact_ids)) if artifact_ids else [])

    def get_all_artifacts_for_execution(self, execution_id: int) -> pd.DataFrame:
        """Input and output artifacts of an execution, one row per event, with an ``event`` column."""
        events = self._events_of_executions([execution_id])
        artifacts = {a.id: a for a in self._artifacts(ev.artifact_id for ev in events)}
        return _frame([self._artifact_row(artifacts[ev.artifact_id],
                                          {"event": "INPUT" if ev.type == INPUT else "OUTPUT"})
                       for ev in events if ev.artifact_id in artifacts])

    def get_all_artifacts_for_executions(self, execution_ids: List[int]) -> pd.DataFrame:
        """Every artifact with an event of one of the executions, once each."""
        events = self._events_of_executions(execution_ids)
        return self._artifacts_frame(self._artifacts(ev.artifact_id for ev in events))

    # -- lineage ----------------------------------------------------------------------------------

    def get_one_hop_child_artifacts(self, artifact_name: str, pipeline_id: Optional[int] = None) -> pd.DataFrame:
        """Outputs of the executions (of pipeline ``pipeline_id``, if given) that consumed the artifact."""
        artifact = self._artifact(artifact_name)
        if artifact is None:
            return _frame([])
        children = self._hop([artifact.id], up=False, pipeline_id=pipeline_id)[artifact.id]
        return self._artifacts_frame(self._artifacts(children))

    def get_all_child_artifacts(self, artifact_name: str) -> pd.DataFrame:
        """All artifacts downstream of the artifact."""
        artifact = self._artifact(artifact_name)
        return self._lineage_frame(artifact, up=False)

    def get_one_hop_parent_artifacts(self, artifact_name: str) -> pd.DataFrame:
        """Inputs of the executions that produced the artifact."""
        artifact = self._artifact(artifact_name)
        if artifact is None:
            return _frame([])
        return self._artifacts_frame(self._artifacts(self._hop([artifact.id], up=True)[artifact.id]))

    def get_one_hop_parent_artifacts_with_id(self, artifact_id: int) -> pd.DataFrame:
        """As :meth:`get_one_hop_parent_artifacts`, by id, without ``EXCLUDED_ARTIFACT_TYPES``."""
        frame = self._artifacts_frame(self._artifacts(self._hop([artifact_id], up=True)[artifact_id]))
        return frame[~frame["type"].isin(EXCLUDED_ARTIFACT_TYPES)] if not frame.empty else frame

    def get_all_parent_artifacts(self, artifact_name: str) -> pd.DataFrame:
        """All artifacts upstream of the artifact."""
        artifact = self._artifact(artifact_name)
        return self._lineage_frame(artifact, up=True)

    def _lineage_frame(self, artifact: Optional[mlmd.Artifact], up: bool) -> pd.DataFrame:
        if artifact is None:
            return _frame([])
        ids = self._lineage(artifact.id, up)
        by_id = {a.id: a for a in self._artifacts(ids)}
        return self._artifacts_frame([by_id[i] for i in ids if i in by_id])

    def get_all_parent_executions(self, artifact_name: str) -> pd.DataFrame:
        """Executions that produced any upstream artifact of the artifact."""
        parents = self.get_all_parent_artifacts(artifact_name)
        if parents.empty:
            return _frame([])
        producers = {ev.execution_id for ev in self._events_of_artifacts(int(i) for i in parents["id"])
                     if ev.type == OUTPUT}
        return self._executions_frame(self._executions(producers))

    # -- metrics and data slices ------------------------------------------------------------------

    def get_metrics(self, metrics_name: str) -> Optional[pd.DataFrame]:
        """The steps committed under the Step_Metrics artifact named ``metrics_name``, or None.

        The parquet file is found from the artifact name (``<path>:<md5>:...``) relative to the
        mlmd file's directory; a metrics artifact whose file is not in the workspace is an error.
        """
        metric = next((m for m in self.store.get_artifacts_by_type("Step_Metrics") if m.name == metrics_name), None)
        if metric is None:
            return None
        stored = metric.custom_properties.get("Name")
        rel = stored.string_value if stored is not None and stored.string_value else metric.name.split(":")[0]
        candidates = [Path(self.filepath).absolute().parent / rel, Path(rel)]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise CmfError(f"the metrics file {rel} of {metrics_name} is not in the workspace; "
                           "pull it with 'cmf artifact pull'")
        import pandas as pd

        return pd.read_parquet(path)

    @staticmethod
    def read_dataslice(name: str) -> pd.DataFrame:
        """The data slice stored at path ``name``."""
        import pandas as pd

        return pd.read_parquet(name)

    # -- export -----------------------------------------------------------------------------------

    def _export_lineage(self, execution_ids: List[int]) -> Tuple[List[Tuple[int, int, int]], List[Dict[str, Any]]]:
        """The events of the executions as (execution id, artifact id, type) and their artifacts' fields
        (:meth:`~cmf_core.metadata.sqlstore.SqlStore.plain_lineage`, which cmf's store answers from its rows)."""
        if not execution_ids:
            return [], []
        if hasattr(self.store, "plain_lineage"):
            return self.store.plain_lineage(execution_ids)
        edges = [(ev.execution_id, ev.artifact_id, ev.type) for ev in self._events_of_executions(execution_ids)]
        return edges, [a.plain() for a in self._artifacts(a for _, a, _ in edges)]

    def _export(self, pipelines: List[mlmd.Context], exec_uuid: Optional[str] = None,
                last_sync_time: Optional[int] = None) -> Dict[str, Any]:
        """The export of ``pipelines`` (the JSON document, as a dict): contexts and executions per stage, then all
        events and artifacts in one batch each."""
        # the server keeps when it wrote each record: the logged update time it keeps may be older than that
        written = self.store.written_at() if last_sync_time and hasattr(self.store, "written_at") else {}

        def fresh(node: Any, kind: str = "context") -> bool:
            changed = written.get((kind, node.id), node.last_update_time_since_epoch)
            return not last_sync_time or changed > last_sync_time

        plan = [(p, [(s, [e for e in self.get_all_executions_by_stage(s.id, exec_uuid) if fresh(e, "execution")])
                     for s in self.store.get_children_contexts_by_context(p.id)]) for p in pipelines]
        edges, found = self._export_lineage(sorted({e.id for _, stages in plan for _, execs in stages for e in execs}))
        events: Dict[int, List[Tuple[int, int]]] = {}
        for execution_id, artifact_id, kind in edges:
            events.setdefault(execution_id, []).append((artifact_id, kind))
        # an artifact's attributes, made once however many events name it
        artifacts = {a["id"]: _export_attrs(a, {"type": a.get("type") or self._type_names_of("artifact")
                                                .get(a["type_id"], "")}) for a in found}

        def execution_attrs(e: mlmd.Execution) -> Dict[str, Any]:
            return _export_attrs(e, {"type": self._type_name(e, "execution"), "name": e.name,
                                     "events": [{"type": kind, "artifact": artifacts[artifact_id]}
                                                for artifact_id, kind in events.get(e.id, [])
                                                if artifact_id in artifacts]})

        def keep(node: Any, children: List[Any]) -> bool:
            return not last_sync_time or bool(children) or fresh(node)

        out = []
        for pipeline, stages in plan:
            stage_list = [_export_attrs(s, {"executions": [execution_attrs(e) for e in execs]})
                          for s, execs in stages if keep(s, execs)]
            if keep(pipeline, stage_list):
                out.append(_export_attrs(pipeline, {"stages": stage_list}))
        return {"Pipeline": out}

    def export(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> Dict[str, Any]:
        """:meth:`dumptojson`'s document as a dict, for a caller that reads it as well as sends it."""
        return self._export(self._pipelines(pipeline_name), exec_uuid)

    def dumptojson(self, pipeline_name: str, exec_uuid: Optional[str] = None) -> Optional[str]:
        """The pipeline as the original's export JSON: ``{"Pipeline": [{..., "stages": [{..., "executions":
        [{..., "events": [{"type": 3|4, "artifact": {...}}]}]}]}]}``. With ``exec_uuid``, only executions
        having that uuid among their comma-separated ``Execution_uuid`` values are kept."""
        return json.dumps(self.export(pipeline_name, exec_uuid))

    def extract_to_json(self, last_sync_time: int) -> str:
        """All pipelines as export JSON; with ``last_sync_time`` (ms since epoch) only executions updated
        after it, and the stages and pipelines that have such executions or were updated after it (on the
        server: written after it, see :meth:`~cmf_core.metadata.sqlstore.SqlStore.written_at`)."""
        return json.dumps(self._export(self._pipelines(), last_sync_time=last_sync_time))
