// The doorbell console's page. Plain JavaScript, no build step, no outside resources.
// Every text that comes from a request is put on the page with textContent, never as
// HTML, so whatever an agency writes is shown as the characters it sent.
//
// Places have addresses (#/ the lists, #/requests/<id>?start=..&end=..&as=named a
// request with the part chosen), so a reload or a shared link opens the same place.
// Times are shown and typed in the browser's local time; the API speaks UTC.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  pending: [], current: null, paused: false, window: null, sel: null, summary: null,
  timeline: null, pendingSeen: null, sharesSeen: null,
};
const PLACE_KEY = "doorbell-place";    // where to come back to after signing in again
const NOTICE_KEY = "doorbell-notice";  // the last decision's confirmation, kept on reload

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

// ---- words ----------------------------------------------------------------------------

function ms(text) { return Date.parse(text); }
function iso(t) { return new Date(t).toISOString().replace(".000Z", "Z"); }
const DAY = { weekday: "short", day: "numeric", month: "short" };
function when(t, seconds) {  // "Mon 7 Dec, 8:05 PM": the browser's local time
  return new Date(t).toLocaleString([], Object.assign({}, DAY, { hour: "numeric",
    minute: "2-digit" }, seconds ? { second: "2-digit" } : {}));
}
function clock(t, seconds) {
  return new Date(t).toLocaleTimeString([], Object.assign({ hour: "numeric", minute: "2-digit" },
    seconds ? { second: "2-digit" } : {}));
}
function sameDay(a, b) { return new Date(a).toDateString() === new Date(b).toDateString(); }
function between(a, b, seconds) {  // "Mon 7 Dec, 8:05 PM to 8:15 PM"
  return when(a, seconds) + " to " + (sameDay(a, b) ? clock(b, seconds) : when(b, seconds));
}
function span(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return h + " h" + (m ? " " + m + " min" : "");
  if (m) return m + " min" + (r ? " " + r + " s" : "");
  return r + " s";
}
function megabytes(bytes) {
  if (bytes < 100000) return Math.max(1, Math.round(bytes / 1000)) + " kB";
  return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + " MB";
}
function percent(part, whole) { return whole ? Math.floor((100 * part) / whole) : 0; }
function share(part, whole) {  // "18 %", "less than 1 %"
  const p = percent(part, whole);
  return p < 1 && part > 0 ? "less than 1 %" : p + " %";
}

// <input type="datetime-local"> speaks local time without a zone: "2026-12-07T08:06:00".
function toLocalInput(t) {
  const d = new Date(t), two = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" +
    two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) +
    (d.getMilliseconds() ? "." + String(d.getMilliseconds()).padStart(3, "0") : "");
}
function fromLocalInput(text) { return text ? new Date(text).getTime() : NaN; }

// ---- talking to the doorbell ----------------------------------------------------------

class Refused extends Error {
  constructor(message, code) { super(message); this.code = code; }
}

function setOffline(offline) { $("offline").hidden = !offline; }

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    setOffline(true);  // cleared by the next answer: the polls below keep asking
    throw new Refused("Can't reach your doorbell.", "offline");
  }
  setOffline(false);
  if (response.status === 401) {
    // Signed out (revoked on the device, or expired): the sign-in page says so; come
    // back here afterwards.
    sessionStorage.setItem(PLACE_KEY, location.hash);
    location.reload();
    throw new Refused("You were signed out.", "signed_out");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    if (response.status >= 500 || !data || !data.error) {
      throw new Refused("Something went wrong on the doorbell (its log says what). " +
        "Try again in a moment.", "server");
    }
    throw new Refused(data.error, data.code);
  }
  return data;
}

function showError(message) {
  $("error-text").textContent = message || "";
  $("error").hidden = !message;
}

function showNotice(message) {
  $("notice-text").textContent = message || "";
  $("notice").hidden = !message;
  if (message) sessionStorage.setItem(NOTICE_KEY, message);
  else sessionStorage.removeItem(NOTICE_KEY);
}

