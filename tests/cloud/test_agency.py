"""The agency tool: keys, input checks, and publishing an RFA to every covering cell of a
real Mosquitto broker with the message expiry set."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pyrage
import pytest

from cloud import agency
from cloud.agency import RfaInputError, RfaSpec, build_rfa, expiry_seconds, rfa_problems
from cloud.broker import BrokerError, BrokerUrl, Outgoing, publish_messages
from foundation.arguments import parse_duration_ms
from foundation.errors import InvalidValueError
from foundation.times import Window, format_time, parse_time
from sync import geo
from sync.envelope import open_envelope
from sync.keys import (
    SigningKey,
    b64url_decode,
    load_identity,
    load_signing_key,
    public_key_from_b64,
)
from tests.cloud.mqtt_probe import Probe
from tests.fixtures.mosquitto import MosquittoBroker, free_port

NOW = parse_time("2026-11-28T13:00:00Z")
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def spec(**changes: object) -> RfaSpec:
    values: dict[str, object] = {
        "agency_id": "sfpd",
        "agency_name": "San Francisco Police Department",
        "case_number": "2026-004512",
        "investigator_name": "Det. A. Rivera",
        "email": "a.rivera@example.gov",
        "description": "Package theft from porches on Elm St.",
        "lat": 37.7510,
        "lon": -122.4296,
        "radius_m": 800.0,
        "window": Window(NOW - 3 * 3_600_000, NOW - 3_600_000),
        "expires_at_ms": NOW + 7 * 86_400_000,
        "recipient": RECIPIENT,
        "upload_url": "https://uploads.example.gov/files/",
    }
    values.update(changes)
    return RfaSpec(**values)  # type: ignore[arg-type]


def test_a_valid_rfa_is_signed_and_covers_its_circle() -> None:
    key = SigningKey.generate()
    rfa = build_rfa(spec(), key, now_ms=NOW)
    verified = open_envelope(rfa.envelope, {key.kid: key.public})
    payload = verified.payload
    assert payload["id"] == rfa.id and payload["type"] == "rfa"
    assert payload["issued_at"] == "2026-11-28T13:00:00Z"
    assert payload["investigator"] == {"name": "Det. A. Rivera", "email": "a.rivera@example.gov"}
    assert set(rfa.cells) == geo.cells_covering(37.7510, -122.4296, 800.0)
    assert len(rfa.cells) > 1


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"radius_m": 806.0}, "radius_too_large"),
        ({"radius_m": 149.0}, "radius_too_small"),
        ({"radius_m": 0.0}, "radius_too_small"),
        ({"window": Window(NOW - 13 * 3_600_000 - 1, NOW - 3_600_000)}, "window_too_long"),
        ({"window": Window(NOW - 3_600_000, NOW + 1)}, "window_in_future"),
        ({"window": Window(NOW - 1000, NOW - 1000)}, "bad_window"),
        ({"expires_at_ms": NOW}, "expired"),
        ({"expires_at_ms": NOW + 15 * 86_400_000}, "lifetime_too_long"),
        ({"email": None}, "missing_contact"),
        ({"case_number": ""}, "missing_case_number"),
        ({"case_number": "x" * 65}, "bad_case_number"),
        ({"case_number": 'say "hi"'}, "bad_case_number"),
        ({"case_number": "bad\nline"}, "bad_characters"),
        ({"description": "d" * 1001}, "oversized_field"),
        ({"description": "\u202eevil"}, "bad_characters"),
        ({"agency_name": "n" * 129}, "oversized_field"),
        ({"agency_id": "SFPD"}, "bad_agency_id"),
        ({"lat": 91.0}, "bad_area"),
        ({"lon": float("nan")}, "JSON"),
        ({"recipient": "age1nope"}, "bad_recipient"),
        ({"upload_url": "http://uploads.example.gov/"}, "unsafe_upload_url"),
        ({"upload_url": "https://10.0.0.5/files/"}, "unsafe_upload_url"),
    ],
)
def test_inputs_a_device_would_refuse_are_refused_first(
    changes: dict[str, object], fragment: str
) -> None:
    problems = rfa_problems(spec(**changes), now_ms=NOW)
    assert any(fragment in problem for problem in problems), problems
    with pytest.raises(RfaInputError):
        build_rfa(spec(**changes), SigningKey.generate(), now_ms=NOW)


def test_plain_http_loopback_only_when_asked() -> None:
    local = spec(upload_url="http://127.0.0.1:8080/files/")
    assert rfa_problems(local, now_ms=NOW)
    assert rfa_problems(local, now_ms=NOW, allow_plain_http_loopback=True) == []


def test_expiry_seconds_round_up() -> None:
    assert expiry_seconds(NOW + 1500, NOW) == 2
    assert expiry_seconds(NOW + 7 * 86_400_000, NOW) == 7 * 86_400
    assert parse_duration_ms("7d") == 7 * 86_400_000
    with pytest.raises(InvalidValueError):
        parse_duration_ms("7 days")


def test_keygen_writes_private_files_0600_and_prints_public_halves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert agency.main(["keygen", "--out", str(out), "--agency-id", "sfpd"]) == 0
    printed = capsys.readouterr().out
    public = json.loads((out / agency.PUBLIC_FILE).read_text())
    for name in (agency.SIGNING_FILE, agency.IDENTITY_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    public_key_from_b64(public["public_key"])
    assert public["public_key"] in printed and public["recipient"] in printed
    assert "agency_id: sfpd" in printed
    assert "PRIVATE" not in printed and "AGE-SECRET-KEY" not in printed
    # A second keygen must not destroy the keys.
    assert agency.main(["keygen", "--out", str(out)]) == 1


def _rfa_args(keys: Path, now: int, *extra: str) -> list[str]:
    return [
        "rfa", "--key", str(keys / agency.SIGNING_FILE), "--agency-name", "SFPD",
        "--case", "2026-1", "--investigator-name", "Det. Rivera", "--phone", "+1 415 555 0100",
        "--description", "theft", "--lat", "37.7510", "--lon", "-122.4296", "--radius-m", "800",
        "--start", format_time(now - 7_200_000), "--end", format_time(now - 3_600_000),
        "--expires-in", "2d", "--upload-url", "https://uploads.example.gov/files/", *extra,
    ]  # fmt: skip


def test_rfa_publishes_to_every_covering_cell_with_message_expiry(
    tmp_path: Path, mosquitto: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    agency.main(["keygen", "--out", str(keys), "--agency-id", "sfpd"])
    capsys.readouterr()
    cells = geo.cells_covering(37.7510, -122.4296, 800.0)
    probe = Probe(mosquitto, "rfa/v1/cell/#")
    try:
        out_file = tmp_path / "rfa.json"
        code = agency.main(
            _rfa_args(keys, NOW, "--publish", mosquitto.url, "--out", str(out_file)), now_ms=NOW
        )
        assert code == 0
        messages = probe.wait_for(len(cells))
    finally:
        probe.close()
    printed = capsys.readouterr().out
    assert {m.topic for m in messages} == {f"rfa/v1/cell/{c}" for c in cells}
    assert len(messages) == len(cells)
    envelope = out_file.read_bytes()
    assert all(m.payload == envelope for m in messages)
    assert all(not m.retain for m in messages)
    # The broker counts down from 2 days; allow for the seconds this test took.
    assert all(
        m.expiry_s is not None and 2 * 86_400 - 60 <= m.expiry_s <= 2 * 86_400 for m in messages
    )
    payload = json.loads(json.loads(envelope)["payload"])
    assert payload["agency"]["id"] == "sfpd"  # remembered by keygen
    public = json.loads((keys / agency.PUBLIC_FILE).read_text())
    assert payload["recipient"] == public["recipient"]  # default: the keygen directory's
    assert f"id: {payload['id']}" in printed
    assert all(cell in printed for cell in cells)


def test_rfa_with_bad_inputs_names_the_device_rule_and_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    agency.main(["keygen", "--out", str(keys), "--agency-id", "sfpd"])
    args = _rfa_args(keys, NOW, "--out", str(tmp_path / "x.json"))
    args[args.index("--radius-m") + 1] = "900"
    args[args.index("--end") + 1] = format_time(NOW + 60_000)
    assert agency.main(args, now_ms=NOW) == 2
    err = capsys.readouterr().err
    # the device's own rules judge, in their order: the first broken rule is named
    assert "radius_too_large" in err
    assert not (tmp_path / "x.json").exists()
    args[args.index("--radius-m") + 1] = "800"
    assert agency.main(args, now_ms=NOW) == 2
    assert "window_in_future" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_publishing_to_an_unreachable_broker_fails_clearly() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(BrokerError, match="cannot reach the broker"):
        publish_messages(f"mqtt://127.0.0.1:{port}", [Outgoing("t", b"x")], timeout_s=3)


def test_broker_urls() -> None:
    assert BrokerUrl.parse("mqtt://localhost") == BrokerUrl("localhost", 1883)
    secure = BrokerUrl.parse("mqtts://u:p%40ss@broker.example:9000")
    assert (secure.port, secure.tls, secure.password) == (9000, True, "p@ss")
    assert "p@ss" not in secure.display()
    for bad in ("http://x", "mqtt://", "mqtt://h/path", "mqtt://h:99999"):
        with pytest.raises(BrokerError):
            BrokerUrl.parse(bad)


def test_stock_tools_read_the_agency_keys_and_signature(tmp_path: Path) -> None:
    """openssl verifies the RFA signature; the age CLI opens what is sealed to the agency."""
    keys = tmp_path / "keys"
    agency.generate_agency_keys(keys, agency_id="sfpd")
    key = load_signing_key(keys / agency.SIGNING_FILE)
    rfa = build_rfa(spec(), key, now_ms=NOW)
    doc = json.loads(rfa.envelope)
    (tmp_path / "payload.bin").write_bytes(doc["payload"].encode())
    (tmp_path / "sig.bin").write_bytes(b64url_decode(doc["sig"]))
    (tmp_path / "pub.pem").write_bytes(key.public_pem())
    verify = [
        "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
        "-rawin", "-in", str(tmp_path / "payload.bin"), "-sigfile", str(tmp_path / "sig.bin"),
    ]  # fmt: skip
    assert subprocess.run(verify, capture_output=True, timeout=30).returncode == 0
    (tmp_path / "payload.bin").write_bytes(doc["payload"].encode() + b" ")
    assert subprocess.run(verify, capture_output=True, timeout=30).returncode != 0

    recipient = load_identity(keys / agency.IDENTITY_FILE).to_public()
    (tmp_path / "secret.age").write_bytes(pyrage.encrypt(b"footage", [recipient]))
    opened = subprocess.run(
        ["age", "-d", "-i", str(keys / agency.IDENTITY_FILE), str(tmp_path / "secret.age")],
        capture_output=True,
        timeout=30,
    )
    assert opened.returncode == 0 and opened.stdout == b"footage"
