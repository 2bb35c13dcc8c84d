"""``Cmf``: log pipelines, stages, executions and artifacts to ML Metadata, versioned the DVC way.

Records have the original cmflib's shape (see :mod:`cmf_core.metadata.store`):

* a pipeline is a ``Parent_Context`` named after it; a stage a ``Pipeline_Stage``
  context named ``<pipeline>/<stage>``, child of the pipeline;
* an execution's type is the ``execution_type`` given (or, when executions are
  reused, the stage name), with the properties ``Context_Type``, ``Context_ID``,
  ``Execution``, ``Execution_type_name``, ``Pipeline_Type``, ``Pipeline_id``,
  ``Git_Repo``, ``Git_Start_Commit``, ``Git_End_Commit``, ``Execution_uuid``;
* artifacts are named ``<path>:<md5>`` (datasets, labels, dataslices, the
  Python environment), ``<path>:<md5>:<execution id>`` (models),
  ``<name>:<uuid>:<execution id>`` (metrics) and
  ``<path>:<md5>:<execution id>:<uuid>`` (step metrics); their uri is the md5
  (``....dir`` for a directory) and their ``url`` property
  ``<pipeline>:<remote url>/files/md5/xx/yyyy``.

Unlike the original it never changes the working directory, never switches
git branches, never exits the process, keeps custom property types, and
validates every input before it writes a record.

Several processes (and threads) may log into the same mlmd file at once: each
public method that writes runs as one unit under the file's write lock
(:func:`cmf_core.metadata.store.write_lock`, an ``flock`` on ``<mlmd>.lock``).
The unit covers its MLMD reads and writes, the DVC cache and ``.dvc`` file it
writes and the git staging and commit of ``finalize``, which share the
workspace's git index.  A unit that versions a large directory holds the lock
while it hashes; the other writers wait, none fails.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
import uuid
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, TypeVar
from urllib.parse import urlsplit, urlunsplit


from cmf_core import config, layout
from cmf_core.errors import CmfError
from cmf_core.metadata import databases
from cmf_core.metadata import messages as mlmd
from cmf_core.metadata import store as records
from cmf_core.metadata.store import first, props, set_props
from cmf_core.versioning import Versioner

if TYPE_CHECKING:  # pandas is imported where a table is written or read: it costs half a second
    import pandas as pd

_ENVIRONMENT: Optional[str] = None


def python_environment() -> str:
    """The installed distributions as ``name==version`` lines (what ``pip freeze`` lists), computed once."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        found = {}
        for dist in importlib_metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                found.setdefault(name.lower(), f"{name}=={dist.version}")
        _ENVIRONMENT = "".join(line + "\n" for _, line in sorted(found.items()))
    return _ENVIRONMENT


def _script_name() -> str:
    return os.path.splitext(os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "cmf"))[0] or "cmf"


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")))


Method = TypeVar("Method", bound=Callable[..., Any])


