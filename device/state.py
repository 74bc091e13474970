"""The daemon's durable memory of requests: seen RFA ids, used decision nonces, pending
requests and the decisions made on them.

One SQLite file in WAL mode with synchronous=FULL, so a transaction that returned has
reached the disk: a restart or a power cut loses no pending request and forgets no
seen id or nonce. Every state change that must happen together (accepting a request
and marking its id seen; recording a decision, its nonce and the request's new state)
is one transaction.

Seen ids and nonces are also mirrored in memory, so the cheap replay check that runs
on paho's network thread for every arriving message never waits for the disk. Only
verified requests are remembered as seen, so a flood of junk cannot grow them.

Two marks are bookkeeping that the next start can work out for itself, so they are not
worth a durable write of their own (each is an fsync, and protocol.md §3 wants an
outcome's work far below the 2 s acknowledgement delay on an SD card): "its audit entry
is written" and "its share job is in the outbox" ride in the next transaction, or are
saved by `save_marks` (housekeeping, close). After a crash, start-up looks the entry up
in the audit log, and re-enqueues an approval (the outbox ignores a job it holds).

Declined and expired requests are forgotten except for their id (replay protection)
and the decision record: the investigator's details are not kept once nothing can
come of them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from foundation.durable import open_durable, transaction
from sync.models import (
    Decision,
    Rfa,
    decision_from_json,
    decision_to_json,
    rfa_from_json,
    rfa_to_json,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_ids (
    rfa_id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    rfa_id TEXT PRIMARY KEY,
    rfa_json TEXT,                 -- NULL once declined or expired
    received_at_ms INTEGER NOT NULL,
    decide_by_ms INTEGER NOT NULL,
    state TEXT NOT NULL,           -- pending | approved | queued | denied | expired
    closed_at_ms INTEGER,
    audited INTEGER NOT NULL DEFAULT 0   -- the state's audit entry is written
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE TABLE IF NOT EXISTS accepted_cases (  -- protocol.md §4 rule 12
    rfa_id TEXT PRIMARY KEY,
    agency_id TEXT NOT NULL,
    case_number TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_cases_case ON accepted_cases(agency_id, case_number);
CREATE TABLE IF NOT EXISTS decisions (
    rfa_id TEXT PRIMARY KEY,
    decision_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS owner_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # approved, not yet handed to the outbox
    QUEUED = "queued"  # approved and durably in the outbox
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PendingRequest:
    rfa: Rfa
    received_at_ms: int
    decide_by_ms: int


@dataclass(frozen=True, slots=True)
class RequestRecord:
    rfa_id: str
    rfa: Rfa | None  # None once declined or expired
    received_at_ms: int
    decide_by_ms: int
    state: RequestState
    closed_at_ms: int | None
    audited: bool


class _Remembered:
    """A read-only, thread-safe view of a set (set membership is atomic under the GIL)."""

    def __init__(self, items: set[str]) -> None:
        self._items = items

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


class StateStore:
    """Durable request state. Thread-safe: one connection behind a lock."""

    def __init__(self, conn: sqlite3.Connection, seen: set[str], nonces: set[str]) -> None:
        self._conn = conn
        row = conn.execute("SELECT value FROM owner_settings WHERE name = 'requests_paused'")
        found = row.fetchone()
        self._paused = found is not None and found[0] == "1"
        self._lock = threading.Lock()
        self._seen = seen
        self._nonces = nonces
        self._marks: list[tuple[str, tuple[Any, ...]]] = []  # for the next transaction
        self.seen_ids = _Remembered(seen)
        self.used_nonces = _Remembered(nonces)

    @classmethod
    def open(cls, path: Path) -> StateStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_durable(path, schema=_SCHEMA)
        seen = {row[0] for row in conn.execute("SELECT rfa_id FROM seen_ids")}
        nonces = {row[0] for row in conn.execute("SELECT nonce FROM nonces")}
        return cls(conn, seen, nonces)

    def close(self) -> None:
        self.save_marks()
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """A transaction (the caller holds the lock) that also writes the marks waiting
        for one; they wait again if it rolls back."""
        marks, self._marks = self._marks, []
        try:
            with transaction(self._conn) as cur:
                for sql, params in marks:
                    cur.execute(sql, params)
                yield cur
        except BaseException:
            self._marks[:0] = marks
            raise

    def save_marks(self) -> None:
        """Write the marks waiting for a transaction now (one, only if there are any)."""
        with self._lock:
            if self._marks:
                with self._tx():
                    pass

    # ---- seen ids ----------------------------------------------------------------------

    def mark_seen(self, keys: str | Sequence[str], now_ms: int) -> None:
        """Remember a verified request's id or signature key (rejected ones too, so a
        replay is cheap)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._lock, self._tx() as cur:
            cur.executemany(
                "INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", [(k, now_ms) for k in keys]
            )
        self._seen.update(keys)

    def case_count(self, agency_id: str, case_number: str, *, since_ms: int) -> int:
        """Requests of this agency and case accepted after `since_ms` (rule 12: one
        accepted exactly 30 days ago no longer counts)."""
        row = self._one(
            "SELECT COUNT(*) FROM accepted_cases WHERE agency_id = ? AND case_number = ? "
            "AND at_ms > ?",
            (agency_id, case_number, since_ms),
        )
        return int(row[0])

    def _one(self, sql: str, params: tuple[object, ...]) -> Any:
        """The first row `sql` selects (None when there is none), read under the lock."""
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Every row `sql` selects, read under the lock."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---- requests ----------------------------------------------------------------------

    def add_pending(self, rfa: Rfa, *, received_at_ms: int, decide_by_ms: int) -> bool:
        """Persist an accepted request, its seen id and its case count in one transaction.
        False (and no change) if the id was already seen, accepted or rejected."""
        with self._lock, self._tx() as cur:
            if cur.execute("SELECT 1 FROM seen_ids WHERE rfa_id = ?", (rfa.id,)).fetchone():
                return False
            cur.execute("INSERT INTO seen_ids VALUES (?, ?)", (rfa.id, received_at_ms))
            cur.execute(
                "INSERT OR IGNORE INTO accepted_cases VALUES (?, ?, ?, ?)",
                (rfa.id, rfa.agency.id, rfa.case_number, received_at_ms),
            )
            cur.execute(
                "INSERT OR IGNORE INTO requests (rfa_id, rfa_json, received_at_ms, "
                "decide_by_ms, state) VALUES (?, ?, ?, ?, ?)",
                (rfa.id, rfa_to_json(rfa), received_at_ms, decide_by_ms, RequestState.PENDING),
            )
            added = cur.rowcount == 1
        self._seen.add(rfa.id)
        return added

    def pending(self) -> list[PendingRequest]:
        rows = self._rows(
            "SELECT rfa_json, received_at_ms, decide_by_ms FROM requests "
            "WHERE state = ? ORDER BY received_at_ms, rfa_id",
            (RequestState.PENDING,),
        )
        return [PendingRequest(rfa_from_json(r[0]), r[1], r[2]) for r in rows]

    def pending_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM requests WHERE state = ?", (RequestState.PENDING,))
        return int(row[0])

    def request(self, rfa_id: str) -> RequestRecord | None:
        self.save_marks()
        row = self._one(
            "SELECT rfa_id, rfa_json, received_at_ms, decide_by_ms, state, closed_at_ms, "
            "audited FROM requests WHERE rfa_id = ?",
            (rfa_id,),
        )
        return None if row is None else _record(row)

    def requests(self, state: RequestState | None = None) -> list[RequestRecord]:
        query = (
            "SELECT rfa_id, rfa_json, received_at_ms, decide_by_ms, state, closed_at_ms, "
            "audited FROM requests"
        )
        self.save_marks()
        if state is None:
            rows = self._rows(query + " ORDER BY received_at_ms")
        else:
            rows = self._rows(query + " WHERE state = ? ORDER BY received_at_ms", (state,))
        return [_record(r) for r in rows]

    def record_decision(self, decision: Decision) -> bool:
        """Close a pending request with the owner's decision, in one transaction with its
        nonce. False (and no change) when the request is not pending any more, so two
        decisions racing for one request cannot both win."""
        state = RequestState.APPROVED if decision.approve else RequestState.DENIED
        with self._lock, self._tx() as cur:
            cur.execute(
                "UPDATE requests SET state = ?, closed_at_ms = ?, audited = 0, "
                "rfa_json = CASE WHEN ? THEN rfa_json ELSE NULL END "
                "WHERE rfa_id = ? AND state = ?",
                (state, decision.at_ms, decision.approve, decision.rfa_id, RequestState.PENDING),
            )
            if cur.rowcount != 1:
                return False
            if decision.nonce is not None:
                cur.execute(
                    "INSERT OR IGNORE INTO nonces VALUES (?, ?)", (decision.nonce, decision.at_ms)
                )
            cur.execute(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?)",
                (decision.rfa_id, decision_to_json(decision)),
            )
        if decision.nonce is not None:
            self._nonces.add(decision.nonce)
        return True

    def expire(self, rfa_id: str, now_ms: int) -> bool:
        """Decline an undecided request at its deadline. False if it was not pending."""
        with self._lock, self._tx() as cur:
            cur.execute(
                "UPDATE requests SET state = ?, closed_at_ms = ?, audited = 0, rfa_json = NULL "
                "WHERE rfa_id = ? AND state = ?",
                (RequestState.EXPIRED, now_ms, rfa_id, RequestState.PENDING),
            )
            return cur.rowcount == 1

    def mark_queued(self, rfa_id: str) -> None:
        """The approved request's share job is in the outbox (which is durable). Written
        with the next transaction; until then a restart re-enqueues it, a no-op."""
        with self._lock:
            self._marks.append(
                (
                    "UPDATE requests SET state = ? WHERE rfa_id = ? AND state = ?",
                    (RequestState.QUEUED, rfa_id, RequestState.APPROVED),
                )
            )

    def mark_audited(self, rfa_id: str, state: RequestState) -> None:
        """The audit entry of the request's `state` is written. Written with the next
        transaction; until then a restart finds the entry in the audit log."""
        with self._lock:
            self._marks.append(
                (
                    "UPDATE requests SET audited = 1 WHERE rfa_id = ? AND state = ?",
                    (rfa_id, state),
                )
            )

    def use_nonce(self, nonce: str, now_ms: int) -> None:
        """Burn a nonce outside a decision (a valid decision that changed nothing)."""
        with self._lock, self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?)", (nonce, now_ms))
        self._nonces.add(nonce)

    # ---- the owner's opt-out (protocol.md §4 rule 8) -------------------------------------

    def requests_paused(self) -> bool:
        return self._paused

    def set_requests_paused(self, paused: bool) -> None:
        with self._lock, self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO owner_settings VALUES ('requests_paused', ?)",
                ("1" if paused else "0",),
            )
        self._paused = paused

    # ---- the owner's privacy masks (device/masks.py) -----------------------------------

    def owner_setting(self, name: str) -> str | None:
        """A setting the owner made on the device (None when never made)."""
        row = self._one("SELECT value FROM owner_settings WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def set_owner_setting(self, name: str, value: str) -> None:
        """Save a setting durably (one transaction: the old value or the new, never half)."""
        with self._lock, self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO owner_settings VALUES (?, ?)", (name, value))

    # ---- decisions ---------------------------------------------------------------------

    def decision(self, rfa_id: str) -> Decision | None:
        row = self._one("SELECT decision_json FROM decisions WHERE rfa_id = ?", (rfa_id,))
        return None if row is None else decision_from_json(row[0])

    def approved(self) -> Iterator[tuple[Rfa, Decision]]:
        """Every approved request not yet marked queued, with its decision: start-up hands
        these to the outbox, in case the daemon died between approving and enqueueing."""
        self.save_marks()
        rows = self._rows(
            "SELECT r.rfa_json, d.decision_json FROM requests r "
            "JOIN decisions d ON d.rfa_id = r.rfa_id WHERE r.state = ?",
            (RequestState.APPROVED,),
        )
        for rfa_json, decision_json in rows:
            yield rfa_from_json(rfa_json), decision_from_json(decision_json)


def _record(row: tuple[Any, ...]) -> RequestRecord:
    return RequestRecord(
        rfa_id=row[0],
        rfa=rfa_from_json(row[1]) if row[1] is not None else None,
        received_at_ms=row[2],
        decide_by_ms=row[3],
        state=RequestState(row[4]),
        closed_at_ms=row[5],
        audited=bool(row[6]),
    )