function guarded(fn) {
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((err) => {
    if (err.code !== "offline" && err.code !== "signed_out") showError(err.message);
  });
}

// ---- places ---------------------------------------------------------------------------

function parsePlace(hash) {
  const m = /^#\/requests\/([^?]+)(?:\?(.*))?$/.exec(hash || "");
  if (!m) return { view: "list" };
  const q = new URLSearchParams(m[2] || "");
  return { view: "request", id: decodeURIComponent(m[1]), start: q.get("start"),
    end: q.get("end"), named: q.get("as") === "named" };
}

function requestPlace(id, sel, named) {
  const q = new URLSearchParams();
  if (sel && state.window && (sel.start !== state.window.start || sel.end !== state.window.end)) {
    q.set("start", iso(sel.start));
    q.set("end", iso(sel.end));
  }
  if (named) q.set("as", "named");
  const query = q.toString();
  return "#/requests/" + encodeURIComponent(id) + (query ? "?" + query : "");
}

function keepPlace() {  // the address follows the selection, without a history entry each
  if (!state.current) return;
  const place = requestPlace(state.current.id, state.sel, named());
  if (place !== location.hash) history.replaceState(null, "", place);
}

async function route() {
  const place = parsePlace(location.hash);
  if (place.view === "request") {
    if (!state.current || state.current.id !== place.id) await openRequest(place);
    return;
  }
  closeRequest();
}

function showView(view) {
  $("list-view").hidden = view !== "list";
  $("detail").hidden = view !== "request";
}

// ---- pending requests -----------------------------------------------------------------

async function loadPending() {
  const data = await api("/api/pending");
  setPaused(data.requests_paused);
  const seen = JSON.stringify(data.requests);
  if (seen !== state.pendingSeen) {  // unchanged: keep the list (and the focus)
    state.pendingSeen = seen;
    state.pending = data.requests;
    drawPending(data.requests);
  }
  if (state.current && !data.requests.some((r) => r.id === state.current.id)) {
    const r = state.current;
    history.pushState(null, "", "#/");
    closeRequest();
    showNotice("The request for case " + r.case_number + " from " + r.agency.name +
      " is no longer waiting: it was decided (perhaps on another device) or it expired.");
  }
}

function drawPending(requests) {
  const list = $("pending-list");
  list.replaceChildren();
  $("pending-empty").hidden = requests.length > 0;
  for (const r of requests) {
    const item = el("li", null, { class: "card" });
    const title = el("h3");
    title.append(el("span", r.agency.name), " ", el("span", "case " + r.case_number, { class: "quiet" }));
    const footage = r.footage_seconds > 0
      ? span(r.footage_seconds) + " of footage here"
      : "No footage here: nothing could be sent";
    const button = el("button", "Open", { type: "button", "data-id": r.id });
    button.setAttribute("aria-label", "Open the request for case " + r.case_number + " from " + r.agency.name);
    button.addEventListener("click", () => { location.hash = requestPlace(r.id, null, false); });
    item.append(title,
      el("p", "Asks for " + between(ms(r.window.start), ms(r.window.end),
        ms(r.window.end) - ms(r.window.start) < 600000) + " (" +
        span((ms(r.window.end) - ms(r.window.start)) / 1000) + ")"),
      el("p", footage, { class: r.footage_seconds > 0 ? "" : "problem" }),
      el("p", "Decide by " + when(ms(r.decide_by)), { class: "quiet" }),
      button);
    list.append(item);
  }
}

function field(list, name, value) {
  list.append(el("dt", name), el("dd", value === null || value === undefined || value === "" ? "none" : value));
}

