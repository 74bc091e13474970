"""Run every benchmark in turn (`make bench`) and name those that failed.

Each compares against the stock tool a user would reach for, on the same data in the
same run, and prints its ratio.

Three sizes, each benchmark's arguments declared once below: the full size (the
README's figures), `--quick` (small sizes, a few minutes in all) and `--smoke` (the
smallest that still does the work; `make test` runs it, tests/test_benchmarks.py).

What a benchmark owes this runner (bench/sanity.py): it exits non-zero when its own
sanity check fails (an export that is not frame-exact, a share that does not verify, a
flood in which a genuine request went missing), and it prints at least one ratio line,
`ratio <what>: <number>x`. A benchmark that exits 0 without one counts as failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
RATIO_LINE = re.compile(r"\bratio\b[^:\n]*:\s*\d+(?:\.\d+)?x", re.IGNORECASE)


@dataclass(frozen=True)
class Benchmark:
    """The arguments of `python -m bench.<name>` at the quick and smoke sizes (the
    full size is its defaults, plus `full`); `module` when one benchmark runs under
    several names (the flood against each broker)."""

    quick: str
    smoke: str
    full: str = ""
    module: str | None = None


BENCHMARKS = {
    "export": Benchmark(
        quick="--minutes 4 --window-minutes 2",
        smoke="--minutes 0.25 --window-minutes 0.1 --runs 1",
    ),
    "record": Benchmark(quick="--seconds 20", smoke="--seconds 2 --loop-seconds 1"),
    "flood": Benchmark(quick="--messages 4000", smoke="--messages 300 --genuine 3"),
    # the same flood through a three-node NATS cluster and RabbitMQ's plugin (MQTT 3.1.1)
    **{
        f"flood-{broker}": Benchmark(
            quick=f"--broker {broker} --messages 4000",
            smoke=f"--broker {broker} --messages 300 --genuine 3",
            full=f"--broker {broker}",
            module="flood",
        )
        for broker in ("nats", "rabbitmq")
    },
    "upload": Benchmark(quick="--mb 128", smoke="--mb 4 --runs 2"),
    "share": Benchmark(quick="--minutes 5 --rss-mb 256", smoke="--minutes 0.1 --rss-mb 4"),
    "c2pa": Benchmark(
        quick="--record-minutes 2 --hours 1 --runs 2",
        smoke="--record-minutes 0.1 --hours 0.02 --runs 1",
    ),
    "console": Benchmark(
        quick="--base-minutes 1 --hours 12 --window-hours 4 --runs 2",
        smoke="--base-minutes 0.25 --hours 0.5 --window-hours 0.2 --runs 1",
    ),
    # a real daemon records (the footage's seconds are real time), then a real browser taps
    "console_tap": Benchmark(
        quick="--footage-seconds 60 --taps 8", smoke="--footage-seconds 8 --taps 2"
    ),
    "retention": Benchmark(quick="--hours 24 --steps 10", smoke="--hours 0.25 --steps 3"),
    "owner_channel": Benchmark(quick="--hours 24 --rounds 5", smoke="--hours 1 --rounds 2"),
    "outcome_work": Benchmark(quick="--rounds 1", smoke="--rounds 1 --fsync-ms 1"),
    "sd_wear": Benchmark(quick="--seconds 30", smoke="--seconds 6"),
    "masks": Benchmark(quick="--seconds 6 --frames 100", smoke="--seconds 1 --frames 10"),
}
Size = Literal["full", "quick", "smoke"]


def command(name: str, size: Size) -> list[str]:
    """The command line that runs benchmark `name` at `size`."""
    bench = BENCHMARKS[name]
    args = {"full": bench.full, "quick": bench.quick, "smoke": bench.smoke}[size]
    return [sys.executable, "-m", f"bench.{bench.module or name}", *args.split()]


def run(name: str, size: Size, cwd: Path | None = None) -> tuple[bool, str]:
    """Run one benchmark, echoing its output as it comes; (conforms, its output).

    `cwd` (default: this process's) is where it writes its relative `bench-out/`; the
    project stays importable from anywhere through PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command(name, size),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    output = "".join(lines)
    if proc.wait() != 0:
        return False, output
    if not RATIO_LINE.search(output):
        print(f"{name}: exited 0 but printed no ratio line ('ratio <what>: <number>x')")
        return False, output
    return True, output


# What every benchmark imports besides the standard library: the project's own
# dependencies and the test extra's (make venv installs both).
NEEDS = (
    "av",
    "c2pa",
    "numpy",
    "paho",
    "playwright",
    "pyrage",
    "rfc8785",
    "cryptography",
    "psutil",
    "tuspyserver",
)


def missing(modules: tuple[str, ...] = NEEDS) -> list[str]:
    """The modules this Python cannot import: a benchmark run by a Python outside the
    project's venv would otherwise fail nine times with nine tracebacks."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, a few minutes in all")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes (make test)")
    parser.add_argument("only", nargs="*", help=f"run just these: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    absent = missing()
    if absent:
        print(
            f"bench: {sys.executable} cannot import {', '.join(absent)}: run `make bench`, "
            "or .venv/bin/python -m bench.run_all after `make venv`",
            file=sys.stderr,
        )
        return 2
    chosen: Size = "smoke" if args.smoke else "quick" if args.quick else "full"
    failed = []
    for name in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name}: {' '.join(command(name, chosen)[1:])}", flush=True)
        if not run(name, chosen)[0]:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
