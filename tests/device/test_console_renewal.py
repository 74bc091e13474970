"""A running console takes a newly issued certificate without a restart: the next
handshake gets it, through the same authority (real uvicorn listener, real sockets)."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette

from cloud.loopback import free_port
from device.console import ConsoleService
from device.console.server import ConsoleServer
from device.console.tls import CA_CERT_NAME, console_certificate, host_names
from firmware_config.schema import ConsoleConfig
from tests.fixtures.daemon import wait_for


def _served(state: Path, port: int) -> str:
    """The SHA-256 of the certificate the console serves, trusted through the
    authority alone, host name checked."""
    context = ssl.create_default_context(cafile=str(state / CA_CERT_NAME))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host_names()[0]) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_a_new_address_is_served_from_the_next_handshake(tmp_path: Path) -> None:
    port = free_port()
    config = ConsoleConfig(listen=("127.0.0.1", port))
    first = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    server = ConsoleServer(
        SimpleNamespace(app=Starlette()),  # type: ignore[arg-type]
        first,
        host="127.0.0.1",
        port=port,
    )
    service: Any = ConsoleService(server, None, None, config, tmp_path)
    server.start()
    try:
        assert _served(tmp_path, port) == first.fingerprint
        assert service.refresh_certificate() is False  # nothing changed: nothing issued
        # the device gets an address its certificate does not name yet
        service.config = ConsoleConfig(listen=("192.168.50.5", port))
        assert service.refresh_certificate() is True
        renewed = server.certificate
        assert renewed.fingerprint != first.fingerprint and "192.168.50.5" in renewed.hosts
        assert renewed.authority == first.authority
        wait_for(lambda: _served(tmp_path, port) == renewed.fingerprint, 10, "the new leaf")
    finally:
        server.stop()
