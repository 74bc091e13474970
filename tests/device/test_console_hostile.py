"""The console before sign-in, in-process (the real app and a real code store, driven
over ASGI as uvicorn drives it): whatever a stranger on the home network sends, the answer is a
4xx with the security headers, and nothing lands in the log as a traceback. A handler
that does fail answers 500, with the headers, logged once a minute."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.console.auth import ConsoleAuth
from device.console.server import COOKIE, SECURITY_HEADERS, Console, ConsoleParts
from foundation.clock import FakeClock

HOST = "127.0.0.1"
PORT = 8443
BASE = f"https://{HOST}:{PORT}"
ORIGIN = {"Origin": BASE}
T0 = 1_800_000_000_000


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class TestClient:
    """Sends one request at a time through the ASGI app as uvicorn would (a decoded
    path, raw headers, the body in one message), keeping the session cookie. Starlette's
    own TestClient needs an HTTP client library the project does not otherwise use."""

    __test__ = False

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie: str | None = None

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes = b"",
        data: dict[str, str] | None = None,
    ) -> Reply:
        raw_path, _, query = quote(target, safe="/%:@!$&'()*+,;=-._~?").partition("?")
        sent = {"host": f"{HOST}:{PORT}"}
        if data is not None:
            content = urlencode(data).encode()
            sent["content-type"] = "application/x-www-form-urlencoded"
        if content:
            sent["content-length"] = str(len(content))
        if self.cookie:
            sent["cookie"] = self.cookie
        sent.update({k.lower(): v for k, v in (headers or {}).items()})
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()],
            "client": ("192.168.1.50", 50000),
            "server": (HOST, PORT),
            "state": {},
        }
        messages = [{"type": "http.request", "body": content, "more_body": False}]
        out: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in out if m["type"] == "http.response.start")
        got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
        if "set-cookie" in got and got["set-cookie"].startswith(COOKIE):
            self.cookie = got["set-cookie"].split(";", 1)[0]
        body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
        return Reply(start["status"], got, body)

    def get(self, target: str, **options: Any) -> Reply:
        return self.request("GET", target, **options)

    def post(self, target: str, **options: Any) -> Reply:
        return self.request("POST", target, **options)


class Untouchable:
    """The request flow, buffer, shares...: nothing before sign-in may reach them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} was reached without a session")


@pytest.fixture
def auth(tmp_path: Path) -> Any:
    store = ConsoleAuth.open(tmp_path / "console.db")
    yield store
    store.close()


def console_parts(auth: ConsoleAuth, **given: Any) -> ConsoleParts:
    """The console's parts: `given` ones, and nothing that may be touched otherwise."""
    nothing: Any = Untouchable()
    parts: dict[str, Any] = {
        "flow": nothing,
        "preview": nothing,
        "shares": nothing,
        "commands": nothing,
        "audit_path": Path("/nonexistent"),
        "audit_key": nothing,
        "device_lat": 0.0,
        "device_lon": 0.0,
        "clock": FakeClock(wall_ms=T0),
    }
    return ConsoleParts(auth=auth, **(parts | given))


@pytest.fixture
def client(auth: ConsoleAuth) -> TestClient:
    console = Console(console_parts(auth), hosts=frozenset({HOST}), port=PORT)
    return TestClient(console.app)


