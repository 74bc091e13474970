"""C2PA Content Credentials on shares, with the real c2pa-python: a named and two
anonymous shares of several segments, built by the share worker from recorded footage
(the real export, real age, a real tus server), then read as an agency reads them
(`doorbell-agency verify`, c2pa's Reader, stock `age`, every frame decoded)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sync.share as share_module
from cloud.agency import main as agency_main
from cloud.credentials import (
    INVALID,
    NONE,
    TRUSTED,
    UNTRUSTED,
    manifest_store,
    read_credentials,
)
from cloud.loopback import TusServer
from cloud.verify import verify_share
from device.identity import DeviceIdentity, load_device_identity
from foundation.times import Window, format_time, parse_time
from recorder.buffer import connect_index, query_segments, query_tables
from recorder.timeline import measure_footage
from sync import SOFTWARE
from sync.credentials import (
    AUTHORITY_CERT,
    AUTHORITY_KEY,
    SIGNER_CERT,
    SIGNER_KEY,
    CredentialsError,
    clip_definition,
    device_signer,
    new_device_signer,
)
from sync.envelope import make_envelope
from sync.outbox import Outbox
from sync.settings import ShareSettings
from sync.share import _measure_store, _shape, c2pa_store_bytes
from sync.uploader import ShareWorker
from tests.fixtures.footage import decode_stamps
from tests.sync.factories import AgencyKeys
from tests.sync.sharekit import (
    CONTACT,
    ShiftedClock,
    make_decision,
    make_rfa,
    open_share,
    record_footage,
    run_worker_until,
)

pytestmark = pytest.mark.timeout(300)

DEVICE_ID = "porch-cam-01"


@dataclass
class Share:
    rfa_id: str
    window: Window
    manifest_age: Path
    clip_age: Path
    envelope_bytes: bytes
    manifest: dict[str, Any]
    clip: Path  # decrypted with stock age


@dataclass
class World:
    tmp: Path
    root: Path
    agency: AgencyKeys
    identity: DeviceIdentity
    authority_file: Path
    storage: Path
    named: Share
    anonymous: Share
    anonymous_again: Share

    def verify(self, share: Share, *, anchors: str | None = None, **kw: Any) -> Any:
        return verify_share(
            share.manifest_age,
            share.clip_age,
            identity=self.agency.identity,
            agency_keys=[self.agency.signing.public],
            c2pa_anchors=anchors,
            workdir=self.tmp,
            **kw,
        )

    @property
    def authority_pem(self) -> str:
        return self.authority_file.read_text()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("c2pa")
    root = tmp / "buffer"
    # 2-second segments, 10-second fragments: a share spans a dozen and three
    first, last = record_footage(root, 30)
    identity = load_device_identity(tmp / "state", DEVICE_ID)  # the daemon's first start
    agency = AgencyKeys.generate()
    server = TusServer(tmp / "tus-storage")
    server.start()
    outbox = Outbox.open(tmp / "outbox")
    clock = ShiftedClock()
    stop = threading.Event()
    worker = ShareWorker(
        outbox=outbox,
        buffer_root=root,
        identity=identity,
        contact=CONTACT,
        clock=clock,
        settings=ShareSettings(allow_plain_http_loopback=True, retry_base_s=0.05),
        on_state=lambda *a: None,
        stop=stop,
    )
    shares = []
    try:
        # windows that start between keyframes (a re-encoded head) and span 3+ segments
        for named, window in (
            (True, Window(first + 1_234, first + 24_567)),
            (False, Window(first + 2_345, first + 25_678)),
            (False, Window(first + 1_500, first + 23_000)),
        ):
            rfa = make_rfa(agency, upload_url=server.url, window=Window(first, last), now_ms=last)
            decision = make_decision(rfa, named=named, now_ms=last, window=window)
            outbox.enqueue(rfa, decision, now_ms=clock.wall_ms())
            job = outbox.job(rfa.id)
            assert job is not None
            clock.advance(job.start_delay_ms / 1000)  # an anonymous share's moment comes
            stop.clear()
            assert run_worker_until(worker, outbox, rfa.id, stop) == "done"
            ups = {
                u.metadata["kind"]: u for u in server.uploads() if u.metadata["rfa_id"] == rfa.id
            }
            opened = open_share(agency, ups["manifest"].path, ups["clip"].path, tmp / rfa.id)
            shares.append(
                Share(
                    rfa.id,
                    window,
                    ups["manifest"].path,
                    ups["clip"].path,
                    opened.envelope_bytes,
                    opened.manifest,
                    opened.clip,
                )
            )
    finally:
        outbox.close()
        server.kill()
    yield World(
        tmp,
        root,
        agency,
        identity,
        tmp / "state" / "keys" / AUTHORITY_CERT,
        tmp / "tus-storage",
        *shares,
    )


def recorded_in(root: Path, window: Window) -> list[int]:
    """The capture times the buffer's index holds inside `window`: what the clip must hold."""
    conn = connect_index(root, readonly=True)
    try:
        segments = query_segments(conn, window)
        tables = query_tables(conn, [s.id for s in segments])
    finally:
        conn.close()
    return sorted(t for s in segments for t in tables[s.id].times if window.contains(t))


