"""Verifying a received share (protocol.md §6), as an agency does with the two objects it got.

`verify_share` decrypts the manifest and the clip with the agency's age identity (the clip
streamed to a temporary file, never whole in memory), then checks, each under a stable
name that the report and the exit status carry:

- the manifest envelope is signed by the key in its own `device_key` (and its kid is that
  key's id);
- named or anonymous is consistent (anonymous: no device_id, contact, decision or
  owner_kid);
- the embedded request is the agency's own, signed by the agency, and matches the
  manifest's rfa_id, case_number, agency_id and window_requested;
- the embedded owner decision, if any: an approval of this request for this device, its
  window (or the request's) equal to window_approved, its kid equal to consent.owner_kid,
  and, when the owner's public key is known, its signature;
- window_approved lies inside window_requested;
- the clip's SHA-256, size, codec, picture size and frame rate;
- the clip's C2PA Content Credentials (cloud/credentials.py), when the manifest records
  them: c2pa's Reader finds them intact and matching the clip ("Trusted" when the
  agency gave the device's C2PA authority, else "Valid, untrusted", which an anonymous
  share always is), their store is the one the manifest's `c2pa.sha256` names, and what
  they state (frames, times, window, consent method) is what the manifest states;
- every frame decoded with PyAV: its capture time (the synthetic camera's stamp,
  protocol.md §8, unless `stamps=False`) inside window_approved, `first_frame_at + pts`
  equal to it to the millisecond, the count, the first and last frame times.

The verifier cannot tell whether the clip holds *every* frame the device recorded in the
window (only the device knows what it recorded); it proves that none is from outside.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pyrage import x25519

from cloud.credentials import NONE, TRUSTED, UNTRUSTED, Credentials, read_credentials
from foundation.errors import DoorbellError, TimeFormatError
from foundation.times import Window, format_time, parse_time
from foundation.wire import read_capture_ms
from sync.envelope import canonical_envelope, parse_envelope, verify_envelope
from sync.errors import EnvelopeError
from sync.keys import key_id, public_key_from_b64, raw_public

# The manifest carries the request (< 16 KiB) and a decision; far below this.
MAX_MANIFEST_BYTES = 1024 * 1024
_HASH_CHUNK = 1024 * 1024

# The manifest's fields that the report states as facts, in the report's order.
_REPORTED_FIELDS = (
    "rfa_id",
    "case_number",
    "agency_id",
    "anonymous",
    "device_id",
    "synchronized",
    "window_approved",
)


class _Abort(Exception):
    """A failed check that leaves nothing sensible to check after it."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Report:
    """What `verify_share` found. `ok` only when every check passed."""

    checks: tuple[Check, ...]
    rfa_id: str | None = None
    case_number: str | None = None
    agency_id: str | None = None
    anonymous: bool | None = None
    device_id: str | None = None
    synchronized: bool | None = None
    window_approved: Window | None = None
    first_frame_ms: int | None = None
    last_frame_ms: int | None = None
    frames: int | None = None
    decision_signature: str = "none"  # "verified", "unchecked (owner key unknown)", "none"
    credentials: str | None = None  # the C2PA verdict: Trusted, Valid, untrusted, Invalid, none
    credentials_signer: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def failed(self, name: str) -> bool:
        return any(check.name == name and not check.ok for check in self.checks)

    def render(self) -> str:
        lines = [f"share {'VERIFIED' if self.ok else 'FAILED VERIFICATION'}"]
        if self.rfa_id:
            lines.append(f"  request:   {self.rfa_id} (case {self.case_number}, {self.agency_id})")
        if self.anonymous is not None:
            kind = "anonymous" if self.anonymous else f"named, device {self.device_id}"
            lines.append(f"  share:     {kind}")
        if self.window_approved:
            approved = self.window_approved.to_json()
            lines.append(f"  approved:  {approved['start']} .. {approved['end']}")
        if self.frames is not None and self.first_frame_ms is not None:
            last = format_time(self.last_frame_ms) if self.last_frame_ms is not None else "?"
            lines.append(
                f"  frames:    {self.frames} from {format_time(self.first_frame_ms)} to {last}"
            )
        if self.synchronized is not None:
            lines.append(
                "  clock:     "
                + ("synchronized" if self.synchronized else "NOT synchronized (times uncertain)")
            )
        lines.append(f"  decision:  signature {self.decision_signature}")
        if self.credentials is not None:
            by = f" (signed by {self.credentials_signer})" if self.credentials_signer else ""
            lines.append(f"  c2pa:      {self.credentials}{by}")
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  [{mark}] {check.name}" + (f": {check.detail}" if check.detail else ""))
        return "\n".join(lines)


