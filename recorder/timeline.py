"""What a window of the buffer holds, for the owner's timeline and player: where there
is footage and where not, how much happens in it, and how it plays as one stream.

Pure functions over the index (segments and their frame tables, as export plans them):
nothing here opens a segment file or decodes a frame, so a 12-hour window costs one
read of its frame tables.

- Coverage: the runs of footage, split wherever two frames are more than MAX_STEP_MS
  apart (a gap: the recorder was off, or the camera stalled).
- Activity: a cheap motion measure, the bytes of non-key frames per second of footage.
  With a fixed keyframe interval and no B-frames, a predicted frame's size follows how
  much of the picture changed, so a still porch writes little and a visitor a lot.
- Playback: the frames of a window played one after another, gaps left out. Media time
  (what the player's clock shows) runs with capture time inside a run and steps one
  nominal frame across a gap, so `media_time` maps one to the other with the runs
  alone. The frames come in pieces, one per segment, cut to the window frame-exactly:
  the pieces a player asks for (device/console/video.py serves them).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from foundation.times import Window
from recorder.buffer import Segment
from recorder.export import ClipLayout, ClipPart, frames_in, plan_parts
from recorder.segment_file import FrameTable

MAX_STEP_MS = 1000  # two frames further apart than this have a gap between them


@dataclass(frozen=True, slots=True)
class Run:
    """Footage without a gap: capture times of its first and last frame, and the media
    time at which its first frame plays."""

    start_ms: int
    end_ms: int
    media_ms: int


@dataclass(frozen=True, slots=True)
class Piece:
    """What one segment gives the playback: the indices of its frames taken, their first
    and last capture time, and which of the playback's inits (stream headers) it uses."""

    segment: Segment
    frames: range
    first_ms: int
    last_ms: int
    init: int


@dataclass(frozen=True, slots=True)
class Playback:
    """The frames of a window as a player gets them: pieces in order, the runs that map
    capture time to media time, the nominal frame duration (for the last frame and each
    gap) and, per init, a segment file that carries its stream headers."""

    pieces: tuple[Piece, ...]
    runs: tuple[Run, ...]
    nominal_ms: int
    inits: tuple[Segment, ...]

    @property
    def frames(self) -> int:
        return sum(len(p.frames) for p in self.pieces)

    @property
    def first_ms(self) -> int:
        return self.pieces[0].first_ms

    @property
    def last_ms(self) -> int:
        return self.pieces[-1].last_ms

    def media_ms(self, capture_ms: int) -> int:
        return media_time(self.runs, capture_ms)

    def duration_ms(self, n: int) -> int:
        """Media duration of piece `n`: up to the next piece's first frame, the last
        piece up to the end of its last frame."""
        start = self.media_ms(self.pieces[n].first_ms)
        if n + 1 < len(self.pieces):
            return self.media_ms(self.pieces[n + 1].first_ms) - start
        return self.media_ms(self.pieces[n].last_ms) + self.nominal_ms - start


def media_time(runs: Sequence[Run], capture_ms: int) -> int:
    """The media time of the frame captured at `capture_ms` (which lies in a run)."""
    i = max(0, bisect.bisect_right([r.start_ms for r in runs], capture_ms) - 1)
    return runs[i].media_ms + capture_ms - runs[i].start_ms


def frame_durations(times: Sequence[int], next_ms: int | None, nominal_ms: int) -> list[int]:
    """Each frame's media duration: the step to the next frame (the one after `times`
    is `next_ms`, None at the end of the playback), one nominal frame across a gap."""
    following = [*times[1:], next_ms]
    return [
        nominal_ms if n is None or n - t > MAX_STEP_MS else n - t
        for t, n in zip(times, following, strict=True)
    ]


def nominal_ms(fps: float) -> int:
    return max(1, round(1000 / fps))


def _all_frames(parts: Sequence[ClipPart]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capture times, sample sizes and keyframe flags of every frame of `parts`."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, bool)
    times, sizes, keys = [], [], []
    for p in parts:
        a, b = p.frames.start, p.frames.stop
        times.append(np.frombuffer(p.table.times, np.int64)[a:b])
        sizes.append(np.frombuffer(p.table.size, np.int64)[a:b])
        keys.append(np.frombuffer(p.table.key, np.uint8)[a:b])
    return np.concatenate(times), np.concatenate(sizes), np.concatenate(keys).astype(bool)


def runs_of(times: np.ndarray | Sequence[int], nominal: int) -> list[Run]:
    """The gap-free runs of increasing capture times, with their media times."""
    t = np.asarray(times, np.int64)
    if not len(t):
        return []
    cuts = np.flatnonzero(np.diff(t) > MAX_STEP_MS) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts - 1, [len(t) - 1]))
    runs, media = [], 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        runs.append(Run(int(t[s]), int(t[e]), media))
        media += int(t[e] - t[s]) + nominal
    return runs


