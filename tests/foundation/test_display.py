"""Network strings shown to a person are escaped: nothing can redraw a terminal."""

from __future__ import annotations

import logging
import sys
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from device.audit_render import render_audit_table
from device.audit_verify import AuditEntry
from device.cli import render_pending
from foundation.display import EscapingFormatter, agency_label, shown

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


FORMAT = "%(levelname)s %(name)s: %(message)s"


def _record(
    name: str, msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, exc_info)


def _raised(text: str) -> BaseException:
    try:
        raise ValueError(text)
    except ValueError as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_a_librarys_message_is_one_escaped_line_whatever_it_holds(text: str) -> None:
    # urllib3, paho, uvicorn: messages our call sites never see, quoting what a peer sent
    out = EscapingFormatter(FORMAT).format(_record("urllib3.connectionpool", "got %s", text))
    assert out == f"WARNING urllib3.connectionpool: got {shown(text)}"
    assert not dangerous(out)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_our_own_message_is_left_as_its_call_escaped_it(text: str) -> None:
    out = EscapingFormatter(FORMAT).format(_record("device.flow", "request %s", shown(text)))
    assert out == f"WARNING device.flow: request {shown(text)}"  # not escaped twice
    assert not dangerous(out)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_every_line_of_a_traceback_is_escaped(text: str) -> None:
    record = _record("sync.uploader", "share lane step failed", exc=_raised(text))
    out = EscapingFormatter(FORMAT).format(record)
    lines = out.split("\n")
    assert lines[0] == "WARNING sync.uploader: share lane step failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == shown(f"ValueError: {text}" if text else "ValueError")  # one line
    assert not any(dangerous(line) for line in lines)
    # the record is formatted from a copy: a plain handler still sees the raw exception
    assert record.exc_text is None and record.exc_info is not None


def test_a_chained_exception_cannot_forge_a_record() -> None:
    try:
        try:
            raise KeyError("\x1b[2J")
        except KeyError as inner:
            raise ValueError("bad answer\nINFO device.flow: request approved") from inner
    except ValueError as exc:
        out = EscapingFormatter(FORMAT).format(_record("urllib3", "failed", exc=exc))
    assert not any(line.startswith("INFO") for line in out.split("\n"))
    assert "ValueError: bad answer\\x0aINFO device.flow" in out
    assert "KeyError: '\\\\x1b[2J'" in out  # KeyError's repr, its backslash escaped
    assert not any(dangerous(line) for line in out.split("\n"))


def test_a_stack_is_escaped_line_by_line() -> None:
    record = _record("paho", "x")
    record.stack_info = "Stack (most recent call last):\n  evil \x1b[2J\u202e"
    out = EscapingFormatter(FORMAT).format(record)
    assert out.split("\n")[-1] == "  evil \\x1b[2J\\u202e"


def test_the_daemon_logs_through_the_escaping_formatter() -> None:
    from device import daemon

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    try:
        daemon._configure_logging("info")
        formatters = [h.formatter for h in root.handlers]
        assert formatters and all(isinstance(f, EscapingFormatter) for f in formatters)
        assert all(getattr(h, "stream", None) is sys.stderr for h in root.handlers)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
