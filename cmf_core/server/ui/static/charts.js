// Step-metric charts: every element with data-chart="ID" draws the JSON {"steps", "series"} of
// <script type="application/json" id="ID"> as one line per series (uPlot, vendored).
//
// The page's form.chart-controls (_runs.html) sets, for all its charts and in the URL: smoothing (an exponential
// moving average, debiased at the start as TensorBoard does), a log y axis, and the x axis: step, or the wall
// time of each step (absolute, or relative to the series' first step) where there is one.  Wall time is a
// step-metrics column named as in TIME_COLUMNS (cmf_core/server/compare.py names the same), or the JSON
// {series: [times by step]} of <script id="ID-times">; seconds or milliseconds since the epoch.
(function () {
  "use strict";
  var colors = ["#2458c6", "#c2410c", "#2f7d5b", "#8a4fd1", "#0e7490", "#a16207", "#be123c", "#4b5563"];
  var TIME_COLUMNS = ["time", "timestamp", "wall_time", "walltime", "_timestamp"];
  var form = document.querySelector("form.chart-controls");
  var charts = [];

  function settings() {
    if (!form) { return { smooth: 0, logy: false, xaxis: "step" }; }
    var smooth = Math.min(0.99, Math.max(0, parseFloat(form.elements.smooth.value) || 0));
    return { smooth: smooth, logy: form.elements.logy.checked, xaxis: form.elements.xaxis.value };
  }

  function smoothed(values, weight) {
    var last = 0, n = 0;
    return values.map(function (v) {
      if (v === null || !isFinite(v) || weight === 0) { return v; }
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }

  function seconds(values, relative) {
    var first = null;
    return values.map(function (t) {
      if (t === null || !isFinite(t)) { return null; }
      var s = t > 1e11 ? t / 1000 : t;
      if (first === null) { first = s; }
      return relative ? s - first : s;
    });
  }

  // One chart's data: its series by name, and the wall time of each series' steps (if any).
  function read(box) {
    var id = box.getAttribute("data-chart");
    var data = JSON.parse(document.getElementById(id).textContent);
    var timesSource = document.getElementById(id + "-times");
    var times = timesSource ? JSON.parse(timesSource.textContent) : {};
    var clock = TIME_COLUMNS.find(function (c) { return c in data.series; });
    var names = Object.keys(data.series).filter(function (n) { return n !== clock; });
    names.forEach(function (n) { if (clock) { times[n] = data.series[clock]; } });
    return { box: box, steps: data.steps, series: data.series, names: names, times: times, plot: null };
  }

  // [x values, y values of each series] aligned for uPlot, the x axis drawn as `how`.
  function columns(chart, how, ys) {
    var timed = how !== "step" && chart.names.every(function (n) { return chart.times[n]; });
    if (!timed) {
      var numeric = chart.steps.every(function (s) { return typeof s === "number"; });
      var xs = numeric ? chart.steps : chart.steps.map(function (_, i) { return i + 1; });
      return { x: "step", data: [xs].concat(ys) };
    }
    var tables = chart.names.map(function (n, i) {
      var xs = seconds(chart.times[n], how === "relative");
      var pairs = xs.map(function (x, k) { return [x, ys[i][k]]; }).filter(function (p) { return p[0] !== null; });
      pairs.sort(function (a, b) { return a[0] - b[0]; });
      return [pairs.map(function (p) { return p[0]; }), pairs.map(function (p) { return p[1]; })];
    });
    return { x: how, data: uPlot.join(tables) };
  }

  function draw(chart) {
    var choice = settings();
    var dropped = 0;
    var ys = chart.names.map(function (n) {
      return smoothed(chart.series[n], choice.smooth).map(function (v) {
        if (choice.logy && v !== null && !(v > 0)) { dropped += 1; return null; }
        return v;
      });
    });
    var drawn = columns(chart, choice.xaxis, ys);
    var xLabel = { step: "step", wall: "wall time", relative: "seconds since the first step" }[drawn.x];
    var series = [{ label: xLabel }].concat(chart.names.map(function (name, i) {
      return { label: name, stroke: colors[i % colors.length], width: 2, spanGaps: true,
               points: { show: drawn.data[0].length < 60 } };
    }));
    var width = Math.max(320, Math.min(chart.box.clientWidth || 800, 1100));
    if (chart.plot) { chart.plot.destroy(); }
    chart.plot = new uPlot({
      width: width, height: 300, series: series,
      scales: { x: { time: drawn.x === "wall" }, y: { distr: choice.logy ? 3 : 1 } },
      axes: [drawn.x === "step" ? { label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000] }
                                : { label: xLabel }, {}]
    }, drawn.data, chart.box);
    var box = chart.box;
    box.setAttribute("data-drawn", String(chart.names.length));
    box.setAttribute("data-x", drawn.x);
    box.setAttribute("data-y", choice.logy ? "log" : "linear");
    box.setAttribute("data-last", ys.length ? String(ys[0].filter(function (v) { return v !== null; }).pop()) : "");
    box.setAttribute("title", dropped ? dropped + " values at or below 0 are left out of the log scale" : "");
  }

  // The controls' values in the URL (and the page's links and forms), then every chart drawn again.
  function changed() {
    var choice = settings();
    cmfState.carry({ smooth: choice.smooth ? String(choice.smooth) : "", logy: choice.logy ? "1" : "",
                     xaxis: choice.xaxis === "step" ? "" : choice.xaxis });
    form.querySelector("output").textContent = String(choice.smooth);
    charts.forEach(draw);
  }

  document.querySelectorAll("[data-chart]").forEach(function (box) {
    if (document.getElementById(box.getAttribute("data-chart"))) { charts.push(read(box)); }
  });
  if (form) {
    var timed = charts.some(function (c) {
      return c.names.length && c.names.every(function (n) { return c.times[n]; });
    });
    form.querySelector("label.xaxis").hidden = !timed;
    form.addEventListener("input", changed);
    form.addEventListener("change", changed);
    form.addEventListener("submit", function (event) { event.preventDefault(); });
  }
  charts.forEach(draw);
})();
