"""The rolling buffer: segment files plus an SQLite index of them, and pins.

Layout under `root`: the segment files (recorder/segment_file.py: their names, `.part`
while written, and what is in them), `index.sqlite3` (WAL mode, synchronous=FULL) and
`recorder.lock` (held by the one process that records).

Each index row keeps the segment's frame table (where each frame's sample is in the
file) and the stream's avcC extradata. Export reads samples straight from those
offsets, so it never re-probes hundreds of files.

Power-cut safety: a segment file is complete and fsynced before it is renamed, and its
row is committed after the rename. Reconciliation (at open, by the lock holder) deletes
`.part` files, drops rows whose file is gone or has the wrong size, and re-indexes
complete files that have no row (their `synchronized` flag is then unknown, so False).
Deleting goes row first, then file, so a crash leaves at worst a file to re-index.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from foundation.durable import open_durable, transaction
from foundation.errors import BufferLockedError, LockHeldError, RecorderError
from foundation.files import FileLock, private_dir
from foundation.times import Window
from recorder.retention import Pin, deletions, pinned_spans, protected_ids
from recorder.segment_file import FrameTable, complete_files, incomplete_files, probe
from recorder.settings import RetentionLimits

logger = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
LOCK_NAME = "recorder.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    synchronized INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    fps REAL NOT NULL,
    preset TEXT NOT NULL,
    extradata BLOB NOT NULL,
    frame_table BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_start ON segments(start_ms);
CREATE INDEX IF NOT EXISTS segments_end ON segments(end_ms);
CREATE TABLE IF NOT EXISTS pins (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pin_id TEXT NOT NULL UNIQUE,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
);
"""

# Two running figures of the segments, kept by triggers in the transaction that adds or
# drops a row: their total size (retention after each segment need not sum the whole
# table) and the longest one's span, an upper bound that turns "segments overlapping a
# window" into a range of the start_ms index (a segment overlapping [a, b] starts in
# [a - longest, b]) instead of a scan from the oldest row. Created and first filled in
# one transaction, so an index made before them starts from the right figures.
_TOTALS = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    bytes INTEGER NOT NULL,
    longest_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (one, bytes, longest_ms)
    SELECT 1, COALESCE(SUM(bytes), 0), COALESCE(MAX(end_ms - start_ms), 0) FROM segments
    WHERE NOT EXISTS (SELECT 1 FROM totals);
CREATE TRIGGER IF NOT EXISTS totals_add AFTER INSERT ON segments BEGIN
    UPDATE totals SET bytes = bytes + NEW.bytes,
        longest_ms = MAX(longest_ms, NEW.end_ms - NEW.start_ms);
END;
CREATE TRIGGER IF NOT EXISTS totals_drop AFTER DELETE ON segments BEGIN
    UPDATE totals SET bytes = bytes - OLD.bytes;
END;
CREATE TRIGGER IF NOT EXISTS totals_change AFTER UPDATE ON segments BEGIN
    UPDATE totals SET bytes = bytes - OLD.bytes + NEW.bytes,
        longest_ms = MAX(longest_ms, NEW.end_ms - NEW.start_ms);
