"""The durable outbox of shares: which approved requests still have to be sent, how far
each object got, and the encrypted files themselves.

It owns one directory: `outbox.sqlite` (WAL, synchronous=FULL, so what a method wrote
survives a power cut once it returns) and `objects/{rfa_id}/` with the two encrypted
objects of each share. Nothing here touches the network or the recorder; `ShareWorker`
(sync.uploader, sync.attempt) drives the jobs.

A job's state is a `ShareState` (foundation.wire, protocol.md §6.3): `queued` ->
`uploading` -> `done`, or it ends `failed` (with its error) or `cancelled`. Per object
the upload URL is stored before its first byte is sent and the server-acknowledged
offset after each chunk, so a restart resumes the same upload.
A job also holds the moment its upload may start and the delay drawn for it
(protocol.md §6.2, sync.release), written in the same transaction that queues it.
Byte counts are ciphertext bytes of both objects together (protocol.md §6.3).
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.durable import open_durable, transaction
from foundation.errors import DoorbellError
from foundation.times import format_time
from foundation.wire import ACTIVE_SHARE_STATES, ShareState
from sync.models import (
    Decision,
    Rfa,
    decision_from_json,
    decision_to_json,
    rfa_from_json,
    rfa_to_json,
)
from sync.release import secure_rng, start_of
from sync.settings import AnonymousDelay

logger = logging.getLogger(__name__)

# A share in these states keeps its object files: it may still be (or be again) sent.
KEEPS_FILES = (*ACTIVE_SHARE_STATES, ShareState.FAILED)
KINDS = ("manifest", "clip")
LIST_DAYS_MS = 7 * 24 * 3600 * 1000
LIST_MAX = 20
_SAFE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    rfa_id TEXT PRIMARY KEY,
    rfa TEXT NOT NULL,
    decision TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    built INTEGER NOT NULL DEFAULT 0,
    manifest_sha256 TEXT,
    starts_at_ms INTEGER NOT NULL DEFAULT 0,
    start_delay_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS objects (
    rfa_id TEXT NOT NULL REFERENCES jobs(rfa_id),
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    upload_url TEXT,
    offset INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rfa_id, kind)
);
"""
# Columns added since the first outbox (name, declaration): an older database gets them
# when it is opened. A job queued before revision 1.2 keeps 0, i.e. "start at once", as
# it would have then.
_ADDED_COLUMNS = (
    ("starts_at_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("start_delay_ms", "INTEGER NOT NULL DEFAULT 0"),
)


def _states(states: tuple[ShareState, ...]) -> str:
    """A set of states as one query parameter, a JSON list, for `state IN (SELECT value
    FROM json_each(?))`: the states go in as data, no SQL text is built from them."""
    return json.dumps(list(states))


_ACTIVE = _states(ACTIVE_SHARE_STATES)
_KEEPS_FILES = _states(KEEPS_FILES)


class OutboxError(DoorbellError):
    """The outbox was asked something it cannot do."""


@dataclass(frozen=True, slots=True)
class UploadObject:
    kind: str  # "manifest" or "clip"
    size: int  # ciphertext bytes
    upload_url: str | None  # the tus upload's URL once created
    offset: int  # bytes the server acknowledged
    done: bool


@dataclass(frozen=True, slots=True)
class ShareJob:
    rfa: Rfa
    decision: Decision
    state: ShareState
    created_ms: int
    attempts: int
    next_attempt_ms: int
    error: str | None
    built: bool
    manifest_sha256: str | None
    objects: tuple[UploadObject, ...]
    starts_at_ms: int = 0  # its upload starts no earlier (protocol.md §6.2)
    start_delay_ms: int = 0  # the delay drawn for it (0: a named share)
    updated_ms: int = 0  # its last change of state (a finished share: when it finished)

    @property
    def rfa_id(self) -> str:
        return self.rfa.id

    def object(self, kind: str) -> UploadObject | None:
        return next((o for o in self.objects if o.kind == kind), None)


class Outbox:
    """The queue of share jobs; safe to use from several threads."""

    def __init__(
        self,
        root: Path,
        db: sqlite3.Connection,
        *,
        anonymous_delay: AnonymousDelay,
        rng: random.Random,
    ) -> None:
        self.root = root
        self._db = db
        self._lock = threading.RLock()
        self._anonymous_delay = anonymous_delay
        self._rng = rng

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        anonymous_delay: AnonymousDelay | None = None,
        rng: random.Random | None = None,
    ) -> Outbox:
        """`anonymous_delay`: the owner's bounds of an anonymous share's start delay
        (the protocol's when None); `rng`: the draw's source (the system's by default)."""
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "objects").mkdir(exist_ok=True, mode=0o700)
        db = open_durable(root / "outbox.sqlite", schema=_SCHEMA)
        db.execute("PRAGMA foreign_keys = ON")
        _add_missing_columns(db)
        outbox = cls(
            root,
            db,
            anonymous_delay=anonymous_delay or AnonymousDelay(),
            rng=rng or secure_rng(),
        )
        outbox._remove_orphans()
        return outbox

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, transaction(self._db) as cursor:
            yield cursor

    def _remove_orphans(self) -> None:
        """Object folders of jobs that no longer need them (crash between DB and unlink)."""
        keep = {
            row[0]
            for row in self._db.execute(
                "SELECT rfa_id FROM jobs WHERE state IN (SELECT value FROM json_each(?))",
                (_KEEPS_FILES,),
            )
        }
        for folder in (self.root / "objects").iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    # -- files

    def job_dir(self, rfa_id: str) -> Path:
        if not _SAFE_ID.fullmatch(rfa_id):
            raise OutboxError("rfa id is not usable as a file name")
        return self.root / "objects" / rfa_id

    def object_path(self, rfa_id: str, kind: str) -> Path:
        name = "manifest.json.age" if kind == "manifest" else "mp4.age"
        return self.job_dir(rfa_id) / f"{rfa_id}.{name}"

    def delete_files(self, rfa_id: str) -> None:
        shutil.rmtree(self.job_dir(rfa_id), ignore_errors=True)

    # -- the interface the daemon uses

    def enqueue(self, rfa: Rfa, decision: Decision, *, now_ms: int) -> None:
        """Queue a share of an approved request, with the moment its upload may start
        (drawn here for an anonymous share); a second call for the same id does nothing,
        and draws nothing new."""
        if not decision.approve or decision.rfa_id != rfa.id:
            raise OutboxError("only an approval of this request can be queued")
        self.job_dir(rfa.id)  # refuses ids that are not safe file names
        starts_at, delay = self._start_of(decision, now_ms)
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO jobs (rfa_id, rfa, decision, state, created_ms,"
                " updated_ms, starts_at_ms, start_delay_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rfa.id,
                    rfa_to_json(rfa),
                    decision_to_json(decision),
                    ShareState.QUEUED,
                    now_ms,
                    now_ms,
                    starts_at,
                    delay,
                ),
            )

    def _start_of(self, decision: Decision, now_ms: int) -> tuple[int, int]:
        return start_of(
            named=decision.share_contact,
            approved_ms=now_ms,
            bounds=self._anonymous_delay,
            rng=self._rng,
        )

    def has_job(self, rfa_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM jobs WHERE rfa_id = ?", (rfa_id,)).fetchone()
        return row is not None

    def active_count(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN (SELECT value FROM json_each(?))",
                (_ACTIVE,),
            ).fetchone()
        return int(row[0])

    def state(self, rfa_id: str) -> ShareState | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE rfa_id = ?", (rfa_id,)).fetchone()
        return None if row is None else ShareState(row[0])

    def job(self, rfa_id: str) -> ShareJob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT rfa, decision, state, created_ms, attempts, next_attempt_ms, error,"
                " built, manifest_sha256, starts_at_ms, start_delay_ms, updated_ms"
                " FROM jobs WHERE rfa_id = ?",
                (rfa_id,),
            ).fetchone()
            if row is None:
                return None
            objects = tuple(
                UploadObject(kind=k, size=s, upload_url=u, offset=o, done=bool(d))
                for k, s, u, o, d in self._db.execute(
                    "SELECT kind, size, upload_url, offset, done FROM objects WHERE rfa_id = ?"
                    " ORDER BY kind DESC",
                    (rfa_id,),
                )
            )
        return ShareJob(
            rfa=rfa_from_json(row[0]),
            decision=decision_from_json(row[1]),
            state=ShareState(row[2]),
            created_ms=row[3],
            attempts=row[4],
            next_attempt_ms=row[5],
            error=row[6],
            built=bool(row[7]),
            manifest_sha256=row[8],
            objects=objects,
            starts_at_ms=row[9],
            start_delay_ms=row[10],
            updated_ms=row[11],
        )

    def due(self, now_ms: int) -> tuple[list[ShareJob], int | None]:
        """The active jobs whose time has come, oldest first, and the moment the next of
        the others is due (None: no other active job)."""
        with self._lock:
            ids = [
                row[0]
                for row in self._db.execute(
                    "SELECT rfa_id FROM jobs WHERE state IN (SELECT value FROM json_each(?))"
                    " AND next_attempt_ms <= ? ORDER BY created_ms, rfa_id",
                    (_ACTIVE, now_ms),
                )
            ]
            later = self._db.execute(
                "SELECT MIN(next_attempt_ms) FROM jobs"
                " WHERE state IN (SELECT value FROM json_each(?)) AND next_attempt_ms > ?",
                (_ACTIVE, now_ms),
            ).fetchone()
            jobs = [job for job in map(self.job, ids) if job is not None]
        return jobs, (None if later[0] is None else int(later[0]))

    def shares(self, now_ms: int) -> list[dict[str, Any]]:
        """protocol.md §6.3 entries: the last 7 days, at most 20, newest first. `starts_at`
        is when a queued share's upload will start while it waits for that moment
        (§6.2), null otherwise."""
        with self._lock:
            rows = self._db.execute(
                "SELECT j.rfa_id, j.state, j.manifest_sha256, j.error, j.starts_at_ms,"
                " COALESCE(SUM(CASE WHEN o.done THEN o.size ELSE o.offset END), 0),"
                " COALESCE(SUM(o.size), 0)"
                " FROM jobs j LEFT JOIN objects o ON o.rfa_id = j.rfa_id"
                " WHERE j.updated_ms >= ? OR j.state IN (SELECT value FROM json_each(?))"
                " GROUP BY j.rfa_id ORDER BY j.created_ms DESC, j.rfa_id LIMIT ?",
                (now_ms - LIST_DAYS_MS, _ACTIVE, LIST_MAX),
            ).fetchall()
        return [
            {
                "rfa_id": rfa_id,
                "state": ShareState(state),
                "bytes_sent": int(sent),
                "bytes_total": int(total),
                "manifest_sha256": sha,
                "error": error,
                "starts_at": (
                    format_time(starts_at)
                    if state == ShareState.QUEUED and starts_at > now_ms
                    else None
                ),
            }
            for rfa_id, state, sha, error, starts_at, sent, total in rows
        ]

    def retry(self, rfa_id: str, *, now_ms: int = 0) -> bool:
        """Queue a failed share again (attempts start over); False when it is not failed.

        An anonymous share waits again, a fresh draw from now (or its first moment, if
        that is later): the owner's retry may come right after something the broker saw
        the owner do, and a retried share must not point at it any more than a new one."""
        job = self.job(rfa_id)
        if job is None:
            return False
        starts_at, delay = self._start_of(job.decision, now_ms)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, attempts = 0, next_attempt_ms = 0,"
                " error = NULL, updated_ms = MAX(updated_ms, ?),"
                " start_delay_ms = CASE WHEN ? > starts_at_ms THEN ? ELSE start_delay_ms END,"
                " starts_at_ms = MAX(starts_at_ms, ?)"
                " WHERE rfa_id = ? AND state = ?",
                (
                    ShareState.QUEUED,
                    now_ms,
                    starts_at,
                    delay,
                    starts_at,
                    rfa_id,
                    ShareState.FAILED,
                ),
            )
        return cur.rowcount == 1

    def cancel(self, rfa_id: str, *, now_ms: int = 0) -> bool:
        """Cancel a share that is not done and delete its outbox files; False otherwise."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, updated_ms = MAX(updated_ms, ?)"
                " WHERE rfa_id = ? AND state IN (SELECT value FROM json_each(?))",
                (ShareState.CANCELLED, now_ms, rfa_id, _KEEPS_FILES),
            )
        if cur.rowcount == 1:
            self.delete_files(rfa_id)
            return True
        return False

    # -- what the worker records

    def set_state(
        self,
        rfa_id: str,
        state: ShareState,
        *,
        now_ms: int,
        error: str | None = None,
        only_from: tuple[ShareState, ...] = ACTIVE_SHARE_STATES,
    ) -> bool:
        """Move an active job to `state`; False when it was cancelled (or finished) meanwhile."""
        try:
            state = ShareState(state)
        except ValueError:
            raise OutboxError(f"unknown share state {state!r}") from None
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_ms = ?"
                " WHERE rfa_id = ? AND state IN (SELECT value FROM json_each(?))",
                (state, error, now_ms, rfa_id, _states(only_from)),
            )
        return cur.rowcount == 1

    def record_built(self, rfa_id: str, *, manifest_sha256: str, sizes: dict[str, int]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM objects WHERE rfa_id = ?", (rfa_id,))
            for kind in KINDS:
                db.execute(
                    "INSERT INTO objects (rfa_id, kind, size) VALUES (?, ?, ?)",
                    (rfa_id, kind, sizes[kind]),
                )
            db.execute(
                "UPDATE jobs SET built = 1, manifest_sha256 = ? WHERE rfa_id = ?",
                (manifest_sha256, rfa_id),
            )

    def set_upload_url(self, rfa_id: str, kind: str, url: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE objects SET upload_url = ?, offset = 0 WHERE rfa_id = ? AND kind = ?",
                (url, rfa_id, kind),
            )

    def set_offset(self, rfa_id: str, kind: str, offset: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE objects SET offset = ?, done = (offset = size OR ? = size)"
                " WHERE rfa_id = ? AND kind = ?",
                (offset, offset, rfa_id, kind),
            )

    def mark_object_done(self, rfa_id: str, kind: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE objects SET done = 1, offset = size WHERE rfa_id = ? AND kind = ?",
                (rfa_id, kind),
            )

    def record_failure(
        self, rfa_id: str, *, error: str, attempts: int, next_attempt_ms: int, now_ms: int
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET attempts = ?, next_attempt_ms = ?, error = ?, updated_ms = ?"
                " WHERE rfa_id = ?",
                (attempts, next_attempt_ms, error, now_ms, rfa_id),
            )

    def hold(self, rfa_id: str, *, until_ms: int) -> None:
        """Look at a job again no earlier than `until_ms` (a share waiting for its start;
        its stored start moment does not change)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET next_attempt_ms = ? WHERE rfa_id = ?", (until_ms, rfa_id))

    def reset_attempts(self, rfa_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET attempts = 0 WHERE rfa_id = ?", (rfa_id,))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database made by an older daemon up to `_SCHEMA` (one transaction)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = [(name, decl) for name, decl in _ADDED_COLUMNS if name not in have]
    if not missing:
        return
    with transaction(db) as cursor:
        for name, decl in missing:
            # names and declarations are the constants above, never outside text
            cursor.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    logger.info("outbox database upgraded: added %s", ", ".join(name for name, _ in missing))
