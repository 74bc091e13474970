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

The recorder runs this after every segment, on a buffer of tens of thousands of them, so
the plan never needs the whole index: `deletions` reads segments oldest first and stops
at the first one that can neither be too old (it starts inside max_age) nor is needed for
the byte limits; protection needs only the segments overlapping live pins
(`pinned_spans`); and the total size is the index's running sum. `retention_plan` is the
same plan over a whole list.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from foundation.times import Window
from recorder.settings import RetentionLimits


class SegmentLike(Protocol):
    """A segment as retention sees it: its first and last capture time (start_ms <=
    end_ms) and its size."""

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


def pinned_spans(pins: Iterable[Pin], now_ms: int) -> list[Window]:
    """The live pins' windows, overlapping ones merged, in time order: a segment overlaps
    one of these exactly when it overlaps a live pin's window (so these are all the
    segments `protected_ids` needs)."""
    spans: list[Window] = []
    for window in sorted(
        (p.window for p in pins if p.live(now_ms)), key=lambda w: (w.start_ms, w.end_ms)
    ):
        if spans and window.start_ms <= spans[-1].end_ms:
            last = spans.pop()
            window = Window(last.start_ms, max(last.end_ms, window.end_ms))
        spans.append(window)
    return spans


def deletions(
    oldest_first: Iterable[SegmentLike],
    *,
    total_bytes: int,
    protected: Collection[int],
    limits: RetentionLimits,
    now_ms: int,
    free_bytes: int,
) -> list[int]:
    """Ids of the segments to delete, oldest first. `oldest_first` is every segment by
    (start_ms, id) and `total_bytes` their sum; it is read only until nothing later can
    go: a segment that starts within max_age is not too old, nor is any after it, and
    once the bytes are within the limits they stay so."""
    oldest_allowed = now_ms - limits.max_age_ms
    total = total_bytes
    free = free_bytes
    doomed: list[int] = []
    for seg in oldest_first:
        over = total > limits.max_bytes or free < limits.min_free_bytes
        if not over and seg.start_ms >= oldest_allowed:
            break
        if seg.id in protected:
            continue
        if over or seg.end_ms < oldest_allowed:
            doomed.append(seg.id)
            total -= seg.bytes
            free += seg.bytes
    return doomed


def retention_plan(
    segments: Sequence[SegmentLike],
    pins: Iterable[Pin],
    limits: RetentionLimits,
    now_ms: int,
    free_bytes: int,
) -> list[int]:
    """Ids of the segments to delete, oldest first, from the whole list of them."""
    return deletions(
        sorted(segments, key=lambda s: (s.start_ms, s.id)),
        total_bytes=sum(s.bytes for s in segments),
        protected=protected_ids(segments, pins, limits, now_ms),
        limits=limits,
        now_ms=now_ms,
        free_bytes=free_bytes,
    )
