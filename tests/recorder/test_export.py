"""Frame-exact export, proved by decoding every frame and reading the time drawn on it."""

import json
import os
import shutil
import subprocess
import sys
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.errors import NoFootageError
from foundation.times import Window, format_time
from recorder.buffer import RollingBuffer
from recorder.commands import clip
from recorder.export import export_clip, frames_in
from tests.fixtures.footage import decode_stamps, record_fast, recorded_times

# ---- the pure decision ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 1000, [0, 1, 2]),
        (100, 100, [1]),
        (101, 199, []),
        (-50, -1, []),
        (201, 5000, []),
        (100, 200, [1, 2]),
        (-5, 0, [0]),
    ],
)
def test_frames_in_table(start, end, expected):
    assert list(frames_in(Window(start, end), [0, 100, 200])) == expected


@given(
    st.lists(st.integers(0, 10_000), unique=True, max_size=50).map(sorted),
    st.integers(-100, 10_100),
    st.integers(0, 5000),
)
def test_frames_in_matches_definition(times, start, length):
    window = Window(start, start + length)
    chosen = frames_in(window, times)
    assert [times[i] for i in chosen] == [t for t in times if start <= t <= start + length]
    assert list(frames_in(window, array("q", times))) == list(chosen)


# ---- integration ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def footage(recorded_buffer):
    root, first_ms, last_ms = recorded_buffer
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    keys = sorted(
        int(t)
        for s in segments
        for t, k in zip(tables[s.id].times, tables[s.id].key, strict=True)
        if k
    )
    return root, first_ms, last_ms, recorded_times(root), segments, keys


def check_clip(path, info, expected):
    """Every frame decodes, carries the right capture time, and pts == capture - first."""
    stamps = decode_stamps(path)
    assert [t for _pts, t in stamps] == expected
    assert all(pts == t - info.first_frame_ms for pts, t in stamps)
    assert info.frames == len(expected)
    assert info.first_frame_ms == expected[0] and info.last_frame_ms == expected[-1]


def expected_in(times, window):
    return [t for t in times if window.start_ms <= t <= window.end_ms]


def window_cases(first, last, segments, keys, times):
    seg = segments[1]
    mid_gop = times[times.index(keys[3]) + 5]
    return {
        "inside one segment": Window(seg.start_ms + 300, seg.end_ms - 300),
        "across many": Window(segments[0].start_ms + 700, segments[-1].end_ms - 900),
        "one segment exactly": Window(seg.start_ms, seg.end_ms),
        "across a segment edge exactly": Window(segments[1].end_ms, segments[2].start_ms),
        "single frame": Window(times[37], times[37]),
        "single non-key frame": Window(mid_gop, mid_gop),
        "partial GOP head": Window(mid_gop, mid_gop + 3000),
        "starts on a keyframe": Window(keys[4], keys[4] + 2500),
        "begins before the footage": Window(first - 60_000, first + 2_000),
        "ends after the footage": Window(last - 2_500, last + 60_000),
        "whole buffer and more": Window(first - 1, last + 1),
    }


@pytest.mark.parametrize(
    "case",
    [
        "inside one segment",
        "across many",
        "one segment exactly",
        "across a segment edge exactly",
        "single frame",
        "single non-key frame",
        "partial GOP head",
        "starts on a keyframe",
        "begins before the footage",
        "ends after the footage",
        "whole buffer and more",
    ],
)
def test_export_window_is_frame_exact(footage, tmp_path, case):
    root, first, last, times, segments, keys = footage
    window = window_cases(first, last, segments, keys, times)[case]
    expected = expected_in(times, window)
    assert expected, "the case must select footage"
    out = tmp_path / "clip.mp4"
    progress = []
    info = export_clip(root, window, out, progress=lambda d, t: progress.append((d, t)))
    check_clip(out, info, expected)
    assert info.synchronized and (info.width, info.height) == (320, 240)
    assert info.bytes == out.stat().st_size
    assert progress[-1] == (len(expected), len(expected))


def test_clip_is_valid_for_ffprobe_and_carries_first_frame_time(footage, tmp_path):
    root, first, last, times, segments, keys = footage
    window = Window(times[10], times[200])
    out = tmp_path / "clip.mp4"
    info = clip(storage_dir=root, window=window, out=out)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(probe.stdout)
    stream = data["streams"][0]
    assert stream["codec_name"] == "h264" and stream["codec_tag_string"] == "avc1"
    assert int(stream["nb_read_frames"]) == 191 == info.frames
    tags = data["format"]["tags"]
    assert tags["first_frame_ms"] == str(times[10])
    assert tags["first_frame_at"] == format_time(times[10])
    assert tags["creation_time"].startswith(format_time(times[10])[:19])
    # ffmpeg decodes the whole clip without a single error
    check = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stderr.strip() == ""


@pytest.mark.parametrize("where", ["before", "after", "between frames"])
def test_window_without_footage_is_an_error_and_leaves_no_file(footage, tmp_path, where):
    root, first, last, times, _segments, _keys = footage
    window = {
        "before": Window(first - 10_000, first - 1),
        "after": Window(last + 1, last + 10_000),
        "between frames": Window(times[5] + 1, times[6] - 1),
    }[where]
    out = tmp_path / "clip.mp4"
    with pytest.raises(NoFootageError, match="no footage between"):
        export_clip(root, window, out)
    assert list(tmp_path.iterdir()) == []


