// The doorbell console's page. Plain JavaScript, no build step, no outside resources.
// Every text that comes from a request is put on the page with textContent, never as
// HTML, so whatever an agency writes is shown as the characters it sent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pending: [], current: null, paused: false, window: null };

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("signed out");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function ms(text) { return Date.parse(text); }
function iso(t) { return new Date(t).toISOString().replace(".000Z", "Z"); }
function local(text) { return new Date(ms(text)).toLocaleString(); }
function duration(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + r + " s";
}

// ---- pending requests -----------------------------------------------------------------

async function loadPending() {
  const data = await api("/api/pending");
  setPaused(data.requests_paused);
  const seen = JSON.stringify(data.requests);
  if (seen === state.pendingSeen) return;  // unchanged: keep the list (and the focus)
  state.pendingSeen = seen;
  state.pending = data.requests;
  const list = $("pending-list");
  list.replaceChildren();
  $("pending-empty").hidden = data.requests.length > 0;
  for (const r of data.requests) {
    const item = el("li");
    const button = el("button", "Open", { type: "button", "data-id": r.id, class: "secondary" });
    button.setAttribute("aria-label", "Open request " + r.case_number + " from " + r.agency.name);
    button.addEventListener("click", guarded(() => openRequest(r.id)));
    item.append(
      el("strong", r.agency.name), " (", el("span", r.agency_id), ") case ",
      el("span", r.case_number), el("br"),
      "Window " + local(r.window.start) + " to " + local(r.window.end), el("br"),
      "Decide by " + local(r.decide_by) + " ", button);
    list.append(item);
  }
  if (state.current && !data.requests.some((r) => r.id === state.current.id)) {
    $("detail").hidden = true;
    state.current = null;
  }
}

function field(list, name, value) {
  list.append(el("dt", name), el("dd", value === null || value === undefined ? "none" : value));
}

async function openRequest(id) {
  showError("");
  const r = await api("/api/requests/" + encodeURIComponent(id));
  state.current = r;
  state.window = { start: ms(r.window.start), end: ms(r.window.end) };
  $("detail").hidden = false;
  $("detail-heading").textContent = "Request: case " + r.case_number;
  const fields = $("fields");
  fields.replaceChildren();
  field(fields, "Agency", r.agency.name);
  field(fields, "Agency id (bound to its key)", r.agency_id);
  field(fields, "Key id", r.key_id);
  field(fields, "Case number", r.case_number);
  field(fields, "Investigator", r.investigator.name);
  field(fields, "Email", r.investigator.email);
  field(fields, "Phone", r.investigator.phone);
  field(fields, "Description", r.description);
  field(fields, "Window", r.window.start + " to " + r.window.end +
        " (" + local(r.window.start) + " to " + local(r.window.end) + ")");
  field(fields, "Decide by", r.decide_by + " (" + local(r.decide_by) + ")");
  field(fields, "Footage here", duration(r.footage_seconds));
  field(fields, "Request id", r.id);
  drawArea(r);
  setRange(state.window.start, state.window.end);
  $("decision-status").textContent = "";
  $("detail-heading").focus();
  guarded(loadStrip)(r.id);
  updateSummary();
}

function drawArea(r) {
  const area = $("area");
  area.replaceChildren();
  const radius = r.area.radius_m;
  const cam = r.camera;
  const reach = Math.max(radius, Math.hypot(cam.east_m, cam.north_m)) * 1.1 || 1;
  const scale = 100 / reach;
  area.append(svg("circle", { cx: 0, cy: 0, r: radius * scale, class: "area" }));
  area.append(svg("circle", { cx: 0, cy: 0, r: 2, class: "centre" }));
  const x = cam.east_m * scale, y = -cam.north_m * scale;
  area.append(svg("circle", { cx: x, cy: y, r: 5, class: "camera" }));
  area.append(svg("text", { x: x + 7, y: y + 4 }, "camera"));
  $("area-caption").textContent = "The requested area: a circle of " + Math.round(radius) +
    " m radius. Your camera (red dot) is " + Math.round(cam.distance_m) +
    " m from its centre.";
}

// ---- the strip and the player ---------------------------------------------------------

async function loadStrip(id) {
  const strip = $("strip");
  strip.replaceChildren();
  $("strip-status").textContent = "Loading thumbnails…";
  const data = await api("/api/requests/" + encodeURIComponent(id) + "/thumbnails");
  if (!state.current || state.current.id !== id) return;
  $("strip-status").textContent = data.thumbnails.length
    ? data.thumbnails.length + " thumbnails across the window."
    : "There is no footage in this window.";
  for (const thumb of data.thumbnails) {
    const button = el("button", null, { type: "button", "aria-pressed": "false",
      "data-at": thumb.at, "aria-label": "Play from " + local(thumb.at) });
    const img = el("img", null, { src: thumb.src, alt: "", loading: "eager", width: "80" });
    button.append(img);
    button.addEventListener("click", guarded(() => play(id, thumb.at, button)));
    strip.append(button);
  }
}

