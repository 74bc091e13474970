"""Frame-exact clip export: every frame captured inside [start, end], none outside.

The index says where each frame's sample lies in its segment file, so export opens one
segment with the demuxer (for its stream parameters) and reads every other sample
straight from its offset. The partial GOP at the head of the window (the frames from the
first frame inside the window up to the next keyframe) is decoded from its keyframe and
re-encoded with the recorder's own encoder options; everything from that keyframe on is
copied untouched. Timestamps are rebased so the first frame has pts 0, in a 1/1000 time
base, so pts differences equal capture-time differences exactly; every sample carries
its explicit duration. The first frame's absolute capture time goes in the metadata
(`creation_time`, `first_frame_ms`, `first_frame_at`).

Export only reads the index (it never needs the recorder's lock) and writes the clip
under a temporary name that is renamed into place at the end, so a failure leaves no
file behind.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import NoFootageError, RecorderError
from foundation.times import Window, format_time
from recorder.avcompat import (
    add_h264_mux_stream,
    add_stream_from_template,
    can_set_keyframe,
    set_keyframe,
    set_timing,
)
from recorder.buffer import Segment, connect_index, query_segments, query_tables
from recorder.encoding import MS, open_x264
from recorder.segment_file import FrameTable

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """What an exported clip holds. `synchronized` is False when any of its frames was
    captured while the clock was not known to be right (or around a clock jump)."""

    path: Path
    first_frame_ms: int
    last_frame_ms: int
    frames: int
    width: int
    height: int
    fps: float
    bytes: int
    synchronized: bool
    # frames at the head decoded from their keyframe and encoded again, so that the clip
    # starts at the window's first frame; every later one is the camera's own encoding
    head_reencoded: int = 0


def frames_in(window: Window, frame_times: Sequence[int]) -> range:
    """Indices of the frames that belong to `window` (start <= t <= end), given capture
    times in increasing order, as they are within a segment."""
    lo = bisect.bisect_left(frame_times, window.start_ms)
    hi = bisect.bisect_right(frame_times, window.end_ms)
    return range(lo, max(lo, hi))


@dataclass(frozen=True, slots=True)
class ClipPart:
    """One segment's share of a clip: its frame table and the indices of the frames
    taken from it."""

    segment: Segment
    table: FrameTable
    frames: range


def plan_parts(
    window: Window,
    segments: Sequence[Segment],
    tables: dict[int, FrameTable],
    after_ms: int | None = None,
) -> list[ClipPart]:
    """The segments and frame ranges a clip of `window` is made of, in capture order.
    Footage that overlaps footage already taken (a clock stepped back, a second fast
    recording over the same hour) is left out up to the next keyframe after the
    overlap: a clip's times must increase. `after_ms`: the last frame already taken by
    the plan of the segments before these (a plan made a batch at a time)."""
    parts: list[ClipPart] = []
    last_ms: int | None = after_ms
    for seg in sorted(segments, key=lambda s: (s.start_ms, s.id)):
        table = tables.get(seg.id)
        if table is None:
            continue
        times = table.times
        chosen = frames_in(window, times)
        if not chosen:
            continue
        if last_ms is not None and int(times[chosen.start]) <= last_ms:
            # Overlapping footage: keep what comes after the earlier part, from a
            # keyframe, since only the clip's first part has its head re-encoded.
            after = max(chosen.start, bisect.bisect_right(times, last_ms))
            logger.warning("%s overlaps earlier footage in time; using its later part", seg.file)
            key = _next_key(table.key, after, chosen.stop)
            if key is None:
                continue
            chosen = range(key, chosen.stop)
        parts.append(ClipPart(seg, table, chosen))
        last_ms = times[chosen.stop - 1]
    return parts


def _next_key(keys: bytes, start: int, stop: int) -> int | None:
    """Index of the first keyframe in keys[start:stop], or None."""
    i = keys.find(1, start, stop)
    return None if i < 0 else i


def _creation_time(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{(ms % 1000) * 1000:06d}Z"


class Samples:
    """Reads samples from segment files by offset, one open file at a time."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._name: str | None = None
        self._fd: int | None = None
        self._demuxed: _Demuxed | None = None

    def _open(self, name: str) -> int:
        if name != self._name:
            self.close()
            try:
                self._fd = os.open(self._root / name, os.O_RDONLY)
            except FileNotFoundError:
                raise _deleted(name) from None
            self._name = name
        assert self._fd is not None
        return self._fd

    def packet(self, name: str, pos: int, size: int) -> Any:
        """The sample as an av.Packet, read straight into the packet's own buffer (one
        copy fewer than going through bytes: this loop moves hundreds of MB).

        PyAV 10 cannot set the key flag of such a packet, so there the sample comes
        from the segment's demuxer instead, which sets it from the file."""
        import av  # PyAV is heavy to load: only code that codes frames pays for it

        if not can_set_keyframe():
            return self._demuxed_packet(name, pos, size)
        packet = av.Packet(size)
        if os.preadv(self._open(name), [memoryview(packet)], pos) != size:
            raise RecorderError(f"segment {name} is shorter than its index says")
        return packet

    def _demuxed_packet(self, name: str, pos: int, size: int) -> Any:
        demuxed = self._demuxed
        if demuxed is None or demuxed.name != name or demuxed.pos >= pos:
            self.close()
            demuxed = self._demuxed = _Demuxed.open(self._root, name)
        packet = demuxed.advance_to(pos)
        if packet is None or packet.size != size:
            raise RecorderError(f"segment {name} does not hold the sample its index says")
        return packet

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._name = None
        if self._demuxed is not None:
            self._demuxed.container.close()
        self._demuxed = None


