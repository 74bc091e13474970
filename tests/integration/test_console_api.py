"""The console's HTTPS API against the real daemon: what it refuses (no session, a
reused or expired code, the lockout, a forged Origin, a revoked cookie, plain HTTP,
clips outside the request's window) and that nothing it holds goes out without a
session."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from collections.abc import Iterator

import pytest
import requests

from foundation.times import Window, format_time
from tests.integration.console_kit import (
    ConsoleHttp,
    console_code,
    cworld,  # noqa: F401 - a fixture
    publish_pending,
    recent_window,
    signed_in,
    trusting_session,
)

pytestmark = pytest.mark.xdist_group("console")

API_GETS = [
    "/",
    "/api/pending",
    "/api/requests/{id}",
    "/api/requests/{id}/footage",
    "/api/requests/{id}/thumbnails",
    "/api/requests/{id}/thumbnails/{t}",
    "/api/requests/{id}/clip?start={s}&end={e}",
    "/api/requests/{id}/timeline",
    "/api/requests/{id}/play?start={s}&end={e}",
    "/api/requests/{id}/video/{t}/{t}/index.m3u8",
    "/api/requests/{id}/video/{t}/{t}/init-0.mp4",
    "/api/requests/{id}/video/{t}/{t}/0.m4s",
    "/api/shares",
    "/api/audit",
    "/api/requests-paused",
    "/api/nothing-here",
]
API_POSTS = [
    "/api/requests/{id}/decision",
    "/api/shares/{id}/cancel",
    "/api/shares/{id}/retry",
    "/api/requests-paused",
    "/logout",
]


def _paths(paths: list[str], rfa_id: str, window: Window) -> list[str]:
    s, e = format_time(window.start_ms), format_time(window.end_ms)
    return [p.format(id=rfa_id, t=window.start_ms, s=s, e=e) for p in paths]


def test_every_path_refuses_without_a_session_and_sends_nothing(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window, description="SECRET-DESCRIPTION")
    anonymous = ConsoleHttp(cworld)
    for path in _paths(API_GETS, rfa_id, window):
        reply = anonymous.get(path)
        assert reply.status_code == 401, path
        assert b"SECRET-DESCRIPTION" not in reply.content and rfa_id.encode() not in reply.content
        assert not reply.headers.get("content-type", "").startswith(("video", "image"))
    for path in _paths(API_POSTS, rfa_id, window):
        reply = anonymous.post(path, json={"decision": "approve", "paused": True})
        assert reply.status_code == 401, path
    # and nothing changed
    assert rfa_id in cworld.pending_ids()
    client = signed_in(cworld)
    assert client.get("/api/requests-paused").json() == {"paused": False}
    # the sign-in page and its stylesheet are the exceptions
    assert anonymous.get("/login").status_code == 200
    assert anonymous.get("/static/style.css").status_code == 200


def test_a_code_signs_in_once_and_the_session_answers(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    info = console_code(cworld)
    assert set(info) == {"code", "url", "fingerprint", "ca_fingerprint", "ca_url", "expires_at"}
    client = ConsoleHttp(cworld)
    reply = client.sign_in(info["code"])
    assert reply.status_code == 303
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=2592000" in cookie
    pending = client.get("/api/pending").json()
    entry = next(r for r in pending["requests"] if r["id"] == rfa_id)
    assert {"id", "agency_id", "case_number", "window", "decide_by"} <= set(entry)
    assert entry["agency_id"] == "sfpd"
    # the same code again, from another client: refused
    again = ConsoleHttp(cworld).sign_in(info["code"])
    assert again.status_code == 401 and "already used" in again.text
    csp = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def _insecure_context() -> ssl.SSLContext:
    """A TLS client that takes whatever certificate it is shown (the tests look at it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.contextmanager
def _unverified_tls(port: int) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _insecure_context().wrap_socket(raw) as tls,
    ):
        yield tls


def test_the_fingerprint_is_the_sha256_of_the_certificate_served(cworld) -> None:  # noqa: F811
    import hashlib

    info = console_code(cworld)
    port = int(info["url"].rsplit(":", 1)[1].strip("/"))
    with _unverified_tls(port) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None and hashlib.sha256(der).hexdigest() == info["fingerprint"]
    status = json.loads(cworld.daemon.ctl("status", "--json").stdout)
    assert status["console"]["fingerprint"] == info["fingerprint"]
    assert status["console"]["ca_fingerprint"] == info["ca_fingerprint"]


