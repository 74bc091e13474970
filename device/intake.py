"""The flood-proof path from MqttLink to RequestFlow.

On paho's network thread, every message gets only cheap checks (sync.rfa.precheck:
size before parsing, envelope shape, known kid, replay of a seen id; for the decision
topic: size and the age header). Junk is acknowledged at once and counted per reason
(the audit log coalesces the counts per minute, so a flood cannot fill the disk).
Candidates go into a bounded queue; one worker thread verifies signatures and runs the
flow, and acknowledges each message only once its outcome is durably recorded: one
whose signature verified at the protocol's fixed delay after it arrived (protocol.md §3,
revision 1.2; sync.mqtt.AckSequencer holds it, the worker does not wait), whatever the
outcome, so the broker cannot tell one outcome's disk writes from another's.

Back-pressure instead of loss: when the queue is full the network thread blocks in
`on_message`, so paho stops reading the socket and the broker holds the rest (its
in-flight window for us is bounded by Receive Maximum). A message is never acked and
then dropped: whatever is unacked when the process dies is redelivered after the next
connection.

The worker also does the housekeeping that must run on a quiet day: declining requests
whose time ran out and writing the rejection counts of a minute that ended.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from device.flow import FlowReason, Outcome, Reason, RequestFlow, counter_name
from foundation.clock import Clock
from foundation.display import shown
from sync.decision import DecisionRejected, SealedDecision, precheck_sealed
from sync.mqtt import InboundMessage
from sync.rfa import Prechecked, Rejected, TrustedAgencyKey, precheck

logger = logging.getLogger(__name__)


class RejectionCounter(Protocol):
    def count_rejection(self, reason: str, now_ms: int) -> None: ...

    def flush(self, now_ms: int, *, force: bool = False) -> None: ...


@dataclass
class IntakeStats:
    """Counters for health checks and the benchmark (updated without a lock: the
    network thread and the worker each own their own fields)."""

    received: int = 0
    junk: int = 0  # acked on arrival
    queued: int = 0
    handled: int = 0  # finished by the worker
    accepted: int = 0
    blocked_s: float = 0.0  # time the network thread spent waiting for queue space
    junk_reasons: dict[str, int] = field(default_factory=dict)  # network thread's
    reasons: dict[str, int] = field(default_factory=dict)  # worker's


@dataclass(frozen=True, slots=True)
class _Work:
    message: InboundMessage
    prechecked: Prechecked | SealedDecision


class Intake:
    def __init__(
        self,
        *,
        flow: RequestFlow,
        audit: RejectionCounter,
        seen: Any,  # Container[str]: the store's seen ids
        trusted_agencies: Mapping[str, TrustedAgencyKey],
        rfa_topic: str,
        decision_topic: str,
        clock: Clock,
        stop: threading.Event,
        queue_size: int = 128,
        housekeeping_s: float = 5.0,
        on_outcome: Callable[[InboundMessage, Outcome], None] | None = None,
    ) -> None:
        self._flow = flow
        self._audit = audit
        self._seen = seen
        self._trusted = dict(trusted_agencies)
        self._rfa_topic = rfa_topic
        self._decision_topic = decision_topic
        self._clock = clock
        self._stop = stop
        self._queue: queue.Queue[_Work] = queue.Queue(maxsize=queue_size)
        self._housekeeping_s = housekeeping_s
        self._on_outcome = on_outcome
        self.stats = IntakeStats()

    # ---- network thread --------------------------------------------------------------

    def on_message(self, message: InboundMessage) -> None:
        """MqttLink's callback: cheap checks, then ack (junk) or queue (candidates)."""
        self.stats.received += 1
        payload = message.payload
        if message.topic == self._rfa_topic:
            pre = precheck(payload, self._trusted, self._seen)
            if isinstance(pre, Rejected):
                self._junk(message, pre.reason)
                return
            self._put(_Work(message, pre))
        elif message.topic == self._decision_topic:
            sealed = precheck_sealed(payload)
            if isinstance(sealed, DecisionRejected):
                self._junk(message, sealed.reason)
                return
            self._put(_Work(message, sealed))
        else:
            self._junk(message, FlowReason.UNEXPECTED_TOPIC)

    def _junk(self, message: InboundMessage, reason: Reason) -> None:
        counter = counter_name(reason)
        self._audit.count_rejection(counter, self._clock.wall_ms())
        self.stats.junk += 1
        self.stats.junk_reasons[counter] = self.stats.junk_reasons.get(counter, 0) + 1
        message.ack()

    def _put(self, work: _Work) -> None:
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            started = self._clock.monotonic()
            while True:
                try:
                    self._queue.put(work, timeout=0.5)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        return  # not acked: the broker redelivers it next time
            self.stats.blocked_s += self._clock.monotonic() - started
        self.stats.queued += 1

    # ---- worker thread ---------------------------------------------------------------

    def run(self) -> None:
        """The worker loop (run it in a thread); returns when `stop` is set."""
        next_housekeeping = self._clock.monotonic()
        while not self._stop.is_set():
            now = self._clock.monotonic()
            if now >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = now + self._housekeeping_s
            try:
                work = self._queue.get(timeout=max(0.01, min(0.5, next_housekeeping - now)))
            except queue.Empty:
                continue
            self._handle(work)

    def _handle(self, work: _Work) -> None:
        try:
            if isinstance(work.prechecked, SealedDecision):
                outcome = self._flow.handle_sealed_decision(work.prechecked)
            else:
                outcome = self._flow.handle_prechecked(work.prechecked)
        except Exception:
            # A failure to record (disk full, I/O error): leave it unacked, so the broker
            # redelivers it after the next reconnect instead of it being lost.
            logger.exception(
                "could not record the outcome of a message on %s", shown(work.message.topic)
            )
            work.message.withhold()
            return
        work.message.ack(verified=outcome.verified)
        self.stats.handled += 1
        if outcome.accepted:
            self.stats.accepted += 1
        else:
            counter = counter_name(outcome.reason)
            self.stats.reasons[counter] = self.stats.reasons.get(counter, 0) + 1
        if self._on_outcome is not None:
            try:
                self._on_outcome(work.message, outcome)
            except Exception:
                logger.exception("outcome hook failed")

    def _housekeeping(self) -> None:
        try:
            self._flow.expire_due()
            self._audit.flush(self._clock.wall_ms())
        except Exception:
            logger.exception("intake housekeeping failed")
