"""The nudge: the grid decision (pure, with properties), the scheduler on a clock the
test moves, and the webhook channel against a real HTTP server that records every byte
and misbehaves on demand."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.cli import render_nudge
from device.nudge import (
    NUDGE_TEXT,
    RETRY_AFTER_S,
    NudgeError,
    NudgeScheduler,
    Owed,
    WebhookChannel,
    due,
    failed,
    news,
    safe_origin,
    sent,
    slot_of,
)
from firmware_config.nudge import WebhookSettings
from tests.fixtures.webhook import WebhookReceiver, refused_url

GRID = 15 * 60_000
T0 = 1_765_000_000_000 // GRID * GRID  # a slot boundary


# ------------------------------------------------------------------ the pure decision


def test_news_is_told_at_the_next_boundary_not_before() -> None:
    owed = news(Owed(), slot_of(T0 + 60_000, GRID))
    assert not due(owed, T0 + 60_000, GRID)
    assert not due(owed, T0 + GRID - 1, GRID)
    assert due(owed, T0 + GRID, GRID)
    assert due(owed, T0 + 5 * GRID, GRID)  # late (the daemon was down): at once
    assert not due(sent(owed), T0 + GRID, GRID)


def test_failures_retry_within_the_slot_a_bounded_number_of_times() -> None:
    owed = news(Owed(), slot_of(T0, GRID))
    now = T0 + GRID
    tries = 0
    for step in range(0, 14 * 60_000, 1000):  # a whole slot, second by second
        if due(owed, now + step, GRID):
            tries += 1
            owed = failed(owed, now + step, GRID)
    assert tries == 1 + len(RETRY_AFTER_S)
    assert due(owed, now + GRID, GRID)  # the next slot tries again


def test_news_after_a_nudge_in_the_same_slot_waits_for_the_next() -> None:
    owed = sent(news(Owed(), slot_of(T0, GRID)))
    owed = news(owed, slot_of(T0 + GRID + 5_000, GRID))
    assert not due(owed, T0 + GRID + 6_000, GRID)
    assert due(owed, T0 + 2 * GRID, GRID)


@settings(max_examples=200, deadline=None)
@given(
    every_minutes=st.sampled_from([1, 5, 15, 60]),
    arrivals=st.lists(st.integers(min_value=0, max_value=6 * 3_600_000), max_size=30),
    failures=st.lists(st.booleans(), max_size=50),
)
def test_on_the_grid_at_most_once_per_slot_and_nothing_untold(
    every_minutes: int, arrivals: list[int], failures: list[bool]
) -> None:
    """Polled every second: every send is in a later slot than some untold news, a
    channel succeeds at most once per slot, and all news is told in the end."""
    every = every_minutes * 60_000
    arrivals = sorted(T0 + a for a in arrivals)
    owed = Owed()
    outcomes = iter(failures)
    successes: list[int] = []
    untold: list[int] = []
    # every slot uses up at least one failure: then two more slots to tell the rest
    end = (arrivals[-1] if arrivals else T0) + (len(failures) + 3) * every
    now = T0
    while now <= end:
        while arrivals and arrivals[0] <= now:
            untold.append(arrivals.pop(0))
            owed = news(owed, slot_of(now, every))
        if due(owed, now, every):
            assert untold and all(slot_of(now, every) > slot_of(t, every) for t in untold[:1])
            if next(outcomes, False):
                owed = failed(owed, now, every)
            else:
                successes.append(slot_of(now, every))
                untold.clear()
                owed = sent(owed)
        now += 1000 if due(owed, now + 1000, every) or untold else every // 4
    assert len(successes) == len(set(successes))
    assert untold == []


# ------------------------------------------------------------------ the scheduler


def on_clock(
    channels: list[tuple[str, Any]], waiting: Callable[[], set[str]], clock: list[int]
) -> NudgeScheduler:
    """A scheduler on a 15-minute grid whose wall clock is `clock[0]`."""
    return NudgeScheduler(
        every_minutes=15,
        channels=channels,
        waiting=waiting,
        wall_ms=lambda: clock[0],
        stop=threading.Event(),
    )


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.sends: list[int] = []
        self.fail = fail
        self.now = 0

    def send(self) -> None:
        if self.fail:
            self.fail -= 1
            raise NudgeError("down")
        self.sends.append(self.now)


def test_the_scheduler_tells_new_items_on_the_grid() -> None:
    waiting: set[str] = set()
    clock = [T0 + 30_000]
    channel = Recorder()
    scheduler = on_clock([("test", channel)], lambda: waiting, clock)

    def at(ms: int) -> None:
        clock[0] = channel.now = ms
        scheduler.tick()
        scheduler.settle()

    at(T0 + 30_000)
    assert channel.sends == []
    waiting.add("request-1")
    at(T0 + 60_000)
    at(T0 + GRID - 1)
    assert channel.sends == []
    at(T0 + GRID)
    assert channel.sends == [T0 + GRID]
    at(T0 + GRID + 1000)  # still waiting, but told: nothing more
    waiting.update({"request-2", "request-3"})
    at(T0 + GRID + 2000)
    at(T0 + 2 * GRID - 1000)
    assert channel.sends == [T0 + GRID]
    at(T0 + 2 * GRID + 1)
    assert channel.sends == [T0 + GRID, T0 + 2 * GRID + 1]
    waiting.clear()  # decided: nothing is owed, nothing is sent
    at(T0 + 3 * GRID)
    assert len(channel.sends) == 2
    assert scheduler.status()["channels"]["test"]["sent"] == 2


def test_a_failing_channel_is_logged_once_and_shown_in_the_status(caplog) -> None:  # type: ignore[no-untyped-def]
    waiting = {"request-1"}
    clock = [T0 + 1]
    broken, fine = Recorder(fail=100), Recorder()
    scheduler = on_clock([("webhook", broken), ("other", fine)], lambda: waiting, clock)
    caplog.set_level(logging.INFO, logger="device.nudge")
    for ms in range(T0 + 1, T0 + 3 * GRID, 1000):
        clock[0] = ms
        scheduler.tick()
        scheduler.settle()
    status = scheduler.status()["channels"]
    assert status["webhook"]["failing"] and "down" in status["webhook"]["last_error"]
    assert status["webhook"]["failed"] == 2 * (1 + len(RETRY_AFTER_S))  # two slots' tries
    assert status["other"]["sent"] == 1  # the other channel is not held back
    lines = [r for r in caplog.records if "webhook" in r.getMessage()]
    assert len(lines) == 1


class Held:
    """A channel whose send waits until the test lets it go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def send(self) -> None:
        self.calls += 1
        self.go.wait(30)