def test_plain_http_on_the_port_gets_nothing(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    publish_pending(cworld, window, description="SECRET-DESCRIPTION")
    url = console_code(cworld)["url"]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/pending HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"SECRET" not in received and b"HTTP/1.1 200" not in received


def test_an_expired_code_is_refused(cworld) -> None:  # noqa: F811
    from device.console.auth import CODE_TTL_MS
    from foundation.times import parse_time

    info = console_code(cworld)
    assert parse_time(info["expires_at"]) - _now() <= CODE_TTL_MS + 1000
    _expire_codes(cworld)
    reply = ConsoleHttp(cworld).sign_in(info["code"])
    assert reply.status_code == 401 and "expired" in reply.text


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


def _expire_codes(world) -> None:  # noqa: ANN001
    """Age every stored code by 11 minutes, in the device's own code store (the code's
    lifetime is the store's rule; the test moves the stored time instead of waiting)."""
    import sqlite3

    db = world.setup.root / "var" / "state" / "console.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE codes SET expires_ms = expires_ms - 660000")
    conn.close()


def test_five_wrong_codes_lock_code_entry(cworld) -> None:  # noqa: F811
    good = console_code(cworld)["code"]
    client = ConsoleHttp(cworld)
    wrong = "00000000" if good != "00000000" else "11111111"
    for _ in range(5):
        assert client.sign_in(wrong).status_code == 401
    locked = client.sign_in(good)
    assert locked.status_code == 429 and "locked" in locked.text
    assert client.get("/api/pending").status_code == 401


