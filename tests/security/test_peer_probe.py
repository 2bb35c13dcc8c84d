"""Malicious peers: a real ``cmf server`` process (SQLite, and PostgreSQL where its store decides the outcome)
syncs from stand-in peers served by a thread of this test process, each answering ``/mlmd_pull`` in a hostile way.

Every run must end as a failed run in the sync log whose error names the peer and the cause, merge nothing, and
leave the server answering:

* a peer trickling one byte every 0.5 s is cut off at the deadline (``CMF_SYNC_DEADLINE``, 3 s here), whether the
  sync was asked for over HTTP or scheduled; a healthy peer synced at the same time is not held up by it;
* a gzip bomb stops at the body limit (``--max-body-mb``, 1 MiB here) with the server's peak memory near its
  baseline plus the limit; an endless compressed stream that decompresses to nothing, and a plain body over the
  limit, are refused as well;
* an export with a pipeline name that could leave the data directory, or that changes a property of one of our
  executions (``lr`` 0.01 -> 999), is refused whole (``merge.py`` checks pipeline names and clashes);
* a redirect to another host, HTML, truncated JSON, a body cut short, an encoding we did not ask for.
"""
from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
from click.testing import CliRunner

from cmf_core.cli.server import server_command
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.stand_in import Handler, StandIns, send, send_json
from tests.security.conftest import AUTH, STORES, TOKEN, execution, export, unique

DEADLINE = 3.0  # seconds: CMF_SYNC_DEADLINE of the servers of this module (a scheduler tick, 1 s, and a sync
#                of the healthy peer must fit in it with room to spare on a busy machine)
SLACK = 2.0  # what a run may take beyond its deadline: recording it, a busy machine
LIMIT = 1024 * 1024  # --max-body-mb 1
MB = 1024 * 1024


# -- the stand-in peers -------------------------------------------------------------------------------------


def trickle(h: Handler) -> None:
    """200, then one byte every 0.5 s (for 30 s at most, so that a server without a deadline fails the test)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.end_headers()
    for _ in range(60):
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.5)


def gzip_bomb(megabytes: int) -> bytes:
    """gzip of ``megabytes`` MiB of zeros (about a thousandth of that)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(z.compress(bytes(MB)) for _ in range(megabytes)), z.flush()])


#: a gzip header, then empty stored blocks past the limit: a compressed stream that never decompresses to a byte
ENDLESS_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03" + b"\x00\x00\x00\xff\xff" * (LIMIT // 5 + 1000)


# -- our server -----------------------------------------------------------------------------------------------


