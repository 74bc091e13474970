"""Which broker of a cluster, and which MQTT version, the device's next connection
attempt uses (protocol.md §3). Pure: sync.mqtt reports what happened, this decides.

- **Order.** The device goes round its URLs in an order drawn once from its device id
  (the same after every restart), so a fleet given one list spreads over the nodes, and
  the devices of a node that dies spread over the others instead of all moving to the
  next one in the file.
- **Moving on.** A connection that could not be made, was refused, or was lost moves
  to the next URL; the link waits its backoff before each attempt (sync.mqtt.Backoff).
- **Version (`mqtt.protocol: auto`).** The first attempt on a broker is MQTT 5. A
  broker that answers a CONNACK "unsupported protocol version" (nats-server), or closes
  the connection before any CONNACK (RabbitMQ before 3.13), is tried again at once with
  3.1.1; once 3.1.1 connects there, that broker keeps 3.1.1 for as long as the daemon
  runs. A 3.1.1 attempt that fails moves on like any failure, and until 3.1.1 has
  connected the broker is tried with 5 again next time round (the close may have been
  the network's, not the broker's).
  Nothing is lost by 3.1.1: the device checks a request's `expires_at` itself, and
  bounds its own unacknowledged messages (sync.acks), whatever the broker does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from sync.settings import AUTO, MQTT5, MQTT311, BrokerEndpoint


class Attempt(Enum):
    """How one connection attempt ended, as the link saw it."""

    CONNECTED = "connected"  # CONNACK success (the connection may since have been lost)
    UNREACHABLE = "unreachable"  # no TCP (or TLS) connection
    CLOSED_BEFORE_CONNACK = "closed before CONNACK"
    VERSION_REFUSED = "unsupported protocol version"  # a CONNACK saying so
    REFUSED = "refused"  # any other CONNACK failure (not authorized, server busy, ...)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how the next attempt connects."""

    endpoint: BrokerEndpoint
    protocol: int  # MQTT5 or MQTT311
    at_once: bool  # a retry of the same broker with 3.1.1: no backoff wait before it


def visiting_order(count: int, device_id: str) -> list[int]:
    """The order this device goes round `count` URLs: a permutation seeded by its id."""
    seed = int.from_bytes(hashlib.sha256(device_id.encode("utf-8")).digest()[:8], "big")
    order = list(range(count))
    random.Random(seed).shuffle(order)  # noqa: S311 (spreading load, not a secret)
    return order


@dataclass(slots=True)
class BrokerRotation:
    endpoints: Sequence[BrokerEndpoint]
    protocol: int  # MQTT5, MQTT311 or AUTO
    device_id: str
    _order: list[int] = field(init=False)
    _position: int = field(init=False, default=0)
    _learned: dict[int, int] = field(init=False, default_factory=dict)  # index -> version
    _confirmed: set[int] = field(init=False, default_factory=set)  # learned, then connected
    _at_once: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("no broker URL")
        self._order = visiting_order(len(self.endpoints), self.device_id)

    def target(self) -> Target:
        index = self._order[self._position]
        return Target(self.endpoints[index], self._version(index), self._at_once)

    def _version(self, index: int) -> int:
        if self.protocol != AUTO:
            return self.protocol
        return self._learned.get(index, MQTT5)

    def report(self, attempt: Attempt) -> Target:
        """What the attempt on `target()` came to; returns the next target."""
        index = self._order[self._position]
        tried = self._version(index)
        self._at_once = False
        if attempt is Attempt.CONNECTED:
            if self.protocol == AUTO:
                self._learned[index] = tried
                self._confirmed.add(index)
        elif (
            self.protocol == AUTO
            and tried == MQTT5
            and attempt in (Attempt.VERSION_REFUSED, Attempt.CLOSED_BEFORE_CONNACK)
        ):
            self._learned[index] = MQTT311
            self._at_once = True
            return self.target()
        elif self.protocol == AUTO and tried == MQTT311 and index not in self._confirmed:
            self._learned.pop(index, None)  # not proven: 5 again next time round
        if attempt is Attempt.CONNECTED and len(self.endpoints) == 1:
            return self.target()
        self._position = (self._position + 1) % len(self._order)
        return self.target()
