"""The cameras: an OpenCV one here, the synthetic and the picamera2 one in their own
modules, and `make_source`, which picks the one the settings name. The interface they
share and the frames they hand over are in recorder.frames."""

from __future__ import annotations

import logging

from foundation.clock import Clock
from foundation.errors import RecorderError
from foundation.stop import StopSignal
from recorder.frames import CameraSource, CapturedFrame
from recorder.masks import MaskFeed
from recorder.picamera2_source import Picamera2Camera
from recorder.settings import CameraSettings
from recorder.synthetic import SyntheticCamera

logger = logging.getLogger(__name__)


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
        import cv2  # OpenCV is optional and slow to load (~0.3 s)

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
        import cv2  # optional, see open()

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
    settings: CameraSettings,
    clock: Clock,
    *,
    fast_seconds: float | None = None,
    masks: MaskFeed | None = None,
) -> CameraSource:
    """The source the settings name. `fast_seconds` asks the synthetic camera for that
    much footage as fast as it can be encoded; other sources refuse it. `masks` reach
    the picamera2 source, which paints them itself; the recorder paints the frames of
    the others (they hand over raw frames)."""
    if fast_seconds is not None and settings.source != "synthetic":
        raise RecorderError("--fast works only with the synthetic camera")
    if settings.source == "synthetic":
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
    return Picamera2Camera(settings=settings, clock=clock, masks=masks)
