"""Probes of the read path's query parameters: filters, sorts, free text, paging and the lineage and compare
parameters, filled with SQL injection attempts, quotes, comments, LIKE wildcards, backslashes, NUL, unicode,
very long and deeply nested expressions, unknown columns and every type of value against every operator.

Every answer must be a 200 with the right rows or a 400 with a reason -- never a 5xx, SQL text or a traceback --
through ``/api`` and through the HTML pages, and SQLite and PostgreSQL must answer the same status (and rows,
in the same order) for the same input.  Afterwards the tables still hold every row.  Sorting and matching text is
also checked on a PostgreSQL database whose collation is ICU's en-US, where the locale's rules ('a' < 'B',
punctuation ignored) used to order rows unlike SQLite.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest

from cmf_core.testing.metadata_server import MetadataServer
from tests.security.conftest import AUTH, TOKEN, export, push_body, unique

HTML = {**AUTH, "Accept": "text/html"}
#: What an answer must never show: database errors, SQL of ours, tracebacks.
LEAKS = ("Traceback", "psycopg", "sqlite3", "LINE 1", "HINT:", "executionproperty", "ESCAPE", "coalesce(",
         "Error:", "operator does not exist", 'File "')
DROP = "'; DROP TABLE artifact; --"
#: The probe pipeline's executions: (key, custom properties).  ``lr`` mixes numbers and text, ``opt`` and
#: ``note`` hold quotes, wildcards, backslashes, unicode and letters of both cases.
RUNS = [
    ("e1", {"lr": 0.01, "opt": "adam", "flag": True, "note": "100% sure_thing"}),
    ("e2", {"lr": 0.1, "opt": DROP, "flag": False, "note": "back\\slash"}),
    ("e3", {"lr": "high", "opt": "Ünï-Ø É", "note": "a_b"}),
    ("e4", {"lr": 1, "opt": "b", "note": "B"}),
    ("e5", {"opt": "a"}),
]
ARTIFACTS = ["data/100%_ok.csv", "data/O'Brien.csv", "data/Ünï.csv", "data/plain.csv", "data/x_y.csv"]


def md5_of(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def probe_export(pipeline: str) -> Dict[str, Any]:
    """Five executions in two stages, each writing one artifact (named as ARTIFACTS) with uuid ``<key>-...``."""
    executions = []
    for (key, custom), path in zip(RUNS, ARTIFACTS):
        name = f"{path}:{md5_of(path)}"
        executions.append({"type": "train", "name": "", "properties": {
            "Execution_uuid": f"{key}-{uuid.uuid4()}", "Context_Type": "train"},
            "custom_properties": custom, "events": [{"type": 4, "artifact": {
                "name": name, "type": "Dataset", "uri": md5_of(path), "properties": {}, "custom_properties": {}}}]})
    payload = export(pipeline, executions[:3], stage="train")
    payload["Pipeline"][0]["stages"].append({"name": f"{pipeline}/eval", "custom_properties": {},
                                             "executions": executions[3:]})
    return payload


@pytest.fixture(scope="module")
def stores(request) -> Dict[str, Tuple[MetadataServer, str]]:
    """Each probe server (PostgreSQL when installed) with the probe pipeline pushed: {store: (server, pipeline)}."""
    servers = {"sqlite": request.getfixturevalue("sqlite_server")}
    try:
        servers["postgresql"] = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        pass
    pipeline = unique("inject")
    body = push_body(probe_export(pipeline))
    for server in servers.values():
        answer = httpx.post(server.url + "/mlmd_push", json=body, headers=AUTH, timeout=60)
        assert answer.status_code == 200, answer.text
    return {store: (server, pipeline) for store, server in servers.items()}


@pytest.fixture(scope="module")
def icu_server(tmp_path_factory, pg_cluster) -> Iterator[MetadataServer]:
    """``cmf server`` on a PostgreSQL database collated by ICU's en-US (the rules of most real deployments)."""
    import psycopg

    with psycopg.connect(host=pg_cluster.host, port=pg_cluster.port, user=pg_cluster.USER, dbname="postgres",
                         autocommit=True) as connection:
        connection.execute("CREATE DATABASE probe_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                           "LOCALE 'C.UTF-8'")
    with MetadataServer(tmp_path_factory.mktemp("probe-icu"), tokens=[TOKEN], postgres=pg_cluster,
                        postgres_db="probe_icu") as server:
        yield server


_CLIENTS: Dict[str, httpx.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def get(server: MetadataServer, path: str, params: Any = None, html: bool = False) -> httpx.Response:
    """GET with the probe token (as a browser asking for a page when ``html``), on one kept-alive client."""
    if server.url not in _CLIENTS:
        _CLIENTS[server.url] = httpx.Client(base_url=server.url, timeout=60)
    return _CLIENTS[server.url].get(path, params=params, headers=HTML if html else AUTH)


def keys(answer: httpx.Response) -> List[str]:
    """The probe keys (e1...) of the executions of a list answer, in its order."""
    return [item["uuid"].split("-")[0] for item in answer.json()["items"]]


def judge(answer: httpx.Response, what: str) -> Optional[str]:
    """What is wrong with an answer, or None: it must be 200 or a 400 with a reason, and leak nothing."""
    if answer.status_code not in (200, 400):
        return f"{what}: {answer.status_code} {answer.text[:200]}"
    leaked = [marker for marker in LEAKS if marker in answer.text]
    if leaked:
        return f"{what}: the answer shows {leaked}: {answer.text[:300]}"
    if answer.status_code == 400 and "text/html" not in answer.headers.get("content-type", ""):
        if not str(answer.json().get("detail", "")).strip():
            return f"{what}: a 400 without a reason"
    return None


def probe(stores: Dict[str, Tuple[MetadataServer, str]], path: str, cases: List[Dict[str, Any]],
          pages: bool = True) -> Dict[str, Dict[int, httpx.Response]]:
    """Send every query of ``cases`` to ``path`` (``{p}``: the pipeline) of each store, as JSON (and as a page
    with ``pages``); assert every answer is sound and that the stores agree on its status.
    {store: {case index: JSON answer}}."""
    problems: List[Optional[str]] = []
    answers: Dict[str, Dict[int, httpx.Response]] = {store: {} for store in stores}

    def ask(store: str) -> None:  # the stores are asked at the same time: they are separate processes
        server, pipeline = stores[store]
        for index, params in enumerate(cases):
            for html in (False, True) if pages else (False,):
                answer = get(server, ("" if html else "/api") + path.format(p=pipeline), params, html)
                problems.append(judge(answer, f"{store} {'page' if html else 'api'} {params!r}"))
                if not html:
                    answers[store][index] = answer

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(ask, stores))
    for index, params in enumerate(cases):
        statuses = {store: answers[store][index].status_code for store in answers}
        if len(set(statuses.values())) > 1:
            problems.append(f"{params!r}: the stores disagree: {statuses}")
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
    return answers


#: Injection attempts, refused by the parser or compared as plain values; sizes and depths at and over the limits.
FILTERS = [
    "1 OR 1=1", "lr = 1 OR 1=1", "lr = '1 OR 1=1'", f'opt = "{DROP}"', "opt = x; DROP TABLE artifact", "id = 1 --",
    "id = 1 /* c */", "opt = ''", "opt = '''", 'opt = "\\""', "`opt` = adam", "`x` = 1", "`` = 1", "opt =",
    "= 1", "(", ")", "((opt = a)", "opt = a)", "not", "and", "opt = a and", "opt ~ 'a' or or", "opt <> a",
    "opt === a", "opt = a = b", "opt;", "opt = a\\", "opt = 'a\\", "a.b.c = 1", "prop.x' = 1", "ünï = 1",
    "lr = 'ü'", "opt ~ '\U0001F600'", "opt = \u202e", "lr = \\x00", "opt ~ '%'", "opt ~ '_'", "note ~ '\\\\'",
    "opt = '\x00'", "x" * 2001, " or ".join(["lr > 0"] * 280), "opt = '" + "a" * 1990 + "'",
    "(" * 32 + "lr > 0" + ")" * 32, "(" * 40 + "lr > 0" + ")" * 40, "not " * 31 + "lr > 0", "not " * 40 + "lr > 0",
]

#: Every kind of value with every operator, on numbers, text, booleans, builtin columns, metrics and properties.
TYPED = [*[f"{column} {op} {value}" for column in ("id", "stage", "uuid", "lr", "flag", "metric.m")
           for op in ("=", "!=", ">=", "~") for value in ("-2.5e3", "1e400", "FALSE", "'text'")],
         *[f"{column} < {value}" for column in ("id", "type", "lr", "prop.Context_Type")
           for value in ("1", "99999999999999999999999", "true", "word", "'1'")]]


def test_hostile_filters_answer_200_or_400_alike_on_both_stores(stores):
    probe(stores, "/pipelines/{p}/executions", [{"filter": f} for f in FILTERS])


def test_every_type_of_value_with_every_operator_answers_alike_on_both_stores(stores):
    probe(stores, "/pipelines/{p}/executions", [{"filter": f} for f in TYPED], pages=False)


def test_hostile_artifact_filters_answer_200_or_400_alike_on_both_stores(stores):
    probe(stores, "/pipelines/{p}/artifacts", [{"filter": f} for f in FILTERS[:30]] + [
        {"filter": f} for f in ("name ~ '%'", "name ~ '_'", "name = \"data/O'Brien.csv\"", "uri = 1", "id = true",
                                "name < 'B'", "type ~ %", "custom.x = true", "created > true", "uri ~ 1e400")])


@pytest.mark.parametrize("expression, expected", [
    (f'opt = "{DROP}"', ["e2"]),  # the injection is a value like any other
    ("lr = '1 OR 1=1'", []),
    ("note ~ '%'", ["e1"]),  # LIKE wildcards are literal
    ("note ~ '_'", ["e1", "e3"]),
    ("note ~ '\\\\'", ["e2"]),  # a backslash
    ("opt ~ 'É'", ["e3"]),  # unicode matches itself...
    ("opt ~ 'ünï'", []),  # ...and only ASCII letters ignore case, on both stores
    ("opt ~ ADA", ["e1"]),
    ("lr > 0.05", ["e2", "e4"]),  # numbers compare as numbers; the text 'high' is not one
    ("lr = high", ["e3"]),
    ("flag = true", ["e1"]),
    ("flag != true", ["e2"]),
    ("stage = eval", ["e4", "e5"]),
    ("not (stage = eval) and lr < 1", ["e1", "e2"]),
    ("stage = 1", []),  # a number against a text column: the text as typed
])
def test_filters_find_the_right_rows_on_both_stores(stores, expression, expected):
    for store, (server, pipeline) in stores.items():
        answer = get(server, f"/api/pipelines/{pipeline}/executions", {"filter": expression})
        assert answer.status_code == 200, (store, answer.text)
        assert keys(answer) == expected, (store, expression)


@pytest.mark.parametrize("expression", ["id = true", "created != false", "id = 'x'", "id < word", "flag > true",
                                        "flag ~ true"])  # ~ looks into text; a boolean is not text
def test_a_value_of_the_wrong_type_is_the_same_400_on_both_stores(stores, expression):
    details = set()
    for store, (server, pipeline) in stores.items():
        answer = get(server, f"/api/pipelines/{pipeline}/executions", {"filter": expression})
        assert answer.status_code == 400, (store, answer.text)
        details.add(answer.json()["detail"])
    assert len(details) == 1, details
    assert expression.split()[0] in details.pop()  # the reason names the column


def test_hostile_sorts_pages_and_searches_answer_200_or_400_alike(stores):
    cases = [{"sort": s} for s in ("id; DROP TABLE artifact", "param.lr; --", "`id`", "nope", "param.nope",
                                   "prop.Execution_uuid", "metric.m", "", "ünï", "id\\", "param.")]
    cases += [{"order": o} for o in ("sideways", "DESC", "asc; --", "", "desc")]
    cases += [{"page": v} for v in ("-1", "0", "abc", "1e3", "99999999999999999999", "1000000000", "2")]
    cases += [{"size": v} for v in ("-5", "0", "501", "10**9", "1.5", "500", "")]
    cases += [{"q": v} for v in (DROP, "%", "_", "\\", "'", '"', "ünï", "x" * 5000, "1 OR 1=1", "--", "/*")]
    cases += [{"stage": v} for v in (DROP, "eval", "x/../eval", "%")] + [{"type": v} for v in (DROP, "Dataset", "%")]
    cases += [{"q": "x", "filter": "lr > 0", "sort": "param.opt", "order": "desc", "page": "1", "size": "2"}]
    probe(stores, "/pipelines/{p}/executions", cases)
    probe(stores, "/pipelines/{p}/artifacts", cases)


def test_free_text_search_treats_wildcards_and_quotes_as_text(stores):
    for store, (server, pipeline) in stores.items():
        found = {q: keys(get(server, f"/api/pipelines/{pipeline}/executions", {"q": q}))
                 for q in ("%", "_", "'; DROP", "\\")}
        assert found == {"%": ["e1"], "_": ["e1", "e3"], "'; DROP": ["e2"], "\\": ["e2"]}, store
        names = [a["name"].split(":")[0] for a in get(server, f"/api/pipelines/{pipeline}/artifacts",
                                                      {"q": "'"}).json()["items"]]
        assert names == ["data/O'Brien.csv"], store


def test_hostile_lineage_and_compare_parameters_never_fail_the_server(stores):
    """Their numbers are typed by the route (a malformed one is FastAPI's 422 on /api): never a 5xx or a leak."""
    problems = []
    for store, (server, pipeline) in stores.items():
        for params in ({"view": "sideways"}, {"view": DROP}, {"hops": "-1"}, {"hops": "abc"}, {"hops": "11"},
                       {"hops": "99999999999999999999"}, {"focus": "artifact:1 OR 1=1"}, {"focus": DROP},
                       {"focus": "execution:99999999999999999999"}, {"focus": "artifact:1", "expand": DROP},
                       {"focus": "artifact:-1"}):
            for prefix in ("/api", ""):
                answer = get(server, f"{prefix}/pipelines/{pipeline}/lineage", params, html=not prefix)
                if answer.status_code >= 500 or any(marker in answer.text for marker in LEAKS):
                    problems.append(f"{store} {prefix} lineage {params}: {answer.status_code} {answer.text[:200]}")
        for ids in ("1;DROP TABLE artifact", "-1", "99999999999999999999,1", "1,,2", "x", "%", ",".join(["1"] * 30)):
            for prefix in ("/api", ""):
                answer = get(server, f"{prefix}/pipelines/{pipeline}/compare", {"ids": ids}, html=not prefix)
                if answer.status_code not in (200, 400, 404) or any(marker in answer.text for marker in LEAKS):
                    problems.append(f"{store} {prefix} compare {ids!r}: {answer.status_code} {answer.text[:200]}")
    assert not problems, "\n".join(problems)


def test_the_tables_still_hold_every_row_after_the_probes(stores):
    for store, (server, pipeline) in stores.items():
        assert get(server, f"/api/pipelines/{pipeline}/executions", {"size": 500}).json()["total"] == len(RUNS)
        assert get(server, f"/api/pipelines/{pipeline}/artifacts", {"size": 500}).json()["total"] == len(ARTIFACTS)
        pulled = httpx.post(server.url + "/mlmd_pull", json={"pipeline_name": pipeline}, headers=AUTH, timeout=60)
        assert pulled.status_code == 200, (store, pulled.text)
        stages = json.loads(pulled.text)["Pipeline"][0]["stages"]
        assert sorted(e["custom_properties"].get("opt") for s in stages for e in s["executions"]) == sorted(
            custom["opt"] for _, custom in RUNS)


#: column -> the probe executions in ascending and descending order.  Numbers come before text, and rows without
#: a value last, either way; text goes by UTF-8 bytes, as SQLite compares it; ties by id in the sort's direction.
SORTS = {
    "param.lr": (["e1", "e2", "e4", "e3", "e5"], ["e4", "e2", "e1", "e3", "e5"]),
    "param.opt": (["e2", "e5", "e1", "e4", "e3"], ["e3", "e4", "e1", "e5", "e2"]),  # ' < a < adam < b < Ü
    "param.note": (["e1", "e4", "e3", "e2", "e5"], ["e2", "e3", "e4", "e1", "e5"]),  # 100% < B < a_b < back
    "stage": (["e4", "e5", "e1", "e2", "e3"], ["e3", "e2", "e1", "e5", "e4"]),  # eval < train
}


@pytest.fixture(scope="module")
def every_store(stores, icu_server) -> Dict[str, Tuple[MetadataServer, str]]:
    """The probe stores and the ICU-collated one, each with the probe pipeline."""
    pipeline = unique("inject")
    answer = httpx.post(icu_server.url + "/mlmd_push", json=push_body(probe_export(pipeline)), headers=AUTH,
                        timeout=60)
    assert answer.status_code == 200, answer.text
    return {**stores, "postgresql (ICU en-US)": (icu_server, pipeline)}


@pytest.mark.parametrize("column", sorted(SORTS))
def test_sorts_agree_on_every_store_and_collation(every_store, column):
    for store, (server, pipeline) in every_store.items():
        for order, wanted in zip(("asc", "desc"), SORTS[column]):
            found = keys(get(server, f"/api/pipelines/{pipeline}/executions", {"sort": column, "order": order}))
            assert found == wanted, (store, column, order)


def test_text_compares_by_bytes_on_every_store_and_collation(every_store):
    for store, (server, pipeline) in every_store.items():
        found = keys(get(server, f"/api/pipelines/{pipeline}/executions", {"filter": "note < 'a'"}))
        assert found == ["e1", "e4"], store  # '100%' and 'B' sort before 'a'; under en-US 'B' does not
