"""Console benchmark: the thumbnail strip of a 12-hour window on a 72-hour buffer, and
the time to the first frame of a preview clip, against ffmpeg on the same segment files.

The 72-hour buffer is made from a few minutes of real 720p15 synthetic footage: its
segment files are hard-linked under new names and indexed again with shifted capture
times, so the index has the rows (and the frame tables) of 72 hours of 4-second
segments while the disk holds only the few minutes.

- Strip: ours is `Preview.strip` + `Preview.thumbnail` for each keyframe it names (cold
  cache, 4 worker threads, as the web server's pool serves the page's parallel image
  requests). ffmpeg gets the same keyframes from the same files, one
  `ffmpeg -skip_frame nokey -ss OFFSET -i SEGMENT -frames:v 1 -vf scale=160:-2` per
  thumbnail, 4 at a time, and all of them from one ffmpeg process (one input per
  keyframe).
- First frame of a 30-second preview clip starting mid-GOP: ours is the frame-exact
  export (`Preview.clip`) then decoding its first frame; ffmpeg's is
  `ffmpeg -f concat -ss -t -c copy` over the window's segments (not frame-exact: it
  starts at a keyframe) then decoding its first frame the same way.

- The timeline and the player (device/console/video.py), the same 12-hour window:
  the activity strip cold (the index read, coverage, activity and playback plan of the
  whole window, then 300 bins); a tap on the timeline to the first frame available
  (narrowing the plan to the tapped moment, the playlist, the init and the first piece
  with its re-encoded head) against `ffmpeg -ss OFFSET -i SEGMENT -c copy` writing the
  same segment as fragmented MP4; the CPU time of streaming one minute (every piece of
  it) against `ffmpeg -f concat -c copy -f hls -hls_segment_type fmp4` over the same
  segments; and how much this process's memory (PSS, and its peak RSS) grows while it
  does all that.

Both are measured in-process (no HTTPS in the way); medians of several runs.

    python -m bench.console [--base-minutes 4] [--hours 72] [--window-hours 12] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.export import ensure_footage, window_frames
from bench.sanity import require
from device.console.preview import Preview
from device.console.video import Video
from foundation.times import Window
from recorder.buffer import INDEX_NAME, RollingBuffer, Segment
from recorder.segment_file import FrameTable

WORKERS = 4


def long_buffer(base: Path, root: Path, hours: float) -> tuple[int, int]:
    """A buffer at `root` indexing `hours` of footage made of `base`'s segments."""
    with RollingBuffer.open(base) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    span = segments[-1].end_ms - segments[0].start_ms + round(1000 / segments[0].fps)
    repeats = int(hours * 3_600_000 // span) + 1
    marker = root / f".made-{hours:g}h-{len(segments)}"
    if marker.exists():
        with RollingBuffer.open(root) as buffer:
            got = buffer.span()
        assert got is not None
        return got
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with RollingBuffer.open(root):
        pass  # the schema
    conn = sqlite3.connect(root / INDEX_NAME)
    rows = []
    print(f"indexing {hours:g} h of footage ({repeats} x {len(segments)} segments) in {root} ...")
    for k in range(repeats):
        shift = k * span
        for seg in segments:
            table = tables[seg.id]
            name = f"seg-{seg.start_ms + shift}-{k:08x}.mp4"
            os.link(base / seg.file, root / name)
            moved = FrameTable(
                table.extradata,
                type(table.times)("q", (t + shift for t in table.times)),
                table.pos,
                table.size,
                table.key,
                table.preset,
            )
            rows.append(
                (
                    name,
                    seg.start_ms + shift,
                    seg.end_ms + shift,
                    seg.frames,
                    seg.bytes,
                    1,
                    seg.width,
                    seg.height,
                    seg.fps,
                    moved.preset,
                    moved.extradata,
                    moved.to_blob(),
                )
            )
    with conn:
        conn.executemany(
            "INSERT INTO segments (file, start_ms, end_ms, frames, bytes, synchronized, "
            "width, height, fps, preset, extradata, frame_table) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    conn.close()
    marker.touch()
    return segments[0].start_ms, segments[0].start_ms + repeats * span


def our_strip(root: Path, window: Window, scratch: Path) -> tuple[float, list[int]]:
    start = time.perf_counter()
    preview = Preview(root, scratch)
    times = preview.strip(window)
    with ThreadPoolExecutor(WORKERS) as pool:
        images = list(pool.map(lambda t: preview.thumbnail(window, t), times))
    elapsed = time.perf_counter() - start
    require(bool(times) and all(images), "every keyframe of the strip has its thumbnail")
    return elapsed, times


def ffmpeg_strip(root: Path, times: list[int], out: Path) -> float:
    with RollingBuffer.open(root) as buffer:
        jobs = []
        for n, t in enumerate(times):
            seg = buffer.segments(Window(t, t))[0]
            jobs.append((root / seg.file, (t - seg.start_ms) / 1000, out / f"{n}.jpg"))

    def one(job: tuple[Path, float, Path]) -> None:
        src, offset, dst = job
        subprocess.run(
            [
                "ffmpeg", "-v", "error", "-y", "-skip_frame", "nokey",
                "-ss", f"{offset:.3f}", "-i", str(src),
                "-frames:v", "1", "-vf", "scale=160:-2", "-q:v", "4", str(dst),
            ],
            check=True,
        )  # fmt: skip

    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, jobs))
    elapsed = time.perf_counter() - start
    require(all(dst.stat().st_size > 0 for _s, _o, dst in jobs), "ffmpeg wrote every thumbnail")
    return elapsed


