"""The first visit without the warning trap, against the real daemon: the device's
certificate authority downloads before sign-in (and nothing else does), it survives a
restart while an address change reissues only the console's certificate, and a real
Chromium that trusts the authority (as a phone does once the owner installed it) opens
the console with no certificate error, while refusing what the authority must not vouch
for."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device.console.tls import host_names, spaced_fingerprint
from tests.fixtures.daemon import World
from tests.integration.console_kit import (
    ConsoleHttp,
    ca_path,
    console_code,
    cworld,  # noqa: F401 - a fixture
    signed_in,
)

pytestmark = pytest.mark.xdist_group("console")

CHROMIUM = "/usr/bin/chromium"


def _state(world: World) -> Path:
    return ca_path(world).parent


def test_the_authority_downloads_before_sign_in_and_nothing_else_does(cworld) -> None:  # noqa: F811
    info = console_code(cworld)
    anonymous = ConsoleHttp(cworld)
    reply = anonymous.get("/ca.crt")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-x509-ca-cert"
    assert reply.headers["content-disposition"].startswith("attachment;")
    assert "set-cookie" not in reply.headers
    assert reply.headers["x-content-type-options"] == "nosniff"
    # DER, so the file's own SHA-256 is the fingerprint the owner compares
    assert hashlib.sha256(reply.content).hexdigest() == info["ca_fingerprint"]
    ca = x509.load_der_x509_certificate(reply.content)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pem = ca_path(cworld).read_bytes()
    assert reply.content == x509.load_pem_x509_certificate(pem).public_bytes(
        serialization.Encoding.DER
    )
    text = anonymous.get("/ca.txt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert spaced_fingerprint(info["ca_fingerprint"]) in text.text
    assert info["fingerprint"] not in text.text.replace(":", "").lower()  # not the leaf's
    # no key, no leaf key, no state file by any other path
    secrets = [
        (_state(cworld) / name).read_bytes() for name in ("console-ca-key.pem", "console-key.pem")
    ]
    for path in (
        "/ca.key",
        "/ca.pem",
        "/console-ca-key.pem",
        "/console-key.pem",
        "/ca.crt/../console-ca-key.pem",
        "/static/../console-ca-key.pem",
        "/static/%2e%2e/console-ca-key.pem",
        "/ca.crt.key",
        "/ca.txt?path=console-ca-key.pem",
    ):
        answer = anonymous.get(path)
        assert b"PRIVATE KEY" not in answer.content, path
        assert all(secret not in answer.content for secret in secrets), path
        assert answer.status_code != 200 or answer.content in (reply.content, text.content), path
    assert anonymous.post("/ca.crt").status_code == 405
    assert anonymous.get("/api/pending").status_code == 401  # fetching it signed nothing in
    # another host name (DNS rebinding) gets nothing, the authority included
    assert anonymous.get("/ca.crt", headers={"Host": "evil.example"}).status_code == 421
    # the command line offers it: --ca draws its QR code and prints its fingerprint
    out = cworld.daemon.ctl("console-code", "--ca").stdout
    assert info["ca_url"] in out and spaced_fingerprint(info["ca_fingerprint"]) in out
    assert "\u2588" in out or "\u2580" in out  # the terminal QR code's blocks


def test_a_restart_keeps_the_authority_and_a_new_address_reissues_only_the_leaf(
    cworld,  # noqa: F811
) -> None:
    before = console_code(cworld)
    cworld.daemon.stop()
    cworld.daemon.start()
    again = console_code(cworld)
    assert again["ca_fingerprint"] == before["ca_fingerprint"]
    assert again["fingerprint"] == before["fingerprint"]  # nothing changed: nothing reissued
    # the console moves to another address: a new leaf naming it, the same authority
    config = cworld.daemon.config_path
    config.write_text(config.read_text().replace("127.0.0.1:", "127.0.0.2:"))
    cworld.daemon.stop()
    cworld.daemon.start()
    moved = console_code(cworld)
    assert moved["url"].startswith("https://127.0.0.2:")
    assert moved["ca_fingerprint"] == before["ca_fingerprint"]
    assert moved["fingerprint"] != before["fingerprint"]
    # and a client that trusts only the authority signs in there, host names checked
    client = signed_in(cworld)
    assert client.get("/api/requests-paused").json() == {"paused": False}
    port = int(moved["url"].rsplit(":", 1)[1].strip("/"))
    context = ssl.create_default_context(cafile=str(ca_path(cworld)))
    with (
        socket.create_connection(("127.0.0.2", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host_names()[0]) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None and hashlib.sha256(der).hexdigest() == moved["fingerprint"]


# ---- a real Chromium -------------------------------------------------------------------


def _nss_home(root: Path, ca_pem: Path | None) -> Path:
    """A HOME whose NSS database (what Chromium on Linux reads for the user's own
    authorities) trusts `ca_pem` for web sites, or holds nothing."""
    db = root / ".pki" / "nssdb"
    db.mkdir(parents=True)
    certutil = ["certutil", "-d", f"sql:{db}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
    if ca_pem is not None:
        subprocess.run(
            [*certutil, "-A", "-n", "doorbell", "-t", "C,,", "-i", str(ca_pem)],
            check=True,
            capture_output=True,
        )
    return root


@pytest.fixture
def chromium() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None or shutil.which("certutil") is None:
        pytest.skip("Debian's chromium and libnss3-tools are needed (make test installs them)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw.chromium


def _open(chromium: Any, home: Path, url: str, host: str, shot: Path | None = None) -> Any:
    """Opens `url` as a phone would (390×844, the certificate checked, `host` resolved
    to the loopback address); returns the page's text, or raises Playwright's Error."""
    browser = chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", f"--host-resolver-rules=MAP {host} 127.0.0.1"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    try:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.goto(url, timeout=30_000)
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
        return page.inner_text("body")
    finally:
        browser.close()


def test_chromium_trusting_the_authority_opens_the_console_without_a_warning(
    cworld,  # noqa: F811
    chromium: Any,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import Error

    info = console_code(cworld)
    host = host_names()[0]
    port = int(info["url"].rsplit(":", 1)[1].strip("/"))
    url = f"https://{host}:{port}/"
    # a phone that has not installed the authority: the warning (the test can fail)
    with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
        _open(chromium, _nss_home(tmp_path / "bare", None), url, host)
    # once installed: the sign-in page, no interstitial
    trusted = _nss_home(tmp_path / "trusted", ca_path(cworld))
    shot = tmp_path / "sign-in-390x844.png"
    body = _open(chromium, trusted, url, host, shot)
    assert "Sign-in code" in body and "not private" not in body
    assert shot.stat().st_size > 0
    # a certificate the authority signed for another name is refused all the same
    # (Chromium reports the name constraint violation as ERR_CERT_INVALID) ...
    forged = _serve_forged(_state(cworld), tmp_path, "bank.example")
    try:
        with pytest.raises(Error, match="ERR_CERT_INVALID"):
            _open(chromium, trusted, f"https://bank.example:{forged.port}/", "bank.example")
    finally:
        forged.stop()
    # ... while the same forgery for the device's own name passes: the name is why
    fair = _serve_forged(_state(cworld), tmp_path, host)
    try:
        assert "forged" in _open(chromium, trusted, f"https://{host}:{fair.port}/", host)
    finally:
        fair.stop()


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"forged")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Forged:
    def __init__(self, server: http.server.HTTPServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _serve_forged(state: Path, tmp: Path, name: str) -> _Forged:
    """An HTTPS server whose certificate the device's authority signed for `name`: what
    a thief of the authority's key would try on the owner's phone."""
    ca = x509.load_pem_x509_certificate((state / "console-ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((state / "console-ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain, key_file = tmp / f"forged-{name}.pem", tmp / f"forged-{name}.key"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = http.server.HTTPServer(("127.0.0.1", 0), _Page)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return _Forged(server)
