"""The index: reconciliation after crashes, pins from another process, queries."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from foundation.errors import BufferLockedError, RecorderError
from foundation.times import Window
from recorder.buffer import INDEX_NAME, BufferLock, RollingBuffer
from recorder.settings import RetentionLimits
from tests.fixtures.footage import copy_buffer


@pytest.fixture
def buffer_copy(recorded_buffer, tmp_path):
    root, first, last = recorded_buffer
    return copy_buffer(root, tmp_path / "b"), first, last


def test_queries(buffer_copy):
    root, first, last = buffer_copy
    with RollingBuffer.open(root) as buffer:
        segments = buffer.segments()
        assert buffer.span() == (first, last)
        assert buffer.total_bytes() == sum(s.bytes for s in segments)
        assert buffer.segments(Window(last + 1, last + 10)) == []
        one = buffer.segments(Window(segments[1].start_ms, segments[1].start_ms))
        assert one == [segments[1]]
        # footage inside a window: the overlap with each segment's first..last frame
        assert buffer.footage_ms(Window(first, last)) == sum(
            s.end_ms - s.start_ms for s in segments
        )
        assert buffer.footage_ms(Window(first - 5000, first + 1000)) == 1000
        assert buffer.footage_ms(Window(last + 1, last + 5000)) == 0


def test_reconcile_after_crash_leftovers(buffer_copy):
    root, _first, _last = buffer_copy
    with RollingBuffer.open(root) as buffer:
        segments = buffer.segments()
    # a half-written segment, a segment whose file vanished, one truncated, one whose
    # row was lost between rename and commit
    (root / "seg-0000000000001-deadbeef.mp4.part").write_bytes(b"\0" * 1000)
    (root / segments[0].file).unlink()
    with open(root / segments[1].file, "r+b") as f:
        f.truncate(segments[1].bytes // 2)
    orphan = segments[2]
    with RollingBuffer.open(root, reconcile=False) as buffer:
        buffer.delete_segments([])  # no-op
        buffer._conn.execute("DELETE FROM segments WHERE id = ?", (orphan.id,))
    (root / "seg-0000000000002-cafebabe.mp4").write_bytes(b"not an mp4")
    with RollingBuffer.open(root) as buffer:
        after = {s.file: s for s in buffer.segments()}
    assert not list(root.glob("*.part"))
    assert segments[0].file not in after
    assert segments[1].file not in after  # its truncated file is unreadable: removed
    assert not (root / segments[1].file).exists()
    assert not (root / "seg-0000000000002-cafebabe.mp4").exists()
    back = after[orphan.file]
    assert (back.start_ms, back.end_ms, back.frames, back.bytes) == (
        orphan.start_ms,
        orphan.end_ms,
        orphan.frames,
        orphan.bytes,
    )
    assert back.synchronized is False  # unknown after a crash, so not claimed
    assert sorted(p.name for p in root.glob("seg-*.mp4")) == sorted(after)


def test_open_does_not_reconcile_under_a_running_recorder(buffer_copy):
    root, *_ = buffer_copy
    part = root / "seg-0000000000001-deadbeef.mp4.part"
    part.write_bytes(b"being written")
    with BufferLock(root), RollingBuffer.open(root):
        assert part.exists(), "a live recorder's open segment must not be touched"
    RollingBuffer.open(root).close()
    assert not part.exists()


def test_pins_are_durable_and_ordered(tmp_path):
    with RollingBuffer.open(tmp_path) as buffer:
        a = buffer.pin("a", Window(1, 2), 100)
        b = buffer.pin("b", Window(3, 4), 200)
        again = buffer.pin("a", Window(5, 6), 300)
        assert again.seq == a.seq < b.seq
        with pytest.raises(RecorderError):
            buffer.pin("", Window(1, 2), 3)
    with RollingBuffer.open(tmp_path) as buffer:
        assert [(p.pin_id, p.window, p.until_ms) for p in buffer.pins()] == [
            ("a", Window(5, 6), 300),
            ("b", Window(3, 4), 200),
        ]
        assert buffer.unpin("a") and not buffer.unpin("a")
        assert [p.pin_id for p in buffer.pins()] == ["b"]


def test_pin_from_another_process_protects_footage(buffer_copy):
    root, first, last = buffer_copy
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from recorder.buffer import RollingBuffer
        from foundation.times import Window
        with RollingBuffer.open(Path({str(root)!r}), reconcile=False) as b:
            b.pin("rfa-9", Window({first}, {first + 100}), {last + 10**9})
        """
    )
    with BufferLock(root), RollingBuffer.open(root) as buffer:
        # the "recorder" holds the lock and its connection; the daemon pins meanwhile
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert [p.pin_id for p in buffer.pins()] == ["rfa-9"]
        deleted = buffer.enforce_retention(
            last, RetentionLimits(max_bytes=10**9, min_free_bytes=10**12), free_bytes=0
        )
        remaining = buffer.segments()
    assert [s.start_ms for s in remaining] == [first]
    assert len(deleted) >= 4
    assert all(not (root / s.file).exists() for s in deleted)


