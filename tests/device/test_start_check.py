"""`doorbelld --check-config` keeps its promise: whatever the daemon would refuse at
start, the check reports (the same function runs in both), and the daemon refuses it
before it makes a file or a connection. Warnings, not failures, where nothing could
ever be accepted."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud.loopback import DeviceSetup, free_port, script
from device.preflight import check_start
from firmware_config import load_config
from foundation.cli import ExitCode
from sync.keys import SigningKey


def setup(tmp_path: Path, **mqtt: Any) -> DeviceSetup:
    broker = f"mqtt://127.0.0.1:{free_port()}"
    agency_key = SigningKey.generate().public_b64
    owner_key = SigningKey.generate().public_b64
    return DeviceSetup(
        root=tmp_path / "device",
        broker_url=broker,
        agencies=[("sfpd", agency_key)],
        owner_keys=[owner_key],
        owner_recipients=["age1scjrymdg0guqdp84lyefl57acdks04lumhhc2kap0zdsxx3kxcvq5cscqt"],
        extra={"mqtt": mqtt} if mqtt else {},
    )


def doorbelld(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script("doorbelld"), f"--config={config}", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


BROKEN = [
    (
        {"username": "cam", "password_file": "/nonexistent/pw"},
        "mqtt.password_file",
        "does not exist",
    ),
    ({"ca_file": "CA"}, "mqtt.ca_file", "needs an mqtts:// URL"),
    ({"password_file": "PW"}, "mqtt.password_file", "needs mqtt.username"),
]


@pytest.mark.parametrize(("mqtt", "key", "says"), BROKEN)
def test_the_check_reports_what_the_daemon_refuses(
    tmp_path: Path, mqtt: dict[str, str], key: str, says: str
) -> None:
    for name in ("CA", "PW"):  # files that do exist, so only the named rule is broken
        (tmp_path / name).write_text("x\n")
    mqtt = {k: str(tmp_path / v) if v in ("CA", "PW") else v for k, v in mqtt.items()}
    config = setup(tmp_path, **mqtt).write()
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == ExitCode.USAGE, checked.stdout
    assert f"{key}: " in checked.stderr and says in checked.stderr
    assert "OK" not in checked.stdout
    started = doorbelld(config)  # the daemon refuses the same, before touching anything
    assert started.returncode == ExitCode.USAGE and says in started.stderr
    assert not (tmp_path / "device" / "var").exists()


def test_a_control_socket_in_a_missing_folder_is_refused_and_never_created(
    tmp_path: Path,
) -> None:
    socket = tmp_path / "no-such-dir" / "control.sock"
    made = setup(tmp_path)
    made.extra["control"] = {"socket": str(socket)}
    config = made.write()
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == ExitCode.USAGE and "control.socket: " in checked.stderr
    started = doorbelld(config)
    assert started.returncode == ExitCode.USAGE
    assert not socket.parent.exists()
    assert not (tmp_path / "device" / "var").exists()


def test_nothing_acceptable_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    config = DeviceSetup(root=tmp_path / "device", broker_url="mqtt://127.0.0.1:1").write()
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == 0, checked.stderr
    assert "OK (with warnings)" in checked.stdout
    for key in ("rfa.trusted_agencies", "owner.keys", "owner.recipients"):
        assert f"warning: {key}: empty" in checked.stderr
    complete = doorbelld(setup(tmp_path / "complete").write(), "--check-config")
    assert complete.returncode == 0 and complete.stderr == ""
    assert complete.stdout.strip().endswith(": OK")


def test_the_check_passes_a_good_tls_setup_and_lists_every_problem_at_once(
    tmp_path: Path,
) -> None:
    for name in ("ca.pem", "pw"):
        (tmp_path / name).write_text("x\n")
    good = setup(tmp_path / "good", ca_file=str(tmp_path / "ca.pem"))
    good_config = load_config(good.write())
    assert check_start(good_config).problems  # mqtt:// with a CA: refused...
    tls = DeviceSetup(**{**good.__dict__, "broker_url": "mqtts://broker.example:8883"})
    assert check_start(load_config(tls.write())).problems == ()  # ...mqtts:// is fine
    many = setup(
        tmp_path / "many", ca_file="/nonexistent/ca.pem", password_file=str(tmp_path / "pw")
    )
    problems = check_start(load_config(many.write())).problems
    assert len(problems) == 3, problems  # ca_file needs mqtts, unreadable; password alone
