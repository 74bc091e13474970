"""The nudge: a message to the owner's phone that says only "look at your doorbell".

When something new waits for the owner (a request that arrived, a share that failed),
each channel the owner enabled sends one fixed message that names nothing: no agency,
case, place, time or count. `NudgeChannel.send` takes no arguments, so no channel can
be handed a detail to leak.

Nudges go out on a grid of slots (`every_minutes`, 15 by default, counted from the
epoch, so :00, :15, :30, :45): news that arrives in a slot is told at the start of the
next slot, and a channel sends at most one nudge per slot. A push service (ntfy,
Gotify, Apple's and Google's relays) thus learns at most that something happened in
that quarter of an hour. A send that fails is tried again within its slot a bounded
number of times (`RETRY_AFTER_S`), then at the next slot.

`due` is the decision, a pure function; `NudgeScheduler` is the I/O edge (the clock,
what waits, the channels), and `WebhookChannel` an HTTP POST to the owner's URL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from firmware_config.nudge import WebhookSettings
from foundation.errors import DoorbellError
from foundation.times import format_time

logger = logging.getLogger(__name__)

NUDGE_TEXT = "Your doorbell has something for you to review"
# Seconds after a failed attempt before the next one in the same slot: three tries in
# the slot's first minute at most, then the next slot.
RETRY_AFTER_S = (10.0, 30.0)
POLL_S = 1.0


class NudgeError(DoorbellError):
    """A channel could not send; the message is safe to log (no secret, no URL path)."""


class NudgeChannel(Protocol):
    """Somewhere a nudge goes. `send` raises on failure (NudgeError, with a message fit
    for the log); it has no arguments, so it cannot carry anything about a request."""

    def send(self) -> None: ...


# ----------------------------------------------------------------------- the decision


@dataclass(frozen=True, slots=True)
class Owed:
    """What one channel owes the owner. `since_slot`: the slot in which the oldest news
    not yet told arrived (None: nothing owed); `tried_slot`/`attempts`/`last_try_ms`:
    the failed attempts in the slot of the latest one."""

    since_slot: int | None = None
    tried_slot: int | None = None
    attempts: int = 0
    last_try_ms: int = 0


def slot_of(now_ms: int, every_ms: int) -> int:
    return now_ms // every_ms


def news(owed: Owed, slot: int) -> Owed:
    """News arrived in `slot`: owed from the oldest slot with untold news."""
    since = slot if owed.since_slot is None else min(owed.since_slot, slot)
    return replace(owed, since_slot=since)


def due(owed: Owed, now_ms: int, every_ms: int) -> bool:
    """Send now? Only once a slot boundary has passed since the news (so the moment of
    sending says no more than the slot), and within a slot only the first attempt and
    the bounded retries after a failure."""
    if owed.since_slot is None:
        return False
    slot = slot_of(now_ms, every_ms)
    if slot <= owed.since_slot:
        return False  # the next slot has not begun
    if owed.tried_slot != slot:
        return True  # the first attempt in this slot
    if owed.attempts > len(RETRY_AFTER_S):
        return False  # this slot's tries are used up; the next slot tries again
    return now_ms - owed.last_try_ms >= RETRY_AFTER_S[owed.attempts - 1] * 1000


def sent(owed: Owed) -> Owed:
    """Told: nothing is owed any more (news noted while the send was under way is added
    back by the scheduler, which alone knows of it)."""
    return Owed()


def failed(owed: Owed, now_ms: int, every_ms: int) -> Owed:
    """A failed attempt at `now_ms`: still owed, one more try used in this slot."""
    slot = slot_of(now_ms, every_ms)
    attempts = owed.attempts + 1 if owed.tried_slot == slot else 1
    return replace(owed, tried_slot=slot, attempts=attempts, last_try_ms=now_ms)


# ----------------------------------------------------------------------- the I/O edge


@dataclass
class ChannelStatus:
    sent: int = 0
    failed: int = 0
    last_sent: str | None = None
    last_error: str | None = None  # the latest failure, safe to show (no URL path)
    failing: bool = False


@dataclass
class _Channel:
    name: str
    channel: NudgeChannel
    owed: Owed = field(default_factory=Owed)
    status: ChannelStatus = field(default_factory=ChannelStatus)
    sending: threading.Thread | None = None  # the send under way, if any
    news_while_sending: int | None = None  # the oldest slot with news noted meanwhile


class NudgeScheduler:
    """Polls what waits for the owner (`waiting()`: a set of keys, one per item, such as
    a request id) and tells the channels on the grid. An item counts as news when its
    key was not in the previous poll, so at start-up whatever waits is news once.

    Each send runs in a thread of its own: a channel that hangs (a server that answers
    one byte at a time, under every read timeout) holds up only itself, not the other
    channels and not the polling; it is not sent again until its send returns."""

    def __init__(
        self,
        *,
        every_minutes: float,
        channels: Sequence[tuple[str, NudgeChannel]],
        waiting: Callable[[], Iterable[str]],
        wall_ms: Callable[[], int],
        stop: threading.Event,
        poll_s: float = POLL_S,
    ) -> None:
        self._every_ms = round(every_minutes * 60_000)
        self._channels = [_Channel(name, channel) for name, channel in channels]
        self._waiting = waiting
        self._wall_ms = wall_ms
        self._stop = stop
        self._poll_s = poll_s
        self._known: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def run(self) -> None:
        if not self._channels:
            logger.info("no nudge channel configured; nudges off")
            return
        while not self._stop.wait(self._poll_s):
            self.tick()

    def tick(self) -> None:
        """One poll: note news, then start the sends that are due."""
        try:
            current = frozenset(self._waiting())
        except Exception:  # a loop boundary: try again at the next poll
            logger.warning("nudge: cannot read what waits for the owner", exc_info=True)
            return
        now = self._wall_ms()
        with self._lock:
            fresh = current - self._known
            self._known = current
            slot = slot_of(now, self._every_ms)
            for entry in self._channels:
                if fresh and entry.sending is None:
                    entry.owed = news(entry.owed, slot)
                elif fresh:  # the send under way may or may not have told it: owed after
                    earlier = entry.news_while_sending
                    entry.news_while_sending = slot if earlier is None else min(earlier, slot)
            for entry in self._channels:
                if entry.sending is None and due(entry.owed, now, self._every_ms):
                    entry.sending = threading.Thread(
                        target=self._send, args=(entry, now), name=f"nudge-{entry.name}"
                    )
                    entry.sending.daemon = True
                    entry.sending.start()

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait for the sends under way (tests; a hanging one is left after `timeout_s`)."""
        with self._lock:
            threads = [e.sending for e in self._channels if e.sending is not None]
        for thread in threads:
            thread.join(timeout_s)

    def _send(self, entry: _Channel, now: int) -> None:
        reason = None
        try:
            entry.channel.send()
        except Exception as exc:
            # A channel's error text is its own (NudgeError's is safe); anything else is
            # named by its type only, as its text might quote a URL or a token.
            reason = str(exc) if isinstance(exc, NudgeError) else type(exc).__name__
        with self._lock:
            st = entry.status
            was_failing = st.failing
            if reason is None:
                entry.owed = sent(entry.owed)
                st.sent += 1
                st.last_sent = format_time(now)
                st.failing = False
            else:
                entry.owed = failed(entry.owed, now, self._every_ms)
                st.failed += 1
                st.last_error = f"{format_time(now)}: {reason}"
                st.failing = True
            if entry.news_while_sending is not None:
                entry.owed = news(entry.owed, entry.news_while_sending)
                entry.news_while_sending = None
            entry.sending = None
        if reason is not None and not was_failing:
            # one line when it starts failing; the status keeps the rest
            logger.warning(
                "nudge: the %s channel failed (%s); it is tried again, see the status",
                entry.name,
                reason,
            )
        elif reason is None and was_failing:
            logger.info("nudge: the %s channel works again", entry.name)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "every_minutes": self._every_ms / 60_000,
                "waiting": any(e.owed.since_slot is not None for e in self._channels),
                "channels": {
                    e.name: {
                        "sending": e.sending is not None,
                        "sent": e.status.sent,
                        "failed": e.status.failed,
                        "last_sent": e.status.last_sent,
                        "last_error": e.status.last_error,
                        "failing": e.status.failing,
                    }
                    for e in self._channels
                },
            }


