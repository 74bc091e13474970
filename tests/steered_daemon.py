"""`doorbelld` with test hooks, built through the composition root like the product:

    python -m tests.steered_daemon [--clock-file F] [--free-space-file F] DOORBELLD-ARGS...

`--clock-file` steers the wall clock and its synchronized state (tests.fixtures.steering
.SteeredClock), `--free-space-file` the free space the recorder sees. Everything else is
doorbelld's own command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from device import daemon
from device.app import Hooks
from foundation.clock import Clock, SystemClock
from tests.fixtures.steering import SteeredClock, SteeredFreeSpace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.steered_daemon", add_help=False)
    parser.add_argument("--clock-file", type=Path)
    parser.add_argument("--free-space-file", type=Path)
    hooks_args, rest = parser.parse_known_args(argv)

    def hooks(*, assume_synchronized: bool) -> Hooks:
        clock: Clock = SystemClock(assume_synchronized=assume_synchronized)
        if hooks_args.clock_file is not None:
            clock = SteeredClock(hooks_args.clock_file, assume_synchronized=assume_synchronized)
        if hooks_args.free_space_file is not None:
            return Hooks(clock=clock, free_space=SteeredFreeSpace(hooks_args.free_space_file))
        return Hooks(clock=clock)

    return daemon.main(rest, hooks=hooks)


if __name__ == "__main__":
    sys.exit(main())
