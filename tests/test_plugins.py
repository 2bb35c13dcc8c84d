"""Discovery, selection and isolation of backend plugins (``cmf backends``, broken plugins, strict mode)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cmf_core import plugins
from cmf_core.errors import PluginError

BUILTIN = ["amazonS3", "local", "minioS3", "osdfremote", "sshremote"]

GOOD_SPEC = """
from cmf_core.hookspecs import BackendSpec, hookimpl

@hookimpl
def cmf_backend_spec(repo_type):
    return BackendSpec("{type}", "test backend", requires={requires!r}) if repo_type == "{type}" else None
"""


def fake_distribution(site: Path, dist: str, repo_type: str, module_source: str) -> None:
    """Install a one-module distribution with a cmf.backends entry point into ``site``."""
    module = f"{dist.replace('-', '_')}_mod"
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{dist}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[cmf.backends]\n{repo_type} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_builtin_backends_are_listed_with_distribution_and_version(cmf):
    result = cmf("backends", "--json")
    rows = {r["type"]: r for r in json.loads(result.out)}
    assert result.code == 0 and sorted(rows) == BUILTIN
    for row in rows.values():
        assert row["distribution"] == "cmf-ml" and row["version"] == "0.1.0" and row["status"] == "ok"
        assert row["module"].startswith("cmf_backends.")
    table = cmf("backends").out.splitlines()
    assert table[0].split() == ["TYPE", "DISTRIBUTION", "VERSION", "STATUS"] and len(table) == 6


def test_broken_plugin_is_reported_and_breaks_nothing_else(site, ws, tmp_path, cmf):
    fake_distribution(site, "cmf-broken", "broken", "raise RuntimeError('boom at import')\n")
    listed = {r["type"]: r for r in json.loads(cmf("backends", "--json").out)}
    assert "failed to import: RuntimeError: boom at import" in listed["broken"]["status"]
    assert listed["local"]["status"] == "ok"

    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u").code == 0
    assert "(broken)" in cmf("init", "--help").out
    used = cmf("init", "broken")
    assert used.code == 1 and "boom at import" in used.err

    assert cmf("backends", "--strict").code == 1
    with pytest.warns(RuntimeWarning, match="boom at import"):
        plugins.load_all()
    with pytest.raises(PluginError, match="boom at import"):
        plugins.load_all(strict=True)


def test_strict_mode_from_the_environment(site, monkeypatch):
    fake_distribution(site, "cmf-broken", "broken", "import no_such_module_for_cmf\n")
    monkeypatch.setenv("CMF_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="ModuleNotFoundError"):
        plugins.load_all()


def test_push_and_pull_load_only_the_configured_backend(site):
    fake_distribution(site, "cmf-broken", "broken", "raise RuntimeError('must not be imported')\n")
    pm, spec = plugins.load_backend("local")
    assert spec.type == "local" and [name for name, _ in pm.list_name_plugin()] == ["local"]


def test_missing_dependency_is_reported_with_install_hint(site, cmf):
    fake_distribution(site, "cmf-needy", "needy", GOOD_SPEC.format(type="needy", requires=("no_such_sdk_xyz",)))
    listed = {r["type"]: r for r in json.loads(cmf("backends", "--json").out)}
    assert listed["needy"]["status"] == "missing dependency: no_such_sdk_xyz"
    assert listed["needy"]["distribution"] == "cmf-needy" and listed["needy"]["version"] == "0.3"


def test_plugin_with_a_misspelled_hook_is_refused(site, cmf):
    fake_distribution(site, "cmf-typo", "typo", """
        from cmf_core.hookspecs import hookimpl

        @hookimpl
        def cmf_backend_spek(repo_type):
            return None
    """)
    listed = {r["type"]: r for r in json.loads(cmf("backends", "--json").out)}
    assert "not a valid plugin" in listed["typo"]["status"] and "cmf_backend_spek" in listed["typo"]["status"]


def test_plugin_that_does_not_answer_for_its_type_is_reported(site):
    fake_distribution(site, "cmf-mute", "mute", GOOD_SPEC.format(type="other", requires=()))
    with pytest.raises(PluginError, match="does not describe repository type 'mute'"):
        plugins.load_backend("mute")
