"""The example third-party backend, installed as its own distribution, works with no change to the core."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cmf_core import config, plugins
from cmf_core.testing import BackendConformance
from tests.conftest import run_cmf

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cmf-backend-flatdir"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example into a private target directory (not into the test environment itself)."""
    target = tmp_path_factory.mktemp("flatdir-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return target


def test_listed_only_once_installed(installed, ws):
    before = json.loads(run_cmf(["backends", "--json"], cwd=ws).out)
    assert "flatdir" not in [r["type"] for r in before]
    after = run_cmf(["backends", "--json"], cwd=ws, env={"PYTHONPATH": str(installed)})
    rows = {r["type"]: r for r in json.loads(after.out)}
    assert rows["flatdir"]["distribution"] == "cmf-backend-flatdir" and rows["flatdir"]["version"] == "0.1.0"
    assert rows["flatdir"]["status"] == "ok" and len(rows) == 6


def test_init_help_and_init_come_from_the_plugin(installed, ws, tmp_path):
    env = {"PYTHONPATH": str(installed)}
    helped = run_cmf(["init", "flatdir", "--help"], cwd=ws, env=env)
    assert helped.code == 0 and "--root DIR" in helped.out and "one flat folder" in helped.out

    done = run_cmf(["init", "flatdir", "--root", str(tmp_path / "flat"), "--git-remote-url", "u"], cwd=ws, env=env)
    assert done.code == 0, done.err
    shown = json.loads(run_cmf(["init", "show", "--json"], cwd=ws, env=env).out)
    assert shown["repository_type"] == "flatdir" and shown["remote"]["stored_in"] == ".cmfconfig"
    assert "remote" not in (ws / ".dvc" / "config").read_text()  # DVC cannot read its layout: no DVC remote

    missing = run_cmf(["init", "flatdir", "--git-remote-url", "u"], cwd=ws, env=env)
    assert missing.code == 2 and "missing option --root" in missing.err


def test_stored_remote_opens_through_the_plugin(installed, ws, tmp_path, monkeypatch, cmf):
    monkeypatch.syspath_prepend(str(installed))
    assert cmf("init", "flatdir", "--root", str(tmp_path / "flat"), "--git-remote-url", "u").code == 0
    store = plugins.open_store(config.load(ws).remote)
    src = tmp_path / "obj"
    src.write_bytes(b"payload")
    key = "files/md5/32/1c3cf486ed509164edec1e1981fec8"
    assert store.exists([key]) == set()
    store.put(src, key)
    out = io.BytesIO()
    store.get(key, out)
    assert out.getvalue() == b"payload" and store.exists([key, "files/md5/00/00"]) == {key}
    assert (tmp_path / "flat" / "321c3cf486ed509164edec1e1981fec8").exists()
    store.close()


class TestFlatDirConformance(BackendConformance):
    """The third-party example passes the same conformance kit as the built-in backends."""

    large_file_mb = 16

    @pytest.fixture
    def backend(self, installed, tmp_path, monkeypatch):
        monkeypatch.syspath_prepend(str(installed))  # its entry point is found in-process
        return "flatdir", {"root": str(tmp_path / "flat")}
