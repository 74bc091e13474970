"""The recording loop: segments on keyframes, clock jumps, a full disk, the lock."""

import threading

import av
import pytest

from foundation.clock import FakeClock
from foundation.errors import BufferLockedError
from foundation.times import Window
from recorder.buffer import BufferLock, RollingBuffer
from recorder.commands import record
from recorder.export import export_clip
from recorder.recorder import Recorder, clock_jumped
from recorder.retention import Pin
from recorder.settings import CameraSettings, StorageSettings
from recorder.synthetic import SyntheticCamera
from tests.fixtures.footage import decode_stamps

START_MS = 1_800_000_000_000


def frame_ms(i):
    """Capture time of frame i of a SteppedCamera at 15 fps (FakeClock rounds each step)."""
    return START_MS + i * 67


class SteppedCamera(SyntheticCamera):
    """A live synthetic camera on a FakeClock: each read moves time one frame on, and
    `events` change the clock at given frame numbers (jumps, loss of sync)."""

    def __init__(self, clock, frames, events=None, **kw):
        super().__init__(clock=clock, **kw)
        self._fake = clock
        self._frames = frames
        self._events = events or {}
        self._n = 0

    def read(self, stop):
        if self._n >= self._frames:
            return None
        if self._n:
            self._fake.advance(1 / self.fps)
        action = self._events.get(self._n)
        if action:
            action(self._fake)
        self._n += 1
        return super().read(stop)


def run_recorder(root, source, clock, *, free_space=None, segment_seconds=2.0, **storage):
    settings = StorageSettings(dir=root, segment_seconds=segment_seconds, **storage)
    with RollingBuffer.open(root) as buffer:
        recorder = Recorder(
            source,
            buffer,
            storage=settings,
            clock=clock,
            free_space=free_space or (lambda _p: 1 << 40),
            stop=threading.Event(),
            drop_when_behind=False,  # the fake clock makes frames faster than real time
        )
        summary = recorder.run()
        return summary, recorder.health, buffer.segments()


