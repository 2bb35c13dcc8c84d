"""The backend conformance kit: the definition of a correct cmf backend.

A backend author subclasses :class:`BackendConformance` in a test module and
overrides ONE fixture, ``backend``, that returns the repository type and the
``cmf init`` options of a live, empty remote::

    from cmf_core.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        large_file_mb = 16          # optional: size of the large-file test
        jobs = 8                    # optional: -j of the push/pull tests

        @pytest.fixture
        def backend(self, tmp_path, my_server):
            # a fresh bucket/prefix/directory per test: derive it from tmp_path
            return "mytype", {"url": f"my://{my_server.bucket}/{tmp_path.name}", "token": my_server.token}

Two groups of tests run against it:

* object-level tests call the :class:`~cmf_core.hookspecs.ObjectStore` that the
  backend opens from the stored config (``put``/``get``/``exists``/``close``):
  byte-exact round trips, empty and large objects, batched ``exists``,
  overwrites, :class:`~cmf_core.errors.ObjectNotFound`, thread safety;
* engine-level tests drive ``cmf_core.api.artifact_push``/``artifact_pull``
  over a workspace logged with :class:`cmflib.cmf.Cmf`: round trips, skipping,
  missing and corrupt remote objects, an interrupted push resumed, dry runs;
* fault tests run the engine through a :class:`~cmf_core.testing.faults.FaultyStore`
  around the backend's store: dropped connections and refusals are retried,
  a permanent failure fails its object only and at once, corrupted or truncated
  downloads are never placed, an interrupted pull resumes.  Each records the
  faults it injected as the test property ``faults_injected`` (``--junitxml``).

The kit sets up its own environment (a private ``HOME``, a git identity,
``DVC_NO_ANALYTICS``), so it needs no ``conftest.py`` from cmf.  Its fixtures
(``workspace``, ``store``) are defined on the class and shadow any fixtures of
the same name in the backend's own conftest for these tests only.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pytest

from cmf_core import layout
from cmf_core.errors import BackendError, ObjectNotFound
from cmf_core.hookspecs import ObjectStore
from cmf_core.testing.faults import Fault, FaultyStore

__all__ = ["BackendConformance", "Fault", "FaultyStore", "WrappedStore", "fail_after", "fail_on", "Sink", "Dataset",
           "PIPELINE"]

PIPELINE = "conformance"


# -- helpers, exported for backends' own tests ------------------------------------------------------


class Sink(io.RawIOBase):
    """A write-only, NON-seekable stream like the one the engine passes to ``get``.

    It hashes what it receives; with ``keep=True`` it also keeps the bytes
    (``value``).  ``seek``/``tell`` raise :class:`io.UnsupportedOperation`.
    """

    def __init__(self, keep: bool = True) -> None:
        super().__init__()
        self.digest = hashlib.md5()
        self.size = 0
        self._data = bytearray() if keep else None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        if self._data is not None:
            self._data.extend(view)
        return len(view)

    @property
    def value(self) -> bytes:
        if self._data is None:
            raise ValueError("Sink(keep=False) does not keep the bytes")
        return bytes(self._data)

    @property
    def md5(self) -> str:
        return self.digest.hexdigest()


#: The fault-injecting wrapper under the name backends' tests already use; with no fault plan it only
#: runs the ``before_*`` hooks and records the calls that succeeded (see :mod:`cmf_core.testing.faults`).
WrappedStore = FaultyStore


def fail_after(count: int, error: Callable[[str], BaseException] = BackendError) -> Callable[..., None]:
    """A ``before_*`` hook that lets ``count`` calls through, then raises ``error(message)`` for every call."""
    lock = threading.Lock()
    calls = [0]

    def hook(*args) -> None:
        with lock:
            calls[0] += 1
            n = calls[0]
        if n > count:
            key = next((a for a in args if isinstance(a, str)), "?")
            raise error(f"injected failure after {count} calls (call {n}, key {key})")

    return hook


def fail_on(keys: Iterable[str], error: Callable[[str], BaseException] = BackendError) -> Callable[..., None]:
    """A ``before_put``/``before_get`` hook that raises ``error(message)`` for the given keys only."""
    doomed = set(keys)

    def hook(*args) -> None:
        key = next((a for a in args if isinstance(a, str)), None)
        if key in doomed:
            raise error(f"injected failure for key {key}")

    return hook


def random_bytes(size: int, seed: object) -> bytes:
    return random.Random(str(seed)).randbytes(size)


@dataclass
class Dataset:
    """Files written into a workspace, and the DVC objects they become.

    ``files`` maps workspace-relative paths to bytes; ``artifacts`` are the
    paths to log (a file or a directory); ``data_keys`` maps the key of every
    distinct file object of those artifacts to its size; ``manifests`` maps
    each ``.dir`` key to the manifest bytes DVC writes for it.  ``extra`` holds
    the objects that logging adds on its own (``Cmf`` versions the Python
    environment of every execution), found in the DVC cache by :meth:`logged`;
    :meth:`forget` leaves them in the workspace.
    """

    root: Path
    files: Dict[str, bytes]
    artifacts: List[str]
    data_keys: Dict[str, int] = field(default_factory=dict)
    manifests: Dict[str, bytes] = field(default_factory=dict)
    extra: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def write(cls, root: Path, files: Mapping[str, bytes], artifacts: Sequence[str],
              distinct: bool = True) -> "Dataset":
        """Write ``files`` under ``root``; with ``distinct`` refuse two files with the same bytes."""
        if distinct and len(set(files.values())) != len(files):
            raise ValueError("conformance data must not repeat file contents (their object would be shared)")
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        ds = cls(root, dict(files), list(artifacts))
        for art in artifacts:
            for rel in ds.files_under([art]):
                ds.data_keys[layout.key(hashlib.md5(files[rel]).hexdigest())] = len(files[rel])
            if (root / art).is_dir():
                manifest = ds.manifest(art)
                ds.manifests[layout.key(layout.manifest_md5(manifest))] = manifest
        return ds

    def log(self, pipeline: str = PIPELINE, mlmd: str = "mlmd") -> "Dataset":
        """Log the artifacts as outputs of one execution of ``pipeline`` (:meth:`BackendConformance.log`),
        then note what logging added (:meth:`logged`)."""
        BackendConformance.log(*self.artifacts, pipeline=pipeline, mlmd=mlmd)
        return self.logged()

    def logged(self) -> "Dataset":
        """Note the objects that logging added besides ours (they are in the DVC cache now)."""
        cache = self.root / ".dvc" / "cache"
        ours = set(self.data_keys) | set(self.manifests)
        for path in (cache / "files" / "md5").glob("*/*"):
            key = path.relative_to(cache).as_posix()
            if path.is_file() and layout.is_md5(path.parent.name + path.name) and key not in ours:
                self.extra[key] = path.stat().st_size
        return self

    def files_under(self, artifacts: Iterable[str]) -> List[str]:
        """The written files that belong to the given artifacts."""
        arts = list(artifacts)
        return [rel for rel in self.files if any(rel == a or rel.startswith(a + "/") for a in arts)]

    def manifest(self, artifact: str) -> bytes:
        """The ``.dir`` object of a directory artifact, as DVC writes it."""
        return layout.manifest_bytes([layout.Entry(hashlib.md5(self.files[rel]).hexdigest(), rel[len(artifact) + 1:])
                                      for rel in self.files_under([artifact])])

    def manifest_key(self, artifact: str) -> str:
        return layout.key(layout.manifest_md5(self.manifest(artifact)))

    @property
    def all_keys(self) -> List[str]:
        """Every object a push of the whole pipeline must store."""
        return sorted(self.data_keys) + sorted(self.manifests) + sorted(self.extra)

    @property
    def push_bytes(self) -> int:
        return sum(self.data_keys.values()) + sum(len(m) for m in self.manifests.values()) + sum(self.extra.values())

    @property
    def pull_objects(self) -> int:
        """How many objects a pull of the whole pipeline accounts for (files; manifests are not placed)."""
        return len(self.data_keys) + sum(1 for key in self.extra if not layout.is_dir_md5(key))

    def forget(self, artifacts: Optional[Iterable[str]] = None) -> None:
        """Delete artifacts (default: all) from the workspace, and the whole DVC cache, so pull must download."""
        for art in self.artifacts if artifacts is None else artifacts:
            path = self.root / art
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        cache = self.root / ".dvc" / "cache"
        if cache.exists():
            shutil.rmtree(cache)

    def assert_in_place(self, artifacts: Optional[Iterable[str]] = None) -> None:
        """Every byte of every file of ``artifacts`` is back, and a directory holds nothing else."""
        arts = self.artifacts if artifacts is None else list(artifacts)
        for rel in self.files_under(arts):
            path = self.root / rel
            assert path.is_file(), f"{rel} was not pulled"
            assert path.read_bytes() == self.files[rel], f"{rel} differs from what was pushed"
        for art in arts:
            if (self.root / art).is_dir():
                found = sorted(rel for rel, _ in layout.walk_files(self.root / art))
                expected = sorted(rel[len(art) + 1:] for rel in self.files_under([art]))
                assert found == expected, f"{art}/ holds {found}, expected {expected}"


# -- the kit ---------------------------------------------------------------------------------------


class BackendConformance:
    """The conformance tests of a cmf backend.  Subclass as ``class TestMyBackend(BackendConformance)``.

    Override the fixture ``backend`` to return ``(repo_type, init_options)``:
    the repository type (the entry-point name in ``cmf.backends``) and the
    options of ``cmf init <type>`` (a dict of option names to values) for a
    live remote that is EMPTY at the start of each test.  The fixture may use
    ``tmp_path`` (unique per test) to derive a fresh bucket, prefix or
    directory.  The kit's own files live elsewhere (``tmp_path_factory``), so
    the backend fixture may use ``tmp_path`` as it likes.

    Class attributes:

    * ``large_file_mb`` -- size of the large-object test (default 64);
    * ``jobs`` -- parallel transfers for push/pull and the threads of the
      concurrency test (default 4; the thread test always uses at least 8).
    """

    large_file_mb: int = 64
    jobs: int = 4

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Tuple[str, Dict[str, object]]:
        raise NotImplementedError(
            "override the `backend` fixture of your BackendConformance subclass to return "
            "(repo_type, init_options) for a live, empty remote")

    @pytest.fixture(autouse=True)
    def _conformance_env(self, monkeypatch, tmp_path_factory) -> None:
        """A private HOME and git identity, no DVC analytics: nothing leaks in from the user's setup."""
        monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("conformance-home")))
        monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for name, value in {"GIT_AUTHOR_NAME": "cmf conformance", "GIT_AUTHOR_EMAIL": "conformance@cmf.invalid",
                            "GIT_COMMITTER_NAME": "cmf conformance",
                            "GIT_COMMITTER_EMAIL": "conformance@cmf.invalid"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path_factory.mktemp("conformance-cwd"))

    @pytest.fixture
    def workspace(self, backend, tmp_path_factory, monkeypatch) -> Path:
        """A workspace initialised with ``cmf init <type>`` for the remote; it is the current directory."""
        from cmf_core import api

        repo_type, options = backend
        root = tmp_path_factory.mktemp("conformance-ws")
        monkeypatch.chdir(root)
        api.init(repo_type, dict(options), git_remote_url=str(root.parent / f"{root.name}-origin.git"),
                 workspace=root)
        return root

    @pytest.fixture
    def store(self, workspace):
        """The remote's ObjectStore, opened from the workspace's stored config; closed after the test."""
        opened = self.open_store(workspace)
        yield opened
        opened.close()

    @pytest.fixture
    def scratch(self, tmp_path_factory) -> Path:
        """A directory for local source files of the object-level tests."""
        return tmp_path_factory.mktemp("conformance-objects")

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def open_store(workspace: Path) -> ObjectStore:
        """The workspace's remote as its backend opens it (the caller closes it)."""
        from cmf_core import config, plugins

        return plugins.open_store(config.load(workspace).remote)

    @staticmethod
    def source(folder: Path, data: bytes, name: Optional[str] = None) -> Tuple[Path, str]:
        """A local file with ``data`` and the key its content addresses."""
        md5 = hashlib.md5(data).hexdigest()
        path = folder / (name or md5)
        path.write_bytes(data)
        return path, layout.key(md5)

    def plant(self, store: ObjectStore, key: str, data: bytes, scratch: Path) -> None:
        """Store ``data`` at ``key`` whatever its md5: how the kit makes a corrupt remote object.  A
        backend whose ``put`` has the server check the bytes against the key (the S3 backends send
        Content-MD5) overrides this with a way around that check."""
        src = scratch / f"planted-{hashlib.md5(data).hexdigest()}"
        src.write_bytes(data)
        store.put(src, key)

    @staticmethod
    def fetch(store: ObjectStore, key: str) -> bytes:
        sink = Sink()
        store.get(key, sink)
        return sink.value

    @staticmethod
    def log(*paths: str, pipeline: str = PIPELINE, mlmd: str = "mlmd") -> None:
        """Log ``paths`` (relative to the mlmd file's folder) as outputs of one execution of ``pipeline``."""
        from cmflib.cmf import Cmf

        cmf = Cmf(filepath=mlmd, pipeline_name=pipeline)
        cmf.create_context("produce")
        cmf.create_execution("Produce")
        for path in paths:
            cmf.log_dataset(path, "output")
        cmf.finalize()

    def push(self, **kwargs):
        from cmf_core import api

        return api.artifact_push(PIPELINE, jobs=self.jobs, **kwargs)

    def pull(self, **kwargs):
        from cmf_core import api

        return api.artifact_pull(PIPELINE, jobs=self.jobs, **kwargs)

    @staticmethod
    def files_and_folder(root: Path) -> Dataset:
        """Two files and a nested directory with a 0-byte file and non-ASCII names with spaces, logged."""
        files = {
            "data/a.csv": b"id,value\n1,2\n3,4\n",
            "data/b.bin": random_bytes(300_000, "b.bin"),
            "données/été 1.csv": "x,y\né,ü\n".encode(),
            "données/vide": b"",
            "données/sous dossier/profond/poids.bin": random_bytes(70_000, "poids"),
            "données/sous dossier/ñ 中.txt": "中文\n".encode(),
        }
        ds = Dataset.write(root, files, ["data/a.csv", "data/b.bin", "données"])
        return ds.log()

    @staticmethod
    def two_files(root: Path) -> Dataset:
        ds = Dataset.write(root, {"data/a.csv": b"a,b\n1,2\n", "data/b.bin": random_bytes(50_000, "two")},
                           ["data/a.csv", "data/b.bin"])
        return ds.log()

    @staticmethod
    def failed_names(result) -> str:
        return " | ".join(f"{what}: {error}" for what, error in result.failed)

    # -- object level: the store alone ----------------------------------------------------------

    def test_fresh_remote_holds_nothing(self, store):
        keys = [layout.key(hashlib.md5(str(i).encode()).hexdigest()) for i in range(5)]
        assert store.exists(keys) == set()
        assert store.exists([]) == set()

    def test_put_then_get_round_trips_bytes(self, store, scratch):
        data = random_bytes(123_457, "round trip") + bytes(range(256))
        src, key = self.source(scratch, data)
        store.put(src, key)
        assert self.fetch(store, key) == data
        assert src.read_bytes() == data, "put must leave the source file as it was"

    def test_zero_byte_object_round_trips(self, store, scratch):
        src, key = self.source(scratch, b"")
        store.put(src, key)
        assert store.exists([key]) == {key}
        sink = Sink()
        store.get(key, sink)
        assert sink.size == 0

    def test_dir_manifest_key_round_trips(self, store, scratch):
        manifest = layout.manifest_bytes([layout.Entry(hashlib.md5(b"x").hexdigest(), "a/b c.txt")])
        src = scratch / "manifest"
        src.write_bytes(manifest)
        key = layout.key(layout.manifest_md5(manifest))
        plain = key[: -len(".dir")]
        store.put(src, key)
        assert store.exists([key, plain]) == {key}
        assert self.fetch(store, key) == manifest

    def test_exists_returns_exactly_the_present_keys_in_one_call(self, store, scratch):
        md5s = [hashlib.md5(f"key {i}".encode()).hexdigest() for i in range(150)]
        keys = [layout.key(m) for m in md5s] + [layout.key(m + ".dir") for m in md5s]  # 300 keys
        # a present key's sibling (the same md5 with/without .dir) is absent: no prefix matching
        present = {layout.key(m) for m in md5s[0::3]} | {layout.key(m + ".dir") for m in md5s[1::3]}
        for i, md5 in enumerate(md5s):  # each with the bytes its key names
            src = self.source(scratch, f"key {i}".encode())[0]
            for key in {layout.key(md5), layout.key(md5 + ".dir")} & present:
                store.put(src, key)
        asked = list(keys)
        random.Random(7).shuffle(asked)
        assert store.exists(asked) == present

    def test_put_replaces_an_existing_object(self, store, scratch):
        """How a corrupt remote object is repaired: the right bytes put over it, no tail of the old left."""
        new, key = self.source(scratch, b"second")
        self.plant(store, key, b"the first, longer and corrupt version of the object\n" * 100, scratch)
        store.put(new, key)
        assert self.fetch(store, key) == b"second", "the new object must replace the old one, with no tail left"
        assert store.exists([key]) == {key}

    def test_get_of_a_missing_key_raises_object_not_found(self, store, scratch):
        md5 = hashlib.md5(b"never stored").hexdigest()
        missing = [layout.key(md5), layout.key(md5 + ".dir")]
        for when in ("on an empty remote", "beside a stored object"):
            for key in missing:
                sink = Sink()
                with pytest.raises(ObjectNotFound) as raised:
                    store.get(key, sink)
                assert key in str(raised.value), f"the message must name the missing key ({when})"
                assert sink.size == 0, f"nothing may be written for a missing key ({when})"
            sibling = next(data for data in (f"sibling {i}".encode() for i in itertools.count())
                           if hashlib.md5(data).hexdigest()[:2] == md5[:2])  # in the missing keys' folder
            store.put(*self.source(scratch, sibling))

    def test_concurrent_puts_and_gets_from_8_threads(self, store, scratch):
        objects = {}
        for i in range(40):
            src, key = self.source(scratch, random_bytes(1_000 + 4_099 * i, f"thread {i}"))
            objects[key] = src
        threads = max(8, self.jobs)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda kv: store.put(kv[1], kv[0]), objects.items()))
        assert store.exists(list(objects)) == set(objects)
        with ThreadPoolExecutor(threads) as pool:
            got = dict(pool.map(lambda key: (key, self.fetch(store, key)), objects))
        for key, src in objects.items():
            assert got[key] == src.read_bytes(), f"{key} did not round trip under concurrency"

    def test_large_object_round_trips_streamed(self, store, scratch):
        src = scratch / "large"
        digest, chunk = hashlib.md5(), 1 << 20
        with open(src, "wb") as out:
            for i in range(self.large_file_mb):
                block = os.urandom(chunk)
                digest.update(block)
                out.write(block)
        key = layout.key(digest.hexdigest())
        store.put(src, key)
        assert store.exists([key]) == {key}
        sink = Sink(keep=False)
        store.get(key, sink)
        assert sink.size == self.large_file_mb * chunk
        assert sink.md5 == digest.hexdigest()

    def test_objects_survive_reopening_the_remote(self, workspace, scratch):
        first = self.open_store(workspace)
        src, key = self.source(scratch, b"kept across sessions")
        first.put(src, key)
        first.close()
        second = self.open_store(workspace)
        try:
            assert second.exists([key]) == {key}
            assert self.fetch(second, key) == b"kept across sessions"
        finally:
            second.close()

    # -- engine level: cmf artifact push / pull ---------------------------------------------------

    def test_push_then_pull_round_trips_files_and_a_nested_directory(self, workspace):
        ds = self.files_and_folder(workspace)
        pushed = self.push()
        assert pushed.ok, self.failed_names(pushed)
        assert (pushed.moved, pushed.skipped) == (len(ds.all_keys), 0)
        assert pushed.bytes == ds.push_bytes
        ds.forget()
        pulled = self.pull()
        assert pulled.ok, self.failed_names(pulled)
        assert (pulled.moved, pulled.skipped) == (len(ds.data_keys), ds.pull_objects - len(ds.data_keys))
        ds.assert_in_place()

    def test_push_stores_objects_under_their_dvc_keys(self, workspace, store):
        ds = self.files_and_folder(workspace)
        assert self.push().ok
        assert store.exists(ds.all_keys) == set(ds.all_keys)
        for key, manifest in ds.manifests.items():
            assert self.fetch(store, key) == manifest, f"{key} is not the manifest DVC writes"
        for rel, data in ds.files.items():
            assert self.fetch(store, layout.key(hashlib.md5(data).hexdigest())) == data, rel

    def test_second_push_moves_nothing(self, workspace):
        ds = self.files_and_folder(workspace)
        assert self.push().ok
        again = self.push()
        assert again.ok, self.failed_names(again)
        assert (again.moved, again.skipped, again.bytes) == (0, len(ds.all_keys), 0)

    def test_pull_with_everything_in_place_moves_nothing(self, workspace):
        ds = self.files_and_folder(workspace)
        assert self.push().ok
        pulled = self.pull()
        assert pulled.ok, self.failed_names(pulled)
        assert (pulled.moved, pulled.skipped) == (0, ds.pull_objects)
        ds.assert_in_place()

    def test_second_pull_moves_nothing(self, workspace):
        ds = self.files_and_folder(workspace)
        assert self.push().ok
        ds.forget()
        assert self.pull().ok
        again = self.pull()
        assert again.ok, self.failed_names(again)
        assert (again.moved, again.skipped) == (0, ds.pull_objects)
        ds.assert_in_place()

    def test_pull_names_an_artifact_missing_from_the_remote(self, workspace):
        ds = self.two_files(workspace)
        pushed = self.push(artifact="data/a.csv")
        assert pushed.ok and pushed.moved == 1, self.failed_names(pushed)
        ds.forget()
        pulled = self.pull()
        assert not pulled.ok
        assert [w for w, _ in pulled.failed if "b.bin" in w], f"b.bin not named in {pulled.failed}"
        assert not [w for w, _ in pulled.failed if "a.csv" in w], f"a.csv wrongly failed: {pulled.failed}"
        assert pulled.moved == 1
        ds.assert_in_place(["data/a.csv"])
        assert not (workspace / "data" / "b.bin").exists()

    def test_pull_refuses_a_corrupted_object_and_leaves_no_file(self, workspace, store, scratch):
        ds = self.two_files(workspace)
        assert self.push().ok
        bad_key = layout.key(layout.file_md5(workspace / "data" / "b.bin"))
        self.plant(store, bad_key, b"these are not the bytes you pushed", scratch)
        listing = set(os.listdir(workspace / "data"))
        ds.forget()
        pulled = self.pull()
        assert not pulled.ok
        assert [w for w, _ in pulled.failed if "b.bin" in w], f"b.bin not named in {pulled.failed}"
        assert not (workspace / "data" / "b.bin").exists(), "a corrupt object must not be placed"
        assert set(os.listdir(workspace / "data")) == listing - {"b.bin"}, "temp files left beside the target"
        ds.assert_in_place(["data/a.csv"])
        cached = workspace / ".dvc" / "cache" / bad_key
        assert not cached.exists(), "a corrupt object must not enter the DVC cache"
        if cached.parent.is_dir():
            legit = {k.rsplit("/", 1)[1] for k in ds.all_keys if k != bad_key}
            assert set(os.listdir(cached.parent)) <= legit, "temp files left in the DVC cache"

    def test_interrupted_push_resumes_with_only_the_missing_objects(self, workspace, store):
        ds = self.files_and_folder(workspace)
        total = len(ds.all_keys)
        broken = WrappedStore(store, before_put=fail_after(3))  # the 4th put and every later one fails
        first = self.push(store=broken)
        assert not first.ok and first.failed
        present = store.exists(ds.all_keys)
        assert present == set(broken.put_keys) and len(present) == 3
        resumed = self.push()
        assert resumed.ok, self.failed_names(resumed)
        assert (resumed.moved, resumed.skipped) == (total - 3, 3)
        assert store.exists(ds.all_keys) == set(ds.all_keys)
        ds.forget()
        pulled = self.pull()
        assert pulled.ok, self.failed_names(pulled)
        ds.assert_in_place()

    def test_manifest_is_not_uploaded_when_a_member_fails(self, workspace, store):
        ds = self.files_and_folder(workspace)
        member = layout.key(hashlib.md5(ds.files["données/sous dossier/profond/poids.bin"]).hexdigest())
        result = self.push(store=WrappedStore(store, before_put=fail_on([member])))
        assert not result.ok
        manifest = ds.manifest_key("données")
        assert store.exists([manifest, member]) == set(), "a .dir manifest was published without all its members"
        [(directory, reason)] = [(w, e) for w, e in result.failed if not w.startswith("données/")]
        assert directory.startswith("données") and "directory not published: 1 of its" in reason, \
            "the directory artifact itself is named as not pushed, beside the file that failed"
        others = [k for k in ds.data_keys if k != member]
        assert store.exists(others) == set(others), "objects that did not fail must still be pushed"

    def test_manifest_sharing_a_failed_member_is_not_uploaded(self, workspace, store):
        shared = b"the same bytes in two directories\n"
        ds = Dataset.write(workspace, {"one/shared.txt": shared, "one/own.txt": b"one\n",
                                       "two/copy of shared.txt": shared, "two/own.txt": b"two\n"},
                           ["one", "two"], distinct=False)
        self.log("one", "two")
        failing = fail_on([layout.key(hashlib.md5(shared).hexdigest())])
        result = self.push(store=WrappedStore(store, before_put=failing))
        assert not result.ok
        manifests = [ds.manifest_key("one"), ds.manifest_key("two")]
        assert store.exists(manifests) == set(), "a .dir manifest was published without all its members"

    def test_dry_run_push_moves_nothing(self, workspace, store):
        ds = self.files_and_folder(workspace)
        planned = self.push(dry_run=True)
        assert planned.ok, self.failed_names(planned)
        assert planned.moved == 0
        assert len(planned.planned) == len(ds.all_keys), "a dry run reports what would move"
        assert store.exists(ds.all_keys) == set(), "a dry run must not upload"

    def test_dry_run_pull_writes_nothing(self, workspace):
        ds = self.two_files(workspace)
        assert self.push().ok
        ds.forget()
        listing = set(os.listdir(workspace / "data"))
        planned = self.pull(dry_run=True)
        assert planned.ok, self.failed_names(planned)
        assert planned.moved == 0
        assert len(planned.planned) == len(ds.data_keys), "a dry run reports what would move"
        assert set(os.listdir(workspace / "data")) == listing, "a dry run must not write into the workspace"
        cache = workspace / ".dvc" / "cache"
        cached = [p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
        assert cached == [], "a dry run must not write into the DVC cache"

    # -- engine level under injected faults ---------------------------------------------------------

    @pytest.fixture
    def quick_retries(self, monkeypatch) -> None:
        """Retry after ~10 ms instead of ~0.2 s, so that tests of transient faults stay fast."""
        from cmf_core import transfer

        monkeypatch.setattr(transfer, "BACKOFF", 0.01)

    @staticmethod
    def assert_no_partial_files(workspace: Path) -> None:
        """Nothing half-written is left in the workspace or the DVC cache."""
        from cmf_core import transfer

        cache = workspace / ".dvc" / "cache"
        leftovers = list(workspace.rglob(f"*{transfer.PARTIAL}")) + list(cache.rglob(".tmp-*"))
        assert leftovers == [], "partial files left behind"

    #: a push or pull of two small files with one failing object takes well under this; retrying that object
    #: would alone sleep at least 1.5 s (0.1 + 0.2 + 0.4 + 0.8, the shortest backoff of four retries)
    NO_RETRY_SECONDS = 1.5

    @staticmethod
    def file_key(ds: Dataset, rel: str) -> str:
        return layout.key(hashlib.md5(ds.files[rel]).hexdigest())

    def test_transient_faults_are_retried_until_push_and_pull_succeed(self, workspace, store, quick_retries,
                                                                      record_property):
        ds = self.files_and_folder(workspace)
        pushing = FaultyStore(store, Fault.drop(1, ops="exists"), Fault.fail_first(2, ops="put"),
                              Fault.drop(1, ops="put"), Fault.delay(0.05, times=3))
        pushed = self.push(store=pushing)
        assert pushed.ok, self.failed_names(pushed)
        assert (pushed.moved, pushed.skipped) == (len(ds.all_keys), 0)
        assert pushing.count("exists") == 2, "a dropped listing is asked again"
        assert pushing.count("put") == len(ds.all_keys) + 3, "every refused or dropped upload is tried again"
        ds.forget()
        pulling = FaultyStore(store, Fault.drop(2, ops="get", keys=ds.data_keys), Fault.fail_first(1, ops="get"))
        pulled = self.pull(store=pulling)
        assert pulled.ok, self.failed_names(pulled)
        assert pulling.count("get") == pulled.moved + len(ds.manifests) + 3, "every failed download is tried again"
        ds.assert_in_place()
        self.assert_no_partial_files(workspace)
        injected = pushing.injected + pulling.injected
        assert injected == {"drop": 4, "fail": 3, "delay": 3}
        record_property("faults_injected", sum(injected.values()))

    def test_a_permanent_fault_fails_only_its_object_and_at_once(self, workspace, store, record_property):
        ds = self.two_files(workspace)
        a_key, b_key = self.file_key(ds, "data/a.csv"), self.file_key(ds, "data/b.bin")
        pushing = FaultyStore(store, Fault.fail_first(None, permanent=True, ops="put", keys=[b_key]))
        started = time.monotonic()
        pushed = self.push(store=pushing)
        assert time.monotonic() - started < self.NO_RETRY_SECONDS, "a permanent failure must not wait for retries"
        assert [what.split(":")[0] for what, _ in pushed.failed] == ["data/b.bin"], "the failed object is named"
        assert pushing.count("put", b_key) == 1, "a permanent failure must not be retried"
        assert store.exists([a_key, b_key]) == {a_key}, "the other objects are still pushed"
        assert self.push().ok
        ds.forget()
        pulling = FaultyStore(store, Fault.fail_first(None, permanent=True, ops="get", keys=[a_key]))
        started = time.monotonic()
        pulled = self.pull(store=pulling)
        assert time.monotonic() - started < self.NO_RETRY_SECONDS, "a permanent failure must not wait for retries"
        assert [what.split(":")[0] for what, _ in pulled.failed] == ["data/a.csv"], "the failed object is named"
        assert pulling.count("get", a_key) == 1, "a permanent failure must not be retried"
        ds.assert_in_place(["data/b.bin"])
        assert not (workspace / "data" / "a.csv").exists()
        record_property("faults_injected", sum((pushing.injected + pulling.injected).values()))

    def test_corrupted_and_truncated_downloads_are_never_placed(self, workspace, store, record_property):
        ds = self.two_files(workspace)
        assert self.push().ok
        a_key, b_key = self.file_key(ds, "data/a.csv"), self.file_key(ds, "data/b.bin")
        listing = set(os.listdir(workspace / "data"))
        ds.forget()
        faulty = FaultyStore(store, Fault.corrupt(keys=[a_key]), Fault.truncate(keys=[b_key]))
        pulled = self.pull(store=faulty)
        assert faulty.injected["corrupt"] >= 1 and faulty.injected["truncate"] >= 1
        assert sorted(what.split(":")[0] for what, _ in pulled.failed) == ["data/a.csv", "data/b.bin"]
        assert all("md5 mismatch" in error for _, error in pulled.failed), pulled.failed
        assert set(os.listdir(workspace / "data")) == listing - {"a.csv", "b.bin"}, "a bad download was placed"
        cached = [workspace / ".dvc" / "cache" / key for key in (a_key, b_key)]
        assert not any(path.exists() for path in cached), "a bad download entered the DVC cache"
        self.assert_no_partial_files(workspace)
        again = self.pull()
        assert again.ok and again.moved == 2, self.failed_names(again)
        ds.assert_in_place()
        record_property("faults_injected", sum(faulty.injected.values()))

    def test_interrupted_pull_resumes_with_only_the_missing_objects(self, workspace, store, record_property):
        ds = self.files_and_folder(workspace)
        assert self.push().ok
        ds.forget()
        gets = fail_after(3, error=KeyboardInterrupt)  # the manifest and two files, then Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            self.pull(store=FaultyStore(store, before_get=gets))
        self.assert_no_partial_files(workspace)
        placed = {rel for rel in ds.files if (workspace / rel).is_file()}
        for rel in placed:
            assert (workspace / rel).read_bytes() == ds.files[rel], f"{rel} was placed incomplete"
        assert 2 <= len(placed) < len(ds.files)
        resumed = self.pull()
        assert resumed.ok, self.failed_names(resumed)
        assert resumed.moved == len(ds.data_keys) - len(placed), "only the missing objects move again"
        ds.assert_in_place()
        record_property("faults_injected", 1)