def ffmpeg_strip_one_process(root: Path, times: list[int], out: Path) -> float:
    """The same thumbnails from one ffmpeg process: every keyframe an input, each with
    its own output (no start-up per thumbnail)."""
    cmd = ["ffmpeg", "-v", "error", "-y"]
    with RollingBuffer.open(root) as buffer:
        for t in times:
            seg = buffer.segments(Window(t, t))[0]
            offset = (t - seg.start_ms) / 1000
            cmd += ["-skip_frame", "nokey", "-ss", f"{offset:.3f}", "-i", str(root / seg.file)]
    for n in range(len(times)):
        cmd += ["-map", f"{n}:v", "-frames:v", "1", "-vf", "scale=160:-2", "-q:v", "4"]
        cmd.append(str(out / f"one-{n}.jpg"))
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    elapsed = time.perf_counter() - start
    wrote = all((out / f"one-{n}.jpg").stat().st_size > 0 for n in range(len(times)))
    require(wrote, "one ffmpeg process wrote every thumbnail")
    return elapsed


def first_frame(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        next(container.decode(video=0))


def our_clip(root: Path, window: Window, scratch: Path) -> float:
    start = time.perf_counter()
    info = Preview(root, scratch).clip(window)
    first_frame(info.path)
    elapsed = time.perf_counter() - start
    # The pictures carry the base footage's times, not the shifted index's: count frames
    # against the index instead of reading their stamps.
    expected = window_frames(root, window)
    require(
        bool(expected)
        and (info.first_frame_ms, info.last_frame_ms, info.frames)
        == (expected[0], expected[-1], len(expected)),
        "the preview clip holds exactly the window's frames",
    )
    return elapsed


def concat_listing(root: Path, window: Window, listing: Path) -> list[Segment]:
    """ffmpeg's concat list of the segments of `window`, written to `listing`."""
    with RollingBuffer.open(root) as buffer:
        inside = buffer.segments(window)
    listing.write_text("".join(f"file '{(root / s.file).resolve()}'\n" for s in inside))
    return inside


def ffmpeg_clip(root: Path, window: Window, work: Path) -> float:
    listing = work / "clip.txt"
    inside = concat_listing(root, window, listing)
    out = work / "ffmpeg-clip.mp4"
    offset = (window.start_ms - inside[0].start_ms) / 1000
    start = time.perf_counter()
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
            "-ss", f"{offset:.3f}", "-t", f"{window.duration_ms / 1000:.3f}",
            "-c", "copy", str(out),
        ],
        check=True,
    )  # fmt: skip
    first_frame(out)
    return time.perf_counter() - start


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _memory_mib(field: str) -> float:
    """A field of this process's memory, MiB: `Pss:` from smaps_rollup (what this process
    holds, shared pages counted in proportion), `VmHWM:` (peak RSS) from status."""
    name = "smaps_rollup" if field == "Pss:" else "status"
    with open(f"/proc/self/{name}", encoding="ascii") as found:
        line = next(x for x in found if x.startswith(field))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # the peak RSS (VmHWM) starts again from the RSS now


