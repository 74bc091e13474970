"""mqtts:// against a real Mosquitto with TLS, client certificates and a password file:
the device connects with its CA file, certificate, key, username and password file, and
receives what an agency publishes; a wrong CA, a missing client certificate or a wrong
password keeps it out."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from cloud.loopback import MOSQUITTO, free_port
from sync.mqtt import Backoff, InboundMessage, MqttLink
from sync.settings import MqttSettings

TOPIC = "rfa/v1/cell/9q8yy"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_cert = _issue("other CA", other_key, _name("other CA"), other_key, ca=True)
    for role, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"{role}", key, ca_cert.subject, ca_key, server=server)
        (root / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(root / f"{role}.key", key)
        paths[role] = (root / f"{role}.pem", root / f"{role}.key")
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (root / "other-ca.pem").write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=root / "ca.pem",
        other_ca=root / "other-ca.pem",
        server_cert=paths["server"][0],
        server_key=paths["server"][1],
        client_cert=paths["client"][0],
        client_key=paths["client"][1],
    )


@dataclass
class TlsBroker:
    port: int
    pki: Pki
    password_file: Path  # the device's password, its only line


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    if not Path(MOSQUITTO).exists() or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto with mosquitto_passwd is not installed")
    pki = make_pki(tmp_path / "pki")
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "porch-cam-01", "s3cret-device"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), "agency", "s3cret-agency"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                "per_listener_settings false",
                # as root, mosquitto would switch to a user that cannot read tmp files
                f"user {getpass.getuser()}",
                "allow_anonymous false",
                f"password_file {passwords}",
                f"listener {port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
                "log_dest stderr",
                "",
            ]
        )
    )
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
    device_password = tmp_path / "device-password"
    device_password.write_text("s3cret-device\n")
    device_password.chmod(0o600)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "mosquitto.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield TlsBroker(port=port, pki=pki, password_file=device_password)
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def link_for(broker: TlsBroker, **changes: object) -> tuple[MqttLink, queue.Queue, threading.Event]:
    settings = dict(
        url=f"mqtts://localhost:{broker.port}",
        username="porch-cam-01",
        password_file=broker.password_file,
        ca_file=broker.pki.ca,
        cert_file=broker.pki.client_cert,
        key_file=broker.pki.client_key,
    )
    settings.update(changes)
    got: queue.Queue[InboundMessage] = queue.Queue()
    stop = threading.Event()

    def on_message(message: InboundMessage) -> None:
        got.put(message)
        message.ack()

    link = MqttLink(
        MqttSettings(**settings),  # type: ignore[arg-type]
        client_id="porch-cam-01",
        status_topic="devices/porch-cam-01/status",
        version="0.1.0",
        subscriptions=[TOPIC],
        on_message=on_message,
        stop=stop,
        backoff=Backoff(initial_s=0.1, cap_s=0.5),
    )
    return link, got, stop


def publish_as_agency(broker: TlsBroker, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="agency", protocol=paho.MQTTv5)
    client.tls_set(
        ca_certs=str(broker.pki.ca),
        certfile=str(broker.pki.client_cert),
        keyfile=str(broker.pki.client_key),
    )
    client.username_pw_set("agency", "s3cret-agency")
    client.connect("localhost", broker.port)
    client.loop_start()
    try:
        info = client.publish(TOPIC, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_device_connects_over_tls_with_certificate_and_password(tls_broker: TlsBroker) -> None:
    link, got, stop = link_for(tls_broker)
    link.start()
    try:
        assert link.wait_connected(10), "no TLS connection"
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            publish_as_agency(tls_broker, b"over tls")
            try:
                message = got.get(timeout=0.5)
            except queue.Empty:
                continue
        assert message is not None and message.payload == b"over tls"
    finally:
        stop.set()
        link.stop()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"ca_file": "OTHER_CA"}, id="server-not-signed-by-our-ca"),
        pytest.param({"cert_file": None, "key_file": None}, id="no-client-certificate"),
        pytest.param({"password_file": "WRONG"}, id="wrong-password"),
    ],
)
def test_device_stays_out_without_the_right_credentials(
    tls_broker: TlsBroker, tmp_path: Path, changes: dict[str, object]
) -> None:
    if changes.get("ca_file") == "OTHER_CA":
        changes = {"ca_file": tls_broker.pki.other_ca}
    if changes.get("password_file") == "WRONG":
        wrong = tmp_path / "wrong"
        wrong.write_text("guess\n")
        changes = {"password_file": wrong}
    link, _, stop = link_for(tls_broker, **changes)
    link.start()
    try:
        assert not link.wait_connected(3)
    finally:
        stop.set()
        link.stop()
