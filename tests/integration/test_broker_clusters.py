"""The whole loop on each broker the README names, each started by the test on free
loopback ports: Mosquitto (MQTT 5), a three-node NATS cluster with JetStream and MQTT
(3.1.1), RabbitMQ with its MQTT plugin (3.1.1). The device is given the broker's URLs
and `mqtt.protocol: auto`; the agency and the owner use the reference tools, which fall
back to 3.1.1 the same way.

And a NATS node lost mid-flow, five times over: the device's node is killed while
requests and a decision are in flight; the device moves to another node, its session
and the retained owner messages survive in JetStream, and nothing is lost or acted on
twice."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cloud.broker import Incoming, listen
from cloud.loopback import TusServer
from foundation.times import Window
from tests.fixtures.brokers import NatsCluster
from tests.fixtures.daemon import World, make_world, start_and_pair, wait_for

pytestmark = pytest.mark.slow

VERSION = {"mosquitto": "5", "nats_cluster": "3.1.1", "rabbitmq": "3.1.1"}


@contextmanager
def world_on(root: Path, broker: Any, uploads: TusServer) -> Iterator[World]:
    world = make_world(
        root,
        broker,
        uploads,
        extra={"mqtt": {"url": list(broker.urls), "protocol": "auto"}},
    )
    start_and_pair(world)
    try:
        wait_for(world.buffer_span, 30, "footage in the buffer")
        yield world
    finally:
        world.daemon.stop()


@contextmanager
def spying(url: str, topics: list[str]) -> Iterator[list[tuple[float, Incoming]]]:
    """What a subscriber on `topics` receives (the reference tools' own listener)."""
    seen: list[tuple[float, Incoming]] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=listen,
        args=(url, topics, lambda m: seen.append((time.monotonic(), m)), stop),
        daemon=True,
    )
    thread.start()
    time.sleep(1.0)  # subscribed (listen waits for its SUBACK before it blocks)
    try:
        yield seen
    finally:
        stop.set()
        thread.join(15)


def audit(world: World) -> list[dict[str, Any]]:
    path = next(world.setup.root.rglob("audit.log"))
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def events_for(entries: list[dict[str, Any]], rfa_id: str) -> Counter[str]:
    return Counter(e["event"] for e in entries if e["fields"].get("rfa_id") == rfa_id)


@pytest.mark.parametrize("broker_name", ["mosquitto", "nats_cluster", "rabbitmq"])
def test_the_whole_loop(
    broker_name: str, request: pytest.FixtureRequest, tmp_path: Path, tus_server: TusServer
) -> None:
    broker = request.getfixturevalue(broker_name)
    with world_on(tmp_path, broker, tus_server) as world:
        status = world.daemon.wait_until(lambda s: s.get("broker_url"), timeout=30)
        assert status["mqtt_version"] == VERSION[broker_name]
        time.sleep(3)  # footage to ask about
        span = world.buffer_span()
        assert span is not None
        window = Window(span[0] + 200, span[0] + 2200)
        approved = world.rfa(window, case_number="2026-000001")
        declined = world.rfa(window, case_number="2026-000002")
        refused = world.rfa(window, case_number="2026-000003", lat=world.setup.lat + 0.02)
        with spying(broker.url, ["rfa/v1/cell/+"]) as carried:
            for rfa in (approved, declined, refused):
                world.publish(rfa)  # a copy to every cell the circle touches
            wait_for(lambda: {approved.id, declined.id} <= set(world.pending_ids()), 30, "pending")
        # the broker carried each request to every cell its circle touches, the device's
        # among them; the device took the one copy on its own cell
        for rfa in (approved, declined, refused):
            copies = [m.topic for _, m in carried if m.payload == rfa.envelope]
            assert sorted(copies) == sorted(rfa.topics), rfa.id
        assert refused.id not in world.pending_ids()
        # the owner sees both in the sealed channel (World.decide waits for that), decides
        world.decide(approved.id, approve=True)
        world.decide(declined.id, approve=False)
        world.wait_share(approved.id)
        report, _, _ = world.verify(approved.id)
        assert report.window_approved == window
        wait_for(lambda: declined.id not in world.pending_ids(), 20, "the decline recorded")
        assert {u.metadata["rfa_id"] for u in world.uploads.uploads()} == {approved.id}
        entries = audit(world)
        assert events_for(entries, approved.id)["decision"] == 1
        assert events_for(entries, declined.id)["decision"] == 1
        assert [e["fields"]["reason"] for e in entries if e["event"] == "rfa_rejected"] == [
            "outside_area"
        ]
        assert world.daemon.ctl("audit", "--verify").returncode == 0


