"""RequestFlow over the real StateStore, AuditLog, Outbox and RollingBuffer: acceptance,
rejection, the three ways to decide, expiry, share states, crash recovery, and a
property test that no share job exists without a valid owner approval."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.audit import AuditLog
from device.flow import RequestFlow
from device.identity import DeviceIdentity, load_device_identity
from device.state import StateStore
from foundation import wire
from foundation.clock import FakeClock
from foundation.times import Window, parse_time
from recorder.buffer import RollingBuffer
from sync.envelope import open_envelope
from sync.keys import SigningKey, parse_recipient
from sync.models import ConsentMethod
from sync.outbox import Outbox
from sync.seal import seal
from tests.fixtures.footage import index_footage
from tests.sync.factories import (
    DEVICE_ID,
    HOUR_MS,
    MINUTE_MS,
    NOW_MS,
    AgencyKeys,
    decision_envelope,
    device_facts,
    rfa_envelope,
)

ENTRY_KEYS = {  # protocol.md §5.1: the compact entry
    "id",
    "agency_id",
    "case_number",
    "window",
    "expires_at",
    "decide_by",
    "footage_seconds",
    "details_sha256",
}
DETAIL_KEYS = {"id", "agency", "investigator", "description", "area"}


@dataclass
class Kit:
    root: Path
    clock: FakeClock
    identity: DeviceIdentity
    agency: AgencyKeys
    owner: SigningKey
    store: StateStore
    audit: AuditLog
    outbox: Outbox
    buffer: RollingBuffer
    flow: RequestFlow

    def sealed_decision(self, rfa_id: str, *, key: SigningKey | None = None, **changes) -> bytes:  # type: ignore[no-untyped-def]
        env = decision_envelope(
            key or self.owner, rfa_id=rfa_id, now_ms=self.clock.wall_ms(), changes=changes
        )
        return seal(env, [parse_recipient(self.identity.recipient)])

    def rfa(self, **kw) -> bytes:  # type: ignore[no-untyped-def]
        return rfa_envelope(self.agency, now_ms=self.clock.wall_ms(), **kw)

    def events(self) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
        return [(e.event, e.fields) for e in self.audit.entries()]

    def reopen(self) -> Kit:
        self.close()
        return open_kit(self.root, self.clock, self.agency, self.owner)

    def close(self) -> None:
        self.audit.close()
        self.store.close()
        self.outbox.close()
        self.buffer.close()


FOOTAGE = Window(NOW_MS - 4 * 24 * HOUR_MS, NOW_MS + 4 * 24 * HOUR_MS)


def open_kit(
    root: Path,
    clock: FakeClock,
    agency: AgencyKeys,
    owner: SigningKey,
    *,
    footage: Window | None = FOOTAGE,
    share_contact_by_default: bool = True,
) -> Kit:
    identity = load_device_identity(root / "state", DEVICE_ID)
    store = StateStore.open(root / "state" / "state.sqlite")
    audit = AuditLog.open(root / "state" / "audit.jsonl", identity.signing, clock=clock)
    outbox = Outbox.open(root / "state" / "outbox")
    buffer = RollingBuffer.open(root / "buffer")
    if footage is not None and not buffer.segments():  # a reopened kit has its own
        index_footage(buffer, footage)
    flow = RequestFlow(
        store=store,
        audit=audit,
        buffer=buffer,
        outbox=outbox,
        facts=device_facts(),
        trusted_agencies=agency.trusted(),
        owner_keys={owner.kid: owner.public},
        identity=identity,
        clock=clock,
        decide_within_ms=72 * HOUR_MS,
        share_contact_by_default=share_contact_by_default,
    )
    flow.recover()
    return Kit(root, clock, identity, agency, owner, store, audit, outbox, buffer, flow)


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = open_kit(tmp_path, FakeClock(NOW_MS), AgencyKeys.generate(), SigningKey.generate())
    yield k
    k.close()


def pins(kit: Kit) -> dict[str, Window]:
    return {p.pin_id: p.window for p in kit.buffer.pins()}


def test_accepted_request_is_pending_pinned_and_audited(kit: Kit) -> None:
    rfa_id = str(uuid.uuid4())
    outcome = kit.flow.handle_rfa(kit.rfa(rfa_id=rfa_id))
    assert outcome.accepted and outcome.rfa_id == rfa_id
    [view] = kit.flow.pending_views()
    assert set(view.entry) == ENTRY_KEYS and set(view.details) == DETAIL_KEYS
    # the contract module says the same as this test's own copy of §5.1
    assert (
        set(wire.PENDING_ENTRY_KEYS) == ENTRY_KEYS and set(wire.PENDING_DETAIL_KEYS) == DETAIL_KEYS
    )
    [entry] = kit.flow.pending_entries()
    assert set(entry) == ENTRY_KEYS | DETAIL_KEYS
    assert entry["id"] == rfa_id and entry["footage_seconds"] == 2 * 3600  # the 2-h window
    assert entry["decide_by"] == "2026-12-01T13:00:00Z"  # 72 h, before the 7-day expiry
    assert rfa_id in pins(kit)
    assert (
        "rfa_accepted",
        {"rfa_id": rfa_id, "agency_id": "sfpd", "case_number": "2026-004512"},
    ) in kit.events()
    # The same bytes again are a replay: counted, nothing else.
    again = kit.flow.handle_rfa(kit.rfa(rfa_id=rfa_id))
    assert not again.accepted and again.reason == "replay" and again.counted
    assert len(kit.flow.pending()) == 1


def test_rejections_are_logged_only_when_verified(kit: Kit) -> None:
    bad_area = str(uuid.uuid4())
    out = kit.flow.handle_rfa(kit.rfa(rfa_id=bad_area, changes={"area.radius_m": 806}))
    assert (out.accepted, out.reason, out.counted) == (False, "radius_too_large", False)
    assert bad_area in kit.store.seen_ids
    forged = kit.rfa(key=SigningKey.generate())  # the agency's kid, someone else's signature
    assert kit.flow.handle_rfa(forged).reason == "unknown_key"
    junk = kit.flow.handle_rfa(b"\xff\x00garbage")
    assert junk.counted and junk.reason == "malformed"
    kit.clock.advance(61)
    kit.audit.flush(kit.clock.wall_ms())
    events = kit.events()
    assert ("rfa_rejected", {"rfa_id": bad_area, "reason": "radius_too_large"}) in events
    counted = {f["reason"]: f["count"] for e, f in events if e == "rejections"}
    assert counted == {"unknown_key": 1, "malformed": 1}
    assert kit.flow.pending() == [] and pins(kit) == {}


def test_app_approval_queues_a_share_and_a_reused_nonce_does_nothing(kit: Kit) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.handle_rfa(kit.rfa(rfa_id=b))
    narrow = {"start": "2026-11-28T10:30:00Z", "end": "2026-11-28T11:00:00Z"}
    sealed = kit.sealed_decision(a, window=narrow, share_contact=False, nonce="n-1")
    out = kit.flow.handle_decision(sealed)
    assert out.accepted and out.reason == "approved"
    assert kit.outbox.has_job(a) and not kit.outbox.has_job(b)
    decision = kit.store.decision(a)
    assert decision is not None and decision.method is ConsentMethod.APP
    assert decision.owner_kid == kit.owner.kid and not decision.share_contact
    assert pins(kit)[a] == Window(parse_time(narrow["start"]), parse_time(narrow["end"]))
    # The same nonce on the other request: refused, changes nothing.
    replayed = kit.flow.handle_decision(kit.sealed_decision(b, nonce="n-1"))
    assert not replayed.accepted and not kit.outbox.has_job(b)
    assert [p.rfa.id for p in kit.flow.pending()] == [b]
    # A decision for the already-decided request: not pending any more.
    assert not kit.flow.handle_decision(kit.sealed_decision(a, nonce="n-2")).accepted
    [(event, fields)] = [(e, f) for e, f in kit.events() if e == "decision"]
    assert fields == {
        "rfa_id": a,
        "decision": "approve",
        "method": "app",
        "window": narrow,
        "share_contact": False,
        "owner_kid": kit.owner.kid,
    }


@pytest.mark.parametrize(
    ("sealed_for", "counter"),
    [
        ("wrong_key", "decision_unknown_key"),
        ("wrong_device", "decision_wrong_device"),
        ("stale", "decision_clock_skew"),
        ("not_sealed", "decision_malformed"),
        ("garbage_age", "decision_undecryptable"),
        ("oversized", "decision_oversized"),
    ],
)
def test_junk_on_the_decision_topic_changes_nothing(
    kit: Kit, sealed_for: str, counter: str
) -> None:
    rfa_id = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=rfa_id))
    before = (kit.store.pending(), kit.audit.head().entries, pins(kit))
    recipient = [parse_recipient(kit.identity.recipient)]
    if sealed_for == "wrong_key":
        data = kit.sealed_decision(rfa_id, key=SigningKey.generate())
    elif sealed_for == "wrong_device":
        env = decision_envelope(kit.owner, rfa_id=rfa_id, device_id="other", now_ms=NOW_MS)
        data = seal(env, recipient)
    elif sealed_for == "stale":
        env = decision_envelope(kit.owner, rfa_id=rfa_id, now_ms=NOW_MS - 11 * MINUTE_MS)
        data = seal(env, recipient)
    elif sealed_for == "not_sealed":
        data = decision_envelope(kit.owner, rfa_id=rfa_id)
    elif sealed_for == "garbage_age":
        data = b"age-encryption.org/v1\n-> X25519 junk\n"
    else:
        data = b"age-encryption.org/v1\n" + b"x" * 17000
    out = kit.flow.handle_decision(data)
    assert not out.accepted and out.counted
    assert (kit.store.pending(), kit.audit.head().entries, pins(kit)) == before
    assert not kit.outbox.has_job(rfa_id)
    # The outcome names the decision rule; the audit counts it as a decision's.
    assert f"decision_{out.reason}" == counter
    kit.audit.flush(kit.clock.wall_ms(), force=True)
    assert [f["reason"] for e, f in kit.events() if e == "rejections"] == [counter]


@pytest.mark.parametrize("named", [True, False])
def test_a_button_approval_follows_the_owners_share_contact_default(
    tmp_path: Path, named: bool
) -> None:
    """owner.share_contact_by_default is applied once, by the flow: the button says
    nothing about naming the owner; a caller that does (the CLI's --anonymous) wins."""
    k = open_kit(
        tmp_path,
        FakeClock(NOW_MS),
        AgencyKeys.generate(),
        SigningKey.generate(),
        share_contact_by_default=named,
    )
    try:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        k.flow.handle_rfa(k.rfa(rfa_id=a))
        k.flow.handle_rfa(k.rfa(rfa_id=b))
        assert k.flow.decide_locally(a, approve=True, method=ConsentMethod.BUTTON).accepted
        chosen = k.flow.decide_locally(
            b, approve=True, method=ConsentMethod.CLI, share_contact=not named
        )
        assert chosen.accepted
        by_button, by_cli = k.store.decision(a), k.store.decision(b)
        assert by_button is not None and by_button.share_contact is named
        assert by_cli is not None and by_cli.share_contact is (not named)
    finally:
        k.close()


def test_button_and_cli_make_the_same_decision_record(kit: Kit) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.handle_rfa(kit.rfa(rfa_id=b))
    assert kit.flow.decide_locally(a, approve=True, method=ConsentMethod.BUTTON).accepted
    da = kit.store.decision(a)
    assert da is not None and da.share_contact is True and da.owner_kid is None
    assert da.window == kit.store.request(a).rfa.window  # type: ignore[union-attr]
    assert kit.outbox.has_job(a)
    out = kit.flow.decide_locally(b, approve=False, method=ConsentMethod.CLI)
    assert out.reason == "denied" and not kit.outbox.has_job(b) and b not in pins(kit)
    # Not pending any more, or never was, or pretending to be the app: refused.
    assert (
        kit.flow.decide_locally(b, approve=True, method=ConsentMethod.CLI).reason == "not_pending"
    )
    assert not kit.flow.decide_locally("nope", approve=True, method=ConsentMethod.CLI).accepted
    c = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=c))
    assert not kit.flow.decide_locally(c, approve=True, method=ConsentMethod.APP).accepted
    wide = Window(NOW_MS - 10 * HOUR_MS, NOW_MS)
    assert not kit.flow.decide_locally(
        c, approve=True, method=ConsentMethod.CLI, window=wide
    ).accepted
    assert not kit.outbox.has_job(c)