@dataclass
class _Run:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def passed(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(name, True, detail))

    def fail(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, False, detail))

    def abort(self, name: str, detail: str) -> _Abort:
        self.fail(name, detail)
        return _Abort()

    def expect(self, name: str, ok: bool, detail: str, *, passed: str = "") -> bool:
        if ok:
            self.passed(name, passed)
        else:
            self.fail(name, detail)
        return ok


# ---------------------------------------------------------------------------- typed getters


class _Shape(Exception):
    pass


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise _Shape(f"{key} must be a non-empty string")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Shape(f"{key} must be a non-negative integer")
    return value


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise _Shape(f"{key} must be an object")
    return value


def _time(doc: dict[str, Any], key: str) -> int:
    try:
        return parse_time(doc.get(key))
    except DoorbellError as exc:
        raise _Shape(f"{key}: {exc}") from exc


def _window(doc: dict[str, Any], key: str) -> Window:
    inner = _obj(doc, key)
    start, end = _time(inner, "start"), _time(inner, "end")
    if start > end:
        raise _Shape(f"{key} starts after it ends")
    return Window(start, end)


# ---------------------------------------------------------------------------- the checks


def _decrypt_manifest(path: Path, identity: x25519.Identity, run: _Run) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise run.abort("manifest_decrypt", f"{size} bytes is too large for a manifest")
        data = bytes(pyrage.decrypt(path.read_bytes(), [identity]))
    except OSError as exc:
        raise run.abort("manifest_decrypt", f"cannot read {path.name}: {exc.strerror}") from exc
    except _Abort:
        raise
    except Exception as exc:  # pyrage.DecryptError and malformed-header errors
        raise run.abort("manifest_decrypt", "cannot decrypt with this identity") from exc
    run.passed("manifest_decrypt")
    return data


def _check_manifest_signature(data: bytes, run: _Run) -> dict[str, Any]:
    try:
        envelope = parse_envelope(data)
        outer = json.loads(envelope.payload_text)
        if not isinstance(outer, dict):
            raise _Shape("payload is not an object")
        device_key_text = _str(outer, "device_key")
        device_key = public_key_from_b64(device_key_text)
    except (EnvelopeError, _Shape, ValueError) as exc:
        raise run.abort("manifest_signature", f"malformed manifest: {exc}") from exc
    kid = key_id(raw_public(device_key))
    if envelope.kid != kid:
        raise run.abort("manifest_signature", "envelope kid is not the id of its device_key")
    try:
        verified = verify_envelope(envelope, {kid: device_key})
    except EnvelopeError as exc:
        raise run.abort("manifest_signature", f"not signed by its device_key ({exc})") from exc
    run.passed("manifest_signature", f"kid {kid}")
    return verified.payload


@dataclass(frozen=True)
class _Manifest:
    rfa_id: str
    case_number: str
    agency_id: str
    anonymous: bool
    device_id: str | None
    request: str
    decision: str | None
    window_requested: Window
    window_approved: Window
    first_frame_ms: int
    last_frame_ms: int
    frames: int
    sha256: str
    bytes: int
    codec: str
    width: int
    height: int
    fps: float
    synchronized: bool
    consent: dict[str, Any]
    contact: Any
    has_device_id: bool
    created_at: Any = None
    c2pa_sha256: str | None = None  # None: a device before Content Credentials