def _checked(reply: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:200])
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name.lower()) == value, name
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DIGITS_4301 = "9" * 4301
BATTERY: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"/api/requests/x/thumbnails/{DIGITS_4301}", {}),
    ("GET", "/api/requests/x/thumbnails/\u0662\u0663", {}),  # Arabic-Indic digits
    ("GET", "/api/requests/" + "r" * 8000 + "/thumbnails", {}),
    ("GET", "/api/pending?start=%ff&end=" + DIGITS_4301, {}),
    ("GET", "/%ff%fe/%c0%af", {}),
    ("GET", "/static/../../../etc/passwd", {}),
    ("GET", "/static/" + "a/" * 500, {}),
    ("GET", "/api/pending", {"headers": {"Cookie": f"{COOKIE}=" + "x" * 5000}}),
    ("GET", "/api/pending", {"headers": {"Cookie": "\x01\x7f=;;;=="}}),
    ("GET", "/api/pending", {"headers": {"Host": "["}}),
    ("GET", "/api/pending", {"headers": {"Host": "127.0.0.1:99999999999999999999"}}),
    ("GET", "/api/pending", {"headers": {"Host": ""}}),
    ("GET", "/", {"headers": {"Host": "evil.example"}}),
    ("HEAD", "/api/audit", {}),
    ("PUT", "/login", {}),
    ("DELETE", "/api/pending", {}),
    ("OPTIONS", "*", {}),
    ("TRACE", "/", {}),
    ("PATCH", "/api/requests-paused", {}),
    ("PROPFIND", "/", {}),
    ("POST", "/login", {"content": b"a=1&b=2&c=3&d=4&e=5", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code=1&code=2", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code=12345678&x=1", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code=\xff\xfe", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"&&&&&&", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code", "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code=" + b"1" * 20000, "headers": ORIGIN}),
    ("POST", "/login", {"content": b"code=%ff%00%1b", "headers": ORIGIN}),
    (
        "POST",
        "/login",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="code"\r\n\r\n1\r\n--b--',
            "headers": {**ORIGIN, "Content-Type": "multipart/form-data; boundary=b"},
        },
    ),
    ("POST", "/login", {"content": b"code=1", "headers": {"Origin": "https://["}}),
    ("POST", "/login", {"content": b"code=1", "headers": {"Origin": "https://127.0.0.1:x"}}),
    ("POST", "/api/requests/x/decision", {"content": b"\xff" * 100, "headers": ORIGIN}),
    ("POST", "/api/requests-paused", {"content": b"{" * 10000, "headers": ORIGIN}),
    ("GET", "/static/style.css", {"headers": {"Range": "bytes=99999999999999999999999-"}}),
    ("GET", "/static/style.css", {"headers": {"Range": "bytes=5-1,abc"}}),
    ("GET", "/static/style.css", {"headers": {"Range": "pages=1-2"}}),
]


@pytest.mark.parametrize(("method", "path", "options"), BATTERY)
def test_the_pre_sign_in_battery_answers_4xx_with_the_headers(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    options: dict[str, Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = client.request(method, path, **options)
    _checked(reply, caplog)


def test_a_malformed_sign_in_form_is_400_and_not_counted_as_a_wrong_code(
    client: TestClient, auth: ConsoleAuth, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(10):
        reply = client.post("/login", content=b"a=1&b=2&c=3&d=4&e=5", headers=ORIGIN)
        assert reply.status_code == 400
        _checked(reply, caplog)
    code, _ = auth.new_code(T0)
    assert client.post("/login", data={"code": code}, headers=ORIGIN).status_code == 303


def test_a_huge_thumbnail_time_is_404_once_signed_in(
    client: TestClient, auth: ConsoleAuth, caplog: pytest.LogCaptureFixture
) -> None:
    code, _ = auth.new_code(T0)
    assert client.post("/login", data={"code": code}, headers=ORIGIN).status_code == 303
    for at in (DIGITS_4301, "1" * 16, "\u0662\u0663", "-5", "+5", " 5"):
        reply = client.get(f"/api/requests/x/thumbnails/{at}")
        assert reply.status_code == 404, at
        _checked(reply, caplog)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300))
def test_any_sign_in_body_is_a_4xx(client: TestClient, body: bytes) -> None:
    reply = client.post("/login", content=body, headers=ORIGIN)
    assert reply.status_code in (400, 401, 429)
    assert reply.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=60))
def test_any_path_is_a_4xx_before_sign_in(client: TestClient, path: str) -> None:
    reply = client.get("/" + path.lstrip("/"))
    if reply.status_code != 200:  # the sign-in page and its stylesheet are public
        assert 400 <= reply.status_code < 500
    assert reply.headers["x-frame-options"] == "DENY"


def test_a_failing_handler_answers_500_with_the_headers_and_logs_once(
    client: TestClient, auth: ConsoleAuth, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug \x1b[2J")

    monkeypatch.setattr(auth, "sign_in", broken)
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        reply = client.post("/login", data={"code": "1"}, headers=ORIGIN)
        assert reply.status_code == 500
        assert reply.json() == {"error": "internal error (see the daemon's log)"}
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers.get(name.lower()) == value, name
        assert "a bug" not in reply.text
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) <= 1  # once a minute (none if an earlier test took this minute's)


def test_at_the_cap_the_heaviest_sources_oldest_idle_connection_makes_room() -> None:
    import socket as socketlib

    from device.console.listener import Slot, to_evict

    sock: Any = socketlib.socket
    flood = [Slot(sock, "10.0.0.66", opened_at=float(i)) for i in range(10)]
    owner = Slot(sock, "10.0.0.2", opened_at=-5.0)  # the oldest of all
    assert to_evict([owner, *flood]) is flood[0]
    flood[0].busy = True  # answering a request: never closed for another
    flood[1].closing = True  # already on its way out
    assert to_evict([owner, *flood]) is flood[2]
    for slot in flood:
        slot.busy = True
    assert to_evict([owner, *flood]) is owner  # the only one idle
    owner.busy = True
    assert to_evict([owner, *flood]) is None  # all busy: the newcomer is reset
