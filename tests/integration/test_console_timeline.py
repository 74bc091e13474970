"""The timeline in a real browser (Debian's Chromium, driven by Playwright, at a phone's
and a desktop's size) against the real daemon: what the page shows is read back from the
page itself.

- A narrowed part that crosses segment boundaries plays exactly its frames: every
  frame the video element displays is grabbed through a canvas
  (requestVideoFrameCallback) and its capture time read from the synthetic camera's
  stamp (protocol.md §8, foundation/wire.py's read_capture_ms, in Python); and every
  HLS piece the page fetched is decoded with PyAV: exactly the part's frames, none
  outside.
- A 12-hour window holding a few minutes of footage: the bar's footage matches the
  index, and every covered minute can be reached and played.
- axe-core finds nothing on the timeline's states.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from foundation.times import Window, parse_time
from foundation.wire import STAMP_BLOCK, read_capture_ms
from recorder.buffer import RollingBuffer
from tests.fixtures.daemon import World, wait_for
from tests.fixtures.footage import decode_stamps
from tests.integration.console_kit import (
    cworld,  # noqa: F401 - a fixture
    local_input,
    publish_pending,
    recent_window,
)
from tests.integration.test_console_browser import browser, sign_in  # noqa: F401

pytestmark = [pytest.mark.xdist_group("console"), pytest.mark.timeout(180)]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}
SHOTS = os.environ.get("DOORBELL_SHOTS")  # a folder: save each step's screenshot there
STAMP_ROWS = 3 * STAMP_BLOCK  # enough rows of blocks for 48 bits at 320 px wide

# Grabs every frame the video element presents: the top rows of the picture, as grey
# levels, with the frame's media time. Run in the page (Playwright, not a page script).
GRAB = """rows => {
  const v = document.querySelector('.tl-video');
  const c = document.createElement('canvas');
  const g = c.getContext('2d', { willReadFrequently: true });
  window.__grabs = [];
  const grab = (now, meta) => {
    c.width = v.videoWidth; c.height = rows;
    g.drawImage(v, 0, 0);
    const rgba = g.getImageData(0, 0, c.width, rows).data;
    const grey = new Uint8Array(c.width * rows);
    for (let i = 0; i < grey.length; i++) {
      grey[i] = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
    }
    let text = '';
    for (let i = 0; i < grey.length; i += 4096) {
      text += String.fromCharCode(...grey.subarray(i, i + 4096));
    }
    window.__grabs.push({ media: meta.mediaTime, width: c.width, data: btoa(text) });
    v.requestVideoFrameCallback(grab);
  };
  v.requestVideoFrameCallback(grab);
}"""


@pytest.fixture(params=list(SIZES))
def page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(ignore_https_errors=True, viewport=SIZES[request.param])
    context.set_default_timeout(30_000)
    opened = context.new_page()
    opened.size_name = request.param
    opened.fetched = {}

    def keep(response: Any) -> None:
        if "/video/" in response.url and response.status == 200:
            opened.fetched[response.url] = response.body()

    opened.on("response", keep)
    try:
        yield opened
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{SHOTS}/{page.size_name}-{name}.png", full_page=True)


def open_timeline(page: Any, world: World, rfa_id: str) -> None:
    sign_in(page, world)
    page.wait_for_selector(f'button[data-id="{rfa_id}"]').click()
    page.wait_for_selector('#timeline[data-ready="true"]')
    page.wait_for_function("() => document.querySelectorAll('.tl-thumb img').length > 0")


def index_runs(world: World, window: Window) -> tuple[list[int], list[list[int]]]:
    """The frames the buffer holds inside `window` and its gap-free runs, from the
    daemon's own index."""
    root = next(world.setup.root.rglob("index.sqlite3")).parent
    with RollingBuffer.open(root, reconcile=False) as buffer:
        segments = buffer.segments(window)
        tables = buffer.frame_tables([s.id for s in segments])
    times = [t for s in segments for t in tables[s.id].times if window.contains(t)]
    runs = [[times[0], times[0]]] if times else []
    for a, b in zip(times, times[1:], strict=False):
        if b - a > 1000:
            runs.append([b, b])
        runs[-1][1] = b
    return times, runs


