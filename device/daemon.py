"""`doorbelld`: the process entry point. Signals, config, logging, one stop event.

Signals are received without a Python handler that does work: `signal.set_wakeup_fd`
writes each one into a pipe, and a thread of ours reads it and sets the stop event. A
handler that set the event itself would take the event's lock on whatever the main
thread was doing, and a second SIGTERM landing while the main thread held that lock
(inside `stop()`) would deadlock the daemon for good."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from device.app import Doorbell, Hooks
from device.preflight import check_start
from firmware_config import ConfigError, load_config
from foundation.cli import ToolParser, run_tool
from foundation.clock import SystemClock
from foundation.display import log_to, shown
from foundation.errors import AlreadyRunningError, DoorbellError
from foundation.files import PRIVATE_UMASK

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(os.environ.get("DOORBELL_CONFIG", "/etc/doorbell/doorbell.yaml"))


def _configure_logging(level: str) -> None:
    # journald adds its own timestamps; a plain "level name: message" reads well there.
    # Every line is safe to read in a terminal (foundation/display.py).
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    log_to(sys.stderr, level=level.upper(), fmt=fmt)


def product_hooks(*, assume_synchronized: bool) -> Hooks:
    """The real clock and disk. (Tests build the daemon with their own hooks through
    tests/steered_daemon.py; the product reads none from its environment.)"""
    return Hooks(clock=SystemClock(assume_synchronized=assume_synchronized))


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


def watch_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, from a thread, however often they come."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)  # the wakeup fd carries it

    def watch() -> None:
        while True:
            select.select([read_fd], [], [])
            for signum in os.read(read_fd, 64):
                logger.info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()

    threading.Thread(target=watch, name="signals", daemon=True).start()


def main(argv: list[str] | None = None, *, hooks: Callable[..., Hooks] = product_hooks) -> int:
    """`hooks` builds the daemon's collaborators (tests/steered_daemon.py passes its own)."""
    return run_tool("doorbelld", lambda: _run(_parser().parse_args(argv), hooks))


def _run(args: argparse.Namespace, hooks: Callable[..., Hooks]) -> int:
    # Before anything is written: what the daemon (and its recorder, a child that
    # inherits the umask) creates is its user's alone, also when a person starts it by
    # hand with umask 022 (the unit sets UMask=0077 too). The one thing meant for others,
    # the control socket (group doorbell may use it), sets its 0660 where it is made.
    os.umask(PRIVATE_UMASK)
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
    app = Doorbell(config, hooks(assume_synchronized=args.assume_clock_synchronized))
    try:
        app.claim()  # before anything is written or connected
    except AlreadyRunningError as exc:
        print(f"doorbelld: {exc}", file=sys.stderr)
        return 1
    watch_stop_signals(app.stop_event)
    try:
        app.start()
        app.wait()
    except DoorbellError as exc:
        logger.error("%s", shown(exc))
        app.stop()
        return 1
    return app.stop()


if __name__ == "__main__":
    sys.exit(main())
