"""Is this owner's decision valid for this device and this pending request? (protocol.md §5.2)

Pure functions: `precheck_sealed` makes the cheap checks of a sealed message (its size
and its age header, before anything is decrypted: the intake runs them on the network
thread, once per message), `check_decision` judges an app decision (the plaintext of a
sealed message), `local_decision` makes the same record for the button and the CLI.
None raises for any input; a decision that fails any check changes nothing.

Choices made where docs/protocol.md is silent:

- The plaintext must be exactly 4,096 bytes (`wire.DECISION_BYTES`): the envelope's
  text followed by ASCII spaces (§5.2), so that every kind of decision looks alike; any
  other size is `wrong_size`, before anything is parsed. It must be UTF-8. The padding
  is not part of `Decision.envelope_text`, the envelope's JSON text as received.
- The payload is parsed strictly, as for requests: `NaN`/`Infinity` literals and
  duplicate keys are `malformed`.
- `share_contact` must be present and a JSON boolean; a missing or non-boolean value
  is `malformed`, so a share is never named (or anonymous) by default.
- `window` may be absent or `null` (share the request's whole window); when present
  it must be an object with strict RFC 3339 `start` and `end`, `start <= end` (a
  single instant is allowed), inside the request's window, edges included. It is
  checked for a `deny` too: a malformed message changes nothing.
- `issued_at` must satisfy `|issued_at - now| <= 10 min`, both edges included.
- `nonce` is 1-128 printable ASCII characters without spaces (0x21-0x7e), so it can be
  stored and compared as is. The caller records it as used in the same transaction as
  the accepted decision; rejected decisions do not consume their nonce.
- A decision on a request whose `expires_at` has passed (`now >= expires_at`) is
  `expired`, even if the request has not yet been swept from the pending list.
- `Decision.at_ms` is the device's clock when it accepted the decision (`now_ms`), for
  the app, the button and the CLI alike; the owner's `issued_at` stays in the envelope.
- Checks run in this order, the first failure is the reason: size, envelope, signature,
  payload JSON, type, device_id, rfa_id pending, expired, decision, share_contact,
  issued_at, nonce, nonce reuse, window.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation.errors import MisuseError, TimeFormatError
from foundation.times import Window, parse_time
from foundation.wire import DECISION_BYTES, MAX_DECISION_SKEW_MS, MAX_MESSAGE_BYTES
from sync.envelope import parse_envelope, strict_json_object, verify_envelope
from sync.errors import EnvelopeError, EnvelopeFault
from sync.models import ConsentMethod, Decision, Rfa

MAX_NONCE_CHARS = 128
AGE_MAGIC = b"age-encryption.org/v1\n"  # the first line of every age file
_NONCE = re.compile(rf"[\x21-\x7e]{{1,{MAX_NONCE_CHARS}}}")


class DecisionRejectReason(StrEnum):
    OVERSIZED = "oversized"
    WRONG_SIZE = "wrong_size"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_TYPE = "bad_type"
    WRONG_DEVICE = "wrong_device"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    BAD_DECISION = "bad_decision"
    BAD_TIME = "bad_time"
    CLOCK_SKEW = "clock_skew"
    BAD_NONCE = "bad_nonce"
    NONCE_REUSED = "nonce_reused"
    BAD_WINDOW = "bad_window"
    WINDOW_OUTSIDE_REQUEST = "window_outside_request"
    # an approval of a window that would send nothing (nothing_to_send)
    NOTHING_TO_SEND = "nothing_to_send"
    # found by the device before these checks: a sealed decision it cannot open
    UNDECRYPTABLE = "undecryptable"


@dataclass(frozen=True, slots=True)
class DecisionAccepted:
    decision: Decision


@dataclass(frozen=True, slots=True)
class DecisionRejected:
    """A decision that changes nothing. `verified` is True when an enrolled owner key
    signed it; `detail` is short and safe to log."""

    reason: DecisionRejectReason
    detail: str = ""
    verified: bool = False


class _Refuse(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: DecisionRejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


D = DecisionRejectReason


@dataclass(frozen=True, slots=True)
class SealedDecision:
    """A message from the owner's decision topic that passed `precheck_sealed`; not
    opened yet."""

    data: bytes


def precheck_sealed(message: bytes) -> SealedDecision | DecisionRejected:
    """The cheap checks of a sealed decision, in this order: at most
    `MAX_MESSAGE_BYTES` (16 KiB), and an age file."""
    if len(message) > MAX_MESSAGE_BYTES:
        return DecisionRejected(D.OVERSIZED, "The message is over 16 KiB.")
    if not message.startswith(AGE_MAGIC):
        return DecisionRejected(D.MALFORMED, "The message is not an age file.")
    return SealedDecision(bytes(message))


def window_within(requested: Window, narrowed: Window) -> bool:
    """True when `narrowed` lies inside `requested`, edges included."""
    return requested.start_ms <= narrowed.start_ms and narrowed.end_ms <= requested.end_ms


def nothing_to_send(window: Window, has_footage: bool) -> DecisionRejected | None:
    """Would a share of `window` send nothing? An approval of such a window is refused
    before it is recorded, so that the owner's one decision is not spent on a share that
    can only fail: a window of zero length, or one the buffer holds no footage of. A
    partly covered window is allowed."""
    if window.duration_ms <= 0:
        return DecisionRejected(
            D.NOTHING_TO_SEND,
            "The window has no length (its start and end are the same moment), so "
            "nothing would be sent.",
        )
    if not has_footage:
        return DecisionRejected(
            D.NOTHING_TO_SEND,
            "The doorbell holds no footage in this window, so nothing would be sent.",
        )
    return None


def check_decision(
    sealed_plaintext: bytes,
    *,
    owner_keys: Mapping[str, Ed25519PublicKey],
    device_id: str,
    pending: Mapping[str, Rfa],
    used_nonces: Container[str],
    now_ms: int,
) -> DecisionAccepted | DecisionRejected:
    """Judge an owner's decision: the decrypted plaintext of `owner/decision`."""
    if not isinstance(sealed_plaintext, bytes | bytearray):
        return DecisionRejected(D.MALFORMED, "The message is not bytes.")
    if len(sealed_plaintext) != DECISION_BYTES:
        return DecisionRejected(
            D.WRONG_SIZE, f"The decision is not exactly {DECISION_BYTES} bytes."
        )
    body = bytes(sealed_plaintext).rstrip(b" ")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return DecisionRejected(D.MALFORMED, "The decision is not UTF-8 text.")
    try:
        envelope = parse_envelope(text)
    except EnvelopeError as exc:
        return DecisionRejected(D.MALFORMED, f"The envelope is malformed ({exc}).")
    try:
        verified = verify_envelope(envelope, owner_keys)
    except EnvelopeError as exc:
        if exc.reason is EnvelopeFault.UNKNOWN_KEY:
            return DecisionRejected(D.UNKNOWN_KEY, "The signing key is not an enrolled owner key.")
        if exc.reason is EnvelopeFault.BAD_SIGNATURE:
            return DecisionRejected(D.BAD_SIGNATURE, "The signature does not verify.")
        return DecisionRejected(D.MALFORMED, "The payload is not a JSON object.", verified=True)
    payload = strict_json_object(verified.payload_text)
    if payload is None:
        return DecisionRejected(D.MALFORMED, "The payload is not strict JSON.", verified=True)
    try:
        decision = _apply_rules(
            payload,
            kid=verified.kid,
            envelope_text=text,
            device_id=device_id,
            pending=pending,
            used_nonces=used_nonces,
            now_ms=now_ms,
        )
    except _Refuse as refusal:
        return DecisionRejected(refusal.reason, refusal.detail, verified=True)
    return DecisionAccepted(decision)


