"""Where the daemon keeps its files, derived from the config in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_config import Config


@dataclass(frozen=True)
class StatePaths:
    state_dir: Path
    buffer_dir: Path

    @classmethod
    def of(cls, config: Config) -> StatePaths:
        return cls(state_dir=config.state_dir, buffer_dir=config.buffer_dir)

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"
