/* The "Forget on the fly" panel of the amnesiac book, computing in the reader's browser.
 *
 * Loaded on every page (html_js_files); it does nothing unless the page holds a <div class="amnesiac-forget-panel">,
 * which the interactive chapter writes. The data beside it (amnesiac.webpanel.export_panel: the trained model's
 * parameters, one delta per class and per tracked image, test images, the network as an ONNX graph) lives under
 * _static/<data-src>/, and ONNX Runtime Web (WebAssembly) under _static/<data-runtime>/, both served by the book
 * itself: nothing loads from another host.
 *
 * Every change of a control computes theta' = theta_T - alpha * (class delta + selected images' deltas) in double
 * precision, rounded once to float32 (exactly as amnesiac.webpanel.panel_theta), runs the network on the test and
 * tracked images, and redraws the numbers, the per-class accuracy bars and the table of selected images.
 */
(function () {
  "use strict";
  const SCRIPT = document.currentScript;
  const STATIC = new URL(".", SCRIPT ? SCRIPT.src : document.baseURI);
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const s = el("script", { src: url });
      s.onload = resolve;
      s.onerror = () => reject(new Error("could not load " + url));
      document.head.append(s);
    });
  }

  async function fetchBytes(url, spec) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const buf = await response.arrayBuffer();
    if (spec && buf.byteLength !== spec.bytes) {
      throw new Error(`${url}: ${buf.byteLength} bytes, meta.json says ${spec.bytes}; rebuild the book`);
    }
    if (spec && spec.sha256 && window.crypto && crypto.subtle) { // only in secure contexts (https, localhost)
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
      const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
      if (hex !== spec.sha256) throw new Error(`${url} does not match meta.json (SHA-256); rebuild the book`);
    }
    return buf;
  }

  const fmt = (v, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : "n/a");
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };

  class ForgetPanel {
    constructor(root) {
      this.root = root;
      this.times = [];
      this.updates = 0;
      this.state = null;
      this.busy = null;
      this.dirty = false;
      root.amnesiacPanel = this;
      (window.amnesiacPanels = window.amnesiacPanels || []).push(this);
      this.ready = this.start();
    }

    status(text, isError) {
      this.statusLine.textContent = text;
      this.statusLine.classList.toggle("afp-error", !!isError);
    }

    async start() {
      const root = this.root;
      this.statusLine = el("p", { class: "afp-status", role: "status" });
      root.replaceChildren(this.statusLine);
      this.status("Loading the model, its deltas and the runtime (once, about 20 MB) ...");
      try {
        const base = new URL(root.dataset.src, STATIC);
        const runtime = new URL(root.dataset.runtime, STATIC);
        const metaResponse = await fetch(new URL("meta.json", base));
        if (!metaResponse.ok) throw new Error(`${metaResponse.url}: HTTP ${metaResponse.status}`);
        const meta = (this.meta = await metaResponse.json());
        const names = ["theta", "class_deltas", "sample_deltas", "pixels", "labels", "model"];
        const bufs = await Promise.all(names.map((n) => fetchBytes(new URL(meta.files[n].file, base), meta.files[n])));
        const [theta, classDeltas, sampleDeltas, pixels, labels, model] = bufs;
        this.theta = new Float32Array(theta);
        this.classDeltas = new Float32Array(classDeltas);
        this.sampleDeltas = new Float32Array(sampleDeltas);
        this.labels = new Uint8Array(labels);
        this.pixels = new Uint8Array(pixels);
        const lut = Float32Array.from(meta.pixel_values);
        this.images = new Float32Array(this.pixels.length);
        for (let i = 0; i < this.pixels.length; i++) this.images[i] = lut[this.pixels[i]];
        this.nImages = this.labels.length;
        this.nTest = meta.test.n;
        this.counts = new Array(meta.classes).fill(0);
        for (let i = 0; i < this.nTest; i++) this.counts[this.labels[i]]++;
        if (!window.ort) await loadScript(new URL("ort.wasm.min.js", runtime).href);
        ort.env.wasm.wasmPaths = runtime.href;
        ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a static host does not give
        this.session = await ort.InferenceSession.create(new Uint8Array(model), { executionProviders: ["wasm"] });
        this.input = new ort.Tensor("float32", this.images, [this.nImages, 1, 28, 28]);
        this.before = await this.forward(this.theta);
        this.build();
        const init = meta.initial || {};
        this.setControls(init.forget_class ?? null, init.selected || [], init.alpha || 0.1);
        await this.update();
      } catch (err) {
        this.status(
          "The panel could not start: " + (err && err.message ? err.message : err) +
            ". It needs the book served over HTTP (not opened as a file) with its _static folder; the precomputed " +
            "tables below and the widget panel in a live kernel do not.",
          true,
        );
        throw err;
      }
    }

    /* logits [nImages * classes] for the flat float32 parameters theta */
    async forward(theta) {
      const feeds = { x: this.input };
      for (const p of this.meta.params) {
        const size = p.shape.reduce((a, b) => a * b, 1);
        feeds[p.name] = new ort.Tensor("float32", theta.subarray(p.offset, p.offset + size), p.shape);
      }
      const out = await this.session.run(feeds);
      return out.logits.data;
    }

    perClass(logits) {
      const k = this.meta.classes;
      const hits = new Array(k).fill(0);
      for (let i = 0; i < this.nTest; i++) {
        let best = 0;
        for (let c = 1; c < k; c++) if (logits[i * k + c] > logits[i * k + best]) best = c;
        if (best === this.labels[i]) hits[this.labels[i]]++;
      }
      return hits.map((h, c) => (this.counts[c] > 0 ? h / this.counts[c] : NaN));
    }

    split(acc, fc) { // amnesiac_paper.book.interactive.split_accuracy
      let num = 0, den = 0;
      for (let c = 0; c < acc.length; c++) {
        if (c === fc || this.counts[c] === 0) continue;
        num += acc[c] * this.counts[c];
        den += this.counts[c];
      }
      return [fc === null ? NaN : acc[fc], num / den];
    }

    probs(logits, row) {
      const k = this.meta.classes;
      let m = -Infinity;
      for (let c = 0; c < k; c++) m = Math.max(m, logits[row * k + c]);
      const e = [];
      let s = 0;
      for (let c = 0; c < k; c++) { e.push(Math.exp(logits[row * k + c] - m)); s += e[c]; }
      return e.map((v) => v / s);
    }

    build() {
      const meta = this.meta;
      const uid = "afp" + Math.random().toString(36).slice(2, 8);
      this.classBox = el("select", { id: uid + "-class", onchange: () => this.changed() },
        el("option", { value: "", text: "none" }),
        ...Array.from({ length: meta.classes }, (_, c) => el("option", { value: String(c), text: String(c) })));
      this.alphaRange = el("input", {
        id: uid + "-alpha", type: "range", min: "-3", max: "0", step: "0.05", "aria-label": "alpha, log scale",
        oninput: () => { this.alphaNumber.value = fmt(10 ** Number(this.alphaRange.value), 4); this.changed(); },
      });
      this.alphaNumber = el("input", {
        type: "number", min: "0.001", max: "1", step: "any", class: "afp-alpha-number", "aria-label": "alpha",
        onchange: () => {
          const a = Math.min(1, Math.max(0.001, Number(this.alphaNumber.value) || 0.1));
          this.alphaNumber.value = String(a);
          this.alphaRange.value = String(Math.log10(a));
          this.changed();
        },
      });
      this.boxes = [];
      const grid = el("div", { class: "afp-thumbs", role: "group", "aria-label": "tracked training images" });
      meta.samples.forEach((s, k) => {
        const box = el("input", { type: "checkbox", value: String(s.id), onchange: () => this.changed() });
        this.boxes.push(box);
        const canvas = el("canvas", { width: "28", height: "28", "aria-hidden": "true" });
        const ctx = canvas.getContext("2d");
        const img = ctx.createImageData(28, 28);
        const off = (this.nTest + k) * 784;
        for (let i = 0; i < 784; i++) {
          const v = this.pixels[off + i];
          img.data.set([v, v, v, 255], 4 * i);
        }
        ctx.putImageData(img, 0, 0);
        grid.append(el("label", { class: "afp-thumb", title: `training image id ${s.id}, label ${s.label}` },
          box, canvas, el("span", { text: s.title })));
      });
      const clear = el("button", { type: "button", text: "clear", onclick: () => {
        this.boxes.forEach((b) => (b.checked = false));
        this.changed();
      } });
      this.summary = el("p", { class: "afp-summary", "aria-live": "polite" });
      this.chart = el("div", { class: "afp-chart" });
      this.table = el("div", { class: "afp-table" });
      const controls = el("div", { class: "afp-controls" },
        el("div", { class: "afp-row" }, el("label", { for: uid + "-class", text: "forget class" }), this.classBox),
        el("div", { class: "afp-row" }, el("label", { for: uid + "-alpha", text: "alpha" }), this.alphaRange,
          this.alphaNumber),
        el("div", { class: "afp-row afp-images-head" }, el("span", { text: "forget training images" }), clear),
        grid);
      this.root.replaceChildren(this.statusLine, controls, this.summary, this.chart, this.table);
    }

    setControls(forgetClass, selected, alpha) {
      this.classBox.value = forgetClass === null || forgetClass === undefined ? "" : String(forgetClass);
      const want = new Set(selected.map(Number));
      this.boxes.forEach((b) => (b.checked = want.has(Number(b.value))));
      this.alphaNumber.value = String(alpha);
      this.alphaRange.value = String(Math.log10(alpha));
    }

    choice() {
      return {
        forget_class: this.classBox.value === "" ? null : Number(this.classBox.value),
        selected: this.boxes.filter((b) => b.checked).map((b) => Number(b.value)),
        alpha: Number(this.alphaNumber.value),
      };
    }

    changed() {
      if (this.busy) { this.dirty = true; return; }
      this.update();
    }

    /* resolves when no update is running or pending */
    async idle() {
      await this.ready;
      while (this.busy) await this.busy;
    }

    update() {
      this.busy = this._update().finally(() => {
        this.busy = null;
        if (this.dirty) { this.dirty = false; this.update(); }
      });
      return this.busy;
    }

    async _update() {
      const t0 = performance.now();
      const meta = this.meta, P = meta.numel;
      const { forget_class: fc, selected, alpha } = this.choice();
      // theta' in double precision, one rounding to float32 (amnesiac.webpanel.panel_theta, in the same order)
      const byId = new Map(meta.samples.map((s, k) => [s.id, k]));
      const used = selected.filter((i) => fc === null || meta.samples[byId.get(i)].label !== fc);
      const theta = new Float32Array(P);
      const cls = fc === null ? null : this.classDeltas.subarray(fc * P, (fc + 1) * P);
      const rows = used.map((i) => this.sampleDeltas.subarray(byId.get(i) * P, (byId.get(i) + 1) * P));
      for (let j = 0; j < P; j++) {
        let d = 0;
        if (cls) d += cls[j];
        for (const r of rows) d += r[j];
        theta[j] = this.theta[j] - alpha * d;
      }
      const logits = await this.forward(theta);
      const acc0 = this.perClass(this.before), acc1 = this.perClass(logits);
      const [f0, r0] = this.split(acc0, fc), [f1, r1] = this.split(acc1, fc);
      const samples = selected.map((i) => {
        const k = byId.get(i), row = this.nTest + k, y = meta.samples[k].label;
        const p0 = this.probs(this.before, row), p1 = this.probs(logits, row);
        const arg = (p) => p.indexOf(Math.max(...p));
        return { id: i, label: y, pred_before: arg(p0), pred_after: arg(p1), p_label_before: p0[y],
          p_label_after: p1[y], in_class_delta: !used.includes(i) };
      });
      this.render(fc, selected, alpha, acc0, acc1, f0, f1, r0, r1, samples);
      const seconds = (performance.now() - t0) / 1000;
      this.times.push(seconds);
      this.updates += 1;
      this.lastLogits = logits;
      this.state = { forget_class: fc, selected, alpha, used, per_class_before: acc0, per_class_after: acc1,
        acc_forgotten_before: f0, acc_forgotten_after: f1, acc_rest_before: r0, acc_rest_after: r1, samples,
        seconds, updates: this.updates };
      this.status(`Computing in this browser: ONNX Runtime Web (WebAssembly), no kernel, no server. ` +
        `${this.nTest} test images; this update took ${fmt(seconds, 2)} s ` +
        `(median ${fmt(median(this.times), 2)} s over ${this.times.length}).`);
      this.root.dataset.updates = String(this.updates);
      return this.state;
    }

    render(fc, selected, alpha, acc0, acc1, f0, f1, r0, r1, samples) {
      const what = [];
      if (fc !== null) what.push(`class ${fc}`);
      if (selected.length) what.push(`${selected.length} image${selected.length === 1 ? "" : "s"}`);
      this.summary.replaceChildren(
        el("b", { text: `Forgetting ${what.join(" and ") || "nothing"}` }), ` with alpha = ${fmt(alpha, 3)}. `,
        fc !== null ? `Test accuracy on class ${fc}: ${fmt(f0)} \u2192 ` : "", fc !== null ? el("b", { text: fmt(f1) }) : "",
        fc !== null ? "; " : "", `on the ${fc !== null ? "other classes" : "test set"}: ${fmt(r0)} \u2192 `,
        el("b", { text: fmt(r1) }), ".");
      this.summary.dataset.forgotten = fmt(f1, 6);
      this.summary.dataset.rest = fmt(r1, 6);
      this.chart.replaceChildren(this.bars(acc0, acc1, fc));
      if (!samples.length) { this.table.replaceChildren(); return; }
      const head = el("tr", {}, ...["image id", "label", "predicted", "p(label)", "subtracted as"].map(
        (t) => el("th", { scope: "col", text: t })));
      const body = samples.map((s) => el("tr", { "data-id": String(s.id) },
        el("td", { text: String(s.id) }), el("td", { text: String(s.label) }),
        el("td", { text: `${s.pred_before} \u2192 ${s.pred_after}` }),
        el("td", { text: `${fmt(s.p_label_before)} \u2192 ${fmt(s.p_label_after)}` }),
        el("td", { text: s.in_class_delta ? "in the class delta" : "own delta" })));
      this.table.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
    }

    /* amnesiac.plotting.class_accuracy_bars, drawn as SVG with the same colours */
    bars(acc0, acc1, fc) {
      const c = this.meta.colors, k = acc0.length;
      const W = 44 + 36 * k, H = 204, x0 = 40, y0 = 24, h = 140, step = 36;
      const y = (v) => y0 + h - (Number.isFinite(v) ? v : 0) * (h / 1.08);
      const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
        "aria-label": "test accuracy per class, trained (grey) and after forgetting (blue)" });
      if (fc !== null) {
        svg.append(el("svg:rect", { x: x0 + step * fc, y: y0, width: step, height: h, fill: c.highlight,
          "fill-opacity": "0.12" }));
      }
      for (let t = 0; t <= 5; t++) {
        const v = t / 5, yy = y(v);
        svg.append(el("svg:line", { x1: x0, x2: x0 + step * k, y1: yy, y2: yy, stroke: "currentColor",
          "stroke-opacity": "0.3", "stroke-width": "0.5" }));
        svg.append(el("svg:text", { x: x0 - 4, y: yy + 3, "text-anchor": "end", "font-size": "10", fill: "currentColor",
          text: v.toFixed(1) }));
      }
      for (let i = 0; i < k; i++) {
        const cx = x0 + step * i + step / 2;
        for (const [v, dx, color, name] of [[acc0[i], -7, c.before, "trained"], [acc1[i], 7, c.after, "after"]]) {
          const r = el("svg:rect", { x: cx + dx - 6.5, y: y(v), width: 13, height: y0 + h - y(v), fill: color });
          r.append(el("svg:title", { text: `class ${i}, ${name}: ${fmt(v)}` }));
          svg.append(r);
        }
        svg.append(el("svg:text", { x: cx, y: y0 + h + 11, "text-anchor": "middle", "font-size": "11",
          fill: "currentColor", text: String(i) }));
      }
      svg.append(el("svg:text", { x: x0 + (step * k) / 2, y: H - 4, "text-anchor": "middle", "font-size": "11",
        fill: "currentColor", text: "class" }));
      svg.append(el("svg:text", { x: 10, y: y0 + h / 2, "text-anchor": "middle", "font-size": "11", fill: "currentColor",
        transform: `rotate(-90 10 ${y0 + h / 2})`, text: "test accuracy" }));
      const lx = x0 + (step * k) / 2 - 80;
      svg.append(el("svg:rect", { x: lx, y: 6, width: 10, height: 8, fill: c.before }),
        el("svg:text", { x: lx + 14, y: 13, "font-size": "10", fill: "currentColor", text: "trained" }),
        el("svg:rect", { x: lx + 70, y: 6, width: 10, height: 8, fill: c.after }),
        el("svg:text", { x: lx + 84, y: 13, "font-size": "10", fill: "currentColor", text: "after forgetting" }));
      return svg;
    }
  }

  function boot() {
    document.querySelectorAll(".amnesiac-forget-panel").forEach((root) => {
      if (!root.amnesiacPanel) new ForgetPanel(root).ready.catch((err) => console.error(err));
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
