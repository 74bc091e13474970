"""C2PA Content Credentials on a share's clip: the open standard's signed statement of
where the clip came from, which agencies', newsrooms' and courts' tools read
(c2patool, contentcredentials.org/verify), beside our own manifest that only our
verifier reads.

Who signs (docs/c2pa.md):

- a **named** share, the device's own signing certificate, issued once by the device's
  own C2PA authority. Both are made on first start and kept in the state directory
  (0600). An agency that holds the authority's certificate (the owner gives it, or
  `doorbellctl c2pa-authority` prints it) sees the clip as "Trusted". The authority is
  separate from the console's (device/console/tls.py) on purpose: that one is made
  again when the device is renamed and vouches for host names on the owner's phone; this
  one must stay the same for as long as old clips are evidence, and vouches for nothing
  but clips.
- an **anonymous** share, a one-time authority and certificate made for that share alone
  and forgotten: no device id, no key, no serial or date that any other share or the
  device also carries. Its validity starts at the midnight (UTC) before the first frame,
  a day the manifest already states, never at the moment it was made (which would point
  at the owner's decision, protocol.md §6.2). Readers call it "Valid" but not trusted:
  nothing vouches for it, which is the point.

What the credentials say (`clip_definition`): the clip was captured by a camera
(`c2pa.created`, digital capture) by this software; the capture window, the first and
last frame's times and the frame count; how many head frames were re-encoded to start
the clip on the window's first frame (`c2pa.transcoded`); and that the owner consented,
by which method. Never the owner's contact, the request's text, or for an anonymous
share the device's id.

Signing copies the clip once, inserting the manifest store in a `uuid` box after `ftyp`.
The clip is a fragmented MP4 (recorder/export.py), which c2pa-rs hashes fragment by
fragment in bounded memory (bench/c2pa.py measures it for a 12-hour clip).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from foundation.errors import DoorbellError
from foundation.times import Window, format_time
from sync.keys import write_secret

# The extended key usages a C2PA signing certificate may carry (C2PA 2.x trust model):
# c2pa-kp-claimSigning and id-kp-documentSigning. Readers are given this list as their
# `trust.trust_config`: c2pa-rs accepts no certificate when it is empty.
CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
ALLOWED_EKUS = "\n".join(oid.dotted_string for oid in (CLAIM_SIGNING, DOCUMENT_SIGNING)) + "\n"

MIME = "video/mp4"
VALID_DAYS = 20 * 365 + 5  # evidence outlives a court case; the authority, its clips
ORGANIZATION = "Doorbell"
ONE_TIME_AUTHORITY = "Doorbell one-time share authority"
ONE_TIME_SIGNER = "Doorbell anonymous share"
DIGITAL_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
CAPTURE_LABEL = "org.doorbell.capture"
CONSENT_LABEL = "org.doorbell.consent"

AUTHORITY_CERT = "c2pa-authority.pem"
AUTHORITY_KEY = "c2pa-authority-key.pem"
SIGNER_CERT = "c2pa-signer.pem"  # the signing certificate, then the authority's
SIGNER_KEY = "c2pa-signer-key.pem"


class CredentialsError(DoorbellError):
    """Content Credentials cannot be made or signed."""


@dataclass(frozen=True)
class ClipSigner:
    """A C2PA signing certificate with its chain (PEM: the signer, then its authority)
    and its private key (PKCS#8 PEM). `authority_pem` is the root an agency trusts."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    authority_pem: bytes

    def __repr__(self) -> str:  # never the key
        return f"ClipSigner(authority sha256 {self.authority_fingerprint[:16]}...)"

    @property
    def authority_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.authority_pem).public_bytes(
            serialization.Encoding.DER
        )

    @property
    def authority_fingerprint(self) -> str:
        return hashlib.sha256(self.authority_der).hexdigest()


