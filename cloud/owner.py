"""`doorbell-owner`: the owner's app, reduced to a reference tool (protocol.md §5).

It owns the owner's side of the owner channel, with its state in one directory
(`--home`, default ~/.doorbell-owner):

- the owner's Ed25519 key and age identity (0600) and their public halves;
- the devices paired with it: `device_id`, `device_key` and `recipient`, learnt from the
  device itself (`doorbellctl status --json`), never from the broker, and pinned: a
  second pairing with other keys is refused unless forced;
- per device, the newest audit head seen, so a log that is rolled back or forked is
  noticed off the device even across runs.

`watch` opens the sealed pending and shares messages and verifies them under the pinned
device key; `decide` signs a decision with the owner key and seals it to the pinned
device recipient.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pyrage import x25519

from cloud.broker import Incoming, Outgoing, listen, publish_messages
from foundation import wire
from foundation.arguments import time_arg
from foundation.cli import EXIT_CODES_EPILOG, ExitCode, ToolParser, run_tool
from foundation.display import agency_label, shown
from foundation.errors import DoorbellError, TimeFormatError, UnavailableError, UsageError
from foundation.times import Window, format_time, parse_time
from sync.anchor import AuditHead, Continuity, LegacyHead, continuity
from sync.decision import nothing_to_send
from sync.envelope import make_envelope, open_envelope
from sync.errors import EnvelopeError, SealError
from sync.keys import (
    SigningKey,
    create_key_pair,
    key_id,
    load_identity,
    load_signing_key,
    parse_recipient,
    public_key_from_b64,
    raw_public,
)
from sync.seal import seal, unseal

logger = logging.getLogger(__name__)

SIGNING_FILE = "owner-signing.pem"
IDENTITY_FILE = "owner-age.txt"
PUBLIC_FILE = "owner.json"
DEVICES_DIR = "devices"
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class OwnerError(DoorbellError):
    """The owner tool cannot do what was asked (no keys, not paired, bad input...)."""


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class OwnerPublic:
    public_key: str  # for the device config's owner.keys
    kid: str
    recipient: str  # for the device config's owner.recipients

    def to_json(self) -> dict[str, str]:
        return {"public_key": self.public_key, "kid": self.kid, "recipient": self.recipient}


@dataclass(frozen=True, slots=True)
class PairedDevice:
    device_id: str
    device_key: str  # base64url raw Ed25519
    recipient: str

    @property
    def kid(self) -> str:
        return key_id(raw_public(public_key_from_b64(self.device_key)))

    def to_json(self) -> dict[str, str]:
        return {
            "device_id": self.device_id,
            "device_key": self.device_key,
            "recipient": self.recipient,
        }


def parse_pairing(info: object) -> PairedDevice:
    """The pinned facts from a device's `doorbellctl status --json` (extra keys ignored)."""
    if not isinstance(info, dict):
        raise OwnerError("pairing data must be a JSON object")
    device_id, device_key, recipient = (
        info.get("device_id"),
        info.get("device_key"),
        info.get("recipient"),
    )
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise OwnerError("pairing data has no valid device_id")
    if not isinstance(device_key, str):
        raise OwnerError("pairing data has no device_key")
    try:
        public_key_from_b64(device_key)
    except ValueError as exc:
        raise OwnerError(f"device_key is not a base64url Ed25519 key: {exc}") from exc
    try:
        parse_recipient(recipient)
    except ValueError as exc:
        raise OwnerError("recipient is not an age X25519 recipient") from exc
    assert isinstance(recipient, str)
    return PairedDevice(device_id=device_id, device_key=device_key, recipient=recipient)


