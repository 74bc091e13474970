"""The tus client against a real tuspyserver, and against small real HTTP servers that
misbehave (a foreign Location, a redirect, a checksum-checking server)."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.loopback import TusServer
from sync.tus import (
    MAX_HEADER_DIGITS,
    AddressRefused,
    MalformedNumber,
    TokenBucket,
    TusClient,
    TusOptions,
    TusRefused,
    TusTransient,
    checked_session,
    connect_checked,
    encode_metadata,
    header_number,
)
from tests.sync.hostile import LooseTusServer

META = {"filename": "x.age", "filetype": "application/octet-stream", "kind": "clip"}


def client(url: str, *, chunk: int = 64 * 1024, stop: threading.Event | None = None) -> TusClient:
    return TusClient(
        upload_url=url,
        options=TusOptions(chunk_bytes=chunk, allow_plain_http_loopback=True, timeout_s=10),
        session=checked_session(allow_loopback=True),
        stop=stop or threading.Event(),
    )


def payload(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    return path, data


def test_upload_in_chunks_stores_exact_bytes_and_metadata(tus_server: TusServer, tmp_path: Path):
    path, data = payload(tmp_path, 300_000)
    c = client(tus_server.url)
    meta = dict(META, case_number="2026-004512 ü")
    location = c.create(len(data), meta)
    assert location.startswith(tus_server.url)
    offsets: list[int] = []
    c.send_file(
        path,
        location=location,
        offset=0,
        length=len(data),
        checksum=False,
        on_progress=offsets.append,
    )
    assert offsets == [65536, 131072, 196608, 262144, 300000]
    assert c.offset(location) == len(data)
    (stored,) = tus_server.uploads()
    assert stored.read_bytes() == data
    assert stored.metadata["case_number"] == "2026-004512 ü"
    assert stored.complete


def test_resume_continues_the_same_upload_from_the_server_offset(
    tus_server: TusServer, tmp_path: Path
):
    path, data = payload(tmp_path, 200_000)
    first = client(tus_server.url)
    location = first.create(len(data), META)
    sent: list[int] = []

    def only_two() -> bool:
        return len(sent) < 2

    with pytest.raises(TusTransient):
        first.send_file(
            path,
            location=location,
            offset=0,
            length=len(data),
            checksum=False,
            on_progress=sent.append,
            keep_going=only_two,
        )
    # a new client (as after a restart) learns the offset from the server
    second = client(tus_server.url)
    offset = second.offset(location)
    assert offset == 131072
    second.send_file(
        path,
        location=location,
        offset=offset,
        length=len(data),
        checksum=False,
        on_progress=sent.append,
    )
    (stored,) = tus_server.uploads()
    assert stored.read_bytes() == data


def test_head_of_an_unknown_upload_is_gone(tus_server: TusServer):
    from sync.tus import TusGone

    with pytest.raises(TusGone):
        client(tus_server.url).offset(tus_server.url + "0" * 32)


def test_a_4xx_at_creation_is_permanent(tus_server: TusServer):
    wrong = tus_server.url.replace("/files/", "/no-such-endpoint/")
    with pytest.raises(TusRefused, match="404"):
        client(wrong).create(10, META)


def test_loopback_is_refused_unless_allowed(tus_server: TusServer):
    with pytest.raises(TusRefused, match="not enabled"):
        TusClient(
            upload_url=tus_server.url,
            options=TusOptions(allow_plain_http_loopback=False),
            session=checked_session(allow_loopback=False),
            stop=threading.Event(),
        )
    # the socket-level check on its own, below any URL check: a connection to loopback
    # is refused when loopback is not allowed (what DNS rebinding would lead to)
    session = checked_session(allow_loopback=False)
    with pytest.raises(requests.ConnectionError) as info:
        session.options(tus_server.url, timeout=5)
    from sync.tus import _refusal_in

    assert _refusal_in(info.value) is not None
    with pytest.raises(AddressRefused):
        connect_checked("127.0.0.1", tus_server.port, 5, allow_loopback=False)
    with pytest.raises(AddressRefused):
        connect_checked("localhost", tus_server.port, 5, allow_loopback=False)
    connect_checked("127.0.0.1", tus_server.port, 5, allow_loopback=True).close()


def test_https_and_non_loopback_http_urls_are_refused():
    for url in ("http://example.com/files/", "https://127.0.0.1/files/", "ftp://x.example/"):
        with pytest.raises(TusRefused):
            client(url)


# --- small real servers that misbehave -------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    behaviour = "foreign"
    received: list[dict[str, str]]
    body_store: bytearray

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_OPTIONS(self) -> None:
        self._reply(
            204,
            {
                "Tus-Resumable": "1.0.0",
                "Tus-Version": "1.0.0",
                "Tus-Extension": "creation,checksum",
                "Tus-Checksum-Algorithm": "md5,sha1",
            },
        )

    def do_POST(self) -> None:
        port = self.server.server_address[1]
        if self.behaviour == "foreign":
            self._reply(201, {"Location": f"http://127.0.0.2:{port}/files/abc"})
        elif self.behaviour == "redirect":
            self._reply(307, {"Location": f"http://127.0.0.1:{port}/elsewhere/"})
        else:
            self._reply(201, {"Location": "/files/abc"})

    def do_PATCH(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.received.append(dict(self.headers))
        algo, _, digest = self.headers.get("Upload-Checksum", "").partition(" ")
        if algo != "sha1" or base64.b64decode(digest) != hashlib.sha1(body).digest():
            self._reply(460, {"Tus-Resumable": "1.0.0"})
            return
        self.body_store.extend(body)
        self._reply(204, {"Tus-Resumable": "1.0.0", "Upload-Offset": str(len(self.body_store))})


@pytest.fixture
def odd_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type(
        "H", (_Handler,), {"behaviour": request.param, "received": [], "body_store": bytearray()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files/", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("odd_server", ["foreign"], indirect=True)
def test_location_on_another_host_is_refused(odd_server: tuple[str, type[_Handler]]):
    url, _ = odd_server
    with pytest.raises(TusRefused, match="another origin"):
        client(url).create(10, META)


@pytest.mark.parametrize("odd_server", ["redirect"], indirect=True)
def test_redirects_are_not_followed(odd_server: tuple[str, type[_Handler]]):
    url, _ = odd_server
    with pytest.raises(TusRefused, match="redirect"):
        client(url).create(10, META)


@pytest.mark.parametrize("odd_server", ["checksum"], indirect=True)
def test_checksum_is_sent_when_the_server_offers_it(
    odd_server: tuple[str, type[_Handler]], tmp_path: Path
):
    url, handler = odd_server
    c = client(url, chunk=50_000)
    info = c.server_info()
    assert info.sha1_checksum
    path, data = payload(tmp_path, 120_000)
    location = c.create(len(data), META)
    assert location == url + "abc"  # a relative Location resolves against the upload URL
    c.send_file(
        path,
        location=location,
        offset=0,
        length=len(data),
        checksum=True,
        on_progress=lambda _: None,
    )
    assert bytes(handler.body_store) == data
    assert len(handler.received) == 3
    assert all(h["Upload-Checksum"].startswith("sha1 ") for h in handler.received)


def test_metadata_encoding():
    assert encode_metadata({"filename": "a b", "kind": "clip"}) == "filename YSBi,kind Y2xpcA=="
    for bad in ("", "a b", "a,b", "ü"):
        with pytest.raises(ValueError):
            encode_metadata({bad: "x"})


class _FakeTimeStop(threading.Event):
    """A stop event whose waits move a fake clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.waited = 0.0

    def wait(self, timeout: float | None = None) -> bool:
        self.now += timeout or 0.0
        self.waited += timeout or 0.0
        return self.is_set()


