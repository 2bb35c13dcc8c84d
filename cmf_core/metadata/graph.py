"""Mirror of the ML Metadata records into a Neo4j graph (``Cmf(..., graph=True)``).

Every pipeline, stage, execution and artifact the logger records is also merged into Neo4j,
with the graph model of cmflib 0.1.0's ``graph_wrapper``:

* ``(:Pipeline)-[:contains]->(:Stage)-[:runs]->(:Execution)``, each keyed by ``uri`` = the
  ML Metadata id as a string;
* artifacts (``Dataset``, ``Model``, ``Metrics``, ``Step_Metrics``, ``Dataslice``, ``Environment``,
  ``Label``) keyed by ``uri``; ``(artifact)-[:input]->(execution)`` for what an execution consumes
  and ``(execution)-[:output]->(artifact)`` for what it produces;
* ``(producer:Execution)-[:linked {uri, Artifact_Name}]->(consumer:Execution)`` when an execution
  reads an artifact another one wrote, ``(input)-[:derived]->(output)`` between the artifacts of
  one execution, ``(:Dataset)-[:has_label]->(:Label)`` and ``(:Dataset)-[:contains]->(:Dataslice)``.

Every value travels as a query parameter; labels and relationship types, which Cypher cannot take
as parameters, come only from the constants of this module. Every write is a MERGE, so logging the
same record twice leaves the graph as it was.

No Neo4j server could be obtained where this was written: the module is tested only against a
fake driver that records the Cypher and parameters it receives (tests/test_graph.py).
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from cmf_core.errors import CmfError

ARTIFACT_KINDS = frozenset({"Dataset", "Model", "Metrics", "Step_Metrics", "Dataslice", "Environment", "Label"})
"""The only artifact labels ever written into a query."""

# As in the original, these kinds are keyed by uri alone and their Name, Path, pipeline_id and
# pipeline_name grow into lists of distinct strings (the same content logged under two names keeps
# both), so ``'x' IN n.Name`` finds them. Metrics and Step_Metrics keep plain values.
_LIST_NAMED_KINDS = ARTIFACT_KINDS - {"Metrics", "Step_Metrics"}
_ACCUMULATED_KEYS = ("Name", "Path", "pipeline_id", "pipeline_name")
_ARTIFACT_KEYS = frozenset({"uri", *_ACCUMULATED_KEYS})

_INT64 = range(-(2**63), 2**63)

Statement = Tuple[str, Dict[str, Any]]

_PIPELINE = "MERGE (p:Pipeline {uri: $uri}) SET p += $props"
_STAGE = ("MERGE (s:Stage {uri: $uri}) SET s += $props "
          "WITH s MATCH (p:Pipeline {uri: $pipeline_uri}) MERGE (p)-[:contains]->(s)")
_EXECUTION = ("MERGE (e:Execution {uri: $uri}) SET e += $props "
              "WITH e MATCH (s:Stage {uri: $stage_uri}) MERGE (s)-[:runs]->(e)")
_ARTIFACT = "MERGE (a:{label} {{uri: $uri}}) SET a += $props"
_ACCUMULATE = ", a.{key} = coalesce([x IN a.{key} WHERE x <> $acc_{key}], []) + $acc_{key}"
_INPUT = " WITH a MATCH (e:Execution {uri: $execution_uri}) MERGE (a)-[:input]->(e)"
_OUTPUT = " WITH a MATCH (e:Execution {uri: $execution_uri}) MERGE (e)-[:output]->(a)"
_HAS_LABEL = " WITH a MATCH (d:Dataset {uri: $dataset_uri}) MERGE (d)-[:has_label]->(a)"
_SLICE_OF = " WITH a MATCH (d:Dataset) WHERE $parent IN d.Name MERGE (d)-[:contains]->(a)"
_LINKED = ("MATCH (:{label} {{uri: $uri}})<-[:output]-(producer:Execution) "
           "MATCH (consumer:Execution {{uri: $execution_uri}}) WHERE producer <> consumer "
           "MERGE (producer)-[r:linked {{uri: $uri}}]->(consumer) SET r.Artifact_Name = $name")
_DERIVED = ("MATCH (a:{source} {{uri: $source_uri}}), (b:{target} {{uri: $target_uri}}) "
            "MERGE (a)-[r:derived {{Execution_Name: $execution_name}}]->(b) SET r += $props")


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact already in the graph, as the lineage of an execution refers to it."""

    kind: str
    name: str
    uri: str