def test_paused_requests_are_refused_by_the_opt_out_rule_across_restarts(kit: Kit) -> None:
    waiting = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=waiting))
    kit.flow.pause_requests(True)
    kit = kit.reopen()
    assert kit.flow.requests_paused
    refused = str(uuid.uuid4())
    out = kit.flow.handle_rfa(kit.rfa(rfa_id=refused))
    assert (out.accepted, out.reason) == (False, "requests_off")
    assert [p.rfa.id for p in kit.flow.pending()] == [waiting]  # the owner still decides it
    assert kit.flow.decide_locally(waiting, approve=False, method=ConsentMethod.CONSOLE).accepted
    kit.flow.pause_requests(False)
    assert kit.flow.handle_rfa(kit.rfa(rfa_id=str(uuid.uuid4()))).accepted
    events = [e for e, _ in kit.events()]
    assert events.count("requests_paused") == 1 and events.count("requests_resumed") == 1
    assert ("rfa_rejected", {"rfa_id": refused, "reason": "requests_off"}) in kit.events()


def test_undecided_requests_expire_and_release_their_pins(kit: Kit) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))  # decide_by = now + 72 h
    kit.flow.handle_rfa(kit.rfa(rfa_id=b, changes={"expires_at": "2026-11-29T13:00:00Z"}))
    assert kit.flow.expire_due() == []
    kit.clock.advance(24 * 3600)
    assert kit.flow.expire_due() == [b]
    assert set(pins(kit)) == {a}
    kit.clock.advance(48 * 3600)
    assert kit.flow.expire_due() == [a]
    assert pins(kit) == {} and kit.flow.pending() == []
    assert [f["rfa_id"] for e, f in kit.events() if e == "expired"] == [b, a]
    sealed = kit.sealed_decision(a)
    assert not kit.flow.handle_decision(sealed).accepted
    assert not kit.outbox.has_job(a)


