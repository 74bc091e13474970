"""One segment writer, whatever the load (issue 18): with a busy loop on every core for
about a minute, at most one process of the daemon's tree ever holds a segment file open
for writing, the tree's resident memory stays bounded, and recording goes on after.

Measured from outside, as an operator would: the daemon's process tree from /proc, each
open file's flags from /proc/PID/fdinfo."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import World, wait_for

STARVE_S = 55.0
SAMPLE_S = 0.075
SEGMENT_FILE = re.compile(r"seg-\d+-[0-9a-f]{8}\.mp4(\.part)?$")
# A second recorder is another ~100 MiB beside the first: the tree may grow with load
# (queued frames, a longer segment), but by less than a second recorder would add.
GROWTH_LIMIT = 64 * 1024 * 1024


def tree(root: int) -> list[int]:
    """`root` and its descendants, from each process's parent in /proc/PID/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found = [root]
    for pid in found:  # grows while we walk it: breadth first
        found.extend(child for child, parent in parents.items() if parent == pid)
    return found


def writing_segments(pid: int, buffer_dir: Path) -> set[str]:
    """The segment files `pid` holds open for writing (O_WRONLY or O_RDWR)."""
    held = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError, ValueError):
                target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
                if target.parent != buffer_dir or not SEGMENT_FILE.match(target.name):
                    continue
                access = field(Path(f"/proc/{pid}/fdinfo/{fd}"), "flags", 8) & os.O_ACCMODE
                if access in (os.O_WRONLY, os.O_RDWR):
                    held.add(target.name)
    return held


def field(path: Path, name: str, base: int = 10) -> int:
    """A "name: value" line of a /proc file; ValueError when it has none."""
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0], base)
    raise ValueError(f"no {name} in {path}")


def is_recorder(pid: int) -> bool:
    """The recorder is the daemon's one spawned multiprocessing child."""
    with contextlib.suppress(OSError):
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def resident_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        return field(Path(f"/proc/{pid}/status"), "VmRSS") * 1024
    return 0  # gone, or a zombie (which has no VmRSS line)


@contextlib.contextmanager
def busy_cores() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two busy loops per core, at the daemon's own priority (nice 0), killed on the way out."""
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(0))
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        yield loops
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait(timeout=10)


def segment_names(buffer_dir: Path) -> set[str]:
    return {p.name for p in buffer_dir.iterdir() if SEGMENT_FILE.match(p.name)}


@pytest.mark.slow
def test_a_starved_daemon_keeps_one_segment_writer(world: World) -> None:
    assert world.daemon.proc is not None
    daemon = world.daemon.proc.pid
    buffer_dir = (world.setup.root / "var" / "buffer").resolve()
    baseline = sum(resident_bytes(pid) for pid in tree(daemon))

    most_writers = most_recorders = 0
    peak = baseline
    writers_seen: set[int] = set()
    largest: dict[int, int] = {}  # pid -> its largest resident size
    with busy_cores():
        deadline = time.monotonic() + STARVE_S
        while time.monotonic() < deadline:
            pids = tree(daemon)
            writers = [pid for pid in pids if writing_segments(pid, buffer_dir)]
            writers_seen.update(writers)
            most_writers = max(most_writers, len(writers))
            most_recorders = max(most_recorders, sum(is_recorder(pid) for pid in pids))
            sizes = {pid: resident_bytes(pid) for pid in pids}
            for pid, size in sizes.items():
                largest[pid] = max(largest.get(pid, 0), size)
            peak = max(peak, sum(sizes.values()))
            time.sleep(SAMPLE_S)

    print(
        f"baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
        f"most writers at once {most_writers}, recorders {most_recorders}, "
        f"writer pids {sorted(writers_seen)}, "
        f"largest per pid (MiB) { ({pid: size >> 20 for pid, size in largest.items()}) }"
    )
    assert writers_seen, "the sampler never saw the recorder writing: it measured nothing"
    assert most_writers == 1, f"{most_writers} processes wrote segments at once"
    assert most_recorders == 1, f"{most_recorders} recorder processes at once"
    assert peak - baseline < GROWTH_LIMIT, (
        f"the tree grew from {baseline / 2**20:.0f} to {peak / 2**20:.0f} MiB"
    )
    before = segment_names(buffer_dir)
    wait_for(lambda: segment_names(buffer_dir) - before, 20, "a new segment after the load")
    assert world.daemon.proc.poll() is None