class OwnerHome:
    """The owner tool's directory: keys, paired devices, last audit heads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # keys
    def keygen(self) -> OwnerPublic:
        key, identity = create_key_pair(self.path / SIGNING_FILE, self.path / IDENTITY_FILE)
        public = OwnerPublic(
            public_key=key.public_b64, kid=key.kid, recipient=str(identity.to_public())
        )
        (self.path / PUBLIC_FILE).write_text(json.dumps(public.to_json(), indent=2) + "\n")
        return public

    def signing_key(self) -> SigningKey:
        path = self.path / SIGNING_FILE
        if not path.exists():
            raise OwnerError(f"no owner key in {self.path}; run `doorbell-owner keygen` first")
        return load_signing_key(path)

    def identity(self) -> x25519.Identity:
        path = self.path / IDENTITY_FILE
        if not path.exists():
            raise OwnerError(f"no owner identity in {self.path}; run `doorbell-owner keygen`")
        return load_identity(path)

    # devices
    def _device_file(self, device_id: str, suffix: str) -> Path:
        if not _DEVICE_ID.fullmatch(device_id):
            raise OwnerError(f"not a device id: {device_id!r}")
        return self.path / DEVICES_DIR / f"{device_id}.{suffix}"

    def pair(self, device: PairedDevice, *, force: bool = False) -> bool:
        """Pin a device; returns False if it was already pinned with the same keys."""
        path = self._device_file(device.device_id, "json")
        if path.exists():
            current = self.device(device.device_id)
            if current == device:
                return False
            if not force:
                raise OwnerError(
                    f"{device.device_id} is already paired with other keys; a device's keys "
                    "do not change unless it was reset or replaced (use --force if so)"
                )
            self._device_file(device.device_id, "head.json").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(path, device.to_json())
        return True

    def device(self, device_id: str | None = None) -> PairedDevice:
        if device_id is None:
            paired = self.devices()
            if len(paired) != 1:
                raise OwnerError(
                    "no device is paired; run `doorbell-owner pair`"
                    if not paired
                    else "several devices are paired; name one with --device"
                )
            return paired[0]
        path = self._device_file(device_id, "json")
        try:
            return parse_pairing(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise OwnerError(f"{device_id} is not paired") from exc
        except ValueError as exc:
            raise OwnerError(f"{path} is damaged") from exc

    def devices(self) -> list[PairedDevice]:
        folder = self.path / DEVICES_DIR
        if not folder.is_dir():
            return []
        names = sorted(p.name[: -len(".json")] for p in folder.glob("*.json"))
        return [self.device(name) for name in names if "." not in name]

    # audit heads
    def last_head(self, device_id: str) -> tuple[AuditHead | LegacyHead, int] | None:
        """The newest head seen for this device and the `at` of the message that carried it.
        A head the 1.0 owner tool remembered (no `recent`) is read as a `LegacyHead`: an
        anchor checked once against the device's 1.1 head, then replaced by it
        (protocol.md §7)."""
        path = self._device_file(device_id, "head.json")
        try:
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and "recent" not in doc:
                return LegacyHead.from_json(doc), int(doc["at_ms"])
            return AuditHead.from_json(doc), int(doc["at_ms"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise OwnerError(f"{path} is damaged") from exc

    def save_head(self, device_id: str, head: AuditHead, at_ms: int) -> None:
        path = self._device_file(device_id, "head.json")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(path, {**head.to_json(), "at_ms": at_ms})

    # the pending list last seen, which `decide` checks a decision against
    def save_pending(self, device_id: str, requests: Sequence[Mapping[str, Any]]) -> None:
        path = self._device_file(device_id, "pending.json")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(path, {"requests": [dict(r) for r in requests]})

    def pending(self, device_id: str) -> list[dict[str, Any]] | None:
        path = self._device_file(device_id, "pending.json")
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise OwnerError(f"{path} is damaged") from exc
        requests = doc.get("requests") if isinstance(doc, dict) else None
        if not isinstance(requests, list):
            raise OwnerError(f"{path} is damaged")
        return [r for r in requests if isinstance(r, dict)]


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------- decisions


def decision_payload(
    *,
    device_id: str,
    rfa_id: str,
    approve: bool,
    window: Window | None,
    share_contact: bool,
    now_ms: int,
    nonce: str | None = None,
) -> dict[str, Any]:
    """protocol.md §5.2. The window is sent only when the owner narrows it."""
    if not rfa_id or len(rfa_id) > 256:
        raise OwnerError("give the request's id (--rfa)")
    payload: dict[str, Any] = {
        "type": "decision",
        "device_id": device_id,
        "rfa_id": rfa_id,
        "decision": "approve" if approve else "deny",
    }
    if window is not None:
        if window.start_ms > window.end_ms:  # a single instant is a valid window
            raise OwnerError("the window's start must not be after its end")
        payload["window"] = window.to_json()
    payload["share_contact"] = share_contact
    payload["issued_at"] = format_time(now_ms)
    payload["nonce"] = nonce or secrets.token_urlsafe(16)
    return payload


def seal_decision(payload: Mapping[str, Any], key: SigningKey, device: PairedDevice) -> bytes:
    """Sign with the owner key, pad with spaces to exactly 4,096 bytes and seal to the
    pinned device recipient (protocol.md §5.2): approvals, denials, narrowed and
    anonymous decisions all look alike to the broker."""
    envelope = make_envelope(payload, key)
    if len(envelope) > wire.DECISION_BYTES:
        raise OwnerError("the decision is larger than a device accepts")
    padded = envelope + b" " * (wire.DECISION_BYTES - len(envelope))
    return seal(padded, [parse_recipient(device.recipient)], pad_block=None)


def decision_problem(
    pending: Sequence[Mapping[str, Any]] | None,
    *,
    rfa_id: str,
    window: Window | None,
    now_ms: int,
    approve: bool = True,
) -> str | None:
    """Would the device refuse this decision, judged from the pending list this tool
    last saw? None when it looks acceptable. An approval that would send nothing (a
    window of no length, a request the device holds no footage of: its
    `footage_seconds`) is refused here as the device refuses it (sync.decision's
    nothing_to_send): the owner can still decline it. Whether a narrowed part of a
    partly covered window holds footage only the device can tell."""
    if pending is None:
        return "no pending list seen yet; run `doorbell-owner watch` first"
    entry = next((r for r in pending if r.get("id") == rfa_id), None)
    if entry is None:
        return f"{shown(rfa_id)} is not in the pending list last seen (decided, expired or unknown)"
    try:
        requested = Window(parse_time(entry["window"]["start"]), parse_time(entry["window"]["end"]))
        deadline = min(parse_time(entry["decide_by"]), parse_time(entry["expires_at"]))
    except (KeyError, TypeError, TimeFormatError, DoorbellError):
        return "the pending entry for this request is damaged"
    if now_ms >= deadline:
        return "the time to decide on this request has passed"
    if window is not None and not (
        requested.start_ms <= window.start_ms and window.end_ms <= requested.end_ms
    ):
        return (
            f"the window {format_time(window.start_ms)} .. {format_time(window.end_ms)} is not "
            f"inside the request's {format_time(requested.start_ms)} .. "
            f"{format_time(requested.end_ms)} (share less, never more)"
        )
    if approve:
        try:  # the whole window's footage: a part's is for the device to judge
            held_ms = round(float(entry["footage_seconds"]) * 1000)
        except (KeyError, TypeError, ValueError, OverflowError):
            return "the pending entry for this request is damaged"
        refusal = nothing_to_send(window or requested, held_ms > 0)
        if refusal is not None:
            return f"{refusal.detail} Decline it: doorbell-owner decide --rfa {shown(rfa_id)} deny"
    return None


def part_caution(
    pending: list[dict[str, Any]] | None, rfa_id: str, window: Window | None
) -> str | None:
    """A word before approving a narrowed part of a window the device holds only partly:
    the pending list (protocol §5.1: exactly its keys) says how much footage the whole
    window holds, not where, so whether the part holds any only the device can tell. If
    it holds none, the share fails "no footage" (§5.2) and the decision is spent. None
    when there is nothing to say (the whole window, or one held throughout)."""
    entry = next((r for r in pending or [] if r.get("id") == rfa_id), None)
    if window is None or entry is None:
        return None
    try:
        requested = Window(parse_time(entry["window"]["start"]), parse_time(entry["window"]["end"]))
        held_ms = round(float(entry["footage_seconds"]) * 1000)
    except (KeyError, TypeError, ValueError, OverflowError, DoorbellError):
        return None  # decision_problem says what is wrong with the entry
    if window == requested or held_ms >= requested.duration_ms:
        return None
    return (
        f"note: the doorbell holds {held_ms / 1000:.0f} s of footage in the request's "
        f"{requested.duration_ms / 1000:.0f} s window, and this tool cannot see where: if "
        "the part you chose holds none, the doorbell records the approval and its share "
        'fails with "no footage". The doorbell\'s console (or doorbellctl approve) shows '
        "the part's footage before you decide."
    )


def publish_decision(
    home: OwnerHome,
    *,
    rfa_id: str,
    approve: bool,
    window: Window | None,
    anonymous: bool,
    broker_url: str,
    now_ms: int,
    device_id: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Check it against the pending list last seen, then build, sign, seal and publish a
    decision (QoS 1, not retained); returns the payload."""
    device = home.device(device_id)
    problem = decision_problem(
        home.pending(device.device_id),
        rfa_id=rfa_id,
        window=window,
        now_ms=now_ms,
        approve=approve,
    )
    if problem is not None:
        raise OwnerError(f"not sent: {problem}")
    payload = decision_payload(
        device_id=device.device_id,
        rfa_id=rfa_id,
        approve=approve,
        window=window,
        share_contact=not anonymous,
        now_ms=now_ms,
    )
    sealed = seal_decision(payload, home.signing_key(), device)
    publish_messages(
        broker_url,
        [
            Outgoing(
                topic=wire.owner_topic(device.device_id, "decision"), payload=sealed, retain=False
            )
        ],
        timeout_s=timeout_s,
    )
    return payload


