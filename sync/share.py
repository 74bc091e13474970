"""Building a share (protocol.md §6): the frame-exact clip of the approved window, the signed
manifest, and both encrypted to the requesting agency's age recipient into the outbox.

One pass over the clip: the exported MP4 is read once, and that read feeds both the
SHA-256 for the manifest and pyrage's streaming encryption (`encrypt_io`, which calls back
into Python for every block, so other threads run; `encrypt_file` would hold the GIL for
the whole file and stall the recorder). Memory stays flat whatever the clip's size.

Each object is written to a temporary name, fsynced and renamed, so after a crash a file
under its final name is complete. The plaintext clip is deleted as soon as it has been
encrypted; the plaintext manifest never touches the disk. A full disk, a bad recipient or
a window without footage raise `ShareError` with a clear message and leave no files.

Anonymous shares (§6.2) are signed with a one-time key made here and forgotten, and carry
no device id, decision, owner key id, contact or camera position.

The clip carries C2PA Content Credentials (sync/credentials.py), signed by the device's
C2PA signer for a named share and by a one-time one for an anonymous share; the manifest
records the SHA-256 of that manifest store (`c2pa.sha256`). Signing is one more copy of
the clip, streamed into its hash and encryption: export -> sign -> hash + encrypt.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import statistics
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from foundation.display import shown
from foundation.errors import DoorbellError, NoFootageError, RecorderError
from foundation.times import format_time
from recorder.export import ClipInfo, export_clip, tiny_clip
from recorder.timeline import Footage
from sync import SOFTWARE
from sync.credentials import (
    ClipSigner,
    CredentialsError,
    OutOfOrder,
    Sink,
    clip_definition,
    new_device_signer,
    one_time_signer,
    sign_clip,
)
from sync.envelope import canonical_envelope, make_envelope, parse_envelope
from sync.keys import SigningKey, parse_recipient
from sync.models import ConsentMethod, Decision, Rfa

logger = logging.getLogger(__name__)

MINUTE_MS = 60_000

CONTACT_KEYS = ("name", "email", "address", "lat", "lon")
# age's payload is a STREAM of 64 KiB chunks, each sealed with a 16-byte Poly1305 tag
# (age-encryption.org/v1); the header in front is measured by encrypting nothing.
AGE_CHUNK = 64 * 1024
AGE_TAG = 16
AGE_SAMPLES = 15  # encryptions of nothing measured, for the header's median size
# The box c2pa puts the manifest store in (C2PA 2.x §A.4.2): a `uuid` box's header and
# its 16-byte type, version and flags, the purpose "manifest" and a 64-bit offset.
C2PA_BOX = 8 + 16 + 4 + 9 + 8


class ShareError(DoorbellError):
    """A share cannot be built; `permanent` says whether trying again could help."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class BuiltShare:
    manifest_path: Path
    clip_path: Path
    manifest_sha256: str  # of the signed manifest envelope's bytes, before encryption
    manifest_bytes: int  # ciphertext sizes
    clip_bytes: int
    clip_sha256: str  # of the plaintext MP4