def shown_frames(page: Any) -> list[int]:
    grabs = page.evaluate("() => window.__grabs")
    times = []
    for g in grabs:
        grey = np.frombuffer(base64.b64decode(g["data"]), np.uint8).reshape(STAMP_ROWS, g["width"])
        times.append(read_capture_ms(grey))
    return times


def played_frames(page: Any, into: Path) -> list[int]:
    """Decode what the page fetched (its playlist, init and pieces) with PyAV."""
    into.mkdir()
    playlists = [u for u in page.fetched if u.endswith("index.m3u8")]
    assert len(playlists) == 1, playlists
    prefix = playlists[0].rsplit("/", 1)[0] + "/"
    for url, body in page.fetched.items():
        if url.startswith(prefix):
            (into / url[len(prefix) :]).write_bytes(body)
    return [capture for _pts, capture in decode_stamps(into / "index.m3u8")]


def test_a_narrowed_part_plays_exactly_its_frames(
    cworld: World,  # noqa: F811
    page: Any,
    tmp_path: Path,
) -> None:
    window = recent_window(cworld, seconds=16)
    rfa_id = publish_pending(cworld, window)
    open_timeline(page, cworld, rfa_id)
    shot(page, "1-opened")
    # narrow with the keyboard: the start handle 3 steps (3 s) on, the end 3 back
    start, end = page.locator(".tl-handle").nth(0), page.locator(".tl-handle").nth(1)
    for _ in range(3):
        start.press("ArrowRight")
        end.press("ArrowLeft")
    part = Window(window.start_ms + 3000, window.end_ms - 3000)
    assert int(start.get_attribute("aria-valuenow")) == part.start_ms
    assert int(end.get_attribute("aria-valuenow")) == part.end_ms
    # the page's narrowing (what Approve would send) follows the handles
    assert page.input_value("#start-time") == local_input(part.start_ms)
    assert page.input_value("#end-time") == local_input(part.end_ms)
    page.wait_for_selector(".tl-row:nth-of-type(2) .tl-svg", state="visible")
    page.wait_for_function(
        "t => [...document.querySelectorAll('.tl-thumb')]"
        ".every(b => Date.parse(b.dataset.at) >= t)",
        arg=part.start_ms,
    )
    shot(page, "2-narrowed")
    expected, _runs = index_runs(cworld, part)
    root = next(cworld.setup.root.rglob("index.sqlite3")).parent
    with RollingBuffer.open(root, reconcile=False) as buffer:
        boundaries = [s.start_ms for s in buffer.segments(part) if part.contains(s.start_ms)]
    assert len(boundaries) >= 2, "the part crosses at least two segment boundaries"

    page.evaluate(GRAB, STAMP_ROWS)
    page.get_by_role("button", name="Play the selected part").click()
    page.wait_for_function("() => document.querySelector('.tl-video').ended", timeout=60_000)
    shot(page, "3-played")
    shown = shown_frames(page)
    assert shown, "no frame was displayed"
    assert all(part.contains(t) for t in shown), [t for t in shown if not part.contains(t)]
    assert set(shown) <= set(expected) and shown == sorted(shown)
    assert shown[0] == expected[0] and shown[-1] == expected[-1]
    assert played_frames(page, tmp_path / "fetched") == expected
    assert "Showing" in page.text_content(".tl-now")


