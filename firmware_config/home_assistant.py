"""The `home_assistant:` section's settings (device/home_assistant.py uses them).

Written apart from the schema's other sections so the part it configures owns its
defaults; the broker is described by the sync part's `MqttSettings` (URL, credentials,
TLS), because it is an MQTT broker like the cloud's, though never the same one."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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
    """`broker` None: off (the default). `name` is what HA shows for the device."""

    broker: MqttSettings | None = None
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    name: str = "Doorbell"
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S
    state_interval_s: float = DEFAULT_STATE_INTERVAL_S

    @property
    def enabled(self) -> bool:
        return self.broker is not None


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
