"""Probes of the server's door: every route against every way of not having a token, the login's ``next=``,
writes from another origin (a form and fetch in Chromium on another port of the same host, riding the login
cookie), and the headers and connections of the answers that refuse or fail.  All against real server processes."""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from pathlib import Path
from typing import Dict, Iterator, List, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from cmf_core.server.app import Settings, create_app
from cmf_core.server.store import ServerStore
from cmf_core.testing.metadata_server import MetadataServer
from cmf_core.testing.stand_in import Handler, StandIns, send
from tests.security.conftest import AUTH, TOKEN, export, push_body, unique

PUBLIC = {"/health", "/api/health", "/login", "/logout"}


def routes(tmp_path: Path) -> List[Tuple[str, str]]:
    """Every (method, path) the server answers, read from the app's own OpenAPI description so that a route
    added later is probed too (``/static`` and the public ones left out)."""
    store = ServerStore(sqlite=tmp_path / "mlmd")
    try:
        paths = create_app(Settings(store, tmp_path, tokens=frozenset({TOKEN}))).openapi()["paths"]
    finally:
        store.close()
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops if path not in PUBLIC)


def concrete(path: str, pipeline: str) -> str:
    return (path.replace("{name}", pipeline).replace("{execution_id}", "1").replace("{artifact_id}", "1")
            .replace("{path}", "x"))


@pytest.fixture(scope="module")
def pipeline(sqlite_server) -> str:
    name = unique("auth")
    assert requests.post(f"{sqlite_server.url}/mlmd_push", json=push_body(export(name)), headers=AUTH).ok
    return name


def assert_guarded(response: requests.Response) -> None:
    """A refusal carries the same security headers as every other answer."""
    assert "default-src 'self'" in response.headers.get("content-security-policy", "")
    assert response.headers.get("x-content-type-options") == "nosniff"


def test_every_route_refuses_every_way_in_without_a_valid_token(sqlite_server, pipeline, tmp_path):
    session = hmac.new(b"wrong-token", b"cmf-ui-session", hashlib.sha256).hexdigest()
    attempts: Dict[str, Dict] = {
        "none": {},
        "wrong token": {"headers": {"Authorization": "Bearer wrong-token"}},
        "token without scheme": {"headers": {"Authorization": TOKEN}},
        "basic auth": {"auth": ("cmf", TOKEN)},
        "forged cookie": {"cookies": {"cmf_session": session}},
        "token as cookie": {"cookies": {"cmf_session": TOKEN}},
        "token in query": {"params": {"token": TOKEN, "access_token": TOKEN}},
    }
    probed = routes(tmp_path)
    assert ("POST", "/mlmd_push") in probed and ("GET", "/pipelines/{name}/executions") in probed
    for method, path in probed:
        url = sqlite_server.url + concrete(path, pipeline)
        for what, extra in attempts.items():
            answer = requests.request(method, url, allow_redirects=False, timeout=30, **extra)
            assert answer.status_code == 401, (method, path, what, answer.status_code, answer.text[:200])
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert_guarded(answer)
        valid = requests.request(method, url, headers=AUTH, allow_redirects=False, timeout=30)
        assert valid.status_code not in (401, 403), (method, path, valid.status_code)


def test_a_browser_without_a_session_is_sent_to_the_login_form(sqlite_server, pipeline):
    page = f"/pipelines/{pipeline}/executions?sort=name"
    answer = requests.get(sqlite_server.url + page, headers={"Accept": "text/html"}, allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=%2Fpipelines%2F")
    assert_guarded(answer)


def test_signing_in_returns_to_the_page_asked_for(sqlite_server):
    name = unique("sweep#1?50%")  # '#', '?' and '%' decoded in the path would lead to another page
    assert requests.post(f"{sqlite_server.url}/mlmd_push", json=push_body(export(name)), headers=AUTH).ok
    page = f"/pipelines/{quote(name, safe='')}/executions?sort=stage"
    sent = requests.get(sqlite_server.url + page, headers={"Accept": "text/html"}, allow_redirects=False)
    next_ = parse_qs(urlsplit(sent.headers["location"]).query)["next"][0]
    back = login(sqlite_server.url, next_).headers["location"]
    assert back == page
    shown = requests.get(sqlite_server.url + back, headers={**AUTH, "Accept": "text/html"})
    assert shown.status_code == 200 and "<h1>Executions</h1>" in shown.text and name in shown.text


def login(url: str, next_: str) -> requests.Response:
    return requests.post(f"{url}/login", data={"token": TOKEN, "next": next_}, allow_redirects=False, timeout=30)


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example/",
                                    "/\t/evil.example", "/\n/evil.example", " //evil.example", "javascript:alert(1)",
                                    "/\r\nSet-Cookie: cmf_session=x", "evil.example", "\\\\evil.example", "", "/x\x7f"])
