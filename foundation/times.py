"""Time on the wire and in the buffer.

Inside the project a moment is an `int` of milliseconds since the Unix epoch (UTC).
On the wire it is RFC 3339 in UTC with a `Z` suffix and at most millisecond precision
beyond which digits are refused rather than silently rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from foundation.errors import TimeFormatError, WindowError

# ASCII digits only (protocol.md §1): `\d` would also match other scripts' digits.
_RFC3339_Z = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,9}))?Z",
    re.ASCII,
)


def parse_time(text: object) -> int:
    """Parse `YYYY-MM-DDTHH:MM:SS[.fff]Z` into epoch milliseconds.

    Fractions finer than a millisecond must be zeros: silently rounding a window edge
    could let in a frame the owner did not approve.
    """
    if not isinstance(text, str):
        raise TimeFormatError("time must be a string")
    match = _RFC3339_Z.fullmatch(text)
    if match is None:
        raise TimeFormatError(f"not an RFC 3339 UTC time with a Z suffix: {text[:40]!r}")
    frac = match.group("frac") or ""
    if frac[3:].strip("0"):
        raise TimeFormatError(f"sub-millisecond precision is not supported: {text!r}")
    try:
        day = datetime.strptime(match.group("date"), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise TimeFormatError(f"not a calendar date: {text!r}") from exc
    hours, minutes, seconds = int(match.group("h")), int(match.group("m")), int(match.group("s"))
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeFormatError(f"time of day out of range: {text!r}")
    millis = int((frac + "000")[:3]) if frac else 0
    base = int(day.timestamp()) * 1000
    return base + ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def format_time(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC; the fraction appears only when non-zero."""
    seconds, millis = divmod(int(ms), 1000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z" if millis else f"{stamp}Z"


@dataclass(frozen=True, slots=True)
class Window:
    """A closed interval of capture time, [start_ms, end_ms], in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.start_ms > self.end_ms:
            raise WindowError("window start is after its end")

    def contains(self, ms: int) -> bool:
        return self.start_ms <= ms <= self.end_ms

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        return start_ms <= self.end_ms and end_ms >= self.start_ms

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def to_json(self) -> dict[str, str]:
        return {"start": format_time(self.start_ms), "end": format_time(self.end_ms)}
