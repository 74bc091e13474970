"""Daemon-level fault tolerance, against the real `doorbelld`, a real Mosquitto and a real
tus server: power cuts (kill -9) at random moments, a broker outage, an upload server
outage, a full disk and a wall clock that jumps. Each test says in its docstring what it
proves.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from cloud.loopback import MosquittoBroker, TusServer
from cloud.verify import Report, verify_share
from device.audit import read_entries
from device.state import RequestState, StateStore
from foundation.times import Window
from sync.keys import load_identity, load_signing_key
from tests.fixtures.daemon import World, make_world, now_ms, start_and_pair
from tests.fixtures.mosquitto import read_retained
from tests.integration.faults import (
    ask,
    export_and_check,
    pending_ids,
    sealed_decision,
    send_decision,
    settle,
    shares,
    write_json,
)


def buffer_span(world: World) -> tuple[int, int] | None:
    """The buffer's span read from its files (works with the daemon down)."""
    from device.status import BufferFacts

    span = BufferFacts.read(world.setup.root / "var" / "buffer").span
    return (span.start_ms, span.end_ms) if span else None


def verify_upload(world: World, rfa_id: str) -> Report:
    """The share of `rfa_id` on the tus server: exactly one upload per object, both
    complete, and the agency's verification passes."""
    mine = [u for u in world.uploads.uploads() if u.metadata.get("rfa_id") == rfa_id]
    kinds = sorted(u.metadata.get("kind", "?") for u in mine)
    assert kinds == ["clip", "manifest"], f"uploads for {rfa_id}: {mine}"
    by_kind = {u.metadata["kind"]: u for u in mine}
    assert all(u.complete for u in mine), mine
    report = verify_share(
        by_kind["manifest"].path,
        by_kind["clip"].path,
        identity=load_identity(world.agency_dir / "agency-age.txt"),
        agency_keys=[load_signing_key(world.agency_dir / "agency-signing.pem").public],
        owner_keys=[world.owner.signing_key().public],
    )
    assert report.ok, report.render()
    return report


def rejection_counts(world: World) -> dict[str, int]:
    """The audit log's coalesced rejection counters, by reason."""
    counts: dict[str, int] = {}
    for entry in read_entries(world.setup.root / "var" / "state" / "audit.log"):
        if entry.event == "rejections":
            reason = str(entry.fields["reason"])
            counts[reason] = counts.get(reason, 0) + int(entry.fields["count"])
    return counts


