"""``dvc add`` without DVC's start-up cost: hash, fill the cache, write the ``.dvc`` file, stage in git.

What :meth:`Versioner.add` leaves behind is what ``dvc add`` leaves behind
(the tests compare them byte for byte): the object (and, for a directory, its
``.dir`` manifest) read-only in ``.dvc/cache/files/md5/xx/yyyy``, a
``<path>.dvc`` file next to the data, and ``/<name>`` in the ``.gitignore`` of
the data's directory.  With ``cache.type`` set to ``hardlink`` or ``symlink`` the
workspace file then becomes a read-only link to its cache file, as with ``dvc
add`` (see :mod:`cmf_core.links`): a 500 GB dataset takes 500 GB, not 1 TB.
Unlike ``dvc add`` it also stages the ``.dvc`` file and
the ``.gitignore`` in git, as the original cmflib does.  A file that lies
inside a directory that is already tracked is hashed only.
"""
from __future__ import annotations

import functools
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from cmf_core import config, fanout, layout, links
from cmf_core.errors import CmfError

SMALL = 1 << 20  # a file up to this size is read once, into memory, to be hashed and copied into the cache


@functools.lru_cache(maxsize=None)
def _loose_writing_odb() -> type:
    """GitPython's default object database (git reads the objects), except that a new object is written as a
    loose object in-process by gitdb's writer, which is what ``git hash-object -w`` does: staging a ``.dvc`` file
    then starts no ``git`` process (two of those per ``log_dataset`` call were half of its time)."""
    from git.db import GitCmdObjectDB
    from gitdb import LooseObjectDB

    class LooseWriting(GitCmdObjectDB):
        def store(self, istream: Any) -> Any:
            return LooseObjectDB.store(self, istream)

    return LooseWriting


@dataclass
class Versioned:
    """The version of a logged file or directory."""

    path: Path
    md5: str  # ends in ".dir" for a directory
    size: int
    nfiles: Optional[int] = None
    dvc_file: Optional[Path] = None  # None when a tracked parent directory versions it


