"""What happens to a request on this device, from arrival to the owner's decision.

`RequestFlow` owns the life of a request: checked (sync.rfa), persisted as pending
(device.state), its window pinned in the buffer, audited; then decided by the owner
(app, button or CLI: one decision record), or declined when it is not decided in time.
Only an approval hands a share job to the outbox.

The one way to the outbox: `_apply` with a Decision that came out of
`sync.decision.check_decision` (app) or `sync.decision.local_decision` (button, CLI) for
a request that `StateStore.record_decision` found pending and closed in the same
transaction as the decision and its nonce; or, at start-up, an approval recorded that
way whose job was not queued yet (the daemon died in between). Nothing else calls
`Outbox.enqueue`.

Nothing here publishes anything: declined, rejected and expired requests leave no trace
outside the device (protocol.md §3.1); the owner learns of requests through the sealed,
fixed-rhythm owner channel.

Every public method is serialised by one lock, so the intake worker, the button and the
control socket can call in from their own threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.identity import DeviceIdentity
from device.owner_channel import PendingView
from device.state import PendingRequest, RequestState, StateStore
from foundation import wire
from foundation.clock import Clock
from foundation.display import agency_label, shown
from foundation.times import Window, format_time
from foundation.wire import FINAL_SHARE_STATES, MAX_MESSAGE_BYTES, ShareState
from sync.decision import (
    DecisionRejected,
    DecisionRejectReason,
    check_decision,
    local_decision,
    nothing_to_send,
)
from sync.errors import SealError
from sync.models import ConsentMethod, Decision, Rfa
from sync.rfa import (
    Accepted,
    DeviceFacts,
    Prechecked,
    Rejected,
    RejectReason,
    TrustedAgencyKey,
    precheck,
    verify_and_check,
)
from sync.seal import unseal

logger = logging.getLogger(__name__)

# An approved window stays pinned while its share runs; the uploader's final state
# (foundation.wire.FINAL_SHARE_STATES) releases it, and this bounds it if that never comes.
SHARE_PIN_MS = 14 * 24 * 3600 * 1000
AGE_MAGIC = b"age-encryption.org/v1\n"
_REFUSAL_LINES = 10
# The audit event that records a request's arrival in each state.
_AUDIT_EVENT = {
    RequestState.PENDING: "rfa_accepted",
    RequestState.APPROVED: "decision",
    RequestState.QUEUED: "decision",
    RequestState.DENIED: "decision",
    RequestState.EXPIRED: "expired",
}


class AuditSink(Protocol):
    def append(self, event: str, fields: Mapping[str, Any]) -> Any: ...

    def count_rejection(self, reason: str, now_ms: int) -> None: ...

    def request_events(self) -> set[tuple[str, str]]: ...


class PinningBuffer(Protocol):
    def pin(self, pin_id: str, window: Window, until_ms: int) -> Any: ...

    def unpin(self, pin_id: str) -> bool: ...

    def footage_ms(self, window: Window) -> int: ...


class ShareQueue(Protocol):
    def enqueue(self, rfa: Rfa, decision: Decision, *, now_ms: int) -> None: ...

    def has_job(self, rfa_id: str) -> bool: ...


class FlowReason(StrEnum):
    """The reasons of an `Outcome` that are the flow's own, not a rule's."""

    ACCEPTED = "accepted"  # a request, now pending
    APPROVED = "approved"
    DENIED = "denied"
    BAD_METHOD = "bad_method"  # a local decision that claims to come from the app
    UNEXPECTED_TOPIC = "unexpected_topic"  # a message on a topic the device reads not


D = DecisionRejectReason
Reason = FlowReason | RejectReason | DecisionRejectReason


def counter_name(reason: Reason) -> str:
    """The audit log's rejection counter for `reason`: a decision's rule is prefixed
    `decision_`, so that it is not taken for the request rule of the same name."""
    return f"decision_{reason}" if isinstance(reason, DecisionRejectReason) else str(reason)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message or command, for logs, the intake and the CLI.

    `reason` is accepted, approved or denied (`FlowReason`) when `accepted`; otherwise
    the rule broken: a request's (sync.rfa.RejectReason), a decision's
    (sync.decision.DecisionRejectReason, not_pending among them) or the flow's own.
    `counted` is true when the rejection was only counted (it failed before a signature
    verified, or repeated a seen id), false when it was logged with its id. `verified` is
    true when a signature verified on the way, whatever came of it: such a message is
    acknowledged at the protocol's fixed delay (protocol.md §3, revision 1.2), junk at
    once."""

    accepted: bool
    reason: Reason
    rfa_id: str | None = None
    detail: str = ""
    counted: bool = False
    verified: bool = False


