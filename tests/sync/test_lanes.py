"""The share worker's lanes and attempts (sync.uploader, sync.attempt) against a real tus
server: a share queued through the worker starts when it is queued, not at the next
look at the outbox, and a cancel works in every state a share can be in. (Cancels in
the middle of an upload, a chunk or an exchange: tests/sync/test_uploader.py; while an
anonymous share waits for its moment: tests/sync/test_start_delay.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from cloud.loopback import TusServer
from sync.outbox import Outbox, ShareJob
from tests.sync.sharekit import record_footage, running_worker
from tests.sync.test_uploader import Rig

pytestmark = pytest.mark.timeout(120)

HOUR_S = 3600.0


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("buffer")
    first, last = record_footage(root, 6)
    return root, first, last


class WatchedOutbox(Outbox):
    """The real outbox, noting each look the worker takes at it (what was due)."""

    events: list[tuple[str, Any]]

    def due(self, now_ms: int) -> tuple[list[ShareJob], int | None]:
        jobs, later = super().due(now_ms)
        self.events.append(("look", tuple(job.rfa_id for job in jobs)))
        return jobs, later


def _wait(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _running(rig: Rig) -> AbstractContextManager[None]:
    return running_worker(rig.worker, rig.stop)


def _states(rig: Rig, rfa_id: str) -> list[str]:
    return [state for i, state, _e in rig.states if i == rfa_id]


def test_a_share_queued_through_the_worker_starts_at_once_not_at_the_next_look(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    """The worker looks at the outbox (nothing there) and would not look again for an
    hour; the share queued after that look is uploaded all the same, because queueing
    it woke the worker."""
    rig = Rig(tmp_path, footage, outbox=WatchedOutbox, idle_wait_s=HOUR_S)
    events = rig.outbox.events = []  # type: ignore[attr-defined]
    with _running(rig):
        _wait(lambda: ("look", ()) in events, "the worker's first look")
        rfa_id = rig.enqueue(tus_server.url, through_worker=True)
        events.append(("queued", rfa_id))
        _wait(lambda: rig.outbox.state(rfa_id) == "done", "the share to be done")
    first_look = events.index(("look", ()))
    queued = events.index(("queued", rfa_id))
    picked = events.index(("look", (rfa_id,)))
    assert first_look < queued < picked
    assert _states(rig, rfa_id) == ["uploading", "done"]
    assert tus_server.upload_of("clip").complete


def test_a_share_queued_behind_the_worker_s_back_waits_for_the_next_look(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    """The contrast that shows the test above could fail: a share put into the outbox
    without waking the worker is not looked at until something wakes it."""
    rig = Rig(tmp_path, footage, outbox=WatchedOutbox, idle_wait_s=HOUR_S)
    events = rig.outbox.events = []  # type: ignore[attr-defined]
    with _running(rig):
        _wait(lambda: ("look", ()) in events, "the worker's first look")
        rfa_id = rig.enqueue(tus_server.url)  # straight into the outbox
        looks = len(events)
        rig.worker.wake()  # what a retry, a cancel or a lane that ended does
        _wait(lambda: rig.outbox.state(rfa_id) == "done", "the share to be done")
    assert set(events[:looks]) == {("look", ())}  # not seen before the wake
    assert events[looks] == ("look", (rfa_id,))


def test_cancel_before_any_attempt_sends_nothing(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig = Rig(tmp_path, footage, outbox=WatchedOutbox)
    events = rig.outbox.events = []  # type: ignore[attr-defined]
    rfa_id = rig.enqueue(tus_server.url)
    assert rig.worker.cancel(rfa_id)
    with _running(rig):
        _wait(lambda: ("look", ()) in events, "a look at the outbox")
    assert rig.outbox.state(rfa_id) == "cancelled"
    assert rig.log.entries == [] and tus_server.uploads() == []
    assert _states(rig, rfa_id) == ["cancelled"]


def test_cancel_while_the_build_waits_its_turn_deletes_what_the_build_wrote(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    """The attempt has begun (the share is `uploading`) and waits for the build lock
    (another share's build); the cancel comes; the build then runs and writes its files
    after the outbox deleted the share's folder. The attempt sees its cancel signal,
    deletes them and sends nothing."""
    rig = Rig(tmp_path, footage)
    build_lock = rig.worker._parts.build_lock  # the real lock another build would hold
    with build_lock:
        rfa_id = rig.enqueue(tus_server.url)
        with _running(rig):
            _wait(lambda: rig.outbox.state(rfa_id) == "uploading", "the attempt to begin")
            assert rig.worker.lanes() == 1
            assert rig.worker.cancel(rfa_id)
            build_lock.release()
            try:
                _wait(lambda: rig.worker.lanes() == 0, "the lane to end")
            finally:
                build_lock.acquire()
    job = rig.outbox.job(rfa_id)
    assert job is not None and job.state == "cancelled"
    assert job.built  # the build did run, after the cancel
    assert not rig.outbox.job_dir(rfa_id).exists()
    assert rig.log.entries == [] and tus_server.uploads() == []
    assert _states(rig, rfa_id) == ["uploading", "cancelled"]


def test_cancel_while_a_share_backs_off_after_a_failure(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig = Rig(tmp_path, footage, retry_base_s=HOUR_S, retry_cap_s=HOUR_S)
    tus_server.kill()  # the first attempt meets no server and backs off for an hour
    rfa_id = rig.enqueue(tus_server.url)
    with _running(rig):
        _wait(lambda: (j := rig.outbox.job(rfa_id)) and j.attempts == 1, "a failed attempt")
        _wait(lambda: rig.worker.lanes() == 0, "the lane to end")
        assert rig.outbox.job_dir(rfa_id).exists()  # built, kept for the next attempt
        assert rig.worker.cancel(rfa_id)
    assert rig.outbox.state(rfa_id) == "cancelled"
    assert not rig.outbox.job_dir(rfa_id).exists()
    assert _states(rig, rfa_id) == ["uploading", "cancelled"]


def test_cancel_of_a_failed_share_deletes_what_a_retry_would_have_sent(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig = Rig(tmp_path, footage, max_attempts=1)
    tus_server.kill()
    rfa_id = rig.enqueue(tus_server.url)
    assert rig.run(rfa_id, timeout=60) == "failed"
    assert rig.outbox.job_dir(rfa_id).exists()
    assert rig.worker.cancel(rfa_id)
    assert not rig.outbox.job_dir(rfa_id).exists()
    assert not rig.worker.retry(rfa_id)  # a cancelled share is over
    assert _states(rig, rfa_id) == ["uploading", "failed", "cancelled"]


def test_a_done_share_cannot_be_cancelled(
    tmp_path: Path, footage: Any, tus_server: TusServer
) -> None:
    rig = Rig(tmp_path, footage)
    rfa_id = rig.enqueue(tus_server.url)
    assert rig.run(rfa_id) == "done"
    assert not rig.worker.cancel(rfa_id)
    assert rig.outbox.state(rfa_id) == "done"
    assert _states(rig, rfa_id) == ["uploading", "done"]
