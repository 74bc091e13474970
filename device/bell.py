"""The porch bell: a button outside the door, and an optional chime indoors (gpiozero).

A ring is only an event: it never approves or declines anything (that is the indoor
approval button's job, device/panel.py, on another pin; `--check-config` refuses the
two on one pin). A ring sounds the chime, is counted in the status, and is handed to
whoever subscribed to `Rings` (the Home Assistant part shows it as a doorbell event).
A ring is not a privacy decision, so it is not audited.

Debouncing is done here, on the pin factory's ticks, because gpiozero leaves it to
each pin driver: lgpio filters glitches shorter than `bounce_time` in the kernel (we
pass it on), gpiozero's mock pins ignore it. `is_ring` then takes a press edge as a
ring only after the line has been quiet for `bounce_s`, so a bouncing contact rings
once, on any driver, and tests can prove it.

The chime rings for `chime_seconds` and then goes off by itself (gpiozero's blink with
one cycle, in its own thread); a ring while it sounds does not restart or lengthen it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from firmware_config.bell import BellSettings
from foundation.errors import DoorbellError
from foundation.times import format_time

logger = logging.getLogger(__name__)

# A ring's listener, called with the ring's wall-clock time (ms) from the bell's own
# thread, never from the GPIO event thread: a slow listener delays other listeners,
# never the chime or the next press.
RingListener = Callable[[int], None]

MAX_QUEUED_RINGS = 16  # rings not yet handed to the listeners; beyond that, dropped


def is_ring(since_last_edge_s: float | None, bounce_s: float) -> bool:
    """A press edge is a ring when the line was quiet for `bounce_s` before it (None:
    the first edge seen). Contact bounce is a burst of edges closer than that."""
    return since_last_edge_s is None or since_last_edge_s >= bounce_s


class Rings:
    """The rings, for whoever listens (a callable list), and their count."""

    def __init__(self) -> None:
        self._listeners: list[RingListener] = []
        self._lock = threading.Lock()
        self.count = 0
        self.dropped = 0
        self.last_ms: int | None = None

    def subscribe(self, listener: RingListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def note(self, at_ms: int, *, dropped: bool = False) -> None:
        """Count a ring (`dropped`: its listeners will not hear of it)."""
        with self._lock:
            self.count += 1
            self.dropped += dropped
            self.last_ms = at_ms

    def announce(self, at_ms: int) -> None:
        """Tell every listener of a ring; one that fails is logged, the others still hear."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(at_ms)
            except Exception:  # a listener's failure is its own; the bell goes on
                logger.exception("a ring listener failed")

    def status(self, *, wired: bool) -> dict[str, Any]:
        return {
            "wired": wired,
            "rings": self.count,
            "last_ring": None if self.last_ms is None else format_time(self.last_ms),
        }


class Bell:
    """The porch button and the chime; a supervised thread runs `run()`, which hands
    the rings to `rings`' listeners. gpiozero devices are made by `open()`."""

    def __init__(
        self,
        settings: BellSettings,
        *,
        rings: Rings,
        pin_factory: Any,
        wall_ms: Callable[[], int],
        stop: threading.Event,
    ) -> None:
        self._settings = settings
        self._rings = rings
        self._factory = pin_factory
        self._wall_ms = wall_ms
        self._stop = stop
        self._lock = threading.Lock()
        self._button: Any = None
        self._chime: Any = None
        self._last_edge: Any = None  # ticks of the previous edge, rung or not
        self._chime_started: Any = None  # ticks when the chime last started
        self._queue: queue.Queue[int] = queue.Queue(maxsize=MAX_QUEUED_RINGS)

    # -- lifecycle

    def open(self) -> None:
        try:
            from gpiozero import Button, DigitalOutputDevice  # optional: only a Pi needs it
        except ImportError as exc:
            raise DoorbellError(
                "bell.button_pin/chime_pin need gpiozero: install the 'pi' extra"
            ) from exc
        s = self._settings
        if s.chime_pin is not None and self._chime is None:
            self._chime = DigitalOutputDevice(
                s.chime_pin,
                active_high=s.chime_active_high,
                initial_value=False,
                pin_factory=self._factory,
            )
        if s.button_pin is not None and self._button is None:
            # Active low (the default): the button shorts the pin to ground against the
            # Pi's pull-up. Active high: the button connects 3.3 V against the pull-down.
            self._button = Button(
                s.button_pin,
                pull_up=not s.active_high,
                bounce_time=s.bounce_ms / 1000 or None,
                pin_factory=self._factory,
            )
            self._button.when_pressed = self._on_pressed
            self._button.when_released = self._on_released
            logger.info("porch bell on %s", s.button_pin)

    def run(self) -> None:
        self.open()
        try:
            while not self._stop.is_set():
                try:
                    at_ms = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._rings.announce(at_ms)
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._chime is not None:
                self._chime.off()  # stops a pulse under way: never left sounding
            for device in (self._button, self._chime):
                if device is not None:
                    device.close()
            self._button = self._chime = None

    # -- the button

    def _pin_factory(self) -> Any:
        """The factory given, or the one gpiozero chose for our devices (on a Pi)."""
        if self._factory is not None:
            return self._factory
        return (self._button or self._chime).pin_factory

    def _ticks(self) -> Any:
        return self._pin_factory().ticks()

    def _since(self, later: Any, earlier: Any) -> float | None:
        if earlier is None:
            return None
        return float(self._pin_factory().ticks_diff(later, earlier))

    def _edge(self) -> float | None:
        """Note an edge now; the seconds since the previous one (None: the first)."""
        now = self._ticks()
        with self._lock:
            since = self._since(now, self._last_edge)
            self._last_edge = now
        return since

    def _on_released(self) -> None:
        self._edge()

    def _on_pressed(self) -> None:
        if not is_ring(self._edge(), self._settings.bounce_ms / 1000):
            return
        self.ring()

    def ring(self) -> None:
        """A ring: sound the chime, count it, queue it for the listeners."""
        self._sound_chime()
        at_ms = self._wall_ms()
        try:
            self._queue.put_nowait(at_ms)
            self._rings.note(at_ms)
        except queue.Full:  # listeners far behind (a stuck one): the count still rises
            self._rings.note(at_ms, dropped=True)

    def _sound_chime(self) -> None:
        with self._lock:
            chime = self._chime
            if chime is None:
                return
            now = self._ticks()
            sounding_for = self._since(now, self._chime_started)
            if sounding_for is not None and sounding_for < self._settings.chime_seconds:
                return  # already sounding: a ring while it rings does not stack
            self._chime_started = now
        # One on-then-off cycle in gpiozero's own thread: off by itself, never stuck on.
        chime.blink(on_time=self._settings.chime_seconds, off_time=0, n=1, background=True)
