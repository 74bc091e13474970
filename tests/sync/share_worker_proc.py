"""A share worker in its own process, so tests can kill it with SIGKILL mid-upload.

python -m tests.sync.share_worker_proc OUTBOX BUFFER STATE_DIR DEVICE_ID REQUEST_LOG
    [--chunk N] [--bandwidth N]

Runs until no share is active, then exits 0. Each request is appended to REQUEST_LOG as
a JSON line {"method", "url", "offset"} as soon as its response arrives.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from device.identity import load_device_identity
from foundation.clock import SystemClock
from sync.outbox import Outbox
from sync.settings import ShareSettings
from sync.tus import checked_session
from sync.uploader import ShareWorker


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("outbox", "buffer", "state_dir", "device_id", "request_log"):
        parser.add_argument(name)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--bandwidth", type=int, default=0)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = Path(args.request_log).open("a", buffering=1)  # noqa: SIM115 (open for the whole run)

    def session_factory(loopback: bool) -> Any:
        session = checked_session(allow_loopback=loopback)

        def hook(response: Any, *_a: Any, **_k: Any) -> None:
            req = response.request
            entry = {
                "method": req.method,
                "url": req.url,
                "offset": req.headers.get("Upload-Offset"),
            }
            log.write(json.dumps(entry) + "\n")

        session.hooks["response"].append(hook)
        return session

    outbox = Outbox.open(Path(args.outbox))
    worker = ShareWorker(
        outbox=outbox,
        buffer_root=Path(args.buffer),
        identity=load_device_identity(Path(args.state_dir), args.device_id),
        contact=None,
        clock=SystemClock(assume_synchronized=True),
        settings=ShareSettings(
            chunk_bytes=args.chunk,
            bandwidth_bytes_per_s=args.bandwidth or None,
            allow_plain_http_loopback=True,
            retry_base_s=0.1,
            max_attempts=5,
        ),
        on_state=lambda rfa_id, state, error: print(rfa_id, state, error, flush=True),
        stop=stop,
        session_factory=session_factory,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while not stop.wait(0.05):
        if outbox.active_count() == 0:
            stop.set()
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
