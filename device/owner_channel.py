"""The sealed owner channel (protocol.md §3 fixed rhythm and size, §5.1 pending list,
§6.3 progress).

Owns the two device-to-owner topics, ``devices/{id}/owner/pending`` and
``devices/{id}/owner/shares``. Each message is a signed envelope (the device key), padded
with ASCII spaces to exactly `wire.OWNER_MESSAGE_BYTES` (16,384) bytes, sealed with age to
the owner's recipients and published retained with QoS 1.

What the broker must not learn (§3.1) decides the shape of this module:

* **Size.** Every message is the encryption of exactly 16,384 bytes, whatever it holds:
  an empty list, ten requests at every limit, twenty shares. The pending list holds
  compact entries for every pending request; the long fields (`details`) go in as many as
  fit, rotating, so each request's details travel at least once in every `len(requests)`
  messages (`pending_message`). The request rules' byte limits (§4) make any pending list
  the protocol allows fit (tests/device/test_owner_channel.py proves it at the limits). The
  age implementation (rage, under pyrage) adds a random "grease" stanza to every header,
  so ciphertext sizes jitter by a few hundred bytes; that jitter is random and independent
  of the content, and the encrypted payload itself is always the same length.
* **Timing.** `OwnerChannel.run` publishes both topics at ``start + k * period`` on the
  monotonic clock, whether or not anything changed, and never in reaction to an event:
  there is deliberately no ``wake()``. The messages for instant k are built and sealed
  ahead of it, at ``instant - lead`` (a scheduled moment too), so neither their content
  nor the work of building them shows in when they are published. If a round overruns
  whole periods (a stalled broker, a suspended machine), the missed instants are skipped
  rather than sent in a burst.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyrage import x25519

from device.identity import DeviceIdentity
from device.state import PendingRequest
from foundation import wire
from foundation.clock import Clock
from foundation.errors import DoorbellError, InvalidValueError
from foundation.times import format_time
from sync.anchor import AuditHead
from sync.envelope import make_envelope
from sync.keys import SigningKey, parse_recipient
from sync.models import Rfa
from sync.seal import seal

logger = logging.getLogger(__name__)

# How long before its instant a round is built and sealed (at most half a period).
DEFAULT_LEAD_S = 2.0


class OwnerMessageTooLarge(DoorbellError):
    """A message does not fit in the fixed size: a bug, since §4's limits make any
    content the protocol allows fit."""


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


@dataclass(frozen=True, slots=True)
class PendingView:
    """One pending request as the owner channel carries it: the compact §5.1 entry and
    its details object (with `id`)."""

    entry: Mapping[str, Any]
    details: Mapping[str, Any]


def details_of(rfa: Rfa) -> dict[str, Any]:
    """protocol.md §5.1: a request's long fields, as the owner channel carries them."""
    public = rfa.public_json()
    return {key: public[key] for key in wire.PENDING_DETAIL_KEYS}


def pending_view(request: PendingRequest, footage_seconds: float) -> PendingView:
    """protocol.md §5.1: the compact entry of a pending request (exactly the keys
    wire.PENDING_ENTRY_KEYS) and its details (wire.PENDING_DETAIL_KEYS)."""
    rfa = request.rfa
    details = details_of(rfa)
    values = {
        "id": rfa.id,
        "agency_id": rfa.agency.id,
        "case_number": rfa.case_number,
        "window": rfa.window.to_json(),
        "expires_at": format_time(rfa.expires_at_ms),
        "decide_by": format_time(request.decide_by_ms),
        "footage_seconds": footage_seconds,
        "details_sha256": wire.details_sha256(details),
    }
    # exactly the keys of the contract: one missing here fails loudly
    entry = {key: values[key] for key in wire.PENDING_ENTRY_KEYS}
    return PendingView(entry, details)


def pending_views(pending: Iterable[tuple[PendingRequest, float]]) -> list[PendingView]:
    """The views of the pending requests (device.flow.RequestFlow.pending_footage)."""
    return [pending_view(request, seconds) for request, seconds in pending]


def pending_entries(pending: Iterable[tuple[PendingRequest, float]]) -> list[dict[str, Any]]:
    """What the local CLI and the console show: each compact entry with its details."""
    return [{**view.details, **view.entry} for view in pending_views(pending)]