@dataclass(slots=True)
class _Demuxed:
    """One segment's demuxer, read forwards (its packets carry the file's key flags)."""

    name: str
    container: Any
    packets: Any
    pos: int = -1

    @classmethod
    def open(cls, root: Path, name: str) -> _Demuxed:
        import av  # PyAV is heavy to load: only code that codes frames pays for it

        try:
            container = av.open(str(root / name))
        except FileNotFoundError:
            raise _deleted(name) from None
        return cls(name, container, container.demux(video=0))

    def advance_to(self, pos: int) -> Any:
        """The packet at file offset `pos`, or None when the file has none there."""
        for packet in self.packets:
            if packet.size == 0 or packet.pos < pos:
                continue
            self.pos = packet.pos
            return packet if packet.pos == pos else None
        return None


def _deleted(name: str) -> RecorderError:
    return RecorderError(
        f"segment {name} was deleted during the export (retention); pin the "
        "window first or export a newer one"
    )


def reencode_head(part: ClipPart, samples: Samples, end: int) -> list[tuple[Any, bool]]:
    """Decode the GOP holding the window's first frame and re-encode its frames from
    that first frame up to (not including) index `end`. Returns av.Packets in MP4
    sample form (AVCC) with their key flags, in order."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    table = part.table
    first = part.frames.start
    gop_start = table.key.rfind(1, 0, first + 1)
    if gop_start < 0:
        raise RecorderError(f"segment {part.segment.file} does not start on a keyframe")
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = part.table.extradata
    decoder.thread_count = 1  # a GOP's worth of frames: threads would only hold more of them
    seg = part.segment
    encoder = open_x264(
        width=seg.width,
        height=seg.height,
        fps=seg.fps,
        preset=part.table.preset or "ultrafast",
        threads=1,
    )
    wanted = [table.times[i] for i in range(first, end)]
    t0 = wanted[0]
    encoded: list[Any] = []

    def encode(frames: Any) -> None:
        # each wanted frame straight on to the encoder as it leaves the decoder
        # (presentation order: no B-frames), so that at most a frame or two of raw
        # 720p (1.4 MB each) are held at a time, not the whole GOP
        for frame in frames:
            if wanted and frame.pts == wanted[0]:
                wanted.pop(0)
                frame = frame.reformat(format="yuv420p")
                frame.pts = frame.pts - t0
                frame.pict_type = av.video.frame.PictureType.NONE
                encoded.extend(encoder.encode(frame))

    for i in range(gop_start, end):
        packet = samples.packet(part.segment.file, table.pos[i], table.size[i])
        packet.pts = packet.dts = table.times[i]
        encode(decoder.decode(packet))
    encode(decoder.decode(None))
    if wanted:
        raise RecorderError(f"could not decode the head of {part.segment.file}")
    encoded.extend(encoder.encode(None))
    out = _as_samples(encoded, width=seg.width, height=seg.height, fps=seg.fps)
    if len(out) != end - first or not out[0][1]:
        raise RecorderError("re-encoding the head of the clip went wrong")
    return out


def _as_samples(
    encoded: list[Any], *, width: int, height: int, fps: float
) -> list[tuple[Any, bool]]:
    """The encoder's Annex-B packets as MP4 samples (AVCC) that keep their key flags.

    They go through FFmpeg's MP4 muxer and demuxer in memory rather than being
    converted here: the demuxer's packets carry the key flag it read from the file, and
    PyAV 10 cannot set that flag on a packet made from bytes (avcompat.set_keyframe)."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    buffer = io.BytesIO()
    options = {"video_track_timescale": "1000", "use_editlist": "0"}  # see _write_clip
    with av.open(buffer, "w", format="mp4", options=options) as box:
        stream = add_h264_mux_stream(box, width=width, height=height, time_base=MS, fps=fps)
        for packet in encoded:  # pts: ms from the head's first frame (the encoder's)
            packet.stream = stream
            box.mux(packet)
    buffer.seek(0)
    with av.open(buffer, "r", format="mp4") as box:
        return [(p, bool(p.is_keyframe)) for p in box.demux(video=0) if p.size]


