"""protocol.md §3 (revision 1.2), the acknowledgement's order and timing, in-process with
a short injected delay: PUBACKs leave in arrival order, a verified message's not before
its delay, junk at once unless an earlier message is still held."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.mqtt import AckSequencer

DELAY = 0.15


class Sent:
    """The PUBACKs as they leave: (packet id, monotonic time)."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, float]] = []
        self._cond = threading.Condition()

    def __call__(self, mid: int, qos: int) -> None:
        with self._cond:
            self.acks.append((mid, time.monotonic()))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[int, float]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.acks) >= count, timeout)
            return list(self.acks)

    def mids(self) -> list[int]:
        with self._cond:
            return [mid for mid, _ in self.acks]


@contextmanager
def sequencer(delay: float = DELAY) -> Iterator[tuple[AckSequencer, Sent]]:
    acks, sent = AckSequencer(delay_s=delay), Sent()
    acks.start()
    acks.restart(sent)
    try:
        yield acks, sent
    finally:
        acks.close(settle_s=0)


def test_junk_behind_a_verified_message_waits_for_its_ack() -> None:
    with sequencer() as (acks, sent):
        arrived = time.monotonic()
        verified = acks.admit(1, 1, arrived)
        junk = acks.admit(2, 1, arrived)
        junk.release(verified=False)
        time.sleep(DELAY / 3)
        assert sent.mids() == []  # the junk is ready, but an earlier message is held
        verified.release(verified=True)
        got = sent.wait_for(2)
        assert [mid for mid, _ in got] == [1, 2]
        assert got[0][1] >= arrived + DELAY  # never earlier than the delay
        assert got[1][1] >= got[0][1]


def test_junk_ahead_of_everything_goes_at_once() -> None:
    with sequencer() as (acks, sent):
        arrived = time.monotonic()
        acks.admit(7, 1, arrived).release(verified=False)
        got = sent.wait_for(1)
        assert got[0][0] == 7 and got[0][1] - arrived < DELAY / 2


def test_a_verified_ack_is_due_from_arrival_not_from_the_outcome() -> None:
    with sequencer() as (acks, sent):
        arrived = time.monotonic()
        handle = acks.admit(3, 1, arrived)
        time.sleep(DELAY / 2)  # the outcome took a while: the ack still comes at the delay
        handle.release(verified=True)
        (mid, at), *_ = sent.wait_for(1)
        assert mid == 3 and arrived + DELAY <= at < arrived + DELAY * 1.8


def test_an_outcome_later_than_the_delay_is_acked_at_once_and_logged(caplog) -> None:
    with sequencer() as (acks, sent):
        arrived = time.monotonic() - 2 * DELAY  # its outcome took twice the delay
        acks.admit(4, 1, arrived).release(verified=True)
        (mid, at), *_ = sent.wait_for(1)
        assert mid == 4 and at - (arrived + 2 * DELAY) < DELAY / 2
        late = [r for r in caplog.records if "acknowledging it late" in r.getMessage()]
        assert len(late) == 1


def test_a_withheld_message_does_not_hold_the_ones_behind_it() -> None:
    with sequencer() as (acks, sent):
        now = time.monotonic()
        failed, after = acks.admit(5, 1, now), acks.admit(6, 1, now)
        after.release(verified=False)
        failed.withhold()  # the broker redelivers it on the next connection
        assert [mid for mid, _ in sent.wait_for(1)] == [6]
        failed.release(verified=False)  # too late: it was given up
        time.sleep(DELAY / 3)
        assert sent.mids() == [6]


def test_acks_of_a_lost_connection_are_never_sent_on_the_next() -> None:
    with sequencer() as (acks, sent):
        old = acks.admit(9, 1, time.monotonic())
        acks.restart(None)  # disconnected
        newer = Sent()
        acks.restart(newer)  # connected again
        old.release(verified=False)
        acks.admit(9, 1, time.monotonic()).release(verified=False)  # same packet id, new
        assert [mid for mid, _ in newer.wait_for(1)] == [9]
        time.sleep(DELAY / 3)
        assert sent.mids() == [] and newer.mids() == [9]


def test_qos_0_needs_no_ack_and_holds_nothing() -> None:
    with sequencer() as (acks, sent):
        acks.admit(0, 0, time.monotonic())  # never released
        acks.admit(11, 1, time.monotonic()).release(verified=False)
        assert [mid for mid, _ in sent.wait_for(1)] == [11]


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=0.03)), min_size=1, max_size=8
    ),
    st.permutations(range(8)),
)
def test_acks_leave_in_arrival_order_each_not_before_it_is_due(
    messages: list[tuple[bool, float]], order: list[int]
) -> None:
    """Whatever the order the receiver finishes them in, the PUBACKs leave in arrival
    order, a verified one never before its delay, nothing before it is released."""
    delay = 0.05
    with sequencer(delay) as (acks, sent):
        handles, arrived = [], []
        for mid, (_verified, gap) in enumerate(messages, start=1):
            time.sleep(gap)
            arrived.append(time.monotonic())
            handles.append(acks.admit(mid, 1, arrived[-1]))
        released: dict[int, float] = {}
        for index in [i for i in order if i < len(messages)]:
            handles[index].release(verified=messages[index][0])
            released[index + 1] = time.monotonic()
        got = sent.wait_for(len(messages))
        assert [mid for mid, _ in got] == list(range(1, len(messages) + 1))
        for mid, at in got:
            verified = messages[mid - 1][0]
            assert at >= released[mid] - 0.001
            if verified:
                assert at >= arrived[mid - 1] + delay
