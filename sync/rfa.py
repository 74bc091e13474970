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
- The payload is parsed strictly: `NaN`, `Infinity` and `-Infinity` (which Python
  accepts) and duplicate object keys (which parsers resolve differently, so an agency's
  verifier and the device could read different requests) make it `malformed`.
- `id` must be a UUID in canonical form: 36 characters, lowercase hex, hyphenated
  (`str(uuid.UUID(id)) == id`). Any version is accepted. One spelling per request keeps
  the replay check exact; braces, `urn:uuid:` or upper case are `bad_id`.
- Lengths count Unicode code points. Rule 10 is applied first, to every known string
  field that is a string, before the other rules; strings in unknown fields are ignored
  with their fields. A known string holding a lone surrogate (which JSON escapes can
  express but UTF-8 cannot) is `malformed`.
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
- `radius_m` may be any finite number with `0 < radius_m <= 805`; an integer is as good
  as a float. The device is inside when its great-circle distance (sync.geo) to the
  centre is `<= radius_m`.
- Rules are checked in the order of §4 (with rule 10 first, as said): the first broken
  rule is the reason reported.
- `rfa_id` is set on a verified rejection only when the payload's `id` is a canonical
  UUID; the caller should record such ids as seen whether accepted or rejected, since §4
  says an id is accepted only if never seen before. When the two stages run apart (a
  queue between them), the caller checks `Accepted.rfa.id` against the seen ids again
  as it records the acceptance, in the same transaction.
- `investigator.name` must hold a non-blank character; `case_number` may hold spaces
  (`str.isprintable`: no control, format, surrogate or line/paragraph separators).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation.errors import InvalidValueError, TimeFormatError
from foundation.times import Window, parse_time
from foundation.wire import MAX_MESSAGE_BYTES
from sync.envelope import Envelope, parse_envelope, verify_envelope
from sync.errors import EnvelopeError, EnvelopeFault
from sync.geo import distance_m
from sync.keys import key_id, parse_recipient, raw_public
from sync.models import Agency, Area, Investigator, Rfa
from sync.netpolicy import upload_url_problem

MAX_DESCRIPTION_CHARS = 2000
MAX_STRING_CHARS = 256
MAX_CASE_NUMBER_CHARS = 64
MAX_RADIUS_M = 805
MAX_WINDOW_MS = 12 * 3600 * 1000
MAX_ISSUED_AHEAD_MS = 5 * 60 * 1000
MAX_LIFETIME_MS = 14 * 24 * 3600 * 1000
MAX_PENDING = 20


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
    AGENCY_MISMATCH = "agency_mismatch"  # rule 1
    BAD_TYPE = "bad_type"  # rule 2
    BAD_ID = "bad_id"  # rule 2
    MISSING_CASE_NUMBER = "missing_case_number"  # rule 3
    BAD_CASE_NUMBER = "bad_case_number"  # rule 3
    MISSING_CONTACT = "missing_contact"  # rule 3
    BAD_AREA = "bad_area"  # rule 4
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


