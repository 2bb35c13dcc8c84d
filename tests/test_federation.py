"""Federation between metadata servers, with real processes: ``cmf server`` A on SQLite and B on PostgreSQL (B
asks for a bearer token), each registered as the other's peer with the CLI.

* syncs both ways leave both servers with the same pipelines; a repeated sync creates nothing; a push to the peer
  after a sync brings exactly the new execution with the next sync;
* every bad answer is a logged, named failure that changes nothing: an unreachable peer, non-JSON, JSON that is
  not an export, HTTP 500 (from a tiny stand-in peer), a wrong token (401), and records our store refuses (a
  property type clash), where not even the pipelines that were fine are merged;
* a peer with an interval is synced by the running server by itself; only one process claims a due peer; a bad
  ``CMF_SYNC_DEADLINE`` stops the server at start (the malicious peers are ``tests/security/test_peer_probe.py``);
* the CLI (``peers add|list|remove``, ``sync``, ``sync-log``), ``/api/peers``, ``/api/sync-runs``, ``POST
  /api/sync`` and the page ``/peers`` (tokens masked, a peer's error escaped).

The servers are started once for the module; each test pushes pipelines of its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from click.testing import CliRunner

from cmf_core.cli.server import server_command
from cmf_core.server.federation import BadPeerUrl, Federation, UnknownPeer
from cmf_core.server.store import PostgresConfig, ServerStore
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer
from cmf_core.testing.servers import free_port
from cmf_core.testing.stand_in import StandIns, send, send_json
from tests.test_server_transactions import artifact, execution, export

B_TOKEN = "b-secret-token-7Qx"


class Node(MetadataServer):
    """A ``cmf server`` process, its bearer token (if it asks for one) and the CLI options naming its store."""

    def __init__(self, root: Path, token: Optional[str] = None, postgres: Optional[PostgresServer] = None) -> None:
        super().__init__(root, tokens=(token,) if token else (), postgres=postgres, postgres_db="federation")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.store_args = (["--store", str(self.store_file)] if postgres is None else
                           ["--postgres-host", postgres.host, "--postgres-port", str(postgres.port),
                            "--postgres-db", "federation"])

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers, timeout=120, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers={**self.headers, **kwargs.pop("headers", {})}, timeout=60,
                            **kwargs)

    def push(self, pipeline: str, text: str) -> None:
        self.post("/mlmd_push", json={"exec_uuid": None, "json_payload": text, "pipeline_name": pipeline}) \
            .raise_for_status()

    def sync(self, peer: Optional[str]) -> List[Dict[str, Any]]:
        """``POST /api/sync``: the runs."""
        answer = self.post("/api/sync", json={"peer": peer})
        assert answer.status_code == 200, answer.text
        return answer.json()["runs"]

    def contents(self) -> Dict[str, Tuple[List[str], List[str]]]:
        """Every pipeline as a pull gives it: its execution uuids and artifact names."""
        answer = self.post("/mlmd_pull", json={"pipeline_name": None, "exec_uuid": None, "last_sync_time": 0})
        answer.raise_for_status()
        out = {}
        for pipeline in answer.json()["Pipeline"]:
            executions = [e for s in pipeline["stages"] for e in s["executions"]]
            uuids = sorted(u for e in executions for u in e["properties"]["Execution_uuid"].split(","))
            names = sorted({ev["artifact"]["name"] for e in executions for ev in e["events"]})
            out[pipeline["name"]] = (uuids, names)
        return out


def cli(*args: str) -> Any:
    """``cmf server ARGS`` in this process (click's runner): the result, with ``exit_code`` and ``output``."""
    return CliRunner().invoke(server_command, list(args))


def one_pipeline(name: str, *artifacts: str, kind: str = "Dataset") -> str:
    """An export of the pipeline ``name``: one execution of a new uuid, with ``artifacts`` as its outputs."""
    return export(name, [(f"{name}/train", {}, [execution(name, "train", (str(uuid.uuid4()),),
                                                          outputs=[artifact(a, kind) for a in artifacts])])])


def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def a(tmp_path_factory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("a")) as server:
        yield server


@pytest.fixture(scope="module")
def b(tmp_path_factory, postgres) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("b"), token=B_TOKEN, postgres=postgres) as server:
        yield server


