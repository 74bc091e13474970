"""What `doorbellctl audit` prints: the table and the `--verify` report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from device.audit_verify import AuditEntry, AuditReport
from foundation.display import shown


def _describe(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return f"{value['start']}..{value['end']}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "-" if value is None else str(value)


def render_audit_table(entries: Iterable[AuditEntry]) -> str:
    """A readable table for `doorbellctl audit`; request ids are shown in full."""
    rows = [("SEQ", "AT", "EVENT", "REQUEST", "DETAILS")]
    for entry in entries:
        details = ", ".join(f"{k}={_describe(v)}" for k, v in entry.fields.items() if k != "rfa_id")
        rows.append(
            (
                str(entry.seq),
                shown(entry.at),
                shown(entry.event),
                shown(_describe(entry.fields.get("rfa_id"))),
                shown(details),
            )
        )
    if len(rows) == 1:
        return "the audit log is empty\n"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def render_verify_report(report: AuditReport) -> str:
    """The text `doorbellctl audit --verify` prints (exit status: 0 when `report.ok`)."""
    if report.ok and report.head is not None:
        text = (
            f"audit log OK: {report.entries} entries, chain intact, head signature valid\n"
            f"head: entries={report.head.entries} sha256={report.head.sha256}\n"
        )
        if report.torn_tail:
            text += "note: a torn final line (an append cut by a power cut) is not an entry\n"
        return text
    where = (
        f"first broken entry: {report.first_broken}\n"
        if report.first_broken is not None
        else "first broken entry: unknown (the head itself is bad)\n"
    )
    return f"audit log BROKEN: {shown(report.problem)}\n{where}"


render_report = render_verify_report
