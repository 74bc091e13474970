"""Reading a received clip's C2PA Content Credentials, as an agency does beside our own
checks (cloud/verify.py), with c2pa-python's Reader: the same library c2patool and
contentcredentials.org are built on (docs/c2pa.md).

The Reader's verdict, in the words the report uses:

- **Trusted**: the claim is intact, the clip's bytes match it, and the signing
  certificate chains to an authority the agency gave (`--c2pa-authority`, the device's
  C2PA authority of a named share);
- **Valid, untrusted**: intact and matching, but signed under an authority nobody gave:
  what every anonymous share is (a one-time authority), and a named one read without
  its device's authority;
- **Invalid**: a changed byte, a cut file, a forged claim (the Reader's failure codes
  follow);
- **none**: the clip carries no credentials.

The manifest store is also found by hand (the `uuid` box after `ftyp`, ISO/IEC 14496-12
§4.2 boxes, C2PA 2.x §11.3.4), only to hash it against the share manifest's `c2pa.sha256`:
c2pa-python gives its parsed form, not its bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sync.credentials import CAPTURE_LABEL, CONSENT_LABEL, MIME, settings

C2PA_BOX_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
# A doorbell's manifest store is a few KB; a box claiming more is not read into memory.
MAX_STORE_BYTES = 16 * 1024 * 1024
_TOP_BOXES_READ = 64  # the C2PA box comes right after `ftyp`; never walk a whole file

TRUSTED = "Trusted"
UNTRUSTED = "Valid, untrusted"
INVALID = "Invalid"
NONE = "none"


@dataclass(frozen=True)
class Credentials:
    """What a clip's Content Credentials say. `assertions` maps each label of the active
    manifest to its data; `failures` are the Reader's failure codes with explanations."""

    verdict: str
    signer: str | None = None  # the signing certificate's common name
    issuer: str | None = None  # its organization, as the Reader reports it
    failures: tuple[str, ...] = ()
    assertions: dict[str, Any] = field(default_factory=dict)
    store_sha256: str | None = None

    @property
    def capture(self) -> dict[str, Any]:
        data = self.assertions.get(CAPTURE_LABEL)
        return data if isinstance(data, dict) else {}

    @property
    def consent(self) -> dict[str, Any]:
        data = self.assertions.get(CONSENT_LABEL)
        return data if isinstance(data, dict) else {}


def manifest_store(stream: BinaryIO) -> bytes | None:
    """The JUMBF manifest store of an MP4's top-level C2PA `uuid` box, or None."""
    stream.seek(0)
    for _ in range(_TOP_BOXES_READ):
        start = stream.tell()
        head = stream.read(8)
        if len(head) < 8:
            return None
        size, kind = struct.unpack(">I4s", head)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            large = stream.read(8)
            if len(large) < 8:
                return None
            size, header = struct.unpack(">Q", large)[0], 16
        if size == 0 or size < header:  # "to the end of the file", or malformed
            return None
        if kind == b"uuid":
            found = _c2pa_payload(stream, size - header)
            if found is not None:
                return found
        stream.seek(start + size)
    return None


def _c2pa_payload(stream: BinaryIO, body_size: int) -> bytes | None:
    """The manifest store inside a `uuid` box's body (after its 16-byte type): a
    FullBox header (4), the purpose as a NUL-terminated string ("manifest"), the offset
    of an auxiliary box (8), then the JUMBF."""
    prefix = b"manifest\0"
    fixed = 16 + 4 + len(prefix) + 8
    if body_size < fixed or body_size - fixed > MAX_STORE_BYTES:
        return None
    head = stream.read(fixed)
    if len(head) < fixed or head[:16] != C2PA_BOX_UUID or head[20 : 20 + len(prefix)] != prefix:
        return None
    store = stream.read(body_size - fixed)
    return store if len(store) == body_size - fixed else None


def read_credentials(clip: Path, *, anchors: str | None = None) -> Credentials:
    """The clip's credentials as c2pa's Reader validates them, trusting `anchors` (PEM
    certificates) only. Never raises for a bad clip: the verdict says it."""
    import c2pa  # a native library of 23 MB: only the code that reads credentials loads it

    try:
        with clip.open("rb") as stream:
            store = manifest_store(stream)
            stream.seek(0)
            with c2pa.Context.from_dict(settings(anchors=anchors)) as context:
                reader = c2pa.Reader.try_create(MIME, stream, None, context)
                if reader is None:
                    return Credentials(NONE)
                with reader:
                    state = reader.get_validation_state()
                    results = reader.get_validation_results() or {}
                    active = reader.get_active_manifest() or {}
    except (c2pa.C2paError, KeyError, ValueError, OSError) as exc:
        return Credentials(INVALID, failures=(_short(str(exc)),))
    listed = [
        item
        for item in (results.get("activeManifest") or {}).get("failure", [])
        if isinstance(item, dict)
    ]
    # what broke first, "untrusted" (which every anonymous share is) last
    listed.sort(key=lambda item: item.get("code") == "signingCredential.untrusted")
    failures = tuple(f"{item.get('code')}: {item.get('explanation', '')}" for item in listed)
    info = active.get("signature_info") or {}
    assertions = {
        a["label"]: a.get("data")
        for a in active.get("assertions", [])
        if isinstance(a, dict) and isinstance(a.get("label"), str)
    }
    verdict = {"Trusted": TRUSTED, "Valid": UNTRUSTED}.get(str(state), INVALID)
    return Credentials(
        verdict=verdict,
        signer=info.get("common_name"),
        issuer=info.get("issuer"),
        failures=failures,
        assertions=assertions,
        store_sha256=hashlib.sha256(store).hexdigest() if store is not None else None,
    )


def _short(text: str, limit: int = 300) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."
