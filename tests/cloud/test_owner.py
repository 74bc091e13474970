"""The owner tool against a real Mosquitto: decisions that only the device can open and
that verify under the owner key; watch that opens sealed lists and notices an audit log
that went backwards; pairing that pins a device's keys."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from cloud import owner
from cloud.owner import OwnerError, OwnerHome, head_problem, parse_pairing
from device.owner_channel import PendingView, pending_message, seal_owner_envelope, shares_message
from foundation.times import format_time, parse_time
from foundation.wire import details_sha256
from sync.anchor import AuditHead, chain_over, recent_of
from sync.envelope import make_envelope, open_envelope
from sync.errors import SealError
from sync.keys import SigningKey, public_key_from_b64
from sync.seal import unseal
from tests.cloud.mqtt_probe import Probe
from tests.fixtures.mosquitto import MosquittoBroker, Publisher, read_retained

NOW = parse_time("2026-11-28T13:05:00Z")


class Device:
    """The device's side: its keys and the sealed messages it sends its owner."""

    def __init__(self, device_id: str = "porch-cam-01") -> None:
        self.device_id = device_id
        self.key = SigningKey.generate()
        self.identity = x25519.Identity.generate()

    def pairing(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "device_key": self.key.public_b64,
            "recipient": str(self.identity.to_public()),
            "daemon": "running",  # status --json carries more than pairing needs
        }

    def owner_message(
        self,
        kind: str,
        owner_recipient: str,
        *,
        at_ms: int,
        head: AuditHead,
        items: list[dict[str, Any]],
        signer: SigningKey | None = None,
        rotation: int = 0,
        omit_details: bool = False,
    ) -> bytes:
        key = signer or self.key
        if kind == "pending" and omit_details:
            envelope = make_envelope(
                {
                    "type": "pending",
                    "at": format_time(at_ms),
                    "audit_head": head.to_json(),
                    "requests": items,
                    "details": [],
                },
                key,
            )
        elif kind == "pending":
            views = [PendingView(entry, DETAILS[entry["id"]]) for entry in items]
            envelope = pending_message(views, head, at_ms, signing=key, rotation=rotation)
        else:
            envelope = shares_message(items, head, at_ms, signing=key)
        return seal_owner_envelope(envelope, [x25519.Recipient.from_str(owner_recipient)])


@pytest.fixture
def device() -> Device:
    return Device()


@pytest.fixture
def home(tmp_path: Path, device: Device) -> OwnerHome:
    home = OwnerHome(tmp_path / "owner")
    home.keygen()
    home.pair(parse_pairing(device.pairing()))
    return home


def owner_recipient(home: OwnerHome) -> str:
    return str(home.identity().to_public())


def pending_pair(rfa_id: str, description: str) -> tuple[dict[str, Any], dict[str, Any]]:
    details = {
        "id": rfa_id,
        "agency": {"id": "sfpd", "name": "San Francisco Police Department"},
        "investigator": {"name": "Det. A. Rivera", "email": "a.rivera@example.gov"},
        "description": description,
        "area": {"lat": 37.7749, "lon": -122.4194, "radius_m": 800},
    }
    entry = {
        "id": rfa_id,
        "agency_id": "sfpd",
        "case_number": "2026-004512",
        "window": {"start": "2026-11-28T10:00:00Z", "end": "2026-11-28T12:00:00Z"},
        "expires_at": "2026-12-05T13:00:00Z",
        "decide_by": "2026-12-01T13:00:00Z",
        "footage_seconds": 7200,
        "details_sha256": details_sha256(details),
    }
    return entry, details


PENDING_ITEM, _DETAILS = pending_pair(
    "0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3b", "Package theft from porches on Elm St."
)
DETAILS: dict[str, dict[str, Any]] = {PENDING_ITEM["id"]: _DETAILS}


def chain_head(entries: int, seed: bytes = b"log") -> AuditHead:
    """The head of a log of `entries` made-up entries (the same seed: the same history)."""
    hashes = [hashlib.sha256(seed + str(i).encode()).digest() for i in range(entries)]
    return AuditHead(entries, chain_over(hashes).hex(), recent_of([h.hex() for h in hashes]))


