"""The console in a real browser (Debian's Chromium, driven by Playwright) against the
real daemon, broker and tus server: sign in with a code, see a published request, play
a moment from the timeline's pictures, narrow it, approve anonymously and verify what
the agency received; decline; pause. And: whatever an agency writes in a request is
shown as text. (The timeline: test_console_timeline.py; the summary, refusals, cards,
places and banners: test_console_consent.py.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pyrage
import pytest

from cloud.verify import verify_share
from foundation.times import Window, parse_time
from sync.envelope import parse_envelope
from sync.keys import load_identity, load_signing_key
from tests.fixtures.daemon import World, wait_for
from tests.integration.console_kit import (
    console_code,
    cworld,  # noqa: F401 - a fixture
    local_input,
    publish_pending,
    recent_window,
    steered_cworld,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.xdist_group("console")

CHROMIUM = "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp;"\''
SHORT_HOSTILE = "<b>1</b><script>window.__pwned=3</script>&amp;"  # case numbers: 64 ASCII
# Control and bidi characters are refused on the device (protocol.md §4), so what can
# arrive are escape sequences spelt out, entities, and template or URL syntax.
ESCAPES = "\\x1b[31mred\\u202e &lt;b&gt; %3Cscript%3E ${document.title='x'} {{7*7}}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # The device's certificate is self-made: a person compares its fingerprint once;
    # the test checks that fingerprint in test_console_api and lets the browser in.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844})
    context.set_default_timeout(30_000)
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    opened.dialogs = dialogs
    try:
        yield opened
    finally:
        context.close()


def sign_in(page: Any, world: World) -> None:
    info = console_code(world)
    page.goto(info["url"])
    page.get_by_label("Sign-in code").fill(info["code"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#pending-heading")


def open_request(page: Any, rfa_id: str) -> None:
    page.wait_for_selector(f'button[data-id="{rfa_id}"]').click()
    page.wait_for_selector("#detail", state="visible")
    page.wait_for_function(
        "id => document.querySelector('#more-fields') && "
        "document.querySelector('#more-fields').textContent.includes(id)",
        arg=rfa_id,
    )


def confirm(page: Any) -> None:
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-yes")


def test_sign_in_preview_narrow_approve_anonymously_and_the_share_verifies(
    steered_cworld: World,  # noqa: F811
    page: Any,
) -> None:
    world = steered_cworld
    window = recent_window(world, seconds=10)
    rfa_id = publish_pending(world, window)
    sign_in(page, world)
    page.wait_for_selector(f'button[data-id="{rfa_id}"]')
    assert "2026-004512" in page.text_content("#pending-list")
    open_request(page, rfa_id)
    assert page.locator("#area circle.area").count() == 1
    assert "m from its centre" in page.text_content("#area-caption")

    # the timeline's pictures: thumbnails across the window, real JPEGs decoded by the
    # browser (tests/integration/test_console_timeline.py tests the rest of it)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.tl-thumb img')];"
        " return imgs.length > 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    buttons = page.locator(".tl-thumb")
    times = [parse_time(buttons.nth(i).get_attribute("data-at")) for i in range(buttons.count())]
    assert times == sorted(times) and all(window.contains(t) for t in times)

    # go along the pictures with the keyboard, then play from one
    buttons.nth(0).focus()
    page.keyboard.press("Tab")
    chosen = buttons.nth(buttons.count() // 2)
    chosen.click()
    page.wait_for_function(
        "() => { const v = document.querySelector('.tl-video');"
        " return v.readyState >= 2 && v.currentTime > 0 && v.videoWidth > 0; }"
    )
    assert page.eval_on_selector(".tl-video", "v => v.videoWidth") == 320

    # narrow: type a start and end inside the window, in local time
    narrow = Window(window.start_ms + 2000, window.start_ms + 6000)
    page.fill("#start-time", local_input(narrow.start_ms))
    page.dispatch_event("#start-time", "change")
    page.fill("#end-time", local_input(narrow.end_ms))
    page.dispatch_event("#end-time", "change")
    page.wait_for_function(
        "() => document.querySelector('#summary').textContent.includes('4 s, part of the window')"
    )
    summary = page.text_content("#summary")
    assert "nothing: anonymous" in summary and "Jane Doe" not in summary
    frames = int(page.text_content("#summary dd:nth-of-type(2)").split(" frames")[0])
    assert 45 <= frames <= 75  # 4 s at 15 fps, give or take the edges
    assert "no name" in page.text_content("#learns")
    page.check("input[value=named]")
    page.wait_for_function(
        "() => document.querySelector('#summary').textContent.includes('Jane Doe')"
    )
    page.check("input[value=anonymous]")
    page.wait_for_function(
        "() => document.querySelector('#summary').textContent.includes('nothing: anonymous')"
    )

    # approve, with a confirmation step; the confirmation stays
    page.click("#approve")
    assert "anonymously" in page.text_content("#confirm-text")
    confirm(page)
    page.wait_for_selector("#notice", state="visible")
    assert "Approved" in page.text_content("#notice")
    # an anonymous share waits for its drawn moment (protocol.md §6.2), and says when
    waiting = world.wait_share(rfa_id, "queued", timeout=30)
    page.reload()
    assert "Approved" in page.text_content("#notice")  # kept across a reload
    shown_start = page.wait_for_selector(f'#shares-list li[data-id="{rfa_id}"] .state-waiting')
    local_start = page.evaluate(
        "t => new Date(t).toLocaleTimeString([], {hour: 'numeric', minute: '2-digit'})",
        waiting["starts_at"],
    )
    shown = shown_start.text_content() or ""  # the day in front when it is another day
    assert "Waiting to start at " in shown and local_start in shown.split("Waiting to start at ")[1]
    world.release_waiting_share(rfa_id)  # tests/integration/test_anonymous_delay.py
    share = world.wait_share(rfa_id)
    assert share["state"] == "done"
    manifest = world.uploads.upload_of("manifest")
    clip = world.uploads.upload_of("clip")
    identity = load_identity(world.agency_dir / "agency-age.txt")
    report = verify_share(
        manifest.path,
        clip.path,
        identity=identity,
        agency_keys=[load_signing_key(world.agency_dir / "agency-signing.pem").public],
        owner_keys=[world.owner.signing_key().public],
    )
    assert report.ok, report.render()
    assert report.anonymous is True and report.window_approved == narrow
    assert report.frames == frames, (
        report.frames,
        frames,
        report.first_frame_ms,
        report.last_frame_ms,
    )
    doc = json.loads(
        parse_envelope(pyrage.decrypt(manifest.path.read_bytes(), [identity])).payload_text
    )
    assert doc["consent"]["method"] == "console" and doc["contact"] is None
    assert "device_id" not in manifest.metadata
    # the page follows the share to its receipt
    page.wait_for_function(
        "id => { const li = document.querySelector(`#shares-list li[data-id='${id}']`);"
        " return li && li.dataset.state === 'done' && li.textContent.includes('SHA-256'); }",
        arg=rfa_id,
    )
    assert share["manifest_sha256"] in page.text_content("#shares-list")
    assert page.dialogs == []


def test_decline_and_pause_from_the_browser(cworld: World, page: Any) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(cworld, window)
    sign_in(page, cworld)
    open_request(page, rfa_id)
    page.click("#deny")
    page.click("#confirm-no")  # going back changes nothing
    assert rfa_id in cworld.pending_ids()
    page.click("#deny")
    confirm(page)
    page.wait_for_function(
        "() => document.querySelector('#notice-text').textContent.includes('Declined')"
    )
    assert rfa_id not in cworld.pending_ids()
    assert cworld.share(rfa_id) is None and cworld.uploads.uploads() == []

    # pause: the banner shows, and a new request is refused by the opt-out rule
    assert page.is_hidden("#paused-banner")
    page.click("#pause")
    confirm(page)
    page.wait_for_selector("#paused-banner", state="visible")
    refused = cworld.rfa(window)
    cworld.publish(refused)
    page.click("#audit-load")

    def rejected() -> bool:
        page.click("#audit-load")
        page.wait_for_function("() => !document.querySelector('#audit-list').hidden")
        return "you had paused requests" in page.text_content("#audit-list")

    wait_for(rejected, 30, "the paused request refused")
    assert refused.id not in cworld.pending_ids()
    assert "intact and signed" in page.text_content("#audit-result")
    # the pause outlives the page and the daemon's answer says so
    page.reload()
    page.wait_for_selector("#paused-banner", state="visible")
    page.click("#pause")
    confirm(page)
    page.wait_for_selector("#paused-banner", state="hidden")
    page.click("#audit-load")
    page.wait_for_function(
        "() => document.querySelector('#audit-list').textContent.includes('You resumed requests')"
    )
    assert "You declined a request in this console" in page.text_content("#audit-list")


def test_every_request_field_renders_as_text(cworld: World, page: Any) -> None:  # noqa: F811
    window = recent_window(cworld)
    rfa_id = publish_pending(
        cworld,
        window,
        agency_name=HOSTILE,
        case_number=SHORT_HOSTILE,
        investigator_name=ESCAPES,
        email=HOSTILE,
        phone=ESCAPES,
        description=HOSTILE + " " + ESCAPES,
    )
    sign_in(page, cworld)
    open_request(page, rfa_id)
    fields = page.eval_on_selector_all("#detail dd", "dds => dds.map(d => d.textContent)")
    assert HOSTILE in fields and ESCAPES in fields and SHORT_HOSTILE in fields
    assert HOSTILE + " " + ESCAPES in fields
    assert page.locator("#detail dd img, #detail dd script, #pending-list img").count() == 0
    assert HOSTILE in page.text_content("#pending-list")
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    # and the API hands the same characters back as JSON strings
    reply = page.evaluate("id => fetch('/api/requests/' + id).then(r => r.text())", rfa_id)
    assert json.loads(reply)["description"] == HOSTILE + " " + ESCAPES
