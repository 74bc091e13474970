"""Owner decisions (protocol.md §5.2): app decisions at their edges, local decisions, fuzzing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import MisuseError
from foundation.times import Window, format_time
from foundation.wire import DECISION_BYTES, MAX_MESSAGE_BYTES
from sync.decision import (
    AGE_MAGIC,
    DecisionAccepted,
    DecisionRejected,
    DecisionRejectReason,
    SealedDecision,
    check_decision,
    local_decision,
    precheck_sealed,
)
from sync.keys import SigningKey
from sync.models import ConsentMethod, Rfa
from sync.rfa import Accepted, check_rfa
from sync.seal import pad, seal, unseal
from tests.sync.factories import (
    DELETE,
    DEVICE_ID,
    MINUTE_MS,
    NOW_MS,
    AgencyKeys,
    apply_changes,
    decision_envelope,
    decision_payload,
    device_facts,
    rfa_envelope,
    sign,
)

D = DecisionRejectReason
AGENCY = AgencyKeys.generate()
OWNER = SigningKey.generate()
OWNER_KEYS = {OWNER.kid: OWNER.public}


def make_rfa() -> Rfa:
    result = check_rfa(
        rfa_envelope(AGENCY), device_facts(), AGENCY.trusted(), set(), NOW_MS, pending_count=0
    )
    assert isinstance(result, Accepted)
    return result.rfa


RFA = make_rfa()
W = RFA.window


def padded(data: bytes) -> bytes:
    """As the owner's tool sends it: the envelope and spaces up to exactly 4,096 bytes."""
    return data + b" " * (DECISION_BYTES - len(data))


def judge(
    data: bytes, *, nonces: set[str] | None = None, now_ms: int = NOW_MS, raw: bool = False
) -> Any:
    return check_decision(
        data if raw or len(data) >= DECISION_BYTES else padded(data),
        owner_keys=OWNER_KEYS,
        device_id=DEVICE_ID,
        pending={RFA.id: RFA},
        used_nonces=nonces or set(),
        now_ms=now_ms,
    )


def reason_of(changes: dict[str, Any], **kw: Any) -> DecisionRejectReason | None:
    result = judge(decision_envelope(OWNER, rfa_id=RFA.id, changes=changes), **kw)
    if isinstance(result, DecisionAccepted):
        return None
    assert result.verified
    return result.reason


def test_valid_decision_through_a_real_seal() -> None:
    from pyrage import x25519

    device_identity = x25519.Identity.generate()
    envelope = decision_envelope(OWNER, rfa_id=RFA.id, changes={"nonce": "q2k3j4h5g6f7d8s9"})
    plaintext = unseal(seal(envelope, [device_identity.to_public()]), [device_identity])
    assert len(plaintext) == 4096  # padded by the owner channel
    result = judge(plaintext)
    assert isinstance(result, DecisionAccepted)
    d = result.decision
    assert d.rfa_id == RFA.id and d.approve and d.share_contact
    assert d.window == RFA.window
    assert d.method is ConsentMethod.APP and d.owner_kid == OWNER.kid
    assert d.envelope_text == envelope.decode() and d.nonce == "q2k3j4h5g6f7d8s9"
    assert d.at_ms == NOW_MS


def test_deny_and_anonymous() -> None:
    data = decision_envelope(
        OWNER, rfa_id=RFA.id, changes={"decision": "deny", "share_contact": False}
    )
    result = judge(pad(data))
    assert isinstance(result, DecisionAccepted)
    assert not result.decision.approve and not result.decision.share_contact


def test_narrowed_window_is_kept() -> None:
    narrowed = Window(W.start_ms + 30 * MINUTE_MS, W.end_ms - 30 * MINUTE_MS)
    result = judge(decision_envelope(OWNER, rfa_id=RFA.id, changes={"window": narrowed.to_json()}))
    assert isinstance(result, DecisionAccepted) and result.decision.window == narrowed


def _win(start: int, end: int) -> dict[str, str]:
    return {"start": format_time(start), "end": format_time(end)}