@dataclass(frozen=True, slots=True)
class Activity:
    """Per second of the window (second k starts at window.start_ms + 1000 k): the bytes
    of its non-key frames and how many frames it holds."""

    window: Window
    nonkey_bytes: np.ndarray
    frames: np.ndarray

    def bins(self, part: Window, count: int) -> list[float | None]:
        """Non-key bytes per second of footage in each of `count` equal slices of
        `part` (inside the window); None for a slice without footage."""
        total = len(self.frames)
        edges = np.linspace(part.start_ms, part.end_ms, count + 1) - self.window.start_ms
        out: list[float | None] = []
        for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            a = min(max(int(lo // 1000), 0), total - 1)
            b = min(max(a + 1, -int(-hi // 1000)), total)  # at least the second it is in
            seconds = int(np.count_nonzero(self.frames[a:b]))
            out.append(round(float(self.nonkey_bytes[a:b].sum()) / seconds) if seconds else None)
        return out


@dataclass(frozen=True, slots=True)
class Footage:
    """What a share of a window would hold, from the index alone: its frames (the
    export's own plan), the first and last frame's capture times, the frames' sample
    bytes, the size of the MP4 the export would write of them (its boxes counted by
    recorder/export.py's ClipLayout; the re-encoded head's first frame counted as big as
    the keyframe it is decoded from), the recorded time in the window (the coverage's
    runs, as the timeline draws them, summed) and the picture's size and rate."""

    frames: int
    first_ms: int | None
    last_ms: int | None
    sample_bytes: int = 0
    covered_ms: int = 0
    clip_bytes: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    head_reencoded: int = 0  # the export's head frames, re-encoded from their keyframe


def measure_footage(
    window: Window,
    segments: Sequence[Segment],
    tables_of: Callable[[list[int]], dict[int, FrameTable]],
    batch: int = 256,
) -> Footage:
    """`tables_of` reads the frame tables of some segments: read `batch` at a time, so
    that a 12-hour window never holds all its tables at once (as the Digest)."""
    frames = sample_bytes = covered = 0
    first = last = None
    layout = ClipLayout()
    held: tuple[np.ndarray, ...] | None = None  # the last frame so far: its duration waits
    shape: Segment | None = None
    head = 0
    for at in range(0, len(segments), batch):
        some = segments[at : at + batch]
        parts = plan_parts(window, some, tables_of([s.id for s in some]), last)
        if not parts:
            continue
        times, sizes, keys = _all_frames(parts)
        steps = np.diff(times if last is None else np.concatenate(([last], times)))
        frames += len(times)
        sample_bytes += int(sizes.sum())
        covered += int(steps[steps <= MAX_STEP_MS].sum())
        first = int(times[0]) if first is None else first
        last = int(times[-1])
        if shape is None:
            shape = parts[0].segment
            layout.extradata_bytes = len(parts[0].table.extradata)
            if not keys[0]:  # the head: its first frame re-encoded as a keyframe
                table, start, stop = parts[0].table, parts[0].frames.start, parts[0].frames.stop
                following = table.key.find(1, start + 1, stop)
                head = (following if following >= 0 else stop) - start
                sizes, keys = sizes.copy(), keys.copy()
                sizes[0], keys[0] = table.size[table.key.rfind(1, 0, start + 1)], True
        if held is not None:
            times = np.concatenate((held[0], times))
            sizes = np.concatenate((held[1], sizes))
            keys = np.concatenate((held[2], keys))
        layout.add(sizes[:-1], keys[:-1], np.diff(times))
        held = (times[-1:], sizes[-1:], keys[-1:])
    if held is None or shape is None:
        return Footage(frames, first, last)
    layout.add(held[1], held[2], np.array([nominal_ms(shape.fps)]))  # the export's last
    return Footage(
        frames,
        first,
        last,
        sample_bytes,
        covered,
        layout.file_bytes(),
        shape.width,
        shape.height,
        shape.fps,
        head,
    )


class Digest:
    """The activity and the playback of a window, built from its plan a batch of
    segments at a time (`add`), so that a 12-hour window never holds all its frame
    tables at once: only run ends, pieces and per-second sums are kept."""

    def __init__(self, window: Window) -> None:
        self.window = window
        seconds = int(window.duration_ms // 1000) + 1
        self._nonkey = np.zeros(seconds, np.int64)
        self._frames = np.zeros(seconds, np.int32)
        self._spans: list[list[int]] = []  # [first, last] capture time of each run
        self._pieces: list[Piece] = []
        self._inits: list[Segment] = []
        self._headers: dict[bytes, int] = {}
        self._nominal: int | None = None

    def add(self, parts: Sequence[ClipPart]) -> Digest:
        """The next parts of the plan, in capture order."""
        if not parts:
            return self
        self.__dict__.pop("playback", None)  # made again when next asked for
        if self._nominal is None:
            self._nominal = nominal_ms(parts[0].segment.fps)
        times, sizes, keys = _all_frames(parts)
        seconds = len(self._frames)
        slot = (times - self.window.start_ms) // 1000
        self._nonkey += np.bincount(slot[~keys], weights=sizes[~keys], minlength=seconds)[
            :seconds
        ].astype(np.int64)
        self._frames += np.bincount(slot, minlength=seconds)[:seconds].astype(np.int32)
        for run in runs_of(times, 0):
            if self._spans and run.start_ms - self._spans[-1][1] <= MAX_STEP_MS:
                self._spans[-1][1] = run.end_ms
            else:
                self._spans.append([run.start_ms, run.end_ms])
        for p in parts:
            init = self._headers.setdefault(p.table.extradata, len(self._headers))
            if init == len(self._inits):
                self._inits.append(p.segment)
            first, last = p.table.times[p.frames.start], p.table.times[p.frames.stop - 1]
            self._pieces.append(Piece(p.segment, p.frames, first, last, init))
        return self

    @property
    def activity(self) -> Activity:
        return Activity(self.window, self._nonkey, self._frames)

    @functools.cached_property
    def playback(self) -> Playback | None:
        if not self._pieces or self._nominal is None:
            return None
        runs, media = [], 0
        for first, last in self._spans:
            runs.append(Run(first, last, media))
            media += last - first + self._nominal
        return Playback(tuple(self._pieces), tuple(runs), self._nominal, tuple(self._inits))


def activity_of(window: Window, parts: Sequence[ClipPart]) -> Activity:
    """The per-second motion measure of `window` from the frame tables of `parts`."""
    return Digest(window).add(parts).activity


def playback_of(parts: Sequence[ClipPart]) -> Playback | None:
    """The playback of the frames export would take (recorder/export.py's plan_parts),
    or None when there are none."""
    if not parts:
        return None
    first = parts[0].table.times[parts[0].frames.start]
    last = parts[-1].table.times[parts[-1].frames.stop - 1]
    return Digest(Window(first, last)).add(parts).playback


def narrowed(playback: Playback, part: Window, tables: dict[int, FrameTable]) -> Playback | None:
    """The playback of the frames of `playback` inside `part`: the pieces cut to it
    frame-exactly (`tables` holds the frame tables of the segments of the two pieces at
    its edges, at least), media time starting again at 0; None when no frame is inside."""
    starts = [p.last_ms for p in playback.pieces]
    lo = bisect.bisect_left(starts, part.start_ms)
    pieces: list[Piece] = []
    for piece in playback.pieces[lo:]:
        if piece.first_ms > part.end_ms:
            break
        if part.start_ms <= piece.first_ms and piece.last_ms <= part.end_ms:
            pieces.append(piece)
            continue
        times = tables[piece.segment.id].times
        inside = frames_in(part, times)
        frames = range(max(inside.start, piece.frames.start), min(inside.stop, piece.frames.stop))
        if frames:
            first, last = times[frames.start], times[frames.stop - 1]
            pieces.append(Piece(piece.segment, frames, first, last, piece.init))
    if not pieces:
        return None
    first, last = pieces[0].first_ms, pieces[-1].last_ms
    origin = playback.media_ms(first)
    runs = [
        Run(max(r.start_ms, first), min(r.end_ms, last), max(r.media_ms - origin, 0))
        for r in playback.runs
        if r.end_ms >= first and r.start_ms <= last
    ]
    return Playback(tuple(pieces), tuple(runs), playback.nominal_ms, playback.inits)


def edge_segments(playback: Playback, part: Window) -> list[int]:
    """Ids of the segments whose frame tables `narrowed` needs to cut to `part`."""
    return [
        p.segment.id
        for p in playback.pieces
        if p.first_ms <= part.end_ms
        and p.last_ms >= part.start_ms
        and not (part.start_ms <= p.first_ms and p.last_ms <= part.end_ms)
    ]


def playlist(playback: Playback) -> str:
    """The HLS media playlist (RFC 8216, fragmented MP4 pieces `N.m4s`, inits
    `init-K.mp4`) of `playback`: a finished recording (VOD), so a player can seek."""
    durations = [playback.duration_ms(n) for n in range(len(playback.pieces))]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, -(-max(durations) // 1000))}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    init = None
    for n, (piece, ms) in enumerate(zip(playback.pieces, durations, strict=True)):
        if piece.init != init:
            if init is not None:
                lines.append("#EXT-X-DISCONTINUITY")  # other stream headers from here
            lines.append(f'#EXT-X-MAP:URI="init-{piece.init}.mp4"')
            init = piece.init
        lines += [f"#EXTINF:{ms / 1000:.3f},", f"{n}.m4s"]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
