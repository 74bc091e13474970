"""What the owner sees of a requested window before deciding: a strip of thumbnails and
short preview clips.

Thumbnails come from keyframes alone: the buffer's index says where each keyframe's
sample lies in its segment file, so one thumbnail is one `pread` and one intra-frame
decode (no demuxer, no decoding of the frames in between), scaled down and encoded as
JPEG by FFmpeg's own encoder through PyAV. A 12-hour window's strip is a few dozen such
decodes. Preview clips are the very export that shares use (recorder/export.py,
frame-exact), written to the runtime directory (tmpfs under systemd), a handful kept
and the rest deleted; thumbnails are kept in memory. Nothing here writes to the SD card.

Every time asked for is checked against the window it belongs to by the caller's
window argument: a frame outside it is never read.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import shutil
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any

from foundation.errors import NoFootageError, RecorderError
from foundation.heap import give_back
from foundation.times import Window
from recorder.buffer import (
    Segment,
    connect_index,
    newest_segment,
    query_segments,
    read_tables,
)
from recorder.export import ClipInfo, export_clip
from recorder.segment_file import FrameTable
from recorder.timeline import Footage, measure_footage

logger = logging.getLogger(__name__)

STRIP_THUMBNAILS = 48
THUMB_WIDTH = 160
SNAPSHOT_WIDTH = 640  # the picture the owner draws privacy masks on, and HA's snapshot
THUMB_CACHE = 512
CLIPS_KEPT = 4
MAX_CLIP_MS = 10 * 60_000
SNAPSHOT_LOOKBACK_MS = 5 * 60_000  # the newest keyframe is looked for this far back


def strip_points(window: Window, count: int) -> list[int]:
    """`count` evenly spaced moments across `window`, each in the middle of its slice."""
    if count <= 0:
        return []
    step = window.duration_ms / count
    return [window.start_ms + int(step * (i + 0.5)) for i in range(count)]


def keyframe_from(table: FrameTable, at_ms: int, window: Window) -> int | None:
    """The capture time of the first keyframe at or after `at_ms` inside `window`."""
    i = bisect.bisect_left(table.times, max(at_ms, window.start_ms))
    while i < len(table):
        t = table.times[i]
        if t > window.end_ms:
            return None
        if table.key[i]:
            return int(t)
        i += 1
    return None


class Preview:
    """Thumbnails and preview clips of the buffer at `buffer_root`."""

    def __init__(self, buffer_root: Path, clip_dir: Path) -> None:
        self._root = buffer_root
        self._clip_dir = clip_dir
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        # Where the keyframes that strip() named lie, so their thumbnails need no query
        # of the index (a point query over 72 hours of rows costs more than the decode).
        self._where: OrderedDict[int, tuple[str, FrameTable, int]] = OrderedDict()
        self._clips: OrderedDict[tuple[int, int], ClipInfo] = OrderedDict()
        self._lock = threading.Lock()
        self._clip_lock = threading.Lock()
        # Thumbnails are decoded one at a time: the page asks for a strip's worth at
        # once, and each decoder holds a few MB of frames while it works; the cached
        # ones are served meanwhile.
        self._decoding = threading.Lock()

    def close(self) -> None:
        with self._clip_lock:
            self._clips.clear()
            shutil.rmtree(self._clip_dir, ignore_errors=True)

    # ---- the index ---------------------------------------------------------------------

    def _segments(self, window: Window) -> list[Segment]:
        try:
            conn = connect_index(self._root, readonly=True)
        except RecorderError:
            return []
        try:
            return query_segments(conn, window)
        finally:
            conn.close()

    def _tables(self, ids: list[int]) -> dict[int, FrameTable]:
        return read_tables(self._root, ids)

    # ---- what a window holds -----------------------------------------------------------

    def footage(self, window: Window) -> Footage:
        """Exactly the frames a share of `window` would hold: the export's own plan
        (which also leaves out footage that overlaps earlier footage in time)."""
        segments = self._segments(window)
        if not segments:
            return Footage(0, None, None)
        return measure_footage(window, segments, self._tables)

    # ---- thumbnails --------------------------------------------------------------------

    def strip(self, window: Window, count: int = STRIP_THUMBNAILS) -> list[int]:
        """Capture times of up to `count` keyframes spread across `window`, in order."""
        segments = self._segments(window)
        if not segments:
            return []
        starts = [s.start_ms for s in segments]
        chosen: dict[int, Segment] = {}
        wanted: list[tuple[int, Segment]] = []
        for at in strip_points(window, count):
            i = max(0, bisect.bisect_right(starts, at) - 1)
            seg = segments[i]
            if seg.end_ms < at and i + 1 < len(segments):
                seg = segments[i + 1]  # a gap: the next footage after it
            wanted.append((at, seg))
            chosen[seg.id] = seg
        tables = self._tables(list(chosen))
        times: list[int] = []
        for at, seg in wanted:
            table = tables.get(seg.id)
            if table is None:
                continue
            t = keyframe_from(table, at, window)
            if t is not None and (not times or t > times[-1]):
                times.append(t)
                with self._lock:
                    self._where[t] = (seg.file, table, bisect.bisect_left(table.times, t))
                    while len(self._where) > THUMB_CACHE:
                        self._where.popitem(last=False)
        return times

    def thumbnail(self, window: Window, at_ms: int) -> bytes | None:
        """A JPEG of the keyframe captured at exactly `at_ms`, or None when there is no
        such keyframe inside `window`."""
        if not window.contains(at_ms):
            return None
        with self._lock:
            cached = self._thumbs.get(at_ms)
            if cached is not None:
                self._thumbs.move_to_end(at_ms)
                return cached
            where = self._where.get(at_ms)
        if where is None:
            where = self._find_keyframe(at_ms)
            if where is None:
                return None
        name, table, i = where
        with self._decoding:
            jpeg = _decode_keyframe(self._root / name, table, i, THUMB_WIDTH)
            give_back()  # the decoder's frames, freed by now
        with self._lock:
            self._thumbs[at_ms] = jpeg
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg

    def _find_keyframe(self, at_ms: int) -> tuple[str, FrameTable, int] | None:
        segments = self._segments(Window(at_ms, at_ms))
        tables = self._tables([s.id for s in segments]) if segments else {}
        for seg in segments:
            table = tables.get(seg.id)
            if table is None:
                continue
            i = bisect.bisect_left(table.times, at_ms)
            if i < len(table) and table.times[i] == at_ms and table.key[i]:
                return seg.file, table, i
        return None

    def snapshot(self) -> tuple[int, bytes] | None:
        """(capture time, JPEG) of the newest keyframe in the buffer, SNAPSHOT_WIDTH wide:
        the live picture the owner draws masks on. It comes from a recorded segment, so
        the masks in force are already burned into it. None while the buffer is empty."""
        return newest_keyframe(self._root, None, SNAPSHOT_WIDTH)

    # ---- clips -------------------------------------------------------------------------

    def clip(self, window: Window) -> ClipInfo:
        """The frame-exact MP4 of `window` (made on demand, a few kept). Raises
        NoFootageError when the window holds no frame."""
        key = (window.start_ms, window.end_ms)
        with self._clip_lock:
            info = self._clips.get(key)
            if info is not None and info.path.exists():
                self._clips.move_to_end(key)
                return info
            self._clip_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            out = self._clip_dir / f"preview-{key[0]}-{key[1]}.mp4"
            info = export_clip(self._root, window, out)
            self._clips[key] = info
            while len(self._clips) > CLIPS_KEPT:
                _, old = self._clips.popitem(last=False)
                with contextlib.suppress(OSError):
                    old.path.unlink()
            return info


def newest_keyframe_jpeg(
    buffer_root: Path, now_ms: int, *, width: int = SNAPSHOT_WIDTH
) -> bytes | None:
    """The newest keyframe of the buffer's last few minutes as a JPEG at most `width`
    wide (Home Assistant's snapshot); None when there is none. Only finished segments are
    in the index, so the picture is at most a segment's length old."""
    found = newest_keyframe(buffer_root, Window(now_ms - SNAPSHOT_LOOKBACK_MS, now_ms), width)
    return None if found is None else found[1]


def newest_keyframe(
    buffer_root: Path, window: Window | None, width: int
) -> tuple[int, bytes] | None:
    """(capture time, JPEG at most `width` wide) of the newest keyframe inside `window`
    (None: anywhere in the buffer), or None when there is none."""
    try:
        conn = connect_index(buffer_root, readonly=True)
    except RecorderError:
        return None
    try:
        if window is None:
            newest = newest_segment(conn)
            segments = [] if newest is None else [newest]
        else:
            segments = query_segments(conn, window)
    finally:
        conn.close()
    for seg in reversed(segments):
        table = read_tables(buffer_root, [seg.id]).get(seg.id)
        if table is None:
            continue
        keys = [
            i
            for i in range(len(table))
            if table.key[i] and (window is None or window.contains(table.times[i]))
        ]
        if keys:
            at = table.times[keys[-1]]
            return at, _decode_keyframe(buffer_root / seg.file, table, keys[-1], width)
    return None


def load_pyav() -> None:
    """Load PyAV, and with it FFmpeg's libraries, now rather than for the first picture.

    The console calls this when it starts. Every thumbnail, piece and snapshot needs
    PyAV, and once loaded it stays (a library is never unloaded), so loading it with the
    console changes no figure of a daemon whose owner has ever looked; what it changes:
    the first owner to open a request does not wait for it (0.2 s on the machine the
    README's figures come from), a broken FFmpeg shows at start instead of on that
    owner's phone, and the daemon's memory at rest is the memory it holds from then on,
    so a limit sized on it (systemd's MemoryHigh) is not met first while a phone plays.
    The growth while a phone plays is then what playing itself costs."""
    import av  # noqa: F401 - loaded for its libraries


def _decode_keyframe(path: Path, table: FrameTable, index: int, width: int) -> bytes:
    import av  # lazily, as the recorder does: PyAV is heavy to import

    size = table.size[index]
    packet = av.Packet(size)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NoFootageError("that footage was just deleted (retention)") from None
    try:
        if os.preadv(fd, [memoryview(packet)], table.pos[index]) != size:
            raise RecorderError(f"{path.name} is shorter than its index says")
    finally:
        os.close(fd)
    decoder: Any = av.CodecContext.create("h264", "r")
    decoder.extradata = table.extradata
    decoder.thread_count = 1
    frames = list(decoder.decode(packet)) + list(decoder.decode(None))
    if not frames:
        raise RecorderError(f"could not decode a keyframe of {path.name}")
    frame = frames[0]
    width = min(width, frame.width)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder: Any = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1000)
    small.pts = 0
    encoder.options = {"qscale": "4"}
    out = b"".join(bytes(p) for p in encoder.encode(small))
    out += b"".join(bytes(p) for p in encoder.encode(None))
    return out