@pytest.fixture(scope="module")
def token_files(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "right").write_text(f"# B's token\n{B_TOKEN}\n")
    (folder / "wrong").write_text("not-the-token\n")
    return {"right": folder / "right", "wrong": folder / "wrong"}


@pytest.fixture(scope="module")
def peered(a, b, token_files) -> Tuple[Node, Node]:
    """A and B, each registered as the other's peer (B's token given to A in a file)."""
    for result in (cli("peers", "add", b.url + "/", "--token-file", str(token_files["right"]), *a.store_args),
                   cli("peers", "add", a.url, *b.store_args)):
        assert result.exit_code == 0, result.output
    return a, b


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[Dict[str, str]]:
    """Stand-in peers, their URLs by what they answer to ``POST /mlmd_pull``."""
    clash = json.loads(one_pipeline("clashing", "clash.csv"))
    clash["Pipeline"][0]["stages"][0]["executions"][0]["events"][0]["artifact"]["properties"]["Commit"] = 5
    fine = json.loads(one_pipeline("fine", "fine.pkl", kind="Model"))
    answers = {
        "garbage": send(b"<script>alert(1)</script>"),
        "not-export": send(b'{"hello": "world"}'),
        "error": send(b"internal error", 500),
        "clash": send_json({"Pipeline": fine["Pipeline"] + clash["Pipeline"]}),
    }
    with StandIns() as peers:
        yield {kind: peers.add(answer) for kind, answer in answers.items()}


def failed_sync(a: Node, peer: str) -> Dict[str, Any]:
    """Register ``peer`` on A, sync from it (it must fail and change nothing), forget it again: the run."""
    assert cli("peers", "add", peer, *a.store_args).exit_code == 0
    try:
        before = a.contents()
        [run] = a.sync(peer)
        assert run["status"] == "failed" and peer in run["error"], run
        assert [run[k] for k in ("executions", "artifacts", "events", "updated", "pipelines")] == [0, 0, 0, 0, []]
        assert a.contents() == before
        assert a.get("/api/sync-runs", params={"limit": 1}).json()["runs"][0]["id"] == run["id"]
        return run
    finally:
        cli("peers", "remove", peer, *a.store_args)


# -- syncs ------------------------------------------------------------------------------------------------


def test_syncs_both_ways_give_both_servers_the_same_pipelines(peered):
    a, b = peered
    pa, pb = f"pa-{tag()}", f"pb-{tag()}"
    a.push(pa, one_pipeline(pa, "a1.csv", "a2.csv"))
    b.push(pb, one_pipeline(pb, "b1.csv"))
    [run] = a.sync(b.url)
    assert run["status"] == "ok" and run["cause"] == "manual" and pb in run["pipelines"], run
    assert (run["executions"], run["artifacts"], run["events"]) == (1, 1, 1)
    [run] = b.sync(a.url)
    assert run["status"] == "ok" and {pa, pb} <= set(run["pipelines"]), run
    assert (run["executions"], run["artifacts"], run["events"]) == (1, 2, 2)  # pb came back: nothing new of it
    assert a.contents() == b.contents()
    assert {pa, pb} <= set(a.contents())


def test_a_repeated_sync_creates_nothing(peered):
    a, b = peered
    name = f"again-{tag()}"
    b.push(name, one_pipeline(name, "x.csv"))
    assert a.sync(b.url)[0]["executions"] >= 1
    [run] = a.sync(b.url)
    assert run["status"] == "ok" and name in run["pipelines"]  # the overlap sends the last minute again
    assert (run["executions"], run["artifacts"], run["events"], run["updated"]) == (0, 0, 0, 0)


