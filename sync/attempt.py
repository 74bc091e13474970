"""One attempt at one share: build it if it is not built yet, then upload both objects
with tus until they are done, or record why not (failed, or retried later).

Resume rules (protocol.md §6.1): an object's upload URL is stored before its first byte is
sent; after a restart or a network cut the attempt asks the server (HEAD) how much it
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

A share waiting for its start moment (sync.release) is built by its first attempt and
then held, still `queued`: the footage is cut, encrypted and safe in the outbox while it
is certainly in the buffer, and a build that fails tells the owner now.

Cancel: an attempt watches one cancel signal, set by the share worker's `cancel` (see
sync.uploader for why it is set before the outbox records the cancel), and the daemon's
stop. The signal stops the share's tus client, so a cancel cuts the HTTP exchange under
way at once (sync.tus) instead of waiting for the exchange, or the chunk, to end; the
attempt then asks the server to drop the partial uploads and deletes the outbox files.
A daemon stop leaves the share as it is, to be resumed.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from foundation.backoff import backoff_s
from foundation.clock import Clock
from foundation.display import shown
from foundation.errors import DoorbellError
from foundation.stop import EitherStop
from foundation.wire import MAX_SHARE_ERROR_CHARS, ShareState
from sync.outbox import KINDS, Outbox, ShareJob, UploadObject
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


@dataclass(slots=True)
class ShareCounts:
    """Since the daemon started (shown by `doorbellctl status`). Each lane adds to its
    own shares' counts; a lost increment between two lanes would cost one count, never
    a share."""

    retried: int = 0  # attempts that failed and will be tried again
    failed: int = 0  # shares that ended failed


@dataclass(frozen=True, kw_only=True)
class AttemptParts:
    """What every attempt works with; made once by the share worker."""

    outbox: Outbox
    buffer_root: Path
    identity: Any  # device.identity.DeviceIdentity (sync does not import device)
    contact: Mapping[str, Any] | None
    clock: Clock
    settings: ShareSettings
    notify: StateCallback  # a state change the attempt made
    session_factory: Callable[[bool], requests.Session]
    rng: random.Random
    build_lock: threading.Lock  # builds run one at a time, whichever lane asks
    stop: threading.Event  # the daemon's
    counts: ShareCounts


class ShareAttempt:
    """One attempt at `job`, run by its lane. `wait_ms` > 0: the share waits for its
    start moment, so this attempt only builds it (when not built yet) and holds it."""

    def __init__(
        self, parts: AttemptParts, job: ShareJob, cancelled: threading.Event, wait_ms: int
    ) -> None:
        self._parts = parts
        self._outbox = parts.outbox
        self._job = job
        self._cancelled = cancelled
        self._wait_ms = wait_ms
        self._progressed = False  # a byte reached the server in this attempt

    def run(self) -> None:
        job = self._job
        waiting = self._wait_ms > 0
        if (
            not waiting
            and job.state is ShareState.QUEUED
            and not self._set_state(ShareState.UPLOADING)
        ):
            return  # cancelled before this attempt began
        try:
            built_now = not job.built
            if built_now:
                with self._parts.build_lock:
                    self._build()
                refreshed = self._outbox.job(job.rfa_id)
                if refreshed is None:
                    return
                self._job = job = refreshed
            if self._cancelled.is_set():
                raise _Cancelled()  # during the build, which wrote files after the cancel
            if waiting:
                self._hold(built_now)
                return
            self._upload()
        except _Cancelled:
            logger.info("share %s cancelled", shown(job.rfa_id))
            self._outbox.delete_files(job.rfa_id)
            return
        except (ShareError, TusRefused) as exc:
            permanent = not isinstance(exc, ShareError) or exc.permanent
            if permanent:
                self._fail(str(exc))
                return
            self._retry_later(str(exc))
            return
        except (TusTransient, TusGone, OSError) as exc:
            if self._parts.stop.is_set():
                return
            message = str(exc) if isinstance(exc, TusError) else f"outbox: {exc.strerror or exc}"
            self._retry_later(message)
            return
        except Exception as exc:
            # A bug, ours or a library's, that a hostile answer can reach (issue 16: int()
            # of "²" escaped every handler above, and the share was tried every 2 s for
            # ever, a traceback each time, its window pinned). Counted and backed off like
            # a transient failure, so max_attempts ends the share; the one log line names
            # the type (never the text, which may quote the server), the traceback goes
            # to the debug level.
            if self._parts.stop.is_set():
                return
            logger.debug("share %s: unexpected error", shown(job.rfa_id), exc_info=exc)
            self._retry_later(f"unexpected {type(exc).__name__}")
            return
        self._outbox.delete_files(job.rfa_id)
        self._set_state(ShareState.DONE)
        logger.info("share %s done", shown(job.rfa_id))

    def _set_state(self, state: ShareState, error: str | None = None) -> bool:
        changed = self._outbox.set_state(
            self._job.rfa_id, state, now_ms=self._parts.clock.wall_ms(), error=error
        )
        if changed:
            self._parts.notify(self._job.rfa_id, state, error)
        return changed

    def _hold(self, built_now: bool) -> None:
        """A built share before its start moment: its lane looks at it again when the
        moment comes. Its state stays `queued`."""
        if built_now:
            logger.info(
                "share %s built; its upload waits %.0f s (anonymous start delay)",
                shown(self._job.rfa_id),
                self._wait_ms / 1000,
            )
        self._outbox.hold(self._job.rfa_id, until_ms=self._parts.clock.wall_ms() + self._wait_ms)

    def _fail(self, error: str) -> None:
        job = self._job
        error = error_phrase(error)
        logger.warning("share %s failed: %s", shown(job.rfa_id), shown(error))
        if not job.built:
            self._outbox.delete_files(job.rfa_id)
        if self._set_state(ShareState.FAILED, error):
            self._parts.counts.failed += 1

    def _retry_later(self, error: str) -> None:
        job = self._job
        current = self._outbox.job(job.rfa_id)
        attempts = 1 if self._progressed else (current.attempts if current else job.attempts) + 1
        if attempts >= self._parts.settings.max_attempts:
            self._fail(error_phrase(error, f" (gave up after {attempts} attempts)"))
            return
        error = error_phrase(error)
        self._parts.counts.retried += 1
        delay = backoff_s(
            attempts - 1,  # the first failed attempt waits about retry_base_s
            base_s=self._parts.settings.retry_base_s,
            cap_s=self._parts.settings.retry_cap_s,
            rng=self._parts.rng,
        )
        now = self._parts.clock.wall_ms()
        logger.info("share %s: %s; retrying in %.1f s", shown(job.rfa_id), shown(error), delay)
        self._outbox.record_failure(
            job.rfa_id,
            error=error,
            attempts=attempts,
            next_attempt_ms=now + round(delay * 1000),
            now_ms=now,
        )

    def _build(self) -> None:
        job = self._job
        clip_path = self._outbox.object_path(job.rfa_id, "clip")
        manifest_path = self._outbox.object_path(job.rfa_id, "manifest")
        # A build interrupted by a crash left nothing trustworthy: start it over.
        self._outbox.delete_files(job.rfa_id)
        now_ms = self._parts.clock.wall_ms()
        built = build_share(
            rfa=job.rfa,
            decision=job.decision,
            buffer_root=self._parts.buffer_root,
            clip_path=clip_path,
            manifest_path=manifest_path,
            device_key=self._parts.identity.signing,
            device_id=self._parts.identity.device_id,
            clip_signer=self._parts.identity.clip_signer,
            contact=self._parts.contact,
            # an anonymous manifest's times are its start moment's (sync.share)
            now_ms=now_ms if job.decision.share_contact else max(now_ms, job.starts_at_ms),
        )
        self._outbox.record_built(
            job.rfa_id,
            manifest_sha256=built.manifest_sha256,
            sizes={"manifest": built.manifest_bytes, "clip": built.clip_bytes},
        )

    def _upload(self) -> None:
        job = self._job
        url = job.rfa.upload_url
        loopback = self._parts.settings.allow_plain_http_loopback and url.startswith("http://")
        options = TusOptions(
            chunk_bytes=self._parts.settings.chunk_bytes,
            bandwidth_bytes_per_s=self._parts.settings.bandwidth_bytes_per_s,
            allow_plain_http_loopback=self._parts.settings.allow_plain_http_loopback,
            timeout_s=self._parts.settings.timeout_s,
        )
        session = self._parts.session_factory(loopback)
        share_stop = EitherStop(self._cancelled, self._parts.stop)
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
                    self._upload_object(kind, obj, path, client, info.sha1_checksum)
            except (TusError, ShareError, OSError):
                if self._parts.stop.is_set() or not self._cancelled.is_set():
                    raise
                # Cancelled, between chunks or in the middle of an exchange: the share's
                # own client is stopped, so the clean-up goes through one that is not.
                cleanup = TusClient(
                    upload_url=url, options=options, session=session, stop=self._parts.stop
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
        self, kind: str, obj: UploadObject, path: Path, client: TusClient, checksum: bool
    ) -> None:
        job = self._job
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
            location = client.create(
                obj.size, upload_metadata(job, kind, self._parts.identity.device_id)
            )
            # stored before any byte goes out: a crash from here on resumes this upload
            self._outbox.set_upload_url(job.rfa_id, kind, location)
            offset = 0
        self._outbox.set_offset(job.rfa_id, kind, offset)

        def on_progress(new_offset: int) -> None:
            self._progressed = True
            self._outbox.set_offset(job.rfa_id, kind, new_offset)

        try:
            client.send_file(
                path,
                location=location,
                offset=offset,
                length=obj.size,
                checksum=checksum,
                on_progress=on_progress,
            )
        except TusGone:
            # Lost in the middle: forget the URL so the next attempt creates it anew.
            self._outbox.set_upload_url(job.rfa_id, kind, None)
            raise
        self._outbox.mark_object_done(job.rfa_id, kind)
