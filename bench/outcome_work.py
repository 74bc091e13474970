"""The work of each message outcome (protocol.md §3, revision 1.2): durable writes and
time, on an SD-card-like disk.

Every message whose signature verified is acknowledged 2.0 s after it arrived, so the
work its outcome needs must stay far below that. This runs RequestFlow over the real
StateStore, AuditLog, Outbox and RollingBuffer in a child process with
tests/fixtures/slow_fsync.c preloaded (every fsync/fdatasync `--fsync-ms` slower, and
counted), and reports per outcome path the fsyncs and the milliseconds of one call
(median over the samples, with min and max).

    python -m bench.outcome_work [--fsync-ms 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.sanity import require

# Every outcome path measure() runs, by the name it reports.
PATHS = 8
FAR_AREA = {"lat": 37.80, "lon": -122.4194, "radius_m": 800}  # about 2.8 km north


def measure(rounds: int) -> dict[str, Any]:
    """In the child process (the shim preloaded): run every path, return the figures."""
    from device.audit import AuditLog
    from device.flow import Outcome, RequestFlow
    from device.identity import load_device_identity
    from device.state import StateStore
    from foundation.clock import SystemClock
    from recorder.buffer import RollingBuffer
    from sync.keys import SigningKey, parse_recipient
    from sync.outbox import Outbox
    from sync.seal import seal
    from tests.fixtures.slow_fsync import fsync_calls
    from tests.sync.factories import (
        DEVICE_ID,
        AgencyKeys,
        decision_envelope,
        device_facts,
        rfa_envelope,
    )

    root = Path(tempfile.mkdtemp(prefix="outcome-work-"))
    clock = SystemClock(assume_synchronized=True)
    identity = load_device_identity(root / "state", DEVICE_ID)
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    flow = RequestFlow(
        store=StateStore.open(root / "state" / "state.sqlite"),
        audit=AuditLog.open(root / "state" / "audit.jsonl", identity.signing, clock=clock),
        buffer=RollingBuffer.open(root / "buffer"),
        outbox=Outbox.open(root / "state" / "outbox"),
        facts=device_facts(),
        trusted_agencies=agency.trusted(),
        owner_keys={owner.kid: owner.public},
        identity=identity,
        clock=clock,
        decide_within_ms=72 * 3_600_000,
        share_contact_by_default=True,
    )
    flow.recover()
    samples: dict[str, list[tuple[int, float]]] = defaultdict(list)
    recipient = parse_recipient(identity.recipient)

    def run(path: str, call: Callable[[], Outcome], expect: str) -> None:
        before, started = fsync_calls(), time.perf_counter()
        outcome = call()
        took = time.perf_counter() - started
        after = fsync_calls()
        if str(outcome.reason) != expect:
            raise SystemExit(f"{path}: expected {expect}, got {outcome.reason} {outcome.detail}")
        samples[path].append(((after or 0) - (before or 0), took * 1000))

    def request(**changes: Any) -> bytes:
        changes.setdefault("case_number", f"case-{uuid.uuid4().hex[:12]}")
        return rfa_envelope(agency, now_ms=clock.wall_ms(), changes=changes)

    def decision(rfa_id: str, verdict: str) -> bytes:
        env = decision_envelope(
            owner, rfa_id=rfa_id, now_ms=clock.wall_ms(), changes={"decision": verdict}
        )
        return seal(env, [recipient])

    bad_signature = json.loads(request())
    bad_signature["sig"] = json.loads(request())["sig"]
    junk = json.dumps(bad_signature).encode()
    for _ in range(rounds):
        for n in range(10):  # to a full pending list, a refused request between two
            run("request accepted", lambda: flow.handle_rfa(request()), "accepted")
            if n % 3 == 0:
                run(
                    "request refused after verify (outside the area)",
                    lambda: flow.handle_rfa(request(area=FAR_AREA)),
                    "outside_area",
                )
        for _ in range(4):
            run(
                "request refused, pending list full",
                lambda: flow.handle_rfa(request()),
                "too_many_pending",
            )
        flow.pause_requests(True)
        for _ in range(4):
            run("request refused, paused", lambda: flow.handle_rfa(request()), "requests_off")
        flow.pause_requests(False)
        for n, pending in enumerate(flow.pending()):
            verdict = "approve" if n % 2 == 0 else "deny"
            sealed = decision(pending.rfa.id, verdict)
            expect = {"approve": "approved", "deny": "denied"}[verdict]
            run(f"decision {verdict}", lambda s=sealed: flow.handle_decision(s), expect)
            sealed = decision(pending.rfa.id, "approve")
            if n < 4:
                run(
                    "decision refused after verify (not pending)",
                    lambda s=sealed: flow.handle_decision(s),
                    "not_pending",
                )
        for _ in range(4):
            run("junk (bad signature)", lambda: flow.handle_rfa(junk), "bad_signature")
    report = {}
    for path, values in samples.items():
        fsyncs = [f for f, _ in values]
        ms = [t for _, t in values]
        report[path] = {
            "samples": len(values),
            "fsyncs_median": statistics.median(fsyncs),
            "fsyncs_range": [min(fsyncs), max(fsyncs)],
            "ms_median": round(statistics.median(ms), 1),
            "ms_range": [round(min(ms), 1), round(max(ms), 1)],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsync-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return
    # The checkout measured is the one on PYTHONPATH (so an older one can be measured
    # too), else this one.
    checkout = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1])
    sys.path[:0] = checkout.split(os.pathsep)
    from foundation.wire import ACK_DELAY_S
    from tests.fixtures.slow_fsync import build_slow_fsync, slow_fsync_env

    shim = build_slow_fsync(Path(tempfile.mkdtemp(prefix="slow-fsync-")))
    if shim is None:
        raise SystemExit("no C compiler (cc) to build tests/fixtures/slow_fsync.c")
    done = subprocess.run(
        [sys.executable, __file__, "--child", f"--rounds={args.rounds}"],
        env={**slow_fsync_env(shim, args.fsync_ms), "PYTHONPATH": checkout},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip() or done.stdout.strip())
    report = json.loads(done.stdout)
    print(f"fsync delay {args.fsync_ms} ms; per path: fsyncs (range), ms median (range)")
    for path, row in report.items():
        print(
            f"{path:50s} {row['fsyncs_median']:g} {row['fsyncs_range']}  "
            f"{row['ms_median']} {row['ms_range']}  n={row['samples']}"
        )
    require(len(report) == PATHS, f"every outcome path measured: {sorted(report)}")
    slowest = max(row["ms_range"][1] for row in report.values())
    print(
        f"ratio slowest outcome's work / acknowledgement delay: "
        f"{slowest / (ACK_DELAY_S * 1000):.3f}x (goal far below 1x)"
    )


if __name__ == "__main__":
    main()