class _HashingReader(io.RawIOBase):
    """Reads a file for pyrage while hashing and counting what passes through."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.count += n
        return n or 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size if size and size > 0 else 1024 * 1024)
        self.sha256.update(data)
        self.count += len(data)
        return data


def _disk_error(exc: OSError, what: str) -> ShareError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ShareError(f"disk full in the outbox while writing the {what}")
    return ShareError(f"cannot write the {what}: {exc.strerror or exc}", permanent=False)


def _encrypt_to(reader: Any, final: Path, recipient: Any, what: str) -> int:
    """Encrypt a stream to `final` through a temporary name; returns the ciphertext size."""
    tmp = final.with_name(final.name + ".tmp")
    try:
        with tmp.open("wb") as out:
            pyrage.encrypt_io(reader, out, [recipient])
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        tmp.replace(final)
        return size
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(exc, what) from exc
    except Exception as exc:
        # pyrage reports a failed write from Python as its own error type; find the cause
        tmp.unlink(missing_ok=True)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise _disk_error(cause, what) from exc
        if "No space left" in str(exc):
            raise ShareError(f"disk full in the outbox while writing the {what}") from exc
        raise ShareError(f"encryption of the {what} failed: {exc}", permanent=False) from exc


def manifest_payload(
    *,
    rfa: Rfa,
    decision: Decision,
    clip: Any,
    clip_sha256: str,
    clip_bytes: int,
    c2pa_sha256: str,
    signer: SigningKey,
    device_id: str,
    contact: Mapping[str, Any] | None,
    now_ms: int,
) -> dict[str, Any]:
    """The manifest of protocol.md §6.1/§6.2. `clip` is the recorder's ClipInfo.

    The request is embedded in its canonical form (§2), re-derived here so that even a
    request stored before the device wrote canonical forms carries no spelling.

    An anonymous manifest's own times must not point at the instant the broker saw the
    owner's decision go by (§6.2), or the start delay would be for nothing: an agency
    colluding with the broker would read the decision's minute in `consent.at`. So both
    `created_at` and `consent.at` are `now_ms` cut to the whole minute, and the caller
    passes the share's drawn start moment (sync.release) as `now_ms`. That is when the
    owner's consent became final: until then the owner could still cancel."""
    named = decision.share_contact

    def own_time(ms: int) -> str:
        return format_time(ms if named else ms - ms % MINUTE_MS)

    payload: dict[str, Any] = {
        "type": "share-manifest",
        "rfa_id": rfa.id,
        "case_number": rfa.case_number,
        "agency_id": rfa.agency.id,
        "anonymous": not named,
    }
    if named:
        payload["device_id"] = device_id
    decision_text = (
        decision.envelope_text if named and decision.method is ConsentMethod.APP else None
    )
    payload.update(
        {
            "device_key": signer.public_b64,
            "request": canonical_envelope(parse_envelope(rfa.envelope_text)),
            "decision": decision_text,
            "window_requested": rfa.window.to_json(),
            "window_approved": decision.window.to_json(),
            "first_frame_at": format_time(clip.first_frame_ms),
            "last_frame_at": format_time(clip.last_frame_ms),
            "frames": int(clip.frames),
            "clip": {
                "sha256": clip_sha256,
                "bytes": clip_bytes,
                "codec": "h264",
                "width": int(clip.width),
                "height": int(clip.height),
                "fps": clip.fps,
            },
            "c2pa": {"sha256": c2pa_sha256},
            "clock": {"synchronized": bool(clip.synchronized)},
            "consent": {
                "method": decision.method.value,
                "at": own_time(decision.at_ms if named else now_ms),
                "owner_kid": decision.owner_kid if named else None,
            },
            "contact": (
                {k: contact.get(k) for k in CONTACT_KEYS} if named and contact is not None else None
            ),
            "created_at": own_time(now_ms),
            "software": SOFTWARE,
        }
    )
    return payload


@functools.lru_cache(maxsize=16)
def _age_of_nothing(recipient: str) -> int:
    """The size of age's encryption of nothing to `recipient` with pyrage, as
    build_share encrypts: the header, the nonce and one empty chunk's tag. rage puts a
    random "grease" stanza in every header (so that readers keep tolerating unknown
    ones), 0 to about 170 bytes: the median of a few encryptions stands for it."""
    key = parse_recipient(recipient)
    return int(statistics.median(len(pyrage.encrypt(b"", [key])) for _ in range(AGE_SAMPLES)))