def _head_json(audit_head: AuditHead | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(audit_head, AuditHead):
        return audit_head.to_json()
    return AuditHead.from_json(audit_head).to_json()


def pad_to(envelope: bytes, size: int) -> bytes:
    """The envelope followed by ASCII spaces up to exactly `size` bytes (still JSON)."""
    if len(envelope) > size:
        raise OwnerMessageTooLarge(f"a {len(envelope)}-byte envelope does not fit in {size}")
    return envelope + b" " * (size - len(envelope))


def _fits(message: Mapping[str, Any], signing: SigningKey) -> bytes | None:
    envelope = make_envelope(message, signing)
    return envelope if len(envelope) <= wire.OWNER_MESSAGE_BYTES else None


def pending_message(
    views: Sequence[PendingView],
    audit_head: AuditHead | Mapping[str, Any],
    now_ms: int,
    *,
    signing: SigningKey,
    rotation: int = 0,
) -> bytes:
    """protocol.md §5.1: the signed pending list, unpadded. Every compact entry; the
    details of as many requests as fit, starting with request `rotation % n` (the
    caller advances `rotation` by one per message)."""
    base: dict[str, Any] = {
        "type": "pending",
        "at": format_time(now_ms),
        "audit_head": _head_json(audit_head),
        "requests": [dict(v.entry) for v in views],
        "details": [],
    }
    best = _fits(base, signing)
    if best is None:
        raise OwnerMessageTooLarge("the compact pending entries alone do not fit")
    n = len(views)
    chosen: list[dict[str, Any]] = []
    for i in range(n):
        candidate = chosen + [dict(views[(rotation + i) % n].details)]
        envelope = _fits({**base, "details": candidate}, signing)
        if envelope is None:
            if not chosen:
                raise OwnerMessageTooLarge("one request's details do not fit")
            continue  # a smaller one further on may still fit
        chosen, best = candidate, envelope
    return best


def shares_message(
    shares: Sequence[Mapping[str, Any]],
    audit_head: AuditHead | Mapping[str, Any],
    now_ms: int,
    *,
    signing: SigningKey,
) -> bytes:
    """protocol.md §6.3: the signed share progress (entries are `Outbox.shares(now_ms)`)."""
    message = {
        "type": "shares",
        "at": format_time(now_ms),
        "audit_head": _head_json(audit_head),
        "shares": [dict(share) for share in shares],
    }
    envelope = _fits(message, signing)
    if envelope is None:
        raise OwnerMessageTooLarge("the shares message does not fit")
    return envelope


def seal_owner_envelope(envelope: bytes, recipients: Sequence[x25519.Recipient]) -> bytes:
    """Pad to exactly 16,384 bytes and seal (protocol.md §3)."""
    return seal(pad_to(envelope, wire.OWNER_MESSAGE_BYTES), recipients, pad_block=None)


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
        pending: Callable[[], Sequence[PendingView]],
        shares: Callable[[], list[dict[str, Any]]],
        audit_head: Callable[[], AuditHead],
        clock: Clock,
        period_s: float,
        stop: threading.Event,
        lead_s: float = DEFAULT_LEAD_S,
    ) -> None:
        if period_s < wire.MIN_SYNC_SECONDS:
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
        self._pending = pending
        self._shares = shares
        self._audit_head = audit_head
        self._clock = clock
        self._period = float(period_s)
        self._lead = min(float(lead_s), self._period / 2)
        self._stop = stop
        self._rotation = 0
        self.failures = 0  # messages not published (doorbellctl status)
        self._failing = False

    def run(self) -> None:
        if not self._recipients:
            logger.warning("owner channel: no owner.recipients configured; publishing nothing")
            return
        start = self._clock.monotonic()
        k, target = 0, start
        prepared = self.prepare(self._clock.wall_ms())
        while not self._stop.is_set():
            delay = target - self._clock.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.send(prepared)
            k, target = next_instant(start, self._period, self._clock.monotonic(), k)
            build_at = target - self._lead
            delay = build_at - self._clock.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            # The wall time the message will be published at, to the precision it says.
            wall_at = self._clock.wall_ms() + round((target - self._clock.monotonic()) * 1000)
            prepared = self.prepare(wall_at)

    def prepare(self, at_ms: int) -> list[tuple[str, bytes]]:
        """Build and seal both messages for publishing at `at_ms`. Failures are logged,
        never raised: that topic is skipped this round, the next comes on schedule."""
        try:
            head = self._audit_head()
        except Exception:  # a loop boundary
            self._failed("audit head")
            return []
        signing = self._identity.signing
        builders: tuple[tuple[str, Callable[[], bytes]], ...] = (
            (
                self._topics.pending,
                lambda: pending_message(
                    self._pending(), head, at_ms, signing=signing, rotation=self._rotation
                ),
            ),
            (
                self._topics.shares,
                lambda: shares_message(self._shares(), head, at_ms, signing=signing),
            ),
        )
        out = []
        for topic, build in builders:
            try:
                out.append((topic, seal_owner_envelope(build(), self._recipients)))
            except Exception:  # a loop boundary: a source may fail
                self._failed(topic)
        self._rotation += 1
        return out

    def send(self, prepared: Sequence[tuple[str, bytes]]) -> None:
        ok = len(prepared) == 2
        for topic, sealed in prepared:
            try:
                self._publish(topic, sealed)
            except Exception:  # a loop boundary: the broker may be down
                ok = False
                self._failed(topic)
        if ok:
            self._failing = False

    def publish_round(self) -> None:
        """Build, seal and publish both topics once, now (tests and start-up checks)."""
        self.send(self.prepare(self._clock.wall_ms()))

    def _failed(self, what: str) -> None:
        self.failures += 1
        # The traceback once per run of failures: a broker down for a day must not flood
        # the journal, but the first failure must say why.
        logger.warning("owner channel: could not publish %s", what, exc_info=not self._failing)
        self._failing = True
