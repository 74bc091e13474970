"""Sealed messages (protocol.md §2): a signed envelope, age-encrypted to recipients.

Messages to the owner are padded *inside* the encryption to a multiple of 4 KiB with
trailing spaces (still valid JSON), so that the ciphertext size says nothing about how
many requests are pending.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyrage
from pyrage import x25519

from foundation.wire import PAD_BLOCK
from sync.errors import SealError

__all__ = ["PAD_BLOCK", "pad", "seal", "unseal"]


def pad(data: bytes, block: int = PAD_BLOCK) -> bytes:
    return data + b" " * (-len(data) % block)


def seal(
    envelope: bytes, recipients: Sequence[x25519.Recipient], *, pad_block: int | None = PAD_BLOCK
) -> bytes:
    if not recipients:
        raise SealError("no recipients to seal to")
    body = pad(envelope, pad_block) if pad_block else envelope
    try:
        return bytes(pyrage.encrypt(body, list(recipients)))
    except Exception as exc:  # pyrage.EncryptError and friends
        raise SealError(f"encryption failed: {exc}") from exc


def unseal(ciphertext: bytes, identities: Sequence[x25519.Identity]) -> bytes:
    """Decrypt; trailing padding is left in place (JSON parsers skip whitespace)."""
    try:
        return bytes(pyrage.decrypt(ciphertext, list(identities)))
    except Exception as exc:  # pyrage.DecryptError, malformed headers, ...
        raise SealError("cannot decrypt") from exc
