"""Build shares by hand for the verifier's tests: real H.264 clips of stamped synthetic
frames (protocol.md §8), a manifest signed like a device signs it, both age-encrypted to the
agency. Every part can be built wrong on purpose, one at a time.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyrage
from pyrage import x25519

from foundation.times import Window, format_time
from recorder.synthetic import draw_frame
from sync.envelope import canonical_envelope, make_envelope, parse_envelope
from sync.keys import SigningKey

WIDTH, HEIGHT, FPS = 320, 240, 15
T0 = 1_794_999_960_000  # 2026-11-18, a whole minute, a round moment for request windows


def frame_times(first_ms: int, count: int, fps: int = FPS) -> list[int]:
    return [first_ms + round(i * 1000 / fps) for i in range(count)]


def record_clip(
    out: Path,
    times: Sequence[int],
    *,
    stamps: Sequence[int] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    fps: int = FPS,
) -> None:
    """An MP4 whose frame i has pts = times[i] - times[0] (ms) and carries stamps[i]."""
    stamps = list(stamps if stamps is not None else times)
    with av.open(str(out), "w", format="mp4", options={"video_track_timescale": "1000"}) as mp4:
        stream = mp4.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"bframes=0:keyint={fps}:min-keyint={fps}:scenecut=0",
        }
        for index, (t, stamp) in enumerate(zip(times, stamps, strict=True)):
            picture = np.ascontiguousarray(draw_frame(stamp, width, height, index))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = t - times[0]
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                mp4.mux(packet)
        for packet in stream.encode(None):
            mp4.mux(packet)


@dataclass
class Agency:
    key: SigningKey = field(default_factory=SigningKey.generate)
    identity: x25519.Identity = field(default_factory=x25519.Identity.generate)
    agency_id: str = "sfpd"

    @property
    def recipient(self) -> str:
        return str(self.identity.to_public())


@dataclass
class ShareParts:
    """Everything a test may want to inspect or reuse after building a share."""

    manifest_path: Path
    clip_path: Path
    manifest: dict[str, Any]
    clip_plain: Path
    device_key: SigningKey
    owner_key: SigningKey
    rfa_id: str


def rfa_envelope(
    agency: Agency, *, rfa_id: str, window: Window, signer: SigningKey | None = None
) -> str:
    payload = {
        "type": "rfa",
        "id": rfa_id,
        "agency": {"id": agency.agency_id, "name": "San Francisco Police Department"},
        "case_number": "2026-004512",
        "investigator": {"name": "Det. A. Rivera", "email": "a.rivera@example.gov"},
        "description": "Package theft from porches on Elm St.",
        "area": {"lat": 37.7749, "lon": -122.4194, "radius_m": 800},
        "window": window.to_json(),
        "issued_at": format_time(window.end_ms + 60_000),
        "expires_at": format_time(window.end_ms + 7 * 86_400_000),
        "recipient": agency.recipient,
        "upload_url": "https://uploads.example.gov/files/",
    }
    return make_envelope(payload, signer or agency.key).decode()


def decision_envelope(
    owner: SigningKey,
    *,
    device_id: str,
    rfa_id: str,
    window: Window | None,
    share_contact: bool = True,
    at_ms: int,
) -> str:
    payload: dict[str, Any] = {
        "type": "decision",
        "device_id": device_id,
        "rfa_id": rfa_id,
        "decision": "approve",
        "share_contact": share_contact,
        "issued_at": format_time(at_ms),
        "nonce": uuid.uuid4().hex,
    }
    if window is not None:
        payload["window"] = window.to_json()
    return make_envelope(payload, owner).decode()


def build_share(
    root: Path,
    agency: Agency,
    *,
    frames: int = 30,
    first_ms: int = T0 + 120_000,
    extra_frames_after: int = 0,
    anonymous: bool = False,
    approved: Window | None = None,
    decision_window: Window | None | str = "approved",
    request_signer: SigningKey | None = None,
    manifest_signer: SigningKey | None = None,
    tamper_plain_clip: Callable[[Path], None] | None = None,
    edit_manifest: Callable[[dict[str, Any]], None] | None = None,
    stamps_offset_ms: int = 0,
) -> ShareParts:
    """A share of `frames` frames from `first_ms`, approved for exactly their span unless
    `approved` says otherwise. `extra_frames_after` frames are recorded past the approved
    end (and counted in the manifest), as a broken export would."""
    root.mkdir(parents=True, exist_ok=True)
    device_key = SigningKey.generate()
    owner_key = SigningKey.generate()
    rfa_id = str(uuid.uuid4())
    requested = Window(T0, T0 + 600_000)
    times = frame_times(first_ms, frames + extra_frames_after)
    approved = approved or Window(times[0], times[frames - 1])
    clip_plain = root / "clip.mp4"
    record_clip(clip_plain, times, stamps=[t + stamps_offset_ms for t in times])
    if tamper_plain_clip is not None:
        tamper_plain_clip(clip_plain)
    data = clip_plain.read_bytes()
    request = canonical_envelope(
        parse_envelope(rfa_envelope(agency, rfa_id=rfa_id, window=requested, signer=request_signer))
    )
    decision: str | None = None
    if not anonymous:
        window = approved if decision_window == "approved" else decision_window
        assert not isinstance(window, str)
        decision = decision_envelope(
            owner_key, device_id="porch-cam-01", rfa_id=rfa_id, window=window, at_ms=T0 + 700_000
        )
    manifest: dict[str, Any] = {
        "type": "share-manifest",
        "rfa_id": rfa_id,
        "case_number": "2026-004512",
        "agency_id": agency.agency_id,
        "anonymous": anonymous,
        "device_id": "porch-cam-01",
        "device_key": device_key.public_b64,
        "request": request,
        "decision": decision,
        "window_requested": requested.to_json(),
        "window_approved": approved.to_json(),
        "first_frame_at": format_time(times[0]),
        "last_frame_at": format_time(times[-1]),
        "frames": len(times),
        "clip": {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "codec": "h264",
            "width": WIDTH,
            "height": HEIGHT,
            "fps": FPS,
        },
        "clock": {"synchronized": True},
        "consent": {
            "method": "button" if anonymous else "app",
            "at": format_time(T0 + (660_000 if anonymous else 700_000)),
            "owner_kid": None if anonymous else owner_key.kid,
        },
        "contact": None
        if anonymous
        else {
            "name": "Sam Owner",
            "email": "sam@example.org",
            "address": "1 Elm St",
            "lat": 37.775,
            "lon": -122.419,
        },
        "created_at": format_time(T0 + (720_000 if anonymous else 710_000)),
        "software": "doorbell 0.1.0",
    }
    if anonymous:
        del manifest["device_id"]
    if edit_manifest is not None:
        edit_manifest(manifest)
    text = json.dumps(manifest, separators=(",", ":"))
    envelope = make_envelope(text, manifest_signer or device_key)
    recipient = agency.identity.to_public()
    manifest_path = root / f"{rfa_id}.manifest.json.age"
    manifest_path.write_bytes(pyrage.encrypt(envelope, [recipient]))
    clip_path = root / f"{rfa_id}.mp4.age"
    clip_path.write_bytes(pyrage.encrypt(data, [recipient]))
    return ShareParts(
        manifest_path=manifest_path,
        clip_path=clip_path,
        manifest=manifest,
        clip_plain=clip_plain,
        device_key=device_key,
        owner_key=owner_key,
        rfa_id=rfa_id,
    )
