"""The console's TLS certificate: the owner's own, or one issued by the device's own
certificate authority.

The device makes its authority once (ECDSA P-256, valid twenty years, files
`console-ca.pem` and `console-ca-key.pem`, 0600, in the state directory; the key never
leaves it). The owner installs that authority on a phone once (`doorbellctl
console-code`, docs/console.md), after comparing its SHA-256 fingerprint. It is narrow
on purpose, since an owner hands it the power to vouch for names on their phone: its
name constraints (critical, RFC 5280 §4.2.1.10) permit only the device's own names
(`<host>.local`, `<host>`, `localhost`, and their subdomains) and private, loopback and
link-local address ranges, so even a stolen authority key cannot vouch for a bank, a
public address or another host name; it may only sign certificates that sign nothing
(path length 0).

The console's certificate (the leaf) is issued by that authority: ECDSA P-256, valid
397 days (browsers refuse server certificates valid longer than 398), naming the
device's names and those of its addresses the authority may vouch for (global IPv6
addresses, which privacy extensions change every day, are left out: the `.local` name
reaches them). It is issued again, the authority unchanged, when it no longer names the
device's names and addresses, when fewer than 30 days are left, or when it was not
issued by the device's authority (a self-signed certificate of an earlier version is
replaced so). Only a new host name makes a new authority, which the owner installs
again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundation.errors import DoorbellError
from sync.credentials import key_usage, private_key_pem
from sync.keys import write_secret

logger = logging.getLogger(__name__)

CA_CERT_NAME = "console-ca.pem"
CA_KEY_NAME = "console-ca-key.pem"
CERT_NAME = "console-cert.pem"  # the leaf, then the authority: the chain a browser gets
KEY_NAME = "console-key.pem"
CA_VALID_DAYS = 20 * 365 + 5
LEAF_VALID_DAYS = 397  # Chromium, Safari and Firefox refuse more than 398 days
RENEW_DAYS = 30  # a leaf with fewer days left is issued again
# The address ranges the authority may vouch for: private (RFC 1918, RFC 4193 unique
# local), loopback and IPv4 link-local (a Pi without DHCP). Never a public address.
VOUCHABLE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "::1/128",
    )
)
_SIOCGIFADDR = 0x8915


class ConsoleTlsError(DoorbellError):
    """The console's certificate or key cannot be used."""


@dataclass(frozen=True, slots=True)
class Authority:
    """The device's own certificate authority, as the owner's phone sees it."""

    cert_file: Path
    der: bytes
    fingerprint: str  # hex SHA-256 of the DER: what the owner compares
    names: frozenset[str]  # the DNS names its constraints permit, lower case


@dataclass(frozen=True, slots=True)
class ConsoleCertificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # hex SHA-256 of the certificate's DER
    hosts: frozenset[str]  # the DNS names and addresses it names, lower case
    not_after: dt.datetime
    authority: Authority | None = None  # None for the owner's own certificate


def host_names() -> list[str]:
    name = socket.gethostname().split(".")[0].lower() or "doorbell"
    return [f"{name}.local", name, "localhost"]


def local_addresses() -> list[str]:
    """The machine's own addresses (IPv4 of every interface, global IPv6), read from
    the kernel; nothing is sent anywhere."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(reply[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            address = ipaddress.IPv6Address(bytes.fromhex(raw))
            if not address.is_link_local:
                found.append(str(address))
    if "127.0.0.1" not in found:
        found.append("127.0.0.1")
    return sorted(set(found), key=found.index)


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spaced_fingerprint(fingerprint: str) -> str:
    """`AB:CD:...`, as browsers and phones show a SHA-256 fingerprint."""
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


# ---- decisions (pure) -----------------------------------------------------------------


def vouchable(address: str) -> bool:
    """Whether the device's authority may name this address."""
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in VOUCHABLE_NETWORKS)


def vouchable_host(host: str) -> bool:
    """Whether a listen address (or name) is one the device's certificate can name: a
    name is (the certificate names the device's own), an address when vouchable."""
    try:
        return vouchable(host)
    except ValueError:
        return True