def test_login_never_sends_the_browser_to_another_host(sqlite_server, target):
    answer = login(sqlite_server.url, target)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert answer.headers["set-cookie"].count("cmf_session=") == 1
    form = requests.get(f"{sqlite_server.url}/login", params={"next": target})
    assert form.status_code == 200 and 'name="next" value="/"' in form.text


@pytest.mark.parametrize("target", ["/pipelines/p/executions?filter=lr%20%3E%200.1&sort=name", "/%2F%2Fevil",
                                    "/artifacts/3", "/pipelines/my pipeline/lineage"])
def test_login_keeps_a_path_of_this_server(sqlite_server, target):
    assert login(sqlite_server.url, target).headers["location"] == requests.utils.requote_uri(target)


def test_the_session_cookie_reads_but_never_writes(sqlite_server, pipeline):
    jar = login(sqlite_server.url, "/").cookies
    assert requests.get(f"{sqlite_server.url}/api/pipelines", cookies=jar).status_code == 200
    name = unique("cookie-write")
    writes = [("/mlmd_push", {"json": push_body(export(name))}), ("/api/mlmd_push", {"json": push_body(export(name))}),
              ("/api/sync", {"json": {"peer": None}}), ("/python-env", {"files": {"file": ("e.txt", b"x")}}),
              ("/mlmd_pull", {"json": {"pipeline_name": pipeline, "exec_uuid": None}})]
    for path, body in writes:
        answer = requests.post(sqlite_server.url + path, cookies=jar, timeout=30, **body)
        assert answer.status_code == 403 and "Bearer" in answer.json()["detail"], path
        assert_guarded(answer)
    assert name not in requests.get(f"{sqlite_server.url}/api/pipelines", headers=AUTH).text
    assert not (sqlite_server.data_dir / "env" / "e.txt").exists()


