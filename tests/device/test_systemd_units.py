"""Checks of the files in systemd/ and of the broker ACL in docs/: the service unit's
sandbox rating and syntax, the sysusers.d and tmpfiles.d files (applied inside a
temporary root, never to this host), the syntax of the Raspberry Pi install and
uninstall scripts, and docs/mosquitto-acl.example enforced by a real Mosquitto."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mosquitto import MOSQUITTO, MosquittoBroker

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "doorbell.service"
SYSUSERS = SYSTEMD_DIR / "doorbell.sysusers"
TMPFILES = SYSTEMD_DIR / "doorbell.tmpfiles"
SCRIPTS = [SYSTEMD_DIR / "install-pi.sh", SYSTEMD_DIR / "uninstall-pi.sh"]

MAX_EXPOSURE = 2.0
TIMEOUT = 60


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed on this machine (it ships with systemd)")
    return path


def _run(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    with open(stdin or os.devnull, encoding="utf-8") as stream:
        return subprocess.run(
            args, stdin=stream, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )


def _directives(unit_text: str) -> list[tuple[str, str]]:
    """(key, value) of every setting line, comments and section headers skipped."""
    pairs = []
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no overall exposure level in:\n{output}"
    return float(match.group(1))


# --- the unit's content (no tools needed) -----------------------------------------------


def test_devices_stay_visible_through_a_closed_device_policy() -> None:
    settings = _directives(UNIT.read_text(encoding="utf-8"))
    values = {key: [v for k, v in settings if k == key] for key, _ in settings}
    # PrivateDevices=yes would hide /dev/video*, /dev/media*, /dev/dma_heap and gpiochip.
    assert all(
        v.lower() not in {"yes", "true", "on", "1"} for v in values.get("PrivateDevices", [])
    )
    assert values["DevicePolicy"] == ["closed"]
    allowed = set(values["DeviceAllow"])
    for device_class in ("video4linux", "media", "dma_heap", "gpiochip"):
        assert f"char-{device_class} rw" in allowed


def test_unit_runs_unprivileged_with_watchdog_and_its_own_directories() -> None:
    settings = dict(_directives(UNIT.read_text(encoding="utf-8")))
    assert settings["User"] == "doorbell"
    assert settings["Group"] == "doorbell"
    assert set(settings["SupplementaryGroups"].split()) == {"video", "gpio"}
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"]
    assert settings["Restart"] == "on-failure"
    assert settings["StateDirectory"] == "doorbell"
    assert settings["RuntimeDirectory"] == "doorbell"
    assert settings["ConfigurationDirectory"] == "doorbell"
    assert settings["ExecStart"].split()[1:] == ["--config", "/etc/doorbell/doorbell.yaml"]


def test_open_files_are_limited_with_room_for_the_console_cap() -> None:
    from device.console.listener import MAX_CONNECTIONS

    settings = dict(_directives(UNIT.read_text(encoding="utf-8")))
    soft, _, hard = settings["LimitNOFILE"].partition(":")
    assert int(soft) >= 1024 and int(hard or soft) == int(soft)
    # the console's connections can take only a fraction of the limit
    assert int(soft) >= MAX_CONNECTIONS * 4


# --- systemd-analyze ----------------------------------------------------------------------


def test_security_rating_is_at_most_two() -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    if "--offline" in output and "unrecognized option" in output:
        pytest.skip("this systemd-analyze predates --offline (systemd < 250)")
    exposure = _exposure(output)
    assert exposure <= MAX_EXPOSURE, output


def test_security_check_notices_a_weakened_unit(tmp_path: Path) -> None:
    # The rating parser above must be able to fail: a unit without the sandbox rates high.
    analyze = _tool("systemd-analyze")
    weak = tmp_path / "doorbell.service"
    weak.write_text(
        "[Service]\nType=notify\nExecStart=/opt/doorbell/bin/doorbelld\n", encoding="utf-8"
    )
    result = _run(analyze, "security", "--offline=true", "--no-pager", str(weak))
    if "unrecognized option" in result.stderr:
        pytest.skip("this systemd-analyze predates --offline (systemd < 250)")
    assert _exposure(result.stdout + result.stderr) > MAX_EXPOSURE


def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every key and value. It also insists that the
    ExecStart binary exists, so it runs on a copy pointed at a stand-in executable."""
    analyze = _tool("systemd-analyze")
    standin = tmp_path / "doorbelld"
    standin.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    standin.chmod(standin.stat().st_mode | stat.S_IXUSR)
    text = UNIT.read_text(encoding="utf-8")
    assert "/opt/doorbell/bin/doorbelld" in text
    copy = tmp_path / "doorbell.service"
    copy.write_text(text.replace("/opt/doorbell/bin/doorbelld", str(standin)), encoding="utf-8")
    result = _run(analyze, "verify", "--recursive-errors=no", "--man=no", str(copy))
    if "Failed to initialize manager" in result.stderr or "Failed to set up" in result.stderr:
        pytest.skip(f"systemd-analyze verify cannot run here: {result.stderr.strip()}")
    complaints = [line for line in result.stderr.splitlines() if copy.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_verify_catches_a_misspelt_key(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    bad = tmp_path / "doorbell.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nDeviceAlow=char-media rw\n", encoding="utf-8")
    result = _run(analyze, "verify", "--recursive-errors=no", "--man=no", str(bad))
    assert "DeviceAlow" in result.stderr


# --- sysusers.d and tmpfiles.d, applied inside a temporary root ------------------------


def _sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = _run(_tool("systemd-sysusers"), f"--root={root}", "-", stdin=SYSUSERS)
    assert result.returncode == 0, result.stderr
    return root


def test_sysusers_creates_the_service_user_and_the_gpio_group(tmp_path: Path) -> None:
    root = _sysroot(tmp_path)
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text(encoding="utf-8").splitlines()
    }
    groups = {
        line.split(":")[0] for line in (root / "etc/group").read_text(encoding="utf-8").splitlines()
    }
    assert {"doorbell", "video", "gpio"} <= groups
    user = passwd["doorbell"]
    assert int(user[2]) < 1000, "a system user"
    assert user[5] == "/var/lib/doorbell"
    assert user[6].endswith("nologin")


