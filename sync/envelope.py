"""Signed envelopes (protocol.md §2).

The signature covers the exact UTF-8 bytes of the `payload` string: a verifier checks
the bytes it received. The envelope around it is read strictly (one JSON reader for every
party: no repeated key anywhere, no NaN/Infinity, `v` the integer 1, `sig` the canonical
base64url of 64 bytes), so one signed request has exactly one meaning; and whenever the
device re-emits an envelope it writes its canonical form (RFC 8785, `canonical_envelope`),
so that the spelling an envelope arrived in cannot travel further (an anonymous share
must not carry a mark the broker chose for one device). The RFC 8785 serialisation itself
is the wire contract's (`foundation.wire.canonical_json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation.errors import InvalidValueError
from foundation.wire import canonical_json
from sync.errors import EnvelopeError, EnvelopeFault
from sync.keys import SigningKey, b64url_decode, b64url_encode


@dataclass(frozen=True)
class Envelope:
    """The outer fields of an envelope, parsed but not yet verified."""

    kid: str
    payload_text: str
    sig: bytes


@dataclass(frozen=True)
class Verified:
    """An envelope whose signature checked out under `kid`."""

    kid: str
    payload_text: str
    payload: dict[str, Any]


def _no_constants(name: str) -> Any:
    raise InvalidValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidValueError("a JSON object repeats a key")
        out[key] = value
    return out


def strict_json(text: str | bytes) -> Any:
    """Parse JSON refusing NaN/Infinity literals and repeated object keys (parsers resolve
    those differently, so two parties could read two different messages). Raises
    ValueError (RecursionError for absurd nesting is turned into ValueError too)."""
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise InvalidValueError("JSON nested too deeply") from exc


def strict_json_object(text: str | bytes) -> dict[str, Any] | None:
    """A strictly parsed JSON object (see `strict_json`), or None if it is not one."""
    try:
        doc = strict_json(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def canonical_envelope(envelope: Envelope) -> str:
    """protocol.md §2 canonical form: RFC 8785 of {alg, kid, payload, sig, v}. Any two
    spellings of one signed envelope give the same text."""
    return canonical_json(
        {
            "alg": "Ed25519",
            "kid": envelope.kid,
            "payload": envelope.payload_text,
            "sig": b64url_encode(envelope.sig),
            "v": 1,
        }
    ).decode("utf-8")


def make_envelope(payload: Mapping[str, Any] | str, key: SigningKey) -> bytes:
    """Sign a payload (a mapping is serialised compactly first) and return the envelope bytes."""
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    )
    sig = key.sign(text.encode("utf-8"))
    body = {"v": 1, "alg": "Ed25519", "kid": key.kid, "payload": text, "sig": b64url_encode(sig)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_envelope(data: bytes | str) -> Envelope:
    """Check the envelope's shape without verifying it (cheap checks first)."""
    try:
        doc = strict_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "not strict JSON (or a repeated key)") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError(EnvelopeFault.MALFORMED, "envelope is not an object")
    version = doc.get("v")
    if type(version) is not int or version != 1:  # 1.0 and true are not the integer 1
        raise EnvelopeError(EnvelopeFault.MALFORMED, "v must be the integer 1")
    if doc.get("alg") != "Ed25519":
        raise EnvelopeError(EnvelopeFault.MALFORMED, "alg must be Ed25519")
    kid, payload, sig = doc.get("kid"), doc.get("payload"), doc.get("sig")
    if not isinstance(kid, str) or not isinstance(payload, str) or not isinstance(sig, str):
        raise EnvelopeError(EnvelopeFault.MALFORMED, "kid, payload and sig must be strings")
    try:
        sig_bytes = b64url_decode(sig)
    except ValueError as exc:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "sig is not base64url") from exc
    if len(sig_bytes) != 64:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "an Ed25519 signature is 64 bytes")
    if b64url_encode(sig_bytes) != sig:  # spare bits set in the last character
        raise EnvelopeError(EnvelopeFault.MALFORMED, "sig is not canonical base64url")
    return Envelope(kid=kid, payload_text=payload, sig=sig_bytes)


def verify_envelope(envelope: Envelope, trusted: Mapping[str, Ed25519PublicKey]) -> Verified:
    """Verify against the keys trusted for this message type, then parse the payload."""
    key = trusted.get(envelope.kid)
    if key is None:
        raise EnvelopeError(EnvelopeFault.UNKNOWN_KEY)
    try:
        key.verify(envelope.sig, envelope.payload_text.encode("utf-8"))
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise EnvelopeError(EnvelopeFault.BAD_SIGNATURE) from exc
    payload = strict_json_object(envelope.payload_text)
    if payload is None:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "payload is not a strict JSON object")
    return Verified(kid=envelope.kid, payload_text=envelope.payload_text, payload=payload)


def open_envelope(data: bytes | str, trusted: Mapping[str, Ed25519PublicKey]) -> Verified:
    return verify_envelope(parse_envelope(data), trusted)
