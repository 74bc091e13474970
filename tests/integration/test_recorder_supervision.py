"""The recorder runs in its own process; when it dies the daemon starts it again."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.fixtures.daemon import World, wait_for


def recorder_pid(world: World) -> int | None:
    assert world.daemon.proc is not None
    out = subprocess.run(
        ["pgrep", "-P", str(world.daemon.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in out:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"spawn_main" in handle.read():
                    return int(pid)
        except OSError:
            continue  # it exited while we looked
    return None  # between a dead recorder and its successor


def test_a_killed_recorder_is_restarted_and_recording_resumes(world: World) -> None:
    first = recorder_pid(world)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: recorder_pid(world) not in (None, first), 20, "a new recorder process")
    before = world.buffer_span()
    assert before is not None

    def newer_footage() -> bool:
        after = world.buffer_span()
        return after is not None and after[1] > before[1]

    # The new recorder starts a process, imports PyAV and closes its first segment: on a
    # loaded machine that can take longer than a segment, so wait for the fact, not a time.
    wait_for(newer_footage, 30, "footage from the new recorder")
    assert world.daemon.status()["recording"] is True
    assert world.daemon.proc is not None and world.daemon.proc.poll() is None
    assert "starting it again" in world.daemon.log_tail(200)
