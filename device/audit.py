"""The audit log (protocol.md §7): append-only, hash-chained, with a signed head.

Owns two files in the state directory:

* ``audit.jsonl`` (the path given to `AuditLog.open`): one entry per line, compact JSON
  with exactly the keys ``seq`` (1, 2, 3, ...), ``at`` (RFC 3339 UTC), ``event``,
  ``fields`` and ``prev``. ``prev`` is the SHA-256 (lowercase hex) of the previous
  entry's exact line bytes *without* the trailing newline; the first entry's ``prev``
  is 64 zeros. An entry's own hash is the SHA-256 of its line bytes, so a verifier
  checks the bytes on disk, never a re-serialisation.
* ``audit.jsonl.head``: ``{"v": 1, "entries": n, "sha256": hex, "kid": kid, "sig": b64url}``
  where ``sha256`` is the hash of entry n (64 zeros for an empty log) and ``sig`` is the
  device's Ed25519 signature over the bytes
  ``b"doorbell-audit-head\\n" + ascii(decimal n) + b"\\n" + ascii(hex)`` (no trailing
  newline). It is rewritten after every append (temp file, fsync, rename, fsync of the
  directory), so editing, deleting, reordering or inserting entries, or cutting off the
  tail, is detectable on the device; the same ``{"entries", "sha256"}`` travels to the
  owner in every sealed message, which makes a rollback detectable off the device.

Durability: an entry is fsynced before the head is signed. A power cut can therefore
lose only what was not yet synced: a torn final line (no newline), which `AuditLog.open`
truncates away, and the rejection counts of the current minute, which are held in memory
(`count_rejection`) so that a flood of junk writes a handful of lines rather than one per
message. An entry that reached the disk but whose head was not yet rewritten is signed on
the next open.

If the files on disk do not extend the signed head (edited, cut, head deleted), `open`
never signs over them: it moves both files aside (``*.broken-<ms>``) as evidence and starts
a new chain whose first entry is ``audit_reset``, which the owner's anchor exposes.

Contact details and key material never appear: field names such as ``email`` or ``key``
are refused (a programming error), and values that look like an email address, an age
secret key or a PEM block are replaced by ``"[redacted]"`` (they may come from the
network, which must not be able to crash the log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation.clock import Clock, SystemClock
from foundation.errors import DoorbellError, TimeFormatError
from foundation.times import format_time, parse_time
from sync.keys import SigningKey, b64url_decode, b64url_encode

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_CONTEXT = b"doorbell-audit-head\n"
REDACTED = "[redacted]"
MAX_STRING = 512  # bounds a line's size whatever the network sends
_MINUTE_MS = 60_000
_ENTRY_KEYS = ("seq", "at", "event", "fields", "prev")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Field names are split on '_' / '-' and refused if any part is one of these.
FORBIDDEN_FIELD_WORDS = frozenset(
    {"email", "phone", "name", "address", "contact", "key", "secret", "identity", "password"}
)
# Flags that name a forbidden word but hold no contact detail themselves.
ALLOWED_FIELD_NAMES = frozenset({"share_contact"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


class AuditError(DoorbellError):
    """The audit log cannot be written, or a caller passed a forbidden field."""


@dataclass(frozen=True, slots=True)
class AuditHead:
    entries: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    event: str
    fields: dict[str, Any]
    prev: str
    sha256: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Result of `verify_audit`. `first_broken` is the seq (1-based, as in the table) of
    the first entry that cannot be trusted, or None when the log is intact or when the
    fault is the head itself (bad or missing signature)."""

    ok: bool
    entries: int
    first_broken: int | None
    problem: str | None
    head: AuditHead | None = None
    torn_tail: bool = False


def head_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def head_message(entries: int, sha256: str) -> bytes:
    """The exact bytes the head signature covers."""
    return HEAD_CONTEXT + str(entries).encode("ascii") + b"\n" + sha256.encode("ascii")


# ---------------------------------------------------------------- field guard


def _forbidden_name(name: str) -> bool:
    return any(part in FORBIDDEN_FIELD_WORDS for part in re.split(r"[_\-\s.]+", name.lower()))


def _looks_secret_or_contact(text: str) -> bool:
    upper = text.lstrip().upper()
    return (
        upper.startswith("AGE-SECRET-KEY")
        or "-----BEGIN" in upper
        or _EMAIL.search(text) is not None
    )


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise an entry's fields (see the module docstring)."""
    return {_clean_key(k): _clean_value(v) for k, v in fields.items()}


