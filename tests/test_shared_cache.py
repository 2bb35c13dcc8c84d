"""A DVC cache outside the workspace, shared by several workspaces and by several users of one group.

The multi-user tests run cmf as two real, unprivileged users (made with ``useradd``, in one group), since
root passes every permission check.  They need root and a system Python of the venv's version that those
users can run (the venv's own interpreter may live under ``/root``); without them they are skipped, saying why.
"""
from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

from cmf_core import api, layout
from cmf_core.testing import Dataset

from .conftest import CMF, clone_workspace, run_cmf

GROUP, USERS = "cmfshare", ("cmfshare1", "cmfshare2")
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
SITE = sysconfig.get_paths()["purelib"]
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
SAFE_GIT = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}  # others' repos
RUN = "import site, sys; site.addsitedir(sys.argv[1]); from cmf_core.cli import main; sys.exit(main(sys.argv[2:]))"
LOG = """import site, sys; site.addsitedir(sys.argv[1])
from cmflib.cmf import Cmf
cmf = Cmf(filepath="mlmd", pipeline_name="P")
cmf.create_context("prepare"); cmf.create_execution("Prepare")
for path in sys.argv[2:]:
    cmf.log_dataset(path, "output")
cmf.finalize()
"""


def dvc(*args: str, cwd: Path) -> None:
    subprocess.run(["dvc", *args], cwd=cwd, check=True, capture_output=True)


def _ensure_accounts() -> None:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", GROUP], capture_output=True)
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "-G", GROUP, user], capture_output=True)
        if GROUP not in [g.gr_name for g in grp.getgrall() if user in g.gr_mem]:
            subprocess.run(["usermod", "-aG", GROUP, user], check=True)


@pytest.fixture(scope="module")
def shared_root():
    """A folder other users can reach (pytest's tmp folders are root's alone), removed at the end."""
    if os.geteuid() != 0 or not os.path.exists(RUNUSER) or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root, runuser and a system Python to run cmf as other users")
    _ensure_accounts()
    root = Path(tempfile.mkdtemp(prefix="cmf-shared-", dir="/tmp"))
    os.chmod(root, 0o755)
    probe = subprocess.run([RUNUSER, "-u", USERS[0], "--", str(SYSTEM_PYTHON), "-c",
                            "import site, sys; site.addsitedir(sys.argv[1]); import cmf_core.links", SITE],
                           capture_output=True, text=True, cwd=root)
    if probe.returncode != 0:
        shutil.rmtree(root)
        pytest.skip(f"user {USERS[0]} cannot import cmf from {SITE}: {probe.stderr.strip()[-200:]}")
    yield root
    shutil.rmtree(root)


