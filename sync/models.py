"""The protocol's records as frozen dataclasses: what a checked request, a decision and
a share are. Parsing and checking live in `sync.rfa` and `sync.decision`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from recorder.times import Window, format_time


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
        """The request's fields as the owner sees them (PROTOCOL §5.1, without device keys)."""
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
