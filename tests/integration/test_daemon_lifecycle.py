"""The daemon's life cycle as shells and supervisors other than systemd drive it: SIGTERM
sent to its whole process group (`setsid`, `timeout`, a terminal's job control) ends
every process of it within seconds, however often it comes; and a second daemon started
by mistake refuses before it touches the network."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.loopback import MosquittoBroker, TusServer, free_port
from device.paths import StatePaths
from firmware_config import load_config
from recorder.buffer import BufferLock
from tests.fixtures.daemon import World, make_world

BIN = Path(sys.executable).parent


def group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of process group `pgid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.add(int(stat.parent.name))
    return found


def wait_until_gone(pgid: int, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def launch(world: World, *prefix: str) -> subprocess.Popen[bytes]:
    """`doorbelld` (the installed console script) in a process group of its own."""
    command = [*prefix, str(BIN / "doorbelld"), "--config", str(world.daemon.config_path)]
    with world.daemon.log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*command, "--assume-clock-synchronized"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    world.daemon.proc = proc  # its helpers (status, log_tail) and clean-up follow it
    return proc


def recording_and_connected(status: dict[str, object]) -> bool:
    return bool(status.get("recording")) and status.get("broker") == "connected"


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_twice_ends_every_process(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    """`setsid doorbelld & kill -TERM -- -$PGID`: the daemon and its recorder both get
    SIGTERM at once, and a second one lands while the daemon stops. Every process of the
    group is gone within 20 s, the daemon exits 0 and closed its open segment."""
    world = make_world(tmp_path, mosquitto, tus_server, segment_seconds=2)
    proc = launch(world)
    try:
        world.daemon.wait_until(recording_and_connected, timeout=60)
        members = group_members(proc.pid)
        assert len(members) >= 2, "the daemon and its recorder child"
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        left = wait_until_gone(proc.pid, timeout=20)
        assert not left, f"still running 20 s after SIGTERM: {left}\n{world.daemon.log_tail()}"
        assert proc.wait(timeout=5) == 0, world.daemon.log_tail()
        log = world.daemon.log_tail(80)
        assert "signal SIGTERM: stopping" in log and "stopped at" in log
        assert not list((world.setup.root / "var" / "buffer").glob("*.part"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_timeout_ends_the_daemon_and_its_recorder(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    """`timeout 25 doorbelld ...` (which signals the command's whole group): when the
    time is up every process ends within 20 s and timeout reports the time-out (124)."""
    world = make_world(tmp_path, mosquitto, tus_server)
    proc = launch(world, "timeout", "-s", "TERM", "25")
    try:
        world.daemon.wait_until(recording_and_connected, timeout=24)
        assert len(group_members(proc.pid)) >= 3, "timeout, the daemon and its recorder"
        assert proc.wait(timeout=25 + 20) == 124, world.daemon.log_tail()
        left = wait_until_gone(proc.pid, timeout=5)
        assert not left, f"left behind: {left}\n{world.daemon.log_tail()}"
        assert "stopped at" in world.daemon.log_tail(80)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def connections_of(broker: MosquittoBroker, client_id: str) -> list[str]:
    """The broker's own log of connections (and take-overs) by `client_id`."""
    log = broker.log_path.read_text(errors="replace").splitlines()
    return [line for line in log if f" as {client_id} " in line or f"Client {client_id} " in line]


@pytest.fixture
def noting_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real Mosquitto that logs every connection."""
    broker = MosquittoBroker(tmp_path / "noting-broker", log_types=("error", "warning", "notice"))
    broker.root.mkdir(parents=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def second_start(world: World) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "doorbelld"), "--config", str(world.daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_second_daemon_refuses_in_one_line_and_the_first_stays_connected(
    tmp_path: Path, noting_broker: MosquittoBroker, tus_server: TusServer
) -> None:
    """A second `doorbelld` on the same config, started by mistake, exits 1 at once with
    one line saying why. The broker never sees it (its log holds one connection by the
    device's client id, and no take-over), the running daemon stays connected and
    answers, and the second start wrote nothing to the state directory."""
    world = make_world(tmp_path, noting_broker, tus_server)
    world.daemon.start()
    try:
        world.daemon.wait_until(recording_and_connected, timeout=60)
        device_id = world.setup.device_id
        assert len(connections_of(noting_broker, device_id)) == 1, "the first daemon's"
        paths = StatePaths.of(load_config(world.daemon.config_path))
        audit_before = paths.audit_log.read_bytes()
        second = second_start(world)
        assert second.returncode == 1, second
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "already running" in lines[0] and "Traceback" not in second.stderr
        time.sleep(2)  # a take-over would show by now: the first would reconnect
        assert connections_of(noting_broker, device_id)[1:] == [], "the broker saw it"
        status = world.daemon.status()
        assert status["broker"] == "connected" and status["recording"]
        assert paths.audit_log.read_bytes()[: len(audit_before)] == audit_before
        assert "already running" not in world.daemon.log_tail(200)
    finally:
        assert world.daemon.stop() == 0


@pytest.mark.parametrize("holder", ["buffer lock", "control socket"])
def test_a_held_buffer_or_a_live_control_socket_refuses_before_the_network(
    tmp_path: Path, noting_broker: MosquittoBroker, tus_server: TusServer, holder: str
) -> None:
    """No daemon runs, but another process holds the buffer (`doorbellctl record`, say)
    or answers on the control socket: doorbelld refuses in one line naming it, before
    it connects to the broker, and leaves no state behind but its directories."""
    world = make_world(tmp_path, noting_broker, tus_server)
    paths = StatePaths.of(load_config(world.daemon.config_path))
    with contextlib.ExitStack() as held:
        if holder == "buffer lock":
            held.enter_context(BufferLock(paths.buffer_dir))
            expected = "another recorder is writing to"
        else:
            path = world.setup.root / "run" / "control.sock"
            path.parent.mkdir(parents=True, exist_ok=True)
            listener = held.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            listener.bind(str(path))
            listener.listen()
            expected = "another daemon is already listening on"
        second = second_start(world)
    assert second.returncode == 1, second
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], second.stderr
    assert connections_of(noting_broker, world.setup.device_id) == []
    assert not paths.audit_log.exists() and not paths.state_db.exists()


@pytest.mark.slow
@pytest.mark.parametrize("shared", ["device id", "console port"])
def test_a_second_daemon_elsewhere_with_the_same_device_id_or_console_port_refuses_first(
    tmp_path: Path, noting_broker: MosquittoBroker, tus_server: TusServer, shared: str
) -> None:
    """Another config, another state directory and control socket, but the running
    daemon's device id on the same broker (or its console port): the second refuses in
    one line before it writes or connects anything. The broker's own log proves the
    first one's session was never taken over: one connection, no reconnect."""
    port = free_port()
    console = {"console": {"listen": f"127.0.0.1:{port}"}}
    first = make_world(tmp_path / "first", noting_broker, tus_server, extra=console)
    second_id = "porch-cam-01" if shared == "device id" else "porch-cam-02"
    second = make_world(
        tmp_path / "second", noting_broker, tus_server, device_id=second_id, extra=console
    )
    first.daemon.start()
    try:
        first.daemon.wait_until(recording_and_connected, timeout=60)
        assert len(connections_of(noting_broker, "porch-cam-01")) == 1
        refused = second_start(second)
        assert refused.returncode == 1, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        if shared == "device id":
            assert (
                f"(pid {first.daemon.proc.pid}) is already running as device porch-cam-01 "  # type: ignore[union-attr]
                f"on the broker 127.0.0.1:{noting_broker.port}" in lines[0]
            ), lines
        else:
            assert f"the console's port 127.0.0.1:{port} is already in use" in lines[0], lines
        assert not (second.setup.root / "var").exists(), "the second wrote nothing"
        time.sleep(2)  # a take-over would show by now: the first would reconnect
        assert len(connections_of(noting_broker, "porch-cam-01")) == 1, "taken over"
        assert connections_of(noting_broker, "porch-cam-02") == []
        assert recording_and_connected(first.daemon.status())
    finally:
        assert first.daemon.stop() == 0
    # the first gone (its lock freed with it), the second starts
    if shared == "device id":
        second.daemon.start()
        assert second.daemon.stop() == 0
