"""The `home_assistant:` section's settings (device/home_assistant.py uses them).

Written apart from the schema's other sections so the part it configures owns its
defaults; the broker is described by the sync part's `MqttSettings` (URL, credentials,
TLS), because it is an MQTT broker like the cloud's, though never the same one."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from sync.settings import MqttSettings

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
# Snapshots go out at most this often (a ring, the button in HA, the command topic):
# each one decodes a keyframe on the Pi and sends a JPEG over the home network.
DEFAULT_SNAPSHOT_INTERVAL_S = 10.0
# The sensors (recording, footage kept, free space, requests waiting) are published when
# they change, and looked at this often.
DEFAULT_STATE_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeAssistantSettings:
    """The `home_assistant:` section, key for key; off unless `enabled`. `name` is what
    HA shows for the device."""

    enabled: bool = False
    url: str | None = None  # the home broker, mqtt:// or mqtts://
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    name: str = "Doorbell"
    snapshot_interval_seconds: float = DEFAULT_SNAPSHOT_INTERVAL_S
    state_interval_seconds: float = DEFAULT_STATE_INTERVAL_S  # not a key: tests shorten it

    @property
    def broker(self) -> MqttSettings | None:
        """The home broker as the MQTT part describes a broker; None while off. MQTT
        3.1.1: every home broker speaks it, and nothing here needs MQTT 5."""
        if not self.enabled or self.url is None:
            return None
        return MqttSettings(
            url=self.url,
            username=self.username,
            password_file=self.password_file,
            ca_file=self.ca_file,
            protocol=4,
        )


def _host_key(host: str) -> str:
    """A host as compared: case and a trailing dot do not matter, an IP address is
    compared as an address, and every loopback name is one host."""
    name = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return "loopback" if name == "localhost" else name
    return "loopback" if address.is_loopback else str(address)


def same_broker(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two (host, port) endpoints are the same broker as far as the config can
    tell without asking the network (names are not resolved)."""
    return a[1] == b[1] and _host_key(a[0]) == _host_key(b[0])