class Ours(MetadataServer):
    """Our ``cmf server``: token auth, a 1 MiB body limit, a 3 s sync deadline; peers added with the CLI."""

    def __init__(self, root: Path, postgres: Any = None) -> None:
        super().__init__(root, tokens=[TOKEN], max_body_mb=1, postgres=postgres, postgres_db="peerprobe")
        self.store_args = (["--store", str(self.store_file)] if postgres is None else
                           ["--postgres-host", postgres.host, "--postgres-port", str(postgres.port),
                            "--postgres-db", "peerprobe"])

    def start(self) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CMF_SYNC_DEADLINE", str(DEADLINE))
            super().start()

    def cli(self, *args: str) -> None:
        result = CliRunner().invoke(server_command, [*args, *self.store_args])
        assert result.exit_code == 0, result.output

    def add_peer(self, url: str, interval: Optional[int] = None) -> str:
        self.cli("peers", "add", url, *(["--interval", str(interval)] if interval else []))
        return url

    def sync(self, peer: Optional[str], timeout: float = 30) -> List[Dict[str, Any]]:
        """``POST /api/sync``: the runs (the client gives up after ``timeout`` s)."""
        answer = requests.post(f"{self.url}/api/sync", json={"peer": peer}, headers=AUTH, timeout=timeout)
        assert answer.status_code == 200, answer.text
        return answer.json()["runs"]

    def runs(self, limit: int = 20) -> List[Dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/sync-runs", params={"limit": limit}, headers=AUTH, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["runs"]

    def contents(self) -> Dict[str, Any]:
        """Every pipeline as a pull gives it, by name."""
        answer = requests.post(f"{self.url}/mlmd_pull", headers=AUTH, timeout=30,
                               json={"pipeline_name": None, "exec_uuid": None, "last_sync_time": 0})
        assert answer.status_code == 200, answer.text
        return {p["name"]: p for p in answer.json()["Pipeline"]}

    def push(self, payload: Dict[str, Any]) -> None:
        answer = requests.post(f"{self.url}/mlmd_push", headers=AUTH, timeout=30, json={
            "exec_uuid": None, "json_payload": json.dumps(payload), "pipeline_name": payload["Pipeline"][0]["name"]})
        assert answer.status_code == 200, answer.text

    def memory_kb(self, field: str) -> int:
        """``VmRSS`` or ``VmHWM`` (peak) of the server process, in kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")


@pytest.fixture(scope="module")
def peers() -> Iterator[StandIns]:
    with StandIns() as stand_ins:
        yield stand_ins


@pytest.fixture(scope="module")
def ours_sqlite(tmp_path_factory) -> Iterator[Ours]:
    with Ours(tmp_path_factory.mktemp("ours-sqlite")) as server:
        yield server


@pytest.fixture(scope="module")
def ours_postgresql(tmp_path_factory, pg_cluster) -> Iterator[Ours]:
    with Ours(tmp_path_factory.mktemp("ours-pg"), postgres=pg_cluster) as server:
        yield server


@pytest.fixture(params=STORES)
def ours(request) -> Ours:
    """Our server on each store in turn."""
    return request.getfixturevalue(f"ours_{request.param}")


def failed_run(ours: Ours, peer: str) -> Dict[str, Any]:
    """Sync from ``peer`` (added for this call only): the run, checked to have failed by name, merged nothing and
    been logged, with our server still answering."""
    ours.add_peer(peer)
    try:
        before = ours.contents()
        [run] = ours.sync(peer)
        assert run["status"] == "failed" and peer in run["error"], run
        assert [run[k] for k in ("executions", "artifacts", "events", "updated", "pipelines")] == [0, 0, 0, 0, []]
        assert ours.contents() == before
        assert ours.runs(1)[0]["id"] == run["id"]
        return run
    finally:
        ours.cli("peers", "remove", peer)


# -- a slow peer ----------------------------------------------------------------------------------------------


def test_a_trickling_peer_is_cut_off_at_the_deadline_and_holds_no_other_peer(ours_sqlite, peers):
    """``POST /api/sync`` of every peer: the slow one fails by name at the deadline, the healthy one syncs."""
    name = unique("healthy")
    slow, healthy = ours_sqlite.add_peer(peers.add(trickle)), ours_sqlite.add_peer(peers.add(send_json(export(name))))
    try:
        started = time.monotonic()
        runs = {run["peer"]: run for run in ours_sqlite.sync(None, timeout=DEADLINE + 20)}
        took = time.monotonic() - started
    finally:
        ours_sqlite.cli("peers", "remove", slow)
        ours_sqlite.cli("peers", "remove", healthy)
    assert took < DEADLINE + SLACK, f"POST /api/sync took {took:.1f} s"
    assert runs[slow]["status"] == "failed", runs[slow]
    assert f"peer {slow} did not finish its answer within {DEADLINE:g} s" in runs[slow]["error"]
    assert runs[slow]["pipelines"] == [] and runs[slow]["id"] in [r["id"] for r in ours_sqlite.runs()]
    assert runs[healthy]["status"] == "ok" and runs[healthy]["pipelines"] == [name], runs[healthy]
    assert name in ours_sqlite.contents()


def test_a_stuck_scheduled_run_delays_no_other_peer(ours, peers):
    """The slow peer's scheduled run starts first; the healthy peer, due while it hangs, is synced before the slow
    run is cut off at its deadline, which logs it as failed."""
    name = unique("scheduled")
    slow = ours.add_peer(peers.add(trickle), interval=3600)  # due at once, then not again during the test
    healthy = None
    try:
        assert peers.was_asked(slow).wait(10), "the slow peer's scheduled run did not start within 10 s"
        healthy = ours.add_peer(peers.add(send_json(export(name))), interval=3600)
        deadline = time.monotonic() + 15
        while not {slow, healthy} <= {run["peer"] for run in ours.runs()}:
            assert time.monotonic() < deadline, f"no scheduled runs of both peers within 15 s: {ours.runs()}"
            time.sleep(0.2)
    finally:
        for peer in (slow, healthy):
            if peer:
                ours.cli("peers", "remove", peer)
    runs = {run["peer"]: run for run in ours.runs()}
    assert runs[healthy]["status"] == "ok" and runs[healthy]["cause"] == "scheduled", runs[healthy]
    assert runs[healthy]["finished_at"] < runs[slow]["finished_at"], "the healthy peer waited for the slow one"
    assert runs[slow]["status"] == "failed" and "did not finish its answer" in runs[slow]["error"], runs[slow]
    assert runs[slow]["finished_at"] - runs[slow]["started_at"] < (DEADLINE + SLACK) * 1000
    assert name in ours.contents()


# -- answers too large ----------------------------------------------------------------------------------------


def test_a_gzip_bomb_stops_at_the_limit_with_memory_near_it(ours_sqlite, peers):
    """128 KB of gzip that decompresses to 128 MiB of zeros: refused once 1 MiB came out, the server's peak
    memory during the run within the limit and 40 MB of the resident size it had before (a server reading it
    whole holds 128 MiB at least)."""
    bomb = gzip_bomb(128)
    peer = peers.add(send(bomb, Content_Encoding="gzip"))
    failed_run(ours_sqlite, peers.add(send(b"warm-up")))  # the first run's imports and connections, not the bomb's
    Path(f"/proc/{ours_sqlite.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = ours_sqlite.memory_kb("VmRSS")
    run = failed_run(ours_sqlite, peer)
    peak = ours_sqlite.memory_kb("VmHWM")
    assert f"answered more than {LIMIT} bytes" in run["error"], run
    assert peak - before < (LIMIT + 40 * MB) // 1024, f"server RSS {before} kB before, {peak} kB at its peak"


@pytest.mark.parametrize("answer, named", [
    (send(ENDLESS_GZIP, Content_Encoding="gzip"), f"answered more than {LIMIT} bytes (compressed)"),
    (send(gzip.compress(json.dumps(export("cut")).encode())[:-8], Content_Encoding="gzip"),
     "a gzip stream that ends early"),
    (send(b"\x1f\x8b\x08\x00garbage" * 10, Content_Encoding="gzip"), "gzip that does not decompress"),
], ids=["endless-compressed", "truncated-gzip", "corrupt-gzip"])
def test_compressed_answers_are_bounded_and_checked(ours_sqlite, peers, answer, named):
    assert named in failed_run(ours_sqlite, peers.add(answer))["error"]


@pytest.mark.parametrize("members", [1, 2])
def test_a_gzip_answer_in_one_member_or_several_merges(ours_sqlite, peers, members):
    """What a real peer sends (its export gzipped), and what gzip allows (members one after the other)."""
    name = unique("gzipped")
    text = json.dumps(export(name)).encode()
    cut = len(text) // members
    body = b"".join(gzip.compress(text[i:i + cut]) for i in range(0, len(text), cut))
    peer = ours_sqlite.add_peer(peers.add(send(body, Content_Encoding="gzip")))
    try:
        [run] = ours_sqlite.sync(peer)
    finally:
        ours_sqlite.cli("peers", "remove", peer)
    assert run["status"] == "ok" and run["pipelines"] == [name], run
    assert name in ours_sqlite.contents()


def test_a_plain_answer_over_the_limit_is_refused(ours, peers):
    """A valid export of 2 MiB (a padded property) is not merged: more than --max-body-mb."""
    name = unique("huge")
    payload = export(name)
    payload["Pipeline"][0]["custom_properties"]["pad"] = "x" * (2 * MB)
    run = failed_run(ours, peers.add(send_json(payload)))
    assert f"answered more than {LIMIT} bytes" in run["error"], run
    assert name not in ours.contents()


# -- exports our store must refuse ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "../../etc", "a/b", "bell\x07"], ids=["empty", "dotdot", "slash", "control"])
def test_an_export_with_a_bad_pipeline_name_merges_nothing(ours, peers, bad):
    """With a fine pipeline first: all or nothing (the name check is merge.py's ``pipeline_of``)."""
    fine = unique("fine")
    payload = {"Pipeline": export(fine)["Pipeline"] + export(bad)["Pipeline"]}
    run = failed_run(ours, peers.add(send_json(payload)))
    assert "pipeline" in run["error"] and "name" in run["error"], run
    assert fine not in ours.contents()


def test_an_export_changing_one_of_our_executions_is_a_clash(ours, peers):
    """The peer reuses our execution's uuid with ``lr`` 999 (ours: 0.01): refused naming the execution and the
    key, ours unchanged, and nothing else of that answer merged (the clash rule is merge.py's)."""
    name, other, ours_uuid = unique("ours"), unique("theirs"), str(uuid.uuid4())
    ours.push(export(name, [execution(ours_uuid)]))
    theirs = {"Pipeline": export(other)["Pipeline"] + export(name, [execution(ours_uuid, {"lr": 999})])["Pipeline"]}
    run = failed_run(ours, peers.add(send_json(theirs)))
    assert ours_uuid in run["error"] and "lr" in run["error"], run
    [execution_] = ours.contents()[name]["stages"][0]["executions"]
    assert execution_["custom_properties"]["lr"] == 0.01
    assert other not in ours.contents()


# -- answers that are no export -------------------------------------------------------------------------------


def test_a_redirect_to_another_host_is_not_followed(ours_sqlite, peers):
    elsewhere = peers.add(send_json(export(unique("elsewhere"))))
    target = elsewhere.replace("127.0.0.1", "localhost")  # another host name, the same stand-in
    run = failed_run(ours_sqlite, peers.add(send(b"", 307, Location=f"{target}/mlmd_pull")))
    assert "HTTP 307" in run["error"], run
    assert not peers.was_asked(elsewhere).is_set()


@pytest.mark.parametrize("answer, named", [
    (send(b"<html><body>Welcome</body></html>", Content_Type="text/html"), "not JSON"),
    (send(b'{"Pipeline": [{"name": "cut'), "not JSON"),
    (send(b'{"Pipeline": [', Content_Length="100000"), "broke off its answer"),
    (send(b"{}", Content_Encoding="br"), "Content-Encoding 'br'"),
], ids=["html", "truncated-json", "cut-short", "unasked-encoding"])
def test_an_answer_that_is_no_export_is_a_named_failure(ours_sqlite, peers, answer, named):
    assert named in failed_run(ours_sqlite, peers.add(answer))["error"]

