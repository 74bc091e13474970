"""The wire contract (docs/protocol.md): every limit, topic and encoding that the device
and the other parties' tools must agree on, written once. The device and the reference
tools in cloud/ both import it; a test fails if one of these facts is written elsewhere."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import rfc8785

if TYPE_CHECKING:  # numpy at run time only where frames are read: loading the config
    import numpy as np  # (which takes its MQTT limits from here) does not pay for it

from foundation.errors import StampError

# §1: a message the device receives over this size is dropped before it is parsed.
MAX_MESSAGE_BYTES = 16 * 1024

# §3: sealed messages to the owner are padded inside the encryption in steps of this.
PAD_BLOCK = 4096

# §3: every sealed owner message is the encryption of exactly this many bytes.
OWNER_MESSAGE_BYTES = 16_384
# §3: the owner channel's shortest period (config owner.sync_seconds).
MIN_SYNC_SECONDS = 0.2
# §3 (1.2): every message whose signature verified is acknowledged exactly this long
# after it arrived (monotonic clock), whatever its outcome.
ACK_DELAY_S = 2.0
# §3 (1.2): the QoS the device subscribes at. The broker may grant no more, so a PUBLISH to
# the device above it breaks the protocol: the device drops the connection unstored.
SUBSCRIPTION_QOS = 1
# §3 (1.2): the largest Receive Maximum the device announces over MQTT 5 (config
# mqtt.receive_maximum): how many unacknowledged QoS 1 messages the broker may send it.
MAX_RECEIVE_MAXIMUM = 16
# §5.2: every sealed decision is the encryption of exactly this many bytes.
DECISION_BYTES = 4_096
# §5.2: a decision's issued_at within this much of the device's clock.
MAX_DECISION_SKEW_MS = 10 * 60 * 1000

# §4: the request rules' limits.
AGENCY_ID_PATTERN = r"[a-z0-9-]{1,32}"
MAX_CASE_NUMBER_CHARS = 64
MIN_RADIUS_M = 150
MAX_RADIUS_M = 805
MAX_WINDOW_MS = 12 * 3600 * 1000
MAX_ISSUED_AHEAD_MS = 5 * 60 * 1000
MAX_LIFETIME_MS = 14 * 24 * 3600 * 1000
MAX_DESCRIPTION_BYTES = 1_000
MAX_STRING_BYTES = 128
MAX_PENDING = 10  # rule 11: a request is accepted only while fewer are pending
MAX_REQUESTS_PER_CASE = 2  # rule 12: per agency.id and case_number ...
CASE_PERIOD_MS = 30 * 24 * 3600 * 1000  # ... within this period
# rule 10: control and bidirectional-formatting characters, refused in every string.
FORBIDDEN_CHARS_PATTERN = "[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"

# §5.1: a pending list's compact entry has exactly these keys, and a request's details
# these; in this order the device writes them.
PENDING_ENTRY_KEYS = (
    "id",
    "agency_id",
    "case_number",
    "window",
    "expires_at",
    "decide_by",
    "footage_seconds",
    "details_sha256",
)
PENDING_DETAIL_KEYS = ("id", "agency", "investigator", "description", "area")


def canonical_json(value: Any) -> bytes:
    """§2: the RFC 8785 (JCS) serialisation of a JSON value. It comes from the `rfc8785`
    package (Trail of Bits), not from our own code: number and string serialisation rules
    are easy to get subtly wrong."""
    return bytes(rfc8785.dumps(value))


def details_sha256(details: Mapping[str, Any]) -> str:
    """§5.1: the pending entry's check over a request's details, the hex SHA-256 of the
    RFC 8785 form of the details object without `id`."""
    return hashlib.sha256(
        canonical_json({key: value for key, value in details.items() if key != "id"})
    ).hexdigest()


# §5.1 / §7: the audit head lists the entry hashes of this many newest entries.
AUDIT_RECENT = 32


class ShareState(StrEnum):
    """§6.3: where a share is. `queued` -> `uploading` -> `done`, or it ends `failed`
    (with its error) or `cancelled`; a failed share may be queued again."""

    QUEUED = "queued"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# §6.3: a share in one of these states is still under way; every other state is final.
ACTIVE_SHARE_STATES = (ShareState.QUEUED, ShareState.UPLOADING)
FINAL_SHARE_STATES = frozenset(ShareState) - frozenset(ACTIVE_SHARE_STATES)
# §6.3: a share's `error` is at most this many printable ASCII characters.
MAX_SHARE_ERROR_CHARS = 64

# §3: topics.
RFA_TOPIC_PREFIX = "rfa/v1/cell/"


def rfa_topic(cell: str) -> str:
    """The topic of one geohash-5 cell's requests."""
    return f"{RFA_TOPIC_PREFIX}{cell}"


def status_topic(device_id: str) -> str:
    return f"devices/{device_id}/status"


def owner_topic(device_id: str, leaf: str) -> str:
    """`leaf` is `pending`, `shares` (device to owner) or `decision` (owner to device)."""
    return f"devices/{device_id}/owner/{leaf}"


# §8: the synthetic camera's frame stamp.
STAMP_BITS = 48
STAMP_BLOCK = 16


def stamp_cells(width: int) -> list[tuple[int, int]]:
    """(y, x) of the top-left corner of each bit's block, most significant bit first."""
    per_row = width // STAMP_BLOCK
    if per_row < 1:
        raise StampError("frame narrower than one stamp block")
    return [((i // per_row) * STAMP_BLOCK, (i % per_row) * STAMP_BLOCK) for i in range(STAMP_BITS)]


def check_stamp_size(width: int, height: int) -> None:
    rows = -(-STAMP_BITS // max(1, width // STAMP_BLOCK))
    if width < STAMP_BLOCK or height < rows * STAMP_BLOCK:
        raise StampError(f"{width}x{height} is too small for a 48-bit stamp")


def draw_stamp(frame: np.ndarray, capture_ms: int) -> None:
    """Write `capture_ms` into the top-left blocks of an (H, W, C) frame, in place."""
    if not 0 <= capture_ms < 1 << STAMP_BITS:
        raise StampError("capture time does not fit in 48 bits")
    height, width = frame.shape[:2]
    check_stamp_size(width, height)
    for bit, (y, x) in enumerate(stamp_cells(width)):
        on = (capture_ms >> (STAMP_BITS - 1 - bit)) & 1
        frame[y : y + STAMP_BLOCK, x : x + STAMP_BLOCK] = 255 if on else 0


def read_capture_ms(frame: np.ndarray) -> int:
    """The stamp of a decoded frame (RGB or gray). Samples the 8x8 centre of each block
    and thresholds at mid-grey, so coding noise around block edges does not matter."""
    if frame.ndim == 3:
        luma = frame.mean(axis=2)
    elif frame.ndim == 2:
        luma = frame.astype("float32")
    else:
        raise StampError("frame must be (H, W) or (H, W, C)")
    height, width = luma.shape
    check_stamp_size(width, height)
    value = 0
    for y, x in stamp_cells(width):
        centre = luma[y + 4 : y + 12, x + 4 : x + 12]
        value = (value << 1) | int(centre.mean() >= 128)
    return value