TABLE: list[tuple[str, dict[str, Any], DecisionRejectReason | None]] = [
    ("type missing", {"type": None}, D.BAD_TYPE),
    ("type rfa", {"type": "rfa"}, D.BAD_TYPE),
    ("other device", {"device_id": "garage-cam"}, D.WRONG_DEVICE),
    ("device id number", {"device_id": 1}, D.WRONG_DEVICE),
    ("rfa not pending", {"rfa_id": str(uuid.uuid4())}, D.NOT_PENDING),
    ("rfa id list", {"rfa_id": [RFA.id]}, D.NOT_PENDING),
    ("decision maybe", {"decision": "maybe"}, D.BAD_DECISION),
    ("decision upper", {"decision": "APPROVE"}, D.BAD_DECISION),
    ("decision bool", {"decision": True}, D.BAD_DECISION),
    ("share_contact missing", {"share_contact": DELETE}, D.MALFORMED),
    ("share_contact string", {"share_contact": "true"}, D.MALFORMED),
    ("share_contact int", {"share_contact": 1}, D.MALFORMED),
    ("share_contact null", {"share_contact": None}, D.MALFORMED),
    ("issued_at bad", {"issued_at": "2026-11-28T13:00:00+00:00"}, D.BAD_TIME),
    ("issued_at number", {"issued_at": NOW_MS}, D.BAD_TIME),
    ("issued now - 10 min", {"issued_at": format_time(NOW_MS - 10 * MINUTE_MS)}, None),
    ("issued now + 10 min", {"issued_at": format_time(NOW_MS + 10 * MINUTE_MS)}, None),
    (
        "issued now - 10 min - 1 ms",
        {"issued_at": format_time(NOW_MS - 10 * MINUTE_MS - 1)},
        D.CLOCK_SKEW,
    ),
    (
        "issued now + 10 min + 1 ms",
        {"issued_at": format_time(NOW_MS + 10 * MINUTE_MS + 1)},
        D.CLOCK_SKEW,
    ),
    ("nonce empty", {"nonce": ""}, D.BAD_NONCE),
    ("nonce number", {"nonce": 12345}, D.BAD_NONCE),
    ("nonce space", {"nonce": "a b"}, D.BAD_NONCE),
    ("nonce non-ascii", {"nonce": "nönce"}, D.BAD_NONCE),
    ("nonce 128", {"nonce": "n" * 128}, None),
    ("nonce 129", {"nonce": "n" * 129}, D.BAD_NONCE),
    ("window exactly the request's", {"window": _win(W.start_ms, W.end_ms)}, None),
    ("window one instant", {"window": _win(W.start_ms, W.start_ms)}, None),
    ("window null", {"window": None}, None),
    (
        "window starts 1 ms early",
        {"window": _win(W.start_ms - 1, W.end_ms)},
        D.WINDOW_OUTSIDE_REQUEST,
    ),
    ("window ends 1 ms late", {"window": _win(W.start_ms, W.end_ms + 1)}, D.WINDOW_OUTSIDE_REQUEST),
    ("window reversed", {"window": _win(W.start_ms + 2, W.start_ms + 1)}, D.BAD_WINDOW),
    ("window string", {"window": "all"}, D.BAD_WINDOW),
    ("window bad time", {"window": {"start": "10:00", "end": "11:00"}}, D.BAD_WINDOW),
    ("window missing end", {"window": {"start": format_time(W.start_ms)}}, D.BAD_WINDOW),
    ("deny with a bad window", {"decision": "deny", "window": "x"}, D.BAD_WINDOW),
    ("unknown fields", {"extra": {"a": [1]}, "window_hint": 5}, None),
]


