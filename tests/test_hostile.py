"""Hostile input: everything cmf reads that someone else may have written is refused cleanly.

What a user relies on, for each kind of input: the command exits non-zero with one
``cmf: error:`` line that names the problem, nothing is written outside the
workspace, and nothing is left half-written (the file that was read, the mlmd store,
the workspace stay as they were).  The inputs:

* ``.dir`` manifests on a remote (traversal, absolute paths, symlinks out of the
  target, duplicates in disguise, non-JSON, deep nesting, huge manifests), and a
  property test of :func:`cmf_core.layout.parse_manifest` on arbitrary bytes;
* object keys and artifact names with odd characters: legal ones round-trip, hostile
  ones (from a shared server) are refused;
* malformed ``.cmfconfig``, ``.cmfconfig.local``, ``.dvc/config``, ``.dvc/config.local``;
* truncated or corrupt mlmd files, and malformed ``dvc.lock`` files for ``cmf dvc ingest``;
* malformed pipeline exports: a property test of the JSON import (the server's merge
  of a push, the client's merge of a pull), and payloads sent to a real ``cmf server``.

Related tests elsewhere: ``test_transfer.py`` (artifact paths through a symlink),
``test_server.py`` (upload names, body size, the first malformed payloads),
``test_init.py`` (bad ``cmf init`` options, a half-written ``.cmfconfig``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmf_core import api, config, layout, plugins, transfer
from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmf_core.metadata.merge import MergeError, merge_pipeline
from cmf_core.server.client import pull_metadata
from cmf_core.server.store import ServerStore
from cmf_core.testing import BackendConformance, Dataset
from cmf_core.testing.metadata_server import MetadataServer
from cmflib.cmf import Cmf
from tests.conftest import snapshot, write

#: Property tests: few examples, no deadline (CI machines are slow), the same examples on every run.
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
MD5 = hashlib.md5(b"x").hexdigest()
KEY = re.compile(r"^files/md5/[0-9a-f]{2}/[0-9a-f]{30}(\.dir)?$")


def error_lines(err: str) -> Dict[str, str]:
    """``cmf: error: <artifact>: <reason>`` lines of a transfer, as {artifact path: reason}."""
    found = {}
    for line in err.splitlines():
        assert line.startswith("cmf: error: "), f"not a one-line error: {line!r}"
        what, _, reason = line[len("cmf: error: "):].partition(": ")
        found[what.rsplit(":", 1)[0]] = reason
    return found


# -- .dir manifests on the remote ---------------------------------------------------------------------------


def rows(*relpaths: str) -> List[Dict[str, str]]:
    """Manifest rows with distinct md5s for ``relpaths``."""
    return [{"md5": hashlib.md5(p.encode("utf-8", "surrogatepass")).hexdigest(), "relpath": p} for p in relpaths]


#: name -> (manifest rows or raw bytes, what the error must say)
MANIFESTS: Dict[str, Any] = {
    "traversal": (rows("../../escaped.txt"), "escapes its directory"),
    "absolute": (rows("/tmp/cmf-absolute.txt"), "escapes its directory"),
    "dot-segment": (rows("a/./b"), "escapes its directory"),
    "empty-relpath": (rows(""), "bad relpath"),
    "nul": (rows("a\x00b"), "bad relpath"),
    "git-folder": (rows("sub/.git/hooks/post-checkout"), "is inside .dvc, .git, .hg"),
    "backslash": (rows("..\\..\\escaped.txt"), "bad relpath"),
    "lone-surrogate": (rows("a\ud800"), "cannot be a file name"),
    "relpath-not-a-string": ([{"md5": MD5, "relpath": ["a"]}], "bad relpath"),
    "duplicate": (rows("a.txt") + [{"md5": "1" * 32, "relpath": "a.txt"}], "appears twice"),
    "duplicate-in-disguise": (rows("a//b", "a/b"), "empty segment"),
    "trailing-slash": (rows("a/"), "empty segment"),
    "file-and-folder": (rows("a", "a/b"), "both a file and a directory"),
    "python-code": (b"__import__('os').system('touch /tmp/cmf-pwned')", "not JSON"),
    "not-utf8": (b"\xff\xfe[]", "not JSON"),
    "deeply-nested": (b"[" * 20_000 + b"]" * 20_000, "not JSON"),
    "not-a-list": (b'{"md5": "x", "relpath": "a"}', "not a JSON list"),
    "row-not-an-object": (b'["a.txt"]', "row is not an object"),
    "bad-md5": ([{"md5": "../../x", "relpath": "a"}], "bad md5"),
    "nested-dir-md5": ([{"md5": MD5 + ".dir", "relpath": "a"}], "bad md5"),
    "huge": (json.dumps(rows(*(f"f{i:06}" for i in range(4000)))).encode(), "larger than"),
}
HUGE = 64 << 10  # the manifest size limit during these tests (the real one is 256 MB)


def encoded(content: Any) -> bytes:
    return content if isinstance(content, bytes) else json.dumps(content).encode()


def plant(ws: Path, name: str, data: bytes, md5: str = "") -> str:
    """Put ``data`` on the workspace's remote as a ``.dir`` object (under its own md5 unless given) and record it
    as the artifact ``evil/<name>`` of pipeline "hostile", as a colleague's push would."""
    md5 = md5 or layout.manifest_md5(data)
    source = ws.parent / "planted"
    source.write_bytes(data)
    plugins.open_store(config.load(ws).remote).put(source, layout.key(md5))
    source.unlink()
    Cmf(filepath="mlmd", pipeline_name="hostile").log_dataset_with_version(f"evil/{name}", md5, "output")
    return md5


