"""The synthetic camera (docs/protocol.md §8): frames that carry their own capture time.

Each frame's capture time, in epoch milliseconds, is drawn as 48 bits (most significant
first) of 16x16 white/black blocks from the top-left corner, left to right, wrapping at
the right edge. The rest is moving, textured, slightly noisy content so that the encoder
works about as hard as on a real porch. The stamp itself is part of the wire contract
(foundation.wire).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from foundation.clock import Clock
from foundation.stop import StopSignal
from foundation.wire import check_stamp_size, draw_stamp
from recorder.frames import CapturedFrame


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
    check_stamp_size(width, height)
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
    draw_stamp(frame, capture_ms)
    return frame


class SyntheticCamera:
    """A camera that draws stamped frames at `fps`.

    Live: each frame is stamped with the clock's wall time and paced on its monotonic
    time with `stop.wait`. Fast (`fast_seconds` set): frames for that many seconds are
    produced as fast as they are asked for, with capture times that end at the moment
    the camera was opened, for filling a buffer with hours of footage in minutes."""

    encoded = False
    dropped = 0  # it draws every frame asked for; the recorder counts its own drops

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: float,
        clock: Clock,
        fast_seconds: float | None = None,
    ) -> None:
        check_stamp_size(width, height)
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

    def read(self, stop: StopSignal) -> CapturedFrame | None:
        if self._fast_frames is not None:
            return self._read_fast()
        now = self._clock.monotonic()
        if self._next_due is None:
            self._next_due = now
        wait = self._next_due - now
        if wait > 0 and stop.wait(wait):
            return None
        # Pace on the schedule but never try to catch up a backlog frame by frame, and
        # after a stall (a slow consumer, as on a Pi) keep half a frame between frames so
        # that two never share a capture millisecond.
        self._next_due = max(
            self._next_due + 1.0 / self.fps, self._clock.monotonic() + 0.5 / self.fps
        )
        # Both clocks at the moment of capture: read after drawing, a monotonic time late
        # by a descheduled draw would look like a wall-clock jump to the recorder.
        capture_ms = self._clock.wall_ms()
        monotonic = self._clock.monotonic()
        index = self._index
        self._index += 1
        return CapturedFrame(
            image=draw_frame(capture_ms, self.width, self.height, index),
            capture_ms=capture_ms,
            monotonic=monotonic,
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
