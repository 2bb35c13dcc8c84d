"""The transfer engine: plan, then move objects in parallel, verify, place atomically.

A backend moves single objects (:class:`~cmf_core.hookspecs.ObjectStore`);
everything else happens here, once for every backend:

* **plan** -- which artifacts (a pipeline, one artifact, one execution), which
  objects they need (directories expand through their ``.dir`` manifest, parsed
  as untrusted JSON), where each object comes from (push: the DVC cache, else
  the workspace file if its md5 matches) or goes to (pull: workspace paths,
  refused if they would land outside the workspace);
* **push** -- one batched ``exists`` call, then the missing objects in a bounded
  pool, ``.dir`` manifests after all their members;
* **pull** -- files already in place with the right md5 (or already links to
  their cache file) are skipped; the rest is downloaded into the DVC cache while
  its md5 is computed, through temp files that are renamed into place only when
  the md5 matches, and placed in the workspace as ``cache.type`` says
  (:mod:`cmf_core.links`; with ``copy`` it is written to the cache and the
  workspace at once).  The DVC cache ends up complete, so ``dvc status`` is clean;
* **batches** -- a store whose server can carry many objects in one request
  (:attr:`~cmf_core.hookspecs.ObjectStore.batch`: SSH streams them through one
  command) gets them in groups, one group per thread: a pull's objects, a push's
  small files.  Each object is still verified and placed alone; what a batch did
  not deliver is moved one by one, where a failure is named;
* transient errors are retried with exponential backoff; every failure is
  named in the :class:`TransferResult`; an interrupted run leaves only whole
  objects behind, so rerunning it moves just what is missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import random
import shutil
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from cmf_core import fanout, layout, links, locks
from cmf_core.config import CacheSettings
from cmf_core.errors import BackendError, CmfError, CorruptSource, ObjectNotFound, TransientError
from cmf_core.hookspecs import ObjectStore
from cmf_core.metadata import store as records

RETRIES = 5
BACKOFF = 0.2  # seconds before the first retry; doubled each time, with jitter
GIVE_UP_IN_A_ROW = 3  # objects in a row that exhausted their retries: the remote is down, the rest is not tried
MAX_MANIFEST = 256 << 20  # a .dir manifest larger than this is refused
PARTIAL = ".cmf-partial"
CACHE_MODE = 0o444  # DVC cache files are read-only
NO_FILE_TYPES = {"Metrics"}
BATCH_OBJECT = 1 << 20  # a push batches files of at most this size (a pull batches all: their sizes are unknown)
BATCH_BYTES = 64 << 20  # the known bytes of one batch at most


@dataclass
class Obj:
    """One object to move: its md5, where it comes from (push) or must end up (pull)."""

    md5: str
    artifact: str
    source: Optional[Path] = None  # push: found once the remote is known to lack the object
    workspace_copy: Optional[str] = None  # push: the workspace file, which can heal a corrupt cache file
    targets: List[Path] = field(default_factory=list)
    size: int = 0
    members: frozenset = frozenset()  # for a .dir manifest: the md5s of its files

    @property
    def key(self) -> str:  # the md5 was checked where it was read (the mlmd, a parsed manifest)
        return f"files/md5/{self.md5[:2]}/{self.md5[2:]}"


@dataclass
class TransferResult:
    """What a push or pull did. ``ok`` only when every object asked for is in place."""

    direction: str
    moved: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    not_files: List[Tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    planned: List[str] = field(default_factory=list)
    processes: int = 1  # processes that shared the work (see cmf_core.fanout)
    notes: List[str] = field(default_factory=list)  # e.g. a cache.type the file system refused
    batched: int = 0  # objects that travelled in batches (the rest one per request)
    transport: Dict[str, object] = field(default_factory=dict)  # the store's report: its route, round trips

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> Dict[str, object]:
        data = asdict(self)
        data["ok"] = self.ok
        data["failed"] = [{"what": w, "error": e} for w, e in self.failed]
        data["not_files"] = [{"artifact": a, "reason": r} for a, r in self.not_files]
        return data


# -- selecting artifacts ----------------------------------------------------------------------------


@dataclass
class Artifact:
    name: str
    type: str
    md5: str
    path: str


def select(mlmd: str, pipeline: str, artifact: Optional[str] = None,
           execution_uuid: Optional[str] = None) -> Tuple[List[Artifact], List[Tuple[str, str]]]:
    """The artifacts of a pipeline (or of one execution, or one artifact) and those without a file."""
    store = records.open_store(mlmd, create=False)
    context = store.get_context_by_type_and_name(records.PARENT_CONTEXT, pipeline)
    if context is None:
        names = [c.name for c in store.get_contexts_by_type(records.PARENT_CONTEXT)]
        raise CmfError(f"pipeline {pipeline!r} is not in {mlmd}; it has: {', '.join(names) or 'no pipelines'}")
    executions = [e for stage in store.get_children_contexts_by_context(context.id)
                  for e in store.get_executions_by_context(stage.id)]
    if execution_uuid:
        executions = [e for e in executions
                      if execution_uuid in e.properties["Execution_uuid"].string_value.split(",")]
        if not executions:
            raise CmfError(f"no execution with uuid {execution_uuid} in pipeline {pipeline!r}")
    ids = sorted({ev.artifact_id for ev in store.get_events_by_execution_ids([e.id for e in executions])})
    types = {t.id: t.name for t in store.get_artifact_types()}
    found = [a for a in store.get_artifacts_by_id(ids)] if ids else []
    if artifact:
        found = [a for a in found if artifact in _names(a)]
        if not found:
            raise CmfError(f"no artifact named {artifact!r} in pipeline {pipeline!r}")
        if len({a.name for a in found}) > 1:
            listed = "\n  ".join(sorted(a.name for a in found))
            raise CmfError(f"{artifact!r} matches several artifacts; give one of these full names:\n  {listed}")
    selected, not_files = [], []
    for a in found:
        kind = types.get(a.type_id, "")
        if kind in NO_FILE_TYPES:
            not_files.append((a.name, "metrics have no file"))
        elif not layout.is_md5(a.uri):
            not_files.append((a.name, "recorded by reference, not versioned"))
        else:
            selected.append(Artifact(a.name, kind, a.uri, a.name.split(f":{a.uri}")[0]))
    return selected, not_files


def _names(artifact) -> Tuple[str, ...]:
    path = artifact.name.split(f":{artifact.uri}")[0] if artifact.uri else artifact.name
    return artifact.name, path, os.path.basename(path.rstrip("/"))


# -- planning -------------------------------------------------------------------------------------


class Workspace:
    """Paths of one workspace: where artifacts live (the mlmd file's directory) and the DVC cache
    (``cache`` is its folder, or its settings: where it is, the link types, whether it is shared)."""

    def __init__(self, base: Path, cache: Union[Path, CacheSettings]) -> None:
        self.base = base.resolve()
        self.settings = cache if isinstance(cache, CacheSettings) else CacheSettings(dir=cache)
        self.cache = self.settings.dir

    def cache_file(self, md5: str) -> str:
        """Where the object ``md5`` is in the DVC cache (a str: a Path costs more than a stat, per object)."""
        return f"{self.cache}/files/md5/{md5[:2]}/{md5[2:]}"

    def cache_path(self, md5: str) -> Path:
        return Path(self.cache_file(md5))

    def target(self, relpath: str) -> Path:
        """The workspace path of an artifact, refused if it would land outside the workspace."""
        if not relpath or os.path.isabs(relpath) or ".." in Path(relpath).parts:
            raise CmfError(f"artifact path {relpath!r} is absolute or climbs out of the workspace")
        if layout.SKIP_DIRS & set(Path(relpath).parts):  # .git/hooks/... would run code on the next git command
            raise CmfError(f"artifact path {relpath!r} is inside {', '.join(sorted(layout.SKIP_DIRS))}")
        path = self.base / relpath
        if not _within(self.base, path):
            raise CmfError(f"artifact path {relpath!r} leads outside the workspace through a symlink")
        return path


def _within(real_root: Path, path: Path) -> bool:
    """Whether ``path``'s directory, symlinks resolved, is ``real_root`` (already resolved) or below it."""
    parent = path.parent.resolve()
    return parent == real_root or real_root in parent.parents


def _member_targets(root: Path, entries: Iterable[layout.Entry]) -> Iterator[Tuple[layout.Entry, Path]]:
    """Where each file of a directory goes; a symlink leading out of ``root`` is refused (each folder
    of the manifest resolved once: thousands of files share a few folders)."""
    real_root = root.resolve()
    inside: Dict[str, bool] = {}
    for entry in entries:
        path = root / entry.relpath
        folder = entry.relpath.rpartition("/")[0]
        if folder not in inside:
            inside[folder] = _within(real_root, path)
        if not inside[folder]:
            raise layout.ManifestError(f"{entry.relpath!r} leads outside {root} through a symlink")
        yield entry, path


# -- moving bytes ---------------------------------------------------------------------------------


class HashingWriter(io.RawIOBase):
    """A write-only, non-seekable stream that writes what it receives to files (raw descriptors) and hashes it.

    The first :attr:`INLINE` bytes are hashed as they come.  Past that, a thread of its own hashes
    (``hashlib`` lets go of the GIL) while the next bytes arrive from the network: md5 runs at about
    the speed of a loopback download, so one after the other a big object would take twice as long.
    :meth:`hexdigest` waits for the thread; :meth:`close` stops it whatever happened.
    """

    INLINE = 8 << 20
    AHEAD = 8  # chunks waiting to be hashed at most (8 MiB with the backends' 1 MiB chunks)

    def __init__(self, outputs: Sequence[int], on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self.digest = hashlib.md5()
        self.outputs = outputs
        self.count = 0
        self.on_bytes = on_bytes
        self._chunks: Optional["queue.Queue[Optional[bytes]]"] = None
        self._hasher: Optional[threading.Thread] = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        for fd in self.outputs:
            links.write_all(fd, view)
        if self._chunks is None and self.count + len(view) <= self.INLINE:
            self.digest.update(view)
        else:
            if self._chunks is None:
                self._chunks = queue.Queue(self.AHEAD)
                self._hasher = threading.Thread(target=self._hash, name="cmf-md5", daemon=True)
                self._hasher.start()
            self._chunks.put(data if isinstance(data, bytes) else bytes(view))  # a copy unless immutable
        self.count += len(view)
        self.on_bytes(len(view))
        return len(view)

    def _hash(self) -> None:
        for chunk in iter(self._chunks.get, None):
            self.digest.update(chunk)

    def hexdigest(self) -> str:
        """The md5 of everything written (once the hashing thread has caught up)."""
        self._stop()
        return self.digest.hexdigest()

    def close(self) -> None:
        self._stop()
        super().close()

    def _stop(self) -> None:
        if self._hasher is not None:
            self._chunks.put(None)
            self._hasher.join()
            self._hasher = None


def _partial(path: Path) -> str:
    """The temp file beside ``path`` that becomes it once complete (a str: this runs per object)."""
    folder, name = os.path.split(path)
    return f"{folder}/.{name}{PARTIAL}"


def _file_size(path: Union[str, Path]) -> Optional[int]:
    """The size of the regular file at ``path``; ``None`` when there is none (one stat, not two)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _place(partials: Dict[Path, str]) -> None:
    for final, tmp in partials.items():  # the temp file is beside ``final``: its folder exists
        os.replace(tmp, final)


def _create(tmp: str, mode: int = 0o666) -> int:
    """A new, empty temp file at ``tmp``, open for writing (a raw descriptor: every object pays for each
    system call).  Never through a symlink planted there (``O_EXCL`` refuses to follow it); a leftover
    file or link of an interrupted run is removed first.  ``mode`` 0o444 makes a read-only DVC cache
    file: still writable through this descriptor, no chmod needed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, mode)
    except FileExistsError:
        _discard([tmp])
        return os.open(tmp, flags, mode)


def _discard(partials: Iterable[str]) -> None:
    for tmp in partials:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _retrying(action: Callable[[], object], what: str) -> object:
    """Run ``action``, retrying transient failures with exponential backoff and jitter."""
    for attempt in range(RETRIES):
        try:
            return action()
        except (TransientError, ConnectionError, TimeoutError) as exc:
            if attempt == RETRIES - 1:
                raise TransientError(f"{what}: gave up after {RETRIES} attempts: {exc}") from None
            time.sleep(BACKOFF * (2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class Progress:
    """One progress line on a terminal (files and bytes); silent otherwise."""

    def __init__(self, label: str, total: int, enabled: Optional[bool] = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.lock = threading.Lock()
        self.bar = None
        if self.enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="file", file=sys.stderr, leave=False)
        self.bytes = 0

    def add_bytes(self, count: int) -> None:
        with self.lock:
            self.bytes += count

    def done(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.set_postfix_str(f"{self.bytes / 1e6:.1f} MB", refresh=False)
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def lock(cache: Union[Path, CacheSettings]) -> locks.FileLock:
    """The transfer lock of a DVC cache: pushes and pulls through it run one at a time (from every workspace
    that shares it), because they write temp files with fixed names beside the files they place.
    A cache this user cannot write is refused here, before anything is written."""
    settings = cache if isinstance(cache, CacheSettings) else CacheSettings(dir=cache)
    links.check_writable(settings.dir, settings.shared)
    links.make_folder(settings.dir, settings.shared)
    return locks.lock(settings.dir / "cmf-transfer.lock", waiting="waiting for another push or pull through "
                                                                   "this DVC cache")


class Engine:
    """Moves the objects of selected artifacts between a workspace and an ObjectStore."""

    def __init__(self, workspace: Workspace, store: ObjectStore, jobs: int, progress: Optional[bool] = None,
                 reopen: Optional[Callable[[], ObjectStore]] = None):
        """``reopen`` opens another store like ``store``: given, a run of many objects may be shared with
        forked processes (each needs connections of its own)."""
        self.ws = workspace
        self.store = store
        self.reopen = reopen
        self.jobs = max(1, jobs)
        self.progress_enabled = progress
        self.dry_run = False
        self.linker = links.Linker(workspace.settings)
        self._folders: Set[str] = set()  # folders this run has made or found: one mkdir each, not one per file

    def _folder(self, path: str) -> None:
        """Make sure the folder of ``path`` exists (thread-safe: a second mkdir of a folder is harmless);
        a cache folder gets the cache's mode (group-writable in a shared cache)."""
        folder = os.path.dirname(path)
        if folder not in self._folders:
            if folder.startswith(str(self.ws.cache)):
                self.linker.make_folder(Path(folder))
            else:
                os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)

    # -- push ---------------------------------------------------------------------------------

    def plan_push(self, artifacts: Sequence[Artifact], result: TransferResult) -> Tuple[List[Obj], List[Obj]]:
        """The objects the artifacts need (files, then ``.dir`` manifests), by md5 only: no file is looked at
        here but the manifests.  Most objects of a push are usually on the remote already, so where each
        is read from is found only for those the remote lacks (:meth:`_find_source`)."""
        files: Dict[str, Obj] = {}
        manifests: Dict[str, Obj] = {}
        for art in artifacts:
            try:
                where = str(self.ws.target(art.path))
            except CmfError as exc:
                result.failed.append((art.name, str(exc)))
                continue
            if not layout.is_dir_md5(art.md5):
                files.setdefault(art.md5, Obj(art.md5, art.name, workspace_copy=where))
                continue
            manifest = self.ws.cache_path(art.md5)
            try:
                data = manifest.read_bytes()
                entries = layout.parse_manifest(data)
            except (FileNotFoundError, NotADirectoryError):  # fine if the remote has it: see push
                manifests.setdefault(art.md5, Obj(art.md5, art.name))
                continue
            except layout.ManifestError as exc:
                result.failed.append((art.name, f"bad manifest in the DVC cache: {exc}"))
                continue
            for md5, relpath in entries:
                if md5 not in files:  # a str per member, not a Path: a directory may hold 100,000 files
                    files[md5] = Obj(md5, f"{art.path}/{relpath}", workspace_copy=f"{where}/{relpath}")
            manifests.setdefault(art.md5, Obj(art.md5, art.name, manifest, size=len(data),
                                              members=frozenset(e.md5 for e in entries)))
        return list(files.values()), list(manifests.values())

    def _find_source(self, obj: Obj) -> None:
        """Set where a file to push is read from: its DVC cache file, else the workspace file when its md5
        is the object's; :class:`_Missing` when neither (the remote lacks it too, or it would not be pushed)."""
        cached, copy = self.ws.cache_file(obj.md5), obj.workspace_copy
        size = _file_size(cached)
        if size is not None:
            obj.source, obj.size = Path(cached), size
            return
        size = None if copy is None else _file_size(copy)
        if size is not None and layout.file_md5(copy) == obj.md5:
            obj.source, obj.size = Path(copy), size
            return
        raise _Missing("not on the remote, not in the DVC cache, and not in the workspace with that md5")

    def push(self, artifacts: Sequence[Artifact], result: TransferResult) -> None:
        files, manifests = self.plan_push(artifacts, result)
        everything = files + manifests
        present = _retrying(lambda: self.store.exists([o.key for o in everything]), "listing the remote") \
            if everything else set()
        todo_files = [o for o in files if o.key not in present]
        todo_manifests = []
        for manifest in manifests:
            if manifest.key in present:
                continue
            if manifest.source is None:
                result.failed.append((manifest.artifact, "its .dir manifest is neither in the DVC cache nor on "
                                                         "the remote"))
            else:
                todo_manifests.append(manifest)
        result.skipped += len(everything) - len(todo_files) - len(todo_manifests)
        result.planned = [o.artifact for o in todo_files + todo_manifests]
        if result.dry_run:
            failed = set()
            for obj in todo_files:
                try:
                    self._find_source(obj)
                except _Missing as exc:
                    result.failed.append((obj.artifact, str(exc)))
                    failed.add(obj.md5)
            result.bytes = sum(o.size for o in todo_files + todo_manifests)
        else:
            batched, single = self._split_push(todo_files)
            single += self._batched("push", batched, self._put_batch, result)
            failed = {o.md5 for o in self._run("push", single, self._put, result)}
        # a directory is published only once all its members are on the remote
        ready = []
        for manifest in todo_manifests:
            missing = len(manifest.members & failed)
            if missing:
                result.failed.append((manifest.artifact, f"directory not published: {missing} of its "
                                                         f"{len(manifest.members)} files are missing or failed "
                                                         f"to upload"))
            else:
                ready.append(manifest)
        if not result.dry_run:
            self._run("push", ready, self._put, result)
            self._report(result)

    def _put(self, obj: Obj, progress: Progress) -> int:
        if obj.source is None:
            self._find_source(obj)

        def upload() -> None:
            self.store.put(obj.source, obj.key)

        try:
            _retrying(upload, f"uploading {obj.artifact}")
        except CorruptSource as exc:  # the backend found the DVC cache file rotten: healed from the workspace copy
            if not self._heal_cache(obj):
                raise BackendError(f"{exc}, and the workspace holds no intact copy") from None
            _retrying(upload, f"uploading {obj.artifact}")
        progress.add_bytes(obj.size)
        return obj.size

    def _report(self, result: TransferResult) -> None:
        """The store's report (route, round trips) into ``result``; a note it carries is said once (:func:`_say`)."""
        report = dict(self.store.report()) if hasattr(self.store, "report") else {}
        note = report.pop("note", None)
        if note:
            _say(result, str(note))
        result.transport = report

    def _split_push(self, objects: List[Obj]) -> Tuple[List[Obj], List[Obj]]:
        """(the files that go in batches, the rest): with a store that batches, the files of at most
        :data:`BATCH_OBJECT` bytes that are there to read."""
        if getattr(self.store, "batch", 0) <= 1:
            return [], objects
        batched, single = [], []
        for obj in objects:
            try:
                self._find_source(obj)
            except _Missing:
                single.append(obj)  # it fails alone, by name
                continue
            (batched if obj.size <= BATCH_OBJECT else single).append(obj)
        return batched, single

    def _put_batch(self, group: List[Obj], progress: Progress) -> Tuple[List[Tuple[Obj, int]], List[Obj]]:
        """Upload ``group`` in one request: (the objects stored and their bytes, the objects to put alone).  A
        file whose bytes are not its md5 goes alone: healed from the workspace there, or refused by name."""
        items: List[Tuple[bytes, Obj]] = []
        alone: List[Obj] = []
        for obj in group:
            try:
                data = obj.source.read_bytes()
            except OSError:
                alone.append(obj)
                continue
            if hashlib.md5(data).hexdigest() == obj.md5:
                items.append((data, obj))
            else:
                alone.append(obj)
        try:
            self.store.put_many([(data, obj.key) for data, obj in items])
        except (CmfError, OSError):  # the batch did not take: its objects go one by one
            return [], alone + [obj for _, obj in items]
        for data, _ in items:
            progress.add_bytes(len(data))
        return [(obj, len(data)) for data, obj in items], alone

    def _heal_cache(self, obj: Obj) -> bool:
        """Replace a corrupt DVC cache file with the workspace copy when that one has the right md5."""
        copy = obj.workspace_copy
        if obj.source != self.ws.cache_path(obj.md5) or copy is None or _file_size(copy) is None \
                or layout.file_md5(copy) != obj.md5:
            return False
        self._write_cache(obj.md5, copy)
        return True

    # -- pull ---------------------------------------------------------------------------------

    def _manifest(self, art: Artifact) -> List[layout.Entry]:
        """The entries of a directory artifact: from the DVC cache, else downloaded, verified and cached."""
        cached = self.ws.cache_path(art.md5)
        if cached.is_file():
            data = cached.read_bytes()
            if layout.manifest_md5(data) == art.md5:
                return layout.parse_manifest(data)
        buffer = _LimitedBuffer(MAX_MANIFEST)

        def fetch() -> None:
            buffer.reset()
            self.store.get(layout.key(art.md5), buffer)

        try:
            _retrying(fetch, f"fetching {art.name}")
        except ObjectNotFound:
            raise CmfError("its .dir manifest is not on the remote") from None
        data = buffer.getvalue()
        if layout.manifest_md5(data) != art.md5:
            raise CmfError("its .dir manifest on the remote is corrupt (md5 mismatch)")
        entries = layout.parse_manifest(data)
        if not self.dry_run:
            self._write_cache(art.md5, data)
        return entries

    def _write_cache(self, md5: str, content: Union[bytes, Path]) -> None:
        """Put ``content`` (bytes, or a file's) at the cache path of ``md5``: read-only, through a temp file."""
        cached = self.ws.cache_path(md5)
        tmp = _partial(cached)
        self._folder(tmp)
        try:
            with open(_create(tmp, CACHE_MODE), "wb") as out:
                if isinstance(content, bytes):
                    out.write(content)
                else:
                    with open(content, "rb") as source:
                        shutil.copyfileobj(source, out, layout.CHUNK)
        except BaseException:
            _discard([tmp])
            raise
        _place({cached: tmp})

    def plan_pull(self, artifacts: Sequence[Artifact], result: TransferResult) -> List[Obj]:
        objects: Dict[str, Obj] = {}

        def want(md5: str, name: str, path: Path) -> None:
            objects.setdefault(md5, Obj(md5, name)).targets.append(path)

        latest: Dict[str, Artifact] = {}
        for art in artifacts:  # one version per workspace path: the most recently logged
            latest[art.path] = art
        for art in latest.values():
            try:
                where = self.ws.target(art.path)
                if not layout.is_dir_md5(art.md5):
                    want(art.md5, art.name, where)
                    continue
                for entry, path in _member_targets(where, self._manifest(art)):
                    want(entry.md5, f"{art.path}/{entry.relpath}", path)
            except (CmfError, layout.ManifestError) as exc:
                result.failed.append((art.name, str(exc)))
        return list(objects.values())

    def _in_place(self, obj: Obj) -> List[Path]:
        """Targets that do not hold the object yet (hashing only files of the right size that are not
        already links to the cache file)."""
        cached = self.ws.cache_path(obj.md5)
        size = _file_size(cached)
        missing = []
        for target in obj.targets:
            if size is not None and links.same_file(target, cached):
                continue
            found = _file_size(target)
            if found is not None and (size is None or found == size) and layout.file_md5(target) == obj.md5:
                continue
            missing.append(target)
        return missing

    def pull(self, artifacts: Sequence[Artifact], result: TransferResult) -> None:
        self.dry_run = result.dry_run
        objects = self.plan_pull(artifacts, result)
        todo = []
        for obj in objects:
            missing = self._in_place(obj)
            if missing:
                obj.targets = missing
                todo.append(obj)
            else:
                result.skipped += 1
                if not result.dry_run:
                    self._ensure_cached(obj)
        result.planned = [o.artifact for o in todo]
        if not result.dry_run:
            if todo:
                self.linker.probe(self.ws.cache, self.ws.base)
            batched, single = self._split_pull(todo)
            single += self._batched("pull", batched, self._get_batch, result)
            self._run("pull", single, self._get, result)
            result.notes.extend(self.linker.notes)
            self._report(result)

    def _split_pull(self, objects: List[Obj]) -> Tuple[List[Obj], List[Obj]]:
        """(the objects that go in batches, the rest): with a store that batches, those not in the cache."""
        if getattr(self.store, "batch", 0) <= 1:
            return [], objects
        batched, single = [], []
        for obj in objects:
            (single if self.ws.cache_path(obj.md5).is_file() else batched).append(obj)
        return batched, single

    def _get_batch(self, group: List[Obj], progress: Progress) -> Tuple[List[Tuple[Obj, int]], List[Obj]]:
        """Download ``group`` in one request: (the objects placed and their bytes, the objects to get alone:
        those the stream did not deliver, or delivered with another md5, which fail there by name)."""
        left = {obj.key: obj for obj in group}
        moved = []
        try:
            with contextlib.closing(self.store.get_many(list(left))) as stream:
                for key, chunks in stream:
                    obj = left.pop(key, None)
                    if obj is None:
                        continue
                    try:
                        moved.append((obj, self._fetched(obj, lambda writer, c=chunks: _write_all(c, writer),
                                                         progress)))
                    except _Mismatch:
                        left[key] = obj
        except (CmfError, OSError):  # the stream broke off: what it did not deliver goes one by one
            pass
        return moved, list(left.values())

    def _ensure_cached(self, obj: Obj) -> None:
        """Files already in place still go into the DVC cache, so ``dvc status`` is clean."""
        cached = self.ws.cache_path(obj.md5)
        if not cached.is_file():
            self._folder(str(cached))
            self.linker.to_cache(obj.targets[0], cached)

    def _get(self, obj: Obj, progress: Progress) -> int:
        cached = self.ws.cache_path(obj.md5)
        if cached.is_file():
            try:
                if self.linker.kind == "copy":
                    return self._copy_verified(obj, cached, progress)
                with open(cached, "rb") as src:  # checked before anything links to it
                    moved = self._stream(obj, lambda writer: shutil.copyfileobj(src, writer, layout.CHUNK), [],
                                         progress, targets=[])
                self._link(obj, cached)
                return moved
            except _Mismatch:
                os.chmod(cached, 0o644)
                cached.unlink()  # a corrupt cache entry: fetch it again
        return self._download(obj, cached, progress)

    def _link(self, obj: Obj, cached: Path) -> None:
        """Place the (verified) cache file at every target as ``cache.type`` says."""
        for target in obj.targets:
            self._folder(str(target))
            self.linker.place(cached, target)

    def _copy_verified(self, obj: Obj, source: Path, progress: Progress) -> int:
        with open(source, "rb") as src:
            return self._stream(obj, lambda writer: shutil.copyfileobj(src, writer, layout.CHUNK), [], progress)

    def _download(self, obj: Obj, cached: Path, progress: Progress) -> int:
        """Download into the cache, verified, and place it (:meth:`_fetched`)."""
        def fetch(writer: HashingWriter) -> None:
            self.store.get(obj.key, writer)

        def attempt() -> int:
            try:
                return self._fetched(obj, fetch, progress)
            except _Mismatch:  # a stream cut short or garbled on the way: fetched once more, then refused
                return self._fetched(obj, fetch, progress)

        return _retrying(attempt, f"downloading {obj.artifact}")

    def _fetched(self, obj: Obj, fill: Callable[[HashingWriter], None], progress: Progress) -> int:
        """What ``fill`` writes, into the cache, verified; with ``copy`` into the workspace at once, else linked
        from the cache."""
        copying = self.linker.kind == "copy"
        moved = self._stream(obj, fill, [self.ws.cache_path(obj.md5)], progress, obj.targets if copying else [])
        if not copying:
            self._link(obj, self.ws.cache_path(obj.md5))
        return moved

    def _stream(self, obj: Obj, fill: Callable[[HashingWriter], None], extra: List[Path], progress: Progress,
                targets: Optional[List[Path]] = None) -> int:
        """Fill temp files beside every destination (``extra`` and ``targets``, by default the object's),
        check the md5, then rename them all into place."""
        destinations = extra + (obj.targets if targets is None else targets)
        partials = {path: _partial(path) for path in destinations}
        fds: List[int] = []
        try:
            for path, tmp in partials.items():
                self._folder(tmp)
                fds.append(_create(tmp, CACHE_MODE if path in extra else 0o666))
            with contextlib.closing(HashingWriter(fds, progress.add_bytes)) as writer:
                fill(writer)
                md5 = writer.hexdigest()
            while fds:
                os.close(fds.pop())
            if md5 != obj.md5:
                raise _Mismatch(f"md5 mismatch: got {md5}, expected {obj.md5}")
            _place(partials)
            return writer.count
        except BaseException:
            for fd in fds:
                os.close(fd)
            _discard(partials.values())
            raise

    # -- the pool -------------------------------------------------------------------------------

    def _batched(self, label: str, objects: List[Obj],
                 move: Callable[[List[Obj], Progress], Tuple[List[Tuple[Obj, int]], List[Obj]]],
                 result: TransferResult) -> List[Obj]:
        """Move ``objects`` in groups of the store's batch size, a group per thread (``jobs`` threads, at least
        a group each); record what moved in ``result``; return the objects to move one by one: those a batch
        did not move."""
        if not objects:
            return []
        size = max(1, min(self.store.batch, -(-len(objects) // self.jobs)))
        groups, group, known = [], [], 0
        for obj in sorted(objects, key=lambda o: o.md5):  # a group spans few folders (files/md5/xx)
            if group and (len(group) >= size or known + obj.size > BATCH_BYTES):
                groups.append(group)
                group, known = [], 0
            group.append(obj)
            known += obj.size
        groups.append(group)
        progress = Progress(label, len(objects), self.progress_enabled)
        todo, lock, stop = iter(groups), threading.Lock(), threading.Event()
        single: List[Obj] = []
        errors: List[BaseException] = []

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    group = next(todo, None)
                if group is None:
                    return
                moved: List[Tuple[Obj, int]] = []
                left = group
                try:
                    moved, left = move(group, progress)
                except BaseException as exc:  # noqa: B036 -- a bug: raised in the main thread
                    errors.append(exc)
                    stop.set()
                with lock:
                    for _, count in moved:
                        result.bytes += count
                        progress.done()
                    result.moved += len(moved)
                    result.batched += len(moved)
                    single.extend(left)

        threads = [threading.Thread(target=worker, name=f"cmf-{label}-batch-{i}", daemon=True)
                   for i in range(min(self.jobs, len(groups)))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:  # on Ctrl-C nobody takes another group; each finishes the one it holds
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join()
            progress.close()
        if errors:
            raise errors[0]
        return single + [obj for group in todo for obj in group]

    def _run(self, label: str, objects: List[Obj], work: Callable[[Obj, Progress], int],
             result: TransferResult) -> List[Obj]:
        """Run ``work`` on every object in ``jobs`` threads; record outcomes in ``result``; return the failed ones.

        The threads take the next object from one shared iterator and hand back ``(obj, bytes, error)``:
        no future per object, which thousands of small files would pay for.  A run of many objects is
        shared with forked processes (:mod:`cmf_core.fanout`), whose outcomes arrive the same way.  On
        Ctrl-C (or a bug) nobody takes another object and each finishes the one it holds, so no temp
        file is left behind."""
        failed: List[Obj] = []
        if not objects:
            return failed
        count = fanout.processes(len(objects), self.jobs) if self.reopen is not None else 1
        per_process = -(-self.jobs // count)  # threads in each process: -j in all
        mine, *theirs = fanout.shares(objects, count)
        helpers: List[fanout.Helper] = []
        for share in theirs:  # forked before the progress bar, which may start a thread (tqdm's monitor)
            try:
                helpers.append(fanout.Helper(share, lambda share, report: self._serve(label, share, work, report,
                                                                                      per_process)))
            except OSError:  # no process to be had: this one moves that share too
                mine += share
        result.processes = max(result.processes, 1 + len(helpers))
        progress = Progress(label, len(objects), self.progress_enabled)
        finished: "queue.SimpleQueue[Tuple[Obj, int, Optional[BaseException]]]" = queue.SimpleQueue()
        stop, completed = threading.Event(), False
        threads = (self._workers(label, mine, work, progress, finished, stop, per_process)
                   + [helper.reader(finished, progress.add_bytes) for helper in helpers])
        try:
            for thread in threads:
                thread.start()
            for _ in objects:
                obj, moved, error = finished.get()
                if error is None:
                    result.bytes += moved
                    result.moved += 1
                elif isinstance(error, _OBJECT_FAILURES):
                    result.failed.append((obj.artifact, _describe(error)))
                    failed.append(obj)
                else:
                    raise error
                progress.done()
            completed = True
        finally:
            stop.set()
            for helper in helpers if not completed else ():
                helper.interrupt()
            for thread in threads:
                if thread.is_alive():
                    thread.join()
            progress.close()
        return failed

    def _workers(self, label: str, objects: List[Obj], work: Callable[[Obj, Progress], int], progress: Progress,
                 finished: "queue.SimpleQueue", stop: threading.Event, count: int) -> List[threading.Thread]:
        """``count`` threads (not started) that run ``work`` on ``objects`` and put each outcome in ``finished``."""
        breaker = _Breaker()
        todo, taking = iter(objects), threading.Lock()

        def worker() -> None:
            while not stop.is_set():
                with taking:
                    obj = next(todo, None)
                if obj is None:
                    return
                try:
                    finished.put((obj, breaker.call(work, obj, progress), None))
                except BaseException as exc:  # noqa: B036 -- handed to the main thread, which decides
                    finished.put((obj, 0, exc))

        return [threading.Thread(target=worker, name=f"cmf-{label}-{i}", daemon=True)
                for i in range(min(count, len(objects)))]

    def _serve(self, label: str, share: List[Obj], work: Callable[[Obj, Progress], int],
               report: fanout.Report, threads_count: int) -> None:
        """In a forked child: move ``share`` through a store of its own, reporting each outcome."""
        try:
            self.store = self.reopen()
        except CmfError as exc:  # the remote went away since the caller opened it: each object says why
            for i in range(len(share)):
                report(i, 0, _describe(exc))
            return
        try:
            finished: "queue.SimpleQueue" = queue.SimpleQueue()
            stop = threading.Event()
            index = {id(obj): i for i, obj in enumerate(share)}
            threads = self._workers(label, share, work, Progress(label, 0, False), finished, stop, threads_count)
            try:
                for thread in threads:
                    thread.start()
                for _ in share:
                    obj, moved, error = finished.get()
                    if error is not None and not isinstance(error, _OBJECT_FAILURES):
                        raise error
                    report(index[id(obj)], moved, None if error is None else _describe(error))
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
        finally:
            self.store.close()


def _say(result: TransferResult, note: str) -> None:
    """A note on how the transfer went: on stderr now (as the linker's), and among the result's notes."""
    result.notes.append(note)
    print(f"cmf: note: {note}", file=sys.stderr, flush=True)


def _write_all(chunks: Iterable[bytes], writer: HashingWriter) -> None:
    for chunk in chunks:
        writer.write(chunk)


class _Mismatch(Exception):
    """Downloaded or cached bytes whose md5 is not the object's."""


_OBJECT_FAILURES = (CmfError, OSError, _Mismatch)  # what fails one object; anything else is a bug, raised


class _Missing(CmfError):
    """A file to push that is nowhere to be read."""


class _NotTried(CmfError):
    """An object skipped because the remote stopped answering (the run fails fast instead of retrying each)."""


class _Breaker:
    """Trips once :data:`GIVE_UP_IN_A_ROW` objects in a row (as they finish, in any thread) exhausted their
    retries on transient errors: the remote is down, and the objects not started yet are not tried."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_a_row = 0
        self.reason: Optional[str] = None

    def call(self, work: Callable[[Obj, Progress], int], obj: Obj, progress: Progress) -> int:
        if self.reason is not None:
            raise _NotTried(f"not tried: {GIVE_UP_IN_A_ROW} objects in a row failed before it ({self.reason})")
        try:
            moved = work(obj, progress)
        except TransientError as exc:
            with self.lock:
                self.in_a_row += 1
                if self.in_a_row >= GIVE_UP_IN_A_ROW and self.reason is None:
                    self.reason = str(exc)
            raise
        with self.lock:
            self.in_a_row = 0
        return moved


class _LimitedBuffer(io.RawIOBase):
    """An in-memory sink for manifests that refuses to grow past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.data = bytearray()

    def reset(self) -> None:
        self.data.clear()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        if len(self.data) + len(chunk) > self.limit:
            raise CmfError(f"manifest larger than {self.limit >> 20} MB refused")
        self.data.extend(chunk)
        return len(chunk)

    def getvalue(self) -> bytes:
        return bytes(self.data)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Mismatch):
        return f"corrupt object on the remote, nothing placed: {exc}"
    if isinstance(exc, ObjectNotFound):
        return f"not on the remote ({exc.key})"
    if isinstance(exc, (BackendError, _NotTried, _Missing)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
