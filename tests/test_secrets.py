"""Secrets never leave the two git-ignored files that hold them.

For every ``cmf init`` type, a workspace is set up with distinctive secret values
(backend keys, passwords and tokens, the neo4j password, a token in the git remote
URL, the metadata-server token), a pipeline is logged and committed, pushes are made
to fail against real servers that refuse the credentials, and then every place a
secret could escape to is scanned: each git-tracked file, the whole git history, the
mlmd file and its export, ``cmf init show`` (text and JSON), the stdout/stderr of
every command, and every Python log record at DEBUG level.  A secret must appear in
none of them, neither as it is nor base64-encoded (the original cmflib's "hiding").
Requests that succeed carry credentials too: for the S3 backends a working push and
pull are scanned the same way.
"""
from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from cmf_backends.amazon_s3 import CREDENTIAL_LOGGERS
from cmf_core import config
from cmf_core.testing import BackendConformance, Dataset
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.origin import PelicanStandIn
from cmf_core.testing.servers import free_port
from cmf_core.testing.sshd import SSHServer
from tests.conftest import Result

TYPES = ["local", "minioS3", "amazonS3", "sshremote", "osdfremote"]
ACCEPTED_SERVER_TOKEN = "accepted-server-token-0c1d"  # the metadata server's; not a workspace secret
HAS_SSHD = os.geteuid() == 0 and os.path.exists("/usr/sbin/sshd") and shutil.which("ssh-keygen") is not None


def secret(repo_type: str, what: str) -> str:
    """A value that cannot turn up by accident: ``S3CR3T-<type>-<what>-7f3a``."""
    return f"S3CR3T-{repo_type}-{what}-7f3a"


