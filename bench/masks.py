"""Privacy-mask benchmark: what burning three masks into 1080p frames costs, per frame
and as a share of recording.

Per frame: the recorder's way (the masks rasterised once, then one `cv2.copyTo` per
YUV plane over their bounding box) on each source's buffer: a PyAV frame's planes (the
synthetic and OpenCV cameras) and a padded libcamera YUV420 buffer (picamera2's
`pre_callback`); against the way a user would first reach for, filling the RGB picture
through a boolean mask (`image[mask] = 0`), on the same frames in the same run.

Per recording: CPU seconds of recording the same 1080p15 footage with and without the
masks, each in a child process (the kernel's accounting, wait4), through the synthetic
camera and through the OpenCV camera reading an MP4 of the same scene. The masked
footage has large flat areas, which the encoder may find cheaper, so the paint cost's
own share of recording CPU is printed too (paint ms per frame over recording ms per
frame). The benchmark fails unless both runs of each source recorded every frame and
the masked run's frames are black inside the masks.

    python -m bench.masks [--seconds 20] [--frames 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, FPS = 1920, 1080, 15
MASKS_JSON = [  # a street along the bottom edge, a neighbour's window, a path
    {"name": "street", "points": [[0, 0.7], [0.35, 0.75], [0.3, 1.0], [0, 1.0]]},
    {"name": "window", "points": [[0.55, 0.3], [0.95, 0.35], [0.7, 0.6]]},
    {"name": "path", "points": [[0.3, 0.3], [0.5, 0.3], [0.5, 0.4], [0.4, 0.4], [0.4, 0.6],
                                [0.3, 0.6]]},
]  # fmt: skip


def masks() -> Any:
    from recorder.masks import parse_masks

    return parse_masks(MASKS_JSON)


def per_call_ms(work: Any, frames: int, rounds: int = 5) -> float:
    """The best of `rounds` timings of `frames` calls, per call: the machine is shared,
    and the best round is the one the least disturbed (timeit's reasoning)."""
    work(0)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(frames):
            work(i)
        best = min(best, (time.perf_counter() - start) * 1000 / frames)
    return best


def paint_costs(frames: int) -> dict[str, float]:
    """ms per 1080p frame: ours on each source's buffer, and the RGB boolean fill."""
    import av
    import numpy as np

    from recorder.masks import MaskRaster, frame_planes, yuv420_planes
    from recorder.synthetic import draw_frame

    raster = MaskRaster(masks(), WIDTH, HEIGHT)
    pictures = [draw_frame(1_800_000_000_000 + i, WIDTH, HEIGHT, i) for i in range(4)]
    yuv = [
        av.VideoFrame.from_ndarray(p, format="rgb24").reformat(format="yuv420p") for p in pictures
    ]
    stride = (WIDTH + 255) // 256 * 256  # rows padded, as libcamera may
    buffers = [np.full((HEIGHT * 3 // 2, stride), 100, np.uint8) for _ in pictures]
    boolean = raster.luma > 0
    rgb = [p.copy() for p in pictures]

    def stock(i: int) -> None:
        rgb[i % 4][boolean] = 0

    return {
        "frame": per_call_ms(lambda i: raster.paint(*frame_planes(yuv[i % 4])), frames),
        "picamera2": per_call_ms(
            lambda i: raster.paint(*yuv420_planes(buffers[i % 4], WIDTH, HEIGHT, stride)), frames
        ),
        "rgb": per_call_ms(stock, frames),
    }


# ---- recordings, each in a child process ------------------------------------------------


def child_record(source: str, masked: bool, seconds: float, root: Path, video: Path) -> None:
    """`doorbellctl record`'s own path: the settings' camera and masks, the recorder."""
    from foundation.clock import SystemClock
    from recorder.commands import record
    from recorder.settings import CameraSettings, StorageSettings

    camera = CameraSettings(
        source="synthetic" if source == "synthetic" else "opencv",
        device=str(video),
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        masks=masks() if masked else (),
    )
    record(
        camera=camera,
        storage=StorageSettings(dir=root, max_bytes=1 << 42, min_free_bytes=0),
        seconds=seconds + (0 if source == "synthetic" else 60),  # a file: to its end
        fast=source == "synthetic",
        clock=SystemClock(assume_synchronized=True),
    )


def cpu_seconds(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed with status {status}")
    return usage.ru_utime + usage.ru_stime


def make_video(path: Path, seconds: float) -> None:
    """An MP4 of the synthetic scene for the OpenCV camera (ffmpeg reading raw frames)."""
    from recorder.synthetic import draw_frame

    frames = round(seconds * FPS)
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-", "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    assert ffmpeg.stdin is not None
    for i in range(frames):
        ffmpeg.stdin.write(draw_frame(1_800_000_000_000 + i * 67, WIDTH, HEIGHT, i).tobytes())
    ffmpeg.stdin.close()
    if ffmpeg.wait() != 0:
        raise SystemExit("ffmpeg could not write the OpenCV camera's input")


def check_recording(root: Path, frames: int, masked: bool) -> None:
    """Every frame recorded; inside the masks black exactly when they were on."""
    import av
    import numpy as np

    from bench.sanity import require
    from recorder.buffer import RollingBuffer
    from recorder.masks import MaskRaster

    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
    got = sum(s.frames for s in segments)
    require(got == frames, f"{root.name} recorded {got} of {frames} frames")
    import cv2

    # Away from the masks' edges, which H.264 blurs over a block or two.
    inside = cv2.erode(MaskRaster(masks(), WIDTH, HEIGHT).luma, np.ones((13, 13), np.uint8)) > 0
    with av.open(str(root / segments[-1].file)) as container:
        frame = next(container.decode(video=0))
    luma = frame.to_ndarray(format="yuv420p")[:HEIGHT].astype(np.int16)
    black = int(np.abs(luma[inside] - 16).max()) <= 8  # H.264 leaves a few levels
    require(black == masked, f"{root.name}: inside the masks black={black}, masked={masked}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20, help="of 1080p15 per recording")
    parser.add_argument("--frames", type=int, default=100, help="frames per paint timing round")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--child", nargs=5, metavar=("SOURCE", "MASKED", "SECONDS", "DIR", "MP4"))
    args = parser.parse_args()
    if args.child:
        source, masked, seconds, root, video = args.child
        child_record(source, masked == "1", float(seconds), Path(root), Path(video))
        return

    work = args.out / "masks-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    costs = paint_costs(args.frames)
    video = work / "scene.mp4"
    make_video(video, args.seconds)
    frames = round(args.seconds * FPS)
    cpu: dict[tuple[str, bool], float] = {}
    for source in ("synthetic", "opencv"):
        for masked in (False, True):
            root = work / f"{source}-{'masked' if masked else 'plain'}"
            cpu[source, masked] = cpu_seconds(
                [sys.executable, "-m", "bench.masks", "--child", source, "1" if masked else "0",
                 str(args.seconds), str(root), str(video)]
            )  # fmt: skip
            check_recording(root, frames, masked)

    print(f"\nthree privacy masks on {WIDTH}x{HEIGHT} frames (best of 5 rounds of {args.frames})")
    print(f"  paint on a PyAV frame's planes (synthetic, OpenCV): {costs['frame']:.3f} ms/frame")
    print(
        f"  paint on a libcamera YUV420 buffer (picamera2):     {costs['picamera2']:.3f} ms/frame"
    )
    print(f"  RGB boolean fill (image[mask] = 0), the usual way:  {costs['rgb']:.3f} ms/frame")
    print(f"  ratio YUV-plane paint / RGB boolean fill: {costs['frame'] / costs['rgb']:.3f}x")
    print(f"  ratio picamera2 paint / RGB boolean fill: {costs['picamera2'] / costs['rgb']:.3f}x")
    for source in ("synthetic", "opencv"):
        plain, masked = cpu[source, False], cpu[source, True]
        per_frame = plain * 1000 / frames
        print(
            f"\n  {source}: {frames} frames recorded, {plain:.1f} CPU s unmasked "
            f"({per_frame:.1f} ms/frame), {masked:.1f} CPU s masked"
        )
        print(f"  ratio masked / unmasked recording CPU ({source}): {masked / plain:.3f}x"
              "  (goal <= 1.02)")  # fmt: skip
        print(f"  ratio (recording + paint) / recording CPU ({source}): "
              f"{(per_frame + costs['frame']) / per_frame:.4f}x  (goal <= 1.02)")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
