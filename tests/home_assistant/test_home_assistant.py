"""The doorbell in a real Home Assistant (HA 2025.4.4, tests/home_assistant/kit.py), over a
real Mosquitto as the home's own broker, beside a second Mosquitto as the cloud broker.

The daemon runs in this process (the bell's mock pins need it) with a real recorder, a
real console and a real tus server; HA runs as its own process, onboarded and given the
MQTT integration through its HTTP API as an owner would. Everything is checked by asking
HA: the device and its entities, a ring, a snapshot, the switch pausing requests on the
device (a request then published on the cloud broker is refused and audited), the
entities going unavailable when the daemon stops, and discovery coming back after HA
restarts (its birth message).

Run with `make ha` (it makes HA's environment once, cached outside the checkout)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from cloud.loopback import MosquittoBroker, TusServer, free_port
from device.app import Doorbell, Hooks
from device.audit import read_entries
from device.home_assistant import HomeAssistantNudge
from firmware_config import load_config
from foundation.clock import SystemClock
from foundation.times import Window
from tests.fixtures.daemon import World, make_world, now_ms, wait_for
from tests.fixtures.mosquitto import Observer
from tests.home_assistant.kit import HA_ENV_VAR, HomeAssistant, ha_env

BLUEPRINT = (
    Path(__file__).resolve().parents[2]
    / "home_assistant"
    / "blueprints"
    / "automation"
    / "doorbell"
    / "doorbell_review.yaml"
)
BELL_PIN = 22  # the porch bell's GPIO
SLUG = "porch_cam_01"  # the world's device id, porch-cam-01, as HA's entity ids spell it
RING = f"event.{SLUG}_ring"
REVIEW = f"event.{SLUG}_review"
SNAPSHOT = f"image.{SLUG}_snapshot"
TAKE_SNAPSHOT = f"button.{SLUG}_take_snapshot"
RECORDING = f"binary_sensor.{SLUG}_recording"
FOOTAGE = f"sensor.{SLUG}_footage"
FREE_SPACE = f"sensor.{SLUG}_free_space"
WAITING = f"sensor.{SLUG}_requests_waiting"
NEW_REQUESTS = f"switch.{SLUG}_new_requests"
ENTITIES = (
    RING,
    REVIEW,
    SNAPSHOT,
    TAKE_SNAPSHOT,
    RECORDING,
    FOOTAGE,
    FREE_SPACE,
    WAITING,
    NEW_REQUESTS,
)


@dataclass
class Home:
    world: World
    app: Doorbell
    pins: MockFactory
    broker: MosquittoBroker  # the home's own
    ha: HomeAssistant
    heard: Observer  # everything published on the home broker
    requests: list[str] = field(default_factory=list)  # ids of the requests published

    def state(self, entity_id: str) -> str | None:
        found = self.ha.state(entity_id)
        return None if found is None else str(found["state"])

    def wait_state(self, entity_id: str, want: str, timeout: float = 30) -> None:
        wait_for(lambda: self.state(entity_id) == want, timeout, f"{entity_id} = {want}")


@pytest.fixture
def home(tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer) -> Iterator[Home]:
    env = ha_env()
    if env is None:
        pytest.fail(f"no Home Assistant environment: run `make ha` (it sets {HA_ENV_VAR})")
    broker = MosquittoBroker(tmp_path / "home-broker")
    broker.root.mkdir(parents=True)
    broker.start()
    heard = Observer(broker)
    ha = HomeAssistant(env, tmp_path / "ha")
    app: Doorbell | None = None
    try:
        ha.start()
        ha.add_mqtt(broker.host, broker.port)
        world = make_world(
            tmp_path,
            mosquitto,
            tus_server,
            extra={
                "console": {"listen": f"127.0.0.1:{free_port()}"},
                "bell": {"button_pin": BELL_PIN},
                "home_assistant": {
                    "enabled": True,
                    "url": broker.url,
                    "name": "Front door",
                    "snapshot_interval_seconds": 1,
                },
            },
        )
        pins = MockFactory()
        app = Doorbell(
            load_config(world.daemon.config_path),
            Hooks(clock=SystemClock(assume_synchronized=True), pin_factory=pins),
        )
        app.start()
        wait_for(app.recorder_healthy, 30, "recording")
        yield Home(world, app, pins, broker, ha, heard)
    finally:
        if app is not None:
            app.stop()
        ha.stop()
        heard.close()
        broker.stop()


def test_the_doorbell_in_home_assistant(home: Home) -> None:
    ha, app = home.ha, home.app
    try:
        _entities_on_one_device(home)
        _a_stalled_camera_is_a_problem(home)
        _a_ring_and_a_snapshot(home)
        _the_switch_pauses_requests_on_the_device(home)
        _the_blueprint_tells_the_phone_and_nothing_more(home)
        _restarting_home_assistant_brings_discovery_back(home)
        _stopping_the_daemon_makes_the_entities_unavailable(home)
    except AssertionError:
        print(ha.log_tail(80))
        raise
    assert app.home_assistant is not None and app.home_assistant.ignored == 0
    _nothing_of_a_request_crossed_the_home_broker(home)


def _nothing_of_a_request_crossed_the_home_broker(home: Home) -> None:
    """Measured at the home broker, over the whole run (two requests, rings, snapshots,
    the nudge): no byte of any request, of the owner's contact or of the location."""
    heard = home.heard.everything()
    assert b"doorbell/porch-cam-01/state" in heard  # the observer did hear the device
    setup = home.world.setup
    secrets = [
        "sfpd",
        "San Francisco",
        "2026-004512",
        "Rivera",
        "example.gov",
        "Package theft",
        "Jane Doe",
        "jane@example.com",
        "Elm St",
        f"{setup.lat}",
        f"{setup.lon}",
        f"{setup.lat:.3f}",
        *home.requests,
    ]
    for secret in secrets:
        assert secret.encode() not in heard, secret