def our_strip_cold(root: Path, window: Window) -> float:
    start = time.perf_counter()
    video = Video(root)
    digest = video.digest(window)
    bins = digest.activity.bins(window, 300)
    elapsed = time.perf_counter() - start
    require(digest.playback is not None and any(b is not None for b in bins), "an activity strip")
    return elapsed


def our_tap(video: Video, window: Window, at: int, *, exact: bool = False) -> float:
    """Tap at `at`: the narrowed plan, playlist, init and first piece ready. A tap plays
    from the keyframe before `at` (the page's `from=keyframe`); `exact` from `at`
    itself, with the re-encoded head, as "play the selected part" does."""
    start = time.perf_counter()
    part = Window(at if exact else video.keyframe_before(window, at), window.end_ms)
    listing = video.media(window, part, "index.m3u8")
    init = video.media(window, part, "init-0.mp4")
    first = video.media(window, part, "0.m4s")
    elapsed = time.perf_counter() - start
    require(bool(listing and init and first), "the tapped moment's first piece")
    return elapsed


def ffmpeg_tap(root: Path, at: int, out: Path) -> float:
    with RollingBuffer.open(root) as buffer:
        seg = buffer.segments(Window(at, at))[0]
    start = time.perf_counter()
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-ss", f"{(at - seg.start_ms) / 1000:.3f}",
            "-i", str(root / seg.file), "-c", "copy",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(out),
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def our_minute_cpu(video: Video, window: Window, part: Window) -> tuple[float, int]:
    before = _cpu(resource.RUSAGE_SELF)
    listing = video.media(window, part, "index.m3u8")
    assert listing is not None
    names = ["init-0.mp4"] + [x for x in listing[0].decode().splitlines() if x.endswith(".m4s")]
    size = sum(len(found[0]) for n in names if (found := video.media(window, part, n)))
    return _cpu(resource.RUSAGE_SELF) - before, size


