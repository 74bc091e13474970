"""A whole doorbell world on loopback, for the demo and the integration tests: a device
config written for local services, and `doorbelld` run as a real child process.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from cloud.tus_storage import StoredUpload, read_uploads
from device.control import control_request
from firmware_config import load_config
from foundation.errors import DoorbellError


class LoopbackError(DoorbellError, RuntimeError):
    """A loopback service (broker, upload server, daemon) did not start or stay up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# The project's console scripts and the modules behind them (setup.cfg's entry points).
SCRIPTS = {
    "doorbelld": "device.daemon",
    "doorbellctl": "device.cli",
    "doorbell-agency": "cloud.agency",
    "doorbell-owner": "cloud.owner",
    "doorbell-tus-server": "cloud.tus_server",
}


def script(name: str) -> list[str]:
    """How to run one of the project's commands as a person would: the installed console
    script beside this interpreter (the venv's bin/), or its module where it is not
    installed (a source checkout run with PYTHONPATH)."""
    installed = Path(sys.executable).parent / name
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-m", SCRIPTS[name]]


class MosquittoBroker:
    """One broker process; start/stop/restart/kill keep the same port and data dir."""

    host = "127.0.0.1"

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        log_types: Sequence[str] = ("error", "warning"),
    ) -> None:
        """`log_types`: what Mosquitto logs ("notice" adds every client's connection)."""
        self.root = root
        self.port = port or free_port()
        self.log_types = tuple(log_types)
        self.data_dir = root / "data"
        self.config_path = root / "mosquitto.conf"
        self.log_path = root / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def urls(self) -> list[str]:
        """Every node's URL, as a device's mqtt.urls (one node here)."""
        return [self.url]

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    # Run as whoever runs the tests (as root, Mosquitto would otherwise
                    # switch to a "mosquitto" user that cannot write the tmp dir).
                    f"user {getpass.getuser()}",
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.data_dir}/",
                    # Save often so that even kill -9 of the broker keeps most state.
                    "autosave_interval 1",
                    # A flood test queues tens of thousands of QoS 1 messages for one
                    # client; the default (1000) would make the broker drop them.
                    "max_queued_messages 100000",
                    "persistent_client_expiration 14d",
                    "log_dest stderr",
                    *(f"log_type {kind}" for kind in self.log_types),
                    "",
                ]
            )
        )

    def start(self, *, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.write_config()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LoopbackError(
                    f"mosquitto exited with {self._proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.kill()
        raise LoopbackError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, *, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class TusServer:
    def __init__(self, storage: Path, *, port: int | None = None, max_size: int = 1 << 40):
        self.storage = storage
        self.port = port or free_port()
        self.max_size = max_size
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = storage.parent / f"tus-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.storage.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cloud.tus_server",
                    f"--port={self.port}",
                    f"--storage={self.storage}",
                    f"--max-size={self.max_size}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LoopbackError(f"tus server exited: {self.log.read_text()[-2000:]}")
            try:
                r = requests.options(self.url, headers={"Tus-Resumable": "1.0.0"}, timeout=1)
                if r.status_code == 204:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise LoopbackError("tus server did not start")

    def _end(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def uploads(self) -> list[StoredUpload]:
        return read_uploads(self.storage)

    def upload_of(self, kind: str) -> StoredUpload:
        matches = [u for u in self.uploads() if u.metadata.get("kind") == kind]
        assert len(matches) == 1, f"expected one {kind} upload, found {len(matches)}"
        return matches[0]


@dataclass(frozen=True)
class DeviceSetup:
    """What a loopback device's config needs to know of its world."""

    root: Path
    broker_url: str
    device_id: str = "porch-cam-01"
    lat: float = 37.7749
    lon: float = -122.4194
    agencies: Sequence[tuple[str, str]] = ()  # (agency_id, base64url public key)
    owner_keys: Sequence[str] = ()
    owner_recipients: Sequence[str] = ()
    width: int = 320
    height: int = 240
    fps: int = 15
    segment_seconds: int = 2
    sync_seconds: float = 1.0
    decide_within_hours: float = 72.0
    chunk_bytes: str = "256KiB"
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "device": {
                "id": self.device_id,
                "location": {"lat": self.lat, "lon": self.lon},
                "contact": {
                    "name": "Jane Doe",
                    "email": "jane@example.com",
                    "address": "1 Elm St",
                },
            },
            "camera": {
                "source": "synthetic",
                "width": self.width,
                "height": self.height,
                "fps": self.fps,
            },
            "storage": {
                "dir": str(self.root / "var"),
                "segment_seconds": self.segment_seconds,
                "max_bytes": "1GiB",
                "min_free_bytes": "16MiB",
            },
            "mqtt": {"url": self.broker_url},
            "rfa": {
                "allow_plain_http_loopback": True,
                "decide_within_hours": self.decide_within_hours,
                "trusted_agencies": [
                    {"agency_id": agency_id, "public_key": key} for agency_id, key in self.agencies
                ],
            },
            "owner": {
                "keys": list(self.owner_keys),
                "recipients": list(self.owner_recipients),
                "sync_seconds": self.sync_seconds,
            },
            "share": {"chunk_bytes": self.chunk_bytes},
            "control": {"socket": str(self.root / "run" / "control.sock")},
        }
        for section, values in self.extra.items():
            data.setdefault(section, {}).update(values)
        return data

    def write(self) -> Path:
        (self.root / "run").mkdir(parents=True, exist_ok=True)  # the control socket's
        path = self.root / "doorbell.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return path


class DaemonProcess:
    """`doorbelld` as a child process: start, wait until it records, stop or kill -9.
    `entry` is the module that runs it: the product's, or a test's entry point that
    builds the same daemon with test hooks (followed by that entry point's own options)."""

    def __init__(
        self,
        config_path: Path,
        *,
        log_path: Path | None = None,
        entry: Sequence[str] = ("device.daemon",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env`: the daemon's environment (default: this process's)."""
        self.config_path = config_path
        self.log_path = log_path or config_path.with_name("doorbelld.log")
        self.entry = tuple(entry)
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, name: str, *args: str) -> list[str]:
        return [*script(name), f"--config={self.config_path}", *args]

    def daemon_command(self, *args: str) -> list[str]:
        if self.entry == ("device.daemon",):
            return self.command("doorbelld", *args)  # the installed script, as a person runs it
        module, *hook_args = self.entry
        return [sys.executable, "-m", module, *hook_args, f"--config={self.config_path}", *args]

    def start(self, *, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.daemon_command("--assume-clock-synchronized"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self.wait_until(lambda status: bool(status.get("recording")), timeout=timeout)
        except BaseException:
            self.stop()  # a daemon that never became ready must not outlive its test
            raise

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command("doorbellctl", *args), capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise DoorbellError(f"doorbellctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def status(self) -> dict[str, Any]:
        config = load_config(self.config_path)
        reply = control_request(config.control.socket, {"cmd": "status"}, timeout=10)
        return dict(reply.get("status") or {})

    def wait_until(self, predicate: Any, *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DoorbellError(
                    f"doorbelld exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
                )
            try:
                status = self.status()
                if predicate(status):
                    return status
            except DoorbellError as exc:  # not listening yet
                last_error = exc
            time.sleep(0.1)
        raise DoorbellError(f"doorbelld not ready in {timeout}s ({last_error}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        """SIGKILL the daemon and its recorder child: a power cut, as far as files go."""
        if self.proc is None:
            return
        orphans = _children(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        _wait_orphans(orphans)

    def stop(self, *, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; either way its recorder child is waited
        for (and killed if it lingers), so nothing of the daemon outlives this call."""
        if self.proc is None:
            return 0
        children = _children(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _wait_orphans(children)
        return int(self.proc.returncode or 0)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the recorder, multiprocessing's helpers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name may hold spaces and parentheses: split after the last ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie has closed its files: its buffer lock is free


def _wait_orphans(pids: list[int], *, timeout: float = 30.0) -> None:
    """A recorder left behind by a SIGKILLed daemon gets SIGTERM from the kernel and
    finishes its segment before it exits (systemd would wait for the unit's whole cgroup
    the same way before a restart); wait for it so the next start does not find the
    buffer locked, and kill it if it will not go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return
        time.sleep(0.05)
    for pid in pids:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
