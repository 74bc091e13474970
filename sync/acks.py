"""The order and timing of the device's PUBACKs on one MQTT connection (protocol.md §3,
revision 1.2), apart from any MQTT library.

MQTT requires a client to acknowledge QoS 1 PUBLISHes in the order they arrived; the
protocol adds that a message whose signature verified is acknowledged a fixed delay after
it arrived, whatever its outcome, and junk at once but never ahead of an earlier message.
`AckSequencer` holds that ordering: the link (sync.mqtt) admits each arriving message and
gives it a sender per connection; the receiver releases each message once its outcome is
durable. Kept apart from the link so it can be read and tested on its own, in
milliseconds, with an injected delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

# The most PUBACKs the device owes at once before it stops reading (`AckSequencer`'s
# limit in the daemon). A broker's own window normally bounds them long before: MQTT 5's
# Receive Maximum (16, announced), or over 3.1.1, where the broker is told nothing, its
# configuration (Mosquitto max_inflight_messages 20, RabbitMQ mqtt.prefetch 10, NATS
# max_ack_pending). This is the backstop against a broker that keeps none (Mosquitto
# 2.0.11 was seen with 5,422 in flight against 16 announced): a slot is about 100
# bytes, so at most about 0.4 MB, and reading stops, so TCP holds the rest at the broker.
# Far above any broker's window, so that it does not slow the reading of a junk flood
# behind a verified message (whose PUBACK waits 2 s, and holds every later one).
MAX_OWED_ACKS = 4096


class AckHandle(Protocol):
    """What the receiver of one message tells the link about its acknowledgement."""

    def release(self, *, verified: bool) -> None: ...

    def withhold(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Slot:
    """One QoS 1 message of one connection, in arrival order, until its PUBACK is sent."""

    mid: int
    qos: int
    received: float
    generation: int
    due: float | None = None  # monotonic time its PUBACK may go; None until released
    withheld: bool = False


class _SlotHandle:
    def __init__(self, sequencer: AckSequencer, slot: _Slot) -> None:
        self._sequencer = sequencer
        self._slot = slot

    def release(self, *, verified: bool) -> None:
        self._sequencer.release(self._slot, verified=verified)

    def withhold(self) -> None:
        self._sequencer.withhold(self._slot)


class _NoAck:
    """QoS 0: nothing to acknowledge."""

    def release(self, *, verified: bool) -> None:
        return None

    def withhold(self) -> None:
        return None


class AckSequencer:
    """The PUBACKs of the current connection, in arrival order, each at its earliest time
    (protocol.md §3, revision 1.2).

    `admit` (paho's network thread) appends a slot for each arriving QoS 1 PUBLISH; the
    receiver later releases it, verified (due `delay_s` after arrival, or at once if the
    outcome took longer, with one log line) or not (due at once). A timer thread sends the
    head's PUBACK when it is released and due, then the next: a junk message behind a
    verified one waits for it. `restart` (a new or lost connection) forgets every slot;
    a release of a forgotten slot sends nothing, so a stale packet id never acknowledges
    a message of another connection. The delay is injectable so the ordering can be
    tested in-process in milliseconds; the daemon always uses the protocol's."""

    def __init__(self, *, delay_s: float, limit: int | None = None) -> None:
        """`limit`: at most this many messages awaiting their PUBACK at once; `admit`
        waits for room (see there). None: no limit (in-process tests)."""
        self._delay_s = delay_s
        self._limit = limit
        self._cond = threading.Condition()
        # Held while popping due slots and sending them, so that the timer thread and a
        # release that sends at once (junk at the head) never overtake each other.
        self._sending = threading.Lock()
        self._slots: deque[_Slot] = deque()
        self._generation = 0
        self._send: Callable[[int, int], object] | None = None
        self._closed = self._closing = False
        self._thread: threading.Thread | None = None
        self.waits = 0  # times admit waited for room (tests, the benchmark)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-acks", daemon=True)
        self._thread.start()

    def close(self, *, settle_s: float) -> None:
        """Send what the receiver released (waiting up to `settle_s` for the delays to
        run out), then stop; what is left is redelivered on the next connection."""
        with self._cond:
            self._closing = True
            self._cond.wait_for(self._settled, settle_s)
            self._closed = True
            self._slots.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(1.0)

    def _settled(self) -> bool:
        return not self._slots or (self._slots[0].due is None and not self._slots[0].withheld)

    def restart(self, send: Callable[[int, int], object] | None) -> None:
        """A new connection (`send` its PUBACK sender) or none (None): forget every slot.
        Waits for a send under way, so no PUBACK of the old connection follows."""
        with self._sending, self._cond:
            self._generation += 1
            self._slots.clear()
            self._send = send
            self._cond.notify_all()

    def admit(self, mid: int, qos: int, received: float) -> AckHandle:
        if qos == 0:
            return _NoAck()
        with self._cond:
            # With `limit` PUBACKs owed (MAX_OWED_ACKS), the network thread (the caller)
            # waits here, so nothing more is read from the socket and TCP holds the rest
            # at the broker. The slots ahead are released by the receiver's worker or
            # were junk (released at once), so room always comes within the ack delay.
            if self._limit is not None and len(self._slots) >= self._limit:
                self.waits += 1
                self._cond.wait_for(
                    lambda: self._closed or len(self._slots) < (self._limit or 0), None
                )
            slot = _Slot(mid, qos, received, self._generation)
            self._slots.append(slot)
        return _SlotHandle(self, slot)

    def release(self, slot: _Slot, *, verified: bool) -> None:
        with self._cond:
            if slot.due is not None or slot.withheld or slot.generation != self._generation:
                return
            now = time.monotonic()
            due = slot.received + self._delay_s if verified else now
            if now > due:
                logger.warning(
                    "the outcome of a message took %.3f s to become durable, longer than the "
                    "%.1f s acknowledgement delay; acknowledging it late",
                    now - slot.received,
                    self._delay_s,
                )
                due = now
            slot.due = due
            at_once = due <= now and bool(self._slots) and self._slots[0] is slot
            if not at_once:
                self._cond.notify_all()
        if at_once:
            self._send_due()

    def withhold(self, slot: _Slot) -> None:
        with self._cond:
            if slot.generation == self._generation and slot.due is None:
                slot.withheld = True
                self._cond.notify_all()

    def _send_due(self) -> None:
        """Junk at the head, in the releasing thread (paho's own, for junk): no hand-off
        to the timer thread per message, which would halve the rate a flood is read at.
        If the timer thread is sending, it sends this one too."""
        if not self._sending.acquire(blocking=False):
            with self._cond:
                self._cond.notify_all()
            return
        try:
            with self._cond:
                ready, send, _wait = self._take_ready()
            self._send_all(ready, send)
        finally:
            self._sending.release()
        with self._cond:
            if self._closing or (self._slots and self._slots[0].due is not None):
                self._cond.notify_all()  # a head for the timer thread, or close() waiting

    def _run(self) -> None:
        while True:
            with self._sending:
                with self._cond:
                    ready, send, wait = self._take_ready()
                self._send_all(ready, send)
            with self._cond:
                if ready:
                    self._cond.notify_all()  # for close(), waiting for the queue to settle
                    continue
                if self._closed:
                    return
                due_now, wait = self._peek()
                if not due_now:
                    self._cond.wait(wait)

    @staticmethod
    def _send_all(ready: list[_Slot], send: Callable[[int, int], object] | None) -> None:
        for slot in ready:  # outside the condition's lock: paho takes its own
            if send is not None:
                try:
                    send(slot.mid, slot.qos)
                except Exception:
                    logger.exception("could not send an MQTT acknowledgement")

    def _take_ready(self) -> tuple[list[_Slot], Callable[[int, int], object] | None, float | None]:
        """Under both locks: pop the head slots that may go now, in order; else how long
        to wait for the head (None: until something changes)."""
        ready: list[_Slot] = []
        now = time.monotonic()
        before = len(self._slots)
        while self._slots:
            head = self._slots[0]
            if head.withheld:
                self._slots.popleft()
            elif head.due is not None and head.due <= now:
                ready.append(self._slots.popleft())
            else:
                break
        if len(self._slots) < before:
            self._cond.notify_all()  # room for an admit waiting at the limit
        return ready, self._send, self._wait_s(now)

    def _peek(self) -> tuple[bool, float | None]:
        """Under the condition's lock: whether the head may go now, else how long to wait."""
        now = time.monotonic()
        head = self._slots[0] if self._slots else None
        due_now = head is not None and (head.withheld or (head.due is not None and head.due <= now))
        return due_now, self._wait_s(now)

    def _wait_s(self, now: float) -> float | None:
        head = self._slots[0] if self._slots else None
        return None if head is None or head.due is None else max(0.0, head.due - now)
