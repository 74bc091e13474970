"""Stop signals: what a loop is stopped by, and one made of several.

The recorder's capture thread stops when the daemon stops or the recorder halts; a
share's HTTP exchange stops when the daemon stops or the owner cancels that share. Both
need one signal that is set when any of its parts is."""

from __future__ import annotations

from typing import Protocol


class StopSignal(Protocol):
    """A threading.Event, or anything as cheap to ask. (Never a multiprocessing Event:
    its lock is shared with a process that can die holding it.)"""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def set(self) -> None: ...


class EitherStop:
    """Set when any of its signals is set; `set()` sets all of them."""

    def __init__(self, *events: StopSignal) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        # Poll in short steps: two events cannot be waited on together.
        step = 0.05
        remaining = timeout
        while not self.is_set():
            if remaining is not None and remaining <= 0:
                return False
            delay = step if remaining is None else min(step, remaining)
            self._events[0].wait(delay)
            if remaining is not None:
                remaining -= delay
        return True

    def set(self) -> None:
        for e in self._events:
            e.set()
