"""SD-card wear: bytes the daemon really writes to the disk per hour of recording,
against the bytes of video it keeps. `python -m bench.sd_wear --seconds 120`.

Runs `doorbelld` on the synthetic camera (720p15 by default) with a real Mosquitto on
loopback, storage on a disk-backed folder, and reads the kernel's per-process
`write_bytes` (/proc/PID/io: bytes sent to the block layer, so SQLite's WAL and
checkpoints, the state and audit files and the segments, each counted once) of the
daemon and its recorder child just before it stops. The video bytes are the segment
files' sizes from the buffer index. Prints both per hour and their ratio; fails unless
the daemon kept some video and wrote to the disk (record longer than a 4-s segment).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.sanity import require
from cloud.loopback import DaemonProcess, DeviceSetup, MosquittoBroker, _children


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to record")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="disk-backed folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="doorbell-wear-", dir=args.dir) as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "broker")
        broker.root.mkdir(parents=True)
        broker.start()
        setup = DeviceSetup(
            root=root / "device", broker_url=broker.url, width=args.width, height=args.height,
            segment_seconds=4, sync_seconds=300.0,
        )  # fmt: skip
        daemon = DaemonProcess(setup.write())
        try:
            daemon.start()
            first = daemon.status()["buffer_bytes"]
            assert daemon.proc is not None
            pids = [daemon.proc.pid, *_children(daemon.proc.pid)]
            before = {pid: write_bytes(pid) for pid in pids}
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            written = sum(write_bytes(pid) - before[pid] for pid in pids)
            video = daemon.status()["buffer_bytes"] - first
        finally:
            daemon.stop()
            broker.stop()
    require(video > 0 and written > 0, "the daemon kept video and wrote it to the disk")
    per_hour = 3600 / elapsed
    print(f"recorded {elapsed:.0f} s of {args.width}x{args.height} at 15 fps (synthetic camera)")
    print(f"video kept:    {video * per_hour / 1e6:8.1f} MB/h")
    print(f"disk written:  {written * per_hour / 1e6:8.1f} MB/h  (daemon + recorder, all files)")
    print(f"ratio written/video: {written / video:.3f}x")


if __name__ == "__main__":
    main()