SHARE_ITEM = {
    "rfa_id": "11111111-2222-4333-8444-555555555555",
    "state": "uploading",
    "bytes_sent": 250,
    "bytes_total": 1000,
    "manifest_sha256": "ab" * 32,
    "error": None,
}


# ---------------------------------------------------------------------------- keys, pairing


def test_keygen_prints_public_halves_and_keeps_secrets_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "o"
    assert owner.main(["--home", str(folder), "keygen"]) == 0
    printed = capsys.readouterr().out
    public = json.loads((folder / owner.PUBLIC_FILE).read_text())
    assert public["public_key"] in printed and public["recipient"] in printed
    assert "AGE-SECRET-KEY" not in printed and "PRIVATE" not in printed
    for name in (owner.SIGNING_FILE, owner.IDENTITY_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert owner.main(["--home", str(folder), "keygen"]) == 1  # never overwrites


def test_pairing_pins_the_device_keys(tmp_path: Path, device: Device) -> None:
    home = OwnerHome(tmp_path / "o")
    source = tmp_path / "status.json"
    source.write_text(json.dumps(device.pairing()))
    assert owner.main(["--home", str(home.path), "pair", "--from-json", str(source)]) == 0
    assert home.device().device_key == device.key.public_b64
    # Same keys again: fine. Other keys for the same id: refused unless forced.
    assert owner.main(["--home", str(home.path), "pair", "--from-json", str(source)]) == 0
    impostor = Device(device.device_id)
    with pytest.raises(OwnerError, match="already paired"):
        home.pair(parse_pairing(impostor.pairing()))
    assert home.device().device_key == device.key.public_b64
    assert home.pair(parse_pairing(impostor.pairing()), force=True)
    assert home.device().device_key == impostor.key.public_b64


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"device_id": "a/b", "device_key": "x", "recipient": "age1"},
        {"device_id": "cam", "device_key": "not-a-key", "recipient": "age1"},
        {"device_id": "cam", "device_key": SigningKey.generate().public_b64, "recipient": "x"},
    ],
)
def test_junk_pairing_data_is_refused(bad: Any) -> None:
    with pytest.raises(OwnerError):
        parse_pairing(bad)


# ---------------------------------------------------------------------------- decide


