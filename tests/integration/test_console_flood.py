"""The console against a hostile home network, measured at the sockets: a real doorbelld
held to systemd's default of 1024 open files, and 990 TLS connections to its console
that send nothing (reopened as soon as the console closes them). The owner still signs
in and reads the pending list within 5 s, an owner-app decision is recorded, `doorbellctl
status` answers, the daemon is still running a minute later, and its log hardly grows."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import selectors
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.console_kit import (
    ConsoleHttp,
    console_code,
    cworld,  # noqa: F401 - a fixture
    publish_pending,
    recent_window,
)

pytestmark = [pytest.mark.xdist_group("console"), pytest.mark.slow]

IDLE_CONNECTIONS = 990
FD_LIMIT = 1024
FLOOD_S = 60.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class IdleFlood:
    """IDLE_CONNECTIONS connections from 127.0.0.2 that never send a byte; whichever the
    console closes is opened again, for as long as the flood runs.

    It runs in a process of its own, as an attacker on another machine would: held in
    the test's process, its thousand sockets would push the test's own descriptors (the
    owner tool's MQTT socket among them) past 1024, where paho's select() fails."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._opened = context.Value("q", 0)
        self._held = context.Value("q", 0)
        self._process = context.Process(
            target=_flood, args=(port, self._stop, self._opened, self._held), daemon=True
        )

    @property
    def opened(self) -> int:
        return int(self._opened.value)

    @property
    def held(self) -> int:
        return int(self._held.value)

    def start(self) -> None:
        self._process.start()

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def _flood(port: int, stop: Any, opened: Any, held: Any) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    selector = selectors.DefaultSelector()

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_READ)
        opened.value += 1

    for _ in range(IDLE_CONNECTIONS):
        open_one()
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # closed by the console: open another
                selector.unregister(sock)
                sock.close()
                if not stop.is_set():
                    with contextlib.suppress(OSError):
                        open_one()
        held.value = len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


def test_990_idle_connections_take_nothing_from_the_owner(cworld) -> None:  # noqa: F811
    proc = cworld.daemon.proc
    assert proc is not None
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    url = console_code(cworld)["url"]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    log = cworld.daemon.log_path
    log_before = log.stat().st_size
    fds_before, rss_before = _fds(proc.pid), _rss_mb(proc.pid)

    flood = IdleFlood(port)
    flood.start()
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 30
        while flood.opened < IDLE_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flood.opened >= IDLE_CONNECTIONS
        time.sleep(2)  # let the console take in what it will
        fds_flooded = _fds(proc.pid)

        # the owner: a fresh code, sign in, the pending list: within 5 s
        code = console_code(cworld)["code"]
        began = time.monotonic()
        owner = ConsoleHttp(cworld)
        assert owner.sign_in(code).status_code == 303
        pending = owner.get("/api/pending")
        owner_s = time.monotonic() - began
        assert pending.status_code == 200
        assert rfa_id in [r["id"] for r in pending.json()["requests"]]
        assert owner_s < 5.0, owner_s

        # an owner-app decision, sealed and published through the broker, is recorded
        cworld.decide(rfa_id, approve=True)
        share = cworld.wait_share(rfa_id, timeout=60)
        assert share["state"] == "done"
        assert cworld.daemon.ctl("status").returncode == 0

        # a minute of it
        max_fds = 0
        while time.monotonic() - started < FLOOD_S:
            assert proc.poll() is None, cworld.daemon.log_tail()
            max_fds = max(max_fds, _fds(proc.pid))
            time.sleep(1)
        assert cworld.daemon.ctl("status").returncode == 0
        again = owner.get("/api/pending")
        assert again.status_code == 200
    finally:
        held, opened = flood.held, flood.opened
        flood.close()
    assert proc.poll() is None
    log_grown = log.stat().st_size - log_before
    rss_after = _rss_mb(proc.pid)
    print(
        f"\nflood: {opened} connections opened ({held} held open by the client at the end), "
        f"owner sign-in and pending list {owner_s:.2f} s; daemon fds {fds_before} before, "
        f"{fds_flooded} flooded, {max_fds} at most; RSS {rss_before:.1f} -> {rss_after:.1f} MB; "
        f"log +{log_grown} bytes in {time.monotonic() - started:.0f} s"
    )
    assert max_fds < FD_LIMIT - 100
    assert log_grown < 1_000_000