# ---------------------------------------------------------------------------- watching


@dataclass(frozen=True, slots=True)
class OwnerMessage:
    """A verified pending or shares message."""

    kind: str  # "pending" or "shares"
    at_ms: int
    audit_head: AuditHead
    items: list[dict[str, Any]]
    details: list[dict[str, Any]] = field(default_factory=list)  # pending only


def open_owner_message(
    payload: bytes, *, kind: str, identity: x25519.Identity, device: PairedDevice
) -> OwnerMessage:
    """Decrypt, verify under the pinned device key, and check the message's shape."""
    try:
        plain = unseal(payload, [identity])
        key = public_key_from_b64(device.device_key)
        verified = open_envelope(plain, {device.kid: key})
    except SealError as exc:
        raise OwnerError("cannot decrypt (not sealed to this owner)") from exc
    except EnvelopeError as exc:
        raise OwnerError(f"not signed by the paired device ({exc.reason})") from exc
    if len(plain) != wire.OWNER_MESSAGE_BYTES:
        raise OwnerError(f"not exactly {wire.OWNER_MESSAGE_BYTES} bytes (protocol.md §3)")
    doc = verified.payload
    list_key = "requests" if kind == "pending" else "shares"
    if doc.get("type") != kind:
        raise OwnerError(f"expected a {kind} message, got type {shown(doc.get('type'))!r}")
    items = doc.get(list_key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise OwnerError(f"{list_key} must be a list of objects")
    details: list[dict[str, Any]] = []
    if kind == "pending":
        if any(set(i) != set(wire.PENDING_ENTRY_KEYS) for i in items):
            raise OwnerError("a pending entry does not have exactly the keys of §5.1")
        raw_details = doc.get("details")
        if not isinstance(raw_details, list) or not all(isinstance(d, dict) for d in raw_details):
            raise OwnerError("details must be a list of objects")
        details = raw_details
    try:
        head = AuditHead.from_json(doc.get("audit_head"))
    except ValueError as exc:
        raise OwnerError(str(exc)) from exc
    try:
        at_ms = parse_time(doc.get("at"))
    except TimeFormatError as exc:
        raise OwnerError(f"at: {exc}") from exc
    return OwnerMessage(kind=kind, at_ms=at_ms, audit_head=head, items=items, details=details)


def head_problem(
    last: tuple[AuditHead | LegacyHead, int] | None, head: AuditHead, at_ms: int
) -> tuple[str | None, bool]:
    """Compare a message's audit head with the newest seen: (warning or None, is newer).

    A message older than the newest seen (a retained message from the previous round, or
    one the broker replays) is not compared: its head is older by nature. A newer head
    must *extend* the one seen before (protocol.md §7): recomputed from the old chain
    value and the new entries' hashes, so a rewritten history is caught however long it
    is; fewer entries means the log was cut or rolled back.
    """
    if last is None:
        return None, True
    previous, last_at = last
    if at_ms < last_at:
        return None, False
    verdict = continuity(previous, head)
    if verdict is Continuity.ROLLED_BACK:
        return (
            f"AUDIT LOG WENT BACKWARDS: {head.entries} entries, "
            f"{previous.entries} were seen before (rolled back or cut)"
        ), True
    if verdict is Continuity.REWRITTEN:
        return (
            f"AUDIT LOG REWRITTEN: the head of {head.entries} entries does not extend the "
            f"one of {previous.entries} entries seen before"
        ), True
    return None, True


def _shown_window(window: object) -> str:
    if not isinstance(window, dict):
        return "?"
    return f"{shown(window.get('start'))} .. {shown(window.get('end'))}"


def render_pending(
    items: Sequence[Mapping[str, Any]], details: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The pending list; a request is shown only once its details arrived and match
    `details_sha256` (until then, only that it is awaited). Every string is escaped."""
    details = details or {}
    if not items:
        return "pending: none"
    lines = [f"pending: {len(items)}"]
    for item in items:
        rfa_id = shown(item.get("id"))
        held = details.get(str(item.get("id")))
        if held is None:
            lines.append(f"  {rfa_id}  (details not received yet: shown once they arrive)")
            continue
        agency = held.get("agency") if isinstance(held.get("agency"), dict) else {}
        inv = held.get("investigator") if isinstance(held.get("investigator"), dict) else {}
        area = held.get("area") if isinstance(held.get("area"), dict) else {}
        assert isinstance(agency, dict) and isinstance(inv, dict) and isinstance(area, dict)
        lines.append(
            f"  {rfa_id}  agency {agency_label(item.get('agency_id'), agency.get('name'))}"
            f" case {shown(item.get('case_number'))}"
        )
        lines.append(f"      window {_shown_window(item.get('window'))}")
        lines.append(
            f"      footage {shown(item.get('footage_seconds'))} s, "
            f"decide by {shown(item.get('decide_by'))}"
        )
        contact = inv.get("email") or inv.get("phone")
        lines.append(f"      investigator {shown(inv.get('name'))} <{shown(contact)}>")
        lines.append(
            f"      area {shown(area.get('lat'))}, {shown(area.get('lon'))} "
            f"radius {shown(area.get('radius_m'))} m"
        )
        description = held.get("description")
        if description:
            lines.append(f"      {shown(description, limit=300)}")
    return "\n".join(lines)


def render_shares(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "shares: none"
    lines = [f"shares: {len(items)}"]
    for item in items:
        sent, total = item.get("bytes_sent"), item.get("bytes_total")
        progress = ""
        if isinstance(sent, int) and isinstance(total, int) and total > 0:
            progress = f" {sent}/{total} bytes ({100 * sent // total}%)"
        error = f" error: {shown(item['error'])}" if item.get("error") else ""
        lines.append(f"  {shown(item.get('rfa_id'))}  {shown(item.get('state'))}{progress}{error}")
        if item.get("starts_at"):  # protocol.md §6.2/§6.3: an anonymous share waiting
            lines.append(f"      upload starts at {shown(item['starts_at'])}")
        if item.get("manifest_sha256"):
            lines.append(f"      manifest sha256 {shown(item['manifest_sha256'])}")
    return "\n".join(lines)


class OwnerWatch:
    """Turns incoming sealed messages into printed lists and audit-head warnings, and
    reassembles the pending requests' details (they may arrive over several messages)."""

    def __init__(
        self,
        *,
        home: OwnerHome,
        device: PairedDevice,
        identity: x25519.Identity,
        out: TextIO,
        err: TextIO,
        on_update: Callable[[], None] = lambda: None,
    ) -> None:
        self._home = home
        self._device = device
        self._identity = identity
        self._out = out
        self._err = err
        self._on_update = on_update
        self._lock = threading.Lock()
        self.seen: set[str] = set()
        self.warnings: list[str] = []
        self.details: dict[str, dict[str, Any]] = {}  # rfa id -> details that matched
        self.complete = False  # every pending request's details are held

    def _take_details(self, opened: OwnerMessage) -> None:
        wanted = {str(i.get("id")): i.get("details_sha256") for i in opened.items}
        for details in opened.details:
            rfa_id = str(details.get("id"))
            if rfa_id in wanted and wire.details_sha256(details) == wanted[rfa_id]:
                self.details[rfa_id] = dict(details)
            elif rfa_id in wanted:
                print(
                    f"WARNING: details of {shown(rfa_id)} do not match their details_sha256",
                    file=self._err,
                    flush=True,
                )
        self.details = {k: v for k, v in self.details.items() if k in wanted}
        self.complete = set(wanted) <= set(self.details)

    def handle(self, message: Incoming) -> None:
        kind = message.topic.rsplit("/", 1)[-1]
        if kind not in ("pending", "shares"):
            return
        with self._lock:
            try:
                opened = open_owner_message(
                    message.payload, kind=kind, identity=self._identity, device=self._device
                )
            except OwnerError as exc:
                print(
                    f"WARNING: ignored a {kind} message: {shown(exc)}", file=self._err, flush=True
                )
                return
            last = self._home.last_head(self._device.device_id)
            warning, newer = head_problem(last, opened.audit_head, opened.at_ms)
            if warning:
                self.warnings.append(warning)
                print(f"!!! WARNING: {warning} !!!", file=self._err, flush=True)
            if (
                newer
                and last is not None
                and warning is None
                and continuity(last[0], opened.audit_head) is Continuity.UNCHECKABLE
            ):
                print(
                    "note: the audit log grew by more than 32 entries since the last head "
                    "seen; only the device can check it (doorbellctl audit --verify)",
                    file=self._err,
                    flush=True,
                )
            if newer and warning is None and last is not None and isinstance(last[0], LegacyHead):
                print(
                    f"note: the audit head remembered by the protocol 1.0 owner tool "
                    f"({last[0].entries} entries) is replaced by the device's 1.1 head "
                    f"({opened.audit_head.entries} entries)",
                    file=self._err,
                    flush=True,
                )
            if newer and warning is None:
                # A warned-about head is not adopted: the good head stays the reference.
                self._home.save_head(self._device.device_id, opened.audit_head, opened.at_ms)
            if not newer:
                print(
                    f"note: this {kind} message is older than one already seen "
                    "(a previous round, or replayed); its audit head is not compared",
                    file=self._err,
                    flush=True,
                )
            if kind == "pending":
                if newer:
                    self._take_details(opened)
                    self._home.save_pending(
                        self._device.device_id,
                        [
                            {**self.details[str(i["id"])], **i}
                            for i in opened.items
                            if str(i["id"]) in self.details
                        ],
                    )
                text = render_pending(opened.items, self.details)
            else:
                text = render_shares(opened.items)
            print(f"[{format_time(opened.at_ms)}] {text}", file=self._out)
            head = opened.audit_head
            print(f"    audit head: {head.entries} entries, {head.sha256[:16]}", file=self._out)
            self._out.flush()
            if kind == "shares" or self.complete:
                self.seen.add(kind)
        self._on_update()


def watch(
    home: OwnerHome,
    broker_url: str,
    *,
    device_id: str | None = None,
    once: bool = False,
    timeout_s: float | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> OwnerWatch:
    """Listen until stopped, the timeout passes, or (with `once`) both lists arrived."""
    out, err = out or sys.stdout, err or sys.stderr
    device = home.device(device_id)
    stop = stop or threading.Event()
    view: OwnerWatch

    def updated() -> None:
        if once and {"pending", "shares"} <= view.seen:
            stop.set()

    view = OwnerWatch(
        home=home, device=device, identity=home.identity(), out=out, err=err, on_update=updated
    )
    timer = threading.Timer(timeout_s, stop.set) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        listen(
            broker_url,
            [
                wire.owner_topic(device.device_id, "pending"),
                wire.owner_topic(device.device_id, "shares"),
            ],
            view.handle,
            stop,
        )
    finally:
        if timer:
            timer.cancel()
    return view


# ---------------------------------------------------------------------------- CLI


def _read_pairing(source: str) -> Any:
    """The JSON object of `doorbellctl status --json` or of `doorbellctl pair`, whose
    output holds the same object between a QR code and a hint: the outermost braces."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    start, end = text.find("{"), text.rfind("}")
    try:
        if start < 0 or end < start:
            raise ValueError("no JSON object")
        return json.loads(text[start : end + 1])
    except ValueError as exc:
        raise OwnerError(
            "pairing data is not JSON: pass the output of `doorbellctl pair` or "
            "`doorbellctl status --json`"
        ) from exc


def _parser() -> argparse.ArgumentParser:
    parser = ToolParser(
        prog="doorbell-owner",
        description="The doorbell owner's reference tool.",
        epilog=EXIT_CODES_EPILOG,
    )
    parser.add_argument(
        "--home",
        default=str(Path("~/.doorbell-owner")),
        help="the app's state directory: its keys and the paired devices",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="make the owner's signing key and age identity")
    pair = sub.add_parser(
        "pair", help="pin a device from the output of `doorbellctl pair` (or `status --json`)"
    )
    pair.add_argument(
        "--from-json", required=True, metavar="FILE|-", help="that output, in a file or on stdin"
    )
    pair.add_argument("--force", action="store_true", help="replace a pinned device's keys")
    watch_p = sub.add_parser("watch", help="show the pending requests and the shares")
    watch_p.add_argument(
        "--broker", required=True, metavar="MQTT_URL", help="the broker the device uses"
    )
    watch_p.add_argument("--device", help="device id (default: the one paired device)")
    watch_p.add_argument("--once", action="store_true", help="exit once both lists arrived")
    watch_p.add_argument("--timeout", type=float, help="seconds before giving up")
    decide = sub.add_parser("decide", help="approve or deny a pending request")
    decide.add_argument("--rfa", required=True, metavar="RFA_ID", help="the request's id")
    decide.add_argument("verdict", choices=("approve", "deny"), help="the owner's decision")
    decide.add_argument("--start", type=time_arg, help="share from (RFC 3339 UTC)")
    decide.add_argument("--end", type=time_arg, help="share until (RFC 3339 UTC)")
    decide.add_argument("--anonymous", action="store_true", help="share without the contact")
    decide.add_argument(
        "--publish", required=True, metavar="MQTT_URL", help="the broker the device uses"
    )
    decide.add_argument("--device", help="device id (default: the one paired device)")
    decide.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, now_ms: int | None = None) -> int:
    def body() -> int:
        args = _parser().parse_args(argv)
        home = OwnerHome(Path(args.home).expanduser())
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        try:
            return _run(args, home, now)
        except ValueError as exc:  # a key, time or file that does not parse
            raise DoorbellError(str(exc)) from exc

    return run_tool("doorbell-owner", body)


def _run(args: argparse.Namespace, home: OwnerHome, now: int) -> int:
    if args.command == "keygen":
        public = home.keygen()
        print(f"public_key: {public.public_key}")
        print(f"kid:        {public.kid}")
        print(f"recipient:  {public.recipient}")
        print("device config:")
        print(f"  owner:\n    keys: [{public.public_key}]\n    recipients: [{public.recipient}]")
        return 0
    if args.command == "pair":
        device = parse_pairing(_read_pairing(args.from_json))
        changed = home.pair(device, force=args.force)
        state = "paired" if changed else "already paired"
        print(f"{state}: {device.device_id} (device kid {device.kid})")
        return 0
    if args.command == "watch":
        view = watch(
            home,
            args.broker,
            device_id=args.device,
            once=args.once,
            timeout_s=args.timeout,
        )
        if view.warnings:
            return ExitCode.REFUSED
        if args.once and {"pending", "shares"} - view.seen:
            raise UnavailableError("timed out before both lists arrived")
        return ExitCode.OK
    if (args.start is None) != (args.end is None):
        raise OwnerError("give both --start and --end, or neither")
    if args.start is not None and args.start > args.end:
        raise UsageError("--start is after --end")
    window = Window(args.start, args.end) if args.start is not None else None
    if window is not None and args.verdict == "deny":
        raise OwnerError("a window only makes sense when approving")
    if args.verdict == "approve":
        caution = part_caution(home.pending(home.device(args.device).device_id), args.rfa, window)
        if caution is not None:
            print(caution, file=sys.stderr)
    payload = publish_decision(
        home,
        rfa_id=args.rfa,
        approve=args.verdict == "approve",
        window=window,
        anonymous=args.anonymous,
        broker_url=args.publish,
        now_ms=now,
        device_id=args.device,
        timeout_s=args.timeout,
    )
    print(f"sent: {payload['decision']} {payload['rfa_id']} to {payload['device_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
