"""Schema of doorbell.yaml: one strict tree, declared once.

Each section is a `Section`: the dataclass it builds (a part's own settings, such as
`CameraSettings`, or a config dataclass below for keys only the daemon reads) and one
`Key` per YAML key (its name, its converter, whether it is required). A key's default is
the default of the dataclass field it fills, so it is written once, where the part that
uses it lives. `parse_config` walks the tree with one generic reader.

Unknown keys, wrong types and out-of-range values are all collected (not just the first)
and reported with their key path and, for a misspelt key, a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import yaml

from firmware_config.bell import BOUNCE_MS_RANGE, CHIME_SECONDS_RANGE, BellSettings
from firmware_config.home_assistant import HomeAssistantSettings
from firmware_config.nudge import (
    EVERY_MINUTES_RANGE,
    PRIORITY_RANGE,
    TIMEOUT_SECONDS_RANGE,
    WEBHOOK_FORMATS,
    NudgeSettings,
    WebhookSettings,
)
from foundation.errors import InvalidValueError, UsageError
from foundation.wire import MAX_RECEIVE_MAXIMUM
from recorder.masks import Mask, check_masks, mask_name, parse_points
from recorder.settings import (
    FPS_RANGE,
    HEIGHT_RANGE,
    PRESETS,
    SEGMENT_SECONDS_RANGE,
    SOURCES,
    WIDTH_RANGE,
    CameraSettings,
    StorageSettings,
)
from sync.keys import parse_recipient, public_key_from_b64
from sync.settings import (
    ANONYMOUS_DELAY_FLOOR_MINUTES,
    AUTO,
    MQTT5,
    MQTT311,
    MqttSettings,
    ShareSettings,
)

S = TypeVar("S")
T = TypeVar("T")

# The longest anonymous start delay the config takes: a day. Longer would hold a share's
# footage pinned, and the owner waiting, for no gain the protocol asks for.
MAX_ANONYMOUS_DELAY_MINUTES = 24 * 60


class ConfigError(UsageError):
    """The config is unusable; `problems` lists every error as 'key.path: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(problems))
        self.problems = problems


# Sections only the daemon reads (the parts' own settings live in their modules).


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None = None
    email: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    location: Location
    contact: Contact = field(default_factory=Contact)

    @property
    def lat(self) -> float:
        return self.location.lat

    @property
    def lon(self) -> float:
        return self.location.lon


@dataclass(frozen=True, slots=True)
class TrustedAgency:
    agency_id: str
    public_key: str  # base64url raw Ed25519


@dataclass(frozen=True, slots=True)
class RfaConfig:
    enabled: bool = True
    decide_within_hours: float = 72.0
    allow_plain_http_loopback: bool = False
    trusted_agencies: tuple[TrustedAgency, ...] = ()


@dataclass(frozen=True, slots=True)
class OwnerConfig:
    keys: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    # a local decision (the button, or a caller that does not say) names the owner
    # unless this is false: applied by RequestFlow.decide_locally, nowhere else
    share_contact_by_default: bool = True
    sync_seconds: float = 300.0
    button_pin: int | str | None = None
    led_pin: int | str | None = None


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: Path = Path("/run/doorbell/control.sock")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The owner's web console (device/console). `listen` None: off."""

    listen: tuple[str, int] | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    device: DeviceConfig
    camera: CameraSettings  # the parts' own settings, built here (each default once)
    storage: StorageSettings  # its `dir` is the buffer: `storage.dir` of the YAML + /buffer
    mqtt: MqttSettings
    rfa: RfaConfig = field(default_factory=RfaConfig)
    owner: OwnerConfig = field(default_factory=OwnerConfig)
    share: ShareSettings = field(default_factory=ShareSettings)
    control: ControlConfig = field(default_factory=ControlConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    bell: BellSettings = field(default_factory=BellSettings)
    nudge: NudgeSettings = field(default_factory=NudgeSettings)
    home_assistant: HomeAssistantSettings = field(default_factory=HomeAssistantSettings)
    source_path: Path | None = None

    @property
    def buffer_dir(self) -> Path:
        return self.storage.dir

    @property
    def state_dir(self) -> Path:
        """Daemon state (keys, state db, audit log, outbox) lives beside the buffer."""
        return self.storage.dir.parent / "state"


# The declarations' vocabulary and the one reader that walks them.


@dataclass(frozen=True, slots=True)
class Key:
    """One YAML key. `read` converts its value (raising ValueError or TypeError with a
    message for the owner), or is the `Section` of a nested mapping; `many`: a list of
    such mappings. The value fills the dataclass field of the same name; an absent (or
    null) key leaves that field's default, so defaults are never restated here."""

    name: str
    read: Callable[[object], Any] | Section[Any]
    required: bool = False
    many: bool = False


# A check across keys: given the section's values (defaults filled in), a problem as
# "key: message", or None.
Check = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True, slots=True)
class Section(Generic[S]):
    """A mapping of the YAML tree and the dataclass it builds. Checks run only once every
    key of the section is valid, so one mistake is reported once."""

    build: Callable[..., S]
    keys: tuple[Key, ...]
    checks: tuple[Check, ...] = ()


