"""The cloud tools against the device's own code, without a broker: an RFA built by the
agency tool is accepted by the device's rule check, a decision sealed by the owner tool is
accepted by the device's decision check, the device builds the share from real recorded
footage, and the agency tool verifies it, named and anonymous."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyrage import x25519

from cloud.agency import RfaSpec, build_rfa
from cloud.owner import PairedDevice, decision_payload, seal_decision
from cloud.verify import verify_share
from foundation.times import Window
from sync.credentials import new_device_signer
from sync.decision import DecisionAccepted, check_decision
from sync.keys import SigningKey
from sync.rfa import Accepted, DeviceFacts, TrustedAgencyKey, check_rfa
from sync.seal import unseal
from sync.share import build_share

DEVICE_ID = "porch-cam-01"
LAT, LON = 37.7749, -122.4194


@pytest.mark.parametrize("anonymous", [False, True])
def test_agency_owner_and_device_agree_end_to_end(
    tmp_path: Path, recorded_buffer: tuple[Path, int, int], anonymous: bool
) -> None:
    root, first_ms, last_ms = recorded_buffer
    now = last_ms + 60_000
    agency_key, agency_identity = SigningKey.generate(), x25519.Identity.generate()
    device_key, device_identity = SigningKey.generate(), x25519.Identity.generate()
    owner_key = SigningKey.generate()

    spec = RfaSpec(
        agency_id="sfpd",
        agency_name="SFPD",
        case_number="2026-7",
        investigator_name="Det. Rivera",
        email="rivera@example.gov",
        description="theft",
        lat=LAT,
        lon=LON,
        radius_m=500,
        window=Window(first_ms - 60_000, last_ms + 1000),
        expires_at_ms=now + 86_400_000,
        recipient=str(agency_identity.to_public()),
        upload_url="https://uploads.example.gov/files/",
    )
    signed = build_rfa(spec, agency_key, now_ms=now)
    facts = DeviceFacts(
        device_id=DEVICE_ID,
        lat=LAT,
        lon=LON,
        requests_enabled=True,
        allow_plain_http_loopback=False,
    )
    trusted = {agency_key.kid: TrustedAgencyKey("sfpd", agency_key.public)}
    accepted = check_rfa(signed.envelope, facts, trusted, set(), now, pending_count=0)
    assert isinstance(accepted, Accepted), accepted
    rfa = accepted.rfa

    # The owner shares a few seconds from the middle of the footage.
    approved = Window(first_ms + 5_000, first_ms + 9_000)
    device = PairedDevice(
        device_id=DEVICE_ID,
        device_key=device_key.public_b64,
        recipient=str(device_identity.to_public()),
    )
    payload = decision_payload(
        device_id=DEVICE_ID,
        rfa_id=rfa.id,
        approve=True,
        window=approved,
        share_contact=not anonymous,
        now_ms=now,
    )
    sealed = seal_decision(payload, owner_key, device)
    decided = check_decision(
        unseal(sealed, [device_identity]),
        owner_keys={owner_key.kid: owner_key.public},
        device_id=DEVICE_ID,
        pending={rfa.id: rfa},
        used_nonces=set(),
        now_ms=now,
    )
    assert isinstance(decided, DecisionAccepted), decided

    outbox = tmp_path / "outbox"
    built = build_share(
        rfa=rfa,
        decision=decided.decision,
        buffer_root=root,
        clip_path=outbox / f"{rfa.id}.mp4.age",
        manifest_path=outbox / f"{rfa.id}.manifest.json.age",
        device_key=device_key,
        device_id=DEVICE_ID,
        clip_signer=new_device_signer(DEVICE_ID),
        contact={
            "name": "Sam",
            "email": "s@example.org",
            "address": "1 Elm",
            "lat": LAT,
            "lon": LON,
        },
        now_ms=now,
    )
    report = verify_share(
        built.manifest_path,
        built.clip_path,
        identity=agency_identity,
        agency_keys=[agency_key.public],
        owner_keys=[owner_key.public],
    )
    assert report.ok, report.render()
    assert report.anonymous is anonymous
    assert report.device_id == (None if anonymous else DEVICE_ID)
    assert report.decision_signature == ("none" if anonymous else "verified")
    # 4 s of 15 fps footage, both edges inclusive.
    assert report.frames is not None and 59 <= report.frames <= 61
    assert report.first_frame_ms is not None and report.first_frame_ms >= approved.start_ms
    assert report.last_frame_ms is not None and report.last_frame_ms <= approved.end_ms

    # And a share checked against some other agency's key is refused.
    other = verify_share(
        built.manifest_path,
        built.clip_path,
        identity=agency_identity,
        agency_keys=[SigningKey.generate().public],
    )
    assert other.failed("request_signature")
