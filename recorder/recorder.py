"""The recorder: frames from a camera into segments in the rolling buffer.

One capture thread reads the camera into a bounded queue; the recording loop encodes
(libx264, unless the camera has its own encoder), cuts segments on keyframes, indexes
them and runs retention. Segments never hold non-increasing capture times: when the wall
clock jumps (or its synchronized state changes) the encoder is forced to a keyframe and
a new segment starts, and the segments on both sides of a jump are marked not
synchronized. A full disk makes retention evict and, failing that, costs the segment
being written; it never stops the recorder.

recorder/process.py runs a recorder in a child process of the daemon; recorder/health.py
holds the counters a watchdog reads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundation.clock import Clock
from foundation.errors import RecorderError
from foundation.stop import EitherStop, StopSignal
from recorder.avcompat import frame_from_rgb
from recorder.buffer import RollingBuffer, Segment
from recorder.encoding import MS, open_x264
from recorder.frames import CameraSource, CapturedFrame, EncodedFrame
from recorder.health import HealthCounters, RecorderHealth
from recorder.masks import MaskFeed, MaskPainter, frame_planes
from recorder.settings import StorageSettings

logger = logging.getLogger(__name__)

JUMP_TOLERANCE_MS = 1000


def clock_jumped(
    prev_ms: int, prev_mono: float, capture_ms: int, mono: float, *, tolerance_ms: int = 1000
) -> bool:
    """Did the wall clock step between two frames? True when capture time fails to
    increase, or when it moved more than `tolerance_ms` apart from monotonic time."""
    if capture_ms <= prev_ms:
        return True
    return abs((capture_ms - prev_ms) - (mono - prev_mono) * 1000.0) > tolerance_ms


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What a recording run put in the buffer."""

    segments: int
    frames: int
    frames_dropped: int
    bytes: int
    first_ms: int | None
    last_ms: int | None
    synchronized: bool


_END = object()