def test_hostile_manifests_are_refused_each_by_name_and_nothing_is_written(workspace, tmp_path, cmf, monkeypatch):
    monkeypatch.setattr(transfer, "MAX_MANIFEST", HUGE)
    sizes = {name: len(encoded(content)) for name, (content, _) in MANIFESTS.items()}
    assert sizes.pop("huge") > HUGE > max(sizes.values())
    for name, (content, _) in MANIFESTS.items():
        plant(workspace, name, encoded(content))
    expected = {name: reason for name, (_, reason) in MANIFESTS.items()}
    # a manifest whose bytes are not those its name (md5) promises: a corrupt or swapped object
    plant(workspace, "md5-mismatch", json.dumps(rows("a.txt")).encode(), md5=MD5 + ".dir")
    expected["md5-mismatch"] = "md5 mismatch"
    # a valid manifest whose member would be written through a symlink that leads out of the target
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "evil" / "symlink-out").mkdir(parents=True)
    (workspace / "evil" / "symlink-out" / "sub").symlink_to(outside, target_is_directory=True)
    valid = plant(workspace, "symlink-out", json.dumps(rows("sub/y.txt")).encode())
    expected["symlink-out"] = "through a symlink"
    before = snapshot(tmp_path)

    pulled = cmf("artifact", "pull", "-p", "hostile")
    assert pulled.code == 1
    reasons = error_lines(pulled.err)
    assert set(reasons) == {f"evil/{name}" for name in expected}
    for name, reason in expected.items():
        assert reason in reasons[f"evil/{name}"], (name, reasons[f"evil/{name}"])
    after = snapshot(tmp_path)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    # no member, no partial file, nothing outside the workspace: only the one valid manifest, md5-verified,
    # may be kept in the DVC cache
    assert changed <= {f"ws/.dvc/cache/{layout.key(valid)}"}
    assert not Path("/tmp/cmf-absolute.txt").exists() and not Path("/tmp/cmf-pwned").exists()


def test_a_symlink_in_the_workspace_is_replaced_never_written_through(workspace, tmp_path, cmf):
    """A file in place, or a leftover partial download, that is a symlink out of the workspace (a hostile git
    checkout can hold both): pull puts a regular file there and leaves the symlink's target alone."""
    ds = Dataset.write(workspace, {"data/a.csv": b"the real data\n", "data/b.csv": b"more data\n"},
                       ["data/a.csv", "data/b.csv"])
    BackendConformance.log(*ds.artifacts, pipeline="p")
    assert cmf("artifact", "push", "-p", "p").code == 0
    ds.forget()
    victims = {name: write(tmp_path / f"victim-{name}", f"{name} must not change\n") for name in ("a", "b")}
    (workspace / "data").mkdir(exist_ok=True)
    (workspace / "data" / "a.csv").symlink_to(victims["a"])
    (workspace / "data" / f".b.csv{transfer.PARTIAL}").symlink_to(victims["b"])

    assert cmf("artifact", "pull", "-p", "p").code == 0
    ds.assert_in_place()
    assert not (workspace / "data" / "a.csv").is_symlink()
    assert {name: path.read_text() for name, path in victims.items()} == \
        {name: f"{name} must not change\n" for name in victims}


