"""Writing one segment file: H.264 access units in, a complete indexed MP4 out.

A segment is a plain MP4 (timescale 1/1000, pts = capture time minus the segment's
first capture time, explicit durations) written as `.part`, closed, fsynced, probed for
its frame table, renamed and then indexed. Until then it is invisible to everyone, and a
power cut loses only it. Its first capture time is also in the file's
`capture_start_ms` tag, so a file that lost its index row can be re-indexed.
"""

from __future__ import annotations

import logging
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import av

from foundation.errors import RecorderError
from recorder.avcompat import (
    add_h264_mux_stream,
    packet_from_access_unit,
    set_keyframe,
    set_timing,
)
from recorder.buffer import (
    START_TAG,
    FrameTable,
    RollingBuffer,
    Segment,
    fsync_dir,
    probe_segment,
    segment_file_name,
)
from recorder.encoding import MS

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    packet: av.Packet
    capture_ms: int


@dataclass
class SegmentWriter:
    """Muxes access units into one segment. Call `write` per frame in capture order (the
    first must be a keyframe), then `finish` (or `abort` after a failure)."""

    buffer: RollingBuffer
    width: int
    height: int
    fps: float
    start_ms: int
    synchronized: bool = True
    preset: str = ""
    _path: Path = field(init=False)
    _container: av.container.OutputContainer | None = field(init=False, default=None)
    _stream: av.video.stream.VideoStream | None = field(init=False, default=None)
    _pending: _Pending | None = field(init=False, default=None)
    _times: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.buffer.require_writer()
        self.name = segment_file_name(self.start_ms)
        self._path = self.buffer.root / (self.name + ".part")
        container = av.open(
            str(self._path),
            "w",
            format="mp4",
            options={"movflags": "use_metadata_tags", "video_track_timescale": "1000"},
        )
        container.metadata[START_TAG] = str(self.start_ms)
        stream = add_h264_mux_stream(
            container, width=self.width, height=self.height, time_base=MS, fps=self.fps
        )
        self._container = container
        self._stream = stream

    @property
    def frames(self) -> int:
        return len(self._times) + (1 if self._pending else 0)

    @property
    def last_capture_ms(self) -> int | None:
        return self._pending.capture_ms if self._pending else None

    def write(
        self, packet: av.Packet | bytes, *, keyframe: bool, capture_ms: int, synchronized: bool
    ) -> None:
        """Queue one access unit (Annex-B). Muxing lags one frame so that every sample
        gets its true duration: the next frame's capture time minus its own."""
        if self._pending is None and not self._times and not keyframe:
            raise RecorderError("a segment must start on a keyframe")
        if isinstance(packet, bytes):
            packet = packet_from_access_unit(packet, keyframe=keyframe, fps=self.fps)
        set_keyframe(packet, keyframe)
        self.synchronized = self.synchronized and synchronized
        if self._pending is not None:
            if capture_ms <= self._pending.capture_ms:
                raise RecorderError("capture times must increase within a segment")
            self._mux(self._pending, capture_ms - self._pending.capture_ms)
        self._pending = _Pending(packet, capture_ms)

    def _mux(self, pending: _Pending, duration: int) -> None:
        assert self._container is not None and self._stream is not None
        packet = pending.packet
        set_timing(packet, pts_ms=pending.capture_ms - self.start_ms, duration_ms=duration)
        packet.stream = self._stream
        self._container.mux(packet)
        self._times.append(pending.capture_ms)

    def finish(self) -> Segment:
        """Close, fsync, index; the segment is then visible to exports."""
        assert self._container is not None
        if self._pending is not None:
            self._mux(self._pending, max(1, round(1000 / self.fps)))
            self._pending = None
        self._container.close()
        self._container = None
        if not self._times:
            self._path.unlink(missing_ok=True)
            raise RecorderError("empty segment")
        with open(self._path, "rb+") as handle:
            os.fsync(handle.fileno())
        table, width, height, _fps = probe_segment(self._path)
        if len(table) != len(self._times):
            raise RecorderError(f"segment {self.name} lost frames while muxing")
        # Keep our own capture times: the file's are the same, rounded through its pts.
        table = FrameTable(
            table.extradata, array("q", self._times), table.pos, table.size, table.key, self.preset
        )
        final = self.buffer.root / self.name
        os.replace(self._path, final)
        fsync_dir(self.buffer.root)
        return self.buffer.add_segment(
            file=self.name,
            table=table,
            synchronized=self.synchronized,
            width=width,
            height=height,
            fps=self.fps,
        )

    def abort(self) -> None:
        """Drop the open segment (a write failed, the disk is full): nothing is indexed."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is being thrown away; its close may fail too
                logger.debug("closing an aborted segment failed", exc_info=True)
            self._container = None
        self._pending = None
        self._path.unlink(missing_ok=True)