async function openRequest(place) {
  showError("");
  let r;
  try {
    r = await api("/api/requests/" + encodeURIComponent(place.id));
  } catch (err) {
    if (err.code === "not_pending") {
      history.replaceState(null, "", "#/");
      closeRequest();
      showNotice("That request is no longer waiting for you: it was decided or it expired.");
      return;
    }
    throw err;
  }
  state.current = r;
  state.window = { start: ms(r.window.start), end: ms(r.window.end) };
  let sel = { start: state.window.start, end: state.window.end };
  const s = ms(place.start), e = ms(place.end);
  if (!isNaN(s) && !isNaN(e) && state.window.start <= s && s <= e && e <= state.window.end) {
    sel = { start: s, end: e };
  }
  for (const radio of document.querySelectorAll("input[name=who]")) {
    radio.checked = radio.value === (place.named ? "named" : "anonymous");
  }
  showView("request");
  $("detail-heading").textContent = r.agency.name + ": case " + r.case_number;
  const fields = $("fields"), more = $("more-fields");
  fields.replaceChildren();
  more.replaceChildren();
  field(fields, "Agency", r.agency.name);
  field(fields, "Why", r.description);
  field(fields, "Asks for", between(state.window.start, state.window.end, true) + " (" +
    span((state.window.end - state.window.start) / 1000) + ")");
  field(fields, "Decide by", when(ms(r.decide_by)));
  field(more, "Case number", r.case_number);
  field(more, "Investigator", r.investigator.name);
  field(more, "Email", r.investigator.email);
  field(more, "Phone", r.investigator.phone);
  field(more, "Agency id (bound to its key)", r.agency_id);
  field(more, "Request id", r.id);
  $("more").open = false;
  drawArea(r);
  $("start-time").min = $("end-time").min = toLocalInput(state.window.start);
  $("start-time").max = $("end-time").max = toLocalInput(state.window.end);
  if (state.timeline) state.timeline.close();
  state.timeline = null;
  if (typeof DoorbellTimeline !== "undefined") {  // a top-level const: not on window
    state.timeline = DoorbellTimeline.open($("timeline"), { id: r.id, start: state.window.start,
      end: state.window.end, onRange: (start, end) => select(start, end, "timeline") });
  }
  // A window with no footage at all: nothing to choose and nothing to approve, only
  // the reason (the timeline and the summary say it) and Decline.
  const nothing = !(r.footage_seconds > 0);
  $("choose").hidden = nothing;
  $("approve").hidden = nothing;
  select(sel.start, sel.end, "url");
  $("detail-heading").focus();
  window.scrollTo(0, 0);
}

function closeRequest() {
  if (state.timeline) state.timeline.close();
  state.timeline = null;
  state.current = null;
  state.summary = null;
  $("timeline").replaceChildren();
  showView("list");
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
    " m radius. Your camera (red dot) is " + Math.round(cam.distance_m) + " m from its centre.";
}

// ---- choosing the part to share -------------------------------------------------------

function named() { return document.querySelector("input[name=who]:checked").value === "named"; }

function select(start, end, source) {
  state.sel = { start, end };
  if (source !== "typed") {
    $("start-time").value = toLocalInput(start);
    $("end-time").value = toLocalInput(end);
  }
  if (source !== "timeline" && state.timeline) state.timeline.setRange(start, end);
  keepPlace();
  updateSummary();
}

function onTyped() {
  const start = fromLocalInput($("start-time").value), end = fromLocalInput($("end-time").value);
  const w = state.window;
  if (isNaN(start) || isNaN(end)) {
    problem("Choose both times, From and Until.");
    return;
  }
  if (start > end) {
    problem("From is after Until: choose a start before the end.");
    return;
  }
  if (start < w.start || end > w.end) {
    problem("Choose times between " + between(w.start, w.end, true) +
      ": you can share less than the agency asked for, never more.");
    return;
  }
  select(start, end, "typed");
}

function problem(text) {
  state.summary = null;
  $("summary").replaceChildren();
  $("summary-status").textContent = "";
  $("problem").textContent = text;
  $("problem").hidden = !text;
  $("approve").disabled = Boolean(text);
}

