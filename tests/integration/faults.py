"""Helpers for the daemon-level fault tests: talk to a live `doorbelld` over its control
socket (cheaper than a `doorbellctl` process per question), act as the owner with sealed
decisions that can be replayed byte for byte, check an exported clip frame by frame, and
listen where systemd would for the daemon's notifications.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from cloud.broker import Outgoing, publish_messages
from cloud.owner import decision_payload, seal_decision
from foundation.times import Window, format_time
from foundation.wire import owner_topic, read_capture_ms
from tests.fixtures.daemon import World, now_ms


class Failure(AssertionError):
    pass


def ask(world: World, cmd: str, **fields: Any) -> dict[str, Any]:
    """One control-socket request to the running daemon."""
    from device.control import control_request

    reply = control_request(world.setup.root / "run" / "control.sock", {"cmd": cmd, **fields})
    return dict(reply)


def pending_ids(world: World) -> set[str]:
    return {entry["id"] for entry in ask(world, "pending")["requests"]}


def shares(world: World) -> dict[str, dict[str, Any]]:
    return {entry["rfa_id"]: entry for entry in ask(world, "shares")["shares"]}


def settle(
    predicate: Callable[[], Any], world: World, *, timeout: float, what: str, step: float = 0.1
) -> Any:
    """Poll until `predicate` is truthy; on timeout fail with the daemon's log tail.
    A control request that fails meanwhile (daemon still starting) counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # a refused control request, a daemon still starting
            last = exc
        if time.monotonic() >= deadline:
            raise Failure(
                f"timed out after {timeout}s waiting for {what} (last: {last!r});"
                f" daemon log tail:\n{world.daemon.log_tail(60)}"
            )
        time.sleep(step)


# -- the owner, with decisions that can be replayed --------------------------------------
def sealed_decision(
    world: World, rfa_id: str, *, approve: bool, window: Window | None = None
) -> bytes:
    device = world.owner.device(None)
    payload = decision_payload(
        device_id=device.device_id,
        rfa_id=rfa_id,
        approve=approve,
        window=window,
        share_contact=True,
        now_ms=now_ms(),
    )
    return seal_decision(payload, world.owner.signing_key(), device)


def send_decision(world: World, sealed: bytes) -> None:
    """Publish (QoS 1, waits for the broker's PUBACK) a sealed decision as the app would."""
    publish_messages(
        world.broker.url,
        [
            Outgoing(
                topic=owner_topic(world.setup.device_id, "decision"), payload=sealed, retain=False
            )
        ],
        timeout_s=10,
    )


# -- footage -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipCheck:
    frames: int
    first_ms: int
    last_ms: int
    synchronized: bool
    stamps: list[int] = field(repr=False)


def export_and_check(world: World, window: Window, out: Path) -> ClipCheck:
    """`doorbellctl clip` over `window`, then decode every frame: each must decode, carry
    a capture stamp inside the window, and the stamps must strictly increase."""
    result = world.daemon.ctl(
        "clip",
        "--start",
        format_time(window.start_ms),
        "--end",
        format_time(window.end_ms),
        "--out",
        str(out),
        check=False,
    )
    if result.returncode != 0:
        raise Failure(f"doorbellctl clip failed ({result.returncode}): {result.stderr}")
    stamps: list[int] = []
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            stamps.append(read_capture_ms(frame.to_ndarray(format="gray")))
    if not stamps:
        raise Failure(f"the clip of {window} decoded no frame")
    backwards = [(a, b) for a, b in zip(stamps, stamps[1:], strict=False) if b <= a]
    if backwards:
        raise Failure(f"capture stamps do not strictly increase: {backwards[:5]}")
    outside = [s for s in stamps if not window.start_ms <= s <= window.end_ms]
    if outside:
        raise Failure(f"{len(outside)} frame(s) outside {window}: {outside[:5]}")
    return ClipCheck(
        frames=len(stamps),
        first_ms=stamps[0],
        last_ms=stamps[-1],
        synchronized="NOT synchronized" not in result.stdout,
        stamps=stamps,
    )


# -- systemd's side of sd_notify -------------------------------------------------------------
class NotifySocket:
    """A Unix datagram socket where a Type=notify service sends READY=1, STATUS=...,
    WATCHDOG=1. Records every datagram with the monotonic time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.messages: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            with self._lock:
                for line in data.decode("utf-8", "replace").splitlines():
                    self.messages.append((arrived, line))

    def lines(self, prefix: str = "", since: float = 0.0) -> list[str]:
        with self._lock:
            return [line for t, line in self.messages if line.startswith(prefix) and t >= since]


def children_of(pid: int) -> list[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in result.stdout.split()]


def recorder_pid(world: World) -> int:
    """The recorder child of the daemon (spawned by multiprocessing: the daemon's child
    whose command line names multiprocessing, not the resource tracker)."""
    assert world.daemon.proc is not None
    for pid in children_of(world.daemon.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            return pid
    raise Failure(f"no recorder child of doorbelld {world.daemon.proc.pid}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace a steering file in one step (the daemon may read it at any moment)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
