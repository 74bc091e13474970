"""The console's TLS certificate: the owner's own, or one the device makes for itself.

A self-made certificate is ECDSA P-256, self-signed, valid ten years, and names the
device's `.local` host name, its plain host name, `localhost` and every address the
device has (IPv4 and global IPv6). The phone cannot check it against an authority, so
`doorbellctl console-code` prints its SHA-256 fingerprint (of the DER) for the owner to
compare with what the browser shows. When the device's addresses change (a new DHCP
lease), a certificate that no longer names them is made again, and so is its
fingerprint. Files are 0600 in the state directory; the key never leaves it.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundation.errors import DoorbellError
from sync.keys import write_secret

logger = logging.getLogger(__name__)

CERT_NAME = "console-cert.pem"
KEY_NAME = "console-key.pem"
VALID_DAYS = 3650
_SIOCGIFADDR = 0x8915


class ConsoleTlsError(DoorbellError):
    """The console's certificate or key cannot be used."""


@dataclass(frozen=True, slots=True)
class ConsoleCertificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # hex SHA-256 of the certificate's DER
    hosts: frozenset[str]  # the DNS names and addresses it names, lower case


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


def load_certificate(cert_file: Path, key_file: Path) -> ConsoleCertificate:
    try:
        pem = cert_file.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConsoleTlsError(f"cannot use the console certificate {cert_file}: {exc}") from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    hosts: set[str] = set()
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts.update(name.lower() for name in san.get_values_for_type(x509.DNSName))
        hosts.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return ConsoleCertificate(
        cert_file=cert_file,
        key_file=key_file,
        fingerprint=hashlib.sha256(der).hexdigest(),
        hosts=frozenset(hosts),
    )


def make_certificate(
    cert_file: Path, key_file: Path, *, names: list[str], addresses: list[str], now: dt.datetime
) -> ConsoleCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_secret(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return load_certificate(cert_file, key_file)


def console_certificate(
    state_dir: Path,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    extra_hosts: Sequence[str] = (),
) -> ConsoleCertificate:
    """The owner's certificate when configured, else the device's own (made on first
    start, and again when it no longer names the device's names and addresses)."""
    if cert_file is not None and key_file is not None:
        return load_certificate(cert_file, key_file)
    own_cert, own_key = state_dir / CERT_NAME, state_dir / KEY_NAME
    names = host_names()
    addresses = local_addresses()
    for host in extra_hosts:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            if host not in addresses:
                addresses.append(host)
    wanted = {n.lower() for n in names} | {str(ipaddress.ip_address(a)) for a in addresses}
    if own_cert.exists() and own_key.exists():
        try:
            existing = load_certificate(own_cert, own_key)
        except ConsoleTlsError:
            logger.warning("the console's own certificate is unreadable; making a new one")
        else:
            if wanted <= existing.hosts:
                return existing
            logger.info("the device's names or addresses changed; making a new certificate")
    made = make_certificate(
        own_cert, own_key, names=names, addresses=addresses, now=dt.datetime.now(dt.UTC)
    )
    logger.info("console certificate made, SHA-256 fingerprint %s", made.fingerprint)
    return made