def test_sysusers_rejects_a_broken_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("u bad user name!!\n", encoding="utf-8")
    (tmp_path / "root/etc").mkdir(parents=True)
    result = _run(_tool("systemd-sysusers"), f"--root={tmp_path / 'root'}", "-", stdin=broken)
    assert result.returncode != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles --create must chown; needs root")
def test_tmpfiles_makes_config_readable_to_the_service_group_only(tmp_path: Path) -> None:
    root = _sysroot(tmp_path)
    (root / "etc/doorbell").mkdir()
    config = root / "etc/doorbell/doorbell.yaml"
    config.write_text("device: {}\n", encoding="utf-8")
    config.chmod(0o644)
    tmpfiles = _tool("systemd-tmpfiles")
    result = _run(tmpfiles, f"--root={root}", "--create", "-", stdin=TMPFILES)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    gid = next(
        int(line.split(":")[2])
        for line in (root / "etc/group").read_text(encoding="utf-8").splitlines()
        if line.startswith("doorbell:")
    )
    etc = (root / "etc/doorbell").stat()
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid) == (0o750, 0, gid)
    conf = config.stat()
    assert (stat.S_IMODE(conf.st_mode), conf.st_uid, conf.st_gid) == (0o640, 0, gid)
    state = (root / "var/lib/doorbell").stat()
    assert stat.S_IMODE(state.st_mode) == 0o700
    assert state.st_gid == gid


