"""The console's sign-in rules (pure) and its code and session store (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.console.auth import (
    CODE_TTL_MS,
    LOCKOUT_MS,
    MAX_WRONG_CODES,
    SESSION_TTL_MS,
    ConsoleAuth,
    StoredCode,
    Verdict,
    after_wrong,
    normalize_code,
    sign_in_verdict,
)

T0 = 1_800_000_000_000


@pytest.mark.parametrize(
    ("code", "locked_until", "now", "verdict"),
    [
        (StoredCode(T0 + 10, None), 0, T0, Verdict.OK),
        (StoredCode(T0 + 10, None), T0 + 1, T0, Verdict.LOCKED),  # even the right code
        (None, 0, T0, Verdict.WRONG),
        (None, T0 + 1, T0, Verdict.LOCKED),
        (StoredCode(T0, None), 0, T0, Verdict.EXPIRED),  # expiry is exclusive
        (StoredCode(T0 + 10, T0 - 5), 0, T0, Verdict.USED),
        (StoredCode(T0 - 10, T0 - 20), 0, T0, Verdict.USED),
    ],
)
def test_sign_in_verdicts(code, locked_until, now, verdict) -> None:
    assert sign_in_verdict(code, locked_until_ms=locked_until, now_ms=now) is verdict


@given(st.integers(0, MAX_WRONG_CODES - 1))
def test_the_fifth_wrong_code_locks_and_starts_the_count_again(wrong: int) -> None:
    count, locks = after_wrong(wrong)
    assert locks == (wrong == MAX_WRONG_CODES - 1)
    assert count == (0 if locks else wrong + 1)


@given(st.text(max_size=100))
def test_normalized_codes_carry_no_separators_and_stay_short(text: str) -> None:
    out = normalize_code(text)
    assert " " not in out and "-" not in out and len(out) <= 64


def test_a_code_opens_one_session_for_30_days(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    code, expires = auth.new_code(T0)
    assert expires == T0 + CODE_TTL_MS and len(code) == 8 and code.isdigit()
    verdict, session = auth.sign_in(f"{code[:4]} {code[4:]}", now_ms=T0 + 1, client="phone")
    assert verdict is Verdict.OK and session is not None
    assert auth.session(session.token, now_ms=T0 + SESSION_TTL_MS - 1) is not None
    assert auth.session(session.token, now_ms=T0 + 1 + SESSION_TTL_MS) is None
    assert auth.sign_in(code, now_ms=T0 + 2, client="x") == (Verdict.USED, None)
    assert auth.session("forged", now_ms=T0 + 2) is None
    assert auth.session(None, now_ms=T0 + 2) is None
    auth.close()


def test_sessions_and_codes_survive_a_restart_and_revocation_sticks(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    auth = ConsoleAuth.open(path)
    code, _ = auth.new_code(T0)
    _, session = auth.sign_in(code, now_ms=T0, client="phone")
    spare, _ = auth.new_code(T0)
    auth.close()
    assert path.stat().st_mode & 0o777 == 0o600
    auth = ConsoleAuth.open(path)
    assert session is not None and auth.session(session.token, now_ms=T0 + 5) is not None
    assert [s.id for s in auth.sessions(now_ms=T0 + 5)] == [session.id]
    assert auth.revoke(session.id, now_ms=T0 + 6)
    assert not auth.revoke(session.id, now_ms=T0 + 7)
    assert auth.session(session.token, now_ms=T0 + 8) is None
    assert auth.sign_in(spare, now_ms=T0 + 9, client="x")[0] is Verdict.OK
    # nothing secret is stored in the clear
    data = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("console.db-*"))
    assert session.token.encode() not in data and spare.encode() not in data
    auth.close()


def test_lockout_lasts_a_minute_and_is_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    auth = ConsoleAuth.open(path)
    code, _ = auth.new_code(T0)
    wrong = "12345678" if code != "12345678" else "87654321"
    for i in range(MAX_WRONG_CODES):
        assert auth.sign_in(wrong, now_ms=T0 + i, client="x")[0] is Verdict.WRONG
    auth.close()
    auth = ConsoleAuth.open(path)
    last = T0 + MAX_WRONG_CODES - 1
    assert auth.sign_in(code, now_ms=last + LOCKOUT_MS - 1, client="x")[0] is Verdict.LOCKED
    assert auth.sign_in(code, now_ms=last + LOCKOUT_MS, client="x")[0] is Verdict.OK
    auth.close()