def test_decide_publishes_a_decision_only_the_device_can_open(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    topic = f"devices/{device.device_id}/owner/decision"
    home.save_pending(device.device_id, [{**_DETAILS, **PENDING_ITEM}])
    probe = Probe(mosquitto, topic)
    try:
        args = ["--home", str(home.path), "decide", "--rfa", PENDING_ITEM["id"], "approve"]
        window = ["--start", "2026-11-28T10:30:00Z", "--end", "2026-11-28T11:00:00Z"]
        assert owner.main([*args, *window, "--publish", mosquitto.url], now_ms=NOW) == 0
        assert owner.main([*args, "--anonymous", "--publish", mosquitto.url], now_ms=NOW) == 0
        messages = probe.wait_for(2)
    finally:
        probe.close()
    assert [m.topic for m in messages] == [topic, topic]
    with pytest.raises(SealError):
        unseal(messages[0].payload, [x25519.Identity.generate()])
    with pytest.raises(SealError):
        unseal(messages[0].payload, [home.identity()])  # not even the owner's identity
    owner_key = home.signing_key()
    payloads = []
    for message in messages:
        plain = unseal(message.payload, [device.identity])
        assert len(plain) == 4096  # protocol.md §5.2: every decision the same size
        verified = open_envelope(plain, {owner_key.kid: owner_key.public})
        payloads.append(verified.payload)
    first, second = payloads
    assert first == {
        "type": "decision",
        "device_id": device.device_id,
        "rfa_id": PENDING_ITEM["id"],
        "decision": "approve",
        "window": {"start": "2026-11-28T10:30:00Z", "end": "2026-11-28T11:00:00Z"},
        "share_contact": True,
        "issued_at": "2026-11-28T13:05:00Z",
        "nonce": first["nonce"],
    }
    assert second["share_contact"] is False and "window" not in second
    assert first["nonce"] != second["nonce"] and len(first["nonce"]) >= 16
    assert read_retained(mosquitto, topic, timeout=1) is None  # never retained


def test_decide_refuses_half_a_window_and_unpaired_devices(
    tmp_path: Path, home: OwnerHome, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["decide", "--rfa", "x", "approve", "--publish", "mqtt://127.0.0.1:1"]
    assert owner.main(["--home", str(home.path), *base, "--start", "2026-11-28T10:30:00Z"]) == 1
    assert "both --start and --end" in capsys.readouterr().err
    empty = OwnerHome(tmp_path / "empty")
    empty.keygen()
    assert owner.main(["--home", str(empty.path), *base]) == 1
    assert "no device is paired" in capsys.readouterr().err


def test_decide_fails_clearly_when_the_broker_is_down(
    home: OwnerHome, mosquitto: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    mosquitto.stop()
    home.save_pending(home.device().device_id, [{**_DETAILS, **PENDING_ITEM}])
    rfa = PENDING_ITEM["id"]
    args = ["--home", str(home.path), "decide", "--rfa", rfa, "deny", "--publish", mosquitto.url]
    assert owner.main([*args, "--timeout", "3"], now_ms=NOW) == 3  # unavailable
    assert "cannot reach the broker" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rfa", "window", "saved", "says"),
    [
        ("0b8e6c2e-3f0f-4b8e-9d3c-000000000000", None, True, "not in the pending list"),
        (None, ("2026-11-28T09:59:59Z", "2026-11-28T11:00:00Z"), True, "not inside"),
        (None, ("2026-11-28T10:30:00Z", "2026-11-28T12:00:01Z"), True, "not inside"),
        (None, ("2026-11-28T11:00:00Z", "2026-11-28T11:00:00Z"), True, "nothing would be sent"),
        (None, None, False, "watch"),
    ],
)
def test_decide_refuses_what_the_device_would_refuse_before_sending(
    home: OwnerHome,
    device: Device,
    mosquitto: MosquittoBroker,
    capsys: pytest.CaptureFixture[str],
    rfa: str | None,
    window: tuple[str, str] | None,
    saved: bool,
    says: str,
) -> None:
    if saved:
        home.save_pending(device.device_id, [{**_DETAILS, **PENDING_ITEM}])
    probe = Probe(mosquitto, f"devices/{device.device_id}/owner/decision")
    try:
        args = ["--home", str(home.path), "decide", "--rfa", rfa or PENDING_ITEM["id"], "approve"]
        if window:
            args += ["--start", window[0], "--end", window[1]]
        assert owner.main([*args, "--publish", mosquitto.url], now_ms=NOW) == 1
        err = capsys.readouterr().err
        assert "not sent" in err and says in err and "sent: approve" not in err
        assert probe.wait_for(1, timeout=1) == []
    finally:
        probe.close()


def test_an_approval_that_would_send_nothing_is_refused_as_the_device_does(
    home: OwnerHome, device: Device
) -> None:
    """A window of no length, or a request whose window the device holds no footage of
    (footage_seconds in the pending list): refused before anything is signed, with the
    way to decline; declining stays possible."""
    from foundation.times import Window

    pending = [{**_DETAILS, **PENDING_ITEM}]
    instant = parse_time("2026-11-28T11:00:00Z")
    point = Window(instant, instant)
    rfa_id = PENDING_ITEM["id"]
    zero = owner.decision_problem(pending, rfa_id=rfa_id, window=point, now_ms=NOW)
    assert zero is not None and "no length" in zero and f"--rfa {rfa_id} deny" in zero
    assert owner.decision_problem(
        pending, rfa_id=rfa_id, window=point, now_ms=NOW, approve=False
    ) is None  # fmt: skip
    assert owner.decision_problem(pending, rfa_id=rfa_id, window=None, now_ms=NOW) is None
    bare = [{**_DETAILS, **PENDING_ITEM, "footage_seconds": 0}]
    none = owner.decision_problem(bare, rfa_id=rfa_id, window=None, now_ms=NOW)
    assert none is not None and "no footage" in none
    part = Window(instant, instant + 60_000)
    assert owner.decision_problem(bare, rfa_id=rfa_id, window=part, now_ms=NOW) is not None
    assert (
        owner.decision_problem(bare, rfa_id=rfa_id, window=None, now_ms=NOW, approve=False) is None
    )


def test_a_narrowed_part_of_a_partly_held_window_gets_a_word_before_it_goes() -> None:
    """The pending list says how much of the whole window is held, not where (protocol
    §5.1): a part of a partly held window may hold nothing, and the tool says so; the
    whole window, or a window held throughout, needs no word."""
    from foundation.times import Window

    rfa_id = PENDING_ITEM["id"]
    start = parse_time("2026-11-28T10:00:00Z")
    part = Window(start + 60_000, start + 120_000)
    whole = Window(start, parse_time("2026-11-28T12:00:00Z"))
    partly = [{**PENDING_ITEM, "footage_seconds": 600}]
    caution = owner.part_caution(partly, rfa_id, part)
    assert caution is not None and "600 s" in caution and "no footage" in caution
    assert owner.part_caution(partly, rfa_id, whole) is None
    assert owner.part_caution(partly, rfa_id, None) is None
    assert owner.part_caution([{**PENDING_ITEM}], rfa_id, part) is None  # held throughout
    assert owner.part_caution([{**PENDING_ITEM, "footage_seconds": "x"}], rfa_id, part) is None
    assert owner.part_caution(None, rfa_id, part) is None


# ---------------------------------------------------------------------------- watch


def publish_lists(
    mosquitto: MosquittoBroker,
    device: Device,
    home: OwnerHome,
    *,
    at_ms: int,
    head: AuditHead,
    signer: SigningKey | None = None,
) -> None:
    recipient = owner_recipient(home)
    with Publisher(mosquitto) as pub:
        for kind, items in (("pending", [PENDING_ITEM]), ("shares", [SHARE_ITEM])):
            pub.publish(
                f"devices/{device.device_id}/owner/{kind}",
                device.owner_message(
                    kind, recipient, at_ms=at_ms, head=head, items=items, signer=signer
                ),
                retain=True,
            )


def run_watch(home: OwnerHome, mosquitto: MosquittoBroker) -> tuple[owner.OwnerWatch, str, str]:
    out, err = io.StringIO(), io.StringIO()
    view = owner.watch(home, mosquitto.url, once=True, timeout_s=10, out=out, err=err)
    return view, out.getvalue(), err.getvalue()


def test_watch_opens_the_sealed_lists(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    publish_lists(mosquitto, device, home, at_ms=NOW, head=chain_head(5))
    view, out, err = run_watch(home, mosquitto)
    assert view.seen == {"pending", "shares"}
    assert PENDING_ITEM["id"] in out and "case 2026-004512" in out
    assert "footage 7200 s" in out
    assert SHARE_ITEM["rfa_id"] in out and "uploading 250/1000 bytes (25%)" in out
    assert not view.warnings and "WARNING" not in err
    assert home.last_head(device.device_id) == (chain_head(5), NOW)


@pytest.mark.parametrize("change", [None, "missing", "extra"])
def test_a_pending_entry_must_have_exactly_the_keys_of_section_5_1(
    home: OwnerHome, device: Device, change: str | None
) -> None:
    entry = dict(PENDING_ITEM)  # written out above, key by key, as protocol.md §5.1 says
    if change == "missing":
        del entry["footage_seconds"]
    elif change == "extra":
        entry["note"] = "not in the protocol"
    sealed = device.owner_message(
        "pending",
        owner_recipient(home),
        at_ms=NOW,
        head=chain_head(1),
        items=[entry],
        omit_details=True,
    )

    def opened() -> owner.OwnerMessage:
        return owner.open_owner_message(
            sealed, kind="pending", identity=home.identity(), device=home.device()
        )

    if change is None:
        assert opened().items == [PENDING_ITEM]
    else:
        with pytest.raises(OwnerError, match="exactly the keys of §5.1"):
            opened()


def test_a_request_is_shown_only_once_its_details_arrived_and_match(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    recipient = owner_recipient(home)
    topic = f"devices/{device.device_id}/owner/pending"
    with Publisher(mosquitto) as pub:
        pub.publish(
            topic,
            device.owner_message(
                "pending", recipient, at_ms=NOW, head=chain_head(5), items=[PENDING_ITEM],
                omit_details=True,
            ),
            retain=True,
        )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    view = owner.watch(home, mosquitto.url, timeout_s=2, out=out, err=err)
    assert "details not received yet" in out.getvalue()
    assert "Package theft" not in out.getvalue() and not view.complete
    assert home.pending(device.device_id) == []  # nothing to decide on yet
    # details that do not match their hash are refused, never shown
    forged = dict(_DETAILS, description="Nothing to see: approve the whole window")
    DETAILS[PENDING_ITEM["id"]] = forged
    try:
        with Publisher(mosquitto) as pub:
            pub.publish(
                topic,
                device.owner_message(
                    "pending", recipient, at_ms=NOW + 1000, head=chain_head(5), items=[PENDING_ITEM]
                ),
                retain=True,
            )
        out, err = io.StringIO(), io.StringIO()
        view = owner.watch(home, mosquitto.url, timeout_s=2, out=out, err=err)
        assert "do not match" in err.getvalue() and "Nothing to see" not in out.getvalue()
    finally:
        DETAILS[PENDING_ITEM["id"]] = _DETAILS
    publish_lists(mosquitto, device, home, at_ms=NOW + 2000, head=chain_head(5))
    view, out_text, _err = run_watch(home, mosquitto)
    assert view.complete and "Package theft" in out_text
    assert 'agency sfpd ("San Francisco Police Department")' in out_text
    assert [r["id"] for r in home.pending(device.device_id) or []] == [PENDING_ITEM["id"]]


def test_network_strings_are_shown_escaped(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    hostile = "\x1b[2J\x1b[1;1Hwindow 10:00-10:01 \u202eevil\r\nfake line"
    entry, details = pending_pair("0b8e6c2e-3f0f-4b8e-9d3c-8e5a4f1d2c3c", hostile)
    details["agency"] = {"id": "sfpd", "name": hostile}
    details["investigator"] = {"name": hostile, "email": hostile}
    entry["details_sha256"] = details_sha256(details)
    entry["case_number"] = hostile
    DETAILS[entry["id"]] = details
    share = dict(SHARE_ITEM, state=hostile, error=hostile, rfa_id=hostile)
    recipient = owner_recipient(home)
    with Publisher(mosquitto) as pub:
        for kind, items in (("pending", [entry]), ("shares", [share])):
            pub.publish(
                f"devices/{device.device_id}/owner/{kind}",
                device.owner_message(kind, recipient, at_ms=NOW, head=chain_head(5), items=items),
                retain=True,
            )
    _view, out, _err = run_watch(home, mosquitto)
    for bad in ("\x1b", "\u202e", "\r"):
        assert bad not in out
    assert "\\x1b[2J" in out and "\\u202eevil" in out
    assert out.count("\\x1b[2J") >= 6  # case, agency name, investigator, email, description, ...


def test_watch_ignores_lists_not_signed_by_the_paired_device(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    publish_lists(
        mosquitto,
        device,
        home,
        at_ms=NOW,
        head=chain_head(5),
        signer=SigningKey.generate(),
    )
    out, err = io.StringIO(), io.StringIO()
    view = owner.watch(home, mosquitto.url, once=True, timeout_s=2, out=out, err=err)
    assert view.seen == set()
    assert "not signed by the paired device" in err.getvalue()
    assert PENDING_ITEM["id"] not in out.getvalue()
    assert home.last_head(device.device_id) is None


@pytest.mark.parametrize(
    ("later", "warning"),
    [
        (chain_head(4), "WENT BACKWARDS"),
        (chain_head(5, b"other"), "REWRITTEN"),
        (chain_head(9, b"other"), "REWRITTEN"),  # longer, but not an extension
    ],
)
def test_watch_warns_when_the_audit_head_goes_backwards(
    home: OwnerHome,
    device: Device,
    mosquitto: MosquittoBroker,
    later: AuditHead,
    warning: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish_lists(mosquitto, device, home, at_ms=NOW, head=chain_head(5))
    run_watch(home, mosquitto)
    # A later round from a device whose log was rolled back (or rewritten).
    publish_lists(mosquitto, device, home, at_ms=NOW + 300_000, head=later)
    view, _out, err = run_watch(home, mosquitto)
    assert any(warning in text for text in view.warnings)
    assert warning in err
    # The good head stays the reference, so the warning repeats on every run.
    assert home.last_head(device.device_id) == (chain_head(5), NOW)
    code = owner.main(["--home", str(home.path), "watch", "--broker", mosquitto.url, "--once",
                       "--timeout", "10"])  # fmt: skip
    assert code == 1  # a check failed (the exit-code table: 1 refused or failed)
    assert warning in capsys.readouterr().err


def test_head_comparison_rules() -> None:
    good = (chain_head(5), NOW)
    assert head_problem(None, chain_head(0), NOW) == (None, True)
    assert head_problem(good, chain_head(6), NOW + 1) == (None, True)
    assert head_problem(good, chain_head(37), NOW + 1) == (None, True)  # 32 new: checkable
    assert head_problem(good, chain_head(38), NOW + 1) == (None, True)  # only on the device
    assert head_problem(good, chain_head(5), NOW) == (None, True)
    # An older message (last round's, or replayed by the broker) is not compared.
    assert head_problem(good, chain_head(1, b"z"), NOW - 1) == (None, False)
    assert head_problem(good, chain_head(4), NOW)[0] is not None
    assert head_problem(good, chain_head(5, b"b"), NOW + 1)[0] is not None
    # a longer history that does not extend the old one: caught, unlike a count check
    assert "REWRITTEN" in str(head_problem(good, chain_head(30, b"b"), NOW + 1)[0])


def test_watch_stops_on_its_stop_event(home: OwnerHome, mosquitto: MosquittoBroker) -> None:
    stop = threading.Event()
    stop.set()
    view = owner.watch(home, mosquitto.url, stop=stop, out=io.StringIO(), err=io.StringIO())
    assert view.seen == set()


def test_device_key_from_pairing_is_what_verifies(home: OwnerHome, device: Device) -> None:
    pinned = home.device()
    assert public_key_from_b64(pinned.device_key) is not None
    assert pinned.kid == device.key.kid


# --- a head remembered by the protocol 1.0 owner tool (protocol.md §7) -------------------


def remember_as_1_0(home: OwnerHome, device_id: str, entries: int, entry_sha256: str) -> Path:
    """head.json as the 1.0 owner tool wrote it (git history, cloud/owner.py before the
    `recent` list: `{**head.to_json(), "at_ms"}` with a head of only entries and sha256,
    the hash of the last entry, through `_write_json`'s indent=2)."""
    path = home.path / "devices" / f"{device_id}.head.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"entries": entries, "sha256": entry_sha256, "at_ms": NOW}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


@pytest.fixture
def upgraded_device_log(tmp_path: Path) -> tuple[Any, Any]:
    """A real device log written by revision 1.0 (5 entries), opened by this revision:
    its head is upgraded, with an `audit_upgraded` entry. Returns (1.0 head, the log)."""
    from device.audit import AuditLog
    from device.audit_verify import head_path_for
    from foundation.clock import FakeClock
    from tests.device.test_audit import write_1_0_log

    key = SigningKey.generate()
    path = tmp_path / "audit.jsonl"
    write_1_0_log(path, key, 5)
    old_head = json.loads(head_path_for(path).read_text())
    log = AuditLog.open(path, key, clock=FakeClock(wall_ms=NOW + 1000))
    assert [e.event for e in log.entries()][-1] == "audit_upgraded"
    return old_head, log


def test_a_1_0_remembered_head_is_checked_once_then_kept_in_the_1_1_form(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker, upgraded_device_log
) -> None:
    old_head, log = upgraded_device_log
    path = remember_as_1_0(home, device.device_id, old_head["entries"], old_head["sha256"])
    new_head = log.head()
    assert new_head.entries == 6 and new_head.sha256 != old_head["sha256"]

    publish_lists(mosquitto, device, home, at_ms=NOW + 2000, head=new_head)
    view, _out, err = run_watch(home, mosquitto)
    assert not view.warnings and "WARNING" not in err and "damaged" not in err
    assert "protocol 1.0 owner tool (5 entries) is replaced" in err
    assert home.last_head(device.device_id) == (new_head, NOW + 2000)
    assert json.loads(path.read_text())["recent"] == list(new_head.recent)  # 1.1 form now

    # From here on the ordinary 1.1 check: the next entry extends it.
    log.append("expired", {"rfa_id": PENDING_ITEM["id"]})
    publish_lists(mosquitto, device, home, at_ms=NOW + 3000, head=log.head())
    view, _out, err = run_watch(home, mosquitto)
    assert not view.warnings and "1.0" not in err
    assert home.last_head(device.device_id) == (log.head(), NOW + 3000)
    log.close()


def test_a_1_0_remembered_head_catches_a_rewritten_history(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker, upgraded_device_log
) -> None:
    old_head, log = upgraded_device_log
    # The owner remembered entry 5 as something else: the device's history is not it.
    other = hashlib.sha256(b"another entry 5").hexdigest()
    path = remember_as_1_0(home, device.device_id, old_head["entries"], other)
    before = path.read_bytes()
    publish_lists(mosquitto, device, home, at_ms=NOW + 2000, head=log.head())
    view, _out, err = run_watch(home, mosquitto)
    assert any("REWRITTEN" in w for w in view.warnings) and "REWRITTEN" in err
    assert path.read_bytes() == before  # the anchor stays until the owner looks into it
    # More entries than 1.0 remembered, the count alone would have passed; cut back not.
    remember_as_1_0(home, device.device_id, 7, old_head["sha256"])
    publish_lists(mosquitto, device, home, at_ms=NOW + 3000, head=log.head())
    view, _out, err = run_watch(home, mosquitto)
    assert any("WENT BACKWARDS" in w for w in view.warnings)
    log.close()


def test_watch_shows_when_a_waiting_anonymous_share_starts(
    home: OwnerHome, device: Device, mosquitto: MosquittoBroker
) -> None:
    """§6.3's optional `starts_at` (1.2) is accepted and shown; an entry from a 1.1
    device, without the key, still opens."""
    waiting = {**SHARE_ITEM, "state": "queued", "starts_at": "2026-11-28T13:41:07.250Z"}
    legacy = {**SHARE_ITEM, "rfa_id": "22222222-2222-4333-8444-555555555555"}
    recipient = owner_recipient(home)
    with Publisher(mosquitto) as pub:
        for kind, items in (("pending", [PENDING_ITEM]), ("shares", [waiting, legacy])):
            pub.publish(
                f"devices/{device.device_id}/owner/{kind}",
                device.owner_message(kind, recipient, at_ms=NOW, head=chain_head(5), items=items),
                retain=True,
            )
    view, out, err = run_watch(home, mosquitto)
    assert view.seen == {"pending", "shares"} and "WARNING" not in err
    assert "upload starts at 2026-11-28T13:41:07.250Z" in out
    assert out.count("upload starts at") == 1
    assert legacy["rfa_id"] in out