class GraphMirror:
    """Writes the metadata graph into Neo4j; one session and one write transaction per call."""

    def __init__(self, uri: str, user: str, password: str, driver: object = None) -> None:
        """Connect with the official ``neo4j`` driver, or use ``driver`` (tests inject a fake)."""
        if driver is None:
            try:
                from neo4j import GraphDatabase
            except ImportError:
                raise CmfError("graph=True needs the neo4j driver: pip install 'cmf-ml[graph]'") from None
            driver = GraphDatabase.driver(uri, auth=(user, password))
        self._driver: Any = driver
        self._uri = uri

    def close(self) -> None:
        """Close the driver and its connections."""
        self._driver.close()

    def pipeline(self, name: str, pipeline_id: int, props: Mapping[str, object]) -> None:
        """Merge ``(:Pipeline {uri: id})`` with Name, pipeline_id, pipeline_name and ``props``."""
        fixed = {"Name": name, "uri": str(pipeline_id), "pipeline_id": str(pipeline_id), "pipeline_name": name}
        self._write((_PIPELINE, {"uri": str(pipeline_id), "props": {**_properties(props), **fixed}}))

    def stage(self, name: str, stage_id: int, pipeline_name: str, pipeline_id: int,
              props: Mapping[str, object]) -> None:
        """Merge ``(:Stage {uri: id})`` and ``(:Pipeline)-[:contains]->(:Stage)``."""
        fixed = {"Name": name, "uri": str(stage_id), "pipeline_id": str(pipeline_id), "pipeline_name": pipeline_name}
        self._write((_STAGE, {"uri": str(stage_id), "pipeline_uri": str(pipeline_id),
                              "props": {**_properties(props), **fixed}}))

    def execution(self, name: str, execution_id: int, stage_id: int, pipeline_name: str, pipeline_id: int,
                  command: str, props: Mapping[str, object]) -> None:
        """Merge ``(:Execution {uri: id})`` (with its Command) and ``(:Stage)-[:runs]->(:Execution)``."""
        fixed = {"Name": name, "Command": command, "uri": str(execution_id), "pipeline_id": str(pipeline_id),
                 "pipeline_name": pipeline_name}
        self._write((_EXECUTION, {"uri": str(execution_id), "stage_uri": str(stage_id),
                                  "props": {**_properties(props), **fixed}}))

    def artifact(self, kind: str, name: str, uri: str, event: str, execution_id: int, pipeline_name: str,
                 pipeline_id: int, props: Mapping[str, object], path: str = "") -> None:
        """Merge the artifact node ``(:<kind> {uri})`` and its edge to the execution:
        ``(artifact)-[:input]->(execution)`` for event "input", ``(execution)-[:output]->(artifact)``
        for "output"."""
        label = _label(kind)
        link = {"input": _INPUT, "output": _OUTPUT}.get(event.lower())
        if link is None:
            raise ValueError(f"event must be 'input' or 'output', not {event!r}")
        query, params = _merge_artifact(label, uri, name, path, props, pipeline_name, pipeline_id)
        self._write((query + link, {**params, "execution_uri": str(execution_id)}))

    def execution_links(self, uri: str, name: str, kind: str, execution_id: int) -> None:
        """For an input artifact: ``(producer)-[:linked {uri, Artifact_Name}]->(consumer)`` from every
        execution that output an artifact with this uri to the execution ``execution_id``."""
        query = _LINKED.format(label=_label(kind))
        self._write((query, {"uri": uri, "name": name, "execution_uri": str(execution_id)}))

    def lineage(self, inputs: Sequence[ArtifactRef], output: ArtifactRef,
                execution_props: Mapping[str, object]) -> None:
        """For an output artifact: ``(input)-[:derived {Execution_Name, stage, ...}]->(output)`` from
        each input of the current execution, carrying ``execution_props`` (the original named the
        relationship after the stage; here the stage is the ``stage`` property)."""
        target = _label(output.kind)
        sources = [_label(ref.kind) for ref in inputs]
        if not inputs:
            return
        rel_props = _properties(execution_props)
        execution_name = str(rel_props.get("Execution_Name", ""))
        rel_props["stage"] = re.sub(r"\W+", "", execution_name.rsplit(":", 1)[0])
        self._write(*(
            (_DERIVED.format(source=source, target=target),
             {"source_uri": ref.uri, "target_uri": output.uri, "execution_name": execution_name,
              "props": rel_props})
            for source, ref in zip(sources, inputs)))

    def label(self, name: str, uri: str, execution_id: int, dataset_uri: str, pipeline_name: str,
              pipeline_id: int, props: Mapping[str, object], path: str = "") -> None:
        """Merge ``(:Label {uri})`` and, if ``dataset_uri`` is given, ``(:Dataset)-[:has_label]->(:Label)``.
        Like the original, the label is not linked to the execution ``execution_id``."""
        query, params = _merge_artifact("Label", uri, name, path, props, pipeline_name, pipeline_id)
        if dataset_uri:
            query, params = query + _HAS_LABEL, {**params, "dataset_uri": dataset_uri}
        self._write((query, params))

    def dataslice(self, name: str, uri: str, parent: str, props: Mapping[str, object], path: str = "") -> None:
        """Merge ``(:Dataslice {uri})`` and ``(:Dataset)-[:contains]->(:Dataslice)`` from every
        dataset that has ``parent`` among its names."""
        query, params = _merge_artifact("Dataslice", uri, name, path, props)
        self._write((query + _SLICE_OF, {**params, "parent": parent}))

    def _write(self, *statements: Statement) -> None:
        try:
            with self._driver.session() as session:
                session.execute_write(_run_all, statements)
        except Exception as exc:  # the driver's own errors (unreachable, auth) become one clear message
            if not type(exc).__module__.startswith("neo4j"):
                raise
            raise CmfError(f"Neo4j at {self._uri} refused the graph update: {type(exc).__name__}: {exc}") from None


