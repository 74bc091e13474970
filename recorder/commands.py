"""Plain-Python entry points behind `doorbellctl record` and `doorbellctl clip`.

The CLI maps its arguments onto these; `python -m recorder.commands clip ...` exists for
the export benchmark (it measures the whole command, start-up included), so the cameras
(numpy, OpenCV) are imported only by `record`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.arguments import ArgumentParser
from foundation.clock import Clock, SystemClock
from foundation.errors import DoorbellError, NoFootageError
from foundation.files import disk_free_bytes
from foundation.times import Window, parse_time
from recorder.buffer import RollingBuffer
from recorder.export import export_clip
from recorder.recorder import Recorder
from recorder.settings import CameraSettings, StorageSettings

if TYPE_CHECKING:
    from recorder.export import ClipInfo
    from recorder.recorder import RecordSummary

__all__ = ["ClipInfo", "NoFootageError", "RecordSummary", "clip", "record"]


def record(
    *,
    camera: CameraSettings,
    storage: StorageSettings,
    seconds: float,
    fast: bool,
    clock: Clock,
    stop: threading.Event | None = None,
) -> RecordSummary:
    """Record `seconds` of footage into the buffer, without the daemon. With `fast` (the
    synthetic camera only) the footage is made as fast as the encoder allows and its
    capture times end at the moment recording started. Raises BufferLockedError while
    another recorder holds the buffer."""
    from recorder.masks import MaskFeed
    from recorder.sources import make_source  # cameras (numpy, cv2) only for record, not clip

    if seconds <= 0:
        raise DoorbellError("seconds must be positive")
    masks = MaskFeed(camera.masks) if camera.masks else None
    source = make_source(camera, clock, fast_seconds=seconds if fast else None, masks=masks)
    with RollingBuffer.open(storage.dir, reconcile=False) as buffer:
        recorder = Recorder(
            source,
            buffer,
            storage=storage,
            clock=clock,
            free_space=disk_free_bytes,
            stop=stop or threading.Event(),
            preset=camera.preset,
            masks=masks,
        )
        return recorder.run(max_seconds=None if fast else seconds)


def clip(
    *,
    storage_dir: Path,
    window: Window,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> ClipInfo:
    """Export the frames of `window` to the MP4 `out`. Works while a recorder runs.
    Raises NoFootageError (leaving no file) when the window holds no footage."""
    return export_clip(Path(storage_dir), window, Path(out), progress=progress)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m recorder.commands")
    sub = parser.add_subparsers(dest="command", required=True)
    p_clip = sub.add_parser("clip", help="export a frame-exact clip")
    p_clip.add_argument("--dir", required=True, type=Path)
    p_clip.add_argument("--start", required=True)
    p_clip.add_argument("--end", required=True)
    p_clip.add_argument("--out", required=True, type=Path)
    p_rec = sub.add_parser("record", help="record synthetic footage (for benchmarks)")
    p_rec.add_argument("--dir", required=True, type=Path)
    p_rec.add_argument("--seconds", required=True, type=float)
    p_rec.add_argument("--fast", action="store_true")
    p_rec.add_argument("--width", type=int, default=1280)
    p_rec.add_argument("--height", type=int, default=720)
    p_rec.add_argument("--fps", type=float, default=15)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m recorder.commands clip --dir D --start T --end T --out F`, and
    `... record --dir D --seconds N [--fast]` with the synthetic camera."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "record":
            summary = record(
                camera=CameraSettings(width=args.width, height=args.height, fps=args.fps),
                storage=StorageSettings(dir=args.dir, max_bytes=1 << 42, min_free_bytes=0),
                seconds=args.seconds,
                fast=args.fast,
                clock=SystemClock(),
            )
            print(f"{summary.segments} segments, {summary.frames} frames, {summary.bytes} bytes")
            return 0
        window = Window(parse_time(args.start), parse_time(args.end))
        info = clip(storage_dir=args.dir, window=window, out=args.out)
    except DoorbellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{info.path}: {info.frames} frames, {info.bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
