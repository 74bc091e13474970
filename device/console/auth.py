"""Who may use the console: one-time sign-in codes, sessions and the code-entry lockout.

There is no password anywhere. The owner asks the device for a code over the local
control socket (`doorbellctl console-code`, root or the service's group only); the code
is good for one sign-in within 10 minutes and is exchanged for a session: a random
token in a cookie, valid 30 days, listed and revocable from the same CLI. Five wrong
codes in a row lock code entry for a minute (for every client: the lockout guards the
codes, which are short enough to type on a phone, 8 digits).

Codes and sessions are kept in their own power-cut-safe SQLite file beside the state
database, only as SHA-256 hashes, so a copy of the file opens no session. The rules
themselves (`sign_in_verdict`) are a pure function of what is stored and `now`.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from foundation.durable import open_durable, transaction

CODE_TTL_MS = 10 * 60_000
SESSION_TTL_MS = 30 * 86_400_000
MAX_WRONG_CODES = 5
LOCKOUT_MS = 60_000
CODE_DIGITS = 8
LAST_SEEN_EVERY_MS = 3_600_000  # a session's last use is written at most hourly (SD wear)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    client TEXT NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS code_entry (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    wrong INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
);
"""


class Verdict(StrEnum):
    OK = "ok"
    LOCKED = "locked"  # too many wrong codes: try again in a minute
    WRONG = "wrong"  # no such code
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True, slots=True)
class StoredCode:
    expires_ms: int
    used_ms: int | None


@dataclass(frozen=True, slots=True)
class NewSession:
    id: str
    token: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    created_ms: int
    expires_ms: int
    last_seen_ms: int
    client: str


def sign_in_verdict(code: StoredCode | None, *, locked_until_ms: int, now_ms: int) -> Verdict:
    """Whether a typed code opens a session. The lockout comes first: while it lasts even
    the right code is refused, so guessing learns nothing."""
    if now_ms < locked_until_ms:
        return Verdict.LOCKED
    if code is None:
        return Verdict.WRONG
    if code.used_ms is not None:
        return Verdict.USED
    if now_ms >= code.expires_ms:
        return Verdict.EXPIRED
    return Verdict.OK


def after_wrong(wrong: int) -> tuple[int, bool]:
    """The wrong-code counter after one more wrong code, and whether entry now locks
    (the counter then starts again)."""
    wrong += 1
    return (0, True) if wrong >= MAX_WRONG_CODES else (wrong, False)


def normalize_code(text: str) -> str:
    """What the owner typed, without the spaces or dashes a phone keyboard adds."""
    return "".join(ch for ch in text if ch not in " -\t")[:64]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ConsoleAuth:
    """Codes and sessions. Thread-safe: one connection behind a lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> ConsoleAuth:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_durable(path, schema=_SCHEMA)
        path.chmod(0o600)
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- codes -------------------------------------------------------------------------

    def new_code(self, now_ms: int) -> tuple[str, int]:
        """A fresh one-time code and when it expires. Old codes are forgotten."""
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        expires = now_ms + CODE_TTL_MS
        with self._lock, transaction(self._conn) as cur:
            cur.execute("DELETE FROM codes WHERE expires_ms < ?", (now_ms - CODE_TTL_MS,))
            cur.execute("INSERT INTO codes VALUES (?, ?, ?, NULL)", (_hash(code), now_ms, expires))
        return code, expires

    def sign_in(self, typed: str, *, now_ms: int, client: str) -> tuple[Verdict, NewSession | None]:
        """Exchange a code for a session, using the code up; or say why not."""
        code_hash = _hash(normalize_code(typed))
        with self._lock, transaction(self._conn) as cur:
            row = cur.execute(
                "SELECT wrong, locked_until_ms FROM code_entry WHERE id = 1"
            ).fetchone()
            wrong, locked_until = (int(row[0]), int(row[1])) if row else (0, 0)
            found = cur.execute(
                "SELECT expires_ms, used_ms FROM codes WHERE code_hash = ?", (code_hash,)
            ).fetchone()
            stored = None if found is None else StoredCode(int(found[0]), found[1])
            verdict = sign_in_verdict(stored, locked_until_ms=locked_until, now_ms=now_ms)
            if verdict is Verdict.LOCKED:
                return verdict, None
            if verdict is not Verdict.OK:
                wrong, lock = after_wrong(wrong)
                locked_until = now_ms + LOCKOUT_MS if lock else locked_until
                cur.execute(
                    "INSERT OR REPLACE INTO code_entry VALUES (1, ?, ?)", (wrong, locked_until)
                )
                return verdict, None
            cur.execute("UPDATE codes SET used_ms = ? WHERE code_hash = ?", (now_ms, code_hash))
            cur.execute("INSERT OR REPLACE INTO code_entry VALUES (1, 0, 0)")
            session = NewSession(
                id=secrets.token_hex(6),
                token=secrets.token_urlsafe(32),
                expires_ms=now_ms + SESSION_TTL_MS,
            )
            cur.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (
                    session.id,
                    _hash(session.token),
                    now_ms,
                    session.expires_ms,
                    now_ms,
                    client[:200],
                ),
            )
        return Verdict.OK, session

    # ---- sessions ----------------------------------------------------------------------

    def session(self, token: str | None, *, now_ms: int) -> SessionInfo | None:
        """The live session a cookie names, or None (unknown, expired or revoked)."""
        if not token or len(token) > 200:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT id, created_ms, expires_ms, last_seen_ms, client FROM sessions "
                "WHERE token_hash = ? AND revoked_ms IS NULL AND expires_ms > ?",
                (_hash(token), now_ms),
            ).fetchone()
            if row is None:
                return None
            info = SessionInfo(row[0], row[1], row[2], row[3], row[4])
            if now_ms - info.last_seen_ms >= LAST_SEEN_EVERY_MS:
                with transaction(self._conn) as cur:
                    cur.execute(
                        "UPDATE sessions SET last_seen_ms = ? WHERE id = ?", (now_ms, info.id)
                    )
        return info

    def sessions(self, *, now_ms: int) -> list[SessionInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, created_ms, expires_ms, last_seen_ms, client FROM sessions "
                "WHERE revoked_ms IS NULL AND expires_ms > ? ORDER BY created_ms",
                (now_ms,),
            ).fetchall()
        return [SessionInfo(*row) for row in rows]

    def revoke(self, session_id: str, *, now_ms: int) -> bool:
        with self._lock, transaction(self._conn) as cur:
            cur.execute(
                "UPDATE sessions SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL "
                "AND expires_ms > ?",
                (now_ms, session_id, now_ms),
            )
            return cur.rowcount == 1
