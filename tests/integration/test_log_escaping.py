"""What a person reads in the daemon's log is safe to read in a terminal, whatever the
network sent (docs/security.md, "Safe rendering"): a real `doorbelld` receives validly
signed requests whose fields hold terminal escapes, C1 controls, bidi overrides,
carriage returns and backspaces, and shares to an upload server whose reason phrases,
headers and bodies hold the same. Its captured stderr must hold none of them raw, and
the escaped form must be there to read (so the test sees the strings did reach the log).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

import pytest

from cloud.agency import SignedRfa
from foundation.display import shown
from foundation.times import Window
from sync.envelope import make_envelope
from sync.keys import load_signing_key
from tests.fixtures.daemon import World, wait_for
from tests.sync.hostile import EVIL, InjectingServer

pytestmark = pytest.mark.timeout(300)

# C0 but line feed and tab, DEL, C1, the bidi embeddings, overrides and isolates.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Allowed in an accepted request by rule 10, and still escaped in the log: a line and a
# paragraph separator, a zero-width space and a byte-order mark.
SEPARATORS = "Evil\u2028INFO forged\u2029\u200b\ufeff PD"
SECRET_EMAIL = "hidden.investigator@example.gov"
SECRET_PHONE = "+1 415 555 0199"


def signed(world: World, base: SignedRfa, **fields: Any) -> SignedRfa:
    """`base` with `fields` replaced (dotted names reach into objects), signed again with
    the agency's real key: the device verifies it, then judges its rules."""
    payload = {k: dict(v) if isinstance(v, dict) else v for k, v in base.payload.items()}
    for name, value in fields.items():
        *outer, last = name.split(".")
        target = payload
        for part in outer:
            target = target[part]
        target[last] = value
    key = load_signing_key(world.agency_dir / "agency-signing.pem")
    rfa_id = payload["id"] if isinstance(payload["id"], str) else base.id
    return replace(base, id=rfa_id, payload=payload, envelope=make_envelope(payload, key))


def unsafe_in(log: bytes) -> list[str]:
    text = log.decode("utf-8")  # a byte that is not UTF-8 would fail here, as it should
    return sorted({f"U+{ord(ch):04X}" for ch in RAW.findall(text)})


def test_hostile_strings_reach_the_log_only_escaped(world: World) -> None:
    evil_server = InjectingServer()
    try:
        span = world.buffer_span()
        assert span is not None
        window = Window(span[1] - 2000, span[1])
        base = world.rfa(window, upload_url=evil_server.url, email=SECRET_EMAIL, phone=SECRET_PHONE)
        refused = {
            "id": signed(world, base, id=EVIL + str(uuid.uuid4())),
            "agency.name": signed(world, base, id=str(uuid.uuid4()), **{"agency.name": EVIL}),
            "case_number": signed(world, base, id=str(uuid.uuid4()), case_number=EVIL),
            "investigator": signed(
                world, base, id=str(uuid.uuid4()), **{"investigator.email": EVIL + SECRET_EMAIL}
            ),
            "description": signed(world, base, id=str(uuid.uuid4()), description=EVIL * 20),
            "upload_url": signed(
                world, base, id=str(uuid.uuid4()), upload_url=evil_server.url + EVIL
            ),
        }
        accepted = signed(world, base, id=str(uuid.uuid4()), **{"agency.name": SEPARATORS})
        for rfa in [*refused.values(), accepted]:
            world.publish(rfa)

        log_path = world.daemon.log_path
        marker = b"refused: bad_characters (The field id holds"
        wait_for(lambda: marker in log_path.read_bytes(), 60, "the refused id")
        for name, rfa in refused.items():
            if name != "id":
                line = f"request {rfa.id} refused: bad_characters (The field {name}"
                wait_for(lambda line=line: line.encode() in log_path.read_bytes(), 60, line)
        wait_for(lambda: accepted.id in world.pending_ids(), 60, "the accepted request pending")

        world.decide(accepted.id, approve=True)
        share = world.wait_share(accepted.id, state="failed", timeout=120)
        assert share["error"] == "POST: server answered 400"
        assert ("POST", 503) in evil_server.answered and ("POST", 400) in evil_server.answered
        wait_for(
            lambda: f"share {accepted.id} failed".encode() in log_path.read_bytes(),
            30,
            "the failed share in the log",
        )
    finally:
        evil_server.close()

    log = log_path.read_bytes()
    text = log.decode("utf-8")
    assert unsafe_in(log) == [], f"raw control or bidi characters in the log:\n{text}"
    # The escaped forms are there to read: the refused request's claimed id, the accepted
    # request's agency name beside its key-bound id, urllib3's warning about the header
    # line it could not parse (its repr, escaped again), and the retry after the 503.
    assert f"request {shown(refused['id'].payload['id'], limit=80)} refused" in text
    assert shown(EVIL) in text
    assert f'from sfpd ("{shown(SEPARATORS)}"), case 2026-004512, is pending' in text
    assert "\\u2028INFO forged\\u2029\\u200b\\ufeff" in text
    assert not any(line.startswith("INFO forged") for line in text.splitlines())
    assert "Failed to parse headers" in text and "\\\\x1b[2J" in text
    assert f"share {accepted.id}: POST: server answered 503; retrying" in text
    # Contact details never reach the log, escaped or not.
    assert SECRET_EMAIL not in text and SECRET_PHONE not in text
    assert "a.rivera@example.gov" not in text and "jane@example.com" not in text
