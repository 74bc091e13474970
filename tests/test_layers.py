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


# Where a protocol fact's value appears for another reason, and why.
NOT_THE_WIRE = {
    "device/console/server.py": "the console's HTTP body limit happens to be 16 KiB too",
}
CONTRACT_INTS = {16 * 1024}  # and any padding size (a name with PAD in it)


def _folded(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Pow)):
        left, right = _folded(node.left), _folded(node.right)
        if left is not None and right is not None:
            return left * right if isinstance(node.op, ast.Mult) else left**right
    return None


def contract_facts(path: Path) -> list[str]:
    """Protocol limits and topic strings written in `path` (docstrings aside)."""
    tree = ast.parse(path.read_text())
    inner = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and _folded(node) is not None
        for child in (node.left, node.right)
    }
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.expr) and id(node) not in inner:
            value = _folded(node)
            if value in CONTRACT_INTS:
                found.append(f"line {node.lineno}: {value}")
        if isinstance(node, ast.Assign) and _folded(node.value) is not None:
            for target in node.targets:
                if isinstance(target, ast.Name) and "PAD" in target.id.upper():
                    found.append(f"line {node.lineno}: {target.id} = {_folded(node.value)}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if id(node) not in docstrings and ("rfa/v1/" in text or text.startswith("devices/")):
                found.append(f"line {node.lineno}: {text!r}")
    return found


def test_protocol_limits_and_topics_are_written_only_in_the_wire_module() -> None:
    written = {
        rel: facts
        for part in LADDER
        for path in sorted((ROOT / part).rglob("*.py"))
        if (rel := str(path.relative_to(ROOT))) not in ("foundation/wire.py", *NOT_THE_WIRE)
        and (facts := contract_facts(path))
    }
    assert written == {}


def test_the_wire_module_holds_them() -> None:
    facts = contract_facts(ROOT / "foundation" / "wire.py")
    assert any("16384" in f for f in facts) and any("4096" in f for f in facts)
    assert any("rfa/v1/" in f for f in facts)
