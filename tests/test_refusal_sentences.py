"""Every reason a refusal gives a person is a whole plain sentence: the details of
rejected requests (sync/rfa.py) and decisions (sync/decision.py), the request flow's
own (device/flow.py) and the control socket's replies that doorbellctl prints
(device/commands.py). Found in the source with ast, so a new refusal is checked too.

The rule, checkable without judgement: it begins with a capital letter (not with a
value filled in later), ends with a period, and does not end on a word that leaves it
hanging ("the request's.", "inside the.")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ("sync/rfa.py", "sync/decision.py", "device/flow.py", "device/commands.py")
# call -> where its reason text is: a position, or a keyword
REASON_AT: dict[str, int | str] = {
    "_Refuse": 1,
    "DecisionRejected": 1,
    "Rejected": "detail",
    "Outcome": 3,
    "_count": 1,
    "_refused": 0,
    "CommandRefused": 0,
}
HANGING = re.compile(r"(\b(the|a|an|of|to|and|or|in|inside|is|not)|'s)\.$", re.I)


def whole_sentence(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Z].*\.", text, re.S)) and not HANGING.search(text)


def _text(node: ast.expr) -> str | None:
    """A literal's text; an f-string's with each value shown as `x` (so a sentence that
    would begin with a value fails the capital-letter rule)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "x" for part in node.values
        )
    return None


def reason_texts() -> list[tuple[str, int, str]]:
    found = []
    for name in FILES:
        for node in ast.walk(ast.parse((ROOT / name).read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            where = REASON_AT.get(called)
            if isinstance(where, int) and len(node.args) > where:
                arg: ast.expr | None = node.args[where]
            else:
                arg = next((k.value for k in node.keywords if k.arg == where), None)
            text = _text(arg) if arg is not None else None
            if text is not None:
                found.append((name, node.lineno, text))
    return found


def test_the_rule_tells_a_cut_sentence_from_a_whole_one() -> None:
    assert not whole_sentence("window is not inside the request's")  # issue 17's
    assert not whole_sentence("The window is not inside the request's.")
    assert not whole_sentence("x requests already pending.")
    assert whole_sentence("The window is not inside the request's window.")


def test_every_refusal_reason_is_a_whole_sentence() -> None:
    texts = reason_texts()
    assert len(texts) >= 70, "the search found the refusals"  # it did, in every file
    assert {name for name, _, _ in texts} == set(FILES)
    cut = [f"{name}:{line}: {text!r}" for name, line, text in texts if not whole_sentence(text)]
    assert cut == []


@pytest.mark.parametrize("name", FILES)
def test_no_reason_text_is_cut_to_a_length(name: str) -> None:
    """`str(exc)[:80]` made a reason end mid-word; none is cut any more."""
    assert not re.search(r"detail\s*=\s*str\(exc\)\[", (ROOT / name).read_text())
