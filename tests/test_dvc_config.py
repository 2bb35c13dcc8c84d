"""The light DVC config reader (:func:`cmf_core.config.read_dvc_file`) reads what DVC's own ``Config.load_one``
reads, on configs written by the ``dvc`` commands and by hand, and refuses a malformed file with one ConfigError."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from cmf_core import config
from cmf_core.errors import ConfigError


def dvc(cwd: Path, *commands: List[str]) -> None:
    """Run ``dvc`` commands (its real CLI, one process for all of them) in ``cwd``."""
    script = ("import json, sys\nfrom dvc.cli import main\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    if main(argv):\n        sys.exit(f'dvc {argv} failed')")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, done.stderr


def dvc_reads(root: Path, level: str) -> dict:
    """What DVC's ``Config.load_one`` reads at ``level``, without the sections it adds empty."""
    from dvc.config import Config

    return nonempty(Config(dvc_dir=str(root / ".dvc"), validate=False).load_one(level))


def nonempty(conf: dict) -> dict:
    return {section: values for section, values in conf.items() if values}


def same_as_dvc(root: Path) -> None:
    ours = config.read_dvc_levels(root)
    for level in ("repo", "local"):
        assert nonempty(ours[level]) == dvc_reads(root, level), level


def test_configs_written_by_the_dvc_commands_read_as_dvc_reads_them(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    dvc(ws, ["init", "--no-scm", "-q"],
        ["remote", "add", "-d", "my store", "../store"],
        ["remote", "add", "s3r", "s3://bucket/path"],
        ["remote", "modify", "s3r", "endpointurl", "http://127.0.0.1:9000"],
        ["remote", "modify", "--local", "s3r", "secret_access_key", "a b,c"],
        ["remote", "add", "sshr", "ssh://user@host:22/data"],
        ["remote", "modify", "sshr", "keyfile", "~/.ssh/id_ed25519"],
        ["remote", "modify", "--local", "sshr", "password", "p=w#1"],
        ["remote", "add", "relative", "sub/dir"],
        ["config", "cache.dir", "../cache"],
        ["config", "cache.type", "hardlink,symlink"],
        ["config", "cache.shared", "group"],
        ["config", "--local", "core.autostage", "true"])
    same_as_dvc(ws)
    repo, local = config.read_dvc_levels(ws)["repo"], config.read_dvc_levels(ws)["local"]
    assert repo["core"]["remote"] == "my store"
    assert repo["remote"]["my store"]["url"] == str(tmp_path / "store")
    assert repo["remote"]["sshr"]["keyfile"] == str(Path.home() / ".ssh" / "id_ed25519")
    assert repo["cache"] == {"dir": str(tmp_path / "cache"), "type": "hardlink,symlink", "shared": "group"}
    assert local["remote"] == {"s3r": {"secret_access_key": "a b,c"}, "sshr": {"password": "p=w#1"}}


HAND_WRITTEN = """\
# written by hand
[Core]
    Remote = Upper Case
[cache]
    type = reflink, copy
    dir = /abs/cache
['remote "Upper Case"']
    url = ../store
    ssl_verify = false
[ 'remote "spaced"' ]
    url = https://user:token@example.org/path  # a comment
[feature]
    plots = true
"""


def test_a_hand_written_config_reads_as_dvc_reads_it(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(HAND_WRITTEN)
    same_as_dvc(tmp_path)
    repo = config.read_dvc_levels(tmp_path)["repo"]
    assert repo["core"] == {"remote": "Upper Case"} and repo["cache"]["type"] == ["reflink", "copy"]
    assert repo["remote"]["upper case"]["url"] == str(tmp_path / "store")


def test_missing_files_read_as_empty_sections(tmp_path):
    empty = {"core": {}, "cache": {}, "remote": {}, "machine": {}, "db": {}}
    assert config.read_dvc_levels(tmp_path) == {"repo": empty, "local": empty}
    (tmp_path / ".dvc").mkdir()
    same_as_dvc(tmp_path)


@pytest.mark.parametrize("content", [b"[core\nremote = ", b"\xff\xfe\x00", b"['remote \"a\"'\n",
                                     b"[core]\nremote = a\n[core]\nremote = b\n", b"[core]\nremote = \"a\n"])
def test_a_malformed_file_is_one_config_error_naming_it_where_dvc_refuses_it_too(tmp_path, content):
    from dvc.config import ConfigError as DvcConfigError

    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config.local").write_bytes(content)
    with pytest.raises(ConfigError, match=r"malformed DVC config .*config\.local: "):
        config.read_dvc_levels(tmp_path)
    with pytest.raises(DvcConfigError):
        dvc_reads(tmp_path, "local")


def test_an_option_outside_any_section_is_refused(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("remote = a\n")
    with pytest.raises(ConfigError, match="'remote' is outside any section"):
        config.read_dvc_levels(tmp_path)