@pytest.mark.parametrize("headers", [{"Origin": "http://127.0.0.1:1"}, {"Origin": "null"},
                                     {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_a_write_from_another_origin_is_refused_even_with_the_token(sqlite_server, headers):
    name = unique("origin")
    answer = requests.post(f"{sqlite_server.url}/mlmd_push", json=push_body(export(name)),
                           headers={**AUTH, **headers}, timeout=30)
    assert answer.status_code == 403 and "another origin" in answer.json()["detail"]
    assert_guarded(answer)
    same = {"Origin": sqlite_server.url, "Sec-Fetch-Site": "same-origin"}
    assert requests.post(f"{sqlite_server.url}/mlmd_push", json=push_body(export(name)),
                         headers={**AUTH, **same}, timeout=30).status_code == 200


def test_a_push_must_be_declared_json(sqlite_server):
    name = unique("plain")
    body = json.dumps(push_body(export(name)))
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {**AUTH, **({"Content-Type": kind} if kind else {})}
        answer = requests.post(f"{sqlite_server.url}/mlmd_push", data=body.encode(), headers=headers, timeout=30)
        assert answer.status_code == 415 and "application/json" in answer.json()["detail"], kind
    assert name not in requests.get(f"{sqlite_server.url}/api/pipelines", headers=AUTH).text


# -- the same attack from a real browser ------------------------------------------------------------------

EVIL_PAGE = """<!doctype html><html><body>
<form id="push" method="POST" enctype="text/plain" action="{url}/mlmd_push">
<input type="hidden" name='{name}' value='{value}'></form>
<script>
fetch("{url}/api/sync", {{method: "POST", mode: "no-cors", credentials: "include",
                          headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}});
const form = new FormData();
form.append("file", new Blob(["stolen"]), "csrf-env.txt");
fetch("{url}/python-env", {{method: "POST", mode: "no-cors", credentials: "include", body: form}})
  .finally(() => document.getElementById("push").submit());
</script></body></html>"""


@pytest.fixture(scope="module")
def evil_site() -> Iterator[Dict[str, str]]:
    """A page on another port of 127.0.0.1 (the same site, another origin): what it serves is set per test."""
    pages: Dict[str, str] = {}

    def page(handler: Handler) -> None:
        body = pages.get(handler.subpath, "").encode()
        send(body, 200 if body else 404, Content_Type="text/html")(handler)

    with StandIns() as site:
        yield {"url": site.add(page), "pages": pages}


def test_a_page_on_another_port_cannot_push_with_the_login_cookie(sqlite_server, evil_site, browser):
    name = unique("csrf")
    body = push_body(export(name))
    wire = json.dumps(body)[:-1] + ', "pad": "'  # text/plain forms send name=value: the value closes the JSON
    evil_site["pages"]["/"] = EVIL_PAGE.format(url=sqlite_server.url, name=wire.replace("'", "&#39;"), value='"}')
    seen: List[Tuple[str, int]] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{sqlite_server.url}/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state()
        assert page.context.cookies()[0]["name"] == "cmf_session"
        page.on("response", lambda r: seen.append((r.url, r.status)))
        with page.expect_navigation(url=f"{sqlite_server.url}/mlmd_push"):
            page.goto(evil_site["url"] + "/")
    finally:
        context.close()
    assert (f"{sqlite_server.url}/mlmd_push", 403) in seen
    stored = requests.get(f"{sqlite_server.url}/api/pipelines", headers=AUTH).json()
    assert name not in json.dumps(stored)
    assert not (sqlite_server.data_dir / "env" / "csrf-env.txt").exists()
    # the same body, sent by a client with the token and no Origin, is a valid push: only where it came from differs
    assert requests.post(f"{sqlite_server.url}/mlmd_push", json=body, headers=AUTH).status_code == 200


# -- refusals and failures: their headers, their bodies, the connection after them -------------------------


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory) -> Iterator[MetadataServer]:
    """A server whose data directory holds a file where its ``env/`` folder should be: uploads fail (500)."""
    with MetadataServer(tmp_path_factory.mktemp("broken"), tokens=[TOKEN], max_body_mb=1) as server:
        (server.data_dir / "env").write_text("not a folder")
        yield server


def test_a_failure_is_a_clean_500_and_the_connection_lives_on(broken_server):
    with requests.Session() as client:
        client.headers.update(AUTH)
        failed = client.post(f"{broken_server.url}/python-env", files={"file": ("env.txt", b"numpy==2")})
        assert failed.status_code == 500
        detail = failed.json()["detail"]
        assert "incident" in detail and str(broken_server.data_dir) not in detail and "Error" not in detail
        assert_guarded(failed)
        for _ in range(3):  # the same keep-alive connection serves the next requests
            assert client.get(f"{broken_server.url}/api/pipelines").status_code == 200
    incident = detail.split("incident ")[1].split(";")[0]
    assert incident in broken_server.log.read_text()  # the operator finds the traceback by the id


def test_a_failure_shown_to_a_browser_is_a_page_without_internals(broken_server):
    raw = http.client.HTTPConnection("127.0.0.1", broken_server.port, timeout=30)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"e.txt\"\r\n\r\nx\r\n"
            f"--{boundary}--\r\n").encode()
    raw.request("POST", "/python-env", body, {**AUTH, "Accept": "text/html",
                                              "Content-Type": f"multipart/form-data; boundary={boundary}"})
    answer = raw.getresponse()
    text = answer.read().decode()
    assert answer.status == 500 and "<html" in text.lower() and "incident" in text
    assert str(broken_server.data_dir) not in text and "Traceback" not in text
    raw.request("GET", "/health")
    assert raw.getresponse().status == 200
    raw.close()


def test_the_413_carries_the_security_headers(broken_server):
    answer = requests.post(f"{broken_server.url}/mlmd_push", data=b"x" * (2 * 1024 * 1024), headers=AUTH)
    assert answer.status_code == 413
    assert_guarded(answer)


def test_an_upload_name_too_long_for_a_file_is_a_400(sqlite_server):
    for route in ("/python-env", "/label"):
        answer = requests.post(sqlite_server.url + route, files={"file": ("n" * 300 + ".txt", b"x")}, headers=AUTH)
        assert answer.status_code == 400 and "255" in answer.json()["detail"], route
        assert str(sqlite_server.data_dir) not in answer.text
    nested = "/".join(["d" * 200] * 6) + "/events.out"  # each part a valid file name, the whole too long
    answer = requests.post(f"{sqlite_server.url}/tensorboard", params={"pipeline_name": "tb"}, headers=AUTH,
                           files={"file": (nested, b"x")})
    assert answer.status_code == 400 and "1024 bytes" in answer.json()["detail"]


def test_a_signed_in_browser_can_sign_out_from_its_pages_only(sqlite_server, pipeline):
    jar = login(sqlite_server.url, "/").cookies
    page = requests.get(f"{sqlite_server.url}/pipelines/{pipeline}/executions", cookies=jar,
                        headers={"Accept": "text/html"}).text
    assert '<form class="signout" method="post" action="/logout">' in page
    foreign = requests.post(f"{sqlite_server.url}/logout", cookies=jar, allow_redirects=False,
                            headers={"Origin": "http://127.0.0.1:1"})
    assert foreign.status_code == 403  # another page cannot sign the user out either
    own = requests.post(f"{sqlite_server.url}/logout", cookies=jar, allow_redirects=False,
                        headers={"Origin": sqlite_server.url})
    assert own.status_code == 303 and own.headers["location"] == "/login"
    assert 'cmf_session=""' in own.headers["set-cookie"] and "Max-Age=0" in own.headers["set-cookie"]
