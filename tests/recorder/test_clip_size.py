"""The size of an export's MP4, told before it is written (recorder/export.py's
ClipLayout through recorder/timeline.py's measure_footage): held to real exports of
real footage, byte for byte where nothing is re-encoded, and within the head's
difference where the first frames are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.times import Window
from recorder.buffer import RollingBuffer
from recorder.export import ClipLayout, export_clip, plan_parts
from recorder.timeline import measure_footage
from tests.fixtures.footage import record_fast

# The one part of the boxes that depends on the FFmpeg build: the "encoder" tag (for
# example "Lavf62.12.103", 13 bytes, the length MP4_FIXED_BYTES counts; "Lavf60.3.100",
# 12).
COUNTED_ENCODER_TAG = 13


def encoder_tag_bytes(clip: Path) -> int:
    """The length of the clip's "encoder" tag: its `data` box's size less the box's 16."""
    head = clip.read_bytes()[:4096]
    at = head.find(b"Lavf")
    assert at >= 16, "no encoder tag in the clip's moov"
    return int.from_bytes(head[at - 16 : at - 12], "big") - 16


@pytest.fixture(scope="module")
def hd_buffer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """25 s of 720p15: three of the muxer's fragments of at least 10 s."""
    root = tmp_path_factory.mktemp("hd") / "buffer"
    first_ms, last_ms = record_fast(root, seconds=25, width=1280, height=720)
    return root, first_ms, last_ms


def predicted_and_real(root: Path, window: Window, out: Path) -> tuple[int, int, int]:
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments(window)
        footage = measure_footage(window, segments, buffer.frame_tables, batch=2)
    info = export_clip(root, window, out)
    assert info.frames == footage.frames
    return footage.clip_bytes, out.stat().st_size, footage.sample_bytes


def keyframe_times(root: Path) -> list[int]:
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    return [
        t for s in segments for t, k in zip(tables[s.id].times, tables[s.id].key, strict=True) if k
    ]


def test_an_export_from_a_keyframe_is_the_size_told(
    hd_buffer: tuple[Path, int, int], tmp_path: Path
) -> None:
    root, first_ms, last_ms = hd_buffer
    keys = keyframe_times(root)
    # the whole buffer, a few segments from a keyframe, one frame
    for n, window in enumerate(
        [Window(first_ms, last_ms), Window(keys[3], keys[3] + 6_000), Window(keys[5], keys[5])]
    ):
        told, real, _video = predicted_and_real(root, window, tmp_path / f"{n}.mp4")
        tag_difference = encoder_tag_bytes(tmp_path / f"{n}.mp4") - COUNTED_ENCODER_TAG
        assert told + tag_difference == real, (window, told, real)


def test_an_export_with_a_reencoded_head_is_near_the_size_told(
    hd_buffer: tuple[Path, int, int], tmp_path: Path
) -> None:
    """Mid-GOP starts: the head's frames are re-encoded, so their sizes are the
    encoder's, known once it ran; the estimate counts the head's first frame as big as
    the keyframe it is decoded from and the others as they are. Tolerance: the bytes of
    that one GOP (at most a second of footage) in the index."""
    root, first_ms, last_ms = hd_buffer
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    for n, offset in enumerate([333, 700, 4_400, 9_100]):
        window = Window(first_ms + offset, last_ms)
        told, real, video = predicted_and_real(root, window, tmp_path / f"{n}.mp4")
        part = plan_parts(window, segments, tables)[0]
        keys, start = part.table.key, part.frames.start
        assert not keys[start], "the window starts mid-GOP"
        end = keys.find(1, start)
        gop = range(keys.rfind(1, 0, start), end if end >= 0 else len(keys))
        gop_bytes = sum(part.table.size[i] for i in gop)
        assert abs(told - real) <= gop_bytes, (window, told, real, gop_bytes)
        assert abs(told - real) < abs(video - real), (told, video, real)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 400_000), st.booleans(), st.integers(1, 4_000)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 7),
)
def test_fragments_are_counted_the_same_in_any_batches(
    frames: list[tuple[int, bool, int]], cut: int
) -> None:
    """ClipLayout's fragments (a keyframe at least FRAGMENT_SECONDS into the open one
    starts the next) come out the same whether the frames arrive one at a time or in
    batches of any size."""

    def counted(step: int) -> int:
        layout = ClipLayout()
        for at in range(0, len(frames), step):
            sizes, keys, durations = zip(*frames[at : at + step], strict=True)
            layout.add(np.array(sizes), np.array(keys), np.array(durations))
        assert layout.sample_bytes == sum(f[0] for f in frames)
        return layout.file_bytes()

    assert counted(1) == counted(cut) == counted(len(frames))
