"""The sealed owner channel: what the owner reads, what the broker sees, the fixed rhythm."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrage import x25519

from device.identity import DeviceIdentity
from device.owner_channel import (
    OwnerChannel,
    OwnerTopics,
    PendingView,
    next_instant,
    pending_message,
    seal_owner_envelope,
    shares_message,
)
from foundation import wire
from foundation.clock import FakeClock, SystemClock
from foundation.errors import InvalidValueError
from foundation.times import parse_time
from sync.anchor import AuditHead
from sync.envelope import open_envelope
from sync.keys import SigningKey, identity_file_text
from sync.seal import unseal

T0 = parse_time("2026-11-28T13:00:00Z")
HEAD = AuditHead(7, "ab" * 32, tuple(f"{i:064x}" for i in range(7)))
FULL_HEAD = AuditHead(10**9, "ab" * 32, tuple(f"{i:064x}" for i in range(32)))


@pytest.fixture
def device() -> DeviceIdentity:
    return DeviceIdentity("porch-cam-01", SigningKey.generate(), x25519.Identity.generate())


@pytest.fixture
def owner() -> x25519.Identity:
    return x25519.Identity.generate()


def request(i: int, description: str = "Package theft.", **long: str) -> PendingView:
    """A pending view; `long` overrides agency_name, inv_name, email, phone."""
    details = {
        "id": f"0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c{i:02d}",
        "agency": {"id": "sfpd", "name": long.get("agency_name", "San Francisco PD")},
        "investigator": {
            "name": long.get("inv_name", "Det. A. Rivera"),
            "email": long.get("email", "a.rivera@example.gov"),
            "phone": long.get("phone", "+1 415 555 0100"),
        },
        "description": description,
        "area": {"lat": -89.123456789012, "lon": -179.12345678901, "radius_m": 804.999999999},
    }
    entry = {
        "id": details["id"],
        "agency_id": long.get("agency_id", "sfpd"),
        "case_number": long.get("case_number", f"2026-{i:06d}"),
        "window": {"start": "2026-11-28T10:00:00.001Z", "end": "2026-11-28T12:00:00.999Z"},
        "expires_at": "2026-12-05T13:00:00.123Z",
        "decide_by": "2026-11-29T13:00:00.456Z",
        "footage_seconds": 43199.999,
        "details_sha256": wire.details_sha256(details),
    }
    return PendingView(entry, details)


def payload_size(sealed: bytes) -> int:
    """The size of the age payload (everything after the header): the header alone holds
    rage's random "grease" stanza, whose random length says nothing about the content."""
    return len(sealed) - (
        sealed.index(b"\n--- ") + 1 + sealed[sealed.index(b"\n--- ") + 1 :].index(b"\n") + 1
    )


def sealed_pending(device, owner, views, *, head=HEAD, rotation=0) -> bytes:
    envelope = pending_message(views, head, T0, signing=device.signing, rotation=rotation)
    return seal_owner_envelope(envelope, [owner.to_public()])


def opened(device, owner, sealed: bytes) -> tuple[bytes, dict[str, Any]]:
    plain = unseal(sealed, [owner])
    verified = open_envelope(plain, {device.signing.kid: device.signing.public})
    return plain, verified.payload


def test_every_message_is_the_encryption_of_exactly_16384_bytes(device, owner):
    sizes = set()
    for n in range(11):
        sealed = sealed_pending(device, owner, [request(i) for i in range(n)])
        plain, _ = opened(device, owner, sealed)
        assert len(plain) == wire.OWNER_MESSAGE_BYTES
        sizes.add(payload_size(sealed))
    shares = [
        {"rfa_id": request(i).entry["id"], "state": "uploading", "bytes_sent": 10**12,
         "bytes_total": 10**12, "manifest_sha256": "cd" * 32, "error": "e" * 64,
         "starts_at": "2026-11-28T13:59:59.999Z"}  # §6.3's optional key at its longest
        for i in range(20)
    ]  # fmt: skip
    for n in (0, 1, 20):
        env = shares_message(shares[:n], FULL_HEAD, T0, signing=device.signing)
        sealed = seal_owner_envelope(env, [owner.to_public()])
        assert len(unseal(sealed, [owner])) == wire.OWNER_MESSAGE_BYTES
        sizes.add(payload_size(sealed))
    assert len(sizes) == 1, sizes


# Strings at every limit of protocol.md §4, made of the characters that grow most when
# the payload is escaped inside the envelope (quote, backslash), or multibyte ones.
_GROWING = st.sampled_from(['"', "\\", "/", "\u00e9", "\u20ac", "\U0001f6aa", "\u2028", "a", " "])


def _limited(max_bytes: int) -> st.SearchStrategy[str]:
    def cut(chars: list[str]) -> str:
        out, size = [], 0
        for ch in chars:
            size += len(ch.encode())
            if size > max_bytes:
                break
            out.append(ch)
        return "".join(out)

    return st.one_of(
        st.just(""),
        _GROWING.map(lambda ch: ch * (max_bytes // len(ch.encode()))),  # maximal, one char
        st.lists(_GROWING, min_size=0, max_size=max_bytes).map(cut),
    )


_CASE = st.text(alphabet="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\'),
                min_size=1, max_size=64)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 10),
    _limited(1000),
    _limited(128),
    _limited(128),
    _CASE,
    st.integers(0, 50),
)
def test_the_sealed_size_never_changes_whatever_the_requests_hold(
    n, description, long_text, other, case_number, rotation
):
    device = DeviceIdentity("porch-cam-01", SigningKey.generate(), x25519.Identity.generate())
    owner = x25519.Identity.generate()
    views = [
        request(
            i, description, agency_name=long_text, inv_name=other, email=long_text,
            phone=other, case_number=case_number, agency_id="a" * 32,
        )
        for i in range(n)
    ]  # fmt: skip
    sealed = sealed_pending(device, owner, views, head=FULL_HEAD, rotation=rotation)
    plain, payload = opened(device, owner, sealed)
    assert len(plain) == wire.OWNER_MESSAGE_BYTES
    assert payload_size(sealed) == payload_size(sealed_pending(device, owner, []))
    assert [e["id"] for e in payload["requests"]] == [v.entry["id"] for v in views]
    if n:
        # the request the rotation points at always travels whole
        first = views[rotation % n].details
        assert payload["details"][0] == first


