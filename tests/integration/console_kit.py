"""The console's test world: the whole doorbell world (real broker, real tus server, the
daemon as a child process) with the console listening on a free loopback port, and an
HTTPS client that trusts exactly the device's own certificate authority."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud.loopback import MosquittoBroker, TusServer, free_port
from foundation.times import Window
from tests.fixtures.daemon import World, make_world, now_ms, start_and_pair, wait_for


def console_world(
    root: Path, broker: MosquittoBroker, uploads: TusServer, *, steered_clock: bool = False
) -> World:
    port = free_port()
    world = make_world(
        root,
        broker,
        uploads,
        steered_clock=steered_clock,
        extra={"console": {"listen": f"127.0.0.1:{port}"}},
    )
    start_and_pair(world)
    wait_for(world.buffer_span, 30, "footage in the buffer")
    return world


@pytest.fixture
def cworld(tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer) -> Iterator[World]:
    made = console_world(tmp_path, mosquitto, tus_server)
    try:
        yield made
    finally:
        made.daemon.stop()


@pytest.fixture
def steered_cworld(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> Iterator[World]:
    """A console world whose daemon's wall clock the test can move (World.clock_file)."""
    made = console_world(tmp_path, mosquitto, tus_server, steered_clock=True)
    try:
        yield made
    finally:
        made.daemon.stop()


def console_code(world: World) -> dict[str, Any]:
    return dict(json.loads(world.daemon.ctl("console-code", "--json").stdout))


def ca_path(world: World) -> Path:
    """The device's certificate authority, as an owner installs it on a phone."""
    return world.setup.root / "var" / "state" / "console-ca.pem"


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Trusts the device's authority and nothing else, with host name checking on:
    the console's certificate names 127.0.0.1. `source`: the address connections come
    from (another 127.x address is another machine on the home network, as far as the
    console can tell)."""

    def __init__(self, cafile: Path, source: str | None = None) -> None:
        self._context = ssl.create_default_context(cafile=str(cafile))
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        if self._source is not None:
            kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def trusting_session(world: World, source: str | None = None) -> requests.Session:
    session = requests.Session()
    session.mount("https://", _PinnedAdapter(ca_path(world), source))
    return session


class ConsoleHttp:
    """A client of the console as a browser on the home network would be, minus the
    page: cookies kept, the device's certificate trusted, Origin set on POSTs."""

    def __init__(
        self, world: World, *, origin: str | None = "own", source: str | None = None
    ) -> None:
        # from the status, not console-code: a new code would retire the one in hand
        self.base = world.daemon.status()["console"]["url"].rstrip("/")
        self.session = trusting_session(world, source)
        self.origin = self.base if origin == "own" else origin

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, allow_redirects=False, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.origin is not None:
            headers.setdefault("Origin", self.origin)
        return self.session.post(
            self.base + path, headers=headers, allow_redirects=False, timeout=60, **kwargs
        )

    def sign_in(self, code: str) -> requests.Response:
        return self.post("/login", data={"code": code})


def signed_in(world: World) -> ConsoleHttp:
    client = ConsoleHttp(world)
    reply = client.sign_in(console_code(world)["code"])
    assert reply.status_code == 303, reply.text
    return client


def recent_window(world: World, seconds: float = 6.0) -> Window:
    """A window of footage the buffer holds now."""
    span = wait_for(
        lambda: (s := world.buffer_span()) and s[1] - s[0] >= seconds * 1000 and s,
        60,
        "enough footage",
    )
    return Window(span[1] - int(seconds * 1000), span[1])


def local_input(t_ms: int) -> str:
    """A time as the page's <input type="datetime-local"> holds it: local time (the
    browser's, which is this machine's: Playwright keeps the host's zone), seconds, and a
    fraction when there is one, as the browser writes it (no trailing zeros)."""
    at = datetime.fromtimestamp(t_ms / 1000)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{t_ms % 1000:03d}".rstrip("0") if t_ms % 1000 else "")


def publish_pending(world: World, window: Window, **changes: Any) -> str:
    rfa = world.rfa(window, **changes)
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 30, "the request pending")
    return rfa.id


__all__ = ["ConsoleHttp", "cworld", "local_input", "now_ms"]
