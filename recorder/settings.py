"""The recorder's own settings: what camera to open and how to keep its footage.

The config (firmware_config) builds these directly, taking each default and range from
here; the recorder never reads files itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from foundation.errors import InvalidValueError

SourceKind = Literal["synthetic", "opencv", "picamera2"]
SOURCES: tuple[str, ...] = get_args(SourceKind)

# Retention defaults, written once: RetentionLimits, StorageSettings and the config
# schema (firmware_config) all take them from here.
DEFAULT_MAX_AGE_HOURS = 72.0
DEFAULT_MAX_BYTES = 8 * 1024**3
DEFAULT_MIN_FREE_BYTES = 256 * 1024**2
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast")
# Ranges, written once: the settings below refuse values outside them and the config
# schema reports them under their key. Inclusive.
WIDTH_RANGE = (16, 7680)
HEIGHT_RANGE = (16, 4320)
FPS_RANGE = (1, 60)  # a doorbell gains nothing from more; every encoder here keeps up at 60
SEGMENT_SECONDS_RANGE = (1, 60)  # shorter segments mean more files, longer ones coarser cuts


@dataclass(frozen=True, slots=True, kw_only=True)
class CameraSettings:
    """Which camera and what picture. `device` is a USB index, a V4L2 path, an RTSP/HTTP
    URL or a video file for `opencv`; ignored by `synthetic`; the camera number for
    `picamera2`. `preset` is the libx264 preset for software encoding."""

    source: SourceKind = "synthetic"
    device: str | int = 0
    width: int = 1280
    height: int = 720
    fps: float = 15.0
    preset: str = "ultrafast"
    bitrate: int | None = None  # hardware encoder bitrate (picamera2); None = its default

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InvalidValueError(f"unknown camera source {self.source!r}")
        if not (_within(self.width, WIDTH_RANGE) and _within(self.height, HEIGHT_RANGE)):
            raise InvalidValueError("camera size out of range")
        if self.width % 2 or self.height % 2:
            raise InvalidValueError("camera width and height must be even (4:2:0 video)")
        if not _within(self.fps, FPS_RANGE):
            raise InvalidValueError("camera fps must be between {} and {}".format(*FPS_RANGE))
        if self.preset not in PRESETS:
            raise InvalidValueError(f"preset must be one of {', '.join(PRESETS)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionLimits:
    """What retention enforces: age, total bytes, and a floor of free disk space."""

    max_age_hours: float = DEFAULT_MAX_AGE_HOURS
    max_bytes: int = DEFAULT_MAX_BYTES
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES

    def __post_init__(self) -> None:
        if self.max_age_hours <= 0 or self.max_bytes <= 0 or self.min_free_bytes < 0:
            raise InvalidValueError("retention limits must be positive")

    @property
    def max_age_ms(self) -> int:
        return round(self.max_age_hours * 3_600_000)

    @property
    def pinned_budget_bytes(self) -> int:
        """Pinned footage may hold at most half of max_bytes."""
        return self.max_bytes // 2


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    """Where the rolling buffer lives and how long footage is kept."""

    dir: Path
    segment_seconds: float = 4.0
    max_age_hours: float = DEFAULT_MAX_AGE_HOURS
    max_bytes: int = DEFAULT_MAX_BYTES
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES

    def __post_init__(self) -> None:
        if not _within(self.segment_seconds, SEGMENT_SECONDS_RANGE):
            raise InvalidValueError(
                "segment_seconds must be between {} and {}".format(*SEGMENT_SECONDS_RANGE)
            )
        self.limits()  # validates the retention numbers

    def limits(self) -> RetentionLimits:
        return RetentionLimits(
            max_age_hours=self.max_age_hours,
            max_bytes=self.max_bytes,
            min_free_bytes=self.min_free_bytes,
        )


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]
