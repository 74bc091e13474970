"""Settings of the nudge to the owner's phone (device/nudge.py): the `nudge` section of
doorbell.yaml. Off unless a channel is set. Each default is written here, once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from foundation.errors import InvalidValueError

EVERY_MINUTES_RANGE = (1.0, 24 * 60.0)
TIMEOUT_SECONDS_RANGE = (1.0, 60.0)
PRIORITY_RANGE = (0, 10)  # ntfy takes 1-5, Gotify 0-10
WEBHOOK_FORMATS = ("text", "json")

WebhookFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """`nudge.webhook`: an HTTP POST to a URL the owner gives (ntfy, Gotify, a Home
    Assistant webhook). Headers come from here, never from anything a request said."""

    url: str
    format: WebhookFormat = "text"  # text: ntfy and most; json: Gotify, HA webhooks
    title: str | None = None
    priority: int | None = None
    token_file: Path | None = None  # its content goes as "Authorization: Bearer ..."
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.format not in WEBHOOK_FORMATS:
            raise InvalidValueError(f"webhook format must be one of {', '.join(WEBHOOK_FORMATS)}")
        if not TIMEOUT_SECONDS_RANGE[0] <= self.timeout_seconds <= TIMEOUT_SECONDS_RANGE[1]:
            raise InvalidValueError("webhook timeout_seconds out of range")


@dataclass(frozen=True, slots=True)
class NudgeSettings:
    every_minutes: float = 15.0  # the grid: a nudge goes at the start of a slot
    webhook: WebhookSettings | None = None

    def __post_init__(self) -> None:
        # a slot under a minute would tell the push service the minute of each request
        if not EVERY_MINUTES_RANGE[0] <= self.every_minutes <= EVERY_MINUTES_RANGE[1]:
            raise InvalidValueError("nudge every_minutes out of range")
