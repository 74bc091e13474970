"""One `Status` for the running and the stopped daemon: what goes over the control socket
is what `doorbellctl` reads back, and a reply it cannot read is one clear error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.cli import render_status
from device.status import BufferFacts, Health, Live, Status, StatusError
from foundation.times import Window

STOPPED = Status(
    device_id="porch-cam-01",
    device_key="a" * 43,
    recipient="age1" + "q" * 58,
    version="1.0",
    key_id="k" * 16,
    recording=False,
    clock_synchronized=True,
    clock_evidence={"timesyncd": True, "kernel_ntp": True, "rtc": None},
    buffer=BufferFacts(
        span=Window(1_764_000_000_000, 1_764_000_600_000), bytes=12_345, disk_free_bytes=99
    ),
)
RUNNING = replace(
    STOPPED,
    recording=True,
    live=Live(
        frames_dropped=3,
        broker_connected=True,
        publishes_dropped_offline=1,
        publishes_dropped_unacknowledged=0,
        pending=2,
        requests_paused=False,
        shares_in_flight=1,
        health=Health(
            broker_reconnects=2,
            refused_packets=1,
            upload_retries=0,
            shares_failed=0,
            owner_messages_unpublished=0,
            recorder_restarts=0,
        ),
        console={
            "url": "https://doorbell.local:8443/",
            "fingerprint": "AB",
            "ca_fingerprint": None,
        },
        bell={"wired": True, "rings": 1, "last_ring": "2026-12-07 18:04:05"},
        nudge=None,
    ),
)


@pytest.mark.parametrize("status", [STOPPED, RUNNING], ids=["stopped", "running"])
def test_what_the_daemon_sends_is_what_doorbellctl_reads(status: Status) -> None:
    wire = status.to_json()
    assert wire["daemon"] == ("running" if status.running else "stopped")
    assert Status.from_json(wire) == status
    assert ("broker" in wire) is status.running  # a stopped daemon claims no broker


def test_the_wire_keys_are_those_doorbellctl_status_json_always_printed() -> None:
    assert set(STOPPED.to_json()) == {
        "device_id", "device_key", "recipient", "daemon", "version", "key_id", "recording",
        "clock_synchronized", "clock_evidence", "buffer_span", "buffer_bytes", "disk_free_bytes",
    }  # fmt: skip
    assert set(RUNNING.to_json()) - set(STOPPED.to_json()) == {
        "frames_dropped", "broker", "publishes_dropped", "pending", "requests_paused",
        "shares_in_flight", "console", "health", "bell", "nudge", "broker_url", "mqtt_version",
    }  # fmt: skip


def test_both_render_in_plain_words() -> None:
    stopped, running = render_status(STOPPED), render_status(RUNNING)
    assert "daemon        stopped" in stopped and "broker" not in stopped
    assert "daemon        running" in running
    assert "broker        connected  (not sent: 1 offline)" in running
    assert "pending       2 request(s)" in running
    assert "health        2 reconnection(s) to the broker; 1 broker message(s) refused" in running
    assert "health        no problems" in render_status(replace(RUNNING, live=replace(
        RUNNING.live, health=Health(**dict.fromkeys(Health.__slots__, 0)))))  # fmt: skip


@given(
    st.dictionaries(
        st.sampled_from(sorted(RUNNING.to_json())),
        st.none() | st.integers() | st.text(max_size=5) | st.booleans() | st.just({}),
    )
)
def test_a_reply_doorbellctl_cannot_read_is_one_clear_error(overrides: dict[str, Any]) -> None:
    wire = {**RUNNING.to_json(), **overrides}
    try:
        Status.from_json(wire)
    except StatusError as exc:
        assert str(exc).startswith("the daemon's status is malformed")
