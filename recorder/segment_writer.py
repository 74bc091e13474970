"""Recording one segment: H.264 access units in, a complete indexed segment out.

The file itself (its name, layout, tag, and how it is written, put in place and probed)
is recorder/segment_file.py's; this adds the timing of each sample and the index row.
The segment is written as `.part`, closed, fsynced, probed for its frame table, renamed
and then indexed. Until then it is invisible to everyone, and a power cut loses only it.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import av

from foundation.errors import RecorderError
from recorder.avcompat import packet_from_access_unit, set_keyframe, set_timing
from recorder.buffer import RollingBuffer, Segment
from recorder.segment_file import (
    FrameTable,
    open_for_writing,
    part_path,
    probe,
    put_in_place,
    segment_file_name,
    sync_file,
)

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
        self._path = part_path(self.buffer.root, self.name)
        self._container, self._stream = open_for_writing(
            self._path, start_ms=self.start_ms, width=self.width, height=self.height, fps=self.fps
        )

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
        sync_file(self._path)
        got, width, height, _fps = probe(self._path)
        if len(got) != len(self._times):
            raise RecorderError(f"segment {self.name} lost frames while muxing")
        # Keep our own capture times: the file's are the same, rounded through its pts.
        table = FrameTable(
            got.extradata, array("q", self._times), got.pos, got.size, got.key, self.preset
        )
        put_in_place(self._path)
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
