"""Export benchmark: a 15-minute window from 30 minutes of 720p15 footage.

Compares, in one run on the same footage, the whole `clip` command (a fresh Python
process, start-up included) against `ffmpeg -f concat -c copy` over the same segment
files and against `ffmpeg -ss -to -c copy` on the footage joined into one file (which
cuts only at keyframes, so it is not frame-exact). Footage is made once with the
synthetic camera and kept under bench-out/. Our clip must hold exactly the window's
frames (each decoded, its drawn capture time read), or the benchmark fails.

    python -m bench.export [--minutes 30] [--window-minutes 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.sanity import require
from foundation.times import Window, format_time
from recorder.buffer import RollingBuffer
from tests.sync.sharekit import decode_capture_times


def timed(cmd: list[str], out: Path) -> float:
    # Each run writes a new file (freeing the previous 200+ MB is not the tool's work)
    # and starts with no dirty pages pending, so nobody pays for the last run's writes.
    out.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def ensure_footage(root: Path, minutes: float) -> None:
    if root.exists():
        with RollingBuffer.open(root) as buffer:
            span = buffer.span()
        if span and span[1] - span[0] >= minutes * 60_000 - 1000:
            return
    print(f"recording {minutes:g} min of 1280x720@15 synthetic footage into {root} ...")
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder.commands",
            "record",
            "--dir",
            str(root),
            "--seconds",
            str(minutes * 60),
            "--fast",
        ],
        check=True,
    )
    print(f"  took {time.perf_counter() - start:.0f} s")


def window_frames(root: Path, window: Window) -> list[int]:
    """Capture times of the buffer's frames inside `window`, as its index holds them."""
    with RollingBuffer.open(root, reconcile=False) as buffer:
        inside = buffer.segments(window)
        tables = buffer.frame_tables([s.id for s in inside])
    return [t for s in inside for t in tables[s.id].times if window.contains(t)]


def frame_exact(root: Path, window: Window, clip: Path) -> bool:
    """Whether `clip` holds exactly the buffer's frames captured inside `window`, in
    order: every frame decoded and its drawn capture time read."""
    expected = window_frames(root, window)
    return bool(expected) and decode_capture_times(clip) == expected


def concat_command(listing: Path, out: Path) -> list[str]:
    """What an NVR runs: ffmpeg's concat demuxer, stream copy."""
    return [
        "ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0",
        "-i", str(listing), "-c", "copy", str(out),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--window-minutes", type=float, default=15)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    root = args.out / f"export-footage-{args.minutes:g}min"
    ensure_footage(root, args.minutes)
    work = args.out / "export-work"
    work.mkdir(parents=True, exist_ok=True)

    with RollingBuffer.open(root) as buffer:
        segments = buffer.segments()
    first, last = segments[0].start_ms, segments[-1].end_ms
    # A window that starts mid-GOP, so our export has to re-encode a head.
    start = first + round((last - first - args.window_minutes * 60_000) / 2) + 333
    end = start + round(args.window_minutes * 60_000)
    inside = [s for s in segments if s.end_ms >= start and s.start_ms <= end]

    concat_list = work / "window.txt"
    concat_list.write_text("".join(f"file '{(root / s.file).resolve()}'\n" for s in inside))
    all_list = work / "all.txt"
    all_list.write_text("".join(f"file '{(root / s.file).resolve()}'\n" for s in segments))
    joined = work / f"joined-{args.minutes:g}min.mp4"
    if not joined.exists():
        subprocess.run(concat_command(all_list, joined), check=True)
    ss = (start - first) / 1000
    to = (end - first) / 1000

    ours_cmd = [
        sys.executable,
        "-m",
        "recorder.commands",
        "clip",
        "--dir",
        str(root),
        "--start",
        format_time(start),
        "--end",
        format_time(end),
        "--out",
        str(work / "ours.mp4"),
    ]
    concat_cmd = concat_command(concat_list, work / "concat.mp4")
    seek_cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-ss",
        f"{ss:.3f}",
        "-to",
        f"{to:.3f}",
        "-i",
        str(joined),
        "-c",
        "copy",
        str(work / "seek.mp4"),
    ]
    results: dict[str, list[float]] = {"ours": [], "concat": [], "seek": []}
    outs = {"ours": work / "ours.mp4", "concat": work / "concat.mp4", "seek": work / "seek.mp4"}
    cmds = {"ours": ours_cmd, "concat": concat_cmd, "seek": seek_cmd}
    timed(ours_cmd, outs["ours"])  # warm the page cache for everyone alike
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            results[name].append(timed(cmd, outs[name]))
    require(
        frame_exact(root, Window(start, end), outs["ours"]),
        "our clip holds exactly the window's frames",
    )
    require(all(outs[k].stat().st_size > 0 for k in ("concat", "seek")), "ffmpeg wrote its clips")
    med = {k: statistics.median(v) for k, v in results.items()}
    size = (work / "ours.mp4").stat().st_size
    print(
        f"\nexport of a {args.window_minutes:g}-minute window from {args.minutes:g} min of "
        f"720p15 ({len(segments)} segments, {len(inside)} in the window, clip {size / 1e6:.0f} MB)"
    )
    print(f"  ours (clip command, frame-exact, start-up incl.): {med['ours']:.2f} s")
    print(f"  ffmpeg -f concat -c copy (same segments):         {med['concat']:.2f} s")
    print(f"  ffmpeg -ss -to -c copy (one joined file):         {med['seek']:.2f} s")
    print(f"  ratio ours / concat: {med['ours'] / med['concat']:.2f}x  (goal < 1)")
    print(f"  ratio ours / seek:   {med['ours'] / med['seek']:.2f}x  (goal <= 1.5)")


if __name__ == "__main__":
    main()