# ---------------------------------------------------------------------------- 1. kill -9
@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_request_decision_or_upload(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    """Power cuts at random moments (recording, requests pending, decisions in flight,
    mid-upload), 20+ times: after every restart no pending request, seen id, decision or
    outbox entry is lost (a re-published seen request does not become pending again, a
    replayed owner decision changes nothing), the buffer exports cleanly (every frame
    decodes, stamps strictly increase inside the window), and a share approved before
    the kills resumes and completes with exactly one upload per object, verified."""
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"kill test seed {seed}")
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        segment_seconds=1,
        chunk_bytes="64KiB",
        extra={"share": {"bandwidth_bytes_per_s": "32KB", "max_attempts": 1000}},
    )
    start_and_pair(world)
    try:
        settle(lambda: buffer_span(world), world, timeout=30, what="footage")
        time.sleep(5)
        span = buffer_span(world)
        assert span is not None
        # The share that must survive every kill: approved before the first one.
        shared = world.rfa(Window(span[0], span[1]))
        world.publish(shared)
        settle(lambda: shared.id in pending_ids(world), world, timeout=20, what="first request")
        approval = sealed_decision(world, shared.id, approve=True)
        send_decision(world, approval)
        settle(lambda: shared.id in shares(world), world, timeout=20, what="share queued")

        published: dict[str, Any] = {}  # rfa id -> SignedRfa, every one the broker took
        denied: dict[str, bytes] = {}  # rfa id -> the sealed decision that denied it
        confirmed_pending: set[str] = set()
        share_states: list[str] = []
        kills_mid_upload = 0
        cycles = 22
        for cycle in range(cycles):
            # -- act, then cut the power at a random moment --------------------------------
            actions = rng.sample(["publish", "publish", "deny", "replay", "decide_replay"], 2)
            for action in actions:
                # Rule 11 accepts a request only while fewer than 10 are pending: stay
                # one below it, as a decision in flight at a kill may not have landed.
                if action == "publish" and len(published) - len(denied) < 9:
                    end = now_ms() - 500
                    rfa = world.rfa(Window(end - 4000, end), case_number=f"2026-{cycle:06d}")
                    world.publish(rfa)
                    published[rfa.id] = rfa
                elif action == "deny" and confirmed_pending:
                    victim = rng.choice(sorted(confirmed_pending))
                    sealed = sealed_decision(world, victim, approve=False)
                    send_decision(world, sealed)
                    denied[victim] = sealed
                    confirmed_pending.discard(victim)
                elif action == "replay" and published:
                    world.publish(published[rng.choice(sorted(published))])
                elif action == "decide_replay":
                    send_decision(world, rng.choice([approval, *denied.values()]))
            time.sleep(rng.uniform(0.2, 2.0))
            state = shares(world).get(shared.id, {}).get("state", "?")
            world.daemon.kill()
            share_states.append(state)
            if state == "uploading":
                partial = [
                    u
                    for u in world.uploads.uploads()
                    if u.metadata.get("rfa_id") == shared.id and not u.complete
                ]
                kills_mid_upload += bool(partial)  # an upload begun on the server, unfinished

            # -- with the power off: the buffer exports cleanly ------------------------------
            if cycle % 4 == 3 or cycle == cycles - 1:
                span = buffer_span(world)
                assert span is not None
                check = export_and_check(
                    world, Window(span[0], span[1]), tmp_path / f"clip-{cycle}.mp4"
                )
                assert check.frames > 10, check

            # -- power back: nothing durable was lost -------------------------------------
            world.daemon.start()
            expected = set(published) - set(denied)

            def pending_as_expected(expected: set[str] = expected) -> bool:
                return pending_ids(world) == expected

            settle(
                pending_as_expected,
                world,
                timeout=30,
                what=f"cycle {cycle}: pending == {len(expected)} published, undecided",
            )
            confirmed_pending = set(expected)
            current = shares(world)
            assert shared.id in current, f"cycle {cycle}: the outbox lost the share"
            assert current[shared.id]["state"] in ("queued", "uploading", "done"), current
            assert not (set(denied) & set(current)), "a denied request was shared"

        # -- the end: the share completes, once; replays were refused ---------------------
        settle(
            lambda: shares(world)[shared.id]["state"] == "done",
            world,
            timeout=120,
            what="the share to complete",
        )
        verify_upload(world, shared.id)
        print(f"share states at the kills: {share_states}")
        assert kills_mid_upload >= 1, f"no kill landed mid-upload: {share_states}"
        assert "uploading" in share_states

        # A replayed decision and a re-published request, once more, then a clean stop.
        send_decision(world, approval)
        world.publish(shared)
        time.sleep(2)
        assert shared.id not in pending_ids(world)
        assert world.daemon.stop() == 0
    finally:
        world.daemon.stop()

    store = StateStore.open(world.setup.root / "var" / "state" / "state.db")
    try:
        for rfa_id in published:
            assert rfa_id in store.seen_ids, f"seen id {rfa_id} lost"
            record = store.request(rfa_id)
            assert record is not None
            if rfa_id in denied:
                assert record.state is RequestState.DENIED, (rfa_id, record.state)
            else:
                assert record.state is RequestState.PENDING, (rfa_id, record.state)
        record = store.request(shared.id)
        assert record is not None and record.state is RequestState.QUEUED, record
        decision = store.decision(shared.id)
        assert decision is not None and decision.nonce is not None
        assert decision.nonce in store.used_nonces
    finally:
        store.close()
    # Every replay was refused and counted; none became a second share.
    assert len([u for u in world.uploads.uploads() if u.metadata["rfa_id"] == shared.id]) == 2
    refused = rejection_counts(world)
    assert refused.get("decision_not_pending", 0) + refused.get("decision_nonce_reused", 0) >= 1


