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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cloud.broker import BrokerError, Incoming, listen
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
        extra={"mqtt": {"url": None, "urls": list(broker.urls), "protocol": "auto"}},
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
    failed: list[BaseException] = []

    def run() -> None:
        try:
            listen(url, topics, lambda m: seen.append((time.monotonic(), m)), stop)
        except BrokerError as exc:  # e.g. NATS while a stream elects a new leader
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(1.0)  # subscribed (listen waits for its SUBACK before it blocks)
    try:
        yield seen
    finally:
        stop.set()
        thread.join(15)
    if failed:
        raise failed[0]


# nats-server 2.9 on loopback took up to about 25 s to elect a new leader for a stream
# whose leader was on the lost node; meanwhile QoS 1 publishes time out and it drops the
# clients that sent them (the device among them, which keeps trying its URLs).
RECOVERY_S = 120


def retrying(action: Callable[[], object], what: str, timeout: float = RECOVERY_S) -> None:
    """An agency's or owner's tool run again until the cluster answers: while a stream
    elects a new leader after a node's loss, NATS answers nothing for some seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: the cluster did not answer in {timeout} s") from None
            time.sleep(0.5)


def retained_topics(
    cluster: NatsCluster, topics: list[str], timeout: float = RECOVERY_S
) -> set[str]:
    """The topics of `topics` that hold a retained message, read from a running node;
    asked again while the cluster recovers (a subscription is refused, or answered
    without the retained messages, until the streams have their new leaders)."""
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while found != set(topics) and time.monotonic() < deadline:
        found = set(retained_payloads(cluster, topics))
    return found


def retained_payloads(cluster: NatsCluster, topics: list[str]) -> dict[str, bytes]:
    try:
        with spying(cluster.url, topics) as seen:
            time.sleep(0.5)
    except BrokerError:
        return {}
    return {m.topic: m.payload for _, m in seen if m.retain}


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
            retrying(lambda r=undecided.id, a=approve: world.decide(r, approve=a), "decide")
            decided[undecided.id] = approve
            fresh = [world.rfa(window, case_number=f"2026-{n}0000{k}") for k in (1, 2)]
            for rfa in fresh:
                retrying(lambda r=rfa: world.publish(r), "publish")
                published.append(rfa.id)
            # the retained owner messages survive on the other nodes
            retained = retained_topics(cluster, owner_topics)
            assert retained == set(owner_topics), retained
            moved = world.daemon.wait_until(
                lambda s, dead=lost.url: s.get("broker_url") not in (None, dead),
                timeout=RECOVERY_S,
            )
            assert moved["broker_url"] in cluster.urls
            wait_for(
                lambda f=fresh: {r.id for r in f} <= set(world.pending_ids()),
                RECOVERY_S,
                "the requests published during the outage pending",
            )
            wait_for(
                lambda r=undecided.id: r not in world.pending_ids(),
                RECOVERY_S,
                "the decision acted on",
            )
            # the owner channel goes on from the new node: a newer sealed message replaces
            # the retained one (each is the same size; its grid is the device's own clock)
            before = retained_payloads(cluster, owner_topics[:1])
            wait_for(
                lambda b=before: retained_payloads(cluster, owner_topics[:1]) not in ({}, b),
                RECOVERY_S,
                "a newer owner message",
            )
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