class _Reader:
    """Walks the YAML tree along the declarations, collecting problems instead of
    stopping at the first."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.problems: list[str] = []

    def read(self, section: Section[S], data: object, path: str, **fixed: Any) -> S | None:
        """`section`'s dataclass built from `data` (plus `fixed` fields), or None once
        every problem found in it is recorded."""
        before = len(self.problems)
        mapping = self._mapping(data, path, tuple(key.name for key in section.keys))
        values: dict[str, Any] = dict(fixed)
        for key in section.keys:
            where = f"{path}.{key.name}" if path else key.name
            raw = mapping.get(key.name)
            if raw is None:
                if key.required:
                    self.problems.append(f"{where}: required")
            else:
                values[key.name] = self._value(key, raw, where)
        if len(self.problems) == before and section.checks:
            filled = {**_defaults(section.build), **values}
            for check in section.checks:
                problem = check(filled)
                if problem is not None:
                    self.problems.append(f"{path}.{problem}")
        if len(self.problems) > before:
            return None
        try:
            return section.build(**values)
        except ValueError as exc:
            # the part refuses what its declaration let through: a schema bug, but the
            # owner still gets a line naming the section, not a traceback
            self.problems.append(f"{path or 'config'}: {exc}")
            return None

    def _mapping(self, data: object, path: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            where = path or "the config file"
            self.problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                text = str(key)
                # a key that is empty, padded or holds control characters is shown quoted,
                # so the problem line still starts with where it is (and prints safely)
                name = text if text and text.isprintable() and text == text.strip() else repr(key)
                where = f"{path}.{name}" if path else name
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problems.append(f"{where}: unknown key{extra}")
        return data

    def _value(self, key: Key, raw: object, where: str) -> Any:
        if isinstance(key.read, Section):
            if not key.many:
                return self.read(key.read, raw, where)
            if not isinstance(raw, list):
                self.problems.append(f"{where}: expected a list")
                return None
            return tuple(self.read(key.read, item, f"{where}[{i}]") for i, item in enumerate(raw))
        try:
            value = key.read(raw)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{where}: {exc}")
            return None
        if isinstance(value, Path) and self.folder is not None:
            # a relative path (`storage: {dir: ./var}`) is read from the config file's
            # folder, not from wherever a command runs, so `doorbellctl` finds the
            # daemon's socket and buffer from any directory; absolute ones stay
            value = self.folder / value
        return value


def _defaults(build: Callable[..., Any]) -> dict[str, Any]:
    """The defaults of dataclass `build`'s fields (for checks across keys)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(build):  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: object) -> int:
    """`8GiB`, `500MB`, `4096` (bytes) -> bytes."""
    if isinstance(value, bool):
        raise InvalidValueError("expected a size such as 8GiB, 500MB or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise InvalidValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = (match.group(2) or "B").lower()
            return int(float(match.group(1)) * _UNITS[unit])
    raise InvalidValueError("expected a size such as 8GiB, 500MB or a number of bytes")


def _size(at_least: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        size = parse_size(value)
        if size < at_least:
            raise InvalidValueError(f"must be at least {_human_size(at_least)}")
        return size

    return convert


def _human_size(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"


def _str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError("expected a non-empty string")
    return value


def _device_id(value: object) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise InvalidValueError(
            "use 1-64 letters, digits, '.', '_' or '-' (it is an MQTT topic level)"
        )
    return text


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidValueError("expected true or false")
    return value


def _number(lo: float, hi: float) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValueError("expected a number")
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise InvalidValueError(f"must be between {lo:g} and {hi:g}")
        return number

    return convert


def _int(lo: int, hi: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValueError("expected a whole number")
        if not lo <= value <= hi:
            raise InvalidValueError(f"must be between {lo} and {hi}")
        return value

    return convert


def _choice(*options: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in options:
            hint = difflib.get_close_matches(str(value), options, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise InvalidValueError(f"must be one of {', '.join(options)}{extra}")
        return str(value)

    return convert


def _path(value: object) -> Path:
    """A path as the config file means it: the reader reads a relative one
    (`storage: {dir: ./var}`) from the config file's folder (see `_Reader.convert`)."""
    return Path(_str(value))


def _camera_device(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidValueError("expected a camera index, a device path or a URL")
    return value


def _pin(value: object) -> int | str:
    if isinstance(value, bool):
        raise InvalidValueError("expected a GPIO number or name such as 17 or 'GPIO17'")
    if isinstance(value, int) and 0 <= value <= 63:
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidValueError("expected a GPIO number or name such as 17 or 'GPIO17'")


def _url(value: object, schemes: tuple[str, ...], expected: str, credentials_go: str) -> str:
    """A URL of one of `schemes` with a host and, if any, a numeric port; credentials in
    it are refused (they would end up in logs and process lists): `credentials_go` says
    where they go instead."""
    text = _str(value)
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidValueError(f"expected {expected}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidValueError("the port is not a number from 0 to 65535") from exc
    if parts.username or parts.password:
        raise InvalidValueError(f"put credentials in {credentials_go}, not the URL")
    return text


def _mqtt_url(value: object) -> str:
    if isinstance(value, list):
        raise InvalidValueError("a list of brokers goes in mqtt.urls")
    return _url(
        value,
        ("mqtt", "mqtts"),
        "mqtt://host[:port] or mqtts://host[:port]",
        "mqtt.username and mqtt.password_file",
    )


def _home_broker_url(value: object) -> str:
    return _url(
        value,
        ("mqtt", "mqtts"),
        "mqtt://host[:port] or mqtts://host[:port]",
        "home_assistant.username and home_assistant.password_file",
    )


def _webhook_url(value: object) -> str:
    text = _url(
        value,
        ("http", "https"),
        "https://host/path (or http:// on the home network)",
        "nudge.webhook.token_file",
    )
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
        raise InvalidValueError("the URL has spaces or control characters")
    return text


def _header_text(value: object) -> str:
    """Text sent as an HTTP header: one line of Latin-1, as HTTP/1.1 allows."""
    text = _str(value)
    if len(text) > 200:
        raise InvalidValueError("at most 200 characters")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidValueError(
            "use Western European letters only, no emoji (it is sent as an HTTP header)"
        ) from None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise InvalidValueError("no control characters or line breaks")
    return text


def _listen(value: object) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::]:8443`) -> (host, port)."""
    text = _str(value)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text)
    if match is None:
        raise ValueError('expected "host:port", e.g. "0.0.0.0:8443" or "[::]:8443"')
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError("the port must be between 1 and 65535")
    return host, port


def _mqtt_urls(value: object) -> tuple[str, ...]:
    """The URLs of one broker cluster's nodes (sync.brokers goes round them)."""
    urls = _list(_mqtt_url)(value)
    if not urls:
        raise InvalidValueError("expected at least one mqtt:// or mqtts:// URL")
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise InvalidValueError("use mqtts:// for all of the URLs or for none")
    return urls


def _one_broker_key(values: Mapping[str, Any]) -> str | None:
    if values["url"] and values["urls"]:
        return "url: give url (one broker) or urls (a cluster's nodes), not both"
    if not values["url"] and not values["urls"]:
        return "url: required (or urls, a list of a cluster's nodes)"
    return None


def _mqtt_protocol(value: object) -> int:
    if value in (5, "5"):
        return MQTT5
    if value in ("3.1.1", "311", 4):
        return MQTT311
    if value == "auto":
        return AUTO
    raise InvalidValueError('expected "5", "3.1.1" or "auto" (5, else 3.1.1 where refused)')


def _b64_key(value: object) -> str:
    text = _str(value)
    public_key_from_b64(text)
    return text


def _recipient(value: object) -> str:
    text = _str(value)
    parse_recipient(text)
    return text


def _list(item: Callable[[object], T]) -> Callable[[object], tuple[T, ...]]:
    def convert(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise InvalidValueError("expected a list")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except (ValueError, TypeError) as exc:
                raise InvalidValueError(f"item {index}: {exc}") from exc
        return tuple(out)

    return convert


# The declarations: one line per key. A new section is a dataclass (in its part's
# settings module when a part uses it) and a `Section` here, named in CONFIG.


def _buffer_dir(value: object) -> Path:
    """`storage.dir` holds buffer/ (the recorder's footage) and state/ (the daemon's)."""
    return _path(value) / "buffer"


def _both_or_neither(first: str, second: str) -> Check:
    def check(values: Mapping[str, Any]) -> str | None:
        if (values[first] is None) != (values[second] is None):
            return f"{first}/{second}: give both or neither"
        return None

    return check


def _even_size(values: Mapping[str, Any]) -> str | None:
    if values["width"] % 2 or values["height"] % 2:
        return "width/height: H.264 needs even dimensions"
    return None


def _delay_order(values: Mapping[str, Any]) -> str | None:
    low, high = values["anonymous_delay_min_minutes"], values["anonymous_delay_max_minutes"]
    if high < low:
        return (
            "anonymous_delay_max_minutes: must be at least"
            f" share.anonymous_delay_min_minutes ({low:g})"
        )
    return None


_delay_minutes = _number(ANONYMOUS_DELAY_FLOOR_MINUTES, MAX_ANONYMOUS_DELAY_MINUTES)

DEVICE = Section(
    DeviceConfig,
    (
        Key("id", _device_id, required=True),
        Key(
            "location",
            Section(
                Location,
                (
                    Key("lat", _number(-90, 90), required=True),
                    Key("lon", _number(-180, 180), required=True),
                ),
            ),
            required=True,
        ),
        Key(
            "contact",
            Section(Contact, (Key("name", _str), Key("email", _str), Key("address", _str))),
        ),
    ),
)


def _masks_together(values: Mapping[str, Any]) -> str | None:
    """Names used once, and the masks leave part of the picture visible."""
    try:
        check_masks(values["masks"], "masks")
    except InvalidValueError as exc:
        return str(exc)
    return None


# A privacy mask (recorder/masks.py): its corners are checked as one polygon.
MASK = Section(
    Mask, (Key("name", mask_name, required=True), Key("points", parse_points, required=True))
)
CAMERA = Section(
    CameraSettings,
    (
        Key("source", _choice(*SOURCES), required=True),
        Key("device", _camera_device),
        Key("width", _int(*WIDTH_RANGE)),
        Key("height", _int(*HEIGHT_RANGE)),
        Key("fps", _int(*FPS_RANGE)),
        Key("preset", _choice(*PRESETS)),
        Key("masks", MASK, many=True),
    ),
    checks=(_even_size, _masks_together),
)
STORAGE = Section(
    StorageSettings,
    (
        Key("dir", _buffer_dir, required=True),
        Key("segment_seconds", _number(*SEGMENT_SECONDS_RANGE)),
        Key("max_age_hours", _number(0.01, 24 * 365)),
        Key("max_bytes", _size(16 * 1024**2)),
        Key("min_free_bytes", _size(0)),
    ),
)
MQTT = Section(
    MqttSettings,
    (
        Key("url", _mqtt_url),
        Key("urls", _mqtt_urls),
        Key("username", _str),
        Key("password_file", _path),
        Key("ca_file", _path),
        Key("cert_file", _path),
        Key("key_file", _path),
        Key("protocol", _mqtt_protocol),
        Key("keepalive", _int(5, 3600)),
        Key("receive_maximum", _int(1, MAX_RECEIVE_MAXIMUM)),
    ),
    checks=(_one_broker_key, _both_or_neither("cert_file", "key_file")),
)
RFA = Section(
    RfaConfig,
    (
        Key("enabled", _bool),
        Key("decide_within_hours", _number(0.01, 24 * 14)),
        Key("allow_plain_http_loopback", _bool),
        Key(
            "trusted_agencies",
            Section(
                TrustedAgency,
                (
                    Key("agency_id", _str, required=True),
                    Key("public_key", _b64_key, required=True),
                ),
            ),
            many=True,
        ),
    ),
)
OWNER = Section(
    OwnerConfig,
    (
        Key("keys", _list(_b64_key)),
        Key("recipients", _list(_recipient)),
        Key("share_contact_by_default", _bool),
        Key("sync_seconds", _number(0.2, 86400)),
        Key("button_pin", _pin),
        Key("led_pin", _pin),
    ),
)
SHARE = Section(
    ShareSettings,
    (
        Key("chunk_bytes", _size(64 * 1024)),
        Key("bandwidth_bytes_per_s", _size(1024)),
        Key("max_attempts", _int(1, 1000)),
        # protocol.md §6.2: never below the floor
        Key("anonymous_delay_min_minutes", _delay_minutes),
        Key("anonymous_delay_max_minutes", _delay_minutes),
    ),
    checks=(_delay_order,),
)
CONTROL = Section(ControlConfig, (Key("socket", _path),))
CONSOLE = Section(
    ConsoleConfig,
    (Key("listen", _listen), Key("cert_file", _path), Key("key_file", _path)),
    checks=(_both_or_neither("cert_file", "key_file"),),
)

BELL = Section(
    BellSettings,
    (
        Key("button_pin", _pin),
        Key("active_high", _bool),
        Key("bounce_ms", _int(*BOUNCE_MS_RANGE)),
        Key("chime_pin", _pin),
        Key("chime_active_high", _bool),
        Key("chime_seconds", _number(*CHIME_SECONDS_RANGE)),
    ),
)
NUDGE = Section(
    NudgeSettings,
    (
        Key("every_minutes", _number(*EVERY_MINUTES_RANGE)),
        Key("home_assistant", _bool),
        Key(
            "webhook",
            Section(
                WebhookSettings,
                (
                    Key("url", _webhook_url, required=True),
                    Key("format", _choice(*WEBHOOK_FORMATS)),
                    Key("title", _header_text),
                    Key("priority", _int(*PRIORITY_RANGE)),
                    Key("token_file", _path),
                    Key("timeout_seconds", _number(*TIMEOUT_SECONDS_RANGE)),
                ),
            ),
        ),
    ),
)


def _discovery_prefix(value: object) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", text):
        raise InvalidValueError("use letters, digits, '_' and '-', with '/' between levels")
    return text


def _url_when_enabled(values: Mapping[str, Any]) -> str | None:
    if values["enabled"] and values["url"] is None:
        return "url: required when enabled is true (the home's own MQTT broker)"
    return None


HOME_ASSISTANT = Section(
    HomeAssistantSettings,
    (
        Key("enabled", _bool),
        Key("url", _home_broker_url),
        Key("username", _str),
        Key("password_file", _path),
        Key("ca_file", _path),
        Key("discovery_prefix", _discovery_prefix),
        Key("name", _str),
        Key("snapshot_interval_seconds", _number(1, 3600)),
    ),
    checks=(_url_when_enabled,),
)


def _config(**sections: Any) -> Config:
    config = Config(**sections)
    # One switch, two parts: rfa.allow_plain_http_loopback lets a request name a loopback
    # http:// upload URL (the flow) and lets the uploader use it (ShareSettings).
    share = dataclasses.replace(
        config.share, allow_plain_http_loopback=config.rfa.allow_plain_http_loopback
    )
    return dataclasses.replace(config, share=share)


CONFIG = Section(
    _config,
    (
        Key("device", DEVICE, required=True),
        Key("camera", CAMERA, required=True),
        Key("storage", STORAGE, required=True),
        Key("mqtt", MQTT, required=True),
        Key("rfa", RFA),
        Key("owner", OWNER),
        Key("share", SHARE),
        Key("control", CONTROL),
        Key("console", CONSOLE),
        Key("bell", BELL),
        Key("nudge", NUDGE),
        Key("home_assistant", HOME_ASSISTANT),
    ),
)


def parse_config(data: object, *, source_path: Path | None = None) -> Config:
    # abspath, not resolve(): `..` is folded, but a symlinked config keeps its own folder
    folder = None if source_path is None else Path(os.path.abspath(source_path)).parent
    reader = _Reader(folder)
    if data is None:
        reader.problems.append("the config file is empty")
    config = reader.read(CONFIG, data, "", source_path=source_path)
    if reader.problems or config is None:
        raise ConfigError(reader.problems)
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_config(data, source_path=path)


def example_config_text() -> str:
    return files("firmware_config").joinpath("doorbell.example.yaml").read_text(encoding="utf-8")
