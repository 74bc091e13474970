"""The wire contract's encodings, checked against vectors written out here, so that a
change to the functions (which the device and the owner tool both call) fails a test."""

from __future__ import annotations

import hashlib

from foundation.wire import canonical_json, details_sha256

# protocol.md §5.1: one request's details as the device sends them, keys out of order,
# a float that is an integer, non-ASCII text, a quote and a newline.
DETAILS = {
    "id": "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b",
    "investigator": {"name": 'Det. Zoë "Z" Ríos', "email": "z.rios@example.gov"},
    "agency": {"name": "San Francisco Police Department", "id": "sfpd"},
    "description": "Package theft\n\u2014 porches on Elm St.",
    "area": {"radius_m": 800.0, "lon": -122.4194, "lat": 37.7749},
}

# Its RFC 8785 form without `id`, written out by hand: keys sorted, no whitespace, 800.0
# written 800, non-ASCII as UTF-8, only the quote and the control character escaped.
CANONICAL = (
    '{"agency":{"id":"sfpd","name":"San Francisco Police Department"},'
    '"area":{"lat":37.7749,"lon":-122.4194,"radius_m":800},'
    '"description":"Package theft\\n\u2014 porches on Elm St.",'
    '"investigator":{"email":"z.rios@example.gov","name":"Det. Zo\u00eb \\"Z\\" R\u00edos"}}'
)

# ... and its hex SHA-256 (also `printf '%s' "$CANONICAL" | sha256sum`).
DETAILS_SHA256 = "cb0e76731f30f784a03a229e73026e1dc56cf9db4e492cad6e22243a757e0ca0"


def test_the_vector_is_consistent() -> None:
    assert hashlib.sha256(CANONICAL.encode("utf-8")).hexdigest() == DETAILS_SHA256


def test_canonical_json_writes_rfc_8785() -> None:
    body = {key: value for key, value in DETAILS.items() if key != "id"}
    assert canonical_json(body) == CANONICAL.encode("utf-8")


def test_details_sha256_is_the_hash_of_the_canonical_details_without_id() -> None:
    assert details_sha256(DETAILS) == DETAILS_SHA256


def test_details_sha256_does_not_depend_on_the_id_or_the_key_order() -> None:
    reordered = dict(reversed(list(DETAILS.items())), id="another id")
    assert details_sha256(reordered) == DETAILS_SHA256
    assert details_sha256({**DETAILS, "description": "Package theft"}) != DETAILS_SHA256