def test_a_sync_after_a_push_to_the_peer_brings_only_the_new_execution(peered):
    a, b = peered
    name = f"grow-{tag()}"
    b.push(name, one_pipeline(name, "first.csv"))
    a.sync(b.url)
    position = next(p for p in a.get("/api/peers").json()["peers"] if p["url"] == b.url)["last_sync_time"]
    assert position > 0
    new = str(uuid.uuid4())
    b.push(name, export(name, [(f"{name}/train", {}, [execution(name, "train", (new,), [artifact("first.csv")],
                                                                [artifact("second.csv")])])]))
    [run] = a.sync(b.url)
    assert run["status"] == "ok" and run["since"] == position, run
    assert (run["executions"], run["artifacts"], run["events"]) == (1, 1, 2)
    assert new in a.contents()[name][0]
    assert a.contents()[name] == b.contents()[name]


# -- failures -----------------------------------------------------------------------------------------------


def test_an_unreachable_peer_is_a_logged_failure(a):
    run = failed_sync(a, f"http://127.0.0.1:{free_port()}")
    assert "unreachable" in run["error"]


@pytest.mark.parametrize("kind, named", [("garbage", "not JSON"), ("not-export", "not an export"),
                                         ("error", "HTTP 500")])
def test_a_peer_answering_no_export_is_a_logged_failure(a, stand_ins, kind, named):
    assert named in failed_sync(a, stand_ins[kind])["error"]


def test_a_clash_with_our_records_merges_nothing_of_that_sync(a, stand_ins):
    """The stand-in sends a fine pipeline, then one whose Dataset has an integer Commit (ours is a string)."""
    name = f"ours-{tag()}"
    a.push(name, one_pipeline(name, "ours.csv"))
    run = failed_sync(a, stand_ins["clash"])
    assert "refused" in run["error"]
    assert not {"fine", "clashing"} & set(a.contents())


def test_a_peer_asking_for_a_token_refuses_a_wrong_one(peered, token_files):
    a, b = peered
    name = f"tok-{tag()}"
    b.push(name, one_pipeline(name, "t.csv"))
    assert cli("peers", "add", b.url, "--token-file", str(token_files["wrong"]), *a.store_args).exit_code == 0
    try:
        [run] = a.sync(b.url)
        assert run["status"] == "failed" and "HTTP 401" in run["error"] and b.url in run["error"], run
        assert name not in a.contents()
    finally:
        assert cli("peers", "add", b.url, "--token-file", str(token_files["right"]), *a.store_args).exit_code == 0
    [run] = a.sync(b.url)
    assert run["status"] == "ok" and name in a.contents()


# -- the scheduler ------------------------------------------------------------------------------------------


