"""The one backoff that the MQTT reconnect and the share uploads both wait by."""

from __future__ import annotations

import random

from foundation.backoff import backoff_s
from sync.mqtt import Backoff


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    waits = [backoff_s(n, base_s=2, cap_s=60, rng=rng) for n in range(11)]
    assert 1 <= waits[0] <= 2  # the first retry: between half and all of the base
    assert all(30 <= w <= 60 for w in waits[6:])
    assert len({round(w, 6) for w in waits[6:]}) > 1  # jitter


def test_a_huge_retry_count_stays_at_the_cap() -> None:
    rng = random.Random(7)
    assert 30 <= backoff_s(10**6, base_s=2, cap_s=60, rng=rng) <= 60
    assert 1 <= backoff_s(-3, base_s=2, cap_s=60, rng=rng) <= 2


def test_the_mqtt_reconnect_waits_by_the_same_backoff() -> None:
    link = Backoff(initial_s=0.5, cap_s=30.0)
    for attempt in range(12):
        a, b = random.Random(attempt), random.Random(attempt)
        assert link.delay(attempt, a) == backoff_s(attempt, base_s=0.5, cap_s=30.0, rng=b)
