"""What `doorbellctl status` shows, one type for the running and the stopped daemon.

A running daemon builds a `Status` (device.app) and sends it over the control socket as
JSON (`to_json`, the wire format `doorbellctl status --json` prints and scripts read);
`doorbellctl` reads it back (`from_json`) or, with no daemon running, builds one from the
files (device.cli). Either way one renderer prints it. What only a running daemon knows
(the broker, the requests, the shares, the counters of `Health`) is in `Live`, None
when the daemon is stopped.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import DoorbellError
from foundation.times import Window, parse_time
from recorder.buffer import read_summary


class StatusError(DoorbellError):
    """The daemon's status reply is not what this doorbellctl understands."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferFacts:
    """The footage buffer as its files tell it (no daemon needed)."""

    span: Window | None
    bytes: int
    disk_free_bytes: int | None

    @classmethod
    def read(cls, buffer_dir: Path) -> BufferFacts:
        summary = read_summary(buffer_dir)
        span = Window(*summary.span) if summary.span else None
        free = shutil.disk_usage(buffer_dir).free if buffer_dir.exists() else None
        return cls(span=span, bytes=summary.bytes, disk_free_bytes=free)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "buffer_span": None if self.span is None else self.span.to_json(),
            "buffer_bytes": self.bytes,
        }
        if self.disk_free_bytes is not None:
            out["disk_free_bytes"] = self.disk_free_bytes
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """Counts since the daemon started that tell the owner something is wrong: each is
    0 on a good day."""

    broker_reconnects: int  # connections to the broker after the first
    refused_packets: int  # connections dropped on a packet the device refuses
    upload_retries: int  # share attempts that failed and will be tried again
    shares_failed: int
    owner_messages_unpublished: int  # owner-channel messages the broker did not take
    recorder_restarts: int

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Health:
        return cls(**{name: int(raw[name]) for name in cls.__slots__})

    def lines(self) -> list[str]:
        """In plain words, for `doorbellctl status`."""
        counted = [
            (self.broker_reconnects, "reconnection(s) to the broker"),
            (self.refused_packets, "broker message(s) refused as too large or malformed"),
            (self.upload_retries, "upload attempt(s) failed and retried"),
            (self.shares_failed, "share(s) failed"),
            (self.owner_messages_unpublished, "message(s) to the owner's app not sent"),
            (self.recorder_restarts, "recorder restart(s)"),
        ]
        return [f"{count} {what}" for count, what in counted if count]


@dataclass(frozen=True, slots=True, kw_only=True)
class Live:
    """What only a running daemon knows."""

    frames_dropped: int
    broker_connected: bool
    publishes_dropped_offline: int
    publishes_dropped_unacknowledged: int
    pending: int
    requests_paused: bool
    shares_in_flight: int
    health: Health
    broker_url: str | None = None  # the node of the cluster it is connected to
    mqtt_version: str | None = None  # "5" or "3.1.1"
    console: Mapping[str, str | None] | None = None  # ConsoleService.info(), when on
    bell: Mapping[str, Any] | None = None  # Rings.status(): wired, rings, last_ring
    nudge: Mapping[str, Any] | None = None  # NudgeScheduler.status(); None: no channel
    home_assistant: Mapping[str, Any] | None = None  # HomeAssistantLink.status(), when on


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    device_id: str
    device_key: str
    recipient: str
    version: str
    key_id: str
    recording: bool
    clock_synchronized: bool
    clock_evidence: Mapping[str, Any]
    buffer: BufferFacts
    live: Live | None = None  # None: the daemon is stopped

    @property
    def running(self) -> bool:
        return self.live is not None

    def to_json(self) -> dict[str, Any]:
        """The control socket's `status` object (and `doorbellctl status --json`)."""
        out: dict[str, Any] = dict(
            device_id=self.device_id,
            device_key=self.device_key,
            recipient=self.recipient,
            daemon="running" if self.running else "stopped",
            version=self.version,
            key_id=self.key_id,
            recording=self.recording,
            clock_synchronized=self.clock_synchronized,
            clock_evidence=dict(self.clock_evidence),
        )
        live = self.live
        if live is not None:
            out.update(
                frames_dropped=live.frames_dropped,
                broker="connected" if live.broker_connected else "disconnected",
                broker_url=live.broker_url,
                mqtt_version=live.mqtt_version,
                publishes_dropped={
                    "offline": live.publishes_dropped_offline,
                    "unacknowledged": live.publishes_dropped_unacknowledged,
                },
                pending=live.pending,
                requests_paused=live.requests_paused,
                shares_in_flight=live.shares_in_flight,
                health=live.health.to_json(),
            )
            if live.console is not None:
                out["console"] = dict(live.console)
            if live.bell is not None:
                out["bell"] = dict(live.bell)
            out["nudge"] = None if live.nudge is None else dict(live.nudge)
            if live.home_assistant is not None:
                out["home_assistant"] = dict(live.home_assistant)
        out.update(self.buffer.to_json())
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Status:
        """A running daemon's reply, as `to_json` wrote it."""
        try:
            return _status_from_json(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StatusError(f"the daemon's status is malformed ({exc})") from None


def _status_from_json(raw: Mapping[str, Any]) -> Status:
    span = raw.get("buffer_span")
    live = None
    if raw["daemon"] == "running":
        dropped = raw["publishes_dropped"]
        console = raw.get("console")
        live = Live(
            frames_dropped=int(raw["frames_dropped"]),
            broker_connected=raw["broker"] == "connected",
            broker_url=None if raw.get("broker_url") is None else str(raw["broker_url"]),
            mqtt_version=None if raw.get("mqtt_version") is None else str(raw["mqtt_version"]),
            publishes_dropped_offline=int(dropped["offline"]),
            publishes_dropped_unacknowledged=int(dropped["unacknowledged"]),
            pending=int(raw["pending"]),
            requests_paused=bool(raw["requests_paused"]),
            shares_in_flight=int(raw["shares_in_flight"]),
            health=Health.from_json(raw["health"]),
            console=None if console is None else dict(console),
            bell=None if raw.get("bell") is None else dict(raw["bell"]),
            nudge=None if raw.get("nudge") is None else dict(raw["nudge"]),
            home_assistant=None
            if raw.get("home_assistant") is None
            else dict(raw["home_assistant"]),
        )
    free = raw.get("disk_free_bytes")
    return Status(
        device_id=str(raw["device_id"]),
        device_key=str(raw["device_key"]),
        recipient=str(raw["recipient"]),
        version=str(raw["version"]),
        key_id=str(raw["key_id"]),
        recording=bool(raw["recording"]),
        clock_synchronized=bool(raw["clock_synchronized"]),
        clock_evidence=dict(raw.get("clock_evidence") or {}),
        buffer=BufferFacts(
            span=None
            if span is None
            else Window(parse_time(span["start"]), parse_time(span["end"])),
            bytes=int(raw["buffer_bytes"]),
            disk_free_bytes=None if free is None else int(free),
        ),
        live=live,
    )
