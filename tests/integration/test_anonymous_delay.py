"""Proof of protocol.md §6.2 (revision 1.2) against a real daemon process, a real
Mosquitto and a real tus server, watched from where the agency stands (its upload
server's storage): a named share approved in the owner's app is uploaded within seconds;
an anonymous one is built, waits for its drawn moment, and nothing of it reaches the
server before then; the daemon is killed with SIGKILL while it waits and restarted,
the stored moment is the same (not drawn again), and the share then completes and
verifies with the agency's verifier.

Ten to sixty real minutes do not fit in a test: the daemon runs through
tests/steered_daemon.py, and after the kill its wall clock is moved to just before the
stored moment. The daemon's code path is the product's: after a restart a share waits
what the wall clock says is left of its moment (sync.release). The config's real bounds
(10 to 60 minutes) are the ones in force."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cloud.loopback import TusServer
from foundation.times import Window, parse_time
from tests.fixtures.daemon import World, now_ms, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MINUTE_MS = 60_000
EARLY_S = 30  # the restarted daemon's wall clock starts this long before the moment


class UploadWatch:
    """Polls the tus server's storage and notes when each (rfa_id, kind) first appears:
    what the agency's side sees, independent of anything the daemon reports."""

    def __init__(self, server: TusServer) -> None:
        self._server = server
        self.first_seen: dict[tuple[str, str], int] = {}  # real wall ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for upload in self._server.uploads():
                key = (upload.metadata.get("rfa_id", ""), upload.metadata.get("kind", ""))
                self.first_seen.setdefault(key, now_ms())
            self._stop.wait(0.1)

    def of(self, rfa_id: str) -> list[int]:
        return [at for (rid, _kind), at in self.first_seen.items() if rid == rfa_id]

    def __enter__(self) -> UploadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_named_starts_at_once_anonymous_waits_for_its_durable_moment(steered_world: World) -> None:
    world = steered_world
    span = world.buffer_span()
    assert span is not None
    time.sleep(3)
    named = world.rfa(Window(span[0] + 200, span[0] + 2200), case_number="2026-000001")
    anonymous = world.rfa(Window(span[0] + 300, span[0] + 2300), case_number="2026-000002")
    for rfa in (named, anonymous):
        world.publish(rfa)
    wait_for(lambda: {named.id, anonymous.id} <= set(world.pending_ids()), 20, "both pending")

    with UploadWatch(world.uploads) as watch:
        # Named, decided in the owner's app (through the broker): within seconds.
        decided = now_ms()
        world.decide(named.id, approve=True)
        wait_for(lambda: watch.of(named.id), 30, "the named share's first upload")
        assert min(watch.of(named.id)) - decided < 15_000
        world.wait_share(named.id)

        # Anonymous, decided the same way: built now, uploaded at its drawn moment.
        approved = now_ms()
        world.decide(anonymous.id, approve=True, anonymous=True)
        waiting = wait_for(
            lambda: (s := world.share(anonymous.id)) and s["bytes_total"] > 0 and s,
            60,
            "the anonymous share built",
        )
        assert waiting["state"] == "queued" and waiting["manifest_sha256"]
        starts_at = parse_time(waiting["starts_at"])
        # drawn between 10 and 60 minutes after the approval (give or take the seconds
        # between the owner tool's publish and the device's record of it)
        assert approved + 10 * MINUTE_MS - 5_000 <= starts_at <= approved + 60 * MINUTE_MS + 30_000
        time.sleep(3)  # the uploader is idle: the named share is done, this one waits
        assert watch.of(anonymous.id) == []
        assert "upload starts at" in world.daemon.ctl("shares").stdout

        # A power cut while it waits; the daemon comes back 30 s before the moment.
        stored = world.release_waiting_share(anonymous.id, kill=True, early_s=EARLY_S)
        assert stored == starts_at
        assert world.clock_file is not None  # the daemon's clock: real + offset_ms
        offset_ms = int(json.loads(world.clock_file.read_text())["offset_ms"])
        after = world.share(anonymous.id)
        assert after is not None and after["state"] == "queued"
        assert parse_time(after["starts_at"]) == starts_at  # kept, not drawn again
        assert after["manifest_sha256"] == waiting["manifest_sha256"]  # built once

        world.wait_share(anonymous.id, timeout=90)
        first = min(watch.of(anonymous.id))
        # At the agency, nothing before the moment on the daemon's clock (the watch
        # sees an upload at most 0.1 s after it was made, never before)
        assert first + offset_ms >= starts_at, first + offset_ms - starts_at
        assert first + offset_ms <= starts_at + 20_000

    report, _manifest, _clip = world.verify(anonymous.id)
    assert report.anonymous is True and report.device_id is None
