"""retention_plan: tables for the rules, hypothesis for the invariants."""

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.times import Window
from recorder.retention import Pin, deletions, pinned_spans, protected_ids, retention_plan
from recorder.settings import RetentionLimits

H = 3_600_000
NOW = 1_000 * H


@dataclass(frozen=True)
class Seg:
    id: int
    start_ms: int
    end_ms: int
    bytes: int


def segs(*spec):
    """(start_hours_ago, bytes) per segment; each lasts 4 s."""
    out = []
    for i, (ago, size) in enumerate(spec, start=1):
        start = NOW - round(ago * H)
        out.append(Seg(i, start, start + 4000, size))
    return out


LIMITS = RetentionLimits(max_age_hours=72, max_bytes=1000, min_free_bytes=100)


@pytest.mark.parametrize(
    ("spec", "pins", "free", "expected"),
    [
        # nothing to do
        ([(10, 100), (5, 100)], [], 10_000, []),
        # too old: only the one older than 72 h
        ([(80, 100), (71, 100), (1, 100)], [], 10_000, [1]),
        # over max_bytes: oldest first until under
        ([(3, 400), (2, 400), (1, 400)], [], 10_000, [1]),
        ([(3, 600), (2, 600), (1, 600)], [], 10_000, [1, 2]),
        # disk under its floor: delete oldest until free >= floor
        ([(3, 30), (2, 30), (1, 30)], [], 50, [1, 2]),
        # a live pin protects; the next oldest goes instead
        ([(3, 400), (2, 400), (1, 400)], [("p", 3, 3, 1)], 10_000, [2]),
        # an expired pin protects nothing
        ([(3, 400), (2, 400), (1, 400)], [("p", 3, 3, -1)], 10_000, [1]),
        # pinned but too old: the pin wins
        ([(80, 100), (1, 100)], [("p", 80, 80, 1)], 10_000, []),
        # pins beyond half of max_bytes: the first pin fits, the second does not
        (
            [(4, 300), (3, 300), (2, 300), (1, 300)],
            [("a", 4, 4, 1), ("b", 3, 3, 1)],
            10_000,
            [2],
        ),
        # everything pinned within budget and the disk is full: nothing can go
        ([(2, 100), (1, 100)], [("p", 2, 1, 1)], 0, []),
    ],
)
def test_plan_table(spec, pins, free, expected):
    segments = segs(*spec)
    pin_objs = [
        Pin(name, Window(NOW - round(a * H), NOW - round(b * H) + 4000), NOW + live * H, seq)
        for seq, (name, a, b, live) in enumerate(pins)
    ]
    assert retention_plan(segments, pin_objs, LIMITS, NOW, free) == expected


def test_oversized_pin_keeps_its_newest_footage():
    segments = segs((4, 200), (3, 200), (2, 200), (1, 200))
    pin = Pin("big", Window(NOW - 5 * H, NOW), NOW + H, 0)
    # budget 500: two segments fit, the newest two
    assert protected_ids(segments, [pin], LIMITS, NOW) == {3, 4}


segment_lists = st.lists(
    st.tuples(st.integers(0, 200 * H), st.integers(1, 400)), min_size=0, max_size=30
).map(lambda raw: [Seg(i, NOW - ago, NOW - ago + 4000, b) for i, (ago, b) in enumerate(raw)])
pin_lists = st.lists(
    st.tuples(st.integers(0, 200 * H), st.integers(0, 50 * H), st.integers(-H, H)),
    max_size=5,
).map(
    lambda raw: [
        Pin(f"p{i}", Window(NOW - a, NOW - a + d), NOW + u, i) for i, (a, d, u) in enumerate(raw)
    ]
)
limit_values = st.builds(
    RetentionLimits,
    max_age_hours=st.floats(1, 100),
    max_bytes=st.integers(1, 5000),
    min_free_bytes=st.integers(0, 3000),
)