def test_index_survives_copy_without_wal_files(buffer_copy, tmp_path):
    root, *_ = buffer_copy
    clone = tmp_path / "clone"
    shutil.copytree(root, clone)
    for extra in ("-wal", "-shm"):
        p = clone / (INDEX_NAME + extra)
        if p.exists():
            os.unlink(p)
    with RollingBuffer.open(clone) as buffer:
        assert buffer.segments()


def test_the_buffer_folder_is_its_owners_alone(tmp_path, caplog):
    """Created 0700 even under umask 022 (`doorbellctl record` run by hand); one left
    0755 by an older version is tightened to 0700, with one log line."""
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    previous = os.umask(0o022)
    try:
        for root in (fresh, old):
            RollingBuffer.open(root).close()
    finally:
        os.umask(previous)
    assert oct(fresh.stat().st_mode & 0o777) == "0o700"
    assert oct(old.stat().st_mode & 0o777) == "0o700"
    lines = [r.getMessage() for r in caplog.records if "open to other users" in r.getMessage()]
    assert lines == [f"{old} was open to other users (mode 0755); now 0700"]


def test_a_second_writer_is_refused_until_the_first_dies_even_by_kill_9(tmp_path):
    """The buffer's writer lock is a flock: held by a live process, refused to every
    other one with one line, and freed by the kernel when its holder is killed."""
    root = tmp_path / "buffer"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from recorder.buffer import BufferLock
                BufferLock({str(root)!r}).acquire()
                print("held", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(BufferLockedError) as refused:
            BufferLock(root).acquire()
        assert "\n" not in str(refused.value)
        assert "another recorder is writing to" in str(refused.value)
    finally:
        holder.kill()  # SIGKILL: no chance to release anything itself
        holder.wait(timeout=10)
    with BufferLock(root) as lock:
        assert lock.held


def test_a_segment_cannot_be_written_without_the_writer_lock(tmp_path):
    """The buffer itself refuses: no SegmentWriter, no reconcile, for a process that did
    not become the writer (or whose claim another process already holds)."""
    from recorder.segment_writer import SegmentWriter

    root = tmp_path / "buffer"
    with RollingBuffer.open(root) as buffer:
        with pytest.raises(RecorderError, match="not the writer"):
            SegmentWriter(buffer, width=64, height=64, fps=15.0, start_ms=1)
        with pytest.raises(RecorderError, match="not the writer"):
            buffer.reconcile()
        assert not list(root.glob("seg-*"))
        with BufferLock(root), pytest.raises(BufferLockedError, match="another recorder"):
            buffer.claim_writing()
        buffer.claim_writing()
        buffer.reconcile()
    with BufferLock(root) as lock:  # close() gave it up
        assert lock.held
