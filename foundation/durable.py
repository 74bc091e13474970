"""SQLite files that a power cut at any instant cannot corrupt, shared by the buffer's
index, the daemon's state and the share outbox: WAL journal, synchronous=FULL (a
committed transaction is on disk), autocommit with explicit IMMEDIATE transactions, and
waiting on other processes' locks instead of failing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_durable(path: Path, *, schema: str, timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open (creating it and its schema if needed) a database for writing, from any thread
    of this process; callers serialise their own use of the connection."""
    conn = sqlite3.connect(
        str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(schema)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. The cursor is the
    caller's alone, so its rowcount still holds after the commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn.cursor()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