def test_a_forged_origin_changes_nothing(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    client = signed_in(cworld)
    for origin in ("https://evil.example", "http://127.0.0.1", None, "null"):
        client.origin = origin
        reply = client.post(f"/api/requests/{rfa_id}/decision", json={"decision": "deny"})
        assert reply.status_code == 403, origin
        assert client.post("/api/requests-paused", json={"paused": True}).status_code == 403
    assert rfa_id in cworld.pending_ids()
    client.origin = client.base
    assert client.get("/api/requests-paused").json() == {"paused": False}
    # a code typed into another site's form is refused too (login CSRF)
    other = ConsoleHttp(cworld, origin="https://evil.example")
    assert other.sign_in(console_code(cworld)["code"]).status_code == 403


def test_an_unknown_host_name_gets_nothing(cworld) -> None:  # noqa: F811
    client = signed_in(cworld)
    reply = client.get("/api/pending", headers={"Host": "rebound.example:1234"})
    assert reply.status_code == 421


def test_a_stolen_cookie_is_useless_after_revocation(cworld) -> None:  # noqa: F811
    client = signed_in(cworld)
    assert client.get("/api/pending").status_code == 200
    thief = trusting_session(cworld)
    thief.cookies.update(client.session.cookies)
    assert thief.get(client.base + "/api/pending", timeout=10).status_code == 200
    sessions = json.loads(cworld.daemon.ctl("console-sessions", "--json").stdout)
    assert len(sessions) == 1
    cworld.daemon.ctl("console-sessions", "--revoke", sessions[0]["id"])
    assert thief.get(client.base + "/api/pending", timeout=10).status_code == 401
    assert client.get("/api/pending").status_code == 401
    assert json.loads(cworld.daemon.ctl("console-sessions", "--json").stdout) == []


def test_a_clip_outside_the_request_window_gives_nothing(cworld) -> None:  # noqa: F811
    window = recent_window(cworld, seconds=8)
    inner = Window(window.start_ms + 2000, window.end_ms - 2000)
    rfa_id = publish_pending(cworld, inner)
    client = signed_in(cworld)

    def clip(start: int, end: int) -> requests.Response:
        return client.get(
            f"/api/requests/{rfa_id}/clip",
            params={"start": format_time(start), "end": format_time(end)},
        )

    for start, end in [
        (window.start_ms, inner.end_ms),  # starts before
        (inner.start_ms, window.end_ms),  # ends after
        (window.start_ms, inner.start_ms - 1),  # wholly before
    ]:
        reply = clip(start, end)
        assert 400 <= reply.status_code < 500
        assert reply.headers["content-type"].startswith("application/json")
        assert b"ftyp" not in reply.content and b"mdat" not in reply.content
    # a thumbnail outside the window, even at a real keyframe, is refused
    assert client.get(f"/api/requests/{rfa_id}/thumbnails/{window.start_ms}").status_code == 404
    ok = clip(inner.start_ms, inner.start_ms + 2000)
    assert ok.status_code == 200 and ok.headers["content-type"] == "video/mp4"
    assert b"ftyp" in ok.content[:64]


def test_a_decision_with_bad_fields_is_refused(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    client = signed_in(cworld)
    for body in (
        {"decision": "maybe"},
        {"decision": "approve", "share_contact": "yes"},
        {"decision": "approve", "window": {"start": "yesterday", "end": "today"}},
        {"decision": "approve", "extra": 1},
        [1, 2],
    ):
        reply = client.post(f"/api/requests/{rfa_id}/decision", json=body)
        assert reply.status_code == 400, body
    wider = {"start": format_time(window.start_ms - 60_000), "end": format_time(window.end_ms)}
    reply = client.post(
        f"/api/requests/{rfa_id}/decision", json={"decision": "approve", "window": wider}
    )
    assert reply.status_code == 409
    assert rfa_id in cworld.pending_ids()
    too_big = client.post(
        f"/api/requests/{rfa_id}/decision",
        data=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413


def test_shares_are_listed_and_refuse_what_cannot_be_done(cworld) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    client = signed_in(cworld)
    assert client.get("/api/shares").json() == {"shares": []}
    assert client.post(f"/api/shares/{rfa_id}/retry", json={}).status_code == 409
    assert client.post(f"/api/shares/{rfa_id}/cancel", json={}).status_code == 409
    reply = client.post(
        f"/api/requests/{rfa_id}/decision", json={"decision": "approve", "share_contact": True}
    )
    assert reply.json() == {"ok": True, "outcome": "approved", "rfa_id": rfa_id}
    cworld.wait_share(rfa_id)
    [share] = client.get("/api/shares").json()["shares"]
    assert share["rfa_id"] == rfa_id and share["state"] == "done" and share["manifest_sha256"]
    assert client.post(f"/api/shares/{rfa_id}/retry", json={}).status_code == 409
    # a decided request is not pending: no detail, no footage, no second decision
    assert client.get(f"/api/requests/{rfa_id}").status_code == 404
    assert client.get(f"/api/requests/{rfa_id}/thumbnails").status_code == 404
    again = client.post(f"/api/requests/{rfa_id}/decision", json={"decision": "deny"})
    assert again.status_code == 404
    # in words for the page, the rule's code for scripts
    assert again.json() == {
        "error": "This request is no longer waiting for you: it was decided or it expired.",
        "code": "not_pending",
    }
    # the card's facts: agency, case, window, named, built, when it finished
    assert share["agency"] == {"id": "sfpd", "name": "San Francisco Police Department"}
    assert share["case_number"] == "2026-004512" and share["window"] == window.to_json()
    assert share["share_contact"] is True and share["built"] is True and share["updated_at"]
    audit = client.get("/api/audit").json()
    assert audit["verification"]["ok"] is True
    decision = next(e for e in audit["entries"] if e["event"] == "decision")
    assert decision["fields"]["method"] == "console" and decision["fields"]["rfa_id"] == rfa_id


def test_the_cli_prints_code_url_and_fingerprint(cworld) -> None:  # noqa: F811
    out = cworld.daemon.ctl("console-code").stdout
    info = console_code(cworld)
    assert info["url"] in out and "SHA-256" in out
    # what the owner compares is the authority's fingerprint (the leaf's changes)
    fingerprint = info["ca_fingerprint"].upper()
    assert ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)) in out
    assert info["ca_url"] in out
    assert "No one is signed in" in cworld.daemon.ctl("console-sessions").stdout
    gone = cworld.daemon.ctl("console-sessions", "--revoke", "nosuchid", check=False)
    assert gone.returncode == 1 and "no live session" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_console_commands_say_when_the_console_is_off(world) -> None:
    result = world.daemon.ctl("console-code", check=False)
    assert result.returncode == 1 and "console is off" in result.stderr
    assert "console" not in json.loads(world.daemon.ctl("status", "--json").stdout)


def test_an_older_code_no_longer_works_after_a_newer_one(cworld) -> None:  # noqa: F811
    older = console_code(cworld)["code"]
    newer = console_code(cworld)["code"]
    client = ConsoleHttp(cworld)
    refused = client.sign_in(older)
    assert refused.status_code == 401 and "newest code" in refused.text
    assert client.sign_in(newer).status_code == 303
    assert client.get("/api/pending").status_code == 200


def test_a_client_guessing_every_half_second_does_not_lock_the_owner_out(cworld) -> None:  # noqa: F811
    """The guesser (127.0.0.2, another machine as far as the console can tell) sends a
    wrong code every 0.5 s throughout; the owner (127.0.0.1) signs in with a fresh code."""
    import threading
    import time

    guesser = ConsoleHttp(cworld, source="127.0.0.2")
    answers: list[int] = []
    stop = threading.Event()

    def guess() -> None:
        while not stop.is_set():
            answers.append(guesser.sign_in("00000000").status_code)
            stop.wait(0.5)

    thread = threading.Thread(target=guess, daemon=True)
    thread.start()
    try:
        time.sleep(4)  # five wrong codes in: the guesser is locked out, and keeps at it
        assert 429 in answers
        owner = ConsoleHttp(cworld)
        reply = owner.sign_in(console_code(cworld)["code"])
        assert reply.status_code == 303, reply.text
        assert owner.get("/api/pending").status_code == 200
        # the guesser is still locked out, even with a right code
        assert guesser.sign_in(console_code(cworld)["code"]).status_code == 429
    finally:
        stop.set()
        thread.join(5)
    assert answers.count(401) == 5 and set(answers) == {401, 429}


SECURITY_HEADER_NAMES = (
    b"content-security-policy",
    b"x-content-type-options",
    b"x-frame-options",
    b"strict-transport-security",
)


def _raw_exchange(port: int, request: bytes) -> bytes:
    """One request over TLS as bytes, and everything the console sends back."""
    with _unverified_tls(port) as tls:
        tls.sendall(request)
        received = b""
        try:
            while chunk := tls.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                    head, _, body = received.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.lower().split(b"\r\n")
                            if line.startswith(b"content-length:")
                        ),
                        None,
                    )
                    if length is not None and len(body) >= length:
                        break
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            pass
    return received


