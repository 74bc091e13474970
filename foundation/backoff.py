"""How long to wait before trying again: capped exponential backoff with jitter, for
everything that retries against a server (the MQTT reconnect, the share uploads)."""

from __future__ import annotations

import random


def backoff_s(retry: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait before retry number `retry` (0 for the first): between half and all of
    min(cap_s, base_s * 2**retry), so that many devices retrying at once spread out and
    the wait is never zero."""
    ceiling = min(cap_s, base_s * 2 ** min(max(0, retry), 30))  # 2**30: far past any cap
    return ceiling * (0.5 + rng.random() / 2)