class _Refuse(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- strict JSON ------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise InvalidValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidValueError("duplicate key")
        out[key] = value
    return out


def strict_json_object(text: str) -> dict[str, Any] | None:
    """Parse a JSON object refusing NaN/Infinity literals and duplicate keys; None if not."""
    try:
        doc = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


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


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- stage 1: cheap checks --------------------------------------------------------------


def precheck(
    envelope_bytes: bytes,
    trusted: Mapping[str, TrustedAgencyKey],
    seen: Container[str],
) -> Prechecked | Rejected:
    """Size, envelope shape, known kid and replay, without any signature work."""
    if not isinstance(envelope_bytes, bytes | bytearray):
        return Rejected(RejectReason.MALFORMED, verified=False, detail="not bytes")
    if len(envelope_bytes) > MAX_MESSAGE_BYTES:
        return Rejected(RejectReason.OVERSIZED, verified=False, detail="over 16 KiB")
    try:
        text = bytes(envelope_bytes).decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(RejectReason.MALFORMED, verified=False, detail="not UTF-8")
    try:
        envelope = parse_envelope(text)
    except EnvelopeError as exc:
        return Rejected(RejectReason.MALFORMED, verified=False, detail=str(exc)[:80])
    if envelope.kid not in trusted:
        return Rejected(RejectReason.UNKNOWN_KEY, verified=False, detail="kid not trusted")
    claimed = _claimed_id(envelope.payload_text)
    if claimed is not None and claimed in seen:
        return Rejected(RejectReason.REPLAY, verified=False, detail="id already seen")
    return Prechecked(envelope=envelope, envelope_text=text, claimed_id=claimed)


def _claimed_id(payload_text: str) -> str | None:
    try:
        doc = json.loads(payload_text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    claimed = doc.get("id")
    return claimed if isinstance(claimed, str) else None


# --- stage 2: signature and rules -------------------------------------------------------


def verify_and_check(
    pre: Prechecked,
    device: DeviceFacts,
    trusted: Mapping[str, TrustedAgencyKey],
    now_ms: int,
    *,
    pending_count: int,
) -> Accepted | Rejected:
    """Verify the signature, then apply rules 1-11 of protocol.md §4 in order."""
    agency_key = trusted.get(pre.envelope.kid)
    if agency_key is None:
        return Rejected(RejectReason.UNKNOWN_KEY, verified=False, detail="kid not trusted")
    try:
        verified = verify_envelope(pre.envelope, {pre.envelope.kid: agency_key.public_key})
    except EnvelopeError as exc:
        if exc.reason is EnvelopeFault.BAD_SIGNATURE:
            return Rejected(RejectReason.BAD_SIGNATURE, verified=False, detail="bad signature")
        if exc.reason is EnvelopeFault.UNKNOWN_KEY:
            return Rejected(RejectReason.UNKNOWN_KEY, verified=False, detail="kid not trusted")
        # the signature held, but the payload is not a JSON object: logged as verified
        return Rejected(RejectReason.MALFORMED, verified=True, detail="payload is not an object")
    payload = strict_json_object(verified.payload_text)
    if payload is None:
        return Rejected(
            RejectReason.MALFORMED,
            verified=True,
            detail="payload is not strict JSON (NaN/Infinity or duplicate keys)",
        )
    raw_id = payload.get("id")
    rfa_id = raw_id if is_canonical_uuid(raw_id) else None
    try:
        rfa = _apply_rules(
            payload,
            kid=verified.kid,
            envelope_text=pre.envelope_text,
            agency_key=agency_key,
            device=device,
            now_ms=now_ms,
            pending_count=pending_count,
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
) -> Accepted | Rejected:
    """Every rule of protocol.md §4: both stages in one call. Never raises."""
    pre = precheck(envelope_bytes, trusted, seen)
    if isinstance(pre, Rejected):
        return pre
    return verify_and_check(pre, device, trusted, now_ms, pending_count=pending_count)


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    """Follow object keys; None when any step is missing or not an object."""
    node: Any = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


_STRING_FIELDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("type",), MAX_STRING_CHARS),
    (("id",), MAX_STRING_CHARS),
    (("agency", "id"), MAX_STRING_CHARS),
    (("agency", "name"), MAX_STRING_CHARS),
    (("case_number",), MAX_STRING_CHARS),
    (("investigator", "name"), MAX_STRING_CHARS),
    (("investigator", "email"), MAX_STRING_CHARS),
    (("investigator", "phone"), MAX_STRING_CHARS),
    (("description",), MAX_DESCRIPTION_CHARS),
    (("window", "start"), MAX_STRING_CHARS),
    (("window", "end"), MAX_STRING_CHARS),
    (("issued_at",), MAX_STRING_CHARS),
    (("expires_at",), MAX_STRING_CHARS),
    (("recipient",), MAX_STRING_CHARS),
    (("upload_url",), MAX_STRING_CHARS),
)


def _time(value: Any, name: str) -> int:
    try:
        return parse_time(value)
    except TimeFormatError:
        raise _Refuse(RejectReason.BAD_TIME, f"{name} is not an RFC 3339 UTC time") from None


