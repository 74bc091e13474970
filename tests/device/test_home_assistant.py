"""device/home_assistant.py without Home Assistant: what the link publishes and how it
takes what the home broker sends, against a real Mosquitto (tests/home_assistant runs
it against a real HA). The decisions are pure functions, checked directly."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.loopback import DeviceSetup, MosquittoBroker, free_port, script
from device.home_assistant import (
    Command,
    DeviceState,
    HomeAssistantAway,
    HomeAssistantLink,
    HomeAssistantNudge,
    Topics,
    command_of,
    discovery_payload,
    snapshot_wait_s,
    state_payload,
)
from device.preflight import check_start
from firmware_config import ConfigError, load_config
from firmware_config.home_assistant import HomeAssistantSettings, same_broker
from sync.mqtt import Backoff
from tests.fixtures.daemon import wait_for
from tests.fixtures.mosquitto import Observer, Publisher, read_retained

DEVICE = "porch-cam.01"
TOPICS = Topics.of(DEVICE, "homeassistant")

# ---- pure --------------------------------------------------------------------------------


def test_discovery_names_each_entity_for_old_and_new_home_assistant() -> None:
    doc = discovery_payload(
        device_id=DEVICE,
        name="Front door",
        version="1.2.3",
        topics=TOPICS,
        console_url="https://doorbell.local:8443/",
    )
    assert TOPICS.discovery == "homeassistant/device/porch-cam_01/config"
    assert doc["dev"]["cu"] == "https://doorbell.local:8443/"
    assert doc["o"]["name"] == "doorbell" and doc["avty_t"] == TOPICS.availability
    platforms = {key: c["platform"] for key, c in doc["cmps"].items()}
    assert platforms["ring"] == "event" and platforms["new_requests"] == "switch"
    for component in doc["cmps"].values():
        object_id = component["object_id"]
        assert object_id.startswith("porch_cam_01_")
        assert component["default_entity_id"] == f"{component['platform']}.{object_id}"
        assert component["unique_id"].startswith("doorbell_porch-cam_01_")
    unique = [c["unique_id"] for c in doc["cmps"].values()]
    assert len(set(unique)) == len(unique)
    assert doc["cmps"]["ring"]["device_class"] == "doorbell"
    assert doc["cmps"]["ring"]["event_types"] == ["ring"]
    assert doc["cmps"]["recording"]["device_class"] == "problem"
    no_console = discovery_payload(
        device_id=DEVICE, name="x", version="1", topics=TOPICS, console_url=None
    )
    assert "cu" not in no_console["dev"]


@given(
    recording=st.booleans(),
    footage_ms=st.none() | st.integers(0, 10**10),
    free=st.none() | st.integers(0, 2**50),
    pending=st.integers(0, 10**6),
    paused=st.booleans(),
)
def test_the_state_is_numbers_and_switches_only(
    recording: bool, footage_ms: int | None, free: int | None, pending: int, paused: bool
) -> None:
    doc = json.loads(state_payload(DeviceState(recording, footage_ms, free, pending, paused)))
    assert set(doc) == {
        "recording_problem",
        "footage_hours",
        "free_gib",
        "requests_waiting",
        "new_requests",
    }
    assert doc["requests_waiting"] == pending
    assert doc["recording_problem"] == ("OFF" if recording else "ON")
    assert doc["new_requests"] == ("OFF" if paused else "ON")
    for key in ("footage_hours", "free_gib"):
        assert doc[key] is None or isinstance(doc[key], int | float)


@given(
    last=st.none() | st.floats(0, 1e6),
    elapsed=st.floats(0, 1e4),
    interval=st.floats(0.1, 3600),
)
def test_snapshots_wait_for_the_interval(
    last: float | None, elapsed: float, interval: float
) -> None:
    now = (last or 0.0) + elapsed  # a monotonic clock
    wait = snapshot_wait_s(last, now, interval)
    assert 0 <= wait <= interval
    if last is None or elapsed >= interval:
        assert wait == 0
    else:
        assert now + wait == pytest.approx(last + interval)


@given(
    topic=st.sampled_from(
        [TOPICS.birth, TOPICS.set_requests, TOPICS.take_snapshot, TOPICS.state, "x/y", ""]
    ),
    payload=st.binary(max_size=64) | st.sampled_from([b"ON", b"OFF", b"PRESS", b"online"]),
    retained=st.booleans(),
)
def test_only_an_exact_live_command_does_anything(
    topic: str, payload: bytes, retained: bool
) -> None:
    command = command_of(TOPICS, topic, payload, retained=retained)
    acts = {
        (TOPICS.set_requests, b"OFF"): Command.PAUSE,
        (TOPICS.set_requests, b"ON"): Command.RESUME,
        (TOPICS.take_snapshot, b"PRESS"): Command.SNAPSHOT,
    }
    if topic == TOPICS.birth:
        assert command == (Command.ANNOUNCE if payload == b"online" else Command.NONE)
    elif retained:
        assert command is Command.RETAINED
    else:
        assert command == acts.get((topic, payload), Command.UNKNOWN)


@given(port=st.integers(1, 65535), other=st.integers(1, 65535))
def test_the_same_broker_however_its_host_is_written(port: int, other: int) -> None:
    for a, b in (
        ("broker.example.org", "BROKER.example.org."),
        ("localhost", "127.0.0.1"),
        ("127.0.0.2", "[::1]"),
        ("[2001:db8::1]", "2001:db8:0:0:0:0:0:1"),
    ):
        assert same_broker((a, port), (b, port))
        assert same_broker((a, port), (b, other)) == (port == other)
    assert not same_broker(("192.0.2.1", port), ("192.0.2.2", port))
    assert not same_broker(("home.lan", port), ("broker.example.org", port))


# ---- against a real Mosquitto -------------------------------------------------------------


class Device:
    """What the link reads from and calls on the daemon, recorded."""

    def __init__(self) -> None:
        self.paused: list[bool] = []
        self.snapshots = 0
        self.reads = 0

    def read_state(self) -> DeviceState:
        self.reads += 1  # a new footage figure each time: every round publishes a state
        return DeviceState(True, self.reads * 1000, 2**30, 0, bool(self.paused[-1:] == [True]))

    def take_snapshot(self) -> bytes:
        self.snapshots += 1
        return b"\xff\xd8\xff\xe0 a JPEG \xff\xd9"


def make_link(url: str, device: Device, **options: Any) -> HomeAssistantLink:
    settings = HomeAssistantSettings(
        enabled=True,
        url=url,
        snapshot_interval_seconds=3600,
        state_interval_seconds=0.1,
        **options,
    )
    return HomeAssistantLink(
        settings,
        device_id=DEVICE,
        version="1.2.3",
        console_url="https://doorbell.local:8443/",
        read_state=device.read_state,
        take_snapshot=device.take_snapshot,
        set_requests_paused=device.paused.append,
        stop=threading.Event(),
        backoff=Backoff(initial_s=0.2, cap_s=1.0),
    )


@contextlib.contextmanager
def running(link: HomeAssistantLink) -> Iterator[HomeAssistantLink]:
    link.start()
    try:
        yield link
    finally:
        link.stop()


@pytest.fixture
def observed(mosquitto: MosquittoBroker) -> Iterator[Observer]:
    observer = Observer(mosquitto)
    try:
        yield observer
    finally:
        observer.close()


def test_discovery_on_connect_and_on_each_birth_message(
    mosquitto: MosquittoBroker, observed: Observer
) -> None:
    with running(make_link(mosquitto.url, Device())):
        wait_for(lambda: observed.on(TOPICS.discovery), 10, "discovery")
        assert read_retained(mosquitto, TOPICS.availability) == b"online"
        assert read_retained(mosquitto, TOPICS.discovery) is None  # HA's birth brings it back
        with Publisher(mosquitto) as ha:
            ha.publish(TOPICS.birth, b"offline")  # HA going away asks nothing
            ha.publish(TOPICS.birth, b"online")
        wait_for(lambda: len(observed.on(TOPICS.discovery)) == 2, 10, "discovery again")
        announced = json.loads(observed.on(TOPICS.discovery)[-1])
        assert set(announced["cmps"]) >= {"ring", "snapshot", "new_requests"}
    assert read_retained(mosquitto, TOPICS.availability) == b"offline"
    assert len(observed.on(TOPICS.discovery)) == 2


def test_rings_snapshots_and_the_nudge_at_the_broker(
    mosquitto: MosquittoBroker, observed: Observer
) -> None:
    device = Device()
    with running(make_link(mosquitto.url, device)) as link:
        wait_for(lambda: link.connected, 10, "connected")
        link.on_ring(1)
        wait_for(lambda: observed.on(TOPICS.snapshot), 10, "the ring's snapshot")
        assert observed.on(TOPICS.ring) == [b'{"event_type": "ring"}']
        # more rings and requests within the interval (an hour here): no more pictures
        for at in range(2, 7):
            link.on_ring(at)
        with Publisher(mosquitto) as ha:
            for _ in range(10):
                ha.publish(TOPICS.take_snapshot, b"PRESS")
        seen = device.reads
        wait_for(lambda: device.reads > seen + 10, 10, "ten more rounds of the worker")
        assert device.snapshots == 1 and len(observed.on(TOPICS.snapshot)) == 1
        assert len(observed.on(TOPICS.ring)) == 6  # every ring is an event
        HomeAssistantNudge(link).send()
        wait_for(lambda: observed.on(TOPICS.review), 10, "the review event")
        assert observed.on(TOPICS.review) == [b'{"event_type": "review_waiting"}']
    with pytest.raises(HomeAssistantAway):
        HomeAssistantNudge(link).send()


def test_junk_and_retained_commands_change_nothing(
    mosquitto: MosquittoBroker, observed: Observer
) -> None:
    """A command left retained on the home broker is not carried out at each reconnect;
    payloads the switch and button do not know, and packets over the size limit, are
    counted and logged, never acted on, and the link carries on."""
    device = Device()
    with Publisher(mosquitto) as ha:
        ha.publish(TOPICS.set_requests, b"OFF", retain=True)
    with running(make_link(mosquitto.url, device)) as link:
        wait_for(lambda: link.ignored == 1, 10, "the retained command ignored")
        junk = [b"", b"off", b"ON ", b"\xff\xfe" * 500, b'{"state": "OFF"}', b"\x00PRESS"]
        with Publisher(mosquitto) as ha:
            for payload in junk:
                ha.publish(TOPICS.set_requests, payload)
                ha.publish(TOPICS.take_snapshot, payload)
            ha.publish(TOPICS.birth, b"\x00" * 100)
            first = link_connections(link, observed)
            ha.publish(TOPICS.take_snapshot, b"x" * (100 * 1024))  # over the 64 KiB limit
            wait_for(lambda: link_connections(link, observed) > first, 20, "a new connection")
            wait_for(lambda: link.connected, 20, "connected again")
            ha.publish(TOPICS.set_requests, b"OFF")
        wait_for(lambda: device.paused == [True], 10, "the live command carried out")
        # the retained command twice (it came again with the new connection), and the junk
        assert link.ignored == 2 + 2 * len(junk)
        assert device.snapshots == 0
        assert link.status()["messages_ignored"] == link.ignored


def link_connections(link: HomeAssistantLink, observed: Observer) -> int:
    """How many times the link announced itself (once per connection)."""
    return len(observed.on(TOPICS.discovery))


class RefusingBroker(MosquittoBroker):
    """A Mosquitto that takes no anonymous client and knows no account: every
    connection is refused as not authorised."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
        self.config_path.write_text(text)