END;
COMMIT;
"""


@dataclass(frozen=True, slots=True)
class Segment:
    """A complete segment file. start_ms/end_ms are the capture times of its first and
    last frame; `synchronized` is True when every frame was captured while the clock was
    known to be right."""

    id: int
    file: str
    start_ms: int
    end_ms: int
    frames: int
    bytes: int
    synchronized: bool
    width: int
    height: int
    fps: float


class BufferLock(FileLock):
    """The exclusive right to write a buffer: a FileLock on `recorder.lock`."""

    def __init__(self, root: Path) -> None:
        super().__init__(Path(root) / LOCK_NAME)

    def acquire(self) -> Self:
        try:
            return super().acquire()
        except LockHeldError:
            raise BufferLockedError(
                f"another recorder is writing to {self.path.parent} (the daemon?); stop it first"
            ) from None


def connect_index(root: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the buffer's index. Other processes (the daemon pinning, an
    export) share the file, so every connection waits on locks instead of failing."""
    path = Path(root) / INDEX_NAME
    if readonly:
        if not path.exists():
            raise RecorderError(f"no footage index at {root}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    return open_durable(path, schema=_SCHEMA + _TOTALS)


_SELECT_SEGMENTS = (
    "SELECT id, file, start_ms, end_ms, frames, bytes, synchronized, width, height, fps "
    "FROM segments"
)


def _segment(row: Sequence[object]) -> Segment:
    return Segment(
        id=int(row[0]),  # type: ignore[call-overload]
        file=str(row[1]),
        start_ms=int(row[2]),  # type: ignore[call-overload]
        end_ms=int(row[3]),  # type: ignore[call-overload]
        frames=int(row[4]),  # type: ignore[call-overload]
        bytes=int(row[5]),  # type: ignore[call-overload]
        synchronized=bool(row[6]),
        width=int(row[7]),  # type: ignore[call-overload]
        height=int(row[8]),  # type: ignore[call-overload]
        fps=float(row[9]),  # type: ignore[arg-type]
    )


def query_segments(conn: sqlite3.Connection, window: Window | None) -> list[Segment]:
    if window is None:
        rows = conn.execute(_SELECT_SEGMENTS + " ORDER BY start_ms, id")
    else:
        (longest,) = conn.execute("SELECT longest_ms FROM totals").fetchone()
        rows = conn.execute(
            _SELECT_SEGMENTS + " WHERE start_ms BETWEEN ? AND ? AND end_ms >= ? "
            "ORDER BY start_ms, id",
            (window.start_ms - int(longest), window.end_ms, window.start_ms),
        )
    return [_segment(r) for r in rows]


def newest_segment(conn: sqlite3.Connection) -> Segment | None:
    """The segment that ends last (the latest footage), or None in an empty buffer."""
    row = conn.execute(_SELECT_SEGMENTS + " ORDER BY end_ms DESC, id DESC LIMIT 1").fetchone()
    return None if row is None else _segment(row)


def query_tables(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, FrameTable]:
    tables: dict[int, FrameTable] = {}
    select = "SELECT id, extradata, preset, frame_table FROM segments"
    for seg_id, extradata, preset, blob in _rows_by_id(conn, select, ids):
        tables[int(seg_id)] = FrameTable.from_blob(bytes(extradata), bytes(blob), str(preset))
    return tables


def _rows_by_id(conn: sqlite3.Connection, select: str, ids: Sequence[int]) -> Iterator[Any]:
    """Rows of `select` (a SELECT ... FROM segments) whose id is in `ids`, in batches
    below SQLite's limit on parameters."""
    for chunk in range(0, len(ids), 500):
        part = list(ids[chunk : chunk + 500])
        marks = ",".join("?" * len(part))
        # Only "?" placeholders are formatted in; the ids travel as parameters.
        yield from conn.execute(f"{select} WHERE id IN ({marks})", part)


def read_tables(root: Path, ids: Sequence[int]) -> dict[int, FrameTable]:
    """The frame tables of segments `ids`, through a read-only connection of its own."""
    conn = connect_index(root, readonly=True)
    try:
        return query_tables(conn, ids)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class BufferSummary:
    span: tuple[int, int] | None  # (first, last) capture time held
    bytes: int


def read_summary(root: Path) -> BufferSummary:
    """Span and size, read-only: safe for a CLI run by another user (root) while the
    service owns the files, since it creates and changes nothing."""
    path = Path(root) / INDEX_NAME
    if not path.exists():
        return BufferSummary(span=None, bytes=0)
    if Path(f"{path}-wal").exists():  # a recorder runs (or crashed): read through its WAL
        conn = connect_index(root, readonly=True)
    else:  # fully checkpointed and nobody writes: read without creating -wal/-shm files
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        lo, hi, total = conn.execute(
            "SELECT MIN(start_ms), MAX(end_ms), COALESCE(SUM(bytes), 0) FROM segments"
        ).fetchone()
    finally:
        conn.close()
    return BufferSummary(span=None if lo is None else (int(lo), int(hi)), bytes=int(total))


class RollingBuffer:
    """The index of the segment files under `root`, pins and retention. Safe to use from
    several processes at once (SQLite WAL with busy timeouts); one of them records."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = Path(root)
        self._conn = conn
        self._lock = threading.RLock()
        self._writer: BufferLock | None = None  # held while this process records

    @classmethod
    def open(cls, root: Path, *, reconcile: bool = True) -> RollingBuffer:
        """Open (creating) the buffer. Reconciles the index with the files when no
        recorder holds the buffer; a running recorder reconciled when it started."""
        root = Path(root)
        private_dir(root)  # footage: its owner's alone, whatever the umask
        buffer = cls(root, connect_index(root))
        if reconcile:
            try:
                buffer.claim_writing()
            except BufferLockedError:
                return buffer
            try:
                buffer.reconcile()
            finally:
                buffer.release_writing()
        return buffer

    def claim_writing(self) -> None:
        """Become the buffer's one writer: BufferLockedError (one line) while another
        process is. Segments can only be written, and the folder reconciled, in between
        this and `release_writing` (or this process's death, which frees it too)."""
        if self._writer is None:
            self._writer = BufferLock(self.root).acquire()

    def release_writing(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def require_writer(self) -> None:
        """Refuse to write without the writer lock: a second writer would race the first
        for the index and delete the `.part` it is writing."""
        if self._writer is None:
            raise RecorderError(f"not the writer of {self.root}: claim_writing() first")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self.release_writing()

    def __enter__(self) -> RollingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, transaction(self._conn) as cursor:
            yield cursor

    # ---- segments -------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the index and the files agree. Only the holder of the BufferLock may call
        this: it deletes `.part` files, which a running recorder is writing."""
        self.require_writer()
        for part in incomplete_files(self.root):
            logger.info("removing incomplete segment %s", part.name)
            part.unlink(missing_ok=True)
        with self._lock:
            rows = self._conn.execute("SELECT id, file, bytes FROM segments").fetchall()
        indexed: dict[str, tuple[int, int]] = {str(f): (int(i), int(b)) for i, f, b in rows}
        stale: list[int] = []
        for name, (seg_id, size) in indexed.items():
            try:
                actual = (self.root / name).stat().st_size
            except FileNotFoundError:
                actual = -1
            if actual != size:
                stale.append(seg_id)
        if stale:
            logger.warning("dropping %d index rows whose files are gone or changed", len(stale))
            with self._transaction() as conn:
                conn.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in stale])
            indexed = {n: v for n, v in indexed.items() if v[0] not in stale}
        for path in complete_files(self.root):
            if path.name in indexed:
                continue
            try:
                table, width, height, fps = probe(path)
            except Exception as exc:  # unreadable leftovers of a crash are dropped
                logger.warning("removing unreadable segment %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            logger.info("re-indexing segment %s", path.name)
            # its `synchronized` is unknown after a crash, so not claimed
            self.add_segment(
                file=path.name, table=table, synchronized=False, width=width, height=height, fps=fps
            )

    def add_segment(
        self,
        *,
        file: str,
        table: FrameTable,
        synchronized: bool,
        width: int,
        height: int,
        fps: float,
    ) -> Segment:
        """Index a complete segment file (already renamed into place and fsynced)."""
        if not len(table):
            raise RecorderError("a segment must hold frames")
        size = (self.root / file).stat().st_size
        values = (
            file,
            table.times[0],
            table.times[-1],
            len(table),
            size,
            int(synchronized),
            width,
            height,
            float(fps),
            table.preset,
            table.extradata,
            table.to_blob(),
        )
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO segments (file, start_ms, end_ms, frames, bytes, synchronized, "
                "width, height, fps, preset, extradata, frame_table) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                values,
            )
            seg_id = cur.lastrowid
        assert seg_id is not None
        return Segment(seg_id, *values[:9])  # type: ignore[arg-type]

    def segments(self, window: Window | None = None) -> list[Segment]:
        """Segments overlapping `window` (all when None), oldest first."""
        with self._lock:
            return query_segments(self._conn, window)

    def frame_tables(self, ids: Sequence[int]) -> dict[int, FrameTable]:
        with self._lock:
            return query_tables(self._conn, ids)

    def span(self) -> tuple[int, int] | None:
        """(first, last) capture time held, or None when empty."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(start_ms), MAX(end_ms) FROM segments").fetchone()
        lo, hi = row
        return None if lo is None else (int(lo), int(hi))

    def total_bytes(self) -> int:
        """The size of every indexed segment (the index's running total)."""
        with self._lock:
            (total,) = self._conn.execute("SELECT bytes FROM totals").fetchone()
        return int(total)

    def footage_ms(self, window: Window) -> int:
        """Milliseconds of recorded footage inside `window`: the overlap of each segment's
        [first frame, last frame] span with the window, summed."""
        total = 0
        for seg in self.segments(window):
            total += max(0, min(seg.end_ms, window.end_ms) - max(seg.start_ms, window.start_ms))
        return total

    def delete_segments(self, ids: Sequence[int]) -> list[Segment]:
        """Delete segments `ids` (those still indexed); returns them, oldest first."""
        with self._lock:
            rows = _rows_by_id(self._conn, _SELECT_SEGMENTS, ids)
            return self._drop(sorted((_segment(r) for r in rows), key=lambda s: (s.start_ms, s.id)))

    def enforce_retention(
        self, now_ms: int, limits: RetentionLimits, free_bytes: int
    ) -> list[Segment]:
        """Delete what the retention plan says; returns the deleted segments. Reads only
        the segments that could go (oldest first, until the plan stops) and those under
        live pins, never the whole index."""
        with self._lock:
            pins = self.pins()
            pinned = {s.id: s for w in pinned_spans(pins, now_ms) for s in self.segments(w)}
            protected = protected_ids(list(pinned.values()), pins, limits, now_ms)
            seen: dict[int, Segment] = {}
            query = _SELECT_SEGMENTS + " ORDER BY start_ms, id"
            with contextlib.closing(self._conn.execute(query)) as rows:
                plan = deletions(
                    _remembered((_segment(r) for r in rows), seen),
                    total_bytes=self.total_bytes(),
                    protected=protected,
                    limits=limits,
                    now_ms=now_ms,
                    free_bytes=free_bytes,
                )
            deleted = self._drop([seen[i] for i in plan])
        if deleted:
            logger.info(
                "retention deleted %d segments (%d bytes)",
                len(deleted),
                sum(s.bytes for s in deleted),
            )
        return deleted

    def _drop(self, doomed: list[Segment]) -> list[Segment]:
        """Rows first, then files: a crash in between leaves a file to re-index."""
        if doomed:
            with self._transaction() as conn:
                conn.executemany("DELETE FROM segments WHERE id = ?", [(s.id,) for s in doomed])
        for seg in doomed:
            (self.root / seg.file).unlink(missing_ok=True)
        return doomed

    # ---- pins -----------------------------------------------------------------------

    def pin(self, pin_id: str, window: Window, until_ms: int) -> Pin:
        """Keep the footage of `window` until `until_ms` (durable at return). Pinning an
        existing id moves its window and expiry but keeps its place in line."""
        if not pin_id or len(pin_id) > 256:
            raise RecorderError("pin id must be 1-256 characters")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO pins (pin_id, start_ms, end_ms, until_ms) VALUES (?,?,?,?) "
                "ON CONFLICT(pin_id) DO UPDATE SET start_ms = excluded.start_ms, "
                "end_ms = excluded.end_ms, until_ms = excluded.until_ms",
                (pin_id, window.start_ms, window.end_ms, until_ms),
            )
            (seq,) = conn.execute("SELECT seq FROM pins WHERE pin_id = ?", (pin_id,)).fetchone()
        return Pin(pin_id, window, until_ms, int(seq))

    def unpin(self, pin_id: str) -> bool:
        """Release a pin; False when there was none."""
        with self._transaction() as conn:
            cur = conn.execute("DELETE FROM pins WHERE pin_id = ?", (pin_id,))
        return cur.rowcount > 0

    def pins(self) -> list[Pin]:
        """Every pin, in the order they were made."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT pin_id, start_ms, end_ms, until_ms, seq FROM pins ORDER BY seq"
            ).fetchall()
        return [Pin(str(p), Window(int(s), int(e)), int(u), int(q)) for p, s, e, u, q in rows]


def _remembered(segments: Iterable[Segment], seen: dict[int, Segment]) -> Iterator[Segment]:
    """`segments`, each also kept in `seen` by id as it is read."""
    for seg in segments:
        seen[seg.id] = seg
        yield seg