def test_the_pre_sign_in_battery_over_the_socket(cworld) -> None:  # noqa: F811
    """A few of tests/device/test_console_hostile.py's cases, as bytes on the wire:
    a 4xx with the security headers each, and no traceback in the daemon's log."""
    port = int(console_code(cworld)["url"].rsplit(":", 1)[1].strip("/"))
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    origin = f"Origin: https://127.0.0.1:{port}\r\n".encode()
    form = b"a=1&b=2&c=3&d=4&e=5"
    requests_sent = [
        b"GET /api/requests/x/thumbnails/" + b"9" * 4301 + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"POST /login HTTP/1.1\r\n"
        + host
        + origin
        + b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form,
        b"POST /login HTTP/1.1\r\n" + host + origin + b"Content-Length: 4\r\n\r\n\xff\xfe\xfd\xfc",
        b"BREW /pot HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\n" + host + b"\r\n",  # not HTTP: uvicorn's 400
        b"\x16\x03\x01 not http at all\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [\r\n\r\n",
    ]
    before = cworld.daemon.log_path.stat().st_size
    for request in requests_sent:
        reply = _raw_exchange(port, request)
        status_line, _, rest = reply.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 4"), (request[:60], reply[:200])
        head = rest.partition(b"\r\n\r\n")[0].lower()
        for name in SECURITY_HEADER_NAMES:
            assert name + b":" in head, (request[:60], name)
    with cworld.daemon.log_path.open("rb") as log:
        log.seek(before)
        grown = log.read()
    assert b"Traceback" not in grown and b"ERROR" not in grown, grown[-2000:]


def test_a_connection_that_never_finishes_its_request_is_closed(cworld) -> None:  # noqa: F811
    """Slowloris: one connection that never starts TLS, one that sends half its headers
    and one that trickles a byte a second: each is closed within the listener's deadlines
    (the handshake's, and a request's), with margins for a loaded machine."""
    import time

    from device.console.listener import HANDSHAKE_S, REQUEST_S

    port = int(console_code(cworld)["url"].rsplit(":", 1)[1].strip("/"))
    context = _insecure_context()
    mute = socket.create_connection(("127.0.0.1", port), timeout=30)
    half = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30))
    half.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    trickle = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30))
    opened = time.monotonic()
    closed: dict[str, float] = {}
    pending = {"mute": mute, "half": half, "trickle": trickle}
    for sock in pending.values():
        sock.setblocking(False)
    try:
        while pending and time.monotonic() - opened < REQUEST_S + 15:
            for name, sock in list(pending.items()):
                try:
                    if sock.recv(4096) == b"":
                        closed[name] = time.monotonic() - opened
                        del pending[name]
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                except (ConnectionResetError, ssl.SSLError, OSError):
                    closed[name] = time.monotonic() - opened
                    del pending[name]
            if "trickle" in pending:
                with contextlib.suppress(ssl.SSLWantWriteError, OSError):
                    trickle.sendall(b"X")
            time.sleep(1.0)
    finally:
        for sock in (mute, half, trickle):
            sock.close()
    assert set(closed) == {"mute", "half", "trickle"}, closed
    assert closed["mute"] <= HANDSHAKE_S + 5, closed
    assert closed["half"] <= REQUEST_S + 5 and closed["trickle"] <= REQUEST_S + 5, closed
    # and the console still answers
    assert ConsoleHttp(cworld).get("/login").status_code == 200


