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
  session expiry of 14 days; MQTT 3.1.1 with clean session false (the broker's own
  setting then says how long it keeps a session).
- Brokers and versions (sync.brokers): `mqtt.urls` lists the nodes of one cluster; a
  lost, refused or failed connection moves to the next. With `mqtt.protocol: auto` a
  broker that refuses MQTT 5 is asked again with 3.1.1. One paho client serves them
  all: before each attempt (paho's `on_pre_connect`, between the old socket and the
  new) the link points it at the next target (`BoundedClient.aim`).
- Reconnect: paho's own loop reconnects with a doubling delay but no jitter, so a
  fleet that lost one broker would come back in lockstep. Before each wait we set
  paho's delay to our own capped exponential delay with jitter (`Backoff`).
- Size: MQTT 5 asks the broker for packets of at most 64 KiB (Maximum Packet Size),
  and `BoundedClient` refuses a bigger one at the socket over either version, so a huge
  message never reaches memory at all; the 16 KiB protocol limit is applied by the
  receiver, which acks and counts what it drops.
- Acks: an ack from a previous connection is not sent on the new one. The broker
  redelivers that message instead, and the receiver's seen-id check makes the repeat
  cheap; this way a stale packet id can never acknowledge the wrong message.
- Ack timing (protocol.md §3, revision 1.2): `AckSequencer` (sync.acks) sends the PUBACKs of one
  connection in the order the PUBLISHes arrived, as MQTT requires, each not before its
  earliest time: a message the receiver says verified is acknowledged `ack_delay_s`
  (the protocol's 2.0 s) after it arrived, whatever its outcome, so the broker cannot
  time the outcome's disk writes; junk at once, but never ahead of an earlier message.
  The waits happen on the sequencer's own timer thread, never on paho's network thread,
  which keeps reading; the broker's in-flight window (Receive Maximum) bounds how many
  acks can be outstanding.
- What the device keeps for the broker (protocol.md §3, 1.2): a PUBLISH above the QoS
  the device subscribed at ends the connection unstored (`BoundedClient`); over MQTT 5
  the device announces a Receive Maximum of at most 16. Over 3.1.1 the broker is told
  nothing: its own window (its configuration) bounds what it sends, and over either
  version the device stops reading while `MAX_OWED_ACKS` acknowledgements are owed
  (sync.acks), the backstop against a broker that keeps no window. Everything
  the device publishes (status, the two owner topics) is retained, so only the newest
  message of a topic matters: `publish_latest` keeps at most one per topic, queues
  nothing while offline, and what paho still held from a lost connection is dropped on
  reconnect, never sent as a backlog.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foundation.backoff import backoff_s
from foundation.display import shown
from foundation.errors import MisuseError
from foundation.wire import ACK_DELAY_S, SUBSCRIPTION_QOS
from sync.acks import MAX_OWED_ACKS, AckHandle, AckSequencer
from sync.brokers import Attempt, BrokerRotation, Target
from sync.errors import MqttSettingsError
from sync.settings import MQTT5, PROTOCOL_NAMES, MqttSettings

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 14 * 24 * 3600
MAX_PACKET_BYTES = 64 * 1024
# paho's outgoing queue, a backstop under publish_latest's one message per topic (the
# device publishes three topics): no path can make paho keep more than this.
MAX_OUTGOING_MESSAGES = 8

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
    (`verified=True` when its signature verified: the PUBACK then goes out the protocol's
    fixed delay after `received_mono`; junk is acknowledged at once, in arrival order).
    Until then the broker keeps it for redelivery; `withhold()` gives up on it for this
    connection (the broker redelivers it on the next), so later acks are not held."""

    topic: str
    payload: bytes
    handle: AckHandle = field(repr=False)
    received_mono: float = 0.0

    def ack(self, *, verified: bool = False) -> None:
        self.handle.release(verified=verified)

    def withhold(self) -> None:
        self.handle.withhold()


def wait_before_reconnect(client: paho.Client, delay_s: float) -> None:
    """Make paho's loop wait `delay_s` before its next connection attempt: paho waits
    min_delay (its doubling starts again from min_delay after every reset), so setting
    both bounds makes it wait exactly our backoff's delay, jitter included."""
    client.reconnect_delay_set(min_delay=delay_s, max_delay=delay_s)  # type: ignore[arg-type]


def disconnect_and_stop_loop(client: paho.Client, timeout: float) -> None:
    """Disconnect and stop paho's network thread, waiting at most `timeout` for it.

    loop_stop joins without a timeout; paho's thread exits within about a second of
    disconnect (its reconnect wait polls once a second), so it is joined from a daemon
    thread that is given up on after `timeout`."""
    client.disconnect()
    joiner = threading.Thread(target=client.loop_stop, daemon=True)
    joiner.start()
    joiner.join(timeout)


def status_payload(state: str, version: str | None = None) -> bytes:
    doc: dict[str, str] = {"state": state}
    if version is not None:
        doc["version"] = version
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _held_by_paho(info: paho.MQTTMessageInfo) -> bool:
    """Whether paho still keeps this QoS 1 message: sent and not yet acknowledged, or
    queued for a connection that has just dropped (NO_CONN)."""
    if info.rc == paho.MQTT_ERR_SUCCESS:
        return not info.is_published()
    return info.rc == paho.MQTT_ERR_NO_CONN


class PacketTooLarge(OSError):
    """An incoming MQTT packet announced more than MAX_PACKET_BYTES."""


class BoundedClient(paho.Client):
    """paho's client, refusing incoming packets over `MAX_PACKET_BYTES` at the socket,
    and PUBLISHes above the QoS the device subscribed at before they are stored.

    paho asks the broker for a Maximum Packet Size but does not enforce it on what it
    reads: once it has decoded a packet's remaining length it calls `_sock_recv` with the
    whole of it, and `socket.recv(n)` allocates n bytes at once (up to 256 MiB). A hostile
    broker could make the daemon allocate that for one PUBLISH, and, never acked, it
    would come back after every reconnect. paho has no hook for this, so we override its
    one read primitive: when the packet being read announced more than the limit, the
    read fails before anything is allocated, paho treats it as a lost connection, drops
    the socket and reconnects (the broker may redeliver; it is refused the same way, for
    the cost of a header). Reads are also never asked for more than 64 KiB at once.

    QoS: the device subscribes at QoS 1, so a broker may deliver at most QoS 1. paho
    nevertheless answers a QoS 2 PUBLISH with PUBREC and keeps the message until the
    broker's PUBREL, which a hostile broker never sends: 6,000 PUBLISHes of 65 KB took
    the daemon from 62 to 482 MB. `_handle_publish` is the one place paho decides that,
    after the (bounded) packet is read and before it is decoded or stored; our override
    reads the QoS bits of the fixed header and answers a protocol error instead, which
    paho handles like a lost connection (socket closed, on_disconnect, reconnect)."""

    refused_packets = 0  # this client's, both kinds (MqttLink.refused_packets)
    refused_here = False  # this connection ended on a refusal (MqttLink's backoff reads it)

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = getattr(self, "_in_packet", None)
        announced = packet["remaining_length"] if packet and packet.get("have_remaining") else 0
        if announced > MAX_PACKET_BYTES:
            logger.warning(
                "MQTT: the broker sent a packet of %d bytes (limit %d); dropping the connection",
                announced,
                MAX_PACKET_BYTES,
            )
            self._refused()
            raise PacketTooLarge("incoming MQTT packet over the limit")
        return bytes(super()._sock_recv(min(bufsize, 64 * 1024)))

    def _handle_publish(self) -> MQTTErrorCode:
        qos = (self._in_packet["command"] & 0x06) >> 1
        if qos > SUBSCRIPTION_QOS:
            logger.warning(
                "MQTT: the broker sent a QoS %d PUBLISH to a QoS %d subscription;"
                " dropping the connection without storing it",
                qos,
                SUBSCRIPTION_QOS,
            )
            self._refused()
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        return super()._handle_publish()

    def _refused(self) -> None:
        self.refused_packets += 1
        self.refused_here = True

    def aim(self, host: str, port: int, protocol: int) -> None:
        """Point the next connection at `host:port` with MQTT `protocol` (5 or 4), a
        persistent session either way. Only from `on_pre_connect`: paho calls it in
        `reconnect()` after closing the old socket and before opening the new one, the
        one moment nothing uses these. paho's own setters refuse then (its state is
        already "connecting"), and its protocol has no setter at all, though paho itself
        changes it the same way when a broker refuses 3.1.1 (falling back to 3.1)."""
        self._host, self._port = host, port
        self._protocol = paho.MQTTv5 if protocol == MQTT5 else paho.MQTTv311
        self._clean_session = False  # read by paho for 3.1.1 only

    def take_refusal(self) -> bool:
        """Whether the connection that just ended was dropped for the broker's fault
        (and forget it, for the next connection)."""
        refused, self.refused_here = self.refused_here, False
        return refused


@dataclass(slots=True)
class PublishDrops:
    """Messages `publish_latest` did not hand to paho (shown by `doorbellctl status`)."""

    offline: int = 0  # the link was down: nothing is queued while offline
    unacknowledged: int = 0  # the topic's previous message was still not acknowledged


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
        ack_delay_s: float = ACK_DELAY_S,
        max_owed_acks: int = MAX_OWED_ACKS,
    ) -> None:
        """`ack_delay_s` is the protocol's (foundation.wire.ACK_DELAY_S) and
        `max_owed_acks` sync.acks'; only tests change them."""
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
        self._ack_delay_s = ack_delay_s
        # per connection; see its docstring
        self._acks = AckSequencer(delay_s=ack_delay_s, limit=max_owed_acks)
        self._attempt = 0
        self._rotation: BrokerRotation | None = None
        self._target: Target | None = None  # what the current attempt connects to
        self._outcome: Attempt | None = None  # the current attempt's CONNACK, if any
        self._reported = True  # the current attempt's end went to the rotation
        self._in_use: Target | None = None  # while connected
        self._watcher: threading.Thread | None = None
        self._refusals = 0  # connections in a row that ended on the broker's fault
        self._outbound_lock = threading.Lock()
        self._latest: dict[str, paho.MQTTMessageInfo] = {}  # per topic, the last one sent
        self._holding_back: set[str] = set()  # topics whose last message is unacknowledged
        self.connections = 0  # successful connections so far (doorbellctl status)
        self.dropped = PublishDrops()

    @property
    def refused_packets(self) -> int:
        """Packets from the broker refused so far (doorbellctl status)."""
        client = self._client
        return client.refused_packets if isinstance(client, BoundedClient) else 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def broker(self) -> tuple[str, str] | None:
        """(URL, MQTT version) of the broker while connected, for the status."""
        target = self._in_use
        if target is None or not self._connected.is_set():
            return None
        return target.endpoint.url, PROTOCOL_NAMES[target.protocol]

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._client is not None:
            raise MisuseError("MqttLink already started")
        endpoints = self._settings.endpoints()
        self._rotation = BrokerRotation(endpoints, self._settings.protocol, self._client_id)
        self._target = target = self._rotation.target()
        client = self._make_client(target.endpoint.tls)
        self._client = client
        wait_before_reconnect(client, self._backoff.delay(0))
        client.max_queued_messages_set(MAX_OUTGOING_MESSAGES)
        # Sent only over MQTT 5 (paho leaves them out of a 3.1.1 CONNECT).
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self._settings.receive_maximum
        props.MaximumPacketSize = MAX_PACKET_BYTES
        client.connect_async(
            target.endpoint.host,
            target.endpoint.port,
            self._settings.keepalive,
            clean_start=False,
            properties=props,
        )
        self._acks.start()
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
        # The acks already released go before the offline status (a verified one at its
        # time, within the stop's budget); the rest are redelivered next time.
        self._acks.close(settle_s=min(timeout, self._ack_delay_s + 0.5))
        if self._connected.is_set():
            wait_s = min(timeout, 2.0) / 2
            try:
                # The online status may still await its PUBACK: one message per topic.
                with self._outbound_lock:
                    online = self._latest.get(self._status_topic)
                if online is not None and _held_by_paho(online):
                    online.wait_for_publish(timeout=wait_s)
                info = self._publish_once(client, self._status_topic, status_payload("offline"))
                if info is None:
                    logger.warning("could not publish the offline status: no acknowledgement")
                else:
                    info.wait_for_publish(timeout=wait_s)
            except (RuntimeError, ValueError, OSError) as exc:
                logger.warning("could not publish the offline status: %s", shown(exc))
        disconnect_and_stop_loop(client, timeout)
        self._connected.clear()

    def _watch_stop(self) -> None:
        while not self._closed.is_set():
            if self._stop.wait(0.5):
                self.stop()
                return

    # ---- outbound --------------------------------------------------------------------

    def publish_latest(self, topic: str, payload: bytes) -> bool:
        """Publish the newest state of a retained topic, QoS 1 (protocol.md §3: what the
        device keeps for the broker). True when it went out; False, and counted in
        `dropped`, when the link is down (nothing is queued while offline: the topic's
        next message comes on its own grid after the reconnect) or the topic's previous
        message still awaits its PUBACK.

        Why not replace that previous message instead: once sent, a PUBLISH cannot be
        taken back, and sending the new one as well would leave two unacknowledged
        messages of the topic at the broker (and in paho's memory, for a broker that
        never acknowledges). So the newest message goes out as soon as the broker has
        acknowledged the last one; until then the next ones are skipped, and one line
        is logged when that starts and one when it ends."""
        client = self._client
        if client is None or self._closed.is_set() or not self._connected.is_set():
            self.dropped.offline += 1
            return False
        info = self._publish_once(client, topic, payload)
        # NO_CONN: the connection dropped a moment ago; paho keeps the message until the
        # next connect, which drops it (`_forget_outbound`).
        return info is not None and info.rc == paho.MQTT_ERR_SUCCESS

    def _publish_once(
        self, client: paho.Client, topic: str, payload: bytes
    ) -> paho.MQTTMessageInfo | None:
        """Hand the message to paho unless the topic's last one is still held there
        (None then, counted and logged)."""
        with self._outbound_lock:
            previous = self._latest.get(topic)
            if previous is not None and _held_by_paho(previous):
                self.dropped.unacknowledged += 1
                if topic not in self._holding_back:
                    self._holding_back.add(topic)
                    logger.warning(
                        "MQTT: the broker has not acknowledged the last message on %s;"
                        " holding the next ones back until it does",
                        shown(topic),
                    )
                return None
            if topic in self._holding_back:
                self._holding_back.discard(topic)
                logger.info("MQTT: the broker acknowledged %s again", shown(topic))
            info = client.publish(topic, payload, qos=1, retain=True)
            self._latest[topic] = info
        return info

    def _forget_outbound(self, client: paho.Client) -> None:
        """A new connection: drop what paho still holds from the last one. paho would
        resend every unacknowledged message on a kept session; they are all retained
        states the device publishes afresh, so resending them would be a stale backlog.
        (QoS 1 gives the broker no state to keep for them, so nothing is lost.)"""
        with self._outbound_lock:
            dropped = client.drop_out_messages()
            self._latest.clear()
            self._holding_back.clear()
        if dropped:
            logger.info(
                "MQTT: %d unacknowledged message(s) of the last connection dropped", len(dropped)
            )

    # ---- paho callbacks (network thread) ---------------------------------------------

    def _make_client(self, tls: bool) -> paho.Client:
        s = self._settings
        # Made as MQTT 5; `_aim` sets each attempt's version before it connects.
        client = BoundedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
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
        client.on_pre_connect = self._aim
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        client.on_socket_open = self._handle_socket_open
        return client

    @staticmethod
    def _handle_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle's algorithm on. A PUBACK is one small segment, and the kernel
        # holds each one behind an earlier unacknowledged segment until the broker's
        # delayed TCP ACK (40 ms on Linux): PUBACKs falling due together would reach the
        # broker 40 ms late, after a delay that depends on what went before (§3, 1.2).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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

    def _aim(self, client: paho.Client, userdata: Any) -> None:
        """paho's on_pre_connect: the next attempt goes where the rotation says."""
        target = self._target
        if target is None or not isinstance(client, BoundedClient):
            return
        with self._lock:
            self._outcome = None
            self._reported = False
        client.aim(target.endpoint.host, target.endpoint.port, target.protocol)

    def _where(self) -> str:
        """The URL of the broker the current attempt is aimed at, for log lines."""
        target = self._target
        return self._settings.url if target is None else target.endpoint.url

    def _mqtt_version(self) -> str:
        target = self._target
        return "" if target is None else f"MQTT {PROTOCOL_NAMES[target.protocol]}"

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            # 132, or 1 in a 3.1.1 CONNACK (paho gives both as 132)
            version = getattr(reason, "value", None) in (1, 132)
            with self._lock:
                self._outcome = Attempt.VERSION_REFUSED if version else Attempt.REFUSED
            logger.warning(
                "the MQTT broker at %s refused the connection (%s): %s",
                self._where(),
                self._mqtt_version(),
                shown(reason),
            )
            self._end_attempt(client, Attempt.VERSION_REFUSED if version else Attempt.REFUSED)
            return
        with self._lock:
            self._attempt = 0
            self._outcome = Attempt.CONNECTED
            self._in_use = self._target
        self._acks.restart(lambda mid, qos: client.ack(mid, qos))
        self.connections += 1
        session = getattr(flags, "session_present", None)
        logger.info(
            "connected to the MQTT broker at %s (%s, session present: %s)",
            self._where(),
            self._mqtt_version(),
            session,
        )
        self._forget_outbound(client)
        self._publish_once(client, self._status_topic, status_payload("online", self._version))
        if self._subscriptions:
            client.subscribe([(topic, SUBSCRIPTION_QOS) for topic in self._subscriptions])
        self._connected.set()

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        self._acks.restart(None)  # acks of this connection are never sent on the next
        if not self._closed.is_set():
            with self._lock:
                outcome = self._outcome or Attempt.CLOSED_BEFORE_CONNACK
            if outcome is not Attempt.REFUSED and outcome is not Attempt.VERSION_REFUSED:
                logger.warning(
                    "disconnected from the MQTT broker at %s: %s", self._where(), shown(reason)
                )
            # A broker that accepts every connection and then breaks the protocol must not
            # get a reconnect a second: its refusals grow the backoff like failed connects.
            refused = isinstance(client, BoundedClient) and client.take_refusal()
            self._refusals = self._refusals + 1 if refused else 0
            if refused:
                with self._lock:
                    self._attempt = self._refusals
            self._end_attempt(client, outcome)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connection attempt and
        # passes no reason: the exception being handled is the reason.
        exc = sys.exc_info()[1]
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "unknown reason"
        logger.warning(
            "cannot reach the MQTT broker at %s: %s; retrying", self._where(), shown(reason)
        )
        self._end_attempt(client, Attempt.UNREACHABLE)

    def _end_attempt(self, client: paho.Client, outcome: Attempt) -> None:
        """Once per attempt (a refused CONNACK is followed by paho's on_disconnect):
        tell the rotation, and set the wait before the next attempt."""
        with self._lock:
            if self._reported or self._rotation is None:
                return
            self._reported = True
            self._target = target = self._rotation.report(outcome)
            if target.at_once:
                delay = 0.0
            else:
                delay = self._backoff.delay(self._attempt)
                self._attempt += 1
        if target.at_once:
            logger.info("MQTT: trying %s with %s", self._where(), self._mqtt_version())
        wait_before_reconnect(client, delay)

    def _handle_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        received = time.monotonic()
        inbound = InboundMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            handle=self._acks.admit(message.mid, message.qos, received),
            received_mono=received,
        )
        try:
            self._on_message(inbound)
        except Exception:
            # A receiver bug must not kill paho's thread; the message stays unacked
            # and comes back after the next reconnect.
            logger.exception("message handler failed on %s", shown(message.topic))
            inbound.withhold()
