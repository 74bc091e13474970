"""Helpers for the share-side tests: real signed requests and decisions as the checked
records (`Rfa`, `Decision`) the outbox receives, and an agency's view of a share."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.identity import DeviceIdentity
from foundation.times import Window, format_time
from sync.credentials import new_device_signer
from sync.envelope import canonical_envelope, parse_envelope
from sync.keys import SigningKey, b64url_decode
from sync.models import Agency, Area, ConsentMethod, Decision, Investigator, Rfa
from tests.sync.factories import AgencyKeys, decision_envelope, rfa_envelope

CONTACT = {
    "name": "Jane Doe",
    "email": "jane@example.com",
    "address": "1 Elm St",
    "lat": 37.77512,
    "lon": -122.41977,
}


def make_identity(device_id: str = "porch-cam-01") -> DeviceIdentity:
    from pyrage import x25519

    signer = new_device_signer(device_id)
    return DeviceIdentity(device_id, SigningKey.generate(), x25519.Identity.generate(), signer)


def make_rfa(
    agency: AgencyKeys,
    *,
    upload_url: str,
    window: Window,
    now_ms: int,
    recipient: str | None = None,
    rfa_id: str | None = None,
) -> Rfa:
    rfa_id = rfa_id or str(uuid.uuid4())
    envelope = rfa_envelope(
        agency,
        now_ms=now_ms,
        rfa_id=rfa_id,
        changes={
            "upload_url": upload_url,
            "window": Window(window.start_ms, window.end_ms).to_json(),
            "recipient": recipient or agency.recipient,
        },
    )
    p = json.loads(json.loads(envelope)["payload"])
    return Rfa(
        id=rfa_id,
        agency=Agency(p["agency"]["id"], p["agency"]["name"]),
        case_number=p["case_number"],
        investigator=Investigator(p["investigator"]["name"], p["investigator"]["email"], None),
        description=p["description"],
        area=Area(p["area"]["lat"], p["area"]["lon"], p["area"]["radius_m"]),
        window=window,
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + 7 * 86_400_000,
        recipient=recipient or agency.recipient,
        upload_url=upload_url,
        envelope_text=canonical_envelope(parse_envelope(envelope)),
        kid=agency.kid,
    )


def make_decision(
    rfa: Rfa,
    *,
    named: bool,
    now_ms: int,
    window: Window | None = None,
    method: ConsentMethod = ConsentMethod.APP,
    owner: SigningKey | None = None,
    device_id: str = "porch-cam-01",
) -> Decision:
    window = window or rfa.window
    envelope_text = None
    owner_kid = None
    if method is ConsentMethod.APP:
        owner = owner or SigningKey.generate()
        owner_kid = owner.kid
        envelope_text = decision_envelope(
            owner,
            rfa_id=rfa.id,
            device_id=device_id,
            now_ms=now_ms,
            changes={"window": window.to_json(), "share_contact": named},
        ).decode("utf-8")
    return Decision(
        rfa_id=rfa.id,
        approve=True,
        window=window,
        share_contact=named,
        method=method,
        at_ms=now_ms,
        owner_kid=owner_kid,
        envelope_text=envelope_text,
        nonce=uuid.uuid4().hex if method is ConsentMethod.APP else None,
    )


@dataclass
class OpenedShare:
    envelope: dict[str, Any]
    envelope_bytes: bytes
    manifest: dict[str, Any]
    clip: Path


def age_decrypt(agency: AgencyKeys, encrypted: Path, out: Path, workdir: Path) -> None:
    """Decrypt with the stock `age` command-line tool, as an agency would."""
    identity = workdir / "agency-identity.txt"
    if not identity.exists():
        identity.write_text(str(agency.identity) + "\n")
        identity.chmod(0o600)
    subprocess.run(
        ["age", "-d", "-i", str(identity), "-o", str(out), str(encrypted)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def openssl_verify(envelope: dict[str, Any], workdir: Path) -> bool:
    """Verify a signed envelope with `openssl pkeyutl` and the key the manifest carries."""
    from cryptography.hazmat.primitives import serialization

    from sync.keys import public_key_from_b64

    payload = json.loads(envelope["payload"])
    key = public_key_from_b64(payload["device_key"])
    pem = workdir / "device-pub.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (workdir / "payload.bin").write_bytes(envelope["payload"].encode("utf-8"))
    (workdir / "sig.bin").write_bytes(b64url_decode(envelope["sig"]))
    result = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pem),
            "-rawin",
            "-in",
            str(workdir / "payload.bin"),
            "-sigfile",
            str(workdir / "sig.bin"),
        ],
        capture_output=True,
        timeout=60,
    )
    return result.returncode == 0


def open_share(
    agency: AgencyKeys, manifest_age: Path, clip_age: Path, workdir: Path
) -> OpenedShare:
    workdir.mkdir(parents=True, exist_ok=True)
    manifest_plain = workdir / "manifest.json"
    clip_plain = workdir / "clip.mp4"
    age_decrypt(agency, manifest_age, manifest_plain, workdir)
    age_decrypt(agency, clip_age, clip_plain, workdir)
    envelope_bytes = manifest_plain.read_bytes()
    envelope = json.loads(envelope_bytes)
    return OpenedShare(
        envelope=envelope,
        envelope_bytes=envelope_bytes,
        manifest=json.loads(envelope["payload"]),
        clip=clip_plain,
    )


def decode_capture_times(clip: Path) -> list[int]:
    """Every frame's stamped capture time, decoding the clip frame by frame."""
    import av

    from foundation.wire import read_capture_ms

    times = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            times.append(read_capture_ms(frame.to_ndarray(format="gray")))
    return times


