"""What the daemon keeps for a broker (protocol.md §3, 1.2), measured where the broker
stands: a `doorbelld` process with its memory sampled (psutil on its pid) against a fake
broker that floods QoS 2 and one that never acknowledges the owner messages
(tests/sync/fake_broker.py, which records every PUBLISH at its socket), and against a
real Mosquitto that goes down for a while and comes back.

Before 1.2 the daemon kept every QoS 2 message waiting for its PUBREL (6,000 of 65 KB
took it from 62 to 482 MB), every unacknowledged owner message, and every owner message
published while offline, and sent the whole backlog at once on reconnect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.loopback import MosquittoBroker
from foundation.wire import owner_topic, status_topic
from tests.fixtures.daemon import World, make_world
from tests.integration.faults import ask, settle
from tests.integration.test_hostile_peers import RSS_BOUND, RssWatch, buffer_end, rss_growth
from tests.sync.fake_broker import FakeBroker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DEVICE = "porch-cam-01"
PENDING, SHARES = owner_topic(DEVICE, "pending"), owner_topic(DEVICE, "shares")
OWNER_TOPICS = (PENDING, SHARES)
FLOOD_COUNT, FLOOD_BYTES = 6_000, 60_000


def connected(world: World) -> bool:
    return bool(ask(world, "status")["status"]["broker"] == "connected")


def off_grid(times: list[float], origin: float, period: float) -> list[float]:
    """How far each time lies from the grid origin + k * period."""
    return [abs((t - origin) - round((t - origin) / period) * period) for t in times]


@contextmanager
def daemon_against(
    broker: FakeBroker, root: Path, **device: Any
) -> Iterator[tuple[World, RssWatch]]:
    """A running `doorbelld` connected to `broker`, its RSS watched; stops both after."""
    world = make_world(root, broker, None, **device)  # type: ignore[arg-type]
    world.daemon.start()
    assert world.daemon.proc is not None
    watch = RssWatch(world.daemon.proc.pid)
    try:
        settle(lambda: connected(world), world, timeout=30, what="a connection")
        yield world, watch
    finally:
        watch.close()
        world.daemon.stop()
        broker.close()


def test_a_qos2_flood_is_refused_unstored_and_the_daemon_reconnects(tmp_path: Path) -> None:
    """6,000 QoS 2 PUBLISHes of 60 KB on every connection, never a PUBREL: the daemon
    hangs up on the first of each, takes none in (no PUBREC), keeps recording, its
    memory stays within the bound, and once the broker behaves it connects and
    publishes again."""
    broker = FakeBroker(flood_count=FLOOD_COUNT, flood_bytes=FLOOD_BYTES)
    with daemon_against(broker, tmp_path) as (world, watch):
        settle(lambda: broker.topic_arrivals(PENDING), world, timeout=30, what="owner rounds")
        baseline = watch.baseline()
        recorded_before = buffer_end(world)
        broker.flood.set()
        broker.drop_connections()
        settle(lambda: len(broker.floods) >= 3, world, timeout=90,
               what="three floods (one per connection)")  # fmt: skip
        time.sleep(2)
        peak = watch.peak
        broker.flood.clear()
        floods = list(broker.floods)
        connections = broker.connections
        settle(lambda: broker.connections > connections and connected(world), world,
               timeout=60, what="a clean reconnect")  # fmt: skip
        back = broker.connections
        settle(lambda: [a for a in broker.topic_arrivals(PENDING) if a.connection == back],
               world, timeout=30, what="owner messages on the new connection")  # fmt: skip
        status = ask(world, "status")["status"]
        recorded_after = buffer_end(world)
    print(
        rss_growth(baseline, peak) + f" over {len(floods)} floods of"
        f" {FLOOD_COUNT} x {FLOOD_BYTES} B; written before the hang-up: {floods};"
        f" PUBRECs: {broker.pubrecs}"
    )
    assert broker.pubrecs == 0  # not one QoS 2 message taken in
    assert all(ended == "hung up" and written < FLOOD_COUNT for ended, written in floods)
    assert peak - baseline < RSS_BOUND
    assert status["recording"] is True
    assert recorded_after > recorded_before  # the camera kept going throughout
    log = world.daemon.log_path.read_text(errors="replace")
    refusals = log.count("a QoS 2 PUBLISH to a QoS 1 subscription")
    assert len(floods) <= refusals <= len(floods) + 1  # one line per connection, no flood
    assert broker.receive_maximums and set(broker.receive_maximums) == {16}


def test_unacknowledged_owner_messages_are_not_piled_up(tmp_path: Path) -> None:
    """A broker that never PUBACKs: over 100 rounds (0.2 s) the broker's socket sees one
    message per owner topic, the daemon's memory stays within the bound, and once the
    broker acknowledges again the owner topics come back at their rhythm."""
    period = 0.2
    broker = FakeBroker()
    broker.puback.clear()
    with daemon_against(broker, tmp_path, sync_seconds=period) as (world, watch):
        settle(lambda: all(broker.topic_arrivals(t) for t in OWNER_TOPICS), world,
               timeout=30, what="the first owner messages")  # fmt: skip
        baseline = watch.baseline()
        time.sleep(100 * period)
        peak = watch.peak
        held = {t: len(broker.topic_arrivals(t)) for t in OWNER_TOPICS}
        dropped = ask(world, "status")["status"]["publishes_dropped"]
        before = {t: len(broker.topic_arrivals(t)) for t in OWNER_TOPICS}
        broker.puback.set()
        broker.ack_outstanding()
        time.sleep(30 * period)
        resumed = {t: broker.topic_arrivals(t)[before[t] :] for t in OWNER_TOPICS}
    print(
        rss_growth(baseline, peak) + f" over 100 unacknowledged rounds;"
        f" at the broker: {held}; held back by the daemon: {dropped}"
    )
    assert held == {PENDING: 1, SHARES: 1}  # one outstanding per topic, ever
    assert broker.connections == 1
    assert dropped["unacknowledged"] >= 2 * 80
    assert peak - baseline < RSS_BOUND
    for topic, arrivals in resumed.items():  # the rhythm is back (its grid: the next test)
        assert 20 <= len(arrivals) <= 32, (topic, len(arrivals))
        assert not any(a.dup for a in arrivals)


class Spy:
    """Subscribes to everything the device publishes, through a real Mosquitto, and
    comes back after the broker does; records live (not retained) arrivals."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.arrivals: list[tuple[str, float, bytes]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.2)  # type: ignore[arg-type]
        self._client.on_connect = lambda c, *_a: c.subscribe(f"devices/{DEVICE}/#", qos=1)
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port, 30)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if not msg.retain:
            with self._lock:
                self.arrivals.append((msg.topic, time.monotonic(), bytes(msg.payload)))

    def times(self, topic: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self._lock:
            return [t for name, t, _p in self.arrivals if name == topic and since <= t < until]

    def online_since(self, since: float) -> float | None:
        with self._lock:
            return next((t for name, t, payload in self.arrivals if name == status_topic(DEVICE)
                         and t >= since and b'"online"' in payload), None)  # fmt: skip

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_after_an_outage_no_backlog_and_the_publishes_fall_on_the_grid(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Mosquitto down for 8 s (16 rounds at 0.5 s) and back: in the first second after
    the device's reconnect at most one grid instant's worth of owner messages reaches
    the broker (before 1.2, the 16 queued rounds came at once), and every later one
    falls on the grid the device kept before the outage."""
    period, outage = 0.5, 8.0
    world = make_world(tmp_path, mosquitto, None, sync_seconds=period)  # type: ignore[arg-type]
    world.daemon.start()
    spy = Spy(mosquitto)
    try:
        settle(lambda: len(spy.times(PENDING)) >= 6, world, timeout=60, what="owner rounds")
        origin = spy.times(PENDING)[-1]
        before = {t: spy.times(t) for t in OWNER_TOPICS}
        mosquitto.stop()
        time.sleep(outage)
        restarted = time.monotonic()
        mosquitto.start()
        back = settle(lambda: spy.online_since(restarted), world, timeout=60,
                      what="the device's online status after the restart")  # fmt: skip
        time.sleep(6.0)
        after = {t: spy.times(t, since=back) for t in OWNER_TOPICS}
        first_second = {t: len(spy.times(t, since=back, until=back + 1.0)) for t in OWNER_TOPICS}
        dropped = ask(world, "status")["status"]["publishes_dropped"]
    finally:
        spy.close()
        world.daemon.stop()
    print(
        f"outage {outage} s at a {period} s period; owner messages in the first second"
        f" after the reconnect: {first_second}; in the next 6 s:"
        f" { {t: len(v) for t, v in after.items()} }; dropped while offline: {dropped}"
    )
    assert all(len(v) >= 6 for v in before.values())
    assert all(n <= 3 for n in first_second.values()), first_second  # no burst
    for topic, times in after.items():
        assert 8 <= len(times) <= 14, (topic, len(times))  # the rhythm, not a backlog
        assert max(off_grid(times, origin, period)) < 0.1, (topic, off_grid(times, origin, period))
    assert dropped["offline"] >= 2 * 8
