"""Privacy masks from the console, against the real daemon: the owner's masks reach the
recorder's next segment without a restart (every frame decoded: unmasked footage, then
from one segment's first frame on, masked footage only), the audit log names them with
their polygons, the snapshot the owner draws on is masked too, and every malformed or
hostile set is refused in words naming its key, changing nothing. In a real browser at
a phone's size: drawing with a finger and with the keyboard, naming, removing, a
refused outline; axe-core finds nothing on each state."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import av
import pytest

from cloud.loopback import MosquittoBroker, TusServer, free_port
from device.audit_verify import read_audit
from tests.fixtures.daemon import World, make_world, start_and_pair, wait_for
from tests.fixtures.masked import THREE_MASKS, decoded_frames, hidden
from tests.integration.console_kit import ConsoleHttp, cworld, signed_in  # noqa: F401
from tests.integration.test_console_browser import browser, sign_in  # noqa: F401
from tests.integration.test_console_consent import no_violations, phone  # noqa: F401

pytestmark = [pytest.mark.xdist_group("console"), pytest.mark.timeout(240)]

MASKS_JSON = [m.to_json() for m in THREE_MASKS]


def var(world: World) -> Path:
    return world.setup.root / "var"


def segment_starts(world: World) -> list[int]:
    return sorted({seg for seg, _t, _p in decoded_frames(var(world) / "buffer")})


def audit_masks(world: World) -> list[dict[str, Any]]:
    return [
        e.fields
        for e in read_audit(var(world) / "state" / "audit.log")
        if e.event == "privacy_masks"
    ]


def test_masks_from_the_console_reach_the_next_segment_and_the_audit_log(
    cworld: World,  # noqa: F811
) -> None:
    world = cworld
    client = signed_in(world)
    assert client.get("/api/masks").json() == {"config": [], "owner": []}
    wait_for(lambda: len(segment_starts(world)) >= 2, 60, "two segments")
    reply = client.post("/api/masks", json={"masks": MASKS_JSON})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"config": [], "owner": MASKS_JSON}
    count = len(segment_starts(world))
    wait_for(lambda: len(segment_starts(world)) >= count + 2, 60, "two more segments")

    frames = decoded_frames(var(world) / "buffer")
    flags = [hidden(picture) for _seg, _t, picture in frames]
    change = flags.index(True)
    assert not any(flags[:change]) and all(flags[change:])
    assert frames[change][0] != frames[change - 1][0], "the masks changed mid-segment"

    # The audit log answers "what was hidden, and since when" without footage.
    (entry,) = audit_masks(world)
    assert entry["by"] == "console"
    assert entry["masks"] == [
        {"label": m["name"], "set_in": "console", "points": m["points"]} for m in MASKS_JSON
    ]
    # The snapshot the owner draws on is a recorded frame: masked like the rest.
    snap = client.get("/api/masks/snapshot")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
    with av.open(io.BytesIO(snap.content)) as container:
        (frame,) = container.decode(video=0)
    assert hidden(frame.to_ndarray(format="yuvj420p"), black=0, tolerance=12)

    # Removing them all: audited, and the picture comes back in a later segment.
    assert client.post("/api/masks", json={"masks": []}).json()["owner"] == []
    assert [e["masks"] for e in audit_masks(world)][1] == []
    count = len(segment_starts(world))
    wait_for(lambda: len(segment_starts(world)) >= count + 2, 60, "two more segments")
    assert not hidden(decoded_frames(var(world) / "buffer")[-1][2])


HOSTILE = [
    (
        {"masks": [{"name": "x", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}]},
        "masks[0].points: the outline crosses itself",
    ),
    (
        {"masks": [{"name": "x", "points": [[0, 0], [1.5, 0], [0, 1]]}]},
        "masks[0].points: corner 2 [1.5, 0.0] is outside the picture",
    ),
    ({"masks": [{"name": "x", "points": [[0, 0], [1, 0]]}]}, "at least 3 corners"),
    (
        {"masks": [{"name": "x", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}]},
        "the masks hide the whole picture",
    ),
    (
        {"masks": [{"name": "x", "points": [[0, 0], ["1e999", 0], [0, 1]]}]},
        "masks[0].points: corner 2: expected [x, y]",
    ),
    (
        {"masks": [{"name": "<script>", "points": [[0, 0], [0.1, 0], [0, 0.1]]}] * 2},
        "masks[1].name: '<script>' is used twice",
    ),
    ({"masks": {"name": "x"}}, "masks: expected a list"),
    ({"masks": [], "extra": 1}, 'expected {"masks"'),
    ([1, 2], 'expected {"masks"'),
]


def test_hostile_mask_sets_are_refused_in_words_and_change_nothing(
    cworld: World,  # noqa: F811
) -> None:
    world = cworld
    client = signed_in(world)
    for body, words in HOSTILE:
        reply = client.post("/api/masks", json=body)
        assert reply.status_code == 400, (body, reply.text)
        assert words in reply.json()["error"], (body, reply.json())
    too_big = {"masks": [{"name": f"m{i}", "points": [[0.5, 0.5]] * 60} for i in range(32)]}
    assert client.post("/api/masks", json=too_big).status_code == 413
    assert client.post("/api/masks", data=b"{not json").status_code == 400
    # Without a session, or from another origin, nothing is read or changed.
    stranger = ConsoleHttp(world)
    assert stranger.get("/api/masks").status_code == 401
    assert stranger.get("/api/masks/snapshot").status_code == 401
    assert stranger.post("/api/masks", json={"masks": MASKS_JSON}).status_code == 401
    elsewhere = ConsoleHttp(world, origin="https://evil.example")
    elsewhere.session.cookies = client.session.cookies
    assert elsewhere.post("/api/masks", json={"masks": MASKS_JSON}).status_code == 403
    assert client.get("/api/masks").json()["owner"] == []
    assert audit_masks(world) == []
    assert world.daemon.status()["buffer_span"], "the daemon still records"


def test_an_owner_draws_masks_on_a_phone(cworld: World, phone: Any) -> None:  # noqa: F811
    world, page = cworld, phone
    sign_in(page, world)
    page.get_by_role("link", name="Draw privacy masks").click()
    page.wait_for_function("() => (document.querySelector('#snapshot') || {}).naturalWidth > 0")
    no_violations(page, "masks-empty")

    # A finger: three taps on the picture, then Finish, a name, Save.
    page.get_by_role("button", name="New mask").click()
    box = page.locator("#stage").bounding_box()
    for fx, fy in ((0.05, 0.6), (0.4, 0.65), (0.1, 0.95)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    no_violations(page, "masks-drawing")
    page.get_by_role("button", name="Finish this mask").click()
    page.get_by_label("Name").fill("Street")
    page.get_by_role("button", name="Save masks").click()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('Saved')")
    no_violations(page, "masks-saved")
    saved = signed_in(world).get("/api/masks").json()["owner"]
    assert [m["name"] for m in saved] == ["Street"] and len(saved[0]["points"]) == 3
    for (x, y), (fx, fy) in zip(
        saved[0]["points"], ((0.05, 0.6), (0.4, 0.65), (0.1, 0.95)), strict=True
    ):
        assert abs(x - fx) < 0.01 and abs(y - fy) < 0.01

    # The keyboard alone: the cross moves with the arrows, Enter places a corner; a
    # crossing outline is refused in words that name the mask.
    page.focus("#stage")
    for _ in range(10):
        page.keyboard.press("Shift+ArrowUp")  # the cross, away from the picture's edge
    # Corners top-left, top-right, bottom-left, bottom-right: a bow tie.
    for keys in ([], ["ArrowRight"] * 20, ["ArrowDown"] * 20 + ["ArrowLeft"] * 20,
                 ["ArrowRight"] * 20):  # fmt: skip
        for key in keys:
            page.keyboard.press(key)
        page.keyboard.press("Enter")
    page.get_by_role("button", name="Finish this mask").click()
    page.get_by_role("button", name="Save masks").click()
    alert = page.wait_for_selector("#error:not([hidden])")
    assert "The mask “Mask 2”: the outline crosses itself" in (alert.text_content() or "")
    no_violations(page, "masks-refused")
    page.get_by_role("button", name="OK").click()
    page.get_by_role("button", name="Remove “Mask 2”").click()
    page.get_by_role("button", name="Save masks").click()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('Saved')")
    assert [m["name"] for m in signed_in(world).get("/api/masks").json()["owner"]] == ["Street"]
    page.reload()
    page.wait_for_selector("#name-0")
    assert page.input_value("#name-0") == "Street"
    assert [e["by"] for e in audit_masks(world)] == ["console"]
    assert json.dumps(audit_masks(world)[0]["masks"][0]["label"]) == '"Street"'


def test_the_configs_masks_hold_from_the_first_frame_and_the_console_cannot_lift_them(
    tmp_path: Path, mosquitto: MosquittoBroker, tus_server: TusServer
) -> None:
    street = THREE_MASKS[0]
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        extra={
            "console": {"listen": f"127.0.0.1:{free_port()}"},
            "camera": {"masks": [street.to_json()]},
        },
    )
    start_and_pair(world)
    try:
        wait_for(lambda: len(segment_starts(world)) >= 2, 60, "two segments")
        assert all(hidden(p, (street,)) for _s, _t, p in decoded_frames(var(world) / "buffer"))
        (entry,) = audit_masks(world)
        assert entry == {
            "by": "start",
            "masks": [
                {"label": "street", "set_in": "config", "points": street.to_json()["points"]}
            ],
        }
        client = signed_in(world)
        assert client.get("/api/masks").json() == {"config": [street.to_json()], "owner": []}
        # The owner's list never held the config's masks: sending none leaves them on.
        reply = client.post("/api/masks", json={"masks": [street.to_json()]})
        assert reply.status_code == 400
        assert "masks[0].name: 'street' is the name of a mask set in the config" in reply.text
        window = THREE_MASKS[1].to_json()
        assert client.post("/api/masks", json={"masks": [window]}).json() == {
            "config": [street.to_json()],
            "owner": [window],
        }
        assert [m["set_in"] for m in audit_masks(world)[-1]["masks"]] == ["config", "console"]
    finally:
        world.daemon.stop()