def encrypted_bytes(plain_bytes: int, recipient: str) -> int:
    """The size of `plain_bytes` encrypted to `recipient` (an age X25519 recipient)."""
    chunks = max(1, -(-plain_bytes // AGE_CHUNK))
    return _age_of_nothing(recipient) + plain_bytes + AGE_TAG * (chunks - 1)


def upload_estimate(
    footage: Footage, rfa: Rfa, decision: Decision, contact: Mapping[str, Any] | None, device: str
) -> dict[str, int]:
    """What a share would upload for `decision` (an approval of `rfa`, not yet made), in
    bytes, before anything is exported: the encrypted clip (its size from the index:
    recorder/export.py's ClipLayout, plus its Content Credentials: `c2pa_store_bytes`)
    and the encrypted manifest, made by `manifest_payload` and `make_envelope`
    themselves for a clip of that shape (a stand-in hash, a throwaway key: the same
    lengths). `total` is what the upload server receives; the rest says where it comes
    from: the samples, the MP4's boxes, the C2PA box, age and the manifest."""
    f, first, last = footage, footage.first_ms, footage.last_ms
    if not f.frames or first is None or last is None:
        return {"total": 0, "video": 0, "mp4": 0, "credentials": 0, "encryption": 0, "manifest": 0}
    # a clip of that shape, as export_clip would describe it
    clip = ClipInfo(
        Path(),
        first,
        last,
        f.frames,
        f.width,
        f.height,
        f.fps,
        f.clip_bytes,
        True,
        f.head_reencoded,
    )
    definition = _clip_definition(rfa, decision, clip)
    store = c2pa_store_bytes(definition, device if decision.share_contact else None, first)
    credentials = C2PA_BOX + store
    signed_bytes = f.clip_bytes + credentials
    signer = SigningKey.generate()
    payload = manifest_payload(
        rfa=rfa,
        decision=decision,
        clip=clip,
        clip_sha256="0" * 64,
        clip_bytes=signed_bytes,
        c2pa_sha256="0" * 64,
        signer=signer,
        device_id=device,
        contact=contact,
        now_ms=decision.at_ms,
    )
    manifest = len(make_envelope(payload, signer))
    clip_cipher = encrypted_bytes(signed_bytes, rfa.recipient)
    manifest_cipher = encrypted_bytes(manifest, rfa.recipient)
    return {
        "total": clip_cipher + manifest_cipher,
        "video": footage.sample_bytes,
        "mp4": footage.clip_bytes - footage.sample_bytes,
        "credentials": credentials,
        "encryption": clip_cipher - signed_bytes + manifest_cipher - manifest,
        "manifest": manifest,
    }


def c2pa_store_bytes(definition: dict[str, Any], device: str | None, first_ms: int) -> int:
    """The size of the C2PA manifest store that signing a clip with `definition` embeds,
    by the device `device`'s signer (a named share) or a one-time one (None) for a clip
    whose first frame is at `first_ms`.

    Measured, not computed: the store is c2pa-rs's CBOR and JUMBF around a COSE
    signature with the signer's chain, whose sizes only c2pa itself knows exactly; it
    does not depend on the clip's samples or fragments (its BMFF hash is one fixed-size
    digest), so signing a one-frame clip with the same definition and an equivalent
    signer (the same names and key type: the same chain size, but for a byte or two of
    the random serials and ECDSA signatures' DER) gives it.

    The signing happens in a child process: c2pa's native library is 15 MiB resident
    once loaded and is never unloaded, and the daemon should carry it for signing an
    approved share, not for telling an owner who is still looking what would be sent.
    What the size depends on is the definition's shape (each text's length, each
    number's digits), not its values, so one measurement serves every definition of
    that shape: narrowing a window moves its times, not their lengths. The one-time
    signer's only date is written as a fixed-length UTCTime (until 2050)."""
    key = (_shape(definition), device)
    with _STORE_LOCK:  # one child at a time; the others wait for its answer
        found = _STORE_SIZES.get(key)
        if found is None:
            found = _measure_store_apart(json.dumps(definition, sort_keys=True), device, first_ms)
            if len(_STORE_SIZES) >= STORE_SIZES_KEPT:
                _STORE_SIZES.clear()
            _STORE_SIZES[key] = found
        return found


STORE_SIZES_KEPT = 64
STORE_CHILD_SECONDS = 60  # a Pi Zero 2 starts Python and loads c2pa in a few seconds
_STORE_SIZES: dict[tuple[str, str | None], int] = {}
_STORE_LOCK = threading.Lock()


def _shape(value: Any) -> str:
    """`value` (JSON) with each text replaced by its lengths (UTF-8 bytes, characters
    JSON would escape) and each number by its digits and bits: what the encoded size
    of the store depends on, whether c2pa writes an assertion as CBOR or as JSON."""

    def walk(v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return ["int", len(str(v)), v.bit_length()]
        if isinstance(v, str):
            escaped = sum(1 for c in v if c in '"\\' or c < " " or not c.isascii())
            return ["str", len(v.encode()), escaped]
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return ["other", repr(v)]

    return json.dumps(walk(value), sort_keys=True)


def _measure_store_apart(definition: str, device: str | None, first_ms: int) -> int:
    """`_measure_store` in a spawned child process (as the recorder is started, from a
    daemon with threads), killed after STORE_CHILD_SECONDS. Should the child fail, the
    figure is measured here instead: right, at the cost of the library staying loaded."""
    spawn = multiprocessing.get_context("spawn")
    reader, writer = spawn.Pipe(duplex=False)
    child = spawn.Process(
        target=_measure_into,
        args=(writer, definition, device, first_ms),
        name="c2pa-store-size",
        daemon=True,
    )
    try:
        child.start()
        writer.close()
        if reader.poll(STORE_CHILD_SECONDS):
            answer = reader.recv()
            if isinstance(answer, int):
                return answer
            logger.warning("measuring the Content Credentials' size apart failed: %s", answer)
        else:
            logger.warning("measuring the Content Credentials' size apart took too long")
    except (OSError, EOFError) as exc:
        logger.warning("measuring the Content Credentials' size apart failed: %s", exc)
    finally:
        if child.pid is not None:
            child.kill()
            child.join()
        reader.close()
    return _measure_store(definition, device, first_ms)


def _measure_into(
    writer: multiprocessing.connection.Connection,
    definition: str,
    device: str | None,
    first_ms: int,
) -> None:
    """The child's side: the store's size, or what went wrong in words."""
    try:
        answer: int | str = _measure_store(definition, device, first_ms)
    except Exception as exc:  # sent to the parent, which measures again itself
        answer = f"{type(exc).__name__}: {exc}"
    writer.send(answer)
    writer.close()


def _measure_store(definition: str, device: str | None, first_ms: int) -> int:
    signer = _estimate_signer(device) if device is not None else one_time_signer(first_ms)
    with tempfile.TemporaryDirectory(prefix="doorbell-c2pa-") as folder:
        signed = Path(folder) / "signed.mp4"
        return len(sign_clip(tiny_clip(Path(folder)), signed, json.loads(definition), signer))


@functools.lru_cache(maxsize=4)
def _estimate_signer(device: str) -> ClipSigner:
    return new_device_signer(device)


def build_share(
    *,
    rfa: Rfa,
    decision: Decision,
    buffer_root: Path,
    clip_path: Path,
    manifest_path: Path,
    device_key: SigningKey,
    device_id: str,
    contact: Mapping[str, Any] | None,
    now_ms: int,
    clip_signer: ClipSigner | None,
) -> BuiltShare:
    """Export, sign (C2PA), hash, sign (manifest) and encrypt one share into `clip_path` /
    `manifest_path`. `clip_signer`: the device's C2PA signer, for a named share."""
    if not decision.approve:
        raise ShareError("the request was not approved")
    try:
        recipient = parse_recipient(rfa.recipient)
    except ValueError as exc:
        raise ShareError("bad recipient: not a valid age X25519 recipient") from exc
    named = decision.share_contact
    if named and clip_signer is None:
        raise ShareError("the device has no C2PA signing certificate", permanent=False)
    folder = clip_path.parent
    plain = folder / f".{rfa.id}.mp4.plain"
    signed = folder / f".{rfa.id}.mp4.signed"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            clip = export_clip(buffer_root, decision.window, plain)
        except NoFootageError as exc:
            raise ShareError("no footage") from exc
        except OSError as exc:
            raise _disk_error(exc, "clip") from exc
        except RecorderError as exc:  # the export's own wrapping of a write failure
            if isinstance(exc.__cause__, OSError):
                raise _disk_error(exc.__cause__, "clip") from exc
            raise ShareError(f"cannot cut the clip: {exc}") from exc
        store, reader, clip_cipher = _credentials(
            rfa, decision, clip, plain, signed, clip_signer, clip_path, recipient
        )
        plain.unlink()
        clip_sha256 = reader.sha256.hexdigest()

        signer = device_key if named else SigningKey.generate()
        payload = manifest_payload(
            rfa=rfa,
            decision=decision,
            clip=clip,
            clip_sha256=clip_sha256,
            clip_bytes=reader.count,
            c2pa_sha256=hashlib.sha256(store).hexdigest(),
            signer=signer,
            device_id=device_id,
            contact=contact,
            now_ms=now_ms,
        )
        envelope = make_envelope(payload, signer)
        manifest_cipher = _encrypt_to(io.BytesIO(envelope), manifest_path, recipient, "manifest")
    except BaseException:
        for leftover in (plain, signed, clip_path, manifest_path):
            leftover.unlink(missing_ok=True)
        raise
    logger.info("share %s built: %d frames, %d bytes", shown(rfa.id), clip.frames, reader.count)
    return BuiltShare(
        manifest_path=manifest_path,
        clip_path=clip_path,
        manifest_sha256=hashlib.sha256(envelope).hexdigest(),
        manifest_bytes=manifest_cipher,
        clip_bytes=clip_cipher,
        clip_sha256=clip_sha256,
    )


def _credentials(
    rfa: Rfa,
    decision: Decision,
    clip: Any,
    plain: Path,
    signed: Path,
    device_signer: ClipSigner | None,
    clip_path: Path,
    recipient: Any,
) -> tuple[bytes, _HashingReader, int]:
    """Sign the exported clip `plain` with Content Credentials, hash it and encrypt it
    to `clip_path`: (the manifest store, the hash of the signed clip, the ciphertext's
    size). An anonymous share's signer is made here for it alone.

    The signed clip streams from c2pa straight into the hash and the encryption
    (sync.credentials.Sink), which run on a thread of their own while c2pa writes it
    out (having hashed the source first): it is never written to disk in the clear, nor
    read back. Should c2pa ever write out of order, the clip is signed into `signed` and
    encrypted from there."""
    if decision.share_contact:
        assert device_signer is not None
        signer = device_signer
    else:
        signer = one_time_signer(clip.first_frame_ms)
    definition = _clip_definition(rfa, decision, clip)
    try:
        try:
            return _sign_streamed(plain, clip_path, recipient, definition, signer)
        except OutOfOrder:
            logger.warning("c2pa wrote the signed clip out of order; signing into a file")
            clip_path.unlink(missing_ok=True)
        store = sign_clip(plain, signed, definition, signer)
        with signed.open("rb", buffering=1024 * 1024) as handle:
            reader = _HashingReader(handle)  # type: ignore[arg-type]
            cipher = _encrypt_to(reader, clip_path, recipient, "clip")
        signed.unlink()
        return store, reader, cipher
    except OSError as exc:
        raise _disk_error(exc, "clip") from exc
    except CredentialsError as exc:
        raise ShareError(str(exc), permanent=False) from exc


def _clip_definition(rfa: Rfa, decision: Decision, clip: ClipInfo) -> dict[str, Any]:
    return clip_definition(
        title=f"{rfa.id}.mp4",
        software=SOFTWARE,
        window_approved=decision.window,
        first_frame_ms=clip.first_frame_ms,
        last_frame_ms=clip.last_frame_ms,
        frames=clip.frames,
        head_reencoded=clip.head_reencoded,
        synchronized=clip.synchronized,
        consent_method=decision.method.value,
    )


def _sign_streamed(
    plain: Path, clip_path: Path, recipient: Any, definition: dict[str, Any], signer: ClipSigner
) -> tuple[bytes, _HashingReader, int]:
    """c2pa's output into a pipe, read by the hash and the encryption on a thread."""
    read_end, write_end = os.pipe()
    source = open(read_end, "rb", buffering=1024 * 1024)  # noqa: SIM115 (the thread closes it)
    reader = _HashingReader(source)  # type: ignore[arg-type]
    outcome: dict[str, Any] = {}

    def encrypt() -> None:
        try:
            outcome["cipher"] = _encrypt_to(reader, clip_path, recipient, "clip")
        except BaseException as exc:  # handed to the signing thread below
            outcome["error"] = exc
        finally:
            source.close()  # c2pa, if still writing, fails at once (EPIPE), never waits

    thread = threading.Thread(target=encrypt, name="clip-encrypt", daemon=True)
    thread.start()
    try:
        with open(write_end, "wb", buffering=1024 * 1024) as pipe:
            store = sign_clip(plain, Sink(pipe), definition, signer)
    except BaseException:
        thread.join()
        if "error" in outcome:  # the encryption failed first: that is the cause
            raise outcome["error"] from None
        raise
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return store, reader, outcome["cipher"]
