"""Everything the daemon checks before it starts, in one place: `doorbelld` runs it
before it touches the buffer, the broker or the control socket, and
`doorbelld --check-config` runs the same function, so the check never says OK to a
config the daemon then refuses.

`problems` stop the start; `warnings` do not, but name what can never work (no agency
trusted: every request is rejected; no owner key: the app cannot decide).
The config schema (firmware_config) checks each value alone; this checks the values
against each other and against the machine (files that must exist and be readable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from firmware_config import Config
from firmware_config.home_assistant import same_broker
from sync.errors import MqttSettingsError


@dataclass(frozen=True)
class StartCheck:
    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _readable(key: str, path: Path | None) -> list[str]:
    if path is None:
        return []
    if not path.is_file():
        return [f"{key}: {path} does not exist or is not a file"]
    if not os.access(path, os.R_OK):
        return [f"{key}: {path} is not readable by this user"]
    return []


# Every GPIO the daemon drives or reads, by its config key: no two may share a pin.
def _pins(config: Config) -> list[tuple[str, int | str]]:
    keys = (
        ("owner.button_pin", config.owner.button_pin),
        ("owner.led_pin", config.owner.led_pin),
        ("bell.button_pin", config.bell.button_pin),
        ("bell.chime_pin", config.bell.chime_pin),
    )
    return [(key, pin) for key, pin in keys if pin is not None]


def _gpio_name(pin: int | str) -> str:
    """The pin's GPIO name ("GPIO17") whichever way it is written (17, "GPIO17",
    "BCM17", "BOARD11", "J8:11"), as gpiozero reads it on the 40-pin header every Pi
    since the B+ shares; the text itself when gpiozero is absent or does not know it."""
    try:
        from gpiozero.pins.pi import PiBoardInfo  # optional: only a Pi with pins needs it

        header = PiBoardInfo.from_revision(0xD04170)  # a Pi 5: the same 40-pin header
        found = {info.name for _header, info in header.find_pin(pin)}
    except Exception:  # no gpiozero, or a name it cannot parse
        found = set()
    if len(found) == 1:
        return found.pop()
    text = str(pin).strip().upper()
    return f"GPIO{int(text)}" if text.isdigit() else text


def pin_clashes(config: Config) -> list[str]:
    """One problem per pin given to two keys. The indoor approval button on the porch
    bell's pin would let a visitor approve a share."""
    problems = []
    seen: dict[str, str] = {}
    for key, pin in _pins(config):
        name = _gpio_name(pin)
        if name in seen:
            why = ""
            if {seen[name], key} == {"owner.button_pin", "bell.button_pin"}:
                why = " (a visitor pressing the bell would approve a share)"
            problems.append(f"{key}: {pin} is {name}, already {seen[name]}; use another pin{why}")
        else:
            seen[name] = key
    return problems


def check_start(config: Config) -> StartCheck:
    problems: list[str] = []
    warnings: list[str] = []
    mqtt = config.mqtt
    tls = urlsplit(mqtt.url).scheme == "mqtts"
    if not tls:
        for key, value in (("ca_file", mqtt.ca_file), ("cert_file", mqtt.cert_file)):
            if value is not None:
                problems.append(f"mqtt.{key}: needs an mqtts:// URL, not {mqtt.url}")
    if mqtt.password_file is not None and mqtt.username is None:
        problems.append("mqtt.password_file: needs mqtt.username (a password alone is never sent)")
    problems += _readable("mqtt.password_file", mqtt.password_file)
    problems += _readable("mqtt.ca_file", mqtt.ca_file)
    problems += _readable("mqtt.cert_file", mqtt.cert_file)
    problems += _readable("mqtt.key_file", mqtt.key_file)

    problems += pin_clashes(config)
    webhook = config.nudge.webhook
    if webhook is not None:
        problems += _readable("nudge.webhook.token_file", webhook.token_file)
        host = urlsplit(webhook.url).hostname or ""
        if urlsplit(webhook.url).scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
            warnings.append(
                f"nudge.webhook.url: plain http to {host}: anyone on the way sees that a "
                "nudge went out" + (" and reads the token" if webhook.token_file else "")
            )
    problems += _home_assistant_problems(config)

    socket_dir = config.control.socket.parent
    if not socket_dir.is_dir():
        problems.append(
            f"control.socket: the folder {socket_dir} does not exist (systemd's "
            "RuntimeDirectory= makes /run/doorbell for the service; elsewhere create it "
            "or choose a socket path in an existing folder)"
        )

    if config.rfa.enabled and not config.rfa.trusted_agencies:
        warnings.append(
            "rfa.trusted_agencies: empty, so every request will be rejected "
            "(add the agencies you trust, see docs/walkthrough.md)"
        )
    if not config.owner.keys:
        warnings.append(
            "owner.keys: empty, so the owner's app cannot decide "
            "(only doorbellctl and the indoor button can)"
        )
    if not config.owner.recipients:
        warnings.append(
            "owner.recipients: empty, so the owner's app is never told of pending "
            "requests or shares"
        )
    return StartCheck(problems=tuple(problems), warnings=tuple(warnings))


def _home_assistant_problems(config: Config) -> list[str]:
    """The home broker is never the cloud's: what goes to Home Assistant (rings,
    snapshots, the count of waiting requests) must not cross the broker that carries
    agencies' requests."""
    broker = config.home_assistant.broker
    if broker is None:
        if config.nudge.home_assistant:
            return [
                "nudge.home_assistant: needs home_assistant.enabled (and its url), or the"
                " nudge has nowhere to go"
            ]
        return []
    problems: list[str] = []
    try:
        host, port, tls = broker.endpoint()
        cloud_host, cloud_port, _tls = config.mqtt.endpoint()
    except MqttSettingsError as exc:
        return [f"home_assistant.url: {exc}"]
    if same_broker((host, port), (cloud_host, cloud_port)):
        problems.append(
            f"home_assistant.url: {broker.url} is the same broker as mqtt.url ({config.mqtt.url});"
            " Home Assistant must use the home's own broker, never the one that carries"
            " agencies' requests"
        )
    if broker.ca_file is not None and not tls:
        problems.append(f"home_assistant.ca_file: needs an mqtts:// URL, not {broker.url}")
    if broker.password_file is not None and broker.username is None:
        problems.append(
            "home_assistant.password_file: needs home_assistant.username"
            " (a password alone is never sent)"
        )
    problems += _readable("home_assistant.password_file", broker.password_file)
    problems += _readable("home_assistant.ca_file", broker.ca_file)
    return problems
