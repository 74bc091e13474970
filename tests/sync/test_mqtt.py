"""MqttLink against a real Mosquitto: persistent sessions, manual acks, status and will,
reconnecting after a broker restart, MQTT 5 and 3.1.1."""

from __future__ import annotations

import json
import queue
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sync.errors import MqttSettingsError
from sync.mqtt import Backoff, InboundMessage, MqttLink
from sync.settings import MqttSettings
from tests.fixtures.mosquitto import MosquittoBroker, Publisher, read_retained

FAST = Backoff(initial_s=0.05, cap_s=0.3)
PROBES = (b"probe", b"probes end")  # wait_subscribed's own messages


@contextmanager
def running_link(
    broker: MosquittoBroker | None,
    *,
    client_id: str = "porch-cam-01",
    protocol: int = 5,
    auto_ack: bool = True,
    topics: tuple[str, ...] = ("rfa/v1/cell/9q8yy",),
    settings: MqttSettings | None = None,
    **link_options: Any,
) -> Iterator[tuple[MqttLink, queue.Queue[InboundMessage]]]:
    """A started link to `broker` (or as `settings` say); `link_options`: MqttLink's
    own (ack_delay_s, max_owed_acks)."""
    got: queue.Queue[InboundMessage] = queue.Queue()

    def on_message(msg: InboundMessage) -> None:
        got.put(msg)
        if auto_ack:
            msg.ack()

    stop = threading.Event()
    link = MqttLink(
        settings or MqttSettings(url=broker.url if broker else "", protocol=protocol),
        client_id=client_id,
        status_topic=f"devices/{client_id}/status",
        version="0.1.0",
        subscriptions=topics,
        on_message=on_message,
        stop=stop,
        backoff=FAST,
        **link_options,
    )
    link.start()
    try:
        assert link.wait_connected(10), "the link did not connect"
        # The SUBACK has to be in before a test publishes; a round trip through the
        # broker on our own subscription proves it.
        yield link, got
    finally:
        stop.set()
        link.stop()


def wait_subscribed(link: MqttLink, got: queue.Queue[InboundMessage], pub: Publisher) -> None:
    """Probe until the subscription delivers, then consume every probe still on its way:
    under load a probe can arrive after the next one was sent, and would otherwise turn
    up in the test's own messages. A last marker, delivered in order after the probes
    (one publisher, one topic, QoS 1), says when none is left."""
    for _ in range(100):
        pub.publish("rfa/v1/cell/9q8yy", PROBES[0])
        try:
            msg = got.get(timeout=0.1)
        except queue.Empty:
            continue
        msg.ack()
        pub.publish("rfa/v1/cell/9q8yy", PROBES[1])
        while True:
            msg = got.get(timeout=10)
            msg.ack()
            if msg.payload == PROBES[1]:
                return
    raise AssertionError("subscription never became active")


def drain(got: queue.Queue[InboundMessage], timeout: float) -> list[InboundMessage]:
    out: list[InboundMessage] = []
    try:
        out.append(got.get(timeout=timeout))
        while True:
            out.append(got.get(timeout=0.3))
    except queue.Empty:
        return out


@pytest.mark.parametrize("protocol", [5, 4])
def test_delivery_status_and_persistent_session(mosquitto: MosquittoBroker, protocol: int) -> None:
    with Publisher(mosquitto) as pub:
        with running_link(mosquitto, protocol=protocol) as (link, got):
            wait_subscribed(link, got, pub)
            status = read_retained(mosquitto, "devices/porch-cam-01/status")
            assert status is not None
            assert json.loads(status) == {"state": "online", "version": "0.1.0"}
            pub.publish("rfa/v1/cell/9q8yy", b"hello")
            assert [m.payload for m in drain(got, 5)] == [b"hello"]
            pub.publish("rfa/v1/cell/other", b"not ours")
        # A clean stop publishes offline itself (the will fires only on a crash).
        status = read_retained(mosquitto, "devices/porch-cam-01/status")
        assert status is not None and json.loads(status) == {"state": "offline"}
        # Published while the device is away: the persistent session keeps it.
        pub.publish("rfa/v1/cell/9q8yy", b"while away")
        with running_link(mosquitto, protocol=protocol) as (_link, got):
            assert [m.payload for m in drain(got, 5)] == [b"while away"]


