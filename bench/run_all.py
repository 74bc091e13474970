"""Run every benchmark in turn (`make bench`); each compares against the stock tool a
user would reach for, on the same data in the same run, and prints its ratio.

Pass `--quick` for small sizes (a smoke run in a few minutes); the README's figures come
from the full run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS = {
    "export": ["bench.export"],
    "record": ["bench.record"],
    "flood": ["bench.flood"],
    "upload": ["bench.upload"],
    "share": ["bench.share"],
    "console": ["bench.console"],
    "owner_channel": ["bench.owner_channel"],
}
QUICK = {
    "export": ["--minutes", "4", "--window-minutes", "2"],
    "record": ["--seconds", "20"],
    "flood": ["--messages", "4000"],
    "upload": ["--mb", "128"],
    "share": ["--minutes", "5", "--rss-mb", "256"],
    "console": ["--base-minutes", "1", "--hours", "12", "--window-hours", "4", "--runs", "2"],
    "owner_channel": ["--hours", "24", "--rounds", "5"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help=f"run just these: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    failed = []
    for name, module in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, "-m", *module, *(QUICK[name] if args.quick else [])]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
