"""Hostile upload servers (docs/security.md): one that drips its answer a byte a second,
one that answers with a huge body. Every exchange ends within its deadline, reads at
most a few KiB of any body, and a cancel interrupts it at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from sync.tus import MAX_RESPONSE_BODY, TusClient, TusOptions, TusTransient, checked_session
from tests.sync.hostile import HostileServer


@pytest.fixture(params=["drip", "huge"])
def server(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    s = HostileServer(request.param)
    yield s
    s.close()


def client(server: HostileServer, stop: threading.Event, timeout_s: float = 2.0) -> TusClient:
    options = TusOptions(allow_plain_http_loopback=True, timeout_s=timeout_s)
    return TusClient(
        upload_url=f"http://127.0.0.1:{server.port}/files/",
        options=options,
        session=checked_session(allow_loopback=True),
        stop=stop,
    )


def test_an_exchange_ends_by_its_deadline_and_reads_little(server: HostileServer) -> None:
    rss_before = psutil.Process().memory_info().rss
    started = time.monotonic()
    error = None
    try:
        info = client(server, threading.Event()).server_info()
    except TusTransient as exc:
        info, error = None, str(exc)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.5  # the timeout plus the watcher's poll, never "for ever"
    if server.mode == "drip":
        assert info is None  # its headers never end
        assert error == "OPTIONS took too long"  # a byte a second: no read ever times out
    else:
        # the answer's headers are used, at most 4 KiB of its body is read, then dropped
        assert info is not None and "creation" in info.extensions
        assert server.sent < 64 * 1024 * 1024  # the server was cut off long before 512 MiB
    assert psutil.Process().memory_info().rss - rss_before < 32 * 1024 * 1024
    assert MAX_RESPONSE_BODY <= 4096


def test_cancel_interrupts_an_exchange_at_once() -> None:
    server = HostileServer("drip")
    stop = threading.Event()
    try:
        tus = client(server, stop, timeout_s=60.0)
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(TusTransient, match="^OPTIONS cancelled$"):
            tus.server_info()
        assert time.monotonic() - started < 2.0  # not the 60 s timeout
    finally:
        server.close()
