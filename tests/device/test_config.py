"""The config tree: defaults, every problem reported with its key path, sizes."""

import re
import subprocess
import sys
from pathlib import Path

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st

from firmware_config import ConfigError, example_config_text, load_config, parse_config
from firmware_config.schema import CONFIG, Section, parse_size
from foundation.errors import InvalidValueError
from recorder.settings import CameraSettings, StorageSettings
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
        # storage.dir holds the buffer (the recorder's StorageSettings.dir) and the state
        assert config.storage.dir == config.buffer_dir == folder / "var" / "buffer"
        assert config.state_dir == folder / "var" / "state"
        assert config.control.socket == folder / "run" / "control.sock"
        assert config.mqtt.ca_file is not None and config.mqtt.ca_file.resolve() == (
            tmp_path / "ca.pem"
        )
        assert config.console.cert_file == Path("/etc/c.pem")
        assert config.console.key_file == folder / "k.pem"
    monkeypatch.chdir(folder)  # the same file from its own folder: the same paths
    assert load_config(Path("doorbell.yaml")).buffer_dir == folder / "var" / "buffer"


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
    from recorder.settings import CameraSettings, StorageSettings
    from sync.settings import MqttSettings, ShareSettings

    config = parse_config(MINIMAL)
    assert config.camera == CameraSettings(source="synthetic")
    assert config.storage == StorageSettings(dir=config.buffer_dir)
    assert config.mqtt == MqttSettings(url=config.mqtt.url)
    assert config.share == ShareSettings()


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


def test_fps_has_one_cap_in_the_schema_and_the_recorder() -> None:
    """The schema capped fps at 60 while CameraSettings took up to 120: one range now."""
    assert parse_config(with_(camera={"source": "synthetic", "fps": 60})).camera.fps == 60
    assert CameraSettings(fps=60).fps == 60
    assert problems(with_(camera={"source": "synthetic", "fps": 61})) == [
        "camera.fps: must be between 1 and 60"
    ]
    for beyond in (61, 120, 0.5):
        with pytest.raises(InvalidValueError):
            CameraSettings(fps=beyond)


def test_segment_seconds_has_one_range_in_the_schema_and_the_recorder() -> None:
    """It was a whole number 1-60 in the schema and 0.5-60 seconds in StorageSettings."""
    for seconds in (1, 2.5, 60):
        built = parse_config(with_(storage={"dir": "/x", "segment_seconds": seconds}))
        assert built.storage.segment_seconds == seconds
    for seconds in (0.5, 60.5):
        assert problems(with_(storage={"dir": "/x", "segment_seconds": seconds})) == [
            "storage.segment_seconds: must be between 1 and 60"
        ]
        with pytest.raises(InvalidValueError):
            StorageSettings(dir=Path("/x"), segment_seconds=seconds)


def _sections(section: Section, path: str = "") -> list[tuple[str, Section]]:
    found = [(path, section)]
    for key in section.keys:
        if isinstance(key.read, Section):
            found += _sections(key.read, f"{path}.{key.name}".lstrip("."))
    return found


def test_every_declared_key_fills_a_field_of_the_dataclass_it_builds() -> None:
    import dataclasses

    for path, section in _sections(CONFIG)[1:]:  # the top builds Config through _config
        fields = {f.name for f in dataclasses.fields(section.build)}  # type: ignore[arg-type]
        names = {key.name for key in section.keys}
        assert names <= fields, (path, names - fields)