def test_a_send_under_way_holds_up_only_itself_and_news_meanwhile_is_told_later() -> None:
    waiting = {"request-1"}
    clock = [T0 + 1]
    held, fine = Held(), Recorder()
    scheduler = on_clock([("held", held), ("fine", fine)], lambda: waiting, clock)
    scheduler.tick()
    clock[0] = T0 + GRID
    scheduler.tick()
    scheduler.settle(timeout_s=0.5)
    assert fine.sends == [0] and held.calls == 1
    assert scheduler.status()["channels"]["held"]["sending"]
    waiting.add("request-2")  # arrives while the held send hangs
    for ms in range(T0 + GRID + 1000, T0 + GRID + 60_000, 1000):
        clock[0] = ms
        scheduler.tick()
    assert held.calls == 1  # never a second send beside the hanging one
    held.go.set()
    scheduler.settle()
    clock[0] = T0 + 2 * GRID
    scheduler.tick()
    scheduler.settle()
    assert held.calls == 2  # request-2 is told at the next boundary
    assert len(fine.sends) == 2


def test_a_webhook_that_drips_its_answer_does_not_hold_the_other_channels() -> None:
    """One byte every half second defeats every per-read timeout: the webhook's send
    hangs, the other channel is told on time."""
    receiver = WebhookReceiver(mode="drip")
    try:
        webhook = WebhookChannel(WebhookSettings(url=receiver.url + "/t", timeout_seconds=1))
        fine = Recorder()
        clock = [T0 + 1]
        scheduler = on_clock([("webhook", webhook), ("fine", fine)], lambda: {"request-1"}, clock)
        scheduler.tick()
        clock[0] = T0 + GRID
        scheduler.tick()
        scheduler.settle(timeout_s=3)
        status = scheduler.status()["channels"]
        assert fine.sends == [0] and status["fine"]["sent"] == 1
        assert status["webhook"]["sending"] and status["webhook"]["sent"] == 0
    finally:
        receiver.close()


