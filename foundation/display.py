"""Showing text that came from the network to a person (a terminal, a log).

A request's strings are chosen by whoever signed it; the device refuses control and
bidirectional-formatting characters in the fields it knows (protocol.md §4 rule 10), but
every place a person reads a network string still escapes it, so that no escape sequence
can redraw a terminal (turn a 12-hour window into one minute, hide a line) and no
right-to-left override can reorder what is shown. The escaping is visible and
reversible: `\\x1b`, `\\u202e`, and a backslash shown as `\\\\`.
"""

from __future__ import annotations

import re
import unicodedata

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