def _run_all(tx: Any, statements: Iterable[Statement]) -> None:
    for query, params in statements:
        tx.run(query, params)


def _label(kind: str) -> str:
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {sorted(ARTIFACT_KINDS)}")
    return kind


def _merge_artifact(label: str, uri: str, name: str, path: str, props: Mapping[str, object],
                    pipeline_name: Optional[str] = None, pipeline_id: Optional[int] = None) -> Statement:
    """The MERGE of an artifact node, binding it to ``a`` for a following ``WITH a ...``."""
    own = {"Name": name, "Path": path, "pipeline_id": None if pipeline_id is None else str(pipeline_id),
           "pipeline_name": pipeline_name}
    own = {key: value for key, value in own.items() if value not in (None, "")}
    custom = {key: value for key, value in _properties(props).items() if key not in _ARTIFACT_KEYS}
    query = _ARTIFACT.format(label=label)
    if label not in _LIST_NAMED_KINDS:
        return query, {"uri": uri, "props": {**custom, **own, "uri": uri}}
    query += "".join(_ACCUMULATE.format(key=key) for key in _ACCUMULATED_KEYS if key in own)
    return query, {"uri": uri, "props": {**custom, "uri": uri}, **{f"acc_{k}": v for k, v in own.items()}}


def _properties(props: Mapping[str, object]) -> Dict[str, Any]:
    """Keys as the original writes them ('-' -> '_', other non-word characters dropped); values
    that Neo4j stores as they are (bool, int64, float, str) kept, None dropped, anything else str()."""
    out: Dict[str, Any] = {}
    for key, value in props.items():
        key = re.sub(r"\W+", "", str(key).replace("-", "_"))
        if key and value is not None:
            out[key] = _value(value)
    return out


def _value(value: object) -> Any:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value) if int(value) in _INT64 else str(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)