def segment_packets(path):
    with av.open(str(path)) as c:
        return [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.mark.parametrize(
    ("prev", "cur", "jumped"),
    [
        ((1000, 1.0), (1067, 1.067), False),
        ((1000, 1.0), (1000, 1.067), True),  # not increasing
        ((1000, 1.0), (900, 1.067), True),  # backwards
        ((1000, 1.0), (5000, 1.067), True),  # forwards
        ((1000, 1.0), (3000, 3.0), False),  # a long gap in both clocks is no jump
        ((1000, 1.0), (1800, 1.067), False),  # within tolerance
    ],
)
def test_clock_jump_detection(prev, cur, jumped):
    assert clock_jumped(prev[0], prev[1], cur[0], cur[1]) is jumped


def test_segments_start_on_keyframes_and_index_matches_pictures(tmp_path):
    clock = FakeClock(START_MS)
    src = SteppedCamera(clock, 150, width=320, height=240, fps=15)
    summary, health, segments = run_recorder(tmp_path / "b", src, clock)
    assert summary.frames == 150 == health.frames_written == health.frames_captured
    assert health.frames_dropped == 0 and health.segments_written == len(segments) == 5
    assert health.last_write_monotonic is not None
    with RollingBuffer.open(tmp_path / "b") as buffer:
        tables = buffer.frame_tables([s.id for s in segments])
    for seg in segments:
        packets = segment_packets(tmp_path / "b" / seg.file)
        assert packets[0][1], "segment must start on a keyframe"
        stamps = decode_stamps(tmp_path / "b" / seg.file)
        assert [t for _p, t in stamps] == list(tables[seg.id].times)
        assert [p for p, _t in stamps] == [t - seg.start_ms for _p, t in stamps]
        assert seg.frames == 30 and seg.synchronized
        assert seg.bytes == (tmp_path / "b" / seg.file).stat().st_size
    assert not list((tmp_path / "b").glob("*.part"))


@pytest.mark.parametrize("jump_ms", [-10_000, -67, 3_600_000])
def test_clock_jump_splits_and_marks_both_sides_unsynchronized(tmp_path, jump_ms):
    clock = FakeClock(START_MS)
    events = {40: lambda c: c.jump_wall(jump_ms)}
    src = SteppedCamera(clock, 100, events=events, width=320, height=240, fps=15)
    summary, _health, segments = run_recorder(tmp_path / "b", src, clock)
    assert summary.frames == 100
    by_time = sorted(segments, key=lambda s: s.file)
    all_stamps = []
    for seg in segments:
        stamps = [t for _p, t in decode_stamps(tmp_path / "b" / seg.file)]
        assert stamps == sorted(set(stamps)), "capture times must increase in a segment"
        assert segment_packets(tmp_path / "b" / seg.file)[0][1]
        all_stamps.extend(stamps)
    assert len(all_stamps) == 100
    jump_frame = frame_ms(40) + jump_ms
    after = next(s for s in segments if s.start_ms == jump_frame)
    before = next(s for s in by_time if s.end_ms == frame_ms(39))
    assert not after.synchronized and not before.synchronized
    untouched = [s for s in segments if s not in (after, before)]
    assert untouched and all(s.synchronized for s in untouched)


def test_losing_sync_splits_and_marks_only_unsynchronized_footage(tmp_path):
    clock = FakeClock(START_MS)
    events = {20: lambda c: c.set_synchronized(False), 50: lambda c: c.set_synchronized(True)}
    src = SteppedCamera(clock, 90, events=events, width=320, height=240, fps=15)
    _s, _h, segments = run_recorder(tmp_path / "b", src, clock)
    unsync = [s for s in segments if not s.synchronized]
    assert {s.start_ms for s in unsync} == {frame_ms(20)}
    assert sum(s.frames for s in unsync) == 30
    clip = export_clip(tmp_path / "b", Window(START_MS, START_MS + 10**6), tmp_path / "c.mp4")
    assert not clip.synchronized and clip.frames == 90
    inside = export_clip(tmp_path / "b", Window(START_MS, START_MS + 1000), tmp_path / "d.mp4")
    assert inside.synchronized


def test_full_disk_evicts_oldest_and_keeps_recording(tmp_path):
    root = tmp_path / "b"
    clock = FakeClock(START_MS)
    written = []

    def free_space(_path):
        # the disk is "full" once about four segments are on it
        used = sum(p.stat().st_size for p in root.glob("seg-*.mp4"))
        written.append(used)
        return max(0, 4 * 150_000 - used)

    floor = 150_000
    src = SteppedCamera(clock, 300, width=320, height=240, fps=15)
    summary, health, segments = run_recorder(
        root, src, clock, free_space=free_space, min_free_bytes=floor
    )
    assert summary.frames == 300 and health.frames_dropped == 0
    assert len(segments) < 10, "old segments must have been evicted"
    assert segments[-1].end_ms == frame_ms(299), "recording went on"
    assert free_space(root) >= floor or len(segments) == 1
    assert sorted(p.name for p in root.glob("seg-*.mp4")) == sorted(s.file for s in segments)


def test_pinned_footage_survives_disk_pressure(tmp_path):
    root = tmp_path / "b"
    clock = FakeClock(START_MS)
    with RollingBuffer.open(root) as buffer:
        buffer.pin("rfa-1", Window(START_MS, START_MS + 1000), START_MS + 10**9)
    src = SteppedCamera(clock, 240, width=320, height=240, fps=15)
    _s, _h, segments = run_recorder(
        root, src, clock, free_space=lambda _p: 0, min_free_bytes=1, max_bytes=1 << 30
    )
    assert segments[0].start_ms == START_MS  # the pinned first segment stays
    assert len(segments) <= 2


def test_second_recorder_refuses_while_buffer_is_held(tmp_path):
    root = tmp_path / "b"
    camera = CameraSettings(source="synthetic", width=320, height=240, fps=15)
    storage = StorageSettings(dir=root)
    with BufferLock(root), pytest.raises(BufferLockedError, match="another recorder"):
        record(camera=camera, storage=storage, seconds=1, fast=True, clock=FakeClock(START_MS))
    # once released, recording works and the fast footage ends when it started
    summary = record(
        camera=camera, storage=storage, seconds=2, fast=True, clock=FakeClock(START_MS)
    )
    assert summary.last_ms == START_MS and summary.frames == 30
    assert summary.first_ms == START_MS - round(29 * 1000 / 15)


def test_fast_refused_for_real_cameras(tmp_path):
    camera = CameraSettings(source="opencv", device="/dev/video9", width=320, height=240)
    with pytest.raises(Exception, match="synthetic"):
        record(
            camera=camera,
            storage=StorageSettings(dir=tmp_path),
            seconds=1,
            fast=True,
            clock=FakeClock(START_MS),
        )


def test_opencv_source_records_a_video_file(tmp_path, recorded_buffer):
    root, *_ = recorded_buffer
    with RollingBuffer.open(root, reconcile=False) as buffer:
        first = buffer.segments()[0]
    camera = CameraSettings(source="opencv", device=str(root / first.file), width=160, height=120)
    summary = record(
        camera=camera,
        storage=StorageSettings(dir=tmp_path / "b"),
        seconds=60,
        fast=False,
        clock=FakeClock(START_MS),
    )
    # a file is not live: every frame of it is recorded, resized to the configured size
    assert summary.frames == first.frames and summary.frames_dropped == 0
    with RollingBuffer.open(tmp_path / "b") as buffer:
        seg = buffer.segments()[0]
    assert (seg.width, seg.height) == (160, 120)


def test_pin_is_stored_as_made():
    assert Pin("a", Window(1, 2), 3).live(2) and not Pin("a", Window(1, 2), 3).live(3)


def test_a_failing_write_costs_one_segment_and_recording_goes_on(tmp_path, monkeypatch):
    import errno

    from recorder import segment_writer

    real_finish = segment_writer.SegmentWriter.finish
    calls = {"n": 0}

    def finish_with_a_full_disk(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the disk is full exactly when the second segment closes
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_finish(self)

    monkeypatch.setattr(segment_writer.SegmentWriter, "finish", finish_with_a_full_disk)
    clock = FakeClock(START_MS)
    src = SteppedCamera(clock, 120, width=320, height=240, fps=15)
    summary, health, segments = run_recorder(tmp_path / "b", src, clock)
    assert len(segments) == 3 and health.frames_dropped == 30
    assert summary.frames == 90 and health.frames_written == 120
    assert frame_ms(30) not in {s.start_ms for s in segments}
    assert not list((tmp_path / "b").glob("*.part"))
