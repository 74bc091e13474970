"""The device's own keys: an Ed25519 signing key, an age identity and the C2PA signer of
its named shares' clips (with the authority that issued it, sync/credentials.py), made on
first start and kept 0600 in the state directory. Nothing here is ever logged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyrage import x25519

from sync import keys
from sync.credentials import ClipSigner, device_signer


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    signing: keys.SigningKey
    age: x25519.Identity
    clip_signer: ClipSigner | None = None  # None only where no share is ever built

    @property
    def recipient(self) -> str:
        return str(self.age.to_public())

    def pairing_info(self) -> dict[str, str]:
        """What the owner's app pins at pairing (protocol.md §5.0)."""
        return {
            "device_id": self.device_id,
            "device_key": self.signing.public_b64,
            "recipient": self.recipient,
        }

    def __repr__(self) -> str:
        return f"DeviceIdentity(device_id={self.device_id!r}, kid={self.signing.kid})"


def read_device_identity(state_dir: Path, device_id: str) -> DeviceIdentity | None:
    """The keys if the daemon has made them, else None. Creates nothing: a CLI run as
    root must not leave root-owned key files that the service then cannot read."""
    folder = state_dir / "keys"
    signing, age = folder / "device-signing.pem", folder / "device-age.txt"
    if not (signing.exists() and age.exists()):
        return None
    return DeviceIdentity(
        device_id=device_id,
        signing=keys.load_signing_key(signing),
        age=keys.load_identity(age),
    )


def load_device_identity(state_dir: Path, device_id: str) -> DeviceIdentity:
    """Load the device's keys from `state_dir/keys`, making them on first start."""
    folder = state_dir / "keys"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return DeviceIdentity(
        device_id=device_id,
        signing=keys.load_or_create_signing_key(folder / "device-signing.pem"),
        age=keys.load_or_create_identity(folder / "device-age.txt"),
        clip_signer=device_signer(folder, device_id),
    )