def _param_sets(avcc_sample: bytes) -> list[bytes]:
    """The SPS and PPS NAL units in a length-prefixed keyframe sample."""
    i, found = 0, []
    while i + 4 < len(avcc_sample):
        size = int.from_bytes(avcc_sample[i : i + 4], "big")
        if avcc_sample[i + 4] & 0x1F in (7, 8):
            found.append(avcc_sample[i + 4 : i + 4 + size])
        i += 4 + size
    return found


def export_clip(
    root: Path, window: Window, out: Path, *, progress: Progress | None = None
) -> ClipInfo:
    """Write the frames of `window` from the buffer at `root` to the MP4 `out`.
    Raises NoFootageError (and writes nothing) when the window holds no frame."""
    root, out = Path(root), Path(out)
    try:
        conn = connect_index(root, readonly=True)
    except RecorderError:
        raise NoFootageError(f"no footage between {_window_text(window)}") from None
    try:
        segments = query_segments(conn, window)
        tables = query_tables(conn, [s.id for s in segments])
    finally:
        conn.close()
    parts = plan_parts(window, segments, tables)
    if not parts:
        raise NoFootageError(f"no footage between {_window_text(window)}")
    first = parts[0].segment
    if any((p.segment.width, p.segment.height) != (first.width, first.height) for p in parts):
        raise RecorderError("the window spans footage of different picture sizes")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        info = _write_clip(root, parts, tmp, progress)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecorderError(f"cannot write the clip {out}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ClipInfo(
        path=out,
        first_frame_ms=info[0],
        last_frame_ms=info[1],
        frames=info[2],
        width=first.width,
        height=first.height,
        fps=first.fps,
        bytes=out.stat().st_size,
        synchronized=all(p.segment.synchronized for p in parts),
        head_reencoded=info[3],
    )


def _window_text(window: Window) -> str:
    return f"{format_time(window.start_ms)} and {format_time(window.end_ms)}"


# What is read ahead while the head is re-encoded: more than a Pi's SD card delivers in
# the second that takes, and little beside a share build's memory goal (100 MiB, which
# 64 MiB of samples held here would have taken most of, bench/c2pa.py).
PREFETCH_BYTES = 16 * 1024 * 1024

