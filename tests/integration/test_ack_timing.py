"""protocol.md §3 (revision 1.2), measured where the broker stands: a real doorbelld
behind an MQTT-aware relay to a real Mosquitto, its every fsync/fdatasync 10 ms slower
(an SD card; tests/fixtures/slow_fsync.c preloaded), acknowledges every message whose
signature verified 2.0 s after the broker sent it, whatever the outcome, so that no
threshold on the delay tells an approval from a denial, an accepted request from one
refused after its signature verified (outside the area), a full pending list or a pause
from an accepted request, better than chance does.

Separability: for two groups of delays, the best threshold rule ("at most t is group
A", or the reverse) is scored by its balanced accuracy, which equals (1 + D) / 2 for the
two-sample Kolmogorov-Smirnov statistic D. Even two groups drawn from one distribution
score above 0.5 (with 12 + 12 samples chance alone reaches 0.75 now and then), so the
margin is what chance alone stays below: the 99.9th percentile of the same score over
random relabellings of the pooled delays (a permutation test at 0.1 % per comparison,
so the four comparisons fail by chance in under 0.5 % of runs). The 1.1 leak (approve
87 ms against deny 65 ms, fully apart) scores 1.0.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cloud.broker import Outgoing, publish_messages
from cloud.loopback import DaemonProcess, MosquittoBroker, TusServer, free_port
from cloud.owner import decision_payload, seal_decision
from foundation import wire
from foundation.times import Window
from sync.geo import cell_of
from tests.fixtures.daemon import World, make_world, now_ms, start_and_pair, wait_for
from tests.fixtures.mqtt_relay import MqttRelay
from tests.fixtures.slow_fsync import build_slow_fsync, slow_fsync_env
from tests.integration.console_kit import signed_in

FSYNC_MS = 10.0
MEDIAN_TOLERANCE_S = 0.050  # protocol.md §3: within 50 ms on an unloaded device
ROUNDS = 3  # 4 + 6 accepted, 4 outside, 4 full, 4 paused, 5 approvals, 5 denials each
PERMUTATIONS = 4000
ALPHA = 0.001
SETTLE_S = 1.0  # a pause before a batch compared with one sent from rest


def best_threshold_accuracy(a: list[float], b: list[float]) -> float:
    """The balanced accuracy of the best threshold separating `a` from `b`."""
    points = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    below_a = below_b = 0
    best = 0.0
    for n, (value, group) in enumerate(points):
        if group == 0:
            below_a += 1
        else:
            below_b += 1
        if n + 1 < len(points) and points[n + 1][0] == value:
            continue  # a threshold cannot split equal values
        best = max(best, abs(below_a / len(a) - below_b / len(b)))
    return 0.5 + best / 2


def chance_bound(a: list[float], b: list[float], rng: random.Random) -> float:
    """What chance alone stays below (1 - ALPHA of random relabellings)."""
    pooled = a + b
    scores = []
    for _ in range(PERMUTATIONS):
        rng.shuffle(pooled)
        scores.append(best_threshold_accuracy(pooled[: len(a)], pooled[len(a) :]))
    scores.sort()
    return scores[int((1 - ALPHA) * len(scores)) - 1]


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class Sampler:
    """Publishes labelled batches straight to the broker and waits until the relay has
    timed every one of them."""

    def __init__(self, world: World, relay: MqttRelay) -> None:
        self.world, self.relay = world, relay
        self.cell_topic = wire.rfa_topic(cell_of(world.setup.lat, world.setup.lon))
        self.decision_topic = wire.owner_topic(world.setup.device_id, "decision")
        self.window = Window(now_ms() - 2 * 3_600_000, now_ms() - 3_600_000)
        self.labels: dict[str, str] = {}
        self.cases = 0

    def request(self, group: str, **changes: object) -> tuple[str, Outgoing]:
        self.cases += 1  # one case each: at most two requests per case (§4 rule 12)
        rfa = self.world.rfa(self.window, case_number=f"ack-{self.cases}", **changes)
        return rfa.id, self.labelled(group, Outgoing(self.cell_topic, rfa.envelope))

    def decision(self, group: str, rfa_id: str, *, approve: bool) -> Outgoing:
        owner = self.world.owner
        payload = decision_payload(
            device_id=self.world.setup.device_id,
            rfa_id=rfa_id,
            approve=approve,
            window=None,
            share_contact=True,
            now_ms=now_ms(),
        )
        sealed = seal_decision(payload, owner.signing_key(), owner.device())
        return self.labelled(group, Outgoing(self.decision_topic, sealed))

    def junk(self, group: str, n: int) -> Outgoing:
        return self.labelled(group, Outgoing(self.cell_topic, f"junk {n} {now_ms()}".encode()))

    def labelled(self, group: str, message: Outgoing) -> Outgoing:
        self.labels[digest(message.payload)] = group
        return message

    def send(self, batch: list[Outgoing]) -> None:
        publish_messages(self.world.broker.url, batch)
        wanted = {digest(m.payload) for m in batch}
        wait_for(
            lambda: wanted <= {a.payload_sha256 for a in self.relay.acknowledged()},
            30,
            "the device's acknowledgements of a batch",
        )

    def delays(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for ack in self.relay.acknowledged():
            group = self.labels.get(ack.payload_sha256)
            if group is not None:
                out[group].append(ack.delay)
        return out


@pytest.mark.slow
def test_no_outcome_shows_in_the_acknowledgement_time(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    shim = build_slow_fsync(tmp_path / "shim")
    if shim is None:
        pytest.skip("no C compiler (cc) to build the slow-fsync shim")
    relay = MqttRelay((mosquitto.host, mosquitto.port))
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        sync_seconds=300.0,  # the protocol's default rhythm
        extra={"console": {"listen": f"127.0.0.1:{free_port()}"}},
    )
    world.setup = replace(world.setup, broker_url=relay.url)  # the device talks via the relay
    world.daemon = DaemonProcess(world.setup.write(), env=slow_fsync_env(shim, FSYNC_MS))
    try:
        start_and_pair(world)
        console = signed_in(world)
        sampler = Sampler(world, relay)
        started = time.monotonic()
        # Subscribed once a junk probe comes back acknowledged; alone, at once.
        wait_for(lambda: _probe(sampler), 30, "the device's subscription via the relay")
        run_rounds(sampler, lambda paused: _pause(console, paused))
        took = time.monotonic() - started
        delays = sampler.delays()
    finally:
        world.daemon.stop()
        relay.close()

    print(f"\nacknowledgement delays at the broker ({took:.0f} s of sampling):")
    for group, values in sorted(delays.items()):
        print(
            f"  {group:24s} n={len(values):2d} median {statistics.median(values) * 1000:7.1f} ms"
            f"  range {min(values) * 1000:7.1f}..{max(values) * 1000:7.1f} ms"
        )
    verified = [g for g in delays if not g.startswith("junk")]
    for group in verified:
        values = delays[group]
        assert len(values) >= 12, (group, len(values))
        assert min(values) >= wire.ACK_DELAY_S, f"{group}: acknowledged early, {min(values)} s"
        assert abs(statistics.median(values) - wire.ACK_DELAY_S) <= MEDIAN_TOLERANCE_S, group
    # Junk alone is acknowledged at once; junk behind a verified message waits for it.
    assert max(delays["junk alone"]) < 0.5
    assert min(delays["junk behind verified"]) >= wire.ACK_DELAY_S - 0.1

    rng = random.Random(16)
    for a, b in [
        ("approve", "deny"),
        ("accepted", "outside the area"),
        ("accepted, 4 alone", "full list, 4 alone"),
        ("accepted, 4 alone", "paused, 4 alone"),
    ]:
        score = best_threshold_accuracy(delays[a], delays[b])
        bound = chance_bound(delays[a], delays[b], rng)
        print(f"  {a} vs {b}: best threshold {score:.3f}, chance stays below {bound:.3f}")
        assert score <= bound, f"a threshold tells {a} from {b}: {score:.3f} > {bound:.3f}"


def _probe(sampler: Sampler) -> bool:
    probe = sampler.junk("junk alone", 0)
    publish_messages(sampler.world.broker.url, [probe])
    key = digest(probe.payload)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if key in {a.payload_sha256 for a in sampler.relay.acknowledged()}:
            return True
        time.sleep(0.02)
    return False


def _pause(console, paused: bool) -> None:  # type: ignore[no-untyped-def]
    reply = console.post("/api/requests-paused", json={"paused": paused})
    assert reply.status_code == 200 and reply.json()["paused"] is paused, reply.text


def run_rounds(sampler: Sampler, pause: Callable[[bool], None]) -> None:
    """Each round from an empty pending list. Groups compared are sent in batches of the
    same shape, since a batch's own load moves the device's reading by a millisecond or
    two: four requests alone, accepted, against four alone while paused and four alone
    against a full list; accepted requests interleaved with requests refused after their
    signature verified (outside the area), to a full list; approvals and denials
    interleaved. A batch's members go concurrently (their delays overlap; at most 11 are
    in flight, under the broker's window) and in order."""
    far = sampler.world.setup.lat + 0.03  # about 3.3 km north: outside any 805 m circle
    for round_ in range(ROUNDS):
        pending: list[str] = []

        def alone_accepted(pending: list[str] = pending) -> None:
            batch = []
            for _ in range(4):
                rfa_id, message = sampler.request("accepted, 4 alone")
                pending.append(rfa_id)
                batch.append(message)
            sampler.send(batch)

        def alone_paused() -> None:
            pause(True)
            sampler.send([sampler.request("paused, 4 alone")[1] for _ in range(4)])
            pause(False)

        for step in (alone_accepted, alone_paused)[:: 1 if round_ % 2 == 0 else -1]:
            step()
        batch: list[Outgoing] = []
        for n in range(10):
            outside = n in (1, 3, 5, 7)
            rfa_id, message = sampler.request(
                "outside the area" if outside else "accepted", **({"lat": far} if outside else {})
            )
            batch.append(message)
            if not outside:
                pending.append(rfa_id)
        batch.append(sampler.junk("junk behind verified", round_))
        sampler.send(batch)
        assert len(pending) == wire.MAX_PENDING
        # from a device at rest, as the accepted batch of four is sent: straight after the
        # batch of eleven (six requests stored, each fsync 10 ms slower) the device's
        # reading still lagged by a millisecond or two, which a loaded CI run once turned
        # into a threshold that told "full list" from "accepted" (0.875 > 0.833)
        time.sleep(SETTLE_S)
        sampler.send([sampler.request("full list, 4 alone")[1] for _ in range(4)])
        sampler.send(
            [
                sampler.decision("approve" if n % 2 == 0 else "deny", rfa_id, approve=n % 2 == 0)
                for n, rfa_id in enumerate(pending)
            ]
        )
        assert sampler.world.pending_ids() == [], "every request of the round was decided"
