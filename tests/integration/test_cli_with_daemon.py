"""doorbellctl against a real running daemon, as the owner meets it: a request with no
footage is not approved without a word, a finished share is said to be finished, a
closed pipe ends a listing quietly, and a broker that cannot be reached is named."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path

from cloud.loopback import (
    DaemonProcess,
    DeviceSetup,
    MosquittoBroker,
    TusServer,
    free_port,
    script,
)
from device.audit import read_entries
from foundation.cli import ExitCode
from foundation.times import Window, format_time
from tests.fixtures.daemon import World, make_world, now_ms, wait_for


def ctl(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.daemon.ctl(*args, check=False)


def test_approving_a_request_without_footage_warns_and_records_nothing(world: World) -> None:
    before = now_ms() - 3 * 3_600_000  # hours before the daemon first recorded
    rfa = world.rfa(Window(before, before + 60_000))
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    for extra in ((), ("--without-footage",), ("--yes",)):  # the old flag changes nothing
        refused = ctl(world, "approve", rfa.id, *extra)
        assert refused.returncode == ExitCode.REFUSED
        assert "no footage" in refused.stderr and f"doorbellctl deny {rfa.id}" in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
        assert "0 frames" in refused.stdout  # the summary said so first
    assert rfa.id in world.pending_ids()  # nothing was decided
    assert world.share(rfa.id) is None

    # a window of no length, inside footage: refused by the same rule
    span = world.buffer_span()
    assert span is not None
    covered = world.rfa(Window(span[0], span[0] + 2000))
    world.publish(covered)
    wait_for(lambda: covered.id in world.pending_ids(), 20, "request pending")
    at = format_time(span[0] + 1000)
    instant = ctl(world, "approve", covered.id, f"--start={at}", f"--end={at}")
    assert instant.returncode == ExitCode.REFUSED and "no length" in instant.stderr
    assert covered.id in world.pending_ids() and world.share(covered.id) is None

    # on a terminal, approve shows the summary and asks; "n" records nothing
    no = on_a_terminal(world, ["approve", covered.id], answer="n\n")
    assert no.returncode == ExitCode.REFUSED and "Approve and send this? [y/N]" in no.stdout
    assert "Jane Doe" in no.stdout and "jane@example.com" in no.stdout  # the very values
    assert "Not approved: nothing was recorded or sent." in no.stdout
    assert covered.id in world.pending_ids()
    yes = on_a_terminal(world, ["approve", covered.id, "--anonymous"], answer="y\n")
    assert yes.returncode == 0 and "anonymous: no name" in yes.stdout, yes.stdout
    assert "Jane Doe" not in yes.stdout
    assert yes.stdout.rstrip().endswith("approved: the share is queued")
    assert covered.id not in world.pending_ids()


def on_a_terminal(
    world: World, args: list[str], *, answer: str
) -> subprocess.CompletedProcess[str]:
    """doorbellctl with a terminal as its stdin (a pty), answering its question."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        return subprocess.run(
            world.daemon.command("doorbellctl", *args),
            stdin=follower, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)


def test_cancelling_a_finished_share_says_it_finished(world: World) -> None:
    span = world.buffer_span()
    assert span is not None
    time.sleep(2)
    rfa = world.rfa(Window(span[0] + 200, span[0] + 2000))
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    approved = ctl(world, "approve", rfa.id)
    assert approved.returncode == 0, approved.stderr
    # the summary first: what goes to whom, then the daemon's word
    assert "frames" in approved.stdout and "uploaded to 127.0.0.1" in approved.stdout
    assert approved.stdout.rstrip().endswith("approved: the share is queued")
    world.wait_share(rfa.id)
    cancelled = ctl(world, "shares", f"--cancel={rfa.id}")
    assert cancelled.returncode == ExitCode.REFUSED
    assert cancelled.stderr.strip() == (
        f"doorbellctl: share {rfa.id} already finished: the agency has it; nothing to cancel"
    )
    unknown = ctl(world, "shares", "--cancel=no-such-share")
    assert unknown.returncode == ExitCode.REFUSED and "There is no share" in unknown.stderr

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


def test_relative_config_paths_and_pause_from_another_directory(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    """The walkthrough's config (`storage: {dir: ./var}`, a relative socket) read from
    another directory reaches the running daemon; `pause` and `resume` are the console's
    switch, shown by `status` and audited as the console's are."""
    relative = {"storage": {"dir": "./var"}, "control": {"socket": "./run/control.sock"}}
    world = make_world(tmp_path, mosquitto, tus_server, extra=relative)
    world.daemon.start()
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()

        def ctl_there(*args: str) -> subprocess.CompletedProcess[str]:
            command = [*script("doorbellctl"), "--config=../device/doorbell.yaml", *args]
            return subprocess.run(command, cwd=elsewhere, capture_output=True, text=True)

        status = ctl_there("status")
        assert status.returncode == 0, status.stderr
        assert re.search(r"^daemon +running$", status.stdout, re.M), status.stdout
        assert re.search(r"^requests +accepted", status.stdout, re.M), status.stdout
        assert (world.setup.root / "var" / "buffer").is_dir()  # beside the config file
        assert not (elsewhere / "var").exists() and not (Path.cwd() / "var").exists()

        paused = ctl_there("pause")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("Requests are paused: every new request is refused")
        assert re.search(r"^requests +PAUSED", ctl_there("status").stdout, re.M)
        assert json.loads(ctl_there("status", "--json").stdout)["requests_paused"] is True
        again = ctl_there("pause")
        assert again.returncode == 0 and again.stdout.startswith("Requests were already paused")
        resumed = ctl_there("resume")
        assert resumed.returncode == 0 and resumed.stdout == "Requests are accepted again.\n"
        assert json.loads(ctl_there("status", "--json").stdout)["requests_paused"] is False
        events = [e.event for e in read_entries(world.setup.root / "var" / "state" / "audit.log")]
        assert events.count("requests_paused") == 1 and events.count("requests_resumed") == 1
    finally:
        assert world.daemon.stop() == 0


def test_owner_watch_into_a_pipe_that_closes_ends_quietly_with_141(world: World) -> None:
    """`doorbell-owner watch --once | head -3`, and `watch | head -3` that would
    otherwise listen for ever: the tool ends at its next write, exit 141, nothing on
    stderr about a broken pipe (the device publishes every second here)."""
    owner = [*script("doorbell-owner"), f"--home={world.owner.path}", "watch"]
    broker = f"--broker={world.broker.url}"
    read_end, write_end = os.pipe()
    os.close(read_end)  # head already gone
    try:
        gone = subprocess.run([*owner, broker, "--once"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60)  # fmt: skip
    finally:
        os.close(write_end)
    assert gone.returncode == ExitCode.OUTPUT_CLOSED, gone.stderr
    assert b"Traceback" not in gone.stderr and b"BrokenPipe" not in gone.stderr

    head = subprocess.Popen([*owner, broker], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert head.stdout is not None and head.stderr is not None
        lines = [head.stdout.readline() for _ in range(3)]
        assert all(lines) and lines[0].startswith(b"["), lines
        head.stdout.close()  # as head does after its third line
        assert head.wait(timeout=30) == ExitCode.OUTPUT_CLOSED
        stderr = head.stderr.read()
        assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr
    finally:
        head.kill()
        head.wait()