let summaryTimer = null, summaryAsked = 0;
function updateSummary() {
  clearTimeout(summaryTimer);
  $("summary-status").textContent = "Working out what would be sent…";
  summaryTimer = setTimeout(guarded(refreshSummary), 150);
  $("learns").textContent = named()
    ? "With the footage goes a record that you approved it, signed by this doorbell."
    : "An anonymous share sends the footage and a record that the owner of a camera " +
      "approved it: no name, no contact, no position, no device id. The agency cannot " +
      "tell which camera sent it (it still sees the internet address the upload comes from).";
}

async function refreshSummary() {
  const r = state.current, sel = state.sel;
  if (!r || !sel) return;
  const asked = ++summaryAsked;
  const q = "?start=" + encodeURIComponent(iso(sel.start)) + "&end=" + encodeURIComponent(iso(sel.end)) +
    "&share_contact=" + (named() ? "true" : "false");
  let s;
  try {
    s = await api("/api/requests/" + encodeURIComponent(r.id) + "/summary" + q);
  } catch (err) {
    // decided meanwhile (here or elsewhere): the pending list's poll says so in words
    if (err.code === "not_pending" || !state.current || state.current.id !== r.id) return;
    throw err;
  }
  if (asked !== summaryAsked || !state.current || state.current.id !== r.id) return;
  state.summary = s;
  drawSummary(s);
}

function drawSummary(s) {
  const list = $("summary");
  list.replaceChildren();
  const start = ms(s.window.start), end = ms(s.window.end);
  field(list, "Time range", between(start, end, true) + " (" + span(s.duration_seconds) +
    (s.whole_window ? ", the whole window" : ", part of the window") + ")");
  field(list, "Holds", s.frames > 0 ? s.frames + " frames, about " + megabytes(s.estimated_bytes) +
    " uploaded (the video, encrypted, with its signed record)"
    : "no footage");
  if (s.frames > 0) {
    if (s.duration_seconds - s.covered_seconds > 1) {  // a gap of a second or more
      field(list, "Covered", "The doorbell holds " + span(s.covered_seconds) + " of these " +
        span(s.duration_seconds) + " (" + share(s.covered_seconds, s.duration_seconds) +
        "): only that is sent.");
    }
  }
  field(list, "To", s.to.agency_name + " (id " + s.to.agency_id + "), uploaded to " + s.to.upload_host);
  if (s.sends) {
    const people = ["name", "email", "address"];
    if (people.every((k) => s.sends[k] === null || s.sends[k] === undefined)) {
      field(list, "Your contact", "no contact set (nothing of yours but what follows)");
    }
    for (const [key, label] of [["name", "Your name"], ["email", "Your email"], ["address", "Your address"]]) {
      if (s.sends[key] !== null && s.sends[key] !== undefined) field(list, label, s.sends[key]);
    }
    field(list, "Camera position", s.sends.lat + ", " + s.sends.lon);
    field(list, "Device id", s.sends.device_id);
  } else {
    field(list, "About you", "nothing: anonymous");
  }
  $("summary-status").textContent = "";
  if (s.problem) {
    $("problem").textContent = s.problem.message + " Approving would spend your decision on " +
      "nothing, so it is not offered: decline the request" +
      (state.current && state.current.footage_seconds > 0 ? ", or choose a part that holds footage." : ".");
  }
  $("problem").hidden = !s.problem;
  $("learns").hidden = !(s.frames > 0);  // what a share tells the agency: none goes
  $("approve").disabled = Boolean(s.problem);
}

// ---- decisions ------------------------------------------------------------------------

function confirmStep(text, yes, no) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = yes;
    $("confirm-no").textContent = no || "Go back";
    const done = (answer) => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.onclose = () => done(false);  // Escape
    dialog.showModal();
    $("confirm-no").focus();
  });
}

