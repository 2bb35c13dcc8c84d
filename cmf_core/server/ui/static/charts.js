// Step-metric charts: every element with data-chart="ID" draws the JSON {"steps", "series"} of
// <script type="application/json" id="ID"> as one line per series (uPlot, vendored).
(function () {
  "use strict";
  var colors = ["#2458c6", "#c2410c", "#2f7d5b", "#8a4fd1", "#0e7490", "#a16207", "#be123c", "#4b5563"];
  document.querySelectorAll("[data-chart]").forEach(function (box) {
    var source = document.getElementById(box.getAttribute("data-chart"));
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    var names = Object.keys(data.series);
    var numeric = data.steps.every(function (s) { return typeof s === "number"; });
    var xs = numeric ? data.steps : data.steps.map(function (_, i) { return i + 1; });
    var series = [{ label: "step" }].concat(names.map(function (name, i) {
      return { label: name, stroke: colors[i % colors.length], width: 2, spanGaps: true, points: { show: xs.length < 60 } };
    }));
    var columns = [xs].concat(names.map(function (name) { return data.series[name]; }));
    var width = Math.max(320, Math.min(box.clientWidth || 800, 1100));
    new uPlot({ width: width, height: 300, series: series, scales: { x: { time: false } },
                axes: [numeric ? { label: "step", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000] }
                               : { label: "step" }, {}] }, columns, box);
    box.setAttribute("data-drawn", String(names.length));
  });
})();
