"""Informed consent in a real browser (Debian's Chromium, driven by Playwright) against
the real daemon, at a phone's size (390x844) and a desktop's (1366x900): what the page
shows is read back from the page.

- The summary says what would be sent: the range in local time, frames, size, the
  agency and its key-bound id, the upload host, and the very name, email and address of
  a named share ("no contact set" when there is none); how much of a partly covered
  window the buffer holds.
- An approval that would send nothing is not offered (Decline is), and the API refuses
  it in words before recording anything: the request stays pending.
- A place per request: a reload (or the link) keeps the request, the narrowing and the
  named/anonymous choice.
- The confirmation stays after deciding; shares are cards with states in words; Cancel
  asks first; the audit log reads as sentences that fit a phone.
- "Can't reach your doorbell" appears while the daemon is stopped and clears itself when
  it is back; a revoked session lands on the sign-in page with a word.
- axe-core finds nothing on each of these states.

DOORBELL_SHOTS=<folder> saves a screenshot of each step (test_console_timeline's shot).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cloud.loopback import MosquittoBroker, TusServer, free_port
from foundation.times import Window, format_time
from recorder.buffer import RollingBuffer
from tests.fixtures.daemon import World, make_world, start_and_pair, wait_for
from tests.integration.console_kit import (
    console_code,
    cworld,  # noqa: F401 - a fixture
    local_input,
    publish_pending,
    recent_window,
)
from tests.integration.test_console_browser import browser, confirm, sign_in  # noqa: F401
from tests.integration.test_console_timeline import AXE, SIZES, shot

pytestmark = [pytest.mark.xdist_group("console"), pytest.mark.timeout(240)]


def sized_page(browser: Any, size: str) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(ignore_https_errors=True, viewport=SIZES[size])
    context.set_default_timeout(30_000)
    opened = context.new_page()
    opened.size_name = size
    opened.dialogs = []
    opened.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:  # noqa: F811
    yield from sized_page(browser, "phone")


@pytest.fixture
def desktop(browser: Any) -> Iterator[Any]:  # noqa: F811
    yield from sized_page(browser, "desktop")


def no_violations(page: Any, step: str) -> None:
    """axe-core over the whole page (injected by Playwright, not a page script: the
    console's CSP stays as it is), and nothing wider than the screen."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "() => axe.run(document).then(r => r.violations.map(v => [v.id, v.nodes.map(n => n.html)]))"
    )
    assert found == [], (step, found)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], (step, width)
    shot(page, step)


def text(page: Any, selector: str) -> str:
    return " ".join((page.text_content(selector) or "").split())


def head_gop_bytes(world: World, part: Window) -> int:
    """The index's bytes of the GOP holding `part`'s first frame (the re-encoded head's
    source, whose re-encoded size the estimate cannot know)."""
    root = next(world.setup.root.rglob("index.sqlite3")).parent
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments(part)
        tables = buffer.frame_tables([s.id for s in segments])
    table = tables[segments[0].id]
    start = bisect.bisect_left(table.times, part.start_ms)
    end = table.key.find(1, start + 1)
    return sum(table.size[table.key.rfind(1, 0, start + 1) : end if end >= 0 else len(table)])


def summary_settled(page: Any, words: str) -> None:
    page.wait_for_function(
        "w => document.querySelector('#summary').textContent.includes(w) && "
        "!document.querySelector('#summary-status').textContent",
        arg=words,
    )


def local_clock(page: Any, t_ms: int) -> str:
    return str(
        page.evaluate(
            "t => new Date(t).toLocaleTimeString([], {hour: 'numeric', minute: '2-digit',"
            " second: '2-digit'})",
            t_ms,
        )
    )


