"""The console's certificate: the device's own authority, made once and narrowed by
name constraints, and a leaf it issues, issued again when the addresses change or it
nears its end, the authority unchanged. Checked with the real `openssl verify` and
Python's ssl, as a phone would check them, and against certificates an attacker holding
the authority's key would want."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from device.console.tls import (
    CA_CERT_NAME,
    CA_KEY_NAME,
    CERT_NAME,
    KEY_NAME,
    LEAF_VALID_DAYS,
    ConsoleTlsError,
    console_certificate,
    host_names,
    leaf_hosts,
    load_certificate,
    own_certificate,
)

NAMES = ["porch.local", "porch", "localhost"]
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _own(state: Path, addresses: list[str], now: dt.datetime = NOW):  # type: ignore[no-untyped-def]
    return own_certificate(state, names=NAMES, addresses=addresses, now=now)


def _openssl_verify(ca: Path, leaf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca), *extra, str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )


def _leaf_only(state: Path, out: Path) -> Path:
    """The first certificate of the served chain (openssl verify reads only one)."""
    first = x509.load_pem_x509_certificates((state / CERT_NAME).read_bytes())[0]
    out.write_bytes(first.public_bytes(serialization.Encoding.PEM))
    return out


def test_the_authority_is_made_once_and_survives_a_restart(tmp_path: Path) -> None:
    made = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    assert made.authority is not None
    for name in (CA_CERT_NAME, CA_KEY_NAME, CERT_NAME, KEY_NAME):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / CA_CERT_NAME).read_bytes())
    assert made.authority.fingerprint == hashlib.sha256(made.authority.der).hexdigest()
    assert ca.public_bytes(serialization.Encoding.DER) == made.authority.der
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert host_names()[0] in made.hosts and "127.0.0.1" in made.hosts
    ca_bytes = (tmp_path / CA_CERT_NAME).read_bytes(), (tmp_path / CA_KEY_NAME).read_bytes()
    # a restart: the same authority, the same leaf
    again = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    assert again.authority == made.authority and again.fingerprint == made.fingerprint
    assert ((tmp_path / CA_CERT_NAME).read_bytes(), (tmp_path / CA_KEY_NAME).read_bytes()) == (
        ca_bytes
    )


def test_an_address_change_reissues_only_the_leaf(tmp_path: Path) -> None:
    first = _own(tmp_path, ["192.168.1.20", "127.0.0.1"])
    ca_key = (tmp_path / CA_KEY_NAME).read_bytes()
    moved = _own(tmp_path, ["192.168.1.31", "127.0.0.1"])
    assert moved.authority == first.authority and (tmp_path / CA_KEY_NAME).read_bytes() == ca_key
    assert moved.fingerprint != first.fingerprint
    assert "192.168.1.31" in moved.hosts and "192.168.1.20" not in moved.hosts
    # IPv6 privacy addresses (global, new every day) and public addresses are never
    # named, so they reissue nothing
    churn = _own(tmp_path, ["192.168.1.31", "127.0.0.1", "2001:db8::1234", "203.0.113.9"])
    assert churn.fingerprint == moved.fingerprint
    assert not {"2001:db8::1234", "203.0.113.9"} & churn.hosts


def test_the_leaf_verifies_against_the_authority_with_openssl(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _own(state, ["192.168.1.20", "fd00::20", "127.0.0.1"])
    leaf = _leaf_only(state, tmp_path / "leaf.pem")
    ca = state / CA_CERT_NAME
    for host in ("-verify_hostname", "porch.local"), ("-verify_ip", "192.168.1.20"):
        checked = _openssl_verify(ca, leaf, "-purpose", "sslserver", *host)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    wrong = _openssl_verify(ca, leaf, "-verify_hostname", "router.local")
    assert wrong.returncode != 0 and "hostname mismatch" in wrong.stdout + wrong.stderr
    # without the authority (an earlier self-signed world): no trust at all
    alone = _openssl_verify(leaf, leaf)
    assert alone.returncode != 0


def _signed_by_the_authority(state: Path, out: Path, alt: list[x509.GeneralName]) -> Path:
    """What an attacker holding the authority's key would make."""
    ca = x509.load_pem_x509_certificate((state / CA_CERT_NAME).read_bytes())
    ca_key = serialization.load_pem_private_key((state / CA_KEY_NAME).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


@pytest.mark.parametrize(
    "alt",
    [
        x509.DNSName("bank.example"),
        x509.DNSName("router.local"),
        x509.DNSName("porch.local.evil.example"),
        x509.IPAddress(ipaddress.ip_address("203.0.113.9")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ],
    ids=lambda alt: str(alt.value),
)
def test_the_authority_cannot_vouch_for_anything_else(tmp_path: Path, alt) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    _own(state, ["127.0.0.1"])
    forged = _signed_by_the_authority(state, tmp_path / "forged.pem", [alt])
    checked = _openssl_verify(state / CA_CERT_NAME, forged, "-attime", str(int(NOW.timestamp())))
    assert checked.returncode != 0
    assert "permitted subtree violation" in checked.stdout + checked.stderr
    # and a control: the same forgery naming the device itself passes
    fair = _signed_by_the_authority(state, tmp_path / "fair.pem", [x509.DNSName("porch.local")])
    checked = _openssl_verify(state / CA_CERT_NAME, fair, "-attime", str(int(NOW.timestamp())))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_pythons_ssl_accepts_the_leaf_through_the_authority_only(tmp_path: Path) -> None:
    made = console_certificate(tmp_path, None, None, extra_hosts=["127.0.0.1"])
    assert made.authority is not None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / CERT_NAME, tmp_path / KEY_NAME)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _addr = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()

    def handshake(cafile: Path, host: str) -> None:
        client = ssl.create_default_context(cafile=str(cafile))  # no partial chains
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"x")

    handshake(tmp_path / CA_CERT_NAME, host_names()[0])
    handshake(tmp_path / CA_CERT_NAME, "127.0.0.1")
    # the leaf alone is no anchor: what trusting it used to need (a pinned partial chain)
    leaf = _leaf_only(tmp_path, tmp_path / "leaf.pem")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(leaf, "127.0.0.1")
    thread.join(timeout=10)
    listener.close()


