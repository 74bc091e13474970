"""protocol.md §2: one signed envelope, one meaning, one canonical form.

Every spelling of a signed envelope that verifies (whitespace, key order, escapes such as
`\\u0072` or `\\/`, ASCII-only or raw UTF-8) re-emits as the same text; the spellings §2
forbids (`v` other than the integer 1, a non-canonical signature, a repeated key in the
envelope or in the payload) are refused.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.envelope import canonical_envelope, make_envelope, open_envelope, parse_envelope
from sync.errors import EnvelopeError
from sync.keys import SigningKey, b64url_encode
from sync.rfa import Accepted, check_rfa
from tests.sync.factories import NOW_MS, AgencyKeys, device_facts, rfa_envelope

AGENCY = AgencyKeys.generate()
KEY = SigningKey.generate()


def _escape_some(text: str, rng: random.Random) -> str:
    """`text` as the body of a JSON string, each character escaped in one of its legal
    spellings chosen at random (\\uXXXX for anything, \\/ for a slash, raw otherwise)."""
    out = []
    for ch in text:
        mandatory = json.dumps(ch)[1:-1]
        choices = [mandatory]
        if ch not in '"\\' and ord(ch) >= 0x20:
            choices.append(ch)
        if ord(ch) < 0x10000:
            choices += [f"\\u{ord(ch):04x}", f"\\u{ord(ch):04X}"]
        else:  # a surrogate pair
            units = ch.encode("utf-16-be")
            hi, lo = int.from_bytes(units[:2], "big"), int.from_bytes(units[2:], "big")
            choices.append(f"\\u{hi:04x}\\u{lo:04x}")
        if ch == "/":
            choices.append("\\/")
        out.append(rng.choice(choices))
    return '"' + "".join(out) + '"'


def respell(envelope: bytes, seed: int) -> bytes:
    """Another text of the same envelope object: shuffled keys, random whitespace, random
    escapes in every string (the payload string included: its *value* is unchanged)."""
    rng = random.Random(seed)
    doc = json.loads(envelope)
    keys = list(doc)
    rng.shuffle(keys)
    ws = [" ", "\n", "\t", "\r\n ", ""]
    parts = []
    for key in keys:
        value = doc[key]
        text = _escape_some(value, rng) if isinstance(value, str) else json.dumps(value)
        parts.append(
            f"{rng.choice(ws)}{_escape_some(key, rng)}{rng.choice(ws)}:{rng.choice(ws)}{text}"
        )
    return ("{" + ",".join(parts) + rng.choice(ws) + "}" + rng.choice(ws)).encode("utf-8")


payload_texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60).map(
    lambda t: json.dumps({"type": "x", "note": t, "path": "a/b"}, ensure_ascii=False)
)


@settings(max_examples=200, deadline=None)
@given(payload_texts, st.integers(0, 2**32), st.integers(0, 2**32))
def test_every_spelling_has_one_canonical_form(payload: str, seed_a: int, seed_b: int) -> None:
    original = make_envelope(payload, KEY)
    a, b = respell(original, seed_a), respell(original, seed_b)
    trusted = {KEY.kid: KEY.public}
    assert open_envelope(a, trusted).payload_text == payload
    assert open_envelope(b, trusted).payload_text == payload
    canon = canonical_envelope(parse_envelope(a))
    assert canon == canonical_envelope(parse_envelope(b))
    assert canon == canonical_envelope(parse_envelope(original))
    assert canon == rfc8785.dumps(json.loads(original)).decode()
    # and the canonical form is itself a valid envelope with the same payload
    assert open_envelope(canon, trusted).payload_text == payload


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_two_devices_embed_one_text_for_one_request(seed_a: int, seed_b: int) -> None:
    """What a share manifest embeds (Rfa.envelope_text) does not depend on the spelling."""
    original = rfa_envelope(AGENCY)
    texts = set()
    for data in (original, respell(original, seed_a), respell(original, seed_b)):
        result = check_rfa(data, device_facts(), AGENCY.trusted(), set(), NOW_MS, pending_count=0)
        assert isinstance(result, Accepted)
        texts.add(result.rfa.envelope_text)
    assert len(texts) == 1


def _doc(**changes: Any) -> dict[str, Any]:
    doc = json.loads(make_envelope({"type": "x"}, KEY))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_doc()).replace('"v": 1', '"v": 1.0'),
        json.dumps(_doc()).replace('"v": 1', '"v": 1e0'),
        json.dumps(_doc(v=True)),
        json.dumps(_doc(v="1")),
        json.dumps(_doc()).replace('"v": 1', '"v": 1, "v": 1'),
        json.dumps(_doc()).replace('"alg": "Ed25519"', '"alg": "Ed25519", "alg": "Ed25519"'),
        json.dumps(_doc()).replace('"kid"', '"kid": "0000000000000000", "kid"'),
        json.dumps(_doc()).replace('"payload"', '"payload": "{}", "payload"'),
        json.dumps(_doc()).replace('"sig"', '"sig": "", "sig"'),
    ],
    ids=[
        "v 1.0",
        "v 1e0",
        "v true",
        "v string",
        "repeated v",
        "repeated alg",
        "repeated kid",
        "repeated payload",
        "repeated sig",
    ],
)
def test_forbidden_envelope_spellings_are_refused(text: str) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(text, {KEY.kid: KEY.public})


def test_a_signature_with_spare_bits_set_is_refused() -> None:
    doc = _doc()
    sig = doc["sig"]
    assert len(sig) == 86  # 64 bytes: the last character carries 2 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(sig[-1])
    for spare in (1, 2, 3):
        doc["sig"] = sig[:-1] + alphabet[value ^ spare]
        with pytest.raises(EnvelopeError, match="canonical"):
            parse_envelope(json.dumps(doc))
    doc["sig"] = sig
    assert b64url_encode(parse_envelope(json.dumps(doc)).sig) == sig


@pytest.mark.parametrize(
    "payload",
    ['{"type":"x","type":"y"}', '{"a":{"b":1,"b":2}}', '{"a":[{"k":1,"k":1}]}', '{"n":NaN}'],
)
def test_repeated_keys_or_nan_in_the_payload_are_refused(payload: str) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(make_envelope(payload, KEY), {KEY.kid: KEY.public})