def _entities_on_one_device(home: Home) -> None:
    ha = home.ha
    for entity_id in ENTITIES:
        wait_for(lambda e=entity_id: ha.state(e), 30, f"{entity_id} in HA")
    device_ids = {ha.template(f"{{{{ device_id('{e}') }}}}") for e in ENTITIES}
    assert len(device_ids) == 1 and "None" not in device_ids, device_ids
    device = device_ids.pop()
    assert ha.template(f"{{{{ device_attr('{device}', 'name') }}}}") == "Front door"
    console_url = home.app.console.info()["url"]
    assert ha.template(f"{{{{ device_attr('{device}', 'configuration_url') }}}}") == console_url
    classes = {e: ha.state(e)["attributes"].get("device_class") for e in ENTITIES}  # type: ignore[index]
    assert classes[RING] == "doorbell"
    assert classes[RECORDING] == "problem"
    assert classes[FREE_SPACE] == "data_size"
    assert ha.state(RING)["attributes"]["event_types"] == ["ring"]  # type: ignore[index]
    assert ha.state(REVIEW)["attributes"]["event_types"] == ["review_waiting"]  # type: ignore[index]
    home.wait_state(RECORDING, "off")  # off: no problem, the camera records
    home.wait_state(NEW_REQUESTS, "on")
    home.wait_state(WAITING, "0")
    assert float(home.state(FOOTAGE) or "nan") >= 0
    assert float(home.state(FREE_SPACE) or "nan") > 0


def _a_stalled_camera_is_a_problem(home: Home) -> None:
    """The recorder frozen (SIGSTOP: alive, writing nothing) is a problem in HA once the
    daemon's watchdog calls it stalled, and clears when it records again."""
    recorder = home.app.recorder.pid
    assert recorder is not None
    os.kill(recorder, signal.SIGSTOP)
    try:
        home.wait_state(RECORDING, "on", timeout=60)
    finally:
        os.kill(recorder, signal.SIGCONT)
    home.wait_state(RECORDING, "off", timeout=60)


def _a_ring_and_a_snapshot(home: Home) -> None:
    ha = home.ha
    assert home.state(RING) == "unknown"
    before = ha.state(SNAPSHOT)["state"]  # type: ignore[index]
    # a press of the porch bell's (mock) button: pull-up, so pressed pulls the line low
    pin = home.pins.pin(BELL_PIN)
    pin.drive_low()
    time.sleep(0.3)
    pin.drive_high()
    wait_for(lambda: home.state(RING) not in ("unknown", None), 30, "the ring in HA")
    assert ha.state(RING)["attributes"]["event_type"] == "ring"  # type: ignore[index]
    wait_for(lambda: ha.state(SNAPSHOT)["state"] != before, 30, "a snapshot")  # type: ignore[index]
    jpeg = ha.image(SNAPSHOT)
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9", jpeg[:16]
    # and on request, from HA's button
    shown = ha.state(SNAPSHOT)["state"]  # type: ignore[index]
    ha.call("button", "press", entity_id=TAKE_SNAPSHOT)
    wait_for(lambda: ha.state(SNAPSHOT)["state"] != shown, 30, "a requested snapshot")  # type: ignore[index]
    # the nudge's HA channel: an event that says only that something waits
    assert home.app.home_assistant is not None
    HomeAssistantNudge(home.app.home_assistant).send()
    wait_for(lambda: home.state(REVIEW) not in ("unknown", None), 30, "the review event")
    review = ha.state(REVIEW)
    assert review is not None and review["attributes"]["event_type"] == "review_waiting"


