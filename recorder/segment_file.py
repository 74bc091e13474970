"""The segment file: its name, its MP4 layout and tag, writing it and reading it back.

A segment is a plain MP4 holding one H.264 track: timescale 1/1000, pts = capture time
minus the segment's first capture time, explicit sample durations. Its first capture time
(epoch ms) is also in the file's `capture_start_ms` tag, so a file that lost its index
row can be re-indexed from the file alone.

Its name is `seg-<start_ms>-<tag>.mp4` (start_ms zero-padded to 13 digits, tag 8 random
hex digits so two segments starting on the same millisecond cannot collide). It is
written as `<name>.part`, closed, fsynced and renamed into place (the folder fsynced
too), so a complete name always means a complete file and a power cut loses at worst a
`.part`.

The frame table says where each frame is in the file (capture time, byte offset and size
of its sample, keyframe flag) plus the stream's avcC extradata; the index keeps it as a
blob, so export reads samples straight from those offsets without probing files.

PyAV is heavy to load, so only the functions that open a file import it.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.errors import InvalidValueError, RecorderError

if TYPE_CHECKING:
    import av

NAME_RE = re.compile(r"seg-(\d{1,16})-([0-9a-f]{8})\.mp4")
PART_SUFFIX = ".part"
START_TAG = "capture_start_ms"

# A frame table blob: version, frame count, then per column all values little-endian:
# capture times (epoch ms, int64), sample offsets (int64), sample sizes (int64), and
# keyframe flags (one byte each). Plain `array`s, so export needs no numpy at start-up.
_TABLE_HEAD = struct.Struct("<BI")
_TABLE_VERSION = 1


@dataclass(frozen=True, slots=True)
class FrameTable:
    """Where each frame of a segment is: capture times (epoch ms), sample offsets and
    sizes in the file, keyframe flags; the stream's avcC extradata and the libx264
    preset it was encoded with ("" when unknown or a hardware encoder)."""

    extradata: bytes
    times: array[int]
    pos: array[int]
    size: array[int]
    key: bytes
    preset: str = ""

    def __post_init__(self) -> None:
        n = len(self.times)
        if not (len(self.pos) == len(self.size) == len(self.key) == n):
            raise InvalidValueError("frame table columns differ in length")

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def build(
        cls, extradata: bytes, rows: list[tuple[int, int, int, bool]], preset: str = ""
    ) -> FrameTable:
        """From (capture_ms, pos, size, keyframe) rows."""
        return cls(
            extradata,
            array("q", [r[0] for r in rows]),
            array("q", [r[1] for r in rows]),
            array("q", [r[2] for r in rows]),
            bytes(1 if r[3] else 0 for r in rows),
            preset,
        )

    def to_blob(self) -> bytes:
        cols = [array("q", c) for c in (self.times, self.pos, self.size)]
        if sys.byteorder != "little":
            for c in cols:
                c.byteswap()
        head = _TABLE_HEAD.pack(_TABLE_VERSION, len(self))
        return head + b"".join(c.tobytes() for c in cols) + bytes(self.key)

    @classmethod
    def from_blob(cls, extradata: bytes, blob: bytes, preset: str = "") -> FrameTable:
        version, n = _TABLE_HEAD.unpack_from(blob)
        if version != _TABLE_VERSION or len(blob) != _TABLE_HEAD.size + 25 * n:
            raise RecorderError("frame table in the index is damaged")
        cols = []
        at = _TABLE_HEAD.size
        for _ in range(3):
            col = array("q")
            col.frombytes(blob[at : at + 8 * n])
            if sys.byteorder != "little":
                col.byteswap()
            cols.append(col)
            at += 8 * n
        return cls(extradata, cols[0], cols[1], cols[2], bytes(blob[at:]), preset)


def segment_file_name(start_ms: int) -> str:
    """A new segment's (complete) file name."""
    return f"seg-{start_ms:013d}-{os.urandom(4).hex()}.mp4"


def part_path(root: Path, name: str) -> Path:
    """Where segment `name` is written until it is complete."""
    return Path(root) / (name + PART_SUFFIX)


def complete_files(root: Path) -> Iterator[Path]:
    """The complete segment files under `root`, by name (so oldest first)."""
    for path in sorted(Path(root).glob("seg-*.mp4")):
        if NAME_RE.fullmatch(path.name):
            yield path


def incomplete_files(root: Path) -> Iterator[Path]:
    """Segment files left half-written (a crash, a power cut)."""
    return Path(root).glob("seg-*.mp4" + PART_SUFFIX)


def open_for_writing(
    path: Path, *, start_ms: int, width: int, height: int, fps: float
) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
    """A new MP4 at `path` tagged with its first capture time, and its H.264 track
    (timescale 1/1000) to mux access units into."""
    import av

    from recorder.avcompat import add_h264_mux_stream
    from recorder.encoding import MS

    container = av.open(
        str(path),
        "w",
        format="mp4",
        options={"movflags": "use_metadata_tags", "video_track_timescale": "1000"},
    )
    container.metadata[START_TAG] = str(start_ms)
    stream = add_h264_mux_stream(container, width=width, height=height, time_base=MS, fps=fps)
    return container, stream


def sync_file(path: Path) -> None:
    """Flush a closed file's bytes to the storage."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def put_in_place(part: Path) -> Path:
    """Rename a complete, fsynced `.part` to its segment name, durably (the folder's
    entry fsynced too); the final path."""
    if part.suffix != PART_SUFFIX:
        raise RecorderError(f"{part.name} is not a segment being written")
    final = part.with_suffix("")
    os.replace(part, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def probe(path: Path) -> tuple[FrameTable, int, int, float]:
    """Read a complete segment file: (frame table, width, height, fps). Capture times
    come from the file's `capture_start_ms` tag plus each frame's pts (ms)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tag = container.metadata.get(START_TAG)
        if tag is None or not tag.isdigit():
            raise RecorderError(f"{path.name} has no {START_TAG} tag")
        start_ms = int(tag)
        ctx = stream.codec_context
        extradata = bytes(ctx.extradata or b"")
        rows = []
        tb = stream.time_base
        assert tb is not None
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None or packet.pos is None:
                continue
            pts_ms = round(packet.pts * tb * 1000)
            rows.append((start_ms + pts_ms, packet.pos, packet.size, bool(packet.is_keyframe)))
        rate = stream.average_rate or stream.guessed_rate or 15
        width, height = ctx.width, ctx.height
    if not rows:
        raise RecorderError(f"{path.name} holds no frames")
    return FrameTable.build(extradata, rows), width, height, float(rate)
