"""The intake side end to end against a real Mosquitto: an agency publishes signed RFAs,
the owner publishes sealed decisions, junk floods in, the broker restarts, and the
intake process is killed with -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.keys import SigningKey, parse_recipient
from sync.seal import seal
from tests.device.intake_kit import IntakeStack, build_stack, decision_topic, rfa_topic
from tests.fixtures.mosquitto import MosquittoBroker, Publisher
from tests.sync.factories import AgencyKeys, decision_envelope, rfa_envelope


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def pending_ids(stack: IntakeStack) -> set[str]:
    return {p.rfa.id for p in stack.store.pending()}


def start(tmp: Path, broker: MosquittoBroker, agency: AgencyKeys, owner: SigningKey, **kw):  # type: ignore[no-untyped-def]
    stack = build_stack(
        tmp,
        url=broker.url,
        agencies={agency.agency_id: agency.signing.public_b64},
        owner_keys=[owner.public_b64],
        **kw,
    )
    assert stack.link.wait_connected(10)
    # Subscriptions are in place once a message on our topic comes back through.
    with Publisher(broker) as pub:
        assert wait_for(lambda: _probe(stack, pub), 10)
    return stack


def _probe(stack: IntakeStack, pub: Publisher) -> bool:
    before = stack.intake.stats.received
    pub.publish(rfa_topic(), b"probe")
    return wait_for(lambda: stack.intake.stats.received > before, 0.3)


def sealed_decision(stack: IntakeStack, owner: SigningKey, rfa_id: str, **changes) -> bytes:  # type: ignore[no-untyped-def]
    env = decision_envelope(owner, rfa_id=rfa_id, now_ms=now_ms(), changes=changes)
    return seal(env, [parse_recipient(stack.identity.recipient)])


@pytest.mark.parametrize("protocol", [5, 4])
def test_request_then_app_approval_over_the_broker(
    tmp_path: Path, mosquitto: MosquittoBroker, protocol: int
) -> None:
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    stack = start(tmp_path, mosquitto, agency, owner, protocol=protocol)
    try:
        rfa_id = str(uuid.uuid4())
        with Publisher(mosquitto) as pub:
            pub.publish(rfa_topic(), rfa_envelope(agency, now_ms=now_ms(), rfa_id=rfa_id))
            assert wait_for(lambda: rfa_id in pending_ids(stack))
            # Junk on the decision topic, then a decision signed by a stranger: nothing.
            pub.publish(decision_topic(), b"junk")
            pub.publish(decision_topic(), b"age-encryption.org/v1\nnot really")
            pub.publish(decision_topic(), sealed_decision(stack, SigningKey.generate(), rfa_id))
            assert wait_for(lambda: stack.intake.stats.received >= 5)
            assert wait_for(lambda: stack.intake.stats.handled >= 2)
            assert pending_ids(stack) == {rfa_id} and not stack.outbox.has_job(rfa_id)
            pub.publish(decision_topic(), sealed_decision(stack, owner, rfa_id))
            assert wait_for(lambda: stack.outbox.has_job(rfa_id))
            assert pending_ids(stack) == set()
    finally:
        stack.close()


def test_oversized_payload_is_dropped_unparsed_and_acked(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    stack = start(tmp_path, mosquitto, agency, owner)
    big_id = str(uuid.uuid4())
    big = rfa_envelope(agency, now_ms=now_ms(), rfa_id=big_id, changes={"pad": "x" * 17000})
    assert 16 * 1024 < len(big) < 64 * 1024
    try:
        with Publisher(mosquitto) as pub:
            pub.publish(rfa_topic(), big)
        assert wait_for(lambda: stack.intake.stats.junk_reasons.get("oversized") == 1)
        assert big_id not in stack.store.seen_ids and pending_ids(stack) == set()
    finally:
        stack.close()
    # It was acked: a new connection of the same session does not get it again.
    stack = start(tmp_path, mosquitto, agency, owner)
    try:
        time.sleep(0.5)
        assert "oversized" not in stack.intake.stats.junk_reasons
    finally:
        stack.close()


def test_requests_published_during_a_broker_restart_and_an_outage_arrive(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    stack = start(tmp_path, mosquitto, agency, owner)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        mosquitto.restart()
        with Publisher(mosquitto) as pub:  # possibly before the device is back
            pub.publish(rfa_topic(), rfa_envelope(agency, now_ms=now_ms(), rfa_id=first))
        assert wait_for(lambda: first in pending_ids(stack))
    finally:
        stack.close()
    with Publisher(mosquitto) as pub:  # the device is offline
        pub.publish(rfa_topic(), rfa_envelope(agency, now_ms=now_ms(), rfa_id=second))
    stack = start(tmp_path, mosquitto, agency, owner)
    try:
        assert wait_for(lambda: pending_ids(stack) == {first, second})
    finally:
        stack.close()


def test_a_genuine_request_gets_through_a_junk_flood(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    stack = start(tmp_path, mosquitto, agency, owner, queue_size=8)
    genuine = str(uuid.uuid4())
    stranger = SigningKey.generate()
    replayed = rfa_envelope(agency, now_ms=now_ms())
    junk = [
        b"\x00\xff" * 40,
        b'{"v":1}',
        rfa_envelope(AgencyKeys.generate(), now_ms=now_ms()),  # unknown kid
        rfa_envelope(agency, now_ms=now_ms(), key=stranger),  # unknown kid too
        replayed,
    ]
    try:
        with Publisher(mosquitto) as pub:
            pub.publish(rfa_topic(), replayed)
            for i in range(3000):
                pub.publish(rfa_topic(), junk[i % len(junk)], wait=False)
                if i == 1500:
                    pub.publish(rfa_topic(), rfa_envelope(agency, now_ms=now_ms(), rfa_id=genuine))
            pub.publish(rfa_topic(), b"last", wait=True)
        assert wait_for(lambda: genuine in pending_ids(stack), 30)
        assert wait_for(lambda: stack.intake.stats.received >= 3003, 30)
        stats = stack.intake.stats
        # Every message was either acked as junk on arrival or handled by the worker
        # (copies of the replayed request queued before its id was seen end as replays).
        assert wait_for(lambda: stats.junk + stats.handled == stats.received)
        assert stats.accepted == 2 and stats.junk >= 2900
        assert pending_ids(stack) == {replayed_id(replayed), genuine}
    finally:
        stack.close()


def replayed_id(envelope: bytes) -> str:
    return str(json.loads(json.loads(envelope)["payload"])["id"])


def test_kill_9_loses_nothing_that_was_acknowledged(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    spec = {
        "root": str(tmp_path / "device"),
        "url": mosquitto.url,
        "agencies": {agency.agency_id: agency.signing.public_b64},
        "owner_keys": [owner.public_b64],
    }

    def launch() -> tuple[subprocess.Popen[str], dict]:  # type: ignore[type-arg]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.device.intake_kit", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        return proc, ready

    ids = [str(uuid.uuid4()) for _ in range(10)]  # 9 stay pending: under the limit of 10
    proc, ready = launch()
    with Publisher(mosquitto) as pub:
        pub.publish(rfa_topic(), rfa_envelope(agency, now_ms=now_ms(), rfa_id=ids[0]))
        line = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert line["rfa_id"] == ids[0] and line["accepted"]
        # A decision for it, then a burst of requests; kill -9 in the middle of them.
        env = decision_envelope(owner, rfa_id=ids[0], now_ms=now_ms(), changes={"nonce": "k9"})
        pub.publish(decision_topic(), seal(env, [parse_recipient(ready["recipient"])]))
        line = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert line["reason"] == "approved"
        for n, rfa_id in enumerate(ids[1:]):
            # one case each: at most two requests per case (protocol.md §4 rule 12)
            env = rfa_envelope(
                agency, now_ms=now_ms(), rfa_id=rfa_id, changes={"case_number": f"case-{n}"}
            )
            pub.publish(rfa_topic(), env, wait=False)
        reported = [json.loads(proc.stdout.readline())["rfa_id"] for _ in range(5)]  # type: ignore[union-attr]
        proc.kill()
        proc.wait(10)
        # Every one reported was durably recorded before its ack; the rest were not acked
        # and come back from the broker after the restart.
    proc, _ready = launch()
    try:
        from device.state import StateStore

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc.stdin.write("stats\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            store = StateStore.open(Path(spec["root"]) / "state" / "state.sqlite")
            try:
                have = {p.rfa.id for p in store.pending()}
                seen = all(i in store.seen_ids for i in ids)
                nonce = "k9" in store.used_nonces
            finally:
                store.close()
            if have == set(ids[1:]):
                break
            time.sleep(0.2)
        assert set(reported) <= have
        assert have == set(ids[1:]) and seen and nonce
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    from sync.outbox import Outbox

    outbox = Outbox.open(Path(spec["root"]) / "state" / "outbox")
    try:
        assert outbox.has_job(ids[0])
        assert not any(outbox.has_job(i) for i in ids[1:])
    finally:
        outbox.close()