def test_a_broker_that_refuses_or_is_away_is_a_status_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = RefusingBroker(tmp_path / "refusing")
    broker.root.mkdir()
    broker.start()
    password = tmp_path / "password"
    password.write_text("wrong\n")
    try:
        link = make_link(broker.url, Device(), username="doorbell", password_file=password)
        with running(link) as refused:
            wait_for(lambda: "refused" in (refused.problem or ""), 20, "the refusal")
            assert refused.status()["broker"] == "disconnected"
            refused.on_ring(1)  # nothing to tell: counted, no error
            assert refused.rings_missed == 1
            with pytest.raises(HomeAssistantAway):
                HomeAssistantNudge(refused).send()
    finally:
        broker.stop()
    with running(make_link(f"mqtt://127.0.0.1:{free_port()}", Device())) as away:
        wait_for(lambda: "cannot reach" in (away.problem or ""), 20, "unreachable")
        assert away.status() == {
            "broker": "disconnected",
            "problem": away.problem,
            "messages_ignored": 0,
        }
    lines = [r.getMessage() for r in caplog.records if "Home Assistant broker" in r.getMessage()]
    assert lines and all("wrong" not in line for line in lines)  # never the password
    # once a minute per kind at most: a handful of retries made at most two lines each
    assert sum("refused" in line for line in lines) == 1
    assert sum("cannot reach" in line for line in lines) == 1