def _parse_manifest(doc: dict[str, Any], run: _Run) -> _Manifest:
    try:
        if doc.get("type") != "share-manifest":
            raise _Shape("type must be share-manifest")
        anonymous = doc.get("anonymous")
        if not isinstance(anonymous, bool):
            raise _Shape("anonymous must be true or false")
        decision = doc.get("decision")
        if decision is not None and not isinstance(decision, str):
            raise _Shape("decision must be a string or null")
        device_id = doc.get("device_id")
        if device_id is not None and not isinstance(device_id, str):
            raise _Shape("device_id must be a string")
        clip = _obj(doc, "clip")
        fps = clip.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps):
            raise _Shape("clip.fps must be a number")
        c2pa_sha256 = None
        if "c2pa" in doc:
            c2pa_sha256 = _str(_obj(doc, "c2pa"), "sha256").lower()
        clock = _obj(doc, "clock")
        if not isinstance(clock.get("synchronized"), bool):
            raise _Shape("clock.synchronized must be true or false")
        manifest = _Manifest(
            rfa_id=_str(doc, "rfa_id"),
            case_number=_str(doc, "case_number"),
            agency_id=_str(doc, "agency_id"),
            anonymous=anonymous,
            device_id=device_id,
            request=_str(doc, "request"),
            decision=decision,
            window_requested=_window(doc, "window_requested"),
            window_approved=_window(doc, "window_approved"),
            first_frame_ms=_time(doc, "first_frame_at"),
            last_frame_ms=_time(doc, "last_frame_at"),
            frames=_int(doc, "frames"),
            sha256=_str(clip, "sha256").lower(),
            bytes=_int(clip, "bytes"),
            codec=_str(clip, "codec"),
            width=_int(clip, "width"),
            height=_int(clip, "height"),
            fps=float(fps),
            synchronized=clock["synchronized"],
            consent=_obj(doc, "consent"),
            contact=doc.get("contact"),
            has_device_id="device_id" in doc,
            created_at=doc.get("created_at"),
            c2pa_sha256=c2pa_sha256,
        )
    except _Shape as exc:
        raise run.abort("manifest_shape", str(exc)) from exc
    run.passed("manifest_shape")
    run.facts.update({name: getattr(manifest, name) for name in _REPORTED_FIELDS})
    return manifest


def _unmet(*checks: tuple[bool, str]) -> list[str]:
    """The message of each (holds, message) check that does not hold, in order."""
    return [message for holds, message in checks if not holds]


def _check_share_kind(m: _Manifest, run: _Run) -> None:
    owner_kid = m.consent.get("owner_kid")
    if m.anonymous:
        problems = [
            label
            for label, bad in (
                ("device_id present", m.has_device_id),
                ("contact not null", m.contact is not None),
                ("decision not null", m.decision is not None),
                ("consent.owner_kid not null", owner_kid is not None),
            )
            if bad
        ]
        for label in ("created_at", "consent.at"):
            doc = m.consent if label == "consent.at" else {"at": m.created_at}
            try:
                if parse_time(doc.get("at")) % 60_000:
                    problems.append(f"{label} is not a whole minute")
            except TimeFormatError:
                problems.append(f"{label} is not an RFC 3339 time")
        run.expect(
            "share_kind",
            not problems,
            "anonymous share but " + ", ".join(problems),
            passed="anonymous",
        )
    else:
        problems = []
        if not m.device_id:
            problems.append("no device_id")
        if not isinstance(m.contact, dict):
            problems.append("no contact")
        run.expect(
            "share_kind",
            not problems,
            "named share but " + ", ".join(problems),
            passed=f"named, device {m.device_id}",
        )


