"""The cost of the constant owner channel (protocol.md §3, §5.1).

1. Broker volume: the bytes one device puts on the broker per day at the default rhythm
   (both sealed topics every `owner.sync_seconds` = 300 s), MQTT PUBLISH framing
   included, and what that means for a fleet of 10 million devices.
2. Build time: one round (pending list + shares list, signed, padded, sealed) with 9
   pending 12-hour windows over a 72-hour buffer index, as the device builds it (footage
   measured once at acceptance), against the same round when every window's footage is
   scanned at build time (what 1.0 did), and against `sync_seconds`. The owner must open
   a 16,384-byte message listing all 9 requests, or the benchmark fails.

    python -m bench.owner_channel [--hours 72] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from array import array
from pathlib import Path

from pyrage import x25519

from bench.sanity import require
from device.flow import RequestFlow
from device.identity import load_device_identity
from device.owner_channel import OwnerTopics, pending_message, seal_owner_envelope, shares_message
from device.state import StateStore
from foundation import wire
from foundation.clock import FakeClock
from foundation.times import Window, format_time, parse_time
from recorder.buffer import INDEX_NAME, FrameTable, RollingBuffer
from sync.anchor import AuditHead
from sync.envelope import make_envelope
from sync.keys import SigningKey
from sync.rfa import DeviceFacts, TrustedAgencyKey
from sync.seal import unseal

SYNC_SECONDS = 300.0
FLEET = 10_000_000
SEGMENT_MS = 4000
FPS = 15
HOUR_MS = 3_600_000


def publish_bytes(topic: str, payload: bytes) -> int:
    """An MQTT 5 QoS 1 PUBLISH on the wire: fixed header (1 byte + remaining length),
    topic (2 + n), packet id (2), property length (1, no properties), payload; plus the
    broker's 4-byte PUBACK back to the device."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining + 4


def broker_volume(identity_key: SigningKey, owner: x25519.Recipient) -> tuple[int, float]:
    topics = OwnerTopics.for_device("porch-cam-01")
    head = AuditHead(10_000, "ab" * 32, tuple("cd" * 32 for _ in range(32)))
    pending = seal_owner_envelope(pending_message([], head, 0, signing=identity_key), [owner])
    shares = seal_owner_envelope(shares_message([], head, 0, signing=identity_key), [owner])
    per_round = publish_bytes(topics.pending, pending) + publish_bytes(topics.shares, shares)
    per_day = per_round * (86_400 / SYNC_SECONDS)
    return per_round, per_day


