"""`doorbell-agency verify` as an agency meets it: tus servers store uploads under random
names, so it finds a share's two objects in a storage folder by their Upload-Metadata
(tuspyserver's and tusd's `.info` files), or takes the two objects in either order."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from cloud.agency import IDENTITY_FILE, SIGNING_FILE, generate_agency_keys
from cloud.loopback import script
from cloud.tus_storage import find_shares
from foundation.cli import ExitCode
from foundation.errors import DoorbellError
from sync.keys import load_identity, load_signing_key
from tests.cloud.shares import Agency, ShareParts, build_share


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Agency]:
    keydir = tmp_path / "agency"
    generate_agency_keys(keydir, agency_id="sfpd")
    return keydir, Agency(
        key=load_signing_key(keydir / SIGNING_FILE), identity=load_identity(keydir / IDENTITY_FILE)
    )


def store(storage: Path, share: ShareParts, *, tusd: bool = False, offset_short: int = 0) -> None:
    """Lay the share out as a tus server does: random names, metadata in `.info`."""
    storage.mkdir(parents=True, exist_ok=True)
    rfa_id = share.rfa_id
    for kind, path in (("manifest", share.manifest_path), ("clip", share.clip_path)):
        uid = uuid.uuid4().hex
        shutil.copy(path, storage / uid)
        size = path.stat().st_size
        metadata = {"filename": path.name, "rfa_id": rfa_id, "kind": kind}
        offset = size - (offset_short if kind == "clip" else 0)
        doc = (
            {"ID": uid, "Size": size, "Offset": offset, "MetaData": metadata}
            if tusd
            else {"uid": uid, "size": size, "offset": offset, "metadata": metadata}
        )
        (storage / f"{uid}.info").write_text(json.dumps(doc))


def verify(keydir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script("doorbell-agency"), "verify", f"--identity={keydir / IDENTITY_FILE}",
         f"--key={keydir / SIGNING_FILE}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_two_objects_in_either_order(keys: tuple[Path, Agency], tmp_path: Path) -> None:
    keydir, agency = keys
    share = build_share(tmp_path / "share", agency)
    for objects in ((share.manifest_path, share.clip_path), (share.clip_path, share.manifest_path)):
        result = verify(keydir, *map(str, objects))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "share VERIFIED" in result.stdout
    one = verify(keydir, str(share.clip_path))
    assert one.returncode == ExitCode.USAGE and "two objects" in one.stderr


@pytest.mark.parametrize("tusd", [False, True])
def test_a_storage_folder_is_searched_by_metadata(
    keys: tuple[Path, Agency], tmp_path: Path, tusd: bool
) -> None:
    keydir, agency = keys
    first = build_share(tmp_path / "a", agency)
    second = build_share(tmp_path / "b", agency)
    storage = tmp_path / "uploads"
    store(storage, first, tusd=tusd)
    store(storage, second, tusd=tusd)
    shares = find_shares(storage)
    assert len(shares) == len({s.rfa_id for s in shares})
    result = verify(keydir, f"--storage={storage}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("share VERIFIED") == len(shares)
    only = verify(keydir, f"--storage={storage}", f"--rfa={shares[0].rfa_id}")
    assert only.returncode == 0 and only.stdout.count("share VERIFIED") == 1
    unknown = verify(keydir, f"--storage={storage}", "--rfa=no-such-request")
    assert unknown.returncode == ExitCode.REFUSED and "no upload of request" in unknown.stderr


def test_a_partial_upload_is_named_not_verified(keys: tuple[Path, Agency], tmp_path: Path) -> None:
    keydir, agency = keys
    storage = tmp_path / "uploads"
    store(storage, build_share(tmp_path / "a", agency), offset_short=100)
    with pytest.raises(DoorbellError, match="expected one clip upload, none arrived whole"):
        find_shares(storage)
    result = verify(keydir, f"--storage={storage}")
    assert result.returncode == ExitCode.REFUSED and "none arrived whole" in result.stderr
    empty = verify(keydir, f"--storage={tmp_path / 'nothing'}")
    assert empty.returncode == ExitCode.REFUSED and "not a folder" in empty.stderr


def test_the_upload_server_command(tmp_path: Path) -> None:
    bad_port = subprocess.run(
        [*script("doorbell-tus-server"), f"--storage={tmp_path}", "--port=0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad_port.returncode == ExitCode.USAGE and "--port" in bad_port.stderr
    public = subprocess.run(
        [*script("doorbell-tus-server"), f"--storage={tmp_path}", "--host=0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert public.returncode == ExitCode.USAGE  # loopback only
