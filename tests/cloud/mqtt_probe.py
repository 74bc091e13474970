"""An independent MQTT 5 subscriber for the cloud tools' tests: plain paho, so the tools'
own broker code is not what checks them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures.mosquitto import MosquittoBroker


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    expiry_s: int | None


class Probe:
    """Subscribes on start; collects every message it gets."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.connect(broker.host, broker.port, 30)
        self._client.loop_start()
        self._client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise RuntimeError("probe could not subscribe")

    def _on_message(self, _client: object, _userdata: object, msg: paho.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        with self._arrived:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.retain, expiry))
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
