"""What each tool of ``cmf mcp`` answers: the output schemas it declares, which its structured content follows.

Times are ISO 8601 in UTC.  ``uri`` is the ``cmf://`` resource of a record, for an assistant to cite.
``notes`` says what was left out: a page cut, a long value shortened, a lineage past its node bound.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

Values = Dict[str, Any]
NOTES = Field(default_factory=list, description="what was cut or left out, and how to get the rest")


class Paged(BaseModel):
    total: int = Field(description="how many there are in all")
    page: int
    pages: int = Field(description="how many pages of this size there are")
    size: int = Field(description="items per page (at most 50)")
    notes: List[str] = NOTES


class PipelineItem(BaseModel):
    name: str
    stages: int
    executions: int
    artifacts: int
    created: Optional[str]
    updated: Optional[str]
    uri: str


class PipelineList(Paged):
    items: List[PipelineItem]


class ExecutionRef(BaseModel):
    id: int
    uuid: str = ""
    label: str = Field(description="the stage's type and the uuid's first 8 characters, as the UI shows it")
    stage: str
    pipeline: str = ""
    uri: str


class ExecutionItem(ExecutionRef):
    created: Optional[str]
    command: str
    params: Values
    metrics: Values = Field(description="values logged with log_execution_metrics")


class ExecutionList(Paged):
    pipeline: str
    sort: str
    order: str
    filter: Optional[str]
    params: List[str] = Field(description="parameter names, usable in a filter (lr > 0.01)")
    metrics: List[str] = Field(description="metric names, usable in a filter (metric.accuracy >= 0.9)")
    items: List[ExecutionItem]


class ArtifactRef(BaseModel):
    id: int
    name: str = Field(description="path:md5 as logged")
    label: str
    type: str
    md5: str
    uri: str


class StepMetrics(BaseModel):
    name: str
    artifact_id: int
    steps: Optional[int] = Field(description="how many steps were logged (null: the file is not held here)")
    columns: Dict[str, Values] = Field(description="min, max and last value of each column")


class Execution(ExecutionRef):
    type: str
    created: Optional[str]
    updated: Optional[str]
    command: str
    git: Dict[str, str]
    params: Values
    metrics: Values
    inputs: List[ArtifactRef]
    inputs_total: int
    outputs: List[ArtifactRef]
    outputs_total: int
    step_metrics: List[StepMetrics]
    notes: List[str] = NOTES


class ArtifactItem(ArtifactRef):
    created: Optional[str]
    custom_properties: Values


class ArtifactList(Paged):
    pipeline: str
    type: Optional[str]
    search: Optional[str]
    type_counts: Dict[str, int]
    items: List[ArtifactItem]


class Artifact(ArtifactRef):
    path: str
    size: Optional[int] = Field(description="bytes, when known")
    remote_urls: List[str] = Field(description="where cmf artifact push put it, per pipeline")
    pipelines: List[str]
    producers: List[ExecutionRef]
    producers_total: int
    consumers: List[ExecutionRef]
    consumers_total: int
    pull_command: Optional[str]
    created: Optional[str]
    updated: Optional[str]
    properties: Values
    custom_properties: Values
    notes: List[str] = NOTES


class LineageNode(BaseModel):
    key: str = Field(description="artifact:ID, execution:ID, or a cluster's id")
    kind: str = Field(description="artifact, execution, or cluster (many nodes drawn as one)")
    label: str
    type: str
    name: str = ""
    hops: Optional[int] = Field(default=None, description="edges from the focus")
    count: Optional[int] = Field(default=None, description="a cluster's members")


class LineageEdge(BaseModel):
    source: str
    target: str
    count: int = 1


class Lineage(BaseModel):
    pipeline: str
    focus: Optional[str]
    hops: int
    direction: str
    nodes_in_view: int = Field(description="nodes the view holds before the bound")
    shown: int
    cut: bool = Field(description="true when nodes were left out to keep to max_nodes")
    nodes: List[LineageNode]
    edges: List[LineageEdge]
    notes: List[str] = NOTES


class Producer(ExecutionRef):
    params: Values
    metrics: Values


class ModelCard(BaseModel):
    model: Artifact
    producers: List[Producer]
    consumers: List[ExecutionRef]
    inputs: List[ArtifactRef]
    outputs: List[ArtifactRef]
    notes: List[str] = NOTES


class Difference(BaseModel):
    group: str = Field(description="execution, param or metric")
    key: str
    values: List[Any] = Field(description="one per execution, in the order given")


class Comparison(BaseModel):
    executions: List[ExecutionRef]
    reference: int = Field(description="the id of the execution the others are compared with")
    differences: List[Difference]
    same: int = Field(description="how many compared values are equal in every execution")
    packages: Optional[Values] = Field(description="python packages changed, added or removed against the reference "
                                                   "(null: the environments are not held where this reads)")
    notes: List[str] = NOTES


class SearchHit(BaseModel):
    kind: str = Field(description="pipeline, stage, execution or artifact")
    id: int
    name: str
    label: str
    type: str
    pipelines: List[str]
    exact: bool
    uri: Optional[str]


class SearchResult(BaseModel):
    q: str
    total: int
    items: List[SearchHit]
    notes: List[str] = NOTES
