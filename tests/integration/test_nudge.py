"""Proof of the nudge against a real daemon process, a real Mosquitto carrying signed
requests and a real HTTP server standing for ntfy (tests/fixtures/webhook.py), which
records every byte that reaches it:

* nudges fall on the grid: a request that arrives inside a slot is told at the start of
  the next slot, not before; news during a slot that already had its nudge (two more
  requests) waits for the next slot and makes one nudge, not two; a share that fails
  (the agency's server is down) is news too;
* no byte of any nudge says anything about a request: every POST is the same bytes
  (so not even the count differs), and none holds the agency, case, investigator,
  contact, coordinates, cell, device id or request id;
* a webhook that answers junk never touches recording or the request flow: the owner
  approves, the share reaches the agency, one log line names the failure (without the
  URL's secret topic), the status shows it.

Slots of a minute (the config's smallest) and the daemon's steered wall clock
(tests/steered_daemon.py): the test moves the clock to just before a boundary instead of
waiting for it. The grid itself is the product's code path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.loopback import MosquittoBroker, TusServer
from device.nudge import NUDGE_TEXT
from foundation.times import Window
from sync.geo import cell_of
from tests.fixtures.daemon import World, make_world, now_ms, start_and_pair, wait_for
from tests.fixtures.steering import steer
from tests.fixtures.webhook import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GRID_MS = 60_000
TOPIC = "/doorbell-q7Zr2KxW"  # an ntfy topic is a secret name: it must not reach the log


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


class SteeredGrid:
    """The daemon's wall clock, moved by the test relative to the grid."""

    def __init__(self, world: World) -> None:
        assert world.clock_file is not None
        self.world = world
        self.offset_ms = 0

    def daemon_ms(self, real_ms: float | None = None) -> int:
        return round((now_ms() if real_ms is None else real_ms) + self.offset_ms)

    def slot(self, real_ms: float | None = None) -> int:
        return self.daemon_ms(real_ms) // GRID_MS

    def to(self, daemon_ms: int) -> None:
        self.offset_ms = daemon_ms - now_ms()
        assert self.world.clock_file is not None
        steer(self.world.clock_file, offset_ms=self.offset_ms, synchronized=True)

    def into_next_slot(self, by_ms: int) -> int:
        """Move to `by_ms` after (negative: before) the next boundary; returns the slot
        that boundary begins."""
        slot = self.slot() + 1
        self.to(slot * GRID_MS + by_ms)
        return slot


def nudge_world(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    tus_server: TusServer,
    receiver: WebhookReceiver,
) -> World:
    webhook = {"url": receiver.url + TOPIC, "title": "Doorbell", "timeout_seconds": 2}
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        steered_clock=True,
        extra={
            "nudge": {"every_minutes": GRID_MS / 60_000, "webhook": webhook},
            "share": {"max_attempts": 1},  # a share the agency's server refuses fails at once
        },
    )
    start_and_pair(world)
    wait_for(world.buffer_span, 30, "footage in the buffer")
    return world


def nudge_status(world: World) -> dict:
    return dict(world.daemon.status()["nudge"])


def quiet(receiver: WebhookReceiver, count: int, seconds: float = 3.0) -> bool:
    """Still exactly `count` POSTs after `seconds` (time for a wrong one to arrive)."""
    time.sleep(seconds)
    return len(receiver.received) == count


