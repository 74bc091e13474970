"""What a share would send, said before the owner approves it: one summary for the
console and `doorbellctl approve` alike.

`share_summary` is a function of the request, the chosen window, what the buffer holds
of it (recorder.timeline.Footage, from the index alone) and what a named share adds (the
configured contact, the camera's position, the device id: sync.share's own keys); its
size estimate is sync.share's upload_estimate (the MP4, its Content Credentials, age's
overhead, the manifest), which encrypts and signs nothing of the owner's (the
credentials' size is measured on a blank one-frame clip with a stand-in signer).
Its answer is JSON: times are RFC 3339 UTC, each surface shows them in its own local
time (the browser's, the terminal's). `problem` is set when an approval would send
nothing (sync.decision.nothing_to_send, the rule the request flow applies): the owner is
told why and offered to decline instead, before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from foundation.display import shown
from foundation.times import Window, format_time, parse_time
from recorder.timeline import Footage
from sync.decision import nothing_to_send
from sync.models import ConsentMethod, Decision, Rfa
from sync.share import CONTACT_KEYS, upload_estimate


def upload_host(url: str) -> str:
    """The host (and port, when not the scheme's default) an upload URL names."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def share_summary(
    rfa: Rfa,
    window: Window,
    footage: Footage,
    *,
    share_contact: bool,
    contact: Mapping[str, Any] | None,
    device_id: str,
) -> dict[str, Any]:
    refusal = nothing_to_send(window, footage.frames > 0)
    sends: dict[str, Any] | None = None
    if share_contact:
        given = contact or {}
        sends = {key: given.get(key) for key in CONTACT_KEYS}
        sends["device_id"] = device_id
    # the approval this summary is about (any moment: only the lengths of times count)
    approval = Decision(
        rfa.id, True, window, share_contact, ConsentMethod.CONSOLE, window.end_ms, None, None, None
    )
    estimate = upload_estimate(footage, rfa, approval, contact, device_id)
    return {
        "rfa_id": rfa.id,
        "window": window.to_json(),
        "whole_window": window == rfa.window,
        "duration_seconds": window.duration_ms / 1000,
        "frames": footage.frames,
        "first_frame_at": None if footage.first_ms is None else format_time(footage.first_ms),
        "last_frame_at": None if footage.last_ms is None else format_time(footage.last_ms),
        "covered_seconds": footage.covered_ms / 1000,
        "estimated_bytes": estimate["total"],  # what the upload server would receive
        "estimate": estimate,  # where those bytes come from
        "to": {
            "agency_name": rfa.agency.name,
            "agency_id": rfa.agency.id,
            "upload_host": upload_host(rfa.upload_url),
        },
        "share_contact": share_contact,
        "sends": sends,  # None for an anonymous share; a value None: not configured
        "problem": None
        if refusal is None
        else {"reason": str(refusal.reason), "message": refusal.detail},
    }


def _local(text: str) -> str:
    return (
        datetime.fromtimestamp(parse_time(text) / 1000).astimezone().strftime("%a %d %b %H:%M:%S")
    )


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.0f} kB"


def _span(seconds: float) -> str:
    """'2 h', '1 h 5 min', '5 min 3 s', '3 s': as the console's page says it."""
    s = round(seconds)
    h, m, r = s // 3600, s % 3600 // 60, s % 60
    if h:
        return f"{h} h" + (f" {m} min" if m else "")
    if m:
        return f"{m} min" + (f" {r} s" if r else "")
    return f"{r} s"


def render_summary(summary: Mapping[str, Any]) -> str:
    """The summary for a terminal, in the terminal's local time; every string that came
    from the agency escaped (foundation.display)."""
    window, to = summary["window"], summary["to"]
    duration = summary["duration_seconds"]
    covered = summary["covered_seconds"]
    lines = [
        f"send         {_local(window['start'])} .. {_local(window['end'])} (local time)"
        f"  {_span(duration)}",
        f"footage      {summary['frames']} frames, about {_megabytes(summary['estimated_bytes'])}"
        + (
            f"; the doorbell holds {_span(covered)} of these {_span(duration)}"
            if covered > 0 and duration - covered > 1  # a gap of a second or more
            else ""
        ),
        f"to           {shown(to['agency_name'])} (id {shown(to['agency_id'])}),"
        f" uploaded to {shown(to['upload_host'])}",
    ]
    sends = summary["sends"]
    if sends is None:
        lines.append("as           anonymous: no name, contact, position or device id")
    else:
        people = [(key, sends.get(key)) for key in ("name", "email", "address")]
        if all(value is None for _, value in people):
            lines.append("contact      no contact set (device.contact in the config)")
        for key, value in people:
            if value is not None:
                lines.append(f"{key:<13}{shown(value)}")
        lines.append(f"position     {sends.get('lat')}, {sends.get('lon')}")
        lines.append(f"device id    {sends.get('device_id')}")
    if summary["problem"] is not None:
        lines.append(f"refused      {summary['problem']['message']}")
    return "\n".join(lines)
