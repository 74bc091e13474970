// The timeline of a request's window: where there is footage and where not, how much
// happens (the activity strip), thumbnails of the chosen part, two handles that narrow
// what is shared, and a player that plays from any moment, continuously across the
// recorder's segments. The server sends only frames inside the request's window
// (device/console/video.py); the player is hls.js (static/vendor/), or Safari's own HLS.
//
// The page hooks in with one call: DoorbellTimeline.open(container, {id, start, end,
// onRange}) returns {setRange(start, end)}. Times are epoch milliseconds; the page shows
// them in the browser's local time. Nothing from a request is put on the page as HTML.
"use strict";

// ---- geometry: pure functions of times, ranges and widths ------------------------------
// Here, in the page, because they depend on the viewer's time zone and screen; what maps
// the player's clock to capture time (the runs) comes from the server (recorder/timeline.py).
const TimelineGeometry = (() => {
  const MINUTE = 60000, HOUR = 3600000;
  const NICE = [1000, 5000, 15000, 30000, MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR];
  function fraction(t, range) {
    const span = range.end - range.start;
    return span > 0 ? Math.min(1, Math.max(0, (t - range.start) / span)) : 0;
  }
  function timeAt(f, range) {
    return Math.round(range.start + Math.min(1, Math.max(0, f)) * (range.end - range.start));
  }
  // Tick times on round local minutes/hours, at most `most` of them inside the range.
  function ticks(range, most) {
    const span = range.end - range.start;
    const step = NICE.find((s) => span / s <= most) || NICE[NICE.length - 1];
    const offset = new Date(range.start).getTimezoneOffset() * MINUTE;
    let t = Math.ceil((range.start - offset) / step) * step + offset;
    const out = [];
    for (; t <= range.end; t += step) out.push(t);
    return out;
  }
  // The keyboard step of a handle: a round step giving about 300 steps across the range.
  function step(range) {
    const span = range.end - range.start;
    return [...NICE].reverse().find((s) => span / s >= 300) || 1000;
  }
  function inside(t, covered) { return covered.some(([s, e]) => s <= t && t <= e); }
  // The first moment with footage at or after t (null when none follows).
  function nextCovered(t, covered) {
    for (const [s, e] of covered) if (e >= t) return Math.max(s, t);
    return null;
  }
  // Player clock (ms) to capture time, with runs [[captureStart, captureEnd, mediaMs], ...].
  function captureAt(runs, mediaMs) {
    let run = runs[0];
    for (const r of runs) if (r[2] <= mediaMs) run = r;
    return run ? Math.min(run[1], run[0] + Math.max(0, mediaMs - run[2])) : null;
  }
  function mediaAt(runs, capture) {
    let run = runs[0];
    for (const r of runs) if (r[0] <= capture) run = r;
    return run ? run[2] + Math.max(0, capture - run[0]) : 0;
  }
  return { fraction, timeAt, ticks, step, inside, nextCovered, captureAt, mediaAt };
})();

