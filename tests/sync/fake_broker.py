"""A fake MQTT 5 broker for the tests of what the device keeps for a broker (protocol.md
§3, 1.2): real sockets on loopback, speaking just enough MQTT to be believed, and
recording everything at its end of the socket.

- It answers CONNECT (recording the Receive Maximum the device announced), SUBSCRIBE
  (granting QoS 1) and PINGREQ, and records every PUBLISH the device sends: topic,
  packet id, DUP flag, arrival time and connection.
- `puback`: while set it acknowledges each PUBLISH at once; while clear it never does
  (a broker that keeps the device's messages unacknowledged). `ack_outstanding()`
  acknowledges what it held back.
- `drop_connections()` hangs up on the device, as a network cut would.
- `flood`: while set, every new connection gets `flood_count` QoS 2 PUBLISHes of
  `flood_bytes` payload each (packet ids 1, 2, ...) right after its CONNACK, and never a
  PUBREL. It counts the PUBRECs that come back (each one a message the device would
  keep) and how each flood ended.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.sync.hostile import _LoopbackServer, remaining_length

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC = 1, 2, 3, 4, 5
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


@dataclass(frozen=True, slots=True)
class Arrival:
    """One PUBLISH from the device, as the broker saw it."""

    topic: str
    mid: int
    dup: bool
    at: float  # time.monotonic() when its last byte was read
    connection: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = conn.recv(n - len(data))
        if not piece:
            raise ConnectionError("the device hung up")
        data += piece
    return data


def read_packet(conn: socket.socket) -> tuple[int, int, bytes]:
    """(packet type, flags, body) of the next packet."""
    first = _read_exact(conn, 1)[0]
    length, shift = 0, 0
    while True:
        byte = _read_exact(conn, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, first & 0x0F, _read_exact(conn, length)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + remaining_length(len(body)) + body


def receive_maximum_of(connect_body: bytes) -> int | None:
    """The Receive Maximum a CONNECT announced (None: absent, i.e. 65,535)."""
    name_len = int.from_bytes(connect_body[:2], "big")
    pos = 2 + name_len + 1 + 1 + 2  # protocol name, level, flags, keep alive
    props = Properties(PacketTypes.CONNECT)
    props.unpack(connect_body[pos:])
    return getattr(props, "ReceiveMaximum", None)


class _Peer:
    """One connection: whole packets written under a lock (the flood and the answers
    share the socket)."""

    def __init__(self, conn: socket.socket, number: int) -> None:
        self.conn = conn
        self.number = number
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._lock:
            self.conn.sendall(data)

    def answer(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the device hung up; the reader notices
            self.send(data)


class FakeBroker(_LoopbackServer):
    def __init__(self, *, flood_count: int = 0, flood_bytes: int = 0) -> None:
        self.flood_count = flood_count
        self.flood_bytes = flood_bytes
        self.puback = threading.Event()
        self.puback.set()
        self.flood = threading.Event()
        self.connected_at: list[float] = []  # time.monotonic() of each CONNECT
        self.receive_maximums: list[int | None] = []
        self.arrivals: list[Arrival] = []
        self.pubrecs = 0  # QoS 2 messages the device acknowledged receiving (and keeps)
        self.floods: list[tuple[str, int]] = []  # (how it ended, PUBLISHes written)
        self._held: list[tuple[_Peer, int]] = []  # unacknowledged PUBLISHes
        self._peers: list[_Peer] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def connections(self) -> int:
        return len(self.connected_at)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def ack_outstanding(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for peer, mid in held:
            peer.answer(packet(PUBACK, 0, mid.to_bytes(2, "big")))

    def drop_connections(self) -> None:
        """Hang up on every connected device (a network cut, seen from the broker)."""
        with self._lock:
            peers, self._peers, self._held = self._peers, [], []
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.conn.shutdown(socket.SHUT_RDWR)

    def topic_arrivals(self, topic: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.topic == topic]

    def _answer(self, conn: socket.socket) -> None:
        kind, _flags, body = read_packet(conn)
        if kind != CONNECT:
            return
        with self._lock:
            self.connected_at.append(time.monotonic())
            peer = _Peer(conn, self.connections)
            self._peers.append(peer)
            self.receive_maximums.append(receive_maximum_of(body))
        peer.answer(packet(CONNACK, 0, b"\x00\x00\x00"))  # no session, success
        if self.flood.is_set():
            threading.Thread(target=self._flood, args=(peer,), daemon=True).start()
        try:
            while not self._stop.is_set():
                self._handle(peer, *read_packet(conn))
        except (ConnectionError, OSError):
            return

    def _handle(self, peer: _Peer, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            qos = (flags >> 1) & 3
            topic_len = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + topic_len].decode()
            mid = int.from_bytes(body[2 + topic_len : 4 + topic_len], "big") if qos else 0
            arrival = Arrival(topic, mid, bool(flags & 8), time.monotonic(), peer.number)
            with self._lock:
                self.arrivals.append(arrival)
                if qos and not self.puback.is_set():
                    self._held.append((peer, mid))
                    return
            if qos:
                peer.answer(packet(PUBACK, 0, mid.to_bytes(2, "big")))
        elif kind == SUBSCRIBE:
            mid = body[:2]
            props_len, pos = _varint(body, 2)
            pos += props_len
            granted = b""
            while pos < len(body):
                topic_len = int.from_bytes(body[pos : pos + 2], "big")
                pos += 2 + topic_len + 1
                granted += b"\x01"
            peer.answer(packet(SUBACK, 0, mid + b"\x00" + granted))
        elif kind == PINGREQ:
            peer.answer(packet(PINGRESP, 0, b""))
        elif kind == PUBREC:
            with self._lock:
                self.pubrecs += 1
        elif kind == DISCONNECT:
            raise ConnectionError("the device disconnected")

    def _flood(self, peer: _Peer) -> None:
        topic = b"rfa/v1/cell/9q8yy"
        payload = b"x" * self.flood_bytes
        written = 0
        ended = "complete"
        try:
            for mid in range(1, self.flood_count + 1):
                variable = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + b"\x00"
                peer.send(packet(PUBLISH, 0b0100, variable + payload))  # QoS 2
                written += 1
        except OSError:
            ended = "hung up"
        with self._lock:
            self.floods.append((ended, written))
