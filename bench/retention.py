"""Retention per segment on a long buffer: what the recorder pays after every segment it
writes, asking the index only for the segments that could go (the oldest until the plan
stops, those under live pins, the index's running byte total) against the whole-table
way it used before (every row and every pin read, the plan walked over all of them).

The index is the real one (SQLite WAL, synchronous=FULL as the recorder runs it) holding
`--hours` of `--segment-seconds` segments, each row with a 15 fps frame table as the
recorder writes it; the files are sparse (their sizes are real, their disk use none).
Three live pins hold a few minutes each, as incidents waiting for an answer do. In
steady state each step adds one segment and retention then deletes one: by age (the
buffer is exactly `--hours` long), then by the byte budget (exactly full). Both ways run
the same number of steps in turn on the same buffer; every candidate step is checked to
delete exactly what the whole-table plan says.

    python -m bench.retention [--hours 72] [--segment-seconds 4] [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.sanity import require
from foundation.times import Window
from recorder.buffer import RollingBuffer, Segment, connect_index
from recorder.retention import retention_plan
from recorder.segment_file import FrameTable, segment_file_name
from recorder.settings import RetentionLimits

FPS = 15
SEGMENT_BYTES = 1_000_000  # about 4 s of 720p15
FREE = 10**15  # the disk's free space is never the limit here
EXTRADATA = bytes(40)  # an avcC record's size


def add(buffer: RollingBuffer, start_ms: int, segment_ms: int) -> None:
    name = segment_file_name(start_ms)
    with open(buffer.root / name, "wb") as handle:
        handle.truncate(SEGMENT_BYTES)
    frames = max(1, segment_ms * FPS // 1000)
    rows = [(start_ms + k * 1000 // FPS, 0, SEGMENT_BYTES // frames, k == 0) for k in range(frames)]
    buffer.add_segment(
        file=name,
        table=FrameTable.build(EXTRADATA, rows, "veryfast"),
        synchronized=True,
        width=1280,
        height=720,
        fps=FPS,
    )


def build(root: Path, start_ms: int, count: int, segment_ms: int) -> None:
    """`count` segments from `start_ms`, indexed without waiting for the disk (set-up
    only: the measured steps run as the recorder does)."""
    conn = connect_index(root)
    conn.execute("PRAGMA synchronous = OFF")
    with RollingBuffer(root, conn) as buffer:
        for n in range(count):
            add(buffer, start_ms + n * segment_ms, segment_ms)


Way = Callable[[RollingBuffer, int, RetentionLimits], tuple[list[Segment], float]]


def whole_table(
    buffer: RollingBuffer, now_ms: int, limits: RetentionLimits
) -> tuple[list[Segment], float]:
    """Retention as it was: every row and every pin read, the plan over all of them;
    (deleted, seconds)."""
    started = time.perf_counter()
    plan = retention_plan(buffer.segments(), buffer.pins(), limits, now_ms, FREE)
    deleted = buffer.delete_segments(plan)
    return deleted, time.perf_counter() - started


def candidates(
    buffer: RollingBuffer, now_ms: int, limits: RetentionLimits
) -> tuple[list[Segment], float]:
    """`RollingBuffer.enforce_retention`, checked against the whole-table plan (the
    check is not timed); (deleted, seconds)."""
    expected = retention_plan(buffer.segments(), buffer.pins(), limits, now_ms, FREE)
    started = time.perf_counter()
    deleted = buffer.enforce_retention(now_ms, limits, FREE)
    took = time.perf_counter() - started
    require([s.id for s in deleted] == expected, "the candidate plan deletes what the old did")
    return deleted, took


def steps(
    buffer: RollingBuffer,
    way: Way,
    limits: RetentionLimits,
    now_ms: int,
    count: int,
    segment_ms: int,
) -> tuple[list[float], int]:
    """`count` steps of: a new segment, then retention; (seconds each, the new now)."""
    times = []
    for _ in range(count):
        add(buffer, now_ms, segment_ms)
        now_ms += segment_ms
        deleted, took = way(buffer, now_ms, limits)
        require(len(deleted) == 1, f"steady state deletes one segment a step, not {len(deleted)}")
        times.append(took)
    return times, now_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=72.0)
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    segment_ms = round(args.segment_seconds * 1000)
    count = max(10, round(args.hours * 3_600_000 / segment_ms))
    start_ms = 1_800_000_000_000
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as folder:
        root = Path(folder)
        t0 = time.perf_counter()
        build(root, start_ms, count, segment_ms)
        built = time.perf_counter() - t0
        print(f"index of {count} segments ({args.hours:g} h) built in {built:.1f} s")
        with RollingBuffer.open(root) as buffer:
            now_ms = start_ms + count * segment_ms
            for n, at in enumerate((0.2, 0.5, 0.8)):  # three incidents, 2 minutes each
                middle = start_ms + round(at * count) * segment_ms
                buffer.pin(f"rfa-{n}", Window(middle - 60_000, middle + 60_000), now_ms + 10**9)
            span = count * segment_ms
            by_age = RetentionLimits(max_age_hours=span / 3_600_000, max_bytes=10**15)
            figures = {}
            for label in ("age", "bytes"):
                limits = by_age
                if label == "bytes":  # exactly full: each new segment is one too many
                    limits = RetentionLimits(max_age_hours=10**6, max_bytes=buffer.total_bytes())
                old, now_ms = steps(buffer, whole_table, limits, now_ms, args.steps, segment_ms)
                new, now_ms = steps(buffer, candidates, limits, now_ms, args.steps, segment_ms)
                figures[label] = (statistics.median(old), statistics.median(new))
            rows = len(buffer.segments())
    require(rows == count, f"the buffer stays at {count} segments (has {rows})")
    for label, (old, new) in figures.items():
        print(
            f"retention by {label} per segment on {count} rows: whole table "
            f"{old * 1000:.2f} ms, candidates {new * 1000:.2f} ms (median of {args.steps})"
        )
        print(f"ratio retention by {label}, whole table / candidates: {old / new:.1f}x")


if __name__ == "__main__":
    main()