RELPATH_PARTS = st.sampled_from(["a", "b.txt", "..", ".", "", " ", "~", "C:", "\\", "a\\b", "\x00", "\ud800",
                                 "\udc80", "é", "\n", "-", ":"])
RELPATHS = st.lists(RELPATH_PARTS, min_size=0, max_size=4).map("/".join) | st.text(max_size=8)
MD5S = st.sampled_from([MD5, "1" * 32, MD5 + ".dir", MD5.upper(), "", "x" * 32, 5])
ROWS = st.one_of(
    st.fixed_dictionaries({"md5": MD5S, "relpath": RELPATHS}),
    st.fixed_dictionaries({"md5": MD5S, "relpath": RELPATHS},
                          optional={"extra": st.integers(), "size": st.integers()}),
    st.integers(), st.text(max_size=3), st.none(),
)
MANIFEST_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(ROWS, max_size=6).map(lambda r: json.dumps(r).encode()),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
)


@FAST
@given(MANIFEST_BYTES)
def test_parse_manifest_refuses_or_returns_only_safe_unique_relpaths(data: bytes):
    """Whatever a remote serves: ManifestError, or entries each of which lands inside the directory, once."""
    try:
        entries = layout.parse_manifest(data)
    except layout.ManifestError:
        return
    relpaths = [e.relpath for e in entries]
    assert len(set(relpaths)) == len(relpaths)
    for entry in entries:
        assert layout.is_md5(entry.md5) and not layout.is_dir_md5(entry.md5)
        parts = entry.relpath.split("/")
        assert entry.relpath and not entry.relpath.startswith("/")
        assert not {"", ".", ".."} & set(parts) and "\\" not in entry.relpath and "\0" not in entry.relpath
        os.fsencode(entry.relpath)  # a name the OS takes
        assert os.path.normpath(os.path.join("/root", entry.relpath)).startswith("/root/")
        assert not any(other.startswith(entry.relpath + "/") for other in relpaths)  # never also a folder


@FAST
@given(st.text(max_size=40) | st.sampled_from([MD5, MD5 + ".dir", "../" + MD5, MD5 + "/../x", MD5[:31] + "/"]))
def test_object_keys_are_made_only_from_md5s(text: str):
    """A recorded md5 (an artifact's uri, a manifest member) becomes a remote key only if it is one: no key
    with odd characters, a slash or ``..`` can ever be asked of a backend."""
    try:
        made = layout.key(text)
    except CmfError:
        assert not layout.is_md5(text)
        return
    assert KEY.match(made) and text.startswith(made[10:12])


# -- artifact names -----------------------------------------------------------------------------------------

#: legal file names that must simply work: spaces, unicode, shell and URL metacharacters, a leading dash
ODD_NAMES = ["with space.csv", "ünïcødé-数据.csv", "hash#mark.csv", "per%20cent.csv", "what?.csv", "semi;colon.csv",
             "quote'single.csv", 'quote"double.csv', "dollar$HOME.csv", "star*.csv", "[brackets].csv", "-dash.csv",
             "colon:in:name.csv", "tab\there.csv", "a dir/with space/x.csv"]