# --- install scripts ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_strict(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    result = _run(_tool("bash"), "-n", str(script))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = _run(shellcheck, "--severity=warning", str(script))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_help_runs_without_touching_the_host(script: Path) -> None:
    result = _run(_tool("bash"), str(script), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_refuses_an_unknown_option(script: Path) -> None:
    result = _run(_tool("bash"), str(script), "--no-such-option")
    assert result.returncode == 2
    assert "--no-such-option" in result.stderr


# --- docs/mosquitto-acl.example against a real Mosquitto ----------------------------------

ACL_EXAMPLE = SYSTEMD_DIR.parent / "docs" / "mosquitto-acl.example"
USERS = ("porch-cam-01", "garage-cam-07", "owner-porch-cam-01", "agency-sfpd")
NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10
CONNECT_WAIT = 10.0


class _Broker(MosquittoBroker):
    """The shared test broker, configured as docs/security.md tells an operator to:
    passwords, no anonymous clients, client id forced to the user name, the ACL example."""

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passwords = self.root / "passwords"
        passwords.write_text("", encoding="utf-8")
        for user in USERS:
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwords), user, f"pw-{user}"],
                check=True,
                capture_output=True,
                timeout=TIMEOUT,
            )
        self.config_path.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    f"user {getpass.getuser()}",
                    f"listener {self.port} {self.host}",
                    "allow_anonymous false",
                    f"password_file {passwords}",
                    f"acl_file {ACL_EXAMPLE}",
                    "use_username_as_clientid true",
                    "persistence false",
                    "log_dest stderr",
                    "log_type error",
                    "",
                ]
            ),
            encoding="utf-8",
        )