def _clean_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise AuditError("audit field names must be non-empty strings")
    if key not in ALLOWED_FIELD_NAMES and _forbidden_name(key):
        raise AuditError(f"audit field {key!r} could hold contact details or key material")
    return key


def _clean_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        if _looks_secret_or_contact(value):
            logger.warning("an audit field value looked like contact details or a key; redacted")
            return REDACTED
        return value[:MAX_STRING]
    if isinstance(value, Mapping):
        return clean_fields(value)
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):  # Window and friends
        return _clean_value(to_json())
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return _clean_value(value.value)
    raise AuditError(f"audit field value of type {type(value).__name__} is not allowed")


# ---------------------------------------------------------------- reading and checking


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _split(data: bytes) -> tuple[list[bytes], bool]:
    """Complete lines, and whether an unterminated (torn) final line was dropped."""
    parts = data.split(b"\n")
    torn = parts[-1] != b""
    return parts[:-1], torn


def _parse_entry(line: bytes) -> AuditEntry | str:
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is not valid JSON"
    if not isinstance(doc, dict) or tuple(doc) != _ENTRY_KEYS:
        return "does not have exactly the keys seq, at, event, fields, prev"
    seq, at, event, fields, prev = (doc[k] for k in _ENTRY_KEYS)
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "has a seq that is not an integer"
    if not isinstance(event, str) or not isinstance(fields, dict):
        return "has a malformed event or fields"
    if not isinstance(prev, str) or _HEX64.fullmatch(prev) is None:
        return "has a malformed prev hash"
    try:
        parse_time(at)
    except TimeFormatError:
        return "has a malformed time"
    return AuditEntry(seq, at, event, fields, prev, _line_hash(line))


@dataclass(frozen=True, slots=True)
class _Chain:
    entries: list[AuditEntry]
    broken_at: int | None = None  # seq of the first untrustworthy entry
    problem: str | None = None


def _walk_chain(lines: list[bytes]) -> _Chain:
    entries: list[AuditEntry] = []
    prev = GENESIS
    for index, line in enumerate(lines):
        expected = index + 1
        parsed = _parse_entry(line)
        if isinstance(parsed, str):
            return _Chain(entries, expected, f"entry {expected} {parsed}")
        if parsed.seq != expected:
            return _Chain(
                entries,
                expected,
                f"line {expected} holds entry {parsed.seq}: entries were deleted, inserted "
                "or reordered",
            )
        if parsed.prev != prev:
            if expected == 1:
                return _Chain(entries, 1, "entry 1 does not start the chain")
            return _Chain(
                entries,
                expected - 1,
                f"entry {expected - 1} does not match the hash entry {expected} records "
                f"(entry {expected - 1} was edited, or the link in entry {expected})",
            )
        entries.append(parsed)
        prev = parsed.sha256
    return _Chain(entries)


@dataclass(frozen=True, slots=True)
class _SignedHead:
    head: AuditHead | None
    problem: str | None


