"""foundation/heap.py: freed memory in the middle of a thread's arena goes back to the
system, measured by the kernel (/proc/self/smaps_rollup), not by malloc's own books."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from foundation.heap import _trim, give_back


def _anonymous_kb() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text(encoding="ascii").splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
    raise AssertionError("no Anonymous: line")


@pytest.mark.skipif(_trim() is None, reason="not glibc")
def test_freed_frames_in_a_threads_arena_go_back() -> None:
    kept: list[bytes] = []

    def burst() -> None:
        # as a decoder does on a web-server thread: frame-sized blocks, freed, with
        # small objects allocated between them that stay (so the arena's top never
        # frees them by itself)
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
    before = _anonymous_kb()
    give_back()
    after = _anonymous_kb()
    assert before - after > 16 * 1024, (before, after)
