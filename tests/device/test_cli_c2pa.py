"""`doorbellctl c2pa-authority`: the certificate an owner gives an agency so that the
device's named shares read "Trusted" (docs/c2pa.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud.loopback import DeviceSetup
from device.console.tls import spaced_fingerprint
from device.identity import load_device_identity
from sync.credentials import AUTHORITY_CERT
from tests.device.test_cli import ctl


def test_the_authority_is_printed_alone_on_stdout_with_its_fingerprint(tmp_path: Path) -> None:
    config = DeviceSetup(root=tmp_path / "device", broker_url="mqtt://127.0.0.1:1").write()
    state = config.parent / "var" / "state"
    before = ctl(config, "c2pa-authority")
    assert before.returncode == 1 and "start the daemon once" in before.stderr
    assert not (state / "keys").exists()  # a CLI run as root makes no key files

    identity = load_device_identity(state, "porch-cam-01")  # the daemon's first start
    assert identity.clip_signer is not None
    shown = ctl(config, "c2pa-authority")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (state / "keys" / AUTHORITY_CERT).read_text()
    assert shown.stdout.encode() == identity.clip_signer.authority_pem
    der = x509.load_pem_x509_certificate(shown.stdout.encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert spaced_fingerprint(hashlib.sha256(der).hexdigest()) in shown.stderr
    assert "PRIVATE" not in shown.stdout + shown.stderr

    out = tmp_path / "authority.pem"
    written = ctl(config, "c2pa-authority", "--out", str(out))
    assert written.returncode == 0 and out.read_bytes() == identity.clip_signer.authority_pem