def _optional_contact(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Refuse(RejectReason.MISSING_CONTACT, f"investigator {name} is not a string")
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
) -> Rfa:
    # Rule 10 first: it bounds every string before anything else looks at it.
    for path, limit in _STRING_FIELDS:
        value = _get(p, *path)
        if isinstance(value, str):
            if len(value) > limit:
                raise _Refuse(RejectReason.OVERSIZED_FIELD, f"{'.'.join(path)} over {limit}")
            if not _encodable(value):
                raise _Refuse(RejectReason.MALFORMED, f"{'.'.join(path)} is not valid Unicode")

    # Rule 1: the key's agency is the request's agency.
    agency = p.get("agency")
    if not isinstance(agency, dict) or agency.get("id") != agency_key.agency_id:
        raise _Refuse(RejectReason.AGENCY_MISMATCH, "agency.id is not the signing key's agency")
    agency_name = agency.get("name", agency_key.agency_id)
    if not isinstance(agency_name, str):
        raise _Refuse(RejectReason.MALFORMED, "agency.name is not a string")

    # Rule 2 (the replay half was checked before the signature).
    if p.get("type") != "rfa":
        raise _Refuse(RejectReason.BAD_TYPE, "type is not rfa")
    rfa_id = p.get("id")
    if not is_canonical_uuid(rfa_id):
        raise _Refuse(RejectReason.BAD_ID, "id is not a canonical lowercase UUID")
    assert isinstance(rfa_id, str)

    # Rule 3.
    case_number = p.get("case_number")
    if case_number is None or case_number == "":
        raise _Refuse(RejectReason.MISSING_CASE_NUMBER, "case_number missing or empty")
    if (
        not isinstance(case_number, str)
        or len(case_number) > MAX_CASE_NUMBER_CHARS
        or not case_number.isprintable()
    ):
        raise _Refuse(RejectReason.BAD_CASE_NUMBER, "case_number is not 1-64 printable characters")
    investigator = p.get("investigator")
    if not isinstance(investigator, dict):
        raise _Refuse(RejectReason.MISSING_CONTACT, "investigator is not an object")
    inv_name = investigator.get("name")
    if not isinstance(inv_name, str) or not inv_name.strip():
        raise _Refuse(RejectReason.MISSING_CONTACT, "investigator name missing")
    email = _optional_contact(investigator.get("email"), "email")
    phone = _optional_contact(investigator.get("phone"), "phone")
    if email is None and phone is None:
        raise _Refuse(RejectReason.MISSING_CONTACT, "investigator has neither email nor phone")

    description = p.get("description", "")
    if not isinstance(description, str):
        raise _Refuse(RejectReason.MALFORMED, "description is not a string")

    # Rule 4.
    area = p.get("area")
    if not isinstance(area, dict):
        raise _Refuse(RejectReason.BAD_AREA, "area is not an object")
    lat, lon, radius = (_number(area.get(k)) for k in ("lat", "lon", "radius_m"))
    if lat is None or lon is None or radius is None:
        raise _Refuse(RejectReason.BAD_AREA, "area lat, lon and radius_m must be finite numbers")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _Refuse(RejectReason.BAD_AREA, "area centre out of range")
    if not radius > 0:
        raise _Refuse(RejectReason.BAD_AREA, "radius_m must be positive")
    if radius > MAX_RADIUS_M:
        raise _Refuse(RejectReason.RADIUS_TOO_LARGE, f"radius_m over {MAX_RADIUS_M}")

    # Rule 5.
    window = p.get("window")
    if not isinstance(window, dict):
        raise _Refuse(RejectReason.BAD_WINDOW, "window is not an object")
    start = _time(window.get("start"), "window.start")
    end = _time(window.get("end"), "window.end")
    issued_at = _time(p.get("issued_at"), "issued_at")
    expires_at = _time(p.get("expires_at"), "expires_at")
    if not start < end:
        raise _Refuse(RejectReason.BAD_WINDOW, "window start is not before its end")
    if end - start > MAX_WINDOW_MS:
        raise _Refuse(RejectReason.WINDOW_TOO_LONG, "window longer than 12 h")
    if end > issued_at:
        raise _Refuse(RejectReason.WINDOW_IN_FUTURE, "window ends after issued_at")

    # Rule 6.
    if issued_at > now_ms + MAX_ISSUED_AHEAD_MS:
        raise _Refuse(RejectReason.ISSUED_IN_FUTURE, "issued_at more than 5 min ahead")
    if not now_ms < expires_at:
        raise _Refuse(RejectReason.EXPIRED, "expires_at has passed")
    if expires_at <= issued_at:
        raise _Refuse(RejectReason.EXPIRED, "expires_at is not after issued_at")
    if expires_at - issued_at > MAX_LIFETIME_MS:
        raise _Refuse(RejectReason.LIFETIME_TOO_LONG, "lifetime over 14 days")

    # Rule 7.
    if not distance_m(device.lat, device.lon, lat, lon) <= radius:
        raise _Refuse(RejectReason.OUTSIDE_AREA, "device is outside the area")

    # Rule 8.
    if not device.requests_enabled:
        raise _Refuse(RejectReason.REQUESTS_OFF, "the owner has turned requests off")

    # Rule 9.
    recipient = p.get("recipient")
    try:
        parse_recipient(recipient)
    except ValueError:
        raise _Refuse(RejectReason.BAD_RECIPIENT, "recipient is not an age X25519 key") from None
    assert isinstance(recipient, str)
    upload_url = p.get("upload_url")
    if not isinstance(upload_url, str):
        raise _Refuse(RejectReason.UNSAFE_UPLOAD_URL, "upload_url is not a string")
    problem = upload_url_problem(
        upload_url, allow_plain_http_loopback=device.allow_plain_http_loopback
    )
    if problem is not None:
        raise _Refuse(RejectReason.UNSAFE_UPLOAD_URL, problem)

    # Rule 11.
    if pending_count >= MAX_PENDING:
        raise _Refuse(RejectReason.TOO_MANY_PENDING, f"{MAX_PENDING} requests already pending")

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