def _check_request(
    m: _Manifest, agency_keys: Sequence[Ed25519PublicKey], run: _Run
) -> Window | None:
    trusted = {key_id(raw_public(key)): key for key in agency_keys}
    try:
        verified = verify_envelope(parse_envelope(m.request), trusted)
    except EnvelopeError as exc:
        run.fail("request_signature", f"the embedded request is not signed by the agency ({exc})")
        return None
    run.passed("request_signature", f"kid {verified.kid}")
    # §2/§6.1: the device re-emits the request in its canonical form, whatever spelling
    # it received; any other text could be a mark that links the share to its device.
    run.expect(
        "request_canonical",
        m.request == canonical_envelope(parse_envelope(m.request)),
        "the embedded request is not in its canonical (RFC 8785) form",
    )
    rfa = verified.payload
    try:
        agency = _obj(rfa, "agency")
        mismatches = _unmet(
            (rfa.get("type") == "rfa", "type is not rfa"),
            (rfa.get("id") == m.rfa_id, "id differs from rfa_id"),
            (rfa.get("case_number") == m.case_number, "case_number differs"),
            (agency.get("id") == m.agency_id, "agency id differs"),
        )
        window = _window(rfa, "window")
        if window != m.window_requested:
            mismatches.append("window differs from window_requested")
    except _Shape as exc:
        run.fail("request_matches", f"malformed request: {exc}")
        return None
    run.expect("request_matches", not mismatches, "; ".join(mismatches))
    return window


def _check_decision(
    m: _Manifest,
    request_window: Window | None,
    owner_keys: Sequence[Ed25519PublicKey],
    run: _Run,
) -> str:
    """Returns how the decision's signature fared: verified / unchecked / none."""
    if m.decision is None:
        return "none"
    try:
        envelope = parse_envelope(m.decision)
    except EnvelopeError as exc:
        run.fail("decision", f"not a signed envelope ({exc})")
        return "none"
    signature = "unchecked (owner key unknown)"
    if owner_keys:
        trusted = {key_id(raw_public(key)): key for key in owner_keys}
        try:
            verify_envelope(envelope, trusted)
        except EnvelopeError as exc:
            run.fail("decision", f"not signed by a given owner key ({exc})")
            return "FAILED"
        signature = "verified"
    problems: list[str] = []
    try:
        doc = json.loads(envelope.payload_text)
        if not isinstance(doc, dict):
            raise _Shape("payload is not an object")
        problems += _unmet(
            (doc.get("type") == "decision", "type is not decision"),
            (doc.get("decision") == "approve", "it is not an approval"),
            (doc.get("rfa_id") == m.rfa_id, "rfa_id differs"),
            (doc.get("device_id") == m.device_id, "device_id differs from the manifest's"),
            (doc.get("share_contact") is True, "share_contact is not true in a named share"),
        )
        window = _window(doc, "window") if "window" in doc else request_window
        if window is not None and window != m.window_approved:
            problems.append("its window differs from window_approved")
    except (ValueError, _Shape) as exc:
        problems.append(f"malformed: {exc}")
    if m.consent.get("owner_kid") != envelope.kid:
        problems.append("its kid is not consent.owner_kid")
    run.expect("decision", not problems, "; ".join(problems), passed=f"owner kid {envelope.kid}")
    return signature


def _decrypt_clip(path: Path, identity: x25519.Identity, out: Path, run: _Run) -> None:
    try:
        with path.open("rb") as reader, out.open("wb") as writer:
            pyrage.decrypt_io(reader, writer, [identity])
    except OSError as exc:
        raise run.abort("clip_decrypt", f"cannot read {path.name}: {exc.strerror}") from exc
    except Exception as exc:
        raise run.abort("clip_decrypt", "cannot decrypt with this identity") from exc
    run.passed("clip_decrypt")