function sendsSentence(s) {
  return span(s.duration_seconds) + " of footage (" + between(ms(s.window.start), ms(s.window.end), true) +
    "), " + s.frames + " frames, about " + megabytes(s.estimated_bytes) + ", to " + s.to.agency_name +
    (s.sends ? ", with your name and contact" : ", anonymously");
}

async function decide(approve) {
  const r = state.current;
  if (!r) return;
  showError("");
  const s = state.summary;
  if (approve && (!s || s.problem)) return;  // the page says why; Decline stays offered
  const text = approve ? "Approve and send " + sendsSentence(s) + "?"
    : "Decline the request for case " + r.case_number + " from " + r.agency.name +
      "? Nothing is sent, and the agency is not told.";
  if (!(await confirmStep(text, approve ? "Approve and send" : "Decline"))) return;
  clearTimeout(summaryTimer);
  summaryAsked++;  // a summary asked for before this decision is no longer wanted
  const body = { decision: approve ? "approve" : "deny", share_contact: approve && Boolean(s && s.sends) };
  if (approve && !s.whole_window) body.window = s.window;
  try {
    await api("/api/requests/" + encodeURIComponent(r.id) + "/decision", { body });
  } catch (err) {
    if (err.code === "nothing_to_send") problem(err.message);
    throw err;
  }
  const what = "case " + r.case_number + " from " + r.agency.name;
  showNotice(!approve ? "Declined " + what + ". Nothing was sent." : s.sends
    ? "Approved " + what + ": " + sendsSentence(s) + ". It is being prepared and sent now; follow it under Shares."
    : "Approved " + what + ": " + sendsSentence(s) + ". The upload starts at a moment drawn at " +
      "random, so the agency cannot tell when you decided; Shares says when.");
  state.pendingSeen = null;
  history.pushState(null, "", "#/");
  closeRequest();
  $("notice").focus();
  await Promise.all([loadPending(), loadShares()]);
}

// ---- shares ---------------------------------------------------------------------------

function shareState(s) {
  const total = s.bytes_total, sent = s.bytes_sent;
  switch (s.state) {
    case "queued":
      if (s.starts_at) {
        const at = ms(s.starts_at);
        return ["Waiting to start at " + (sameDay(at, Date.now()) ? clock(at) : when(at)) + ".",
          "waiting", "Anonymous shares start at a random moment, so the agency cannot tell when you decided."];
      }
      return s.built === false || !total ? ["Preparing: packing and encrypting the footage.", "preparing"]
        : ["Waiting to send: it starts shortly.", "waiting"];
    case "uploading":
      if (s.built === false || !total) return ["Preparing: packing and encrypting the footage.", "preparing"];
      return ["Uploading " + percent(sent, total) + " % (" + megabytes(sent) + " of " + megabytes(total) + ").", "uploading"];
    case "done":
      return ["Done" + (s.updated_at ? " at " + when(ms(s.updated_at)) : "") + ": the agency has it.", "done"];
    case "failed":
      if (s.error === "no footage") {  // deleted from the buffer before it was packed
        return ["Failed: the footage is no longer on the doorbell, so nothing was sent.", "failed"];
      }
      return ["Failed: " + (s.error || "the reason was not recorded") + ".", "failed"];
    case "cancelled":
      return ["Cancelled" + (s.updated_at ? " at " + when(ms(s.updated_at)) : "") + ": nothing more is sent.", "cancelled"];
    default:
      return [String(s.state), ""];
  }
}