def test_artifact_names_with_odd_characters_round_trip(workspace, tmp_path, cmf):
    files = {f"data/{name}": f"{i},{name}\n".encode() for i, name in enumerate(ODD_NAMES)}
    ds = Dataset.write(workspace, files, sorted(files))
    BackendConformance.log(*ds.artifacts, pipeline="odd")
    assert cmf("artifact", "push", "-p", "odd").code == 0
    ds.forget()
    pulled = cmf("artifact", "pull", "-p", "odd")
    assert pulled.code == 0, pulled.err
    ds.assert_in_place()
    stored = [p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert stored and all(KEY.match(key) for key in stored)  # names never reach the remote: keys are md5s


# -- stored config ------------------------------------------------------------------------------------------

#: (file, content, what the one error line says, exit status)
CONFIGS = [
    (".cmfconfig", b"\xff\xfe[cmf]\n", "malformed .cmfconfig", 2),
    (".cmfconfig", b"[cmf]\nremote = a\n[cmf]\nremote = b\n", "malformed .cmfconfig", 2),
    (".cmfconfig", b"repository-type = local\n", "malformed .cmfconfig", 2),
    (".cmfconfig", b"[cmf]\nrepository-type = nosuch\nremote = local-storage\n", "unknown repository type 'nosuch'", 2),
    (".cmfconfig", b"[cmf]\nrepository-type = local\nremote = gone\n", "DVC remote 'gone' is missing", 2),
    (".cmfconfig.local", b"[neo4j\npassword = x\n", "malformed .cmfconfig.local", 2),
    (".dvc/config", b"[core\nremote = ", "malformed DVC config", 2),
    (".dvc/config", b"\xff\xfe\x00", "malformed DVC config", 2),
    (".dvc/config", b"[core]\nremote = local-storage\n['remote \"local-storage\"']\nfoo = bar\n", "has no url", 2),
    (".dvc/config.local", b"['remote \"local-storage\"'\n", "malformed DVC config", 2),
]


@pytest.mark.parametrize("name, content, message, code", CONFIGS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIGS)])
def test_malformed_config_stops_a_push_with_one_line_and_changes_nothing(workspace, tmp_path, cmf,
                                                                         name, content, message, code):
    ds = Dataset.write(workspace, {"data/a.csv": b"a\n"}, ["data/a.csv"])
    BackendConformance.log(*ds.artifacts, pipeline="p")
    (workspace / name).write_bytes(content)
    before = snapshot(tmp_path)
    pushed = cmf("artifact", "push", "-p", "p")
    assert pushed.code == code and pushed.err.count("\n") == 1 and message in pushed.err, pushed.err
    assert snapshot(tmp_path) == before


def test_a_local_remote_that_became_a_file_is_reported(workspace, tmp_path, cmf):
    ds = Dataset.write(workspace, {"data/a.csv": b"a\n"}, ["data/a.csv"])
    BackendConformance.log(*ds.artifacts, pipeline="p")
    (tmp_path / "store").write_text("not a directory")  # cmf init recorded a directory here
    pushed = cmf("artifact", "push", "-p", "p")
    assert pushed.code == 2 and "is not a directory" in pushed.err and pushed.err.count("\n") == 1


# -- mlmd files ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_mlmd(tmp_path_factory) -> bytes:
    """The bytes of a small, valid mlmd file (pipeline "p"), made once."""
    path = tmp_path_factory.mktemp("mlmd") / "mlmd"
    merge_pipeline(records.open_store(path), export_payload())
    return path.read_bytes()


def plain_sqlite(folder: Path) -> bytes:
    with sqlite3.connect(folder / "plain.sqlite") as db:
        db.execute("CREATE TABLE t (x)")
    return (folder / "plain.sqlite").read_bytes()


