"""The share verifier: a good share passes, and each kind of tampering fails the check
named for it (real H.264 clips of stamped frames, real age encryption)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyrage
import pytest

from cloud.agency import IDENTITY_FILE, SIGNING_FILE, generate_agency_keys
from cloud.verify import verify_share
from foundation.times import Window, format_time
from sync.keys import SigningKey, load_identity, load_signing_key
from tests.cloud.shares import T0, Agency, ShareParts, build_share, frame_times


@pytest.fixture
def agency() -> Agency:
    return Agency()


def verify(agency: Agency, share: ShareParts, **options: Any):
    options.setdefault("owner_keys", [share.owner_key.public])
    return verify_share(
        share.manifest_path,
        share.clip_path,
        identity=agency.identity,
        agency_keys=[agency.key.public],
        **options,
    )


def test_a_good_named_share_verifies(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    report = verify(agency, share)
    assert report.ok, report.render()
    assert report.anonymous is False
    assert report.device_id == "porch-cam-01"
    assert report.frames == 30
    assert report.synchronized is True
    assert report.decision_signature == "verified"
    assert "VERIFIED" in report.render()


def test_a_good_anonymous_share_verifies(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, anonymous=True)
    report = verify(agency, share, owner_keys=[])
    assert report.ok, report.render()
    assert report.anonymous is True
    assert report.device_id is None
    assert report.decision_signature == "none"


def test_without_the_owner_key_the_decision_signature_is_reported_unchecked(
    agency: Agency, tmp_path: Path
) -> None:
    report = verify(agency, build_share(tmp_path, agency), owner_keys=[])
    assert report.ok
    assert report.decision_signature.startswith("unchecked")


def test_unsynchronized_clock_is_reported(agency: Agency, tmp_path: Path) -> None:
    share = build_share(
        tmp_path, agency, edit_manifest=lambda m: m.update(clock={"synchronized": False})
    )
    report = verify(agency, share)
    assert report.ok
    assert report.synchronized is False
    assert "NOT synchronized" in report.render()


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_clip_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    # Flip a plaintext byte and re-encrypt: the age layer is fine, the hash is not.
    _flip_middle_byte(share.clip_plain)
    share.clip_path.write_bytes(
        pyrage.encrypt(share.clip_plain.read_bytes(), [agency.identity.to_public()])
    )
    report = verify(agency, share)
    assert not report.ok
    assert report.failed("clip_sha256")


def test_a_flipped_byte_in_the_ciphertext_fails_decryption(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    _flip_middle_byte(share.clip_path)
    report = verify(agency, share)
    assert report.failed("clip_decrypt")


def test_a_manifest_signed_by_another_key_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, manifest_signer=SigningKey.generate())
    report = verify(agency, share)
    assert report.failed("manifest_signature")
    assert not report.ok


def test_a_request_not_signed_by_the_agency_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, request_signer=SigningKey.generate())
    report = verify(agency, share)
    assert report.failed("request_signature")


def test_a_request_for_another_case_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, edit_manifest=lambda m: m.update(case_number="9999"))
    report = verify(agency, share)
    assert report.failed("request_matches")


def test_window_approved_outside_window_requested_fails(agency: Agency, tmp_path: Path) -> None:
    first = T0 - 5_000  # before the request's window starts
    times = frame_times(first, 30)
    share = build_share(tmp_path, agency, first_ms=first, decision_window=None)
    report = verify(agency, share)
    assert report.failed("window_approved")
    assert Window(times[0], times[-1]) == report.window_approved


def test_a_frame_outside_the_approved_window_fails(agency: Agency, tmp_path: Path) -> None:
    # The manifest counts the extra frame honestly; only the window check can catch it.
    share = build_share(tmp_path, agency, extra_frames_after=1)
    report = verify(agency, share)
    assert report.failed("frames_in_window")
    assert not report.failed("frame_count")
    assert not report.failed("frame_timing")


def test_a_frame_count_mismatch_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, edit_manifest=lambda m: m.update(frames=29))
    report = verify(agency, share)
    assert report.failed("frame_count")


def test_a_decision_window_that_differs_fails(agency: Agency, tmp_path: Path) -> None:
    other = Window(T0 + 60_000, T0 + 300_000)
    share = build_share(tmp_path, agency, decision_window=other)
    report = verify(agency, share)
    assert report.failed("decision")


def test_a_decision_for_another_device_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency, edit_manifest=lambda m: m.update(device_id="other-cam"))
    report = verify(agency, share)
    assert report.failed("decision")


def test_a_decision_signed_by_an_unknown_owner_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    report = verify(agency, share, owner_keys=[SigningKey.generate().public])
    assert report.failed("decision")
    assert report.decision_signature == "FAILED"


def test_stamps_that_disagree_with_pts_fail(agency: Agency, tmp_path: Path) -> None:
    # Frames stamped 1 ms later than the pts says: capture timing was not kept.
    share = build_share(tmp_path, agency, stamps_offset_ms=1)
    report = verify(agency, share)
    assert report.failed("frame_timing")
    # Without stamps (a real camera) pts alone are trusted and this passes.
    assert verify(agency, share, stamps=False).ok


def test_wrong_first_frame_time_fails(agency: Agency, tmp_path: Path) -> None:
    share = build_share(
        tmp_path,
        agency,
        edit_manifest=lambda m: m.update(first_frame_at=format_time(T0 + 120_001)),
    )
    report = verify(agency, share)
    assert report.failed("frame_timing")
    assert report.failed("first_last_frame")


def test_anonymous_share_that_names_the_device_fails(agency: Agency, tmp_path: Path) -> None:
    def leak(manifest: dict[str, Any]) -> None:
        manifest["device_id"] = "porch-cam-01"

    share = build_share(tmp_path, agency, anonymous=True, edit_manifest=leak)
    report = verify(agency, share, owner_keys=[])
    assert report.failed("share_kind")


def test_wrong_codec_facts_fail(agency: Agency, tmp_path: Path) -> None:
    def lie(manifest: dict[str, Any]) -> None:
        manifest["clip"].update(width=640, fps=30)

    share = build_share(tmp_path, agency, edit_manifest=lie)
    report = verify(agency, share)
    assert report.failed("clip_format")
    assert report.failed("clip_fps")


def test_the_wrong_identity_cannot_open_the_share(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    report = verify(Agency(key=agency.key), share)
    assert report.failed("manifest_decrypt")
    assert not report.ok


def test_junk_manifest_is_a_failed_check_not_a_crash(agency: Agency, tmp_path: Path) -> None:
    share = build_share(tmp_path, agency)
    for junk in (b"not json", b'{"v":1}', b"[]"):
        share.manifest_path.write_bytes(pyrage.encrypt(junk, [agency.identity.to_public()]))
        report = verify(agency, share)
        assert report.failed("manifest_signature")


def test_verify_cli_exit_status_names_the_failure(tmp_path: Path) -> None:
    keydir = tmp_path / "agency"
    generate_agency_keys(keydir, agency_id="sfpd")
    agency = Agency(
        key=load_signing_key(keydir / SIGNING_FILE),
        identity=load_identity(keydir / IDENTITY_FILE),
    )
    good = build_share(tmp_path / "good", agency)
    bad = build_share(tmp_path / "bad", agency, edit_manifest=lambda m: m.update(frames=3))

    def run(share: ShareParts) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloud.agency", "verify", "--identity",
             str(keydir / IDENTITY_FILE), "--key", str(keydir / SIGNING_FILE),
             str(share.manifest_path), str(share.clip_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    ok = run(good)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert "VERIFIED" in ok.stdout
    failed = run(bad)
    assert failed.returncode == 1
    assert "[FAIL] frame_count" in failed.stdout
