"""Is this Request for Assistance acceptable for this device, now? (protocol.md §4)

Pure functions over plain data: no clock, no I/O. `check_rfa` applies every rule of
§4 and returns `Accepted` or `Rejected` with one reason per rule; it never raises,
whatever the bytes. For the MQTT flood pipeline it is split in two stages:

- `precheck` does only cheap work and no signature maths: the 16 KiB size limit before
  anything is parsed, the envelope's JSON shape, a known `kid`, and the claimed `id`
  against the ids already seen (a replay costs nothing).
- `verify_and_check` verifies the signature and applies the rules.

A `Rejected` with `verified=False` failed before its signature verified: its claimed id
is not trusted and the audit only counts it per reason. With `verified=True` the
envelope verified under a trusted key and the audit may log `rfa_id` and the rule.

Choices made where docs/protocol.md is silent (each errs towards refusing):

- Size: a message of exactly 16,384 bytes is accepted, 16,385 is `oversized`.
- The message must be UTF-8 (no byte-order mark); Python's JSON reader would otherwise
  guess UTF-16/32.
- The envelope and the payload are parsed strictly (sync.envelope.strict_json):
  `NaN`, `Infinity` and `-Infinity` (which Python accepts) and repeated object keys
  (which parsers resolve differently, so an agency's verifier and the device could read
  different requests) make it `malformed`.
- `id` must be a UUID in canonical form: 36 characters, lowercase hex, hyphenated
  (`str(uuid.UUID(id)) == id`). Any version is accepted. One spelling per request keeps
  the replay check exact; braces, `urn:uuid:` or upper case are `bad_id`.
- Rule 10's limits count UTF-8 bytes. Rule 10 is applied first, to every known string
  field that is a string, before the other rules; strings in unknown fields are ignored
  with their fields (they are never stored, shown or forwarded). A known string holding
  a lone surrogate (which JSON escapes can express but UTF-8 cannot) is `malformed`; one
  holding a control or bidirectional-formatting character is `bad_characters`.
- `agency.name` and `description` are not demanded by §4, so a request without them is
  accepted: the name defaults to the agency id and the description to "". When present
  they must be strings (else `malformed`).
- `investigator.email` / `investigator.phone` count as present when they are non-empty
  strings; `null` or "" mean absent; any other type is `missing_contact`. The
  investigator's `name` must be a non-empty string.
- Wrong JSON types are reported under the rule of the field: `agency` not an object is
  `agency_mismatch`, `area` fields that are not numbers (strings, booleans, null) are
  `bad_area`, `window` not an object is `bad_window`, any time that is missing or not
  strict RFC 3339 with `Z` (foundation.times.parse_time) is `bad_time`, a non-string
  `recipient` is `bad_recipient`, a non-string `upload_url` is `unsafe_upload_url`.
- A request whose `expires_at` is not after its `issued_at` is `expired`.
- `radius_m` may be any finite number with `150 <= radius_m <= 805`; an integer is as
  good as a float. The device is inside when its great-circle distance (sync.geo) to the
  centre is `<= radius_m`.
- Rules are checked in the order of §4 (with rule 10 first, as said): the first broken
  rule is the reason reported.
- `rfa_id` is set on a verified rejection only when the payload's `id` is a canonical
  UUID; the caller records such ids as seen whether accepted or rejected, since §4
  says an id is accepted only if never seen before. A verified rejection without a
  canonical id is remembered by its signature instead (`Prechecked.replay_keys`), so
  replaying it is a counted `replay`, not a second audit entry. When the two stages run
  apart (a queue between them), the caller checks `Prechecked.replay_keys` against the
  seen ids again before the expensive stage, and as it records the acceptance, in the
  same transaction.
- Rule 12 counts the requests this device *accepted* for the same agency id and case
  number whose acceptance is less than 30 days old; the caller passes that count.
- `investigator.name` must hold a non-blank character; `case_number` may hold spaces
  (ASCII 0x20-0x7e except `"` and `\\`).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation import wire
from foundation.errors import TimeFormatError
from foundation.times import Window, parse_time
from foundation.wire import MAX_MESSAGE_BYTES
from sync.envelope import (
    Envelope,
    canonical_envelope,
    parse_envelope,
    strict_json_object,
    verify_envelope,
)
from sync.errors import EnvelopeError, EnvelopeFault
from sync.geo import distance_m
from sync.keys import key_id, parse_recipient, raw_public
from sync.models import Agency, Area, Investigator, Rfa
from sync.netpolicy import upload_url_problem

_AGENCY_ID = re.compile(wire.AGENCY_ID_PATTERN)
_CASE_NUMBER = re.compile(rf"[\x20-\x21\x23-\x5b\x5d-\x7e]{{1,{wire.MAX_CASE_NUMBER_CHARS}}}")
_FORBIDDEN_CHARS = re.compile(wire.FORBIDDEN_CHARS_PATTERN)


class RejectReason(StrEnum):
    """Why a request was refused: one stable token per rule, for audit counters."""

    # before the signature verifies (counted only, claimed id untrusted)
    OVERSIZED = "oversized"
    MALFORMED = "malformed"  # also after verification: payload not strict JSON object
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    # after the signature verifies (logged with the id)
    OVERSIZED_FIELD = "oversized_field"  # rule 10
    BAD_CHARACTERS = "bad_characters"  # rule 10
    AGENCY_MISMATCH = "agency_mismatch"  # rule 1
    BAD_TYPE = "bad_type"  # rule 2
    BAD_ID = "bad_id"  # rule 2
    BAD_AGENCY_ID = "bad_agency_id"  # rule 3
    MISSING_CASE_NUMBER = "missing_case_number"  # rule 3
    BAD_CASE_NUMBER = "bad_case_number"  # rule 3
    MISSING_CONTACT = "missing_contact"  # rule 3
    BAD_AREA = "bad_area"  # rule 4
    RADIUS_TOO_SMALL = "radius_too_small"  # rule 4
    RADIUS_TOO_LARGE = "radius_too_large"  # rule 4
    BAD_TIME = "bad_time"  # rules 5 and 6: a time that does not parse
    BAD_WINDOW = "bad_window"  # rule 5
    WINDOW_TOO_LONG = "window_too_long"  # rule 5
    WINDOW_IN_FUTURE = "window_in_future"  # rule 5
    ISSUED_IN_FUTURE = "issued_in_future"  # rule 6
    EXPIRED = "expired"  # rule 6
    LIFETIME_TOO_LONG = "lifetime_too_long"  # rule 6
    OUTSIDE_AREA = "outside_area"  # rule 7
    REQUESTS_OFF = "requests_off"  # rule 8
    BAD_RECIPIENT = "bad_recipient"  # rule 9
    UNSAFE_UPLOAD_URL = "unsafe_upload_url"  # rule 9
    TOO_MANY_PENDING = "too_many_pending"  # rule 11
    CASE_LIMIT = "case_limit"  # rule 12


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the rules need to know about this device, from its config and state."""

    device_id: str
    lat: float
    lon: float
    requests_enabled: bool
    allow_plain_http_loopback: bool


