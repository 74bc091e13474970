"""protocol.md §7: an app that remembers a head can tell an extension from a rewrite,
whatever the lengths (a count alone cannot)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.anchor import AuditHead, Continuity, LegacyHead, chain_over, continuity, recent_of


def head_of(entries: list[bytes]) -> AuditHead:
    hashes = [hashlib.sha256(e).digest() for e in entries]
    return AuditHead(len(entries), chain_over(hashes).hex(), recent_of([h.hex() for h in hashes]))


logs = st.lists(st.binary(min_size=1, max_size=8), max_size=50)


@settings(max_examples=300, deadline=None)
@given(logs, st.lists(st.binary(min_size=1, max_size=8), max_size=40))
def test_an_extension_is_recognised(old: list[bytes], added: list[bytes]) -> None:
    result = continuity(head_of(old), head_of(old + added))
    if not added:
        assert result is Continuity.SAME
    elif len(added) <= 32:
        assert result is Continuity.EXTENDS
    else:
        assert result is Continuity.UNCHECKABLE


@settings(max_examples=300, deadline=None)
@given(logs, st.integers(0, 49), st.binary(min_size=1, max_size=8), st.integers(0, 40))
def test_a_rewritten_history_is_caught_however_long(
    old: list[bytes], where: int, replacement: bytes, longer_by: int
) -> None:
    if not old:
        return
    where %= len(old)
    if replacement == old[where]:
        replacement += b"!"
    forged = old[:where] + [replacement] + old[where + 1 :] + [b"x"] * longer_by
    result = continuity(head_of(old), head_of(forged))
    expected = Continuity.UNCHECKABLE if longer_by > 32 else Continuity.REWRITTEN
    assert result is expected


def test_a_shorter_log_is_a_rollback() -> None:
    entries = [b"a", b"b", b"c"]
    assert continuity(head_of(entries), head_of(entries[:2])) is Continuity.ROLLED_BACK


@pytest.mark.parametrize(
    "doc",
    [
        {"entries": 1, "sha256": "0" * 64, "recent": []},  # recent too short
        {"entries": 0, "sha256": "0" * 64, "recent": ["0" * 64]},
        {"entries": -1, "sha256": "0" * 64, "recent": []},
        {"entries": True, "sha256": "0" * 64, "recent": []},
        {"entries": 0, "sha256": "0" * 63, "recent": []},
        {"entries": 0, "sha256": "0" * 64},
        [],
    ],
)
def test_malformed_heads_are_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        AuditHead.from_json(doc)


def test_a_head_round_trips() -> None:
    head = head_of([b"a"] * 40)
    assert len(head.recent) == 32
    assert AuditHead.from_json(head.to_json()) == head


# --- an anchor remembered by the protocol 1.0 owner tool (protocol.md §7) ----------------


def legacy_of(entries: list[bytes]) -> LegacyHead:
    """What the 1.0 owner tool remembered of a log: its count and e_n."""
    last = hashlib.sha256(entries[-1]).hexdigest() if entries else "0" * 64
    return LegacyHead(len(entries), last)


@settings(max_examples=300, deadline=None)
@given(logs, st.lists(st.binary(min_size=1, max_size=8), max_size=40))
def test_a_1_0_anchor_is_extended_by_the_same_history_made_longer(
    old: list[bytes], added: list[bytes]
) -> None:
    result = continuity(legacy_of(old), head_of(old + added))
    if not old or len(added) < 32:  # entry n1 is still among the 32 newest
        assert result is Continuity.EXTENDS
    else:
        assert result is Continuity.UNCHECKABLE


@settings(max_examples=300, deadline=None)
@given(logs, st.binary(min_size=1, max_size=8), st.integers(0, 31))
def test_a_1_0_anchor_catches_a_history_rewritten_up_to_it(
    old: list[bytes], replacement: bytes, longer_by: int
) -> None:
    if not old or replacement == old[-1]:
        return
    # Entries hold the hash of the one before, so changing any entry up to n1 changes
    # the line (and hash) of entry n1 itself: modelled by changing entry n1.
    rewritten = old[:-1] + [replacement] + [b"x"] * longer_by
    assert continuity(legacy_of(old), head_of(rewritten)) is Continuity.REWRITTEN


def test_a_1_0_anchor_cut_back_or_unchecked() -> None:
    log = [b"a", b"b", b"c"]
    assert continuity(legacy_of(log), head_of(log[:2])) is Continuity.ROLLED_BACK
    assert continuity(legacy_of(log), head_of(log)) is Continuity.EXTENDS
    assert continuity(legacy_of([]), head_of(log)) is Continuity.EXTENDS


@pytest.mark.parametrize(
    "doc",
    [
        {"entries": 5, "sha256": "0" * 64, "recent": []},
        {"entries": -1, "sha256": "0" * 64},
        {"entries": True, "sha256": "0" * 64},
        {"entries": 5, "sha256": "A" * 64},
        {"entries": 5},
        [5, "0" * 64],
    ],
)
def test_a_damaged_1_0_anchor_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        LegacyHead.from_json(doc)
