// tinycnn serve: the drawing pad and the panels. Plain JavaScript, no libraries.
//
// The pad keeps the drawing as a list of strokes (and an optional photo underneath), so undo
// is "drop the last stroke and redraw". After every change the pad is sent to the server as a
// PNG (POST /api/predict), at most one request in flight and at most one every MIN_GAP_MS,
// so predictions follow the pen while drawing without queueing up. Each answer repaints every
// panel; the time from the change to the repainted panels is kept in window.tinycnn.timings.
"use strict";

const MIN_GAP_MS = 60;          // throttle: at most ~16 requests a second
const PEN_WIDTH = 22;           // pad pixels: a digit ~200 px tall -> strokes ~2 px wide at MNIST's 20 px

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const state = {strokes: [], current: null, photo: null, file: null, paper: "#fff"};
window.tinycnn = {timings: [], serverSeconds: [], serverCpuSeconds: [], predictions: 0, last: null, errors: 0};

// -- drawing --------------------------------------------------------------------------------
function redraw() {
  const paper = state.photo ? state.paper : "#fff";
  ctx.fillStyle = paper;
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (state.photo) {                       // fitted inside the pad, aspect ratio kept
    const p = state.photo, s = Math.min(pad.width / p.width, pad.height / p.height);
    const w = p.width * s, h = p.height * s;
    ctx.drawImage(p, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  ctx.strokeStyle = isLight(paper) ? "#000" : "#fff";        // the pen draws ink on that paper
  ctx.lineWidth = PEN_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    ctx.beginPath();
    ctx.moveTo(stroke[0].x, stroke[0].y);
    if (stroke.length === 1) ctx.lineTo(stroke[0].x + 0.01, stroke[0].y);   // a dot
    for (const pt of stroke.slice(1)) ctx.lineTo(pt.x, pt.y);
    ctx.stroke();
  }
}

function padPoint(event) {                  // CSS pixels -> pad pixels
  const r = pad.getBoundingClientRect();
  return {x: (event.clientX - r.left) * pad.width / r.width, y: (event.clientY - r.top) * pad.height / r.height};
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  pad.setPointerCapture(event.pointerId);
  state.current = [padPoint(event)];
  state.strokes.push(state.current);
  redraw();
  changed();
});
pad.addEventListener("pointermove", (event) => {
  if (!state.current) return;
  // Coalesced events: every point the pen passed since the last frame, for smooth lines.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of (events.length ? events : [event])) state.current.push(padPoint(e));
  redraw();
  changed();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (state.current) { state.current = null; changed(); } });
}

function undo() {
  if (state.strokes.length) state.strokes.pop();
  else state.photo = state.file = null;
  redraw();
  changed();
}
function clearAll() {
  state.strokes = [];
  state.photo = state.file = null;
  redraw();
  changed();
}
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
});

// -- photos ---------------------------------------------------------------------------------
// A photo alone on the pad is sent as its own file (the server reads the same bytes
// `tinycnn predict` would, at full resolution); once strokes are drawn over it, the pad is
// sent. The pad fits the photo inside itself, and the margins left over take the colour of
// the photo's own border, so they read as more of its paper: white margins around a
// light-on-dark photo turned the whole photo into "ink" (0 of 6 such photos read right).
// A photo with transparent parts is laid on the paper tinycnn.preprocess.to_mnist would use
// (_on_background): white, unless the sheet is mostly transparent and what is on it mostly
// light (white ink on a transparent sheet, as a drawing app's dark mode exports it): then
// black, or the white ink would vanish on the white pad.
function isLight(colour) {               // "#fff", "#000" or "rgb(r, g, b)", as paperFor gives
  if (colour === "#fff" || colour === "#000") return colour === "#fff";
  const [r, g, b] = colour.match(/\d+/g).map(Number);
  return 0.299 * r + 0.587 * g + 0.114 * b > 127.5;
}

function paperFor(photo) {
  const s = Math.min(1, 280 / Math.max(photo.width, photo.height));
  const w = Math.max(1, Math.round(photo.width * s)), h = Math.max(1, Math.round(photo.height * s));
  const c = new OffscreenCanvas(w, h).getContext("2d");
  c.drawImage(photo, 0, 0, w, h);
  const d = c.getImageData(0, 0, w, h).data;
  let weight = 0, light = 0;
  for (let i = 0; i < d.length; i += 4) {
    const a = d[i + 3] / 255;
    weight += a;
    light += a * (0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]) / 255;
  }
  if (weight < 0.99 * w * h) return weight > 0 && weight < 0.5 * w * h && light / weight > 0.5 ? "#000" : "#fff";
  const border = [];                        // opaque: the median colour of its border pixels
  for (let x = 0; x < w; x++) border.push(x * 4, ((h - 1) * w + x) * 4);
  for (let y = 0; y < h; y++) border.push(y * w * 4, (y * w + w - 1) * 4);
  const median = (k) => border.map((i) => d[i + k]).sort((a, b) => a - b)[border.length >> 1];
  return `rgb(${median(0)}, ${median(1)}, ${median(2)})`;
}