def test_details_rotate_so_each_travels_in_every_n_messages(device, owner):
    huge = "\\" * 1000  # 4,000 bytes once escaped twice: not all ten fit at once
    views = [request(i, huge, agency_name='"' * 128, inv_name='"' * 128) for i in range(10)]
    carried = []
    for rotation in range(30):
        _plain, payload = opened(
            device, owner, sealed_pending(device, owner, views, rotation=rotation)
        )
        carried.append({d["id"] for d in payload["details"]})
    assert max(len(c) for c in carried) < 10  # the rotation is needed here
    ids = {v.entry["id"] for v in views}
    for start in range(30 - 10 + 1):
        assert set().union(*carried[start : start + 10]) == ids


def test_all_details_travel_in_every_message_when_they_fit(device, owner):
    views = [request(i) for i in range(10)]
    _plain, payload = opened(device, owner, sealed_pending(device, owner, views))
    assert [d["id"] for d in payload["details"]] == [v.entry["id"] for v in views]


def test_owner_decrypts_and_verifies_with_the_device_key(device, owner):
    views = [request(1), request(2)]
    sealed = sealed_pending(device, owner, views)
    _plain, payload = opened(device, owner, sealed)
    assert payload == {
        "type": "pending",
        "at": "2026-11-28T13:00:00Z",
        "audit_head": HEAD.to_json(),
        "requests": [v.entry for v in views],
        "details": [v.details for v in views],
    }
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: a stranger cannot read it
        unseal(sealed, [x25519.Identity.generate()])
    assert b"sfpd" not in sealed and views[0].entry["id"].encode() not in sealed


@pytest.mark.skipif(shutil.which("age") is None, reason="age CLI not installed")
def test_the_age_cli_opens_what_the_device_seals(device, owner, tmp_path):
    key_file = tmp_path / "owner.txt"
    key_file.write_bytes(identity_file_text(owner))
    sealed = sealed_pending(device, owner, [request(3)])
    out = subprocess.run(
        ["age", "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True,
        timeout=30,
    ).stdout  # fmt: skip
    assert len(out) == 16384
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
        pending=pending,
        shares=kw.pop("shares", list),
        audit_head=kw.pop("audit_head", lambda: HEAD),
        clock=clock,
        period_s=period,
        stop=stop,
        **kw,
    )


def test_publishes_stay_on_the_grid_however_long_building_takes(device, owner):
    """Building happens at a scheduled moment ahead of each instant: however long it
    takes (within the lead), the publish instants are exactly the grid; a round that
    overruns whole periods skips instants rather than bursting."""
    clock = FakeClock(T0)
    stop = SimulatedStop(clock)
    builds: list[float] = []
    published: list[tuple[float, str, int]] = []
    views: list[PendingView] = []
    start = clock.monotonic()

    def pending() -> list[PendingView]:
        builds.append(clock.monotonic())
        if len(builds) == 3:
            views.extend(request(i) for i in range(9))  # requests arrive mid-run...
        clock.advance(0.15 * len(views))  # ...and building gets slower (up to 1.35 s)
        if len(builds) == 6:
            clock.advance(700.0)  # one build overruns two whole periods
        return list(views)

    def publish(topic: str, payload: bytes) -> None:
        published.append((clock.monotonic(), topic, payload_size(payload)))
        if len(published) == 16:
            stop.set()

    make_channel(device, owner, clock, stop, publish=publish, pending=pending).run()
    topics = OwnerTopics.for_device("porch-cam-01")
    assert [t for _, t, _ in published] == [topics.pending, topics.shares] * 8
    instants = [when for when, topic, _ in published if topic == topics.pending]
    # the build for instant 5 ran 700 s: that round goes out late, 6 and 7 are skipped,
    # and 8 and 9 come on time again
    grid = [start + 300.0 * k for k in (0, 1, 2, 3, 4, 8, 9)]
    assert instants[:5] == pytest.approx(grid[:5], abs=1e-9)
    assert instants[5] > start + 300.0 * 5
    assert instants[6:] == pytest.approx(grid[5:], abs=1e-9)
    assert len({size for _, _, size in published}) == 1  # and the size never changed
    # each build starts a lead ahead of its instant, never in reaction to anything
    assert builds[1:5] == pytest.approx([start + 300.0 * k - 2.0 for k in (1, 2, 3, 4)])


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
    assert len(calls) == 8 and channel.failures == 4  # 4 rounds of 2 messages, 4 failed
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
        pending=list,
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
    assert not thread.is_alive() and len(rounds) == 4  # 2 rounds of 2 topics

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
        identity=device, pending=list, shares=list, audit_head=lambda: HEAD,
        clock=clock, period_s=1.0, stop=stop,
    ).run()  # fmt: skip
    assert got == ["devices/porch-cam-01/owner/pending", "devices/porch-cam-01/owner/shares"]
