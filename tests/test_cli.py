"""The ``cmf`` command itself: help, version, exit codes, and the README/CI contract."""
from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import run_cmf

ROOT = Path(__file__).resolve().parents[1]


def test_help_and_version_exit_0(ws):
    helped = run_cmf(["--help"], cwd=ws)
    assert helped.code == 0 and "init" in helped.out and "backends" in helped.out
    version = run_cmf(["--version"], cwd=ws)
    assert version.code == 0 and "0.1.0" in version.out


def test_unknown_command_exits_2_with_one_line(ws):
    result = run_cmf(["frobnicate"], cwd=ws)
    assert result.code == 2 and result.err.count("\n") == 1 and "frobnicate" in result.err


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(bash scripts/\S+)", readme, flags=re.M)
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