async function loadShares() {
  const data = await api("/api/shares");
  const seen = JSON.stringify(data.shares);
  if (seen === state.sharesSeen) return;
  state.sharesSeen = seen;
  const list = $("shares-list");
  list.replaceChildren();
  $("shares-empty").hidden = data.shares.length > 0;
  for (const s of data.shares) {
    const item = el("li", null, { class: "card", "data-id": s.rfa_id, "data-state": s.state });
    const title = el("h3");
    if (s.agency) {
      title.append(el("span", s.agency.name), " ", el("span", "case " + s.case_number, { class: "quiet" }));
    } else {
      title.append(el("span", "Request " + s.rfa_id));
    }
    item.append(title);
    if (s.window) {
      item.append(el("p", between(ms(s.window.start), ms(s.window.end), true) +
        (s.bytes_total ? ", " + megabytes(s.bytes_total) : "") +
        (s.share_contact === false ? ", anonymous" : s.share_contact ? ", with your name" : "")));
    }
    const [words, kind, why] = shareState(s);
    item.append(el("p", words, { class: "state state-" + kind }));
    if (why) item.append(el("p", why, { class: "quiet" }));
    if (s.state === "uploading" && s.bytes_total) {
      item.append(el("progress", null, { max: String(s.bytes_total), value: String(s.bytes_sent),
        "aria-label": "Uploaded" }));
    }
    if (s.manifest_sha256) {
      const receipt = el("details");
      receipt.append(el("summary", "Receipt"), el("p", "Manifest SHA-256: " + s.manifest_sha256, { class: "hash" }));
      item.append(receipt);
    }
    const actions = el("div", null, { class: "actions" });
    const label = s.agency ? "case " + s.case_number + " to " + s.agency.name : "this share";
    if (s.state === "queued" || s.state === "uploading") {
      const b = el("button", "Cancel…", { type: "button", class: "secondary" });
      b.setAttribute("aria-label", "Cancel the share of " + label);
      b.addEventListener("click", guarded(async () => {
        if (!(await confirmStep("Cancel the share of " + label + "? What is not uploaded yet is " +
          "not sent; this cannot be undone.", "Cancel the share", "Keep it"))) return;
        await shareAction(s.rfa_id, "cancel");
      }));
      actions.append(b);
    }
    if (s.state === "failed" && s.error !== "no footage") {  // trying again cannot help that
      const b = el("button", "Try again", { type: "button", class: "secondary" });
      b.setAttribute("aria-label", "Try the share of " + label + " again");
      b.addEventListener("click", guarded(() => shareAction(s.rfa_id, "retry")));
      actions.append(b);
    }
    if (actions.childElementCount) item.append(actions);
    list.append(item);
  }
}

async function shareAction(id, action) {
  try {
    await api("/api/shares/" + encodeURIComponent(id) + "/" + action, { body: {} });
  } finally {
    state.sharesSeen = null;
    await loadShares();
  }
}

// ---- pause and audit ------------------------------------------------------------------

function setPaused(paused) {
  state.paused = paused;
  $("paused-banner").hidden = !paused;
  $("pause-state").textContent = paused
    ? "Paused: the doorbell refuses every new request."
    : "New requests come to you for a decision.";
  $("pause").textContent = paused ? "Resume requests" : "Pause all requests";
}

async function togglePause() {
  const next = !state.paused;
  if (!(await confirmStep(next ? "Pause all requests? New requests will be refused; those " +
    "already waiting stay for you to decide." : "Resume requests? New ones will come to you again.",
  next ? "Pause" : "Resume"))) return;
  const data = await api("/api/requests-paused", { body: { paused: next } });
  setPaused(data.paused);
}

const REFUSALS = {  // a refused request's rule, in words (sync.rfa's reasons)
  requests_off: "you had paused requests",
  outside_area: "this camera is outside the area it asked about",
  window_too_long: "it asked for too long a window",
  expired: "it had expired",
  replay: "it was a copy of one already seen",
};

