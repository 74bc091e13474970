"""The owner's privacy masks on the device (device/masks.py) with the real state
database and the real signed audit log: the config's masks are a floor the console
cannot lift, a change is saved across a restart, audited with its polygons (and
verifies), and sent to the recorder; a refused set changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.audit import AuditLog
from device.audit_verify import read_audit, verify_audit
from device.masks import PrivacyMasks
from device.state import StateStore
from foundation.clock import FakeClock
from foundation.errors import InvalidValueError
from recorder.masks import Mask
from sync.keys import SigningKey
from tests.fixtures.masked import THREE_MASKS

KEY = SigningKey.generate()
STREET, WINDOW, GATE = THREE_MASKS
AS_JSON = [m.to_json() for m in (WINDOW, GATE)]


class Device:
    """The state directory of one device, opened and closed like the daemon does."""

    def __init__(self, root: Path, config: tuple[Mask, ...] = (STREET,)) -> None:
        self.root = root
        self.config = config
        self.sent: list[tuple[Mask, ...]] = []
        self.store = StateStore.open(root / "state.db")
        self.audit = AuditLog.open(root / "audit.log", KEY, clock=FakeClock(1_800_000_000_000))
        self.masks = PrivacyMasks(config_masks=config, store=self.store, audit=self.audit)
        self.masks.follow(self.sent.append)
        self.masks.audit_start()

    def close(self) -> None:
        self.audit.close()
        self.store.close()

    def entries(self) -> list[dict]:
        return [e.fields for e in read_audit(self.root / "audit.log") if e.event == "privacy_masks"]


@pytest.fixture
def device(tmp_path: Path):
    made = Device(tmp_path)
    yield made
    made.close()


def test_the_owners_masks_join_the_configs_and_are_audited_and_sent(device, tmp_path):
    assert device.masks.in_force == (STREET,)
    assert [e["by"] for e in device.entries()] == ["start"]  # the config's, at first start
    device.masks.replace(AS_JSON)
    assert device.masks.in_force == THREE_MASKS and device.sent == [THREE_MASKS]
    entry = device.entries()[-1]
    assert entry["by"] == "console"
    assert [(m["label"], m["set_in"]) for m in entry["masks"]] == [
        ("street", "config"),
        ("window", "console"),
        ("gate", "console"),
    ]
    assert entry["masks"][1]["points"] == [list(p) for p in WINDOW.points]
    assert verify_audit(tmp_path / "audit.log", KEY.public).ok
    device.masks.replace(AS_JSON)  # the same set again: nothing to say or send
    assert len(device.entries()) == 2 and len(device.sent) == 1


def test_the_owners_masks_survive_a_restart_and_an_unchanged_start_says_nothing(tmp_path):
    first = Device(tmp_path)
    first.masks.replace(AS_JSON)
    first.close()
    again = Device(tmp_path)
    try:
        assert again.masks.in_force == THREE_MASKS
        assert [e["by"] for e in again.entries()] == ["start", "console"]
    finally:
        again.close()


def test_a_config_edit_is_audited_at_the_next_start_and_wins_a_name(tmp_path):
    first = Device(tmp_path)
    first.masks.replace(AS_JSON)
    first.close()
    gate = Mask("gate", ((0.6, 0.6), (0.7, 0.6), (0.7, 0.7)))
    edited = Device(tmp_path, config=(STREET, gate))
    try:
        # The config's "gate" replaces the owner's; the owner's window stays.
        assert edited.masks.in_force == (STREET, gate, WINDOW)
        assert edited.entries()[-1]["by"] == "start"
    finally:
        edited.close()


def test_a_device_without_masks_writes_no_entry(tmp_path):
    bare = Device(tmp_path, config=())
    try:
        assert bare.entries() == []
    finally:
        bare.close()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([STREET.to_json()], r"masks\[0\]\.name: 'street' is the name of a mask set in the config"),
        ([{"name": "all", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}], "whole picture"),
        (
            [
                {"name": "rest", "points": [[0, 0], [1, 0], [1, 0.75], [0, 0.75]]},
                {"name": "more", "points": [[0.3, 0.7], [1, 0.7], [1, 1], [0.3, 1]]},
            ],
            r"masks: the masks hide the whole picture",
        ),  # fmt: skip
        ([{"name": "x", "points": [[0, 0], [0.5, 0.5], [0.5, 0], [0, 0.5]]}], "crosses itself"),
    ],
)
def test_a_refused_set_names_its_key_and_changes_nothing(device, data, words):
    with pytest.raises(InvalidValueError, match=words):
        device.masks.replace(data)
    assert device.masks.in_force == (STREET,) and device.sent == []
    assert [e["by"] for e in device.entries()] == ["start"]


@given(st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and t.isprintable()))
@settings(max_examples=40, deadline=None)
def test_any_printable_name_is_kept_and_audited_as_text(tmp_path_factory, name):
    made = Device(tmp_path_factory.mktemp("d"), config=())
    try:
        made.masks.replace([{"name": name, "points": [[0, 0], [0.2, 0], [0, 0.2]]}])
        (entry,) = made.entries()
        label = entry["masks"][0]["label"]
        assert label in (name.strip(), "[redacted]")  # an email-like name is not logged
    finally:
        made.close()
