"""The share worker: takes approved shares from the outbox, builds them once, and uploads
both objects with tus until they are done, failed or cancelled.

Resume rules (protocol.md §6.1): an object's upload URL is stored before its first byte is
sent; after a restart or a network cut the worker asks the server (HEAD) how much it
holds and continues from there, never from zero and never as a new upload. Only when the
server answers 404/410 (it lost or expired the upload) is the object created anew, from
offset 0; that is the one case in which bytes are sent twice, and the old URL is useless
anyway. A finished object is never sent again.

Failures: a permanent error (a 4xx, a refused address or Location, a bad recipient, no
footage, a full disk) ends the share `failed` at once; a transient one (5xx, network, a
malformed answer) is retried after a capped exponential backoff with jitter, and after
`max_attempts` consecutive attempts without progress the share ends `failed` with the
last error. Any other exception in an attempt (a bug, ours or a library's, that a hostile
answer reached) counts as a transient failure too, logged in one line with its type, so
`max_attempts` ends every share. The error kept for the owner (protocol.md §6.3) is the
device's own phrase, cut to `error_phrase`'s bound.
`on_state(rfa_id, state, error)` is called on every state change (from the lane that
made it, or from the caller of `cancel`/`retry`); the daemon audits it and releases the
pin on done/failed/cancelled.

Lanes: shares to one upload origin (scheme, host, port) run one after another, each
origin in a lane (a thread) of its own, at most `ShareSettings.max_origins` lanes at
once. One slow or hostile server then holds back only the shares to its own origin:
a share to another origin never waits for it (unless every lane is busy, see
docs/security.md). A lane lives while its origin has a due share; the dispatcher
(`run`) starts lanes and nothing else. The active count bounds the lanes as well, so
their memory is at most one chunk each. Builds run one at a time, whichever lane
asks: a build reads the buffer and encrypts (work for the Pi's cores, shared with
the recorder) and never waits on a server.

Start delay (protocol.md §6.2, sync.release): a queued anonymous share is built at once
(the footage is cut, encrypted and safe in the outbox while it is certainly in the
buffer, and a build that fails tells the owner now, not an hour later) but its upload
waits, in state `queued`, until its stored start moment by the wall clock and the rest
of its drawn delay by the monotonic clock have both passed. A cancel meanwhile deletes
the built files and nothing is ever sent.

Cancel: each share attempt watches a stop of its own, set by `cancel` or by the
daemon's stop, so a cancel cuts the share's HTTP exchange at once (sync.tus) instead of
waiting for the exchange, or the chunk, to end.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from foundation.backoff import backoff_s
from foundation.clock import Clock
from foundation.display import shown
from foundation.errors import DoorbellError
from foundation.stop import EitherStop, StopSignal
from foundation.wire import MAX_SHARE_ERROR_CHARS, ShareState
from sync.outbox import KINDS, Outbox, ShareJob
from sync.release import wait_left_ms
from sync.settings import ShareSettings
from sync.share import ShareError, build_share
from sync.tus import (
    ServerInfo,
    TusClient,
    TusError,
    TusGone,
    TusOptions,
    TusRefused,
    TusTransient,
    checked_session,
    origin_of,
)

logger = logging.getLogger(__name__)

StateCallback = Callable[[str, ShareState, str | None], None]


def upload_metadata(job: ShareJob, kind: str, device_id: str) -> dict[str, str]:
    """tus Upload-Metadata of protocol.md §6.1 (+ `filetype`, see sync.tus)."""
    name = f"{job.rfa_id}.manifest.json.age" if kind == "manifest" else f"{job.rfa_id}.mp4.age"
    meta = {
        "filename": name,
        "filetype": "application/octet-stream",
        "rfa_id": job.rfa_id,
        "case_number": job.rfa.case_number,
        "kind": kind,
    }
    if job.decision.share_contact:
        meta["device_id"] = device_id
    return meta


def error_phrase(error: str, suffix: str = "") -> str:
    """A share's `error` as protocol.md §6.3 allows it: printable ASCII (anything else
    becomes `?`), at most `MAX_SHARE_ERROR_CHARS` characters, `suffix` kept whole."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in error + suffix)
    if len(text) <= MAX_SHARE_ERROR_CHARS:
        return text
    keep = max(0, MAX_SHARE_ERROR_CHARS - len(suffix))
    return (text[:keep] + text[len(text) - len(suffix) :])[:MAX_SHARE_ERROR_CHARS]