def test_a_ca_file_that_is_no_certificate_leaves_home_assistant_off(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    link = make_link(f"mqtts://127.0.0.1:{free_port()}", Device(), ca_file=ca)
    with running(link):
        assert "home_assistant.ca_file" in (link.problem or "")
        assert link.status()["broker"] == "disconnected"
        link.on_ring(1)
        assert link.rings_missed == 1


# ---- the config ---------------------------------------------------------------------------


def device_config(tmp_path: Path, home_assistant: dict[str, Any] | None) -> Path:
    setup = DeviceSetup(
        root=tmp_path / "device",
        broker_url="mqtt://broker.example.org:8883",
        extra={} if home_assistant is None else {"home_assistant": home_assistant},
    )
    return setup.write()


def test_off_unless_enabled(tmp_path: Path) -> None:
    assert load_config(device_config(tmp_path, None)).home_assistant.broker is None
    off = load_config(device_config(tmp_path, {"enabled": False, "url": "mqtt://home.lan"}))
    assert off.home_assistant.broker is None
    on = load_config(device_config(tmp_path, {"enabled": True, "url": "mqtt://home.lan"}))
    assert on.home_assistant.broker is not None
    assert on.home_assistant.discovery_prefix == "homeassistant"


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"enabled": True}, "home_assistant.url: required"),
        ({"enabled": True, "url": "http://home.lan"}, "home_assistant.url: expected mqtt://"),
        (
            {"enabled": True, "url": "mqtt://h", "discovery_prefix": "home/#"},
            "home_assistant.discovery_prefix:",
        ),
        ({"enabled": "yes", "url": "mqtt://h"}, "home_assistant.enabled: expected true or false"),
        ({"enabeld": True}, "home_assistant.enabeld: unknown key (did you mean 'enabled'?)"),
    ],
)
def test_a_wrong_section_names_its_key(tmp_path: Path, section: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(device_config(tmp_path, section))
    assert any(says in problem for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://broker.example.org:8883",
        "mqtts://BROKER.example.org.:8883",
    ],
)
def test_the_check_refuses_the_cloud_broker_for_home_assistant(tmp_path: Path, url: str) -> None:
    config = device_config(tmp_path, {"enabled": True, "url": url})
    problems = check_start(load_config(config)).problems
    same = [p for p in problems if p.startswith("home_assistant.url:")]
    assert len(same) == 1 and "mqtt.url" in same[0], problems
    checked = subprocess.run(
        [*script("doorbelld"), f"--config={config}", "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert "home_assistant.url" in checked.stderr + checked.stdout
    assert "mqtt.url" in checked.stderr + checked.stdout
    assert "Traceback" not in checked.stderr


def test_the_home_broker_on_another_port_is_fine(tmp_path: Path) -> None:
    config = device_config(tmp_path, {"enabled": True, "url": "mqtt://broker.example.org:1883"})
    assert not [p for p in check_start(load_config(config)).problems if "home_assistant" in p]


def test_a_nudge_through_home_assistant_needs_home_assistant(tmp_path: Path) -> None:
    setup = DeviceSetup(
        root=tmp_path / "device",
        broker_url="mqtt://broker.example.org:8883",
        extra={"nudge": {"home_assistant": True}},
    )
    problems = check_start(load_config(setup.write())).problems
    assert [p for p in problems if p.startswith("nudge.home_assistant:")], problems
    setup.extra["home_assistant"] = {"enabled": True, "url": "mqtt://home.lan"}
    problems = check_start(load_config(setup.write())).problems
    assert not [p for p in problems if "nudge" in p], problems