@pytest.mark.parametrize(("changes", "reason"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_decision_table(changes: dict[str, Any], reason: DecisionRejectReason | None) -> None:
    assert reason_of(changes) == reason


def test_nonce_reuse() -> None:
    assert reason_of({"nonce": "abc"}, nonces={"abc"}) is D.NONCE_REUSED
    assert reason_of({"nonce": "abc"}, nonces={"abd"}) is None


def test_expired_request_cannot_be_decided() -> None:
    later = RFA.expires_at_ms
    data = decision_envelope(OWNER, rfa_id=RFA.id, now_ms=later)
    result = judge(data, now_ms=later)
    assert isinstance(result, DecisionRejected) and result.reason is D.EXPIRED
    assert isinstance(
        judge(decision_envelope(OWNER, rfa_id=RFA.id, now_ms=later - 1), now_ms=later - 1),
        DecisionAccepted,
    )


def test_signature_failures() -> None:
    stranger = SigningKey.generate()
    result = judge(decision_envelope(stranger, rfa_id=RFA.id))
    assert result.reason is D.UNKNOWN_KEY and not result.verified
    doc = json.loads(decision_envelope(OWNER, rfa_id=RFA.id))
    doc["payload"] = doc["payload"].replace("approve", "deny")
    result = judge(json.dumps(doc).encode())
    assert result.reason is D.BAD_SIGNATURE and not result.verified
    # an agency key is not an owner key
    assert judge(sign(decision_payload(rfa_id=RFA.id), AGENCY.signing)).reason is D.UNKNOWN_KEY


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"\xff", b"[]", b"{}", b"{" * 5000, "é".encode("latin-1")],
)
def test_malformed_plaintext(data: bytes) -> None:
    result = judge(data)
    expected = D.WRONG_SIZE if len(data) > DECISION_BYTES else D.MALFORMED
    assert result.reason is expected and not result.verified


def test_strict_payload_json() -> None:
    text = json.dumps(decision_payload(rfa_id=RFA.id)).replace("true", "NaN")
    assert judge(sign(text, OWNER)).reason is D.MALFORMED
    dup = json.dumps(decision_payload(rfa_id=RFA.id))[:-1] + ', "decision": "deny"}'
    assert judge(sign(dup, OWNER)).reason is D.MALFORMED


@pytest.mark.parametrize("delta", [-4096, -1, 1, 8192])
def test_a_decision_of_any_other_size_than_4096_bytes_is_refused(delta: int) -> None:
    """protocol.md §5.2: approvals, denials, narrowed and anonymous decisions look alike;
    the device refuses a decision of another size before it parses anything."""
    data = decision_envelope(OWNER, rfa_id=RFA.id)
    exact = padded(data)
    assert isinstance(judge(exact, raw=True), DecisionAccepted)
    wrong = exact[: len(exact) + delta] if delta < 0 else exact + b" " * delta
    if delta == -4096:
        wrong = data  # unpadded, as the old owner tool sent it
    result = judge(wrong, raw=True)
    assert result.reason is D.WRONG_SIZE and not result.verified


def test_every_kind_of_decision_fits_in_4096_bytes() -> None:
    for changes in (
        {"decision": "deny"},
        {"share_contact": False},
        {"window": {"start": format_time(W.start_ms + 1), "end": format_time(W.end_ms - 1)}},
        {"nonce": "n" * 128},
    ):
        data = decision_envelope(OWNER, rfa_id=RFA.id, changes=changes)
        assert len(data) <= DECISION_BYTES
        assert isinstance(judge(padded(data), raw=True), DecisionAccepted), changes


# --- local decisions --------------------------------------------------------------------


@pytest.mark.parametrize("method", [ConsentMethod.BUTTON, ConsentMethod.CLI])
def test_local_decision_full_window(method: ConsentMethod) -> None:
    d = local_decision(
        RFA, approve=True, method=method, now_ms=NOW_MS, window=None, share_contact=True
    )
    assert not isinstance(d, DecisionRejected)
    assert d.window == RFA.window and d.method is method
    assert d.owner_kid is None and d.envelope_text is None and d.nonce is None
    assert d.at_ms == NOW_MS and d.approve and d.share_contact


