"""StateStore: durable seen ids, nonces, pending requests and decisions."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from device.state import RequestState, StateStore
from foundation.times import Window
from sync.models import ConsentMethod, Decision, rfa_from_json, rfa_to_json
from sync.rfa import Accepted, check_rfa
from tests.sync.factories import HOUR_MS, NOW_MS, AgencyKeys, device_facts, rfa_envelope


def make_rfa(agency: AgencyKeys, **kw):  # type: ignore[no-untyped-def]
    result = check_rfa(
        rfa_envelope(agency, **kw), device_facts(), agency.trusted(), set(), NOW_MS, pending_count=0
    )
    assert isinstance(result, Accepted), result
    return result.rfa


def decision(rfa_id: str, *, approve: bool, nonce: str | None = "n1") -> Decision:
    return Decision(
        rfa_id=rfa_id,
        approve=approve,
        window=Window(NOW_MS - 3 * HOUR_MS, NOW_MS - 2 * HOUR_MS),
        share_contact=False,
        method=ConsentMethod.APP,
        at_ms=NOW_MS + 1000,
        owner_kid="0123456789abcdef",
        envelope_text="{}",
        nonce=nonce,
    )


def test_rfa_round_trips_through_json() -> None:
    rfa = make_rfa(AgencyKeys.generate())
    assert rfa_from_json(rfa_to_json(rfa)) == rfa


def test_pending_seen_and_nonces_survive_reopen(tmp_path: Path) -> None:
    agency = AgencyKeys.generate()
    a, b = make_rfa(agency), make_rfa(agency)
    store = StateStore.open(tmp_path / "state.sqlite")
    assert store.add_pending(a, received_at_ms=NOW_MS, decide_by_ms=NOW_MS + HOUR_MS)
    assert not store.add_pending(a, received_at_ms=NOW_MS, decide_by_ms=NOW_MS + HOUR_MS)
    assert store.add_pending(b, received_at_ms=NOW_MS + 1, decide_by_ms=NOW_MS + HOUR_MS)
    store.mark_seen("rejected-id", NOW_MS)
    assert store.record_decision(decision(b.id, approve=False, nonce="nonce-b"))
    store.close()

    again = StateStore.open(tmp_path / "state.sqlite")
    assert [p.rfa for p in again.pending()] == [a]
    for seen in (a.id, b.id, "rejected-id"):
        assert seen in again.seen_ids
    assert "never-seen" not in again.seen_ids
    assert "nonce-b" in again.used_nonces and "other" not in again.used_nonces
    denied = again.request(b.id)
    assert denied is not None and denied.state is RequestState.DENIED
    assert denied.rfa is None  # the investigator's details are not kept after a decline
    assert again.decision(b.id) == decision(b.id, approve=False, nonce="nonce-b")


def test_a_request_is_decided_or_expired_once(tmp_path: Path) -> None:
    agency = AgencyKeys.generate()
    a, b = make_rfa(agency), make_rfa(agency)
    store = StateStore.open(tmp_path / "s.sqlite")
    store.add_pending(a, received_at_ms=NOW_MS, decide_by_ms=NOW_MS + HOUR_MS)
    store.add_pending(b, received_at_ms=NOW_MS, decide_by_ms=NOW_MS + HOUR_MS)
    assert store.record_decision(decision(a.id, approve=True, nonce="x"))
    assert not store.record_decision(decision(a.id, approve=False, nonce="y"))
    assert "y" not in store.used_nonces  # the losing decision changed nothing
    assert not store.expire(a.id, NOW_MS)
    assert [(r.id, d.approve) for r, d in store.approved()] == [(a.id, True)]
    store.mark_queued(a.id)
    assert list(store.approved()) == []
    assert store.expire(b.id, NOW_MS + HOUR_MS)
    assert not store.record_decision(decision(b.id, approve=True, nonce="z"))
    assert store.pending() == []
    assert store.decision(b.id) is None


def _writer(path: str, rfa_json: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    store = StateStore.open(Path(path))
    rfa = rfa_from_json(rfa_json)
    store.add_pending(rfa, received_at_ms=NOW_MS, decide_by_ms=NOW_MS + HOUR_MS)
    ready.set()
    signal.pause()


def test_what_returned_survives_kill_9(tmp_path: Path) -> None:
    rfa = make_rfa(AgencyKeys.generate())
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(str(tmp_path / "k.sqlite"), rfa_to_json(rfa), ready))
    proc.start()
    try:
        assert ready.wait(30)
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    store = StateStore.open(tmp_path / "k.sqlite")
    assert [p.rfa.id for p in store.pending()] == [rfa.id]
    assert rfa.id in store.seen_ids
