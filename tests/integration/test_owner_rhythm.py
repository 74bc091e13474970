"""protocol.md §3 measured at a real Mosquitto: however many requests are pending (0-9,
changing while it runs) and however long building a round takes, the sealed owner
messages arrive on the grid of the device's clock, all of one size."""

from __future__ import annotations

import statistics
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pyrage import x25519

from device.identity import DeviceIdentity
from device.owner_channel import OwnerChannel, OwnerTopics, PendingView
from foundation.clock import SystemClock
from sync.anchor import AuditHead
from sync.keys import SigningKey
from tests.device.test_owner_channel import payload_size, request
from tests.fixtures.mosquitto import MosquittoBroker, Publisher

PERIOD = 0.5
ROUNDS = 30


def test_publish_instants_stay_on_the_grid_whatever_is_pending(mosquitto: MosquittoBroker):
    device = DeviceIdentity("porch-cam-01", SigningKey.generate(), x25519.Identity.generate())
    owner = x25519.Identity.generate()
    topics = OwnerTopics.for_device(device.device_id)
    arrivals: list[tuple[float, int, int]] = []  # (monotonic arrival, pending count, size)
    counts: list[int] = []
    lock = threading.Lock()

    spy = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    subscribed = threading.Event()
    spy.on_subscribe = lambda *_a: subscribed.set()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == topics.pending and not msg.retain:
            with lock:
                arrivals.append(
                    (time.monotonic(), counts[len(arrivals)], payload_size(msg.payload))
                )

    spy.on_message = on_message
    spy.connect(mosquitto.host, mosquitto.port, 30)
    spy.loop_start()
    spy.subscribe(topics.pending, qos=1)
    assert subscribed.wait(10)

    views = [request(i, "\\" * 1000) for i in range(9)]
    built = 0

    def pending() -> list[PendingView]:
        # 0..9 pending, changing every round; building costs 15 ms per request, the
        # kind of work that made 1.0's publish instants slip with the pending count
        nonlocal built
        n = (built * 7) % 10
        built += 1
        counts.append(n)
        time.sleep(0.015 * n)
        return views[:n]

    stop = threading.Event()
    try:
        with Publisher(mosquitto, client_id=device.device_id) as client:

            def publish(topic: str, payload: bytes) -> None:
                client.publish(topic, payload, qos=1, retain=True)
                with lock:
                    if len(arrivals) >= ROUNDS:
                        stop.set()

            channel = OwnerChannel(
                publish=publish, topics=topics, recipients=[owner.to_public()], identity=device,
                pending=pending, shares=list, audit_head=lambda: AuditHead(0, "0" * 64, ()),
                clock=SystemClock(), period_s=PERIOD, stop=stop, lead_s=0.2,
            )  # fmt: skip
            thread = threading.Thread(target=channel.run, daemon=True)
            thread.start()
            thread.join(timeout=60)
    finally:
        stop.set()
        spy.loop_stop()
        spy.disconnect()
    assert len(arrivals) >= ROUNDS
    first = arrivals[0][0]
    offsets = [(t - first) - round((t - first) / PERIOD) * PERIOD for t, _n, _s in arrivals]
    # every arrival near its instant (loose: two shared cores), none skipped
    assert [round((t - first) / PERIOD) for t, _n, _s in arrivals] == list(range(len(arrivals)))
    assert max(abs(o) for o in offsets) < 0.1, offsets
    # and the offset does not grow with the pending count: building 9 costs 135 ms, which
    # would show as a 135 ms shift if the work were done at the instant
    by_count = {
        n: [o for o, (_t, m, _s) in zip(offsets, arrivals, strict=True) if m == n] for n in (0, 9)
    }
    assert by_count[0] and by_count[9]
    assert abs(statistics.mean(by_count[9]) - statistics.mean(by_count[0])) < 0.05
    # one size for all
    assert len({size for _t, _n, size in arrivals}) == 1
