"""The owner's panel: the indoor approval button and the status light (gpiozero).

**The approval button must be indoors**, wired to `owner.button_pin`, and must never be
the porch bell button: a visitor at the door must not be able to approve a share. The
button is off unless `owner.button_pin` is configured; the light is off unless
`owner.led_pin` is.

What a press does is decided by `button_action`, a pure function:

* a short press approves the one pending request, only while exactly one is pending
  (with the request's full window; the flow applies `owner.share_contact_by_default`);
* a long press (at least 3 s) declines it;
* with no request or several pending, or if the set of pending requests changed while
  the button was held, the press does nothing; presses shorter than 50 ms are contact
  bounce or interference and do nothing either.

The light is off when nothing is pending, blinks slowly while one request waits, and
blinks fast while several wait ("the button cannot choose; use the app or doorbellctl").

Press durations are measured with the pin factory's ticks (gpiozero's own clock), so
tests drive a `MockFactory` whose ticks they control.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from foundation.display import shown
from foundation.errors import DoorbellError

logger = logging.getLogger(__name__)

LONG_PRESS_S = 3.0
MIN_PRESS_S = 0.05


@dataclass(frozen=True, slots=True)
class Approve:
    rfa_id: str


@dataclass(frozen=True, slots=True)
class Decline:
    rfa_id: str


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


ButtonAction = Approve | Decline | Ignore


def button_action(
    press_seconds: float,
    pending_ids: Sequence[str],
    *,
    pending_at_press: Sequence[str] | None = None,
    long_press_s: float = LONG_PRESS_S,
) -> ButtonAction:
    """What a press of `press_seconds` means with `pending_ids` pending at release."""
    if press_seconds < MIN_PRESS_S:
        return Ignore("press too short (contact bounce or interference)")
    if pending_at_press is not None and sorted(pending_at_press) != sorted(pending_ids):
        # The owner pressed for the request they knew of, not one that arrived meanwhile.
        return Ignore("the pending requests changed while the button was held")
    if not pending_ids:
        return Ignore("nothing is pending")
    if len(pending_ids) > 1:
        return Ignore("several requests are pending; decide in the app or with doorbellctl")
    if press_seconds >= long_press_s:
        return Decline(pending_ids[0])
    return Approve(pending_ids[0])


class LightPattern(Enum):
    """(on seconds, off seconds) of the status light; None is off."""

    OFF = None
    ONE_PENDING = (1.0, 1.0)
    SEVERAL_PENDING = (0.15, 0.15)


def light_pattern(pending_count: int) -> LightPattern:
    if pending_count <= 0:
        return LightPattern.OFF
    return LightPattern.ONE_PENDING if pending_count == 1 else LightPattern.SEVERAL_PENDING


class Panel:
    """Wires the button and the light to the request flow; a thread runs `run()`.

    `decide(rfa_id, approve)` is called from gpiozero's event thread; `pending_ids()` is
    polled every `poll_s` to keep the light current. gpiozero devices are created by
    `open()` (called by `run()`), not by the constructor."""

    def __init__(
        self,
        *,
        button_pin: int | str | None,
        led_pin: int | str | None,
        pin_factory: Any,
        pending_ids: Callable[[], list[str]],
        decide: Callable[[str, bool], object],
        stop: threading.Event,
        poll_s: float = 0.5,
        long_press_s: float = LONG_PRESS_S,
    ) -> None:
        self._button_pin = button_pin
        self._led_pin = led_pin
        self._factory = pin_factory
        self._pending_ids = pending_ids
        self._decide = decide
        self._stop = stop
        self._poll_s = poll_s
        self._long_press_s = long_press_s
        self._lock = threading.Lock()
        self._button: Any = None
        self._led: Any = None
        self._pattern: LightPattern | None = None
        self._pressed_at: Any = None
        self._pending_at_press: list[str] = []
        self.last_action: ButtonAction | None = None

    # -- lifecycle

    def open(self) -> None:
        try:
            from gpiozero import LED, Button  # optional: only a Pi with a button needs it
        except ImportError as exc:
            raise DoorbellError(
                "owner.button_pin/led_pin need gpiozero: install the 'pi' extra"
            ) from exc

        if self._button_pin is not None and self._button is None:
            # Pull-up: the button shorts the pin to ground, so pressed reads low.
            self._button = Button(
                self._button_pin, pull_up=True, bounce_time=None, pin_factory=self._factory
            )
            self._button.when_pressed = self._on_pressed
            self._button.when_released = self._on_released
            logger.info("approval button on %s", self._button_pin)
        if self._led_pin is not None and self._led is None:
            self._led = LED(self._led_pin, pin_factory=self._factory)
        self.refresh()

    def run(self) -> None:
        if self._button_pin is None and self._led_pin is None:
            logger.info("no owner.button_pin or owner.led_pin configured; panel off")
            return
        self.open()
        try:
            while not self._stop.wait(self._poll_s):
                self.refresh()
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            for device in (self._button, self._led):
                if device is not None:
                    device.close()
            self._button = self._led = None
            self._pattern = None

    # -- the light

    @property
    def pattern(self) -> LightPattern | None:
        return self._pattern

    def refresh(self) -> LightPattern:
        """Show the pending count on the light (also called after every press)."""
        try:
            count = len(self._pending_ids())
        except Exception:  # a loop boundary: keep the last pattern
            logger.warning("panel: cannot read the pending requests", exc_info=True)
            return self._pattern or LightPattern.OFF
        wanted = light_pattern(count)
        with self._lock:
            if wanted is not self._pattern and self._led is not None:
                if wanted.value is None:
                    self._led.off()
                else:
                    on_s, off_s = wanted.value
                    self._led.blink(on_time=on_s, off_time=off_s, background=True)
            if self._led is not None:
                self._pattern = wanted
        return wanted

    # -- the button

    def _ticks(self) -> Any:
        factory = self._factory if self._factory is not None else self._button.pin_factory
        return factory.ticks()

    def _ticks_diff(self, later: Any, earlier: Any) -> float:
        factory = self._factory if self._factory is not None else self._button.pin_factory
        return float(factory.ticks_diff(later, earlier))

    def _on_pressed(self) -> None:
        try:
            pending = list(self._pending_ids())
        except Exception:
            logger.warning("panel: cannot read the pending requests", exc_info=True)
            pending = []
        with self._lock:
            self._pressed_at = self._ticks()
            self._pending_at_press = pending

    def _on_released(self) -> None:
        with self._lock:
            pressed_at, self._pressed_at = self._pressed_at, None
            at_press = self._pending_at_press
        if pressed_at is None:
            return
        seconds = self._ticks_diff(self._ticks(), pressed_at)
        self.handle_press(seconds, pending_at_press=at_press)

    def handle_press(
        self, seconds: float, *, pending_at_press: Sequence[str] | None = None
    ) -> ButtonAction:
        try:
            pending = list(self._pending_ids())
        except Exception:
            logger.warning("panel: cannot read the pending requests", exc_info=True)
            pending = []
        action = button_action(
            seconds, pending, pending_at_press=pending_at_press, long_press_s=self._long_press_s
        )
        self.last_action = action
        if isinstance(action, Ignore):
            logger.info("button press ignored: %s", action.reason)
        else:
            approve = isinstance(action, Approve)
            logger.info("button: %s %s", "approve" if approve else "decline", shown(action.rfa_id))
            try:
                outcome = self._decide(action.rfa_id, approve)
                logger.info("button decision outcome: %s", shown(outcome))
            except Exception:  # the event thread must survive a failing decision
                logger.exception("button decision on %s failed", shown(action.rfa_id))
        self.refresh()
        return action
