"""`doorbelld` as systemd runs it, without systemd: the sd_notify protocol on a socket of
our own (READY, STATUS, WATCHDOG, STOPPING), a clean SIGTERM, a stale control socket left
by a killed daemon, `--check-config`, and `doorbellctl status` as a person reads it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloud.loopback import DeviceSetup, MosquittoBroker, TusServer
from tests.fixtures.daemon import World, make_world, now_ms
from tests.integration.faults import NotifySocket, ask, recorder_pid, settle


def buffer_end(world: World) -> int:
    from device.status import BufferFacts

    span = BufferFacts.read(world.setup.root / "var" / "buffer").span
    assert span is not None, "the buffer is empty"
    return span.end_ms


@pytest.fixture
def notify_path() -> Iterator[Path]:
    # A short directory of its own: a Unix socket path must fit in 108 bytes.
    where = Path(tempfile.mkdtemp(prefix="sdnotify-"))
    try:
        yield where / "notify"
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.slow
def test_systemd_notify_watchdog_follows_the_camera_and_sigterm_stops_cleanly(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    tus_server: TusServer,
    notify_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With NOTIFY_SOCKET set, the daemon sends READY=1 and STATUS lines a person can
    read; WATCHDOG=1 pings come while frames are written and stop when the camera stalls
    (the recorder process frozen with SIGSTOP), and resume after SIGCONT. SIGTERM then
    stops it with exit status 0 (STOPPING=1 sent), removes the control socket and
    closes the open segment (the buffer's end is the moment of the stop, not the last
    finished segment before it)."""
    with NotifySocket(notify_path) as notify:
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
        world = make_world(tmp_path, mosquitto, tus_server, segment_seconds=6)
        world.daemon.start()
        try:
            settle(lambda: notify.lines("READY=1"), world, timeout=20, what="READY=1")
            assert len(notify.lines("READY=1")) == 1
            # READY=1 means recording: its datagram's STATUS says so, not "camera stalled"
            lines = [line for _, line in notify.messages]
            assert lines[lines.index("READY=1") + 1].startswith("STATUS=recording"), lines
            healthy = "STATUS=recording; broker connected; 0 request(s) pending"
            settle(
                lambda: healthy in notify.lines("STATUS="),
                world,
                timeout=20,
                what=f"{healthy!r} (got {notify.lines('STATUS=')})",
            )
            watching = time.monotonic()
            settle(
                lambda: len(notify.lines("WATCHDOG=1", since=watching)) >= 3,
                world,
                timeout=15,
                what="watchdog pings while recording",
            )

            recorder = recorder_pid(world)
            os.kill(recorder, signal.SIGSTOP)
            frozen = time.monotonic()
            try:
                settle(
                    lambda: any(
                        line.startswith("STATUS=camera stalled")
                        for line in notify.lines("STATUS=", since=frozen)
                    ),
                    world,
                    timeout=30,
                    what="the status to say the camera stalled",
                )
                quiet = time.monotonic()
                time.sleep(3.5)  # three housekeeping rounds
                assert notify.lines("WATCHDOG=1", since=quiet) == [], "pinged while stalled"
                assert ask(world, "status")["status"]["recording"] is False
            finally:
                os.kill(recorder, signal.SIGCONT)
            resumed = time.monotonic()
            settle(
                lambda: len(notify.lines("WATCHDOG=1", since=resumed)) >= 2,
                world,
                timeout=20,
                what="watchdog pings to resume after SIGCONT",
            )
            settle(
                lambda: healthy in notify.lines("STATUS=", since=resumed),
                world,
                timeout=20,
                what="the status to say recording again",
            )

            time.sleep(2)  # well inside a 6 s segment
            stopped_at = now_ms()
            assert world.daemon.stop(timeout=15) == 0, world.daemon.log_tail()
            assert notify.lines("STOPPING=1"), notify.lines()
            assert not (world.setup.root / "run" / "control.sock").exists()
            buffer_dir = world.setup.root / "var" / "buffer"
            assert list(buffer_dir.glob("*.part")) == []
            # the open segment was finished: the newest frame is the stop's, give or take
            # the frames still queued; a lost segment would leave a gap of seconds
            assert buffer_end(world) >= stopped_at - 2000, (buffer_end(world), stopped_at)
            assert "stopped at" in world.daemon.log_tail()
        finally:
            world.daemon.stop()


def test_a_stale_control_socket_from_a_killed_daemon_is_replaced(world: World) -> None:
    """kill -9 leaves the control socket file behind; the next start replaces it and
    answers on it."""
    sock = world.setup.root / "run" / "control.sock"
    world.daemon.kill()
    assert sock.exists(), "kill -9 was expected to leave the socket file"
    world.daemon.start()
    assert ask(world, "status")["status"]["daemon"] == "running"
    assert "replacing stale control socket" in world.daemon.log_tail(80)


def test_check_config_reports_every_problem_with_its_key_path(tmp_path: Path) -> None:
    """`doorbelld --check-config` on a bad config lists each problem with its key path
    and exits 2; on a good one it says OK and exits 0."""
    setup = DeviceSetup(root=tmp_path, broker_url="mqtt://127.0.0.1:1883")
    good = setup.write()
    config = setup.config()
    config["device"]["location"]["lat"] = 123
    config["camera"]["fps"] = "fast"
    config["storage"]["segment_seconds"] = 0
    config["mqtt"]["url"] = "ftp://example"
    config["owner"]["sync_secnds"] = 2
    config["share"]["chunk_bytes"] = "1KiB"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "device.daemon", "--config", str(path), "--check-config"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = check(bad)
    assert result.returncode == 2, result
    for key in (
        "device.location.lat",
        "camera.fps",
        "storage.segment_seconds",
        "mqtt.url",
        "owner.sync_secnds",
        "share.chunk_bytes",
    ):
        assert f"  {key}: " in result.stderr, (key, result.stderr)
    assert "6 problem(s)" in result.stderr
    assert "did you mean 'sync_seconds'" in result.stderr
    ok = check(good)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok


def test_status_shows_what_an_owner_needs_to_know(world: World) -> None:
    """`doorbellctl status` (human form) shows recording, the buffer span and size, disk
    free, the broker connection, pending requests, shares in flight, the device key and
    its id, the owner's age recipient and the software version."""
    from sync import SOFTWARE_VERSION

    status = ask(world, "status")["status"]
    text = world.daemon.ctl("status").stdout
    lines = {line.split(None, 1)[0]: line for line in text.splitlines() if line.strip()}
    assert lines["recording"].split()[1] == "yes", text
    span = status["buffer_span"]
    assert f"{span['start']} .. " in lines["buffer"] and "iB)" in lines["buffer"], text
    assert lines["disk"].startswith("disk free") and "iB" in lines["disk"], text
    assert lines["broker"].split()[1] == "connected", text
    assert lines["pending"].split()[1:3] == ["0", "request(s)"], text
    assert lines["shares"].split()[1:] == ["0", "in", "flight"], text
    assert status["device_key"] in lines["device"] and status["key_id"] in text, text
    assert f"recipient     {status['recipient']}" in text and status["recipient"].startswith("age1")
    assert SOFTWARE_VERSION in text and world.setup.device_id in text
