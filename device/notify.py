"""systemd notification (Type=notify): READY, STATUS lines and watchdog pings.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same on
a laptop. The watchdog is pinged only while frames really arrive: a stalled camera gets
the service restarted.
"""

from __future__ import annotations

import logging
import os

import sdnotify

logger = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        self._last_status = ""

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._send(f"STATUS={status}")
            self._last_status = status

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)