def test_a_homeowner_decides_on_a_phone_knowing_what_goes(
    cworld: World,  # noqa: F811
    phone: Any,
) -> None:
    world, page = cworld, phone
    span = recent_window(world, seconds=8)
    start = world.buffer_span()[0]  # type: ignore[index]
    # A: partly covered (20 s before the first frame, then 6 s of footage); B: nothing
    partly = Window(start - 20_000, start + 6_000)
    a = publish_pending(world, partly)
    empty = Window(start - 3 * 3_600_000, start - 3 * 3_600_000 + 60_000)
    b = publish_pending(world, empty)
    sign_in(page, world)
    page.wait_for_selector(f'button[data-id="{a}"]')
    page.wait_for_selector(f'button[data-id="{b}"]')
    assert "No footage here" in text(page, "#pending-list")
    no_violations(page, "1-list")

    # B: the approval is not offered, the reason is in words, Decline is
    page.click(f'button[data-id="{b}"]')
    page.wait_for_selector("#problem", state="visible")
    problem = text(page, "#problem")
    assert "holds no footage" in problem and "decline" in problem
    assert page.is_disabled("#approve") and page.is_enabled("#deny")
    assert page.is_visible("#deny")
    # nothing to watch or choose: the timeline says so in words, with no player, no
    # Play, no part to choose and no Approve, only Decline
    page.wait_for_selector('#timeline[data-ready="true"]')
    assert "Nothing was recorded between" in text(page, ".tl-status")
    for hidden in (".tl-video", ".tl-actions", ".tl-row", "#choose", "#approve", "#learns"):
        assert page.is_hidden(hidden), hidden
    assert page.get_by_role("button", name="Play the selected part").is_hidden()
    no_violations(page, "2-no-footage")
    # and the device refuses it in words (a code for scripts), recording nothing
    reply = page.evaluate(
        """id => fetch('/api/requests/' + id + '/decision', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({decision: 'approve', share_contact: false})})
           .then(async r => [r.status, await r.json()])""",
        b,
    )
    assert reply[0] == 409 and reply[1]["code"] == "nothing_to_send", reply
    assert "nothing would be sent" in reply[1]["error"] and ":" not in reply[1]["error"][:20]
    assert b in world.pending_ids() and world.share(b) is None

    # A, opened by its address with a part chosen and named: a reload keeps all of it
    part = Window(start + 1000, start + 5000)
    base = page.url.split("#")[0]
    place = (
        f"{base}#/requests/{a}?start={quote(format_time(part.start_ms))}"
        f"&end={quote(format_time(part.end_ms))}&as=named"
    )
    page.goto(place)
    page.wait_for_selector("#detail", state="visible")
    summary_settled(page, "Jane Doe")
    for _ in range(2):
        assert page.input_value("#start-time") == local_input(part.start_ms)
        assert page.input_value("#end-time") == local_input(part.end_ms)
        assert page.is_checked("input[value=named]")
        summary = text(page, "#summary")
        assert local_clock(page, part.start_ms) in summary and "4 s, part of the window" in summary
        assert "Jane Doe" in summary and "jane@example.com" in summary and "1 Elm St" in summary
        assert "San Francisco Police Department (id sfpd)" in summary
        assert "uploaded to 127.0.0.1:" in summary and "Device id" in summary
        page.reload()
        page.wait_for_selector("#detail", state="visible")
        summary_settled(page, "Jane Doe")
    no_violations(page, "3-summary-named")
    # the whole window: partly covered, and the page says how much
    page.click("#whole")
    summary_settled(page, "the whole window")
    # (6 s from the first frame on, less the gaps of a frame between segments)
    assert re.search(
        r"The doorbell holds [56] s of these 26 s \(2[0-3] %\)", text(page, "#summary")
    )
    assert "start=" not in page.url  # the whole window needs no narrowing in the address
    # typing "8:06 AM"-style local times works: type the part in local time
    page.fill("#start-time", local_input(part.start_ms))
    page.dispatch_event("#start-time", "change")
    page.fill("#end-time", local_input(part.end_ms))
    page.dispatch_event("#end-time", "change")
    summary_settled(page, "4 s, part of the window")
    assert quote(format_time(part.start_ms)) in page.url
    # a time outside the window is refused in words, before asking the doorbell
    page.fill("#end-time", local_input(partly.end_ms + 60_000))
    page.dispatch_event("#end-time", "change")
    assert "never more" in text(page, "#problem") and page.is_disabled("#approve")
    page.fill("#end-time", local_input(part.end_ms))
    page.dispatch_event("#end-time", "change")
    summary_settled(page, "4 s, part of the window")
    assert page.is_hidden("#problem") and page.is_enabled("#approve")

    told = page.evaluate(
        """([id, start, end]) => fetch('/api/requests/' + id + '/summary?start=' +
             encodeURIComponent(start) + '&end=' + encodeURIComponent(end) +
             '&share_contact=true').then(r => r.json())""",
        [a, format_time(part.start_ms), format_time(part.end_ms)],
    )

    # approve named: the question repeats what goes; the confirmation stays afterwards
    page.click("#approve")
    page.wait_for_selector("#confirm[open]")
    asked = text(page, "#confirm-text")
    assert "with your name and contact" in asked and "San Francisco Police Department" in asked
    no_violations(page, "4-confirm")
    confirm(page)
    page.wait_for_selector("#notice", state="visible")
    assert page.is_hidden("#detail")
    notice = text(page, "#notice-text")
    assert notice.startswith("Approved case 2026-004512") and "being prepared" in notice
    card = f'#shares-list li[data-id="{a}"]'
    page.wait_for_selector(card)
    world.wait_share(a)
    page.wait_for_selector(card + '[data-state="done"]')
    words = text(page, card)
    assert "San Francisco Police Department" in words and "case 2026-004512" in words
    assert "Done at" in words and "the agency has it" in words
    assert re.search(r"\d+(\.\d)? (kB|MB)", words), words
    # the size told before approving is what reached the upload server: within age's
    # random header stanzas and the re-encoded head's GOP (tests/sync/test_share.py)
    uploads = [u for u in world.uploads.uploads() if u.metadata.get("rfa_id") == a]
    assert len(uploads) == 2 and all(u.complete for u in uploads)
    uploaded = sum(u.offset for u in uploads)
    assert abs(told["estimated_bytes"] - uploaded) <= 2 * 180 + head_gop_bytes(world, part), (
        told["estimate"],
        uploaded,
    )
    assert "%" not in words and "bytes" not in words  # no raw counts on a finished card
    assert "Approved case" in text(page, "#notice-text")  # still there
    no_violations(page, "5-done")

    # an anonymous share waits for its drawn moment: the card says when; Cancel asks
    c = publish_pending(world, span, case_number="2026-004513")  # two per case at most
    page.click(f'button[data-id="{c}"]')
    page.wait_for_selector("#detail", state="visible")
    summary_settled(page, "nothing: anonymous")
    page.click("#approve")
    confirm(page)
    page.wait_for_selector("#notice", state="visible")
    waiting = world.wait_share(c, "queued", timeout=30)
    card = f'#shares-list li[data-id="{c}"]'
    page.wait_for_function(
        "sel => (document.querySelector(sel) || {textContent: ''}).textContent"
        ".includes('Waiting to start at')",
        arg=card,
    )
    starts = page.evaluate(
        "t => new Date(t).toLocaleTimeString([], {hour: 'numeric', minute: '2-digit'})",
        waiting["starts_at"],
    )
    # the time of day, with the day in front when the moment falls on another day (a run
    # near midnight): the page says "Waiting to start at Tue 8 Dec, 12:19 AM" then
    shown = text(page, card)
    assert "Waiting to start at " in shown and starts in shown.split("Waiting to start at ")[1]
    page.click(card + " button:has-text('Cancel')")
    page.wait_for_selector("#confirm[open]")
    assert "cannot be undone" in text(page, "#confirm-text")
    no_violations(page, "6-cancel-asks")
    page.click("#confirm-no")  # "Keep it": nothing changes
    assert world.share(c)["state"] == "queued"  # type: ignore[index]
    page.click(card + " button:has-text('Cancel')")
    confirm(page)
    page.wait_for_selector(card + '[data-state="cancelled"]')
    assert "Cancelled" in text(page, card)

    # declining B: the decision is spent on a decline, nothing sent
    page.click(f'button[data-id="{b}"]')
    page.wait_for_selector("#detail", state="visible")
    page.click("#deny")
    confirm(page)
    page.wait_for_function(
        "() => document.querySelector('#notice-text').textContent.startsWith('Declined')"
    )
    assert b not in world.pending_ids() and world.share(b) is None
    # a link to a request already decided: back to the list, with a word
    page.goto(place)
    page.wait_for_function(
        "() => document.querySelector('#notice-text').textContent.includes('no longer waiting')"
    )
    assert page.is_hidden("#detail") and page.is_visible("#list-view")

    # the audit log: sentences in local time, the raw fields behind a toggle
    page.click("#audit-load")
    page.wait_for_selector("#audit-list", state="visible")
    log = text(page, "#audit-list")
    assert "A request arrived from sfpd for case 2026-004512" in log
    assert "You approved sending" in log and "with your name and contact" in log
    assert "You declined a request in this console" in log
    assert "A share was delivered: the agency has it." in log
    assert '"event"' not in page.inner_text("#audit-list")  # raw JSON is folded away
    page.click("#audit-list li:first-child summary")
    assert '"event"' in page.inner_text("#audit-list li:first-child")
    no_violations(page, "7-audit")
    assert page.dialogs == []


