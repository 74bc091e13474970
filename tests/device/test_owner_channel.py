"""The sealed owner channel: what the owner reads, what the broker sees, the fixed rhythm."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from typing import Any

import pytest
from pyrage import x25519

from device.audit import AuditHead
from device.identity import DeviceIdentity
from device.owner_channel import (
    OwnerChannel,
    OwnerTopics,
    next_instant,
    pending_message,
    seal_owner_message,
    shares_message,
)
from foundation.clock import FakeClock, SystemClock
from foundation.errors import InvalidValueError
from foundation.times import parse_time
from sync.envelope import open_envelope
from sync.keys import SigningKey, identity_file_text
from sync.seal import unseal

T0 = parse_time("2026-11-28T13:00:00Z")
HEAD = AuditHead(7, "ab" * 32)


@pytest.fixture
def device() -> DeviceIdentity:
    return DeviceIdentity("porch-cam-01", SigningKey.generate(), x25519.Identity.generate())


@pytest.fixture
def owner() -> x25519.Identity:
    return x25519.Identity.generate()


def request(i: int, description: str = "Package theft.") -> dict[str, Any]:
    return {
        "id": f"0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c{i:02d}",
        "agency": {"id": "sfpd", "name": "San Francisco Police Department"},
        "case_number": f"2026-{i:06d}",
        "investigator": {"name": "Det. A. Rivera", "email": "a.rivera@example.gov"},
        "description": description,
        "area": {"lat": 37.7749, "lon": -122.4194, "radius_m": 800},
        "window": {"start": "2026-11-28T10:00:00Z", "end": "2026-11-28T12:00:00Z"},
        "expires_at": "2026-12-05T13:00:00Z",
        "decide_by": "2026-11-29T13:00:00Z",
        "footage_seconds": 7200,
    }


def size_without_grease(sealed: bytes) -> int:
    """The ciphertext's size minus the random "grease" stanza rage adds to each header
    (random length, independent of the content, so it is noise rather than signal)."""
    header = sealed[: sealed.index(b"\n--- ") + 1]
    grease, in_grease = 0, False
    for line in header.splitlines(keepends=True):
        if line.startswith(b"-> "):
            in_grease = b"-grease" in line.split(b" ")[1]
        if in_grease:
            grease += len(line)
    return len(sealed) - grease


def sealed_pending(device, owner, entries, **kw) -> bytes:
    return seal_owner_message(
        pending_message(entries, HEAD, T0),
        signing=device.signing,
        recipients=[owner.to_public()],
        **kw,
    )


def test_ciphertext_size_does_not_depend_on_how_many_requests_are_pending(device, owner):
    sizes = {
        n: size_without_grease(sealed_pending(device, owner, [request(i) for i in range(n)]))
        for n in (0, 1, 5)
    }
    assert len(set(sizes.values())) == 1, sizes
    shares = [
        {"rfa_id": request(i)["id"], "state": "done", "bytes_sent": 10, "bytes_total": 10,
         "manifest_sha256": "cd" * 32, "error": None}
        for i in range(20)
    ]  # fmt: skip
    sealed_shares = {
        n: size_without_grease(
            seal_owner_message(
                shares_message(shares[:n], HEAD, T0),
                signing=device.signing,
                recipients=[owner.to_public()],
            )
        )
        for n in (0, 1, 20)
    }
    assert set(sealed_shares.values()) == set(sizes.values())


def test_content_beyond_the_floor_grows_in_4_kib_steps(device, owner):
    big = [request(i, "x" * 2000) for i in range(20)]
    plain = unseal(sealed_pending(device, owner, big), [owner])
    assert len(plain) % 4096 == 0 and len(plain) > 16384
    small = unseal(sealed_pending(device, owner, []), [owner])
    assert len(small) == 16384
    unpadded = unseal(sealed_pending(device, owner, [], min_padded_bytes=0), [owner])
    assert len(unpadded) == 4096


def test_owner_decrypts_and_verifies_with_the_device_key(device, owner):
    entries = [request(1), request(2)]
    sealed = sealed_pending(device, owner, entries)
    verified = open_envelope(unseal(sealed, [owner]), {device.signing.kid: device.signing.public})
    assert verified.payload == {
        "type": "pending",
        "at": "2026-11-28T13:00:00Z",
        "audit_head": {"entries": 7, "sha256": "ab" * 32},
        "requests": entries,
    }
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: a stranger cannot read it
        unseal(sealed, [x25519.Identity.generate()])
    assert b"sfpd" not in sealed and entries[0]["id"].encode() not in sealed


@pytest.mark.skipif(shutil.which("age") is None, reason="age CLI not installed")
def test_the_age_cli_opens_what_the_device_seals(device, owner, tmp_path):
    key_file = tmp_path / "owner.txt"
    key_file.write_bytes(identity_file_text(owner))
    sealed = sealed_pending(device, owner, [request(3)])
    out = subprocess.run(
        ["age", "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True,
        timeout=30,
    ).stdout  # fmt: skip
    assert json.loads(json.loads(out)["payload"])["requests"][0]["case_number"] == "2026-000003"


# ------------------------------------------------------------------ the rhythm


class SimulatedStop(threading.Event):
    """A stop event whose waits move a fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        if timeout:
            self.clock.advance(timeout)
        return self.is_set()