const DoorbellTimeline = (() => {
  const G = TimelineGeometry;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }
  const clock = (t, seconds) => new Date(t).toLocaleTimeString([], seconds
    ? { hour: "numeric", minute: "2-digit", second: "2-digit" }
    : { hour: "numeric", minute: "2-digit" });
  function span(ms) {
    const s = Math.round(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h) return h + " h" + (m ? " " + m + " min" : "");
    if (m) return m + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    return (s % 60) + " s";
  }
  const iso = (t) => new Date(t).toISOString().replace(".000Z", "Z");
  async function getJson(path) {
    const response = await fetch(path);
    if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function open(container, options) {
    const base = "/api/requests/" + encodeURIComponent(options.id);
    const whole = { start: options.start, end: options.end };
    const t = { sel: { start: whole.start, end: whole.end }, covered: [], runs: [], hls: null,
      zoomed: false };
    container.replaceChildren();
    container.classList.add("tl");

    const status = el("p", "Loading the timeline…", { class: "tl-status", role: "status" });
    const legend = el("p", null, { class: "tl-legend" });
    legend.append(el("span", null, { class: "tl-key tl-key-footage", "aria-hidden": "true" }), " footage  ",
      el("span", null, { class: "tl-key tl-key-gap", "aria-hidden": "true" }), " no footage  ",
      el("span", null, { class: "tl-key tl-key-activity", "aria-hidden": "true" }), " taller: more movement");
    const wholeLabel = "The whole requested window: " + clock(whole.start) + " to " +
      clock(whole.end) + (new Date(whole.start).toDateString() === new Date(whole.end).toDateString()
        ? "" : " the next day");
    const overview = makeBar(wholeLabel, true);
    const detail = makeBar("The selected part", false);
    // A few minutes of footage in 12 hours is a sliver on a phone: the overview can show
    // just the stretch that holds footage (the handles still choose within the window).
    const zoom = el("button", "Zoom to the footage", { type: "button", class: "secondary tl-zoom",
      "aria-pressed": "false" });
    zoom.hidden = true;
    const actions = el("div", null, { class: "tl-actions" });
    const playRange = el("button", "Play the selected part", { type: "button" });
    actions.append(playRange, zoom);
    const partNote = el("p", null, { class: "tl-part-note", role: "status" });
    partNote.hidden = true;
    const video = el("video", null, { controls: "", playsinline: "", preload: "auto",
      class: "tl-video", "aria-label": "Footage of the request's window" });
    const now = el("p", "Tap the bar, a picture or Play to watch.", { class: "tl-now", role: "status" });
    const thumbsHeading = el("h4", "Pictures from the selected part", { class: "tl-thumbs-heading" });
    const thumbs = el("ul", null, { class: "tl-thumbs" });
    container.append(status, legend, overview.root, detail.root, actions, partNote, video, now,
      thumbsHeading, thumbs);
    detail.root.hidden = true;

    function makeBar(label, withHandles) {
      const root = el("div", null, { class: "tl-row" });
      const caption = el("p", label, { class: "tl-caption" });
      const bar = el("div", null, { class: "tl-bar" });
      const drawing = svg("svg", { class: "tl-svg", viewBox: "0 0 1000 60", preserveAspectRatio: "none",
        role: "img", "aria-label": label });
      bar.append(drawing);
      const axis = el("div", null, { class: "tl-axis", "aria-hidden": "true" });
      root.append(caption, bar, axis);
      const row = { root, caption, bar, drawing, axis, range: whole, activity: [], covered: [] };
      bar.addEventListener("click", (event) => {
        if (event.target.closest(".tl-handle")) return;
        const box = bar.getBoundingClientRect();
        tap(G.timeAt((event.clientX - box.left) / box.width, row.range));
      });
      if (withHandles) {
        row.handles = [handle(row, 0, "Start of the part to share"), handle(row, 1, "End of the part to share")];
        bar.append(...row.handles);
      }
      return row;
    }

    function handle(row, which, label) {
      const node = el("button", null, { type: "button", class: "tl-handle", role: "slider",
        "aria-label": label, "aria-valuemin": String(whole.start), "aria-valuemax": String(whole.end) });
      const key = which ? "end" : "start";
      const move = (value) => {
        const v = Math.min(whole.end, Math.max(whole.start, value));
        const next = Object.assign({}, t.sel, { [key]: v });
        if (next.start > next.end) return;
        setSel(next, true);
      };
      node.addEventListener("keydown", (event) => {
        const s = G.step(row.range);
        const by = { ArrowLeft: -s, ArrowDown: -s, ArrowRight: s, ArrowUp: s,
          PageDown: -10 * s, PageUp: 10 * s }[event.key];
        // zoomed, a handle waiting outside the shown stretch steps in from its edge
        const from = Math.min(row.range.end, Math.max(row.range.start, t.sel[key]));
        if (by !== undefined) move(from + by);
        else if (event.key === "Home") move(which ? t.sel.start : whole.start);
        else if (event.key === "End") move(which ? whole.end : t.sel.end);
        else return;
        event.preventDefault();
      });
      node.addEventListener("pointerdown", (event) => {
        node.setPointerCapture(event.pointerId);
        node.focus();
        event.preventDefault();
      });
      node.addEventListener("pointermove", (event) => {
        if (!node.hasPointerCapture(event.pointerId)) return;
        const box = row.bar.getBoundingClientRect();
        move(G.timeAt((event.clientX - box.left) / box.width, row.range));
      });
      node.addEventListener("click", (event) => event.stopPropagation());
      return node;
    }

    let redraw = null;
    function setSel(sel, fromHandles) {
      t.sel = { start: sel.start, end: sel.end };
      placeHandles();
      drawBar(overview);
      if (fromHandles && options.onRange) options.onRange(t.sel.start, t.sel.end);
      clearTimeout(redraw);
      redraw = setTimeout(loadPart, fromHandles ? 400 : 0);
    }

    // A handle outside a zoomed overview waits at its edge.
    function placeHandles() {
      for (const [n, h] of overview.handles.entries()) {
        const v = n ? t.sel.end : t.sel.start;
        h.style.left = (100 * G.fraction(v, overview.range)) + "%";
        h.classList.toggle("tl-handle-off", v < overview.range.start || v > overview.range.end);
        h.setAttribute("aria-valuenow", String(v));
        h.setAttribute("aria-valuetext", clock(v, true));
      }
    }

    // The stretch of the window that holds footage, with a margin; null when the
    // footage already spans half of the window or more (nothing to zoom to).
    function footageStretch() {
      if (!t.covered.length) return null;
      const first = t.covered[0][0], last = t.covered[t.covered.length - 1][1];
      const margin = Math.max(5000, (last - first) / 10);
      const stretch = { start: Math.max(whole.start, first - margin), end: Math.min(whole.end, last + margin) };
      return stretch.end - stretch.start < (whole.end - whole.start) / 2 ? stretch : null;
    }

    async function setZoom(on) {
      const stretch = on ? footageStretch() : null;
      t.zoomed = Boolean(stretch);
      zoom.textContent = t.zoomed ? "Show the whole window" : "Zoom to the footage";
      zoom.setAttribute("aria-pressed", String(t.zoomed));
      overview.caption.textContent = t.zoomed
        ? "Zoomed to the footage: " + clock(stretch.start, true) + " to " + clock(stretch.end, true) +
          " (the window is " + clock(whole.start) + " to " + clock(whole.end) + ")"
        : wholeLabel;
      try {
        await loadRow(overview, stretch || whole);
      } catch (err) {
        status.textContent = "Could not load the timeline: " + err.message;
      }
      placeHandles();
      container.dataset.zoomed = String(t.zoomed);
    }
    zoom.addEventListener("click", () => setZoom(!t.zoomed));

    function drawBar(row) {
      const g = row.drawing;
      g.replaceChildren();
      const x = (v) => 1000 * G.fraction(v, row.range);
      g.append(svg("rect", { x: 0, y: 0, width: 1000, height: 60, class: "tl-gap" }));
      // Footage is drawn at least 8 units wide (a few pixels), so that a few seconds
      // in a 12-hour window can still be seen and tapped.
      for (const [s, e] of row.covered) {
        const w = Math.max(8, x(e) - x(s));
        g.append(svg("rect", { x: Math.min(x(s), 1000 - w), y: 0, width: w, height: 60, class: "tl-footage" }));
      }
      const top = Math.max(1, ...row.activity.filter((a) => a !== null));
      const w = 1000 / Math.max(1, row.activity.length);
      row.activity.forEach((a, n) => {
        if (a === null) return;
        const h = Math.max(3, 54 * a / top), width = Math.max(8, w - 0.5);
        g.append(svg("rect", { x: Math.min(n * w, 1000 - width), y: 60 - h, width, height: h, class: "tl-activity" }));
      });
      if (row === overview && (t.sel.start > whole.start || t.sel.end < whole.end)) {
        g.append(svg("rect", { x: 0, y: 0, width: x(t.sel.start), height: 60, class: "tl-outside" }));
        g.append(svg("rect", { x: x(t.sel.end), y: 0, width: 1000 - x(t.sel.end), height: 60, class: "tl-outside" }));
      }
      row.playhead = svg("rect", { x: -10, y: 0, width: 3, height: 60, class: "tl-playhead" });
      g.append(row.playhead);
      row.axis.replaceChildren();
      const width = row.bar.getBoundingClientRect().width || 320;
      const marks = G.ticks(row.range, Math.max(2, Math.floor(width / 90)));
      const seconds = marks.length > 1 && marks[1] - marks[0] < 60000;
      for (const tick of marks) {
        const f = G.fraction(tick, row.range);
        if (f < 0.07 || f > 0.93) continue;  // a label there would be cut by the edge
        const label = el("span", clock(tick, seconds), { class: "tl-tick" });
        label.style.left = (100 * G.fraction(tick, row.range)) + "%";
        row.axis.append(label);
      }
    }

    async function loadRow(row, range) {
      const width = row.bar.getBoundingClientRect().width || 320;
      const bins = Math.max(20, Math.min(400, Math.round(width / 3)));
      const data = await getJson(base + "/timeline?start=" + encodeURIComponent(iso(range.start)) +
        "&end=" + encodeURIComponent(iso(range.end)) + "&bins=" + bins);
      Object.assign(row, { range, activity: data.activity, covered: data.covered_ms });
      drawBar(row);
      const gaps = data.covered_ms.length ? data.covered_ms.map(([s, e]) => clock(s) + " to " + clock(e)).join(", ") : "none";
      row.drawing.setAttribute("aria-label", row.caption.textContent + ", " + clock(range.start) + " to " +
        clock(range.end) + ": footage " + gaps + ".");
      return data;
    }

    async function loadPart() {
      if (t.empty) return;
      const narrowed = t.sel.start > whole.start || t.sel.end < whole.end;
      // A part without footage has nothing to play: say so instead of offering Play.
      const holds = t.covered.some(([s, e]) => s <= t.sel.end && e >= t.sel.start);
      playRange.hidden = !holds;
      partNote.hidden = holds;
      partNote.textContent = holds ? "" : "Nothing was recorded in the selected part (" +
        clock(t.sel.start, true) + " to " + clock(t.sel.end, true) + "): there is nothing to play, " +
        "and nothing would be sent. Move the handles onto the footage (shaded on the bar), or decline.";
      video.hidden = !holds && !t.runs.length;
      detail.root.hidden = !narrowed;
      detail.caption.textContent = "Selected part: " + clock(t.sel.start, true) + " to " +
        clock(t.sel.end, true) + " (" + span(t.sel.end - t.sel.start) + ")";
      thumbsHeading.textContent = narrowed ? "Pictures from the selected part" : "Pictures from the window";
      if (narrowed) await loadRow(detail, t.sel);
      await loadThumbs();
    }

    async function loadThumbs() {
      const width = container.getBoundingClientRect().width || 320;
      const count = Math.max(4, Math.min(24, 2 * Math.floor(width / 96)));
      const data = await getJson(base + "/thumbnails?start=" + encodeURIComponent(iso(t.sel.start)) +
        "&end=" + encodeURIComponent(iso(t.sel.end)) + "&count=" + count);
      thumbs.replaceChildren();
      for (const thumb of data.thumbnails) {
        const at = Date.parse(thumb.at);
        const item = el("li");
        const button = el("button", null, { type: "button", class: "tl-thumb", "data-at": thumb.at,
          "aria-label": "Play from " + clock(at, true) });
        button.append(el("img", null, { src: thumb.src, alt: "", width: "160", height: "90" }),
          el("span", clock(at, true), { "aria-hidden": "true" }));
        button.addEventListener("click", () => play(at, t.sel.end, "", true));
        item.append(button);
        thumbs.append(item);
      }
      thumbsHeading.hidden = !data.thumbnails.length;
    }

    // A tap plays from that moment to the end of the selected part (or of the window,
    // for a moment outside the selection); in a gap, from the next footage.
    function tap(at) {
      const from = G.nextCovered(at, t.covered);
      if (from === null) { now.textContent = "No footage after " + clock(at, true) + "."; return; }
      const end = at >= t.sel.start && at <= t.sel.end ? t.sel.end : whole.end;
      play(from, Math.max(from, end), from > at ? "No footage at " + clock(at, true) + ": " : "", true);
    }

    // `fromKey`: start at the keyframe just before `start` (a tap: quicker, and at most
    // a second earlier); without it exactly at `start` (the selected part).
    async function play(start, end, note, fromKey) {
      now.textContent = (note || "") + "Loading " + clock(start, true) + "…";
      video.hidden = false;
      let info;
      try {
        info = await getJson(base + "/play?start=" + encodeURIComponent(iso(start)) +
          "&end=" + encodeURIComponent(iso(end)) + (fromKey ? "&from=keyframe" : ""));
      } catch (err) {
        now.textContent = "Could not play: " + err.message;
        return;
      }
      t.runs = info.runs;
      t.note = note || "";
      video.dataset.firstFrameAt = info.first_frame_at;
      video.dataset.lastFrameAt = info.last_frame_at;
      video.dataset.playlist = info.playlist;
      if (t.hls) { t.hls.destroy(); t.hls = null; }
      if (window.Hls && window.Hls.isSupported()) {
        // No worker: it would run from a blob: URL, which the console's CSP refuses.
        t.hls = new window.Hls({ enableWorker: false, maxBufferLength: 20, backBufferLength: 10 });
        t.hls.on(window.Hls.Events.ERROR, (_e, data) => {
          if (data.fatal) now.textContent = "The footage stopped loading (" + data.details + "). Tap again to retry.";
        });
        t.hls.loadSource(info.playlist);
        t.hls.attachMedia(video);
      } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
        video.src = info.playlist;  // Safari plays HLS itself
      } else {
        now.textContent = "This browser cannot play the footage.";
        return;
      }
      video.play().catch(() => {});
    }

    function showNow() {
      if (!t.runs.length) return;
      const at = G.captureAt(t.runs, video.currentTime * 1000);
      now.textContent = t.note + "Showing " + clock(at, true) + " (" +
        new Date(at).toLocaleDateString() + ")";
      for (const row of [overview, detail]) {
        if (row.playhead && !row.root.hidden) row.playhead.setAttribute("x", 1000 * G.fraction(at, row.range) - 1.5);
      }
    }
    video.addEventListener("timeupdate", showNow);
    video.addEventListener("seeked", showNow);
    playRange.addEventListener("click", () => play(t.sel.start, t.sel.end));

    (async () => {
      try {
        const data = await loadRow(overview, whole);
        t.covered = data.covered_ms;
        t.empty = !data.covered_ms.length;
        status.textContent = !t.empty
          ? span(data.footage_seconds * 1000) + " of footage in this " + span(whole.end - whole.start) +
            " window. Tap the bar to play from that moment; drag the two handles to choose what to share."
          : "Nothing was recorded between " + clock(whole.start) + " and " + clock(whole.end) +
            ": there is nothing to watch, and nothing could be sent. You can decline this request below.";
        // Without footage there is nothing to show, play or choose: only the sentence.
        for (const part of [legend, overview.root, detail.root, actions, partNote, video, now,
          thumbsHeading, thumbs]) {
          if (t.empty) part.hidden = true;
        }
        zoom.hidden = !footageStretch();
        container.dataset.ready = "true";
      } catch (err) {
        status.textContent = "Could not load the timeline: " + err.message;
      }
      setSel(t.sel, false);
    })();

    return {
      setRange(start, end) {
        if (start <= end && (start !== t.sel.start || end !== t.sel.end)) setSel({ start, end }, false);
      },
      close() { if (t.hls) t.hls.destroy(); },
    };
  }
  return { open };
})();
