// The privacy masks page: the owner draws polygons on the doorbell's latest picture
// with a finger, a mouse or the keyboard; the doorbell checks them (a corner outside
// the picture, a crossing outline, masks hiding everything are refused in words) and
// paints them into every frame before recording. Coordinates are fractions of the
// picture (0 to 1), rounded to 4 places.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000; // the overlay's own units across; its height follows the picture
const STEP = 0.01; // an arrow key's move of the cross (Shift: five times that)

const state = {
  config: [], // masks set in the config: shown, never changed here
  owner: [], // the owner's masks: {name, points}
  draft: null, // corners of the mask being drawn, or null
  cursor: [0.5, 0.5], // the keyboard's cross
  chosen: -1, // the owner's mask whose card has focus
  dirty: false,
  aspect: 9 / 16,
};

function round(v) {
  return Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
}

function say(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
  $("error-close").focus();
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error("Can't reach your doorbell. Check that it is on, then try again.");
  }
  if (response.status === 401) {
    location.href = "/";
    throw new Error("You were signed out.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `The doorbell answered ${response.status}.`);
  return data;
}

// "masks[1].points: the outline crosses itself" -> "The mask “Gate”: the outline ..."
function inWords(message) {
  const found = /^masks\[(\d+)\][^:]*: (.*)$/.exec(message);
  if (!found) return message.replace(/^masks: /, "");
  const mask = state.owner[Number(found[1])];
  return mask ? `The mask “${mask.name}”: ${found[2]}` : found[2];
}

// ---- drawing ---------------------------------------------------------------------

function el(name, attrs) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function toUnits(points) {
  const h = WIDTH * state.aspect;
  return points.map(([x, y]) => `${(x * WIDTH).toFixed(1)},${(y * h).toFixed(1)}`).join(" ");
}

function render() {
  renderOverlay();
  renderList();
  renderButtons();
}

function renderOverlay() {
  const svg = $("overlay");
  const h = WIDTH * state.aspect;
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${h.toFixed(1)}`);
  svg.replaceChildren();
  state.config.forEach((m) => svg.append(el("polygon", { points: toUnits(m.points), class: "mask fixed" })));
  state.owner.forEach((m, i) => svg.append(el("polygon", {
    points: toUnits(m.points),
    class: i === state.chosen ? "mask chosen" : "mask",
  })));
  if (state.draft) {
    if (state.draft.length > 1) svg.append(el("polygon", { points: toUnits(state.draft), class: "draft" }));
    for (const [x, y] of state.draft) {
      svg.append(el("circle", { cx: x * WIDTH, cy: y * h, r: 9, class: "corner" }));
    }
    const [cx, cy] = state.cursor;
    svg.append(el("path", {
      d: `M${cx * WIDTH - 18},${cy * h}h36M${cx * WIDTH},${cy * h - 18}v36`,
      class: "cross",
    }));
  }
}

function renderButtons() {
  const drawing = state.draft !== null;
  $("new").hidden = drawing;
  $("finish").hidden = !drawing;
  $("undo").hidden = !drawing;
  $("cancel").hidden = !drawing;
  $("finish").disabled = drawing && state.draft.length < 3;
  $("undo").disabled = drawing && state.draft.length === 0;
  $("save").disabled = !state.dirty || drawing;
  $("drawing").textContent = !drawing ? "" : state.draft.length < 3
    ? `Drawing a mask: ${state.draft.length} of at least 3 corners placed.`
    : `Drawing a mask: ${state.draft.length} corners. Place more, or finish it.`;
}

function renderList() {
  const list = $("list");
  list.replaceChildren();
  $("empty").hidden = state.config.length + state.owner.length > 0;
  state.config.forEach((m) => {
    const li = document.createElement("li");
    li.className = "card";
    const h = document.createElement("h4");
    h.textContent = m.name;
    const p = document.createElement("p");
    p.className = "where";
    p.textContent = `Set in the doorbell's config file (${m.points.length} corners): it can't be changed here.`;
    li.append(h, p);
    list.append(li);
  });
  state.owner.forEach((m, i) => {
    const li = document.createElement("li");
    li.className = "card";
    const label = document.createElement("label");
    label.htmlFor = `name-${i}`;
    label.textContent = "Name";
    const input = document.createElement("input");
    input.id = `name-${i}`;
    input.value = m.name;
    input.maxLength = 40;
    input.addEventListener("input", () => { m.name = input.value; changed(); });
    input.addEventListener("focus", () => { state.chosen = i; renderOverlay(); });
    const p = document.createElement("p");
    p.className = "where";
    p.textContent = `Drawn here, ${m.points.length} corners.`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = `Remove “${m.name}”`;
    remove.addEventListener("click", () => {
      state.owner.splice(i, 1);
      state.chosen = -1;
      changed();
      render();
      say(`Mask “${m.name}” removed. Save to put the change in force.`);
      $("new").focus();
    });
    li.append(label, input, p, remove);
    list.append(li);
  });
}

function changed() {
  state.dirty = true;
  renderButtons();
}

function startDrawing() {
  state.draft = [];
  $("error").hidden = true;
  render();
  $("stage").focus();
}

function addCorner(x, y) {
  if (!state.draft) startDrawing();
  state.cursor = [round(x), round(y)];
  state.draft.push([round(x), round(y)]);
  render();
}

function finish() {
  if (!state.draft || state.draft.length < 3) return;
  const names = new Set([...state.config, ...state.owner].map((m) => m.name));
  let n = state.owner.length + 1;
  while (names.has(`Mask ${n}`)) n += 1;
  state.owner.push({ name: `Mask ${n}`, points: state.draft });
  state.draft = null;
  changed();
  render();
  say(`Mask ${n} added. Give it a name if you like, then save.`);
  $(`name-${state.owner.length - 1}`).focus();
}

function stopDrawing() {
  state.draft = null;
  render();
  $("new").focus();
}

// ---- input -----------------------------------------------------------------------

$("stage").addEventListener("pointerdown", (event) => {
  if (!state.draft) return;
  const box = $("stage").getBoundingClientRect();
  event.preventDefault();
  addCorner((event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height);
});

$("stage").addEventListener("keydown", (event) => {
  const step = event.shiftKey ? STEP * 5 : STEP;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (moves[event.key]) {
    if (!state.draft) startDrawing();
    const [dx, dy] = moves[event.key];
    state.cursor = [round(state.cursor[0] + dx), round(state.cursor[1] + dy)];
    $("drawing").textContent = `Cross at ${Math.round(state.cursor[0] * 100)}% across, ${Math.round(state.cursor[1] * 100)}% down.`;
    renderOverlay();
    event.preventDefault();
    return;
  } else if (event.key === "Enter" || event.key === " ") {
    addCorner(...state.cursor);
  } else if (event.key === "Backspace" && state.draft) {
    state.draft.pop();
  } else if (event.key === "Escape" && state.draft) {
    stopDrawing();
  } else {
    return;
  }
  event.preventDefault();
  render();
});

$("new").addEventListener("click", startDrawing);
$("finish").addEventListener("click", finish);
$("cancel").addEventListener("click", stopDrawing);
$("undo").addEventListener("click", () => { state.draft.pop(); render(); });
$("error-close").addEventListener("click", () => { $("error").hidden = true; });
$("reload").addEventListener("click", loadSnapshot);

$("save").addEventListener("click", async () => {
  $("save").disabled = true;
  say("Saving…");
  try {
    const data = await api("/api/masks", {
      masks: state.owner.map((m) => ({ name: m.name.trim(), points: m.points })),
    });
    accept(data);
    say("Saved. The doorbell hides these from the next moment of video on.");
    setTimeout(loadSnapshot, 3000);
  } catch (err) {
    say("");
    showError(inWords(err.message));
    renderButtons();
  }
});

// ---- loading ---------------------------------------------------------------------

function accept(data) {
  state.config = data.config;
  state.owner = data.owner;
  state.dirty = false;
  state.chosen = -1;
  render();
}

function loadSnapshot() {
  const img = $("snapshot");
  img.src = `/api/masks/snapshot?at=${Date.now()}`;
}

$("snapshot").addEventListener("load", () => {
  const img = $("snapshot");
  state.aspect = img.naturalHeight / img.naturalWidth;
  const at = new Date().toLocaleTimeString([], { hour: "numeric", minute: "2-digit", second: "2-digit" });
  $("snapshot-time").textContent = `as of ${at}`;
  render();
});
$("snapshot").addEventListener("error", () => {
  $("snapshot-time").textContent = "not available yet (nothing recorded so far)";
});

(async () => {
  try {
    accept(await api("/api/masks"));
  } catch (err) {
    showError(err.message);
  }
  loadSnapshot();
})();