@pytest.mark.parametrize(
    ("window", "ok"),
    [
        (Window(W.start_ms, W.end_ms), True),
        (Window(W.start_ms + 1, W.end_ms - 1), True),
        (Window(W.end_ms, W.end_ms), True),
        (Window(W.start_ms - 1, W.end_ms), False),
        (Window(W.start_ms, W.end_ms + 1), False),
        (Window(W.end_ms + 1, W.end_ms + 5), False),
    ],
)
def test_local_decision_window_rule(window: Window, ok: bool) -> None:
    d = local_decision(
        RFA,
        approve=True,
        method=ConsentMethod.CLI,
        now_ms=NOW_MS,
        window=window,
        share_contact=False,
    )
    if ok:
        assert not isinstance(d, DecisionRejected) and d.window == window
    else:
        assert isinstance(d, DecisionRejected) and d.reason is D.WINDOW_OUTSIDE_REQUEST


def test_local_decision_refuses_expired_and_app() -> None:
    d = local_decision(
        RFA,
        approve=True,
        method=ConsentMethod.BUTTON,
        now_ms=RFA.expires_at_ms,
        window=None,
        share_contact=True,
    )
    assert isinstance(d, DecisionRejected) and d.reason is D.EXPIRED
    with pytest.raises(MisuseError):
        local_decision(
            RFA,
            approve=True,
            method=ConsentMethod.APP,
            now_ms=NOW_MS,
            window=None,
            share_contact=True,
        )


# --- fuzzing ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def _ok(result: object) -> None:
    assert isinstance(result, DecisionAccepted | DecisionRejected)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1000))
def test_fuzz_bytes(data: bytes) -> None:
    _ok(judge(data))


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_fuzz_signed_payload(payload: Any) -> None:
    result = judge(sign(json.dumps(payload), OWNER))
    assert isinstance(result, DecisionRejected) and result.verified


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "device_id",
                "rfa_id",
                "decision",
                "window",
                "window.start",
                "window.end",
                "share_contact",
                "issued_at",
                "nonce",
            ]
        ),
        json_values,
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_mutated_decision(changes: dict[str, Any]) -> None:
    payload = apply_changes(decision_payload(rfa_id=RFA.id), changes)
    result = judge(sign(json.dumps(payload), OWNER))
    _ok(result)
    if isinstance(result, DecisionAccepted):
        d = result.decision
        assert d.rfa_id == RFA.id
        assert RFA.window.start_ms <= d.window.start_ms <= d.window.end_ms <= RFA.window.end_ms
        assert isinstance(d.share_contact, bool)
    else:
        assert result.verified


# ---- the cheap checks of a sealed message (one place: the intake and the flow call it)


def test_precheck_sealed_refuses_by_size_before_the_header() -> None:
    over = AGE_MAGIC + b"x" * (MAX_MESSAGE_BYTES + 1 - len(AGE_MAGIC))
    assert precheck_sealed(over) == DecisionRejected(D.OVERSIZED, "The message is over 16 KiB.")
    at_limit = AGE_MAGIC + b"x" * (MAX_MESSAGE_BYTES - len(AGE_MAGIC))
    assert precheck_sealed(at_limit) == SealedDecision(at_limit)
    assert precheck_sealed(b"").reason is D.MALFORMED  # type: ignore[union-attr]
    assert precheck_sealed(AGE_MAGIC[:-1] + b"x").reason is D.MALFORMED  # type: ignore[union-attr]


@given(st.binary(max_size=MAX_MESSAGE_BYTES + 64))
def test_precheck_sealed_passes_exactly_the_age_files_that_fit(message: bytes) -> None:
    result = precheck_sealed(message)
    fits = len(message) <= MAX_MESSAGE_BYTES and message.startswith(AGE_MAGIC)
    assert isinstance(result, SealedDecision) is fits
    if fits:
        assert result == SealedDecision(message)


def test_a_real_sealed_decision_passes_the_precheck() -> None:
    from pyrage import x25519

    sealed = seal(pad(b"{}", DECISION_BYTES), [x25519.Identity.generate().to_public()])
    assert precheck_sealed(sealed) == SealedDecision(sealed)