class Recorder:
    """Records `source` into `buffer` until `stop` is set or the source ends."""

    def __init__(
        self,
        source: CameraSource,
        buffer: RollingBuffer,
        *,
        storage: StorageSettings,
        clock: Clock,
        free_space: Callable[[Path], int],
        stop: StopSignal,
        preset: str = "ultrafast",
        queue_frames: int = 4,
        drop_when_behind: bool | None = None,
        counters: HealthCounters | None = None,
        masks: MaskFeed | None = None,
    ) -> None:
        """`masks`: the privacy masks to burn into raw frames before they are encoded
        (a camera with its own encoder paints them itself, see recorder.masks)."""
        self._source = source
        self._buffer = buffer
        self._storage = storage
        self._clock = clock
        self._free_space = free_space
        self._stop = stop
        self._preset = preset
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_frames))
        # A live camera must not wait for the encoder (its driver would queue stale
        # frames); a file or fast synthetic footage should lose nothing.
        self._drop = getattr(source, "live", True) if drop_when_behind is None else drop_when_behind
        self.counters = counters or HealthCounters()
        self._capture_error: BaseException | None = None
        self._writer: Any = None
        self._encoder: Any = None
        self._enc_pts = -1
        self._pending: dict[int, tuple[int, float, bool, bool]] = {}
        self._prev: tuple[int, float, bool] | None = None
        self._uncertain_next = False
        self._segments: list[Segment] = []
        self._first_mono: float | None = None
        self._halt = threading.Event()  # the recorder's own stop for its capture thread
        self._painter = (
            None
            if masks is None or source.encoded
            else MaskPainter(masks, source.width, source.height)
        )

    @property
    def health(self) -> RecorderHealth:
        return self.counters.snapshot()

    # ---- the run --------------------------------------------------------------------

    def run(self, *, max_seconds: float | None = None) -> RecordSummary:
        """Record until stopped, the source ends, or `max_seconds` of capture time."""
        self._buffer.claim_writing()  # BufferLockedError if another process records
        capture: threading.Thread | None = None
        try:
            self._buffer.reconcile()
            self._retention()
            if self._painter is not None:
                self._painter.prepare()
            self._source.open()
            capture = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
            capture.start()
            while True:
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set() and not capture.is_alive():
                        break
                    continue
                if item is _END:
                    break
                assert isinstance(item, (CapturedFrame, EncodedFrame))
                if self._first_mono is None:
                    self._first_mono = item.monotonic
                if max_seconds is not None and item.monotonic - self._first_mono >= max_seconds:
                    break
                self._handle(item)
            self._flush_encoder()
            self._close_segment()
        finally:
            self._stop_capture(capture)
            if self._writer is not None:
                self._writer.abort()
                self._writer = None
            self._source.close()
            self._buffer.release_writing()
        if self._capture_error is not None:
            raise RecorderError(f"camera failed: {self._capture_error}") from self._capture_error
        return self._summary()

    def _stop_capture(self, capture: threading.Thread | None) -> None:
        if capture is None:
            return
        self._halt.set()
        while capture.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a capture thread's put
                self._queue.get_nowait()
            capture.join(timeout=0.2)

    def _capture_loop(self) -> None:
        halt = self._halt
        stop = EitherStop(self._stop, halt)
        source_dropped = self._source.dropped
        try:
            while not stop.is_set():
                item = self._source.read(stop)
                if item is None:
                    break
                self.counters.add("captured")
                # A camera with its own encoder may drop frames before we see them.
                lost = self._source.dropped - source_dropped
                if lost > 0:
                    self.counters.add("captured", lost)
                    self.counters.add("dropped", lost)
                    source_dropped += lost
                if self._drop:
                    try:
                        self._queue.put_nowait(item)
                    except queue.Full:
                        self.counters.add("dropped")
                else:
                    self._put_until(item, stop.is_set)
        except BaseException as exc:  # reported by run(); the recorder must not hang
            logger.exception("camera capture failed")
            self._capture_error = exc
        finally:
            self._put_until(_END, halt.is_set)

    def _put_until(self, item: object, stopped: Callable[[], bool]) -> None:
        """Wait for room in the queue in short waits, giving up once `stopped()`."""
        while not stopped():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # ---- frames ---------------------------------------------------------------------

    def _handle(self, item: CapturedFrame | EncodedFrame) -> None:
        split = False
        if self._prev is not None:
            prev_ms, prev_mono, prev_sync = self._prev
            jumped = clock_jumped(
                prev_ms, prev_mono, item.capture_ms, item.monotonic, tolerance_ms=JUMP_TOLERANCE_MS
            )
            if jumped:
                logger.warning(
                    "wall clock jumped by %+d ms; starting a new segment",
                    (item.capture_ms - prev_ms) - round((item.monotonic - prev_mono) * 1000),
                )
                if self._writer is not None:
                    self._writer.synchronized = False
                self._uncertain_next = True
            split = jumped or prev_sync != item.synchronized
        self._prev = (item.capture_ms, item.monotonic, item.synchronized)
        if isinstance(item, EncodedFrame):
            self._on_packet(item.data, item.keyframe, item.capture_ms, item.synchronized, split)
        else:
            self._encode(item, split)

    def _encode(self, item: CapturedFrame, split: bool) -> None:
        import av  # PyAV is heavy to load: only code that codes frames pays for it

        if self._encoder is None:
            self._encoder = open_x264(
                width=self._source.width,
                height=self._source.height,
                fps=self._source.fps,
                preset=self._preset,
            )
        image = item.image
        if image.shape[0] != self._source.height or image.shape[1] != self._source.width:
            raise RecorderError("camera frame size differs from the configured size")
        # The array outlives the wrapper: reformat makes a new frame at once.
        image = np.ascontiguousarray(image)
        frame = frame_from_rgb(image).reformat(format="yuv420p")
        # Privacy masks go on the encoder's own planes, before it ever sees the frame.
        # A new set of masks starts a segment, so each segment has one set throughout.
        if self._painter is not None and self._painter.paint(*frame_planes(frame)):
            logger.info("privacy masks changed; a new segment starts with them")
            split = True
        # Encoder pts follow monotonic time (strictly increasing whatever the wall clock
        # does); the capture time travels beside it, keyed by pts.
        self._enc_pts = max(self._enc_pts + 1, round(item.monotonic * 1000))
        frame.pts = self._enc_pts
        frame.time_base = MS
        if split:
            frame.pict_type = av.video.frame.PictureType.I
        self._pending[self._enc_pts] = (item.capture_ms, item.monotonic, item.synchronized, split)
        for packet in self._encoder.encode(frame):
            self._on_encoded(packet)

    def _flush_encoder(self) -> None:
        if self._encoder is None:
            return
        for packet in self._encoder.encode(None):
            self._on_encoded(packet)
        self._encoder = None

    def _on_encoded(self, packet: Any) -> None:
        meta = self._pending.pop(packet.pts, None)
        if meta is None:
            logger.error("encoder returned an unknown frame (pts %s)", packet.pts)
            return
        capture_ms, _mono, sync, split = meta
        self._on_packet(packet, bool(packet.is_keyframe), capture_ms, sync, split)

    def _on_packet(
        self, packet: Any, keyframe: bool, capture_ms: int, sync: bool, split: bool
    ) -> None:
        writer = self._writer
        if writer is not None:
            elapsed = capture_ms - writer.start_ms
            due = elapsed >= self._storage.segment_seconds * 1000 - 500 / self._source.fps
            if keyframe and (split or due):
                self._close_segment()
                writer = None
            elif split or capture_ms <= (writer.last_capture_ms or capture_ms - 1):
                # A hardware encoder cannot be told to start a keyframe here: end the
                # segment and skip frames until the next keyframe.
                self._close_segment()
                self.counters.add("dropped")
                return
        if writer is None:
            if not keyframe:
                self.counters.add("dropped")
                return
            writer = self._open_segment(capture_ms, sync)
            if writer is None:
                self.counters.add("dropped")
                return
        try:
            writer.write(packet, keyframe=keyframe, capture_ms=capture_ms, synchronized=sync)
        except (OSError, RecorderError) as exc:
            self._fail_segment(exc)
            self.counters.add("dropped")
            return
        self.counters.add("written")
        self.counters.set_last_write(self._clock.monotonic())

    def _open_segment(self, start_ms: int, sync: bool) -> Any:
        # here: it imports PyAV, and the daemon imports this module but never writes segments
        from recorder.segment_writer import SegmentWriter

        try:
            writer = SegmentWriter(
                self._buffer,
                width=self._source.width,
                height=self._source.height,
                fps=self._source.fps,
                start_ms=start_ms,
                synchronized=sync and not self._uncertain_next,
                preset="" if self._source.encoded else self._preset,
            )
        except OSError as exc:
            logger.error("cannot start a segment: %s", exc)
            self._retention()
            return None
        self._uncertain_next = False
        self._writer = writer
        return writer

    def _close_segment(self) -> None:
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        try:
            segment = writer.finish()
        except (OSError, RecorderError) as exc:
            self._writer = writer
            self._fail_segment(exc)
            return
        self._segments.append(segment)
        self.counters.add("segments")
        self._retention()

    def _fail_segment(self, exc: BaseException) -> None:
        """A segment could not be written (disk full, I/O error): drop it, make room,
        and carry on with the next keyframe."""
        writer = self._writer
        self._writer = None
        lost = writer.frames if writer is not None else 0
        logger.error("segment write failed, %d frames lost: %s", lost, exc)
        if writer is not None:
            writer.abort()
        self.counters.add("dropped", lost)
        self._retention()

    def _retention(self) -> None:
        try:
            free = self._free_space(self._buffer.root)
            self._buffer.enforce_retention(self._clock.wall_ms(), self._storage.limits(), free)
        except Exception:  # retention failing must not stop recording; log it and go on
            logger.exception("retention failed")

    def _summary(self) -> RecordSummary:
        segs = self._segments
        health = self.health
        return RecordSummary(
            segments=len(segs),
            frames=sum(s.frames for s in segs),
            frames_dropped=health.frames_dropped,
            bytes=sum(s.bytes for s in segs),
            first_ms=min((s.start_ms for s in segs), default=None),
            last_ms=max((s.end_ms for s in segs), default=None),
            synchronized=all(s.synchronized for s in segs),
        )
