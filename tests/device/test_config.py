"""The config tree: defaults, every problem reported with its key path, sizes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from firmware_config import ConfigError, example_config_text, load_config, parse_config
from firmware_config.schema import parse_size
from foundation.errors import InvalidValueError
from sync.keys import SigningKey

MINIMAL = {
    "device": {"id": "porch-cam-01", "location": {"lat": 37.7749, "lon": -122.4194}},
    "camera": {"source": "synthetic"},
    "storage": {"dir": "/var/lib/doorbell"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def with_(**sections: object) -> dict:
    data = {key: dict(value) for key, value in MINIMAL.items()}
    data.update(sections)
    return data


def test_the_shipped_example_is_valid_and_documented() -> None:
    text = example_config_text()
    config = parse_config(yaml.safe_load(text))
    assert config.device.id == "porch-cam-01"
    assert config.storage.max_bytes == 8 * 1024**3
    assert "indoor" in text.lower()


def test_minimal_config_gets_sane_defaults() -> None:
    config = parse_config(MINIMAL)
    assert (config.camera.width, config.camera.height, config.camera.fps) == (1280, 720, 15)
    assert config.storage.segment_seconds == 4
    assert config.rfa.enabled is True and config.rfa.allow_plain_http_loopback is False
    assert config.owner.sync_seconds == 300 and config.owner.button_pin is None
    assert config.mqtt.receive_maximum == 16  # protocol.md §3 (1.2): at most 16
    assert config.mqtt.protocol == 5
    assert config.control.socket == Path("/run/doorbell/control.sock")
    assert config.buffer_dir != config.state_dir


@pytest.mark.parametrize("missing", ["device", "camera", "storage", "mqtt"])
def test_required_sections(missing: str) -> None:
    data = dict(MINIMAL)
    del data[missing]
    assert any(p.startswith(f"{missing}: required") for p in problems(data))


def test_all_problems_are_reported_at_once_with_paths_and_hints() -> None:
    found = problems(
        {
            "device": {"id": "porch cam", "locaton": {"lat": 1, "lon": 2}},
            "camera": {"source": "synthetc", "fps": 0},
            "storage": {"dir": "/x", "max_bytes": "8XB"},
            "mqtt": {"url": "http://broker"},
            "ownr": {},
        }
    )
    text = "\n".join(found)
    assert "ownr: unknown key (did you mean 'owner'?)" in text
    assert "device.locaton: unknown key (did you mean 'location'?)" in text
    assert "device.id:" in text
    assert "camera.source:" in text and "did you mean 'synthetic'" in text
    assert "camera.fps: must be between 1 and 60" in text
    assert "storage.max_bytes:" in text
    assert "mqtt.url:" in text
    assert len(found) >= 7


@pytest.mark.parametrize(
    ("section", "value", "path"),
    [
        ("device", {"id": "a", "location": {"lat": 91, "lon": 0}}, "device.location.lat"),
        ("device", {"id": "a", "location": {"lat": "1", "lon": 0}}, "device.location.lat"),
        ("device", {"id": "a", "location": {"lat": True, "lon": 0}}, "device.location.lat"),
        ("owner", {"sync_seconds": 0.1}, "owner.sync_seconds"),
        ("owner", {"keys": ["not-a-key"]}, "owner.keys"),
        ("owner", {"recipients": ["age1nope"]}, "owner.recipients"),
        ("rfa", {"enabled": "yes"}, "rfa.enabled"),
        (
            "rfa",
            {"trusted_agencies": [{"agency_id": "sfpd"}]},
            "rfa.trusted_agencies[0].public_key",
        ),
        ("mqtt", {"url": "mqtt://u:p@host"}, "mqtt.url"),
        ("mqtt", {"url": "mqtt://host", "receive_maximum": 17}, "mqtt.receive_maximum"),
        ("mqtt", {"url": "mqtt://host", "cert_file": "/c.pem"}, "mqtt.cert_file/key_file"),
        ("camera", {"source": "synthetic", "width": 641}, "camera.width/height"),
        ("share", {"chunk_bytes": "1KiB"}, "share.chunk_bytes"),
    ],
)
def test_bad_values_name_their_key(section: str, value: object, path: str) -> None:
    assert any(p.startswith(path) for p in problems(with_(**{section: value})))


def test_valid_keys_are_accepted() -> None:
    key = SigningKey.generate().public_b64
    from pyrage import x25519

    recipient = str(x25519.Identity.generate().to_public())
    config = parse_config(
        with_(
            owner={"keys": [key], "recipients": [recipient], "button_pin": 17},
            rfa={"trusted_agencies": [{"agency_id": "sfpd", "public_key": key}]},
            mqtt={"url": "mqtts://broker:8883", "protocol": "3.1.1"},
        )
    )
    assert config.owner.keys == (key,) and config.owner.button_pin == 17
    assert config.rfa.trusted_agencies[0].agency_id == "sfpd"
    assert config.mqtt.protocol == 4


@pytest.mark.parametrize(
    ("text", "size"),
    [("8GiB", 8 * 2**30), ("500MB", 500 * 10**6), (4096, 4096), ("1.5KiB", 1536), ("12 B", 12)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["8 parsecs", -1, True, "", None, 1.5])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(InvalidValueError):
        parse_size(bad)


def test_load_config_reports_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)


def test_relative_paths_are_read_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`storage: {dir: ./var}` means the folder beside doorbell.yaml, whichever directory
    a command runs in (the walkthrough's own config); absolute paths stay as written."""
    folder = tmp_path / "device"
    folder.mkdir()
    data = with_(
        storage={"dir": "./var"},
        control={"socket": "run/control.sock"},
        mqtt={"url": "mqtts://broker.example:8883", "ca_file": "../ca.pem"},
        console={"listen": "127.0.0.1:8443", "cert_file": "/etc/c.pem", "key_file": "k.pem"},
    )
    (folder / "doorbell.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for given in (folder / "doorbell.yaml", Path("../device/doorbell.yaml")):
        config = load_config(given)
        assert config.storage.dir == folder / "var"
        assert config.control.socket == folder / "run" / "control.sock"
        assert config.mqtt.ca_file is not None and config.mqtt.ca_file.resolve() == (
            tmp_path / "ca.pem"
        )
        assert config.console.cert_file == Path("/etc/c.pem")
        assert config.console.key_file == folder / "k.pem"
    monkeypatch.chdir(folder)  # the same file from its own folder: the same paths
    assert load_config(Path("doorbell.yaml")).storage.dir == folder / "var"


@pytest.mark.parametrize(
    ("section", "key", "needs"),
    [
        ("storage", "max_bytes", "16MiB"),
        ("share", "chunk_bytes", "64KiB"),
        ("share", "bandwidth_bytes_per_s", "1KiB"),
        ("storage", "segment_seconds", "between 1 and 60"),
        ("storage", "max_age_hours", "between"),
        ("mqtt", "keepalive", "between"),
        ("mqtt", "receive_maximum", "between 1 and 16"),
        ("share", "max_attempts", "between"),
        ("camera", "fps", "between"),
        ("owner", "sync_seconds", "between"),
        ("rfa", "decide_within_hours", "between"),
    ],
)
def test_zero_is_an_error_that_names_its_key_never_a_silent_default(
    section: str, key: str, needs: str
) -> None:
    data = with_(**{section: {**MINIMAL.get(section, {}), key: 0}})
    found = [p for p in problems(data) if p.startswith(f"{section}.{key}:")]
    assert found and needs in found[0], problems(data)


def test_min_free_bytes_may_be_zero_and_defaults_to_the_recorders_own_value() -> None:
    from recorder.settings import RetentionLimits, StorageSettings

    assert (
        parse_config(with_(storage={"dir": "/x", "min_free_bytes": 0})).storage.min_free_bytes == 0
    )
    default = parse_config(MINIMAL).storage.min_free_bytes
    assert (
        default
        == RetentionLimits().min_free_bytes
        == StorageSettings(dir=Path("/x")).min_free_bytes
    )


def test_every_default_of_the_config_is_the_one_the_part_uses() -> None:
    """A config left at its defaults gives each part exactly its own defaults."""
    from device.settings import camera_settings, storage_settings
    from recorder.settings import CameraSettings, StorageSettings
    from sync.settings import MqttSettings, ShareSettings

    config = parse_config(MINIMAL)
    assert camera_settings(config) == CameraSettings(source="synthetic")
    assert storage_settings(config) == StorageSettings(
        dir=config.buffer_dir, segment_seconds=StorageSettings(dir=Path("/x")).segment_seconds
    )
    assert config.mqtt == MqttSettings(url=config.mqtt.url)
    assert (config.share.chunk_bytes, config.share.max_attempts) == (
        ShareSettings().chunk_bytes,
        ShareSettings().max_attempts,
    )


def test_loading_the_config_does_not_import_the_parts_it_configures() -> None:
    """The schema takes its defaults from the parts' settings modules, not from the MQTT
    client or the uploader (paho, requests, numpy: most of a second on a Pi)."""
    code = "import sys, firmware_config; print(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    heavy = {"sync.mqtt", "sync.uploader", "sync.attempt", "sync.tus", "paho", "requests", "numpy"}
    assert heavy.isdisjoint(run.stdout.split())


def test_anonymous_start_delay_defaults_to_the_protocol_s_10_to_60_minutes() -> None:
    share = parse_config(MINIMAL).share
    assert (share.anonymous_delay_min_minutes, share.anonymous_delay_max_minutes) == (10, 60)
    assert share.anonymous_delay.min_minutes == 10


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (
            {"anonymous_delay_min_minutes": 4.99},
            "share.anonymous_delay_min_minutes: must be between 5 and 1440",
        ),
        ({"anonymous_delay_min_minutes": 0}, "share.anonymous_delay_min_minutes: must be between"),
        ({"anonymous_delay_max_minutes": 3}, "share.anonymous_delay_max_minutes: must be between"),
        (
            {"anonymous_delay_min_minutes": 30, "anonymous_delay_max_minutes": 20},
            "share.anonymous_delay_max_minutes: must be at least"
            " share.anonymous_delay_min_minutes (30)",
        ),
        ({"anonymous_delay_max_minutes": "1h"}, "share.anonymous_delay_max_minutes: expected a"),
        ({"anonymous_delay_min_minutes": float("nan")}, "share.anonymous_delay_min_minutes:"),
        ({"anonymous_delay_minutes": 10}, "share.anonymous_delay_minutes"),
    ],
)
def test_anonymous_start_delay_errors_name_their_key(share: dict, expected: str) -> None:
    found = problems(with_(share=share))
    assert any(p.startswith(expected) for p in found), found
    # one problem per mistake: an invalid bound does not also trip the cross-check
    assert len(found) == 1, found


def test_anonymous_start_delay_may_be_a_fixed_five_minutes_and_no_less() -> None:
    five = {"anonymous_delay_min_minutes": 5, "anonymous_delay_max_minutes": 5}
    assert parse_config(with_(share=five)).share.anonymous_delay.max_minutes == 5