def test_a_hostile_user_agent_is_shown_escaped(cworld) -> None:  # noqa: F811
    """A User-Agent with ESC and BEL (h11 refuses them on the wire, another HTTP parser
    might not; the store keeps whatever came): the CLI prints them escaped."""
    import sqlite3

    signed_in(cworld)
    db = cworld.setup.root / "var" / "state" / "console.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET client = ?", ("evil\x1b[2J\x07\u202eagent",))
    conn.close()
    out = cworld.daemon.ctl("console-sessions").stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil\\x1b[2J\\x07\\u202eagent" in out


def test_the_summary_and_a_refusal_of_nothing_to_send(cworld) -> None:  # noqa: F811
    """GET /api/requests/{id}/summary says what an approval would send (the CLI's own
    summary); an approval of a window without footage, or of none, is refused in words
    before anything is recorded."""
    start = cworld.buffer_span()[0]
    empty = publish_pending(cworld, Window(start - 7_200_000, start - 7_100_000))
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window, case_number="2026-000777")
    client = signed_in(cworld)
    named = client.get(f"/api/requests/{rfa_id}/summary").json()
    assert named["sends"]["name"] == "Jane Doe" and named["sends"]["address"] == "1 Elm St"
    assert named["to"]["agency_id"] == "sfpd" and named["frames"] > 0
    assert named["estimated_bytes"] > 0 and named["problem"] is None
    anon = client.get(f"/api/requests/{rfa_id}/summary", params={"share_contact": "false"})
    assert anon.json()["sends"] is None
    point = {"start": window.to_json()["start"], "end": window.to_json()["start"]}
    zero = client.get(f"/api/requests/{rfa_id}/summary", params=point).json()
    assert "no length" in zero["problem"]["message"]
    assert (
        client.get(f"/api/requests/{rfa_id}/summary", params={"share_contact": "x"}).status_code
        == 400
    )
    for target, body in (
        (empty, {"decision": "approve", "share_contact": False}),
        (rfa_id, {"decision": "approve", "share_contact": False, "window": point}),
    ):
        refused = client.post(f"/api/requests/{target}/decision", json=body)
        assert refused.status_code == 409 and refused.json()["code"] == "nothing_to_send"
        assert refused.json()["error"].startswith("The ")  # a sentence, not a code
    assert {empty, rfa_id} <= set(cworld.pending_ids())  # nothing was decided
    assert cworld.shares() == []
    # a cookie whose session was revoked: the sign-in page says so
    sessions = json.loads(cworld.daemon.ctl("console-sessions", "--json").stdout)
    for session in sessions:
        cworld.daemon.ctl("console-sessions", "--revoke", session["id"])
    page = client.get("/")
    assert page.status_code == 401 and "You were signed out" in page.text


def test_the_player_gets_the_window_and_nothing_else(cworld) -> None:  # noqa: F811
    """Over the daemon's own HTTPS: the HLS of the window plays, a piece of a part
    reaching outside it is a 403, and once the request is decided nothing plays."""
    window = recent_window(cworld, seconds=8)
    rfa_id = publish_pending(cworld, window)
    client = signed_in(cworld)
    s, e = format_time(window.start_ms), format_time(window.end_ms)
    play = client.get(f"/api/requests/{rfa_id}/play?start={s}&end={e}")
    assert play.status_code == 200, play.text
    base = play.json()["playlist"].rsplit("/", 1)[0]
    assert client.get(base + "/index.m3u8").text.startswith("#EXTM3U")
    piece = client.get(base + "/0.m4s")
    assert piece.status_code == 200 and piece.headers["content-type"] == "video/mp4"
    assert piece.headers["cache-control"] == "no-store"
    video = f"/api/requests/{rfa_id}/video"
    for start, end in (
        (window.start_ms - 1, window.end_ms),
        (window.start_ms, window.end_ms + 1),
        (window.start_ms - 60_000, window.start_ms - 1),
    ):
        for name in ("index.m3u8", "init-0.mp4", "0.m4s"):
            reply = client.get(f"{video}/{start}/{end}/{name}")
            assert reply.status_code == 403, (start, end, name)
            assert not reply.headers["content-type"].startswith("video")
    decided = client.post(f"/api/requests/{rfa_id}/decision", json={"decision": "deny"})
    assert decided.status_code == 200, decided.text
    assert client.get(base + "/1.m4s").status_code == 404
    assert client.get(base + "/index.m3u8").status_code == 404