# The clip is a fragmented MP4: the stream headers (`moov`, with no samples) first, then
# fragments of at least FRAGMENT_SECONDS, each starting on a keyframe and carrying its
# own sample table. A share's Content Credentials (sync/credentials.py) hash such a
# file fragment by fragment, which keeps signing a 12-hour clip within a few tens of MB
# of memory (a plain MP4's one sample table of a million entries is held whole).
FRAGMENT_SECONDS = 10
CLIP_OPTIONS = {
    # skip_trailer: no `mfra` index at the end, a box C2PA leaves out of its hash (only
    # seeking uses it, and players find the fragments without it)
    "movflags": "use_metadata_tags+frag_keyframe+empty_moov+default_base_moof+skip_trailer",
    "min_frag_duration": str(FRAGMENT_SECONDS * 1_000_000),
    "video_track_timescale": "1000",
    # pts start at 0 and equal dts: an edit list would say nothing, and FFmpeg 6
    # (PyAV 12.0) cut the last sample off at its end when the muxer, not the packet,
    # gave that sample its duration
    "use_editlist": "0",
}


# ---- the size of the MP4 an export writes, before writing it --------------------------
#
# `_write_clip` gives FFmpeg's MP4 muxer one video track, no edit list, a 1000 timescale,
# four metadata tags and CLIP_OPTIONS: a `moov` with empty sample tables, then one
# `moof` + `mdat` per fragment (ISO/IEC 14496-12 §8.8). Every box is fixed in size but
# for each fragment's `trun`, whose per-sample fields are written only when they vary
# within the fragment (FFmpeg's movenc: a duration, size or flags field for every
# sample when any sample differs from the fragment's first, or for the flags, its
# second; else the one `first_sample_flags` when the first sample's differ from the
# default, which is the second's, or a non-keyframe's in a one-sample fragment).
# The sizes are FFmpeg's own output, read off exported clips; tests/recorder/
# test_clip_size.py holds this model to real exports, byte for byte.
MP4_FIXED_BYTES = (
    28  # ftyp (iso5 512: iso5 iso6 mp41)
    + 8  # moov header
    + 108  # mvhd
    + 8  # trak
    + 92  # tkhd
    + 8  # mdia
    + 32  # mdhd
    + 45  # hdlr ("VideoHandler")
    + 8  # minf
    + 20  # vmhd
    + 36  # dinf + dref + url
    + 8  # stbl
    + 16
    + 86
    + 8
    + 20  # stsd, its avc1 entry, the avcC header, btrt; + the avcC itself
    + 16
    + 16
    + 20
    + 16  # stts, stsc, stsz, stco: empty
    + 40  # mvex + trex
    + 330  # udta: creation_time, first_frame_ms, first_frame_at and "encoder" (Lavf…)
)
MP4_FRAGMENT_BYTES = (
    8  # moof header
    + 16  # mfhd
    + 8  # traf header
    + 28  # tfhd: default duration, size and flags, base is the moof
    + 20  # tfdt (64-bit)
    + 20  # trun: header, sample count, data offset
    + 8  # mdat header
)
FRAGMENT_MS = FRAGMENT_SECONDS * 1000