def test_cant_reach_clears_itself_and_a_revoked_session_says_so(
    cworld: World,  # noqa: F811
    phone: Any,
) -> None:
    world, page = cworld, phone
    window = recent_window(world, seconds=6)
    rfa_id = publish_pending(world, window)
    sign_in(page, world)
    page.click(f'button[data-id="{rfa_id}"]')
    page.wait_for_selector("#detail", state="visible")
    summary_settled(page, "nothing: anonymous")
    where = page.url
    world.daemon.stop()
    page.wait_for_selector("#offline", state="visible", timeout=20_000)
    assert "Can't reach your doorbell" in text(page, "#offline")
    assert "Failed to fetch" not in page.inner_text("body")
    no_violations(page, "8-offline")
    world.daemon.start()
    page.wait_for_selector("#offline", state="hidden", timeout=30_000)
    assert page.url == where and page.is_visible("#detail")

    # the session is revoked on the device: the next poll lands on the sign-in page,
    # which says why; signing in again comes back to the same place
    sessions = world.daemon.ctl("console-sessions", "--json").stdout
    for session in json.loads(sessions):
        world.daemon.ctl("console-sessions", "--revoke", session["id"])
    page.wait_for_selector("text=You were signed out", timeout=20_000)
    assert page.is_visible("#code")
    no_violations(page, "9-signed-out")
    page.get_by_label("Sign-in code").fill(console_code(world)["code"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#detail", state="visible")
    assert f"#/requests/{rfa_id}" in page.url


def test_no_contact_set_is_said_on_a_desktop(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    tus_server: TusServer,
    desktop: Any,
) -> None:
    """A device with no contact configured: a named share's summary says so, and what
    does go (the position and the device id)."""
    port = free_port()
    world = make_world(
        tmp_path,
        mosquitto,
        tus_server,
        extra={"console": {"listen": f"127.0.0.1:{port}"}, "device": {"contact": {}}},
    )
    try:
        start_and_pair(world)
        wait_for(world.buffer_span, 30, "footage in the buffer")
        rfa_id = publish_pending(world, recent_window(world, seconds=4))
        sign_in(desktop, world)
        desktop.click(f'button[data-id="{rfa_id}"]')
        desktop.wait_for_selector("#detail", state="visible")
        desktop.check("input[value=named]")
        summary_settled(desktop, "no contact set")
        summary = text(desktop, "#summary")
        assert "Camera position" in summary and "Device id" in summary
        assert "Your name" not in summary and "Your email" not in summary
        assert "as=named" in desktop.url
        no_violations(desktop, "summary-no-contact")
        desktop.click("a[href='#/']")
        desktop.wait_for_selector("#list-view", state="visible")
        no_violations(desktop, "list")
    finally:
        world.daemon.stop()


def test_the_web_app_can_be_installed(cworld: World, phone: Any) -> None:  # noqa: F811
    """The manifest and its icons are served with their types, before signing in too,
    and the CSP lets the browser read the manifest."""
    sign_in(phone, cworld)
    base = phone.url.split("#")[0].rstrip("/")
    manifest = phone.request.get(base + "/static/manifest.webmanifest")
    assert manifest.status == 200
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    doc = manifest.json()
    assert doc["display"] == "standalone" and doc["start_url"] == "/"
    for icon in doc["icons"]:
        got = phone.request.get(base + icon["src"])
        assert got.status == 200 and got.headers["content-type"].startswith(icon["type"])
    assert "manifest-src 'self'" in manifest.headers["content-security-policy"]
    # the browser itself fetched and parsed it (a CSP refusal would leave no response)
    cdp = phone.context.new_cdp_session(phone)
    got = cdp.send("Page.getAppManifest")
    assert not got["errors"] and '"short_name": "Doorbell"' in got["data"], got
