// latentforge explore: the page. Plain JavaScript, no dependencies, nothing fetched but this server's API.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN = new URLSearchParams(location.search).get("token");
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                   "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];
  // the palette as 32-bit pixels (RGBA bytes in memory: little-endian ABGR words)
  const rgba = (hex) => (0xff000000 | (parseInt(hex.slice(5, 7), 16) << 16) | (parseInt(hex.slice(3, 5), 16) << 8) |
                         parseInt(hex.slice(1, 3), 16)) >>> 0;
  const COLOURS = PALETTE.map(rgba), NOCLASS = rgba("#8ab4f8"), BG = rgba("#101215");
  const THUMB_PX = 28;            // thumbnail side on screen (CSS pixels)
  const THUMB_MAX = 400;          // most thumbnails drawn at once
  const THUMB_VISIBLE_MAX = 6000; // thumbnails appear once at most this many points are in view

  const S = {
    runs: [], run: null, map: null, method: null, view: { s: 1, tx: 0, ty: 0 }, sel: { a: null, b: null },
    upload: null, sheets: new Map(), drawQueued: false, dpr: window.devicePixelRatio || 1, mapToken: 0,
  };
  const canvas = $("map");
  const ctx = canvas.getContext("2d");

  // ---------------------------------------------------------------------------------- the API
  function withToken(url) {
    if (!TOKEN) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  }
  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers || {});
    if (TOKEN) headers["X-Token"] = TOKEN;
    const res = await fetch(path, Object.assign({}, opts, { headers }));
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res;
  }
  async function postJSON(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }
  // decode: the codes as little-endian float32 (no JSON to build here or to parse on the server)
  async function postCodes(codes, params) {
    const width = codes[0].length, buf = new ArrayBuffer(codes.length * width * 4), view = new DataView(buf);
    codes.forEach((row, i) => row.forEach((v, j) => view.setFloat32((i * width + j) * 4, v, true)));
    const q = new URLSearchParams(Object.assign({ n: codes.length }, params || {}));
    return api(runPath("decode") + "?" + q, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: buf });
  }
  async function showBlob(img, res) {
    const url = URL.createObjectURL(await res.blob());
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    img.dataset.url = url;
    await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = url; });
    img.hidden = false;
  }
  function runPath(p) { return "api/runs/" + S.run.index + "/" + p; }
  function status(text, bad) {
    $("status").textContent = text || "";
    $("status").className = bad ? "bad" : "";
  }
  function fmt(v, d) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d); }

  // ---------------------------------------------------------------------------------- runs
  async function loadRuns() {
    S.runs = await (await api("api/runs")).json();
    const sel = $("run");
    sel.innerHTML = "";
    S.runs.forEach((r) => {
      const o = document.createElement("option");
      o.value = r.index;
      o.textContent = r.index + ": " + r.name + " (" + r.model + ")";
      sel.appendChild(o);
    });
    if (S.runs.length) await selectRun(0);
  }

  function fillLabels(select, run, withAll) {
    select.innerHTML = "";
    if (withAll) { const o = document.createElement("option"); o.value = ""; o.textContent = withAll; select.appendChild(o); }
    (run.classes || []).forEach((c) => {
      const o = document.createElement("option");
      o.value = c.label; o.textContent = c.name === String(c.label) ? c.name : c.label + " " + c.name;
      select.appendChild(o);
    });
  }

  async function selectRun(i) {
    const run = S.runs[i];
    S.run = run; S.map = null; S.sel = { a: null, b: null }; S.upload = null; S.sheets = new Map();
    const c = run.capabilities;
    $("run").value = String(i);
    $("run-info").textContent = run.model + " · " + (run.data || "no data") + (run.n ? " · " + run.n + " points" : "") +
      (run.code_width ? " · codes " + run.code_width + "-d" : "");
    const ms = $("method");
    ms.innerHTML = "";
    run.methods.forEach((m) => { const o = document.createElement("option"); o.value = m; o.textContent = m; ms.appendChild(o); });
    ms.value = run.default_method;
    $("method-box").hidden = !c.map;
    $("point-panel").hidden = true;
    $("point-rec-fig").hidden = !c.reconstruct;
    $("interp-panel").hidden = !c.interpolate;
    $("interp-method").value = run.interpolation;
    $("interp-img").hidden = true;
    $("sample-panel").hidden = !(c.sample || c.decode) || c.encode && !c.sample;
    $("sample-go").hidden = !c.sample;
    $("walk-go").hidden = !c.decode;
    $("sample-trunc-box").hidden = !c.truncation;
    $("sample-guid-box").hidden = !c.guidance;
    $("sample-label-box").hidden = !c.conditional;
    fillLabels($("sample-label"), run, "each class");
    $("sample-img").hidden = true; $("walk-img").hidden = true; $("mix-img").hidden = true;
    $("mix-box").hidden = !c.mix;
    if (c.mix) { $("mix-cut").max = run.n_styles - 1; $("mix-cut").value = Math.floor(run.n_styles / 2); }
    $("upload-panel").hidden = !c.upload;
    $("upload-label-box").hidden = !c.conditional;
    fillLabels($("upload-label"), run, null);
    $("upload-result").hidden = true; $("upload-score").textContent = "";
    $("upload-size").textContent = run.image_hw ? run.image_hw[1] + "x" + run.image_hw[0] : "";
    $("plane-help").hidden = !c.plane;
    const shown = Object.keys(c).filter((k) => c[k]);
    $("caps-text").textContent = "capabilities: " + (shown.join(", ") || "none");
    updateInterp();
    buildLegend();
    canvas.dataset.ready = "0"; canvas.dataset.points = "0"; canvas.dataset.drawn = "0";
    if (c.map) {
      $("no-map").hidden = true;
      await loadMap(ms.value);
    } else {
      $("no-map").hidden = false;
      $("no-map").textContent = run.model + " has no encoder: no map of codings. " +
        (c.sample ? "Use the sampling panel." : "");
      canvas.dataset.ready = "1";
      scheduleDraw();
    }
    if (c.sample) await sample();
  }

  // ---------------------------------------------------------------------------------- the map
  async function loadMap(method) {
    const token = ++S.mapToken;
    const run = S.run;
    canvas.dataset.ready = "0";
    status("computing the " + method + " map of " + run.n + " codings…");
    const t0 = performance.now();
    let res;
    try {
      res = await (await api(runPath("map?method=" + encodeURIComponent(method)))).json();
    } catch (e) { status(e.message, true); return; }
    if (token !== S.mapToken || run !== S.run) return;       // another run or method was chosen meanwhile
    const n = res.x.length;
    const m = { n, x: new Float32Array(res.x), y: new Float32Array(res.y), index: Int32Array.from(res.index),
                label: new Int32Array(n), cls: new Uint8Array(n), method: res.method, pos: new Map() };
    const classes = (run.classes || []).map((c) => c.label);
    const clsOf = new Map(classes.map((l, k) => [l, k]));
    for (let k = 0; k < n; k++) {
      const l = res.label[k];
      m.label[k] = l === null ? -1 : l;
      m.cls[k] = clsOf.has(l) ? clsOf.get(l) % 255 : 255;
      m.pos.set(m.index[k], k);
    }
    S.map = m; S.method = res.method;
    canvas.dataset.points = String(n);
    canvas.dataset.method = res.method;
    fitView();
    status(res.method + " map: " + n + " points (" + ((performance.now() - t0) / 1000).toFixed(1) + " s)");
    canvas.dataset.ready = "1";
    scheduleDraw();
  }

  function fitView() {
    const m = S.map;
    if (!m || !m.n) return;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let k = 0; k < m.n; k++) {
      const x = m.x[k], y = m.y[k];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const w = canvas.clientWidth, h = canvas.clientHeight, pad = 30;
    const s = Math.min((w - 2 * pad) / Math.max(x1 - x0, 1e-9), (h - 2 * pad) / Math.max(y1 - y0, 1e-9));
    S.view = { s, s0: s, tx: w / 2 - s * (x0 + x1) / 2, ty: h / 2 + s * (y0 + y1) / 2 };   // y grows upwards
  }
  const toScreen = (x, y) => [S.view.s * x + S.view.tx, -S.view.s * y + S.view.ty];
  const toData = (px, py) => [(px - S.view.tx) / S.view.s, -(py - S.view.ty) / S.view.s];

  function buildLegend() {
    const lg = $("legend");
    const classes = S.run && S.run.capabilities.map ? (S.run.classes || []) : [];
    lg.innerHTML = "";
    classes.forEach((c, k) => {
      const d = document.createElement("div");
      d.innerHTML = '<i style="background:' + PALETTE[k % PALETTE.length] + '"></i>';
      d.appendChild(document.createTextNode(c.name));
      lg.appendChild(d);
    });
    lg.hidden = classes.length === 0;
  }

  function resize() {
    S.dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * S.dpr);
    canvas.height = Math.round(canvas.clientHeight * S.dpr);
    scheduleDraw();
  }
  function scheduleDraw() {
    if (S.drawQueued) return;
    S.drawQueued = true;
    requestAnimationFrame(() => { S.drawQueued = false; draw(); });
  }

  function sheet(k) {
    let img = S.sheets.get(k);
    if (!img) {
      img = new Image();
      img.onload = () => { img.ready = true; scheduleDraw(); };
      img.src = withToken(runPath("sprites/" + k + ".png"));
      S.sheets.set(k, img);
    }
    return img.ready ? img : null;
  }

  function draw() {
    const t0 = performance.now();
    drawMap();
    canvas.dataset.drawMs = (performance.now() - t0).toFixed(1);      // for tests and benchmarks
  }
  function drawMap() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const m = S.map;
    if (!m) { canvas.dataset.drawn = "0"; canvas.dataset.thumbs = "0"; return; }
    const { s, tx, ty } = S.view;
    const n = m.n;
    const sx = new Float32Array(n), sy = new Float32Array(n);
    const visible = [];
    for (let k = 0; k < n; k++) {
      const px = s * m.x[k] + tx, py = -s * m.y[k] + ty;
      sx[k] = px; sy[k] = py;
      if (px >= -4 && px <= w + 4 && py >= -4 && py <= h + 4) visible.push(k);
    }
    // points: written straight into one pixel buffer, then one putImageData (70,000 points in a
    // few ms, where 70,000 fillRect calls take ~80 ms on a software-rendered canvas)
    const W = canvas.width, H = canvas.height, dpr = S.dpr;
    if (!S.pixels || S.pixels.width !== W || S.pixels.height !== H) {
      S.pixels = ctx.createImageData(W, H);
      S.buf = new Uint32Array(S.pixels.data.buffer);
    }
    const buf = S.buf;
    buf.fill(BG);
    const r = Math.max(1, Math.round((n > 20000 ? 1.1 : n > 5000 ? 1.6 : 2.2) * dpr));
    for (const k of visible) {
      const colour = m.cls[k] === 255 ? NOCLASS : COLOURS[m.cls[k] % COLOURS.length];
      const cx = Math.round(sx[k] * dpr), cy = Math.round(sy[k] * dpr);
      const x0 = Math.max(0, cx - r), x1 = Math.min(W, cx + r), y1 = Math.min(H, cy + r);
      for (let y = Math.max(0, cy - r); y < y1; y++) {
        const row = y * W;
        for (let x = x0; x < x1; x++) buf[row + x] = colour;
      }
    }
    ctx.putImageData(S.pixels, 0, 0);
    canvas.dataset.drawn = String(visible.length);
    // thumbnails (Figure 17-5): greedy, no two closer than a thumbnail, once few enough points are in view
    let thumbs = 0;
    if (S.run.capabilities.images && visible.length <= THUMB_VISIBLE_MAX) {
      const per = S.run.sprite_side * S.run.sprite_side, side = S.run.sprite_side;
      const hw = S.run.image_hw;
      const occupied = new Set();
      const size = Math.round(THUMB_PX * Math.min(2.5, Math.max(1, Math.sqrt(s / (S.view.s0 || s)) * 0.8)));
      const cell = size;
      ctx.imageSmoothingEnabled = false;
      for (const k of visible) {
        if (thumbs >= THUMB_MAX) break;
        const gx = Math.floor(sx[k] / cell), gy = Math.floor(sy[k] / cell);
        let free = true;
        for (let dx = -1; dx <= 1 && free; dx++) for (let dy = -1; dy <= 1; dy++) {
          if (occupied.has((gx + dx) + "," + (gy + dy))) { free = false; break; }
        }
        if (!free) continue;
        occupied.add(gx + "," + gy);
        const img = sheet(Math.floor(k / per));
        thumbs++;
        if (!img) continue;
        const cellK = k % per, cx = (cellK % side) * hw[1], cy = Math.floor(cellK / side) * hw[0];
        const tw = size * Math.min(1, hw[1] / hw[0]), th = size * Math.min(1, hw[0] / hw[1]);
        ctx.drawImage(img, cx, cy, hw[1], hw[0], sx[k] - tw / 2, sy[k] - th / 2, tw, th);
        ctx.strokeStyle = m.cls[k] === 255 ? "#8ab4f8" : PALETTE[m.cls[k] % PALETTE.length];
        ctx.lineWidth = 1.5;
        ctx.strokeRect(sx[k] - tw / 2, sy[k] - th / 2, tw, th);
      }
    }
    canvas.dataset.thumbs = String(thumbs);
    // selection and the upload's position
    const ring = (k, colour, label) => {
      if (k === null || k === undefined) return;
      ctx.strokeStyle = colour; ctx.lineWidth = 2.5;
      ctx.beginPath(); ctx.arc(sx[k], sy[k], 9, 0, 2 * Math.PI); ctx.stroke();
      ctx.fillStyle = colour; ctx.font = "bold 12px sans-serif"; ctx.fillText(label, sx[k] + 11, sy[k] - 8);
    };
    ring(S.sel.a !== null ? m.pos.get(S.sel.a) : null, "#ffffff", "A");
    ring(S.sel.b !== null ? m.pos.get(S.sel.b) : null, "#ffb000", "B");
    if (S.upload) {
      const [ux, uy] = toScreen(S.upload.x, S.upload.y);
      ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = 3;
      ctx.beginPath(); ctx.moveTo(ux - 10, uy - 10); ctx.lineTo(ux + 10, uy + 10);
      ctx.moveTo(ux + 10, uy - 10); ctx.lineTo(ux - 10, uy + 10); ctx.stroke();
      ctx.fillStyle = "#ff3b3b"; ctx.font = "bold 12px sans-serif"; ctx.fillText("upload", ux + 12, uy + 4);
    }
  }

  function nearest(px, py, maxDist) {
    const m = S.map;
    if (!m) return null;
    let best = null, bd = maxDist * maxDist;
    const { s, tx, ty } = S.view;
    for (let k = 0; k < m.n; k++) {
      const dx = s * m.x[k] + tx - px, dy = -s * m.y[k] + ty - py;
      const d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = k; }
    }
    return best;
  }

  // ---------------------------------------------------------------------------------- interaction
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, y: e.offsetY, tx: S.view.tx, ty: S.view.ty, moved: false }; });
  window.addEventListener("mouseup", (e) => {
    if (!drag) return;
    const d = drag; drag = null;
    if (!d.moved && e.target === canvas) {
      const k = nearest(e.offsetX, e.offsetY, 12);
      if (k !== null) selectPoint(S.map.index[k], e.shiftKey);
    }
  });
  canvas.addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) { S.view.tx = drag.tx + dx; S.view.ty = drag.ty + dy; scheduleDraw(); }
      return;
    }
    hover(e.offsetX, e.offsetY);
  });
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; $("plane-view").hidden = true; });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const f = Math.exp(-e.deltaY * 0.0015);
    const [x, y] = toData(e.offsetX, e.offsetY);
    S.view.s *= f;
    S.view.tx = e.offsetX - S.view.s * x;
    S.view.ty = e.offsetY + S.view.s * y;
    scheduleDraw();
  }, { passive: false });
  $("reset-view").addEventListener("click", () => { fitView(); scheduleDraw(); });

  function hover(px, py) {
    const tip = $("tooltip");
    const k = nearest(px, py, 10);
    if (k === null) { tip.hidden = true; } else {
      const m = S.map, l = m.label[k];
      const cls = (S.run.classes || []).find((c) => c.label === l);
      tip.textContent = "#" + m.index[k] + (l >= 0 ? " · " + (cls ? cls.name : l) : "");
      tip.style.left = (px + 12) + "px"; tip.style.top = (py + 12) + "px";
      tip.hidden = false;
    }
    if (S.run && S.run.capabilities.plane && S.map && S.map.method === "latent") planeDecode(px, py);
  }

  // the live 2-D latent plane: one decode in flight, the latest position queued
  let planeBusy = false, planePending = null;
  async function planeDecode(px, py) {
    planePending = toData(px, py);
    if (planeBusy) return;
    planeBusy = true;
    try {
      while (planePending) {
        const z = planePending; planePending = null;
        const params = {};
        if (S.run.capabilities.conditional) params.label = Number($("sample-label").value || 0);
        const res = await postCodes([[z[0], z[1]]], params);
        await showBlob($("plane-img"), res);
        $("plane-xy").textContent = "z = (" + z[0].toFixed(2) + ", " + z[1].toFixed(2) + ")";
        $("plane-view").hidden = false;
      }
    } catch (e) { status(e.message, true); } finally { planeBusy = false; }
  }

  // ---------------------------------------------------------------------------------- a point
  function thumb(index, onclick) {
    const img = document.createElement("img");
    img.src = withToken(runPath("images/" + index + ".png"));
    img.title = "#" + index;
    img.dataset.index = index;
    img.addEventListener("click", () => onclick(index));
    return img;
  }

  async function selectPoint(index, asB) {
    if (asB) { S.sel.b = index; } else { S.sel.a = index; }
    updateInterp();
    scheduleDraw();
    if (asB) return;
    const run = S.run, c = run.capabilities;
    $("point-panel").hidden = false;
    $("point-title").textContent = "#" + index;
    if (c.images) {
      $("point-img").src = withToken(runPath("images/" + index + ".png"));
      if (c.reconstruct) {
        const rec = $("point-rec");
        rec.dataset.loaded = "0";
        rec.onload = () => { rec.dataset.loaded = "1"; };
        rec.src = withToken(runPath("reconstructions/" + index + ".png"));
      }
    }
    try {
      const p = await (await api(runPath("points/" + index))).json();
      if (S.sel.a !== index) return;
      const cls = (run.classes || []).find((c2) => c2.label === p.label);
      $("point-title").textContent = "#" + index + (p.label !== null ? " · class " + (cls ? cls.name : p.label) : "");
      $("point-error").textContent = p.error !== undefined
        ? "reconstruction error (" + run.error + ") " + fmt(p.error, 4) + " · percentile " + fmt(p.percentile, 1) +
          " among the training data"
        : "";
      const nb = $("point-neighbours"); nb.innerHTML = "";
      p.neighbours.forEach((j) => nb.appendChild(c.images ? thumb(j, (q) => selectPoint(q, false)) : chip(j)));
      $("hash-box").hidden = !c.hash;
      if (c.hash) {
        $("point-hash").textContent = p.hash;
        $("hash-count").textContent = "(" + p.same_hash_count + " other images)";
        const sh = $("point-same-hash"); sh.innerHTML = "";
        p.same_hash.forEach((j) => sh.appendChild(c.images ? thumb(j, (q) => selectPoint(q, false)) : chip(j)));
      }
    } catch (e) { status(e.message, true); }
  }
  function chip(j) { const s = document.createElement("span"); s.className = "chip"; s.textContent = "#" + j; return s; }

  // ---------------------------------------------------------------------------------- interpolation
  function updateInterp() {
    $("interp-a").textContent = S.sel.a !== null ? "#" + S.sel.a : "–";
    $("interp-b").textContent = S.sel.b !== null ? "#" + S.sel.b : "–";
    $("interp-go").disabled = S.sel.a === null || S.sel.b === null;
  }
  async function interpolate() {
    const img = $("interp-img");
    img.dataset.loaded = "0";
    try {
      status("interpolating…");
      const res = await postJSON(runPath("interpolate"), {
        a: S.sel.a, b: S.sel.b, steps: Number($("interp-steps").value), method: $("interp-method").value });
      await showBlob(img, res);
      img.dataset.loaded = "1";
      status("");
    } catch (e) { status(e.message, true); }
  }
  $("interp-go").addEventListener("click", interpolate);

  // ---------------------------------------------------------------------------------- sampling
  function sampleBody() {
    const body = { n: Number($("sample-n").value), seed: Number($("sample-seed").value) };
    const c = S.run.capabilities;
    if (c.truncation && $("sample-trunc").value !== "") body.truncation = Number($("sample-trunc").value);
    if (c.guidance && $("sample-guid").value !== "") body.guidance = Number($("sample-guid").value);
    if (c.conditional && $("sample-label").value !== "") body.label = Number($("sample-label").value);
    return body;
  }
  async function sample() {
    if (!S.run.capabilities.sample) return;
    const img = $("sample-img");
    img.dataset.loaded = "0";
    try {
      status("sampling…");
      const t0 = performance.now();
      await showBlob(img, await postJSON(runPath("sample"), sampleBody()));
      img.dataset.loaded = "1";
      status("samples in " + Math.round(performance.now() - t0) + " ms");
    } catch (e) { status(e.message, true); }
  }
  // a seeded standard normal (mulberry32 + Box-Muller) for latent walks between two seeds' latents
  function normals(seed, n) {
    let a = seed >>> 0;
    const rand = () => { a = (a + 0x6D2B79F5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967297; };
    const out = [];
    for (let i = 0; i < n; i++) out.push(Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand()));
    return out;
  }
  function slerp(a, b, t) {
    const na = Math.hypot(...a), nb = Math.hypot(...b);
    const dot = a.reduce((s, v, i) => s + v * b[i], 0) / (na * nb || 1);
    const w = Math.acos(Math.max(-1, Math.min(1, dot))), sw = Math.sin(w);
    if (sw < 1e-6) return a.map((v, i) => (1 - t) * v + t * b[i]);
    return a.map((v, i) => Math.sin((1 - t) * w) / sw * v + Math.sin(t * w) / sw * b[i]);
  }
  async function walk() {
    const run = S.run, steps = 10, seed = Number($("sample-seed").value);
    const a = normals(seed * 2 + 1, run.code_width), b = normals(seed * 2 + 2, run.code_width);
    const codes = [];
    for (let i = 0; i < steps; i++) codes.push(slerp(a, b, i / (steps - 1)));
    const params = { ncols: steps };
    if (run.capabilities.conditional) params.label = Number($("sample-label").value || 0);
    const img = $("walk-img");
    img.dataset.loaded = "0";
    try {
      await showBlob(img, await postCodes(codes, params));
      img.dataset.loaded = "1";
      status("latent walk between the latents of seeds " + (seed * 2 + 1) + " and " + (seed * 2 + 2));
    } catch (e) { status(e.message, true); }
  }
  async function mixStyles() {
    const body = { seed: Number($("sample-seed").value), n: 4, crossover: Number($("mix-cut").value) };
    if ($("sample-trunc").value !== "") body.truncation = Number($("sample-trunc").value);
    try {
      await showBlob($("mix-img"), await postJSON(runPath("mix"), body));
      status("style mixing: rows take the left image's styles below layer " + body.crossover +
             ", the top image's from it on");
    } catch (e) { status(e.message, true); }
  }
  $("mix-go").addEventListener("click", mixStyles);
  $("sample-go").addEventListener("click", sample);
  $("walk-go").addEventListener("click", walk);
  let sampleTimer = null;
  ["sample-n", "sample-seed", "sample-trunc", "sample-label"].forEach((id) => $(id).addEventListener("change", () => {
    clearTimeout(sampleTimer); sampleTimer = setTimeout(sample, 150);
  }));

  // ---------------------------------------------------------------------------------- upload
  $("upload-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    const fd = new FormData();
    fd.append("image", f);
    if (S.run.capabilities.conditional) fd.append("label", $("upload-label").value);
    try {
      status("encoding the upload…");
      const method = S.map ? S.map.method : S.run.default_method;
      const r = await (await api(runPath("encode?method=" + encodeURIComponent(method)), { method: "POST", body: fd })).json();
      $("upload-img").src = URL.createObjectURL(f);
      $("upload-rec").src = r.reconstruction;
      $("upload-result").hidden = false;
      $("upload-score").textContent = "reconstruction error (" + r.error + ") " + fmt(r.score, 4) +
        " · anomaly percentile " + fmt(r.percentile, 1) + " (share of training images reconstructed at least as well)";
      S.upload = { x: r.x, y: r.y };
      scheduleDraw();
      status("the upload is marked on the map");
    } catch (err) { status(err.message, true); $("upload-score").textContent = err.message; }
  });

  // ---------------------------------------------------------------------------------- wiring
  $("run").addEventListener("change", (e) => selectRun(Number(e.target.value)));
  $("method").addEventListener("change", (e) => loadMap(e.target.value));
  window.addEventListener("resize", resize);

  // for scripts and tests: where a point is on screen (page coordinates), and the state
  window.lfExplore = {
    state: S,
    screenOf(index) {
      const m = S.map, k = m ? m.pos.get(index) : undefined;
      if (k === undefined) return null;
      const [px, py] = toScreen(m.x[k], m.y[k]);
      const r = canvas.getBoundingClientRect();
      return [r.left + px, r.top + py];
    },
    selectRun, loadMap, selectPoint,
  };

  resize();
  loadRuns().catch((e) => status(e.message, true));
})();