def _locked(method: Method) -> Method:
    """Run a method of ``Cmf``/``DataSlice`` as one unit under the mlmd file's write lock (``self.lock``), its
    records written in one transaction: all of them or, if it fails, none."""

    @functools.wraps(method)
    def run(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self._follow_replaced_file()
            with self.store.unit():
                return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


def _identity(path: str) -> Optional[Tuple[int, int]]:
    """Which file ``path`` is (device and inode), or ``None`` if there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _event_kind(event: str) -> str:
    kind = str(event).lower()
    if kind not in records.EVENTS:
        raise CmfError(f"unknown event type {event!r}: use 'input' or 'output'")
    return kind


class Cmf:
    """Logs the metadata of one pipeline into the mlmd file ``filepath``, or with ``is_server=True`` into the
    PostgreSQL store that the ``POSTGRES_*`` environment variables name (as the original), or the MySQL store that
    ``MYSQL_*`` name; files are then not versioned: only metadata, such as ``log_dataset_with_version``, is logged.

    ``filepath``'s directory is where relative artifact paths are resolved
    (as the original, which changed into it); it must lie in a workspace set up
    by ``cmf init``.  ``pipeline_name`` defaults to that directory's name.
    With ``graph=True`` every record is mirrored to the Neo4j server that
    ``cmf init --neo4j-*`` configured.
    """

    ARTIFACTS_PATH = "cmf_artifacts"
    DATASLICE_PATH = "dataslice"
    METRICS_PATH = "metrics"

    def __init__(self, filepath: str = "mlmd", pipeline_name: str = "",
                 custom_properties: Optional[Dict[str, Any]] = None, graph: bool = False,
                 is_server: bool = False) -> None:
        self.filepath = filepath
        self.base = Path(filepath).absolute().parent
        self.is_server = is_server
        self.graph = graph
        self.driver = None
        self.versioner: Optional[Versioner] = None
        self.remote_url = ""
        if not is_server:
            root = config.find_workspace(self.base)
            workspace = config.load(root)
            self.remote_url = workspace.remote.url if workspace.remote else ""
            self.versioner = Versioner(root, workspace.cache_settings)
            self.versioner.check_writable()  # before the mlmd or any file is written
            self.git_repo = self._git_repo()
            if graph:
                self.driver = self._graph(workspace.neo4j)
        else:
            self.git_repo = ""
        # the database (PostgreSQL, MySQL) serialises writers itself: each unit's transaction holds its write lock
        self.lock = contextlib.nullcontext() if is_server else records.write_lock(filepath)
        self.pipeline_name = pipeline_name or self.base.name
        with self.lock:  # a new file gets its schema, and the pipeline its context, once
            self.store = databases.open_server_store() if is_server else records.open_store(filepath)
            self.types = records.Types(self.store)
            self._identity = _identity(filepath)
            self.parent_context = records.get_or_create_context(self.store, self.types, records.PARENT_CONTEXT,
                                                                self.pipeline_name, custom_properties)
        self.child_context: Optional[mlmd.Context] = None
        self.execution: Optional[mlmd.Execution] = None
        self.execution_name = ""
        self.execution_command = ""
        self.metrics: Dict[str, Dict[int, Dict[str, Any]]] = {}
        self.input_artifacts: List[Any] = []
        self.execution_label_props: Dict[str, Any] = {}
        self._session_executions: Set[int] = set()
        if self.driver:
            self.driver.pipeline(self.pipeline_name, self.parent_context.id, custom_properties or {})

    def _follow_replaced_file(self) -> None:
        """Reopen the mlmd file if it was replaced since (``cmf metadata pull`` renames a merged copy over
        it, ids kept), so that records go into the file and not into the replaced one, which is gone."""
        identity = _identity(self.filepath)
        if identity is not None and identity != self._identity:
            self.store.close()
            self.store = records.open_store(self.filepath)
            self.types = records.Types(self.store)
            self._identity = identity

    # -- set-up helpers ---------------------------------------------------------------------------

    def _git_repo(self) -> str:
        repo = self.versioner.repo
        urls = [r.url for r in repo.remotes if r.name == "cmf_origin"] or [r.url for r in repo.remotes]
        return _without_credentials(urls[0]) if urls else ""

    @staticmethod
    def _graph(neo4j: Mapping[str, str]):
        from cmf_core.metadata.graph import GraphMirror

        if not (neo4j.get("uri") and neo4j.get("user")):
            raise CmfError("graph=True needs Neo4j settings: run cmf init with --neo4j-user/--neo4j-password/--neo4j-uri")
        return GraphMirror(neo4j["uri"], neo4j["user"], neo4j.get("password", ""))

    def _versioner(self) -> Versioner:
        if self.versioner is None:
            raise CmfError("a server-side Cmf (is_server=True) cannot version files")
        return self.versioner

    def _ensure_execution(self) -> mlmd.Execution:
        """Create the stage and execution from the script's name when the user did not (as the original)."""
        if self.child_context is None:
            self.create_context(pipeline_stage=_script_name())
        if self.execution is None:
            self.create_execution(execution_type=_script_name())
        return self.execution

    def _dvc_url(self, md5: str) -> str:
        return f"{self.pipeline_name}:{self.remote_url.rstrip('/')}/{layout.key(md5)}" if self.remote_url else \
            f"{self.pipeline_name}:"

    def _put_execution(self) -> None:
        self.execution.id = self.store.put_executions([self.execution])[0]

    # -- contexts and executions ------------------------------------------------------------------

    @_locked
    def create_context(self, pipeline_stage: str, custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Context:
        """Get or create the stage ``<pipeline>/<pipeline_stage>`` and make it current."""
        name = f"{self.parent_context.name}/{pipeline_stage}"
        ctx = records.get_or_create_context(self.store, self.types, records.STAGE_CONTEXT, name, custom_properties)
        try:
            self.store.put_parent_contexts([mlmd.ParentContext(child_id=ctx.id, parent_id=self.parent_context.id)])
        except Exception as exc:  # AlreadyExistsError when the stage was created before
            if "AlreadyExists" not in type(exc).__name__:
                raise
        self.child_context = ctx
        if self.driver:
            self.driver.stage(name, ctx.id, self.pipeline_name, self.parent_context.id, custom_properties or {})
        return ctx

    @_locked
    def create_execution(self, execution_type: str, custom_properties: Optional[Dict[str, Any]] = None,
                         cmd: Optional[str] = None, create_new_execution: bool = True) -> mlmd.Execution:
        """Start an execution of the current stage (created from the script name if there is none).

        With ``create_new_execution=False`` an execution named ``execution_type``
        in this stage is reused, and a new uuid is appended to its ``Execution_uuid``.
        """
        if self.child_context is None:
            self.create_context(pipeline_stage=_script_name())
        stage = self.child_context
        self.metrics, self.input_artifacts, self.execution_label_props = {}, [], {}
        cmd = str(sys.argv) if cmd is None else cmd
        custom = dict(custom_properties or {})
        env_path = self._write_environment() if self.versioner else None
        if env_path is not None:
            custom["Python_Env"] = env_path

        execution = None
        if create_new_execution:
            type_id = self.types.execution(execution_type)
        else:
            type_id = self.types.execution(stage.name)
            execution = self.store.get_execution_by_type_and_name(stage.name, execution_type)
        if execution is None:
            execution = mlmd.Execution(type_id=type_id)
            if not create_new_execution:
                execution.name = execution_type
            set_props(execution.properties, {
                "Context_Type": stage.name, "Context_ID": stage.id, "Execution": cmd,
                "Execution_type_name": stage.name, "Pipeline_Type": self.parent_context.name,
                "Pipeline_id": self.parent_context.id, "Git_Repo": self.git_repo,
                "Git_Start_Commit": self.versioner.head() if self.versioner else "", "Git_End_Commit": "",
            })
        uuids = execution.properties["Execution_uuid"].string_value
        execution.properties["Execution_uuid"].string_value = ",".join(filter(None, [uuids, str(uuid.uuid1())]))
        set_props(execution.custom_properties, custom)
        eid, _, _ = self.store.put_execution(execution, [], [stage])
        execution.id = eid
        self.execution = execution
        self._session_executions.add(eid)
        self.execution_name = f"{eid},{execution_type}"
        self.execution_command = cmd
        self.execution_label_props = {k.replace("-", "_"): v for k, v in custom.items()}
        self.execution_label_props.update({"Execution_Name": f"{execution_type}:{eid}", "execution_command": cmd})
        if self.driver:
            self.driver.execution(self.execution_name, eid, stage.id, self.pipeline_name, self.parent_context.id,
                                  cmd, custom)
        if env_path is not None:
            self._log_versioned("Environment", env_path, "input", {})
        return execution

    @_locked
    def update_execution(self, execution_id: int, custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Execution:
        """Merge ``custom_properties`` into execution ``execution_id`` and make it current."""
        execution = first(self.store.get_executions_by_id([execution_id]))
        if execution is None:
            raise CmfError(f"no execution with id {execution_id} in {self.filepath}")
        set_props(execution.custom_properties, custom_properties)
        self.store.put_executions([execution])
        self.execution = execution
        type_name = self.store.get_execution_types_by_id([execution.type_id])[0].name
        self.execution_name = f"{execution.id},{type_name}"
        self.execution_command = execution.properties["Execution"].string_value
        self.execution_label_props.update({k.replace("-", "_"): v for k, v in props(execution.custom_properties).items()})
        if self.driver:
            stage_id = execution.properties["Context_ID"].int_value
            self.driver.execution(self.execution_name, execution.id, stage_id, self.pipeline_name,
                                  self.parent_context.id, self.execution_command, props(execution.custom_properties))
        return execution

    def _write_environment(self) -> str:
        """Write the Python environment file (once per content) and return its path relative to the base."""
        text = python_environment()
        rel = os.path.join(self.ARTIFACTS_PATH, f"python_env_{hashlib.md5(text.encode()).hexdigest()}.txt")
        path = self.base / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return rel

    # -- artifacts --------------------------------------------------------------------------------

    def _record(self, type_name: str, name: str, uri: str, kind: str, properties: Mapping[str, Any],
                custom: Mapping[str, Any], link_name: str, url: Optional[str] = None) -> mlmd.Artifact:
        """Create the artifact and its event in one transaction, or link the existing one with that uri."""
        existing = first(self.store.get_artifacts_by_uri(uri)) if uri else None
        execution = self.execution
        if existing is None:
            artifact = mlmd.Artifact(type_id=self.types.artifact(type_name), uri=uri, name=name)
            set_props(artifact.properties, properties)
            set_props(artifact.custom_properties, custom)
            ev = records.event(kind, when=int(time.time() * 1000))
            _, ids, _ = self.store.put_lineage_subgraph([execution], [artifact], [self.child_context], [(0, 0, ev)])
            artifact.id = ids[0]
            return artifact
        _merge_custom(existing, custom)
        if url is not None:
            old = existing.properties["url"].string_value
            existing.properties["url"].string_value = url if not old.strip() else (
                old if url in old.split(",") else f"{old},{url}")
        if records.linked(self.store, execution.id, existing.id):
            self.store.put_artifacts([existing])
        else:
            self.store.put_lineage_subgraph([execution], [existing], [], [(0, 0, records.event(kind, link_name))])
        return existing

    def _log_versioned(self, type_name: str, url: str, event: str, custom: Mapping[str, Any],
                       extra: Optional[Mapping[str, Any]] = None, name_suffix: str = "") -> mlmd.Artifact:
        kind = _event_kind(event)
        versioner = self._versioner()
        path = versioner.resolve(url, self.base)
        self._ensure_execution()
        version = versioner.add(path)
        dvc_url = self._dvc_url(version.md5)
        properties: Dict[str, Any] = dict(extra or {})
        if type_name != "Model":
            properties["git_repo"] = self.git_repo
        properties.update({"Commit": version.md5, "url": dvc_url})
        link_name = f"{url}:{version.md5}"
        name = link_name + (f":{self.execution.id}" if name_suffix == "execution" else "")
        artifact = self._record(type_name, name, version.md5, kind, properties, custom, link_name, url=dvc_url)
        self.execution_label_props["Commit"] = version.md5
        self._mirror(type_name, name, version.md5, kind, {**custom, "Commit": version.md5}, path=url)
        return artifact

    def _mirror(self, kind_name: str, name: str, uri: str, event: str, custom: Mapping[str, Any],
                path: str = "") -> None:
        """Mirror an artifact and its lineage into Neo4j when ``graph=True``."""
        if not self.driver:
            return
        from cmf_core.metadata.graph import ArtifactRef

        self.driver.artifact(kind_name, name, uri, event, self.execution.id, self.pipeline_name,
                             self.parent_context.id, custom, path=path)
        ref = ArtifactRef(kind_name, name, uri)
        if event == "input":
            self.input_artifacts.append(ref)
            self.driver.execution_links(uri, name, kind_name, self.execution.id)
        else:
            self.driver.lineage(list(self.input_artifacts), ref, self.execution_label_props)

    @_locked
    def log_dataset(self, url: str, event: str, custom_properties: Optional[Dict[str, Any]] = None,
                    label: Optional[str] = None, label_properties: Optional[Dict[str, Any]] = None,
                    external: bool = False) -> mlmd.Artifact:
        """Log a dataset file or directory (versioned), or, for a URL or ``external=True``, a reference."""
        kind = _event_kind(event)
        custom = dict(custom_properties or {})
        if label is not None and not (self.base / label).is_file():
            raise CmfError(f"cannot log label {label}: no such file")
        if external or "://" in url:
            return self._log_reference(url, kind, custom)
        artifact = self._log_versioned("Dataset", url, kind, custom)
        if label is not None:
            self._log_label(label, artifact, label_properties)
        return artifact

    @_locked
    def log_dataset_with_version(self, url: str, version: str, event: str, props: Optional[Dict[str, Any]] = None,
                                 custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        """Log a dataset whose md5 is already known (from a ``dvc.lock`` or another client); no file is read."""
        kind = _event_kind(event)
        if not layout.is_md5(version):
            raise CmfError(f"bad version {version!r} for {url}: expected a DVC md5")
        self._ensure_execution()
        given = dict(props or {})
        properties = {"git_repo": given.get("git_repo", self.git_repo), "Commit": version,
                      "url": given.get("url") or self._dvc_url(version)}
        name = f"{url}:{version}"
        custom = dict(custom_properties or {})
        artifact = self._record("Dataset", name, version, kind, properties, custom, name, url=properties["url"])
        self._mirror("Dataset", name, version, kind, custom, path=url)
        return artifact

    def _log_reference(self, url: str, kind: str, custom: Dict[str, Any]) -> mlmd.Artifact:
        """A dataset recorded by its URL only: nothing is copied, hashed or pushed."""
        self._ensure_execution()
        properties = {"git_repo": self.git_repo, "Commit": "", "url": f"{self.pipeline_name}:{url}"}
        artifact = self._record("Dataset", url, url, kind, properties, {**custom, "external": True}, url)
        self._mirror("Dataset", url, url, kind, custom, path=url)
        return artifact

    def _log_label(self, label: str, dataset: mlmd.Artifact, label_properties: Optional[Dict[str, Any]]) -> mlmd.Artifact:
        """A label CSV: hashed (not versioned, as the original), linked to its dataset both ways."""
        label_md5 = layout.file_md5(self.base / label)
        labelled = f"{label}:{label_md5}"
        _merge_custom(dataset, {"labels": label, "labels_uri": labelled})
        self.store.put_artifacts([dataset])
        custom = {**(label_properties or {}), "dataset_uri": dataset.uri}
        properties = {"git_repo": self.git_repo, "Commit": label_md5, "url": labelled}
        artifact = self._record("Label", labelled, label_md5, "input", properties, custom, labelled, url=labelled)
        if self.driver:
            self.driver.label(labelled, label_md5, self.execution.id, dataset.uri, self.pipeline_name,
                              self.parent_context.id, custom, path=label)
        return artifact

    @_locked
    def log_model(self, path: str, event: str, model_framework: str = "Default", model_type: str = "Default",
                  model_name: str = "Default", custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        """Log a model file or directory (versioned); its name ends in the execution id."""
        extra = {"model_framework": str(model_framework), "model_type": str(model_type),
                 "model_name": str(model_name)}
        return self._log_versioned("Model", path, event, dict(custom_properties or {}), extra,
                                   name_suffix="execution")

    @_locked
    def log_execution_metrics(self, metrics_name: str,
                              custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        """Log coarse-grained metrics of the execution: a Metrics artifact with no file."""
        self._ensure_execution()
        uri = str(uuid.uuid1())
        name = f"{metrics_name}:{uri}:{self.execution.id}"
        custom = dict(custom_properties or {})
        artifact = self._record("Metrics", name, uri, "output", {"metrics_name": name}, custom, name)
        self._mirror("Metrics", name, uri, "output", custom)
        return artifact

    def log_metrics(self, metrics_name: str, custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        """Alias of :meth:`log_execution_metrics`, the name the original's documentation uses."""
        return self.log_execution_metrics(metrics_name, custom_properties)

    def log_metric(self, metrics_name: str, custom_properties: Optional[Dict[str, Any]] = None) -> None:
        """Keep one step of fine-grained metrics in memory; :meth:`commit_metrics` writes them."""
        steps = self.metrics.setdefault(metrics_name, {})
        steps[len(steps) + 1] = dict(custom_properties or {})  # steps are numbered 1, 2, ... as they come

    def _execution_dir(self, kind: str) -> str:
        first_uuid = self.execution.properties["Execution_uuid"].string_value.split(",")[0]
        return os.path.join(self.ARTIFACTS_PATH, first_uuid, kind)

    @_locked
    def commit_metrics(self, metrics_name: str) -> mlmd.Artifact:
        """Write the steps of ``metrics_name`` to a parquet file, version it, log a Step_Metrics artifact."""
        if metrics_name not in self.metrics:
            raise CmfError(f"no metrics logged under {metrics_name!r}; call log_metric first")
        steps = self.metrics[metrics_name]
        self._ensure_execution()  # a new execution starts with no metrics: these were logged before it
        rel = os.path.join(self._execution_dir(self.METRICS_PATH), metrics_name)
        _write_parquet(_table(steps, "SequenceNumber"), self.base / rel)
        versioner = self._versioner()
        version = versioner.add(versioner.resolve(rel, self.base))
        name = f"{rel}:{version.md5}:{self.execution.id}:{uuid.uuid1()}"
        properties = {"Commit": version.md5, "url": self._dvc_url(version.md5)}
        artifact = mlmd.Artifact(type_id=self.types.artifact("Step_Metrics"), uri=version.md5, name=name)
        set_props(artifact.properties, properties)
        ev = records.event("output", when=int(time.time() * 1000))
        _, ids, _ = self.store.put_lineage_subgraph([self.execution], [artifact], [self.child_context], [(0, 0, ev)])
        artifact.id = ids[0]
        self._mirror("Step_Metrics", name, version.md5, "output", {"Commit": version.md5})
        return artifact

    # -- data slices ------------------------------------------------------------------------------

    def create_dataslice(self, name: str) -> "DataSlice":
        """A new, empty data slice; fill it with ``add_data`` and ``commit`` it."""
        return DataSlice(name, self)

    def _dataslice_path(self, name: str) -> Path:
        if self.execution is None:
            raise CmfError("no execution: call create_execution before working with data slices")
        return self.base / self._execution_dir(self.DATASLICE_PATH) / name

    def read_dataslice(self, name: str) -> pd.DataFrame:
        """The data slice ``name`` committed by the current execution."""
        path = self._dataslice_path(name)
        if not path.is_file():
            raise CmfError(f"no data slice {name!r} in the current execution ({path})")
        import pandas as pd

        return pd.read_parquet(path)

    @_locked
    def update_dataslice(self, name: str, record: str, custom_properties: Dict[str, Any]) -> mlmd.Artifact:
        """Update one record of a data slice and record the slice's new version."""
        frame = self.read_dataslice(name)
        if record not in frame.index:
            raise CmfError(f"data slice {name!r} has no record {record!r}")
        for key, value in custom_properties.items():
            frame.loc[record, key] = value
        _write_parquet(frame, self._dataslice_path(name))
        return DataSlice(name, self).record_version()

    @_locked
    def finalize(self) -> str:
        """Commit the ``.dvc`` files this session staged, record Git_End_Commit, close the graph driver."""
        commit = ""
        if self.versioner is not None:
            root = self.versioner.root
            setup = [p for p in (config.config_file(root), root / ".gitignore", root / ".dvc" / "config",
                                 root / ".dvc" / ".gitignore", root / ".dvcignore") if p.is_file()]
            self.versioner.stage(*setup)  # what cmf init staged goes in with the first commit
            commit = self.versioner.commit(f"commiting {self.execution_name or self.pipeline_name}")
            executions = self.store.get_executions_by_id(sorted(self._session_executions))
            for execution in executions:
                execution.properties["Git_End_Commit"].string_value = commit
            if executions:
                self.store.put_executions(executions)
        if self.driver:
            self.driver.close()
            self.driver = None
        return commit


class DataSlice:
    """A named subset of data files with per-file properties, stored as a versioned parquet file."""

    def __init__(self, name: str, writer: Cmf) -> None:
        self.name = name
        self.writer = writer
        self.props: Dict[str, Dict[str, Any]] = {}
        self.data_parent = ""
        self.lock = writer.lock

    @property
    def store(self) -> Any:
        return self.writer.store

    def _follow_replaced_file(self) -> None:
        self.writer._follow_replaced_file()

    def add_data(self, path: str, custom_properties: Optional[Dict[str, Any]] = None) -> None:
        """Add a file (by its path) to the slice, with its md5 and optional properties."""
        full = self.writer.base / path
        if not full.is_file():
            raise CmfError(f"cannot add {path} to data slice {self.name!r}: no such file")
        self.props[path] = {"hash": layout.file_md5(full), **(custom_properties or {})}
        self.data_parent = Path(path).parent.name

    @_locked
    def commit(self, custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        """Write the slice to parquet, version it and log it as a Dataslice artifact."""
        self.writer._ensure_execution()
        _write_parquet(_table(self.props, "Path"), self.writer._dataslice_path(self.name))
        return self.record_version(custom_properties)

    @_locked
    def record_version(self, custom_properties: Optional[Dict[str, Any]] = None) -> mlmd.Artifact:
        writer = self.writer
        rel = os.path.relpath(writer._dataslice_path(self.name), writer.base)
        versioner = writer._versioner()
        version = versioner.add(versioner.resolve(rel, writer.base))
        name = f"{rel}:{version.md5}"
        custom = dict(custom_properties or {})
        properties = {"git_repo": writer.git_repo, "Commit": version.md5, "url": writer._dvc_url(version.md5)}
        artifact = writer._record("Dataslice", name, version.md5, "output", properties, custom, name)
        if writer.driver:
            writer.driver.dataslice(self.name, version.md5, self.data_parent, {**custom, "Commit": version.md5})
        return artifact


def _merge_custom(artifact: mlmd.Artifact, custom: Mapping[str, Any]) -> None:
    """Merge custom properties; ``labels``/``labels_uri``/``dataset_uri`` accumulate as comma-separated sets."""
    for key, value in custom.items():
        if key in ("labels", "labels_uri", "dataset_uri") and artifact.custom_properties[key].string_value:
            merged = artifact.custom_properties[key].string_value.split(",")
            if str(value) not in merged:
                merged.append(str(value))
            artifact.custom_properties[key].string_value = ",".join(merged)
        else:
            artifact.custom_properties[key] = records.to_value(value)


def _table(rows: Mapping[Any, Mapping[str, Any]], index: str) -> pd.DataFrame:
    """``rows`` (index value -> columns) as a table whose index is named ``index``.  A column whose values are of
    several kinds (a step logged ``0``, the next ``False``) is written as text: parquet holds one kind per column."""
    import pandas as pd

    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.names = [index]
    for column in frame.columns:
        if frame[column].dtype == object:  # a step without this key is NaN here: missing, not a float
            frame[column] = frame[column].map(lambda v: None if isinstance(v, float) and v != v else v)
            if len({type(v) for v in frame[column] if v is not None}) > 1:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp)
    os.replace(tmp, path)
