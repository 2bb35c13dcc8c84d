"""Probes of what a store takes: long property values and uris, long names, NUL characters, many properties, a
push close to the body limit -- the same answer on SQLite and PostgreSQL (stored and read back identically, or
the same 422 naming the field), never a 500 or SQL in the answer -- and PostgreSQL stopping under a running
server: pages, pushes and pulls answer 503 at once and work again by themselves once it is back.

ML Metadata's PostgreSQL schema indexes property values and uris with btrees, whose rows hold about 2,700
bytes: a longer value that does not compress (a command, a note, a JSON blob) failed the whole push with
ProgramLimitExceeded.  Our stores index md5(value) instead; ML Metadata itself still reads them.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import time
import uuid
from typing import Any, Dict, List

import httpx
import pytest

from cmf_core.metadata.merge import merge_pipeline
from cmf_core.server.store import PostgresConfig
from cmf_core.testing.metadata_server import MetadataServer, PostgresServer
from cmf_core.testing.servers import Server
from tests.security.conftest import AUTH, TOKEN, execution, export, push_body, unique

HTML = {**AUTH, "Accept": "text/html"}
#: What an answer must never show.
LEAKS = ("Traceback", "psycopg", "COPY ", "character varying", "ProgramLimitExceeded", "index row", "LINE 1",
         "CONTEXT:")
LIMIT = 8 * 1024 * 1024  # the probe servers' --max-body-mb 8


def noise(size: int) -> str:
    """``size`` characters of text that does not compress (compressed, a long value would fit the index)."""
    return secrets.token_urlsafe(size)[:size]


def push(server: MetadataServer, payload: Dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/mlmd_push", json=push_body(payload), headers=AUTH, timeout=120)


def pull(server: MetadataServer, pipeline: str) -> Dict[str, Any]:
    """The pipeline as the server exports it, its executions by uuid."""
    answer = httpx.post(server.url + "/mlmd_pull", json={"pipeline_name": pipeline}, headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text[:300]
    stages = json.loads(answer.text)["Pipeline"][0]["stages"]
    return {e["properties"]["Execution_uuid"]: e for stage in stages for e in stage["executions"]}


def clean(answer: httpx.Response) -> None:
    """An answer that shows nothing of the database."""
    leaked = [marker for marker in LEAKS if marker in answer.text]
    assert not leaked, (leaked, answer.text[:300])


# -- long values ------------------------------------------------------------------------------------------------


def test_long_values_are_stored_and_read_back_alike(any_server):
    """A 10,000-character command and note, a 1 MB note, a JSON blob and a 5,000-character uri, on each store."""
    pipeline, run = unique("long"), str(uuid.uuid4())
    command, note, blob = noise(10_000), noise(1_000_000), json.dumps({"rows": [noise(50) for _ in range(200)]})
    incoming = execution(run, custom={"note": note, "short": noise(10_000) + " é ü", "blob": blob},
                         artifact=f"data/{pipeline}.csv:0123456789abcdef0123456789abcdef")  # an artifact of its own
    incoming["properties"]["Execution"] = command
    artifact = incoming["events"][0]["artifact"]
    artifact.update(uri=noise(5_000), custom_properties={"remark": noise(10_000)})
    answer = push(any_server, export(pipeline, [incoming]))
    clean(answer)
    assert answer.status_code == 200, answer.text[:300]

    stored = pull(any_server, pipeline)[run]
    assert stored["properties"]["Execution"] == command
    assert stored["custom_properties"] == incoming["custom_properties"]
    (event,) = stored["events"]
    assert event["artifact"]["uri"] == artifact["uri"]
    assert event["artifact"]["custom_properties"]["remark"] == artifact["custom_properties"]["remark"]
    # the pages read them too, and find them by a part of the text
    listed = httpx.get(f"{any_server.url}/api/pipelines/{pipeline}/executions", headers=AUTH, timeout=60,
                       params={"filter": f"note ~ '{note[500_000:500_100]}'"}).json()
    assert [item["params"]["note"] for item in listed["items"]] == [note]
    page = httpx.get(f"{any_server.url}/executions/{listed['items'][0]['id']}", headers=HTML, timeout=60)
    assert page.status_code == 200 and command in page.text
    # pushed again, the execution is found by its uuid (through the index on md5(value) on PostgreSQL)
    again = push(any_server, export(pipeline, [incoming]))
    assert again.status_code == 200 and again.json()["status"] == "exists", again.text[:300]


def test_ml_metadata_reads_the_long_values_back_from_postgresql(postgres_server, pg_cluster):
    """The store stays ML Metadata's: its own MetadataStore opens the database and reads a long value."""
    pytest.importorskip("ml_metadata", reason="the oracle, ml-metadata, installs on Python <= 3.11 only")
    from cmf_core.metadata.ml_metadata_store import open_postgres

    pipeline, run, note = unique("mlmd"), str(uuid.uuid4()), noise(100_000)
    assert push(postgres_server, export(pipeline, [execution(run, custom={"note": note})])).status_code == 200
    store = open_postgres(pg_cluster.host, pg_cluster.port, pg_cluster.USER, "probe")
    found = [e for e in store.get_executions() if e.properties["Execution_uuid"].string_value == run]
    assert [e.custom_properties["note"].string_value for e in found] == [note]