def _parse_window(value: Any) -> Window | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refuse(D.BAD_WINDOW, "The window is not an object.")
    try:
        start, end = parse_time(value.get("start")), parse_time(value.get("end"))
    except TimeFormatError:
        raise _Refuse(D.BAD_WINDOW, "The window's times are not RFC 3339 UTC.") from None
    if start > end:
        raise _Refuse(D.BAD_WINDOW, "The window's start is after its end.")
    return Window(start, end)


def _apply_rules(
    p: dict[str, Any],
    *,
    kid: str,
    envelope_text: str,
    device_id: str,
    pending: Mapping[str, Rfa],
    used_nonces: Container[str],
    now_ms: int,
) -> Decision:
    if p.get("type") != "decision":
        raise _Refuse(D.BAD_TYPE, "The type is not decision.")
    if not isinstance(p.get("device_id"), str) or p.get("device_id") != device_id:
        raise _Refuse(D.WRONG_DEVICE, "The device_id is not this device's id.")
    rfa_id = p.get("rfa_id")
    rfa = pending.get(rfa_id) if isinstance(rfa_id, str) else None
    if rfa is None:
        raise _Refuse(D.NOT_PENDING, "The rfa_id is not a pending request.")
    if now_ms >= rfa.expires_at_ms:
        raise _Refuse(D.EXPIRED, "The request has expired.")
    verdict = p.get("decision")
    if verdict not in ("approve", "deny"):
        raise _Refuse(D.BAD_DECISION, "The decision is neither approve nor deny.")
    share_contact = p.get("share_contact")
    if not isinstance(share_contact, bool):
        raise _Refuse(D.MALFORMED, "The share_contact must be true or false.")
    try:
        issued_at = parse_time(p.get("issued_at"))
    except TimeFormatError:
        raise _Refuse(D.BAD_TIME, "The issued_at is not an RFC 3339 UTC time.") from None
    if abs(issued_at - now_ms) > MAX_DECISION_SKEW_MS:
        raise _Refuse(
            D.CLOCK_SKEW, "The issued_at is more than 10 minutes from the device's clock."
        )
    nonce = p.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise _Refuse(D.BAD_NONCE, "The nonce must be 1-128 printable ASCII characters.")
    if nonce in used_nonces:
        raise _Refuse(D.NONCE_REUSED, "The nonce was already used.")
    narrowed = _parse_window(p.get("window"))
    if narrowed is not None and not window_within(rfa.window, narrowed):
        raise _Refuse(D.WINDOW_OUTSIDE_REQUEST, "The window is not inside the request's window.")
    return Decision(
        rfa_id=rfa.id,
        approve=verdict == "approve",
        window=narrowed or rfa.window,
        share_contact=share_contact,
        method=ConsentMethod.APP,
        at_ms=now_ms,
        owner_kid=kid,
        envelope_text=envelope_text,
        nonce=nonce,
    )


def local_decision(
    rfa: Rfa,
    *,
    approve: bool,
    method: ConsentMethod,
    now_ms: int,
    window: Window | None,
    share_contact: bool,
) -> Decision | DecisionRejected:
    """The decision record for the local button or CLI, under the same window rule.

    Raises ValueError for `ConsentMethod.APP`: an app decision needs its signed
    envelope, so it can only come from `check_decision`.
    """
    if method is ConsentMethod.APP:
        raise MisuseError("app decisions come from check_decision")
    if now_ms >= rfa.expires_at_ms:
        return DecisionRejected(D.EXPIRED, "The request has expired.")
    if window is not None and not window_within(rfa.window, window):
        return DecisionRejected(
            D.WINDOW_OUTSIDE_REQUEST, "The window is not inside the request's window."
        )
    return Decision(
        rfa_id=rfa.id,
        approve=approve,
        window=window or rfa.window,
        share_contact=share_contact,
        method=method,
        at_ms=now_ms,
        owner_kid=None,
        envelope_text=None,
        nonce=None,
    )
