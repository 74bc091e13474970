"""Schema of doorbell.yaml: one strict tree.

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
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from foundation.errors import InvalidValueError, UsageError
from foundation.wire import MAX_RECEIVE_MAXIMUM
from recorder.settings import PRESETS, CameraSettings, StorageSettings
from sync.keys import parse_recipient, public_key_from_b64
from sync.settings import (
    ANONYMOUS_DELAY_FLOOR_MINUTES,
    AUTO,
    MQTT5,
    MQTT311,
    AnonymousDelay,
    MqttSettings,
    ShareSettings,
)

T = TypeVar("T")

# The longest anonymous start delay the config takes: a day. Longer would hold a share's
# footage pinned, and the owner waiting, for no gain the protocol asks for.
MAX_ANONYMOUS_DELAY_MINUTES = 24 * 60


def _default_of(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls`: each default is written once, in
    the settings of the part that uses it or, for keys only the config has, below."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


class ConfigError(UsageError):
    """The config is unusable; `problems` lists every error as 'key.path: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None = None
    email: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    lat: float
    lon: float
    contact: Contact = field(default_factory=Contact)


@dataclass(frozen=True, slots=True)
class CameraConfig:
    source: str
    device: str | int = 0
    width: int = _default_of(CameraSettings, "width")
    height: int = _default_of(CameraSettings, "height")
    fps: int = int(_default_of(CameraSettings, "fps"))
    preset: str = _default_of(CameraSettings, "preset")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    dir: Path
    segment_seconds: int = int(_default_of(StorageSettings, "segment_seconds"))
    max_age_hours: float = _default_of(StorageSettings, "max_age_hours")
    max_bytes: int = _default_of(StorageSettings, "max_bytes")
    min_free_bytes: int = _default_of(StorageSettings, "min_free_bytes")


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
    share_contact_by_default: bool = True
    sync_seconds: float = 300.0
    button_pin: int | str | None = None
    led_pin: int | str | None = None


