"""Stand-in HTTP servers for tests: small fakes of a peer, a metadata server or a web page, in a thread of the test.

A test that needs a server behaving in one particular way (often a hostile one: slow, too large, malformed) adds a
*stand-in* to a :class:`StandIns`: a path prefix ``/<key>`` of its own and an *answer*, a function given the
request handler that writes the response.  Many stand-ins share one ``ThreadingHTTPServer`` on a free loopback
port, so a module starts one and each test adds the stand-ins it needs::

    with StandIns() as stand_ins:
        url = stand_ins.add(send_json({"status": "success"}))   # http://127.0.0.1:PORT/<key>
        ...                                                       # the code under test asks url + "/mlmd_push"
        [request] = stand_ins.requests(url)                       # method, path after the prefix, headers, body

GET and POST are both handed to the answer, with the request body already read (``handler.body``) and the path
after the prefix in ``handler.subpath``.  An ``OSError`` while answering is swallowed: the client hung up, which is
what a deadline or a size limit of the code under test does.  :func:`send` and :func:`send_json` build the common
answers; anything more particular (a delay, a dropped connection, answers in turn) is a closure of the test.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Answer", "Asked", "Handler", "StandIns", "send", "send_json"]


@dataclass(frozen=True)
class Asked:
    """One request a stand-in received: ``path`` is what follows its prefix (``/mlmd_pull``, ``/``, ``?q=1``)."""

    method: str
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Handler(BaseHTTPRequestHandler):
    """``GET|POST /<key>...``: the body read into :attr:`body`, recorded, then answered by the stand-in ``key``."""

    stand_ins: "StandIns"
    body: bytes = b""
    subpath: str = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch()

    def _dispatch(self) -> None:
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = re.split(r"[/?#]", self.path[1:], maxsplit=1)[0]
        self.subpath = self.path[1 + len(key):]
        try:
            answer = self.stand_ins.record(key, Asked(self.command, self.subpath, self.headers, self.body))
            if answer is None:
                self.send_error(404, f"no stand-in {key!r}")
            else:
                answer(self)
        except OSError:
            pass  # the client hung up on us: what a deadline or a limit does

    def log_message(self, *args: Any) -> None:
        pass


Answer = Callable[[Handler], None]


class StandIns:
    """Stand-in servers on one loopback port, served by a daemon thread from construction until :meth:`close`
    (or the end of a ``with`` block): :meth:`add` gives the base URL of a new one."""

    def __init__(self) -> None:
        self.answers: Dict[str, Answer] = {}
        self.asked: Dict[str, threading.Event] = {}
        self.received: Dict[str, List[Asked]] = {}
        self._lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Handler,), {"stand_ins": self}))
        self.http.daemon_threads = True  # an answer still trickling does not hold up close()
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"

    def add(self, answer: Answer) -> str:
        """A new stand-in answering every request under its URL with ``answer``: that URL (no trailing ``/``)."""
        key = uuid.uuid4().hex[:8]
        with self._lock:
            self.answers[key], self.asked[key], self.received[key] = answer, threading.Event(), []
        return f"{self.base}/{key}"

    def record(self, key: str, asked: Asked) -> Optional[Answer]:
        """Note a request for the stand-in ``key``: its answer (None when there is no such stand-in)."""
        with self._lock:
            if key not in self.answers:
                return None
            self.received[key].append(asked)
        self.asked[key].set()
        return self.answers[key]

    def _key(self, url: str) -> str:
        return url.rsplit("/", 1)[1]

    def was_asked(self, url: str) -> threading.Event:
        """Set once the stand-in at ``url`` received its first request."""
        return self.asked[self._key(url)]

    def requests(self, url: str) -> List[Asked]:
        """The requests the stand-in at ``url`` received so far, in order."""
        with self._lock:
            return list(self.received[self._key(url)])

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join()

    def __enter__(self) -> "StandIns":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def send(body: bytes, status: int = 200, **headers: str) -> Answer:
    """An answer of ``body``: JSON with its Content-Length unless ``headers`` say otherwise (``Content_Type`` for
    ``Content-Type``: underscores become dashes)."""
    def answer(handler: Handler) -> None:
        handler.send_response(status)
        fields = {"Content-Type": "application/json", "Content-Length": str(len(body)),
                  **{k.replace("_", "-"): v for k, v in headers.items()}}
        for name, value in fields.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def send_json(payload: Any, status: int = 200) -> Answer:
    """An answer of ``payload`` as JSON."""
    return send(json.dumps(payload).encode(), status)
