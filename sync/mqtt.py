"""The device's MQTT connection (protocol.md §3): one persistent session, manual acks.

`MqttLink` owns the paho-mqtt client: the URL and TLS settings, the persistent session
that makes the broker keep QoS 1 messages while the device is away, the retained
status topic and its last will, subscriptions, and reconnecting. It knows nothing of
requests: every message goes to `on_message` as an `InboundMessage` whose `ack()` the
receiver calls once what the message caused is durably recorded. A message that is
never acked is redelivered by the broker on the next connection, so a crash loses
nothing that was acknowledged.

Choices:

- Persistent session: MQTT 5 with clean start false on *every* connect (not paho's
  "first only", which would wipe the session queued while the daemon was down) and a
  session expiry of 14 days; MQTT 3.1.1 with clean session false.
- Reconnect: paho's own loop reconnects with a doubling delay but no jitter, so a
  fleet that lost one broker would come back in lockstep. Before each wait we set
  paho's delay to our own capped exponential delay with jitter (`Backoff`).
- Size: MQTT 5 asks the broker for packets of at most 64 KiB (Maximum Packet Size),
  so a huge message never reaches memory at all; the 16 KiB protocol limit is applied
  by the receiver, which acks and counts what it drops.
- Acks: an ack from a previous connection is not sent on the new one. The broker
  redelivers that message instead, and the receiver's seen-id check makes the repeat
  cheap; this way a stale packet id can never acknowledge the wrong message.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foundation.backoff import backoff_s
from foundation.display import shown
from foundation.errors import MisuseError
from sync.errors import MqttSettingsError
from sync.settings import MqttSettings

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 14 * 24 * 3600
MAX_PACKET_BYTES = 64 * 1024

_JITTER = random.Random()  # noqa: S311 (jitter, not secrets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """The reconnect's delays (foundation.backoff): attempt n waits between half and all
    of min(cap, initial * 2**n), so reconnecting devices spread out."""

    initial_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return backoff_s(attempt, base_s=self.initial_s, cap_s=self.cap_s, rng=rng or _JITTER)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A received QoS 1 message. Call `ack()` once what it caused is durably recorded
    (or at once for junk); until then the broker keeps it for redelivery."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = field(repr=False)
    received_mono: float = 0.0


def status_payload(state: str, version: str | None = None) -> bytes:
    doc: dict[str, str] = {"state": state}
    if version is not None:
        doc["version"] = version
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


class PacketTooLarge(OSError):
    """An incoming MQTT packet announced more than MAX_PACKET_BYTES."""


class BoundedClient(paho.Client):
    """paho's client, refusing incoming packets over `MAX_PACKET_BYTES` at the socket.

    paho asks the broker for a Maximum Packet Size but does not enforce it on what it
    reads: once it has decoded a packet's remaining length it calls `_sock_recv` with the
    whole of it, and `socket.recv(n)` allocates n bytes at once (up to 256 MiB). A hostile
    broker could make the daemon allocate that for one PUBLISH, and, never acked, it
    would come back after every reconnect. paho has no hook for this, so we override its
    one read primitive: when the packet being read announced more than the limit, the
    read fails before anything is allocated, paho treats it as a lost connection, drops
    the socket and reconnects (the broker may redeliver; it is refused the same way, for
    the cost of a header). Reads are also never asked for more than 64 KiB at once."""

    refused_packets = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = getattr(self, "_in_packet", None)
        announced = packet["remaining_length"] if packet and packet.get("have_remaining") else 0
        if announced > MAX_PACKET_BYTES:
            type(self).refused_packets += 1
            logger.warning(
                "MQTT: the broker sent a packet of %d bytes (limit %d); dropping the connection",
                announced,
                MAX_PACKET_BYTES,
            )
            raise PacketTooLarge("incoming MQTT packet over the limit")
        return bytes(super()._sock_recv(min(bufsize, 64 * 1024)))


class MqttLink:
    """The connection to the broker. `start()` returns at once; connecting, reconnecting
    and delivery happen on paho's network thread. Setting `stop` (or calling `.stop()`)
    publishes the offline status and disconnects."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        status_topic: str,
        version: str,
        subscriptions: Sequence[str],
        on_message: Callable[[InboundMessage], None],
        stop: threading.Event,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._status_topic = status_topic
        self._version = version
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._stop = stop
        self._backoff = backoff
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0  # bumped on every connection; acks of older ones are dropped
        self._attempt = 0
        self._watcher: threading.Thread | None = None
        self.connections = 0  # successful connections so far (for tests and health)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._client is not None:
            raise MisuseError("MqttLink already started")
        host, port, tls = self._settings.endpoint()
        client = self._make_client(tls)
        self._client = client
        first = self._backoff.delay(0)
        client.reconnect_delay_set(min_delay=first, max_delay=first)  # type: ignore[arg-type]
        if self._settings.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = self._settings.receive_maximum
            props.MaximumPacketSize = MAX_PACKET_BYTES
            client.connect_async(
                host, port, self._settings.keepalive, clean_start=False, properties=props
            )
        else:
            client.connect_async(host, port, self._settings.keepalive)
        client.loop_start()
        self._watcher = threading.Thread(target=self._watch_stop, name="mqtt-stop", daemon=True)
        self._watcher.start()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Publish the offline status (a clean disconnect does not fire the will) and
        disconnect. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        client = self._client
        if client is None:
            return
        if self._connected.is_set():
            try:
                info = client.publish(
                    self._status_topic, status_payload("offline"), qos=1, retain=True
                )
                info.wait_for_publish(timeout=min(timeout, 2.0))
            except (RuntimeError, ValueError, OSError) as exc:
                logger.warning("could not publish the offline status: %s", shown(exc))
        client.disconnect()
        # loop_stop joins without a timeout; paho's thread exits within about a second
        # of disconnect (its reconnect wait polls once a second).
        joiner = threading.Thread(target=client.loop_stop, daemon=True)
        joiner.start()
        joiner.join(timeout)
        self._connected.clear()

    def _watch_stop(self) -> None:
        while not self._closed.is_set():
            if self._stop.wait(0.5):
                self.stop()
                return

    # ---- outbound --------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; paho sends it now or after the next reconnect (QoS >= 1).
        False when the link is not started or paho refused it."""
        client = self._client
        if client is None or self._closed.is_set():
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)

    # ---- paho callbacks (network thread) ---------------------------------------------

    def _make_client(self, tls: bool) -> paho.Client:
        s = self._settings
        if s.protocol == 5:
            client = BoundedClient(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=paho.MQTTv5,
                manual_ack=True,
            )
        elif s.protocol == 4:
            client = BoundedClient(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=paho.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        else:
            raise MqttSettingsError(f"mqtt protocol must be 5 or 4 (3.1.1), not {s.protocol}")
        if tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        elif s.ca_file or s.cert_file:
            raise MqttSettingsError("ca_file/cert_file need an mqtts:// URL")
        if s.username is not None:
            client.username_pw_set(s.username, self._read_password())
        client.will_set(self._status_topic, status_payload("offline"), qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        return client

    def _read_password(self) -> str | None:
        path = self._settings.password_file
        if path is None:
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problem = f"cannot read mqtt password file {path}: {exc.strerror}"
            raise MqttSettingsError(problem) from exc
        lines = text.splitlines()
        return lines[0] if lines else ""

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            logger.warning(
                "the MQTT broker at %s refused the connection: %s",
                self._settings.url,
                shown(reason),
            )
            self._schedule_retry(client)
            return
        with self._lock:
            self._generation += 1
            self._attempt = 0
        self.connections += 1
        session = getattr(flags, "session_present", None)
        logger.info(
            "connected to the MQTT broker at %s (session present: %s)", self._settings.url, session
        )
        client.publish(
            self._status_topic, status_payload("online", self._version), qos=1, retain=True
        )
        if self._subscriptions:
            client.subscribe([(topic, 1) for topic in self._subscriptions])
        self._connected.set()

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if not self._closed.is_set():
            logger.warning(
                "disconnected from the MQTT broker at %s: %s", self._settings.url, shown(reason)
            )
            self._schedule_retry(client)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connection attempt and
        # passes no reason: the exception being handled is the reason.
        exc = sys.exc_info()[1]
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "unknown reason"
        logger.warning(
            "cannot reach the MQTT broker at %s: %s; retrying", self._settings.url, shown(reason)
        )
        self._schedule_retry(client)

    def _schedule_retry(self, client: paho.Client) -> None:
        with self._lock:
            delay = self._backoff.delay(self._attempt)
            self._attempt += 1
        # paho waits min_delay before the next attempt (its doubling starts again from
        # min_delay after every reset), so setting both bounds makes it wait `delay`.
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def _handle_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        generation = self._generation
        mid, qos = message.mid, message.qos
        done = threading.Event()

        def ack() -> None:
            if done.is_set():
                return
            done.set()
            if qos == 0 or generation != self._generation or self._closed.is_set():
                return
            client.ack(mid, qos)

        inbound = InboundMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            ack=ack,
            received_mono=time.monotonic(),
        )
        try:
            self._on_message(inbound)
        except Exception:
            # A receiver bug must not kill paho's thread; the message stays unacked
            # and comes back after the next reconnect.
            logger.exception("message handler failed on %s", shown(message.topic))
