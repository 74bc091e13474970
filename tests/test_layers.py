"""The house reads bottom-up: a part imports only the parts below it (checked with ast
over the source, function-level and TYPE_CHECKING imports included).

    foundation -> recorder -> sync -> firmware_config -> device -> cloud

foundation imports nothing of the project; the recorder no sync, device or cloud; sync
no device or cloud; nothing on the device imports cloud (the reference tools). And no
module imports itself round a circle: the module-level imports of the project's modules
form no cycle."""

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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runs_at_import(tree: ast.Module) -> list[ast.stmt]:
    """The statements run when the module is imported: not function bodies, and not an
    `if TYPE_CHECKING:` block (only a type checker reads it)."""
    found: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        found.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(getattr(node, field, []))
    return found


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The project's modules that importing `path` imports (a `from a import b` names
    module a.b when there is one, else a)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in _runs_at_import(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in found if name in modules} - {here}


def import_graph() -> dict[str, set[str]]:
    paths = [path for part in LADDER for path in sorted((ROOT / part).rglob("*.py"))]
    modules = {module_name(path) for path in paths}
    return {module_name(path): module_imports(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_module_level_imports_form_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 70 and graph["recorder.sources"] >= {"recorder.frames"}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


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
