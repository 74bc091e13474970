"""The anonymous start delay (protocol.md §6.2, revision 1.2): the draw, where it is
kept, and the share worker that must not send a byte before its moment, against a real
tus server. The daemon-level proof (kill -9 between approval and the moment) is
tests/integration/test_anonymous_delay.py."""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.loopback import TusServer
from foundation.times import Window, parse_time
from sync.outbox import Outbox
from sync.release import MINUTE_MS, draw_delay_ms, start_of, wait_left_ms
from sync.settings import ANONYMOUS_DELAY_FLOOR_MINUTES, AnonymousDelay
from tests.sync.factories import NOW_MS, AgencyKeys
from tests.sync.sharekit import (
    ShiftedClock,
    make_decision,
    make_rfa,
    record_footage,
    running_worker,
)
from tests.sync.test_uploader import Rig

pytestmark = pytest.mark.timeout(120)

bounds_st = st.tuples(st.floats(ANONYMOUS_DELAY_FLOOR_MINUTES, 1440), st.floats(0, 1440)).map(
    lambda t: AnonymousDelay(min_minutes=t[0], max_minutes=min(1440.0, t[0] + t[1]))
)


@given(bounds=bounds_st, seed=st.integers(0, 2**64))
def test_the_draw_stays_within_the_bounds_and_never_below_five_minutes(
    bounds: AnonymousDelay, seed: int
) -> None:
    delay = draw_delay_ms(bounds, random.Random(seed))
    assert round(bounds.min_minutes * MINUTE_MS) <= delay <= round(bounds.max_minutes * MINUTE_MS)
    assert delay >= ANONYMOUS_DELAY_FLOOR_MINUTES * MINUTE_MS
    starts_at, drawn = start_of(
        named=False, approved_ms=NOW_MS, bounds=bounds, rng=random.Random(seed)
    )
    assert (starts_at, drawn) == (NOW_MS + delay, delay)


@pytest.mark.parametrize(("low", "high"), [(4.999, 60), (0, 0), (-10, 60), (30, 20)])
def test_bounds_below_the_floor_or_upside_down_are_refused_whoever_builds_them(
    low: float, high: float
) -> None:
    with pytest.raises(ValueError, match="anonymous start delay"):
        AnonymousDelay(min_minutes=low, max_minutes=high)