async function usePhoto(file) {
  if (!file) return;
  try {
    state.photo = await createImageBitmap(file);
    state.file = file;
  } catch (err) {
    showError(`${file.name}: not an image this browser can read`);
    return;
  }
  state.paper = paperFor(state.photo);
  state.strokes = [];
  redraw();
  changed();
}
document.getElementById("photo").addEventListener("change", (e) => usePhoto(e.target.files[0]));
const dropZone = document.getElementById("drop-zone");
dropZone.addEventListener("dragover", (e) => { e.preventDefault(); dropZone.classList.add("over"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropZone.classList.remove("over");
  usePhoto(e.dataTransfer.files[0]);
});

// -- asking the server, throttled -------------------------------------------------------------
let maxBodyBytes = 0;       // the server's limit on a request (from /api/model; until then, the pad)
let changedAt = null;       // performance.now() of the oldest change not sent yet
let inFlight = false, lastSent = -Infinity, timer = null;

function changed() {
  if (changedAt === null) changedAt = performance.now();
  schedule();
}

function schedule() {
  if (inFlight || changedAt === null || timer !== null) return;
  const wait = lastSent + MIN_GAP_MS - performance.now();
  if (wait > 0) { timer = setTimeout(() => { timer = null; schedule(); }, wait); return; }
  send();
}

async function send() {
  const since = changedAt;
  changedAt = null;
  if (!state.strokes.length && !state.photo) { showEmpty(); return; }
  inFlight = true;
  lastSent = performance.now();
  try {
    const file = state.photo && !state.strokes.length && state.file && state.file.size <= maxBodyBytes
      ? state.file : null;
    const body = file || await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const type = file ? (file.type || "application/octet-stream") : "image/png";
    const response = await fetch("/api/predict", {method: "POST", headers: {"Content-Type": type}, body});
    const answer = await response.json();
    if (file && (response.status === 400 || response.status === 413)) {
      // Refused as a file (a format only the browser reads, such as HEIC; over 40 megapixels):
      // the pad, which shows it, is sent instead (unless another photo came meanwhile).
      if (state.file === file) state.file = null;
      if (changedAt === null) changedAt = since;
      return;                               // (finally: schedule() sends it)
    }
    if (state.strokes.length || state.photo) {   // (cleared meanwhile: the answer is stale)
      if (!response.ok) {                   // (the panels showed the previous drawing's answer)
        blankPanels();
        showError(answer.error || `error ${response.status}`);
      } else show(answer);
      // Time from the change to the repainted panels: taken once the browser has painted.
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      if (response.ok) {
        const ms = performance.now() - since;
        window.tinycnn.timings.push(ms);
        window.tinycnn.serverSeconds.push(answer.seconds);
        window.tinycnn.serverCpuSeconds.push(answer.cpu_seconds);
        document.getElementById("timing").textContent =
          `Last update: ${ms.toFixed(0)} ms from your last change to these panels (server ${(answer.seconds * 1000).toFixed(0)} ms).`;
      }
    }
  } catch (err) {
    blankPanels();
    showError("the tinycnn server is not answering (was it stopped?)");
  } finally {
    inFlight = false;
    schedule();                             // anything drawn meanwhile goes next
  }
}

// -- painting the answer --------------------------------------------------------------------
function bytes(b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// Colour maps: gray for the input (0 black .. 255 white), and for signed values (128 = 0) a
// diverging one: blue (negative) .. white (zero) .. orange (positive).
const gray = (v) => [v, v, v];
function diverging(v) {
  const t = (v - 127.5) / 127.5;            // -1 .. 1
  const c = t >= 0 ? [217, 72, 15] : [28, 111, 209], a = Math.abs(t);
  return [255 + (c[0] - 255) * a, 255 + (c[1] - 255) * a, 255 + (c[2] - 255) * a];
}

function paint(canvas, values, offset, width, height, colour) {
  canvas.width = width;
  canvas.height = height;
  const c = canvas.getContext("2d"), img = c.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = colour(values[offset + i]);
    img.data.set([r, g, b, 255], 4 * i);
  }
  c.putImageData(img, 0, 0);
}

function showBars(probabilities, names, best) {
  const bars = document.getElementById("bars");
  if (bars.children.length !== probabilities.length) {
    bars.textContent = "";
    names.forEach((name) => {
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = '<span class="label"></span><div class="track"><div class="fill"></div></div><span class="pct"></span>';
      row.querySelector(".label").textContent = name;
      bars.appendChild(row);
    });
  }
  probabilities.forEach((p, i) => {
    const row = bars.children[i];
    row.classList.toggle("best", i === best);
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
  });
}

function showLayers(layers) {
  const box = document.getElementById("layers");
  const shape = layers.map((l) => `${l.name}:${l.count}`).join();
  if (box.dataset.shape !== shape) {        // build the canvases once per model
    box.textContent = "";
    box.dataset.shape = shape;
    layers.forEach((l, i) => {
      const div = document.createElement("div");
      div.className = "layer";
      const looksAt = i === 0 ? "the pixels"
        : "the maps of the layer before (pooled), so they respond to combinations of its patterns: strokes, corners, curves";
      div.innerHTML = '<h3></h3><p class="explain"></p><div class="maps"></div>';
      div.querySelector("h3").textContent = `${l.name}: ${l.count} maps of ${l.width}x${l.height}`;
      div.querySelector("p").textContent = `${l.count} filters of ${l.kernel_size.join("x")} look at ${looksAt}.`;
      const maps = div.querySelector(".maps");
      for (let k = 0; k < l.count; k++) {
        const c = document.createElement("canvas");
        c.className = "pixels fmap";
        c.title = `${l.name}, filter ${k}`;
        maps.appendChild(c);
      }
      box.appendChild(div);
    });
  }
  layers.forEach((l, i) => {
    const values = bytes(l.data), size = l.width * l.height;
    const canvases = box.children[i].querySelectorAll("canvas");
    for (let k = 0; k < l.count; k++) paint(canvases[k], values, k * size, l.width, l.height, diverging);
  });
}

function show(answer) {
  window.tinycnn.predictions += 1;
  window.tinycnn.last = answer;
  const best = answer.class_index;
  const predicted = document.getElementById("predicted");
  predicted.dataset.class = answer.predicted;
  predicted.textContent = answer.predicted;
  const small = document.createElement("small");
  small.textContent = `${(100 * answer.probabilities[best]).toFixed(1)}% sure`;
  predicted.append(small);
  showBars(answer.probabilities, answer.class_names, best);
  const i = answer.input;
  paint(document.getElementById("input"), bytes(i.data), 0, i.width, i.height, gray);
  for (const [id, m] of [["saliency", answer.saliency], ["contribution", answer.ink_times_gradient]]) {
    paint(document.getElementById(id), bytes(m.data), 0, m.width, m.height, diverging);
  }
  showLayers(answer.layers);
  const status = document.getElementById("status");
  status.className = answer.note ? "explain note" : "explain";
  status.textContent = answer.note ? `Note: ${answer.note}.` : "";
}

function blankPanels() {
  const predicted = document.getElementById("predicted");
  predicted.textContent = "?";
  delete predicted.dataset.class;
  for (const fill of document.querySelectorAll(".fill")) fill.style.width = "0";
  for (const pct of document.querySelectorAll(".pct")) pct.textContent = "";
  for (const canvas of document.querySelectorAll("canvas.pixels")) canvas.width = canvas.width;   // blank
  document.getElementById("timing").textContent = "";
}

function showEmpty() {
  blankPanels();
  const status = document.getElementById("status");
  status.className = "explain";
  status.textContent = "Draw a digit to start.";
}

function showError(message) {
  window.tinycnn.errors += 1;
  const status = document.getElementById("status");
  status.className = "explain error";
  status.textContent = message;
}

// True when every change has been sent and its answer painted (the browser test waits on it).
window.tinycnn.idle = () => !inFlight && changedAt === null && timer === null;

// -- start ----------------------------------------------------------------------------------
redraw();
showEmpty();
fetch("/api/model").then((r) => r.json()).then((info) => {
  maxBodyBytes = info.max_body_bytes;     // photos up to it are sent as their own files
  document.getElementById("model-info").textContent =
    `Model: ${info.name}, ${info.parameters.toLocaleString("en")} parameters` +
    (info.provenance ? `; ${info.provenance}` : "") + ".";
}).catch(() => showError("the tinycnn server is not answering"));
