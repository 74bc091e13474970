"""The console's TCP listener: what keeps anyone on the home network from holding its
connections (and with them the daemon's file descriptors) hostage.

Why not uvicorn's own listener: uvicorn hands its socket to asyncio's `create_server`,
which (a) waits 60 s for a TLS handshake that never comes and offers no way to shorten
that through uvicorn, (b) keeps a connection whose first request never completes open
for ever (uvicorn's `timeout_keep_alive` runs only between requests), (c) has no cap on
connections, counting those still in their handshake (uvicorn's `limit_concurrency`
answers 503 only after a request arrived, by then the descriptor is long taken), and
(d) logs a traceback each time `accept()` fails (EMFILE), every second. So this module
accepts connections itself, on uvicorn's event loop, and hands each to uvicorn's own
HTTP/1.1 protocol (h11), which then works exactly as under uvicorn's listener:

- at most MAX_CONNECTIONS at a time, handshakes and closings included (a connection
  counts until its descriptor is closed). When a new one comes at the cap, a
  connection that has not yet delivered a request (in its handshake, or idle) is closed
  to make room: the oldest of the source holding the most connections. So one hostile
  client fills the console only until anyone else connects; if none can be closed
  (all busy answering, or already closing) the new one is reset at once (no log line);
- a TLS handshake gets HANDSHAKE_S; then each request, headers and body, must arrive
  whole within REQUEST_S of the connection becoming ready (or of the previous answer),
  or the connection is closed without a word;
- a failing `accept()` is retried after a pause and logged once a minute, with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from device.console.auth import source_group
from foundation.lograte import OncePerInterval, held_note

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
HANDSHAKE_S = 5.0
REQUEST_S = 10.0
ACCEPT_PAUSE_S = 0.5  # after a failed accept(): the listener stays readable, don't spin
BACKLOG = 1024  # queued in the kernel, not holding descriptors: an owner is not dropped

_accept_errors = OncePerInterval()


@dataclass(eq=False)
class Slot:
    """One accepted connection, from accept() to close."""

    sock: socket.socket
    source: str
    opened_at: float
    task: asyncio.Task[Any] | None = None
    protocol: GuardedH11Protocol | None = None  # once the handshake is done
    busy: bool = False  # a whole request arrived and its answer is not finished
    closing: bool = False
    released: bool = field(default=False)  # its descriptor is closed

    @property
    def evictable(self) -> bool:
        return not self.busy and not self.closing and not self.released

    def close(self) -> None:
        """Close it now, quietly (a handshake is cancelled, a connection aborted). It
        keeps its place in the count until its descriptor is closed."""
        self.closing = True
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abort()
        elif self.task is not None:
            self.task.cancel()


def to_evict(slots: list[Slot]) -> Slot | None:
    """Which connection to close for a new one, at the cap: among those not busy, the
    oldest of the source that holds the most connections; None if all are busy."""
    held: dict[str, int] = {}
    for slot in slots:
        held[slot.source] = held.get(slot.source, 0) + 1
    candidates = [s for s in slots if s.evictable]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-held[s.source], s.opened_at))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request to arrive whole, telling
    its slot when it is busy and when it is gone, and answering a request that is not
    HTTP with the same security headers as every other answer."""

    def __init__(
        self,
        *args: Any,
        slot: Slot,
        release: Any,
        headers: list[tuple[bytes, bytes]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot
        self._release = release
        self._headers = headers
        self._deadline: asyncio.TimerHandle | None = None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not an HTTP request (its own, which has
        none of the console's headers), then close."""
        with contextlib.suppress(h11.LocalProtocolError):
            body = b"not an HTTP request"
            head = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *self._headers,
            ]
            for event in (
                h11.Response(status_code=400, headers=head, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._slot.protocol = self
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_deadline()
        self._release(self._slot)

    def _follow(self) -> None:
        """Busy while a whole request is being answered; otherwise waiting for one, on
        a deadline (armed once per wait: trickling bytes does not extend it)."""
        cycle = self.cycle
        busy = cycle is not None and not cycle.more_body and not cycle.response_complete
        self._slot.busy = busy
        if busy:
            self._stop_deadline()
        elif self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(REQUEST_S, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._slot.busy:
            self.transport.abort()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class Listener:
    """The listening socket and its accept loop, on uvicorn's event loop. Has the
    `close()` and `wait_closed()` uvicorn's shutdown calls on its servers."""

    def __init__(
        self,
        server: uvicorn.Server,
        ssl_context: ssl.SSLContext,
        *,
        host: str,
        port: int,
        headers: list[tuple[bytes, bytes]],
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._server = server
        self._ssl = ssl_context
        self._headers = headers
        self._max = max_connections
        self._slots: list[Slot] = []
        self.refused = 0
        self.evicted = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._sock.setblocking(False)
        self._task: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._sock]

    @property
    def open_connections(self) -> int:
        return len(self._slots)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sock.close()
        for slot in list(self._slots):
            if slot.protocol is None:  # handshakes; uvicorn shuts the connections down
                slot.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ECONNABORTED...
                held = _accept_errors.due(f"accept {exc.errno}")
                if held is not None:
                    logger.warning(
                        "console: cannot accept a connection: %s%s",
                        exc.strerror or exc,
                        held_note(held),
                    )
                await asyncio.sleep(ACCEPT_PAUSE_S)
                continue
            if self._admit(conn, str(address[0]), loop):
                # A ready accept() does not yield to the loop: let the connection closed
                # to make room actually close before the next one is taken.
                await asyncio.sleep(0)

    def _admit(self, conn: socket.socket, host: str, loop: asyncio.AbstractEventLoop) -> bool:
        """Take the connection, closing another to make room at the cap (True then);
        or reset it at once when none can be closed."""
        source = source_group(host)
        evicted = False
        if len(self._slots) >= self._max:
            victim = to_evict(self._slots)
            if victim is None or len(self._slots) >= 2 * self._max:
                self.refused += 1
                _reset(conn)
                return False
            self.evicted += 1
            victim.close()
            evicted = True
        # Nagle's algorithm off. asyncio's transports set TCP_NODELAY only on a socket
        # whose protocol number says TCP, and socket.create_server's (and those it
        # accepts) say 0. uvicorn writes a response's headers and body apart, and with
        # Nagle a small body (a playlist, an HLS init) waited for the phone's delayed
        # ACK: 40 ms, twice in every tap on the timeline (bench.console_tap).
        with contextlib.suppress(OSError):  # a connection already reset
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot = Slot(conn, source, loop.time())
        self._slots.append(slot)
        slot.task = loop.create_task(self._open(slot, loop))
        return evicted

    async def _open(self, slot: Slot, loop: asyncio.AbstractEventLoop) -> None:
        config = self._server.config

        def protocol() -> GuardedH11Protocol:
            return GuardedH11Protocol(
                config=config,
                server_state=self._server.server_state,
                app_state=self._server.lifespan.state,
                _loop=loop,
                slot=slot,
                release=self._release,
                headers=self._headers,
            )

        try:
            await loop.connect_accepted_socket(
                protocol, slot.sock, ssl=self._ssl, ssl_handshake_timeout=HANDSHAKE_S
            )
        except (Exception, asyncio.CancelledError):
            # A handshake that failed, timed out or was cut short: nothing to log (a
            # port scan does this), the socket is closed and the slot freed.
            self._release(slot)
            slot.sock.close()

    def _release(self, slot: Slot) -> None:
        if not slot.released:
            slot.released = True
            with contextlib.suppress(ValueError):
                self._slots.remove(slot)


def _reset(conn: socket.socket) -> None:
    """Close at once with a reset: no TLS, no lingering, nothing held."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
