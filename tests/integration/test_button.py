"""The indoor approval button, the status light and the porch bell, through gpiozero's
mock pin factory, on a whole daemon running in this process (a real broker, a real tus
server, a real recorder process): a short press approves the one pending request and its
share reaches the agency; a long press declines; with two pending the button does
nothing; the porch bell rings (chime, status, listeners) and never decides anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from cloud.loopback import MosquittoBroker, TusServer
from device.app import Doorbell, Hooks
from device.cli import render_status
from firmware_config import load_config
from foundation.clock import SystemClock
from foundation.times import Window
from tests.fixtures.daemon import World, make_world, wait_for

BUTTON, LED = 17, 27
BELL, CHIME = 22, 23


class InProcess:
    """Just enough of DaemonProcess for World's helpers, on an in-process Doorbell."""

    def __init__(self, app: Doorbell) -> None:
        self.app = app

    def pending_ids(self) -> list[str]:
        return [entry["id"] for entry in self.app.flow.pending_entries()]

    def share_state(self, rfa_id: str) -> str | None:
        for share in self.app.outbox.shares(self.app.hooks.clock.wall_ms()):
            if share["rfa_id"] == rfa_id:
                return str(share["state"])
        return None


@pytest.fixture
def panel_world(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> Iterator[tuple[World, InProcess, MockFactory]]:
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        extra={
            "owner": {"button_pin": BUTTON, "led_pin": LED},
            "bell": {"button_pin": BELL, "chime_pin": CHIME, "chime_seconds": 0.3},
        },
    )
    factory = MockFactory()
    app = Doorbell(
        load_config(world.daemon.config_path),
        Hooks(clock=SystemClock(assume_synchronized=True), pin_factory=factory),
    )
    app.start()
    try:
        wait_for(lambda: app.recorder_healthy(), 30, "recording")
        time.sleep(3)  # footage to ask about
        yield world, InProcess(app), factory
    finally:
        app.stop()


def press(factory: MockFactory, seconds: float, button: int = BUTTON) -> None:
    pin = factory.pin(button)
    pin.drive_low()  # pull-up: pressed pulls the line low
    time.sleep(seconds)
    pin.drive_high()


def led_blinks(factory: MockFactory, within: float = 3.0) -> bool:
    pin = factory.pin(LED)
    seen = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen.add(pin.state)
        if len(seen) > 1:
            return True
        time.sleep(0.02)
    return False


def test_short_press_approves_the_one_pending_request(panel_world) -> None:
    world, device, factory = panel_world
    assert not led_blinks(factory, within=1.2)  # nothing pending: the light stays off
    now = time.time_ns() // 1_000_000
    rfa = world.rfa(Window(now - 2500, now - 500))
    world.publish(rfa)
    wait_for(lambda: rfa.id in device.pending_ids(), 20, "request pending")
    assert led_blinks(factory)
    press(factory, 0.3)
    wait_for(lambda: device.share_state(rfa.id) == "done", 60, "the share uploaded")
    assert device.pending_ids() == []
    assert {u.metadata["kind"] for u in world.uploads.uploads()} == {"manifest", "clip"}
    assert world.uploads.upload_of("clip").metadata["device_id"] == world.setup.device_id


def test_long_press_declines_and_two_pending_make_the_button_do_nothing(panel_world) -> None:
    world, device, factory = panel_world
    now = time.time_ns() // 1_000_000
    first = world.rfa(Window(now - 2500, now - 500))
    world.publish(first)
    wait_for(lambda: first.id in device.pending_ids(), 20, "request pending")
    press(factory, 3.3)
    wait_for(lambda: first.id not in device.pending_ids(), 10, "request declined")
    assert device.share_state(first.id) is None

    a = world.rfa(Window(now - 2500, now - 1500))
    b = world.rfa(Window(now - 1500, now - 500), case_number="2026-000002")
    world.publish(a)
    world.publish(b)
    wait_for(lambda: {a.id, b.id} <= set(device.pending_ids()), 20, "two pending")
    press(factory, 0.3)
    time.sleep(2.0)  # time for a wrong decision to show, if the button made one
    assert {a.id, b.id} <= set(device.pending_ids())  # the button cannot choose
    assert device.share_state(a.id) is None and device.share_state(b.id) is None
    assert world.uploads.uploads() == []


def test_the_porch_bell_rings_and_never_decides(panel_world) -> None:
    world, device, factory = panel_world
    heard: list[int] = []
    device.app.rings.subscribe(heard.append)
    now = time.time_ns() // 1_000_000
    rfa = world.rfa(Window(now - 2500, now - 500))
    world.publish(rfa)
    wait_for(lambda: rfa.id in device.pending_ids(), 20, "request pending")
    chime = factory.pin(CHIME)
    chime.clear_states()
    press(factory, 0.3, button=BELL)  # what approves on the indoor button
    wait_for(lambda: heard, 10, "the ring heard")
    wait_for(lambda: [s.state for s in chime.states] == [False, True, False], 10, "a pulse")
    time.sleep(0.2)  # a person's next press (edges 50 ms apart are one bouncing press)
    press(factory, 3.3, button=BELL)  # what declines on the indoor button
    wait_for(lambda: len(heard) == 2, 10, "the second ring heard")
    time.sleep(2.0)  # time for a wrong decision to show, if the bell made one
    assert rfa.id in device.pending_ids() and device.share_state(rfa.id) is None
    status = device.app.status()
    assert status["bell"]["rings"] == 2 and status["bell"]["last_ring"]
    assert status["nudge"] is None  # no channel configured: no nudge
    shown = render_status(status)
    assert "porch bell    2 ring(s) since the start, the last at" in shown
    assert "nudge         off" in shown
