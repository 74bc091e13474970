"""The sync part's own settings: how to reach the broker and how to upload shares.

The config (firmware_config) builds `MqttSettings` and `ShareSettings` directly, taking
each default from here, so each default is written once. This module imports nothing heavy
(no paho, requests or crypto): loading the config does not pay for the parts it
configures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from foundation.wire import MAX_RECEIVE_MAXIMUM
from sync.errors import MqttSettingsError

# protocol.md §6.2 (1.2): an anonymous share's upload starts at a moment drawn uniformly
# between these many minutes after the approval; the owner may choose other bounds, never
# below the floor. (Written here, not in foundation.wire, because loading the config reads
# them and must not import numpy, which the wire module needs for the frame stamp.)
ANONYMOUS_DELAY_MIN_MINUTES = 10
ANONYMOUS_DELAY_MAX_MINUTES = 60
ANONYMOUS_DELAY_FLOOR_MINUTES = 5
# One tus PATCH carries at most this many bytes (sync.tus).
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


# mqtt.protocol: the MQTT version the device speaks. AUTO tries 5 and, where a broker
# refuses it (a CONNACK "unsupported protocol version", or the connection closed before
# any CONNACK), 3.1.1 on the same broker (sync.brokers).
MQTT5 = 5
MQTT311 = 4  # the protocol level 3.1.1 puts in its CONNECT
AUTO = 0
PROTOCOL_NAMES = {MQTT5: "5", MQTT311: "3.1.1", AUTO: "auto"}


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One broker URL: where to connect, and the URL as the owner wrote it (for logs)."""

    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise MqttSettingsError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise MqttSettingsError(f"bad port in {url!r}") from exc
        return cls(url, parts.hostname, port, tls)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """`urls`: the brokers of one cluster, tried in turn (sync.brokers); `url` alone is
    the one-broker form, and names the first of `urls` when both are given."""

    url: str = ""
    urls: tuple[str, ...] = ()
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: int = MQTT5  # MQTT5, MQTT311 or AUTO
    keepalive: int = 60
    # MQTT 5: unacknowledged QoS 1 messages the broker may have in flight to the device
    # (over 3.1.1 the broker's own configuration sets its window; sync.acks)
    receive_maximum: int = MAX_RECEIVE_MAXIMUM

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= MAX_RECEIVE_MAXIMUM:
            raise MqttSettingsError(
                f"receive_maximum must be between 1 and {MAX_RECEIVE_MAXIMUM} (protocol.md §3)"
            )
        if self.protocol not in PROTOCOL_NAMES:
            raise MqttSettingsError('mqtt.protocol must be "5", "3.1.1" or "auto"')
        urls = tuple(dict.fromkeys(self.urls or (self.url,)))  # each broker once, in order
        if self.url and self.url != urls[0]:
            urls = (self.url, *(u for u in urls if u != self.url))
        object.__setattr__(self, "urls", urls)
        object.__setattr__(self, "url", urls[0])

    def endpoints(self) -> tuple[BrokerEndpoint, ...]:
        """Every URL parsed; all plain or all TLS (one client's TLS is set up once)."""
        endpoints = tuple(BrokerEndpoint.parse(url) for url in self.urls)
        if len({e.tls for e in endpoints}) > 1:
            raise MqttSettingsError("mqtt.urls: use mqtts:// for all of them or for none")
        return endpoints

    def endpoint(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the first URL."""
        first = self.endpoints()[0]
        return first.host, first.port, first.tls


@dataclass(frozen=True, kw_only=True)
class ShareSettings:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    bandwidth_bytes_per_s: int | None = None
    max_attempts: int = 12
    allow_plain_http_loopback: bool = False
    retry_base_s: float = 2.0
    retry_cap_s: float = 600.0
    timeout_s: float = 60.0
    # A look at the outbox now and then although nobody woke the worker: only matters
    # when the wall clock moved (sync.uploader says what wakes it).
    idle_wait_s: float = 30.0
    max_origins: int = 4  # lanes at once: shares to this many origins run side by side
    # protocol.md §6.2: an anonymous share's upload starts between these many minutes
    # after the approval (see AnonymousDelay)
    anonymous_delay_min_minutes: float = ANONYMOUS_DELAY_MIN_MINUTES
    anonymous_delay_max_minutes: float = ANONYMOUS_DELAY_MAX_MINUTES

    def __post_init__(self) -> None:
        self.anonymous_delay  # noqa: B018 - refuses bounds below the floor

    @property
    def anonymous_delay(self) -> AnonymousDelay:
        return AnonymousDelay(
            min_minutes=self.anonymous_delay_min_minutes,
            max_minutes=self.anonymous_delay_max_minutes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AnonymousDelay:
    """protocol.md §6.2: the bounds, in minutes, of an anonymous share's start delay.
    The config refuses bounds below the floor; this class refuses them too, so that no
    other way of building the daemon can go below it."""

    min_minutes: float = ANONYMOUS_DELAY_MIN_MINUTES
    max_minutes: float = ANONYMOUS_DELAY_MAX_MINUTES

    def __post_init__(self) -> None:
        if not ANONYMOUS_DELAY_FLOOR_MINUTES <= self.min_minutes <= self.max_minutes:
            raise ValueError(
                f"anonymous start delay must satisfy {ANONYMOUS_DELAY_FLOOR_MINUTES} <= "
                f"min ({self.min_minutes:g}) <= max ({self.max_minutes:g}) minutes"
            )