@dataclass(slots=True)
class ClipLayout:
    """What sizes an exported clip's fragments, counted a batch of frames at a time
    (`add`), in the clip's order: the frames' sample sizes, key flags and durations
    (numpy arrays: a 12-hour clip has 648,000 frames, and a loop is per fragment).

    A fragment starts on the first keyframe at least FRAGMENT_MS after the start of the
    one before (the muxer's min_frag_duration with frag_keyframe)."""

    samples: int = 0
    sample_bytes: int = 0
    extradata_bytes: int = 0
    fragment_bytes: int = 0  # the closed fragments' moof and mdat headers
    _n: int = 0  # the open fragment's samples
    _elapsed: int = 0  # and their durations, summed
    _first: tuple[int, int, bool] = (0, 0, False)  # its first sample's size, duration, key
    _second_key: bool | None = None  # its second sample's key (the default flags)
    _sizes_differ: bool = False
    _durations_differ: bool = False
    _flags_differ: bool = False

    def add(self, sizes: np.ndarray, keys: np.ndarray, durations: np.ndarray) -> None:
        n = len(sizes)
        if not n:
            return
        self.samples += n
        self.sample_bytes += int(sizes.sum())
        starts = np.cumsum(durations, dtype=np.int64) - durations  # from the batch's start
        key_at = np.flatnonzero(keys)
        i = 0
        while i < n:
            j = i + 1  # a fragment's first sample opens it
            if self._n:  # the next keyframe at least FRAGMENT_MS into the open fragment
                due = int(np.searchsorted(starts, starts[i] + FRAGMENT_MS - self._elapsed))
                k = int(np.searchsorted(key_at, max(due, i)))
                j = int(key_at[k]) if k < len(key_at) else n
                if j == i:
                    self._close_fragment()
                    continue
            self._take(sizes[i:j], keys[i:j], durations[i:j])
            i = j

    def _take(self, sizes: np.ndarray, keys: np.ndarray, durations: np.ndarray) -> None:
        if not self._n:
            self._first = (int(sizes[0]), int(durations[0]), bool(keys[0]))
        size, duration, _key = self._first
        self._sizes_differ = self._sizes_differ or bool(np.any(sizes != size))
        self._durations_differ = self._durations_differ or bool(np.any(durations != duration))
        later = keys[1:] if not self._n else keys
        if len(later):
            if self._second_key is None:
                self._second_key = bool(later[0])
            self._flags_differ = self._flags_differ or bool(np.any(later != self._second_key))
        self._n += len(sizes)
        self._elapsed += int(durations.sum())

    def _open_fragment_bytes(self) -> int:
        if not self._n:
            return 0
        fields = self._sizes_differ + self._durations_differ + self._flags_differ
        # the default flags are the second sample's; a lone video sample's, a non-keyframe's
        default_key = bool(self._second_key)
        first_flags = not self._flags_differ and self._first[2] != default_key
        return MP4_FRAGMENT_BYTES + 4 * fields * self._n + 4 * first_flags

    def _close_fragment(self) -> None:
        self.fragment_bytes += self._open_fragment_bytes()
        self._n = self._elapsed = 0
        self._second_key = None
        self._sizes_differ = self._durations_differ = self._flags_differ = False

    def file_bytes(self) -> int:
        """The size of the MP4 file: its boxes and its samples."""
        if not self.samples:
            return 0
        return (
            MP4_FIXED_BYTES
            + self.extradata_bytes
            + self.fragment_bytes
            + self._open_fragment_bytes()
            + self.sample_bytes
        )


