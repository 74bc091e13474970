"""The audit log: chain, signed head, power-cut recovery, tamper detection, coalescing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from device.audit import (
    AuditError,
    AuditLog,
    read_audit,
    render_audit_table,
    render_verify_report,
    verify_audit,
)
from device.audit_fields import REDACTED
from device.audit_verify import GENESIS, head_message, head_path_for
from foundation.clock import FakeClock
from foundation.times import parse_time
from sync.keys import SigningKey, b64url_encode

T0 = parse_time("2026-11-28T13:00:00Z")
RFA_ID = "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b"


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def make_log(path: Path, key: SigningKey, clock: FakeClock, n: int) -> AuditLog:
    log = AuditLog.open(path, key, clock=clock)
    for i in range(n):
        log.append("rfa_accepted", {"rfa_id": f"id-{i}", "agency_id": "sfpd", "case_number": i})
        clock.advance(1)
    return log


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_links_each_entry_to_the_previous_line_bytes(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = make_log(path, key, clock, 3)
    raw = lines_of(path)
    docs = [json.loads(line) for line in raw]
    assert [d["seq"] for d in docs] == [1, 2, 3]
    assert docs[0]["prev"] == GENESIS
    import hashlib

    assert docs[1]["prev"] == hashlib.sha256(raw[0].rstrip(b"\n")).hexdigest()
    assert docs[2]["prev"] == hashlib.sha256(raw[1].rstrip(b"\n")).hexdigest()
    head = log.head()
    assert head.entries == 3
    # protocol.md §7: h_i = SHA-256(h_{i-1} || e_i), h_0 = 32 zero bytes
    e = [hashlib.sha256(line.rstrip(b"\n")).digest() for line in raw]
    h = bytes(32)
    for value in e:
        h = hashlib.sha256(h + value).digest()
    assert head.sha256 == h.hex()
    assert head.to_json() == {"entries": 3, "sha256": h.hex(), "recent": [v.hex() for v in e]}
    assert docs[0]["at"] == "2026-11-28T13:00:00Z"
    report = verify_audit(path, key.public)
    assert report.ok and report.entries == 3 and report.first_broken is None
    assert "audit log OK: 3 entries" in render_verify_report(report)


def test_head_signature_is_checkable_with_the_documented_message(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = make_log(path, key, clock, 2)
    doc = json.loads(head_path_for(path).read_text())
    from sync.keys import b64url_decode

    key.public.verify(b64url_decode(doc["sig"]), head_message(2, log.head().sha256))
    assert doc["kid"] == key.kid


def test_empty_log_has_a_signed_head_and_verifies(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    assert log.head().entries == 0 and log.head().sha256 == GENESIS
    assert verify_audit(path, key.public).ok
    assert render_audit_table(log.entries()) == "the audit log is empty\n"


def test_reopen_continues_the_chain(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 2).close()
    log = AuditLog.open(path, key, clock=clock)
    assert log.head().entries == 2
    log.append("expired", {"rfa_id": RFA_ID})
    assert [e.seq for e in log.entries()] == [1, 2, 3]
    assert verify_audit(path, key.public).ok


# ------------------------------------------------------------------ tampering


def test_edited_middle_entry_is_named(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 5).close()
    raw = lines_of(path)
    raw[2] = raw[2].replace(b"id-2", b"id-X")
    path.write_bytes(b"".join(raw))
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 3
    assert "entry 3" in (report.problem or "")
    assert "first broken entry: 3" in render_verify_report(report)


def test_edited_last_entry_fails_against_the_head(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 4).close()
    raw = lines_of(path)
    raw[3] = raw[3].replace(b"sfpd", b"nypd")
    path.write_bytes(b"".join(raw))
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 4


def test_deleted_middle_entry_is_named(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 5).close()
    raw = lines_of(path)
    del raw[1]
    path.write_bytes(b"".join(raw))
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 2
    assert "deleted" in (report.problem or "")


def test_reordered_entries_are_named(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 5).close()
    raw = lines_of(path)
    raw[2], raw[3] = raw[3], raw[2]
    path.write_bytes(b"".join(raw))
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 3


def test_inserted_entry_with_recomputed_links_fails_the_head(tmp_path, key, clock):
    """An attacker who rebuilds the whole chain still cannot sign the head."""
    import hashlib

    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 3).close()
    docs = [json.loads(line) for line in lines_of(path)]
    docs.insert(1, {**docs[1], "event": "decision", "fields": {"rfa_id": "forged"}})
    out, prev = [], GENESIS
    for seq, doc in enumerate(docs, 1):
        doc = {**doc, "seq": seq, "prev": prev}
        line = json.dumps(doc, separators=(",", ":")).encode()
        prev = hashlib.sha256(line).hexdigest()
        out.append(line + b"\n")
    path.write_bytes(b"".join(out))
    report = verify_audit(path, key.public)
    assert not report.ok
    assert report.first_broken is not None and report.first_broken <= 3


def test_truncated_tail_is_caught_by_the_head_count(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 4).close()
    path.write_bytes(b"".join(lines_of(path)[:3]))
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 4
    assert "cut off" in (report.problem or "")


def test_deleted_last_entry_with_a_rewritten_head_fails_the_signature(tmp_path, key, clock):
    import hashlib

    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 4).close()
    raw = lines_of(path)[:3]
    path.write_bytes(b"".join(raw))
    sha = hashlib.sha256(raw[-1].rstrip(b"\n")).hexdigest()
    forger = SigningKey.generate()  # the attacker does not hold the device key
    head = {
        "v": 1,
        "entries": 3,
        "sha256": sha,
        "kid": key.kid,
        "sig": b64url_encode(forger.sign(head_message(3, sha))),
    }
    head_path_for(path).write_text(json.dumps(head))
    report = verify_audit(path, key.public)
    assert not report.ok
    assert "signature" in (report.problem or "")
    assert "BROKEN" in render_verify_report(report)


def test_missing_head_is_reported(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 2).close()
    head_path_for(path).unlink()
    report = verify_audit(path, key.public)
    assert not report.ok and "missing" in (report.problem or "")


def test_a_different_device_key_does_not_verify(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 2).close()
    assert not verify_audit(path, SigningKey.generate().public).ok


# ------------------------------------------------------------------ power cuts


def test_torn_last_line_is_dropped_on_open(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 3).close()
    whole = path.read_bytes()
    with path.open("ab") as handle:  # a power cut half-way through writing entry 4
        handle.write(b'{"seq":4,"at":"2026-11-28T13:00:0')
    report = verify_audit(path, key.public)
    assert report.ok and report.torn_tail and report.entries == 3
    log = AuditLog.open(path, key, clock=clock)
    assert path.read_bytes() == whole
    assert log.head().entries == 3
    log.append("expired", {"rfa_id": RFA_ID})
    assert verify_audit(path, key.public).ok
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4]


def test_append_whose_head_was_not_written_is_signed_on_open(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 2).close()
    old_head = head_path_for(path).read_bytes()
    log = AuditLog.open(path, key, clock=clock)
    log.append("expired", {"rfa_id": RFA_ID})
    log.close()
    head_path_for(path).write_bytes(old_head)  # power cut between the fsync and the rename
    report = verify_audit(path, key.public)
    assert not report.ok and report.first_broken == 3
    log = AuditLog.open(path, key, clock=clock)
    assert log.head().entries == 3
    assert verify_audit(path, key.public).ok


def test_open_never_signs_over_a_tampered_log(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 4).close()
    raw = lines_of(path)
    del raw[1]
    path.write_bytes(b"".join(raw))
    log = AuditLog.open(path, key, clock=clock)
    entries = list(log.entries())
    assert [e.event for e in entries] == ["audit_reset"]
    assert entries[0].fields["first_broken"] == 2
    kept = list(tmp_path.glob("audit.jsonl.broken-*"))
    assert len(kept) == 2  # the log and its head, kept as evidence
    assert verify_audit(path, key.public).ok


# ------------------------------------------------------------------ rejections


def test_a_flood_of_rejections_writes_one_entry_per_reason_per_minute(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    minute = T0
    for i in range(20_000):
        log.count_rejection("bad_signature" if i % 3 else "oversized", minute + i % 50_000)
    assert log.head().entries == 0  # nothing written while the minute lasts
    log.flush(minute + 30_000)
    assert log.head().entries == 0
    log.count_rejection("replay", minute + 61_000)  # next minute: the previous one is written
    entries = list(log.entries())
    assert [(e.event, e.fields["reason"], e.fields["count"]) for e in entries] == [
        ("rejections", "bad_signature", 13_333),
        ("rejections", "oversized", 6_667),
    ]
    assert entries[0].fields["minute"] == "2026-11-28T13:00:00Z"
    log.flush(minute + 125_000)
    assert [e.fields["reason"] for e in log.entries()][-1] == "replay"
    assert verify_audit(path, key.public).ok


def test_rejections_are_written_before_the_next_append_after_the_minute(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    log.count_rejection("unknown_key", clock.wall_ms())
    clock.advance(61)
    log.append("expired", {"rfa_id": RFA_ID})
    assert [e.event for e in log.entries()] == ["rejections", "expired"]


def test_close_writes_the_current_minute(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    log.count_rejection("malformed", clock.wall_ms())
    log.close()
    assert [e.fields["count"] for e in read_audit(path)] == [1]
    with pytest.raises(AuditError):
        log.append("expired", {"rfa_id": RFA_ID})


# ------------------------------------------------------------------ what may be written


@pytest.mark.parametrize(
    "name",
    ["email", "phone", "name", "address", "contact", "owner_key", "secret", "identity",
     "password", "investigator_email", "Contact"],
)  # fmt: skip
def test_fields_that_could_hold_contact_details_or_keys_are_refused(tmp_path, key, clock, name):
    log = AuditLog.open(tmp_path / "audit.jsonl", key, clock=clock)
    with pytest.raises(AuditError):
        log.append("decision", {"rfa_id": RFA_ID, name: "x"})
    with pytest.raises(AuditError):
        log.append("decision", {"rfa_id": RFA_ID, "nested": {name: "x"}})
    assert log.head().entries == 0


@pytest.mark.parametrize(
    "value",
    [
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----",
        "a.rivera@example.gov",
    ],
)
def test_values_that_look_like_keys_or_contacts_are_redacted(tmp_path, key, clock, value):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    log.append("rfa_rejected", {"rfa_id": RFA_ID, "reason": value})
    assert value.encode() not in path.read_bytes()
    assert next(log.entries()).fields["reason"] == REDACTED


def test_the_documented_events_are_accepted(tmp_path, key, clock):
    from foundation.times import Window

    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)
    window = Window(T0 - 3_600_000, T0 - 1_800_000)
    log.append("rfa_accepted", {"rfa_id": RFA_ID, "agency_id": "sfpd", "case_number": "C-1"})
    log.append("rfa_rejected", {"rfa_id": RFA_ID, "reason": "out_of_area"})
    log.append("rejections", {"reason": "bad_signature", "count": 3, "minute": "x"})
    log.append(
        "decision",
        {"rfa_id": RFA_ID, "decision": "approve", "method": "button", "window": window,
         "share_contact": True, "owner_kid": None},
    )  # fmt: skip
    log.append("expired", {"rfa_id": RFA_ID})
    log.append("share", {"rfa_id": RFA_ID, "state": "failed", "error": "no footage"})
    table = render_audit_table(log.entries())
    assert table.count(RFA_ID) == 5  # ids in full, never shortened
    assert "2026-11-28T12:00:00Z..2026-11-28T12:30:00Z" in table
    assert "reason=out_of_area" in table
    assert verify_audit(path, key.public).ok


def test_concurrent_appends_keep_one_chain(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, key, clock=clock)

    def work(tag: str) -> None:
        for i in range(25):
            log.append("share", {"rfa_id": f"{tag}-{i}", "state": "uploading", "error": None})
            log.count_rejection("replay", T0)

    threads = [threading.Thread(target=work, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    log.close(T0)
    report = verify_audit(path, key.public)
    assert report.ok and report.entries == 76
    assert [e.fields["count"] for e in read_audit(path) if e.event == "rejections"] == [75]


def test_open_with_a_corrupt_head_keeps_the_evidence_and_starts_over(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    make_log(path, key, clock, 3).close()
    old = path.read_bytes()
    head_path_for(path).write_text("{not json")
    log = AuditLog.open(path, key, clock=clock)
    assert [e.event for e in log.entries()] == ["audit_reset"]
    (kept,) = [p for p in tmp_path.glob("audit.jsonl.broken-*") if not p.name.endswith(".head")]
    assert kept.read_bytes() == old
    assert verify_audit(path, key.public).ok


def test_a_brand_new_log_starts_quietly_with_a_signed_empty_head(tmp_path, key, clock, caplog):
    path = tmp_path / "audit.jsonl"
    with caplog.at_level("DEBUG", logger="device.audit"):
        log = AuditLog.open(path, key, clock=clock)
    assert not [r for r in caplog.records if "power cut" in r.getMessage()]
    assert head_path_for(path).exists()
    assert verify_audit(path, key.public).ok
    log.close()


def test_a_missing_head_file_is_an_audit_reset_not_a_silent_resign(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    for entries in (1, 3):
        log = make_log(path, key, clock, entries)
        log.close()
        head_path_for(path).unlink()
        log = AuditLog.open(path, key, clock=clock)
        [first, *_] = list(log.entries())
        assert first.event == "audit_reset"
        assert first.fields["reason"] == "the signed head file is missing"
        assert first.fields["previous_entries"] == entries
        assert log.head().entries == 1
        log.close()
        path.unlink()
        head_path_for(path).unlink()


def test_recent_lists_the_last_32_entry_hashes_oldest_first(tmp_path, key, clock):
    import hashlib

    path = tmp_path / "audit.jsonl"
    log = make_log(path, key, clock, 40)
    raw = lines_of(path)
    head = log.head()
    assert head.recent == tuple(hashlib.sha256(r.rstrip(b"\n")).hexdigest() for r in raw[-32:])
    log.close()
    reopened = AuditLog.open(path, key, clock=clock)
    assert reopened.head() == head
    reopened.close()


# --- upgrading from protocol revision 1.0 --------------------------------------------------


def write_1_0_log(path: Path, key: SigningKey, n: int, *, vouched: int | None = None) -> None:
    """A log as revision 1.0 wrote it, by its rules (git history, device/audit.py before
    the chain values): the same entry lines, and a head naming e_n, the SHA-256 of entry
    n's line (64 zeros when empty), signed over `doorbell-audit-head\\n{n}\\n{e_n}`."""
    import hashlib

    lines = []
    prev = GENESIS
    for i in range(n):
        doc = {
            "seq": i + 1,
            "at": f"2026-11-2{i % 8 + 1}T10:00:00Z",
            "event": "rfa_accepted",
            "fields": {"rfa_id": f"id-{i}", "agency_id": "sfpd", "case_number": str(i)},
            "prev": prev,
        }
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    count = n if vouched is None else vouched
    sha = GENESIS if count == 0 else hashlib.sha256(lines[count - 1]).hexdigest()
    head = {
        "v": 1,
        "entries": count,
        "sha256": sha,
        "kid": key.kid,
        "sig": b64url_encode(key.sign(head_message(count, sha))),
    }
    head_path_for(path).write_bytes(json.dumps(head, separators=(",", ":")).encode() + b"\n")


