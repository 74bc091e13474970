"""The console's own accept loop (device/console/listener.py) on real sockets."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from types import SimpleNamespace

from starlette.applications import Starlette

from cloud.loopback import free_port
from device.console.server import ConsoleServer
from device.console.tls import console_certificate
from tests.fixtures.daemon import wait_for


def test_an_accepted_connection_sends_without_waiting_for_acks(tmp_path: Path) -> None:
    """TCP_NODELAY on the connection the console accepted, read from its own socket:
    without it, the body of a small answer (a playlist, an HLS init) waits for the
    phone's delayed ACK after its headers, 40 ms each (bench.console_tap)."""
    port = free_port()
    certificate = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    server = ConsoleServer(
        SimpleNamespace(app=Starlette()),  # type: ignore[arg-type]
        certificate,
        host="127.0.0.1",
        port=port,
    )
    server.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(12).startswith(b"HTTP/1.1")
            listener = server._server.listener
            assert listener is not None
            wait_for(lambda: listener.open_connections == 1, 10, "the connection's slot")
            (slot,) = listener._slots
            assert slot.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.stop()