def test_empty_or_missing_buffer_is_no_footage(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(NoFootageError):
        export_clip(tmp_path / "nothing-here", Window(0, 10), out)
    RollingBuffer.open(tmp_path / "empty").close()
    with pytest.raises(NoFootageError):
        export_clip(tmp_path / "empty", Window(0, 10), out)
    assert not out.exists()


def test_overlapping_footage_is_left_out_so_times_increase(tmp_path):
    root = tmp_path / "buf"
    first_a, last_a = record_fast(root, seconds=6, end_ms=2_000_000_000_000)
    # a second fast recording over the same seconds (as if the clock stepped back)
    record_fast(root, seconds=3, end_ms=2_000_000_000_000 - 1000)
    out = tmp_path / "clip.mp4"
    info = export_clip(root, Window(first_a, last_a), out)
    stamps = [t for _p, t in decode_stamps(out)]
    assert stamps == sorted(set(stamps))
    assert stamps[0] == first_a and info.frames == len(stamps)


def test_command_line_entry_exports(footage, tmp_path):
    root, first, last, times, *_ = footage
    out = tmp_path / "c.mp4"
    args = ["--dir", str(root), "--start", format_time(times[3]), "--end", format_time(times[40])]
    run = subprocess.run(
        [sys.executable, "-m", "recorder.commands", "clip", *args, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert [t for _p, t in decode_stamps(out)] == times[3:41]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.commands",
            "clip",
            "--dir",
            str(root),
            "--start",
            "2001-01-01T00:00:00Z",
            "--end",
            "2001-01-01T00:00:01Z",
            "--out",
            str(out) + "x",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no footage" in bad.stderr


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="hiding /proc needs unshare and root (as in a chroot or CI container)",
)
def test_clip_is_frame_exact_where_proc_is_not_mounted(footage, tmp_path):
    """A chroot, an early-boot unit or a tight sandbox may have no /proc: the clip is
    cut through PyAV's own API, so it still works there, frame by frame."""
    root, _first, _last, times, segments, keys = footage
    window = window_cases(_first, _last, segments, keys, times)["partial GOP head"]
    out = tmp_path / "c.mp4"
    # A mount namespace of its own, with a tmpfs over /proc that reaches no one else:
    # /proc is made private there first (a chroot's / is not a mount point, so
    # `unshare --propagation private` cannot be used inside one).
    hidden = (
        "mount --make-rprivate /proc && mount -t tmpfs none /proc"
        ' && test ! -e /proc/self/mem && exec "$@"'
    )
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", hidden, "sh"]
        + [sys.executable, "-m", "recorder.commands", "clip", "--dir", str(root)]
        + ["--start", format_time(window.start_ms), "--end", format_time(window.end_ms)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert [t for _p, t in decode_stamps(out)] == expected_in(times, window)


def test_later_part_beside_overlapping_footage_starts_on_a_keyframe(tmp_path):
    root = tmp_path / "buf"
    end_a = 2_000_000_000_000
    record_fast(root, seconds=4, end_ms=end_a, segment_seconds=4)
    # B overlaps A's tail and goes on well past it
    record_fast(root, seconds=8, end_ms=end_a + 6000, segment_seconds=8)
    with RollingBuffer.open(root) as buffer:
        a, b = buffer.segments()
    assert b.start_ms < a.end_ms
    window = Window(a.end_ms - 500, b.end_ms)
    out = tmp_path / "clip.mp4"
    info = export_clip(root, window, out)
    stamps = [t for _p, t in decode_stamps(out)]
    assert stamps == sorted(set(stamps)) and info.frames == len(stamps)
    assert stamps[0] >= window.start_ms and stamps[-1] == b.end_ms


def test_clip_across_different_encoder_settings_is_tagged_avc3_and_decodes(tmp_path):
    import threading

    from foundation.clock import FakeClock
    from recorder.recorder import Recorder
    from recorder.settings import StorageSettings
    from recorder.synthetic import SyntheticCamera

    root = tmp_path / "buf"
    for end, preset in [(2_000_000_000_000, "ultrafast"), (2_000_000_004_000, "veryfast")]:
        clock = FakeClock(end)
        camera = SyntheticCamera(width=320, height=240, fps=15, clock=clock, fast_seconds=3.9)
        with RollingBuffer.open(root) as buffer:
            Recorder(
                camera,
                buffer,
                storage=StorageSettings(dir=root),
                clock=clock,
                free_space=lambda _p: 1 << 40,
                stop=threading.Event(),
                preset=preset,
            ).run()
    times = recorded_times(root)
    out = tmp_path / "clip.mp4"
    info = export_clip(root, Window(times[7], times[-1]), out)
    stamps = decode_stamps(out)
    assert [t for _p, t in stamps] == times[7:]
    assert all(p == t - info.first_frame_ms for p, t in stamps)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_tag_string",
            "-of",
            "csv=p=0",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "avc3"
    check = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stderr.strip() == ""


def test_unwritable_destination_is_a_clear_error(footage, tmp_path):
    from foundation.errors import RecorderError

    root, first, last, times, *_ = footage
    with pytest.raises(RecorderError, match="cannot write the clip"):
        export_clip(root, Window(times[0], times[20]), tmp_path / "missing-dir" / "c.mp4")
    assert not (tmp_path / "missing-dir").exists()
