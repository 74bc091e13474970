"""The shared SQLite helpers: committed work stays, failed work rolls back."""

from pathlib import Path

import pytest

from foundation.durable import open_durable, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY);"


def test_commit_rollback_and_rowcount(tmp_path: Path) -> None:
    conn = open_durable(tmp_path / "d.sqlite", schema=SCHEMA)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with transaction(conn) as cur:
        cur.execute("INSERT INTO t VALUES ('a')")
    assert cur.rowcount == 1  # still readable after the commit
    with pytest.raises(RuntimeError), transaction(conn) as cur:
        cur.execute("INSERT INTO t VALUES ('b')")
        raise RuntimeError("crash mid-transaction")
    conn.close()
    again = open_durable(tmp_path / "d.sqlite", schema=SCHEMA)
    assert [row[0] for row in again.execute("SELECT k FROM t")] == ["a"]
