"""Reading and checking the audit log (protocol.md §7): pure functions over its bytes.

The file format is described in device.audit. `verify_audit` proves the chain and the
signed head and names the first broken entry; `read_audit` returns the entries for
display.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foundation.errors import TimeFormatError
from foundation.times import parse_time
from sync.anchor import GENESIS_CHAIN, AuditHead, chain_step, recent_of
from sync.keys import b64url_decode

GENESIS = "0" * 64  # the `prev` of entry 1
HEAD_CONTEXT = b"doorbell-audit-head\n"
_ENTRY_KEYS = ("seq", "at", "event", "fields", "prev")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    event: str
    fields: dict[str, Any]
    prev: str
    sha256: str  # e_i: the SHA-256 of the stored line


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
    # The head is a valid protocol 1.0 head of this chain (see `_legacy_head`): the
    # daemon upgrades it to the 1.1 form when it starts.
    legacy: bool = False


def head_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def head_message(entries: int, sha256: str) -> bytes:
    """The exact bytes the head signature covers."""
    return HEAD_CONTEXT + str(entries).encode("ascii") + b"\n" + sha256.encode("ascii")


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
    values: tuple[bytes, ...] = (GENESIS_CHAIN,)  # h_0 .. h_n of the intact entries

    def head(self, entries: int | None = None) -> AuditHead:
        """The head after `entries` entries (all intact ones by default)."""
        n = len(self.entries) if entries is None else entries
        return AuditHead(n, self.values[n].hex(), recent_of([e.sha256 for e in self.entries[:n]]))


def _walk_chain(lines: list[bytes]) -> _Chain:
    entries: list[AuditEntry] = []
    values = [GENESIS_CHAIN]
    prev = GENESIS

    def broken(at: int, problem: str) -> _Chain:
        return _Chain(entries, at, problem, tuple(values))

    for index, line in enumerate(lines):
        expected = index + 1
        parsed = _parse_entry(line)
        if isinstance(parsed, str):
            return broken(expected, f"entry {expected} {parsed}")
        if parsed.seq != expected:
            return broken(
                expected,
                f"line {expected} holds entry {parsed.seq}: entries were deleted, inserted "
                "or reordered",
            )
        if parsed.prev != prev:
            if expected == 1:
                return broken(1, "entry 1 does not start the chain")
            return broken(
                expected - 1,
                f"entry {expected - 1} does not match the hash entry {expected} records "
                f"(entry {expected - 1} was edited, or the link in entry {expected})",
            )
        entries.append(parsed)
        values.append(chain_step(values[-1], bytes.fromhex(parsed.sha256)))
        prev = parsed.sha256
    return _Chain(entries, values=tuple(values))


@dataclass(frozen=True, slots=True)
class _SignedHead:
    entries: int | None
    sha256: str | None
    problem: str | None


def _check_head(raw: bytes | None, public_key: Ed25519PublicKey) -> _SignedHead:
    if raw is None:
        return _SignedHead(None, None, "the signed head file is missing")
    try:
        doc = json.loads(raw.decode("utf-8"))
        entries, sha, sig = doc["entries"], doc["sha256"], b64url_decode(doc["sig"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        return _SignedHead(None, None, "the signed head file is malformed")
    if (
        not isinstance(entries, int)
        or isinstance(entries, bool)
        or entries < 0
        or not isinstance(sha, str)
        or _HEX64.fullmatch(sha) is None
    ):
        return _SignedHead(None, None, "the signed head file is malformed")
    try:
        public_key.verify(sig, head_message(entries, sha))
    except InvalidSignature:
        return _SignedHead(None, None, "the head signature does not verify (head rewritten?)")
    return _SignedHead(entries, sha, None)


def _legacy_head(chain: _Chain, vouched: int, sha256: str) -> bool:
    """Is a verified head `(vouched, sha256)` the protocol 1.0 head of this intact chain?

    Revision 1.0 signed the hash e_n of the last entry instead of the chain value h_n
    (same file, same signed message). Since every entry's line holds the hash of the one
    before, e_n commits to the whole history up to n just as h_n does, so such a head
    vouches for the same entries and can be re-signed in the 1.1 form without trusting
    anything the signature did not cover. Only the whole log (n = all entries), or all
    but one (an append whose head a power cut lost, as in 1.1), qualify."""
    count = len(chain.entries)
    if chain.problem is not None or vouched not in (count, count - 1) or vouched < 1:
        return False
    return chain.entries[vouched - 1].sha256 == sha256


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
        return AuditReport(False, len(lines), chain.broken_at, chain.problem, None, torn)
    if signed.entries is None or signed.sha256 is None:
        return AuditReport(False, count, None, signed.problem, None, torn)
    vouched = signed.entries
    if vouched > count:
        return AuditReport(
            False,
            count,
            count + 1,
            f"the log ends at entry {count} but the signed head vouches for {vouched} "
            "(entries cut off the end)",
            None,
            torn,
        )
    head = chain.head(vouched)
    if head.sha256 != signed.sha256 and _legacy_head(chain, vouched, signed.sha256):
        return AuditReport(
            False,
            count,
            None,
            f"the signed head of {vouched} entries is in the protocol 1.0 form (it names "
            "the last entry's hash, not the chain value); doorbelld upgrades it when it starts",
            None,
            torn,
            legacy=True,
        )
    if head.sha256 != signed.sha256:
        return AuditReport(
            False,
            count,
            max(vouched, 1),
            f"the chain up to entry {vouched} does not match the signed head",
            None,
            torn,
        )
    if vouched < count:
        return AuditReport(
            False,
            count,
            vouched + 1,
            f"entries after {vouched} are not covered by the signed head (written just "
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