def test_a_12_hour_window_with_a_few_minutes_of_footage(
    cworld: World,  # noqa: F811
    page: Any,
    tmp_path: Path,
) -> None:
    span = wait_for(cworld.buffer_span, 30, "footage")
    recent = recent_window(cworld, seconds=8)
    window = Window(recent.end_ms - 12 * 3_600_000, recent.end_ms)
    rfa_id = publish_pending(cworld, window)
    assert cworld.daemon.proc is not None
    memory = PeakMemory(cworld.daemon.proc.pid)
    open_timeline(page, cworld, rfa_id)
    shot(page, "4-twelve-hours")
    _times, runs = index_runs(cworld, window)
    assert runs and runs[0][0] >= span[0]
    # the bar shows footage exactly where the index has it (to the bar's resolution)
    drawn = page.eval_on_selector_all(
        ".tl-row:first-of-type .tl-footage",
        "rs => rs.map(r => [Number(r.getAttribute('x')), Number(r.getAttribute('width'))])",
    )
    at = lambda x: window.start_ms + x / 1000 * window.duration_ms  # noqa: E731
    assert len(drawn) == len(runs)
    unit = window.duration_ms / 1000  # the bar is 1000 units wide, footage at least 8
    for (x, width), (s, e) in zip(drawn, runs, strict=True):
        assert at(x) <= s + unit and at(x + width) >= e - unit
        assert width <= max(8, (e - s) / unit) + 1
    status = page.text_content(".tl-status")
    assert "12 h window" in status
    # a tap on the bar far before the footage plays from the footage's first frame
    bar = page.locator(".tl-row:first-of-type .tl-bar")
    box = bar.bounding_box()
    page.evaluate(GRAB, STAMP_ROWS)
    bar.click(position={"x": box["width"] * 0.1, "y": box["height"] / 2})
    page.wait_for_function("() => window.__grabs.length > 2")
    first_shown = shown_frames(page)[0]
    assert first_shown == runs[0][0]
    assert "No footage at" in page.text_content(".tl-now")
    # every covered minute: narrow to it (typing, as the page allows) and tap the
    # selected part's bar at its start: the first frame shown is that minute's start
    minutes = sorted({s - s % 60_000 for s, e in runs for s in range(s, e + 1, 1000)})
    for minute in minutes:
        lo = max(minute, runs[0][0])
        hi = min(minute + 59_999, window.end_ms)
        page.fill("#start-time", local_input(lo))
        page.dispatch_event("#start-time", "change")
        page.fill("#end-time", local_input(hi))
        page.dispatch_event("#end-time", "change")
        detail = page.locator(".tl-row:nth-of-type(2) .tl-bar")
        detail.wait_for(state="visible")
        page.wait_for_function(
            "t => (document.querySelector('.tl-row:nth-of-type(2) .tl-caption')||{}).textContent"
            "?.includes(t)",
            arg=page.evaluate(
                "t => new Date(t).toLocaleTimeString([], {hour: 'numeric', minute: '2-digit',"
                " second: '2-digit'})",
                lo,
            ),
        )
        # the last minute's playing stops first, so no frame of it is grabbed as this one's
        page.evaluate("() => document.querySelector('.tl-video').pause()")
        page.evaluate(GRAB, STAMP_ROWS)
        box = detail.bounding_box()
        detail.click(position={"x": 1, "y": box["height"] / 2})
        page.wait_for_function("() => window.__grabs.length > 1")
        got = shown_frames(page)[0]
        # a tap plays from the keyframe before it: at most a second earlier
        assert lo - 1000 <= got <= lo + 1000 and window.contains(got), (minute, lo, got)
    shot(page, "5-minute")
    # and a part starting mid-GOP as "Play the selected part" plays it: from its very
    # first frame, the head of its GOP decoded and re-encoded (the costliest piece)
    lo = runs[-1][0] + 1500
    assert lo + 2000 < runs[-1][1]
    page.fill("#start-time", local_input(lo))
    page.dispatch_event("#start-time", "change")
    page.fill("#end-time", local_input(lo + 2000))
    page.dispatch_event("#end-time", "change")
    page.evaluate("() => document.querySelector('.tl-video').pause()")
    page.get_by_role("button", name="Play the selected part").click()
    page.wait_for_function("() => document.querySelector('.tl-video').ended", timeout=60_000)
    grown = memory.stop()
    print(
        f"\ndaemon memory at rest {memory.rest_mib:.1f} MiB PSS; while the phone played the "
        "12-hour window (peak growth): "
        + ", ".join(f"{name} +{mib:.1f} MiB" for name, mib in grown.items())
    )
    # The goal. The console loads PyAV when it starts (preview.load_pyav says
    # why), so this is what playing costs; before, the first picture loaded it here.
    assert grown["Pss"] <= 30, f"the daemon grew by {grown['Pss']:.1f} MiB while the page played"
    # what would tell a size before approving never loads c2pa's 15 MiB library here
    maps = Path(f"/proc/{cworld.daemon.proc.pid}/maps").read_text(encoding="utf-8")
    assert "c2pa" not in maps


