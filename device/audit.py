"""The audit log (protocol.md §7): append-only, hash-chained, with a signed head.

Owns two files in the state directory:

* ``audit.jsonl`` (the path given to `AuditLog.open`): one entry per line, compact JSON
  with exactly the keys ``seq`` (1, 2, 3, ...), ``at`` (RFC 3339 UTC), ``event``,
  ``fields`` and ``prev``. ``prev`` is the SHA-256 (lowercase hex) of the previous
  entry's exact line bytes *without* the trailing newline; the first entry's ``prev``
  is 64 zeros. An entry's own hash is the SHA-256 of its line bytes, so a verifier
  checks the bytes on disk, never a re-serialisation.
* ``audit.jsonl.head``: ``{"v": 1, "entries": n, "sha256": hex, "kid": kid, "sig": b64url}``
  where ``sha256`` is the chain value h_n of protocol.md §7 (``h_i = SHA-256(h_{i-1} ||
  e_i)``, e_i the hash of entry i's line, h_0 32 zero bytes; sync.anchor) and ``sig`` is
  the device's Ed25519 signature over the bytes
  ``b"doorbell-audit-head\\n" + ascii(decimal n) + b"\\n" + ascii(hex)`` (no trailing
  newline). It is rewritten after every append (temp file, fsync, rename, fsync of the
  directory), so editing, deleting, reordering or inserting entries, or cutting off the
  tail, is detectable on the device; the same head, with the entry hashes of the last 32
  entries, travels to the owner in every sealed message, so the owner's app can check
  that each new head extends the one it saw before.

Durability: an entry is fsynced before the head is signed. A power cut can therefore
lose only what was not yet synced: a torn final line (no newline), which `AuditLog.open`
truncates away, and the rejection counts of the current minute, which are held in memory
(`count_rejection`) so that a flood of junk writes a handful of lines rather than one per
message. An entry that reached the disk but whose head was not yet rewritten is signed on
the next open.

A head written by protocol revision 1.0 names e_n, the hash of entry n, instead of the
chain value h_n (same file, same signed message). `open` upgrades it: when its signature
verifies and e_n is the hash of the last entry of an intact chain (or of the one before
it, an append a power cut interrupted), it signs the 1.1 head of that chain, logs one
line and appends ``audit_upgraded`` (the revision, n and e_n). Anything else that does
not verify is still set aside as below.

A brand-new log gets its empty head (n = 0) when it is created, so a head file that is
missing while entries exist is never mistaken for a first start. If the files on disk do
not extend the signed head (edited, cut, head deleted), `open` never signs over them: it
moves both files aside (``*.broken-<ms>``) as evidence and starts a new chain whose first
entry is ``audit_reset``, which the owner's app sees as a head that does not extend.

The module is split by job: device.audit_fields (the guard that keeps contact details and
key material out), device.audit_verify (pure reading and checking), device.audit_render
(what the CLI prints) and this writer.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.audit_fields import AuditError, clean_fields
from device.audit_render import render_audit_table, render_report, render_verify_report
from device.audit_verify import (
    GENESIS,
    AuditEntry,
    AuditReport,
    _Chain,
    _inspect,
    _line_hash,
    _parse_entry,
    _read_optional,
    _split,
    _walk_chain,
    head_message,
    head_path_for,
    read_audit,
    verify_audit,
)
from foundation.clock import Clock, SystemClock
from foundation.times import format_time
from foundation.wire import AUDIT_RECENT
from sync.anchor import AuditHead, chain_step
from sync.keys import SigningKey, b64url_encode

__all__ = [
    "AuditEntry",
    "AuditError",
    "AuditHead",
    "AuditLog",
    "AuditReport",
    "read_audit",
    "read_entries",
    "render_audit_table",
    "render_report",
    "render_verify_report",
    "verify_audit",
]

logger = logging.getLogger(__name__)

_MINUTE_MS = 60_000
read_entries = read_audit


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Rejections:
    minute: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


class AuditLog:
    """The device's audit log. Thread-safe: the intake worker, the uploader and the
    control socket append from different threads."""

    def __init__(
        self,
        path: Path,
        signer: SigningKey,
        clock: Clock,
        fd: int,
        size: int,
        head: AuditHead,
        last_entry: str = GENESIS,
    ) -> None:
        self._path = path
        self._head_path = head_path_for(path)
        self._signer = signer
        self._clock = clock
        self._fd: int | None = fd
        self._size = size
        self._head = head
        self._last_entry = last_entry  # e_n: the next entry's `prev`
        self._lock = threading.RLock()
        self._rejections = _Rejections()

    @classmethod
    def open(cls, path: Path, signer: SigningKey, *, clock: Clock | None = None) -> AuditLog:
        """Open (or create) the log, recovering from a power cut; see the module docstring."""
        clock = clock or SystemClock()
        path.parent.mkdir(parents=True, exist_ok=True)
        head_path = head_path_for(path)
        data = _read_optional(path) or b""
        head_raw = _read_optional(head_path)
        brand_new = not data and head_raw is None
        lines, torn = _split(data)
        if torn:
            keep = len(data) - len(data.split(b"\n")[-1])
            logger.warning("audit log: dropping a torn final line (power cut during an append)")
            with open(path, "r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
            data = data[:keep]
        report = _inspect(data, head_raw, signer.public)
        chain = _walk_chain(lines)
        signed = report.head
        # An append reached the disk but its head did not: finish that append. (A brand-new
        # log gets its empty head at once, below, so this never hides a missing head file.)
        interrupted = (
            not report.ok
            and chain.problem is None
            and signed is not None
            and report.first_broken == signed.entries + 1
            and report.entries == signed.entries + 1
        )
        kept_as: str | None = None
        upgraded = report.legacy
        if upgraded:
            # Verified above: the head is this chain's protocol 1.0 head. Re-sign it in
            # the 1.1 form rather than report a reset the owner would take for tampering.
            logger.info(
                "audit log: upgraded its protocol 1.0 head (%d entries, verified) to the "
                "1.1 chain value",
                report.entries,
            )
        elif interrupted:
            logger.info("audit log: signing the head of an append a power cut interrupted")
        elif not report.ok and not brand_new:
            # Edited, cut, or its head file missing while entries exist: never re-sign it.
            kept_as = f"{path.name}.broken-{clock.wall_ms()}"
            for src in (path, head_path):
                if src.exists():
                    os.replace(src, src.with_name(src.name.replace(path.name, kept_as, 1)))
            logger.error(
                "audit log does not extend its signed head (%s); kept it as %s and started a "
                "new chain",
                report.problem,
                kept_as,
            )
            chain = _Chain([])
            data = b""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        last = chain.entries[-1].sha256 if chain.entries else GENESIS
        log = cls(path, signer, clock, fd, len(data), chain.head(), last)
        if kept_as is not None:
            log._write_head()
            log.append(
                "audit_reset",
                {
                    "reason": report.problem,
                    "previous_entries": report.entries,
                    "first_broken": report.first_broken,
                    "kept_as": kept_as,
                },
            )
        elif upgraded:
            log._write_head()
            log.append(
                "audit_upgraded",
                {"from_revision": "1.0", "entries": report.entries, "entry_sha256": last},
            )
        elif interrupted or brand_new:
            log._write_head()
        return log

    # -- writing

    def append(self, event: str, fields: Mapping[str, Any]) -> AuditHead:
        """Append one entry (fsynced) and sign the new head; returns that head."""
        cleaned = clean_fields(fields)
        if not isinstance(event, str) or not event:
            raise AuditError("an audit event needs a name")
        with self._lock:
            now_ms = self._clock.wall_ms()
            self._flush_rejections(now_ms, force=False)
            return self._append_locked(event, cleaned, now_ms)

    def count_rejection(self, reason: str, now_ms: int) -> None:
        """Count a message rejected before its signature verified (or a replay). Cheap:
        nothing is written until the minute ends (then one entry per reason)."""
        reason = str(reason)[:64]
        with self._lock:
            minute = now_ms // _MINUTE_MS
            if self._rejections.minute is not None and self._rejections.minute != minute:
                self._flush_rejections(now_ms, force=True)
            self._rejections.minute = minute
            self._rejections.counts[reason] = self._rejections.counts.get(reason, 0) + 1

    def flush(self, now_ms: int, *, force: bool = False) -> None:
        """Write the counts of a minute that has ended (all of them when `force`, as at
        shutdown). Call it from a housekeeping loop so a quiet spell still writes them."""
        with self._lock:
            self._flush_rejections(now_ms, force=force)

    def close(self, now_ms: int | None = None) -> None:
        with self._lock:
            if self._fd is None:
                return
            self._flush_rejections(self._clock.wall_ms() if now_ms is None else now_ms, force=True)
            os.close(self._fd)
            self._fd = None

    def _flush_rejections(self, now_ms: int, *, force: bool) -> None:
        pending = self._rejections
        if pending.minute is None or not pending.counts:
            return
        if not force and now_ms // _MINUTE_MS == pending.minute:
            return
        minute_text = format_time(pending.minute * _MINUTE_MS)
        counts = sorted(pending.counts.items())
        self._rejections = _Rejections()
        for reason, count in counts:
            self._append_locked(
                "rejections", {"reason": reason, "count": count, "minute": minute_text}, now_ms
            )

    def _append_locked(self, event: str, fields: dict[str, Any], now_ms: int) -> AuditHead:
        if self._fd is None:
            raise AuditError("the audit log is closed")
        doc = {
            "seq": self._head.entries + 1,
            "at": format_time(now_ms),
            "event": event,
            "fields": fields,
            "prev": self._last_entry,
        }
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            os.write(self._fd, line + b"\n")
            os.fsync(self._fd)
        except OSError as exc:
            # A partial line would break every later entry's link: cut it off again.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                logger.exception("audit log: cannot cut off a failed append")
            raise AuditError(f"cannot append to the audit log: {exc.strerror}") from exc
        self._size += len(line) + 1
        entry = _line_hash(line)
        value = chain_step(bytes.fromhex(self._head.sha256), bytes.fromhex(entry))
        recent = (*self._head.recent, entry)[-AUDIT_RECENT:]
        self._head = AuditHead(self._head.entries + 1, value.hex(), recent)
        self._last_entry = entry
        self._write_head()
        return self._head

    def _write_head(self) -> None:
        head = self._head
        sig = self._signer.sign(head_message(head.entries, head.sha256))
        doc = {
            "v": 1,
            "entries": head.entries,
            "sha256": head.sha256,
            "kid": self._signer.kid,
            "sig": b64url_encode(sig),
        }
        tmp = self._head_path.with_name(self._head_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._head_path)
        _fsync_dir(self._head_path.parent)

    # -- reading

    def head(self) -> AuditHead:
        with self._lock:
            return self._head

    def entries(self) -> Iterator[AuditEntry]:
        with self._lock, open(self._path, "rb") as handle:
            data = handle.read(self._size)
        lines, _torn = _split(data)
        for line in lines:
            parsed = _parse_entry(line)
            if isinstance(parsed, AuditEntry):
                yield parsed

    def request_events(self) -> set[tuple[str, str]]:
        """(event, rfa_id) of every entry that names a request: start-up's way to tell
        whether a state's entry was written before a crash (device.state's marks)."""
        return {
            (entry.event, entry.fields["rfa_id"])
            for entry in self.entries()
            if isinstance(entry.fields.get("rfa_id"), str)
        }

    @property
    def path(self) -> Path:
        return self._path
