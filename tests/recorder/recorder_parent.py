"""A stand-in for the daemon: starts a RecorderProcess on a buffer, prints the child's pid
once it has written frames, and waits to be killed.

    python -m tests.recorder.recorder_parent BUFFER_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from foundation.clock import SystemClock
from recorder.process import RecorderProcess
from recorder.settings import CameraSettings, StorageSettings


def main() -> None:
    storage = StorageSettings(dir=Path(sys.argv[1]), segment_seconds=1.0)
    proc = RecorderProcess(
        camera=CameraSettings(source="synthetic", width=320, height=240, fps=15),
        storage=storage,
        clock=SystemClock(assume_synchronized=True),
    )
    proc.start()
    while proc.health().frames_written == 0:
        if not proc.is_alive():
            print(f"recorder exited with {proc.exitcode}", flush=True)
            sys.exit(1)
        time.sleep(0.02)
    print(f"recording {proc.pid}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