__all__ = ["CONTACT", "format_time"]


# --- footage and a worker for the tests ------------------------------------------------


def record_footage(
    root: Path, seconds: float, *, width: int = 320, height: int = 240, synchronized: bool = True
) -> tuple[int, int]:
    """Fill a buffer with `seconds` of stamped synthetic footage; returns (first, last) ms."""
    import threading

    from foundation.clock import FakeClock, SystemClock
    from recorder.buffer import RollingBuffer
    from recorder.recorder import Recorder
    from recorder.settings import StorageSettings
    from recorder.synthetic import SyntheticCamera

    clock: Any = (
        SystemClock(assume_synchronized=True)
        if synchronized
        else FakeClock(SystemClock().wall_ms(), synchronized=False)
    )
    buffer = RollingBuffer.open(root)
    try:
        camera = SyntheticCamera(
            width=width, height=height, fps=15, clock=clock, fast_seconds=seconds
        )
        Recorder(
            camera,
            buffer,
            storage=StorageSettings(dir=root, segment_seconds=2),
            clock=clock,
            free_space=lambda _p: 1 << 40,
            stop=threading.Event(),
        ).run()
        span = buffer.span()
    finally:
        buffer.close()
    assert span is not None
    return span


class RequestLog:
    """Records each request a session sends (method, URL, Upload-Offset) via a hook."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str | None]] = []

    def session_factory(self, loopback: bool) -> Any:
        from sync.tus import checked_session

        session = checked_session(allow_loopback=loopback)

        def hook(response: Any, *args: Any, **kwargs: Any) -> None:
            req = response.request
            self.entries.append((req.method, req.url, req.headers.get("Upload-Offset")))

        session.hooks["response"].append(hook)
        return session

    def methods(self) -> list[str]:
        return [m for m, _u, _o in self.entries]


@contextmanager
def running_worker(worker: Any, stop: threading.Event) -> Iterator[None]:
    """The worker's loop in a thread for the length of the block."""
    stop.clear()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def run_worker_until(
    worker: Any, outbox: Any, rfa_id: str, stop: Any, *, timeout: float = 120.0
) -> str:
    """Run the worker's loop in a thread until the share ends; returns its final state."""
    import threading
    import time

    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            state = outbox.state(rfa_id)
            if state in ("done", "failed", "cancelled"):
                return str(state)
            stop.wait(0.05)
        raise AssertionError(f"share still {outbox.state(rfa_id)} after {timeout} s")
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


class ShiftedClock:
    """The system clock moved by offsets a test sets: `advance` moves both clocks (time
    passes), `jump_wall` only the wall clock (NTP stepping it). In-process only."""

    def __init__(self) -> None:
        from foundation.clock import SystemClock

        self._base = SystemClock(assume_synchronized=True)
        self._wall_offset_ms = 0
        self._mono_offset_s = 0.0

    def wall_ms(self) -> int:
        return self._base.wall_ms() + self._wall_offset_ms

    def monotonic(self) -> float:
        return self._base.monotonic() + self._mono_offset_s

    def synchronized(self) -> bool:
        return True

    def advance(self, seconds: float) -> None:
        self._mono_offset_s += seconds
        self._wall_offset_ms += round(seconds * 1000)

    def jump_wall(self, delta_ms: int) -> None:
        self._wall_offset_ms += delta_ms