def test_token_bucket_paces_to_the_rate():
    stop = _FakeTimeStop()
    bucket = TokenBucket(1_000_000, stop=stop, monotonic=lambda: stop.now)
    for _ in range(40):
        assert bucket.take(250_000)
    # 10 MB at 1 MB/s needs ~10 s of (fake) waiting; the initial burst is under 1 s
    assert 9.0 <= stop.waited <= 10.5
    stop.set()
    assert bucket.take(250_000) is False


# --- numbers in headers, and servers that do not say Connection: close ---------------------

# What a hostile server puts where a number belongs: Unicode digits `str.isdigit()` accepts
# (and int() refuses, or reads), more digits than int() converts, signs, separators.
DIGITS = "0123456789"
HOSTILE_NUMBERS = st.one_of(
    st.text(
        alphabet=st.sampled_from(DIGITS + "²³¹٣۵߂०१൬໒၃෧₂⁴①𝟙 \t+-_.,xX\x00\x85\u00a0"), max_size=30
    ),
    st.text(max_size=30),
    st.builds(lambda n, c: c * n, st.integers(15, 5_000), st.sampled_from(["9", "²", "٣"])),
    st.from_regex(r"[ \t]*[0-9]{1,25}[ \t]*", fullmatch=True),
)


@given(HOSTILE_NUMBERS)
@settings(max_examples=500, deadline=None)
def test_a_header_number_is_ascii_digits_of_bounded_length_and_nothing_else(value: str):
    digits = value.strip(" \t")  # the spaces and tabs around a field value are not its value
    expected = (
        int(digits)
        if 1 <= len(digits) <= MAX_HEADER_DIGITS and all(c in DIGITS for c in digits)
        else None
    )
    try:
        got: int | None = header_number("Upload-Offset", value)
    except MalformedNumber as exc:
        assert str(exc) == "malformed Upload-Offset"  # the device's phrase, not the value
        got = None
    assert got == expected


