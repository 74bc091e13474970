"""The doorbell in Home Assistant, over the home's own MQTT broker (issue 19).

HA's MQTT integration learns of the device from one device-based discovery message
(`<prefix>/device/<node>/config`: the device, the origin and its components) and then
reads and writes plain topics under `doorbell/<node>/`. What HA gets:

- `event` ring (device class doorbell, event type `ring`), fired by the bell's ring hook;
- `event` review (event type `review_waiting`): the content-free nudge (device/nudge.py)
  when the owner routes it through HA; it says that something waits, never what;
- `image` snapshot: the newest keyframe as a JPEG, on a ring and on request (the button
  entity or its command topic), at most one per `snapshot_interval_seconds`;
- `binary_sensor` recording (device class problem: on when the camera stalls);
- `sensor`s: footage kept (hours), free space, requests waiting (a count and nothing
  else: no agency, case, area or time goes to HA);
- `switch` new requests: off pauses every new request, exactly as `doorbellctl pause`
  and the console's button do (the same control command, audited the same way);
- the console's address as the device's configuration URL.

The connection is this module's own paho client, never the cloud broker's (the config
check refuses the same host and port, so what goes to HA never crosses the broker that
carries agencies' requests). It reconnects with the project's backoff; HA's birth message
(`<prefix>/status` = online, sent when HA starts) makes it publish discovery and the
states again, so nothing needs to be retained for HA's sake except the availability
topic (with its last will) and the states. Whatever the home broker does (down, refusing
the credentials, junk, floods) ends here: a log line at most once a minute per kind and a
status field; recording and the request flow never wait for it.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device.nudge import NudgeError
from firmware_config.home_assistant import HomeAssistantSettings
from foundation.display import shown
from foundation.errors import MisuseError
from foundation.lograte import OncePerInterval
from foundation.wire import SUBSCRIPTION_QOS
from sync.mqtt import Backoff, BoundedClient, disconnect_and_stop_loop, wait_before_reconnect
from sync.settings import MqttSettings

logger = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
RING, REVIEW_WAITING = "ring", "review_waiting"
PRESS, ON, OFF = "PRESS", "ON", "OFF"
MANUFACTURER = "Privacy-first doorbell (open source)"
MODEL = "Raspberry Pi doorbell"
# How long stop() waits for the offline message and for paho's thread.
STOP_WAIT_S = 2.0


def node_id(device_id: str) -> str:
    """The device id as HA's discovery accepts it in a topic ([A-Za-z0-9_-]); the
    config allows '.' as well."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def object_slug(device_id: str) -> str:
    """The device id as the start of an entity id (lowercase letters, digits, '_')."""
    return re.sub(r"[^a-z0-9_]", "_", device_id.lower())


