"""Key material: Ed25519 signing keys, age X25519 identities, key ids, base64url.

Key files are written 0600 and never logged. A signing key is stored as PKCS#8 PEM (so
`openssl` reads it); an age identity in age's own text format (so the `age` CLI reads it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyrage import x25519

from foundation.errors import KeyFormatError
from sync.errors import KeyFileError


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict RFC 4648 §5 without padding: no '=', no '+', '/' or whitespace."""
    if not isinstance(text, str) or any(c in text for c in "=+/ \t\r\n"):
        raise KeyFormatError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError("not unpadded base64url") from exc


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    """protocol.md §1: first 16 lowercase hex characters of SHA-256 over the raw public key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    raw = b64url_decode(text)
    if len(raw) != 32:
        raise KeyFormatError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def parse_recipient(text: object) -> x25519.Recipient:
    if not isinstance(text, str) or not text.startswith("age1"):
        raise KeyFormatError("not an age X25519 recipient")
    try:
        return x25519.Recipient.from_str(text)
    except Exception as exc:  # pyrage raises its own RecipientError or ValueError
        raise KeyFormatError("not an age X25519 recipient") from exc


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its public half and key id."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def public_raw(self) -> bytes:
        return raw_public(self.public)

    @property
    def public_b64(self) -> str:
        return b64url_encode(self.public_raw)

    @property
    def kid(self) -> str:
        return key_id(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def to_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid})"


def write_secret(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically; the secret never exists with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_private(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode & 0o077
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode:
        raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
    return data


def load_signing_key(path: Path) -> SigningKey:
    data = _read_private(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return SigningKey(key)


def load_identity(path: Path) -> x25519.Identity:
    data = _read_private(path).decode("ascii", "replace")
    for line in data.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                return x25519.Identity.from_str(line)
            except Exception as exc:
                raise KeyFileError(f"{path} holds a malformed age identity") from exc
    raise KeyFileError(f"{path} holds no age identity")


def identity_file_text(identity: x25519.Identity) -> bytes:
    return f"# public key: {identity.to_public()}\n{identity}\n".encode("ascii")


def _new_signing_key(path: Path) -> SigningKey:
    key = SigningKey.generate()
    write_secret(path, key.to_pem())
    return key


def _new_identity(path: Path) -> x25519.Identity:
    identity = x25519.Identity.generate()
    write_secret(path, identity_file_text(identity))
    return identity


def load_or_create_signing_key(path: Path) -> SigningKey:
    return load_signing_key(path) if path.exists() else _new_signing_key(path)


def load_or_create_identity(path: Path) -> x25519.Identity:
    return load_identity(path) if path.exists() else _new_identity(path)


def create_key_pair(signing_path: Path, identity_path: Path) -> tuple[SigningKey, x25519.Identity]:
    """A party's new keys (the owner's, an agency's): an Ed25519 signing key and an age
    identity, each written 0600 in a 0700 folder. Refuses when either file exists, so
    that a second run never destroys keys."""
    for path in (signing_path, identity_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    for folder in {signing_path.parent, identity_path.parent}:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _new_signing_key(signing_path), _new_identity(identity_path)