def test_share_states_are_audited_and_the_end_releases_the_pin(kit: Kit) -> None:
    a = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.decide_locally(a, approve=True, method=ConsentMethod.CLI)
    kit.flow.on_share_state(a, "uploading", None)
    assert a in pins(kit)
    kit.flow.on_share_state(a, "failed", "no footage")
    assert a not in pins(kit)
    shares = [f for e, f in kit.events() if e == "share"]
    assert shares[-1] == {"rfa_id": a, "state": "failed", "error": "no footage"}


def test_a_crash_before_the_marks_are_saved_writes_no_entry_twice(kit: Kit) -> None:
    """The "audited" and "queued" marks ride the next transaction (one fsync less per
    outcome): a power cut before it leaves them unwritten, and start-up finds the audit
    entries in the log instead of writing them again."""
    from device.state import RequestState

    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.handle_rfa(kit.rfa(rfa_id=b))
    assert kit.flow.handle_decision(kit.sealed_decision(b)).reason == "approved"
    # A power cut now: the marks of b's approval were never written.
    cut = StateStore.open(kit.root / "state" / "state.sqlite")
    try:
        record = cut.request(b)
        assert record is not None and record.state is RequestState.APPROVED
        assert not record.audited
    finally:
        cut.close()
    kit.store._marks.clear()  # what the power cut lost  # noqa: SLF001
    kit2 = kit.reopen()
    try:
        events = [(e, f.get("rfa_id")) for e, f in kit2.events()]
        assert events.count(("rfa_accepted", a)) == 1 and events.count(("decision", b)) == 1
        record = kit2.store.request(b)
        assert record is not None and record.state is RequestState.QUEUED and record.audited
        assert kit2.outbox.has_job(b)
    finally:
        kit2.close()
        kit.audit = kit2.audit


