"""The protocol's records as frozen dataclasses: what a checked request, a decision and
a share are, and their one storage form (the state database and the outbox both keep
them). Parsing and checking of what arrives from the network live in `sync.rfa` and
`sync.decision`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from foundation.times import Window, format_time


@dataclass(frozen=True, slots=True)
class Agency:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Investigator:
    name: str
    email: str | None
    phone: str | None

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name}
        if self.email is not None:
            out["email"] = self.email
        if self.phone is not None:
            out["phone"] = self.phone
        return out


@dataclass(frozen=True, slots=True)
class Area:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Rfa:
    """A Request for Assistance whose envelope verified and whose rules all held."""

    id: str
    agency: Agency
    case_number: str
    investigator: Investigator
    description: str
    area: Area
    window: Window
    issued_at_ms: int
    expires_at_ms: int
    recipient: str
    upload_url: str
    envelope_text: str  # the signed envelope exactly as received (goes into the manifest)
    kid: str

    def public_json(self) -> dict[str, Any]:
        """The request's fields as the owner sees them (protocol.md §5.1, without device keys)."""
        return {
            "id": self.id,
            "agency": {"id": self.agency.id, "name": self.agency.name},
            "case_number": self.case_number,
            "investigator": self.investigator.to_json(),
            "description": self.description,
            "area": {"lat": self.area.lat, "lon": self.area.lon, "radius_m": self.area.radius_m},
            "window": self.window.to_json(),
            "expires_at": format_time(self.expires_at_ms),
        }


class ConsentMethod(StrEnum):
    BUTTON = "button"
    APP = "app"
    CLI = "cli"
    CONSOLE = "console"  # the owner's web console on the home network (device/console)


@dataclass(frozen=True, slots=True)
class Decision:
    """The owner's decision on one pending request, however it was made."""

    rfa_id: str
    approve: bool
    window: Window  # the window to share: the request's own unless the owner narrowed it
    share_contact: bool
    method: ConsentMethod
    at_ms: int
    owner_kid: str | None  # set for app decisions
    envelope_text: str | None  # the owner's signed decision envelope, for app decisions
    nonce: str | None


# --- storage form: what the device itself wrote, read back after a restart ---------------


def rfa_to_json(rfa: Rfa) -> str:
    return json.dumps(
        {
            "id": rfa.id,
            "agency": {"id": rfa.agency.id, "name": rfa.agency.name},
            "case_number": rfa.case_number,
            "investigator": {
                "name": rfa.investigator.name,
                "email": rfa.investigator.email,
                "phone": rfa.investigator.phone,
            },
            "description": rfa.description,
            "area": {"lat": rfa.area.lat, "lon": rfa.area.lon, "radius_m": rfa.area.radius_m},
            "window": [rfa.window.start_ms, rfa.window.end_ms],
            "issued_at_ms": rfa.issued_at_ms,
            "expires_at_ms": rfa.expires_at_ms,
            "recipient": rfa.recipient,
            "upload_url": rfa.upload_url,
            "envelope_text": rfa.envelope_text,
            "kid": rfa.kid,
        },
        separators=(",", ":"),
    )


def rfa_from_json(text: str) -> Rfa:
    d = json.loads(text)
    inv = d["investigator"]
    return Rfa(
        id=d["id"],
        agency=Agency(id=d["agency"]["id"], name=d["agency"]["name"]),
        case_number=d["case_number"],
        investigator=Investigator(name=inv["name"], email=inv["email"], phone=inv["phone"]),
        description=d["description"],
        area=Area(lat=d["area"]["lat"], lon=d["area"]["lon"], radius_m=d["area"]["radius_m"]),
        window=Window(d["window"][0], d["window"][1]),
        issued_at_ms=d["issued_at_ms"],
        expires_at_ms=d["expires_at_ms"],
        recipient=d["recipient"],
        upload_url=d["upload_url"],
        envelope_text=d["envelope_text"],
        kid=d["kid"],
    )


def decision_to_json(decision: Decision) -> str:
    return json.dumps(
        {
            "rfa_id": decision.rfa_id,
            "approve": decision.approve,
            "window": [decision.window.start_ms, decision.window.end_ms],
            "share_contact": decision.share_contact,
            "method": str(decision.method),
            "at_ms": decision.at_ms,
            "owner_kid": decision.owner_kid,
            "envelope_text": decision.envelope_text,
            "nonce": decision.nonce,
        },
        separators=(",", ":"),
    )


def decision_from_json(text: str) -> Decision:
    d = json.loads(text)
    return Decision(
        rfa_id=d["rfa_id"],
        approve=d["approve"],
        window=Window(d["window"][0], d["window"][1]),
        share_contact=d["share_contact"],
        method=ConsentMethod(d["method"]),
        at_ms=d["at_ms"],
        owner_kid=d["owner_kid"],
        envelope_text=d["envelope_text"],
        nonce=d["nonce"],
    )
