"""The synthetic camera (PROTOCOL §8): frames that carry their own capture time.

Each frame's capture time, in epoch milliseconds, is drawn as 48 bits (most significant
first) of 16x16 white/black blocks from the top-left corner, left to right, wrapping at
the right edge. The rest is moving, textured, slightly noisy content so that the encoder
works about as hard as on a real porch. `read_capture_ms` reads the stamp back from a
decoded, lossy frame.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from recorder.clock import Clock
from recorder.sources import CapturedFrame

STAMP_BITS = 48
BLOCK = 16


def stamp_cells(width: int) -> list[tuple[int, int]]:
    """(y, x) of the top-left corner of each bit's block, most significant bit first."""
    per_row = width // BLOCK
    if per_row < 1:
        raise ValueError("frame narrower than one stamp block")
    return [((i // per_row) * BLOCK, (i % per_row) * BLOCK) for i in range(STAMP_BITS)]


def _check_size(width: int, height: int) -> None:
    rows = -(-STAMP_BITS // max(1, width // BLOCK))
    if width < BLOCK or height < rows * BLOCK:
        raise ValueError(f"{width}x{height} is too small for a 48-bit stamp")


@lru_cache(maxsize=4)
def _scene(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A texture twice the frame's size to pan across, and a few noise fields to add."""
    rng = np.random.default_rng(20261128)
    th, tw = height * 2, width * 2
    xs = np.arange(tw, dtype=np.float32)[None, :]
    ys = np.arange(th, dtype=np.float32)[:, None]
    waves = (
        lambda: 96 + 60 * np.sin(xs / 37.0) * np.cos(ys / 53.0),
        lambda: 110 + 50 * np.sin((xs + ys) / 71.0),
        lambda: 90 + 70 * np.cos(xs / 23.0 - ys / 41.0),
    )
    # Blocky "objects" of varying size, as on a porch: edges the encoder has to track.
    blocks = rng.integers(0, 60, size=(th // 24 + 1, tw // 24 + 1, 3), dtype=np.uint8)
    texture = np.empty((th, tw, 3), np.uint8)
    for c, wave in enumerate(waves):  # one channel at a time keeps the peak memory low
        channel = wave().astype(np.float32)
        channel += np.repeat(np.repeat(blocks[:, :, c], 24, axis=0), 24, axis=1)[:th, :tw]
        np.clip(channel, 16, 220, out=channel)
        texture[:, :, c] = channel
    noise = rng.integers(0, 6, size=(4, height, width, 3), dtype=np.uint8)
    return texture, noise


def draw_frame(capture_ms: int, width: int, height: int, index: int) -> np.ndarray:
    """An RGB frame (height, width, 3) of moving content with `capture_ms` stamped on it."""
    if not 0 <= capture_ms < 1 << STAMP_BITS:
        raise ValueError("capture time does not fit in 48 bits")
    _check_size(width, height)
    texture, noise = _scene(width, height)
    x0 = (index * 3) % width
    y0 = (index * 2) % height
    frame = texture[y0 : y0 + height, x0 : x0 + width] + noise[index % len(noise)]
    # A bright box crossing the picture: a moving object over a moving background.
    box = max(16, height // 6)
    bx = (index * 7) % max(1, width - box)
    by = height // 2 + int((height // 4) * np.sin(index / 9.0)) - box // 2
    by = min(max(by, 0), height - box)
    frame[by : by + box, bx : bx + box] = (230, 200, 40)
    for bit, (y, x) in enumerate(stamp_cells(width)):
        on = (capture_ms >> (STAMP_BITS - 1 - bit)) & 1
        frame[y : y + BLOCK, x : x + BLOCK] = 255 if on else 0
    return frame


def read_capture_ms(frame: np.ndarray) -> int:
    """The stamp of a decoded frame (RGB or gray). Samples the 8x8 centre of each block
    and thresholds at mid-grey, so coding noise around block edges does not matter."""
    if frame.ndim == 3:
        luma = frame.mean(axis=2)
    elif frame.ndim == 2:
        luma = frame.astype(np.float32)
    else:
        raise ValueError("frame must be (H, W) or (H, W, C)")
    height, width = luma.shape
    _check_size(width, height)
    value = 0
    for y, x in stamp_cells(width):
        centre = luma[y + 4 : y + 12, x + 4 : x + 12]
        value = (value << 1) | int(centre.mean() >= 128)
    return value


class SyntheticCamera:
    """A camera that draws stamped frames at `fps`.

    Live: each frame is stamped with the clock's wall time and paced on its monotonic
    time with `stop.wait`. Fast (`fast_seconds` set): frames for that many seconds are
    produced as fast as they are asked for, with capture times that end at the moment
    the camera was opened, for filling a buffer with hours of footage in minutes."""

    encoded = False

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: float,
        clock: Clock,
        fast_seconds: float | None = None,
    ) -> None:
        _check_size(width, height)
        self.width = width
        self.height = height
        self.fps = fps
        self._clock = clock
        self._fast_frames = None if fast_seconds is None else max(1, round(fast_seconds * fps))
        self.live = self._fast_frames is None
        self._index = 0
        self._end_ms = 0
        self._end_mono = 0.0
        self._synchronized = True
        self._next_due: float | None = None

    def open(self) -> None:
        self._end_ms = self._clock.wall_ms()
        self._end_mono = self._clock.monotonic()
        self._synchronized = self._clock.synchronized()
        self._index = 0
        self._next_due = None

    def close(self) -> None:
        pass

    def read(self, stop: threading.Event) -> CapturedFrame | None:
        if self._fast_frames is not None:
            return self._read_fast()
        now = self._clock.monotonic()
        if self._next_due is None:
            self._next_due = now
        wait = self._next_due - now
        if wait > 0 and stop.wait(wait):
            return None
        # Pace on the schedule but never try to catch up a backlog frame by frame.
        self._next_due = max(self._next_due + 1.0 / self.fps, self._clock.monotonic())
        capture_ms = self._clock.wall_ms()
        index = self._index
        self._index += 1
        return CapturedFrame(
            image=draw_frame(capture_ms, self.width, self.height, index),
            capture_ms=capture_ms,
            monotonic=self._clock.monotonic(),
            synchronized=self._clock.synchronized(),
        )

    def _read_fast(self) -> CapturedFrame | None:
        assert self._fast_frames is not None
        index = self._index
        if index >= self._fast_frames:
            return None
        self._index += 1
        back = self._fast_frames - 1 - index
        capture_ms = self._end_ms - round(back * 1000 / self.fps)
        return CapturedFrame(
            image=draw_frame(capture_ms, self.width, self.height, index),
            capture_ms=capture_ms,
            monotonic=self._end_mono - back / self.fps,
            synchronized=self._synchronized,
        )