# ----------------------------------------------------------------------- the webhook


def safe_origin(url: str) -> str:
    """scheme://host[:port] of `url`: what a log may say of it. The path (an ntfy topic
    is a secret name), the query (a Gotify token) and any user info stay out."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def webhook_request(
    settings: WebhookSettings, *, token: str | None, console_url: str | None
) -> tuple[dict[str, str], bytes]:
    """The headers and body of every nudge, built once from the config alone."""
    text = NUDGE_TEXT if console_url is None else f"{NUDGE_TEXT}\n{console_url}"
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"  # ntfy access tokens, Gotify app tokens
    if settings.format == "json":
        doc: dict[str, Any] = {"message": text}
        if settings.title is not None:
            doc["title"] = settings.title
        if settings.priority is not None:
            doc["priority"] = settings.priority
        if console_url is not None:  # Gotify opens it when the notification is tapped
            doc["extras"] = {"client::notification": {"click": {"url": console_url}}}
        headers["Content-Type"] = "application/json"
        return headers, json.dumps(doc, ensure_ascii=False).encode()
    headers["Content-Type"] = "text/plain; charset=utf-8"
    # ntfy's headers (others ignore them). Header values must be Latin-1 in HTTP/1.1: the
    # config checks the title is.
    if settings.title is not None:
        headers["Title"] = settings.title
    if settings.priority is not None:
        headers["Priority"] = str(settings.priority)
    if console_url is not None:
        headers["Click"] = console_url
    return headers, text.encode()


class WebhookChannel:
    """An HTTP POST of the fixed message to the owner's URL. A redirect is not followed
    (it would send the token on); the answer's body is never read."""

    def __init__(self, settings: WebhookSettings, *, console_url: str | None = None) -> None:
        token = None
        if settings.token_file is not None:
            try:
                token = settings.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise DoorbellError(
                    f"nudge.webhook.token_file: cannot read {settings.token_file}"
                ) from exc
        self._url = settings.url
        self._timeout = settings.timeout_seconds
        self._headers, self._body = webhook_request(
            settings, token=token or None, console_url=console_url
        )
        self.origin = safe_origin(settings.url)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or .netrc from the environment

    def send(self) -> None:
        try:
            with self._session.post(
                self._url,
                data=self._body,
                headers=self._headers,
                timeout=(self._timeout, self._timeout),
                allow_redirects=False,
                stream=True,  # the status line only: a huge or endless body is not read
            ) as answer:
                code = answer.status_code
        except requests.RequestException as exc:
            # The exception's text quotes the URL (path and query): name its kind only.
            raise NudgeError(f"{self.origin}: {_kind(exc)}") from None
        if not 200 <= code < 300:
            raise NudgeError(f"{self.origin} answered HTTP {code}")

    def close(self) -> None:
        self._session.close()


def _kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed (certificate?)"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect, or the answer was not HTTP"
    return type(exc).__name__