CORRUPTIONS = {
    "truncated-half": lambda good, tmp: good[: len(good) // 2],
    "truncated-100-bytes": lambda good, tmp: good[:100],
    "header-only": lambda good, tmp: good[:16],
    "empty": lambda good, tmp: b"",
    "zeros": lambda good, tmp: bytes(len(good)),
    "garbage": lambda good, tmp: hashlib.sha512(b"garbage").digest() * 64,
    "json-not-sqlite": lambda good, tmp: b'{"Pipeline": []}',
    "sqlite-not-mlmd": lambda good, tmp: plain_sqlite(tmp),
}
READERS = [["artifact", "pull", "-p", "p"], ["pipeline", "list"], ["execution", "list", "-p", "p"],
           ["metadata", "export", "-p", "p", "-j", "export.json"]]


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_mlmd_file_is_refused_by_every_command_and_left_as_is(corruption, workspace, tmp_path, cmf,
                                                                         good_mlmd):
    damaged = CORRUPTIONS[corruption](good_mlmd, tmp_path)
    (workspace / "mlmd").write_bytes(damaged)
    before = snapshot(tmp_path)
    for command in READERS:
        result = cmf(*command, "-f", "mlmd")
        assert result.code == 1 and result.err.count("\n") == 1 and "mlmd" in result.err, (command, result.err)
    assert snapshot(tmp_path) == before  # not repaired, not replaced, no export written


def test_a_damaged_index_page_is_reported_in_one_line(workspace, cmf, good_mlmd):
    (workspace / "mlmd").write_bytes(good_mlmd)
    with sqlite3.connect(workspace / "mlmd") as db:
        index = "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_Context_2'"  # context names
        page = db.execute(index).fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    damaged = bytearray(good_mlmd)
    damaged[(page - 1) * size:page * size] = b"\x5a" * size
    (workspace / "mlmd").write_bytes(bytes(damaged))
    listed = cmf("pipeline", "list", "-f", "mlmd")
    assert listed.code == 1 and listed.err.count("\n") == 1 and "metadata store failed" in listed.err


# -- dvc.lock -----------------------------------------------------------------------------------------------

LOCKS = {
    "not-yaml": (b"stages: [\n", "malformed dvc.lock"),
    "not-utf8": (b"stages:\n  a: \xff\xfe\n", "malformed dvc.lock"),
    "python-tag": (b"stages: !!python/object/apply:os.system ['touch /tmp/cmf-pwned']\n", "malformed dvc.lock"),
    "stage-name-not-a-string": (b"stages:\n  1:\n    cmd: x\n", "stage 1 has no cmd"),
    "outs-not-a-list": (b"stages:\n  a:\n    cmd: x\n    outs: 5\n", "a.outs lacks a path or a valid md5"),
    "bad-md5-in-a-later-stage": (f"stages:\n  a:\n    cmd: x\n    outs:\n    - path: a.csv\n      md5: {MD5}\n"
                                 "  b:\n    cmd: y\n    outs:\n    - path: b.csv\n      md5: ../../b\n".encode(),
                                 "b.outs lacks a path or a valid md5"),
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_malformed_dvc_lock_is_refused_before_anything_is_recorded(lock, ws, cmf):
    content, message = LOCKS[lock]
    (ws / "dvc.lock").write_bytes(content)
    result = cmf("dvc", "ingest")
    assert result.code == 1 and result.err.count("\n") == 1 and message in result.err, result.err
    assert sorted(p.name for p in ws.iterdir()) == ["dvc.lock"]  # no mlmd file, not even an empty one
    assert not Path("/tmp/cmf-pwned").exists()


# -- pipeline exports: the JSON import ------------------------------------------------------------------------


def export_payload(pipeline: str = "p", uuid: str = "uuid-1", names=("data/a.csv", "data/b.csv")) -> Dict:
    """A pipeline export as ``cmf metadata export`` writes it: one stage, one execution, an input and an output."""
    def artifact(name: str) -> Dict[str, Any]:
        md5 = hashlib.md5(name.encode("utf-8", "surrogatepass")).hexdigest()
        return {"name": f"{name}:{md5}", "type": "Dataset", "uri": md5,
                "properties": {"Commit": md5, "url": f"{pipeline}:/store/{md5}", "git_repo": ""},
                "custom_properties": {"rows": 2}}

    execution = {"type": "train", "name": "", "custom_properties": {"epochs": 3, "lr": 0.1},
                 "properties": {"Execution_uuid": uuid, "Context_Type": f"{pipeline}/train", "Execution": "train.py",
                                "Pipeline_Type": pipeline, "Git_Repo": "", "Context_ID": 1, "Pipeline_id": 1},
                 "events": [{"type": 3 + i % 2, "artifact": artifact(n)} for i, n in enumerate(names)]}
    stage = {"name": f"{pipeline}/train", "custom_properties": {}, "executions": [execution]}
    return {"Pipeline": [{"name": pipeline, "custom_properties": {}, "stages": [stage]}]}


def _nodes(tree: Any, at: tuple = ()) -> Iterator[tuple]:
    """The path of every node of a JSON tree."""
    yield at
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, child in children:
        yield from _nodes(child, at + (key,))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["", "\x00", "\ud800", "../..", 3, 4, 2 ** 63, float("nan"), -0.0]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.just("\ud800"), inner,
                                                                max_size=3),
    max_leaves=6)