def encodings(value: str) -> Dict[str, str]:
    """``value`` as it is, and the part of its base64 (standard and URL-safe) that shows whatever bytes
    surround it: one form per alignment of the value within the encoded bytes."""
    forms = {"plain": value}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value.encode()).decode()
        # drop the characters that also encode bits of the bytes before (ceil(4*offset/3)) and after (<= 3)
        stable = encoded[(offset * 4 + 2) // 3:-3]
        forms[f"base64@{offset}"] = stable
        forms[f"base64url@{offset}"] = stable.replace("+", "-").replace("/", "_")
    return forms


def leaks(places: Dict[str, str], secrets: List[str]) -> List[Tuple[str, str, str]]:
    """(place, secret, form) for every secret found in a place, in any of its :func:`encodings`."""
    return [(place, value, form) for place, text in places.items() for value in secrets
            for form, needle in encodings(value).items() if needle in text]


def test_the_scan_finds_a_secret_plain_or_base64_encoded_anywhere():
    """The leak scan itself: a scan that cannot see base64 would make the real tests pass vacuously."""
    value = secret("any", "password")
    for prefix in (b"", b"x", b"xy", b"user:"):
        encoded = base64.b64encode(prefix + value.encode() + b"@host").decode()
        assert leaks({"b64": f"password = {encoded}\n"}, [value]), prefix
        assert leaks({"b64url": base64.urlsafe_b64encode(prefix + value.encode()).decode()}, [value]), prefix
    assert leaks({"plain": f"url = https://u:{value}@h/x"}, [value])
    assert not leaks({"masked": "password = ********", "other": secret("any", "other")}, [value])


@pytest.fixture(autouse=True)
def _fresh_log_levels() -> Iterator[None]:
    """Every test sees the loggers as a new process does: opening an amazonS3 store raises some of them to INFO."""
    saved = {name: logging.getLogger(name).level for name in CREDENTIAL_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


# -- the servers that refuse the credentials ----------------------------------------------------------------


@pytest.fixture(scope="module")
def metadata_server(tmp_path_factory) -> Iterator[MetadataServer]:
    """A metadata server with auth on: it accepts only ACCEPTED_SERVER_TOKEN."""
    with MetadataServer(tmp_path_factory.mktemp("metadata-server"), tokens=[ACCEPTED_SERVER_TOKEN]) as server:
        yield server


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with SSHServer() as server:
        yield server


@pytest.fixture(scope="module")
def osdf_origin(tmp_path_factory) -> Iterator[PelicanStandIn]:
    """A token-checking origin front; it accepts another token, so ours is refused before anything is stored."""
    home = tmp_path_factory.mktemp("osdf-origin")
    accepted = home / "accepted-tokens"
    accepted.write_text("some-other-token\n")
    with PelicanStandIn("origin", home, upstream=f"http://127.0.0.1:{free_port()}", tokens=accepted) as server:
        yield server


def backend_options(repo_type: str, request, tmp_path: Path) -> Tuple[Dict[str, str], List[str]]:
    """The ``cmf init <type>`` options against a real server that will refuse them, and the secrets they hold.

    Servers are started only for the type that needs them.
    """
    if repo_type == "local":
        return {"path": str(tmp_path / "store")}, []
    if repo_type in ("minioS3", "amazonS3"):
        s3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        keys = {"access_key_id": secret(repo_type, "keyid"), "secret_key": secret(repo_type, "secretkey")}
        if repo_type == "amazonS3":
            keys.update(session_token=secret(repo_type, "session"), region="us-east-1")
        return {"url": f"s3://{bucket}/prefix", "endpoint_url": s3.endpoint, **keys}, \
            [v for k, v in keys.items() if k != "region"]
    if repo_type == "sshremote":
        if not HAS_SSHD:
            pytest.skip("needs root and openssh-server to run a test sshd")
        sshd = request.getfixturevalue("sshd")
        known_hosts = sshd.trust(tmp_path / "known_hosts")
        password = secret(repo_type, "password")
        return {"path": f"ssh://127.0.0.1:{sshd.port}{sshd.remote_dir()}", "user": sshd.user, "password": password,
                "known_hosts": str(known_hosts)}, [password]
    origin = request.getfixturevalue("osdf_origin")
    token = secret(repo_type, "token")
    token_file = tmp_path / "osdf.token"
    token_file.write_text(token + "\n")
    return {"path": f"{origin.url}/ns/{tmp_path.name}", "access_token": str(token_file)}, [token]


# -- the workspace and what is scanned ----------------------------------------------------------------------

#: what the failing artifact push says, by type (a local push works: its failing step is the git push)
REFUSALS = {"local": None, "minioS3": "refused the credentials", "amazonS3": "refused the credentials",
            "sshremote": "authentication as", "osdfremote": "token refused"}


def flags(options: Dict[str, str]) -> List[str]:
    return [arg for name, value in options.items() for arg in (f"--{name.replace('_', '-')}", value)]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def set_server_token(root: Path, token: str) -> None:
    """Where the README says a client keeps its metadata-server token: ``[cmf] server-token`` of .cmfconfig.local."""
    private = config.read_ini(config.secrets_file(root))
    private["cmf"] = {"server-token": token}
    config.write_private(config.secrets_file(root), config.ini_text(private))


def log_pipeline(root: Path) -> Dataset:
    """Pipeline "p": a file and a folder, logged (and committed by cmf)."""
    ds = Dataset.write(root, {"data/a.csv": b"a,b\n1,2\n", "data/dir/x.bin": b"\0" * 100}, ["data/a.csv", "data/dir"])
    BackendConformance.log(*ds.artifacts, pipeline="p")
    return ds


def log_records(records: List[logging.LogRecord]) -> Dict[str, str]:
    """The messages of the captured log records, by logger."""
    places: Dict[str, str] = {}
    for record in records:
        place = f"DEBUG log records of {record.name}"
        places[place] = places.get(place, "") + record.getMessage() + (record.exc_text or "") + "\n"
    return places


def places_to_scan(root: Path, export: Path, outputs: Dict[str, Result],
                   records: List[logging.LogRecord]) -> Dict[str, str]:
    """Everything that is shared (git, the mlmd file and its export) or shown (output, logs), by name."""
    names = [n for n in git(root, "ls-files", "-z").split("\0") if n]
    places = {f"tracked file {n}": (root / n).read_bytes().decode("utf-8", "replace") for n in names}
    places["git history (git log -p --all)"] = git(root, "log", "-p", "--all")
    places["mlmd file"] = (root / "mlmd").read_bytes().decode("utf-8", "replace")
    places["metadata export"] = export.read_text()
    for command, result in outputs.items():
        places[f"{command}: stdout"], places[f"{command}: stderr"] = result.out, result.err
    return {**places, **log_records(records)}


@pytest.mark.parametrize("repo_type", TYPES)
def test_no_secret_leaves_the_git_ignored_files(repo_type, ws, tmp_path, request, cmf, caplog, monkeypatch,
                                                 metadata_server):
    """Set up with secrets, log, commit, fail to push, show: then no shared or shown place holds a secret."""
    caplog.set_level(logging.DEBUG)  # every logger, third-party libraries included
    options, backend_secrets = backend_options(repo_type, request, tmp_path)
    git_token, neo4j_password, server_token = (secret(repo_type, what) for what in ("git", "neo4j", "servertoken"))
    secrets = [*backend_secrets, git_token, neo4j_password, server_token]

    outputs = {"cmf init": cmf("init", repo_type, *flags(options),
                               "--git-remote-url", f"https://alice:{git_token}@127.0.0.1:9/team/repo.git",
                               "--cmf-server-url", metadata_server.url, "--neo4j-user", "neo",
                               "--neo4j-password", neo4j_password, "--neo4j-uri", "bolt://127.0.0.1:7687")}
    assert outputs["cmf init"].code == 0, outputs["cmf init"].err
    set_server_token(ws, server_token)
    log_pipeline(ws)
    git(ws, "add", "-A")  # and what a user commits: everything git does not ignore
    git(ws, "commit", "-q", "-m", "everything")

    refusal = REFUSALS[repo_type]
    outputs["cmf artifact push"] = pushed = cmf("artifact", "push", "-p", "p")
    if refusal is None:
        assert pushed.code == 0, pushed.err
    else:
        assert pushed.code == 1 and refusal in pushed.err, pushed.err
    outputs["cmf metadata push"] = refused = cmf("metadata", "push", "-p", "p")
    assert refused.code == 1 and "refused the token" in refused.err
    with monkeypatch.context() as env:  # a token the server takes: the repo push gets as far as it can
        env.setenv("CMF_SERVER_TOKEN", ACCEPTED_SERVER_TOKEN)
        outputs["cmf repo push"] = repo = cmf("repo", "push", "-p", "p")
    assert repo.code == 1 and ("git push failed" if refusal is None else "artifact push") in repo.err
    outputs["cmf init show"] = cmf("init", "show")
    outputs["cmf init show --json"] = cmf("init", "show", "--json")
    outputs["cmf metadata export"] = cmf("metadata", "export", "-p", "p", "-j", str(tmp_path / "export.json"))

    places = places_to_scan(ws, tmp_path / "export.json", outputs, caplog.records)
    assert leaks(places, secrets) == []
    # the secrets were really stored (where push and pull read them), so the scan had something to find
    private = [ws / ".dvc" / "config.local", config.secrets_file(ws)]
    kept = "".join(path.read_text() for path in private if path.exists())
    assert all(value in kept for value in secrets if value != git_token)
    print(f"{repo_type}: {len(places)} places x {len(secrets)} secrets x {len(encodings(git_token))} forms, no leak")


@pytest.mark.parametrize("repo_type", ["minioS3", "amazonS3"])
def test_a_working_s3_push_and_pull_log_no_credentials(repo_type, ws, tmp_path, cmf, caplog, s3_server, s3_bucket,
                                                       monkeypatch):
    """The requests that succeed carry the credentials too (signed headers, presigned URLs): at DEBUG level,
    whatever the SDKs and urllib3 log of them must not show the keys or the session token."""
    for name in ("urllib3.connectionpool", "botocore.endpoint", "botocore.auth"):  # as in a fresh process,
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)     # whatever ran before
    caplog.set_level(logging.DEBUG)
    keys = {"access_key_id": s3_server.ACCESS_KEY, "secret_key": s3_server.SECRET_KEY}
    if repo_type == "amazonS3":
        keys.update(session_token=secret(repo_type, "session"), region="us-east-1")
    options = {"url": f"s3://{s3_bucket}/prefix", "endpoint_url": s3_server.endpoint, **keys}
    outputs = {"cmf init": cmf("init", repo_type, *flags(options), "--git-remote-url", str(tmp_path / "origin.git"))}
    ds = log_pipeline(ws)
    outputs["cmf artifact push"] = cmf("artifact", "push", "-p", "p")
    ds.forget()
    outputs["cmf artifact pull"] = cmf("artifact", "pull", "-p", "p")
    assert [result.code for result in outputs.values()] == [0, 0, 0], outputs
    ds.assert_in_place()

    places = {f"{command}: {stream}": getattr(result, stream) for command, result in outputs.items()
              for stream in ("out", "err")}
    places.update(log_records(caplog.records))
    secrets = [value for name, value in keys.items() if name != "region"]
    assert leaks(places, secrets) == []
    print(f"{repo_type} working: {len(places)} places x {len(secrets)} secrets, no leak")