# Values at and around every limit the schema or the parts draw, and of every YAML type.
_ANY = st.one_of(
    st.integers(min_value=-2, max_value=130),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=130),
    st.sampled_from([0, 1, 15, 16, 59, 60, 61, 120, 4320, 4321, 7680, 7681, 0.5, 0.99, 1.5]),
    st.sampled_from(["16MiB", "1KiB", "8GiB", "fast", "opencv", "x", "", True, None]),
)
_PART_KEYS = (
    [("camera", key) for key in ("source", "device", "width", "height", "fps", "preset", "masks")]
    + [
        ("storage", key)
        for key in ("dir", "segment_seconds", "max_age_hours", "max_bytes", "min_free_bytes")
    ]
    + [
        ("share", key)
        for key in (
            "chunk_bytes",
            "bandwidth_bytes_per_s",
            "max_attempts",
            "anonymous_delay_min_minutes",
            "anonymous_delay_max_minutes",
        )
    ]
    + [("bell", key) for key in ("bounce_ms", "chime_seconds", "button_pin", "chime_pin")]
    + [("nudge", "every_minutes")]
    + [("home_assistant", key) for key in ("enabled", "snapshot_interval_seconds", "name")]
)


_LIMITS = [
    *(0, 0.5, 0.99, 1, 1.5, 2, 4, 5, 15, 16, 29.5, 30, 31, 59, 60, 60.5, 61, 120, 121),
    *(1000, 1001, 1023, 1024, 1440, 1441, 4320, 4321, 7680, 7681, 65535, 65536, -1),
    *("64KiB", "1KiB", "16MiB", "8GiB", "ultrafast", "picamera2", "/dev/video0"),
]


def _built_or_every_problem_named(data: dict) -> None:
    """Either the config is built (so the recorder's and sync's own settings took every
    value), or each problem names its key: never "camera: <the part refused it>", the
    line the reader writes when a part's settings refuse what the schema let through."""
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert all("." in p.split(": ", 1)[0] for p in exc.problems), exc.problems
        return
    assert isinstance(config.camera, CameraSettings)
    assert isinstance(config.storage, StorageSettings)
    assert config.share.anonymous_delay.min_minutes >= 5


@pytest.mark.parametrize("where", _PART_KEYS)
def test_at_every_limit_the_schema_and_the_parts_settings_agree(where: tuple[str, str]) -> None:
    section, key = where
    for value in _LIMITS:
        _built_or_every_problem_named(with_(**{section: {**MINIMAL.get(section, {}), key: value}}))


@hypothesis.settings(max_examples=500, deadline=None)
@hypothesis.given(where=st.sampled_from(_PART_KEYS), value=_ANY, other=_ANY)
def test_any_value_the_schema_accepts_the_parts_settings_accept(
    where: tuple[str, str], value: object, other: object
) -> None:
    section, key = where
    data = with_(**{section: {**MINIMAL.get(section, {}), key: value}})
    # and a second key of the same section, for the checks across keys
    partner = {"width": "height", "anonymous_delay_min_minutes": "anonymous_delay_max_minutes"}
    if key in partner:
        data[section][partner[key]] = other
    _built_or_every_problem_named(data)


_YAML = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


PLACE = re.compile(r"\S.*?: \S", re.DOTALL)  # "where: what"


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    top=_YAML,
    section=st.sampled_from([None, *(key.name for key in CONFIG.keys)]),
    inner=_YAML,
)
def test_any_document_is_a_config_or_a_list_of_problems(
    top: object, section: str | None, inner: object
) -> None:
    """Whatever YAML holds, at the top or in a section: a Config or a ConfigError whose
    every line starts with where it is, never a traceback."""
    data = top if section is None else with_(**{section: inner})
    try:
        parse_config(data)
    except ConfigError as exc:
        named = [p for p in exc.problems if p == "the config file is empty" or PLACE.match(p)]
        assert exc.problems and named == exc.problems


def test_a_config_that_is_not_a_mapping_says_so() -> None:
    assert problems(["device"])[0] == "the config file: expected a mapping, got list"


@pytest.mark.parametrize("key", ["\x85device", " device", "", "dev\nice"])
def test_an_odd_unknown_key_is_quoted_so_its_line_starts_with_where_it_is(key: str) -> None:
    """Found by the property above: a key led by U+0085 made a problem line that began
    with white space; such keys are now shown as Python would quote them."""
    line = next(p for p in problems({key: 1}) if "unknown key" in p)
    assert PLACE.match(line) and line.startswith(repr(key))


