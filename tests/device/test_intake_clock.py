"""The intake keeps its time on the clock it is given: its housekeeping (expiry, the
audit's rejection counters) comes when that clock says so, and the time the network
thread waited for queue space is measured on it. Steered with a FakeClock over the real
flow, store, audit and outbox; no broker (messages are handed to `on_message`)."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.flow import Outcome
from device.intake import Intake
from foundation.clock import FakeClock
from sync.keys import SigningKey
from sync.mqtt import InboundMessage
from tests.device.intake_kit import decision_topic, rfa_topic
from tests.device.test_flow import Kit, open_kit
from tests.fixtures.daemon import wait_for
from tests.sync.factories import HOUR_MS, NOW_MS, AgencyKeys

HOUSEKEEPING_S = 3600.0  # an hour: the test never waits that long for real


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = open_kit(tmp_path, FakeClock(NOW_MS), AgencyKeys.generate(), SigningKey.generate())
    yield k
    k.close()


class NetworkReadsNoted(FakeClock):
    """A FakeClock that notes when the thread named "network" reads its monotonic time."""

    def __init__(self, wall_ms: int) -> None:
        super().__init__(wall_ms)
        self.network_read = threading.Event()

    def monotonic(self) -> float:
        value = super().monotonic()
        if threading.current_thread().name == "network":
            self.network_read.set()
        return value


def make_intake(
    kit: Kit,
    stop: threading.Event,
    outcomes: queue.Queue[Outcome],
    clock: FakeClock | None = None,
) -> Intake:
    return Intake(
        flow=kit.flow,
        audit=kit.audit,
        seen=kit.store.seen_ids,
        trusted_agencies=kit.flow.trusted_agencies,
        rfa_topic=rfa_topic(),
        decision_topic=decision_topic(),
        clock=clock or kit.clock,
        stop=stop,
        queue_size=1,
        housekeeping_s=HOUSEKEEPING_S,
        on_outcome=lambda _message, outcome: outcomes.put(outcome),
    )


class _Unsent:
    """These tests watch the outcomes; the acknowledgement goes nowhere."""

    def release(self, *, verified: bool) -> None:
        return None

    def withhold(self) -> None:
        return None


def message(payload: bytes) -> InboundMessage:
    return InboundMessage(topic=rfa_topic(), payload=payload, handle=_Unsent())


def test_housekeeping_comes_when_the_injected_clock_says(kit: Kit) -> None:
    stop, outcomes = threading.Event(), queue.Queue[Outcome]()
    intake = make_intake(kit, stop, outcomes)
    worker = threading.Thread(target=intake.run, daemon=True)
    worker.start()
    try:
        first = str(uuid.uuid4())
        intake.on_message(message(kit.rfa(rfa_id=first)))
        assert outcomes.get(timeout=30).accepted
        # Past its decide-by time on the wall clock, but the intake's hour has not passed:
        # a second request goes through the loop and the first is still pending.
        kit.clock.jump_wall(72 * HOUR_MS + 1)
        intake.on_message(message(kit.rfa(rfa_id=str(uuid.uuid4()))))
        assert outcomes.get(timeout=30).accepted
        assert first in {p.rfa.id for p in kit.flow.pending()}
        # The intake's clock moves on by an hour: the next turn of its loop expires it.
        kit.clock.advance(HOUSEKEEPING_S)
        wait_for(lambda: first not in {p.rfa.id for p in kit.flow.pending()}, 30, "expiry")
        assert ("expired", {"rfa_id": first}) in kit.events()
    finally:
        stop.set()
        worker.join(10)


def test_the_wait_for_queue_space_is_measured_on_the_injected_clock(kit: Kit) -> None:
    stop, outcomes = threading.Event(), queue.Queue[Outcome]()
    clock = NetworkReadsNoted(NOW_MS)
    intake = make_intake(kit, stop, outcomes, clock)
    intake.on_message(message(kit.rfa(rfa_id=str(uuid.uuid4()))))  # fills the queue of one
    blocked = threading.Thread(
        target=intake.on_message,
        args=(message(kit.rfa(rfa_id=str(uuid.uuid4()))),),
        name="network",
    )
    blocked.start()
    assert clock.network_read.wait(30)  # the queue was full: it noted when it began to wait
    clock.advance(7.0)
    worker = threading.Thread(target=intake.run, daemon=True)
    worker.start()
    try:
        blocked.join(30)
        assert not blocked.is_alive()
        assert intake.stats.blocked_s == 7.0  # the steered seconds, not the real ones
        assert outcomes.get(timeout=30).accepted and outcomes.get(timeout=30).accepted
    finally:
        stop.set()
        worker.join(10)
