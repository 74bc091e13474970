"""doorbellctl as a person uses it: the commands that need no daemon, and clear errors
for everything that goes wrong."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import av
import pytest

from cloud.loopback import DeviceSetup
from device.cli import _print_list, render_shares, starts_in
from device.identity import load_device_identity
from foundation.times import format_time, parse_time
from foundation.wire import read_capture_ms
from recorder.buffer import BufferLock


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return DeviceSetup(root=tmp_path / "device", broker_url="mqtt://127.0.0.1:1").write()


def files_under(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in root.rglob("*")} if root.exists() else {}


def test_status_without_daemon_reads_keys_and_buffer_and_changes_nothing(config: Path) -> None:
    state = config.parent / "var"
    before_keys = ctl(config, "status", "--json")
    assert before_keys.returncode == 1 and "start the daemon once" in before_keys.stderr
    assert not (state / "state" / "keys").exists()  # a CLI run as root made no key files

    identity = load_device_identity(state / "state", "porch-cam-01")  # the daemon's 1st start
    assert ctl(config, "record", "--seconds", "2", "--fast").returncode == 0
    files = files_under(state)
    result = ctl(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["device_id"] == "porch-cam-01" and status["daemon"] == "stopped"
    assert status["device_key"] == identity.signing.public_b64
    assert status["recipient"] == identity.recipient
    assert status["buffer_span"] is not None and status["buffer_bytes"] > 0
    assert files_under(state) == files, "status created or touched files"
    keys = list((state / "state" / "keys").iterdir())
    assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    human = ctl(config, "status").stdout
    assert "recording" in human and status["recipient"] in human


def test_pair_shows_a_qr_code_and_the_json(config: Path) -> None:
    load_device_identity(config.parent / "var" / "state", "porch-cam-01")
    result = ctl(config, "pair")
    assert result.returncode == 0, result.stderr
    assert "█" in result.stdout or "▀" in result.stdout
    payload = result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1]
    assert set(json.loads(payload)) == {"device_id", "device_key", "recipient"}


def test_owner_keygen_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "owner"
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "owner", "keygen", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "owner.keys" in result.stdout and "age1" in result.stdout
    assert "AGE-SECRET-KEY" not in result.stdout and "PRIVATE KEY" not in result.stdout
    for name in ("owner-signing.pem", "owner-age.txt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    before = (out / "owner-signing.pem").read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "device.cli", "owner", "keygen", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "refusing to overwrite a key" in again.stderr
    assert (out / "owner-signing.pem").read_bytes() == before


def test_record_then_clip_round_trip_and_the_errors(config: Path, tmp_path: Path) -> None:
    load_device_identity(config.parent / "var" / "state", "porch-cam-01")
    recorded = ctl(config, "record", "--seconds", "3", "--fast")
    assert recorded.returncode == 0, recorded.stderr
    status = json.loads(ctl(config, "status", "--json").stdout)
    span = status["buffer_span"]
    start, end = parse_time(span["start"]), parse_time(span["end"])
    out = tmp_path / "clip.mp4"
    middle = ctl(
        config, "clip", "--start", format_time(start + 500), "--end", format_time(end - 500),
        "--out", str(out),
    )  # fmt: skip
    assert middle.returncode == 0, middle.stderr
    with av.open(str(out)) as clip:
        stamps = [read_capture_ms(f.to_ndarray(format="rgb24")) for f in clip.decode(video=0)]
    assert stamps and start + 500 <= stamps[0] and stamps[-1] <= end - 500

    empty = tmp_path / "nothing.mp4"
    none = ctl(
        config, "clip", "--start", format_time(end + 60_000), "--end", format_time(end + 70_000),
        "--out", str(empty),
    )  # fmt: skip
    assert none.returncode == 1 and "footage" in none.stderr and not empty.exists()
    backwards = ctl(
        config, "clip", "--start", span["end"], "--end", span["start"], "--out", str(empty)
    )
    # a reversed window and a bad time are usage errors: one line, exit code 2
    assert backwards.returncode == 2 and not empty.exists()
    assert backwards.stderr == "doorbellctl: clip: --start is after --end\n"
    bad_time = ctl(config, "clip", "--start", "yesterday", "--end", span["end"], "--out", "x")
    assert bad_time.returncode == 2 and "RFC 3339" in bad_time.stderr

    lock = BufferLock(config.parent / "var" / "buffer").acquire()
    try:
        refused = ctl(config, "record", "--seconds", "1", "--fast")
    finally:
        lock.release()
    assert refused.returncode == 1 and "another recorder" in refused.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["clip", "--out", "never.mp4"],
        ["approve", "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b"],
    ],
)
def test_start_after_end_is_a_usage_error_not_a_traceback(
    config: Path, tmp_path: Path, command: list[str]
) -> None:
    # the installed console script, as a person runs it
    doorbellctl = Path(sys.executable).parent / "doorbellctl"
    result = subprocess.run(
        [str(doorbellctl), "--config", str(config), *command,
         "--start", "2026-11-28T10:00:10Z", "--end", "2026-11-28T10:00:00Z"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"{command[0]}: --start is after --end" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "never.mp4").exists()
    assert result.stdout == ""


def test_daemon_commands_without_a_daemon_say_so(config: Path) -> None:
    for args in (("pending",), ("approve", "x"), ("deny", "x"), ("shares",)):
        result = ctl(config, *args)
        assert result.returncode == 3 and "not running" in result.stderr, args
        assert "Traceback" not in result.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: x, location: {lat: 100, lon: 0}}\ncamera: {source: webcam}\n")
    result = ctl(bad, "status")
    assert result.returncode == 2
    assert "device.location.lat" in result.stderr and "camera.source" in result.stderr
    assert "storage: required" in result.stderr
    daemon = subprocess.run(
        [sys.executable, "-m", "device.daemon", "--config", str(bad), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert daemon.returncode == 2 and "device.location.lat" in daemon.stderr


def test_render_shares_for_a_terminal():
    out = io.StringIO()
    render_shares(
        [
            {
                "rfa_id": "a1",
                "state": "uploading",
                "bytes_sent": 5 * 1024**2,
                "bytes_total": 10 * 1024**2,
                "manifest_sha256": "ff" * 32,
                "error": None,
            },
            {
                "rfa_id": "b2",
                "state": "failed",
                "bytes_sent": 0,
                "bytes_total": 0,
                "manifest_sha256": None,
                "error": "no footage",
            },
        ],
        out,
    )
    text = out.getvalue()
    assert "a1 uploading" in text and "50%" in text and "5.24M/10.5M" in text
    assert "starts at" not in text  # neither waits
    assert "b2 failed" in text and "error: no footage" in text
    empty = io.StringIO()
    render_shares([], empty)
    assert "no shares" in empty.getvalue()


def test_a_list_from_the_daemon_prints_as_json_a_sentence_or_a_line_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = [{"id": "a"}, {"id": "b"}]

    def show(items: list, as_json: bool) -> str:  # type: ignore[type-arg]
        assert _print_list(items, as_json=as_json, empty="None.", line=lambda i: i["id"]) == 0
        return capsys.readouterr().out

    assert json.loads(show(items, True)) == items
    assert show([], True) == "[]\n"
    assert show([], False) == "None.\n"
    assert show(items, False) == "a\nb\n"


def test_a_waiting_anonymous_share_says_when_its_upload_starts():
    assert starts_in("2026-11-28T13:43:00Z", parse_time("2026-11-28T13:00:00Z")) == (
        "upload starts at 2026-11-28T13:43:00Z (in 43 min; anonymous shares wait)"
    )
    out = io.StringIO()
    entry = {"rfa_id": "c3", "state": "queued", "bytes_sent": 0, "bytes_total": 2048,
             "manifest_sha256": "ee" * 32, "error": None,
             "starts_at": "2999-01-01T00:00:00Z"}  # fmt: skip
    render_shares([entry], out)
    assert "c3 queued" in out.getvalue()
    assert "upload starts at 2999-01-01T00:00:00Z (in " in out.getvalue()
    assert "\x1b" not in starts_in("\x1b[31mX", 0)  # a bad value is shown escaped