def as_user(user: str, code: str, args: List[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """Run Python ``code`` (with the venv's packages) as ``user`` in ``cwd``."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": user,
           "GIT_AUTHOR_EMAIL": f"{user}@x", "GIT_COMMITTER_NAME": user, "GIT_COMMITTER_EMAIL": f"{user}@x",
           **SAFE_GIT}
    return subprocess.run([RUNUSER, "-u", user, "--", str(SYSTEM_PYTHON), "-c", code, SITE, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def give(path: Path, user: str) -> None:
    info = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, info.pw_uid, info.pw_gid)


def workspace_for(user: str, root: Path, store: Path, files: Dict[str, bytes]) -> Path:
    """A workspace of ``user`` on the shared cache ``root/cache`` (cache.shared = group), with ``files`` written."""
    ws = root / f"ws-{user}"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    api.init("local", {"path": str(store)}, git_remote_url=str(root / "origin.git"), workspace=ws)
    dvc("config", "cache.dir", str(root / "cache"), cwd=ws)
    dvc("config", "cache.shared", "group", cwd=ws)
    dvc("config", "cache.type", "hardlink,symlink", cwd=ws)
    Dataset.write(ws, files, [])
    (root / f"home-{user}").mkdir(exist_ok=True)
    give(ws, user)
    give(root / f"home-{user}", user)
    return ws


def test_two_users_of_one_group_share_a_cache(shared_root):
    root, gid = shared_root, grp.getgrnam(GROUP).gr_gid
    for folder in ("cache", "store", "store2"):
        (root / folder).mkdir()
        os.chown(root / folder, 0, gid)
        os.chmod(root / folder, 0o2775)  # what an admin does once: a group folder, new files keep the group
    first = {f"data/{i}.txt": os.urandom(100 + i) for i in range(30)}
    ws1 = workspace_for(USERS[0], root, root / "store", first)
    logged = as_user(USERS[0], LOG, ["data"], ws1, root / f"home-{USERS[0]}")
    assert logged.returncode == 0, logged.stderr
    pushed = as_user(USERS[0], RUN, ["artifact", "push", "-p", "P"], ws1, root / f"home-{USERS[0]}")
    assert pushed.returncode == 0, pushed.stderr

    # the cache as DVC leaves a shared one: group folders with the setgid bit, read-only objects
    for folder in [root / "cache" / "files", *(root / "cache" / "files" / "md5").iterdir()]:
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o2775 and info.st_gid == gid, (folder, oct(info.st_mode))
    for rel, data in first.items():
        md5 = hashlib.md5(data).hexdigest()
        obj = root / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        assert stat.S_IMODE(obj.stat().st_mode) == 0o444 and obj.stat().st_ino == (ws1 / rel).stat().st_ino

    # the second user pulls the first one's data through the same cache: no hardlinks to another user's
    # files (the kernel's protected_hardlinks), so symlinks, with one note; then logs a file of their own
    # (a store of its own: the local backend makes the folders of a remote as the user's umask says)
    ws2 = workspace_for(USERS[1], root, root / "store2", {"mine.txt": b"second user's file\n"})
    shutil.copy(ws1 / "mlmd", ws2 / "mlmd")
    give(ws2, USERS[1])
    home2 = root / f"home-{USERS[1]}"
    pulled = as_user(USERS[1], RUN, ["artifact", "pull", "-p", "P"], ws2, home2)
    assert pulled.returncode == 0, pulled.stderr
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1":
        assert pulled.stderr.count("cache.type hardlink is not possible here") == 1, pulled.stderr
    for rel, data in first.items():
        assert (ws2 / rel).read_bytes() == data
    logged2 = as_user(USERS[1], LOG, ["mine.txt"], ws2, home2)
    assert logged2.returncode == 0, logged2.stderr
    md5 = hashlib.md5(b"second user's file\n").hexdigest()
    mine = root / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    assert mine.read_bytes() == b"second user's file\n" and stat.S_IMODE(mine.stat().st_mode) == 0o444
    assert mine.parent.stat().st_gid == gid and stat.S_IMODE(mine.parent.stat().st_mode) == 0o2775
    pushed2 = as_user(USERS[1], RUN, ["artifact", "push", "-p", "P"], ws2, home2)  # reads the first user's objects
    assert pushed2.returncode == 0, pushed2.stderr
    assert len(list((root / "store2" / "files" / "md5").glob("*/*"))) >= len(first) + 2


def test_a_cache_you_cannot_write_is_refused_before_anything_is_written(shared_root):
    root = shared_root / "readonly"
    root.mkdir()
    (root / "cache").mkdir()  # root's, 0755: the user may read it, not write it
    (root / "store").mkdir()
    ws = workspace_for(USERS[0], root, root / "store", {"data/x.txt": b"x\n"})
    before = sorted(p.name for p in ws.iterdir())
    logged = as_user(USERS[0], LOG, ["data"], ws, root / f"home-{USERS[0]}")
    assert logged.returncode != 0
    assert f"the DVC cache {root / 'cache'} is not writable by you" in logged.stderr, logged.stderr
    assert "chgrp -R" in logged.stderr and "chmod -R g+w" in logged.stderr  # the fix, for a shared cache
    assert sorted(p.name for p in ws.iterdir()) == before and not (ws / "data.dvc").exists()
    assert list((root / "cache").iterdir()) == []

    # the cache's owner logs and pushes; the user's pull is refused before it writes anything
    owner = subprocess.run([sys.executable, "-c", LOG, SITE, "data"], cwd=ws, capture_output=True, text=True,
                           env={**os.environ, **SAFE_GIT})
    assert owner.returncode == 0, owner.stderr
    assert run_cmf(["artifact", "push", "-p", "P"], cwd=ws, env=SAFE_GIT).code == 0
    (ws / "data" / "x.txt").unlink()
    give(ws, USERS[0])
    cache_before = sorted(str(p) for p in (root / "cache").rglob("*"))
    pulled = as_user(USERS[0], RUN, ["artifact", "pull", "-p", "P"], ws, root / f"home-{USERS[0]}")
    assert pulled.returncode != 0 and "is not writable by you" in pulled.stderr, pulled.stderr
    assert sorted(str(p) for p in (root / "cache").rglob("*")) == cache_before and not (ws / "data" / "x.txt").exists()


def test_two_workspaces_pulling_into_one_cache_at_once(workspace, tmp_path):
    """Concurrent pulls from two workspaces into one shared cache: both complete, every object whole."""
    shared = tmp_path / "shared-cache"
    dvc("config", "cache.dir", str(shared), cwd=workspace)
    dvc("config", "cache.type", "symlink", cwd=workspace)
    files = {f"data/{i // 50}/{i}.bin": os.urandom(2000 + i) for i in range(400)}
    Dataset.write(workspace, files, ["data"]).log()
    assert api.artifact_push("conformance").ok
    clones = [clone_workspace(workspace, tmp_path / "a"), tmp_path / "b"]
    subprocess.run(["git", "clone", "-q", str(workspace), str(clones[1])], check=True)
    shutil.rmtree(shared)
    procs = [subprocess.Popen([CMF, "artifact", "pull", "-p", "conformance"],
                              cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for clone in clones]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for clone in clones:
        for rel, data in files.items():
            assert (clone / rel).read_bytes() == data and (clone / rel).is_symlink()
    objects = [p for p in (shared / "files" / "md5").glob("*/*")]
    for obj in objects:
        content = obj.read_bytes()
        digest = layout.manifest_md5(content) if obj.name.endswith(".dir") else hashlib.md5(content).hexdigest()
        assert obj.parent.name + obj.name == digest, f"{obj} is corrupt"
    assert not [p for p in shared.rglob("*") if p.name.endswith((".cmf-tmp", ".cmf-partial"))]