@dataclass(frozen=True, slots=True)
class Topics:
    """The discovery topic, HA's birth topic, and the device's own under `doorbell/<node>/`."""

    discovery: str
    birth: str
    availability: str
    state: str
    ring: str
    review: str
    snapshot: str
    take_snapshot: str
    set_requests: str

    @classmethod
    def of(cls, device_id: str, prefix: str) -> Topics:
        node = node_id(device_id)
        base = f"doorbell/{node}"
        return cls(
            discovery=f"{prefix}/device/{node}/config",
            birth=f"{prefix}/status",
            availability=f"{base}/availability",
            state=f"{base}/state",
            ring=f"{base}/ring",
            review=f"{base}/review",
            snapshot=f"{base}/snapshot",
            take_snapshot=f"{base}/snapshot/take",
            set_requests=f"{base}/new_requests/set",
        )


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the sensors and the switch show; read from the daemon every few seconds."""

    recording: bool
    footage_ms: int | None  # the buffer's span, None when empty
    free_bytes: int | None
    pending: int
    paused: bool


def state_payload(state: DeviceState) -> bytes:
    """The one retained state message every sensor and the switch read their value from
    (each component picks its key with a value template)."""
    footage = None if state.footage_ms is None else round(state.footage_ms / 3_600_000, 2)
    free = None if state.free_bytes is None else round(state.free_bytes / 2**30, 2)
    doc = {
        "recording_problem": OFF if state.recording else ON,
        "footage_hours": footage,
        "free_gib": free,
        "requests_waiting": state.pending,
        "new_requests": OFF if state.paused else ON,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def discovery_payload(
    *,
    device_id: str,
    name: str,
    version: str,
    topics: Topics,
    console_url: str | None,
) -> dict[str, Any]:
    """HA's device-based discovery message: the device, the origin and every component.
    Each component carries both `object_id` (read by HA before 2025.10) and
    `default_entity_id` (read from 2025.10 on): each HA drops the key it does not know
    without a word, so with one of them alone the entity ids would depend on HA's age."""
    slug = object_slug(device_id)

    def component(platform: str, key: str, label: str, **options: Any) -> dict[str, Any]:
        object_id = f"{slug}_{key}"
        return {
            "platform": platform,
            "name": label,
            "unique_id": f"doorbell_{node_id(device_id)}_{key}",
            "object_id": object_id,
            "default_entity_id": f"{platform}.{object_id}",
            **options,
        }

    def reading(key: str) -> str:
        return "{{ value_json.%s }}" % key  # noqa: UP031 (a Jinja template, not Python's)

    def diagnostic_gauge(
        key: str, label: str, device_class: str, unit: str, state_key: str
    ) -> dict[str, Any]:
        """A measured quantity from the state message, shown to one decimal."""
        return component(
            "sensor",
            key,
            label,
            device_class=device_class,
            unit_of_measurement=unit,
            state_class="measurement",
            suggested_display_precision=1,
            state_topic=topics.state,
            value_template=reading(state_key),
            entity_category="diagnostic",
        )

    device: dict[str, Any] = {
        "ids": [f"doorbell_{node_id(device_id)}"],
        "name": name,
        "mf": MANUFACTURER,
        "mdl": MODEL,
        "sw": version,
    }
    if console_url:
        device["cu"] = console_url
    components = {
        "ring": component(
            "event",
            "ring",
            "Ring",
            device_class="doorbell",
            event_types=[RING],
            state_topic=topics.ring,
        ),
        "review": component(
            "event",
            "review",
            "Review waiting",
            event_types=[REVIEW_WAITING],
            state_topic=topics.review,
            icon="mdi:clipboard-text-clock-outline",
        ),
        "snapshot": component(
            "image",
            "snapshot",
            "Snapshot",
            image_topic=topics.snapshot,
            content_type="image/jpeg",
        ),
        "take_snapshot": component(
            "button",
            "take_snapshot",
            "Take snapshot",
            command_topic=topics.take_snapshot,
            payload_press=PRESS,
            icon="mdi:camera",
        ),
        "recording": component(
            "binary_sensor",
            "recording",
            "Recording",
            device_class="problem",
            state_topic=topics.state,
            value_template=reading("recording_problem"),
            payload_on=ON,
            payload_off=OFF,
            entity_category="diagnostic",
        ),
        "footage": diagnostic_gauge("footage", "Footage kept", "duration", "h", "footage_hours"),
        "free_space": diagnostic_gauge("free_space", "Free space", "data_size", "GiB", "free_gib"),
        "requests_waiting": component(
            "sensor",
            "requests_waiting",
            "Requests waiting",
            state_class="measurement",
            state_topic=topics.state,
            value_template=reading("requests_waiting"),
            icon="mdi:clipboard-clock-outline",
        ),
        "new_requests": component(
            "switch",
            "new_requests",
            "New requests",
            state_topic=topics.state,
            value_template=reading("new_requests"),
            command_topic=topics.set_requests,
            payload_on=ON,
            payload_off=OFF,
            icon="mdi:shield-check-outline",
        ),
    }
    return {
        "dev": device,
        "o": {"name": "doorbell", "sw": version},
        "avty_t": topics.availability,
        "qos": 1,
        "cmps": components,
    }


