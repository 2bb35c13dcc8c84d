"""Probes of our client (``cmf metadata push|pull``) against servers that behave like the original cmf-server,
and against a real ``cmf server``.

The original answers a push with ``{"status": "success"}`` only (no counts) and needs minutes to merge a big
pipeline (735 s for 1,000 executions), so a push must never be sent twice: only failures before the request
reached the server are retried.  The stand-in servers here are small HTTP servers in a thread of the test, on a
free loopback port (:mod:`cmf_core.testing.stand_in`); they record every request they receive.
"""
from __future__ import annotations

import itertools
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from cmf_core import api
from cmf_core.metadata import store as records
from cmf_core.metadata.merge import merge_pipeline
from cmf_core.testing.servers import free_port
from cmf_core.testing.stand_in import Answer, Handler, StandIns, send_json
from tests.security.conftest import AUTH, TOKEN, export, unique

SUCCESS = (200, {"status": "success"})  # all the original server says about a push


def in_turn(*answers: Tuple[int, Dict[str, Any]], delay: float = 0.0) -> Answer:
    """``answers`` (status, JSON) in turn, the last one repeating, each after ``delay`` seconds."""
    turns = itertools.count()

    def answer(handler: Handler) -> None:
        turn = next(turns)
        time.sleep(delay)
        status, payload = answers[min(turn, len(answers) - 1)]
        send_json(payload, status)(handler)
    return answer


def dropped(handler: Handler) -> None:
    """No answer: the connection is closed once the request was read."""


def sent(stand_ins: StandIns, url: str, route: str) -> List[Dict[str, Any]]:
    """The JSON bodies the stand-in at ``url`` received at ``route`` (``mlmd_push`` or ``mlmd_pull``)."""
    return [asked.json() for asked in stand_ins.requests(url) if asked.path.endswith("/" + route)]