def _the_switch_pauses_requests_on_the_device(home: Home) -> None:
    ha, world = home.ha, home.world
    ha.call("switch", "turn_off", entity_id=NEW_REQUESTS)
    wait_for(lambda: home.app.flow.requests_paused, 30, "requests paused on the device")
    home.wait_state(NEW_REQUESTS, "off")
    window = Window(now_ms() - 60_000, now_ms() - 1_000)
    refused = world.rfa(window)
    home.requests.append(refused.id)
    world.publish(refused)
    audit = world.setup.root / "var" / "state" / "audit.log"

    def rejected_as_paused() -> bool:
        return any(
            e.event == "rfa_rejected"
            and e.fields.get("rfa_id") == refused.id
            and e.fields.get("reason") == "requests_off"
            for e in read_entries(audit)
        )

    wait_for(rejected_as_paused, 30, "the request refused as paused, in the audit log")
    events = [e.event for e in read_entries(audit)]
    assert events.count("requests_paused") == 1  # audited as `doorbellctl pause` is
    assert refused.id not in [p.rfa.id for p in home.app.flow.pending()]

    ha.call("switch", "turn_on", entity_id=NEW_REQUESTS)
    wait_for(lambda: not home.app.flow.requests_paused, 30, "requests accepted again")
    home.wait_state(NEW_REQUESTS, "on")
    accepted = world.rfa(window)
    home.requests.append(accepted.id)
    world.publish(accepted)
    wait_for(
        lambda: accepted.id in [p.rfa.id for p in home.app.flow.pending()], 30, "a new request"
    )
    home.wait_state(WAITING, "1")  # the count, and nothing else of the request
    waiting = ha.state(WAITING)
    assert waiting is not None and set(waiting["attributes"]) <= {
        "friendly_name",
        "icon",
        "state_class",
    }, waiting
    assert [e.event for e in read_entries(audit)].count("requests_resumed") == 1


class PushRelay:
    """Stands where the companion app's push relay is: records every notification HA
    sends for the phone."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                bodies.append(self.rfile.read(min(length, 1 << 20)))
                reply = b"{}"
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _the_blueprint_tells_the_phone_and_nothing_more(home: Home) -> None:
    """The shipped blueprint, installed and used as an owner does: the review event
    becomes one notification on the phone, which says that something waits and opens the
    console, and carries nothing of the request that waits (one is pending now)."""
    ha = home.ha
    relay = PushRelay()
    try:
        path = ha.install_blueprint(BLUEPRINT, "doorbell")
        ha.register_phone("Owner's phone", relay.url)
        phone = ha.template('{{ device_id("Owner\'s phone") }}')
        assert phone and phone != "None"
        ha.add_automation(
            "doorbell_review",
            {
                "alias": "Doorbell review",
                "use_blueprint": {"path": path, "input": {"review_event": REVIEW, "phone": phone}},
            },
        )
        home.wait_state("automation.doorbell_review", "on")
        assert home.app.home_assistant is not None
        HomeAssistantNudge(home.app.home_assistant).send()
        wait_for(lambda: relay.bodies, 30, "the notification at the push relay")
        body = relay.bodies[0]
        sent = json.loads(body)
        assert sent["message"] == "Your doorbell has something for you to review"
        console_url = home.app.console.info()["url"]
        assert sent["data"]["url"] == console_url == sent["data"]["clickAction"]
        rfa = home.app.flow.pending()[0].rfa
        for detail in (rfa.id, rfa.agency.id, rfa.agency.name, rfa.case_number, "Elm"):
            assert detail.encode() not in body, detail
    finally:
        relay.close()
    assert len(relay.bodies) == 1


def _restarting_home_assistant_brings_discovery_back(home: Home) -> None:
    """Discovery is not retained on the broker: after a restart HA knows the device again
    only because its birth message made the device announce itself."""
    ha = home.ha
    ha.restart()
    for entity_id in ENTITIES:
        wait_for(
            lambda e=entity_id: home.state(e) not in (None, "unavailable"),
            60,
            f"{entity_id} back after HA's restart",
        )
    home.wait_state(NEW_REQUESTS, "on")
    home.wait_state(WAITING, "1")


def _stopping_the_daemon_makes_the_entities_unavailable(home: Home) -> None:
    home.app.stop()
    for entity_id in ENTITIES:
        home.wait_state(entity_id, "unavailable")
