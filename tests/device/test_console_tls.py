"""The console's own certificate: P-256, 0600, names the host and its addresses, kept
across starts, made again when an address it should name is missing."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from device.console.tls import (
    CERT_NAME,
    KEY_NAME,
    ConsoleTlsError,
    console_certificate,
    host_names,
    load_certificate,
    make_certificate,
)


def test_the_device_makes_its_certificate_once(tmp_path: Path) -> None:
    made = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    for name in (CERT_NAME, KEY_NAME):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / CERT_NAME).read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    der = cert.public_bytes(serialization.Encoding.DER)
    assert made.fingerprint == hashlib.sha256(der).hexdigest()
    assert host_names()[0].endswith(".local") and host_names()[0] in made.hosts
    assert "127.0.0.1" in made.hosts
    again = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    assert again.fingerprint == made.fingerprint


def test_a_new_address_makes_a_new_certificate(tmp_path: Path) -> None:
    first = console_certificate(tmp_path, None, None)
    moved = console_certificate(tmp_path, None, None, extra_hosts=["192.0.2.7"])
    assert moved.fingerprint != first.fingerprint and "192.0.2.7" in moved.hosts


def test_the_owners_certificate_is_used_as_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "mine.pem", tmp_path / "mine.key"
    mine = make_certificate(
        cert, key, names=["door.example"], addresses=[], now=dt.datetime.now(dt.UTC)
    )
    used = console_certificate(tmp_path / "state", cert, key)
    assert used.fingerprint == mine.fingerprint and used.hosts == {"door.example"}
    assert not (tmp_path / "state" / CERT_NAME).exists()
    key.write_text("not a key")
    with pytest.raises(ConsoleTlsError):
        load_certificate(cert, key)