# -- names, NUL, many properties, the body limit ------------------------------------------------------------------


def _with_name(field: str, size: int) -> Dict[str, Any]:
    """A one-execution export whose ``field`` is a name of ``size`` characters (mostly 'é': two bytes each)."""
    pipeline, run = unique("names"), execution()
    artifact = run["events"][0]["artifact"]

    def name(prefix: str = "", suffix: str = "") -> str:
        return prefix + "é" * (size - len(prefix) - len(suffix)) + suffix

    payload = export(pipeline, [run])
    if field == "artifact name":
        artifact["name"] = name("data/", ":0123456789abcdef0123456789abcdef")
    elif field == "artifact type":
        artifact["type"] = name()
    elif field == "execution type":
        run["type"] = name()
    elif field == "execution name":
        run["name"] = name()
    elif field == "custom property":
        run["custom_properties"] = {name(): 1}
    elif field == "artifact property":
        artifact["custom_properties"] = {name(): "x"}
    elif field == "stage name":
        payload["Pipeline"][0]["stages"][0]["name"] = name(f"{pipeline}/")
    return payload


NAME_FIELDS = {"artifact name": "artifact.name", "artifact type": "artifact.type", "execution type": "].type",
               "execution name": "].name", "custom property": "custom_properties key",
               "artifact property": "artifact.custom_properties key", "stage name": "stages[0].name"}


@pytest.mark.parametrize("field", sorted(NAME_FIELDS))
def test_a_name_longer_than_ml_metadata_takes_is_the_same_422_naming_the_field(any_server, field):
    payload = _with_name(field, 256)
    answer = push(any_server, payload)
    clean(answer)
    assert answer.status_code == 422, answer.text[:300]
    assert NAME_FIELDS[field] in answer.json()["detail"] and "255" in answer.json()["detail"]
    pipeline = payload["Pipeline"][0]["name"]
    assert httpx.get(f"{any_server.url}/api/pipelines/{pipeline}", headers=AUTH, timeout=60).status_code == 404


@pytest.mark.parametrize("field", sorted(NAME_FIELDS))
def test_a_name_of_255_characters_is_stored(any_server, field):
    answer = push(any_server, _with_name(field, 255))
    assert answer.status_code == 200, answer.text[:300]


@pytest.mark.parametrize("where", ["value", "key", "artifact name"])
def test_a_nul_character_is_the_same_422_on_both_stores(any_server, where):
    run = {"value": execution(custom={"n": "a\x00b"}), "key": execution(custom={"a\x00b": 1}),
           "artifact name": execution(artifact="data/a\x00b.csv:0123456789abcdef0123456789abcdef")}[where]
    answer = push(any_server, export(unique("nul"), [run]))
    clean(answer)
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"], answer.text[:300]


def test_many_properties_are_stored_and_read_back(any_server):
    pipeline, run = unique("many"), str(uuid.uuid4())
    custom: Dict[str, Any] = {f"p{i:04d}": (i, i / 7, f"v{i}", i % 2 == 0)[i % 4] for i in range(3_000)}
    answer = push(any_server, export(pipeline, [execution(run, custom=custom)]))
    assert answer.status_code == 200, answer.text[:300]
    assert pull(any_server, pipeline)[run]["custom_properties"] == custom


def test_a_push_just_under_the_body_limit_is_stored_and_one_over_it_refused(any_server):
    pipeline, notes = unique("big"), [noise(120_000) for _ in range(60)]
    runs = [execution(custom={"note": note}, artifact=f"data/{i}.csv:{i:032x}") for i, note in enumerate(notes)]
    body = json.dumps(push_body(export(pipeline, runs))).encode()
    assert LIMIT - 2 * 1024 * 1024 < len(body) < LIMIT
    body += b" " * (LIMIT - len(body))  # JSON may end in white space: exactly the limit
    answer = httpx.post(any_server.url + "/mlmd_push", content=body, timeout=120,
                        headers={**AUTH, "Content-Type": "application/json"})
    clean(answer)
    assert answer.status_code == 200, answer.text[:300]
    assert sorted(e["custom_properties"]["note"] for e in pull(any_server, pipeline).values()) == sorted(notes)
    over = httpx.post(any_server.url + "/mlmd_push", content=body + b" ", timeout=120,
                      headers={**AUTH, "Content-Type": "application/json"})
    assert over.status_code == 413, over.text[:300]


