"""foundation/heap.py: freed memory in the middle of a thread's arena goes back to the
system, measured by the kernel (/proc/self/smaps_rollup), not by malloc's own books.

The burst runs in a fresh interpreter: a test worker's heap, shaped by every test before,
would decide by itself how much of it malloc keeps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from foundation.heap import _trim

BURST = """
import json, threading
from pathlib import Path
from foundation.heap import give_back

def anonymous_kb():
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])

kept = []

def burst():
    # as a decoder does on a web-server thread: frame-sized blocks, freed, with small
    # objects allocated between them that stay (so the arena's top never frees them)
    big = bytes(1_400_000)  # freeing an mmapped block raises malloc's threshold,
    del big  # so the frames after it come from the arena
    frames = []
    for _ in range(24):
        frames.append(bytearray(1_400_000))
        kept.append(bytes(2000))
    for frame in frames:
        frame[::4096] = b"x" * len(frame[::4096])  # touched: resident
    del frames

worker = threading.Thread(target=burst)
worker.start()
worker.join()
before = anonymous_kb()
if %(trim)s:
    give_back()
print(json.dumps([before, anonymous_kb()]))
"""


def freed_kb(trim: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", BURST % {"trim": trim}], check=True, capture_output=True, text=True
    ).stdout
    before, after = json.loads(out)
    return int(before - after)


@pytest.mark.skipif(_trim() is None, reason="not glibc")
def test_freed_frames_in_a_threads_arena_go_back() -> None:
    assert freed_kb(trim=False) < 4 * 1024  # malloc alone keeps them
    assert freed_kb(trim=True) > 16 * 1024  # give_back hands them to the system