class PeakMemory:
    """The daemon's memory, sampled every 50 ms from /proc/PID/smaps_rollup: how far
    its resident (RSS) and proportional (PSS) sizes rose above where they stood when
    the page opened. PSS is the measure held to the goal: the daemon maps the same
    FFmpeg libraries as the recorder process beside it, and RSS counts each shared page
    whole in both, PSS a fair share in each (summed over the processes, PSS is what the
    machine holds)."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/smaps_rollup")
        self._status = Path(f"/proc/{pid}/status")
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")  # VmHWM := VmRSS
        self._base = self._read()
        self.rest_mib = self._base["Pss"] / 1024
        self._peak = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _read(self) -> dict[str, int]:
        found = {}
        for line in self._path.read_text(encoding="ascii").splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss", "Anonymous"):
                found[name] = int(rest.split()[0])  # kB
        return found

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for name, kb in self._read().items():
                self._peak[name] = max(self._peak[name], kb)

    def stop(self) -> dict[str, float]:
        """The peak growth of each measure, MiB (`HWM`: the kernel's own peak RSS,
        which no sample can miss)."""
        self._stop.set()
        self._thread.join()
        for line in self._status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                self._peak["HWM"] = int(line.split()[1])
        self._base["HWM"] = self._base["Rss"]
        return {name: (self._peak[name] - self._base[name]) / 1024 for name in self._base}


def test_axe_finds_nothing_on_the_timeline(
    cworld: World,  # noqa: F811
    page: Any,
) -> None:
    window = recent_window(cworld, seconds=10)
    rfa_id = publish_pending(cworld, window)
    open_timeline(page, cworld, rfa_id)
    page.evaluate(AXE.read_text(encoding="utf-8"))  # not a page script: the CSP stays
    assert violations(page) == []
    page.locator(".tl-handle").nth(0).press("PageUp")
    page.wait_for_selector(".tl-row:nth-of-type(2) .tl-svg", state="visible")
    assert violations(page) == []
    page.get_by_role("button", name="Play the selected part").click()
    page.wait_for_function("() => document.querySelector('.tl-video').currentTime > 0")
    assert violations(page) == []


def test_sparse_footage_zooms_and_an_empty_part_says_so(
    cworld: World,  # noqa: F811
    page: Any,
) -> None:
    """A 12-hour window holding a few minutes: "Zoom to the footage" (keyboard) shows
    the stretch that holds it across the bar, taps play there, and the handles still
    choose within the window; a part without footage says so in words instead of
    offering Play. axe-core finds nothing in either state."""
    wait_for(cworld.buffer_span, 30, "footage")
    recent = recent_window(cworld, seconds=8)
    window = Window(recent.end_ms - 12 * 3_600_000, recent.end_ms)
    rfa_id = publish_pending(cworld, window)
    open_timeline(page, cworld, rfa_id)
    page.evaluate(AXE.read_text(encoding="utf-8"))
    _times, runs = index_runs(cworld, window)
    footage = lambda: page.eval_on_selector_all(  # noqa: E731
        ".tl-row:first-of-type .tl-footage", "rs => rs.map(r => Number(r.getAttribute('width')))"
    )
    assert sum(footage()) < 50, "a sliver of the 1000-unit bar before zooming"

    zoom = page.get_by_role("button", name="Zoom to the footage")
    zoom.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('#timeline[data-zoomed="true"]')
    caption = page.text_content(".tl-row:first-of-type .tl-caption")
    assert caption.startswith("Zoomed to the footage")
    assert page.get_attribute(".tl-zoom", "aria-pressed") == "true"
    assert sum(footage()) > 400, "the footage spans a good part of the zoomed bar"
    shot(page, "6-zoomed")
    assert violations(page) == []
    # the handles still stand at the window's ends (nothing narrowed by zooming) ...
    start = page.locator(".tl-handle").nth(0)
    assert int(start.get_attribute("aria-valuenow")) == window.start_ms
    # ... and the keyboard brings the start in from the zoomed bar's edge, in its steps
    start.press("ArrowRight")
    moved = int(start.get_attribute("aria-valuenow"))
    assert window.start_ms < moved < runs[0][0], (moved, runs[0][0])
    assert page.input_value("#start-time") == local_input(moved)
    # a tap in the middle of the footage plays from there (the keyframe before it)
    bar = page.locator(".tl-row:first-of-type .tl-bar")
    box = bar.bounding_box()
    lo, hi = page.evaluate(
        "() => [...document.querySelectorAll('.tl-row:first-of-type .tl-footage')]"
        ".map(r => [Number(r.getAttribute('x')), Number(r.getAttribute('width'))])[0]"
    )
    page.evaluate(GRAB, STAMP_ROWS)
    bar.click(position={"x": box["width"] * (lo + hi / 2) / 1000, "y": box["height"] / 2})
    page.wait_for_function("() => window.__grabs.length > 2")
    got = shown_frames(page)[0]
    assert runs[0][0] <= got <= runs[-1][1], (got, runs)
    assert "No footage at" not in page.text_content(".tl-now")

    # a part before the footage: the page says nothing was recorded there, no Play
    page.fill("#start-time", local_input(window.start_ms + 60_000))
    page.dispatch_event("#start-time", "change")
    page.fill("#end-time", local_input(window.start_ms + 120_000))
    page.dispatch_event("#end-time", "change")
    page.wait_for_selector(".tl-part-note", state="visible")
    assert "Nothing was recorded in the selected part" in page.text_content(".tl-part-note")
    assert page.get_by_role("button", name="Play the selected part").is_hidden()
    shot(page, "7-empty-part")
    assert violations(page) == []
    # and back to the whole window
    page.get_by_role("button", name="Show the whole window").click()
    page.wait_for_selector('#timeline[data-zoomed="false"]')
    assert page.text_content(".tl-row:first-of-type .tl-caption").startswith("The whole")


def violations(page: Any) -> list[Any]:
    """axe-core's findings on the timeline (axe loaded into the page first)."""
    found = page.evaluate(
        "() => axe.run(document.querySelector('#timeline'))"
        ".then(r => r.violations.map(v => [v.id, v.nodes.map(n => n.html)]))"
    )
    return list(found)


