"""Property: any single-byte corruption of the log is caught, no later than the entry hit."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.audit import AuditLog, verify_audit
from foundation.clock import FakeClock
from sync.keys import SigningKey

KEY = SigningKey.generate()
EVENTS = st.sampled_from(["rfa_accepted", "decision", "expired", "share", "rfa_rejected"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
FIELDS = st.dictionaries(
    st.sampled_from(["rfa_id", "reason", "state", "count", "case_number"]),
    st.one_of(TEXT, st.integers(-(10**6), 10**6), st.none(), st.booleans()),
    max_size=4,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appends=st.lists(st.tuples(EVENTS, FIELDS), min_size=1, max_size=8),
    where=st.floats(0, 1, exclude_max=True),
    xor=st.integers(1, 255),
)
def test_single_byte_corruption_is_detected(appends, where, xor):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog.open(path, KEY, clock=FakeClock(1_790_000_000_000))
        for event, fields in appends:
            log.append(event, fields)
        log.close()
        assert verify_audit(path, KEY.public).ok

        data = bytearray(path.read_bytes())
        offset = int(where * len(data))
        data[offset] ^= xor
        path.write_bytes(bytes(data))
        hit = data[:offset].count(b"\n") + 1  # the entry whose line holds the byte

        report = verify_audit(path, KEY.public)
        assert not report.ok
        assert report.first_broken is not None
        assert report.first_broken <= hit