def test_restart_keeps_pending_and_queues_an_approval_the_crash_interrupted(kit: Kit) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.handle_rfa(kit.rfa(rfa_id=b))
    # The daemon dies right after recording an approval, before the outbox has it.
    from device.state import RequestState
    from sync.decision import local_decision

    rfa = kit.store.request(b).rfa  # type: ignore[union-attr]
    made = local_decision(
        rfa,
        approve=True,
        method=ConsentMethod.BUTTON,
        now_ms=NOW_MS,
        window=None,
        share_contact=True,
    )
    assert kit.store.record_decision(made)  # type: ignore[arg-type]
    assert not kit.outbox.has_job(b)
    kit2 = kit.reopen()
    try:
        assert kit2.outbox.has_job(b)
        assert kit2.store.request(b).state is RequestState.QUEUED  # type: ignore[union-attr]
        assert [p.rfa.id for p in kit2.flow.pending()] == [a]
        assert a in kit2.store.seen_ids and b in kit2.store.seen_ids
        # The decision's audit entry the crash skipped was written at start-up.
        assert [f["rfa_id"] for e, f in kit2.events() if e == "decision"] == [b]
    finally:
        kit2.close()
        kit.audit = kit2.audit  # the fixture closes these (closing twice is harmless)


# ---- property: no share job without a valid owner approval ----------------------------

_ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("rfa"), st.integers(0, 3), st.sampled_from(["ok", "forged", "bad", "junk"])
        ),
        st.tuples(
            st.just("app"),
            st.integers(0, 3),
            st.sampled_from(
                ["approve", "deny", "forged", "other_device", "stale", "reuse", "wide"]
            ),
        ),
        st.tuples(st.just("local"), st.integers(0, 3), st.sampled_from(["approve", "deny", "app"])),
        st.tuples(st.just("time"), st.integers(0, 100), st.just("")),
    ),
    max_size=14,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=_ACTIONS)
def test_no_share_job_without_a_valid_owner_approval(tmp_path: Path, actions: list) -> None:  # type: ignore[type-arg]
    root = tmp_path / uuid.uuid4().hex
    k = open_kit(root, FakeClock(NOW_MS), AgencyKeys.generate(), SigningKey.generate())
    ids = [str(uuid.uuid4()) for _ in range(4)]
    local_approvals: set[str] = set()
    try:
        for kind, index, variant in actions:
            rfa_id = ids[index % len(ids)]
            if kind == "rfa":
                if variant == "ok":
                    data = k.rfa(rfa_id=rfa_id)
                elif variant == "forged":
                    data = k.rfa(rfa_id=rfa_id, key=SigningKey.generate())
                elif variant == "bad":
                    data = k.rfa(rfa_id=rfa_id, changes={"upload_url": "http://10.0.0.1/"})
                else:
                    data = json.dumps({"id": rfa_id}).encode()
                k.flow.handle_rfa(data)
            elif kind == "app":
                if variant in ("approve", "deny"):
                    data = k.sealed_decision(rfa_id, decision=variant)
                elif variant == "forged":
                    data = k.sealed_decision(rfa_id, key=SigningKey.generate())
                elif variant == "other_device":
                    data = k.sealed_decision(rfa_id, device_id="someone-else")
                elif variant == "stale":
                    data = k.sealed_decision(rfa_id, issued_at="2026-11-01T00:00:00Z")
                elif variant == "reuse":
                    data = k.sealed_decision(rfa_id, nonce="same-nonce")
                else:
                    data = k.sealed_decision(
                        rfa_id,
                        window={"start": "2026-11-01T00:00:00Z", "end": "2026-11-30T00:00:00Z"},
                    )
                k.flow.handle_decision(data)
            elif kind == "local":
                method = ConsentMethod.APP if variant == "app" else ConsentMethod.CLI
                out = k.flow.decide_locally(rfa_id, approve=variant != "deny", method=method)
                if out.accepted and out.reason == "approved":
                    local_approvals.add(rfa_id)
            else:
                k.clock.advance(index * 3600)
                k.flow.expire_due()
        for rfa_id in ids:
            if not k.outbox.has_job(rfa_id):
                continue
            decision = k.store.decision(rfa_id)
            assert decision is not None and decision.approve
            if decision.method is ConsentMethod.APP:
                # The job rests on an envelope the owner really signed, approving this
                # request for this device.
                assert decision.envelope_text is not None
                payload = open_envelope(
                    decision.envelope_text, {k.owner.kid: k.owner.public}
                ).payload
                assert payload["decision"] == "approve"
                assert payload["rfa_id"] == rfa_id and payload["device_id"] == DEVICE_ID
            else:
                assert rfa_id in local_approvals
    finally:
        k.close()