@pytest.mark.parametrize("vouched", [5, 4], ids=["whole-log", "interrupted-append"])
def test_a_1_0_head_is_verified_and_upgraded_not_reported_as_a_reset(
    tmp_path, key, clock, caplog, vouched
):
    path = tmp_path / "audit.jsonl"
    write_1_0_log(path, key, 5, vouched=vouched)
    before = path.read_bytes()
    report = verify_audit(path, key.public)
    assert not report.ok and report.legacy and "1.0" in (report.problem or "")
    with caplog.at_level("INFO", logger="device.audit"):
        log = AuditLog.open(path, key, clock=clock)
    events = [e.event for e in log.entries()]
    assert events == ["rfa_accepted"] * 5 + ["audit_upgraded"]  # history kept, no reset
    assert path.read_bytes().startswith(before)  # not one byte of it rewritten
    assert not list(tmp_path.glob("*.broken-*"))
    upgraded = list(log.entries())[-1]
    assert upgraded.fields["from_revision"] == "1.0" and upgraded.fields["entries"] == 5
    assert upgraded.fields["entry_sha256"] == upgraded.prev
    lines = [r.getMessage() for r in caplog.records if "protocol 1.0" in r.getMessage()]
    assert len(lines) == 1 and "upgraded" in lines[0]
    assert verify_audit(path, key.public).ok
    assert log.head().entries == 6 and len(log.head().recent) == 6
    log.append("expired", {"rfa_id": RFA_ID})
    log.close()
    reopened = AuditLog.open(path, key, clock=clock)  # the upgrade happens once
    assert [e.event for e in reopened.entries()][-2:] == ["audit_upgraded", "expired"]


