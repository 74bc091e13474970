"""Every command answers like a tool: one exit-code table (the README's), help for every
command and option with its default, one line on stderr for an error, and a closed
output pipe that ends it quietly. The console scripts run as subprocesses, as a person
runs them."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

import pytest

from cloud import agency, owner, tus_server
from cloud.loopback import DeviceSetup, script
from device import cli
from device.identity import load_device_identity
from foundation.cli import ExitCode

ROOT = Path(__file__).resolve().parents[2]
PARSERS = {
    "doorbellctl": cli._parser,
    "doorbell-agency": agency._parser,
    "doorbell-owner": owner._parser,
    "doorbell-tus-server": tus_server._parser,
}
SCRIPTS = ("doorbelld", "doorbellctl", "doorbell-agency", "doorbell-owner", "doorbell-tus-server")


def run(name: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*script(name), *args], capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]


def all_parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += all_parsers(child, f"{path} {name}")
    return found


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for name, make in PARSERS.items():
        found += all_parsers(make(), name)
    return found


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return DeviceSetup(root=tmp_path / "device", broker_url="mqtt://127.0.0.1:1").write()


def test_the_readme_table_is_the_code_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", section, re.M)}
    assert rows == {int(code) for code in ExitCode}


def test_every_command_and_option_says_what_it_does_and_its_default() -> None:
    for path, parser in every_parser():
        assert parser.description or path.count(" "), path
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{path} {action.option_strings or action.dest}: no help"
            default = action.default
            if default not in (None, False, argparse.SUPPRESS) and action.option_strings:
                help_text = parser.format_help()
                assert f"(default: {default})" in " ".join(help_text.split()), (path, action)
    owner_help = run("doorbell-owner", "--help")
    assert owner_help.returncode == 0 and "(default: ~/.doorbell-owner)" in owner_help.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_usage_errors_of_each_installed_command(name: str) -> None:
    helped = run(name, "--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout, helped.stderr
    wrong = run(name, "--no-such-option")
    assert wrong.returncode == ExitCode.USAGE and "Traceback" not in wrong.stderr


def into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run a command whose reader went away before it wrote (`... | head -3`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)


def test_a_closed_output_pipe_ends_every_command_quietly(config: Path, tmp_path: Path) -> None:
    load_device_identity(config.parent / "var" / "state", "porch-cam-01")
    commands = [
        ["doorbelld", f"--config={config}", "--check-config"],
        ["doorbellctl", f"--config={config}", "status"],
        ["doorbellctl", f"--config={config}", "status", "--json"],
        ["doorbellctl", f"--config={config}", "pair"],
        ["doorbellctl", "owner", "keygen", f"--out={tmp_path / 'owner-keys'}"],
        ["doorbell-agency", "keygen", f"--out={tmp_path / 'agency'}"],
        ["doorbell-owner", f"--home={tmp_path / 'owner'}", "keygen"],
        ["doorbell-tus-server", f"--storage={tmp_path / 'uploads'}", "--port=1"],
    ]
    for name, *args in commands:
        result = into_closed_pipe(*script(name), *args)
        assert result.returncode == ExitCode.OUTPUT_CLOSED, (name, args, result.stderr)
        assert b"Traceback" not in result.stderr and b"BrokenPipe" not in result.stderr
    for name in SCRIPTS:  # argparse's help already ignores a closed pipe: still no noise
        helped = into_closed_pipe(*script(name), "--help")
        assert helped.returncode in (0, ExitCode.OUTPUT_CLOSED) and helped.stderr == b"", name


def test_offline_commands_follow_the_exit_table(config: Path) -> None:
    # 3: the daemon is not running; 2: a reversed window, before anything is asked
    assert run("doorbellctl", f"--config={config}", "pending").returncode == ExitCode.UNAVAILABLE
    reversed_window = run(
        "doorbellctl", f"--config={config}", "approve", "some-id",
        "--start=2026-11-28T10:05:00Z", "--end=2026-11-28T10:00:00Z",
    )  # fmt: skip
    assert reversed_window.returncode == ExitCode.USAGE
    assert reversed_window.stderr == "doorbellctl: approve: --start is after --end\n"
    one_sided = run(
        "doorbellctl", f"--config={config}", "approve", "x", "--start=2026-11-28T10:05:00Z"
    )
    assert one_sided.returncode == ExitCode.USAGE and len(one_sided.stderr.splitlines()) == 1
    missing = run("doorbellctl", "--config=/nonexistent/doorbell.yaml", "status")
    assert missing.returncode == ExitCode.USAGE and "cannot read" in missing.stderr


def test_owner_tool_reversed_window_and_unreachable_broker(tmp_path: Path) -> None:
    home = tmp_path / "owner"
    assert run("doorbell-owner", f"--home={home}", "keygen").returncode == 0
    reversed_window = run(
        "doorbell-owner", f"--home={home}", "decide", "--rfa=x", "approve",
        "--start=2026-11-28T10:05:00Z", "--end=2026-11-28T10:00:00Z",
        "--publish=mqtt://127.0.0.1:1",
    )  # fmt: skip
    assert reversed_window.returncode == ExitCode.USAGE
    assert reversed_window.stderr.strip() == "doorbell-owner: --start is after --end"
    watch = run("doorbell-owner", f"--home={home}", "watch", "--broker=mqtt://127.0.0.1:1")
    assert watch.returncode in (ExitCode.UNAVAILABLE, ExitCode.REFUSED), watch.stderr
    assert "Traceback" not in watch.stderr and len(watch.stderr.splitlines()) == 1


def test_pair_output_is_what_the_owner_tool_accepts(config: Path, tmp_path: Path) -> None:
    identity = load_device_identity(config.parent / "var" / "state", "porch-cam-01")
    paired = run("doorbellctl", f"--config={config}", "pair")
    assert paired.returncode == 0, paired.stderr
    assert "| doorbell-owner pair --from-json -" in paired.stdout  # the hint it prints...
    home = tmp_path / "owner"
    accepted = run("doorbell-owner", f"--home={home}", "pair", "--from-json=-", input=paired.stdout)
    assert accepted.returncode == 0, accepted.stderr  # ...is what works, QR code and all
    assert f"paired: porch-cam-01 (device kid {identity.signing.kid})" in accepted.stdout
    saved = tmp_path / "pairing.txt"
    saved.write_text(run("doorbellctl", f"--config={config}", "pair", "--json").stdout)
    again = run("doorbell-owner", f"--home={home}", "pair", f"--from-json={saved}")
    assert again.returncode == 0 and "already paired" in again.stdout
    junk = run("doorbell-owner", f"--home={home}", "pair", "--from-json=-", input="no json")
    assert junk.returncode == ExitCode.REFUSED and "doorbellctl pair" in junk.stderr


def test_human_status_says_whether_and_how_the_clock_is_synchronized(config: Path) -> None:
    load_device_identity(config.parent / "var" / "state", "porch-cam-01")
    human = run("doorbellctl", f"--config={config}", "status").stdout
    (clock,) = [line for line in human.splitlines() if line.startswith("clock")]
    assert "synchronized" in clock and "RTC" in clock
    assert ("NTP" in clock) or ("NOT synchronized" in clock)


def test_record_prints_rfc3339_times_not_a_repr(config: Path) -> None:
    recorded = run("doorbellctl", f"--config={config}", "record", "--seconds=1", "--fast")
    assert recorded.returncode == 0, recorded.stderr
    assert "RecordSummary(" not in recorded.stdout and "first_ms" not in recorded.stdout
    assert re.search(
        r"^recorded +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \.\. \d{4}-", recorded.stdout, re.M
    ), recorded.stdout


def test_the_readme_names_the_packages_the_makefile_installs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    block = makefile.split("DEB_PACKAGES :=", 1)[1].split("\nSUDO", 1)[0]
    packages = block.replace("\\", " ").split()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"`{' '.join(packages)}`" in readme, packages
    assert "apt-get install -y make" in readme  # make cannot install make
