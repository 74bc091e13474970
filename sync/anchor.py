"""The audit head as it travels to the owner (protocol.md §5.1, §7), written once for the
device (device.audit) and the owner's tool (cloud.owner).

Entry *i* of the audit log has the hash ``e_i`` (SHA-256 of its stored line) and the
chain value ``h_i = SHA-256(h_{i-1} || e_i)`` over the raw 32-byte values, ``h_0`` being
32 zero bytes. The head is ``(n, h_n, recent)``, where ``recent`` lists ``e_i`` of the
last 32 entries (fewer when the log is shorter), oldest first. An app that remembered an
earlier head can recompute the new ``h_n`` from the old one and the new entries' hashes:
that proves the new history *extends* the old one, which a count alone never could.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from foundation.wire import AUDIT_RECENT

GENESIS_CHAIN = bytes(32)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def chain_step(previous: bytes, entry_hash: bytes) -> bytes:
    """h_i from h_{i-1} and e_i (raw 32-byte values)."""
    return hashlib.sha256(previous + entry_hash).digest()


def chain_over(entry_hashes: Iterable[bytes], start: bytes = GENESIS_CHAIN) -> bytes:
    value = start
    for entry_hash in entry_hashes:
        value = chain_step(value, entry_hash)
    return value


@dataclass(frozen=True, slots=True)
class AuditHead:
    """`sha256` is h_n in hex; `recent` the hex e_i of the newest entries, oldest first."""

    entries: int
    sha256: str
    recent: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "sha256": self.sha256, "recent": list(self.recent)}

    @classmethod
    def from_json(cls, doc: object) -> AuditHead:
        """Parse and check the shape of a head from the network. Raises ValueError."""
        if not isinstance(doc, Mapping):
            raise ValueError("audit_head is not an object")
        entries, sha, recent = doc.get("entries"), doc.get("sha256"), doc.get("recent")
        if type(entries) is not int or entries < 0:
            raise ValueError("audit_head.entries is not a count")
        if not isinstance(sha, str) or _HEX64.fullmatch(sha) is None:
            raise ValueError("audit_head.sha256 is not 64 lowercase hex")
        if not isinstance(recent, list) or not all(
            isinstance(h, str) and _HEX64.fullmatch(h) for h in recent
        ):
            raise ValueError("audit_head.recent is not a list of hashes")
        if len(recent) != min(entries, AUDIT_RECENT):
            raise ValueError("audit_head.recent does not list the newest entries")
        return cls(entries, sha, tuple(recent))


@dataclass(frozen=True, slots=True)
class LegacyHead:
    """A head as protocol revision 1.0 sent it, and its owner tool remembered it:
    `entries` n and `entry_sha256` e_n, the hash of entry n's line (there was no chain
    value and no `recent`). Since each entry's line holds the hash of the one before,
    e_n commits to the whole history up to n."""

    entries: int
    entry_sha256: str

    @classmethod
    def from_json(cls, doc: object) -> LegacyHead:
        """Parse a remembered 1.0 head, `{"entries", "sha256"}`. Raises ValueError."""
        if not isinstance(doc, Mapping) or "recent" in doc:
            raise ValueError("not a protocol 1.0 audit head")
        entries, sha = doc.get("entries"), doc.get("sha256")
        if type(entries) is not int or entries < 0:
            raise ValueError("audit_head.entries is not a count")
        if not isinstance(sha, str) or _HEX64.fullmatch(sha) is None:
            raise ValueError("audit_head.sha256 is not 64 lowercase hex")
        return cls(entries, sha)


class Continuity(StrEnum):
    SAME = "same"  # the head did not move
    EXTENDS = "extends"  # the new history extends the old, proven
    ROLLED_BACK = "rolled_back"  # fewer entries than before
    REWRITTEN = "rewritten"  # the new head does not extend the old one
    UNCHECKABLE = "uncheckable"  # more than AUDIT_RECENT new entries: check on the device


def continuity(old: AuditHead | LegacyHead, new: AuditHead) -> Continuity:
    """Does `new` extend `old` (protocol.md §7)?"""
    if new.entries < old.entries:
        return Continuity.ROLLED_BACK
    added = new.entries - old.entries
    if isinstance(old, LegacyHead):
        return _extends_legacy(old, new, added)
    if added == 0:
        return Continuity.SAME if new.sha256 == old.sha256 else Continuity.REWRITTEN
    if added > len(new.recent):
        return Continuity.UNCHECKABLE
    start = bytes.fromhex(old.sha256)
    value = chain_over((bytes.fromhex(h) for h in new.recent[-added:]), start)
    return Continuity.EXTENDS if value.hex() == new.sha256 else Continuity.REWRITTEN


def recent_of(entry_hashes: Sequence[str]) -> tuple[str, ...]:
    return tuple(entry_hashes[-AUDIT_RECENT:]) if AUDIT_RECENT else ()


def _extends_legacy(old: LegacyHead, new: AuditHead, added: int) -> Continuity:
    """A 1.0 anchor (n1, e_n1) against a 1.1 head (protocol.md §7, "A head remembered by
    the 1.0 owner tool"): the new history extends the old when its entry n1 is the
    remembered one, i.e. `recent` names e_n1 at n1's place. That needs entry n1 among
    the last `AUDIT_RECENT` (at most 31 entries since); an empty 1.0 log is extended by
    any history."""
    if old.entries == 0:
        return Continuity.EXTENDS
    if added + 1 > len(new.recent):
        return Continuity.UNCHECKABLE
    remembered = new.recent[len(new.recent) - 1 - added]
    return Continuity.EXTENDS if remembered == old.entry_sha256 else Continuity.REWRITTEN
