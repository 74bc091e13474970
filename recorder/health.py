"""The recorder's health counters: what a watchdog reads, in shared memory so a daemon can
read them from a recorder running in its child process. One writer (the recording
process), no lock: a lock shared with a process that can be killed may never be released."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RecorderHealth:
    """What a watchdog looks at. `frames_written` counts frames handed to a segment
    file; a segment that then fails to be written (a full disk) counts its frames in
    `frames_dropped` as well. `last_write_monotonic` is the monotonic time at which the
    last frame was handed to a segment (None before the first)."""

    frames_captured: int
    frames_dropped: int
    frames_written: int
    segments_written: int
    last_write_monotonic: float | None


class HealthCounters:
    """Counters in shared memory, so a parent process can read a child recorder's health.
    One writer (the recording process); 8-byte aligned doubles are read whole."""

    FIELDS = ("captured", "dropped", "written", "segments", "last_write")

    def __init__(self, array: Any | None = None) -> None:
        if array is None:
            array = multiprocessing.get_context("spawn").RawArray("d", len(self.FIELDS))
            array[4] = -1.0
        self.array = array

    def add(self, field: str, amount: float = 1) -> None:
        self.array[self.FIELDS.index(field)] += amount

    def set_last_write(self, mono: float) -> None:
        self.array[4] = mono

    def snapshot(self) -> RecorderHealth:
        a = list(self.array)
        return RecorderHealth(
            frames_captured=int(a[0]),
            frames_dropped=int(a[1]),
            frames_written=int(a[2]),
            segments_written=int(a[3]),
            last_write_monotonic=None if a[4] < 0 else a[4],
        )