def _check_head(raw: bytes | None, public_key: Ed25519PublicKey) -> _SignedHead:
    if raw is None:
        return _SignedHead(None, "the signed head file is missing")
    try:
        doc = json.loads(raw.decode("utf-8"))
        entries, sha, sig = doc["entries"], doc["sha256"], b64url_decode(doc["sig"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        return _SignedHead(None, "the signed head file is malformed")
    if (
        not isinstance(entries, int)
        or isinstance(entries, bool)
        or entries < 0
        or not isinstance(sha, str)
        or _HEX64.fullmatch(sha) is None
    ):
        return _SignedHead(None, "the signed head file is malformed")
    try:
        public_key.verify(sig, head_message(entries, sha))
    except InvalidSignature:
        return _SignedHead(None, "the head signature does not verify (head rewritten?)")
    return _SignedHead(AuditHead(entries, sha), None)


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _inspect(data: bytes, head_raw: bytes | None, public_key: Ed25519PublicKey) -> AuditReport:
    lines, torn = _split(data)
    chain = _walk_chain(lines)
    count = len(chain.entries)
    signed = _check_head(head_raw, public_key)
    if chain.problem is not None:
        return AuditReport(False, len(lines), chain.broken_at, chain.problem, signed.head, torn)
    if signed.head is None:
        return AuditReport(False, count, None, signed.problem, None, torn)
    head = signed.head
    if head.entries > count:
        return AuditReport(
            False,
            count,
            count + 1,
            f"the log ends at entry {count} but the signed head vouches for {head.entries} "
            "(entries cut off the end)",
            head,
            torn,
        )
    vouched = GENESIS if head.entries == 0 else chain.entries[head.entries - 1].sha256
    if vouched != head.sha256:
        return AuditReport(
            False,
            count,
            max(head.entries, 1),
            f"entry {head.entries} does not match the signed head",
            head,
            torn,
        )
    if head.entries < count:
        return AuditReport(
            False,
            count,
            head.entries + 1,
            f"entries after {head.entries} are not covered by the signed head (written just "
            "before a power cut, or added without the device key); the daemon re-signs an "
            "interrupted append when it starts",
            head,
            torn,
        )
    return AuditReport(True, count, None, None, head, torn)


def verify_audit(path: Path, public_key: Ed25519PublicKey) -> AuditReport:
    """Prove the chain and the head signature; name the first broken entry.

    A torn final line (no newline) is not an entry: it was never signed. The head is read
    before and after the log so that an append racing with the check is not reported as
    tampering."""
    head_path = head_path_for(path)
    data = b""
    head_raw: bytes | None = None
    for _attempt in range(5):
        head_raw = _read_optional(head_path)
        data = _read_optional(path) or b""
        if _read_optional(head_path) == head_raw:
            break
    return _inspect(data, head_raw, public_key)


def read_audit(path: Path) -> list[AuditEntry]:
    """Entries as stored, for display; stops at the first line that does not parse."""
    lines, _torn = _split(_read_optional(path) or b"")
    out = []
    for line in lines:
        parsed = _parse_entry(line)
        if isinstance(parsed, str):
            break
        out.append(parsed)
    return out


# ---------------------------------------------------------------- the log


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
        self, path: Path, signer: SigningKey, clock: Clock, fd: int, size: int, head: AuditHead
    ) -> None:
        self._path = path
        self._head_path = head_path_for(path)
        self._signer = signer
        self._clock = clock
        self._fd: int | None = fd
        self._size = size
        self._head = head
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
        head = report.head
        interrupted = (
            head is not None
            and report.first_broken == head.entries + 1
            and report.entries == head.entries + 1
        )
        first_ever = head_raw is None and report.entries <= 1
        resign = not report.ok and chain.problem is None and (interrupted or first_ever)
        kept_as: str | None = None
        if resign:
            # An append reached the disk but its head did not: finish that append.
            logger.info("audit log: signing the head of an append a power cut interrupted")
        elif not report.ok:
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
        log = cls(path, signer, clock, fd, len(data), AuditHead(len(chain.entries), last))
        if kept_as is not None:
            log.append(
                "audit_reset",
                {
                    "reason": report.problem,
                    "previous_entries": report.entries,
                    "first_broken": report.first_broken,
                    "kept_as": kept_as,
                },
            )
        elif resign:
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
            "prev": self._head.sha256,
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
        self._head = AuditHead(self._head.entries + 1, _line_hash(line))
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

    @property
    def path(self) -> Path:
        return self._path


# ---------------------------------------------------------------- rendering for the CLI


def _describe(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return f"{value['start']}..{value['end']}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "-" if value is None else str(value)


def render_audit_table(entries: Iterable[AuditEntry]) -> str:
    """A readable table for `doorbellctl audit`; request ids are shown in full."""
    rows = [("SEQ", "AT", "EVENT", "REQUEST", "DETAILS")]
    for entry in entries:
        details = ", ".join(f"{k}={_describe(v)}" for k, v in entry.fields.items() if k != "rfa_id")
        rows.append(
            (
                str(entry.seq),
                entry.at,
                entry.event,
                _describe(entry.fields.get("rfa_id")),
                details,
            )
        )
    if len(rows) == 1:
        return "the audit log is empty\n"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def render_verify_report(report: AuditReport) -> str:
    """The text `doorbellctl audit --verify` prints (exit status: 0 when `report.ok`)."""
    if report.ok and report.head is not None:
        text = (
            f"audit log OK: {report.entries} entries, chain intact, head signature valid\n"
            f"head: entries={report.head.entries} sha256={report.head.sha256}\n"
        )
        if report.torn_tail:
            text += "note: a torn final line (an append cut by a power cut) is not an entry\n"
        return text
    where = (
        f"first broken entry: {report.first_broken}\n"
        if report.first_broken is not None
        else "first broken entry: unknown (the head itself is bad)\n"
    )
    return f"audit log BROKEN: {report.problem}\n{where}"


# Names the CLI uses.
read_entries = read_audit
render_report = render_verify_report
