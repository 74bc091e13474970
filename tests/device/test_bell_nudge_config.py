"""The `bell` and `nudge` sections: defaults (all off), every bad value named by its key,
and `doorbelld --check-config` refusing one pin for two jobs (above all the porch bell
on the indoor approval button's pin) before the daemon touches anything."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.loopback import DeviceSetup, free_port, script
from device.preflight import check_start, pin_clashes
from firmware_config import ConfigError, parse_config
from firmware_config.bell import BellSettings
from firmware_config.nudge import NudgeSettings, WebhookSettings
from foundation.cli import ExitCode
from sync.keys import SigningKey
from tests.device.test_config import MINIMAL


def parsed(**sections: Any) -> Any:
    return parse_config({**MINIMAL, **sections})


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parsed(**sections)
    return info.value.problems


def test_both_are_off_by_default() -> None:
    config = parsed()
    assert config.bell == BellSettings() and config.bell.button_pin is None
    assert config.nudge == NudgeSettings() and config.nudge.webhook is None
    assert config.nudge.every_minutes == 15


def test_a_full_setup_is_read() -> None:
    config = parsed(
        bell={"button_pin": 22, "chime_pin": "GPIO23", "bounce_ms": 30, "chime_seconds": 2},
        nudge={
            "every_minutes": 30,
            "webhook": {
                "url": "https://ntfy.example.net/doorbell-7f3k2",
                "title": "Doorbell",
                "priority": 3,
                "format": "text",
            },
        },
    )
    assert (config.bell.button_pin, config.bell.chime_pin) == (22, "GPIO23")
    assert config.bell.chime_seconds == 2.0 and config.bell.bounce_ms == 30
    assert config.nudge.webhook is not None and config.nudge.webhook.priority == 3


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"bell": {"button_pin": True}}, "bell.button_pin"),
        ({"bell": {"button_pin": 99}}, "bell.button_pin"),
        ({"bell": {"chime_seconds": 0}}, "bell.chime_seconds"),
        ({"bell": {"chime_seconds": 3600}}, "bell.chime_seconds"),
        ({"bell": {"bounce_ms": -1}}, "bell.bounce_ms"),
        ({"bell": {"active_high": "yes"}}, "bell.active_high"),
        ({"bell": {"chime": 5}}, "bell.chime"),
        ({"nudge": {"every_minutes": 0}}, "nudge.every_minutes"),
        ({"nudge": {"every_minutes": 0.5}}, "nudge.every_minutes"),
        ({"nudge": {"webhook": {"title": "x"}}}, "nudge.webhook.url"),
        ({"nudge": {"webhook": {"url": "ftp://example.net/x"}}}, "nudge.webhook.url"),
        ({"nudge": {"webhook": {"url": "https://u:pw@example.net/"}}}, "nudge.webhook.url"),
        ({"nudge": {"webhook": {"url": "https://example.net/a b"}}}, "nudge.webhook.url"),
        ({"nudge": {"webhook": {"url": "https://e.net", "title": "a\r\nX: y"}}}, "title"),
        ({"nudge": {"webhook": {"url": "https://e.net", "title": "Ding 🔔"}}}, "title"),
        ({"nudge": {"webhook": {"url": "https://e.net", "priority": 11}}}, "priority"),
        ({"nudge": {"webhook": {"url": "https://e.net", "format": "xml"}}}, "format"),
        ({"nudge": {"webhook": {"url": "https://e.net", "timeout_seconds": 0}}}, "timeout"),
        ({"nudge": {"webhook": "https://e.net"}}, "nudge.webhook"),
    ],
)
def test_bad_values_name_their_key(sections: dict[str, Any], key: str) -> None:
    found = problems(**sections)
    assert any(key in problem for problem in found), found


# ------------------------------------------------------------------ pins, across keys


@pytest.mark.parametrize(
    ("owner", "bell", "clash"),
    [
        ({"button_pin": 17}, {"button_pin": 17}, "bell.button_pin: 17 is GPIO17, already owner"),
        ({"button_pin": 17}, {"button_pin": "GPIO17"}, "already owner.button_pin"),
        ({"button_pin": "BOARD11"}, {"button_pin": 17}, "already owner.button_pin"),
        ({"led_pin": 27}, {"chime_pin": "BCM27"}, "bell.chime_pin: BCM27 is GPIO27, already"),
        ({}, {"button_pin": 22, "chime_pin": "J8:15"}, "bell.chime_pin: J8:15 is GPIO22"),
    ],
)
def test_one_pin_for_two_jobs_is_refused(
    owner: dict[str, Any], bell: dict[str, Any], clash: str
) -> None:
    found = pin_clashes(parsed(owner=owner, bell=bell))
    assert len(found) == 1 and clash in found[0], found


def test_the_bell_on_the_approval_buttons_pin_says_why() -> None:
    (found,) = pin_clashes(parsed(owner={"button_pin": 17}, bell={"button_pin": 17}))
    assert "a visitor pressing the bell would approve a share" in found


def test_distinct_pins_pass() -> None:
    config = parsed(
        owner={"button_pin": 17, "led_pin": 27}, bell={"button_pin": 22, "chime_pin": 23}
    )
    assert pin_clashes(config) == []


def doorbelld(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script("doorbelld"), f"--config={config}", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def device(tmp_path: Path, extra: dict[str, Any]) -> Path:
    return DeviceSetup(
        root=tmp_path / "device",
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        agencies=[("sfpd", SigningKey.generate().public_b64)],
        owner_keys=[SigningKey.generate().public_b64],
        owner_recipients=["age1scjrymdg0guqdp84lyefl57acdks04lumhhc2kap0zdsxx3kxcvq5cscqt"],
        extra=extra,
    ).write()


def test_check_config_and_the_daemon_refuse_the_bell_on_the_approval_pin(
    tmp_path: Path,
) -> None:
    config = device(tmp_path, {"owner": {"button_pin": 17}, "bell": {"button_pin": "GPIO17"}})
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == ExitCode.USAGE
    assert "bell.button_pin: GPIO17 is GPIO17, already owner.button_pin" in checked.stderr
    started = doorbelld(config)
    assert started.returncode == ExitCode.USAGE and "bell.button_pin" in started.stderr
    assert not (tmp_path / "device" / "var").exists()


def test_a_missing_token_file_is_refused_and_plain_http_is_a_warning(tmp_path: Path) -> None:
    webhook = {"url": "http://192.168.1.20/doorbell", "token_file": str(tmp_path / "none")}
    config = device(tmp_path, {"nudge": {"webhook": webhook}})
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == ExitCode.USAGE
    assert "nudge.webhook.token_file: " in checked.stderr and "does not exist" in checked.stderr
    assert "warning: nudge.webhook.url: plain http to 192.168.1.20" in checked.stderr
    assert "reads the token" in checked.stderr


def test_a_good_nudge_and_bell_pass_the_check(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tk_abc\n")
    webhook = {"url": "https://ntfy.example.net/doorbell-7f3k2", "token_file": str(token)}
    extra = {"bell": {"button_pin": 22, "chime_pin": 23}, "nudge": {"webhook": webhook}}
    config = device(tmp_path, extra)
    checked = doorbelld(config, "--check-config")
    assert checked.returncode == 0, checked.stderr
    assert "nudge" not in checked.stderr and "bell" not in checked.stderr


def test_the_guides_examples_are_valid_configs_with_distinct_pins() -> None:
    """Every YAML block of docs/owner-guide-bell.md, added to a minimal config, parses
    and passes the pin check: the guide cannot drift from the schema."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "owner-guide-bell.md"
    blocks = re.findall(r"```yaml\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        config = parsed(**yaml.safe_load(block))
        assert pin_clashes(config) == []


ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
BELL_KEYS = [f.name for f in dataclasses.fields(BellSettings)]
WEBHOOK_KEYS = [f.name for f in dataclasses.fields(WebhookSettings)]


@settings(max_examples=300, deadline=None)
@given(
    bell=st.dictionaries(st.sampled_from(BELL_KEYS), ANY) | ANY,
    webhook=st.dictionaries(st.sampled_from(WEBHOOK_KEYS), ANY) | ANY,
    every=ANY,
    owner_pin=ANY,
)
def test_any_value_is_a_config_error_or_a_config_never_a_traceback(
    bell: Any, webhook: Any, every: Any, owner_pin: Any
) -> None:
    try:
        config = parsed(
            bell=bell,
            nudge={"every_minutes": every, "webhook": webhook},
            owner={"button_pin": owner_pin},
        )
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        return
    check_start(config)  # the checks across keys take whatever the schema let through