@dataclass(frozen=True, slots=True)
class TrustedAgencyKey:
    """An agency's Ed25519 key the device trusts, bound to that agency's id."""

    agency_id: str
    public_key: Ed25519PublicKey

    @property
    def kid(self) -> str:
        return key_id(raw_public(self.public_key))


@dataclass(frozen=True, slots=True)
class Accepted:
    rfa: Rfa


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused request. `detail` is short and safe to log (no contact details)."""

    reason: RejectReason
    verified: bool
    rfa_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Prechecked:
    """An envelope that passed the cheap checks; `claimed_id` is not yet trustworthy."""

    envelope: Envelope
    envelope_text: str
    claimed_id: str | None

    @property
    def signature_key(self) -> str:
        """The seen-id key of a request without a canonical id: its signature's hash
        (canonical base64url is enforced, so a replay carries the same bytes)."""
        return signature_key(self.envelope.sig)

    @property
    def replay_keys(self) -> tuple[str, ...]:
        keys = (self.signature_key,)
        return keys if self.claimed_id is None else (self.claimed_id, *keys)


def signature_key(sig: bytes) -> str:
    return "sig:" + hashlib.sha256(sig).hexdigest()


class _Refuse(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- helpers ----------------------------------------------------------------------------


def is_canonical_uuid(value: object) -> bool:
    """True for a UUID written as 36 lowercase hex-and-hyphen characters."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_json_number(value: object) -> bool:
    """A finite JSON number: int or float, not bool (Python's bool is an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _number(value: object) -> float | None:
    return float(value) if is_json_number(value) else None  # type: ignore[arg-type]


# --- stage 1: cheap checks --------------------------------------------------------------


def precheck(
    envelope_bytes: bytes,
    trusted: Mapping[str, TrustedAgencyKey],
    seen: Container[str],
) -> Prechecked | Rejected:
    """Size, envelope shape, known kid and replay, without any signature work."""
    if not isinstance(envelope_bytes, bytes | bytearray):
        return Rejected(RejectReason.MALFORMED, verified=False, detail="The message is not bytes.")
    if len(envelope_bytes) > MAX_MESSAGE_BYTES:
        return Rejected(
            RejectReason.OVERSIZED, verified=False, detail="The message is over 16 KiB."
        )
    try:
        text = bytes(envelope_bytes).decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(
            RejectReason.MALFORMED, verified=False, detail="The message is not UTF-8 text."
        )
    try:
        envelope = parse_envelope(text)
    except EnvelopeError as exc:
        return Rejected(
            RejectReason.MALFORMED, verified=False, detail=f"The envelope is malformed ({exc})."
        )
    if envelope.kid not in trusted:
        return Rejected(
            RejectReason.UNKNOWN_KEY,
            verified=False,
            detail="The signing key is not that of a trusted agency.",
        )
    pre = Prechecked(
        envelope=envelope, envelope_text=text, claimed_id=_claimed_id(envelope.payload_text)
    )
    if any(key in seen for key in pre.replay_keys):
        return Rejected(
            RejectReason.REPLAY, verified=False, detail="This request id was already seen."
        )
    return pre


def _claimed_id(payload_text: str) -> str | None:
    doc = strict_json_object(payload_text)
    claimed = None if doc is None else doc.get("id")
    return claimed if isinstance(claimed, str) else None


# --- stage 2: signature and rules -------------------------------------------------------


def verify_and_check(
    pre: Prechecked,
    device: DeviceFacts,
    trusted: Mapping[str, TrustedAgencyKey],
    now_ms: int,
    *,
    pending_count: int,
    case_count: Callable[[str, str], int] | int = 0,
) -> Accepted | Rejected:
    """Verify the signature, then apply rules 1-12 of protocol.md §4 in order.

    `case_count(agency_id, case_number)` (or a fixed int) is how many requests with that
    agency id and case number this device accepted in the last 30 days (rule 12)."""
    agency_key = trusted.get(pre.envelope.kid)
    if agency_key is None:
        return Rejected(
            RejectReason.UNKNOWN_KEY,
            verified=False,
            detail="The signing key is not that of a trusted agency.",
        )
    try:
        verified = verify_envelope(pre.envelope, {pre.envelope.kid: agency_key.public_key})
    except EnvelopeError as exc:
        if exc.reason is EnvelopeFault.BAD_SIGNATURE:
            return Rejected(
                RejectReason.BAD_SIGNATURE, verified=False, detail="The signature does not verify."
            )
        if exc.reason is EnvelopeFault.UNKNOWN_KEY:
            return Rejected(
                RejectReason.UNKNOWN_KEY,
                verified=False,
                detail="The signing key is not that of a trusted agency.",
            )
        # the signature held, but the payload is not a JSON object: logged as verified
        return Rejected(
            RejectReason.MALFORMED, verified=True, detail="The payload is not a JSON object."
        )
    payload = strict_json_object(verified.payload_text)
    if payload is None:
        return Rejected(
            RejectReason.MALFORMED,
            verified=True,
            detail="The payload is not strict JSON (NaN, Infinity or a repeated key).",
        )
    raw_id = payload.get("id")
    rfa_id = raw_id if is_canonical_uuid(raw_id) else None
    try:
        rfa = _apply_rules(
            payload,
            kid=verified.kid,
            envelope_text=canonical_envelope(pre.envelope),
            agency_key=agency_key,
            device=device,
            now_ms=now_ms,
            pending_count=pending_count,
            case_count=case_count,
        )
    except _Refuse as refusal:
        return Rejected(refusal.reason, verified=True, rfa_id=rfa_id, detail=refusal.detail)
    return Accepted(rfa)


def check_rfa(
    envelope_bytes: bytes,
    device: DeviceFacts,
    trusted: Mapping[str, TrustedAgencyKey],
    seen: Container[str],
    now_ms: int,
    *,
    pending_count: int,
    case_count: Callable[[str, str], int] | int = 0,
) -> Accepted | Rejected:
    """Every rule of protocol.md §4: both stages in one call. Never raises."""
    pre = precheck(envelope_bytes, trusted, seen)
    if isinstance(pre, Rejected):
        return pre
    return verify_and_check(
        pre, device, trusted, now_ms, pending_count=pending_count, case_count=case_count
    )


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    """Follow object keys; None when any step is missing or not an object."""
    node: Any = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


_STRING_FIELDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("type",), wire.MAX_STRING_BYTES),
    (("id",), wire.MAX_STRING_BYTES),
    (("agency", "id"), wire.MAX_STRING_BYTES),
    (("agency", "name"), wire.MAX_STRING_BYTES),
    (("case_number",), wire.MAX_STRING_BYTES),
    (("investigator", "name"), wire.MAX_STRING_BYTES),
    (("investigator", "email"), wire.MAX_STRING_BYTES),
    (("investigator", "phone"), wire.MAX_STRING_BYTES),
    (("description",), wire.MAX_DESCRIPTION_BYTES),
    (("window", "start"), wire.MAX_STRING_BYTES),
    (("window", "end"), wire.MAX_STRING_BYTES),
    (("issued_at",), wire.MAX_STRING_BYTES),
    (("expires_at",), wire.MAX_STRING_BYTES),
    (("recipient",), wire.MAX_STRING_BYTES),
    (("upload_url",), wire.MAX_STRING_BYTES),
)


def string_problem(value: str, limit: int) -> RejectReason | None:
    """Rule 10 for one string: at most `limit` UTF-8 bytes, no control or
    bidirectional-formatting character. MALFORMED for a lone surrogate."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return RejectReason.MALFORMED
    if size > limit:
        return RejectReason.OVERSIZED_FIELD
    if _FORBIDDEN_CHARS.search(value) is not None:
        return RejectReason.BAD_CHARACTERS
    return None