class Command(Enum):
    """What a message from the home broker asks of the device."""

    NONE = "none"  # nothing (HA's "offline")
    ANNOUNCE = "announce"  # HA (re)started: discovery and the states again
    PAUSE = "pause"
    RESUME = "resume"
    SNAPSHOT = "snapshot"
    RETAINED = "retained"  # a command left retained on the broker: never carried out
    UNKNOWN = "unknown"  # not a payload the device knows: counted, ignored


def command_of(topics: Topics, topic: str, payload: bytes, *, retained: bool) -> Command:
    """The one decision about an incoming message. Only an exact live payload is a
    command: a retained one would be carried out again at every reconnect."""
    if topic == topics.birth:
        return Command.ANNOUNCE if payload == ONLINE.encode() else Command.NONE
    if retained:
        return Command.RETAINED
    if topic == topics.set_requests and payload == OFF.encode():
        return Command.PAUSE
    if topic == topics.set_requests and payload == ON.encode():
        return Command.RESUME
    if topic == topics.take_snapshot and payload == PRESS.encode():
        return Command.SNAPSHOT
    return Command.UNKNOWN


def snapshot_wait_s(last_mono: float | None, now_mono: float, interval_s: float) -> float:
    """How long a wanted snapshot must still wait (0: now) so that snapshots are at
    least `interval_s` apart."""
    if last_mono is None:
        return 0.0
    return min(interval_s, max(0.0, last_mono + interval_s - now_mono))