def test_a_touch_beside_a_handle_plays_from_there(
    cworld: World,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    """On a phone a touch is a fuzzy target, and Chromium gives it to the nearest thing
    that takes touches: a handle's line across the bar took the touches meant for the
    bar's first and last moments (found by bench.console_tap). A touch 10 px beside
    each handle's line plays from there (without the fix, the handle takes it)."""
    context = browser.new_context(
        ignore_https_errors=True, viewport=SIZES["phone"], has_touch=True, is_mobile=True
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        window = recent_window(cworld, seconds=16)
        open_timeline(page, cworld, publish_pending(cworld, window))
        bar = page.locator(".tl-row:first-of-type .tl-bar")
        width, height = bar.bounding_box()["width"], bar.bounding_box()["height"]
        for x, near in ((10, window.start_ms), (width - 10, window.end_ms)):
            # a touch where the bar is once it stands still (the page may still move)
            with page.expect_request(lambda r: "/play?" in r.url, timeout=10_000) as asked:
                bar.tap(position={"x": x, "y": height / 2})
            query = parse_qs(urlsplit(asked.value.url).query)
            start = parse_time(query["start"][0])
            assert abs(start - near) <= window.duration_ms * 0.1, (start, near)
            page.wait_for_timeout(1000)  # two touches close together would be a double tap
    finally:
        context.close()
