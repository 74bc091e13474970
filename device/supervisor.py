"""Runs the daemon's parts in threads and restarts a part that fails, within a budget.

A part that keeps failing (more than `max_restarts` within `window_s`) is not restarted
again: the supervisor marks the daemon failed and sets the shared stop event, the daemon
exits non-zero, and systemd restarts the whole service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class RestartBudget:
    """Pure bookkeeping: may a part that just failed at `now` be restarted?"""

    max_restarts: int = 5
    window_s: float = 300.0
    _failures: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        return len(self._failures) <= self.max_restarts


class Supervisor:
    def __init__(
        self,
        stop: threading.Event,
        *,
        max_restarts: int = 5,
        window_s: float = 300.0,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = stop
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._clock = clock
        self._threads: list[tuple[str, threading.Thread]] = []
        self.failed_part: str | None = None

    def start(self, name: str, target: Callable[[], None]) -> None:
        """Run `target` in a thread; when it raises, restart it within the budget."""
        budget = RestartBudget(self._max_restarts, self._window_s)
        thread = threading.Thread(
            target=self._run, args=(name, target, budget), name=name, daemon=True
        )
        self._threads.append((name, thread))
        thread.start()

    def _run(self, name: str, target: Callable[[], None], budget: RestartBudget) -> None:
        while not self._stop.is_set():
            try:
                target()
                return  # a part that returns has finished its work (stop was set)
            except Exception:
                logger.exception("part %s failed", name)
            if not budget.allow(self._clock()):
                logger.error("part %s keeps failing; stopping the daemon", name)
                self.failed_part = name
                self._stop.set()
                return
            self._stop.wait(self._backoff_s)

    def fail(self, name: str) -> None:
        """A part outside the supervisor's threads (the recorder process) gave up."""
        logger.error("part %s keeps failing; stopping the daemon", name)
        self.failed_part = name
        self._stop.set()

    def join(self, timeout_s: float) -> list[str]:
        """Join every part in reverse start order; returns the names still running."""
        deadline = self._clock() + timeout_s
        stuck = []
        for name, thread in reversed(self._threads):
            thread.join(max(0.0, deadline - self._clock()))
            if thread.is_alive():
                stuck.append(name)
        return stuck
