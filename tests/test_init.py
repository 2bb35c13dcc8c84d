"""``cmf init <type>`` and ``cmf init show``: what is written, where secrets go, bad input."""
from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path

import pytest

from cmf_core import config
from cmf_core.errors import ConfigError
from cmflib.cmf import cmf_init, cmf_init_show
from tests.conftest import run_cmf, snapshot

GIT_TOKEN = "GitTok-77q"
NEO4J = ["--neo4j-user", "neo", "--neo4j-password", "Neo4jPass-5x", "--neo4j-uri", "bolt://127.0.0.1:7687"]
COMMON = ["--git-remote-url", f"https://user:{GIT_TOKEN}@git.example.org/team/repo.git", *NEO4J]


def init_args(repo_type: str, tmp_path: Path):
    """The options of each built-in type, and the distinctive secrets they carry."""
    token = tmp_path / "osdf.token"
    token.write_text("OsdfTok3n-abc\n")
    table = {
        "local": ([f"--path={tmp_path / 'store'}"], []),
        "minioS3": (["--url", "s3://bucket-1/team/prefix", "--endpoint-url", "https://127.0.0.1:9000",
                     "--access-key-id", "AKIDMINIO4q", "--secret-key", "MinioSecret-2c1"],
                    ["AKIDMINIO4q", "MinioSecret-2c1"]),
        "amazonS3": (["--url", "s3://bucket-2", "--access-key-id", "AKIDAMZ8w", "--secret-key", "AmzSecret-7h",
                      "--session-token", "AmzSession-3k", "--region", "eu-west-1"],
                     ["AKIDAMZ8w", "AmzSecret-7h", "AmzSession-3k"]),
        "sshremote": (["--path", "ssh://127.0.0.1:2222/srv/cmf", "--user", "alice", "--password", "SshPass-9z"],
                      ["SshPass-9z"]),
        "osdfremote": (["--path", "https://origin.example.org:8443/ns/dir", "--access-token", str(token)],
                       ["OsdfTok3n-abc"]),
    }
    args, secrets = table[repo_type]
    return [repo_type, *args, *COMMON], [*secrets, "Neo4jPass-5x", GIT_TOKEN]


def tracked_text(root: Path) -> str:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    return "".join((root / f).read_text(errors="replace") for f in files if f)


@pytest.mark.parametrize("repo_type", ["local", "minioS3", "amazonS3", "sshremote", "osdfremote"])
def test_init_keeps_secrets_out_of_git_and_masks_them(repo_type, ws, tmp_path, cmf):
    args, secrets = init_args(repo_type, tmp_path)
    result = cmf("init", *args)
    assert result.code == 0, result.err
    shown, shown_json = cmf("init", "show"), cmf("init", "show", "--json")
    assert shown.code == 0 and shown_json.code == 0

    tracked = tracked_text(ws)
    assert ".cmfconfig" in subprocess.run(["git", "ls-files"], cwd=ws, capture_output=True, text=True).stdout
    for secret in secrets:
        grep = subprocess.run(["git", "grep", "--cached", "-F", secret], cwd=ws, capture_output=True)
        assert grep.returncode == 1, f"{secret} is in a tracked file"
        assert secret not in tracked
        for output in (result, shown, shown_json):
            assert secret not in output.out + output.err
    assert config.MASK in shown.out
    data = json.loads(shown_json.out)
    assert data["repository_type"] == repo_type
    assert data["neo4j"]["password"] == config.MASK

    stored = config.load(ws)  # the secrets are kept where push/pull will find them
    assert stored.type == repo_type and stored.neo4j["password"] == "Neo4jPass-5x"
    kept = set(stored.remote.secrets.values())
    assert all(any(s in v for v in kept) for s in secrets[:-2])
    for private in (ws / ".cmfconfig.local", ws / ".dvc" / "config.local"):
        if private.exists():
            assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_init_local_sets_up_git_dvc_and_a_remote_plain_dvc_push_uses(ws, tmp_path, cmf):
    store = tmp_path / "store"
    assert cmf("init", "local", "--path", str(store), "--git-remote-url", "/srv/git/r.git").code == 0
    import git

    repo = git.Repo(ws)
    assert repo.remotes["cmf_origin"].url == "/srv/git/r.git"
    assert (ws / ".dvc").is_dir()
    assert config.load(ws).server_url == config.DEFAULT_SERVER_URL

    (ws / "data.csv").write_text("a,b\n1,2\n")
    subprocess.run(["dvc", "add", "data.csv"], cwd=ws, check=True, capture_output=True)
    subprocess.run(["dvc", "push"], cwd=ws, check=True, capture_output=True)
    import hashlib

    md5 = hashlib.md5(b"a,b\n1,2\n").hexdigest()
    assert (store / "files" / "md5" / md5[:2] / md5[2:]).read_text() == "a,b\n1,2\n"


