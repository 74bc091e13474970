"""What a tus server left in its storage folder, read back by an agency: each upload is
a data file beside a JSON `.info` file holding its length, offset and Upload-Metadata
(tuspyserver writes `size`/`offset`/`metadata`, tusd `Size`/`Offset`/`MetaData`).

Servers name uploads at random, so an agency finds a share's two objects by the
metadata the device sends (docs/protocol.md §8.2: `rfa_id` and `kind`), not by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import DoorbellError


@dataclass(frozen=True)
class StoredUpload:
    uid: str
    path: Path
    metadata: dict[str, str]
    size: int | None
    offset: int

    @property
    def complete(self) -> bool:
        return self.size is not None and self.offset == self.size

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class StoredShare:
    rfa_id: str
    manifest: Path
    clip: Path


def _field(doc: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in doc:
            return doc[name]
    return None


def read_uploads(storage: Path) -> list[StoredUpload]:
    """Every upload in `storage` whose `.info` file parses, in name order."""
    found = []
    for info in sorted(storage.glob("*.info")):
        try:
            doc = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        uid = info.name[: -len(".info")]
        metadata = _field(doc, "metadata", "MetaData") or {}
        size = _field(doc, "size", "Size")
        found.append(
            StoredUpload(
                uid=uid,
                path=storage / uid,
                metadata={str(k): str(v) for k, v in dict(metadata).items()},
                size=size if isinstance(size, int) else None,
                offset=int(_field(doc, "offset", "Offset") or 0),
            )
        )
    return found


def find_shares(storage: Path, rfa_id: str | None = None) -> list[StoredShare]:
    """The shares whose manifest and clip both arrived whole in `storage`, by request
    id; only `rfa_id`'s when given. A request with a missing or partial object, or with
    two of a kind, is an error that says so."""
    if not storage.is_dir():
        raise DoorbellError(f"{storage}: not a folder")
    objects: dict[str, dict[str, list[StoredUpload]]] = {}
    for upload in read_uploads(storage):
        rid, kind = upload.metadata.get("rfa_id"), upload.metadata.get("kind")
        if rid and kind in ("manifest", "clip") and (rfa_id is None or rid == rfa_id):
            objects.setdefault(rid, {}).setdefault(kind, []).append(upload)
    if rfa_id is not None and rfa_id not in objects:
        raise DoorbellError(f"{storage}: no upload of request {rfa_id}")
    if not objects:
        raise DoorbellError(f"{storage}: no share's uploads (tus .info files with rfa_id)")
    shares = []
    for rid, kinds in sorted(objects.items()):
        chosen: dict[str, Path] = {}
        for kind in ("manifest", "clip"):
            whole = [u for u in kinds.get(kind, []) if u.complete]
            if len(whole) != 1:
                state = "none arrived whole" if not whole else f"{len(whole)} arrived"
                raise DoorbellError(f"request {rid}: expected one {kind} upload, {state}")
            chosen[kind] = whole[0].path
        shares.append(StoredShare(rfa_id=rid, manifest=chosen["manifest"], clip=chosen["clip"]))
    return shares
