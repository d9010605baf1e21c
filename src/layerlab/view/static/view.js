/* layerlab view: draws what layerlab.view.data computed. Every number shown comes from the page
   data (the NumPy engine's values, geometry's windows, the engine's copy orders); this script only
   indexes, formats and draws. Values are (height, width, channels) arrays, row-major. */
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("layerlab-data").textContent);
  const MODEL = DATA.model.model;
  const LAYERS = DATA.model.layers;
  const STATIC = DATA.mode === "static";
  const MAX_TILES = 16;
  const MAX_TERMS = 400;
  const byName = {};
  LAYERS.forEach((l, i) => { l.index = i; byName[l.name] = l; });

  // --- arrays -------------------------------------------------------------------------------
  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function f32(item) { return { shape: item.shape, data: new Float32Array(bytes(item.b64)) }; }
  function i32(item) { return { shape: item.shape, data: new Int32Array(bytes(item.b64)) }; }
  function at(t, y, x, c) { return t.data[(y * t.shape[1] + x) * t.shape[2] + c]; }
  LAYERS.forEach((l) => {
    l.w = {};
    for (const name in l.weights) l.w[name] = f32(l.weights[name]);
    if (l.source) l.src = { input: i32(l.source.input), index: i32(l.source.index) };
  });

  // --- numbers ------------------------------------------------------------------------------
  function fmt(v) {
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    return String(Number(v.toPrecision(6)));
  }
  function paren(s) { return s.startsWith("-") ? "(" + s + ")" : s; }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- state --------------------------------------------------------------------------------
  const state = { run: null, selected: null, pixels: null, busy: false, dirty: false, runIndex: 0, int8: false, lastBody: null };
  window.layerlab = { ready: false, runs: 0, state: state, model: MODEL };

  function showError(text) {
    const box = document.getElementById("error");
    box.textContent = text;
    box.hidden = !text;
  }

  // --- header -------------------------------------------------------------------------------
  document.getElementById("model-name").textContent = MODEL.name;
  const facts = document.getElementById("model-facts");
  facts.textContent = `${MODEL.source} \u00b7 input ${JSON.stringify(MODEL.input_shape)} ${MODEL.input_layout} \u00b7 ` +
    `${MODEL.params.toLocaleString()} parameters \u00b7 ${MODEL.macs.toLocaleString()} MACs per input`;
  if (!MODEL.trained) facts.append(el("span", { class: "untrained" }, " \u00b7 untrained: seeded random weights (open a trained model file for real predictions)"));

  // --- colours ------------------------------------------------------------------------------
  function colour(v, m) {
    if (!isFinite(v)) return [255, 0, 255];
    const t = m > 0 ? Math.max(-1, Math.min(1, v / m)) : 0;
    if (t >= 0) return [255 - 40 * t, 255 - 150 * t, 255 - 230 * t];
    return [255 + 215 * t, 255 + 120 * t, 255 + 20 * t];
  }

  // --- tiles: one canvas per channel, one pixel per cell, scaled by CSS -------------------------
  function grid(shape) {
    const [h, w] = shape;
    const wrap = h === 1 && w > 32 ? 32 : 0;  // a vector or a long sequence wraps into rows of 32
    return wrap ? { gw: wrap, gh: Math.ceil(w / wrap), wrap } : { gw: w, gh: h, wrap: 0 };
  }
  function cellSize(g) { return Math.max(3, Math.min(12, Math.floor(150 / Math.max(g.gw, g.gh)))); }
  function toGrid(g, y, x) { return g.wrap ? [x % g.wrap, Math.floor(x / g.wrap)] : [x, y]; }
  function fromGrid(g, gx, gy, shape) {
    if (g.wrap) { const x = gy * g.wrap + gx; return x < shape[1] ? [0, x] : null; }
    return gy < shape[0] && gx < shape[1] ? [gy, gx] : null;
  }

  function buildTiles(card, key, shape, label) {
    const g = grid(shape);
    const cs = cellSize(g);
    const holder = el("div", { class: "tiles" });
    const channels = shape[2];
    const shown = Math.min(channels, MAX_TILES);
    const tiles = [];
    function add(c) {
      const wrap = el("div", { class: "tile" });
      const canvas = el("canvas", { id: `tile-${key}-${c}`, "data-layer": key, "data-c": c, "data-cs": cs, "data-wrap": g.wrap, width: g.gw, height: g.gh });
      canvas.style.width = g.gw * cs + "px";
      canvas.style.height = g.gh * cs + "px";
      wrap.append(canvas);
      if (channels > 1) wrap.append(el("span", { class: "label" }, `${label} ${c}`));
      holder.append(wrap);
      const tile = { c, canvas, wrap, g, cs, shape, key };
      canvas.addEventListener("mousemove", (ev) => hover(tile, ev));
      canvas.addEventListener("mouseleave", () => { document.getElementById("tooltip").hidden = true; });
      canvas.addEventListener("click", (ev) => {
        const cell = fromGrid(g, Math.floor(ev.offsetX / cs), Math.floor(ev.offsetY / cs), shape);
        if (cell && key !== "input") select(key, cell[0], cell[1], c);
      });
      tiles.push(tile);
      return tile;
    }
    for (let c = 0; c < shown; c++) add(c);
    if (channels > shown) {
      const more = el("button", { class: "more" }, `show all ${channels} ${label}s`);
      more.addEventListener("click", () => {
        more.remove();
        for (let c = shown; c < channels; c++) add(c);
        paintLayer(key);
      });
      holder.append(more);
    }
    card.append(holder);
    return tiles;
  }

  const TILES = {};
  function engineValues(key) {
    if (!state.run) return null;
    return key === "input" ? state.run.input : state.run.layers[key].out;
  }
  function cValues(key) { return state.int8 && state.run && state.run.c ? state.run.c[key] || null : null; }
  function values(key) {  // what the tiles show: the int8 C export's values when the toggle is on and it has them
    const c = cValues(key);
    return c ? c.out : engineValues(key);
  }
  function paintStatus(key) {
    const status = document.getElementById(`c-${key}`);
    if (!status) return;
    const c = cValues(key);
    status.hidden = !state.int8 || !state.run || !state.run.c;
    if (status.hidden) return;
    status.textContent = c ? `int8 C export: max |int8 - float| = ${fmt(c.max_diff)} (${fmt(100 * c.max_diff / (c.range || 1))}% of the float range)`
      : "int8 C export: fused into the next C step, no value of its own here (float shown)";
  }
  function paintLayer(key) {
    paintStatus(key);
    const t = values(key);
    if (!t) return;
    let m = 0;
    for (let i = 0; i < t.data.length; i++) { const a = Math.abs(t.data[i]); if (isFinite(a) && a > m) m = a; }
    for (const tile of TILES[key]) {
      const ctx = tile.canvas.getContext("2d");
      const img = ctx.createImageData(tile.g.gw, tile.g.gh);
      img.data.fill(255);
      for (let y = 0; y < t.shape[0]; y++) for (let x = 0; x < t.shape[1]; x++) {
        const [gx, gy] = toGrid(tile.g, y, x);
        const rgb = colour(at(t, y, x, tile.c), m);
        const o = (gy * tile.g.gw + gx) * 4;
        img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2];
      }
      ctx.putImageData(img, 0, 0);
    }
  }

  function hover(tile, ev) {
    const t = values(tile.key);
    const cell = fromGrid(tile.g, Math.floor(ev.offsetX / tile.cs), Math.floor(ev.offsetY / tile.cs), tile.shape);
    const tip = document.getElementById("tooltip");
    if (!t || !cell) { tip.hidden = true; return; }
    tip.textContent = `${tile.key}${where(tile.shape, cell[0], cell[1], tile.c)} = ${fmt(at(t, cell[0], cell[1], tile.c))}`;
    tip.style.left = ev.clientX + 12 + "px";
    tip.style.top = ev.clientY + 12 + "px";
    tip.hidden = false;
  }
  function where(shape, y, x, c) {
    if (shape[0] === 1 && shape[2] === 1) return `[${x}]`;
    if (shape[0] === 1) return `[${x}, ${c}]`;
    return `[${y}, ${x}, ${c}]`;
  }

  // --- the layer cards ----------------------------------------------------------------------
  const layersBox = document.getElementById("layers");
  function card(key, title, type, lines, notes, shape, label) {
    const box = el("article", { class: "card", id: `card-${key}` });
    const h = el("h3");
    h.append(document.createTextNode(title + " "), el("span", { class: "type" }, type));
    box.append(h);
    for (const [cls, text] of lines) box.append(el("div", { class: cls }, text));
    for (const note of notes) box.append(el("p", { class: "marker" }, note));
    if (key !== "input") box.append(el("p", { class: "c-status", id: `c-${key}`, hidden: "" }));
    TILES[key] = buildTiles(box, key, shape, label);
    layersBox.append(box);
    return box;
  }
  card("input", "input", "", [["facts", `shape ${JSON.stringify(MODEL.input_shape)} (${MODEL.input_layout})`]], [], MODEL.input_hwc, "channel");
  for (const l of LAYERS) {
    const args = Object.entries(l.args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    const lines = [
      ["args", args],
      ["facts", `output ${JSON.stringify(l.output_shape)} \u00b7 ${l.params.toLocaleString()} params \u00b7 ` +
        `${l.macs.toLocaleString()} MACs \u00b7 ${l.bytes.toLocaleString()} B (float32)`],
    ];
    const previous = l.index === 0 ? "input" : LAYERS[l.index - 1].name;
    if (l.inputs.length !== 1 || l.inputs[0] !== previous) lines.push(["from", "reads " + l.inputs.join(", ")]);
    card(l.name, l.name, l.type, lines, l.notes, l.shape, l.kind === "conv" ? "filter" : "channel");
  }

  function drawEdges() {  // arcs on the left for every link that skips a card
    const old = document.getElementById("edges");
    if (old) old.remove();
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.id = "edges";
    svg.setAttribute("width", "14");
    svg.setAttribute("height", layersBox.scrollHeight);
    let depth = 0;
    for (const l of LAYERS) {
      const previous = l.index === 0 ? "input" : LAYERS[l.index - 1].name;
      for (const src of l.inputs) {
        if (src === previous) continue;
        const a = document.getElementById(`card-${src}`), b = document.getElementById(`card-${l.name}`);
        const y1 = a.offsetTop + a.offsetHeight / 2, y2 = b.offsetTop + 14, x = 12 - 4 * (depth++ % 3);
        const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
        path.setAttribute("d", `M14 ${y1} C ${x - 10} ${y1}, ${x - 10} ${y2}, 14 ${y2}`);
        path.setAttribute("fill", "none");
        path.setAttribute("stroke", "#8a94a8");
        path.setAttribute("stroke-width", "1.5");
        svg.append(path);
      }
    }
    layersBox.append(svg);
  }

  // --- prediction ---------------------------------------------------------------------------
  function paintPrediction() {
    const box = document.getElementById("prediction");
    box.replaceChildren();
    const last = LAYERS[LAYERS.length - 1];
    if (!MODEL.classes || !state.run) {
      box.append(el("p", { class: "note" }, "The output is not a class vector; see the last layer's card."));
      return;
    }
    const out = values(last.name).data;
    let top = 0, m = 0;
    for (let i = 0; i < out.length; i++) { if (out[i] > out[top]) top = i; m = Math.max(m, Math.abs(out[i])); }
    box.dataset.top = top;
    const probabilities = last.activation === "softmax";
    for (let i = 0; i < out.length; i++) {
      const bar = el("div", { class: "bar" + (i === top ? " top" : ""), id: `pred-${i}` });
      const fill = el("div", { class: "fill" });
      fill.style.width = Math.max(0, (probabilities ? out[i] : Math.abs(out[i]) / (m || 1)) * 100) + "%";
      const track = el("div");
      track.append(fill);
      bar.append(el("span", {}, String(i)), track, el("span", { title: fmt(out[i]) }, Number(out[i].toPrecision(3)).toString()));
      box.append(bar);
    }
  }

  // --- the input panel ----------------------------------------------------------------------
  const canvas = document.getElementById("draw");
  const CANVAS = MODEL.canvas;  // [h, w, c] or null
  const note = document.getElementById("input-note");
  const controls = document.getElementById("controls");
  let scale = 1;
  if (CANVAS) {
    scale = Math.max(2, Math.floor(240 / Math.max(CANVAS[0], CANVAS[1])));
    canvas.width = CANVAS[1];
    canvas.height = CANVAS[0];
    canvas.style.width = CANVAS[1] * scale + "px";
    canvas.style.height = CANVAS[0] * scale + "px";
    state.pixels = new Float32Array(CANVAS[0] * CANVAS[1] * CANVAS[2]);
  } else {
    document.getElementById("canvas-wrap").hidden = true;
  }
  function paintCanvas() {
    if (!CANVAS) return;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(CANVAS[1], CANVAS[0]);
    for (let i = 0; i < CANVAS[0] * CANVAS[1]; i++) {
      for (let k = 0; k < 3; k++) img.data[i * 4 + k] = state.pixels[i * CANVAS[2] + (CANVAS[2] === 3 ? k : 0)];
      img.data[i * 4 + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  function pixelsFromRun(run) {  // the static page's inputs back as canvas pixels, for the picture only
    if (!CANVAS) return;
    document.getElementById("canvas-wrap").hidden = !run.pixels;  // an array input has no picture: see its card
    if (!run.pixels) return;
    state.pixels = f32(run.pixels).data.slice();
    paintCanvas();
  }

  function button(text, id, onclick) {
    const b = el("button", { id }, text);
    b.addEventListener("click", onclick);
    controls.append(b);
    return b;
  }

  async function request(body) {
    state.busy = true;
    state.lastBody = body;
    if (state.int8) body = Object.assign({}, body, { int8: true });
    const started = performance.now();
    try {
      const response = await fetch("api/run", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const answer = await response.json();
      if (!response.ok || answer.error) {
        showError(answer.error || `the server answered ${response.status}`);
        if (body.int8) { state.int8 = false; toggle.checked = false; }  // e.g. nothing to calibrate on: said in the banner
        return;
      }
      showError("");
      // an MNIST image comes back as pixels for the canvas; a drawn input is already there (and may have grown since)
      if (answer.pixels && CANVAS && !body.pixels) { state.pixels = f32(answer.pixels).data.slice(); paintCanvas(); }
      if (body.random !== undefined) note.textContent = `${answer.label}: numbers, not pixels; the input card shows them`;
      if (body.mnist !== undefined) note.textContent = answer.label;
      setRun(answer);
      window.layerlab.lastRunMs = performance.now() - started;  // request, engine, decode and paint (benchmarks/view.py)
    } catch (err) {
      showError(`layerlab view: the server did not answer (${err.message}); is \`layerlab view\` still running?`);
    } finally {
      state.busy = false;
      if (state.dirty) { state.dirty = false; sendPixels(); }
    }
  }
  function sendPixels() {
    if (state.busy) { state.dirty = true; return; }
    request({ pixels: Array.from(state.pixels), shape: CANVAS });
  }

  if (STATIC) {
    note.textContent = `A static page, computed for ${DATA.runs.length} input${DATA.runs.length === 1 ? "" : "s"}. ` +
      "Run `layerlab view MODEL` to draw your own.";
    const runs = document.getElementById("runs");
    DATA.runs.forEach((run, k) => {
      const b = el("button", { id: `run-${k}` }, run.label || `input ${k}`);
      b.addEventListener("click", () => { state.runIndex = k; setRun(run); pixelsFromRun(run); });
      runs.append(b);
    });
  } else {
    if (CANVAS) {
      note.textContent = MODEL.mnist ? "Draw a digit (white on black), as MNIST has them." : "Draw on the input (pixels 0..255).";
      let drawing = false, last = null;
      const stamp = (fx, fy) => {
        const radius = Math.max(1.2, CANVAS[0] / 20);
        for (let y = Math.floor(fy - radius - 1); y <= fy + radius + 1; y++) for (let x = Math.floor(fx - radius - 1); x <= fx + radius + 1; x++) {
          if (y < 0 || x < 0 || y >= CANVAS[0] || x >= CANVAS[1]) continue;
          const d = Math.hypot(x + 0.5 - fx, y + 0.5 - fy);
          const v = 255 * Math.max(0, Math.min(1, radius + 0.5 - d));
          for (let k = 0; k < CANVAS[2]; k++) {
            const i = (y * CANVAS[1] + x) * CANVAS[2] + k;
            state.pixels[i] = Math.max(state.pixels[i], v);
          }
        }
      };
      const paint = (ev) => {  // a stroke: stamps every half cell from the last point, so fast moves leave no gaps
        const r = canvas.getBoundingClientRect();
        const fx = (ev.clientX - r.left) / scale, fy = (ev.clientY - r.top) / scale;
        const [x0, y0] = last || [fx, fy];
        const steps = Math.max(1, Math.ceil(2 * Math.hypot(fx - x0, fy - y0)));
        for (let s = 1; s <= steps; s++) stamp(x0 + ((fx - x0) * s) / steps, y0 + ((fy - y0) * s) / steps);
        last = [fx, fy];
        paintCanvas();
        sendPixels();
      };
      canvas.addEventListener("pointerdown", (ev) => { drawing = true; last = null; canvas.setPointerCapture(ev.pointerId); paint(ev); });
      canvas.addEventListener("pointermove", (ev) => { if (drawing) paint(ev); });
      canvas.addEventListener("pointerup", () => { drawing = false; last = null; });
      button("Clear", "clear", () => { state.pixels.fill(0); paintCanvas(); sendPixels(); });
      const upload = el("input", { type: "file", accept: "image/*", id: "upload", hidden: "" });
      upload.addEventListener("change", () => uploadImage(upload.files[0]));
      controls.append(upload);
      button("Upload image", "upload-button", () => upload.click());
    }
    if (MODEL.mnist) {
      const index = el("input", { type: "number", id: "mnist-index", min: 0, max: 9999, value: 0 });
      controls.append(index);
      button("MNIST test image", "mnist", () => request({ mnist: Number(index.value) }));
    }
    const seed = { value: 0 };
    button("Random input", "random", () => request({ random: seed.value++ }));
  }

  // the int8 toggle: the C export's own numbers on every tile, the prediction and the detail
  const toggleLabel = el("label", { id: "int8-label" });
  const toggle = el("input", { type: "checkbox", id: "int8" });
  toggleLabel.append(toggle, document.createTextNode(" int8 C export's values"));
  const hasC = !STATIC || DATA.runs.some((run) => run.c);
  if (hasC) document.getElementById("input-panel").append(toggleLabel);
  toggle.addEventListener("change", () => {
    state.int8 = toggle.checked;
    if (STATIC || (state.run && state.run.c) || !state.int8) { repaint(); return; }
    note.textContent = "building the int8 C export (calibrate, generate, compile)...";
    request(state.lastBody || { pixels: Array.from(state.pixels || []), shape: CANVAS });
  });
  function repaint() {
    paintLayer("input");
    for (const l of LAYERS) paintLayer(l.name);
    paintPrediction();
    if (state.selected) select(state.selected.layer, state.selected.y, state.selected.x, state.selected.c);
  }

  function uploadImage(file) {
    if (!file) return;
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const off = document.createElement("canvas");
      off.width = CANVAS[1];
      off.height = CANVAS[0];
      const ctx = off.getContext("2d");
      ctx.drawImage(img, 0, 0, CANVAS[1], CANVAS[0]);
      const data = ctx.getImageData(0, 0, CANVAS[1], CANVAS[0]).data;
      let mean = 0;
      for (let i = 0; i < CANVAS[0] * CANVAS[1]; i++) mean += (data[i * 4] + data[i * 4 + 1] + data[i * 4 + 2]) / 3;
      mean /= CANVAS[0] * CANVAS[1];
      const invert = MODEL.mnist && mean > 127;  // dark ink on white paper: MNIST digits are white on black
      for (let i = 0; i < CANVAS[0] * CANVAS[1]; i++) {
        for (let k = 0; k < CANVAS[2]; k++) {
          const v = CANVAS[2] === 3 ? data[i * 4 + k] : Math.round((data[i * 4] + data[i * 4 + 1] + data[i * 4 + 2]) / 3);
          state.pixels[i * CANVAS[2] + k] = invert ? 255 - v : v;
        }
      }
      note.textContent = `${file.name}, resized to ${CANVAS[1]}x${CANVAS[0]}` + (invert ? ", inverted (white digit on black, as MNIST)" : "");
      URL.revokeObjectURL(url);
      paintCanvas();
      sendPixels();
    };
    img.onerror = () => { showError(`${file.name}: not an image file the browser can read`); URL.revokeObjectURL(url); };
    img.src = url;
  }

  // --- a run: every layer's values ----------------------------------------------------------
  function setRun(raw) {
    const run = { label: raw.label, input: f32(raw.input), layers: {} };
    for (const name in raw.layers) {
      const item = raw.layers[name];
      run.layers[name] = { out: f32(item.out), pre: item.pre ? f32(item.pre) : null };
    }
    if (raw.c) {
      run.c = {};
      for (const name in raw.c) run.c[name] = { out: f32(raw.c[name].out), max_diff: raw.c[name].max_diff, range: raw.c[name].range };
    }
    state.run = run;
    paintLayer("input");
    for (const l of LAYERS) paintLayer(l.name);
    paintPrediction();
    if (raw.finite === false) showError("the output holds NaN or infinity: the weights or the input overflow");
    if (state.selected) select(state.selected.layer, state.selected.y, state.selected.x, state.selected.c);
    window.layerlab.runs += 1;
    document.body.dataset.runs = window.layerlab.runs;
  }

  // --- a click: what one output cell read and computed --------------------------------------------
  function inputOf(l, k) { return engineValues(l.inputs[k || 0]); }  // the arithmetic shown is the engine's
  function clearBoxes() { document.querySelectorAll(".tile .box").forEach((b) => b.remove()); }
  function boxOn(key, channels, rows, cols) {  // frame the window on the tiles of the layer it read
    for (const tile of TILES[key] || []) {
      if (channels && !channels.includes(tile.c)) continue;
      if (tile.g.wrap) continue;
      const [h, w] = tile.shape;
      const y0 = Math.min(...rows), y1 = Math.max(...rows), x0 = Math.min(...cols), x1 = Math.max(...cols);
      const box = el("div", { class: "box" + (y0 < 0 || x0 < 0 || y1 >= h || x1 >= w ? " pad" : "") });
      const cy0 = Math.max(0, y0), cy1 = Math.min(h - 1, y1), cx0 = Math.max(0, x0), cx1 = Math.min(w - 1, x1);
      box.style.left = tile.canvas.offsetLeft + 1 + cx0 * tile.cs + "px";
      box.style.top = tile.canvas.offsetTop + 1 + cy0 * tile.cs + "px";
      box.style.width = (cx1 - cx0 + 1) * tile.cs + "px";
      box.style.height = (cy1 - cy0 + 1) * tile.cs + "px";
      tile.wrap.append(box);
    }
  }

  function windowTable(caption, rows, cols, valueAt, padText, channel) {
    const table = el("table", { class: "window", "data-channel": channel });
    table.append(el("caption", {}, caption));
    for (const r of rows) {
      const tr = el("tr");
      for (const c of cols) {
        const v = valueAt(r, c);
        const td = el("td", { "data-in": `${r},${c}` }, v === null ? padText : fmt(v));
        if (v === null) td.className = "pad";
        tr.append(td);
      }
      table.append(tr);
    }
    return table;
  }
  function kernelTable(caption, kh, kw, tap) {
    const table = el("table", { class: "kernel" });
    table.append(el("caption", {}, caption));
    for (let i = 0; i < kh; i++) {
      const tr = el("tr");
      for (let j = 0; j < kw; j++) tr.append(el("td", {}, fmt(tap(i, j))));
      table.append(tr);
    }
    return table;
  }
  function inside(t, r, c) { return r >= 0 && c >= 0 && r < t.shape[0] && c < t.shape[1]; }

  function select(key, y, x, c) {
    const l = byName[key];
    state.selected = { layer: key, y, x, c };
    document.querySelectorAll(".card.selected").forEach((e) => e.classList.remove("selected"));
    document.getElementById(`card-${key}`).classList.add("selected");
    const box = document.getElementById("detail");
    box.replaceChildren();
    box.dataset.layer = key; box.dataset.y = y; box.dataset.x = x; box.dataset.c = c;
    clearBoxes();
    const out = state.run.layers[key];
    const value = at(out.out, y, x, c);
    box.append(el("h2", {}, `${l.name} (${l.type}) out${where(l.shape, y, x, c)}`));
    const explain = EXPLAIN[l.kind] || explainValue;
    explain(l, box, y, x, c, out);
    const result = el("div", { class: "result", "data-value": value }, resultText(l, y, x, c, out));
    box.append(result);
    const cv = cValues(key);
    if (cv) {
      const q = at(cv.out, y, x, c);
      box.append(el("div", { class: "result c", "data-c-value": q },
        `int8 C export: ${fmt(q)} (float engine ${fmt(value)}, difference ${fmt(q - value)})`));
    } else if (state.int8 && state.run.c) {
      box.append(el("p", { class: "note" }, "int8 C export: this layer is fused into the next C step; it keeps no value of its own"));
    }
    window.layerlab.selected = { layer: key, y, x, c, value };
  }
  function resultText(l, y, x, c, out) {
    const value = fmt(at(out.out, y, x, c));
    if (out.pre) return `= ${fmt(at(out.pre, y, x, c))} \u2192 ${l.activation} \u2192 ${value}`;
    return `= ${value}`;
  }
  function sumText(terms, bias) {
    const parts = terms.slice(0, MAX_TERMS);
    let text = parts.join(" + ");
    if (terms.length > MAX_TERMS) text += ` + ... (${terms.length - MAX_TERMS} more products)`;
    if (bias !== null) text += ` + ${paren(fmt(bias))} (bias)`;
    return text;
  }
  function addTerms(box, heading, terms, bias) {
    box.append(el("h3", {}, heading));
    box.append(el("div", { class: "terms" }, sumText(terms, bias)));
  }
  function fill(box, text) { box.append(el("p", { class: "fill" }, text)); }

  function explainWindowed(l, box, y, x, c) {
    const win = l.window, t = inputOf(l);
    const rows = win.rows[y], cols = win.cols[x];
    const [kh, kw] = win.kernel;
    const [pt, pb, pl, pr] = win.pad;
    box.append(el("p", {}, `reads input rows ${rows.join(", ")} and columns ${cols.join(", ")} of '${l.inputs[0]}' ` +
      `(padding: top ${pt}, bottom ${pb}, left ${pl}, right ${pr})`));
    return { win, t, rows, cols, kh, kw };
  }
  const EXPLAIN = {
    conv(l, box, y, x, c) {
      const { t, rows, cols, kh, kw } = explainWindowed(l, box, y, x, c);
      const K = l.w.kernel, cin = K.shape[2], F = K.shape[3];
      if (rows.some((r) => r < 0 || r >= t.shape[0]) || cols.some((q) => q < 0 || q >= t.shape[1])) fill(box, "padding: zeros (a padded cell adds 0 * weight = 0)");
      const terms = [];
      for (let ci = 0; ci < cin; ci++) {
        if (ci < MAX_TILES) {  // the window of each input channel beside the kernel taps that meet it
          const pair = el("div", { class: "pair" });
          pair.append(windowTable(`input channel ${ci}`, rows, cols, (r, q) => inside(t, r, q) ? at(t, r, q, ci) : null, "0 pad", ci));
          pair.append(kernelTable(`kernel[:, :, ${ci}, ${c}]`, kh, kw, (i, j) => K.data[((i * kw + j) * cin + ci) * F + c]));
          box.append(pair);
        } else if (ci === MAX_TILES) {
          box.append(el("p", { class: "note" }, `... and ${cin - MAX_TILES} more input channels (all in the sum below)`));
        }
      }
      rows.forEach((r, i) => cols.forEach((q, j) => {
        for (let ci = 0; ci < cin; ci++) {
          const w = K.data[((i * kw + j) * cin + ci) * F + c];
          terms.push(`${paren(fmt(w))}*${inside(t, r, q) ? paren(fmt(at(t, r, q, ci))) : "0[pad]"}`);
        }
      }));
      boxOn(l.inputs[0], null, rows, cols);
      addTerms(box, `sum over ${kh}x${kw} taps x ${cin} channels = ${terms.length} products`, terms, l.w.bias ? l.w.bias.data[c] : null);
    },
    depthwise(l, box, y, x, c) {
      const { t, rows, cols, kh, kw } = explainWindowed(l, box, y, x, c);
      const K = l.w.kernel, C = K.shape[2], M = K.shape[3], ci = Math.floor(c / M), m = c % M;
      box.append(el("p", {}, `output channel ${c} = input channel ${ci} convolved with kernel[:, :, ${ci}, ${m}] ` +
        `(depth_multiplier ${M}): a depthwise window reads ONE input channel`));
      if (rows.some((r) => r < 0 || r >= t.shape[0]) || cols.some((q) => q < 0 || q >= t.shape[1])) fill(box, "padding: zeros");
      box.append(windowTable(`input channel ${ci}`, rows, cols, (r, q) => inside(t, r, q) ? at(t, r, q, ci) : null, "0 pad", ci));
      box.append(kernelTable(`kernel[:, :, ${ci}, ${m}]`, kh, kw, (i, j) => K.data[((i * kw + j) * C + ci) * M + m]));
      const terms = [];
      rows.forEach((r, i) => cols.forEach((q, j) => {
        terms.push(`${paren(fmt(K.data[((i * kw + j) * C + ci) * M + m]))}*${inside(t, r, q) ? paren(fmt(at(t, r, q, ci))) : "0[pad]"}`);
      }));
      boxOn(l.inputs[0], [ci], rows, cols);
      addTerms(box, `sum over ${kh}x${kw} taps = ${terms.length} products`, terms, l.w.bias ? l.w.bias.data[c] : null);
    },
    max_pool(l, box, y, x, c) {
      const { t, rows, cols } = explainWindowed(l, box, y, x, c);
      fill(box, "padding: -inf, so a padded cell never wins: a border window is the max of its real cells");
      box.append(windowTable(`channel ${c}`, rows, cols, (r, q) => inside(t, r, q) ? at(t, r, q, c) : null, "-inf", c));
      const real = [];
      rows.forEach((r) => cols.forEach((q) => { if (inside(t, r, q)) real.push(fmt(at(t, r, q, c))); }));
      boxOn(l.inputs[0], [c], rows, cols);
      addTerms(box, `max of ${real.length} real cells`, [`max(${real.join(", ")})`], null);
    },
    avg_pool(l, box, y, x, c) {
      const { t, rows, cols } = explainWindowed(l, box, y, x, c);
      const real = [];
      rows.forEach((r) => cols.forEach((q) => { if (inside(t, r, q)) real.push(paren(fmt(at(t, r, q, c)))); }));
      const skipped = rows.length * cols.length - real.length;
      if (skipped) fill(box, `padding: left out of the count: ${skipped} pad cell${skipped === 1 ? "" : "s"}; divides by the ${real.length} real cells, not the pool area`);
      box.append(windowTable(`channel ${c}`, rows, cols, (r, q) => inside(t, r, q) ? at(t, r, q, c) : null, "left out", c));
      boxOn(l.inputs[0], [c], rows, cols);
      addTerms(box, `mean of ${real.length} real cells`, [`(${real.join(" + ")}) / ${real.length}`], null);
    },
    global_max(l, box, y, x, c) { explainGlobal(l, box, c, "max"); },
    global_avg(l, box, y, x, c) { explainGlobal(l, box, c, "mean"); },
    dense(l, box, y, x, c) {
      const t = inputOf(l), W = l.w.kernel, n = W.shape[0], units = W.shape[1], j = x;
      box.append(el("p", {}, `out[${j}] = sum_i x[i] * kernel[i, ${j}]` + (l.w.bias ? ` + bias[${j}]` : "") + ` over all ${n} inputs of '${l.inputs[0]}'`));
      const terms = [];
      for (let i = 0; i < n; i++) terms.push(`${paren(fmt(t.data[i]))}*${paren(fmt(W.data[i * units + j]))}`);
      addTerms(box, `${n} products x[i]*kernel[i, ${j}]`, terms, l.w.bias ? l.w.bias.data[j] : null);
    },
    copy(l, box, y, x, c) {
      const p = (y * l.shape[1] + x) * l.shape[2] + c;
      if (!l.src) { explainValue(l, box); return; }
      const k = l.src.input.data[p], index = l.src.index.data[p];
      if (k < 0) {
        fill(box, `a zero ${l.type} adds (padding): it reads no input`);
        box.append(el("p", { class: "copy", "data-in": "pad" }, "copies nothing"));
        return;
      }
      const shape = l.input_shapes[k];
      const cc = index % shape[2], xx = Math.floor(index / shape[2]) % shape[1], yy = Math.floor(index / (shape[2] * shape[1]));
      const t = inputOf(l, k);
      box.append(el("p", { class: "copy", "data-in": `${k},${yy},${xx},${cc}` },
        `copies '${l.inputs[k]}'${where(shape, yy, xx, cc)} = ${fmt(at(t, yy, xx, cc))}` +
        (l.type === "Flatten" ? ` (element ${x} of the flat output, in the engine's and Keras' order)` : "")));
      if (!grid(shape).wrap) boxOn(l.inputs[k], [cc], [yy], [xx]);
    },
    elementwise(l, box, y, x, c) {
      const t = inputOf(l), v = at(t, y, x, c), a = l.args;
      let text = `reads the one cell at its own index: x = ${fmt(v)}`;
      if (l.type === "BatchNormalization") {
        const part = (name, fallback) => (l.w[name] ? l.w[name].data[c] : fallback);
        text += `; gamma * (x - mean) / sqrt(variance + epsilon) + beta = ${fmt(part("gamma", 1))} * (${fmt(v)} - ${fmt(part("moving_mean", 0))}) / ` +
          `sqrt(${fmt(part("moving_variance", 1))} + ${fmt(a.epsilon)}) + ${fmt(part("beta", 0))} (channel ${c})`;
      } else if (l.type === "Rescaling") {
        text += `; x * ${fmt(a.scale)} + ${fmt(a.offset)}`;
      } else if (l.type === "ReLU") {
        text += `; ReLU(max_value=${a.max_value}, negative_slope=${a.negative_slope}, threshold=${a.threshold})`;
      } else if (l.type === "PReLU") {
        text += `; alpha = ${fmt(at(l.w.alpha, y, x, c))}: x if x >= 0 else alpha * x`;
      } else if (l.type === "Activation") {
        text += `; ${a.activation}(x)`;
      } else if (l.type === "Dropout") {
        text += "; Dropout is the identity at inference";
      }
      box.append(el("p", { class: "copy", "data-in": `0,${y},${x},${c}` }, text));
      if (!grid(l.shape).wrap) boxOn(l.inputs[0], [c], [y], [x]);
    },
    merge(l, box, y, x, c) {
      // An input of size 1 along an axis is read at index 0 there: Keras stretches it (a gate)
      const cells = l.inputs.map((name, k) => {
        const s = inputOf(l, k).shape;
        return [s[0] === 1 ? 0 : y, s[1] === 1 ? 0 : x, s[2] === 1 ? 0 : c];
      });
      const parts = l.inputs.map((name, k) => {
        const [yy, xx, cc] = cells[k];
        return `${name}${where(l.shape, yy, xx, cc)} = ${fmt(at(inputOf(l, k), yy, xx, cc))}`;  // one rank for all
      });
      const stretched = cells.some(([yy, xx, cc]) => yy !== y || xx !== x || cc !== c);
      const how = stretched ? "the cell at the same index of each input, an input's size-1 axis at index 0 (Keras stretches it)" :
        "the cell at the same index of each input";
      box.append(el("p", { class: "copy", "data-in": cells.map((cell) => cell.join(",")).join(";") }, `${l.type} of ${how}: ${parts.join("; ")}`));
      if (!grid(l.shape).wrap) l.inputs.forEach((name, k) => boxOn(name, [cells[k][2]], [cells[k][0]], [cells[k][1]]));
    },
  };
  function explainGlobal(l, box, c, what) {
    const t = inputOf(l);
    box.append(el("p", {}, `${what} of all ${t.shape[0] * t.shape[1]} cells of channel ${c} of '${l.inputs[0]}': no window, no padding`));
    boxOn(l.inputs[0], [c], [0, t.shape[0] - 1], [0, t.shape[1] - 1]);
  }
  function explainValue(l, box) {
    for (const n of l.notes) box.append(el("p", { class: "note" }, n));
  }

  // --- start --------------------------------------------------------------------------------
  paintCanvas();
  drawEdges();
  window.addEventListener("resize", drawEdges);
  if (STATIC) {
    if (DATA.runs.length) { setRun(DATA.runs[0]); pixelsFromRun(DATA.runs[0]); }
  } else if (DATA.first) {
    if (DATA.first.pixels && CANVAS) { state.pixels = f32(DATA.first.pixels).data.slice(); paintCanvas(); }
    setRun(DATA.first);
  }
  if (DATA.error) showError(DATA.error);
  window.layerlab.readyMs = performance.now();  // since navigation started (benchmarks/view.py)
  window.layerlab.ready = true;
  document.body.dataset.ready = "1";
})();