ROUNDS = 5


def test_a_nats_node_lost_mid_flow_five_times(
    nats_cluster: NatsCluster, tmp_path: Path, tus_server: TusServer
) -> None:
    """Each round: the device's node is SIGKILLed; while it is down the agency publishes
    two requests and the owner a decision on the last round's request (through another
    node); the device reconnects to another node of its URL list; each request becomes
    pending exactly once and the decision is acted on exactly once; then the dead node
    comes back and the next round kills whichever node the device is on."""
    cluster = nats_cluster
    with world_on(tmp_path, cluster, tus_server) as world:
        device_id = world.setup.device_id
        owner_topics = [f"devices/{device_id}/owner/pending", f"devices/{device_id}/owner/shares"]
        time.sleep(3)
        span = world.buffer_span()
        assert span is not None
        window = Window(span[0] + 200, span[0] + 1800)
        published: list[str] = []
        decided: dict[str, bool] = {}
        undecided = world.rfa(window, case_number="2026-100000")
        world.publish(undecided)
        published.append(undecided.id)
        wait_for(lambda: undecided.id in world.pending_ids(), 30, "the first request pending")
        timings = []
        for n in range(ROUNDS):
            started = time.monotonic()
            status = world.daemon.wait_until(lambda s: s.get("broker_url"), timeout=60)
            lost = cluster.node_at(status["broker_url"])
            world.see_pending(undecided.id)  # the owner's app saw it before the node dies
            lost.kill()
            # in flight while the device has no broker: the decision and two requests
            approve = n % 2 == 0
            world.decide(undecided.id, approve=approve)
            decided[undecided.id] = approve
            fresh = [world.rfa(window, case_number=f"2026-{n}0000{k}") for k in (1, 2)]
            for rfa in fresh:
                world.publish(rfa)
                published.append(rfa.id)
            # the retained owner messages survive on the other nodes
            with spying(cluster.url, owner_topics) as owner_seen:
                time.sleep(0.5)
                retained = {m.topic for _, m in owner_seen if m.retain}
            assert retained == set(owner_topics), retained
            moved = world.daemon.wait_until(
                lambda s, dead=lost.url: s.get("broker_url") not in (None, dead), timeout=60
            )
            assert moved["broker_url"] in cluster.urls
            wait_for(
                lambda f=fresh: {r.id for r in f} <= set(world.pending_ids()),
                60,
                "the requests published during the outage pending",
            )
            wait_for(
                lambda r=undecided.id: r not in world.pending_ids(), 60, "the decision acted on"
            )
            # the owner channel keeps its grid on the new node: messages come again, one
            # a period (1 s), no backlog of the outage's
            with spying(cluster.url, owner_topics[:1]) as fresh_owner:
                wait_for(
                    lambda s=fresh_owner: len([m for m in s if not m[1].retain]) >= 3,
                    20,
                    "owner messages",
                )
            times = [t for t, m in fresh_owner if not m.retain]
            assert all(b - a > 0.5 for a, b in zip(times, times[1:], strict=False)), times
            lost.start()
            cluster.wait_ready()
            undecided = fresh[0]
            timings.append(time.monotonic() - started)
        # nothing lost, nothing twice
        for rfa_id, approve in decided.items():
            if approve:
                world.wait_share(rfa_id)
        entries = audit(world)
        for rfa_id in published:
            assert events_for(entries, rfa_id)["rfa_accepted"] == 1, rfa_id
        for rfa_id in decided:
            assert events_for(entries, rfa_id)["decision"] == 1, rfa_id
        shared = Counter(u.metadata["rfa_id"] for u in world.uploads.uploads())
        assert shared == {rfa_id: 2 for rfa_id, approve in decided.items() if approve}
        for rfa_id, approve in decided.items():
            if approve:
                world.verify(rfa_id)
        assert world.daemon.ctl("audit", "--verify").returncode == 0
        print(f"node-loss rounds took {', '.join(f'{t:.1f}' for t in timings)} s")
