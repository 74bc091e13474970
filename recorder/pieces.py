"""The pieces of a playback (recorder/timeline.py) as fragmented MP4, for HLS: each
piece is one segment's frames remuxed in memory, stream copy, with the same frame-exact
head as export (recorder/export.py): a piece that starts between keyframes has that
partial GOP decoded from its keyframe and its frames from the first one re-encoded with
the recorder's own options, everything from the next keyframe on copied untouched.

FFmpeg's own MP4 muxer (through PyAV) writes the boxes. A piece carries its media time
in its fragment header (`tfdt`), so that pieces play one after another and a player can
seek into the middle: `frag_discont` with no edit list and no shifting of timestamps
makes the muxer take the first packet's time as it is instead of restarting at 0. The
stream headers (`ftyp` + `moov`) come once per init, as HLS wants (`EXT-X-MAP`), and are
the same bytes the muxer writes in front of every piece, which are dropped there.

Nothing is written to disk: a piece is a few MB in memory (device/console/video.py
keeps a few).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from foundation.errors import RecorderError
from foundation.times import Window
from recorder.avcompat import add_stream_from_template, set_keyframe, set_timing
from recorder.encoding import MS
from recorder.export import ClipPart, Samples, reencode_head
from recorder.segment_file import FrameTable
from recorder.timeline import Playback, frame_durations

FRAGMENTED = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+skip_trailer+skip_sidx+frag_discont",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
    "video_track_timescale": "1000",
}


def _open(out: io.BytesIO, root: Path, segment_file: str) -> tuple[Any, Any]:
    """An fMP4 muxer into `out` with a video stream shaped like the segment's."""
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    with av.open(str(root / segment_file)) as template_src:
        container = av.open(out, "w", format="mp4", options=dict(FRAGMENTED))
        stream = add_stream_from_template(container, template_src.streams.video[0], time_base=MS)
    return container, stream


def _split(data: memoryview) -> tuple[bytes, bytes]:
    """(`ftyp` + `moov`, the fragments after them) of the muxer's output, copied once."""
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] == b"moof" or size < 8:
            break
        at += size
    return bytes(data[:at]), bytes(data[at:])


def init_bytes(root: Path, playback: Playback, init: int) -> bytes:
    """The stream headers (HLS init section) of init number `init`."""
    out = io.BytesIO()
    container, _stream = _open(out, root, playback.inits[init].file)
    container.start_encoding()  # writes the header: with empty_moov, ftyp + moov
    container.close()
    with out.getbuffer() as data:
        return _split(data)[0]


def piece_bytes(
    root: Path, playback: Playback, n: int, table: FrameTable, allowed: Window
) -> bytes:
    """Piece `n` of `playback` (its fragments, no headers), read from the buffer at
    `root`; `table` is its segment's frame table. Every frame it holds must lie inside
    `allowed` (the pending request's window), checked before anything is read."""

    piece = playback.pieces[n]
    times = table.times
    first, last = times[piece.frames.start], times[piece.frames.stop - 1]
    if not (allowed.contains(first) and allowed.contains(last)):
        raise RecorderError("a piece reaches outside the window it was asked for")
    next_ms = playback.pieces[n + 1].first_ms if n + 1 < len(playback.pieces) else None
    chosen = list(times[piece.frames.start : piece.frames.stop])
    durations = frame_durations(chosen, next_ms, playback.nominal_ms)
    origin = playback.media_ms(chosen[0])
    samples = Samples(root)
    try:
        head: list[tuple[Any, bool]] = []
        copy_from = piece.frames.start
        if not table.key[copy_from]:
            following = table.key.find(1, copy_from + 1, piece.frames.stop)
            copy_from = piece.frames.stop if following < 0 else following
            head = reencode_head(ClipPart(piece.segment, table, piece.frames), samples, copy_from)
        out = io.BytesIO()
        container, stream = _open(out, root, piece.segment.file)
        try:
            packets = head + [
                (samples.packet(piece.segment.file, table.pos[i], table.size[i]), table.key[i])
                for i in range(copy_from, piece.frames.stop)
            ]
            media = origin
            for (packet, key), duration in zip(packets, durations, strict=True):
                set_timing(packet, pts_ms=media, duration_ms=duration)
                set_keyframe(packet, bool(key))
                packet.stream = stream
                container.mux_one(packet)
                media += duration
        finally:
            container.close()
    finally:
        samples.close()
    with out.getbuffer() as data:
        return _split(data)[1]