class _Cancelled(DoorbellError):
    pass


def lane_of(upload_url: str) -> tuple[str, str, int]:
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
        self._buffer_root = buffer_root
        self._identity = identity
        self._contact = contact
        self._clock = clock
        self._settings = settings
        self._on_state = on_state
        self._stop = stop
        self._session_factory = session_factory or (
            lambda loopback: checked_session(allow_loopback=loopback)
        )
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the two maps below
        self._lanes: dict[tuple[str, str, int], threading.Thread] = {}
        self._cancels: dict[str, threading.Event] = {}  # share under way -> its cancel
        self._build_lock = threading.Lock()
        # a waiting share -> (its start moment, its monotonic deadline in this run)
        self._deadlines: dict[str, tuple[int, float]] = {}

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
        if not self._outbox.cancel(rfa_id, now_ms=self._clock.wall_ms()):
            return False
        self._notify(rfa_id, ShareState.CANCELLED, None)
        with self._lock:
            under_way = self._cancels.get(rfa_id)
        if under_way is not None:
            under_way.set()  # cuts the share's exchange now
        self.wake()
        return True

    def lanes(self) -> int:
        """How many lanes are running (for tests and status)."""
        with self._lock:
            return len(self._lanes)

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    delay = self.run_once()
                except Exception:  # a loop boundary: log and carry on after a pause
                    logger.exception("share dispatcher step failed")
                    delay = self._settings.retry_base_s
                self._wake.wait(min(delay, self._settings.idle_wait_s))
        finally:
            # The lanes watch the same stop and end within one poll of it.
            with self._lock:
                running = list(self._lanes.values())
            for lane in running:
                lane.join(timeout=30)

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

    def _lane(self, origin: tuple[str, str, int]) -> None:
        """Work on the due shares of one origin, oldest first, until none is due."""
        try:
            while not self._stop.is_set():
                due, _later = self._outbox.due(self._clock.wall_ms())
                job = next((j for j in due if lane_of(j.rfa.upload_url) == origin), None)
                if job is None:
                    return
                self._process(job)
        except Exception:  # a loop boundary: log, pause, and let the dispatcher restart it
            logger.exception("share lane step failed")
            self._stop.wait(self._settings.retry_base_s)
        finally:
            with self._lock:
                self._lanes.pop(origin, None)
            self.wake()

    # -- one job

    def _notify(self, rfa_id: str, state: ShareState, error: str | None) -> None:
        if state is not ShareState.QUEUED:
            with self._lock:
                self._deadlines.pop(rfa_id, None)
        try:
            self._on_state(rfa_id, state, error)
        except Exception:
            logger.exception("on_state callback failed for share %s", shown(rfa_id))

    def _set_state(self, job: ShareJob, state: ShareState, error: str | None = None) -> bool:
        changed = self._outbox.set_state(
            job.rfa_id, state, now_ms=self._clock.wall_ms(), error=error
        )
        if changed:
            self._notify(job.rfa_id, state, error)
        return changed

    def _process(self, job: ShareJob) -> None:
        cancelled = threading.Event()
        with self._lock:
            self._cancels[job.rfa_id] = cancelled
        try:
            self._attempt(job, EitherStop(cancelled, self._stop))
        finally:
            with self._lock:
                self._cancels.pop(job.rfa_id, None)

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

    def _hold(self, job: ShareJob, built_now: bool) -> None:
        """A built share before its start moment: look at it again when the moment
        comes. Its state stays `queued`."""
        if self._outbox.state(job.rfa_id) is ShareState.CANCELLED:
            self._outbox.delete_files(job.rfa_id)  # the build finished after the cancel
            return
        wait_ms = self._wait_ms(job)
        if built_now:
            logger.info(
                "share %s built; its upload waits %.0f s (anonymous start delay)",
                shown(job.rfa_id),
                wait_ms / 1000,
            )
        self._outbox.hold(job.rfa_id, until_ms=self._clock.wall_ms() + wait_ms)

    def _attempt(self, job: ShareJob, share_stop: StopSignal) -> None:
        # A share waiting for its start moment is built now and stays queued (see the
        # module's docstring); its failures are handled as any attempt's.
        waiting = self._wait_ms(job) > 0
        if not waiting:
            if job.state is ShareState.QUEUED and not self._set_state(job, ShareState.UPLOADING):
                return
            if self._outbox.state(job.rfa_id) is not ShareState.UPLOADING:
                return  # cancelled before its cancel could reach this attempt
        progressed = [False]
        try:
            built_now = not job.built
            if built_now:
                with self._build_lock:
                    self._build(job)
                refreshed = self._outbox.job(job.rfa_id)
                if refreshed is None:
                    return
                job = refreshed
            if waiting:
                self._hold(job, built_now)
                return
            self._upload(job, progressed, share_stop)
        except _Cancelled:
            logger.info("share %s cancelled during upload", shown(job.rfa_id))
            self._outbox.delete_files(job.rfa_id)  # a build may have finished meanwhile
            return
        except (ShareError, TusRefused) as exc:
            permanent = not isinstance(exc, ShareError) or exc.permanent
            if permanent:
                self._fail(job, str(exc))
                return
            self._retry_later(job, str(exc), progressed[0])
            return
        except (TusTransient, TusGone, OSError) as exc:
            if self._stop.is_set():
                return
            message = str(exc) if isinstance(exc, TusError) else f"outbox: {exc.strerror or exc}"
            self._retry_later(job, message, progressed[0])
            return
        except Exception as exc:
            # A bug, ours or a library's, that a hostile answer can reach (issue 16: int()
            # of "²" escaped every handler above, and the share was tried every 2 s for
            # ever, a traceback each time, its window pinned). Counted and backed off like
            # a transient failure, so max_attempts ends the share; the one log line names
            # the type (never the text, which may quote the server), the traceback goes
            # to the debug level.
            if self._stop.is_set():
                return
            logger.debug("share %s: unexpected error", shown(job.rfa_id), exc_info=exc)
            self._retry_later(job, f"unexpected {type(exc).__name__}", progressed[0])
            return
        self._outbox.delete_files(job.rfa_id)
        self._set_state(job, ShareState.DONE)
        logger.info("share %s done", shown(job.rfa_id))

    def _fail(self, job: ShareJob, error: str) -> None:
        error = error_phrase(error)
        logger.warning("share %s failed: %s", shown(job.rfa_id), shown(error))
        if not job.built:
            self._outbox.delete_files(job.rfa_id)
        self._set_state(job, ShareState.FAILED, error)

    def _retry_later(self, job: ShareJob, error: str, progressed: bool) -> None:
        current = self._outbox.job(job.rfa_id)
        attempts = 1 if progressed else (current.attempts if current else job.attempts) + 1
        if attempts >= self._settings.max_attempts:
            self._fail(job, error_phrase(error, f" (gave up after {attempts} attempts)"))
            return
        error = error_phrase(error)
        delay = backoff_s(
            attempts - 1,  # the first failed attempt waits about retry_base_s
            base_s=self._settings.retry_base_s,
            cap_s=self._settings.retry_cap_s,
            rng=self._rng,
        )
        now = self._clock.wall_ms()
        logger.info("share %s: %s; retrying in %.1f s", shown(job.rfa_id), shown(error), delay)
        self._outbox.record_failure(
            job.rfa_id,
            error=error,
            attempts=attempts,
            next_attempt_ms=now + round(delay * 1000),
            now_ms=now,
        )

    def _build(self, job: ShareJob) -> None:
        clip_path = self._outbox.object_path(job.rfa_id, "clip")
        manifest_path = self._outbox.object_path(job.rfa_id, "manifest")
        # A build interrupted by a crash left nothing trustworthy: start it over.
        self._outbox.delete_files(job.rfa_id)
        now_ms = self._clock.wall_ms()
        built = build_share(
            rfa=job.rfa,
            decision=job.decision,
            buffer_root=self._buffer_root,
            clip_path=clip_path,
            manifest_path=manifest_path,
            device_key=self._identity.signing,
            device_id=self._identity.device_id,
            clip_signer=self._identity.clip_signer,
            contact=self._contact,
            # an anonymous manifest's times are its start moment's (sync.share)
            now_ms=now_ms if job.decision.share_contact else max(now_ms, job.starts_at_ms),
        )
        self._outbox.record_built(
            job.rfa_id,
            manifest_sha256=built.manifest_sha256,
            sizes={"manifest": built.manifest_bytes, "clip": built.clip_bytes},
        )

    def _upload(self, job: ShareJob, progressed: list[bool], share_stop: StopSignal) -> None:
        url = job.rfa.upload_url
        loopback = self._settings.allow_plain_http_loopback and url.startswith("http://")
        options = TusOptions(
            chunk_bytes=self._settings.chunk_bytes,
            bandwidth_bytes_per_s=self._settings.bandwidth_bytes_per_s,
            allow_plain_http_loopback=self._settings.allow_plain_http_loopback,
            timeout_s=self._settings.timeout_s,
        )
        session = self._session_factory(loopback)
        try:
            client = TusClient(upload_url=url, options=options, session=session, stop=share_stop)
            info = None
            try:
                for kind in KINDS:
                    obj = job.object(kind)
                    if obj is None:
                        raise ShareError("outbox lost track of an object", permanent=False)
                    if obj.done:
                        continue  # a finished object is never sent again
                    path = self._outbox.object_path(job.rfa_id, kind)
                    if not path.exists():
                        raise ShareError(f"the encrypted {kind} is missing from the outbox")
                    if info is None:
                        info = client.server_info()
                        if info.max_size is not None and obj.size > info.max_size:
                            raise TusRefused("the share is larger than the server accepts")
                    self._upload_object(
                        job, kind, obj, path, client, info.sha1_checksum, progressed
                    )
            except (_Cancelled, TusError, ShareError, OSError):
                if (
                    self._stop.is_set()
                    or self._outbox.state(job.rfa_id) is not ShareState.CANCELLED
                ):
                    raise
                # Cancelled, between chunks or in the middle of an exchange: the share's
                # own client is stopped, so the clean-up goes through one that is not.
                cleanup = TusClient(
                    upload_url=url, options=options, session=session, stop=self._stop
                )
                self._terminate(job.rfa_id, cleanup, info)
                raise _Cancelled() from None
        finally:
            session.close()

    def _terminate(self, rfa_id: str, client: TusClient, info: ServerInfo | None) -> None:
        """Best effort: ask the server to drop the partial uploads of a cancelled share
        (when it offers termination; asked first if the cancel came before its answer)."""
        current = self._outbox.job(rfa_id)
        partial = [o for o in (current.objects if current else ()) if o.upload_url and not o.done]
        if not partial:
            return
        try:
            info = info or client.server_info()
            if "termination" not in info.extensions:
                return
        except TusError as exc:
            logger.info(
                "share %s: could not ask to delete its uploads: %s", shown(rfa_id), shown(exc)
            )
            return
        for obj in partial:
            try:
                client.terminate(obj.upload_url or "")
            except TusError as exc:
                logger.info(
                    "share %s: could not delete the %s upload: %s",
                    shown(rfa_id),
                    obj.kind,
                    shown(exc),
                )

    def _upload_object(
        self,
        job: ShareJob,
        kind: str,
        obj: Any,
        path: Path,
        client: TusClient,
        checksum: bool,
        progressed: list[bool],
    ) -> None:
        location = obj.upload_url
        offset = 0
        if location is not None:
            try:
                offset = client.offset(location)
            except TusGone:
                logger.info(
                    "share %s: server lost the %s upload; creating it anew", shown(job.rfa_id), kind
                )
                location = None
            else:
                if offset > obj.size:
                    raise TusRefused(f"server holds more of the {kind} than was sent")
        if location is None:
            location = client.create(obj.size, upload_metadata(job, kind, self._identity.device_id))
            # stored before any byte goes out: a crash from here on resumes this upload
            self._outbox.set_upload_url(job.rfa_id, kind, location)
            offset = 0
        self._outbox.set_offset(job.rfa_id, kind, offset)

        def on_progress(new_offset: int) -> None:
            progressed[0] = True
            self._outbox.set_offset(job.rfa_id, kind, new_offset)

        def keep_going() -> bool:
            if self._outbox.state(job.rfa_id) is not ShareState.UPLOADING:
                raise _Cancelled()
            return True

        try:
            client.send_file(
                path,
                location=location,
                offset=offset,
                length=obj.size,
                checksum=checksum,
                on_progress=on_progress,
                keep_going=keep_going,
            )
        except TusGone:
            # Lost in the middle: forget the URL so the next attempt creates it anew.
            self._outbox.set_upload_url(job.rfa_id, kind, None)
            raise
        self._outbox.mark_object_done(job.rfa_id, kind)
