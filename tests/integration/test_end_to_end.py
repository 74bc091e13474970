"""The whole loop against the real daemon, a real Mosquitto and a real tus server:
an agency's request, the owner's decision, the upload, and the agency's verification.
Also what the broker sees meanwhile: nothing that names a request, and no change of
size or rhythm when one arrives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from foundation.times import Window
from tests.fixtures.daemon import World, wait_for


@dataclass
class BrokerSpy:
    """Everything the broker carries, as an observer subscribed to '#' sees it."""

    seen: list[tuple[float, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _client, _userdata, message) -> None:
        if message.retain:
            return  # a stored copy replayed at subscription, not a publication we timed
        with self.lock:
            self.seen.append((time.monotonic(), message.topic, bytes(message.payload)))

    def messages(self, topic_suffix: str = "") -> list[tuple[float, str, bytes]]:
        with self.lock:
            return [m for m in self.seen if m[1].endswith(topic_suffix)]


@pytest.fixture
def spy(world: World):
    observer = BrokerSpy()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="spy", protocol=paho.MQTTv5)
    client.on_message = observer.on_message
    client.connect(world.broker.host, world.broker.port)
    client.subscribe("#", qos=1)
    client.loop_start()
    yield observer
    client.loop_stop()
    client.disconnect()


def verify(world: World, rfa_id: str):
    # this share's two objects and nothing else reached the upload server
    assert {u.metadata["rfa_id"] for u in world.uploads.uploads()} == {rfa_id}
    assert len(world.uploads.uploads()) == 2
    return world.verify(rfa_id)


def test_named_share_approved_in_the_app_is_exact_and_verifies(world: World, spy) -> None:
    span = world.buffer_span()
    assert span is not None
    time.sleep(4)  # a few seconds of footage to ask about
    start = span[0] + 500
    end = start + 5000
    rfa = world.rfa(Window(start, end))
    before_arrival = time.monotonic()
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    time.sleep(3)  # three owner-channel rounds with the request pending
    narrow = Window(start + 1000, end - 1500)
    world.decide(rfa.id, approve=True, window=narrow)
    world.wait_share(rfa.id)

    report, manifest, _ = verify(world, rfa.id)
    assert report.anonymous is False and report.device_id == world.setup.device_id
    assert report.window_approved == narrow
    assert narrow.start_ms <= report.first_frame_ms and report.last_frame_ms <= narrow.end_ms
    # 15 fps: the clip holds every frame of the 2.5 s window, no more
    assert report.frames is not None and 36 <= report.frames <= 39
    assert manifest.metadata["device_id"] == world.setup.device_id
    assert report.decision_signature == "verified"

    # What the broker saw: nothing in clear that names the request, the case or the owner.
    for _, topic, payload in spy.messages():
        for secret in (rfa.id.encode(), b"2026-004512", b"jane@example.com", b"Rivera"):
            if topic.startswith("rfa/v1/cell/"):
                continue  # the agency's own public request
            assert secret not in payload, topic
    # The sealed owner topics keep one size (up to age's random header grease) and one
    # rhythm whether or not a request is pending.
    for leaf in ("owner/pending", "owner/shares"):
        messages = spy.messages(leaf)
        assert len(messages) >= 5, leaf
        sizes = [len(payload) for _, _, payload in messages]
        assert max(sizes) - min(sizes) < 1024, (leaf, sizes)
        gaps = [b[0] - a[0] for a, b in zip(messages, messages[1:], strict=False)]
        # one publication a period: single gaps jitter with load, their mean does not
        assert all(0.3 < gap < 2.0 for gap in gaps), (leaf, gaps)
        assert 0.9 < sum(gaps) / len(gaps) < 1.1, (leaf, gaps)
        # no extra publication in reaction to the arrival
        after = [t for t, _, _ in messages if before_arrival <= t <= before_arrival + 1.0]
        assert len(after) <= 2, leaf
    # The daemon's log (journald on a Pi) holds no contact detail and no key material.
    log = world.daemon.log_path.read_text()
    for secret in (
        "jane@example.com",
        "Jane Doe",
        "1 Elm St",
        "a.rivera@example.gov",
        "+1 415",
        "AGE-SECRET-KEY",
        "PRIVATE KEY",
    ):
        assert secret not in log, secret
    status_topics = {topic for _, topic, _ in spy.messages() if topic.startswith("devices/")}
    assert status_topics <= {
        f"devices/{world.setup.device_id}/{leaf}"
        for leaf in ("status", "owner/pending", "owner/shares", "owner/decision")
    }


def test_anonymous_share_approved_on_the_cli_names_nobody(steered_world: World) -> None:
    world = steered_world
    span = world.buffer_span()
    assert span is not None
    time.sleep(3)
    window = Window(span[0] + 200, span[0] + 2200)
    rfa = world.rfa(window)
    world.publish(rfa)
    wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
    out = world.daemon.ctl("approve", rfa.id, "--anonymous").stdout
    assert "approved" in out
    world.wait_share(rfa.id, "queued", timeout=30)  # waiting for its drawn moment
    world.release_waiting_share(rfa.id)  # tests/integration/test_anonymous_delay.py
    world.wait_share(rfa.id)
    report, manifest, clip = verify(world, rfa.id)
    assert report.anonymous is True and report.device_id is None
    assert "device_id" not in manifest.metadata and "device_id" not in clip.metadata
    identity_bytes = [world.setup.device_id.encode(), b"Jane Doe", b"1 Elm St"]
    import pyrage

    from sync.keys import load_identity as _load

    plain = pyrage.decrypt(manifest.path.read_bytes(), [_load(world.agency_dir / "agency-age.txt")])
    for needle in identity_bytes:
        assert needle not in plain


def test_decline_and_rejections_send_nothing_anywhere(world: World, tmp_path: Path) -> None:
    span = world.buffer_span()
    assert span is not None
    window = Window(span[0], span[0] + 1000)
    declined = world.rfa(window)
    world.publish(declined)
    far_away = world.rfa(window, lat=world.setup.lat + 0.02)  # about 2.2 km: outside
    world.publish(far_away)
    wait_for(lambda: declined.id in world.pending_ids(), 20, "request pending")
    assert far_away.id not in world.pending_ids()
    world.decide(declined.id, approve=False)
    wait_for(lambda: declined.id not in world.pending_ids(), 20, "request declined")
    time.sleep(2)
    assert world.uploads.uploads() == []
    assert world.shares() == []
    paired = world.owner.device()
    pairing = world.daemon.ctl("pair").stdout  # asks the running daemon
    assert paired.device_key in pairing and paired.recipient in pairing
    audit = world.daemon.ctl("audit").stdout
    assert declined.id in audit and far_away.id in audit and "outside_area" in audit
    assert world.daemon.ctl("audit", "--verify").returncode == 0
