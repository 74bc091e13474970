"""Retention through the real index: the rows it asks SQLite for (the oldest until the
plan stops, those under live pins, the running total) give the same deletions as the
whole-table plan did, for random buffers, pins and budgets."""

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.times import Window
from recorder.buffer import INDEX_NAME, RollingBuffer
from recorder.segment_file import FrameTable, segment_file_name
from recorder.settings import RetentionLimits
from tests.recorder.test_retention import NOW, H, whole_table_plan

# Within 30 hours, so that pins often hold segments and the age limit often cuts them
segment_specs = st.lists(
    st.tuples(st.integers(0, 30 * H), st.integers(0, H), st.integers(1, 400)),
    max_size=20,
)
pin_specs = st.lists(
    st.tuples(st.integers(0, 30 * H), st.integers(0, 5 * H), st.integers(-H, H)),
    max_size=4,
)
limit_values = st.builds(
    RetentionLimits,
    max_age_hours=st.floats(1, 40),
    max_bytes=st.integers(1, 4000),
    min_free_bytes=st.integers(0, 3000),
)


def add(buffer: RollingBuffer, start_ms: int, end_ms: int, size: int) -> None:
    """A segment file of `size` bytes (sparse: no disk is used) and its index row."""
    name = segment_file_name(start_ms)
    with open(buffer.root / name, "wb") as handle:
        handle.truncate(size)
    rows = [(start_ms, 0, size, True)] + ([(end_ms, 0, 0, False)] if end_ms > start_ms else [])
    table = FrameTable.build(b"", rows)
    buffer.add_segment(file=name, table=table, synchronized=True, width=16, height=16, fps=15)


def total_by_sum(root: Path) -> int:
    conn = sqlite3.connect(root / INDEX_NAME)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments").fetchone()[0])
    finally:
        conn.close()


@given(segment_specs, pin_specs, limit_values, st.integers(0, 5000))
@settings(max_examples=100, deadline=None)
def test_the_index_deletes_what_the_whole_table_plan_did(specs, pin_spec, limits, free):
    with tempfile.TemporaryDirectory() as folder, RollingBuffer.open(Path(folder)) as buffer:
        for ago, duration, size in specs:
            add(buffer, NOW - ago, NOW - ago + duration, size)
        for n, (ago, duration, live) in enumerate(pin_spec):
            buffer.pin(f"p{n}", Window(NOW - ago, NOW - ago + duration), NOW + live)
        before = buffer.segments()
        expected = whole_table_plan(before, buffer.pins(), limits, NOW, free)

        deleted = buffer.enforce_retention(NOW, limits, free)

        assert [s.id for s in deleted] == expected
        assert [s.id for s in buffer.segments()] == [s.id for s in before if s.id not in expected]
        assert not any((buffer.root / s.file).exists() for s in deleted)
        assert buffer.total_bytes() == total_by_sum(buffer.root)


def test_an_index_from_before_the_running_total_starts_from_its_sum(tmp_path):
    with RollingBuffer.open(tmp_path) as buffer:
        for n in range(5):
            add(buffer, NOW + 4000 * n, NOW + 4000 * n + 3900, 100 + n)
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    with conn:  # as an index written by the version before the total
        for trigger in ("totals_add", "totals_drop", "totals_change"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE totals")
    conn.close()
    with RollingBuffer.open(tmp_path) as buffer:
        assert buffer.total_bytes() == 510
        assert [s.bytes for s in buffer.segments(Window(NOW + 8000, NOW + 8000))] == [102]
        add(buffer, NOW + 20_000, NOW + 24_000, 7)
        gone = buffer.enforce_retention(NOW + 24_000, RetentionLimits(max_bytes=300), 10**12)
        assert [s.bytes for s in gone] == [100, 101, 102]
        assert buffer.total_bytes() == 103 + 104 + 7 == total_by_sum(tmp_path)


def test_a_second_process_adding_and_deleting_keeps_the_total(tmp_path):
    """The total is kept by the index itself, so any connection's changes count."""
    with RollingBuffer.open(tmp_path) as first, RollingBuffer.open(tmp_path) as second:
        add(first, NOW, NOW + 4000, 1000)
        add(second, NOW + 4000, NOW + 8000, 2000)
        assert first.total_bytes() == second.total_bytes() == 3000
        second.delete_segments([s.id for s in second.segments()][:1])
        assert first.total_bytes() == 2000 == total_by_sum(tmp_path)


@given(segment_specs, st.integers(0, 31 * H), st.integers(0, 3 * H), st.booleans())
@settings(max_examples=40, deadline=None)
def test_a_window_finds_every_segment_overlapping_it(specs, ago, duration, delete_longest):
    """The window query reads a range of start times bounded by the longest segment
    ever indexed; a long segment (a re-indexed file, another segment length) among
    short ones is still found, also after the longest is gone."""
    window = Window(NOW - ago, NOW - ago + duration)
    with tempfile.TemporaryDirectory() as folder, RollingBuffer.open(Path(folder)) as buffer:
        for spec_ago, spec_duration, size in specs:
            add(buffer, NOW - spec_ago, NOW - spec_ago + spec_duration, size)
        every = buffer.segments()
        if delete_longest and every:
            longest = max(every, key=lambda s: s.end_ms - s.start_ms)
            buffer.delete_segments([longest.id])
            every = buffer.segments()
        found = buffer.segments(window)
    assert found == [s for s in every if window.overlaps(s.start_ms, s.end_ms)]
