"""The README's first command must keep working: run the demo as a person would; and
whatever it starts, it stops, whether it succeeds, fails or is interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from foundation.cli import ExitCode


def test_demo_tells_the_whole_story_and_ends_verified() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloud.demo"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for step in ("Local services", "Pairing", "Request for Assistance", "approves", "uploads"):
        assert step in out
    assert "share VERIFIED" in out
    assert "c2pa:      Trusted (signed by Doorbell " in out  # given the device's authority
    assert "sign-in code" in out and "https://127.0.0.1:" in out  # the console
    assert out.rstrip().splitlines()[-1].startswith("share verified")
    assert "100.0 %" in out
    # the commands it shows are the installed ones, with `--opt=value` throughout
    shown = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("$ ")]
    assert shown and all(line.split()[0].startswith("doorbell") for line in shown), shown
    assert not any("cloud." in line for line in shown)
    assert "--owner-key=" in out and "--storage=" in out
    assert "A starting template" in out and "trusted_agencies:" in out


class RunningDemo:
    """The demo as a child in its own session (as a terminal runs it), stopped at the
    moment its daemon records, with every process it started by then."""

    def __init__(self, footage_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.demo", f"--footage-seconds={footage_seconds}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "recording since" in line:
                break
        else:
            raise AssertionError("".join(self.lines))
        self.started = psutil.Process(self.proc.pid).children(recursive=True)
        root = re.search(r"config (/\S+doorbell-demo-[^/]+)/", "".join(self.lines))
        assert root is not None
        self.root = Path(root.group(1))

    def names(self) -> str:
        return " ".join(" ".join(p.cmdline()) for p in self.started if p.is_running())

    def finish(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, "".join(self.lines) + out

    def survivors(self) -> list[str]:
        _, alive = psutil.wait_procs(self.started, timeout=30)
        return [" ".join(p.cmdline()) for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def started_everything(demo: RunningDemo) -> None:
    names = demo.names()
    for part in ("mosquitto", "tus_server", "doorbelld"):
        assert part in names, names
    assert len(demo.started) >= 4, names  # and doorbelld's recorder child


@pytest.mark.parametrize("whole_group", [False, True], ids=["demo-only", "process-group"])
def test_ctrl_c_mid_run_stops_everything_it_started(whole_group: bool) -> None:
    demo = RunningDemo(footage_seconds=30)
    started_everything(demo)
    if whole_group:  # Ctrl-C in a terminal: every process of the group gets SIGINT
        os.killpg(demo.proc.pid, signal.SIGINT)
    else:
        demo.proc.send_signal(signal.SIGINT)
    code, out = demo.finish()
    assert code == ExitCode.INTERRUPTED, out[-3000:]
    assert "Traceback" not in out
    assert demo.survivors() == []
    assert not demo.root.exists()


def test_a_failed_step_stops_everything_it_started() -> None:
    demo = RunningDemo(footage_seconds=8)
    started_everything(demo)
    broker = next(p for p in demo.started if "mosquitto" in " ".join(p.cmdline()))
    broker.kill()  # the agency's publish step cannot reach it: a real failure
    code, out = demo.finish()
    assert code == ExitCode.REFUSED and "demo failed:" in out, out[-3000:]
    assert "cannot reach the broker" in out
    assert demo.survivors() == []
    assert not demo.root.exists()


def test_sigterm_stops_everything_too() -> None:
    demo = RunningDemo(footage_seconds=30)
    started_everything(demo)
    demo.proc.send_signal(signal.SIGTERM)
    code, _out = demo.finish()
    assert code == ExitCode.INTERRUPTED
    assert demo.survivors() == []
