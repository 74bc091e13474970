"""Share building and upload memory.

1. Build a share of a long 720p clip (frame-exact export + SHA-256 + sign + age
   encryption, `sync.share.build_share`) vs the stock pipeline on the same footage:
   `ffmpeg -f concat -c copy` of the window's segments, `sha256sum`, `age -r`.
   Goal: ours <= 1.0x the stock time (one pass over the data where the stock makes three).
   The share is of a real signed request, and must then pass the agency's verifier
   (`cloud.verify`, every frame decoded), or the benchmark fails.
2. Peak RSS of a process that encrypts a large file with pyrage's encrypt_io into the
   outbox and uploads it with our tus client to a loopback tus server. Goal < 150 MB,
   and it must not grow with the size. The server must end up holding every byte.

    python -m bench.share [--minutes 60] [--buffer DIR] [--rss-mb 2048]

`--buffer` keeps the recorded footage in DIR and reuses it on the next run (recording an
hour of 720p synthetic footage takes a while on two cores).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pyrage import x25519

from bench.sanity import require
from foundation.times import Window
from recorder.buffer import RollingBuffer
from tests.sync.factories import AgencyKeys


def record(root: Path, minutes: float) -> tuple[int, int]:
    from foundation.clock import SystemClock
    from recorder.recorder import Recorder
    from recorder.settings import StorageSettings
    from recorder.synthetic import SyntheticCamera

    root.mkdir(parents=True, exist_ok=True)
    with RollingBuffer.open(root) as buffer:
        span = buffer.span()
        if span is not None and (span[1] - span[0]) >= minutes * 60_000 - 1000:
            return span
    clock = SystemClock(assume_synchronized=True)
    print(f"recording {minutes} min of 1280x720@15 synthetic footage into {root} ...")
    start = time.perf_counter()
    with RollingBuffer.open(root) as buffer:
        Recorder(
            SyntheticCamera(width=1280, height=720, fps=15, clock=clock, fast_seconds=minutes * 60),
            buffer,
            storage=StorageSettings(dir=root, segment_seconds=4, max_bytes=1 << 40),
            clock=clock,
            free_space=lambda _p: 1 << 40,
            stop=threading.Event(),
        ).run()
        span = buffer.span()
    print(f"  recorded in {time.perf_counter() - start:.0f} s")
    assert span is not None
    return span


def ours(
    root: Path, window: Window, out: Path, agency: AgencyKeys, signer: Any = None
) -> tuple[float, int]:
    """Build a named share, approved at the button, of a real signed request (the
    manifest embeds the request's envelope, which must parse); `signer`: the device's
    C2PA signer (default: one made here)."""
    from sync.credentials import new_device_signer
    from sync.keys import SigningKey
    from sync.models import ConsentMethod
    from sync.share import build_share
    from tests.sync.sharekit import CONTACT, make_decision, make_rfa

    rfa = make_rfa(
        agency, upload_url="https://uploads.example.gov/files/", window=window, now_ms=window.end_ms
    )
    decision = make_decision(rfa, named=True, now_ms=window.end_ms, method=ConsentMethod.BUTTON)
    signer = signer or new_device_signer("bench")
    start = time.perf_counter()
    built = build_share(
        rfa=rfa,
        decision=decision,
        buffer_root=root,
        clip_path=out / "clip.mp4.age",
        manifest_path=out / "manifest.json.age",
        device_key=SigningKey.generate(),
        device_id="bench",
        clip_signer=signer,
        contact=CONTACT,
        now_ms=window.end_ms,
    )
    elapsed = time.perf_counter() - start
    return elapsed, built.clip_bytes


def verified(out: Path, agency: AgencyKeys) -> str | None:
    """What the agency's verifier finds wrong with the share in `out`, or None."""
    from cloud.verify import verify_share

    report = verify_share(
        out / "manifest.json.age",
        out / "clip.mp4.age",
        identity=agency.identity,
        agency_keys=[agency.signing.public],
        workdir=out,
    )
    return None if report.ok else report.render()


def stock(root: Path, window: Window, out: Path) -> float:
    with RollingBuffer.open(root, reconcile=False) as buffer:
        files = [root / s.file for s in buffer.segments(window)]
    listing = out / "concat.txt"
    listing.write_text("".join(f"file '{f}'\n" for f in files))
    recipient = str(x25519.Identity.generate().to_public())
    clip = out / "stock.mp4"
    start = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(clip)],
        check=True,
    )  # fmt: skip
    subprocess.run(["sha256sum", str(clip)], check=True, capture_output=True)
    subprocess.run(
        ["age", "-r", recipient, "-o", str(out / "stock.mp4.age"), str(clip)], check=True
    )
    return time.perf_counter() - start