def _check_clip_bytes(m: _Manifest, clip: Path, run: _Run) -> None:
    digest = hashlib.sha256()
    size = 0
    with clip.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    run.expect("clip_sha256", digest.hexdigest() == m.sha256, "the clip's SHA-256 differs")
    run.expect("clip_bytes", size == m.bytes, f"the clip is {size} bytes, manifest says {m.bytes}")


def _check_credentials(m: _Manifest, clip: Path, anchors: str | None, run: _Run) -> None:
    """The clip's Content Credentials, when the (signed) manifest says it carries them."""
    if m.c2pa_sha256 is None:
        run.facts.update(credentials=NONE)
        run.passed("c2pa", "none: the manifest records no Content Credentials (an older device)")
        return
    found = read_credentials(clip, anchors=anchors)
    run.facts.update(credentials=found.verdict, credentials_signer=found.signer)
    if found.verdict == TRUSTED and m.anonymous:
        # a one-time authority is nobody's: chaining to a given one links the share
        run.fail("c2pa", "an anonymous share's credentials chain to the given authority")
    elif found.verdict == UNTRUSTED and anchors and not m.anonymous:
        run.fail("c2pa", "not signed under the given C2PA authority: " + "; ".join(found.failures))
    elif found.verdict not in (TRUSTED, UNTRUSTED):
        detail = "; ".join(found.failures) or "the clip carries no Content Credentials"
        run.fail("c2pa", f"{found.verdict}: {detail}")
        return
    else:
        run.passed("c2pa", found.verdict + ("" if anchors else " (no --c2pa-authority given)"))
    run.expect("c2pa_matches", *_credentials_match(m, found))


def _credentials_match(m: _Manifest, found: Credentials) -> tuple[bool, str]:
    """Whether the credentials are the ones the manifest names and state what it does."""
    problems = []
    if found.store_sha256 != m.c2pa_sha256:
        problems.append("the manifest store's SHA-256 differs from c2pa.sha256")
    capture, consent = found.capture, found.consent
    expected = {
        "frames": m.frames,
        "first_frame_at": format_time(m.first_frame_ms),
        "last_frame_at": format_time(m.last_frame_ms),
        "window_approved": m.window_approved.to_json(),
        "clock_synchronized": m.synchronized,
    }
    problems += [f"{key} differs" for key, value in expected.items() if capture.get(key) != value]
    if consent.get("method") != m.consent.get("method"):
        problems.append("the consent method differs")
    return not problems, "; ".join(problems)


