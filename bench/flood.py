"""Flood benchmark: 20,000 messages at the fastest rate Mosquitto delivers, over 99 %
junk (garbage bytes, JSON of the wrong shape, unknown kid, bad signature, replays) with
genuine requests among them, against the intake process (MqttLink -> Intake ->
RequestFlow on real state, audit, outbox and buffer) while a recorder records.

Reports, beside `mosquitto_sub` receiving the same stream:
- messages/s handled by the device vs by mosquitto_sub (goal >= 50 %), and how many
  verified messages the stream held: each is acknowledged 2.0 s after it arrived
  (protocol.md §3, revision 1.2), and with PUBACKs in arrival order the broker's
  in-flight window (Receive Maximum, 16) fills behind it, so each can hold the stream up
  to 2 s,
- p99 publish-to-pending for the genuine requests in the flood (goal < 2 s; timed from
  the broker's PUBACK to the publisher, since the publisher's own send queue is seconds
  deep) and without a flood (goal < 50 ms, timed from the publish call),
- the intake process's RSS before and after,
- frames dropped by the concurrently running recorder (goal 0).

The broker is Mosquitto (MQTT 5) by default; `--broker nats` runs a three-node NATS
cluster with JetStream (MQTT 3.1.1) and `--broker rabbitmq` a RabbitMQ node with its
MQTT plugin (3.1.1), each on loopback (cloud/loopback_brokers.py). `mosquitto_sub` is
the stock subscriber on every broker (it speaks 3.1.1 by default); over 3.1.1 the
device's window is its own (it stops reading at receive_maximum owed PUBACKs).

Run: python -m bench.flood [--messages 20000] [--broker mosquitto|nats|rabbitmq]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.sanity import require
from cloud.loopback_brokers import BROKER_VERSION, BROKERS, start_broker
from foundation import wire
from foundation.clock import SystemClock
from recorder.process import RecorderProcess
from recorder.settings import CameraSettings, StorageSettings
from sync.keys import SigningKey, parse_recipient
from sync.seal import seal
from tests.device.intake_kit import decision_topic, rfa_topic
from tests.fixtures.mosquitto import Publisher
from tests.sync.factories import AgencyKeys, decision_envelope, rfa_envelope

ROOT = Path(__file__).resolve().parents[1]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def junk_stream(agency: AgencyKeys, replayed: bytes, n: int) -> list[bytes]:
    stranger = AgencyKeys.generate("other")
    forged = json.loads(rfa_envelope(agency, now_ms=now_ms()))
    forged["sig"] = SigningKey.generate().public_b64 * 2  # right length, wrong signature
    forged["sig"] = forged["sig"][:86]
    kinds = [
        lambda i: bytes((i * 7 + k) % 256 for k in range(200)),  # garbage bytes
        lambda i: json.dumps({"type": "rfa", "id": i, "x": [1, 2, 3]}).encode(),  # wrong shape
        lambda i: rfa_envelope(stranger, now_ms=now_ms()),  # unknown kid
        lambda i: json.dumps(forged).encode(),  # trusted kid, bad signature
        lambda i: replayed,  # replay of a request already seen
    ]
    cache = [kinds[k](0) for k in range(len(kinds))]
    return [cache[i % len(kinds)] if i % len(kinds) != 0 else kinds[0](i) for i in range(n)]


def genuine(agency: AgencyKeys, rfa_id: str) -> bytes:
    """A request the device accepts: each of its own case, since a device accepts at
    most two requests per case (protocol.md §4 rule 12)."""
    return rfa_envelope(agency, now_ms=now_ms(), rfa_id=rfa_id, changes={"case_number": rfa_id})


class IntakeProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.device.intake_kit", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.pending_at: dict[str, int] = {}
        self.denied: set[str] = set()
        self.stats: dict[str, Any] = {}
        first = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        assert first["event"] == "ready", first
        self.recipient = str(first["recipient"])
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            doc = json.loads(line)
            if doc["event"] == "outcome" and doc["accepted"] and doc["reason"] == "accepted":
                self.pending_at[doc["rfa_id"]] = doc["at_ms"]
            elif doc["event"] == "outcome" and doc["reason"] == "denied":
                self.denied.add(doc["rfa_id"])
            elif doc["event"] == "stats":
                self.stats = doc

    def ask_stats(self) -> dict[str, Any]:
        self.stats = {}
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not self.stats and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.stats

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--genuine", type=int, default=10)
    parser.add_argument(
        "--receive-maximum",
        type=int,
        default=16,
        help="the device's MQTT 5 Receive Maximum (protocol.md §3: at most 16)",
    )
    parser.add_argument("--broker", choices=BROKERS, default="mosquitto")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flood-"))
    broker = start_broker(args.broker, tmp / args.broker)
    version = BROKER_VERSION[args.broker]
    agency, owner = AgencyKeys.generate(), SigningKey.generate()
    recorder = RecorderProcess(
        camera=CameraSettings(source="synthetic", width=640, height=480, fps=15.0),
        storage=StorageSettings(dir=tmp / "device" / "buffer", segment_seconds=2.0),
        clock=SystemClock(assume_synchronized=True),
    )
    recorder.start()
    device = IntakeProcess(
        {
            "root": str(tmp / "device"),
            "url": broker.url,
            "agencies": {agency.agency_id: agency.signing.public_b64},
            "owner_keys": [owner.public_b64],
            "receive_maximum": args.receive_maximum,
            "protocol": version,
        }
    )
    try:
        time.sleep(3)  # let the recorder settle
        rss_before = device.rss()
        health_before = recorder.health()
        topic = rfa_topic()
        with Publisher(broker, client_id="flood-agency", protocol=version) as pub:
            # Quiet: genuine requests one by one, nothing else on the topic.
            quiet_ids = [str(uuid.uuid4()) for _ in range(5)]
            quiet_sent: dict[str, int] = {}
            for rfa_id in quiet_ids:
                data = genuine(agency, rfa_id)
                quiet_sent[rfa_id] = now_ms()
                pub.publish(topic, data)
                deadline = time.monotonic() + 5
                while rfa_id not in device.pending_at and time.monotonic() < deadline:
                    time.sleep(0.001)
            # The owner declines them, so that the flood's genuine requests find room in
            # the pending list (at most 10, protocol.md §4 rule 11).
            for rfa_id in quiet_ids:
                env = decision_envelope(
                    owner, rfa_id=rfa_id, now_ms=now_ms(), changes={"decision": "deny"}
                )
                pub.publish(decision_topic(), seal(env, [parse_recipient(device.recipient)]))
            deadline = time.monotonic() + 10
            while len(device.denied) < len(quiet_ids) and time.monotonic() < deadline:
                time.sleep(0.01)
            replayed = rfa_envelope(agency, now_ms=now_ms(), rfa_id=quiet_ids[0])
            stream: list[bytes | str] = list(junk_stream(agency, replayed, args.messages))
            step = max(1, len(stream) // (args.genuine + 1))
            flood_ids = [str(uuid.uuid4()) for _ in range(args.genuine)]
            for n, rfa_id in enumerate(flood_ids):
                stream[(n + 1) * step] = rfa_id  # placeholder, signed at publish time
            invalid = sum(1 for m in stream if isinstance(m, bytes)) / len(stream)

            expected = len(stream)
            sub = subprocess.Popen(
                [
                    "mosquitto_sub",
                    "-h",
                    broker.host,
                    "-p",
                    str(broker.port),
                    "-t",
                    topic,
                    "-q",
                    "1",
                    "-C",
                    str(expected),
                    "-N",
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # mosquitto_sub subscribed
            base = device.ask_stats()["received"]
            flood_sent: dict[str, int] = {}
            start = time.monotonic()
            for item in stream:
                if isinstance(item, str):
                    data = genuine(agency, item)
                    # The publisher's own queue is seconds deep at this rate: time from
                    # the broker's PUBACK (it holds the message), not from our enqueue.
                    pub.publish(topic, data, wait=True)
                    flood_sent[item] = now_ms()
                else:
                    pub.publish(topic, item, wait=False)
            published_s = time.monotonic() - start
            sub.wait(300)
            sub_s = time.monotonic() - start
            while True:
                stats = device.ask_stats()
                if (
                    stats["received"] - base >= expected
                    and stats["junk"] + stats["handled"] >= stats["received"]
                ):
                    break
                if time.monotonic() - start > 300:
                    break
                time.sleep(0.05)
            device_s = time.monotonic() - start
        rss_after = device.rss()
        health_after = recorder.health()

        quiet_lat = [
            device.pending_at[i] - quiet_sent[i] for i in quiet_ids if i in device.pending_at
        ]
        flood_lat = [
            device.pending_at[i] - flood_sent[i] for i in flood_ids if i in device.pending_at
        ]
        report = {
            "broker": f"{args.broker} (MQTT {'5' if version == 5 else '3.1.1'})",
            "messages": expected,
            "invalid_fraction": round(invalid, 4),
            "publish_s": round(published_s, 2),
            "mosquitto_sub_msgs_per_s": round(expected / sub_s),
            "device_msgs_per_s": round(expected / device_s),
            "device_vs_sub": round(sub_s / device_s, 2),
            "genuine_pending": f"{len(flood_lat)}/{len(flood_ids)}",
            # each acknowledged 2.0 s after it arrived (protocol.md §3, 1.2), and every
            # message behind it in the broker's window waits for that PUBACK
            "verified_messages_in_stream": len(flood_ids),
            "receive_maximum": args.receive_maximum,
            "ack_delay_s": wire.ACK_DELAY_S,
            "p99_publish_to_pending_flood_ms": p99([float(x) for x in flood_lat]),
            "p99_publish_to_pending_quiet_ms": p99([float(x) for x in quiet_lat]),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "recorder_frames_captured": health_after.frames_captured
            - health_before.frames_captured,
            "recorder_frames_dropped": health_after.frames_dropped - health_before.frames_dropped,
            "device_stats": device.stats,
        }
        print(json.dumps(report, indent=2))
        print(
            f"ratio device / mosquitto_sub on {args.broker}: {sub_s / device_s:.2f}x (goal >= 0.5x)"
        )
        require(
            len(quiet_lat) == len(quiet_ids) and len(flood_lat) == len(flood_ids),
            f"every genuine request pending: {len(quiet_lat)}/{len(quiet_ids)} quiet, "
            f"{len(flood_lat)}/{len(flood_ids)} in the flood",
        )
    finally:
        device.close()
        recorder.stop()
        broker.stop()


if __name__ == "__main__":
    main()
