"""Recording benchmark: CPU seconds per second of 720p15 video, and peak RSS.

Both sides encode the same input, raw RGB frames of synthetic footage read from one
file (rendered once, then looped), with the same libx264 options into 4-second MP4
segments: our recorder (capture thread, encoder, segment writer, index, retention) in
a child process, and `ffmpeg -f segment`. CPU time and peak RSS come from the kernel's
accounting of each child (wait4). A second run records from the synthetic camera itself
(drawing included) for the recorder's peak RSS in normal use. The benchmark fails
unless our recorder indexed every input frame and the others wrote footage.

    python -m bench.record [--seconds 60] [--loop-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

WIDTH, HEIGHT, FPS = 1280, 720, 15


class RawFileCamera:
    """Frames from a raw rgb24 file, looped, timed like fast synthetic footage."""

    encoded = False
    live = False
    dropped = 0

    def __init__(self, path: Path, seconds: float) -> None:
        self.width, self.height, self.fps = WIDTH, HEIGHT, float(FPS)
        self._path = path
        self._frame_bytes = WIDTH * HEIGHT * 3
        self._count = path.stat().st_size // self._frame_bytes
        self._total = round(seconds * FPS)
        self._i = 0
        self._fd = -1
        self._end_ms = 0

    def open(self) -> None:
        self._fd = os.open(self._path, os.O_RDONLY)
        self._end_ms = time.time_ns() // 1_000_000

    def close(self) -> None:
        os.close(self._fd)

    def read(self, stop: threading.Event):  # noqa: ANN201
        from recorder.frames import CapturedFrame

        if self._i >= self._total:
            return None
        i = self._i
        self._i += 1
        import numpy as np

        data = os.pread(self._fd, self._frame_bytes, (i % self._count) * self._frame_bytes)
        image = np.frombuffer(data, np.uint8).reshape(HEIGHT, WIDTH, 3)
        back = self._total - 1 - i
        return CapturedFrame(
            image=image,
            capture_ms=self._end_ms - round(back * 1000 / FPS),
            monotonic=time.monotonic() - back / FPS,
            synchronized=True,
        )


def child_ours(raw: Path, seconds: float, root: Path) -> None:
    from foundation.clock import SystemClock
    from recorder.buffer import RollingBuffer
    from recorder.recorder import Recorder
    from recorder.settings import StorageSettings

    clock = SystemClock(assume_synchronized=True)
    storage = StorageSettings(dir=root, max_bytes=1 << 42, min_free_bytes=0)
    with RollingBuffer.open(root) as buffer:
        Recorder(
            RawFileCamera(raw, seconds),
            buffer,
            storage=storage,
            clock=clock,
            free_space=lambda _p: 1 << 42,
            stop=threading.Event(),
        ).run()


def render(raw: Path, frames: int) -> None:
    from recorder.synthetic import draw_frame

    with open(raw, "wb") as f:
        for i in range(frames):
            f.write(draw_frame(1_800_000_000_000 + i * 67, WIDTH, HEIGHT, i).tobytes())


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, cpu s, peak RSS MB) of a child process. The kernel's peak RSS of a
    child starts at its parent's at fork, so this parent stays small (it imports
    neither numpy nor PyAV: rendering happens in a child too)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def buffered_frames(root: Path) -> int:
    from recorder.buffer import RollingBuffer

    with RollingBuffer.open(root, reconcile=False) as buffer:
        return sum(s.frames for s in buffer.segments())


def check_outputs(work: Path, seconds: float) -> None:
    """Each side really recorded: ours every input frame, ffmpeg and the synthetic
    camera something (imported only now, after every child's peak RSS was taken)."""
    from bench.sanity import require

    frames = buffered_frames(work / "ours")
    require(
        frames == round(seconds * FPS), f"ours indexed {frames} of {round(seconds * FPS)} frames"
    )
    require(any((work / "ffmpeg").glob("seg*.mp4")), "ffmpeg wrote segments")
    require(buffered_frames(work / "synthetic") > 0, "the synthetic camera's run indexed frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--loop-seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--child-ours", nargs=3, metavar=("RAW", "SECONDS", "DIR"))
    parser.add_argument("--child-render", nargs=2, metavar=("RAW", "FRAMES"))
    args = parser.parse_args()
    if args.child_ours:
        raw, seconds, root = args.child_ours
        child_ours(Path(raw), float(seconds), Path(root))
        return
    if args.child_render:
        render(Path(args.child_render[0]), int(args.child_render[1]))
        return

    from recorder.encoding import x264_options

    work = args.out / "record-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    raw = work / "input.rgb"
    loop_frames = round(args.loop_seconds * FPS)
    subprocess.run(
        [sys.executable, "-m", "bench.record", "--child-render", str(raw), str(loop_frames)],
        check=True,
    )
    loops = max(1, round(args.seconds / args.loop_seconds))
    seconds = loops * args.loop_seconds

    ours = run_measured(
        [
            sys.executable,
            "-m",
            "bench.record",
            "--child-ours",
            str(raw),
            str(seconds),
            str(work / "ours"),
        ]
    )
    opts = x264_options(fps=FPS, preset="ultrafast")
    (work / "ffmpeg").mkdir()
    theirs = run_measured(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{WIDTH}x{HEIGHT}",
            "-r",
            str(FPS),
            "-stream_loop",
            str(loops - 1),
            "-i",
            str(raw),
            "-c:v",
            "libx264",
            "-preset",
            opts["preset"],
            "-tune",
            opts["tune"],
            "-x264-params",
            opts["x264-params"],
            "-pix_fmt",
            "yuv420p",
            "-f",
            "segment",
            "-segment_time",
            "4",
            "-segment_format",
            "mp4",
            str(work / "ffmpeg" / "seg%05d.mp4"),
        ]
    )
    synthetic = run_measured(
        [
            sys.executable,
            "-m",
            "recorder.commands",
            "record",
            "--dir",
            str(work / "synthetic"),
            "--seconds",
            str(min(seconds, 30)),
            "--fast",
        ]
    )
    check_outputs(work, seconds)
    print(f"\nrecording {seconds:g} s of 1280x720@15 (same raw input, same x264 options)")
    print(
        f"  ours:   {ours[1]:.1f} CPU s ({ours[1] / seconds:.3f} CPU s per video s), "
        f"wall {ours[0]:.1f} s, peak RSS {ours[2]:.0f} MB"
    )
    print(
        f"  ffmpeg: {theirs[1]:.1f} CPU s ({theirs[1] / seconds:.3f} CPU s per video s), "
        f"wall {theirs[0]:.1f} s, peak RSS {theirs[2]:.0f} MB"
    )
    print(f"  ratio ours / ffmpeg CPU: {ours[1] / theirs[1]:.2f}x  (goal <= 1.2)")
    print(
        f"  recorder peak RSS with the synthetic camera at 720p: {synthetic[2]:.0f} MB (goal < 150)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
