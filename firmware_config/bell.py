"""Settings of the porch bell (device/bell.py): the `bell` section of doorbell.yaml.
Each default is written here, once."""

from __future__ import annotations

from dataclasses import dataclass

from foundation.errors import InvalidValueError

BOUNCE_MS_RANGE = (0, 1000)
CHIME_SECONDS_RANGE = (0.1, 10.0)  # a chime is never left on longer than this


@dataclass(frozen=True, slots=True)
class BellSettings:
    button_pin: int | str | None = None  # the porch button; None: no bell
    active_high: bool = False  # False: the button connects the pin to ground (pull-up)
    bounce_ms: int = 50  # edges closer than this to the previous one are contact bounce
    chime_pin: int | str | None = None  # an output that drives the chime; None: no chime
    chime_active_high: bool = True  # False for relay boards that switch on a low pin
    chime_seconds: float = 1.0  # how long one ring sounds the chime

    def __post_init__(self) -> None:
        # The bell refuses a chime that could stay on, whoever builds it (the schema says
        # the same with the key's name).
        if not BOUNCE_MS_RANGE[0] <= self.bounce_ms <= BOUNCE_MS_RANGE[1]:
            raise InvalidValueError(
                "bell bounce_ms must be between {} and {}".format(*BOUNCE_MS_RANGE)
            )
        if not CHIME_SECONDS_RANGE[0] <= self.chime_seconds <= CHIME_SECONDS_RANGE[1]:
            raise InvalidValueError("bell chime_seconds out of range")
