"""The Raspberry Pi camera through picamera2, with the Pi's own H.264 encoder.

On a Pi 4 or Zero 2 W the VideoCore hardware encoder (`H264Encoder`) compresses; on a
Pi 5, which has none, picamera2's `LibavH264Encoder` does it in software. Either way
Python never re-encodes: the encoder runs without stopping for the whole recording,
with a keyframe every second (`iperiod`) and SPS/PPS repeated in-band (`repeat=True`),
and hands each access unit to our `Output`, which queues it for the recorder. The
recorder cuts segments at keyframes, so segments switch without stopping the encoder
(the same thing picamera2's SplittableOutput does, but with each frame's capture time
kept for the index, which PyavOutput's per-file files would not give us).

Frame times come from the sensor timestamps (CLOCK_MONOTONIC, microseconds): picamera2
passes them rebased to the encoder's first frame, so we add back `firsttimestamp` and
map monotonic to wall time with an offset that is re-read on every keyframe. If the
wall clock stepped, the new offset applies from that keyframe on, so a jump only ever
falls on a keyframe, where the recorder starts a new segment.

Imports of picamera2 happen in `open`, so this module loads on any machine; tests pass
a fake `Picamera2Api`.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from typing import Any

from foundation.clock import Clock
from foundation.errors import RecorderError
from foundation.stop import StopSignal
from recorder.encoding import keyframe_interval
from recorder.frames import EncodedFrame
from recorder.masks import MaskFeed, MaskPainter, yuv420_planes
from recorder.settings import CameraSettings

logger = logging.getLogger(__name__)

REANCHOR_TOLERANCE_MS = 500


@dataclass(frozen=True, slots=True)
class Picamera2Api:
    """The parts of picamera2 this source uses, so tests can pass fakes."""

    picamera2: Any  # the Picamera2 class
    h264_encoder: Any  # H264Encoder (hardware, VideoCore)
    libav_h264_encoder: Any  # LibavH264Encoder (software, for the Pi 5)
    output_base: Any  # picamera2.outputs.Output
    has_hardware_encoder: bool
    mapped_array: Any = None  # picamera2.MappedArray (for painting privacy masks)


def load_picamera2() -> Picamera2Api:
    """The real picamera2, or a clear error where it is not installed."""
    try:  # here: python3-picamera2 exists only on Raspberry Pi OS, and only this camera needs it
        from picamera2 import MappedArray, Picamera2
        from picamera2.encoders import (
            H264Encoder,
            LibavH264Encoder,
        )
        from picamera2.outputs import Output
    except ImportError as exc:
        raise RecorderError(
            "the picamera2 camera needs python3-picamera2 (Raspberry Pi OS) "
            f"in this environment: {exc}"
        ) from exc
    try:
        import picamera2.platform as platform

        # The Pi 5 (PiSP) has no H.264 block; VC4 boards (Pi 4, Zero 2 W) do.
        hardware = platform.get_platform() != platform.Platform.PISP
    except (ImportError, AttributeError):
        hardware = True
    return Picamera2Api(Picamera2, H264Encoder, LibavH264Encoder, Output, hardware, MappedArray)


class WallAnchor:
    """Maps sensor (monotonic) microseconds to wall-clock milliseconds. The offset is
    re-read from the clock at keyframes and changes only when it moved by more than
    the tolerance, so ordinary jitter never bends a segment's timing."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._offset_ms: float | None = None

    def current_offset(self) -> float:
        return self._clock.wall_ms() - self._clock.monotonic() * 1000.0

    def capture_ms(self, sensor_us: int, keyframe: bool) -> int:
        if self._offset_ms is None:
            self._offset_ms = self.current_offset()
        elif keyframe:
            offset = self.current_offset()
            if abs(offset - self._offset_ms) > REANCHOR_TOLERANCE_MS:
                logger.warning("wall clock moved by %+.0f ms", offset - self._offset_ms)
                self._offset_ms = offset
        return round(sensor_us / 1000.0 + self._offset_ms)


