"""Who may use the console: one-time sign-in codes, sessions and the code-entry lockout.

There is no password anywhere. The owner asks the device for a code over the local
control socket (`doorbellctl console-code`, root or the service's group only); the code
is good for one sign-in within 10 minutes and is exchanged for a session: a random
token in a cookie, valid 30 days, listed and revocable from the same CLI. Only the
newest code works: asking for a code retires the older unused ones.

Wrong codes are throttled per source (an IPv4 address, or an IPv6 /64, which one host
can fill with addresses of its own): five wrong codes lock that source out for a
minute, and while it is locked its codes are not even looked at. A global cap guards
the codes themselves (8 digits, short enough to type on a phone): 20 wrong codes within
a minute, from however many sources, lock code entry for everyone for a minute. One
source alone cannot reach the cap (at most 5 of its wrong codes land in any minute), so
one hostile client can never lock the owner out; every code meets at most about 200
guesses in its 10 minutes, a chance of 2 in a million.

Codes and sessions are kept in their own power-cut-safe SQLite file beside the state
database, only as SHA-256 hashes, so a copy of the file opens no session. The rules
themselves (`sign_in_verdict`, `after_wrong`, `source_group`) are pure functions of
what is stored, the source and `now`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from foundation.durable import open_durable, transaction

CODE_TTL_MS = 10 * 60_000
SESSION_TTL_MS = 30 * 86_400_000
MAX_WRONG_CODES = 5  # from one source, then that source waits LOCKOUT_MS
LOCKOUT_MS = 60_000
GLOBAL_MAX_WRONG = 20  # from all sources within GLOBAL_WINDOW_MS, then everyone waits
GLOBAL_WINDOW_MS = 60_000
FORGET_WRONG_MS = 3_600_000  # a source's wrong codes are forgotten after an hour of none
EVERYONE = "*"  # the global cap's row among the sources
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
DROP TABLE IF EXISTS code_entry;
CREATE TABLE IF NOT EXISTS code_throttle (
    source TEXT PRIMARY KEY,
    wrong INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL,
    since_ms INTEGER NOT NULL
);
"""


class Verdict(StrEnum):
    OK = "ok"
    LOCKED = "locked"  # too many wrong codes from this source: try again in a minute
    LOCKED_ALL = "locked-all"  # too many wrong codes from everywhere: the global cap
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


@dataclass(frozen=True, slots=True)
class Throttle:
    """Wrong codes counted for one source, or for everyone (`since_ms`: a source's last
    wrong code; for everyone, when the current minute of counting began)."""

    wrong: int = 0
    locked_until_ms: int = 0
    since_ms: int = 0


def source_group(host: str) -> str:
    """Whom wrong codes are counted against: an IPv4 address (also written IPv4-mapped
    in IPv6), or the /64 an IPv6 address is in (a host picks its own addresses inside
    its /64, as many as it likes). Anything else counts as itself."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"other {host[:64]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def sign_in_verdict(
    code: StoredCode | None, *, source: Throttle, everyone: Throttle, now_ms: int
) -> Verdict:
    """Whether a typed code opens a session. The lockouts come first: while one lasts
    even the right code is refused, so guessing learns nothing."""
    if now_ms < source.locked_until_ms:
        return Verdict.LOCKED
    if now_ms < everyone.locked_until_ms:
        return Verdict.LOCKED_ALL
    if code is None:
        return Verdict.WRONG
    if code.used_ms is not None:
        return Verdict.USED
    if now_ms >= code.expires_ms:
        return Verdict.EXPIRED
    return Verdict.OK


def after_wrong(source: Throttle, everyone: Throttle, now_ms: int) -> tuple[Throttle, Throttle]:
    """The source's and everyone's counts after one more wrong code. A source locks at
    its fifth (and starts counting again); everyone locks at the GLOBAL_MAX_WRONG-th
    within a minute."""
    wrong = 0 if now_ms - source.since_ms >= FORGET_WRONG_MS else source.wrong
    wrong += 1
    if wrong >= MAX_WRONG_CODES:
        source = Throttle(0, now_ms + LOCKOUT_MS, now_ms)
    else:
        source = Throttle(wrong, source.locked_until_ms, now_ms)
    if now_ms - everyone.since_ms >= GLOBAL_WINDOW_MS:
        everyone = Throttle(0, everyone.locked_until_ms, now_ms)
    if everyone.wrong + 1 >= GLOBAL_MAX_WRONG:
        everyone = Throttle(0, now_ms + LOCKOUT_MS, now_ms)
    else:
        everyone = Throttle(everyone.wrong + 1, everyone.locked_until_ms, everyone.since_ms)
    return source, everyone


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
        """A fresh one-time code and when it expires. The older unused codes are retired
        (only the newest works); used ones are kept until they expire, to say so."""
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        expires = now_ms + CODE_TTL_MS
        with self._lock, transaction(self._conn) as cur:
            cur.execute("DELETE FROM codes WHERE used_ms IS NULL OR expires_ms < ?", (now_ms,))
            cur.execute("INSERT INTO codes VALUES (?, ?, ?, NULL)", (_hash(code), now_ms, expires))
        return code, expires

    def sign_in(
        self, typed: str, *, now_ms: int, client: str, source: str
    ) -> tuple[Verdict, NewSession | None]:
        """Exchange a code for a session, using the code up; or say why not. `source` is
        the `source_group` of the client's address."""
        code_hash = _hash(normalize_code(typed))
        with self._lock, transaction(self._conn) as cur:
            mine, everyone = self._throttle(cur, source), self._throttle(cur, EVERYONE)
            found = cur.execute(
                "SELECT expires_ms, used_ms FROM codes WHERE code_hash = ?", (code_hash,)
            ).fetchone()
            stored = None if found is None else StoredCode(int(found[0]), found[1])
            verdict = sign_in_verdict(stored, source=mine, everyone=everyone, now_ms=now_ms)
            if verdict in (Verdict.LOCKED, Verdict.LOCKED_ALL):
                return verdict, None  # not counted: a locked source's codes are not read
            if verdict is not Verdict.OK:
                mine, everyone = after_wrong(mine, everyone, now_ms)
                # Sources nobody has heard from for an hour (and not locked) are forgotten,
                # so the table stays small however many addresses a guesser uses.
                cur.execute(
                    "DELETE FROM code_throttle WHERE since_ms < ? AND locked_until_ms < ?",
                    (now_ms - FORGET_WRONG_MS, now_ms),
                )
                for name, row in ((source, mine), (EVERYONE, everyone)):
                    cur.execute(
                        "INSERT OR REPLACE INTO code_throttle VALUES (?, ?, ?, ?)",
                        (name, row.wrong, row.locked_until_ms, row.since_ms),
                    )
                return verdict, None
            cur.execute("UPDATE codes SET used_ms = ? WHERE code_hash = ?", (now_ms, code_hash))
            cur.execute("DELETE FROM code_throttle WHERE source = ?", (source,))
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

    @staticmethod
    def _throttle(cur: sqlite3.Cursor, source: str) -> Throttle:
        row = cur.execute(
            "SELECT wrong, locked_until_ms, since_ms FROM code_throttle WHERE source = ?",
            (source,),
        ).fetchone()
        return Throttle() if row is None else Throttle(int(row[0]), int(row[1]), int(row[2]))

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
