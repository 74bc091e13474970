"""A hostile broker announcing a huge PUBLISH: refused at the socket, before anything is
allocated for it, and the connection dropped (sync.mqtt.BoundedClient)."""

from __future__ import annotations

import socket
import threading
import time

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from sync.mqtt import MAX_PACKET_BYTES, BoundedClient
from tests.sync.hostile import remaining_length

HUGE = 200 * 1024 * 1024


class FakeBroker:
    """Speaks just enough MQTT 5: CONNACK, then a PUBLISH header announcing `size` bytes
    followed by a trickle of payload; records when the client hangs up."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.hung_up = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        try:
            conn.recv(4096)  # CONNECT
            conn.sendall(bytes([0x20, 3, 0, 0, 0]))  # CONNACK, success, no properties
            topic = b"rfa/v1/cell/9q8yy"
            head = bytes([0x30]) + remaining_length(self.size) + len(topic).to_bytes(2, "big")
            conn.sendall(head + topic + b"\0" + b"x" * 1000)
            conn.settimeout(10)
            while conn.recv(4096):
                pass
            self.hung_up.set()
        except OSError:
            self.hung_up.set()
        finally:
            conn.close()
            self.sock.close()


def test_an_oversized_publish_is_refused_before_it_is_allocated() -> None:
    broker = FakeBroker(HUGE)
    client = BoundedClient(CallbackAPIVersion.VERSION2, client_id="porch-cam-01",
                           protocol=paho.MQTTv5)  # fmt: skip
    got: list[object] = []
    client.on_message = lambda *a: got.append(a)
    rss_before = psutil.Process().memory_info().rss
    client.connect("127.0.0.1", broker.port, 30)
    deadline = time.monotonic() + 10
    while not broker.hung_up.is_set() and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    assert broker.hung_up.is_set()  # the client dropped the connection
    assert client.take_refusal() and client.refused_packets == 1
    assert got == []
    assert psutil.Process().memory_info().rss - rss_before < 16 * 1024 * 1024  # not 200 MiB
    assert HUGE > MAX_PACKET_BYTES


def test_a_packet_at_the_limit_is_read() -> None:
    """The limit refuses only what is over it: a plain paho client and ours agree on a
    small packet (the fake broker's PUBLISH of 1 KiB is read, then it hangs up)."""
    broker = FakeBroker(len(b"rfa/v1/cell/9q8yy") + 3 + 1000)
    client = BoundedClient(CallbackAPIVersion.VERSION2, client_id="porch-cam-01",
                           protocol=paho.MQTTv5)  # fmt: skip
    got: list[bytes] = []
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    client.connect("127.0.0.1", broker.port, 30)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    assert got == [b"x" * 1000]
    assert not client.take_refusal() and client.refused_packets == 0
    client.disconnect()