def _make_output(base: type, sink: Picamera2Camera) -> Any:
    """An Output (subclass of picamera2's own) that feeds the camera's queue."""

    class QueueOutput(base):
        needs_pacing = False  # frames carry their own times; never sleep the encoder

        def outputframe(
            self,
            frame: bytes,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio or not getattr(self, "recording", True):
                return
            sink._on_frame(bytes(frame), bool(keyframe), timestamp)

        def _add_stream(self, *args: Any, **kwargs: Any) -> None:
            pass  # LibavH264Encoder announces its stream; we mux ourselves

    return QueueOutput()


class Picamera2Camera:
    """A Pi camera whose frames arrive already encoded (see the module docstring)."""

    encoded = True
    live = True

    def __init__(
        self,
        *,
        settings: CameraSettings,
        clock: Clock,
        api: Picamera2Api | None = None,
        queue_frames: int = 60,
        masks: MaskFeed | None = None,
    ) -> None:
        """`masks`: privacy masks painted on the main stream in `pre_callback`, before
        the encoder reads the buffer (picamera2's overlays reach only the preview)."""
        self.width = settings.width
        self.height = settings.height
        self.fps = settings.fps
        self._settings = settings
        self._clock = clock
        self._api = api
        self._anchor = WallAnchor(clock)
        self._queue: queue.Queue[EncodedFrame] = queue.Queue(maxsize=queue_frames)
        self._camera: Any = None
        self._encoder: Any = None
        self.dropped = 0
        self._painter = None if masks is None else MaskPainter(masks, self.width, self.height)
        self._mapped_array: Any = None
        self._paint_failed = False

    def open(self) -> None:
        api = self._api or load_picamera2()
        camera_num = int(self._settings.device) if str(self._settings.device).isdigit() else 0
        cameras = getattr(api.picamera2, "global_camera_info", None)
        if cameras is not None and not cameras():
            raise RecorderError(
                "no camera found: libcamera lists none (is the ribbon cable seated and the "
                "camera enabled?)"
            )
        try:
            camera = api.picamera2(camera_num)
        except (IndexError, RuntimeError) as exc:
            raise RecorderError(f"no camera found: camera {camera_num}: {exc}") from exc
        config = camera.create_video_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            controls={"FrameRate": float(self.fps)},
        )
        camera.configure(config)
        if self._painter is not None:
            self._painter.prepare()
            self._mapped_array = api.mapped_array
            camera.pre_callback = self._paint
        iperiod = keyframe_interval(self.fps)
        if api.has_hardware_encoder:
            encoder = api.h264_encoder(bitrate=self._settings.bitrate, repeat=True, iperiod=iperiod)
        else:
            encoder = api.libav_h264_encoder(
                bitrate=self._settings.bitrate,
                repeat=True,
                iperiod=iperiod,
                framerate=self.fps,
            )
        self._encoder = encoder
        self._camera = camera
        camera.start_recording(encoder, _make_output(api.output_base, self))

    def _paint(self, request: Any) -> None:
        """picamera2's pre_callback, on its camera thread, before the encoder gets the
        request: paint the masks on the main stream's own YUV420 buffer. Fails closed: a
        buffer that cannot be painted is blacked out whole, never recorded unmasked."""
        assert self._painter is not None
        with self._mapped_array(request, "main") as mapped:
            array = mapped.array
            try:
                if array.ndim != 2 or array.shape[0] != self.height * 3 // 2:
                    raise RecorderError(f"the main stream is not YUV420 ({array.shape})")
                changed = self._painter.paint(
                    *yuv420_planes(array, self.width, self.height, array.shape[1])
                )
                if changed:
                    logger.info("privacy masks changed; painted from this frame on")
            except Exception:  # never let an unmasked frame through to the encoder
                if not self._paint_failed:
                    logger.exception("cannot paint the privacy masks; blacking out frames")
                    self._paint_failed = True
                flat = array.reshape(-1)  # a view: MappedArray only reshapes the mmap
                luma = flat.size * 2 // 3  # a 4:2:0 buffer is two-thirds luma
                flat[:luma] = 16  # limited-range black: Y 16, U and V 128
                flat[luma:] = 128

    def _on_frame(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        """Called on picamera2's encoder thread: never block it."""
        first = getattr(self._encoder, "firsttimestamp", None) or 0
        sensor_us = int(first) + int(timestamp or 0)
        frame = EncodedFrame(
            data=data,
            keyframe=keyframe,
            capture_ms=self._anchor.capture_ms(sensor_us, keyframe),
            monotonic=sensor_us / 1e6,
            synchronized=self._clock.synchronized(),
        )
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def read(self, stop: StopSignal) -> EncodedFrame | None:
        while not stop.is_set():
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop_recording()
        finally:
            camera.close()
