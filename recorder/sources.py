"""Camera sources behind one small interface.

A source yields either raw RGB frames (`CapturedFrame`, which the recorder encodes with
libx264) or frames its own hardware encoder already compressed (`EncodedFrame`, which
the recorder only muxes). Each frame carries its wall-clock capture time, the monotonic
time it was taken and whether the clock was known to be synchronized then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from foundation.clock import Clock
from foundation.errors import RecorderError
from foundation.stop import StopSignal

if TYPE_CHECKING:
    import numpy as np

    from recorder.settings import CameraSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """A raw RGB picture (height, width, 3) and when it was taken."""

    image: np.ndarray
    capture_ms: int
    monotonic: float
    synchronized: bool


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One H.264 access unit (Annex-B) from a hardware encoder and when it was taken."""

    data: bytes
    keyframe: bool
    capture_ms: int
    monotonic: float
    synchronized: bool


class CameraSource(Protocol):
    """What the recorder needs from a camera. `read` blocks until a frame is ready and
    returns None at the end of the stream (a file ran out, `stop` was set)."""

    width: int
    height: int
    fps: float
    encoded: bool
    live: bool  # a live camera drops frames when the encoder falls behind; a file waits
    dropped: int  # frames the camera itself lost before `read` (its own encoder fell behind)

    def open(self) -> None: ...

    def read(self, stop: StopSignal) -> CapturedFrame | EncodedFrame | None: ...

    def close(self) -> None: ...


class OpenCVCamera:
    """A camera OpenCV can open: a USB index, a V4L2 device path, an RTSP/HTTP URL or a
    video file. Frames are resized to the configured size when the device ignores it."""

    encoded = False
    dropped = 0  # OpenCV hands over every frame it grabbed; the recorder counts its own drops

    def __init__(self, *, device: str | int, width: int, height: int, fps: float, clock: Clock):
        self.width = width
        self.height = height
        self.fps = fps
        self._device = device
        self.live = _is_live(device)
        self._clock = clock
        self._capture: object | None = None
        self._failures = 0

    def open(self) -> None:
        import cv2

        device: str | int = self._device
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            raise RecorderError(f"cannot open camera {self._device!r}")
        if isinstance(device, int) or str(device).startswith("/dev/"):
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
            # Keep the driver's queue short: a stale frame would get a wrong capture time.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()  # type: ignore[attr-defined]
            self._capture = None

    def read(self, stop: StopSignal) -> CapturedFrame | None:
        import cv2

        capture = self._capture
        if capture is None:
            raise RecorderError("camera is not open")
        while not stop.is_set():
            ok, image = capture.read()  # type: ignore[attr-defined]
            capture_ms = self._clock.wall_ms()
            mono = self._clock.monotonic()
            if ok and image is not None:
                self._failures = 0
                if image.shape[1] != self.width or image.shape[0] != self.height:
                    image = cv2.resize(image, (self.width, self.height))
                return CapturedFrame(
                    image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                    capture_ms=capture_ms,
                    monotonic=mono,
                    synchronized=self._clock.synchronized(),
                )
            if not _is_live(self._device):
                return None  # end of a video file
            self._failures += 1
            # A network camera drops out now and then; back off and retry, never spin.
            if self._failures % 50 == 1:
                logger.warning("camera %s returned no frame; retrying", _redact(self._device))
            if stop.wait(min(2.0, 0.05 * self._failures)):
                return None
        return None


def _is_live(device: str | int) -> bool:
    if isinstance(device, int):
        return True
    text = str(device)
    return text.isdigit() or text.startswith(
        ("/dev/", "rtsp://", "rtsps://", "http://", "https://")
    )


def _redact(device: str | int) -> str:
    """A camera URL without its credentials, for logs."""
    text = str(device)
    if "@" in text and "://" in text:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return text


def make_source(
    settings: CameraSettings, clock: Clock, *, fast_seconds: float | None = None
) -> CameraSource:
    """The source the settings name. `fast_seconds` asks the synthetic camera for that
    much footage as fast as it can be encoded; other sources refuse it."""
    if fast_seconds is not None and settings.source != "synthetic":
        raise RecorderError("--fast works only with the synthetic camera")
    if settings.source == "synthetic":
        from recorder.synthetic import SyntheticCamera

        return SyntheticCamera(
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            clock=clock,
            fast_seconds=fast_seconds,
        )
    if settings.source == "opencv":
        return OpenCVCamera(
            device=settings.device,
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            clock=clock,
        )
    from recorder.picamera2_source import Picamera2Camera

    return Picamera2Camera(settings=settings, clock=clock)