def test_reinit_is_idempotent_and_keeps_unrelated_settings(ws, tmp_path, cmf):
    args = ["local", "--path", str(tmp_path / "store"), "--git-remote-url", "/srv/r.git",
            "--cmf-server-url", "http://10.0.0.1:8080"]
    assert cmf("init", *args).code == 0
    first = snapshot(ws)
    assert cmf("init", *args).code == 0
    assert snapshot(ws) == first

    with open(ws / ".cmfconfig", "a") as fh:
        fh.write("\n[team]\nowner = ml-platform\n")
    subprocess.run(["dvc", "remote", "add", "backup", "/mnt/backup"], cwd=ws, check=True, capture_output=True)
    assert cmf("init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "http://127.0.0.1:9000",
               "--git-remote-url", "/srv/r.git").code == 0
    stored = config.load(ws)
    assert stored.type == "minioS3" and stored.remote.name == "minio"
    assert stored.server_url == "http://10.0.0.1:8080"  # kept, not reset to the default
    assert "owner = ml-platform" in (ws / ".cmfconfig").read_text()
    dvc_config = (ws / ".dvc" / "config").read_text()
    assert "backup" in dvc_config and "local-storage" in dvc_config


BAD_INPUTS = [
    (["init", "nosuchtype", "--path", "x"], "unknown repository type 'nosuchtype'; available: amazonS3, local"),
    (["init", "local", "--git-remote-url", "u"], "missing option --path"),
    (["init", "local", "--path", "/tmp/x"], "missing option --git-remote-url"),
    (["init", "minioS3", "--url", "bucket/p", "--endpoint-url", "http://h:9000", "--git-remote-url", "u"],
     "--url must look like s3://bucket"),
    (["init", "minioS3", "--url", "s3://B_ad", "--endpoint-url", "http://h:9000", "--git-remote-url", "u"],
     "not a valid bucket name"),
    (["init", "amazonS3", "--url", "s3://bkt/daten/größe", "--git-remote-url", "u"],
     "prefix 'daten/größe' is not ASCII, which DVC's config cannot hold"),
    (["init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "h:9000", "--git-remote-url", "u"],
     "--endpoint-url must look like"),
    (["init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "http://h", "--access-key-id", "k",
      "--git-remote-url", "u"], "missing --secret-key"),
    (["init", "amazonS3", "--url", "s3://bkt", "--session-token", "t", "--git-remote-url", "u"],
     "--session-token needs"),
    (["init", "sshremote", "--path", "host:/srv/x", "--user", "u", "--git-remote-url", "u"],
     "--path must look like ssh://"),
    (["init", "sshremote", "--path", "ssh://host/srv", "--git-remote-url", "u"], "missing option --user"),
    (["init", "sshremote", "--path", "ssh://host:22/srv", "--port", "2222", "--user", "u", "--git-remote-url", "u"],
     "contradicts"),
    (["init", "sshremote", "--path", "ssh://host/srv", "--user", "u", "--key-file", "/nonexistent/key",
      "--git-remote-url", "u"], "--key-file '/nonexistent/key' is not a file"),
    (["init", "sshremote", "--path", "ssh://host/srv", "--user", "u", "--port", "x", "--git-remote-url", "u"],
     "'x' is not a valid integer"),
    (["init", "osdfremote", "--path", "ftp://origin/x", "--git-remote-url", "u"], "--path must look like"),
    (["init", "osdfremote", "--path", "https://origin/x", "--key-id", "k", "--git-remote-url", "u"],
     "missing --key-path, --key-issuer"),
    (["init", "osdfremote", "--path", "https://origin/x", "--access-token", "/nonexistent",
      "--git-remote-url", "u"], "is not a file"),
    (["init", "local", "--path", "/tmp/x", "--git-remote-url", "u", "--neo4j-user", "n"],
     "give all of --neo4j-user"),
    (["init", "local", "--path", "/tmp/x", "--git-remote-url", "u", "--cmf-server-url", "10.0.0.1:80"],
     "--cmf-server-url must be an http"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _) in
                                                          enumerate(BAD_INPUTS)])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, ws, tmp_path, cmf):
    fresh = cmf(*args)
    assert fresh.code == 2
    assert message in fresh.err and fresh.err.count("\n") == 1, fresh.err
    assert list(ws.iterdir()) == []  # not even a .git

    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "/srv/r.git").code == 0
    before = snapshot(ws)
    assert cmf(*args).code == 2
    assert snapshot(ws) == before


