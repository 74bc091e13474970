"""Option values that begin with `-` (one base64url key in 64 does): every console script
reads `--opt -value` exactly as `--opt=-value`, for every option that takes a value."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud import agency, owner
from device import cli, daemon
from foundation.arguments import ArgumentParser, join_option_values
from recorder import commands

SCRIPTS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "doorbellctl": cli._parser,
    "doorbelld": daemon._parser,
    "doorbell-agency": agency._parser,
    "doorbell-owner": owner._parser,
}
BIN = Path(sys.executable).parent


def value_options(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(sub-command path, long option) for every option that takes one value."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from value_options(child, (*path, name))
        elif action.option_strings and action.nargs is None:
            yield path, max(action.option_strings, key=len)


TABLE = [
    (script, path, option)
    for script, make in SCRIPTS.items()
    for path, option in value_options(make())
]


def test_the_table_covers_the_keys_times_recipients_and_ids() -> None:
    options = {(script, option) for script, _path, option in TABLE}
    for expected in [
        ("doorbell-agency", "--owner-key"),
        ("doorbell-agency", "--trust-key"),
        ("doorbell-agency", "--recipient"),
        ("doorbell-agency", "--start"),
        ("doorbell-owner", "--rfa"),
        ("doorbell-owner", "--device"),
        ("doorbellctl", "--retry"),
        ("doorbellctl", "--cancel"),
        ("doorbellctl", "--start"),
    ]:
        assert expected in options
    assert len(TABLE) >= 40


def run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(exist_ok=True)
    # one missing config for both runs: an error naming it must read the same in both
    env = {**os.environ, "HOME": str(cwd), "DOORBELL_CONFIG": str(cwd.parent / "none.yaml")}
    return subprocess.run(
        [str(BIN / script), *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


@pytest.mark.parametrize(("script", "path", "option"), TABLE, ids=lambda v: str(v))
def test_every_option_takes_a_value_that_begins_with_a_dash(
    script: str, path: tuple[str, ...], option: str, tmp_path: Path
) -> None:
    # Only this option is given: the command then fails on what is missing (or on the
    # value itself), and it must fail the same way whichever form the value came in.
    value = "-Xk2Pq_9"
    # Each runs in its own directory (keygen --out really writes keys there).
    spaced = run(script, [*path, option, value], tmp_path / "a")
    joined = run(script, [*path, f"{option}={value}"], tmp_path / "b")
    assert "expected one argument" not in spaced.stderr
    assert "unrecognized arguments" not in spaced.stderr
    assert (spaced.returncode, spaced.stderr) == (joined.returncode, joined.stderr)


def test_a_positional_id_that_begins_with_a_dash_goes_after_double_dash(tmp_path: Path) -> None:
    result = run(
        "doorbellctl", ["--config", str(tmp_path / "none.yaml"), "deny", "--", "-x"], tmp_path
    )
    assert result.returncode == 2 and "usage:" not in result.stderr  # the config is missing
    assert "none.yaml" in result.stderr


def toy() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="toy")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify")
    verify.add_argument("--owner-key", action="append")
    verify.add_argument("--no-stamps", action="store_true")
    verify.add_argument("manifest")
    return parser


@given(
    key=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=2,  # argparse itself drops a value that is exactly "--"
        max_size=43,
    ).map(lambda t: "-" + t),
    config=st.text(alphabet="-abc/.", min_size=1, max_size=8).filter(lambda t: t != "--"),
)
def test_any_dash_value_reaches_its_option(key: str, config: str) -> None:
    args = toy().parse_args(
        ["--config", config, "verify", "--owner-key", key, "--owner-key", key, "m.age"]
    )
    assert args.config == config and args.owner_key == [key, key] and args.manifest == "m.age"


def test_a_forgotten_value_still_gets_argparses_error() -> None:
    assert join_option_values(toy(), ["--config", "--config", "x"]) == [
        "--config",
        "--config=x",
    ]
    with pytest.raises(SystemExit):
        toy().parse_args(["verify", "--owner-key", "--no-stamps", "m.age"])


def test_abbreviated_options_are_joined_too() -> None:
    args = toy().parse_args(["verify", "--owner", "-abc", "m.age"])
    assert args.owner_key == ["-abc"]


def test_the_benchmark_entry_point_reads_dash_values() -> None:
    parser = commands._parser()
    args = parser.parse_args(["clip", "--dir", "-d", "--start", "-s", "--end", "-e", "--out", "-o"])
    assert (str(args.dir), args.start, args.end, str(args.out)) == ("-d", "-s", "-e", "-o")
