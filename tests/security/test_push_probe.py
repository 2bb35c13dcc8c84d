"""Probes of ``POST /mlmd_push`` and of the client's pull: hostile pipeline names and malformed bodies are refused
with a reason (never a 500) and store nothing; a push that would change a stored value is a 409 Conflict naming
the record, the key and both values, and replaces it only when the body says ``"force": true``.

Every push probe runs against a real ``cmf server`` process, on SQLite and on PostgreSQL; the client's pull of a
hostile export, against a stub server (ours no longer stores one).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Callable, Dict, Iterator, Optional

import httpx
import pytest

from cmf_core.errors import CmfError
from cmf_core.metadata import store as records
from cmf_core.metadata.merge import merge_pipeline
from cmf_core.server.client import MetadataClient, pull_metadata
from cmf_core.testing.stand_in import StandIns, send_json
from tests.security.conftest import AUTH, TOKEN, execution, export, push_body, unique

BAD_NAMES = {"climbs": "../../etc", "slash": "a/b", "empty": "", "control": "\x01x", "delete": "x\x7f", "dot": ".",
             "dotdot": "..", "long": "x" * 256, "long-utf8": "é" * 128, "surrogate": "\ud800x"}


# -- helpers ------------------------------------------------------------------------------------------------


def post(server, path: str, body: Any = None, *, content: Optional[bytes] = None,
         content_type: str = "application/json") -> httpx.Response:
    """A POST with the probe token: ``body`` as JSON (NaN and lone surrogates written as Python's json writes
    them), or the raw ``content``."""
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers={**AUTH, "Content-Type": content_type},
                      timeout=60)


def push(server, payload: Dict[str, Any], pipeline: Optional[str] = None, **extra: Any) -> httpx.Response:
    return post(server, "/mlmd_push", push_body(payload, pipeline, **extra))


def pipeline_count(server) -> int:
    answer = httpx.get(server.url + "/api/pipelines", headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["total"]


def everything(server) -> str:
    """The whole store as export JSON (``/mlmd_pull`` without a pipeline name, as a peer syncs it)."""
    answer = post(server, "/mlmd_pull", {"pipeline_name": None})
    assert answer.status_code == 200, answer.text
    return answer.text


def executions(server, pipeline: str) -> Dict[str, Dict[str, Any]]:
    """The stored executions of ``pipeline`` by uuid: their custom properties, and their artifacts' custom
    properties and urls by artifact name."""
    answer = post(server, "/mlmd_pull", {"pipeline_name": pipeline})
    assert answer.status_code == 200, answer.text
    found = {}
    for stage in answer.json()["Pipeline"][0]["stages"]:
        for e in stage["executions"]:
            artifacts = {ev["artifact"]["name"]: (ev["artifact"]["custom_properties"],
                                                  ev["artifact"]["properties"].get("url")) for ev in e["events"]}
            found[e["properties"]["Execution_uuid"]] = {"custom": e["custom_properties"], "artifacts": artifacts}
    return found


def assert_refused(server, answer: httpx.Response, status: int, reason: str, before: int, marker: str) -> None:
    """``answer`` is ``status`` with a JSON reason holding ``reason``, no traceback, and nothing was stored: the
    store has as many pipelines as ``before`` and ``marker`` (an execution uuid of the push) is nowhere in it."""
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert reason in str(detail) and "Traceback" not in answer.text
    assert pipeline_count(server) == before
    assert marker not in everything(server)


# -- hostile pipeline names and malformed bodies --------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_pipeline_name_inside_the_payload_is_refused(any_server, name):
    """With ``pipeline_name`` null the server takes the payload's first pipeline: its name gets the same check
    as the wire field (a 422 naming the pipeline and why), and nothing of it is stored."""
    marker, before = str(uuid.uuid4()), pipeline_count(any_server)
    answer = post(any_server, "/mlmd_push", {**push_body(export(name, [execution(marker)])), "pipeline_name": None})
    assert_refused(any_server, answer, 422, "pipeline name", before, marker)


@pytest.mark.parametrize("name", ["../../etc", "a/b", "\x01x", "\ud800x", "x" * 256],
                         ids=["climbs", "slash", "control", "surrogate", "long"])
def test_a_bad_wire_pipeline_name_is_a_400(any_server, name):
    marker, before = str(uuid.uuid4()), pipeline_count(any_server)
    answer = post(any_server, "/mlmd_push", push_body(export(name, [execution(marker)])))
    assert_refused(any_server, answer, 400, "pipeline name", before, marker)


def test_a_wire_name_that_the_payload_does_not_hold_is_refused(any_server):
    marker, before = str(uuid.uuid4()), pipeline_count(any_server)
    answer = push(any_server, export("../../etc", [execution(marker)]), pipeline=unique())
    assert_refused(any_server, answer, 422, "no pipeline named", before, marker)


def _with(change: Callable[[Dict[str, Any]], None]) -> Callable[[str, str], Dict[str, Any]]:
    """A body maker: a valid push of a new pipeline whose export ``change`` then spoils."""
    def make(name: str, marker: str) -> Dict[str, Any]:
        payload = export(name, [execution(marker)])
        change(payload["Pipeline"][0]["stages"][0]["executions"][0])
        return push_body(payload)
    return make


def _event(execution_: Dict[str, Any]) -> Dict[str, Any]:
    return execution_["events"][0]


MALFORMED = {
    "events-not-a-list": (_with(lambda e: e.update(events={"type": 4})), "events must be a list"),
    "event-type-7": (_with(lambda e: _event(e).update(type=7)), "must be 3 (input) or 4 (output)"),
    "event-type-string": (_with(lambda e: _event(e).update(type="4")), "must be 3 (input) or 4 (output)"),
    "event-type-list": (_with(lambda e: _event(e).update(type=[4])), "must be 3 (input) or 4 (output)"),
    "artifact-not-an-object": (_with(lambda e: _event(e).update(artifact=["x"])), "artifact must be a dict"),
    "artifact-name-number": (_with(lambda e: _event(e)["artifact"].update(name=5)), "artifact.name must be a str"),
    "huge-integer": (_with(lambda e: e["custom_properties"].update(lr=2 ** 64)), "64-bit integer range"),
    "nan": (_with(lambda e: e["custom_properties"].update(lr=float("nan"))), "finite number"),
    "infinity": (_with(lambda e: e["custom_properties"].update(lr=float("-inf"))), "finite number"),
    "lone-surrogate-value": (_with(lambda e: e["custom_properties"].update(note="\udc80")), "not valid UTF-8"),
    "lone-surrogate-key": (_with(lambda e: e["custom_properties"].update({"\udc80": 1})), "not valid UTF-8"),
    # JSON object keys are always strings: the nearest thing is a list where the properties object belongs
    "properties-as-pairs": (_with(lambda e: e.update(custom_properties=[["lr", 1]])), "must be a dict"),
    "nested-property": (_with(lambda e: e["custom_properties"].update(lr={"v": 1})), "string, number or boolean"),
    "uuid-number": (_with(lambda e: e["properties"].update(Execution_uuid=7)), "Execution_uuid must be a str"),
}


@pytest.mark.parametrize("make,reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_payload_is_a_422_that_stores_nothing(any_server, make, reason):
    marker, before = str(uuid.uuid4()), pipeline_count(any_server)
    answer = post(any_server, "/mlmd_push", make(unique(), marker))
    assert_refused(any_server, answer, 422, reason, before, marker)


def _digits(body: Dict[str, Any]) -> bytes:
    """The push with ``lr`` a 5000-digit integer (Python's JSON parser refuses over 4300 digits)."""
    return json.dumps({**body, "json_payload": body["json_payload"].replace('"lr": 0.01', '"lr": ' + "9" * 5000)
                       }).encode()


BODIES = {
    "not-json": (lambda b: b"{not json", "application/json", 422, "not JSON"),
    "json-array": (lambda b: json.dumps([b]).encode(), "application/json", 422, "must be a JSON object"),
    "deeply-nested-body": (lambda b: b"[" * 100_000 + b"]" * 100_000, "application/json", 422, "not JSON"),
    "deeply-nested-payload": (lambda b: json.dumps({**b, "json_payload": "[" * 100_000 + "]" * 100_000}).encode(),
                              "application/json", 422, "not JSON"),
    "5000-digit-integer": (_digits, "application/json", 422, "JSON"),
    "payload-a-number": (lambda b: json.dumps({**b, "json_payload": 5}).encode(), "application/json", 422,
                         '"Pipeline" list'),
    "exec-uuid-a-list": (lambda b: json.dumps({**b, "exec_uuid": ["x"]}).encode(), "application/json", 422,
                         "exec_uuid must be a string"),
    "force-a-string": (lambda b: json.dumps({**b, "force": "yes"}).encode(), "application/json", 422,
                       "force must be true or false"),
    # a valid push under another content type (a form post from a browser page) is refused before it is read
    "text-plain": (lambda b: json.dumps(b).encode(), "text/plain", 415, "application/json"),
    "form": (lambda b: json.dumps(b).encode(), "application/x-www-form-urlencoded", 415, "application/json"),
    "multipart": (lambda b: json.dumps(b).encode(), "multipart/form-data; boundary=x", 415, "application/json"),
}


@pytest.mark.parametrize("make,content_type,status,reason", BODIES.values(), ids=BODIES.keys())
def test_a_malformed_body_is_a_4xx_with_a_reason(any_server, make, content_type, status, reason):
    marker, before = str(uuid.uuid4()), pipeline_count(any_server)
    content = make(push_body(export(unique(), [execution(marker)])))
    answer = post(any_server, "/mlmd_push", content=content, content_type=content_type)
    assert_refused(any_server, answer, status, reason, before, marker)


# -- clashes: a push that would change what is stored ---------------------------------------------------------


def test_a_re_push_that_changes_a_value_is_a_409_until_forced(any_server):
    name, mine, other = unique("clash"), str(uuid.uuid4()), str(uuid.uuid4())
    assert push(any_server, export(name, [execution(mine, {"lr": 0.01})])).status_code == 200

    changed = export(name, [execution(mine, {"lr": 999}), execution(other)])
    answer = push(any_server, changed)
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert all(part in detail for part in (name, mine, "'lr'", "0.01", "999")), detail
    stored = executions(any_server, name)
    assert list(stored) == [mine] and stored[mine]["custom"] == {"lr": 0.01}  # the new execution went too

    forced = push(any_server, changed, force=True)
    assert forced.status_code == 200, forced.text
    assert (forced.json()["executions"], forced.json()["updated"]) == (1, 1)
    stored = executions(any_server, name)
    assert stored[mine]["custom"] == {"lr": 999} and other in stored


def test_a_new_key_or_the_same_values_are_no_clash(any_server):
    """The same values of every type read back equal from the store (no clash, nothing updated); a new key is
    merged in."""
    name, mine = unique("clash"), str(uuid.uuid4())
    values = {"lr": 0.01, "tiny": -1.5e-300, "flag": True, "off": False, "big": 2 ** 31 - 1, "note": "é\u2028x"}
    first = push(any_server, export(name, [execution(mine, values)]))
    assert first.status_code == 200, first.text
    again = push(any_server, export(name, [execution(mine, values)]))
    assert again.status_code == 200 and again.json()["status"] == "exists", again.text
    added = push(any_server, export(name, [execution(mine, {**values, "epochs": 3})]))
    assert added.status_code == 200 and (added.json()["status"], added.json()["updated"]) == ("success", 1)
    assert executions(any_server, name)[mine]["custom"] == {**values, "epochs": 3}


def _with_artifact(name: str, uuid_: str, rows: int, url: str) -> Dict[str, Any]:
    """An export whose one execution outputs this test's own artifact, with custom property ``rows`` and a url."""
    path = f"data/{name}.csv"
    art = f"{path}:{hashlib.md5(path.encode()).hexdigest()}"
    run = execution(uuid_, artifact=art)
    run["events"][0]["artifact"].update(custom_properties={"rows": rows}, properties={"url": url})
    return export(name, [run])


def test_an_artifact_custom_property_clash_is_a_409_until_forced(any_server):
    name, mine = unique("clash"), str(uuid.uuid4())
    assert push(any_server, _with_artifact(name, mine, 5, f"{name}:/remote/a")).status_code == 200
    (art,) = executions(any_server, name)[mine]["artifacts"]

    answer = push(any_server, _with_artifact(name, mine, 6, f"{name}:/remote/a"))
    assert answer.status_code == 409, answer.text
    assert all(part in answer.json()["detail"] for part in (art, "'rows'", "5", "6")), answer.text
    assert executions(any_server, name)[mine]["artifacts"][art][0] == {"rows": 5}

    mirror = push(any_server, _with_artifact(name, mine, 5, f"{name}:/mirror/a"))  # a url is a union, no clash
    assert mirror.status_code == 200 and mirror.json()["updated"] == 1, mirror.text
    assert executions(any_server, name)[mine]["artifacts"][art] == ({"rows": 5},
                                                                     f"{name}:/remote/a,{name}:/mirror/a")

    forced = push(any_server, _with_artifact(name, mine, 6, f"{name}:/remote/a"), force=True)
    assert forced.status_code == 200 and forced.json()["updated"] == 1, forced.text
    assert executions(any_server, name)[mine]["artifacts"][art][0] == {"rows": 6}


# -- the client's pull ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[StandIns]:
    with StandIns() as servers:
        yield servers


@pytest.mark.parametrize("name", ["../../etc", "a/b", "", "\x01x"], ids=["climbs", "slash", "empty", "control"])
def test_a_pulled_export_with_a_bad_pipeline_name_is_refused(stand_ins, tmp_path, name):
    """A server (ours refuses to store such a name now; this one is a stub) sends an export whose pipeline name
    could not be pushed: the pull fails naming it and the local mlmd file is left as it was."""
    mlmd = tmp_path / "mlmd"
    merge_pipeline(records.open_store(mlmd), export("local"))
    before = mlmd.read_bytes()
    stub = stand_ins.add(send_json(export(name)))
    with MetadataClient(stub, retries=0) as client, pytest.raises(CmfError, match="pipeline name"):
        pull_metadata(client, name, str(mlmd))
    assert mlmd.read_bytes() == before


def test_a_pull_takes_the_server_values(any_server, tmp_path):
    """``cmf metadata pull`` keeps the server's values where the local mlmd holds others: no clash on a pull."""
    name, mine = unique("pull"), str(uuid.uuid4())
    assert push(any_server, export(name, [execution(mine, {"lr": 0.5})])).status_code == 200
    mlmd = tmp_path / "mlmd"
    merge_pipeline(records.open_store(mlmd), export(name, [execution(mine, {"lr": 0.01})]))
    with MetadataClient(any_server.url, TOKEN, retries=0) as client:
        assert pull_metadata(client, name, str(mlmd)).status == "success"
    (stored,) = records.open_store(mlmd, create=False).get_executions()
    assert stored.custom_properties["lr"].double_value == 0.5
