"""The house reads bottom-up: a part imports only the parts below it (checked with ast
over the source, function-level and TYPE_CHECKING imports included).

    foundation -> recorder -> sync -> firmware_config -> device -> cloud

foundation imports nothing of the project; the recorder no sync, device or cloud; sync
no device or cloud; nothing on the device imports cloud (the reference tools)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LADDER = ["foundation", "recorder", "sync", "firmware_config", "device", "cloud"]


def imports_of(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops & set(LADDER)


@pytest.mark.parametrize("part", LADDER)
def test_a_part_imports_only_the_parts_below_it(part: str) -> None:
    allowed = set(LADDER[: LADDER.index(part) + 1])
    upward = {
        str(path.relative_to(ROOT)): sorted(imports_of(path) - allowed)
        for path in sorted((ROOT / part).rglob("*.py"))
        if imports_of(path) - allowed
    }
    assert upward == {}, f"{part} imports upward"


def test_the_ladder_covers_every_package() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(LADDER)
