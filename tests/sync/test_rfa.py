"""Every rule of protocol.md §4, at its edges, and fuzzing: no input makes check_rfa raise."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.times import Window, format_time
from sync.geo import distance_m
from sync.keys import SigningKey
from sync.rfa import (
    MAX_MESSAGE_BYTES,
    Accepted,
    Prechecked,
    Rejected,
    RejectReason,
    check_rfa,
    precheck,
    verify_and_check,
)
from tests.sync.factories import (
    DAY_MS,
    DELETE,
    DEVICE_LAT,
    DEVICE_LON,
    HOUR_MS,
    MINUTE_MS,
    NOW_MS,
    AgencyKeys,
    destination,
    device_facts,
    rfa_envelope,
    rfa_payload,
    sign,
)

R = RejectReason
AGENCY = AgencyKeys.generate()
OTHER = AgencyKeys.generate("oakland-pd")
CONTACT_SECRETS = ("a.rivera@example.gov", "555 0100", "Rivera")


def check(data: bytes, *, seen: set[str] | None = None, pending: int = 0, **device: Any) -> Any:
    return check_rfa(
        data, device_facts(**device), AGENCY.trusted(), seen or set(), NOW_MS, pending_count=pending
    )


def reason_of(changes: dict[str, Any], **kw: Any) -> RejectReason | None:
    result = check(rfa_envelope(AGENCY, changes=changes), **kw)
    if isinstance(result, Accepted):
        return None
    assert result.verified, result
    for secret in CONTACT_SECRETS:
        assert secret not in result.detail
    return result.reason


# --- the happy path ----------------------------------------------------------------------


def test_valid_request_is_accepted_with_every_field() -> None:
    rid = str(uuid.uuid4())
    data = rfa_envelope(AGENCY, rfa_id=rid)
    result = check(data)
    assert isinstance(result, Accepted)
    rfa = result.rfa
    assert rfa.id == rid
    assert rfa.agency.id == "sfpd" and rfa.agency.name == "San Francisco Police Department"
    assert rfa.case_number == "2026-004512"
    assert rfa.investigator.email == "a.rivera@example.gov"
    assert rfa.investigator.phone == "+1 415 555 0100"
    assert rfa.area.lat == DEVICE_LAT and rfa.area.radius_m == 800.0
    assert isinstance(rfa.area.radius_m, float)
    assert rfa.window == Window(NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS)
    assert rfa.issued_at_ms == NOW_MS and rfa.expires_at_ms == NOW_MS + 7 * DAY_MS
    assert rfa.recipient == AGENCY.recipient
    assert rfa.upload_url == "https://uploads.example.gov/files/"
    assert rfa.kid == AGENCY.kid
    assert rfa.envelope_text == rfc8785.dumps(json.loads(data)).decode("utf-8")


def test_envelope_text_is_the_canonical_form_whatever_the_spelling() -> None:
    compact = json.loads(rfa_envelope(AGENCY))
    pretty = json.dumps(compact, indent=3, ensure_ascii=True).encode() + b"\n  "
    result = check(pretty)
    assert isinstance(result, Accepted)
    assert result.rfa.envelope_text == rfc8785.dumps(compact).decode()


def test_unknown_fields_are_ignored() -> None:
    changes = {
        "extra": {"nested": [1, 2, "x" * 5000]},
        "area.altitude": "high",
        "investigator.badge": 42,
        "agency.country": "US",
    }
    assert reason_of(changes) is None


def test_optional_name_and_description_default() -> None:
    result = check(rfa_envelope(AGENCY, changes={"agency.name": DELETE, "description": DELETE}))
    assert isinstance(result, Accepted)
    assert result.rfa.agency.name == "sfpd" and result.rfa.description == ""


def test_stages_agree_with_check_rfa() -> None:
    data = rfa_envelope(AGENCY)
    pre = precheck(data, AGENCY.trusted(), set())
    assert isinstance(pre, Prechecked)
    assert pre.claimed_id == json.loads(json.loads(data)["payload"])["id"]
    staged = verify_and_check(pre, device_facts(), AGENCY.trusted(), NOW_MS, pending_count=0)
    assert staged == check(data)


# --- before the signature ------------------------------------------------------------------


def _padded(data: bytes, size: int) -> bytes:
    assert len(data) <= size
    return data + b" " * (size - len(data))


def test_size_limit_is_16_kib_exactly() -> None:
    data = rfa_envelope(AGENCY)
    assert isinstance(check(_padded(data, MAX_MESSAGE_BYTES)), Accepted)
    result = check(_padded(data, MAX_MESSAGE_BYTES + 1))
    assert isinstance(result, Rejected) and result.reason is R.OVERSIZED
    assert not result.verified and result.rfa_id is None


def test_oversized_is_refused_before_parsing() -> None:
    # a huge non-JSON blob: if it were parsed the reason would be malformed
    result = check(b"\xff" * (MAX_MESSAGE_BYTES + 1))
    assert result.reason is R.OVERSIZED


def _envelope_with(**fields: Any) -> bytes:
    doc = json.loads(rfa_envelope(AGENCY))
    for key, value in fields.items():
        if value is DELETE:
            doc.pop(key)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b"42",
        b'"a string"',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf" + rfa_envelope(AGENCY),  # a UTF-8 byte-order mark
        rfa_envelope(AGENCY).decode().encode("utf-16"),
        b"{" * 10000,
        b"[" * 5000 + b"]" * 5000,
        _envelope_with(v=2),
        _envelope_with(v=True),
        _envelope_with(v="1"),
        _envelope_with(v=DELETE),
        _envelope_with(alg="EdDSA"),
        _envelope_with(alg=DELETE),
        _envelope_with(kid=5),
        _envelope_with(payload={"type": "rfa"}),
        _envelope_with(payload=DELETE),
        _envelope_with(sig="AAAA"),
        _envelope_with(sig="not base64!"),
        _envelope_with(sig="A" * 86 + "=="),
        _envelope_with(sig=DELETE),
    ],
)
def test_malformed_envelopes(data: bytes) -> None:
    result = check(data)
    assert isinstance(result, Rejected)
    assert result.reason is R.MALFORMED and not result.verified and result.rfa_id is None


def test_unknown_key() -> None:
    stranger = SigningKey.generate()
    result = check(rfa_envelope(AGENCY, key=stranger))
    assert result.reason is R.UNKNOWN_KEY and not result.verified


def test_key_trusted_for_another_agency_is_unknown_here() -> None:
    result = check(rfa_envelope(OTHER))
    assert result.reason is R.UNKNOWN_KEY


def test_bad_signature_when_payload_altered() -> None:
    doc = json.loads(rfa_envelope(AGENCY))
    doc["payload"] = doc["payload"].replace("800", "805")
    result = check(json.dumps(doc).encode())
    assert result.reason is R.BAD_SIGNATURE and not result.verified and result.rfa_id is None


def test_bad_signature_from_another_key_under_our_kid() -> None:
    doc = json.loads(rfa_envelope(AGENCY, key=SigningKey.generate()))
    doc["kid"] = AGENCY.kid
    assert check(json.dumps(doc).encode()).reason is R.BAD_SIGNATURE


def test_replay_is_refused_before_the_signature_is_checked() -> None:
    rid = str(uuid.uuid4())
    data = rfa_envelope(AGENCY, rfa_id=rid)
    result = check(data, seen={rid})
    assert result.reason is R.REPLAY and not result.verified and result.rfa_id is None
    # a forged copy (bad signature) of a seen id is also just a replay: no signature work
    doc = json.loads(data)
    doc["sig"] = "A" * 86
    forged = check(json.dumps(doc).encode(), seen={rid})
    assert forged.reason is R.REPLAY
    assert isinstance(check(data, seen={str(uuid.uuid4())}), Accepted)


# --- verified, but a rule is broken ---------------------------------------------------


@pytest.mark.parametrize(
    "payload_text",
    [
        "not json",
        "[1, 2]",
        '"rfa"',
        '{"type": "rfa", "type": "rfa"}',
        '{"type": "rfa", "area": {"lat": NaN}}',
        '{"type": "rfa", "area": {"lat": Infinity}}',
        '{"type": "rfa", "area": {"lat": -Infinity}}',
    ],
)
def test_signed_payload_that_is_not_strict_json_is_malformed(payload_text: str) -> None:
    result = check(sign(payload_text, AGENCY.signing))
    assert result.reason is R.MALFORMED and result.verified and result.rfa_id is None


def test_nan_literal_in_an_otherwise_valid_request_is_malformed() -> None:
    text = json.dumps(rfa_payload(AGENCY)).replace('"radius_m": 800', '"radius_m": NaN')
    assert "NaN" in text
    result = check(sign(text, AGENCY.signing))
    assert result.reason is R.MALFORMED and result.verified


def test_duplicate_id_keys_are_malformed() -> None:
    # a first-wins parser would read another id than a last-wins one
    payload = rfa_payload(AGENCY)
    text = json.dumps(payload)[:-1] + f', "id": "{uuid.uuid4()}"}}'
    assert check(sign(text, AGENCY.signing)).reason is R.MALFORMED


def test_verified_rejection_carries_the_id() -> None:
    rid = str(uuid.uuid4())
    result = check(rfa_envelope(AGENCY, rfa_id=rid, changes={"area.radius_m": 806}))
    assert result == Rejected(R.RADIUS_TOO_LARGE, verified=True, rfa_id=rid, detail=result.detail)


TABLE: list[tuple[str, dict[str, Any], RejectReason | None]] = [
    # rule 1
    ("agency id differs", {"agency.id": "oakland-pd"}, R.AGENCY_MISMATCH),
    ("agency id missing", {"agency.id": DELETE}, R.AGENCY_MISMATCH),
    ("agency missing", {"agency": DELETE}, R.AGENCY_MISMATCH),
    ("agency a string", {"agency": "sfpd"}, R.AGENCY_MISMATCH),
    ("agency id case", {"agency.id": "SFPD"}, R.AGENCY_MISMATCH),
    ("agency name number", {"agency.name": 5}, R.MALFORMED),
    # rule 2
    ("type missing", {"type": DELETE}, R.BAD_TYPE),
    ("type upper", {"type": "RFA"}, R.BAD_TYPE),
    ("type decision", {"type": "decision"}, R.BAD_TYPE),
    ("id missing", {"id": DELETE}, R.BAD_ID),
    ("id upper", {"id": "0B8E6C2E-3F0F-4B8E-9D3C-8E5A4F1D2C3B"}, R.BAD_ID),
    ("id braces", {"id": "{0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b}"}, R.BAD_ID),
    ("id urn", {"id": "urn:uuid:0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b"}, R.BAD_ID),
    ("id no hyphens", {"id": "0b8e6c2e3f0f4b8e9d3c8e5a4f1d2c3b"}, R.BAD_ID),
    ("id junk", {"id": "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3g"}, R.BAD_ID),
    ("id number", {"id": 12345}, R.BAD_ID),
    ("id list", {"id": ["x"]}, R.BAD_ID),
    # rule 3
    ("case missing", {"case_number": DELETE}, R.MISSING_CASE_NUMBER),
    ("case empty", {"case_number": ""}, R.MISSING_CASE_NUMBER),
    ("case 1 char", {"case_number": "7"}, None),
    ("case 64 chars", {"case_number": "x" * 64}, None),
    ("case 65 chars", {"case_number": "x" * 65}, R.BAD_CASE_NUMBER),
    ("case newline", {"case_number": "2026\n0045"}, R.BAD_CHARACTERS),
    ("case tab", {"case_number": "2026\t0045"}, R.BAD_CHARACTERS),
    ("case nul", {"case_number": "2026\x000045"}, R.BAD_CHARACTERS),
    ("case rtl override", {"case_number": "2026\u202e0045"}, R.BAD_CHARACTERS),
    ("case quote", {"case_number": '2026"0045'}, R.BAD_CASE_NUMBER),
    ("case backslash", {"case_number": "2026\\0045"}, R.BAD_CASE_NUMBER),
    ("case tilde", {"case_number": "~2026 !#$%&'()*+,-./:;<=>?@[]^_`{|}"}, None),
    ("case number type", {"case_number": 2026004512}, R.BAD_CASE_NUMBER),
    ("case with spaces", {"case_number": "SF 2026 / 12"}, None),
    ("case unicode", {"case_number": "Aktenzeichen-Ä-12"}, R.BAD_CASE_NUMBER),
    ("case arabic digits", {"case_number": "\u0661\u0662"}, R.BAD_CASE_NUMBER),
    ("investigator missing", {"investigator": DELETE}, R.MISSING_CONTACT),
    ("investigator string", {"investigator": "Rivera"}, R.MISSING_CONTACT),
    ("inv name missing", {"investigator.name": DELETE}, R.MISSING_CONTACT),
    ("inv name empty", {"investigator.name": ""}, R.MISSING_CONTACT),
    ("inv name blank", {"investigator.name": "   "}, R.MISSING_CONTACT),
    ("inv name number", {"investigator.name": 7}, R.MISSING_CONTACT),
    (
        "no email, no phone",
        {"investigator.email": DELETE, "investigator.phone": DELETE},
        R.MISSING_CONTACT,
    ),
    ("email only", {"investigator.phone": DELETE}, None),
    ("phone only", {"investigator.email": DELETE}, None),
    ("null email, phone", {"investigator.email": None}, None),
    (
        "empty email, no phone",
        {"investigator.email": "", "investigator.phone": DELETE},
        R.MISSING_CONTACT,
    ),
    ("email a number", {"investigator.email": 5}, R.MISSING_CONTACT),
    ("phone a list", {"investigator.phone": ["+1"]}, R.MISSING_CONTACT),
    ("description number", {"description": 3}, R.MALFORMED),
    # rule 4
    ("area missing", {"area": DELETE}, R.BAD_AREA),
    ("area list", {"area": [37.7, -122.4, 800]}, R.BAD_AREA),
    ("lat missing", {"area.lat": DELETE}, R.BAD_AREA),
    ("lat string", {"area.lat": "37.7749"}, R.BAD_AREA),
    ("lon string", {"area.lon": "-122.4194"}, R.BAD_AREA),
    ("radius string", {"area.radius_m": "800"}, R.BAD_AREA),
    ("radius true", {"area.radius_m": True}, R.BAD_AREA),
    ("lat false", {"area.lat": False}, R.BAD_AREA),
    ("radius null", {"area.radius_m": None}, R.BAD_AREA),
    ("radius object", {"area.radius_m": {"m": 800}}, R.BAD_AREA),
    ("radius huge int", {"area.radius_m": 10**400}, R.BAD_AREA),
    ("lat huge int", {"area.lat": -(10**400)}, R.BAD_AREA),
    ("radius 1e999 (inf)", {"area.radius_m": math.inf}, R.MALFORMED),
    ("radius 0", {"area.radius_m": 0}, R.RADIUS_TOO_SMALL),
    ("radius 0.0", {"area.radius_m": 0.0}, R.RADIUS_TOO_SMALL),
    ("radius negative", {"area.radius_m": -5}, R.RADIUS_TOO_SMALL),
    ("radius tiny", {"area.radius_m": 5e-324}, R.RADIUS_TOO_SMALL),
    ("radius 20", {"area.radius_m": 20}, R.RADIUS_TOO_SMALL),
    ("radius 149.999", {"area.radius_m": 149.999}, R.RADIUS_TOO_SMALL),
    ("radius prev float 150", {"area.radius_m": math.nextafter(150.0, 0)}, R.RADIUS_TOO_SMALL),
    ("radius 150", {"area.radius_m": 150}, None),
    ("radius 150.0", {"area.radius_m": 150.0}, None),
    ("radius 805", {"area.radius_m": 805}, None),
    ("radius 805.0", {"area.radius_m": 805.0}, None),
    ("radius 805.0001", {"area.radius_m": 805.0001}, R.RADIUS_TOO_LARGE),
    ("radius 806", {"area.radius_m": 806}, R.RADIUS_TOO_LARGE),
    ("radius next float", {"area.radius_m": math.nextafter(805.0, 1e9)}, R.RADIUS_TOO_LARGE),
    ("lat 90.0001", {"area.lat": 90.0001}, R.BAD_AREA),
    ("lat -90.0001", {"area.lat": -90.0001}, R.BAD_AREA),
    ("lon 180.0001", {"area.lon": 180.0001}, R.BAD_AREA),
    ("lon -180.0001", {"area.lon": -180.0001}, R.BAD_AREA),
    ("lat int", {"area.lat": 37, "area.radius_m": 805}, R.OUTSIDE_AREA),
    # rule 5
    ("window missing", {"window": DELETE}, R.BAD_WINDOW),
    ("window string", {"window": "10:00-12:00"}, R.BAD_WINDOW),
    ("start missing", {"window.start": DELETE}, R.BAD_TIME),
    ("start offset", {"window.start": "2026-11-28T10:00:00+00:00"}, R.BAD_TIME),
    ("start lower z", {"window.start": "2026-11-28T10:00:00z"}, R.BAD_TIME),
    ("start space", {"window.start": "2026-11-28 10:00:00Z"}, R.BAD_TIME),
    ("start epoch", {"window.start": NOW_MS - 3 * HOUR_MS}, R.BAD_TIME),
    ("start micro", {"window.start": "2026-11-28T10:00:00.000001Z"}, R.BAD_TIME),
    ("start feb 30", {"window.start": "2026-02-30T10:00:00Z"}, R.BAD_TIME),
    ("end null", {"window.end": None}, R.BAD_TIME),
    ("issued missing", {"issued_at": DELETE}, R.BAD_TIME),
    ("expires date only", {"expires_at": "2026-12-05"}, R.BAD_TIME),
    ("start == end", {"window.start": format_time(NOW_MS - HOUR_MS)}, R.BAD_WINDOW),
    ("start > end", {"window.start": format_time(NOW_MS - HOUR_MS + 1)}, R.BAD_WINDOW),
    ("start == end - 1 ms", {"window.start": format_time(NOW_MS - HOUR_MS - 1)}, None),
    ("window 12 h", {"window.start": format_time(NOW_MS - 13 * HOUR_MS)}, None),
    (
        "window 12 h + 1 ms",
        {"window.start": format_time(NOW_MS - 13 * HOUR_MS - 1)},
        R.WINDOW_TOO_LONG,
    ),
    ("end == issued_at", {"window.end": format_time(NOW_MS)}, None),
    ("end == issued_at + 1 ms", {"window.end": format_time(NOW_MS + 1)}, R.WINDOW_IN_FUTURE),
    (
        "end == now, issued ahead",
        {"issued_at": format_time(NOW_MS + 5 * MINUTE_MS), "window.end": format_time(NOW_MS)},
        None,
    ),
    (
        "end == now + 1 ms, issued ahead",
        {"issued_at": format_time(NOW_MS + 5 * MINUTE_MS), "window.end": format_time(NOW_MS + 1)},
        R.WINDOW_IN_FUTURE,
    ),
    (
        "end == now + 5 min, issued ahead",
        {
            "issued_at": format_time(NOW_MS + 5 * MINUTE_MS),
            "window.end": format_time(NOW_MS + 5 * MINUTE_MS),
        },
        R.WINDOW_IN_FUTURE,
    ),
    ("end arabic-indic digit", {"window.end": "2026-11-28T12:00:0\u0660Z"}, R.BAD_TIME),
    ("issued fullwidth digit", {"issued_at": "2026-11-28T13:00:0\uff10Z"}, R.BAD_TIME),
    # rule 6
    ("issued now + 5 min", {"issued_at": format_time(NOW_MS + 5 * MINUTE_MS)}, None),
    (
        "issued now + 5 min + 1 ms",
        {"issued_at": format_time(NOW_MS + 5 * MINUTE_MS + 1)},
        R.ISSUED_IN_FUTURE,
    ),
    (
        "issued 6 days ago",
        {
            "issued_at": format_time(NOW_MS - 6 * DAY_MS),
            "window.start": format_time(NOW_MS - 6 * DAY_MS - HOUR_MS),
            "window.end": format_time(NOW_MS - 6 * DAY_MS),
        },
        None,
    ),
    ("expires == now", {"expires_at": format_time(NOW_MS)}, R.EXPIRED),
    ("expires == now + 1 ms", {"expires_at": format_time(NOW_MS + 1)}, None),
    ("expired", {"expires_at": format_time(NOW_MS - 1)}, R.EXPIRED),
    (
        "expires before issued",
        {"issued_at": format_time(NOW_MS + 4 * MINUTE_MS), "expires_at": format_time(NOW_MS + 1)},
        R.EXPIRED,
    ),
    ("lifetime 14 d", {"expires_at": format_time(NOW_MS + 14 * DAY_MS)}, None),
    (
        "lifetime 14 d + 1 ms",
        {"expires_at": format_time(NOW_MS + 14 * DAY_MS + 1)},
        R.LIFETIME_TOO_LONG,
    ),
    # rule 7
    ("far away", {"area.lat": 37.9}, R.OUTSIDE_AREA),
    # rule 9
    ("recipient missing", {"recipient": DELETE}, R.BAD_RECIPIENT),
    ("recipient number", {"recipient": 1}, R.BAD_RECIPIENT),
    ("recipient junk", {"recipient": "age1notakey"}, R.BAD_RECIPIENT),
    ("recipient ssh", {"recipient": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"}, R.BAD_RECIPIENT),
    ("recipient identity", {"recipient": "AGE-SECRET-KEY-1XYZ"}, R.BAD_RECIPIENT),
    ("url missing", {"upload_url": DELETE}, R.UNSAFE_UPLOAD_URL),
    ("url number", {"upload_url": 443}, R.UNSAFE_UPLOAD_URL),
    ("url http", {"upload_url": "http://uploads.example.gov/files/"}, R.UNSAFE_UPLOAD_URL),
    ("url private", {"upload_url": "https://10.0.0.5/files/"}, R.UNSAFE_UPLOAD_URL),
    ("url mapped", {"upload_url": "https://[::ffff:192.168.0.1]/"}, R.UNSAFE_UPLOAD_URL),
    ("url cgnat", {"upload_url": "https://100.64.1.1/"}, R.UNSAFE_UPLOAD_URL),
    ("url loopback http", {"upload_url": "http://127.0.0.1:1080/files/"}, R.UNSAFE_UPLOAD_URL),
    ("url userinfo", {"upload_url": "https://a@uploads.example.gov/"}, R.UNSAFE_UPLOAD_URL),
    # rule 10
    ("description 1000", {"description": "d" * 1000}, None),
    ("description 1001", {"description": "d" * 1001}, R.OVERSIZED_FIELD),
    ("description 1000 bytes of é", {"description": "\u00e9" * 500}, None),
    ("description 1002 bytes of é", {"description": "\u00e9" * 501}, R.OVERSIZED_FIELD),
    ("description newline", {"description": "two\nlines"}, R.BAD_CHARACTERS),
    ("description escape", {"description": "\x1b[2J\x1b[1;1H"}, R.BAD_CHARACTERS),
    ("description c1", {"description": "x\x9by"}, R.BAD_CHARACTERS),
    ("description del", {"description": "x\x7fy"}, R.BAD_CHARACTERS),
    ("description U+009F", {"description": "x\x9fy"}, R.BAD_CHARACTERS),
    ("description U+00A0 ok", {"description": "x\xa0y"}, None),
    ("description lrm", {"description": "x\u200ey"}, R.BAD_CHARACTERS),
    ("description alm", {"description": "x\u061cy"}, R.BAD_CHARACTERS),
    ("description isolate", {"description": "x\u2069y"}, R.BAD_CHARACTERS),
    ("agency name bidi", {"agency.name": "\u202eDPFS"}, R.BAD_CHARACTERS),
    ("inv name control", {"investigator.name": "Det.\rX"}, R.BAD_CHARACTERS),
    ("email bidi", {"investigator.email": "a\u2066@example.gov"}, R.BAD_CHARACTERS),
    ("phone newline", {"investigator.phone": "+1\n555"}, R.BAD_CHARACTERS),
    ("case number 129", {"case_number": "x" * 129}, R.OVERSIZED_FIELD),
    ("agency name 128", {"agency.name": "n" * 128}, None),
    ("agency name 129", {"agency.name": "n" * 129}, R.OVERSIZED_FIELD),
    ("agency name 129 bytes", {"agency.name": "n" * 127 + "\u00e9"}, R.OVERSIZED_FIELD),
    ("agency id 129", {"agency.id": "n" * 129}, R.OVERSIZED_FIELD),
    ("inv name 129", {"investigator.name": "n" * 129}, R.OVERSIZED_FIELD),
    ("email 129", {"investigator.email": "e" * 129}, R.OVERSIZED_FIELD),
    ("phone 129", {"investigator.phone": "1" * 129}, R.OVERSIZED_FIELD),
    ("url 129", {"upload_url": "https://u.example.gov/" + "a" * 107}, R.OVERSIZED_FIELD),
    ("url 128", {"upload_url": "https://u.example.gov/" + "a" * 106}, None),
    ("recipient 129", {"recipient": "age1" + "q" * 125}, R.OVERSIZED_FIELD),
    ("type 129", {"type": "t" * 129}, R.OVERSIZED_FIELD),
    ("start 129", {"window.start": "t" * 129}, R.OVERSIZED_FIELD),
    ("description 1000 bytes emoji", {"description": "\U0001f6aa" * 250}, None),
    ("description 1004 bytes emoji", {"description": "\U0001f6aa" * 251}, R.OVERSIZED_FIELD),
]


@pytest.mark.parametrize(("changes", "reason"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_rule_table(changes: dict[str, Any], reason: RejectReason | None) -> None:
    assert reason_of(changes) == reason


@pytest.mark.parametrize("path", ["description", "investigator.name", "case_number", "agency.name"])
def test_lone_surrogate_in_a_known_string_is_malformed(path: str) -> None:
    from tests.sync.factories import apply_changes

    payload = apply_changes(rfa_payload(AGENCY), {path: "door \ud800 bell"})
    result = check(sign(json.dumps(payload), AGENCY.signing))  # ASCII JSON with \ud800
    assert result.reason is R.MALFORMED and result.verified


def test_requests_off() -> None:
    assert reason_of({}, requests_enabled=False) is R.REQUESTS_OFF


def test_plain_http_loopback_only_with_the_testing_switch() -> None:
    changes = {"upload_url": "http://127.0.0.1:1080/files/"}
    assert reason_of(changes, allow_plain_http_loopback=True) is None
    assert reason_of(changes, allow_plain_http_loopback=False) is R.UNSAFE_UPLOAD_URL
    changes = {"upload_url": "http://10.0.0.1:1080/files/"}
    assert reason_of(changes, allow_plain_http_loopback=True) is R.UNSAFE_UPLOAD_URL


@pytest.mark.parametrize(("pending", "ok"), [(0, True), (9, True), (10, False), (500, False)])
def test_pending_limit(pending: int, ok: bool) -> None:
    result = reason_of({}, pending=pending)
    assert result is (None if ok else R.TOO_MANY_PENDING)


def _device_at(distance: float, bearing: float) -> tuple[float, float]:
    return destination(DEVICE_LAT, DEVICE_LON, bearing, distance)


def _device_within(limit: float, bearing: float) -> tuple[float, float, float]:
    """A device position at the largest distance <= `limit` the sphere maths gives."""
    dist = limit
    while True:
        lat, lon = _device_at(dist, bearing)
        d = distance_m(lat, lon, DEVICE_LAT, DEVICE_LON)
        if d <= limit:
            return lat, lon, d
        dist -= 1e-9


@pytest.mark.parametrize("bearing", [0.0, 37.0, 90.0, 181.0, 270.0, 333.3])
def test_distance_805_in_806_out(bearing: float) -> None:
    lat, lon, d = _device_within(805.0, bearing)
    assert d == pytest.approx(805.0, abs=1e-6)
    assert reason_of({"area.radius_m": 805}, lat=lat, lon=lon) is None
    # the exact boundary: a radius equal to the computed distance is inside, a hair less not
    assert reason_of({"area.radius_m": d}, lat=lat, lon=lon) is None
    assert reason_of({"area.radius_m": math.nextafter(d, 0)}, lat=lat, lon=lon) is R.OUTSIDE_AREA
    outside = _device_at(805.001, bearing)
    assert reason_of({"area.radius_m": 805}, lat=outside[0], lon=outside[1]) is R.OUTSIDE_AREA
    outside = _device_at(806.0, bearing)
    assert reason_of({"area.radius_m": 805}, lat=outside[0], lon=outside[1]) is R.OUTSIDE_AREA


def test_first_broken_rule_is_reported() -> None:
    # agency mismatch (rule 1) outranks a bad area (rule 4) and requests off (rule 8)
    changes = {"agency.id": "x", "area.radius_m": 0}
    assert reason_of(changes, requests_enabled=False) is R.AGENCY_MISMATCH
    assert reason_of({"area.radius_m": 0}, requests_enabled=False) is R.RADIUS_TOO_SMALL


def test_details_never_hold_contact_details_even_in_urls() -> None:
    url = "https://a.rivera@example.gov@10.0.0.1/"
    result = check(rfa_envelope(AGENCY, changes={"upload_url": url}))
    assert result.reason is R.UNSAFE_UPLOAD_URL and "rivera" not in result.detail


# --- fuzzing ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_outcome(result: object, *, may_verify: bool) -> None:
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Rejected):
        assert isinstance(result.reason, RejectReason)
        assert isinstance(result.detail, str) and len(result.detail) <= 200
        if not may_verify:
            assert not result.verified
        if not result.verified:
            assert result.rfa_id is None


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _assert_outcome(check(data), may_verify=False)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json_envelope(doc: Any) -> None:
    _assert_outcome(check(json.dumps(doc).encode()), may_verify=False)


@FUZZ
@given(st.dictionaries(st.sampled_from(["v", "alg", "kid", "payload", "sig"]), json_values))
def test_fuzz_envelope_shaped_junk(fields: dict[str, Any]) -> None:
    base = json.loads(rfa_envelope(AGENCY))
    base.update(fields)
    _assert_outcome(check(json.dumps(base).encode()), may_verify=True)


@FUZZ
@given(json_values)
def test_fuzz_signed_arbitrary_payload(payload: Any) -> None:
    result = check(sign(json.dumps(payload), AGENCY.signing))
    _assert_outcome(result, may_verify=True)
    assert isinstance(result, Rejected) and result.verified


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_signed_arbitrary_text(text: str) -> None:
    _assert_outcome(check(sign(text, AGENCY.signing)), may_verify=True)


FIELD_PATHS = [
    "type",
    "id",
    "agency",
    "agency.id",
    "agency.name",
    "case_number",
    "investigator",
    "investigator.name",
    "investigator.email",
    "investigator.phone",
    "description",
    "area",
    "area.lat",
    "area.lon",
    "area.radius_m",
    "window",
    "window.start",
    "window.end",
    "issued_at",
    "expires_at",
    "recipient",
    "upload_url",
]


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(FIELD_PATHS),
        st.one_of(st.just(DELETE), json_values),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 25),
    st.booleans(),
)
def test_fuzz_valid_request_with_fields_mutated(
    changes: dict[str, Any], pending: int, enabled: bool
) -> None:
    payload = rfa_payload(AGENCY)
    from tests.sync.factories import apply_changes

    mutated = apply_changes(payload, changes)
    try:
        text = json.dumps(mutated)
    except (ValueError, RecursionError):
        return
    result = check(sign(text, AGENCY.signing), pending=pending, requests_enabled=enabled)
    _assert_outcome(result, may_verify=True)
    if isinstance(result, Accepted):
        # acceptance implies the device-side rules held
        assert enabled and pending < 20
        assert 0 < result.rfa.area.radius_m <= 805
        assert result.rfa.window.start_ms < result.rfa.window.end_ms <= result.rfa.issued_at_ms
        assert result.rfa.expires_at_ms > NOW_MS
        assert result.rfa.agency.id == "sfpd"
    else:
        assert result.verified


# --- rules 3 and 12 of revision 1.1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("agency_id", "ok"),
    [("a", True), ("x" * 32, True), ("x" * 33, False), ("SFPD", False), ("sf_pd", False)],
)
def test_agency_id_is_1_to_32_of_lowercase_digits_and_hyphen(agency_id: str, ok: bool) -> None:
    keys = AgencyKeys.generate(agency_id)
    data = rfa_envelope(keys, changes={"agency.id": agency_id})
    result = check_rfa(data, device_facts(), keys.trusted(), set(), NOW_MS, pending_count=0)
    assert isinstance(result, Accepted) is ok
    if not ok:
        assert result.reason is R.BAD_AGENCY_ID


@pytest.mark.parametrize(("accepted_before", "ok"), [(0, True), (1, True), (2, False), (7, False)])
def test_at_most_two_requests_per_agency_and_case(accepted_before: int, ok: bool) -> None:
    asked: list[tuple[str, str]] = []

    def count(agency_id: str, case_number: str) -> int:
        asked.append((agency_id, case_number))
        return accepted_before

    data = rfa_envelope(AGENCY)
    result = check_rfa(
        data, device_facts(), AGENCY.trusted(), set(), NOW_MS, pending_count=0, case_count=count
    )
    assert isinstance(result, Accepted) is ok
    assert asked == [("sfpd", "2026-004512")]
    if not ok:
        assert result.reason is R.CASE_LIMIT and result.verified
