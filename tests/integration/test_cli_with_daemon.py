"""doorbellctl against a real running daemon, as the owner meets it: a request with no
footage is not approved without a word, a finished share is said to be finished, a
closed pipe ends a listing quietly, and a broker that cannot be reached is named."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cloud.loopback import DaemonProcess, DeviceSetup, free_port
from foundation.cli import ExitCode
from foundation.times import Window
from tests.fixtures.daemon import World, now_ms, wait_for


def ctl(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.daemon.ctl(*args, check=False)


def test_approving_a_request_without_footage_warns_and_records_nothing(world: World) -> None:
    before = now_ms() - 3 * 3_600_000  # hours before the daemon first recorded
    rfa = world.rfa(Window(before, before + 60_000))
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    refused = ctl(world, "approve", rfa.id)
    assert refused.returncode == ExitCode.REFUSED
    assert "no footage" in refused.stderr and "--without-footage" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert rfa.id in world.pending_ids()  # nothing was decided
    assert world.share(rfa.id) is None


def test_cancelling_a_finished_share_says_it_finished(world: World) -> None:
    span = world.buffer_span()
    assert span is not None
    time.sleep(2)
    rfa = world.rfa(Window(span[0] + 200, span[0] + 2000))
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    approved = ctl(world, "approve", rfa.id)
    assert approved.returncode == 0, approved.stderr
    world.wait_share(rfa.id)
    cancelled = ctl(world, "shares", f"--cancel={rfa.id}")
    assert cancelled.returncode == ExitCode.REFUSED
    assert cancelled.stderr.strip() == (
        f"doorbellctl: share {rfa.id} already finished: the agency has it; nothing to cancel"
    )
    unknown = ctl(world, "shares", "--cancel=no-such-share")
    assert unknown.returncode == ExitCode.REFUSED and "no share" in unknown.stderr

    # `doorbellctl shares | head -3` and friends, with a reader that went away
    for args in (("shares",), ("shares", "--json"), ("pending",), ("status",), ("audit",)):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run(
                world.daemon.command("doorbellctl", *args),
                stdout=write_end, stderr=subprocess.PIPE, timeout=60,
            )  # fmt: skip
        finally:
            os.close(write_end)
        assert result.returncode == ExitCode.OUTPUT_CLOSED and result.stderr == b"", args


def test_the_daemon_names_the_broker_it_cannot_reach_and_why(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nobody listens there
    daemon = DaemonProcess(DeviceSetup(root=tmp_path / "device", broker_url=url).write())
    try:
        daemon.start()
        wait_for(
            lambda: (
                f"cannot reach the MQTT broker at {url}: Connection refused" in daemon.log_tail(200)
            ),
            30,
            "the connection error in the log",
        )
    finally:
        assert daemon.stop() == 0