class _Session:
    """A paho MQTT 5 client that reports the broker's reason codes synchronously."""

    def __init__(self, broker: MosquittoBroker, user: str | None, *, client_id: str = "x"):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.connack: int | None = None
        self.acks: dict[int, int] = {}
        self.received: list[tuple[str, bytes]] = []
        self._event = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        if user is not None:
            password = f"pw-{user}" if user in USERS else "wrong"
            self.client.username_pw_set(user.removesuffix("!wrong"), password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None)

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self._event:
            assert self._event.wait_for(ready, timeout=CONNECT_WAIT), "no answer from broker"

    def _notify(self) -> None:
        with self._event:
            self._event.notify_all()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: Any, _p: object) -> None:
        self.connack = int(rc.value)
        self._notify()

    def _on_subscribe(self, _c: object, _u: object, mid: int, codes: Any, _p: object) -> None:
        self.acks[mid] = int(codes[0].value)
        self._notify()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: Any, _p: object) -> None:
        self.acks[mid] = int(rc.value)
        self._notify()

    def _on_message(self, _c: object, _u: object, message: Any) -> None:
        self.received.append((message.topic, bytes(message.payload)))
        self._notify()

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        self._wait(lambda: mid in self.acks)
        return self.acks[mid]

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """The PUBACK reason code; 0 for success ("no matching subscribers" included)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        self._wait(lambda: mid in self.acks)
        return 0 if self.acks[mid] == NO_MATCHING_SUBSCRIBERS else self.acks[mid]

    def wait_for(self, message: tuple[str, bytes]) -> None:
        self._wait(lambda: message in self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[_Broker]:
    if not Path(MOSQUITTO).exists() or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto and mosquitto_passwd are not installed")
    broker = _Broker(tmp_path / "broker")
    broker.root.mkdir(parents=True)
    broker.start()
    sessions: list[_Session] = []
    broker.sessions = sessions  # type: ignore[attr-defined]
    try:
        yield broker
    finally:
        for session in sessions:
            session.close()
        broker.stop()


def _session(broker: _Broker, user: str | None, **kwargs: str) -> _Session:
    session = _Session(broker, user, **kwargs)
    broker.sessions.append(session)  # type: ignore[attr-defined]
    return session


def _received_until_sentinel(reader: _Session, sentinel: _Session) -> set[tuple[str, bytes]]:
    """Everything `reader` got up to a final message on its own cell. Mosquitto accepts
    any SUBSCRIBE and applies read rights when it delivers, so a forbidden topic shows
    up as a message that never arrives; the broker handles publishes one at a time and
    delivers to a session in order, so once the sentinel (published after every other
    message was acknowledged) is in, nothing earlier is still on its way."""
    assert sentinel.publish("rfa/v1/cell/9q8yy", b"sentinel") == 0
    reader.wait_for(("rfa/v1/cell/9q8yy", b"sentinel"))
    return set(reader.received)


def test_acl_confines_a_device_to_its_topics_and_its_cell(acl_broker: _Broker) -> None:
    device = _session(acl_broker, "porch-cam-01")
    other_device = _session(acl_broker, "garage-cam-07")
    owner = _session(acl_broker, "owner-porch-cam-01")
    agency = _session(acl_broker, "agency-sfpd")
    for topic in ("rfa/v1/cell/#", "devices/#"):
        device.subscribe(topic)
    assert agency.publish("rfa/v1/cell/9q8yz", b"other cell") == 0
    assert other_device.publish("devices/garage-cam-07/owner/pending", b"theirs") == 0
    assert other_device.publish("devices/garage-cam-07/status", b"theirs") == 0
    assert owner.publish("devices/porch-cam-01/owner/decision", b"decision") == 0
    assert _received_until_sentinel(device, agency) == {
        ("devices/porch-cam-01/owner/decision", b"decision"),
        ("rfa/v1/cell/9q8yy", b"sentinel"),
    }
    assert device.publish("devices/porch-cam-01/owner/pending") == 0
    assert device.publish("devices/porch-cam-01/owner/shares") == 0
    assert device.publish("devices/porch-cam-01/status") == 0
    assert device.publish("devices/garage-cam-07/owner/pending") == NOT_AUTHORIZED
    assert device.publish("devices/porch-cam-01/owner/decision") == NOT_AUTHORIZED
    assert device.publish("rfa/v1/cell/9q8yy") == NOT_AUTHORIZED


def test_acl_a_device_cannot_borrow_another_devices_client_id(acl_broker: _Broker) -> None:
    # use_username_as_clientid replaces the claimed id, so %c cannot be spoofed.
    device = _session(acl_broker, "porch-cam-01", client_id="garage-cam-07")
    assert device.connack == 0
    assert device.publish("devices/garage-cam-07/status") == NOT_AUTHORIZED
    assert device.publish("devices/garage-cam-07/owner/pending") == NOT_AUTHORIZED
    assert device.publish("devices/porch-cam-01/status") == 0


def test_acl_owner_app_and_agency_rights(acl_broker: _Broker) -> None:
    device = _session(acl_broker, "porch-cam-01")
    other_device = _session(acl_broker, "garage-cam-07")
    owner = _session(acl_broker, "owner-porch-cam-01")
    agency = _session(acl_broker, "agency-sfpd")
    owner.subscribe("devices/#")
    owner.subscribe("rfa/v1/cell/#")
    agency.subscribe("devices/#")
    assert device.publish("devices/porch-cam-01/owner/pending", b"mine") == 0
    assert device.publish("devices/porch-cam-01/owner/shares", b"mine") == 0
    assert other_device.publish("devices/garage-cam-07/owner/pending", b"theirs") == 0
    assert owner.publish("devices/porch-cam-01/owner/decision") == 0
    assert owner.publish("devices/porch-cam-01/owner/pending") == NOT_AUTHORIZED
    assert owner.publish("devices/garage-cam-07/owner/decision") == NOT_AUTHORIZED
    assert owner.publish("rfa/v1/cell/9q8yy") == NOT_AUTHORIZED
    # The owner's app may not read requests either: the sentinel never reaches it, so
    # its reception is checked on the device instead.
    device.subscribe("rfa/v1/cell/9q8yy")
    _received_until_sentinel(device, agency)
    assert set(owner.received) == {
        ("devices/porch-cam-01/owner/pending", b"mine"),
        ("devices/porch-cam-01/owner/shares", b"mine"),
    }
    assert agency.received == []


def test_broker_refuses_anonymous_and_wrong_passwords(acl_broker: _Broker) -> None:
    assert _session(acl_broker, None).connack != 0
    assert _session(acl_broker, "porch-cam-01!wrong").connack != 0