# --- the smaller holes of revision 1.1 (protocol.md §4) ------------------------------------


def test_a_second_queued_copy_of_a_rejected_request_is_a_replay(kit: Kit) -> None:
    """Both copies pass the cheap check before either is judged; the first is refused
    (10 pending); once one pending request is gone the second copy must still not get in."""
    from sync.rfa import Prechecked, precheck

    for n in range(10):
        assert kit.flow.handle_rfa(kit.rfa(changes={"case_number": f"fill-{n}"})).accepted
    rfa_id = str(uuid.uuid4())
    data = kit.rfa(rfa_id=rfa_id)
    copies = [precheck(data, kit.agency.trusted(), kit.store.seen_ids) for _ in range(2)]
    assert all(isinstance(c, Prechecked) for c in copies)
    first = kit.flow.handle_prechecked(copies[0])  # type: ignore[arg-type]
    assert first.reason == "too_many_pending" and not first.counted
    victim = kit.flow.pending()[0].rfa.id
    assert kit.flow.decide_locally(victim, approve=False, method=ConsentMethod.CLI).accepted
    second = kit.flow.handle_prechecked(copies[1])  # type: ignore[arg-type]
    assert second.reason == "replay" and second.counted
    assert rfa_id not in {p.rfa.id for p in kit.flow.pending()}
    rejected = [f for e, f in kit.events() if e == "rfa_rejected"]
    assert rejected == [{"rfa_id": rfa_id, "reason": "too_many_pending"}]


@pytest.mark.parametrize("bad_id", ["NOT-A-UUID", None, 12345])
def test_a_verified_rejection_without_a_canonical_id_is_audited_once(
    kit: Kit, bad_id: object
) -> None:
    data = kit.rfa(changes={"id": bad_id})
    first = kit.flow.handle_rfa(data)
    assert first.reason == "bad_id" and not first.counted
    for _ in range(5):
        again = kit.flow.handle_rfa(data)
        assert again.reason == "replay" and again.counted
    assert [e for e, _f in kit.events()].count("rfa_rejected") == 1
    # and after a restart too (the signature key is durable)
    kit2 = kit.reopen()
    try:
        assert kit2.flow.handle_rfa(data).reason == "replay"
    finally:
        kit2.close()
        kit.close = lambda: None  # type: ignore[method-assign]


