"""Signed envelopes (protocol.md §2).

The signature covers the exact UTF-8 bytes of the `payload` string, so no canonical JSON
is needed: a verifier checks the bytes it received.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


def make_envelope(payload: Mapping[str, Any] | str, key: SigningKey) -> bytes:
    """Sign a payload (a mapping is serialised compactly first) and return the envelope bytes."""
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    sig = key.sign(text.encode("utf-8"))
    body = {"v": 1, "alg": "Ed25519", "kid": key.kid, "payload": text, "sig": b64url_encode(sig)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_envelope(data: bytes | str) -> Envelope:
    """Check the envelope's shape without verifying it (cheap checks first)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "not JSON") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError(EnvelopeFault.MALFORMED, "envelope is not an object")
    if doc.get("v") != 1 or isinstance(doc.get("v"), bool):
        raise EnvelopeError(EnvelopeFault.MALFORMED, "v must be 1")
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
    try:
        payload = json.loads(envelope.payload_text)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(EnvelopeFault.MALFORMED, "payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise EnvelopeError(EnvelopeFault.MALFORMED, "payload is not an object")
    return Verified(kid=envelope.kid, payload_text=envelope.payload_text, payload=payload)


def open_envelope(data: bytes | str, trusted: Mapping[str, Ed25519PublicKey]) -> Verified:
    return verify_envelope(parse_envelope(data), trusted)
