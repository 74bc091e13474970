"""The porch bell on gpiozero's mock pins: one ring per press however the contact
bounces, the chime pulses for a bounded time and a ring while it sounds does not stack,
listeners hear every ring from the bell's own thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bell import Bell, Rings, is_ring
from firmware_config.bell import BellSettings
from tests.fixtures.pins import SteppedFactory, wait_until

BELL, CHIME = 22, 23


def opened_bell(factory: SteppedFactory, rings: Rings, **settings: Any) -> Bell:
    """A bell on `factory`'s mock pins, opened, without its listeners' thread."""
    bell = Bell(
        BellSettings(button_pin=BELL, **settings),
        rings=rings,
        pin_factory=factory,
        wall_ms=lambda: 1,
        stop=threading.Event(),
    )
    bell.open()
    return bell


# ------------------------------------------------------------------ the pure decision


def test_is_ring_needs_a_quiet_line_before_the_press() -> None:
    assert is_ring(None, 0.05)  # the first edge ever
    assert is_ring(0.05, 0.05)
    assert is_ring(12.0, 0.05)
    assert not is_ring(0.049, 0.05)
    assert not is_ring(0.0, 0.05)


@settings(deadline=None)  # a mock pin factory per example: slow on a loaded machine
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.049), min_size=0, max_size=40),
)
def test_a_burst_of_edges_rings_once(gaps: list[float]) -> None:
    """Whatever a bouncing contact does within the bounce time, one ring."""
    factory = SteppedFactory()
    rings = Rings()
    bell = opened_bell(factory, rings, bounce_ms=50)
    try:
        pin = factory.pin(BELL)
        factory.now += 10
        pin.drive_low()  # the press
        for gap in gaps:  # the bounce: alternating edges, each within 50 ms of the last
            factory.now += gap
            if pin.state:
                pin.drive_low()
            else:
                pin.drive_high()
        assert rings.count == 1
    finally:
        bell.close()
        factory.reset()


# ------------------------------------------------------------------ on mock pins


@pytest.fixture
def rig() -> Iterator[tuple[SteppedFactory, Bell, Rings, list[int], threading.Event]]:
    factory = SteppedFactory()
    rings = Rings()
    heard: list[int] = []
    rings.subscribe(heard.append)
    stop = threading.Event()
    bell = Bell(
        BellSettings(button_pin=BELL, chime_pin=CHIME, chime_seconds=0.3),
        rings=rings,
        pin_factory=factory,
        wall_ms=lambda: 1_765_000_000_000 + rings.count,
        stop=stop,
    )
    thread = threading.Thread(target=bell.run, daemon=True)
    thread.start()
    wait_until(lambda: bell._button is not None)
    yield factory, bell, rings, heard, stop
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    factory.reset()


def press(factory: SteppedFactory, seconds: float = 0.2, *, pin: int = BELL) -> None:
    line = factory.pin(pin)
    line.drive_low()  # the button shorts the line to ground against the pull-up
    factory.now += seconds
    line.drive_high()
    factory.now += 1.0


def test_each_press_rings_once_and_listeners_hear_it(rig) -> None:  # type: ignore[no-untyped-def]
    factory, bell, rings, heard, _stop = rig
    press(factory)
    press(factory)
    assert rings.count == 2
    assert wait_until(lambda: len(heard) == 2)
    assert heard == [1_765_000_000_000, 1_765_000_000_001]
    status = rings.status(wired=True)
    assert status["rings"] == 2 and status["last_ring"] and status["wired"]


def test_contact_bounce_is_one_ring(rig) -> None:  # type: ignore[no-untyped-def]
    factory, bell, rings, heard, _stop = rig
    line = factory.pin(BELL)
    for _ in range(5):  # a chattering contact: edges 3 ms apart
        line.drive_low()
        factory.now += 0.003
        line.drive_high()
        factory.now += 0.003
    line.drive_low()
    factory.now += 0.5
    line.drive_high()
    for _ in range(3):  # and bouncing again as it is let go
        factory.now += 0.002
        line.drive_low()
        factory.now += 0.002
        line.drive_high()
    assert rings.count == 1


def test_the_chime_pulses_and_a_ring_while_it_sounds_does_not_stack(rig) -> None:  # type: ignore[no-untyped-def]
    factory, bell, rings, heard, _stop = rig
    chime = factory.pin(CHIME)
    chime.clear_states()
    press(factory, 0.1)
    factory.now -= 0.9  # the next press comes 0.1 s after the release, while it sounds
    press(factory, 0.1)
    assert rings.count == 2  # both are rings (counted, heard) ...
    assert wait_until(lambda: chime.state is True or len(chime.states) > 2)
    assert wait_until(lambda: chime.state is False and len(chime.states) >= 3)
    pause = threading.Event()
    pause.wait(0.5)  # longer than a second pulse would take to start
    assert [s.state for s in chime.states] == [False, True, False]  # ... one pulse
    factory.now += 5
    press(factory)
    assert wait_until(lambda: [s.state for s in chime.states] == [False, True, False, True, False])


def test_stopping_while_the_chime_sounds_leaves_it_off(rig) -> None:  # type: ignore[no-untyped-def]
    factory, bell, rings, heard, stop = rig
    bell._settings = BellSettings(button_pin=BELL, chime_pin=CHIME, chime_seconds=9.5)
    press(factory)
    chime = factory.pin(CHIME)
    assert wait_until(lambda: chime.state is True)
    stop.set()
    assert wait_until(lambda: bell._chime is None)
    assert chime.state is False


def test_a_failing_listener_does_not_silence_the_others(rig) -> None:  # type: ignore[no-untyped-def]
    factory, bell, rings, heard, _stop = rig
    later: list[int] = []

    def broken(at_ms: int) -> None:
        raise RuntimeError("home broker gone")

    rings.subscribe(broken)
    rings.subscribe(later.append)
    press(factory)
    press(factory)
    assert wait_until(lambda: len(later) == 2 and len(heard) == 2)


def test_the_indoor_button_pin_is_not_the_bell() -> None:
    """Pressing another pin (the approval button's) is no ring."""
    factory = SteppedFactory()
    rings = Rings()
    bell = opened_bell(factory, rings)
    try:
        press(factory, pin=17)
        assert rings.count == 0
        press(factory)
        assert rings.count == 1
    finally:
        bell.close()
        factory.reset()


def test_an_active_high_button_rings_when_the_line_goes_high() -> None:
    factory = SteppedFactory()
    rings = Rings()
    bell = opened_bell(factory, rings, active_high=True)
    try:
        line = factory.pin(BELL)
        assert line.state is False  # pulled down
        line.drive_high()
        factory.now += 0.2
        line.drive_low()
        assert rings.count == 1
    finally:
        bell.close()
        factory.reset()
