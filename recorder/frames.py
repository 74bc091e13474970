"""What a camera hands the recorder, and the interface every camera implements.

A source yields either raw RGB frames (`CapturedFrame`, which the recorder encodes with
libx264) or frames its own hardware encoder already compressed (`EncodedFrame`, which
the recorder only muxes). Each frame carries its wall-clock capture time, the monotonic
time it was taken and whether the clock was known to be synchronized then. The cameras
themselves (recorder.sources, recorder.synthetic, recorder.picamera2_source) import
this module; it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from foundation.stop import StopSignal

if TYPE_CHECKING:
    import numpy as np


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
