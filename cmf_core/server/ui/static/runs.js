// The executions page: the cross-run charts and the column chooser (executions.html).
//
// Charts (chart=1): every run that the page's stage/q/filter select, read from the page's JSON twin 500 at a
// time (at most MAX_RUNS, with a note), as a scatter of column y against column x and as parallel coordinates
// over the chosen axes.  Each point and line is a link to its run.  Drawn as SVG built here: attributes and the
// classes of style.css, no inline style (the CSP refuses it).  Choices change the URL and the page's links and
// forms (static/state.js), so nothing is lost on the next click.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE = 500;
  const MAX_RUNS = 5000;
  const CHART_STATE = ["cols", "chart", "x", "y", "axes"];  // what the filter form keeps of the page

  // -- the page's state ------------------------------------------------------------------------------------

  // The filter form (list_toolbar) keeps the columns and the charts.
  function keepInFilterForm() {
    const form = document.querySelector("main form.toolbar");
    const query = new URL(location.href).searchParams;
    CHART_STATE.forEach(function (key) {
      if (form && query.has(key)) { cmfState.keep(form, key, query.getAll(key).join(",")); }
    });
  }

  // The column chooser sends its choice as one cols=a,b,c (not a cols= per checkbox).
  function enhanceChooser() {
    const form = document.getElementById("columns");
    if (!form) { return; }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const url = new URL(location.href);
      const chosen = Array.from(form.querySelectorAll("input[name=cols]:checked")).map(box => box.value);
      if (chosen.length) { url.searchParams.set("cols", chosen.join(",")); } else { url.searchParams.delete("cols"); }
      location.assign(url.pathname + url.search);
    });
  }

  // -- reading the runs --------------------------------------------------------------------------------------

  async function readRuns(section) {
    const base = section.getAttribute("data-api") + (section.getAttribute("data-query") || "?");
    let runs = [];
    let total = 0;
    for (let page = 1; runs.length < MAX_RUNS; page++) {
      const response = await fetch(base + (base.endsWith("?") ? "" : "&") + "size=" + PAGE + "&page=" + page,
                                   { headers: { Accept: "application/json" }, credentials: "same-origin" });
      const data = await response.json();
      if (!response.ok) { throw new Error(data.detail || response.statusText); }
      total = data.total;
      runs = runs.concat(data.items);
      if (!data.items.length || runs.length >= total) { break; }
    }
    return { runs: runs.slice(0, MAX_RUNS), total: total };
  }

  function value(run, column) {
    const dot = column.indexOf(".");
    const found = (column.slice(0, dot) === "metric" ? run.metrics : run.params)[column.slice(dot + 1)];
    return found === undefined ? null : found;
  }

  function shortName(column) { return column.slice(column.indexOf(".") + 1); }

  function show(v) {
    if (typeof v !== "number") { return String(v); }
    const size = Math.abs(v);
    return size !== 0 && (size >= 1e6 || size < 1e-3) ? v.toExponential(2) : String(+v.toPrecision(4));
  }

  // -- scales and SVG ----------------------------------------------------------------------------------------

  function ticksOf(lo, hi) {
    const raw = (hi - lo) / 5;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= raw);
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(+(Math.round(t / step) * step).toPrecision(12));
    }
    return out;
  }

  // A scale from the values onto [from, to]: linear for numbers, evenly spaced bands for anything else (text,
  // booleans, or numbers mixed with text), sorted.  {pos(v), ticks: [[position, label]], band}
  function scaleOf(values, from, to) {
    if (values.every(v => typeof v === "number" && isFinite(v))) {
      let lo = Math.min.apply(null, values);
      let hi = Math.max.apply(null, values);
      if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
      const pad = (hi - lo) * 0.05;
      const pos = v => from + (v - lo + pad) / (hi - lo + 2 * pad) * (to - from);
      return { pos: pos, band: 0, ticks: ticksOf(lo, hi).map(t => [pos(t), show(t)]) };
    }
    const names = Array.from(new Set(values.map(String))).sort();
    const index = new Map(names.map((n, i) => [n, i]));
    const band = (to - from) / names.length;
    const pos = v => from + (index.get(String(v)) + 0.5) * band;
    const every = Math.ceil(names.length / 12);  // at most a dozen labels
    return { pos: pos, band: band, ticks: names.filter((_, i) => i % every === 0).map(n => [pos(n), n]) };
  }

  function el(name, attributes, parent, text) {
    const node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function canvas(svg, height) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    const width = Math.max(480, Math.min(svg.parentNode.clientWidth || 900, 1360));
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    return width;
  }

  // A link to the run around a mark, titled with the run and its values.
  function runLink(parent, run, columns) {
    const a = el("a", { href: "/executions/" + run.id, class: "run" }, parent);
    const values = columns.map(c => " · " + shortName(c) + " " + show(value(run, c)));
    el("title", {}, a, run.type + " #" + run.id + values.join(""));
    return a;
  }

  // A deterministic offset within a band, so that runs of the same category do not hide each other.
  function jitter(run, band) { return band ? ((run.id * 2654435761 % 1000) / 1000 - 0.5) * band * 0.5 : 0; }

  function without(runs, columns) {
    return columns.map(function (c) {
      const n = runs.filter(r => value(r, c) === null).length;
      return n ? n + (n === 1 ? " run" : " runs") + " without " + shortName(c) : "";
    }).filter(Boolean);
  }

  function drawScatter(svg, runs, x, y) {
    const height = 380;
    const m = { left: 72, right: 24, top: 14, bottom: 48 };
    const width = canvas(svg, height);
    const shown = runs.filter(r => value(r, x) !== null && value(r, y) !== null);
    svg.setAttribute("data-points", String(shown.length));
    if (!shown.length) { return without(runs, [x, y]); }
    const sx = scaleOf(shown.map(r => value(r, x)), m.left, width - m.right);
    const sy = scaleOf(shown.map(r => value(r, y)), height - m.bottom, m.top);
    const axes = el("g", { class: "axes" }, svg);
    el("line", { x1: m.left, y1: height - m.bottom, x2: width - m.right, y2: height - m.bottom }, axes);
    el("line", { x1: m.left, y1: m.top, x2: m.left, y2: height - m.bottom }, axes);
    sx.ticks.forEach(function (t) {
      el("line", { x1: t[0], x2: t[0], y1: height - m.bottom, y2: height - m.bottom + 5 }, axes);
      el("text", { x: t[0], y: height - m.bottom + 18, class: "tick middle" }, axes, t[1]);
    });
    sy.ticks.forEach(function (t) {
      el("line", { x1: m.left - 5, x2: m.left, y1: t[0], y2: t[0] }, axes);
      el("text", { x: m.left - 8, y: t[0] + 4, class: "tick end" }, axes, t[1]);
    });
    el("text", { x: (m.left + width - m.right) / 2, y: height - 8, class: "title middle" }, axes, x);
    el("text", { x: 14, y: (m.top + height - m.bottom) / 2, class: "title middle",
                 transform: "rotate(-90 14 " + (m.top + height - m.bottom) / 2 + ")" }, axes, y);
    const marks = el("g", { class: "marks" }, svg);
    shown.forEach(function (run) {
      const cx = sx.pos(value(run, x)) + jitter(run, sx.band);
      el("circle", { cx: cx, cy: sy.pos(value(run, y)) + jitter(run, sy.band), r: 5 }, runLink(marks, run, [x, y]));
    });
    return without(runs, [x, y]);
  }

  function drawParallel(svg, runs, axes) {
    const height = 400;
    const m = { left: 70, right: 70, top: 34, bottom: 24 };
    const shown = runs.filter(r => axes.every(c => value(r, c) !== null));
    const drawn = axes.length >= 2 && shown.length > 0;
    const width = canvas(svg, drawn ? height : 30);  // nothing to draw: a line of text, not an empty frame
    svg.setAttribute("data-lines", String(drawn ? shown.length : 0));
    if (axes.length < 2) { return ["choose two or more axes"]; }
    if (!shown.length) {
      el("text", { x: 0, y: 20, class: "tick" }, svg, "No run has a value on every axis: untick some.");
      return without(runs, axes);
    }
    const gap = (width - m.left - m.right) / (axes.length - 1);
    const scales = axes.map(c => scaleOf(shown.map(r => value(r, c)), height - m.bottom, m.top));
    const lines = el("g", { class: "lines" }, svg);
    const last = scales[scales.length - 1];
    shown.forEach(function (run) {
      const points = axes.map((c, i) => (m.left + i * gap).toFixed(1) + "," + scales[i].pos(value(run, c)).toFixed(1));
      const t = (height - m.bottom - last.pos(value(run, axes[axes.length - 1]))) / (height - m.bottom - m.top);
      el("polyline", { points: points.join(" "), stroke: "hsl(" + Math.round(220 - 190 * t) + " 70% 45%)" },
         runLink(lines, run, axes));
    });
    const frame = el("g", { class: "axes" }, svg);
    axes.forEach(function (c, i) {
      const at = m.left + i * gap;
      el("line", { x1: at, x2: at, y1: m.top, y2: height - m.bottom }, frame);
      el("text", { x: at, y: m.top - 14, class: "title middle" }, frame, c);
      scales[i].ticks.forEach(t => el("text", { x: at - 6, y: t[0] + 4, class: "tick end halo" }, frame, t[1]));
    });
    return without(runs, axes);
  }

  // -- the charts ------------------------------------------------------------------------------------------

  function chosenAxes(form) {
    return Array.from(form.querySelectorAll("input[name=axes]:checked")).map(box => box.value);
  }

  // Choices the URL does not make: the columns that most of the runs have (x a parameter, y a metric if any).
  function defaults(form, runs) {
    const query = new URL(location.href).searchParams;
    const common = Array.from(form.elements.x.options).map(o => o.value)
      .filter(c => runs.filter(r => value(r, c) !== null).length * 2 >= runs.length);
    if (!common.length) { return; }
    const pick = prefix => common.find(c => c.startsWith(prefix));
    if (!query.has("x")) { form.elements.x.value = pick("param.") || common[0]; }
    if (!query.has("y")) { form.elements.y.value = pick("metric.") || common[common.length - 1]; }
    if (!query.has("axes")) {
      const axes = common.slice(0, 8);
      form.querySelectorAll("input[name=axes]").forEach(box => { box.checked = axes.includes(box.value); });
    }
  }

  async function charts() {
    const section = document.getElementById("runs-charts");
    const form = document.getElementById("runs-chart-form");
    if (!section || !form) { return; }
    const note = document.getElementById("runs-note");
    let read;
    try {
      read = await readRuns(section);
    } catch (error) {
      note.textContent = "Could not read the runs: " + error.message;
      note.className = "error";
      return;
    }
    note.textContent = read.runs.length < read.total
      ? "The charts show the first " + read.runs.length + " of " + read.total + " runs that match."
      : read.total + (read.total === 1 ? " run matches." : " runs match.");
    defaults(form, read.runs);
    const draw = function () {
      const x = form.elements.x.value;
      const y = form.elements.y.value;
      document.getElementById("scatter-title").textContent = y + " against " + x;
      const left = drawScatter(document.getElementById("scatter"), read.runs, x, y);
      document.getElementById("scatter-note").textContent = left.length ? "Left out: " + left.join(", ") + "." : "";
      const out = drawParallel(document.getElementById("parallel"), read.runs, chosenAxes(form));
      document.getElementById("parallel-note").textContent = out.length ? "Left out: " + out.join(", ") + "." : "";
      section.setAttribute("data-runs", String(read.runs.length));
    };
    form.addEventListener("change", function () {
      cmfState.carry({ x: form.elements.x.value, y: form.elements.y.value, axes: chosenAxes(form).join(",") });
      draw();
    });
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    let pending = 0;
    window.addEventListener("resize", function () { clearTimeout(pending); pending = setTimeout(draw, 150); });
    draw();
  }

  keepInFilterForm();
  enhanceChooser();
  charts();
})();