@pytest.fixture(autouse=True)
def _client_env(monkeypatch) -> None:
    """Two retries (three attempts), no timeout or token from the environment unless a test sets one."""
    monkeypatch.setenv("CMF_SERVER_RETRIES", "2")
    for key in ("CMF_SERVER_TIMEOUT", "CMF_SERVER_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def workspace(root: Path, url: str, pipeline: str) -> str:
    """A workspace at ``root`` whose metadata server is ``url``, with ``pipeline`` (one execution, ``lr`` 0.01)
    in its mlmd file; the mlmd file's path."""
    root.mkdir()
    api.init("local", {"path": str(root / "store")}, git_remote_url=str(root / "origin.git"), cmf_server_url=url,
             workspace=root)
    mlmd = root / "mlmd"
    store = records.open_store(mlmd)
    merge_pipeline(store, export(pipeline))
    del store  # MLMD closes the file when its store object goes
    return str(mlmd)


@pytest.fixture
def stand_ins() -> Iterator[StandIns]:
    with StandIns() as servers:
        yield servers


@pytest.fixture
def original(stand_ins) -> str:
    """A stand-in of the original cmf-server, every push answered ``{"status": "success"}`` at once: its URL."""
    return stand_ins.add(in_turn(SUCCESS))


def test_a_push_to_a_server_that_reports_no_counts_says_so(original, tmp_path, cmf):
    mlmd = workspace(tmp_path / "ws", original, "counts")
    text = cmf("metadata", "push", "-p", "counts", "-f", mlmd)
    assert text.code == 0, text.err
    assert "success (the server did not report counts)" in text.out and "0 executions" not in text.out
    as_json = cmf("metadata", "push", "-p", "counts", "-f", mlmd, "--json")
    assert as_json.code == 0, as_json.err
    answer = json.loads(as_json.out)
    assert answer["status"] == "success" and answer["counts"] is None and answer["pipeline"] == "counts"


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_push_whose_answer_is_late_is_sent_once_and_may_still_be_merging(stand_ins, tmp_path, cmf, monkeypatch,
                                                                           how):
    slow = stand_ins.add(in_turn(SUCCESS, delay=3))  # the original merging a big pipeline
    mlmd = workspace(tmp_path / "ws", slow, "late")
    args = ["metadata", "push", "-p", "late", "-f", mlmd]
    if how == "option":
        args += ["--timeout", "1"]
    else:
        monkeypatch.setenv("CMF_SERVER_TIMEOUT", "1")
    started = time.monotonic()
    result = cmf(*args)
    assert result.code == 1
    assert time.monotonic() - started < 2.5  # gave up after 1 s, did not wait for the answer
    assert len(sent(stand_ins, slow, "mlmd_push")) == 1
    assert "did not answer within 1 s" in result.err and "may still be merging" in result.err
    assert "cmf metadata pull" in result.err and len(result.err.strip().splitlines()) == 1


def test_a_push_whose_connection_drops_after_sending_is_not_sent_again(stand_ins, tmp_path, cmf):
    dropping = stand_ins.add(dropped)  # e.g. a proxy closing a connection idle for too long
    mlmd = workspace(tmp_path / "ws", dropping, "dropped")
    result = cmf("metadata", "push", "-p", "dropped", "-f", mlmd)
    assert len(sent(stand_ins, dropping, "mlmd_push")) == 1
    assert result.code == 1 and "may still be merging" in result.err


def test_a_push_answered_503_is_sent_again_but_not_after_500(stand_ins, tmp_path, cmf):
    busy = (503, {"detail": "the server is starting"})
    unavailable = stand_ins.add(in_turn(busy, SUCCESS))  # 503: nothing was done, try later
    mlmd = workspace(tmp_path / "ws", unavailable, "busy")
    assert cmf("metadata", "push", "-p", "busy", "-f", mlmd).code == 0
    assert len(sent(stand_ins, unavailable, "mlmd_push")) == 2
    failing = stand_ins.add(in_turn((500, {"detail": "merge failed"}), SUCCESS))  # 500: it may have merged part of it
    mlmd = workspace(tmp_path / "ws2", failing, "failing")
    result = cmf("metadata", "push", "-p", "failing", "-f", mlmd)
    assert len(sent(stand_ins, failing, "mlmd_push")) == 1
    assert result.code == 1 and "HTTP 500" in result.err and "merge failed" in result.err


def test_a_refused_connection_is_retried_then_named(tmp_path, cmf):
    dead = f"http://127.0.0.1:{free_port()}"
    mlmd = workspace(tmp_path / "ws", dead, "refused")
    result = cmf("metadata", "push", "-p", "refused", "-f", mlmd, "--timeout", "1")
    assert result.code == 1
    assert f"cannot reach the metadata server at {dead}" in result.err and "tried 3 times" in result.err


def test_a_pull_after_a_read_timeout_is_sent_again(stand_ins, tmp_path, cmf, monkeypatch):
    monkeypatch.setenv("CMF_SERVER_RETRIES", "1")
    slow = stand_ins.add(in_turn(SUCCESS, delay=3))
    mlmd = workspace(tmp_path / "ws", slow, "slow-pull")
    before = Path(mlmd).read_bytes()
    result = cmf("metadata", "pull", "-p", "slow-pull", "-f", mlmd, "--timeout", "1")
    assert len(sent(stand_ins, slow, "mlmd_pull")) == 2  # a pull changes nothing on the server: safe to repeat
    assert result.code == 1 and "did not answer within 1 s" in result.err and "tried 2 times" in result.err
    assert Path(mlmd).read_bytes() == before


def test_a_bad_timeout_is_refused_by_name(stand_ins, original, tmp_path, cmf, monkeypatch):
    mlmd = workspace(tmp_path / "ws", original, "bad-timeout")
    monkeypatch.setenv("CMF_SERVER_TIMEOUT", "soon")
    result = cmf("metadata", "push", "-p", "bad-timeout", "-f", mlmd)
    assert result.code == 1 and "CMF_SERVER_TIMEOUT" in result.err and "'soon'" in result.err
    assert stand_ins.requests(original) == []
    assert cmf("metadata", "pull", "-p", "bad-timeout", "-f", mlmd, "--timeout", "0").code == 2


def test_force_is_sent_only_when_asked(stand_ins, original, tmp_path, cmf):
    mlmd = workspace(tmp_path / "ws", original, "forced")
    assert cmf("metadata", "push", "-p", "forced", "-f", mlmd).code == 0
    assert cmf("metadata", "push", "-p", "forced", "-f", mlmd, "--force").code == 0
    plain, forced = sent(stand_ins, original, "mlmd_push")
    assert "force" not in plain  # the original client's body, as the original server knows it
    assert forced["force"] is True and forced["pipeline_name"] == "forced"


def test_a_409_is_one_line_with_the_hint_and_not_sent_again(stand_ins, tmp_path, cmf):
    clash = (409, {"detail": "execution 1234: custom property lr is 0.01 on the server, 0.5 in this push"})
    server = stand_ins.add(in_turn(clash))
    mlmd = workspace(tmp_path / "ws", server, "clash")
    result = cmf("metadata", "push", "-p", "clash", "-f", mlmd)
    assert len(sent(stand_ins, server, "mlmd_push")) == 1
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "HTTP 409" in result.err and "lr is 0.01 on the server" in result.err
    assert "push again with --force to replace the server's values" in result.err


def _server_lr(server, pipeline: str) -> float:
    pulled = requests.post(f"{server.url}/api/mlmd_pull", json={"pipeline_name": pipeline, "exec_uuid": None},
                           headers=AUTH, timeout=30).json()
    return pulled["Pipeline"][0]["stages"][0]["executions"][0]["custom_properties"]["lr"]


def test_a_changed_value_is_refused_until_forced(any_server, tmp_path, cmf, monkeypatch):
    monkeypatch.setenv("CMF_SERVER_TOKEN", TOKEN)
    pipeline = unique("force")
    mlmd = workspace(tmp_path / "ws", any_server.url, pipeline)
    assert cmf("metadata", "push", "-p", pipeline, "-f", mlmd).code == 0
    with closing(sqlite3.connect(mlmd)) as db:  # lr changed locally after the push
        db.execute("UPDATE ExecutionProperty SET double_value = 0.5 WHERE name = 'lr'")
        db.commit()
    refused = cmf("metadata", "push", "-p", pipeline, "-f", mlmd)
    assert refused.code == 1 and "HTTP 409" in refused.err and "lr" in refused.err
    assert "push again with --force" in refused.err and len(refused.err.strip().splitlines()) == 1
    assert _server_lr(any_server, pipeline) == 0.01
    forced = cmf("metadata", "push", "-p", pipeline, "-f", mlmd, "--force")
    assert forced.code == 0, forced.err
    assert _server_lr(any_server, pipeline) == 0.5