def test_bad_input_through_the_real_console_script(ws):
    result = run_cmf(["init", "minioS3", "--url", "bucket", "--endpoint-url", "http://h",
                      "--git-remote-url", "u"], cwd=ws)
    assert result.code == 2 and result.err.startswith("cmf: error: --url must look like s3://")
    assert list(ws.iterdir()) == []


def test_unreadable_key_file_is_refused(ws, tmp_path, cmf):
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    result = cmf("init", "osdfremote", "--path", "https://o/x", "--key-id", "k", "--key-path", str(key_dir),
                 "--key-issuer", "https://issuer", "--git-remote-url", "u")
    assert result.code == 2 and "is not a file" in result.err


def test_failure_while_writing_leaves_the_workspace_unchanged(ws, tmp_path, cmf, monkeypatch):
    from cmf_core import workspace

    def explode(*args):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(workspace, "_write_cmfconfig", explode)
        result = cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u")
    assert result.code == 1 and "workspace left unchanged" in result.err and "disk full" in result.err
    assert list(ws.iterdir()) == []

    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u").code == 0
    before = snapshot(ws)
    monkeypatch.setattr(workspace, "_write_cmfconfig", explode)
    assert cmf("init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "http://h:1",
               "--git-remote-url", "other").code == 1
    assert snapshot(ws) == before


def test_init_inside_an_existing_repository_does_not_nest_one(tmp_path, monkeypatch, cmf):
    import git

    outer = git.Repo.init(tmp_path / "project")
    sub = tmp_path / "project" / "ml"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "/srv/r.git").code == 0
    assert not (sub / ".git").exists() and (sub / ".dvc").is_dir()
    assert outer.remotes["cmf_origin"].url == "/srv/r.git"
    assert "ml/.cmfconfig" in outer.git.ls_files()


def test_half_written_config_is_reported_not_overwritten(ws, tmp_path, cmf):
    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u").code == 0
    (ws / ".cmfconfig").write_text("[cmf]\nrepository-type = local\nserver-url")  # cut off mid-line
    before = snapshot(ws)
    shown = cmf("init", "show")
    assert shown.code == 2 and "malformed .cmfconfig" in shown.err
    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u").code == 2
    assert snapshot(ws) == before

    (ws / ".cmfconfig").write_text("[cmf]\nrepository-type = local\n")
    (ws / ".dvc" / "config").write_text("[core\nremote = ")
    assert cmf("init", "show").code == 2


def test_show_outside_a_workspace_fails_clearly(ws, cmf):
    result = cmf("init", "show")
    assert result.code == 1 and "not a cmf workspace" in result.err and "cmf init" in result.err