def test_nudges_fall_on_the_grid_and_say_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer, receiver: WebhookReceiver
) -> None:
    world = nudge_world(tmp_path, mosquitto, tus_server, receiver)
    try:
        span = world.buffer_span()
        assert span is not None
        grid = SteeredGrid(world)
        grid.into_next_slot(5_000)  # early in a slot: most of a minute before the next

        first = world.rfa(Window(span[0] + 200, span[0] + 1200), case_number="2026-004512")
        world.publish(first)
        wait_for(lambda: nudge_status(world)["waiting"], 20, "the request noticed")
        assert first.id in world.pending_ids()
        assert quiet(receiver, 0)  # inside the slot: nothing yet

        told = grid.into_next_slot(-1_500)  # 1.5 s before the boundary
        wait_for(lambda: receiver.received, 20, "the first nudge")
        assert grid.slot(receiver.received[0].at * 1000) == told  # in the slot that boundary begins
        assert quiet(receiver, 1)  # still pending, but told: no second nudge

        more = [
            world.rfa(Window(span[0] + 300, span[0] + 1300), case_number="2026-004513"),
            world.rfa(Window(span[0] + 400, span[0] + 1400), case_number="2026-004514"),
        ]
        for rfa in more:
            world.publish(rfa)
        wait_for(lambda: {r.id for r in more} <= set(world.pending_ids()), 20, "two more")
        wait_for(lambda: nudge_status(world)["waiting"], 20, "the news noticed")
        assert quiet(receiver, 1)  # this slot already had its nudge

        told = grid.into_next_slot(-1_500)
        wait_for(lambda: len(receiver.received) == 2, 20, "the second nudge")
        assert grid.slot(receiver.received[1].at * 1000) == told  # in the slot that boundary begins
        assert quiet(receiver, 2)  # two requests, one nudge

        # A share that fails waits for the owner too (they may retry it).
        world.uploads.stop()
        world.decide(first.id, approve=True)
        world.wait_share(first.id, "failed")
        wait_for(lambda: nudge_status(world)["waiting"], 20, "the failure noticed")
        told = grid.into_next_slot(-1_500)
        wait_for(lambda: len(receiver.received) == 3, 20, "the third nudge")
        assert grid.slot(receiver.received[2].at * 1000) == told
        channel = nudge_status(world)["channels"]["webhook"]
        assert channel["sent"] == 3 and channel["failed"] == 0
    finally:
        world.daemon.stop()

    # -- every byte that reached the push service
    one, two, three = receiver.received
    assert one.raw() == two.raw() == three.raw()  # one request or three, a failure: the same
    assert one.path == TOPIC and one.body == NUDGE_TEXT.encode()
    headers = {name.lower(): value for name, value in one.headers}
    assert headers["title"] == "Doorbell"
    assert set(headers) <= {
        "host",
        "user-agent",
        "accept-encoding",
        "accept",
        "connection",
        "content-length",
        "content-type",
        "title",
    }
    setup = world.setup
    needles = [
        "San Francisco",
        "sfpd",
        "2026-0045",
        "Rivera",
        "a.rivera@example.gov",
        "Elm St",
        "Package",
        "Jane Doe",
        "jane@example.com",
        setup.device_id,
        f"{setup.lat:.2f}",
        f"{abs(setup.lon):.2f}",
        cell_of(setup.lat, setup.lon),
        first.id,
        *(rfa.id for rfa in more),
    ]
    raw = one.raw().lower()
    found = [needle for needle in needles if needle.lower().encode() in raw]
    assert found == []
    assert not any(ch.isdigit() for ch in one.body.decode())  # no count, no time


def test_a_webhook_answering_junk_never_touches_recording_or_requests(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer, receiver: WebhookReceiver
) -> None:
    receiver.mode = "junk"
    world = nudge_world(tmp_path, mosquitto, tus_server, receiver)
    try:
        span = world.buffer_span()
        assert span is not None
        grid = SteeredGrid(world)
        grid.into_next_slot(5_000)
        rfa = world.rfa(Window(span[0] + 200, span[0] + 1700))
        world.publish(rfa)
        wait_for(lambda: rfa.id in world.pending_ids(), 20, "request pending")
        wait_for(lambda: nudge_status(world)["waiting"], 20, "the request noticed")

        grid.into_next_slot(-1_000)
        channel = wait_for(
            lambda: (c := nudge_status(world)["channels"]["webhook"])["failing"] and c,
            30,
            "the failure in the status",
        )
        assert "not HTTP" in channel["last_error"] and TOPIC not in channel["last_error"]

        world.decide(rfa.id, approve=True)  # the request flow does not notice
        world.wait_share(rfa.id)
        world.verify(rfa.id)
        status = world.daemon.status()
        assert status["recording"] is True and status["broker"] == "connected"
        wait_for(lambda: len(receiver.received) >= 2, 60, "a retry within the slot")
    finally:
        world.daemon.stop()
    log = world.daemon.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "nudge" in line]
    assert len(lines) == 1, lines  # one line however often it fails
    assert "webhook" in lines[0] and TOPIC.strip("/") not in log
