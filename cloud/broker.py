"""The cloud tools' side of MQTT: parse a broker URL, publish and wait for every PUBACK,
and listen to a few topics for a while.

paho-mqtt 2.x with the version-2 callback API, MQTT 5 where the broker takes it and
3.1.1 where it refuses 5 (nats-server, RabbitMQ before 3.13): the device's own rule,
sync.brokers, decides when to ask again with 3.1.1. Over 3.1.1 a request carries no
message expiry; devices check its `expires_at` themselves. Each call opens its own short
connection and closes it again: the reference tools publish a handful of messages per
run, so there is no session to keep. A broker that is down, refuses us or does not
acknowledge within the timeout raises `BrokerError` with a sentence a person can act on.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foundation.display import shown
from foundation.errors import UnavailableError
from sync.brokers import Attempt, BrokerRotation
from sync.settings import AUTO, MQTT5, BrokerEndpoint

logger = logging.getLogger(__name__)

# What the device sends its owner may exceed the 16 KiB that devices accept (protocol.md §1):
# twenty pending requests with long descriptions. Far beyond that is junk.
MAX_INBOUND_BYTES = 1024 * 1024


class BrokerError(UnavailableError):
    """The broker could not be reached, refused us, or did not acknowledge in time."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS with the system CAs)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> BrokerUrl:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise BrokerError(f"not a broker URL: {text!r}") from exc
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BrokerError(f"broker URL must start with mqtt:// or mqtts://, got {text!r}")
        if not parts.hostname:
            raise BrokerError(f"broker URL has no host: {text!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BrokerError(f"broker URL must not have a path or query: {text!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port if port is not None else (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def display(self) -> str:
        """The URL without credentials, for messages."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    expiry_s: int | None = None  # MQTT 5 message expiry interval (not sent over 3.1.1)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message received while listening."""

    topic: str
    payload: bytes
    retain: bool
    expiry_s: int | None


def _new_client(url: BrokerUrl, client_id: str, protocol: int) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if protocol == MQTT5 else mqtt.MQTTv311,
    )
    if url.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    return client


def _open(
    url: BrokerUrl, client_id: str, timeout_s: float, prepare: Callable[[mqtt.Client], None]
) -> mqtt.Client:
    """A connected client, MQTT 5 or, where the broker refuses 5, 3.1.1; `prepare` sets
    its callbacks before it connects. Raises BrokerError."""
    endpoint = BrokerEndpoint(url.display(), url.host, url.port, url.tls)
    rotation = BrokerRotation([endpoint], AUTO, client_id)
    while True:
        client = _new_client(url, client_id, rotation.target().protocol)
        prepare(client)
        outcome, problem = _connect(client, url, timeout_s)
        if outcome is Attempt.CONNECTED:
            return client
        _close(client)
        if not rotation.report(outcome).at_once:
            raise BrokerError(problem)


def _connect(client: mqtt.Client, url: BrokerUrl, timeout_s: float) -> tuple[Attempt, str]:
    """Connect and wait for the CONNACK: how it went, and the sentence if it failed."""
    answered = threading.Event()
    outcome: list[tuple[Attempt, str]] = []

    def on_connect(
        _client: mqtt.Client, _userdata: object, _flags: object, reason: object, _props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            version = getattr(reason, "value", None) in (1, 132)
            kind = Attempt.VERSION_REFUSED if version else Attempt.REFUSED
            outcome.append((kind, f"the broker at {url.display()} refused: {reason}"))
        else:
            outcome.append((Attempt.CONNECTED, ""))
        answered.set()

    def on_disconnect(
        _client: mqtt.Client, _userdata: object, _flags: object, _reason: object, _props: object
    ) -> None:
        if not answered.is_set():
            closed = f"the broker at {url.display()} closed the connection without answering"
            outcome.append((Attempt.CLOSED_BEFORE_CONNACK, closed))
            answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        if client.protocol == mqtt.MQTTv5:
            client.connect(url.host, url.port, keepalive=30, clean_start=True)
        else:
            client.connect(url.host, url.port, keepalive=30)
    except (OSError, ValueError) as exc:
        return Attempt.UNREACHABLE, f"cannot reach the broker at {url.display()}: {exc}"
    client.loop_start()
    if not answered.wait(timeout_s):
        return (
            Attempt.UNREACHABLE,
            f"the broker at {url.display()} did not answer within {timeout_s:g} s",
        )
    return outcome[0]


def _close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
    finally:
        client.loop_stop()


def publish_messages(
    url: BrokerUrl | str,
    messages: Sequence[Outgoing],
    *,
    timeout_s: float = 10.0,
    client_id: str | None = None,
) -> None:
    """Publish every message and return only once the broker acknowledged each QoS 1/2 one.

    Raises BrokerError if the broker is unreachable, refuses the connection, rejects a
    message (an MQTT 5 PUBACK failure code) or does not acknowledge within `timeout_s`.
    """
    broker = BrokerUrl.parse(url) if isinstance(url, str) else url
    lock = threading.Lock()
    acked: dict[int, str | None] = {}  # mid -> failure text or None
    all_acked = threading.Event()
    waiting: set[int] = set()

    def on_publish(
        _client: mqtt.Client, _userdata: object, mid: int, reason: object, _props: object
    ) -> None:
        failure = getattr(reason, "is_failure", False)
        with lock:
            acked[mid] = str(reason) if failure else None
            if waiting and waiting.issubset(acked):
                all_acked.set()

    def prepare(client: mqtt.Client) -> None:
        client.on_publish = on_publish

    cid = client_id or f"doorbell-cloud-{uuid.uuid4().hex[:12]}"
    client = _open(broker, cid, timeout_s, prepare)
    try:
        for message in messages:
            props = None
            if message.expiry_s is not None and client.protocol == mqtt.MQTTv5:
                props = Properties(PacketTypes.PUBLISH)
                props.MessageExpiryInterval = max(1, int(message.expiry_s))
            info = client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=props,
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerError(
                    f"could not publish to {message.topic}: {mqtt.error_string(info.rc)}"
                )
            if message.qos > 0:
                with lock:
                    waiting.add(info.mid)
        with lock:
            if not waiting or waiting.issubset(acked):
                all_acked.set()
        if not all_acked.wait(timeout_s):
            with lock:
                missing = len(waiting - acked.keys())
            raise BrokerError(
                f"the broker at {broker.display()} did not acknowledge {missing} "
                f"message(s) within {timeout_s:g} s"
            )
        with lock:
            failures = [text for text in acked.values() if text is not None]
        if failures:
            raise BrokerError(f"the broker rejected a message: {failures[0]}")
    finally:
        _close(client)


def listen(
    url: BrokerUrl | str,
    topics: Sequence[str],
    on_message: Callable[[Incoming], None],
    stop: threading.Event,
    *,
    timeout_s: float = 10.0,
    client_id: str | None = None,
) -> None:
    """Subscribe (QoS 1) to `topics` and hand each message to `on_message` until `stop` is set.

    `on_message` runs on paho's network thread; it must not block for long. Messages over
    MAX_INBOUND_BYTES are dropped here. When `on_message` finds our own output closed
    (BrokenPipeError: `doorbell-owner watch | head -3`), listening ends and the error is
    raised here, in the caller's thread, where foundation.cli turns it into exit 141.
    """
    broker = BrokerUrl.parse(url) if isinstance(url, str) else url
    subscribed = threading.Event()
    refused: list[str] = []
    output_closed: list[BrokenPipeError] = []

    def on_subscribe(
        _client: mqtt.Client, _userdata: object, _mid: int, codes: object, _props: object
    ) -> None:
        # A broker ACL that denies a topic answers with a failure code per topic.
        for code in codes if isinstance(codes, list) else []:
            if getattr(code, "is_failure", False):
                refused.append(str(code))
        subscribed.set()

    def on_message_cb(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > MAX_INBOUND_BYTES:
            logger.warning("dropped an oversized message on %s", shown(msg.topic))
            return
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        try:
            on_message(
                Incoming(
                    topic=msg.topic, payload=bytes(msg.payload), retain=msg.retain, expiry_s=expiry
                )
            )
        except BrokenPipeError as exc:  # nobody reads what we print any more: stop
            output_closed.append(exc)
            stop.set()
        except Exception:  # a bad message must not kill the network thread
            logger.exception("handling a message on %s failed", shown(msg.topic))

    def prepare(client: mqtt.Client) -> None:
        client.on_subscribe = on_subscribe
        client.on_message = on_message_cb

    cid = client_id or f"doorbell-owner-{uuid.uuid4().hex[:12]}"
    client = _open(broker, cid, timeout_s, prepare)
    try:
        client.subscribe([(topic, 1) for topic in topics])
        if not subscribed.wait(timeout_s):
            raise BrokerError(f"the broker at {broker.display()} did not confirm the subscription")
        if refused:
            raise BrokerError(f"the broker refused the subscription: {refused[0]}")
        stop.wait()
    finally:
        _close(client)
    if output_closed:
        raise output_closed[0]
