"""Upload throughput: our tus client vs `curl` sending the same bytes to the same
loopback tus server (tuspyserver under uvicorn). Goal: ours >= 0.8x curl.

curl does the same protocol by hand: POST to create (Upload-Length, Upload-Metadata),
then one PATCH of the whole file with `-T` (streamed from the file: `--data-binary @file`
reads the whole file into memory first and fails at 1 GiB). Ours sends 8 MiB chunks (the
default), each its own PATCH, with every connection address checked. Both uploads must
end whole on the server, or the benchmark fails.

    python -m bench.upload [--mb 1024] [--chunk-mb 8] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.sanity import require
from cloud.loopback import TusServer
from sync.tus import TusClient, TusOptions, checked_session, encode_metadata

META = {"filename": "bench.age", "filetype": "application/octet-stream", "kind": "clip"}


def write_random(path: Path, size: int) -> None:
    block = 8 * 1024 * 1024
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def ours(server: TusServer, path: Path, size: int, chunk: int) -> float:
    client = TusClient(
        upload_url=server.url,
        options=TusOptions(chunk_bytes=chunk, allow_plain_http_loopback=True),
        session=checked_session(allow_loopback=True),
        stop=threading.Event(),
    )
    start = time.perf_counter()
    location = client.create(size, META)
    client.send_file(
        path, location=location, offset=0, length=size, checksum=False, on_progress=lambda _: None
    )
    return time.perf_counter() - start


def with_curl(server: TusServer, path: Path, size: int) -> float:
    start = time.perf_counter()
    created = subprocess.run(
        [
            "curl", "-sS", "-i", "-X", "POST", server.url,
            "-H", "Tus-Resumable: 1.0.0",
            "-H", f"Upload-Length: {size}",
            "-H", f"Upload-Metadata: {encode_metadata(META)}",
        ],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    location = next(
        line.split(":", 1)[1].strip()
        for line in created.stdout.splitlines()
        if line.lower().startswith("location:")
    )
    subprocess.run(
        [
            "curl", "-sS", "-o", "/dev/null", "-X", "PATCH", location,
            "-H", "Tus-Resumable: 1.0.0",
            "-H", "Upload-Offset: 0",
            "-H", "Content-Type: application/offset+octet-stream",
            "-H", "Expect:",
            "-T", str(path),
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024, help="bytes to send, in MiB")
    parser.add_argument("--chunk-mb", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs each")
    parser.add_argument(
        "--server-storage",
        type=Path,
        help="where the tus server stores uploads (e.g. /dev/shm to take the disk's"
        " write-back, which dominates and varies from run to run, out of the comparison)",
    )
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    with (
        tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp,
        tempfile.TemporaryDirectory(prefix="tus-", dir=args.server_storage or tmp) as stored,
    ):
        work = Path(tmp)
        path = work / "object.bin"
        write_random(path, size)
        server = TusServer(Path(stored) / "storage")
        server.start()
        try:
            ours_s, curl_s = [], []
            checked: set[str] = set()
            for _ in range(args.runs):
                curl_s.append(with_curl(server, path, size))
                ours_s.append(ours(server, path, size, args.chunk_mb * 1024 * 1024))
                new = [u for u in server.uploads() if u.uid not in checked]
                require(
                    len(new) == 2 and all(u.complete and u.offset == size for u in new),
                    f"the server holds both {size}-byte uploads of this run, whole",
                )
                for upload in new:  # keep the disk from filling up (the .info stays)
                    upload.path.unlink(missing_ok=True)
                    checked.add(upload.uid)
        finally:
            server.kill()
    mb = size / 1e6
    best_ours, best_curl = min(ours_s), min(curl_s)
    where = f"storage in {args.server_storage}" if args.server_storage else "storage on disk"
    print(f"upload of {args.mb} MiB to a loopback tus server, {where} (best of {args.runs})")
    print(f"  ours ({args.chunk_mb} MiB chunks): {best_ours:6.2f} s  {mb / best_ours:7.1f} MB/s")
    print(f"  curl (one PATCH):      {best_curl:6.2f} s  {mb / best_curl:7.1f} MB/s")
    ratio = best_curl / best_ours
    verdict = "OK" if ratio >= 0.8 else "MISS"
    print(f"  throughput ratio ours/curl: {ratio:.2f}x (goal >= 0.8x) {verdict}")


if __name__ == "__main__":
    main()