def test_header_number_examples():
    assert header_number("Tus-Max-Size", "0") == 0
    assert header_number("Tus-Max-Size", "007 ") == 7
    assert header_number("Tus-Max-Size", "9" * MAX_HEADER_DIGITS) == 10**MAX_HEADER_DIGITS - 1
    for bad in (None, "", " ", "²", "1²", "٣", "+1", "-1", "1_000", "1.0", "9" * 19, "9" * 5000):
        with pytest.raises(MalformedNumber):
            header_number("Tus-Max-Size", bad)


@pytest.mark.parametrize("keep", ["open", "silent"])
def test_a_server_that_never_says_connection_close_gets_a_connection_per_exchange(keep: str):
    """Without `Connection: close` in the answers, urllib3 pooled the connection whose
    socket the client had closed, and the next exchange raised ValueError (fd -1). Now
    every exchange opens a connection of its own, measured at the server."""
    server = LooseTusServer(keep=keep)
    try:
        c = client(server.url)
        for _ in range(3):
            assert "creation" in c.server_info().extensions
        location = c.create(10, META)
        assert c.offset(location) == 0
        assert c.patch(location, 0, b"0123456789", checksum=False) == 10
    finally:
        server.close()
    assert server.requests == ["OPTIONS"] * 3 + ["POST", "HEAD", "PATCH"]
    assert server.connections == len(server.requests)


@pytest.mark.parametrize(
    ("answer", "call"),
    [
        ({"max_size": "²".encode("latin-1")}, "server_info"),
        ({"max_size": b"9" * 5000}, "server_info"),
        ({"offset": "²".encode("latin-1")}, "offset"),
        ({"offset": b"1" * 5000}, "offset"),
        ({"offset": "١".encode()}, "patch"),
        ({"offset": b"1" * 5000}, "patch"),
    ],
)
def test_a_hostile_number_is_a_transient_error_naming_the_header(answer, call):
    server = LooseTusServer(**answer)
    try:
        c = client(server.url)
        location = c.create(10, META) if call != "server_info" else ""
        steps = {
            "server_info": c.server_info,
            "offset": lambda: c.offset(location),
            "patch": lambda: c.patch(location, 0, b"0123456789", checksum=False),
        }
        with pytest.raises(MalformedNumber) as caught:
            steps[call]()
    finally:
        server.close()
    header = "Tus-Max-Size" if "max_size" in answer else "Upload-Offset"
    assert isinstance(caught.value, TusTransient)
    assert str(caught.value) == f"malformed {header}"