@dataclass
class Versioner:
    """Versions files of the workspace rooted at ``root`` (the directory holding ``.dvc``); ``settings``
    are its DVC cache's (read from its DVC config when not given)."""

    root: Path
    settings: Optional[config.CacheSettings] = None
    staged: List[str] = field(default_factory=list)
    _repo: object = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.settings = self.settings or config.cache_settings(self.root)
        self.cache = self.settings.dir / "files" / "md5"
        self.linker = links.Linker(self.settings)
        self._checked = False

    @property
    def repo(self):
        """The git repository of the workspace (opened on first use), whose new objects are written in-process
        (:func:`_loose_writing_odb`)."""
        if self._repo is None:
            import git

            self._repo = git.Repo(self.root, search_parent_directories=True, odbt=_loose_writing_odb())
        return self._repo

    # -- hashing and the cache -------------------------------------------------------------------

    def cache_path(self, md5: str) -> Path:
        return Path(f"{self.cache}/{md5[:2]}/{md5[2:]}")  # one Path, not two joins: it runs per file

    def check_writable(self) -> None:
        """Refuse a cache this user cannot write before the first object goes in (once per Versioner)."""
        if not self._checked:
            links.check_writable(self.settings.dir, self.settings.shared)
            self._checked = True

    def _store_manifest(self, md5: str, data: bytes) -> None:
        """Put a ``.dir`` manifest in the cache, read-only, unless it is there already."""
        target = self.cache_path(md5)
        if target.exists():
            return
        self.linker.make_folder(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, links.READ_ONLY)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    def _add_file(self, path: Path) -> Versioned:
        """Hash a file and put it in the cache, reading it once when it is small (see ``layout.read_file``)."""
        self.check_writable()
        md5, size, content = layout.read_file(path, keep=SMALL)
        self.linker.to_cache(path, self.cache_path(md5), content)
        return Versioned(path, md5, size)

    def _add_dir(self, path: Path) -> Versioned:
        """Version every file of a directory.  Files larger than :data:`SMALL` are hashed in threads, one per
        CPU (hashlib lets go of the interpreter's lock), while this thread does the small ones: threads
        taking turns at the lock made 10,000 files of 1 KB slower (1.7-2.0 s in one thread, 2.3 s in two,
        2.7-2.9 s in four)."""
        members = list(layout.walk_files(path))
        versions: List[Optional[Versioned]] = [None] * len(members)
        pool = ThreadPoolExecutor(fanout.cpus(), thread_name_prefix="cmf-add")
        try:
            big = {i: pool.submit(self._add_file, member) for i, (_, member) in enumerate(members)
                   if os.stat(member).st_size > SMALL}
            for i, (_, member) in enumerate(members):
                if i not in big:
                    versions[i] = self._add_file(member)
            for i, future in big.items():
                versions[i] = future.result()
        finally:
            pool.shutdown(cancel_futures=True)
        entries = [layout.Entry(v.md5, relpath) for (relpath, _), v in zip(members, versions)]
        size = sum(v.size for v in versions)
        manifest = layout.manifest_bytes(entries)
        md5 = layout.manifest_md5(manifest)
        self._store_manifest(md5, manifest)
        return Versioned(path, md5, size, nfiles=len(entries))

    def _tracked_parent(self, path: Path) -> Optional[Path]:
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                return None
            if parent.with_name(parent.name + ".dvc").is_file():
                return parent
        return None

    # -- the public operations -------------------------------------------------------------------

    def resolve(self, path: os.PathLike, base: Path) -> Path:
        """An existing path inside the workspace, or a clear error."""
        full = (base / path).absolute()
        if not full.exists():
            raise CmfError(f"cannot log {path}: no such file or directory")
        real = full.resolve()
        if real != self.root and self.root not in real.parents:
            placed = full.parent.resolve() / full.name  # a file that cache.type=symlink placed: a link into the cache
            if full.is_symlink() and self.settings.dir.resolve() in real.parents and self.root in placed.parents:
                return placed
            raise CmfError(f"cannot log {path}: it is outside the workspace {self.root}")
        return real

    def md5(self, path: Path) -> str:
        """The DVC md5 of a file or directory, without touching the cache."""
        if path.is_dir():
            entries = [layout.Entry(layout.file_md5(p), rel) for rel, p in layout.walk_files(path)]
            return layout.manifest_md5(layout.manifest_bytes(entries))
        return layout.file_md5(path)

    def add(self, path: Path) -> Versioned:
        """Version ``path`` (absolute, inside the workspace) as ``dvc add`` would, and stage it in git."""
        if path == self.root or path.name.endswith(".dvc") or ".dvc" in path.relative_to(self.root).parts:
            raise CmfError(f"cannot version {path}: it is the workspace or DVC's own files")
        if self._tracked_parent(path) is not None:
            return Versioned(path, self.md5(path), path.stat().st_size if path.is_file() else 0)
        rel = path.relative_to(Path(self.repo.working_tree_dir).resolve()).as_posix()
        if self._tracked_by_git(rel):
            raise CmfError(f"cannot version {rel}: git tracks it; run 'git rm -r --cached {rel}' first")
        version = self._add_dir(path) if path.is_dir() else self._add_file(path)
        version.dvc_file = self._write_dvc_file(version)
        gitignore = path.parent / ".gitignore"
        config.ensure_line(gitignore, "/" + path.name)
        self.stage(version.dvc_file, gitignore)
        return version

    def _tracked_by_git(self, rel: str) -> bool:
        """Whether git's index holds the file ``rel`` or files under the directory ``rel`` (read in-process, as
        ``git ls-files`` would answer)."""
        inside = rel + "/"
        return any(path == rel or path.startswith(inside) for path, _ in self.repo.index.entries)

    def _write_dvc_file(self, version: Versioned) -> Path:
        dvc_file = version.path.with_name(version.path.name + ".dvc")
        out: Dict[str, object] = {"md5": version.md5, "size": version.size}
        if version.nfiles is not None:
            out["nfiles"] = version.nfiles
        out.update({"hash": "md5", "path": version.path.name})
        document: Dict[str, object] = {"outs": [out]}
        if dvc_file.exists():  # keep what the user added (desc, meta, remote, ...) around our fields
            try:
                existing = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise CmfError(f"{dvc_file} is not valid YAML: {exc}") from None
            if isinstance(existing, dict) and isinstance(existing.get("outs"), list) and existing["outs"]:
                kept = {k: v for k, v in existing["outs"][0].items() if k not in ("md5", "size", "nfiles", "hash",
                                                                                  "path")}
                out.update(kept)
                document = {**existing, "outs": [out]}
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
        tmp = dvc_file.with_name(dvc_file.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, dvc_file)
        return dvc_file

    def stage(self, *paths: Path) -> None:
        """``git add`` these files (paths inside the repository)."""
        top = Path(self.repo.working_tree_dir).resolve()
        rels = [str(Path(p).resolve().relative_to(top)) for p in paths]
        self.repo.index.add(rels)
        self.staged.extend(r for r in rels if r not in self.staged)

    def head(self) -> str:
        """The commit HEAD points at, or "" in a repository without commits."""
        try:
            return self.repo.head.commit.hexsha
        except ValueError:
            return ""

    def commit(self, message: str) -> str:
        """Commit exactly the files this Versioner staged (not whatever else the user staged)."""
        import git

        if not self.staged or not self.repo.git.diff("--cached", "--name-only", "--", *self.staged):
            self.staged.clear()
            return self.head()  # nothing of ours changed since the last commit
        try:
            self.repo.git.commit("-q", "-m", message, "--", *self.staged)
        except git.GitCommandError as exc:
            detail = (exc.stderr or "").strip().splitlines()
            if any("Please tell me who you are" in line or "user.email" in line for line in detail):
                raise CmfError("git commit failed: set your identity with git config user.name/user.email") from None
            raise CmfError(f"git commit failed: {' '.join(detail) or exc}") from None
        self.staged.clear()
        return self.head()