def tiny_clip(folder: Path) -> Path:
    """A one-frame clip in `folder`, written with the exports' muxer options: enough for
    sync/share.py to measure, by signing it, the size of a share's Content Credentials
    (which depends on what they say and who signs, not on the clip's samples)."""
    import av

    path = folder / "tiny.mp4"
    with av.open(str(path), "w", format="mp4", options=dict(CLIP_OPTIONS)) as out:
        stream: Any = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def _write_clip(
    root: Path, parts: list[ClipPart], tmp: Path, progress: Progress | None
) -> tuple[int, int, int, int]:
    """(first frame's time, last frame's time, frames, head frames re-encoded)"""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    total = sum(len(p.frames) for p in parts)
    # All capture times of the clip, in order, to give every sample its true duration.
    times = array("q")  # 8 bytes a frame: a 12-hour clip has 648,000
    for p in parts:
        times.extend(p.table.times[p.frames.start : p.frames.stop])
    t0, t_last = times[0], times[-1]
    head_part = parts[0]
    start = head_part.frames.start
    head_end = start
    if not head_part.table.key[start]:
        following = _next_key(head_part.table.key, start + 1, head_part.frames.stop)
        head_end = head_part.frames.stop if following is None else following
    # The head is decoded and re-encoded on a worker thread while this one reads the
    # first copied samples (bounded): the two overlap on two cores.
    head_job = _HeadJob(head_part, root, head_end) if head_end > start else None
    samples = Samples(root)
    copied = (
        (part.segment.file, part.table, i)
        for n, part in enumerate(parts)
        for i in (part.frames if n else range(head_end, part.frames.stop))
    )
    try:
        prefetched: list[Any] = []
        if head_job is not None:
            size = 0
            while not head_job.done.is_set() and size < PREFETCH_BYTES:
                item = next(copied, None)
                if item is None:
                    break
                name, table, i = item
                prefetched.append((samples.packet(name, table.pos[i], table.size[i]), table.key[i]))
                size += table.size[i]
        head = head_job.result() if head_job is not None else []
        extradatas = {p.table.extradata for p in parts}
        with av.open(str(root / head_part.segment.file)) as template_src:
            template = template_src.streams.video[0]
            container = av.open(
                str(tmp),
                "w",
                format="mp4",
                options=dict(CLIP_OPTIONS),
            )
            try:
                stream = add_stream_from_template(container, template, time_base=MS)
                if len(extradatas) > 1 or (
                    head
                    and _param_sets(bytes(head[0][0]))
                    != _avcc_param_sets(head_part.table.extradata)
                ):
                    # Parameter sets differ inside the clip (e.g. a hardware encoder
                    # restarted): `avc3` tells players to take them from the samples.
                    stream.codec_context.codec_tag = "avc3"
                container.metadata["creation_time"] = _creation_time(t0)
                container.metadata["first_frame_ms"] = str(t0)
                container.metadata["first_frame_at"] = format_time(t0)
                nominal = max(1, round(1000 / head_part.segment.fps))

                def packets() -> Any:
                    yield from head
                    yield from prefetched
                    for name, table, i in copied:
                        yield samples.packet(name, table.pos[i], table.size[i]), table.key[i]

                done = 0
                for packet, key in packets():
                    t = times[done]
                    duration = times[done + 1] - t if done + 1 < total else nominal
                    set_timing(packet, pts_ms=t - t0, duration_ms=duration)
                    set_keyframe(packet, bool(key))
                    packet.stream = stream
                    container.mux_one(packet)
                    done += 1
                    if progress is not None and (done % 250 == 0 or done == total):
                        progress(done, total)
                prefetched.clear()
                if done != total:
                    raise RecorderError("the clip lost frames on the way")
            finally:
                container.close()
    finally:
        samples.close()
        if head_job is not None:
            head_job.cancel()
    return t0, t_last, total, len(head)


class _HeadJob:
    """`reencode_head` on a worker thread, with its own file handles."""

    def __init__(self, part: ClipPart, root: Path, end: int) -> None:
        self.done = threading.Event()
        self._part, self._root, self._end = part, root, end
        self._result: list[tuple[Any, bool]] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="clip-head", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        samples = Samples(self._root)
        try:
            self._result = reencode_head(self._part, samples, self._end)
        except BaseException as exc:  # handed to the exporting thread in result()
            self._error = exc
        finally:
            samples.close()
            self.done.set()

    def result(self) -> list[tuple[Any, bool]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        self._thread.join(timeout=30)


def _avcc_param_sets(extradata: bytes) -> list[bytes]:
    """The SPS and PPS NAL units listed in an avcC record."""
    units: list[bytes] = []
    if len(extradata) < 7 or extradata[0] != 1:
        return units
    i = 5
    for count_mask in (0x1F, 0xFF):
        count = extradata[i] & count_mask
        i += 1
        for _ in range(count):
            size = int.from_bytes(extradata[i : i + 2], "big")
            units.append(extradata[i + 2 : i + 2 + size])
            i += 2 + size
    return units