def test_a_1_0_log_that_was_edited_is_still_a_reset(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    write_1_0_log(path, key, 4)
    path.write_bytes(path.read_bytes().replace(b'"id-3"', b'"id-X"'))  # the last entry
    assert not verify_audit(path, key.public).legacy
    log = AuditLog.open(path, key, clock=clock)
    assert [e.event for e in log.entries()] == ["audit_reset"]


def test_a_1_0_log_cut_short_is_still_a_reset(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    write_1_0_log(path, key, 4, vouched=2)  # two entries beyond what the head vouches for
    assert not verify_audit(path, key.public).legacy
    log = AuditLog.open(path, key, clock=clock)
    assert [e.event for e in log.entries()] == ["audit_reset"]


def test_a_1_0_head_signed_by_another_key_or_deleted_is_still_a_reset(tmp_path, key, clock):
    path = tmp_path / "audit.jsonl"
    write_1_0_log(path, SigningKey.generate(), 3)
    assert [e.event for e in AuditLog.open(path, key, clock=clock).entries()] == ["audit_reset"]
    other = tmp_path / "other" / "audit.jsonl"
    other.parent.mkdir()
    write_1_0_log(other, key, 3)
    head_path_for(other).unlink()
    assert [e.event for e in AuditLog.open(other, key, clock=clock).entries()] == ["audit_reset"]