def make_channel(device, owner, clock, stop, *, publish, pending, period=300.0, **kw):
    return OwnerChannel(
        publish=publish,
        topics=OwnerTopics.for_device(device.device_id),
        recipients=[str(owner.to_public())],
        identity=device,
        pending_entries=pending,
        shares=kw.pop("shares", list),
        audit_head=kw.pop("audit_head", lambda: HEAD),
        clock=clock,
        period_s=period,
        stop=stop,
        **kw,
    )


def test_rounds_stay_on_a_fixed_schedule_however_long_the_work_takes(device, owner):
    clock = FakeClock(T0)
    stop = SimulatedStop(clock)
    round_starts: list[float] = []
    published: list[tuple[str, int]] = []
    entries: list[dict[str, Any]] = []
    start = clock.monotonic()

    def audit_head() -> AuditHead:
        round_starts.append(clock.monotonic())
        if len(round_starts) == 3:
            entries.append(request(1))  # a request arrives mid-run...
        return HEAD

    def pending() -> list[dict[str, Any]]:
        clock.advance(40.0 * len(entries))  # ...and building gets slower
        if len(round_starts) == 6:
            clock.advance(700.0)  # one round overruns two whole periods
        return list(entries)

    def publish(topic: str, payload: bytes) -> None:
        published.append((topic, size_without_grease(payload)))
        if len(published) == 16:
            stop.set()

    make_channel(device, owner, clock, stop, publish=publish, pending=pending,
                 audit_head=audit_head).run()  # fmt: skip
    grid = [start + 300.0 * k for k in (0, 1, 2, 3, 4, 5, 8, 9)]
    assert round_starts == pytest.approx(grid)
    topics = OwnerTopics.for_device("porch-cam-01")
    assert [t for t, _ in published] == [topics.pending, topics.shares] * 8
    assert len({size for _, size in published}) == 1  # and the size never changed


def test_next_instant_skips_missed_instants_instead_of_bursting():
    assert next_instant(100.0, 10.0, 100.5, 0) == (1, 110.0)
    assert next_instant(100.0, 10.0, 135.0, 1) == (4, 140.0)
    assert next_instant(100.0, 10.0, 140.0, 1) == (4, 140.0)


def test_the_channel_has_no_way_to_publish_early():
    assert not hasattr(OwnerChannel, "wake")
    assert not hasattr(OwnerChannel, "notify")


def test_a_broker_outage_is_logged_and_the_loop_keeps_going(device, owner, caplog):
    clock = FakeClock(T0)
    stop = SimulatedStop(clock)
    calls: list[str] = []

    def publish(topic: str, payload: bytes) -> None:
        calls.append(topic)
        if len(calls) <= 4:
            raise ConnectionError("broker down")
        if len(calls) == 8:
            stop.set()

    channel = make_channel(device, owner, clock, stop, publish=publish, pending=list)
    with caplog.at_level(logging.WARNING, logger="device.owner_channel"):
        channel.run()
    assert len(calls) == 8 and channel.rounds == 4 and channel.failures == 4
    assert "could not publish" in caplog.text
    assert caplog.text.count("Traceback") <= 1  # one traceback per outage, not one per round


