"""The indoor button and the status light, on gpiozero's mock pins."""

from __future__ import annotations

import threading

import pytest

from device.panel import (
    Approve,
    Decline,
    Ignore,
    LightPattern,
    Panel,
    button_action,
    light_pattern,
)
from tests.fixtures.pins import SteppedFactory, wait_until

A = "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b"
B = "7d1f0e2a-1111-4b8e-9d3c-8e5a4f1d2c3b"
BUTTON, LIGHT = 17, 27


# ------------------------------------------------------------------ the pure decision


@pytest.mark.parametrize(
    ("seconds", "pending", "expected"),
    [
        (0.3, [A], Approve(A)),
        (2.99, [A], Approve(A)),
        (3.0, [A], Decline(A)),
        (10.0, [A], Decline(A)),
        (0.3, [], Ignore),
        (5.0, [], Ignore),
        (0.3, [A, B], Ignore),
        (5.0, [A, B], Ignore),
        (0.01, [A], Ignore),
    ],
)
def test_button_action(seconds, pending, expected):
    action = button_action(seconds, pending)
    if expected is Ignore:
        assert isinstance(action, Ignore) and action.reason
    else:
        assert action == expected


def test_a_request_arriving_during_the_press_cancels_it():
    assert isinstance(button_action(0.5, [B], pending_at_press=[A]), Ignore)
    assert isinstance(button_action(0.5, [A, B], pending_at_press=[A]), Ignore)
    assert button_action(0.5, [A], pending_at_press=[A]) == Approve(A)


def test_several_pending_says_so():
    assert "several" in button_action(0.5, [A, B]).reason  # type: ignore[union-attr]


def test_light_pattern_follows_the_pending_count():
    assert light_pattern(0) is LightPattern.OFF
    assert light_pattern(1) is LightPattern.ONE_PENDING
    assert light_pattern(2) is LightPattern.SEVERAL_PENDING
    assert light_pattern(20) is LightPattern.SEVERAL_PENDING


# ------------------------------------------------------------------ on mock pins


@pytest.fixture
def rig():
    factory = SteppedFactory()
    pending: list[str] = []
    decisions: list[tuple[str, bool]] = []
    panel = Panel(
        button_pin=BUTTON,
        led_pin=LIGHT,
        pin_factory=factory,
        pending_ids=lambda: list(pending),
        decide=lambda rfa_id, approve: decisions.append((rfa_id, approve)),
        stop=threading.Event(),
    )
    panel.open()
    yield factory, pending, decisions, panel
    panel.close()
    factory.reset()


def press(factory: SteppedFactory, seconds: float) -> None:
    pin = factory.pin(BUTTON)
    pin.drive_low()  # pull-up: pressed reads low
    factory.now += seconds
    pin.drive_high()


def test_short_press_approves_the_one_pending_request(rig):
    factory, pending, decisions, panel = rig
    pending.append(A)
    press(factory, 0.4)
    assert decisions == [(A, True)]


def test_long_press_declines_it(rig):
    factory, pending, decisions, panel = rig
    pending.append(A)
    press(factory, 3.5)
    assert decisions == [(A, False)]


@pytest.mark.parametrize("ids", [[], [A, B]])
def test_nothing_happens_with_none_or_several_pending(rig, ids):
    factory, pending, decisions, panel = rig
    pending.extend(ids)
    press(factory, 0.4)
    press(factory, 4.0)
    assert decisions == []
    assert isinstance(panel.last_action, Ignore)


def test_a_request_arriving_while_the_button_is_held_is_not_approved(rig):
    factory, pending, decisions, panel = rig
    pending.append(A)
    pin = factory.pin(BUTTON)
    pin.drive_low()
    pending.append(B)
    pending.remove(A)
    factory.now += 0.4
    pin.drive_high()
    assert decisions == []


def test_a_failing_decision_does_not_break_the_button(rig, caplog):
    factory, pending, decisions, panel = rig
    calls: list[str] = []

    def failing(rfa_id: str, approve: bool) -> None:
        calls.append(rfa_id)
        raise RuntimeError("state store full")

    panel._decide = failing
    pending.append(A)
    press(factory, 0.4)
    press(factory, 0.4)
    assert calls == [A, A]
    assert "failed" in caplog.text


def wait_for_toggles(pin, count: int, *, tries: int = 500) -> bool:
    """True once the light pin has changed state `count` times (real blink thread)."""
    done = threading.Event()
    for _ in range(tries):
        if len(pin.states) > count:
            return True
        done.wait(0.01)
    return False


def test_light_is_off_then_blinks_while_pending_then_off_again(rig):
    factory, pending, decisions, panel = rig
    light = factory.pin(LIGHT)
    assert panel.refresh() is LightPattern.OFF and light.state is False

    pending.append(A)
    assert panel.refresh() is LightPattern.ONE_PENDING
    assert wait_until(lambda: light.state is True)  # the blink thread switched it on

    pending.append(B)
    assert panel.refresh() is LightPattern.SEVERAL_PENDING
    light.clear_states()
    assert wait_for_toggles(light, 3)  # on, off, on: it really blinks

    pending.clear()
    assert panel.refresh() is LightPattern.OFF
    light.clear_states()
    assert not wait_for_toggles(light, 1, tries=40)  # no blinking any more
    assert light.state is False


def test_after_an_approval_the_light_goes_off_at_once(rig):
    factory, pending, _decisions, panel = rig

    def decide(rfa_id: str, approve: bool) -> None:
        pending.remove(rfa_id)

    panel._decide = decide
    pending.append(A)
    panel.refresh()
    press(factory, 0.4)
    assert panel.pattern is LightPattern.OFF
    assert factory.pin(LIGHT).state is False


def test_without_a_button_pin_there_is_no_button():
    factory = SteppedFactory()
    decisions: list[tuple[str, bool]] = []
    panel = Panel(
        button_pin=None,
        led_pin=LIGHT,
        pin_factory=factory,
        pending_ids=lambda: [A],
        decide=lambda rfa_id, approve: decisions.append((rfa_id, approve)),
        stop=threading.Event(),
    )
    panel.open()
    try:
        pin = factory.pin(BUTTON)  # nothing listens on the would-be button pin
        pin.drive_low()
        factory.now += 0.4
        pin.drive_high()
        assert decisions == []
        assert panel.pattern is LightPattern.ONE_PENDING
    finally:
        panel.close()


def test_run_polls_the_light_and_closes_on_stop():
    factory = SteppedFactory()
    pending: list[str] = []
    stop = threading.Event()
    panel = Panel(
        button_pin=BUTTON,
        led_pin=LIGHT,
        pin_factory=factory,
        pending_ids=lambda: list(pending),
        decide=lambda rfa_id, approve: None,
        stop=stop,
        poll_s=0.01,
    )
    thread = threading.Thread(target=panel.run, daemon=True)
    thread.start()
    pending.append(A)
    seen = threading.Event()
    for _ in range(500):
        if panel.pattern is LightPattern.ONE_PENDING:
            seen.set()
            break
        seen.wait(0.01)
    stop.set()
    thread.join(timeout=10)
    assert seen.is_set() and not thread.is_alive()
    assert panel.pattern is None  # closed: the pins are released
    factory.pin(BUTTON).close()
