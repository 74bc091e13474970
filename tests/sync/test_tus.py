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

from cloud.loopback import TusServer
from sync.tus import (
    AddressRefused,
    TokenBucket,
    TusClient,
    TusOptions,
    TusRefused,
    TusTransient,
    checked_session,
    connect_checked,
    encode_metadata,
)

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
