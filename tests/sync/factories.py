"""Valid, signed protocol messages for tests, with overrides.

Typical use::

    agency = AgencyKeys.generate()                # Ed25519 key + age identity, id "sfpd"
    data = rfa_envelope(agency)                   # a valid RFA for DEVICE at NOW_MS
    data = rfa_envelope(agency, changes={"area.radius_m": 806, "investigator.email": DELETE})
    result = check_rfa(data, device_facts(), agency.trusted(), set(), NOW_MS, pending_count=0)

    owner = SigningKey.generate()
    sealed = seal(decision_envelope(owner, rfa_id=..., changes={"decision": "deny"}), [...])

`changes` keys are dotted paths into the payload (`"window.start"`); the value `DELETE`
removes the key. Times are derived from `now_ms` so a message is valid at that moment.
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pyrage import x25519

from foundation.times import format_time, parse_time
from sync.envelope import make_envelope
from sync.geo import EARTH_RADIUS_M
from sync.keys import SigningKey
from sync.rfa import DeviceFacts, TrustedAgencyKey

NOW_MS = parse_time("2026-11-28T13:00:00Z")
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

DEVICE_ID = "porch-cam-01"
DEVICE_LAT = 37.77490
DEVICE_LON = -122.41940
AGENCY_ID = "sfpd"


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()
"""Use as a value in `changes` to remove that key from the payload."""


@dataclass(frozen=True)
class AgencyKeys:
    """An agency's signing key, its age identity (to read shares) and its id."""

    agency_id: str
    signing: SigningKey
    identity: x25519.Identity

    @classmethod
    def generate(cls, agency_id: str = AGENCY_ID) -> AgencyKeys:
        return cls(agency_id, SigningKey.generate(), x25519.Identity.generate())

    @property
    def recipient(self) -> str:
        return str(self.identity.to_public())

    @property
    def kid(self) -> str:
        return self.signing.kid

    def trusted_key(self) -> TrustedAgencyKey:
        return TrustedAgencyKey(agency_id=self.agency_id, public_key=self.signing.public)

    def trusted(self) -> dict[str, TrustedAgencyKey]:
        """The mapping `check_rfa` takes: kid -> trusted key."""
        return {self.kid: self.trusted_key()}


def apply_changes(doc: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of `doc` with dotted-path `changes` applied (`DELETE` removes a key).

    Missing intermediate objects are created; an intermediate that is not an object is
    replaced by one.
    """
    out = copy.deepcopy(dict(doc))
    for path, value in (changes or {}).items():
        keys = path.split(".")
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return out


def device_facts(**overrides: Any) -> DeviceFacts:
    """The test device: at DEVICE_LAT/LON, requests on, no plain-http loopback."""
    base = DeviceFacts(
        device_id=DEVICE_ID,
        lat=DEVICE_LAT,
        lon=DEVICE_LON,
        requests_enabled=True,
        allow_plain_http_loopback=False,
    )
    return replace(base, **overrides)


def rfa_payload(
    agency: AgencyKeys,
    *,
    now_ms: int = NOW_MS,
    rfa_id: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid RFA payload at `now_ms`: issued now, a 2 h window ending 1 h ago, 7 days'
    life, centred on the test device with an 800 m radius."""
    payload = {
        "type": "rfa",
        "id": rfa_id or str(uuid.uuid4()),
        "agency": {"id": agency.agency_id, "name": "San Francisco Police Department"},
        "case_number": "2026-004512",
        "investigator": {
            "name": "Det. A. Rivera",
            "email": "a.rivera@example.gov",
            "phone": "+1 415 555 0100",
        },
        "description": "Package theft from porches on Elm St.",
        "area": {"lat": DEVICE_LAT, "lon": DEVICE_LON, "radius_m": 800},
        "window": {
            "start": format_time(now_ms - 3 * HOUR_MS),
            "end": format_time(now_ms - HOUR_MS),
        },
        "issued_at": format_time(now_ms),
        "expires_at": format_time(now_ms + 7 * DAY_MS),
        "recipient": agency.recipient,
        "upload_url": "https://uploads.example.gov/files/",
    }
    return apply_changes(payload, changes)


def sign(payload: Mapping[str, Any] | str, key: SigningKey) -> bytes:
    """A signed envelope over `payload` (a string is signed exactly as given). A mapping
    may hold NaN or Infinity, as a hostile agency's could: it is written as Python would."""
    if not isinstance(payload, str):
        payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return make_envelope(payload, key)


def rfa_envelope(
    agency: AgencyKeys,
    *,
    now_ms: int = NOW_MS,
    rfa_id: str | None = None,
    changes: Mapping[str, Any] | None = None,
    key: SigningKey | None = None,
) -> bytes:
    """A signed RFA envelope (by `key`, default the agency's own)."""
    payload = rfa_payload(agency, now_ms=now_ms, rfa_id=rfa_id, changes=changes)
    return sign(payload, key or agency.signing)


def decision_payload(
    *,
    rfa_id: str,
    device_id: str = DEVICE_ID,
    now_ms: int = NOW_MS,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid approve decision issued at `now_ms` with a fresh nonce and no narrowed
    window (add one with `changes={"window": {...}}`)."""
    payload = {
        "type": "decision",
        "device_id": device_id,
        "rfa_id": rfa_id,
        "decision": "approve",
        "share_contact": True,
        "issued_at": format_time(now_ms),
        "nonce": uuid.uuid4().hex,
    }
    return apply_changes(payload, changes)


def decision_envelope(
    owner: SigningKey,
    *,
    rfa_id: str,
    device_id: str = DEVICE_ID,
    now_ms: int = NOW_MS,
    changes: Mapping[str, Any] | None = None,
) -> bytes:
    """A decision envelope signed by `owner` (seal it with sync.seal for the wire)."""
    payload = decision_payload(rfa_id=rfa_id, device_id=device_id, now_ms=now_ms, changes=changes)
    return sign(payload, owner)


def payload_text(envelope: bytes) -> str:
    """The payload string inside an envelope (no verification)."""
    return str(json.loads(envelope)["payload"])


def destination(lat: float, lon: float, bearing_deg: float, dist_m: float) -> tuple[float, float]:
    """The point `dist_m` metres from (lat, lon) along `bearing_deg`, on sync.geo's sphere."""
    phi1, lam1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), dist_m / EARTH_RADIUS_M
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * sin_phi2,
    )
    lon2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return max(-90.0, min(90.0, math.degrees(phi2))), lon2