def test_a_peer_with_an_interval_is_synced_by_the_running_server(peered, token_files):
    a, b = peered
    name = f"sched-{tag()}"
    b.push(name, one_pipeline(name, "s.csv"))
    right = ["--token-file", str(token_files["right"]), *a.store_args]
    assert cli("peers", "add", b.url, "--interval", "1", *right).exit_code == 0
    try:
        deadline = time.monotonic() + 15
        while name not in a.contents():
            assert time.monotonic() < deadline, "no scheduled sync within 15 s"
            time.sleep(0.2)
        runs = a.get("/api/sync-runs", params={"limit": 5}).json()["runs"]
        assert any(r["cause"] == "scheduled" and r["peer"] == b.url and r["status"] == "ok" for r in runs), runs
    finally:
        assert cli("peers", "add", b.url, *right).exit_code == 0  # on demand again


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_only_one_process_claims_a_due_peer(kind, tmp_path, request):
    if kind == "sqlite":
        store = ServerStore(sqlite=tmp_path / "claim.mlmd")
    else:
        pg = request.getfixturevalue("postgres")
        store = ServerStore(postgres=PostgresConfig(pg.host, pg.port, pg.USER, "claim"))
    try:
        Federation(store).add_peer("http://127.0.0.1:9/", interval=60)  # due at once
        claimers = [Federation(store) for _ in range(8)]
        start, claimed = threading.Barrier(len(claimers)), []

        def claim(federation: Federation) -> None:
            start.wait()
            claimed.extend(peer.url for peer in federation.claim_due())

        threads = [threading.Thread(target=claim, args=(f,)) for f in claimers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert claimed == ["http://127.0.0.1:9"]
        assert claimers[0].claim_due() == []  # next due in 60 s
    finally:
        store.close()


def test_a_bad_sync_deadline_stops_the_server_at_start(tmp_path):
    """``CMF_SYNC_DEADLINE`` (seconds a peer has for its whole answer) is checked when the server starts."""
    env = {**os.environ, "CMF_SYNC_DEADLINE": "soon"}
    done = subprocess.run([sys.executable, "-m", "cmf_core.cli.server", "--data-dir", str(tmp_path), "--port",
                           str(free_port())], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done
    assert "CMF_SYNC_DEADLINE is a number of seconds above 0, not 'soon'" in done.stderr


# -- the CLI, the API and the page ------------------------------------------------------------------------


def test_the_cli_manages_peers_and_runs_syncs(peered, tmp_path):
    a, b = peered
    listed = cli("peers", "list", *a.store_args)
    assert listed.exit_code == 0 and b.url in listed.output and "token ****" in listed.output
    assert B_TOKEN not in listed.output
    name = f"cli-{tag()}"
    b.push(name, one_pipeline(name, "c.csv"))
    synced = cli("sync", "--from", b.url, *a.store_args)
    assert synced.exit_code == 0 and f"{b.url}: ok: " in synced.output and "1 executions" in synced.output
    assert name in a.contents()
    assert cli("sync", "--from", b.url, *a.store_args).exit_code == 0  # a second run: nothing new
    log = cli("sync-log", "--limit", "2", *a.store_args)
    assert log.exit_code == 0 and len(log.output.splitlines()) == 2 and b.url in log.output.splitlines()[0]

    dead = f"http://127.0.0.1:{free_port()}"
    assert cli("peers", "add", dead, *a.store_args).exit_code == 0
    try:  # the real command line: its exit status
        done = subprocess.run([sys.executable, "-m", "cmf_core.cli.server", "sync", "--from", dead, *a.store_args],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1 and "unreachable" in done.stdout, done
    finally:
        assert cli("peers", "remove", dead, *a.store_args).exit_code == 0
    assert isinstance(cli("peers", "remove", dead, *a.store_args).exception, UnknownPeer)
    assert isinstance(cli("peers", "add", "ftp://example.org", *a.store_args).exception, BadPeerUrl)
    assert "no server store" in str(cli("peers", "list", "--store", str(tmp_path / "none")).exception)
    (tmp_path / "two").write_text("t1\nt2\n")
    assert "holds 2 tokens" in str(cli("peers", "add", b.url, "--token-file", str(tmp_path / "two"),
                                       *a.store_args).exception)


def test_the_api_and_the_page_show_peers_and_runs(peered, stand_ins):
    a, b = peered
    failed_sync(a, stand_ins["garbage"])  # its error quotes the answer: <script>alert(1)</script>
    peers = a.get("/api/peers")
    assert peers.status_code == 200 and B_TOKEN not in peers.text
    assert next(p for p in peers.json()["peers"] if p["url"] == b.url)["token"] == "****"
    runs = a.get("/api/sync-runs", params={"limit": 3}).json()["runs"]
    assert len(runs) == 3 and [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
    assert "<script>" in runs[0]["error"]
    assert a.get("/api/sync-runs", params={"limit": 0}).status_code == 400
    assert a.post("/api/sync", json={"peer": "http://127.0.0.1:1"}).status_code == 404
    assert a.post("/api/sync", data="not json").status_code == 400
    assert b.get("/api/peers", headers={"Authorization": "Bearer wrong"}).status_code == 401

    page = a.get("/peers", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert b.url in page.text and B_TOKEN not in page.text
    assert 'href="/peers"' in a.get("/", headers={"Accept": "text/html"}).text


def _runs_of(node: Node, peer: str) -> int:
    return sum(r["peer"] == peer for r in node.get("/api/sync-runs", params={"limit": 500}).json()["runs"])


def _wait_for_runs(node: Node, peer: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while _runs_of(node, peer) < count:
        assert time.monotonic() < deadline, f"no run of {peer} appeared"
        time.sleep(0.2)


def test_sync_now_from_the_page_runs_a_configured_peer_only_from_its_own_origin(peered):
    """The page's "Sync now" (POST /peers/sync): a bearer client may; a browser signed in with the session cookie
    only when it shows that this server's page sent it; never an address that is not a peer."""
    a, b = peered
    before = _runs_of(b, a.url)
    started = requests.post(b.url + "/peers/sync", data={"peer": a.url}, headers=b.headers, allow_redirects=False,
                            timeout=30)
    assert started.status_code == 303 and started.headers["location"].startswith("/peers?started=")
    _wait_for_runs(b, a.url, before + 1)

    jar = requests.post(b.url + "/login", data={"token": B_TOKEN, "next": "/peers"}, allow_redirects=False,
                        timeout=30).cookies
    own, other = {"Origin": b.url}, {"Origin": b.url.rsplit(":", 1)[0] + f":{free_port()}"}
    for headers, status in ((own, 303), ({"Sec-Fetch-Site": "same-origin"}, 303), (other, 403),
                            ({"Sec-Fetch-Site": "same-site"}, 403), ({}, 403)):
        answer = requests.post(b.url + "/peers/sync", data={"peer": a.url}, cookies=jar, headers=headers,
                               allow_redirects=False, timeout=30)
        assert answer.status_code == status, (headers, answer.status_code, answer.text)
    assert requests.post(b.url + "/api/sync", json={"peer": a.url}, cookies=jar, headers=own,
                         timeout=30).status_code == 403  # the API's writes still need the bearer header
    unknown = requests.post(b.url + "/peers/sync", data={"peer": "http://127.0.0.1:1"}, headers=b.headers,
                            allow_redirects=False, timeout=30)
    assert unknown.status_code == 404 and "no peer" in unknown.text
    # the page's notice names only a configured peer: a link cannot make it announce what it likes
    page = b.get("/peers", params={"started": "http://evil.example/ your data was sent"},
                 headers={"Accept": "text/html"})
    assert page.status_code == 200 and "evil.example" not in page.text and 'class="notice"' not in page.text
    assert 'class="notice"' in b.get("/peers", params={"started": a.url}, headers={"Accept": "text/html"}).text


def test_sync_now_in_a_browser_and_the_log_refreshes_itself(peered, page):
    from playwright.sync_api import expect

    a, b = peered
    page.goto(b.url + "/peers")
    page.locator("input[name=token]").fill(B_TOKEN)
    page.locator("form.login button").click()
    page.wait_for_url("**/peers")
    row = page.locator("#peers-table tr", has_text=a.url)
    logged = page.locator("#runs-table tbody tr", has_text=a.url).count()
    row.get_by_role("button", name=f"sync {a.url} now").click()
    page.wait_for_url("**/peers?started=*")
    expect(page.locator("p.notice")).to_contain_text(a.url)
    # no reload: the page fetches itself again and the run appears in its log
    expect(page.locator("#runs-table tbody tr", has_text=a.url)).to_have_count(logged + 1, timeout=30_000)
    assert int(page.locator("body").get_attribute("data-refreshed")) >= 1
