"""The share worker: runs the approved shares of the outbox in lanes, one attempt at a
time per lane (sync.attempt), and is woken when there is something to do.

Lanes: shares to one upload origin (scheme, host, port) run one after another, each
origin in a lane (a thread) of its own, at most `ShareSettings.max_origins` lanes at
once. One slow or hostile server then holds back only the shares to its own origin:
a share to another origin never waits for it (unless every lane is busy, see
docs/security.md). A lane lives while its origin has a due share; the dispatcher
(`run`) starts lanes and nothing else. The active count bounds the lanes as well, so
their memory is at most one chunk each. Builds run one at a time, whichever lane
asks: a build reads the buffer and encrypts (work for the Pi's cores, shared with
the recorder) and never waits on a server.

Waking: the dispatcher looks at the outbox when it is woken (a share queued through
`enqueue`, a retry, a cancel, a lane that ended) and when the next share it knows of
falls due (a retry's backoff, an anonymous share's start moment); `idle_wait_s` is
only a safety net for a wall clock that moved. A queued share never waits for a poll.

Start delay (protocol.md §6.2, sync.release): a queued anonymous share is built by its
first attempt but its upload waits, in state `queued`, until its stored start moment by
the wall clock and the rest of its drawn delay by the monotonic clock have both passed.
The lanes keep the monotonic deadlines (they live as long as this run) and tell each
attempt how long its share must still wait. A cancel meanwhile deletes the built files
and nothing is ever sent.

Cancel: each attempt under way has one cancel signal (a threading.Event), set by
`cancel`. It is set before the outbox records the cancel (both under the worker's lock,
as is an attempt's start): an attempt that started before the cancel sees the signal,
also after a build that wrote files the outbox's cancel had already deleted; an
attempt that starts after it finds the share cancelled in the outbox and does not run.

`on_state(rfa_id, state, error)` is called on every state change (from the lane that
made it, or from the caller of `cancel`/`retry`); the daemon audits it and releases the
pin on done/failed/cancelled.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from foundation.clock import Clock
from foundation.display import shown
from foundation.wire import ACTIVE_SHARE_STATES, ShareState
from sync.attempt import AttemptParts, ShareAttempt, ShareCounts, StateCallback
from sync.models import Decision, Rfa
from sync.outbox import Outbox, ShareJob
from sync.release import wait_left_ms
from sync.settings import ShareSettings
from sync.tus import checked_session, origin_of

logger = logging.getLogger(__name__)

Origin = tuple[str, str, int]
STOP_CHECK_S = 1.0


def lane_of(upload_url: str) -> Origin:
    """The lane a share runs in: its upload origin. (A URL whose port is not a number is
    refused by the client; it still gets a lane of its own, so the refusal is recorded.)"""
    try:
        return origin_of(upload_url)
    except ValueError:
        return ("", upload_url, 0)


class ShareWorker:
    """The dispatcher over the outbox and its lanes. Collaborators come in; nothing
    opens in here."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        buffer_root: Path,
        identity: Any,  # device.identity.DeviceIdentity (sync does not import device)
        contact: Mapping[str, Any] | None,
        clock: Clock,
        settings: ShareSettings,
        on_state: StateCallback,
        stop: threading.Event,
        session_factory: Callable[[bool], requests.Session] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._settings = settings
        self._on_state = on_state
        self._stop = stop
        self._parts = AttemptParts(
            outbox=outbox,
            buffer_root=buffer_root,
            identity=identity,
            contact=contact,
            clock=clock,
            settings=settings,
            notify=self._notify,
            session_factory=session_factory
            or (lambda loopback: checked_session(allow_loopback=loopback)),
            rng=rng or random.Random(),  # noqa: S311 (jitter, not secrets)
            build_lock=threading.Lock(),
            stop=stop,
            counts=ShareCounts(),
        )
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the maps below and an attempt's start
        self._lanes: dict[Origin, threading.Thread] = {}
        self._cancels: dict[str, threading.Event] = {}  # share under way -> its cancel
        # a waiting share -> (its start moment, its monotonic deadline in this run)
        self._deadlines: dict[str, tuple[int, float]] = {}

    # -- the queue, as the request flow sees it (device.flow.ShareQueue)

    def enqueue(self, rfa: Rfa, decision: Decision, *, now_ms: int) -> None:
        """Queue an approved share durably in the outbox and wake the dispatcher."""
        self._outbox.enqueue(rfa, decision, now_ms=now_ms)
        self.wake()

    def has_job(self, rfa_id: str) -> bool:
        return self._outbox.has_job(rfa_id)

    # -- control

    def wake(self) -> None:
        """Look at the outbox now (a new job, a retry, a lane that ended)."""
        self._wake.set()

    def retry(self, rfa_id: str) -> bool:
        if not self._outbox.retry(rfa_id, now_ms=self._clock.wall_ms()):
            return False
        self._notify(rfa_id, ShareState.QUEUED, None)
        self.wake()
        return True

    def cancel(self, rfa_id: str) -> bool:
        with self._lock:
            under_way = self._cancels.get(rfa_id)
            if under_way is not None:
                under_way.set()  # first: see the module's docstring
            if not self._outbox.cancel(rfa_id, now_ms=self._clock.wall_ms()):
                return False  # already over (an attempt under way is ending)
        self._notify(rfa_id, ShareState.CANCELLED, None)
        self.wake()
        return True

    @property
    def counts(self) -> ShareCounts:
        return self._parts.counts

    def lanes(self) -> int:
        """How many lanes are running (for tests and status)."""
        with self._lock:
            return len(self._lanes)

    # -- the dispatcher

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    delay = self.run_once()
                except Exception:  # a loop boundary: log and carry on after a pause
                    logger.exception("share dispatcher step failed")
                    delay = self._settings.retry_base_s
                self._sleep(min(delay, self._settings.idle_wait_s))
        finally:
            # The lanes watch the same stop and end within one exchange of it.
            with self._lock:
                running = list(self._lanes.values())
            for lane in running:
                lane.join(timeout=30)

    def _sleep(self, seconds: float) -> None:
        """Until woken, `seconds` have passed or the daemon stops. Two events cannot be
        waited on together: the wake is waited on, the stop looked at every
        `STOP_CHECK_S` (a queued share wakes the dispatcher at once; only a stop can
        take that long to be seen)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, STOP_CHECK_S)):
                return

    def run_once(self) -> float:
        """Start a lane for each origin with a due share and none yet (while lanes are
        free); returns how long until the outbox is worth another look."""
        now = self._clock.wall_ms()
        due, later_ms = self._outbox.due(now)
        with self._lock:
            for job in due:
                origin = lane_of(job.rfa.upload_url)
                if origin in self._lanes or len(self._lanes) >= self._settings.max_origins:
                    continue
                lane = threading.Thread(
                    target=self._lane, args=(origin,), name="share-lane", daemon=True
                )
                self._lanes[origin] = lane
                lane.start()
        if later_ms is None:
            return self._settings.idle_wait_s
        return max(0.0, (later_ms - now) / 1000)

    # -- a lane

    def _lane(self, origin: Origin) -> None:
        """Work on the due shares of one origin, oldest first, until none is due."""
        try:
            while not self._stop.is_set():
                due, _later = self._outbox.due(self._clock.wall_ms())
                job = next((j for j in due if lane_of(j.rfa.upload_url) == origin), None)
                if job is None:
                    return
                self._attempt(job.rfa_id)
        except Exception:  # a loop boundary: log, pause, and let the dispatcher restart it
            logger.exception("share lane step failed")
            self._stop.wait(self._settings.retry_base_s)
        finally:
            with self._lock:
                self._lanes.pop(origin, None)
            self.wake()

    def _attempt(self, rfa_id: str) -> None:
        with self._lock:
            job = self._outbox.job(rfa_id)  # read again under the lock: see `cancel`
            if job is None or job.state not in ACTIVE_SHARE_STATES:
                return
            cancelled = threading.Event()
            self._cancels[rfa_id] = cancelled
        try:
            ShareAttempt(self._parts, job, cancelled, self._wait_ms(job)).run()
        finally:
            with self._lock:
                self._cancels.pop(rfa_id, None)

    def _notify(self, rfa_id: str, state: ShareState, error: str | None) -> None:
        if state is not ShareState.QUEUED:
            with self._lock:
                self._deadlines.pop(rfa_id, None)
        try:
            self._on_state(rfa_id, state, error)
        except Exception:
            logger.exception("on_state callback failed for share %s", shown(rfa_id))

    def _wait_ms(self, job: ShareJob) -> int:
        """How long a queued share must still wait before its upload starts: until its
        start moment by the wall clock and, within this run, the rest of its drawn delay
        by the monotonic clock (sync.release), whichever is later."""
        if job.state is not ShareState.QUEUED or job.start_delay_ms <= 0:
            return 0
        now_ms, mono = self._clock.wall_ms(), self._clock.monotonic()
        with self._lock:
            seen = self._deadlines.get(job.rfa_id)
            if seen is None or seen[0] != job.starts_at_ms:  # first look, or a new draw
                left = wait_left_ms(
                    starts_at_ms=job.starts_at_ms, delay_ms=job.start_delay_ms, now_ms=now_ms
                )
                seen = (job.starts_at_ms, mono + left / 1000)
                self._deadlines[job.rfa_id] = seen
        by_monotonic = math.ceil((seen[1] - mono) * 1000)
        return max(0, job.starts_at_ms - now_ms, by_monotonic)