def test_the_draw_is_uniform_over_the_whole_range() -> None:
    """Not a lump at one end: the ten 5-minute bins of 10..60 are all well used (a
    chi-squared bound far beyond chance for 5,000 draws, so this does not flake)."""
    rng = random.Random(1)
    bins = [0] * 10
    for _ in range(5000):
        delay = draw_delay_ms(AnonymousDelay(), rng)
        bins[min(9, (delay - 10 * MINUTE_MS) // (5 * MINUTE_MS))] += 1
    chi2 = sum((b - 500) ** 2 / 500 for b in bins)
    assert chi2 < 40, bins


def test_a_named_share_starts_at_once() -> None:
    assert start_of(
        named=True, approved_ms=NOW_MS, bounds=AnonymousDelay(), rng=random.Random()
    ) == (
        NOW_MS,
        0,
    )


@given(
    delay=st.integers(0, 10**8),
    starts_in=st.integers(-(10**9), 10**9),
)
def test_the_wait_after_a_restart_is_what_the_wall_says_but_never_more_than_the_delay(
    delay: int, starts_in: int
) -> None:
    left = wait_left_ms(starts_at_ms=NOW_MS + starts_in, delay_ms=delay, now_ms=NOW_MS)
    assert 0 <= left <= delay
    assert left == min(delay, max(0, starts_in))


def _job(agency: AgencyKeys, *, named: bool) -> Any:
    rfa = make_rfa(
        agency,
        upload_url="https://uploads.example.gov/files/",
        window=Window(NOW_MS - 3_600_000, NOW_MS - 1_800_000),
        now_ms=NOW_MS,
    )
    return rfa, make_decision(rfa, named=named, now_ms=NOW_MS)


def test_the_moment_is_drawn_once_kept_durably_and_shown_while_waiting(tmp_path: Path) -> None:
    agency = AgencyKeys.generate()
    rfa, decision = _job(agency, named=False)
    outbox = Outbox.open(tmp_path / "o")
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    job = outbox.job(rfa.id)
    assert job is not None
    assert 10 * MINUTE_MS <= job.start_delay_ms <= 60 * MINUTE_MS
    assert job.starts_at_ms == NOW_MS + job.start_delay_ms
    outbox.enqueue(rfa, decision, now_ms=NOW_MS + 1)  # the flow's recovery: no new draw
    outbox.close()

    reopened = Outbox.open(tmp_path / "o")
    again = reopened.job(rfa.id)
    assert again is not None and (again.starts_at_ms, again.start_delay_ms) == (
        job.starts_at_ms,
        job.start_delay_ms,
    )
    (entry,) = reopened.shares(NOW_MS)
    assert entry["state"] == "queued"
    assert parse_time(entry["starts_at"]) == job.starts_at_ms
    assert reopened.shares(job.starts_at_ms)[0]["starts_at"] is None  # no longer waiting


def test_a_retried_anonymous_share_waits_a_fresh_draw(tmp_path: Path) -> None:
    agency = AgencyKeys.generate()
    rfa, decision = _job(agency, named=False)
    outbox = Outbox.open(tmp_path / "o", rng=random.Random(7))
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    first = outbox.job(rfa.id)
    assert first is not None
    later = first.starts_at_ms + 3 * 3_600_000
    outbox.set_state(rfa.id, "failed", now_ms=later, error="x")  # type: ignore[arg-type]
    assert outbox.retry(rfa.id, now_ms=later)
    retried = outbox.job(rfa.id)
    assert retried is not None
    assert later + 10 * MINUTE_MS <= retried.starts_at_ms <= later + 60 * MINUTE_MS
    assert retried.starts_at_ms == later + retried.start_delay_ms


def test_an_outbox_from_before_the_delay_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database written by a 1.1 daemon (no start columns) opens, keeps its jobs, and
    they start at once as they would have then."""
    agency = AgencyKeys.generate()
    rfa, decision = _job(agency, named=False)
    outbox = Outbox.open(tmp_path / "o")
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.close()
    db = sqlite3.connect(tmp_path / "o" / "outbox.sqlite")
    db.execute("ALTER TABLE jobs DROP COLUMN starts_at_ms")
    db.execute("ALTER TABLE jobs DROP COLUMN start_delay_ms")
    db.commit()
    db.close()
    upgraded = Outbox.open(tmp_path / "o")
    job = upgraded.job(rfa.id)
    assert job is not None and (job.starts_at_ms, job.start_delay_ms) == (0, 0)
    columns = {r[1] for r in sqlite3.connect(tmp_path / "o" / "outbox.sqlite").execute(
        "PRAGMA table_info(jobs)")}  # fmt: skip
    assert {"starts_at_ms", "start_delay_ms"} <= columns


# ---- the worker, against a real tus server ----------------------------------------------


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("buffer")
    first, last = record_footage(root, 8)
    return root, first, last


def _running(rig: Rig) -> AbstractContextManager[None]:
    return running_worker(rig.worker, rig.stop)


def _run_for(rig: Rig, seconds: float) -> None:
    with _running(rig):
        time.sleep(seconds)


def _built(rig: Rig, rfa_id: str, timeout: float = 60) -> Any:
    with _running(rig):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = rig.outbox.job(rfa_id)
            if job is not None and job.built:
                return job
            time.sleep(0.05)
    raise AssertionError("the waiting share was not built")


def _waiting_share(tmp_path: Path, footage: Any, server: TusServer) -> Any:
    """A rig on a clock the test moves, with an anonymous share built and waiting."""
    clock = ShiftedClock()
    rig = Rig(tmp_path, footage, clock=clock)
    rfa_id = rig.enqueue(server.url, named=False)
    return rig, clock, rfa_id, _built(rig, rfa_id)


def test_an_anonymous_share_is_built_at_once_but_sends_nothing_before_its_moment(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig, clock, rfa_id, job = _waiting_share(tmp_path, footage, tus_server)
    (entry,) = rig.outbox.shares(clock.wall_ms())
    assert entry["state"] == "queued" and entry["bytes_total"] > 0  # built, receipt shown
    assert entry["manifest_sha256"] and parse_time(entry["starts_at"]) == job.starts_at_ms

    # The wall clock steps past the moment (NTP, a bad time source): the rest of the
    # drawn delay still runs on the monotonic clock, so nothing goes out.
    clock.jump_wall(job.start_delay_ms + 3_600_000)
    _run_for(rig, 2.5)
    assert rig.log.entries == [] and tus_server.uploads() == []
    assert rig.outbox.state(rfa_id) == "queued"

    # Time really passes: the upload starts and the share completes.
    clock.advance(job.start_delay_ms / 1000)
    assert rig.run(rfa_id, timeout=60) == "done"
    assert [s for _id, s, _e in rig.states] == ["uploading", "done"]
    assert rig.log.methods().count("POST") == 2


def test_a_share_waiting_for_its_moment_can_be_cancelled_and_sends_nothing(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig, clock, rfa_id, job = _waiting_share(tmp_path, footage, tus_server)
    assert rig.outbox.job_dir(rfa_id).exists()
    assert rig.worker.cancel(rfa_id)
    assert not rig.outbox.job_dir(rfa_id).exists()  # the encrypted objects are gone
    clock.advance(job.start_delay_ms / 1000 + 60)
    _run_for(rig, 2.5)
    assert rig.outbox.state(rfa_id) == "cancelled"
    assert rig.log.entries == [] and tus_server.uploads() == []


def test_a_waiting_share_whose_footage_is_gone_fails_at_once_not_at_its_moment(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    """Built at once: a share that cannot be built tells the owner now (one attempt, no
    hour of waiting), and nothing is sent."""
    _root, first, last = footage
    empty = tmp_path / "empty-buffer"
    empty.mkdir()
    rig = Rig(tmp_path, (empty, first, last), clock=ShiftedClock())
    rfa_id = rig.enqueue(tus_server.url, named=False)
    assert rig.run(rfa_id, timeout=30) == "failed"
    (entry,) = rig.outbox.shares(rig.clock.wall_ms())
    assert entry["error"] == "no footage" and entry["starts_at"] is None
    assert rig.log.entries == [] and tus_server.uploads() == []
