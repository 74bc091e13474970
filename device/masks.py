"""The privacy masks in force on this doorbell: the config's, plus those the owner draws
in the console.

The config's masks (`camera.masks`) are a floor: the console shows them but cannot move
or remove them, so whoever set up the doorbell (or a landlord, or a neighbour's
agreement) can rely on them, and a stolen console session cannot uncover the street.
The owner's own masks are saved in the state database (one transaction: the old set or
the new, never half), checked together with the config's (no name twice, and together
they must leave part of the picture visible), written to the audit log with their
polygons, and sent to the recorder, which paints them from its next frame on (a new
segment starts there).

The audit entry (`privacy_masks`) holds every mask in force, its polygon and where it
was set, so an agency asking what was hidden, and since when, is answered from the
signed log without footage. A start whose masks differ from the last audited set (the
config was edited) writes one too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from device.audit import AuditLog
from device.state import StateStore
from foundation.errors import DoorbellError, InvalidValueError
from recorder.masks import Mask, check_masks, parse_masks

logger = logging.getLogger(__name__)

OWNER_MASKS = "privacy_masks"  # owner_settings: the owner's masks, as JSON
AUDITED_MASKS = "privacy_masks_audited"  # owner_settings: the set the log last named
CONSOLE_KEY = "masks"  # what errors about the owner's masks name


class PrivacyMasks:
    """The config's masks and the owner's; `replace` changes the owner's. Thread-safe."""

    def __init__(self, *, config_masks: tuple[Mask, ...], store: StateStore, audit: AuditLog):
        self._config = tuple(config_masks)
        self._store = store
        self._audit = audit
        self._lock = threading.Lock()
        self._apply: Callable[[tuple[Mask, ...]], None] = lambda _masks: None
        self._owner = self._load()

    def _load(self) -> tuple[Mask, ...]:
        saved = self._store.owner_setting(OWNER_MASKS)
        if saved is None:
            return ()
        try:
            owner = parse_masks(json.loads(saved), CONSOLE_KEY)
        except (ValueError, DoorbellError) as exc:  # written by replace(): only by a bug
            logger.error("the owner's saved privacy masks cannot be read: %s", exc)
            return ()
        # The config may have been edited since: a mask of the same name there replaces
        # the owner's; the rest keep hiding what they hid.
        names = {m.name for m in self._config}
        kept = tuple(m for m in owner if m.name not in names)
        try:
            check_masks(self._config + kept)
        except InvalidValueError as exc:
            logger.error(
                "the owner's privacy masks beside the config's: %s; only the config's apply", exc
            )
            return ()
        return kept

    @property
    def config_masks(self) -> tuple[Mask, ...]:
        return self._config

    @property
    def owner_masks(self) -> tuple[Mask, ...]:
        return self._owner

    @property
    def in_force(self) -> tuple[Mask, ...]:
        return self._config + self._owner

    def follow(self, apply: Callable[[tuple[Mask, ...]], None]) -> None:
        """Call `apply` with the masks in force whenever they change (the recorder's)."""
        self._apply = apply

    def audit_start(self) -> None:
        """At start: audit the masks in force when the log does not name them yet."""
        with self._lock:
            last = self._store.owner_setting(AUDITED_MASKS)
            if last is None and not self.in_force:
                return  # nothing was ever hidden: nothing to say
            if last != _fingerprint(self.in_force):
                self._record("start")

    def replace(self, data: object) -> tuple[Mask, ...]:
        """The owner's new set of masks (console JSON), checked, saved, audited and sent
        to the recorder. InvalidValueError names the key of the first problem."""
        owner = parse_masks(data, CONSOLE_KEY)
        config_names = {m.name for m in self._config}
        for i, mask in enumerate(owner):
            if mask.name in config_names:
                raise InvalidValueError(
                    f"{CONSOLE_KEY}[{i}].name: {mask.name!r} is the name of a mask set in "
                    "the config; choose another"
                )
        check_masks(self._config + owner, CONSOLE_KEY)
        with self._lock:
            if owner == self._owner:
                return self.in_force
            self._store.set_owner_setting(
                OWNER_MASKS, json.dumps([m.to_json() for m in owner], separators=(",", ":"))
            )
            self._owner = owner
            self._record("console")
            logger.info("privacy masks changed in the console: %d in force", len(self.in_force))
            self._apply(self.in_force)  # in the lock: the recorder gets the sets in order
            return self.in_force

    def _record(self, by: str) -> None:
        self._audit.append("privacy_masks", audit_fields(self._config, self._owner, by))
        self._store.set_owner_setting(AUDITED_MASKS, _fingerprint(self.in_force))

    def to_json(self) -> dict[str, Any]:
        return {
            "config": [m.to_json() for m in self._config],
            "owner": [m.to_json() for m in self._owner],
        }


def audit_fields(config: tuple[Mask, ...], owner: tuple[Mask, ...], by: str) -> dict[str, Any]:
    """The audit entry of a set of masks: each one's label, polygon and where it was set
    (the audit guard refuses a field called `name`, so a mask's name is its label)."""
    return {
        "by": by,
        "masks": [
            {"label": m.name, "set_in": where, "points": [[x, y] for x, y in m.points]}
            for where, masks in (("config", config), ("console", owner))
            for m in masks
        ],
    }


def _fingerprint(masks: tuple[Mask, ...]) -> str:
    return json.dumps([m.to_json() for m in masks], separators=(",", ":"), sort_keys=True)
