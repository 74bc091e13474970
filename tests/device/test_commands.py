"""The control socket's commands over the real request flow, outbox, buffer and share
worker: local decisions, a retried share re-pinning its footage, cancel, and bad input."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.commands import RETRY_PIN_MS, ControlCommands
from foundation.clock import FakeClock
from foundation.times import Window
from foundation.wire import ShareState
from sync.keys import SigningKey
from sync.settings import ShareSettings
from sync.uploader import ShareWorker
from tests.device.test_flow import Kit, open_kit, pins
from tests.device.test_status import RUNNING as STATUS
from tests.sync.factories import NOW_MS, AgencyKeys


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = open_kit(tmp_path, FakeClock(NOW_MS), AgencyKeys.generate(), SigningKey.generate())
    yield k
    k.close()


def commands(kit: Kit, contact: dict | None = None) -> ControlCommands:  # type: ignore[type-arg]
    worker = ShareWorker(  # never run: commands only change its outbox
        outbox=kit.outbox,
        buffer_root=kit.root / "buffer",
        identity=kit.identity,
        contact=None,
        clock=kit.clock,
        settings=ShareSettings(),
        on_state=kit.flow.on_share_state,
        stop=threading.Event(),
    )
    return ControlCommands(
        flow=kit.flow,
        outbox=kit.outbox,
        buffer=kit.buffer,
        shares=worker,
        clock=kit.clock,
        status=lambda: STATUS,
        contact=contact,
        device_id="dev-1",
    )


def approved(kit: Kit, cmds: ControlCommands) -> str:
    rfa_id = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=rfa_id))
    reply = cmds.handle({"cmd": "approve", "rfa_id": rfa_id})
    assert reply == {"ok": True, "message": f"{rfa_id} approved: the share is queued"}
    return rfa_id


def test_approve_with_a_narrower_window_and_deny(kit: Kit) -> None:
    cmds = commands(kit)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    kit.flow.handle_rfa(kit.rfa(rfa_id=b))
    window = kit.store.request(a).rfa.window  # type: ignore[union-attr]
    narrow = Window(window.start_ms + 60_000, window.end_ms - 60_000)
    wider = Window(window.start_ms - 60_000, window.end_ms)
    refused = cmds.handle({"cmd": "approve", "rfa_id": a, "window": wider.to_json()})
    assert refused["error"] == "The window is not inside the request's window.", refused
    reply = cmds.handle({"cmd": "approve", "rfa_id": a, "window": narrow.to_json()})
    assert reply["ok"], reply
    assert kit.store.decision(a).window == narrow  # type: ignore[union-attr]
    assert cmds.handle({"cmd": "deny", "rfa_id": b}) == {"ok": True, "message": f"{b} declined"}
    again = cmds.handle({"cmd": "deny", "rfa_id": b})
    assert again == {
        "ok": False,
        "error": "There is no such pending request.",
        "reason": "not_pending",
    }


@pytest.mark.parametrize(
    "request_",
    [
        {"cmd": "approve"},
        {"cmd": "approve", "rfa_id": 7},
        {"cmd": "reboot", "rfa_id": "x"},
        {},
        {"cmd": "approve", "rfa_id": "x", "window": "today"},
        {"cmd": "approve", "rfa_id": "x", "window": {"start": "2026-11-28T10:00:00Z"}},
        {
            "cmd": "approve",
            "rfa_id": "x",
            "window": {"start": "2026-11-28T10:00:01Z", "end": "2026-11-28T10:00:00Z"},
        },
    ],
)
def test_bad_requests_get_one_line_and_change_nothing(kit: Kit, request_: dict) -> None:  # type: ignore[type-arg]
    reply = commands(kit).handle(request_)
    assert reply["ok"] is False and "\n" not in reply["error"] and reply["error"]
    assert not kit.outbox.shares(NOW_MS) and pins(kit) == {}


def test_retry_pins_the_footage_of_a_failed_share_again(kit: Kit) -> None:
    cmds = commands(kit)
    a = approved(kit, cmds)
    window = kit.store.decision(a).window  # type: ignore[union-attr]
    kit.flow.on_share_state(a, "failed", "upload server said 500")
    kit.outbox.set_state(a, ShareState.FAILED, now_ms=NOW_MS, error="upload server said 500")
    assert a not in pins(kit), "a failed share releases its pin"
    reply = cmds.handle({"cmd": "retry", "rfa_id": a})
    assert reply == {"ok": True, "message": f"share {a} queued again"}
    assert pins(kit) == {a: window}
    (pin,) = kit.buffer.pins()
    assert pin.until_ms == NOW_MS + RETRY_PIN_MS
    assert kit.outbox.job(a).state == "queued"  # type: ignore[union-attr]


def test_retry_of_a_share_that_has_not_failed_keeps_its_pin(kit: Kit) -> None:
    cmds = commands(kit)
    a = approved(kit, cmds)
    before = {p.pin_id: (p.window, p.until_ms) for p in kit.buffer.pins()}
    assert a in before, "a queued share's footage is pinned"
    reply = cmds.handle({"cmd": "retry", "rfa_id": a})
    assert reply == {"ok": False, "error": f"Share {a} has not failed."}
    assert {p.pin_id: (p.window, p.until_ms) for p in kit.buffer.pins()} == before
    assert cmds.handle({"cmd": "retry", "rfa_id": "nope"}) == {
        "ok": False,
        "error": "There is no share nope.",
    }


def test_cancel(kit: Kit) -> None:
    cmds = commands(kit)
    a = approved(kit, cmds)
    assert cmds.handle({"cmd": "cancel", "rfa_id": a}) == {
        "ok": True,
        "message": f"share {a} cancelled",
    }
    assert kit.outbox.job(a).state == "cancelled"  # type: ignore[union-attr]
    refused = cmds.handle({"cmd": "cancel", "rfa_id": a})
    assert refused == {"ok": False, "error": f"There is no share {a} to cancel."}


def test_status_pending_and_shares(kit: Kit) -> None:
    cmds = commands(kit)
    a = approved(kit, cmds)
    assert cmds.handle({"cmd": "status"}) == {"ok": True, "status": STATUS.to_json()}
    assert cmds.handle({"cmd": "pending"}) == {"ok": True, "requests": []}
    shares = cmds.handle({"cmd": "shares"})["shares"]
    assert [(s["rfa_id"], s["state"]) for s in shares] == [(a, "queued")]


def test_the_summary_says_what_an_approval_would_send_before_anything_is_recorded(
    kit: Kit,
) -> None:
    contact = {"name": "Ann", "email": None, "address": None, "lat": 52.1, "lon": 4.3}
    cmds = commands(kit, contact)
    a = str(uuid.uuid4())
    kit.flow.handle_rfa(kit.rfa(rfa_id=a))
    rfa = kit.store.request(a).rfa  # type: ignore[union-attr]
    named = cmds.handle({"cmd": "summary", "rfa_id": a})["summary"]
    assert named["to"]["agency_id"] == rfa.agency.id
    assert named["to"]["agency_name"] == rfa.agency.name
    assert named["to"]["upload_host"] and "/" not in named["to"]["upload_host"]
    assert named["sends"] == {**contact, "device_id": "dev-1"}  # the very values
    assert named["duration_seconds"] == 7200 and named["problem"] is None
    assert named["frames"] == 121 and named["estimate"]["video"] == 121 * 32  # the index's
    assert named["estimated_bytes"] > 121 * 32 + 121 * 4  # + the MP4's tables, age, manifest
    anonymous = cmds.handle({"cmd": "summary", "rfa_id": a, "anonymous": True})["summary"]
    assert anonymous["sends"] is None and anonymous["share_contact"] is False
    instant = Window(rfa.window.start_ms, rfa.window.start_ms).to_json()
    zero = cmds.handle({"cmd": "summary", "rfa_id": a, "window": instant})["summary"]
    assert zero["problem"]["reason"] == "nothing_to_send"
    assert "no length" in zero["problem"]["message"]
    wider = Window(rfa.window.start_ms - 1, rfa.window.end_ms).to_json()
    outside = cmds.handle({"cmd": "summary", "rfa_id": a, "window": wider})
    assert outside["ok"] is False and outside["reason"] == "window_outside_request"
    assert cmds.handle({"cmd": "summary", "rfa_id": "nope"})["reason"] == "not_pending"
    refused = cmds.handle({"cmd": "approve", "rfa_id": a, "window": instant})
    assert refused["ok"] is False and refused["reason"] == "nothing_to_send"
    assert kit.store.decision(a) is None  # nothing recorded: still the owner's to decide
