"""Every benchmark runs at its smoke size (bench/run_all.py declares it) on every
`make test`, so that none can silently stop working: each must exit 0, which it does
only when its own sanity check of the work passed (a frame-exact export, a share that
verifies, every genuine request pending in the flood, ...), and print its ratio line.
No timings are asserted: the figures themselves are for `make bench`.

Each benchmark is one test running `python -m bench.<name> <smoke args>` as a
subprocess in its own tmp_path, in no xdist group, so `--dist loadgroup` spreads them
over the workers like any other test: about a minute of wall time on two cores in all, the
flood's fixed waits the longest part.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run_all import BENCHMARKS, RATIO_LINE, run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_sanely_at_smoke_size(name, tmp_path):
    conforms, output = run(name, "smoke", cwd=tmp_path)
    assert conforms, f"bench.{name} at its smoke size:\n{output[-4000:]}"


@pytest.mark.parametrize(
    ("line", "counts"),
    [
        ("  ratio ours / concat: 1.57x  (goal < 1)", True),
        ("  time ratio ours/stock: 0.31x (goal <= 1.0x) OK", True),
        ("ratio written/video: 1.025", False),  # a ratio must say it is one: 1.025x
        ('  "device_vs_sub": 0.84,', False),
        ("the device's way is 77x faster", False),
    ],
)
def test_what_counts_as_a_ratio_line(line, counts):
    assert bool(RATIO_LINE.search(line)) is counts


def test_a_python_without_the_projects_packages_is_told_in_one_line(tmp_path):
    """-S hides site-packages, as a Python outside the venv would: one line naming what
    is missing and how to run the benchmarks, exit 2, no benchmark started."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-S", "-m", "bench.run_all", "--smoke"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "pyrage" in done.stderr and "make bench" in done.stderr
