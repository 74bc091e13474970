"""The device's intake side wired up for tests and the flood benchmark: MqttLink ->
Intake -> RequestFlow over a real StateStore, AuditLog, Outbox and RollingBuffer.

Run as a module (`python -m tests.device.intake_kit SPEC_JSON`) it is a stand-alone
intake process that prints one JSON line per outcome on stdout ("ready" first), so a
test can kill -9 it and a benchmark can measure it from outside.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.audit import AuditLog
from device.flow import Outcome, RequestFlow
from device.identity import DeviceIdentity, load_device_identity
from device.intake import Intake
from device.state import StateStore
from foundation.clock import Clock, SystemClock
from foundation.times import Window
from recorder.buffer import RollingBuffer
from sync.geo import cell_of
from sync.keys import public_key_from_b64
from sync.mqtt import Backoff, InboundMessage, MqttLink
from sync.outbox import Outbox
from sync.rfa import DeviceFacts, TrustedAgencyKey
from sync.settings import MqttSettings
from tests.fixtures.footage import index_footage
from tests.sync.factories import DEVICE_ID, DEVICE_LAT, DEVICE_LON

HOUR_MS = 3600 * 1000


def rfa_topic() -> str:
    return f"rfa/v1/cell/{cell_of(DEVICE_LAT, DEVICE_LON)}"


def decision_topic(device_id: str = DEVICE_ID) -> str:
    return f"devices/{device_id}/owner/decision"


@dataclass
class IntakeStack:
    root: Path
    identity: DeviceIdentity
    store: StateStore
    audit: AuditLog
    outbox: Outbox
    buffer: RollingBuffer
    flow: RequestFlow
    intake: Intake
    link: MqttLink
    stop: threading.Event
    worker: threading.Thread

    def close(self) -> None:
        self.stop.set()
        self.link.stop()
        self.worker.join(10)
        self.audit.close()
        self.store.close()
        self.outbox.close()
        self.buffer.close()


def build_stack(
    root: Path,
    *,
    url: str,
    agencies: dict[str, str],  # agency_id -> base64url public key
    owner_keys: list[str],
    clock: Clock | None = None,
    protocol: int = 5,
    decide_within_hours: float = 72.0,
    on_outcome: Any = None,
    queue_size: int = 128,
    receive_maximum: int | None = None,
) -> IntakeStack:
    clock = clock or SystemClock(assume_synchronized=True)
    state_dir = root / "state"
    identity = load_device_identity(state_dir, DEVICE_ID)
    store = StateStore.open(state_dir / "state.sqlite")
    audit = AuditLog.open(state_dir / "audit.jsonl", identity.signing, clock=clock)
    outbox = Outbox.open(state_dir / "outbox")
    buffer = RollingBuffer.open(root / "buffer")
    if not buffer.segments():  # footage around now, so that approvals send something
        now = clock.wall_ms()
        index_footage(buffer, Window(now - 4 * 24 * HOUR_MS, now + 4 * 24 * HOUR_MS))
    trusted: dict[str, TrustedAgencyKey] = {}
    for agency_id, key in agencies.items():
        tk = TrustedAgencyKey(agency_id=agency_id, public_key=public_key_from_b64(key))
        trusted[tk.kid] = tk
    owners: dict[str, Ed25519PublicKey] = {}
    for key in owner_keys:
        from sync.keys import key_id, raw_public

        pub = public_key_from_b64(key)
        owners[key_id(raw_public(pub))] = pub
    flow = RequestFlow(
        store=store,
        audit=audit,
        buffer=buffer,
        outbox=outbox,
        facts=DeviceFacts(
            device_id=DEVICE_ID,
            lat=DEVICE_LAT,
            lon=DEVICE_LON,
            requests_enabled=True,
            allow_plain_http_loopback=False,
        ),
        trusted_agencies=trusted,
        owner_keys=owners,
        identity=identity,
        clock=clock,
        decide_within_ms=int(decide_within_hours * HOUR_MS),
        share_contact_by_default=True,
    )
    flow.recover()
    stop = threading.Event()
    intake = Intake(
        flow=flow,
        audit=audit,
        seen=store.seen_ids,
        trusted_agencies=trusted,
        rfa_topic=rfa_topic(),
        decision_topic=decision_topic(),
        clock=clock,
        stop=stop,
        queue_size=queue_size,
        housekeeping_s=0.5,
        on_outcome=on_outcome,
    )
    settings = MqttSettings(url=url, protocol=protocol)
    if receive_maximum is not None:
        settings = replace(settings, receive_maximum=receive_maximum)
    link = MqttLink(
        settings,
        client_id=DEVICE_ID,
        status_topic=f"devices/{DEVICE_ID}/status",
        version="0.1.0",
        subscriptions=(rfa_topic(), decision_topic()),
        on_message=intake.on_message,
        stop=stop,
        backoff=Backoff(initial_s=0.05, cap_s=0.5),
    )
    worker = threading.Thread(target=intake.run, name="intake", daemon=True)
    worker.start()
    link.start()
    return IntakeStack(
        root, identity, store, audit, outbox, buffer, flow, intake, link, stop, worker
    )


def main() -> None:
    spec = json.loads(sys.argv[1])
    lock = threading.Lock()

    def emit(doc: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    def on_outcome(message: InboundMessage, outcome: Outcome) -> None:
        import time

        emit(
            {
                "event": "outcome",
                "topic": message.topic,
                "accepted": outcome.accepted,
                "reason": outcome.reason,
                "rfa_id": outcome.rfa_id,
                "at_ms": time.time_ns() // 1_000_000,
            }
        )

    stack = build_stack(
        Path(spec["root"]),
        url=spec["url"],
        agencies=spec["agencies"],
        owner_keys=spec["owner_keys"],
        protocol=spec.get("protocol", 5),
        on_outcome=on_outcome,
        queue_size=spec.get("queue_size", 128),
        receive_maximum=spec.get("receive_maximum"),
    )
    stack.link.wait_connected(30)
    emit({"event": "ready", "recipient": stack.identity.recipient})
    # Report counters on request: a line on stdin asks for them; EOF ends the process.
    for _line in sys.stdin:
        s = stack.intake.stats
        emit(
            {
                "event": "stats",
                "received": s.received,
                "junk": s.junk,
                "handled": s.handled,
                "accepted": s.accepted,
                "blocked_s": s.blocked_s,
            }
        )
    stack.close()


if __name__ == "__main__":
    main()
