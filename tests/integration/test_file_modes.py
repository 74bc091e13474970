"""What `doorbelld` writes is its user's alone, whoever starts it (issue 16): started by
hand with umask 022, as a person would, the daemon and its recorder child run with
umask 077, the buffer folder is 0700 and no file it writes (segments, index, state
database, audit log, keys, outbox) is open to group or others. A buffer and state folder
left 0755 by an older version are tightened to 0700 at start, one log line each. The
control socket keeps its 0660 (group doorbell may use doorbellctl)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from cloud.loopback import MosquittoBroker, TusServer
from tests.fixtures.daemon import World, make_world
from tests.integration.faults import recorder_pid, settle

pytestmark = pytest.mark.timeout(180)


def start_by_hand_with_umask_022(world: World) -> None:
    """`DaemonProcess.start`, but through a shell that sets umask 022 first."""
    command = world.daemon.daemon_command("--assume-clock-synchronized")
    with world.daemon.log_path.open("ab") as log:
        world.daemon.proc = subprocess.Popen(
            ["sh", "-c", 'umask 022 && exec "$@"', "sh", *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    world.daemon.wait_until(lambda status: bool(status.get("recording")), timeout=60)


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def modes_under(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize("left_open", [False, True], ids=["fresh", "upgraded-from-0755"])
def test_a_daemon_started_with_umask_022_keeps_its_files_to_itself(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer, left_open: bool
) -> None:
    world = make_world(tmp_path, mosquitto, tus_server)
    storage = world.setup.root / "var"
    old_segment = storage / "buffer" / "seg-old.mp4"
    if left_open:  # what an older daemon run by hand with umask 022 left behind
        for folder in (storage / "buffer", storage / "state"):
            folder.mkdir(parents=True)
            folder.chmod(0o755)
        old_segment.write_bytes(b"old footage")
        old_segment.chmod(0o644)
    start_by_hand_with_umask_022(world)
    try:
        daemon_umask = umask_of(world.daemon.proc.pid)  # type: ignore[union-attr]
        recorder_umask = umask_of(recorder_pid(world))
        settle(lambda: len(list((storage / "buffer").glob("seg-*-*.mp4"))) >= 1, world,
               timeout=60, what="a finished segment")  # fmt: skip
        modes = modes_under(storage)
        socket_mode = stat.S_IMODE((world.setup.root / "run" / "control.sock").stat().st_mode)
    finally:
        world.daemon.stop()
    log = world.daemon.log_path.read_text(errors="replace")
    assert (oct(daemon_umask), oct(recorder_umask)) == ("0o77", "0o77")
    assert modes["buffer"] == 0o700 and modes["state"] == 0o700
    assert oct(socket_mode) == "0o660"  # the one thing meant for group doorbell, as before
    assert any(name.startswith("buffer/seg-") for name in modes)
    assert "buffer/index.sqlite3" in modes and "state/state.db" in modes
    if left_open:  # not the daemon's: the storage folder it was given, and an old file
        del modes["."], modes["buffer/seg-old.mp4"]  # now unreachable in a 0700 folder
    open_to_others = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert open_to_others == {}
    tightened = [line for line in log.splitlines() if "was open to other users" in line]
    if left_open:
        assert len(tightened) == 2, tightened  # the buffer and the state folder, once each
        assert all("(mode 0755); now 0700" in line for line in tightened)
    else:
        assert tightened == []