# ---- certificates ---------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def key_usage(*, authority: bool) -> x509.KeyUsage:
    """An authority signs certificates (and revocation lists) only; the certificate it
    issues signs only (claims here, TLS handshakes for the console's)."""
    return x509.KeyUsage(
        digital_signature=not authority,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_authority(
    common_name: str, not_before: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A root that may issue signing certificates and nothing below them (path length
    0). ECDSA P-256 (ES256), the algorithm every C2PA reader supports. C2PA readers want
    subject and authority key identifiers on the chain, so both are set."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(authority=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_signer(
    authority: x509.Certificate,
    authority_key: ec.EllipticCurvePrivateKey,
    common_name: str,
) -> ClipSigner:
    """A claim-signing certificate from `authority`, valid as long as it is."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(authority.not_valid_before_utc)
        .not_valid_after(authority.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([CLAIM_SIGNING, DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()),
            critical=False,
        )
        .sign(authority_key, hashes.SHA256())
    )
    return ClipSigner(
        chain_pem=_pem(cert) + _pem(authority),
        key_pem=private_key_pem(key),
        authority_pem=_pem(authority),
    )


def one_time_signer(first_frame_ms: int) -> ClipSigner:
    """An authority and signer for one anonymous share; the authority's key is dropped
    here, so nothing else can ever be signed under it. Its only date is the midnight UTC
    before the clip's first frame (see the module's docstring)."""
    day = dt.datetime.fromtimestamp(first_frame_ms // 1000, tz=dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    authority, key = make_authority(ONE_TIME_AUTHORITY, day)
    return issue_signer(authority, key, ONE_TIME_SIGNER)


def _device_names(device_id: str) -> tuple[str, str]:
    """(the authority's common name, the signer's) of a device."""
    return f"Doorbell {device_id} authority", f"Doorbell {device_id}"


def new_device_signer(device_id: str, *, now: dt.datetime | None = None) -> ClipSigner:
    """A device signer held in memory only (its authority's key dropped): for tests and
    benchmarks, which must not leave key files behind."""
    authority_name, signer_name = _device_names(device_id)
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
    return issue_signer(*make_authority(authority_name, start), signer_name)


def device_signer(folder: Path, device_id: str, *, now: dt.datetime | None = None) -> ClipSigner:
    """The device's signer, made with its authority on first use and kept in `folder`
    (0600). An unreadable or mismatched signer is issued again by the same authority; an
    unreadable authority is an error, never replaced silently: agencies trust it. The
    authority's certificate is written last, so without it the authority was never
    complete (a power cut on first start) and is made anew."""
    authority_cert, authority_key = folder / AUTHORITY_CERT, folder / AUTHORITY_KEY
    signer_cert, signer_key = folder / SIGNER_CERT, folder / SIGNER_KEY
    if not authority_cert.exists():
        start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
        made_cert, made_key = make_authority(_device_names(device_id)[0], start)
        write_secret(authority_key, private_key_pem(made_key))
        write_secret(authority_cert, _pem(made_cert))
    try:
        cert = x509.load_pem_x509_certificate(authority_cert.read_bytes())
        key = serialization.load_pem_private_key(authority_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CredentialsError(
            f"the device's C2PA authority in {folder} cannot be read ({exc}); restore it "
            f"from a backup, or move {AUTHORITY_CERT} and {AUTHORITY_KEY} away to make a new "
            "one (agencies must then be given the new one)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CredentialsError(f"{AUTHORITY_KEY} is not the key of {AUTHORITY_CERT}")
    stored = _load_signer(signer_cert, signer_key, cert)
    if stored is not None:
        return stored
    made = issue_signer(cert, key, _device_names(device_id)[1])
    write_secret(signer_key, made.key_pem)
    write_secret(signer_cert, made.chain_pem)
    return made


def _load_signer(cert_file: Path, key_file: Path, authority: x509.Certificate) -> ClipSigner | None:
    try:
        chain_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf.verify_directly_issued_by(authority)
    except Exception:  # missing, unreadable, or not this authority's: issue another
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != leaf.public_key():
        return None
    return ClipSigner(chain_pem=chain_pem, key_pem=key_pem, authority_pem=_pem(authority))


# ---- the manifest definition (pure) ---------------------------------------------------


def clip_definition(
    *,
    title: str,
    software: str,
    window_approved: Window,
    first_frame_ms: int,
    last_frame_ms: int,
    frames: int,
    head_reencoded: int,
    synchronized: bool,
    consent_method: str,
) -> dict[str, Any]:
    """The C2PA manifest definition of a share's clip (c2pa-rs's JSON form)."""
    name, _, version = software.partition(" ")
    agent = {"name": name, "version": version or "unknown"}
    actions: list[dict[str, Any]] = [
        {"action": "c2pa.created", "digitalSourceType": DIGITAL_CAPTURE, "softwareAgent": agent}
    ]
    if head_reencoded:
        actions.append(
            {
                "action": "c2pa.transcoded",
                "softwareAgent": agent,
                "description": (
                    f"the first {head_reencoded} frame(s) were decoded from their keyframe and "
                    "encoded again so that the clip starts at the window's first frame; every "
                    "later frame is the camera's own encoding, copied unchanged"
                ),
            }
        )
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": MIME,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {
                "label": CAPTURE_LABEL,
                "data": {
                    "window_approved": window_approved.to_json(),
                    "first_frame_at": format_time(first_frame_ms),
                    "last_frame_at": format_time(last_frame_ms),
                    "frames": frames,
                    "clock_synchronized": synchronized,
                },
            },
            {"label": CONSENT_LABEL, "data": {"owner_consented": True, "method": consent_method}},
        ],
    }


def settings(*, anchors: str | None = None) -> dict[str, Any]:
    """c2pa-rs settings for signing (no anchors) and reading (`anchors`: PEM roots to
    trust, replacing the SDK's own list). Never the network: no remote manifests, no
    OCSP, no timestamp authority (a share's moment must not reach a third party)."""
    trust: dict[str, Any] = {"trust_config": ALLOWED_EKUS}
    if anchors:
        trust["trust_anchors"] = anchors
    return {
        "trust": trust,
        "verify": {
            "verify_after_sign": False,  # the agency reads it; tests read every share
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        },
        "builder": {"thumbnail": {"enabled": False}},
    }


# ---- signing (I/O) --------------------------------------------------------------------


class OutOfOrder(CredentialsError):
    """c2pa wrote the signed clip other than front to back: a Sink cannot follow it."""


class Sink(io.RawIOBase):
    """The stream c2pa writes the signed clip into, handed on to `out` as it comes.

    c2pa-rs writes a signed fragmented MP4 front to back (`ftyp`, its C2PA box, then the
    source's boxes unchanged), having hashed the source first; only at the end does it
    seek back, writing nothing more. So the signed clip never needs to be on disk: it can
    go straight into the hash and the encryption (sync/share.py). Should a later c2pa
    write anywhere but at the end, or read back, the write fails, `out_of_order` is set
    and `sign_clip` raises OutOfOrder; the caller then signs into a file instead. The
    OSError of a failed write to `out` is kept (c2pa-python reports only -1 for it)."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self._out = out
        self._pos = self._end = 0
        self.out_of_order = False
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True  # c2pa-python asks for read(); it is never called front to back

    def write(self, data: Any) -> int:
        if self._pos != self._end:
            self.out_of_order = True
            raise OSError("c2pa wrote before the end of the signed clip")
        try:
            self._out.write(data)
        except OSError as exc:
            self.error = exc
            raise
        size = len(memoryview(data))
        self._pos = self._end = self._end + size
        return size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        self.out_of_order = True
        raise OSError("c2pa read back the signed clip")

    def flush(self) -> None:
        pass


class _File(io.BufferedRandom):
    """The signed clip as a file, keeping the OSError of a failed write (see Sink)."""

    error: OSError | None = None
    out_of_order = False

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self.error = exc
            raise

    def seek(self, offset: int, whence: int = 0) -> int:  # a seek writes what is buffered
        try:
            return super().seek(offset, whence)
        except OSError as exc:
            self.error = exc
            raise


def sign_clip(
    src: Path, target: Sink | Path, definition: Mapping[str, Any], signer: ClipSigner
) -> bytes:
    """Write `src` with Content Credentials embedded into `target` (a Sink, or a file
    path); returns the manifest store (the JUMBF bytes inside the clip's C2PA box), whose
    SHA-256 our manifest records. A failed write raises its OSError."""
    import c2pa  # a native library of 23 MB: only the code that signs loads it

    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signer.chain_pem, signer.key_pem, None)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(src.open("rb"))
        stream: Sink | _File = (
            target
            if isinstance(target, Sink)
            else stack.enter_context(_File(io.FileIO(target, "w+"), 1024 * 1024))
        )
        try:
            with (
                c2pa.Context.from_dict(settings()) as context,
                c2pa.Signer.from_info(info) as c2pa_signer,
                c2pa.Builder(dict(definition), context=context) as builder,
            ):
                store = builder.sign(c2pa_signer, MIME, source, stream)
            stream.flush()
        except c2pa.C2paError as exc:
            if stream.error is not None:
                raise stream.error from exc
            if stream.out_of_order:
                raise OutOfOrder(str(exc)) from exc
            raise CredentialsError(f"signing the clip's Content Credentials failed: {exc}") from exc
    if not store:
        raise CredentialsError("signing the clip's Content Credentials returned no manifest")
    return store