# ------------------------------------------------------------------- 2. broker outage
class StatusWatch:
    """Subscribes to the device's status topic and keeps what arrives live (not the
    retained copy replayed at subscription)."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.live: list[bytes] = []
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="status-watch")
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if not message.retain:
            self.live.append(bytes(message.payload))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.mark.slow
def test_broker_down_for_a_minute_then_requests_arrive_and_recording_never_stopped(
    world: World,
) -> None:
    """The broker stops for 60 s and comes back: a request published right after its
    return, while the device may still be backing off, reaches the device through its
    persistent session and becomes pending; the device announces itself online again
    (a live status publish, and the retained status reads online); recording went on
    the whole time (the buffer grew by about the outage, no frame dropped)."""
    before = ask(world, "status")["status"]
    span_before = buffer_span(world)
    assert span_before is not None and before["frames_dropped"] == 0
    world.broker.stop()
    outage_started = time.monotonic()
    settle(
        lambda: ask(world, "status")["status"]["broker"] == "disconnected",
        world,
        timeout=20,
        what="the daemon to notice the broker is gone",
    )
    time.sleep(max(0.0, 60 - (time.monotonic() - outage_started)))
    mid = buffer_span(world)
    assert mid is not None and mid[1] > span_before[1] + 50_000, "recording paused"
    world.broker.start()
    status_topic = f"devices/{world.setup.device_id}/status"
    watch = StatusWatch(world.broker, status_topic)
    try:
        span = buffer_span(world)
        assert span is not None
        rfa = world.rfa(Window(span[1] - 30_000, span[1] - 20_000))
        world.publish(rfa)  # the device is most likely still waiting to reconnect
        # (when it is, only the broker's queue for its persistent session can deliver)
        print(
            "device connected when the request was published:",
            ask(world, "status")["status"]["broker"],
        )
        settle(
            lambda: rfa.id in pending_ids(world),
            world,
            timeout=90,
            what="the request published during backoff to become pending",
        )
        settle(
            lambda: any(json.loads(p).get("state") == "online" for p in watch.live),
            world,
            timeout=20,
            what="a live 'online' status after the outage",
        )
    finally:
        watch.close()
    retained = read_retained(world.broker, status_topic)
    assert retained is not None and json.loads(retained)["state"] == "online", retained
    after = ask(world, "status")["status"]
    assert after["broker"] == "connected" and after["recording"] is True
    assert after["frames_dropped"] == 0, after
    span_after = buffer_span(world)
    assert span_after is not None and span_after[0] <= span_before[0] + 2000
    assert span_after[1] - span_before[1] >= 60_000


# --------------------------------------------------------------- 3. upload server outage
def test_upload_server_down_share_retries_then_completes(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    """A share approved while the tus server is down keeps retrying (queued/uploading,
    never failed) and completes, verified, once the server is back."""
    world = make_world(tmp_path, mosquitto, tus_server, extra={"share": {"max_attempts": 50}})
    start_and_pair(world)
    try:
        settle(lambda: buffer_span(world), world, timeout=30, what="footage")
        time.sleep(3)
        span = buffer_span(world)
        assert span is not None
        rfa = world.rfa(Window(span[0], span[1]))
        world.publish(rfa)
        settle(lambda: rfa.id in pending_ids(world), world, timeout=20, what="pending")
        world.uploads.stop()
        assert "approved" in world.daemon.ctl("approve", rfa.id).stdout
        states: list[dict[str, Any]] = []
        down_until = time.monotonic() + 15
        while time.monotonic() < down_until:
            entry = shares(world)[rfa.id]
            states.append(entry)
            assert entry["state"] in ("queued", "uploading"), entry
            time.sleep(0.5)
        assert world.uploads.uploads() == []
        retried = [s for s in states if s.get("error") or s.get("attempts")]
        assert retried, f"no failed attempt was recorded while the server was down: {states}"
        world.uploads.start()
        settle(
            lambda: shares(world)[rfa.id]["state"] == "done",
            world,
            timeout=90,
            what="the share to complete after the server returned",
        )
        verify_upload(world, rfa.id)
    finally:
        world.daemon.stop()


# ------------------------------------------------------------------------ 4. full disk
class FillingDisk:
    """A disk of fixed size that the buffer fills: the steered free figure is what was
    free when filling began minus what the buffer has grown since, so deleting footage
    frees room again as on a real disk. A thread keeps the file current."""

    def __init__(self, world: World, control: Path, free_at_start: int) -> None:
        import threading

        self._world = world
        self._control = control
        self._free0 = free_at_start
        self._bytes0 = self._buffer_bytes()
        self._stop = threading.Event()
        self._update()
        self._thread = threading.Thread(target=self._run, name="filling-disk", daemon=True)
        self._thread.start()

    def _buffer_bytes(self) -> int:
        from device.status import BufferFacts

        return BufferFacts.read(self._world.setup.root / "var" / "buffer").bytes

    def _update(self) -> None:
        free = max(0, self._free0 - (self._buffer_bytes() - self._bytes0))
        tmp = self._control.with_suffix(".tmp")
        tmp.write_text(str(free))
        os.replace(tmp, self._control)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._update()
            except Exception:  # a buffer being rewritten; next round
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def pending_entry(world: World, rfa_id: str) -> dict[str, Any]:
    return next(e for e in ask(world, "pending")["requests"] if e["id"] == rfa_id)


@pytest.mark.slow
def test_full_disk_keeps_recording_evicts_unpinned_and_keeps_pinned_footage(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    tus_server: TusServer,
) -> None:
    """The disk fills to its last megabytes (under storage.min_free_bytes, 16 MiB) while
    a pending request pins a window: recording goes on (the buffer's end advances), old
    unpinned footage is evicted (its start moves up to the pinned window), the pinned
    footage survives whole (footage_seconds unchanged) and its approved share verifies."""
    control = tmp_path / "free-space"
    world = make_world(
        tmp_path, mosquitto, tus_server, hooks=("--free-space-file", str(control)),
        segment_seconds=1,
    )  # fmt: skip
    start_and_pair(world)
    disk: FillingDisk | None = None
    try:
        settle(lambda: buffer_span(world), world, timeout=30, what="footage")
        time.sleep(8)
        span = buffer_span(world)
        assert span is not None
        pinned = Window(span[0] + 3000, span[0] + 5000)
        rfa = world.rfa(pinned)
        world.publish(rfa)
        settle(lambda: rfa.id in pending_ids(world), world, timeout=20, what="pending")
        footage_before = pending_entry(world, rfa.id)["footage_seconds"]
        assert footage_before >= 1.5
        # 200 KB above the floor: a few seconds of footage, then the disk is full.
        disk = FillingDisk(world, control, 16 * 1024 * 1024 + 200_000)
        full = settle(
            lambda: (s := buffer_span(world)) and s[0] >= pinned.start_ms - 1500 and s,
            world,
            timeout=60,
            what="old unpinned footage to be evicted",
        )
        end_when_full = full[1]
        settle(
            lambda: (s := buffer_span(world)) and s[1] > end_when_full + 5000,
            world,
            timeout=40,
            what="recording to go on with the disk full",
        )
        status = ask(world, "status")["status"]
        assert status["recording"] is True, status
        span = buffer_span(world)
        # the first frame at or after the window's start (15 fps: within 67 ms) is kept
        assert span is not None and span[0] <= pinned.start_ms + 100, "pinned footage evicted"
        assert pending_entry(world, rfa.id)["footage_seconds"] == footage_before
        free = int(control.read_text())
        assert free < 16 * 1024 * 1024 + 2_000_000, free  # the disk really stayed tight
        assert "approved" in world.daemon.ctl("approve", rfa.id).stdout
        settle(
            lambda: shares(world)[rfa.id]["state"] == "done",
            world,
            timeout=60,
            what="the pinned footage's share to complete",
        )
        report = verify_upload(world, rfa.id)
        assert report.frames is not None and report.frames >= 25, report.render()
        assert report.first_frame_ms is not None and report.first_frame_ms <= pinned.start_ms + 200
        assert report.last_frame_ms is not None and report.last_frame_ms >= pinned.end_ms - 200
    finally:
        if disk is not None:
            disk.close()
        world.daemon.stop()


# ------------------------------------------------------------------- 5. jumping clock
@pytest.mark.slow
def test_clock_jumps_do_not_crash_and_uncertain_footage_is_marked(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    tus_server: TusServer,
) -> None:
    """The wall clock steps back an hour, forward an hour, and loses and regains its
    synchronization (a Pi without RTC before NTP): the daemon keeps recording and
    answering, footage recorded while the clock was uncertain is shared marked 'clock
    not synchronized' (and exports so), while footage from before any doubt is shared
    as synchronized."""
    control = tmp_path / "clock.json"
    write_json(control, {"offset_ms": 0, "synchronized": True})
    world = make_world(
        tmp_path, mosquitto, tus_server, hooks=("--clock-file", str(control)), segment_seconds=1
    )
    start_and_pair(world)

    def steer(offset_ms: int, synchronized: bool, seconds: float) -> tuple[int, int]:
        """Run `seconds` with the clock steered; returns the real time span (ms) of it."""
        write_json(control, {"offset_ms": offset_ms, "synchronized": synchronized})
        began = now_ms()
        time.sleep(seconds)
        status = ask(world, "status")["status"]
        assert status["recording"] is True, (offset_ms, synchronized, status)
        assert status["clock_synchronized"] is synchronized, status
        return began, now_ms()

    try:
        settle(lambda: buffer_span(world), world, timeout=30, what="footage")
        certain = steer(0, True, 4)
        uncertain = steer(0, False, 4)
        steer(-3_600_000, False, 3)
        steer(+3_600_000, False, 3)
        back_in_sync = steer(0, True, 3)
        assert world.daemon.proc is not None and world.daemon.proc.poll() is None
        status = ask(world, "status")["status"]
        assert status["recording"] is True and status["frames_dropped"] == 0, status
        # an hour back, an hour ahead: the buffer holds footage stamped both ways
        span = buffer_span(world)
        assert span is not None and span[0] < certain[0] - 3_000_000
        assert span[1] > back_in_sync[1] + 3_000_000

        early = export_and_check(
            world, Window(certain[0] + 1500, certain[1] - 1500), tmp_path / "c.mp4"
        )
        assert early.synchronized, "footage from before any doubt exported as uncertain"
        doubtful = export_and_check(
            world, Window(uncertain[0] + 1500, uncertain[1] - 500), tmp_path / "u.mp4"
        )
        assert not doubtful.synchronized

        sure = world.rfa(Window(certain[0] + 1500, certain[1] - 1500))
        unsure = world.rfa(Window(uncertain[0] + 1500, uncertain[1] - 500))
        for rfa in (sure, unsure):
            world.publish(rfa)
        settle(
            lambda: {sure.id, unsure.id} <= pending_ids(world), world, timeout=20, what="pending"
        )
        for rfa in (sure, unsure):
            world.daemon.ctl("approve", rfa.id)
        for rfa_id in (sure.id, unsure.id):
            settle(
                lambda: shares(world)[rfa_id]["state"] == "done",  # noqa: B023 (used at once)
                world,
                timeout=60,
                what=f"share {rfa_id}",
            )
        assert verify_upload(world, sure.id).synchronized is True
        report = verify_upload(world, unsure.id)
        assert report.synchronized is False, report.render()
        assert "NOT synchronized" in report.render()
    finally:
        world.daemon.stop()