def _peak_rss_kb() -> int:
    """VmHWM of this process. Not ru_maxrss: Linux carries that over from the parent's
    memory at exec time, so a child of a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_child(size_mb: int, work: str) -> None:
    """Encrypt `size_mb` MiB of random bytes into an outbox file and upload it."""
    import os

    import pyrage

    from cloud.loopback import TusServer
    from sync.share import _HashingReader
    from sync.tus import TusClient, TusOptions, checked_session

    folder = Path(work)
    plain = folder / "plain.bin"
    with plain.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1024 * 1024))
    base = _peak_rss_kb()
    cipher = folder / "clip.mp4.age"
    recipient = x25519.Identity.generate().to_public()
    with plain.open("rb") as src, cipher.open("wb") as dst:
        pyrage.encrypt_io(_HashingReader(src), dst, [recipient])  # type: ignore[arg-type]
    plain.unlink()
    server = TusServer(folder / "storage")
    server.start()
    try:
        client = TusClient(
            upload_url=server.url,
            options=TusOptions(allow_plain_http_loopback=True),
            session=checked_session(allow_loopback=True),
            stop=threading.Event(),
        )
        size = cipher.stat().st_size
        location = client.create(size, {"filename": "c", "filetype": "x", "kind": "clip"})
        client.send_file(
            cipher,
            location=location,
            offset=0,
            length=size,
            checksum=False,
            on_progress=lambda _: None,
        )
        stored = server.uploads()
    finally:
        server.kill()
    require(
        len(stored) == 1 and stored[0].complete and stored[0].offset == size,
        f"the tus server holds the whole {size}-byte upload",
    )
    peak = _peak_rss_kb()
    print(f"{base} {peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the 720p clip")
    parser.add_argument("--buffer", type=Path, default=None, help="keep/reuse footage here")
    parser.add_argument("--rss-mb", type=int, default=2048, help="size of the upload in MiB")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--_rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._rss_child:
        _rss_child(int(args._rss_child[0]), args._rss_child[1])
        return

    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp:
        work = Path(tmp)
        if not args.skip_build:
            root = args.buffer or work / "buffer"
            first, last = record(root, args.minutes)
            window = Window(first, last)
            (work / "ours").mkdir()
            (work / "stock").mkdir()
            stock_s = stock(root, window, work / "stock")
            require((work / "stock" / "stock.mp4.age").stat().st_size > 0, "age wrote the clip")
            agency = AgencyKeys.generate()
            ours_s, clip_bytes = ours(root, window, work / "ours", agency)
            problem = verified(work / "ours", agency)
            require(problem is None, f"the share verifies as the agency would: {problem}")
            minutes = (last - first) / 60_000
            print(
                f"share of a {minutes:.1f} min 1280x720 clip ({clip_bytes / 1e6:.0f} MB encrypted)"
            )
            print(f"  ours (export + sha256 + sign + encrypt): {ours_s:6.2f} s")
            print(f"  stock (ffmpeg -c copy + sha256sum + age): {stock_s:6.2f} s")
            ratio = ours_s / stock_s
            verdict = "OK" if ratio <= 1.0 else "MISS"
            print(f"  time ratio ours/stock: {ratio:.2f}x (goal <= 1.0x) {verdict}")
            for f in (work / "ours").iterdir():
                f.unlink()
        rss_dir = work / "rss"
        rss_dir.mkdir()
        result = subprocess.run(
            [sys.executable, "-m", "bench.share", "--_rss-child", str(args.rss_mb), str(rss_dir)],
            capture_output=True,
            text=True,
        )
        require(result.returncode == 0, f"the upload's child succeeds: {result.stderr.strip()}")
        base_kb, peak_kb = (int(x) for x in result.stdout.split()[-2:])
        print(f"peak RSS encrypting and uploading {args.rss_mb} MiB: {peak_kb / 1024:.0f} MB")
        print(f"  (after writing the test data: {base_kb / 1024:.0f} MB; goal < 150 MB) "
              f"{'OK' if peak_kb / 1024 < 150 else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