@st.composite
def mutated_exports(draw) -> Any:
    """A valid export with 1-3 nodes replaced by arbitrary JSON values or deleted."""
    doc = export_payload(uuid=draw(st.sampled_from(["uuid-1", "uuid-2"])))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(list(_nodes(doc))))
        if not at:
            doc = draw(JSON_VALUES)
            continue
        parent = doc
        for key in at[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[at[-1]]
        else:
            parent[at[-1]] = draw(JSON_VALUES)
    return doc


def dump(path: Path) -> List[str]:
    """Every row of an SQLite file, as SQL: equal dumps, equal stores."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return list(db.iterdump())


class HostileServer:
    """Stands in for the metadata server's client: every pull answers ``text``."""

    url = "http://hostile.example"

    def __init__(self, text: str) -> None:
        self.text = text

    def pull(self, pipeline: str, exec_uuid=None) -> str:
        return self.text


@pytest.fixture(scope="module")
def import_targets(tmp_path_factory) -> Dict[str, Any]:
    """Where each importer merges: the server's store (holding "p" already) and a client's mlmd file."""
    folder = tmp_path_factory.mktemp("imports")
    server = ServerStore(sqlite=folder / "server-mlmd")
    server.push(json.dumps(export_payload()), "p")
    merge_pipeline(records.open_store(folder / "client-mlmd"), export_payload())
    return {"server": server, "client": folder / "client-mlmd"}


@FAST
@given(payload=mutated_exports() | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
@pytest.mark.parametrize("importer", ["server push", "metadata pull"])
def test_the_json_import_refuses_a_malformed_export_and_changes_nothing(importer, payload, import_targets):
    """The two merges of an export into MLMD: the server's (``/mlmd_push``, documented to raise MergeError, HTTP
    422) and the client's (``cmf metadata pull``, a CmfError); a refused payload leaves the store exactly as it was.
    A mutation that is still a valid export may be merged: then the store may change."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    if importer == "server push":
        store = import_targets["server"]
        path, error, merge = store.sqlite, MergeError, partial(store.push, text, "p")
    else:
        path = import_targets["client"]
        error, merge = CmfError, partial(pull_metadata, HostileServer(text), "p", str(path))
    before = dump(path)
    try:
        merge()
    except error as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        assert dump(path) == before


# -- the metadata server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MetadataServer]:
    """A real ``cmf server`` (no auth, 2 MB body limit), stopped by PID."""
    with MetadataServer(tmp_path_factory.mktemp("server"), max_body_mb=2) as srv:
        yield srv


def push(srv: MetadataServer, body: bytes) -> requests.Response:
    return requests.post(f"{srv.url}/api/mlmd_push", data=body, headers={"Content-Type": "application/json"},
                         timeout=60)


def wrapped(payload: Any, pipeline: Any = "p") -> bytes:
    """A ``/mlmd_push`` body carrying ``payload`` (an export, as the JSON string the wire format wants)."""
    return json.dumps({"exec_uuid": None, "json_payload": json.dumps(payload), "pipeline_name": pipeline}).encode()


def with_execution(**changes: Any) -> Dict:
    payload = export_payload(uuid="uuid-new")
    payload["Pipeline"][0]["stages"][0]["executions"][0].update(changes)
    return payload


def with_custom(value: Any, key: str = "k") -> Dict:
    return with_execution(custom_properties={key: value})


#: payloads that reached ML Metadata unvalidated and made the server answer 500
SERVER_REGRESSIONS = {
    "deeply-nested-body": (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    "deeply-nested-payload": (json.dumps({"json_payload": "[" * 100_000, "pipeline_name": "p"}).encode(), "not JSON"),
    "event-type-a-list": (wrapped(with_execution(events=[{"type": [3], "artifact": {}}])), "must be 3 (input)"),
    "properties-null": (wrapped(with_execution(properties=None)), "refused"),
    "execution-name-a-list": (wrapped(with_execution(name=[1])), "name must be a str"),
    "integer-beyond-64-bits": (wrapped(with_custom(2 ** 70)), "64-bit integer range"),
    "nan": (wrapped(with_custom(float("nan"))), "finite number"),
    "infinity": (wrapped(with_custom(float("inf"))), "finite number"),
    "lone-surrogate-key": (wrapped(with_custom(1, key="\ud800")), "not valid UTF-8"),
    "lone-surrogate-value": (wrapped(with_custom("\udfff")), "not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(SERVER_REGRESSIONS))
def test_the_server_refuses_a_malformed_push_with_4xx_and_a_reason(case, server):
    body, reason = SERVER_REGRESSIONS[case]
    before = dump(server.store_file)
    answer = push(server, body)
    assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text
    assert dump(server.store_file) == before


@settings(FAST, max_examples=60)
@given(body=st.one_of(
    mutated_exports().map(wrapped),
    st.fixed_dictionaries({}, optional={"json_payload": JSON_VALUES, "pipeline_name": JSON_VALUES,
                                        "exec_uuid": JSON_VALUES}).map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=64)))
def test_the_server_answers_every_push_with_success_or_a_4xx_reason_and_no_change(body: bytes, server):
    """Whatever a client sends to ``/mlmd_push``: 200, or a 4xx with a reason and the store as it was; never 5xx."""
    before = dump(server.store_file)
    answer = push(server, body)
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert answer.json()["detail"]
        assert dump(server.store_file) == before


def test_hostile_artifact_names_on_a_shared_server_are_refused_by_the_colleague_who_pulls(server, tmp_path,
                                                                                          monkeypatch, cmf):
    """Someone pushes names that climb out of the workspace; the server keeps them (they are only names), and a
    colleague's pull of the metadata works, but the artifact pull refuses each one and writes nothing."""
    hostile = {"../escaped.txt": "climbs out", "/tmp/cmf-absolute.txt": "absolute", "a/../../b.txt": "climbs out",
               ".": "leads outside the workspace", ".git/hooks/post-merge": "is inside .dvc, .git, .hg"}
    payload = export_payload("shared-hostile", names=list(hostile))
    reference = payload["Pipeline"][0]["stages"][0]["executions"][0]["events"][0]["artifact"]
    payload["Pipeline"][0]["stages"][0]["executions"][0]["events"].append(
        {"type": 3, "artifact": {**reference, "name": "ref.txt:../../../etc/passwd", "uri": "../../../etc/passwd"}})
    assert push(server, wrapped(payload, "shared-hostile")).status_code == 200

    colleague = tmp_path / "colleague"
    colleague.mkdir()
    api.init("local", {"path": str(tmp_path / "store")}, git_remote_url=str(tmp_path / "origin.git"),
             cmf_server_url=server.url, workspace=colleague)
    remote = plugins.open_store(config.load(colleague).remote)
    for i, name in enumerate(hostile):  # the objects are on the remote too (their md5 is that of the name): only
        source = write(tmp_path / "objects" / str(i), name)  # the names stop the pull, or a hook would run at the
        remote.put(source, layout.key(hashlib.md5(name.encode()).hexdigest()))  # next git pull
    monkeypatch.chdir(colleague)
    assert cmf("metadata", "pull", "-p", "shared-hostile").code == 0
    before = snapshot(tmp_path)
    pulled = cmf("artifact", "pull", "-p", "shared-hostile")
    assert pulled.code == 1
    reasons = error_lines(pulled.err)
    assert set(reasons) == set(hostile)
    for name, reason in hostile.items():
        assert reason in reasons[name], (name, reasons[name])
    assert "not moved: ref.txt:../../../etc/passwd (recorded by reference, not versioned)" in pulled.out
    assert snapshot(tmp_path) == before and not Path("/tmp/cmf-absolute.txt").exists()