def _check_frames(m: _Manifest, clip: Path, stamps: bool, run: _Run) -> None:
    import av  # PyAV is heavy to load: only code that codes frames pays for it

    times: list[int] = []
    timing_problem: str | None = None
    last_pts: Fraction | None = None
    try:
        with av.open(str(clip)) as container:
            if not container.streams.video:
                raise run.abort("clip_format", "the clip has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            problems = []
            if ctx.name != m.codec:
                problems.append(f"codec {ctx.name}, manifest says {m.codec}")
            if m.codec != "h264":
                problems.append("the protocol's clips are h264")
            if (ctx.width, ctx.height) != (m.width, m.height):
                problems.append(f"{ctx.width}x{ctx.height}, manifest says {m.width}x{m.height}")
            run.expect(
                "clip_format",
                not problems,
                "; ".join(problems),
                passed=f"{m.codec} {m.width}x{m.height}",
            )
            for frame in container.decode(stream):
                if frame.pts is None:
                    timing_problem = timing_problem or f"frame {len(times)} has no pts"
                    continue
                base = frame.time_base or stream.time_base
                if base is None:
                    raise run.abort("clip_decode", "the clip has no time base")
                pts_ms = Fraction(frame.pts) * Fraction(base) * 1000
                if last_pts is not None and pts_ms <= last_pts and timing_problem is None:
                    timing_problem = f"frame {len(times)}: pts does not increase"
                last_pts = pts_ms
                from_pts = m.first_frame_ms + round(pts_ms)
                if stamps:
                    captured = read_capture_ms(frame.to_ndarray(format="gray"))
                    if captured != from_pts and timing_problem is None:
                        timing_problem = (
                            f"frame {len(times)}: first_frame_at + pts = {format_time(from_pts)}"
                            f" but it was captured at {format_time(captured)}"
                        )
                else:
                    captured = from_pts
                times.append(captured)
    except _Abort:
        raise
    except Exception as exc:  # av.error.* on a damaged file
        raise run.abort("clip_decode", f"cannot decode the clip: {exc}") from exc
    run.passed("clip_decode", f"{len(times)} frames")

    run.facts.update(frames=len(times))
    if times:
        run.facts.update(first_frame_ms=times[0], last_frame_ms=times[-1])
    outside = [t for t in times if not m.window_approved.contains(t)]
    run.expect(
        "frames_in_window",
        not outside and bool(times),
        f"{len(outside)} frame(s) outside the approved window, e.g. {format_time(outside[0])}"
        if outside
        else "the clip holds no frame",
    )
    run.expect(
        "frame_count", len(times) == m.frames, f"{len(times)} frames, manifest says {m.frames}"
    )
    if stamps:
        run.expect("frame_timing", timing_problem is None, timing_problem or "")
    elif timing_problem is not None:
        run.fail("frame_timing", timing_problem)
    ends_ok = bool(times) and times[0] == m.first_frame_ms and times[-1] == m.last_frame_ms
    run.expect(
        "first_last_frame",
        ends_ok,
        "first/last frame times differ from first_frame_at/last_frame_at",
    )
    if len(times) >= 2:
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
        measured = 1000 / statistics.median(gaps) if gaps else 0.0
        run.expect(
            "clip_fps",
            m.fps > 0 and abs(measured - m.fps) <= 0.1 * m.fps,
            f"frames arrive at {measured:.2f} fps, manifest says {m.fps:g}",
            passed=f"{measured:.2f} fps",
        )


def verify_share(
    manifest_path: Path,
    clip_path: Path,
    *,
    identity: x25519.Identity,
    agency_keys: Sequence[Ed25519PublicKey],
    owner_keys: Sequence[Ed25519PublicKey] = (),
    stamps: bool = True,
    workdir: Path | None = None,
    c2pa_anchors: str | None = None,
) -> Report:
    """Decrypt and check a share; never raises for a bad share, the report says what failed.

    `agency_keys` are the agency's own signing public keys (the embedded request must be
    signed by one); `owner_keys`, if known, let the owner's decision signature be checked.
    `stamps=False` for real cameras, whose frames carry no capture-time stamp.
    `c2pa_anchors`: PEM certificates of C2PA authorities to trust (a named share's
    device authority), under which its Content Credentials read "Trusted".
    """
    run = _Run()
    decision_signature = "none"
    try:
        data = _decrypt_manifest(manifest_path, identity, run)
        manifest = _parse_manifest(_check_manifest_signature(data, run), run)
        _check_share_kind(manifest, run)
        request_window = _check_request(manifest, agency_keys, run)
        decision_signature = _check_decision(manifest, request_window, owner_keys, run)
        requested, approved = manifest.window_requested, manifest.window_approved
        run.expect(
            "window_approved",
            requested.start_ms <= approved.start_ms and approved.end_ms <= requested.end_ms,
            "window_approved is not inside window_requested",
        )
        with tempfile.TemporaryDirectory(prefix="doorbell-verify-", dir=workdir) as tmp:
            clip = Path(tmp) / "clip.mp4"
            _decrypt_clip(clip_path, identity, clip, run)
            _check_clip_bytes(manifest, clip, run)
            _check_credentials(manifest, clip, c2pa_anchors, run)
            _check_frames(manifest, clip, stamps, run)
    except _Abort:
        pass
    return Report(
        checks=tuple(run.checks),
        decision_signature=decision_signature,
        **run.facts,
    )
