"""What every command-line tool of the project shares: one exit-code table, one way to
turn an error into one line on stderr, help that shows defaults, and a closed pipe that
ends the command quietly (`doorbellctl shares | head -3`).

The table (the README's "Exit codes" repeats it for users):

| code | meaning |
|---|---|
| 0 | done |
| 1 | refused or failed: the daemon, the broker or a check said no |
| 2 | usage or config: bad arguments, a bad config file |
| 3 | unavailable: the daemon is not running, the broker or server cannot be reached |
| 130 | interrupted (Ctrl-C) |
| 141 | the output was closed early (a pipe into `head`), as for any tool SIGPIPE ends |
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from enum import IntEnum

from foundation.arguments import ArgumentParser
from foundation.errors import DoorbellError, UnavailableError, UsageError


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    UNAVAILABLE = 3
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141


EXIT_CODES_EPILOG = (
    "Exit codes: 0 done, 1 refused or failed, 2 usage or config, 3 unavailable "
    "(daemon not running, broker or server unreachable), 130 interrupted, "
    "141 output closed early."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, minus the noise of `(default: None)` and
    `(default: False)` on options that have no default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class ToolParser(ArgumentParser):
    """foundation.arguments' parser (values that begin with `-` are read as values),
    whose help shows defaults; its sub-command parsers are of the same class (argparse's
    add_subparsers uses the parent's type), so they do too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def exit_code_of(exc: DoorbellError) -> ExitCode:
    if isinstance(exc, UsageError):
        return ExitCode.USAGE
    if isinstance(exc, UnavailableError):
        return ExitCode.UNAVAILABLE
    return ExitCode.REFUSED


def run_tool(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body and map what it raises onto the exit-code table, one line
    on stderr each, never a traceback."""
    try:
        try:
            code = body()
        except SystemExit as done:  # argparse's --help and usage errors
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is seen and handled
        return code
    except BrokenPipeError:
        _silence_stdout()
        return ExitCode.OUTPUT_CLOSED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except DoorbellError as exc:
        _error(prog, str(exc))
        return exit_code_of(exc)
    except OSError as exc:  # a file the user named cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        _error(prog, f"{where}{exc.strerror or exc}")
        return ExitCode.REFUSED


def _error(prog: str, message: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After the reader went away, point stdout at /dev/null so the interpreter's own
    flush at exit does not raise a second BrokenPipeError (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
