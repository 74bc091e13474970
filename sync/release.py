"""When an approved share may start its upload (protocol.md §6.2, revision 1.2).

A named share starts at once. An anonymous share starts at a moment drawn uniformly at
random between the owner's bounds (10 to 60 minutes by default, never below 5) after
the approval, so that the moment it reaches the agency does not point at the decision
the broker carried a moment before. The draw is made once, when the share is queued,
and stored with it (sync.outbox): a restart does not draw again, so restarting cannot
pull a share earlier, and nobody can reroll the draw.

The draw uses the operating system's random source (`secrets.SystemRandom`): the moment
must not be guessable from anything the broker or the agency could see. Its resolution
is one millisecond.

The stored moment is a wall-clock time, which the owner is shown. A wall clock can
jump (NTP stepping it, a bad time source), so the stored delay rides along: within one
run of the daemon the share also waits the rest of its delay on the monotonic clock,
measured from the first time the worker looked at it (`wait_left_ms`). A jump forward
therefore never starts a share early; a jump backward only makes it later. After a
restart the wait is what the wall clock says is left, never more than the drawn delay.
"""

from __future__ import annotations

import random
import secrets

from sync.settings import AnonymousDelay

MINUTE_MS = 60_000


def secure_rng() -> random.Random:
    """The random source of the draw in production."""
    return secrets.SystemRandom()


def draw_delay_ms(bounds: AnonymousDelay, rng: random.Random) -> int:
    """A delay drawn uniformly over [min, max] minutes, in whole milliseconds."""
    low = round(bounds.min_minutes * MINUTE_MS)
    high = round(bounds.max_minutes * MINUTE_MS)
    return rng.randint(low, high)


def start_of(
    *, named: bool, approved_ms: int, bounds: AnonymousDelay, rng: random.Random
) -> tuple[int, int]:
    """(the moment the upload may start, the delay drawn) for a share approved at
    `approved_ms`: a named share at once, an anonymous one after a fresh draw."""
    if named:
        return approved_ms, 0
    delay = draw_delay_ms(bounds, rng)
    return approved_ms + delay, delay


def wait_left_ms(*, starts_at_ms: int, delay_ms: int, now_ms: int) -> int:
    """How long a share must still wait, seen for the first time in this run at wall
    time `now_ms`: what the wall clock says is left, never more than the drawn delay
    (a clock far behind must not hold a share for days) and never less than nothing."""
    return max(0, min(starts_at_ms - now_ms, delay_ms))