def test_the_leaf_stays_within_what_browsers_accept_and_is_renewed_in_time(
    tmp_path: Path,
) -> None:
    first = _own(tmp_path, ["127.0.0.1"])
    cert = x509.load_pem_x509_certificates((tmp_path / CERT_NAME).read_bytes())[0]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=398) and lifetime.days == LEAF_VALID_DAYS
    assert cert.not_valid_before_utc <= NOW
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    # 300 days on: kept; 370 days on (less than 30 left): issued again, same authority
    assert _own(tmp_path, ["127.0.0.1"], NOW + dt.timedelta(days=300)).fingerprint == (
        first.fingerprint
    )
    renewed = _own(tmp_path, ["127.0.0.1"], NOW + dt.timedelta(days=370))
    assert renewed.fingerprint != first.fingerprint and renewed.authority == first.authority
    assert renewed.not_after > NOW + dt.timedelta(days=700)


def _self_signed(cert_file: Path, key_file: Path, name: str) -> str:
    """A certificate as earlier versions made them (and as an owner may bring one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_an_earlier_self_signed_certificate_is_replaced_quietly(tmp_path: Path) -> None:
    old = _self_signed(tmp_path / CERT_NAME, tmp_path / KEY_NAME, "porch.local")
    made = _own(tmp_path, ["127.0.0.1"])
    assert made.authority is not None and made.fingerprint != old
    leaf = _leaf_only(tmp_path, tmp_path / "leaf.pem")
    assert _openssl_verify(tmp_path / CA_CERT_NAME, leaf).returncode == 0


def test_a_renamed_device_gets_a_new_authority(tmp_path: Path) -> None:
    first = _own(tmp_path, ["127.0.0.1"])
    renamed = own_certificate(
        tmp_path, names=["gate.local", "gate", "localhost"], addresses=["127.0.0.1"], now=NOW
    )
    assert renamed.authority is not None and first.authority is not None
    assert renamed.authority.fingerprint != first.authority.fingerprint
    assert "gate.local" in renamed.authority.names and "porch.local" not in renamed.authority.names


def test_a_broken_authority_is_made_again_not_used(tmp_path: Path) -> None:
    first = _own(tmp_path, ["127.0.0.1"])
    # a key that is not the certificate's (a half-restored backup)
    (tmp_path / CA_KEY_NAME).write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    again = _own(tmp_path, ["127.0.0.1"])
    assert again.authority is not None and first.authority is not None
    assert again.authority.fingerprint != first.authority.fingerprint
    leaf = _leaf_only(tmp_path, tmp_path / "leaf.pem")
    assert _openssl_verify(tmp_path / CA_CERT_NAME, leaf).returncode == 0


def test_the_owners_certificate_is_used_as_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "mine.pem", tmp_path / "mine.key"
    mine = _self_signed(cert, key, "door.example")
    used = console_certificate(tmp_path / "state", cert, key)
    assert used.fingerprint == mine and used.hosts == {"door.example"}
    assert used.authority is None
    assert not (tmp_path / "state" / CERT_NAME).exists()
    assert not (tmp_path / "state" / CA_CERT_NAME).exists()
    key.write_text("not a key")
    with pytest.raises(ConsoleTlsError):
        load_certificate(cert, key)


_ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


@given(st.lists(st.one_of(_ipv4, _ipv6), max_size=12))
def test_no_public_address_ever_reaches_the_leaf(addresses: list[str]) -> None:
    names, kept = leaf_hosts(NAMES, addresses)
    assert names == NAMES and len(kept) == len(set(kept)) and set(kept) <= set(addresses)
    for address in kept:
        ip = ipaddress.ip_address(address)
        assert not ip.is_global and not ip.is_multicast and not ip.is_unspecified