def details_of(rfa: Rfa) -> dict[str, Any]:
    """protocol.md §5.1: a request's long fields, as the owner channel carries them."""
    public = rfa.public_json()
    return {key: public[key] for key in wire.PENDING_DETAIL_KEYS}


class RequestFlow:
    def __init__(
        self,
        *,
        store: StateStore,
        audit: AuditSink,
        buffer: PinningBuffer,
        outbox: ShareQueue,
        facts: DeviceFacts,
        trusted_agencies: Mapping[str, TrustedAgencyKey],
        owner_keys: Mapping[str, Ed25519PublicKey],
        identity: DeviceIdentity,
        clock: Clock,
        decide_within_ms: int,
        share_contact_by_default: bool,
    ) -> None:
        self._store = store
        self._audit = audit
        self._buffer = buffer
        self._outbox = outbox
        self._facts = facts
        self._trusted = dict(trusted_agencies)
        self._owner_keys = dict(owner_keys)
        self._identity = identity
        self._clock = clock
        self._decide_within_ms = decide_within_ms
        self._share_contact_default = share_contact_by_default
        self._lock = threading.RLock()
        self._footage_s: dict[str, float] = {}  # pending request id -> seconds of footage
        self._refusal_minute, self._refusal_lines = -1, 0

    @property
    def trusted_agencies(self) -> Mapping[str, TrustedAgencyKey]:
        return self._trusted

    # ---- start-up --------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a crash interrupted: audit entries not yet written, approvals not
        yet in the outbox, pins of pending requests; then decline what expired while
        the daemon was down. Call once at start-up, before messages flow."""
        with self._lock:
            unaudited = [record for record in self._store.requests() if not record.audited]
            logged = self._audit.request_events() if unaudited else set()
            for record in unaudited:
                if (_AUDIT_EVENT[record.state], record.rfa_id) in logged:
                    self._store.mark_audited(record.rfa_id, record.state)  # only the mark was lost
                else:
                    self._audit_state(record.rfa_id, record.state, record.rfa)
            for rfa, decision in self._store.approved():
                logger.info("handing an approval recorded before a restart to the outbox")
                self._enqueue(rfa, decision)
            for pending in self._store.pending():
                self._pin(pending.rfa.id, pending.rfa.window, pending.decide_by_ms)
                self._footage(pending.rfa)
            self.expire_due()

    # ---- requests --------------------------------------------------------------------

    def handle_rfa(self, payload: bytes) -> Outcome:
        """A message from the request topic, start to finish."""
        pre = precheck(payload, self._trusted, self._store.seen_ids)
        if isinstance(pre, Rejected):
            return self._count(pre.reason, pre.detail)
        return self.handle_prechecked(pre)

    def handle_prechecked(self, pre: Prechecked) -> Outcome:
        """The expensive half: verify the signature, apply the rules, record the result
        durably. Returns once everything the message caused is on disk."""
        with self._lock:
            # Again, now that the copies queued behind the cheap check are serialised:
            # a copy of a request that an earlier copy got rejected (or accepted) is a
            # replay, however the rules would judge it now.
            if any(key in self._store.seen_ids for key in pre.replay_keys):
                return self._count(RejectReason.REPLAY, "This request id was already seen.")
            now = self._clock.wall_ms()
            facts = self._facts
            if self._store.requests_paused():  # the owner's opt-out, rule 8
                facts = replace(facts, requests_enabled=False)
            result = verify_and_check(
                pre,
                facts,
                self._trusted,
                now,
                pending_count=self._store.pending_count(),
                case_count=lambda agency_id, case_number: self._store.case_count(
                    agency_id, case_number, since_ms=now - wire.CASE_PERIOD_MS
                ),
            )
            if isinstance(result, Rejected):
                if not result.verified:
                    return self._count(result.reason, result.detail)
                rfa_id = result.rfa_id
                # Audit first: a crash in between re-runs this on redelivery (a second
                # entry) rather than losing the entry.
                self._audit.append("rfa_rejected", {"rfa_id": rfa_id, "reason": result.reason})
                # Remembered by its id when it has a canonical one, and by its signature
                # always: a replay of a request without a usable id is counted, not
                # audited again.
                keys = [pre.signature_key] if rfa_id is None else [rfa_id, pre.signature_key]
                self._store.mark_seen(keys, now)
                # The id it claims when it has no canonical one: whatever the agency wrote,
                # escaped (foundation/display.py) and cut, as is the detail.
                logger.info(
                    "request %s refused: %s (%s)",
                    shown(rfa_id or pre.claimed_id, limit=80),
                    result.reason,
                    shown(result.detail),
                )
                return Outcome(False, result.reason, rfa_id, result.detail, verified=True)
            assert isinstance(result, Accepted)
            rfa = result.rfa
            decide_by = min(rfa.expires_at_ms, now + self._decide_within_ms)
            if not self._store.add_pending(rfa, received_at_ms=now, decide_by_ms=decide_by):
                # Another copy was queued behind the precheck and got here first.
                return self._count(
                    RejectReason.REPLAY, "This request id was already seen.", verified=True
                )
            self._pin(rfa.id, rfa.window, decide_by)
            self._footage(rfa)  # measured once, now, not when the owner channel publishes
            self._audit_state(rfa.id, RequestState.PENDING, rfa)
            logger.info(
                "request %s from %s, case %s, is pending",
                shown(rfa.id),
                agency_label(rfa.agency.id, rfa.agency.name),
                shown(rfa.case_number),
            )
            return Outcome(True, FlowReason.ACCEPTED, rfa.id, verified=True)

    def pending(self) -> list[PendingRequest]:
        return self._store.pending()

    def pending_views(self) -> list[PendingView]:
        """protocol.md §5.1: per pending request, the compact entry (exactly the keys
        wire.PENDING_ENTRY_KEYS) and its details (wire.PENDING_DETAIL_KEYS).

        Cheap and independent of the buffer's size: a request's footage is measured once
        (its window is in the past and pinned, so the figure cannot change) and kept."""
        views = []
        with self._lock:
            pending = self._store.pending()
            self._footage_s = {
                p.rfa.id: self._footage_s[p.rfa.id] for p in pending if p.rfa.id in self._footage_s
            }
            for p in pending:
                details = details_of(p.rfa)
                values = {
                    "id": p.rfa.id,
                    "agency_id": p.rfa.agency.id,
                    "case_number": p.rfa.case_number,
                    "window": p.rfa.window.to_json(),
                    "expires_at": format_time(p.rfa.expires_at_ms),
                    "decide_by": format_time(p.decide_by_ms),
                    "footage_seconds": self._footage(p.rfa),
                    "details_sha256": wire.details_sha256(details),
                }
                # exactly the keys of the contract: one missing here fails loudly
                entry = {key: values[key] for key in wire.PENDING_ENTRY_KEYS}
                views.append(PendingView(entry, details))
        return views

    def pending_entries(self) -> list[dict[str, Any]]:
        """What the local CLI shows: each compact entry with its details."""
        return [{**view.details, **view.entry} for view in self.pending_views()]

    def _footage(self, rfa: Rfa) -> float:
        cached = self._footage_s.get(rfa.id)
        if cached is None:
            try:
                cached = self._buffer.footage_ms(rfa.window) / 1000
            except Exception:  # the owner still sees the request without a figure
                logger.exception("could not measure the footage of request %s", shown(rfa.id))
                return 0.0
            self._footage_s[rfa.id] = cached
        return cached

    @property
    def requests_paused(self) -> bool:
        return self._store.requests_paused()

    def pause_requests(self, paused: bool) -> None:
        """The owner's opt-out (protocol.md §4 rule 8), kept across restarts: while paused,
        every new request is refused by that rule. Pending ones stay for the owner."""
        with self._lock:
            if self._store.requests_paused() == paused:
                return
            self._audit.append("requests_paused" if paused else "requests_resumed", {})
            self._store.set_requests_paused(paused)
            logger.info("requests %s by the owner", "paused" if paused else "resumed")

    # ---- decisions -------------------------------------------------------------------

    def handle_decision(self, sealed: bytes) -> Outcome:
        """A message from the owner's decision topic: sealed to this device, signed by an
        owner key. Anything that fails a check changes nothing (it is only counted)."""
        if len(sealed) > MAX_MESSAGE_BYTES:
            return self._count(D.OVERSIZED, "The message is over 16 KiB.")
        if not sealed.startswith(AGE_MAGIC):
            return self._count(D.MALFORMED, "The message is not an age file.")
        try:
            plaintext = unseal(sealed, [self._identity.age])
        except SealError:
            return self._count(
                D.UNDECRYPTABLE, "The message cannot be decrypted with this device's key."
            )
        with self._lock:
            now = self._clock.wall_ms()
            pending = {p.rfa.id: p.rfa for p in self._store.pending()}
            result = check_decision(
                plaintext,
                owner_keys=self._owner_keys,
                device_id=self._identity.device_id,
                pending=pending,
                used_nonces=self._store.used_nonces,
                now_ms=now,
            )
            if isinstance(result, DecisionRejected):
                self._log_refused_decision(str(result.reason), result.detail, now)
                return self._count(result.reason, result.detail, verified=result.verified)
            decision = result.decision
            rfa = pending.get(decision.rfa_id)
            if rfa is None:  # check_decision demands a pending request; belt and braces
                return self._count(
                    D.NOT_PENDING, "There is no such pending request.", verified=True
                )
            return self._apply(rfa, decision)

    def decide_locally(
        self,
        rfa_id: str,
        *,
        approve: bool,
        method: ConsentMethod,
        window: Window | None = None,
        share_contact: bool | None = None,
    ) -> Outcome:
        """The button or the CLI decided (the caller authenticated the owner locally).
        `share_contact` None (the button says nothing about it): the owner's
        `owner.share_contact_by_default`, applied here and nowhere else."""
        if method is ConsentMethod.APP:
            return Outcome(False, FlowReason.BAD_METHOD, rfa_id, "App decisions arrive sealed.")
        with self._lock:
            record = self._store.request(rfa_id)
            if record is None or record.state is not RequestState.PENDING or record.rfa is None:
                return Outcome(False, D.NOT_PENDING, rfa_id, "There is no such pending request.")
            contact = self._share_contact_default if share_contact is None else share_contact
            made = local_decision(
                record.rfa,
                approve=approve,
                method=method,
                now_ms=self._clock.wall_ms(),
                window=window,
                share_contact=contact,
            )
            if isinstance(made, DecisionRejected):
                return Outcome(False, made.reason, rfa_id, made.detail)
            # An approval that would send nothing is refused before it is recorded, so the
            # owner's one decision is not spent on it. Only here: a sealed decision from the
            # owner's app follows protocol §5.2 to the letter (recorded; the share then
            # fails with "no footage"), and the reference owner tool checks it before it
            # sends one.
            empty = nothing_to_send(made.window, self._buffer.footage_ms(made.window) > 0)
            if made.approve and empty:
                self._log_refused_decision(str(empty.reason), empty.detail, made.at_ms)
                return self._count(empty.reason, empty.detail)
            return self._apply(record.rfa, made)

    def _apply(self, rfa: Rfa, decision: Decision) -> Outcome:
        """Record an authenticated decision (its outcomes are all `verified`)."""
        if decision.rfa_id != rfa.id:
            return Outcome(
                False,
                D.NOT_PENDING,
                decision.rfa_id,
                "The decision names another request.",
                verified=True,
            )
        if not self._store.record_decision(decision):
            return Outcome(
                False,
                D.NOT_PENDING,
                rfa.id,
                "The request was already decided or has expired.",
                verified=True,
            )
        state = RequestState.APPROVED if decision.approve else RequestState.DENIED
        self._audit_state(rfa.id, state, rfa)
        if decision.approve:
            self._pin(rfa.id, decision.window, decision.at_ms + SHARE_PIN_MS)
            self._enqueue(rfa, decision)
            logger.info("request %s approved (%s); share queued", shown(rfa.id), decision.method)
            return Outcome(True, FlowReason.APPROVED, rfa.id, verified=True)
        self._unpin(rfa.id)
        logger.info("request %s denied (%s)", shown(rfa.id), decision.method)
        return Outcome(True, FlowReason.DENIED, rfa.id, verified=True)

    def _enqueue(self, rfa: Rfa, decision: Decision) -> None:
        # Outbox.enqueue is idempotent by rfa_id and durable when it returns; marking the
        # request queued afterwards makes a crash in between re-enqueue (a no-op), never
        # lose the job.
        self._outbox.enqueue(rfa, decision, now_ms=self._clock.wall_ms())
        self._store.mark_queued(rfa.id)

    # ---- time ------------------------------------------------------------------------

    def expire_due(self) -> list[str]:
        """Decline every request whose decide-by time (or expiry) has come (and write the
        store's marks that wait for a transaction: housekeeping calls this)."""
        expired = []
        with self._lock:
            self._store.save_marks()
            now = self._clock.wall_ms()
            for p in self._store.pending():
                if now < min(p.decide_by_ms, p.rfa.expires_at_ms):
                    continue
                if self._store.expire(p.rfa.id, now):
                    self._audit_state(p.rfa.id, RequestState.EXPIRED, None)
                    self._unpin(p.rfa.id)
                    expired.append(p.rfa.id)
                    logger.info("request %s expired undecided", shown(p.rfa.id))
        return expired

    # ---- shares ----------------------------------------------------------------------

    def on_share_state(self, rfa_id: str, state: ShareState, error: str | None) -> None:
        """The uploader's progress: audited; the pin goes once the share has ended."""
        with self._lock:
            self._audit.append("share", {"rfa_id": rfa_id, "state": state, "error": error})
            if state in FINAL_SHARE_STATES:
                self._unpin(rfa_id)

    # ---- helpers ---------------------------------------------------------------------

    def _log_refused_decision(self, reason: str, detail: str, now_ms: int) -> None:
        """One line naming the rule that refused a decision that decrypted for this device,
        so the owner can tell why nothing happened; at most `_REFUSAL_LINES` a minute, as
        anyone who knows the device's recipient can send them."""
        minute = now_ms // 60_000
        if minute != self._refusal_minute:
            self._refusal_minute, self._refusal_lines = minute, 0
        self._refusal_lines += 1
        if self._refusal_lines <= _REFUSAL_LINES:
            logger.warning("a decision was refused by rule %s: %s", shown(reason), shown(detail))
        elif self._refusal_lines == _REFUSAL_LINES + 1:
            logger.warning("more decisions refused this minute; counted in the audit log only")

    def _count(self, reason: Reason, detail: str, *, verified: bool = False) -> Outcome:
        self._audit.count_rejection(counter_name(reason), self._clock.wall_ms())
        return Outcome(False, reason, None, detail, counted=True, verified=verified)

    def _audit_state(self, rfa_id: str, state: RequestState, rfa: Rfa | None) -> None:
        if state is RequestState.PENDING:
            assert rfa is not None
            self._audit.append(
                _AUDIT_EVENT[state],
                {"rfa_id": rfa_id, "agency_id": rfa.agency.id, "case_number": rfa.case_number},
            )
        elif state is RequestState.EXPIRED:
            self._audit.append(_AUDIT_EVENT[state], {"rfa_id": rfa_id})
        else:
            decision = self._store.decision(rfa_id)
            if decision is not None:
                self._audit.append(
                    _AUDIT_EVENT[state],
                    {
                        "rfa_id": rfa_id,
                        "decision": "approve" if decision.approve else "deny",
                        "method": str(decision.method),
                        "window": decision.window.to_json(),
                        "share_contact": decision.share_contact,
                        "owner_kid": decision.owner_kid,
                    },
                )
        self._store.mark_audited(rfa_id, state)

    def _pin(self, rfa_id: str, window: Window, until_ms: int) -> None:
        try:
            self._buffer.pin(rfa_id, window, until_ms)
        except Exception:
            # The request still stands; recover() pins again at the next start.
            logger.exception("could not pin the window of request %s", shown(rfa_id))

    def _unpin(self, rfa_id: str) -> None:
        try:
            self._buffer.unpin(rfa_id)
        except Exception:
            logger.exception("could not release the pin of request %s", shown(rfa_id))
