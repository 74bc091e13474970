"""What MqttLink keeps for a broker (protocol.md §3, 1.2), measured at a fake broker's
socket (tests/sync/fake_broker.py): a PUBLISH above the subscribed QoS ends the
connection unstored; the CONNECT announces a Receive Maximum of at most 16; at most one
unacknowledged message per topic; nothing queued while offline; no backlog resent after
a reconnect."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from foundation.wire import MAX_RECEIVE_MAXIMUM
from sync.errors import MqttSettingsError
from sync.mqtt import Backoff, InboundMessage, MqttLink
from sync.settings import MqttSettings
from tests.sync.fake_broker import FakeBroker

FAST = Backoff(initial_s=0.05, cap_s=0.3)
STATUS = "devices/porch-cam-01/status"
PENDING = "devices/porch-cam-01/owner/pending"
SHARES = "devices/porch-cam-01/owner/shares"


def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


@contextmanager
def link_to(
    broker: FakeBroker, got: list[InboundMessage] | None = None, **settings: Any
) -> Iterator[MqttLink]:
    stop = threading.Event()
    link = MqttLink(
        MqttSettings(url=broker.url, **settings),
        client_id="porch-cam-01",
        status_topic=STATUS,
        version="0.1.0",
        subscriptions=["rfa/v1/cell/9q8yy"],
        on_message=(got.append if got is not None else lambda _m: None),
        stop=stop,
        backoff=FAST,
    )
    link.start()
    try:
        assert link.wait_connected(10)
        yield link
    finally:
        stop.set()
        link.stop(timeout=1)
        broker.close()


def test_a_qos2_publish_ends_the_connection_unstored_and_the_link_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker(flood_count=200, flood_bytes=1000)
    got: list[InboundMessage] = []
    with caplog.at_level(logging.WARNING, logger="sync.mqtt"), link_to(broker, got) as link:
        broker.flood.set()
        broker.drop_connections()
        # the device's own count: a flood the broker finished writing into the socket's
        # buffer may not have been read yet when the broker counts it
        until(lambda: link.refused_packets >= 3)
        broker.flood.clear()
        connections = broker.connections
        until(lambda: broker.connections > connections and link.connected)
        time.sleep(0.3)
        assert link.connected  # and it stays up once the broker behaves
    assert broker.pubrecs == 0  # not one QoS 2 message taken in
    assert got == []
    refused = link.refused_packets
    assert refused >= 3
    refusals = [r for r in caplog.records if "QoS 2 PUBLISH" in r.getMessage()]
    assert len(refusals) == refused  # one line each, no flood


def test_refusals_grow_the_reconnect_delay() -> None:
    """A broker that accepts every connection and then breaks the protocol does not get
    a reconnect per backoff floor: the delays between its connections grow."""
    broker = FakeBroker(flood_count=1, flood_bytes=10)
    slow = Backoff(initial_s=0.2, cap_s=5.0)
    stop = threading.Event()
    link = MqttLink(MqttSettings(url=broker.url), client_id="porch-cam-01", status_topic=STATUS,
                    version="0.1.0", subscriptions=["rfa/v1/cell/9q8yy"],
                    on_message=lambda _m: None, stop=stop, backoff=slow)  # fmt: skip
    broker.flood.set()
    link.start()
    try:
        until(lambda: broker.connections >= 5, timeout=30)
        starts = list(broker.connected_at)
    finally:
        stop.set()
        link.stop(timeout=1)
        broker.close()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # attempt n waits between half and all of 0.2 * 2**n: the fourth gap is at least 0.8 s
    assert len(gaps) >= 4 and gaps[3] >= 0.8, gaps


def test_the_connect_announces_a_receive_maximum_of_at_most_16() -> None:
    broker = FakeBroker()
    with link_to(broker):
        pass
    small = FakeBroker()
    with link_to(small, receive_maximum=4):
        pass
    assert broker.receive_maximums == [MAX_RECEIVE_MAXIMUM] == [16]
    assert small.receive_maximums == [4]


@pytest.mark.parametrize("value", [0, MAX_RECEIVE_MAXIMUM + 1, 64, 65535])
def test_settings_refuse_a_receive_maximum_out_of_range(value: int) -> None:
    with pytest.raises(MqttSettingsError, match="receive_maximum"):
        MqttSettings(url="mqtt://127.0.0.1", receive_maximum=value)


def test_one_unacknowledged_message_per_topic_and_the_newest_after_the_ack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    broker.puback.clear()
    with caplog.at_level(logging.INFO, logger="sync.mqtt"), link_to(broker) as link:
        sent = [link.publish_latest(topic, b"round %d" % i) for i in range(30)
                for topic in (PENDING, SHARES)]  # fmt: skip
        time.sleep(0.3)
        assert [len(broker.topic_arrivals(t)) for t in (PENDING, SHARES, STATUS)] == [1, 1, 1]
        assert sent[:2] == [True, True] and not any(sent[2:])
        assert link.dropped.unacknowledged == 58 and link.dropped.offline == 0
        broker.ack_outstanding()
        until(lambda: link.publish_latest(PENDING, b"newest"))
        until(lambda: len(broker.topic_arrivals(PENDING)) == 2)
    held = [r for r in caplog.records if "holding the next ones back" in r.getMessage()]
    assert len(held) == 2  # one line per topic, not one per skipped round


def test_nothing_is_queued_offline_and_no_backlog_is_resent_after_a_reconnect() -> None:
    broker = FakeBroker()
    broker.puback.clear()
    with link_to(broker) as link:
        assert link.publish_latest(PENDING, b"unacknowledged when the line drops")
        until(lambda: broker.topic_arrivals(PENDING))
        broker.puback.set()
        broker.drop_connections()
        until(lambda: not link.connected)
        offline = [link.publish_latest(PENDING, b"while offline %d" % i) for i in range(20)]
        until(lambda: link.connected and broker.connections == 2)
        time.sleep(0.5)  # paho would have resent its backlog by now
        second = [a for a in broker.arrivals if a.connection == 2]
        assert link.publish_latest(PENDING, b"on the grid again")
        until(lambda: len(broker.topic_arrivals(PENDING)) == 2)
    assert not any(offline) and link.dropped.offline >= 20
    assert [a.topic for a in second] == [STATUS]  # only the fresh online status
    assert not any(a.dup for a in broker.arrivals)  # nothing of the first connection resent
