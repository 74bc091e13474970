"""Network strings shown to a person are escaped: nothing can redraw a terminal."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from device.audit_render import render_audit_table
from device.audit_verify import AuditEntry
from device.cli import render_pending
from foundation.display import agency_label, shown

HOSTILE = "\x1b[2J\x1b[1;1Hwindow 10:00..10:01\u202e\r\n\x9b31m\u2066x\u200f\x00\\"


def dangerous(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for ch in text)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_nothing_shown_holds_a_control_format_or_separator_character(text: str) -> None:
    out = shown(text)
    assert not dangerous(out)
    # reversible enough to be honest: plain text is left alone
    if not dangerous(text) and "\\" not in text:
        assert out == text


def test_the_escapes_are_visible() -> None:
    out = shown(HOSTILE)
    assert "\\x1b[2J" in out and "\\u202e" in out and "\\x0d\\x0a" in out and "\\\\" in out
    assert agency_label("sfpd", "\u202eDPFS") == 'sfpd ("\\u202eDPFS")'


def test_every_field_of_doorbellctl_pending_is_escaped() -> None:
    entry = {
        "id": HOSTILE,
        "agency": {"id": HOSTILE, "name": HOSTILE},
        "case_number": HOSTILE,
        "investigator": {"name": HOSTILE, "email": HOSTILE, "phone": HOSTILE},
        "window": {"start": HOSTILE, "end": HOSTILE},
        "footage_seconds": 1.0,
        "decide_by": HOSTILE,
        "description": HOSTILE,
    }
    out = render_pending(entry)
    assert not dangerous(out.replace("\n", ""))
    assert out.count("\\x1b[2J") == 13  # every one of the 13 places a string is shown


def test_the_audit_table_is_escaped() -> None:
    entry = AuditEntry(1, HOSTILE, HOSTILE, {"rfa_id": HOSTILE, "reason": HOSTILE}, "0" * 64, "")
    out = render_audit_table([entry])
    assert not dangerous(out.replace("\n", ""))
    assert out.count("\\x1b[2J") == 4
