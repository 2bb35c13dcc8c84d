"""DVC's cache link types (``cache.type``) in log_dataset and pull, on the real file system of the test machine.

Each type is checked the way a DVC user would: the workspace file is the cache file (same inode, or a symlink
to it) or an independent copy; linked files are read-only; ``dvc status`` and ``dvc checkout`` stay quiet;
``dvc pull`` and ``cmf artifact pull`` each take over what the other placed.  The cache is never written
through a link.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cmf_core import api, links
from cmf_core.testing import Dataset

from .conftest import clone_workspace, run_cmf

FILES = {"data/a.csv": b"id,v\n1,2\n", "data/sub/b.bin": os.urandom(3000), "model.pkl": os.urandom(2000)}


def dvc(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cached(root: Path, data: bytes, cache: Path = None) -> Path:
    md5 = hashlib.md5(data).hexdigest()
    return (cache or root / ".dvc" / "cache") / "files" / "md5" / md5[:2] / md5[2:]


def assert_placed(root: Path, kind: str, cache: Path = None) -> None:
    """Every file of FILES is in place as ``kind`` places it, with the right bytes."""
    for rel, data in FILES.items():
        path, object_file = root / rel, cached(root, data, cache)
        assert path.read_bytes() == data and object_file.read_bytes() == data
        assert stat.S_IMODE(object_file.stat().st_mode) == 0o444, f"cache file {object_file} is writable"
        if kind == "symlink":
            assert path.is_symlink() and Path(os.readlink(path)) == object_file, rel
        elif kind == "hardlink":
            assert not path.is_symlink() and path.stat().st_ino == object_file.stat().st_ino, rel
            assert stat.S_IMODE(path.stat().st_mode) == 0o444, f"{rel} is not protected"
        else:
            assert not path.is_symlink() and path.stat().st_ino != object_file.stat().st_ino, rel
            assert path.stat().st_mode & stat.S_IWUSR, f"a copy, {rel}, must stay the user's to edit"


def quiet(root: Path) -> None:
    """``dvc status`` clean and ``dvc checkout`` with nothing to do."""
    assert "up to date" in dvc("status", cwd=root)
    before = {rel: os.lstat(root / rel) for rel in FILES}
    dvc("checkout", cwd=root)
    for rel, info in before.items():
        now = os.lstat(root / rel)
        assert (now.st_ino, now.st_mtime_ns) == (info.st_ino, info.st_mtime_ns), f"dvc checkout replaced {rel}"


@pytest.fixture
def logged_as(workspace):
    """``logged_as(kind)``: the workspace with ``cache.type = kind``, FILES logged (data/ and model.pkl)."""

    def log(kind: str) -> Dataset:
        dvc("config", "cache.type", kind, cwd=workspace)
        return Dataset.write(workspace, FILES, ["data", "model.pkl"]).log()

    return log


@pytest.mark.parametrize("kind", ["hardlink", "symlink", "copy"])
def test_log_and_pull_place_files_as_cache_type_says(logged_as, workspace, tmp_path, kind):
    logged_as(kind)
    assert_placed(workspace, kind)
    quiet(workspace)
    assert api.artifact_push("conformance").ok

    clone = clone_workspace(workspace, tmp_path / "clone")
    dvc("config", "--local", "cache.type", kind, cwd=clone)
    pulled = run_cmf(["artifact", "pull", "-p", "conformance"], cwd=clone)
    assert pulled.code == 0 and "cache.type" not in pulled.err, pulled.err  # no note: the type works here
    assert_placed(clone, kind)
    quiet(clone)
    again = api.artifact_pull("conformance", mlmd=str(clone / "mlmd"))
    assert again.ok and again.moved == 0


@pytest.mark.parametrize("first,then", [("dvc", "cmf"), ("cmf", "dvc")])
def test_dvc_and_cmf_pull_take_over_each_others_links(logged_as, workspace, tmp_path, first, then):
    logged_as("hardlink")
    assert api.artifact_push("conformance").ok
    clone = clone_workspace(workspace, tmp_path / "clone")
    dvc("config", "--local", "cache.type", "hardlink", cwd=clone)
    if first == "dvc":
        dvc("pull", cwd=clone)
        result = api.artifact_pull("conformance", mlmd=str(clone / "mlmd"))
        assert result.ok and result.moved == 0, result  # DVC's links are recognised, not hashed and replaced
    else:
        assert api.artifact_pull("conformance", mlmd=str(clone / "mlmd")).ok
        assert "Everything is up to date" in dvc("pull", cwd=clone)
    assert_placed(clone, "hardlink")
    quiet(clone)


def unmount(mount: Path) -> None:
    """Unmount ``mount`` once what the tests left open there has closed: the objects a workspace's git and store
    hold (GitPython's ``git cat-file`` processes, connections) go with the garbage collector, and a process that
    the tests' tools left behind may still be ending.  A mount still busy after 5 s is detached (``umount -l``)
    rather than left behind."""
    gc.collect()
    for _ in range(20):
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory):
    """A folder on a real copy-on-write file system: an XFS image with reflink, loop-mounted (needs root and
    xfsprogs; skipped otherwise), unmounted at the end."""
    base = tmp_path_factory.mktemp("xfs")
    image, mount = base / "xfs.img", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(400 << 20)
    made = subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], capture_output=True, text=True) \
        if shutil.which("mkfs.xfs") else None
    if made is None or made.returncode != 0:
        pytest.skip(f"no XFS image for reflink tests: {made.stderr.strip() if made else 'mkfs.xfs not installed'}")
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an XFS image here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        unmount(mount)


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def test_reflink_clones_take_no_space_and_stay_independent(xfs, monkeypatch):
    ws = xfs / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    api.init("local", {"path": str(xfs / "store")}, git_remote_url=str(xfs / "origin.git"), workspace=ws)
    dvc("config", "cache.type", "reflink", cwd=ws)
    big = os.urandom(64 << 20)
    (ws / "big.bin").write_bytes(big)
    os.sync()
    before = free_bytes(xfs)
    Dataset.write(ws, {}, ["big.bin"]).log()
    os.sync()
    assert before - free_bytes(xfs) < 8 << 20, "logging a 64 MB file took the space of a copy"
    object_file = cached(ws, big)
    assert object_file.read_bytes() == big and object_file.stat().st_ino != (ws / "big.bin").stat().st_ino
    assert stat.S_IMODE(object_file.stat().st_mode) == 0o444 and (ws / "big.bin").stat().st_mode & stat.S_IWUSR
    with open(ws / "big.bin", "r+b") as fh:  # a clone is the user's own file: editing it leaves the cache alone
        fh.write(b"edited")
    assert object_file.read_bytes() == big
    (ws / "big.bin").write_bytes(big)

    assert api.artifact_push("conformance").ok
    (ws / "big.bin").unlink()
    os.sync()
    before = free_bytes(xfs)
    pulled = api.artifact_pull("conformance")
    os.sync()
    assert pulled.ok and not pulled.notes and (ws / "big.bin").read_bytes() == big
    assert before - free_bytes(xfs) < 8 << 20, "pulling from the cache took the space of a copy"
    assert "up to date" in dvc("status", cwd=ws)


def test_reflink_refused_falls_back_to_copy_quietly_by_default(workspace, tmp_path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    try:
        links.reflink(str(probe), str(tmp_path / "clone-probe"))
        pytest.skip(f"{tmp_path} makes copy-on-write clones: no fallback to see here")
    except OSError:
        pass
    Dataset.write(workspace, FILES, ["data", "model.pkl"]).log()  # DVC's default cache.type: reflink,copy
    assert_placed(workspace, "copy")
    assert api.artifact_push("conformance").ok
    clone = clone_workspace(workspace, tmp_path / "clone")
    pulled = run_cmf(["artifact", "pull", "-p", "conformance"], cwd=clone)
    assert pulled.code == 0 and "cache.type" not in pulled.err, pulled.err  # the default is not the user's choice
    assert_placed(clone, "copy")
    quiet(clone)
    dvc("config", "--local", "cache.type", "reflink,copy", cwd=clone)  # chosen: a refusal is worth one note
    for rel in FILES:
        os.unlink(clone / rel)
    chosen = run_cmf(["artifact", "pull", "-p", "conformance"], cwd=clone)
    assert chosen.code == 0 and chosen.err.count("cache.type reflink is not possible here") == 1, chosen.err
    assert_placed(clone, "copy")


def test_refused_link_type_falls_back_with_one_note(logged_as, workspace, tmp_path):
    """A hardlink from a cache on another device is refused by the file system: copy, with one note."""
    other = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else None
    if other is None or os.stat(other).st_dev == os.stat(workspace).st_dev:
        pytest.skip("no second file system (/dev/shm) to put the cache on")
    try:
        dvc("config", "cache.dir", str(other / "cache"), cwd=workspace)
        logged_as("hardlink,copy")
        assert_placed(workspace, "copy", other / "cache")
        assert api.artifact_push("conformance").ok
        for rel in FILES:
            os.unlink(workspace / rel)
        pulled = run_cmf(["artifact", "pull", "-p", "conformance"], cwd=workspace)
        assert pulled.code == 0, pulled.err
        notes = [line for line in pulled.err.splitlines() if "cache.type" in line]
        assert notes == ["cmf: cache.type hardlink is not possible here (Invalid cross-device link): "
                         "using copy instead"], pulled.err
        assert_placed(workspace, "copy", other / "cache")
        quiet(workspace)

        dvc("config", "cache.type", "hardlink", cwd=workspace)  # nothing to fall back to: a clear error
        os.unlink(workspace / "model.pkl")
        failed = run_cmf(["artifact", "pull", "-p", "conformance"], cwd=workspace)
        assert failed.code != 0 and "cache.type hardlink is not possible between the DVC cache and" in failed.err
        assert "add copy to cache.type" in failed.err and "using" not in failed.err
    finally:
        shutil.rmtree(other)


def test_a_changed_file_replaces_its_link_and_never_writes_through_it(logged_as, workspace):
    logged_as("hardlink")
    model, old = workspace / "model.pkl", cached(workspace, FILES["model.pkl"])
    new_bytes = b"retrained" * 100
    replacement = workspace / "model.pkl.new"  # how tools save: a new file renamed over the old name
    replacement.write_bytes(new_bytes)
    os.replace(replacement, model)
    Dataset.write(workspace, {"model.pkl": new_bytes}, ["model.pkl"]).log()
    assert old.read_bytes() == FILES["model.pkl"], "the old version's cache file changed"
    new = cached(workspace, new_bytes)
    assert model.stat().st_ino == new.stat().st_ino and stat.S_IMODE(model.stat().st_mode) == 0o444

    # a pull of the old version over the read-only link to the new one replaces the link; both objects stay whole
    assert api.artifact_push("conformance").ok
    dvc("config", "cache.type", "copy", cwd=workspace)
    assert api.artifact_pull("conformance", artifact=f"model.pkl:{hashlib.md5(FILES['model.pkl']).hexdigest()}").ok
    assert model.read_bytes() == FILES["model.pkl"] and model.stat().st_ino != old.stat().st_ino
    assert old.read_bytes() == FILES["model.pkl"] and new.read_bytes() == new_bytes
    model.write_bytes(b"edited in place")  # the copy is the user's: editing it leaves the cache alone
    assert old.read_bytes() == FILES["model.pkl"]


def test_symlinks_into_an_outside_cache_can_be_logged_again(workspace, tmp_path):
    dvc("config", "cache.dir", str(tmp_path / "shared-cache"), cwd=workspace)
    dvc("config", "cache.type", "symlink", cwd=workspace)
    Dataset.write(workspace, FILES, ["data", "model.pkl"]).log()
    assert_placed(workspace, "symlink", tmp_path / "shared-cache")
    Dataset.write(workspace, {}, ["model.pkl"]).log()  # model.pkl leads out of the workspace, into the cache
    assert_placed(workspace, "symlink", tmp_path / "shared-cache")
    os.symlink(tmp_path / "elsewhere.txt", workspace / "escape.txt")
    (tmp_path / "elsewhere.txt").write_text("x")
    with pytest.raises(Exception, match="escape.txt: it is outside the workspace"):
        Dataset.write(workspace, {}, ["escape.txt"]).log()


def test_linker_drops_a_refused_type_once_for_all_threads(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    def refuse(source: str, target: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setitem(links.MAKERS, "reflink", refuse)
    monkeypatch.setitem(links.MAKERS, "hardlink", refuse)
    notes = []
    linker = links.Linker(api.config.CacheSettings(tmp_path, ("reflink", "hardlink", "copy"), True), notes.append)
    source = tmp_path / "object"
    source.write_bytes(b"bytes")
    with ThreadPoolExecutor(4) as pool:
        kinds = set(pool.map(lambda i: linker.place(source, tmp_path / f"file{i}"), range(20)))
    assert kinds == {"copy"} and (tmp_path / "file19").read_bytes() == b"bytes"
    assert notes == ["cache.type reflink is not possible here (Invalid cross-device link): using hardlink instead",
                     "cache.type hardlink is not possible here (Invalid cross-device link): using copy instead"]
    assert not list(tmp_path.glob(".*.cmf-tmp")), "a temp file of a refused link was left"
