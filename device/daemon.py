"""`doorbelld`: the process entry point. Signals, config, logging, one stop event."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from device.app import Doorbell, Hooks
from device.preflight import check_start
from firmware_config import ConfigError, load_config
from foundation.cli import ToolParser, run_tool
from foundation.clock import Clock, SteeredClock, SystemClock
from foundation.errors import DoorbellError
from recorder.recorder import SteeredFreeSpace

DEFAULT_CONFIG = Path(os.environ.get("DOORBELL_CONFIG", "/etc/doorbell/doorbell.yaml"))


def _configure_logging(level: str) -> None:
    # journald adds its own timestamps; a plain "level name: message" reads well there.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=fmt)


def _hooks(*, assume_synchronized: bool) -> Hooks:
    """The real clock and disk, unless a test steers them through files (integration
    tests move time and fill the disk of a real daemon this way, without privileges)."""
    clock: Clock = SystemClock(assume_synchronized=assume_synchronized)
    clock_file = os.environ.get("DOORBELL_TEST_CLOCK_FILE")
    if clock_file:
        clock = SteeredClock(Path(clock_file), assume_synchronized=assume_synchronized)
    free_space_file = os.environ.get("DOORBELL_TEST_FREE_SPACE_FILE")
    if free_space_file:
        return Hooks(clock=clock, free_space=SteeredFreeSpace(Path(free_space_file)))
    return Hooks(clock=clock)


def _parser() -> argparse.ArgumentParser:
    parser = ToolParser(
        prog="doorbelld",
        description="The doorbell daemon.",
        epilog="Exit codes: 0 stopped cleanly, 1 a part kept failing, 2 usage or config.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="doorbell.yaml ($DOORBELL_CONFIG overrides the default)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="report every problem that would stop the start (and warnings), then exit",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("DOORBELL_LOG_LEVEL", "info"),
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="log level ($DOORBELL_LOG_LEVEL overrides the default)",
    )
    parser.add_argument(
        "--assume-clock-synchronized",
        action="store_true",
        help="treat the wall clock as synchronized (machines without NTP status, the demo)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_tool("doorbelld", lambda: _run(_parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"doorbelld: {args.config}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    checked = check_start(config)
    if checked.problems:
        count = len(checked.problems)
        print(f"doorbelld: {args.config}: {count} problem(s):", file=sys.stderr)
        for problem in checked.problems:
            print(f"  {problem}", file=sys.stderr)
    for warning in checked.warnings:
        print(f"doorbelld: warning: {warning}", file=sys.stderr)
    if not checked.ok:
        return 2
    if args.check_config:
        print(f"{args.config}: OK" + (" (with warnings)" if checked.warnings else ""))
        return 0

    _configure_logging(args.log_level)
    app = Doorbell(config, _hooks(assume_synchronized=args.assume_clock_synchronized))

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signal.Signals(signum).name)
        app.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        app.start()
        app.wait()
    except DoorbellError as exc:
        logging.getLogger(__name__).error("%s", exc)
        app.stop()
        return 1
    return app.stop()


if __name__ == "__main__":
    sys.exit(main())