@dataclass(frozen=True, slots=True)
class ShareConfig:
    chunk_bytes: int = _default_of(ShareSettings, "chunk_bytes")
    bandwidth_bytes_per_s: int | None = None
    max_attempts: int = _default_of(ShareSettings, "max_attempts")
    # protocol.md §6.2: an anonymous share's upload starts between these many minutes
    # after the approval (never below wire.ANONYMOUS_DELAY_FLOOR_MINUTES)
    anonymous_delay_min_minutes: float = _default_of(AnonymousDelay, "min_minutes")
    anonymous_delay_max_minutes: float = _default_of(AnonymousDelay, "max_minutes")

    @property
    def anonymous_delay(self) -> AnonymousDelay:
        return AnonymousDelay(
            min_minutes=self.anonymous_delay_min_minutes,
            max_minutes=self.anonymous_delay_max_minutes,
        )


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
    camera: CameraConfig
    storage: StorageConfig
    mqtt: MqttSettings  # the sync part's own settings, built here (each default once)
    rfa: RfaConfig = field(default_factory=RfaConfig)
    owner: OwnerConfig = field(default_factory=OwnerConfig)
    share: ShareConfig = field(default_factory=ShareConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    source_path: Path | None = None

    @property
    def state_dir(self) -> Path:
        """Daemon state (keys, state db, audit log, outbox) lives beside the buffer."""
        return self.storage.dir / "state"

    @property
    def buffer_dir(self) -> Path:
        return self.storage.dir / "buffer"


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


class _Reader:
    """Walks the YAML tree, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, data: object, path: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problems.append(f"{path}: expected a mapping, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                where = f"{path}.{key}" if path else str(key)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problems.append(f"{where}: unknown key{extra}")
        return data

    def get(
        self,
        data: Mapping[str, Any],
        path: str,
        key: str,
        convert: Callable[[object], T],
        default: T | None = None,
        *,
        required: bool = False,
    ) -> T | None:
        where = f"{path}.{key}" if path else key
        if key not in data or data[key] is None:
            if required:
                self.problems.append(f"{where}: required")
            return default
        try:
            return convert(data[key])
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{where}: {exc}")
            return default

    def value(
        self, data: Mapping[str, Any], path: str, key: str, convert: Callable[[object], T], of: type
    ) -> Any:
        """Key `key`, or the default of the field of that name of config dataclass `of`
        when it is absent or wrong (a wrong value is a problem already). Never `x or
        default`: a 0 that is out of range is an error naming its key, not a default."""
        default = _default_of(of, key)
        got = self.get(data, path, key, convert, default)
        return default if got is None else got


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


def _paths_under(folder: Path | None) -> Callable[[object], Path]:
    """A path as the config file means it: a relative one (`storage: {dir: ./var}`) is
    read from the config file's folder, not from wherever a command happens to run, so
    `doorbellctl` finds the daemon's socket and buffer from any directory."""

    def convert(value: object) -> Path:
        path = Path(_str(value))
        return path if folder is None else folder / path

    return convert


def _pin(value: object) -> int | str:
    if isinstance(value, bool):
        raise InvalidValueError("expected a GPIO number or name such as 17 or 'GPIO17'")
    if isinstance(value, int) and 0 <= value <= 63:
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidValueError("expected a GPIO number or name such as 17 or 'GPIO17'")


def _mqtt_url(value: object) -> str:
    text = _str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise InvalidValueError("expected mqtt://host[:port] or mqtts://host[:port]")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidValueError("the port is not a number from 0 to 65535") from exc
    if parts.username or parts.password:
        raise InvalidValueError(
            "put credentials in mqtt.username and mqtt.password_file, not the URL"
        )
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
    """One URL, or a list of the URLs of one broker cluster (sync.brokers)."""
    urls = _list(_mqtt_url)(value) if isinstance(value, list) else (_mqtt_url(value),)
    if not urls:
        raise InvalidValueError("expected at least one mqtt:// or mqtts:// URL")
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise InvalidValueError("use mqtts:// for all of the URLs or for none")
    return urls


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


def parse_config(data: object, *, source_path: Path | None = None) -> Config:
    r = _Reader()
    # abspath, not resolve(): `..` is folded, but a symlinked config keeps its own folder
    _path = _paths_under(None if source_path is None else Path(os.path.abspath(source_path)).parent)
    top = r.section(
        data,
        "",
        ("device", "camera", "storage", "mqtt", "rfa", "owner", "share", "control", "console"),
    )
    if data is None:
        r.problems.append("the config file is empty")

    dev = r.section(top.get("device"), "device", ("id", "location", "contact"))
    if "device" not in top:
        r.problems.append("device: required")
    loc = r.section(dev.get("location"), "device.location", ("lat", "lon"))
    if "location" not in dev:
        r.problems.append("device.location: required")
    contact = r.section(dev.get("contact"), "device.contact", ("name", "email", "address"))
    device = DeviceConfig(
        id=r.get(dev, "device", "id", _device_id, "", required=True) or "",
        lat=r.get(loc, "device.location", "lat", _number(-90, 90), 0.0, required=bool(loc)) or 0.0,
        lon=r.get(loc, "device.location", "lon", _number(-180, 180), 0.0, required=bool(loc))
        or 0.0,
        contact=Contact(
            name=r.get(contact, "device.contact", "name", _str),
            email=r.get(contact, "device.contact", "email", _str),
            address=r.get(contact, "device.contact", "address", _str),
        ),
    )

    cam = r.section(
        top.get("camera"), "camera", ("source", "device", "width", "height", "fps", "preset")
    )
    if "camera" not in top:
        r.problems.append("camera: required")
    camera_device = cam.get("device", 0)
    if isinstance(camera_device, bool) or not isinstance(camera_device, int | str):
        r.problems.append("camera.device: expected a camera index, a device path or a URL")
        camera_device = 0
    camera = CameraConfig(
        source=r.get(
            cam, "camera", "source", _choice("synthetic", "opencv", "picamera2"), required=True
        )
        or "synthetic",
        device=camera_device,
        width=r.value(cam, "camera", "width", _int(16, 7680), CameraConfig),
        height=r.value(cam, "camera", "height", _int(16, 4320), CameraConfig),
        fps=r.value(cam, "camera", "fps", _int(1, 60), CameraConfig),
        preset=r.value(cam, "camera", "preset", _choice(*PRESETS), CameraConfig),
    )
    if camera.width % 2 or camera.height % 2:
        r.problems.append("camera.width/height: H.264 needs even dimensions")

    sto = r.section(
        top.get("storage"),
        "storage",
        ("dir", "segment_seconds", "max_age_hours", "max_bytes", "min_free_bytes"),
    )
    if "storage" not in top:
        r.problems.append("storage: required")
    storage = StorageConfig(
        dir=r.get(sto, "storage", "dir", _path, Path("."), required=True) or Path("."),
        segment_seconds=r.value(sto, "storage", "segment_seconds", _int(1, 60), StorageConfig),
        max_age_hours=r.value(
            sto, "storage", "max_age_hours", _number(0.01, 24 * 365), StorageConfig
        ),
        max_bytes=r.value(sto, "storage", "max_bytes", _size(16 * 1024**2), StorageConfig),
        min_free_bytes=r.value(sto, "storage", "min_free_bytes", _size(0), StorageConfig),
    )

    mq = r.section(
        top.get("mqtt"),
        "mqtt",
        (
            "url",
            "urls",
            "username",
            "password_file",
            "ca_file",
            "cert_file",
            "key_file",
            "protocol",
            "keepalive",
            "receive_maximum",
        ),
    )
    if "mqtt" not in top:
        r.problems.append("mqtt: required")
    if "url" in mq and "urls" in mq:
        r.problems.append("mqtt.url/urls: give one of them (url may also be a list)")
    urls = r.get(mq, "mqtt", "urls" if "urls" in mq else "url", _mqtt_urls, required=True)
    mqtt = MqttSettings(
        urls=urls or ("",),
        username=r.get(mq, "mqtt", "username", _str),
        password_file=r.get(mq, "mqtt", "password_file", _path),
        ca_file=r.get(mq, "mqtt", "ca_file", _path),
        cert_file=r.get(mq, "mqtt", "cert_file", _path),
        key_file=r.get(mq, "mqtt", "key_file", _path),
        protocol=r.value(mq, "mqtt", "protocol", _mqtt_protocol, MqttSettings),
        keepalive=r.value(mq, "mqtt", "keepalive", _int(5, 3600), MqttSettings),
        receive_maximum=r.value(
            mq, "mqtt", "receive_maximum", _int(1, MAX_RECEIVE_MAXIMUM), MqttSettings
        ),
    )
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        r.problems.append("mqtt.cert_file/key_file: give both or neither")

    rf = r.section(
        top.get("rfa"),
        "rfa",
        ("enabled", "decide_within_hours", "allow_plain_http_loopback", "trusted_agencies"),
    )
    agencies: list[TrustedAgency] = []
    raw_agencies = rf.get("trusted_agencies") or []
    if not isinstance(raw_agencies, list):
        r.problems.append("rfa.trusted_agencies: expected a list")
        raw_agencies = []
    for index, entry in enumerate(raw_agencies):
        where = f"rfa.trusted_agencies[{index}]"
        ag = r.section(entry, where, ("agency_id", "public_key"))
        agency_id = r.get(ag, where, "agency_id", _str, required=True)
        key = r.get(ag, where, "public_key", _b64_key, required=True)
        if agency_id and key:
            agencies.append(TrustedAgency(agency_id=agency_id, public_key=key))
    rfa = RfaConfig(
        enabled=r.value(rf, "rfa", "enabled", _bool, RfaConfig),
        decide_within_hours=r.value(
            rf, "rfa", "decide_within_hours", _number(0.01, 24 * 14), RfaConfig
        ),
        allow_plain_http_loopback=r.value(rf, "rfa", "allow_plain_http_loopback", _bool, RfaConfig),
        trusted_agencies=tuple(agencies),
    )

    ow = r.section(
        top.get("owner"),
        "owner",
        (
            "keys",
            "recipients",
            "share_contact_by_default",
            "sync_seconds",
            "button_pin",
            "led_pin",
        ),
    )
    owner = OwnerConfig(
        keys=r.value(ow, "owner", "keys", _list(_b64_key), OwnerConfig),
        recipients=r.value(ow, "owner", "recipients", _list(_recipient), OwnerConfig),
        share_contact_by_default=r.value(
            ow, "owner", "share_contact_by_default", _bool, OwnerConfig
        ),
        sync_seconds=r.value(ow, "owner", "sync_seconds", _number(0.2, 86400), OwnerConfig),
        button_pin=r.get(ow, "owner", "button_pin", _pin),
        led_pin=r.get(ow, "owner", "led_pin", _pin),
    )

    sh = r.section(
        top.get("share"),
        "share",
        (
            "chunk_bytes",
            "bandwidth_bytes_per_s",
            "max_attempts",
            "anonymous_delay_min_minutes",
            "anonymous_delay_max_minutes",
        ),
    )
    delay_minutes = _number(ANONYMOUS_DELAY_FLOOR_MINUTES, MAX_ANONYMOUS_DELAY_MINUTES)
    share = ShareConfig(
        chunk_bytes=r.value(sh, "share", "chunk_bytes", _size(64 * 1024), ShareConfig),
        bandwidth_bytes_per_s=r.get(sh, "share", "bandwidth_bytes_per_s", _size(1024)),
        max_attempts=r.value(sh, "share", "max_attempts", _int(1, 1000), ShareConfig),
        anonymous_delay_min_minutes=r.value(
            sh, "share", "anonymous_delay_min_minutes", delay_minutes, ShareConfig
        ),
        anonymous_delay_max_minutes=r.value(
            sh, "share", "anonymous_delay_max_minutes", delay_minutes, ShareConfig
        ),
    )
    delay_ok = not any(p.startswith("share.anonymous_delay") for p in r.problems)
    if delay_ok and share.anonymous_delay_max_minutes < share.anonymous_delay_min_minutes:
        r.problems.append(
            "share.anonymous_delay_max_minutes: must be at least"
            f" share.anonymous_delay_min_minutes ({share.anonymous_delay_min_minutes:g})"
        )

    ctl = r.section(top.get("control"), "control", ("socket",))
    control = ControlConfig(socket=r.value(ctl, "control", "socket", _path, ControlConfig))

    con = r.section(top.get("console"), "console", ("listen", "cert_file", "key_file"))
    console = ConsoleConfig(
        listen=r.get(con, "console", "listen", _listen),
        cert_file=r.get(con, "console", "cert_file", _path),
        key_file=r.get(con, "console", "key_file", _path),
    )
    if (console.cert_file is None) != (console.key_file is None):
        r.problems.append("console.cert_file/key_file: give both or neither")

    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        device=device,
        camera=camera,
        storage=storage,
        mqtt=mqtt,
        rfa=rfa,
        owner=owner,
        share=share,
        control=control,
        console=console,
        source_path=source_path,
    )


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