function auditSentence(e) {
  const f = e.fields || {};
  const req = f.case_number ? "case " + f.case_number : "a request";
  switch (e.event) {
    case "rfa_accepted":
      return "A request arrived from " + (f.agency_id || "an agency") + " for " + req + "; it waited for your decision.";
    case "rfa_rejected":
      return "The doorbell refused a request by itself (" + (REFUSALS[f.reason] || String(f.reason).replace(/_/g, " ")) + ").";
    case "decision": {
      const how = { console: "in this console", cli: "on the command line", button: "with the button",
        app: "in the owner's app" }[f.method] || "";
      if (f.decision !== "approve") return "You declined a request " + how + ". Nothing was sent.";
      const w = f.window ? " " + between(ms(f.window.start), ms(f.window.end), true) : "";
      return "You approved sending" + w + " " + how + (f.share_contact ? ", with your name and contact." : ", anonymously.");
    }
    case "expired":
      return "A request expired without your decision. Nothing was sent.";
    case "share":
      return { queued: "A share was queued.", uploading: "A share started uploading.",
        done: "A share was delivered: the agency has it.", cancelled: "A share was cancelled.",
        failed: "A share failed" + (f.error ? ": " + f.error : "") + "." }[f.state] || "A share is now " + f.state + ".";
    case "requests_paused":
      return "You paused requests: new ones were refused.";
    case "requests_resumed":
      return "You resumed requests.";
    case "rejections": {
      const reason = String(f.reason || "");
      if (reason === "decision_nothing_to_send") {
        return f.count + (f.count === 1 ? " approval was" : " approvals were") +
          " refused before being recorded: it would have sent nothing.";
      }
      if (reason.startsWith("decision_")) {
        return f.count + (f.count === 1 ? " decision was" : " decisions were") + " refused (" +
          reason.slice(9).replace(/_/g, " ") + ").";
      }
      return f.count + (f.count === 1 ? " message was" : " messages were") + " refused unread (" +
        reason.replace(/_/g, " ") + ").";
    }
    default:
      return String(e.event).replace(/_/g, " ") + ".";
  }
}

async function loadAudit() {
  const data = await api("/api/audit");
  const v = data.verification;
  $("audit-result").textContent = v.ok
    ? "Checked: all " + v.entries + " entries are intact and signed by this doorbell."
    : "The audit log does NOT check out: " + v.problem +
      (v.first_broken ? " (from entry " + v.first_broken + " on)" : "") + ".";
  const list = $("audit-list");
  list.replaceChildren();
  for (const e of data.entries) {
    const item = el("li", null, { value: String(e.seq) });
    item.append(el("time", when(ms(e.at), true), { datetime: e.at }), " ", el("span", auditSentence(e)));
    const raw = el("details");
    raw.append(el("summary", "Details"),
      el("pre", JSON.stringify({ seq: e.seq, at: e.at, event: e.event, fields: e.fields }, null, 1)));
    item.append(raw);
    list.append(item);
  }
  list.hidden = false;
  $("audit-load").textContent = "Show it again";
}

// ---- start ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("start-time").addEventListener("change", onTyped);
  $("end-time").addEventListener("change", onTyped);
  $("whole").addEventListener("click", () => {
    if (state.window) select(state.window.start, state.window.end, "button");
  });
  for (const radio of document.querySelectorAll("input[name=who]")) {
    radio.addEventListener("change", () => { keepPlace(); updateSummary(); });
  }
  $("approve").addEventListener("click", guarded(() => decide(true)));
  $("deny").addEventListener("click", guarded(() => decide(false)));
  $("pause").addEventListener("click", guarded(togglePause));
  $("audit-load").addEventListener("click", guarded(loadAudit));
  $("notice-close").addEventListener("click", () => showNotice(""));
  $("error-close").addEventListener("click", () => showError(""));
  $("notice").tabIndex = -1;
  window.addEventListener("hashchange", guarded(route));  // links, Back and Forward
  const back = sessionStorage.getItem(PLACE_KEY);
  sessionStorage.removeItem(PLACE_KEY);
  if (back && !location.hash) history.replaceState(null, "", back);
  const notice = sessionStorage.getItem(NOTICE_KEY);
  if (notice) showNotice(notice);
  guarded(async () => { await loadPending(); await route(); })();
  guarded(loadShares)();
  setInterval(guarded(loadPending), 5000);
  setInterval(guarded(loadShares), 3000);
});
