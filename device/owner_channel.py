"""The sealed owner channel (protocol.md §3 fixed rhythm, §5.1 pending list, §6.3 progress).

Owns the two device-to-owner topics, ``devices/{id}/owner/pending`` and
``devices/{id}/owner/shares``. Each message is a signed envelope (the device key) sealed
with age to the owner's recipients, padded inside the encryption, and published retained
with QoS 1.

What the broker must not learn (§3.1) decides the shape of this module:

* **Timing.** `OwnerChannel.run` publishes both topics at ``start + k * period`` on the
  monotonic clock, whether or not anything changed. There is deliberately no ``wake()``:
  nothing that happens on the device (a request arriving, a decision, a share finishing)
  can make a message go out sooner. The schedule does not drift with the time spent
  building and sealing; if a round overruns whole periods (a stalled broker, a suspended
  machine), the missed instants are skipped rather than sent in a burst.
* **Size.** The envelope is padded with trailing spaces (still valid JSON) to at least
  `min_padded_bytes` (16 KiB by default) and to a multiple of 4 KiB (protocol.md §3), so the
  ciphertext of an empty list, one request or ten typical requests is the same size. Only
  content beyond the floor (many requests with long descriptions) grows the message, in
  4 KiB steps: the broker then learns a coarse upper bound on the content, never a count.
  A larger floor hides more at the cost of upload volume on every period
  (2 x 16 KiB every 300 s is about 9 MB a day). The age implementation (rage, under
  pyrage) adds a random "grease" stanza to every header, so ciphertext sizes jitter by a
  few hundred bytes at most; that jitter is random and independent of the content.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyrage import x25519

from device.audit import AuditHead
from device.identity import DeviceIdentity
from foundation import wire
from foundation.clock import Clock
from foundation.errors import InvalidValueError
from foundation.times import format_time
from sync.envelope import make_envelope
from sync.keys import SigningKey, parse_recipient
from sync.seal import PAD_BLOCK, seal

logger = logging.getLogger(__name__)

DEFAULT_MIN_PADDED_BYTES = 4 * PAD_BLOCK

_Builder = Callable[[Sequence[Mapping[str, Any]], AuditHead, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class OwnerTopics:
    pending: str
    shares: str

    @classmethod
    def for_device(cls, device_id: str) -> OwnerTopics:
        return cls(
            pending=wire.owner_topic(device_id, "pending"),
            shares=wire.owner_topic(device_id, "shares"),
        )


def _head_json(audit_head: AuditHead | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(audit_head, AuditHead):
        return audit_head.to_json()
    return {"entries": int(audit_head["entries"]), "sha256": str(audit_head["sha256"])}


def pending_message(
    entries: Sequence[Mapping[str, Any]], audit_head: AuditHead | Mapping[str, Any], now_ms: int
) -> dict[str, Any]:
    """protocol.md §5.1: the pending list (entries are `RequestFlow.pending_entries()`)."""
    return {
        "type": "pending",
        "at": format_time(now_ms),
        "audit_head": _head_json(audit_head),
        "requests": [dict(entry) for entry in entries],
    }


def shares_message(
    shares: Sequence[Mapping[str, Any]], audit_head: AuditHead | Mapping[str, Any], now_ms: int
) -> dict[str, Any]:
    """protocol.md §6.3: share progress (entries are `Outbox.shares(now_ms)`)."""
    return {
        "type": "shares",
        "at": format_time(now_ms),
        "audit_head": _head_json(audit_head),
        "shares": [dict(share) for share in shares],
    }


def seal_owner_message(
    message: Mapping[str, Any],
    *,
    signing: SigningKey,
    recipients: Sequence[x25519.Recipient],
    min_padded_bytes: int = DEFAULT_MIN_PADDED_BYTES,
) -> bytes:
    """Sign as an envelope, pad to at least `min_padded_bytes`, then seal (which pads
    to a multiple of 4 KiB inside the encryption)."""
    envelope = make_envelope(message, signing)
    if len(envelope) < min_padded_bytes:
        envelope += b" " * (min_padded_bytes - len(envelope))
    return seal(envelope, recipients, pad_block=PAD_BLOCK)


def next_instant(start: float, period: float, now: float, after_k: int) -> tuple[int, float]:
    """The first scheduled instant `start + k*period` with k > after_k that is not already
    in the past. Missed instants are skipped, never made up in a burst."""
    k = max(after_k + 1, math.ceil((now - start) / period))
    return k, start + k * period


class OwnerChannel:
    """Publishes both sealed owner topics on a fixed period; a thread runs `run()`."""

    def __init__(
        self,
        *,
        publish: Callable[[str, bytes], None],
        topics: OwnerTopics | None = None,
        device_id: str | None = None,
        recipients: Sequence[str | x25519.Recipient],
        identity: DeviceIdentity,
        pending_entries: Callable[[], list[dict[str, Any]]],
        shares: Callable[[], list[dict[str, Any]]],
        audit_head: Callable[[], AuditHead],
        clock: Clock,
        period_s: float,
        stop: threading.Event,
        min_padded_bytes: int = DEFAULT_MIN_PADDED_BYTES,
    ) -> None:
        if period_s < 0.2:
            raise InvalidValueError("the owner channel period is at least 0.2 s (protocol.md §3)")
        self._publish = publish
        if topics is None:
            if device_id is None:
                raise InvalidValueError("give the owner channel its topics or the device id")
            topics = OwnerTopics.for_device(device_id)
        self._topics = topics
        self._recipients = [
            r if isinstance(r, x25519.Recipient) else parse_recipient(r) for r in recipients
        ]
        self._identity = identity
        self._pending_entries = pending_entries
        self._shares = shares
        self._audit_head = audit_head
        self._clock = clock
        self._period = float(period_s)
        self._stop = stop
        self._min_padded = min_padded_bytes
        self.rounds = 0  # completed rounds, for health reporting
        self.failures = 0
        self._failing = False

    def run(self) -> None:
        if not self._recipients:
            logger.warning("owner channel: no owner.recipients configured; publishing nothing")
            return
        start = self._clock.monotonic()
        k = 0
        target = start
        while not self._stop.is_set():
            delay = target - self._clock.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.publish_round()
            k, target = next_instant(start, self._period, self._clock.monotonic(), k)

    def publish_round(self) -> None:
        """Build, seal and publish both topics once. Failures are logged, never raised:
        the next round comes on schedule regardless."""
        now_ms = self._clock.wall_ms()
        try:
            head = self._audit_head()
        except Exception:  # a loop boundary
            self._failed("audit head")
            return
        rounds: tuple[tuple[str, Callable[[], list[dict[str, Any]]], _Builder], ...] = (
            (self._topics.pending, self._pending_entries, pending_message),
            (self._topics.shares, self._shares, shares_message),
        )
        ok = True
        for topic, source, build in rounds:
            try:
                sealed = seal_owner_message(
                    build(source(), head, now_ms),
                    signing=self._identity.signing,
                    recipients=self._recipients,
                    min_padded_bytes=self._min_padded,
                )
                self._publish(topic, sealed)
            except Exception:  # a loop boundary: the broker may be down, a source may fail
                ok = False
                self._failed(topic)
        self.rounds += 1
        if ok:
            self._failing = False

    def _failed(self, what: str) -> None:
        self.failures += 1
        # The traceback once per run of failures: a broker down for a day must not flood
        # the journal, but the first failure must say why.
        logger.warning("owner channel: could not publish %s", what, exc_info=not self._failing)
        self._failing = True