# ---- camera.masks (recorder/masks.py) ------------------------------------------------------

STREET = {"name": "street", "points": [[0, 0.7], [0.35, 0.75], [0.3, 1], [0, 1]]}


def test_privacy_masks_in_the_config_reach_the_camera_settings() -> None:
    window = {"name": "window", "points": [[0.55, 0.3], [0.95, 0.35], [0.7, 0.6]]}
    camera = {"source": "synthetic", "masks": [STREET, window]}
    config = parse_config(with_(camera=camera))
    assert [m.name for m in config.camera.masks] == ["street", "window"]
    assert config.camera.masks[0].points == ((0, 0.7), (0.35, 0.75), (0.3, 1), (0, 1))
    assert parse_config(MINIMAL).camera.masks == ()


@pytest.mark.parametrize(
    ("masks", "expected"),
    [
        (
            [{"name": "all", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
            "camera.masks: the masks hide the whole picture; leave some of it visible",
        ),
        (
            [{"name": "x", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}],
            "camera.masks[0].points: the outline crosses itself (edge 1 meets edge 3); "
            "draw it without crossing lines",
        ),
        (
            [STREET, {"name": "x", "points": [[0, 0], [1.2, 0], [0, 1]]}],
            "camera.masks[1].points: corner 2 [1.2, 0.0] is outside the picture "
            "(x and y run from 0 to 1)",
        ),
        (
            [{"name": "x", "points": [[0, 0], [1, 0]]}],
            "camera.masks[0].points: a mask needs at least 3 corners",
        ),
        ([{"points": STREET["points"]}], "camera.masks[0].name: required"),
        ([{"name": "x"}], "camera.masks[0].points: required"),
        ([STREET, STREET], "camera.masks[1].name: 'street' is used twice"),
        ([{**STREET, "colour": "red"}], "camera.masks[0].colour: unknown key"),
        ({"street": STREET}, "camera.masks: expected a list"),
        ([{"name": "x", "points": [[0, 0], [0, "1"], [1, 1]]}],
         "camera.masks[0].points: corner 2: expected [x, y], two numbers"),
    ],
)  # fmt: skip
def test_a_bad_privacy_mask_is_one_problem_naming_its_key(masks: object, expected: str) -> None:
    assert problems(with_(camera={"source": "synthetic", "masks": masks})) == [expected]


def test_a_cluster_s_urls_and_the_protocol_choice() -> None:
    urls = ["mqtts://a.example.net", "mqtts://b.example.net:8884"]
    config = parse_config(with_(mqtt={"urls": urls, "protocol": "auto"}))
    assert config.mqtt.urls == tuple(urls) and config.mqtt.url == urls[0]
    assert config.mqtt.protocol == 0  # sync.settings.AUTO
    assert parse_config(with_(mqtt={"url": urls[0], "protocol": "3.1.1"})).mqtt.protocol == 4
    assert parse_config(MINIMAL).mqtt.urls == ("mqtt://127.0.0.1:1883",)


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"url": ["mqtt://a"]}, "mqtt.url: a list of brokers goes in mqtt.urls"),
        ({"urls": []}, "mqtt.urls: expected at least one"),
        ({"urls": "mqtt://a"}, "mqtt.urls: expected a list"),
        ({"urls": ["mqtt://a", "mqtts://b"]}, "mqtt.urls: use mqtts:// for all"),
        ({"urls": ["mqtt://a", "http://b"]}, "mqtt.urls: item 1: expected mqtt://host"),
        ({"url": "mqtt://a", "urls": ["mqtt://b"]}, "mqtt.url: give url (one broker) or urls"),
        ({"protocol": "auto"}, "mqtt.url: required"),
        ({"url": "mqtt://a", "protocol": "4"}, 'mqtt.protocol: expected "5", "3.1.1" or "auto"'),
    ],
)
def test_broker_url_mistakes_name_their_key(mqtt: dict, expected: str) -> None:
    found = problems(with_(mqtt=mqtt))
    assert any(p.startswith(expected) for p in found), found
