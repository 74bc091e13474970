"""Logging what a peer can cause as often as it likes: once per interval, with a count.

A hostile client on the network can make the daemon fail to accept a connection, send it
a malformed request or trip an error a thousand times a second. A log line for each
would fill the SD card and the journal (and bury everything else), so such events are
logged the first time, then at most once per interval per kind, saying how many like it
were held back since the last line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LOG_INTERVAL_S = 60.0
_MAX_KINDS = 256  # distinct kinds remembered; more and the oldest memory is dropped


class OncePerInterval:
    """Decides whether an event of some kind is logged now. Thread-safe."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def due(self, kind: str) -> int | None:
        """None when an event of `kind` was logged less than an interval ago (this one is
        counted instead); otherwise how many were held back since, and log this one."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            if len(self._last) >= _MAX_KINDS and kind not in self._last:
                self._last.clear()
                self._held.clear()
            self._last[kind] = now
            return self._held.pop(kind, 0)


def held_note(held: int) -> str:
    """The suffix of a throttled line: how many like it went unlogged."""
    return f" ({held} more like this since the last such line)" if held else ""


class ThrottleFilter(logging.Filter):
    """A filter for a library's logger whose messages a peer can trigger (uvicorn's):
    each message template is logged at most once per interval, with a count."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self._rate = OncePerInterval(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._rate.due(f"{record.name}:{record.levelno}:{record.msg!s:.200}")
        if held is None:
            return False
        if held:
            record.msg, record.args = record.getMessage() + held_note(held), None
        return True
