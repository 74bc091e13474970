"""Command-line conventions shared by every console script of the project.

argparse takes a token that begins with `-` for an option, so `--owner-key -Xk2...` fails
with "expected one argument" although a base64url key, an age recipient or an id may
well begin with `-` (one key in 64 does). `ArgumentParser` here joins each option that
takes one value with the token after it (`--owner-key -Xk2` becomes `--owner-key=-Xk2`,
the form argparse never misreads) before argparse sees them. A token that is exactly one
of the parser's own option strings is not taken as a value, so a forgotten value still
gets argparse's own error. argparse has no switch for this, which is why it is
written here, once.

`time_arg` and `duration_arg` are the argparse types for RFC 3339 times and durations.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from foundation.errors import InvalidValueError
from foundation.times import parse_time


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reading option values that begin with `-` as values. Its
    sub-parsers are of the same class, so every level joins its own options."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(join_option_values(self, argv), namespace)


def _takes_one_value(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.nargs is None


def _resolve(parser: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    """The option `token` names: exactly, or as argparse's unambiguous long prefix."""
    actions = parser._option_string_actions  # argparse keeps no public index of options
    if token in actions:
        return actions[token]
    if parser.allow_abbrev and token.startswith("--") and "=" not in token:
        matches = {a for name, a in actions.items() if name.startswith(token)}
        if len(matches) == 1:
            return matches.pop()
    return None


def join_option_values(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """`args` with every one-value option joined to its value by `=`. Stops at `--` and
    at the first sub-command name (the sub-parser joins what follows it)."""
    commands: set[str] = set()
    for action in parser._actions:  # argparse's sub-commands are only found this way
        if isinstance(action, argparse._SubParsersAction):
            commands.update(action.choices)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or arg in commands:
            return out + args[i:]
        option = _resolve(parser, arg) if arg.startswith("-") else None
        if (
            option is not None
            and _takes_one_value(option)
            and i + 1 < len(args)
            and args[i + 1] not in parser._option_string_actions
        ):
            out.append(f"{arg}={args[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """`90s`, `30m`, `12h`, `7d` (one number and one unit) as milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidValueError(f"not a duration like 30m, 12h or 7d: {text!r}")
    value = round(float(match.group("n")) * _UNIT_MS[match.group("unit")])
    if value <= 0:
        raise InvalidValueError(f"duration must be positive: {text!r}")
    return value


def argument_type(parse: Callable[[str], int]) -> Callable[[str], int]:
    """An argparse type from `parse`: the InvalidValueError it raises for a bad value
    becomes argparse's own error (the usage and that one line)."""

    def convert(text: str) -> int:
        try:
            return parse(text)
        except InvalidValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = parse.__name__
    return convert


time_arg = argument_type(parse_time)  # `2026-11-28T10:00:00Z` (RFC 3339 UTC) as epoch ms
duration_arg = argument_type(parse_duration_ms)  # `90s`, `30m`, `12h`, `7d` as ms