def ffmpeg_minute_cpu(root: Path, part: Window, work: Path) -> float:
    listing = work / "minute.txt"
    concat_listing(root, part, listing)
    out = work / "hls"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    before = _cpu(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
            "-c", "copy", "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "4",
            "-hls_playlist_type", "vod", str(out / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    return _cpu(resource.RUSAGE_CHILDREN) - before


def video_bench(root: Path, window: Window, runs: int, work: Path) -> None:
    _reset_peak()
    pss0, rss0 = _memory_mib("Pss:"), _memory_mib("VmHWM:")
    strips = [our_strip_cold(root, window) for _ in range(runs)]
    taps, exacts, ff_taps, cpus, ff_cpus = [], [], [], [], []
    streamed = 0
    for n in range(runs):
        video = Video(root)
        video.digest(window)  # the timeline is on the screen before the tap
        at = window.start_ms + (n + 1) * window.duration_ms // (runs + 2) + 1333  # mid-GOP
        taps.append(our_tap(video, window, at))
        exacts.append(our_tap(video, window, at + 2000, exact=True))
        ff_taps.append(ffmpeg_tap(root, at, work / "tap.mp4"))
        minute = Window(at, min(window.end_ms, at + 60_000 - 1))
        cpu, streamed = our_minute_cpu(video, window, minute)
        cpus.append(cpu)
        ff_cpus.append(ffmpeg_minute_cpu(root, minute, work))
    grew, peak = _memory_mib("Pss:") - pss0, _memory_mib("VmHWM:") - rss0
    strip, tap, ff_tap = (
        statistics.median(strips),
        statistics.median(taps),
        statistics.median(ff_taps),
    )
    cpu, ff_cpu = statistics.median(cpus), statistics.median(ff_cpus)
    print(f"  timeline and player of the {window.duration_ms / 3_600_000:g}-hour window:")
    print(
        f"    activity strip, cold (index, coverage, activity, plan): {strip:.2f} s  (goal 0.5 s)"
    )
    print(f"    tap to first frame ready (playlist, init, first piece): {tap:.3f} s  (goal <= 1 s)")
    exact = statistics.median(exacts)
    print(f"    the same from a frame-exact start (re-encoded head):   {exact:.3f} s")
    print(f"    ffmpeg -ss on the same segment, -c copy to fMP4:        {ff_tap:.3f} s")
    print(f"    ratio tap ours / ffmpeg seeking: {tap / ff_tap:.2f}x  (goal <= 1)")
    print(f"    CPU per streamed minute ({streamed / 1e6:.1f} MB): ours {cpu:.3f} s, "
          f"ffmpeg -c copy to HLS fMP4 {ff_cpu:.3f} s")  # fmt: skip
    print(f"    ratio CPU per minute ours / ffmpeg: {cpu / max(ff_cpu, 1e-3):.2f}x  (goal <= 1.2)")
    print(
        f"    this process's memory (PyAV loaded before) grew by {grew:.1f} MiB PSS, "
        f"peak RSS +{peak:.1f} MiB  (the daemon's, PyAV's first load included, is "
        "measured by tests/integration/test_console_timeline.py: goal <= 30 MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-minutes", type=float, default=4)
    parser.add_argument("--hours", type=float, default=72)
    parser.add_argument("--window-hours", type=float, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    base = args.out / f"console-base-{args.base_minutes:g}min"
    ensure_footage(base, args.base_minutes)
    root = args.out / f"console-{args.hours:g}h"
    first, last = long_buffer(base, root, args.hours)
    middle = first + (last - first) // 2
    window = Window(
        middle - round(args.window_hours * 1_800_000), middle + round(args.window_hours * 1_800_000)
    )
    clip_window = Window(middle + 1333, middle + 31_333)  # 30 s, starting mid-GOP
    strips, ff_strips, ff_ones, clips, ff_clips = [], [], [], [], []
    times: list[int] = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "jpg").mkdir()
        our_strip(root, window, scratch / "warm")  # page cache warm for everyone alike
        for n in range(args.runs):
            elapsed, times = our_strip(root, window, scratch / f"s{n}")
            strips.append(elapsed)
            ff_strips.append(ffmpeg_strip(root, times, scratch / "jpg"))
            ff_ones.append(ffmpeg_strip_one_process(root, times, scratch / "jpg"))
            clips.append(our_clip(root, clip_window, scratch / f"c{n}"))
            ff_clips.append(ffmpeg_clip(root, clip_window, scratch))
    strip, ff_strip = statistics.median(strips), statistics.median(ff_strips)
    ff_one = statistics.median(ff_ones)
    clip, ff_clip = statistics.median(clips), statistics.median(ff_clips)
    with RollingBuffer.open(root) as buffer:
        rows = len(buffer.segments())
    print(
        f"\nconsole preview on a {args.hours:g}-hour buffer of 720p15 ({rows} segments), "
        f"{args.runs} runs, medians"
    )
    print(f"  strip of a {args.window_hours:g}-hour window, {len(times)} thumbnails:")
    print(f"    ours (index + keyframe decode):        {strip:.2f} s  (goal < 2 s)")
    print(f"    ffmpeg per thumbnail, same keyframes:  {ff_strip:.2f} s")
    print(f"    one ffmpeg process, same keyframes:    {ff_one:.2f} s")
    print(f"    ratio ours / ffmpeg per thumbnail: {strip / ff_strip:.2f}x")
    print(f"    ratio ours / one ffmpeg process:   {strip / ff_one:.2f}x")
    print("  first frame of a 30-second preview clip starting mid-GOP:")
    print(f"    ours (frame-exact export + decode):    {clip:.2f} s  (goal < 1 s)")
    print(f"    ffmpeg concat -ss -t -c copy + decode: {ff_clip:.2f} s  (not frame-exact)")
    print(f"    ratio ours / ffmpeg: {clip / ff_clip:.2f}x")
    with tempfile.TemporaryDirectory() as scratch_dir:
        video_bench(root, window, args.runs, Path(scratch_dir))


if __name__ == "__main__":
    sys.exit(main())