def long_index(root: Path, hours: float, end_ms: int) -> int:
    """A buffer index of `hours` of 4-second 15 fps segments ending at `end_ms` (rows
    only: the build never opens a segment file)."""
    RollingBuffer.open(root, reconcile=False).close()
    conn = sqlite3.connect(root / INDEX_NAME)
    rows = []
    start = end_ms - int(hours * HOUR_MS)
    for seg_start in range(start, end_ms, SEGMENT_MS):
        times = [seg_start + i * 1000 // FPS for i in range(SEGMENT_MS * FPS // 1000)]
        n = len(times)
        table = FrameTable(
            b"", array("q", times), array("q", range(n)), array("q", [1] * n), b"\1" * n
        )
        rows.append(
            (f"seg-{seg_start}.mp4", times[0], times[-1], n, 400_000, 1, 1280, 720, float(FPS),
             "", b"", table.to_blob())
        )  # fmt: skip
    with conn:
        conn.executemany(
            "INSERT INTO segments (file, start_ms, end_ms, frames, bytes, synchronized, width, "
            "height, fps, preset, extradata, frame_table) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    conn.close()
    return len(rows)


def build_times(hours: float, rounds: int) -> tuple[list[float], list[float], int]:
    with tempfile.TemporaryDirectory(prefix="bench-owner-") as tmp:
        root = Path(tmp)
        now = 1_795_000_000_000
        clock = FakeClock(now)
        segments = long_index(root / "buffer", hours, now)
        buffer = RollingBuffer.open(root / "buffer", reconcile=False)
        identity = load_device_identity(root / "state", "porch-cam-01")
        store = StateStore.open(root / "state" / "state.sqlite")
        agency = SigningKey.generate()
        trusted = {agency.kid: TrustedAgencyKey("sfpd", agency.public)}

        class NoOutbox:
            def enqueue(self, *a: object, **k: object) -> None: ...

            def has_job(self, rfa_id: str) -> bool:
                return False

        class NoAudit:
            def append(self, *a: object, **k: object) -> None: ...

            def count_rejection(self, *a: object) -> None: ...

            def request_events(self) -> set[tuple[str, str]]:
                return set()

        flow = RequestFlow(
            store=store, audit=NoAudit(), buffer=buffer, outbox=NoOutbox(),
            facts=DeviceFacts("porch-cam-01", 37.7749, -122.4194, True, False),
            trusted_agencies=trusted, owner_keys={}, identity=identity, clock=clock,
            decide_within_ms=72 * HOUR_MS, share_contact_by_default=True,
        )  # fmt: skip
        owner_identity = x25519.Identity.generate()
        owner = owner_identity.to_public()
        for i in range(9):  # 9 pending 12-hour windows spread over the buffer
            end = now - i * 6 * HOUR_MS
            payload = {
                "type": "rfa", "id": str(uuid.uuid4()),
                "agency": {"id": "sfpd", "name": "San Francisco Police Department"},
                "case_number": f"2026-{i:06d}",
                "investigator": {"name": "Det. A. Rivera", "email": "a.rivera@example.gov"},
                "description": "d" * 1000,
                "area": {"lat": 37.7749, "lon": -122.4194, "radius_m": 800},
                "window": Window(end - 12 * HOUR_MS, end).to_json(),
                "issued_at": format_time(now), "expires_at": format_time(now + 86_400_000),
                "recipient": str(owner), "upload_url": "https://uploads.example.gov/files/",
            }  # fmt: skip
            outcome = flow.handle_rfa(make_envelope(payload, agency))
            assert outcome.accepted, outcome
        head = AuditHead(10_000, "ab" * 32, tuple("cd" * 32 for _ in range(32)))

        sealed: list[bytes] = []

        def one_round(scan: bool) -> float:
            started = time.perf_counter()
            views = flow.pending_views()
            if scan:  # what 1.0 did at every publish: measure each window's footage
                for view in views:
                    w = view.entry["window"]
                    buffer.footage_ms(Window(parse_time(w["start"]), parse_time(w["end"])))
            pending = seal_owner_envelope(
                pending_message(views, head, now, signing=identity.signing), [owner]
            )
            seal_owner_envelope(shares_message([], head, now, signing=identity.signing), [owner])
            elapsed = time.perf_counter() - started
            sealed[:] = [pending]
            return elapsed

        cached = [one_round(False) for _ in range(rounds)]
        scanned = [one_round(True) for _ in range(rounds)]
        opened = unseal(sealed[0], [owner_identity])
        listed = len(json.loads(json.loads(opened)["payload"])["requests"])
        require(
            len(opened) == wire.OWNER_MESSAGE_BYTES and listed == 9,
            f"the owner opens one {wire.OWNER_MESSAGE_BYTES}-byte message listing the 9 "
            f"pending requests ({len(opened)} bytes, {listed} listed)",
        )
        store.close()
        buffer.close()
        return cached, scanned, segments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=72)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    per_round, per_day = broker_volume(
        SigningKey.generate(), x25519.Identity.generate().to_public()
    )
    print(f"owner channel on the broker at sync_seconds={SYNC_SECONDS:g} (one owner recipient):")
    print(f"  plaintext per message: {wire.OWNER_MESSAGE_BYTES} bytes (fixed)")
    print(f"  per round (2 sealed PUBLISH + PUBACK): {per_round} bytes")
    print(f"  per device per day: {per_day / 1e6:.2f} MB")
    print(f"  fleet of {FLEET:,} devices: {per_day * FLEET / 1e12:.1f} TB/day, "
          f"{per_day * FLEET * 8 / 86_400 / 1e9:.2f} Gbit/s on average")  # fmt: skip
    cached, scanned, segments = build_times(args.hours, args.rounds)
    med_c, med_s = statistics.median(cached), statistics.median(scanned)
    print(f"one round with 9 pending 12-hour windows over a {args.hours:g}-hour index "
          f"({segments} segments), median of {args.rounds}:")  # fmt: skip
    print(f"  as built (footage measured at acceptance): {med_c * 1000:.1f} ms "
          f"(max {max(cached) * 1000:.1f} ms)")  # fmt: skip
    print(f"  scanning every window at build time (1.0): {med_s * 1000:.1f} ms "
          f"(the device's way is {med_s / med_c:.0f}x faster)")  # fmt: skip
    print(f"  ratio as built / scanning: {med_c / med_s:.3f}x")
    print(f"  vs sync_seconds {SYNC_SECONDS:g} s: {max(cached) / SYNC_SECONDS:.2e} of a period; "
          f"the build lead is 2 s, {2.0 / max(cached):.0f}x the slowest build")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
