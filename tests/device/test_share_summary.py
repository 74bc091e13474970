"""What a share would send, said before approving (device/share_summary.py): the very
values a named share carries, "no contact set", the agency and upload host, the size
and coverage from the index alone, the refusal of a share that would send nothing; and
the terminal's rendering, with whatever an agency wrote escaped."""

from __future__ import annotations

import uuid
from pathlib import Path

from device.share_summary import render_summary, share_summary, upload_host
from foundation.times import Window
from recorder.buffer import Segment
from recorder.segment_file import FrameTable
from recorder.timeline import Footage, measure_footage
from tests.device.test_flow import Kit, kit  # noqa: F401 - a fixture
from tests.sync.factories import HOUR_MS, NOW_MS

CONTACT = {"name": "Ann Example", "email": "ann@example.org", "address": "1 Elm St",
           "lat": 52.1, "lon": 4.3}  # fmt: skip


def pending_rfa(kit: Kit, **changes):  # type: ignore[no-untyped-def]  # noqa: F811
    rfa_id = str(uuid.uuid4())
    assert kit.flow.handle_rfa(kit.rfa(rfa_id=rfa_id, changes=changes)).accepted
    return kit.store.request(rfa_id).rfa  # type: ignore[union-attr]


def test_a_named_share_says_the_very_values_and_an_anonymous_one_none(kit: Kit) -> None:  # noqa: F811
    rfa = pending_rfa(kit)
    footage = Footage(frames=900, first_ms=rfa.window.start_ms, last_ms=rfa.window.end_ms,
                      sample_bytes=12_345_678, covered_ms=rfa.window.duration_ms,
                      clip_bytes=12_350_000, width=1280, height=720, fps=15.0)  # fmt: skip
    named = share_summary(rfa, rfa.window, footage, share_contact=True, contact=CONTACT,
                          device_id="porch-1")  # fmt: skip
    assert named["sends"] == {**CONTACT, "device_id": "porch-1"}
    assert named["to"] == {
        "agency_name": rfa.agency.name,
        "agency_id": rfa.agency.id,
        "upload_host": upload_host(rfa.upload_url),
    }
    assert named["frames"] == 900 and named["estimate"]["video"] == 12_345_678
    # what the upload server receives: the MP4, its Content Credentials, age's overhead
    # and the manifest too
    estimate = named["estimate"]
    assert estimate["mp4"] == 12_350_000 - 12_345_678 and 2000 < estimate["manifest"] < 8000
    assert 2000 < estimate["credentials"] < 8000
    assert 12_350_000 + 16 * (12_350_000 // 65536) < named["estimated_bytes"] < 12_380_000
    assert named["whole_window"] and named["problem"] is None
    text = render_summary(named)
    assert "Ann Example" in text and "ann@example.org" in text and "1 Elm St" in text
    assert "12.4 MB" in text and "900 frames" in text and "52.1, 4.3" in text
    anonymous = share_summary(rfa, rfa.window, footage, share_contact=False, contact=CONTACT,
                              device_id="porch-1")  # fmt: skip
    assert anonymous["sends"] is None
    assert "Ann" not in render_summary(anonymous) and "anonymous" in render_summary(anonymous)
    nobody = {"name": None, "email": None, "address": None, "lat": 1.0, "lon": 2.0}
    bare = share_summary(rfa, rfa.window, footage, share_contact=True, contact=nobody,
                         device_id="porch-1")  # fmt: skip
    assert "no contact set" in render_summary(bare)


def test_nothing_to_send_is_said_and_a_part_covered_says_how_much(kit: Kit) -> None:  # noqa: F811
    rfa = pending_rfa(kit)
    none = share_summary(rfa, rfa.window, Footage(0, None, None), share_contact=False,
                         contact=None, device_id="d")  # fmt: skip
    assert none["problem"]["reason"] == "nothing_to_send"
    assert "no footage" in none["problem"]["message"]
    point = Window(rfa.window.start_ms, rfa.window.start_ms)
    zero = share_summary(rfa, point, Footage(1, point.start_ms, point.start_ms, 100, 0),
                         share_contact=False, contact=None, device_id="d")  # fmt: skip
    assert "no length" in zero["problem"]["message"]
    half = Footage(10, rfa.window.start_ms, rfa.window.start_ms + HOUR_MS, 1000, HOUR_MS)
    partly = share_summary(rfa, rfa.window, half, share_contact=False, contact=None,
                           device_id="d")  # fmt: skip
    assert partly["problem"] is None and partly["covered_seconds"] == 3600
    assert "holds 1 h of these 2 h" in render_summary(partly)


def test_an_agencys_strings_are_escaped_on_the_terminal(kit: Kit) -> None:  # noqa: F811
    rfa = pending_rfa(kit)
    summary = share_summary(rfa, rfa.window, Footage(0, None, None), share_contact=False,
                            contact=None, device_id="d")  # fmt: skip
    summary["to"]["agency_name"] = "Police\x1b[2J\x07"  # as if the device had let it in
    assert "\x1b" not in render_summary(summary) and "\x07" not in render_summary(summary)


def test_footage_is_measured_from_the_frame_tables(tmp_path: Path) -> None:
    """Frames and bytes of the export's plan; recorded time leaves out gaps over a
    second, as the timeline draws them."""
    t0 = NOW_MS
    rows = [(t0 + 100 * i, 10 * i, 10 + i, i % 10 == 0) for i in range(20)]  # 2 s
    later = [(t0 + 5000 + 100 * i, 10 * i, 7, i == 0) for i in range(10)]  # 1 s, after a gap
    tables = {1: FrameTable.build(b"", rows), 2: FrameTable.build(b"", later)}
    segments = [
        Segment(1, "a", t0, t0 + 1900, 20, 1000, True, 16, 16, 10.0),
        Segment(2, "b", t0 + 5000, t0 + 5900, 10, 1000, True, 16, 16, 10.0),
    ]
    got = measure_footage(
        Window(t0 + 500, t0 + 5500), segments, lambda ids: {i: tables[i] for i in ids}, batch=1
    )
    assert got.frames == 15 + 6 and got.first_ms == t0 + 500 and got.last_ms == t0 + 5500
    assert got.sample_bytes == sum(10 + i for i in range(5, 20)) + 6 * 7
    assert got.covered_ms == 1400 + 500  # the 3.6-s gap is not footage
    assert measure_footage(Window(t0 + 2500, t0 + 4500), segments, lambda ids: tables) == Footage(
        0, None, None
    )
