"""Brokers other than Mosquitto on loopback, for the tests and the flood benchmark: a
three-node NATS cluster with JetStream and MQTT, and a private RabbitMQ node with its
MQTT plugin. Each is started by whoever uses it, on free ports, with its data in a
directory of its own, and stopped after; nothing is left running and nothing of the
machine's own services (a system RabbitMQ, its epmd, a system NATS) is touched.

What they speak (checked on loopback): nats-server 2.9 MQTT 3.1.1 only (an MQTT 5
CONNECT gets CONNACK "unsupported protocol version"), with persistent sessions and
retained messages in JetStream, replicated over the cluster; it drops a client that
publishes at QoS 2. RabbitMQ 3.10's MQTT plugin is 3.1.1 with QoS 0 and 1 (it closes
an MQTT 5 CONNECT without an answer). The device's `mqtt.protocol: auto` finds 3.1.1
on both (sync.brokers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests

from cloud.loopback import LoopbackError, MosquittoBroker, free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the script, not the su wrapper
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
HOST = "127.0.0.1"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise LoopbackError(f"{what} not ready within {timeout:g} s; log tail:\n{tail}")


def _end(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class _BrokerProcess:
    """A broker process of ours and the MQTT listener it has on loopback."""

    host = HOST

    def __init__(self) -> None:
        self.mqtt_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.mqtt_port

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.mqtt_port}"

    @property
    def urls(self) -> list[str]:
        """Every node's URL, as a device's mqtt.urls."""
        return [self.url]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsNode(_BrokerProcess):
    """One nats-server of a cluster: client, route, MQTT and monitoring ports, and its
    own JetStream directory (kept across kill and start, as a node's disk would be)."""

    def __init__(self, root: Path, name: str) -> None:
        super().__init__()
        self.root = root
        self.name = name
        self.client_port = free_port()
        self.route_port = free_port()
        self.monitor_port = free_port()
        self.config_path = root / f"{name}.conf"
        self.log_path = root / f"{name}.log"
        self.store_dir = root / f"{name}-jetstream"

    def write_config(self, peers: list[NatsNode]) -> None:
        routes = ", ".join(f"nats-route://{HOST}:{p.route_port}" for p in peers if p is not self)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""server_name: {self.name}
listen: {HOST}:{self.client_port}
http: {HOST}:{self.monitor_port}
jetstream {{
  store_dir: "{self.store_dir}"
}}
cluster {{
  name: doorbell
  listen: {HOST}:{self.route_port}
  routes: [{routes}]
}}
mqtt {{
  listen: {HOST}:{self.mqtt_port}
  # sessions, their QoS 1 messages and retained messages on every node: one may die
  stream_replicas: 3
  consumer_replicas: 3
  # the broker's window for one session. nats-server 2.9 loses QoS 1 messages to a
  # persistent session that reach it with the window full (the flood benchmark with
  # 100 lost 6 of 300; its consumer showed them acknowledged). The device's PUBACKs
  # wait in arrival order behind a verified message's 2 s, so hundreds can be owed:
  # the window matches the device's own backstop (4,096 owed, sync.acks), which stops
  # its reading. (65,535, the most MQTT allows, made nats-server 2.9.10 refuse every
  # subscription in the whole-loop test.)
  max_ack_pending: 4096
}}
"""
        )

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """SIGKILL: the node is lost, mid-flow."""
        _end(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _end(self.proc, signal.SIGTERM)

    def listening(self) -> bool:
        return _listening(self.mqtt_port)

    def takes_sessions(self) -> bool:
        return _mqtt_session_ok(self.mqtt_port)

    def healthy(self) -> bool:
        """The node's monitoring says its own JetStream is current (a meta leader is
        known). Not every stream and consumer: after a node's loss a consumer of a
        session that has gone can stay "not current" for minutes, which says nothing of
        whether the node serves MQTT (`takes_sessions` checks that)."""
        if not self.running:
            return False
        url = f"http://{HOST}:{self.monitor_port}/healthz?js-server-only=true"
        try:
            answer = requests.get(url, timeout=1)
        except requests.RequestException:
            return False
        return answer.status_code == 200


class NatsCluster:
    """Three nats-servers routed to each other, JetStream and MQTT on each."""

    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(root, f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            node.write_config(self.nodes)

    host = HOST

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """A running node's URL, for the agency's and owner's tools."""
        return self._alive().url

    @property
    def port(self) -> int:
        return self._alive().mqtt_port

    def _alive(self) -> NatsNode:
        for node in self.nodes:
            if node.running:
                return node
        raise LoopbackError("no NATS node is running")

    def node_at(self, url: str) -> NatsNode:
        return next(node for node in self.nodes if node.url == url)

    def start(self, *, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Every running node listens for MQTT and has a current JetStream, and MQTT
        accepts a session (its streams exist)."""
        running = [node for node in self.nodes if node.running]
        for node in running:
            _wait(node.listening, timeout, f"NATS {node.name}", node.log_path)
            _wait(node.healthy, timeout, f"NATS {node.name} JetStream", node.log_path)
        for node in running:
            _wait(node.takes_sessions, timeout, f"NATS {node.name} MQTT", node.log_path)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _mqtt_session_ok(port: int) -> bool:
    """A 3.1.1 persistent session can be opened (NATS answers CONNACK 3, server
    unavailable, while its MQTT streams are not yet there)."""
    import paho.mqtt.client as paho

    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=f"ready-{secrets.token_hex(4)}",
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    answered: list[bool] = []
    client.on_connect = lambda *a: answered.append(not a[3].is_failure)
    try:
        client.connect(HOST, port, keepalive=10)
        deadline = time.monotonic() + 3
        while not answered and time.monotonic() < deadline:
            client.loop(0.1)
        client.disconnect()
    except OSError:
        return False
    return bool(answered and answered[0])


class RabbitMqBroker(_BrokerProcess):
    """A private RabbitMQ node with the MQTT plugin, as whoever runs the tests: its own
    node name, data, logs, cookie (a HOME of its own), epmd port, AMQP, distribution and
    MQTT ports. `stop()` stops the node and its epmd."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node_name = f"doorbell-{secrets.token_hex(4)}@localhost"
        self.log_path = root / "rabbitmq.out"

    def _environment(self) -> dict[str, str]:
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        config = self.root / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = {HOST}:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = {HOST}:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            # the broker's window per connection (3.1.1 tells it nothing of the device's)
            "mqtt.prefetch = 16\n"
            "loopback_users = none\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(home),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_ENABLED_PLUGINS="rabbitmq_mqtt",
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.root / "plugins-expand"),
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.root / "advanced.config"),
            RABBITMQ_PID_FILE=str(self.root / "rabbitmq.pid"),
        )
        return env

    def start(self, *, timeout: float = 90.0) -> None:
        if self.running:
            return
        env = self._environment()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [RABBITMQ_SERVER],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.root,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        try:
            _wait(self._ready, timeout, "RabbitMQ's MQTT listener", self.log_path)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.running:
            raise LoopbackError(f"rabbitmq-server exited: {self.log_path.read_text()[-3000:]}")
        return _listening(self.mqtt_port) and _mqtt_session_ok(self.mqtt_port)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # erl started an epmd for our port as a daemon of its own: ask it to go
        subprocess.run(
            [EPMD, "-port", str(self.epmd_port), "-kill"],
            capture_output=True,
            timeout=10,
            check=False,
        )

    def kill(self) -> None:
        self.stop()


BROKERS = ("mosquitto", "nats", "rabbitmq")
# The MQTT version each speaks (what `mqtt.protocol: auto` finds on it).
BROKER_VERSION = {"mosquitto": 5, "nats": 4, "rabbitmq": 4}


def start_broker(name: str, root: Path) -> MosquittoBroker | NatsCluster | RabbitMqBroker:
    """One of BROKERS, started in `root` on free ports; the caller stops it."""
    root.mkdir(parents=True, exist_ok=True)
    broker: MosquittoBroker | NatsCluster | RabbitMqBroker
    if name == "mosquitto":
        broker = MosquittoBroker(root)
    elif name == "nats":
        broker = NatsCluster(root)
    elif name == "rabbitmq":
        broker = RabbitMqBroker(root)
    else:
        raise ValueError(f"unknown broker {name!r}; one of {', '.join(BROKERS)}")
    broker.start()
    return broker
