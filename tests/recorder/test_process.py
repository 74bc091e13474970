"""The recorder in its own process: health, the lock, export while it writes, kill -9."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundation.clock import SystemClock
from foundation.errors import BufferLockedError, RecorderError
from foundation.times import Window
from recorder.buffer import RollingBuffer, connect_index
from recorder.commands import record
from recorder.export import export_clip
from recorder.process import RecorderProcess
from recorder.settings import CameraSettings, StorageSettings
from tests.fixtures.footage import decode_stamps, recorded_times
from tests.fixtures.masked import THREE_MASKS, decoded_frames, hidden

CAMERA = CameraSettings(source="synthetic", width=320, height=240, fps=15)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def segment_count(root):
    """Segments indexed so far, read as the daemon's readers do (read-only): a writer's
    open switches the index to WAL, which fails with "database is locked" while the
    recorder child is still creating it."""
    try:
        conn = connect_index(root, readonly=True)
    except RecorderError:
        return 0  # not created yet
    try:
        return conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # its schema not written yet
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_recorder_process_runs_reports_health_and_holds_the_buffer(tmp_path):
    root = tmp_path / "b"
    storage = StorageSettings(dir=root, segment_seconds=1.0)
    clock = SystemClock(assume_synchronized=True)
    proc = RecorderProcess(camera=CAMERA, storage=storage, clock=clock)
    proc.start()
    try:
        assert wait_for(lambda: root.exists() and segment_count(root) >= 2)
        health = proc.health()
        assert health.frames_captured > 15 and health.segments_written >= 2
        assert health.last_write_monotonic is not None
        assert abs(time.monotonic() - health.last_write_monotonic) < 5
        with pytest.raises(BufferLockedError):
            record(camera=CAMERA, storage=storage, seconds=1, fast=True, clock=clock)
        # export works while the recorder writes, and sees only complete segments
        with RollingBuffer.open(root) as buffer:
            first, last = buffer.span()
        info = export_clip(root, Window(first, last), tmp_path / "live.mp4")
        stamps = decode_stamps(tmp_path / "live.mp4")
        assert len(stamps) == info.frames and stamps[0][1] == first
        assert wait_for(lambda: list(root.glob("*.part"))), "the open segment is being written"
    finally:
        code = proc.stop(timeout=20)
    assert code == 0
    assert not list(root.glob("*.part")), "a clean stop finishes the open segment"


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_never_corrupts_the_buffer(tmp_path):
    root = tmp_path / "b"
    storage = StorageSettings(dir=root, segment_seconds=1.0)
    clock = SystemClock(assume_synchronized=True)
    rng = random.Random(int(time.time()))
    kills = 12
    mid_segment = 0
    for _ in range(kills):
        proc = RecorderProcess(camera=CAMERA, storage=storage, clock=clock)
        proc.start()
        assert wait_for(lambda p=proc: p.health().frames_captured > 0)
        time.sleep(rng.uniform(0.3, 2.6))
        mid_segment += bool(list(root.glob("*.part")))
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_for(lambda p=proc: not p.is_alive(), timeout=10)
        assert proc.exitcode == -signal.SIGKILL
        # start-up reconciliation: no leftovers, every row has its intact file
        with RollingBuffer.open(root) as buffer:
            segments = buffer.segments()
        assert not list(root.glob("*.part"))
        files = sorted(p.name for p in root.glob("seg-*.mp4"))
        assert files == sorted(s.file for s in segments)
        for seg in segments:
            assert (root / seg.file).stat().st_size == seg.bytes
    with RollingBuffer.open(root) as buffer:
        segments = buffer.segments()
        first, last = buffer.span()
    assert mid_segment >= kills // 2, "most kills must land while a segment is open"
    assert len(segments) >= kills // 2, "most runs must have completed a segment"
    out = tmp_path / "all.mp4"
    info = export_clip(root, Window(first, last), out)
    stamps = decode_stamps(out)
    assert [t for _p, t in stamps] == recorded_times(root)
    assert all(p == t - info.first_frame_ms for p, t in stamps)


def process_gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent to reap it has closed its files)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_recorder_whose_daemon_is_killed_mid_frame_always_exits_and_frees_the_buffer(
    tmp_path,
):
    """20 times: a daemon (a real parent process) is SIGKILLed at a random moment while
    its recorder writes frames. The orphaned recorder notices on its own (nothing here
    kills it), finishes and exits within 10 s, and the next daemon's recorder gets the
    buffer lock and writes frames (it would exit with BufferLockedError otherwise)."""
    root = tmp_path / "b"
    rng = random.Random(int(time.time()))
    exits = []
    for round_ in range(20):
        parent = subprocess.Popen(
            [sys.executable, "-m", "tests.recorder.recorder_parent", str(root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = parent.stdout.readline().split()
            assert line[:1] == ["recording"], f"round {round_}: {line}"
            child = int(line[1])
            time.sleep(rng.uniform(0.0, 0.7))
        finally:
            parent.kill()
            parent.wait(timeout=10)
            parent.stdout.close()
        killed = time.monotonic()
        assert wait_for(lambda c=child: process_gone(c), timeout=10), (
            f"round {round_}: the recorder outlived its daemon by 10 s"
        )
        exits.append(time.monotonic() - killed)
        assert not list(root.glob("*.part")), "the orphan finished its open segment"
    with RollingBuffer.open(root) as buffer:
        segments = buffer.segments()
    assert len(segments) >= 20, "every round wrote at least one finished segment"
    files = sorted(p.name for p in root.glob("seg-*.mp4"))
    assert files == sorted(s.file for s in segments)
    print(f"orphaned recorder exit after its daemon's kill -9: max {max(exits):.2f} s")


def child_pids(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def started_recorder(tmp_path: Path) -> tuple[Path, RecorderProcess]:
    """A recorder process of one-second segments into tmp_path/b, started."""
    root = tmp_path / "b"
    storage = StorageSettings(dir=root, segment_seconds=1.0)
    proc = RecorderProcess(
        camera=CAMERA, storage=storage, clock=SystemClock(assume_synchronized=True)
    )
    proc.start()
    return root, proc


@pytest.mark.timeout(120)
def test_starting_again_reaps_the_previous_recorder_first(tmp_path):
    """A supervisor that restarts a recorder it judges stalled must never leave the old
    one running beside the new: `start` stops and reaps it before starting another."""
    _root, proc = started_recorder(tmp_path)
    try:
        assert wait_for(lambda: proc.health().segments_written >= 1)
        first = proc.pid
        proc.start()  # while the first still records
        assert proc.pid != first and first not in child_pids(os.getpid())
        assert wait_for(lambda: proc.health().segments_written >= 3), "the new one records"
        assert proc.is_alive(), "the new one holds the buffer: the old one let go of it"
    finally:
        assert proc.stop(timeout=20) == 0


@pytest.mark.timeout(120)
def test_masks_sent_to_a_running_recorder_reach_its_next_segment(tmp_path):
    root, proc = started_recorder(tmp_path)
    try:
        assert wait_for(lambda: root.exists() and segment_count(root) >= 2)
        before = segment_count(root)
        proc.set_masks(THREE_MASKS)
        assert proc.masks == THREE_MASKS
        assert wait_for(lambda: segment_count(root) >= before + 3)
    finally:
        assert proc.stop() == 0
    frames = decoded_frames(root)
    flags = [hidden(picture) for _seg, _t, picture in frames]
    # Unmasked footage, then from one segment's first frame on, masked footage only.
    change = flags.index(True)
    assert not any(flags[:change]) and all(flags[change:])
    assert frames[change][0] != frames[change - 1][0], "the masks changed mid-segment"
    assert change >= 15 and len(flags) - change >= 15