def test_two_requests_per_case_in_30_days_durably(kit: Kit) -> None:
    assert kit.flow.handle_rfa(kit.rfa()).accepted
    assert kit.flow.handle_rfa(kit.rfa()).accepted
    third = kit.flow.handle_rfa(kit.rfa())
    assert third.reason == "case_limit"
    # another case of the same agency is fine
    assert kit.flow.handle_rfa(kit.rfa(changes={"case_number": "2026-000001"})).accepted
    # declining does not give the case its quota back; a restart does not either
    for p in kit.flow.pending():
        kit.flow.decide_locally(p.rfa.id, approve=False, method=ConsentMethod.CLI)
    kit2 = kit.reopen()
    try:
        assert kit2.flow.handle_rfa(kit2.rfa()).reason == "case_limit"
        # 30 days after both acceptances, less one ms: still refused; at 30 days: two again
        kit2.clock.advance((30 * 24 * HOUR_MS - 1) / 1000)
        assert kit2.flow.handle_rfa(kit2.rfa()).reason == "case_limit"
        kit2.clock.advance(0.001)
        assert kit2.flow.handle_rfa(kit2.rfa()).accepted
        assert kit2.flow.handle_rfa(kit2.rfa()).accepted
        assert kit2.flow.handle_rfa(kit2.rfa()).reason == "case_limit"
    finally:
        kit2.close()
        kit.close = lambda: None  # type: ignore[method-assign]


def test_an_approval_that_would_send_nothing_is_refused_before_it_is_recorded(
    tmp_path: Path,
) -> None:
    """The button's, the CLI's and the console's approval of a window with no footage,
    or of no length, changes nothing (counted, like any refused decision): the request
    stays pending for the owner to decline or to approve a part with footage. A sealed
    app decision follows protocol §5.2: recorded, and its share fails "no footage"."""
    clock = FakeClock(NOW_MS)
    # footage only in the request's last 10 minutes (the default window ends 1 h ago)
    covered = Window(NOW_MS - HOUR_MS - 10 * MINUTE_MS, NOW_MS - HOUR_MS)
    kit = open_kit(tmp_path, clock, AgencyKeys.generate(), SigningKey.generate(), footage=covered)
    try:
        a = str(uuid.uuid4())
        assert kit.flow.handle_rfa(kit.rfa(rfa_id=a)).accepted
        empty = Window(NOW_MS - 3 * HOUR_MS, NOW_MS - 2 * HOUR_MS)
        instant = Window(covered.start_ms + 1000, covered.start_ms + 1000)
        for window in (empty, instant):
            for method in (ConsentMethod.CONSOLE, ConsentMethod.CLI, ConsentMethod.BUTTON):
                out = kit.flow.decide_locally(a, approve=True, method=method, window=window)
                assert not out.accepted and out.reason == "nothing_to_send", out
                assert "nothing would be sent" in out.detail
        assert [p.rfa.id for p in kit.flow.pending()] == [a]
        assert kit.store.decision(a) is None and not kit.outbox.has_job(a)
        assert not [e for e in kit.events() if e[0] == "decision"]
        # a partly covered window is approved: the share sends what there is
        assert kit.flow.decide_locally(a, approve=True, method=ConsentMethod.CONSOLE).accepted
        assert kit.outbox.has_job(a)
        # declining a window with no footage is always possible
        b = str(uuid.uuid4())
        kit.flow.handle_rfa(kit.rfa(rfa_id=b))
        assert kit.flow.decide_locally(
            b, approve=False, method=ConsentMethod.CLI, window=empty
        ).accepted
        # the app's approval of a window without footage is recorded, as §5.2 says
        c = str(uuid.uuid4())
        assert kit.flow.handle_rfa(
            kit.rfa(rfa_id=c, changes={"case_number": "2026-000003"})
        ).accepted
        app = kit.flow.handle_decision(kit.sealed_decision(c, window=empty.to_json()))
        assert app.accepted and kit.outbox.has_job(c)
    finally:
        kit.close()