# ---- the agency's verdicts ------------------------------------------------------------


def test_a_named_share_is_trusted_under_the_device_authority(world: World) -> None:
    report = world.verify(world.named, anchors=world.authority_pem)
    assert report.ok, report.render()
    assert report.credentials == TRUSTED
    assert report.credentials_signer == f"Doorbell {DEVICE_ID}"
    assert "c2pa:      Trusted (signed by Doorbell porch-cam-01)" in report.render()
    # without the authority: intact, but nothing vouches for the signer
    plain = world.verify(world.named)
    assert plain.ok and plain.credentials == UNTRUSTED
    # under another device's authority it is not that device's clip: a failure
    other = new_device_signer("other-cam").authority_pem.decode()
    refused = world.verify(world.named, anchors=other)
    assert refused.credentials == UNTRUSTED and refused.failed("c2pa")


def test_an_anonymous_share_is_valid_and_untrusted_even_under_the_device_authority(
    world: World,
) -> None:
    for share in (world.anonymous, world.anonymous_again):
        report = world.verify(share, anchors=world.authority_pem)
        assert report.ok, report.render()
        assert report.credentials == UNTRUSTED
        assert report.credentials_signer == "Doorbell anonymous share"


def test_the_agency_tool_reads_the_credentials_from_the_tus_storage(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "identity.txt").write_text(str(world.agency.identity) + "\n")
    (keys / "identity.txt").chmod(0o600)
    code = agency_main(
        [
            "verify",
            "--identity",
            str(keys / "identity.txt"),
            "--trust-key",
            world.agency.signing.public_b64,
            "--c2pa-authority",
            str(world.authority_file),
            "--storage",
            str(world.storage),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("share VERIFIED") == 3
    assert out.count("c2pa:      Trusted (signed by Doorbell porch-cam-01)") == 1
    assert out.count("c2pa:      Valid, untrusted (signed by Doorbell anonymous share)") == 2
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello")
    code = agency_main(
        ["verify", "--identity", str(keys / "identity.txt"), "--trust-key",
         world.agency.signing.public_b64, "--c2pa-authority", str(bad), "--storage",
         str(world.storage)]
    )  # fmt: skip
    assert code == 2
    assert "--c2pa-authority" in capsys.readouterr().err


def _tampered(world: World, share: Share, tmp: Path, change: Any) -> Any:
    """The share with its clip changed by `change(bytearray)`, re-encrypted to the agency."""
    data = bytearray(share.clip.read_bytes())
    change(data)
    clip_age = tmp / "tampered.mp4.age"
    clip_age.write_bytes(pyrage.encrypt(bytes(data), [world.agency.identity.to_public()]))
    return verify_share(
        share.manifest_age,
        clip_age,
        identity=world.agency.identity,
        agency_keys=[world.agency.signing.public],
        c2pa_anchors=world.authority_pem,
        workdir=tmp,
    )


def _top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        boxes.append((data[at + 4 : at + 8], at, size))
        at += size
    return boxes


def test_a_flipped_byte_or_a_cut_clip_fails(world: World, tmp_path: Path) -> None:
    data = world.named.clip.read_bytes()
    boxes = _top_boxes(data)
    kinds = [kind for kind, _at, _size in boxes]
    assert kinds[:3] == [b"ftyp", b"uuid", b"moov"] and kinds.count(b"moof") >= 3
    assert b"mfra" not in kinds  # no box C2PA leaves unhashed but ftyp
    _kind, mdat_at, mdat_size = next(b for b in boxes if b[0] == b"mdat")
    _kind, uuid_at, uuid_size = boxes[1]

    def flip(at: int) -> Any:
        return lambda d: d.__setitem__(at, d[at] ^ 0x01)

    for where, change in (
        ("a picture", flip(mdat_at + mdat_size // 2)),
        ("the manifest store", flip(uuid_at + uuid_size // 2)),
        ("the last byte", flip(len(data) - 1)),
        ("cut", lambda d: d.__delitem__(slice(len(d) // 2, None))),
        ("cut short by one byte", lambda d: d.__delitem__(slice(len(d) - 1, None))),
    ):
        report = _tampered(world, world.named, tmp_path, change)
        assert not report.ok, where
        assert report.failed("clip_sha256"), where
        assert report.failed("c2pa"), where  # the standard's own check fails too
        assert report.credentials in (INVALID, NONE), where
    # the `ftyp` box is outside C2PA's hash (the standard's choice); our SHA-256 holds it
    report = _tampered(world, world.named, tmp_path, flip(10))
    assert report.failed("clip_sha256")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.floats(min_value=0, max_value=1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_past_the_c2pa_box_header_breaks_the_credentials_or_their_hash(
    world: World, tmp_path: Path, where: float, bit: int
) -> None:
    """Past `ftyp` and the C2PA box's own 45-byte header (whose version, purpose and
    offset fields neither C2PA's hash nor the store covers; our clip.sha256 does), any
    flipped bit is caught by the standard's own check or by c2pa.sha256."""
    data = bytearray(world.anonymous.clip.read_bytes())
    ftyp = int.from_bytes(data[:4], "big")
    start = ftyp + 8 + 16 + 4 + len(b"manifest\0") + 8
    at = start + int(where * (len(data) - start))
    data[at] ^= 1 << bit
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(bytes(data))
    found = read_credentials(changed)
    # the Reader fails it, or (a bit in the padding that the manifest store reserves for
    # its signature, which no signature covers) the store is no longer the one the share's
    # manifest names in c2pa.sha256, which the verifier checks (c2pa_matches)
    assert found.verdict in (INVALID, NONE) or (
        found.store_sha256 != world.anonymous.manifest["c2pa"]["sha256"]
    )


# ---- what the clip holds and says -----------------------------------------------------


@pytest.mark.parametrize("which", ["named", "anonymous"])
def test_the_signed_clip_holds_exactly_the_approved_frames(world: World, which: str) -> None:
    share: Share = getattr(world, which)
    stamps = decode_stamps(share.clip)  # (pts ms, capture time drawn in the picture)
    first = parse_time(share.manifest["first_frame_at"])
    assert [t for _pts, t in stamps] == recorded_in(world.root, share.window)
    assert all(first + pts == t for pts, t in stamps)  # protocol.md §6.1 to the millisecond
    assert len(stamps) == share.manifest["frames"]


@pytest.mark.parametrize("which", ["named", "anonymous"])
def test_the_credentials_state_what_the_manifest_states_and_no_more(
    world: World, which: str
) -> None:
    share: Share = getattr(world, which)
    m = share.manifest
    store = manifest_store(share.clip.open("rb"))
    assert store is not None
    assert m["c2pa"] == {"sha256": hashlib.sha256(store).hexdigest()}
    found = read_credentials(share.clip)
    assert found.capture == {
        "window_approved": m["window_approved"],
        "first_frame_at": m["first_frame_at"],
        "last_frame_at": m["last_frame_at"],
        "frames": m["frames"],
        "clock_synchronized": True,
    }
    assert found.consent == {"owner_consented": True, "method": m["consent"]["method"]}
    actions = found.assertions["c2pa.actions.v2"]["actions"]
    assert [a["action"] for a in actions] == ["c2pa.created", "c2pa.transcoded"]
    assert "digitalCapture" in actions[0]["digitalSourceType"]
    # never the owner's contact or the request's words
    request = json.loads(json.loads(m["request"])["payload"])
    for secret in (
        *(str(v) for v in CONTACT.values()),
        request["description"],
        request["investigator"]["name"],
        request["investigator"]["email"],
        request["case_number"],
    ):
        assert secret.encode() not in store, secret


# c2pa_store_bytes measures with a signer like the share's, not the same one: the random
# serials and ECDSA signatures (DER integers) of its chain and claim differ by a byte or
# two each
STORE_SLACK = 8


@pytest.mark.parametrize("which", ["named", "anonymous", "anonymous_again"])
def test_the_store_size_told_before_signing_is_the_store_signed(world: World, which: str) -> None:
    """upload_estimate's part for the Content Credentials: the definition the share will
    sign (its head's re-encoded frames counted from the index) and a like signer give
    the store the share then carried."""
    share: Share = getattr(world, which)
    m = share.manifest
    conn = connect_index(world.root, readonly=True)
    try:
        segments = query_segments(conn, share.window)
        footage = measure_footage(share.window, segments, lambda ids: query_tables(conn, ids))
    finally:
        conn.close()
    assert footage.first_ms == parse_time(m["first_frame_at"])
    assert footage.head_reencoded > 0  # the windows start between keyframes
    definition = clip_definition(
        title=f"{share.rfa_id}.mp4",
        software=SOFTWARE,
        window_approved=share.window,
        first_frame_ms=footage.first_ms,
        last_frame_ms=parse_time(m["last_frame_at"]),
        frames=footage.frames,
        head_reencoded=footage.head_reencoded,
        synchronized=True,
        consent_method=m["consent"]["method"],
    )
    found = read_credentials(share.clip)
    assert (
        found.assertions["c2pa.actions.v2"]["actions"][1]["description"]
        == (definition["assertions"][0]["data"]["actions"][1]["description"])
    )
    store = manifest_store(share.clip.open("rb"))
    assert store is not None
    device = None if m["anonymous"] else DEVICE_ID
    told = c2pa_store_bytes(definition, device, footage.first_ms)
    assert abs(told - len(store)) <= STORE_SLACK, (told, len(store))


def _certificates_in(data: bytes) -> list[x509.Certificate]:
    """Every DER certificate embedded anywhere in `data` (the COSE x5chain of a claim)."""
    found = []
    at = data.find(b"\x30\x82")
    while at >= 0:
        length = int.from_bytes(data[at + 2 : at + 4], "big") + 4
        with contextlib.suppress(ValueError):  # two bytes that only look like a start
            found.append(x509.load_der_x509_certificate(data[at : at + length]))
        at = data.find(b"\x30\x82", at + 1)
    return found


def _public(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_an_anonymous_share_carries_nothing_that_names_the_device(world: World) -> None:
    keys = world.tmp / "state" / "keys"
    device_certs = [
        *x509.load_pem_x509_certificates((keys / SIGNER_CERT).read_bytes()),
        x509.load_pem_x509_certificate((keys / AUTHORITY_CERT).read_bytes()),
    ]
    ident = world.identity
    needles: list[bytes] = [
        DEVICE_ID.encode(),
        ident.signing.public_b64.encode(),
        ident.signing.kid.encode(),
        ident.signing.public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ),
        ident.recipient.encode(),
    ]
    for cert in device_certs:
        point = cert.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        needles += [cert.public_bytes(serialization.Encoding.DER), _public(cert), point, ski]
        needles.append(cert.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    for share in (world.anonymous, world.anonymous_again):
        everything = share.clip.read_bytes() + share.envelope_bytes
        for needle in needles:
            assert needle not in everything
        certs = _certificates_in(share.clip.read_bytes())
        assert {c.subject.rfc4514_string() for c in certs} == {
            "CN=Doorbell anonymous share,O=Doorbell",
            "CN=Doorbell one-time share authority,O=Doorbell",
        }
        # its only date: the midnight UTC before the first frame, a day the manifest states
        day = parse_time(share.manifest["first_frame_at"]) // 86_400_000 * 86_400_000
        assert {format_time(int(c.not_valid_before_utc.timestamp() * 1000)) for c in certs} == {
            format_time(day)
        }
    # and two anonymous shares have no key or serial in common: nothing links them
    one, two = (
        _certificates_in(s.clip.read_bytes()) for s in (world.anonymous, world.anonymous_again)
    )
    assert not {_public(c) for c in one} & {_public(c) for c in two}
    assert not {c.serial_number for c in one} & {c.serial_number for c in two}
    # while the named share is signed by the device's own certificate
    named = _certificates_in(world.named.clip.read_bytes())
    assert {_public(c) for c in named} == {_public(c) for c in device_certs}


def test_a_manifest_naming_other_credentials_fails(world: World, tmp_path: Path) -> None:
    """A manifest re-signed by the device but naming another manifest store: the clip's
    credentials are not the ones it vouches for."""
    envelope = json.loads(world.named.envelope_bytes)
    payload = json.loads(envelope["payload"])
    payload["c2pa"] = {"sha256": "0" * 64}
    text = make_envelope(json.dumps(payload), world.identity.signing)
    manifest_age = tmp_path / "m.json.age"
    manifest_age.write_bytes(pyrage.encrypt(text, [world.agency.identity.to_public()]))
    report = verify_share(
        manifest_age,
        world.named.clip_age,
        identity=world.agency.identity,
        agency_keys=[world.agency.signing.public],
        c2pa_anchors=world.authority_pem,
        workdir=tmp_path,
    )
    assert not report.ok and report.failed("c2pa_matches")
    assert not report.failed("c2pa") and report.credentials == TRUSTED
    assert [c.name for c in report.failures] == ["c2pa_matches"]


# ---- the device's authority -----------------------------------------------------------


def test_the_device_authority_is_made_once_and_kept_0600(tmp_path: Path) -> None:
    first = device_signer(tmp_path, DEVICE_ID)
    files = [AUTHORITY_CERT, AUTHORITY_KEY, SIGNER_CERT, SIGNER_KEY]
    assert all(stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o600 for f in files)
    assert device_signer(tmp_path, DEVICE_ID) == first  # loaded, not made again
    # a lost signer is issued again by the same authority, which agencies already hold
    (tmp_path / SIGNER_KEY).unlink()
    again = device_signer(tmp_path, DEVICE_ID)
    assert again.authority_pem == first.authority_pem and again.key_pem != first.key_pem
    # a signer that another authority issued is replaced
    (tmp_path / SIGNER_CERT).write_bytes(new_device_signer("x").chain_pem)
    assert device_signer(tmp_path, DEVICE_ID).authority_pem == first.authority_pem
    # an authority whose certificate was never written (a power cut on first start) was
    # never given to anyone: it is made anew
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    unfinished = device_signer(fresh, DEVICE_ID)
    (fresh / AUTHORITY_CERT).unlink()
    remade = device_signer(fresh, DEVICE_ID)
    assert remade.authority_pem != unfinished.authority_pem
    assert (fresh / AUTHORITY_CERT).read_bytes() == remade.authority_pem
    # an unreadable authority is never replaced behind the agencies' backs
    (tmp_path / AUTHORITY_KEY).write_bytes(b"garbage")
    with pytest.raises(CredentialsError, match="cannot be read"):
        device_signer(tmp_path, DEVICE_ID)
    assert "key_pem" not in repr(first) and "PRIVATE" not in repr(first)


# ---- hostile clips on the agency's side -------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_the_box_walker_never_raises_on_garbage(data: bytes) -> None:
    import io

    found = manifest_store(io.BytesIO(data))
    assert found is None or len(found) <= len(data)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    head=st.binary(min_size=0, max_size=64),
    size=st.integers(0, 2**32 - 1),
)
def test_a_hostile_c2pa_box_is_a_verdict_not_a_crash(
    tmp_path: Path, head: bytes, size: int
) -> None:
    """A `uuid` box that claims any size, with any body: read_credentials answers."""
    import struct

    uuid = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
    data = (
        struct.pack(">I4s", 20, b"ftyp") + b"isom\0\0\0\1isom"
        + struct.pack(">I4s", size, b"uuid") + uuid + b"\0\0\0\0manifest\0" + head
    )  # fmt: skip
    clip = tmp_path / "hostile.mp4"
    clip.write_bytes(data)
    assert read_credentials(clip).verdict in (INVALID, NONE)


# ---- the signed clip streamed, and the file it falls back to ------------------------------


def test_c2pa_writes_the_signed_clip_front_to_back_as_the_sink_assumes(
    world: World, tmp_path: Path
) -> None:
    """Signed into a file, the clip is `ftyp`, the C2PA box, then the export's bytes
    unchanged: what lets the share stream it (sync.credentials.Sink)."""
    from recorder.export import export_clip
    from sync.credentials import clip_definition, sign_clip

    plain = tmp_path / "plain.mp4"
    clip = export_clip(world.root, world.named.window, plain)
    definition = clip_definition(
        title="t.mp4",
        software="doorbell test",
        window_approved=world.named.window,
        first_frame_ms=clip.first_frame_ms,
        last_frame_ms=clip.last_frame_ms,
        frames=clip.frames,
        head_reencoded=clip.head_reencoded,
        synchronized=True,
        consent_method="app",
    )
    signed = tmp_path / "signed.mp4"
    store = sign_clip(plain, signed, definition, world.identity.clip_signer)  # type: ignore[arg-type]
    before, after = plain.read_bytes(), signed.read_bytes()
    ftyp = int.from_bytes(before[:4], "big")
    box = int.from_bytes(after[ftyp : ftyp + 4], "big")
    assert after[:ftyp] == before[:ftyp] and after[ftyp + 4 : ftyp + 8] == b"uuid"
    assert after[ftyp + box :] == before[ftyp:]
    assert store in after[ftyp : ftyp + box]


def test_a_sink_refuses_to_write_anywhere_but_at_the_end() -> None:
    import io

    from sync.credentials import Sink

    out = io.BytesIO()
    sink = Sink(out)
    assert sink.write(b"abc") == 3 and sink.write(memoryview(b"de")) == 2
    assert sink.seek(0) == 0 and sink.tell() == 0  # c2pa's last seek: harmless
    assert sink.seek(0, io.SEEK_END) == 5
    sink.seek(1)
    with pytest.raises(OSError):
        sink.write(b"x")
    assert sink.out_of_order and out.getvalue() == b"abcde"
    with pytest.raises(OSError):
        Sink(io.BytesIO()).read(1)


def test_a_c2pa_that_writes_out_of_order_falls_back_to_a_file(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a later c2pa write the signed clip out of order, the share is signed into
    a file and encrypted from it: still whole, still verified, nothing left behind."""
    import sync.share
    from sync.credentials import Sink
    from sync.share import build_share

    class Unordered(Sink):  # c2pa as it would be: a write before the end, late in the clip
        writes = 0

        def write(self, data: Any) -> int:
            Unordered.writes += 1
            if Unordered.writes == 40:
                self.seek(-1, 1)
            return super().write(data)

    monkeypatch.setattr(sync.share, "Sink", Unordered)
    rfa = make_rfa(
        world.agency, upload_url="https://uploads.example.gov/files/", window=world.named.window,
        now_ms=world.named.window.end_ms,
    )  # fmt: skip
    decision = make_decision(rfa, named=True, now_ms=rfa.window.end_ms, window=rfa.window)
    out = tmp_path / "out"
    built = build_share(
        rfa=rfa,
        decision=decision,
        buffer_root=world.root,
        clip_path=out / "c.mp4.age",
        manifest_path=out / "m.json.age",
        device_key=world.identity.signing,
        device_id=DEVICE_ID,
        clip_signer=world.identity.clip_signer,
        contact=CONTACT,
        now_ms=rfa.window.end_ms,
    )
    assert Unordered.writes >= 40  # the streamed attempt was made and refused
    assert sorted(p.name for p in out.iterdir()) == ["c.mp4.age", "m.json.age"]
    report = verify_share(
        built.manifest_path,
        built.clip_path,
        identity=world.agency.identity,
        agency_keys=[world.agency.signing.public],
        c2pa_anchors=world.authority_pem,
        workdir=tmp_path,
    )
    assert report.ok and report.credentials == TRUSTED, report.render()


def _a_definition(title: str, window: Window, frames: int, head: int) -> dict[str, Any]:
    return clip_definition(
        title=title,
        software=SOFTWARE,
        window_approved=window,
        first_frame_ms=window.start_ms + 40,
        last_frame_ms=window.end_ms - 40,
        frames=frames,
        head_reencoded=head,
        synchronized=True,
        consent_method="console",
    )


TEN_MINUTES = Window(1765000000000, 1765000600000)
ASKED_IN_A_FRESH_PYTHON = """
import json
from foundation.times import Window
from sync import SOFTWARE
from sync.credentials import clip_definition
import sync.share as share_module
from sync.share import _measure_store, _shape, c2pa_store_bytes
d = clip_definition(title="a.mp4", software=SOFTWARE, window_approved=Window({w}),
    first_frame_ms={first}, last_frame_ms={last}, frames=9000, head_reencoded=7,
    synchronized=True, consent_method="console")
size = c2pa_store_bytes(d, None, {first})
print(json.dumps({{"size": size, "c2pa": "c2pa" in open("/proc/self/maps").read()}}))
"""


def test_the_store_size_is_measured_without_loading_c2pa_here() -> None:
    """c2pa's library (15 MiB resident, never unloaded) stays out of the process that
    only tells an owner the size: a fresh Python asks, then reads its own mappings."""
    w = TEN_MINUTES
    script = ASKED_IN_A_FRESH_PYTHON.format(
        w=f"{w.start_ms}, {w.end_ms}", first=w.start_ms + 40, last=w.end_ms - 40
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    told = json.loads(done.stdout)
    assert told["c2pa"] is False
    definition = _a_definition("a.mp4", w, 9000, 7)
    here = _measure_store(json.dumps(definition, sort_keys=True), None, w.start_ms + 40)
    assert abs(told["size"] - here) <= STORE_SLACK, (told, here)


def _rotated(text: str) -> str:
    """Another text of the same shape: ASCII letters and digits moved one on."""
    out = []
    for c in text:
        if c.isascii() and c.isalpha():
            base = ord("a") if c.islower() else ord("A")
            c = chr(base + (ord(c) - base + 1) % 26)
        elif c.isascii() and c.isdigit():
            c = str((int(c) + 1) % 10)
        out.append(c)
    return "".join(out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.text(min_size=1, max_size=40),
    start=st.integers(0, 30 * 86_400_000).map(lambda ago: TEN_MINUTES.start_ms - ago),
    frames=st.integers(1, 700_000),
    head=st.integers(0, 59),
    named=st.booleans(),
)
def test_one_measurement_serves_every_definition_of_its_shape(
    title: str, start: int, frames: int, head: int, named: bool
) -> None:
    """What c2pa_store_bytes's cache rests on: the store's size follows the definition's
    shape (the lengths of its texts, the digits of its numbers), not its values. Each
    definition is signed for real beside one of the same shape made of other values
    (n ^ 1 keeps a number's digits and bits from 2 on), its clip days later (a clip is
    signed when it is approved: its footage is at most days old)."""
    other_start = start + 3 * 86_400_000  # the same fraction of a second: the same length
    definition = _a_definition(title, Window(start, start + 600_000), frames, head)
    other = _a_definition(
        _rotated(title),
        Window(other_start, other_start + 600_000),
        frames ^ 1 if frames >= 2 else frames,
        head ^ 1 if head >= 2 else head,
    )
    assert _shape(definition) == _shape(other) and definition != other
    device = DEVICE_ID if named else None
    sizes = [
        _measure_store(json.dumps(definition, sort_keys=True), device, start + 40),
        _measure_store(json.dumps(other, sort_keys=True), device, other_start + 40),
    ]
    assert abs(sizes[0] - sizes[1]) <= STORE_SLACK, sizes


def test_a_child_that_fails_leaves_the_figure_right(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that gives no answer in time (a Pi short of memory, a filter on what the
    service may start): the size is measured in this process instead, and a line says so."""
    monkeypatch.setattr(share_module, "STORE_CHILD_SECONDS", 0.001)
    monkeypatch.setattr(share_module, "_STORE_SIZES", {})
    definition = _a_definition("b.mp4", TEN_MINUTES, 123, 0)
    told = c2pa_store_bytes(definition, None, TEN_MINUTES.start_ms + 40)
    here = _measure_store(json.dumps(definition, sort_keys=True), None, TEN_MINUTES.start_ms + 40)
    assert abs(told - here) <= STORE_SLACK
    assert "took too long" in caplog.text