class HomeAssistantLink:
    """The connection to the home broker and the worker that feeds it.

    `on_ring()` and `review_waiting()` may be called from any thread and never block;
    `set_requests_paused(paused)` is the control command (pause/resume) the switch
    calls; `read_state` and `take_snapshot` are read on this link's own worker thread."""

    def __init__(
        self,
        settings: HomeAssistantSettings,
        *,
        device_id: str,
        version: str,
        console_url: str | None,
        read_state: Callable[[], DeviceState],
        take_snapshot: Callable[[], bytes | None],
        set_requests_paused: Callable[[bool], object],
        stop: threading.Event,
        backoff: Backoff = Backoff(),
    ) -> None:
        broker = settings.broker
        if broker is None:
            raise MisuseError("the Home Assistant link needs home_assistant.enabled and url")
        self._settings = settings
        self._broker: MqttSettings = broker
        self._device_id = device_id
        self._version = version
        self._console_url = console_url
        self._read_state = read_state
        self._take_snapshot = take_snapshot
        self._set_requests_paused = set_requests_paused
        self._stop = stop
        self._backoff = backoff
        self.topics = Topics.of(device_id, settings.discovery_prefix)
        self._client: BoundedClient | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._attempt = 0
        self._refused = False  # the broker refused the last connection (CONNACK)
        self._announce = False  # discovery and the states are due (connect, HA's birth)
        self._changed = False  # the states are due now (the switch was turned)
        self._snapshot_wanted = False
        self._last_snapshot: float | None = None
        self._last_state: bytes | None = None
        self._worker: threading.Thread | None = None
        self._log = OncePerInterval()
        self.problem: str | None = None  # the last thing that went wrong, for the status
        self.ignored = 0  # messages from the home broker that were not understood
        self.rings_missed = 0  # rings while the home broker was unreachable

    # ---- what the daemon shows -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "broker": "connected" if self._connected.is_set() else "disconnected",
            "problem": self.problem,
            "messages_ignored": self.ignored,
        }

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        host, port, tls = self._broker.endpoint()
        client = BoundedClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"doorbell-{node_id(self._device_id)}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if tls:
            ca_file = self._broker.ca_file
            try:
                client.tls_set(ca_certs=None if ca_file is None else str(ca_file))
            except (OSError, ValueError, ssl.SSLError) as exc:
                # a CA file that --check-config found readable but is not a certificate:
                # Home Assistant stays off, the daemon runs (the status says why)
                self._problem("tls", f"cannot use home_assistant.ca_file {ca_file}: {shown(exc)}")
                return
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._password())
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.max_queued_messages_set(16)  # nothing piles up for a broker that is away
        wait_before_reconnect(client, self._backoff.delay(0))
        self._client = client
        client.connect_async(host, port, keepalive=60)
        client.loop_start()
        self._worker = threading.Thread(target=self._run, name="home-assistant", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Tell HA the device is going (a clean disconnect does not fire the last will),
        then disconnect. Idempotent; waits a few seconds at most."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(STOP_WAIT_S)
        client = self._client
        if client is None:
            return
        if self._connected.is_set():
            try:
                info = client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=STOP_WAIT_S)
            except (RuntimeError, ValueError, OSError) as exc:
                logger.info("Home Assistant: could not say offline: %s", shown(exc))
        disconnect_and_stop_loop(client, STOP_WAIT_S)
        self._connected.clear()

    def _password(self) -> str | None:
        path = self._broker.password_file
        if path is None:
            return None
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            self._problem("password", f"cannot read home_assistant.password_file: {exc.strerror}")
            return None
        return lines[0] if lines else ""

    # ---- what the daemon tells HA ----------------------------------------------------------

    def on_ring(self, at_ms: int) -> None:
        """The bell's ring listener (device/bell.py): the event at once, a snapshot as
        soon as the rate allows. A ring while the home broker is away is not kept: a
        ring announced minutes late helps nobody (counted in `rings_missed`)."""
        if not self._publish(self.topics.ring, json.dumps({"event_type": RING})):
            self.rings_missed += 1
        self.request_snapshot()

    def review_waiting(self) -> bool:
        """The nudge through HA: an event that says only that something waits. False
        when the home broker is away (the nudge's scheduler tries again)."""
        return self._publish(self.topics.review, json.dumps({"event_type": REVIEW_WAITING}))

    def request_snapshot(self) -> None:
        with self._lock:
            self._snapshot_wanted = True
        self._wake.set()

    def _publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> bool:
        client = self._client
        if client is None or not self._connected.is_set() or self._closed.is_set():
            return False
        info = client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == paho.MQTT_ERR_SUCCESS

    # ---- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        """Discovery after each (re)connect and birth, the states when they change, and the
        snapshots. Nothing here may end the daemon: every failure is logged and waited out."""
        next_state = 0.0
        period = self._settings.state_interval_seconds
        while not self._closed.is_set() and not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up from now on is not lost
            now = time.monotonic()
            try:
                if self._connected.is_set():
                    with self._lock:
                        announce, self._announce = self._announce, False
                        changed, self._changed = self._changed, False
                    if announce:
                        self._send_discovery()
                    if announce or changed or now >= next_state:
                        self._send_state(force=announce)
                        next_state = now + period
                    self._maybe_snapshot(now)
            except Exception as exc:  # a bug or a broken broker must not stop recording
                self._problem("worker", f"Home Assistant: {shown(exc)}", exc_info=True)
            wait = max(
                0.05, min(next_state - time.monotonic(), self._settings.state_interval_seconds)
            )
            with self._lock:
                if self._snapshot_wanted:
                    wait = min(wait, max(0.05, self._snapshot_wait(time.monotonic())))
            self._wake.wait(wait)

    def _send_discovery(self) -> None:
        doc = discovery_payload(
            device_id=self._device_id,
            name=self._settings.name,
            version=self._version,
            topics=self.topics,
            console_url=self._console_url,
        )
        self._publish(self.topics.discovery, json.dumps(doc, separators=(",", ":")))
        self._publish(self.topics.availability, ONLINE, retain=True)

    def _send_state(self, *, force: bool) -> None:
        payload = state_payload(self._read_state())
        changed = force or payload != self._last_state
        if changed and self._publish(self.topics.state, payload, retain=True):
            self._last_state = payload

    def _snapshot_wait(self, now: float) -> float:
        return snapshot_wait_s(self._last_snapshot, now, self._settings.snapshot_interval_seconds)

    def _maybe_snapshot(self, now: float) -> None:
        with self._lock:
            if not self._snapshot_wanted or self._snapshot_wait(now) > 0:
                return
            self._snapshot_wanted = False
            self._last_snapshot = now
        jpeg = self._take_snapshot()
        if jpeg is None:
            self._problem("snapshot", "Home Assistant: no footage to take a snapshot from yet")
            return
        self._publish(self.topics.snapshot, jpeg)

    # ---- paho's callbacks (its network thread) -----------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            with self._lock:
                self._refused = True  # paho's on_disconnect follows: this said why
            self._problem(
                "refused",
                f"the Home Assistant broker at {self._broker.url} refused the connection: "
                f"{shown(reason)} (check home_assistant.username and password_file)",
            )
            self._schedule_retry(client)
            return
        with self._lock:
            self._attempt = 0
            self._announce = True
        self.problem = None
        logger.info("connected to the Home Assistant broker at %s", self._broker.url)
        client.subscribe(
            [
                (self.topics.birth, SUBSCRIPTION_QOS),
                (self.topics.take_snapshot, SUBSCRIPTION_QOS),
                (self.topics.set_requests, SUBSCRIPTION_QOS),
            ]
        )
        self._connected.set()
        self._wake.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        with self._lock:
            refused, self._refused = self._refused, False
        if self._closed.is_set() or refused:
            return
        self._problem(
            "disconnected",
            f"disconnected from the Home Assistant broker at {self._broker.url}: {shown(reason)}",
        )
        self._schedule_retry(client)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._problem(
            "unreachable",
            f"cannot reach the Home Assistant broker at {self._broker.url}; retrying",
        )
        self._schedule_retry(client)

    def _schedule_retry(self, client: paho.Client) -> None:
        with self._lock:
            attempt, self._attempt = self._attempt, self._attempt + 1
        wait_before_reconnect(client, self._backoff.delay(attempt))

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        try:
            self._handle(message.topic, bytes(message.payload), retained=bool(message.retain))
        except Exception as exc:  # never paho's thread
            self._problem("message", f"Home Assistant: {shown(exc)}", exc_info=True)

    def _handle(self, topic: str, payload: bytes, *, retained: bool) -> None:
        command = command_of(self.topics, topic, payload, retained=retained)
        if command is Command.ANNOUNCE:
            with self._lock:
                self._announce = True
            self._wake.set()
        elif command in (Command.PAUSE, Command.RESUME):
            self._set_requests_paused(command is Command.PAUSE)
            with self._lock:
                self._changed = True  # the switch's new state goes out at once
            self._wake.set()
        elif command is Command.SNAPSHOT:
            self.request_snapshot()
        elif command is Command.RETAINED:
            self._ignored(topic, "a retained command")
        elif command is Command.UNKNOWN:
            self._ignored(topic, f"{len(payload)} bytes it does not understand")

    def _ignored(self, topic: str, what: str) -> None:
        self.ignored += 1
        self._problem("ignored", f"Home Assistant: ignored {what} on {shown(topic)}")

    def _problem(self, kind: str, text: str, *, exc_info: bool = False) -> None:
        self.problem = text
        held = self._log.due(kind)
        if held is not None:
            suffix = f" ({held} more like it since the last line)" if held else ""
            logger.warning("%s%s", text, suffix, exc_info=exc_info)


class HomeAssistantAway(NudgeError):
    """The home broker is not connected: the nudge could not be handed over."""


class HomeAssistantNudge:
    """The nudge's Home Assistant channel (device/nudge.py's NudgeChannel): the review
    event on the device, which the shipped blueprint turns into a phone notification.
    `send` raises when it could not hand the event over, so the scheduler retries."""

    def __init__(self, link: HomeAssistantLink) -> None:
        self._link = link

    def send(self) -> None:
        if not self._link.review_waiting():
            raise HomeAssistantAway("the Home Assistant broker is not connected")