def test_workspace_of_the_original_cmflib_is_recognised_and_migrated(ws, cmf):
    """The original stores the ssh password base64 in .dvc/config and the neo4j one in .cmfconfig."""
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=ws, check=True)
    legacy_ssh = base64.b64encode(b"OrigSshPass").decode()
    (ws / ".dvc" / "config").write_text(
        "[core]\n    remote = ssh-storage\n['remote \"ssh-storage\"']\n    url = ssh://10.0.0.5/home/u/store\n"
        f"    user = u\n    password = {legacy_ssh}\n    port = 22\n"
    )
    neo = base64.b64encode(b"OrigNeoPass").decode()
    (ws / ".cmfconfig").write_text(
        f"[cmf]\nserver-url = http://10.0.0.9:80\n\n[neo4j]\nuser = n\npassword = {neo}\nuri = bolt://h:7687\n"
    )
    shown = cmf("init", "show", "--json")
    data = json.loads(shown.out)
    assert data["repository_type"] == "sshremote" and data["remote"]["name"] == "ssh-storage"
    assert data["cmf_server_url"] == "http://10.0.0.9:80"
    assert any("git-tracked .dvc/config" in w for w in data["warnings"])
    assert legacy_ssh not in shown.out and neo not in shown.out
    assert config.load(ws).neo4j["password"] == "OrigNeoPass"

    assert cmf("init", "sshremote", "--path", "ssh://10.0.0.5/home/u/store", "--user", "u",
               "--password", "NewPass", "--git-remote-url", "u").code == 0
    assert legacy_ssh not in (ws / ".dvc" / "config").read_text()
    assert neo not in (ws / ".cmfconfig").read_text()
    stored = config.load(ws)
    assert stored.remote.secrets["password"] == "NewPass" and stored.neo4j["password"] == "OrigNeoPass"
    assert stored.warnings == [] and stored.server_url == "http://10.0.0.9:80"


def test_python_cmf_init_takes_the_original_parameters(ws, tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    result = cmf_init(type="osdfremote", osdf_path="https://origin.example.org/ns", osdf_cache="https://cache/ns",
                      key_id="k1", key_path=str(key), key_issuer="https://issuer.example.org",
                      git_remote_url="/srv/r.git", cmf_server_url="http://127.0.0.1:8080")
    assert result.type == "osdfremote" and result.remote.url == "https://origin.example.org/ns"
    shown = cmf_init_show()
    assert shown["remote"]["settings"]["key_id"] == "k1" and shown["cmf_server_url"] == "http://127.0.0.1:8080"

    result = cmf_init(type="sshremote", path="ssh://h/srv", user="u", port=2200, password="pw",
                      git_remote_url="/srv/r.git")
    assert result.remote.options["port"] == "2200"
    with pytest.raises(ConfigError, match="unknown repository type"):
        cmf_init(type="", git_remote_url="u")
    with pytest.raises(ConfigError, match="does not take --url"):
        cmf_init(type="local", path="/tmp/s", url="s3://x", git_remote_url="u")


def test_config_file_name_from_environment(ws, tmp_path, cmf, monkeypatch):
    monkeypatch.setenv("CONFIG_FILE", "team.cmfconfig")
    assert cmf("init", "local", "--path", str(tmp_path / "s"), "--git-remote-url", "u").code == 0
    assert (ws / "team.cmfconfig").exists() and not (ws / ".cmfconfig").exists()
    assert config.load(ws).type == "local"


def test_secret_file_tracked_by_git_is_refused(ws, tmp_path, cmf):
    assert cmf("init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "http://h:1", "--access-key-id", "a",
               "--secret-key", "b", "--git-remote-url", "u").code == 0
    subprocess.run(["git", "add", "-f", ".dvc/config.local"], cwd=ws, check=True)
    result = cmf("init", "minioS3", "--url", "s3://bkt", "--endpoint-url", "http://h:1", "--access-key-id", "a",
                 "--secret-key", "c", "--git-remote-url", "u")
    assert result.code == 1 and "tracked by git" in result.err
    assert config.load(ws).remote.secrets["secret_access_key"] == "b"  # rolled back
