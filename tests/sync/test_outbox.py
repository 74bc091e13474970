"""The outbox: durable, idempotent, and honest about progress."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from foundation.times import Window
from foundation.wire import FINAL_SHARE_STATES, ShareState, canonical_json
from sync.models import ConsentMethod
from sync.outbox import Outbox, OutboxError
from tests.sync.factories import NOW_MS, AgencyKeys
from tests.sync.sharekit import make_decision, make_rfa

DAY = 86_400_000


def job(agency: AgencyKeys, *, named: bool = True, method: ConsentMethod = ConsentMethod.APP):
    rfa = make_rfa(
        agency,
        upload_url="https://uploads.example.gov/files/",
        window=Window(NOW_MS - 3_600_000, NOW_MS - 1_800_000),
        now_ms=NOW_MS,
    )
    return rfa, make_decision(rfa, named=named, now_ms=NOW_MS, method=method)


def test_enqueue_is_durable_idempotent_and_round_trips(tmp_path: Path):
    agency = AgencyKeys.generate()
    rfa, decision = job(agency)
    outbox = Outbox.open(tmp_path / "outbox")
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS + 5)  # changes nothing
    assert outbox.has_job(rfa.id) and not outbox.has_job("other")
    assert outbox.active_count() == 1
    outbox.close()

    reopened = Outbox.open(tmp_path / "outbox")
    stored = reopened.job(rfa.id)
    assert stored is not None
    assert stored.rfa == rfa and stored.decision == decision
    assert stored.state == "queued" and stored.created_ms == NOW_MS
    assert reopened.shares(NOW_MS) == [
        {
            "rfa_id": rfa.id,
            "state": "queued",
            "bytes_sent": 0,
            "bytes_total": 0,
            "manifest_sha256": None,
            "error": None,
            "starts_at": None,  # a named share does not wait
        }
    ]


def test_share_states_are_the_protocol_s_words_on_the_wire(tmp_path: Path):
    """protocol.md §6.3's states, written here again so that a renamed one fails; what
    the owner channel signs (RFC 8785) and the CLI prints (json) is the plain word."""
    assert [str(s) for s in ShareState] == ["queued", "uploading", "done", "failed", "cancelled"]
    assert set(FINAL_SHARE_STATES) == {"done", "failed", "cancelled"}
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    rfa, decision = job(agency)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.set_state(rfa.id, ShareState.UPLOADING, now_ms=NOW_MS)
    entry = outbox.shares(NOW_MS)[0]
    assert json.dumps(entry["state"]) == '"uploading"'
    assert canonical_json({"state": entry["state"]}) == b'{"state":"uploading"}'
    raw = sqlite3.connect(tmp_path / "o" / "outbox.sqlite")
    assert raw.execute("SELECT state FROM jobs").fetchone() == ("uploading",)
    with pytest.raises(OutboxError, match="unknown share state 'sent'"):
        outbox.set_state(rfa.id, "sent", now_ms=NOW_MS)  # type: ignore[arg-type]
    assert outbox.state(rfa.id) is ShareState.UPLOADING


def test_database_is_wal_with_full_sync(tmp_path: Path):
    outbox = Outbox.open(tmp_path / "o")
    assert outbox._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_only_approvals_with_safe_ids_are_queued(tmp_path: Path):
    agency = AgencyKeys.generate()
    rfa, decision = job(agency)
    outbox = Outbox.open(tmp_path / "o")
    from dataclasses import replace

    with pytest.raises(OutboxError):
        outbox.enqueue(rfa, replace(decision, approve=False), now_ms=NOW_MS)
    with pytest.raises(OutboxError):
        outbox.enqueue(rfa, replace(decision, rfa_id="x"), now_ms=NOW_MS)
    evil = replace(rfa, id="../../etc")
    with pytest.raises(OutboxError):
        outbox.enqueue(evil, replace(decision, rfa_id=evil.id), now_ms=NOW_MS)
    assert outbox.active_count() == 0


def test_progress_counts_ciphertext_of_both_objects(tmp_path: Path):
    agency = AgencyKeys.generate()
    rfa, decision = job(agency)
    outbox = Outbox.open(tmp_path / "o")
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.record_built(rfa.id, manifest_sha256="ab" * 32, sizes={"manifest": 1000, "clip": 9000})
    outbox.set_upload_url(rfa.id, "manifest", "https://uploads.example.gov/files/1")
    outbox.set_offset(rfa.id, "manifest", 1000)
    outbox.set_upload_url(rfa.id, "clip", "https://uploads.example.gov/files/2")
    outbox.set_offset(rfa.id, "clip", 4000)
    (entry,) = outbox.shares(NOW_MS)
    assert (entry["bytes_sent"], entry["bytes_total"]) == (5000, 10000)
    assert entry["manifest_sha256"] == "ab" * 32
    stored = outbox.job(rfa.id)
    assert stored is not None
    manifest = stored.object("manifest")
    clip = stored.object("clip")
    assert manifest is not None and manifest.done
    assert clip is not None and not clip.done and clip.offset == 4000
    assert clip.upload_url == "https://uploads.example.gov/files/2"


def test_shares_lists_last_7_days_at_most_20_newest_first(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    ids = []
    for i in range(25):
        rfa, decision = job(agency)
        outbox.enqueue(rfa, decision, now_ms=NOW_MS - 30 * DAY + i * DAY)
        ids.append(rfa.id)
    for rfa_id in ids[:20]:  # old and finished
        outbox.set_state(rfa_id, ShareState.DONE, now_ms=NOW_MS - 30 * DAY)
    listed = outbox.shares(NOW_MS)
    assert [e["rfa_id"] for e in listed] == list(reversed(ids[20:]))
    many = outbox.shares(NOW_MS - 29 * DAY)  # from a point of view where all are recent
    assert len(many) == 20
    assert many[0]["rfa_id"] == ids[-1]


def test_retry_and_cancel(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    rfa, decision = job(agency)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    assert not outbox.retry(rfa.id)  # only failed shares are retried
    outbox.record_failure(rfa.id, error="x", attempts=5, next_attempt_ms=NOW_MS + 10, now_ms=NOW_MS)
    assert outbox.set_state(rfa.id, ShareState.FAILED, now_ms=NOW_MS, error="server said 500")
    assert outbox.shares(NOW_MS)[0]["error"] == "server said 500"
    assert outbox.retry(rfa.id)
    stored = outbox.job(rfa.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.error) == ("queued", 0, None)

    folder = outbox.job_dir(rfa.id)
    folder.mkdir()
    outbox.object_path(rfa.id, "clip").write_bytes(b"cipher")
    assert outbox.cancel(rfa.id)
    assert not folder.exists()
    assert outbox.state(rfa.id) == "cancelled"
    assert not outbox.cancel(rfa.id)
    assert not outbox.retry(rfa.id)
    # a cancelled job cannot be moved by the worker any more
    assert not outbox.set_state(rfa.id, ShareState.UPLOADING, now_ms=NOW_MS)
    assert outbox.active_count() == 0


def test_orphan_object_folders_are_removed_on_open(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    rfa, decision = job(agency)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.job_dir(rfa.id).mkdir()
    stray = tmp_path / "o" / "objects" / "leftover"
    stray.mkdir()
    outbox.close()
    Outbox.open(tmp_path / "o")
    assert not stray.exists()
    assert (tmp_path / "o" / "objects" / rfa.id).exists()


def test_due_respects_backoff(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    rfa, decision = job(agency)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    found, later = outbox.due(NOW_MS)
    assert [j.rfa_id for j in found] == [rfa.id] and later is None
    outbox.record_failure(
        rfa.id, error="503", attempts=1, next_attempt_ms=NOW_MS + 5000, now_ms=NOW_MS
    )
    found, later = outbox.due(NOW_MS)
    assert found == [] and later == NOW_MS + 5000
    found, later = outbox.due(NOW_MS + 5000)
    assert [j.rfa_id for j in found] == [rfa.id] and later is None


def test_due_lists_every_due_job_oldest_first(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    made = [job(agency) for _ in range(3)]
    for n, (rfa, decision) in enumerate(made):
        outbox.enqueue(rfa, decision, now_ms=NOW_MS + n)
    found, _ = outbox.due(NOW_MS + 10)
    assert [j.rfa_id for j in found] == [rfa.id for rfa, _d in made]


def test_a_second_process_sees_committed_progress(tmp_path: Path):
    agency = AgencyKeys.generate()
    outbox = Outbox.open(tmp_path / "o")
    rfa, decision = job(agency)
    outbox.enqueue(rfa, decision, now_ms=NOW_MS)
    outbox.record_built(rfa.id, manifest_sha256="00" * 32, sizes={"manifest": 1, "clip": 2})
    outbox.set_offset(rfa.id, "clip", 1)
    other = sqlite3.connect(tmp_path / "o" / "outbox.sqlite")
    assert other.execute("SELECT offset FROM objects WHERE kind = 'clip'").fetchone()[0] == 1