def _time(value: Any, name: str) -> int:
    try:
        return parse_time(value)
    except TimeFormatError:
        raise _Refuse(RejectReason.BAD_TIME, f"The {name} is not an RFC 3339 UTC time.") from None


def _optional_contact(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Refuse(RejectReason.MISSING_CONTACT, f"The investigator's {name} is not a string.")
    return value


def _apply_rules(
    p: dict[str, Any],
    *,
    kid: str,
    envelope_text: str,
    agency_key: TrustedAgencyKey,
    device: DeviceFacts,
    now_ms: int,
    pending_count: int,
    case_count: Callable[[str, str], int] | int,
) -> Rfa:
    # Rule 10 first: it bounds every string before anything else looks at it.
    for path, limit in _STRING_FIELDS:
        value = _get(p, *path)
        if isinstance(value, str):
            broken = string_problem(value, limit)
            if broken is not None:
                where = ".".join(path)
                detail = {
                    RejectReason.MALFORMED: f"The field {where} is not valid Unicode.",
                    RejectReason.OVERSIZED_FIELD: f"The field {where} is over {limit} bytes.",
                }.get(broken, f"The field {where} holds a control or bidi-formatting character.")
                raise _Refuse(broken, detail)

    # Rule 1: the key's agency is the request's agency.
    agency = p.get("agency")
    if not isinstance(agency, dict) or agency.get("id") != agency_key.agency_id:
        raise _Refuse(
            RejectReason.AGENCY_MISMATCH, "The agency.id is not the signing key's agency."
        )
    agency_name = agency.get("name", agency_key.agency_id)
    if not isinstance(agency_name, str):
        raise _Refuse(RejectReason.MALFORMED, "The agency.name is not a string.")

    # Rule 2 (the replay half was checked before the signature).
    if p.get("type") != "rfa":
        raise _Refuse(RejectReason.BAD_TYPE, "The type is not rfa.")
    rfa_id = p.get("id")
    if not is_canonical_uuid(rfa_id):
        raise _Refuse(RejectReason.BAD_ID, "The id is not a canonical lowercase UUID.")
    assert isinstance(rfa_id, str)

    # Rule 3.
    if not _AGENCY_ID.fullmatch(agency_key.agency_id):
        raise _Refuse(
            RejectReason.BAD_AGENCY_ID, "The agency.id is not 1-32 characters of a-z, 0-9 and -."
        )
    case_number = p.get("case_number")
    if case_number is None or case_number == "":
        raise _Refuse(RejectReason.MISSING_CASE_NUMBER, "The case_number is missing or empty.")
    if not isinstance(case_number, str) or not _CASE_NUMBER.fullmatch(case_number):
        raise _Refuse(
            RejectReason.BAD_CASE_NUMBER,
            "The case_number is not 1-64 printable ASCII characters without a quote or backslash.",
        )
    investigator = p.get("investigator")
    if not isinstance(investigator, dict):
        raise _Refuse(RejectReason.MISSING_CONTACT, "The investigator is not an object.")
    inv_name = investigator.get("name")
    if not isinstance(inv_name, str) or not inv_name.strip():
        raise _Refuse(RejectReason.MISSING_CONTACT, "The investigator's name is missing.")
    email = _optional_contact(investigator.get("email"), "email")
    phone = _optional_contact(investigator.get("phone"), "phone")
    if email is None and phone is None:
        raise _Refuse(
            RejectReason.MISSING_CONTACT,
            "The investigator has neither an email nor a phone number.",
        )

    description = p.get("description", "")
    if not isinstance(description, str):
        raise _Refuse(RejectReason.MALFORMED, "The description is not a string.")

    # Rule 4.
    area = p.get("area")
    if not isinstance(area, dict):
        raise _Refuse(RejectReason.BAD_AREA, "The area is not an object.")
    lat, lon, radius = (_number(area.get(k)) for k in ("lat", "lon", "radius_m"))
    if lat is None or lon is None or radius is None:
        raise _Refuse(
            RejectReason.BAD_AREA, "The area's lat, lon and radius_m must be finite numbers."
        )
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _Refuse(RejectReason.BAD_AREA, "The area's centre is out of range.")
    if radius < wire.MIN_RADIUS_M:
        raise _Refuse(
            RejectReason.RADIUS_TOO_SMALL, f"The radius_m is under {wire.MIN_RADIUS_M} m."
        )
    if radius > wire.MAX_RADIUS_M:
        raise _Refuse(RejectReason.RADIUS_TOO_LARGE, f"The radius_m is over {wire.MAX_RADIUS_M} m.")

    # Rule 5.
    window = p.get("window")
    if not isinstance(window, dict):
        raise _Refuse(RejectReason.BAD_WINDOW, "The window is not an object.")
    start = _time(window.get("start"), "window.start")
    end = _time(window.get("end"), "window.end")
    issued_at = _time(p.get("issued_at"), "issued_at")
    expires_at = _time(p.get("expires_at"), "expires_at")
    if not start < end:
        raise _Refuse(RejectReason.BAD_WINDOW, "The window's start is not before its end.")
    if end - start > wire.MAX_WINDOW_MS:
        raise _Refuse(RejectReason.WINDOW_TOO_LONG, "The window is longer than 12 hours.")
    if end > issued_at:
        raise _Refuse(RejectReason.WINDOW_IN_FUTURE, "The window ends after issued_at.")
    if end > now_ms:
        raise _Refuse(RejectReason.WINDOW_IN_FUTURE, "The window ends after the device's clock.")

    # Rule 6.
    if issued_at > now_ms + wire.MAX_ISSUED_AHEAD_MS:
        raise _Refuse(
            RejectReason.ISSUED_IN_FUTURE,
            "The issued_at is more than 5 minutes ahead of the device's clock.",
        )
    if not now_ms < expires_at:
        raise _Refuse(RejectReason.EXPIRED, "The request's expires_at has passed.")
    if expires_at <= issued_at:
        raise _Refuse(RejectReason.EXPIRED, "The expires_at is not after issued_at.")
    if expires_at - issued_at > wire.MAX_LIFETIME_MS:
        raise _Refuse(RejectReason.LIFETIME_TOO_LONG, "The request's lifetime is over 14 days.")

    # Rule 7.
    if not distance_m(device.lat, device.lon, lat, lon) <= radius:
        raise _Refuse(RejectReason.OUTSIDE_AREA, "This device is outside the request's area.")

    # Rule 8.
    if not device.requests_enabled:
        raise _Refuse(RejectReason.REQUESTS_OFF, "The owner has turned requests off.")

    # Rule 9.
    recipient = p.get("recipient")
    try:
        parse_recipient(recipient)
    except ValueError:
        raise _Refuse(
            RejectReason.BAD_RECIPIENT, "The recipient is not an age X25519 key."
        ) from None
    assert isinstance(recipient, str)
    upload_url = p.get("upload_url")
    if not isinstance(upload_url, str):
        raise _Refuse(RejectReason.UNSAFE_UPLOAD_URL, "The upload_url is not a string.")
    problem = upload_url_problem(
        upload_url, allow_plain_http_loopback=device.allow_plain_http_loopback
    )
    if problem is not None:
        raise _Refuse(RejectReason.UNSAFE_UPLOAD_URL, f"The upload_url is refused: {problem}.")

    # Rule 11.
    if pending_count >= wire.MAX_PENDING:
        raise _Refuse(
            RejectReason.TOO_MANY_PENDING, f"There are already {wire.MAX_PENDING} pending requests."
        )

    # Rule 12.
    count = (
        case_count if isinstance(case_count, int) else case_count(agency_key.agency_id, case_number)
    )
    if count >= wire.MAX_REQUESTS_PER_CASE:
        raise _Refuse(
            RejectReason.CASE_LIMIT,
            f"This case already had {wire.MAX_REQUESTS_PER_CASE} requests accepted "
            "in the last 30 days.",
        )

    return Rfa(
        id=rfa_id,
        agency=Agency(id=agency_key.agency_id, name=agency_name),
        case_number=case_number,
        investigator=Investigator(name=inv_name, email=email, phone=phone),
        description=description,
        area=Area(lat=lat, lon=lon, radius_m=radius),
        window=Window(start, end),
        issued_at_ms=issued_at,
        expires_at_ms=expires_at,
        recipient=recipient,
        upload_url=upload_url,
        envelope_text=envelope_text,
        kid=kid,
    )