@given(segment_lists, pin_lists, limit_values, st.integers(0, 5000))
@settings(max_examples=300, deadline=None)
def test_plan_invariants(segments, pins, limits, free):
    plan = retention_plan(segments, pins, limits, NOW, free)
    by_id = {s.id: s for s in segments}
    assert len(plan) == len(set(plan)) and set(plan) <= set(by_id)
    protected = protected_ids(segments, pins, limits, NOW)
    # never a protected segment
    assert not protected & set(plan)
    # protected footage stays within half of max_bytes
    assert sum(by_id[i].bytes for i in protected) <= limits.max_bytes // 2
    # every live pin's segments are protected when they all fit in the budget alone
    # oldest first
    starts = [(by_id[i].start_ms, i) for i in plan]
    assert starts == sorted(starts)
    kept = [s for s in segments if s.id not in set(plan)]
    unprotected_kept = [s for s in kept if s.id not in protected]
    if unprotected_kept:
        # whatever is kept unprotected is allowed to stay: limits hold
        assert sum(s.bytes for s in kept) <= limits.max_bytes
        assert free + sum(by_id[i].bytes for i in plan) >= limits.min_free_bytes
        assert all(s.end_ms >= NOW - limits.max_age_ms for s in unprotected_kept)
    # nothing is deleted needlessly: each deletion was needed when it happened
    total, room = sum(s.bytes for s in segments), free
    for i in plan:
        seg = by_id[i]
        assert (
            seg.end_ms < NOW - limits.max_age_ms
            or total > limits.max_bytes
            or room < limits.min_free_bytes
        )
        total -= seg.bytes
        room += seg.bytes


@given(segment_lists, pin_lists, limit_values)
@settings(max_examples=100, deadline=None)
def test_single_live_pin_within_budget_is_fully_protected(segments, pins, limits):
    live = [p for p in pins if p.live(NOW)][:1]
    covered = [s for s in segments for p in live if p.window.overlaps(s.start_ms, s.end_ms)]
    if sum(s.bytes for s in covered) <= limits.max_bytes // 2:
        assert {s.id for s in covered} <= protected_ids(segments, live, limits, NOW)


def whole_table_plan(segments, pins, limits, now_ms, free_bytes):
    """The plan as it was before retention asked the index only for candidates: every
    segment, every pin, walked whole. The reference the candidate plan must match."""
    protected = protected_ids(segments, pins, limits, now_ms)
    oldest_allowed = now_ms - limits.max_age_ms
    total = sum(s.bytes for s in segments)
    free = free_bytes
    doomed = []
    for seg in sorted(segments, key=lambda s: (s.start_ms, s.id)):
        if seg.id in protected:
            continue
        too_old = seg.end_ms < oldest_allowed
        if too_old or total > limits.max_bytes or free < limits.min_free_bytes:
            doomed.append(seg.id)
            total -= seg.bytes
            free += seg.bytes
    return doomed


# Segments of 1 ms to 2 h, overlapping at will, around the age limit
varied_segments = st.lists(
    st.tuples(st.integers(0, 200 * H), st.integers(0, 2 * H), st.integers(1, 400)),
    max_size=40,
).map(lambda raw: [Seg(i, NOW - ago, NOW - ago + d, b) for i, (ago, d, b) in enumerate(raw)])


@given(varied_segments, pin_lists, limit_values, st.integers(0, 5000))
@settings(max_examples=500, deadline=None)
def test_the_candidate_plan_deletes_what_the_whole_table_plan_did(segments, pins, limits, free):
    """Only the segments under live pins, read oldest first until nothing more can go,
    and the total: the same deletions as walking every segment with every pin."""
    spans = pinned_spans(pins, NOW)
    pinned = [s for s in segments if any(w.overlaps(s.start_ms, s.end_ms) for w in spans)]
    read: list[Seg] = []

    def oldest_first():
        for seg in sorted(segments, key=lambda s: (s.start_ms, s.id)):
            read.append(seg)
            yield seg

    protected = protected_ids(pinned, pins, limits, NOW)
    plan = deletions(
        oldest_first(),
        total_bytes=sum(s.bytes for s in segments),
        protected=protected,
        limits=limits,
        now_ms=NOW,
        free_bytes=free,
    )
    expected = whole_table_plan(segments, pins, limits, NOW, free)
    assert plan == expected
    assert retention_plan(segments, pins, limits, NOW, free) == expected
    # it read no further than it had to: every segment but the last one read went, was
    # protected, or started before the age limit (so might have been too old)
    cutoff = NOW - limits.max_age_ms
    for seg in read[:-1]:
        assert seg.id in set(plan) or seg.id in protected or seg.start_ms < cutoff


@given(varied_segments, pin_lists)
@settings(max_examples=300, deadline=None)
def test_pinned_spans_cover_exactly_the_live_pins(segments, pins):
    spans = pinned_spans(pins, NOW)
    assert all(a.end_ms < b.start_ms for a, b in pairwise(spans))  # merged, in order
    live = [p.window for p in pins if p.live(NOW)]
    for seg in segments:
        under_pin = any(w.overlaps(seg.start_ms, seg.end_ms) for w in live)
        assert under_pin == any(w.overlaps(seg.start_ms, seg.end_ms) for w in spans)
