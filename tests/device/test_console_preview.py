"""Thumbnails and preview clips from a real buffer of real H.264 segments: keyframes
only, inside the window only, and the clip the same frame-exact export as shares."""

from __future__ import annotations

from pathlib import Path

import av

from device.console.preview import (
    SNAPSHOT_LOOKBACK_MS,
    Preview,
    keyframe_from,
    newest_keyframe_jpeg,
    strip_points,
)
from foundation.times import Window
from recorder.segment_file import FrameTable
from tests.fixtures.footage import decode_stamps


def test_strip_points_are_evenly_spread_inside_the_window() -> None:
    window = Window(1000, 2000)
    points = strip_points(window, 4)
    assert points == [1125, 1375, 1625, 1875]
    assert strip_points(window, 0) == []


def test_keyframe_from_never_leaves_the_window() -> None:
    table = FrameTable.build(b"", [(t, 0, 1, t % 1000 == 0) for t in range(0, 4000, 100)])
    assert keyframe_from(table, 50, Window(0, 4000)) == 1000
    assert keyframe_from(table, 1000, Window(0, 4000)) == 1000
    assert keyframe_from(table, 3100, Window(0, 3900)) is None
    assert keyframe_from(table, 0, Window(1500, 1900)) is None


def test_thumbnails_are_jpegs_of_keyframes_inside_the_window(
    recorded_buffer: tuple[Path, int, int], tmp_path: Path
) -> None:
    root, first, last = recorded_buffer
    preview = Preview(root, tmp_path / "clips")
    window = Window(first + 3000, last - 3000)
    times = preview.strip(window, count=12)
    assert len(times) >= 5 and times == sorted(set(times))
    assert all(window.contains(t) for t in times)
    jpeg = preview.thumbnail(window, times[0])
    assert jpeg is not None and jpeg[:3] == b"\xff\xd8\xff"
    with av.open(__import__("io").BytesIO(jpeg)) as image:
        frame = next(image.decode(video=0))
        assert (frame.width, frame.height) == (160, 120)
    assert preview.thumbnail(window, times[0]) is jpeg  # from memory the second time
    assert preview.thumbnail(window, times[0] + 1) is None  # not a keyframe
    assert preview.thumbnail(Window(first, times[0] - 1), times[0]) is None  # outside
    assert preview.thumbnail(window, first) is None


def test_a_preview_clip_is_the_frame_exact_export(
    recorded_buffer: tuple[Path, int, int], tmp_path: Path
) -> None:
    root, first, _last = recorded_buffer
    clips = tmp_path / "clips"
    preview = Preview(root, clips)
    window = Window(first + 1234, first + 4321)
    info = preview.clip(window)
    stamps = [capture for _pts, capture in decode_stamps(info.path)]
    assert stamps and all(window.contains(t) for t in stamps)
    assert info.frames == len(stamps) == preview.footage(window).frames
    assert preview.clip(window) is info
    for n in range(6):
        preview.clip(Window(first + n * 100, first + 2000 + n * 100))
    assert len(list(clips.glob("*.mp4"))) == 4  # a few kept, the rest deleted
    preview.close()
    assert not clips.exists()


def test_home_assistants_snapshot_is_the_newest_keyframe_at_most_640_wide(
    recorded_buffer: tuple[Path, int, int], tmp_path: Path
) -> None:
    root, first, last = recorded_buffer
    jpeg = newest_keyframe_jpeg(root, last)
    assert jpeg is not None and jpeg[:3] == b"\xff\xd8\xff"
    with av.open(__import__("io").BytesIO(jpeg)) as image:
        frame = next(image.decode(video=0))
    with av.open(str(next(root.glob("*.mp4")))) as video:
        source = video.streams.video[0].codec_context
        assert frame.width == min(640, source.width)
    narrow = newest_keyframe_jpeg(root, last, width=100)
    assert narrow is not None and narrow != jpeg
    # only the last few minutes count: nothing newer than that, nothing
    assert newest_keyframe_jpeg(root, last + SNAPSHOT_LOOKBACK_MS + 60_000) is None
    assert newest_keyframe_jpeg(root, first - 1) is None
    assert newest_keyframe_jpeg(tmp_path / "no-buffer", last) is None
