"""The timeline's pure rules (recorder/timeline.py) over frame tables made up here:
coverage splits at gaps, media time skips them, a playback narrowed to a part holds
exactly the part's frames, and the activity strip counts predicted frames only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from foundation.times import Window
from recorder.buffer import Segment
from recorder.export import ClipPart, plan_parts
from recorder.segment_file import FrameTable
from recorder.timeline import (
    MAX_STEP_MS,
    activity_of,
    edge_segments,
    frame_durations,
    media_time,
    narrowed,
    playback_of,
    playlist,
    runs_of,
)

STEP = 67  # about 15 fps


def made_up(starts: list[int], frames: int = 60) -> tuple[list[Segment], dict[int, FrameTable]]:
    """Segments of `frames` frames starting at `starts`, a keyframe every 15, each
    non-key frame 100 bytes and each keyframe 5000."""
    segments, tables = [], {}
    for n, start in enumerate(starts):
        rows = [(start + i * STEP, i * 10_000, 5000 if i % 15 == 0 else 100, i % 15 == 0)
                for i in range(frames)]  # fmt: skip
        segments.append(Segment(n + 1, f"seg-{n}.mp4", rows[0][0], rows[-1][0], frames, 0,
                                True, 320, 240, 15.0))  # fmt: skip
        tables[n + 1] = FrameTable.build(b"avcC", rows)
    return segments, tables


def every_time(segments: list[Segment], tables: dict[int, FrameTable]) -> list[int]:
    return [t for s in segments for t in tables[s.id].times]


def test_runs_split_at_gaps_and_media_time_skips_them() -> None:
    times = [0, 67, 134, 134 + MAX_STEP_MS + 1, 134 + MAX_STEP_MS + 68]
    runs = runs_of(times, 67)
    assert [(r.start_ms, r.end_ms, r.media_ms) for r in runs] == [
        (0, 134, 0),
        (1135, 1202, 201),
    ]
    assert [media_time(runs, t) for t in times] == [0, 67, 134, 201, 268]
    assert frame_durations(times, None, 67) == [67, 67, 67, 67, 67]
    assert frame_durations([0, 67], 5000, 67) == [67, 67]
    assert frame_durations([0, 67], 100, 67) == [67, 33]


@given(
    a=st.integers(0, 5 * 60 * STEP),
    length=st.integers(0, 5 * 60 * STEP),
    gap=st.sampled_from([STEP, 2 * STEP, 10_000]),
)
def test_a_narrowed_playback_holds_exactly_the_parts_frames(a: int, length: int, gap: int) -> None:
    starts = [1_000_000 + n * (60 * STEP) for n in range(3)]
    starts += [starts[-1] + 60 * STEP + gap - STEP, starts[-1] + 120 * STEP + gap - STEP]
    segments, tables = made_up(starts)
    whole = Window(starts[0], starts[-1] + 60 * STEP)
    playback = playback_of(plan_parts(whole, segments, tables))
    assert playback is not None
    part = Window(starts[0] + a, starts[0] + a + length)
    needed = {i: tables[i] for i in edge_segments(playback, part)}
    cut = narrowed(playback, part, needed)
    expected = [t for t in every_time(segments, tables) if part.contains(t)]
    if not expected:
        assert cut is None
        return
    assert cut is not None
    got = [
        t for p in cut.pieces for t in tables[p.segment.id].times[p.frames.start : p.frames.stop]
    ]
    assert got == expected
    assert cut.frames == len(expected)
    assert cut.media_ms(expected[0]) == 0
    medias = [cut.media_ms(t) for t in expected]
    assert medias == sorted(set(medias))  # increasing, gaps left out
    assert sum(cut.duration_ms(n) for n in range(len(cut.pieces))) == medias[-1] + cut.nominal_ms
    text = playlist(cut)
    assert text.count(".m4s") == len(cut.pieces) and text.endswith("#EXT-X-ENDLIST\n")


def test_activity_counts_predicted_frames_per_second_of_footage() -> None:
    segments, tables = made_up([10_000, 10_000 + 60 * STEP + 20_000])
    window = Window(0, 60_000)
    parts = plan_parts(window, segments, tables)
    activity = activity_of(window, parts)
    bins = activity.bins(window, 60)  # a second each
    assert bins[:10] == [None] * 10  # before the footage
    assert bins[10] == 1400  # 15 frames in its first second, one of them a keyframe
    assert bins[20] is None  # the gap
    assert all(b is not None for b in bins[35:38])
    assert activity.bins(Window(0, 5000), 3) == [None, None, None]
    assert len(activity.bins(window, 7)) == 7


def test_a_piece_per_segment_and_a_new_init_where_the_headers_change() -> None:
    segments, tables = made_up([0, 60 * STEP])
    other = tables[2]
    tables[2] = FrameTable(b"other", other.times, other.pos, other.size, other.key)
    playback = playback_of([ClipPart(s, tables[s.id], range(60)) for s in segments])
    assert playback is not None
    assert [p.init for p in playback.pieces] == [0, 1]
    text = playlist(playback)
    assert text.index("init-0.mp4") < text.index("0.m4s") < text.index("#EXT-X-DISCONTINUITY")
    assert text.index("init-1.mp4") < text.index("1.m4s")
