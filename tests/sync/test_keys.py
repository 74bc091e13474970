"""A party's new keys are made in one place (sync.keys.create_key_pair), for the owner
tool, the agency tool and `doorbellctl owner keygen` alike."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sync.errors import KeyFileError
from sync.keys import create_key_pair, load_identity, load_signing_key


def test_new_keys_are_0600_in_a_0700_folder_and_load_back(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    key, identity = create_key_pair(folder / "signing.pem", folder / "age.txt")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("signing.pem", "age.txt"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert load_signing_key(folder / "signing.pem").public_b64 == key.public_b64
    assert str(load_identity(folder / "age.txt").to_public()) == str(identity.to_public())


@pytest.mark.parametrize("present", ["signing.pem", "age.txt"])
def test_either_file_present_refuses_and_changes_nothing(tmp_path: Path, present: str) -> None:
    (tmp_path / present).write_bytes(b"an older key")
    with pytest.raises(KeyFileError, match=f"{present} already exists; refusing to overwrite"):
        create_key_pair(tmp_path / "signing.pem", tmp_path / "age.txt")
    assert [p.name for p in tmp_path.iterdir()] == [present]
    assert (tmp_path / present).read_bytes() == b"an older key"