def test_doorbellctl_status_says_it_in_plain_words() -> None:
    waiting = {"request-1"}
    clock = [T0 + 1]
    scheduler = on_clock(
        [("webhook", Recorder(fail=9)), ("ha", Recorder())], lambda: waiting, clock
    )
    scheduler.tick()
    clock[0] = T0 + GRID
    scheduler.tick()
    scheduler.settle()
    said = render_nudge(scheduler.status())
    assert said.startswith("every 15 min: ha 1 sent; webhook 0 sent, FAILING (")
    assert "down" in said and said.endswith("; one is due at the next slot")
    assert render_nudge(None) == "off (no channel in nudge:)"


def test_no_channel_no_nudge() -> None:
    stop = threading.Event()
    stop.set()
    scheduler = NudgeScheduler(
        every_minutes=15, channels=[], waiting=lambda: {"x"}, wall_ms=lambda: T0, stop=stop
    )
    scheduler.run()  # returns at once
    assert scheduler.status()["channels"] == {}


# ------------------------------------------------------------------ the webhook


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def test_the_webhook_posts_the_fixed_text_with_the_configured_headers(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("tk_secret123\n")
    channel = WebhookChannel(
        WebhookSettings(
            url=receiver.url + "/doorbell-7f3k2", title="Doorbell", priority=4, token_file=token
        ),
        console_url="https://doorbell.local:8443/",
    )
    channel.send()
    (got,) = receiver.received
    headers = dict(got.headers)
    assert got.path == "/doorbell-7f3k2"
    assert got.body == f"{NUDGE_TEXT}\nhttps://doorbell.local:8443/".encode()
    assert headers["Title"] == "Doorbell" and headers["Priority"] == "4"
    assert headers["Authorization"] == "Bearer tk_secret123"
    assert headers["Click"] == "https://doorbell.local:8443/"


def test_the_json_format_is_what_gotify_takes(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(WebhookSettings(url=receiver.url + "/message", format="json"))
    channel.send()
    (got,) = receiver.received
    assert json.loads(got.body) == {"message": NUDGE_TEXT}
    assert dict(got.headers)["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("error", "answered HTTP 500"),
        ("junk", "not HTTP"),
        ("slow", "no answer in time"),
        ("redirect", "answered HTTP 303"),
    ],
)
def test_a_bad_webhook_is_one_safe_error(receiver: WebhookReceiver, mode: str, says: str) -> None:
    receiver.mode = mode
    receiver.slow_s = 3
    url = receiver.url + "/secret-topic?token=s3cr3t"
    channel = WebhookChannel(WebhookSettings(url=url, timeout_seconds=1))
    with pytest.raises(NudgeError) as caught:
        channel.send()
    assert says in str(caught.value)
    assert "secret-topic" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert str(caught.value).startswith(receiver.url)
    assert [r.path for r in receiver.received] == ["/secret-topic?token=s3cr3t"]  # not followed


def test_an_endless_answer_is_not_read(receiver: WebhookReceiver) -> None:
    receiver.mode = "huge"
    WebhookChannel(WebhookSettings(url=receiver.url + "/t", timeout_seconds=5)).send()


def test_a_webhook_that_is_down_is_one_safe_error() -> None:
    url = refused_url() + "/secret-topic"
    with pytest.raises(NudgeError) as caught:
        WebhookChannel(WebhookSettings(url=url, timeout_seconds=2)).send()
    assert "cannot connect" in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ntfy.sh/my-secret-topic", "https://ntfy.sh"),
        ("https://u:pw@push.example.net:8443/message?token=abc", "https://push.example.net:8443"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
    ],
)
def test_safe_origin_drops_path_query_and_credentials(url: str, shown: str) -> None:
    assert safe_origin(url) == shown
