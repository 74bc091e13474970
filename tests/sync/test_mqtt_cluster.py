"""MqttLink with a list of broker URLs and `protocol: auto`, against real Mosquittos: it
moves to the next node when its node goes away, keeps its session there (one broker
restarted on the same data stands in for a node here; the NATS cluster's own test is in
tests/integration/test_broker_clusters.py), and over 3.1.1 it holds no more
unacknowledged messages than its receive_maximum (the broker is told nothing)."""

from __future__ import annotations

import queue
from pathlib import Path

from sync.settings import AUTO, MQTT311, MqttSettings
from tests.fixtures.mosquitto import MosquittoBroker, Publisher, free_port
from tests.sync.test_mqtt import running_link, wait_subscribed

TOPIC = "rfa/v1/cell/9q8yy"


def test_a_dead_first_url_is_passed_over_and_auto_speaks_5_to_mosquitto(
    mosquitto: MosquittoBroker,
) -> None:
    dead = [f"mqtt://127.0.0.1:{free_port()}" for _ in range(2)]  # nothing listens there
    settings = MqttSettings(urls=(dead[0], mosquitto.url, dead[1]), protocol=AUTO)
    with running_link(None, settings=settings) as (link, _got):
        assert link.broker == (mosquitto.url, "5")


def test_the_link_moves_to_the_other_node_and_its_session_follows(tmp_path: Path) -> None:
    """Two Mosquittos sharing nothing but a persistence file stand for a cluster's nodes:
    node b starts from node a's saved state once a is stopped, as a replicated session
    store would have it. The device, told both URLs, finds b and gets what was queued."""
    a = MosquittoBroker(tmp_path / "a")
    a.start()
    b = MosquittoBroker(tmp_path / "b")
    settings = MqttSettings(urls=(a.url, b.url), protocol=AUTO)
    try:
        with running_link(None, settings=settings) as (link, got):
            with Publisher(a) as pub:
                wait_subscribed(link, got, pub)
                pub.publish(TOPIC, b"before")
            assert got.get(timeout=10).payload == b"before"
        # the device went offline; a request is queued for it, then node a goes away
        with Publisher(a) as pub:
            pub.publish(TOPIC, b"while away")
        a.stop()  # writes the session with its queued message
        b.data_dir.mkdir(parents=True, exist_ok=True)
        (b.data_dir / "mosquitto.db").write_bytes((a.data_dir / "mosquitto.db").read_bytes())
        b.start()
        with running_link(None, settings=settings) as (link, got):
            assert link.broker == (b.url, "5")
            assert got.get(timeout=15).payload == b"while away"
    finally:
        a.stop()
        b.stop()


def test_the_device_stops_reading_at_its_owed_acks_limit(mosquitto: MosquittoBroker) -> None:
    """Nothing acknowledges: the broker (3.1.1, told nothing, its own window 20) would
    send 20; a device whose limit is 4 (sync.acks.MAX_OWED_ACKS in the daemon, 4,096)
    stops reading at 4, and the rest stays at the broker until acks make room."""
    settings = MqttSettings(url=mosquitto.url, protocol=MQTT311)
    with (
        running_link(None, settings=settings, auto_ack=False, max_owed_acks=4) as (link, got),
        Publisher(mosquitto) as pub,
    ):
        assert link.broker == (mosquitto.url, "3.1.1")
        wait_subscribed(link, got, pub)
        for n in range(30):
            pub.publish(TOPIC, b"m%d" % n)
        held = [got.get(timeout=10) for _ in range(4)]
        try:
            extra = got.get(timeout=1.5)
        except queue.Empty:
            extra = None
        assert extra is None, "a fifth message was read with four unacknowledged"
        for msg in held:
            msg.ack()
        seen = [m.payload for m in held]
        while len(seen) < 30:
            msg = got.get(timeout=10)
            msg.ack()
            seen.append(msg.payload)
        assert seen == [b"m%d" % n for n in range(30)]  # in order, none lost