def test_unacked_message_is_redelivered_acked_one_is_not(mosquitto: MosquittoBroker) -> None:
    with Publisher(mosquitto) as pub:
        with running_link(mosquitto, auto_ack=False) as (link, got):
            wait_subscribed(link, got, pub)
            pub.publish("rfa/v1/cell/9q8yy", b"acked")
            pub.publish("rfa/v1/cell/9q8yy", b"not acked")
            first = drain(got, 5)
            assert [m.payload for m in first] == [b"acked", b"not acked"]
            first[0].ack()
            first[0].ack()  # a second ack is harmless
        with running_link(mosquitto) as (_link, got):
            assert [m.payload for m in drain(got, 5)] == [b"not acked"]


def test_survives_broker_restart_and_gets_what_was_queued(mosquitto: MosquittoBroker) -> None:
    with running_link(mosquitto) as (link, got):
        with Publisher(mosquitto) as pub:
            wait_subscribed(link, got, pub)
        mosquitto.restart()
        # Publish before the device is back: only the persisted session can deliver it.
        with Publisher(mosquitto) as pub:
            pub.publish("rfa/v1/cell/9q8yy", b"after restart")
        # The restart can cut the last probes' PUBACKs in flight; QoS 1 then redelivers
        # them (at least once), so only the test's own message is counted.
        after = [m.payload for m in drain(got, 10) if m.payload not in PROBES]
        assert after == [b"after restart"]
        assert link.connected
        assert link.connections >= 2


def test_ack_from_an_old_connection_is_not_sent_on_the_new_one(
    mosquitto: MosquittoBroker,
) -> None:
    with running_link(mosquitto, auto_ack=False) as (link, got):
        with Publisher(mosquitto) as pub:
            wait_subscribed(link, got, pub)
            pub.publish("rfa/v1/cell/9q8yy", b"in flight")
        held = drain(got, 5)
        assert [m.payload for m in held] == [b"in flight"]
        mosquitto.restart()
        redelivered = drain(got, 10)
        assert [m.payload for m in redelivered] == [b"in flight"]
        held[0].ack()  # stale: dropped, so the redelivered copy is still owed an ack
    with running_link(mosquitto) as (_link, got):
        assert [m.payload for m in drain(got, 5)] == [b"in flight"]


def test_connects_after_broker_comes_up_late(tmp_path) -> None:
    broker = MosquittoBroker(tmp_path / "late")
    broker.root.mkdir()
    got: list[InboundMessage] = []
    stop = threading.Event()
    link = MqttLink(
        MqttSettings(url=broker.url),
        client_id="late-cam",
        status_topic="devices/late-cam/status",
        version="0.1.0",
        subscriptions=(),
        on_message=got.append,
        stop=stop,
        backoff=FAST,
    )
    link.start()
    try:
        assert not link.wait_connected(0.5)
        broker.start()
        assert link.wait_connected(10)
    finally:
        stop.set()  # the stop event alone shuts the link down
        link.stop()
        broker.stop()
    assert not link.connected


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(initial_s=1.0, cap_s=60.0)
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(60.0, 2.0**attempt)
        delays = {backoff.delay(attempt, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, not lockstep


def test_settings_parse_urls_and_refuse_bad_ones(tmp_path) -> None:
    assert MqttSettings(url="mqtt://broker.example:1884").endpoint() == (
        "broker.example",
        1884,
        False,
    )
    assert MqttSettings(url="mqtts://broker.example").endpoint() == ("broker.example", 8883, True)
    with pytest.raises(MqttSettingsError):
        MqttSettings(url="http://broker.example").endpoint()
    link = MqttLink(
        MqttSettings(url="mqtt://127.0.0.1:1", username="u", password_file=tmp_path / "missing"),
        client_id="x",
        status_topic="devices/x/status",
        version="0",
        subscriptions=(),
        on_message=lambda m: None,
        stop=threading.Event(),
    )
    with pytest.raises(MqttSettingsError, match="password file"):
        link.start()