# -- PostgreSQL stopped ------------------------------------------------------------------------------------------


def _start_again(cluster: PostgresServer) -> None:
    """Start a stopped cluster on its port and data (its start() would make a new one)."""
    with open(cluster.log, "ab") as out:
        cluster.proc = subprocess.Popen(cluster.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        user=cluster.run_as)
    ready = [str(cluster.bindir / "pg_isready"), "-q", "-h", cluster.host, "-p", str(cluster.port)]
    deadline = time.monotonic() + 30
    while subprocess.run(ready).returncode != 0:
        assert time.monotonic() < deadline and cluster.proc.poll() is None, f"PostgreSQL did not start: {cluster.log}"
        time.sleep(0.1)


def _requests(client: httpx.Client, pipeline: str) -> Dict[str, Any]:
    """Every kind of request a user makes, through ``client``: name -> a function that sends it."""
    return {
        "health": lambda: client.get("/health"),
        "api page": lambda: client.get(f"/api/pipelines/{pipeline}/executions"),
        "html page": lambda: client.get(f"/pipelines/{pipeline}/executions", headers={"Accept": "text/html"}),
        "pipelines": lambda: client.get("/", headers={"Accept": "text/html"}),
        "push": lambda: client.post("/mlmd_push", json=push_body(export(unique("down")))),
        "pull": lambda: client.post("/mlmd_pull", json={"pipeline_name": pipeline}),
    }


def test_postgresql_stopped_answers_503_at_once_and_recovers_by_itself(postgres, tmp_path):
    """On a cluster of this module's own (tests/conftest.py's ``postgres``), stopped and started again."""
    with MetadataServer(tmp_path / "server", tokens=[TOKEN], postgres=postgres) as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        pipeline = unique("down")
        assert push(server, export(pipeline)).status_code == 200
        requests = _requests(client, pipeline)
        Server.stop(postgres)  # the process only: its data stays
        try:
            for round_ in range(2):  # the first requests find the pool's connections broken, the next ones not
                for name, send in requests.items():
                    started = time.monotonic()
                    answer = send()
                    took = time.monotonic() - started
                    clean(answer)
                    assert answer.status_code == 503, (name, answer.status_code, answer.text[:300])
                    assert "the database is unavailable" in answer.text, (name, answer.text[:300])
                    assert took < 2, (name, round_, took)
        finally:
            _start_again(postgres)
        for name, send in requests.items():  # the very first request after it is back succeeds
            answer = send()
            assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])


def test_an_existing_store_gets_the_indexes_that_take_long_values_at_start_up(postgres, tmp_path):
    """A store ML Metadata made (as every store before this change) is migrated when a server starts (by the
    first of its processes; the others find nothing left to do), keeps its records and then takes long values."""
    import psycopg

    pytest.importorskip("ml_metadata", reason="the oracle, ml-metadata, installs on Python <= 3.11 only")
    from cmf_core.metadata.ml_metadata_store import open_postgres

    config = PostgresConfig(host=postgres.host, port=postgres.port, user=postgres.USER, dbname="old")
    store = open_postgres(config.host, config.port, config.user, "old")  # ML Metadata's schema and indexes
    before = unique("before")
    merge_pipeline(store, export(before))  # logged by ML Metadata itself
    del store

    def indexes() -> List[str]:
        with psycopg.connect(host=config.host, port=config.port, user=config.user, dbname="old") as connection:
            return sorted(row[0] for row in connection.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname LIKE '%_property_string' "
                "OR indexname = 'idx_artifact_uri'"))

    assert not any("md5" in index for index in indexes())
    with MetadataServer(tmp_path / "server", tokens=[TOKEN], postgres=postgres, postgres_db="old") as server:
        fitted = indexes()
        assert len(fitted) == 4 and all("md5(" in index for index in fitted), fitted
        assert len(pull(server, before)) == 1
        run, note, pipeline = str(uuid.uuid4()), noise(20_000), unique("old")
        assert push(server, export(pipeline, [execution(run, custom={"note": note})])).status_code == 200
        assert pull(server, pipeline)[run]["custom_properties"]["note"] == note
