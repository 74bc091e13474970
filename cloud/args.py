"""Command-line value parsing shared by the cloud tools: times, durations, key files."""

from __future__ import annotations

import argparse
import re

from foundation.cli import time_arg

__all__ = ["duration_arg", "parse_duration_ms", "time_arg"]

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """`90s`, `30m`, `12h`, `7d` (one number and one unit) as milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration like 30m, 12h or 7d: {text!r}")
    value = round(float(match.group("n")) * _UNIT_MS[match.group("unit")])
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def duration_arg(text: str) -> int:
    """argparse type for a duration (`7d`)."""
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
