"""Showing text that came from the network to a person (a terminal, a log).

A request's strings are chosen by whoever signed it; the device refuses control and
bidirectional-formatting characters in the fields it knows (protocol.md §4 rule 10), but
every place a person reads a network string still escapes it, so that no escape sequence
can redraw a terminal (turn a 12-hour window into one minute, hide a line) and no
right-to-left override can reorder what is shown. The escaping is visible and
reversible: `\\x1b`, `\\u202e`, and a backslash shown as `\\\\`.

Logs: the project's own log calls escape each network string with `shown` where they
interpolate it; `EscapingFormatter` escapes what those calls cannot reach (the messages
of libraries' loggers, and tracebacks, whose exception texts may quote a peer).
"""

from __future__ import annotations

import logging
import re
import traceback
import unicodedata
from typing import IO, Any

# C0, DEL, C1, and the characters that change the direction or shaping of text, plus the
# line and paragraph separators; everything Unicode calls a format or control character.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\\]")


_HIDDEN = frozenset({"Cf", "Cc", "Cs", "Co"})


def _code(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    return "\\\\" if ch == "\\" else _code(ch)


def shown(value: object, *, limit: int | None = None) -> str:
    """`value` as text safe to print: unsafe characters escaped, other format characters
    (category Cf, e.g. soft hyphen, tag characters) escaped too; cut to `limit` characters
    (with an ellipsis) when given."""
    text = "-" if value is None else str(value)
    text = _UNSAFE.sub(_escape, text)
    if any(unicodedata.category(ch) in _HIDDEN for ch in text):
        text = "".join(_code(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def agency_label(agency_id: object, name: object) -> str:
    """The key-bound agency id beside the self-chosen name: `sfpd ("San Francisco PD")`.
    The name is whatever the agency wrote; only the id is vouched for by the device's
    trust in that agency's key."""
    return f'{shown(agency_id)} ("{shown(name)}")'


# The top-level packages whose log calls escape network strings themselves.
OWN_PACKAGES = ("device", "sync", "recorder", "foundation", "firmware_config", "cloud")


def _each_line(text: str) -> str:
    return "\n".join(shown(line) for line in text.split("\n"))


def _exception_lines(report: traceback.TracebackException) -> set[str]:
    """What `format_exception_only` yields for every exception in `report`'s chain."""
    found: set[str] = set()
    seen: set[int] = set()
    todo = [report]
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        found.update(one.format_exception_only())
        todo += [t for t in (one.__cause__, one.__context__) if t is not None]
        todo += list(getattr(one, "exceptions", None) or [])
    return found


class EscapingFormatter(logging.Formatter):
    """A formatter for a process that hears from the network: a message logged by a
    library (urllib3, paho, uvicorn, anything outside `own`) is escaped whole, as is
    every line of a traceback or stack; a message of our own is left as its call wrote it
    (already escaped there, and escaping it twice would double its backslashes). Each
    record is formatted from a copy, so another handler's cached traceback is not used."""

    def __init__(self, fmt: str, *, own: tuple[str, ...] = OWN_PACKAGES) -> None:
        super().__init__(fmt)
        self._own = own

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord(record.__dict__)
        copy.exc_text = None
        if copy.name.split(".", 1)[0] not in self._own:
            copy.msg, copy.args = shown(record.getMessage()), None
        return super().format(copy)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        if ei[1] is None:
            return _each_line(super().formatException(ei))
        report = traceback.TracebackException(*ei)
        messages = _exception_lines(report)
        out = []
        for chunk in report.format():
            # An exception's own text is escaped whole: a line break a peer put in it
            # shows as \x0a and cannot start a line that looks like another record.
            whole = chunk in messages
            out.append(shown(chunk.removesuffix("\n")) + "\n" if whole else _each_line(chunk))
        return "".join(out).removesuffix("\n")

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _each_line(super().formatStack(stack_info))


def log_to(stream: IO[str], *, level: str | int, fmt: str) -> None:
    """Send every log record to `stream` through one `EscapingFormatter`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