def test_a_failing_source_skips_that_topic_only(device, owner):
    clock = FakeClock(T0)
    stop = SimulatedStop(clock)
    got: list[str] = []

    def pending() -> list[dict[str, Any]]:
        raise RuntimeError("state store unavailable")

    def publish(topic: str, payload: bytes) -> None:
        got.append(topic)
        if len(got) == 2:
            stop.set()

    make_channel(device, owner, clock, stop, publish=publish, pending=pending).run()
    assert got == [OwnerTopics.for_device("porch-cam-01").shares] * 2


def test_without_owner_recipients_nothing_is_published(device, caplog):
    published: list[str] = []
    channel = OwnerChannel(
        publish=lambda topic, payload: published.append(topic),
        topics=OwnerTopics.for_device(device.device_id),
        recipients=[],
        identity=device,
        pending_entries=list,
        shares=list,
        audit_head=lambda: HEAD,
        clock=FakeClock(T0),
        period_s=0.2,
        stop=threading.Event(),
    )
    with caplog.at_level(logging.WARNING, logger="device.owner_channel"):
        channel.run()  # returns at once
    assert published == []
    assert caplog.text.count("no owner.recipients") == 1


def test_a_period_below_the_protocol_minimum_is_refused(device, owner):
    with pytest.raises(InvalidValueError):
        make_channel(device, owner, FakeClock(T0), threading.Event(), publish=print,
                     pending=list, period=0.1)  # fmt: skip


def test_real_broker_keeps_the_latest_sealed_messages_retained(device, owner, tmp_path, mosquitto):
    """A real thread on the real clock, publishing through a real Mosquitto; a late
    subscriber (the owner's app) still gets both topics, and the age CLI opens them."""
    from tests.fixtures.mosquitto import Publisher

    stop = threading.Event()
    rounds: list[str] = []
    with Publisher(mosquitto, client_id="porch-cam-01") as client:

        def publish(topic: str, payload: bytes) -> None:
            client.publish(topic, payload, qos=1, retain=True)
            rounds.append(topic)
            if len(rounds) >= 4:
                stop.set()

        channel = make_channel(device, owner, SystemClock(), stop, publish=publish,
                               pending=lambda: [request(1)], period=0.2)  # fmt: skip
        thread = threading.Thread(target=channel.run, daemon=True)
        thread.start()
        thread.join(timeout=30)
    assert not thread.is_alive() and channel.rounds == 2

    key_file = tmp_path / "owner.txt"
    key_file.write_bytes(identity_file_text(owner))
    topics = OwnerTopics.for_device(device.device_id)
    for kind, topic in (("pending", topics.pending), ("shares", topics.shares)):
        sealed = subprocess.run(
            ["mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-t", topic,
             "-C", "1", "-W", "10", "-N", "--retained-only"],
            capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        plain = subprocess.run(
            ["age", "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True,
            timeout=30,
        ).stdout  # fmt: skip
        verified = open_envelope(plain, {device.signing.kid: device.signing.public})
        assert verified.payload["type"] == kind


def test_topics_follow_from_the_device_id(device, owner):
    clock = FakeClock(T0)
    stop = SimulatedStop(clock)
    got: list[str] = []

    def publish(topic: str, payload: bytes) -> None:
        got.append(topic)
        stop.set()

    OwnerChannel(
        publish=publish, device_id="porch-cam-01", recipients=[owner.to_public()],
        identity=device, pending_entries=list, shares=list, audit_head=lambda: HEAD,
        clock=clock, period_s=1.0, stop=stop,
    ).run()  # fmt: skip
    assert got == ["devices/porch-cam-01/owner/pending", "devices/porch-cam-01/owner/shares"]