def leaf_hosts(names: Sequence[str], addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """The names and addresses the console's certificate should hold: all the device's
    names, and the addresses its authority may vouch for, each once, in order."""
    kept: list[str] = []
    for address in addresses:
        text = str(ipaddress.ip_address(address))
        if vouchable(text) and text not in kept:
            kept.append(text)
    return [n.lower() for n in names], kept


def reissue_reason(
    leaf: ConsoleCertificate | None,
    issued_by_authority: bool,
    wanted: frozenset[str],
    now: dt.datetime,
) -> str | None:
    """Why the console's certificate must be issued again, or None to keep it."""
    if leaf is None:
        return "there is none yet"
    if not issued_by_authority:
        return "it was not issued by the device's authority"
    if not wanted <= leaf.hosts:
        return "the device's names or addresses changed"
    if leaf.not_after - now < dt.timedelta(days=RENEW_DAYS):
        return f"it expires in less than {RENEW_DAYS} days"
    return None


# ---- files ----------------------------------------------------------------------------


def _hosts_of(cert: x509.Certificate) -> frozenset[str]:
    hosts: set[str] = set()
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts.update(name.lower() for name in san.get_values_for_type(x509.DNSName))
        hosts.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return frozenset(hosts)


def load_certificate(
    cert_file: Path, key_file: Path, authority: Authority | None = None
) -> ConsoleCertificate:
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConsoleTlsError(f"cannot use the console certificate {cert_file}: {exc}") from exc
    return ConsoleCertificate(
        cert_file=cert_file,
        key_file=key_file,
        fingerprint=fingerprint_of(cert.public_bytes(serialization.Encoding.DER)),
        hosts=_hosts_of(cert),
        not_after=cert.not_valid_after_utc,
        authority=authority,
    )


def _authority_of(cert_file: Path, cert: x509.Certificate) -> Authority:
    names: set[str] = set()
    with contextlib.suppress(x509.ExtensionNotFound):
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        for subtree in constraints.permitted_subtrees or ():
            if isinstance(subtree, x509.DNSName):
                names.add(subtree.value.lower())
    der = cert.public_bytes(serialization.Encoding.DER)
    return Authority(cert_file, der, fingerprint_of(der), frozenset(names))


def make_authority(
    cert_file: Path, key_file: Path, *, names: Sequence[str], now: dt.datetime
) -> Authority:
    """A new certificate authority for this device only (see the module's docstring)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Doorbell console"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{names[0]} (this doorbell only)"),
        ]
    )
    permitted: list[x509.GeneralName] = [x509.DNSName(n.lower()) for n in names]
    permitted += [x509.IPAddress(network) for network in VOUCHABLE_NETWORKS]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(authority=True), critical=True)
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret(key_file, private_key_pem(key))
    write_secret(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return _authority_of(cert_file, cert)


def load_authority(cert_file: Path, key_file: Path) -> Authority | None:
    """The device's authority, or None when it is missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if key.public_key() != cert.public_key():
        return None
    return _authority_of(cert_file, cert)


def issue_certificate(
    cert_file: Path,
    key_file: Path,
    *,
    authority: Authority,
    authority_key_file: Path,
    names: Sequence[str],
    addresses: Sequence[str],
    now: dt.datetime,
) -> ConsoleCertificate:
    """The console's certificate, signed by the device's authority; `cert_file` gets
    the chain (the certificate, then the authority) so that a browser can show the
    authority's fingerprint."""
    ca_key = serialization.load_pem_private_key(authority_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_der_x509_certificate(authority.der)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    start = now - dt.timedelta(hours=1)  # a phone's clock a little behind still accepts it
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=LEAF_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_secret(key_file, private_key_pem(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    write_secret(cert_file, chain)
    return load_certificate(cert_file, key_file, authority)


def _issued_by(cert_file: Path, authority: Authority) -> bool:
    try:
        leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        leaf.verify_directly_issued_by(x509.load_der_x509_certificate(authority.der))
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def device_authority(state_dir: Path, names: Sequence[str], now: dt.datetime) -> Authority:
    """The device's authority, made on first use, and again only when it cannot vouch
    for the device's names (the host was renamed) or cannot be read."""
    ca_cert, ca_key = state_dir / CA_CERT_NAME, state_dir / CA_KEY_NAME
    existing = load_authority(ca_cert, ca_key)
    if existing is not None and {n.lower() for n in names} <= existing.names:
        return existing
    if existing is not None:
        logger.warning(
            "the device was renamed; making a new certificate authority for the console "
            "(install it again on the owner's phones)"
        )
    elif ca_cert.exists() or ca_key.exists():
        logger.warning("the console's certificate authority is unreadable; making a new one")
    made = make_authority(ca_cert, ca_key, names=names, now=now)
    logger.info("console certificate authority made, SHA-256 fingerprint %s", made.fingerprint)
    return made


def own_certificate(
    state_dir: Path,
    *,
    names: Sequence[str],
    addresses: Sequence[str],
    now: dt.datetime,
) -> ConsoleCertificate:
    """The device's own certificate for these names and addresses: kept when it still
    fits, else issued again by the (unchanged) authority."""
    authority = device_authority(state_dir, names, now)
    own_cert, own_key = state_dir / CERT_NAME, state_dir / KEY_NAME
    leaf_names, leaf_addresses = leaf_hosts(names, addresses)
    wanted = frozenset(leaf_names) | frozenset(leaf_addresses)
    existing: ConsoleCertificate | None = None
    if own_cert.exists() and own_key.exists():
        try:
            existing = load_certificate(own_cert, own_key, authority)
        except ConsoleTlsError:
            logger.warning("the console's certificate is unreadable; issuing a new one")
    reason = reissue_reason(existing, _issued_by(own_cert, authority), wanted, now)
    if reason is None:
        assert existing is not None
        return existing
    made = issue_certificate(
        own_cert,
        own_key,
        authority=authority,
        authority_key_file=state_dir / CA_KEY_NAME,
        names=leaf_names,
        addresses=leaf_addresses,
        now=now,
    )
    logger.info("console certificate issued (%s)", reason)
    return made


def console_certificate(
    state_dir: Path,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    extra_hosts: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> ConsoleCertificate:
    """The owner's certificate when configured, else the device's own (see the module's
    docstring)."""
    if cert_file is not None and key_file is not None:
        return load_certificate(cert_file, key_file)
    addresses = local_addresses()
    for host in extra_hosts:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            if host not in addresses:
                addresses.append(host)
    return own_certificate(
        state_dir,
        names=host_names(),
        addresses=addresses,
        now=now or dt.datetime.now(dt.UTC),
    )
