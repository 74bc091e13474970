"""Which segments retention deletes: a pure function of segments, pins, limits and now.

Rules, in order:
- A live pin (until_ms > now) protects every segment overlapping its window, unless the
  pinned budget (half of max_bytes) is spent. Pins are honoured in the order they were
  made, each segment counted once; a pin that does not fit gets its newest segments
  protected first (the footage closest to the incident window's end survives longest)
  and its remaining, oldest segments fall back to ordinary retention. So a flood of
  requests cannot make the buffer stop recording, and earlier promises are kept whole.
- Every other segment is deleted oldest first (by start time) while it is older than
  max_age, or the buffer is over max_bytes, or the disk's free space is under the floor.
- When only protected segments remain, the plan stops short of the limits: pinned
  footage wins over the limits (and the recorder copes with a full disk by dropping).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from foundation.times import Window
from recorder.settings import RetentionLimits


class SegmentLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Pin:
    """Footage of `window` that must be kept until `until_ms`; `seq` orders pins by when
    they were made."""

    pin_id: str
    window: Window
    until_ms: int
    seq: int = 0

    def live(self, now_ms: int) -> bool:
        return self.until_ms > now_ms


def protected_ids(
    segments: Sequence[SegmentLike], pins: Iterable[Pin], limits: RetentionLimits, now_ms: int
) -> set[int]:
    """Segments live pins protect within the pinned budget (see module docstring)."""
    budget = limits.pinned_budget_bytes
    used = 0
    protected: set[int] = set()
    newest_first = sorted(segments, key=lambda s: (s.start_ms, s.id), reverse=True)
    for pin in sorted((p for p in pins if p.live(now_ms)), key=lambda p: (p.seq, p.pin_id)):
        for seg in newest_first:
            if seg.id in protected or not pin.window.overlaps(seg.start_ms, seg.end_ms):
                continue
            if used + seg.bytes > budget:
                continue  # a smaller, older segment of this pin may still fit
            protected.add(seg.id)
            used += seg.bytes
    return protected


def retention_plan(
    segments: Sequence[SegmentLike],
    pins: Iterable[Pin],
    limits: RetentionLimits,
    now_ms: int,
    free_bytes: int,
) -> list[int]:
    """Ids of the segments to delete, oldest first."""
    protected = protected_ids(segments, pins, limits, now_ms)
    oldest_allowed = now_ms - limits.max_age_ms
    total = sum(s.bytes for s in segments)
    free = free_bytes
    doomed: list[int] = []
    for seg in sorted(segments, key=lambda s: (s.start_ms, s.id)):
        if seg.id in protected:
            continue
        too_old = seg.end_ms < oldest_allowed
        if too_old or total > limits.max_bytes or free < limits.min_free_bytes:
            doomed.append(seg.id)
            total -= seg.bytes
            free += seg.bytes
    return doomed
