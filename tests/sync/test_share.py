"""Building a share from real recorded footage, checked as an agency would: stock `age`
to decrypt, `openssl pkeyutl` to verify, PyAV to decode every frame."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from foundation.times import Window, format_time, parse_time
from recorder.buffer import RollingBuffer
from recorder.export import plan_parts
from recorder.timeline import measure_footage
from sync import SOFTWARE
from sync.models import ConsentMethod
from sync.share import ShareError, build_share, encrypted_bytes, upload_estimate
from tests.sync.factories import AgencyKeys
from tests.sync.sharekit import (
    CONTACT,
    decode_capture_times,
    make_decision,
    make_identity,
    make_rfa,
    open_share,
    openssl_verify,
    record_footage,
)

URL = "https://uploads.example.gov/files/"
GREASE = 2 * 180  # age's random header stanza: up to ~170 bytes more or less per file


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("buffer")
    first, last = record_footage(root, 12)
    return root, first, last


def build(tmp_path: Path, footage, *, named: bool, window=None, recipient=None, method=None):
    root, first, last = footage
    agency = AgencyKeys.generate()
    identity = make_identity()
    requested = Window(first - 1000, last + 1000)
    rfa = make_rfa(agency, upload_url=URL, window=requested, now_ms=last, recipient=recipient)
    decision = make_decision(
        rfa,
        named=named,
        now_ms=last + 60_000,
        window=window or Window(first + 2_345, first + 7_891),
        method=method or ConsentMethod.APP,
    )
    out = tmp_path / "out"
    built = build_share(
        rfa=rfa,
        decision=decision,
        buffer_root=root,
        clip_path=out / "c.mp4.age",
        manifest_path=out / "m.json.age",
        device_key=identity.signing,
        device_id=identity.device_id,
        clip_signer=identity.clip_signer,
        contact=CONTACT,
        now_ms=last + 120_000,
    )
    return agency, identity, rfa, decision, built, out


def test_named_share_decrypts_verifies_and_holds_exactly_the_window(tmp_path: Path, footage):
    agency, identity, rfa, decision, built, out = build(tmp_path, footage, named=True)
    assert sorted(p.name for p in out.iterdir()) == ["c.mp4.age", "m.json.age"]  # no plaintext
    opened = open_share(agency, built.manifest_path, built.clip_path, tmp_path / "agency")
    m = opened.manifest
    assert openssl_verify(opened.envelope, tmp_path / "agency")
    assert opened.envelope["kid"] == identity.signing.kid
    assert hashlib.sha256(opened.envelope_bytes).hexdigest() == built.manifest_sha256
    assert set(m) == {
        "type", "rfa_id", "case_number", "agency_id", "anonymous", "device_id", "device_key",
        "request", "decision", "window_requested", "window_approved", "first_frame_at",
        "last_frame_at", "frames", "clip", "c2pa", "clock", "consent", "contact", "created_at",
        "software",
    }  # fmt: skip
    assert m["type"] == "share-manifest" and m["anonymous"] is False
    assert m["rfa_id"] == rfa.id and m["agency_id"] == rfa.agency.id
    assert m["device_id"] == identity.device_id
    assert m["device_key"] == identity.signing.public_b64
    assert m["request"] == rfa.envelope_text  # the canonical form (protocol.md §2)
    assert m["decision"] == decision.envelope_text
    assert m["window_requested"] == rfa.window.to_json()
    assert m["window_approved"] == decision.window.to_json()
    assert m["consent"] == {
        "method": "app",
        "at": format_time(decision.at_ms),
        "owner_kid": decision.owner_kid,
    }
    assert m["contact"] == CONTACT
    assert m["clock"] == {"synchronized": True}
    assert m["software"] == SOFTWARE

    clip = opened.clip.read_bytes()
    assert m["clip"]["sha256"] == hashlib.sha256(clip).hexdigest() == built.clip_sha256
    assert m["clip"]["bytes"] == len(clip)
    assert (m["clip"]["codec"], m["clip"]["width"], m["clip"]["height"]) == ("h264", 320, 240)
    times = decode_capture_times(opened.clip)
    assert all(decision.window.contains(t) for t in times)
    assert len(times) == m["frames"] and times == sorted(times)
    assert format_time(times[0]) == m["first_frame_at"]
    assert format_time(times[-1]) == m["last_frame_at"]
    # every frame of the window: the footage runs at 15 fps with no gaps
    assert len(times) >= (decision.window.duration_ms * 15) // 1000 - 1


def test_anonymous_share_names_nobody(tmp_path: Path, footage):
    agency, identity, rfa, decision, built, _ = build(tmp_path, footage, named=False)
    opened = open_share(agency, built.manifest_path, built.clip_path, tmp_path / "agency")
    m = opened.manifest
    assert m["anonymous"] is True
    assert "device_id" not in m
    assert m["decision"] is None and m["contact"] is None
    assert m["consent"]["owner_kid"] is None
    assert m["device_key"] != identity.signing.public_b64  # a one-time key
    assert opened.envelope["kid"] != identity.signing.kid
    # coarse times (protocol.md §6.2): nothing to line up with the decision's instant
    for at in (m["created_at"], m["consent"]["at"]):
        assert parse_time(at) % 60_000 == 0, at
    # both are the moment the share is released (the caller's now_ms, here two minutes
    # after the decision), never the decision's own minute, which the broker saw go by
    released = decision.at_ms + 60_000
    assert parse_time(m["consent"]["at"]) == released - released % 60_000
    assert parse_time(m["created_at"]) == released - released % 60_000
    assert decision.at_ms - decision.at_ms % 60_000 != released - released % 60_000
    assert openssl_verify(opened.envelope, tmp_path / "agency")
    for secret in (
        identity.device_id,
        identity.signing.public_b64,
        identity.signing.kid,
        CONTACT["email"],
        CONTACT["name"],
        CONTACT["address"],
        str(CONTACT["lat"]),
    ):
        encoded = secret.encode()
        assert encoded not in opened.envelope_bytes
        assert encoded not in opened.clip.read_bytes()


def test_button_approval_carries_no_decision_envelope(tmp_path: Path, footage):
    _a, _i, _r, decision, built, _ = build(
        tmp_path, footage, named=True, method=ConsentMethod.BUTTON
    )
    agency = _a
    opened = open_share(agency, built.manifest_path, built.clip_path, tmp_path / "agency")
    assert opened.manifest["decision"] is None
    assert opened.manifest["consent"]["method"] == "button"
    assert opened.manifest["consent"]["owner_kid"] is None


def test_window_without_footage_fails_with_no_footage(tmp_path: Path, footage):
    _, first, _ = footage
    with pytest.raises(ShareError, match="^no footage$") as info:
        build(tmp_path, footage, named=True, window=Window(first - 900, first - 500))
    assert info.value.permanent
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_recipient_fails_clearly(tmp_path: Path, footage):
    with pytest.raises(ShareError, match="bad recipient") as info:
        build(tmp_path, footage, named=True, recipient="age1notarecipient")
    assert info.value.permanent
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_unsynchronized_footage_is_flagged(tmp_path: Path):
    root = tmp_path / "buffer"
    first, last = record_footage(root, 3, synchronized=False)
    agency, _i, _r, _d, built, _o = build(
        tmp_path, (root, first, last), named=True, window=Window(first, last)
    )
    opened = open_share(agency, built.manifest_path, built.clip_path, tmp_path / "agency")
    assert opened.manifest["clock"] == {"synchronized": False}


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


def test_full_disk_leaves_no_half_files(tmp_path: Path, footage):
    small = tmp_path / "out"
    if not _tmpfs(small, "128k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        with pytest.raises(ShareError, match="disk full") as info:
            build(tmp_path, footage, named=True)
        assert info.value.permanent
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False)  # even while files are open


@pytest.mark.parametrize("named", [True, False])
def test_the_size_told_before_approving_is_what_the_share_uploads(
    tmp_path: Path, footage, named: bool
) -> None:
    """upload_estimate (what the console and `doorbellctl approve` say) against the two
    encrypted files a real share uploads: the clip's boxes, its C2PA manifest store and
    the manifest are counted exactly (a few bytes of slack: FFmpeg's version in the
    clip's "encoder" tag, the random DER lengths in the C2PA signer's chain), age's
    header but for its random grease stanza (0 to about 170 bytes in each file, the
    median counted); a window starting mid-GOP is off by the re-encoded head, within
    the bytes of its GOP."""
    root, first, last = footage
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments()
        tables = buffer.frame_tables([s.id for s in segments])
    keyframes = [
        t for s in segments for t, k in zip(tables[s.id].times, tables[s.id].key, strict=True) if k
    ]
    for n, (window, slack) in enumerate(
        [
            (Window(keyframes[2], last), GREASE + 8),  # from a keyframe: nothing re-encoded
            (Window(first + 2_345, first + 7_891), None),  # mid-GOP
        ]
    ):
        _agency, identity, rfa, decision, built, _out = build(
            tmp_path / str(n), footage, named=named, window=window, method=ConsentMethod.CONSOLE
        )
        footage_told = measure_footage(window, segments, lambda ids: tables)
        told = upload_estimate(footage_told, rfa, decision, CONTACT, identity.device_id)
        uploaded = built.clip_bytes + built.manifest_bytes
        if slack is None:
            part = plan_parts(window, segments, tables)[0]
            keys, start = part.table.key, part.frames.start
            assert not keys[start]
            end = keys.find(1, start)
            gop = range(keys.rfind(1, 0, start), end if end >= 0 else len(keys))
            slack = GREASE + sum(part.table.size[i] for i in gop)
        assert abs(told["total"] - uploaded) <= slack, (window, told, uploaded)
        parts = ("video", "mp4", "credentials", "encryption", "manifest")
        assert told["total"] == sum(told[part] for part in parts)
        # the manifest alone, to the byte before encryption
        assert abs(encrypted_bytes(told["manifest"], rfa.recipient) - built.manifest_bytes) <= (
            GREASE / 2
        )