const PREVIEW_MS = 30000;

async function play(id, at, button) {
  for (const b of $("strip").querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
  if (button) button.setAttribute("aria-pressed", "true");
  const start = ms(at);
  const end = Math.min(start + PREVIEW_MS, state.window.end);
  const player = $("player");
  $("player-status").textContent = "Preparing " + local(at) + "…";
  player.src = "/api/requests/" + encodeURIComponent(id) + "/clip?start=" +
    encodeURIComponent(iso(start)) + "&end=" + encodeURIComponent(iso(end));
  player.dataset.start = at;
  try {
    await player.play();
    $("player-status").textContent = "Playing from " + local(at) + ".";
  } catch (err) {
    $("player-status").textContent = "Could not play this moment.";
  }
}

// ---- narrowing ------------------------------------------------------------------------

function sliderToMs(value) {
  return Math.round(state.window.start + (state.window.end - state.window.start) * value / 1000);
}
function msToSlider(t) {
  const span = state.window.end - state.window.start;
  return span ? Math.round((t - state.window.start) * 1000 / span) : 0;
}

function setRange(start, end) {
  $("start-range").value = msToSlider(start);
  $("end-range").value = msToSlider(end);
  $("start-time").value = iso(start);
  $("end-time").value = iso(end);
}

function chosenWindow() {
  const start = ms($("start-time").value), end = ms($("end-time").value);
  if (isNaN(start) || isNaN(end)) return null;
  return { start, end };
}

function onSlider() {
  let start = sliderToMs(Number($("start-range").value));
  let end = sliderToMs(Number($("end-range").value));
  if (start > end) [start, end] = [end, start];
  $("start-time").value = iso(start);
  $("end-time").value = iso(end);
  updateSummary();
}

function onTyped() {
  const w = chosenWindow();
  if (w) {
    $("start-range").value = msToSlider(w.start);
    $("end-range").value = msToSlider(w.end);
  }
  updateSummary();
}

let summaryTimer = null;
function updateSummary() {
  clearTimeout(summaryTimer);
  summaryTimer = setTimeout(refreshSummary, 150);
  const named = document.querySelector("input[name=who]:checked").value === "named";
  $("learns").textContent = named
    ? "A named share sends the agency your name, email and address, the camera's " +
      "position and this device's id, with the footage and a record that you approved it."
    : "An anonymous share sends the footage and a record that the owner of a camera " +
      "approved it: no name, no contact, no position, no device id. The agency cannot " +
      "tell which camera sent it (it still sees the internet address the upload comes from).";
}

async function refreshSummary() {
  const r = state.current;
  const w = chosenWindow();
  if (!r) return;
  if (!w || w.start > w.end || w.start < state.window.start || w.end > state.window.end) {
    $("summary").textContent = "The times must lie inside the requested window, start first.";
    return;
  }
  const q = "?start=" + encodeURIComponent(iso(w.start)) + "&end=" + encodeURIComponent(iso(w.end));
  try {
    const f = await api("/api/requests/" + encodeURIComponent(r.id) + "/footage" + q);
    const named = document.querySelector("input[name=who]:checked").value === "named";
    $("summary").textContent = "Will send " + f.frames + " frames, " +
      duration(f.duration_seconds) + " of footage, " + (named ? "named" : "anonymously") +
      " (" + iso(w.start) + " to " + iso(w.end) + ").";
  } catch (err) {
    $("summary").textContent = err.message;
  }
}

// ---- decisions ------------------------------------------------------------------------

function confirmStep(text, label) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = label;
    const done = (answer) => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

async function decide(approve) {
  const r = state.current;
  if (!r) return;
  const named = document.querySelector("input[name=who]:checked").value === "named";
  const w = chosenWindow();
  let text = "Decline this request? Nothing is sent anywhere.";
  if (approve) {
    if (!w) { showError("Type valid times first."); return; }
    text = "Approve and send " + iso(w.start) + " to " + iso(w.end) + " to " + r.agency.name +
      (named ? ", with your name, email, address and the camera's position?" : ", anonymously?");
  }
  if (!(await confirmStep(text, approve ? "Approve and send" : "Decline"))) return;
  const body = { decision: approve ? "approve" : "deny", share_contact: approve && named };
  if (approve && (w.start !== state.window.start || w.end !== state.window.end)) {
    body.window = { start: iso(w.start), end: iso(w.end) };
  }
  try {
    const result = await api("/api/requests/" + encodeURIComponent(r.id) + "/decision", { body });
    $("decision-status").textContent = result.outcome !== "approved" ? "Declined."
      : named ? "Approved: the share is on its way (see Shares)."
      : "Approved: the upload starts at a moment drawn at random, so the agency cannot tell when you decided (see Shares for when).";
    await loadPending();
    await loadShares();
  } catch (err) {
    showError(err.message);
  }
}

// ---- shares ---------------------------------------------------------------------------

async function loadShares() {
  const data = await api("/api/shares");
  const list = $("shares-list");
  list.replaceChildren();
  $("shares-empty").hidden = data.shares.length > 0;
  for (const s of data.shares) {
    const item = el("li", null, { "data-id": s.rfa_id, "data-state": s.state });
    const pct = s.bytes_total ? Math.floor((100 * s.bytes_sent) / s.bytes_total) : 0;
    item.append(el("strong", s.state), " ", el("span", s.rfa_id), el("br"),
      el("span", pct + "% (" + s.bytes_sent + " of " + s.bytes_total + " bytes)"));
    if (s.starts_at) item.append(el("br"), el("span",
      "Anonymous: the upload starts at " + local(s.starts_at) + " (a random delay, so the agency cannot tell when you decided)",
      { class: "starts-at" }));
    if (s.error) item.append(el("br"), el("span", "Error: " + s.error, { class: "error" }));
    if (s.manifest_sha256) item.append(el("br"), el("span", "Receipt (manifest SHA-256): " + s.manifest_sha256));
    const actions = el("div", null, { class: "actions" });
    if (s.state === "queued" || s.state === "uploading") {
      const b = el("button", "Cancel", { type: "button", class: "secondary" });
      b.addEventListener("click", () => shareAction(s.rfa_id, "cancel"));
      actions.append(b);
    }
    if (s.state === "failed") {
      const b = el("button", "Retry", { type: "button", class: "secondary" });
      b.addEventListener("click", () => shareAction(s.rfa_id, "retry"));
      actions.append(b);
    }
    item.append(actions);
    list.append(item);
  }
}

async function shareAction(id, action) {
  try {
    await api("/api/shares/" + encodeURIComponent(id) + "/" + action, { body: {} });
  } catch (err) {
    showError(err.message);
  }
  await loadShares();
}

// ---- pause and audit ------------------------------------------------------------------

function setPaused(paused) {
  state.paused = paused;
  $("paused-banner").hidden = !paused;
  $("pause-state").textContent = paused
    ? "Paused: every new request is refused on the device."
    : "New requests are accepted for your decision.";
  $("pause").textContent = paused ? "Resume requests" : "Pause all requests";
}

async function togglePause() {
  const next = !state.paused;
  if (!(await confirmStep(next ? "Pause all requests? New requests will be refused."
                              : "Resume requests?", next ? "Pause" : "Resume"))) return;
  const data = await api("/api/requests-paused", { body: { paused: next } });
  setPaused(data.paused);
}

async function loadAudit() {
  const data = await api("/api/audit");
  const v = data.verification;
  $("audit-result").textContent = v.ok
    ? "Verified: " + v.entries + " entries, chain and signature intact."
    : "NOT verified: " + v.problem + (v.first_broken ? " (first broken entry " + v.first_broken + ")" : "");
  const body = $("audit-table").querySelector("tbody");
  body.replaceChildren();
  for (const e of data.entries) {
    const row = el("tr");
    row.append(el("td", e.seq), el("td", e.at), el("td", e.event), el("td", JSON.stringify(e.fields)));
    body.append(row);
  }
  $("audit-table").hidden = false;
}

// ---- start ----------------------------------------------------------------------------

function guarded(fn) {
  return (...args) => fn(...args).catch((err) => showError(err.message));
}

document.addEventListener("DOMContentLoaded", () => {
  $("detail-heading").tabIndex = -1;
  $("start-range").addEventListener("input", onSlider);
  $("end-range").addEventListener("input", onSlider);
  $("start-time").addEventListener("change", onTyped);
  $("end-time").addEventListener("change", onTyped);
  for (const radio of document.querySelectorAll("input[name=who]")) {
    radio.addEventListener("change", updateSummary);
  }
  $("approve").addEventListener("click", guarded(() => decide(true)));
  $("deny").addEventListener("click", guarded(() => decide(false)));
  $("pause").addEventListener("click", guarded(togglePause));
  $("audit-load").addEventListener("click", guarded(loadAudit));
  guarded(loadPending)();
  guarded(loadShares)();
  setInterval(guarded(loadPending), 5000);
  setInterval(guarded(loadShares), 3000);
});
