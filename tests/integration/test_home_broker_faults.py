"""A home broker that talks nonsense never reaches recording or the request flow: the
daemon (a child process, a real recorder, a real cloud broker) is pointed at a "home
broker" that answers every connection with junk bytes. It records, takes a request, and
says what is wrong in one status field and a log line, not one per retry."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.loopback import MosquittoBroker, TusServer
from foundation.times import Window
from tests.fixtures.daemon import make_world, now_ms, start_and_pair, wait_for


class JunkBroker:
    """Accepts MQTT connections and answers each with random bytes, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"mqtt://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(os.urandom(4096))
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def junk_broker() -> Iterator[JunkBroker]:
    broker = JunkBroker()
    try:
        yield broker
    finally:
        broker.close()


def test_a_junk_home_broker_changes_nothing_for_recording_or_requests(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer, junk_broker: JunkBroker
) -> None:
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        extra={"home_assistant": {"enabled": True, "url": junk_broker.url}},
    )
    start_and_pair(world)
    try:
        wait_for(world.buffer_span, 30, "footage in the buffer")
        wait_for(lambda: junk_broker.connections >= 3, 30, "the link trying again")
        rfa = world.rfa(Window(now_ms() - 30_000, now_ms() - 1_000))
        world.publish(rfa)
        wait_for(lambda: rfa.id in world.pending_ids(), 30, "the request pending")
        status = world.daemon.status()
        assert status["recording"] is True
        home = status["home_assistant"]
        assert home["broker"] == "disconnected" and home["problem"], home
        shown = world.daemon.ctl("status").stdout
        assert "home asst.    disconnected  (" in shown, shown
    finally:
        assert world.daemon.stop() == 0
    log = world.daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "Home Assistant broker" in line]
    assert 1 <= len(lines) <= 3, lines  # once a minute per kind, however many retries
