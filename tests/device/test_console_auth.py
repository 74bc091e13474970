"""The console's sign-in rules (pure) and its code and session store (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.console.auth import (
    CODE_TTL_MS,
    GLOBAL_MAX_WRONG,
    GLOBAL_WINDOW_MS,
    LOCKOUT_MS,
    MAX_WRONG_CODES,
    SESSION_TTL_MS,
    ConsoleAuth,
    StoredCode,
    Throttle,
    Verdict,
    after_wrong,
    normalize_code,
    sign_in_verdict,
    source_group,
)

T0 = 1_800_000_000_000


@pytest.mark.parametrize(
    ("code", "source_until", "everyone_until", "verdict"),
    [
        (StoredCode(T0 + 10, None), 0, 0, Verdict.OK),
        (StoredCode(T0 + 10, None), T0 + 1, 0, Verdict.LOCKED),  # even the right code
        (StoredCode(T0 + 10, None), 0, T0 + 1, Verdict.LOCKED_ALL),
        (StoredCode(T0 + 10, None), T0 + 1, T0 + 1, Verdict.LOCKED),
        (None, 0, 0, Verdict.WRONG),
        (None, T0 + 1, 0, Verdict.LOCKED),
        (StoredCode(T0 + 10, None), T0, T0, Verdict.OK),  # a lockout's end is exclusive
        (StoredCode(T0, None), 0, 0, Verdict.EXPIRED),  # expiry is exclusive
        (StoredCode(T0 + 10, T0 - 5), 0, 0, Verdict.USED),
        (StoredCode(T0 - 10, T0 - 20), 0, 0, Verdict.USED),
    ],
)
def test_sign_in_verdicts(code, source_until, everyone_until, verdict) -> None:
    source, everyone = Throttle(0, source_until, 0), Throttle(0, everyone_until, 0)
    assert sign_in_verdict(code, source=source, everyone=everyone, now_ms=T0) is verdict


@given(st.integers(0, MAX_WRONG_CODES - 1))
def test_a_sources_fifth_wrong_code_locks_it_and_starts_the_count_again(wrong: int) -> None:
    source, _ = after_wrong(Throttle(wrong, 0, T0 - 1), Throttle(), T0)
    locks = wrong == MAX_WRONG_CODES - 1
    assert source.locked_until_ms == (T0 + LOCKOUT_MS if locks else 0)
    assert source.wrong == (0 if locks else wrong + 1)


def _hammer(gap_ms: int, seconds: int) -> tuple[int, int]:
    """One source sending a wrong code every `gap_ms`, as the server would count it (a
    locked source's codes are not counted): how many were counted, and the longest the
    global lock was on."""
    source = everyone = Throttle()
    counted = locked_all = 0
    for now in range(T0, T0 + seconds * 1000, gap_ms):
        verdict = sign_in_verdict(None, source=source, everyone=everyone, now_ms=now)
        if verdict is Verdict.LOCKED_ALL:
            locked_all += 1
        if verdict is Verdict.WRONG:
            counted += 1
            source, everyone = after_wrong(source, everyone, now)
    return counted, locked_all


@settings(deadline=None, max_examples=50)
@given(st.integers(20, 5000))
def test_one_source_alone_never_trips_the_global_cap(gap_ms: int) -> None:
    counted, locked_all = _hammer(gap_ms, 300)
    assert locked_all == 0
    assert counted <= MAX_WRONG_CODES * (300_000 // LOCKOUT_MS + 1)


@given(st.integers(0, GLOBAL_WINDOW_MS - 1))
def test_many_sources_together_trip_the_global_cap(spread_ms: int) -> None:
    everyone = Throttle()
    step = spread_ms // GLOBAL_MAX_WRONG
    for i in range(GLOBAL_MAX_WRONG):
        _, everyone = after_wrong(Throttle(), everyone, T0 + i * step)
    assert everyone.locked_until_ms == T0 + (GLOBAL_MAX_WRONG - 1) * step + LOCKOUT_MS


def test_the_global_count_starts_again_each_minute() -> None:
    everyone = Throttle()
    for i in range(3 * GLOBAL_MAX_WRONG):
        # GLOBAL_MAX_WRONG - 1 per minute, spread over three minutes: never locks
        at = T0 + (i // (GLOBAL_MAX_WRONG - 1)) * GLOBAL_WINDOW_MS + i % (GLOBAL_MAX_WRONG - 1)
        _, everyone = after_wrong(Throttle(), everyone, at)
        assert everyone.locked_until_ms == 0


@pytest.mark.parametrize(
    ("host", "group"),
    [
        ("192.168.1.20", "192.168.1.20"),
        ("::ffff:192.168.1.20", "192.168.1.20"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("testclient", "other testclient"),
    ],
)
def test_wrong_codes_are_counted_per_ipv4_address_and_per_ipv6_64(host: str, group: str) -> None:
    assert source_group(host) == group


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_address_of_one_ipv6_64_is_one_source(host_a: int, host_b: int) -> None:
    import ipaddress

    prefix = 0x20010DB8_00010002 << 64
    a = str(ipaddress.IPv6Address(prefix | host_a))
    b = str(ipaddress.IPv6Address(prefix | host_b))
    other = str(ipaddress.IPv6Address(prefix + (1 << 64) | host_a))
    assert source_group(a) == source_group(b) != source_group(other)


@given(st.text(max_size=100))
def test_normalized_codes_carry_no_separators_and_stay_short(text: str) -> None:
    out = normalize_code(text)
    assert " " not in out and "-" not in out and len(out) <= 64


def test_a_code_opens_one_session_for_30_days(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    code, expires = auth.new_code(T0)
    assert expires == T0 + CODE_TTL_MS and len(code) == 8 and code.isdigit()
    verdict, session = auth.sign_in(
        f"{code[:4]} {code[4:]}", now_ms=T0 + 1, client="phone", source="10.0.0.2"
    )
    assert verdict is Verdict.OK and session is not None
    assert auth.session(session.token, now_ms=T0 + SESSION_TTL_MS - 1) is not None
    assert auth.session(session.token, now_ms=T0 + 1 + SESSION_TTL_MS) is None
    assert auth.sign_in(code, now_ms=T0 + 2, client="x", source="10.0.0.9") == (Verdict.USED, None)
    assert auth.session("forged", now_ms=T0 + 2) is None
    assert auth.session(None, now_ms=T0 + 2) is None
    auth.close()


def test_sessions_and_codes_survive_a_restart_and_revocation_sticks(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    auth = ConsoleAuth.open(path)
    code, _ = auth.new_code(T0)
    _, session = auth.sign_in(code, now_ms=T0, client="phone", source="10.0.0.2")
    spare, _ = auth.new_code(T0)
    auth.close()
    assert path.stat().st_mode & 0o777 == 0o600
    auth = ConsoleAuth.open(path)
    assert session is not None and auth.session(session.token, now_ms=T0 + 5) is not None
    assert [s.id for s in auth.sessions(now_ms=T0 + 5)] == [session.id]
    assert auth.revoke(session.id, now_ms=T0 + 6)
    assert not auth.revoke(session.id, now_ms=T0 + 7)
    assert auth.session(session.token, now_ms=T0 + 8) is None
    assert auth.sign_in(spare, now_ms=T0 + 9, client="x", source="10.0.0.9")[0] is Verdict.OK
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
        assert auth.sign_in(wrong, now_ms=T0 + i, client="x", source="10.0.0.9")[0] is Verdict.WRONG
    auth.close()
    auth = ConsoleAuth.open(path)
    last = T0 + MAX_WRONG_CODES - 1
    assert (
        auth.sign_in(code, now_ms=last + LOCKOUT_MS - 1, client="x", source="10.0.0.9")[0]
        is Verdict.LOCKED
    )
    assert (
        auth.sign_in(code, now_ms=last + LOCKOUT_MS, client="x", source="10.0.0.9")[0] is Verdict.OK
    )
    auth.close()


def test_a_newer_code_retires_the_older_unused_one(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    first, _ = auth.new_code(T0)
    second, _ = auth.new_code(T0 + 1)
    assert first != second
    assert auth.sign_in(first, now_ms=T0 + 2, client="x", source="10.0.0.9")[0] is Verdict.WRONG
    assert auth.sign_in(second, now_ms=T0 + 3, client="x", source="10.0.0.9")[0] is Verdict.OK
    # a used code is remembered as used (until it expires), not retired
    auth.new_code(T0 + 4)
    assert auth.sign_in(second, now_ms=T0 + 5, client="x", source="10.0.0.9")[0] is Verdict.USED
    auth.close()


def test_a_locked_source_does_not_lock_another(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    code, _ = auth.new_code(T0)
    wrong = "12345678" if code != "12345678" else "87654321"
    for i in range(60):  # one every 0.5 s for 30 s
        auth.sign_in(wrong, now_ms=T0 + 500 * i, client="x", source="10.0.0.66")
    now = T0 + 30_000
    assert auth.sign_in(code, now_ms=now, client="x", source="10.0.0.66")[0] is Verdict.LOCKED
    assert auth.sign_in(code, now_ms=now, client="x", source="10.0.0.2")[0] is Verdict.OK
    auth.close()


def test_the_global_cap_locks_every_source(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path / "console.db")
    code, _ = auth.new_code(T0)
    wrong = "12345678" if code != "12345678" else "87654321"
    for i in range(GLOBAL_MAX_WRONG):
        source = f"10.0.1.{i // (MAX_WRONG_CODES - 1)}"  # never five from one source
        assert auth.sign_in(wrong, now_ms=T0 + i, client="x", source=source)[0] is Verdict.WRONG
    verdict = auth.sign_in(code, now_ms=T0 + 100, client="x", source="10.0.0.2")[0]
    assert verdict is Verdict.LOCKED_ALL
    later = T0 + GLOBAL_MAX_WRONG - 1 + LOCKOUT_MS
    assert auth.sign_in(code, now_ms=later, client="x", source="10.0.0.2")[0] is Verdict.OK
    auth.close()
